//! What a sink needs to know about a staged message without parsing all of
//! it: the envelope sender (from `Return-Path:`, else `From:`) and whether
//! it has 8-bit or UTF-8 header bytes.

use std::io::Read as _;
use std::path::Path;

/// How much of the header is read.
const HEAD: u64 = 64 * 1024;

/// Facts about a staged message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The envelope sender address, empty for `<>`.
    pub sender: String,
    /// The message has bytes over 0x7F somewhere in its first 64 KiB.
    pub eight_bit: bool,
}

/// Reads the envelope facts from a staged file.
pub fn read(path: &Path) -> std::io::Result<Envelope> {
    let mut head = Vec::new();
    std::fs::File::open(path)?.take(HEAD).read_to_end(&mut head)?;
    Ok(from_bytes(&head))
}

/// The envelope facts from the start of a message.
pub fn from_bytes(head: &[u8]) -> Envelope {
    let eight_bit = head.iter().any(|&b| b >= 0x80);
    let header_end = find_header_end(head);
    let text = String::from_utf8_lossy(&head[..header_end]);
    // Unfold continuation lines.
    let mut fields: Vec<String> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if (line.starts_with(' ') || line.starts_with('\t')) && !fields.is_empty() {
            let last = fields.last_mut().expect("not empty");
            last.push(' ');
            last.push_str(line.trim());
        } else {
            fields.push(line.to_string());
        }
    }
    let field = |name: &str| {
        fields.iter().find_map(|f| {
            let (n, v) = f.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let sender = field("Return-Path").or_else(|| field("From")).map(|v| address_in(&v)).unwrap_or_default();
    Envelope { sender, eight_bit }
}

fn find_header_end(b: &[u8]) -> usize {
    b.windows(2).position(|w| w == b"\n\n").map_or(b.len(), |p| p + 1)
}

/// The addr-spec in a header value: inside `<...>` if present, else the
/// first word with an `@`. Characters that could break an SMTP command are
/// refused (empty result: the null sender), and so is a leading `-`, which
/// an MDA given the address as `%F` would take for an option.
pub fn address_in(value: &str) -> String {
    let candidate = match (value.rfind('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].trim().to_string(),
        _ => value.split_whitespace().find(|w| w.contains('@')).unwrap_or("").trim_matches(['(', ')', ',']).to_string(),
    };
    if candidate.starts_with('-') || candidate.bytes().any(|c| c <= b' ' || c == b'<' || c == b'>' || c == 0x7f) {
        return String::new();
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_from_return_path_then_from() {
        let e = from_bytes(b"Return-Path: <bounce@example.org>\nFrom: A <a@example.org>\n\nbody\nFrom: x@y\n");
        assert_eq!(e.sender, "bounce@example.org");
        assert!(!e.eight_bit);
        let e = from_bytes(b"Subject: s\nFrom: \"A, B\"\n <ab@example.org>\n\nGr\xc3\xbc\xc3\x9fe\n");
        assert_eq!(e.sender, "ab@example.org");
        assert!(e.eight_bit);
        assert_eq!(from_bytes(b"Subject: none\n\nbody").sender, "");
        assert_eq!(from_bytes(b"Return-Path: <>\n\n").sender, "");
        assert_eq!(address_in("plain@example.org (Plain)"), "plain@example.org");
        assert_eq!(address_in("<a b@x>"), "", "no spaces or controls reach MAIL FROM");
        assert_eq!(address_in("<a\rb@x>"), "");
    }

    /// Regression: `Return-Path: <-oQ/tmp/x@evil>` became an MDA argument
    /// starting with `-`.
    #[test]
    fn regression_no_shell_unless_asked_a_sender_never_starts_with_a_dash() {
        assert_eq!(from_bytes(b"Return-Path: <-oQ/tmp/x@evil.example>\n\n").sender, "");
        assert_eq!(from_bytes(b"From: -f@evil.example\n\n").sender, "");
    }
}
