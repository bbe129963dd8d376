//! Servers that misbehave on purpose (scripted, behind `--via command`):
//! nothing is lost, nothing grows without bound, nothing is filed outside
//! its place. Each defect found this way has a regression test here, named
//! after it; the classes behind them (deadlines, bounds, untrusted names)
//! are covered too.

mod common;

use std::time::{Duration, Instant};

use common::{Hostile, assert_exit, stderr};
use sshmail_testbed::hostile::message;

/// The most a fetch may use, whatever the server sends.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

#[test]
fn scripted_servers_behave_when_asked_to() {
    for scenario in ["pop3", "imap"] {
        let h = Hostile::new(scenario);
        let out = h.run(&[]);
        assert_exit(&out, 0);
        let mut want: Vec<Vec<u8>> = (1..=3).map(message).collect();
        want.sort();
        assert_eq!(h.delivered(), want, "{scenario}");
        assert_eq!(h.deleted().len(), 3, "{scenario}: {:?}", h.deleted());
        let again = h.run(&[]);
        assert_exit(&again, 1);
    }
}

#[test]
fn regression_pop3_bare_lf_before_a_dot_does_not_cut_the_message() {
    let h = Hostile::new("pop3-bare-lf");
    let out = h.run(&[]);
    assert_exit(&out, 0);
    let got = h.delivered();
    assert_eq!(got.len(), 3, "{}", stderr(&out));
    assert!(
        got.contains(&b"Subject: bare LF\n\nfirst part\n.\nsecond part\nthe end\n".to_vec()),
        "the message with a bare LF before a dot was cut: {:?}",
        got.iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect::<Vec<_>>()
    );
    assert_eq!(h.deleted().len(), 3);
}

/// Runs a fetch while sampling its peak RSS; asserts the bound.
fn run_bounded(h: &Hostile, extra: &[&str]) -> std::process::Output {
    let (out, peak) = common::run_sampled(h.command(extra), Duration::from_secs(120));
    eprintln!("{}: peak RSS {peak} KiB; stderr: {}", h.scenario, stderr(&out));
    assert!(peak > 0, "no RSS sample");
    assert!(peak < RSS_LIMIT_KIB, "{}: peak RSS {peak} KiB is over {RSS_LIMIT_KIB} KiB", h.scenario);
    out
}

fn commands(h: &Hostile, verb: &str) -> Vec<String> {
    h.log().lines().filter(|l| l.to_ascii_uppercase().starts_with(verb)).map(str::to_string).collect()
}

#[test]
fn regression_pop3_body_far_beyond_what_list_said_is_stopped_and_left_on_the_server() {
    let h = Hostile::new("pop3-oversize");
    let out = run_bounded(&h, &[]);
    // Message 2 said 100 octets and sent 50 MB: not kept, not deleted.
    assert_exit(&out, 7);
    assert!(stderr(&out).contains("where LIST said 100 B"), "{}", stderr(&out));
    assert_eq!(h.delivered(), vec![message(1), message(3)]);
    assert_eq!(h.tmp_files(), 0, "the staged part of the oversized message was left behind");
    assert_eq!(h.deleted(), vec!["uid-1", "uid-3"]);
    assert!(!commands(&h, "DELE").contains(&"DELE 2".to_string()), "{}", h.log());
}

#[test]
fn regression_pop3_message_missing_from_list_is_bounded_by_max_message_size() {
    let h = Hostile::new("pop3-unlisted");
    let out = run_bounded(&h, &["--max-message-size", "1000000"]);
    assert_exit(&out, 7);
    assert_eq!(h.delivered(), vec![message(1), message(3)]);
    assert_eq!(h.tmp_files(), 0);
    assert_eq!(h.deleted(), vec!["uid-1", "uid-3"]);
}

#[test]
fn regression_every_read_is_bounded_an_endless_uidl_listing() {
    let h = Hostile::new("pop3-uidl-flood");
    let out = run_bounded(&h, &[]);
    assert_exit(&out, 4);
    assert!(stderr(&out).contains("listing longer than"), "{}", stderr(&out));
    assert!(commands(&h, "RETR").is_empty() && commands(&h, "DELE").is_empty(), "{}", h.log());
}

#[test]
fn every_read_is_bounded_a_huge_pop3_greeting() {
    let h = Hostile::new("pop3-huge-greeting");
    let out = run_bounded(&h, &[]);
    assert_exit(&out, 4);
    assert!(stderr(&out).contains("longer than"), "{}", stderr(&out));
}

#[test]
fn regression_every_wait_has_a_timeout_a_dripping_greeting() {
    let h = Hostile::new("pop3-drip-greeting");
    let started = Instant::now();
    let out = h.run(&["--timeout", "3"]);
    let took = started.elapsed();
    assert_exit(&out, 4);
    assert!(took < Duration::from_secs(8), "a greeting dripped one byte every 2 s held us for {took:?}");
    assert!(stderr(&out).contains("without completing a reply"), "{}", stderr(&out));
}

#[test]
fn regression_every_wait_has_a_timeout_a_dripping_body() {
    let h = Hostile::new("pop3-drip-body");
    let started = Instant::now();
    let out = h.run(&["--timeout", "3"]);
    let took = started.elapsed();
    assert_exit(&out, 4);
    assert!(took < Duration::from_secs(8), "a body dripped one byte every 0.5 s held us for {took:?}");
    // Message 1 came whole before it and is kept; nothing is deleted.
    assert_eq!(h.delivered(), vec![message(1)]);
    assert_eq!(h.tmp_files(), 0);
    assert!(h.deleted().is_empty());
}

#[test]
fn regression_pop3_the_same_message_number_twice_in_uidl_is_fetched_once() {
    let h = Hostile::new("pop3-duplicate-number");
    let out = h.run(&[]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("lists message 2 twice"), "{}", stderr(&out));
    assert_eq!(h.delivered().len(), 3);
    assert_eq!(commands(&h, "RETR 2").len(), 1, "{}", h.log());
}

#[test]
fn regression_pop3_dele_refused_exits_7() {
    let h = Hostile::new("pop3-dele-refused");
    let out = h.run(&[]);
    assert_exit(&out, 7);
    assert!(stderr(&out).contains("DELE of uid-1 refused"), "{}", stderr(&out));
    assert_eq!(h.delivered().len(), 3);
    // Delivered, so the next run tries DELE again instead of fetching.
    let again = h.run(&[]);
    assert_exit(&again, 7);
    assert_eq!(h.delivered().len(), 3);
    assert_eq!(commands(&h, "RETR").len(), 3, "{}", h.log());
}
