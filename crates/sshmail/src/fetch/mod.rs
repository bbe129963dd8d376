//! Fetching one account: what is new, what to delete, in which order.
//!
//! The order is the point of this module. For every batch of messages:
//!
//! 1. bodies stream into the sink's staging area as they arrive;
//! 2. the sink makes them durable (fsync) and the ledger records their
//!    staging names (`P`), fsync'd;
//! 3. the sink publishes them (rename into `new/`, fsync the directory) and
//!    the ledger records them delivered (`D`), fsync'd;
//! 4. only then is the server told to delete (POP3 DELE; IMAP STORE
//!    \Deleted + UID EXPUNGE) or to flag them \Seen.
//!
//! POP3 applies DELE at QUIT. If the run dies before QUIT, the server still
//! has those messages; the ledger knows them as delivered, so the next run
//! deletes them without delivering them again ("pending deletes"). IMAP
//! works the same way: delivered messages still on the server get the
//! policy applied on the next run.

pub mod fingerprint;
pub mod imap;
pub mod pop3;
pub mod report;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use sshmail_proto::imap::{Command as ImapCommand, Limits, Response, Status, Untagged, uid_set};
use sshmail_proto::pop3::{Command, Reply};

use crate::config::{Account, Policy, Protocol};
use crate::deliver::maildir::Subfolder;
use crate::deliver::{Finished, Refusal, Sink};
use crate::error::{Error, Result};
use crate::fault;
use crate::ledger::{FolderKeys, Key, Ledgers, Shared};
use crate::ssh::SshPool;
use crate::stop::Stop;
use crate::transport::{self, Route, Stream};
use crate::wire::Wire;
use imap::{Bodies, Imap, Pending, PolicyStep};
use pop3::Pop3;
use report::{Report, Transfer};

/// Messages per group commit.
const BATCH_MESSAGES: usize = 256;
/// Bytes per group commit.
const BATCH_BYTES: u64 = 64 << 20;
/// POP3 RETR commands in flight when the server allows pipelining.
const PIPELINE_DEPTH: usize = 64;
/// IMAP UID FETCH batches in flight.
const IMAP_FETCHES_IN_FLIGHT: usize = 2;

/// What a fetch did.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Messages on the server when we looked.
    pub on_server: usize,
    /// Messages delivered in this run.
    pub delivered: usize,
    /// Bytes delivered.
    pub bytes: u64,
    /// Messages deleted on the server (POP3: DELE accepted and QUIT done).
    pub deleted: usize,
    /// Messages the server refused to send, or too big (left on the server).
    pub refused: usize,
    /// Deliveries finished from an interrupted earlier run.
    pub recovered: usize,
    /// Folders that could not be fetched (the others were).
    pub folder_errors: Vec<FolderError>,
    /// Messages the sink refused (left on the server).
    pub undelivered: Vec<Undelivered>,
    /// Policy actions the server refused (DELE, STORE, EXPUNGE): the
    /// messages stay on the server.
    pub policy_errors: Vec<PolicyRefusal>,
    /// With `check`: messages waiting to be fetched, and their bytes.
    pub waiting: usize,
    /// Their size in bytes, as the server reports it.
    pub waiting_bytes: u64,
}

/// The `Received:` line added to each message (unless `received = false`).
#[derive(Debug, Clone)]
pub struct Trace {
    from: String,
    with: &'static str,
    by: String,
    recipient: String,
}

impl Trace {
    /// The header line, dated now.
    pub fn line(&self) -> Vec<u8> {
        format!(
            "Received: from {} by {} (sshmail {}) with {} for <{}>; {}\n",
            self.from,
            self.by,
            env!("CARGO_PKG_VERSION"),
            self.with,
            self.recipient,
            chrono::Local::now().to_rfc2822()
        )
        .into_bytes()
    }
}

/// What one cycle does: which folders, whether it only counts, whether it
/// stays.
#[derive(Debug, Clone, Default)]
pub struct Cycle {
    /// IMAP: after fetching, stay connected and IDLE on the first folder,
    /// fetching whatever arrives, until stopped or the connection fails.
    pub idle: bool,
    /// Only count what is waiting (like `fetchmail --check`): log in, list,
    /// and leave; nothing is fetched, delivered, flagged or recorded.
    pub check: bool,
    /// IMAP: these folders (names or patterns) instead of the account's,
    /// for a task that watches some of them; the account's other tasks run
    /// beside it on the same ledger.
    pub folders: Option<Vec<String>>,
}

/// A folder that could not be fetched in a cycle; the others were.
#[derive(Debug, Clone)]
pub struct FolderError {
    /// The folder, as the server names it.
    pub folder: String,
    /// Why (the server's answer, a changed UIDVALIDITY, an unsafe name).
    pub error: Error,
}

impl std::fmt::Display for FolderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

/// A message the sink refused: it stays on the server.
#[derive(Debug, Clone)]
pub struct Undelivered {
    /// Its ledger key.
    pub key: Key,
    /// The sink's answer (temporary or permanent).
    pub refusal: Refusal,
}

impl std::fmt::Display for Undelivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.refusal.text())
    }
}

/// A policy action (DELE, a flag, an expunge) the server refused: its
/// messages stay on the server.
#[derive(Debug, Clone)]
pub struct PolicyRefusal {
    /// The command, as `DELE` or `UID EXPUNGE`.
    pub action: &'static str,
    /// How many messages it was for.
    pub messages: usize,
    /// The whole story, with the server's answer.
    pub text: String,
}

impl std::fmt::Display for PolicyRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// How long one IDLE may last before it is renewed (RFC 2177 asks clients
/// to renew within 29 minutes).
const IDLE_RENEW: std::time::Duration = std::time::Duration::from_secs(28 * 60);

/// What fetch cycles run with, shared by every cycle of the process: the
/// SSH pool, the open ledgers, the stop token watched by long waits, and
/// where transfers are reported.
#[derive(Clone)]
pub struct Context {
    /// The connections.
    pub pool: Arc<SshPool>,
    /// One open ledger per account, shared by its concurrent cycles.
    pub ledgers: Arc<Ledgers>,
    /// Ends IDLE (DONE, LOGOUT) and long waits when requested.
    pub stop: Stop,
    /// Progress of each transfer.
    pub report: Arc<dyn Report>,
}

impl Context {
    /// A context with a fresh pool, no stop requested, reporting nothing.
    pub fn quiet() -> Context {
        Context::new(SshPool::new(), Stop::new(), Arc::new(report::Quiet))
    }

    /// A context around `pool`, with no ledger open yet.
    pub fn new(pool: SshPool, stop: Stop, report: Arc<dyn Report>) -> Context {
        Context { pool: Arc::new(pool), ledgers: Arc::default(), stop, report }
    }
}

/// One fetch cycle for an account, through `route` and the context's pool.
/// With `show.idle` it stays until the context's stop is requested (then
/// ends the IDLE with DONE and logs out) or the connection fails.
pub async fn fetch_account(account: &Account, route: &Route, show: &Cycle, ctx: &Context) -> Result<Outcome> {
    let pool = ctx.pool.as_ref();
    let started = Instant::now();
    // Local state first: a broken state directory or Maildir should stop us
    // before we touch the server.
    let (identity, stem, legacy) = ledger_names(account, route);
    let ledger = ctx.ledgers.open_for_mailbox(&account.state_dir, &stem, &identity, legacy.as_deref())?;
    let sink = if show.check {
        Sink::for_check(
            &account.delivery.to,
            &ledger.lock().spool_dir(),
            &account.delivery.recipient,
            account.reach.timeout,
        )?
    } else {
        Sink::open(
            &account.delivery.to,
            &ledger.lock().spool_dir(),
            &account.delivery.recipient,
            account.reach.timeout,
        )?
    };
    let mut outcome = Outcome::default();
    // A check changes nothing locally either: no recovery, no cleaning.
    if !show.check {
        outcome.recovered = recover(account, &sink, &ledger)?;
    }
    // Only after recovery, which may still need staged files.
    if !show.check {
        sink.spool().clean();
    }
    if outcome.recovered > 0 {
        tracing::info!("{}: finished {} deliveries interrupted in an earlier run", account.name, outcome.recovered);
    }

    // The password before the connection: a password command that hangs or
    // fails must not hold a server connection open. Through exec or a
    // tunnel command the server normally greets PREAUTH and needs none, so
    // there it is asked for only when the server wants one.
    let password = match &account.reach.via {
        crate::config::Via::Exec(_) | crate::config::Via::Command(_) if account.protocol == Protocol::Imap => None,
        _ => crate::process::password(&account.login.password, "password_command", account.reach.timeout).await?,
    };
    let opened = transport::open(route, pool).await?;
    let diagnostics = opened.diagnostics.clone();
    let wire = Wire::new(opened.stream, account.reach.timeout, opened.peer.clone());
    let trace = account.delivery.received.then(|| Trace {
        from: opened.peer.clone(),
        with: match account.protocol {
            Protocol::Pop3 => "POP3",
            Protocol::Imap => "IMAP",
        },
        by: gethostname::gethostname().to_string_lossy().into_owned(),
        recipient: account.delivery.recipient.clone(),
    });
    let mut store = Store {
        sink: &sink,
        ledger: &ledger,
        outcome: &mut outcome,
        show,
        trace,
        stop: ctx.stop.clone(),
        report: ctx.report.as_ref(),
    };
    let flow = match account.protocol {
        Protocol::Pop3 => pop3_flow(account, wire, password, &mut store).await,
        Protocol::Imap => imap_flow(account, wire, password, opened.greeting_done, opened.preauth_ok, &mut store).await,
    };
    let received = match flow {
        Ok(r) => r,
        Err(e) => return Err(transport::explain(diagnostics.as_deref(), e).await),
    };
    tracing::info!(
        "{}: {} delivered ({}), {} deleted, {} received in {:.2} s",
        account.name,
        outcome.delivered,
        human_bytes(outcome.bytes),
        outcome.deleted,
        human_bytes(received),
        started.elapsed().as_secs_f64()
    );
    Ok(outcome)
}

/// Finishes what an interrupted run left half-delivered: a staged message
/// named in the ledger but not recorded as delivered, so the server still
/// has it. Its publish is finished, or it is forgotten and fetched again: a
/// recovery that cannot succeed must not block the account on every later
/// run. Under the ledger's lock, so the account's other tasks in this
/// process wait rather than fetch what is being recovered.
fn recover(account: &Account, sink: &Sink, ledger: &Shared) -> Result<usize> {
    let mut ledger = ledger.lock();
    let mut recovered = 0;
    for (key, token) in ledger.pending() {
        let done = match sink.maildir().map(|m| m.recover(&token)).transpose() {
            Ok(r) => r.unwrap_or(false),
            Err(e) => {
                tracing::warn!(
                    "{}: cannot finish an interrupted delivery ({e}); it will be fetched again",
                    account.name
                );
                false
            }
        };
        if done {
            ledger.commit(std::slice::from_ref(&key))?;
            recovered += 1;
        } else {
            ledger.forget(&key)?;
        }
    }
    Ok(recovered)
}

/// Everything that selects the mailbox an account reaches: protocol,
/// transport, SSH destination (after `~/.ssh/config`, with its jumps), and
/// for network servers the server and login, or the remote imapd / local
/// tunnel command. Two mailboxes that differ in any of these never share a
/// ledger.
pub fn mailbox_identity(account: &Account, route: &Route) -> String {
    use crate::config::Via;
    let ssh = match &route.ssh {
        Some((t, _)) => {
            let jumps: Vec<String> = t
                .jumps
                .iter()
                .map(|j| format!("{}@{}:{:?}", j.user.as_deref().unwrap_or(""), j.host, j.port))
                .collect();
            format!("{} via [{}]", t.name(), jumps.join(","))
        }
        None => String::new(),
    };
    let login = account.address();
    let how = match &account.reach.via {
        Via::Forward => format!("forward {login}"),
        Via::Tls => format!("tls {login}"),
        Via::StartTls => format!("starttls {login}"),
        Via::Exec(Some(c)) => format!("exec {}", transport::remote_command(c)),
        Via::Exec(None) => "exec (detected imapd)".to_string(),
        Via::Command(c) => format!("command {}", transport::remote_command(c)),
    };
    format!("{:?}\n{how}\n{ssh}", account.protocol)
}

/// The ledger of an account: (identity, file name, an older file name of the
/// same mailbox to adopt). A config account's ledger is named after the
/// account; an ad-hoc one after its mailbox: a readable part and a hash of
/// the identity, bounded in length and stable for the same command line.
fn ledger_names(account: &Account, route: &Route) -> (String, String, Option<String>) {
    let identity = mailbox_identity(account, route);
    if !account.adhoc {
        return (identity, account.name.clone(), None);
    }
    let hash = crate::ledger::short_hash(&identity, 8);
    let readable: String = crate::ledger::file_stem(&account.name).chars().take(48).collect();
    // Before, an ad-hoc ledger was named by a description that, except for
    // exec, already held the whole identity: that file is taken over. An
    // exec one ("imap on HOST") was shared by every imapd on the host, so
    // it is not.
    let legacy = match &account.reach.via {
        crate::config::Via::Exec(_) => None,
        crate::config::Via::Command(c) => Some(format!("tunnel {}", transport::remote_command(c))),
        _ => Some(account.name.clone()),
    };
    (identity, format!("{readable}-{hash}"), legacy)
}

/// ", N delivered earlier to delete" (or to flag \Seen); nothing in keep
/// mode, which does nothing to what was delivered.
fn policy_note(policy: Policy, earlier: usize) -> String {
    match policy {
        Policy::Keep => String::new(),
        Policy::Seen => format!(", {earlier} delivered earlier to flag \\Seen"),
        Policy::Delete => format!(", {earlier} delivered earlier to delete"),
    }
}

/// The local side of a fetch: where bodies go and what is on record.
struct Store<'a> {
    sink: &'a Sink,
    ledger: &'a Shared,
    outcome: &'a mut Outcome,
    show: &'a Cycle,
    trace: Option<Trace>,
    stop: Stop,
    report: &'a dyn Report,
}

impl Store<'_> {
    /// The trace line for a message starting now (empty when off).
    fn prefix(&self) -> Vec<u8> {
        self.trace.as_ref().map(Trace::line).unwrap_or_default()
    }

    /// Group commit. Returns the keys delivered, in batch order.
    ///
    /// Maildir: sync, record staged (`P`), publish, record delivered (`D`).
    /// Other sinks: deliver, then record delivered; refusals stay on the
    /// server and are reported.
    async fn commit(&mut self, batch: &mut Vec<(Key, Finished)>, subfolder: Option<&Subfolder>) -> Result<Vec<Key>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (keys, mut files): (Vec<Key>, Vec<Finished>) = std::mem::take(batch).into_iter().unzip();
        let spool = self.sink.spool();
        let Some(maildir) = self.sink.maildir() else {
            let results = self.sink.deliver(&files).await;
            let delivered = match results {
                Ok(results) => {
                    fault::point("sink-delivered");
                    let mut ok = Vec::new();
                    for ((key, f), r) in keys.iter().zip(&files).zip(results) {
                        match r {
                            Ok(()) => {
                                ok.push((key.clone(), f.fingerprint.clone()));
                                self.outcome.bytes += f.len;
                            }
                            Err(refusal) => {
                                let kind =
                                    if matches!(refusal, Refusal::Temporary(_)) { "temporary" } else { "permanent" };
                                tracing::warn!("{key}: not delivered ({kind}): {}", refusal.text());
                                self.outcome.undelivered.push(Undelivered { key: key.clone(), refusal });
                            }
                        }
                    }
                    Ok(ok)
                }
                Err(e) => Err(e),
            };
            for f in files {
                spool.discard_finished(f);
            }
            let ok = delivered?;
            self.ledger.lock().commit_marked(&ok)?;
            fault::point("batch-recorded");
            self.outcome.delivered += ok.len();
            return Ok(ok.into_iter().map(|(k, _)| k).collect());
        };
        // Order is important: content durable, then named in the ledger,
        // then visible, then recorded as delivered.
        if let Err(e) = spool.sync(&files).await {
            files.into_iter().for_each(|f| spool.discard_finished(f));
            return Err(e);
        }
        // From here the ledger names the files: an interrupted publish is
        // finished from them by the next run.
        files.iter_mut().for_each(Finished::keep);
        let prepared: Vec<_> = keys
            .iter()
            .zip(&files)
            .map(|(k, f)| (k.clone(), maildir.token(subfolder, &f.name), f.fingerprint.clone()))
            .collect();
        // Three fsyncs and the renames, inline: handing the worker's other
        // tasks over (block_in_place) cost 12 MiB of peak RSS (new threads,
        // their malloc arenas) and saved no time.
        // One lock for the three steps: the account's other tasks never see
        // this batch prepared but not committed.
        let mut ledger = self.ledger.lock();
        ledger.prepare(&prepared)?;
        maildir.publish(subfolder, &files)?;
        ledger.commit(&keys)?;
        drop(ledger);
        fault::point("batch-recorded");
        self.outcome.delivered += files.len();
        self.outcome.bytes += files.iter().map(|f| f.len).sum::<u64>();
        Ok(keys)
    }

    /// Saves what is complete after a failure; the failure is what counts.
    async fn salvage(&mut self, batch: &mut Vec<(Key, Finished)>, subfolder: Option<&Subfolder>) {
        if let Err(e) = self.commit(batch, subfolder).await {
            tracing::error!("could not save the messages that were complete: {e}");
        }
    }
}

/// A byte count for people: `12.3 MB`.
pub fn human_bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.2} GB", n as f64 / 1e9),
    }
}

// ---------------------------------------------------------------- POP3 --

async fn pop3_flow<S: Stream>(
    account: &Account,
    wire: Wire<S>,
    password: Option<crate::secret::Secret>,
    store: &mut Store<'_>,
) -> Result<u64> {
    let mut pop = Pop3::start(wire).await?;
    pop.capa().await?;
    pop.login(&account.login.user, password.as_ref(), account.login.auth).await?;
    let listing = pop.scan().await?;
    store.outcome.on_server = listing.len();

    let mut seen = HashSet::new();
    let mut to_fetch = Vec::new();
    let mut to_delete = Vec::new();
    for (n, uid, size) in &listing {
        if !seen.insert(uid.clone()) {
            tracing::warn!("{}: UIDL {uid} appears twice; message {n} is left alone", pop.peer());
            continue;
        }
        let key = Key::uidl(uid);
        if account.fetch.fetch_all || !store.ledger.lock().is_delivered(&key) {
            if size.is_none() {
                tracing::warn!(
                    "{}: LIST does not give the size of message {n}; fetching it within max_message_size",
                    pop.peer()
                );
            }
            if let Some(size) = *size
                && size > account.fetch.max_message_size
            {
                tracing::warn!(
                    "{}: message {n} is {} (over max_message_size); left on the server",
                    pop.peer(),
                    human_bytes(size)
                );
                store.outcome.refused += 1;
                continue;
            }
            to_fetch.push((*n, key, *size));
        } else if account.fetch.policy == Policy::Delete {
            to_delete.push((*n, key));
        }
    }
    tracing::info!(
        "{}: {} messages on the server, {} to fetch{}",
        account.name,
        listing.len(),
        to_fetch.len(),
        policy_note(account.fetch.policy, to_delete.len())
    );
    if store.show.check {
        store.outcome.waiting = to_fetch.len();
        store.outcome.waiting_bytes = to_fetch.iter().filter_map(|(_, _, s)| *s).sum();
        pop.send(&[Command::Quit]).await?;
        let _ = pop.reply().await;
        pop.shutdown().await;
        return Ok(pop.received());
    }

    let listed: HashSet<Key> = listing.iter().map(|(_, u, _)| Key::uidl(u)).collect();
    let result = pop3_transfer(account, &mut pop, store, &to_fetch, to_delete).await;
    let deleted = match result {
        Ok(d) => d,
        Err(e) => {
            // Nothing was expunged (no QUIT): keep every id still listed.
            let _ = store.ledger.lock().compact(|k| listed.contains(k));
            return Err(e);
        }
    };
    // QUIT applies the DELEs. Only after its +OK are they gone.
    pop.send(&[Command::Quit]).await?;
    fault::point("quit-sent");
    let quit = pop.reply().await;
    pop.shutdown().await;
    match quit {
        Ok(Reply::Ok(_)) => {
            store.outcome.deleted = deleted.len();
            store.ledger.lock().compact(|k| listed.contains(k) && !deleted.contains(k))?;
            Ok(pop.received())
        }
        Ok(Reply::Err(t)) => {
            store.ledger.lock().compact(|k| listed.contains(k))?;
            Err(Error::Server(format!(
                "{}: QUIT failed (-ERR {t}); messages marked for deletion stay on the server and will be deleted next time",
                pop.peer()
            )))
        }
        Err(e) => {
            store.ledger.lock().compact(|k| listed.contains(k))?;
            Err(e)
        }
    }
}

/// What is in flight on the pipelined POP3 connection, in order.
enum InFlight {
    Retr(usize),
    Dele(Key),
    /// After the last RETR: its +OK shows that the last body ended where
    /// the server meant it to.
    Noop,
}

/// Retrieves `to_fetch` and deletes per policy. Returns the ids whose DELE
/// the server accepted.
///
/// A body counts only once the reply after it has parsed: if garbage
/// follows, the body may have been cut short of the server's own end, and
/// must be neither recorded nor deleted. So the last body waits in
/// `unconfirmed` until the next reply (RETR, DELE, or the NOOP sent after
/// the last RETR) parses.
async fn pop3_transfer<S: Stream>(
    account: &Account,
    pop: &mut Pop3<S>,
    store: &mut Store<'_>,
    to_fetch: &[(u32, Key, Option<u64>)],
    to_delete: Vec<(u32, Key)>,
) -> Result<HashSet<Key>> {
    let depth = if pop.caps.pipelining { PIPELINE_DEPTH } else { 1 };
    let numbers: HashMap<&Key, u32> = to_fetch.iter().map(|(n, k, _)| (k, *n)).collect();
    let mut bar =
        store.report.transfer(&account.name, to_fetch.len(), to_fetch.iter().filter_map(|(_, _, s)| *s).sum());
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut outgoing: Vec<Command> = Vec::new();
    let mut dele_queue: VecDeque<(u32, Key)> = to_delete.into();
    let mut accepted = HashSet::new();
    let mut batch: Vec<(Key, Finished)> = Vec::new();
    let mut unconfirmed: Option<(Key, Finished)> = None;
    let mut batch_bytes = 0u64;
    let mut next = 0usize;
    let mut noop_sent = false;
    let mut buf = Vec::with_capacity(64 * 1024);
    let total = to_fetch.len();

    let result: Result<()> = async {
        loop {
            // Keep the pipeline full: pending DELEs first, then RETRs. Refill
            // when it is half empty, so that commands go out many to a write
            // (and to an SSH packet), not one per message.
            let refill = in_flight.len() <= depth / 2;
            while refill && in_flight.len() < depth {
                if let Some((n, uid)) = dele_queue.pop_front() {
                    outgoing.push(Command::Dele(n));
                    in_flight.push_back(InFlight::Dele(uid));
                } else if next < total {
                    outgoing.push(Command::Retr(to_fetch[next].0));
                    in_flight.push_back(InFlight::Retr(next));
                    next += 1;
                } else if total > 0 && !noop_sent {
                    outgoing.push(Command::Noop);
                    in_flight.push_back(InFlight::Noop);
                    noop_sent = true;
                } else {
                    break;
                }
            }
            if !outgoing.is_empty() {
                let deletes = outgoing.iter().any(|c| matches!(c, Command::Dele(_)));
                pop.send(&outgoing).await?;
                if deletes {
                    fault::point("delete-sent");
                }
                outgoing.clear();
            }
            let Some(item) = in_flight.pop_front() else { return Ok(()) };
            // Every item starts with a reply line; once it parses, the body
            // before it is confirmed.
            let reply = pop.reply().await?;
            if let Some((key, f)) = unconfirmed.take() {
                batch_bytes += f.len;
                batch.push((key, f));
            }
            match (item, reply) {
                (InFlight::Dele(uid), Reply::Ok(_)) => {
                    fault::point("dele-confirmed");
                    accepted.insert(uid);
                }
                (InFlight::Dele(uid), Reply::Err(t)) => {
                    let text = format!("{}: DELE of {uid} refused: -ERR {t}; it stays on the server", pop.peer());
                    tracing::warn!("{text}");
                    store.outcome.policy_errors.push(PolicyRefusal { action: "DELE", messages: 1, text });
                }
                (InFlight::Noop, _) => {}
                (InFlight::Retr(i), Reply::Err(t)) => {
                    let (n, uid, _) = &to_fetch[i];
                    store.outcome.refused += 1;
                    tracing::warn!("{}: message {n} ({uid}) refused by the server (-ERR {t}); left there", pop.peer());
                }
                (InFlight::Retr(i), Reply::Ok(_)) => {
                    let (n, uid, size) = &to_fetch[i];
                    let before = pop.received();
                    // A body may not go past max_message_size, nor far past
                    // what LIST said (servers count line ends differently,
                    // so twice as much and a margin is still honest).
                    let limit = size
                        .map_or(u64::MAX, |s| s.saturating_mul(2).saturating_add(64 << 10))
                        .min(account.fetch.max_message_size);
                    match pop3_body(pop, store, &mut buf, limit).await? {
                        Ok(f) => unconfirmed = Some((uid.clone(), f)),
                        Err(got) => {
                            store.outcome.refused += 1;
                            tracing::warn!(
                                "{}: message {n} ({uid}) sent {} where LIST said {} (limit {}); not kept, left on \
                                 the server",
                                pop.peer(),
                                human_bytes(got),
                                size.map_or_else(|| "nothing".to_string(), human_bytes),
                                human_bytes(limit)
                            );
                        }
                    }
                    bar.received(pop.received() - before);
                    bar.messages(i + 1);
                }
            }
            let bodies_to_come = unconfirmed.is_some() || in_flight.iter().any(|f| matches!(f, InFlight::Retr(_)));
            let full = batch.len() >= fault::batch_messages(BATCH_MESSAGES) || batch_bytes >= BATCH_BYTES;
            if !batch.is_empty() && (full || (next == total && !bodies_to_come)) {
                let keys = store.commit(&mut batch, None).await?;
                batch_bytes = 0;
                if account.fetch.policy == Policy::Delete {
                    dele_queue.extend(keys.into_iter().map(|k| (numbers[&k], k)));
                }
            }
        }
    }
    .await;
    drop(bar);
    if let Err(e) = result {
        if let Some((key, f)) = unconfirmed.take() {
            if pop.out_of_step {
                tracing::warn!("{}: {key} was followed by garbage, so it may be cut off; not kept", pop.peer());
                store.sink.spool().discard_finished(f);
            } else {
                batch.push((key, f));
            }
        }
        // Complete messages are still good: make them durable so the next
        // run need not fetch them again. Nothing is deleted (no QUIT).
        store.salvage(&mut batch, None).await;
        return Err(e);
    }
    Ok(accepted)
}

/// Reads one RETR body (its +OK already read) into the staging area: the
/// staged file, or the size that came when it was over `limit` (thrown
/// away).
async fn pop3_body<S: Stream>(
    pop: &mut Pop3<S>,
    store: &Store<'_>,
    buf: &mut Vec<u8>,
    limit: u64,
) -> Result<std::result::Result<Finished, u64>> {
    let spool = store.sink.spool();
    let mut staged = spool.begin(&store.prefix())?;
    match pop.body_into(&mut staged, buf, limit).await {
        Ok(pop3::Body::Complete) => {
            fault::point("message-written");
            Ok(Ok(spool.finish(staged)?))
        }
        Ok(pop3::Body::TooLarge(got)) => {
            drop(staged);
            Ok(Err(got))
        }
        Err(e) => {
            drop(staged);
            Err(e)
        }
    }
}

// ---------------------------------------------------------------- IMAP --

async fn imap_flow<S: Stream>(
    account: &Account,
    wire: Wire<S>,
    password: Option<crate::secret::Secret>,
    greeting_done: bool,
    preauth_ok: bool,
    store: &mut Store<'_>,
) -> Result<u64> {
    let limits = Limits { max_body: account.fetch.max_message_size, ..Limits::default() };
    let mut imap = Imap::start(wire, limits, greeting_done, preauth_ok).await?;
    if imap.preauth {
        tracing::info!("{}: preauthenticated by {}", account.name, imap.peer());
    } else {
        let password = match password {
            Some(p) => Some(p),
            None => {
                crate::process::password(&account.login.password, "password_command", account.reach.timeout).await?
            }
        };
        if password.is_none()
            && matches!(account.reach.via, crate::config::Via::Exec(_) | crate::config::Via::Command(_))
        {
            return Err(Error::Auth(format!(
                "{} greeted `* OK`, not `* PREAUTH`: it wants a login, so it does not run preauthenticated. Run it \
                 so that it does (Dovecot's imap binary does by itself, GNU imap4d needs `--inetd --preauth`, \
                 Courier's imapd the Maildir as argument), or give a password_command",
                imap.peer()
            )));
        }
        imap.login(&account.login.user, password.as_ref(), account.login.auth).await?;
    }
    let folders = resolve_folders(&mut imap, store.show.folders.as_ref().unwrap_or(&account.fetch.folders)).await?;
    let mut listed: HashSet<Key> = HashSet::new();
    let mut done: Vec<FolderKeys> = Vec::new();
    for folder in &folders {
        match imap_folder(account, &mut imap, store, folder, &mut listed).await {
            Ok(()) => done.push(FolderKeys::new(folder)),
            Err(error @ Error::Server(_)) => {
                // One bad folder (gone, UIDVALIDITY changed) does not stop
                // the others; it is reported at the end.
                tracing::error!("{error}");
                store.outcome.folder_errors.push(FolderError { folder: folder.clone(), error });
            }
            Err(e) => return Err(e),
        }
    }
    if store.show.check {
        imap.logout().await;
        return Ok(imap.received());
    }
    store.ledger.lock().compact(|k| listed.contains(k) || !done.iter().any(|f| f.holds(k)))?;
    if store.show.idle {
        let Some(folder) = folders.first() else { return Err(Error::Config("no folder to IDLE on".into())) };
        tracing::info!("{}: waiting for new mail in {folder} (IDLE)", account.name);
        while !store.stop.requested() {
            fault::pause("idle-loop").await;
            // Fetch before every IDLE, not only after one reported a change:
            // mail that arrived between the last scan and the IDLE command
            // would otherwise wait for the next change. The fetch leaves the
            // folder selected for the IDLE.
            let before = store.outcome.delivered;
            let mut seen = HashSet::new();
            imap_folder(account, &mut imap, store, folder, &mut seen).await?;
            let keys = FolderKeys::new(folder);
            store.ledger.lock().compact(|k| seen.contains(k) || !keys.holds(k))?;
            let new = store.outcome.delivered - before;
            if new > 0 {
                tracing::info!("{}: {folder}: {new} new delivered", account.name);
            }
            // Renewed well within RFC 2177's 29 minutes, and at least every
            // `interval`: some servers (GNU imap4d) announce IDLE and never
            // report new mail, so the loop's fetch is the safety net.
            imap.idle(IDLE_RENEW.min(account.fetch.interval), &store.stop).await?;
            if store.stop.requested() {
                tracing::info!("{}: stopped", account.name);
                break;
            }
        }
    }
    imap.logout().await;
    Ok(imap.received())
}

/// Turns configured names and patterns into folder names.
async fn resolve_folders<S: Stream>(imap: &mut Imap<S>, wanted: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for w in wanted {
        if w.contains('*') || w.contains('%') {
            let found = imap.list(w).await?;
            if found.is_empty() {
                tracing::warn!("{}: no folder matches {w:?}", imap.peer());
            }
            out.extend(found);
        } else {
            out.push(w.clone());
        }
    }
    out.dedup();
    Ok(out)
}

/// Fetches one folder.
async fn imap_folder<S: Stream>(
    account: &Account,
    imap: &mut Imap<S>,
    store: &mut Store<'_>,
    folder: &str,
    listed: &mut HashSet<Key>,
) -> Result<()> {
    // The folder's name comes from the server: it becomes a directory only
    // through the one mapping that makes it a safe child of the Maildir.
    let subfolder = match account.delivery.maildir_subfolders.then(|| Subfolder::for_folder(folder)) {
        None => None,
        Some(Ok(sub)) => sub,
        Some(Err(why)) => {
            return Err(Error::Server(format!("{}: {why}; the folder is skipped", imap.peer())));
        }
    };
    // Keep opens with SELECT too (bodies are fetched with BODY.PEEK[], so
    // nothing changes): servers such as GNU imap4d and a fresh Courier
    // mailbox do not persist UIDs for a folder only EXAMINEd, so the next
    // run would see a new UIDVALIDITY. Only --check, which records nothing,
    // stays read-only.
    let read_only = store.show.check;
    let (validity, exists) = imap.select(folder, read_only).await?;
    let keys = FolderKeys::new(folder);
    let old: Vec<String> =
        store.ledger.lock().validities(&keys).into_iter().filter(|v| *v != validity).map(|v| v.to_string()).collect();
    // After a renumbering, what was delivered is recognised by fingerprint
    // (size and header block), where the ledger has one.
    let mut marks = HashMap::new();
    if !old.is_empty() {
        let unmarked;
        (marks, unmarked) = store.ledger.lock().marks_under(&keys, validity);
        let changed = format!(
            "{}: UIDVALIDITY of {folder} changed from {} to {validity}: the server renumbered the folder",
            imap.peer(),
            old.join(", ")
        );
        if unmarked == 0 {
            tracing::info!("{changed}; the messages delivered before are recognised by their header");
        } else if account.fetch.policy == Policy::Delete || account.fetch.accept_uidvalidity_change {
            tracing::warn!(
                "{changed}; {unmarked} messages delivered before were recorded without a fingerprint and cannot be \
                 recognised, so what is there now is fetched as new"
            );
        } else {
            return Err(Error::Server(format!(
                "{changed}, and {unmarked} messages delivered before were recorded without a fingerprint, so they \
                 can no longer be recognised. Nothing was fetched from {folder}. To fetch everything in it again \
                 (mail you already have would arrive twice), run once with --accept-uidvalidity-change"
            )));
        }
    }
    if exists == 0 {
        return Ok(());
    }
    let scan = imap.scan().await?;
    store.outcome.on_server += scan.len();
    let recognised = recognise(account, imap, store, (&keys, validity), &scan, marks).await?;
    let mut to_fetch: Vec<(u32, u64)> = Vec::new();
    let mut to_apply: Vec<u32> = Vec::new();
    for f in &scan {
        let (uid, seen) = (f.uid, f.seen);
        let key = keys.key(validity, uid);
        let delivered = store.ledger.lock().is_delivered(&key) || recognised.contains(&uid);
        listed.insert(key);
        if account.fetch.fetch_all || !delivered {
            if account.fetch.only_unseen && seen {
                continue;
            }
            if account.fetch.policy == Policy::Delete && f.deleted {
                // Someone else flagged it for deletion: not ours to fetch,
                // nor (UID EXPUNGE names only what we delivered) to expunge.
                continue;
            }
            let size = f.size.unwrap_or(0);
            if size > account.fetch.max_message_size {
                tracing::warn!(
                    "{}: {folder} UID {uid} is {} (over max_message_size); left there",
                    imap.peer(),
                    human_bytes(size)
                );
                store.outcome.refused += 1;
                continue;
            }
            to_fetch.push((uid, size));
        } else if account.fetch.policy == Policy::Delete || (account.fetch.policy == Policy::Seen && !seen) {
            // Delivered before, but the policy was not applied (or, for
            // delete, flagged but not yet expunged): apply it now.
            to_apply.push(uid);
        }
    }
    tracing::info!(
        "{}: {folder}: {} messages, {} to fetch{}",
        account.name,
        scan.len(),
        to_fetch.len(),
        policy_note(account.fetch.policy, to_apply.len())
    );
    if store.show.check {
        store.outcome.waiting += to_fetch.len();
        store.outcome.waiting_bytes += to_fetch.iter().map(|(_, s)| s).sum::<u64>();
        return Ok(());
    }

    // Batches by count and size.
    let mut batches: Vec<Vec<u32>> = Vec::new();
    let mut bytes = 0u64;
    for (uid, size) in &to_fetch {
        if batches.last().is_none_or(|b| b.len() >= fault::batch_messages(BATCH_MESSAGES) || bytes >= BATCH_BYTES) {
            batches.push(Vec::new());
            bytes = 0;
        }
        batches.last_mut().expect("a batch").push(*uid);
        bytes += size;
    }
    let mut bar = store.report.transfer(folder, to_fetch.len(), to_fetch.iter().map(|(_, s)| s).sum());
    let result = imap_transfer(
        &Job { account, keys: &keys, validity, subfolder: subfolder.as_ref(), batches: &batches },
        imap,
        store,
        to_apply,
        bar.as_mut(),
    )
    .await;
    drop(bar);
    result
}

/// Finds, among the messages of a renumbered folder, those the ledger
/// recorded as delivered under the old numbering (`marks`: fingerprints and
/// how many deliveries each stands for), and records them under their new
/// UIDs. Returns their UIDs.
async fn recognise<S: Stream>(
    account: &Account,
    imap: &mut Imap<S>,
    store: &mut Store<'_>,
    (keys, validity): (&FolderKeys, u32),
    scan: &[imap::Listed],
    mut marks: HashMap<String, usize>,
) -> Result<HashSet<u32>> {
    let mut found = HashSet::new();
    if marks.is_empty() {
        return Ok(found);
    }
    let candidates: Vec<u32> = scan
        .iter()
        .filter(|f| !(account.fetch.policy == Policy::Delete && f.deleted))
        .filter(|f| !store.ledger.lock().is_delivered(&keys.key(validity, f.uid)))
        .map(|f| f.uid)
        .collect();
    if candidates.is_empty() {
        return Ok(found);
    }
    let mut adopted = Vec::new();
    for (uid, fp) in imap.fingerprints(&candidates).await? {
        if let Some(left) = marks.get_mut(&fp).filter(|n| **n > 0)
            && found.insert(uid)
        {
            *left -= 1;
            adopted.push((keys.key(validity, uid), Some(fp)));
        }
    }
    tracing::info!("{}: {} messages delivered before were recognised", imap.peer(), adopted.len());
    if !store.show.check {
        store.ledger.lock().commit_marked(&adopted)?;
    }
    Ok(found)
}

/// What one folder's transfer works on.
struct Job<'a> {
    account: &'a Account,
    /// The folder's ledger keys.
    keys: &'a FolderKeys,
    /// Its UIDVALIDITY.
    validity: u32,
    /// The Maildir++ subfolder to deliver into, if any.
    subfolder: Option<&'a Subfolder>,
    /// UIDs to fetch, in batches.
    batches: &'a [Vec<u32>],
}

/// The pipelined fetch of one folder: UID FETCH batches in flight, each
/// batch committed as soon as its completion arrives, then the policy
/// applied to it.
async fn imap_transfer<S: Stream>(
    job: &Job<'_>,
    imap: &mut Imap<S>,
    store: &mut Store<'_>,
    to_apply: Vec<u32>,
    bar: &mut dyn Transfer,
) -> Result<()> {
    let mut in_flight: VecDeque<(String, Pending)> = VecDeque::new();
    if !to_apply.is_empty() {
        apply_policy(job.account, imap, &to_apply, &mut in_flight).await?;
    }
    let mut collected: HashMap<u32, Finished> = HashMap::new();
    let spool = store.sink.spool();
    let mut bodies = Bodies::into_spool(spool, store.trace.clone());
    let result = imap_pipeline(job, imap, store, &mut in_flight, &mut collected, &mut bodies, bar).await;
    if let Err(e) = result {
        // Keep what is complete; nothing of it was deleted yet.
        bodies.abort();
        let mut batch: Vec<(Key, Finished)> =
            collected.drain().map(|(uid, f)| (job.keys.key(job.validity, uid), f)).collect();
        store.salvage(&mut batch, job.subfolder).await;
        return Err(e);
    }
    Ok(())
}

/// The loop of [`imap_transfer`]; on error the caller saves what is complete.
async fn imap_pipeline<S: Stream>(
    job: &Job<'_>,
    imap: &mut Imap<S>,
    store: &mut Store<'_>,
    in_flight: &mut VecDeque<(String, Pending)>,
    collected: &mut HashMap<u32, Finished>,
    bodies: &mut Bodies<'_>,
    bar: &mut dyn Transfer,
) -> Result<()> {
    let Job { account, keys: folder_keys, validity, subfolder, batches } = *job;
    let mut next = 0;
    let mut count = 0usize;
    // The UIDs of the batches in flight: a body for any other UID is
    // nobody's, and is thrown away at once.
    let mut requested: HashSet<u32> = HashSet::new();
    let mut unsolicited = imap::Unsolicited::default();
    loop {
        while next < batches.len()
            && in_flight.iter().filter(|(_, p)| matches!(p, Pending::Fetch(_))).count() < IMAP_FETCHES_IN_FLIGHT
        {
            let cmd = ImapCommand::UidFetch(uid_set(&batches[next]), "(UID RFC822.SIZE BODY.PEEK[])");
            let tag = imap.send(&cmd).await?;
            requested.extend(&batches[next]);
            in_flight.push_back((tag, Pending::Fetch(next)));
            next += 1;
        }
        if in_flight.is_empty() {
            return Ok(());
        }
        let before = imap.received();
        let response = imap.read(bodies).await?;
        bar.received(imap.received() - before);
        match response {
            Response::Untagged(Untagged::Fetch(f)) if imap::has_body(&f) => {
                let Some(mut file) = bodies.done.take() else { continue };
                match f.uid {
                    Some(uid) if requested.contains(&uid) && !collected.contains_key(&uid) => {
                        fault::point("message-written");
                        file.fingerprint = bodies.done_header.take();
                        collected.insert(uid, file);
                        count += 1;
                        bar.messages(count);
                    }
                    _ => {
                        store.sink.spool().discard_finished(file);
                        unsolicited.add(imap.peer(), "UID FETCH", imap.last_size)?;
                    }
                }
            }
            Response::Untagged(Untagged::Status { status: Status::Bye, text, .. }) => {
                return Err(Error::Server(format!("{} closed the session: {text}", imap.peer())));
            }
            Response::Tagged { tag, status, code, text } => {
                let Some(pos) = in_flight.iter().position(|(t, _)| *t == tag) else {
                    return Err(Error::Protocol(format!("{}: completion for unknown tag {tag}", imap.peer())));
                };
                let (_, pending) = in_flight.remove(pos).expect("position is valid");
                let done = imap::Done { status, code, text };
                unsolicited.reset();
                match pending {
                    Pending::Fetch(i) => {
                        if done.status != Status::Ok {
                            return Err(imap.failure("UID FETCH", &done));
                        }
                        for uid in &batches[i] {
                            requested.remove(uid);
                        }
                        let mut batch = Vec::with_capacity(batches[i].len());
                        let mut uid_of = HashMap::with_capacity(batches[i].len());
                        for uid in &batches[i] {
                            match collected.remove(uid) {
                                Some(f) => {
                                    let key = folder_keys.key(validity, *uid);
                                    uid_of.insert(key.clone(), *uid);
                                    batch.push((key, f));
                                }
                                None => tracing::info!("{}: UID {uid} vanished before it was fetched", imap.peer()),
                            }
                        }
                        let keys = store.commit(&mut batch, subfolder).await?;
                        let uids: Vec<u32> = keys.iter().filter_map(|k| uid_of.get(k).copied()).collect();
                        if !uids.is_empty() {
                            apply_policy(account, imap, &uids, in_flight).await?;
                        }
                    }
                    Pending::Apply(uids, step) => {
                        if done.status != Status::Ok {
                            // As a refused DELE: the messages stay on the
                            // server, and the run says so (exit 7).
                            let text = format!("{}; the messages stay on the server", imap.failure(step.name(), &done));
                            tracing::warn!("{text}");
                            store.outcome.policy_errors.push(PolicyRefusal {
                                action: step.name(),
                                messages: uids.len(),
                                text,
                            });
                        } else {
                            fault::point("policy-applied");
                            if step.removes() {
                                store.outcome.deleted += uids.len();
                            }
                        }
                    }
                }
            }
            Response::Untagged(Untagged::Exists(_) | Untagged::Expunge(_)) => {}
            _ => unsolicited.add(imap.peer(), "UID FETCH", imap.last_size)?,
        }
    }
}

/// Queues the commands that apply the policy to delivered UIDs.
async fn apply_policy<S: Stream>(
    account: &Account,
    imap: &mut Imap<S>,
    uids: &[u32],
    in_flight: &mut VecDeque<(String, Pending)>,
) -> Result<()> {
    let set = uid_set(uids);
    match account.fetch.policy {
        Policy::Keep => {}
        Policy::Seen => {
            let tag = imap.send(&ImapCommand::UidStoreAdd(set, "\\Seen")).await?;
            in_flight.push_back((tag, Pending::Apply(uids.to_vec(), PolicyStep::Seen)));
        }
        Policy::Delete => {
            let tag = imap.send(&ImapCommand::UidStoreAdd(set.clone(), "\\Deleted")).await?;
            fault::point("delete-sent");
            in_flight.push_back((tag, Pending::Apply(uids.to_vec(), PolicyStep::Flag)));
            if imap.has("UIDPLUS") {
                let tag = imap.send(&ImapCommand::UidExpunge(set)).await?;
                in_flight.push_back((tag, Pending::Apply(uids.to_vec(), PolicyStep::UidExpunge)));
            } else if account.fetch.allow_expunge_all {
                let tag = imap.send(&ImapCommand::Expunge).await?;
                in_flight.push_back((tag, Pending::Apply(uids.to_vec(), PolicyStep::Expunge)));
            } else {
                tracing::warn!(
                    "{}: no UIDPLUS, so delivered messages are only flagged \\Deleted (a plain EXPUNGE would also remove \
                     what others flagged; set allow_expunge_all = true to allow it)",
                    imap.peer()
                );
            }
        }
    }
    Ok(())
}
