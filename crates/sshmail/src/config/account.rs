//! A resolved account and the typed values it is made of.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::secret::Secret;

/// Where an SMTP/LMTP server listens (a delivery target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// host, port.
    Tcp(String, u16),
    /// A Unix socket path.
    Unix(PathBuf),
}
use crate::error::{Error, Result};
/// When the relay's STARTTLS is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTls {
    /// When the relay offers it.
    Auto,
    /// Always: a relay that does not offer it is not sent to.
    Require,
    /// Never (a relay on the SSH host itself with a certificate for
    /// another name).
    Never,
}

/// How an account relays outgoing mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relay {
    /// SMTP to `host:port` as seen from the SSH host.
    Smtp(String, u16),
    /// The remote sendmail-compatible command (argv or shell text).
    Exec(Command),
}

/// An account's `send` table, resolved.
#[derive(Debug, Clone)]
pub struct Send {
    /// How.
    pub relay: Relay,
    /// Envelope senders that choose this account (lower case).
    pub from: Vec<String>,
    /// It sends what no account's `from` chooses.
    pub default: bool,
    /// SMTP AUTH login.
    pub user: Option<String>,
    /// Its password.
    pub password: PasswordSource,
    /// When STARTTLS is used.
    pub starttls: StartTls,
    /// How the relay's certificate is checked (its name: the host of
    /// `send.server`).
    pub tls: TlsSettings,
    /// How long a message may stay queued before it is given up.
    pub expire: Duration,
}

/// What a local endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// IMAP.
    Imap,
    /// POP3.
    Pop3,
    /// SMTP.
    Smtp,
}

impl Service {
    /// The name used in config keys and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Service::Imap => "imap",
            Service::Pop3 => "pop3",
            Service::Smtp => "smtp",
        }
    }

    /// Parses `imap`, `pop3` (or `pop`), `smtp`.
    pub fn parse(s: &str) -> Option<Service> {
        match s {
            "imap" => Some(Service::Imap),
            "pop3" | "pop" => Some(Service::Pop3),
            "smtp" => Some(Service::Smtp),
            _ => None,
        }
    }

    /// The service an account's own protocol is.
    pub fn of(protocol: Protocol) -> Service {
        match protocol {
            Protocol::Imap => Service::Imap,
            Protocol::Pop3 => Service::Pop3,
        }
    }
}

/// Where a local endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Listen {
    /// A Unix socket (mode 0600, in a directory of mode 0700).
    Unix(PathBuf),
    /// A TCP port.
    Tcp(std::net::SocketAddr),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
            Listen::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// One local endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeEndpoint {
    /// What it serves.
    pub service: Service,
    /// Where.
    pub listen: Listen,
}

/// An account's local endpoints, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Serve {
    /// The endpoints.
    pub endpoints: Vec<ServeEndpoint>,
    /// IMAP: answer the client's login here when the server is PREAUTH.
    pub accept_login: bool,
    /// Endpoints that cannot be placed here (a `$XDG_RUNTIME_DIR` path
    /// without one): an error for `daemon` and `serve`, which listen on
    /// them, and nothing to the commands that do not (a cron `fetch`).
    pub unresolved: Vec<String>,
}

/// The mail protocol of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// POP3.
    Pop3,
    /// IMAP4rev1.
    Imap,
}

/// How the byte stream to the mail server is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A direct-tcpip channel through the SSH host to `server`.
    Forward,
    /// An exec channel on the SSH host running the mail server's
    /// preauthenticated binary (`imapd`), detected when `None`.
    Exec(Option<Command>),
    /// A local command whose stdin/stdout is the connection (like mbsync's
    /// `Tunnel`).
    Command(Command),
    /// TLS straight to `server` (no SSH).
    Tls,
    /// Plain TCP to `server`, then STARTTLS (no SSH).
    StartTls,
}

/// What happens on the server to a message once it is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Nothing: leave it as it was (IMAP: EXAMINE, BODY.PEEK).
    Keep,
    /// IMAP only: set \Seen.
    Seen,
    /// Delete it (POP3 DELE; IMAP \Deleted + UID EXPUNGE).
    Delete,
}

/// TLS settings for `via = "tls"` / `"starttls"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// Extra CA certificates (PEM) to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Accept exactly this server certificate: SHA-256 of its DER, hex
    /// (colons allowed). Replaces CA verification.
    pub fingerprint: Option<String>,
}

/// How to log in to the mail server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// SASL PLAIN if offered (IMAP: with SASL-IR), else USER/PASS or LOGIN.
    Auto,
    /// POP3 USER/PASS, IMAP LOGIN.
    User,
    /// APOP (needs a timestamp in the greeting).
    Apop,
    /// AUTH PLAIN.
    Plain,
}

/// What to do with an unknown host key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Refuse unknown hosts.
    Strict,
    /// Trust an unknown host on first use and record its key (hashed).
    AcceptNew,
}

/// Where delivered mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A Maildir (created if missing).
    Maildir(PathBuf),
    /// An mbox file (mboxrd; created if missing).
    Mbox(PathBuf),
    /// An MDA command line (split into words, no shell unless written).
    Mda(String),
    /// An SMTP server.
    Smtp(Endpoint),
    /// An LMTP server.
    Lmtp(Endpoint),
}

/// Where a password comes from.
#[derive(Debug, Clone)]
pub enum PasswordSource {
    /// None given.
    None,
    /// Written in the config.
    Literal(Secret),
    /// Printed by a command.
    Command(Command),
}

/// The SSH side of an account, before `~/.ssh/config` is applied.
#[derive(Debug, Clone)]
pub struct SshDestination {
    /// User, if given in `user@host`.
    pub user: Option<String>,
    /// Host name or `~/.ssh/config` alias.
    pub host: String,
    /// Port, if given in `host:port`.
    pub port: Option<u16>,
}

impl SshDestination {
    /// Parses `[user@]host[:port]` (IPv6 as `[addr]:port`).
    pub fn parse(s: &str) -> Result<SshDestination> {
        let bad = || Error::Config(format!("bad SSH destination {s:?}: expected [user@]host[:port]"));
        let (user, rest) = match s.rsplit_once('@') {
            Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
            Some(_) => return Err(bad()),
            None => (None, s),
        };
        let (host, port) = split_host_port(rest).ok_or_else(bad)?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(SshDestination { user, host, port })
    }
}

/// Splits `host[:port]` or `[v6]:port`.
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((h.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), Some(p.parse().ok()?))),
        Some(_) => Some((s.to_string(), None)),
        None => Some((s.to_string(), None)),
    }
}

/// A fully resolved account, in its concerns: how to reach the server
/// (`route`, `~/.ssh/config` applied), who logs in (`login`), what to fetch
/// and what to do with it on the server (`fetch`), and where mail goes
/// (`delivery`).
#[derive(Debug, Clone)]
pub struct Account {
    /// The account's name (config table key, or a description of an ad-hoc
    /// account), for messages.
    pub name: String,
    /// Ad hoc (no config table): the ledger is named after the mailbox it
    /// reaches, not after `name`.
    pub adhoc: bool,
    /// The mail protocol.
    pub protocol: Protocol,
    /// How to reach the mail server.
    pub route: Route,
    /// The mail login.
    pub login: Login,
    /// What to fetch, and what to do with it on the server.
    pub fetch: FetchPolicy,
    /// Where mail goes.
    pub delivery: Deliver,
    /// Directory for this account's ledger.
    pub state_dir: PathBuf,
    /// Local endpoints for mail clients.
    pub serve: Serve,
    /// How mail is sent through it, if at all.
    pub send: Option<Send>,
    /// Commands run when mail came or went.
    pub hooks: Hooks,
}

/// An account's hooks: commands told of new mail (after it is durable and
/// recorded) and of mail sent (after the relay accepted it).
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// After a batch of new mail, unless the folder has its own.
    pub on_new: Option<Command>,
    /// Per folder, in place of `on_new`; None: no hook for that folder.
    pub on_new_folders: std::collections::BTreeMap<String, Option<Command>>,
    /// After the relay accepted a message.
    pub on_sent: Option<Command>,
    /// The longest a hook runs before it is ended.
    pub timeout: std::time::Duration,
    /// The daemon shows a desktop notification for new mail.
    pub notify: bool,
    /// Folders whose new mail is never announced on the desktop.
    pub notify_skip_folders: Vec<String>,
    /// Header fields (`Name`, or `Name: text` for a field holding that
    /// text, both without regard to case) that keep a message from being
    /// announced on the desktop.
    pub notify_skip_headers: Vec<String>,
}

impl Hooks {
    /// The hook for new mail in `folder`, if any.
    pub fn on_new_in(&self, folder: &str) -> Option<&Command> {
        match self.on_new_folders.get(folder) {
            Some(own) => own.as_ref(),
            None => self.on_new.as_ref(),
        }
    }

    /// Whether new mail in `folder` is shown on the desktop.
    pub fn notifies(&self, folder: &str) -> bool {
        self.notify && !self.notify_skip_folders.iter().any(|pattern| glob(pattern, folder))
    }

    /// Whether new mail in some folder is told to a hook.
    pub fn any_on_new(&self) -> bool {
        self.on_new.is_some() || self.on_new_folders.values().any(Option::is_some)
    }
}

/// Who logs in to the mail server, and how.
#[derive(Debug, Clone)]
pub struct Login {
    /// Mail login name.
    pub user: String,
    /// `user` was given (in the account or in `ssh = "user@host"`); if not,
    /// it is the SSH user `~/.ssh/config` names.
    pub user_given: bool,
    /// Mail password.
    pub password: PasswordSource,
    /// Login method.
    pub auth: AuthMethod,
}

/// What a fetch takes from the server and leaves there.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// What to do with delivered messages on the server.
    pub policy: Policy,
    /// IMAP folders (names or LIST patterns with `*` and `%`), UTF-8.
    pub folders: Vec<String>,
    /// IMAP: fetch only messages without \Seen.
    pub only_unseen: bool,
    /// Fetch messages already fetched before.
    pub fetch_all: bool,
    /// Largest message accepted; larger ones stay on the server.
    pub max_message_size: u64,
    /// IMAP without UIDPLUS: allow a plain EXPUNGE (which also removes
    /// messages others flagged \Deleted).
    pub allow_expunge_all: bool,
    /// IMAP: fetch a folder whose UIDVALIDITY changed again from scratch.
    pub accept_uidvalidity_change: bool,
    /// With `--idle`: fetch at least this often, whatever IDLE reports.
    pub interval: std::time::Duration,
    /// Fetched at all (`fetch = false`: only served, or used to send).
    pub enabled: bool,
}

/// Where an account's mail goes, and how it is marked on the way.
#[derive(Debug, Clone)]
pub struct Deliver {
    /// The sink.
    pub to: Delivery,
    /// Add a `Received:` line to each message.
    pub received: bool,
    /// The local recipient (SMTP/LMTP RCPT TO, MDA `%T`).
    pub recipient: String,
    /// IMAP into a Maildir: each folder into its own Maildir++ subfolder.
    pub maildir_subfolders: bool,
}

/// `user@host:port`, the one way a login or an SSH destination is named.
pub fn user_at(user: &str, host: &str, port: u16) -> String {
    format!("{user}@{host}:{port}")
}

impl Account {
    /// `user@server:port`: the mail login, for messages and names.
    pub fn address(&self) -> String {
        user_at(&self.login.user, &self.route.server_host, self.route.server_port)
    }

    /// The way to the mail server as it is, for `status`: an exec of which
    /// imapd on which SSH host, a forward through which host, a tunnel
    /// command, or the server itself (TLS). Commands by their program only
    /// (the rest may hold a secret).
    pub fn route_shown(&self) -> String {
        let ssh = &self.route.shown_ssh;
        match &self.route.via {
            Via::Exec(Some(c)) => format!("exec of {} on {ssh}", c.program()),
            Via::Exec(None) => format!("exec of the imapd found on {ssh}"),
            Via::Forward => format!("{} via {ssh}", self.address()),
            Via::Command(c) => format!("tunnel command {}", c.program()),
            Via::Tls | Via::StartTls => self.address(),
        }
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any run of
/// characters (`Lists/*`).
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.len() >= head.len()
                && name.starts_with(head)
                && (0..=name.len() - head.len()).any(|i| {
                    let rest = &name[head.len()..];
                    rest.is_char_boundary(i) && glob(tail, &rest[i..])
                })
        }
    }
}
