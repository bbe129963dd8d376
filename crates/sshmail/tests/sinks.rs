//! Delivery sinks against real peers: mbox read back by Python's `mailbox`,
//! procmail as the MDA, aiosmtpd as the SMTP server, Dovecot's LMTP; the
//! Received: line; a full disk.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, SmtpServer, assert_exit, stderr};
use sshmail_testbed::{Options, corpus};

/// The messages of an mbox as Python's `mailbox.mbox` reads them, with the
/// mboxrd quoting undone (Python reads the quoting but does not undo it).
fn mbox_messages(path: &Path) -> Vec<Vec<u8>> {
    let script = "import mailbox,sys\n\
                  mb = mailbox.mbox(sys.argv[1])\n\
                  for k in mb.keys():\n\
                  \x20   b = mb.get_bytes(k)\n\
                  \x20   sys.stdout.buffer.write(b'%d\\n' % len(b) + b)\n";
    let out = Command::new("/usr/bin/python3").arg("-c").arg(script).arg(path).output().expect("python3 runs");
    assert!(out.status.success(), "python mailbox failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut msgs = Vec::new();
    let mut rest = &out.stdout[..];
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n').unwrap();
        let len: usize = std::str::from_utf8(&rest[..nl]).unwrap().parse().unwrap();
        let raw = &rest[nl + 1..nl + 1 + len];
        rest = &rest[nl + 1 + len..];
        let mut m = Vec::new();
        for line in raw.split_inclusive(|&b| b == b'\n') {
            let quotes = line.iter().take_while(|&&b| b == b'>').count();
            if quotes > 0 && line[quotes..].starts_with(b"From ") {
                m.extend_from_slice(&line[1..]);
            } else {
                m.extend_from_slice(line);
            }
        }
        msgs.push(m);
    }
    msgs.sort();
    msgs
}

/// Originals as an mbox must store them: every message ends with a newline.
fn with_final_newline(msgs: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = msgs
        .into_iter()
        .map(|mut m| {
            if !m.ends_with(b"\n") {
                m.push(b'\n');
            }
            m
        })
        .collect();
    v.sort();
    v
}

#[test]
fn received_line_is_added_by_default_and_the_rest_is_byte_identical() {
    let mut env = Env::new();
    env.with_received = true;
    env.add_messages((0..5).map(|i| corpus::mixed_message(i, 0)));
    let out = env.run(&[]);
    assert_exit(&out, 0);
    let mut stripped = Vec::new();
    for m in env.delivered() {
        let nl = m.iter().position(|&b| b == b'\n').unwrap();
        let first = String::from_utf8_lossy(&m[..nl]).into_owned();
        assert!(first.starts_with("Received: from 127.0.0.1:"), "{first}");
        assert!(first.contains("with POP3") && first.contains("(sshmail "), "{first}");
        stripped.push(m[nl + 1..].to_vec());
    }
    stripped.sort();
    assert_eq!(stripped, env.expected());
}

#[test]
fn mbox_is_read_back_intact_by_pythons_mailbox() {
    let mut env = Env::new();
    env.add_messages((0..200).map(|i| corpus::mixed_message(i, 50)));
    let mbox = env.home.path().join("mail/inbox.mbox");
    std::fs::create_dir_all(mbox.parent().unwrap()).unwrap();
    // An mbox with a message already in it, not ending in a blank line.
    std::fs::write(&mbox, "From old@example.org Sat Nov 21 12:00:00 2026\nSubject: old\n\nold body\n").unwrap();
    let spec = format!("mbox:{}", mbox.display());
    let out = env.run(&["--deliver", &spec]);
    assert_exit(&out, 0);
    let mut expected = with_final_newline(env.originals.clone());
    expected.push(b"Subject: old\n\nold body\n".to_vec());
    expected.sort();
    assert_eq!(mbox_messages(&mbox), expected);
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
    assert!(!mbox.with_extension("mbox.lock").exists());
}

#[test]
fn mda_procmail_delivers_into_a_maildir() {
    let mut env = Env::new();
    env.add_messages((0..30).map(|i| corpus::mixed_message(i, 0)));
    let target = env.home.path().join("procmail-Maildir");
    let spec = format!("mda:procmail -m DEFAULT={}/ /dev/null", target.display());
    let out = env.run(&["--deliver", &spec]);
    assert_exit(&out, 0);
    let mut got = common::read_dir_contents(&target.join("new"));
    got.extend(common::read_dir_contents(&target.join("cur")));
    got.sort();
    assert_eq!(got, env.expected());
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
}

#[test]
fn mda_failure_leaves_mail_on_the_server() {
    let mut env = Env::new();
    env.add_messages((0..3).map(|i| corpus::mixed_message(i, 0)));
    for (spec, what) in [
        ("mda:sh -c 'cat >/dev/null; exit 75'", "exited 75"),
        ("mda:sh -c 'echo disk on fire >&2; exit 1'", "disk on fire"),
    ] {
        let out = env.run(&["--deliver", spec]);
        assert_exit(&out, 10);
        assert!(stderr(&out).contains(what), "{}", stderr(&out));
        assert_eq!(env.bed.server_message_count().unwrap(), 3);
    }
    // Once the MDA works, everything arrives, once.
    let target = env.home.path().join("later");
    let spec = format!("mda:procmail -m DEFAULT={}/ /dev/null", target.display());
    let out = env.run(&["--deliver", &spec]);
    assert_exit(&out, 0);
    assert_eq!(common::read_dir_contents(&target.join("new")), env.expected());
}

#[test]
fn smtp_to_a_real_server_delivers_intact_and_leaves_refused_mail() {
    let mut env = Env::new();
    env.add_messages((0..200).map(|i| corpus::mixed_message(i, 50)));
    let smtp = SmtpServer::start(&env.home.path().join("smtp"), None);
    let spec = format!("smtp:127.0.0.1:{}", smtp.port);
    let out = env.run(&["--deliver", &spec, "--recipient", "me@localhost"]);
    // aiosmtpd enforces RFC 5321's 1000-octet line limit: the corpus
    // messages with longer lines are refused (500, permanent) and must stay
    // on the server, reported with exit 10; all others arrive intact.
    let (fits, too_long): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
        env.originals.iter().cloned().partition(|m| m.split(|&b| b == b'\n').all(|l| l.len() <= 998));
    assert!(!fits.is_empty() && !too_long.is_empty(), "the corpus should have both kinds");
    assert_exit(&out, 10);
    assert!(stderr(&out).contains("Line too long"), "{}", stderr(&out));
    let got = smtp.received();
    let contents: Vec<Vec<u8>> = got.iter().map(|(_, c)| c.clone()).collect();
    assert_eq!(contents, with_final_newline(fits));
    for (envelope, _) in &got {
        let mut lines = envelope.lines();
        assert!(lines.next().unwrap().starts_with("sender"), "envelope sender from Return-Path: {envelope}");
        assert_eq!(lines.next(), Some("me@localhost"));
    }
    let mut left = env.bed.folder_contents("INBOX").unwrap();
    left.sort();
    let mut too_long = too_long;
    too_long.sort();
    assert_eq!(left, too_long, "exactly the refused messages stay on the server");
}

#[test]
fn smtp_permanent_refusal_leaves_mail_on_the_server() {
    let mut env = Env::new();
    env.add_messages((0..4).map(|i| corpus::mixed_message(i, 0)));
    let smtp = SmtpServer::start(&env.home.path().join("smtp"), Some("nobody@localhost"));
    let spec = format!("smtp:127.0.0.1:{}", smtp.port);
    let out = env.run(&["--deliver", &spec, "--recipient", "nobody@localhost"]);
    assert_exit(&out, 10);
    assert!(stderr(&out).contains("550"), "{}", stderr(&out));
    assert_eq!(env.bed.server_message_count().unwrap(), 4);
    assert!(smtp.received().is_empty());
}

#[test]
fn smtp_temporary_refusal_leaves_mail_on_the_server_until_it_is_accepted() {
    let mut env = Env::new();
    // Short lines: aiosmtpd refuses lines over 1000 octets.
    env.add_messages((0..4).map(|i| corpus::small_message(i, 2000)));
    let busy = SmtpServer::start(&env.home.path().join("busy"), Some("451:me@localhost"));
    let out = env.run(&["--deliver", &format!("smtp:127.0.0.1:{}", busy.port), "--recipient", "me@localhost"]);
    assert_exit(&out, 10);
    assert!(stderr(&out).contains("451") && stderr(&out).contains("temporary"), "{}", stderr(&out));
    assert_eq!(env.bed.server_message_count().unwrap(), 4);
    assert!(busy.received().is_empty());
    // The next run, with the server taking mail again, delivers each once.
    let open = SmtpServer::start(&env.home.path().join("open"), None);
    let out = env.run(&["--deliver", &format!("smtp:127.0.0.1:{}", open.port), "--recipient", "me@localhost"]);
    assert_exit(&out, 0);
    let contents: Vec<Vec<u8>> = open.received().into_iter().map(|(_, c)| c).collect();
    assert_eq!(contents, with_final_newline(env.expected()));
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
}

#[test]
fn lmtp_over_a_unix_socket_into_dovecot() {
    let mut env = Env::with(Options { lmtp: true, ..Options::default() });
    // Messages without a Return-Path of their own (LMTP adds one on top).
    env.add_messages((0..5).map(|i| corpus::small_message(i, 1000)));
    let socket = env.bed.lmtp_socket().expect("the testbed's Dovecot has an LMTP socket");
    let spec = format!("lmtp:{}", socket.display());
    let out = env.run(&["--deliver", &spec, "--recipient", "mailuser+Sock"]);
    assert_exit(&out, 0);
    let mut got: Vec<Vec<u8>> =
        env.bed.folder_contents("Sock").unwrap().iter().map(|m| common::strip_trace(m)).collect();
    got.sort();
    assert_eq!(got.len(), 5, "{} delivered over the socket", got.len());
    assert!(got == env.expected(), "the messages differ");
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
}

/// Regression: procmail's `lockfile` writes "0" into the lock, which was
/// read as the PID of a dead holder, so sshmail removed a live lock and
/// appended while another program held it.
#[test]
fn regression_mbox_waits_for_a_real_lockers_dotlock() {
    // procmail's lockfile holds PATH.lock; sshmail must wait for it, then
    // append, and leave the lock to nobody.
    let mut env = Env::new();
    env.add_messages((0..3).map(|i| corpus::mixed_message(i, 0)));
    let mbox = env.home.path().join("mbox");
    std::fs::write(&mbox, b"").unwrap();
    let lock = format!("{}.lock", mbox.display());
    let status = Command::new("lockfile").args(["-r0", &lock]).status().expect("procmail's lockfile");
    assert!(status.success());
    let child = env
        .command(&["--deliver", &format!("mbox:{}", mbox.display())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the messages are staged, sshmail is at the lock; it tries every
    // 100 ms, so a few tries' time shows whether it waits.
    let staged = || -> usize {
        std::fs::read_dir(env.state_dir())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "spool"))
            .filter_map(|p| std::fs::read_dir(p).ok())
            .map(|d| d.count())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while staged() < 3 {
        assert!(Instant::now() < deadline, "the messages were never staged");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(std::fs::read(&mbox).unwrap().is_empty(), "sshmail wrote while another program held the dotlock");
    assert_eq!(env.bed.server_message_count().unwrap(), 3);
    std::fs::remove_file(&lock).unwrap();
    let out = common::wait_bounded(child, Duration::from_secs(60));
    assert_exit(&out, 0);
    assert_eq!(mbox_messages(&mbox).len(), 3);
    assert!(!Path::new(&lock).exists(), "the dotlock was left behind");
}

#[test]
fn lmtp_into_dovecot_serves_back_the_same_message() {
    let mut env = Env::with(Options { lmtp: true, ..Options::default() });
    env.add_messages((0..50).map(|i| corpus::mixed_message(i, 0)));
    let spec = format!("lmtp:127.0.0.1:{}", env.bed.lmtp_port);
    let out = env.run(&["--deliver", &spec, "--recipient", "mailuser+Delivered"]);
    assert_exit(&out, 0);
    assert_eq!(env.bed.server_message_count().unwrap(), 0, "INBOX emptied");
    // Dovecot's LMTP adds its own trace fields on top; below them is the
    // message byte for byte.
    let stored = env.bed.folder_contents("Delivered").unwrap();
    assert_eq!(stored.len(), 50);
    let mut bodies = Vec::new();
    for m in stored {
        let mut rest = &m[..];
        while ["Return-Path:", "Delivered-To:", "Received:", "\t", " "].iter().any(|p| rest.starts_with(p.as_bytes())) {
            let nl = rest.iter().position(|&b| b == b'\n').unwrap();
            rest = &rest[nl + 1..];
        }
        bodies.push(rest.to_vec());
    }
    bodies.sort();
    // The corpus starts each message with its own Return-Path, which the
    // loop above also removed: compare without it.
    let expected: Vec<Vec<u8>> = {
        let mut v: Vec<Vec<u8>> = with_final_newline(env.originals.clone())
            .into_iter()
            .map(|m| {
                let nl = m.iter().position(|&b| b == b'\n').unwrap();
                m[nl + 1..].to_vec()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(bodies, expected);
}

#[test]
fn disk_full_gives_a_clear_error_and_loses_nothing() {
    let mut env = Env::new();
    env.add_messages((0..4).map(|i| corpus::mixed_message(i, 0)));
    // Over a megabyte: cannot fit.
    env.add_messages([corpus::mixed_message(9, 1)]);
    let disk = common::SmallDisk::mount(&env.home.path().join("small"));

    // Maildir on the full disk.
    let md = disk.0.join("Maildir");
    let spec = format!("maildir:{}", md.display());
    // Each phase keeps its own ledger: what went to the small disk vanishes
    // with it at the end.
    let state = |n: &str| env.home.path().join(n).display().to_string();
    let out = env.run(&["--deliver", &spec, "--state-dir", &state("state-a")]);
    assert_exit(&out, 10);
    assert!(stderr(&out).contains("No space left on device"), "{}", stderr(&out));
    assert_eq!(env.bed.server_message_count().unwrap(), 5, "nothing deleted");
    let expected = env.expected();
    for m in common::read_dir_contents(&md.join("new")) {
        assert!(expected.binary_search(&m).is_ok(), "a partial message was filed");
    }
    assert_eq!(std::fs::read_dir(md.join("tmp")).unwrap().count(), 0, "tmp/ cleaned");

    // mbox on the full disk: left exactly as it was.
    let mbox = disk.0.join("mbox");
    let old = b"From old@example.org Sat Nov 21 12:00:00 2026\nSubject: old\n\nold\n\n".to_vec();
    std::fs::write(&mbox, &old).unwrap();
    let spec = format!("mbox:{}", mbox.display());
    let out = env.run(&["--deliver", &spec, "--state-dir", &state("state-b")]);
    assert_exit(&out, 10);
    assert!(stderr(&out).contains("No space left on device"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&mbox).unwrap(), old, "the mbox must not be left corrupt");
    assert_eq!(env.bed.server_message_count().unwrap(), 5);

    // With room again, every message arrives.
    drop(disk);
    let out = env.run(&["--state-dir", &state("state-c")]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
}

/// Durable before destructive for the SMTP sink: killed at every step, the
/// next run leaves every message delivered (a duplicate only where the
/// relay accepted it and the ledger had not yet recorded it) and none on
/// the server; and before the record, the server still holds them all.
#[test]
fn durable_before_destructive_kill_at_every_step_smtp() {
    let points =
        ["message-written", "sink-delivered", "batch-recorded", "delete-sent", "dele-confirmed@3", "quit-sent"];
    for point in points {
        let mut env = Env::new();
        env.add_messages((0..6).map(|i| corpus::small_message(i, 800)));
        let smtp = SmtpServer::start(&env.home.path().join("smtp"), None);
        let spec = format!("smtp:127.0.0.1:{}", smtp.port);
        let mut cmd = env.command(&["--deliver", &spec, "--recipient", "me@localhost"]);
        cmd.env("SSHMAIL_FAULT", point);
        let out = common::wait_bounded(
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(),
            Duration::from_secs(60),
        );
        assert_eq!(out.status.code(), None, "{point}: the fault did not fire: {}", stderr(&out));
        if ["message-written", "sink-delivered", "batch-recorded"].contains(&point) {
            assert_eq!(
                env.bed.server_message_count().unwrap(),
                6,
                "{point}: the server lost messages before the record"
            );
        }
        let out = env.run(&["--deliver", &spec, "--recipient", "me@localhost"]);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{point}: rerun failed: {}", stderr(&out));
        let mut got: Vec<Vec<u8>> = smtp.received().into_iter().map(|(_, c)| c).collect();
        if point == "sink-delivered" {
            got.dedup();
        }
        assert_eq!(got, with_final_newline(env.expected()), "{point}: missing or duplicated");
        assert_eq!(env.bed.server_message_count().unwrap(), 0, "{point}: left on the server");
    }
}
