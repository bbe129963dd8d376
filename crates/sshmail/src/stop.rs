//! Requests to stop. A [`Stop`] is a token that long waits (IDLE, a
//! reconnect pause) watch, so that they end cleanly (DONE, LOGOUT) instead
//! of being killed. The process has one, which SIGTERM and SIGINT trigger
//! ([`on_signals`]); a task gets a [`Stop::child`] of it, which its owner
//! (a daemon reloading, or polling now) can trigger alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::Notify;

#[derive(Default)]
struct Inner {
    requested: AtomicBool,
    notify: Notify,
    children: Mutex<Vec<Weak<Inner>>>,
}

impl Inner {
    fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
        let children = std::mem::take(&mut *self.children.lock().expect("stop lock"));
        for c in children.iter().filter_map(Weak::upgrade) {
            c.request();
        }
    }
}

/// A stop request that can be waited for; clones share it.
#[derive(Clone, Default)]
pub struct Stop(Arc<Inner>);

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stop({})", self.requested())
    }
}

impl Stop {
    /// A token nobody has triggered yet.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// The process's token, which SIGTERM and SIGINT trigger.
    pub fn process() -> Stop {
        static PROCESS: OnceLock<Stop> = OnceLock::new();
        PROCESS.get_or_init(Stop::new).clone()
    }

    /// A token that stops when this one does, or when triggered itself.
    pub fn child(&self) -> Stop {
        let child = Stop::new();
        let mut children = self.0.children.lock().expect("stop lock");
        if self.requested() {
            child.request();
        } else {
            children.retain(|w| w.strong_count() > 0);
            children.push(Arc::downgrade(&child.0));
        }
        child
    }

    /// Asks every waiter on this token (and its children) to stop.
    pub fn request(&self) {
        self.0.request();
    }

    /// True once a stop was requested.
    pub fn requested(&self) -> bool {
        self.0.requested.load(Ordering::SeqCst)
    }

    /// Returns when a stop is requested (at once if it already was).
    pub async fn wait(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.requested() {
                return;
            }
            notified.await;
        }
    }
}

/// Turns the first SIGTERM or SIGINT into a stop request of the process's
/// token; a second one ends the process at once (exit 130), as a user
/// pressing Ctrl-C twice expects.
pub fn on_signals() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return;
    };
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            seen += 1;
            if seen > 1 {
                std::process::exit(130);
            }
            tracing::info!("stopping: ending the session cleanly (a second signal ends it at once)");
            Stop::process().request();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_stops_with_its_parent_and_alone() {
        let parent = Stop::new();
        let alone = parent.child();
        let with = parent.child();
        alone.request();
        assert!(alone.requested() && !parent.requested() && !with.requested());
        let waiting = tokio::spawn({
            let with = with.clone();
            async move { with.wait().await }
        });
        parent.request();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert!(with.requested());
        assert!(parent.child().requested(), "a child of a stopped token starts stopped");
    }
}
