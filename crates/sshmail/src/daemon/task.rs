//! One account × folder task: a watch (IMAP IDLE, with its poll safety net)
//! or a poll every interval (POP3), run again after each failure when its
//! retry class allows, with a back-off and jitter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};

use super::board::Slot;
use crate::config::Account;
use crate::error::{Error, Retry};
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
    pub polls: Arc<Semaphore>,
}

/// The pauses between failed tries.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
    retried_at_once: bool,
}

impl Backoff {
    /// The pause before the next try after an error of class `retry`
    /// (None: not until the config changes or a poll is asked for).
    pub fn next(&mut self, retry: Retry) -> Option<Duration> {
        match retry {
            Retry::Never => None,
            Retry::Now if !self.retried_at_once => {
                self.retried_at_once = true;
                Some(Duration::ZERO)
            }
            _ => {
                let base = FIRST_PAUSE.saturating_mul(1 << self.failures.min(16)).min(LONGEST_PAUSE);
                self.failures += 1;
                Some(jitter(base, 0.25))
            }
        }
    }

    /// A success (or a session that lasted): the next failure is a first.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

/// `d` give or take `spread` of it (a quarter: 0.25), so that tasks that
/// failed or polled together do not try again together.
pub fn jitter(d: Duration, spread: f64) -> Duration {
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() { u16::from_le_bytes(b) } else { 0x8000 };
    let frac = f64::from(r) / f64::from(u16::MAX); // 0..=1
    d.mul_f64(1.0 - spread + 2.0 * spread * frac)
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
    let mut backoff = Backoff::default();
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
                let Ok(_permit) = polls.acquire().await else { break };
                fetch::fetch_account(&account, &Cycle::default(), &ctx).await.map(Some)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_retries_a_lost_link_at_once_once_then_grows_with_jitter_and_never_retries_a_refusal() {
        let mut b = Backoff::default();
        assert_eq!(b.next(Retry::Now), Some(Duration::ZERO));
        let first = b.next(Retry::Now).unwrap();
        assert!(first >= FIRST_PAUSE.mul_f64(0.75) && first <= FIRST_PAUSE.mul_f64(1.25), "{first:?}");
        let mut last = first;
        for _ in 0..10 {
            last = b.next(Retry::Later).unwrap();
        }
        assert!(last <= LONGEST_PAUSE.mul_f64(1.25) && last >= LONGEST_PAUSE.mul_f64(0.75), "{last:?}");
        assert_eq!(b.next(Retry::Never), None);
        b.reset();
        assert_eq!(b.next(Retry::Now), Some(Duration::ZERO));
    }
}
