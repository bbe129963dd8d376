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
    let plan = Plan { options, duplicates_allowed, ..Plan::default() };
    kill_at_every_step_planned(&plan, points, command, delivered, expect)
}

/// What a crash test sets up and expects besides its points.
struct Plan<'a> {
    options: Options,
    /// Puts the messages on the server (default: 12 into the INBOX).
    setup: fn(&mut Env),
    /// Messages per group commit (`SSHMAIL_BATCH`), if not the default.
    batch: Option<usize>,
    duplicates_allowed: &'a [&'a str],
    /// Messages on the server, all folders fetched.
    on_server: fn(&Env) -> usize,
    /// How many stay on the server after a complete run (the policy).
    left_on_server: usize,
    /// Checks the server after the rerun (the policy's flags).
    after_rerun: fn(&Env),
}

impl Default for Plan<'_> {
    fn default() -> Self {
        Plan {
            options: Options::default(),
            setup: |env| env.add_messages((0..12).map(|i| corpus::mixed_message(i, 0))),
            batch: None,
            duplicates_allowed: &[],
            on_server: |env| env.bed.server_message_count().unwrap(),
            left_on_server: 0,
            after_rerun: |_| {},
        }
    }
}

fn kill_at_every_step_planned(
    plan: &Plan<'_>,
    points: &[&str],
    command: impl Fn(&Env) -> std::process::Command,
    delivered: impl Fn(&Env) -> Vec<Vec<u8>>,
    expect: impl Fn(Vec<u8>) -> Vec<u8>,
) {
    let with_batch = |env: &Env| {
        let mut c = command(env);
        if let Some(n) = plan.batch {
            c.env("SSHMAIL_BATCH", n.to_string());
        }
        c
    };
    for point in points {
        let mut env = Env::with(plan.options.clone());
        (plan.setup)(&mut env);
        let total = env.originals.len();
        let mut cmd = with_batch(&env);
        cmd.env("SSHMAIL_FAULT", point);
        let out = run(cmd);
        assert_eq!(out.status.code(), None, "{point}: the fault did not fire; stderr: {}", stderr(&out));
        assert!(stderr(&out).contains("fault injected"), "{point}: {}", stderr(&out));
        if before_the_record(point) {
            assert_eq!(
                (plan.on_server)(&env),
                total,
                "{point}: killed before the record, yet the server lost messages"
            );
        }

        // Whatever was filed before the kill is whole.
        let mut expected: Vec<Vec<u8>> = env.expected().into_iter().map(&expect).collect();
        expected.sort();
        for m in delivered(&env) {
            assert!(expected.binary_search(&m).is_ok(), "{point}: partial or foreign message filed");
        }

        let out = run(with_batch(&env));
        assert!(matches!(code(&out), 0 | 1), "{point}: rerun failed: {}", stderr(&out));
        let mut got = delivered(&env);
        if plan.duplicates_allowed.contains(point) {
            got.dedup();
        }
        assert_eq!(got, expected, "{point}: a message is missing or duplicated after the rerun");
        assert_eq!((plan.on_server)(&env), plan.left_on_server, "{point}: wrong number of messages on the server");
        (plan.after_rerun)(&env);
        // What the killed run staged and never published is cleaned up.
        assert_eq!(env.tmp_files(), 0, "{point}: orphans left in the Maildir's tmp/");

        // And a third run has nothing to do.
        let out = run(with_batch(&env));
        assert_eq!(code(&out), 1, "{point}: {}", stderr(&out));
    }
}

/// Points in the second and third of three batches (4 messages each),
/// while the first batch's deletions are outstanding.
const LATER_BATCH_STEPS: &[&str] = &[
    "message-written@6",
    "maildir-synced@2",
    "ledger-synced@3",
    "maildir-renamed@6",
    "maildir-dir-synced@2",
    "ledger-synced@4",
    "batch-recorded@2",
    "delete-sent@2",
    "batch-recorded@3",
];

#[test]
fn durable_before_destructive_kill_beyond_the_first_batch_pop3() {
    let plan = Plan { batch: Some(4), ..Plan::default() };
    let points = [LATER_BATCH_STEPS, &["delete-sent@1", "dele-confirmed@6", "quit-sent"]].concat();
    kill_at_every_step_planned(&plan, &points, |env| env.command(&[]), |env| env.delivered(), |m| m);
}

#[test]
fn durable_before_destructive_kill_beyond_the_first_batch_imap() {
    let plan = Plan { batch: Some(4), ..Plan::default() };
    let points =
        [LATER_BATCH_STEPS, &["delete-sent@1", "policy-applied@1", "policy-applied@3", "policy-applied@5"]].concat();
    kill_at_every_step_planned(
        &plan,
        &points,
        |env| {
            let dest = env.bed.ssh_destination();
            env.imap_command(&["--ssh", &dest])
        },
        |env| env.delivered(),
        |m| m,
    );
}

#[test]
fn durable_before_destructive_kill_at_every_step_imap_seen_policy() {
    let plan = Plan {
        left_on_server: 12,
        after_rerun: |env| {
            let flags = env.bed.inbox_flags().unwrap();
            assert!(flags.iter().all(|f| f.contains('S')), "not every message is flagged \\Seen: {flags:?}");
        },
        ..Plan::default()
    };
    // No deletion here: the STORE \\Seen is the policy.
    let mut points: Vec<&str> = MAILDIR_STEPS.iter().copied().filter(|p| *p != "delete-sent").collect();
    points.push("policy-applied@1");
    kill_at_every_step_planned(
        &plan,
        &points,
        |env| {
            let dest = env.bed.ssh_destination();
            env.imap_command(&["--ssh", &dest, "--policy", "seen"])
        },
        |env| env.delivered(),
        |m| m,
    );
}

#[test]
fn durable_before_destructive_kill_at_every_step_imap_subfolders() {
    let plan = Plan {
        setup: |env| {
            for i in 0..12 {
                let m = corpus::mixed_message(i, 0);
                if i % 2 == 0 {
                    env.bed.add_message(&m).unwrap();
                } else {
                    env.bed.add_message_to("lists", &m).unwrap();
                }
                env.originals.push(m);
            }
        },
        on_server: |env| env.bed.server_message_count().unwrap() + env.bed.folder_message_count("lists").unwrap(),
        ..Plan::default()
    };
    let points = [MAILDIR_STEPS, &["maildir-renamed@8", "batch-recorded@2", "policy-applied@3"]].concat();
    kill_at_every_step_planned(
        &plan,
        &points,
        |env| {
            let dest = env.bed.ssh_destination();
            env.imap_command(&["--ssh", &dest, "--subfolders", "--folder", "INBOX", "--folder", "lists"])
        },
        |env| {
            let mut v = env.delivered();
            v.extend(common::read_dir_contents(&env.maildir().join(".lists/new")));
            v.sort();
            v
        },
        |m| m,
    );
}

#[test]
fn durable_before_destructive_kill_at_every_step_imap_mbox() {
    let mut points =
        SINK_POINTS.iter().filter(|p| !p.starts_with("dele") && **p != "quit-sent").copied().collect::<Vec<_>>();
    points.extend(["mbox-written", "policy-applied@1", "policy-applied@2"]);
    let plan = Plan { duplicates_allowed: &["mbox-written", "sink-delivered"], ..Plan::default() };
    kill_at_every_step_planned(
        &plan,
        &points,
        |env| {
            let dest = env.bed.ssh_destination();
            let spec = format!("mbox:{}", env.home.path().join("mbox").display());
            env.imap_command(&["--ssh", &dest, "--deliver", &spec])
        },
        |env| read_mbox(&env.home.path().join("mbox")),
        |m| m,
    );
}

/// A second crash in the run that recovers from the first, and crashes
/// while the ledger is compacted and while orphans are removed.
#[test]
fn durable_before_destructive_kill_during_recovery_compaction_and_clean_up() {
    // Each pair: the first run's fault, then the second run's.
    let pairs = [
        ("maildir-renamed@2", "ledger-synced@1"), // killed while finishing the interrupted publish
        ("maildir-synced", "orphan-removed@1"),   // killed while removing the first run's orphans
        ("message-written@3", "orphan-removed@2"),
        ("delete-sent", "compaction-written"), // killed while compacting
        ("quit-sent", "compaction-renamed"),
    ];
    for (first, second) in pairs {
        let mut env = Env::new();
        env.add_messages((0..12).map(|i| corpus::mixed_message(i, 0)));
        for fault in [first, second] {
            let mut cmd = env.command(&[]);
            cmd.env("SSHMAIL_FAULT", fault);
            let out = run(cmd);
            assert_eq!(out.status.code(), None, "{first} then {fault}: the fault did not fire: {}", stderr(&out));
        }
        let out = run(env.command(&[]));
        assert!(matches!(code(&out), 0 | 1), "{first}, {second}: rerun failed: {}", stderr(&out));
        assert_eq!(env.delivered(), env.expected(), "{first}, {second}: missing or duplicated");
        assert_eq!(env.bed.server_message_count().unwrap(), 0, "{first}, {second}");
        assert_eq!(env.tmp_files(), 0, "{first}, {second}: orphans left");
        assert_exit_code(&run(env.command(&[])), 1);
    }
}

fn assert_exit_code(out: &std::process::Output, want: i32) {
    assert_eq!(code(out), want, "{}", stderr(out));
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

/// Regression: a run that finished the deliveries a killed run had staged,
/// and found nothing new, exited 1 ("no new mail"): a cron script acting on
/// exit 0 never heard of that mail.
#[test]
fn regression_a_run_that_finishes_interrupted_deliveries_exits_0() {
    let mut env = Env::new();
    env.add_messages((0..3).map(|i| corpus::mixed_message(i, 0)));
    let mut cmd = env.command(&[]);
    cmd.env("SSHMAIL_FAULT", "ledger-synced@1");
    let out = run(cmd);
    assert_eq!(out.status.code(), None, "the fault did not fire: {}", stderr(&out));
    assert!(env.delivered().is_empty(), "nothing is published before the kill");
    let out = run(env.command(&[]));
    assert_eq!(code(&out), 0, "mail was delivered in this run: {}", stderr(&out));
    assert_eq!(env.delivered().len(), 3);
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
}
