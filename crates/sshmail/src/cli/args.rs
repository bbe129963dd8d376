//! The command line's shape: every subcommand, option and help text, as
//! clap definitions. Self-contained (clap and std only), so that the build
//! script can include it to generate the man page and shell completions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes (as fetchmail's):
  0  mail was delivered
  1  no new mail
  2  connection or SSH error (includes refused host keys)
  3  authentication failed (SSH or mail server)
  4  protocol error or timeout
  5  usage or config syntax error
  6  config file holding a password is readable by others
  7  the server reported an error
  10 local delivery failed
With several accounts, the worst error wins; without errors, 0 if any mail came.";

/// Mail through SSH: fetch POP3 or IMAP mail over an in-process SSH
/// connection and deliver it to a Maildir, durably and exactly once.
#[derive(Debug, Parser)]
#[command(name = "sshmail", version, after_help = EXIT_CODES, args_override_self = true)]
pub struct Cli {
    /// More log output (-v: progress of each account, -vv: protocol debugging).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Print only errors (no progress bar, no summary).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Cmd,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Fetch new mail from every configured account, the named ones, or the
    /// server given with --ssh.
    #[command(after_help = EXIT_CODES, override_usage = FETCH_USAGE)]
    Fetch(Box<FetchArgs>),
    /// Run in the foreground: every account and folder of the config, IMAP
    /// folders watched by IDLE, POP3 polled; driven by signals (SIGUSR1:
    /// poll now, SIGHUP: reload, SIGTERM: stop) and by `sshmail status`,
    /// `poll`, `reload` and `stop`.
    #[command(after_help = DAEMON_HELP)]
    Daemon(DaemonArgs),
    /// Show what the running daemon is doing, per account and folder; or
    /// follow what happens (--follow), for status bars and scripts.
    #[command(after_help = "Exit codes: 0 the daemon answered (with --follow: it stopped), 2 none runs for this \
                            config.")]
    Status(StatusArgs),
    /// Ask the running daemon to fetch now, and print what came.
    #[command(after_help = "Exit codes: 0 mail was delivered, 1 no new mail, 2 no daemon runs or a fetch failed.")]
    Poll(PollArgs),
    /// Ask the running daemon to re-read its config file.
    #[command(
        after_help = "Exit codes: 0 reloaded, 2 no daemon runs, 5 the file was refused (the old config runs on)."
    )]
    Reload(ControlArgs),
    /// Ask the running daemon to stop, and wait until it has.
    #[command(after_help = "Exit codes: 0 stopped, 2 no daemon runs.")]
    Stop(ControlArgs),
    /// Log in to an account's SSH host on this terminal, for hosts that
    /// need a person (a one-time code, a password): the daemon makes the
    /// connection and holds it, relaying the server's questions here.
    /// Without a daemon, the first connect of a fetch.
    #[command(after_help = LOGIN_HELP)]
    Login(LoginArgs),
    /// Serve the local endpoints (serve.imap, serve.pop3, serve.smtp) of
    /// every account, or of the named ones, without fetching: a daemon
    /// for mail clients only, in the foreground.
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// Connect stdin/stdout to an account's mail server: for mutt's
    /// `tunnel`, mbsync's `Tunnel`, Alpine's `ssh-path`. Through the
    /// running daemon's SSH connection when there is one, else its own.
    #[command(after_help = TUNNEL_HELP)]
    Tunnel(TunnelArgs),
    /// Send a message read from stdin, as sendmail does: queued durably in
    /// the outbox first, then relayed through SSH (also run as `sendmail`
    /// by a symlink).
    #[command(after_help = SENDMAIL_HELP, disable_help_flag = true, override_usage = SENDMAIL_USAGE)]
    Sendmail(SendmailArgs),
    /// List the outbox (also run as `mailq`), try it now, or remove an entry.
    #[command(after_help = "Exit codes: 0, 69 a message was refused for good, 75 some stay queued, 78 config.")]
    Queue(QueueArgs),
    /// Turn another program's configuration into an sshmail config.
    Import(ImportArgs),
    /// Check every hop to each account's mailbox, in the order the mail
    /// travels: PASS, WARN or FAIL with what to do. Changes nothing.
    #[command(after_help = DOCTOR_HELP)]
    Doctor(DoctorArgs),
    /// Print the shell completion script for bash, zsh or fish (which
    /// scripts/install installs).
    #[command(after_help = COMPLETIONS_HELP)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the manual page (roff), e.g. `sshmail man | man -l -`.
    Man,
}

const DOCTOR_HELP: &str = "\
Hops, per account: config, ssh_config, resolve, tcp, ssh (the server's banner),
host-key, ssh-auth, channel (forwarding or exec allowed), imapd, greeting (and
shell noise before it), capabilities, login, delivery, ledger, send (the relay
and its EHLO); then for this machine: sendmail, git (sendemail.sendmailCmd),
outbox, daemon (and each folder's last error), forwards (an `ssh -L` of a mail
port open to every local user). An account's remote hops stop at its first FAIL.
No message is fetched, flagged or sent; no secret is printed.
Exit codes: 0 nothing failed (warnings allowed), else the code `sshmail fetch`
would exit with for the first FAIL (2 connection or host key, 3 login, 4 protocol,
5 config, 6 permissions, 7 server, 10 delivery).";

/// `sshmail doctor` options.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Accounts to check; default: all.
    #[arg(value_name = "ACCOUNT")]
    pub accounts: Vec<String>,
    /// Config file [default: $XDG_CONFIG_HOME/sshmail/config.toml].
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// ssh_config file to read instead of ~/.ssh/config.
    #[arg(long, short = 'F', value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
}

/// A shell `sshmail completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// GNU bash (with bash-completion).
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

const COMPLETIONS_HELP: &str = "\
Where each goes (scripts/install puts them there under its --prefix):
  bash: ~/.local/share/bash-completion/completions/sshmail
  zsh:  ~/.local/share/zsh/site-functions/_sshmail (add that directory to $fpath)
  fish: ~/.local/share/fish/vendor_completions.d/sshmail.fish";

/// `sshmail import` options.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// What to import.
    #[command(subcommand)]
    pub what: ImportWhat,
}

/// What `sshmail import` reads.
#[derive(Debug, Subcommand)]
pub enum ImportWhat {
    /// A fetchmail run control file: the TOML goes to stdout, one warning
    /// per option not carried over to stderr.
    #[command(after_help = IMPORT_HELP)]
    Fetchmailrc {
        /// The file [default: ~/.fetchmailrc].
        file: Option<PathBuf>,
    },
}

const IMPORT_HELP: &str = "\
Recognised: a poll of localhost whose preconnect opens `ssh -L PORT:HOST:PORT`
becomes an account that forwards through that SSH host in-process; a plugin
running a remote imapd through ssh becomes an exec account; `set daemon N` the
daemon's interval. A config holding a password is made mode 600 when stdout is
a file. Example:
  sshmail import fetchmailrc > ~/.config/sshmail/config.toml
Exit codes: 0 imported, 5 the file cannot be read or parsed (the line is named).";

const FETCH_USAGE: &str = "\
sshmail fetch [OPTIONS] [ACCOUNT]...
       sshmail fetch --ssh [USER@]HOST[:PORT] [--pop3 | --imap] [OPTIONS]";

const SENDMAIL_USAGE: &str = "\
sshmail sendmail [-t] [-f FROM | -r FROM] [-F NAME] [-i | -oi] [-oem] [-odi | -odb]
                 [-B8BITMIME] [-N …] [-R …] [-v] [--account A] [--config FILE]
                 [--no-queue] [--] [RCPT…] < message";

const SENDMAIL_HELP: &str = "\
Exit codes (sysexits): 0 queued or sent, 64 bad arguments, 65 the message could
not be read, 69 refused for good (the relay's text on stderr), 75 not accepted
(the outbox cannot be written, or --no-queue and the relay cannot take it now),
78 no account to send with.";

/// `sshmail sendmail` arguments: sendmail's own, parsed by it.
#[derive(Debug, Args)]
pub struct SendmailArgs {
    /// sendmail options and recipients.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<String>,
}

/// `sshmail queue` options.
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// What to do; without one, list the outbox.
    #[command(subcommand)]
    pub action: Option<QueueAction>,
}

/// `sshmail queue` actions.
#[derive(Debug, Subcommand)]
pub enum QueueAction {
    /// Try every queued message now.
    Flush {
        /// Config file [default: $XDG_CONFIG_HOME/sshmail/config.toml].
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Remove a queued or failed message by its id.
    Remove {
        /// The id `sshmail queue` shows.
        id: String,
    },
}

const SERVE_HELP: &str = "\
Endpoints serve only their owner: a Unix socket is 0600 in a 0700 directory and
checks each peer's uid; a loopback TCP port checks the peer's uid in /proc/net/tcp.
`sshmail serve` holds the same lock and control socket as `sshmail daemon` (run one
or the other for a config), and answers `sshmail tunnel`, `status`, `reload` and
`stop`. Exit codes as for `sshmail daemon`; 5 also when an endpoint cannot listen.";

const TUNNEL_HELP: &str = "\
Examples:
  mutt:    set tunnel=\"sshmail tunnel uni\"
  mbsync:  Tunnel \"sshmail tunnel uni\"
  Alpine:  a wrapper script as ssh-path (see man sshmail)
The server's greeting is checked first: text before it (a shell startup file on the
SSH host, a forced command) is an error on stderr and, in the protocol, on stdout.
Exit codes: 0 the session ended, 2 the server or SSH host could not be reached (or
its host key was refused), 3 a login failed, 4 the server did not greet as it should,
5 the config or arguments are wrong, 7 the server refused the session.";

const LOGIN_HELP: &str = "\
The answers go to the daemon over its control socket (owner-only, the peer's uid
checked) and from there to the SSH server; they are never written to disk or log.
The daemon never tries such a host again by itself (failed tries lock accounts):
after the connection is lost, `sshmail status` says \"waiting for login\" until this
is run again. An account riding an OpenSSH master (ssh_control_path) needs no login.
Exit codes: 0 logged in, 2 the host or the daemon could not be reached, 3 the login
was refused, 5 no such account or no terminal.";

/// `sshmail login` options.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The account ([account.NAME] in the config).
    pub account: String,
    #[command(flatten)]
    pub daemon: ControlArgs,
}

/// `sshmail serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Accounts whose endpoints to serve; default: all.
    #[arg(value_name = "ACCOUNT")]
    pub accounts: Vec<String>,
    /// Config file [default: $XDG_CONFIG_HOME/sshmail/config.toml].
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log to the local syslog (/dev/log, facility mail) instead of stderr.
    #[arg(long)]
    pub syslog: bool,
}

/// `sshmail tunnel` options.
#[derive(Debug, Args)]
pub struct TunnelArgs {
    /// The account ([account.NAME] in the config).
    pub account: String,
    /// What to reach: imap, pop3 or smtp [default: the account's protocol].
    #[arg(long, value_name = "PROTOCOL", value_parser = ["imap", "pop3", "smtp"])]
    pub protocol: Option<String>,
    #[command(flatten)]
    pub daemon: ControlArgs,
}

const DAEMON_HELP: &str = "\
One daemon runs per user and config file; a second one exits with 5 and names
the first one's PID. Its control socket is $XDG_RUNTIME_DIR/sshmail/control.
Under systemd use contrib/sshmail.service (systemctl --user enable --now sshmail).
Exit codes: 0 stopped on request, 2 the control socket cannot be made,
5 the config is wrong or a daemon already runs, 6 the config holding a password
is readable by others.";

/// `sshmail daemon` options.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Config file [default: $XDG_CONFIG_HOME/sshmail/config.toml].
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log to the local syslog (/dev/log, facility mail) instead of stderr.
    #[arg(long)]
    pub syslog: bool,
}

/// Which daemon to talk to.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The daemon running this config file [default: $XDG_CONFIG_HOME/sshmail/config.toml].
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `sshmail status` options.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Accounts to show; default: all.
    #[arg(value_name = "ACCOUNT")]
    pub accounts: Vec<String>,
    /// Print the status as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
    /// Stream events as they happen (new mail, connections, errors, logins
    /// needed, the outbox), one line each (with --json, one JSON object),
    /// until the daemon stops.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub daemon: ControlArgs,
}

/// `sshmail poll` options.
#[derive(Debug, Args)]
pub struct PollArgs {
    /// Accounts to poll; default: all.
    #[arg(value_name = "ACCOUNT")]
    pub accounts: Vec<String>,
    #[command(flatten)]
    pub daemon: ControlArgs,
}

/// `sshmail fetch` options.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Accounts to fetch (names of [account.NAME] tables); default: all.
    #[arg(value_name = "ACCOUNT")]
    pub accounts: Vec<String>,
    /// Config file [default: $XDG_CONFIG_HOME/sshmail/config.toml].
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Fetch from this SSH host without a config file: [USER@]HOST[:PORT]
    /// (a ~/.ssh/config Host alias works too).
    #[arg(help_heading = "SSH", long, value_name = "DEST")]
    pub ssh: Option<String>,
    /// Use POP3 (the default).
    #[arg(help_heading = "Mail server", long, conflicts_with = "imap")]
    pub pop3: bool,
    /// Use IMAP (by default through an exec channel running the remote imapd).
    #[arg(long, help_heading = "Mail server")]
    pub imap: bool,
    /// How to reach the server: forward (SSH direct-tcpip), exec (remote
    /// imapd, PREAUTH), command (local --tunnel command), tls, starttls.
    #[arg(help_heading = "Mail server", long, value_name = "HOW")]
    pub via: Option<String>,
    /// The remote IMAP server binary for --via exec [default: detected].
    ///
    /// When not given, the usual paths of Dovecot, GNU mailutils, UW and
    /// Courier are tried on the SSH host, and the one found is named with -v.
    #[arg(help_heading = "Mail server", long, value_name = "CMD")]
    pub imapd: Option<String>,
    /// Local command whose stdin/stdout reach the server (--via command),
    /// run by /bin/sh -c, e.g. 'ssh -q host /usr/sbin/imapd'.
    #[arg(help_heading = "Mail server", long, value_name = "CMD")]
    pub tunnel: Option<String>,
    /// IMAP folder or LIST pattern (repeatable) [default: INBOX].
    #[arg(help_heading = "What to fetch", long = "folder", value_name = "NAME")]
    pub folders: Vec<String>,
    /// After delivery: keep, seen (IMAP), delete [default: delete].
    #[arg(help_heading = "What to fetch", long, value_name = "POLICY", conflicts_with = "keep")]
    pub policy: Option<String>,
    /// IMAP: fetch only messages without \Seen.
    #[arg(long, help_heading = "What to fetch")]
    pub only_unseen: bool,
    /// Extra CA certificates (PEM) for --via tls/starttls.
    #[arg(help_heading = "Mail server", long, value_name = "FILE")]
    pub tls_ca_file: Option<String>,
    /// Accept exactly the server certificate with this SHA-256 (hex).
    #[arg(help_heading = "Mail server", long, value_name = "HEX")]
    pub tls_fingerprint: Option<String>,
    /// IMAP: fetch a folder whose UIDVALIDITY changed again from scratch, when
    /// the ledger cannot recognise what it delivered before (mail arrives twice).
    ///
    /// That is a ledger written before fingerprints were kept. Otherwise,
    /// mail delivered before is recognised by its header and not fetched again.
    #[arg(long, help_heading = "What to fetch")]
    pub accept_uidvalidity_change: bool,
    /// Only check for mail, like fetchmail --check: log in, count what is
    /// new, leave; exit 0 if there is new mail, 1 if not. Changes nothing.
    #[arg(long, help_heading = "What to fetch", conflicts_with = "idle")]
    pub check: bool,
    /// IMAP: after fetching, stay and wait for new mail (IDLE) on the first
    /// folder, fetching it as it comes; reconnects after failures.
    ///
    /// One account only. SIGTERM or SIGINT ends the IDLE and the session
    /// (DONE, LOGOUT) and exits 0; a second one exits at once.
    #[arg(long, help_heading = "What to fetch")]
    pub idle: bool,
    /// With --idle: fetch at least every SECS seconds, whatever IDLE reports
    /// (some servers never report new mail while idling) [default: 300].
    ///
    /// GNU imap4d is one such server. Config key `interval`.
    #[arg(help_heading = "What to fetch", long, value_name = "SECS")]
    pub interval: Option<u64>,
    /// Largest message to fetch, in bytes; larger ones stay on the server.
    ///
    /// Each one left is reported, and the run exits 7.
    #[arg(help_heading = "What to fetch", long, value_name = "BYTES")]
    pub max_message_size: Option<u64>,
    /// Mail server [default: localhost:110 for POP3, localhost:143 for IMAP,
    /// as seen from the SSH host].
    #[arg(help_heading = "Mail server", long, value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// Mail login name [default: the SSH user].
    #[arg(help_heading = "Mail server", long, value_name = "NAME")]
    pub user: Option<String>,
    /// Shell command that prints the mail password.
    ///
    /// It prints the password on its first line. It runs before the
    /// connection is made, must finish within the timeout, may print at most
    /// 4 KiB, and must print something; otherwise sshmail exits 5 with what it
    /// said on stderr.
    #[arg(help_heading = "Mail server", long, value_name = "CMD")]
    pub password_command: Option<String>,
    /// Login method: auto, user (POP3 USER/PASS, IMAP LOGIN), apop (POP3),
    /// plain (SASL PLAIN).
    #[arg(help_heading = "Mail server", long, value_name = "METHOD")]
    pub auth: Option<String>,
    /// Leave messages on the server (fetch only those not fetched before).
    #[arg(help_heading = "What to fetch", long, short = 'k')]
    pub keep: bool,
    /// Fetch all messages, also those fetched before.
    #[arg(help_heading = "What to fetch", long, short = 'a')]
    pub all: bool,
    /// Ask for SSH compression (like ssh -C).
    #[arg(help_heading = "SSH", long, short = 'C')]
    pub compress: bool,
    /// Where to deliver: maildir:PATH, mbox:PATH, mda:COMMAND,
    /// smtp:HOST[:PORT], lmtp:HOST:PORT or lmtp:/SOCKET
    /// [default: maildir:~/Maildir].
    ///
    /// In an MDA command, %F is the envelope sender and %T the recipient.
    #[arg(help_heading = "Delivery", long, value_name = "SPEC")]
    pub deliver: Option<String>,
    /// IMAP into a Maildir: each folder into its own Maildir++ subfolder
    /// (INBOX into the Maildir itself, lists/rust into .lists.rust).
    #[arg(long, help_heading = "Delivery")]
    pub subfolders: bool,
    /// Do not add a Received: line to delivered messages.
    #[arg(long, help_heading = "Delivery")]
    pub no_received: bool,
    /// Local recipient for smtp/lmtp (RCPT TO) and mda (%T) [default: $USER].
    #[arg(help_heading = "Delivery", long, value_name = "ADDR")]
    pub recipient: Option<String>,
    /// SSH identity file (may be repeated).
    ///
    /// Tried after the ssh-agent's keys.
    #[arg(help_heading = "SSH", long, short = 'i', value_name = "FILE")]
    pub identity: Vec<String>,
    /// known_hosts file to use instead of ~/.ssh/known_hosts.
    #[arg(help_heading = "SSH", long, value_name = "FILE")]
    pub known_hosts: Option<String>,
    /// Trust an unknown host key on first use and record it (never a changed one).
    ///
    /// The key is recorded hashed. A changed or revoked key is always refused.
    #[arg(long, help_heading = "SSH")]
    pub accept_new_host_key: bool,
    /// Seconds any single wait may take; a frozen link is noticed within it.
    ///
    /// Within it [default: 30], each reply line must complete, or a message
    /// body must keep arriving at 1 KiB/s or more. A frozen SSH link is
    /// noticed sooner, by keepalives (ServerAliveInterval, default 4 s, and
    /// ServerAliveCountMax, default 2, from ~/.ssh/config): within 12 s.
    #[arg(help_heading = "SSH", long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Directory for the delivery ledgers [default: $XDG_STATE_HOME/sshmail].
    #[arg(help_heading = "Delivery", long, value_name = "DIR")]
    pub state_dir: Option<String>,
    /// ssh_config file to read instead of ~/.ssh/config.
    #[arg(help_heading = "SSH", long, short = 'F', value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
}
