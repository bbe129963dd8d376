//! Child processes: the tunnel command, the password command.
//!
//! Each child runs with a deadline and bounded output. Without a terminal
//! (cron, a service) it gets a process group of its own, and the whole group
//! is ended with it: `/bin/sh -c 'ssh …'` must not leave the `ssh` behind.
//! On a terminal the child stays in our group, so that it may still ask for
//! a passphrase on the terminal (a background group reading it would stop),
//! and Ctrl-C reaches all of us.

use std::io::IsTerminal as _;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

use crate::config::Command;
use crate::error::{Error, Result};

/// Most a password command may print.
const MAX_SECRET_OUTPUT: usize = 4096;
/// Most of a child's stderr kept for error messages.
pub const MAX_STDERR: usize = 64 * 1024;

/// True when we run on a terminal (a person may answer prompts).
pub fn interactive() -> bool {
    std::io::stdin().is_terminal()
}

/// A process command for `c`: a string through `/bin/sh -c`, a vector as
/// it is. The second value names it in messages by its program only, since
/// the rest of a command line may hold a secret.
pub fn command(c: &Command, what: &str) -> Result<(tokio::process::Command, String)> {
    let (program, args): (&str, Vec<&str>) = match c {
        Command::Shell(s) => ("/bin/sh", vec!["-c", s.as_str()]),
        Command::Argv(v) if !v.is_empty() => (v[0].as_str(), v[1..].iter().map(String::as_str).collect()),
        Command::Argv(_) => return Err(Error::Config(format!("{what}: empty command"))),
    };
    let first_word = c.program();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true);
    if !interactive() {
        cmd.process_group(0);
    }
    Ok((cmd, format!("{what} (`{first_word}` …)")))
}

/// How long a tunnel command whose stream was closed (its stdin at EOF) may
/// take to end by itself before its group is killed.
pub const CHILD_GRACE: Duration = Duration::from_secs(1);

/// The tasks that watch the tunnel commands still running: each ends once
/// its child has exited (and its group been killed).
static WATCHERS: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>> = std::sync::Mutex::new(Vec::new());

/// Keeps the task watching a child, for [`wait_children`].
pub fn watch_child(task: tokio::task::JoinHandle<()>) {
    let mut watchers = WATCHERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    watchers.retain(|t| !t.is_finished());
    watchers.push(task);
}

/// Waits, at most `limit`, until every child started for a stream has
/// ended: a command exits only after the children it started are gone.
pub async fn wait_children(limit: Duration) {
    let watchers = std::mem::take(&mut *WATCHERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let _ = tokio::time::timeout(limit, async {
        for w in watchers {
            let _ = w.await;
        }
    })
    .await;
}

/// The process (group) of a child we started, to end it and all it started.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    pid: Option<u32>,
    own_group: bool,
}

impl Group {
    /// The group of `child`, as [`command`] set it up.
    pub fn of(child: &tokio::process::Child) -> Group {
        Group { pid: child.id(), own_group: !interactive() }
    }

    /// The group of `child`, started in a process group of its own
    /// (`process_group(0)`) whether or not there is a terminal.
    pub fn own(child: &tokio::process::Child) -> Group {
        Group { pid: child.id(), own_group: true }
    }

    /// Ends everything in the child's group, when it has one of its own
    /// (the child itself is ended by dropping its handle: `kill_on_drop`).
    /// A group outlives its leader while a member lives, so this also
    /// reaches what the child left running after it exited.
    pub fn kill(&self) {
        if !self.own_group {
            return;
        }
        if let Some(pid) = self.pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }

    /// Ends what the child started, called while the child still runs (not
    /// yet waited for, so its PID is still its own): its group, or on a
    /// terminal, where it shares our group, its descendants.
    pub fn kill_tree(&self) {
        if self.own_group {
            return self.kill();
        }
        let Some(pid) = self.pid else { return };
        for d in descendants(pid as i32) {
            if let Some(d) = rustix::process::Pid::from_raw(d) {
                let _ = rustix::process::kill_process(d, rustix::process::Signal::KILL);
            }
        }
    }
}

/// The processes below `pid` (children, their children, …), from /proc.
fn descendants(pid: i32) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
        if let Some(ppid) = ppid {
            parent_of.push((p, ppid));
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

/// Reads at most `max` bytes; returns them and whether more was there.
pub async fn read_bounded(mut r: impl tokio::io::AsyncRead + Unpin, max: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return (out, false),
            Ok(n) if out.len() + n > max => {
                out.extend_from_slice(&buf[..max - out.len()]);
                return (out, true);
            }
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads `r` to its end, keeping at most the first `keep` bytes: a writer
/// that prints without end is read (it never blocks) at no cost in memory.
pub async fn drain(mut r: impl tokio::io::AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = keep.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
            }
        }
    }
}

/// The password of `source`, running its command if it has one.
pub async fn password(
    source: &crate::config::PasswordSource,
    what: &str,
    timeout: Duration,
) -> Result<Option<crate::secret::Secret>> {
    use crate::config::PasswordSource;
    match source {
        PasswordSource::None => Ok(None),
        PasswordSource::Literal(s) => Ok(Some(s.clone())),
        PasswordSource::Command(c) => read_secret(c, what, timeout).await.map(Some),
    }
}

/// Runs a password command: its first output line is the secret. It must
/// finish within `timeout`, print at most a few KiB, and print something.
/// Its stderr goes to ours on a terminal (it may prompt there), else into
/// the error message.
pub async fn read_secret(c: &Command, what: &str, timeout: Duration) -> Result<crate::secret::Secret> {
    let (mut cmd, shown) = command(c, what)?;
    let tty = interactive();
    cmd.stdin(if tty { Stdio::inherit() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(if tty {
        Stdio::inherit()
    } else {
        Stdio::piped()
    });
    let mut child = cmd.spawn().map_err(|e| Error::Config(format!("cannot run {shown}: {e}")))?;
    let group = Group::of(&child);
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take();
    let run = async {
        let err = async {
            match stderr {
                Some(e) => read_bounded(e, MAX_STDERR).await.0,
                None => Vec::new(),
            }
        };
        let ((out, more), err) = tokio::join!(read_bounded(stdout, MAX_SECRET_OUTPUT), err);
        if more {
            return Err(Error::Config(format!(
                "{shown} printed more than {MAX_SECRET_OUTPUT} bytes; expected a password"
            )));
        }
        let status = child.wait().await.map_err(|e| Error::Config(format!("{shown}: {e}")))?;
        Ok((out, err, status))
    };
    let (out, err, status) = match tokio::time::timeout(timeout, run).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            group.kill();
            return Err(e);
        }
        Err(_) => {
            group.kill();
            return Err(Error::Config(format!(
                "{shown} did not finish within {} s (without a terminal, a command that asks for a passphrase waits \
                 forever: unlock its agent first, or use a command that needs no prompt)",
                timeout.as_secs()
            )));
        }
    };
    let said = String::from_utf8_lossy(&err).trim().lines().last().map(|l| format!(": {l}")).unwrap_or_default();
    if !status.success() {
        let how = status.code().map_or_else(|| "was killed by a signal".to_string(), |c| format!("exited with {c}"));
        return Err(Error::Config(format!("{shown} failed ({how}){said}")));
    }
    let text = String::from_utf8(out).map_err(|_| Error::Config(format!("{shown}: its output is not UTF-8")))?;
    let first = text.lines().next().unwrap_or("");
    if first.is_empty() {
        return Err(Error::Config(format!("{shown} printed no password (its first line is empty){said}")));
    }
    Ok(crate::secret::Secret::new(first))
}

/// What a process at the other end of a stream (a tunnel command, a remote
/// command in an exec channel) said on stderr (the first [`MAX_STDERR`]
/// bytes) and how it ended, for error messages. The one collector for both.
#[derive(Debug, Default)]
pub struct Collected {
    stderr: std::sync::Mutex<Vec<u8>>,
    exit: std::sync::Mutex<Option<i64>>,
    exited: tokio::sync::Notify,
    /// This is a ProxyCommand's: what it says explains an error only once
    /// it has ended (its SSH connection with it).
    proxy: std::sync::atomic::AtomicBool,
    /// The ProxyCommand under the SSH connection this process's channel
    /// runs on, if any: when it ended, it is the cause.
    under: std::sync::OnceLock<Arc<Collected>>,
}

impl Collected {
    /// Keeps stderr bytes, up to [`MAX_STDERR`] in all.
    pub fn add_stderr(&self, data: &[u8]) {
        let mut e = self.stderr.lock().expect("stderr lock");
        let room = MAX_STDERR.saturating_sub(e.len());
        e.extend_from_slice(&data[..data.len().min(room)]);
    }

    /// Records the exit status (-1: killed by a signal).
    pub fn set_exit(&self, code: i64) {
        *self.exit.lock().expect("exit lock") = Some(code);
        // notify_one keeps a permit if nobody waits yet.
        self.exited.notify_one();
    }

    /// The exit status, once known.
    pub fn exit(&self) -> Option<i64> {
        *self.exit.lock().expect("exit lock")
    }

    /// Waits up to `max` for the exit status, which often arrives just
    /// after the output ends (and the last stderr with it).
    pub async fn wait_exit(&self, max: Duration) -> Option<i64> {
        if self.exit().is_none() {
            let _ = tokio::time::timeout(max, self.exited.notified()).await;
        }
        self.exit()
    }

    /// Marks this as a ProxyCommand's.
    pub fn mark_proxy(&self) {
        self.proxy.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Records the ProxyCommand under this process's SSH connection.
    pub fn run_under(&self, proxy: Arc<Collected>) {
        let _ = self.under.set(proxy);
    }

    /// The stderr collected so far, as text, trimmed.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("stderr lock")).trim().to_string()
    }
}

/// Quotes one word for a POSIX shell.
pub fn shell_quote(w: &str) -> String {
    if !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b)) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// How long a ProxyCommand's exit is waited for before it is taken as
/// still running (when it died, its SSH connection's loss came after).
const PROXY_WAIT: Duration = Duration::from_millis(300);

/// How long to wait for a process's exit status after its output ended
/// (for an error message; a local command's status comes after its stderr
/// is drained, which takes at most a second).
pub const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The error, with what the process behind the stream said (its stderr
/// and exit status, waited for a moment) when that explains it: a stream
/// that could not be made, was lost, or carried no sense.
pub async fn explain(diagnostics: Option<&Collected>, e: Error) -> Error {
    let Some(d) = diagnostics else { return e };
    if !matches!(e, Error::Connect(_) | Error::Lost(_) | Error::Protocol(_) | Error::Server(_)) {
        return e;
    }
    // A ProxyCommand that ended took the SSH connection with it.
    let d = match d.under.get() {
        Some(p) if p.wait_exit(PROXY_WAIT).await.is_some() => p.as_ref(),
        _ => d,
    };
    let proxy = d.proxy.load(std::sync::atomic::Ordering::SeqCst);
    if proxy && d.wait_exit(PROXY_WAIT).await.is_none() {
        // Still running: not the cause.
        return e;
    }
    d.wait_exit(EXIT_WAIT).await;
    let said = crate::error::Said { exit: d.exit(), stderr: d.stderr(), proxy };
    if said.is_empty() { e } else { Error::Said(Box::new(e), said) }
}

/// How long a local command's stderr is read after the command exited.
const STDERR_DRAIN: Duration = Duration::from_secs(1);

/// A local command as the connection. It runs in a process group of its
/// own (without a terminal), and the whole group ends with the stream or
/// with us: a `/bin/sh -c 'ssh …'` leaves no `ssh` behind. When the stream
/// is closed the child gets [`CHILD_GRACE`] to end by
/// itself (its stdin at EOF) before its group is killed; a command waits
/// for that ([`crate::process::wait_children`]) before it exits.
/// Returns the stream, what the command says on stderr and its exit
/// status, and how it is shown in messages.
pub fn spawn_stream(c: &Command, what: &str) -> Result<(ChildStream, Arc<Collected>, String)> {
    let (mut cmd, shown) = command(c, what)?;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Connect(format!("cannot run {shown}: {e}")))?;
    let group = Group::of(&child);
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let diag = Arc::new(Collected::default());
    let d = diag.clone();
    let echo = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Its stderr in bounded chunks: a line without an end is still only
    // ever a chunk in memory, and only the first 64 KiB are kept.
    let stderr_read = tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 8192];
        while let Ok(n @ 1..) = stderr.read(&mut buf).await {
            let text = String::from_utf8_lossy(&buf[..n]);
            if echo {
                tracing::debug!("{}", text.trim_end());
            }
            d.add_stderr(&buf[..n]);
        }
    });
    let d = diag.clone();
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        // Whatever it started goes with it, also when this task is dropped
        // (the runtime going away).
        let group = KillOnDrop(group);
        let status = tokio::select! {
            s = child.wait() => s.ok(),
            _ = kill_rx => {
                // The stream is gone, its stdin with it: the child sees EOF
                // and may end its session cleanly, for a moment.
                match tokio::time::timeout(CHILD_GRACE, child.wait()).await {
                    Ok(s) => s.ok(),
                    Err(_) => {
                        group.0.kill_tree();
                        let _ = child.kill().await;
                        child.wait().await.ok()
                    }
                }
            }
        };
        drop(group);
        // The status is published only once its stderr is read to the end
        // (bounded: a grandchild that escaped the group may hold it open),
        // so whoever waits for the status also gets its last words.
        let _ = tokio::time::timeout(STDERR_DRAIN, stderr_read).await;
        if let Some(s) = status {
            d.set_exit(s.code().map(i64::from).unwrap_or(-1));
        }
    });
    watch_child(watcher);
    Ok((ChildStream { stdout, stdin, _kill: kill_tx }, diag, shown))
}

/// A child's stdout and stdin as one stream; dropping it ends the child
/// and its group.
pub struct ChildStream {
    stdout: tokio::process::ChildStdout,
    stdin: tokio::process::ChildStdin,
    /// Dropped with the stream: the watcher gives the child its grace, then
    /// ends its group.
    _kill: tokio::sync::oneshot::Sender<()>,
}

/// A child's group, killed when this is dropped.
struct KillOnDrop(crate::process::Group);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill();
    }
}

impl AsyncRead for ChildStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for ChildStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(s: &str) -> Command {
        Command::Shell(s.to_string())
    }

    #[tokio::test]
    async fn password_command_first_line_is_the_secret() {
        let s = read_secret(&shell("printf 'hunter2\\nrest\\n'"), "password_command", Duration::from_secs(5)).await;
        assert_eq!(s.unwrap().expose(), "hunter2");
    }

    /// Regression: the password command ran with no deadline (a pinentry
    /// under cron hangs forever), no output bound, and empty output was sent
    /// as the password.
    #[tokio::test]
    async fn regression_password_command_is_bounded_in_time_output_and_content() {
        let started = std::time::Instant::now();
        let e = read_secret(&shell("sleep 30; echo late"), "password_command", Duration::from_millis(500)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(e.unwrap_err().to_string().contains("did not finish within"));
        let e = read_secret(&shell("yes password"), "password_command", Duration::from_secs(10)).await;
        assert!(e.unwrap_err().to_string().contains("printed more than"));
        let e = read_secret(&shell("true"), "password_command", Duration::from_secs(5)).await.unwrap_err();
        assert!(e.to_string().contains("printed no password"), "{e}");
        let e = read_secret(&shell("echo nope >&2; exit 3"), "password_command", Duration::from_secs(5)).await;
        let e = e.unwrap_err().to_string();
        assert!(e.contains("exited with 3") && !e.contains("Shell("), "{e}");
        // The command line itself is never shown: it may hold the secret.
        let e = read_secret(&shell("echo hunter2 >/dev/null; false"), "password_command", Duration::from_secs(5)).await;
        assert!(!e.unwrap_err().to_string().contains("hunter2"));
    }
}
