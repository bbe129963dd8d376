//! Durable before destructive: the fetch is killed (SIGKILL, by fault
//! injection) after every step of a delivery in turn; the next run must leave
//! every message in the Maildir exactly once and none on the server.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Env, code, stderr, wait_bounded};
use sshmail_testbed::{Options, corpus};

/// Every step of a Maildir delivery, up to the deletion being sent.
const MAILDIR_STEPS: &[&str] = &[
    "message-written",
    "maildir-synced",
    "ledger-appended@1",
    "ledger-synced@1",
    "maildir-renamed@3",
    "maildir-dir-synced",
    "ledger-appended@2",
    "ledger-synced@2",
    "batch-recorded",
    "delete-sent",
];

/// True for the points before a batch is recorded delivered: a kill at any
/// of them must leave every message on the server (checked right after the
/// kill, before a rerun could mask an ordering bug by recovering).
fn before_the_record(point: &str) -> bool {
    let record = MAILDIR_STEPS.iter().position(|p| *p == "batch-recorded").expect("batch-recorded is a step");
    MAILDIR_STEPS[..=record].contains(&point) || ["sink-delivered", "mbox-written"].contains(&point)
}

/// Then the server's side: POP3 confirms DELE and applies it at QUIT.
const POP3_STEPS: &[&str] = &["dele-confirmed@5", "quit-sent"];

/// IMAP confirms the STORE, then the UID EXPUNGE.
const IMAP_STEPS: &[&str] = &["policy-applied@1", "policy-applied@2"];

#[test]
fn durable_before_destructive_kill_at_every_step_pop3_maildir() {
    kill_at_every_step(&[MAILDIR_STEPS, POP3_STEPS].concat(), |env| env.command(&[]));
}

#[test]
fn durable_before_destructive_kill_at_every_step_imap_maildir() {
    kill_at_every_step(&[MAILDIR_STEPS, IMAP_STEPS].concat(), |env| {
        let dest = env.bed.ssh_destination();
        env.imap_command(&["--ssh", &dest])
    });
}

fn run(mut cmd: std::process::Command) -> std::process::Output {
    wait_bounded(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), Duration::from_secs(60))
}

fn kill_at_every_step(points: &[&str], command: impl Fn(&Env) -> std::process::Command) {
    kill_at_every_step_with(points, &[], command, |env| env.delivered());
}

fn kill_at_every_step_with(
    points: &[&str],
    duplicates_allowed: &[&str],
    command: impl Fn(&Env) -> std::process::Command,
    delivered: impl Fn(&Env) -> Vec<Vec<u8>>,
) {
    kill_at_every_step_on(Options::default(), points, duplicates_allowed, command, delivered, |m| m)
}

/// Kills the fetch at each point, reruns, and checks what `delivered` reads:
/// every message at least once, and exactly once unless the point is one
/// of `duplicates_allowed` (the documented window of the sink).
fn kill_at_every_step_on(
    options: Options,
    points: &[&str],
    duplicates_allowed: &[&str],
    command: impl Fn(&Env) -> std::process::Command,
    delivered: impl Fn(&Env) -> Vec<Vec<u8>>,
    expect: impl Fn(Vec<u8>) -> Vec<u8>,
) {
    for point in points {
        let mut env = Env::with(options.clone());
        env.add_messages((0..12).map(|i| corpus::mixed_message(i, 0)));
        let mut cmd = command(&env);
        cmd.env("SSHMAIL_FAULT", point);
        let out = run(cmd);
        assert_eq!(out.status.code(), None, "{point}: the fault did not fire; stderr: {}", stderr(&out));
        assert!(stderr(&out).contains("fault injected"), "{point}: {}", stderr(&out));

        if before_the_record(point) {
            assert_eq!(
                env.bed.server_message_count().unwrap(),
                12,
                "{point}: killed before the record, yet the server lost messages"
            );
        }

        // Whatever was filed before the kill is whole.
        let mut expected: Vec<Vec<u8>> = env.expected().into_iter().map(&expect).collect();
        expected.sort();
        for m in delivered(&env) {
            assert!(expected.binary_search(&m).is_ok(), "{point}: partial or foreign message filed");
        }

        let out = run(command(&env));
        assert!(matches!(code(&out), 0 | 1), "{point}: rerun failed: {}", stderr(&out));
        let mut got = delivered(&env);
        if duplicates_allowed.contains(point) {
            got.dedup();
        }
        assert_eq!(got, expected, "{point}: a message is missing or duplicated after the rerun");
        assert_eq!(env.bed.server_message_count().unwrap(), 0, "{point}: mail left on the server");
        // What the killed run staged and never published is cleaned up.
        assert_eq!(env.tmp_files(), 0, "{point}: orphans left in the Maildir's tmp/");

        // And a third run has nothing to do.
        let out = run(command(&env));
        assert_eq!(code(&out), 1, "{point}: {}", stderr(&out));
    }
}

const SINK_POINTS: &[&str] = &[
    "message-written",
    "sink-delivered",
    "ledger-synced@1",
    "batch-recorded",
    "delete-sent",
    "dele-confirmed@3",
    "quit-sent",
];

#[test]
fn durable_before_destructive_kill_at_every_step_mbox() {
    let mut points = SINK_POINTS.to_vec();
    points.push("mbox-written");
    kill_at_every_step_with(
        &points,
        &["mbox-written", "sink-delivered"],
        |env| {
            let spec = format!("mbox:{}", env.home.path().join("mbox").display());
            env.command(&["--deliver", &spec])
        },
        |env| read_mbox(&env.home.path().join("mbox")),
    );
}

#[test]
fn durable_before_destructive_kill_at_every_step_mda() {
    kill_at_every_step_with(
        SINK_POINTS,
        &["sink-delivered"],
        |env| {
            let spec = format!("mda:procmail -m DEFAULT={}/ /dev/null", env.home.path().join("md").display());
            env.command(&["--deliver", &spec])
        },
        |env| common::read_dir_contents(&env.home.path().join("md/new")),
    );
}

#[test]
fn durable_before_destructive_kill_at_every_step_lmtp() {
    kill_at_every_step_on(
        Options { lmtp: true, ..Options::default() },
        SINK_POINTS,
        &["sink-delivered"],
        |env| {
            let spec = format!("lmtp:127.0.0.1:{}", env.bed.lmtp_port);
            env.command(&["--deliver", &spec, "--recipient", "mailuser+Delivered"])
        },
        |env| {
            let mut v: Vec<Vec<u8>> = env
                .bed
                .folder_contents("Delivered")
                .unwrap_or_default()
                .iter()
                .map(|m| common::strip_trace(m))
                .collect();
            v.sort();
            v
        },
        |m| common::strip_trace(&m),
    );
}

/// mbox messages (From_ lines split off, mboxrd quoting undone, the blank
/// separator line removed), sorted.
fn read_mbox(path: &std::path::Path) -> Vec<Vec<u8>> {
    let Ok(text) = std::fs::read(path) else { return Vec::new() };
    let mut msgs: Vec<Vec<u8>> = Vec::new();
    for line in text.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            msgs.push(Vec::new());
            continue;
        }
        let q = line.iter().take_while(|&&b| b == b'>').count();
        let line = if q > 0 && line[q..].starts_with(b"From ") { &line[1..] } else { line };
        msgs.last_mut().expect("mbox starts with From_").extend_from_slice(line);
    }
    for m in &mut msgs {
        assert!(m.ends_with(b"\n\n"), "message not followed by a blank line");
        m.pop();
    }
    msgs.sort();
    msgs
}
