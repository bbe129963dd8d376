//! The client's half: ask the daemon, after checking that the socket, its
//! directory and the process answering are ours.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

use super::paths::Paths;
use super::protocol::{Command, Reply, Request, Response, VERSION};

/// Why a client got no answer.
#[derive(Debug)]
pub enum NoAnswer {
    /// No daemon listens there (the config files of those that run).
    NotRunning(String, Vec<PathBuf>),
    /// One listens but the exchange failed.
    Failed(String),
    /// The socket, its directory or the process answering is not ours: not
    /// a word was sent.
    Unsafe(String),
}

/// Sends `command` to the daemon at `paths` and returns its answer,
/// waiting at most `wait` for it.
pub async fn ask(paths: &Paths, command: Command, wait: Duration) -> std::result::Result<Response, NoAnswer> {
    Ok(exchange(paths, command, wait).await?.0)
}

/// Sends `command` and returns the answer and the connection, which goes
/// on (a tunnel) after the answer's line.
pub async fn exchange(
    paths: &Paths,
    command: Command,
    wait: Duration,
) -> std::result::Result<(Response, BufReader<UnixStream>), NoAnswer> {
    let socket = &paths.socket;
    let not_running = || {
        let others = paths.others_running();
        let hint = match others.as_slice() {
            [] => String::new(),
            [one] => format!("; one runs for {} (give --config {})", one.display(), one.display()),
            many => format!(
                "; daemons run for {} (give --config with one of them)",
                many.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
        };
        NoAnswer::NotRunning(
            format!("no sshmail daemon runs for {} (nothing at {}){hint}", paths.config.display(), socket.display()),
            others,
        )
    };
    // The directory first: whoever owns it decides what is inside.
    let missing =
        |path: &Path| std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
    if missing(&paths.dir) {
        return Err(not_running());
    }
    paths.check_dir().map_err(NoAnswer::Unsafe)?;
    if missing(socket) {
        return Err(not_running());
    }
    paths.check_socket().map_err(NoAnswer::Unsafe)?;
    let mut stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Err(not_running());
        }
        Err(e) => return Err(NoAnswer::Failed(format!("cannot reach the daemon at {}: {e}", socket.display()))),
    };
    // The file was ours a moment ago; the process behind it must be too.
    let me = rustix::process::geteuid().as_raw();
    match stream.peer_cred() {
        Ok(c) if c.uid() == me => {}
        Ok(c) => {
            return Err(NoAnswer::Unsafe(format!(
                "refusing the control socket {}: the process answering runs as uid {}, not as you (uid {me})",
                socket.display(),
                c.uid()
            )));
        }
        Err(e) => {
            return Err(NoAnswer::Unsafe(format!(
                "refusing the control socket {}: no peer credentials: {e}",
                socket.display()
            )));
        }
    }
    let mut line = serde_json::to_vec(&Request { version: VERSION, command }).unwrap_or_default();
    line.push(b'\n');
    let exchange = async {
        stream.write_all(&line).await?;
        let mut reader = BufReader::new(stream);
        let mut answer = Vec::new();
        (&mut reader).take(64 << 20).read_until(b'\n', &mut answer).await?;
        Ok::<_, std::io::Error>((answer, reader))
    };
    let (answer, reader) = match tokio::time::timeout(wait, exchange).await {
        Err(_) => {
            return Err(NoAnswer::Failed(format!(
                "the daemon at {} did not answer within {} s",
                socket.display(),
                wait.as_secs()
            )));
        }
        Ok(Err(e)) => return Err(NoAnswer::Failed(format!("talking to the daemon at {}: {e}", socket.display()))),
        Ok(Ok((a, _))) if a.is_empty() => {
            return Err(NoAnswer::Failed(format!(
                "the daemon at {} closed the connection without an answer (another user's daemon?)",
                socket.display()
            )));
        }
        Ok(Ok(a)) => a,
    };
    Ok((read_reply(&answer, socket)?, reader))
}

/// The next reply line on a connection whose exchange goes on (`login`),
/// waiting at most `wait`.
pub async fn next_reply(
    reader: &mut BufReader<UnixStream>,
    paths: &Paths,
    wait: Duration,
) -> std::result::Result<Response, NoAnswer> {
    let socket = &paths.socket;
    let mut line = Vec::new();
    let read = tokio::time::timeout(wait, (&mut *reader).take(64 << 20).read_until(b'\n', &mut line)).await;
    match read {
        Err(_) => Err(NoAnswer::Failed(format!(
            "the daemon at {} did not answer within {} s",
            socket.display(),
            wait.as_secs()
        ))),
        Ok(Err(e)) => Err(NoAnswer::Failed(format!("talking to the daemon at {}: {e}", socket.display()))),
        Ok(Ok(0)) => Err(NoAnswer::Failed(format!("the daemon at {} closed the connection", socket.display()))),
        Ok(Ok(_)) => read_reply(&line, socket),
    }
}

/// The daemon's reply line: its version read first, so that a daemon of
/// another version is said to be one.
fn read_reply(line: &[u8], socket: &Path) -> std::result::Result<Response, NoAnswer> {
    let not_understood = |e: serde_json::Error| NoAnswer::Failed(format!("the daemon's answer is not understood: {e}"));
    let value: serde_json::Value = serde_json::from_slice(line).map_err(not_understood)?;
    let version = value.get("version").and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(VERSION)) {
        let theirs = version.map_or_else(|| "another".to_string(), |v| v.to_string());
        return Err(NoAnswer::Failed(format!(
            "the daemon at {} speaks control protocol version {theirs}, this sshmail {VERSION}; restart the daemon \
             with this sshmail (sshmail stop, then start it again)",
            socket.display()
        )));
    }
    let reply: Reply = serde_json::from_value(value).map_err(not_understood)?;
    Ok(reply.response)
}
