//! POP3 client protocol core (RFC 1939, CAPA from RFC 2449, SASL PLAIN from
//! RFC 5034).
//!
//! This module encodes commands and parses the single lines a server sends.
//! Multi-line bodies go through [`crate::dot::DotDecoder`]; multi-line
//! listings (CAPA, UIDL, LIST) are read line by line by the driver and parsed
//! here until [`is_terminator`] says they ended.

use std::fmt;

use thiserror::Error;

/// Longest status or listing line accepted. RFC 2449 allows 512 octets for a
/// reply; real servers stay far below this.
pub const MAX_LINE: usize = 8192;

/// A protocol-level problem with what the server sent.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Pop3Error {
    /// The line did not start with `+OK` or `-ERR`.
    #[error("malformed POP3 reply: {0:?}")]
    BadReply(String),
    /// A listing line was not `N TOKEN`.
    #[error("malformed POP3 listing line: {0:?}")]
    BadListing(String),
}

/// A server's single-line answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`, with the rest of the line.
    Ok(String),
    /// `-ERR`, with the rest of the line (possibly an RFC 2449 `[CODE]`).
    Err(String),
}

impl Reply {
    /// Parses a status line (without its CRLF).
    pub fn parse(line: &[u8]) -> Result<Reply, Pop3Error> {
        let text = String::from_utf8_lossy(line);
        let rest = |n: usize| text[n..].trim_start().to_string();
        if line.starts_with(b"+OK") && (line.len() == 3 || line[3] == b' ') {
            Ok(Reply::Ok(rest(3)))
        } else if line.starts_with(b"-ERR") && (line.len() == 4 || line[4] == b' ') {
            Ok(Reply::Err(rest(4)))
        } else {
            Err(Pop3Error::BadReply(truncate(&text)))
        }
    }

    /// The RFC 2449 response code of an `-ERR`, such as `AUTH` or `IN-USE`.
    pub fn code(&self) -> Option<&str> {
        match self {
            Reply::Err(t) if t.starts_with('[') => t[1..].split(']').next(),
            _ => None,
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(120).collect()
}

/// A command to send. `Display` gives the wire form without CRLF; use
/// [`Command::to_wire`] for the bytes.
#[derive(Clone, PartialEq, Eq)]
pub enum Command {
    /// CAPA (RFC 2449).
    Capa,
    /// USER name.
    User(String),
    /// PASS secret.
    Pass(String),
    /// APOP name digest.
    Apop(String, String),
    /// AUTH PLAIN with an initial response (RFC 5034).
    AuthPlain(String),
    /// STAT.
    Stat,
    /// UIDL (all).
    Uidl,
    /// LIST (all).
    List,
    /// RETR n.
    Retr(u32),
    /// DELE n.
    Dele(u32),
    /// NOOP.
    Noop,
    /// QUIT.
    Quit,
}

impl fmt::Debug for Command {
    // Secrets never reach a log through Debug.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Pass(_) => f.write_str("PASS <redacted>"),
            Command::Apop(u, _) => write!(f, "APOP {u} <redacted>"),
            Command::AuthPlain(_) => f.write_str("AUTH PLAIN <redacted>"),
            other => write!(f, "{}", other.wire_text()),
        }
    }
}

impl Command {
    fn wire_text(&self) -> String {
        match self {
            Command::Capa => "CAPA".into(),
            Command::User(u) => format!("USER {u}"),
            Command::Pass(p) => format!("PASS {p}"),
            Command::Apop(u, d) => format!("APOP {u} {d}"),
            Command::AuthPlain(r) => format!("AUTH PLAIN {r}"),
            Command::Stat => "STAT".into(),
            Command::Uidl => "UIDL".into(),
            Command::List => "LIST".into(),
            Command::Retr(n) => format!("RETR {n}"),
            Command::Dele(n) => format!("DELE {n}"),
            Command::Noop => "NOOP".into(),
            Command::Quit => "QUIT".into(),
        }
    }

    /// The command as bytes on the wire, CRLF included.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut v = self.wire_text().into_bytes();
        v.extend_from_slice(b"\r\n");
        v
    }
}

/// True if a listing line (without CRLF) ends a multi-line reply.
pub fn is_terminator(line: &[u8]) -> bool {
    line == b"."
}

/// Removes the dot-stuffing of a listing line.
pub fn unstuff(line: &[u8]) -> &[u8] {
    if line.starts_with(b"..") { &line[1..] } else { line }
}

/// What a server said it supports, from CAPA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// PIPELINING: commands may be sent without waiting for replies.
    pub pipelining: bool,
    /// UIDL is available.
    pub uidl: bool,
    /// USER/PASS is allowed.
    pub user: bool,
    /// SASL mechanisms, upper-case.
    pub sasl: Vec<String>,
    /// STLS is available.
    pub stls: bool,
}

impl Capabilities {
    /// Adds one CAPA listing line.
    pub fn add_line(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let mut words = text.split_ascii_whitespace();
        match words.next().map(|w| w.to_ascii_uppercase()).as_deref() {
            Some("PIPELINING") => self.pipelining = true,
            Some("UIDL") => self.uidl = true,
            Some("USER") => self.user = true,
            Some("STLS") => self.stls = true,
            Some("SASL") => self.sasl.extend(words.map(|w| w.to_ascii_uppercase())),
            _ => {}
        }
    }
}

/// The `+OK` text of STAT: message count and total size.
pub fn parse_stat(text: &str) -> Result<(u32, u64), Pop3Error> {
    let mut w = text.split_ascii_whitespace();
    let bad = || Pop3Error::BadReply(format!("STAT: {}", truncate(text)));
    let n = w.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let size = w.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    Ok((n, size))
}

/// One line of a UIDL listing: message number and unique id.
///
/// RFC 1939 limits the id to 1–70 characters 0x21–0x7E; anything else is
/// refused, since the id becomes a key in our state file.
pub fn parse_uidl_line(line: &[u8]) -> Result<(u32, String), Pop3Error> {
    let text = String::from_utf8_lossy(line);
    let bad = || Pop3Error::BadListing(truncate(&text));
    let mut w = text.split_ascii_whitespace();
    let n: u32 = w.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let uid = w.next().ok_or_else(bad)?;
    if uid.is_empty() || uid.len() > 70 || !uid.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(bad());
    }
    Ok((n, uid.to_string()))
}

/// One line of a LIST listing: message number and size in octets.
pub fn parse_list_line(line: &[u8]) -> Result<(u32, u64), Pop3Error> {
    let text = String::from_utf8_lossy(line);
    let bad = || Pop3Error::BadListing(truncate(&text));
    let mut w = text.split_ascii_whitespace();
    let n = w.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let size = w.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    Ok((n, size))
}

/// The APOP timestamp (`<...>`) in a greeting, if any.
pub fn apop_timestamp(greeting: &str) -> Option<&str> {
    let start = greeting.find('<')?;
    let end = greeting[start..].find('>')? + start;
    let stamp = &greeting[start..=end];
    stamp.contains('@').then_some(stamp)
}

/// The SASL PLAIN initial response: base64 of `\0user\0password`.
pub fn sasl_plain(user: &str, password: &str) -> String {
    let mut raw = Vec::with_capacity(user.len() + password.len() + 2);
    raw.push(0);
    raw.extend_from_slice(user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.as_bytes());
    base64(&raw)
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        s.push(T[(n >> 18) as usize & 63] as char);
        s.push(T[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
        s.push(if c.len() > 2 { T[n as usize & 63] as char } else { '=' });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies() {
        assert_eq!(Reply::parse(b"+OK Dovecot ready."), Ok(Reply::Ok("Dovecot ready.".into())));
        assert_eq!(Reply::parse(b"+OK"), Ok(Reply::Ok(String::new())));
        assert_eq!(
            Reply::parse(b"-ERR [AUTH] Authentication failed."),
            Ok(Reply::Err("[AUTH] Authentication failed.".into()))
        );
        assert_eq!(Reply::parse(b"-ERR [IN-USE] locked").unwrap().code(), Some("IN-USE"));
        assert!(Reply::parse(b"+OKAY").is_err());
        assert!(Reply::parse(b"* OK IMAP").is_err());
        assert!(Reply::parse(b"").is_err());
    }

    #[test]
    fn secrets_stay_secret_in_debug() {
        let s = format!("{:?} {:?}", Command::Pass("hunter2".into()), Command::AuthPlain(sasl_plain("u", "hunter2")));
        assert!(!s.contains("hunter2"));
        assert!(!s.contains(&sasl_plain("u", "hunter2")));
        assert_eq!(Command::Pass("hunter2".into()).to_wire(), b"PASS hunter2\r\n");
    }

    #[test]
    fn capabilities() {
        let mut c = Capabilities::default();
        for l in ["CAPA", "TOP", "UIDL", "RESP-CODES", "PIPELINING", "USER", "SASL PLAIN login"] {
            c.add_line(l.as_bytes());
        }
        assert!(c.pipelining && c.uidl && c.user && !c.stls);
        assert_eq!(c.sasl, vec!["PLAIN", "LOGIN"]);
    }

    #[test]
    fn listings() {
        assert_eq!(parse_stat("2 320"), Ok((2, 320)));
        assert!(parse_stat("x").is_err());
        assert_eq!(parse_uidl_line(b"1 whqtswO00WBw418f9t5JxYwZ"), Ok((1, "whqtswO00WBw418f9t5JxYwZ".into())));
        assert!(parse_uidl_line(b"1").is_err());
        assert!(parse_uidl_line(b"1 bad\x01id").is_err());
        assert!(parse_uidl_line(&[b"1 ".as_slice(), &[b'a'; 71]].concat()).is_err());
        assert_eq!(parse_list_line(b"3 1200"), Ok((3, 1200)));
        assert!(is_terminator(b"."));
        assert_eq!(unstuff(b"..x"), b".x");
    }

    #[test]
    fn apop_and_plain() {
        assert_eq!(
            apop_timestamp("POP3 <1896.697170952@dbc.mtview.ca.us> ready"),
            Some("<1896.697170952@dbc.mtview.ca.us>")
        );
        assert_eq!(apop_timestamp("Dovecot ready."), None);
        // RFC 4616 example: authzid empty, "tim" / "tanstaaftanstaaf".
        assert_eq!(sasl_plain("tim", "tanstaaftanstaaf"), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
    }
}
