//! The config file as written: every field optional, strings as the user
//! typed them; loading refuses a readable file that holds a password, and a
//! parse error never echoes a line that may hold one.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
    /// Mail clients in session at once, over every endpoint and tunnel;
    /// default 512.
    pub max_clients: Option<u64>,
    /// Desktop notifications of new mail, for accounts that set no
    /// `notify`; default false.
    pub notify: Option<bool>,
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
    /// Gateway sessions at once; more clients wait to be accepted.
    pub max_clients: usize,
    /// Desktop notifications for accounts that set no `notify`.
    pub notify: bool,
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
            max_clients: match self.max_clients.unwrap_or(512) {
                0 => return Err(Error::Config("[daemon] max_clients must be at least 1".into())),
                n => usize::try_from(n).unwrap_or(usize::MAX),
            },
            notify: self.notify.unwrap_or(false),
        })
    }
}

/// One account as written. Every field is optional here; [`resolve`] checks.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    pub ssh: Option<String>,
    pub protocol: Option<String>,
    pub via: Option<String>,
    pub imapd: Option<Command>,
    pub tunnel: Option<Command>,
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
    pub ssh_control_path: Option<String>,
    pub ssh_control_fallback: Option<bool>,
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
    /// Run after each batch of new mail is durable and recorded.
    pub on_new: Option<Command>,
    /// `on_new` per folder, in place of the account's (`[]`: none there).
    pub on_new_folders: Option<std::collections::BTreeMap<String, Command>>,
    /// Run after the relay accepted a message sent through the account.
    pub on_sent: Option<Command>,
    /// Seconds a hook may run before it is ended (30).
    pub hook_timeout: Option<u64>,
    /// The daemon shows a desktop notification for new mail.
    pub notify: Option<bool>,
    /// Folders whose new mail is never announced (`*` matches any run of
    /// characters).
    pub notify_skip_folders: Option<Vec<String>>,
    /// Messages with a header field like these (`Name` or `Name: text`)
    /// are never announced.
    pub notify_skip_headers: Option<Vec<String>>,
}

impl RawAccount {
    /// This account with the values `over` gives (a command's flags) in
    /// place of its own.
    pub fn over(&self, over: &RawAccount) -> RawAccount {
        let mut m = self.clone();
        macro_rules! take {
        ($($f:ident),*) => { $( if over.$f.is_some() { m.$f = over.$f.clone(); } )* };
    }
        take!(
            protocol,
            server,
            user,
            auth,
            keep,
            fetch_all,
            compress,
            deliver,
            identity,
            known_hosts,
            host_key_policy,
            timeout,
            via,
            imapd,
            tunnel,
            folders,
            policy,
            only_unseen,
            tls_ca_file,
            tls_fingerprint,
            accept_uidvalidity_change,
            max_message_size,
            interval,
            received,
            recipient,
            maildir_subfolders,
            fetch
        );
        if over.policy.is_some() {
            m.keep = None;
        }
        if over.keep.is_some() {
            m.policy = None;
        }
        if over.password_command.is_some() {
            m.password = None;
            m.password_command = over.password_command.clone();
        }
        m
    }
}

/// An account's `send` table as written.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
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

/// An account's `serve` table as written: local endpoints for mail
/// clients, each `unix:PATH` or `tcp:HOST:PORT`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
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

/// A command: a string run by `/bin/sh -c`, or an argument vector run as is.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
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
pub(super) fn mentions_password(text: &str) -> bool {
    text.lines().any(|line| {
        let Some((key, _)) = line.split_once('=') else { return false };
        key.rsplit('.').next().map(|k| k.trim().trim_matches(['"', '\'', '{', ' '])) == Some("password")
    })
}

/// A TOML error as `line L, column C: message (key K)`, without the source
/// line. Quoted words in the message are kept only where they cannot be a
/// value: the key at that line and the schema's list after "expected".
pub(super) fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
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
