//! Per-account delivery state: what was delivered, crash-safe.
//!
//! One file per account, `<state_dir>/<account>.ledger`, an append-only
//! journal of text lines:
//!
//! ```text
//! # sshmail ledger v1
//! P <key> <token> [<fp>]  prepared: the message is durable in the sink's
//!                     staging area (Maildir tmp/) under <token>, not yet visible
//! D <key> [<fp>]      delivered: durable and visible; never fetch it again
//! F <key>             forget a P that turned out not to be delivered
//! ```
//!
//! `<fp>`, where given, is the message's fingerprint (see
//! `fetch::fingerprint`): what recognises it after the server
//! renumbered its folder.
//!
//! Every append is fsync'd before the caller goes on. On open the journal is
//! replayed; a torn last line (a crash mid-append) is ignored. At the end of
//! a run the journal is compacted by writing a fresh file and renaming it
//! over the old one, so it does not grow without bound.
//!
//! A second process working on the same account is refused by an exclusive
//! lock on `<account>.lock`. Within one process, the account's concurrent
//! tasks (one per folder, in a daemon) share one open ledger through
//! [`Ledgers`], each holding it as a [`Working`]. While every one of them
//! waits on its server (a daemon's IDLE), the ledger rests: its two files
//! are closed and the lock released, so a thousand idle accounts hold no
//! descriptors, and `sshmail fetch` may work on the account meanwhile. Its
//! records are kept in memory; when a task wakes it, the lock is taken
//! again and the journal replayed if another process wrote it meanwhile.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::error::{Error, Result, delivery};
use crate::fault;

const HEADER: &str = "# sshmail ledger v1\n";

/// What the ledger records a message by. Built only by [`Key::uidl`] (a
/// POP3 message) and [`FolderKeys::key`] (an IMAP message: folder,
/// UIDVALIDITY, UID); in the journal it is one field: the UIDL as the server
/// gave it, or `folder/uidvalidity/uid` with the folder name
/// percent-encoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    /// A POP3 message, by its UIDL.
    pub fn uidl(uidl: &str) -> Key {
        Key(uidl.to_string())
    }

    /// The journal's field.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The keys of one IMAP folder, under any UIDVALIDITY.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FolderKeys {
    /// `folder/`, the name percent-encoded (so it holds no `/`).
    prefix: String,
}

impl FolderKeys {
    /// The keys of the folder the server calls `name`.
    pub fn new(name: &str) -> FolderKeys {
        FolderKeys { prefix: format!("{}/", percent_encode(name)) }
    }

    /// The message `uid` of this folder under `validity`.
    pub fn key(&self, validity: u32, uid: u32) -> Key {
        Key(format!("{}{validity}/{uid}", self.prefix))
    }

    /// Whether `key` is one of this folder's, under any UIDVALIDITY.
    pub fn holds(&self, key: &Key) -> bool {
        key.0.starts_with(&self.prefix)
    }

    /// The UIDVALIDITY of one of this folder's keys.
    fn validity_of(&self, key: &Key) -> Option<u32> {
        key.0.strip_prefix(&self.prefix)?.split('/').next()?.parse().ok()
    }
}

/// The delivery journal of one account.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    lock_path: PathBuf,
    account: String,
    /// The journal (appending) and the account's lock, while the ledger
    /// works; `None` while it rests.
    open: Option<Open>,
    /// The journal as it was when the ledger last rested.
    rested: Option<Stamp>,
    /// The tasks of this process working on it ([`Working`]).
    working: usize,
    /// The journal holds lines a compaction would drop (appends since the
    /// last one): otherwise a compaction that keeps every key is skipped.
    slack: bool,
    delivered: HashSet<Key>,
    pending: HashMap<Key, String>,
    /// Fingerprints of delivered and pending keys, where recorded.
    marks: HashMap<Key, String>,
}

impl Ledger {
    /// Opens (creating if needed) and replays the ledger of `account` in
    /// `dir`, taking the account's lock.
    pub fn open(dir: &Path, account: &str) -> Result<Ledger> {
        crate::owned::private_dir(dir, "state directory")?;
        let safe = file_stem(account);
        let mut ledger = Ledger {
            path: dir.join(format!("{safe}.ledger")),
            lock_path: dir.join(format!("{safe}.lock")),
            account: account.to_string(),
            open: None,
            rested: None,
            working: 0,
            slack: false,
            delivered: HashSet::new(),
            pending: HashMap::new(),
            marks: HashMap::new(),
        };
        if !ledger.try_wake()? {
            return Err(ledger.held());
        }
        Ok(ledger)
    }

    /// The refusal when another process holds the account's lock.
    fn held(&self) -> Error {
        Error::Delivery(format!(
            "account {} is being fetched by another sshmail process (lock {} is held); if `sshmail daemon` runs \
             it, `sshmail poll {}` fetches now",
            self.account,
            self.lock_path.display(),
            self.account
        ))
    }

    /// One more task works on the ledger: if it rested, its lock is taken
    /// again and the journal replayed if it changed meanwhile. False, with
    /// nothing changed, when another process holds the lock.
    fn try_wake(&mut self) -> Result<bool> {
        if self.open.is_none() {
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(crate::owned::NO_FOLLOW)
                .open(&self.lock_path)
                .map_err(|e| delivery(format!("cannot open {}", self.lock_path.display()), e))?;
            match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
                Err(e) => return Err(delivery(format!("cannot lock {}", self.lock_path.display()), e.into())),
            }
            let now = Stamp::of_path(&self.path);
            if self.rested.is_none() || self.rested != now {
                let Replayed { delivered, pending, marks, records } = match crate::owned::read_file(&self.path) {
                    Ok(bytes) => replay(&bytes),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
                    Err(e) => {
                        return Err(delivery(format!("cannot read ledger {}", self.path.display()), e));
                    }
                };
                self.slack = records != delivered.len() + pending.len();
                (self.delivered, self.pending, self.marks) = (delivered, pending, marks);
            }
            self.open = Some(Open { file: open_append(&self.path)?, _lock: lock });
            self.rested = None;
        }
        self.working += 1;
        Ok(true)
    }

    /// One task stopped working on the ledger; when none works on it any
    /// more, it rests: its files are closed and the lock is released,
    /// noting the journal as it is now.
    fn rest(&mut self) {
        self.working = self.working.saturating_sub(1);
        if self.working == 0
            && let Some(open) = self.open.take()
        {
            self.rested = open.file.metadata().ok().map(|m| Stamp::of(&m));
        }
    }

    /// The journal, open for appending; an error while the ledger rests (a
    /// task writes only while it works).
    fn journal(&mut self) -> Result<&mut File> {
        match &mut self.open {
            Some(open) => Ok(&mut open.file),
            None => Err(Error::Delivery(format!("ledger {} written while it rests", self.path.display()))),
        }
    }

    /// Opens the ledger of the mailbox `identity` (everything that selects
    /// it: protocol, transport, SSH destination, server, user, imapd or
    /// tunnel command), named `name` in `dir`. The identity's hash is kept
    /// beside the journal (`<name>.mailbox`): a ledger that another mailbox
    /// wrote is never used for this one (nothing it recorded may be deleted
    /// here); it is moved aside, with a warning, and a fresh one begins. A
    /// journal from before identities were kept is adopted. `legacy` names
    /// an older file of the same mailbox to take over when this one is new.
    pub fn open_for_mailbox(dir: &Path, name: &str, identity: &str, legacy: Option<&str>) -> Result<Ledger> {
        let hash = short_hash(identity, 16);
        let stem = file_stem(name);
        let path = dir.join(format!("{stem}.ledger"));
        // Older versions used the name's safe characters, however long.
        if let Some(old) = legacy.map(safe_chars).filter(|old| *old != stem && old.len() < 250)
            && !path.exists()
        {
            let old = dir.join(format!("{old}.ledger"));
            if old.exists() {
                fs::rename(&old, &path).map_err(|e| delivery(format!("cannot adopt ledger {}", old.display()), e))?;
                tracing::info!("ledger {} is now {}", old.display(), path.display());
            }
        }
        let mailbox = dir.join(format!("{stem}.mailbox"));
        let mut ledger = Ledger::open(dir, name)?;
        match crate::owned::read_file(&mailbox).map(|b| String::from_utf8_lossy(&b).into_owned()) {
            Ok(recorded) if recorded.trim() == hash => {}
            Ok(recorded) => {
                let aside = dir.join(format!("{stem}.ledger.{}", recorded.trim()));
                tracing::warn!(
                    "{name}: the account now reaches another mailbox than its ledger was kept for; that ledger is \
                     kept as {} and a new one begins (in keep mode, mail in this mailbox is fetched again)",
                    aside.display()
                );
                fs::rename(&path, &aside).map_err(|e| delivery(format!("cannot move {} aside", path.display()), e))?;
                ledger.delivered.clear();
                ledger.pending.clear();
                ledger.marks.clear();
                *ledger.journal()? = open_append(&path)?;
                ledger.slack = false;
                write_synced(&mailbox, &hash)?;
            }
            Err(_) => write_synced(&mailbox, &hash)?,
        }
        Ok(ledger)
    }

    /// The account's staging directory for sinks other than Maildir, beside
    /// the ledger: `<state_dir>/<account>.spool`.
    pub fn spool_dir(&self) -> PathBuf {
        self.path.with_extension("spool")
    }

    /// True if `key` was delivered before.
    pub fn is_delivered(&self, key: &Key) -> bool {
        self.delivered.contains(key)
    }

    /// The UIDVALIDITY values on record for a folder, in order.
    pub fn validities(&self, folder: &FolderKeys) -> Vec<u32> {
        let mut v: Vec<u32> = self.delivered.iter().filter_map(|k| folder.validity_of(k)).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The fingerprints of what was delivered from `folder` under another
    /// UIDVALIDITY than `except`, each with the number of deliveries it
    /// stands for; and how many of those deliveries were recorded without
    /// one.
    pub fn marks_under(&self, folder: &FolderKeys, except: u32) -> (HashMap<String, usize>, usize) {
        let mut marks: HashMap<String, usize> = HashMap::new();
        let mut unmarked = 0;
        let others = self.delivered.iter().filter(|k| folder.holds(k) && folder.validity_of(k) != Some(except));
        for key in others {
            match self.marks.get(key) {
                Some(fp) => *marks.entry(fp.clone()).or_default() += 1,
                None => unmarked += 1,
            }
        }
        (marks, unmarked)
    }

    /// Prepared but not confirmed deliveries, left by an interrupted run.
    pub fn pending(&self) -> Vec<(Key, String)> {
        let mut v: Vec<_> = self.pending.iter().map(|(k, t)| (k.clone(), t.clone())).collect();
        v.sort();
        v
    }

    /// Records that these messages are durable in staging under their
    /// tokens (key, token, fingerprint if known).
    pub fn prepare(&mut self, items: &[(Key, String, Option<String>)]) -> Result<()> {
        let mut buf = String::new();
        for (key, token, fp) in items {
            check_field(key.as_str())?;
            check_field(token)?;
            buf.push_str(&format!("P {key} {token}"));
            push_mark(&mut buf, fp.as_deref())?;
        }
        self.append(&buf)?;
        for (key, token, fp) in items {
            self.pending.insert(key.clone(), token.clone());
            if let Some(fp) = fp {
                self.marks.insert(key.clone(), fp.clone());
            }
        }
        Ok(())
    }

    /// Records that these messages are delivered (a fingerprint given when
    /// they were prepared stays theirs).
    pub fn commit(&mut self, keys: &[Key]) -> Result<()> {
        let items: Vec<(Key, Option<String>)> = keys.iter().map(|k| (k.clone(), None)).collect();
        self.commit_marked(&items)
    }

    /// Records that these messages are delivered, each with its fingerprint
    /// if known.
    pub fn commit_marked(&mut self, items: &[(Key, Option<String>)]) -> Result<()> {
        let mut buf = String::new();
        for (key, fp) in items {
            check_field(key.as_str())?;
            buf.push_str(&format!("D {key}"));
            push_mark(&mut buf, fp.as_deref())?;
        }
        self.append(&buf)?;
        for (key, fp) in items {
            self.pending.remove(key);
            self.delivered.insert(key.clone());
            if let Some(fp) = fp {
                self.marks.insert(key.clone(), fp.clone());
            }
        }
        Ok(())
    }

    /// Drops a pending entry whose message never became durable.
    pub fn forget(&mut self, key: &Key) -> Result<()> {
        self.append(&format!("F {key}\n"))?;
        self.pending.remove(key);
        if !self.delivered.contains(key) {
            self.marks.remove(key);
        }
        Ok(())
    }

    /// Rewrites the journal keeping only the delivered keys for which `keep`
    /// is true (those still on the server) and every pending entry.
    /// A compaction that would write what the journal already says is
    /// skipped: an unchanged mailbox costs no rewrite and no fsync.
    pub fn compact(&mut self, keep: impl Fn(&Key) -> bool) -> Result<()> {
        let before = self.delivered.len();
        self.delivered.retain(|k| keep(k));
        if !self.slack && self.delivered.len() == before {
            return Ok(());
        }
        self.marks.retain(|k, _| self.delivered.contains(k) || self.pending.contains_key(k));
        let mut text = String::from(HEADER);
        let mut keys: Vec<_> = self.delivered.iter().collect();
        keys.sort();
        for k in keys {
            text.push_str(&format!("D {k}"));
            push_mark(&mut text, self.marks.get(k).map(String::as_str))?;
        }
        for (k, t) in &self.pending {
            text.push_str(&format!("P {k} {t}"));
            push_mark(&mut text, self.marks.get(k).map(String::as_str))?;
        }
        self.journal()?;
        let tmp = self.path.with_extension("ledger.new");
        let ctx = |e| delivery(format!("cannot rewrite ledger {}", self.path.display()), e);
        write_file(&tmp, &text).map_err(ctx)?;
        fault::point("compaction-written");
        fs::rename(&tmp, &self.path).map_err(ctx)?;
        fault::point("compaction-renamed");
        sync_dir(self.path.parent().unwrap_or(Path::new("."))).map_err(ctx)?;
        let file = open_append(&self.path)?;
        *self.journal()? = file;
        self.slack = false;
        Ok(())
    }

    fn append(&mut self, text: &str) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let path = self.path.display().to_string();
        let ctx = |e| delivery(format!("cannot write ledger {path}"), e);
        self.slack = true;
        let file = self.journal()?;
        file.write_all(text.as_bytes()).map_err(ctx)?;
        fault::point("ledger-appended");
        file.sync_data().map_err(ctx)?;
        fault::point("ledger-synced");
        Ok(())
    }
}

/// An open ledger shared by the tasks of one account in this process. Lock
/// it for each step and never across an await: a step that writes
/// (`prepare`, a publish, `commit`) then runs whole before another task
/// looks, so no task sees another's half-done batch as left by a crash.
#[derive(Debug, Clone)]
pub struct Shared(Arc<Mutex<Ledger>>);

impl Shared {
    /// The ledger, for one step.
    pub fn lock(&self) -> MutexGuard<'_, Ledger> {
        // A task that panicked mid-step left the journal as it was on disk
        // (appends are whole lines, fsync'd before the in-memory update).
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How often a task that wakes a ledger looks again while another process
/// holds the account's lock, and for how long at most.
const WAKE_RETRY: Duration = Duration::from_millis(200);
const WAKE_BOUND: Duration = Duration::from_secs(15 * 60);

/// One task's hold on an account's ledger ([`Ledgers`]): working from the
/// start, resting while the task waits on its server ([`Working::rest`]),
/// working again after [`Working::wake`]. The ledger's files are open while
/// any task of the account works, and a working task holds one of the
/// process's working slots ([`Ledgers::bounded`]); dropping the hold ends
/// its part.
#[derive(Debug)]
pub struct Working {
    shared: Shared,
    slots: Arc<tokio::sync::Semaphore>,
    /// The slot, while the task works.
    slot: Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

impl Working {
    fn slot(&self) -> MutexGuard<'_, Option<tokio::sync::OwnedSemaphorePermit>> {
        self.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The task waits on its server and writes nothing until it wakes: its
    /// slot is given back, and the ledger's files are closed if no other
    /// task of the account works.
    pub fn rest(&self) {
        let slot = self.slot().take();
        if let Some(slot) = slot {
            self.shared.lock().rest();
            drop(slot);
        }
    }

    /// The task works again: it waits for a slot, then the ledger's lock
    /// is taken again and what another process recorded meanwhile is read.
    /// While another process holds the lock, this waits for it (saying so
    /// once), until `stop` is requested or a bound passes.
    pub async fn wake(&self, stop: &crate::stop::Stop) -> Result<()> {
        if self.slot().is_some() {
            return Ok(());
        }
        let slot = tokio::select! {
            // A free slot is taken even when a stop is requested: the
            // caller ends its work in order.
            biased;
            slot = self.slots.clone().acquire_owned() => slot.expect("the slots are never closed"),
            _ = stop.wait() => return Err(Error::Connect("stopped".into())),
        };
        let started = std::time::Instant::now();
        let mut said = false;
        loop {
            let refusal = {
                let mut ledger = self.shared.lock();
                if ledger.try_wake()? {
                    *self.slot() = Some(slot);
                    return Ok(());
                }
                ledger.held()
            };
            if started.elapsed() > WAKE_BOUND || stop.requested() {
                return Err(refusal);
            }
            if !said {
                tracing::info!("{refusal}: waiting for it to finish");
                said = true;
            }
            tokio::time::sleep(WAKE_RETRY).await;
        }
    }
}

impl std::ops::Deref for Working {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        self.rest();
    }
}

/// The ledgers open in this process, by file: an account's concurrent
/// tasks get the same [`Shared`] ledger (the lock file refuses a second
/// open, even from this process), each as its own [`Working`]; the ledger
/// is dropped when the last task lets go of it.
#[derive(Debug)]
pub struct Ledgers {
    open: Mutex<HashMap<PathBuf, Weak<Mutex<Ledger>>>>,
    /// How many tasks may work at once.
    slots: Arc<tokio::sync::Semaphore>,
}

impl Default for Ledgers {
    fn default() -> Ledgers {
        Ledgers::bounded(tokio::sync::Semaphore::MAX_PERMITS)
    }
}

impl Ledgers {
    /// At most `at_once` tasks working at once; the others wait for a slot
    /// (a fetch task holds up to `fetch::FILES_PER_TASK` descriptors).
    pub fn bounded(at_once: usize) -> Ledgers {
        Ledgers { open: Mutex::default(), slots: Arc::new(tokio::sync::Semaphore::new(at_once.max(1))) }
    }

    /// The ledger of the mailbox `identity` named `name` in `dir`
    /// ([`Ledger::open_for_mailbox`]), or the one already open for it,
    /// working for one more task once a slot is free.
    pub async fn open_for_mailbox(
        &self,
        dir: &Path,
        name: &str,
        identity: &str,
        legacy: Option<&str>,
        stop: &crate::stop::Stop,
    ) -> Result<Working> {
        let slot = tokio::select! {
            biased;
            slot = self.slots.clone().acquire_owned() => slot.expect("the slots are never closed"),
            _ = stop.wait() => return Err(Error::Connect("stopped".into())),
        };
        let file = dir.join(format!("{}.ledger", file_stem(name)));
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let shared = match open.get(&file).and_then(Weak::upgrade) {
            Some(ledger) => {
                let shared = Shared(ledger);
                let mut l = shared.lock();
                if !l.try_wake()? {
                    return Err(l.held());
                }
                drop(l);
                shared
            }
            None => {
                let ledger = Arc::new(Mutex::new(Ledger::open_for_mailbox(dir, name, identity, legacy)?));
                open.retain(|_, w| w.strong_count() > 0);
                open.insert(file, Arc::downgrade(&ledger));
                Shared(ledger)
            }
        };
        Ok(Working { shared, slots: self.slots.clone(), slot: Mutex::new(Some(slot)) })
    }
}

/// What tells whether a journal changed while its ledger rested: its inode
/// (compaction renames a new file over it), size and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    modified: (i64, i64),
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt as _;
        Stamp { ino: m.ino(), len: m.len(), modified: (m.mtime(), m.mtime_nsec()) }
    }

    fn of_path(path: &Path) -> Option<Stamp> {
        fs::symlink_metadata(path).ok().map(|m| Stamp::of(&m))
    }
}

/// The open files of a ledger at work.
#[derive(Debug)]
struct Open {
    /// The journal, appending.
    file: File,
    /// The account's lock, held.
    _lock: File,
}

/// Percent-encodes `%`, `/`, space, controls and non-ASCII, so that the
/// result can be a ledger field or a path component of a key.
pub fn percent_encode(s: &str) -> String {
    let mut p = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_graphic() && b != b'%' && b != b'/' {
            p.push(b as char);
        } else {
            p.push_str(&format!("%{b:02X}"));
        }
    }
    p
}

/// Undoes [`percent_encode`]; `None` if malformed.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A name as a file name stem: safe characters only, at most 100 bytes (a
/// longer one is cut and a hash of the whole added, so it stays unique and
/// stable).
pub fn file_stem(name: &str) -> String {
    let safe = safe_chars(name);
    if safe.len() <= 100 {
        return safe;
    }
    format!("{}-{}", &safe[..80], short_hash(name, 8))
}

/// The first `bytes` bytes of the SHA-256 of `text`, in hex: a stable,
/// short name for something long.
pub fn short_hash(text: &str, bytes: usize) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).iter().take(bytes).map(|b| format!("{b:02x}")).collect()
}

fn safe_chars(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.@".contains(c) { c } else { '_' }).collect()
}

/// Writes a small file (0600, never through a symbolic link) and syncs it.
fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .custom_flags(crate::owned::NO_FOLLOW)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Writes a small file and makes it durable (its directory synced too).
fn write_synced(path: &Path, text: &str) -> Result<()> {
    let ctx = |e| delivery(format!("cannot write {}", path.display()), e);
    write_file(path, text).map_err(ctx)?;
    sync_dir(path.parent().unwrap_or(Path::new("."))).map_err(ctx)
}

fn check_field(s: &str) -> Result<()> {
    if s.is_empty() || s.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(Error::Protocol(format!("refusing to record an id with spaces or control characters: {s:?}")));
    }
    Ok(())
}

fn open_append(path: &Path) -> Result<File> {
    let new = !path.exists();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(crate::owned::NO_FOLLOW)
        .open(path)
        .map_err(|e| delivery(format!("cannot open ledger {}", path.display()), e))?;
    if new {
        f.write_all(HEADER.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| delivery("cannot write ledger", e))?;
        sync_dir(path.parent().unwrap_or(Path::new("."))).map_err(|e| delivery("cannot sync state directory", e))?;
    }
    Ok(f)
}

/// Ends a record: ` <fp>` if there is one, and the line end.
fn push_mark(buf: &mut String, fp: Option<&str>) -> Result<()> {
    if let Some(fp) = fp {
        check_field(fp)?;
        buf.push(' ');
        buf.push_str(fp);
    }
    buf.push('\n');
    Ok(())
}

/// What a journal says.
#[derive(Default)]
struct Replayed {
    delivered: HashSet<Key>,
    pending: HashMap<Key, String>,
    marks: HashMap<Key, String>,
    /// Record lines read.
    records: usize,
}

/// Replays journal bytes. Only complete lines count.
fn replay(bytes: &[u8]) -> Replayed {
    let mut delivered = HashSet::new();
    let mut pending = HashMap::new();
    let mut marks = HashMap::new();
    let mut records = 0;
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => &[][..],
    };
    for line in String::from_utf8_lossy(complete).lines() {
        records += usize::from(!line.starts_with('#'));
        let mut w = line.split(' ');
        match (w.next(), w.next(), w.next(), w.next(), w.next()) {
            (Some("P"), Some(k), Some(t), fp, None) => {
                pending.insert(Key(k.to_string()), t.to_string());
                if let Some(fp) = fp {
                    marks.insert(Key(k.to_string()), fp.to_string());
                }
            }
            (Some("D"), Some(k), fp, None, None) => {
                pending.remove(k);
                delivered.insert(Key(k.to_string()));
                if let Some(fp) = fp {
                    marks.insert(Key(k.to_string()), fp.to_string());
                }
            }
            (Some("F"), Some(k), None, None, None) => {
                pending.remove(k);
                if !delivered.contains(k) {
                    marks.remove(k);
                }
            }
            _ => {}
        }
    }
    Replayed { delivered, pending, marks, records }
}

/// fsyncs a directory, making renames and creations in it durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Key {
        Key::uidl(s)
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut l = Ledger::open(dir.path(), "work").unwrap();
            l.prepare(&[(k("uid1"), "tok1".into(), None), (k("uid2"), "tok2".into(), None)]).unwrap();
            l.commit(&[k("uid1")]).unwrap();
        }
        let l = Ledger::open(dir.path(), "work").unwrap();
        assert!(l.is_delivered(&k("uid1")));
        assert!(!l.is_delivered(&k("uid2")));
        assert_eq!(l.pending(), vec![(k("uid2"), "tok2".to_string())]);
    }

    /// Regression: the ledger and lock were named by the whole tunnel
    /// command, and a long one failed with "File name too long".
    #[test]
    fn regression_long_names_are_bounded_and_stable() {
        let long = format!("tunnel ssh -p 2222 -i /tmp/{} mailtest@127.0.0.1 /usr/lib/dovecot/imap", "x".repeat(300));
        let stem = file_stem(&long);
        assert!(stem.len() <= 100, "{}", stem.len());
        assert_eq!(stem, file_stem(&long), "stable");
        assert_ne!(stem, file_stem(&long.replace("2222", "2223")), "unique");
        let dir = tempfile::tempdir().unwrap();
        assert!(Ledger::open(dir.path(), &long).is_ok());
    }

    /// Two mailboxes under one name never share what was recorded.
    #[test]
    fn durable_before_destructive_a_ledger_serves_only_its_own_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut l = Ledger::open_for_mailbox(dir.path(), "a", "exec imapd-one", None).unwrap();
            l.commit(&[FolderKeys::new("INBOX").key(7, 1)]).unwrap();
        }
        let l = Ledger::open_for_mailbox(dir.path(), "a", "exec imapd-one", None).unwrap();
        assert!(l.is_delivered(&FolderKeys::new("INBOX").key(7, 1)));
        drop(l);
        let l = Ledger::open_for_mailbox(dir.path(), "a", "exec imapd-two", None).unwrap();
        assert!(!l.is_delivered(&FolderKeys::new("INBOX").key(7, 1)), "another mailbox's record was used");
        drop(l);
        // The first mailbox's records were kept aside, not lost.
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("a.ledger."))
            .count();
        assert_eq!(aside, 1);
    }

    /// While every task of an account waits, its ledger holds no file and
    /// no lock: another process may work on the account, and what it
    /// recorded is known when a task wakes the ledger; while a task works,
    /// another process is refused.
    #[tokio::test]
    async fn a_resting_ledger_holds_no_files_and_reads_what_another_process_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let stop = crate::stop::Stop::new();
        let ledgers = Ledgers::bounded(1);
        // Descriptors of this process open on the state directory's files.
        let open = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
                .filter(|target| target.starts_with(dir.path()))
                .count()
        };
        let one = ledgers.open_for_mailbox(dir.path(), "a", "exec imapd", None, &stop).await.unwrap();
        one.lock().commit(&[k("first")]).unwrap();
        assert_eq!(open(), 2, "a working ledger holds its journal and lock");
        assert!(Ledger::open(dir.path(), "a").is_err(), "another process worked beside a working task");
        one.rest();
        assert_eq!(open(), 0, "a resting ledger holds descriptors");
        {
            let mut other = Ledger::open(dir.path(), "a").expect("a resting ledger keeps its lock");
            assert!(other.is_delivered(&k("first")));
            other.commit(&[k("second")]).unwrap();
            other.compact(|_| true).unwrap();
        }
        one.wake(&stop).await.unwrap();
        assert!(one.lock().is_delivered(&k("first")) && one.lock().is_delivered(&k("second")));
        one.lock().commit(&[k("third")]).unwrap();
        // The one slot is this task's while it works.
        let second = tokio::time::timeout(
            Duration::from_millis(200),
            ledgers.open_for_mailbox(dir.path(), "b", "exec imapd", None, &stop),
        )
        .await;
        assert!(second.is_err(), "a second task worked beside the only slot's holder");
        drop(one);
        let two = ledgers.open_for_mailbox(dir.path(), "b", "exec imapd", None, &stop).await.unwrap();
        drop(two);
        assert!(Ledger::open(dir.path(), "a").unwrap().is_delivered(&k("third")));
    }

    /// A compaction that keeps every key of a compact journal writes
    /// nothing (no rewrite, no fsync on each pass over an unchanged
    /// mailbox); one after an append, or one that drops a key, rewrites.
    #[test]
    fn an_unchanged_journal_is_not_rewritten() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.ledger");
        let ino = || std::fs::metadata(&path).unwrap().ino();
        let mut l = Ledger::open(dir.path(), "a").unwrap();
        l.commit(&[k("a1"), k("a2")]).unwrap();
        let appended = ino();
        l.compact(|_| true).unwrap();
        assert_ne!(ino(), appended, "appends were not compacted");
        let compacted = ino();
        l.compact(|_| true).unwrap();
        assert_eq!(ino(), compacted, "a compact journal was rewritten");
        drop(l);
        let mut l = Ledger::open(dir.path(), "a").unwrap();
        l.compact(|_| true).unwrap();
        assert_eq!(ino(), compacted, "a compact journal was rewritten after a reopen");
        l.compact(|key| key.as_str() == "a1").unwrap();
        assert_ne!(ino(), compacted, "a dropped key was not compacted away");
        drop(l);
        let l = Ledger::open(dir.path(), "a").unwrap();
        assert!(l.is_delivered(&k("a1")) && !l.is_delivered(&k("a2")));
    }

    #[test]
    fn torn_last_line_is_ignored() {
        let r = replay(b"# sshmail ledger v1\nD a\nD b\nD c");
        assert!(r.delivered.contains("a") && r.delivered.contains("b") && !r.delivered.contains("c"));
        assert!(r.pending.is_empty());
    }

    #[test]
    fn compaction_keeps_only_what_is_asked_and_pending() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(dir.path(), "a").unwrap();
        l.prepare(&[(k("x"), "t".into(), None)]).unwrap();
        l.commit(&[k("a1"), k("a2")]).unwrap();
        l.compact(|key| key.as_str() == "a2").unwrap();
        l.commit(&[k("a3")]).unwrap();
        drop(l);
        let l = Ledger::open(dir.path(), "a").unwrap();
        assert!(!l.is_delivered(&k("a1")) && l.is_delivered(&k("a2")) && l.is_delivered(&k("a3")));
        assert_eq!(l.pending().len(), 1);
    }

    #[test]
    fn fingerprints_survive_replay_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let f = FolderKeys::new("F");
        {
            let mut l = Ledger::open(dir.path(), "a").unwrap();
            // Maildir: the fingerprint goes with P, D follows without it.
            l.prepare(&[(f.key(1, 1), "t1".into(), Some("10.aa".into()))]).unwrap();
            l.commit(&[f.key(1, 1)]).unwrap();
            // Other sinks: with D.
            l.commit_marked(&[(f.key(1, 2), Some("10.aa".into())), (f.key(1, 3), None)]).unwrap();
            l.commit_marked(&[(f.key(2, 1), Some("20.bb".into()))]).unwrap();
            // Another folder's do not count.
            l.commit_marked(&[(FolderKeys::new("G").key(1, 1), Some("10.aa".into()))]).unwrap();
        }
        let mut l = Ledger::open(dir.path(), "a").unwrap();
        assert_eq!(l.validities(&f), vec![1, 2]);
        let (marks, unmarked) = l.marks_under(&f, 2);
        assert_eq!(marks, HashMap::from([("10.aa".to_string(), 2)]));
        assert_eq!(unmarked, 1);
        l.compact(|key| *key != f.key(1, 2)).unwrap();
        drop(l);
        let l = Ledger::open(dir.path(), "a").unwrap();
        assert_eq!(l.marks_under(&f, 2).0, HashMap::from([("10.aa".to_string(), 1)]));
        assert_eq!(l.marks_under(&f, 1).0, HashMap::from([("20.bb".to_string(), 1)]));
    }

    #[test]
    fn second_process_on_same_account_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Ledger::open(dir.path(), "a").unwrap();
        let e = Ledger::open(dir.path(), "a").unwrap_err().to_string();
        assert!(e.contains("another sshmail"), "{e}");
        assert!(Ledger::open(dir.path(), "b").is_ok());
    }

    /// A folder's keys are its own, whatever its name: one named like
    /// another's key prefix (`a/b` against `a`) holds none of the other's.
    #[test]
    fn folder_keys_hold_only_their_folders_messages() {
        let (a, ab) = (FolderKeys::new("a"), FolderKeys::new("a/b"));
        assert!(a.holds(&a.key(5, 1)) && !a.holds(&ab.key(5, 1)) && !ab.holds(&a.key(5, 1)));
        assert_eq!(a.key(5, 1).as_str(), "a/5/1", "the journal's form is unchanged");
        assert_eq!(ab.key(5, 1).as_str(), "a%2Fb/5/1");
    }

    #[test]
    fn percent_encoding_round_trips() {
        for s in ["INBOX", "lists/rust", "My Folder", "Entwürfe", "100%"] {
            let e = percent_encode(s);
            assert!(!e.contains(' ') && !e.contains('/'), "{e}");
            assert_eq!(percent_decode(&e).as_deref(), Some(s));
        }
        assert_eq!(percent_decode("%G1"), None);
    }

    #[test]
    fn ids_with_spaces_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(dir.path(), "a").unwrap();
        assert!(l.commit(&[k("a b")]).is_err());
    }
}
