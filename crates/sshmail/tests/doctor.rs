//! `sshmail doctor` against the real sshd and Dovecot: healthy accounts
//! pass every hop; each failure the suite can make (unknown, changed and
//! wrong keys, forwarding refused, no imapd, a noisy shell, a wrong mail
//! password, an unwritable Maildir, sshd down) is a FAIL at its own hop,
//! with nothing failing before it, and the exit code a fetch would have.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{Daemon, Env};
use sshmail_testbed::{MAIL_PASSWORD, Options};

/// One hop line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hop {
    status: String,
    hop: String,
    what: String,
}

struct Doctor {
    code: i32,
    stdout: String,
    /// The account's section.
    hops: Vec<Hop>,
}

impl Doctor {
    fn first_failure(&self) -> Option<&Hop> {
        self.hops.iter().find(|h| h.status == "FAIL")
    }

    /// `hop` is the first FAIL, and every hop before it passed (or warned).
    fn fails_at(&self, hop: &str) -> &Hop {
        let first = self.first_failure().unwrap_or_else(|| panic!("no FAIL; wanted {hop}:\n{}", self.stdout));
        assert_eq!(first.hop, hop, "the first FAIL is not at {hop}:\n{}", self.stdout);
        let before: Vec<&Hop> = self.hops.iter().take_while(|h| h.hop != hop).collect();
        assert!(!before.is_empty() || hop == "config", "nothing checked before {hop}:\n{}", self.stdout);
        first
    }

    fn passed(&self, hop: &str) -> bool {
        self.hops.iter().any(|h| h.hop == hop && h.status == "PASS")
    }
}

fn doctor(env: &Env, config: &Path, account: &str) -> Doctor {
    let out = Daemon::base_command(env.home.path())
        .args(["doctor", "--config"])
        .arg(config)
        .arg(account)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut hops = Vec::new();
    let mut in_account = false;
    for line in stdout.lines() {
        if !line.starts_with(' ') {
            in_account = line == format!("account {account}") || line.starts_with("config ");
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(status), Some(hop)) = (words.next(), words.next()) else { continue };
        if in_account && matches!(status, "PASS" | "WARN" | "FAIL") {
            hops.push(Hop { status: status.into(), hop: hop.into(), what: words.collect::<Vec<_>>().join(" ") });
        }
    }
    assert!(!stdout.contains(MAIL_PASSWORD), "doctor printed the mail password:\n{stdout}");
    Doctor { code: out.status.code().unwrap_or(-1), stdout, hops }
}

/// Writes `accounts` as the env's config and returns its path.
fn config(env: &Env, name: &str, accounts: &str) -> std::path::PathBuf {
    let path = env.home.path().join(name);
    Daemon::write_config(&path, &env.config_toml(accounts));
    path
}

#[test]
fn every_failure_is_named_at_its_hop_and_nothing_fails_before_it() {
    let mut env = Env::new();
    let kh_unknown = env.home.path().join("empty_known_hosts");
    std::fs::write(&kh_unknown, "").unwrap();
    let kh_changed = env.changed_known_hosts("changed_known_hosts");
    // A key the server does not authorize.
    let other = env.home.path().join("other_key");
    sshmail_testbed::generate_key(&other).unwrap();
    let wrong_password = env.home.path().join("wrong_password");
    std::fs::write(&wrong_password, "not the password").unwrap();
    let blocker = env.home.path().join("a_file");
    std::fs::write(&blocker, "").unwrap();

    let imap = env.imap_toml("imap", "");
    let pop3 = env.pop3_toml("pop3", "");
    let replace = |table: &str, name: &str, from: &str, to: &str| {
        assert!(table.contains(from), "{from} not in {table}");
        table
            .replacen("[account.imap]", &format!("[account.{name}]"), 1)
            .replacen("[account.pop3]", &format!("[account.{name}]"), 1)
            .replace(from, to)
    };
    let accounts = [
        imap.clone(),
        pop3.clone(),
        replace(&pop3, "unknown", &env.bed.known_hosts.display().to_string(), &kh_unknown.display().to_string()),
        replace(&pop3, "changed", &env.bed.known_hosts.display().to_string(), &kh_changed.display().to_string()),
        replace(&pop3, "wrongkey", &env.bed.client_key.display().to_string(), &other.display().to_string()),
        replace(&imap, "noimapd", "protocol = \"imap\"", "protocol = \"imap\"\nimapd = \"/usr/lib/nothing/imapd\""),
        replace(
            &imap,
            "servedonly",
            "protocol = \"imap\"",
            "protocol = \"imap\"\nfetch = false\nserve.imap = \"tcp:127.0.0.1:1\"\nimapd = \"/usr/lib/nothing/imapd\"",
        ),
        replace(
            &imap,
            "noisy",
            "protocol = \"imap\"",
            "protocol = \"imap\"\nimapd = \"echo Welcome to the shell host; exec /usr/lib/dovecot/imap\"",
        ),
        replace(
            &pop3,
            "password",
            &env.home.path().join("password").display().to_string(),
            &wrong_password.display().to_string(),
        ),
        replace(&pop3, "maildir", &env.maildir().display().to_string(), &blocker.join("Maildir").display().to_string()),
    ]
    .join("\n");
    let config = config(&env, "config.toml", &accounts);

    // Healthy: every hop passes, exit 0.
    for name in ["imap", "pop3"] {
        let d = doctor(&env, &config, name);
        assert_eq!(d.first_failure(), None, "{}", d.stdout);
        for hop in [
            "config",
            "resolve",
            "tcp",
            "ssh",
            "host-key",
            "ssh-auth",
            "channel",
            "greeting",
            "capabilities",
            "login",
            "delivery",
            "ledger",
        ] {
            assert!(d.passed(hop), "{name}: {hop} did not pass:\n{}", d.stdout);
        }
        assert!(d.hops.iter().any(|h| h.hop == "ssh" && h.what.starts_with("SSH-2.0-OpenSSH")), "{}", d.stdout);
        assert!(
            d.hops
                .iter()
                .any(|h| h.hop == "algorithms" && h.what.starts_with("key exchange ") && h.what.contains("cipher")),
            "{}",
            d.stdout
        );
        assert_eq!(d.code, 0, "{}", d.stdout);
    }
    let d = doctor(&env, &config, "imap");
    assert!(d.passed("imapd"), "{}", d.stdout);
    assert!(d.hops.iter().any(|h| h.hop == "login" && h.what.contains("PREAUTH")), "{}", d.stdout);
    assert!(
        d.hops.iter().any(|h| h.hop == "ssh-auth" && h.what.contains(&env.bed.client_key.display().to_string())),
        "{}",
        d.stdout
    );

    let d = doctor(&env, &config, "unknown");
    let hop = d.fails_at("host-key");
    assert!(hop.what.contains("not known") && hop.what.contains("SHA256:"), "{}", d.stdout);
    // The fix gives the known_hosts line to add.
    let key_fields: Vec<&str> = env.bed.host_key_line.split_whitespace().take(2).collect();
    assert!(d.stdout.contains(&format!("[127.0.0.1]:{} {}", env.bed.ssh_port, key_fields.join(" "))), "{}", d.stdout);
    assert_eq!(d.code, 2);

    let d = doctor(&env, &config, "changed");
    let hop = d.fails_at("host-key");
    assert!(hop.what.contains("changed") && hop.what.matches("SHA256:").count() == 2, "{}", d.stdout);
    assert!(d.stdout.contains("ssh-keygen -R"), "{}", d.stdout);
    assert_eq!(d.code, 2);

    let d = doctor(&env, &config, "wrongkey");
    let hop = d.fails_at("ssh-auth");
    assert!(hop.what.contains(&other.display().to_string()), "names the key tried: {}", d.stdout);
    assert!(hop.what.contains("the server accepts: publickey"), "names what the server offers: {}", d.stdout);
    assert!(d.stdout.contains("ssh-copy-id"), "{}", d.stdout);
    assert_eq!(d.code, 3);

    let d = doctor(&env, &config, "noimapd");
    let hop = d.fails_at("imapd");
    assert!(hop.what.contains("/usr/lib/nothing/imapd"), "{}", d.stdout);

    // Regression: a serve-only account (fetch = false, no send) was not
    // checked at all, and passed with its imapd missing.
    let d = doctor(&env, &config, "servedonly");
    let hop = d.fails_at("imapd");
    assert!(hop.what.contains("/usr/lib/nothing/imapd"), "{}", d.stdout);
    assert_ne!(d.code, 0);

    let d = doctor(&env, &config, "noisy");
    let hop = d.fails_at("greeting");
    assert!(hop.what.contains("Welcome to the shell host"), "{}", d.stdout);
    assert!(d.stdout.contains("startup file"), "{}", d.stdout);
    assert_eq!(d.code, 4);

    let d = doctor(&env, &config, "password");
    d.fails_at("login");
    assert!(!d.stdout.contains("not the password"), "the password was printed:\n{}", d.stdout);
    assert_eq!(d.code, 3);

    let d = doctor(&env, &config, "maildir");
    let hop = d.fails_at("delivery");
    assert!(hop.what.contains("a_file"), "{}", d.stdout);
    assert!(d.passed("login"), "the remote hops are checked too:\n{}", d.stdout);
    assert_eq!(d.code, 10);

    // Nothing was fetched or changed by any of it.
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
    env.add_messages((0..2).map(|i| sshmail_testbed::corpus::mixed_message(i, 0)));
    let d = doctor(&env, &config, "pop3");
    assert_eq!(d.code, 0, "{}", d.stdout);
    assert_eq!(env.bed.server_message_count().unwrap(), 2, "doctor touched the mailbox");
    assert!(env.delivered().is_empty(), "doctor delivered mail");

    // sshd down: the TCP hop fails, after the name resolved.
    env.bed.kill_sshd();
    let d = doctor(&env, &config, "pop3");
    let hop = d.fails_at("tcp");
    assert!(hop.what.contains("refused"), "{}", d.stdout);
    assert!(d.passed("resolve"), "{}", d.stdout);
    assert_eq!(d.code, 2);
}

#[test]
fn forwarding_refused_fails_at_the_channel() {
    let env = Env::with(Options { allow_tcp_forwarding: false, ..Options::default() });
    let config = config(&env, "config.toml", &env.pop3_toml("pop3", ""));
    let d = doctor(&env, &config, "pop3");
    let hop = d.fails_at("channel");
    assert!(hop.what.contains("AllowTcpForwarding"), "{}", d.stdout);
    assert!(d.passed("ssh-auth"), "{}", d.stdout);
    assert_eq!(d.code, 2);
}

#[test]
fn an_ssh_l_forward_of_a_mail_port_is_a_warning_naming_its_pid_and_a_running_daemon_is_seen() {
    let env = Env::new();
    let daemon = Daemon::start(&env, &env.pop3_toml("pop3", ""));
    let config = daemon.config.clone();
    // The classic recipe, with the real OpenSSH client, to the testbed.
    let mut ssh = Command::new("ssh")
        .args(["-N", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=no", "-F", "/dev/null"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", env.bed.known_hosts.display()))
        .arg("-i")
        .arg(&env.bed.client_key)
        .args(["-p", &env.bed.ssh_port.to_string(), "-L", "31110:127.0.0.1:110"])
        .arg(env.bed.ssh_destination().rsplit_once(':').map(|(d, _)| d.to_string()).unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the OpenSSH client (openssh-client) must be installed");
    let d = doctor(&env, &config, "pop3");
    let _ = ssh.kill();
    let _ = ssh.wait();
    let warning = d
        .stdout
        .lines()
        .find(|l| l.contains("WARN forwards"))
        .unwrap_or_else(|| panic!("no forwards warning:\n{}", d.stdout));
    assert!(warning.contains(&format!("PID {}", ssh.id())), "{warning}");
    assert!(warning.contains("31110 to mail port 110"), "{warning}");
    // A warning does not fail the run.
    assert_eq!(d.code, 0, "{}", d.stdout);
    let pid = daemon.child.id();
    assert!(d.stdout.contains(&format!("PASS daemon        running, PID {pid}")), "{}", d.stdout);
}

#[test]
fn a_send_account_checks_its_relay_through_ssh_and_a_dead_relay_fails_at_send() {
    let env = Env::new();
    let sink = common::SmtpServer::start(&env.home.path().join("smtp"), None);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let accounts = [
        env.pop3_toml("isp", &format!("fetch = false\nsend.server = \"127.0.0.1:{}\"", sink.port)),
        env.pop3_toml("dead", &format!("fetch = false\nsend.server = \"127.0.0.1:{closed_port}\"")),
    ]
    .join("\n");
    let config = config(&env, "config.toml", &accounts);

    let d = doctor(&env, &config, "isp");
    assert_eq!(d.first_failure(), None, "{}", d.stdout);
    let send = d.hops.iter().find(|h| h.hop == "send").unwrap_or_else(|| panic!("no send hop:\n{}", d.stdout));
    assert!(send.what.contains(": 220 ") && send.what.contains("EHLO:"), "{}", d.stdout);
    assert!(d.passed("ssh-auth"), "the SSH hops come first:\n{}", d.stdout);
    assert_eq!(d.code, 0, "{}", d.stdout);

    let d = doctor(&env, &config, "dead");
    let hop = d.fails_at("send");
    assert!(hop.what.contains(&format!("127.0.0.1:{closed_port}")), "{}", d.stdout);
    assert_eq!(d.code, 2, "{}", d.stdout);
}

/// Regression: the doctor checked a relay with an EHLO of its own, so a
/// relay whose STARTTLS certificate is not trusted, or that refuses the
/// login, passed — and every message then stayed queued. It now opens the
/// session the relay opens: STARTTLS checked, AUTH tried.
#[test]
fn regression_the_relay_check_is_the_relays_own_session_starttls_and_auth_included() {
    let env = Env::with(sshmail_testbed::Options { tls: true, ..sshmail_testbed::Options::default() });
    let sink = common::SmtpServer::start_tls_auth(&env, "me:s3cret");
    let send = |password: &str, ca: bool| {
        let ca = if ca { format!("send.tls_ca_file = \"{}\"\n", env.bed.ca_cert.display()) } else { String::new() };
        env.pop3_toml(
            "isp",
            &format!(
                "fetch = false\nsend.server = \"127.0.0.1:{}\"\nsend.user = \"me\"\n\
                 send.password_command = [\"printf\", \"%s\", \"{password}\"]\n{ca}",
                sink.port
            ),
        )
    };
    let config = config(&env, "config.toml", &send("s3cret", true));
    let d = doctor(&env, &config, "isp");
    assert_eq!(d.first_failure(), None, "{}", d.stdout);
    let hop = d.hops.iter().find(|h| h.hop == "send").unwrap_or_else(|| panic!("no send hop:\n{}", d.stdout));
    assert!(hop.what.contains("STARTTLS done") && hop.what.contains("AUTH accepted"), "{}", d.stdout);

    let config = self::config(&env, "config.toml", &send("wrong", true));
    let d = doctor(&env, &config, "isp");
    let hop = d.fails_at("send");
    assert!(hop.what.contains("refused the login of me"), "{}", d.stdout);
    assert!(!d.stdout.contains("wrong"), "no secret in the report:\n{}", d.stdout);

    let config = self::config(&env, "config.toml", &send("s3cret", false));
    let d = doctor(&env, &config, "isp");
    let hop = d.fails_at("send");
    assert!(hop.what.contains("not trusted"), "{}", d.stdout);
}

/// doctor tells the truth about ~/.ssh/config: each directive set for the
/// host that sshmail reads but does not honour is a WARN naming its line
/// and what sshmail does instead, and so is an algorithm it does not
/// implement; the connection still passes.
#[test]
fn ssh_config_directives_sshmail_does_not_honour_are_warnings_naming_the_line() {
    let env = Env::new();
    let ssh_dir = env.home.path().join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    std::fs::write(
        ssh_dir.join("config"),
        "# mail host\nHost 127.0.0.1\n  ControlMaster auto\n  VerifyHostKeyDNS yes\n  ForwardX11 yes\n  \
         KexAlgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256\n",
    )
    .unwrap();
    let config = config(&env, "config.toml", &env.pop3_toml("pop3", ""));
    let d = doctor(&env, &config, "pop3");
    assert_eq!(d.code, 0, "{}", d.stdout);
    let warned: Vec<&Hop> = d.hops.iter().filter(|h| h.status == "WARN" && h.hop == "ssh_config").collect();
    assert_eq!(warned.len(), 3, "{}", d.stdout);
    assert!(warned[0].what.contains(".ssh/config:3: ControlMaster"), "{}", d.stdout);
    assert!(warned[1].what.contains(".ssh/config:4: VerifyHostKeyDNS"), "{}", d.stdout);
    assert!(warned[2].what.contains(".ssh/config:6: KexAlgorithms sntrup761x25519-sha512@openssh.com"), "{}", d.stdout);
    assert!(d.stdout.contains("fix: sshmail rides a master that runs at ControlPath"), "{}", d.stdout);
    assert!(d.hops.iter().any(|h| h.hop == "algorithms" && h.what.contains("curve25519-sha256")), "{}", d.stdout);
}

/// The hooks and notifications hops: a hook whose program is not there
/// and `notify = true` with no session bus are warnings with the fix; a
/// hook that is there passes.
#[test]
fn a_missing_hook_program_and_no_session_bus_are_warnings() {
    let env = Env::new();
    let extra = "on_new = [\"/nonexistent/mail-came\"]\non_sent = \"true\"\nnotify = true\n";
    let config = config(&env, "config.toml", &env.pop3_toml("pop3", extra));
    let d = doctor(&env, &config, "pop3");
    assert_eq!(d.code, 0, "warnings only:\n{}", d.stdout);
    let warned =
        |hop: &str, text: &str| d.hops.iter().any(|h| h.status == "WARN" && h.hop == hop && h.what.contains(text));
    assert!(warned("hooks", "on_new: /nonexistent/mail-came is not found"), "{}", d.stdout);
    assert!(
        d.hops.iter().any(|h| h.status == "PASS" && h.hop == "hooks" && h.what.starts_with("on_sent: true is")),
        "{}",
        d.stdout
    );
    assert!(warned("notify", "no session D-Bus here"), "{}", d.stdout);
}
