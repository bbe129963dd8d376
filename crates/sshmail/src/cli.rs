//! Command line: argument parsing, logging set-up, exit codes.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Command as ConfigCommand, RawAccount};
use crate::error::{Error, Exit};
use crate::fetch::{self, Cycle, human_bytes};
use crate::ssh::{SshPool, target};
use crate::stop::Stop;
use crate::transport::Route;

/// How many accounts are fetched at the same time.
const ACCOUNTS_AT_ONCE: usize = 4;

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
    #[command(after_help = EXIT_CODES)]
    Fetch(Box<FetchArgs>),
    /// Run in the foreground: every account and folder of the config, IMAP
    /// folders watched by IDLE, POP3 polled; driven by signals (SIGUSR1:
    /// poll now, SIGHUP: reload, SIGTERM: stop) and by `sshmail status`,
    /// `poll`, `reload` and `stop`.
    #[command(after_help = DAEMON_HELP)]
    Daemon(DaemonArgs),
    /// Show what the running daemon is doing, per account and folder.
    #[command(after_help = "Exit codes: 0 the daemon answered, 2 none runs for this config.")]
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
    #[command(after_help = SENDMAIL_HELP, disable_help_flag = true)]
    Sendmail(SendmailArgs),
    /// List the outbox (also run as `mailq`), try it now, or remove an entry.
    #[command(after_help = "Exit codes: 0, 69 a message was refused for good, 75 some stay queued, 78 config.")]
    Queue(QueueArgs),
    /// Turn another program's configuration into an sshmail config.
    Import(ImportArgs),
}

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

const SENDMAIL_HELP: &str = "\
sshmail sendmail [-t] [-f FROM | -r FROM] [-F NAME] [-i | -oi] [-oem] [-odi | -odb]
                 [-B8BITMIME] [-N …] [-R …] [-v] [--account A] [--config FILE]
                 [--no-queue] [--] [RCPT…] < message
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

/// `sshmail serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Accounts whose endpoints to serve; default: all.
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
    pub accounts: Vec<String>,
    /// Print the status as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub daemon: ControlArgs,
}

/// `sshmail poll` options.
#[derive(Debug, Args)]
pub struct PollArgs {
    /// Accounts to poll; default: all.
    pub accounts: Vec<String>,
    #[command(flatten)]
    pub daemon: ControlArgs,
}

/// `sshmail fetch` options.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Accounts to fetch (names of [account.NAME] tables); default: all.
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
    #[arg(long, help_heading = "What to fetch")]
    pub accept_uidvalidity_change: bool,
    /// Only check for mail, like fetchmail --check: log in, count what is
    /// new, leave; exit 0 if there is new mail, 1 if not. Changes nothing.
    #[arg(long, help_heading = "What to fetch", conflicts_with = "idle")]
    pub check: bool,
    /// IMAP: after fetching, stay and wait for new mail (IDLE) on the first
    /// folder, fetching it as it comes; reconnects after failures.
    #[arg(long, help_heading = "What to fetch")]
    pub idle: bool,
    /// With --idle: fetch at least every SECS seconds, whatever IDLE reports
    /// (some servers never report new mail while idling) [default: 300].
    #[arg(help_heading = "What to fetch", long, value_name = "SECS")]
    pub interval: Option<u64>,
    /// Largest message to fetch, in bytes; larger ones stay on the server.
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
    #[arg(help_heading = "SSH", long, short = 'i', value_name = "FILE")]
    pub identity: Vec<String>,
    /// known_hosts file to use instead of ~/.ssh/known_hosts.
    #[arg(help_heading = "SSH", long, value_name = "FILE")]
    pub known_hosts: Option<String>,
    /// Trust an unknown host key on first use and record it (never a changed one).
    #[arg(long, help_heading = "SSH")]
    pub accept_new_host_key: bool,
    /// Seconds any single wait may take; a frozen link is noticed within it.
    #[arg(help_heading = "SSH", long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Directory for the delivery ledgers [default: $XDG_STATE_HOME/sshmail].
    #[arg(help_heading = "Delivery", long, value_name = "DIR")]
    pub state_dir: Option<String>,
    /// ssh_config file to read instead of ~/.ssh/config.
    #[arg(help_heading = "SSH", long, short = 'F', value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    // Installed or linked as `sendmail` / `mailq`: sendmail's command line.
    let argv: Vec<String> = std::env::args().collect();
    let name = argv.first().map(|a| Path::new(a).file_name().unwrap_or_default().to_string_lossy().to_string());
    match name.as_deref() {
        Some("sendmail") => return run_sendmail(&argv[1..], false),
        Some("mailq") => return run_sendmail(&argv[1..], true),
        _ => {}
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => Exit::Usage.code(),
            };
        }
    };
    match &cli.command {
        Cmd::Sendmail(a) => return run_sendmail(&a.args, false),
        Cmd::Queue(q) => return run_queue(&cli, q),
        Cmd::Import(ImportArgs { what: ImportWhat::Fetchmailrc { file } }) => {
            return crate::import::run(file.as_deref()).code();
        }
        _ => {}
    }
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sshmail: cannot start: {e}");
            return Exit::Connect.code();
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Cmd::Fetch(ref args) => run_fetch(&cli, args).await,
            Cmd::Daemon(ref args) => crate::daemon::run(args.config.as_deref(), crate::daemon::Mode::daemon()).await,
            Cmd::Serve(ref args) => {
                let mode = crate::daemon::Mode { fetch: false, accounts: args.accounts.clone() };
                crate::daemon::run(args.config.as_deref(), mode).await
            }
            Cmd::Tunnel(ref args) => {
                let service = args.protocol.as_deref().and_then(config::Service::parse);
                crate::tunnel::run(args.daemon.config.as_deref(), &args.account, service).await
            }
            Cmd::Sendmail(_) | Cmd::Queue(_) | Cmd::Import(_) => unreachable!("run before the runtime"),
            Cmd::Status(ref args) => status(args).await,
            Cmd::Poll(ref args) => poll(&cli, args).await,
            Cmd::Reload(ref args) => reload(args).await,
            Cmd::Stop(ref args) => stop(args).await,
        }
    });
    if matches!(cli.command, Cmd::Tunnel(_)) {
        // The client waits for the tunnel to exit; a read of stdin may be
        // pending in a thread.
        runtime.shutdown_background();
    } else {
        // Channels close from spawned tasks; give them a moment, bounded.
        runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    }
    code.code()
}

/// `sendmail ARGS` (`mailq` when `list`), with sendmail's exit codes.
fn run_sendmail(args: &[String], list: bool) -> i32 {
    let verbose = args.iter().any(|a| a == "-v");
    crate::logging::init(crate::logging::Target::Stderr, if verbose { "sshmail=info,warn" } else { "warn" }, false);
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        eprintln!("sendmail: cannot start");
        return crate::send::sysexits::TEMPFAIL;
    };
    let config = crate::send::args::parse(args).ok().and_then(|a| a.config);
    let daemon = DaemonRelay { config };
    let code = runtime.block_on(crate::send::sendmail(args, list, &daemon));
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

/// The daemon of the config, asked over its control socket to relay an
/// outbox entry.
struct DaemonRelay {
    config: Option<PathBuf>,
}

impl crate::send::Relayer for DaemonRelay {
    fn relay(
        &self,
        id: &str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<crate::send::Attempt>> + Send + '_>> {
        let id = id.to_string();
        Box::pin(async move {
            let paths = control_paths(&ControlArgs { config: self.config.clone() });
            let command = crate::daemon::control::Command::Send { id };
            let wait = std::time::Duration::from_secs(70);
            match crate::daemon::control::ask(&paths, command, wait).await {
                Ok(r) if r.ok => r.sent,
                _ => None,
            }
        })
    }
}

/// `sshmail queue [flush | remove ID]`.
fn run_queue(cli: &Cli, q: &QueueArgs) -> i32 {
    init_logging(cli);
    use crate::send::{outbox::Outbox, sysexits};
    let outbox = match Outbox::open(&Outbox::default_dir()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sshmail: {e}");
            return sysexits::TEMPFAIL;
        }
    };
    match &q.action {
        None => crate::send::list_queue(&outbox),
        Some(QueueAction::Remove { id }) => match outbox.remove(id) {
            Ok(true) => sysexits::OK,
            Ok(false) => {
                eprintln!("sshmail: no entry {id} in the outbox ({})", outbox.dir().display());
                sysexits::USAGE
            }
            Err(e) => {
                eprintln!("sshmail: {e}");
                sysexits::TEMPFAIL
            }
        },
        Some(QueueAction::Flush { config }) => {
            let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
                return sysexits::TEMPFAIL;
            };
            let code = runtime.block_on(crate::send::flush(&outbox, config.as_deref()));
            runtime.shutdown_timeout(std::time::Duration::from_millis(200));
            code
        }
    }
}

fn init_logging(cli: &Cli) {
    let (target, daemon) = match &cli.command {
        Cmd::Daemon(a) => (crate::logging::Target::choose(a.syslog), true),
        Cmd::Serve(a) => (crate::logging::Target::choose(a.syslog), true),
        _ => (crate::logging::Target::Stderr, false),
    };
    let default = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
            // The daemon says what it delivered and what failed; what each
            // cycle does shows from -v on.
            0 if daemon => "sshmail::daemon=info,sshmail::gateway=info,sshmail::send=info,warn",
            0 => "warn",
            1 => "sshmail=info,warn",
            2 => "sshmail=debug,info",
            _ => "trace",
        }
    };
    crate::logging::init(target, default, cli.verbose >= 2);
}

/// The control socket of the daemon for `args`' config.
fn control_paths(args: &ControlArgs) -> crate::daemon::control::Paths {
    let (path, default) = crate::daemon::config_path(args.config.as_deref());
    crate::daemon::control::Paths::for_config(&path, default)
}

/// Sends a request; prints why when there is no answer.
async fn ask(
    args: &ControlArgs,
    command: crate::daemon::control::Command,
    wait: std::time::Duration,
) -> Result<crate::daemon::control::Response, Exit> {
    use crate::daemon::control::NoAnswer;
    match crate::daemon::control::ask(&control_paths(args), command, wait).await {
        Ok(r) => Ok(r),
        Err(NoAnswer::NotRunning(why) | NoAnswer::Failed(why)) => {
            eprintln!("sshmail: {why}");
            Err(Exit::Connect)
        }
    }
}

async fn status(args: &StatusArgs) -> Exit {
    use crate::daemon::control::Command;
    let command = Command::Status { accounts: args.accounts.clone() };
    let response = match ask(&args.daemon, command, std::time::Duration::from_secs(10)).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    let Some(status) = response.status.filter(|_| response.ok) else {
        eprintln!("sshmail: the daemon refused: {}", response.error.unwrap_or_default());
        return Exit::Connect;
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
    } else {
        print!("{}", status.render());
    }
    Exit::Delivered
}

async fn poll(cli: &Cli, args: &PollArgs) -> Exit {
    use crate::daemon::control::Command;
    let command = Command::Poll { accounts: args.accounts.clone() };
    let response = match ask(&args.daemon, command, std::time::Duration::from_secs(660)).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    if !response.ok {
        eprintln!("sshmail: {}", response.error.unwrap_or_default());
        return Exit::Usage;
    }
    let mut exit = Exit::NoMail;
    for p in &response.polled {
        match &p.error {
            Some(e) => {
                eprintln!("sshmail: {}: {}: {e}", p.account, p.folder);
                exit = Exit::Connect;
            }
            None => {
                if p.delivered > 0 && exit == Exit::NoMail {
                    exit = Exit::Delivered;
                }
                if !cli.quiet {
                    println!("{}: {}: {} new", p.account, p.folder, p.delivered);
                }
            }
        }
    }
    exit
}

async fn reload(args: &ControlArgs) -> Exit {
    match ask(args, crate::daemon::control::Command::Reload, std::time::Duration::from_secs(30)).await {
        Ok(r) if r.ok => Exit::Delivered,
        Ok(r) => {
            eprintln!(
                "sshmail: reload refused, the daemon runs on with the config it had: {}",
                r.error.unwrap_or_default()
            );
            Exit::Usage
        }
        Err(e) => e,
    }
}

async fn stop(args: &ControlArgs) -> Exit {
    let paths = control_paths(args);
    match ask(args, crate::daemon::control::Command::Stop, std::time::Duration::from_secs(10)).await {
        Ok(r) if r.ok => {}
        Ok(r) => {
            eprintln!("sshmail: the daemon refused to stop: {}", r.error.unwrap_or_default());
            return Exit::Connect;
        }
        Err(e) => return e,
    }
    // Stopped once its lock is free.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if !crate::daemon::control::held(&paths) {
            return Exit::Delivered;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    eprintln!("sshmail: the daemon did not stop within 15 s");
    Exit::Connect
}

async fn run_fetch(cli: &Cli, args: &FetchArgs) -> Exit {
    let accounts = match accounts_for(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sshmail: {e}");
            return e.exit();
        }
    };
    let ssh_config = match target::load_ssh_config(args.ssh_config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sshmail: {e}");
            return e.exit();
        }
    };
    let mut accounts = accounts;
    // Each account's route, `~/.ssh/config` applied once; an account whose
    // route cannot be made fails alone, like any other account error.
    let mut routes = Vec::with_capacity(accounts.len());
    for a in &mut accounts {
        let route = crate::transport::route_account(a, ssh_config.as_ref());
        if a.adhoc && !a.login.user_given && route.as_ref().is_ok_and(|r| r.ssh.is_some()) {
            a.name = adhoc_name(a, args.ssh.as_deref().unwrap_or_default());
        }
        routes.push(route);
    }
    let interactive = std::io::stderr().is_terminal() && !cli.quiet;
    let show = Cycle { idle: args.idle, check: args.check, ..Cycle::default() };
    if args.idle {
        if accounts.len() != 1 || accounts[0].protocol != config::Protocol::Imap {
            eprintln!("sshmail: --idle takes exactly one IMAP account");
            return Exit::Usage;
        }
        let route = match routes.remove(0) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("sshmail: {}: {e}", accounts[0].name);
                return e.exit();
            }
        };
        crate::stop::on_signals();
        // One pool for the whole watch: a dead connection is replaced on
        // the next lease, a live one reused.
        let ctx = fetch::Context::new(SshPool::new().prompting(), Stop::process(), Arc::new(fetch::report::Quiet));
        return idle_forever(&accounts[0], &route, &show, &ctx).await;
    }
    // Accounts run concurrently (a few at a time), sharing SSH connections;
    // results are reported in the order the accounts were given.
    let limit = Arc::new(tokio::sync::Semaphore::new(ACCOUNTS_AT_ONCE));
    // A progress bar for one account on a terminal; several would fight
    // over the line.
    let report: Arc<dyn fetch::report::Report> = if interactive && !args.check && accounts.len() == 1 {
        Arc::new(fetch::report::Terminal)
    } else {
        Arc::new(fetch::report::Quiet)
    };
    let ctx = fetch::Context::new(SshPool::new().prompting(), Stop::process(), report);
    let handles: Vec<_> = accounts
        .iter()
        .cloned()
        .zip(routes)
        .map(|(account, route)| {
            let (ctx, limit, show) = (ctx.clone(), limit.clone(), show.clone());
            tokio::spawn(async move {
                let route = route?;
                let _permit = limit.acquire_owned().await;
                fetch::fetch_account(&account, &route, &show, &ctx).await
            })
        })
        .collect();
    let mut worst: Option<Exit> = None;
    let mut any_mail = false;
    for (account, handle) in accounts.iter().zip(handles) {
        let result = handle.await.unwrap_or_else(|e| Err(Error::Delivery(format!("the fetch task failed: {e}"))));
        match result {
            Ok(o) if args.check => {
                any_mail |= o.waiting > 0;
                if !cli.quiet {
                    println!(
                        "{}: {} new of {} ({})",
                        account.name,
                        o.waiting,
                        o.on_server,
                        human_bytes(o.waiting_bytes)
                    );
                }
                for e in &o.folder_errors {
                    eprintln!("sshmail: {}: {e}", account.name);
                    worst = worst.max(Some(Exit::Server));
                }
            }
            Ok(o) => {
                any_mail |= o.delivered > 0;
                if interactive || cli.verbose > 0 {
                    eprintln!(
                        "{}: {} new of {} ({}), {} deleted{}{}",
                        account.name,
                        o.delivered,
                        o.on_server,
                        human_bytes(o.bytes),
                        o.deleted,
                        if o.refused > 0 { format!(", {} refused by the server", o.refused) } else { String::new() },
                        if o.recovered > 0 {
                            format!(", {} finished from an interrupted run", o.recovered)
                        } else {
                            String::new()
                        },
                    );
                }
                if o.refused > 0 || !o.folder_errors.is_empty() || !o.policy_errors.is_empty() {
                    worst = worst.max(Some(Exit::Server));
                }
                for e in &o.policy_errors {
                    eprintln!("sshmail: {}: {e}", account.name);
                }
                if !o.undelivered.is_empty() {
                    worst = worst.max(Some(Exit::Delivery));
                    eprintln!(
                        "sshmail: {}: {} messages not delivered, left on the server: {}",
                        account.name,
                        o.undelivered.len(),
                        o.undelivered.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                    );
                }
                for e in &o.folder_errors {
                    eprintln!("sshmail: {}: {e}", account.name);
                }
            }
            Err(e) => {
                eprintln!("sshmail: {}: {e}", account.name);
                worst = worst.max(Some(e.exit()));
            }
        }
    }
    ctx.pool.close_all().await;
    match worst {
        Some(e) => e,
        None if any_mail => Exit::Delivered,
        None => Exit::NoMail,
    }
}

/// IDLE on one account; after a failure, reconnect: at once when a
/// connection that worked dropped (once; [`crate::error::Retry::Now`]),
/// else with growing pauses (5 s doubling to 5 min). Ends on errors a retry cannot fix, and on
/// SIGTERM/SIGINT, after ending the IDLE (DONE) and the session (LOGOUT):
/// exit 0 then.
async fn idle_forever(account: &config::Account, route: &Route, show: &Cycle, ctx: &fetch::Context) -> Exit {
    use crate::error::Retry;
    const FIRST_PAUSE: std::time::Duration = std::time::Duration::from_secs(5);
    let mut pause = FIRST_PAUSE;
    let stop = &ctx.stop;
    // A connection that worked and dropped is tried again at once, but
    // not twice in a row: one that drops again at once backs off.
    let mut at_once = false;
    let exit = loop {
        let started = std::time::Instant::now();
        let result = fetch::fetch_account(account, route, show, ctx).await;
        // A session that lasted is a fresh start for the back-off.
        if started.elapsed() > std::time::Duration::from_secs(600) {
            pause = FIRST_PAUSE;
            at_once = false;
        }
        match result {
            Ok(_) => break Exit::Delivered,
            Err(_) if stop.requested() => break Exit::Delivered,
            Err(e) if e.retry() == Retry::Now && !at_once => {
                eprintln!("sshmail: {}: {e}; reconnecting", account.name);
                at_once = true;
            }
            Err(e) if e.retry() != Retry::Never => {
                eprintln!("sshmail: {}: {e}; retrying in {} s", account.name, pause.as_secs());
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.wait() => break Exit::Delivered,
                }
                pause = (pause * 2).min(std::time::Duration::from_secs(300));
                at_once = false;
            }
            Err(e) => {
                eprintln!("sshmail: {}: {e}", account.name);
                break e.exit();
            }
        }
    };
    ctx.pool.close_all().await;
    exit
}

/// How an ad-hoc account is named in messages (its ledger is named after
/// the mailbox itself: fetch::mailbox_identity).
fn adhoc_name(account: &config::Account, dest: &str) -> String {
    match &account.reach.via {
        config::Via::Forward => format!("{} via {dest}", account.address()),
        config::Via::Exec(_) => format!("imap on {dest}"),
        config::Via::Command(c) => {
            crate::process::command(c, "tunnel").map(|(_, shown)| shown).unwrap_or_else(|_| "tunnel".to_string())
        }
        config::Via::Tls | config::Via::StartTls => account.address(),
    }
}

fn accounts_for(args: &FetchArgs) -> Result<Vec<config::Account>, Error> {
    let overrides = RawAccount {
        ssh: args.ssh.clone(),
        protocol: if args.imap { Some("imap".to_string()) } else { args.pop3.then(|| "pop3".to_string()) },
        via: args.via.clone(),
        imapd: args.imapd.clone().map(ConfigCommand::Shell),
        tunnel: args.tunnel.clone().map(ConfigCommand::Shell),
        folders: (!args.folders.is_empty()).then(|| args.folders.clone()),
        policy: args.policy.clone(),
        only_unseen: args.only_unseen.then_some(true),
        tls_ca_file: args.tls_ca_file.clone(),
        tls_fingerprint: args.tls_fingerprint.clone(),
        accept_uidvalidity_change: args.accept_uidvalidity_change.then_some(true),
        max_message_size: args.max_message_size,
        interval: args.interval,
        received: args.no_received.then_some(false),
        maildir_subfolders: args.subfolders.then_some(true),
        recipient: args.recipient.clone(),
        server: args.server.clone(),
        user: args.user.clone(),
        password_command: args.password_command.clone().map(ConfigCommand::Shell),
        auth: args.auth.clone(),
        keep: args.keep.then_some(true),
        fetch_all: args.all.then_some(true),
        compress: args.compress.then_some(true),
        deliver: args.deliver.clone(),
        identity: (!args.identity.is_empty()).then(|| args.identity.clone()),
        known_hosts: args.known_hosts.clone(),
        host_key_policy: args.accept_new_host_key.then(|| "accept-new".to_string()),
        timeout: args.timeout,
        ..Default::default()
    };
    let adhoc = args.ssh.is_some() || args.tunnel.is_some() || matches!(args.via.as_deref(), Some("tls" | "starttls"));
    if adhoc {
        if !args.accounts.is_empty() {
            return Err(Error::Config("give either account names or --ssh/--tunnel/--via, not both".into()));
        }
        // The name shows in messages; the ledger is named after the mailbox
        // itself (fetch::mailbox_identity), so two mailboxes on one host
        // never share one.
        let mut account = config::resolve("adhoc", &overrides, args.state_dir.as_deref())?;
        account.adhoc = true;
        account.name = adhoc_name(&account, args.ssh.as_deref().unwrap_or_default());
        return Ok(vec![account]);
    }
    let path = args.config.clone().unwrap_or_else(config::default_config_path);
    if args.config.is_none() && !path.exists() {
        return Err(Error::Config(format!(
            "no config file at {}; write one (see `man sshmail`) or give --ssh HOST",
            path.display()
        )));
    }
    let raw = config::load(&path)?;
    let state_dir = args.state_dir.clone().or(raw.state_dir.clone());
    let names: Vec<String> =
        if args.accounts.is_empty() { raw.account.keys().cloned().collect() } else { args.accounts.clone() };
    if names.is_empty() {
        return Err(Error::Config(format!("{} defines no [account.NAME]", path.display())));
    }
    let named = !args.accounts.is_empty();
    let mut accounts = Vec::with_capacity(names.len());
    for n in &names {
        let base =
            raw.account.get(n).ok_or_else(|| Error::Config(format!("no account {n:?} in {}", path.display())))?;
        let account = config::resolve(n, &merge(base, &overrides), state_dir.as_deref())?;
        match account.fetch.enabled {
            true => accounts.push(account),
            false if named => {
                return Err(Error::Config(format!(
                    "account {n} has fetch = false: it is only served (or used to send), not fetched"
                )));
            }
            false => {}
        }
    }
    if accounts.is_empty() {
        return Err(Error::Config(format!("every account in {} has fetch = false", path.display())));
    }
    Ok(accounts)
}

/// Command-line values win over the file's.
fn merge(base: &RawAccount, over: &RawAccount) -> RawAccount {
    let mut m = base.clone();
    macro_rules! take {
        ($($f:ident),*) => { $( if over.$f.is_some() { m.$f = over.$f.clone(); } )* };
    }
    take!(
        protocol,
        server,
        user,
        auth,
        keep,
        fetch_all,
        compress,
        deliver,
        identity,
        known_hosts,
        host_key_policy,
        timeout,
        via,
        imapd,
        tunnel,
        folders,
        policy,
        only_unseen,
        tls_ca_file,
        tls_fingerprint,
        accept_uidvalidity_change,
        max_message_size,
        interval,
        received,
        recipient,
        maildir_subfolders
    );
    if over.policy.is_some() {
        m.keep = None;
    }
    if over.keep.is_some() {
        m.policy = None;
    }
    if over.password_command.is_some() {
        m.password = None;
        m.password_command = over.password_command.clone();
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn man_page_documents_every_option() {
        use clap::CommandFactory;
        let man = include_str!("../../../doc/sshmail.1").replace("\\-", "-");
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            assert!(
                man.contains(&format!("sshmail {}", sub.get_name())),
                "doc/sshmail.1 does not show {}",
                sub.get_name()
            );
            for arg in sub.get_arguments().chain(cli.get_arguments()) {
                if let Some(long) = arg.get_long() {
                    if matches!(long, "help" | "version") {
                        continue;
                    }
                    assert!(man.contains(&format!("--{long}")), "doc/sshmail.1 does not document --{long}");
                }
            }
        }
    }

    #[test]
    fn exit_codes_match_fetchmail() {
        let codes: Vec<i32> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5, 6, 7, 10]);
    }

    #[test]
    fn command_line_overrides_file() {
        let base =
            RawAccount { ssh: Some("h".into()), keep: Some(false), password: Some("x".into()), ..Default::default() };
        let over = RawAccount {
            keep: Some(true),
            password_command: Some(ConfigCommand::Shell("p".into())),
            ..Default::default()
        };
        let m = merge(&base, &over);
        assert_eq!(m.keep, Some(true));
        assert!(m.password.is_none() && m.password_command.is_some());
        assert_eq!(m.ssh.as_deref(), Some("h"));
    }
}
