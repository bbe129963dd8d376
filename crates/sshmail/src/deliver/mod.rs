//! Local delivery.
//!
//! A sink stages each message as it streams in ([`Sink::begin`]), then makes
//! a whole batch durable and visible at once ([`Sink::commit`]), so the fsync
//! cost is shared (group commit). The fetch loop records the batch in the
//! ledger between the two halves of the commit, and only then tells the
//! server to delete anything.

pub mod maildir;

pub use maildir::Maildir;
