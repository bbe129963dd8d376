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

/// Mode bits of a path.
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_control_socket_is_private_status_names_every_account_and_a_second_daemon_exits_5_naming_the_first() {
    let env = Env::new();
    let accounts = env.imap_toml("mail", "") + &env.pop3_toml("pop", "interval = 3600");
    let daemon = Daemon::start(&env, &accounts);
    daemon.wait_status("both accounts running", Duration::from_secs(30), |s| {
        let mode_of = |name: &str| s.accounts.iter().find(|a| a.name == name).map(|a| a.folders[0].mode);
        mode_of("mail") == Some(Mode::Idle) && mode_of("pop") == Some(Mode::Polling)
    });
    let status = daemon.status();
    assert_eq!(status.pid, daemon.child.id());
    let mail = &status.accounts.iter().find(|a| a.name == "mail").unwrap();
    assert_eq!((mail.protocol.as_str(), mail.folders[0].folder.as_str()), ("imap", "INBOX"));
    assert!(mail.folders[0].connection.as_deref().is_some_and(|c| c.contains("127.0.0.1")), "{mail:?}");
    let pop = &status.accounts.iter().find(|a| a.name == "pop").unwrap();
    assert!(pop.folders[0].next.as_ref().is_some_and(|n| n.what == "poll"), "{pop:?}");
    let text = daemon.ctl(&["status"]);
    let shown = String::from_utf8_lossy(&text.stdout);
    assert!(shown.contains("mail (imap") && shown.contains("INBOX: IDLE") && shown.contains("pop (pop3"), "{shown}");
    let only = daemon.ctl(&["status", "--json", "pop"]);
    let only: sshmail::daemon::board::Status = serde_json::from_slice(&only.stdout).unwrap();
    assert_eq!(only.accounts.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["pop"]);

    let run = env.home.path().join("run/sshmail");
    assert_eq!(mode(&run), 0o700, "the control directory is private");
    let socket = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("control"))
        .expect("the control socket");
    assert_eq!(mode(&socket), 0o600, "the control socket is private");

    // A second daemon for the same config.
    let second = Daemon::spawn(env.home.path(), &daemon.config, &[]);
    let (code, log) = second.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(5), "{log}");
    assert!(log.contains(&format!("PID {}", daemon.child.id())), "the second names the first's PID: {log}");

    // Another user: the modes keep it out, and where they would not, the
    // peer check does.
    let as_nobody = |args: &[&str]| {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", env!("CARGO_BIN_EXE_sshmail")])
            .args(args)
            .arg("--config")
            .arg(&daemon.config)
            .env("XDG_RUNTIME_DIR", env.home.path().join("run"))
            .env("HOME", env.home.path())
            .stdin(std::process::Stdio::null());
        c.output().expect("setpriv (util-linux)")
    };
    let out = as_nobody(&["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::PermissionsExt as _;
    let home_mode = mode(env.home.path());
    std::fs::set_permissions(env.home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(env.home.path().join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&["stop"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    daemon.log.wait_until("the refusal is logged", |l| l.contains("refused a control connection from uid 65534"));
    std::fs::set_permissions(env.home.path(), std::fs::Permissions::from_mode(home_mode)).unwrap();
    assert!(daemon.ctl(&["status"]).status.success(), "the daemon still runs after another user's stop");

    let stopped = daemon.ctl(&["stop"]);
    assert_eq!(stopped.status.code(), Some(0), "{}", String::from_utf8_lossy(&stopped.stderr));
    let (code, _) = daemon_exit(daemon);
    assert_eq!(code, Some(0));
    let none = std::process::Command::new(env!("CARGO_BIN_EXE_sshmail"))
        .args(["status", "--config"])
        .arg(env.home.path().join("config.toml"))
        .env("XDG_RUNTIME_DIR", env.home.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2), "status without a daemon");
}

fn daemon_exit(d: Daemon) -> (Option<i32>, String) {
    d.wait_exit(Duration::from_secs(10))
}

#[test]
fn sigusr1_and_poll_fetch_a_pop3_account_at_once() {
    let mut env = Env::new();
    env.add_messages((0..3).map(|i| corpus::mixed_message(i, 1)));
    let daemon = Daemon::start(&env, &env.pop3_toml("pop", "interval = 3600"));
    wait_delivered(&env, 3, Duration::from_secs(30), &daemon);
    // Wait for the first poll to have ended: the next one is an hour away.
    daemon.wait_status("the first poll ended", Duration::from_secs(30), |s| {
        s.accounts[0].folders[0].next.as_ref().is_some_and(|n| n.what == "poll")
    });

    env.add_messages((3..5).map(|i| corpus::mixed_message(i, 1)));
    daemon.signal("USR1");
    let took = wait_delivered(&env, 5, Duration::from_secs(10), &daemon);
    eprintln!("SIGUSR1: delivered after {took:?}");

    env.add_messages([corpus::mixed_message(5, 1)]);
    let out = daemon.ctl(&["poll", "pop"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pop: INBOX: 1 new\n");
    assert_eq!(read_dir_contents(&env.maildir().join("new")).len(), 6, "poll answers once the pass is done");
    let out = daemon.ctl(&["poll"]);
    assert_eq!(out.status.code(), Some(1), "nothing new: {}", String::from_utf8_lossy(&out.stdout));
    let out = daemon.ctl(&["poll", "nosuch"]);
    assert_eq!(out.status.code(), Some(5), "an unknown account: {}", String::from_utf8_lossy(&out.stderr));
    daemon.stop();
    assert_same(env.delivered(), env.expected());
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
}
