//! PREAUTH refused where a login was expected, through the real transports:
//! a scripted IMAP server that greets `* PREAUTH` sits on a loopback TCP
//! port, reached through the real sshd's forward, over TLS (OpenSSL's
//! s_server with the testbed's certificate in front of it), and by STARTTLS.
//! Forward and TLS refuse it unless `allow_preauth = true`; STARTTLS always
//! does (a PREAUTH there would mean talking in plain text).

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};

use common::{Env, assert_exit, stderr};
use sshmail_testbed::Options;

/// The scripted `imap` scenario (it greets PREAUTH) on a loopback port.
fn preauth_server(state: &std::path::Path) -> u16 {
    common::scripted_tcp_server("imap", state)
}

/// OpenSSL's s_server on a fresh port, TLS in front of the scripted PREAUTH
/// server for one connection.
fn tls_preauth_server(env: &Env, state: &std::path::Path) -> (u16, std::process::Child, std::process::Child) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut imap = Command::new(common::testbed_bin())
        .args(["hostile", "imap", "--state"])
        .arg(state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let dir = env.bed.ca_cert.parent().unwrap();
    let tls = Command::new("openssl")
        .args(["s_server", "-quiet", "-naccept", "1", "-accept", &format!("127.0.0.1:{port}"), "-cert"])
        .arg(dir.join("server.pem"))
        .arg("-key")
        .arg(dir.join("server.key"))
        .stdin(Stdio::from(imap.stdout.take().unwrap()))
        .stdout(Stdio::from(imap.stdin.take().unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl (s_server) must be installed");
    // Wait until it listens, without connecting (it accepts only one).
    let want = format!(":{port:04X} 00000000:0000 0A");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string("/proc/net/tcp").unwrap().contains(&want) {
        assert!(std::time::Instant::now() < deadline, "s_server did not listen");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (port, tls, imap)
}

/// A config file with one IMAP account, `extra` lines added.
fn config(env: &Env, extra: &str) -> std::path::PathBuf {
    let path = env.home.path().join(format!("config-{}.toml", extra.len()));
    let text = format!(
        "state_dir = \"{}\"\n[account.p]\nprotocol = \"imap\"\nidentity = [\"{}\"]\nknown_hosts = \"{}\"\ndeliver = \"maildir:{}\"\nreceived = false\n{extra}\n",
        env.state_dir().display(),
        env.bed.client_key.display(),
        env.bed.known_hosts.display(),
        env.maildir().display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn fetch(config: &std::path::Path) -> std::process::Output {
    let child = Command::new(env!("CARGO_BIN_EXE_sshmail"))
        .env("HOME", config.parent().unwrap())
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .args(["fetch", "--config"])
        .arg(config)
        .spawn()
        .unwrap();
    common::wait_bounded(child, std::time::Duration::from_secs(60))
}

#[test]
fn preauth_on_a_forwarded_port_is_refused_unless_allowed() {
    let env = Env::new();
    let state = env.home.path().join("script");
    let port = preauth_server(&state);
    let account = format!(
        "ssh = \"{}\"\nvia = \"forward\"\nserver = \"127.0.0.1:{port}\"\nuser = \"u\"\npassword_command = \"echo pw\"",
        env.bed.ssh_destination()
    );
    let out = fetch(&config(&env, &account));
    assert_exit(&out, 4);
    assert!(stderr(&out).contains("allow_preauth"), "{}", stderr(&out));
    assert!(env.delivered().is_empty());
    let out = fetch(&config(&env, &format!("{account}\nallow_preauth = true")));
    assert_exit(&out, 0);
    assert_eq!(env.delivered().len(), 3);
}

#[test]
fn preauth_over_tls_is_refused_unless_allowed() {
    let env = Env::with(Options { tls: true, ..Options::default() });
    let state = env.home.path().join("script");
    let ca = env.bed.ca_cert.display().to_string();
    for (allow, want) in [(false, 4), (true, 0)] {
        let (port, mut tls, mut imap) = tls_preauth_server(&env, &state);
        let account = format!(
            "via = \"tls\"\nserver = \"localhost:{port}\"\ntls_ca_file = \"{ca}\"\nuser = \"u\"\npassword_command = \"echo pw\"{}",
            if allow { "\nallow_preauth = true" } else { "" }
        );
        let out = fetch(&config(&env, &account));
        let _ = (tls.kill(), imap.kill(), tls.wait(), imap.wait());
        assert_exit(&out, want);
        if !allow {
            assert!(stderr(&out).contains("allow_preauth"), "{}", stderr(&out));
            assert!(env.delivered().is_empty());
        }
    }
    assert_eq!(env.delivered().len(), 3);
}

#[test]
fn preauth_before_starttls_is_always_refused() {
    let env = Env::new();
    let state = env.home.path().join("script");
    let port = preauth_server(&state);
    let account = format!(
        "via = \"starttls\"\nserver = \"127.0.0.1:{port}\"\nuser = \"u\"\npassword_command = \"echo pw\"\nallow_preauth = true"
    );
    let out = fetch(&config(&env, &account));
    assert_exit(&out, 4);
    assert!(stderr(&out).contains("must first switch to TLS"), "{}", stderr(&out));
    assert!(env.delivered().is_empty());
    // It never got as far as a command.
    assert!(std::fs::read_to_string(state.join("log")).unwrap_or_default().is_empty());
}
