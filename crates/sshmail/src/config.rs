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

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where an SMTP/LMTP server listens (a delivery target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// host, port.
    Tcp(String, u16),
    /// A Unix socket path.
    Unix(PathBuf),
}
use crate::error::{Error, Result};
use crate::secret::Secret;

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where ledgers live; default `$XDG_STATE_HOME/sshmail`.
    pub state_dir: Option<String>,
    /// Accounts by name.
    #[serde(default)]
    pub account: BTreeMap<String, RawAccount>,
    /// `sshmail daemon` settings.
    #[serde(default)]
    pub daemon: RawDaemon,
}

/// The `[daemon]` table as written.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    /// Seconds between polls of an account (and the safety-net pass of an
    /// IDLE folder) when the account sets no `interval`; default 300.
    pub interval: Option<u64>,
    /// Seconds an IDLE lasts before it is renewed; default 480.
    pub idle_renew: Option<u64>,
    /// Seconds an SSH connection without channels stays open; default 600.
    pub ssh_idle_close: Option<u64>,
}

/// `sshmail daemon` settings, defaults filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSettings {
    /// Poll interval for accounts that set none.
    pub interval: Duration,
    /// The first IDLE renewal time (shortened for a server that drops
    /// IDLEs sooner).
    pub idle_renew: Duration,
    /// How long an SSH connection nobody uses stays open.
    pub ssh_idle_close: Duration,
}

impl RawDaemon {
    /// Checks the values and fills the defaults.
    pub fn resolve(&self) -> Result<DaemonSettings> {
        let secs = |v: Option<u64>, default: u64, key: &str| match v.unwrap_or(default) {
            0 => Err(Error::Config(format!("[daemon] {key} must be at least 1 second"))),
            n => Ok(Duration::from_secs(n)),
        };
        Ok(DaemonSettings {
            interval: secs(self.interval, 300, "interval")?,
            idle_renew: secs(self.idle_renew, 480, "idle_renew")?,
            ssh_idle_close: secs(self.ssh_idle_close, 600, "ssh_idle_close")?,
        })
    }
}

/// One account as written. Every field is optional here; [`resolve`] checks.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    pub ssh: Option<String>,
    pub protocol: Option<String>,
    pub server: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_command: Option<Command>,
    pub auth: Option<String>,
    pub keep: Option<bool>,
    pub fetch_all: Option<bool>,
    pub compress: Option<bool>,
    pub deliver: Option<String>,
    pub identity: Option<Vec<String>>,
    pub known_hosts: Option<String>,
    pub host_key_policy: Option<String>,
    pub timeout: Option<u64>,
    pub ssh_password_command: Option<Command>,
    pub via: Option<String>,
    pub imapd: Option<Command>,
    pub tunnel: Option<Command>,
    pub folders: Option<Vec<String>>,
    pub policy: Option<String>,
    pub only_unseen: Option<bool>,
    pub tls_ca_file: Option<String>,
    pub tls_fingerprint: Option<String>,
    pub max_message_size: Option<u64>,
    pub allow_expunge_all: Option<bool>,
    pub accept_uidvalidity_change: Option<bool>,
    pub received: Option<bool>,
    pub recipient: Option<String>,
    pub maildir_subfolders: Option<bool>,
    pub allow_preauth: Option<bool>,
    pub interval: Option<u64>,
    /// False: the account is only served (or used to send); neither
    /// `sshmail fetch` nor the daemon fetches it.
    pub fetch: Option<bool>,
    /// Local endpoints for mail clients.
    pub serve: Option<RawServe>,
    /// How mail is sent through this account (`sshmail sendmail`).
    pub send: Option<RawSend>,
}

/// An account's `send` table as written.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSend {
    /// `smtp` (a forward to `server`) or `exec` (the remote `command`).
    pub via: Option<String>,
    /// smtp: the relay as seen from the SSH host, `host[:port]`.
    pub server: Option<String>,
    /// exec: the remote sendmail; `-f FROM -- RCPT…` are appended.
    pub command: Option<Command>,
    /// Envelope senders that choose this account.
    pub from: Option<Vec<String>>,
    /// This account sends what no account's `from` chooses.
    pub default: Option<bool>,
    /// SMTP AUTH login.
    pub user: Option<String>,
    /// SMTP AUTH password, printed by a command.
    pub password_command: Option<Command>,
    /// smtp: `auto` (when offered), `require` or `never`.
    pub starttls: Option<String>,
    /// smtp: extra CA certificates (PEM) for the relay's certificate.
    pub tls_ca_file: Option<String>,
    /// smtp: accept exactly this relay certificate (SHA-256 of its DER).
    pub tls_fingerprint: Option<String>,
    /// Days a message may stay queued before it is given up (5).
    pub expire_days: Option<u64>,
}

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

/// An account's `serve` table as written: local endpoints for mail
/// clients, each `unix:PATH` or `tcp:HOST:PORT`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServe {
    /// The account's IMAP server (its own route when the account is IMAP).
    pub imap: Option<String>,
    /// The account's POP3 server (its own route when the account is POP3).
    pub pop3: Option<String>,
    /// An SMTP server, forwarded from the SSH host (port 25 on `server`'s host).
    pub smtp: Option<String>,
    /// Let a `tcp:` endpoint listen on an address other hosts can reach.
    /// Nobody's uid can be checked there: anyone who reaches it gets the
    /// mailbox, without a password when the server side is PREAUTH.
    pub open_to_network: Option<bool>,
    /// IMAP: greet a client with OK instead of the server's PREAUTH and
    /// accept its LOGIN / AUTHENTICATE PLAIN here (the peer-uid check
    /// already authorised it), for clients that insist on logging in.
    pub imap_accept_login: Option<bool>,
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

/// Parses a `serve.*` value: `unix:PATH` (`$XDG_RUNTIME_DIR` and `~`
/// expanded; absolute) or `tcp:HOST:PORT` (an IP address, or
/// `localhost`). A TCP address other hosts can reach is refused unless
/// `open_to_network`.
pub fn parse_listen(s: &str, key: &str, open_to_network: bool) -> Result<Listen> {
    let bad = |why: &str| Error::Config(format!("{key} = {s:?}: {why}"));
    if let Some(path) = s.strip_prefix("unix:") {
        let path = expand_runtime_dir(path).map_err(|e| bad(&e))?;
        if !path.is_absolute() {
            return Err(bad("the socket path must be absolute"));
        }
        return Ok(Listen::Unix(path));
    }
    let Some(rest) = s.strip_prefix("tcp:") else {
        return Err(bad("expected unix:PATH or tcp:HOST:PORT"));
    };
    let (host, port) = match split_host_port(rest) {
        Some((h, Some(p))) if p != 0 => (h, p),
        _ => return Err(bad("expected tcp:HOST:PORT with a port from 1 to 65535")),
    };
    let ip: std::net::IpAddr = match host.as_str() {
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        h => h.parse().map_err(|_| bad("HOST must be an IP address (127.0.0.1, [::1]) or localhost"))?,
    };
    if !ip.is_loopback() && !open_to_network {
        return Err(bad(
            "this address can be reached from other hosts, where nobody's uid can be checked: anyone reaching it \
             would read your mail. Listen on 127.0.0.1, [::1] or a unix: socket, or, if that is what you want, \
             also set serve.open_to_network = true",
        ));
    }
    Ok(Listen::Tcp(std::net::SocketAddr::new(ip, port)))
}

/// The rest of `path` after a leading `$XDG_RUNTIME_DIR` (or
/// `${XDG_RUNTIME_DIR}`), if it starts so.
fn under_runtime_dir(path: &str) -> Option<&str> {
    ["$XDG_RUNTIME_DIR", "${XDG_RUNTIME_DIR}"].iter().find_map(|var| path.strip_prefix(var))
}

/// Expands a leading `$XDG_RUNTIME_DIR` (or `${XDG_RUNTIME_DIR}`) and `~`.
fn expand_runtime_dir(path: &str) -> std::result::Result<PathBuf, String> {
    if let Some(rest) = under_runtime_dir(path) {
        let base = runtime_base().ok_or("XDG_RUNTIME_DIR is not set here (and no /run/user/UID exists)")?;
        return Ok(base.join(rest.trim_start_matches('/')));
    }
    if path.contains('$') {
        return Err("only $XDG_RUNTIME_DIR is expanded in a socket path".into());
    }
    Ok(expand_tilde(path))
}

/// `$XDG_RUNTIME_DIR`, else `/run/user/UID` where that exists.
pub fn runtime_base() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    let run = PathBuf::from(format!("/run/user/{}", rustix::process::geteuid().as_raw()));
    run.is_dir().then_some(run)
}

/// A command: a string run by `/bin/sh -c`, or an argument vector run as is.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Command {
    /// Run through the shell, because the user wrote shell.
    Shell(String),
    /// Run directly, no shell.
    Argv(Vec<String>),
}

impl Command {
    /// Its program: the first word (of the shell text, or of the vector).
    pub fn program(&self) -> &str {
        match self {
            Command::Shell(s) => s.split_whitespace().next().unwrap_or("sh"),
            Command::Argv(v) => v.first().map_or("", String::as_str),
        }
    }
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
/// (`reach`, which `transport::Route::of` resolves against `~/.ssh/config`),
/// who logs in (`login`), what to fetch and what to do with it on the server
/// (`fetch`), and where mail goes (`delivery`).
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
    pub reach: Reach,
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
}

/// How to reach an account's mail server, as configured (the SSH parts are
/// completed from `~/.ssh/config` when `transport::Route::of` makes a route).
#[derive(Debug, Clone)]
pub struct Reach {
    /// The SSH host to go through.
    pub ssh: SshDestination,
    /// Identity files given for this account (before ~/.ssh/config's).
    pub identities: Vec<PathBuf>,
    /// A known_hosts file given for this account.
    pub known_hosts: Option<PathBuf>,
    /// Unknown host key policy, if the account sets one.
    pub host_key_policy: Option<HostKeyPolicy>,
    /// Password for SSH password / keyboard-interactive login, if asked for.
    pub ssh_password: PasswordSource,
    /// Ask for SSH compression.
    pub compress: bool,
    /// How the stream to the mail server is made.
    pub via: Via,
    /// The mail server as seen from the SSH host.
    pub server_host: String,
    /// Its port.
    pub server_port: u16,
    /// TLS settings.
    pub tls: TlsSettings,
    /// IMAP: accept a PREAUTH greeting on a network port (forward, tls).
    pub allow_preauth: bool,
    /// How long any single wait may take.
    pub timeout: Duration,
}

/// Who logs in to the mail server, and how.
#[derive(Debug, Clone)]
pub struct Login {
    /// Mail login name.
    pub user: String,
    /// `user` was given (in the account or in `ssh = "user@host"`); if not,
    /// it becomes the SSH user once `~/.ssh/config` is read.
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
        user_at(&self.login.user, &self.reach.server_host, self.reach.server_port)
    }

    /// The way to the mail server as it is, for `status`: an exec of which
    /// imapd on which SSH host, a forward through which host, a tunnel
    /// command, or the server itself (TLS). Commands by their program only
    /// (the rest may hold a secret).
    pub fn route_shown(&self) -> String {
        let ssh = &self.reach.ssh;
        let ssh = match (&ssh.user, ssh.port) {
            (Some(u), Some(p)) => format!("{u}@{}:{p}", ssh.host),
            (Some(u), None) => format!("{u}@{}", ssh.host),
            (None, Some(p)) => format!("{}:{p}", ssh.host),
            (None, None) => ssh.host.clone(),
        };
        match &self.reach.via {
            Via::Exec(Some(c)) => format!("exec of {} on {ssh}", c.program()),
            Via::Exec(None) => format!("exec of the imapd found on {ssh}"),
            Via::Forward => format!("{} via {ssh}", self.address()),
            Via::Command(c) => format!("tunnel command {}", c.program()),
            Via::Tls | Via::StartTls => self.address(),
        }
    }
}

/// The default config file: `$XDG_CONFIG_HOME/sshmail/config.toml`.
pub fn default_config_path() -> PathBuf {
    xdg_dir("XDG_CONFIG_HOME", ".config").join("sshmail/config.toml")
}

/// The config file a command runs: the given one, or the default; and
/// whether it is the default file (however it is named), whose daemon
/// has the plain `control` socket.
pub fn config_path(given: Option<&Path>) -> (PathBuf, bool) {
    let default = default_config_path();
    match given {
        None => (default, true),
        Some(p) => {
            let same = match (std::fs::canonicalize(p), std::fs::canonicalize(&default)) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            };
            (p.to_path_buf(), same)
        }
    }
}

/// The default state directory: `$XDG_STATE_HOME/sshmail`.
pub fn default_state_dir() -> PathBuf {
    xdg_dir("XDG_STATE_HOME", ".local/state").join("sshmail")
}

fn xdg_dir(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => home().join(fallback),
    }
}

/// The user's home directory.
pub fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"))
}

/// Expands a leading `~/`.
pub fn expand_tilde(s: &str) -> PathBuf {
    match s.strip_prefix("~/") {
        Some(rest) => home().join(rest),
        None if s == "~" => home(),
        None => PathBuf::from(s),
    }
}

/// Reads and parses a config file, refusing one that holds a password and is
/// readable by group or others. The mode is checked before parsing, so a
/// file that exposes a password is reported even when it does not parse;
/// and a parse error names file, line, column and key but never shows the
/// text of the line, which may hold a secret (a typo'd `pasword = "…"`).
pub fn load(path: &Path) -> Result<RawConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read config {}: {e}", path.display())))?;
    let mode = std::fs::metadata(path)
        .map_err(|e| Error::Config(format!("config {}: {e}", path.display())))?
        .permissions()
        .mode();
    let exposed = mode & 0o077 != 0;
    let refuse = || {
        Error::Permissions(format!(
            "config {} holds a password but is readable by others (mode {:03o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        ))
    };
    if exposed && mentions_password(&text) {
        return Err(refuse());
    }
    let raw = parse(&text, path).map_err(|e| match e {
        Error::Config(mut msg) if exposed => {
            msg.push_str(&format!(
                " (the file is readable by others: if it holds a password, run chmod 600 {})",
                path.display()
            ));
            Error::Config(msg)
        }
        e => e,
    })?;
    if exposed && raw.account.values().any(|a| a.password.is_some()) {
        return Err(refuse());
    }
    Ok(raw)
}

/// Parses config text read from `path` (named in errors). A parse error
/// names line, column and key, never the text of the line.
pub fn parse(text: &str, path: &Path) -> Result<RawConfig> {
    toml::from_str(text)
        .map_err(|e| Error::Config(format!("config {}: {}", path.display(), describe_toml_error(text, &e))))
}

/// True if some line of the text sets a key named `password` (dotted or
/// quoted forms included), whether or not the file parses.
fn mentions_password(text: &str) -> bool {
    text.lines().any(|line| {
        let Some((key, _)) = line.split_once('=') else { return false };
        key.rsplit('.').next().map(|k| k.trim().trim_matches(['"', '\'', '{', ' '])) == Some("password")
    })
}

/// A TOML error as `line L, column C: message (key K)`, without the source
/// line. Quoted words in the message are kept only where they cannot be a
/// value: the key at that line and the schema's list after "expected".
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let at = e.span().map(|s| s.start.min(text.len()));
    let (line_no, col, key) = match at {
        Some(at) => {
            let before = &text[..at];
            let line_no = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |p| p + 1);
            let col = before[line_start..].chars().count() + 1;
            let line = text[line_start..].lines().next().unwrap_or("");
            let key = line
                .split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"').to_string())
                .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)));
            (Some(line_no), Some(col), key)
        }
        None => (None, None, None),
    };
    let message = e.message();
    let (head, schema) = match message.find(", expected") {
        Some(p) => message.split_at(p),
        None => (message, ""),
    };
    let mut safe = String::new();
    let mut rest = head;
    while let Some(open) = rest.find(['`', '"']) {
        let q = rest.as_bytes()[open] as char;
        safe.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(q) {
            Some(close) => {
                let word = &after[..close];
                if key.as_deref().is_some_and(|k| k == word || k.ends_with(&format!(".{word}"))) {
                    safe.push_str(&format!("{q}{word}{q}"));
                } else {
                    safe.push_str("(value hidden)");
                }
                rest = &after[close + 1..];
            }
            None => {
                rest = "";
            }
        }
    }
    safe.push_str(rest);
    let mut out = String::new();
    if let (Some(l), Some(c)) = (line_no, col) {
        out.push_str(&format!("line {l}, column {c}: "));
    }
    out.push_str(safe.trim());
    out.push_str(schema.trim_end());
    if let Some(k) = key {
        out.push_str(&format!(" (key {k})"));
    }
    out
}

/// Resolves one raw account.
pub fn resolve(name: &str, raw: &RawAccount, state_dir: Option<&str>) -> Result<Account> {
    let ctx = |msg: String| Error::Config(format!("account {name}: {msg}"));
    let protocol = match raw.protocol.as_deref().unwrap_or("pop3") {
        "pop3" | "pop" => Protocol::Pop3,
        "imap" => Protocol::Imap,
        other => return Err(ctx(format!("unknown protocol {other:?} (pop3, imap)"))),
    };
    let via = match raw.via.as_deref() {
        None if raw.tunnel.is_some() => Via::Command(raw.tunnel.clone().unwrap_or(Command::Argv(Vec::new()))),
        None if protocol == Protocol::Imap && raw.server.is_none() => Via::Exec(raw.imapd.clone()),
        None | Some("forward") => Via::Forward,
        Some("exec") => Via::Exec(raw.imapd.clone()),
        Some("command") => {
            Via::Command(raw.tunnel.clone().ok_or_else(|| ctx("via = \"command\" needs `tunnel`".into()))?)
        }
        Some("tls") => Via::Tls,
        Some("starttls") => Via::StartTls,
        Some(other) => return Err(ctx(format!("unknown via {other:?} (forward, exec, command, tls, starttls)"))),
    };
    if protocol == Protocol::Pop3 && matches!(via, Via::Exec(_) | Via::StartTls) {
        return Err(ctx("POP3 goes through via = \"forward\", \"command\" or \"tls\"".into()));
    }
    let needs_ssh = matches!(via, Via::Forward | Via::Exec(_));
    let ssh = match raw.ssh.as_deref() {
        Some(s) => SshDestination::parse(s).map_err(|e| ctx(e.to_string()))?,
        None if needs_ssh => return Err(ctx("no `ssh` destination".into())),
        None => SshDestination { user: None, host: String::new(), port: None },
    };
    let default_port = match (protocol, &via) {
        (Protocol::Pop3, Via::Tls) => 995,
        (Protocol::Pop3, _) => 110,
        (Protocol::Imap, Via::Tls) => 993,
        (Protocol::Imap, _) => 143,
    };
    let (server_host, server_port) = match raw.server.as_deref() {
        None if matches!(via, Via::Tls | Via::StartTls) => return Err(ctx("TLS needs `server`".into())),
        None => ("localhost".to_string(), default_port),
        Some(s) => {
            let (h, p) = split_host_port(s).ok_or_else(|| ctx(format!("bad server {s:?}")))?;
            (h, p.unwrap_or(default_port))
        }
    };
    let user_given = raw.user.is_some() || ssh.user.is_some();
    let user = match &raw.user {
        Some(u) => u.clone(),
        None => ssh.user.clone().unwrap_or_else(local_user),
    };
    let password = match (&raw.password, &raw.password_command) {
        (Some(_), Some(_)) => return Err(ctx("give `password` or `password_command`, not both".into())),
        (Some(p), None) => PasswordSource::Literal(Secret::new(p.clone())),
        (None, Some(c)) => PasswordSource::Command(c.clone()),
        (None, None) => PasswordSource::None,
    };
    let auth = match raw.auth.as_deref().unwrap_or("auto") {
        "auto" => AuthMethod::Auto,
        "user" | "pass" | "login" => AuthMethod::User,
        "apop" => AuthMethod::Apop,
        "plain" => AuthMethod::Plain,
        other => return Err(ctx(format!("unknown auth {other:?} (auto, user, login, apop, plain)"))),
    };
    let deliver =
        parse_delivery(raw.deliver.as_deref().unwrap_or("maildir:~/Maildir")).map_err(|e| ctx(e.to_string()))?;
    let host_key_policy = match raw.host_key_policy.as_deref() {
        None => None,
        Some("strict" | "yes") => Some(HostKeyPolicy::Strict),
        Some("accept-new") => Some(HostKeyPolicy::AcceptNew),
        Some(other) => return Err(ctx(format!("unknown host_key_policy {other:?} (strict, accept-new)"))),
    };
    let timeout = raw.timeout.unwrap_or(30);
    if timeout == 0 {
        return Err(ctx("timeout must be at least 1 second".into()));
    }
    let ssh_password = match &raw.ssh_password_command {
        Some(c) => PasswordSource::Command(c.clone()),
        None => PasswordSource::None,
    };
    let policy = match (raw.policy.as_deref(), raw.keep) {
        (Some(_), Some(_)) => return Err(ctx("give `policy` or `keep`, not both".into())),
        (None, Some(true)) | (Some("keep"), None) => Policy::Keep,
        (None, None | Some(false)) | (Some("delete"), None) => Policy::Delete,
        (Some("seen"), None) if protocol == Protocol::Imap => Policy::Seen,
        (Some("seen"), None) => return Err(ctx("policy \"seen\" is for IMAP; POP3 has keep or delete".into())),
        (Some(other), None) => return Err(ctx(format!("unknown policy {other:?} (keep, seen, delete)"))),
    };
    let folders = raw.folders.clone().unwrap_or_else(|| vec!["INBOX".to_string()]);
    if protocol == Protocol::Pop3 && raw.folders.is_some() {
        return Err(ctx("POP3 has no folders; `folders` is for IMAP".into()));
    }
    if folders.is_empty() {
        return Err(ctx("`folders` is empty".into()));
    }
    let serve = resolve_serve(raw.serve.as_ref()).map_err(|e| ctx(e.to_string()))?;
    let send = raw.send.as_ref().map(resolve_send).transpose().map_err(|e| ctx(e.to_string()))?;
    if send.is_some() && raw.ssh.is_none() {
        return Err(ctx("`send` relays through SSH and needs `ssh`".into()));
    }
    Ok(Account {
        name: name.to_string(),
        adhoc: false,
        protocol,
        reach: Reach {
            ssh,
            identities: raw.identity.iter().flatten().map(|s| expand_tilde(s)).collect(),
            known_hosts: raw.known_hosts.as_deref().map(expand_tilde),
            host_key_policy,
            ssh_password,
            compress: raw.compress.unwrap_or(false),
            via,
            server_host,
            server_port,
            tls: TlsSettings {
                ca_file: raw.tls_ca_file.as_deref().map(expand_tilde),
                fingerprint: raw.tls_fingerprint.clone(),
            },
            allow_preauth: raw.allow_preauth.unwrap_or(false),
            timeout: Duration::from_secs(timeout),
        },
        login: Login { user, user_given, password, auth },
        fetch: FetchPolicy {
            policy,
            folders,
            only_unseen: raw.only_unseen.unwrap_or(false),
            fetch_all: raw.fetch_all.unwrap_or(false),
            max_message_size: raw.max_message_size.unwrap_or(1 << 30),
            allow_expunge_all: raw.allow_expunge_all.unwrap_or(false),
            accept_uidvalidity_change: raw.accept_uidvalidity_change.unwrap_or(false),
            interval: std::time::Duration::from_secs(raw.interval.unwrap_or(300).max(1)),
            enabled: raw.fetch.unwrap_or(true),
        },
        delivery: Deliver {
            to: deliver,
            received: raw.received.unwrap_or(true),
            recipient: raw.recipient.clone().unwrap_or_else(local_user),
            maildir_subfolders: raw.maildir_subfolders.unwrap_or(false),
        },
        state_dir: state_dir.map(expand_tilde).unwrap_or_else(default_state_dir),
        serve,
        send,
    })
}

/// An account's `send` table, checked.
fn resolve_send(raw: &RawSend) -> Result<Send> {
    let bad = |m: &str| Error::Config(m.to_string());
    let relay = match raw.via.as_deref().unwrap_or("smtp") {
        "smtp" => {
            if raw.command.is_some() {
                return Err(bad("send.command is for send.via = \"exec\""));
            }
            let server = raw.server.as_deref().unwrap_or("localhost:25");
            let (h, p) = split_host_port(server).ok_or_else(|| bad(&format!("bad send.server {server:?}")))?;
            Relay::Smtp(h, p.unwrap_or(25))
        }
        "exec" => {
            if raw.server.is_some()
                || raw.user.is_some()
                || raw.password_command.is_some()
                || raw.starttls.is_some()
                || raw.tls_ca_file.is_some()
                || raw.tls_fingerprint.is_some()
            {
                return Err(bad(
                    "send.server, send.user, send.password_command, send.starttls and send.tls_* are for \
                     send.via = \"smtp\"",
                ));
            }
            Relay::Exec(
                raw.command.clone().unwrap_or_else(|| Command::Argv(vec!["/usr/sbin/sendmail".into(), "-oi".into()])),
            )
        }
        other => return Err(bad(&format!("unknown send.via {other:?} (smtp, exec)"))),
    };
    let starttls = match raw.starttls.as_deref().unwrap_or("auto") {
        "auto" => StartTls::Auto,
        "require" => StartTls::Require,
        "never" => StartTls::Never,
        other => return Err(bad(&format!("unknown send.starttls {other:?} (auto, require, never)"))),
    };
    if starttls == StartTls::Never && (raw.tls_ca_file.is_some() || raw.tls_fingerprint.is_some()) {
        return Err(bad("send.tls_ca_file and send.tls_fingerprint mean nothing with send.starttls = \"never\""));
    }
    let expire = match raw.expire_days {
        Some(0) => return Err(bad("send.expire_days must be 1 or more")),
        Some(d) => Duration::from_secs(d.saturating_mul(86_400)),
        None => Duration::from_secs(5 * 86_400),
    };
    Ok(Send {
        starttls,
        tls: TlsSettings {
            ca_file: raw.tls_ca_file.as_deref().map(expand_tilde),
            fingerprint: raw.tls_fingerprint.clone(),
        },
        expire,
        relay,
        from: raw.from.iter().flatten().map(|f| f.to_ascii_lowercase()).collect(),
        default: raw.default.unwrap_or(false),
        user: raw.user.clone(),
        password: match &raw.password_command {
            Some(c) => PasswordSource::Command(c.clone()),
            None => PasswordSource::None,
        },
    })
}

/// An account's `serve` table, checked.
fn resolve_serve(raw: Option<&RawServe>) -> Result<Serve> {
    let Some(raw) = raw else { return Ok(Serve::default()) };
    let open = raw.open_to_network.unwrap_or(false);
    let mut endpoints = Vec::new();
    let mut unresolved = Vec::new();
    for (service, value) in [(Service::Imap, &raw.imap), (Service::Pop3, &raw.pop3), (Service::Smtp, &raw.smtp)] {
        if let Some(v) = value {
            let key = format!("serve.{}", service.name());
            let socket = v.strip_prefix("unix:").unwrap_or_default();
            if under_runtime_dir(socket).is_some() && runtime_base().is_none() {
                unresolved.push(format!(
                    "{key} = {v:?}: XDG_RUNTIME_DIR is not set here (and no /run/user/UID exists); run the daemon \
                     in your login session (the systemd user unit), or write the path out"
                ));
                continue;
            }
            endpoints.push(ServeEndpoint { service, listen: parse_listen(v, &key, open)? });
        }
    }
    for (i, a) in endpoints.iter().enumerate() {
        if let Some(b) = endpoints[..i].iter().find(|b| b.listen == a.listen) {
            return Err(Error::Config(format!(
                "serve.{} and serve.{} both listen on {}",
                b.service.name(),
                a.service.name(),
                a.listen
            )));
        }
    }
    Ok(Serve { endpoints, accept_login: raw.imap_accept_login.unwrap_or(false), unresolved })
}

/// Parses a `--deliver` / `deliver` value.
pub fn parse_delivery(s: &str) -> Result<Delivery> {
    let bad = || {
        Error::Config(format!(
            "bad delivery {s:?}: expected maildir:PATH, mbox:PATH, mda:COMMAND, smtp:HOST[:PORT], lmtp:HOST:PORT or lmtp:/SOCKET"
        ))
    };
    let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
    match kind {
        "maildir" if !rest.is_empty() => Ok(Delivery::Maildir(expand_tilde(rest))),
        "mbox" if !rest.is_empty() => Ok(Delivery::Mbox(expand_tilde(rest))),
        "mda" if !rest.trim().is_empty() => Ok(Delivery::Mda(rest.trim().to_string())),
        "smtp" => {
            let (h, p) =
                if rest.is_empty() { ("localhost".into(), None) } else { split_host_port(rest).ok_or_else(bad)? };
            Ok(Delivery::Smtp(Endpoint::Tcp(h, p.unwrap_or(25))))
        }
        "lmtp" if rest.starts_with('/') || rest.starts_with('~') => {
            Ok(Delivery::Lmtp(Endpoint::Unix(expand_tilde(rest))))
        }
        "lmtp" => match split_host_port(rest).ok_or_else(bad)? {
            (h, Some(p)) if !h.is_empty() => Ok(Delivery::Lmtp(Endpoint::Tcp(h, p))),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

fn local_user() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "root".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_destinations() {
        let d = SshDestination::parse("me@shell.example.org:2222").unwrap();
        assert_eq!((d.user.as_deref(), d.host.as_str(), d.port), (Some("me"), "shell.example.org", Some(2222)));
        let d = SshDestination::parse("host").unwrap();
        assert_eq!((d.user, d.host.as_str(), d.port), (None, "host", None));
        let d = SshDestination::parse("[::1]:22").unwrap();
        assert_eq!((d.host.as_str(), d.port), ("::1", Some(22)));
        assert!(SshDestination::parse("@host").is_err());
        assert!(SshDestination::parse("host:notaport").is_err());
    }

    #[test]
    fn resolves_with_defaults() {
        let raw: RawConfig =
            toml::from_str("[account.work]\nssh = \"me@shell\"\npassword_command = [\"pass\", \"show\", \"mail\"]\n")
                .unwrap();
        let a = resolve("work", &raw.account["work"], Some("/tmp/st")).unwrap();
        assert_eq!(
            (a.reach.server_host.as_str(), a.reach.server_port, a.login.user.as_str()),
            ("localhost", 110, "me")
        );
        assert!(a.fetch.policy == Policy::Delete && !a.reach.compress);
        assert_eq!(a.reach.timeout, Duration::from_secs(30));
        assert!(matches!(a.login.password, PasswordSource::Command(Command::Argv(_))));
    }

    #[test]
    fn imap_defaults_to_exec_and_transports_pick_ports() {
        let raw = RawAccount { ssh: Some("h".into()), protocol: Some("imap".into()), ..Default::default() };
        let a = resolve("a", &raw, None).unwrap();
        assert_eq!(
            (a.reach.via.clone(), a.fetch.folders.clone(), a.fetch.policy),
            (Via::Exec(None), vec!["INBOX".to_string()], Policy::Delete)
        );
        let raw = RawAccount {
            protocol: Some("imap".into()),
            via: Some("tls".into()),
            server: Some("imap.example.org".into()),
            keep: Some(true),
            ..Default::default()
        };
        let a = resolve("a", &raw, None).unwrap();
        assert_eq!((a.reach.server_port, a.fetch.policy), (993, Policy::Keep));
        let raw = RawAccount {
            protocol: Some("imap".into()),
            tunnel: Some(Command::Argv(vec!["ssh".into(), "h".into(), "imapd".into()])),
            ..Default::default()
        };
        assert!(matches!(resolve("a", &raw, None).unwrap().reach.via, Via::Command(_)));
    }

    #[test]
    fn the_readme_config_example_is_valid() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("```toml\n").expect("README has a TOML example") + 8;
        let end = start + readme[start..].find("```").expect("closed");
        let raw: RawConfig = toml::from_str(&readme[start..end]).expect("README example parses");
        assert!(raw.account.len() >= 3);
        for (name, account) in &raw.account {
            resolve(name, account, None).unwrap_or_else(|e| panic!("README account {name}: {e}"));
        }
        let uni = resolve("uni", &raw.account["uni"], None).unwrap();
        assert_eq!((uni.protocol, uni.fetch.policy), (Protocol::Imap, Policy::Seen));
        assert!(matches!(uni.reach.via, Via::Exec(Some(_))));
    }

    /// Every TOML example in the README (the gateway's and the sender's too).
    #[test]
    fn every_readme_toml_example_is_valid() {
        let readme = include_str!("../../../README.md");
        let mut blocks = 0;
        for part in readme.split("```toml\n").skip(1) {
            let text = &part[..part.find("```").expect("closed")];
            // Without a runtime directory here, a fixed one stands in.
            let text = match runtime_base() {
                Some(_) => text.to_string(),
                None => text.replace("$XDG_RUNTIME_DIR", "/run/user/1000"),
            };
            let raw: RawConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("README example: {e}\n{text}"));
            for (name, account) in &raw.account {
                if let Err(e) = resolve(name, account, None) {
                    panic!("README account {name}: {e}");
                }
            }
            blocks += 1;
        }
        assert!(blocks >= 3, "the README's examples: {blocks}");
    }

    #[test]
    fn delivery_specs() {
        assert_eq!(parse_delivery("mbox:/var/mail/me").unwrap(), Delivery::Mbox("/var/mail/me".into()));
        assert_eq!(parse_delivery("mda:procmail -d %T").unwrap(), Delivery::Mda("procmail -d %T".into()));
        assert_eq!(parse_delivery("smtp:").unwrap(), Delivery::Smtp(Endpoint::Tcp("localhost".into(), 25)));
        assert_eq!(parse_delivery("smtp:mx:2525").unwrap(), Delivery::Smtp(Endpoint::Tcp("mx".into(), 2525)));
        assert_eq!(parse_delivery("lmtp:127.0.0.1:24").unwrap(), Delivery::Lmtp(Endpoint::Tcp("127.0.0.1".into(), 24)));
        assert_eq!(
            parse_delivery("lmtp:/run/dovecot/lmtp").unwrap(),
            Delivery::Lmtp(Endpoint::Unix("/run/dovecot/lmtp".into()))
        );
        for bad in ["lmtp:host", "mbox:", "mda:", "pipe:x", "maildir"] {
            assert!(parse_delivery(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_unknown_keys_and_values() {
        assert!(toml::from_str::<RawConfig>("[account.a]\nssh = \"h\"\npasword = \"x\"\n").is_err());
        let raw = RawAccount { ssh: Some("h".into()), protocol: Some("smtp".into()), ..Default::default() };
        let e = resolve("a", &raw, None).unwrap_err().to_string();
        assert!(e.contains("unknown protocol"), "{e}");
        let raw = RawAccount { ssh: Some("h".into()), policy: Some("seen".into()), ..Default::default() };
        assert!(resolve("a", &raw, None).is_err(), "seen is IMAP only");
        let raw = RawAccount { via: Some("tls".into()), protocol: Some("imap".into()), ..Default::default() };
        assert!(resolve("a", &raw, None).is_err(), "TLS needs a server");
        let raw = RawAccount { ssh: Some("h".into()), deliver: Some("mbox".into()), ..Default::default() };
        assert!(resolve("a", &raw, None).is_err());
    }

    #[test]
    fn owner_only_endpoints_listen_addresses_beyond_loopback_need_the_opt_in() {
        let ok = |s: &str, open: bool| parse_listen(s, "serve.imap", open);
        assert_eq!(ok("tcp:127.0.0.1:1143", false).unwrap(), Listen::Tcp("127.0.0.1:1143".parse().unwrap()));
        assert_eq!(ok("tcp:localhost:1143", false).unwrap(), Listen::Tcp("127.0.0.1:1143".parse().unwrap()));
        assert_eq!(ok("tcp:[::1]:1143", false).unwrap(), Listen::Tcp("[::1]:1143".parse().unwrap()));
        for open in ["tcp:0.0.0.0:1143", "tcp:[::]:1143", "tcp:192.168.1.5:143"] {
            let e = ok(open, false).unwrap_err().to_string();
            assert!(e.contains("serve.open_to_network = true") && e.contains("other hosts"), "{e}");
            assert!(ok(open, true).is_ok(), "{open} with the opt-in");
        }
        for bad in ["tcp:imap.example.org:143", "tcp:127.0.0.1", "tcp:127.0.0.1:0", "udp:x", "unix:relative/sock"] {
            assert!(ok(bad, false).is_err(), "{bad}");
        }
        assert_eq!(ok("unix:/run/x.sock", false).unwrap(), Listen::Unix("/run/x.sock".into()));
        assert!(ok("unix:$HOME/x", false).unwrap_err().to_string().contains("only $XDG_RUNTIME_DIR"));
        // Two endpoints of an account on one address.
        let raw = RawAccount {
            ssh: Some("h".into()),
            serve: Some(RawServe {
                imap: Some("tcp:127.0.0.1:1143".into()),
                pop3: Some("tcp:127.0.0.1:1143".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(resolve("a", &raw, None).unwrap_err().to_string().contains("both listen on"));
    }

    /// Regression: a TOML error showed the offending source line, so a typo
    /// `pasword = "…"` or an unterminated password went to stderr (under
    /// cron, into mail); and the mode was checked only after a good parse.
    #[test]
    fn regression_secrets_stay_secret_config_errors_never_show_the_line() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let cases = [
            "[account.a]\nssh = \"h\"\npasword = \"hunter2\"\n",
            "[account.a]\nssh = \"h\"\npassword = \"hunter2\n",
            "[account.a]\nssh = \"h\"\npassword = hunter2\n",
            "[account.a]\nssh = \"h\"\npassword = 123456789\n",
            "[account.a]\nssh = \"h\"\nmax_message_size = \"hunter2\"\n",
        ];
        for case in cases {
            std::fs::write(&path, case).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let e = load(&path).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, Error::Config(_)), "{msg}");
            assert!(!msg.contains("hunter2") && !msg.contains("123456789"), "the secret was shown: {msg}");
            assert!(msg.contains("line 3"), "no line number: {msg}");
        }
        std::fs::write(&path, cases[0]).unwrap();
        let msg = load(&path).unwrap_err().to_string();
        assert!(msg.contains("pasword"), "the key is named: {msg}");
        // Readable by others and not parseable: the exposure is reported.
        for (case, exit) in [(cases[1], crate::error::Exit::Permissions), (cases[0], crate::error::Exit::Usage)] {
            std::fs::write(&path, case).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = load(&path).unwrap_err();
            assert_eq!(e.exit(), exit, "{e}");
            assert!(e.to_string().contains("chmod 600"), "{e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn secrets_stay_secret_config_password_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[account.a]\nssh = \"h\"\npassword = \"hunter2\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&path).unwrap_err();
        assert!(matches!(e, Error::Permissions(_)));
        assert_eq!(e.exit().code(), 6);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let raw = load(&path).unwrap();
        let a = resolve("a", &raw.account["a"], None).unwrap();
        assert!(!format!("{a:?}").contains("hunter2"));
    }
}
