//! Durable before destructive, checked on the system calls themselves.
//!
//! A SIGKILL does not lose the page cache, so the crash tests cannot tell a
//! missing fsync. Here sshmail runs under strace against the real sshd and
//! Dovecot, through the system `ssh` as the tunnel command so that what it
//! tells the server is plain text on the pipe; the test then checks, for
//! every message, that before the first DELE (POP3) or STORE \Deleted (IMAP)
//! was written:
//!
//! 1. the staged file in `tmp/` was fdatasync'd,
//! 2. then the ledger was synced (the `P` record),
//! 3. then the file was renamed into `new/`,
//! 4. then `new/` was fsync'd,
//! 5. then the ledger was synced again (the `D` record).
//!
//! Removing or reordering any of these makes the test fail.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Env, assert_exit, wait_bounded};
use sshmail_testbed::corpus;

#[derive(Debug, Clone, PartialEq)]
enum Call {
    /// fsync/fdatasync of a path.
    Sync(String),
    /// rename(from, to).
    Rename(String, String),
    /// A write that tells the server to delete.
    Delete,
    /// A connection to a network address (the relay, through SSH).
    Connect,
    /// The `send` request handing an outbox entry to the daemon.
    Handoff,
    /// The process exits (its status is what the caller sees).
    Exit,
}

/// The quoted strings of an strace line, in order.
fn quoted(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(a) = rest.find('"') {
        let after = &rest[a + 1..];
        let Some(b) = after.find('"') else { break };
        out.push(after[..b].to_string());
        rest = &after[b + 1..];
    }
    out
}

/// The calls of an `strace -f -y` log, in completion order. A call that
/// another thread interrupted is logged in two halves (`… <unfinished ...>`
/// and `<... fsync resumed>) = 0`); it counts when it completes.
fn parse(trace: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut unfinished: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for line in trace.lines() {
        let (pid, body) = match line.split_once(' ') {
            Some((pid, rest)) if pid.parse::<u32>().is_ok() => (pid.to_string(), rest.trim_start()),
            _ => (String::new(), line),
        };
        let is_sync = body.starts_with("fsync(") || body.starts_with("fdatasync(");
        let path = || body.find('<').and_then(|a| body[a + 1..].find('>').map(|b| body[a + 1..a + 1 + b].to_string()));
        if is_sync && body.ends_with("<unfinished ...>") {
            if let Some(p) = path() {
                unfinished.insert(pid, p);
            }
        } else if body.starts_with("<... fsync resumed>") || body.starts_with("<... fdatasync resumed>") {
            if let Some(p) = unfinished.remove(&pid)
                && body.ends_with("= 0")
            {
                calls.push(Call::Sync(p));
            }
        } else if is_sync && body.ends_with("= 0") {
            if let Some(p) = path() {
                calls.push(Call::Sync(p));
            }
        } else if body.starts_with("rename") && body.ends_with("= 0") {
            let q = quoted(body);
            if q.len() >= 2 {
                calls.push(Call::Rename(q[0].clone(), q[1].clone()));
            }
        } else if body.starts_with("connect(") && (body.contains("AF_INET") || body.contains("AF_INET6")) {
            calls.push(Call::Connect);
        } else if (body.starts_with("write(") || body.starts_with("sendto(") || body.starts_with("writev("))
            && body.contains(r#"\"command\":\"send\""#)
        {
            calls.push(Call::Handoff);
        } else if body.starts_with("exit_group(") {
            calls.push(Call::Exit);
        } else if body.starts_with("write(")
            && body.contains("<pipe:")
            && (body.contains("DELE ") || (body.contains("STORE") && body.contains("Deleted")))
        {
            calls.push(Call::Delete);
        }
    }
    calls
}

/// Checks the order for every message published into `new/` before the
/// first delete; returns how many there were.
fn check_order(calls: &[Call], maildir: &str) -> usize {
    let first_delete = calls.iter().position(|c| *c == Call::Delete).expect("no delete was sent");
    let before = &calls[..first_delete];
    let ledger_syncs: Vec<usize> = before
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, Call::Sync(p) if p.ends_with(".ledger")))
        .map(|(i, _)| i)
        .collect();
    let new_dir = format!("{maildir}/new");
    let mut published = 0;
    for (r, c) in before.iter().enumerate() {
        let Call::Rename(from, to) = c else { continue };
        if !(from.starts_with(&format!("{maildir}/tmp/")) && to.starts_with(&format!("{new_dir}/"))) {
            continue;
        }
        published += 1;
        let synced = before[..r].iter().rposition(|c| *c == Call::Sync(from.clone()));
        let synced = synced.unwrap_or_else(|| panic!("{from} was renamed into new/ without an fdatasync first"));
        assert!(
            ledger_syncs.iter().any(|&l| l > synced && l < r),
            "{from}: no ledger sync (P record) between its fdatasync and its rename"
        );
        let dir_sync = before[r..]
            .iter()
            .position(|c| *c == Call::Sync(new_dir.clone()))
            .map(|p| p + r)
            .unwrap_or_else(|| panic!("{to}: new/ was not fsync'd before the server was told to delete"));
        assert!(
            ledger_syncs.iter().any(|&l| l > dir_sync),
            "{to}: no ledger sync (D record) after new/ was fsync'd and before the delete"
        );
    }
    published
}

/// Runs `inner` (an sshmail command line) under strace; returns the calls.
fn strace_fetch(env: &Env, inner: std::process::Command) -> Vec<Call> {
    strace_with_input(env, inner, b"")
}

/// Runs `inner` under strace with `input` on its stdin; returns the calls.
fn strace_with_input(env: &Env, inner: std::process::Command, input: &[u8]) -> Vec<Call> {
    let trace = env.home.path().join("trace");
    let mut cmd = std::process::Command::new("strace");
    cmd.args(["-f", "-qq", "-y", "-s", "200", "-e"])
        .arg("trace=fsync,fdatasync,rename,renameat,renameat2,write,writev,sendto,connect,exit_group")
        .arg("-o")
        .arg(&trace)
        .arg("--")
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    {
        use std::io::Write as _;
        let _ = child.stdin.take().unwrap().write_all(input);
    }
    let out = wait_bounded(child, Duration::from_secs(120));
    assert_exit(&out, 0);
    parse(&std::fs::read_to_string(&trace).unwrap())
}

/// Checks that the outbox entry was made durable before any network work
/// and before the exit: its file synced in `tmp/`, renamed into `new/`,
/// `new/` synced; then the relay's connection or the hand-off to the
/// daemon, and the exit. Returns the entry's name.
fn check_outbox_order(calls: &[Call], outbox: &str) -> String {
    let tmp = format!("{outbox}/tmp/");
    let new_dir = format!("{outbox}/new");
    let r = calls
        .iter()
        .position(|c| matches!(c, Call::Rename(from, to) if from.starts_with(&tmp) && to.starts_with(&new_dir)))
        .unwrap_or_else(|| panic!("no entry was renamed into {new_dir}: {calls:?}"));
    let Call::Rename(from, to) = &calls[r] else { unreachable!() };
    assert!(calls[..r].contains(&Call::Sync(from.clone())), "{from} was renamed into new/ without a sync first");
    let synced = calls[r..]
        .iter()
        .position(|c| *c == Call::Sync(new_dir.clone()))
        .map(|p| p + r)
        .unwrap_or_else(|| panic!("{to}: new/ was not fsync'd"));
    let network = calls.iter().position(|c| matches!(c, Call::Connect | Call::Handoff));
    let network = network.unwrap_or_else(|| panic!("neither a relay connection nor a hand-off: {calls:?}"));
    assert!(network > synced, "{to}: network work before new/ was fsync'd");
    let exit = calls.iter().rposition(|c| *c == Call::Exit).expect("an exit");
    assert!(exit > synced, "{to}: exit before new/ was fsync'd");
    to.rsplit('/').next().unwrap().to_string()
}

/// `sshmail sendmail` relaying to `sink` through the testbed's sshd.
fn sendmail_setup(env: &Env, sink: &common::SmtpServer) -> std::path::PathBuf {
    let config = env.home.path().join("config.toml");
    let account = env.pop3_toml(
        "isp",
        &format!("fetch = false\nsend.server = \"127.0.0.1:{}\"\nsend.from = [\"me@example.net\"]\n", sink.port),
    );
    common::Daemon::write_config(&config, &env.config_toml(&account));
    config
}

fn sendmail_command(env: &Env, config: &std::path::Path) -> std::process::Command {
    let mut c = common::Daemon::base_command(env.home.path());
    c.args(["sendmail", "--config"]).arg(config).args(["-i", "you@example.org"]);
    c
}

#[test]
fn accepted_means_durable_sendmail_syncs_the_outbox_entry_before_any_network_work_alone_and_through_the_daemon() {
    let env = Env::new();
    let sink = common::SmtpServer::start(&env.home.path().join("smtp"), None);
    let config = sendmail_setup(&env, &sink);
    let outbox = env.home.path().join(".local/share/sshmail/outbox").display().to_string();
    // Alone: queued, then relayed on a connection of its own.
    let calls = strace_with_input(&env, sendmail_command(&env, &config), b"Subject: alone\n\nbody\n");
    check_outbox_order(&calls, &outbox);
    assert!(calls.contains(&Call::Connect) && !calls.contains(&Call::Handoff), "relayed alone: {calls:?}");
    assert_eq!(sink.received().len(), 1);
    // With a daemon: queued, then handed to it over the control socket.
    let daemon = common::Daemon::spawn(env.home.path(), &config, &[]);
    daemon.log.wait_until("the daemon is up", |l| l.contains("started:"));
    let calls = strace_with_input(&env, sendmail_command(&env, &config), b"Subject: handed\n\nbody\n");
    check_outbox_order(&calls, &outbox);
    assert!(calls.contains(&Call::Handoff) && !calls.contains(&Call::Connect), "handed over: {calls:?}");
    assert_eq!(sink.received().len(), 2);
    daemon.stop();
}

#[test]
fn the_outbox_order_check_catches_a_missing_fsync() {
    let o = "/o";
    let good = [
        Call::Sync("/o/tmp/e".into()),
        Call::Rename("/o/tmp/e".into(), "/o/new/e".into()),
        Call::Sync("/o/new".into()),
        Call::Connect,
        Call::Exit,
    ];
    assert_eq!(check_outbox_order(&good, o), "e");
    for drop in [0, 2] {
        let bad: Vec<Call> = good.iter().enumerate().filter(|(i, _)| *i != drop).map(|(_, c)| c.clone()).collect();
        assert!(
            std::panic::catch_unwind(|| check_outbox_order(&bad, o)).is_err(),
            "dropping step {drop} went unnoticed"
        );
    }
    // The fsync of new/ after the relay began is too late.
    let late = [
        Call::Sync("/o/tmp/e".into()),
        Call::Rename("/o/tmp/e".into(), "/o/new/e".into()),
        Call::Connect,
        Call::Sync("/o/new".into()),
        Call::Exit,
    ];
    assert!(std::panic::catch_unwind(|| check_outbox_order(&late, o)).is_err());
}

#[test]
fn durable_before_destructive_fsyncs_and_renames_precede_every_dele() {
    let mut env = Env::new();
    env.add_messages((0..30).map(|i| corpus::mixed_message(i, 0)));
    // `ssh -W` is a stdio forward: the tunnel carries the POP3 session.
    let tunnel = env.ssh_tunnel(&format!("-W 127.0.0.1:{}", env.bed.pop3_port), "");
    let mut cmd = env.fetch_command("--pop3", &env.bed.client_key);
    cmd.args(["--via", "command", "--tunnel", &tunnel]).args(env.login_args());
    let calls = strace_fetch(&env, cmd);
    let maildir = env.maildir().display().to_string();
    assert_eq!(check_order(&calls, &maildir), 30, "every message published before the first DELE");
    assert_eq!(env.delivered(), env.expected());
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
}

#[test]
fn durable_before_destructive_fsyncs_and_renames_precede_every_imap_delete() {
    let mut env = Env::new();
    env.add_messages((0..30).map(|i| corpus::mixed_message(i, 0)));
    let tunnel = env.ssh_tunnel("", "/usr/lib/dovecot/imap");
    let calls = strace_fetch(&env, env.imap_command(&["--via", "command", "--tunnel", &tunnel]));
    let maildir = env.maildir().display().to_string();
    assert_eq!(check_order(&calls, &maildir), 30, "every message published before the first STORE \\Deleted");
    assert_eq!(env.delivered(), env.expected());
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
}

#[test]
fn the_order_check_catches_a_missing_directory_fsync() {
    // The checker itself can fail: the same sequence without the fsync of
    // new/ is refused.
    let m = "/m";
    let good = vec![
        Call::Sync("/m/tmp/a".into()),
        Call::Sync("/s/x.ledger".into()),
        Call::Rename("/m/tmp/a".into(), "/m/new/a".into()),
        Call::Sync("/m/new".into()),
        Call::Sync("/s/x.ledger".into()),
        Call::Delete,
    ];
    assert_eq!(check_order(&good, m), 1);
    for drop in 0..5 {
        let mut bad: Vec<Call> = Vec::new();
        for (i, c) in good.iter().enumerate() {
            if i != drop {
                bad.push(c.clone());
            }
        }
        let r = std::panic::catch_unwind(|| check_order(&bad, m));
        assert!(r.is_err() || r.unwrap() == 0, "dropping step {drop} went unnoticed");
    }
}
