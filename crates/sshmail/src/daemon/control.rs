//! The control socket: where `sshmail status`, `poll`, `reload` and `stop`
//! reach the running daemon, and the lock that keeps it one per user and
//! config.
//!
//! The socket lives in `$XDG_RUNTIME_DIR/sshmail/` (a directory of mode
//! 0700, the socket 0600), named `control` for the default config file and
//! `control-HASH` for another; the daemon's lock file beside it holds its
//! PID and config file. Every connection's peer uid is checked
//! (SO_PEERCRED): another user's is refused and logged, whatever the file
//! modes say. A client checks the same before it says a word: the
//! directory is not a symlink, is ours and closed to others, the socket is
//! ours, and the process answering runs as our uid. Without a runtime
//! directory the socket is under `$TMPDIR`, where another user could have
//! made the directory first and be waiting there.
//!
//! The protocol is JSON lines: one [`Request`] per connection, one
//! [`Response`] back. Each carries `version` ([`VERSION`]); a daemon
//! answers a request of another version with an error that says so.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::board::Status;
use crate::error::{Error, Result};

/// The protocol's version.
pub const VERSION: u32 = 1;

/// The longest request line a daemon reads.
const MAX_REQUEST: usize = 64 * 1024;

/// What a client asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// [`VERSION`].
    pub version: u32,
    /// What to do.
    #[serde(flatten)]
    pub command: Command,
}

/// The requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Command {
    /// The status of these accounts (all when empty).
    Status {
        /// Account names.
        #[serde(default)]
        accounts: Vec<String>,
    },
    /// A pass over these accounts' folders now (all when empty); answers
    /// when each has made one.
    Poll {
        /// Account names.
        #[serde(default)]
        accounts: Vec<String>,
    },
    /// Re-read the config file.
    Reload,
    /// Stop the daemon.
    Stop,
    /// Relay the outbox entry `id` now, on the daemon's SSH connection
    /// (`sshmail sendmail` after it queued the message).
    Send {
        /// The entry.
        id: String,
    },
    /// A stream to an account's server on the daemon's SSH connection
    /// (`sshmail tunnel`): after an OK response, the connection carries
    /// the server's bytes, its greeting first, and the client's.
    Tunnel {
        /// The account.
        account: String,
        /// `imap`, `pop3` or `smtp`; the account's own protocol when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
    },
}

/// What the daemon answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// [`VERSION`].
    pub version: u32,
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// For `poll`: what each folder's pass did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub polled: Vec<Polled>,
    /// For a refused `tunnel`: the exit code of the error (as `sshmail
    /// fetch` would exit for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<i32>,
    /// For `send`: how the try went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<crate::send::Attempt>,
}

impl Response {
    /// Done, nothing to add.
    pub fn ok() -> Response {
        Response { version: VERSION, ok: true, error: None, status: None, polled: Vec::new(), exit: None, sent: None }
    }

    /// Refused, for `why`.
    pub fn refused(why: impl Into<String>) -> Response {
        Response { ok: false, error: Some(why.into()), ..Response::ok() }
    }
}

/// One folder's pass asked for by `poll`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Polled {
    /// The account.
    pub account: String,
    /// The folder.
    pub folder: String,
    /// Messages it delivered.
    pub delivered: u64,
    /// Its error, if it failed (or did not end in time).
    pub error: Option<String>,
}

/// Where a daemon for a config file keeps its socket and lock.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The config file.
    pub config: PathBuf,
    /// The directory (0700).
    pub dir: PathBuf,
    /// The socket.
    pub socket: PathBuf,
    /// The lock file, holding the daemon's PID.
    pub lock: PathBuf,
}

impl Paths {
    /// The paths for the daemon of `config` (`default`: the default config
    /// file, whose socket is plainly `control`).
    pub fn for_config(config: &Path, default: bool) -> Paths {
        let dir = runtime_dir();
        let suffix = if default {
            String::new()
        } else {
            let canonical = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
            format!("-{}", crate::ledger::short_hash(&canonical.display().to_string(), 8))
        };
        Paths {
            config: config.to_path_buf(),
            socket: dir.join(format!("control{suffix}")),
            lock: dir.join(format!("daemon{suffix}.lock")),
            dir,
        }
    }

    /// A client's check of the directory before it looks inside: no
    /// symlink, a directory owned by us and closed to others. Says what is
    /// wrong, naming the path.
    pub fn check_dir(&self) -> std::result::Result<(), String> {
        let dir = std::fs::symlink_metadata(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        match crate::owned::problem(&dir, 0o077) {
            Some(why) => Err(refuse(&self.dir, &format!("{why} (700 expected)"))),
            None => Ok(()),
        }
    }

    /// A client's check of the socket file: a socket we own.
    pub fn check_socket(&self) -> std::result::Result<(), String> {
        use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
        let me = rustix::process::geteuid().as_raw();
        let socket = std::fs::symlink_metadata(&self.socket).map_err(|e| format!("{}: {e}", self.socket.display()))?;
        if !socket.file_type().is_socket() {
            return Err(refuse(&self.socket, "is not a socket"));
        }
        if socket.uid() != me {
            return Err(refuse(&self.socket, &format!("is owned by uid {}, not by you (uid {me})", socket.uid())));
        }
        Ok(())
    }

    /// The config files of the other daemons running for this user (their
    /// locks held), for a client that found none for its own.
    pub fn others_running(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("daemon") && name.ends_with(".lock")) || entry.path() == self.lock {
                continue;
            }
            if held(&entry.path()) {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                if let Some(config) = text.lines().nth(1).filter(|c| !c.is_empty()) {
                    found.push(PathBuf::from(config));
                }
            }
        }
        found.sort();
        found
    }

    /// Makes the directory (0700) if needed and checks it is ours and
    /// private.
    pub fn prepare(&self) -> Result<()> {
        let bad = |what: String| Error::Config(format!("control directory {}: {what}", self.dir.display()));
        if !self.dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| bad(format!("cannot create it: {e}")))?;
        }
        let meta = std::fs::symlink_metadata(&self.dir).map_err(|e| bad(e.to_string()))?;
        // Ours and a directory; too open, it is closed here (clients refuse it).
        if let Some(why) = crate::owned::problem(&meta, 0) {
            return Err(bad(format!("it {why}; remove it")));
        }
        use std::os::unix::fs::MetadataExt as _;
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| bad(format!("cannot make it private (chmod 700): {e}")))?;
        }
        Ok(())
    }
}

/// A client's refusal of `path`, for `what` is wrong with it.
fn refuse(path: &Path, what: &str) -> String {
    format!(
        "refusing the control socket: {} {what}; another user may have made it to pose as your daemon. Remove \
         it (or set XDG_RUNTIME_DIR to a private directory) and start the daemon again",
        path.display()
    )
}

/// `$XDG_RUNTIME_DIR/sshmail`; without it `/run/user/UID/sshmail` where
/// that exists, else `$TMPDIR/sshmail-UID`.
fn runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("sshmail");
    }
    let uid = rustix::process::geteuid().as_raw();
    let run = PathBuf::from(format!("/run/user/{uid}"));
    if run.is_dir() {
        return run.join("sshmail");
    }
    std::env::temp_dir().join(format!("sshmail-{uid}"))
}

/// The daemon's lock: held as long as this lives.
pub struct Lock {
    _file: std::fs::File,
}

impl Lock {
    /// Takes the lock, or says which PID holds it.
    pub fn take(paths: &Paths) -> std::result::Result<Lock, Held> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&paths.lock)
            .map_err(|e| Held::Error(Error::Config(format!("cannot open {}: {e}", paths.lock.display()))))?;
        use rustix::fs::{FlockOperation, flock};
        if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
            if e == rustix::io::Errno::WOULDBLOCK {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(Held::By(text.lines().next().and_then(|pid| pid.trim().parse().ok())));
            }
            return Err(Held::Error(Error::Config(format!("cannot lock {}: {e}", paths.lock.display()))));
        }
        // The PID, and the config file (for a client of another config).
        let text = format!("{}\n{}\n", std::process::id(), paths.config.display());
        let written = file.set_len(0).and_then(|()| file.write_all(text.as_bytes())).and_then(|()| file.sync_data());
        if let Err(e) = written {
            return Err(Held::Error(Error::Config(format!("cannot write {}: {e}", paths.lock.display()))));
        }
        Ok(Lock { _file: file })
    }
}

/// True while a daemon holds the lock file `lock`; looked at without
/// writing it.
pub fn held(lock: &Path) -> bool {
    use rustix::fs::{FlockOperation, flock};
    let Ok(file) = std::fs::File::open(lock) else { return false };
    // A shared lock is refused while the daemon holds its exclusive one;
    // taken, it goes with the file.
    flock(&file, FlockOperation::NonBlockingLockShared) == Err(rustix::io::Errno::WOULDBLOCK)
}

/// Why the lock was not taken.
#[derive(Debug)]
pub enum Held {
    /// Another daemon holds it (its PID, when readable).
    By(Option<u32>),
    /// The lock file could not be used.
    Error(Error),
}

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
pub async fn read_request(stream: &mut BufReader<UnixStream>) -> std::result::Result<Request, String> {
    let mut line = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut limited = (&mut *stream).take(MAX_REQUEST as u64);
        limited.read_until(b'\n', &mut line).await
    })
    .await;
    match read {
        Err(_) => return Err("no request within 10 s".into()),
        Ok(Err(e)) => return Err(format!("cannot read the request: {e}")),
        Ok(Ok(_)) => {}
    }
    let request: Request = serde_json::from_slice(&line).map_err(|e| format!("not a request: {e}"))?;
    if request.version != VERSION {
        return Err(format!(
            "this daemon speaks control protocol version {VERSION}, the client {}; run the same sshmail for both",
            request.version
        ));
    }
    Ok(request)
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

/// Writes a response line.
pub async fn write_response(stream: &mut BufReader<UnixStream>, response: &Response) {
    let mut line = serde_json::to_vec(response).unwrap_or_default();
    line.push(b'\n');
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.get_mut().write_all(&line)).await;
}

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
    let response = serde_json::from_slice(&answer)
        .map_err(|e| NoAnswer::Failed(format!("the daemon's answer is not understood: {e}")))?;
    Ok((response, reader))
}
