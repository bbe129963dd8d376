//! In-process SSH: targets from `~/.ssh/config`, host key checks, sessions,
//! and a pool that shares one authenticated connection per (user, host, port).

pub mod known_hosts;
pub mod session;
pub mod target;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

pub use session::{Channel, SshSession};
pub use target::SshTarget;

use crate::error::Result;

/// One pool entry: the session for a (user, host, port), once connected.
type Slot = Arc<Mutex<Option<Arc<SshSession>>>>;

/// Shares SSH connections: every account and channel going to the same
/// (user, host, port) rides one authenticated connection. Connections to
/// different hosts are made concurrently; callers for the same host wait for
/// one connection instead of opening several.
#[derive(Default)]
pub struct SshPool {
    /// By route: `user@host:port`, and ` via ...` for a ProxyJump chain.
    slots: std::sync::Mutex<HashMap<String, Slot>>,
}

impl SshPool {
    /// An empty pool.
    pub fn new() -> SshPool {
        SshPool::default()
    }

    /// The live session for `target`, connecting (through `jumps` first, if
    /// any) when there is none or the old one has closed.
    pub async fn get(&self, target: &SshTarget, jumps: &[SshTarget]) -> Result<Arc<SshSession>> {
        let mut via: Option<Arc<SshSession>> = None;
        for hop in jumps {
            via = Some(self.session(hop, via).await?);
        }
        self.session(target, via).await
    }

    async fn session(&self, target: &SshTarget, via: Option<Arc<SshSession>>) -> Result<Arc<SshSession>> {
        let (user, host, port) = target.key();
        let route = match &via {
            Some(v) => format!("{user}@{host}:{port} via {}", v.route()),
            None => format!("{user}@{host}:{port}"),
        };
        let slot = self.slots.lock().expect("pool lock").entry(route).or_default().clone();
        let mut guard = slot.lock().await;
        if let Some(s) = guard.as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let s = Arc::new(SshSession::connect(target, via).await?);
        *guard = Some(s.clone());
        Ok(s)
    }

    /// Disconnects every session.
    pub async fn close_all(&self) {
        let slots: Vec<Slot> = self.slots.lock().expect("pool lock").drain().map(|(_, s)| s).collect();
        for slot in slots {
            if let Some(s) = slot.lock().await.take() {
                s.close().await;
            }
        }
    }
}
