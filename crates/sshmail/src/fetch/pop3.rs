//! POP3 client session: the I/O loop around [`sshmail_proto::pop3`].
//!
//! Commands are written through a [`Wire`]; replies are parsed by the sans-I/O
//! core. Bodies stream through [`DotDecoder`] straight into the sink, so a
//! message of any size passes through a fixed buffer.

use md5::{Digest, Md5};
use sshmail_proto::dot::DotDecoder;
use sshmail_proto::pop3::{self, Capabilities, Command, MAX_LINE, Reply};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::AuthMethod;
use crate::deliver::Staged;
use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::wire::Wire;

/// Most messages a maildrop may list (UIDL, LIST), and most lines a CAPA
/// may have: a bound on memory for a server that never ends a listing.
pub const MAX_MESSAGES: usize = 200_000;
const MAX_CAPA_LINES: usize = 1000;
/// Longest listing line: UIDL and LIST need a number, a space and a
/// 70-character id; CAPA's SASL line may list many mechanisms.
const MAX_LISTING_LINE: usize = 1024;
/// How far past its limit a body is read (and thrown away) to stay in step
/// with the server before the connection is given up instead.
const DISCARD_ALLOWANCE: u64 = 64 << 20;

/// How a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// The terminating line came.
    Complete,
    /// The body went past the limit; what came was thrown away, up to the
    /// terminating line (the session is still in step).
    TooLarge(u64),
}

/// A POP3 connection in the TRANSACTION state after [`Pop3::login`].
pub struct Pop3<S> {
    wire: Wire<S>,
    /// What CAPA said.
    pub caps: Capabilities,
    greeting: String,
    /// A reply did not parse: whatever came before it (the last body) may
    /// not have ended where the server meant it to.
    pub out_of_step: bool,
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> Pop3<S> {
    /// Reads the greeting.
    pub async fn start(mut wire: Wire<S>) -> Result<Pop3<S>> {
        let line = wire.read_line(MAX_LINE).await?;
        if line.starts_with(b"* OK") || line.starts_with(b"* PREAUTH") {
            return Err(Error::Protocol(format!(
                "{} greeted `{}`, which is IMAP, not POP3: use --imap (protocol = \"imap\")",
                wire.peer(),
                String::from_utf8_lossy(&line[..line.len().min(80)])
            )));
        }
        let greeting = match Reply::parse(&line).map_err(|e| Error::Protocol(format!("{}: {e}", wire.peer())))? {
            Reply::Ok(text) => text,
            Reply::Err(text) => {
                return Err(Error::Server(format!("{} refused the session: {text}", wire.peer())));
            }
        };
        tracing::debug!("S: +OK {greeting}");
        Ok(Pop3 { wire, caps: Capabilities::default(), greeting, out_of_step: false })
    }

    /// The peer name, for messages.
    pub fn peer(&self) -> &str {
        self.wire.peer()
    }

    /// Sends commands in one write (pipelined when more than one).
    pub async fn send(&mut self, cmds: &[Command]) -> Result<()> {
        let mut bytes = Vec::new();
        for c in cmds {
            tracing::trace!("C: {c:?}");
            bytes.extend_from_slice(&c.to_wire());
        }
        self.wire.send(&bytes).await
    }

    /// Reads one status line.
    pub async fn reply(&mut self) -> Result<Reply> {
        let line = self.wire.read_line(MAX_LINE).await?;
        tracing::debug!("{} S: {}", self.wire.peer(), String::from_utf8_lossy(&line[..line.len().min(300)]));
        Reply::parse(&line).map_err(|e| {
            self.out_of_step = true;
            Error::Protocol(format!("{}: {e}", self.wire.peer()))
        })
    }

    /// Reads a status line that must be +OK; -ERR becomes a server error
    /// naming `what`.
    pub async fn expect_ok(&mut self, what: &str) -> Result<String> {
        match self.reply().await? {
            Reply::Ok(t) => Ok(t),
            Reply::Err(t) => Err(Error::Server(format!("{}: {what} failed: -ERR {t}", self.wire.peer()))),
        }
    }

    /// Reads the lines of a multi-line listing after its +OK, handing each
    /// (unstuffed) to `each` as it arrives; at most `max` lines.
    pub async fn listing(&mut self, what: &str, max: usize, mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let mut count = 0usize;
        loop {
            let line = self.wire.read_line(MAX_LISTING_LINE).await?;
            if pop3::is_terminator(&line) {
                return Ok(());
            }
            count += 1;
            if count > max {
                return Err(Error::Protocol(format!(
                    "{}: {what} listing longer than {max} lines; sshmail handles at most {MAX_MESSAGES} messages in \
                     one maildrop",
                    self.wire.peer()
                )));
            }
            each(pop3::unstuff(&line))?;
        }
    }

    /// Asks CAPA; a server without it simply has no capabilities.
    pub async fn capa(&mut self) -> Result<()> {
        self.send(&[Command::Capa]).await?;
        if let Reply::Ok(_) = self.reply().await? {
            let mut caps = Capabilities::default();
            self.listing("CAPA", MAX_CAPA_LINES, |l| {
                caps.add_line(l);
                Ok(())
            })
            .await?;
            self.caps = caps;
        }
        Ok(())
    }

    /// Logs in with the account's method.
    pub async fn login(&mut self, user: &str, password: Option<&Secret>, method: AuthMethod) -> Result<()> {
        let Some(password) = password else {
            return Err(Error::Auth(format!(
                "{}: the POP3 server wants a password for {user}; set password_command (or --password-command)",
                self.peer()
            )));
        };
        let method = match method {
            AuthMethod::Auto if self.caps.sasl.iter().any(|m| m == "PLAIN") => AuthMethod::Plain,
            AuthMethod::Auto => AuthMethod::User,
            m => m,
        };
        let replies = match method {
            AuthMethod::Plain => {
                self.send(&[Command::AuthPlain(pop3::sasl_plain(user, password.expose()))]).await?;
                vec![self.reply().await?]
            }
            AuthMethod::Apop => {
                let stamp = pop3::apop_timestamp(&self.greeting).ok_or_else(|| {
                    Error::Auth(format!("{}: APOP asked for, but the greeting has no timestamp", self.peer()))
                })?;
                let digest = Md5::digest(format!("{stamp}{}", password.expose()).as_bytes());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                self.send(&[Command::Apop(user.to_string(), hex)]).await?;
                vec![self.reply().await?]
            }
            AuthMethod::User | AuthMethod::Auto => {
                // USER and PASS pipelined when allowed: one round trip.
                let cmds = [Command::User(user.to_string()), Command::Pass(password.expose().to_string())];
                if self.caps.pipelining {
                    self.send(&cmds).await?;
                    vec![self.reply().await?, self.reply().await?]
                } else {
                    self.send(&cmds[..1]).await?;
                    let first = self.reply().await?;
                    if let Reply::Err(_) = first {
                        vec![first]
                    } else {
                        self.send(&cmds[1..]).await?;
                        vec![first, self.reply().await?]
                    }
                }
            }
        };
        for r in replies {
            if let Reply::Err(text) = r {
                return Err(match Reply::Err(text.clone()).code() {
                    Some("IN-USE") | Some("SYS/TEMP") => {
                        Error::Server(format!("{}: mailbox busy: -ERR {text}", self.peer()))
                    }
                    _ => Error::Auth(format!("{}: login as {user} refused: -ERR {text}", self.peer())),
                });
            }
        }
        Ok(())
    }

    /// UIDL and LIST, pipelined when allowed. Returns, per message number,
    /// its unique id and the size LIST gave (None: LIST did not name it).
    /// Lines are parsed as they arrive; a number listed twice by UIDL is
    /// taken once (the first), with a warning.
    pub async fn scan(&mut self) -> Result<Vec<(u32, String, Option<u64>)>> {
        let cmds = [Command::Uidl, Command::List];
        if self.caps.pipelining {
            self.send(&cmds).await?;
        } else {
            self.send(&cmds[..1]).await?;
        }
        if let Reply::Err(t) = self.reply().await? {
            return Err(Error::Server(format!(
                "{}: UIDL refused (-ERR {t}); sshmail needs UIDL to know which messages it already has",
                self.peer()
            )));
        }
        let peer = self.peer().to_string();
        let mut numbers = std::collections::HashSet::new();
        let mut uidl = Vec::new();
        let mut repeated = 0usize;
        self.listing("UIDL", MAX_MESSAGES, |l| {
            let (n, uid) = pop3::parse_uidl_line(l).map_err(|e| Error::Protocol(format!("{peer}: {e}")))?;
            if numbers.insert(n) {
                uidl.push((n, uid));
            } else {
                repeated += 1;
                if repeated <= 10 {
                    tracing::warn!("{peer}: UIDL lists message {n} twice (again as {uid}); the second is ignored");
                }
            }
            Ok(())
        })
        .await?;
        if repeated > 10 {
            tracing::warn!("{peer}: UIDL repeated {repeated} message numbers in all");
        }
        if !self.caps.pipelining {
            self.send(&cmds[1..]).await?;
        }
        self.expect_ok("LIST").await?;
        let mut sizes = std::collections::HashMap::with_capacity(uidl.len());
        self.listing("LIST", MAX_MESSAGES, |l| {
            let (n, size) = pop3::parse_list_line(l).map_err(|e| Error::Protocol(format!("{peer}: {e}")))?;
            sizes.insert(n, size);
            Ok(())
        })
        .await?;
        Ok(uidl.into_iter().map(|(n, uid)| (n, uid, sizes.get(&n).copied())).collect())
    }

    /// Streams one RETR body (after its +OK) into `staged`, at most `limit`
    /// decoded bytes. Past the limit nothing more is written; the rest is
    /// read and thrown away up to the terminating line (to stay in step),
    /// unless it goes on for [`DISCARD_ALLOWANCE`] more, which is an error.
    /// A cut-off body is an error; the caller discards the staged file.
    pub async fn body_into(&mut self, staged: &mut Staged, out: &mut Vec<u8>, limit: u64) -> Result<Body> {
        let mut decoder = DotDecoder::new();
        loop {
            out.clear();
            let used = decoder.decode(self.wire.buffered(), out);
            self.wire.consume(used);
            let over = decoder.decoded_len() > limit;
            if !over && !out.is_empty() {
                staged.write(out)?;
            }
            if decoder.decoded_len() > 16 << 20 {
                // Tests stop a daemon while a big message is under way.
                crate::fault::pause("body-streaming").await;
            }
            if decoder.is_done() {
                self.wire.progress();
                return Ok(if over { Body::TooLarge(decoder.decoded_len()) } else { Body::Complete });
            }
            if decoder.decoded_len() > limit.saturating_add(DISCARD_ALLOWANCE) {
                return Err(Error::Protocol(format!(
                    "{}: a message went on past {} bytes, far over its limit of {limit}; giving up the session",
                    self.peer(),
                    decoder.decoded_len()
                )));
            }
            self.wire.fill().await?;
        }
    }

    /// Bytes received on this connection.
    pub fn received(&self) -> u64 {
        self.wire.received
    }

    /// Closes the write side after QUIT.
    pub async fn shutdown(&mut self) {
        self.wire.shutdown().await;
    }
}
