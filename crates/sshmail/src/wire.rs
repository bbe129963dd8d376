//! Buffered, bounded, timed byte I/O over any stream.
//!
//! One [`Wire`] per connection: it owns the read buffer, so bytes that arrive
//! beyond the current reply (pipelined answers) stay buffered for the next
//! one. Every read waits at most `timeout`; every line is bounded.

use std::time::Duration;

use sshmail_proto::line::find_line;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};

/// Initial read buffer capacity.
const READ_CHUNK: usize = 64 * 1024;

/// A stream with a read buffer and a per-wait timeout.
pub struct Wire<S> {
    io: S,
    buf: Vec<u8>,
    start: usize,
    timeout: Duration,
    peer: String,
    /// Bytes received so far.
    pub received: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    /// Wraps `io`; `peer` names the other side in errors.
    pub fn new(io: S, timeout: Duration, peer: impl Into<String>) -> Wire<S> {
        Wire { io, buf: Vec::with_capacity(READ_CHUNK), start: 0, timeout, peer: peer.into(), received: 0 }
    }

    /// The name of the other side.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Bytes buffered and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Marks `n` buffered bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Reads more bytes into the buffer; EOF and timeouts are errors.
    pub async fn fill(&mut self) -> Result<()> {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let read = tokio::time::timeout(self.timeout, self.io.read(&mut self.buf[old..])).await;
        let n = match read {
            Err(_) => {
                self.buf.truncate(old);
                return Err(Error::Protocol(format!(
                    "{} sent nothing for {} s — the server or the link is stalled",
                    self.peer,
                    self.timeout.as_secs()
                )));
            }
            Ok(Err(e)) => {
                self.buf.truncate(old);
                return Err(Error::Connect(format!("connection to {} failed: {e}", self.peer)));
            }
            Ok(Ok(n)) => n,
        };
        self.buf.truncate(old + n);
        if n == 0 {
            return Err(Error::Connect(format!("{} closed the connection unexpectedly", self.peer)));
        }
        self.received += n as u64;
        Ok(())
    }

    /// Reads one line (without its CRLF), at most `limit` bytes.
    pub async fn read_line(&mut self, limit: usize) -> Result<Vec<u8>> {
        loop {
            match find_line(self.buffered(), limit) {
                Ok(Some((end, next))) => {
                    let line = self.buffered()[..end].to_vec();
                    self.consume(next);
                    return Ok(line);
                }
                Ok(None) => self.fill().await?,
                Err(e) => return Err(Error::Protocol(format!("{}: {e}", self.peer))),
            }
        }
    }

    /// Writes all of `data` and flushes, within the timeout.
    pub async fn send(&mut self, data: &[u8]) -> Result<()> {
        let io = &mut self.io;
        let write = async {
            io.write_all(data).await?;
            io.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Err(_) => Err(Error::Protocol(format!("{} stopped accepting data for {} s", self.peer, self.timeout.as_secs()))),
            Ok(Err(e)) => Err(Error::Connect(format!("connection to {} failed: {e}", self.peer))),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Closes the write side.
    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(self.timeout, self.io.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pipelined_bytes_stay_buffered() {
        let (mut server, client) = tokio::io::duplex(1024);
        server.write_all(b"+OK one\r\n+OK two\r\n").await.unwrap();
        let mut w = Wire::new(client, Duration::from_secs(5), "test");
        assert_eq!(w.read_line(100).await.unwrap(), b"+OK one");
        assert_eq!(w.read_line(100).await.unwrap(), b"+OK two");
    }

    #[tokio::test]
    async fn every_wait_has_a_timeout() {
        let (_server, client) = tokio::io::duplex(1024);
        let mut w = Wire::new(client, Duration::from_millis(50), "stalled");
        let e = w.read_line(100).await.unwrap_err();
        assert!(matches!(e, Error::Protocol(_)), "{e}");
        assert!(e.to_string().contains("stalled"));
    }

    #[tokio::test]
    async fn every_read_is_bounded_huge_line() {
        let (mut server, client) = tokio::io::duplex(1 << 20);
        server.write_all(&vec![b'x'; 100_000]).await.unwrap();
        let mut w = Wire::new(client, Duration::from_secs(5), "flood");
        let e = w.read_line(8192).await.unwrap_err();
        assert!(e.to_string().contains("longer than 8192"), "{e}");
    }

    #[tokio::test]
    async fn eof_is_an_error() {
        let (server, client) = tokio::io::duplex(1024);
        drop(server);
        let mut w = Wire::new(client, Duration::from_secs(5), "gone");
        assert!(matches!(w.read_line(100).await.unwrap_err(), Error::Connect(_)));
    }
}
