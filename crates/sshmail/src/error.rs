//! Errors graded by what the user must do, and the exit codes they map to.
//!
//! The exit codes are fetchmail's, so scripts and cron wrappers written for
//! fetchmail keep working.

use thiserror::Error;

/// Process exit codes (as fetchmail's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// One or more messages were delivered.
    Delivered = 0,
    /// There was no new mail.
    NoMail = 1,
    /// The connection or the SSH session failed (includes host key refusals).
    Connect = 2,
    /// Authentication (SSH or mail server) failed.
    Auth = 3,
    /// The server broke the protocol or stopped answering.
    Protocol = 4,
    /// Bad command line or config syntax.
    Usage = 5,
    /// The config file is readable by others and holds a password.
    Permissions = 6,
    /// The server reported an error (mailbox locked, command refused).
    Server = 7,
    /// A message could not be delivered locally.
    Delivery = 10,
}

impl Exit {
    /// The numeric process status.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// Every exit, in the order of their codes.
    pub const ALL: [Exit; 9] = [
        Exit::Delivered,
        Exit::NoMail,
        Exit::Connect,
        Exit::Auth,
        Exit::Protocol,
        Exit::Usage,
        Exit::Permissions,
        Exit::Server,
        Exit::Delivery,
    ];

    /// The exit of a numeric status (one another sshmail process reported);
    /// an unknown one is a connection failure.
    pub fn from_code(code: i32) -> Exit {
        Exit::ALL.into_iter().find(|e| e.code() == code).unwrap_or(Exit::Connect)
    }
}

/// An error that ends the work on one account.
#[derive(Debug, Clone, Error)]
pub enum Error {
    /// TCP connect, SSH transport, channel open.
    #[error("{0}")]
    Connect(String),
    /// A connection that worked went away: closed by the other end, reset,
    /// or its link found dead. Worth one immediate new try.
    #[error("{0}")]
    Lost(String),
    /// The host key was unknown, changed or revoked.
    #[error("{0}")]
    HostKey(Box<HostKeyRefused>),
    /// The SSH server refused every way in that was tried.
    #[error("{0}")]
    SshAuth(Box<SshAuthRefused>),
    /// A mail or relay login refused, or one that cannot be made.
    #[error("{0}")]
    Auth(String),
    /// An SSH host that needs a person to log in (a one-time code, a
    /// password typed), where no connection a person made is up.
    #[error("{0}")]
    LoginNeeded(Box<LoginNeeded>),
    /// Malformed or unexpected server data, or a timeout waiting for it.
    #[error("{0}")]
    Protocol(String),
    /// The server answered -ERR / NO / BAD to something it should accept.
    #[error("{0}")]
    Server(String),
    /// Bad configuration or arguments.
    #[error("{0}")]
    Config(String),
    /// A config file holding a secret is readable by others.
    #[error("{0}")]
    Permissions(String),
    /// Local delivery or the local state failed.
    #[error("{0}")]
    Delivery(String),
    /// An error, with what the process at the other end of the stream (a
    /// remote imapd, a tunnel command) said: it is graded as the error is.
    #[error("{0}; {who} said{exit}: {text}", who = .1.who(), exit = .1.exit_shown(), text = .1.text())]
    Said(Box<Error>, Said),
}

/// What a process at the other end of a stream said when it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Said {
    /// Its exit status, if it exited.
    pub exit: Option<i64>,
    /// The end of its stderr (bounded, printable).
    pub stderr: String,
    /// It was the ProxyCommand under the SSH connection.
    pub proxy: bool,
}

impl Said {
    /// Nothing said, no exit status: nothing to add.
    pub fn is_empty(&self) -> bool {
        self.exit.is_none() && self.stderr.is_empty()
    }

    fn who(&self) -> &'static str {
        if self.proxy { "its ProxyCommand" } else { "the command at the other end" }
    }

    fn exit_shown(&self) -> String {
        self.exit.map(|c| format!(" (exit status {c})")).unwrap_or_default()
    }

    fn text(&self) -> &str {
        if self.stderr.is_empty() { "nothing" } else { &self.stderr }
    }
}

/// Why an SSH login failed: what was tried, what the server took and still
/// wants, and what would help ([`SshAuthRefused::fix`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SshAuthRefused {
    /// `user@host:port`.
    pub target: String,
    /// `ssh-copy-id -p PORT USER@HOST`, for the advice to authorize a key.
    pub copy_id: String,
    /// Each way tried (agent keys, key files and why one was skipped, a
    /// password, keyboard-interactive), in order.
    pub tried: Vec<String>,
    /// The methods the server said may go on, from its last refusal.
    pub accepts: Vec<String>,
    /// What the server took as one step of several (a key, when it wants
    /// a second factor too).
    pub accepted: Option<String>,
    /// The server's prompts nothing could answer (no terminal), as shown.
    pub unanswered: Vec<String>,
    /// The account has an `ssh_password_command`.
    pub password_command: bool,
    /// A terminal was there to ask on.
    pub terminal: bool,
    /// A password given (by the command or on the terminal) was refused.
    pub password_refused: bool,
}

impl SshAuthRefused {
    /// What the failure was, without the advice.
    pub fn facts(&self) -> String {
        let tried = if self.tried.is_empty() {
            "nothing (no agent, no identity file)".to_string()
        } else {
            self.tried.join(", ")
        };
        let mut s = format!("SSH authentication to {} failed; tried: {tried}", self.target);
        if let Some(step) = &self.accepted {
            s.push_str(&format!("; the server accepted {step} but wants a second factor"));
        }
        for prompt in &self.unanswered {
            s.push_str(&format!("; it asked \"{prompt}\" and there is no terminal to answer on"));
        }
        if self.password_refused {
            s.push_str("; the password was refused");
        }
        if !self.accepts.is_empty() {
            s.push_str(&format!("; the server accepts: {}", self.accepts.join(", ")));
        }
        s
    }

    /// What only a person could give, when that is what the login lacked:
    /// the server's unanswered question, a second factor after a step it
    /// took, or a password (none given, none refused). None: a person
    /// would not help (no key it takes, a password refused).
    pub fn person_needed(&self) -> Option<String> {
        let wants = |m: &str| self.accepts.iter().any(|a| a == m);
        if self.password_refused {
            return None;
        }
        if let Some(prompt) = self.unanswered.first() {
            return Some(format!("asks \"{prompt}\""));
        }
        let asks = wants("password") || wants("keyboard-interactive");
        match &self.accepted {
            Some(step) if asks => Some(format!("took {step} and asks for a second factor")),
            None if asks && !self.password_command => Some("asks for a password".into()),
            _ => None,
        }
    }

    /// What would help, from what the server asked for.
    pub fn fix(&self) -> String {
        let wants = |m: &str| self.accepts.iter().any(|a| a == m);
        let asks = wants("password") || wants("keyboard-interactive");
        if !self.accepts.is_empty() && self.accepts.iter().all(|m| m.starts_with("gssapi")) {
            return "sshmail has no Kerberos/GSSAPI: sign in with ssh, which has it, keeping an OpenSSH master \
                    (ControlMaster), and sshmail rides it (ssh_control_path; README: Two-factor hosts)"
                .into();
        }
        let daemon_way = "a daemon or cron job cannot be asked: with the daemon running, `sshmail login ACCOUNT` on a \
                          terminal answers for it and the daemon holds the connection; or sign in once with ssh \
                          keeping an OpenSSH master (ControlMaster), which sshmail rides (ssh_control_path; README: \
                          Two-factor hosts)";
        if self.password_refused {
            return if self.password_command {
                "check what ssh_password_command prints: the server refused it".into()
            } else {
                "the password typed was refused; try again".into()
            };
        }
        if !self.unanswered.is_empty() || (self.accepted.is_some() && asks) {
            return format!("run sshmail on a terminal to answer the server's questions as ssh does; {daemon_way}");
        }
        if asks && !self.terminal && !self.password_command {
            let key = if wants("publickey") {
                format!(", or authorize one of your keys there ({})", self.copy_id)
            } else {
                String::new()
            };
            return format!(
                "this server wants a password: set ssh_password_command for the account, or run sshmail on a \
                 terminal to be asked{key}"
            );
        }
        format!(
            "authorize one of your keys there ({}), or load the right key into the agent (ssh-add), \
             or name it: identity = [\"~/.ssh/KEY\"]",
            self.copy_id
        )
    }
}

impl std::fmt::Display for SshAuthRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}. Fix: {}", self.facts(), self.fix())
    }
}

/// An SSH host waiting for a person to log in (`sshmail login ACCOUNT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginNeeded {
    /// `user@host:port`.
    pub target: String,
    /// Why: what the server asks for, or the loss of the connection a
    /// login made.
    pub why: String,
    /// The account, once known: the command to run names it.
    pub account: Option<String>,
}

impl std::fmt::Display for LoginNeeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let run = match &self.account {
            Some(account) => format!("run `sshmail login {account}`"),
            None => "run `sshmail login` with the account's name".to_string(),
        };
        write!(
            f,
            "waiting for login: SSH to {} {}; {run} on a terminal to answer (the daemon then holds the connection \
             and does not try again by itself)",
            self.target, self.why
        )
    }
}

/// Why a host key was refused: what the user, and a daemon's status, need
/// to act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyRefused {
    /// The name looked up in known_hosts: `host`, or `[host]:port`.
    pub host: String,
    /// The known_hosts files consulted.
    pub files: Vec<String>,
    /// What was wrong.
    pub problem: HostKeyProblem,
}

/// What was wrong with a host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyProblem {
    /// No known_hosts line names the host (the server's key's fingerprint,
    /// and the known_hosts line that would trust it).
    Unknown { offered: String, line: String },
    /// A line names the host with another key.
    Changed { at: String, known: String, offered: String, line: String },
    /// The key is marked `@revoked`.
    Revoked { at: String, fingerprint: String },
    /// known_hosts could not be read, or a new key not recorded.
    Unusable(String),
    /// A host certificate its `@cert-authority` line does not vouch for
    /// (why, and the CA line's place if one matched).
    Certificate(String),
}

impl std::fmt::Display for HostKeyRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = &self.host;
        match &self.problem {
            HostKeyProblem::Unknown { offered, .. } => write!(
                f,
                "host key for {name} is not known (server offered {offered}; looked in {}) — refusing. \
                 Check the fingerprint with the server's administrator, then run once with \
                 --accept-new-host-key (or set host_key_policy = \"accept-new\") to record it",
                self.files.join(", ")
            ),
            HostKeyProblem::Changed { at, known, offered, .. } => write!(
                f,
                "host key for {name} changed: {at} has {known}, server offered {offered} — refusing. \
                 If the change is expected, remove that line (ssh-keygen -R '{name}') and connect again"
            ),
            HostKeyProblem::Revoked { at, fingerprint } => {
                write!(f, "host key {fingerprint} for {name} is revoked ({at}) — refusing")
            }
            HostKeyProblem::Unusable(msg) => write!(f, "{name}: {msg}"),
            HostKeyProblem::Certificate(why) => write!(f, "host certificate for {name} refused: {why}"),
        }
    }
}

/// When the work that failed may be tried again (isync's grades).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// At once, once: what worked a moment ago (a connection that dropped,
    /// a link that died while the machine slept) most likely works again.
    /// If the new try fails too, its own error decides.
    Now,
    /// After a back-off: the link, the server or the local disk may recover.
    Later,
    /// Not until the configuration changes: a refused host key, a failed
    /// login, a bad config. Retrying would only repeat the refusal (and,
    /// for a password, risk a lock-out).
    Never,
    /// Not until a person logs in (`sshmail login`): the host asks what
    /// only a person can answer, and failed tries lock accounts.
    Login,
}

impl Error {
    /// Whether, and when, to try again.
    pub fn retry(&self) -> Retry {
        match self {
            Error::Lost(_) => Retry::Now,
            Error::Connect(_) | Error::Protocol(_) | Error::Server(_) | Error::Delivery(_) => Retry::Later,
            Error::HostKey(_) | Error::SshAuth(_) | Error::Auth(_) | Error::Config(_) | Error::Permissions(_) => {
                Retry::Never
            }
            Error::LoginNeeded(_) => Retry::Login,
            Error::Said(e, _) => e.retry(),
        }
    }

    /// The error with `account` named where it tells what to run.
    pub fn for_account(self, account: &str) -> Error {
        match self {
            Error::LoginNeeded(mut l) => {
                l.account = Some(account.to_string());
                Error::LoginNeeded(l)
            }
            Error::Said(e, said) => Error::Said(Box::new(e.for_account(account)), said),
            e => e,
        }
    }

    /// The exit code this error maps to.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Connect(_) | Error::Lost(_) | Error::HostKey(_) => Exit::Connect,
            Error::SshAuth(_) | Error::Auth(_) | Error::LoginNeeded(_) => Exit::Auth,
            Error::Said(e, _) => e.exit(),
            Error::Protocol(_) => Exit::Protocol,
            Error::Server(_) => Exit::Server,
            Error::Config(_) => Exit::Usage,
            Error::Permissions(_) => Exit::Permissions,
            Error::Delivery(_) => Exit::Delivery,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether `e` is the process or the system out of file descriptors
/// (EMFILE, ENFILE): a temporary condition, never a reason to give up.
pub fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == rustix::io::Errno::MFILE.raw_os_error() || code == rustix::io::Errno::NFILE.raw_os_error())
}

/// Shorthand for a delivery error from an I/O error with context.
pub fn delivery(context: impl std::fmt::Display, e: std::io::Error) -> Error {
    Error::Delivery(format!("{context}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: running out of descriptors while reading known_hosts
    /// was a host key problem, not retried until the config changed.
    #[test]
    fn out_of_descriptors_is_temporary() {
        assert!(out_of_descriptors(&std::io::Error::from_raw_os_error(24)));
        assert!(out_of_descriptors(&std::io::Error::from_raw_os_error(23)));
        assert!(!out_of_descriptors(&std::io::Error::from_raw_os_error(13)));
    }

    /// A refused host key or login is never retried by itself: only a
    /// config change (or the user) can fix it; a connection that dropped is
    /// tried again at once; everything else after a back-off.
    #[test]
    fn refusals_are_never_retried_a_lost_link_at_once_the_rest_later() {
        let key = HostKeyRefused {
            host: "[h]:2222".into(),
            files: vec!["/kh".into()],
            problem: HostKeyProblem::Unknown { offered: "SHA256:x".into(), line: String::new() },
        };
        for e in [Error::HostKey(Box::new(key)), Error::Auth("a".into()), Error::Config("c".into())] {
            assert_eq!(e.retry(), Retry::Never, "{e:?}");
        }
        for e in [Error::Connect("c".into()), Error::Protocol("p".into()), Error::Delivery("disk full".into())] {
            assert_eq!(e.retry(), Retry::Later, "{e:?}");
        }
        assert_eq!(Error::Lost("l".into()).retry(), Retry::Now);
        assert_eq!(Error::Lost("l".into()).exit(), Exit::Connect, "exit codes stay as documented");
    }

    /// What the other end said is a field, not text spliced into the
    /// message; the error keeps its grade.
    #[test]
    fn what_the_other_end_said_is_kept_beside_the_error_which_keeps_its_grade() {
        let said = Said { exit: Some(127), stderr: "imapd: not found".into(), proxy: false };
        let e = Error::Said(Box::new(Error::Lost("the stream ended".into())), said);
        assert_eq!(
            e.to_string(),
            "the stream ended; the command at the other end said (exit status 127): imapd: not found"
        );
        assert_eq!((e.retry(), e.exit()), (Retry::Now, Exit::Connect));
        let quiet = Error::Said(
            Box::new(Error::Protocol("no greeting".into())),
            Said { exit: None, stderr: String::new(), proxy: false },
        );
        assert_eq!(quiet.to_string(), "no greeting; the command at the other end said: nothing");
    }

    /// An SSH refusal says what was tried, what the server accepts, and
    /// when it took one factor and wants another; the advice follows what
    /// the server asked for.
    #[test]
    fn an_ssh_refusal_names_what_was_tried_what_the_server_accepts_and_a_partial_success() {
        let refused = SshAuthRefused {
            target: "me@h:22".into(),
            copy_id: "ssh-copy-id -p 22 me@h".into(),
            tried: vec!["agent key SHA256:x".into()],
            accepts: vec!["keyboard-interactive".into()],
            accepted: Some("agent key SHA256:x".into()),
            ..Default::default()
        };
        let e = Error::SshAuth(Box::new(refused.clone()));
        let text = e.to_string();
        assert!(text.starts_with("SSH authentication to me@h:22 failed; tried: agent key SHA256:x"), "{text}");
        assert!(text.contains("accepted agent key SHA256:x but wants a second factor"), "{text}");
        assert!(refused.facts().ends_with("the server accepts: keyboard-interactive"), "{text}");
        assert!(refused.fix().contains("on a terminal") && !refused.fix().contains("authorize"), "{text}");
        assert_eq!((e.retry(), e.exit()), (Retry::Never, Exit::Auth));

        let password_only = SshAuthRefused { accepts: vec!["password".into()], accepted: None, ..refused.clone() };
        assert!(password_only.fix().contains("set ssh_password_command"), "{}", password_only.fix());
        let gssapi = SshAuthRefused { accepts: vec!["gssapi-with-mic".into()], accepted: None, ..refused };
        assert!(gssapi.fix().contains("no Kerberos/GSSAPI") && gssapi.fix().contains("ssh_control_path"));
    }
}
