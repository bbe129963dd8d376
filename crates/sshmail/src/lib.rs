//! sshmail: mail through SSH.
//!
//! The tool fetches mail by POP3 from a server reached through an in-process
//! SSH connection and delivers it locally, durably, exactly once. The module
//! layout follows the data flow:
//!
//! config → ssh (pool, channels) → wire + protocol core → deliver → ledger
//!
//! and only then back to the server to delete.

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
pub mod owned;
pub mod process;
pub mod secret;
pub mod send;
pub mod ssh;
pub mod stop;
pub mod term;
pub mod transport;

pub mod wire;
