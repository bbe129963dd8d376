//! Sans-I/O protocol cores for sshmail.
//!
//! Nothing in this crate touches a socket, a file or a clock: the caller moves
//! bytes in and out, and these types say what the bytes mean. That keeps the
//! protocol logic testable with plain byte transcripts and fuzzable, and lets
//! the tool drive it over any transport (an SSH channel, TLS, a pipe).
//!
//! - [`line`]: bounded CRLF line framing over a caller-owned buffer.
//! - [`dot`]: streaming decoder for dot-stuffed multi-line bodies (POP3 RETR).
//! - [`pop3`]: POP3 (RFC 1939, 2449, 5034) commands and reply parsing.
//! - [`imap`]: IMAP commands, a streaming response reader, mailbox names.
//! - [`smtp`]: SMTP/LMTP replies, EHLO extensions, and a streaming DATA encoder.

#![forbid(unsafe_code)]

pub mod dot;
pub mod imap;
pub mod line;
pub mod pop3;
pub mod smtp;
