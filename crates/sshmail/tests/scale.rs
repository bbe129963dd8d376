//! A daemon of many accounts under ordinary limits: the soft open-file
//! limit a login or systemd gives is raised to the hard one, so that every
//! account comes up; and the server runs one process per watched folder.

mod common;

use std::time::Duration;

use common::{Daemon, Env};

/// Forty IMAP accounts (exec'd imapds, each watching its INBOX with its
/// ledger open) need more descriptors than a soft limit of 64: the daemon
/// raises its soft limit to the hard one and every account goes IDLE,
/// each an imap process at the server with no shell beside it.
#[test]
fn a_daemon_raises_its_open_file_limit_and_every_account_comes_up() {
    let env = Env::new();
    let imapd =
        format!("imapd = [\"/usr/lib/dovecot/imap\", \"-c\", \"{}\"]\nkeep = true\n", env.bed.dovecot_config.display());
    let accounts: String = (0..40)
        .map(|i| {
            env.imap_toml(&format!("a{i:02}"), &imapd).replace(
                &env.maildir().display().to_string(),
                &env.home.path().join(format!("md{i}")).display().to_string(),
            )
        })
        .collect();
    let config = env.home.path().join("config.toml");
    Daemon::write_config(&config, &env.config_toml(&accounts));
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
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.child.id())).unwrap();
    let open = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_string();
    assert!(open.split_whitespace().filter(|w| *w == "4096").count() == 2, "soft limit not raised: {open}");
    daemon.stop();
}
