//! `sshmail sendmail` against real peers: the testbed's sshd, and a real
//! SMTP server (aiosmtpd) listening on loopback on the SSH host's side,
//! reached through a forward.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Daemon, Env, SmtpServer, assert_exit, stderr, wait_bounded};

/// The environment, its config (one sending account relaying to `sink`)
/// and where the outbox is.
struct Sending {
    env: Env,
    sink: SmtpServer,
    config: PathBuf,
}

impl Sending {
    fn new(refuse: Option<&str>) -> Sending {
        let env = Env::new();
        let sink = SmtpServer::start(&env.home.path().join("smtp"), refuse);
        let config = env.home.path().join("config.toml");
        let account = env.pop3_toml(
            "isp",
            &format!("fetch = false\nsend.server = \"127.0.0.1:{}\"\nsend.from = [\"me@example.net\"]\n", sink.port),
        );
        Daemon::write_config(&config, &env.config_toml(&account));
        Sending { env, sink, config }
    }

    /// `sshmail ARGS --config FILE` in the env's HOME (the outbox under it).
    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.env("HOME", self.env.home.path())
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("SSHMAIL_FAULT")
            .args(args);
        c
    }

    /// `sshmail sendmail ARGS` with `message` on stdin.
    fn sendmail(&self, args: &[&str], message: &[u8]) -> Output {
        let config = self.config.display().to_string();
        let mut all = vec!["sendmail", "--config", &config];
        all.extend_from_slice(args);
        self.feed(self.command(Path::new(env!("CARGO_BIN_EXE_sshmail")), &all), message)
    }

    fn feed(&self, mut cmd: Command, message: &[u8]) -> Output {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(message).unwrap();
        wait_bounded(child, Duration::from_secs(120))
    }

    fn queue(&self, args: &[&str]) -> Output {
        let mut all = vec!["queue"];
        all.extend_from_slice(args);
        let child = self
            .command(Path::new(env!("CARGO_BIN_EXE_sshmail")), &all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_bounded(child, Duration::from_secs(120))
    }

    fn outbox(&self, sub: &str) -> usize {
        std::fs::read_dir(self.env.home.path().join(".local/share/sshmail/outbox").join(sub))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn text(m: &[u8]) -> String {
    String::from_utf8_lossy(m).to_string()
}

#[test]
fn bcc_is_never_sent_t_gives_every_recipient_one_copy_through_the_ssh_forward() {
    let s = Sending::new(None);
    let message = b"From: Me <me@example.net>\nTo: a@example.org\nCc: b@example.org\nBcc: secret@example.org\n\
                    Subject: hello\n\nline one\n.leading dot\n8-bit \xc3\xa9\n";
    let out = s.sendmail(&["-t", "-oi"], message);
    assert_exit(&out, 0);
    let got = s.sink.received();
    assert_eq!(got.len(), 1, "one transaction for three recipients: {}", stderr(&out));
    let (envelope, content) = &got[0];
    assert_eq!(envelope, "me@example.net\na@example.org\nb@example.org\nsecret@example.org\n");
    let content = text(content);
    assert!(!content.to_ascii_lowercase().contains("bcc") && !content.contains("secret"), "{content}");
    assert!(content.contains("Message-ID: <") && content.contains("Date: "), "added: {content}");
    assert!(content.ends_with("\nline one\n.leading dot\n8-bit é\n"), "the body passed unchanged: {content}");
    assert_eq!(s.outbox("new"), 0, "sent and gone from the outbox");
}

#[test]
fn git_send_email_style_recipients_on_the_command_line_with_i_keep_a_lone_dot() {
    let s = Sending::new(None);
    let out = s.sendmail(
        &["-f", "dev@example.net", "-i", "list@example.org", "cc@example.org"],
        b"Subject: [PATCH]\n\na\n.\nb\n",
    );
    assert_exit(&out, 0);
    let got = s.sink.received();
    assert_eq!(got[0].0, "dev@example.net\nlist@example.org\ncc@example.org\n");
    assert!(text(&got[0].1).ends_with("\n\na\n.\nb\n"), "{}", text(&got[0].1));
    // Without -i, a lone dot ends the message (sendmail's default).
    let out = s.sendmail(&["x@example.org"], b"Subject: s\n\nkept\n.\ndropped\n");
    assert_exit(&out, 0);
    let got = s.sink.received();
    let second = got.iter().find(|(e, _)| e.contains("x@example.org")).unwrap();
    assert!(text(&second.1).ends_with("\n\nkept\n"), "{}", text(&second.1));
}

#[test]
fn accepted_means_durable_with_sshd_down_it_is_queued_exit_0_and_a_flush_sends_it_once() {
    let mut s = Sending::new(None);
    s.env.bed.kill_sshd();
    let out = s.sendmail(&["-i", "a@example.org"], b"Subject: while down\n\nbody\n");
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("queued as"), "{}", stderr(&out));
    assert_eq!(s.outbox("new"), 1);
    let listed = text(&s.queue(&[]).stdout);
    assert!(listed.contains("queued") && listed.contains("<me@example.net> -> a@example.org"), "{listed}");
    // --no-queue: not accepted, nothing kept.
    let out = s.sendmail(&["--no-queue", "-i", "b@example.org"], b"Subject: now or never\n\nbody\n");
    assert_exit(&out, 75);
    assert_eq!(s.outbox("new"), 1);
    s.env.bed.restart_sshd().unwrap();
    let config = s.config.display().to_string();
    let out = s.queue(&["flush", "--config", &config]);
    assert_exit(&out, 0);
    assert_eq!(s.sink.received().len(), 1);
    assert_eq!(s.outbox("new"), 0);
    let out = s.queue(&["flush", "--config", &config]);
    assert_exit(&out, 0);
    assert_eq!(s.sink.received().len(), 1, "sent exactly once");
    assert!(text(&s.queue(&[]).stdout).contains("the outbox is empty"));
}

#[test]
fn a_recipient_refused_for_good_exits_69_with_the_relays_text_and_the_entry_is_kept_as_failed() {
    let s = Sending::new(Some("nobody@example.org"));
    let out = s.sendmail(&["-i", "nobody@example.org"], b"Subject: s\n\nbody\n");
    assert_exit(&out, 69);
    assert!(stderr(&out).contains("550 5.1.1 no such user"), "{}", stderr(&out));
    assert_eq!((s.outbox("new"), s.outbox("failed")), (0, 1));
    let listed = text(&s.queue(&[]).stdout);
    assert!(listed.contains("FAILED") && listed.contains("no such user"), "{listed}");
    let id = listed.split_whitespace().next().unwrap().to_string();
    assert_exit(&s.queue(&["remove", &id]), 0);
    assert_eq!(s.outbox("failed"), 0);
}

#[test]
fn installed_as_sendmail_and_mailq_by_a_symlink() {
    let s = Sending::new(None);
    let bin = s.env.home.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for name in ["sendmail", "mailq"] {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sshmail"), bin.join(name)).unwrap();
    }
    let config = s.config.display().to_string();
    let out = s.feed(
        s.command(&bin.join("sendmail"), &["--config", &config, "-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t"]),
        b"To: root@example.org\nSubject: cron\n\noutput\n",
    );
    assert_exit(&out, 0);
    let got = s.sink.received();
    assert_eq!(got.len(), 1);
    assert!(text(&got[0].1).contains("From: CronDaemon <me@example.net>"), "{}", text(&got[0].1));
    let out = wait_bounded(
        s.command(&bin.join("mailq"), &[]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(),
        Duration::from_secs(30),
    );
    assert_exit(&out, 0);
    assert!(text(&out.stdout).contains("the outbox is empty"));
}
