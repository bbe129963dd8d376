//! IMAP commands and their wire form.

use std::fmt;

/// Hands out tags `A1`, `A2`, ….
#[derive(Debug, Default)]
pub struct Tagger(u64);

impl Tagger {
    /// The next tag.
    pub fn next_tag(&mut self) -> String {
        self.0 += 1;
        format!("A{}", self.0)
    }
}

/// A command a fetcher sends.
#[derive(Clone, PartialEq, Eq)]
pub enum Command {
    /// CAPABILITY.
    Capability,
    /// LOGIN user password (quoted).
    Login(String, String),
    /// AUTHENTICATE PLAIN with an initial response (SASL-IR).
    AuthenticatePlain(String),
    /// AUTHENTICATE PLAIN alone: the response follows the server's `+`
    /// (servers without SASL-IR).
    AuthenticatePlainStart,
    /// STARTTLS.
    StartTls,
    /// SELECT mailbox (modified UTF-7 already applied).
    Select(String),
    /// EXAMINE mailbox.
    Examine(String),
    /// LIST "" pattern.
    List(String),
    /// UID FETCH set (items).
    UidFetch(String, &'static str),
    /// UID STORE set +FLAGS.SILENT (flags).
    UidStoreAdd(String, &'static str),
    /// UID EXPUNGE set (UIDPLUS).
    UidExpunge(String),
    /// EXPUNGE.
    Expunge,
    /// CLOSE.
    Close,
    /// IDLE.
    Idle,
    /// NOOP.
    Noop,
    /// LOGOUT.
    Logout,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Login(u, _) => write!(f, "LOGIN {} <redacted>", quote(u)),
            Command::AuthenticatePlain(_) => f.write_str("AUTHENTICATE PLAIN <redacted>"),
            other => f.write_str(&other.text()),
        }
    }
}

impl Command {
    fn text(&self) -> String {
        match self {
            Command::Capability => "CAPABILITY".into(),
            Command::Login(u, p) => format!("LOGIN {} {}", quote(u), quote(p)),
            Command::AuthenticatePlain(r) => format!("AUTHENTICATE PLAIN {r}"),
            Command::AuthenticatePlainStart => "AUTHENTICATE PLAIN".into(),
            Command::StartTls => "STARTTLS".into(),
            Command::Select(m) => format!("SELECT {}", quote(m)),
            Command::Examine(m) => format!("EXAMINE {}", quote(m)),
            Command::List(p) => format!("LIST \"\" {}", quote(p)),
            Command::UidFetch(set, items) => format!("UID FETCH {set} {items}"),
            Command::UidStoreAdd(set, flags) => format!("UID STORE {set} +FLAGS.SILENT ({flags})"),
            Command::UidExpunge(set) => format!("UID EXPUNGE {set}"),
            Command::Expunge => "EXPUNGE".into(),
            Command::Close => "CLOSE".into(),
            Command::Idle => "IDLE".into(),
            Command::Noop => "NOOP".into(),
            Command::Logout => "LOGOUT".into(),
        }
    }

    /// `tag SP command CRLF`.
    pub fn to_wire(&self, tag: &str) -> Vec<u8> {
        format!("{tag} {}\r\n", self.text()).into_bytes()
    }

    /// True if a string can go in a quoted string (no CR, LF, NUL, 8-bit).
    pub fn quotable(s: &str) -> bool {
        s.bytes().all(|b| b != 0 && b != b'\r' && b != b'\n' && b < 0x80)
    }
}

/// A quoted string with `"` and `\` escaped.
pub fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// A compact UID set for sorted or unsorted UIDs: `1:3,7,9:10`.
pub fn uid_set(uids: &[u32]) -> String {
    let mut v = uids.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}
