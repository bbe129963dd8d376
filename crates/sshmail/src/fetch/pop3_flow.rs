//! The POP3 side of a cycle: what is new (UIDL against the ledger), the
//! pipelined RETR/DELE loop with group commits, and DELE only for what is
//! durable and recorded; QUIT applies the deletions.

use std::collections::{HashMap, HashSet, VecDeque};

use sshmail_proto::pop3::{Command, Reply};

use super::pop3::{self, Pop3};
use super::{BATCH_BYTES, BATCH_MESSAGES, Committing, PIPELINE_DEPTH, PolicyRefusal, Store, human_bytes, policy_note};
use crate::config::{Account, Policy};
use crate::deliver::Finished;
use crate::error::{Error, Result};
use crate::fault;
use crate::ledger::Key;
use crate::transport::Stream;
use crate::wire::Wire;

pub(super) async fn pop3_flow<S: Stream>(
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
            let _ = store.compact(move |k| listed.contains(k)).await;
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
            store.compact(move |k| listed.contains(k) && !deleted.contains(k)).await?;
            Ok(pop.received())
        }
        Ok(Reply::Err(t)) => {
            store.compact(move |k| listed.contains(k)).await?;
            Err(Error::Server(format!(
                "{}: QUIT failed (-ERR {t}); messages marked for deletion stay on the server and will be deleted next time",
                pop.peer()
            )))
        }
        Err(e) => {
            store.compact(move |k| listed.contains(k)).await?;
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

    let delete = account.fetch.policy == Policy::Delete;
    let mut committing: Option<Committing> = None;
    let result: Result<()> = async {
        loop {
            // A batch whose syncs ended is recorded, and its DELEs queued,
            // before the pipeline is refilled.
            if committing.as_ref().is_some_and(Committing::ready)
                && let Some(c) = committing.take()
            {
                finish_batch(store, c, &numbers, delete.then_some(&mut dele_queue)).await?;
            }
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
            let Some(item) = in_flight.pop_front() else {
                if let Some(c) = committing.take() {
                    finish_batch(store, c, &numbers, delete.then_some(&mut dele_queue)).await?;
                    continue;
                }
                return Ok(());
            };
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
                // One commit under way at a time, in batch order; this
                // batch's fdatasyncs run while the next bodies stream in.
                if let Some(c) = committing.take() {
                    finish_batch(store, c, &numbers, delete.then_some(&mut dele_queue)).await?;
                }
                committing = Some(store.begin_commit(std::mem::take(&mut batch))?);
                batch_bytes = 0;
            }
        }
    }
    .await;
    drop(bar);
    if let Err(e) = result {
        if let Some(c) = committing.take() {
            batch.splice(0..0, c.into_batch());
        }
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
        store.salvage(&mut batch, None, "INBOX").await;
        return Err(e);
    }
    Ok(accepted)
}

/// Finishes a batch's commit and queues DELEs for what it recorded (when
/// `dele_queue` is given: the delete policy).
async fn finish_batch(
    store: &mut Store<'_>,
    committing: Committing,
    numbers: &HashMap<&Key, u32>,
    dele_queue: Option<&mut VecDeque<(u32, Key)>>,
) -> Result<()> {
    let keys = store.finish_commit(committing, None, "INBOX").await?;
    if let Some(queue) = dele_queue {
        queue.extend(keys.into_iter().map(|k| (numbers[&k], k)));
    }
    Ok(())
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
