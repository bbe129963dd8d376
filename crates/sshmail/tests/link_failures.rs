//! The link dies or freezes mid-transfer: sshmail ends promptly with an
//! error, files no partial message, and the next run completes with every
//! message exactly once. The server's own sshd processes are killed or
//! stopped (SIGSTOP), as a crashed or suspended host would behave.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Env, code, stderr, wait_bounded};
use sshmail_testbed::{corpus, signal};

/// Big messages so that most of the transfer time is mid-body.
fn env_with_big_mail() -> Env {
    let mut env = Env::new();
    env.add_messages((0..30).map(|i| corpus::mixed_message(i, 1)));
    env
}

/// Starts a fetch and waits until a message is being written locally.
fn start_and_wait_for_transfer(env: &Env, extra: &[&str]) -> std::process::Child {
    let child = env.command(extra).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.tmp_files() == 0 {
        assert!(Instant::now() < deadline, "the fetch never started writing a message");
        std::thread::sleep(Duration::from_micros(200));
    }
    child
}

fn assert_only_complete_messages(env: &Env) {
    let expected = env.expected();
    for m in env.delivered() {
        assert!(expected.binary_search(&m).is_ok(), "a delivered message is not one of the originals (partial?)");
    }
}

#[test]
fn sshd_killed_mid_retr_gives_prompt_error_and_next_run_completes() {
    let env = env_with_big_mail();
    let child = start_and_wait_for_transfer(&env, &["--timeout", "10"]);
    let sessions = env.bed.sshd_session_pids();
    assert!(!sessions.is_empty(), "no sshd session process to kill");
    for pid in sessions {
        signal(pid, "KILL");
    }
    let out = wait_bounded(child, Duration::from_secs(30));
    assert!(matches!(code(&out), 2 | 4), "expected a connection/protocol error, got {}: {}", code(&out), stderr(&out));
    assert_only_complete_messages(&env);
    assert_eq!(env.tmp_files(), 0, "a cut-off message was left in tmp/");
    assert_eq!(env.bed.server_message_count().unwrap(), 30, "nothing may be deleted without QUIT");

    let out = env.run(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(env.delivered(), env.expected(), "every message exactly once after the rerun");
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
}

/// Starts a fetch with `extra`, freezes the server's sshd sessions (SIGSTOP)
/// mid-transfer, and returns how the fetch ended and how long after the
/// freeze; the frozen sessions are killed then. The fetch must have failed
/// as a lost link does.
fn freeze_mid_transfer(env: &Env, extra: &[&str]) -> (std::process::Output, Duration) {
    let child = start_and_wait_for_transfer(env, extra);
    let frozen = env.bed.sshd_session_pids();
    assert!(!frozen.is_empty());
    for &pid in &frozen {
        signal(pid, "STOP");
    }
    let started = Instant::now();
    // Bounded wait: a hang fails the test instead of blocking it.
    let out = wait_bounded(child, Duration::from_secs(90));
    let took = started.elapsed();
    for &pid in &frozen {
        signal(pid, "CONT");
        signal(pid, "KILL");
    }
    assert!(matches!(code(&out), 2 | 4), "expected a connection/protocol error, got {}: {}", code(&out), stderr(&out));
    (out, took)
}

#[test]
fn frozen_sshd_is_noticed_within_the_timeout_and_next_run_completes() {
    let env = env_with_big_mail();
    let (out, took) = freeze_mid_transfer(&env, &["--timeout", "3"]);
    let err = stderr(&out);
    assert!(err.contains("stalled") || err.contains("too slow") || err.contains("closed"), "{err}");
    eprintln!("frozen link noticed after {took:?}");
    // A reply that does not come within the timeout ends the wait; two
    // timeouts and a second of slack bound it.
    assert!(took < Duration::from_secs(7), "a frozen link with --timeout 3 took {took:?} to notice");
    assert_only_complete_messages(&env);
    assert_eq!(env.tmp_files(), 0);

    let out = env.run(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(env.delivered(), env.expected());
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
}

/// With default settings (a 30 s timeout, which a slow but alive mail
/// server is given), a frozen link is noticed within 15 s by SSH keepalives
/// (ServerAliveInterval 4 s, ServerAliveCountMax 2: about 12 s). It used to
/// take the whole timeout.
#[test]
fn every_wait_has_a_timeout_a_frozen_sshd_is_noticed_within_15_s_by_default() {
    let env = env_with_big_mail();
    let (out, took) = freeze_mid_transfer(&env, &[]);
    eprintln!("frozen link noticed after {took:?} with default settings");
    assert!(took < Duration::from_secs(15), "a frozen link took {took:?} to notice: {}", stderr(&out));
    assert_only_complete_messages(&env);
    assert_eq!(env.tmp_files(), 0);
    assert_eq!(env.bed.server_message_count().unwrap(), 30);
}
