//! The control protocol's messages.
//!
//! A request line is `{"version":2,"command":"status","accounts":[…]}`; the
//! answer line `{"version":2,"response":{"answer":"status","status":{…}}}`.
//! A daemon answers a request of another version with a [`Why::Version`]
//! refusal; a client reads the version of an answer before its body, so a
//! mismatch is said as such either way.

use serde::{Deserialize, Serialize};

use super::status::Status;
use crate::config::Service;
use crate::error::Exit;

/// The protocol's version.
pub const VERSION: u32 = 2;

/// The longest request line a daemon reads.
pub const MAX_REQUEST: usize = 64 * 1024;

/// What a client asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// [`VERSION`].
    pub version: u32,
    /// What to do.
    #[serde(flatten)]
    pub command: Command,
}

/// The requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Command {
    /// The status of these accounts (all when empty).
    Status {
        /// Account names.
        #[serde(default)]
        accounts: Vec<String>,
    },
    /// A pass over these accounts' folders now (all when empty); answers
    /// when each has made one.
    Poll {
        /// Account names.
        #[serde(default)]
        accounts: Vec<String>,
    },
    /// Re-read the config file.
    Reload,
    /// Stop the daemon.
    Stop,
    /// Relay the outbox entry `id` now, on the daemon's SSH connection
    /// (`sshmail sendmail` after it queued the message).
    Send {
        /// The entry.
        id: String,
    },
    /// A stream to an account's server on the daemon's SSH connection
    /// (`sshmail tunnel`): after a [`Response::Done`], the connection
    /// carries the server's bytes, its greeting first, and the client's.
    Tunnel {
        /// The account.
        account: String,
        /// The account's own protocol when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<Service>,
    },
    /// Log in to the account's SSH host in the daemon's pool, a person
    /// answering (`sshmail login`): each question comes as a
    /// [`Response::Ask`], answered by an [`Answer`] line; the last line is
    /// [`Response::LoggedIn`] or a refusal.
    Login {
        /// The account.
        account: String,
    },
    /// Events as they happen (`status --follow`): after a
    /// [`Response::Done`], one [`Response::Event`] line each, until the
    /// client goes away or the daemon stops.
    Follow {
        /// Only these accounts' (all when empty; link and outbox events
        /// always).
        #[serde(default)]
        accounts: Vec<String>,
    },
}

/// A person's answer to a [`Response::Ask`]: a line of its own, after
/// which the next question, the login or a refusal comes. Never logged.
#[derive(Clone, Serialize, Deserialize)]
pub struct Answer {
    /// None: no answer (the person gave up).
    pub answer: Option<String>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.answer.is_some() { "Answer(<redacted>)" } else { "Answer(none)" })
    }
}

/// The answer line: the version first, so that a client of another
/// version can say so instead of failing to read the body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// [`VERSION`].
    pub version: u32,
    /// The answer.
    pub response: Response,
}

/// What the daemon answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "lowercase")]
pub enum Response {
    /// Carried out (`reload`, `stop`; a `tunnel`, whose stream follows).
    Done,
    /// For `status`.
    Status {
        /// The board.
        status: Box<Status>,
    },
    /// For `poll`: what each folder's pass did.
    Polled {
        /// One per folder.
        folders: Vec<Polled>,
    },
    /// For `send`: how the try went.
    Sent {
        /// The outcome.
        attempt: Attempt,
    },
    /// For `login`: a question of the SSH server's (or a key's
    /// passphrase) for the person; an [`Answer`] line goes back.
    Ask {
        /// What the server said before it, printable, a line each.
        said: Vec<String>,
        /// The prompt, one printable line; the answer is not echoed.
        prompt: String,
    },
    /// For `follow`: something happened.
    Event {
        /// What.
        event: Box<super::status::FeedEvent>,
    },
    /// For `login`: done, and what it was (`user@host:port (how)`).
    #[serde(rename = "logged_in")]
    LoggedIn {
        /// For people.
        text: String,
    },
    /// Not carried out.
    Refused(Refusal),
}

/// Why a request was not carried out, and the exit code the client takes
/// for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refusal {
    /// The kind of refusal: what a client decides on.
    pub why: Why,
    /// For people.
    pub text: String,
    /// The exit code (as `sshmail fetch` would exit for the same error).
    pub exit: i32,
}

/// The kinds of refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// The daemon does not run an account the request names.
    NoAccount,
    /// The request is of another protocol version.
    Version,
    /// The request could not be read.
    BadRequest,
    /// The work was tried and failed (a new config refused, a tunnel's
    /// server unreachable, no such outbox entry).
    Failed,
}

impl Refusal {
    /// A refusal of kind `why`, exiting `exit`.
    pub fn new(why: Why, text: impl Into<String>, exit: Exit) -> Refusal {
        Refusal { why, text: text.into(), exit: exit.code() }
    }

    /// The exit code as the client's [`Exit`].
    pub fn exit(&self) -> Exit {
        Exit::from_code(self.exit)
    }
}

impl From<Refusal> for Response {
    fn from(r: Refusal) -> Response {
        Response::Refused(r)
    }
}

/// One folder's pass asked for by `poll`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Polled {
    /// The account.
    pub account: String,
    /// The folder.
    pub folder: String,
    /// Messages it delivered.
    pub delivered: u64,
    /// Its error, if it failed (or did not end in time).
    pub error: Option<String>,
}

/// How a relay try went (also the daemon's answer to a `send` request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "why", rename_all = "lowercase")]
pub enum Attempt {
    /// Every recipient has it.
    Done,
    /// Some refused it for good (the entry is in `failed/`).
    Failed(String),
    /// It stays queued, for this reason.
    Later(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_and_a_tunnel_request_survive_the_wire() {
        let reply = Reply {
            version: VERSION,
            response: Refusal::new(Why::NoAccount, "no account x in the daemon's config", Exit::Usage).into(),
        };
        let line = serde_json::to_string(&reply).unwrap();
        let back: Reply = serde_json::from_str(&line).unwrap();
        let Response::Refused(r) = back.response else { panic!("{line}") };
        assert_eq!((r.why, r.exit()), (Why::NoAccount, Exit::Usage));
        let request = Request {
            version: VERSION,
            command: Command::Tunnel { account: "uni".into(), service: Some(Service::Pop3) },
        };
        let line = serde_json::to_string(&request).unwrap();
        assert!(line.contains(r#""service":"pop3""#), "{line}");
        let back: Request = serde_json::from_str(&line).unwrap();
        assert!(matches!(back.command, Command::Tunnel { service: Some(Service::Pop3), .. }));
    }
}
