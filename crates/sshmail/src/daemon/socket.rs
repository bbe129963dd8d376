//! The daemon's half of the control socket ([`crate::control`]): bind it,
//! check every peer's uid (SO_PEERCRED; another user's is refused and
//! logged, whatever the file modes say), read a request, write the reply.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::control::Paths;
use crate::control::protocol::{MAX_REQUEST, Refusal, Reply, Request, Response, VERSION, Why};
use crate::error::{Error, Exit, Result};

/// Binds the socket (mode 0600), replacing a stale one: only the lock's
/// holder calls this.
pub fn listen(paths: &Paths) -> Result<UnixListener> {
    let _ = std::fs::remove_file(&paths.socket);
    let listener = UnixListener::bind(&paths.socket)
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", paths.socket.display())))?;
    std::fs::set_permissions(&paths.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::Config(format!("cannot chmod {}: {e}", paths.socket.display())))?;
    Ok(listener)
}

/// Reads one request from a connection whose peer has been checked.
pub async fn read_request(stream: &mut BufReader<UnixStream>) -> std::result::Result<Request, Refusal> {
    let bad = |text: String| Refusal::new(Why::BadRequest, text, Exit::Usage);
    let mut line = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut limited = (&mut *stream).take(MAX_REQUEST as u64);
        limited.read_until(b'\n', &mut line).await
    })
    .await;
    match read {
        Err(_) => return Err(bad("no request within 10 s".into())),
        Ok(Err(e)) => return Err(bad(format!("cannot read the request: {e}"))),
        Ok(Ok(_)) => {}
    }
    // The version first: a request of another version need not parse.
    let value: serde_json::Value = serde_json::from_slice(&line).map_err(|e| bad(format!("not a request: {e}")))?;
    let version = value.get("version").and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(VERSION)) {
        let theirs = version.map_or_else(|| "none".to_string(), |v| v.to_string());
        return Err(Refusal::new(
            Why::Version,
            format!(
                "this daemon speaks control protocol version {VERSION}, the client {theirs}; run the same sshmail for both"
            ),
            Exit::Usage,
        ));
    }
    serde_json::from_value(value).map_err(|e| bad(format!("not a request: {e}")))
}

/// Refusals of control connections, logged a few at a time.
static REFUSALS: crate::logging::Throttle = crate::logging::Throttle::new();

/// True when the connection's peer runs as our uid; logs a refusal (a
/// flood of them as one line now and then, with a count).
pub fn peer_is_us(stream: &UnixStream) -> bool {
    let me = rustix::process::geteuid().as_raw();
    let cred = stream.peer_cred();
    if matches!(&cred, Ok(c) if c.uid() == me) {
        return true;
    }
    let Some(held) = REFUSALS.allow() else { return false };
    let more = crate::logging::Throttle::more(held);
    match cred {
        Ok(c) => tracing::warn!(
            target: "sshmail::daemon",
            "refused a control connection from uid {} (pid {}): only uid {me} may control this daemon{more}",
            c.uid(),
            c.pid().map(|p| p.to_string()).unwrap_or_else(|| "?".into())
        ),
        Err(e) => {
            tracing::warn!(target: "sshmail::daemon", "refused a control connection: no peer credentials: {e}{more}")
        }
    }
    false
}

/// Writes a reply line.
pub async fn write_response(stream: &mut BufReader<UnixStream>, response: Response) {
    let mut line = serde_json::to_vec(&Reply { version: VERSION, response }).unwrap_or_default();
    line.push(b'\n');
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.get_mut().write_all(&line)).await;
}
