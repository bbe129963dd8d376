//! What `sshmail status` shows: the daemon's board as data (JSON on the
//! control socket, `status --json`) and as text for people.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// How a folder is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Not yet known: the first connection is under way.
    Starting,
    /// IMAP IDLE: the server pushes news.
    Idle,
    /// Polled every interval (POP3, or an IMAP server without IDLE).
    Polling,
}

/// A moment, for people and scripts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stamp {
    /// RFC 3339, local time.
    pub at: String,
    /// Seconds since the Unix epoch.
    pub unix: u64,
}

impl Stamp {
    /// Now.
    pub fn now() -> Stamp {
        Stamp::of(SystemTime::now())
    }

    /// `d` from now.
    pub fn after(d: Duration) -> Stamp {
        Stamp::of(SystemTime::now() + d)
    }

    /// The moment `t`.
    pub fn of(t: SystemTime) -> Stamp {
        let local: chrono::DateTime<chrono::Local> = t.into();
        Stamp {
            at: local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            unix: t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        }
    }
}

/// Something that happened, and when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Happened {
    /// When.
    pub at: Stamp,
    /// What.
    pub what: String,
}

/// What comes next, and when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Next {
    /// When.
    pub at: Stamp,
    /// `poll`, `idle renewal` or `retry`.
    pub what: String,
}

/// The last error of a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastError {
    /// When it happened.
    pub at: Stamp,
    /// The message (never a secret).
    pub text: String,
    /// `now`, `later`, `never` (not until the config changes) or `login`
    /// (not until `sshmail login`).
    pub retry: String,
    /// When the next try is; none while it waits for a config change or
    /// `sshmail poll`.
    pub next_try: Option<Stamp>,
}

/// One folder (POP3: the maildrop, `INBOX`) of one account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FolderStatus {
    /// The folder, as the server names it (or as configured).
    pub folder: String,
    /// How it is watched.
    pub mode: Mode,
    /// Connected to the server now.
    pub connected: bool,
    /// The SSH connection it runs on (`user@host:port #N`).
    pub connection: Option<String>,
    /// The server, as named in messages, where it is not the account's
    /// `peer` (said once there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The last thing that happened.
    pub last_event: Option<Happened>,
    /// The last pass over the folder and what it delivered.
    pub last_poll: Option<Happened>,
    /// The next poll, IDLE renewal or retry.
    pub next: Option<Next>,
    /// Messages delivered since the daemon started.
    pub delivered: u64,
    /// The last error, if the last try failed.
    pub last_error: Option<LastError>,
    /// Passes over the folder since the start (a poll waits for the next).
    pub passes: u64,
    /// Tries that failed since the start.
    pub failures: u64,
    /// Connections to the server made since the start.
    pub connects: u64,
    /// A pass or a connection is under way.
    pub busy: bool,
    /// Messages in the folder's Maildir `new/`: delivered and not yet
    /// seen by a mail client (None: not a Maildir, or not readable).
    #[serde(default)]
    pub unread_new: Option<u64>,
}

/// Something that happened, as `status --follow` streams it: one JSON
/// object a line, `event` naming its kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FeedEvent {
    /// The first event a follower gets: each folder followed, with its
    /// Maildir's unread new messages (for a status bar's first count).
    Following {
        /// When.
        at: Stamp,
        /// Each folder.
        folders: Vec<FolderCount>,
    },
    /// New mail, durable and recorded.
    New {
        /// When.
        at: Stamp,
        /// The account.
        account: String,
        /// The server's folder.
        folder: String,
        /// How many.
        count: usize,
        /// Each, as a hook gets it.
        messages: Vec<crate::news::Arrived>,
    },
    /// A folder's task reached its server.
    Connected {
        /// When.
        at: Stamp,
        /// The account.
        account: String,
        /// The folder.
        folder: String,
        /// The server, as named in messages.
        peer: String,
    },
    /// A folder's try failed.
    Error {
        /// When.
        at: Stamp,
        /// The account.
        account: String,
        /// The folder.
        folder: String,
        /// The error.
        text: String,
        /// `now`, `later`, `never` or `login`.
        retry: String,
    },
    /// A folder waits for `sshmail login`.
    LoginNeeded {
        /// When.
        at: Stamp,
        /// The account.
        account: String,
        /// The folder.
        folder: String,
        /// Why.
        text: String,
    },
    /// An SSH connection (or an OpenSSH master ridden) went away, came
    /// back or waits for a login.
    Link {
        /// When.
        at: Stamp,
        /// `user@host:port` (` via …`).
        connection: String,
        /// `up`, `lost`, `waiting for login`, `master up`, `master gone`.
        state: String,
        /// Why, when it is not up.
        text: Option<String>,
    },
    /// An outbox entry was tried.
    Outbox {
        /// When.
        at: Stamp,
        /// The entry.
        id: String,
        /// `sent`, `failed` (refused for good) or `queued` (to try again).
        outcome: String,
        /// Why, when it was not sent.
        text: Option<String>,
    },
    /// This follower read too slowly: so many events were dropped for it.
    Dropped {
        /// When.
        at: Stamp,
        /// How many.
        count: u64,
    },
}

/// A folder and its unread new messages, in [`FeedEvent::Following`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FolderCount {
    /// The account.
    pub account: String,
    /// The folder.
    pub folder: String,
    /// As [`FolderStatus::unread_new`].
    pub unread_new: Option<u64>,
}

impl FeedEvent {
    /// The account it is about, if any.
    pub fn account(&self) -> Option<&str> {
        match self {
            FeedEvent::New { account, .. }
            | FeedEvent::Connected { account, .. }
            | FeedEvent::Error { account, .. }
            | FeedEvent::LoginNeeded { account, .. } => Some(account),
            _ => None,
        }
    }

    /// One line for people.
    pub fn render(&self) -> String {
        let time = |at: &Stamp| at.at.split('T').nth(1).unwrap_or(&at.at).chars().take(8).collect::<String>();
        match self {
            FeedEvent::New { at, account, folder, count, messages } => {
                let first = messages
                    .first()
                    .map(|m| format!(": {} — {}", m.summary.from, m.summary.subject))
                    .unwrap_or_default();
                let more = if *count > 1 { format!(" (and {} more)", count - 1) } else { String::new() };
                format!("{} {account}/{folder}: {count} new{first}{more}", time(at))
            }
            FeedEvent::Connected { at, account, folder, peer } => {
                format!("{} {account}/{folder}: connected to {peer}", time(at))
            }
            FeedEvent::Error { at, account, folder, text, .. } => {
                format!("{} {account}/{folder}: error: {text}", time(at))
            }
            FeedEvent::LoginNeeded { at, account, folder, text } => {
                format!("{} {account}/{folder}: {text}", time(at))
            }
            FeedEvent::Link { at, connection, state, text } => {
                let why = text.as_ref().map(|t| format!(": {t}")).unwrap_or_default();
                format!("{} ssh {connection}: {state}{why}", time(at))
            }
            FeedEvent::Outbox { at, id, outcome, text } => {
                let why = text.as_ref().map(|t| format!(": {t}")).unwrap_or_default();
                format!("{} outbox {id}: {outcome}{why}", time(at))
            }
            FeedEvent::Following { at, folders } => {
                let counts: Vec<String> = folders
                    .iter()
                    .map(|f| match f.unread_new {
                        Some(n) => format!("{}/{}: {n} unread", f.account, f.folder),
                        None => format!("{}/{}", f.account, f.folder),
                    })
                    .collect();
                format!(
                    "{} following {}",
                    time(at),
                    if counts.is_empty() { "nothing".into() } else { counts.join(", ") }
                )
            }
            FeedEvent::Dropped { at, count } => {
                format!("{} ({count} events dropped: this reader was too slow)", time(at))
            }
        }
    }
}

/// One account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountStatus {
    /// Its name in the config.
    pub name: String,
    /// `pop3` or `imap`.
    pub protocol: String,
    /// The way to the mail server: `exec of IMAPD on SSH-HOST`,
    /// `user@server:port via SSH-HOST`, a tunnel command, or the server.
    pub server: String,
    /// The server as it answered on the last connection, as named in
    /// messages (for an exec'd imapd, the one found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Its folders.
    pub folders: Vec<FolderStatus>,
}

/// The whole daemon, as `status --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's PID.
    pub pid: u32,
    /// When it started.
    pub started: Stamp,
    /// The config file it runs.
    pub config: String,
    /// Why the config file as it is now was not taken (the one before
    /// runs), after a reload.
    pub config_error: Option<String>,
    /// Every account.
    pub accounts: Vec<AccountStatus>,
    /// The local endpoints served for mail clients.
    #[serde(default)]
    pub endpoints: Vec<EndpointStatus>,
    /// `sshmail tunnel` sessions through the daemon: open now, and since
    /// the start.
    #[serde(default)]
    pub tunnels: Clients,
    /// The SSH connections the daemon holds, one entry per host (and
    /// trust: known_hosts, identities).
    #[serde(default)]
    pub connections: Vec<ConnectionStatus>,
}

/// The SSH connections to one host, as `status` shows them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionStatus {
    /// `user@host:port` (` via …` for ProxyJump).
    pub name: String,
    /// `up`, `connecting`, `down`, `waiting for login` or `closed` (when
    /// idle).
    pub state: String,
    /// Since when (the last change).
    pub since: Option<Stamp>,
    /// Connections open.
    pub connections: usize,
    /// Channels open on them (fetches, IDLEs, gateway clients, relays).
    pub channels: usize,
    /// Why it is down.
    pub last_error: Option<String>,
}

/// A local endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointStatus {
    /// The account it serves.
    pub account: String,
    /// `imap`, `pop3` or `smtp`.
    pub service: String,
    /// `unix:PATH` or `tcp:HOST:PORT`.
    pub listen: String,
    /// Its clients.
    pub clients: Clients,
}

/// How many clients: in session now, and since the start.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Clients {
    /// In session now.
    pub now: u64,
    /// Since the start.
    pub total: u64,
}

impl Status {
    /// The status as text for people.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "sshmail daemon, PID {}, since {}, config {}", self.pid, self.started.at, self.config);
        if let Some(e) = &self.config_error {
            let _ = writeln!(out, "  the config file was not taken (the one before runs): {e}");
        }
        if self.accounts.is_empty() {
            let _ = writeln!(out, "  no accounts");
        }
        for a in &self.accounts {
            let _ = writeln!(out, "{} ({}, {})", a.name, a.protocol, a.server);
            for f in &a.folders {
                let mode = match f.mode {
                    Mode::Starting => "starting",
                    Mode::Idle => "IDLE",
                    Mode::Polling => "polling",
                };
                let link = match (&f.connected, &f.connection) {
                    (true, Some(c)) => format!("connected via {c}"),
                    (true, None) => "connected".to_string(),
                    (false, _) => "not connected".to_string(),
                };
                let _ = writeln!(out, "  {}: {mode}, {link}, {} delivered since start", f.folder, f.delivered);
                if let Some(p) = &f.last_poll {
                    let _ = writeln!(out, "    last poll {}: {}", p.at.at, p.what);
                }
                if let Some(n) = &f.next {
                    let _ = writeln!(out, "    next {} {}", n.what, n.at.at);
                }
                if let Some(e) = &f.last_error {
                    let when = match (&e.next_try, e.retry.as_str()) {
                        (Some(t), _) => format!("next try {}", t.at),
                        (None, "never") => {
                            "not retried until the config changes (sshmail reload) or sshmail poll".to_string()
                        }
                        (None, "login") => format!("waiting for login: sshmail login {}", a.name),
                        (None, _) => "retrying".to_string(),
                    };
                    let _ = writeln!(out, "    error {} ({}): {}", e.at.at, when, e.text);
                }
            }
        }
        for e in &self.endpoints {
            let _ = writeln!(
                out,
                "serving {} {} on {}: {} clients now, {} since start",
                e.account, e.service, e.listen, e.clients.now, e.clients.total
            );
        }
        if self.tunnels.total > 0 {
            let _ = writeln!(out, "tunnels: {} open now, {} since start", self.tunnels.now, self.tunnels.total);
        }
        for c in &self.connections {
            let since = c.since.as_ref().map(|s| format!(" since {}", s.at)).unwrap_or_default();
            let carries = match c.connections {
                0 => String::new(),
                1 => format!(", {} channels", c.channels),
                n => format!(", {n} connections, {} channels", c.channels),
            };
            let _ = writeln!(out, "ssh {}: {}{since}{carries}", c.name, c.state);
            if let Some(e) = &c.last_error {
                let _ = writeln!(out, "    last error: {e}");
            }
        }
        out
    }
}
