//! A request to stop, from a signal (SIGTERM, SIGINT): long waits (IDLE)
//! watch for it and end cleanly (DONE, LOGOUT) instead of being killed.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static NOTIFY: Notify = Notify::const_new();

/// Asks every waiter to stop.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
    NOTIFY.notify_waiters();
}

/// True once a stop was requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Returns when a stop is requested (at once if it already was).
pub async fn wait() {
    loop {
        let notified = NOTIFY.notified();
        if requested() {
            return;
        }
        notified.await;
    }
}

/// Turns the first SIGTERM or SIGINT into a stop request; a second one ends
/// the process at once (exit 130), as a user pressing Ctrl-C twice expects.
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
            request();
        }
    });
}
