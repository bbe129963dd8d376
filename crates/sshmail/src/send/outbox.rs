//! The outbox: a message is accepted only once it is on disk, fsync'd.
//!
//! ```text
//! outbox/tmp/ID      being written (removed or left by a crash: never sent)
//! outbox/new/ID      queued: one JSON line (the envelope), then the message
//! outbox/state/ID    what was tried (attempts, last error, next try, the
//!                    recipients that accepted it), rewritten atomically
//! outbox/failed/ID   refused for good, or expired; kept for `sshmail queue`
//! ```
//!
//! An entry is written to `tmp/`, fsync'd, renamed into `new/`, and `new/`
//! fsync'd: only then is it accepted (`sendmail` exits 0). A kill at any
//! point leaves either no entry in `new/` or a whole one. The envelope is
//! structured data (sender, recipients, account), never shell words to
//! re-split. An entry leaves `new/` only when every recipient was
//! accepted (it is removed), or when it is moved to `failed/`. One
//! relay at a time works on an entry: it holds the entry's lock
//! ([`Outbox::claim`]) while sending it, and only that entry's.

use std::io::{BufRead as _, Read, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The envelope format's version.
pub const VERSION: u32 = 1;
/// The longest envelope line read.
const MAX_ENVELOPE: u64 = 1 << 20;

/// Who sends a message to whom, and through which account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`VERSION`].
    pub version: u32,
    /// The envelope sender (`MAIL FROM`); empty for a bounce.
    pub sender: String,
    /// The recipients (`RCPT TO`), as given.
    pub recipients: Vec<String>,
    /// The account that relays it.
    pub account: String,
    /// When it was queued (seconds since the epoch).
    pub queued: u64,
}

/// What was tried with an entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Relay attempts so far.
    pub attempts: u32,
    /// Why the last one did not finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Not before (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_try: Option<u64>,
    /// Recipients that accepted it already (not sent to again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted: Vec<String>,
    /// The connection was lost after the end of DATA, before the reply: the
    /// relay may have it; it is sent again (a duplicate beats a loss).
    #[serde(default)]
    pub uncertain: bool,
    /// The last try did not reach the relay (the link or the SSH host was
    /// down): it is tried again as soon as a connection comes back.
    #[serde(default)]
    pub link_down: bool,
    /// The notice to the user of a message given up on later (not while
    /// the user's own `sendmail` waited, which says so itself).
    #[serde(default, skip_serializing_if = "Notice::is_none")]
    pub notice: Notice,
}

/// Whether the user was told by a notice in their mailbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Notice {
    /// None is needed.
    #[default]
    None,
    /// One is to be delivered (it is retried until it is).
    Due,
    /// Delivered.
    Delivered,
}

impl Notice {
    fn is_none(&self) -> bool {
        *self == Notice::None
    }
}

/// One queued (or failed) message.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its name in the outbox.
    pub id: String,
    /// Its envelope.
    pub envelope: Envelope,
    /// What was tried.
    pub state: State,
    /// Bytes of the message.
    pub size: u64,
    path: PathBuf,
    /// Where the message starts in the file.
    offset: u64,
}

impl Entry {
    /// The recipients still to send to.
    pub fn pending(&self) -> Vec<String> {
        self.envelope.recipients.iter().filter(|r| !self.state.accepted.contains(r)).cloned().collect()
    }

    /// The message, from its first byte.
    pub fn message(&self) -> Result<impl Read + use<>> {
        use std::io::{Seek as _, SeekFrom};
        let mut f = std::fs::File::open(&self.path).map_err(|e| outbox_error(&self.path, e))?;
        f.seek(SeekFrom::Start(self.offset)).map_err(|e| outbox_error(&self.path, e))?;
        Ok(f)
    }
}

/// An entry that could not be read (a torn or foreign file): listed, never
/// sent, never blocking the others.
#[derive(Debug, Clone)]
pub struct Unreadable {
    /// Its name.
    pub id: String,
    /// Why.
    pub why: String,
}

/// The outbox directory.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

/// The claim on an entry while it is relayed (an exclusive lock on its file).
pub struct Claim {
    _file: std::fs::File,
}

impl Outbox {
    /// The default outbox: `$XDG_DATA_HOME/sshmail/outbox`.
    pub fn default_dir() -> PathBuf {
        crate::config::default_outbox_dir()
    }

    /// Opens (and makes, mode 0700) the outbox at `dir`.
    pub fn open(dir: &Path) -> Result<Outbox> {
        for sub in ["tmp", "new", "state", "failed"] {
            let d = dir.join(sub);
            if !d.is_dir() {
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&d).map_err(|e| outbox_error(&d, e))?;
            }
        }
        Ok(Outbox { dir: dir.to_path_buf() })
    }

    /// Where it is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues `message` (read to its end) for `envelope`: durable when this
    /// returns. Nothing is left in `new/` if it fails.
    pub fn add(&self, envelope: &Envelope, message: &mut dyn Read) -> Result<Entry> {
        let id = new_id();
        let tmp = self.dir.join("tmp").join(&id);
        let result = (|| -> std::io::Result<(u64, u64)> {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            let mut head = serde_json::to_vec(envelope).map_err(std::io::Error::other)?;
            head.push(b'\n');
            f.write_all(&head)?;
            let size = std::io::copy(message, &mut f)?;
            crate::fault::point("outbox-written");
            f.sync_all()?;
            Ok((head.len() as u64, size))
        })();
        let (offset, size) = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(outbox_error(&tmp, e));
            }
        };
        let path = self.dir.join("new").join(&id);
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(outbox_error(&path, e));
        }
        crate::fault::point("outbox-renamed");
        crate::ledger::sync_dir(&self.dir.join("new")).map_err(|e| outbox_error(&path, e))?;
        Ok(Entry { id, envelope: envelope.clone(), state: State::default(), size, path, offset })
    }

    /// The queued entries, oldest first, and those that cannot be read.
    pub fn queued(&self) -> Result<(Vec<Entry>, Vec<Unreadable>)> {
        self.entries("new")
    }

    /// The queued entry `id`, if it is there and can be read.
    pub fn get(&self, id: &str) -> Option<Entry> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return None;
        }
        self.read(&self.dir.join("new").join(id), id).ok()
    }

    /// The failed entries.
    pub fn failed(&self) -> Result<(Vec<Entry>, Vec<Unreadable>)> {
        self.entries("failed")
    }

    fn entries(&self, sub: &str) -> Result<(Vec<Entry>, Vec<Unreadable>)> {
        let dir = self.dir.join(sub);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| outbox_error(&dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for id in names {
            match self.read(&dir.join(&id), &id) {
                Ok(e) => good.push(e),
                Err(why) => bad.push(Unreadable { id, why }),
            }
        }
        Ok((good, bad))
    }

    fn read(&self, path: &Path, id: &str) -> std::result::Result<Entry, String> {
        let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let total = f.metadata().map_err(|e| e.to_string())?.len();
        let mut line = Vec::new();
        std::io::BufReader::new(f).take(MAX_ENVELOPE).read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
        if !line.ends_with(b"\n") {
            return Err("no envelope line".into());
        }
        let envelope: Envelope = serde_json::from_slice(&line).map_err(|e| format!("a bad envelope: {e}"))?;
        if envelope.version != VERSION {
            return Err(format!("envelope version {} (this sshmail writes {VERSION})", envelope.version));
        }
        let state = std::fs::read(self.dir.join("state").join(id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let offset = line.len() as u64;
        Ok(Entry { id: id.to_string(), envelope, state, size: total - offset, path: path.to_path_buf(), offset })
    }

    /// Takes the entry for relaying, unless someone else holds it.
    pub fn claim(&self, entry: &Entry) -> Option<Claim> {
        let file = std::fs::File::open(&entry.path).ok()?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).ok()?;
        // Sent and removed by whoever held it before us.
        entry.path.exists().then_some(Claim { _file: file })
    }

    /// Records what was tried (fsync'd: the accepted recipients must not
    /// be sent to again).
    pub fn record(&self, entry: &mut Entry, state: State) -> Result<()> {
        let path = self.dir.join("state").join(&entry.id);
        let tmp = self.dir.join("state").join(format!(".{}.tmp", entry.id));
        let bytes = serde_json::to_vec(&state).map_err(|e| Error::Delivery(e.to_string()))?;
        (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            crate::ledger::sync_dir(&self.dir.join("state"))
        })()
        .map_err(|e| outbox_error(&path, e))?;
        entry.state = state;
        Ok(())
    }

    /// Every recipient accepted it: the entry goes.
    pub fn done(&self, entry: &Entry) -> Result<()> {
        std::fs::remove_file(&entry.path).map_err(|e| outbox_error(&entry.path, e))?;
        let _ = std::fs::remove_file(self.dir.join("state").join(&entry.id));
        crate::ledger::sync_dir(&self.dir.join("new")).map_err(|e| outbox_error(&entry.path, e))
    }

    /// Refused for good: the entry moves to `failed/`, with `why` recorded.
    pub fn fail(&self, entry: &mut Entry, why: &str) -> Result<()> {
        let mut state = entry.state.clone();
        state.last_error = Some(why.to_string());
        state.next_try = None;
        self.record(entry, state)?;
        let to = self.dir.join("failed").join(&entry.id);
        std::fs::rename(&entry.path, &to).map_err(|e| outbox_error(&to, e))?;
        crate::ledger::sync_dir(&self.dir.join("failed")).map_err(|e| outbox_error(&to, e))?;
        crate::ledger::sync_dir(&self.dir.join("new")).map_err(|e| outbox_error(&to, e))?;
        entry.path = to;
        Ok(())
    }

    /// Removes a queued or failed entry by its id (`sshmail queue remove`).
    pub fn remove(&self, id: &str) -> Result<bool> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Ok(false);
        }
        for sub in ["new", "failed"] {
            let path = self.dir.join(sub).join(id);
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| outbox_error(&path, e))?;
                let _ = std::fs::remove_file(self.dir.join("state").join(id));
                crate::ledger::sync_dir(&self.dir.join(sub)).map_err(|e| outbox_error(&path, e))?;
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// A new entry name: the time (sortable), the PID, a random part.
fn new_id() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    format!("{:010}.{:06}.{}.{:08x}", now.as_secs(), now.subsec_micros(), std::process::id(), u32::from_le_bytes(r))
}

/// Now, in seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn outbox_error(path: &Path, e: std::io::Error) -> Error {
    Error::Delivery(format!("outbox {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            version: VERSION,
            sender: "me@example.net".into(),
            recipients: vec!["a@example.org".into(), "b@example.org".into()],
            account: "isp".into(),
            queued: now(),
        }
    }

    #[test]
    fn accepted_means_durable_an_entry_is_whole_in_new_and_reads_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let message = b"Subject: hi\n\nbody\n.\nmore\n".to_vec();
        let added = outbox.add(&envelope(), &mut message.as_slice()).unwrap();
        assert!(std::fs::read_dir(dir.path().join("tmp")).unwrap().next().is_none(), "tmp/ is empty again");
        let (queued, bad) = outbox.queued().unwrap();
        assert!(bad.is_empty());
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].id, added.id);
        assert_eq!(queued[0].envelope, envelope());
        let mut back = Vec::new();
        queued[0].message().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, message);
        assert_eq!(queued[0].size, message.len() as u64);
        assert_eq!(outbox.get(&added.id).map(|e| e.envelope), Some(envelope()));
        assert!(outbox.get("../new").is_none() && outbox.get("").is_none());
    }

    #[test]
    fn accepted_recipients_are_remembered_and_a_done_entry_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let mut e = outbox.add(&envelope(), &mut &b"x\n"[..]).unwrap();
        let claim = outbox.claim(&e).expect("free");
        assert!(outbox.claim(&e).is_none(), "one relay at a time");
        let state = State { attempts: 1, accepted: vec!["a@example.org".into()], ..State::default() };
        outbox.record(&mut e, state).unwrap();
        let (queued, _) = outbox.queued().unwrap();
        assert_eq!(queued[0].pending(), vec!["b@example.org".to_string()]);
        outbox.done(&e).unwrap();
        drop(claim);
        assert!(outbox.queued().unwrap().0.is_empty());
        assert!(std::fs::read_dir(dir.path().join("state")).unwrap().next().is_none());
    }

    #[test]
    fn an_unreadable_entry_is_listed_apart_and_does_not_block_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("new/0000000000.000000.1.00000000"), b"").unwrap();
        outbox.add(&envelope(), &mut &b"x\n"[..]).unwrap();
        let (good, bad) = outbox.queued().unwrap();
        assert_eq!((good.len(), bad.len()), (1, 1));
        assert!(bad[0].why.contains("envelope"), "{}", bad[0].why);
    }

    #[test]
    fn a_failed_entry_moves_to_failed_with_its_reason_and_can_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let mut e = outbox.add(&envelope(), &mut &b"x\n"[..]).unwrap();
        outbox.fail(&mut e, "550 no such user").unwrap();
        assert!(outbox.queued().unwrap().0.is_empty());
        let (failed, _) = outbox.failed().unwrap();
        assert_eq!(failed[0].state.last_error.as_deref(), Some("550 no such user"));
        assert!(outbox.remove(&e.id).unwrap());
        assert!(!outbox.remove("../new").unwrap());
        assert!(outbox.failed().unwrap().0.is_empty());
    }
}
