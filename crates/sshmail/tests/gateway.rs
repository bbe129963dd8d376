//! The gateway against real peers: OpenSSH's sshd and Dovecot behind it,
//! real mail clients in front (Python's imaplib and poplib, fetchmail,
//! mbsync), through the daemon's owner-only endpoints and `sshmail tunnel`.

mod common;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, Env, Tmux, assert_exit, read_dir_contents, stderr, wait_bounded};
use sshmail_testbed::{MAIL_USER, corpus};

/// Python's imaplib/poplib client script.
fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mail_client.py")
}

/// Runs the client script (bounded).
fn client(args: &[&str]) -> Output {
    let child = Command::new("/usr/bin/python3")
        .arg(client_script())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_bounded(child, Duration::from_secs(300))
}

/// The messages in `dir`, sorted.
fn messages_in(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> =
        std::fs::read_dir(dir).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    v.sort();
    v
}

/// `m` with every bare LF made CRLF: a message as IMAP and POP3 send it.
fn crlf(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() + m.len() / 40);
    for (i, &b) in m.iter().enumerate() {
        if b == b'\n' && (i == 0 || m[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// The originals as the server sends them, sorted.
fn expected_on_the_wire(env: &Env) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = env.originals.iter().map(|m| crlf(m)).collect();
    v.sort();
    v
}

/// Checks two sorted message lists are equal, without printing them.
fn assert_same_messages(got: &[Vec<u8>], want: &[Vec<u8>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: how many messages");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        let head = |m: &[u8]| String::from_utf8_lossy(&m[..m.len().min(300)]).to_string();
        panic!("{what}: message {i} differs; got:\n{}\nwanted:\n{}", head(&got[i]), head(&want[i]));
    }
}

/// `m` without the `X-TUID:` header line mbsync adds to what it copies.
fn without_tuid(m: &[u8]) -> Vec<u8> {
    let end = m.windows(2).position(|w| w == b"\n\n").unwrap_or(m.len());
    match m[..end].windows(8).position(|w| w == b"\nX-TUID:") {
        Some(at) => {
            let line_end = at + 1 + m[at + 1..].iter().position(|&b| b == b'\n').unwrap_or(0);
            [&m[..at], &m[line_end..]].concat()
        }
        None => m.to_vec(),
    }
}

/// Account lines: served only, on a Unix socket in the runtime directory.
const SERVED_ON_A_SOCKET: &str = "fetch = false\nserve.imap = \"unix:$XDG_RUNTIME_DIR/sshmail/uni.imap\"\n";

/// Where [`SERVED_ON_A_SOCKET`] listens, as the client script names it.
fn socket_of(env: &Env) -> String {
    format!("unix:{}", env.home.path().join("run/sshmail/uni.imap").display())
}

/// A free loopback TCP port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// SSH sessions sshd has accepted so far.
fn ssh_logins(env: &Env) -> usize {
    std::fs::read_to_string(env.bed.sshd_log()).unwrap_or_default().matches("Accepted publickey").count()
}

/// `sshmail tunnel ARGS --config CONF` as a shell command line, with the
/// daemon's environment.
fn tunnel_command(home: &Path, config: &Path, args: &str) -> String {
    format!(
        "env -u SSH_AUTH_SOCK HOME={} XDG_RUNTIME_DIR={} {} tunnel {args} --config {}",
        home.display(),
        home.join("run").display(),
        env!("CARGO_BIN_EXE_sshmail"),
        config.display()
    )
}

#[test]
fn imaplib_and_poplib_through_owner_only_endpoints_and_the_tunnel_get_every_message_byte_exact() {
    let mut env = Env::new();
    env.add_messages((0..30).map(|i| corpus::mixed_message(i, 10)));
    let pop3_port = free_port();
    let accounts = format!(
        "{}{}",
        env.imap_toml("uni", SERVED_ON_A_SOCKET),
        env.pop3_toml("isp", &format!("fetch = false\nserve.pop3 = \"tcp:127.0.0.1:{pop3_port}\"\n"))
    );
    let daemon = Daemon::start(&env, &accounts);
    let socket = env.home.path().join("run/sshmail/uni.imap");
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "the socket is the owner's only");
    let dir_mode = std::fs::metadata(socket.parent().unwrap()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "in a private directory");

    let expected = expected_on_the_wire(&env);
    let out_dir = env.home.path().join("via-socket");
    let out = client(&["imap-fetch", &format!("unix:{}", socket.display()), out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "imaplib on the socket: {}\nlog:\n{}", stderr(&out), daemon.log.text());
    assert_same_messages(&messages_in(&out_dir), &expected, "imaplib through the Unix socket");

    let out_dir = env.home.path().join("via-tunnel");
    let tunnel = format!("cmd:{}", tunnel_command(env.home.path(), &daemon.config, "uni"));
    let out = client(&["imap-fetch", &tunnel, out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "imaplib through sshmail tunnel: {}\nlog:\n{}", stderr(&out), daemon.log.text());
    assert_same_messages(&messages_in(&out_dir), &expected, "imaplib through the tunnel");

    let out_dir = env.home.path().join("via-pop3");
    let password = env.home.path().join("password");
    let out = client(&[
        "pop3-fetch",
        &format!("tcp:127.0.0.1:{pop3_port}"),
        MAIL_USER,
        password.to_str().unwrap(),
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "poplib on the TCP port: {}\nlog:\n{}", stderr(&out), daemon.log.text());
    assert_same_messages(&messages_in(&out_dir), &expected, "poplib through the loopback TCP port");

    // POP3 through the tunnel, its stdin/stdout a socket pair (as mbsync
    // gives); IMAP through one too.
    let out_dir = env.home.path().join("via-pop3-tunnel");
    let tunnel = format!("pair:{}", tunnel_command(env.home.path(), &daemon.config, "isp --protocol pop3"));
    let out = client(&["pop3-fetch", &tunnel, MAIL_USER, password.to_str().unwrap(), out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "poplib through the tunnel: {}\nlog:\n{}", stderr(&out), daemon.log.text());
    assert_same_messages(&messages_in(&out_dir), &expected, "poplib through the tunnel");
    let out_dir = env.home.path().join("via-socketpair");
    let tunnel = format!("pair:{}", tunnel_command(env.home.path(), &daemon.config, "uni"));
    let out = client(&["imap-fetch", &tunnel, out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "imaplib on a socket pair: {}", stderr(&out));
    assert_same_messages(&messages_in(&out_dir), &expected, "imaplib through the tunnel on a socket pair");
    let status = daemon.status();
    assert_eq!(status.tunnels.total, 3, "{status:#?}");
    let served: Vec<(&str, &str, u64)> =
        status.endpoints.iter().map(|e| (e.account.as_str(), e.service.as_str(), e.clients.total)).collect();
    assert_eq!(served, vec![("isp", "pop3", 1), ("uni", "imap", 1)]);

    // fetch = false: the daemon fetched nothing.
    assert!(read_dir_contents(&env.maildir().join("new")).is_empty(), "a fetch = false account was fetched");
    assert_eq!(env.bed.server_message_count().unwrap(), 30);
    let log = daemon.stop();
    assert!(log.contains("a tunnel opened on"), "the tunnel went through the daemon:\n{log}");
}

#[test]
fn another_uid_is_refused_on_the_unix_socket_and_the_tcp_port_and_the_refusal_is_logged() {
    let env = Env::new();
    let port = free_port();
    // A socket in a directory anyone may enter, so that only sshmail's own
    // checks stand between another user and it.
    let open_dir = env.home.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    for dir in [env.home.path(), &open_dir] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let socket = open_dir.join("uni.imap");
    let accounts = env.imap_toml(
        "uni",
        &format!("fetch = false\nserve.imap = \"unix:{}\"\nserve.pop3 = \"tcp:127.0.0.1:{port}\"\n", socket.display()),
    );
    let daemon = Daemon::start(&env, &accounts);
    let as_nobody = |where_: &str| {
        let child = Command::new("runuser")
            .args(["-u", "nobody", "--", "/usr/bin/python3"])
            .arg(client_script())
            .args(["probe", where_])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_bounded(child, Duration::from_secs(30));
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // The socket's mode (0600) keeps nobody out already.
    let said = as_nobody(&format!("unix:{}", socket.display()));
    assert!(said.contains("connect failed") && said.contains("Permission denied"), "{said}");
    // With the mode opened, SO_PEERCRED still refuses.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let said = as_nobody(&format!("unix:{}", socket.display()));
    assert_eq!(said.trim(), "got b''", "another uid got something from the socket");
    // The TCP port checks the peer's uid in /proc/net/tcp.
    let said = as_nobody(&format!("tcp:127.0.0.1:{port}"));
    assert_eq!(said.trim(), "got b''", "another uid got something from the TCP port");
    let nobody = String::from_utf8(Command::new("id").args(["-u", "nobody"]).output().unwrap().stdout).unwrap();
    let nobody = nobody.trim();
    daemon
        .log
        .wait_until("both refusals logged", |log| log.matches(&format!("uid {nobody} is someone else")).count() >= 2);
    let log = daemon.log.text();
    assert!(log.contains(&format!("unix:{}: refused a connection from uid {nobody}", socket.display())), "{log}");
    assert!(log.contains(&format!("tcp:127.0.0.1:{port}: refused a connection from 127.0.0.1:")), "{log}");
    // The owner is served.
    let out = client(&["probe", &format!("unix:{}", socket.display())]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("* PREAUTH"), "{}", String::from_utf8_lossy(&out.stdout));
    daemon.stop();
}

#[test]
fn ten_clients_at_once_share_one_ssh_connection_which_closes_when_idle_and_reopens_for_the_next() {
    let mut env = Env::new();
    env.add_messages((0..3).map(|i| corpus::small_message(i, 100)));
    let accounts = format!("[daemon]\nssh_idle_close = 2\n{}", env.imap_toml("uni", SERVED_ON_A_SOCKET));
    let daemon = Daemon::start(&env, &accounts);
    let socket = socket_of(&env);
    let before = ssh_logins(&env);
    let out = client(&["imap-many", &socket, "10", "1"]);
    assert!(out.status.success(), "ten clients: {}\nlog:\n{}", stderr(&out), daemon.log.text());
    assert_eq!(ssh_logins(&env) - before, 1, "ten clients at once, one SSH login; log:\n{}", daemon.log.text());
    // Idle for longer than ssh_idle_close: the connection is closed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !env.bed.sshd_session_pids().is_empty() {
        assert!(Instant::now() < deadline, "the idle SSH connection was not closed; log:\n{}", daemon.log.text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = client(&["imap-many", &socket, "1", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ssh_logins(&env) - before, 2, "the next client opened a new connection");
    daemon.wait_status("status counts the endpoint's clients", Duration::from_secs(10), |s| {
        s.endpoints.len() == 1 && s.endpoints[0].clients.total == 11 && s.endpoints[0].clients.now == 0
    });
    let text = String::from_utf8(daemon.ctl(&["status"]).stdout).unwrap();
    assert!(text.contains("serving uni imap on unix:") && text.contains("0 clients now, 11 since start"), "{text}");
    daemon.stop();
}

/// Regression: russh waits in the connection's one loop when a channel's
/// queue is full, so before the per-channel backlog a stalled client held
/// every other channel of the connection until it read again (here: 17 s,
/// the stall, instead of well under a second).
#[test]
fn a_client_that_stops_reading_mid_fetch_of_200_mb_does_not_stall_another_and_memory_stays_bounded() {
    let mut env = Env::new();
    let big = corpus::small_message(0, 200 << 20);
    env.add_messages([big.clone(), corpus::small_message(1, 2000)]);
    let accounts = env.imap_toml("uni", SERVED_ON_A_SOCKET);
    let daemon = Daemon::start(&env, &accounts);
    let socket = socket_of(&env);
    let digest = env.home.path().join("stalled.sha256");
    let mut stalled = Command::new("/usr/bin/python3")
        .arg(client_script())
        .args(["imap-stall", &socket, "15", digest.to_str().unwrap()])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the big FETCH has begun and its client has stopped reading …
    let marker = PathBuf::from(format!("{}.stalled", digest.display()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the stalling client never began its FETCH");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(2));
    // … another client's whole session goes through on the same connection.
    let started = Instant::now();
    let out_dir = env.home.path().join("other");
    let out = client(&["imap-fetch", &socket, out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "the other client took {took:?} while one stalled");
    assert_eq!(messages_in(&out_dir).len(), 2);
    let rss = common::peak_rss_kib(daemon.child.id()).unwrap();
    assert!(rss < 64 * 1024, "the daemon's RSS grew to {rss} KiB with 200 MB unread");
    // The stalled client resumes and gets the whole message, intact.
    let code = common::wait_bounded_status(&mut stalled, Duration::from_secs(120));
    assert_eq!(code, Some(0));
    use sha2::Digest as _;
    let want: String = sha2::Sha256::digest(crlf(&big)).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(std::fs::read_to_string(&digest).unwrap(), want, "the stalled client's message was damaged");
    daemon.stop();
}

#[test]
fn fetchmail_polls_the_pop3_endpoint_and_receives_every_message_exactly_once() {
    let mut env = Env::new();
    env.add_messages((0..20).map(|i| corpus::mixed_message(i, 7)));
    let port = free_port();
    let accounts = env.pop3_toml("isp", &format!("fetch = false\nserve.pop3 = \"tcp:127.0.0.1:{port}\"\n"));
    let daemon = Daemon::start(&env, &accounts);
    let local = env.home.path().join("fetchmail-maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(local.join(sub)).unwrap();
    }
    let rc = env.home.path().join("fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "poll 127.0.0.1 service {port} protocol pop3 auth password\n  \
             user \"{MAIL_USER}\" password \"{}\" is root here sslproto ''\n  \
             mda \"/usr/bin/procmail -m DEFAULT={}/ /dev/null\"\n",
            sshmail_testbed::MAIL_PASSWORD,
            local.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let fetchmail = |home: &Path| {
        let child = Command::new("fetchmail")
            .args(["-f"])
            .arg(&rc)
            .args(["--nosyslog", "--nodetach", "--pidfile"])
            .arg(home.join("fetchmail.pid"))
            .env("HOME", home)
            .env("FETCHMAILHOME", home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("fetchmail must be installed (scripts/install-deps)");
        wait_bounded(child, Duration::from_secs(120))
    };
    let out = fetchmail(env.home.path());
    assert_exit(&out, 0);
    // fetchmail adds its Received: line on top (compared without trace
    // fields on both sides).
    let mut got: Vec<Vec<u8>> = read_dir_contents(&local.join("new")).iter().map(|m| common::strip_trace(m)).collect();
    got.sort();
    let mut want: Vec<Vec<u8>> = env.originals.iter().map(|m| common::strip_trace(m)).collect();
    want.sort();
    assert_same_messages(&got, &want, "fetchmail's copies");
    assert_eq!(env.bed.server_message_count().unwrap(), 0, "fetchmail deleted them after delivery");
    // A second poll finds nothing (fetchmail exits 1: no mail).
    let out = fetchmail(env.home.path());
    assert_exit(&out, 1);
    assert_eq!(read_dir_contents(&local.join("new")).len(), 20);
    daemon.stop();
}

/// An mbsync config syncing the far INBOX into `local` through `tunnel`.
fn mbsyncrc(path: &Path, tunnel: &str, local: &Path) {
    std::fs::write(
        path,
        format!(
            "IMAPAccount far\nTunnel \"{tunnel}\"\n\nIMAPStore far\nAccount far\n\n\
             MaildirStore near\nPath {0}/\nInbox {0}/INBOX\n\n\
             Channel sync\nFar :far:\nNear :near:\nPatterns INBOX\nCreate Near\nSync Pull\nSyncState *\n",
            local.display()
        ),
    )
    .unwrap();
}

fn mbsync(rc: &Path) -> Output {
    let child = Command::new("mbsync")
        .arg("-c")
        .arg(rc)
        .arg("-a")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mbsync must be installed (isync; scripts/install-deps)");
    wait_bounded(child, Duration::from_secs(120))
}

/// Every message in an mbsync Maildir (new/ and cur/), mbsync's header
/// taken off, sorted.
fn synced(local: &Path) -> Vec<Vec<u8>> {
    let mut v = read_dir_contents(&local.join("INBOX/new"));
    v.extend(read_dir_contents(&local.join("INBOX/cur")));
    let mut v: Vec<Vec<u8>> = v.iter().map(|m| without_tuid(m)).collect();
    v.sort();
    v
}

#[test]
fn mbsync_tunnel_syncs_a_mailbox_alone_and_through_a_running_daemon() {
    let mut env = Env::new();
    env.add_messages((0..25).map(|i| corpus::mixed_message(i, 9)));
    let config = env.home.path().join("config.toml");
    Daemon::write_config(&config, &env.config_toml(&env.imap_toml("uni", "fetch = false\n")));
    let local = env.home.path().join("mbsync");
    std::fs::create_dir(&local).unwrap();
    let rc = env.home.path().join("mbsyncrc");
    mbsyncrc(&rc, &tunnel_command(env.home.path(), &config, "uni"), &local);
    let mut want = env.originals.clone();
    want.sort();

    // No daemon: the tunnel connects by itself.
    let out = mbsync(&rc);
    assert!(out.status.success(), "mbsync alone: {}", stderr(&out));
    assert_same_messages(&synced(&local), &want, "mbsync alone");

    // With a daemon: through its connection.
    let daemon = Daemon::spawn(env.home.path(), &config, &[]);
    daemon.wait_answering();
    let new = corpus::mixed_message(100, 1);
    env.add_messages([new]);
    let mut want = env.originals.clone();
    want.sort();
    let out = mbsync(&rc);
    assert!(out.status.success(), "mbsync with the daemon: {}\nlog:\n{}", stderr(&out), daemon.log.text());
    assert_same_messages(&synced(&local), &want, "mbsync through the daemon");
    let log = daemon.stop();
    assert!(log.contains("uni: a tunnel opened on"), "mbsync's tunnel did not use the daemon:\n{log}");
}

#[test]
fn a_noisy_shell_before_the_greeting_is_a_clear_error_from_the_tunnel_not_a_hang() {
    let env = Env::new();
    let config = env.home.path().join("config.toml");
    let noisy = "imapd = \"echo Welcome to the shell host; exec /usr/lib/dovecot/imap\"\nfetch = false\n";
    Daemon::write_config(&config, &env.config_toml(&env.imap_toml("uni", noisy)));
    let started = Instant::now();
    let child = Command::new("sh")
        .arg("-c")
        .arg(tunnel_command(env.home.path(), &config, "uni"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, Duration::from_secs(60));
    assert!(started.elapsed() < Duration::from_secs(20), "it took {:?}", started.elapsed());
    assert_exit(&out, 4);
    let err = stderr(&out);
    assert!(err.contains("`Welcome to the shell host`") && err.contains("shell startup file"), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("* BYE [UNAVAILABLE] sshmail: "), "the client is told too: {stdout}");
}

#[test]
fn the_login_shim_greets_ok_and_accepts_login_and_authenticate_plain_then_passes_bytes_unaltered() {
    let mut env = Env::new();
    env.add_messages((0..12).map(|i| corpus::mixed_message(i, 5)));
    let accounts = env.imap_toml("uni", &format!("{SERVED_ON_A_SOCKET}serve.imap_accept_login = true\n"));
    let daemon = Daemon::start(&env, &accounts);
    let socket = socket_of(&env);
    let out = client(&["probe", &socket]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("* OK [CAPABILITY") && !said.contains("PREAUTH"), "{said}");
    let expected = expected_on_the_wire(&env);
    for how in ["--login", "--authenticate"] {
        let out_dir = env.home.path().join(format!("shim{how}"));
        let out = client(&["imap-fetch", &socket, out_dir.to_str().unwrap(), how]);
        assert!(out.status.success(), "imaplib {how} through the shim: {}\nlog:\n{}", stderr(&out), daemon.log.text());
        assert_same_messages(&messages_in(&out_dir), &expected, how);
    }
    let out = client(&["imap-literal-login", &socket]);
    assert!(out.status.success(), "LOGIN with literals: {}\nlog:\n{}", stderr(&out), daemon.log.text());
    daemon.stop();
}

#[test]
fn fifty_clients_at_once_are_all_served() {
    let mut env = Env::new();
    env.add_messages((0..2).map(|i| corpus::small_message(i, 100)));
    let accounts = env.imap_toml("uni", SERVED_ON_A_SOCKET);
    let daemon = Daemon::start(&env, &accounts);
    let socket = socket_of(&env);
    let out = client(&["imap-many", &socket, "50", "1"]);
    assert!(out.status.success(), "fifty clients: {}\nlog:\n{}", stderr(&out), daemon.log.text());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "50");
    daemon.stop();
}

#[test]
fn a_privileged_port_without_the_right_to_bind_it_fails_with_advice_not_a_bare_eacces() {
    // The premise: port 143 is privileged on this machine.
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    let start: u32 = start.trim().parse().unwrap();
    assert!(start > 143, "net.ipv4.ip_unprivileged_port_start is {start} here: port 143 is not privileged");
    let env = Env::new();
    // A user without the right: nobody, with a home and config of its own.
    let home = tempfile::Builder::new().prefix("sshmail-nobody.").tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = home.path().join("config.toml");
    std::fs::write(&config, env.imap_toml("uni", "fetch = false\nserve.imap = \"tcp:127.0.0.1:143\"\n")).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let child = Command::new("runuser")
        .args(["-u", "nobody", "--", "env"])
        .arg(format!("HOME={}", home.path().display()))
        .arg(format!("XDG_RUNTIME_DIR={}", home.path().join("run").display()))
        .arg(env!("CARGO_BIN_EXE_sshmail"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, Duration::from_secs(30));
    assert_exit(&out, 5);
    let err = stderr(&out);
    assert!(err.contains("port 143 is privileged") && err.contains("cap_net_bind_service"), "{err}");
    assert!(err.contains("ip_unprivileged_port_start"), "{err}");
}

/// Waits (bounded) until `tmux`'s screen lists "message 0" to "message
/// N-1"; `who` and the daemon's log explain a failure.
fn wait_listing(tmux: &Tmux, who: &str, n: usize, daemon: &Daemon) {
    let what = format!("{who} listing the INBOX; log:\n{}", daemon.log.text());
    tmux.wait_until(&what, Duration::from_secs(60), |screen| (0..n).all(|i| screen.contains(&format!("message {i}"))));
}

#[test]
fn alpine_with_ssh_path_running_sshmail_tunnel_opens_the_remote_inbox_and_lists_every_message() {
    let mut env = Env::new();
    env.add_messages((0..5).map(|i| corpus::small_message(i, 500)));
    let daemon = Daemon::start(&env, &env.imap_toml("uni", "fetch = false\n"));
    let home = env.home.path();
    // Alpine runs `ssh-path HOST -l USER exec /etc/rimapd`; the wrapper
    // notes what it was given and runs the tunnel instead.
    let wrapper = home.join("sshmail-alpine");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nexec {}\n",
            home.join("wrapper.args").display(),
            tunnel_command(home, &daemon.config, "uni")
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pinerc = home.join("pinerc");
    std::fs::write(
        &pinerc,
        format!(
            "personal-name=Test\nuser-domain=example.net\ninbox-path={{imaphost/user=me}}INBOX\n\
             ssh-path={}\nssh-open-timeout=15\nrsh-open-timeout=0\n",
            wrapper.display()
        ),
    )
    .unwrap();
    let tmux = alpine_lists_five_messages(home, &pinerc, &daemon);
    let args = std::fs::read_to_string(home.join("wrapper.args")).unwrap();
    assert!(args.contains("imaphost -l me exec /etc/rimapd"), "Alpine ran: {args}");
    alpine_quits(&tmux, daemon);
}

/// The README's recipe, no wrapper: `ssh-path` is sshmail itself and
/// `ssh-command=%s tunnel ACCOUNT` (Alpine fills the first `%s` with
/// ssh-path and has no use for the rest).
#[test]
fn alpine_with_ssh_command_running_sshmail_tunnel_needs_no_wrapper() {
    let mut env = Env::new();
    env.add_messages((0..5).map(|i| corpus::small_message(i, 500)));
    let daemon = Daemon::start(&env, &env.imap_toml("uni", "fetch = false\n"));
    let home = env.home.path();
    let pinerc = home.join("pinerc");
    std::fs::write(
        &pinerc,
        format!(
            "personal-name=Test\nuser-domain=example.net\ninbox-path={{imaphost/user=me}}INBOX\n\
             ssh-path={}\nssh-command=%s tunnel uni --config {}\nssh-open-timeout=15\nrsh-open-timeout=0\n",
            env!("CARGO_BIN_EXE_sshmail"),
            daemon.config.display()
        ),
    )
    .unwrap();
    let tmux = alpine_lists_five_messages(home, &pinerc, &daemon);
    alpine_quits(&tmux, daemon);
}

/// Starts Alpine (HOME and the runtime directory of `home`) on `pinerc` in
/// tmux and waits until its index lists the five messages.
fn alpine_lists_five_messages(home: &Path, pinerc: &Path, daemon: &Daemon) -> Tmux {
    let tmux = Tmux { socket: home.join("tmux.sock") };
    let alpine = format!(
        "env HOME={} XDG_RUNTIME_DIR={} alpine -p {} -i",
        home.display(),
        home.join("run").display(),
        pinerc.display()
    );
    tmux.start(&alpine);
    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let screen = tmux.screen();
        if screen.contains("Exit this greeting") {
            // Alpine's first start shows its greeting once.
            tmux.run(&["send-keys", "-t", "mail", "E"]);
        } else if screen.contains("MESSAGE INDEX") && (0..5).all(|i| screen.contains(&format!("message {i}"))) {
            break screen;
        }
        assert!(
            Instant::now() < deadline,
            "Alpine never listed the INBOX; screen:\n{screen}\nlog:\n{}",
            daemon.log.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(listed.contains("Message 1 of 5"), "{listed}");
    tmux
}

/// Quits Alpine; its session went through the daemon.
fn alpine_quits(tmux: &Tmux, daemon: Daemon) {
    tmux.run(&["send-keys", "-t", "mail", "q"]);
    tmux.run(&["send-keys", "-t", "mail", "y"]);
    let log = daemon.stop();
    assert!(log.contains("uni: a tunnel opened on"), "Alpine's session did not use the daemon:\n{log}");
}

#[test]
fn mutt_lists_the_inbox_through_a_tcp_endpoint_and_through_its_tunnel_setting() {
    let mut env = Env::new();
    env.add_messages((0..4).map(|i| corpus::small_message(i, 400)));
    let port = free_port();
    let accounts = env.imap_toml("uni", &format!("fetch = false\nserve.imap = \"tcp:127.0.0.1:{port}\"\n"));
    let daemon = Daemon::start(&env, &accounts);
    let home = env.home.path();
    let common = "set imap_user=me\nset ssl_starttls=no\nset ssl_force_tls=no\nset header_cache=\"\"\n\
                  set mail_check=60\nset sort=date-sent\nset help=no\n";
    let cases = [
        ("tcp", format!("{common}set folder=\"imap://127.0.0.1:{port}/\"\nset spoolfile=\"+INBOX\"\n")),
        (
            "tunnel",
            format!(
                "{common}set tunnel=\"{}\"\nset folder=\"imap://imaphost/\"\nset spoolfile=\"+INBOX\"\n",
                tunnel_command(home, &daemon.config, "uni")
            ),
        ),
    ];
    for (name, rc) in cases {
        let muttrc = home.join(format!("muttrc-{name}"));
        std::fs::write(&muttrc, rc).unwrap();
        let tmux = Tmux { socket: home.join(format!("tmux-{name}.sock")) };
        let mutt = format!("env HOME={} TERM=xterm mutt -n -F {}", home.display(), muttrc.display());
        tmux.start(&mutt);
        wait_listing(&tmux, &format!("mutt ({name})"), 4, &daemon);
        tmux.run(&["send-keys", "-t", "mail", "q"]);
    }
    let log = daemon.stop();
    assert!(log.contains("uni imap: a client (127.0.0.1:"), "mutt did not come through the TCP endpoint:\n{log}");
    assert!(log.contains("uni: a tunnel opened on"), "mutt's tunnel did not use the daemon:\n{log}");
}

#[test]
fn sshmail_serve_serves_only_the_named_accounts_endpoints_fetches_nothing_and_answers_the_tunnel() {
    let mut env = Env::new();
    env.add_messages((0..6).map(|i| corpus::small_message(i, 300)));
    let run = env.home.path().join("run/sshmail");
    let accounts = format!(
        "{}{}",
        env.imap_toml("uni", "serve.imap = \"unix:$XDG_RUNTIME_DIR/sshmail/uni.imap\"\n"),
        env.imap_toml("other", "serve.imap = \"unix:$XDG_RUNTIME_DIR/sshmail/other.imap\"\n")
    );
    let config = env.home.path().join("config.toml");
    Daemon::write_config(&config, &env.config_toml(&accounts));
    let mut cmd = Daemon::base_command(env.home.path());
    cmd.args(["serve", "uni", "--config"]).arg(&config);
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut log = common::StderrLog::of(&mut child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run.join("uni.imap").exists() {
        assert!(Instant::now() < deadline, "sshmail serve never listened; log:\n{}", log.text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!run.join("other.imap").exists(), "an account not named was served");
    let out_dir = env.home.path().join("via-serve");
    let out = client(&["imap-fetch", &format!("unix:{}", run.join("uni.imap").display()), out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}\nlog:\n{}", stderr(&out), log.text());
    assert_same_messages(&messages_in(&out_dir), &expected_on_the_wire(&env), "imaplib through sshmail serve");
    let out_dir = env.home.path().join("via-serve-tunnel");
    let tunnel = format!("pair:{}", tunnel_command(env.home.path(), &config, "uni"));
    let out = client(&["imap-fetch", &tunnel, out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Nothing fetched: a fetching account is only served under `serve`.
    assert!(read_dir_contents(&env.maildir().join("new")).is_empty());
    assert_eq!(env.bed.server_message_count().unwrap(), 6);
    let mut stop = Daemon::base_command(env.home.path());
    let out = wait_bounded(
        stop.args(["stop", "--config"]).arg(&config).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(),
        Duration::from_secs(30),
    );
    assert_exit(&out, 0);
    assert_eq!(common::wait_bounded_status(&mut child, Duration::from_secs(10)), Some(0));
    let log = log.join();
    assert!(log.contains("uni: a tunnel opened on"), "{log}");
    assert!(!run.join("uni.imap").exists(), "the socket was left behind");
}

#[test]
fn serve_smtp_forwards_to_port_25_on_the_server_host_and_a_real_smtp_server_gets_the_message_intact() {
    let env = Env::new();
    // The SSH host's SMTP server: aiosmtpd on port 25 of this machine.
    let sink = common::SmtpServer::start_on(&env.home.path().join("smtp"), None, 25);
    let port = free_port();
    let accounts = env.pop3_toml("isp", &format!("fetch = false\nserve.smtp = \"tcp:127.0.0.1:{port}\"\n"));
    let daemon = Daemon::start(&env, &accounts);
    let message = env.home.path().join("message.eml");
    let content = "From: me@example.net\r\nTo: you@example.org\r\nSubject: through the gateway\r\n\r\n\
                   caf\u{e9} line\r\n.leading dot\r\n";
    std::fs::write(&message, content).unwrap();
    let out = client(&[
        "smtp-send",
        &format!("tcp:127.0.0.1:{port}"),
        "me@example.net",
        "you@example.org",
        message.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "smtplib through serve.smtp: {}\nlog:\n{}", stderr(&out), daemon.log.text());
    let got = sink.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "me@example.net\nyou@example.org\n");
    assert_eq!(got[0].1, content.replace("\r\n", "\n").into_bytes(), "the message was altered");
    daemon.stop();
}

/// Regression: serve.smtp forwarded to port 25 of the SSH host whatever the
/// account's send.server said, so a relay on 587 that wants STARTTLS and
/// AUTH (what most providers require) could not be served to a client.
#[test]
fn regression_serve_smtp_forwards_to_the_accounts_relay_and_the_clients_starttls_and_auth_pass_through() {
    let env = Env::with(sshmail_testbed::Options { tls: true, ..sshmail_testbed::Options::default() });
    let sink = common::SmtpServer::start_tls_auth(&env, "me:s3cret");
    assert_ne!(sink.port, 25);
    let port = free_port();
    let accounts = env.pop3_toml(
        "isp",
        &format!("fetch = false\nserve.smtp = \"tcp:127.0.0.1:{port}\"\nsend.server = \"127.0.0.1:{}\"\n", sink.port),
    );
    let daemon = Daemon::start(&env, &accounts);
    let message = env.home.path().join("message.eml");
    let content = "From: me@example.net\r\nTo: you@example.org\r\nSubject: through the relay\r\n\r\nbody\r\n";
    std::fs::write(&message, content).unwrap();
    let out = client(&[
        "smtp-send",
        &format!("tcp:127.0.0.1:{port}"),
        "me@example.net",
        "you@example.org",
        message.to_str().unwrap(),
        env.bed.ca_cert.to_str().unwrap(),
        "me",
        "s3cret",
    ]);
    assert!(
        out.status.success(),
        "STARTTLS and AUTH through serve.smtp: {}\nlog:\n{}",
        stderr(&out),
        daemon.log.text()
    );
    let got = sink.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, content.replace("\r\n", "\n").into_bytes());
    let meta = std::fs::read_to_string(sink.dir.join("000001.meta")).unwrap();
    assert_eq!(meta, "tls=yes auth=me\n");
    daemon.stop();
}

/// The remote imapd processes running now under this test's sshd (one per
/// open exec channel), by their command name: their PIDs. Other tests'
/// sshds, with imapds of the same user, do not count.
fn remote_imapd_pids(env: &Env) -> Vec<u32> {
    let Some(sshd) = env.bed.sshd_pid() else { return Vec::new() };
    sshmail_testbed::descendants(sshd)
        .into_iter()
        .filter(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status.lines().find_map(|l| l.strip_prefix("Name:")).map(str::trim) == Some("imap")
        })
        .collect()
}

fn remote_imapds(env: &Env) -> usize {
    remote_imapd_pids(env).len()
}

/// Regression: a client killed with server output unread (mid-FETCH) left
/// its session, its channel and the remote imapd open for good ("clients
/// now" only grew).
#[test]
fn regression_twenty_clients_killed_mid_fetch_leave_no_session_channel_or_remote_imapd_behind() {
    let env = Env::new();
    let socket = socket_of(&env);
    kill_clients_mid_fetch(env, SERVED_ON_A_SOCKET, &socket);
}

/// The same over a loopback TCP endpoint (a killed client's socket sends
/// RST or FIN, not a Unix socket's hang-up).
#[test]
fn twenty_clients_killed_mid_fetch_on_a_tcp_endpoint_leave_nothing_behind() {
    let port = free_port();
    let serve = format!("fetch = false\nserve.imap = \"tcp:127.0.0.1:{port}\"\n");
    kill_clients_mid_fetch(Env::new(), &serve, &format!("tcp:127.0.0.1:{port}"));
}

/// Twenty clients of the endpoint `serve` (reached at `at`) begin a FETCH
/// of 30 MB, stop reading, and are killed: no session, channel or remote
/// imapd is left.
fn kill_clients_mid_fetch(mut env: Env, serve: &str, at: &str) {
    env.add_messages([corpus::small_message(0, 30 << 20)]);
    let accounts = env.imap_toml("uni", serve);
    let daemon = Daemon::start(&env, &accounts);
    let socket = at.to_string();
    let before = remote_imapds(&env);
    let mut clients = Vec::new();
    for i in 0..20 {
        let out = env.home.path().join(format!("stalled-{i}"));
        let child = Command::new("/usr/bin/python3")
            .arg(client_script())
            .args(["imap-stall", &socket, "600", out.to_str().unwrap()])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        clients.push((child, PathBuf::from(format!("{}.stalled", out.display()))));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for (_, marker) in &clients {
        while !marker.exists() {
            assert!(Instant::now() < deadline, "a client never began its FETCH");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    daemon.wait_status("20 clients in session", Duration::from_secs(30), |s| {
        s.endpoints.iter().map(|e| e.clients.now).sum::<u64>() == 20
    });
    assert!(remote_imapds(&env) >= before + 20, "each client has its imapd");
    for (mut child, _) in clients {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    daemon.wait_status("no client in session after the kills", Duration::from_secs(30), |s| {
        s.endpoints.iter().map(|e| e.clients.now).sum::<u64>() == 0
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while remote_imapds(&env) > before {
        assert!(Instant::now() < deadline, "{} remote imapds left behind", remote_imapds(&env) - before);
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.stop();
}

/// Regression: a login-shim session stayed "in session" for good once the
/// server side was gone while the client stayed connected, and its log
/// said 0 bytes to the server whenever the server closed first.
#[test]
fn regression_a_shim_session_ends_with_its_server_and_counts_what_went_up() {
    let env = Env::new();
    let accounts = env.imap_toml("uni", &format!("{SERVED_ON_A_SOCKET}serve.imap_accept_login = true\n"));
    let daemon = Daemon::start(&env, &accounts);
    let socket = env.home.path().join("run/sshmail/uni.imap");
    let before = remote_imapd_pids(&env);
    // A client that logs in through the shim, says a few commands, then
    // stays connected and silent.
    let script = r#"
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rb")
f.readline()
for line in [b"a CAPABILITY\r\n", b"b LOGIN me pw\r\n", b"c NOOP\r\n"]:
    s.sendall(line)
    while not f.readline().startswith(line[:2]):
        pass
print("in", flush=True)
time.sleep(600)
"#;
    let mut client = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(&socket)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead as _;
    std::io::BufReader::new(client.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "in");
    daemon.wait_status("one client in session", Duration::from_secs(10), |s| s.endpoints[0].clients.now == 1);
    // The server side goes away (its imapd ends); the client stays.
    let imapds: Vec<u32> = remote_imapd_pids(&env).into_iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(imapds.len(), 1, "the session's imapd");
    assert!(Command::new("kill").arg(imapds[0].to_string()).status().unwrap().success());
    daemon
        .wait_status("the session ended with its server", Duration::from_secs(10), |s| s.endpoints[0].clients.now == 0);
    daemon.log.wait_until("the bytes sent up are counted", |l| {
        l.lines().any(|l| l.contains("is done:") && !l.contains(" 0 bytes to the server"))
    });
    let _ = client.kill();
    let _ = client.wait();
    daemon.stop();
}

/// aerc always logs in: through a TCP endpoint with
/// `serve.imap_accept_login = true` it lists the remote INBOX (the README's
/// recipe).
#[test]
fn aerc_logs_in_through_the_accept_login_endpoint_and_lists_the_inbox() {
    let mut env = Env::new();
    env.add_messages((0..5).map(|i| corpus::small_message(i, 500)));
    let port = free_port();
    let daemon = Daemon::start(
        &env,
        &env.imap_toml(
            "uni",
            &format!("fetch = false\nserve.imap = \"tcp:127.0.0.1:{port}\"\nserve.imap_accept_login = true\n"),
        ),
    );
    let home = env.home.path();
    let conf = home.join(".config/aerc");
    std::fs::create_dir_all(&conf).unwrap();
    let accounts = conf.join("accounts.conf");
    std::fs::write(
        &accounts,
        format!(
            "[uni]\nsource = imap+insecure://me:anything@127.0.0.1:{port}\noutgoing = /bin/true\n\
             default = INBOX\nfrom = Me <me@example.net>\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&accounts, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tmux = Tmux { socket: home.join("tmux.sock") };
    let aerc = format!("env HOME={} TMPDIR={} TERM=xterm-256color aerc", home.display(), home.display());
    tmux.start(&aerc);
    wait_listing(&tmux, "aerc", 5, &daemon);
    tmux.run(&["send-keys", "-t", "mail", ":q", "Enter"]);
    let log = daemon.stop();
    assert!(log.contains("uni imap: a client"), "aerc did not come through the endpoint:\n{log}");
}

/// Thunderbird (headless, a fresh profile set up as the README's recipe
/// says) takes the endpoint's PREAUTH greeting, asks for no password, and
/// downloads the INBOX's messages into its own store.
#[test]
fn thunderbird_takes_the_preauth_tcp_endpoint_and_downloads_the_inbox() {
    let mut env = Env::new();
    env.add_messages((0..5).map(|i| corpus::small_message(i, 500)));
    let port = free_port();
    let daemon =
        Daemon::start(&env, &env.imap_toml("uni", &format!("fetch = false\nserve.imap = \"tcp:127.0.0.1:{port}\"\n")));
    let home = env.home.path();
    let profile = home.join("thunderbird");
    std::fs::create_dir_all(&profile).unwrap();
    std::fs::write(profile.join("prefs.js"), thunderbird_prefs(port)).unwrap();
    let tb = ProcessGroup(
        Command::new("thunderbird")
            .args(["--headless", "--no-remote", "--profile"])
            .arg(&profile)
            .env("HOME", home)
            .env("TMPDIR", home)
            .env_remove("DISPLAY")
            .env("MOZ_LOG", "IMAP:5,sync")
            .env("MOZ_LOG_FILE", home.join("tb.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("thunderbird must be installed (scripts/install-deps)"),
    );
    let store = profile.join("ImapMail/127.0.0.1/INBOX");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = std::fs::read(&store).unwrap_or_default();
        let text = String::from_utf8_lossy(&got).replace("\r\n", "\n");
        if (0..5).all(|i| text.contains(&format!("Subject: message {i}\n"))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Thunderbird never downloaded the INBOX:\n{}\nThunderbird's IMAP log:\n{}",
            daemon.log.text(),
            std::fs::read_to_string(home.join("tb.log.moz_log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(tb);
    let log = daemon.stop();
    assert!(log.contains("uni imap: a client"), "Thunderbird did not come through the endpoint:\n{log}");
}

/// A child started in a process group of its own, the whole group killed
/// on drop (Thunderbird leaves content processes, and ignores a TERM
/// while it syncs).
struct ProcessGroup(std::process::Child);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0.id())]).status();
        let _ = self.0.wait();
    }
}

/// A Thunderbird profile's prefs.js: one IMAP account at 127.0.0.1:PORT,
/// plain text, checked at start-up and offline copies of every message.
fn thunderbird_prefs(port: u16) -> String {
    let prefs: &[(&str, String)] = &[
        ("mail.accountmanager.accounts", "\"account1,account2\"".into()),
        ("mail.accountmanager.defaultaccount", "\"account1\"".into()),
        ("mail.accountmanager.localfoldersserver", "\"server2\"".into()),
        ("mail.account.account1.server", "\"server1\"".into()),
        ("mail.account.account1.identities", "\"id1\"".into()),
        ("mail.account.account2.server", "\"server2\"".into()),
        ("mail.identity.id1.fullName", "\"Me\"".into()),
        ("mail.identity.id1.useremail", "\"me@example.net\"".into()),
        ("mail.server.server1.type", "\"imap\"".into()),
        ("mail.server.server1.hostname", "\"127.0.0.1\"".into()),
        ("mail.server.server1.port", port.to_string()),
        ("mail.server.server1.userName", "\"me\"".into()),
        ("mail.server.server1.socketType", "0".into()),
        ("mail.server.server1.authMethod", "3".into()),
        ("mail.server.server1.login_at_startup", "true".into()),
        ("mail.server.server1.check_new_mail", "true".into()),
        ("mail.server.server1.check_time", "1".into()),
        ("mail.server.server1.offline_download", "true".into()),
        ("mail.server.server2.type", "\"none\"".into()),
        ("mail.server.server2.hostname", "\"Local Folders\"".into()),
        ("mail.server.server2.userName", "\"nobody\"".into()),
        ("mail.shell.checkDefaultClient", "false".into()),
        ("mail.provider.suppress_dialog_on_startup", "true".into()),
        ("mailnews.start_page.enabled", "false".into()),
        ("app.update.auto", "false".into()),
        ("datareporting.policy.dataSubmissionEnabled", "false".into()),
        ("toolkit.telemetry.enabled", "false".into()),
    ];
    prefs.iter().map(|(k, v)| format!("user_pref(\"{k}\", {v});\n")).collect()
}

/// A stop with fifty gateway clients in session and twenty control
/// connections open (ten that never send a request, ten `sshmail tunnel`
/// sessions) ends within the stop's deadline, having ended every one of
/// them itself: each client sees its end, and no remote imapd is left.
#[test]
fn a_stop_with_fifty_clients_and_twenty_control_connections_ends_them_all_in_time_leaving_nothing_behind() {
    use std::io::{BufRead, Read as _};
    use std::os::unix::net::UnixStream;
    let mut env = Env::new();
    env.add_messages((0..2).map(|i| corpus::small_message(i, 100)));
    let daemon = Daemon::start(&env, &env.imap_toml("uni", SERVED_ON_A_SOCKET));
    let endpoint = env.home.path().join("run/sshmail/uni.imap");
    let greeted = |r: &mut dyn BufRead, who: &str| {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("* PREAUTH"), "{who}: {line:?}\nlog:\n{}", daemon.log.text());
    };
    let mut clients = Vec::new();
    for i in 0..50 {
        let s = UnixStream::connect(&endpoint).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        greeted(&mut std::io::BufReader::new(&s), &format!("client {i}"));
        clients.push(s);
    }
    let control = std::fs::read_dir(env.home.path().join("run/sshmail"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("control"))
        .expect("the control socket");
    let idle: Vec<UnixStream> = (0..10).map(|_| UnixStream::connect(&control).unwrap()).collect();
    let mut tunnels = Vec::new();
    for i in 0..10 {
        let mut t = daemon.command(&["tunnel", "uni"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut out = std::io::BufReader::new(t.stdout.take().unwrap());
        greeted(&mut out, &format!("tunnel {i}"));
        tunnels.push((t, out));
    }
    daemon.wait_status("fifty clients and ten tunnels in session", Duration::from_secs(30), |s| {
        s.endpoints[0].clients.now == 50 && s.tunnels.now == 10
    });
    assert_eq!(remote_imapds(&env), 60, "an imapd per session");

    // SIGTERM; the daemon must exit 0 within 5 s.
    let log = daemon.stop();
    assert!(
        log.contains("ended 50 client sessions and 20 control connections\n"),
        "the stop did not end every session itself:\n{log}"
    );
    for (i, mut c) in clients.into_iter().chain(idle).enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        assert!(c.read_to_end(&mut rest).is_ok(), "connection {i} was not closed");
    }
    for (mut t, mut out) in tunnels {
        let mut rest = Vec::new();
        let _ = out.read_to_end(&mut rest);
        assert_eq!(common::wait_bounded_status(&mut t, Duration::from_secs(10)), Some(0), "a tunnel's exit");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while remote_imapds(&env) > 0 {
        assert!(Instant::now() < deadline, "{} remote imapds left behind", remote_imapds(&env));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Regression: through a STARTTLS account's endpoint a client was greeted
/// by a line sshmail made up (`* OK [sshmail] … ready`); the server's own
/// greeting, read before STARTTLS, was thrown away. It is kept now, without
/// the capabilities said before TLS (they do not hold after it), and the
/// session goes on with the server's own answers.
#[test]
fn regression_a_starttls_accounts_endpoint_greets_with_the_servers_own_greeting() {
    use std::io::{BufRead as _, Write as _};
    let env = Env::with(sshmail_testbed::Options { tls: true, ..sshmail_testbed::Options::default() });
    let port = free_port();
    let account = format!(
        "[account.tls]\nprotocol = \"imap\"\nvia = \"starttls\"\nserver = \"localhost:{}\"\ntls_ca_file = \"{}\"\n\
         user = \"{MAIL_USER}\"\nfetch = false\nserve.imap = \"tcp:127.0.0.1:{port}\"\n",
        env.bed.imap_port,
        env.bed.ca_cert.display()
    );
    let daemon = Daemon::start(&env, &account);
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reader = std::io::BufReader::new(&stream);
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("* OK ") && !greeting.contains("[sshmail]"), "{greeting:?}\n{}", daemon.log.text());
    assert!(greeting.contains("ready"), "the server's own text: {greeting:?}");
    assert!(!greeting.contains("CAPABILITY"), "capabilities said before TLS: {greeting:?}");
    (&stream).write_all(b"a1 CAPABILITY\r\n").unwrap();
    let mut caps = String::new();
    reader.read_line(&mut caps).unwrap();
    assert!(caps.starts_with("* CAPABILITY") && !caps.contains("LOGINDISABLED"), "after TLS: {caps:?}");
    drop(reader);
    drop(stream);
    daemon.stop();
}

/// `[daemon] max_clients` bounds the sessions: past it a client waits to
/// be accepted (its greeting comes when another leaves), and is not lost.
#[test]
fn max_clients_holds_the_next_client_until_one_leaves() {
    use std::io::BufRead as _;
    use std::os::unix::net::UnixStream;
    let env = Env::new();
    let config = format!("[daemon]\nmax_clients = 2\n\n{}", env.imap_toml("uni", SERVED_ON_A_SOCKET));
    let daemon = Daemon::start(&env, &config);
    let endpoint = env.home.path().join("run/sshmail/uni.imap");
    let greet = |s: &UnixStream, within: Duration| {
        s.set_read_timeout(Some(within)).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(s).read_line(&mut line).map(|_| line)
    };
    let first = UnixStream::connect(&endpoint).unwrap();
    let second = UnixStream::connect(&endpoint).unwrap();
    for s in [&first, &second] {
        assert!(greet(s, Duration::from_secs(20)).unwrap().starts_with("* PREAUTH"));
    }
    let third = UnixStream::connect(&endpoint).unwrap();
    assert!(greet(&third, Duration::from_secs(2)).is_err(), "a third client was served past max_clients = 2");
    drop(first);
    let line = greet(&third, Duration::from_secs(20)).expect("the third client is served once one leaves");
    assert!(line.starts_with("* PREAUTH"), "{line:?}");
    drop((second, third));
    daemon.stop();
}
