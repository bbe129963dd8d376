//! GNU mailutils' pop3d and imap4d as daemons on loopback ports, reached
//! through the real sshd's forward with a password login: a second POP3
//! and IMAP implementation beside Dovecot.

mod common;

use std::process::Output;

use common::{Env, assert_exit, stderr};
use sshmail_testbed::{MAILUTILS_USER, Options, corpus};

fn env() -> Env {
    Env::with(Options { mailutils: true, ..Options::default() })
}

/// `sshmail fetch PROTOCOL` through the forward to mailutils' daemon.
fn run(env: &Env, protocol: &str, extra: &[&str]) -> Output {
    let port = if protocol == "--pop3" { env.bed.mailutils_pop3_port } else { env.bed.mailutils_imap_port };
    let mut cmd = env.fetch_command(protocol, &env.bed.client_key);
    cmd.arg("--ssh")
        .arg(env.bed.ssh_destination())
        .arg("--server")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--user", MAILUTILS_USER, "--password-command"])
        .arg(format!("cat '{}'", env.home.path().join("password").display()))
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    common::wait_bounded(cmd.spawn().unwrap(), std::time::Duration::from_secs(120))
}

/// Puts messages into the daemons' Maildir and remembers them.
fn add(env: &mut Env, msgs: impl IntoIterator<Item = Vec<u8>>) {
    for m in msgs {
        env.bed.add_mailutils_message(&m).unwrap();
        env.originals.push(m);
    }
}

/// What was delivered, with the `X-UIDL:` line pop3d inserts into every
/// message it sends taken out again (the only change it makes).
fn delivered_without_x_uidl(env: &Env) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = env
        .delivered()
        .into_iter()
        .map(|m| {
            let start = m.windows(8).position(|w| w == b"X-UIDL: ").expect("pop3d adds X-UIDL");
            let end = start + m[start..].iter().position(|&b| b == b'\n').unwrap() + 1;
            [&m[..start], &m[end..]].concat()
        })
        .collect();
    v.sort();
    v
}

fn big_message() -> Vec<u8> {
    let mut big = b"From: big@example.org\nSubject: 30 MB\n\n".to_vec();
    while big.len() < 30 << 20 {
        big.extend_from_slice(b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n");
    }
    big
}

#[test]
fn pop3d_delete_mode_a_second_run_new_mail_and_a_30_mb_message() {
    let mut env = env();
    add(&mut env, (0..20).map(|i| corpus::mixed_message(i, 0)));
    add(&mut env, [big_message()]);
    let out = run(&env, "--pop3", &[]);
    assert_exit(&out, 0);
    assert_eq!(delivered_without_x_uidl(&env), env.expected(), "{}", stderr(&out));
    assert_eq!(env.bed.mailutils_message_count().unwrap(), 0, "delete mode removed what was delivered");
    let out = run(&env, "--pop3", &[]);
    assert_exit(&out, 1);
    add(&mut env, (20..23).map(|i| corpus::mixed_message(i, 0)));
    let out = run(&env, "--pop3", &[]);
    assert_exit(&out, 0);
    assert_eq!(delivered_without_x_uidl(&env), env.expected(), "{}", stderr(&out));
    assert_eq!(env.bed.mailutils_message_count().unwrap(), 0);
}

#[test]
fn pop3d_keep_mode_across_runs_and_new_mail() {
    let mut env = env();
    add(&mut env, (0..5).map(|i| corpus::mixed_message(i, 0)));
    let out = run(&env, "--pop3", &["--keep"]);
    assert_exit(&out, 0);
    assert_eq!(delivered_without_x_uidl(&env), env.expected());
    let out = run(&env, "--pop3", &["--keep"]);
    assert_exit(&out, 1);
    add(&mut env, [corpus::mixed_message(5, 0)]);
    let out = run(&env, "--pop3", &["--keep"]);
    assert_exit(&out, 0);
    assert_eq!(delivered_without_x_uidl(&env), env.expected(), "{}", stderr(&out));
    assert_eq!(env.bed.mailutils_message_count().unwrap(), 6, "keep left everything on the server");
}

#[test]
fn imap4d_daemon_with_login_keep_seen_and_delete() {
    let mut env = env();
    add(&mut env, (0..4).map(|i| corpus::mixed_message(i, 0)));
    let out = run(&env, "--imap", &["--keep"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected(), "{}", stderr(&out));
    assert_exit(&run(&env, "--imap", &["--keep"]), 1);

    add(&mut env, [corpus::mixed_message(4, 0)]);
    let out = run(&env, "--imap", &["--policy", "seen"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected(), "{}", stderr(&out));
    assert_exit(&run(&env, "--imap", &["--policy", "seen"]), 1);
    assert_eq!(env.bed.mailutils_message_count().unwrap(), 5);

    add(&mut env, [corpus::mixed_message(5, 0), big_message()]);
    let out = run(&env, "--imap", &[]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected(), "{}", stderr(&out));
    // Without UIDPLUS, delete mode flags \Deleted and leaves the expunge.
    assert!(stderr(&out).contains("no UIDPLUS"), "{}", stderr(&out));
    let out = run(&env, "--imap", &[]);
    assert_exit(&out, 1);
    assert_eq!(env.delivered(), env.expected());
}
