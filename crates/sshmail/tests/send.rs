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
        Sending::on(env, sink, "")
    }

    /// `env` relaying to `sink`, with `extra` lines in the account.
    fn on(env: Env, sink: SmtpServer, extra: &str) -> Sending {
        let config = env.home.path().join("config.toml");
        let s = Sending { env, sink, config };
        s.configure(extra);
        s
    }

    /// An account whose relay is the far side's sendmail (`send.via =
    /// "exec"`): msmtp there, handing to the SMTP sink.
    fn through_msmtp() -> Sending {
        let env = Env::new();
        let sink = SmtpServer::start(&env.home.path().join("smtp"), None);
        let config = env.home.path().join("config.toml");
        let account = env.pop3_toml(
            "isp",
            &format!(
                "fetch = false\nsend.via = \"exec\"\n\
                 send.command = [\"/usr/bin/msmtp\", \"--host=127.0.0.1\", \"--port={}\", \"--auth=off\", \"--tls=off\"]\n",
                sink.port
            ),
        );
        Daemon::write_config(&config, &env.config_toml(&account));
        Sending { env, sink, config }
    }

    /// Rewrites the config, with `extra` lines in the account.
    fn configure(&self, extra: &str) {
        let account = self.env.pop3_toml(
            "isp",
            &format!(
                "fetch = false\nsend.server = \"127.0.0.1:{}\"\nsend.from = [\"me@example.net\"]\n{extra}",
                self.sink.port
            ),
        );
        Daemon::write_config(&self.config, &self.env.config_toml(&account));
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

    fn feed(&self, cmd: Command, message: &[u8]) -> Output {
        // A sendmail that gives up early (a full disk) stops reading.
        common::run_with_input(cmd, message, Duration::from_secs(120))
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
    // Without -i, and not at a terminal, a lone dot with more input after it
    // is data (nothing is lost); a final one still ends the message.
    let out = s.sendmail(&["x@example.org"], b"Subject: s\n\nkept\n.\nalso kept\n");
    assert_exit(&out, 0);
    let out = s.sendmail(&["y@example.org"], b"Subject: s\n\nkept\n.\n");
    assert_exit(&out, 0);
    let got = s.sink.received();
    let second = got.iter().find(|(e, _)| e.contains("x@example.org")).unwrap();
    assert!(text(&second.1).ends_with("\n\nkept\n.\nalso kept\n"), "{}", text(&second.1));
    let third = got.iter().find(|(e, _)| e.contains("y@example.org")).unwrap();
    assert!(text(&third.1).ends_with("\n\nkept\n"), "{}", text(&third.1));
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
fn starttls_then_auth_to_a_relay_that_requires_both_and_its_certificate_checked() {
    let env = Env::with(sshmail_testbed::Options { tls: true, ..sshmail_testbed::Options::default() });
    let sink = SmtpServer::start_tls_auth(&env, "me:s3cret word");
    let login = "send.user = \"me\"\nsend.password_command = [\"printf\", \"%s\", \"s3cret word\"]\n";
    // The relay's certificate is from a CA nobody told us of: not sent.
    let s = Sending::on(env, sink, login);
    let out = s.sendmail(&["-i", "a@example.org"], b"Subject: secured\n\nbody\n");
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("queued as") && err.contains("not trusted") && err.contains("send.tls_ca_file"), "{err}");
    assert!(!err.contains("s3cret"), "no secret in messages: {err}");
    assert_eq!(s.sink.received().len(), 0);
    // Told of the CA: STARTTLS, then AUTH, then the message.
    let ca = format!("send.tls_ca_file = \"{}\"\n", s.env.bed.ca_cert.display());
    s.configure(&format!("{login}{ca}"));
    let config = s.config.display().to_string();
    let out = s.queue(&["flush", "--config", &config]);
    assert_exit(&out, 0);
    let got = s.sink.received();
    assert_eq!(got.len(), 1, "{}", text(&out.stdout));
    let meta = std::fs::read_to_string(s.sink.dir.join("000001.meta")).unwrap();
    assert_eq!(meta, "tls=yes auth=me\n");
    // A wrong password: the relay's refusal, and the message stays queued.
    s.configure(&format!("{}{ca}", login.replace("s3cret word", "wrong")));
    let out = s.sendmail(&["-i", "b@example.org"], b"Subject: refused login\n\nbody\n");
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("queued as") && err.contains("refused the login of me") && err.contains("535"), "{err}");
    assert_eq!((s.sink.received().len(), s.outbox("new")), (1, 1));
    // send.starttls = "never" to a relay that requires it: refused, kept.
    s.configure(&format!("{login}send.starttls = \"never\"\n"));
    let out = s.queue(&["flush", "--config", &config]);
    assert_exit(&out, 75);
    assert!(text(&out.stdout).contains("still queued"), "{}", text(&out.stdout));
    assert_eq!((s.sink.received().len(), s.outbox("new")), (1, 1));
}

/// The messages in the Maildir's new/, by name.
fn notices(s: &Sending) -> Vec<String> {
    let dir = s.env.maildir().join("new");
    let mut names: Vec<_> = std::fs::read_dir(&dir).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    names.sort();
    names.iter().map(|p| text(&std::fs::read(p).unwrap())).collect()
}

#[test]
fn given_up_later_refused_or_expired_the_user_gets_one_notice_in_the_mailbox_and_nothing_goes_out() {
    let mut s = Sending::new(Some("nobody@example.org"));
    s.env.bed.kill_sshd();
    for (rcpt, subject) in [("nobody@example.org", "to nobody"), ("old@example.org", "too old")] {
        let out = s.sendmail(&["-i", rcpt], format!("Subject: {subject}\n\nbody\n").as_bytes());
        assert_exit(&out, 0);
    }
    // The second was queued six days ago.
    let dir = s.env.home.path().join(".local/share/sshmail/outbox/new");
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let content = std::fs::read(&path).unwrap();
        if text(&content).contains("too old") {
            let cut = content.iter().position(|&b| b == b'\n').unwrap();
            let mut envelope: serde_json::Value = serde_json::from_slice(&content[..cut]).unwrap();
            envelope["queued"] = (envelope["queued"].as_u64().unwrap() - 6 * 86_400).into();
            let mut rewritten = serde_json::to_vec(&envelope).unwrap();
            rewritten.extend_from_slice(&content[cut..]);
            std::fs::write(&path, rewritten).unwrap();
        }
    }
    // sshd still down: the old one is given up (5 days), the other kept
    // (75 says something is still queued).
    let config = s.config.display().to_string();
    let out = s.queue(&["flush", "--config", &config]);
    assert_exit(&out, 75);
    assert!(text(&out.stdout).contains("not sent within 5 days"), "{}", text(&out.stdout));
    assert_eq!((s.outbox("new"), s.outbox("failed")), (1, 1));
    let got = notices(&s);
    assert_eq!(got.len(), 1, "one notice");
    let n = &got[0];
    assert!(n.contains("Subject: Undelivered mail: not sent to old@example.org\n"), "{n}");
    assert!(n.contains("Auto-Submitted: auto-replied\n") && n.contains("From: Mail Delivery System <MAILER-DAEMON@"));
    assert!(n.contains("not sent within 5 days") && n.contains("Content-Type: message/rfc822\n"), "{n}");
    assert!(n.contains("\nSubject: too old\n") && n.trim_end().ends_with("--"), "the original attached: {n}");
    // Back up: the relay refuses the other for good; its own notice.
    s.env.bed.restart_sshd().unwrap();
    let out = s.queue(&["flush", "--config", &config]);
    assert_exit(&out, 69);
    assert_eq!((s.outbox("new"), s.outbox("failed")), (0, 2));
    let got = notices(&s);
    assert_eq!(got.len(), 2, "a notice each");
    let n = got.iter().find(|n| n.contains("not sent to nobody@example.org")).expect("the refusal's notice");
    assert!(n.contains("550 5.1.1 no such user") && n.contains("\nSubject: to nobody\n"), "{n}");
    // Nothing more: no notice twice, and no notice went out as mail.
    let out = s.queue(&["flush", "--config", &config]);
    assert_exit(&out, 0);
    assert_eq!(notices(&s).len(), 2);
    assert_eq!(s.sink.received().len(), 0, "notices stay local");
    let listed = text(&s.queue(&[]).stdout);
    assert!(listed.matches("FAILED").count() == 2 && listed.contains("notice delivered"), "{listed}");
}

#[test]
fn a_refusal_the_daemon_meets_on_a_retry_gives_one_notice_and_none_for_a_refusal_sendmail_reported() {
    let mut s = Sending::new(Some("nobody@example.org"));
    let daemon = Daemon::spawn(s.env.home.path(), &s.config, &[]);
    daemon.wait_answering();
    let config = s.config.display().to_string();
    let through_daemon = |s: &Sending, rcpt: &str| {
        let mut c = s.command(Path::new(env!("CARGO_BIN_EXE_sshmail")), &["sendmail", "--config", &config, "-i", rcpt]);
        c.env("XDG_RUNTIME_DIR", s.env.home.path().join("run"));
        s.feed(c, format!("Subject: to {rcpt}\n\nbody\n").as_bytes())
    };
    // Refused while sendmail waits: exit 69 says it; no notice.
    assert_exit(&through_daemon(&s, "nobody@example.org"), 69);
    // Refused on the daemon's retry: the notice.
    s.env.bed.kill_sshd();
    assert_exit(&through_daemon(&s, "nobody@example.org"), 0);
    s.env.bed.restart_sshd().unwrap();
    daemon.ctl(&["poll"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while notices(&s).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no notice: {}", daemon.log.text());
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.ctl(&["poll"]);
    let listed = text(&s.queue(&[]).stdout);
    daemon.stop();
    assert_eq!(notices(&s).len(), 1, "one notice, for the retry's refusal only");
    assert!(notices(&s)[0].contains("550 5.1.1 no such user"), "{}", notices(&s)[0]);
    assert_eq!((s.outbox("new"), s.outbox("failed")), (0, 2));
    assert_eq!(listed.matches("notice delivered").count(), 1, "{listed}");
    assert_eq!(s.sink.received().len(), 0);
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

#[test]
fn exec_mode_runs_the_far_sides_sendmail_msmtp_with_the_envelope_and_the_message_intact() {
    let s = Sending::through_msmtp();
    let out = s.sendmail(
        &["-f", "me@example.net", "-i", "a@example.org", "b@example.org"],
        b"Subject: exec\n\nvia msmtp\n.\n",
    );
    assert_exit(&out, 0);
    let got = s.sink.received();
    assert_eq!(got.len(), 1, "{}", stderr(&out));
    assert_eq!(got[0].0, "me@example.net\na@example.org\nb@example.org\n");
    assert!(text(&got[0].1).ends_with("\n\nvia msmtp\n.\n"), "{}", text(&got[0].1));
    assert_eq!(s.outbox("new"), 0);
}

#[test]
fn git_send_email_of_a_five_patch_series_arrives_whole_in_order_with_gits_envelope_recipients() {
    let s = Sending::new(None);
    let repo = s.env.home.path().join("repo");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("HOME", s.env.home.path())
            .env("GIT_AUTHOR_NAME", "Dev")
            .env("GIT_AUTHOR_EMAIL", "dev@example.net")
            .env("GIT_COMMITTER_NAME", "Dev")
            .env("GIT_COMMITTER_EMAIL", "dev@example.net")
            .stdin(Stdio::null())
            .output()
            .expect("git must be installed (scripts/install-deps)");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    };
    std::fs::create_dir(&repo).unwrap();
    git(&["init", "-q"]);
    for i in 1..=6 {
        std::fs::write(repo.join("file.txt"), format!("version {i}\n")).unwrap();
        git(&["add", "file.txt"]);
        git(&["commit", "-q", "-m", &format!("change {i}")]);
    }
    git(&["format-patch", "-q", "-5", "-o", "out"]);
    let sendmail_cmd = format!(
        "env HOME={} {} sendmail --config {}",
        s.env.home.path().display(),
        env!("CARGO_BIN_EXE_sshmail"),
        s.config.display()
    );
    let out = git(&[
        "-c",
        &format!("sendemail.sendmailCmd={sendmail_cmd}"),
        "send-email",
        "--quiet",
        "--confirm=never",
        "--suppress-cc=all",
        "--no-validate",
        "--from=Dev <dev@example.net>",
        "--to=list@example.org",
        "--bcc=archive@example.org",
        "out",
    ]);
    let got = s.sink.received_in_order();
    assert_eq!(got.len(), 5, "{}", String::from_utf8_lossy(&out.stderr));
    for (i, (envelope, content)) in got.iter().enumerate() {
        let content = text(content);
        assert!(content.contains(&format!("] change {}", i + 2)), "patch {i} out of order: {content}");
        assert!(envelope.ends_with("\nlist@example.org\narchive@example.org\n"), "{envelope}");
        assert!(!content.contains("archive@example.org"), "the Bcc was in the header");
    }
    assert_eq!(s.outbox("new"), 0);
}

#[test]
fn mutt_in_batch_mode_and_mailx_send_through_sshmail_sendmail() {
    let s = Sending::new(None);
    let home = s.env.home.path();
    let sendmail = format!("{} sendmail --config {}", env!("CARGO_BIN_EXE_sshmail"), s.config.display());
    let muttrc = home.join("muttrc");
    std::fs::write(
        &muttrc,
        format!("set sendmail=\"{sendmail}\"\nset from=me@example.net\nset use_from=yes\nset record=\"\"\n"),
    )
    .unwrap();
    let mut mutt = Command::new("mutt");
    mutt.args(["-n", "-F"])
        .arg(&muttrc)
        .args(["-s", "from mutt", "-c", "cc@example.org", "-b", "bcc@example.org", "--", "to@example.org"])
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME");
    let out = s.feed(mutt, b"written in mutt\n");
    assert_exit(&out, 0);
    let got = s.sink.received();
    assert_eq!(got.len(), 1, "{}", stderr(&out));
    assert!(
        got[0].0.contains("to@example.org")
            && got[0].0.contains("cc@example.org")
            && got[0].0.contains("bcc@example.org")
    );
    assert!(!text(&got[0].1).contains("bcc@example.org"), "{}", text(&got[0].1));
    // s-nail's mailx, recipients on argv.
    let mut mailx = Command::new("s-nail");
    mailx
        .args(["-n", "-S", &format!("mta={}", env!("CARGO_BIN_EXE_sshmail")), "-S"])
        .arg(format!("mta-arguments=sendmail --config {}", s.config.display()))
        .args(["-s", "from mailx", "-r", "me@example.net", "x@example.org"])
        .env("HOME", home);
    let out = s.feed(mailx, b"written in mailx\n");
    assert_exit(&out, 0);
    let got = s.sink.received();
    assert_eq!(got.len(), 2, "{}", stderr(&out));
    assert!(got.iter().any(|(e, c)| e.contains("x@example.org") && text(c).contains("written in mailx")));
}

#[test]
fn a_hundred_concurrent_sendmails_each_deliver_their_message_exactly_once() {
    let s = Sending::new(None);
    let config = s.config.display().to_string();
    let children: Vec<_> = (0..100)
        .map(|i| {
            let mut c = s.command(Path::new(env!("CARGO_BIN_EXE_sshmail")), &["sendmail", "--config", &config, "-i"]);
            c.arg(format!("r{i}@example.org"));
            let mut child = c.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
            child.stdin.take().unwrap().write_all(format!("Subject: n{i}\n\nmessage {i}\n").as_bytes()).unwrap();
            child
        })
        .collect();
    for child in children {
        let out = wait_bounded(child, Duration::from_secs(180));
        assert_exit(&out, 0);
    }
    // Some may have been left queued (a busy relay): a flush finishes them.
    if s.outbox("new") > 0 {
        assert_exit(&s.queue(&["flush", "--config", &config]), 0);
    }
    let got = s.sink.received();
    let mut seen: Vec<String> = got.iter().map(|(e, _)| e.lines().nth(1).unwrap().to_string()).collect();
    seen.sort();
    let mut want: Vec<String> = (0..100).map(|i| format!("r{i}@example.org")).collect();
    want.sort();
    assert_eq!(seen, want, "each of the hundred exactly once");
}

/// kill -9 at each step of queuing and relaying. Before the entry is in
/// `new/` the caller saw no exit 0 (nothing was accepted); from there on
/// nothing is lost; a duplicate happens only where the relay has the
/// message and the outbox does not yet know (after the end of DATA, before
/// the entry is removed), as documented.
#[test]
fn killed_at_every_step_of_queuing_and_relaying_nothing_accepted_is_lost() {
    // At relay-data-sent the end of DATA may or may not have left this
    // machine when the process died: one copy or two.
    for (point, queued_after, copies_after_flush) in [
        ("outbox-written", 0, 0..=0),
        ("outbox-renamed", 1, 1..=1),
        ("relay-data-sent", 1, 1..=2),
        ("relay-accepted", 1, 2..=2),
    ] {
        let s = Sending::new(None);
        let config = s.config.display().to_string();
        let mut cmd = s.command(Path::new(env!("CARGO_BIN_EXE_sshmail")), &["sendmail", "--config", &config, "-i"]);
        cmd.arg("a@example.org").env("SSHMAIL_FAULT", point);
        let out = s.feed(cmd, b"Subject: crash\n\nbody\n");
        assert_eq!(out.status.code(), None, "{point}: killed, so the caller saw no exit 0: {}", stderr(&out));
        assert_eq!(s.outbox("new"), queued_after, "{point}: what is queued");
        let out = s.queue(&["flush", "--config", &config]);
        assert_exit(&out, 0);
        let copies = s.sink.received().len();
        assert!(copies_after_flush.contains(&copies), "{point}: {copies} copies at the relay");
        assert_eq!(s.outbox("new"), 0, "{point}: the outbox is empty after the flush");
    }
}

fn ssh_logins(env: &Env) -> usize {
    std::fs::read_to_string(env.bed.sshd_log()).unwrap_or_default().matches("Accepted publickey").count()
}

#[test]
fn with_a_daemon_running_sendmail_hands_it_the_entry_one_ssh_connection_for_all_and_a_poll_retries_at_once() {
    let mut s = Sending::new(None);
    // A Daemon is stopped (killed) when dropped, should an assertion fail.
    let daemon = Daemon::spawn(s.env.home.path(), &s.config, &[]);
    daemon.wait_answering();
    let log = &daemon.log;
    let with_daemon = |s: &Sending, args: &[&str], message: &[u8]| {
        let config = s.config.display().to_string();
        let mut all = vec!["sendmail", "--config", config.as_str()];
        all.extend_from_slice(args);
        let mut c = s.command(Path::new(env!("CARGO_BIN_EXE_sshmail")), &all);
        c.env("XDG_RUNTIME_DIR", s.env.home.path().join("run"));
        s.feed(c, message)
    };
    let before = ssh_logins(&s.env);
    for i in 0..3 {
        let out = with_daemon(&s, &["-i", &format!("r{i}@example.org")], b"Subject: via the daemon\n\nbody\n");
        assert_exit(&out, 0);
    }
    assert_eq!(s.sink.received().len(), 3, "log:\n{}", log.text());
    assert_eq!(ssh_logins(&s.env) - before, 1, "three messages, one SSH connection (the daemon's)");
    assert_eq!(log.text().matches("relayed for sendmail: Done").count(), 3, "{}", log.text());
    // The link goes down: queued; back up, a poll sends it at once.
    s.env.bed.kill_sshd();
    let out = with_daemon(&s, &["-i", "late@example.org"], b"Subject: later\n\nbody\n");
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("queued as"), "{}", stderr(&out));
    s.env.bed.restart_sshd().unwrap();
    daemon.ctl(&["poll"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while s.sink.received().len() < 4 {
        assert!(std::time::Instant::now() < deadline, "the daemon did not send it after the poll: {}", log.text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.outbox("new"), 0);
    daemon.stop();
    assert_eq!(s.sink.received().len(), 4, "each once");
}

#[test]
fn the_daemon_retries_at_once_when_a_connection_comes_back_not_after_its_back_off() {
    let env = Env::new();
    let sink = SmtpServer::start(&env.home.path().join("smtp"), None);
    let s = Sending::on(env, sink, "");
    // An IMAP account that fetches (its IDLE notices the link and comes
    // back) and sends, through the same SSH host.
    let account = s
        .env
        .imap_toml("uni", &format!("send.server = \"127.0.0.1:{}\"\nsend.from = [\"me@example.net\"]\n", s.sink.port));
    Daemon::write_config(&s.config, &s.env.config_toml(&account));
    let mut s = s;
    let daemon = Daemon::spawn(s.env.home.path(), &s.config, &[]);
    daemon.wait_answering();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while ssh_logins(&s.env) == 0 {
        assert!(std::time::Instant::now() < deadline, "the daemon never logged in: {}", daemon.log.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    s.env.bed.kill_sshd();
    let config = s.config.display().to_string();
    let mut c =
        s.command(Path::new(env!("CARGO_BIN_EXE_sshmail")), &["sendmail", "--config", &config, "-i", "a@example.org"]);
    c.env("XDG_RUNTIME_DIR", s.env.home.path().join("run"));
    let out = s.feed(c, b"Subject: sent when the link is back\n\nbody\n");
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("queued as"), "{}", stderr(&out));
    let listed = text(&s.queue(&[]).stdout);
    assert!(listed.contains("1 tries, next try"), "its back-off is a minute: {listed}");
    let back = std::time::Instant::now();
    s.env.bed.restart_sshd().unwrap();
    // The IDLE task reconnects within seconds; the entry's own next try is
    // a minute away, and the outbox's check every 30 s only takes due ones.
    while s.sink.received().is_empty() {
        assert!(back.elapsed() < Duration::from_secs(45), "not sent on the reconnect: {}", daemon.log.text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(daemon.log.text().contains("a connection came back: trying it now"), "{}", daemon.log.text());
    assert_eq!(s.outbox("new"), 0);
    daemon.stop();
    assert_eq!(s.sink.received().len(), 1);
}

#[test]
fn accepted_means_durable_a_full_disk_exits_75_and_claims_nothing() {
    let s = Sending::new(None);
    let disk = common::SmallDisk::mount(&s.env.home.path().join("small"));
    let config = s.config.display().to_string();
    let mut cmd =
        s.command(Path::new(env!("CARGO_BIN_EXE_sshmail")), &["sendmail", "--config", &config, "-i", "a@example.org"]);
    cmd.env("XDG_DATA_HOME", &disk.0);
    let mut big = b"Subject: too big for the disk\n\n".to_vec();
    big.extend(std::iter::repeat_n(b"x".repeat(99).into_iter().chain([b'\n']), 20_000).flatten());
    let out = s.feed(cmd, &big);
    assert_exit(&out, 75);
    assert!(stderr(&out).contains("not accepted") && stderr(&out).contains("No space left"), "{}", stderr(&out));
    let outbox = disk.0.join("sshmail/outbox");
    for sub in ["new", "tmp"] {
        assert_eq!(std::fs::read_dir(outbox.join(sub)).unwrap().count(), 0, "{sub}/ holds nothing");
    }
    assert!(s.sink.received().is_empty());
}

/// Regression: with several sending accounts, `-f ADDR` that no account
/// lists was refused (exit 78) although the `From:` address was listed.
/// The choice is `-f`, then `From:`, then `send.default = true`; with none
/// of them the refusal names what was tried.
#[test]
fn regression_the_sending_account_is_chosen_by_f_then_from_then_send_default() {
    let s = Sending::new(None);
    // Two accounts; only `work` reaches the relay, so the one chosen shows.
    let accounts = |default: &str| {
        s.env.pop3_toml(
            "work",
            &format!(
                "fetch = false\nsend.server = \"127.0.0.1:{}\"\nsend.from = [\"me@work.example\"]\n{default}",
                s.sink.port
            ),
        ) + &s
            .env
            .pop3_toml("home", "fetch = false\nsend.server = \"127.0.0.1:1\"\nsend.from = [\"me@home.example\"]\n")
    };
    Daemon::write_config(&s.config, &s.env.config_toml(&accounts("")));
    // -f lists no account; From: does.
    let out = s.sendmail(&["-f", "alias@elsewhere.example", "-i", "a@example.org"], b"From: me@work.example\n\nx\n");
    assert_exit(&out, 0);
    assert_eq!(s.sink.received().len(), 1, "sent by work: {}", stderr(&out));
    // -f wins over From:.
    let out = s.sendmail(&["-f", "me@home.example", "-i", "b@example.org"], b"From: me@work.example\n\nx\n");
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("queued as"), "home was chosen, its relay is down: {}", stderr(&out));
    assert_eq!(s.sink.received().len(), 1);
    // Neither listed: refused, naming both, until one account is the default.
    let out = s.sendmail(&["-f", "x@elsewhere.example", "-i", "c@example.org"], b"From: y@elsewhere.example\n\nx\n");
    assert_exit(&out, 78);
    let err = stderr(&out);
    assert!(err.contains("x@elsewhere.example") && err.contains("y@elsewhere.example"), "{err}");
    assert!(err.contains("send.default = true"), "{err}");
    Daemon::write_config(&s.config, &s.env.config_toml(&accounts("send.default = true\n")));
    let out = s.sendmail(&["-f", "x@elsewhere.example", "-i", "c@example.org"], b"From: y@elsewhere.example\n\nx\n");
    assert_exit(&out, 0);
    assert_eq!(s.sink.received().len(), 2, "sent by the default, work: {}", stderr(&out));
}

/// Regression: 10 000 recipients in exec mode went on one remote command
/// line, which the far side could not run ("Argument list too long"), and
/// that was taken as a refusal of all of them (exit 69, a 700 KB error).
/// They go in batches, each a run of the far side's sendmail (msmtp).
#[test]
fn regression_ten_thousand_recipients_in_exec_mode_go_in_batches_and_each_gets_it_once() {
    let s = Sending::through_msmtp();
    let rcpts: Vec<String> = (0..10_000).map(|i| format!("reader.{i}@example.org")).collect();
    let mut args = vec!["-f", "me@example.net", "-i"];
    args.extend(rcpts.iter().map(String::as_str));
    let out = s.sendmail(&args, b"Subject: to many\n\nbody\n");
    assert_exit(&out, 0);
    assert!(stderr(&out).len() < 2000, "a short error, if any: {} bytes", stderr(&out).len());
    let got = s.sink.received();
    assert!(got.len() > 1, "one run per batch: {}", got.len());
    let mut reached: Vec<String> = got.iter().flat_map(|(e, _)| e.lines().skip(1).map(str::to_string)).collect();
    reached.sort();
    let mut want = rcpts.clone();
    want.sort();
    assert_eq!(reached, want, "every recipient exactly once");
    assert!(got.iter().all(|(_, m)| text(m).ends_with("\n\nbody\n")));
    assert_eq!(s.outbox("new"), 0);
}

/// Regression: a message whose header had no final newline got the added
/// `From:` glued onto its last field (`X-A: bFrom: …`).
#[test]
fn regression_a_header_without_a_final_newline_keeps_its_fields_apart() {
    let s = Sending::new(None);
    let out = s.sendmail(&["-i", "a@example.org"], b"Subject: s\nX-A: b");
    assert_exit(&out, 0);
    let got = s.sink.received();
    assert_eq!(got.len(), 1, "{}", stderr(&out));
    assert!(text(&got[0].1).starts_with("Subject: s\nX-A: b\nFrom: me@example.net\n"), "{}", text(&got[0].1));
}
