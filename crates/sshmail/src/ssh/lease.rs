//! What a connection carries, counted: each open channel holds a
//! [`Lease`] on its connection's [`Usage`] until it is dropped. The pool
//! picks connections by it, closes idle ones by it, and keeps exec
//! channels within the server's `MaxSessions`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Session channels (exec) OpenSSH allows per connection by default
/// (`MaxSessions`); a server that allows fewer is learned from its refusal.
pub const DEFAULT_SESSION_LIMIT: usize = 10;

/// What a connection carries: its open channels, and how many of them are
/// session channels, which the server limits (`MaxSessions`).
#[derive(Debug)]
pub struct Usage {
    channels: AtomicUsize,
    sessions: AtomicUsize,
    /// Session channels the server has opened on this connection, ever.
    sessions_opened: AtomicUsize,
    session_limit: AtomicUsize,
    idle_since: Mutex<Option<Instant>>,
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            channels: AtomicUsize::new(0),
            sessions: AtomicUsize::new(0),
            sessions_opened: AtomicUsize::new(0),
            session_limit: AtomicUsize::new(DEFAULT_SESSION_LIMIT),
            idle_since: Mutex::new(Some(Instant::now())),
        }
    }
}

impl Usage {
    /// Open channels of every kind.
    pub fn channels(&self) -> usize {
        self.channels.load(Ordering::SeqCst)
    }

    /// Open session channels.
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }

    /// Session channels the server has opened on this connection, ever.
    pub fn sessions_opened(&self) -> usize {
        self.sessions_opened.load(Ordering::SeqCst)
    }

    /// Counts a session channel the server opened.
    pub(super) fn session_opened(&self) {
        self.sessions_opened.fetch_add(1, Ordering::SeqCst);
    }

    /// Since when nothing has been open on the connection, if so.
    pub fn idle_since(&self) -> Option<Instant> {
        *self.idle_since.lock().expect("usage lock")
    }

    /// Counts a channel opened.
    pub(super) fn open(self: &Arc<Self>) -> Lease {
        self.channels.fetch_add(1, Ordering::SeqCst);
        *self.idle_since.lock().expect("usage lock") = None;
        Lease { usage: self.clone(), session: false }
    }

    /// Takes `limit` as the server's `MaxSessions`, learned from its
    /// refusal of one more.
    pub(super) fn learn_session_limit(&self, limit: usize) {
        self.session_limit.store(limit, Ordering::SeqCst);
    }

    /// Takes one of the session channels the server allows, if one is free.
    pub fn reserve_session(self: &Arc<Self>) -> Option<Lease> {
        let limit = self.session_limit.load(Ordering::SeqCst);
        self.sessions.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < limit).then_some(n + 1)).ok()?;
        let mut lease = self.open();
        lease.session = true;
        Some(lease)
    }
}

/// One open channel's claim on its connection; released when dropped.
#[derive(Debug)]
pub struct Lease {
    usage: Arc<Usage>,
    session: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.session {
            self.usage.sessions.fetch_sub(1, Ordering::SeqCst);
        }
        if self.usage.channels.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.usage.idle_since.lock().expect("usage lock") = Some(Instant::now());
        }
    }
}
