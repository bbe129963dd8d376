//! IMAP client protocol core (RFC 3501, with UIDPLUS, IDLE, SASL-IR,
//! LITERAL+): commands out, responses in, bodies streamed.
//!
//! Why not imap-codec: it parses whole responses, so a FETCH body would sit
//! in memory in full. Here [`reader::ResponseReader`] hands body literals out
//! in pieces as they arrive, and everything else is bounded by [`Limits`].

pub mod command;
pub mod reader;
pub mod response;
pub mod utf7;

use thiserror::Error;

pub use command::{Command, Tagger, uid_set};
pub use reader::{Event, ResponseReader};
pub use response::{Code, Fetch, Greeting, Response, Status, Untagged, Value};

/// Bounds on what a server may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest line (between literals).
    pub max_line: usize,
    /// Largest non-body literal (mailbox names and the like).
    pub max_literal: u64,
    /// Largest message body.
    pub max_body: u64,
    /// Largest response, not counting streamed bodies.
    pub max_response: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_line: 1 << 20, max_literal: 1 << 20, max_body: 1 << 30, max_response: 16 << 20 }
    }
}

/// A problem with what the server sent.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ImapError {
    /// A line exceeded the limit.
    #[error("IMAP line longer than {0} bytes")]
    LineTooLong(usize),
    /// A literal exceeded the limit.
    #[error("IMAP literal of {len} bytes is over the limit of {limit} bytes")]
    LiteralTooLarge {
        /// Announced size.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// A response exceeded the limit.
    #[error("IMAP response larger than {0} bytes")]
    ResponseTooLarge(u64),
    /// Not IMAP as we know it.
    #[error("malformed IMAP response: {0}")]
    Malformed(String),
}

#[cfg(test)]
mod tests;
