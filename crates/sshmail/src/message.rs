//! A message's header as read: its fields for those who announce a message
//! (`news`), and what `sendmail` does to a message on its way into the
//! outbox, as other sendmails do:
//!
//! - without `-i`/`-oi`, a line holding only `.` ends the message when it
//!   is typed at a terminal, or when nothing follows it; a `.` line with
//!   more input after it is data (a mail client that passes no `-oi` never
//!   loses the rest of a body that holds such a line);
//! - with `-t`, the recipients are taken from `To:`, `Cc:` and `Bcc:` (and
//!   added to those on the command line);
//! - `Bcc:` is always removed from the header;
//! - `From:` (with `-F`'s full name), `Date:` and `Message-ID:` are added
//!   when missing;
//! - everything else passes unchanged: 8-bit bytes, long lines, the line
//!   ends as given (SMTP's CRLF and dot-stuffing happen on the wire only).
//!
//! The header is read into memory (at most [`MAX_HEADER`]); the body is
//! streamed.

use std::io::{BufRead, Read};

/// The largest header read.
pub const MAX_HEADER: usize = 1 << 20;

/// A message's header, read and ready to be rewritten.
#[derive(Debug)]
pub struct Header {
    /// The fields, each with its continuation lines, as read.
    fields: Vec<Vec<u8>>,
    /// The line that ended the header (empty line), if any.
    separator: Vec<u8>,
    /// The input ended (EOF, or a lone `.` without `-i`) in the header.
    ended: bool,
    /// Line ends: CRLF when the first line had one.
    crlf: bool,
    /// A first line that was not a header field: the body's first line.
    lead: Vec<u8>,
}

/// How to read the message.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    /// `-i`/`-oi`: a lone `.` is data, not the end.
    pub ignore_dots: bool,
    /// The input is a terminal: a lone `.` ends it (someone typing).
    pub terminal: bool,
}

impl Reading {
    /// Whether the lone `.` line just read from `input` ends the message:
    /// never with `-i`; at a terminal always; otherwise only when no more
    /// input follows it.
    fn dot_ends(&self, input: &mut dyn BufRead) -> std::io::Result<bool> {
        if self.ignore_dots {
            return Ok(false);
        }
        Ok(self.terminal || input.fill_buf()?.is_empty())
    }
}

impl Header {
    /// Reads the header from `input`.
    pub fn read(input: &mut dyn BufRead, how: Reading) -> std::io::Result<Header> {
        let mut fields: Vec<Vec<u8>> = Vec::new();
        let mut total = 0usize;
        let mut crlf = None;
        loop {
            let mut line = Vec::new();
            let n = input.take((MAX_HEADER - total.min(MAX_HEADER)) as u64 + 1).read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(Header {
                    fields,
                    separator: Vec::new(),
                    ended: true,
                    crlf: crlf.unwrap_or(false),
                    lead: Vec::new(),
                });
            }
            total += n;
            if total > MAX_HEADER {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the header is larger than 1 MiB"));
            }
            crlf.get_or_insert(line.ends_with(b"\r\n"));
            let bare = trim_eol(&line);
            let crlf = crlf.unwrap_or(false);
            if bare == b"." {
                if how.dot_ends(input)? {
                    return Ok(Header { fields, separator: Vec::new(), ended: true, crlf, lead: Vec::new() });
                }
                // More follows: the dot is the body's first line.
                return Ok(Header { fields, separator: Vec::new(), ended: false, crlf, lead: line });
            }
            if bare.is_empty() {
                return Ok(Header { fields, separator: line, ended: false, crlf, lead: Vec::new() });
            }
            if matches!(line[0], b' ' | b'\t')
                && let Some(last) = fields.last_mut()
            {
                last.extend_from_slice(&line);
            } else if !bare.contains(&b':') && fields.is_empty() {
                // Not a header at all (a body without one): keep the line
                // as the start of the body.
                return Ok(Header { fields, separator: Vec::new(), ended: false, crlf, lead: line });
            } else {
                fields.push(line);
            }
        }
    }

    /// The addresses in every field named `name` (case-insensitive).
    pub fn addresses(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| field_name(f).eq_ignore_ascii_case(name))
            .flat_map(|f| addresses(&value(f)))
            .collect()
    }

    /// The first field named `name` (case-insensitive), unfolded, as
    /// written (encoded words not decoded).
    pub fn value(&self, name: &str) -> Option<String> {
        self.fields.iter().find(|f| field_name(f).eq_ignore_ascii_case(name)).map(|f| value(f).trim().to_string())
    }

    /// Whether a field matches `pattern`: `Name` (present), or `Name:
    /// text` (its value holds that text), without regard to case.
    pub fn matches(&self, pattern: &str) -> bool {
        let (name, text) = match pattern.split_once(':') {
            Some((n, t)) => (n.trim(), Some(t.trim().to_ascii_lowercase())),
            None => (pattern.trim(), None),
        };
        self.fields.iter().filter(|f| field_name(f).eq_ignore_ascii_case(name)).any(|f| match &text {
            None => true,
            Some(t) => value(f).to_ascii_lowercase().contains(t.as_str()),
        })
    }

    /// Whether a field named `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|f| field_name(f).eq_ignore_ascii_case(name))
    }

    /// The input ended within the header.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The header as it goes out: `Bcc:` removed, `From:`, `Date:` and
    /// `Message-ID:` added when missing, then the separator.
    pub fn rewrite(&self, from: &str, full_name: Option<&str>, message_id: &str) -> Vec<u8> {
        let eol: &[u8] = if self.crlf { b"\r\n" } else { b"\n" };
        let mut out = Vec::new();
        for f in &self.fields {
            if !field_name(f).eq_ignore_ascii_case("bcc") {
                out.extend_from_slice(f);
                // The input's last field may lack its line end (the input
                // ended there): a field added after it must not join it.
                if !f.ends_with(b"\n") {
                    out.extend_from_slice(eol);
                }
            }
        }
        let mut add = |line: String| {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(eol);
        };
        if !self.has("from") {
            match full_name {
                Some(n) if !n.is_empty() => add(format!("From: {} <{from}>", quote_phrase(n))),
                _ => add(format!("From: {from}")),
            }
        }
        if !self.has("date") {
            add(format!("Date: {}", chrono::Local::now().format("%a, %d %b %Y %H:%M:%S %z")));
        }
        if !self.has("message-id") {
            add(format!("Message-ID: <{message_id}>"));
        }
        if self.separator.is_empty() {
            out.extend_from_slice(eol);
        } else {
            out.extend_from_slice(&self.separator);
        }
        out.extend_from_slice(&self.lead);
        out
    }
}

/// The body after the header: as it comes, or up to a lone `.` line
/// that ends it (see [`Reading::dot_ends`]).
pub struct Body<R> {
    input: R,
    how: Reading,
    line: Vec<u8>,
    at: usize,
    done: bool,
}

impl<R: BufRead> Body<R> {
    /// The rest of `input`.
    pub fn new(input: R, how: Reading, ended: bool) -> Body<R> {
        Body { input, how, line: Vec::new(), at: 0, done: ended }
    }
}

impl<R: BufRead> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.how.ignore_dots {
            return if self.done { Ok(0) } else { self.input.read(buf) };
        }
        if self.at == self.line.len() {
            if self.done {
                return Ok(0);
            }
            self.line.clear();
            self.at = 0;
            if self.input.read_until(b'\n', &mut self.line)? == 0
                || (trim_eol(&self.line) == b"." && self.how.dot_ends(&mut self.input)?)
            {
                self.done = true;
                self.line.clear();
                return Ok(0);
            }
        }
        let n = buf.len().min(self.line.len() - self.at);
        buf[..n].copy_from_slice(&self.line[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn field_name(field: &[u8]) -> &str {
    let end = field.iter().position(|&b| b == b':').unwrap_or(0);
    std::str::from_utf8(&field[..end]).unwrap_or("").trim()
}

fn value(field: &[u8]) -> String {
    let start = field.iter().position(|&b| b == b':').map_or(field.len(), |p| p + 1);
    String::from_utf8_lossy(&field[start..]).replace(['\r', '\n'], " ")
}

/// The addresses of an address list (`a@x, "B, b" <b@y>, group: c@z;`).
pub fn addresses(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut item, mut quoted, mut angle, mut comment) = (String::new(), false, false, 0usize);
    let mut push = |item: &mut String| {
        let mut s = std::mem::take(item);
        // A group's name.
        if let Some(p) = s.find(':')
            && !s[..p].contains('@')
            && !s[..p].contains('<')
        {
            s = s[p + 1..].to_string();
        }
        let s = s.trim().trim_end_matches(';').trim();
        let addr = match (s.rfind('<'), s.rfind('>')) {
            (Some(a), Some(b)) if a < b => s[a + 1..b].trim().to_string(),
            _ => s.split_whitespace().last().unwrap_or("").to_string(),
        };
        if !addr.is_empty() && !addr.contains(' ') {
            out.push(addr);
        }
    };
    for c in list.chars() {
        match c {
            '"' if comment == 0 => {
                quoted = !quoted;
                item.push(c);
            }
            '(' if !quoted => comment += 1,
            ')' if !quoted && comment > 0 => comment -= 1,
            _ if comment > 0 => {}
            '<' if !quoted => {
                angle = true;
                item.push(c);
            }
            '>' if !quoted => {
                angle = false;
                item.push(c);
            }
            ',' | ';' if !quoted && !angle => push(&mut item),
            _ => item.push(c),
        }
    }
    push(&mut item);
    out
}

/// An address that can go into `MAIL FROM:<…>` / `RCPT TO:<…>` and onto
/// a remote command line as one word: no control characters, no spaces,
/// no angle brackets, not starting with `-`.
pub fn valid_address(a: &str) -> bool {
    !a.is_empty() && !a.starts_with('-') && !a.chars().any(|c| c.is_control() || c.is_whitespace() || "<>".contains(c))
}

/// A display name, quoted when it holds specials.
fn quote_phrase(name: &str) -> String {
    if name.chars().all(|c| c.is_alphanumeric() || " !#$%&'*+-/=?^_`{|}~".contains(c)) {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], how: Reading) -> (Header, Vec<u8>) {
        let mut r = std::io::BufReader::new(input);
        let h = Header::read(&mut r, how).unwrap();
        let mut body = Vec::new();
        let ended = h.ended();
        Body::new(r, how, ended).read_to_end(&mut body).unwrap();
        (h, body)
    }

    #[test]
    fn bcc_is_always_removed_and_t_takes_to_cc_and_bcc() {
        let msg = b"From: me@example.net\nTo: A <a@example.org>, b@example.org\nCc: \"C, c\" <c@example.org>\n\
                    Bcc: hidden@example.org,\n  also@example.org\nSubject: s\n\nbody\n";
        let (h, body) = run(msg, Reading { ignore_dots: true, terminal: false });
        let mut rcpts = h.addresses("to");
        rcpts.extend(h.addresses("cc"));
        rcpts.extend(h.addresses("bcc"));
        assert_eq!(
            rcpts,
            ["a@example.org", "b@example.org", "c@example.org", "hidden@example.org", "also@example.org"]
        );
        let out = h.rewrite("me@example.net", None, "id@host");
        let text = String::from_utf8(out).unwrap();
        assert!(!text.to_ascii_lowercase().contains("bcc") && !text.contains("hidden"), "{text}");
        assert!(text.contains("Date: ") && text.contains("Message-ID: <id@host>\n\n"), "{text}");
        assert!(!text.contains("From: me@example.net\nFrom:"), "From is not added twice: {text}");
        assert_eq!(body, b"body\n");
    }

    #[test]
    fn a_lone_dot_ends_the_message_unless_i() {
        let msg = b"Subject: s\n\none\n.\ntwo\n";
        let typed = Reading { ignore_dots: false, terminal: true };
        assert_eq!(run(msg, typed).1, b"one\n");
        assert_eq!(run(msg, Reading { ignore_dots: true, terminal: false }).1, b"one\n.\ntwo\n");
        // In the header too.
        let (h, body) = run(b"Subject: s\n.\nlater\n", typed);
        assert!(h.ended() && body.is_empty());
    }

    /// Regression: a mail client passing no `-oi` (mutt's `sendmail`)
    /// lost every line after a body line holding only `.`.
    #[test]
    fn regression_a_lone_dot_with_more_input_after_it_is_data_unless_typed() {
        let msg = b"Subject: s\n\none\n.\ntwo\n";
        assert_eq!(run(msg, Reading::default()).1, b"one\n.\ntwo\n");
        // A final dot line, with nothing after it, still ends the message.
        assert_eq!(run(b"Subject: s\n\none\n.\n", Reading::default()).1, b"one\n");
        assert_eq!(run(b"Subject: s\n\none\n.\r\n", Reading::default()).1, b"one\n");
        // A dot in the header with more after it starts the body.
        let (h, body) = run(b"Subject: s\n.\nlater\n", Reading::default());
        assert!(!h.ended());
        let out = h.rewrite("me@example.net", None, "i@h");
        assert!(String::from_utf8_lossy(&out).ends_with("\n\n.\n"), "{}", String::from_utf8_lossy(&out));
        assert_eq!(body, b"later\n");
        let (h, body) = run(b"Subject: s\n.\n", Reading::default());
        assert!(h.ended() && body.is_empty());
    }

    /// Regression: a header whose last field had no line end got the added
    /// `From:` glued onto it (`X-A: bFrom: ...`).
    #[test]
    fn regression_a_header_without_a_final_newline_gets_fields_on_their_own_lines() {
        let (h, body) = run(b"Subject: s\nX-A: b", Reading::default());
        assert!(h.ended() && body.is_empty());
        let out = String::from_utf8(h.rewrite("me@example.net", None, "i@h")).unwrap();
        assert!(out.starts_with("Subject: s\nX-A: b\nFrom: me@example.net\nDate: "), "{out}");
        assert!(out.ends_with("Message-ID: <i@h>\n\n"), "{out}");
        let (h, _) = run(b"Subject: s\r\nX-A: b", Reading::default());
        let out = String::from_utf8(h.rewrite("me@example.net", None, "i@h")).unwrap();
        assert!(out.starts_with("Subject: s\r\nX-A: b\r\nFrom: me@example.net\r\n"), "{out}");
    }

    #[test]
    fn missing_from_gets_the_full_name_and_crlf_input_stays_crlf() {
        let (h, body) = run(b"Subject: x\r\n\r\n8-bit \xe9 body\r\n", Reading { ignore_dots: true, terminal: false });
        let out = String::from_utf8_lossy(&h.rewrite("me@example.net", Some("Me, Myself"), "i@h")).to_string();
        assert!(out.starts_with("Subject: x\r\nFrom: \"Me, Myself\" <me@example.net>\r\nDate: "), "{out}");
        assert!(out.ends_with("Message-ID: <i@h>\r\n\r\n"), "{out}");
        assert_eq!(body, b"8-bit \xe9 body\r\n");
    }

    #[test]
    fn a_message_without_a_header_gets_one_and_keeps_its_first_line() {
        let (h, body) = run(b"just text\nmore\n", Reading { ignore_dots: true, terminal: false });
        let out = String::from_utf8(h.rewrite("me@x", None, "i@h")).unwrap();
        assert!(out.starts_with("From: me@x\nDate: ") && out.ends_with("Message-ID: <i@h>\n\njust text\n"), "{out}");
        assert_eq!(body, b"more\n");
    }

    #[test]
    fn an_address_cannot_smuggle_a_command_or_an_option() {
        for bad in ["a@x>\r\nRCPT TO:<b@y", "a b@x", "-oQ/tmp", "", "<a@x>", "a@x\n"] {
            assert!(!valid_address(bad), "{bad:?}");
        }
        assert!(valid_address("me+tag@example.net") && valid_address("root"));
    }

    #[test]
    fn address_lists() {
        assert_eq!(addresses("undisclosed-recipients:;"), Vec::<String>::new());
        assert_eq!(addresses("team: a@x, b@y;, c@z"), ["a@x", "b@y", "c@z"]);
        assert_eq!(addresses("a@x (Alice, A.), <b@y>"), ["a@x", "b@y"]);
        assert_eq!(addresses("\"Doe, J\" <j@x>"), ["j@x"]);
    }
}
