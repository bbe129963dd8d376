//! Fault injection for crash and race tests.
//!
//! When the environment variable `SSHMAIL_FAULT` names a point (`NAME`, or
//! `NAME@N` for its N-th hit), the process kills itself with SIGKILL when it
//! reaches that point: no destructors, no flushing, as if the machine or the
//! OOM killer stopped it there. `SSHMAIL_PAUSE=NAME:MILLIS` instead sleeps
//! there once, to widen a race window in a test. Unset, a point costs one
//! load and compare. `SSHMAIL_BATCH=N` makes group commits of N messages,
//! so that a test with a few messages has several batches.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// Marks a point where a crash is tested.
pub fn point(name: &str) {
    let target = TARGET.get_or_init(|| {
        let v = std::env::var("SSHMAIL_FAULT").ok()?;
        Some(match v.split_once('@') {
            Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1)),
            None => (v, 1),
        })
    });
    if let Some((want, nth)) = target
        && want == name
        && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth
    {
        eprintln!("sshmail: fault injected at {name}");
        let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}

static PAUSE: OnceLock<Option<(String, u64)>> = OnceLock::new();
static PAUSED: AtomicU64 = AtomicU64::new(0);

/// Marks a point where a test may widen a race window (first hit only).
pub async fn pause(name: &str) {
    if let Some(ms) = pause_for(name) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// As [`pause`], for code on a blocking thread: the thread sleeps.
pub fn pause_blocking(name: &str) {
    if let Some(ms) = pause_for(name) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// How long to pause at `name`: only where `SSHMAIL_PAUSE` names it, and
/// only the first time.
fn pause_for(name: &str) -> Option<u64> {
    let target = PAUSE.get_or_init(|| {
        let v = std::env::var("SSHMAIL_PAUSE").ok()?;
        let (n, ms) = v.split_once(':')?;
        Some((n.to_string(), ms.parse().ok()?))
    });
    let (want, ms) = target.as_ref()?;
    if want != name || PAUSED.fetch_add(1, Ordering::SeqCst) != 0 {
        return None;
    }
    eprintln!("sshmail: pausing {ms} ms at {name}");
    Some(*ms)
}

/// Messages per group commit: `default`, or `SSHMAIL_BATCH` when a test
/// sets it.
pub fn batch_messages(default: usize) -> usize {
    static BATCH: OnceLock<Option<usize>> = OnceLock::new();
    BATCH.get_or_init(|| std::env::var("SSHMAIL_BATCH").ok()?.parse().ok().filter(|n| *n > 0)).unwrap_or(default)
}
