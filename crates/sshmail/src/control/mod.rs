//! The control socket, as every side sees it: its protocol, where it
//! lives, and the client that asks the daemon.
//!
//! `sshmail status`, `poll`, `reload`, `stop`, `tunnel`, `sendmail` and
//! `doctor` are clients; the daemon answers (its `socket` module holds the
//! listening half). The protocol is JSON lines: one [`Request`] per
//! connection, one [`Reply`] back, each carrying [`VERSION`]. A refusal is
//! data — [`Refusal`], with its reason and the exit code the client takes —
//! so no client decides anything on the wording of a message.

pub mod client;
pub mod paths;
pub mod protocol;
pub mod status;

pub use client::{NoAnswer, ask, exchange, next_reply};
pub use paths::{Held, Lock, Paths, held};
pub use protocol::{Answer, Attempt, Command, Polled, Refusal, Reply, Request, Response, VERSION, Why};
