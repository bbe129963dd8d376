//! Durable before destructive: the fetch is killed (SIGKILL, by fault
//! injection) after every step of a delivery in turn; the next run must leave
//! every message in the Maildir exactly once and none on the server.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Env, code, stderr, wait_bounded};
use sshmail_testbed::corpus;

const POINTS: &[&str] = &[
    "message-written",
    "maildir-synced",
    "ledger-appended@1",
    "ledger-synced@1",
    "maildir-renamed@3",
    "maildir-dir-synced",
    "ledger-appended@2",
    "ledger-synced@2",
    "batch-recorded",
    "dele-confirmed@5",
    "quit-sent",
];

const IMAP_POINTS: &[&str] = &[
    "message-written",
    "maildir-synced",
    "ledger-appended@1",
    "ledger-synced@1",
    "maildir-renamed@3",
    "maildir-dir-synced",
    "ledger-synced@2",
    "batch-recorded",
    "policy-applied@1",
    "policy-applied@2",
];

#[test]
fn durable_before_destructive_kill_at_every_step_pop3_maildir() {
    kill_at_every_step(POINTS, |env| env.command(&[]));
}

#[test]
fn durable_before_destructive_kill_at_every_step_imap_maildir() {
    kill_at_every_step(IMAP_POINTS, |env| {
        let dest = env.bed.ssh_destination();
        env.imap_command(&["--ssh", &dest])
    });
}

fn run(mut cmd: std::process::Command) -> std::process::Output {
    wait_bounded(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), Duration::from_secs(60))
}

fn kill_at_every_step(points: &[&str], command: impl Fn(&Env) -> std::process::Command) {
    for point in points {
        let mut env = Env::new();
        env.add_messages((0..12).map(|i| corpus::mixed_message(i, 0)));
        let mut cmd = command(&env);
        cmd.env("SSHMAIL_FAULT", point);
        let out = run(cmd);
        assert_eq!(out.status.code(), None, "{point}: the fault did not fire; stderr: {}", stderr(&out));
        assert!(stderr(&out).contains("fault injected"), "{point}: {}", stderr(&out));

        // Whatever was filed before the kill is whole.
        let expected = env.expected();
        for m in env.delivered() {
            assert!(expected.binary_search(&m).is_ok(), "{point}: partial or foreign message filed");
        }

        let out = run(command(&env));
        assert!(matches!(code(&out), 0 | 1), "{point}: rerun failed: {}", stderr(&out));
        assert_eq!(env.delivered(), env.expected(), "{point}: not exactly once after the rerun");
        assert_eq!(env.bed.server_message_count().unwrap(), 0, "{point}: mail left on the server");
        assert_eq!(env.tmp_files(), 0, "{point}: files left in tmp/");

        // And a third run has nothing to do.
        let out = run(command(&env));
        assert_eq!(code(&out), 1, "{point}: {}", stderr(&out));
        assert_eq!(env.delivered(), env.expected(), "{point}");
    }
}
