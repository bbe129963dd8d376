//! `sshmail daemon`: every account and folder in one process.
//!
//! Each account × folder is a task ([`task`]): an IMAP folder is watched
//! (IDLE where the server has it, a pass at least every `interval` as the
//! safety net, a catch-up after every reconnect and renewal), a POP3
//! account polled every `interval`. Tasks share the process's SSH pool and
//! ledgers, so accounts on one host share connections (as many as their
//! channels need) and an account's folders share one ledger. A task's
//! failure is retried by its class ([`crate::error::Retry`]), with a
//! back-off; a host that is down holds up only its own tasks.
//!
//! The daemon is driven by signals (SIGUSR1: poll everything; SIGHUP:
//! reload; SIGTERM/SIGINT: stop) and by its control socket ([`control`]:
//! `status`, `poll`, `reload`, `stop`), and shows what each task does on
//! its [`board`].

pub mod board;
pub mod feed;
mod login;
pub mod notify;
mod polls;
mod socket;
mod systemd;
mod task;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::config::{self, Account, DaemonSettings, Listen, Protocol, RawAccount};
use crate::control::status::{Clients, ConnectionStatus, EndpointStatus, Stamp, Status};
use crate::control::{self, Command, Paths, Polled, Refusal, Response, Why};
use crate::error::{Error, Exit, Result};
use crate::fetch::{self, Context, Cycle};
use crate::gateway::{self, Served};
use crate::ledger::Ledgers;
use crate::ssh::SshPool;
use crate::ssh::pool::LinkState;
use crate::stop::{Stop, Tracked};
use board::{Board, Slot};

/// How far apart the first tries of consecutive tasks start.
const STAGGER: Duration = Duration::from_millis(20);
/// The latest any task's first try starts.
const STAGGER_MAX: Duration = Duration::from_secs(2);
/// How long a stop waits for tasks to end cleanly (DONE, LOGOUT, a
/// message in flight finished) before abandoning them.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long `sshmail poll` waits for the passes it asked for.
const POLL_WAIT: Duration = Duration::from_secs(600);
/// How often the outbox is looked at for entries due again.
const OUTBOX_CHECK: Duration = Duration::from_secs(30);
/// Control connections served at once; more wait to be accepted.
const CONTROL_AT_ONCE: usize = 64;
/// How often the clocks are compared to notice a suspend.
const CLOCK_CHECK: Duration = Duration::from_secs(5);

/// What a daemon runs: everything (`sshmail daemon`), or only the
/// endpoints of some accounts (`sshmail serve`).
#[derive(Debug, Clone, Default)]
pub struct Mode {
    /// Fetch the accounts that fetch; false: serve only.
    pub fetch: bool,
    /// Only these accounts (all when empty).
    pub accounts: Vec<String>,
}

impl Mode {
    /// `sshmail daemon`.
    pub fn daemon() -> Mode {
        Mode { fetch: true, accounts: Vec::new() }
    }
}

/// Runs the daemon in the foreground until stopped; returns the exit code.
pub async fn run(config: Option<&Path>, mode: Mode) -> Exit {
    let open_files = raise_open_files();
    let caught = match Signals::catch() {
        Ok(s) => s,
        Err(e) => {
            crate::errln!("sshmail: cannot catch signals: {e}");
            return Exit::Connect;
        }
    };
    let (path, default) = config::config_path(config);
    let paths = Paths::for_config(&path, default);
    if let Err(e) = paths.prepare() {
        crate::errln!("sshmail: {e}");
        return e.exit();
    }
    let _lock = match control::Lock::take(&paths) {
        Ok(l) => l,
        Err(control::Held::By(pid)) => {
            let who = pid.map(|p| format!("PID {p}")).unwrap_or_else(|| "another process".into());
            crate::errln!(
                "sshmail: an sshmail daemon ({who}) already runs for {} (lock {}); `sshmail stop` ends it",
                path.display(),
                paths.lock.display()
            );
            return Exit::Usage;
        }
        Err(control::Held::Error(e)) => {
            crate::errln!("sshmail: {e}");
            return e.exit();
        }
    };
    let plan = match Plan::load(&path, &mode) {
        Ok(p) => p,
        Err(e) => {
            crate::errln!("sshmail: {e}");
            return e.exit();
        }
    };
    let listener = match socket::listen(&paths) {
        Ok(l) => l,
        Err(e) => {
            crate::errln!("sshmail: {e}");
            return e.exit();
        }
    };
    let stop = Stop::process();
    let daemon = Arc::new(Daemon {
        board: Board::new(&path),
        pool: Arc::new(SshPool::with_idle_close(plan.settings.ssh_idle_close).holding_logins()),
        ledgers: Arc::new(Ledgers::bounded(working_at_once(open_files))),
        stop: stop.clone(),
        path: path.clone(),
        running: Mutex::new(BTreeMap::new()),
        supervisors: Mutex::new(JoinSet::new()),
        servers: Mutex::new(JoinSet::new()),
        polls: Arc::default(),
        tunnels: Arc::default(),
        flush_outbox: Notify::new(),
        endpoints: Mutex::new(HashMap::new()),
        control: Tracked::new(CONTROL_AT_ONCE),
        sessions: Arc::new(Tracked::new(plan.settings.max_clients)),
        mode,
    });
    tracing::info!(
        target: "sshmail::daemon",
        "started: {} accounts from {}; control socket {}",
        plan.accounts.len(),
        path.display(),
        paths.socket.display()
    );
    let reap_every = (plan.settings.ssh_idle_close / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let mut background = JoinSet::new();
    background.spawn(signals(daemon.clone(), caught));
    let unbound = daemon.apply(plan);
    if !unbound.is_empty() {
        for e in &unbound {
            crate::errln!("sshmail: {e}");
        }
        stop.request();
        daemon.shutdown().await;
        background.shutdown().await;
        let _ = std::fs::remove_file(&paths.socket);
        return Exit::Usage;
    }
    systemd::notify("READY=1");
    if daemon.running.lock().expect("daemon lock").values().any(|r| r.account.hooks.notify) {
        // Said at the start when there is no session bus.
        let notifier = daemon.board.notifier().clone();
        background.spawn(async move {
            notifier.bus().await;
        });
    }

    background.spawn(serve(daemon.clone(), listener));
    background.spawn(watch_clock(daemon.clone()));
    background.spawn(reap(daemon.pool.clone(), reap_every));
    background.spawn(outbox(daemon.clone()));
    background.spawn(links(daemon.clone()));
    stop.wait().await;

    systemd::notify("STOPPING=1");
    tracing::info!(target: "sshmail::daemon", "stopping");
    daemon.shutdown().await;
    background.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), daemon.pool.close_all()).await;
    let _ = std::fs::remove_file(&paths.socket);
    tracing::info!(target: "sshmail::daemon", "stopped");
    Exit::Delivered
}

/// Raises the soft limit on open files to the hard one: a daemon of a
/// thousand accounts holds more than the 1024 a login or systemd gives by
/// default, and the hard limit is there to be used. The soft limit now in
/// effect (`None`: unlimited).
fn raise_open_files() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return limit.maximum,
            Err(e) => tracing::warn!(target: "sshmail::daemon", "cannot raise the open-file limit: {e}"),
        }
    }
    limit.current
}

/// How many fetch tasks may work at once (their ledgers and messages'
/// files open) under an open-file limit: a quarter of it, and 32 more, is
/// kept for everything else (SSH connections, the control socket,
/// endpoints, clients, hooks), and each working task may hold up to
/// [`crate::fetch::FILES_PER_TASK`]. The others wait for a turn, so a
/// thousand accounts under the 1024 a login gives all come up, none left
/// retrying "Too many open files". Idle tasks hold nothing.
fn working_at_once(open_files: Option<u64>) -> usize {
    let Some(limit) = open_files else { return 256 };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    (limit.saturating_sub(limit / 4 + 32) / crate::fetch::FILES_PER_TASK).clamp(1, 256)
}

/// The accounts of a config file, resolved, and the daemon settings.
struct Plan {
    settings: DaemonSettings,
    accounts: BTreeMap<String, Planned>,
}

/// One account of a plan.
struct Planned {
    account: Arc<Account>,
    /// Its endpoints, and what each serves.
    endpoints: Vec<(Listen, Arc<Served>)>,
    /// What, when it changes, restarts the account: the account as written,
    /// the daemon settings, the state directory and the mailbox reached
    /// (after `~/.ssh/config`).
    key: (RawAccount, DaemonSettings, PathBuf, String),
}

impl Plan {
    /// Reads and checks the whole file: one bad account refuses all of it.
    fn load(path: &Path, mode: &Mode) -> Result<Plan> {
        if !path.exists() {
            return Err(Error::Config(format!(
                "no config file at {}; write one (see `man sshmail`) and start again",
                path.display()
            )));
        }
        // `sshmail serve`: every account served only.
        let overrides = config::Overrides {
            account: RawAccount { fetch: (!mode.fetch).then_some(false), ..RawAccount::default() },
            ..config::Overrides::default()
        };
        let config = config::Config::load(Some(path), &overrides)?;
        if config.accounts.is_empty() {
            tracing::warn!(target: "sshmail::daemon", "{} defines no [account.NAME]", path.display());
        }
        if let Some(missing) = mode.accounts.iter().find(|a| !config.accounts.contains_key(*a)) {
            return Err(Error::Config(format!("no account {missing:?} in {}", path.display())));
        }
        let mut accounts = BTreeMap::new();
        let mut listening: HashMap<Listen, String> = HashMap::new();
        for (name, written) in &config.written {
            if !mode.accounts.is_empty() && !mode.accounts.contains(name) {
                continue;
            }
            let account = config.account(name)?.clone();
            if let Some(why) = account.serve.unresolved.first() {
                return Err(Error::Config(format!("account {name}: {why}")));
            }
            let mut endpoints = Vec::new();
            for e in &account.serve.endpoints {
                if let Some(other) = listening.insert(e.listen.clone(), name.clone()) {
                    return Err(Error::Config(format!(
                        "accounts {other} and {name} both serve on {}; give each its own",
                        e.listen
                    )));
                }
                endpoints.push((e.listen.clone(), Arc::new(Served::new(&account, e.service)?)));
            }
            let identity = fetch::mailbox_identity(&account);
            let key = (written.clone(), config.settings.clone(), account.state_dir.clone(), identity);
            accounts.insert(name.clone(), Planned { account: Arc::new(account), endpoints, key });
        }
        Ok(Plan { settings: config.settings, accounts })
    }
}

/// The daemon's state.
struct Daemon {
    board: Arc<Board>,
    pool: Arc<SshPool>,
    ledgers: Arc<Ledgers>,
    stop: Stop,
    path: PathBuf,
    running: Mutex<BTreeMap<String, Running>>,
    supervisors: Mutex<JoinSet<()>>,
    /// The endpoints' accept loops.
    servers: Mutex<JoinSet<()>>,
    polls: Arc<polls::Polls>,
    /// `sshmail tunnel` sessions.
    tunnels: Arc<gateway::Count>,
    /// Asks the outbox task to try everything queued now (a poll).
    flush_outbox: Notify,
    /// The local endpoints, by address: an endpoint whose account changes
    /// keeps its socket and serves new clients the new way.
    endpoints: Mutex<HashMap<Listen, Endpoint>>,
    /// Control connections being answered (tunnels among them).
    control: Tracked,
    /// Gateway sessions, of every endpoint: an endpoint that goes away on
    /// a reload leaves its clients in session; a stop ends them.
    sessions: Arc<Tracked>,
    mode: Mode,
}

/// A running account.
struct Running {
    key: (RawAccount, DaemonSettings, PathBuf, String),
    stop: Stop,
    tasks: Arc<Mutex<Vec<Handle>>>,
    account: Arc<Account>,
}

/// A local endpoint being served.
struct Endpoint {
    served: Arc<Mutex<Arc<Served>>>,
    stop: Stop,
    count: Arc<gateway::Count>,
}

/// What the daemon keeps of a task: how to wake it and where it reports.
#[derive(Clone)]
struct Handle {
    wake: Arc<Notify>,
    slot: Arc<Slot>,
}

impl Daemon {
    /// Starts what `plan` adds or changes, stops what it removes or
    /// changes; unchanged accounts keep their connections and IDLEs (and
    /// those that failed try again). Returns the endpoints that could not
    /// listen, why.
    fn apply(&self, plan: Plan) -> Vec<String> {
        let unbound = self.apply_endpoints(&plan);
        let mut running = self.running.lock().expect("daemon lock");
        let gone: Vec<String> = running.keys().filter(|n| !plan.accounts.contains_key(*n)).cloned().collect();
        for name in gone {
            if let Some(r) = running.remove(&name) {
                tracing::info!(target: "sshmail::daemon", "{name}: removed from the config; stopping it");
                r.stop.request();
            }
        }
        let mut order = 0usize;
        for (name, planned) in plan.accounts {
            if let Some(r) = running.get(&name) {
                if r.key == planned.key {
                    for h in r.tasks.lock().expect("tasks lock").iter() {
                        if h.slot.status().is_some_and(|s| s.last_error.is_some()) {
                            h.wake.notify_one();
                        }
                    }
                    continue;
                }
                tracing::info!(target: "sshmail::daemon", "{name}: changed in the config; restarting it");
                r.stop.request();
            }
            let stop = self.stop.child();
            let tasks: Arc<Mutex<Vec<Handle>>> = Arc::default();
            let supervisor = Supervisor {
                board: self.board.clone(),
                pool: self.pool.clone(),
                ledgers: self.ledgers.clone(),
                polls: self.polls.clone(),
                stop: stop.clone(),
                tasks: tasks.clone(),
                idle_renew: plan.settings.idle_renew,
                first: order,
            };
            order += planned.account.fetch.folders.len();
            let account = planned.account.clone();
            self.supervisors.lock().expect("daemon lock").spawn(supervisor.run(planned.account));
            running.insert(name, Running { key: planned.key, stop, tasks, account });
        }
        unbound
    }

    /// Listens where `plan` says, stops listening where it no longer does;
    /// an endpoint that stays gets what it serves from `plan`.
    fn apply_endpoints(&self, plan: &Plan) -> Vec<String> {
        let wanted: HashMap<&Listen, &Arc<Served>> =
            plan.accounts.values().flat_map(|p| p.endpoints.iter().map(|(l, s)| (l, s))).collect();
        let mut endpoints = self.endpoints.lock().expect("daemon lock");
        endpoints.retain(|listen, e| {
            let keep = wanted.contains_key(listen);
            if !keep {
                e.stop.request();
            }
            keep
        });
        let mut unbound = Vec::new();
        for (listen, served) in wanted {
            if let Some(e) = endpoints.get(listen) {
                *e.served.lock().expect("endpoint lock") = served.clone();
                continue;
            }
            match gateway::listen::Bound::bind(listen) {
                Ok(bound) => {
                    let shared = Arc::new(Mutex::new(served.clone()));
                    let stop = self.stop.child();
                    let count = Arc::new(gateway::Count::default());
                    let sessions = self.sessions.clone();
                    let server =
                        gateway::serve(bound, shared.clone(), self.pool.clone(), stop.clone(), count.clone(), sessions);
                    self.servers.lock().expect("daemon lock").spawn(server);
                    endpoints.insert(listen.clone(), Endpoint { served: shared, stop, count });
                }
                Err(e) => {
                    tracing::error!(target: "sshmail::daemon", "{}: {e}", served.name());
                    unbound.push(format!("{}: {e}", served.name()));
                }
            }
        }
        unbound
    }

    /// Ends everything the daemon runs: the accounts' tasks, the endpoints,
    /// their sessions and the control connections get a moment for a clean
    /// end (DONE, LOGOUT, a reply written), then are abandoned.
    async fn shutdown(&self) {
        let mut supervisors = std::mem::take(&mut *self.supervisors.lock().expect("daemon lock"));
        let mut servers = std::mem::take(&mut *self.servers.lock().expect("daemon lock"));
        let tasks = async {
            let ended =
                tokio::time::timeout(STOP_GRACE, async { while supervisors.join_next().await.is_some() {} }).await;
            // Aborted tasks drop what they staged; nothing was recorded for it.
            supervisors.shutdown().await;
            ended.is_ok()
        };
        let endpoints = async {
            let _ = tokio::time::timeout(STOP_GRACE, async { while servers.join_next().await.is_some() {} }).await;
            servers.shutdown().await;
        };
        let (clean, (), (sessions, sessions_cut), (control, control_cut), ()) = tokio::join!(
            tasks,
            endpoints,
            self.sessions.end(STOP_GRACE),
            self.control.end(STOP_GRACE),
            crate::news::hook::wait_all(STOP_GRACE)
        );
        if !clean {
            tracing::warn!(target: "sshmail::daemon", "some tasks did not end in time; their work in flight is abandoned");
        }
        tracing::info!(
            target: "sshmail::daemon",
            "ended {sessions} client sessions and {control} control connections{}",
            match sessions_cut + control_cut {
                0 => String::new(),
                n => format!(" ({n} did not end in time and were closed)"),
            }
        );
    }

    /// The board's status of `accounts` (all when empty), with their
    /// endpoints and the tunnels.
    fn status(&self, accounts: &[String]) -> Status {
        let clients = |c: &gateway::Count| {
            let (now, total) = c.get();
            Clients { now, total }
        };
        let mut status = self.board.status(accounts);
        {
            let running = self.running.lock().expect("daemon lock");
            for a in &mut status.accounts {
                let Some(r) = running.get(&a.name) else { continue };
                for f in &mut a.folders {
                    f.unread_new = unread_new(&r.account, &f.folder);
                }
            }
        }
        let endpoints = self.endpoints.lock().expect("daemon lock");
        status.endpoints = endpoints
            .iter()
            .map(|(listen, e)| {
                let served = e.served.lock().expect("endpoint lock").clone();
                EndpointStatus {
                    account: served.account.clone(),
                    service: served.service.name().to_string(),
                    listen: listen.to_string(),
                    clients: clients(&e.count),
                }
            })
            .filter(|e| accounts.is_empty() || accounts.contains(&e.account))
            .collect();
        status.endpoints.sort_by(|a, b| (&a.account, &a.listen).cmp(&(&b.account, &b.listen)));
        status.connections = self
            .pool
            .links()
            .into_iter()
            .map(|l| ConnectionStatus {
                state: match l.state {
                    LinkState::Up => "up",
                    LinkState::Connecting => "connecting",
                    LinkState::WaitingForLogin => "waiting for login",
                    LinkState::Down => "down",
                    LinkState::Closed => "closed",
                }
                .to_string(),
                since: l.since.map(Stamp::of),
                name: l.name,
                connections: l.connections,
                channels: l.channels,
                last_error: l.last_error,
            })
            .collect();
        status.tunnels = clients(&self.tunnels);
        status
    }

    /// `account`, when the daemon runs it and it can send.
    fn sender(&self, account: &str) -> Option<Arc<Account>> {
        let running = self.running.lock().expect("daemon lock");
        let r = running.get(account).filter(|r| r.account.send.is_some())?;
        Some(r.account.clone())
    }

    /// A stream to `account`'s `service` for `sshmail tunnel`.
    async fn tunnel(
        &self,
        account: &str,
        service: Option<config::Service>,
    ) -> std::result::Result<gateway::Connected, Refusal> {
        let account = {
            let running = self.running.lock().expect("daemon lock");
            let Some(r) = running.get(account) else {
                return Err(Refusal::new(
                    Why::NoAccount,
                    format!("no account {account} in the daemon's config"),
                    Exit::Usage,
                ));
            };
            r.account.clone()
        };
        let failed = |e: Error| {
            let e = e.for_account(&account.name);
            Refusal::new(Why::Failed, e.to_string(), e.exit())
        };
        let service = service.unwrap_or(config::Service::of(account.protocol));
        let served = Served::new(&account, service).map_err(failed)?;
        gateway::connect(&served, &self.pool).await.map_err(failed)
    }

    /// Re-reads the config file; a file that does not load leaves the
    /// accounts as they run.
    fn reload(&self) -> std::result::Result<(), String> {
        systemd::notify("RELOADING=1");
        let result = match Plan::load(&self.path, &self.mode) {
            Ok(plan) => {
                tracing::info!(target: "sshmail::daemon", "reloading {}", self.path.display());
                self.board.config_error(None);
                self.pool.forget_failures();
                let unbound = self.apply(plan);
                if unbound.is_empty() {
                    Ok(())
                } else {
                    let text = unbound.join("; ");
                    self.board.config_error(Some(text.clone()));
                    Err(text)
                }
            }
            Err(e) => {
                let text = format!("{e}");
                tracing::error!(target: "sshmail::daemon", "reload refused, the accounts run as before: {text}");
                self.board.config_error(Some(text.clone()));
                Err(text)
            }
        };
        systemd::notify("READY=1");
        result
    }

    /// The tasks of `accounts` (all when empty).
    fn handles(&self, accounts: &[String]) -> Vec<Handle> {
        let running = self.running.lock().expect("daemon lock");
        running
            .iter()
            .filter(|(n, _)| accounts.is_empty() || accounts.contains(n))
            .flat_map(|(_, r)| r.tasks.lock().expect("tasks lock").clone())
            .collect()
    }

    /// Asks the tasks of `accounts` for a pass now; with `wait`, returns
    /// once each has made one (or failed), at most [`POLL_WAIT`].
    async fn poll(&self, accounts: &[String], wait: bool) -> Vec<Polled> {
        // Now means now: not after a connect failure's back-off.
        self.pool.forget_failures();
        self.flush_outbox.notify_one();
        let handles = self.handles(accounts);
        let mut changes = self.board.subscribe();
        // A task busy with a pass finishes it first, then makes the one
        // asked for: wait for two.
        let before: Vec<_> = handles
            .iter()
            .map(|h| {
                let s = h.slot.status();
                let (passes, failures, delivered, busy) =
                    s.map(|s| (s.passes, s.failures, s.delivered, s.busy)).unwrap_or_default();
                h.wake.notify_one();
                (passes + failures + u64::from(busy) + 1, delivered, failures)
            })
            .collect();
        if !wait {
            return Vec::new();
        }
        let deadline = tokio::time::Instant::now() + POLL_WAIT;
        loop {
            let done =
                handles.iter().zip(&before).all(|(h, (needed, _, _))| h.slot.tries().is_none_or(|t| t >= *needed));
            if done {
                break;
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(deadline) => break,
                _ = self.stop.wait() => break,
            }
        }
        handles
            .iter()
            .zip(&before)
            .map(|(h, (needed, delivered, failures))| {
                let s = h.slot.status();
                let error = match &s {
                    None => Some("the account was stopped".to_string()),
                    Some(s) if s.passes + s.failures < *needed => Some("no pass ended in time".to_string()),
                    Some(s) if s.failures > *failures => s.last_error.as_ref().map(|e| e.text.clone()),
                    Some(_) => None,
                };
                Polled {
                    account: h.slot.account().to_string(),
                    folder: h.slot.folder().to_string(),
                    delivered: s.map(|s| s.delivered - delivered).unwrap_or(0),
                    error,
                }
            })
            .collect()
    }

    /// Wakes every task: after a resume, each checks its connection and
    /// catches up.
    fn wake_all(&self) {
        self.pool.forget_failures();
        for h in self.handles(&[]) {
            h.wake.notify_one();
        }
    }
}

/// Messages in the Maildir `new/` that `folder` of `account` is delivered
/// to: delivered, not yet seen by a mail client. None for other sinks.
fn unread_new(account: &Account, folder: &str) -> Option<u64> {
    let config::Delivery::Maildir(root) = &account.delivery.to else { return None };
    let sub = match account.delivery.maildir_subfolders {
        true => crate::deliver::maildir::Subfolder::for_folder(folder).ok()?,
        false => None,
    };
    let dir = crate::deliver::Maildir::at(root).new_dir(sub.as_ref());
    let visible = |e: &std::fs::DirEntry| !e.file_name().to_string_lossy().starts_with('.');
    Some(std::fs::read_dir(dir).ok()?.flatten().filter(visible).count() as u64)
}

/// Starts an account's tasks and waits for them; an IMAP account whose
/// folders include patterns first lists them (one cycle over all its
/// folders, which fetches them too).
struct Supervisor {
    board: Arc<Board>,
    pool: Arc<SshPool>,
    ledgers: Arc<Ledgers>,
    polls: Arc<polls::Polls>,
    stop: Stop,
    tasks: Arc<Mutex<Vec<Handle>>>,
    idle_renew: Duration,
    first: usize,
}

impl Supervisor {
    async fn run(self, account: Arc<Account>) {
        if !account.fetch.enabled {
            return;
        }
        let mut set = JoinSet::new();
        let folders: Vec<Option<String>> = match account.protocol {
            Protocol::Pop3 => vec![None],
            Protocol::Imap => {
                let patterns = account.fetch.folders.iter().any(|f| f.contains(['*', '%']));
                let names = if patterns { self.discover(&account).await } else { Some(account.fetch.folders.clone()) };
                let Some(names) = names else { return };
                names.into_iter().map(Some).collect()
            }
        };
        for (i, folder) in folders.into_iter().enumerate() {
            let name = folder.clone().unwrap_or_else(|| "INBOX".to_string());
            let (slot, ctx) = self.context(&account, &name);
            self.tasks.lock().expect("tasks lock").push(Handle { wake: ctx.wake.clone(), slot: slot.clone() });
            let start_after = STAGGER.saturating_mul((self.first + i) as u32).min(STAGGER_MAX);
            set.spawn(task::run(task::Task {
                account: account.clone(),
                folder,
                slot,
                ctx,
                idle_renew: self.idle_renew,
                start_after,
                polls: self.polls.clone(),
            }));
        }
        while set.join_next().await.is_some() {}
    }

    /// A slot on the board and the context of a task on `folder`.
    fn context(&self, account: &Account, folder: &str) -> (Arc<Slot>, Context) {
        let slot = self.board.slot(account, folder);
        let ctx = Context {
            pool: self.pool.clone(),
            ledgers: self.ledgers.clone(),
            stop: self.stop.child(),
            report: slot.clone(),
            wake: Arc::default(),
        };
        (slot, ctx)
    }

    /// Lists the account's folders (its patterns resolved) by a cycle over
    /// all of them, retried like a task's; None when stopped first.
    async fn discover(&self, account: &Arc<Account>) -> Option<Vec<String>> {
        let shown = account.fetch.folders.join(" ");
        let (slot, ctx) = self.context(account, &shown);
        self.tasks.lock().expect("tasks lock").push(Handle { wake: ctx.wake.clone(), slot: slot.clone() });
        let mut backoff = task::backoff();
        let found = loop {
            if self.stop.requested() {
                break None;
            }
            slot.trying();
            let result = {
                let turn = self.polls.turn().await;
                let result = fetch::fetch_account(account, &Cycle::default(), &ctx).await;
                turn.done(result.as_ref().ok().map(|o| o.delivered));
                result
            };
            match result {
                Ok(o) => break Some(o.folders),
                Err(e) => {
                    let e = e.for_account(&account.name);
                    let pause = backoff.next(e.retry());
                    tracing::warn!(target: "sshmail::daemon", "{}: listing the folders {shown}: {e}", account.name);
                    slot.failed(&e, pause);
                    if !task::wait(pause, &ctx.wake, &self.stop).await {
                        break None;
                    }
                }
            }
        };
        self.tasks.lock().expect("tasks lock").retain(|h| !Arc::ptr_eq(&h.slot, &slot));
        slot.ended();
        found
    }
}

/// The daemon's signals, caught from the start (before it says it is
/// ready, so that an early SIGTERM stops it cleanly instead of killing it).
struct Signals {
    usr1: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn catch() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            usr1: signal(SignalKind::user_defined1())?,
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

/// SIGUSR1 polls everything, SIGHUP reloads; SIGTERM and SIGINT stop.
async fn signals(daemon: Arc<Daemon>, signals: Signals) {
    let Signals { mut usr1, mut hup, mut term, mut int } = signals;
    loop {
        tokio::select! {
            _ = usr1.recv() => {
                tracing::info!(target: "sshmail::daemon", "SIGUSR1: polling every account now");
                daemon.poll(&[], false).await;
            }
            _ = hup.recv() => {
                let _ = daemon.reload();
            }
            _ = term.recv() => daemon.stop.request(),
            _ = int.recv() => daemon.stop.request(),
        }
    }
}

/// Answers the control socket until the daemon stops; each connection is
/// a tracked task (at most [`CONTROL_AT_ONCE`]).
async fn serve(daemon: Arc<Daemon>, listener: tokio::net::UnixListener) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = daemon.stop.wait() => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if !socket::peer_is_us(&stream) {
            continue;
        }
        let handler = |end: Stop| answer_connection(daemon.clone(), stream, end);
        tokio::select! {
            () = daemon.control.spawn(handler) => {}
            _ = daemon.stop.wait() => return,
        }
    }
}

/// One control connection: a request, its answer (for a tunnel, the
/// stream after it). `end` ends the wait for a request and a tunnel.
async fn answer_connection(daemon: Arc<Daemon>, stream: tokio::net::UnixStream, end: Stop) {
    let mut stream = tokio::io::BufReader::new(stream);
    let read = tokio::select! {
        r = socket::read_request(&mut stream) => r,
        _ = end.wait() => return,
    };
    match read.map(|r| r.command) {
        Err(refusal) => socket::write_response(&mut stream, refusal.into()).await,
        Ok(Command::Tunnel { account, service }) => daemon.tunnel_for_client(stream, &account, service, end).await,
        Ok(Command::Login { account }) => daemon.login_for_client(stream, &account, end).await,
        Ok(Command::Follow { accounts }) => match daemon.unknown(&accounts) {
            Some(refusal) => socket::write_response(&mut stream, refusal.into()).await,
            None => {
                let status = daemon.status(&accounts);
                let folders = status
                    .accounts
                    .iter()
                    .flat_map(|a| {
                        a.folders.iter().map(|f| crate::control::status::FolderCount {
                            account: a.name.clone(),
                            folder: f.folder.clone(),
                            unread_new: f.unread_new,
                        })
                    })
                    .collect();
                let first = crate::control::status::FeedEvent::Following { at: Stamp::now(), folders };
                daemon.board.feed().follow(stream, &accounts, first, end).await
            }
        },
        Ok(command) => {
            let response = daemon.answer(command).await;
            socket::write_response(&mut stream, response).await;
        }
    }
}

impl Daemon {
    /// The answer to a control request (all but `tunnel`, whose answer is a
    /// stream).
    async fn answer(&self, command: Command) -> Response {
        match command {
            Command::Status { accounts } => Response::Status { status: Box::new(self.status(&accounts)) },
            Command::Poll { accounts } => match self.unknown(&accounts) {
                Some(refusal) => refusal.into(),
                None => Response::Polled { folders: self.poll(&accounts, true).await },
            },
            Command::Reload => match self.reload() {
                Ok(()) => Response::Done,
                Err(why) => Refusal::new(Why::Failed, why, Exit::Usage).into(),
            },
            Command::Stop => {
                tracing::info!(target: "sshmail::daemon", "asked to stop");
                self.stop.request();
                Response::Done
            }
            Command::Send { id } => self.relay_for_sendmail(&id).await,
            Command::Tunnel { .. } | Command::Login { .. } | Command::Follow { .. } => {
                Refusal::new(Why::BadRequest, "a tunnel, a login or a feed is asked for on its own", Exit::Usage).into()
            }
        }
    }

    /// Relays the outbox entry `id` that `sendmail` queued.
    async fn relay_for_sendmail(&self, id: &str) -> Response {
        let outbox = match crate::send::outbox::Outbox::open(&crate::send::outbox::Outbox::default_dir()) {
            Ok(o) => o,
            Err(e) => return Refusal::new(Why::Failed, e.to_string(), e.exit()).into(),
        };
        match crate::send::relay_queued(&outbox, id, |a| self.sender(a), &self.pool, crate::send::Waiting::Sender).await
        {
            Some(attempt) => {
                tracing::info!(target: "sshmail::send", "{id}: relayed for sendmail: {attempt:?}");
                self.board.feed().send(outbox_event(id.to_string(), &attempt));
                Response::Sent { attempt }
            }
            None => {
                Refusal::new(Why::Failed, format!("no queued entry {id} this daemon can relay"), Exit::Usage).into()
            }
        }
    }

    /// Answers a `tunnel` request: a refusal, or Done and then the
    /// server's stream spliced to the client until either ends.
    async fn tunnel_for_client(
        &self,
        mut stream: tokio::io::BufReader<tokio::net::UnixStream>,
        account: &str,
        service: Option<config::Service>,
        end: Stop,
    ) {
        let refusal = match self.tunnel(account, service).await {
            Ok(server) => {
                socket::write_response(&mut stream, Response::Done).await;
                let on = server.connection.clone().unwrap_or_default();
                tracing::info!(target: "sshmail::gateway", "{account}: a tunnel opened on {on}");
                let _inside = self.tunnels.enter();
                tokio::select! {
                    _ = gateway::splice(stream, server, false) => {}
                    _ = end.wait() => {}
                }
                return;
            }
            Err(refusal) => refusal,
        };
        tracing::warn!(target: "sshmail::gateway", "{account}: a tunnel was asked for: {}", refusal.text);
        socket::write_response(&mut stream, refusal.into()).await;
    }

    /// A refusal naming the accounts in `accounts` the daemon does not run.
    fn unknown(&self, accounts: &[String]) -> Option<Refusal> {
        let running = self.running.lock().expect("daemon lock");
        let missing: Vec<&str> = accounts.iter().filter(|a| !running.contains_key(*a)).map(String::as_str).collect();
        (!missing.is_empty()).then(|| {
            Refusal::new(
                Why::NoAccount,
                format!("no account {} in the daemon's config", missing.join(", ")),
                Exit::Usage,
            )
        })
    }
}

/// Notices a suspend: the boot-time clock, which counts the time asleep,
/// ran ahead of the monotonic one, which does not. Then every task checks
/// its connection and catches up at once (a dead link is found by the SSH
/// keepalive within seconds), instead of waiting for its timers.
async fn watch_clock(daemon: Arc<Daemon>) {
    let gap = || {
        let boot = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        let mono = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let secs = |t: rustix::time::Timespec| t.tv_sec as f64 + t.tv_nsec as f64 / 1e9;
        secs(boot) - secs(mono)
    };
    let mut last = gap();
    loop {
        tokio::time::sleep(CLOCK_CHECK).await;
        let now = gap();
        if now - last > 2.0 {
            tracing::info!(
                target: "sshmail::daemon",
                "the machine slept for {:.0} s: checking every connection and catching up",
                now - last
            );
            daemon.wake_all();
        }
        last = now;
    }
}

/// Relays the outbox's entries whose back-off is over, every
/// [`OUTBOX_CHECK`]; those that found the link down as soon as a
/// connection comes back (any account's, to any host: a cheap try); and
/// every queued one when a poll asks for it (the accounts that can send,
/// on the daemon's pool). Then the notices still due.
async fn outbox(daemon: Arc<Daemon>) {
    use crate::send::Which;
    let dir = crate::send::outbox::Outbox::default_dir();
    let mut recoveries = daemon.pool.recoveries();
    loop {
        let which = tokio::select! {
            _ = tokio::time::sleep(OUTBOX_CHECK) => Which::Due,
            _ = daemon.flush_outbox.notified() => Which::All,
            Ok(()) = recoveries.changed() => Which::DueOrWaitingForLink,
        };
        recoveries.mark_unchanged();
        if !dir.join("new").is_dir() {
            continue;
        }
        let Ok(outbox) = crate::send::outbox::Outbox::open(&dir) else { continue };
        for (id, attempt) in crate::send::relay_due(&outbox, |a| daemon.sender(a), &daemon.pool, which).await {
            daemon.board.feed().send(outbox_event(id, &attempt));
        }
        crate::send::deliver_notices(&outbox, |a| daemon.sender(a)).await;
    }
}

/// The feed's event for an outbox entry tried.
fn outbox_event(id: String, attempt: &control::Attempt) -> crate::control::status::FeedEvent {
    let (outcome, text) = match attempt {
        control::Attempt::Done => ("sent", None),
        control::Attempt::Failed(why) => ("failed", Some(why.clone())),
        control::Attempt::Later(why) => ("queued", Some(why.clone())),
    };
    crate::control::status::FeedEvent::Outbox { at: Stamp::now(), id, outcome: outcome.into(), text }
}

/// Tells the feed of the pool's link changes.
async fn links(daemon: Arc<Daemon>) {
    let mut changes = daemon.pool.link_changes();
    loop {
        match changes.recv().await {
            Ok(c) => daemon.board.feed().send(crate::control::status::FeedEvent::Link {
                at: Stamp::now(),
                connection: c.name,
                state: c.state.to_string(),
                text: c.text,
            }),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Closes SSH connections nobody has used for `ssh_idle_close`, looking
/// `every` so often.
async fn reap(pool: Arc<SshPool>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        pool.reap();
    }
}
