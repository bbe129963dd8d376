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

/// Most lines a listing (UIDL, LIST, CAPA) may have: a bound on memory for a
/// server that never ends one.
const MAX_LISTING: usize = 5_000_000;

/// A POP3 connection in the TRANSACTION state after [`Pop3::login`].
pub struct Pop3<S> {
    wire: Wire<S>,
    /// What CAPA said.
    pub caps: Capabilities,
    greeting: String,
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> Pop3<S> {
    /// Reads the greeting.
    pub async fn start(mut wire: Wire<S>) -> Result<Pop3<S>> {
        let line = wire.read_line(MAX_LINE).await?;
        let greeting = match Reply::parse(&line).map_err(|e| Error::Protocol(format!("{}: {e}", wire.peer())))? {
            Reply::Ok(text) => text,
            Reply::Err(text) => {
                return Err(Error::Server(format!("{} refused the session: {text}", wire.peer())));
            }
        };
        tracing::debug!("S: +OK {greeting}");
        Ok(Pop3 { wire, caps: Capabilities::default(), greeting })
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
        Reply::parse(&line).map_err(|e| Error::Protocol(format!("{}: {e}", self.wire.peer())))
    }

    /// Reads a status line that must be +OK; -ERR becomes a server error
    /// naming `what`.
    pub async fn expect_ok(&mut self, what: &str) -> Result<String> {
        match self.reply().await? {
            Reply::Ok(t) => Ok(t),
            Reply::Err(t) => Err(Error::Server(format!("{}: {what} failed: -ERR {t}", self.wire.peer()))),
        }
    }

    /// Reads the lines of a multi-line listing after its +OK.
    pub async fn listing(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut lines = Vec::new();
        loop {
            let line = self.wire.read_line(MAX_LINE).await?;
            if pop3::is_terminator(&line) {
                return Ok(lines);
            }
            if lines.len() >= MAX_LISTING {
                return Err(Error::Protocol(format!("{}: listing longer than {MAX_LISTING} lines", self.wire.peer())));
            }
            lines.push(pop3::unstuff(&line).to_vec());
        }
    }

    /// Asks CAPA; a server without it simply has no capabilities.
    pub async fn capa(&mut self) -> Result<()> {
        self.send(&[Command::Capa]).await?;
        if let Reply::Ok(_) = self.reply().await? {
            for l in self.listing().await? {
                self.caps.add_line(&l);
            }
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

    /// STAT, UIDL and LIST, pipelined when allowed. Returns, per message
    /// number, its unique id and size.
    pub async fn scan(&mut self) -> Result<Vec<(u32, String, u64)>> {
        let cmds = [Command::Uidl, Command::List];
        if self.caps.pipelining {
            self.send(&cmds).await?;
        } else {
            self.send(&cmds[..1]).await?;
        }
        let uidl = match self.reply().await? {
            Reply::Ok(_) => self.listing().await?,
            Reply::Err(t) => {
                return Err(Error::Server(format!(
                    "{}: UIDL refused (-ERR {t}); sshmail needs UIDL to know which messages it already has",
                    self.peer()
                )));
            }
        };
        if !self.caps.pipelining {
            self.send(&cmds[1..]).await?;
        }
        self.expect_ok("LIST").await?;
        let list = self.listing().await?;
        let mut sizes = std::collections::HashMap::with_capacity(list.len());
        for l in &list {
            let (n, size) = pop3::parse_list_line(l).map_err(|e| Error::Protocol(format!("{}: {e}", self.peer())))?;
            sizes.insert(n, size);
        }
        let mut out = Vec::with_capacity(uidl.len());
        for l in &uidl {
            let (n, uid) = pop3::parse_uidl_line(l).map_err(|e| Error::Protocol(format!("{}: {e}", self.peer())))?;
            out.push((n, uid, sizes.get(&n).copied().unwrap_or(0)));
        }
        Ok(out)
    }

    /// Streams one RETR body (after its +OK) into `staged`. Returns the
    /// decoded size. A cut-off body is an error; the caller discards it.
    pub async fn body_into(&mut self, staged: &mut Staged, out: &mut Vec<u8>) -> Result<u64> {
        let mut decoder = DotDecoder::new();
        loop {
            out.clear();
            let used = decoder.decode(self.wire.buffered(), out);
            self.wire.consume(used);
            if !out.is_empty() {
                staged.write(out)?;
            }
            if decoder.is_done() {
                return Ok(decoder.decoded_len());
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
