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

/// Shares SSH connections: every account and channel going to the same
/// (user, host, port) rides one authenticated connection.
#[derive(Default)]
pub struct SshPool {
    sessions: Mutex<HashMap<(String, String, u16), Arc<SshSession>>>,
}

impl SshPool {
    /// An empty pool.
    pub fn new() -> SshPool {
        SshPool::default()
    }

    /// The live session for `target`, connecting (through `jumps` first, if
    /// any) when there is none or the old one has closed.
    pub async fn get(&self, target: &SshTarget, jumps: &[SshTarget]) -> Result<Arc<SshSession>> {
        // Holding the lock while connecting makes concurrent callers for the
        // same host wait for one connection instead of opening several.
        let mut sessions = self.sessions.lock().await;
        if let Some(s) = sessions.get(&target.key())
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let mut via: Option<Arc<SshSession>> = None;
        for hop in jumps {
            let s = match sessions.get(&hop.key()) {
                Some(s) if !s.is_closed() => s.clone(),
                _ => {
                    let s = Arc::new(SshSession::connect(hop, via.clone()).await?);
                    sessions.insert(hop.key(), s.clone());
                    s
                }
            };
            via = Some(s);
        }
        let s = Arc::new(SshSession::connect(target, via).await?);
        sessions.insert(target.key(), s.clone());
        Ok(s)
    }

    /// Disconnects every session.
    pub async fn close_all(&self) {
        let sessions: Vec<_> = self.sessions.lock().await.drain().map(|(_, s)| s).collect();
        for s in sessions {
            s.close().await;
        }
    }
}
