//! Buffered, bounded, timed byte I/O over any stream.
//!
//! One [`Wire`] per connection: it owns the read buffer, so bytes that arrive
//! beyond the current reply (pipelined answers) stay buffered for the next
//! one. Every line is bounded.
//!
//! Deadlines are per reply, not per read: a server that drips one byte every
//! few seconds must not keep us forever. Within `timeout` of waiting, either
//! a unit completes (a reply line, an IMAP response, a body: the reader says
//! so with [`Wire::progress`]) or at least [`MIN_RATE`] bytes per second of
//! the timeout arrive (a large body that streams). Only time spent waiting
//! counts, so our own fsyncs between two reads do not eat the server's time.
//!
//! Writes go through a writer task of their own. With pipelining, the server
//! may be streaming a large body at us while we queue the next command; on an
//! SSH channel, a write that waits for the connection's event loop while that
//! loop waits for us to read would deadlock. A separate writer means reading
//! never waits on writing. Its queue is bounded by bytes ([`WRITE_QUEUE`]):
//! a sender that streams a large message (SMTP or LMTP DATA) waits for room
//! instead of reading the whole message into memory.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sshmail_proto::line::find_line;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// A byte stream to a server, however it was made.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Connects to `host:port` within `timeout` (a timeout is an error of kind
/// `TimedOut`), with Nagle off: the one TCP connect for SSH, mail servers
/// and SMTP/LMTP sinks.
pub async fn connect_tcp(host: &str, port: u16, timeout: Duration) -> std::io::Result<tokio::net::TcpStream> {
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("timed out after {timeout:?}")))??;
    tcp.set_nodelay(true).ok();
    Ok(tcp)
}

/// A TCP stream that acknowledges at once what it reads (TCP_QUICKACK,
/// which Linux clears as it goes, set again after every read). A peer
/// with Nagle's algorithm on (sshd, for a session without a terminal)
/// holds a small packet back until its previous one is acknowledged, and a
/// delayed ACK waits up to 40 ms: without this, an exchange of small
/// messages over an SSH channel (an SMTP reply written line by line) can
/// stall 40 ms at each step.
pub struct QuickAck(pub tokio::net::TcpStream);

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let _ = rustix::net::sockopt::set_tcp_quickack(&self.0, true);
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Initial read buffer capacity.
const READ_CHUNK: usize = 64 * 1024;

/// Read buffer room during a long wait (IDLE) with nothing buffered.
const IDLE_CHUNK: usize = 2 * 1024;

/// The slowest a body may stream: bytes per second of the timeout.
pub const MIN_RATE: u64 = 1024;

/// Bytes queued for the writer at most; a send waits for room beyond it.
pub const WRITE_QUEUE: usize = 2 << 20;

/// Queued bytes with their claim on the queue's room.
type Queued = (Vec<u8>, tokio::sync::OwnedSemaphorePermit);

/// How much of the current timeout window was spent waiting, and what came.
#[derive(Debug, Default, Clone, Copy)]
struct Clock {
    waited: Duration,
    bytes: u64,
}

/// A stream with a read buffer and a per-wait timeout.
pub struct Wire<S> {
    io: ReadHalf<S>,
    writer: Option<mpsc::UnboundedSender<Queued>>,
    room: Arc<tokio::sync::Semaphore>,
    write_error: Arc<Mutex<Option<Error>>>,
    /// Hands back the write half instead of closing it (see [`Wire::into_inner`]).
    keep_open: Arc<std::sync::atomic::AtomicBool>,
    writer_task: Option<tokio::task::JoinHandle<Option<tokio::io::WriteHalf<S>>>>,
    buf: Vec<u8>,
    start: usize,
    timeout: Duration,
    clock: Clock,
    peer: String,
    /// Bytes received so far.
    pub received: u64,
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> Wire<S> {
    /// Wraps `io`; `peer` names the other side in errors.
    pub fn new(io: S, timeout: Duration, peer: impl Into<String>) -> Wire<S> {
        let peer = peer.into();
        let (read, mut write) = tokio::io::split(io);
        let (tx, mut rx) = mpsc::unbounded_channel::<Queued>();
        let write_error = Arc::new(Mutex::new(None));
        let errors = write_error.clone();
        let who = peer.clone();
        let keep_open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let keep = keep_open.clone();
        let writer_task = tokio::spawn(async move {
            while let Some((bytes, _room)) = rx.recv().await {
                let done = async {
                    write.write_all(&bytes).await?;
                    write.flush().await
                };
                let failure = match tokio::time::timeout(timeout, done).await {
                    Ok(Ok(())) => continue,
                    Err(_) => Error::Protocol(format!("{who} stopped accepting data for {} s", timeout.as_secs())),
                    Ok(Err(e)) => Error::Lost(format!("connection to {who} failed: {e}")),
                };
                *errors.lock().expect("write error lock") = Some(failure);
                return None;
            }
            if keep.load(std::sync::atomic::Ordering::SeqCst) {
                return Some(write);
            }
            let _ = tokio::time::timeout(timeout, write.shutdown()).await;
            None
        });
        Wire {
            io: read,
            writer: Some(tx),
            room: Arc::new(tokio::sync::Semaphore::new(WRITE_QUEUE)),
            write_error,
            keep_open,
            writer_task: Some(writer_task),
            buf: Vec::new(),
            start: 0,
            timeout,
            clock: Clock::default(),
            peer,
            received: 0,
        }
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

    /// Something complete arrived (a line, a response, a body): the server
    /// gets a fresh timeout for the next one.
    pub fn progress(&mut self) {
        self.clock = Clock::default();
    }

    /// Reads more bytes into the buffer; EOF is an error, and so is a server
    /// that neither completes a unit nor sends [`MIN_RATE`] bytes a second
    /// within the timeout.
    pub async fn fill(&mut self) -> Result<()> {
        let timeout = self.timeout;
        let remaining = timeout.saturating_sub(self.clock.waited);
        let started = tokio::time::Instant::now();
        let before = self.received;
        let r = if remaining.is_zero() { None } else { tokio::time::timeout(remaining, self.read_more()).await.ok() };
        self.clock.waited += started.elapsed();
        match r {
            Some(r) => {
                r?;
                self.clock.bytes += self.received - before;
                if self.clock.bytes >= MIN_RATE * timeout.as_secs().max(1) {
                    // Streaming at a decent rate: a new window.
                    self.progress();
                }
                Ok(())
            }
            None if self.clock.bytes == 0 => Err(Error::Protocol(format!(
                "{} sent nothing for {} s — the server or the link is stalled",
                self.peer,
                timeout.as_secs()
            ))),
            None => Err(Error::Protocol(format!(
                "{} sent only {} bytes in {} s without completing a reply — too slow (a reply must complete within the \
                 timeout, and a message must arrive at {} bytes/s or more)",
                self.peer,
                self.clock.bytes,
                timeout.as_secs(),
                MIN_RATE
            ))),
        }
    }

    /// Reads more bytes without a timeout, for waits that may legitimately
    /// last long (IMAP IDLE); the caller bounds the wait itself. Cancel-safe:
    /// dropped before completion, it leaves the buffer as it was. What
    /// arrives starts a fresh timeout.
    pub async fn fill_untimed(&mut self) -> Result<()> {
        // A long wait with nothing buffered holds a small buffer, not a
        // transfer's: a thousand idle accounts hold 2 KiB each, not 64.
        if self.start == self.buf.len() && self.buf.capacity() > IDLE_CHUNK {
            self.buf = Vec::new();
            self.start = 0;
        }
        self.read_more_by(IDLE_CHUNK).await?;
        self.progress();
        Ok(())
    }

    /// One read into the buffer. Cancel-safe.
    async fn read_more(&mut self) -> Result<()> {
        self.read_more_by(READ_CHUNK).await
    }

    /// One read into the buffer, with room for at least `chunk` bytes.
    /// Cancel-safe.
    async fn read_more_by(&mut self, chunk: usize) -> Result<()> {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(chunk);
        let n = self
            .io
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| Error::Lost(format!("connection to {} failed: {e}", self.peer)))?;
        if n == 0 {
            return Err(Error::Lost(format!("{} closed the connection unexpectedly", self.peer)));
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
                    self.progress();
                    return Ok(line);
                }
                Ok(None) => self.fill().await?,
                Err(e) => return Err(Error::Protocol(format!("{}: {e}", self.peer))),
            }
        }
    }

    /// Queues `data` for the writer task. A failure of an earlier write is
    /// reported here; a failure of this one, by the next call or by the read
    /// that waits for the answer.
    /// Waits while [`WRITE_QUEUE`] bytes are queued (within the timeout: the
    /// writer task gives up on a peer that accepts nothing, and its queue
    /// then empties).
    pub async fn send(&mut self, data: &[u8]) -> Result<()> {
        if let Some(e) = self.write_error.lock().expect("write error lock").take() {
            return Err(e);
        }
        let claim = u32::try_from(data.len().clamp(1, WRITE_QUEUE)).unwrap_or(u32::MAX);
        let room = tokio::time::timeout(self.timeout * 2, self.room.clone().acquire_many_owned(claim))
            .await
            .map_err(|_| Error::Protocol(format!("{} stopped accepting data", self.peer)))?
            .map_err(|_| Error::Lost(format!("connection to {} is closed for writing", self.peer)))?;
        if let Some(e) = self.write_error.lock().expect("write error lock").take() {
            return Err(e);
        }
        match &self.writer {
            Some(tx) if tx.send((data.to_vec(), room)).is_ok() => Ok(()),
            _ => Err(Error::Lost(format!("connection to {} is closed for writing", self.peer))),
        }
    }

    /// The stream itself again, once everything queued is written (to start
    /// TLS on it). Refused when the peer sent more than was read: bytes
    /// sent before the TLS handshake must not be taken as sent inside it.
    pub async fn into_inner(mut self) -> Result<S>
    where
        S: Unpin,
    {
        if !self.buffered().is_empty() {
            return Err(Error::Protocol(format!(
                "{} sent {} bytes more than asked for before TLS began; that is refused (it would let someone on \
                 the way inject commands)",
                self.peer,
                self.buffered().len()
            )));
        }
        self.keep_open.store(true, std::sync::atomic::Ordering::SeqCst);
        self.writer = None;
        let task = self.writer_task.take().expect("the writer runs until shutdown");
        let write = tokio::time::timeout(self.timeout, task)
            .await
            .map_err(|_| Error::Protocol(format!("{} stopped accepting data", self.peer)))?
            .ok()
            .flatten();
        let error = self.write_error.lock().expect("write error lock").take();
        match write {
            Some(write) => Ok(self.io.unsplit(write)),
            None => Err(error.unwrap_or_else(|| Error::Lost(format!("connection to {} failed", self.peer)))),
        }
    }

    /// Closes the write side once everything queued is written.
    pub async fn shutdown(&mut self) {
        self.writer = None;
        if let Some(task) = self.writer_task.take() {
            let _ = tokio::time::timeout(self.timeout, task).await;
        }
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

    /// Regression: with the write done inline, a command written while the
    /// peer was itself blocked sending us a large body deadlocked (each side
    /// waiting for the other to read); over SSH the fetch hung until the
    /// timeout. The peer here sends 1 MiB before it reads anything, through
    /// pipes of 1 KiB; we send 64 KiB of commands first, then read.
    #[tokio::test]
    async fn regression_reads_never_wait_on_writes() {
        use tokio::io::AsyncReadExt as _;
        let (mut server, client) = tokio::io::duplex(1024);
        let peer = tokio::spawn(async move {
            server.write_all(&vec![b'x'; 1 << 20]).await.unwrap();
            server.write_all(b"\r\nEND\r\n").await.unwrap();
            let mut got = vec![0u8; 64 * 1024];
            server.read_exact(&mut got).await.unwrap();
            got
        });
        let mut w = Wire::new(client, Duration::from_secs(5), "peer");
        let commands = vec![b'c'; 64 * 1024];
        tokio::time::timeout(Duration::from_secs(10), async {
            w.send(&commands).await.unwrap();
            let mut total = 0usize;
            loop {
                match find_line(w.buffered(), 2 << 20).unwrap() {
                    Some((_, next)) if w.buffered().starts_with(b"END") => {
                        w.consume(next);
                        break;
                    }
                    Some((end, next)) => {
                        total += end;
                        w.consume(next);
                    }
                    None => w.fill().await.unwrap(),
                }
            }
            assert_eq!(total, 1 << 20);
        })
        .await
        .expect("deadlock: reading waited on writing");
        assert_eq!(peer.await.unwrap(), commands);
    }

    /// What is queued for writing is bounded: a sender faster than its peer
    /// waits for room instead of queueing the whole message in memory.
    #[tokio::test]
    async fn every_read_is_bounded_the_write_queue_holds_at_most_its_room() {
        use tokio::io::AsyncReadExt as _;
        let (mut server, client) = tokio::io::duplex(64 * 1024);
        let mut w = Wire::new(client, Duration::from_secs(5), "slow");
        let chunk = vec![b'x'; 256 * 1024];
        // Nobody reads: the queue fills to its room, then send waits.
        let mut queued = 0usize;
        while let Ok(r) = tokio::time::timeout(Duration::from_millis(200), w.send(&chunk)).await {
            r.unwrap();
            queued += chunk.len();
            assert!(queued <= WRITE_QUEUE + 2 * chunk.len(), "queued {queued} bytes");
        }
        assert!(queued >= WRITE_QUEUE - chunk.len(), "the queue should fill before send waits ({queued})");
        // Once the peer reads, sending goes on.
        let reader = tokio::spawn(async move {
            let mut sink = vec![0u8; 1 << 20];
            let mut total = 0usize;
            while total < 8 << 20 {
                total += server.read(&mut sink).await.unwrap();
            }
            total
        });
        for _ in 0..24 {
            w.send(&chunk).await.unwrap();
        }
        assert!(reader.await.unwrap() >= 8 << 20);
    }

    #[tokio::test]
    async fn every_wait_has_a_timeout() {
        let (_server, client) = tokio::io::duplex(1024);
        let mut w = Wire::new(client, Duration::from_millis(50), "stalled");
        let e = w.read_line(100).await.unwrap_err();
        assert!(matches!(e, Error::Protocol(_)), "{e}");
        assert!(e.to_string().contains("stalled"));
    }

    /// Regression: the timeout applied to each read, so a greeting sent one
    /// byte at a time, each within the timeout, kept us forever.
    #[tokio::test]
    async fn regression_every_wait_has_a_timeout_a_dripping_line_is_cut_off() {
        let (mut server, client) = tokio::io::duplex(1024);
        let drip = tokio::spawn(async move {
            for _ in 0..100 {
                if server.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut w = Wire::new(client, Duration::from_millis(500), "drip");
        let started = std::time::Instant::now();
        let e = w.read_line(100).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        assert!(e.to_string().contains("without completing a reply"), "{e}");
        drop(w);
        drip.abort();
    }

    #[tokio::test]
    async fn every_wait_has_a_timeout_a_body_must_keep_a_minimum_rate() {
        // 1 s timeout: at least MIN_RATE bytes a second, or a unit complete.
        let (mut server, client) = tokio::io::duplex(1 << 16);
        let fast = tokio::spawn(async move {
            // Fast enough: 4 KiB every 200 ms for 2 s, then a trickle.
            for _ in 0..10 {
                server.write_all(&[b'y'; 4096]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            for _ in 0..100 {
                if server.write_all(b"z").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let mut w = Wire::new(client, Duration::from_secs(1), "body");
        let started = std::time::Instant::now();
        let e = loop {
            if let Err(e) = w.fill().await {
                break e;
            }
            let n = w.buffered().len();
            w.consume(n);
        };
        let took = started.elapsed();
        assert!(w.received >= 40_960, "the fast part was cut off: {}", w.received);
        assert!(took < Duration::from_secs(4), "the trickle was not cut off in time: {took:?}");
        assert!(e.to_string().contains("too slow"), "{e}");
        fast.abort();
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
        assert!(matches!(w.read_line(100).await.unwrap_err(), Error::Lost(_)));
    }
}
