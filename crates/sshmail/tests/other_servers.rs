//! Servers other than Dovecot: GNU mailutils' imap4d, run preauthenticated
//! over the real sshd's exec channel, on a Maildir and on an mbox.

mod common;

use common::{Env, assert_exit, stderr};
use sshmail_testbed::corpus;

fn imap4d(env: &Env, mbox: bool, extra: &[&str]) -> std::process::Output {
    let imapd = env.bed.imap4d_command(mbox).expect("GNU imap4d (mailutils-imap4d) must be installed");
    let dest = env.bed.ssh_destination();
    let mut args = vec!["--ssh", dest.as_str(), "--imapd", imapd.as_str()];
    args.extend(extra);
    env.run_imap(&args)
}

/// Issue: keep mode used EXAMINE, for which imap4d does not persist UIDs,
/// so every keep run after the first stopped with "UIDVALIDITY changed".
#[test]
fn regression_keep_mode_works_across_runs_and_new_mail_on_imap4d() {
    let mut env = Env::new();
    env.add_messages((0..5).map(|i| corpus::mixed_message(i, 0)));
    let out = imap4d(&env, false, &["--keep"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());
    // Let a second pass (imap4d's UIDVALIDITY is the time it made them).
    common::wait_for_next_second();
    let out = imap4d(&env, false, &["--keep"]);
    assert_exit(&out, 1);
    let m = corpus::mixed_message(5, 0);
    env.bed.add_message(&m).unwrap();
    env.originals.push(m);
    let out = imap4d(&env, false, &["--keep"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected(), "{}", stderr(&out));
    assert_eq!(env.bed.server_message_count().unwrap(), 6, "keep left everything on the server");
}

#[test]
fn imap4d_on_a_maildir_delete_mode_and_a_30_mb_message() {
    let mut env = Env::new();
    env.add_messages((0..20).map(|i| corpus::mixed_message(i, 0)));
    let mut big = b"From: big@example.org\nSubject: 30 MB\n\n".to_vec();
    while big.len() < 30 << 20 {
        big.extend_from_slice(b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n");
    }
    env.add_messages([big]);
    let out = imap4d(&env, false, &[]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());
    // imap4d has no UIDPLUS: delivered messages are flagged \Deleted, not
    // expunged, and a second run fetches nothing again.
    assert!(stderr(&out).contains("no UIDPLUS"), "{}", stderr(&out));
    let out = imap4d(&env, false, &[]);
    assert_exit(&out, 1);
    assert_eq!(env.delivered(), env.expected());
}

/// Issue: on an mbox, imap4d renumbers the folder (new UIDVALIDITY) at
/// every outside delivery; without UIDPLUS, delete mode only flags
/// \Deleted. sshmail then fetched everything flagged before as new again.
#[test]
fn regression_nothing_is_fetched_twice_on_imap4d_mbox_in_delete_mode() {
    let mut env = Env::new();
    env.add_mbox_messages((0..3).map(|i| corpus::small_message(i, 300)));
    let out = imap4d(&env, true, &[]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());
    for round in 0..2 {
        // New mail arrives, as a local delivery agent appends it.
        common::wait_for_next_second();
        env.add_mbox_messages((0..2).map(|i| corpus::small_message(10 + round * 2 + i, 300)));
        let out = imap4d(&env, true, &[]);
        assert_exit(&out, 0);
        assert_eq!(env.delivered(), env.expected(), "round {round}: {}", stderr(&out));
    }
}

/// Issue: imap4d gives an mbox a new UIDVALIDITY at every outside
/// delivery, so keep mode could fetch only once: every later run stopped
/// with "UIDVALIDITY changed". What was delivered is now recognised by its
/// fingerprint, and only new mail is fetched.
#[test]
fn regression_keep_mode_works_on_imap4d_mbox_across_new_mail() {
    let mut env = Env::new();
    env.add_mbox_messages((0..3).map(|i| corpus::small_message(i, 300)));
    let out = imap4d(&env, true, &["--keep"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());
    for round in 0..2 {
        common::wait_for_next_second();
        env.add_mbox_messages([corpus::small_message(10 + round, 300)]);
        let out = imap4d(&env, true, &["--keep"]);
        assert_exit(&out, 0);
        assert_eq!(env.delivered(), env.expected(), "round {round}: {}", stderr(&out));
    }
}

fn imap4d_sessions() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains("imap4d-maildir.conf"))
        .count()
}

/// Issue: imap4d announces IDLE but never reports new mail while idling,
/// so `--idle` saw it only at the 28-minute renewal; and SIGTERM killed
/// sshmail without DONE or LOGOUT, leaving imap4d spinning.
#[test]
fn regression_idle_on_imap4d_polls_as_a_safety_net_and_sigterm_logs_out() {
    use std::time::{Duration, Instant};
    let mut env = Env::new();
    env.add_messages((0..2).map(|i| corpus::mixed_message(i, 0)));
    let imapd = env.bed.imap4d_command(false).unwrap();
    let dest = env.bed.ssh_destination();
    let mut child = env
        .imap_command(&["--ssh", &dest, "--imapd", &imapd, "--idle", "--interval", "2", "-vv"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = common::StderrLog::of(&mut child);
    let wait_until = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}; log:\n{}", log.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_until("the first fetch", &|| env.delivered().len() == 2 && log.text().contains("idling"));
    let m = corpus::mixed_message(2, 0);
    env.bed.add_message(&m).unwrap();
    env.originals.push(m);
    let arrived = Instant::now();
    wait_until("new mail during IDLE", &|| env.delivered().len() == 3);
    assert!(arrived.elapsed() < Duration::from_secs(10), "took {:?} with --interval 2", arrived.elapsed());
    log.wait_until("idling again", |l| l.matches("idling").count() >= 2);
    assert!(imap4d_sessions() >= 1, "no imap4d running on the server side");
    sshmail_testbed::signal(child.id(), "TERM");
    let stopped = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(stopped.elapsed() < Duration::from_secs(5), "SIGTERM did not end --idle within 5 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = log.finish();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("stopped"), "it did not stop cleanly: {log}");
    // It said DONE and LOGOUT: the server's imap4d ended with the session
    // (a killed client left it spinning until its own timeout).
    let deadline = Instant::now() + Duration::from_secs(10);
    while imap4d_sessions() > 0 {
        assert!(Instant::now() < deadline, "imap4d still runs after sshmail stopped: {log}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(env.delivered(), env.expected());
}

/// Issue: an exec'd imapd that greets `* OK` instead of PREAUTH got "wants
/// a password" with no hint that it should run preauthenticated.
#[test]
fn regression_an_exec_imapd_that_wants_a_login_gets_a_hint() {
    let env = Env::new();
    let imapd = env.bed.imap4d_command(false).unwrap().replace(" --preauth", "");
    let dest = env.bed.ssh_destination();
    let mut cmd = env.fetch_command("--imap", &env.bed.client_key);
    cmd.args(["--ssh", &dest, "--imapd", &imapd]);
    let out = cmd.output().unwrap();
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("not `* PREAUTH`") && stderr(&out).contains("--preauth"), "{}", stderr(&out));
}

#[test]
fn imap4d_seen_policy_and_expunge_all_when_allowed() {
    let mut env = Env::new();
    env.add_messages((0..4).map(|i| corpus::mixed_message(i, 0)));
    let out = imap4d(&env, false, &["--policy", "seen"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());
    let flags = env.bed.inbox_flags().unwrap();
    assert_eq!(flags.len(), 4, "seen leaves the messages there");
    assert!(flags.iter().all(|f| f.contains('S')), "all flagged \\Seen: {flags:?}");
    assert_exit(&imap4d(&env, false, &["--policy", "seen"]), 1);

    // Delete without UIDPLUS, but with a plain EXPUNGE allowed (config only).
    let mut env = Env::new();
    env.add_messages((0..4).map(|i| corpus::mixed_message(i, 0)));
    let config = env.home.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[account.mu]\nssh = \"{}\"\nprotocol = \"imap\"\nimapd = \"{}\"\nallow_expunge_all = true\nidentity = [\"{}\"]\nknown_hosts = \"{}\"\ndeliver = \"maildir:{}\"\nreceived = false\n",
            env.bed.ssh_destination(),
            env.bed.imap4d_command(false).unwrap(),
            env.bed.client_key.display(),
            env.bed.known_hosts.display(),
            env.maildir().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sshmail"))
        .env("HOME", env.home.path())
        .env_remove("SSH_AUTH_SOCK")
        .stdin(std::process::Stdio::null())
        .arg("fetch")
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(env.state_dir())
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());
    assert_eq!(env.bed.server_message_count().unwrap(), 0, "EXPUNGE removed them: {}", stderr(&out));
}
