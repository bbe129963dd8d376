//! In-process SSH: targets from `~/.ssh/config`, host key checks, sessions,
//! and the pool that owns every connection.

pub mod auth;
pub mod backlog;
pub mod known_hosts;
pub mod lease;
pub mod mux;
pub mod pool;
pub mod session;

pub use crate::config::SshTarget;
pub use pool::SshPool;
pub use session::{Channel, SshSession};
