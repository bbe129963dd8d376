//! Command line: argument parsing, logging set-up, exit codes.

use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::Arc;

use clap::Parser as _;

mod args;
mod login;
pub use args::*;

use crate::config::{self, Command as ConfigCommand, RawAccount};
use crate::error::{Error, Exit};
use crate::fetch::{self, Cycle, human_bytes};
use crate::ssh::SshPool;
use crate::stop::Stop;

/// How many accounts are fetched at the same time.
const ACCOUNTS_AT_ONCE: usize = 4;

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
        Cmd::Completions { shell } => return print_generated(generated::completions(*shell)),
        Cmd::Man => return print_generated(generated::MAN_PAGE),
        _ => {}
    }
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            crate::errln!("sshmail: cannot start: {e}");
            return Exit::Connect.code();
        }
    };
    let code = runtime.block_on(async {
        let code = match cli.command {
            Cmd::Fetch(ref args) => run_fetch(&cli, args).await,
            Cmd::Daemon(ref args) => crate::daemon::run(args.config.as_deref(), crate::daemon::Mode::daemon()).await,
            Cmd::Serve(ref args) => {
                let mode = crate::daemon::Mode { fetch: false, accounts: args.accounts.clone() };
                crate::daemon::run(args.config.as_deref(), mode).await
            }
            Cmd::Tunnel(ref args) => {
                let service = args.protocol.as_deref().and_then(config::Service::parse);
                crate::gateway::tunnel::run(args.daemon.config.as_deref(), &args.account, service).await
            }
            Cmd::Sendmail(_) | Cmd::Queue(_) | Cmd::Import(_) | Cmd::Completions { .. } | Cmd::Man => {
                unreachable!("run before the runtime")
            }
            Cmd::Status(ref args) => status(args).await,
            Cmd::Doctor(ref args) => {
                let args = crate::doctor::Args {
                    accounts: &args.accounts,
                    config: args.config.as_deref(),
                    ssh_config: args.ssh_config.as_deref(),
                };
                crate::doctor::run(args).await
            }
            Cmd::Poll(ref args) => poll(&cli, args).await,
            Cmd::Reload(ref args) => reload(args).await,
            Cmd::Stop(ref args) => stop(args).await,
            Cmd::Login(ref args) => login::run(args.daemon.config.as_deref(), &args.account).await,
        };
        // No child started for a stream outlives the command.
        crate::process::wait_children(crate::process::CHILD_GRACE * 3).await;
        code
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

/// What the build script generated from the clap definitions.
pub mod generated {
    use super::Shell;

    /// The manual page, roff.
    pub const MAN_PAGE: &str = include_str!(concat!(env!("OUT_DIR"), "/sshmail.1"));

    /// The completion script for `shell`.
    pub fn completions(shell: Shell) -> &'static str {
        match shell {
            Shell::Bash => include_str!(concat!(env!("OUT_DIR"), "/sshmail.bash")),
            Shell::Zsh => include_str!(concat!(env!("OUT_DIR"), "/_sshmail")),
            Shell::Fish => include_str!(concat!(env!("OUT_DIR"), "/sshmail.fish")),
        }
    }
}

/// Prints a generated text; a closed stdout (`| head`) is not an error.
fn print_generated(text: &str) -> i32 {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            crate::errln!("sshmail: cannot write: {e}");
            Exit::Usage.code()
        }
        _ => 0,
    }
}

/// `sendmail ARGS` (`mailq` when `list`), with sendmail's exit codes.
fn run_sendmail(args: &[String], list: bool) -> i32 {
    let verbose = args.iter().any(|a| a == "-v");
    crate::logging::init(crate::logging::Target::Stderr, if verbose { "sshmail=info,warn" } else { "warn" }, false);
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        crate::errln!("sendmail: cannot start");
        return crate::send::sysexits::TEMPFAIL;
    };
    let code = runtime.block_on(async {
        let code = crate::send::sendmail(args, list).await;
        // An on_sent hook of a message relayed here runs to its end.
        crate::news::hook::wait_ended().await;
        code
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

/// `sshmail queue [flush | remove ID]`.
fn run_queue(cli: &Cli, q: &QueueArgs) -> i32 {
    init_logging(cli);
    use crate::send::{outbox::Outbox, sysexits};
    let outbox = match Outbox::open(&Outbox::default_dir()) {
        Ok(o) => o,
        Err(e) => {
            crate::errln!("sshmail: {e}");
            return sysexits::TEMPFAIL;
        }
    };
    match &q.action {
        None => crate::send::list_queue(&outbox),
        Some(QueueAction::Remove { id }) => match outbox.remove(id) {
            Ok(true) => sysexits::OK,
            Ok(false) => {
                crate::errln!("sshmail: no entry {id} in the outbox ({})", outbox.dir().display());
                sysexits::USAGE
            }
            Err(e) => {
                crate::errln!("sshmail: {e}");
                sysexits::TEMPFAIL
            }
        },
        Some(QueueAction::Flush { config }) => {
            let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
                return sysexits::TEMPFAIL;
            };
            let code = runtime.block_on(async {
                let code = crate::send::flush(&outbox, config.as_deref()).await;
                crate::news::hook::wait_ended().await;
                code
            });
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
            0 if daemon => "sshmail::daemon=info,sshmail::gateway=info,sshmail::send=info,sshmail::ssh::link=info,warn",
            0 => "warn",
            1 => "sshmail=info,warn",
            2 => "sshmail=debug,info",
            _ => "trace",
        }
    };
    crate::logging::init(target, default, cli.verbose >= 2);
}

/// Sends a request to the daemon of `args`' config; prints why when there
/// is no answer, or when it refused (and exits as the refusal says).
async fn ask(
    args: &ControlArgs,
    command: crate::control::Command,
    wait: std::time::Duration,
) -> Result<crate::control::Response, Exit> {
    match answer(args, command, wait).await? {
        crate::control::Response::Refused(r) => {
            crate::errln!("sshmail: the daemon refused: {}", r.text);
            Err(r.exit())
        }
        r => Ok(r),
    }
}

/// The daemon's answer, a refusal too; prints why when there is none.
async fn answer(
    args: &ControlArgs,
    command: crate::control::Command,
    wait: std::time::Duration,
) -> Result<crate::control::Response, Exit> {
    use crate::control::NoAnswer;
    match crate::control::ask(&crate::control::Paths::of(args.config.as_deref()), command, wait).await {
        Ok(r) => Ok(r),
        Err(NoAnswer::Unsafe(why)) => {
            crate::errln!("sshmail: {why}");
            Err(Exit::Permissions)
        }
        Err(NoAnswer::NotRunning(why, _) | NoAnswer::Failed(why)) => {
            crate::errln!("sshmail: {why}");
            Err(Exit::Connect)
        }
    }
}

/// A response the command did not ask for (a daemon of another build).
fn unexpected(response: &crate::control::Response) -> Exit {
    crate::errln!("sshmail: the daemon answered what was not asked: {response:?}");
    Exit::Connect
}

async fn status(args: &StatusArgs) -> Exit {
    use crate::control::{Command, Response};
    if args.follow {
        return follow(args).await;
    }
    let command = Command::Status { accounts: args.accounts.clone() };
    let status = match ask(&args.daemon, command, std::time::Duration::from_secs(10)).await {
        Ok(Response::Status { status }) => status,
        Ok(other) => return unexpected(&other),
        Err(e) => return e,
    };
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
    } else {
        crate::term::out(status.render().trim_end_matches('\n'));
    }
    Exit::Delivered
}

/// `status --follow`: the daemon's events, a line each, until it stops.
async fn follow(args: &StatusArgs) -> Exit {
    use crate::control::{Command, NoAnswer, Response};
    let paths = crate::control::Paths::of(args.daemon.config.as_deref());
    let command = Command::Follow { accounts: args.accounts.clone() };
    let mut stream = match crate::control::exchange(&paths, command, std::time::Duration::from_secs(10)).await {
        Ok((Response::Done, stream)) => stream,
        Ok((Response::Refused(r), _)) => {
            crate::errln!("sshmail: the daemon refused: {}", r.text);
            return r.exit();
        }
        Ok((other, _)) => return unexpected(&other),
        Err(NoAnswer::Unsafe(why)) => {
            crate::errln!("sshmail: {why}");
            return Exit::Permissions;
        }
        Err(NoAnswer::NotRunning(why, _) | NoAnswer::Failed(why)) => {
            crate::errln!("sshmail: {why}");
            return Exit::Connect;
        }
    };
    loop {
        // Events come when they happen: no deadline but the daemon's end.
        match crate::control::next_reply(&mut stream, &paths, std::time::Duration::MAX).await {
            Ok(Response::Event { event }) => {
                if args.json {
                    crate::outln!("{}", serde_json::to_string(&event).unwrap_or_default());
                } else {
                    crate::term::out(&event.render());
                }
            }
            Ok(other) => return unexpected(&other),
            Err(_) => {
                crate::errln!("sshmail: the daemon stopped");
                return Exit::Delivered;
            }
        }
    }
}

async fn poll(cli: &Cli, args: &PollArgs) -> Exit {
    use crate::control::{Command, Response};
    let command = Command::Poll { accounts: args.accounts.clone() };
    let folders = match ask(&args.daemon, command, std::time::Duration::from_secs(660)).await {
        Ok(Response::Polled { folders }) => folders,
        Ok(other) => return unexpected(&other),
        Err(e) => return e,
    };
    let mut exit = Exit::NoMail;
    for p in &folders {
        match &p.error {
            Some(e) => {
                crate::errln!("sshmail: {}: {}: {e}", p.account, p.folder);
                exit = Exit::Connect;
            }
            None => {
                if p.delivered > 0 && exit == Exit::NoMail {
                    exit = Exit::Delivered;
                }
                if !cli.quiet {
                    crate::outln!("{}: {}: {} new", p.account, p.folder, p.delivered);
                }
            }
        }
    }
    exit
}

async fn reload(args: &ControlArgs) -> Exit {
    use crate::control::{Command, Response};
    match answer(args, Command::Reload, std::time::Duration::from_secs(30)).await {
        Ok(Response::Done) => Exit::Delivered,
        Ok(Response::Refused(r)) => {
            crate::errln!("sshmail: reload refused, the daemon runs on with the config it had: {}", r.text);
            r.exit()
        }
        Ok(other) => unexpected(&other),
        Err(e) => e,
    }
}

async fn stop(args: &ControlArgs) -> Exit {
    use crate::control::{Command, Response};
    let paths = crate::control::Paths::of(args.config.as_deref());
    match ask(args, Command::Stop, std::time::Duration::from_secs(10)).await {
        Ok(Response::Done) => {}
        Ok(other) => return unexpected(&other),
        Err(e) => return e,
    }
    // Stopped once its lock is free.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if !crate::control::held(&paths.lock) {
            return Exit::Delivered;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    crate::errln!("sshmail: the daemon did not stop within 15 s");
    Exit::Connect
}

async fn run_fetch(cli: &Cli, args: &FetchArgs) -> Exit {
    let accounts = match accounts_for(args) {
        Ok(a) => a,
        Err(e) => {
            crate::errln!("sshmail: {e}");
            return e.exit();
        }
    };
    let interactive = std::io::stderr().is_terminal() && !cli.quiet;
    let show = Cycle { idle: args.idle, check: args.check, ..Cycle::default() };
    if args.idle {
        if accounts.len() != 1 || accounts[0].1.as_ref().is_ok_and(|a| a.protocol != config::Protocol::Imap) {
            crate::errln!("sshmail: --idle takes exactly one IMAP account");
            return Exit::Usage;
        }
        let account = match &accounts[0].1 {
            Ok(a) => a,
            Err(e) => {
                crate::errln!("sshmail: {}: {e}", accounts[0].0);
                return e.exit();
            }
        };
        crate::stop::on_signals();
        // One pool for the whole watch: a dead connection is replaced on
        // the next lease, a live one reused.
        let ctx = fetch::Context::new(SshPool::new().prompting(), Stop::process(), Arc::new(fetch::report::Quiet));
        let exit = idle_forever(account, &show, &ctx).await;
        crate::news::hook::wait_all(crate::news::hook::longest([account.hooks.timeout])).await;
        return exit;
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
        .map(|(_, account)| {
            let (ctx, limit, show, account) = (ctx.clone(), limit.clone(), show.clone(), account.clone());
            tokio::spawn(async move {
                let account = account?;
                let _permit = limit.acquire_owned().await;
                fetch::fetch_account(&account, &show, &ctx).await
            })
        })
        .collect();
    let mut worst: Option<Exit> = None;
    let mut any_mail = false;
    for ((name, _), handle) in accounts.iter().zip(handles) {
        let result = handle.await.unwrap_or_else(|e| Err(Error::Delivery(format!("the fetch task failed: {e}"))));
        match result {
            Ok(o) if args.check => {
                any_mail |= o.waiting > 0;
                if !cli.quiet {
                    crate::outln!("{}: {} new of {} ({})", name, o.waiting, o.on_server, human_bytes(o.waiting_bytes));
                }
                for e in &o.folder_errors {
                    crate::errln!("sshmail: {}: {e}", name);
                    worst = worst.max(Some(Exit::Server));
                }
            }
            Ok(o) => {
                any_mail |= o.delivered > 0 || o.recovered > 0;
                if interactive || cli.verbose > 0 {
                    crate::errln!(
                        "{}: {} new of {} ({}), {} deleted{}{}",
                        name,
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
                    crate::errln!("sshmail: {}: {e}", name);
                }
                if !o.undelivered.is_empty() {
                    worst = worst.max(Some(Exit::Delivery));
                    crate::errln!(
                        "sshmail: {}: {} messages not delivered, left on the server: {}",
                        name,
                        o.undelivered.len(),
                        o.undelivered.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                    );
                }
                for e in &o.folder_errors {
                    crate::errln!("sshmail: {}: {e}", name);
                }
            }
            Err(e) => {
                crate::errln!("sshmail: {}: {e}", name);
                worst = worst.max(Some(e.exit()));
            }
        }
    }
    ctx.pool.close_all().await;
    // The hooks told of the new mail run to their end (or timeout) before
    // the exit; their failures are logged, the exit code is the fetch's.
    let hooks = accounts.iter().filter_map(|(_, a)| a.as_ref().ok()).map(|a| a.hooks.timeout);
    crate::news::hook::wait_all(crate::news::hook::longest(hooks)).await;
    match worst {
        Some(e) => e,
        None if any_mail => Exit::Delivered,
        None => Exit::NoMail,
    }
}

/// IDLE on one account; after a failure, reconnect: at once when a
/// connection that worked dropped (once; [`crate::error::Retry::Now`]),
/// else with growing pauses (5 s doubling to 5 min; a session that lasted
/// ten minutes starts them again). Ends on errors a retry cannot fix, and on
/// SIGTERM/SIGINT, after ending the IDLE (DONE) and the session (LOGOUT):
/// exit 0 then.
async fn idle_forever(account: &config::Account, show: &Cycle, ctx: &fetch::Context) -> Exit {
    use std::time::Duration;
    let mut backoff = crate::backoff::Backoff::new(Duration::from_secs(5), Duration::from_secs(300), 0.0);
    let stop = &ctx.stop;
    let exit = loop {
        let started = std::time::Instant::now();
        let result = fetch::fetch_account(account, show, ctx).await;
        if started.elapsed() > Duration::from_secs(600) {
            backoff.reset();
        }
        let e = match result {
            Ok(_) => break Exit::Delivered,
            Err(_) if stop.requested() => break Exit::Delivered,
            Err(e) => e,
        };
        match backoff.next(e.retry()) {
            None => {
                crate::errln!("sshmail: {}: {e}", account.name);
                break e.exit();
            }
            Some(Duration::ZERO) => crate::errln!("sshmail: {}: {e}; reconnecting", account.name),
            Some(pause) => {
                crate::errln!("sshmail: {}: {e}; retrying in {} s", account.name, pause.as_secs());
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.wait() => break Exit::Delivered,
                }
            }
        }
    };
    ctx.pool.close_all().await;
    exit
}

/// An account's name, and the account resolved or why it is not.
type Named = (String, Result<config::Account, Error>);

/// The accounts a fetch takes, each resolved or why not (an account that
/// does not resolve fails alone, like any other account error), in the
/// order given.
fn accounts_for(args: &FetchArgs) -> Result<Vec<Named>, Error> {
    let account = RawAccount {
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
    let overrides =
        config::Overrides { account, state_dir: args.state_dir.clone(), ssh_config: args.ssh_config.clone() };
    let adhoc = args.ssh.is_some() || args.tunnel.is_some() || matches!(args.via.as_deref(), Some("tls" | "starttls"));
    if adhoc {
        if !args.accounts.is_empty() {
            return Err(Error::Config("give either account names or --ssh/--tunnel/--via, not both".into()));
        }
        let account = config::Config::adhoc(&overrides)?;
        return Ok(vec![(account.name.clone(), Ok(account))]);
    }
    let path = args.config.clone().unwrap_or_else(config::default_config_path);
    if args.config.is_none() && !path.exists() {
        return Err(Error::Config(format!(
            "no config file at {}; write one (see `man sshmail`) or give --ssh HOST",
            path.display()
        )));
    }
    let config = config::Config::load(Some(&path), &overrides)?;
    let names: Vec<String> =
        if args.accounts.is_empty() { config.accounts.keys().cloned().collect() } else { args.accounts.clone() };
    if names.is_empty() {
        return Err(Error::Config(format!("{} defines no [account.NAME]", path.display())));
    }
    let named = !args.accounts.is_empty();
    let mut accounts = Vec::with_capacity(names.len());
    for n in &names {
        if !config.accounts.contains_key(n) {
            return Err(Error::Config(format!("no account {n:?} in {}", path.display())));
        }
        // One that does not resolve is taken: it fails alone, saying why.
        match config.account(n) {
            Ok(a) if !a.fetch.enabled && named => {
                return Err(Error::Config(format!(
                    "account {n} has fetch = false: it is only served (or used to send), not fetched"
                )));
            }
            Ok(a) if !a.fetch.enabled => {}
            resolved => accounts.push((n.clone(), resolved.cloned())),
        }
    }
    if accounts.is_empty() {
        return Err(Error::Config(format!("every account in {} has fetch = false", path.display())));
    }
    Ok(accounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// Every command and subcommand, and every option of each, is in the
    /// generated manual page and in each shell's completions.
    #[test]
    fn man_page_and_completions_document_every_command_and_option() {
        use clap::CommandFactory;
        fn walk<'a>(cmd: &'a clap::Command, path: String, out: &mut Vec<(String, &'a clap::Command)>) {
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                out.push((name.clone(), sub));
                walk(sub, name, out);
            }
        }
        let man = generated::MAN_PAGE.replace("\\-", "-").replace("\\fB", "").replace("\\fR", "");
        let cli = Cli::command();
        let mut commands = Vec::new();
        walk(&cli, "sshmail".into(), &mut commands);
        assert!(commands.len() > 15, "{commands:?}");
        for (name, sub) in &commands {
            assert!(man.contains(&format!(".SS \"{name}\"")), "the man page has no section for {name}");
            let last = name.rsplit(' ').next().unwrap();
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                assert!(generated::completions(shell).contains(last), "{shell:?} completions lack {name}");
            }
            for arg in sub.get_arguments().chain(cli.get_arguments()) {
                if let Some(long) = arg.get_long() {
                    if matches!(long, "help" | "version") {
                        continue;
                    }
                    assert!(man.contains(&format!("--{long}")), "the man page does not document {name} --{long}");
                    assert!(generated::completions(Shell::Bash).contains(&format!("--{long}")));
                }
            }
        }
        for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "DAEMON", "SEND", "EXIT STATUS", "FILES"] {
            assert!(man.contains(&format!(".SH {section}\n")), "no {section} section");
        }
        for placeholder in ["@SYNOPSIS@", "@COMMANDS@", "@VERSION@", "@STRINGS@"] {
            assert!(!man.contains(placeholder), "{placeholder} left in the page");
        }
        assert!(man.contains(&format!("sshmail {}", env!("CARGO_PKG_VERSION"))));
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
        let m = base.over(&over);
        assert_eq!(m.keep, Some(true));
        assert!(m.password.is_none() && m.password_command.is_some());
        assert_eq!(m.ssh.as_deref(), Some("h"));
    }
}
