//! Shared helpers for the end-to-end tests: a testbed (real sshd and
//! Dovecot), a private HOME, and a way to run the real `sshmail` binary
//! against them.

#![allow(dead_code)]

pub mod desktop;

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

    /// Appends `msgs` to the server's mbox (as a delivery agent would) and
    /// remembers them as the expected result.
    pub fn add_mbox_messages(&mut self, msgs: impl IntoIterator<Item = Vec<u8>>) {
        for m in msgs {
            self.bed.add_mbox_message(&m).unwrap();
            self.originals.push(m);
        }
    }

    pub fn maildir(&self) -> PathBuf {
        self.home.path().join("Maildir")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.home.path().join("state")
    }

    /// The testbed's IMAP account for library-level tests (exec channel to
    /// Dovecot's imap, into the Maildir, no Received: line), to be resolved
    /// with `sshmail::config::resolve`.
    pub fn imap_account(&self) -> sshmail::config::RawAccount {
        sshmail::config::RawAccount {
            ssh: Some(self.bed.ssh_destination()),
            protocol: Some("imap".into()),
            identity: Some(vec![self.bed.client_key.display().to_string()]),
            known_hosts: Some(self.bed.known_hosts.display().to_string()),
            deliver: Some(format!("maildir:{}", self.maildir().display())),
            received: Some(false),
            ..Default::default()
        }
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
    pub fn fetch_command(&self, protocol: &str, identity: &Path) -> Command {
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

    /// The system `ssh` to the testbed as a tunnel command, with `opts`
    /// before the destination and `remote` after it.
    pub fn ssh_tunnel(&self, opts: &str, remote: &str) -> String {
        format!(
            "ssh -q -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -i {} -p {} {opts} {}@127.0.0.1 {remote}",
            self.bed.known_hosts.display(),
            self.bed.client_key.display(),
            self.bed.ssh_port,
            self.bed.account.name
        )
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

/// Waits until the wall clock's second changes: servers whose UIDVALIDITY
/// is the time it was made (Dovecot, GNU imap4d) then give a new one.
pub fn wait_for_next_second() {
    let second = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let first = second();
    while second() == first {
        std::thread::sleep(Duration::from_millis(10));
    }
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
pub fn wait_bounded(child: Child, limit: Duration) -> Output {
    wait_bounded_telling(child, limit, String::new)
}

/// [`wait_bounded`], adding `more` (another process's log) to the failure.
/// Its piped output is read as it comes, so a child that writes more than
/// a pipe holds does not wait on us.
pub fn wait_bounded_telling(mut child: Child, limit: Duration, more: impl FnOnce() -> String) -> Output {
    fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut out);
            }
            out
        })
    }
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap();
            panic!(
                "sshmail did not finish within {limit:?}; stderr:\n{}\n{}",
                String::from_utf8_lossy(&stderr),
                more()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// Runs `cmd` with `input` on its stdin (a command that stops reading
/// early is not an error), bounded; its output.
pub fn run_with_input(mut cmd: Command, input: &[u8], limit: Duration) -> Output {
    use std::io::Write as _;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let _ = child.stdin.take().unwrap().write_all(input);
    wait_bounded(child, limit)
}

/// `sshmail ARGS[0] --config CONFIG ARGS[1..]` in `home` (a daemon's
/// environment, no stdin), bounded.
pub fn sshmail_with_config(home: &Path, args: &[&str], config: &Path) -> Output {
    let mut c = Daemon::base_command(home);
    c.arg(args[0]).arg("--config").arg(config).args(&args[1..]);
    let child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_bounded(child, Duration::from_secs(120))
}

/// A command's stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
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

/// The scripted-server binary (`sshmail-testbed hostile`), built beside
/// `sshmail` by `cargo test --workspace`.
pub fn testbed_bin() -> PathBuf {
    let sshmail = PathBuf::from(env!("CARGO_BIN_EXE_sshmail"));
    let bin = sshmail.with_file_name("sshmail-testbed");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds the scripted servers",
        bin.display()
    );
    bin
}

/// A scripted, misbehaving server (see `sshmail_testbed::hostile`) behind
/// `--via command`, with its own client HOME, Maildir and state.
pub struct Hostile {
    pub dir: tempfile::TempDir,
    pub scenario: String,
}

impl Hostile {
    pub fn new(scenario: &str) -> Hostile {
        let dir = tempfile::Builder::new().prefix("sshmail-hostile.").tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("server")).unwrap();
        Hostile { dir, scenario: scenario.to_string() }
    }

    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("Maildir")
    }

    /// The tunnel command that runs the scripted server.
    pub fn tunnel(&self) -> String {
        format!("'{}' hostile {} --state '{}'", testbed_bin().display(), self.scenario, self.server_dir().display())
    }

    pub fn server_dir(&self) -> PathBuf {
        self.dir.path().join("server")
    }

    /// `sshmail fetch --pop3|--imap --via command` against the script, plus `extra`.
    pub fn command(&self, extra: &[&str]) -> Command {
        let protocol = if self.scenario.starts_with("imap") { "--imap" } else { "--pop3" };
        let mut c = Command::new(env!("CARGO_BIN_EXE_sshmail"));
        c.env("HOME", self.dir.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("SSHMAIL_LOG")
            .env_remove("SSHMAIL_FAULT")
            .stdin(Stdio::null())
            .args(["fetch", protocol, "--via", "command", "--tunnel"])
            .arg(self.tunnel())
            .arg("--deliver")
            .arg(format!("maildir:{}", self.maildir().display()))
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .args(["--no-received", "--user", "u", "--password-command", "echo pw"])
            .args(extra);
        c
    }

    /// Runs a fetch to completion (bounded).
    pub fn run(&self, extra: &[&str]) -> Output {
        let child = self.command(extra).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        wait_bounded(child, Duration::from_secs(120))
    }

    /// Every command the script received, one per line, over all runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.server_dir().join("log")).unwrap_or_default()
    }

    /// What the client deleted on the script's server.
    pub fn deleted(&self) -> Vec<String> {
        std::fs::read_to_string(self.server_dir().join("deleted"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn delivered(&self) -> Vec<Vec<u8>> {
        read_dir_contents(&self.maildir().join("new"))
    }

    pub fn tmp_files(&self) -> usize {
        std::fs::read_dir(self.maildir().join("tmp")).map(|d| d.count()).unwrap_or(0)
    }
}

/// Peak resident memory of a process so far (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs the command, sampling its peak RSS until it exits (bounded by
/// `limit`); returns its output and the peak in KiB. Its output is read as
/// it comes, so a chatty process never blocks on a full pipe.
pub fn run_sampled(mut cmd: Command, limit: Duration) -> (Output, u64) {
    use std::io::Read as _;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let mut peak = 0;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(k) = peak_rss_kib(pid) {
            peak = peak.max(k);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = err.join().unwrap();
            panic!("sshmail did not finish within {limit:?}; stderr:\n{}", String::from_utf8_lossy(&err));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    (Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }, peak)
}

/// Serves each connection to a fresh loopback port with a scripted
/// scenario (`sshmail-testbed hostile`); returns the port.
pub fn scripted_tcp_server(scenario: &str, state: &Path) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (state, scenario) = (state.to_path_buf(), scenario.to_string());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let mut child = Command::new(testbed_bin())
                .args(["hostile", &scenario, "--state"])
                .arg(&state)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let (mut to_child, mut from_child) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
            let (mut rx, mut tx) = (conn.try_clone().unwrap(), conn);
            std::thread::spawn(move || pump(&mut rx, &mut to_child));
            std::thread::spawn(move || {
                pump(&mut from_child, &mut tx);
                let _ = child.wait();
            });
        }
    });
    port
}

/// Copies until EOF, a read at a time, flushing each.
fn pump(from: &mut impl std::io::Read, to: &mut impl std::io::Write) {
    let mut buf = [0u8; 8192];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if to.write_all(&buf[..n]).and_then(|_| to.flush()).is_err() {
            return;
        }
    }
}

/// A running child's stderr, read as it comes.
pub struct StderrLog {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl StderrLog {
    /// Takes `child`'s piped stderr.
    pub fn of(child: &mut Child) -> StderrLog {
        use std::io::BufRead as _;
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (t, err) = (text.clone(), child.stderr.take().expect("piped stderr"));
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                t.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        StderrLog { text, reader: Some(reader) }
    }

    /// What it said so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Waits (bounded) until `ok` holds, failing with `what` and the log.
    pub fn wait_until(&self, what: &str, ok: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok(&self.text()) {
            assert!(Instant::now() < deadline, "{what}; log:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything, once the child has exited.
    pub fn finish(mut self) -> String {
        self.join()
    }

    /// Everything, once the child has exited (the reader is joined).
    pub fn join(&mut self) -> String {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.text()
    }
}

/// A real SMTP server (aiosmtpd, `tests/fixtures/smtp_sink.py`) saving each
/// message it accepts in `dir`.
pub struct SmtpServer {
    child: Child,
    pub dir: PathBuf,
    pub port: u16,
}

impl SmtpServer {
    pub fn start(dir: &Path, refuse: Option<&str>) -> SmtpServer {
        SmtpServer::start_with(dir, refuse, &[])
    }

    /// The server with settings in its environment (SMTP_TLS_CERT,
    /// SMTP_TLS_KEY, SMTP_AUTH: see `smtp_sink.py`).
    pub fn start_with(dir: &Path, refuse: Option<&str>, settings: &[(&str, &str)]) -> SmtpServer {
        // A free port can be taken by a test running beside this one
        // before the server binds it: then another.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            if let Some(server) = SmtpServer::try_start(dir, refuse, port, settings) {
                return server;
            }
        }
        panic!("the SMTP server exited at every start; is python3-aiosmtpd installed?");
    }

    /// The server requiring STARTTLS with the testbed's certificate (an
    /// `Env` made with `Options { tls: true, .. }`) and AUTH as `login`
    /// (`USER:PASSWORD`).
    pub fn start_tls_auth(env: &Env, login: &str) -> SmtpServer {
        let pki = env.bed.ca_cert.parent().expect("the testbed made a CA (Options::tls)").to_path_buf();
        let (cert, key) = (pki.join("server.pem").display().to_string(), pki.join("server.key").display().to_string());
        let settings = [("SMTP_TLS_CERT", cert.as_str()), ("SMTP_TLS_KEY", key.as_str()), ("SMTP_AUTH", login)];
        SmtpServer::start_with(&env.home.path().join("smtp"), None, &settings)
    }

    /// The server on a given port (25, for what is reached as "the SMTP
    /// server" of a host).
    pub fn start_on(dir: &Path, refuse: Option<&str>, port: u16) -> SmtpServer {
        SmtpServer::try_start(dir, refuse, port, &[])
            .unwrap_or_else(|| panic!("the SMTP server exited; is port {port} free and python3-aiosmtpd installed?"))
    }

    /// The server on `port`; None if it exited before it was ready.
    fn try_start(dir: &Path, refuse: Option<&str>, port: u16, settings: &[(&str, &str)]) -> Option<SmtpServer> {
        std::fs::create_dir_all(dir).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smtp_sink.py");
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(script).arg(port.to_string()).arg(dir).stdin(Stdio::null());
        cmd.envs(settings.iter().copied());
        if let Some(r) = refuse {
            cmd.arg(r);
        }
        let mut child = cmd.spawn().expect("python3 with aiosmtpd (python3-aiosmtpd) must start");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dir.join("ready").exists() {
            if child.try_wait().unwrap().is_some() {
                return None;
            }
            assert!(Instant::now() < deadline, "the SMTP server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(SmtpServer { child, dir: dir.to_path_buf(), port })
    }

    /// (envelope, content with CRLF turned into LF), in the order the
    /// server accepted them.
    pub fn received_in_order(&self) -> Vec<(String, Vec<u8>)> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| {
                let content = std::fs::read(p).unwrap();
                let lf = String::from_utf8_lossy(&content).replace("\r\n", "\n").into_bytes();
                (std::fs::read_to_string(p.with_extension("env")).unwrap(), lf)
            })
            .collect()
    }

    /// (envelope, content with CRLF turned into LF), sorted by content.
    pub fn received(&self) -> Vec<(String, Vec<u8>)> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(&self.dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "eml") {
                let content = std::fs::read(&p).unwrap();
                let mut lf = Vec::with_capacity(content.len());
                let mut i = 0;
                while i < content.len() {
                    if content[i] == b'\r' && content.get(i + 1) == Some(&b'\n') {
                        i += 1;
                        continue;
                    }
                    lf.push(content[i]);
                    i += 1;
                }
                v.push((std::fs::read_to_string(p.with_extension("env")).unwrap(), lf));
            }
        }
        v.sort_by(|a, b| a.1.cmp(&b.1));
        v
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Env {
    /// An `[account.NAME]` table for the testbed's IMAP account (exec
    /// channel to Dovecot's imap, into the Maildir, no Received: line), plus
    /// the `extra` lines.
    pub fn imap_toml(&self, name: &str, extra: &str) -> String {
        format!(
            "[account.{name}]\nssh = \"{}\"\nprotocol = \"imap\"\nidentity = [\"{}\"]\nknown_hosts = \"{}\"\n\
             deliver = \"maildir:{}\"\nreceived = false\n{extra}\n",
            self.bed.ssh_destination(),
            self.bed.client_key.display(),
            self.bed.known_hosts.display(),
            self.maildir().display()
        )
    }

    /// A known_hosts file at `name` under HOME that names the testbed's
    /// sshd with another key (a fresh one): a changed host key.
    pub fn changed_known_hosts(&self, name: &str) -> PathBuf {
        let other = self.home.path().join(format!("{name}_other_key"));
        sshmail_testbed::generate_key(&other).unwrap();
        let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
        let mut fields = other_pub.split_whitespace();
        let kh = self.home.path().join(name);
        std::fs::write(
            &kh,
            format!(
                "# old key\n[127.0.0.1]:{} {} {}\n",
                self.bed.ssh_port,
                fields.next().unwrap(),
                fields.next().unwrap()
            ),
        )
        .unwrap();
        kh
    }

    /// A whole config file: the env's state directory, then `accounts`.
    pub fn config_toml(&self, accounts: &str) -> String {
        format!("state_dir = \"{}\"\n{accounts}", self.state_dir().display())
    }

    /// An `[account.NAME]` table for the testbed's POP3 account through a
    /// forward, plus the `extra` lines.
    pub fn pop3_toml(&self, name: &str, extra: &str) -> String {
        format!(
            "[account.{name}]\nssh = \"{}\"\nserver = \"127.0.0.1:{}\"\nuser = \"{}\"\n\
             password_command = \"cat '{}'\"\nidentity = [\"{}\"]\nknown_hosts = \"{}\"\n\
             deliver = \"maildir:{}\"\nreceived = false\n{extra}\n",
            self.bed.ssh_destination(),
            self.bed.pop3_port,
            MAIL_USER,
            self.home.path().join("password").display(),
            self.bed.client_key.display(),
            self.bed.known_hosts.display(),
            self.maildir().display()
        )
    }
}

/// A running `sshmail daemon` with its own config file, runtime directory
/// and log.
pub struct Daemon {
    pub child: Child,
    pub log: StderrLog,
    pub config: PathBuf,
    home: PathBuf,
}

impl Daemon {
    /// Writes `accounts` (TOML tables; the state directory is the env's) as
    /// the config and starts the daemon; returns once its control socket
    /// answers.
    pub fn start(env: &Env, accounts: &str) -> Daemon {
        let config = env.home.path().join("config.toml");
        Daemon::write_config(&config, &env.config_toml(accounts));
        let d = Daemon::spawn(env.home.path(), &config, &[]);
        d.wait_answering();
        d
    }

    /// Starts a daemon on an existing config file, with `env` set.
    pub fn spawn(home: &Path, config: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Daemon::base_command(home);
        cmd.args(["daemon", "--config"]).arg(config).envs(env.iter().copied());
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let log = StderrLog::of(&mut child);
        Daemon { child, log, config: config.to_path_buf(), home: home.to_path_buf() }
    }

    /// Starts a daemon on `config` under `prlimit --nofile=LIMIT` (soft:hard).
    pub fn spawn_with_nofile(home: &Path, config: &Path, limit: &str) -> Daemon {
        let plain = Daemon::base_command(home);
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={limit}")).arg("--").arg(plain.get_program());
        for (k, v) in plain.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.args(["daemon", "--config"]).arg(config).stdin(Stdio::null());
        Daemon::spawn_command(home, config, cmd)
    }

    /// Starts `cmd`, a daemon of `config` under `home`, its stderr the
    /// log; ended when dropped.
    pub fn spawn_command(home: &Path, config: &Path, mut cmd: Command) -> Daemon {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let log = StderrLog::of(&mut child);
        Daemon { child, log, config: config.to_path_buf(), home: home.to_path_buf() }
    }

    /// The config file, private (it may name a password command).
    pub fn write_config(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// `sshmail` with a daemon's environment (HOME, XDG_RUNTIME_DIR; the
    /// outbox and the cache under HOME), no
    /// agent, nothing from the caller's logging, fault or systemd settings.
    pub fn base_command(home: &Path) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sshmail"));
        c.env("HOME", home)
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("SSHMAIL_LOG")
            .env_remove("SSHMAIL_FAULT")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdin(Stdio::null());
        c
    }

    /// `sshmail ARGS --config FILE` against this daemon.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Daemon::base_command(&self.home);
        c.args(args).arg("--config").arg(&self.config);
        c
    }

    /// Runs `sshmail ARGS` against this daemon (bounded).
    pub fn ctl(&self, args: &[&str]) -> Output {
        let child = self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        wait_bounded_telling(child, Duration::from_secs(120), || format!("the daemon's log:\n{}", self.log.text()))
    }

    /// The daemon's status.
    pub fn status(&self) -> sshmail::control::status::Status {
        let out = self.ctl(&["status", "--json"]);
        assert_exit(&out, 0);
        serde_json::from_slice(&out.stdout).expect("status --json is the Status")
    }

    /// Waits (bounded) until the control socket answers.
    pub fn wait_answering(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.ctl(&["status"]).status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "the daemon never answered; log:\n{}", self.log.text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded by `limit`) until `ok` holds for the status.
    pub fn wait_status(&self, what: &str, limit: Duration, ok: impl Fn(&sshmail::control::status::Status) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.status();
            if ok(&s) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}; status: {s:#?}\nlog:\n{}", self.log.text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal` (TERM, HUP, USR1, KILL…).
    pub fn signal(&self, signal: &str) {
        sshmail_testbed::signal(self.child.id(), signal);
    }

    /// Waits (bounded by `limit`) for the daemon to exit; its exit code and
    /// log.
    pub fn wait_exit(mut self, limit: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), self.log.join());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the daemon did not exit within {limit:?}; log:\n{}", self.log.join());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it (SIGTERM) and checks it exits 0 within 5 s; its log.
    pub fn stop(self) -> String {
        self.signal("TERM");
        let (code, log) = self.wait_exit(Duration::from_secs(5));
        assert_eq!(code, Some(0), "the daemon's exit; log:\n{log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits (bounded) for `child` to exit; its exit code (None: killed by a
/// signal). Kills it and fails past the limit.
pub fn wait_bounded_status(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A 1 MiB tmpfs, unmounted on drop. Needs root (CI runs as root).
pub struct SmallDisk(pub PathBuf);

impl SmallDisk {
    pub fn mount(path: &Path) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(path).output().unwrap();
        assert!(out.status.success(), "mounting a small tmpfs needs root: {}", String::from_utf8_lossy(&out.stderr));
        SmallDisk(path.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// tmux on a private socket: a terminal program driven as a person would,
/// its screen read back.
pub struct Tmux {
    pub socket: PathBuf,
}

impl Tmux {
    pub fn run(&self, args: &[&str]) -> Output {
        let child = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tmux must be installed (scripts/install-deps)");
        wait_bounded(child, Duration::from_secs(20))
    }

    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "mail"]).stdout).to_string()
    }

    /// Starts `command` in a 150×40 session named `mail`.
    pub fn start(&self, command: &str) {
        let out = self.run(&["new-session", "-d", "-s", "mail", "-x", "150", "-y", "40", command]);
        assert!(out.status.success(), "tmux: {}", stderr(&out));
    }

    /// Types `text` and Enter.
    pub fn type_line(&self, text: &str) {
        let out = self.run(&["send-keys", "-t", "mail", "-l", text]);
        assert!(out.status.success(), "tmux: {}", stderr(&out));
        self.run(&["send-keys", "-t", "mail", "Enter"]);
    }

    /// Waits (bounded by `limit`) until the screen satisfies `ok`; the
    /// panic names `what` and shows the screen.
    pub fn wait_until(&self, what: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "gave up waiting for {what}; screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}
