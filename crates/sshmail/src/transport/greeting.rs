//! The server's first line: read by one reader, for every service and
//! every caller (the imapd probe, STARTTLS, the gateway, the doctor).
//! The session itself (`fetch::imap`, `fetch::pop3`, the relay) parses it
//! as part of its protocol, from the bytes read here when they were read
//! before it started.

use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::config::{Route, Service, Via};
use crate::error::{Error, Result};
use sshmail_proto::imap;

/// The longest greeting read.
pub const MAX_GREETING: usize = 8 * 1024;

/// What came before the first line end (with whatever came in the same
/// read), and how the reading ended.
#[derive(Debug)]
pub struct First {
    /// The bytes read.
    pub bytes: Vec<u8>,
    /// How it ended.
    pub end: End,
}

/// How reading a greeting ended.
#[derive(Debug)]
pub enum End {
    /// A line end came (or [`MAX_GREETING`] bytes without one).
    Line,
    /// Nothing more within the time.
    TimedOut,
    /// The other end closed the stream.
    Closed,
    /// Reading failed.
    Failed(std::io::Error),
}

/// Reads until the first line end, at most [`MAX_GREETING`] bytes, within
/// `timeout`.
pub async fn first(stream: &mut (impl AsyncRead + Unpin), timeout: std::time::Duration) -> First {
    let mut bytes = Vec::with_capacity(512);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut chunk = [0u8; 2048];
    while !bytes.contains(&b'\n') && bytes.len() < MAX_GREETING {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return First { bytes, end: End::TimedOut },
            Ok(Err(e)) => return First { bytes, end: End::Failed(e) },
            Ok(Ok(0)) => return First { bytes, end: End::Closed },
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
    First { bytes, end: End::Line }
}

/// Reads up to the first line end and checks that the line is the
/// service's greeting (also `sshmail doctor`'s check).
pub async fn read(
    stream: &mut (impl AsyncRead + Unpin),
    service: Service,
    route: &Route,
    peer: &str,
) -> Result<Vec<u8>> {
    let First { bytes: buf, end } = first(stream, route.timeout).await;
    match end {
        End::Line => {}
        End::TimedOut => {
            return Err(Error::Protocol(format!(
                "{peer} sent no {} greeting within {} s",
                service.name().to_uppercase(),
                route.timeout.as_secs()
            )));
        }
        End::Failed(e) => return Err(Error::Lost(format!("{peer}: {e}"))),
        End::Closed => {
            return Err(Error::Lost(format!(
                "{peer} closed the connection before greeting{}",
                if buf.is_empty() { String::new() } else { format!(" (after `{}`)", shown(&buf)) }
            )));
        }
    }
    let line = &buf[..buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len())];
    let (ok, expected) = match service {
        Service::Imap => match imap::Greeting::parse(&buf) {
            imap::Greeting::Ok | imap::Greeting::PreAuth => (true, ""),
            imap::Greeting::Bye(text) => return Err(Error::Server(format!("{peer} refused the session: {text}"))),
            imap::Greeting::NotImap(_) => (false, "`* OK` or `* PREAUTH`"),
        },
        Service::Pop3 => (line.to_ascii_uppercase().starts_with(b"+OK"), "`+OK`"),
        Service::Smtp => (line.starts_with(b"220"), "`220`"),
    };
    if ok {
        return Ok(buf);
    }
    let cause = match route.via {
        Via::Exec(_) | Via::Command(_) => {
            "something prints text before the server starts: a shell startup file on the SSH host \
             (~/.bashrc, ~/.profile: print only when interactive), or a forced command= on the key in \
             authorized_keys"
        }
        _ => "is that the right server and port?",
    };
    Err(Error::Protocol(format!(
        "{peer} sent `{}` where the {} greeting ({expected}) should be: {cause}",
        shown(line),
        service.name().to_uppercase()
    )))
}

/// At most 120 characters of what a peer sent, printable.
fn shown(bytes: &[u8]) -> String {
    crate::term::one_line(String::from_utf8_lossy(bytes).trim_end(), 120)
}

/// An IMAP greeting read before STARTTLS, as the session after it goes on:
/// its `[CAPABILITY …]` dropped, for what was said before TLS does not hold
/// after it (RFC 3501 6.2.1); the server's status and text kept.
pub fn after_starttls(greeting: &[u8]) -> Vec<u8> {
    let line = String::from_utf8_lossy(greeting);
    let line = line.trim_end();
    let Some(rest) = line.strip_prefix("* ") else { return greeting.to_vec() };
    let (status, text) = rest.split_once(' ').unwrap_or((rest, ""));
    let text = match text.strip_prefix('[').and_then(|t| t.split_once(']')) {
        Some((code, after)) if code.to_ascii_uppercase().starts_with("CAPABILITY") => after.trim_start(),
        _ => text,
    };
    format!("* {status} {text}\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_line_and_what_came_with_it_or_why_there_is_none() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut b, b"* PREAUTH hi\r\nmore").await.unwrap();
        let got = first(&mut a, std::time::Duration::from_secs(5)).await;
        assert!(matches!(got.end, End::Line) && got.bytes == b"* PREAUTH hi\r\nmore", "{got:?}");
        tokio::io::AsyncWriteExt::write_all(&mut b, b"half").await.unwrap();
        drop(b);
        let got = first(&mut a, std::time::Duration::from_secs(5)).await;
        assert!(matches!(got.end, End::Closed) && got.bytes == b"half", "{got:?}");
        let (mut quiet, _keep) = tokio::io::duplex(64);
        let got = first(&mut quiet, std::time::Duration::from_millis(20)).await;
        assert!(matches!(got.end, End::TimedOut) && got.bytes.is_empty(), "{got:?}");
    }

    #[test]
    fn a_greeting_kept_after_starttls_loses_only_its_capabilities() {
        assert_eq!(
            after_starttls(b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] Dovecot ready.\r\n"),
            b"* OK Dovecot ready.\r\n"
        );
        assert_eq!(after_starttls(b"* OK [ALERT] mind the gap\r\n"), b"* OK [ALERT] mind the gap\r\n");
    }
}
