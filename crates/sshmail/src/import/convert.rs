//! From a parsed `.fetchmailrc` to sshmail accounts. The SSH recipes are
//! recognised: a `preconnect` that opens `ssh -L` for a poll of localhost
//! becomes a forward account; a `plugin` running a remote imapd through ssh
//! becomes an exec account. Whatever has no counterpart is a warning that
//! names its line.

use std::collections::BTreeSet;

use super::rc::{At, Opt, Poll, Rc, User};
use crate::config::{Command, RawAccount};
use crate::deliver::mda::split_words;

/// One account: the config's own raw type, so that a renamed key breaks
/// the build here, not only the output's check.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Account {
    /// `[account.NAME]`.
    pub name: String,
    /// Where it came from, for the comment above it.
    pub origin: String,
    /// The account as it is written.
    pub raw: RawAccount,
    /// Comments written below the table's keys.
    pub notes: Vec<String>,
}

/// The import: accounts, daemon interval, warnings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Converted {
    /// `[daemon] interval`.
    pub daemon_interval: Option<u64>,
    /// The accounts.
    pub accounts: Vec<Account>,
    /// One line each: `line N: option: why it is not carried over`.
    pub warnings: Vec<String>,
}

impl Converted {
    fn warn(&mut self, line: usize, what: &str, why: impl std::fmt::Display) {
        self.warnings.push(format!("line {line}: {what}: {why}"));
    }

    /// True if some account holds a password.
    pub fn has_password(&self) -> bool {
        self.accounts.iter().any(|a| a.raw.password.is_some())
    }
}

/// Options whose fetchmail meaning is what sshmail does anyway.
const SAME: &[&str] = &[
    "no rewrite",
    "no mimedecode",
    "no forcecr",
    "no stripcr",
    "no pass8bits",
    "no dropstatus",
    "no dropdelivered",
    "no flush",
    "no limitflush",
    "no fetchall",
    "no idle",
    "no lmtp",
    "no ssl",
    "uidl",
    "no uidl",
    "dns",
    "no dns",
    "no checkalias",
    "no tracepolls",
    "no envelope",
    "stripcr",
    "dropdelivered",
    "fastuidl",
    "fetchsizelimit",
    "warnings",
];

/// Converts what the rc says.
pub fn convert(rc: &Rc) -> Converted {
    let mut out = Converted { daemon_interval: rc.daemon, ..Converted::default() };
    for (line, note) in &rc.lenient {
        out.warnings.push(format!("line {line}: {note}"));
    }
    if let Some(f) = &rc.logfile {
        out.warn(
            f.line,
            "set logfile",
            "not carried over: sshmail logs to stderr (the journal, under systemd), or to syslog with `sshmail \
             daemon --syslog`",
        );
    }
    if let Some(s) = rc.syslog.as_ref().filter(|s| s.value) {
        out.warn(s.line, "set syslog", "not a config key: run `sshmail daemon --syslog`");
    }
    for o in &rc.other {
        let why = match o.name.as_str() {
            "set idfile" => {
                "sshmail keeps its own ledger of what it delivered (under state_dir); fetchmail's is not read"
                    .to_string()
            }
            "set pidfile" => "the daemon's lock is $XDG_RUNTIME_DIR/sshmail".into(),
            "set postmaster" | "set bouncemail" | "set no bouncemail" | "set spambounce" | "set no spambounce"
            | "set softbounce" | "set no softbounce" => {
                "sshmail never bounces: a refused delivery leaves the message on the server".into()
            }
            _ => "not carried over".into(),
        };
        out.warn(o.line, &o.name, why);
    }
    let mut names = BTreeSet::new();
    for poll in &rc.polls {
        let several = poll.users.len() > 1;
        for user in &poll.users {
            if let Some(mut a) = account(poll, user, rc.daemon, &mut out) {
                let mut base = a.name.clone();
                if several {
                    base = format!("{base}-{}", user.remote.as_deref().unwrap_or("user"));
                }
                let mut name = base.clone();
                let mut n = 2;
                while !names.insert(name.clone()) {
                    name = format!("{base}-{n}");
                    n += 1;
                }
                a.name = name;
                out.accounts.push(a);
            }
        }
    }
    out
}

/// What a `preconnect` or `plugin` ssh command line says.
#[derive(Debug, Default)]
struct SshCall {
    dest: String,
    user: Option<String>,
    port: Option<String>,
    compress: bool,
    identities: Vec<String>,
    /// `-L [bind:]LPORT:HOST:PORT`, as (LPORT, HOST, PORT).
    forwards: Vec<(String, String, String)>,
    /// Options not carried over, as written.
    dropped: Vec<String>,
    /// The remote command.
    command: Vec<String>,
}

impl SshCall {
    /// Parses `ssh [options] destination [command]`; `None` if the command
    /// is not ssh.
    fn parse(words: &[String]) -> Option<SshCall> {
        let prog = words.first()?;
        if prog.rsplit('/').next() != Some("ssh") {
            return None;
        }
        let mut call = SshCall::default();
        let mut i = 1;
        while i < words.len() {
            let w = &words[i];
            i += 1;
            if w == "--" {
                break;
            }
            // As OpenSSH's, options may come before and after the destination;
            // the first word after it that is not an option starts the command.
            let Some(flags) = w.strip_prefix('-').filter(|f| !f.is_empty()) else {
                if call.dest.is_empty() {
                    call.dest = w.clone();
                    continue;
                }
                i -= 1;
                break;
            };
            for (at, c) in flags.char_indices() {
                // Options with an argument take the rest of the word or the next word.
                if "BbcDEeFIiJLlmOopQRSWw".contains(c) {
                    let rest = &flags[at + c.len_utf8()..];
                    let arg = if rest.is_empty() {
                        let a = words.get(i).cloned().unwrap_or_default();
                        i += 1;
                        a
                    } else {
                        rest.to_string()
                    };
                    match c {
                        'l' => call.user = Some(arg),
                        'p' => call.port = Some(arg),
                        'i' => call.identities.push(arg),
                        'L' => {
                            let parts: Vec<&str> = arg.split(':').collect();
                            let n = parts.len();
                            if n >= 3 {
                                call.forwards.push((
                                    parts[n - 3].to_string(),
                                    parts[n - 2].to_string(),
                                    parts[n - 1].to_string(),
                                ));
                            } else {
                                call.dropped.push(format!("-L {arg}"));
                            }
                        }
                        'o' if arg.eq_ignore_ascii_case("compression=yes") => call.compress = true,
                        'o' if arg.to_ascii_lowercase().starts_with("port=") => call.port = Some(arg[5..].to_string()),
                        'o' if arg.to_ascii_lowercase().starts_with("user=") => call.user = Some(arg[5..].to_string()),
                        _ => call.dropped.push(format!("-{c} {arg}")),
                    }
                    break;
                }
                match c {
                    'C' => call.compress = true,
                    // Background, no command, quiet, no tty, address family, verbosity.
                    'f' | 'N' | 'n' | 'q' | 'T' | 't' | 'x' | '4' | '6' | 'v' => {}
                    c => call.dropped.push(format!("-{c}")),
                }
            }
        }
        call.command = words[i.min(words.len())..].to_vec();
        if call.dest.is_empty() {
            return None;
        }
        if let Some((u, h)) = call.dest.rsplit_once('@') {
            call.user.get_or_insert_with(|| u.to_string());
            call.dest = h.to_string();
        }
        Some(call)
    }

    /// `[user@]host[:port]` for the `ssh` key.
    fn destination(&self) -> String {
        let mut s = String::new();
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        if self.dest.contains(':') {
            s.push_str(&format!("[{}]", self.dest));
        } else {
            s.push_str(&self.dest);
        }
        if let Some(p) = &self.port {
            s.push(':');
            s.push_str(p);
        }
        s
    }

    fn apply(&self, a: &mut Account, out: &mut Converted, line: usize, what: &str) {
        a.raw.ssh = Some(self.destination());
        if self.compress {
            a.raw.compress = Some(true);
        }
        if !self.identities.is_empty() {
            a.raw.identity = Some(self.identities.clone());
        }
        for d in &self.dropped {
            out.warn(
                line,
                what,
                format!(
                    "ssh option {d} not carried over: sshmail reads ~/.ssh/config, so put it there under `Host {}`",
                    self.dest
                ),
            );
        }
    }
}

fn is_local(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1" | "ip6-localhost")
}

/// A port from fetchmail's `port`/`service`.
fn port_of(service: &str) -> Option<u16> {
    match service {
        "pop3" | "pop-3" => Some(110),
        "pop3s" => Some(995),
        "imap" | "imap2" => Some(143),
        "imaps" => Some(993),
        s => s.parse().ok(),
    }
}

fn account(poll: &Poll, user: &User, daemon: Option<u64>, out: &mut Converted) -> Option<Account> {
    let host = poll.via.as_ref().map_or(poll.name.as_str(), |v| v.value.as_str());
    let mut a = Account {
        name: poll.name.clone(),
        origin: format!("line {}: poll {}", poll.line, poll.name),
        ..Account::default()
    };
    if poll.skip {
        a.origin = format!("line {}: skip {}", poll.line, poll.name);
        a.raw.fetch = Some(false);
        a.notes.push("`skip` in fetchmail: kept, but not fetched until `fetch = false` is removed".into());
    }

    // The protocol.
    let plugin = poll.plugin.as_ref();
    let imap_hint = plugin.is_some_and(|p| p.value.contains("imap")) || user.folders.is_some();
    let protocol = match poll.protocol.as_ref().map(|p| (p.value.as_str(), p.line)) {
        Some(("pop3", _)) => "pop3",
        Some(("apop", _)) => {
            a.raw.auth = Some("apop".into());
            "pop3"
        }
        Some(("imap", _)) => "imap",
        Some(("auto", line)) => {
            let guess = if imap_hint { "imap" } else { "pop3" };
            out.warn(
                line,
                "protocol auto",
                format!("sshmail does not probe: imported as {guess}; set `protocol` if that is wrong"),
            );
            guess
        }
        None => {
            let guess = if imap_hint { "imap" } else { "pop3" };
            out.warn(
                poll.line,
                &format!("poll {}", poll.name),
                format!("no protocol given (fetchmail probes IMAP, then POP3): imported as {guess}"),
            );
            guess
        }
        Some((other, line)) => {
            out.warn(
                line,
                &format!("protocol {other}"),
                format!("sshmail speaks POP3 and IMAP only: poll {} is not imported", poll.name),
            );
            return None;
        }
    };
    a.raw.protocol = Some(protocol.into());
    let default_port = if protocol == "imap" { 143 } else { 110 };
    let port = match &poll.service {
        Some(s) => match port_of(&s.value) {
            Some(p) => p,
            None => {
                out.warn(
                    s.line,
                    &format!("service {}", s.value),
                    "not a port sshmail knows: the protocol's default is used",
                );
                default_port
            }
        },
        None => default_port,
    };

    // How the server is reached.
    let mut reached = false;
    if let Some(p) = plugin {
        reached = true;
        let words = split_words(&p.value.replace("%h", host).replace("%p", &port.to_string())).unwrap_or_default();
        match SshCall::parse(&words) {
            Some(call) if !call.command.is_empty() && protocol == "imap" && !is_netcat(&call.command) => {
                call.apply(&mut a, out, p.line, "plugin");
                a.name = call.dest.clone();
                a.raw.via = Some("exec".into());
                a.raw.imapd = Some(Command::Shell(call.command.join(" ")));
            }
            Some(call) if is_netcat(&call.command) && call.command.len() >= 3 => {
                call.apply(&mut a, out, p.line, "plugin");
                a.raw.via = Some("forward".into());
                let n = call.command.len();
                a.raw.server = Some(format!("{}:{}", call.command[n - 2], call.command[n - 1]));
            }
            _ => {
                a.raw.via = Some("command".into());
                a.raw.tunnel = Some(Command::Shell(p.value.replace("%h", host).replace("%p", &port.to_string())));
                a.notes.push(
                    "the plugin is run as a local command (`via = \"command\"`); sshmail's own SSH connection \
                     (`via = \"forward\"` or `\"exec\"`) would not fork one per poll"
                        .into(),
                );
            }
        }
    }
    if let Some(pre) = &user.preconnect {
        let words = split_words(&pre.value).unwrap_or_default();
        let call = SshCall::parse(&words);
        let fwd = call.as_ref().and_then(|c| c.forwards.iter().find(|(l, _, _)| port_of(l) == Some(port)).cloned());
        match (call, fwd) {
            (Some(call), Some((_, rhost, rport))) if !reached && is_local(host) => {
                reached = true;
                call.apply(&mut a, out, pre.line, "preconnect");
                a.name = call.dest.clone();
                a.raw.via = Some("forward".into());
                a.raw.server = Some(format!("{rhost}:{rport}"));
                if !call.command.is_empty() && call.command.first().map(String::as_str) != Some("sleep") {
                    out.warn(
                        pre.line,
                        "preconnect",
                        format!(
                            "the remote command `{}` is not run (sshmail opens the forward itself)",
                            call.command.join(" ")
                        ),
                    );
                }
                a.origin.push_str(" (ssh -L forward: now an in-process SSH channel)");
            }
            _ => out.warn(pre.line, "preconnect", "not carried over: sshmail runs no command before a poll"),
        }
    }
    let ssl = user.ssl.as_ref().is_some_and(|s| s.value);
    if !reached {
        if ssl {
            a.raw.via = Some("tls".into());
            a.raw.server = Some(format!("{host}:{port}"));
        } else if protocol == "imap" && user.sslproto.as_ref().is_some_and(|p| !p.value.is_empty()) {
            a.raw.via = Some("starttls".into());
            a.raw.server = Some(format!("{host}:{port}"));
        } else {
            a.raw.ssh = Some(host.to_string());
            a.raw.via = Some("forward".into());
            a.raw.server = Some(format!("localhost:{port}"));
            out.warn(
                poll.line,
                &format!("poll {}", poll.name),
                format!(
                    "fetchmail connected to {host}:{port} without SSH; sshmail reaches it through SSH to {host} \
                     itself (set `ssh` to the SSH host in front of it)"
                ),
            );
        }
    } else if ssl {
        out.warn(user.ssl.as_ref().map_or(poll.line, |s| s.line), "ssl", "dropped: the SSH channel already encrypts");
    }

    // Who logs in.
    if let Some(r) = &user.remote {
        a.raw.user = Some(r.clone());
    }
    if let Some(p) = &user.password {
        a.raw.password = Some(p.value.clone());
    }
    if let Some(auth) = &poll.auth {
        match auth.value.as_str() {
            "any" | "ssh" => {}
            "password" => a.raw.auth = Some("user".into()),
            other => out.warn(
                auth.line,
                &format!("auth {other}"),
                "not supported: sshmail logs in by USER/PASS, LOGIN, APOP or PLAIN",
            ),
        }
    }
    let locals: Vec<&String> = user.localnames.iter().filter(|n| *n != "*").collect();
    if let Some(first) = locals.first() {
        a.raw.recipient = Some((*first).clone());
    }
    if locals.len() > 1 || user.localnames.iter().any(|n| n == "*") {
        out.warn(user.line, "is/to", "multidrop is not supported: mail goes to the first local name");
    }

    // What is fetched and what stays.
    if let Some(k) = &user.keep {
        a.raw.keep = Some(k.value);
        if k.value {
            a.notes.push(
                "keep: sshmail's ledger starts empty, so its first fetch delivers again what fetchmail left on the \
                 server"
                    .into(),
            );
        }
    }
    if user.fetchall.as_ref().is_some_and(|f| f.value) {
        a.raw.fetch_all = Some(true);
    }
    if let Some(f) = user.flush.as_ref().filter(|f| f.value) {
        out.warn(
            f.line,
            "flush",
            "not carried over: sshmail deletes each message once it is delivered (unless `keep`)",
        );
    }
    if let Some(l) = user.limit.as_ref().filter(|l| l.value > 0) {
        a.raw.max_message_size = Some(l.value);
    }
    if let Some(f) = &user.folders {
        if protocol == "imap" {
            a.raw.folders = Some(f.value.clone());
        } else {
            out.warn(f.line, "folder", "POP3 has no folders");
        }
    }
    if user.idle.as_ref().is_some_and(|i| i.value) {
        a.notes.push("idle: `sshmail daemon` watches IMAP folders with IDLE".into());
    }
    if let Some(t) = &poll.timeout {
        a.raw.timeout = Some(t.value);
    }
    if let Some(i) = &poll.interval {
        match daemon {
            Some(d) => a.raw.interval = Some(i.value.saturating_mul(d)),
            None => out.warn(i.line, "interval", "counts daemon cycles, and no `set daemon` says how long one is"),
        }
    }

    // TLS details.
    if let Some(c) = user.sslcertck.as_ref().filter(|c| !c.value) {
        out.warn(c.line, "no sslcertck", "sshmail always checks certificates: pin one with `tls_fingerprint` instead");
    }
    if let Some(f) = &user.sslfingerprint {
        let hex: String = f.value.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            a.raw.tls_fingerprint = Some(hex);
        } else {
            out.warn(
                f.line,
                "sslfingerprint",
                "not a SHA-256 fingerprint (fetchmail's are MD5): set `tls_fingerprint` to the SHA-256 of the \
                 certificate (`openssl x509 -noout -fingerprint -sha256`)",
            );
        }
    }
    if let Some(c) = &user.sslcertfile {
        a.raw.tls_ca_file = Some(c.value.clone());
    }
    if let Some(p) = user.sslproto.as_ref().filter(|p| !p.value.is_empty() && reached) {
        out.warn(p.line, "sslproto", "dropped: the SSH channel already encrypts");
    }

    // Where mail goes.
    deliver(&mut a, user, out);

    if let Some(r) = user.rewrite.as_ref().filter(|r| r.value) {
        out.warn(r.line, "rewrite", "not carried over: sshmail never rewrites addresses in headers");
    }
    if let Some(p) = &user.postconnect {
        out.warn(p.line, "postconnect", "not carried over: sshmail runs no command after a poll");
    }
    for o in poll.other.iter().chain(&user.other) {
        if !SAME.contains(&o.name.as_str()) {
            out.warn(o.line, &describe(o), "not carried over");
        }
    }
    Some(a)
}

fn is_netcat(cmd: &[String]) -> bool {
    cmd.first().and_then(|c| c.rsplit('/').next()).is_some_and(|c| matches!(c, "nc" | "netcat" | "ncat"))
}

fn describe(o: &Opt) -> String {
    match &o.value {
        Some(_) if o.name.contains("password") => format!("{} (value not shown)", o.name),
        Some(v) => format!("{} {v}", o.name),
        None => o.name.clone(),
    }
}

fn deliver(a: &mut Account, user: &User, out: &mut Converted) {
    let lmtp = user.lmtp.as_ref().is_some_and(|l| l.value);
    if let Some(m) = &user.mda {
        a.raw.deliver = Some(format!("mda:{}", mda_command(&m.value)));
        if user.smtphost.is_some() {
            out.warn(m.line, "smtphost", "ignored, as fetchmail does, when an mda is given");
        }
        return;
    }
    let Some(At { value: hosts, line }) = &user.smtphost else {
        a.raw.deliver = Some(if lmtp { "lmtp:localhost:24".into() } else { "smtp:localhost".into() });
        a.notes.push(
            "deliver: fetchmail's default, SMTP to localhost:25; `deliver = \"maildir:~/Maildir\"` needs no local MTA"
                .into(),
        );
        return;
    };
    let first = &hosts[0];
    let spec = if first.starts_with('/') {
        format!("lmtp:{first}")
    } else {
        let hp = first.replacen('/', ":", 1);
        if lmtp {
            if hp.contains(':') { format!("lmtp:{hp}") } else { format!("lmtp:{hp}:24") }
        } else {
            format!("smtp:{hp}")
        }
    };
    a.raw.deliver = Some(spec);
    if hosts.len() > 1 {
        out.warn(*line, "smtphost", format!("only the first host is used; {} not carried over", hosts[1..].join(" ")));
    }
}

/// fetchmail runs an MDA through the shell; sshmail splits it into words
/// and runs it without one, unless it needs one.
fn mda_command(cmd: &str) -> String {
    let needs_shell = cmd.contains(['|', '&', ';', '<', '>', '(', ')', '$', '`', '*', '?', '~', '\n']);
    if needs_shell || split_words(cmd).is_none() {
        format!("sh -c {}", crate::process::shell_quote(cmd))
    } else {
        cmd.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::rc::parse;

    fn one(rc: &str) -> (Account, Vec<String>) {
        let c = convert(&parse(rc).unwrap());
        assert_eq!(c.accounts.len(), 1, "{c:?}");
        (c.accounts[0].clone(), c.warnings)
    }

    fn s(v: &str) -> Option<String> {
        Some(v.into())
    }

    fn shell(v: &str) -> Option<Command> {
        Some(Command::Shell(v.into()))
    }

    #[test]
    fn the_howto_becomes_a_forward_account() {
        let (a, w) =
            one("poll localhost with protocol pop3 and port 11110:\n    user msingh is manish\n    no rewrite\n    \
             preconnect \"ssh -C -f msingh@popserver -L 11110:popserver:110 sleep 5\"\n    password foobar;\n");
        assert_eq!(a.raw.ssh.clone(), s("msingh@popserver"));
        assert_eq!(a.raw.via.clone(), s("forward"));
        assert_eq!(a.raw.server.clone(), s("popserver:110"));
        assert_eq!(a.raw.compress, Some(true));
        assert_eq!(a.raw.user.clone(), s("msingh"));
        assert_eq!(a.raw.password.clone(), s("foobar"));
        assert_eq!(a.raw.recipient.clone(), s("manish"));
        assert_eq!(a.raw.deliver.clone(), s("smtp:localhost"));
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn a_plugin_running_imapd_becomes_an_exec_account() {
        let (a, w) = one("poll mail.example.org proto imap plugin \"ssh -l me %h /usr/sbin/imapd\" auth ssh user me");
        assert_eq!(a.raw.ssh.clone(), s("me@mail.example.org"));
        assert_eq!(a.raw.via.clone(), s("exec"));
        assert_eq!(a.raw.imapd.clone(), shell("/usr/sbin/imapd"));
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn a_plugin_through_netcat_is_a_forward() {
        let (a, _) = one("poll h proto imap plugin \"ssh -q gw nc mail 143\" user me");
        assert_eq!((a.raw.ssh.clone(), a.raw.server.clone()), (s("gw"), s("mail:143")));
    }

    #[test]
    fn other_plugins_stay_local_commands() {
        let (a, _) = one("poll h proto imap plugin \"openssl s_client -connect %h:%p -quiet\" user me");
        assert_eq!(a.raw.via.clone(), s("command"));
        assert_eq!(a.raw.tunnel.clone(), shell("openssl s_client -connect h:143 -quiet"));
    }

    #[test]
    fn an_mda_is_kept_and_shell_only_when_needed() {
        let (a, _) = one("poll h proto pop3 user u mda \"/usr/bin/procmail -d %T\"");
        assert_eq!(a.raw.deliver.clone(), s("mda:/usr/bin/procmail -d %T"));
        let (a, _) = one("poll h proto pop3 user u mda \"formail -s procmail | tee x\"");
        assert_eq!(a.raw.deliver.clone(), s("mda:sh -c 'formail -s procmail | tee x'"));
    }

    #[test]
    fn smtphost_and_lmtp() {
        let (a, w) = one("poll h proto pop3 user u smtphost mx/2525 backup");
        assert_eq!(a.raw.deliver.clone(), s("smtp:mx:2525"));
        assert!(w.iter().any(|w| w.contains("backup")), "{w:?}");
        let (a, _) = one("poll h proto pop3 user u smtphost /run/dovecot/lmtp lmtp");
        assert_eq!(a.raw.deliver.clone(), s("lmtp:/run/dovecot/lmtp"));
    }

    #[test]
    fn daemon_interval_and_poll_interval() {
        let c = convert(&parse("set daemon 120\npoll h proto pop3 interval 3 user u").unwrap());
        assert_eq!(c.daemon_interval, Some(120));
        assert_eq!(c.accounts[0].raw.interval, Some(360));
    }

    #[test]
    fn what_is_not_carried_over_is_a_warning_naming_its_line() {
        let c = convert(
            &parse("set logfile /tmp/x\npoll h proto pop3\n user u password p\n fetchlimit 5 flush\n antispam 571 550")
                .unwrap(),
        );
        let w = c.warnings.join("\n");
        assert!(w.contains("set logfile"), "{w}");
        assert!(w.contains("line 4: fetchlimit 5: not carried over"), "{w}");
        assert!(w.contains("line 4: flush"), "{w}");
        assert!(w.contains("line 5: antispam 571 550"), "{w}");
        assert!(w.contains("line 2: poll h: fetchmail connected to h:110 without SSH"), "{w}");
        assert!(!w.contains(" p\n") && !w.ends_with(" p"), "{w}");
    }

    #[test]
    fn unsupported_protocols_skip_the_entry() {
        let c = convert(&parse("poll h proto etrn\npoll g proto imap user u").unwrap());
        assert_eq!(c.accounts.len(), 1);
        assert!(c.warnings[0].contains("protocol etrn"), "{:?}", c.warnings);
    }

    #[test]
    fn several_users_get_names_of_their_own() {
        let c = convert(&parse("poll h proto imap user a password x user b password y").unwrap());
        let names: Vec<_> = c.accounts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["h-a", "h-b"]);
        assert!(c.has_password());
    }

    #[test]
    fn tls_without_ssh() {
        let (a, _) = one("poll imap.example.org proto imap port 993 user u ssl sslfingerprint \"AB:CD\"");
        assert_eq!(a.raw.via.clone(), s("tls"));
        assert_eq!(a.raw.server.clone(), s("imap.example.org:993"));
        let (a, _) = one("poll imap.example.org proto imap user u sslproto tls1.2+");
        assert_eq!(a.raw.via.clone(), s("starttls"));
    }
}
