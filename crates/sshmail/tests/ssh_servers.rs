//! SSH servers besides OpenSSH, in front of the testbed's Dovecot: Dropbear
//! (each host key type; a password login) and tinysshd (one session
//! channel per connection, no TCP forwarding). fetch over an exec'd imapd
//! and over a forward, and doctor, as against OpenSSH.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{Daemon, Env, assert_exit, stderr, wait_bounded};
use sshmail_testbed::corpus;
use sshmail_testbed::other_sshd::OtherSshd;

fn env_with_mail() -> Env {
    let mut env = Env::new();
    env.add_messages((0..3).map(|i| corpus::mixed_message(i, 0)));
    env
}

/// A config with two accounts on `server`: `imap` (Dovecot's imap exec'd
/// there) and `pop3` (a forward to the testbed's POP3), each `extra` added.
fn config_for(env: &Env, server: &OtherSshd, extra: &str) -> std::path::PathBuf {
    let known = env.home.path().join(format!("known_hosts_{}", server.port));
    std::fs::write(&known, format!("{}\n", server.known_hosts_line)).unwrap();
    let dest = format!("{}@127.0.0.1:{}", env.bed.account.name, server.port);
    let ours = |table: String| {
        table
            .replace(&env.bed.ssh_destination(), &dest)
            .replace(&env.bed.known_hosts.display().to_string(), &known.display().to_string())
    };
    let imapd = format!("imapd = [\"/usr/lib/dovecot/imap\", \"-c\", \"{}\"]\n", env.bed.dovecot_config.display());
    let accounts =
        format!("{}{}", ours(env.imap_toml("imap", &format!("{imapd}{extra}"))), ours(env.pop3_toml("pop3", extra)));
    let path = env.home.path().join(format!("config_{}.toml", server.port));
    Daemon::write_config(&path, &env.config_toml(&accounts));
    path
}

fn sshmail(env: &Env, args: &[&str], config: &Path) -> Output {
    let mut c = Daemon::base_command(env.home.path());
    c.arg(args[0]).arg("--config").arg(config).args(&args[1..]);
    let child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_bounded(child, Duration::from_secs(120))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Dropbear with each host key type: IMAP through an exec'd imapd, POP3
/// through a forward, and doctor with every hop passing.
#[test]
fn dropbear_with_each_host_key_type_serves_imap_over_exec_pop3_over_a_forward_and_doctor_passes() {
    let env = env_with_mail();
    for kind in ["ed25519", "rsa", "ecdsa"] {
        let server = OtherSshd::dropbear(&env.bed, kind).unwrap();
        let config = config_for(&env, &server, "keep = true\n");
        let imap_dir = env.home.path().join(format!("imap-{kind}"));
        let out = sshmail(&env, &["fetch", "imap", "--deliver", &format!("maildir:{}", imap_dir.display())], &config);
        assert_exit(&out, 0);
        assert_eq!(common::read_dir_contents(&imap_dir.join("new")).len(), 3, "{kind}: {}", stderr(&out));
        let out = sshmail(&env, &["fetch", "pop3", "--all"], &config);
        assert_exit(&out, 0);
        let out = sshmail(&env, &["doctor", "imap", "pop3"], &config);
        assert_eq!(out.status.code(), Some(0), "{kind}: {}", stdout(&out));
        assert!(!stdout(&out).contains("FAIL"), "{kind}: {}", stdout(&out));
    }
}

/// Dropbear with a password login: no key offered, `ssh_password_command`
/// answers.
#[test]
fn dropbear_takes_a_password_from_ssh_password_command() {
    let env = env_with_mail();
    let server = OtherSshd::dropbear(&env.bed, "ed25519").unwrap();
    let password = format!("pw-{}", std::process::id());
    let _set = PasswordSet::new(&env.bed.account.name, &password);
    let config = config_for(&env, &server, &format!("keep = true\nssh_password_command = \"echo {password}\"\n"));
    // No key at all: the identity lines go.
    let text = std::fs::read_to_string(&config).unwrap();
    let without_key: String = text.lines().filter(|l| !l.starts_with("identity")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&config, without_key).unwrap();
    let out = sshmail(&env, &["fetch", "pop3"], &config);
    assert_exit(&out, 0);
    let out = sshmail(&env, &["doctor", "pop3"], &config);
    assert!(stdout(&out).contains("with password"), "{}", stdout(&out));
}

/// The test login's password, set for one test and locked again after.
struct PasswordSet(String);

impl PasswordSet {
    fn new(login: &str, password: &str) -> PasswordSet {
        let hash = std::process::Command::new("openssl").args(["passwd", "-6", password]).output().unwrap();
        assert!(hash.status.success());
        let hash = String::from_utf8(hash.stdout).unwrap();
        let set = std::process::Command::new("usermod").args(["-p", hash.trim(), login]).status().unwrap();
        assert!(set.success(), "usermod -p");
        PasswordSet(login.to_string())
    }
}

impl Drop for PasswordSet {
    fn drop(&mut self) {
        // As the testbed leaves it: no password, key logins only.
        let _ = std::process::Command::new("usermod").args(["-p", "*", &self.0]).status();
    }
}

/// Regression: on tinysshd, which gives one session channel per
/// connection, doctor's imapd check was refused after its channel check
/// and reported that the server refuses commands, while fetch worked.
/// Now each check that finds the connection spent opens another: doctor
/// passes. POP3 through a forward is refused (tinysshd has none) with
/// advice that names it.
#[test]
fn regression_on_tinysshd_doctor_passes_and_a_forward_is_refused_with_advice() {
    let env = env_with_mail();
    let server = OtherSshd::tinysshd(&env.bed).unwrap();
    let config = config_for(&env, &server, "keep = true\n");
    let out = sshmail(&env, &["fetch", "imap"], &config);
    assert_exit(&out, 0);
    assert_eq!(env.delivered().len(), 3, "{}", stderr(&out));
    let out = sshmail(&env, &["doctor", "imap"], &config);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("PASS imapd"), "{}", stdout(&out));

    let out = sshmail(&env, &["fetch", "pop3"], &config);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("AllowTcpForwarding"), "{}", stderr(&out));
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

/// A first step of riding the user's OpenSSH master: channels through its
/// ControlPath socket in the mux protocol's proxy mode. An exec'd imapd
/// greets PREAUTH and logs out with exit status 0, and a direct-tcpip
/// channel reaches POP3, with no SSH login of their own at sshd; a socket
/// that is not a master's is refused with the reason.
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

/// The daemon rides the master too: it fetches over IDLE and answers
/// `sshmail tunnel` through it, and sshd sees no login but the master's.
#[test]
fn the_daemon_fetches_and_serves_the_tunnel_through_the_openssh_master() {
    let env = env_with_mail();
    let logins = || std::fs::read_to_string(env.bed.sshd_log()).unwrap().matches("Accepted publickey").count();
    let socket = env.home.path().join("d.sock");
    let _master = start_master(&env, &socket);
    let imapd = format!("imapd = [\"/usr/lib/dovecot/imap\", \"-c\", \"{}\"]\n", env.bed.dovecot_config.display());
    let ride = format!("ssh_control_path = \"{}\"\nkeep = true\n{imapd}", socket.display());
    let daemon = Daemon::start(&env, &env.imap_toml("uni", &ride));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while env.delivered().len() < 3 {
        assert!(std::time::Instant::now() < deadline, "the daemon fetched nothing; log:\n{}", daemon.log.text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut tunnel = Daemon::base_command(env.home.path())
        .args(["tunnel", "uni", "--config"])
        .arg(&daemon.config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        tunnel.stdin.take().unwrap().write_all(b"a LOGOUT\r\n").unwrap();
    }
    let out = wait_bounded(tunnel, Duration::from_secs(30));
    let said = stdout(&out);
    assert!(said.starts_with("* PREAUTH") && said.contains("a OK"), "{said}\n{}", stderr(&out));
    assert_eq!(logins(), 1, "the daemon or the tunnel logged in on its own; log:\n{}", daemon.log.text());
}
