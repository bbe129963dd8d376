//! Running a hook: the command with the messages as JSON lines on its
//! stdin and `SSHMAIL_*` in its environment, in a process group of its
//! own, ended (with all it left running) when it exits, when its timeout
//! passes, or when sshmail stops. Its output is read and thrown away past
//! a few KiB, so a hook printing without end costs no memory; its failure
//! is logged and changes nothing else: the mail is delivered already.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use crate::config::Command;
use crate::process::Group;

/// What a hook is told, and how long it may take.
pub struct Run {
    /// `on_new` or `on_sent`, for messages.
    pub what: &'static str,
    /// The command.
    pub command: Command,
    /// Its environment, added to ours.
    pub env: Vec<(String, String)>,
    /// Its stdin.
    pub input: Vec<u8>,
    /// The longest it runs.
    pub timeout: Duration,
    /// What it is about (`uni/INBOX`), for messages.
    pub about: String,
}

impl Run {
    /// `on_new` for a batch of new mail in `folder`: the messages as JSON
    /// lines, `SSHMAIL_ACCOUNT`, `SSHMAIL_FOLDER`, `SSHMAIL_COUNT`.
    pub fn new_mail(account: &crate::config::Account, folder: &str, command: Command, batch: &[super::Arrived]) -> Run {
        Run {
            what: "on_new",
            command,
            env: vec![
                ("SSHMAIL_ACCOUNT".into(), account.name.clone()),
                ("SSHMAIL_FOLDER".into(), folder.to_string()),
                ("SSHMAIL_COUNT".into(), batch.len().to_string()),
            ],
            input: json_lines(batch),
            timeout: account.hooks.timeout,
            about: format!("{}/{folder}: on_new", account.name),
        }
    }
}

impl Run {
    /// `on_sent` for a message the relay accepted.
    pub fn sent(account: &crate::config::Account, command: Command, sent: &super::Sent) -> Run {
        Run {
            what: "on_sent",
            command,
            env: vec![("SSHMAIL_ACCOUNT".into(), account.name.clone()), ("SSHMAIL_COUNT".into(), "1".into())],
            input: json_lines(std::slice::from_ref(sent)),
            timeout: account.hooks.timeout,
            about: format!("{}: on_sent for {}", account.name, sent.id),
        }
    }
}

/// Waits for every hook started to end: each is ended by its own timeout
/// at the latest (a command that exits only once its hooks have run).
pub async fn wait_ended() {
    wait_all(Duration::from_secs(3600)).await;
}

/// One JSON object a line.
pub fn json_lines<T: serde::Serialize>(items: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        if let Ok(line) = serde_json::to_vec(item) {
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
    }
    out
}

/// Most of a hook's stderr kept for the log.
const STDERR_KEPT: usize = 4096;

/// The hooks running now: their tasks, and their process groups to end.
static RUNNING: Mutex<Running> = Mutex::new(Running { next: 0, tasks: Vec::new(), groups: None });

struct Running {
    next: u64,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    groups: Option<HashMap<u64, Group>>,
}

fn running() -> std::sync::MutexGuard<'static, Running> {
    RUNNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts `run` aside (the fetch goes on); [`wait_all`] waits for it.
pub fn spawn(run: Run) {
    let task = tokio::spawn(execute(run));
    let mut r = running();
    r.tasks.retain(|t| !t.is_finished());
    r.tasks.push(task);
}

/// Waits, at most `limit`, for every hook started; then ends those still
/// running (their whole process groups).
pub async fn wait_all(limit: Duration) {
    let tasks = std::mem::take(&mut running().tasks);
    let _ = tokio::time::timeout(limit, async {
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;
    end_all();
}

/// Ends every hook still running, with all it started.
pub fn end_all() {
    let groups: Vec<Group> = running().groups.as_mut().map(|g| g.drain().map(|(_, g)| g).collect()).unwrap_or_default();
    for g in groups {
        g.kill();
    }
}

/// The largest hook run time, for those who wait for hooks.
pub fn longest(timeouts: impl IntoIterator<Item = Duration>) -> Duration {
    timeouts.into_iter().max().unwrap_or_default() + Duration::from_secs(1)
}

/// Runs the hook to its end or its timeout; says in the log how it went
/// when it did not go well.
async fn execute(run: Run) {
    let Run { what, command, env, input, timeout, about } = run;
    let (mut cmd, shown) = match crate::process::command(&command, what) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(target: "sshmail::hook", "{about}: {e}");
            return;
        }
    };
    cmd.process_group(0).envs(env).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(target: "sshmail::hook", "{about}: cannot run {shown}: {e}");
            return;
        }
    };
    let group = Group::own(&child);
    let id = {
        let mut r = running();
        r.next += 1;
        let id = r.next;
        r.groups.get_or_insert_with(HashMap::new).insert(id, group);
        id
    };
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A hook that reads nothing closes its end: not an error.
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        }
    };
    let drain_out = async move {
        if let Some(out) = stdout {
            crate::process::drain(out, 0).await;
        }
    };
    let drain_err = async move {
        match stderr {
            Some(err) => crate::process::drain(err, STDERR_KEPT).await,
            None => Vec::new(),
        }
    };
    let ran = tokio::time::timeout(timeout, async {
        let ((), (), said, status) = tokio::join!(feed, drain_out, drain_err, child.wait());
        (said, status)
    })
    .await;
    // What it left running ends with it.
    group.kill();
    if let Some(groups) = running().groups.as_mut() {
        groups.remove(&id);
    }
    match ran {
        Err(_) => tracing::warn!(
            target: "sshmail::hook",
            "{about}: {shown} did not finish within {} s; it was ended (hook_timeout)",
            timeout.as_secs()
        ),
        Ok((said, Ok(status))) if !status.success() => {
            let how =
                status.code().map_or_else(|| "was killed by a signal".to_string(), |c| format!("exited with {c}"));
            let said = String::from_utf8_lossy(&said);
            let last =
                said.trim().lines().last().map(|l| format!(": {}", crate::term::one_line(l, 300))).unwrap_or_default();
            tracing::warn!(target: "sshmail::hook", "{about}: {shown} failed ({how}){last}");
        }
        Ok((_, Err(e))) => tracing::warn!(target: "sshmail::hook", "{about}: {shown}: {e}"),
        Ok(_) => tracing::debug!(target: "sshmail::hook", "{about}: {shown} ran"),
    }
}
