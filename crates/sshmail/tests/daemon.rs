//! `sshmail daemon` against the real sshd (OpenSSH's default MaxSessions)
//! and Dovecot: every folder watched by IDLE, mail delivered by Dovecot
//! itself arriving within seconds, the control socket and its commands,
//! signals.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, Env, read_dir_contents};
use sshmail::daemon::board::Mode;
use sshmail_testbed::corpus;

/// Waits (bounded) until the local Maildir holds `n` messages; how long it took.
fn wait_delivered(env: &Env, n: usize, limit: Duration, daemon: &Daemon) -> Duration {
    let started = Instant::now();
    loop {
        let have = read_dir_contents(&env.maildir().join("new")).len();
        if have >= n {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{have} of {n} messages delivered after {limit:?}; log:\n{}",
            daemon.log.text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn every_folder_is_watched_by_idle_more_folders_than_max_sessions_and_dovecot_deliveries_arrive_within_2_s() {
    let mut env = Env::new();
    // Twelve folders: more than sshd's default MaxSessions (10) exec
    // channels on one connection.
    let folders: Vec<String> =
        std::iter::once("INBOX".to_string()).chain((1..12).map(|i| format!("box{i:02}"))).collect();
    for f in &folders[1..] {
        env.bed.deliver_by_dovecot(f, &corpus::mixed_message(900, 1)).unwrap();
        env.originals.push(corpus::mixed_message(900, 1));
    }
    let list = folders.iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(", ");
    let daemon =
        Daemon::start(&env, &env.imap_toml("watch", &format!("folders = [{list}]\nmaildir_subfolders = false")));
    daemon.wait_status("every folder IDLE", Duration::from_secs(60), |s| {
        s.accounts.len() == 1
            && s.accounts[0].folders.len() == 12
            && s.accounts[0].folders.iter().all(|f| f.mode == Mode::Idle && f.connected)
    });
    assert_eq!(read_dir_contents(&env.maildir().join("new")).len(), 11, "the first passes fetched what was there");

    // Into the INBOX, into another folder, and into the 12th.
    for (i, folder) in ["INBOX", "box05", "box11"].iter().enumerate() {
        let m = corpus::mixed_message(i, 1);
        let before = env.originals.len();
        env.bed.deliver_by_dovecot(folder, &m).unwrap();
        env.originals.push(m);
        let took = wait_delivered(&env, before + 1, Duration::from_secs(2), &daemon);
        eprintln!("{folder}: delivered after {took:?}");
    }
    let status = daemon.status();
    let connections: std::collections::BTreeSet<_> =
        status.accounts[0].folders.iter().filter_map(|f| f.connection.clone()).collect();
    assert_eq!(connections.len(), 2, "12 exec channels need two SSH connections: {connections:?}");
    let log = daemon.stop();
    assert!(log.contains("watch: INBOX: 1 new"), "one line per push that delivered:\n{log}");
    assert_same(env.delivered(), env.expected());
}

/// The same messages, each as often; on a difference, says which.
fn assert_same(got: Vec<Vec<u8>>, expected: Vec<Vec<u8>>) {
    let show = |m: &[u8]| String::from_utf8_lossy(&m[..m.len().min(400)]).into_owned();
    assert_eq!(got.len(), expected.len(), "how many messages arrived");
    for (g, e) in got.iter().zip(&expected) {
        assert!(
            g == e,
            "a message differs:\ngot ({} bytes):\n{}\nexpected ({} bytes):\n{}",
            g.len(),
            show(g),
            e.len(),
            show(e)
        );
    }
}
