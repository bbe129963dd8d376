//! The SSH pool against the real sshd (at OpenSSH's default MaxSessions):
//! connections shared only by accounts that trust alike, and more exec
//! channels at once than one connection allows.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Env, assert_exit, stderr, wait_bounded};
use sshmail::config::{RawAccount, Resolving, resolve};
use sshmail::ssh::{SshPool, SshTarget};
use sshmail_testbed::{MAIL_USER, Options, corpus};

/// The testbed's SSH login as a resolved target.
fn ssh_target(env: &Env) -> SshTarget {
    let raw = RawAccount {
        ssh: Some(env.bed.ssh_destination()),
        identity: Some(vec![env.bed.client_key.display().to_string()]),
        known_hosts: Some(env.bed.known_hosts.display().to_string()),
        ..Default::default()
    };
    resolve("pool", &raw, &Resolving::default()).unwrap().route.ssh.unwrap().0
}

/// The security defect: account A (`accept-new`, its own empty
/// known_hosts) verified the host, and account B (`strict`, another empty
/// known_hosts) to the same host got its mail over A's connection instead
/// of being refused.
#[test]
fn host_keys_are_verified_per_account_a_strict_account_never_rides_an_accept_new_connection() {
    let mut env = Env::new();
    env.add_messages((0..3).map(|i| corpus::mixed_message(i, 0)));
    let home = env.home.path().display().to_string();
    let account = |name: &str, policy: &str| {
        format!(
            r#"
[account.{name}]
ssh = "{dest}"
server = "127.0.0.1:{pop3}"
user = "{MAIL_USER}"
password_command = ["cat", "{home}/password"]
identity = ["{key}"]
known_hosts = "{home}/known_hosts_{name}"
host_key_policy = "{policy}"
policy = "keep"
deliver = "maildir:{home}/{name}-mail"
received = false
"#,
            dest = env.bed.ssh_destination(),
            pop3 = env.bed.pop3_port,
            key = env.bed.client_key.display(),
        )
    };
    let config = format!("state_dir = \"{home}/state\"\n{}{}", account("a", "accept-new"), account("b", "strict"));
    let path = env.home.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sshmail"))
        .env("HOME", env.home.path())
        .env_remove("SSH_AUTH_SOCK")
        .args(["fetch", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, Duration::from_secs(120));
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("b: host key for") && err.contains("not known"), "{err}");
    assert_eq!(common::read_dir_contents(&env.home.path().join("a-mail/new")).len(), 3, "{err}");
    assert!(common::read_dir_contents(&env.home.path().join("b-mail/new")).is_empty(), "B got mail: {err}");
}

/// OpenSSH refuses the 11th session channel on a connection (MaxSessions
/// 10): the pool opens another connection instead of failing.
#[test]
fn more_exec_channels_than_max_sessions_at_once_all_work() {
    let env = Env::new();
    let target = ssh_target(&env);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let pool = SshPool::new();
        // 25 channels open at once, each a `cat` that echoes what it gets.
        let mut streams = Vec::new();
        for _ in 0..25 {
            let (stream, _, _) = pool.exec(&target, &[], "cat").await.expect("an exec channel");
            streams.push(stream);
        }
        assert_eq!(pool.connections(), 3, "25 channels at 10 per connection");
        for (i, s) in streams.iter_mut().enumerate() {
            s.write_all(format!("channel {i}\n").as_bytes()).await.unwrap();
        }
        for (i, s) in streams.iter_mut().enumerate() {
            let want = format!("channel {i}\n");
            let mut got = vec![0u8; want.len()];
            tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got)).await.unwrap().unwrap();
            assert_eq!(got, want.as_bytes());
        }
        // Closed channels free their slots: the next ones reuse connections.
        drop(streams);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (mut s, _, _) = pool.exec(&target, &[], "echo again").await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            assert_eq!(out, "again\n");
            if pool.connections() == 3 || std::time::Instant::now() > deadline {
                break;
            }
        }
        assert_eq!(pool.connections(), 3, "no further connection for channels that fit");
        pool.close_all().await;
    });
}

/// A server that allows fewer session channels than OpenSSH's default
/// refuses one early: the pool takes that as the connection's limit and
/// goes on on another connection.
#[test]
fn a_lower_max_sessions_is_learned_from_the_refusal() {
    let env = Env::with(Options { max_sessions: Some(3), ..Options::default() });
    let target = ssh_target(&env);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let pool = SshPool::new();
        let mut streams = Vec::new();
        for _ in 0..7 {
            streams.push(pool.exec(&target, &[], "cat").await.expect("an exec channel").0);
        }
        assert_eq!(pool.connections(), 3, "7 channels at 3 per connection");
        for s in &mut streams {
            s.write_all(b"x\n").await.unwrap();
            let mut got = [0u8; 2];
            tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got)).await.unwrap().unwrap();
            assert_eq!(&got, b"x\n");
        }
        pool.close_all().await;
    });
}

/// A connection nobody leases is closed after the idle time; the next lease
/// connects again.
#[test]
fn an_idle_connection_is_closed_and_replaced_on_the_next_lease() {
    let env = Env::new();
    let target = ssh_target(&env);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let pool = SshPool::with_idle_close(Duration::from_millis(300));
        let (out, status) = pool.run(&target, &[], "echo one").await.unwrap();
        assert_eq!((out.as_slice(), status), (&b"one\n"[..], Some(0)));
        assert_eq!(pool.connections(), 1);
        tokio::time::sleep(Duration::from_millis(600)).await;
        pool.reap();
        assert_eq!(pool.connections(), 0, "the idle connection was not closed");
        let (out, _) = pool.run(&target, &[], "echo two").await.unwrap();
        assert_eq!(out, b"two\n");
        pool.close_all().await;
    });
    let logins = std::fs::read_to_string(env.bed.sshd_log()).unwrap().matches("Accepted publickey").count();
    assert_eq!(logins, 2);
}

/// A pool that does not prompt (what the daemon uses) never asks for a
/// passphrase: an encrypted key the agent does not hold is passed over,
/// and the refusal names that key and how to hand it to the agent.
#[test]
fn a_pool_that_does_not_prompt_names_the_key_that_needs_the_agent() {
    let env = Env::new();
    let key = env.home.path().join("encrypted_key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "a passphrase", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let mut target = ssh_target(&env);
    target.identities = vec![key.clone()];
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let err = runtime.block_on(async { SshPool::new().get(&target, &[]).await.map(|_| ()) }).unwrap_err();
    assert_eq!(err.exit().code(), 3, "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("ssh-add {}", key.display())), "{text}");
    assert!(text.contains("asks for no passphrase"), "{text}");
}
