//! The hops on this machine: delivery target, ledger, hooks and desktop
//! notifications, sendmail and git, outbox, daemon, and `ssh -L` forwards
//! of mail ports.

use std::path::{Path, PathBuf};

use super::{Report, existing_ancestor};
use crate::config::{Account, Delivery, Endpoint};
use crate::error::Exit;

/// Makes and removes a file in `dir`: it can be written to.
fn probe(dir: &Path) -> std::io::Result<()> {
    let file = dir.join(format!(".sshmail-doctor.{}", std::process::id()));
    std::fs::OpenOptions::new().write(true).create_new(true).open(&file)?;
    std::fs::remove_file(&file)
}

/// A directory that is there and writable, or that could be made.
fn writable_dir(path: &Path) -> Result<String, String> {
    if path.exists() {
        if !path.is_dir() {
            return Err(format!("{} is not a directory", path.display()));
        }
        return probe(path)
            .map(|()| format!("{} is writable", path.display()))
            .map_err(|e| format!("{}: {e}", path.display()));
    }
    let Some(parent) = existing_ancestor(path) else { return Err(format!("{}: no parent", path.display())) };
    if !parent.is_dir() {
        return Err(format!("{} cannot be made: {} is not a directory", path.display(), parent.display()));
    }
    probe(&parent)
        .map(|()| format!("{} will be made (in {})", path.display(), parent.display()))
        .map_err(|e| format!("{} cannot be made in {}: {e}", path.display(), parent.display()))
}

/// The `delivery` hop.
pub async fn delivery(report: &mut Report, account: &Account) {
    let to = &account.delivery.to;
    let checked = match to {
        Delivery::Maildir(path) => {
            let mut r = writable_dir(path);
            for sub in ["tmp", "new", "cur"] {
                let sub = path.join(sub);
                if r.is_ok() && path.exists() {
                    r = writable_dir(&sub).map(|_| format!("Maildir {} is writable", path.display()));
                }
            }
            r
        }
        Delivery::Mbox(path) if path.exists() => std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(|_| format!("mbox {} is writable", path.display()))
            .map_err(|e| format!("mbox {}: {e}", path.display())),
        Delivery::Mbox(path) => match path.parent() {
            Some(dir) => writable_dir(dir).map(|_| format!("mbox {} will be made", path.display())),
            None => Err(format!("mbox {}: no directory", path.display())),
        },
        Delivery::Mda(command) => {
            let words = crate::deliver::mda::split_words(command).unwrap_or_default();
            match words.first() {
                Some(program) => match found_in_path(program) {
                    Some(path) => Ok(format!("MDA {program} is {}", path.display())),
                    None => {
                        Err(format!("MDA {program} is not found (PATH={})", std::env::var("PATH").unwrap_or_default()))
                    }
                },
                None => Err("the MDA command is empty".to_string()),
            }
        }
        Delivery::Smtp(endpoint) | Delivery::Lmtp(endpoint) => listener(endpoint, account.route.timeout).await,
    };
    match checked {
        Ok(what) => report.pass("delivery", what),
        Err(why) => report.fail(
            "delivery",
            why,
            "make the target writable by you, or point deliver at another (maildir:PATH, mbox:PATH, mda:CMD)",
            Exit::Delivery,
        ),
    }
}

/// An SMTP or LMTP server answers with its 220.
async fn listener(endpoint: &Endpoint, timeout: std::time::Duration) -> Result<String, String> {
    use tokio::io::AsyncReadExt as _;
    async fn first_line(mut s: impl tokio::io::AsyncRead + Unpin) -> std::io::Result<String> {
        let mut buf = vec![0u8; 512];
        let n = s.read(&mut buf).await?;
        Ok(String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string())
    }
    let (name, line) = match endpoint {
        Endpoint::Tcp(host, port) => {
            let name = format!("{host}:{port}");
            let talk = async { first_line(tokio::net::TcpStream::connect((host.as_str(), *port)).await?).await };
            (name, tokio::time::timeout(timeout, talk).await)
        }
        Endpoint::Unix(path) => {
            let name = path.display().to_string();
            let talk = async { first_line(tokio::net::UnixStream::connect(path).await?).await };
            (name, tokio::time::timeout(timeout, talk).await)
        }
    };
    match line {
        Ok(Ok(l)) if l.starts_with("220") => Ok(format!("{name} greets `{}`", super::printable(&l))),
        Ok(Ok(l)) => Err(format!("{name} greets `{}`, not 220", super::printable(&l))),
        Ok(Err(e)) => Err(format!("{name}: {e}")),
        Err(_) => Err(format!("{name}: no greeting within {} s", timeout.as_secs())),
    }
}

fn found_in_path(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| p.is_file())
}

/// The `hooks` hop: each hook's program is there; and the `notify` hop:
/// with `notify = true`, a session bus answers.
pub async fn hooks(report: &mut Report, account: &Account) {
    let h = &account.hooks;
    let named = h
        .on_new
        .iter()
        .map(|c| ("on_new".to_string(), c))
        .chain(h.on_new_folders.iter().filter_map(|(f, c)| c.as_ref().map(|c| (format!("on_new for {f}"), c))))
        .chain(h.on_sent.iter().map(|c| ("on_sent".to_string(), c)));
    for (what, command) in named {
        let program = command.program();
        // Shell text may start with a builtin or an assignment: only a
        // path, or a word the shell would look up, is checked.
        let shell_word = matches!(command, crate::config::Command::Shell(_))
            && (program.contains('=') || matches!(program, "exec" | "cd" | "test" | "[" | "if" | "for" | "case"));
        match found_in_path(program) {
            Some(path) => report.pass("hooks", format!("{what}: {program} is {}", path.display())),
            None if shell_word => report.pass("hooks", format!("{what}: shell text starting `{program}`")),
            None => report.warn(
                "hooks",
                format!("{what}: {program} is not found (PATH={})", std::env::var("PATH").unwrap_or_default()),
                "give the hook's full path, or install it; its failure is only logged",
            ),
        }
    }
    if h.notify {
        match crate::daemon::notify::session_bus().await {
            Ok(_) => report.pass("notify", "desktop notifications through the session D-Bus"),
            Err(why) => report.warn(
                "notify",
                format!("no session D-Bus here ({why}): desktop notifications are off"),
                "run the daemon in the desktop session (systemctl --user), or set notify = false",
            ),
        }
    }
}

/// The `ledger` hop: the state directory is writable, the ledger readable.
pub fn ledger(report: &mut Report, account: &Account) {
    let dir = &account.state_dir;
    if let Err(why) = writable_dir(dir) {
        report.fail("ledger", why, "make the state directory writable (or set state_dir)", Exit::Delivery);
        return;
    }
    let file = dir.join(format!("{}.ledger", crate::ledger::file_stem(&account.name)));
    match std::fs::read(&file) {
        Ok(bytes) => {
            let lines = bytes.iter().filter(|&&b| b == b'\n').count();
            report.pass("ledger", format!("{} readable ({lines} records)", file.display()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            report.pass("ledger", format!("{} not made yet (the first fetch makes it)", file.display()));
        }
        Err(e) => report.fail(
            "ledger",
            format!("{}: {e}", file.display()),
            "the ledger must be readable: without it mail is fetched again",
            Exit::Delivery,
        ),
    }
}

/// `/usr/sbin/sendmail` and git's `sendemail.sendmailCmd`: do they reach
/// sshmail? (A WARN at most: sending is optional.)
pub fn sendmail(report: &mut Report) {
    let ours = std::env::current_exe().ok().and_then(|p| p.canonicalize().ok());
    let points_here = |p: &Path| ours.is_some() && p.canonicalize().ok() == ours;
    let system = Path::new("/usr/sbin/sendmail");
    if points_here(system) {
        report.pass("sendmail", "/usr/sbin/sendmail is sshmail");
    } else if system.exists() {
        report.warn(
            "sendmail",
            format!("/usr/sbin/sendmail is another program ({})", system.canonicalize().unwrap_or_default().display()),
            "mail clients that run /usr/sbin/sendmail do not use sshmail; point them at `sshmail sendmail`",
        );
    } else {
        report.warn(
            "sendmail",
            "/usr/sbin/sendmail does not exist",
            "to send with sshmail from any client: scripts/install --sendmail-link /usr/sbin/sendmail (as root)",
        );
    }
    let git = std::process::Command::new("git")
        .args(["config", "--get", "sendemail.sendmailCmd"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match git {
        Ok(out) if out.status.success() => {
            let cmd = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let first = cmd.split_whitespace().next().unwrap_or("");
            let resolved = found_in_path(first);
            if cmd.contains("sshmail") || resolved.as_deref().is_some_and(points_here) {
                report.pass("git", format!("sendemail.sendmailCmd = {cmd}"));
            } else {
                report.warn(
                    "git",
                    format!("sendemail.sendmailCmd = {cmd}, not sshmail"),
                    "git config --global sendemail.sendmailCmd 'sshmail sendmail'",
                );
            }
        }
        Ok(_) => report.pass("git", "sendemail.sendmailCmd not set (git send-email uses sendmail from PATH)"),
        Err(_) => report.pass("git", "git is not installed"),
    }
}

/// The outbox's oldest entry and the failed ones.
pub fn outbox(report: &mut Report) {
    use crate::send::outbox::Outbox;
    let dir = Outbox::default_dir();
    if !dir.exists() {
        report.pass("outbox", format!("{} empty (not made yet)", dir.display()));
        return;
    }
    let outbox = match Outbox::open(&dir) {
        Ok(o) => o,
        Err(e) => return report.error("outbox", &e, "make the outbox directory writable by you"),
    };
    let queued = outbox.queued().map(|(q, _)| q).unwrap_or_default();
    let failed = outbox.failed().map(|(f, _)| f).unwrap_or_default();
    let now = crate::send::outbox::now();
    match queued.iter().min_by_key(|e| e.envelope.queued) {
        None => report.pass("outbox", format!("{}: nothing queued", dir.display())),
        Some(oldest) => {
            let age = now.saturating_sub(oldest.envelope.queued);
            let what = format!(
                "{} queued; the oldest ({}) for {} s{}",
                queued.len(),
                oldest.id,
                age,
                oldest.state.last_error.as_ref().map(|e| format!(", last error: {e}")).unwrap_or_default()
            );
            if age > 3600 {
                report.warn("outbox", what, "sshmail queue shows why; sshmail queue flush tries now");
            } else {
                report.pass("outbox", what);
            }
        }
    }
    if !failed.is_empty() {
        report.warn("outbox", format!("{} message(s) refused for good", failed.len()), "sshmail queue lists them");
    }
}

/// The daemon: running or not, and each folder's last error.
pub async fn daemon(report: &mut Report, config: &Path, default: bool) {
    use crate::control::{Command, NoAnswer, Paths, Response, ask};
    let paths = Paths::for_config(config, default);
    let response = match ask(&paths, Command::Status { accounts: Vec::new() }, std::time::Duration::from_secs(5)).await
    {
        Ok(r) => r,
        Err(NoAnswer::Unsafe(why)) => {
            report.fail("daemon", why, "remove what another user made there, then start the daemon", Exit::Permissions);
            return;
        }
        Err(NoAnswer::NotRunning(why, others)) if !others.is_empty() => {
            report.warn("daemon", why, "give the same --config to every sshmail command");
            return;
        }
        Err(_) => {
            report.pass("daemon", "not running (fine with cron; `sshmail daemon` or the systemd unit for push)");
            return;
        }
    };
    let status = match response {
        Response::Status { status } => status,
        Response::Refused(r) => {
            report.warn("daemon", format!("answered: {}", r.text), "sshmail status");
            return;
        }
        other => {
            report.warn("daemon", format!("answered: {other:?}"), "run the same sshmail for the daemon and the doctor");
            return;
        }
    };
    report.pass("daemon", format!("running, PID {}", status.pid));
    if let Some(e) = &status.config_error {
        report.warn("daemon", format!("it runs the config as it was: {e}"), "fix the file, then sshmail reload");
    }
    for account in &status.accounts {
        for folder in &account.folders {
            if let Some(e) = &folder.last_error {
                report.warn(
                    "daemon",
                    format!("{} {}: {}", account.name, folder.folder, e.text),
                    "the hops above show where; sshmail poll retries now",
                );
            }
        }
    }
}

/// Mail ports a forward may carry.
const MAIL_PORTS: [u16; 8] = [25, 110, 143, 465, 587, 993, 995, 24];

/// A WARN for every `ssh -L` of a mail port running here: its local port is
/// open to every user of this machine.
pub fn forwards(report: &mut Report) {
    let mut found = 0;
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let argv: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if argv.first().and_then(|a| Path::new(a).file_name()).is_none_or(|n| n != "ssh") {
            continue;
        }
        for spec in local_forwards(&argv) {
            if let Some((bind, local, remote)) = mail_forward(&spec) {
                found += 1;
                report.warn(
                    "forwards",
                    format!("ssh (PID {pid}) forwards {bind}:{local} to mail port {remote}: any user of this machine can connect to it"),
                    "sshmail's forward opens no local port: import the setup (sshmail import fetchmailrc) and stop that ssh",
                );
            }
        }
    }
    if found == 0 {
        report.pass("forwards", "no ssh -L forward of a mail port runs here");
    }
}

/// The `-L` specs of an ssh command line.
fn local_forwards(argv: &[String]) -> Vec<String> {
    let mut specs = Vec::new();
    let mut words = argv.iter().skip(1);
    while let Some(w) = words.next() {
        if w == "-L" {
            specs.extend(words.next().cloned());
        } else if let Some(rest) = w.strip_prefix("-L") {
            specs.push(rest.to_string());
        } else if let Some(rest) = w.strip_prefix("-oLocalForward=") {
            specs.push(rest.replacen(' ', ":", 1));
        }
    }
    specs
}

/// `[bind:]port:host:hostport` of a mail port: (bind, port, hostport).
/// A Unix socket forward (a path) is private to its owner: not warned of.
fn mail_forward(spec: &str) -> Option<(String, u16, u16)> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (bind, local, remote) = match parts.as_slice() {
        [local, _, remote] => ("localhost", *local, *remote),
        [bind, local, _, remote] => (*bind, *local, *remote),
        _ => return None,
    };
    let local: u16 = local.parse().ok()?;
    let remote: u16 = remote.parse().ok()?;
    MAIL_PORTS.contains(&remote).then(|| (bind.to_string(), local, remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ssh_l_of_a_mail_port_is_recognised_in_every_spelling() {
        let argv: Vec<String> = [
            "ssh",
            "-C",
            "-f",
            "popserver",
            "-L",
            "11110:popserver:110",
            "-L2525:localhost:25",
            "-L",
            "8080:web:80",
            "sleep",
            "5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let specs = local_forwards(&argv);
        assert_eq!(specs, ["11110:popserver:110", "2525:localhost:25", "8080:web:80"]);
        let mail: Vec<_> = specs.iter().filter_map(|s| mail_forward(s)).collect();
        assert_eq!(mail, [("localhost".to_string(), 11110, 110), ("localhost".to_string(), 2525, 25)]);
        assert_eq!(mail_forward("*:1143:imap:143"), Some(("*".to_string(), 1143, 143)));
        assert_eq!(mail_forward("/tmp/s:imap:143"), None);
    }
}
