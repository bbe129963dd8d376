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
//! [`Ledgers`].

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::error::{Error, Result, delivery};
use crate::fault;

const HEADER: &str = "# sshmail ledger v1\n";

/// The delivery journal of one account.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    file: File,
    _lock: File,
    delivered: HashSet<String>,
    pending: HashMap<String, String>,
    /// Fingerprints of delivered and pending keys, where recorded.
    marks: HashMap<String, String>,
}

impl Ledger {
    /// Opens (creating if needed) and replays the ledger of `account` in
    /// `dir`, taking the account's lock.
    pub fn open(dir: &Path, account: &str) -> Result<Ledger> {
        fs::create_dir_all(dir).map_err(|e| delivery(format!("cannot create state directory {}", dir.display()), e))?;
        let safe = file_stem(account);
        let lock_path = dir.join(format!("{safe}.lock"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| delivery(format!("cannot open {}", lock_path.display()), e))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| {
            Error::Delivery(format!(
                "account {account} is being fetched by another sshmail process (lock {} is held)",
                lock_path.display()
            ))
        })?;
        let path = dir.join(format!("{safe}.ledger"));
        let Replayed { delivered, pending, marks } = match fs::read(&path) {
            Ok(bytes) => replay(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => {
                return Err(delivery(format!("cannot read ledger {}", path.display()), e));
            }
        };
        let file = open_append(&path)?;
        Ok(Ledger { path, file, _lock: lock, delivered, pending, marks })
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
        match fs::read_to_string(&mailbox) {
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
                ledger.file = open_append(&path)?;
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
    pub fn is_delivered(&self, key: &str) -> bool {
        self.delivered.contains(key)
    }

    /// The distinct second path components of delivered keys that start
    /// with `prefix` (for IMAP keys `folder/uidvalidity/uid`: the
    /// UIDVALIDITY values on record for a folder).
    pub fn validities(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .delivered
            .iter()
            .filter_map(|k| k.strip_prefix(prefix))
            .filter_map(|rest| rest.split('/').next())
            .map(str::to_string)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The fingerprints of what was delivered under keys starting with
    /// `prefix` but not with `except` (a folder's other UIDVALIDITY
    /// values), each with the number of deliveries it stands for; and how
    /// many of those deliveries were recorded without one.
    pub fn marks_under(&self, prefix: &str, except: &str) -> (HashMap<String, usize>, usize) {
        let mut marks: HashMap<String, usize> = HashMap::new();
        let mut unmarked = 0;
        for key in self.delivered.iter().filter(|k| k.starts_with(prefix) && !k.starts_with(except)) {
            match self.marks.get(key) {
                Some(fp) => *marks.entry(fp.clone()).or_default() += 1,
                None => unmarked += 1,
            }
        }
        (marks, unmarked)
    }

    /// Prepared but not confirmed deliveries, left by an interrupted run.
    pub fn pending(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self.pending.iter().map(|(k, t)| (k.clone(), t.clone())).collect();
        v.sort();
        v
    }

    /// Records that these messages are durable in staging under their
    /// tokens (key, token, fingerprint if known).
    pub fn prepare(&mut self, items: &[(String, String, Option<String>)]) -> Result<()> {
        let mut buf = String::new();
        for (key, token, fp) in items {
            check_field(key)?;
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
    pub fn commit(&mut self, keys: &[String]) -> Result<()> {
        let items: Vec<(String, Option<String>)> = keys.iter().map(|k| (k.clone(), None)).collect();
        self.commit_marked(&items)
    }

    /// Records that these messages are delivered, each with its fingerprint
    /// if known.
    pub fn commit_marked(&mut self, items: &[(String, Option<String>)]) -> Result<()> {
        let mut buf = String::new();
        for (key, fp) in items {
            check_field(key)?;
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
    pub fn forget(&mut self, key: &str) -> Result<()> {
        self.append(&format!("F {key}\n"))?;
        self.pending.remove(key);
        if !self.delivered.contains(key) {
            self.marks.remove(key);
        }
        Ok(())
    }

    /// Rewrites the journal keeping only the delivered keys for which `keep`
    /// is true (those still on the server) and every pending entry.
    pub fn compact(&mut self, keep: impl Fn(&str) -> bool) -> Result<()> {
        self.delivered.retain(|k| keep(k));
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
        let tmp = self.path.with_extension("ledger.new");
        let ctx = |e| delivery(format!("cannot rewrite ledger {}", self.path.display()), e);
        {
            let mut f =
                OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp).map_err(ctx)?;
            f.write_all(text.as_bytes()).map_err(ctx)?;
            f.sync_all().map_err(ctx)?;
        }
        fault::point("compaction-written");
        fs::rename(&tmp, &self.path).map_err(ctx)?;
        fault::point("compaction-renamed");
        sync_dir(self.path.parent().unwrap_or(Path::new("."))).map_err(ctx)?;
        self.file = open_append(&self.path)?;
        Ok(())
    }

    fn append(&mut self, text: &str) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let ctx = |e| delivery(format!("cannot write ledger {}", self.path.display()), e);
        self.file.write_all(text.as_bytes()).map_err(ctx)?;
        fault::point("ledger-appended");
        self.file.sync_data().map_err(ctx)?;
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

/// The ledgers open in this process, by file: an account's concurrent
/// tasks get the same [`Shared`] handle (the lock file refuses a second
/// open, even from this process), and the ledger closes, releasing its
/// lock, when the last task lets go of it.
#[derive(Debug, Default)]
pub struct Ledgers {
    open: Mutex<HashMap<PathBuf, Weak<Mutex<Ledger>>>>,
}

impl Ledgers {
    /// The ledger of the mailbox `identity` named `name` in `dir`
    /// ([`Ledger::open_for_mailbox`]), or the handle already open for it.
    pub fn open_for_mailbox(&self, dir: &Path, name: &str, identity: &str, legacy: Option<&str>) -> Result<Shared> {
        let file = dir.join(format!("{}.ledger", file_stem(name)));
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(ledger) = open.get(&file).and_then(Weak::upgrade) {
            return Ok(Shared(ledger));
        }
        let ledger = Arc::new(Mutex::new(Ledger::open_for_mailbox(dir, name, identity, legacy)?));
        open.retain(|_, w| w.strong_count() > 0);
        open.insert(file, Arc::downgrade(&ledger));
        Ok(Shared(ledger))
    }
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

/// Writes a small file and makes it durable.
fn write_synced(path: &Path, text: &str) -> Result<()> {
    let ctx = |e| delivery(format!("cannot write {}", path.display()), e);
    let mut f = OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path).map_err(ctx)?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(ctx)?;
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
    delivered: HashSet<String>,
    pending: HashMap<String, String>,
    marks: HashMap<String, String>,
}

/// Replays journal bytes. Only complete lines count.
fn replay(bytes: &[u8]) -> Replayed {
    let mut delivered = HashSet::new();
    let mut pending = HashMap::new();
    let mut marks = HashMap::new();
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => &[][..],
    };
    for line in String::from_utf8_lossy(complete).lines() {
        let mut w = line.split(' ');
        match (w.next(), w.next(), w.next(), w.next(), w.next()) {
            (Some("P"), Some(k), Some(t), fp, None) => {
                pending.insert(k.to_string(), t.to_string());
                if let Some(fp) = fp {
                    marks.insert(k.to_string(), fp.to_string());
                }
            }
            (Some("D"), Some(k), fp, None, None) => {
                pending.remove(k);
                delivered.insert(k.to_string());
                if let Some(fp) = fp {
                    marks.insert(k.to_string(), fp.to_string());
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
    Replayed { delivered, pending, marks }
}

/// fsyncs a directory, making renames and creations in it durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut l = Ledger::open(dir.path(), "work").unwrap();
            l.prepare(&[("uid1".into(), "tok1".into(), None), ("uid2".into(), "tok2".into(), None)]).unwrap();
            l.commit(&["uid1".into()]).unwrap();
        }
        let l = Ledger::open(dir.path(), "work").unwrap();
        assert!(l.is_delivered("uid1"));
        assert!(!l.is_delivered("uid2"));
        assert_eq!(l.pending(), vec![("uid2".to_string(), "tok2".to_string())]);
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
            l.commit(&["INBOX/7/1".into()]).unwrap();
        }
        let l = Ledger::open_for_mailbox(dir.path(), "a", "exec imapd-one", None).unwrap();
        assert!(l.is_delivered("INBOX/7/1"));
        drop(l);
        let l = Ledger::open_for_mailbox(dir.path(), "a", "exec imapd-two", None).unwrap();
        assert!(!l.is_delivered("INBOX/7/1"), "another mailbox's record was used");
        drop(l);
        // The first mailbox's records were kept aside, not lost.
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("a.ledger."))
            .count();
        assert_eq!(aside, 1);
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
        l.prepare(&[("x".into(), "t".into(), None)]).unwrap();
        l.commit(&["a1".into(), "a2".into()]).unwrap();
        l.compact(|k| k == "a2").unwrap();
        l.commit(&["a3".into()]).unwrap();
        drop(l);
        let l = Ledger::open(dir.path(), "a").unwrap();
        assert!(!l.is_delivered("a1") && l.is_delivered("a2") && l.is_delivered("a3"));
        assert_eq!(l.pending().len(), 1);
    }

    #[test]
    fn fingerprints_survive_replay_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut l = Ledger::open(dir.path(), "a").unwrap();
            // Maildir: the fingerprint goes with P, D follows without it.
            l.prepare(&[("F/1/1".into(), "t1".into(), Some("10.aa".into()))]).unwrap();
            l.commit(&["F/1/1".into()]).unwrap();
            // Other sinks: with D.
            l.commit_marked(&[("F/1/2".into(), Some("10.aa".into())), ("F/1/3".into(), None)]).unwrap();
            l.commit_marked(&[("F/2/1".into(), Some("20.bb".into()))]).unwrap();
        }
        let mut l = Ledger::open(dir.path(), "a").unwrap();
        let (marks, unmarked) = l.marks_under("F/", "F/2/");
        assert_eq!(marks, HashMap::from([("10.aa".to_string(), 2)]));
        assert_eq!(unmarked, 1);
        l.compact(|k| k != "F/1/2").unwrap();
        drop(l);
        let l = Ledger::open(dir.path(), "a").unwrap();
        assert_eq!(l.marks_under("F/", "F/2/").0, HashMap::from([("10.aa".to_string(), 1)]));
        assert_eq!(l.marks_under("F/", "F/1/").0, HashMap::from([("20.bb".to_string(), 1)]));
    }

    #[test]
    fn second_process_on_same_account_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Ledger::open(dir.path(), "a").unwrap();
        let e = Ledger::open(dir.path(), "a").unwrap_err().to_string();
        assert!(e.contains("another sshmail"), "{e}");
        assert!(Ledger::open(dir.path(), "b").is_ok());
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
        assert!(l.commit(&["a b".into()]).is_err());
    }
}
