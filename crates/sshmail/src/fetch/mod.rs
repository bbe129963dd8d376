//! Fetching one account: what is new, what to delete, in which order.
//!
//! The order is the point of this module. For every batch of messages:
//!
//! 1. bodies stream into the sink's staging area as they arrive;
//! 2. the sink makes them durable (fsync) and the ledger records their
//!    staging names (`P`), fsync'd;
//! 3. the sink publishes them (rename into `new/`, fsync the directory) and
//!    the ledger records them delivered (`D`), fsync'd;
//! 4. only then are DELE commands sent for them (unless keeping mail).
//!
//! POP3 applies DELE at QUIT. If the run dies before QUIT, the server still
//! has those messages; the ledger knows them as delivered, so the next run
//! deletes them without delivering them again ("pending deletes").

pub mod pop3;

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use sshmail_proto::pop3::{Command, Reply};

use crate::config::{Account, Delivery};
use crate::deliver::Maildir;
use crate::deliver::maildir::Finished;
use crate::error::{Error, Result};
use crate::fault;
use crate::ledger::Ledger;
use crate::ssh::{SshPool, target};
use crate::wire::Wire;
use pop3::Pop3;

/// Messages per group commit.
const BATCH_MESSAGES: usize = 256;
/// Bytes per group commit.
const BATCH_BYTES: u64 = 64 << 20;
/// RETR commands in flight when the server allows pipelining.
const PIPELINE_DEPTH: usize = 64;

/// What a fetch did.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Messages on the server when we looked.
    pub on_server: usize,
    /// Messages delivered in this run.
    pub delivered: usize,
    /// Bytes delivered.
    pub bytes: u64,
    /// DELE commands the server accepted (applied at QUIT).
    pub deleted: usize,
    /// Messages the server refused to send (left on the server).
    pub refused: usize,
    /// Deliveries finished from an interrupted earlier run.
    pub recovered: usize,
}

/// How the run presents itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presentation {
    /// Show a progress bar (interactive terminal).
    pub progress: bool,
}

/// Fetches one account through the pool.
pub async fn fetch_account(
    account: &Account,
    pool: &SshPool,
    ssh_config: Option<&ssh2_config::SshConfig>,
    show: Presentation,
) -> Result<Outcome> {
    let started = Instant::now();
    // Local state first: a broken state directory or Maildir should stop us
    // before we touch the server.
    let mut ledger = Ledger::open(&account.state_dir, &account.name)?;
    let Delivery::Maildir(path) = &account.deliver;
    let maildir = Maildir::open(path)?;
    let mut outcome = Outcome::default();
    for (key, token) in ledger.pending() {
        if maildir.recover(&token)? {
            ledger.commit(std::slice::from_ref(&key))?;
            outcome.recovered += 1;
        } else {
            ledger.forget(&key)?;
        }
    }
    // Only after recovery, which may still need staged files.
    maildir.clean_tmp();
    if outcome.recovered > 0 {
        tracing::info!("{}: finished {} deliveries interrupted in an earlier run", account.name, outcome.recovered);
    }

    let password = account.password.get("password_command")?;
    let target = target::resolve(account, ssh_config)?;
    let jumps =
        target.jumps.iter().map(|j| target::resolve_jump(j, ssh_config, account)).collect::<Result<Vec<_>>>()?;
    let session = pool.get(&target, &jumps).await?;
    let channel = session.forward(&account.server_host, account.server_port).await?;
    let peer = format!("POP3 server {}:{} (via {})", account.server_host, account.server_port, session.name());
    let mut pop = Pop3::start(Wire::new(channel, account.timeout, peer)).await?;
    pop.capa().await?;
    pop.login(&account.user, password.as_ref(), account.pop3_auth).await?;
    let listing = pop.scan().await?;
    outcome.on_server = listing.len();

    let mut seen = HashSet::new();
    let mut to_fetch = Vec::new();
    let mut to_delete = Vec::new();
    for (n, uid, size) in &listing {
        if !seen.insert(uid.clone()) {
            tracing::warn!("{}: UIDL {uid} appears twice; message {n} is left alone", pop.peer());
            continue;
        }
        if account.fetch_all || !ledger.is_delivered(uid) {
            to_fetch.push((*n, uid.clone(), *size));
        } else if !account.keep {
            to_delete.push((*n, uid.clone()));
        }
    }
    tracing::info!(
        "{}: {} messages on the server, {} to fetch, {} delivered earlier to delete",
        account.name,
        listing.len(),
        to_fetch.len(),
        to_delete.len()
    );

    let bar = progress_bar(show, &to_fetch);
    let run = Run { account, maildir: &maildir, ledger: &mut ledger, outcome: &mut outcome, bar: &bar };
    let result = run.transfer(&mut pop, to_fetch, to_delete).await;
    bar.finish_and_clear();
    let deleted = match result {
        Ok(deleted) => deleted,
        Err(e) => {
            // Nothing was expunged (no QUIT): keep every id still listed.
            let listed: HashSet<_> = listing.iter().map(|(_, u, _)| u.clone()).collect();
            let _ = ledger.compact(|k| listed.contains(k));
            return Err(e);
        }
    };
    // QUIT applies the DELEs. Only after its +OK are they gone.
    pop.send(&[Command::Quit]).await?;
    fault::point("quit-sent");
    let quit = pop.reply().await;
    pop.shutdown().await;
    let listed: HashSet<_> = listing.iter().map(|(_, u, _)| u.clone()).collect();
    match quit {
        Ok(Reply::Ok(_)) => {
            outcome.deleted = deleted.len();
            ledger.compact(|k| listed.contains(k) && !deleted.contains(k))?;
        }
        Ok(Reply::Err(t)) => {
            ledger.compact(|k| listed.contains(k))?;
            return Err(Error::Server(format!(
                "{}: QUIT failed (-ERR {t}); messages marked for deletion stay on the server and will be deleted next time",
                pop.peer()
            )));
        }
        Err(e) => {
            ledger.compact(|k| listed.contains(k))?;
            return Err(e);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        "{}: {} delivered ({}), {} deleted, {} received through SSH in {secs:.2} s",
        account.name,
        outcome.delivered,
        crate::cli::human_bytes(outcome.bytes),
        outcome.deleted,
        crate::cli::human_bytes(pop.received())
    );
    Ok(outcome)
}

fn progress_bar(show: Presentation, to_fetch: &[(u32, String, u64)]) -> ProgressBar {
    if !show.progress || to_fetch.is_empty() {
        return ProgressBar::hidden();
    }
    let total: u64 = to_fetch.iter().map(|(_, _, s)| s).sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("0/{} messages", to_fetch.len()));
    bar
}

/// What is in flight on the pipelined connection, in order.
enum InFlight {
    Retr(usize),
    Dele(String),
}

struct Run<'a> {
    account: &'a Account,
    maildir: &'a Maildir,
    ledger: &'a mut Ledger,
    outcome: &'a mut Outcome,
    bar: &'a ProgressBar,
}

impl Run<'_> {
    /// Retrieves `to_fetch` and deletes per policy. Returns the ids whose
    /// DELE the server accepted.
    async fn transfer<S>(
        mut self,
        pop: &mut Pop3<S>,
        to_fetch: Vec<(u32, String, u64)>,
        to_delete: Vec<(u32, String)>,
    ) -> Result<HashSet<String>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let depth = if pop.caps.pipelining { PIPELINE_DEPTH } else { 1 };
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut outgoing: Vec<Command> = Vec::new();
        let mut dele_queue: VecDeque<(u32, String)> = to_delete.into();
        let mut accepted = HashSet::new();
        let mut batch: Vec<(u32, String, Finished)> = Vec::new();
        let mut batch_bytes = 0u64;
        let mut next = 0usize;
        let mut buf = Vec::with_capacity(64 * 1024);
        let total = to_fetch.len();

        loop {
            // Keep the pipeline full: pending DELEs first, then RETRs.
            while in_flight.len() < depth {
                if let Some((n, uid)) = dele_queue.pop_front() {
                    outgoing.push(Command::Dele(n));
                    in_flight.push_back(InFlight::Dele(uid));
                } else if next < total {
                    outgoing.push(Command::Retr(to_fetch[next].0));
                    in_flight.push_back(InFlight::Retr(next));
                    next += 1;
                } else {
                    break;
                }
            }
            if !outgoing.is_empty() {
                pop.send(&outgoing).await?;
                outgoing.clear();
            }
            let Some(item) = in_flight.pop_front() else {
                break;
            };
            match item {
                InFlight::Dele(uid) => match pop.reply().await? {
                    Reply::Ok(_) => {
                        fault::point("dele-confirmed");
                        accepted.insert(uid);
                    }
                    Reply::Err(t) => {
                        tracing::warn!("{}: DELE of {uid} refused: -ERR {t}", pop.peer())
                    }
                },
                InFlight::Retr(i) => {
                    let (n, uid, _) = &to_fetch[i];
                    let received = self.receive(pop, &mut buf).await;
                    match received {
                        Ok(Some(f)) => {
                            batch_bytes += f.len;
                            batch.push((*n, uid.clone(), f));
                        }
                        Ok(None) => {
                            self.outcome.refused += 1;
                            tracing::warn!("{}: message {n} ({uid}) refused by the server; left there", pop.peer());
                        }
                        Err(e) => {
                            // Complete messages of this batch are still good:
                            // make them durable so the next run need not fetch
                            // them again. Nothing is deleted (no QUIT follows).
                            if let Err(commit_err) = self.commit(&mut batch) {
                                tracing::error!("could not save the finished messages: {commit_err}");
                            }
                            return Err(e);
                        }
                    }
                    self.bar.set_message(format!("{}/{} messages", i + 1, total));
                    let last_retr = next == total && !in_flight.iter().any(|f| matches!(f, InFlight::Retr(_)));
                    if batch.len() >= BATCH_MESSAGES || batch_bytes >= BATCH_BYTES || (last_retr && !batch.is_empty()) {
                        let uids = self.commit(&mut batch)?;
                        batch_bytes = 0;
                        if !self.account.keep {
                            dele_queue.extend(uids);
                        }
                    }
                }
            }
        }
        Ok(accepted)
    }

    /// Reads one RETR reply and body into the Maildir's staging area.
    async fn receive<S>(&mut self, pop: &mut Pop3<S>, buf: &mut Vec<u8>) -> Result<Option<Finished>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        if let Reply::Err(t) = pop.reply().await? {
            tracing::debug!("RETR refused: {t}");
            return Ok(None);
        }
        let mut staged = self.maildir.begin()?;
        let before = pop.received();
        match pop.body_into(&mut staged, buf).await {
            Ok(_) => {
                self.bar.inc(pop.received() - before);
                fault::point("message-written");
                Ok(Some(self.maildir.finish(staged)?))
            }
            Err(e) => {
                self.maildir.discard(staged);
                Err(e)
            }
        }
    }

    /// Group commit: sync, record staged, publish, record delivered.
    fn commit(&mut self, batch: &mut Vec<(u32, String, Finished)>) -> Result<Vec<(u32, String)>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut numbered = Vec::with_capacity(batch.len());
        let mut uids = Vec::with_capacity(batch.len());
        let mut files = Vec::with_capacity(batch.len());
        for (n, uid, f) in std::mem::take(batch) {
            numbered.push((n, uid.clone()));
            uids.push(uid);
            files.push(f);
        }
        // Order is important: content durable, then named in the ledger,
        // then visible, then recorded as delivered.
        self.maildir.sync_staged(&files)?;
        let prepared: Vec<_> = uids.iter().cloned().zip(files.iter().map(|f| f.name.clone())).collect();
        self.ledger.prepare(&prepared)?;
        self.maildir.publish(&files)?;
        self.ledger.commit(&uids)?;
        fault::point("batch-recorded");
        self.outcome.delivered += files.len();
        self.outcome.bytes += files.iter().map(|f| f.len).sum::<u64>();
        Ok(numbered)
    }
}
