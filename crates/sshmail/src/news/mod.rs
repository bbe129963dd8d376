//! What is told of mail that came and went: each message's summary (from
//! its header: From, Subject, Date, Message-ID, decoded and printable),
//! and the hooks run with it — `on_new` after a batch of new mail is
//! durable and recorded, `on_sent` after the relay accepted a message.
//!
//! A hook is told as data, never through a shell: the messages as JSON
//! lines on its stdin, `SSHMAIL_ACCOUNT`, `SSHMAIL_FOLDER` and
//! `SSHMAIL_COUNT` in its environment ([`hook`]).

pub mod hook;
mod words;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::Delivery;

/// How much of a message is read for its summary.
const HEADER_READ: u64 = 64 * 1024;
/// The longest value a summary keeps (characters).
const LONGEST: usize = 998;

/// What a message's header says of it, decoded (RFC 2047) and stripped of
/// control characters: safe to print and to pass on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// `From:`.
    pub from: String,
    /// `Subject:`.
    pub subject: String,
    /// `Date:`, as written.
    pub date: String,
    /// `Message-ID:`, as written.
    pub message_id: String,
}

impl Summary {
    /// The summary of a header.
    pub fn of(header: &crate::message::Header) -> Summary {
        let field = |name: &str| header.value(name).map(|v| printable(&words::decode(&v))).unwrap_or_default();
        Summary { from: field("From"), subject: field("Subject"), date: field("Date"), message_id: field("Message-ID") }
    }

    /// The summary of the message in `path` (its first 64 KiB read); an
    /// empty one when it cannot be read.
    pub fn of_file(path: &Path) -> Summary {
        match std::fs::File::open(path) {
            Ok(file) => Summary::of_reader(file),
            Err(_) => Summary::default(),
        }
    }

    /// Whether the message in `path` has a header field matching one of
    /// `patterns` ([`crate::message::Header::matches`]).
    pub fn file_matches(path: &Path, patterns: &[String]) -> bool {
        if patterns.is_empty() {
            return false;
        }
        let header = std::fs::File::open(path).ok().and_then(header);
        header.is_some_and(|h| patterns.iter().any(|p| h.matches(p)))
    }

    /// The summary of the message `input` reads (its first 64 KiB).
    pub fn of_reader(input: impl std::io::Read) -> Summary {
        header(input).map(|h| Summary::of(&h)).unwrap_or_default()
    }
}

/// The header of the message `input` reads (its first 64 KiB at most).
fn header(input: impl std::io::Read) -> Option<crate::message::Header> {
    let mut input = std::io::BufReader::new(input.take(HEADER_READ));
    crate::message::Header::read(&mut input, crate::message::Reading { ignore_dots: true, terminal: false }).ok()
}

/// A message delivered, as a hook and the status feed are told of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrived {
    /// The account.
    pub account: String,
    /// The server's folder (POP3: `INBOX`).
    pub folder: String,
    /// The delivered file (Maildir); None for other sinks.
    pub path: Option<String>,
    /// Where it went: `maildir:DIR`, `mbox:FILE`, `mda:PROGRAM`,
    /// `smtp:HOST:PORT`, `lmtp:…`.
    pub sink: String,
    /// From its header.
    #[serde(flatten)]
    pub summary: Summary,
    /// Its size in bytes.
    pub size: u64,
}

/// A message the relay accepted, as `on_sent` is told of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sent {
    /// The account that relayed it.
    pub account: String,
    /// Its outbox entry.
    pub id: String,
    /// The envelope sender.
    pub sender: String,
    /// The envelope recipients.
    pub recipients: Vec<String>,
    /// From its header.
    #[serde(flatten)]
    pub summary: Summary,
    /// Its size in bytes.
    pub size: u64,
}

/// A sink's name as [`Arrived::sink`] gives it (an MDA by its program only:
/// the rest of its command line may hold a secret).
pub fn sink_name(to: &Delivery) -> String {
    use crate::config::Endpoint;
    let endpoint = |e: &Endpoint| match e {
        Endpoint::Tcp(h, p) => format!("{h}:{p}"),
        Endpoint::Unix(p) => p.display().to_string(),
    };
    match to {
        Delivery::Maildir(p) => format!("maildir:{}", p.display()),
        Delivery::Mbox(p) => format!("mbox:{}", p.display()),
        Delivery::Mda(c) => format!("mda:{}", c.split_whitespace().next().unwrap_or("")),
        Delivery::Smtp(e) => format!("smtp:{}", endpoint(e)),
        Delivery::Lmtp(e) => format!("lmtp:{}", endpoint(e)),
    }
}

/// `text` with control characters dropped (a tab or line break becomes a
/// space), runs of spaces made one, at most [`LONGEST`] characters.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(LONGEST));
    let mut space = false;
    for c in text.chars() {
        if out.chars().count() >= LONGEST {
            break;
        }
        let c = if c == '\t' || c == '\n' || c == '\r' { ' ' } else { c };
        if c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            continue;
        }
        if c == ' ' {
            if space {
                continue;
            }
            space = true;
        } else {
            space = false;
        }
        out.push(c);
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_is_decoded_and_holds_no_control_character() {
        let raw = b"From: =?UTF-8?B?SsO8cmdlbg==?= <j@example.org>\r\nSubject: =?iso-8859-1?q?caf=E9?=\r\n \
                    =?utf-8?q?_ol=C3=A9?= \x1b[31mred\x07\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\n\
                    Message-ID: <a@b>\r\n\r\nbody\r\n";
        let header =
            crate::message::Header::read(&mut &raw[..], crate::message::Reading { ignore_dots: true, terminal: false })
                .unwrap();
        let s = Summary::of(&header);
        assert_eq!(s.from, "Jürgen <j@example.org>");
        assert_eq!(s.subject, "café olé [31mred");
        assert_eq!((s.date.as_str(), s.message_id.as_str()), ("Mon, 7 Dec 2026 10:00:00 +0000", "<a@b>"));
    }
}
