//! Private OpenSSH and Dovecot servers for sshmail's tests and benchmarks.
//!
//! A [`Testbed`] lives in one temporary directory and holds:
//!
//! - an `sshd` with its own config and host key, public-key login only, on an
//!   ephemeral 127.0.0.1 port, with a fresh client key and a `known_hosts`
//!   file that trusts its host key;
//! - a Dovecot with POP3 and IMAP on ephemeral loopback ports, passwd-file
//!   authentication and a Maildir in the same directory.
//!
//! Both run in the foreground as children of the test process and are ended
//! by PID when the testbed is dropped. Nothing here skips: if a server cannot
//! start, the constructor returns an error that says why, and the test fails.
//!
//! Run as root, the mail account and the SSH login belong to a dedicated
//! unprivileged user ([`TEST_USER`], created on first use), because Dovecot
//! refuses to access mail as root. Run as anyone else, everything is that
//! user's.

#![forbid(unsafe_code)]

pub mod hostile;
pub mod other_sshd;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The unprivileged account used for mail and SSH logins when running as root.
pub const TEST_USER: &str = "sshmail-test";
/// The POP3/IMAP login name in Dovecot's passwd-file.
pub const MAIL_USER: &str = "mailuser";
/// Its password.
pub const MAIL_PASSWORD: &str = "correct horse battery staple";
/// The login at GNU mailutils' pop3d and imap4d (a virtual domain user).
pub const MAILUTILS_USER: &str = "mailuser@testbed";

/// Options for starting a testbed.
#[derive(Debug, Clone)]
pub struct Options {
    /// `AllowTcpForwarding` in sshd_config.
    pub allow_tcp_forwarding: bool,
    /// Dovecot with TLS: IMAPS on its own port, STARTTLS on the IMAP port,
    /// a certificate for `localhost` from a fresh test CA.
    pub tls: bool,
    /// Dovecot's LMTP on its own port; `mailuser+NAME` delivers into the
    /// folder NAME (created on demand).
    pub lmtp: bool,
    /// Replaces the IMAP capabilities Dovecot announces (`imap_capability`),
    /// to test clients against servers that lack an extension.
    pub imap_capability: Option<String>,
    /// GNU mailutils' pop3d and imap4d as daemons on loopback ports of their
    /// own (a second POP3 and IMAP implementation), with a login
    /// ([`MAILUTILS_USER`], [`MAIL_PASSWORD`]) and a Maildir of their own
    /// ([`Testbed::mailutils_maildir`]).
    pub mailutils: bool,
    /// sshd's `MaxSessions`; None keeps OpenSSH's default (10).
    pub max_sessions: Option<u32>,
    /// More logins to the same mailbox, as (name, password): each is a
    /// Dovecot login and an SSH login with the client key. Run as root, the
    /// Unix account sshd needs is created when missing (no home, no
    /// password); otherwise starting fails.
    pub extra_logins: Vec<(String, String)>,
    /// sshd's host keys besides ed25519 (`ecdsa`, `rsa`), offered after
    /// it, as a stock sshd offers them; their lines are in
    /// [`Testbed::host_key_lines`].
    pub more_host_keys: Vec<&'static str>,
    /// Lines put first in sshd_config: sshd keeps the first value it
    /// reads, so these win over the testbed's own (`UsePAM yes`,
    /// `Ciphers aes128-ctr`, `AuthenticationMethods …`).
    pub sshd_lines: Vec<String>,
    /// The `auth` lines of a PAM service of the testbed's own
    /// (`/etc/pam.d/sshmail-test-PORT`, removed when the testbed ends; needs
    /// root): sshd runs under that name, so PAM reads that file and the
    /// system's `sshd` service is untouched. `account` and `session` are
    /// `pam_permit`, and so is a last, optional `auth` line (for
    /// `pam_setcred`). Empty: no PAM service.
    pub pam: Vec<String>,
    /// A host CA's private key: the ed25519 host key is signed by it
    /// (`ssh-keygen -s CA -h -n 127.0.0.1`) and sshd shows the certificate
    /// ([`Testbed::sign_host_key`] signs it again).
    pub host_ca: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            allow_tcp_forwarding: true,
            tls: false,
            lmtp: false,
            imap_capability: None,
            mailutils: false,
            max_sessions: None,
            extra_logins: Vec::new(),
            more_host_keys: Vec::new(),
            sshd_lines: Vec::new(),
            pam: Vec::new(),
            host_ca: None,
        }
    }
}

/// A Unix account: name, uid, gid, home.
#[derive(Debug, Clone)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Numeric group id.
    pub gid: u32,
}

/// Running sshd and Dovecot in one temporary directory.
pub struct Testbed {
    dir: tempfile::TempDir,
    /// The account that logs in over SSH and owns the mail.
    pub account: Account,
    /// sshd's port on 127.0.0.1.
    pub ssh_port: u16,
    /// Dovecot's POP3 port on 127.0.0.1.
    pub pop3_port: u16,
    /// Dovecot's IMAP port on 127.0.0.1.
    pub imap_port: u16,
    /// Dovecot's IMAPS port (0 without TLS).
    pub imaps_port: u16,
    /// Dovecot's LMTP port (0 without LMTP).
    pub lmtp_port: u16,
    /// The test CA certificate (PEM), with TLS.
    pub ca_cert: PathBuf,
    /// SHA-256 of the server certificate's DER, hex, with TLS.
    pub server_cert_sha256: String,
    /// The client's private key (ed25519, no passphrase).
    pub client_key: PathBuf,
    /// A known_hosts file that trusts the sshd's host key as `[127.0.0.1]:PORT`.
    pub known_hosts: PathBuf,
    /// The host key line (`ssh-ed25519 AAAA...`).
    pub host_key_line: String,
    /// Every host key's line (`TYPE AAAA...`), ed25519 first.
    pub host_key_lines: Vec<String>,
    /// The Dovecot config file (for `imap -c`).
    pub dovecot_config: PathBuf,
    /// GNU mailutils' pop3d port (0 unless started with `mailutils`).
    pub mailutils_pop3_port: u16,
    /// GNU mailutils' imap4d port (0 unless started with `mailutils`).
    pub mailutils_imap_port: u16,
    sshd: Option<Child>,
    /// How sshd is run: `/usr/sbin/sshd`, or a link to it named as the
    /// PAM service.
    sshd_program: PathBuf,
    /// The PAM service file written for this testbed.
    pam_service: Option<PathBuf>,
    dovecot: Option<Child>,
    pop3d: Option<Child>,
    imap4d: Option<Child>,
    seq: u32,
}

impl Testbed {
    /// Starts both servers with default options.
    pub fn start() -> Result<Testbed> {
        Self::start_with(Options::default())
    }

    /// Starts both servers. A port picked free can be taken by someone else
    /// before the server binds it (tests run in parallel and make outgoing
    /// connections, which take ports from the same range): then it starts
    /// again on fresh ports, a few times.
    pub fn start_with(opts: Options) -> Result<Testbed> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(&opts) {
                Err(e) if attempt < 4 && format!("{e:#}").contains("Address already in use") => continue,
                other => return other,
            }
        }
    }

    fn start_once(opts: &Options) -> Result<Testbed> {
        let account = test_account()?;
        let dir = tempfile::Builder::new().prefix("sshmail-testbed.").tempdir()?;
        // The mail user must reach its Maildir below this directory.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let mut bed = Testbed {
            dir,
            account,
            ssh_port: 0,
            pop3_port: 0,
            imap_port: 0,
            imaps_port: 0,
            lmtp_port: 0,
            ca_cert: PathBuf::new(),
            server_cert_sha256: String::new(),
            client_key: PathBuf::new(),
            known_hosts: PathBuf::new(),
            host_key_line: String::new(),
            host_key_lines: Vec::new(),
            dovecot_config: PathBuf::new(),
            mailutils_pop3_port: 0,
            mailutils_imap_port: 0,
            sshd: None,
            sshd_program: PathBuf::new(),
            pam_service: None,
            dovecot: None,
            pop3d: None,
            imap4d: None,
            seq: 0,
        };
        bed.start_dovecot(opts)?;
        if opts.mailutils {
            bed.start_mailutils()?;
        }
        bed.start_sshd(opts)?;
        Ok(bed)
    }

    /// The temporary directory holding everything.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The mail account's Maildir on the server side.
    pub fn server_maildir(&self) -> PathBuf {
        self.path().join("home/Maildir")
    }

    /// The remote command that runs GNU mailutils' imap4d preauthenticated
    /// (`--inetd --preauth`), a second IMAP implementation beside Dovecot:
    /// on the test account's Maildir, or with `mbox` on [`Testbed::server_mbox`].
    pub fn imap4d_command(&self, mbox: bool) -> Result<String> {
        let imap4d = find_program("imap4d", &["/usr/sbin/imap4d"])?;
        let (name, pattern, kind) = if mbox {
            let path = self.server_mbox();
            if !path.exists() {
                fs::write(&path, b"")?;
                chown(&path, &self.account)?;
            }
            ("imap4d-mbox.conf", path, "mbox")
        } else {
            ("imap4d-maildir.conf", self.server_maildir(), "maildir")
        };
        let conf = self.path().join(name);
        fs::write(
            &conf,
            format!("mailbox {{\n  mailbox-pattern \"{}\";\n  mailbox-type {kind};\n}};\n", pattern.display()),
        )?;
        Ok(format!("{} --inetd --preauth --config-file={}", imap4d.display(), conf.display()))
    }

    /// A second Maildir for the same account, `home/NAME`, with a message
    /// in it per `messages`; returns the remote command that runs Dovecot's
    /// imap preauthenticated on it and its UIDVALIDITY set to `validity`
    /// (two mailboxes on one host, as when one is a copy of the other).
    pub fn extra_maildir(&mut self, name: &str, messages: &[Vec<u8>], validity: u32) -> Result<String> {
        let md = self.path().join("home").join(name);
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(md.join(sub))?;
        }
        for m in messages {
            self.seq += 1;
            let file = format!("{}.M{}P{}.testbed", 1_700_000_000 + self.seq, self.seq, std::process::id());
            fs::write(md.join("new").join(&file), m)?;
        }
        chown_tree(&md, &self.account)?;
        let location = format!("mail_location=maildir:{}", md.display());
        self.set_uidvalidity(Some(&location), validity)?;
        Ok(format!("/usr/lib/dovecot/imap -c {} -o {location}", self.dovecot_config.display()))
    }

    /// Gives the INBOX (of the default Maildir, or of `location`) this
    /// UIDVALIDITY, with doveadm.
    pub fn set_uidvalidity(&self, location: Option<&str>, validity: u32) -> Result<()> {
        let doveadm = find_program("doveadm", &["/usr/bin/doveadm"])?;
        let mut cmd = Command::new(doveadm);
        cmd.arg("-c").arg(&self.dovecot_config);
        if let Some(l) = location {
            cmd.arg("-o").arg(l);
        }
        let out = cmd
            .args(["mailbox", "update", "-u", MAIL_USER, "--uid-validity", &validity.to_string(), "INBOX"])
            .output()?;
        if !out.status.success() {
            bail!("doveadm mailbox update failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Delivers a message into `folder` (`INBOX` or a name, created on
    /// demand) the way a mail server does, through Dovecot itself
    /// (`doveadm save`), so that its IDLE sessions hear of it as they would
    /// of mail from its LDA or LMTP.
    pub fn deliver_by_dovecot(&self, folder: &str, content: &[u8]) -> Result<()> {
        use std::io::Write as _;
        let doveadm = find_program("doveadm", &["/usr/bin/doveadm"])?;
        if folder != "INBOX" {
            let out = Command::new(&doveadm)
                .arg("-c")
                .arg(&self.dovecot_config)
                .args(["mailbox", "create", "-u", MAIL_USER, folder])
                .output()?;
            let said = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() && !said.contains("already exists") {
                bail!("doveadm mailbox create {folder} failed: {said}");
            }
        }
        let mut child = Command::new(&doveadm)
            .arg("-c")
            .arg(&self.dovecot_config)
            .args(["save", "-u", MAIL_USER, "-m", folder])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child.stdin.take().context("doveadm's stdin")?.write_all(content)?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("doveadm save -m {folder} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// The mbox that imap4d serves with `imap4d_command(true)`.
    pub fn server_mbox(&self) -> PathBuf {
        self.path().join("home/mbox")
    }

    /// Appends a message to [`Testbed::server_mbox`], as a local delivery
    /// agent would (a `From ` line, `>From ` quoting, a blank line after).
    pub fn add_mbox_message(&mut self, content: &[u8]) -> Result<()> {
        use std::io::Write as _;
        let path = self.server_mbox();
        let mut f = fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let mut out = b"From sender@example.org Sat Nov 21 12:00:00 2026\n".to_vec();
        for line in content.split_inclusive(|&b| b == b'\n') {
            let quoted = line.iter().take_while(|&&b| b == b'>').count();
            if line[quoted..].starts_with(b"From ") {
                out.push(b'>');
            }
            out.extend_from_slice(line);
        }
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.push(b'\n');
        f.write_all(&out)?;
        drop(f);
        chown(&path, &self.account)?;
        Ok(())
    }

    /// `user@127.0.0.1:port` for sshmail's `--ssh`.
    pub fn ssh_destination(&self) -> String {
        format!("{}@127.0.0.1:{}", self.account.name, self.ssh_port)
    }

    /// sshd's log file.
    pub fn sshd_log(&self) -> PathBuf {
        self.path().join("sshd.log")
    }

    /// PID of the listening sshd.
    pub fn sshd_pid(&self) -> Option<u32> {
        self.sshd.as_ref().map(Child::id)
    }

    /// PIDs of the per-connection sshd processes (children of the listener).
    pub fn sshd_session_pids(&self) -> Vec<u32> {
        let Some(master) = self.sshd_pid() else {
            return Vec::new();
        };
        descendants(master)
    }

    /// Puts a message into the server's INBOX (Maildir `new/`), owned by the
    /// mail account so Dovecot can read it. Returns the file name.
    pub fn add_message(&mut self, content: &[u8]) -> Result<String> {
        let md = self.server_maildir();
        self.add_message_at(&md, content)
    }

    /// Puts a message into the Maildir GNU mailutils' pop3d and imap4d
    /// serve (started with `mailutils`), as a delivery agent would.
    pub fn add_mailutils_message(&mut self, content: &[u8]) -> Result<String> {
        let md = self.mailutils_maildir();
        self.add_message_at(&md, content)
    }

    /// The Maildir GNU mailutils' daemons serve: `mailutils/INBOX`.
    pub fn mailutils_maildir(&self) -> PathBuf {
        self.path().join("mailutils/INBOX")
    }

    /// Number of messages in [`Testbed::mailutils_maildir`] (new/ and cur/).
    pub fn mailutils_message_count(&self) -> Result<usize> {
        let md = self.mailutils_maildir();
        Ok(fs::read_dir(md.join("new"))?.count() + fs::read_dir(md.join("cur"))?.count())
    }

    fn add_message_at(&mut self, md: &Path, content: &[u8]) -> Result<String> {
        self.seq += 1;
        let name = format!("{}.M{}P{}.testbed", 1_700_000_000 + self.seq, self.seq, std::process::id());
        let tmp = md.join("tmp").join(&name);
        fs::write(&tmp, content)?;
        chown(&tmp, &self.account)?;
        fs::rename(&tmp, md.join("new").join(&name))?;
        Ok(name)
    }

    /// Puts a message into the INBOX's `cur/` with Maildir flags (`T` is
    /// IMAP's \Deleted, `S` \Seen), as another client would have left it.
    pub fn add_flagged_message(&mut self, content: &[u8], flags: &str) -> Result<String> {
        let name = self.add_message(content)?;
        let md = self.server_maildir();
        fs::rename(md.join("new").join(&name), md.join("cur").join(format!("{name}:2,{flags}")))?;
        Ok(name)
    }

    /// Dovecot's LMTP Unix socket, when started with `lmtp`.
    pub fn lmtp_socket(&self) -> Option<PathBuf> {
        (self.lmtp_port != 0).then(|| self.path().join("dovecot-run/lmtp"))
    }

    /// Number of messages in the server's INBOX (new/ and cur/).
    pub fn server_message_count(&self) -> Result<usize> {
        let md = self.server_maildir();
        Ok(fs::read_dir(md.join("new"))?.count() + fs::read_dir(md.join("cur"))?.count())
    }

    fn start_dovecot(&mut self, opts: &Options) -> Result<()> {
        let root = self.path().to_path_buf();
        let home = root.join("home");
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(home.join("Maildir").join(sub))?;
        }
        chown_tree(&home, &self.account)?;
        let passwd = root.join("dovecot.passwd");
        // The mail login, and the SSH login name for the imapd run over
        // ssh exec (it looks up $USER): both are the same mailbox.
        let entry = |name: &str, password: &str| {
            format!("{name}:{{PLAIN}}{password}:{}:{}::{}\n", self.account.uid, self.account.gid, home.display())
        };
        let mut entries = entry(MAIL_USER, MAIL_PASSWORD);
        if self.account.name != MAIL_USER {
            entries.push_str(&entry(&self.account.name, MAIL_PASSWORD));
        }
        for (name, password) in &opts.extra_logins {
            entries.push_str(&entry(name, password));
        }
        fs::write(&passwd, entries)?;
        let (pop3, imap) = (free_port()?, free_port()?);
        let (ssl, imaps) = if opts.tls {
            let imaps = free_port()?;
            let (cert, key) = self.make_certificates()?;
            (format!("ssl = yes\nssl_cert = <{}\nssl_key = <{}\n", cert.display(), key.display()), imaps)
        } else {
            ("ssl = no\n".to_string(), 0)
        };
        let (lmtp, lmtp_port) = if opts.lmtp {
            let port = free_port()?;
            (
                format!(
                    "protocols = pop3 imap lmtp\nrecipient_delimiter = +\nlmtp_save_to_detail_mailbox = yes\n\
                     lda_mailbox_autocreate = yes\n\
                     service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  \
                     unix_listener lmtp {{\n    mode = 0666\n  }}\n}}\n"
                ),
                port,
            )
        } else {
            ("protocols = pop3 imap\n".to_string(), 0)
        };
        let running_as_root = rustix_uid() == 0;
        let users = if running_as_root {
            "default_internal_user = dovecot\ndefault_login_user = dovenull\n".to_string()
        } else {
            let me = &self.account.name;
            format!("default_internal_user = {me}\ndefault_login_user = {me}\n")
        };
        let config = format!(
            "base_dir = {root}/dovecot-run\n\
             state_dir = {root}/dovecot-state\n\
             log_path = {root}/dovecot.log\n\
             instance_name = sshmail-testbed-{pid}-{pop3}\n\
             listen = 127.0.0.1\n\
             {ssl}\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain login apop\n\
             {capability}\
             {lmtp}\
             mail_location = maildir:{root}/home/Maildir\n\
             pop3_no_flag_updates = yes\n\
             pop3_uidl_format = %08Xv%08Xu\n\
             first_valid_uid = 1\n\
             {users}\
             passdb {{\n  driver = passwd-file\n  args = {passwd}\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {passwd}\n}}\n\
             service pop3-login {{\n  inet_listener pop3 {{\n    port = {pop3}\n  }}\n  inet_listener pop3s {{\n    port = 0\n  }}\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    port = {imap}\n  }}\n  inet_listener imaps {{\n    port = {imaps}\n  }}\n}}\n\
             service stats {{\n  unix_listener stats-writer {{\n    mode = 0666\n  }}\n}}\n",
            root = root.display(),
            capability = opts.imap_capability.as_ref().map(|c| format!("imap_capability = {c}\n")).unwrap_or_default(),
            pid = std::process::id(),
            passwd = passwd.display(),
        );
        let conf_path = root.join("dovecot.conf");
        fs::write(&conf_path, config)?;
        let child = Command::new(find_program("dovecot", &["/usr/sbin/dovecot"])?)
            .arg("-F")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(root.join("dovecot.stderr"))?))
            .spawn()
            .context("starting dovecot (is dovecot-core installed?)")?;
        self.dovecot = Some(child);
        self.pop3_port = pop3;
        self.imap_port = imap;
        self.dovecot_config = conf_path;
        wait_for_port(pop3, &mut self.dovecot, &root.join("dovecot.log"))?;
        wait_for_port(imap, &mut self.dovecot, &root.join("dovecot.log"))?;
        if imaps != 0 {
            wait_for_port(imaps, &mut self.dovecot, &root.join("dovecot.log"))?;
        }
        if lmtp_port != 0 {
            wait_for_port(lmtp_port, &mut self.dovecot, &root.join("dovecot.log"))?;
        }
        self.imaps_port = imaps;
        self.lmtp_port = lmtp_port;
        Ok(())
    }

    /// GNU mailutils' pop3d and imap4d as daemons in the foreground, each on
    /// a loopback port, authenticating [`MAILUTILS_USER`] from a virtual
    /// domain passwd file (a crypt(3) hash made with `openssl passwd`) and
    /// serving `mailutils/INBOX`, a Maildir.
    fn start_mailutils(&mut self) -> Result<()> {
        let root = self.path().join("mailutils");
        let md = self.mailutils_maildir();
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(md.join(sub))?;
        }
        chown_tree(&root, &self.account)?;
        let domains = self.path().join("mailutils-domains");
        fs::create_dir_all(&domains)?;
        let hash = run_text(Command::new("openssl").args(["passwd", "-6", "-salt", "sshmailtestbed", MAIL_PASSWORD]))
            .context("hashing the mailutils password with openssl passwd (is openssl installed?)")?;
        let (user, domain) = MAILUTILS_USER.split_once('@').expect("MAILUTILS_USER is user@domain");
        // The mailbox of a virtual user is HOME/INBOX.
        fs::write(
            domains.join(domain),
            format!("{user}:{hash}:{}:{}::{}:/bin/false\n", self.account.uid, self.account.gid, root.display()),
        )?;
        for (name, bin) in [("pop3d", "/usr/sbin/pop3d"), ("imap4d", "/usr/sbin/imap4d")] {
            let port = free_port()?;
            let conf = self.path().join(format!("mailutils-{name}.conf"));
            fs::write(
                &conf,
                format!(
                    "mode daemon;\nforeground yes;\nserver 127.0.0.1:{port} {{ }};\n\
                     auth {{ authorization virtdomain; authentication generic; }};\n\
                     virtdomain {{ passwd-dir \"{}\"; }};\n\
                     mailbox {{ mailbox-type maildir; }};\n\
                     mandatory-locking {{ enable no; }};\n\
                     logging {{ syslog no; }};\n",
                    domains.display()
                ),
            )?;
            let log = self.path().join(format!("mailutils-{name}.log"));
            let program = find_program(name, &[bin])?;
            let child = Command::new(program)
                .arg(format!("--config-file={}", conf.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::from(fs::File::create(&log)?))
                .stderr(Stdio::from(fs::File::options().append(true).open(&log)?))
                .spawn()
                .with_context(|| format!("starting {name} (is mailutils-{name} installed?)"))?;
            let slot = if name == "pop3d" { &mut self.pop3d } else { &mut self.imap4d };
            *slot = Some(child);
            wait_for_port(port, slot, &log)?;
            if name == "pop3d" {
                self.mailutils_pop3_port = port;
            } else {
                self.mailutils_imap_port = port;
            }
        }
        Ok(())
    }

    /// A test CA and a server certificate for localhost and 127.0.0.1.
    fn make_certificates(&mut self) -> Result<(PathBuf, PathBuf)> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "sshmail test CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer)?;
        let root = self.path().to_path_buf();
        let (ca_path, cert_path, key_path) = (root.join("ca.pem"), root.join("server.pem"), root.join("server.key"));
        fs::write(&ca_path, ca_cert.pem())?;
        fs::write(&cert_path, cert.pem())?;
        fs::write(&key_path, key.serialize_pem())?;
        self.ca_cert = ca_path;
        self.server_cert_sha256 = sha256_hex(cert.der());
        Ok((cert_path, key_path))
    }

    /// Puts a message into another folder (Maildir++ `.NAME`), creating it.
    pub fn add_message_to(&mut self, folder: &str, content: &[u8]) -> Result<String> {
        let dir = self.server_maildir().join(format!(".{folder}"));
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        chown_tree(&dir, &self.account)?;
        self.seq += 1;
        let name = format!("{}.M{}P{}.testbed", 1_700_000_000 + self.seq, self.seq, std::process::id());
        let tmp = dir.join("tmp").join(&name);
        fs::write(&tmp, content)?;
        chown(&tmp, &self.account)?;
        fs::rename(&tmp, dir.join("new").join(&name))?;
        Ok(name)
    }

    /// The contents of every message in a folder (new/ and cur/), sorted.
    pub fn folder_contents(&self, folder: &str) -> Result<Vec<Vec<u8>>> {
        let dir =
            if folder == "INBOX" { self.server_maildir() } else { self.server_maildir().join(format!(".{folder}")) };
        let mut v = Vec::new();
        for sub in ["new", "cur"] {
            for e in fs::read_dir(dir.join(sub))? {
                v.push(fs::read(e?.path())?);
            }
        }
        v.sort();
        Ok(v)
    }

    /// Number of messages in a folder (new/ and cur/); `INBOX` or a name.
    pub fn folder_message_count(&self, folder: &str) -> Result<usize> {
        let dir =
            if folder == "INBOX" { self.server_maildir() } else { self.server_maildir().join(format!(".{folder}")) };
        Ok(fs::read_dir(dir.join("new"))?.count() + fs::read_dir(dir.join("cur"))?.count())
    }

    /// Makes Dovecot give the INBOX a new UIDVALIDITY, as after a server
    /// migration: its UID list and indexes are removed.
    pub fn reset_uidvalidity(&self) -> Result<()> {
        let md = self.server_maildir();
        for f in ["dovecot-uidlist", "dovecot.index", "dovecot.index.cache", "dovecot.index.log", "dovecot.index.log.2"]
        {
            let _ = fs::remove_file(md.join(f));
        }
        Ok(())
    }

    /// The flags of every message in the INBOX, from the Maildir file names
    /// (`:2,FLAGS`), sorted.
    pub fn inbox_flags(&self) -> Result<Vec<String>> {
        let md = self.server_maildir();
        let mut v = Vec::new();
        for sub in ["new", "cur"] {
            for e in fs::read_dir(md.join(sub))? {
                let name = e?.file_name().to_string_lossy().into_owned();
                v.push(name.split_once(":2,").map(|(_, f)| f.to_string()).unwrap_or_default());
            }
        }
        v.sort();
        Ok(v)
    }

    /// Kills sshd, its listener and every session, as a crashed host would
    /// lose them; [`Testbed::restart_sshd`] brings it back on the same port.
    pub fn kill_sshd(&mut self) {
        for pid in self.sshd_session_pids() {
            signal(pid, "CONT");
            signal(pid, "KILL");
        }
        if let Some(mut child) = self.sshd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Signs the ed25519 host key again with the host CA `ca` (principal
    /// `127.0.0.1` unless `args` gives `-n`; `args` such as `-V
    /// 20200101:20200102` go to ssh-keygen) and restarts sshd to show it.
    pub fn sign_host_key(&mut self, ca: &Path, args: &[&str]) -> Result<()> {
        sign_host_key(ca, &self.path().join("ssh_host_ed25519_key"), args)?;
        self.kill_sshd();
        self.restart_sshd()
    }

    /// Starts sshd again after [`Testbed::kill_sshd`], same port and keys.
    pub fn restart_sshd(&mut self) -> Result<()> {
        self.spawn_sshd()
    }

    fn spawn_sshd(&mut self) -> Result<()> {
        let root = self.path().to_path_buf();
        let child = Command::new(&self.sshd_program)
            .arg("-D")
            .arg("-f")
            .arg(root.join("sshd_config"))
            .arg("-E")
            .arg(root.join("sshd.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting sshd (is openssh-server installed?)")?;
        self.sshd = Some(child);
        wait_for_port(self.ssh_port, &mut self.sshd, &root.join("sshd.log"))
    }

    fn start_sshd(&mut self, opts: &Options) -> Result<()> {
        let root = self.path().to_path_buf();
        let host_key = root.join("ssh_host_ed25519_key");
        keygen(&host_key)?;
        let mut host_keys = vec![host_key.clone()];
        for kind in &opts.more_host_keys {
            let path = root.join(format!("ssh_host_{kind}_key"));
            keygen_of(kind, &path)?;
            host_keys.push(path);
        }
        let client_key = root.join("client_ed25519");
        keygen(&client_key)?;
        let authorized = root.join("authorized_keys");
        fs::copy(client_key.with_extension("pub"), &authorized)?;
        fs::set_permissions(&authorized, fs::Permissions::from_mode(0o644))?;
        for (name, _) in &opts.extra_logins {
            unix_login(name)?;
        }
        let port = free_port()?;
        fs::create_dir_all("/run/sshd").ok();
        let host_cert = match &opts.host_ca {
            Some(ca) => {
                sign_host_key(ca, &host_key, &[])?;
                format!("HostCertificate {}\n", host_cert_path(&host_key).display())
            }
            None => String::new(),
        };
        let config = format!(
            "{first}\
             Port {port}\n\
             ListenAddress 127.0.0.1\n\
             {hk}\
             {host_cert}\
             PidFile {root}/sshd.pid\n\
             UsePAM no\n\
             StrictModes no\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             AuthorizedKeysFile {authorized}\n\
             AllowUsers {user}\n\
             AllowTcpForwarding {fwd}\n\
             PermitRootLogin prohibit-password\n\
             ClientAliveInterval 0\n\
             MaxStartups 100\n\
             {max_sessions}\
             LogLevel VERBOSE\n\
             SetEnv CONFIG_FILE={dovecot_conf}\n\
             Subsystem sftp internal-sftp\n",
            host_cert = host_cert,
            first = opts.sshd_lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
            dovecot_conf = self.dovecot_config.display(),
            max_sessions = opts.max_sessions.map(|n| format!("MaxSessions {n}\n")).unwrap_or_default(),
            hk = host_keys.iter().map(|k| format!("HostKey {}\n", k.display())).collect::<String>(),
            root = root.display(),
            authorized = authorized.display(),
            user = std::iter::once(self.account.name.as_str())
                .chain(opts.extra_logins.iter().map(|(n, _)| n.as_str()))
                .collect::<Vec<_>>()
                .join(" "),
            fwd = if opts.allow_tcp_forwarding { "yes" } else { "no" },
        );
        let conf_path = root.join("sshd_config");
        fs::write(&conf_path, config)?;
        self.ssh_port = port;
        self.sshd_program = find_program("sshd", &["/usr/sbin/sshd"])?;
        if !opts.pam.is_empty() {
            // OpenSSH names its PAM service after the program it runs as.
            let name = format!("sshmail-test-{port}");
            let service = PathBuf::from("/etc/pam.d").join(&name);
            let lines: String = opts.pam.iter().map(|l| format!("{l}\n")).collect();
            // pam_permit last: a stack whose modules all ignore
            // pam_setcred (pam_exec does) fails it, and sshd hangs up.
            let rest = "auth optional pam_permit.so\naccount required pam_permit.so\nsession required pam_permit.so\n";
            fs::write(&service, format!("{lines}{rest}"))
                .with_context(|| format!("writing {} (PAM services need root)", service.display()))?;
            self.pam_service = Some(service);
            let link = root.join(&name);
            std::os::unix::fs::symlink(&self.sshd_program, &link)?;
            self.sshd_program = link;
        }
        self.spawn_sshd()?;
        let pubkey = fs::read_to_string(host_key.with_extension("pub"))?;
        let mut fields = pubkey.split_whitespace();
        let line = format!("{} {}", fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        let known_hosts = root.join("known_hosts");
        fs::write(&known_hosts, format!("[127.0.0.1]:{port} {line}\n"))?;
        self.client_key = client_key;
        self.known_hosts = known_hosts;
        self.host_key_line = line;
        self.host_key_lines = host_keys
            .iter()
            .map(|k| {
                let text = fs::read_to_string(k.with_extension("pub"))?;
                let mut f = text.split_whitespace();
                Ok(format!("{} {}", f.next().unwrap_or(""), f.next().unwrap_or("")))
            })
            .collect::<Result<_>>()?;
        Ok(())
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // End what we started, by PID: first the per-connection sshd
        // processes (a frozen one would otherwise linger), then the servers.
        for pid in self.sshd_session_pids() {
            signal(pid, "CONT");
            signal(pid, "KILL");
        }
        // A server a session started whose session already ended (GNU
        // imap4d, at the end of its input while idling, spins instead of
        // exiting): every process whose command names this testbed's
        // directory, which only ours do.
        for pid in naming(self.path()) {
            if Some(pid) != self.sshd_pid() && Some(pid) != self.dovecot.as_ref().map(Child::id) {
                signal(pid, "KILL");
            }
        }
        // mailutils' daemons fork a process per connection.
        for master in [&self.pop3d, &self.imap4d].into_iter().flatten() {
            for pid in descendants(master.id()) {
                signal(pid, "KILL");
            }
        }
        if let Some(service) = self.pam_service.take() {
            let _ = fs::remove_file(service);
        }
        let children = [self.sshd.take(), self.dovecot.take(), self.pop3d.take(), self.imap4d.take()];
        for child in children.into_iter().flatten() {
            let mut child = child;
            signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Where `ssh-keygen -s` writes the certificate of `key`.
fn host_cert_path(key: &Path) -> PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push("-cert.pub");
    PathBuf::from(name)
}

/// `ssh-keygen -s CA -h -I testbed-host [-n 127.0.0.1] ARGS KEY.pub`.
fn sign_host_key(ca: &Path, key: &Path, args: &[&str]) -> Result<()> {
    let mut c = Command::new("ssh-keygen");
    c.arg("-q").arg("-s").arg(ca).args(["-h", "-I", "testbed-host"]);
    if !args.contains(&"-n") {
        c.args(["-n", "127.0.0.1"]);
    }
    let out = c.args(args).arg(key.with_extension("pub")).output().context("running ssh-keygen")?;
    if !out.status.success() {
        bail!("ssh-keygen -s: {}", String::from_utf8_lossy(&out.stderr));
    }
    anyhow::ensure!(host_cert_path(key).exists(), "ssh-keygen wrote no {}", host_cert_path(key).display());
    Ok(())
}

/// Sends a signal (by name, as `kill -NAME`: TERM, KILL, STOP, CONT) to one
/// process. Unknown names and vanished processes are ignored.
pub fn signal(pid: u32, name: &str) {
    use rustix::process::{Pid, Signal, kill_process};
    let sig = match name {
        "TERM" => Signal::TERM,
        "KILL" => Signal::KILL,
        "STOP" => Signal::STOP,
        "CONT" => Signal::CONT,
        "HUP" => Signal::HUP,
        "INT" => Signal::INT,
        "USR1" => Signal::USR1,
        _ => return,
    };
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, sig);
    }
}

/// The processes (not this one) whose command line names `path`.
pub fn naming(path: &Path) -> Vec<u32> {
    let needle = path.as_os_str().as_encoded_bytes();
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| !needle.is_empty() && cmd.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

/// All descendants of `pid`, found through /proc.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        let Ok(entries) = fs::read_dir("/proc") else {
            break;
        };
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            // The ppid is the second field after the parenthesised command.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
                continue;
            };
            let ppid = after.split_whitespace().nth(1).and_then(|s| s.parse::<u32>().ok());
            if ppid == Some(parent) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

fn test_account() -> Result<Account> {
    if rustix_uid() != 0 {
        let name = run_text(Command::new("id").arg("-un"))?;
        return Ok(Account { name, uid: rustix_uid(), gid: run_text(Command::new("id").arg("-g"))?.parse()? });
    }
    if Command::new("id").arg(TEST_USER).stdout(Stdio::null()).stderr(Stdio::null()).status()?.success() {
        return lookup(TEST_USER);
    }
    add_system_account(TEST_USER, &["--create-home", "--home-dir", "/var/lib/sshmail-test"])?;
    lookup(TEST_USER)
}

/// Makes sure a Unix account `name` exists that sshd lets in by key (for
/// [`Options::extra_logins`]): created as a system account without a home.
fn unix_login(name: &str) -> Result<()> {
    if Command::new("id").arg(name).stdout(Stdio::null()).stderr(Stdio::null()).status()?.success() {
        return Ok(());
    }
    if rustix_uid() != 0 {
        bail!("the SSH login {name} does not exist, and only root can create it");
    }
    add_system_account(name, &["--no-create-home", "--home-dir", "/nonexistent"])
}

/// `useradd --system` with a shell and `home` options, then the account
/// unlocked for key logins.
fn add_system_account(name: &str, home: &[&str]) -> Result<()> {
    let status = Command::new("useradd")
        .arg("--system")
        .args(home)
        .args(["--shell", "/bin/sh", name])
        .status()
        .context("running useradd")?;
    // 9: created meanwhile by a parallel test.
    if !status.success() && status.code() != Some(9) {
        bail!("could not create the account {name} with useradd");
    }
    // sshd without PAM refuses a locked ('!') account even for key logins.
    Command::new("usermod").args(["-p", "*", name]).status()?;
    Ok(())
}

fn lookup(name: &str) -> Result<Account> {
    Ok(Account {
        name: name.to_string(),
        uid: run_text(Command::new("id").args(["-u", name]))?.parse()?,
        gid: run_text(Command::new("id").args(["-g", name]))?.parse()?,
    })
}

fn rustix_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn run_text(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

fn chown(path: &Path, account: &Account) -> Result<()> {
    if rustix_uid() == 0 {
        std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid))?;
    }
    Ok(())
}

fn chown_tree(path: &Path, account: &Account) -> Result<()> {
    chown(path, account)?;
    if path.is_dir() {
        for e in fs::read_dir(path)? {
            chown_tree(&e?.path(), account)?;
        }
    }
    Ok(())
}

fn keygen(path: &Path) -> Result<()> {
    keygen_of("ed25519", path)
}

/// A key pair of `kind` (`ed25519`, `ecdsa`, `rsa`) at `path`.
fn keygen_of(kind: &str, path: &Path) -> Result<()> {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "sshmail-testbed", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .context("running ssh-keygen (is openssh-client installed?)")?;
    if !status.success() {
        bail!("ssh-keygen failed for {}", path.display());
    }
    Ok(())
}

/// Generates an ed25519 key pair at `path` (and `path.pub`).
pub fn generate_key(path: &Path) -> Result<()> {
    keygen(path)
}

fn find_program(name: &str, candidates: &[&str]) -> Result<PathBuf> {
    for c in candidates {
        if Path::new(c).exists() {
            return Ok(PathBuf::from(c));
        }
    }
    bail!("{name} is not installed (looked in {candidates:?}); install the Debian packages named in README.md")
}

/// A port nobody listens on now, and that this process has not handed out
/// before (so two testbeds started at once never pick the same one).
fn free_port() -> Result<u16> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().expect("port list lock");
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return Ok(port);
        }
    }
}

/// Waits until `server` listens on `port`; fails at once if it exits.
fn wait_for_port(port: u16, server: &mut Option<Child>, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = server.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            let log = fs::read_to_string(log).unwrap_or_default();
            bail!("server exited ({status}) before it listened on 127.0.0.1:{port}; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let log = fs::read_to_string(log).unwrap_or_default();
    bail!("server did not listen on 127.0.0.1:{port} within 20 s; its log:\n{log}")
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

pub mod corpus;
pub mod delay;
