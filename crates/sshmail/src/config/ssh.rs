//! Where and how to connect: an account's SSH destination with
//! `~/.ssh/config` applied.
//!
//! Precedence is OpenSSH's: what the account (or the command line) says wins,
//! then the first matching value in `~/.ssh/config`, then defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh2_config::{ParseRule, SshConfig};

use super::resolve::Reach;
use super::{HostKeyPolicy, PasswordSource, SshDestination, expand_tilde, home};
use crate::error::{Error, Result};

/// A resolved SSH connection target.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// The host to connect to (HostName).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The login user.
    pub user: String,
    /// Identity files to try, in order.
    pub identities: Vec<PathBuf>,
    /// Use only the listed identities, also from the agent.
    pub identities_only: bool,
    /// known_hosts files to consult; the first is where new keys are written.
    pub known_hosts: Vec<PathBuf>,
    /// Unknown host key policy.
    pub policy: HostKeyPolicy,
    /// Ask for zlib compression.
    pub compress: bool,
    /// Per-wait timeout (connecting, a channel opening, a mail server's reply).
    pub timeout: Duration,
    /// How long the TCP connection may take (`ConnectTimeout`, else
    /// `timeout`).
    pub connect_timeout: Duration,
    /// SSH keepalive interval (`ServerAliveInterval`, default 4 s): a frozen
    /// link is given up after `alive_max` unanswered ones, whatever `timeout`
    /// allows a slow but alive mail server.
    pub alive_interval: Duration,
    /// Unanswered keepalives before the link is dropped
    /// (`ServerAliveCountMax`, default 2).
    pub alive_max: usize,
    /// Password for password / keyboard-interactive, if the account gives one.
    pub password: PasswordSource,
    /// Hosts to jump through first (ProxyJump), outermost first.
    pub jumps: Vec<SshDestination>,
    /// `HostKeyAlias`: the name the host key is looked up and recorded
    /// under in known_hosts, instead of `[host]:port`.
    pub host_key_alias: Option<String>,
    /// The ssh-agent's socket: `IdentityAgent` (a path, `SSH_AUTH_SOCK`,
    /// or `none`), else `$SSH_AUTH_SOCK`; None: no agent.
    pub agent: Option<PathBuf>,
    /// `ProxyCommand`, its `%h %p %r %n %%` expanded: run by `/bin/sh -c`,
    /// its stdin and stdout are the connection to the SSH server.
    pub proxy_command: Option<String>,
    /// Directives set for this host that sshmail reads but does not
    /// honour, with what it does instead (for doctor's warnings).
    pub unhonoured: Vec<(&'static str, &'static str)>,
    /// `UpdateHostKeys`: learn the server's other host keys into
    /// known_hosts (`yes`; by default only with the default known_hosts
    /// files, as OpenSSH; `ask` and `no` do not).
    pub update_host_keys: bool,
    /// `CertificateFile`: an OpenSSH user certificate for one of the
    /// identities (besides each identity's own `KEY-cert.pub`).
    pub certificate: Option<PathBuf>,
    /// The OpenSSH master whose socket channels go through
    /// (`ssh_control_path`, else ssh_config's `ControlPath`, tokens
    /// expanded), instead of a connection of our own.
    pub control_path: Option<PathBuf>,
    /// When no master answers there, connect on our own (default: yes for
    /// ssh_config's `ControlPath`, which `ssh` itself treats so; no for
    /// `ssh_control_path`, which asks for the master).
    pub control_fallback: bool,
    /// The algorithms offered: sshmail's defaults as ssh_config changes
    /// them.
    pub algorithms: super::algorithms::Algorithms,
}

/// `ServerAliveInterval` when ssh_config does not set it. A link silent for
/// an interval gets a keepalive; it is dropped at the interval after
/// `alive_max` unanswered ones: a frozen link is noticed within
/// `(alive_max + 1) × interval`, 12 s by default.
pub const DEFAULT_ALIVE_INTERVAL: Duration = Duration::from_secs(4);
/// `ServerAliveCountMax` when ssh_config does not set it.
pub const DEFAULT_ALIVE_MAX: usize = 2;

impl SshTarget {
    /// `user@host:port`, for messages.
    pub fn name(&self) -> String {
        super::user_at(&self.user, &self.host, self.port)
    }

    /// The host and port known_hosts knows this host by: the
    /// `HostKeyAlias` alone (without a port, as OpenSSH looks it up), else
    /// the host and port connected to.
    pub fn known_as(&self) -> (&str, u16) {
        match &self.host_key_alias {
            Some(alias) => (alias, 22),
            None => (&self.host, self.port),
        }
    }
}

/// Loads `~/.ssh/config` if it exists. A broken file is an error, not ignored.
pub fn load_ssh_config(path: Option<&Path>) -> Result<Option<SshConfig>> {
    let default = home().join(".ssh/config");
    let path = path.unwrap_or(&default);
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Config(format!("cannot read {}: {e}", path.display())));
        }
    };
    let mut reader = std::io::BufReader::new(file);
    SshConfig::default()
        .default_algorithms(super::algorithms::defaults())
        .parse(&mut reader, ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS)
        .map(Some)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// Resolves the SSH destination of `reach` against an ssh config.
pub(super) fn resolve(reach: &Reach, ssh_config: Option<&SshConfig>) -> Result<SshTarget> {
    resolve_destination(&reach.ssh, ssh_config, reach)
}

fn resolve_destination(dest: &SshDestination, ssh_config: Option<&SshConfig>, reach: &Reach) -> Result<SshTarget> {
    let params = ssh_config.map(|c| c.query(&dest.host));
    let first =
        |key: &str| -> Option<String> { params.as_ref()?.unsupported_fields.get(key).and_then(|v| v.first()).cloned() };
    let host = params.as_ref().and_then(|p| p.host_name.clone()).unwrap_or_else(|| dest.host.clone());
    let port = dest.port.or(params.as_ref().and_then(|p| p.port)).unwrap_or(22);
    let user = dest
        .user
        .clone()
        .or(params.as_ref().and_then(|p| p.user.clone()))
        .unwrap_or_else(|| std::env::var("USER").unwrap_or_else(|_| "root".into()));
    let mut identities = reach.identities.clone();
    if let Some(files) = params.as_ref().and_then(|p| p.identity_file.clone()) {
        identities.extend(files.iter().map(|p| expand_tilde(&p.to_string_lossy())));
    }
    let identities_only = first("identitiesonly").is_some_and(|v| v.eq_ignore_ascii_case("yes"));
    let mut known_hosts = Vec::new();
    if let Some(f) = &reach.known_hosts {
        known_hosts.push(f.clone());
    } else if let Some(list) = params.as_ref().and_then(|p| p.unsupported_fields.get("userknownhostsfile")) {
        known_hosts.extend(list.iter().filter(|s| *s != "none").map(|s| expand_tilde(s)));
    }
    let default_known_hosts = known_hosts.is_empty();
    if known_hosts.is_empty() {
        known_hosts.push(home().join(".ssh/known_hosts"));
        known_hosts.push(home().join(".ssh/known_hosts2"));
    }
    if reach.known_hosts.is_none() {
        known_hosts.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
    }
    let policy = match reach.host_key_policy {
        Some(p) => p,
        None => match first("stricthostkeychecking").as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("accept-new") => HostKeyPolicy::AcceptNew,
            Some("no" | "off") => {
                // We never accept a changed key; "no" only means "accept new".
                HostKeyPolicy::AcceptNew
            }
            _ => HostKeyPolicy::Strict,
        },
    };
    let compress = reach.compress || params.as_ref().and_then(|p| p.compression).unwrap_or(false);
    let alive_interval = params
        .as_ref()
        .and_then(|p| p.server_alive_interval)
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_ALIVE_INTERVAL);
    let alive_max = match first("serveralivecountmax") {
        None => DEFAULT_ALIVE_MAX,
        Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            Error::Config(format!(
                "~/.ssh/config: ServerAliveCountMax {v:?} for {} is not a positive number",
                dest.host
            ))
        })?,
    };
    let proxy_command = params
        .as_ref()
        .and_then(|p| p.unsupported_fields.get("proxycommand"))
        .map(|words| shell_words(words))
        .filter(|c| !c.eq_ignore_ascii_case("none"))
        .map(|c| expand_tokens(&c, &host, port, &user, &dest.host));
    let jumps = match params.as_ref().and_then(|p| p.proxy_jump.clone()) {
        Some(list) if !list.iter().any(|j| j == "none") => {
            list.iter().map(|j| SshDestination::parse(j)).collect::<Result<Vec<_>>>()?
        }
        _ => Vec::new(),
    };
    let (control_path, control_fallback) = match &reach.control_path {
        Some(path) => (Some(path.clone()), reach.control_fallback.unwrap_or(false)),
        None => {
            let jump = params.as_ref().and_then(|p| p.proxy_jump.clone()).map(|j| j.join(",")).unwrap_or_default();
            let path = first("controlpath")
                .filter(|v| !v.eq_ignore_ascii_case("none"))
                .map(|v| expand_tilde(&control_path_tokens(&v, &host, port, &user, &dest.host, &jump)));
            (path, reach.control_fallback.unwrap_or(true))
        }
    };
    if proxy_command.is_some() && !jumps.is_empty() {
        return Err(Error::Config(format!(
            "~/.ssh/config gives {} both ProxyJump and ProxyCommand; OpenSSH uses the one it reads first — keep one",
            dest.host
        )));
    }
    Ok(SshTarget {
        host,
        port,
        user,
        identities,
        identities_only,
        known_hosts,
        policy,
        compress,
        timeout: reach.timeout,
        connect_timeout: params
            .as_ref()
            .and_then(|p| p.connect_timeout)
            .filter(|d| !d.is_zero())
            .unwrap_or(reach.timeout),
        alive_interval,
        alive_max,
        password: reach.ssh_password.clone(),
        jumps,
        host_key_alias: first("hostkeyalias"),
        proxy_command,
        agent: agent_socket(first("identityagent").as_deref()),
        unhonoured: params.as_ref().map(super::ssh_directives::unhonoured).unwrap_or_default(),
        control_path,
        control_fallback,
        update_host_keys: match first("updatehostkeys").as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("yes") => true,
            Some(_) => false,
            None => default_known_hosts,
        },
        certificate: params
            .as_ref()
            .and_then(|p| p.certificate_file.as_ref())
            .map(|p| expand_tilde(&p.to_string_lossy())),
        algorithms: match &params {
            Some(p) => super::algorithms::Algorithms::of(p, &dest.host)?,
            None => super::algorithms::Algorithms::default(),
        },
    })
}

/// A command ssh_config split into words, as one shell line again: a word
/// that held spaces (it was quoted) is quoted again; the rest, shell syntax
/// included, goes as written.
fn shell_words(words: &[String]) -> String {
    let quoted: Vec<String> = words
        .iter()
        .map(|w| {
            if w.is_empty() || w.contains(char::is_whitespace) {
                format!("'{}'", w.replace('\'', "'\\''"))
            } else {
                w.clone()
            }
        })
        .collect();
    quoted.join(" ")
}

/// OpenSSH's tokens in a ProxyCommand: `%h` the host name connected to,
/// `%p` the port, `%r` the user, `%n` the host as given, `%%` a `%`.
fn expand_tokens(command: &str, host: &str, port: u16, user: &str, given: &str) -> String {
    let port = port.to_string();
    expand(command, &[('h', host), ('p', &port), ('r', user), ('n', given)])
}

/// OpenSSH's tokens in a ControlPath: those of a ProxyCommand, and `%C`
/// (the SHA-1 of `%l%h%p%r`, as OpenSSH 9.2 makes it), `%l` and `%L` (this
/// machine's name, whole and first part), `%u` (the local user), `%i`
/// (the uid), `%d` (the home directory), `%j` (the ProxyJump hops).
fn control_path_tokens(path: &str, host: &str, port: u16, user: &str, given: &str, jump: &str) -> String {
    use sha1::Digest as _;
    let port = port.to_string();
    let local = gethostname::gethostname().to_string_lossy().into_owned();
    let short = local.split('.').next().unwrap_or_default().to_string();
    let hash: String = sha1::Sha1::digest(format!("{local}{host}{port}{user}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let me = std::env::var("USER").unwrap_or_default();
    let uid = rustix::process::getuid().as_raw().to_string();
    let home = home().display().to_string();
    expand(
        path,
        &[
            ('h', host),
            ('p', &port),
            ('r', user),
            ('n', given),
            ('C', &hash),
            ('l', &local),
            ('L', &short),
            ('u', &me),
            ('i', &uid),
            ('d', &home),
            ('j', jump),
        ],
    )
}

/// `text` with each `%X` of `tokens` replaced, `%%` a `%`; an unknown
/// token stays as written.
fn expand(text: &str, tokens: &[(char, &str)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(t) => match tokens.iter().find(|(k, _)| *k == t) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push('%');
                    out.push(t);
                }
            },
            None => out.push('%'),
        }
    }
    out
}

/// The agent socket `IdentityAgent` names (`none`: no agent;
/// `SSH_AUTH_SOCK`, `$VAR` or `${VAR}`: that variable's value; a path, `~`
/// expanded), or without it `$SSH_AUTH_SOCK`, as OpenSSH reads them.
fn agent_socket(identity_agent: Option<&str>) -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let value = match identity_agent {
        None => return var("SSH_AUTH_SOCK"),
        Some(v) => v.trim_matches('"'),
    };
    if value.eq_ignore_ascii_case("none") {
        return None;
    }
    if value == "SSH_AUTH_SOCK" {
        return var("SSH_AUTH_SOCK");
    }
    if let Some(name) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')).or_else(|| value.strip_prefix('$')) {
        return var(name);
    }
    Some(expand_tilde(value))
}

/// Resolves a ProxyJump hop: its own `~/.ssh/config` entry, the account's
/// known_hosts and policy, no jumps of its own (one level, like `-J a,b`
/// flattened by the caller).
pub(super) fn resolve_jump(dest: &SshDestination, ssh_config: Option<&SshConfig>, reach: &Reach) -> Result<SshTarget> {
    let mut t = resolve_destination(dest, ssh_config, reach)?;
    t.jumps.clear();
    // A master, when there is one, carries the whole way.
    t.control_path = None;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawAccount, Resolving, resolve as resolve_account};

    /// The SSH target of `raw`, `cfg` applied.
    fn target(raw: &RawAccount, cfg: Option<&SshConfig>) -> Result<SshTarget> {
        let given = Resolving { ssh_config: cfg, ..Resolving::default() };
        Ok(resolve_account("a", raw, &given)?.route.ssh.expect("an SSH route").0)
    }

    fn parse(text: &str) -> SshConfig {
        SshConfig::default()
            .default_algorithms(crate::config::algorithms::defaults())
            .parse(&mut text.as_bytes(), ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS)
            .unwrap()
    }

    #[test]
    fn ssh_config_supplies_what_the_account_leaves_open() {
        let cfg = parse(
            "Host mail\n  HostName shell.example.org\n  User alice\n  Port 2222\n  IdentityFile /keys/id_mail\n  IdentitiesOnly yes\n  UserKnownHostsFile /kh/one /kh/two\n  StrictHostKeyChecking accept-new\n  Compression yes\n",
        );
        let raw = RawAccount { ssh: Some("mail".into()), ..Default::default() };
        let t = target(&raw, Some(&cfg)).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.user.as_str()), ("shell.example.org", 2222, "alice"));
        assert_eq!(t.identities, vec![PathBuf::from("/keys/id_mail")]);
        assert!(t.identities_only && t.compress);
        assert_eq!(t.known_hosts[..2], [PathBuf::from("/kh/one"), PathBuf::from("/kh/two")]);
        assert_eq!(t.policy, HostKeyPolicy::AcceptNew);
        assert_eq!((t.alive_interval, t.alive_max), (DEFAULT_ALIVE_INTERVAL, DEFAULT_ALIVE_MAX));
    }

    #[test]
    fn keepalives_come_from_ssh_config() {
        let cfg = parse("Host mail\n  ServerAliveInterval 7\n  ServerAliveCountMax 4\n");
        let raw = RawAccount { ssh: Some("mail".into()), ..Default::default() };
        let t = target(&raw, Some(&cfg)).unwrap();
        assert_eq!((t.alive_interval, t.alive_max), (Duration::from_secs(7), 4));
        let cfg = parse("Host mail\n  ServerAliveCountMax many\n");
        assert!(target(&raw, Some(&cfg)).unwrap_err().to_string().contains("ServerAliveCountMax"));
    }

    #[test]
    fn proxy_command_tokens_are_expanded_and_quoted_words_stay_whole() {
        assert_eq!(
            expand_tokens("ssh -W %h:%p %r@gw # %n %% %x", "mail.example.org", 2222, "me", "mail"),
            "ssh -W mail.example.org:2222 me@gw # mail % %x"
        );
        let words = ["sh".to_string(), "-c".into(), "nc %h %p".into(), "|".into(), "cat".into()];
        assert_eq!(shell_words(&words), "sh -c 'nc %h %p' | cat");
        let cfg = parse("Host mail\n  HostName m.example.org\n  ProxyCommand ssh -W %h:%p gw\n");
        let raw = RawAccount { ssh: Some("me@mail".into()), ..Default::default() };
        assert_eq!(target(&raw, Some(&cfg)).unwrap().proxy_command.as_deref(), Some("ssh -W m.example.org:22 gw"));
        let both = parse("Host mail\n  ProxyCommand nc %h %p\n  ProxyJump gw\n");
        assert!(target(&raw, Some(&both)).unwrap_err().to_string().contains("keep one"));
    }

    #[test]
    fn identity_agent_is_a_path_a_variable_or_none() {
        assert_eq!(agent_socket(Some("none")), None);
        assert_eq!(agent_socket(Some("/run/agent.sock")), Some(PathBuf::from("/run/agent.sock")));
        assert_eq!(agent_socket(Some("\"~/.1password/agent.sock\"")), Some(home().join(".1password/agent.sock")));
        assert_eq!(agent_socket(Some("$SSHMAIL_NO_SUCH_VARIABLE")), None);
        let cfg = parse("Host mail\n  IdentityAgent none\n");
        let raw = RawAccount { ssh: Some("mail".into()), ..Default::default() };
        assert_eq!(target(&raw, Some(&cfg)).unwrap().agent, None);
    }

    #[test]
    fn account_wins_over_ssh_config() {
        let cfg = parse("Host mail\n  User alice\n  Port 2222\n  StrictHostKeyChecking accept-new\n");
        let raw = RawAccount {
            ssh: Some("bob@mail:22".into()),
            host_key_policy: Some("strict".into()),
            known_hosts: Some("/my/kh".into()),
            ..Default::default()
        };
        let t = target(&raw, Some(&cfg)).unwrap();
        assert_eq!((t.user.as_str(), t.port, t.policy), ("bob", 22, HostKeyPolicy::Strict));
        assert_eq!(t.known_hosts, vec![PathBuf::from("/my/kh")]);
    }
}
