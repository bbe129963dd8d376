//! SSH failures end the run with a clear message, the right exit code, and
//! nothing fetched. Against real sshd and Dovecot.

mod common;

use common::{Env, assert_exit, stderr};
use sshmail_testbed::{Options, corpus};

fn env_with_mail() -> Env {
    let mut env = Env::new();
    env.add_messages((0..5).map(|i| corpus::mixed_message(i, 0)));
    env
}

#[test]
fn host_keys_are_verified_unknown_host_is_refused() {
    let env = env_with_mail();
    let empty = env.home.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let out = env.run(&["--known-hosts", empty.to_str().unwrap()]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("is not known") && err.contains("SHA256:"), "{err}");
    assert!(env.delivered().is_empty());
    assert_eq!(env.bed.server_message_count().unwrap(), 5);
}

#[test]
fn accept_new_records_a_hashed_line_and_then_trusts_it() {
    let env = env_with_mail();
    let kh = env.home.path().join("kh/known_hosts");
    let out = env.run(&["--known-hosts", kh.to_str().unwrap(), "--accept-new-host-key", "--keep"]);
    assert_exit(&out, 0);
    let text = std::fs::read_to_string(&kh).unwrap();
    assert!(text.starts_with("|1|") && !text.contains("127.0.0.1"), "{text}");
    assert!(text.contains(&env.bed.host_key_line), "{text}");
    // Strict from now on, and the recorded key is trusted.
    let out = env.run(&["--known-hosts", kh.to_str().unwrap(), "--keep"]);
    assert_exit(&out, 1);
}

#[test]
fn host_keys_are_verified_changed_key_is_refused_even_with_accept_new() {
    let env = env_with_mail();
    let kh = env.changed_known_hosts("changed_known_hosts");
    let out = env.run(&["--known-hosts", kh.to_str().unwrap(), "--accept-new-host-key"]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("changed"), "{err}");
    assert!(err.contains(&format!("{}:2", kh.display())), "names file:line: {err}");
    assert_eq!(err.matches("SHA256:").count(), 2, "names both fingerprints: {err}");
    assert!(env.delivered().is_empty());
    assert_eq!(env.bed.server_message_count().unwrap(), 5);
}

#[test]
fn host_keys_are_verified_revoked_key_is_refused() {
    let env = env_with_mail();
    let kh = env.home.path().join("revoked_known_hosts");
    std::fs::write(
        &kh,
        format!(
            "[127.0.0.1]:{port} {line}\n@revoked * {line}\n",
            port = env.bed.ssh_port,
            line = env.bed.host_key_line
        ),
    )
    .unwrap();
    let out = env.run(&["--known-hosts", kh.to_str().unwrap()]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));
    assert!(env.delivered().is_empty());
}

#[test]
fn wrong_ssh_key_gives_exit_3() {
    let env = env_with_mail();
    let wrong = env.home.path().join("wrong_key");
    sshmail_testbed::generate_key(&wrong).unwrap();
    let out = env.command_with_identity(&wrong, &[]).output().unwrap();
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("SSH authentication"), "{}", stderr(&out));
    assert!(env.delivered().is_empty());
}

#[test]
fn wrong_mail_password_gives_exit_3() {
    let env = env_with_mail();
    std::fs::write(env.home.path().join("password"), "not the password").unwrap();
    let out = env.run(&[]);
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("login as mailuser refused"), "{}", stderr(&out));
    assert_eq!(env.bed.server_message_count().unwrap(), 5);
}

#[test]
fn forwarding_forbidden_gives_a_clear_error() {
    let mut env = Env::with(Options { allow_tcp_forwarding: false, ..Options::default() });
    env.add_messages((0..3).map(|i| corpus::mixed_message(i, 0)));
    let out = env.run(&[]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("AllowTcpForwarding"), "{}", stderr(&out));
    assert!(env.delivered().is_empty());
}

#[test]
fn nothing_listening_at_the_server_address_gives_a_clear_error() {
    let env = env_with_mail();
    let mut cmd = env.command(&[]);
    // A later --server wins.
    cmd.args(["--server", "127.0.0.1:1"]);
    let out = cmd.output().unwrap();
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("refused the forward to 127.0.0.1:1"), "{}", stderr(&out));
}

#[test]
fn ssh_agent_keys_are_used() {
    let env = env_with_mail();
    let sock = env.home.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent (openssh-client) runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sock.exists() {
        assert!(std::time::Instant::now() < deadline, "ssh-agent did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let added = std::process::Command::new("ssh-add")
        .arg(&env.bed.client_key)
        .env("SSH_AUTH_SOCK", &sock)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(added.success());
    // No usable identity file: only the agent can log in.
    let missing = env.home.path().join("no-such-key");
    let out = env.command_with_identity(&missing, &["--keep"]).env("SSH_AUTH_SOCK", &sock).output().unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    assert_exit(&out, 0);
    assert_eq!(env.delivered().len(), 5);
}

#[test]
fn encrypted_key_without_a_terminal_says_to_use_the_agent() {
    let env = env_with_mail();
    let key = env.home.path().join("encrypted_key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "a passphrase", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let out = env.command_with_identity(&key, &[]).output().unwrap();
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("encrypted; no terminal"), "{}", stderr(&out));
    assert!(env.delivered().is_empty());
}
