//! Riding the user's OpenSSH master (`ssh -M -S SOCKET -fN`, as the user
//! keeps one for a two-factor host): channels through its socket in the
//! mux protocol's proxy mode — exec, direct-tcpip, the daemon's fetches and
//! IDLE, `tunnel`, `sendmail` — with no login of their own at sshd; what
//! is not the user's master refused with the reason; a master that goes
//! away said in `status`, and ridden again when a new one is up.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{Daemon, Env, assert_exit, stderr, stdout};
use sshmail_testbed::corpus;

fn env_with_mail() -> Env {
    let mut env = Env::new();
    env.add_messages((0..3).map(|i| corpus::mixed_message(i, 0)));
    env
}

fn sshmail(env: &Env, args: &[&str], config: &Path) -> Output {
    common::sshmail_with_config(env.home.path(), args, config)
}

/// Ends the OpenSSH master on `socket` when dropped (`ssh -O exit`).
struct Master {
    socket: std::path::PathBuf,
    dest: String,
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ssh")
            .args(["-F", "/dev/null", "-S"])
            .arg(&self.socket)
            .args(["-O", "exit"])
            .args(self.dest.split(' '))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Starts an OpenSSH master (`ssh -M -S SOCKET -fN`) to the testbed's
/// sshd; `socket` may hold `%C` and other ControlPath tokens. Returns once
/// it has logged in.
fn start_master(env: &Env, socket: &Path) -> Master {
    let dest = env.bed.ssh_destination();
    let (user_host, port) = dest.rsplit_once(':').unwrap();
    let started = std::process::Command::new("ssh")
        .args(["-F", "/dev/null", "-M", "-S"])
        .arg(socket)
        .args(["-fN", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o"])
        .arg(format!("UserKnownHostsFile={}", env.bed.known_hosts.display()))
        .arg("-i")
        .arg(&env.bed.client_key)
        .args(["-p", port, user_host])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(started.status.success(), "ssh -M: {}", String::from_utf8_lossy(&started.stderr));
    Master { socket: socket.to_path_buf(), dest: format!("-p{port} {user_host}") }
}

/// Channels through the master's ControlPath socket in the mux protocol's
/// proxy mode: an exec'd imapd greets PREAUTH and logs out with exit
/// status 0, and a direct-tcpip channel reaches POP3, with no SSH login of
/// their own at sshd. What is not the user's master is refused with the
/// reason: a socket that speaks something else, none at all, a stale
/// socket file nothing listens on, and the master's own socket once it
/// belongs to another user.
#[test]
fn channels_ride_an_openssh_master_in_proxy_mode_without_a_login_of_their_own() {
    let env = env_with_mail();
    let socket = env.home.path().join("master.sock");
    let _master = start_master(&env, &socket);
    let logins = || std::fs::read_to_string(env.bed.sshd_log()).unwrap().matches("Accepted publickey").count();
    assert_eq!(logins(), 1);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
        let timeout = Duration::from_secs(20);
        let imapd = format!("/usr/lib/dovecot/imap -c {}", env.bed.dovecot_config.display());
        let (stream, status) = sshmail::ssh::mux::exec(&socket, &imapd, timeout).await.unwrap();
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("* PREAUTH"), "{line}");
        stream.get_mut().write_all(b"a LOGOUT\r\n").await.unwrap();
        let mut rest = String::new();
        while stream.read_line(&mut line).await.unwrap() > 0 {
            rest.push_str(&line);
            line.clear();
        }
        assert!(rest.contains("a OK"), "{rest}");
        assert_eq!(status.wait_exit(Duration::from_secs(5)).await, Some(0));

        let stream = sshmail::ssh::mux::forward(&socket, "127.0.0.1", env.bed.pop3_port, timeout).await.unwrap();
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("+OK"), "{line}");

        // Not a master: a socket of ours that speaks something else.
        let fake = env.home.path().join("fake.sock");
        let listener = tokio::net::UnixListener::bind(&fake).unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"\0\0\0\x04HTTP").await;
                let mut sink = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut sink).await;
            }
        });
        let e = sshmail::ssh::mux::forward(&fake, "127.0.0.1", 1, timeout).await.unwrap_err().to_string();
        assert!(e.contains("is not an OpenSSH master's socket"), "{e}");
        let e = sshmail::ssh::mux::forward(&env.home.path().join("none.sock"), "127.0.0.1", 1, timeout)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("no OpenSSH master at"), "{e}");
        // A stale socket file: nothing listens there.
        let stale = env.home.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let e = sshmail::ssh::mux::forward(&stale, "127.0.0.1", 1, timeout).await.unwrap_err().to_string();
        assert!(e.contains("no OpenSSH master answers at") && e.contains("stale"), "{e}");
        // The master's socket, another user's: not a word is sent to it.
        let mine = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&socket).unwrap());
        std::os::unix::fs::chown(&socket, Some(65534), None).expect("chown (the tests run as root)");
        let e =
            sshmail::ssh::mux::forward(&socket, "127.0.0.1", env.bed.pop3_port, timeout).await.unwrap_err().to_string();
        assert!(e.contains("refusing the OpenSSH master socket") && e.contains("owned by another user"), "{e}");
        std::os::unix::fs::chown(&socket, Some(mine), None).unwrap();
    });
    assert_eq!(logins(), 1, "a channel logged in on its own");
}

/// Accounts ride an OpenSSH master: named by `ssh_control_path`, or by
/// ~/.ssh/config's `ControlPath` with `%C` (computed as OpenSSH does: the
/// master's own socket is found). POP3 through a forward and IMAP through
/// an exec'd imapd fetch with no login of their own at sshd. With the
/// master gone, `ssh_control_fallback = false` fails naming it; the
/// ssh_config way connects on its own.
#[test]
fn fetch_rides_the_users_openssh_master_named_by_the_account_or_by_control_path() {
    let env = env_with_mail();
    let logins = || std::fs::read_to_string(env.bed.sshd_log()).unwrap().matches("Accepted publickey").count();
    let socket = env.home.path().join("m.sock");
    let master = start_master(&env, &socket);
    let imapd = format!("imapd = [\"/usr/lib/dovecot/imap\", \"-c\", \"{}\"]\n", env.bed.dovecot_config.display());
    let ride = format!("ssh_control_path = \"{}\"\nkeep = true\n", socket.display());
    let accounts = format!("{}{}", env.pop3_toml("pop3", &ride), env.imap_toml("imap", &format!("{ride}{imapd}")));
    let config = env.home.path().join("master.toml");
    Daemon::write_config(&config, &env.config_toml(&accounts));
    let out = sshmail(&env, &["fetch", "pop3"], &config);
    assert_exit(&out, 0);
    assert_eq!(env.delivered().len(), 3, "{}", stderr(&out));
    let imap_dir = env.home.path().join("imap-maildir");
    let out = sshmail(&env, &["fetch", "imap", "--deliver", &format!("maildir:{}", imap_dir.display())], &config);
    assert_exit(&out, 0);
    assert_eq!(common::read_dir_contents(&imap_dir.join("new")).len(), 3, "{}", stderr(&out));
    let out = sshmail(&env, &["doctor", "pop3"], &config);
    assert!(stdout(&out).contains("via OpenSSH master"), "{}", stdout(&out));
    assert_eq!(logins(), 1, "a fetch logged in on its own");

    drop(master);
    let out = sshmail(&env, &["fetch", "pop3", "--all"], &config);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("no OpenSSH master answers at"), "{}", stderr(&out));
    assert_eq!(logins(), 1);

    // ~/.ssh/config's ControlPath, with %C.
    let dir = env.home.path().join("cm");
    std::fs::create_dir_all(&dir).unwrap();
    let _master = start_master(&env, &dir.join("%C"));
    assert_eq!(logins(), 2);
    std::fs::create_dir_all(env.home.path().join(".ssh")).unwrap();
    std::fs::write(
        env.home.path().join(".ssh/config"),
        format!("Host 127.0.0.1\n  ControlPath {}/%C\n", dir.display()),
    )
    .unwrap();
    let accounts = env.pop3_toml("pop3", "keep = true\n");
    Daemon::write_config(&config, &env.config_toml(&accounts));
    let out = sshmail(&env, &["fetch", "pop3", "--all"], &config);
    assert_exit(&out, 0);
    assert_eq!(
        logins(),
        2,
        "%C named another socket than OpenSSH's: {:?}",
        std::fs::read_dir(&dir).unwrap().collect::<Vec<_>>()
    );
}

/// The pid of the OpenSSH master at `socket` (`ssh -O check`).
fn master_pid(socket: &Path) -> u32 {
    let out = std::process::Command::new("ssh")
        .args(["-F", "/dev/null", "-S"])
        .arg(socket)
        .args(["-O", "check", "x"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    let pid = said.split("pid=").nth(1).and_then(|r| r.split(')').next()).and_then(|p| p.parse().ok());
    pid.unwrap_or_else(|| panic!("ssh -O check: {said}"))
}

/// The daemon rides the master for every channel kind: it fetches over
/// IDLE (renewed every second, a safety-net pass every two), answers
/// `sshmail tunnel`, relays for `sendmail` and polls, and sshd sees no
/// login but the master's; `status` names the master and its pid. The
/// master ended: `status` and the log say so, nothing is lost and nothing
/// hangs; a new master up, the fetches go on through it.
#[test]
fn the_daemon_rides_the_openssh_master_for_every_channel_and_waits_for_a_new_one_when_it_goes() {
    let mut env = env_with_mail();
    let log = env.bed.sshd_log();
    let logins = || std::fs::read_to_string(&log).unwrap().matches("Accepted publickey").count();
    let socket = env.home.path().join("d.sock");
    let master = start_master(&env, &socket);
    let pid = master_pid(&socket);
    let sink = common::SmtpServer::start(&env.home.path().join("smtp"), None);
    let imapd = format!("imapd = [\"/usr/lib/dovecot/imap\", \"-c\", \"{}\"]\n", env.bed.dovecot_config.display());
    let ride = format!(
        "ssh_control_path = \"{}\"\nkeep = true\n{imapd}send.server = \"127.0.0.1:{}\"\n\
         send.from = [\"me@example.net\"]\n",
        socket.display(),
        sink.port
    );
    let daemon =
        Daemon::start(&env, &format!("[daemon]\nidle_renew = 1\ninterval = 2\n{}", env.imap_toml("uni", &ride)));
    let limit = Duration::from_secs(60);
    let delivered = |env: &Env, n: usize| {
        let deadline = std::time::Instant::now() + limit;
        while env.delivered().len() < n {
            assert!(std::time::Instant::now() < deadline, "the daemon fetched nothing; log:\n{}", daemon.log.text());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    delivered(&env, 3);
    let master_link = |s: &sshmail::control::status::Status| {
        s.connections.iter().find(|c| c.name.contains("via OpenSSH master")).cloned()
    };
    let link = master_link(&daemon.status()).expect("status names the master");
    assert_eq!(link.state, "up");
    assert!(link.name.contains(&format!("{} (pid {pid})", socket.display())), "{link:?} {pid}");

    // tunnel
    let out = common::run_with_input(daemon.command(&["tunnel", "uni"]), b"a LOGOUT\r\n", Duration::from_secs(30));
    let said = stdout(&out);
    assert!(said.starts_with("* PREAUTH") && said.contains("a OK"), "{said}\n{}", stderr(&out));

    // sendmail, relayed by the daemon
    let mut send = Daemon::base_command(env.home.path());
    send.args(["sendmail", "--config"]).arg(&daemon.config).args(["-i", "you@example.org"]);
    let out = common::run_with_input(send, b"Subject: through the master\n\nbody\n", Duration::from_secs(60));
    assert_exit(&out, 0);
    assert_eq!(sink.received().len(), 1, "{}", daemon.log.text());
    assert!(daemon.log.text().contains("relayed for sendmail: Done"), "{}", daemon.log.text());

    // IDLE renewed and safety-net passes, then a poll.
    daemon.wait_status("passes over the folder", limit, |s| s.accounts[0].folders[0].passes >= 4);
    assert_exit(&daemon.ctl(&["poll"]), 1);
    assert_eq!(logins(), 1, "the daemon, the tunnel or sendmail logged in on its own; log:\n{}", daemon.log.text());

    // The master goes away: said, nothing lost, no hang.
    drop(master);
    env.add_messages([corpus::mixed_message(5, 0)]);
    daemon.wait_status("status saying the master is gone", limit, |s| {
        master_link(s).is_some_and(|l| l.state == "down" && l.last_error.is_some_and(|e| e.contains("waiting for one")))
            && s.accounts[0].folders[0]
                .last_error
                .as_ref()
                .is_some_and(|e| e.text.contains("no OpenSSH master answers"))
    });
    assert!(daemon.log.text().contains(&format!("the OpenSSH master {} went away", socket.display())));
    assert_eq!(env.delivered().len(), 3);
    assert_eq!(logins(), 1, "the daemon connected on its own without ssh_control_fallback");

    // A new master: ridden, and the message fetched through it.
    let _master = start_master(&env, &socket);
    let pid = master_pid(&socket);
    delivered(&env, 4);
    let link = master_link(&daemon.status()).unwrap();
    assert!(link.state == "up" && link.name.contains(&format!("(pid {pid})")), "{link:?}");
    assert_eq!(logins(), 2, "only the new master logged in");
    daemon.stop();
}
