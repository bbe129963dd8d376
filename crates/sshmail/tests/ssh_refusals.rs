//! SSH logins beyond keys (passwords, the server's prompts, second
//! factors, answered on a terminal in tmux or by `ssh_password_command`),
//! and SSH failures: a clear message naming the fix, the right exit code,
//! nothing fetched. Against real sshd (with PAM where it asks) and Dovecot.

mod common;

use common::{Env, Tmux, assert_exit, stderr};
use sshmail_testbed::{Options, corpus};

fn env_with_mail() -> Env {
    let mut env = Env::new();
    env.add_messages((0..5).map(|i| corpus::mixed_message(i, 0)));
    env
}

#[test]
fn host_keys_are_verified_unknown_host_is_refused() {
    let env = env_with_mail();
    let empty = env.home.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let out = env.run(&["--known-hosts", empty.to_str().unwrap()]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("is not known") && err.contains("SHA256:"), "{err}");
    assert!(env.delivered().is_empty());
    assert_eq!(env.bed.server_message_count().unwrap(), 5);
}

#[test]
fn accept_new_records_a_hashed_line_and_then_trusts_it() {
    let env = env_with_mail();
    let kh = env.home.path().join("kh/known_hosts");
    let out = env.run(&["--known-hosts", kh.to_str().unwrap(), "--accept-new-host-key", "--keep"]);
    assert_exit(&out, 0);
    let text = std::fs::read_to_string(&kh).unwrap();
    assert!(text.starts_with("|1|") && !text.contains("127.0.0.1"), "{text}");
    assert!(text.contains(&env.bed.host_key_line), "{text}");
    // Strict from now on, and the recorded key is trusted.
    let out = env.run(&["--known-hosts", kh.to_str().unwrap(), "--keep"]);
    assert_exit(&out, 1);
}

#[test]
fn host_keys_are_verified_changed_key_is_refused_even_with_accept_new() {
    let env = env_with_mail();
    let kh = env.changed_known_hosts("changed_known_hosts");
    let out = env.run(&["--known-hosts", kh.to_str().unwrap(), "--accept-new-host-key"]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("changed"), "{err}");
    assert!(err.contains(&format!("{}:2", kh.display())), "names file:line: {err}");
    assert_eq!(err.matches("SHA256:").count(), 2, "names both fingerprints: {err}");
    assert!(env.delivered().is_empty());
    assert_eq!(env.bed.server_message_count().unwrap(), 5);
}

#[test]
fn host_keys_are_verified_revoked_key_is_refused() {
    let env = env_with_mail();
    let kh = env.home.path().join("revoked_known_hosts");
    std::fs::write(
        &kh,
        format!(
            "[127.0.0.1]:{port} {line}\n@revoked * {line}\n",
            port = env.bed.ssh_port,
            line = env.bed.host_key_line
        ),
    )
    .unwrap();
    let out = env.run(&["--known-hosts", kh.to_str().unwrap()]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));
    assert!(env.delivered().is_empty());
}

#[test]
fn wrong_ssh_key_gives_exit_3() {
    let env = env_with_mail();
    let wrong = env.home.path().join("wrong_key");
    sshmail_testbed::generate_key(&wrong).unwrap();
    let out = env.command_with_identity(&wrong, &[]).output().unwrap();
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("SSH authentication"), "{}", stderr(&out));
    assert!(env.delivered().is_empty());
}

#[test]
fn wrong_mail_password_gives_exit_3() {
    let env = env_with_mail();
    std::fs::write(env.home.path().join("password"), "not the password").unwrap();
    let out = env.run(&[]);
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("login as mailuser refused"), "{}", stderr(&out));
    assert_eq!(env.bed.server_message_count().unwrap(), 5);
}

#[test]
fn forwarding_forbidden_gives_a_clear_error() {
    let mut env = Env::with(Options { allow_tcp_forwarding: false, ..Options::default() });
    env.add_messages((0..3).map(|i| corpus::mixed_message(i, 0)));
    let out = env.run(&[]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("AllowTcpForwarding"), "{}", stderr(&out));
    assert!(env.delivered().is_empty());
}

#[test]
fn nothing_listening_at_the_server_address_gives_a_clear_error() {
    let env = env_with_mail();
    let mut cmd = env.command(&[]);
    // A later --server wins.
    cmd.args(["--server", "127.0.0.1:1"]);
    let out = cmd.output().unwrap();
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("refused the forward to 127.0.0.1:1"), "{}", stderr(&out));
}

#[test]
fn ssh_agent_keys_are_used() {
    let env = env_with_mail();
    let sock = env.home.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent (openssh-client) runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sock.exists() {
        assert!(std::time::Instant::now() < deadline, "ssh-agent did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let added = std::process::Command::new("ssh-add")
        .arg(&env.bed.client_key)
        .env("SSH_AUTH_SOCK", &sock)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(added.success());
    // No usable identity file: only the agent can log in.
    let missing = env.home.path().join("no-such-key");
    let out = env.command_with_identity(&missing, &["--keep"]).env("SSH_AUTH_SOCK", &sock).output().unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    assert_exit(&out, 0);
    assert_eq!(env.delivered().len(), 5);
}

#[test]
fn encrypted_key_without_a_terminal_says_to_use_the_agent() {
    let env = env_with_mail();
    let key = env.home.path().join("encrypted_key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "a passphrase", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let out = env.command_with_identity(&key, &[]).output().unwrap();
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("encrypted; no terminal"), "{}", stderr(&out));
    assert!(env.delivered().is_empty());
}

/// The password PAM takes in these tests (checked by pam_exec).
const SSH_PASSWORD: &str = "correct horse";
/// The TOTP secret pam_oath knows (hex).
const TOTP_SECRET: &str = "3132333435363738393031323334353637383930";

/// A testbed with mail whose sshd logs in through a PAM service of its own,
/// as `methods` (AuthenticationMethods) says. `stack` names the PAM auth
/// modules in order: `password` (pam_exec taking [`SSH_PASSWORD`]) and
/// `otp` (pam_oath, TOTP from [`TOTP_SECRET`]). The PAM files live in the
/// returned directory.
fn env_with_pam(methods: &str, stack: &[&str]) -> (Env, tempfile::TempDir) {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let check = dir.path().join("check-password");
    std::fs::write(&check, format!("#!/bin/bash\nIFS= read -r -d '' pw\n[ \"$pw\" = '{SSH_PASSWORD}' ]\n")).unwrap();
    std::fs::set_permissions(&check, std::fs::Permissions::from_mode(0o755)).unwrap();
    let users = dir.path().join("users.oath");
    std::fs::write(&users, format!("HOTP/T30 {} - {TOTP_SECRET}\n", sshmail_testbed::TEST_USER)).unwrap();
    let pam = stack
        .iter()
        .map(|m| match *m {
            "password" => format!("auth required pam_exec.so expose_authtok quiet {}", check.display()),
            "otp" => format!("auth required pam_oath.so usersfile={} window=3 digits=6", users.display()),
            other => panic!("no PAM module {other}"),
        })
        .collect();
    let sshd_lines = [
        "UsePAM yes",
        "KbdInteractiveAuthentication yes",
        "PasswordAuthentication yes",
        &format!("AuthenticationMethods {methods}"),
    ];
    let mut env = Env::with(Options { sshd_lines: sshd_lines.map(String::from).to_vec(), pam, ..Default::default() });
    env.add_messages((0..2).map(|i| corpus::mixed_message(i, 0)));
    (env, dir)
}

/// The current TOTP for [`TOTP_SECRET`], from oathtool.
fn totp() -> String {
    let out = std::process::Command::new("oathtool")
        .args(["--totp", TOTP_SECRET])
        .output()
        .expect("oathtool (scripts/install-deps)");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Writes a config with the testbed's POP3 account (`extra` lines added)
/// and returns its path.
fn pop3_config(env: &Env, extra: &str) -> std::path::PathBuf {
    let path = env.home.path().join("config.toml");
    std::fs::write(&path, env.config_toml(&env.pop3_toml("mail", extra))).unwrap();
    path
}

/// `sshmail fetch` with `config`, without a terminal.
fn fetch_with(env: &Env, config: &std::path::Path) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_sshmail"));
    c.env("HOME", env.home.path()).env_remove("SSH_AUTH_SOCK").env_remove("SSHMAIL_LOG");
    c.arg("fetch").arg("--config").arg(config).stdin(std::process::Stdio::null());
    let child = c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    common::wait_bounded(child, std::time::Duration::from_secs(120))
}

/// `sshmail fetch` with `config` on a terminal (tmux); its exit status is
/// written to the returned file when it ends.
fn fetch_on_terminal(env: &Env, config: &std::path::Path) -> (Tmux, std::path::PathBuf) {
    let tmux = Tmux { socket: env.home.path().join("tmux.sock") };
    let done = env.home.path().join("fetch-exit");
    tmux.start(&format!(
        "env -u SSH_AUTH_SOCK -u SSHMAIL_LOG HOME={home} {bin} fetch --config {config}; echo $? > {done}; read x",
        home = env.home.path().display(),
        bin = env!("CARGO_BIN_EXE_sshmail"),
        config = config.display(),
        done = done.display()
    ));
    (tmux, done)
}

/// Waits (bounded) for the terminal fetch to end; its exit status.
fn exit_of(tmux: &Tmux, done: &std::path::Path) -> String {
    tmux.wait_until("sshmail to end", std::time::Duration::from_secs(60), |_| done.exists());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(done).unwrap_or_default();
        if text.ends_with('\n') || std::time::Instant::now() > deadline {
            return text.trim().to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Regression: a host that takes only a password (a university shell
/// host) got no prompt on a terminal, and an error whose advice was to
/// authorize a key. Now: on a terminal the password is asked as `ssh`
/// asks it, never echoed; without one, the error names
/// `ssh_password_command`, which works.
#[test]
fn regression_a_password_only_host_asks_on_the_terminal_or_names_ssh_password_command() {
    let (env, _pam) = env_with_pam("password", &["password"]);
    let config = pop3_config(&env, "keep = true");
    let out = fetch_with(&env, &config);
    assert_exit(&out, 3);
    let err = stderr(&out);
    assert!(err.contains("the server accepts: password") && err.contains("set ssh_password_command"), "{err}");
    assert!(!err.contains("authorize one of your keys"), "{err}");
    assert!(env.delivered().is_empty());

    let (tmux, done) = fetch_on_terminal(&env, &config);
    tmux.wait_until("the password prompt", std::time::Duration::from_secs(30), |s| {
        s.contains(&format!("{}@127.0.0.1's password:", sshmail_testbed::TEST_USER))
    });
    tmux.type_line(SSH_PASSWORD);
    assert_eq!(exit_of(&tmux, &done), "0", "{}", tmux.screen());
    assert_eq!(env.delivered().len(), 2);
    assert!(!tmux.screen().contains(SSH_PASSWORD), "the password was echoed:\n{}", tmux.screen());

    // The command's password logs in too (nothing new to fetch: exit 1).
    let config = pop3_config(&env, &format!("keep = true\nssh_password_command = \"echo '{SSH_PASSWORD}'\""));
    let out = fetch_with(&env, &config);
    assert_exit(&out, 1);
    let log = std::fs::read_to_string(env.bed.sshd_log()).unwrap();
    assert_eq!(log.matches("Accepted password").count(), 2, "{log}");

    // A wrong one is said to be refused, with the command to check.
    let config = pop3_config(&env, "keep = true\nssh_password_command = \"echo wrong\"");
    let out = fetch_with(&env, &config);
    assert_exit(&out, 3);
    let err = stderr(&out);
    assert!(
        err.contains("the password was refused") && err.contains("check what ssh_password_command prints"),
        "{err}"
    );
}

/// Regression: with `publickey,keyboard-interactive` (a key and a one-time
/// code from pam_oath), the key was accepted but the error said only
/// "the server accepts: keyboard-interactive", with advice to authorize the
/// key. Now the partial success is said as such, with the server's
/// question and the fix; on a terminal the question is shown and answered.
#[test]
fn regression_a_second_factor_is_named_as_such_and_asked_on_the_terminal() {
    let (env, _pam) = env_with_pam("publickey,keyboard-interactive", &["otp"]);
    let config = pop3_config(&env, "keep = true");
    let out = fetch_with(&env, &config);
    assert_exit(&out, 3);
    let err = stderr(&out);
    assert!(err.contains(&format!("accepted {} but wants a second factor", env.bed.client_key.display())), "{err}");
    assert!(err.contains("One-time password (OATH)") && err.contains("on a terminal"), "{err}");
    assert!(!err.contains("authorize one of your keys"), "{err}");

    let (tmux, done) = fetch_on_terminal(&env, &config);
    tmux.wait_until("the one-time password prompt", std::time::Duration::from_secs(30), |s| {
        s.contains("One-time password (OATH)")
    });
    tmux.type_line(&totp());
    assert_eq!(exit_of(&tmux, &done), "0", "{}", tmux.screen());
    assert_eq!(env.delivered().len(), 2);
}

/// Regression: keyboard-interactive asking a password and then a
/// one-time code got `ssh_password_command`'s answer for both. Now the
/// command answers the password prompt only; the code is asked on the
/// terminal.
#[test]
fn regression_ssh_password_command_answers_the_password_prompt_not_the_one_time_code() {
    let (env, _pam) = env_with_pam("keyboard-interactive", &["password", "otp"]);
    let config = pop3_config(&env, &format!("keep = true\nssh_password_command = \"echo '{SSH_PASSWORD}'\""));
    let out = fetch_with(&env, &config);
    assert_exit(&out, 3);
    let err = stderr(&out);
    assert!(err.contains("One-time password (OATH)") && err.contains("no terminal"), "{err}");
    assert!(!err.contains("the password was refused"), "{err}");

    let (tmux, done) = fetch_on_terminal(&env, &config);
    let screen = tmux.wait_until("the one-time password prompt", std::time::Duration::from_secs(30), |s| {
        s.contains("One-time password (OATH)")
    });
    assert!(!screen.contains("Password:"), "the password prompt reached the terminal:\n{screen}");
    tmux.type_line(&totp());
    assert_eq!(exit_of(&tmux, &done), "0", "{}", tmux.screen());
    assert_eq!(env.delivered().len(), 2);
}

/// A host that takes only GSSAPI (Kerberos) is told that sshmail has none
/// and how to go through ssh instead, not to authorize a key.
#[test]
fn a_gssapi_only_host_is_told_to_go_through_ssh() {
    let sshd_lines = ["GSSAPIAuthentication yes", "AuthenticationMethods gssapi-with-mic"].map(String::from).to_vec();
    let env = Env::with(Options { sshd_lines, ..Default::default() });
    let out = env.run(&[]);
    assert_exit(&out, 3);
    let err = stderr(&out);
    assert!(err.contains("no Kerberos/GSSAPI") && err.contains("OpenSSH master"), "{err}");
}

/// keyboard-interactive through PAM asking the account's password: on a
/// terminal the server's own prompt is shown and answered, never echoed.
#[test]
fn keyboard_interactive_prompts_are_shown_and_answered_on_the_terminal() {
    let (env, _pam) = env_with_pam("keyboard-interactive", &["password"]);
    let config = pop3_config(&env, "keep = true");
    let (tmux, done) = fetch_on_terminal(&env, &config);
    tmux.wait_until("the server's password prompt", std::time::Duration::from_secs(30), |s| s.contains("Password:"));
    tmux.type_line(SSH_PASSWORD);
    let log = || std::fs::read_to_string(env.bed.sshd_log()).unwrap_or_default();
    assert_eq!(exit_of(&tmux, &done), "0", "{}\n{}", tmux.screen(), log());
    assert_eq!(env.delivered().len(), 2);
    assert!(!tmux.screen().contains(SSH_PASSWORD), "the password was echoed:\n{}", tmux.screen());
}

/// TCP connections sshd has taken so far (each login attempt is one).
fn sshd_connections(env: &Env) -> usize {
    std::fs::read_to_string(env.bed.sshd_log()).unwrap_or_default().matches("Connection from").count()
}

/// `sshmail login uni` against the daemon of `config`, on a terminal
/// (tmux); its exit status is written to the returned file.
fn login_on_terminal(env: &Env, config: &std::path::Path, tmux: &Tmux, name: &str) -> std::path::PathBuf {
    let done = env.home.path().join(format!("{name}-exit"));
    tmux.start(&format!(
        "env -u SSH_AUTH_SOCK -u SSHMAIL_LOG HOME={home} XDG_RUNTIME_DIR={home}/run {bin} login uni --config {config}; \
         echo $? > {done}; read x",
        home = env.home.path().display(),
        bin = env!("CARGO_BIN_EXE_sshmail"),
        config = config.display(),
        done = done.display()
    ));
    done
}

/// Logs in with `sshmail login` on a terminal, answering the one-time
/// password prompt relayed from the daemon with a code other than `used`
/// (pam_oath takes each code once); returns the code given.
fn login_with_otp(env: &Env, config: &std::path::Path, name: &str, used: Option<&str>) -> String {
    let tmux = Tmux { socket: env.home.path().join(format!("{name}.sock")) };
    let done = login_on_terminal(env, config, &tmux, name);
    tmux.wait_until("the one-time password prompt, relayed", std::time::Duration::from_secs(30), |s| {
        s.contains("One-time password (OATH)")
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let code = loop {
        let code = totp();
        if used != Some(code.as_str()) {
            break code;
        }
        assert!(std::time::Instant::now() < deadline, "the TOTP never changed");
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    tmux.type_line(&code);
    assert_eq!(exit_of(&tmux, &done), "0", "{}", tmux.screen());
    let screen = tmux.screen();
    assert!(screen.contains("logged in") && !screen.contains(&code), "{screen}");
    code
}

/// `sshmail login` for a two-factor host (a key, then a TOTP from
/// pam_oath): the daemon, which cannot answer, says "waiting for login"
/// and does not try again by itself; `login` relays the server's prompt to
/// the terminal and the daemon then fetches and pushes on that connection,
/// through a poll and a SIGHUP, with no further login. When the connection
/// is killed, it waits for login again — polls and reloads reach sshd no
/// more — until `login` is run again.
#[test]
fn sshmail_login_answers_a_second_factor_for_the_daemon_which_holds_the_connection_and_never_retries_alone() {
    use common::Daemon;
    let (mut env, _pam) = env_with_pam("publickey,keyboard-interactive", &["otp"]);
    let imapd = format!("imapd = [\"/usr/lib/dovecot/imap\", \"-c\", \"{}\"]\n", env.bed.dovecot_config.display());
    // A desktop, to be told when the account comes to wait for a login.
    let desktop = common::desktop::Desktop::start(env.home.path());
    let config = env.home.path().join("config.toml");
    Daemon::write_config(&config, &env.config_toml(&env.imap_toml("uni", &format!("{imapd}notify = true\n"))));
    let daemon = Daemon::spawn(env.home.path(), &config, &[("DBUS_SESSION_BUS_ADDRESS", &desktop.bus)]);
    daemon.wait_answering();
    let alerts = || desktop.notified().iter().filter(|c| c.1 == "uni: waiting for login").count();
    let waiting = |s: &sshmail::control::status::Status| {
        s.connections.iter().any(|c| c.state == "waiting for login")
            && s.accounts[0].folders.iter().all(|f| f.last_error.as_ref().is_some_and(|e| e.retry == "login"))
    };
    let limit = std::time::Duration::from_secs(60);
    daemon.wait_status("the daemon waiting for login", limit, waiting);
    let text = String::from_utf8_lossy(&daemon.ctl(&["status"]).stdout).to_string();
    assert!(text.contains("waiting for login: sshmail login uni"), "{text}");
    assert!(daemon.log.text().contains("run `sshmail login uni`"), "{}", daemon.log.text());
    let tries = sshd_connections(&env);
    // A poll does not try it again.
    let out = daemon.ctl(&["poll"]);
    assert!(stderr(&out).contains("waiting for login"), "{}", stderr(&out));
    assert_eq!(sshd_connections(&env), tries, "a poll tried the two-factor host again");
    let deadline = std::time::Instant::now() + limit;
    while alerts() < 1 {
        assert!(std::time::Instant::now() < deadline, "not told on the desktop: {:?}", desktop.notified());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let first = login_with_otp(&env, &daemon.config, "login1", None);
    let delivered = |env: &Env, n: usize| {
        let deadline = std::time::Instant::now() + limit;
        while env.delivered().len() < n {
            let got = env.delivered().len();
            assert!(std::time::Instant::now() < deadline, "{got} of {n} delivered; log:\n{}", daemon.log.text());
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    delivered(&env, 2);
    let logged_in = sshd_connections(&env);
    assert_eq!(logged_in, tries + 1, "the login made one connection");
    // Pushed (IDLE), polled and reloaded on the same connection.
    env.add_messages([corpus::mixed_message(7, 0)]);
    delivered(&env, 3);
    daemon.signal("HUP");
    assert_exit(&daemon.ctl(&["poll"]), 1);
    env.add_messages([corpus::mixed_message(8, 0)]);
    delivered(&env, 4);
    assert_eq!(sshd_connections(&env), logged_in, "a fetch, poll or reload logged in again");

    // The connection killed: waiting for login, and nothing reaches sshd.
    for pid in env.bed.sshd_session_pids() {
        sshmail_testbed::signal(pid, "KILL");
    }
    daemon.wait_status("the daemon waiting for login after the loss", limit, waiting);
    daemon.signal("HUP");
    daemon.ctl(&["poll"]);
    daemon.wait_status("still waiting for login", limit, waiting);
    assert_eq!(sshd_connections(&env), logged_in, "the daemon tried the host again by itself");
    let deadline = std::time::Instant::now() + limit;
    while alerts() < 2 {
        assert!(std::time::Instant::now() < deadline, "not told of the second wait: {:?}", desktop.notified());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = daemon.log.text();
    let said = log.lines().filter(|l| l.contains("SSH to") && l.contains("lost the connection a login made"));
    assert_eq!(said.filter(|l| !l.contains("uni: INBOX")).count(), 1, "the loss is said once:\n{log}");

    login_with_otp(&env, &daemon.config, "login2", Some(&first));
    env.add_messages([corpus::mixed_message(9, 0)]);
    delivered(&env, 5);
    assert_eq!(sshd_connections(&env), logged_in + 1);
    let log = daemon.stop();
    assert!(!log.contains(&first), "a one-time code reached the log");
    assert_eq!(alerts(), 2, "once each time it came to wait: {:?}", desktop.notified());
}
