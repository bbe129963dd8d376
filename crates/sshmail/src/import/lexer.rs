//! The tokens of fetchmail's run control file ("Run Control Syntax" in
//! fetchmail(1)): words, quoted strings with fetchmail's escapes, numbers;
//! comments, the noise words and the characters `: ; ,` are dropped here.

/// One token and the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The text, escapes resolved for a quoted string.
    pub text: String,
    /// A quoted string is never a keyword.
    pub quoted: bool,
    /// Line of the file where the token starts.
    pub line: usize,
}

impl Token {
    /// The token as a keyword, if unquoted.
    pub fn keyword(&self) -> Option<&str> {
        (!self.quoted).then_some(self.text.as_str())
    }

    /// The token as a number, if it is an unquoted decimal integer.
    pub fn number(&self) -> Option<u64> {
        if self.quoted || self.text.is_empty() || !self.text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        self.text.parse().ok()
    }
}

/// Words fetchmail ignores wherever they appear, so that an entry reads as
/// English ("poll x with protocol pop3 and port 110").
const NOISE: &[&str] = &["and", "with", "has", "wants", "options"];

/// Splits the file into tokens. Errors name the line.
pub fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() || matches!(c, ':' | ';' | ',') => {
                chars.next();
            }
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '"' | '\'' => {
                let start = line;
                chars.next();
                let text =
                    quoted(&mut chars, c, &mut line).ok_or_else(|| format!("line {start}: a string is not closed"))?;
                out.push(Token { text, quoted: true, line: start });
            }
            '=' => {
                chars.next();
                out.push(Token { text: "=".into(), quoted: false, line });
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, ':' | ';' | ',' | '"' | '\'' | '=' | '#') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                if !NOISE.contains(&word.as_str()) {
                    out.push(Token { text: word, quoted: false, line });
                }
            }
        }
    }
    Ok(out)
}

/// The rest of a string opened by `close`, with fetchmail's escapes:
/// `\n \t \b \r`, `\xhh` (hex), `\0oo` (octal), `\ddd` (decimal), a
/// backslash before a newline joins the lines; any other escaped character
/// stands for itself. `None` if the file ends first.
fn quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, close: char, line: &mut usize) -> Option<String> {
    let mut s = String::new();
    loop {
        let c = chars.next()?;
        match c {
            c if c == close => return Some(s),
            '\n' => {
                *line += 1;
                s.push('\n');
            }
            '\\' => {
                let e = chars.next()?;
                match e {
                    '\n' => *line += 1,
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'b' => s.push('\u{8}'),
                    'r' => s.push('\r'),
                    'x' => {
                        let v = digits(chars, 16, 2);
                        s.push(char::from(v.unwrap_or(b'x' as u32) as u8));
                    }
                    '0' => {
                        // The 0 is the octal number's first digit.
                        let v = digits(chars, 8, 2).unwrap_or(0);
                        s.push(char::from(v as u8));
                    }
                    d @ '1'..='9' => {
                        let mut v = d.to_digit(10).unwrap_or(0);
                        for _ in 0..2 {
                            match chars.peek().and_then(|c| c.to_digit(10)) {
                                Some(x) => {
                                    v = v * 10 + x;
                                    chars.next();
                                }
                                None => break,
                            }
                        }
                        s.push(char::from((v & 0xff) as u8));
                    }
                    other => s.push(other),
                }
            }
            c => s.push(c),
        }
    }
}

/// Up to `max` digits in `radix`; `None` if there is none.
fn digits(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, radix: u32, max: usize) -> Option<u32> {
    let mut v = None;
    for _ in 0..max {
        match chars.peek().and_then(|c| c.to_digit(radix)) {
            Some(x) => {
                v = Some(v.unwrap_or(0) * radix + x);
                chars.next();
            }
            None => break,
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &str) -> Vec<String> {
        tokens(s).unwrap().into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn noise_words_and_punctuation_are_dropped() {
        assert_eq!(
            texts("poll x with protocol pop3 and port 110: user a; b, c"),
            ["poll", "x", "protocol", "pop3", "port", "110", "user", "a", "b", "c"]
        );
    }

    #[test]
    fn comments_run_to_the_end_of_the_line() {
        let t = tokens("poll a # a comment \"unclosed\n  user b").unwrap();
        assert_eq!(
            t.iter().map(|t| (t.text.as_str(), t.line)).collect::<Vec<_>>(),
            [("poll", 1), ("a", 1), ("user", 2), ("b", 2)]
        );
    }

    #[test]
    fn fetchmail_escapes_in_strings() {
        // As fetchmail 6.4 reads them (checked with --configdump): \x41 is
        // A, \101 is decimal 101 ('e'), \010 is octal 8.
        assert_eq!(texts(r"'p\x41\101\0101\tq\\z'"), ["pAe\u{8}1\tq\\z"]);
        assert_eq!(texts("\"line1\\\nline2\""), ["line1line2"]);
        assert_eq!(texts(r#""a\nb\rc\"d""#), ["a\nb\rc\"d"]);
    }

    #[test]
    fn quoted_words_are_never_keywords() {
        let t = tokens("\"poll\" poll 'with'").unwrap();
        assert_eq!(t[0].keyword(), None);
        assert_eq!(t[1].keyword(), Some("poll"));
        assert_eq!(t[2].text, "with", "noise words in quotes are kept");
    }

    #[test]
    fn an_unclosed_string_names_its_line() {
        assert_eq!(tokens("poll a\n user \"b").unwrap_err(), "line 2: a string is not closed");
    }

    #[test]
    fn lines_inside_strings_are_counted() {
        let t = tokens("mda \"a\nb\"\nkeep").unwrap();
        assert_eq!(t[2].line, 3);
    }
}
