//! Requests to stop. A [`Stop`] is a token that long waits (IDLE, a
//! reconnect pause) watch, so that they end cleanly (DONE, LOGOUT) instead
//! of being killed. The process has one, which SIGTERM and SIGINT trigger
//! ([`on_signals`]); a task gets a [`Stop::child`] of it, which its owner
//! (a daemon reloading, or polling now) can trigger alone.
//!
//! [`Tracked`] is where a long-lived process puts the tasks it must wait
//! for at its end (a daemon's control connections and gateway sessions):
//! bounded in number, and awaited with a deadline, then aborted.

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

/// Tasks awaited at a stop, at most so many at once. Each gets the
/// tracker's own [`Stop`], which [`Tracked::end`] triggers: a task ends
/// its waits on it (a request that never comes, a session) and finishes
/// what it was writing.
pub struct Tracked {
    set: Mutex<tokio::task::JoinSet<()>>,
    places: Arc<tokio::sync::Semaphore>,
    ending: Stop,
}

impl Tracked {
    /// Room for `limit` tasks at once.
    pub fn new(limit: usize) -> Tracked {
        Tracked {
            set: Mutex::new(tokio::task::JoinSet::new()),
            places: Arc::new(tokio::sync::Semaphore::new(limit)),
            ending: Stop::new(),
        }
    }

    /// Waits for a free place (so an accept loop holds back while full),
    /// then runs the task `start` makes of the tracker's stop; it is
    /// counted until it ends.
    pub async fn spawn<F>(&self, start: impl FnOnce(Stop) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let Ok(place) = self.places.clone().acquire_owned().await else { return };
        let task = start(self.ending.clone());
        let mut set = self.set.lock().expect("tracked lock");
        // Forget the ones that ended.
        while set.try_join_next().is_some() {}
        set.spawn(async move {
            task.await;
            drop(place);
        });
    }

    /// Tasks running now.
    #[cfg(test)]
    fn running(&self) -> usize {
        let mut set = self.set.lock().expect("tracked lock");
        while set.try_join_next().is_some() {}
        set.len()
    }

    /// Asks the tasks running now to end and waits up to `grace` for them,
    /// then aborts the rest; returns how many there were, and how many
    /// were aborted.
    pub async fn end(&self, grace: std::time::Duration) -> (usize, usize) {
        let mut set = std::mem::take(&mut *self.set.lock().expect("tracked lock"));
        while set.try_join_next().is_some() {}
        let running = set.len();
        self.ending.request();
        let _ = tokio::time::timeout(grace, async { while set.join_next().await.is_some() {} }).await;
        let left = set.len();
        set.shutdown().await;
        (running, left)
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

    #[tokio::test]
    async fn tracked_tasks_wait_for_a_place_and_the_end_aborts_what_outlives_the_grace() {
        let tracked = Arc::new(Tracked::new(2));
        let forever = |_: Stop| async { std::future::pending::<()>().await };
        let polite = |stop: Stop| async move { stop.wait().await };
        tracked.spawn(forever).await;
        tracked.spawn(|_| async {}).await;
        tokio::task::yield_now().await;
        tracked.spawn(polite).await;
        assert_eq!(tracked.running(), 2);
        // Full: a third waits for a place.
        let third = tokio::spawn({
            let tracked = tracked.clone();
            async move { tracked.spawn(|_| async {}).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!third.is_finished());
        // The polite one ends when asked; the other is aborted.
        assert_eq!(tracked.end(std::time::Duration::from_millis(50)).await, (2, 1));
        tokio::time::timeout(std::time::Duration::from_secs(5), third).await.unwrap().unwrap();
    }
}
