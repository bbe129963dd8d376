//! The pool: the only owner of SSH connections, meant to live as long as
//! the process (a one-shot fetch, or a daemon for weeks).
//!
//! - **Routes by trust.** A connection serves only callers whose target has
//!   the same [`SshTarget::trust_key`] (and the same ProxyJump chain): two
//!   accounts to one host with different known_hosts, host key policy or
//!   identities never share one.
//! - **Channels are leases.** Each connection counts its open channels, and
//!   its session (exec) channels against the server's `MaxSessions` (10 by
//!   default in OpenSSH, fewer if a refusal teaches so). When every
//!   connection of a route is full, another is opened.
//! - **Failures are shared.** A route that failed to connect gives its
//!   recorded error to every caller until its back-off ends (1 s doubling to
//!   a minute); a refused host key or login stays until [`SshPool::forget_failures`]
//!   (a config reload).
//! - **Locks are per route.** Connecting and authenticating hold only that
//!   route's connect lock, never one that callers for other routes wait on.
//! - **Prompts only when asked.** A pool made by [`SshPool::new`] never
//!   prompts (what a daemon needs): the agent and unencrypted keys are used,
//!   and an encrypted key is named in the error with `ssh-add`. A pool
//!   [`SshPool::prompting`] asks for a key's passphrase on the terminal.
//! - **Idle close.** With [`SshPool::with_idle_close`], a connection nobody
//!   leases is closed after that long ([`SshPool::reap`], also run on every
//!   lease); a dead one is dropped and replaced on the next lease.
//! - **Logins a person made are held** (a daemon's pool,
//!   [`SshPool::holding_logins`]): a host that asks what only a person can
//!   answer (a one-time code, a password) waits for [`SshPool::login`]
//!   (`sshmail login`, the prompts relayed to the person's terminal) and
//!   is never tried again by itself — not on a poll, a reload or a
//!   resume, since failed tries lock accounts. The connection a person
//!   made is never closed for being idle; when it is lost, its route
//!   waits for the next login ("waiting for login" in `status`).
//! - **OpenSSH masters are ridden, and watched**: a master that answers or
//!   goes away is said once in the log, and [`SshPool::links`] shows it.
//! - **Said.** A connection lost (not closed by us) is logged once, and so
//!   is the next connection of its route; [`SshPool::links`] tells each
//!   route's state, since when, its channels and its last error (`sshmail
//!   status`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::auth::Prompts;
use super::session::{ExecError, ExecStatus, SshSession};
use crate::backoff::Backoff;
use crate::config::SshTarget;
use crate::error::{Error, Result};

/// The back-off after failed connects: 1 s doubling to 60 s.
fn connect_backoff() -> Backoff {
    Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 0.0)
}

/// A recorded connect failure.
struct Failure {
    error: Error,
    /// None: until the failures are forgotten (host key, login).
    until: Option<Instant>,
    backoff: Backoff,
}

#[derive(Default)]
struct Route {
    conns: Mutex<Vec<Arc<SshSession>>>,
    failure: Mutex<Option<Failure>>,
    /// Held while connecting, by this route's callers only.
    connecting: tokio::sync::Mutex<()>,
    /// What is said of the route: its name, since when it is in its state,
    /// and a loss not yet made good.
    said: Mutex<Said>,
}

#[derive(Default)]
struct Said {
    /// `user@host:port`, with ` via …` for jumps.
    name: String,
    since: Option<SystemTime>,
    /// Why the last connection went away, until another is made.
    lost: Option<String>,
    /// Its connection was made by a person's login (a holding pool's):
    /// never another without one.
    by_person: bool,
}

/// An OpenSSH master ridden, as last seen.
struct MasterSeen {
    /// `user@host:port` of the target that rides it.
    name: String,
    /// Its pid, while it answers; None when it does not.
    pid: Option<u32>,
    since: SystemTime,
    /// Why it is not ridden now.
    error: Option<String>,
}

/// The state of a route's connections, for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// At least one connection is up.
    Up,
    /// Connecting (or authenticating) now.
    Connecting,
    /// The host needs a person to log in (`sshmail login`).
    WaitingForLogin,
    /// The last try failed, or the connection was lost.
    Down,
    /// None open: closed when idle, or not needed since.
    Closed,
}

/// A route's connection went away, came back, or waits for a login; or an
/// OpenSSH master ridden went or came (for the daemon's event feed).
#[derive(Debug, Clone)]
pub struct LinkChange {
    /// `user@host:port` (` via …`).
    pub name: String,
    /// `up`, `lost`, `waiting for login`, `master up`, `master gone`.
    pub state: &'static str,
    /// Why, when it is not up.
    pub text: Option<String>,
}

/// Where link changes go; nobody need listen.
struct Changes(tokio::sync::broadcast::Sender<LinkChange>);

impl Default for Changes {
    fn default() -> Changes {
        Changes(tokio::sync::broadcast::channel(256).0)
    }
}

impl Changes {
    fn tell(&self, name: &str, state: &'static str, text: Option<String>) {
        let _ = self.0.send(LinkChange { name: name.to_string(), state, text });
    }
}

/// One route's connections, as `status` shows them.
#[derive(Debug, Clone)]
pub struct Link {
    /// `user@host:port` (` via …`).
    pub name: String,
    /// Its state.
    pub state: LinkState,
    /// Since when (the last change).
    pub since: Option<SystemTime>,
    /// Connections open, and the channels on them.
    pub connections: usize,
    /// Channels open on them.
    pub channels: usize,
    /// Why it is down (the failure, or the loss).
    pub last_error: Option<String>,
}

impl Route {
    /// The recorded error, while its back-off lasts.
    fn failed(&self) -> Option<Error> {
        let f = self.failure.lock().expect("route lock");
        match &*f {
            Some(f) if f.until.is_none_or(|t| Instant::now() < t) => Some(f.error.clone()),
            _ => None,
        }
    }

    fn record(&self, e: &Error) {
        self.said.lock().expect("route lock").since = Some(SystemTime::now());
        let mut f = self.failure.lock().expect("route lock");
        let mut backoff = f.take().map_or_else(connect_backoff, |f| f.backoff);
        // A refused host key or login waits for `forget_failures`; a host
        // that needs a person, for `login`.
        let permanent = matches!(e.retry(), crate::error::Retry::Never | crate::error::Retry::Login);
        let until = (!permanent).then(|| Instant::now() + backoff.pause());
        *f = Some(Failure { error: e.clone(), until, backoff });
    }

    /// Whether the route waits for a person's login.
    fn waits_for_login(&self) -> bool {
        matches!(&*self.failure.lock().expect("route lock"), Some(Failure { error: Error::LoginNeeded(_), .. }))
    }

    /// Drops the connections that went away (none of ours closes one
    /// while it is listed): a loss, said once. The last one a person's
    /// login made leaves the route waiting for the next login.
    fn drop_dead(&self, conns: &mut Vec<Arc<SshSession>>, changes: &Changes) {
        let before = conns.len();
        conns.retain(|c| !c.is_closed());
        if conns.len() < before {
            let mut said = self.said.lock().expect("route lock");
            let why = "the connection was lost (the server or the network ended it)".to_string();
            said.since = Some(SystemTime::now());
            if said.by_person && conns.is_empty() {
                let needed = Error::LoginNeeded(Box::new(crate::error::LoginNeeded {
                    target: said.name.clone(),
                    why: "lost the connection a login made (the server or the network ended it)".into(),
                    account: None,
                }));
                tracing::warn!(target: LINK_LOG, "{needed}");
                changes.tell(&said.name, "waiting for login", Some(needed.to_string()));
                said.by_person = false;
                drop(said);
                self.record(&needed);
                return;
            }
            tracing::warn!(target: LINK_LOG, "SSH to {}: {why}", said.name);
            changes.tell(&said.name, "lost", Some(why.clone()));
            said.lost = Some(why);
        }
    }

    /// A live connection, with a session slot reserved if `session`.
    fn pick(&self, session: bool, changes: &Changes) -> Option<(Arc<SshSession>, Option<super::lease::Lease>)> {
        let mut conns = self.conns.lock().expect("route lock");
        self.drop_dead(&mut conns, changes);
        for c in conns.iter() {
            if !session {
                return Some((c.clone(), None));
            }
            if let Some(lease) = c.usage().reserve_session() {
                return Some((c.clone(), Some(lease)));
            }
        }
        None
    }
}

/// Shares SSH connections among every account, channel and task of the
/// process.
#[derive(Default)]
pub struct SshPool {
    /// By trust key and jump chain.
    routes: Mutex<HashMap<String, Arc<Route>>>,
    idle_close: Option<Duration>,
    prompts: Prompts,
    /// A host that needs a person waits for [`SshPool::login`].
    holds_logins: bool,
    /// The OpenSSH masters ridden, by socket.
    masters: Mutex<HashMap<std::path::PathBuf, MasterSeen>>,
    /// Link changes, for whoever listens.
    changes: Changes,
    /// Counts connections made where the last try had failed.
    recovered: tokio::sync::watch::Sender<u64>,
}

impl SshPool {
    /// A pool whose connections stay until [`SshPool::close_all`], and
    /// that never prompts.
    pub fn new() -> SshPool {
        SshPool::default()
    }

    /// The same pool, asking on the terminal (when there is one) for the
    /// passphrase of an encrypted key the agent does not hold, an SSH
    /// password and the server's keyboard-interactive questions.
    pub fn prompting(mut self) -> SshPool {
        self.prompts = Prompts::OnTerminal;
        self
    }

    /// A pool that closes a connection nobody has leased for `idle`.
    pub fn with_idle_close(idle: Duration) -> SshPool {
        SshPool { idle_close: Some(idle), ..SshPool::default() }
    }

    /// The same pool, as a daemon's: a host that asks what only a person
    /// can answer waits for [`SshPool::login`] instead of failing (and is
    /// never tried again by itself), and the connection a login made is
    /// held until it is lost.
    pub fn holding_logins(mut self) -> SshPool {
        self.holds_logins = true;
        self
    }

    /// Logs in to `target` (through `jumps`) with `prompts` — a person's
    /// terminal — ending its wait for a login; a connection already up is
    /// kept. Returns what the login was: `user@host:port` and how it
    /// authenticated, or the OpenSSH master ridden.
    pub async fn login(&self, target: &SshTarget, jumps: &[SshTarget], prompts: &Prompts) -> Result<String> {
        if let Some(socket) = self.master(target).await? {
            return Ok(format!("{} rides the OpenSSH master {}: no login of its own", target.name(), socket.display()));
        }
        let mut key = String::new();
        for hop in jumps.iter().chain([target]) {
            key = route_key(hop, &key);
            if let Some(route) = self.routes.lock().expect("pool lock").get(&key) {
                *route.failure.lock().expect("route lock") = None;
            }
        }
        let (session, _) = self.lease(target, jumps, false, prompts).await?;
        let h = session.handshake();
        Ok(format!("{} ({})", session.name(), h.auth))
    }

    /// A live connection to `target`, through `jumps` first: for forwards,
    /// which the server does not limit per connection.
    pub async fn get(&self, target: &SshTarget, jumps: &[SshTarget]) -> Result<Arc<SshSession>> {
        Ok(self.lease(target, jumps, false, &self.prompts).await?.0)
    }

    /// The OpenSSH master to ride for `target`: its socket when one
    /// answers there; None when the target names none, or none answers and
    /// it may connect on its own; an error when it must ride and cannot.
    async fn master(&self, target: &SshTarget) -> Result<Option<std::path::PathBuf>> {
        let Some(socket) = &target.control_path else { return Ok(None) };
        if super::mux::answers(socket).await {
            self.master_seen(target, socket, None).await;
            return Ok(Some(socket.clone()));
        }
        if target.control_fallback {
            let why = "no master answers there: sshmail connects on its own (ssh_control_fallback)";
            self.master_seen(target, socket, Some(why)).await;
            tracing::debug!("no OpenSSH master at {}: connecting to {} on our own", socket.display(), target.name());
            return Ok(None);
        }
        let why = "no master answers there (ssh_control_fallback is off): waiting for one";
        self.master_seen(target, socket, Some(why)).await;
        Err(Error::Connect(format!(
            "no OpenSSH master answers at {} for {} (ssh_control_fallback is off): sign in once with `ssh -fN` and \
             ControlMaster for that host, or set ssh_control_fallback = true",
            socket.display(),
            target.name()
        )))
    }

    /// Notes whether the master at `socket` answers (`gone`: why not),
    /// saying a change once in the log: its pid when it comes, that it went
    /// away and what happens meanwhile.
    async fn master_seen(&self, target: &SshTarget, socket: &std::path::Path, gone: Option<&str>) {
        let was_up = self.masters.lock().expect("pool lock").get(socket).map(|m| m.pid.is_some());
        let up = gone.is_none();
        if was_up == Some(up) {
            return;
        }
        let shown = socket.display();
        let pid = match gone {
            Some(why) => {
                if was_up == Some(true) {
                    tracing::warn!(target: LINK_LOG, "SSH to {}: the OpenSSH master {shown} went away; {why}", target.name());
                    let name = format!("{} via OpenSSH master {shown}", target.name());
                    self.changes.tell(&name, "master gone", Some(why.to_string()));
                }
                None
            }
            None => match super::mux::master_pid(socket, target.timeout).await {
                Ok(pid) => {
                    let again = if was_up.is_some() { " again" } else { "" };
                    tracing::info!(target: LINK_LOG, "SSH to {}: riding the OpenSSH master {shown} (pid {pid}){again}", target.name());
                    let name = format!("{} via OpenSSH master {shown} (pid {pid})", target.name());
                    self.changes.tell(&name, "master up", None);
                    Some(pid)
                }
                // Its channels fail with the reason; not a master ridden.
                Err(_) => return,
            },
        };
        self.masters.lock().expect("pool lock").insert(
            socket.to_path_buf(),
            MasterSeen { name: target.name(), pid, since: SystemTime::now(), error: gone.map(str::to_string) },
        );
    }

    /// A direct-tcpip channel to `host:port` as seen from `target`: through
    /// its OpenSSH master when it rides one, else on a connection of the
    /// pool.
    pub async fn forward(&self, target: &SshTarget, jumps: &[SshTarget], host: &str, port: u16) -> Result<Forwarded> {
        if let Some(socket) = self.master(target).await? {
            let stream = super::mux::forward(&socket, host, port, target.timeout).await?;
            return Ok(Forwarded {
                stream,
                via: format!("{} through the OpenSSH master {}", target.name(), socket.display()),
                label: format!("OpenSSH master {}", socket.display()),
                proxy: None,
            });
        }
        let session = self.get(target, jumps).await?;
        let stream = session.forward(host, port).await?;
        Ok(Forwarded { stream, via: session.name(), label: session.label(), proxy: session.proxy() })
    }

    /// Runs `command` in an exec channel on a connection to `target` that
    /// has a session channel free, opening another connection when all are
    /// full. Returns the stream, its status and the connection's label
    /// ([`SshSession::label`]).
    pub async fn exec(
        &self,
        target: &SshTarget,
        jumps: &[SshTarget],
        command: &str,
    ) -> Result<(tokio::io::DuplexStream, Arc<ExecStatus>, String)> {
        if let Some(socket) = self.master(target).await? {
            let (stream, status) = super::mux::exec(&socket, command, target.timeout).await?;
            return Ok((stream, status, format!("OpenSSH master {}", socket.display())));
        }
        // A refusal teaches the connection's limit; then the next is tried.
        for _ in 0..4 {
            let (session, lease) = self.lease(target, jumps, true, &self.prompts).await?;
            let lease = lease.expect("a session lease");
            match session.exec(command, lease).await {
                Ok((stream, status)) => return Ok((stream, status, session.label())),
                Err(ExecError::Full) => continue,
                Err(ExecError::Other(e)) => return Err(e),
            }
        }
        Err(Error::Connect(format!(
            "{}: the server refused the session channel for `{command}` on every connection tried",
            target.name()
        )))
    }

    /// Runs a short command and returns its stdout (at most 64 KiB) and exit
    /// status.
    pub async fn run(&self, target: &SshTarget, jumps: &[SshTarget], command: &str) -> Result<(Vec<u8>, Option<i64>)> {
        use tokio::io::AsyncReadExt as _;
        let (mut stream, status, name) = self.exec(target, jumps, command).await?;
        let mut out = Vec::new();
        let mut limited = (&mut stream).take(64 * 1024);
        tokio::time::timeout(target.timeout, limited.read_to_end(&mut out))
            .await
            .map_err(|_| Error::Connect(format!("{name}: `{command}` did not finish")))?
            .map_err(|e| Error::Connect(format!("{name}: `{command}`: {e}")))?;
        drop(stream);
        // The exit status follows the data closely.
        Ok((out, status.wait_exit(Duration::from_secs(1)).await))
    }

    async fn lease(
        &self,
        target: &SshTarget,
        jumps: &[SshTarget],
        session: bool,
        prompts: &Prompts,
    ) -> Result<(Arc<SshSession>, Option<super::lease::Lease>)> {
        self.reap();
        let mut via: Option<Arc<SshSession>> = None;
        let mut key = String::new();
        for hop in jumps {
            key = route_key(hop, &key);
            via = Some(self.connection(&key, hop, via, false, prompts).await?.0);
        }
        let key = route_key(target, &key);
        self.connection(&key, target, via, session, prompts).await
    }

    async fn connection(
        &self,
        key: &str,
        target: &SshTarget,
        via: Option<Arc<SshSession>>,
        session: bool,
        prompts: &Prompts,
    ) -> Result<(Arc<SshSession>, Option<super::lease::Lease>)> {
        let route = self.routes.lock().expect("pool lock").entry(key.to_string()).or_default().clone();
        {
            let mut said = route.said.lock().expect("route lock");
            if said.name.is_empty() {
                said.name = match &via {
                    Some(v) => format!("{} via {}", target.name(), v.route()),
                    None => target.name(),
                };
            }
        }
        // A person logging in tries, whatever a task recorded meanwhile.
        let recorded = || if matches!(prompts, Prompts::Relayed(_)) { None } else { route.failed() };
        if let Some(found) = route.pick(session, &self.changes) {
            return Ok(found);
        }
        if let Some(e) = recorded() {
            return Err(e);
        }
        let _connecting = route.connecting.lock().await;
        // Someone else may have connected (or failed) meanwhile.
        if let Some(found) = route.pick(session, &self.changes) {
            return Ok(found);
        }
        if let Some(e) = recorded() {
            return Err(e);
        }
        let unasked = matches!(prompts, Prompts::Never);
        if unasked && route.said.lock().expect("route lock").by_person {
            // Its connection, which a person's login made, is up but full:
            // another would need them again.
            return Err(Error::Connect(format!(
                "{}: every session channel of the connection `sshmail login` made is in use (the server's \
                 MaxSessions); another connection would need a person to log in again",
                target.name()
            )));
        }
        let conn = match SshSession::connect(target, via, prompts).await {
            Ok(c) => {
                let c = Arc::new(c);
                c.learn_host_keys();
                c
            }
            Err(Error::SshAuth(refused)) if self.holds_logins && unasked && refused.person_needed().is_some() => {
                let e = Error::LoginNeeded(Box::new(crate::error::LoginNeeded {
                    target: target.name(),
                    why: refused.person_needed().unwrap_or_default(),
                    account: None,
                }));
                tracing::warn!(target: LINK_LOG, "{e}");
                self.changes.tell(&target.name(), "waiting for login", Some(e.to_string()));
                route.record(&e);
                return Err(e);
            }
            Err(e) => {
                route.record(&e);
                return Err(e);
            }
        };
        let failed = route.failure.lock().expect("route lock").take().is_some();
        if failed {
            self.recovered.send_modify(|n| *n += 1);
        }
        {
            let mut said = route.said.lock().expect("route lock");
            if failed || said.lost.take().is_some() {
                tracing::info!(target: LINK_LOG, "SSH to {}: connected again", said.name);
                self.changes.tell(&said.name, "up", None);
            }
            said.since = Some(SystemTime::now());
            if self.holds_logins && conn.handshake().by_person {
                said.by_person = true;
                tracing::info!(
                    target: LINK_LOG,
                    "SSH to {}: logged in by a person ({}); held until it is lost",
                    said.name,
                    conn.handshake().auth
                );
            }
        }
        let lease = if session { conn.usage().reserve_session() } else { None };
        route.conns.lock().expect("route lock").push(conn.clone());
        Ok((conn, lease))
    }

    /// Closes the connections nobody has leased for the idle time (with
    /// [`SshPool::with_idle_close`]), and forgets dead ones.
    pub fn reap(&self) {
        let routes: Vec<Arc<Route>> = self.routes.lock().expect("pool lock").values().cloned().collect();
        for route in routes {
            let mut conns = route.conns.lock().expect("route lock");
            route.drop_dead(&mut conns, &self.changes);
            let mut idle = Vec::new();
            conns.retain(|c| {
                // What a person's login made stays.
                let unused = !c.handshake().by_person
                    && self.idle_close.zip(c.usage().idle_since()).is_some_and(|(max, since)| since.elapsed() >= max);
                if unused {
                    idle.push(c.clone());
                }
                !unused
            });
            if !idle.is_empty() && conns.is_empty() {
                route.said.lock().expect("route lock").since = Some(SystemTime::now());
            }
            for c in idle {
                tracing::debug!("closing the idle SSH connection to {}", c.name());
                tokio::spawn(async move { c.close().await });
            }
        }
    }

    /// Link changes from now on: connections lost and back, hosts waiting
    /// for a login, OpenSSH masters gone and back.
    pub fn link_changes(&self) -> tokio::sync::broadcast::Receiver<LinkChange> {
        self.changes.0.subscribe()
    }

    /// Changes each time a connection is made where the last try had
    /// failed: a host is reachable again (what waited for it can go on).
    pub fn recoveries(&self) -> tokio::sync::watch::Receiver<u64> {
        self.recovered.subscribe()
    }

    /// Forgets recorded connect failures (after the configuration
    /// changed, a poll, a resume) — but a host waiting for a person's
    /// login keeps waiting: only [`SshPool::login`] tries it again.
    pub fn forget_failures(&self) {
        for route in self.routes.lock().expect("pool lock").values() {
            if !route.waits_for_login() {
                *route.failure.lock().expect("route lock") = None;
            }
        }
    }

    /// Every route's connections, by name: up, connecting, down or closed,
    /// since when, what they carry and why they are down.
    pub fn links(&self) -> Vec<Link> {
        let routes: Vec<Arc<Route>> = self.routes.lock().expect("pool lock").values().cloned().collect();
        let mut links: Vec<Link> = routes
            .iter()
            .map(|route| {
                let mut conns = route.conns.lock().expect("route lock");
                route.drop_dead(&mut conns, &self.changes);
                let failure = route.failed();
                let said = route.said.lock().expect("route lock");
                let state = if !conns.is_empty() {
                    LinkState::Up
                } else if route.connecting.try_lock().is_err() {
                    LinkState::Connecting
                } else if matches!(failure, Some(Error::LoginNeeded(_))) {
                    LinkState::WaitingForLogin
                } else if failure.is_some() || said.lost.is_some() {
                    LinkState::Down
                } else {
                    LinkState::Closed
                };
                Link {
                    name: said.name.clone(),
                    state,
                    since: said.since,
                    connections: conns.len(),
                    channels: conns.iter().map(|c| c.usage().channels()).sum(),
                    last_error: failure.map(|e| e.to_string()).or_else(|| said.lost.clone()),
                }
            })
            .collect();
        let masters = self.masters.lock().expect("pool lock");
        links.extend(masters.iter().map(|(socket, m)| Link {
            name: match m.pid {
                Some(pid) => format!("{} via OpenSSH master {} (pid {pid})", m.name, socket.display()),
                None => format!("{} via OpenSSH master {}", m.name, socket.display()),
            },
            state: if m.pid.is_some() { LinkState::Up } else { LinkState::Down },
            since: Some(m.since),
            connections: usize::from(m.pid.is_some()),
            channels: 0,
            last_error: m.error.clone(),
        }));
        links.sort_by(|a, b| a.name.cmp(&b.name));
        links
    }

    /// Open connections (live or not yet noticed dead), for tests and status.
    pub fn connections(&self) -> usize {
        self.routes.lock().expect("pool lock").values().map(|r| r.conns.lock().expect("route lock").len()).sum()
    }

    /// Disconnects every connection.
    pub async fn close_all(&self) {
        let routes: Vec<Arc<Route>> = self.routes.lock().expect("pool lock").drain().map(|(_, r)| r).collect();
        for route in routes {
            let conns: Vec<_> = route.conns.lock().expect("route lock").drain(..).collect();
            for c in conns {
                c.close().await;
            }
        }
    }
}

/// The log target of connections lost and made again (shown by the daemon).
pub const LINK_LOG: &str = "sshmail::ssh::link";

/// A route's key: the target's trust key after those of its jump hops.
fn route_key(target: &SshTarget, via: &str) -> String {
    if via.is_empty() { trust_key(target) } else { format!("{} via {via}", trust_key(target)) }
}

/// What decides whether two accounts may share one connection: where it
/// goes and everything that decides trust and identity (known_hosts
/// files and the name looked up in them, host key policy, identities and
/// agent use, the password's
/// source, compression). A connection verified under one account's
/// policy never serves an account that would have refused it. A
/// password given in the config is represented by a hash, never itself.
/// A direct-tcpip channel, and what it runs on (for messages and status).
pub struct Forwarded {
    /// The channel.
    pub stream: super::Channel,
    /// `user@host:port`, or that and the OpenSSH master carrying it.
    pub via: String,
    /// The connection's label (`user@host:port #N`, or the master).
    pub label: String,
    /// The ProxyCommand under the connection, if any.
    pub proxy: Option<Arc<crate::process::Collected>>,
}

pub fn trust_key(target: &SshTarget) -> String {
    use crate::config::PasswordSource;
    let password = match &target.password {
        PasswordSource::None => "none".to_string(),
        PasswordSource::Literal(s) => format!("literal:{}", crate::ledger::short_hash(s.expose(), 8)),
        PasswordSource::Command(c) => format!("command:{c:?}"),
    };
    // The algorithms too: a host key type one account allows
    // (`HostKeyAlgorithms +ssh-rsa`) must not verify another's connection.
    let a = &target.algorithms;
    format!(
        "{} known_hosts={:?} alias={:?} policy={:?} identities={:?} certificate={:?} agent={:?} only={} \
         password={password} compress={} kex={:?} cipher={:?} mac={:?} host_key={:?} pubkey={:?}",
        target.name(),
        target.known_hosts,
        target.host_key_alias,
        target.policy,
        target.identities,
        target.certificate,
        target.agent,
        target.identities_only,
        target.compress,
        a.kex,
        a.cipher,
        a.mac,
        a.host_key,
        a.pubkey
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The security defect: a connection verified under one account's
    /// known_hosts and policy served another account to the same host.
    #[test]
    fn host_keys_are_verified_per_trust_a_different_policy_or_known_hosts_is_another_connection() {
        let raw = |policy: &str, kh: &str| crate::config::RawAccount {
            ssh: Some("bob@mail:22".into()),
            host_key_policy: Some(policy.into()),
            known_hosts: Some(kh.into()),
            ..Default::default()
        };
        let target = |r: &crate::config::RawAccount| {
            crate::config::resolve("a", r, &crate::config::Resolving::default()).unwrap().route.ssh.unwrap().0
        };
        let key = |r: crate::config::RawAccount| trust_key(&target(&r));
        assert_eq!(key(raw("strict", "/kh/a")), key(raw("strict", "/kh/a")));
        assert_ne!(key(raw("strict", "/kh/a")), key(raw("accept-new", "/kh/a")));
        assert_ne!(key(raw("strict", "/kh/a")), key(raw("strict", "/kh/b")));
        let with_password = crate::config::RawAccount {
            ssh_password_command: Some(crate::config::Command::Argv(vec!["pass".into(), "mail".into()])),
            ..raw("strict", "/kh/a")
        };
        assert_ne!(key(with_password), key(raw("strict", "/kh/a")));
        // A password written in the config is never part of the key.
        let mut t = target(&raw("strict", "/kh/a"));
        t.password = crate::config::PasswordSource::Literal(crate::secret::Secret::new("hunter2"));
        assert!(!trust_key(&t).contains("hunter2"), "{}", trust_key(&t));
        // An account that allows SHA-1 host keys does not share with one
        // that does not.
        let mut old_rsa = target(&raw("strict", "/kh/a"));
        old_rsa.algorithms.host_key.push(russh::keys::Algorithm::Rsa { hash: None });
        assert_ne!(trust_key(&old_rsa), key(raw("strict", "/kh/a")));
    }
}
