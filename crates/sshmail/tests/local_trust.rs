//! Nothing shared is trusted: a state directory another local user made, a
//! link planted in ours, a umask that would open it, and a runtime
//! directory that is not there. The fetches run against a scripted POP3
//! server behind `--via command` (no network needed for what is tested);
//! the other user is `nobody`.

mod common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Hostile, assert_exit, stderr, wait_bounded};

fn run(cmd: &mut Command) -> Output {
    wait_bounded(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), Duration::from_secs(120))
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o777
}

/// Regression: under umask 000 a new state directory was made 0777.
#[test]
fn regression_a_new_state_directory_is_private_whatever_the_umask() {
    let h = Hostile::new("pop3");
    let inner = h.command(&[]);
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "umask 000; exec \"$0\" \"$@\""]).arg(inner.get_program()).args(inner.get_args());
    cmd.envs(inner.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
    let out = run(&mut cmd);
    assert_exit(&out, 0);
    let state = h.dir.path().join("state");
    assert_eq!(mode(&state), 0o700, "the state directory");
    for f in std::fs::read_dir(&state).unwrap().flatten() {
        if f.file_type().unwrap().is_file() {
            assert_eq!(mode(&f.path()), 0o600, "{}", f.path().display());
        }
    }
}

/// Regression: a state directory another user made first was used as it
/// was (its owner could delete, replace or link our ledgers).
#[test]
fn regression_a_state_directory_another_user_owns_is_refused_and_nothing_is_fetched() {
    let h = Hostile::new("pop3");
    let state = h.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), None).unwrap();
    let out = run(&mut h.command(&[]));
    assert_exit(&out, 6);
    let err = stderr(&out);
    assert!(err.contains(&state.display().to_string()) && err.contains("owned by uid 65534"), "{err}");
    assert!(h.delivered().is_empty() && h.deleted().is_empty(), "nothing fetched, nothing deleted");
    // Ours but writable by others: refused too.
    std::os::unix::fs::chown(&state, Some(rustix::process::geteuid().as_raw()), None).unwrap();
    let out = run(&mut h.command(&[]));
    assert_exit(&out, 6);
    assert!(stderr(&out).contains("has mode 777"), "{}", stderr(&out));
}

/// Regression: a symbolic link planted as the ledger (`NAME.ledger ->
/// ~/.profile`) had ledger lines, with server-chosen UIDLs, appended to its
/// target.
#[test]
fn regression_a_ledger_planted_as_a_symbolic_link_is_not_written_through() {
    let h = Hostile::new("pop3");
    assert_exit(&run(&mut h.command(&[])), 0);
    let state = h.dir.path().join("state");
    let ledger = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "ledger"))
        .expect("the ledger");
    let target = h.dir.path().join("profile");
    std::fs::write(&target, "# mine\n").unwrap();
    std::fs::remove_file(&ledger).unwrap();
    std::os::unix::fs::symlink(&target, &ledger).unwrap();
    let out = run(&mut h.command(&[]));
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains(&ledger.display().to_string()), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "# mine\n", "written through the link");
}

/// Regression: `$XDG_RUNTIME_DIR` in a `serve.*` value made every command
/// fail where it is unset (a cron `sshmail fetch`); only the daemon, which
/// listens there, needs it. Run as `nobody`, who has no /run/user/UID.
#[test]
fn regression_a_runtime_dir_endpoint_without_a_runtime_dir_fails_only_the_daemon() {
    assert!(!std::path::Path::new("/run/user/65534").exists(), "the premise: nobody has no runtime directory");
    let h = Hostile::new("pop3");
    let home = h.dir.path();
    let config = home.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[account.cron]\nprotocol = \"pop3\"\nvia = \"command\"\ntunnel = \"{}\"\n\
             user = \"u\"\npassword_command = \"echo pw\"\ndeliver = \"maildir:{}\"\nreceived = false\n\
             serve.imap = \"unix:$XDG_RUNTIME_DIR/sshmail/cron.imap\"\n",
            home.join("state").display(),
            h.tunnel(),
            h.maildir().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    Command::new("chown").args(["-R", "nobody"]).arg(home).status().unwrap();
    let as_nobody = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", env!("CARGO_BIN_EXE_sshmail")])
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_clear()
            .env("HOME", home)
            .env("TMPDIR", home)
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null());
        run(&mut c)
    };
    let out = as_nobody(&["fetch"]);
    assert_exit(&out, 0);
    assert_eq!(h.delivered().len(), 3);
    let out = as_nobody(&["daemon"]);
    assert_exit(&out, 5);
    assert!(
        stderr(&out).contains("serve.imap") && stderr(&out).contains("XDG_RUNTIME_DIR is not set"),
        "{}",
        stderr(&out)
    );
}
