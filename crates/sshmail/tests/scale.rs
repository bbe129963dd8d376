//! A daemon of many accounts under ordinary limits: the soft open-file
//! limit a login or systemd gives is raised to the hard one, so that every
//! account comes up; and the server runs one process per watched folder.

mod common;

use std::time::Duration;

use common::{Daemon, Env};

/// `n` IMAP accounts (`a000`…), each an exec'd Dovecot imap keeping its
/// mail, each with its own Maildir (`md0`…), written as the config.
fn many_accounts(env: &Env, n: usize) -> std::path::PathBuf {
    let imapd =
        format!("imapd = [\"/usr/lib/dovecot/imap\", \"-c\", \"{}\"]\nkeep = true\n", env.bed.dovecot_config.display());
    let accounts: String = (0..n)
        .map(|i| {
            env.imap_toml(&format!("a{i:03}"), &imapd).replace(
                &env.maildir().display().to_string(),
                &env.home.path().join(format!("md{i}")).display().to_string(),
            )
        })
        .collect();
    let config = env.home.path().join("config.toml");
    Daemon::write_config(&config, &env.config_toml(&accounts));
    config
}

/// Forty IMAP accounts (exec'd imapds, each watching its INBOX with its
/// ledger open) need more descriptors than a soft limit of 64: the daemon
/// raises its soft limit to the hard one and every account goes IDLE,
/// each an imap process at the server with no shell beside it.
#[test]
fn a_daemon_raises_its_open_file_limit_and_every_account_comes_up() {
    let env = Env::new();
    let config = many_accounts(&env, 40);
    let daemon = Daemon::spawn_with_nofile(env.home.path(), &config, "64:4096");
    daemon.wait_answering();
    daemon.wait_status("all forty accounts IDLE", Duration::from_secs(120), |s| {
        s.accounts.len() == 40
            && s.accounts
                .iter()
                .all(|a| a.folders.iter().all(|f| f.mode == sshmail::control::status::Mode::Idle && f.connected))
    });
    // Each watched folder is one imap process at the server: the remote
    // shell became it (`exec`) instead of waiting beside it.
    let comms: Vec<String> = env
        .bed
        .sshd_session_pids()
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
        .map(|c| c.trim().to_string())
        .collect();
    assert_eq!(comms.iter().filter(|c| *c == "imap").count(), 40, "{comms:?}");
    assert!(
        !comms.iter().any(|c| matches!(c.as_str(), "sh" | "dash" | "bash")),
        "a shell waits beside an imapd: {comms:?}"
    );
    // `status --json` says each account's imapd command once.
    let json = String::from_utf8(daemon.ctl(&["status", "--json"]).stdout).unwrap();
    let said = json.matches(&env.bed.dovecot_config.display().to_string()).count();
    eprintln!("status --json: {} bytes for 40 accounts", json.len());
    assert_eq!(said, 40, "{json}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.child.id())).unwrap();
    let open = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_string();
    assert!(open.split_whitespace().filter(|w| *w == "4096").count() == 2, "soft limit not raised: {open}");
    daemon.stop();
}

/// Two hundred IMAP accounts with only 128 descriptors, soft and hard: an
/// idle account holds no file (its ledger rests while it waits in IDLE, its
/// connection is a channel on a shared SSH connection), so every account
/// comes up and none is left retrying "Too many open files"; and mail that
/// arrives then is fetched by the account it is for, once.
#[test]
fn idle_accounts_hold_no_files_two_hundred_come_up_under_128_descriptors() {
    const N: usize = 200;
    let env = Env::new();
    let config = many_accounts(&env, N);
    let daemon = Daemon::spawn_with_nofile(env.home.path(), &config, "128");
    daemon.wait_answering();
    let all_idle = |s: &sshmail::control::status::Status| {
        s.accounts.len() == N
            && s.accounts
                .iter()
                .all(|a| a.folders.iter().all(|f| f.mode == sshmail::control::status::Mode::Idle && f.connected))
    };
    daemon.wait_status("all two hundred accounts IDLE", Duration::from_secs(300), all_idle);
    let fds = std::fs::read_dir(format!("/proc/{}/fd", daemon.child.id())).unwrap().count();
    assert!(fds < 100, "{fds} descriptors open with every account idle");
    // Every account's INBOX is the same mailbox; a message delivered there
    // now reaches each account's own Maildir once.
    env.bed
        .deliver_by_dovecot(
            "INBOX",
            b"From: a@example.org\r\nSubject: after idle\r\nMessage-ID: <idle@example.org>\r\n\r\nbody\r\n",
        )
        .unwrap();
    daemon.wait_status("every account delivered the new message", Duration::from_secs(300), |s| {
        all_idle(s) && s.accounts.iter().all(|a| a.folders.iter().all(|f| f.delivered >= 1))
    });
    for i in 0..N {
        let new = std::fs::read_dir(env.home.path().join(format!("md{i}/new"))).unwrap().count();
        assert_eq!(new, 1, "account a{i:03}");
    }
    assert!(!daemon.log.text().contains("Too many open files"), "{}", daemon.log.text());
    daemon.stop();
}
