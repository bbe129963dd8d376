//! Shared helpers for the end-to-end tests: a testbed (real sshd and
//! Dovecot), a private HOME, and a way to run the real `sshmail` binary
//! against them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sshmail_testbed::{MAIL_PASSWORD, MAIL_USER, Options, Testbed};

/// A testbed plus a client side: HOME, Maildir, state directory.
pub struct Env {
    pub bed: Testbed,
    pub home: tempfile::TempDir,
    pub originals: Vec<Vec<u8>>,
    /// Let sshmail add its Received: line (off by default here, so that
    /// delivered messages compare byte for byte with the originals).
    pub with_received: bool,
}

impl Env {
    pub fn new() -> Env {
        Env::with(Options::default())
    }

    pub fn with(opts: Options) -> Env {
        let bed =
            Testbed::start_with(opts).expect("the testbed (sshd + Dovecot) must start; see README for the packages");
        let home = tempfile::Builder::new().prefix("sshmail-home.").tempdir().unwrap();
        std::fs::write(home.path().join("password"), MAIL_PASSWORD).unwrap();
        Env { bed, home, originals: Vec::new(), with_received: false }
    }

    /// Puts `msgs` on the server and remembers them as the expected result.
    pub fn add_messages(&mut self, msgs: impl IntoIterator<Item = Vec<u8>>) {
        for m in msgs {
            self.bed.add_message(&m).unwrap();
            self.originals.push(m);
        }
    }

    pub fn maildir(&self) -> PathBuf {
        self.home.path().join("Maildir")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.home.path().join("state")
    }

    /// The standard ad-hoc command line, plus `extra`.
    pub fn command(&self, extra: &[&str]) -> Command {
        self.command_with_identity(&self.bed.client_key, extra)
    }

    /// The standard command line with another SSH identity file.
    pub fn command_with_identity(&self, identity: &Path, extra: &[&str]) -> Command {
        let mut c = self.fetch_command("--pop3", identity);
        c.arg("--ssh").arg(self.bed.ssh_destination()).arg("--server").arg(format!("127.0.0.1:{}", self.bed.pop3_port));
        c.args(self.login_args()).args(extra);
        c
    }

    /// An IMAP command line: SSH identity and known_hosts, Maildir, state;
    /// the transport comes from `extra`.
    pub fn imap_command(&self, extra: &[&str]) -> Command {
        let mut c = self.fetch_command("--imap", &self.bed.client_key);
        c.args(extra);
        c
    }

    /// `sshmail fetch PROTOCOL` with the private HOME, the key, known_hosts,
    /// Maildir and state directory of this environment.
    fn fetch_command(&self, protocol: &str, identity: &Path) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sshmail"));
        c.env("HOME", self.home.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("SSHMAIL_LOG")
            .env_remove("SSHMAIL_FAULT")
            .stdin(Stdio::null())
            .args(["fetch", protocol])
            .arg("--identity")
            .arg(identity)
            .arg("--known-hosts")
            .arg(&self.bed.known_hosts)
            .arg("--deliver")
            .arg(format!("maildir:{}", self.maildir().display()))
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(if self.with_received { &[][..] } else { &["--no-received"][..] });
        c
    }

    /// The password options for a login.
    pub fn login_args(&self) -> Vec<String> {
        vec![
            "--user".into(),
            MAIL_USER.into(),
            "--password-command".into(),
            format!("cat '{}'", self.home.path().join("password").display()),
        ]
    }

    /// Runs an IMAP fetch to completion (bounded).
    pub fn run_imap(&self, extra: &[&str]) -> Output {
        let child = self.imap_command(extra).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        wait_bounded(child, Duration::from_secs(120))
    }

    /// Runs sshmail to completion (bounded) and returns its output.
    pub fn run(&self, extra: &[&str]) -> Output {
        let child = self.command(extra).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        wait_bounded(child, Duration::from_secs(120))
    }

    /// Every delivered message's content, sorted.
    pub fn delivered(&self) -> Vec<Vec<u8>> {
        read_dir_contents(&self.maildir().join("new"))
    }

    /// The originals, sorted, for comparison with [`Env::delivered`].
    pub fn expected(&self) -> Vec<Vec<u8>> {
        let mut v = self.originals.clone();
        v.sort();
        v
    }

    /// Files left in the Maildir's tmp/.
    pub fn tmp_files(&self) -> usize {
        std::fs::read_dir(self.maildir().join("tmp")).map(|d| d.count()).unwrap_or(0)
    }
}

/// Removes the trace fields a delivery agent put on top of a message
/// (Return-Path, Delivered-To, Received, with continuation lines).
pub fn strip_trace(m: &[u8]) -> Vec<u8> {
    let mut rest = m;
    while ["Return-Path:", "Delivered-To:", "Received:", "\t", " "].iter().any(|p| rest.starts_with(p.as_bytes())) {
        let nl = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len() - 1);
        rest = &rest[nl + 1..];
    }
    rest.to_vec()
}

pub fn read_dir_contents(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = match std::fs::read_dir(dir) {
        Ok(d) => d.map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Waits for a child with a deadline, killing it (and failing) on overrun.
pub fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("sshmail did not finish within {limit:?}; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, showing stderr when it differs.
#[track_caller]
pub fn assert_exit(out: &Output, expected: i32) {
    assert_eq!(code(out), expected, "unexpected exit code; stderr:\n{}", stderr(out));
}
