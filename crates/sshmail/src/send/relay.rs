//! Handing a queued message to the relay, through SSH.
//!
//! - `smtp`: a forward to the relay as seen from the SSH host. EHLO (HELO
//!   as a fallback), STARTTLS when offered (`send.starttls`; the EHLO
//!   again inside it, and nothing the relay sent early is kept), AUTH
//!   PLAIN or LOGIN when `send.user` is set, PIPELINING and 8BITMIME /
//!   SMTPUTF8 when offered. The result is per
//!   recipient; the DATA is dot-stuffed and CRLF'd on the way.
//! - `exec`: the remote `sendmail`-compatible command with
//!   `-f FROM -- RCPT…` appended, the message on its stdin. Exit 0 is
//!   accepted, 75 (EX_TEMPFAIL) or no exit status is temporary, anything
//!   else permanent (with its stderr).
//!
//! A connection lost after the final dot and before the reply leaves the
//! message "uncertain": the relay may have it. It is tried again (a
//! duplicate beats a loss) and `sshmail queue` says so.

use std::io::Read as _;
use std::time::Duration;

use sshmail_proto::smtp::{self, Extensions, Reply};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::outbox::Entry;
use crate::config::{StartTls, TlsSettings};
use crate::deliver::smtp::{read_reply, send_data};
use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::wire::{Stream, Wire};

/// What the relay said of each recipient.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Took it.
    pub accepted: Vec<String>,
    /// Refused for now (4xx), why.
    pub temporary: Vec<(String, String)>,
    /// Refused for good (5xx), why.
    pub permanent: Vec<(String, String)>,
    /// Lost after the end of DATA, before the reply.
    pub uncertain: bool,
}

/// Exit codes of a remote sendmail that mean "not now", not "never":
/// sysexits' EX_OSERR, EX_OSFILE, EX_CANTCREAT, EX_IOERR, EX_TEMPFAIL, and
/// the shell's "cannot run it" (126) and "not found" (127).
const TEMPORARY_EXITS: [i64; 7] = [71, 72, 73, 74, 75, 126, 127];

/// The most of a remote sendmail's stderr kept in an error.
const MAX_SAID: usize = 1000;

impl Verdict {
    /// Adds what another part of the same message got.
    pub fn merge(&mut self, other: Verdict) {
        self.accepted.extend(other.accepted);
        self.temporary.extend(other.temporary);
        self.permanent.extend(other.permanent);
        self.uncertain |= other.uncertain;
    }

    /// Every one of `rcpts` refused for `why`.
    pub fn all(rcpts: &[String], why: &str, permanent: bool) -> Verdict {
        let list = rcpts.iter().map(|r| (r.clone(), why.to_string())).collect();
        if permanent {
            Verdict { permanent: list, ..Verdict::default() }
        } else {
            Verdict { temporary: list, ..Verdict::default() }
        }
    }
}

/// How the relay's STARTTLS is used and checked.
pub struct Tls<'a> {
    /// The name its certificate must carry (the host of `send.server`).
    pub host: &'a str,
    /// When.
    pub when: StartTls,
    /// The CA file or the pin.
    pub settings: &'a TlsSettings,
}

/// An SMTP session with a relay, greeted, EHLO'd, switched to TLS and
/// logged in as the account says: what a relay try and `sshmail doctor`
/// both run.
pub struct Session {
    wire: Wire<Box<dyn Stream>>,
    /// The relay's greeting, as it said it.
    pub greeting: String,
    /// Its extensions (after STARTTLS, those it announced then).
    pub ext: Extensions,
    /// STARTTLS was done.
    pub secured: bool,
}

impl Session {
    /// Opens the session on `stream`: the greeting, EHLO (else HELO),
    /// STARTTLS as `tls` says, then AUTH when `auth` is given.
    pub async fn open(
        stream: Box<dyn Stream>,
        peer: &str,
        auth: Option<(String, Secret)>,
        tls: Tls<'_>,
        timeout: Duration,
    ) -> Result<Session> {
        let mut wire = Wire::new(stream, timeout, peer.to_string());
        let greeting = read_reply(&mut wire).await?;
        if !greeting.is_positive() {
            return Err(Error::Server(format!("the relay {peer} refused the connection: {}", greeting.text())));
        }
        let mut ext = hello(&mut wire, peer).await?;
        let mut secured = false;
        if ext.starttls && tls.when != StartTls::Never {
            wire.send(b"STARTTLS\r\n").await?;
            let r = read_reply(&mut wire).await?;
            if r.code != 220 {
                return Err(Error::Server(format!(
                    "the relay {peer} offered STARTTLS and then refused it: {}",
                    r.text()
                )));
            }
            let plain = wire.into_inner().await?;
            let keys = ["send.tls_ca_file", "send.tls_fingerprint", ""];
            let secure = crate::transport::tls_handshake(plain, tls.host, tls.settings, keys, timeout).await?;
            wire = Wire::new(Box::new(secure) as Box<dyn Stream>, timeout, format!("{peer} (STARTTLS)"));
            // What was said before TLS is forgotten (RFC 3207 4.2).
            ext = hello(&mut wire, peer).await?;
            secured = true;
        } else if tls.when == StartTls::Require {
            return Err(Error::Server(format!(
                "the relay {peer} does not offer STARTTLS, and send.starttls = \"require\": nothing was sent"
            )));
        }
        if let Some((user, password)) = auth {
            authenticate(&mut wire, peer, &ext, &user, &password).await?;
        }
        Ok(Session { wire, greeting: greeting.text(), ext, secured })
    }

    /// QUIT, and the connection closed.
    pub async fn quit(self) {
        let _ = quit(self.wire, Verdict::default()).await;
    }
}

/// Sends `entry` to its pending recipients over an open session.
pub async fn smtp(session: Session, entry: &Entry) -> Result<Verdict> {
    let Session { mut wire, ext, .. } = session;
    let rcpts = entry.pending();
    let eight_bit = has_eight_bit(entry)?;
    let utf8 = eight_bit && ext.smtputf8 && !ext.eight_bit_mime;
    let mail = smtp::mail_from(&entry.envelope.sender, &ext, eight_bit, utf8, entry.size);
    let mut verdict = Verdict::default();
    let mut accepted = Vec::new();
    if ext.pipelining {
        let mut batch = mail.clone();
        for r in &rcpts {
            batch.push_str(&smtp::rcpt_to(r));
        }
        batch.push_str("DATA\r\n");
        wire.send(batch.as_bytes()).await?;
        let m = read_reply(&mut wire).await?;
        for r in &rcpts {
            let reply = read_reply(&mut wire).await?;
            judge(r, &reply, &m, &mut accepted, &mut verdict);
        }
        let d = read_reply(&mut wire).await?;
        if !m.is_positive() || accepted.is_empty() {
            if d.is_intermediate() {
                // The server took DATA anyway: end it empty.
                wire.send(b".\r\n").await?;
                read_reply(&mut wire).await?;
            }
            return quit(wire, verdict).await;
        }
        if !d.is_intermediate() {
            refuse_all(&accepted, &format!("DATA refused: {}", d.text()), d.is_transient(), &mut verdict);
            return quit(wire, verdict).await;
        }
    } else {
        wire.send(mail.as_bytes()).await?;
        let m = read_reply(&mut wire).await?;
        if !m.is_positive() {
            let v = Verdict::all(&rcpts, &format!("MAIL FROM refused: {}", m.text()), !m.is_transient());
            return quit(wire, v).await;
        }
        for r in &rcpts {
            wire.send(smtp::rcpt_to(r).as_bytes()).await?;
            let reply = read_reply(&mut wire).await?;
            judge(r, &reply, &m, &mut accepted, &mut verdict);
        }
        if accepted.is_empty() {
            return quit(wire, verdict).await;
        }
        wire.send(b"DATA\r\n").await?;
        let d = read_reply(&mut wire).await?;
        if !d.is_intermediate() {
            refuse_all(&accepted, &format!("DATA refused: {}", d.text()), d.is_transient(), &mut verdict);
            return quit(wire, verdict).await;
        }
    }
    send_data(&mut wire, entry.message()?, &format!("outbox {}", entry.id)).await?;
    crate::fault::point("relay-data-sent");
    match read_reply(&mut wire).await {
        Ok(r) if r.is_positive() => verdict.accepted = accepted,
        Ok(r) => {
            refuse_all(&accepted, &format!("the message was refused: {}", r.text()), r.is_transient(), &mut verdict)
        }
        Err(e) => {
            // The relay may have it: try again (a duplicate beats a loss).
            verdict.uncertain = true;
            refuse_all(
                &accepted,
                &format!("the connection was lost after the message was sent: {e}"),
                true,
                &mut verdict,
            );
            return Ok(verdict);
        }
    }
    quit(wire, verdict).await
}

/// One RCPT's reply, after MAIL's.
fn judge(rcpt: &str, reply: &Reply, mail: &Reply, accepted: &mut Vec<String>, verdict: &mut Verdict) {
    if !mail.is_positive() {
        let why = format!("MAIL FROM refused: {}", mail.text());
        if mail.is_transient() { &mut verdict.temporary } else { &mut verdict.permanent }.push((rcpt.to_string(), why));
    } else if reply.is_positive() {
        accepted.push(rcpt.to_string());
    } else {
        let why = format!("RCPT TO:<{rcpt}> refused: {}", reply.text());
        if reply.is_transient() { &mut verdict.temporary } else { &mut verdict.permanent }
            .push((rcpt.to_string(), why));
    }
}

fn refuse_all(rcpts: &[String], why: &str, transient: bool, verdict: &mut Verdict) {
    let list = if transient { &mut verdict.temporary } else { &mut verdict.permanent };
    list.extend(rcpts.iter().map(|r| (r.clone(), why.to_string())));
}

async fn quit<S: Stream>(mut wire: Wire<S>, verdict: Verdict) -> Result<Verdict> {
    let _ = wire.send(b"QUIT\r\n").await;
    let _ = tokio::time::timeout(Duration::from_secs(2), read_reply(&mut wire)).await;
    wire.shutdown().await;
    Ok(verdict)
}

/// EHLO, else HELO (no extensions then).
async fn hello<S: Stream>(wire: &mut Wire<S>, peer: &str) -> Result<Extensions> {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    wire.send(format!("EHLO {host}\r\n").as_bytes()).await?;
    let ehlo = read_reply(wire).await?;
    if ehlo.is_positive() {
        return Ok(Extensions::from_reply(&ehlo));
    }
    wire.send(format!("HELO {host}\r\n").as_bytes()).await?;
    let r = read_reply(wire).await?;
    if !r.is_positive() {
        return Err(Error::Server(format!("the relay {peer} refused HELO: {}", r.text())));
    }
    Ok(Extensions::default())
}

/// AUTH PLAIN when offered (or nothing is said), else AUTH LOGIN.
async fn authenticate<S: Stream>(
    wire: &mut Wire<S>,
    peer: &str,
    ext: &Extensions,
    user: &str,
    pw: &Secret,
) -> Result<()> {
    use base64::Engine as _;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let mechanisms = &ext.auth;
    let r = if mechanisms.iter().any(|m| m == "PLAIN") || !mechanisms.iter().any(|m| m == "LOGIN") {
        let token = b64(format!("\0{user}\0{}", pw.expose()).as_bytes());
        wire.send(format!("AUTH PLAIN {token}\r\n").as_bytes()).await?;
        read_reply(wire).await?
    } else {
        wire.send(b"AUTH LOGIN\r\n").await?;
        let mut r = read_reply(wire).await?;
        for step in [user.as_bytes(), pw.expose().as_bytes()] {
            if !r.is_intermediate() {
                break;
            }
            wire.send(format!("{}\r\n", b64(step)).as_bytes()).await?;
            r = read_reply(wire).await?;
        }
        r
    };
    if r.is_positive() {
        Ok(())
    } else if r.is_transient() {
        Err(Error::Server(format!("the relay {peer} could not log you in now: {}", r.text())))
    } else {
        Err(Error::Auth(format!("the relay {peer} refused the login of {user}: {}", r.text())))
    }
}

/// The message has bytes above 127 (it needs 8BITMIME).
fn has_eight_bit(entry: &Entry) -> Result<bool> {
    let mut m = entry.message()?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = m.read(&mut buf).map_err(|e| Error::Delivery(format!("outbox {}: {e}", entry.id)))?;
        if n == 0 {
            return Ok(false);
        }
        if buf[..n].iter().any(|&b| b >= 0x80) {
            return Ok(true);
        }
    }
}

/// Runs the remote sendmail on `stream` (an exec channel whose command
/// already names the recipients): the message on its stdin, then its exit.
pub async fn exec(
    mut stream: Box<dyn Stream>,
    status: &crate::process::Collected,
    entry: &Entry,
    rcpts: Vec<String>,
    timeout: Duration,
) -> Result<Verdict> {
    let mut m = entry.message()?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = m.read(&mut buf).map_err(|e| Error::Delivery(format!("outbox {}: {e}", entry.id)))?;
        if n == 0 {
            break;
        }
        tokio::time::timeout(timeout, stream.write_all(&buf[..n]))
            .await
            .map_err(|_| Error::Lost("the remote sendmail stopped reading".into()))?
            .map_err(|e| Error::Lost(format!("the remote sendmail: {e}")))?;
    }
    let _ = stream.shutdown().await;
    crate::fault::point("relay-data-sent");
    // What it prints is not ours to keep; bounded, to its end.
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(timeout, (&mut stream).take(1 << 20).read_to_end(&mut sink)).await;
    let exit = status.wait_exit(timeout).await;
    let said = status.stderr();
    let said = crate::term::one_line(said.trim(), MAX_SAID);
    let said = if said.is_empty() { String::new() } else { format!(": {said}") };
    Ok(match exit {
        Some(0) => Verdict { accepted: rcpts, ..Verdict::default() },
        Some(code) if TEMPORARY_EXITS.contains(&code) => Verdict::all(
            &rcpts,
            &format!("the remote sendmail did not run or said try later (exit {code}){said}"),
            false,
        ),
        Some(code) => Verdict::all(&rcpts, &format!("the remote sendmail refused it (exit {code}){said}"), true),
        None => Verdict {
            uncertain: true,
            ..Verdict::all(&rcpts, &format!("the remote sendmail gave no exit status{said}"), false)
        },
    })
}
