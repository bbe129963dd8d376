//! SSH servers besides OpenSSH, in front of the testbed's Dovecot: Dropbear
//! (each host key type; a password login) and tinysshd (one session
//! channel per connection, no TCP forwarding). fetch over an exec'd imapd
//! and over a forward, and doctor, as against OpenSSH.

mod common;

use std::path::Path;
use std::process::Output;

use common::{Daemon, Env, assert_exit, stderr, stdout};
use sshmail_testbed::corpus;
use sshmail_testbed::other_sshd::OtherSshd;

fn env_with_mail() -> Env {
    let mut env = Env::new();
    env.add_messages((0..3).map(|i| corpus::mixed_message(i, 0)));
    env
}

/// A config with two accounts on `server`: `imap` (Dovecot's imap exec'd
/// there) and `pop3` (a forward to the testbed's POP3), each `extra` added.
fn config_for(env: &Env, server: &OtherSshd, extra: &str) -> std::path::PathBuf {
    let known = env.home.path().join(format!("known_hosts_{}", server.port));
    std::fs::write(&known, format!("{}\n", server.known_hosts_line)).unwrap();
    let dest = format!("{}@127.0.0.1:{}", env.bed.account.name, server.port);
    let ours = |table: String| {
        table
            .replace(&env.bed.ssh_destination(), &dest)
            .replace(&env.bed.known_hosts.display().to_string(), &known.display().to_string())
    };
    let imapd = format!("imapd = [\"/usr/lib/dovecot/imap\", \"-c\", \"{}\"]\n", env.bed.dovecot_config.display());
    let accounts =
        format!("{}{}", ours(env.imap_toml("imap", &format!("{imapd}{extra}"))), ours(env.pop3_toml("pop3", extra)));
    let path = env.home.path().join(format!("config_{}.toml", server.port));
    Daemon::write_config(&path, &env.config_toml(&accounts));
    path
}

fn sshmail(env: &Env, args: &[&str], config: &Path) -> Output {
    common::sshmail_with_config(env.home.path(), args, config)
}

/// Dropbear with each host key type: IMAP through an exec'd imapd, POP3
/// through a forward, and doctor with every hop passing.
#[test]
fn dropbear_with_each_host_key_type_serves_imap_over_exec_pop3_over_a_forward_and_doctor_passes() {
    let env = env_with_mail();
    for kind in ["ed25519", "rsa", "ecdsa"] {
        let server = OtherSshd::dropbear(&env.bed, kind).unwrap();
        let config = config_for(&env, &server, "keep = true\n");
        let imap_dir = env.home.path().join(format!("imap-{kind}"));
        let out = sshmail(&env, &["fetch", "imap", "--deliver", &format!("maildir:{}", imap_dir.display())], &config);
        assert_exit(&out, 0);
        assert_eq!(common::read_dir_contents(&imap_dir.join("new")).len(), 3, "{kind}: {}", stderr(&out));
        let out = sshmail(&env, &["fetch", "pop3", "--all"], &config);
        assert_exit(&out, 0);
        let out = sshmail(&env, &["doctor", "imap", "pop3"], &config);
        assert_eq!(out.status.code(), Some(0), "{kind}: {}", stdout(&out));
        assert!(!stdout(&out).contains("FAIL"), "{kind}: {}", stdout(&out));
    }
}

/// Dropbear with a password login: no key offered, `ssh_password_command`
/// answers.
#[test]
fn dropbear_takes_a_password_from_ssh_password_command() {
    let env = env_with_mail();
    let server = OtherSshd::dropbear(&env.bed, "ed25519").unwrap();
    let password = format!("pw-{}", std::process::id());
    let _set = PasswordSet::new(&env.bed.account.name, &password);
    let config = config_for(&env, &server, &format!("keep = true\nssh_password_command = \"echo {password}\"\n"));
    // No key at all: the identity lines go.
    let text = std::fs::read_to_string(&config).unwrap();
    let without_key: String = text.lines().filter(|l| !l.starts_with("identity")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&config, without_key).unwrap();
    let out = sshmail(&env, &["fetch", "pop3"], &config);
    assert_exit(&out, 0);
    let out = sshmail(&env, &["doctor", "pop3"], &config);
    assert!(stdout(&out).contains("with password"), "{}", stdout(&out));
}

/// The test login's password, set for one test and locked again after.
struct PasswordSet(String);

impl PasswordSet {
    fn new(login: &str, password: &str) -> PasswordSet {
        let hash = std::process::Command::new("openssl").args(["passwd", "-6", password]).output().unwrap();
        assert!(hash.status.success());
        let hash = String::from_utf8(hash.stdout).unwrap();
        let set = std::process::Command::new("usermod").args(["-p", hash.trim(), login]).status().unwrap();
        assert!(set.success(), "usermod -p");
        PasswordSet(login.to_string())
    }
}

impl Drop for PasswordSet {
    fn drop(&mut self) {
        // As the testbed leaves it: no password, key logins only.
        let _ = std::process::Command::new("usermod").args(["-p", "*", &self.0]).status();
    }
}

/// Regression: on tinysshd, which gives one session channel per
/// connection, doctor's imapd check was refused after its channel check
/// and reported that the server refuses commands, while fetch worked.
/// Now each check that finds the connection spent opens another: doctor
/// passes. POP3 through a forward is refused (tinysshd has none) with
/// advice that names it.
#[test]
fn regression_on_tinysshd_doctor_passes_and_a_forward_is_refused_with_advice() {
    let env = env_with_mail();
    let server = OtherSshd::tinysshd(&env.bed).unwrap();
    let config = config_for(&env, &server, "keep = true\n");
    let out = sshmail(&env, &["fetch", "imap"], &config);
    assert_exit(&out, 0);
    assert_eq!(env.delivered().len(), 3, "{}", stderr(&out));
    let out = sshmail(&env, &["doctor", "imap"], &config);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("PASS imapd"), "{}", stdout(&out));

    let out = sshmail(&env, &["fetch", "pop3"], &config);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("AllowTcpForwarding"), "{}", stderr(&out));
}
