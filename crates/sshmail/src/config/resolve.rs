//! From the account as written to the account resolved: typed, checked
//! values and every default, in one place.

use std::time::Duration;

use super::*;
use crate::error::{Error, Result};
use crate::secret::Secret;

/// How to reach an account's mail server, as configured; [`Route::of`]
/// completes the SSH parts from `~/.ssh/config`.
#[derive(Debug, Clone)]
pub(super) struct Reach {
    /// The SSH host to go through.
    pub(super) ssh: SshDestination,
    /// Identity files given for this account (before ~/.ssh/config's).
    pub(super) identities: Vec<PathBuf>,
    /// A known_hosts file given for this account.
    pub(super) known_hosts: Option<PathBuf>,
    /// Unknown host key policy, if the account sets one.
    pub(super) host_key_policy: Option<HostKeyPolicy>,
    /// Password for SSH password / keyboard-interactive login, if asked for.
    pub(super) ssh_password: PasswordSource,
    /// Ask for SSH compression.
    pub(super) compress: bool,
    /// The OpenSSH master to ride (`ssh_control_path`), if the account
    /// names one.
    pub(super) control_path: Option<PathBuf>,
    /// Whether to connect on its own when no master answers
    /// (`ssh_control_fallback`), if the account says.
    pub(super) control_fallback: Option<bool>,
    /// How the stream to the mail server is made.
    pub(super) via: Via,
    /// The mail server as seen from the SSH host.
    pub(super) server_host: String,
    /// Its port.
    pub(super) server_port: u16,
    /// TLS settings.
    pub(super) tls: TlsSettings,
    /// IMAP: accept a PREAUTH greeting on a network port (forward, tls).
    pub(super) allow_preauth: bool,
    /// How long any single wait may take.
    pub(super) timeout: Duration,
}

/// What an account is resolved with besides itself.
#[derive(Default, Clone, Copy)]
pub struct Resolving<'a> {
    /// The state directory the file (or the command line) gives.
    pub state_dir: Option<&'a str>,
    /// `~/.ssh/config`, read.
    pub ssh_config: Option<&'a ssh2_config::SshConfig>,
    /// The `[daemon] interval`, for accounts that set none.
    pub interval: Option<Duration>,
    /// The `[daemon] notify`, for accounts that set none.
    pub notify: bool,
}

/// Resolves one raw account: typed values, defaults, its route with
/// `~/.ssh/config` applied, and the mail login defaulted to the SSH user.
pub fn resolve(name: &str, raw: &RawAccount, given: &Resolving<'_>) -> Result<Account> {
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
    let reach = Reach {
        ssh,
        identities: raw.identity.iter().flatten().map(|s| expand_tilde(s)).collect(),
        known_hosts: raw.known_hosts.as_deref().map(expand_tilde),
        host_key_policy,
        ssh_password,
        compress: raw.compress.unwrap_or(false),
        control_path: raw.ssh_control_path.as_deref().map(expand_tilde),
        control_fallback: raw.ssh_control_fallback,
        via,
        server_host,
        server_port,
        tls: TlsSettings {
            ca_file: raw.tls_ca_file.as_deref().map(expand_tilde),
            fingerprint: raw.tls_fingerprint.clone(),
        },
        allow_preauth: raw.allow_preauth.unwrap_or(false),
        timeout: Duration::from_secs(timeout),
    };
    let route = Route::of(&reach, given.ssh_config).map_err(|e| ctx(e.to_string()))?;
    // The mail login defaults to the SSH user, as documented.
    let user = match &route.ssh {
        Some((t, _)) if !user_given => t.user.clone(),
        _ => user,
    };
    let interval = match raw.interval {
        Some(secs) => Duration::from_secs(secs.max(1)),
        None => given.interval.unwrap_or(Duration::from_secs(300)),
    };
    Ok(Account {
        name: name.to_string(),
        adhoc: false,
        protocol,
        route,
        login: Login { user, user_given, password, auth },
        fetch: FetchPolicy {
            policy,
            folders,
            only_unseen: raw.only_unseen.unwrap_or(false),
            fetch_all: raw.fetch_all.unwrap_or(false),
            max_message_size: raw.max_message_size.unwrap_or(1 << 30),
            allow_expunge_all: raw.allow_expunge_all.unwrap_or(false),
            accept_uidvalidity_change: raw.accept_uidvalidity_change.unwrap_or(false),
            interval,
            enabled: raw.fetch.unwrap_or(true),
        },
        delivery: Deliver {
            to: deliver,
            received: raw.received.unwrap_or(true),
            recipient: raw.recipient.clone().unwrap_or_else(local_user),
            maildir_subfolders: raw.maildir_subfolders.unwrap_or(false),
        },
        state_dir: given.state_dir.map(expand_tilde).unwrap_or_else(default_state_dir),
        serve,
        send,
        hooks: resolve_hooks(raw, given.notify).map_err(|e| ctx(e.to_string()))?,
    })
}

/// An account's hooks, checked: a command must name a program; an empty
/// one in `on_new_folders` means no hook for that folder.
fn resolve_hooks(raw: &RawAccount, given_notify: bool) -> Result<super::account::Hooks> {
    let empty = |c: &Command| match c {
        Command::Argv(v) => v.is_empty(),
        Command::Shell(s) => s.trim().is_empty(),
    };
    let checked = |c: &Option<Command>, key: &str| match c {
        Some(c) if empty(c) => Err(Error::Config(format!("`{key}` is an empty command"))),
        other => Ok(other.clone()),
    };
    let on_new_folders = raw
        .on_new_folders
        .iter()
        .flatten()
        .map(|(folder, c)| (folder.clone(), (!empty(c)).then(|| c.clone())))
        .collect();
    let timeout = match raw.hook_timeout {
        Some(0) => return Err(Error::Config("`hook_timeout` must be at least 1 second".into())),
        Some(s) => Duration::from_secs(s),
        None => Duration::from_secs(30),
    };
    Ok(super::account::Hooks {
        on_new: checked(&raw.on_new, "on_new")?,
        on_new_folders,
        on_sent: checked(&raw.on_sent, "on_sent")?,
        timeout,
        notify: raw.notify.unwrap_or(given_notify),
        notify_skip_folders: raw.notify_skip_folders.clone().unwrap_or_default(),
        notify_skip_headers: raw.notify_skip_headers.clone().unwrap_or_default(),
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
