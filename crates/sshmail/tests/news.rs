//! New mail, told: hooks (`on_new` after each batch of new mail is durable
//! and recorded, the daemon's and `fetch`'s; `on_sent` after the relay
//! accepted a message) and the daemon's event feed (`status --follow`).
//! Against the testbed's sshd and Dovecot (mail put in by `doveadm
//! save`), aiosmtpd as the relay.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::desktop::Desktop;
use common::{Daemon, Env, SmtpServer, assert_exit, stderr, wait_bounded};

/// A hook (python) that appends, for each message on its stdin, a JSON
/// line to `record`: the message's fields, whether its file is in a
/// Maildir's `new/` at that moment, and the hook's environment.
fn recording_hook(dir: &Path, record: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let hook = dir.join("record-hook");
    std::fs::write(
        &hook,
        format!(
            "#!/usr/bin/env python3\n\
             import json, os, sys\n\
             lines = sys.stdin.read().splitlines()\n\
             out = []\n\
             for line in lines:\n\
             \x20   m = json.loads(line)\n\
             \x20   p = m.get('path')\n\
             \x20   m['durable'] = bool(p) and os.path.isfile(p) and os.path.basename(os.path.dirname(p)) == 'new'\n\
             \x20   m['env'] = {{k: v for k, v in os.environ.items() if k.startswith('SSHMAIL_')}}\n\
             \x20   out.append(json.dumps(m))\n\
             with open('{}', 'a') as f:\n\
             \x20   f.write(''.join(l + '\\n' for l in out))\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    hook
}

/// The records written so far.
fn records(record: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits (bounded) until `record` holds `n` records.
fn wait_records(record: &Path, n: usize, limit: Duration, log: impl Fn() -> String) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        let r = records(record);
        if r.len() >= n {
            return r;
        }
        assert!(Instant::now() < deadline, "{} of {n} records; log:\n{}", r.len(), log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A message with a known Message-ID, an encoded subject and a control
/// character in it.
fn message(i: usize) -> Vec<u8> {
    format!(
        "From: =?utf-8?q?J=C3=BCrgen?= {i} <j{i}@example.org>\r\nTo: mailuser@example.net\r\n\
         Subject: =?utf-8?q?n=C2=B0?= {i} \x1b[31mred\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\n\
         Message-ID: <hook-{i}@example.org>\r\n\r\nbody {i}\r\n"
    )
    .into_bytes()
}

/// Two accounts on the testbed's Dovecot, three folders, fifty messages
/// delivered by Dovecot in bursts while the daemon watches: one record per
/// message, every file in `new/` when the hook ran, the fields decoded and
/// printable, the environment naming the account, the folder and the
/// count of its batch.
#[test]
fn on_new_is_told_of_each_message_once_after_it_is_durable() {
    let env = Env::new();
    let record = env.home.path().join("record");
    let hook = recording_hook(env.home.path(), &record);
    let imapd = format!("imapd = [\"/usr/lib/dovecot/imap\", \"-c\", \"{}\"]\n", env.bed.dovecot_config.display());
    let on_new = format!("on_new = [\"{}\"]\n", hook.display());
    let other = env.home.path().join("other-Maildir");
    let accounts = format!(
        "{}{}",
        env.imap_toml("a", &format!("{imapd}{on_new}folders = [\"INBOX\", \"Lists\"]\n")),
        env.imap_toml("b", &format!("{imapd}{on_new}folders = [\"Work\"]\n"))
            .replace(&env.maildir().display().to_string(), &other.display().to_string())
    );
    for folder in ["Lists", "Work"] {
        env.bed.deliver_by_dovecot(folder, &message(1000)).unwrap();
    }
    let daemon = Daemon::start(&env, &accounts);
    let log = || daemon.log.text();
    // The two messages there before: told too.
    wait_records(&record, 2, Duration::from_secs(60), log);
    let folders = ["INBOX", "Lists", "Work"];
    for burst in 0..5 {
        for i in 0..10 {
            let n = burst * 10 + i;
            env.bed.deliver_by_dovecot(folders[n % 3], &message(n)).unwrap();
        }
        wait_records(&record, 2 + (burst + 1) * 10, Duration::from_secs(60), log);
    }
    let all = wait_records(&record, 52, Duration::from_secs(60), log);
    std::thread::sleep(Duration::from_millis(500));
    let all = if records(&record).len() > all.len() { records(&record) } else { all };
    assert_eq!(all.len(), 52, "one record per message:\n{}", std::fs::read_to_string(&record).unwrap());
    let mut ids: Vec<&str> = all.iter().map(|r| r["message_id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 51, "each message once (1000 went to two folders)");
    for r in &all {
        assert_eq!(r["durable"], true, "the hook ran before the file was in new/: {r}");
        let (account, folder) =
            (r["env"]["SSHMAIL_ACCOUNT"].as_str().unwrap(), r["env"]["SSHMAIL_FOLDER"].as_str().unwrap());
        assert_eq!((r["account"].as_str().unwrap(), r["folder"].as_str().unwrap()), (account, folder));
        assert_eq!(account, if folder == "Work" { "b" } else { "a" }, "{r}");
        assert!(r["env"]["SSHMAIL_COUNT"].as_str().unwrap().parse::<usize>().unwrap() >= 1);
        let i = r["message_id"].as_str().unwrap().trim_start_matches("<hook-").trim_end_matches("@example.org>");
        assert_eq!(r["subject"], format!("n° {i} [31mred"), "decoded, the escape dropped: {r}");
        assert_eq!(r["from"], format!("Jürgen {i} <j{i}@example.org>"));
        assert_eq!(r["size"].as_u64().unwrap(), std::fs::metadata(r["path"].as_str().unwrap()).unwrap().len());
        assert!(r["sink"].as_str().unwrap().starts_with("maildir:"), "{r}");
    }
    daemon.stop();
}

/// `fetch` runs the hook too, after the batch is recorded: killed before
/// the record, no hook ran for that batch, and the next run tells of it
/// (the interrupted publish finished). A hook that fails is logged and
/// changes neither the delivery nor the exit code.
#[test]
fn fetch_tells_the_hook_after_the_record_and_the_next_run_tells_of_a_batch_a_kill_cut_short() {
    let mut env = Env::new();
    for i in 0..4 {
        env.bed.deliver_by_dovecot("INBOX", &message(i)).unwrap();
        env.originals.push(message(i));
    }
    let record = env.home.path().join("record");
    let hook = recording_hook(env.home.path(), &record);
    let imapd = format!("imapd = [\"/usr/lib/dovecot/imap\", \"-c\", \"{}\"]\n", env.bed.dovecot_config.display());
    let config = env.home.path().join("config.toml");
    Daemon::write_config(
        &config,
        &env.config_toml(&env.imap_toml("a", &format!("{imapd}on_new = [\"{}\"]\nkeep = true\n", hook.display()))),
    );
    let fetch = |fault: Option<&str>| {
        let mut c = Daemon::base_command(env.home.path());
        c.args(["fetch", "--config"]).arg(&config).env("SSHMAIL_BATCH", "2");
        if let Some(f) = fault {
            c.env("SSHMAIL_FAULT", f);
        }
        let child = c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        wait_bounded(child, Duration::from_secs(120))
    };
    // Killed after the first batch's files are in new/, before its record.
    let out = fetch(Some("maildir-dir-synced"));
    assert!(stderr(&out).contains("fault injected"), "{}", stderr(&out));
    assert!(records(&record).is_empty(), "a hook ran for a batch not recorded");
    assert_eq!(env.delivered().len(), 2);
    let out = fetch(None);
    assert_exit(&out, 0);
    let all = wait_records(&record, 4, Duration::from_secs(30), || stderr(&out));
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all.iter().all(|r| r["durable"] == true));
    assert_eq!(env.delivered().len(), 4);

    // A failing hook: logged, the exit code is the fetch's.
    env.bed.deliver_by_dovecot("INBOX", &message(9)).unwrap();
    Daemon::write_config(
        &config,
        &env.config_toml(&env.imap_toml("a", &format!("{imapd}on_new = \"echo broken >&2; exit 3\"\nkeep = true\n"))),
    );
    let out = fetch(None);
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("on_new") && stderr(&out).contains("failed (exited with 3): broken"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.delivered().len(), 5);
}

/// A hook that hangs is ended at its timeout, with what it started, and
/// the daemon goes on delivering; one that prints without end costs the
/// daemon no memory.
#[test]
fn a_hook_that_hangs_is_ended_at_its_timeout_and_one_that_floods_costs_no_memory() {
    let env = Env::new();
    let pids = env.home.path().join("pids");
    let imapd = format!("imapd = [\"/usr/lib/dovecot/imap\", \"-c\", \"{}\"]\n", env.bed.dovecot_config.display());
    let hook = format!(
        "on_new = \"echo $$ >> {pids}; sleep 600 & echo $! >> {pids}; head -c 100000000 /dev/zero; head -c 100000000 /dev/zero >&2; wait\"\nhook_timeout = 2\n",
        pids = pids.display()
    );
    let daemon = Daemon::start(&env, &env.imap_toml("a", &format!("{imapd}{hook}")));
    let hwm = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap().to_string();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
    };
    daemon.wait_status("the folder IDLE", Duration::from_secs(60), |s| {
        s.accounts[0].folders.iter().all(|f| f.mode == sshmail::control::status::Mode::Idle)
    });
    let before = hwm();
    for round in 0..2 {
        env.bed.deliver_by_dovecot("INBOX", &message(round)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while env.delivered().len() < round + 1 {
            assert!(Instant::now() < deadline, "not delivered while a hook hangs; log:\n{}", daemon.log.text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.log.text().matches("did not finish within 2 s; it was ended").count() < 2 {
        assert!(Instant::now() < deadline, "no hook ended at its timeout; log:\n{}", daemon.log.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let started: Vec<u32> =
        std::fs::read_to_string(&pids).unwrap().lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(started.len(), 4, "two hooks, each a shell and a sleep");
    for pid in started {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
        assert!(!alive, "pid {pid}, started by a hook, outlived its timeout");
    }
    let grown = hwm().saturating_sub(before);
    assert!(grown < 20 * 1024, "the daemon grew by {grown} KiB while hooks printed 400 MB");
    daemon.stop();
}

/// `on_sent`: after the relay accepted a message, the hook gets its
/// envelope and header fields.
#[test]
fn on_sent_is_told_of_a_message_the_relay_accepted() {
    let env = Env::new();
    let sink = SmtpServer::start(&env.home.path().join("smtp"), None);
    let record = env.home.path().join("record");
    let hook = recording_hook(env.home.path(), &record);
    let config = env.home.path().join("config.toml");
    let account = env.pop3_toml(
        "isp",
        &format!(
            "fetch = false\nsend.server = \"127.0.0.1:{}\"\nsend.from = [\"me@example.net\"]\non_sent = [\"{}\"]\n",
            sink.port,
            hook.display()
        ),
    );
    Daemon::write_config(&config, &env.config_toml(&account));
    let mut send = Daemon::base_command(env.home.path());
    send.args(["sendmail", "--config"]).arg(&config).args(["-i", "-f", "me@example.net", "you@example.org"]);
    let message = b"Subject: =?utf-8?q?sent_=E2=9C=93?=\nMessage-ID: <s1@example.net>\n\nbody\n";
    let out = common::run_with_input(send, message, Duration::from_secs(60));
    assert_exit(&out, 0);
    assert_eq!(sink.received().len(), 1);
    // sendmail exits once its hook has run.
    let all = records(&record);
    assert_eq!(all.len(), 1, "{}", stderr(&out));
    let r = &all[0];
    assert_eq!(
        (r["account"].as_str(), r["subject"].as_str(), r["message_id"].as_str()),
        (Some("isp"), Some("sent ✓"), Some("<s1@example.net>"))
    );
    assert_eq!(r["recipients"], serde_json::json!(["you@example.org"]));
    assert_eq!(r["sender"], "me@example.net");
    assert_eq!(r["env"]["SSHMAIL_ACCOUNT"], "isp");
}

/// A `status --follow --json` client: its lines as they come.
struct Follower {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Follower {
    fn start(daemon: &Daemon) -> Follower {
        use std::io::BufRead as _;
        let mut child = daemon
            .command(&["status", "--follow", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Follower { child, lines }
    }

    /// The next event of kind `kind` (bounded wait).
    fn next(&self, kind: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| panic!("no {kind} event"));
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if v["event"] == kind {
                return v;
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `status --follow --json`: two followers each get a `new` event for
/// every delivery, with the message's fields, while a third connection
/// follows and never reads; `status --json` counts the Maildir's unread
/// new messages per folder. Events about other accounts are left out for
/// a follower of one.
#[test]
fn status_follow_streams_new_mail_to_every_follower_and_a_reader_that_stalls_holds_nobody_up() {
    let env = Env::new();
    let imapd = format!("imapd = [\"/usr/lib/dovecot/imap\", \"-c\", \"{}\"]\n", env.bed.dovecot_config.display());
    let daemon = Daemon::start(&env, &env.imap_toml("uni", &imapd));
    daemon.wait_status("the folder IDLE", Duration::from_secs(60), |s| {
        s.accounts[0].folders.iter().all(|f| f.mode == sshmail::control::status::Mode::Idle)
    });
    let (a, b) = (Follower::start(&daemon), Follower::start(&daemon));
    let other = daemon.command(&["status", "--follow", "--json", "someone-else"]).output().unwrap();
    assert_exit(&other, 5);
    // A follower that never reads.
    let run = env.home.path().join("run/sshmail");
    let socket = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("control")))
        .expect("the control socket");
    let mut stalled = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    {
        use std::io::Write as _;
        stalled.write_all(b"{\"version\":2,\"command\":\"follow\"}\n").unwrap();
    }
    // Each follower is in once it has its first event: the folders, with
    // their unread counts.
    for f in [&a, &b] {
        let e = f.next("following");
        assert_eq!(e["folders"][0]["unread_new"], 0, "{e}");
    }
    for i in 0..3 {
        env.bed.deliver_by_dovecot("INBOX", &message(i)).unwrap();
        for f in [&a, &b] {
            let e = f.next("new");
            assert_eq!(
                (e["account"].as_str(), e["folder"].as_str(), e["count"].as_u64()),
                (Some("uni"), Some("INBOX"), Some(1))
            );
            let m = &e["messages"][0];
            assert_eq!(m["message_id"], format!("<hook-{i}@example.org>"));
            assert_eq!(m["subject"], format!("n° {i} [31mred"));
            assert!(std::path::Path::new(m["path"].as_str().unwrap()).is_file(), "{e}");
        }
    }
    let status = daemon.status();
    assert_eq!(status.accounts[0].folders[0].unread_new, Some(3));
    drop(stalled);
    daemon.stop();
}

/// `notify = true`: a desktop notification per batch through the session
/// bus to dunst, "N new in account/folder" with sender and subject; a
/// flood is one notification, updated; a folder in `notify_skip_folders`
/// and a message matching `notify_skip_headers` are never announced;
/// without a session bus, the log says so and the mail comes all the same.
#[test]
fn notify_shows_one_desktop_notification_per_folder_and_a_flood_is_one() {
    let env = Env::new();
    let desktop = Desktop::start(env.home.path());
    let imapd = format!("imapd = [\"/usr/lib/dovecot/imap\", \"-c\", \"{}\"]\n", env.bed.dovecot_config.display());
    env.bed.deliver_by_dovecot("Junk", &message(500)).unwrap();
    let account = env.imap_toml(
        "uni",
        &format!(
            "{imapd}notify = true\nnotify_skip_folders = [\"Ju*\"]\nnotify_skip_headers = [\"X-Spam-Flag: yes\"]\n\
             folders = [\"INBOX\", \"Junk\"]\n"
        ),
    );
    let config = env.home.path().join("config.toml");
    Daemon::write_config(&config, &env.config_toml(&account));
    let daemon = Daemon::spawn(env.home.path(), &config, &[("DBUS_SESSION_BUS_ADDRESS", &desktop.bus)]);
    daemon.wait_answering();
    daemon.wait_status("both folders IDLE", Duration::from_secs(60), |s| {
        s.accounts[0].folders.len() == 2
            && s.accounts[0].folders.iter().all(|f| f.mode == sshmail::control::status::Mode::Idle)
    });
    let wait_calls = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let calls = desktop.notified();
            if calls.len() >= n {
                return calls;
            }
            assert!(Instant::now() < deadline, "{} Notify calls; log:\n{}", calls.len(), daemon.log.text());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    env.bed.deliver_by_dovecot("INBOX", &message(1)).unwrap();
    let calls = wait_calls(1);
    assert_eq!(calls[0].0, 0, "a new notification");
    assert_eq!(calls[0].1, "1 new in uni/INBOX");
    assert_eq!(calls[0].2, "Jürgen 1: n° 1 [31mred");
    // One marked as spam, on its own: delivered, never named; then a
    // flood, and a message into the skipped folder.
    let mut spam = b"X-Spam-Flag: YES\r\n".to_vec();
    spam.extend(message(600));
    env.bed.deliver_by_dovecot("INBOX", &spam).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.delivered().len() < 3 {
        assert!(Instant::now() < deadline, "{}", daemon.log.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    env.bed.deliver_by_dovecot("Junk", &message(501)).unwrap();
    for i in 2..32 {
        env.bed.deliver_by_dovecot("INBOX", &message(i)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while desktop.notified().last().is_none_or(|c| c.1 != "31 new in uni/INBOX") {
        assert!(Instant::now() < deadline, "{:?}\nlog:\n{}", desktop.notified(), daemon.log.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let calls = desktop.notified();
    assert!(calls.iter().all(|c| c.1.ends_with("uni/INBOX")), "the skipped folder was announced: {calls:?}");
    assert!(!calls.iter().any(|c| c.2.contains("n° 600")), "the message marked as spam was announced: {calls:?}");
    assert!(calls[1..].iter().all(|c| c.0 != 0), "the flood made new notifications, not one: {calls:?}");
    assert!(calls.last().unwrap().2.ends_with("… and 28 more"), "{calls:?}");
    assert_eq!(desktop.dunstctl("displayed"), Some(1), "one notification on screen for the flood");
    assert_eq!(env.delivered().len(), 34, "32 in INBOX, 2 in Junk: delivered, the spam and Junk not announced");
    daemon.stop();

    // No session bus: said at the start; the mail comes all the same.
    let daemon = Daemon::spawn(env.home.path(), &config, &[]);
    daemon.log.wait_until("the word that notifications are off", |l| l.contains("desktop notifications are off"));
    env.bed.deliver_by_dovecot("INBOX", &message(40)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.delivered().len() < 35 {
        assert!(Instant::now() < deadline, "{}", daemon.log.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.stop();
}
