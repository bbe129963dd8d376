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

#[test]
fn regression_what_the_server_names_is_untrusted_folders_named_dot_dot_stay_inside_the_maildir() {
    let h = Hostile::new("imap-hostile-folders");
    let out = h.run(&["--subfolders", "--folder", "*"]);
    // The hostile folders are refused (exit 7), the rest fetched.
    assert_exit(&out, 7);
    let err = stderr(&out);
    let parent = h.dir.path();
    for leaked in ["new", "cur", "tmp", "maildirfolder"] {
        assert!(!parent.join(leaked).exists(), "{leaked} was created in the Maildir's parent; stderr:\n{err}");
    }
    // Everything made is a direct child of the Maildir, named as Maildir++.
    let mut made: Vec<String> = std::fs::read_dir(h.maildir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    made.sort();
    assert_eq!(made, vec![".lists.rust", "cur", "new", "tmp"], "{err}");
    assert_eq!(h.delivered().len(), 3, "INBOX: {err}");
    assert_eq!(common::read_dir_contents(&h.maildir().join(".lists.rust/new")).len(), 1);
    // Nothing was taken from the refused folders, so nothing was expunged
    // there: only INBOX and lists/rust lost their messages.
    let mut deleted = h.deleted();
    deleted.sort();
    assert_eq!(deleted, vec!["INBOX\t1", "INBOX\t2", "INBOX\t3", "lists/rust\t1"], "{err}");
    // The names with NUL (`&AAA-`) and control characters were never
    // selected at all.
    let log = h.log();
    assert!(!log.contains("SELECT \"&AAA-\""), "{log}");
    assert!(!log.to_ascii_uppercase().contains("SELECT \"BAD"), "{log}");
}

#[test]
fn regression_a_folder_name_with_nul_does_not_wedge_the_account() {
    // `&AAA-` decodes to NUL: refused at LIST time, so nothing is recorded
    // for it, and later runs (even of INBOX alone, without --subfolders)
    // are not blocked by a delivery that can never be finished.
    let h = Hostile::new("imap-hostile-folders");
    let out = h.run(&["--subfolders", "--folder", "*", "--keep"]);
    assert_exit(&out, 7);
    assert!(stderr(&out).contains("control characters"), "{}", stderr(&out));
    assert_eq!(h.delivered().len(), 3, "{}", stderr(&out));
    let again = h.run(&["--folder", "INBOX", "--keep"]);
    assert_exit(&again, 1);
}

#[test]
fn regression_a_recovery_that_cannot_succeed_forgets_the_entry() {
    // A ledger that names a staged message in a subfolder no local name can
    // be (as an older version could write): recovery forgets it and the
    // message is fetched again from the server, instead of exit 10 forever.
    let h = Hostile::new("imap");
    let state = h.dir.path().join("state");
    let out = h.run(&["--keep"]);
    assert_exit(&out, 0);
    let ledger = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "ledger"))
        .unwrap_or_else(|| panic!("no ledger in {:?}", std::fs::read_dir(&state).unwrap().collect::<Vec<_>>()));
    let text = std::fs::read_to_string(&ledger).unwrap();
    let line = text.lines().find(|l| l.starts_with("D ")).expect("a delivered key").to_string();
    let key = line.split(' ').nth(1).unwrap();
    // Claim it staged, not delivered, under a bad subfolder.
    let text = text.replace(&format!("{line}\n"), &format!("P {key} %2E%2E/1.M1P1.x\n"));
    std::fs::write(&ledger, text).unwrap();
    let again = h.run(&["--keep"]);
    assert_exit(&again, 0);
    assert!(stderr(&again).contains("cannot finish an interrupted delivery"), "{}", stderr(&again));
    assert_eq!(h.delivered().len(), 4, "the forgotten message is fetched again");
    assert_exit(&h.run(&["--keep"]), 1);
}

#[test]
fn every_read_is_bounded_untagged_floods_during_select() {
    for scenario in ["imap-select-flood", "imap-select-tiny-flood"] {
        let h = Hostile::new(scenario);
        let out = run_bounded(&h, &[]);
        assert_exit(&out, 4);
        assert!(stderr(&out).contains("flooded"), "{scenario}: {}", stderr(&out));
        assert!(h.deleted().is_empty());
    }
}

#[test]
fn every_read_is_bounded_an_untagged_flood_during_fetch() {
    let h = Hostile::new("imap-fetch-flood");
    let out = run_bounded(&h, &[]);
    assert_exit(&out, 4);
    assert!(stderr(&out).contains("flooded"), "{}", stderr(&out));
    assert_eq!(h.tmp_files(), 0);
    assert!(h.deleted().is_empty());
}

#[test]
fn regression_imap_bodies_nobody_asked_for_are_discarded_at_once() {
    let h = Hostile::new("imap-unrequested");
    // With few descriptors: 3000 unrequested bodies kept open would fail.
    let cmd = h.command(&[]);
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut limited = std::process::Command::new("prlimit");
    limited.arg("--nofile=128").arg("--").arg(program).args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => limited.env(k, v),
            None => limited.env_remove(k),
        };
    }
    limited.stdin(std::process::Stdio::null());
    drop(cmd);
    let (out, _) = common::run_sampled(limited, Duration::from_secs(120));
    assert_exit(&out, 0);
    let mut want: Vec<Vec<u8>> = (1..=3).map(message).collect();
    want.sort();
    assert_eq!(h.delivered(), want);
    assert_eq!(h.tmp_files(), 0, "unrequested bodies were left in tmp/");
    assert_eq!(h.deleted().len(), 3);
}

#[test]
fn every_wait_has_a_timeout_a_trickling_imap_literal() {
    let h = Hostile::new("imap-drip-literal");
    let started = Instant::now();
    let out = h.run(&["--timeout", "3"]);
    let took = started.elapsed();
    assert_exit(&out, 4);
    assert!(took < Duration::from_secs(10), "a literal dripping one byte every 0.5 s held us for {took:?}");
    assert!(stderr(&out).contains("too slow"), "{}", stderr(&out));
    assert_eq!(h.tmp_files(), 0);
    assert!(h.deleted().is_empty());
}

#[test]
fn regression_uidvalidity_zero_is_refused() {
    let h = Hostile::new("imap-uidvalidity-zero");
    let out = h.run(&[]);
    assert_exit(&out, 7);
    assert!(stderr(&out).contains("UIDVALIDITY 0"), "{}", stderr(&out));
    assert!(h.delivered().is_empty());
    assert!(h.deleted().is_empty());
}

#[test]
fn every_read_is_bounded_a_tunnel_that_floods_stderr() {
    let h = Hostile::new("imap-stderr-flood");
    let out = run_bounded(&h, &[]);
    assert_exit(&out, 0);
    assert_eq!(h.delivered().len(), 3);
}

/// The state letter of a process, or None once it is gone.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

#[test]
fn regression_the_tunnel_process_group_ends_with_sshmail() {
    let h = Hostile::new("pop3");
    let pidfile = h.dir.path().join("tunnel.pid");
    // A shell that starts the real tunnel (here a sleep that never greets)
    // as its child, as `sh -c 'ssh …; …'` does.
    let tunnel = format!("sleep 300 & echo $! > '{}'; wait", pidfile.display());
    let started = Instant::now();
    let out = h.run(&["--tunnel", &tunnel, "--timeout", "2"]);
    assert_exit(&out, 4);
    assert!(started.elapsed() < Duration::from_secs(10));
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    // Ended with the group (a zombie waiting for its new parent counts as ended).
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(process_state(pid), Some(s) if s != 'Z') {
        assert!(Instant::now() < deadline, "the tunnel's child {pid} outlived sshmail");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn regression_every_wait_has_a_timeout_a_hanging_password_command_before_connecting() {
    let h = Hostile::new("pop3");
    let started = Instant::now();
    let out = h.run(&["--password-command", "sleep 1000", "--timeout", "2"]);
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_exit(&out, 5);
    assert!(stderr(&out).contains("did not finish within 2 s"), "{}", stderr(&out));
    // It ran before connecting: the server never saw us.
    assert!(h.log().is_empty(), "{}", h.log());
}

#[test]
fn regression_a_failing_or_empty_password_command_is_a_clear_error() {
    let h = Hostile::new("pop3");
    let out = h.run(&["--password-command", "echo 'no key' >&2; exit 2"]);
    assert_exit(&out, 5);
    let err = stderr(&out);
    assert!(err.contains("exited with 2") && err.contains("no key") && !err.contains("Shell("), "{err}");
    let out = h.run(&["--password-command", "true"]);
    assert_exit(&out, 5);
    assert!(stderr(&out).contains("printed no password"), "{}", stderr(&out));
    assert!(h.log().is_empty(), "an empty password was sent: {}", h.log());
}

#[test]
fn regression_secrets_stay_secret_the_received_line_does_not_carry_the_tunnel_command() {
    let h = Hostile::new("pop3");
    let cmd = h.command(&[]);
    let args: Vec<_> = cmd.get_args().filter(|a| *a != "--no-received").map(|a| a.to_owned()).collect();
    let mut with_received = std::process::Command::new(cmd.get_program());
    with_received.args(args).env("HOME", h.dir.path()).stdin(std::process::Stdio::null());
    let out = with_received.output().unwrap();
    assert_exit(&out, 0);
    for m in h.delivered() {
        let text = String::from_utf8_lossy(&m);
        let received = text.lines().next().unwrap();
        assert!(received.starts_with("Received: from "), "{received}");
        assert!(!received.contains("--state") && !received.contains("hostile"), "{received}");
    }
}

#[test]
fn worst_exit_code_wins_across_accounts() {
    // Three accounts in one config, each on its own scripted server: one
    // fine (0), one whose DELE is refused (7), one that drips (4).
    let dir = tempfile::tempdir().unwrap();
    let account = |name: &str, scenario: &str| {
        let h = Hostile::new(scenario);
        let text = format!(
            "[account.{name}]\nprotocol = \"pop3\"\nvia = \"command\"\ntunnel = \"{}\"\nuser = \"u\"\npassword_command = \"echo pw\"\ndeliver = \"maildir:{}\"\ntimeout = 2\nreceived = false\n",
            h.tunnel().replace('"', "\\\""),
            h.maildir().display()
        );
        (h, text)
    };
    let (good, a) = account("good", "pop3");
    let (refusing, b) = account("refusing", "pop3-dele-refused");
    let (dripping, c) = account("dripping", "pop3-drip-greeting");
    let run = |name: &str, body: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, format!("state_dir = \"{}\"\n{body}", dir.path().join("state").display())).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_sshmail"))
            .env("HOME", dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .args(["fetch", "--config"])
            .arg(&path)
            .spawn()
            .unwrap();
        common::wait_bounded(child, Duration::from_secs(60))
    };
    let out = run("all", &format!("{c}{a}{b}"));
    assert_exit(&out, 7);
    for account in ["good", "refusing", "dripping"] {
        assert!(stderr(&out).contains(account) || account == "good", "{account} not reported: {}", stderr(&out));
    }
    assert_eq!(good.delivered().len(), 3);
    assert_eq!(refusing.delivered().len(), 3);
    assert!(dripping.delivered().is_empty());
    // Without the 7, the 4 is the worst; and a success does not hide it.
    let out = run("two", &format!("{a}{c}"));
    assert_exit(&out, 4);
}

#[test]
fn regression_an_mbox_path_problem_is_found_before_connecting() {
    let h = Hostile::new("pop3");
    let spec = format!("mbox:{}", h.dir.path().join("no/such/dir/mbox").display());
    let out = h.run(&["--deliver", &spec]);
    assert_exit(&out, 10);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(h.log().is_empty(), "the server was contacted: {}", h.log());
}

/// Issue: `AUTHENTICATE PLAIN` always carried its response, even where the
/// server does not announce SASL-IR; GNU imap4d answers `BAD Invalid
/// arguments` to that.
#[test]
fn regression_authenticate_plain_waits_for_the_continuation_without_sasl_ir() {
    for auth in ["plain", "auto"] {
        let h = Hostile::new("imap-login-no-sasl-ir");
        let out = h.run(&["--auth", auth]);
        assert_exit(&out, 0);
        assert_eq!(h.delivered().len(), 3, "{auth}");
        let log = h.log();
        assert!(log.lines().any(|l| l.ends_with("AUTHENTICATE PLAIN")), "{auth}: {log}");
        assert!(!log.contains("AUTHENTICATE PLAIN A"), "{auth}: the response went with the command: {log}");
    }
}

/// Runs the scripted server with the other protocol's client.
fn run_as(h: &Hostile, protocol: &str) -> std::process::Output {
    let c = h.command(&[]);
    let args: Vec<_> =
        c.get_args().map(|a| if a == "--pop3" || a == "--imap" { protocol.into() } else { a.to_owned() }).collect();
    let mut cmd = std::process::Command::new(c.get_program());
    cmd.args(args).env("HOME", h.dir.path()).stdin(std::process::Stdio::null());
    cmd.output().unwrap()
}

/// Issue: an IMAP client on a POP3 server said ``unexpected greeting
/// Continuation("K POP3 ready")``.
#[test]
fn regression_the_wrong_protocol_is_named_in_plain_words() {
    let out = run_as(&Hostile::new("pop3"), "--imap");
    assert_exit(&out, 4);
    assert!(stderr(&out).contains("which is not IMAP") && stderr(&out).contains("--pop3"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("Continuation"), "{}", stderr(&out));
    let out = run_as(&Hostile::new("imap"), "--pop3");
    assert_exit(&out, 4);
    assert!(stderr(&out).contains("which is IMAP, not POP3") && stderr(&out).contains("--imap"), "{}", stderr(&out));
}

/// Issue: `--check` created the delivery Maildir.
#[test]
fn regression_check_creates_nothing() {
    let h = Hostile::new("pop3");
    let out = h.run(&["--check"]);
    assert_exit(&out, 0);
    assert!(!h.maildir().exists(), "--check created the Maildir");
    assert!(h.deleted().is_empty());
}

/// Issue: `-vv` never showed what an IMAP server sent.
#[test]
fn regression_vv_shows_what_the_server_said() {
    let h = Hostile::new("imap");
    let out = h.run(&["-vv", "--keep"]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("S: Untagged(Exists(3))"), "{err}");
    assert!(err.contains("S: Tagged"), "{err}");
    // A body shows as a placeholder, not its bytes.
    assert!(!err.contains("line one of 1"), "a body was logged: {err}");
    let h = Hostile::new("pop3");
    let out = h.run(&["-vv", "--keep"]);
    assert!(stderr(&out).contains("S: +OK"), "{}", stderr(&out));
}

/// Issue: "closed the connection unexpectedly" sometimes lacked the exit
/// status of the command at the other end (it arrives just after EOF).
#[test]
fn regression_a_closed_connection_names_the_exit_status() {
    let h = Hostile::new("imap");
    for _ in 0..5 {
        let out = h.run(&["--tunnel", "echo 'no such mailbox' >&2; exit 3"]);
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(err.contains("exit status 3") && err.contains("no such mailbox"), "{err}");
    }
}

/// A refused STORE \Deleted is reported and exits 7, like a refused DELE
/// (it was only a warning, and the run exited 0).
#[test]
fn regression_imap_store_refused_exits_7() {
    let h = Hostile::new("imap-store-refused");
    let out = h.run(&[]);
    assert_exit(&out, 7);
    assert!(stderr(&out).contains("UID STORE \\Deleted failed"), "{}", stderr(&out));
    assert_eq!(h.delivered().len(), 3);
    assert!(h.deleted().is_empty(), "{:?}", h.deleted());
}

/// Folders LIST names that are skipped (\Noselect, unmappable names)
/// count against the bound like any response nobody uses: an endless LIST
/// of them ends the session instead of running on.
#[test]
fn regression_every_read_is_bounded_a_list_of_skipped_folders() {
    let h = Hostile::new("imap-list-flood");
    let out = run_bounded(&h, &["--folder", "*"]);
    assert_exit(&out, 4);
    assert!(stderr(&out).contains("flooded"), "{}", stderr(&out));
}

/// A connection that worked and then dropped (here: as the watch began to
/// IDLE) is tried again at once, as after a suspend; one that drops again
/// at once backs off instead of hammering the server.
#[test]
fn a_dropped_connection_is_retried_at_once_then_with_a_back_off() {
    let h = Hostile::new("imap-drop-in-idle");
    let mut child = h
        .command(&["--idle", "--keep"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = common::StderrLog::of(&mut child);
    log.wait_until("it never backed off", |t| t.contains("retrying in 5 s"));
    let _ = child.kill();
    let _ = child.wait();
    let text = log.finish();
    let at_once =
        text.find("; reconnecting").unwrap_or_else(|| panic!("the first drop was not retried at once:\n{text}"));
    assert!(at_once < text.find("retrying in 5 s").unwrap(), "{text}");
    let idles = h.log().lines().filter(|l| l.ends_with(" IDLE")).count();
    assert!(idles >= 2, "the retry at once never reached the server again:\n{}", h.log());
    assert_eq!(h.delivered().len(), 3, "the messages, once");
}

/// Regression: a server's `-ERR` or `BYE` text reached the terminal raw in
/// fetch's final error line: escape sequences could retitle the window,
/// clear the screen and print a fake message.
#[test]
fn regression_server_bytes_never_reach_a_terminal_raw_in_fetchs_error_line() {
    for scenario in ["pop3-escape-err", "imap-escape-bye"] {
        let h = Hostile::new(scenario);
        let out = h.run(&[]);
        assert_ne!(out.status.code(), Some(0), "{scenario}");
        assert!(
            !out.stderr.iter().any(|&b| b == 0x1b || b == 0x07),
            "{scenario}: raw control bytes: {:?}",
            stderr(&out)
        );
        let err = stderr(&out);
        assert!(err.contains("\\x1b]0;owned\\x07"), "{scenario}: the text is shown, escaped: {err}");
        assert!(h.delivered().is_empty());
    }
}

/// Regression: "greeted `* OK`, not `* PREAUTH`" hid what the server said;
/// the greeting is quoted (bounded, printable), so a login prompt, an alert
/// and a banner can be told apart.
#[test]
fn regression_a_greeting_that_is_not_preauth_is_quoted_in_the_error() {
    let h = Hostile::new("imap-login-no-sasl-ir");
    // No password: the command must greet PREAUTH.
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_sshmail"));
    c.env("HOME", h.maildir().parent().unwrap())
        .env_remove("SSH_AUTH_SOCK")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .args(["fetch", "--imap", "--via", "command", "--tunnel"])
        .arg(h.tunnel())
        .arg("--deliver")
        .arg(format!("maildir:{}", h.maildir().display()))
        .arg("--state-dir")
        .arg(h.maildir().parent().unwrap().join("state"));
    let out = common::wait_bounded(c.spawn().unwrap(), Duration::from_secs(60));
    assert_exit(&out, 3);
    let err = stderr(&out);
    assert!(err.contains("greeted `* OK [CAPABILITY …] scripted IMAP server, log in`, not `* PREAUTH`"), "{err}");
}

/// Regression: on a terminal (where the tunnel command shares our process
/// group so that it may prompt), what the command started outlived sshmail:
/// the command itself was killed when the stream closed, its children ran
/// on. Now the command gets a grace to end by itself, then its descendants
/// and it are ended, before sshmail exits. The terminal is a pty (script).
#[test]
fn regression_no_child_of_a_tunnel_command_outlives_sshmail_on_a_terminal() {
    let h = Hostile::new("pop3");
    let pidfile = h.dir.path().join("lingering.pid");
    // A shell that leaves a child running past the session, as `ssh` lingers
    // to close its connection.
    let tunnel = format!("sleep 5 & echo $! > '{}'; {}; wait", pidfile.display(), h.tunnel());
    let inner = h.command(&["--tunnel", &tunnel]);
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
    let line = std::iter::once(inner.get_program()).chain(inner.get_args()).map(quote).collect::<Vec<_>>().join(" ");
    // The check runs on the terminal, right after sshmail exits (when the
    // terminal itself closes, its hangup would end the child anyway).
    let check = format!(
        "{line}; code=$?; p=$(cat '{}'); s=$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null); \
         [ -n \"$s\" ] && [ \"$s\" != Z ] && echo \"LINGERING $p $s\"; echo \"EXIT $code\"",
        pidfile.display()
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &check, "/dev/null"]);
    cmd.envs(inner.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
    let child = cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let out = common::wait_bounded(child, Duration::from_secs(60));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("EXIT 0"), "{said}");
    assert_eq!(h.delivered().len(), 3, "the session itself went through");
    assert!(!said.contains("LINGERING"), "the tunnel's child outlived sshmail: {said}");
}
