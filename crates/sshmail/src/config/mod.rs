//! Configuration in two stages.
//!
//! [`RawConfig`] is the TOML file as written: every field optional, strings
//! as the user typed them. [`resolve`] turns it into [`Account`]s with typed,
//! checked values and defaults filled in. Nothing after this module reads raw
//! configuration.
//!
//! ```toml
//! [account.work]
//! ssh = "me@shell.example.org"      # [user@]host[:port], or a ~/.ssh/config Host
//! protocol = "pop3"
//! server = "localhost:110"          # as seen from the SSH host
//! user = "me"
//! password_command = "pass show mail/work"
//! deliver = "maildir:~/Maildir"
//! ```

mod account;
mod listen;
mod paths;
mod raw;
mod resolve;
#[cfg(test)]
mod tests;

pub use account::*;
use listen::under_runtime_dir;
pub use listen::*;
pub use paths::*;
pub use raw::*;
pub use resolve::*;
