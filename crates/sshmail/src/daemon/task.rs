//! One account × folder task: a watch (IMAP IDLE, with its poll safety net)
//! or a poll every interval (POP3), run again after each failure when its
//! retry class allows, with a back-off and jitter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::board::Slot;
use crate::backoff::{Backoff, jitter};
use crate::config::Account;
use crate::error::Error;
use crate::fetch::{self, Context, Cycle, Outcome, Renewal};

/// The first pause after a failure.
const FIRST_PAUSE: Duration = Duration::from_secs(2);
/// The longest pause after failures: when the network comes back, the next
/// try is at most this far (a resume or `sshmail poll` tries at once).
const LONGEST_PAUSE: Duration = Duration::from_secs(120);
/// A session that lasted this long makes the next failure a first one.
const LASTED: Duration = Duration::from_secs(60);

/// What a task runs.
pub struct Task {
    /// The account.
    pub account: Arc<Account>,
    /// IMAP: the folder to watch; None for a POP3 poll.
    pub folder: Option<String>,
    /// Where it reports.
    pub slot: Arc<Slot>,
    /// What its cycles run with (its own stop, wake and report).
    pub ctx: Context,
    /// The first IDLE renewal time.
    pub idle_renew: Duration,
    /// How long to wait before the first try (starts are staggered).
    pub start_after: Duration,
    /// Limits the poll cycles running at once.
    pub polls: Arc<super::polls::Polls>,
}

/// The daemon's tasks' back-off: 2 s doubling to 2 min, ±25 %.
pub fn backoff() -> Backoff {
    Backoff::new(FIRST_PAUSE, LONGEST_PAUSE, 0.25)
}

/// Runs a task until its stop is requested.
pub async fn run(task: Task) {
    let Task { account, folder, slot, ctx, idle_renew, start_after, polls } = task;
    let stop = ctx.stop.clone();
    tokio::select! {
        _ = tokio::time::sleep(start_after) => {}
        _ = stop.wait() => {
            slot.ended();
            return;
        }
    }
    let renewal = Arc::new(Renewal::new(idle_renew));
    let mut backoff = backoff();
    while !stop.requested() {
        slot.trying();
        let started = Instant::now();
        let result = match &folder {
            Some(f) => {
                let cycle =
                    Cycle { idle: true, folders: Some(vec![f.clone()]), renewal: renewal.clone(), ..Cycle::default() };
                fetch::fetch_account(&account, &cycle, &ctx).await.map(|_| None)
            }
            None => {
                let turn = polls.turn().await;
                let result = fetch::fetch_account(&account, &Cycle::default(), &ctx).await;
                turn.done(result.as_ref().ok().map(|o| o.delivered));
                result.map(Some)
            }
        };
        if stop.requested() {
            break;
        }
        let pause = match result {
            Ok(outcome) => {
                backoff.reset();
                // Accounts polled together drift apart.
                let next = jitter(account.fetch.interval, 0.05);
                slot.polled(next, outcome.as_ref().and_then(|o| problems(&account.name, o)));
                Some(next)
            }
            Err(e) => {
                let e = e.for_account(&account.name);
                if started.elapsed() >= LASTED {
                    backoff.reset();
                }
                let pause = backoff.next(e.retry());
                log_failure(&account.name, slot.folder(), &e, pause);
                slot.failed(&e, pause);
                pause
            }
        };
        if !wait(pause, &ctx.wake, &stop).await {
            break;
        }
    }
    slot.ended();
}

/// Waits `pause` (None: until woken), or until woken or stopped. False
/// when stopped.
pub async fn wait(pause: Option<Duration>, wake: &Notify, stop: &crate::stop::Stop) -> bool {
    let sleep = async {
        match pause {
            Some(p) => tokio::time::sleep(p).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = sleep => true,
        _ = wake.notified() => true,
        _ = stop.wait() => false,
    }
}

/// One line for a failed try, and when the next is.
fn log_failure(account: &str, folder: &str, e: &Error, pause: Option<Duration>) {
    if e.retry() == crate::error::Retry::Login {
        // The pool said it once for the host; this is the account's share.
        tracing::warn!(target: "sshmail::daemon", "{account}: {folder}: {e}");
        return;
    }
    match pause {
        Some(p) if p.is_zero() => tracing::warn!(target: "sshmail::daemon", "{account}: {folder}: {e}; reconnecting"),
        Some(p) => tracing::warn!(target: "sshmail::daemon", "{account}: {folder}: {e}; next try in {} s", p.as_secs()),
        None => tracing::error!(
            target: "sshmail::daemon",
            "{account}: {folder}: {e}; not retried until the config changes (sshmail reload) or sshmail poll"
        ),
    }
}

/// What went wrong with some messages or folders of a cycle that ran, one
/// line each in the log; the summary for the status.
fn problems(account: &str, o: &Outcome) -> Option<String> {
    let mut lines: Vec<String> = Vec::new();
    lines.extend(o.folder_errors.iter().map(|e| format!("{}: {e}", e.folder)));
    lines.extend(o.policy_errors.iter().map(ToString::to_string));
    if !o.undelivered.is_empty() {
        lines.push(format!(
            "{} messages not delivered, left on the server: {}",
            o.undelivered.len(),
            o.undelivered.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        ));
    }
    for l in &lines {
        tracing::error!(target: "sshmail::daemon", "{account}: {l}");
    }
    (!lines.is_empty()).then(|| lines.join("; "))
}
