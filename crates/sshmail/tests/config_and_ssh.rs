//! Config files, the shared SSH connection, compression and ProxyJump,
//! against the real sshd and Dovecot.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::{Env, assert_exit, stderr, wait_bounded};
use sshmail_testbed::{MAIL_USER, corpus};

fn sshmail(env: &Env, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sshmail"));
    c.env("HOME", env.home.path())
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("SSHMAIL_LOG")
        .stdin(Stdio::null())
        .args(args);
    c
}

fn run(mut c: Command) -> std::process::Output {
    wait_bounded(c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), std::time::Duration::from_secs(120))
}

/// `sshmail fetch --pop3` of the testbed's mailbox through `host` as
/// `~/.ssh/config` (`ssh_config`) describes it, with the test's login,
/// Maildir and state directory; `identity` and `known_hosts` when given.
fn fetch_through(
    env: &Env,
    host: &str,
    ssh_config: &std::path::Path,
    identity: Option<&std::path::Path>,
    known_hosts: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let dest = format!("{}@{host}", sshmail_testbed::TEST_USER);
    let mut c = sshmail(env, &["fetch", "--pop3", "--ssh", &dest, "--ssh-config"]);
    c.arg(ssh_config).arg("--server").arg(format!("127.0.0.1:{}", env.bed.pop3_port));
    if let Some(identity) = identity {
        c.arg("--identity").arg(identity);
    }
    c.arg("--known-hosts").arg(known_hosts).args(env.login_args());
    c.arg("--deliver").arg(format!("maildir:{}", env.maildir().display()));
    c.arg("--state-dir").arg(env.home.path().join("state")).args(extra);
    run(c)
}

fn accepted_logins(env: &Env) -> usize {
    std::fs::read_to_string(env.bed.sshd_log()).unwrap().matches("Accepted publickey").count()
}

#[test]
fn config_file_accounts_share_one_ssh_connection() {
    let mut env = Env::new();
    env.add_messages((0..6).map(|i| corpus::mixed_message(i, 0)));
    let mut lists = Vec::new();
    for i in 6..10 {
        let m = corpus::mixed_message(i, 0);
        env.bed.add_message_to("lists.rust", &m).unwrap();
        lists.push(m);
    }
    let home = env.home.path();
    let config = format!(
        r#"state_dir = "{home}/state"

[account.pop]
ssh = "{dest}"
server = "127.0.0.1:{pop3}"
user = "{MAIL_USER}"
password_command = ["cat", "{home}/password"]
identity = ["{key}"]
known_hosts = "{kh}"
deliver = "maildir:{home}/pop-mail"
received = false

[account.lists]
ssh = "{dest}"
protocol = "imap"
folders = ["lists.*"]
identity = ["{key}"]
known_hosts = "{kh}"
deliver = "maildir:{home}/list-mail"
received = false
"#,
        home = home.display(),
        dest = env.bed.ssh_destination(),
        pop3 = env.bed.pop3_port,
        key = env.bed.client_key.display(),
        kh = env.bed.known_hosts.display(),
    );
    let path = home.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let before = accepted_logins(&env);
    let out = run(sshmail(&env, &["fetch", "--config", path.to_str().unwrap(), "-v"]));
    assert_exit(&out, 0);
    assert_eq!(accepted_logins(&env) - before, 1, "both accounts must ride one SSH connection: {}", stderr(&out));
    let mut expected = env.originals.clone();
    expected.sort();
    assert_eq!(common::read_dir_contents(&home.join("pop-mail/new")), expected);
    lists.sort();
    assert_eq!(common::read_dir_contents(&home.join("list-mail/new")), lists);

    // One account by name: nothing new for it.
    let out = run(sshmail(&env, &["fetch", "--config", path.to_str().unwrap(), "lists"]));
    assert_exit(&out, 1);
    let out = run(sshmail(&env, &["fetch", "--config", path.to_str().unwrap(), "nosuch"]));
    assert_exit(&out, 5);
    assert!(stderr(&out).contains("no account \"nosuch\""), "{}", stderr(&out));
}

#[test]
fn secrets_stay_secret_config_with_a_password_readable_by_others_exits_6() {
    let env = Env::new();
    let path = env.home.path().join("config.toml");
    std::fs::write(&path, format!("[account.a]\nssh = \"{}\"\npassword = \"hunter2\"\n", env.bed.ssh_destination()))
        .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(sshmail(&env, &["fetch", "--config", path.to_str().unwrap()]));
    assert_exit(&out, 6);
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("hunter2"));
}

#[test]
fn bad_config_syntax_exits_5_with_the_place() {
    let env = Env::new();
    let path = env.home.path().join("config.toml");
    std::fs::write(&path, "[account.a]\nssh = \"h\"\nkeep = maybe\n").unwrap();
    let out = run(sshmail(&env, &["fetch", "--config", path.to_str().unwrap()]));
    assert_exit(&out, 5);
    assert!(stderr(&out).contains("line 3"), "{}", stderr(&out));
}

#[test]
fn compression_is_negotiated_with_the_real_sshd() {
    let mut env = Env::new();
    env.add_messages((0..20).map(|i| corpus::mixed_message(i, 50)));
    let mut cmd = env.command(&["--compress"]);
    cmd.env("SSHMAIL_LOG", "russh=debug");
    let out = run(cmd);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("client_compression: ZlibOpenSSH"), "zlib@openssh.com not negotiated");
    assert_eq!(env.delivered(), env.expected());
}

#[test]
fn proxyjump_from_ssh_config() {
    let mut env = Env::new();
    env.add_messages((0..5).map(|i| corpus::mixed_message(i, 0)));
    let ssh_config = env.home.path().join("ssh_config");
    std::fs::write(
        &ssh_config,
        format!(
            "Host mailhost\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  ProxyJump {user}@127.0.0.1:{port}\n",
            port = env.bed.ssh_port,
            user = env.bed.account.name
        ),
    )
    .unwrap();
    let before = accepted_logins(&env);
    let mut cmd = env.command(&["--ssh-config", ssh_config.to_str().unwrap()]);
    // A later --ssh wins over the default one.
    cmd.args(["--ssh", "mailhost"]);
    let out = run(cmd);
    assert_exit(&out, 0);
    assert_eq!(accepted_logins(&env) - before, 2, "one login to the jump host, one through it");
    assert_eq!(env.delivered(), env.expected());
}

#[test]
fn pop3_user_pass_and_sasl_plain_both_log_in() {
    let mut env = Env::new();
    env.add_messages((0..3).map(|i| corpus::mixed_message(i, 0)));
    let out = env.run(&["--auth", "user", "--keep"]);
    assert_exit(&out, 0);
    let out = env.run(&["--auth", "plain", "--keep", "--all"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered().len(), 6, "--all fetches again");
}

#[test]
fn help_lists_options_and_exit_codes() {
    let env = Env::new();
    let out = run(sshmail(&env, &["fetch", "--help"]));
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["--ssh", "--imap", "--deliver", "--keep", "Exit codes", "10 local delivery failed"] {
        assert!(text.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn check_counts_new_mail_and_changes_nothing() {
    let mut env = Env::new();
    env.add_messages((0..7).map(|i| corpus::mixed_message(i, 0)));
    let flags_before = env.bed.inbox_flags().unwrap();

    let out = env.run(&["--check"]);
    assert_exit(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains(": 7 new of 7"), "{}", String::from_utf8_lossy(&out.stdout));
    let dest = env.bed.ssh_destination();
    let out = env.run_imap(&["--ssh", &dest, "--check"]);
    assert_exit(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains(": 7 new of 7"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(env.delivered().is_empty(), "a check delivered mail");
    assert_eq!(env.bed.server_message_count().unwrap(), 7);
    assert_eq!(env.bed.inbox_flags().unwrap(), flags_before, "a check changed flags on the server");

    // After a fetch (keeping the mail), nothing is new.
    let out = env.run(&["--keep"]);
    assert_exit(&out, 0);
    let out = env.run(&["--check"]);
    assert_exit(&out, 1);
    assert!(String::from_utf8_lossy(&out.stdout).contains(": 0 new of 7"));
}

#[test]
fn pop3_apop_logs_in() {
    let mut env = Env::new();
    env.add_messages((0..2).map(|i| corpus::mixed_message(i, 0)));
    let out = env.run(&["--auth", "apop", "--keep"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());
    // A wrong password is refused as an authentication failure.
    std::fs::write(env.home.path().join("password"), "wrong").unwrap();
    let out = env.run(&["--auth", "apop", "--keep", "--all"]);
    assert_exit(&out, 3);
}

#[test]
fn every_wait_has_a_timeout_a_hung_ssh_agent_is_given_up() {
    // An agent that accepts and never answers (one waiting for a
    // confirmation nobody gives): after the timeout, the key file is used.
    let mut env = Env::new();
    env.add_messages((0..2).map(|i| corpus::mixed_message(i, 0)));
    let socket = env.home.path().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming().take(4) {
            conns.push(c);
        }
        conns
    });
    let started = std::time::Instant::now();
    let mut cmd = env.command(&["--keep", "--timeout", "2"]);
    cmd.env("SSH_AUTH_SOCK", &socket);
    let out = common::wait_bounded(
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap(),
        std::time::Duration::from_secs(60),
    );
    let took = started.elapsed();
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("the ssh-agent did not answer"), "{}", stderr(&out));
    assert!(took < std::time::Duration::from_secs(15), "a hung agent held the fetch for {took:?}");
    assert_eq!(env.delivered().len(), 2);
    drop(held);
}

/// Issue: the mail login defaulted to the local login name, not to the SSH
/// user from `~/.ssh/config` as documented.
#[test]
fn regression_the_mail_user_defaults_to_the_ssh_user_from_ssh_config() {
    let env = Env::new();
    let state = env.home.path().join("script");
    let port = common::scripted_tcp_server("pop3", &state);
    let ssh_config = env.home.path().join("ssh_config");
    std::fs::write(
        &ssh_config,
        format!("Host mailalias\n  HostName 127.0.0.1\n  Port {}\n  User {}\n", env.bed.ssh_port, env.bed.account.name),
    )
    .unwrap();
    let mut cmd = env.fetch_command("--pop3", &env.bed.client_key);
    cmd.args(["--ssh", "mailalias", "--server", &format!("127.0.0.1:{port}"), "--password-command", "echo pw"])
        .arg("--ssh-config")
        .arg(&ssh_config);
    let out = wait_bounded(
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(),
        std::time::Duration::from_secs(60),
    );
    assert_exit(&out, 0);
    let log = std::fs::read_to_string(state.join("log")).unwrap();
    assert!(log.lines().any(|l| l == format!("USER {}", env.bed.account.name)), "{log}");
}

/// Regression: a server offers ed25519, ecdsa and rsa host keys (as a stock
/// sshd does); known_hosts, written by an older client, holds only its
/// ECDSA line, or only its RSA line (hashed). `ssh` asks for the type it
/// knows and connects; sshmail asked for ed25519 first and called the host
/// "not known". It now orders the host key algorithms by what known_hosts
/// holds for the host.
#[test]
fn regression_a_host_known_only_by_its_ecdsa_or_rsa_key_is_known() {
    let mut env = Env::with(sshmail_testbed::Options { more_host_keys: vec!["ecdsa", "rsa"], ..Default::default() });
    env.add_messages((0..3).map(|i| corpus::mixed_message(i, 0)));
    let line_of = |prefix: &str| {
        let line = env.bed.host_key_lines.iter().find(|l| l.starts_with(prefix)).cloned();
        line.unwrap_or_else(|| panic!("no {prefix} host key: {:?}", env.bed.host_key_lines))
    };
    let (ecdsa, rsa) = (line_of("ecdsa-sha2-nistp256 "), line_of("ssh-rsa "));
    let port = env.bed.ssh_port;
    std::fs::write(&env.bed.known_hosts, format!("# an older client's file\n[127.0.0.1]:{port} {ecdsa}\n")).unwrap();
    let out = env.run(&["--keep"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());

    // Only the RSA line, hashed as `ssh-keygen -H` writes it.
    std::fs::write(&env.bed.known_hosts, format!("[127.0.0.1]:{port} {rsa}\n")).unwrap();
    let hashed = Command::new("ssh-keygen").arg("-H").arg("-f").arg(&env.bed.known_hosts).output().unwrap();
    assert!(hashed.status.success(), "ssh-keygen -H: {}", String::from_utf8_lossy(&hashed.stderr));
    let text = std::fs::read_to_string(&env.bed.known_hosts).unwrap();
    assert!(text.starts_with("|1|") && text.contains(" ssh-rsa "), "{text}");
    let out = env.run(&["--keep", "--all"]);
    assert_exit(&out, 0);
    assert!(!stderr(&out).contains("not known"), "{}", stderr(&out));
}

/// `HostKeyAlias` in ssh_config: the host key is looked up (and, with
/// accept-new, recorded) under the alias, not under `[host]:port`.
#[test]
fn host_key_alias_is_the_name_known_hosts_is_searched_and_written_under() {
    let mut env = Env::new();
    env.add_messages((0..2).map(|i| corpus::mixed_message(i, 0)));
    let ssh_config = env.home.path().join("ssh_config");
    std::fs::write(
        &ssh_config,
        format!("Host mailbox\n  HostName 127.0.0.1\n  Port {}\n  HostKeyAlias mailbox-alias\n", env.bed.ssh_port),
    )
    .unwrap();
    let known = env.home.path().join("alias_known_hosts");
    std::fs::write(&known, format!("mailbox-alias {}\n", env.bed.host_key_line)).unwrap();
    let fetch = |known: &std::path::Path, extra: &[&str]| {
        fetch_through(&env, "mailbox", &ssh_config, Some(&env.bed.client_key), known, extra)
    };
    let out = fetch(&known, &["--keep"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered().len(), 2, "{}", stderr(&out));

    // accept-new records the key under the alias: a lookup by the alias
    // (`ssh-keygen -F`) finds it.
    let fresh = env.home.path().join("fresh_known_hosts");
    let out = fetch(&fresh, &["--keep", "--all", "--accept-new-host-key"]);
    assert_exit(&out, 0);
    let found = Command::new("ssh-keygen").arg("-F").arg("mailbox-alias").arg("-f").arg(&fresh).output().unwrap();
    assert!(found.status.success(), "not under the alias:\n{}", std::fs::read_to_string(&fresh).unwrap());
}

/// Regression: `IdentityAgent` in `~/.ssh/config` was ignored (only
/// `$SSH_AUTH_SOCK` was asked). An agent on a socket of its own (as
/// 1Password, KeePassXC or a per-host agent give) holds the only key: the
/// fetch logs in with it; `IdentityAgent none` asks no agent at all.
#[test]
fn regression_identity_agent_names_the_agent_socket_and_none_asks_no_agent() {
    let mut env = Env::new();
    env.add_messages((0..2).map(|i| corpus::mixed_message(i, 0)));
    let socket = env.home.path().join("agent.sock");
    let _agent = start_agent(&socket);
    let added = Command::new("ssh-add").arg(&env.bed.client_key).env("SSH_AUTH_SOCK", &socket).output().unwrap();
    assert!(added.status.success(), "ssh-add: {}", String::from_utf8_lossy(&added.stderr));
    let ssh_config = env.home.path().join("ssh_config");
    let fetch = |agent_line: &str| {
        std::fs::write(
            &ssh_config,
            format!("Host agenthost\n  HostName 127.0.0.1\n  Port {}\n  {agent_line}\n", env.bed.ssh_port),
        )
        .unwrap();
        fetch_through(&env, "agenthost", &ssh_config, None, &env.bed.known_hosts, &["--keep", "--all"])
    };
    let out = fetch(&format!("IdentityAgent {}", socket.display()));
    assert_exit(&out, 0);
    assert_eq!(env.delivered().len(), 2, "{}", stderr(&out));

    let out = fetch("IdentityAgent none");
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("tried: nothing"), "{}", stderr(&out));

    // `IdentityFile key.pub` (the private key only in the agent) with
    // IdentitiesOnly: the agent's key is chosen by it, as in ssh.
    let public = env.home.path().join("only.pub");
    std::fs::copy(env.bed.client_key.with_extension("pub"), &public).unwrap();
    let out = fetch(&format!(
        "IdentityAgent {}\n  IdentitiesOnly yes\n  IdentityFile {}",
        socket.display(),
        public.display()
    ));
    assert_exit(&out, 0);
    assert!(!stderr(&out).contains("unreadable"), "{}", stderr(&out));
}

/// Regression: `ProxyCommand` in `~/.ssh/config` was ignored and sshmail
/// went straight to `HostName:Port` — which only the proxy can reach here
/// (`HostName` is a name that resolves nowhere). The command runs with
/// `%h %p` expanded, its stdin and stdout the connection.
#[test]
fn regression_proxy_command_is_the_way_to_the_ssh_server() {
    let mut env = Env::new();
    env.add_messages((0..2).map(|i| corpus::mixed_message(i, 0)));
    let proxy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proxy.py");
    let mark = env.home.path().join("proxy-runs");
    let ssh_config = env.home.path().join("ssh_config");
    std::fs::write(
        &ssh_config,
        format!(
            "Host behind\n  HostName mail.invalid\n  Port {port}\n  HostKeyAlias [127.0.0.1]:{port}\n  \
             ProxyCommand /usr/bin/python3 {} 127.0.0.1 %p {}\n",
            proxy.display(),
            mark.display(),
            port = env.bed.ssh_port
        ),
    )
    .unwrap();
    let out = fetch_through(&env, "behind", &ssh_config, Some(&env.bed.client_key), &env.bed.known_hosts, &["--keep"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered().len(), 2, "{}", stderr(&out));
    let runs = std::fs::read_to_string(&mark).unwrap();
    assert_eq!(runs, format!("127.0.0.1 {}\n", env.bed.ssh_port), "the proxy ran once, %p expanded");
}

/// A ProxyCommand that cannot reach the server: the error says so, with
/// what the command said, and no proxy process is left behind.
#[test]
fn a_failing_proxy_command_is_named_with_what_it_said() {
    let env = Env::new();
    let ssh_config = env.home.path().join("ssh_config");
    std::fs::write(
        &ssh_config,
        "Host behind\n  HostName mail.invalid\n  ProxyCommand sh -c 'echo no route to %h >&2; exit 7'\n",
    )
    .unwrap();
    let out = fetch_through(&env, "behind", &ssh_config, Some(&env.bed.client_key), &env.bed.known_hosts, &[]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("ProxyCommand") && err.contains("no route to mail.invalid"), "{err}");
    assert!(err.contains("exit status 7"), "{err}");
}

/// A testbed whose sshd takes `lines` first, with mail in it.
fn env_with_sshd(lines: &[&str], more_host_keys: Vec<&'static str>) -> Env {
    let sshd_lines = lines.iter().map(|l| l.to_string()).collect();
    let mut env = Env::with(sshmail_testbed::Options { sshd_lines, more_host_keys, ..Default::default() });
    env.add_messages((0..2).map(|i| corpus::mixed_message(i, 0)));
    env
}

/// `Host srv` at the testbed's sshd, with `lines` under it.
fn host_srv(env: &Env, lines: &str) -> std::path::PathBuf {
    let ssh_config = env.home.path().join("ssh_config");
    std::fs::write(&ssh_config, format!("Host srv\n  HostName 127.0.0.1\n  Port {}\n{lines}", env.bed.ssh_port))
        .unwrap();
    ssh_config
}

/// Regression: servers limited to `aes128-ctr` (embedded devices, some
/// hardened lists) or to ECDH over NIST curves (FIPS setups) were refused
/// with "No common … algorithm": on CPUs with AES instructions sshmail
/// offered only three ciphers, and never the NIST key exchange. `ssh`
/// reaches both; so does sshmail.
#[test]
fn regression_servers_limited_to_aes128_ctr_or_ecdh_nistp_are_reached() {
    for line in ["Ciphers aes128-ctr", "KexAlgorithms ecdh-sha2-nistp256"] {
        let env = env_with_sshd(&[line], Vec::new());
        let out = env.run(&["--keep"]);
        assert_exit(&out, 0);
        assert_eq!(env.delivered().len(), 2, "{line}: {}", stderr(&out));
    }
}

/// An `ssh-rsa` host key signs with SHA-1: refused by default as OpenSSH
/// 8.8 and later refuse it, with the words that would change that;
/// `HostKeyAlgorithms +ssh-rsa` for the host accepts it.
#[test]
fn a_sha1_ssh_rsa_host_key_is_refused_unless_ssh_config_adds_it() {
    let env = env_with_sshd(&["HostKeyAlgorithms ssh-rsa"], vec!["rsa"]);
    let rsa = env.bed.host_key_lines.iter().find(|l| l.starts_with("ssh-rsa ")).unwrap();
    let known = env.home.path().join("rsa_known_hosts");
    std::fs::write(&known, format!("[127.0.0.1]:{} {rsa}\n", env.bed.ssh_port)).unwrap();
    let ssh_config = host_srv(&env, "");
    let out = fetch_through(&env, "srv", &ssh_config, Some(&env.bed.client_key), &known, &["--keep"]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("ssh-rsa host key signed with SHA-1") && err.contains("HostKeyAlgorithms +ssh-rsa"), "{err}");
    assert!(env.delivered().is_empty());

    let ssh_config = host_srv(&env, "  HostKeyAlgorithms +ssh-rsa\n");
    let out = fetch_through(&env, "srv", &ssh_config, Some(&env.bed.client_key), &known, &["--keep"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered().len(), 2, "{}", stderr(&out));
}

/// A key exchange with nothing in common says in words which side lacks
/// what: an algorithm the user's ssh_config leaves out is named with the
/// line that adds it; one sshmail does not implement, with what to ask the
/// server's administrator for.
#[test]
fn no_common_algorithm_says_which_side_lacks_what() {
    let env = env_with_sshd(&["Ciphers aes128-ctr"], Vec::new());
    let ssh_config = host_srv(&env, "  Ciphers aes256-ctr\n");
    let out = fetch_through(&env, "srv", &ssh_config, Some(&env.bed.client_key), &env.bed.known_hosts, &[]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("cipher (aes128-ctr)") && err.contains("`Ciphers +aes128-ctr`"), "{err}");

    let env = env_with_sshd(&["KexAlgorithms sntrup761x25519-sha512@openssh.com"], Vec::new());
    let out = env.run(&[]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("allows only the key exchange sntrup761x25519-sha512@openssh.com"), "{err}");
    assert!(err.contains("does not implement") && err.contains("curve25519-sha256"), "{err}");
    assert!(!err.contains("ext-info") && !err.contains("kex-strict"), "{err}");
}

/// Regression: `PubkeyAcceptedAlgorithms ssh-rsa` in ssh_config was
/// ignored: against a server that takes only SHA-1 RSA signatures (while
/// announcing rsa-sha2-512), sshmail signed with rsa-sha2-512 and was
/// refused. Asked for, it signs with ssh-rsa.
#[test]
fn regression_pubkey_accepted_algorithms_ssh_rsa_signs_with_sha1() {
    let env = env_with_sshd(&["PubkeyAcceptedAlgorithms ssh-rsa"], Vec::new());
    let key = env.home.path().join("id_rsa");
    let made =
        Command::new("ssh-keygen").args(["-q", "-t", "rsa", "-b", "3072", "-N", "", "-f"]).arg(&key).output().unwrap();
    assert!(made.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&made.stderr));
    let authorized = env.bed.path().join("authorized_keys");
    let mut keys = std::fs::read_to_string(&authorized).unwrap();
    keys.push_str(&std::fs::read_to_string(key.with_extension("pub")).unwrap());
    std::fs::write(&authorized, keys).unwrap();

    let ssh_config = host_srv(&env, "  PubkeyAcceptedAlgorithms ssh-rsa\n  IdentitiesOnly yes\n");
    let out = fetch_through(&env, "srv", &ssh_config, Some(&key), &env.bed.known_hosts, &["--keep"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered().len(), 2, "{}", stderr(&out));

    // Without it, the server refuses the SHA-2 signature.
    let ssh_config = host_srv(&env, "  IdentitiesOnly yes\n");
    let out = fetch_through(&env, "srv", &ssh_config, Some(&key), &env.bed.known_hosts, &["--keep", "--all"]);
    assert_exit(&out, 3);
}

/// A fresh ed25519 key pair at `dir/name` (a CA); returns the private key's
/// path and the public key's line.
fn new_ca(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let path = dir.join(name);
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(made.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&made.stderr));
    let line = std::fs::read_to_string(path.with_extension("pub")).unwrap().trim().to_string();
    (path, line)
}

/// `ssh-keygen -s CA -I sshmail-test ARGS KEY.pub`: a user certificate,
/// written as KEY-cert.pub.
fn sign_user_key(ca: &std::path::Path, key: &std::path::Path, args: &[&str]) -> std::path::PathBuf {
    let out = Command::new("ssh-keygen")
        .arg("-q")
        .arg("-s")
        .arg(ca)
        .args(["-I", "sshmail-test"])
        .args(args)
        .arg(key.with_extension("pub"))
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen -s: {}", String::from_utf8_lossy(&out.stderr));
    let mut cert = key.as_os_str().to_owned();
    cert.push("-cert.pub");
    std::path::PathBuf::from(cert)
}

/// Regression: OpenSSH user certificates were never offered, so a server
/// that trusts a user CA and no authorized_keys (`TrustedUserCAKeys`,
/// `AuthorizedKeysFile none`) refused every login with advice to authorize
/// a key. Now the certificate beside the key (`KEY-cert.pub`), the one
/// `CertificateFile` names, and one the agent holds are offered; a
/// certificate for another principal or an expired one is refused.
#[test]
fn regression_a_user_certificate_logs_in_from_beside_the_key_from_certificate_file_and_from_the_agent() {
    let cas = tempfile::tempdir().unwrap();
    let (ca, _) = new_ca(cas.path(), "user_ca");
    let lines = [format!("TrustedUserCAKeys {}", ca.with_extension("pub").display()), "AuthorizedKeysFile none".into()];
    let mut env = Env::with(sshmail_testbed::Options { sshd_lines: lines.to_vec(), ..Default::default() });
    env.add_messages((0..2).map(|i| corpus::mixed_message(i, 0)));
    let key = env.bed.client_key.clone();
    let user = sshmail_testbed::TEST_USER;

    let beside = sign_user_key(&ca, &key, &["-n", user]);
    let out = env.run(&["--keep"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered().len(), 2, "{}", stderr(&out));
    let log = std::fs::read_to_string(env.bed.sshd_log()).unwrap();
    assert!(log.contains("Accepted publickey") && log.contains("ED25519-CERT"), "{log}");

    // Named by CertificateFile, elsewhere.
    let elsewhere = env.home.path().join("my-cert.pub");
    std::fs::rename(&beside, &elsewhere).unwrap();
    let ssh_config = host_srv(&env, &format!("  CertificateFile {}\n", elsewhere.display()));
    let out = fetch_through(&env, "srv", &ssh_config, Some(&key), &env.bed.known_hosts, &["--keep", "--all"]);
    assert_exit(&out, 0);

    // Refused: for another principal; expired.
    for args in [&["-n", "someone-else"][..], &["-n", user, "-V", "20200101:20200102"]] {
        sign_user_key(&ca, &key, args);
        let out = env.run(&["--keep", "--all"]);
        assert_exit(&out, 3);
        assert!(stderr(&out).contains("with certificate"), "{args:?}: {}", stderr(&out));
    }

    // Held by an agent (ssh-add loads KEY-cert.pub with the key).
    sign_user_key(&ca, &key, &["-n", user]);
    let socket = env.home.path().join("agent.sock");
    let _agent = start_agent(&socket);
    let added = Command::new("ssh-add").arg(&key).env("SSH_AUTH_SOCK", &socket).output().unwrap();
    assert!(String::from_utf8_lossy(&added.stderr).contains("Certificate added"), "{added:?}");
    let ssh_config = host_srv(&env, &format!("  IdentityAgent {}\n", socket.display()));
    let out = fetch_through(&env, "srv", &ssh_config, None, &env.bed.known_hosts, &["--keep", "--all", "-v"]);
    assert_exit(&out, 0);
}

/// A private `ssh-agent` on `socket`, ended when dropped; returns once its
/// socket is there.
fn start_agent(socket: &std::path::Path) -> Killed {
    let agent = Command::new("ssh-agent").arg("-D").arg("-a").arg(socket).stdout(Stdio::null()).spawn().unwrap();
    let agent = Killed(agent);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !socket.exists() {
        assert!(std::time::Instant::now() < deadline, "ssh-agent did not make its socket");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    agent
}

/// Ends a child process when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Regression: a host known only by an `@cert-authority` line was "not
/// known". Now its host certificate is asked for and checked: signed by
/// that CA, for that host name, valid now, neither it nor the CA revoked;
/// each failure is refused with its reason.
#[test]
fn regression_a_host_known_by_its_cert_authority_is_known_and_bad_certificates_are_refused() {
    let cas = tempfile::tempdir().unwrap();
    let (ca, ca_line) = new_ca(cas.path(), "host_ca");
    let (_, other_ca_line) = new_ca(cas.path(), "other_ca");
    let mut env = Env::with(sshmail_testbed::Options { host_ca: Some(ca.clone()), ..Default::default() });
    env.add_messages((0..2).map(|i| corpus::mixed_message(i, 0)));
    let port = env.bed.ssh_port;
    let known = env.bed.known_hosts.clone();
    std::fs::write(&known, format!("@cert-authority [127.0.0.1]:{port} {ca_line}\n")).unwrap();
    let out = env.run(&["--keep"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered().len(), 2, "{}", stderr(&out));

    let refused = |env: &Env, known_hosts: &str, why: &str| {
        std::fs::write(&known, known_hosts).unwrap();
        let out = env.run(&["--keep", "--all"]);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(why), "want {why:?}: {}", stderr(&out));
    };
    refused(&env, &format!("@cert-authority [127.0.0.1]:{port} {other_ca_line}\n"), "which no @cert-authority line");
    refused(&env, &format!("@cert-authority [127.0.0.1]:{port} {ca_line}\n@revoked * {ca_line}\n"), "is revoked");
    // Another name (HostKeyAlias) than the certificate's principal.
    std::fs::write(&known, format!("@cert-authority mail.example {ca_line}\n")).unwrap();
    let ssh_config = host_srv(&env, "  HostKeyAlias mail.example\n");
    let out = fetch_through(&env, "srv", &ssh_config, Some(&env.bed.client_key), &known, &["--all"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("is for 127.0.0.1, not for mail.example"), "{}", stderr(&out));

    env.bed.sign_host_key(&ca, &["-V", "20200101:20200102"]).unwrap();
    refused(&env, &format!("@cert-authority [127.0.0.1]:{port} {ca_line}\n"), "expired at 2020-01-02");
}

/// UpdateHostKeys: after a login verified by the one key known_hosts
/// holds, the server's other host keys (announced by OpenSSH, then proved
/// by it) are added, hashed, and `ssh-keygen -F` finds all three; a second
/// login adds nothing. Without it (and a known_hosts of the account's
/// own, where OpenSSH does not learn by default) the file stays as it was.
#[test]
fn update_host_keys_learns_the_servers_other_host_keys() {
    let env = env_with_sshd(&[], vec!["ecdsa", "rsa"]);
    let port = env.bed.ssh_port;
    let known = env.home.path().join("learning_known_hosts");
    std::fs::write(&known, format!("[127.0.0.1]:{port} {}\n", env.bed.host_key_line)).unwrap();

    let ssh_config = host_srv(&env, "");
    let out = fetch_through(&env, "srv", &ssh_config, Some(&env.bed.client_key), &known, &["--keep"]);
    assert_exit(&out, 0);
    assert_eq!(std::fs::read_to_string(&known).unwrap().lines().count(), 1);

    let ssh_config = host_srv(&env, "  UpdateHostKeys yes\n");
    for _ in 0..2 {
        let out = fetch_through(&env, "srv", &ssh_config, Some(&env.bed.client_key), &known, &["--keep", "--all"]);
        assert_exit(&out, 0);
        let text = std::fs::read_to_string(&known).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}\n{}", stderr(&out));
    }
    let found =
        Command::new("ssh-keygen").arg("-F").arg(format!("[127.0.0.1]:{port}")).arg("-f").arg(&known).output().unwrap();
    let found = String::from_utf8_lossy(&found.stdout);
    for line in &env.bed.host_key_lines {
        let key = line.split_whitespace().nth(1).unwrap();
        assert!(found.contains(key), "{line} not learned:\n{found}");
    }
}

/// Regression: a ProxyCommand that died in the middle of a fetch left only
/// "closed the connection unexpectedly". Now the error names the
/// ProxyCommand and what it said; nothing is deleted on the server before
/// it is delivered and recorded, so the next fetch, through a proxy that
/// lives, brings the rest: every message exactly once.
#[test]
fn regression_a_proxy_command_dying_mid_fetch_is_named_and_loses_nothing() {
    let mut env = Env::new();
    env.add_messages((0..20).map(|i| corpus::small_message(i, 60_000)));
    let proxy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proxy.py");
    let mark = env.home.path().join("proxy-runs");
    let ssh_config = env.home.path().join("ssh_config");
    let write = |limit: &str| {
        std::fs::write(
            &ssh_config,
            format!(
                "Host behind\n  HostName mail.invalid\n  Port {port}\n  HostKeyAlias [127.0.0.1]:{port}\n  \
                 ProxyCommand /usr/bin/python3 {} 127.0.0.1 %p {} {limit}\n",
                proxy.display(),
                mark.display(),
                port = env.bed.ssh_port
            ),
        )
        .unwrap();
    };
    write("400000");
    let fetch = || {
        fetch_through(&env, "behind", &ssh_config, Some(&env.bed.client_key), &env.bed.known_hosts, &["--no-received"])
    };
    let out = fetch();
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("ProxyCommand") && err.contains("link lost after"), "{err}");
    let first = env.delivered().len();
    assert!(first < 20, "the proxy died before the end, yet {first} arrived");

    write("");
    let out = fetch();
    assert_exit(&out, 0);
    let delivered = env.delivered();
    assert_eq!(delivered.len(), 20, "{}", stderr(&out));
    assert!(delivered == env.expected(), "every message exactly once, byte for byte");
}
