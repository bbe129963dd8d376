//! A channel through the user's OpenSSH master: OpenSSH's multiplexing
//! protocol in proxy mode (`PROTOCOL.mux`). On the master's `ControlPath`
//! socket, after the mux hello and `MUX_C_PROXY`, SSH connection-protocol
//! messages (RFC 4254) pass in clear, each framed as an SSH packet with no
//! padding and no MAC; the master carries them on the connection it has
//! already verified and authenticated.
//!
//! Each channel here gets a proxy session of its own (a local socket
//! connection is cheap, and the master multiplexes): [`exec`] runs a
//! command, [`forward`] opens a direct-tcpip channel; both hand back a byte
//! stream as [`super::SshSession`]'s channels do.
//!
//! The socket is trusted only when it and the process behind it are the
//! user's own (its owner, and SO_PEERCRED). Everything read is bounded: a
//! packet at most [`MAX_PACKET`], every wait before the channel is open has
//! the caller's deadline.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

use crate::error::{Error, Result};
use crate::process::Collected;

const MUX_MSG_HELLO: u32 = 0x0000_0001;
const MUX_C_ALIVE_CHECK: u32 = 0x1000_0004;
const MUX_S_ALIVE: u32 = 0x8000_0005;
const MUX_C_PROXY: u32 = 0x1000_000f;
const MUX_S_FAILURE: u32 = 0x8000_0003;
const MUX_S_PERMISSION_DENIED: u32 = 0x8000_0002;
const MUX_S_PROXY: u32 = 0x8000_000f;
const MUX_VERSION: u32 = 4;

// RFC 4254 message numbers.
const CHANNEL_OPEN: u8 = 90;
const CHANNEL_OPEN_CONFIRMATION: u8 = 91;
const CHANNEL_OPEN_FAILURE: u8 = 92;
const CHANNEL_WINDOW_ADJUST: u8 = 93;
const CHANNEL_DATA: u8 = 94;
const CHANNEL_EXTENDED_DATA: u8 = 95;
const CHANNEL_EOF: u8 = 96;
const CHANNEL_CLOSE: u8 = 97;
const CHANNEL_REQUEST: u8 = 98;
const CHANNEL_SUCCESS: u8 = 99;
const CHANNEL_FAILURE: u8 = 100;
const GLOBAL_REQUEST: u8 = 80;
const REQUEST_FAILURE: u8 = 82;

/// The largest packet taken from the master.
const MAX_PACKET: usize = 256 * 1024;
/// The data we send in one packet.
const OUR_MAX_PACKET: u32 = 32 * 1024;
/// The window we give the far end; topped up as the reader takes data.
const WINDOW: u32 = 2 * 1024 * 1024;
/// Bytes the local side of the stream buffers.
const PIPE: usize = 256 * 1024;

/// Runs `command` on the master's host; its stdin/stdout as a stream, its
/// stderr and exit status collected.
pub async fn exec(
    socket: &Path,
    command: &str,
    timeout: Duration,
) -> Result<(tokio::io::DuplexStream, Arc<Collected>)> {
    let mut open = Vec::new();
    put_str(&mut open, b"session");
    let (mut conn, remote) = open_with(socket, &open, &[], timeout).await?;
    let mut req = vec![CHANNEL_REQUEST];
    put_u32(&mut req, remote.id);
    put_str(&mut req, b"exec");
    req.push(1);
    put_str(&mut req, command.as_bytes());
    within(timeout, socket, conn.send(&req)).await??;
    // The reply; a window adjust may come first.
    let mut window = remote.window;
    loop {
        let p = within(timeout, socket, conn.recv()).await??;
        match p.first() {
            Some(&CHANNEL_SUCCESS) => break,
            Some(&CHANNEL_WINDOW_ADJUST) => window = window.saturating_add(Reader::new(&p[1..]).u32_at(4)?),
            Some(&CHANNEL_FAILURE) => {
                return Err(Error::Connect(format!(
                    "the OpenSSH master at {} could not run `{command}` (the server refused the command)",
                    socket.display()
                )));
            }
            _ => {}
        }
    }
    let status = Arc::new(Collected::default());
    let stream = pump(conn, Remote { window, ..remote }, Some(status.clone()));
    Ok((stream, status))
}

/// A direct-tcpip channel to `host:port` as seen from the master's host.
pub async fn forward(socket: &Path, host: &str, port: u16, timeout: Duration) -> Result<tokio::io::DuplexStream> {
    let mut open = Vec::new();
    put_str(&mut open, b"direct-tcpip");
    let mut extra = Vec::new();
    put_str(&mut extra, host.as_bytes());
    put_u32(&mut extra, u32::from(port));
    put_str(&mut extra, b"127.0.0.1");
    put_u32(&mut extra, 0);
    open_with(socket, &open, &extra, timeout).await.map(|(conn, remote)| pump(conn, remote, None))
}

/// Whether a master answers at `socket` (a socket file there that takes a
/// connection): when none does, an account may connect on its own.
pub async fn answers(socket: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt as _;
    let is_socket = std::fs::symlink_metadata(socket).is_ok_and(|m| m.file_type().is_socket());
    is_socket && UnixStream::connect(socket).await.is_ok()
}

/// The process id of the master at `socket`, once it has been checked as
/// the user's own and as speaking the mux protocol's proxy mode.
/// The master says it (`MUX_C_ALIVE_CHECK`, as `ssh -O check`): the
/// socket's peer credentials name the process that listened, which
/// `ssh -f` leaves behind when it forks.
pub async fn master_pid(socket: &Path, timeout: Duration) -> Result<u32> {
    within(timeout, socket, async {
        let mut conn = Conn::hello(socket).await?;
        let reply = conn.ask(MUX_C_ALIVE_CHECK, 1).await?;
        let mut r = Reader::new(&reply);
        if r.u32()? != MUX_S_ALIVE || r.u32()? != 1 {
            return Err(conn.not_a_master("it did not answer an alive check"));
        }
        r.u32()
    })
    .await?
}

/// The far end of a channel: its id, window and largest packet.
#[derive(Debug, Clone, Copy)]
struct Remote {
    id: u32,
    window: u32,
    max_packet: u32,
}

/// Connects, checks the master is ours, switches to proxy mode, and opens
/// a channel of `kind` (a string already encoded) with `extra` fields.
async fn open_with(socket: &Path, kind: &[u8], extra: &[u8], timeout: Duration) -> Result<(Conn, Remote)> {
    let mut conn = within(timeout, socket, Conn::connect(socket)).await??;
    let mut open = vec![CHANNEL_OPEN];
    open.extend_from_slice(kind);
    put_u32(&mut open, 0);
    put_u32(&mut open, WINDOW);
    put_u32(&mut open, OUR_MAX_PACKET);
    open.extend_from_slice(extra);
    within(timeout, socket, conn.send(&open)).await??;
    loop {
        let p = within(timeout, socket, conn.recv()).await??;
        let mut r = Reader::new(p.get(1..).unwrap_or_default());
        match p.first() {
            Some(&CHANNEL_OPEN_CONFIRMATION) => {
                let _ours = r.u32()?;
                let remote = Remote { id: r.u32()?, window: r.u32()?, max_packet: r.u32()? };
                return Ok((conn, remote));
            }
            Some(&CHANNEL_OPEN_FAILURE) => {
                let _ours = r.u32()?;
                let code = r.u32()?;
                let text = String::from_utf8_lossy(r.string()?).into_owned();
                return Err(Error::Connect(format!(
                    "the OpenSSH master at {} could not open the channel: {} (code {code})",
                    socket.display(),
                    crate::term::one_line(&text, 200)
                )));
            }
            Some(&GLOBAL_REQUEST) => conn.refuse_global(&p).await?,
            _ => {}
        }
    }
}

/// A proxy session on the master's socket.
struct Conn {
    stream: UnixStream,
    socket: String,
}

impl Conn {
    /// Connects to `socket` and switches it to proxy mode.
    async fn connect(socket: &Path) -> Result<Conn> {
        let mut conn = Conn::hello(socket).await?;
        let reply = conn.ask(MUX_C_PROXY, 0).await?;
        let mut r = Reader::new(&reply);
        match r.u32()? {
            MUX_S_PROXY => Ok(conn),
            code @ (MUX_S_FAILURE | MUX_S_PERMISSION_DENIED) => {
                let _rid = r.u32()?;
                let why = String::from_utf8_lossy(r.string().unwrap_or_default()).into_owned();
                Err(Error::Connect(format!(
                    "the OpenSSH master at {} refused proxy mode ({}): {} (OpenSSH 7.4 or later is needed)",
                    conn.socket,
                    if code == MUX_S_FAILURE { "failure" } else { "permission denied" },
                    crate::term::one_line(&why, 200)
                )))
            }
            other => Err(conn.not_a_master(&format!("it answered proxy mode with message {other:#x}"))),
        }
    }

    /// Connects to `socket`, which must be the user's own (the file and the
    /// process behind it), and exchanges the mux hellos.
    async fn hello(socket: &Path) -> Result<Conn> {
        use std::os::unix::fs::MetadataExt as _;
        let shown = socket.display().to_string();
        let me = rustix::process::geteuid().as_raw();
        let meta = std::fs::symlink_metadata(socket).map_err(|e| {
            Error::Connect(format!("no OpenSSH master at {shown}: {e} (start one: ssh -fN HOST with ControlMaster)"))
        })?;
        if meta.file_type().is_symlink() || meta.uid() != me {
            return Err(Error::Permissions(format!(
                "refusing the OpenSSH master socket {shown}: it is {} (uid {}), not a socket of yours (uid {me})",
                if meta.file_type().is_symlink() { "a symbolic link" } else { "owned by another user" },
                meta.uid()
            )));
        }
        let stream = UnixStream::connect(socket).await.map_err(|e| {
            Error::Connect(format!(
                "no OpenSSH master answers at {shown}: {e} (a stale socket? start one: ssh -fN HOST)"
            ))
        })?;
        match stream.peer_cred() {
            Ok(c) if c.uid() == me => {}
            Ok(c) => {
                return Err(Error::Permissions(format!(
                    "refusing the OpenSSH master socket {shown}: the process behind it runs as uid {}, not as you",
                    c.uid()
                )));
            }
            Err(e) => return Err(Error::Permissions(format!("refusing {shown}: no peer credentials: {e}"))),
        }
        let mut conn = Conn { stream, socket: shown };
        let mut hello = Vec::new();
        put_u32(&mut hello, MUX_MSG_HELLO);
        put_u32(&mut hello, MUX_VERSION);
        conn.write_framed(&hello).await?;
        let reply = conn.read_framed().await?;
        let mut r = Reader::new(&reply);
        if r.u32()? != MUX_MSG_HELLO || r.u32()? != MUX_VERSION {
            return Err(conn.not_a_master("its first message is not a mux hello of version 4"));
        }
        Ok(conn)
    }

    fn not_a_master(&self, why: &str) -> Error {
        Error::Connect(format!("{} is not an OpenSSH master's socket: {why}", self.socket))
    }

    /// Sends the mux request `kind` with request id `id` and returns the
    /// master's reply.
    async fn ask(&mut self, kind: u32, id: u32) -> Result<Vec<u8>> {
        let mut request = Vec::new();
        put_u32(&mut request, kind);
        put_u32(&mut request, id);
        self.write_framed(&request).await?;
        self.read_framed().await
    }

    /// A mux message: uint32 length, then the body.
    async fn write_framed(&mut self, body: &[u8]) -> Result<()> {
        let mut out = Vec::with_capacity(body.len() + 4);
        put_u32(&mut out, u32::try_from(body.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(body);
        self.stream.write_all(&out).await.map_err(|e| self.lost(e))
    }

    async fn read_framed(&mut self) -> Result<Vec<u8>> {
        let len = self.stream.read_u32().await.map_err(|e| self.lost(e))? as usize;
        if len > MAX_PACKET {
            return Err(self.not_a_master(&format!("a message of {len} bytes")));
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).await.map_err(|e| self.lost(e))?;
        Ok(body)
    }

    /// A connection-protocol message, framed as an SSH packet with no
    /// padding and no MAC: uint32 length, byte 0 (the padding length), the
    /// payload.
    async fn send(&mut self, payload: &[u8]) -> Result<()> {
        self.stream.write_all(&packet(payload)).await.map_err(|e| self.lost(e))
    }

    /// The next message's payload.
    async fn recv(&mut self) -> Result<Vec<u8>> {
        read_packet(&mut self.stream, &self.socket).await
    }

    /// Answers a global request that wants a reply with a refusal.
    async fn refuse_global(&mut self, p: &[u8]) -> Result<()> {
        if wants_reply(p)? {
            self.send(&[REQUEST_FAILURE]).await?;
        }
        Ok(())
    }

    fn lost(&self, e: std::io::Error) -> Error {
        Error::Lost(format!("the OpenSSH master at {}: {e}", self.socket))
    }
}

/// Carries the channel between the master and the returned stream until
/// either ends: data both ways within the windows, stderr and the exit
/// status into `status`, our window topped up as the reader takes data.
fn pump(conn: Conn, remote: Remote, status: Option<Arc<Collected>>) -> tokio::io::DuplexStream {
    let (ours, theirs) = tokio::io::duplex(PIPE);
    tokio::spawn(async move {
        if let Err(e) = carry(conn, remote, theirs, status).await {
            tracing::debug!("channel through the OpenSSH master ended: {e}");
        }
    });
    ours
}

async fn carry(
    conn: Conn,
    remote: Remote,
    local: tokio::io::DuplexStream,
    status: Option<Arc<Collected>>,
) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let Conn { stream, socket } = conn;
    let socket = Arc::new(socket);
    let (mut from_master, to_master) = stream.into_split();
    let (from_local, mut to_local) = tokio::io::split(local);
    let to_master = Arc::new(tokio::sync::Mutex::new(to_master));
    // Their window: what we may still send, and a wake when it grows.
    let window = Arc::new((AtomicU64::new(u64::from(remote.window)), tokio::sync::Notify::new()));
    let lost = {
        let socket = socket.clone();
        move |e: std::io::Error| Error::Lost(format!("the OpenSSH master at {socket}: {e}"))
    };
    // Up: the local side's bytes as CHANNEL_DATA within their window, then
    // EOF. A task of its own: reads on either side are never cancelled
    // half-way.
    let up = {
        let (to_master, window, lost) = (to_master.clone(), window.clone(), lost.clone());
        let size = remote.max_packet.clamp(1024, OUR_MAX_PACKET) as usize;
        tokio::spawn(async move {
            let mut from_local = from_local;
            let mut buf = vec![0u8; size];
            loop {
                let room = loop {
                    let room = window.0.load(Ordering::SeqCst);
                    if room > 0 {
                        break room;
                    }
                    window.1.notified().await;
                };
                let n = from_local.read(&mut buf[..room.min(size as u64) as usize]).await.map_err(&lost)?;
                let mut msg = if n == 0 { vec![CHANNEL_EOF] } else { vec![CHANNEL_DATA] };
                put_u32(&mut msg, remote.id);
                if n > 0 {
                    put_str(&mut msg, &buf[..n]);
                }
                to_master.lock().await.write_all(&packet(&msg)).await.map_err(&lost)?;
                if n == 0 {
                    return Ok::<(), Error>(());
                }
                window.0.fetch_sub(n as u64, Ordering::SeqCst);
            }
        })
    };
    let reply = |msg: Vec<u8>| {
        let to_master = to_master.clone();
        let lost = lost.clone();
        async move { to_master.lock().await.write_all(&packet(&msg)).await.map_err(lost) }
    };
    // Down: the master's messages, until the channel closes.
    let mut taken: u32 = 0;
    let ended: Result<()> = async {
        loop {
            let payload = read_packet(&mut from_master, &socket).await?;
            let mut r = Reader::new(payload.get(1..).unwrap_or_default());
            match payload.first().copied() {
                Some(CHANNEL_DATA) => {
                    let _ours = r.u32()?;
                    let data = r.string()?;
                    // The reader gone: nothing more to carry.
                    if to_local.write_all(data).await.is_err() {
                        return Ok(());
                    }
                    taken = taken.saturating_add(u32::try_from(data.len()).unwrap_or(u32::MAX));
                }
                Some(CHANNEL_EXTENDED_DATA) => {
                    let _ours = r.u32()?;
                    let _kind = r.u32()?;
                    let data = r.string()?;
                    if let Some(s) = &status {
                        s.add_stderr(data);
                    }
                    taken = taken.saturating_add(u32::try_from(data.len()).unwrap_or(u32::MAX));
                }
                Some(CHANNEL_WINDOW_ADJUST) => {
                    let _ours = r.u32()?;
                    window.0.fetch_add(u64::from(r.u32()?), Ordering::SeqCst);
                    window.1.notify_one();
                }
                Some(CHANNEL_EOF) => {
                    let _ = to_local.shutdown().await;
                }
                Some(CHANNEL_CLOSE) => {
                    let mut close = vec![CHANNEL_CLOSE];
                    put_u32(&mut close, remote.id);
                    let _ = reply(close).await;
                    return Ok(());
                }
                Some(CHANNEL_REQUEST) => {
                    let _ours = r.u32()?;
                    let name = r.string()?.to_vec();
                    let want_reply = r.byte()? != 0;
                    if let Some(s) = &status {
                        match name.as_slice() {
                            b"exit-status" => s.set_exit(i64::from(r.u32()?)),
                            b"exit-signal" => s.set_exit(-1),
                            _ => {}
                        }
                    }
                    if want_reply {
                        let mut no = vec![CHANNEL_FAILURE];
                        put_u32(&mut no, remote.id);
                        reply(no).await?;
                    }
                }
                Some(GLOBAL_REQUEST) if wants_reply(&payload)? => reply(vec![REQUEST_FAILURE]).await?,
                _ => {}
            }
            // Top our window up once the reader has taken half of it.
            if taken >= WINDOW / 2 {
                let mut adjust = vec![CHANNEL_WINDOW_ADJUST];
                put_u32(&mut adjust, remote.id);
                put_u32(&mut adjust, taken);
                reply(adjust).await?;
                taken = 0;
            }
        }
    }
    .await;
    let _ = to_local.shutdown().await;
    up.abort();
    ended
}

async fn within<T>(timeout: Duration, socket: &Path, fut: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::time::timeout(timeout, fut).await.map_err(|_| {
        Error::Connect(format!(
            "the OpenSSH master at {} did not answer within {} s",
            socket.display(),
            timeout.as_secs()
        ))
    })
}

/// The next packet's payload (its padding dropped), at most
/// [`MAX_PACKET`] read.
async fn read_packet(from: &mut (impl tokio::io::AsyncRead + Unpin), socket: &str) -> Result<Vec<u8>> {
    let lost = |e: std::io::Error| Error::Lost(format!("the OpenSSH master at {socket}: {e}"));
    let len = from.read_u32().await.map_err(lost)? as usize;
    if !(1..=MAX_PACKET).contains(&len) {
        return Err(Error::Protocol(format!("the OpenSSH master at {socket} sent a packet of {len} bytes")));
    }
    let mut packet = vec![0; len];
    from.read_exact(&mut packet).await.map_err(lost)?;
    let pad = usize::from(packet[0]);
    if 1 + pad > len {
        return Err(Error::Protocol(format!("the OpenSSH master at {socket} sent a malformed packet")));
    }
    packet.truncate(len - pad);
    packet.remove(0);
    Ok(packet)
}

/// Whether a global request (`payload`, its type first) wants a reply.
fn wants_reply(payload: &[u8]) -> Result<bool> {
    let mut r = Reader::new(payload.get(1..).unwrap_or_default());
    let _name = r.string()?;
    Ok(r.byte()? != 0)
}

/// `payload` framed as an SSH packet with no padding and no MAC (uint32
/// length, byte 0 for the padding length, the payload), as proxy mode
/// carries it.
fn packet(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    put_u32(&mut out, u32::try_from(payload.len() + 1).unwrap_or(u32::MAX));
    out.push(0);
    out.extend_from_slice(payload);
    out
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_u32(out, u32::try_from(s.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(s);
}

/// Reads SSH wire fields, bounded by the message.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(rest: &'a [u8]) -> Reader<'a> {
        Reader { rest }
    }

    fn short() -> Error {
        Error::Protocol("a message from the OpenSSH master ended early".into())
    }

    fn byte(&mut self) -> Result<u8> {
        let (&b, rest) = self.rest.split_first().ok_or_else(Self::short)?;
        self.rest = rest;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32> {
        let bytes: [u8; 4] = self.rest.get(..4).ok_or_else(Self::short)?.try_into().map_err(|_| Self::short())?;
        self.rest = &self.rest[4..];
        Ok(u32::from_be_bytes(bytes))
    }

    /// The u32 at byte `at`, without moving.
    fn u32_at(&self, at: usize) -> Result<u32> {
        let bytes: [u8; 4] =
            self.rest.get(at..at + 4).ok_or_else(Self::short)?.try_into().map_err(|_| Self::short())?;
        Ok(u32::from_be_bytes(bytes))
    }

    fn string(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        let s = self.rest.get(..len).ok_or_else(Self::short)?;
        self.rest = &self.rest[len..];
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_message_is_an_error_not_a_panic() {
        let mut r = Reader::new(&[0, 0, 0, 9, b'a']);
        assert!(r.string().is_err());
        let mut r = Reader::new(&[0, 0]);
        assert!(r.u32().is_err());
        assert!(Reader::new(&[1, 2, 3]).u32_at(0).is_err());
    }
}
