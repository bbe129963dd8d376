//! Text on its way to a person: the one place where what sshmail prints is
//! made safe. Errors, `status`, `poll`, `doctor` and `queue` may quote what
//! a server said (a `BYE`, a `-ERR`, a remote sendmail's stderr); a server
//! must not move the cursor, retitle the window or clear the screen of the
//! person reading it. Every command prints through [`outln!`](crate::outln)
//! and [`errln!`](crate::errln), which escape control characters; a closed
//! stdout (`sshmail status | head`) ends output quietly instead of panicking.

use std::borrow::Cow;
use std::io::Write as _;

/// `text` with every control character but newline and tab shown as an
/// escape (`\x1b`, `\u{9b}`), never passed raw.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if c.is_control() && (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` on one line (every control character a space), at most `max`
/// characters, with `…` when cut: for a peer's words quoted in an error or
/// sent on in a protocol line.
pub fn one_line(text: &str, max: usize) -> String {
    let mut s: String = text.chars().take(max).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if text.chars().nth(max).is_some() {
        s.push('…');
    }
    s
}

/// Writes `text` and a newline to stdout, made printable. A closed stdout
/// is not an error: the rest of the output is dropped quietly.
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(printable(text).as_bytes()).and_then(|()| stdout.write_all(b"\n"));
}

/// Writes `text` and a newline to stderr, made printable.
pub fn err(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(printable(text).as_bytes()).and_then(|()| stderr.write_all(b"\n"));
}

/// `println!`, made printable and quiet on a closed stdout.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => { $crate::term::out(&format!($($arg)*)) };
}

/// `eprintln!`, made printable.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::term::err(&format!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_bytes_never_reach_a_terminal_raw() {
        let said = "NO \x1b]0;owned\x07\x1b[2J fake\r\nline\u{9b}31m";
        let shown = printable(said);
        assert!(!shown.chars().any(|c| c.is_control() && c != '\n'), "{shown:?}");
        assert_eq!(shown, "NO \\x1b]0;owned\\x07\\x1b[2J fake\\x0d\nline\\u{9b}31m");
        assert_eq!(printable("plain\ttext\n"), "plain\ttext\n");
        assert_eq!(one_line("a\r\nb\x1bc", 3), "a  …");
        assert_eq!(one_line("abc", 3), "abc");
    }
}
