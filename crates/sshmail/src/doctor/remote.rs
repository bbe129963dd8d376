//! The hops to the server: name, TCP, SSH, host key, SSH login, channel,
//! imapd, greeting, capabilities, mail login; and the relay for sending.

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

use super::Report;
use crate::config::Route;
use crate::config::SshTarget;
use crate::config::{Account, Command, Protocol, Relay, Send, Service, Via};
use crate::error::{Error, Exit, HostKeyProblem};
use crate::fetch::imap::Imap;
use crate::fetch::pop3::Pop3;
use crate::ssh::SshPool;
use crate::transport::{self, Opened, Prefixed, Stream};
use crate::wire::Wire;

/// The SSH hops alone (for an account that only sends): true when
/// connected, or when the route has no SSH.
pub async fn connect(report: &mut Report, route: &Route, pool: &SshPool) -> bool {
    match &route.ssh {
        Some((target, jumps)) => ssh(report, target, jumps, pool).await,
        None => true,
    }
}

/// Every remote hop of `account`, up to the first FAIL.
pub async fn account(report: &mut Report, account: &Account, pool: &SshPool) {
    let route = &account.route;
    let Some((target, jumps)) = &route.ssh else {
        // No SSH: the command or the TLS connection is the channel.
        match transport::open(route, pool).await {
            Ok(opened) => {
                report.pass("channel", &opened.peer);
                server(report, account, opened).await;
            }
            Err(e) => report.error("channel", &e, "check the account's tunnel command, or server and TLS keys"),
        }
        return;
    };
    if !ssh(report, target, jumps, pool).await {
        return;
    }
    let opened = match &route.via {
        Via::Exec(configured) => {
            if !exec_allowed(report, target, jumps, pool).await {
                return;
            }
            if let Some(c) = configured
                && !program_found(report, target, jumps, pool, c).await
            {
                return;
            }
            match transport::open(route, pool).await {
                Ok(opened) => {
                    report.pass("imapd", &opened.peer);
                    opened
                }
                Err(e) => {
                    report.error(
                        "imapd",
                        &e,
                        "install an IMAP server on the SSH host, or name its binary: imapd = \"/usr/lib/dovecot/imap\"",
                    );
                    return;
                }
            }
        }
        _ => match transport::open(route, pool).await {
            Ok(opened) => {
                report.pass("channel", format!("direct-tcpip to {} allowed", route.server()));
                opened
            }
            Err(e) => {
                report.error(
                    "channel",
                    &e,
                    "allow forwarding on the SSH server (AllowTcpForwarding yes), check `server` (as seen from the SSH \
                     host); for IMAP, via = \"exec\" runs the imapd there and needs no forwarding",
                );
                return;
            }
        },
    };
    server(report, account, opened).await;
}

/// Name, TCP, banner of the first SSH hop, then the SSH connection (host
/// key, login) through the pool. True when connected.
async fn ssh(report: &mut Report, target: &SshTarget, jumps: &[SshTarget], pool: &SshPool) -> bool {
    for t in jumps.iter().chain([target]) {
        unhonoured(report, t);
    }
    // An OpenSSH master carries the channels: it verified the host and
    // logged in; what is left to check is that it is the user's and speaks
    // proxy mode.
    if let Some(socket) = &target.control_path {
        if crate::ssh::mux::answers(socket).await {
            return match crate::ssh::mux::master_pid(socket, target.timeout).await {
                Ok(pid) => {
                    report
                        .pass("ssh", format!("{} via OpenSSH master {} (pid {pid})", target.name(), socket.display()));
                    true
                }
                Err(e) => {
                    report.error(
                        "ssh",
                        &e,
                        "use a master of your own (ssh -fN with ControlMaster), OpenSSH 7.4 or later",
                    );
                    false
                }
            };
        }
        if !target.control_fallback {
            report.fail(
                "ssh",
                format!("no OpenSSH master answers at {}", socket.display()),
                "sign in once with `ssh -fN` and ControlMaster for that host, or set ssh_control_fallback = true",
                Exit::Connect,
            );
            return false;
        }
        report.warn(
            "ssh",
            format!("no OpenSSH master answers at {}", socket.display()),
            "sshmail connects on its own (a master, once running, is ridden)",
        );
    }
    let first = jumps.first().unwrap_or(target);
    if !reach_sshd(report, first).await {
        return false;
    }
    match pool.get(target, jumps).await {
        Ok(session) => {
            let hs = session.handshake();
            report.pass("host-key", format!("{} {}", target.name(), hs.host_key));
            report.pass("algorithms", &hs.algorithms);
            report.pass("ssh-auth", format!("as {} with {}", target.user, hs.auth));
            true
        }
        Err(Error::HostKey(refused)) => {
            let fix = match &refused.problem {
                HostKeyProblem::Unknown { line, .. } => format!(
                    "compare the fingerprint with the server's (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub \
                     there), then add this line to {}: {line}  (or run once with --accept-new-host-key)",
                    refused.files.first().map(String::as_str).unwrap_or("~/.ssh/known_hosts")
                ),
                HostKeyProblem::Changed { line, .. } => format!(
                    "do not connect until you know why: if the server was reinstalled, remove the old line \
                     (ssh-keygen -R '{}') and add the new one: {line}",
                    refused.host
                ),
                HostKeyProblem::Revoked { .. } => "ask the server's administrator: that key is revoked".into(),
                HostKeyProblem::Unusable(_) => "make the known_hosts file readable and writable by you".into(),
                HostKeyProblem::Certificate(_) => "ask the server's administrator for a host certificate from the CA \
                     your @cert-authority line names, for this host name and valid now"
                    .into(),
            };
            report.fail("host-key", refused.to_string(), &fix, Exit::Connect);
            false
        }
        Err(Error::SshAuth(refused)) => {
            report.pass("host-key", format!("{} known", target.name()));
            report.fail("ssh-auth", refused.facts(), &refused.fix(), Exit::Auth);
            false
        }
        Err(e) => {
            report.error("ssh", &e, "the SSH handshake failed: `ssh -v` to the same host shows where");
            false
        }
    }
}

/// A WARN for each ssh_config directive set for `t`'s host that sshmail
/// reads but does not honour, and for each algorithm it names that sshmail
/// does not implement.
fn unhonoured(report: &mut Report, t: &SshTarget) {
    for (directive, instead) in &t.unhonoured {
        let at = report.ssh_config_line(directive);
        report.warn(
            "ssh_config",
            format!("{at}: {directive} (for {}) is not honoured", t.name()),
            &format!("sshmail {instead}"),
        );
    }
    for named in &t.algorithms.unimplemented {
        let directive = named.split_whitespace().next().unwrap_or_default();
        let at = report.ssh_config_line(directive);
        report.warn(
            "ssh_config",
            format!("{at}: {named} (for {}) is not implemented by sshmail", t.name()),
            "sshmail leaves it out and offers the rest of the list",
        );
    }
}

/// `resolve`, `tcp` and `ssh` (the banner) for one SSH server.
async fn reach_sshd(report: &mut Report, t: &SshTarget) -> bool {
    let within = t.timeout;
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::time::timeout(within, tokio::net::lookup_host((t.host.as_str(), t.port))).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => {
                report.fail(
                    "resolve",
                    format!("{}: {e}", t.host),
                    "check the host name (HostName in ~/.ssh/config, or the account's ssh)",
                    Exit::Connect,
                );
                return false;
            }
            Err(_) => {
                report.fail(
                    "resolve",
                    format!("{}: no answer within {} s", t.host, within.as_secs()),
                    "check DNS (/etc/resolv.conf)",
                    Exit::Connect,
                );
                return false;
            }
        };
    let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    report.pass("resolve", format!("{} is {}", t.host, shown.join(", ")));
    let mut failures = Vec::new();
    let mut tcp = None;
    for addr in &addrs {
        match tokio::time::timeout(within, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                tcp = Some((s, *addr));
                break;
            }
            Ok(Err(e)) => failures.push(format!("{addr}: {e}")),
            Err(_) => failures.push(format!("{addr}: no answer within {} s", within.as_secs())),
        }
    }
    let Some((tcp, addr)) = tcp else {
        report.fail(
            "tcp",
            failures.join("; "),
            &format!(
                "is sshd running on {} and listening on port {}? (Port in ~/.ssh/config, or ssh = \"user@host:port\"); \
                 a firewall between?",
                t.host, t.port
            ),
            Exit::Connect,
        );
        return false;
    };
    report.pass("tcp", format!("connected to {addr}"));
    // The server's identification string (RFC 4253 4.2), after any lines
    // it may send before it.
    let mut lines = BufReader::new(tcp.take(8192));
    let banner = tokio::time::timeout(within, async {
        let mut line = String::new();
        loop {
            line.clear();
            match lines.read_line(&mut line).await {
                Ok(0) | Err(_) => return None,
                Ok(_) if line.starts_with("SSH-") => return Some(line.trim_end().to_string()),
                Ok(_) => {}
            }
        }
    })
    .await;
    match banner {
        Ok(Some(b)) if b.starts_with("SSH-2.0-") || b.starts_with("SSH-1.99-") => {
            report.pass("ssh", b);
            true
        }
        Ok(Some(b)) => {
            report.fail("ssh", format!("{addr} speaks {b}"), "the server must speak SSH 2", Exit::Protocol);
            false
        }
        Ok(None) => {
            report.fail(
                "ssh",
                format!("{addr} sent no SSH identification"),
                "is that port an SSH server? (sshd may also refuse you: MaxStartups, tcp wrappers)",
                Exit::Protocol,
            );
            false
        }
        Err(_) => {
            report.fail(
                "ssh",
                format!("{addr} sent nothing within {} s", within.as_secs()),
                "is that port an SSH server?",
                Exit::Protocol,
            );
            false
        }
    }
}

/// The `channel` hop of exec: a command runs, and prints nothing it should
/// not (a shell startup file that prints would corrupt the protocol).
async fn exec_allowed(report: &mut Report, target: &SshTarget, jumps: &[SshTarget], pool: &SshPool) -> bool {
    match pool.run(target, jumps, "true").await {
        Ok((out, Some(0))) if out.is_empty() => {
            report.pass("channel", "exec allowed; the shell prints nothing");
            true
        }
        Ok((out, _)) if !out.is_empty() => {
            report.pass("channel", "exec allowed");
            report.fail(
                "greeting",
                format!("the shell prints `{}` before any command's output", String::from_utf8_lossy(&out).trim()),
                "make the shell's startup files (~/.bashrc, ~/.profile) print only when interactive \
                 ([ -t 0 ] || return), or remove a command= on the key in authorized_keys",
                Exit::Protocol,
            );
            false
        }
        Ok((_, status)) => {
            report.fail(
                "channel",
                format!("`true` exited with {status:?} on {}", target.name()),
                "a forced command (ForceCommand, command= in authorized_keys) or a restricted shell runs instead",
                Exit::Connect,
            );
            false
        }
        Err(e) => {
            report.error("channel", &e, "the SSH server refuses commands: ForceCommand, or a restricted shell?");
            false
        }
    }
}

/// A configured imapd's program exists on the SSH host (when the command
/// names one plainly).
async fn program_found(
    report: &mut Report,
    target: &SshTarget,
    jumps: &[SshTarget],
    pool: &SshPool,
    command: &Command,
) -> bool {
    let program = match command {
        Command::Argv(words) => words.first().cloned(),
        Command::Shell(text) if !text.contains(|c: char| ";&|$`<>(){}\n'\"\\".contains(c)) => {
            text.split_whitespace().next().map(str::to_string)
        }
        Command::Shell(_) => None,
    };
    let Some(program) = program else { return true };
    match remote_has(pool, target, jumps, &program).await {
        Ok(true) => true,
        Ok(false) => {
            report.fail(
                "imapd",
                format!("{program} is not found on {}", target.name()),
                "name the IMAP server's binary there (Dovecot: /usr/lib/dovecot/imap, GNU: imap4d), or leave imapd \
                 out to have it detected",
                Exit::Connect,
            );
            false
        }
        Err(e) => {
            report.error("imapd", &e, "the SSH server refuses commands");
            false
        }
    }
}

/// Whether `program` is there to run on the SSH host (`command -v`).
async fn remote_has(
    pool: &SshPool,
    target: &SshTarget,
    jumps: &[SshTarget],
    program: &str,
) -> crate::error::Result<bool> {
    let probe = format!("command -v -- {}", crate::process::shell_quote(program));
    Ok(pool.run(target, jumps, &probe).await?.1 == Some(0))
}

/// Greeting, capabilities and login on an open stream.
async fn server(report: &mut Report, account: &Account, opened: Opened) {
    let route = &account.route;
    let service = Service::of(account.protocol);
    let Opened { mut stream, peer, preauth_ok, greeting, diagnostics, .. } = opened;
    let timeout = account.route.timeout;
    let first_line = match greeting {
        // Read already, by the imapd probe or before STARTTLS.
        Some(g) => g,
        None => match transport::greeting::read(&mut stream, service, route, &peer).await {
            Ok(bytes) => bytes,
            Err(e) => {
                let e = crate::process::explain(diagnostics.as_deref(), e).await;
                report.error("greeting", &e, "see above: the first line must be the mail server's own");
                return;
            }
        },
    };
    let line = String::from_utf8_lossy(&first_line);
    let line: String = line.lines().next().unwrap_or("").trim().chars().take(160).collect();
    report.pass("greeting", line);
    let stream: Box<dyn Stream> = Box::new(Prefixed::new(first_line, stream));
    let wire = Wire::new(stream, timeout, peer.clone());
    match account.protocol {
        Protocol::Imap => imap(report, account, wire, preauth_ok).await,
        Protocol::Pop3 => pop3(report, account, wire).await,
    }
}

async fn imap(report: &mut Report, account: &Account, wire: Wire<Box<dyn Stream>>, preauth_ok: bool) {
    let limits = sshmail_proto::imap::Limits::default();
    let mut imap = match Imap::start(wire, limits, preauth_ok).await {
        Ok(i) => i,
        Err(e) => {
            report.error("capabilities", &e, "the server is not the IMAP4rev1 server expected");
            return;
        }
    };
    let wanted = ["IDLE", "UIDPLUS", "LITERAL+", "MOVE", "CONDSTORE"];
    let has: Vec<&str> = wanted.iter().copied().filter(|c| imap.has(c)).collect();
    let missing: Vec<&str> = wanted.iter().copied().filter(|c| !imap.has(c)).collect();
    let what = format!(
        "has {}{}",
        has.join(" "),
        if missing.is_empty() { String::new() } else { format!("; lacks {}", missing.join(" ")) }
    );
    if imap.has("IDLE") {
        report.pass("capabilities", what);
    } else {
        report.warn("capabilities", what, "no IDLE: the daemon finds new mail by polling every `interval` seconds");
    }
    if imap.preauth {
        report.pass("login", "PREAUTH: the server runs as you; no password needed");
    } else {
        let Some(password) = mail_password(report, account).await else { return };
        let done = imap.login(&account.login.user, password.as_ref(), account.login.auth).await;
        if !logged_in(report, account, done) {
            return;
        }
    }
    imap.logout().await;
}

async fn pop3(report: &mut Report, account: &Account, wire: Wire<Box<dyn Stream>>) {
    let mut pop = match Pop3::start(wire).await {
        Ok(p) => p,
        Err(e) => {
            report.error("greeting", &e, "point the account at the POP3 server");
            return;
        }
    };
    if let Err(e) = pop.capa().await {
        report.error("capabilities", &e, "the server did not answer CAPA as POP3 servers do");
        return;
    }
    let caps = &pop.caps;
    let what = format!(
        "UIDL {}, PIPELINING {}, USER {}, SASL {}",
        yes(caps.uidl),
        yes(caps.pipelining),
        yes(caps.user),
        if caps.sasl.is_empty() { "none".to_string() } else { caps.sasl.join(" ") }
    );
    if caps.uidl {
        report.pass("capabilities", what);
    } else {
        report.warn(
            "capabilities",
            what,
            "without UIDL, keep mode cannot tell new mail from old: use policy = \"delete\"",
        );
    }
    let Some(password) = mail_password(report, account).await else { return };
    let done = pop.login(&account.login.user, password.as_ref(), account.login.auth).await;
    if !logged_in(report, account, done) {
        return;
    }
    let _ = pop.send(&[sshmail_proto::pop3::Command::Quit]).await;
    let _ = pop.reply().await;
}

/// The mail password (none when the account gives no source); `None`
/// after a FAIL of the `login` hop.
async fn mail_password(report: &mut Report, account: &Account) -> Option<Option<crate::secret::Secret>> {
    match crate::process::password(&account.login.password, "password_command", account.route.timeout).await {
        Ok(p) => Some(p),
        Err(e) => {
            report.error("login", &e, "fix password_command: it must print the password on its first line");
            None
        }
    }
}

/// The `login` hop for a login's result.
fn logged_in(report: &mut Report, account: &Account, done: crate::error::Result<()>) -> bool {
    match done {
        Ok(()) => {
            report.pass("login", format!("as {}", account.login.user));
            true
        }
        Err(e) => {
            report.error("login", &e, "check `user` and what password_command prints; the server's log says why");
            false
        }
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The `send` hop: the relay answers, through the account's SSH host.
pub async fn relay(report: &mut Report, account: &Account, send: &Send, pool: &SshPool) {
    let route = &account.route;
    let Some((target, jumps)) = &route.ssh else {
        report.warn("send", "the account has no SSH host to relay through", "set the account's ssh");
        return;
    };
    match &send.relay {
        Relay::Exec(c) => {
            let shown = transport::remote_command(c);
            let program = match c {
                Command::Argv(w) => w.first().cloned(),
                Command::Shell(t) => t.split_whitespace().next().map(str::to_string),
            };
            let Some(program) = program else { return };
            match remote_has(pool, target, jumps, &program).await {
                Ok(true) => report.pass("send", format!("`{shown}` found on {}", target.name())),
                Ok(false) => report.fail(
                    "send",
                    format!("{program} is not found on {}", target.name()),
                    "set send.command to the SSH host's sendmail (e.g. /usr/sbin/sendmail)",
                    Exit::Connect,
                ),
                Err(e) => report.error("send", &e, "the SSH host must run the relay command"),
            }
        }
        Relay::Smtp(host, port) => {
            let peer = format!("{host}:{port} (via {})", target.name());
            match crate::send::relay_session(account, send, host, *port, pool).await {
                Ok(session) => {
                    let ext = &session.ext;
                    let mut offered: Vec<String> = [
                        (ext.pipelining, "PIPELINING"),
                        (ext.eight_bit_mime, "8BITMIME"),
                        (ext.smtputf8, "SMTPUTF8"),
                        (ext.size.is_some(), "SIZE"),
                        (ext.starttls, "STARTTLS"),
                    ]
                    .into_iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, name)| name.to_string())
                    .collect();
                    if !ext.auth.is_empty() {
                        offered.push(format!("AUTH {}", ext.auth.join(" ")));
                    }
                    let mut said = vec![format!("{peer}: {}; EHLO: {}", session.greeting, offered.join(" "))];
                    said.push(if session.secured { "STARTTLS done".into() } else { "no STARTTLS".to_string() });
                    if send.user.is_some() {
                        said.push("AUTH accepted".into());
                    } else if !ext.auth.is_empty() {
                        said.push(format!("AUTH offered ({}), not used", ext.auth.join(" ")));
                    }
                    report.pass("send", said.join("; "));
                    session.quit().await;
                }
                Err(e) => report.error("send", &e, "check send.server, send.starttls and the login (send.user)"),
            }
        }
    }
}
