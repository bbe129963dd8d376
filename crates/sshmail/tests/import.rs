//! `sshmail import fetchmailrc`: the parser agrees with fetchmail's own
//! (`fetchmail --configdump`) on the manual's examples and ours, and the
//! 1998 "Secure POP via SSH" HOWTO's rc file, imported, fetches from the
//! testbed through the real sshd and Dovecot.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Env, assert_exit, stderr, wait_bounded};
use serde_json::Value;
use sshmail::import::rc::{Poll, Rc, User};
use sshmail_testbed::Options;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fetchmailrc")
}

fn rc_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rc"))
        .collect();
    v.sort();
    assert!(v.len() >= 6, "{v:?}");
    v
}

/// fetchmail's own reading of an rc file, as JSON. fetchmail insists on a
/// private rc file, so a copy is made 0600.
fn configdump(rc: &Path, dir: &Path) -> Value {
    let copy = dir.join(rc.file_name().unwrap());
    std::fs::copy(rc, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new("fetchmail")
        .arg("-f")
        .arg(&copy)
        .arg("--configdump")
        .env("HOME", dir)
        .env("LC_ALL", "C")
        .output()
        .expect("fetchmail must be installed (scripts/install-deps installs it)");
    assert!(out.status.success(), "fetchmail --configdump {}: {}", rc.display(), String::from_utf8_lossy(&out.stderr));
    // The dump is Python: run it and print the dictionary as JSON.
    let mut py = Command::new("/usr/bin/python3")
        .args(["-c", "import sys, json; g = {}; exec(sys.stdin.read(), g); print(json.dumps(g['fetchmailrc']))"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    py.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn s(v: Option<&String>) -> Value {
    v.map_or(Value::Null, |s| Value::String(s.clone()))
}

/// Our reading in fetchmail's terms, its defaults filled where the file
/// says nothing (`me`: the local user, fetchmail's default name).
fn ours_as_fetchmail(poll: &Poll, user: &User, me: &str) -> Vec<(&'static str, Value)> {
    let flag = |v: &Option<sshmail::import::rc::At<bool>>, d: bool| Value::Bool(v.as_ref().map_or(d, |a| a.value));
    let val = |v: Option<&sshmail::import::rc::At<String>>| s(v.map(|a| &a.value));
    let remote = user.remote.clone().or_else(|| user.localnames.first().cloned()).unwrap_or(me.into());
    let locals = if user.localnames.is_empty() { vec![me.to_string()] } else { user.localnames.clone() };
    let preauth = poll.auth.as_ref().is_some_and(|a| a.value == "ssh");
    let mut v = vec![
        ("pollname", Value::String(poll.name.clone())),
        ("active", Value::Bool(!poll.skip)),
        ("via", val(poll.via.as_ref())),
        ("protocol", Value::String(poll.protocol.as_ref().map_or("auto".into(), |p| p.value.clone()))),
        ("service", val(poll.service.as_ref())),
        ("auth", Value::String(poll.auth.as_ref().map_or("any".into(), |p| p.value.clone()))),
        ("timeout", Value::from(poll.timeout.as_ref().map_or(300, |t| t.value))),
        ("interval", Value::from(poll.interval.as_ref().map_or(0, |t| t.value))),
        ("plugin", val(poll.plugin.as_ref())),
        ("remote", Value::String(remote.clone())),
        ("localnames", Value::from(locals)),
        ("fetchall", flag(&user.fetchall, false)),
        ("keep", flag(&user.keep, false)),
        ("flush", flag(&user.flush, false)),
        ("idle", flag(&user.idle, false)),
        ("lmtp", flag(&user.lmtp, false)),
        ("rewrite", flag(&user.rewrite, true)),
        ("ssl", flag(&user.ssl, false)),
        ("sslcertck", flag(&user.sslcertck, true)),
        ("mda", val(user.mda.as_ref())),
        ("preconnect", val(user.preconnect.as_ref())),
        ("postconnect", val(user.postconnect.as_ref())),
        ("sslfingerprint", val(user.sslfingerprint.as_ref())),
        ("sslcertfile", val(user.sslcertfile.as_ref())),
        ("limit", Value::from(user.limit.as_ref().map_or(0, |l| l.value))),
        ("smtphunt", Value::from(user.smtphost.as_ref().map_or(vec!["localhost".to_string()], |h| h.value.clone()))),
        ("mailboxes", Value::from(user.folders.as_ref().map_or(vec![], |f| f.value.clone()))),
    ];
    // With `auth ssh` and no password, fetchmail puts a dummy one in.
    if !(preauth && user.password.is_none()) {
        v.push(("password", val(user.password.as_ref())));
    }
    v
}

/// fetchmail's dump writes booleans as 0 and 1.
fn norm(v: &Value, lowercase: bool) -> Value {
    match v {
        Value::String(s) if lowercase => Value::String(s.to_ascii_lowercase()),
        Value::Bool(b) => Value::from(u8::from(*b)),
        v => v.clone(),
    }
}

#[test]
fn the_parser_agrees_with_fetchmail_configdump() {
    let dir = tempfile::tempdir().unwrap();
    let me = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap().trim().to_string();
    let mut compared = 0;
    for rc_path in rc_files() {
        let text = std::fs::read_to_string(&rc_path).unwrap();
        let rc: Rc = sshmail::import::rc::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", rc_path.display()));
        let theirs = configdump(&rc_path, dir.path());
        let file = rc_path.file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(theirs["poll_interval"], Value::from(rc.daemon.unwrap_or(0)), "{file}: set daemon");
        // With `set syslog`, fetchmail drops the logfile.
        let syslog = rc.syslog.as_ref().is_some_and(|s| s.value);
        let logfile = if syslog { None } else { rc.logfile.as_ref().map(|l| &l.value) };
        assert_eq!(theirs["logfile"], s(logfile), "{file}: set logfile");
        assert_eq!(theirs["syslog"], Value::from(u8::from(syslog)), "{file}: set syslog");
        let servers = theirs["servers"].as_array().unwrap();
        assert_eq!(servers.len(), rc.polls.len(), "{file}: entries");
        for (poll, server) in rc.polls.iter().zip(servers) {
            let users = server["users"].as_array().unwrap();
            assert_eq!(users.len(), poll.users.len(), "{file}: users of {}", poll.name);
            for (user, theirs_user) in poll.users.iter().zip(users) {
                for (key, ours) in ours_as_fetchmail(poll, user, &me) {
                    let theirs = if server.get(key).is_some() { &server[key] } else { &theirs_user[key] };
                    let lc = matches!(key, "protocol" | "auth");
                    let (ours, theirs) = (norm(&ours, lc), norm(theirs, lc));
                    assert_eq!(ours, theirs, "{file}: poll {} user {:?}: {key}", poll.name, user.remote);
                    compared += 1;
                }
            }
        }
    }
    assert!(compared > 300, "{compared}");
}

#[test]
fn files_fetchmail_refuses_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    for (text, line) in
        [("poll a user b\nset daemon = 300\n", 2), ("poll a\n  user b password c\n  bogus\n", 3), ("user b is c\n", 1)]
    {
        let path = dir.path().join("rc");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let fm = Command::new("fetchmail")
            .arg("-f")
            .arg(&path)
            .arg("--configdump")
            .env("HOME", dir.path())
            .output()
            .unwrap();
        assert!(!fm.status.success(), "fetchmail accepts {text:?}");
        let out =
            Command::new(env!("CARGO_BIN_EXE_sshmail")).args(["import", "fetchmailrc"]).arg(&path).output().unwrap();
        assert_exit(&out, 5);
        let err = stderr(&out);
        assert!(err.contains(&format!("line {line}:")), "{text:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

fn import(rc: &Path, stdout_file: &Path) -> std::process::Output {
    let f = std::fs::File::create(stdout_file).unwrap();
    std::fs::set_permissions(stdout_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sshmail"))
        .args(["import", "fetchmailrc"])
        .arg(rc)
        .stdout(f)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_exit(&out, 0);
    out
}

#[test]
fn what_is_not_carried_over_is_one_warning_a_line_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("config.toml");
    let out = import(&fixtures().join("mixed.rc"), &toml);
    let err = stderr(&out);
    for expected in [
        "mixed.rc: line 6: postconnect: not carried over",
        "mixed.rc: line 8: flush: not carried over",
        "mixed.rc: line 8: fetchlimit 50: not carried over",
        "mixed.rc: line 8: mimedecode: not carried over",
        "mixed.rc: line 11: envelope 1 X-Original-To: not carried over",
        "mixed.rc: line 12: no sslcertck",
        "the config holds a password: the file on stdout is now readable by you alone (mode 600)",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    for secret in ["multiline", "password \"z\"", " z\n"] {
        assert!(!err.contains(secret), "{secret:?} in {err}");
    }
    assert!(err.lines().all(|l| l.starts_with("sshmail: ")), "{err}");
    // The file is private, and sshmail loads it.
    assert_eq!(std::fs::metadata(&toml).unwrap().permissions().mode() & 0o777, 0o600);
    let raw = sshmail::config::load(&toml).unwrap();
    let fwd = &raw.account["gateway"];
    assert_eq!(fwd.ssh.as_deref(), Some("gateway:2222"));
    assert_eq!(fwd.server.as_deref(), Some("127.0.0.1:143"));
    assert_eq!(fwd.identity.as_deref(), Some(&["~/.ssh/mail".to_string()][..]));
    assert_eq!(fwd.user.as_deref(), Some("remote1"));
    assert_eq!(fwd.deliver.as_deref(), Some("lmtp:/run/dovecot/lmtp"));
    assert_eq!(fwd.timeout, Some(20));
    assert_eq!(raw.daemon.interval, Some(120));
    assert_eq!(raw.account["x.example.org"].auth.as_deref(), Some("apop"));
}

/// The rc file of the 1998 "Secure POP via SSH" mini-HOWTO, imported, then
/// fetched with. `popserver` is an ssh_config alias for the testbed's sshd,
/// which lets `msingh` in with the test key; Dovecot knows msingh's
/// password. Two things the testbed's host cannot be are given on the
/// command line over the imported account: the forward's far end
/// (`popserver:110` as seen from the SSH host: there is no host of that
/// name there, and Dovecot listens on a port of its own) and the delivery
/// (fetchmail's default, SMTP to localhost:25, has no MTA here).
#[test]
fn the_howto_rc_imports_and_fetches_from_the_testbed() {
    let mut env = Env::with(Options { extra_logins: vec![("msingh".into(), "foobar".into())], ..Options::default() });
    env.add_messages((0..3).map(|i| sshmail_testbed::corpus::small_message(i, 300)));
    let toml = env.home.path().join("config.toml");
    let out = import(&fixtures().join("howto.rc"), &toml);
    assert!(!stderr(&out).contains("foobar"), "{}", stderr(&out));
    let text = std::fs::read_to_string(&toml).unwrap();
    assert!(text.contains("[account.popserver]"), "{text}");
    for line in [
        "ssh = \"msingh@popserver\"",
        "compress = true",
        "server = \"popserver:110\"",
        "via = \"forward\"",
        "user = \"msingh\"",
        "recipient = \"manish\"",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    let ssh_config = env.home.path().join("ssh_config");
    std::fs::write(&ssh_config, format!("Host popserver\n  HostName 127.0.0.1\n  Port {}\n", env.bed.ssh_port))
        .unwrap();
    let mut cmd = env.fetch_command("--pop3", &env.bed.client_key);
    cmd.arg("-c")
        .arg(&toml)
        .arg("--ssh-config")
        .arg(&ssh_config)
        .args(["--server", &format!("127.0.0.1:{}", env.bed.pop3_port)]);
    let out =
        wait_bounded(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), Duration::from_secs(120));
    assert_exit(&out, 0);
    let mut got = env.delivered();
    got.sort();
    let mut want = env.expected();
    want.sort();
    assert_eq!(got.len(), 3);
    assert_eq!(got, want);
    assert_eq!(env.bed.server_message_count().unwrap(), 0, "the HOWTO keeps nothing on the server");
    // It logged in over SSH as msingh, as the rc says.
    let log = std::fs::read_to_string(env.bed.sshd_log()).unwrap();
    assert!(log.contains("Accepted publickey for msingh"), "{log}");
}

/// Regression: the HOWTO's `.fetchmailrc` exactly as printed there (user
/// options on the lines before `poll`), and the recipe with `preconnect`
/// before `user` (whose password went to another, implicit, user), were
/// refused or misread. Both are read as fetchmail reads them put in order
/// (`--configdump` of the reordered file), with a warning that fetchmail
/// itself refuses them; the HOWTO as printed imports.
#[test]
fn regression_the_howto_rc_as_printed_and_preconnect_before_user_read_as_fetchmail_reads_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let me = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap().trim().to_string();
    for name in ["howto-as-printed", "preconnect-first"] {
        let pasted = fixtures().join(format!("pasted/{name}.rc"));
        let rc = sshmail::import::rc::parse(&std::fs::read_to_string(&pasted).unwrap()).unwrap();
        assert_eq!(rc.lenient.len(), 1, "{name}: {:?}", rc.lenient);
        let theirs = configdump(&fixtures().join(format!("pasted/{name}.reordered")), dir.path());
        let server = &theirs["servers"][0];
        let users = server["users"].as_array().unwrap();
        assert_eq!((rc.polls.len(), rc.polls[0].users.len(), users.len()), (1, 1, 1), "{name}");
        for (key, ours) in ours_as_fetchmail(&rc.polls[0], &rc.polls[0].users[0], &me) {
            let theirs = if server.get(key).is_some() { &server[key] } else { &users[0][key] };
            let lc = matches!(key, "protocol" | "auth");
            assert_eq!(norm(&ours, lc), norm(theirs, lc), "{name}: {key}");
        }
    }
    let toml = dir.path().join("config.toml");
    let out = import(&fixtures().join("pasted/howto-as-printed.rc"), &toml);
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("line 1:") && err.contains("fetchmail itself refuses"), "{err}");
    let text = std::fs::read_to_string(&toml).unwrap();
    assert!(text.lines().any(|l| l == "user = \"msingh\"") && text.contains("recipient = \"manish\""), "{text}");
}
