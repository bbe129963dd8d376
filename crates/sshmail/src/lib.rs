//! sshmail: mail through SSH.
//!
//! The tool fetches mail by POP3 and IMAP from servers reached through
//! in-process SSH connections and delivers it locally, durably, exactly
//! once; its daemon watches every account and folder, serves local
//! endpoints to mail clients, and relays outgoing mail from a durable
//! outbox. The fetch follows the data flow:
//!
//! config (resolved once) → transport (ssh pool, channels) → wire +
//! protocol core → deliver → ledger
//!
//! and only then back to the server to delete. The daemon, the gateway and
//! the relay sit on the same core; `control` is how the commands reach the
//! daemon.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod deliver;
pub mod doctor;
pub mod error;
pub mod fault;
pub mod fetch;
pub mod gateway;
pub mod import;
pub mod ledger;
pub mod logging;
pub mod message;
pub mod news;
pub mod owned;
pub mod process;
pub mod secret;
pub mod send;
pub mod ssh;
pub mod stop;
pub mod term;
pub mod transport;

pub mod wire;
