//! IMAP against real Dovecot: preauthenticated imapd over an SSH exec
//! channel, IMAP through a forward, through a local tunnel command, and over
//! TLS / STARTTLS.

mod common;

use common::{Env, assert_exit, code, stderr};
use sshmail_testbed::{Options, corpus};

fn ssh_dest(env: &Env) -> String {
    env.bed.ssh_destination()
}

#[test]
fn preauth_exec_autodetected_two_hundred_mixed_messages_byte_identical() {
    let mut env = Env::new();
    env.add_messages((0..200).map(|i| corpus::mixed_message(i, 50)));
    let dest = ssh_dest(&env);

    let out = env.run_imap(&["--ssh", &dest, "--keep", "-v"]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("found the IMAP server /usr/lib/dovecot/imap"), "{}", stderr(&out));
    assert!(stderr(&out).contains("preauthenticated"), "{}", stderr(&out));
    assert_eq!(env.delivered(), env.expected(), "delivered mail differs from the originals");
    assert_eq!(env.bed.server_message_count().unwrap(), 200);
    // Keep mode used EXAMINE and BODY.PEEK: nothing was flagged \Seen.
    assert!(env.bed.inbox_flags().unwrap().iter().all(|f| !f.contains('S')), "{:?}", env.bed.inbox_flags());

    let out = env.run_imap(&["--ssh", &dest, "--keep"]);
    assert_exit(&out, 1);

    // Delete mode: what was delivered before is expunged, not fetched again.
    let out = env.run_imap(&["--ssh", &dest]);
    assert_exit(&out, 1);
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
    assert_eq!(env.delivered(), env.expected());
}

#[test]
fn preauth_exec_with_explicit_imapd_and_arguments() {
    let mut env = Env::new();
    env.add_messages((0..10).map(|i| corpus::mixed_message(i, 0)));
    let imapd = format!("/usr/lib/dovecot/imap -c {}", env.bed.dovecot_config.display());
    let out = env.run_imap(&["--ssh", &ssh_dest(&env), "--imapd", &imapd]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
}

#[test]
fn missing_imapd_gives_the_remote_error() {
    let mut env = Env::new();
    env.add_messages((0..2).map(|i| corpus::mixed_message(i, 0)));
    let out = env.run_imap(&["--ssh", &ssh_dest(&env), "--imapd", "/nonexistent/imapd"]);
    assert!(matches!(code(&out), 2 | 4), "{}", stderr(&out));
    // The remote shell's own complaint is passed on.
    assert!(stderr(&out).contains("/nonexistent/imapd: not found"), "{}", stderr(&out));
    assert!(env.delivered().is_empty());
}

#[test]
fn forward_with_login() {
    let mut env = Env::new();
    env.add_messages((0..20).map(|i| corpus::mixed_message(i, 0)));
    let server = format!("127.0.0.1:{}", env.bed.imap_port);
    let mut args =
        vec!["--ssh".to_string(), ssh_dest(&env), "--via".into(), "forward".into(), "--server".into(), server];
    args.extend(env.login_args());
    args.extend(["--auth".into(), "login".into(), "--policy".into(), "seen".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.run_imap(&args);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());
    // Seen policy: still there, all flagged \Seen.
    let flags = env.bed.inbox_flags().unwrap();
    assert_eq!(flags.len(), 20);
    assert!(flags.iter().all(|f| f.contains('S')), "{flags:?}");

    std::fs::write(env.home.path().join("password"), "wrong").unwrap();
    let out = env.run_imap(&args);
    assert_exit(&out, 3);
}

#[test]
fn command_transport_runs_the_system_ssh_client() {
    let mut env = Env::new();
    env.add_messages((0..15).map(|i| corpus::mixed_message(i, 0)));
    let tunnel = env.ssh_tunnel("", "/usr/lib/dovecot/imap");
    let out = env.run_imap(&["--via", "command", "--tunnel", &tunnel]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
}

#[test]
fn tls_and_starttls_verify_the_server() {
    let mut env = Env::with(Options { tls: true, ..Options::default() });
    env.add_messages((0..6).map(|i| corpus::mixed_message(i, 0)));
    let ca = env.bed.ca_cert.display().to_string();
    let login = env.login_args();
    let login: Vec<&str> = login.iter().map(String::as_str).collect();

    // Untrusted certificate: refused, nothing fetched.
    let server = format!("localhost:{}", env.bed.imaps_port);
    let mut args = vec!["--via", "tls", "--server", &server, "--keep"];
    args.extend(&login);
    let out = env.run_imap(&args);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("TLS handshake failed"), "{}", stderr(&out));
    // It says what to do, with the certificate's fingerprint to pin.
    assert!(stderr(&out).contains("tls_ca_file") && stderr(&out).contains("tls_fingerprint = \""), "{}", stderr(&out));
    assert!(env.delivered().is_empty());

    // Trusted through the test CA.
    args.extend(["--tls-ca-file", &ca]);
    let out = env.run_imap(&args);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());

    // STARTTLS on the plain port, deleting this time. (Another server
    // address makes another ad-hoc account, with a ledger of its own: it
    // gets its own Maildir here.)
    let server = format!("localhost:{}", env.bed.imap_port);
    let other = format!("maildir:{}", env.home.path().join("Maildir2").display());
    let mut args = vec!["--via", "starttls", "--server", &server, "--tls-ca-file", &ca, "--deliver", &other];
    args.extend(&login);
    let out = env.run_imap(&args);
    assert_exit(&out, 0);
    assert_eq!(common::read_dir_contents(&env.home.path().join("Maildir2/new")), env.expected());
    assert_eq!(env.bed.server_message_count().unwrap(), 0);

    // A pinned certificate, by fingerprint, instead of a CA.
    env.add_messages((6..8).map(|i| corpus::mixed_message(i, 0)));
    let server = format!("127.0.0.1:{}", env.bed.imaps_port);
    let pin = env.bed.server_cert_sha256.clone();
    let mut args = vec!["--via", "tls", "--server", &server, "--tls-fingerprint", &pin];
    args.extend(&login);
    let out = env.run_imap(&args);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());
    let wrong = "00".repeat(32);
    let mut args = vec!["--via", "tls", "--server", &server, "--tls-fingerprint", &wrong];
    args.extend(&login);
    let out = env.run_imap(&args);
    assert_exit(&out, 2);
}

#[test]
fn two_folders_by_name_and_pattern() {
    let mut env = Env::new();
    env.add_messages((0..5).map(|i| corpus::mixed_message(i, 0)));
    for i in 5..9 {
        let m = corpus::mixed_message(i, 0);
        env.bed.add_message_to("lists.rust", &m).unwrap();
        env.originals.push(m);
    }
    let m = corpus::mixed_message(9, 0);
    env.bed.add_message_to("other", &m).unwrap();
    let out = env.run_imap(&["--ssh", &ssh_dest(&env), "--folder", "INBOX", "--folder", "lists.*"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());
    assert_eq!(env.bed.folder_message_count("lists.rust").unwrap(), 0);
    assert_eq!(env.bed.folder_message_count("other").unwrap(), 1, "an unlisted folder was touched");
}

#[test]
fn folders_into_maildirplusplus_subfolders() {
    let mut env = Env::new();
    env.add_messages((0..3).map(|i| corpus::mixed_message(i, 0)));
    let mut lists = Vec::new();
    for i in 3..6 {
        let m = corpus::mixed_message(i, 0);
        env.bed.add_message_to("lists.rust", &m).unwrap();
        lists.push(m);
    }
    lists.sort();
    let out = env.run_imap(&["--ssh", &ssh_dest(&env), "--folder", "INBOX", "--folder", "lists.*", "--subfolders"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected(), "INBOX into the Maildir itself");
    assert_eq!(common::read_dir_contents(&env.maildir().join(".lists.rust/new")), lists);
    assert!(env.maildir().join(".lists.rust/maildirfolder").exists());
}

#[test]
fn delete_removes_only_what_was_delivered() {
    let mut env = Env::new();
    env.add_messages((0..5).map(|i| corpus::mixed_message(i, 0)));
    // Too big to fetch, so it must stay on the server.
    let big = corpus::mixed_message(99, 1);
    env.bed.add_message(&big).unwrap();
    let out = env.run_imap(&["--ssh", &ssh_dest(&env), "--max-message-size", "200000"]);
    // A message left behind for its size is reported (exit 7).
    assert_exit(&out, 7);
    assert_eq!(env.delivered(), env.expected());
    assert_eq!(env.bed.server_message_count().unwrap(), 1);
}

/// Dovecot renumbers a folder (new UIDVALIDITY) when its index is lost;
/// waits for the next second, since its UIDVALIDITY is the time.
fn renumber_inbox(env: &Env) {
    common::wait_for_next_second();
    env.bed.reset_uidvalidity().unwrap();
}

/// Issue: after a UIDVALIDITY change, everything was "new" (delete mode
/// fetched it all again; keep mode refused the folder). Now what was
/// delivered is recognised by the fingerprint the ledger keeps.
#[test]
fn regression_after_a_uidvalidity_change_delivered_mail_is_recognised_not_fetched_again() {
    let mut env = Env::new();
    env.add_messages((0..5).map(|i| corpus::mixed_message(i, 0)));
    let dest = ssh_dest(&env);
    let out = env.run_imap(&["--ssh", &dest, "--keep"]);
    assert_exit(&out, 0);
    renumber_inbox(&env);
    let m = corpus::mixed_message(5, 0);
    env.bed.add_message(&m).unwrap();
    env.originals.push(m);
    let out = env.run_imap(&["--ssh", &dest, "--keep", "-v"]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("UIDVALIDITY of INBOX changed"), "{}", stderr(&out));
    assert!(stderr(&out).contains("5 messages delivered before were recognised"), "{}", stderr(&out));
    assert_eq!(env.delivered(), env.expected(), "only the new message was fetched");
    let out = env.run_imap(&["--ssh", &dest, "--keep"]);
    assert_exit(&out, 1);
    // And again, now in delete mode: only what was recognised is deleted.
    renumber_inbox(&env);
    let out = env.run_imap(&["--ssh", &dest]);
    assert_exit(&out, 1);
    assert_eq!(env.delivered(), env.expected(), "nothing new");
    assert_eq!(env.bed.server_message_count().unwrap(), 0, "what was recognised is deleted");
}

/// A ledger that recorded no fingerprints (written by an older sshmail)
/// cannot recognise anything: keep mode then refuses the folder rather
/// than deliver everything twice, until told to.
#[test]
fn uidvalidity_change_without_fingerprints_is_detected_and_nothing_is_silently_duplicated() {
    let mut env = Env::new();
    env.add_messages((0..5).map(|i| corpus::mixed_message(i, 0)));
    let dest = ssh_dest(&env);
    let out = env.run_imap(&["--ssh", &dest, "--keep"]);
    assert_exit(&out, 0);
    let mut stripped = 0;
    for e in std::fs::read_dir(env.state_dir()).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "ledger") {
            let text = std::fs::read_to_string(&path).unwrap();
            let old: String = text
                .lines()
                .map(
                    |l| if l.starts_with("D ") { l.split(' ').take(2).collect::<Vec<_>>().join(" ") } else { l.into() },
                )
                .map(|l| l + "\n")
                .collect();
            stripped += text.lines().filter(|l| l.starts_with("D ") && l.split(' ').count() == 3).count();
            std::fs::write(&path, old).unwrap();
        }
    }
    assert_eq!(stripped, 5, "every delivery was recorded with its fingerprint");
    renumber_inbox(&env);

    let out = env.run_imap(&["--ssh", &dest, "--keep"]);
    assert_exit(&out, 7);
    assert!(stderr(&out).contains("UIDVALIDITY of INBOX changed"), "{}", stderr(&out));
    assert!(stderr(&out).contains("without a fingerprint"), "{}", stderr(&out));
    assert_eq!(env.delivered(), env.expected(), "nothing fetched while UIDVALIDITY is unresolved");

    // Asked for explicitly: everything again (the documented duplicates).
    let out = env.run_imap(&["--ssh", &dest, "--keep", "--accept-uidvalidity-change"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered().len(), 10);
    // And from then on it is known again.
    let out = env.run_imap(&["--ssh", &dest, "--keep"]);
    assert_exit(&out, 1);
}

#[test]
fn idle_sees_a_message_delivered_after_it_started() {
    use std::time::{Duration, Instant};
    let mut env = Env::new();
    env.add_messages((0..3).map(|i| corpus::mixed_message(i, 0)));
    let dest = ssh_dest(&env);
    let mut child = env
        .imap_command(&["--ssh", &dest, "--idle", "-vv"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = common::StderrLog::of(&mut child);
    let wait_for = |env: &Env, n: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while env.delivered().len() < n {
            assert!(Instant::now() < deadline, "{what}: only {} of {n} delivered", env.delivered().len());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(&env, 3, "initial fetch");
    // Once the server has said go ahead to IDLE, deliver on the server.
    log.wait_until("never entered IDLE", |l| l.contains("idling"));
    let m = corpus::mixed_message(3, 0);
    env.bed.add_message(&m).unwrap();
    env.originals.push(m);
    wait_for(&env, 4, "message delivered during IDLE");
    assert!(child.try_wait().unwrap().is_none(), "sshmail --idle exited");
    child.kill().unwrap();
    child.wait().unwrap();
    let log = log.finish();
    assert_eq!(env.delivered(), env.expected());
    assert!(log.contains("IDLE"), "{log}");
}

/// Regression: mail that arrived after the first fetch but before the IDLE
/// loop selected the folder again was counted by that SELECT, so IDLE did
/// not report it, and it waited for the next change. A pause at the top of
/// the loop widens that window; the message delivered inside it must arrive.
#[test]
fn idle_misses_nothing_that_arrives_just_before_it() {
    use std::time::{Duration, Instant};
    let mut env = Env::new();
    env.add_messages((0..2).map(|i| corpus::mixed_message(i, 0)));
    let dest = ssh_dest(&env);
    let mut child = env
        .imap_command(&["--ssh", &dest, "--idle"])
        .env("SSHMAIL_PAUSE", "idle-loop:3000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let wait_for = |env: &Env, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while env.delivered().len() < n {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    };
    assert!(wait_for(&env, 2), "initial fetch");
    // Inside the pause: after the first fetch, before the loop goes on.
    let m = corpus::mixed_message(2, 0);
    env.bed.add_message(&m).unwrap();
    env.originals.push(m);
    let arrived = wait_for(&env, 3);
    let _ = child.kill();
    let _ = child.wait();
    assert!(arrived, "a message delivered just before IDLE was left waiting");
    assert_eq!(env.delivered(), env.expected());
}

/// Without UIDPLUS a plain EXPUNGE would also remove what others flagged
/// \Deleted: delivered messages are only flagged, unless the account allows
/// the plain EXPUNGE.
#[test]
fn without_uidplus_delete_only_flags_unless_expunge_all_is_allowed() {
    let mut env = Env::with(Options { imap_capability: Some("IMAP4rev1 IDLE".into()), ..Options::default() });
    env.add_messages((0..4).map(|i| corpus::mixed_message(i, 0)));
    let dest = ssh_dest(&env);
    // One config account, first without, then with allow_expunge_all: the
    // same account, so the same ledger.
    let run = |allow: bool| {
        let config = env.home.path().join(format!("c-{allow}.toml"));
        std::fs::write(
            &config,
            format!(
                "[account.u]\nssh = \"{dest}\"\nprotocol = \"imap\"\nallow_expunge_all = {allow}\nidentity = [\"{}\"]\nknown_hosts = \"{}\"\ndeliver = \"maildir:{}\"\nreceived = false\n",
                env.bed.client_key.display(),
                env.bed.known_hosts.display(),
                env.maildir().display()
            ),
        )
        .unwrap();
        let state = env.state_dir();
        std::process::Command::new(env!("CARGO_BIN_EXE_sshmail"))
            .env("HOME", env.home.path())
            .env_remove("SSH_AUTH_SOCK")
            .args(["fetch", "-v", "--config", config.to_str().unwrap(), "--state-dir", state.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = run(false);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("no UIDPLUS"), "{}", stderr(&out));
    assert_eq!(env.delivered(), env.expected());
    let flags = env.bed.inbox_flags().unwrap();
    assert_eq!(flags.len(), 4, "nothing expunged");
    assert!(flags.iter().all(|f| f.contains('T')), "all flagged \\Deleted (T): {flags:?}");

    let out = run(false);
    assert_exit(&out, 1);
    assert_eq!(env.bed.server_message_count().unwrap(), 4, "still not expunged");
    assert_eq!(env.delivered().len(), 4, "flagged messages are not fetched again");

    let out = run(true);
    assert_exit(&out, 1);
    assert_eq!(env.bed.server_message_count().unwrap(), 0, "allowed: EXPUNGE removes them");
    assert_eq!(env.delivered().len(), 4, "and nothing was fetched twice");
}

#[test]
fn durable_before_destructive_uid_expunge_removes_exactly_the_delivered_uids() {
    let mut env = Env::new();
    env.add_messages((0..5).map(|i| corpus::mixed_message(i, 0)));
    // Another client flagged this one \Deleted and has not expunged it yet.
    let foreign = corpus::mixed_message(99, 0);
    env.bed.add_flagged_message(&foreign, "T").unwrap();
    let dest = ssh_dest(&env);
    let out = env.run_imap(&["--ssh", &dest]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected(), "the foreign \\Deleted message is not fetched");
    assert_eq!(env.bed.folder_contents("INBOX").unwrap(), vec![foreign], "only the delivered UIDs are expunged");
}

/// Issue: an ad-hoc exec account's ledger was named after the SSH host
/// only, so two mailboxes on one host (two imapd commands) shared it; when
/// their UIDVALIDITY matched, a delete-mode fetch of the second expunged
/// its messages as "delivered earlier" without delivering any.
#[test]
fn regression_two_mailboxes_on_one_host_never_share_a_ledger() {
    let mut env = Env::new();
    env.add_messages((0..5).map(|i| corpus::mixed_message(i, 0)));
    env.bed.set_uidvalidity(None, 4242).unwrap();
    let second: Vec<Vec<u8>> = (10..15).map(|i| corpus::mixed_message(i, 0)).collect();
    let other = env.bed.extra_maildir("Maildir2", &second, 4242).unwrap();
    let first = format!("/usr/lib/dovecot/imap -c {}", env.bed.dovecot_config.display());
    let dest = ssh_dest(&env);
    let out = env.run_imap(&["--ssh", &dest, "--imapd", &first]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());
    let out = env.run_imap(&["--ssh", &dest, "--imapd", &other]);
    assert_exit(&out, 0);
    env.originals.extend(second);
    assert_eq!(env.delivered(), env.expected(), "the second mailbox's mail was not delivered: {}", stderr(&out));
}

/// Issue: the ledger and lock of a `--via command` account were named by
/// the whole command; a 245-character one failed with "File name too long".
#[test]
fn regression_a_long_tunnel_command_works() {
    let mut env = Env::new();
    env.add_messages((0..3).map(|i| corpus::mixed_message(i, 0)));
    let tunnel = env.ssh_tunnel(
        "-o ConnectTimeout=30 -o ServerAliveInterval=10",
        &format!("/usr/lib/dovecot/imap -c {}", env.bed.dovecot_config.display()),
    );
    assert!(tunnel.len() > 245, "{}", tunnel.len());
    let out = env.run_imap(&["--via", "command", "--tunnel", &tunnel, "--keep"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());
    // The same command line finds the same ledger.
    let out = env.run_imap(&["--via", "command", "--tunnel", &tunnel, "--keep"]);
    assert_exit(&out, 1);
}
