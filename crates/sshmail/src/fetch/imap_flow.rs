//! The IMAP side of a cycle: login, the folders, per folder what is new
//! (UIDVALIDITY and UIDs against the ledger, recognition by fingerprint
//! after a renumbering), the pipelined UID FETCH batches with group
//! commits, the policy (STORE, UID EXPUNGE) only for what is durable and
//! recorded, and the IDLE watch.

use std::collections::{HashMap, HashSet, VecDeque};

use sshmail_proto::imap::{Command as ImapCommand, Limits, Response, Status, Untagged, uid_set};

use super::imap::{self, Bodies, Imap, Pending, PolicyStep, Woke};
use super::report::{Event, Transfer};
use super::{
    BATCH_BYTES, BATCH_MESSAGES, Committing, FolderError, IMAP_FETCHES_IN_FLIGHT, PolicyRefusal, Store, human_bytes,
    policy_note,
};
use crate::config::{Account, Policy};
use crate::deliver::Finished;
use crate::deliver::maildir::Subfolder;
use crate::error::{Error, Result};
use crate::fault;
use crate::ledger::{FolderKeys, Key};
use crate::transport::Stream;
use crate::wire::Wire;

pub(super) async fn imap_flow<S: Stream>(
    account: &Account,
    wire: Wire<S>,
    password: Option<crate::secret::Secret>,
    preauth_ok: bool,
    store: &mut Store<'_>,
) -> Result<u64> {
    let limits = Limits { max_body: account.fetch.max_message_size, ..Limits::default() };
    let mut imap = Imap::start(wire, limits, preauth_ok).await?;
    if imap.preauth {
        tracing::info!("{}: preauthenticated by {}", account.name, imap.peer());
    } else {
        let password = match password {
            Some(p) => Some(p),
            None => {
                crate::process::password(&account.login.password, "password_command", account.route.timeout).await?
            }
        };
        if password.is_none()
            && matches!(account.route.via, crate::config::Via::Exec(_) | crate::config::Via::Command(_))
        {
            return Err(Error::Auth(format!(
                "{} greeted `{}`, not `* PREAUTH`: it wants a login, so it does not run preauthenticated. Run it \
                 so that it does (Dovecot's imap binary does by itself, GNU imap4d needs `--inetd --preauth`, \
                 Courier's imapd the Maildir as argument), or give a password_command",
                imap.peer(),
                if imap.greeting.is_empty() { "* OK" } else { &imap.greeting }
            )));
        }
        imap.login(&account.login.user, password.as_ref(), account.login.auth).await?;
    }
    let folders = resolve_folders(&mut imap, store.show.folders.as_ref().unwrap_or(&account.fetch.folders)).await?;
    store.outcome.folders = folders.clone();
    let mut listed: HashSet<Key> = HashSet::new();
    let mut done: Vec<FolderKeys> = Vec::new();
    // A watched folder's first pass is the watch's own.
    let watched = if store.show.idle && !store.show.check { folders.first().cloned() } else { None };
    for folder in folders.iter().filter(|f| Some(*f) != watched.as_ref()) {
        let before = (store.outcome.delivered, store.outcome.bytes);
        match imap_folder(account, &mut imap, store, folder, &mut listed, Pass::Full).await {
            Ok(_) => {
                done.push(FolderKeys::new(folder));
                store.passed(folder, before);
            }
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
    store.compact(move |k| listed.contains(k) || !done.iter().any(|f| f.holds(k))).await?;
    if store.show.idle {
        let Some(folder) = watched else { return Err(Error::Config("no folder to IDLE on".into())) };
        watch(account, &mut imap, store, &folder).await?;
    }
    imap.logout().await;
    Ok(imap.received())
}

/// Watches `folder` until the cycle's stop is requested: a full pass
/// (every message listed, the policy applied to what was delivered before,
/// the ledger compacted), then IDLE (renewed by the cycle's [`Renewal`]
/// time, and at least every `interval`, the safety net for servers that
/// announce IDLE and never report), then a catch-up pass over what is above
/// the highest UID seen, and so on. A change reported during a pass ends the
/// next IDLE at once, so mail that arrives while a fetch runs is fetched
/// when it ends. A stop ends the IDLE with DONE; the caller logs out. A
/// failure ends the watch with its error, for the caller to retry by its
/// class; the next cycle starts with a full pass again, so nothing that
/// arrived meanwhile is missed.
///
/// [`Renewal`]: super::Renewal
async fn watch<S: Stream>(account: &Account, imap: &mut Imap<S>, store: &mut Store<'_>, folder: &str) -> Result<()> {
    tracing::info!("{}: waiting for new mail in {folder}", account.name);
    let keys = FolderKeys::new(folder);
    let renewal = store.show.renewal.clone();
    // The watch's first pass is a full one (the cycle left this folder to
    // it): what it lists is what the ledger's compaction keeps.
    let mut pass = Pass::Full;
    while !store.stop.requested() {
        fault::pause("idle-loop").await;
        let before = (store.outcome.delivered, store.outcome.bytes);
        let mut seen = HashSet::new();
        let (validity, from, full) = imap_folder(account, imap, store, folder, &mut seen, pass).await?;
        if full {
            // Only a pass that listed everything may compact.
            let keys = keys.clone();
            store.compact(move |k| seen.contains(k) || !keys.holds(k)).await?;
        }
        store.passed(folder, before);
        let new = store.outcome.delivered - before.0;
        if new > 0 {
            tracing::info!("{}: {folder}: {new} new delivered", account.name);
        }
        let until = renewal.get().min(account.fetch.interval);
        store.report.event(Event::Waiting { folder, idle: imap.has("IDLE"), until });
        // Waiting holds no file: the ledger rests until the next pass.
        store.ledger.rest();
        let woke = match imap.idle(until, &store.stop, &store.wake).await {
            Ok(w) => {
                // Stopped: no pass follows, so the ledger stays at rest.
                if !store.stop.requested() {
                    store.ledger.wake(&store.stop).await?;
                }
                w
            }
            Err(e) => {
                if let Some(lasted) = imap.idle_ended_after.take()
                    && let Some(now) = renewal.ended_after(lasted)
                {
                    tracing::info!(
                        "{}: {} ended an IDLE after {} s; renewing every {} s from now on",
                        account.name,
                        imap.peer(),
                        lasted.as_secs(),
                        now.as_secs()
                    );
                }
                return Err(e);
            }
        };
        tracing::debug!("{}: {folder}: IDLE ended: {woke:?}", account.name);
        // A reported change: what is above the last UID seen. A renewal or
        // a poll asked for: SELECT again, for servers that never report.
        pass = match woke {
            Woke::Changed => Pass::Above { validity, from },
            _ => Pass::Reselect { validity, from },
        };
    }
    tracing::info!("{}: stopped", account.name);
    Ok(())
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

/// Which messages a pass over a folder lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// SELECT, and every message.
    Full,
    /// The folder is still selected and the server reported a change: the
    /// messages from UID `from` on (UIDVALIDITY `validity`).
    Above { validity: u32, from: u32 },
    /// SELECT again (some servers, GNU imap4d, look at the folder again only
    /// then) and list from UID `from` on, if the UIDVALIDITY is still
    /// `validity`; else every message.
    Reselect { validity: u32, from: u32 },
}

/// Fetches one folder. Returns (its UIDVALIDITY, the lowest UID not yet
/// seen, whether every message was listed), for the next pass.
async fn imap_folder<S: Stream>(
    account: &Account,
    imap: &mut Imap<S>,
    store: &mut Store<'_>,
    folder: &str,
    listed: &mut HashSet<Key>,
    pass: Pass,
) -> Result<(u32, u32, bool)> {
    // The folder's name comes from the server: it becomes a directory only
    // through the one mapping that makes it a safe child of the Maildir.
    let subfolder = match account.delivery.maildir_subfolders.then(|| Subfolder::for_folder(folder)) {
        None => None,
        Some(Ok(sub)) => sub,
        Some(Err(why)) => {
            return Err(Error::Server(format!("{}: {why}; the folder is skipped", imap.peer())));
        }
    };
    if let Pass::Above { validity, from } = pass {
        // The folder is still selected: its UIDVALIDITY cannot have changed
        // without the server ending the session.
        let (validity, next) =
            fetch_listed(account, imap, store, (folder, subfolder), listed, (validity, from), HashMap::new()).await?;
        return Ok((validity, next, false));
    }
    // Keep opens with SELECT too (bodies are fetched with BODY.PEEK[], so
    // nothing changes): servers such as GNU imap4d and a fresh Courier
    // mailbox do not persist UIDs for a folder only EXAMINEd, so the next
    // run would see a new UIDVALIDITY. Only --check, which records nothing,
    // stays read-only.
    let read_only = store.show.check;
    let (validity, _) = imap.select(folder, read_only).await?;
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
    let from = match pass {
        Pass::Reselect { validity: v, from } if v == validity => from,
        _ => 1,
    };
    let (validity, next) =
        fetch_listed(account, imap, store, (folder, subfolder), listed, (validity, from), marks).await?;
    Ok((validity, next, from == 1))
}

/// The rest of a pass over a selected folder: list what is there from UID
/// `from` on, recognise (after a renumbering), fetch what is new, apply the
/// policy.
async fn fetch_listed<S: Stream>(
    account: &Account,
    imap: &mut Imap<S>,
    store: &mut Store<'_>,
    (folder, subfolder): (&str, Option<Subfolder>),
    listed: &mut HashSet<Key>,
    (validity, from): (u32, u32),
    marks: HashMap<String, usize>,
) -> Result<(u32, u32)> {
    let keys = FolderKeys::new(folder);
    if imap.exists == 0 {
        return Ok((validity, from));
    }
    let scan = imap.scan(from).await?;
    let next = scan.iter().map(|f| f.uid.saturating_add(1)).max().unwrap_or(from).max(from);
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
        return Ok((validity, next));
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
        &Job { account, folder, keys: &keys, validity, subfolder: subfolder.as_ref(), batches: &batches },
        imap,
        store,
        to_apply,
        bar.as_mut(),
    )
    .await;
    drop(bar);
    result.map(|()| (validity, next))
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
    /// The server's name of the folder.
    folder: &'a str,
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
    let mut syncing = None;
    let result = imap_pipeline(job, imap, store, &mut in_flight, &mut collected, &mut syncing, &mut bodies, bar).await;
    if let Err(e) = result {
        // Keep what is complete; nothing of it was deleted yet.
        bodies.abort();
        let mut batch: Vec<(Key, Finished)> = syncing.map(|(c, _)| c.into_batch()).unwrap_or_default();
        batch.extend(collected.drain().map(|(uid, f)| (job.keys.key(job.validity, uid), f)));
        store.salvage(&mut batch, job.subfolder, job.folder).await;
        return Err(e);
    }
    Ok(())
}

/// A batch being committed while the next one streams in, with the UIDs of
/// its keys (for the policy once it is recorded).
type Syncing = Option<(Committing, HashMap<Key, u32>)>;

/// Finishes the commit under way, if any, and queues the policy for what
/// it recorded.
async fn finish_batch<S: Stream>(
    job: &Job<'_>,
    imap: &mut Imap<S>,
    store: &mut Store<'_>,
    in_flight: &mut VecDeque<(String, Pending)>,
    syncing: &mut Syncing,
) -> Result<()> {
    let Some((committing, uid_of)) = syncing.take() else { return Ok(()) };
    let keys = store.finish_commit(committing, job.subfolder, job.folder).await?;
    let uids: Vec<u32> = keys.iter().filter_map(|k| uid_of.get(k).copied()).collect();
    if !uids.is_empty() {
        apply_policy(job.account, imap, &uids, in_flight).await?;
    }
    Ok(())
}

/// The loop of [`imap_transfer`]; on error the caller saves what is complete.
/// A batch whose bodies are all in is made durable (fdatasync on blocking
/// threads) while the next batch streams in; it is recorded, and the policy
/// applied to it, once its syncs end.
#[allow(clippy::too_many_arguments)]
async fn imap_pipeline<S: Stream>(
    job: &Job<'_>,
    imap: &mut Imap<S>,
    store: &mut Store<'_>,
    in_flight: &mut VecDeque<(String, Pending)>,
    collected: &mut HashMap<u32, Finished>,
    syncing: &mut Syncing,
    bodies: &mut Bodies<'_>,
    bar: &mut dyn Transfer,
) -> Result<()> {
    let Job { account: _, folder: _, keys: folder_keys, validity, subfolder: _, batches } = *job;
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
            if syncing.is_none() {
                return Ok(());
            }
            finish_batch(job, imap, store, in_flight, syncing).await?;
            continue;
        }
        if syncing.as_ref().is_some_and(|(c, _)| c.ready()) {
            finish_batch(job, imap, store, in_flight, syncing).await?;
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
                        // One commit under way at a time, in batch order.
                        finish_batch(job, imap, store, in_flight, syncing).await?;
                        *syncing = Some((store.begin_commit(batch)?, uid_of));
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
