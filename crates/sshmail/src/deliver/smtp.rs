//! Delivery to an MTA by SMTP, or to a delivery agent by LMTP, over TCP or a
//! Unix socket. Our own small client on [`sshmail_proto::smtp`]: EHLO/LHLO,
//! PIPELINING (MAIL, RCPT and DATA in one write), 8BITMIME/SMTPUTF8 when
//! offered, DATA streamed from the staged file with dot-stuffing on the fly.
//! A 2xx to the end of DATA means delivered; 4xx is temporary, 5xx permanent.

use std::time::Duration;

use sshmail_proto::smtp::{self, DataEncoder, Extensions, Reply, ReplyParser};

use super::envelope;
use super::mda::Refusal;
use super::spool::Finished;
use crate::config::Endpoint;
use crate::error::{Error, Result};
use crate::wire::{Stream, Wire};

/// An SMTP or LMTP sink.
#[derive(Debug, Clone)]
pub struct Smtp {
    endpoint: Endpoint,
    lmtp: bool,
    recipient: String,
    timeout: Duration,
}

struct Session<S> {
    wire: Wire<S>,
    ext: Extensions,
}

impl Smtp {
    /// A sink; `lmtp` selects LHLO and per-recipient replies.
    pub fn new(endpoint: Endpoint, lmtp: bool, recipient: &str, timeout: Duration) -> Smtp {
        Smtp { endpoint, lmtp, recipient: recipient.to_string(), timeout }
    }

    fn name(&self) -> String {
        let proto = if self.lmtp { "LMTP" } else { "SMTP" };
        match &self.endpoint {
            Endpoint::Tcp(h, p) => format!("{proto} server {h}:{p}"),
            Endpoint::Unix(p) => format!("{proto} server {}", p.display()),
        }
    }

    /// Delivers a batch over one connection. The outer error is for the
    /// connection as a whole; the inner results are per message.
    pub async fn deliver(&self, batch: &[Finished]) -> Result<Vec<std::result::Result<(), Refusal>>> {
        match &self.endpoint {
            Endpoint::Tcp(h, p) => {
                let tcp = crate::wire::connect_tcp(h, *p, self.timeout)
                    .await
                    .map_err(|e| Error::Delivery(format!("cannot connect to {}: {e}", self.name())))?;
                self.run(tcp, batch).await
            }
            Endpoint::Unix(path) => {
                let s = tokio::time::timeout(self.timeout, tokio::net::UnixStream::connect(path))
                    .await
                    .map_err(|_| Error::Delivery(format!("{}: connect timed out", self.name())))?
                    .map_err(|e| Error::Delivery(format!("cannot connect to {}: {e}", self.name())))?;
                self.run(s, batch).await
            }
        }
    }

    async fn run<S: Stream>(&self, stream: S, batch: &[Finished]) -> Result<Vec<std::result::Result<(), Refusal>>> {
        let wire = Wire::new(stream, self.timeout, self.name());
        let mut s = Session { wire, ext: Extensions::default() };
        let greeting = self.reply(&mut s).await?;
        if !greeting.is_positive() {
            return Err(Error::Delivery(format!("{} refused the connection: {}", self.name(), greeting.text())));
        }
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let hello = if self.lmtp { "LHLO" } else { "EHLO" };
        s.wire.send(format!("{hello} {host}\r\n").as_bytes()).await.map_err(to_delivery)?;
        let r = self.reply(&mut s).await?;
        if !r.is_positive() {
            if self.lmtp {
                return Err(Error::Delivery(format!("{}: LHLO refused: {}", self.name(), r.text())));
            }
            s.wire.send(format!("HELO {host}\r\n").as_bytes()).await.map_err(to_delivery)?;
            let r = self.reply(&mut s).await?;
            if !r.is_positive() {
                return Err(Error::Delivery(format!("{}: HELO refused: {}", self.name(), r.text())));
            }
        } else {
            s.ext = Extensions::from_reply(&r);
        }
        let mut results = Vec::with_capacity(batch.len());
        for msg in batch {
            results.push(self.one(&mut s, msg).await?);
        }
        let _ = s.wire.send(b"QUIT\r\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.reply(&mut s)).await;
        s.wire.shutdown().await;
        Ok(results)
    }

    async fn one<S: Stream>(&self, s: &mut Session<S>, msg: &Finished) -> Result<std::result::Result<(), Refusal>> {
        let env = envelope::read(&msg.path).map_err(|e| Error::Delivery(format!("cannot read staged message: {e}")))?;
        let utf8 = env.eight_bit && s.ext.smtputf8 && !s.ext.eight_bit_mime;
        let mail = smtp::mail_from(&env.sender, &s.ext, env.eight_bit, utf8, msg.len);
        let rcpt = smtp::rcpt_to(&self.recipient);
        if s.ext.pipelining {
            s.wire.send(format!("{mail}{rcpt}DATA\r\n").as_bytes()).await.map_err(to_delivery)?;
            let (m, r, d) = (self.reply(s).await?, self.reply(s).await?, self.reply(s).await?);
            if let Some(refusal) = refused("MAIL", &m).or_else(|| refused("RCPT", &r)) {
                if d.is_intermediate() {
                    // The server took DATA anyway: end it empty, then reset.
                    s.wire.send(b".\r\n").await.map_err(to_delivery)?;
                    self.reply(s).await?;
                }
                self.reset(s).await?;
                return Ok(Err(refusal));
            }
            if !d.is_intermediate() {
                self.reset(s).await?;
                return Ok(Err(refusal_of("DATA", &d)));
            }
        } else {
            for (what, line) in [("MAIL", mail.as_str()), ("RCPT", rcpt.as_str()), ("DATA", "DATA\r\n")] {
                s.wire.send(line.as_bytes()).await.map_err(to_delivery)?;
                let r = self.reply(s).await?;
                let ok = if what == "DATA" { r.is_intermediate() } else { r.is_positive() };
                if !ok {
                    self.reset(s).await?;
                    return Ok(Err(refusal_of(what, &r)));
                }
            }
        }
        self.send_data(s, msg).await?;
        // SMTP answers once; LMTP once per accepted recipient (we have one).
        let r = self.reply(s).await?;
        if r.is_positive() { Ok(Ok(())) } else { Ok(Err(refusal_of("end of DATA", &r))) }
    }

    async fn send_data<S: Stream>(&self, s: &mut Session<S>, msg: &Finished) -> Result<()> {
        let file = std::fs::File::open(&msg.path)
            .map_err(|e| Error::Delivery(format!("cannot read {}: {e}", msg.path.display())))?;
        send_data(&mut s.wire, file, &msg.path.display().to_string()).await.map_err(to_delivery)
    }

    async fn reset<S: Stream>(&self, s: &mut Session<S>) -> Result<()> {
        s.wire.send(b"RSET\r\n").await.map_err(to_delivery)?;
        self.reply(s).await.map(|_| ())
    }

    async fn reply<S: Stream>(&self, s: &mut Session<S>) -> Result<Reply> {
        read_reply(&mut s.wire).await.map_err(to_delivery)
    }
}

/// One SMTP or LMTP reply (all its lines), each line bounded.
pub async fn read_reply<S: Stream>(wire: &mut Wire<S>) -> Result<Reply> {
    let mut parser = ReplyParser::default();
    loop {
        let line = wire.read_line(smtp::MAX_LINE).await?;
        if let Some(r) = parser.line(&line).map_err(|e| Error::Protocol(format!("{}: {e}", wire.peer())))? {
            return Ok(r);
        }
    }
}

/// `message` as DATA (dot-stuffed, CRLF), written in pieces of 64 KiB or
/// more; the final dot goes in the same write as the message's end, so
/// that a small message is one segment (a lone `.` CRLF segment would wait
/// for a delayed ACK on a Nagle socket along the way: 40 ms a message).
/// `what` names the source in a read error.
pub async fn send_data<S: Stream>(wire: &mut Wire<S>, mut message: impl std::io::Read, what: &str) -> Result<()> {
    let mut enc = DataEncoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(136 * 1024);
    loop {
        let n = message.read(&mut buf).map_err(|e| Error::Delivery(format!("cannot read {what}: {e}")))?;
        if n == 0 {
            enc.finish(&mut out);
            return wire.send(&out).await;
        }
        enc.encode(&buf[..n], &mut out);
        if out.len() >= 64 * 1024 {
            wire.send(&out).await?;
            out.clear();
        }
    }
}

/// Local delivery failing is a delivery error (exit 10), whatever the cause.
fn to_delivery(e: Error) -> Error {
    match e {
        Error::Delivery(_) => e,
        other => Error::Delivery(other.to_string()),
    }
}

fn refused(what: &str, r: &Reply) -> Option<Refusal> {
    (!r.is_positive()).then(|| refusal_of(what, r))
}

fn refusal_of(what: &str, r: &Reply) -> Refusal {
    let text = format!("{what} refused: {}", r.text());
    if r.is_transient() { Refusal::Temporary(text) } else { Refusal::Permanent(text) }
}
