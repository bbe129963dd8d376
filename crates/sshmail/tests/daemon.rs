//! `sshmail daemon` against the real sshd (OpenSSH's default MaxSessions)
//! and Dovecot: every folder watched by IDLE, mail delivered by Dovecot
//! itself arriving within seconds, the control socket and its commands,
//! signals.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, Env, assert_exit, read_dir_contents};
use sshmail::control::status::Mode;
use sshmail_testbed::{MAIL_USER, corpus};

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
    // The route as it is (regression: an exec account showed as user@localhost:143).
    let ssh = env.bed.ssh_destination();
    assert!(shown.contains(&format!("mail (imap, exec of the imapd found on {ssh})")), "{shown}");
    assert!(shown.contains(&format!("pop (pop3, {}@127.0.0.1:{} via {ssh})", MAIL_USER, env.bed.pop3_port)), "{shown}");
    // Regression: `status --json | head` panicked on the closed pipe (exit 101).
    for args in [&["status", "--json"][..], &["status"]] {
        let mut child = daemon.command(args).stdout(std::process::Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take());
        assert_eq!(common::wait_bounded_status(&mut child, Duration::from_secs(30)), Some(0), "{args:?}");
    }
    let only = daemon.ctl(&["status", "--json", "pop"]);
    let only: sshmail::control::status::Status = serde_json::from_slice(&only.stdout).unwrap();
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
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::PermissionsExt as _;
    let home_mode = mode(env.home.path());
    std::fs::set_permissions(env.home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(env.home.path().join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    // Another user's client will not talk to a socket that is not its own …
    let out = as_nobody(&["stop"]);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is owned by uid"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // … and one that does anyway is refused by the daemon's peer check.
    let raw = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3", "-c"])
        .arg(
            "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ntry:\n    \
             s.sendall(b'{\"version\":1,\"command\":\"stop\"}\\n')\n    print(repr(s.recv(100)))\n\
             except OSError:\n    print(repr(b''))",
        )
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&raw.stdout).trim(), "b''", "{}", String::from_utf8_lossy(&raw.stderr));
    daemon.log.wait_until("the refusal is logged", |l| l.contains("refused a control connection from uid 65534"));
    // Regression: a flood of refused connections made a log line each; one
    // line now stands for those of the next 10 s.
    let flood = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3", "-c"])
        .arg(
            "import socket, sys\nfor _ in range(100):\n    s = socket.socket(socket.AF_UNIX)\n    \
             s.connect(sys.argv[1])\n    s.recv(1)\n    s.close()\nprint('done')",
        )
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&flood.stdout).trim(), "done", "{}", String::from_utf8_lossy(&flood.stderr));
    // A line logged after the flood: every refusal line is read by then.
    daemon.signal("HUP");
    daemon.log.wait_until("the reload after the flood", |l| l.contains("reloading"));
    let refusals = daemon.log.text().matches("refused a control connection").count();
    assert_eq!(refusals, 1, "101 refusals within 10 s make one line:\n{}", daemon.log.text());
    std::fs::set_permissions(env.home.path(), std::fs::Permissions::from_mode(home_mode)).unwrap();
    // Our own client refuses a control directory open to others, too.
    let out = daemon.ctl(&["status"]);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has mode 755"), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(daemon.ctl(&["status"]).status.success(), "the daemon still runs after another user's stop");

    let stopped = daemon.ctl(&["stop"]);
    assert_eq!(stopped.status.code(), Some(0), "{}", String::from_utf8_lossy(&stopped.stderr));
    let (code, _) = daemon_exit(daemon);
    assert_eq!(code, Some(0));
    let none = Daemon::base_command(env.home.path())
        .args(["status", "--config"])
        .arg(env.home.path().join("config.toml"))
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

/// How many SSH logins sshd has accepted so far.
fn ssh_logins(env: &Env) -> usize {
    std::fs::read_to_string(env.bed.sshd_log()).unwrap_or_default().matches("Accepted publickey").count()
}

#[test]
fn sighup_adds_an_account_without_reconnecting_the_others_and_a_broken_config_leaves_them_running() {
    let mut env = Env::new();
    let one = env.imap_toml("one", "");
    let daemon = Daemon::start(&env, &one);
    daemon.wait_status("one IDLE", Duration::from_secs(30), |s| s.accounts[0].folders[0].mode == Mode::Idle);
    let logins = ssh_logins(&env);
    let before = daemon.status().accounts[0].folders[0].clone();

    // Add a POP3 account on the same host.
    let config = env.config_toml(&(one.clone() + &env.pop3_toml("two", "")));
    Daemon::write_config(&daemon.config, &config);
    env.add_messages([corpus::mixed_message(1, 1)]);
    daemon.signal("HUP");
    daemon.wait_status("two added", Duration::from_secs(30), |s| {
        s.accounts.iter().any(|a| a.name == "two" && a.folders[0].passes >= 1)
    });
    wait_delivered(&env, 1, Duration::from_secs(10), &daemon);
    let after = daemon.status();
    let one_after = &after.accounts.iter().find(|a| a.name == "one").unwrap().folders[0];
    assert_eq!(
        (one_after.connects, one_after.connection.as_deref(), one_after.failures),
        (before.connects, before.connection.as_deref(), 0),
        "one kept its session"
    );
    assert_eq!(one_after.mode, Mode::Idle);
    assert_eq!(ssh_logins(&env), logins, "no new SSH connection: two shares one's");

    // A config that no longer parses: reported, the old one runs on.
    Daemon::write_config(&daemon.config, &format!("{config}\n[account.three\n"));
    daemon.signal("HUP");
    daemon.wait_status("the broken config reported", Duration::from_secs(10), |s| s.config_error.is_some());
    let refused = daemon.ctl(&["reload"]);
    assert_eq!(refused.status.code(), Some(5), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("line"), "names where: {:?}", refused);
    let m = corpus::mixed_message(2, 1);
    env.bed.deliver_by_dovecot("INBOX", &m).unwrap();
    env.originals.push(m);
    wait_delivered(&env, 2, Duration::from_secs(5), &daemon);
    let status = daemon.status();
    assert_eq!(status.accounts.len(), 2, "both accounts still run");

    // Fixed again, and one removed.
    Daemon::write_config(&daemon.config, &env.config_toml(&one));
    let ok = daemon.ctl(&["reload"]);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    daemon.wait_status("two removed", Duration::from_secs(10), |s| {
        s.config_error.is_none() && s.accounts.len() == 1 && s.accounts[0].name == "one"
    });
    let log = daemon.stop();
    assert!(log.contains("reload refused"), "{log}");
    assert_same(env.delivered(), env.expected());
}

#[test]
fn sigterm_during_a_200_mb_fetch_exits_0_within_5_s_leaving_no_partial_file_and_the_next_start_delivers_it_once() {
    let mut env = Env::new();
    let mut big = b"From: big@example.org\nTo: mailuser@example.net\nSubject: 200 MB\n\n".to_vec();
    let line = [b'x'; 76];
    while big.len() < 200 << 20 {
        big.extend_from_slice(&line);
        big.push(b'\n');
    }
    env.add_messages([big]);
    let config = env.home.path().join("config.toml");
    Daemon::write_config(&config, &env.config_toml(&env.pop3_toml("pop", "")));
    // The transfer holds still mid-message (past 16 MiB) for 20 s: the stop
    // comes while it is in flight and must abandon it.
    let daemon = Daemon::spawn(env.home.path(), &config, &[("SSHMAIL_PAUSE", "body-streaming:20000")]);
    // Under way: the message is streaming into tmp/, held still past 16 MiB.
    daemon.log.wait_until("the transfer paused mid-message", |l| l.contains("pausing"));
    assert_eq!(env.tmp_files(), 1, "the message is being staged");
    let asked = Instant::now();
    daemon.signal("TERM");
    let (code, log) = daemon.wait_exit(Duration::from_secs(5));
    eprintln!("stopped after {:?}", asked.elapsed());
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(env.tmp_files(), 0, "no partial file is left in tmp/");
    assert!(env.delivered().is_empty(), "nothing half-delivered");
    assert_eq!(env.bed.server_message_count().unwrap(), 1, "the message is still on the server");

    assert!(log.contains("abandoned"), "{log}");
    let again = Daemon::spawn(env.home.path(), &config, &[]);
    wait_delivered(&env, 1, Duration::from_secs(120), &again);
    again.wait_answering();
    again.stop();
    assert_eq!(env.delivered().len(), 1);
    assert!(env.delivered() == env.expected(), "the 200 MB message arrived once, intact");
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
}

#[test]
fn twenty_accounts_on_one_host_use_no_more_ssh_connections_than_their_channels_need() {
    let env = Env::new();
    let mut accounts = String::new();
    for i in 1..=20 {
        env.bed.deliver_by_dovecot(&format!("f{i:02}"), &corpus::mixed_message(i, 1)).unwrap();
        accounts += &env.imap_toml(&format!("a{i:02}"), &format!("folders = [\"f{i:02}\"]"));
    }
    let daemon = Daemon::start(&env, &accounts);
    daemon.wait_status("20 accounts IDLE", Duration::from_secs(60), |s| {
        s.accounts.len() == 20 && s.accounts.iter().all(|a| a.folders[0].mode == Mode::Idle)
    });
    wait_delivered(&env, 20, Duration::from_secs(10), &daemon);
    // 20 exec channels, 10 per connection (OpenSSH's MaxSessions).
    assert_eq!(ssh_logins(&env), 2, "SSH connections for 20 exec channels");
    let connections: std::collections::BTreeSet<_> =
        daemon.status().accounts.iter().filter_map(|a| a.folders[0].connection.clone()).collect();
    assert_eq!(connections.len(), 2, "{connections:?}");
    daemon.stop();
}

#[test]
fn a_killed_and_restarted_sshd_is_reconnected_and_what_arrived_meanwhile_delivered_within_30_s() {
    let mut env = Env::new();
    let daemon = Daemon::start(&env, &env.imap_toml("mail", ""));
    daemon.wait_status("IDLE", Duration::from_secs(30), |s| s.accounts[0].folders[0].mode == Mode::Idle);
    // Status shows the SSH connection (regression: it had no word on it).
    let up = |s: &sshmail::control::status::Status| {
        s.connections.len() == 1 && s.connections[0].state == "up" && s.connections[0].channels >= 1
    };
    daemon.wait_status("the connection up", Duration::from_secs(10), up);
    let shown = String::from_utf8(daemon.ctl(&["status"]).stdout).unwrap();
    assert!(shown.contains(&format!("ssh {}: up since ", env.bed.ssh_destination())), "{shown}");
    env.bed.kill_sshd();
    for i in 0..3 {
        let m = corpus::mixed_message(i, 1);
        env.bed.deliver_by_dovecot("INBOX", &m).unwrap();
        env.originals.push(m);
    }
    daemon.wait_status("the loss noticed", Duration::from_secs(30), |s| s.accounts[0].folders[0].failures > 0);
    daemon.wait_status("the connection down, with why", Duration::from_secs(30), |s| {
        s.connections.len() == 1 && s.connections[0].state == "down" && s.connections[0].last_error.is_some()
    });
    daemon.log.wait_until("the loss is logged", |l| l.contains("the connection was lost"));
    std::thread::sleep(Duration::from_secs(3));
    env.bed.restart_sshd().unwrap();
    let took = wait_delivered(&env, 3, Duration::from_secs(30), &daemon);
    eprintln!("delivered {took:?} after sshd came back");
    daemon.wait_status("IDLE again", Duration::from_secs(10), |s| {
        let f = &s.accounts[0].folders[0];
        f.mode == Mode::Idle && f.connected && f.connects >= 2
    });
    daemon.wait_status("the connection up again", Duration::from_secs(10), up);
    daemon.log.wait_until("the return is logged", |l| l.contains("connected again"));
    daemon.stop();
    assert_same(env.delivered(), env.expected());
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
}

#[test]
fn an_sshd_frozen_for_20_s_is_noticed_and_reconnected_nothing_lost_or_duplicated() {
    let mut env = Env::new();
    env.add_messages((0..2).map(|i| corpus::mixed_message(i, 1)));
    let daemon = Daemon::start(&env, &env.imap_toml("mail", ""));
    wait_delivered(&env, 2, Duration::from_secs(30), &daemon);
    daemon.wait_status("IDLE", Duration::from_secs(30), |s| s.accounts[0].folders[0].mode == Mode::Idle);
    let mut frozen = env.bed.sshd_session_pids();
    frozen.extend(env.bed.sshd_pid());
    for pid in &frozen {
        sshmail_testbed::signal(*pid, "STOP");
    }
    for i in 2..5 {
        let m = corpus::mixed_message(i, 1);
        env.bed.deliver_by_dovecot("INBOX", &m).unwrap();
        env.originals.push(m);
    }
    daemon.wait_status("the frozen link noticed", Duration::from_secs(20), |s| s.accounts[0].folders[0].failures > 0);
    // Frozen for 20 s in all (the keepalive notices within about 8).
    std::thread::sleep(Duration::from_secs(12));
    for pid in &frozen {
        sshmail_testbed::signal(*pid, "CONT");
    }
    let took = wait_delivered(&env, 5, Duration::from_secs(90), &daemon);
    eprintln!("delivered {took:?} after sshd resumed");
    daemon.stop();
    assert_same(env.delivered(), env.expected());
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
}

#[test]
fn kill_9_of_the_daemon_in_delete_mode_under_arriving_mail_loses_and_duplicates_nothing() {
    let mut env = Env::new();
    let messages: Vec<Vec<u8>> = (0..40).map(|i| corpus::mixed_message(i, 4)).collect();
    env.originals.extend(messages.iter().cloned());
    let daemon = Daemon::start(&env, &env.imap_toml("mail", ""));
    let config = daemon.config.clone();
    let delivering = {
        let msgs = messages.clone();
        let bed = &env.bed;
        std::thread::scope(|scope| {
            let sender = scope.spawn(move || {
                for m in &msgs {
                    bed.deliver_by_dovecot("INBOX", m).unwrap();
                    std::thread::sleep(Duration::from_millis(25));
                }
            });
            // Kill it while mail arrives and is being fetched.
            let deadline = Instant::now() + Duration::from_secs(30);
            while read_dir_contents(&env.maildir().join("new")).len() < 10 {
                assert!(Instant::now() < deadline, "nothing arrived; log:\n{}", daemon.log.text());
                std::thread::sleep(Duration::from_millis(5));
            }
            daemon.signal("KILL");
            let (code, _) = daemon.wait_exit(Duration::from_secs(5));
            assert_eq!(code, None, "killed by the signal");
            let again = Daemon::spawn(env.home.path(), &config, &[]);
            sender.join().unwrap();
            again
        })
    };
    wait_delivered(&env, 40, Duration::from_secs(60), &delivering);
    delivering.wait_answering();
    delivering.wait_status("the server emptied", Duration::from_secs(30), |_| {
        env.bed.server_message_count().unwrap_or(1) == 0
    });
    delivering.stop();
    assert_same(env.delivered(), env.expected());
}

#[test]
fn an_idle_folder_on_imap4d_which_never_reports_is_still_polled_every_interval() {
    let mut env = Env::new();
    let imapd = env.bed.imap4d_command(false).unwrap();
    let daemon = Daemon::start(&env, &env.imap_toml("gnu", &format!("imapd = \"{imapd}\"\ninterval = 2")));
    daemon.wait_status("watching", Duration::from_secs(30), |s| s.accounts[0].folders[0].mode == Mode::Idle);
    env.add_messages([corpus::mixed_message(3, 1)]);
    // imap4d sends no EXISTS while idling: the pass every `interval` finds it.
    let took = wait_delivered(&env, 1, Duration::from_secs(10), &daemon);
    eprintln!("imap4d: delivered after {took:?}");
    let log = daemon.stop();
    assert!(log.contains("gnu: INBOX: 1 new"), "{log}");
    assert_same(env.delivered(), env.expected());
}

#[test]
fn under_systemd_it_notifies_readiness_and_its_log_lines_carry_syslog_priorities() {
    use std::os::unix::fs::MetadataExt as _;
    let env = Env::new();
    let config = env.home.path().join("config.toml");
    Daemon::write_config(&config, &env.config_toml(&env.imap_toml("mail", "")));
    let notify_path = env.home.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The journal's stream: stderr is a file whose device and inode
    // JOURNAL_STREAM names, as systemd sets it.
    let log_path = env.home.path().join("journal");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let meta = log_file.metadata().unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sshmail"))
        .args(["daemon", "-v", "--config"])
        .arg(&config)
        .env("HOME", env.home.path())
        .env("XDG_RUNTIME_DIR", env.home.path().join("run"))
        .env("NOTIFY_SOCKET", &notify_path)
        .env("JOURNAL_STREAM", &stream)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(std::process::Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 within 30 s");
    assert_eq!(&buf[..n], b"READY=1");
    sshmail_testbed::signal(child.id(), "TERM");
    let n = notify.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let status = common::wait_bounded_status(&mut child, Duration::from_secs(5));
    assert_eq!(status, Some(0));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.is_empty() && log.lines().all(|l| l.starts_with('<')), "every line has a priority:\n{log}");
    assert!(log.lines().any(|l| l.starts_with("<6>") && l.contains("started")), "{log}");
}

#[test]
fn a_refused_host_key_is_not_retried_until_a_reload_and_status_says_so() {
    let env = Env::new();
    let unknown = env.home.path().join("empty_known_hosts");
    std::fs::write(&unknown, "").unwrap();
    let good = env.imap_toml("mail", "");
    let bad = good.replace(&env.bed.known_hosts.display().to_string(), &unknown.display().to_string());
    let daemon = Daemon::start(&env, &bad);
    daemon.wait_status("the refusal on the board", Duration::from_secs(30), |s| {
        s.accounts[0].folders[0].last_error.as_ref().is_some_and(|e| e.retry == "never" && e.next_try.is_none())
    });
    let text = String::from_utf8_lossy(&daemon.ctl(&["status"]).stdout).into_owned();
    assert!(text.contains("not retried until the config changes") && text.contains("host key"), "{text}");
    // It stays refused: no new try by itself.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(daemon.status().accounts[0].folders[0].failures, 1, "a refused host key was retried");
    // Fixed in the config: the reload tries again, and it works.
    Daemon::write_config(&daemon.config, &env.config_toml(&good));
    assert_exit(&daemon.ctl(&["reload"]), 0);
    daemon.wait_status("connected after the fix", Duration::from_secs(30), |s| {
        let f = &s.accounts[0].folders[0];
        f.mode == Mode::Idle && f.connected && f.last_error.is_none()
    });
    daemon.stop();
}

#[test]
fn with_syslog_its_lines_go_to_the_syslog_socket_with_facility_mail() {
    let env = Env::new();
    let config = env.home.path().join("config.toml");
    Daemon::write_config(&config, &env.config_toml(&env.imap_toml("mail", "")));
    let socket_path = env.home.path().join("log");
    let syslog = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    syslog.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut cmd = Daemon::base_command(env.home.path());
    cmd.args(["daemon", "--syslog", "--config"]).arg(&config).env("SSHMAIL_SYSLOG_SOCKET", &socket_path);
    // Ended when dropped, should an assertion fail.
    let daemon = Daemon::spawn_command(env.home.path(), &config, cmd);
    let mut buf = [0u8; 4096];
    let n = syslog.recv(&mut buf).expect("a line on the syslog socket within 30 s");
    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
    // Facility mail (2), severity info (6): <22>.
    assert!(line.starts_with(&format!("<22>sshmail[{}]: ", daemon.child.id())), "{line}");
    assert!(line.contains("started"), "{line}");
    daemon.signal("TERM");
    let (code, stderr) = daemon.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert!(stderr.is_empty(), "nothing on stderr with --syslog: {stderr}");
}

/// A directory another user can write to, for a runtime directory made
/// before ours (as `$TMPDIR/sshmail-UID` is, without a login session).
fn shared_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::Builder::new().prefix("sshmail-shared.").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

/// Regression: without a runtime directory of our own, another user who
/// made the control directory first could pose as the daemon: get the mail
/// client's `tunnel` session, and make `sendmail --no-queue` exit 0 for a
/// message never relayed. Every client now checks the directory, the socket
/// and the peer before it says a word.
#[test]
fn regression_a_control_socket_another_user_made_is_refused_by_every_client_naming_the_path() {
    let env = Env::new();
    let shared = shared_dir();
    let control = shared.path().join("sshmail");
    // Another user's fake daemon: it answers every request "done".
    let fake = r#"
import os, socket, sys
d = sys.argv[1]
os.mkdir(d)
os.chmod(d, 0o777)
s = socket.socket(socket.AF_UNIX)
s.bind(os.path.join(d, 'control'))
os.chmod(os.path.join(d, 'control'), 0o777)
s.listen(16)
open(os.path.join(d, 'spoken'), 'w').close()
os.chmod(os.path.join(d, 'spoken'), 0o666)
print('ready', flush=True)
while True:
    c, _ = s.accept()
    c.recv(65536)
    open(os.path.join(d, 'spoken'), 'a').write('x')
    c.sendall(b'{"version":1,"ok":true,"sent":{"outcome":"done"}}\n')
    c.close()
"#;
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut impostor = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3", "-c", fake])
        .arg(&control)
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    use std::io::BufRead as _;
    let output = impostor.stdout.take().unwrap();
    let _impostor = Killed(impostor);
    std::io::BufReader::new(output).read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    // The default config file: its socket is plainly `control`, the name
    // the impostor took.
    let config = env.home.path().join(".config/sshmail/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    Daemon::write_config(
        &config,
        &env.config_toml(&format!("{}send.server = \"127.0.0.1:1\"\n", env.pop3_toml("isp", "fetch = false\n"))),
    );
    let run = |args: &[&str], stdin: &[u8]| {
        let mut c = Daemon::base_command(env.home.path());
        c.env("XDG_RUNTIME_DIR", shared.path()).args(args);
        c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write as _;
        let _ = child.stdin.take().unwrap().write_all(stdin);
        common::wait_bounded(child, Duration::from_secs(60))
    };
    for command in [&["status"][..], &["poll"], &["reload"], &["stop"]] {
        let out = run(command, b"");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(6), "{command:?}: {err}");
        assert!(err.contains(&control.display().to_string()) && err.contains("is owned by uid 65534"), "{err}");
    }
    let out = run(&["tunnel", "isp"], b"");
    assert_eq!(out.status.code(), Some(6), "tunnel: {}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["sendmail", "--no-queue", "-i", "you@example.org"], b"Subject: s\n\nbody\n");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(75), "not relayed, so not exit 0: {err}");
    assert!(err.contains("refusing the control socket"), "{err}");
    assert_eq!(std::fs::read_to_string(control.join("spoken")).unwrap(), "", "a client spoke to the impostor");
}

/// Regression: `--config` naming the default config file made a socket of
/// its own (`control-HASH`), so clients without `--config` never found that
/// daemon; and a client that finds no daemon for its config names the one
/// that runs.
#[test]
fn regression_the_default_config_named_with_config_is_the_default_daemon_and_a_client_names_another_running() {
    let env = Env::new();
    let accounts = env.pop3_toml("pop", "");
    let config_dir = env.home.path().join(".config/sshmail");
    std::fs::create_dir_all(&config_dir).unwrap();
    let default = config_dir.join("config.toml");
    Daemon::write_config(&default, &env.config_toml(&accounts));
    // Named through a symbolic link: the same file.
    std::os::unix::fs::symlink(&config_dir, env.home.path().join("cfg")).unwrap();
    let named = env.home.path().join("cfg/./config.toml");
    let daemon = Daemon::spawn(env.home.path(), &named, &[("XDG_CONFIG_HOME", "")]);
    daemon.log.wait_until("the daemon is up", |l| l.contains("started:"));
    let mut status = Daemon::base_command(env.home.path());
    status.arg("status").stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let out = common::wait_bounded(status.spawn().unwrap(), Duration::from_secs(30));
    assert_exit(&out, 0);
    // Another config's client is told which daemon runs.
    let other = env.home.path().join("other.toml");
    Daemon::write_config(&other, &env.config_toml(&accounts));
    let mut status = Daemon::base_command(env.home.path());
    status.arg("status").arg("--config").arg(&other);
    status.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let out = common::wait_bounded(status.spawn().unwrap(), Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("one runs for") && err.contains("config.toml"), "{err}");
    let mut stop = Daemon::base_command(env.home.path());
    stop.arg("stop").stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    assert_exit(&common::wait_bounded(stop.spawn().unwrap(), Duration::from_secs(30)), 0);
    let (code, _) = daemon_exit(daemon);
    assert_eq!(code, Some(0));
}
