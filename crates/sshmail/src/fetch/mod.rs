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
mod imap_flow;
pub mod pop3;
mod pop3_flow;
pub mod report;

use std::sync::Arc;
use std::time::Instant;

use crate::config::{Account, Policy, Protocol};
use crate::deliver::maildir::Subfolder;
use crate::deliver::{Finished, Refusal, Sink, SyncJob, on_disk};
use crate::error::{Error, Result};
use crate::fault;
use crate::ledger::{Key, Ledgers, Shared};
use crate::ssh::SshPool;
use crate::stop::Stop;
use crate::transport;
use crate::wire::Wire;
use report::Report;

/// Messages per group commit.
const BATCH_MESSAGES: usize = 256;
/// Bytes per group commit.
const BATCH_BYTES: u64 = 64 << 20;
/// POP3 RETR commands in flight when the server allows pipelining.
const PIPELINE_DEPTH: usize = 64;
/// The descriptors one working fetch task may hold at once: the ledger's
/// two files, the message being written, the batch's syncs
/// ([`crate::deliver::spool::SYNCS_AT_ONCE`]) and a directory being synced.
pub const FILES_PER_TASK: usize = 4 + crate::deliver::spool::SYNCS_AT_ONCE;

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
    /// IMAP: the folders the cycle took, the account's patterns resolved.
    pub folders: Vec<String>,
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
    /// With `idle`: how long an IDLE may last, learned across the cycles
    /// of one watch.
    pub renewal: Arc<Renewal>,
}

/// How long an IDLE may last before it is renewed: well under RFC 2177's
/// 29 minutes by default, since servers are seen ending one at 10 and at
/// about 23 minutes; when a server ends one sooner, the next ones are
/// renewed before that.
#[derive(Debug)]
pub struct Renewal(std::sync::Mutex<std::time::Duration>);

/// The shortest renewal learned from a server that ends IDLEs early.
const SHORTEST_RENEWAL: std::time::Duration = std::time::Duration::from_secs(60);

impl Default for Renewal {
    fn default() -> Self {
        Renewal::new(IDLE_RENEW)
    }
}

impl Renewal {
    /// Starts from `first`.
    pub fn new(first: std::time::Duration) -> Renewal {
        Renewal(std::sync::Mutex::new(first.max(std::time::Duration::from_secs(1))))
    }

    /// The current renewal time.
    pub fn get(&self) -> std::time::Duration {
        *self.0.lock().expect("renewal lock")
    }

    /// The server ended an IDLE after `lasted`: renew at three quarters of
    /// that from now on (not below a minute). An IDLE that ended within a
    /// minute teaches nothing (a link that failed, not a server's limit).
    /// Returns the new time when it changed.
    pub fn ended_after(&self, lasted: std::time::Duration) -> Option<std::time::Duration> {
        let mut current = self.0.lock().expect("renewal lock");
        if lasted < SHORTEST_RENEWAL || lasted >= *current {
            return None;
        }
        *current = (lasted * 3 / 4).max(SHORTEST_RENEWAL);
        Some(*current)
    }
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

/// How long one IDLE may last before it is renewed, by default (RFC 2177
/// asks clients to renew within 29 minutes; servers are seen dropping an
/// IDLE at 10).
pub const IDLE_RENEW: std::time::Duration = std::time::Duration::from_secs(8 * 60);

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
    /// Progress of each transfer, and the cycle's events.
    pub report: Arc<dyn Report>,
    /// Notified to ask a watch for a pass now (a poll): ends its IDLE.
    pub wake: Arc<tokio::sync::Notify>,
}

impl Context {
    /// A context with a fresh pool, no stop requested, reporting nothing.
    pub fn quiet() -> Context {
        Context::new(SshPool::new(), Stop::new(), Arc::new(report::Quiet))
    }

    /// A context around `pool`, with no ledger open yet.
    pub fn new(pool: SshPool, stop: Stop, report: Arc<dyn Report>) -> Context {
        Context { pool: Arc::new(pool), ledgers: Arc::default(), stop, report, wake: Arc::default() }
    }
}

/// One fetch cycle for an account, along its route and the context's pool.
/// With `show.idle` it stays until the context's stop is requested (then
/// ends the IDLE with DONE and logs out) or the connection fails.
pub async fn fetch_account(account: &Account, show: &Cycle, ctx: &Context) -> Result<Outcome> {
    let pool = ctx.pool.as_ref();
    let route = &account.route;
    let started = Instant::now();
    // Local state first: a broken state directory or Maildir should stop us
    // before we touch the server.
    let (identity, stem, legacy) = ledger_names(account);
    let ledger =
        ctx.ledgers.open_for_mailbox(&account.state_dir, &stem, &identity, legacy.as_deref(), &ctx.stop).await?;
    let open_sink = if show.check { Sink::for_check } else { Sink::open };
    let spool_dir = ledger.lock().spool_dir();
    let sink =
        Arc::new(open_sink(&account.delivery.to, &spool_dir, &account.delivery.recipient, account.route.timeout)?);
    let mut outcome = Outcome::default();
    // A check changes nothing locally either: no recovery, no cleaning.
    if !show.check {
        // On a blocking thread (renames, fsyncs, a directory scan): recovery
        // first, then orphan clean-up, since recovery may still need staged
        // files.
        let (name, sink, ledger) = (account.name.clone(), sink.clone(), Shared::clone(&ledger));
        let recovered = on_disk("the recovery of interrupted deliveries", move || {
            let recovered = recover(&name, &sink, &ledger)?;
            sink.spool().clean();
            Ok(recovered)
        })
        .await?;
        outcome.recovered = recovered.len();
        // Delivered by the run that was interrupted before it could tell.
        let mut by_folder: std::collections::BTreeMap<String, Vec<(std::path::PathBuf, u64)>> = Default::default();
        for (key, path) in recovered {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            by_folder.entry(key_folder(account.protocol, &key)).or_default().push((path, size));
        }
        for (folder, files) in by_folder {
            if listened(account, ctx.report.as_ref(), &folder) {
                let told = files
                    .into_iter()
                    .map(|(p, size)| {
                        let summary = crate::news::Summary::of_file(&p);
                        (Some(p), size, summary)
                    })
                    .collect();
                announce(account, ctx.report.as_ref(), &folder, told);
            }
        }
    }
    if outcome.recovered > 0 {
        tracing::info!("{}: finished {} deliveries interrupted in an earlier run", account.name, outcome.recovered);
    }

    // The password before the connection: a password command that hangs or
    // fails must not hold a server connection open. Through exec or a
    // tunnel command the server normally greets PREAUTH and needs none, so
    // there it is asked for only when the server wants one.
    let password = match &account.route.via {
        crate::config::Via::Exec(_) | crate::config::Via::Command(_) if account.protocol == Protocol::Imap => None,
        _ => crate::process::password(&account.login.password, "password_command", account.route.timeout).await?,
    };
    // Connecting holds no file: the ledger rests meanwhile (a login may
    // wait for a person).
    ledger.rest();
    let opened = transport::open(route, pool).await?;
    ledger.wake(&ctx.stop).await?;
    ctx.report.event(report::Event::Connected { peer: &opened.peer, connection: opened.connection.as_deref() });
    let diagnostics = opened.diagnostics.clone();
    // A greeting read already (the imapd probe, STARTTLS) comes first.
    let stream = match opened.greeting {
        Some(greeting) => Box::new(transport::Prefixed::new(greeting, opened.stream)),
        None => opened.stream,
    };
    let wire = Wire::new(stream, account.route.timeout, opened.peer.clone());
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
        account,
        sink: &sink,
        ledger: &ledger,
        outcome: &mut outcome,
        show,
        trace,
        stop: ctx.stop.clone(),
        wake: ctx.wake.clone(),
        report: ctx.report.as_ref(),
    };
    let flow = match account.protocol {
        Protocol::Pop3 => {
            let r = pop3_flow::pop3_flow(account, wire, password, &mut store).await;
            if r.is_ok() {
                store.passed("INBOX", (0, 0));
            }
            r
        }
        Protocol::Imap => imap_flow::imap_flow(account, wire, password, opened.preauth_ok, &mut store).await,
    };
    let received = match flow {
        Ok(r) => r,
        Err(e) => return Err(crate::process::explain(diagnostics.as_deref(), e).await),
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
fn recover(account: &str, sink: &Sink, ledger: &Shared) -> Result<Vec<(Key, std::path::PathBuf)>> {
    let mut ledger = ledger.lock();
    let mut recovered = Vec::new();
    for (key, token) in ledger.pending() {
        let done = match sink.maildir().map(|m| m.recover(&token)).transpose() {
            Ok(r) => r.flatten(),
            Err(e) => {
                tracing::warn!("{}: cannot finish an interrupted delivery ({e}); it will be fetched again", account);
                None
            }
        };
        match done {
            Some(path) => {
                ledger.commit(std::slice::from_ref(&key))?;
                recovered.push((key, path));
            }
            None => ledger.forget(&key)?,
        }
    }
    Ok(recovered)
}

/// The server folder a ledger key belongs to (POP3: `INBOX`).
fn key_folder(protocol: Protocol, key: &Key) -> String {
    match protocol {
        Protocol::Pop3 => "INBOX".to_string(),
        Protocol::Imap => {
            let first = key.as_str().split('/').next().unwrap_or("");
            crate::ledger::percent_decode(first).unwrap_or_else(|| first.to_string())
        }
    }
}

/// Whether anyone is told of new mail in `folder`: the account's hook for
/// it, or the report. Only then are the messages' headers read.
fn listened(account: &Account, report: &dyn Report, folder: &str) -> bool {
    account.hooks.on_new_in(folder).is_some() || report.hears_arrivals()
}

/// A message told of: the delivered file when there is one, its size, its
/// header's summary.
type Told = (Option<std::path::PathBuf>, u64, crate::news::Summary);

/// Tells of messages of `folder` now durable and recorded: the account's
/// hook for the folder (one run for the batch), and the report.
fn announce(account: &Account, report: &dyn Report, folder: &str, told: Vec<Told>) {
    if told.is_empty() {
        return;
    }
    let sink = crate::news::sink_name(&account.delivery.to);
    let batch: Vec<crate::news::Arrived> = told
        .into_iter()
        .map(|(path, size, summary)| crate::news::Arrived {
            account: account.name.clone(),
            folder: folder.to_string(),
            path: path.map(|p| p.display().to_string()),
            sink: sink.clone(),
            summary,
            size,
        })
        .collect();
    if let Some(command) = account.hooks.on_new_in(folder) {
        crate::news::hook::spawn(crate::news::hook::Run::new_mail(account, folder, command.clone(), &batch));
    }
    report.arrived(&batch);
}

/// Everything that selects the mailbox an account reaches: protocol,
/// transport, SSH destination (after `~/.ssh/config`, with its jumps), and
/// for network servers the server and login, or the remote imapd / local
/// tunnel command. Two mailboxes that differ in any of these never share a
/// ledger.
pub fn mailbox_identity(account: &Account) -> String {
    use crate::config::Via;
    let ssh = match &account.route.ssh {
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
    let how = match &account.route.via {
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
fn ledger_names(account: &Account) -> (String, String, Option<String>) {
    let identity = mailbox_identity(account);
    if !account.adhoc {
        return (identity, account.name.clone(), None);
    }
    let hash = crate::ledger::short_hash(&identity, 8);
    let readable: String = crate::ledger::file_stem(&account.name).chars().take(48).collect();
    // Before, an ad-hoc ledger was named by a description that, except for
    // exec, already held the whole identity: that file is taken over. An
    // exec one ("imap on HOST") was shared by every imapd on the host, so
    // it is not.
    let legacy = match &account.route.via {
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
    account: &'a Account,
    sink: &'a Arc<Sink>,
    ledger: &'a crate::ledger::Working,
    outcome: &'a mut Outcome,
    show: &'a Cycle,
    trace: Option<Trace>,
    stop: Stop,
    wake: Arc<tokio::sync::Notify>,
    report: &'a dyn Report,
}

impl Store<'_> {
    /// Reports a pass over `folder` that began when the outcome's delivered
    /// messages and bytes were `before`.
    fn passed(&self, folder: &str, before: (usize, u64)) {
        self.report.event(report::Event::Passed {
            folder,
            delivered: self.outcome.delivered - before.0,
            bytes: self.outcome.bytes - before.1,
        });
    }

    /// The trace line for a message starting now (empty when off).
    fn prefix(&self) -> Vec<u8> {
        self.trace.as_ref().map(Trace::line).unwrap_or_default()
    }

    /// Group commit. Returns the keys delivered, in batch order.
    ///
    /// Maildir: sync, record staged (`P`), publish, record delivered (`D`).
    /// Other sinks: deliver, then record delivered; refusals stay on the
    /// server and are reported.
    async fn commit(
        &mut self,
        batch: &mut Vec<(Key, Finished)>,
        subfolder: Option<&Subfolder>,
        folder: &str,
    ) -> Result<Vec<Key>> {
        let started = self.begin_commit(std::mem::take(batch))?;
        self.finish_commit(started, subfolder, folder).await
    }

    /// Starts a group commit: for a Maildir, the batch's fdatasyncs begin
    /// on blocking threads and the caller goes on reading the next batch
    /// (the transfer and the disk overlap); [`Store::finish_commit`] waits
    /// for them and records. Other sinks do all their work when finished.
    fn begin_commit(&self, batch: Vec<(Key, Finished)>) -> Result<Committing> {
        let sync = match self.sink.maildir() {
            Some(_) if !batch.is_empty() => {
                let files: Vec<&Finished> = batch.iter().map(|(_, f)| f).collect();
                Some(self.sink.spool().start_sync_of(&files)?)
            }
            _ => None,
        };
        Ok(Committing { batch, sync })
    }

    /// Ends a group commit begun by [`Store::begin_commit`], then tells of
    /// the messages of `folder` it made durable and recorded. Returns the
    /// keys delivered, in batch order.
    async fn finish_commit(
        &mut self,
        committing: Committing,
        subfolder: Option<&Subfolder>,
        folder: &str,
    ) -> Result<Vec<Key>> {
        let Committing { batch, sync } = committing;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let listened = !self.show.check && listened(self.account, self.report, folder);
        let (keys, mut files): (Vec<Key>, Vec<Finished>) = batch.into_iter().unzip();
        let spool = self.sink.spool();
        let Some(maildir) = self.sink.maildir() else {
            let results = self.sink.deliver(&files).await;
            let mut told = Vec::new();
            let delivered = match results {
                Ok(results) => {
                    fault::point("sink-delivered");
                    let mut ok = Vec::new();
                    for ((key, f), r) in keys.iter().zip(&files).zip(results) {
                        match r {
                            Ok(()) => {
                                ok.push((key.clone(), f.fingerprint.clone()));
                                self.outcome.bytes += f.len;
                                if listened {
                                    told.push((None, f.len, crate::news::Summary::of_file(&f.path)));
                                }
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
            announce(self.account, self.report, folder, told);
            return Ok(ok.into_iter().map(|(k, _)| k).collect());
        };
        // Order is important: content durable, then named in the ledger,
        // then visible, then recorded as delivered.
        let synced = match sync {
            Some(job) => job.wait().await,
            None => spool.sync(&files).await,
        };
        if let Err(e) = synced {
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
        let (count, bytes) = (files.len(), files.iter().map(|f| f.len).sum::<u64>());
        // The record, the renames and their three fsyncs, on a blocking
        // thread (the pool the batch's syncs already use, so no new
        // threads), under one ledger lock: the account's other tasks never
        // see this batch prepared but not committed. Once begun it runs to
        // its end even if this task is cancelled: then it is recorded, and
        // the next cycle applies the policy.
        let (ledger, sink, subfolder) = (Shared::clone(self.ledger), Arc::clone(self.sink), subfolder.cloned());
        let (keys, told) = on_disk("the delivery step", move || {
            let maildir = sink.maildir().expect("a Maildir sink");
            fault::pause_blocking("batch-recording");
            let mut ledger = ledger.lock();
            ledger.prepare(&prepared)?;
            maildir.publish(subfolder.as_ref(), &files)?;
            ledger.commit(&keys)?;
            drop(ledger);
            fault::point("batch-recorded");
            let told: Vec<Told> = if listened {
                files
                    .iter()
                    .map(|f| {
                        let path = maildir.published(subfolder.as_ref(), &f.name);
                        let summary = crate::news::Summary::of_file(&path);
                        (Some(path), f.len, summary)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            Ok((keys, told))
        })
        .await?;
        self.outcome.delivered += count;
        self.outcome.bytes += bytes;
        announce(self.account, self.report, folder, told);
        Ok(keys)
    }

    /// Compacts the ledger ([`crate::ledger::Ledger::compact`]: a rewrite,
    /// an fsync, a rename) on a blocking thread.
    async fn compact(&self, keep: impl Fn(&Key) -> bool + Send + 'static) -> Result<()> {
        let ledger = Shared::clone(self.ledger);
        on_disk("the ledger compaction", move || ledger.lock().compact(keep)).await
    }

    /// Saves what is complete after a failure; the failure is what counts.
    async fn salvage(&mut self, batch: &mut Vec<(Key, Finished)>, subfolder: Option<&Subfolder>, folder: &str) {
        if let Err(e) = self.commit(batch, subfolder, folder).await {
            tracing::error!("could not save the messages that were complete: {e}");
        }
    }
}

/// A group commit under way: its batch, and for a Maildir the batch's
/// fdatasyncs running meanwhile. Dropped (an error, a cancelled task), its
/// files are removed; nothing was recorded.
pub(super) struct Committing {
    batch: Vec<(Key, Finished)>,
    sync: Option<SyncJob>,
}

impl Committing {
    /// True when finishing it would not wait for the disk.
    pub(super) fn ready(&self) -> bool {
        self.sync.as_ref().is_none_or(SyncJob::is_finished)
    }

    /// Its messages, to save after a failure.
    pub(super) fn into_batch(self) -> Vec<(Key, Finished)> {
        self.batch
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_a_server_ended_early_is_renewed_sooner_from_then_on_never_below_a_minute() {
        let r = Renewal::new(std::time::Duration::from_secs(480));
        assert_eq!(r.ended_after(std::time::Duration::from_secs(30)), None, "a quick failure teaches nothing");
        assert_eq!(r.ended_after(std::time::Duration::from_secs(600)), None, "past the renewal: not early");
        assert_eq!(r.ended_after(std::time::Duration::from_secs(300)), Some(std::time::Duration::from_secs(225)));
        assert_eq!(r.get(), std::time::Duration::from_secs(225));
        assert_eq!(r.ended_after(std::time::Duration::from_secs(70)), Some(std::time::Duration::from_secs(60)));
        assert_eq!(r.get(), std::time::Duration::from_secs(60));
    }
}
