//! Maildir delivery (<https://cr.yp.to/proto/maildir.html>).
//!
//! A message is written to `tmp/` under a unique name as it arrives, then a
//! batch is made durable in three steps, in this order:
//!
//! 1. [`Maildir::sync_staged`]: fdatasync every staged file;
//! 2. (the caller records `P key name` in the ledger and fsyncs it);
//! 3. [`Maildir::publish`]: rename each into `new/`, then fsync `new/`.
//!
//! A crash after 1 leaves complete files in `tmp/` that no reader sees; after
//! 2 the ledger knows their names, so [`Maildir::recover`] finishes the job
//! on the next run instead of fetching again: no loss, no duplicate. A
//! message cut off mid-transfer is removed from `tmp/`, never published.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, delivery};
use crate::fault;
use crate::ledger::sync_dir;

/// Ends the middle part of our own file names, so that files left in `tmp/`
/// by a crashed sshmail can be told from other writers' files.
const OWN_MARK: &str = "sshmail";

/// A Maildir on local disk.
#[derive(Debug)]
pub struct Maildir {
    root: PathBuf,
    host: String,
    seq: AtomicU64,
}

/// A message being written into `tmp/`.
#[derive(Debug)]
pub struct Staged {
    /// The unique file name (also the ledger token).
    pub name: String,
    path: PathBuf,
    file: BufWriter<File>,
    /// Bytes written.
    pub len: u64,
}

impl Staged {
    /// Appends message bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.len += data.len() as u64;
        self.file.write_all(data).map_err(|e| delivery(format!("cannot write {}", self.path.display()), e))
    }
}

/// A staged message that is complete and flushed, ready to be synced.
#[derive(Debug)]
pub struct Finished {
    /// The unique file name (also the ledger token).
    pub name: String,
    file: File,
    /// Bytes in the message.
    pub len: u64,
}

impl Maildir {
    /// Opens a Maildir, creating it (mode 0700) if it does not exist.
    pub fn open(root: &Path) -> Result<Maildir> {
        for sub in ["tmp", "new", "cur"] {
            let d = root.join(sub);
            if !d.is_dir() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&d)
                    .map_err(|e| delivery(format!("cannot create Maildir {}", d.display()), e))?;
            }
        }
        let host = gethostname::gethostname().to_string_lossy().replace('/', "\\057").replace(':', "\\072");
        Ok(Maildir { root: root.to_path_buf(), host, seq: AtomicU64::new(0) })
    }

    /// The Maildir's root.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Starts a new message in `tmp/`.
    pub fn begin(&self) -> Result<Staged> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}.M{}P{}Q{}{OWN_MARK}.{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            seq,
            self.host
        );
        let path = self.root.join("tmp").join(&name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| delivery(format!("cannot create {}", path.display()), e))?;
        Ok(Staged { name, path, file: BufWriter::with_capacity(128 * 1024, file), len: 0 })
    }

    /// Flushes a complete staged message.
    pub fn finish(&self, staged: Staged) -> Result<Finished> {
        let Staged { name, path, file, len } = staged;
        let file =
            file.into_inner().map_err(|e| delivery(format!("cannot write {}", path.display()), e.into_error()))?;
        Ok(Finished { name, file, len })
    }

    /// Removes an unfinished message (cut off, refused or too big).
    pub fn discard(&self, staged: Staged) {
        let path = staged.path.clone();
        drop(staged);
        let _ = fs::remove_file(path);
    }

    /// Removes a finished message that will not be published.
    pub fn discard_finished(&self, finished: Finished) {
        let path = self.root.join("tmp").join(&finished.name);
        drop(finished);
        let _ = fs::remove_file(path);
    }

    /// Step 1: makes every staged file's content durable, several at a time.
    pub fn sync_staged(&self, batch: &[Finished]) -> Result<()> {
        let threads = 8.min(batch.len().max(1));
        let chunk = batch.len().div_ceil(threads).max(1);
        let errors: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter().map(|f| f.file.sync_data().map_err(|e| (f.name.clone(), e))).collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).filter_map(|r| r.err()).collect()
        });
        if let Some((name, e)) = errors.into_iter().next() {
            return Err(delivery(format!("cannot sync {}", self.root.join("tmp").join(name).display()), e));
        }
        fault::point("maildir-synced");
        Ok(())
    }

    /// Step 3: moves the batch into `new/` and makes the renames durable.
    pub fn publish(&self, batch: &[Finished]) -> Result<()> {
        for f in batch {
            self.publish_one(&f.name)?;
            fault::point("maildir-renamed");
        }
        sync_dir(&self.root.join("new")).map_err(|e| delivery("cannot sync Maildir new/", e))?;
        fault::point("maildir-dir-synced");
        Ok(())
    }

    fn publish_one(&self, name: &str) -> Result<()> {
        let from = self.root.join("tmp").join(name);
        let to = self.root.join("new").join(name);
        fs::rename(&from, &to).map_err(|e| delivery(format!("cannot move {} to new/", from.display()), e))
    }

    /// After a crash: is the message staged as `name` delivered? Finishes a
    /// publish that was interrupted. Returns false if it is nowhere, so the
    /// caller fetches it again.
    pub fn recover(&self, name: &str) -> Result<bool> {
        if self.root.join("new").join(name).exists() {
            sync_dir(&self.root.join("new")).map_err(|e| delivery("cannot sync Maildir new/", e))?;
            return Ok(true);
        }
        // A reader may have moved it to cur/ and added flags already.
        let cur = self.root.join("cur");
        let prefix = format!("{name}:");
        if let Ok(entries) = fs::read_dir(&cur) {
            for e in entries.flatten() {
                let n = e.file_name();
                let n = n.to_string_lossy();
                if n == name || n.starts_with(&prefix) {
                    return Ok(true);
                }
            }
        }
        if self.root.join("tmp").join(name).exists() {
            self.publish_one(name)?;
            sync_dir(&self.root.join("new")).map_err(|e| delivery("cannot sync Maildir new/", e))?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Cleans `tmp/`: removes our own files whose writer process is gone
    /// (a crashed fetch; anything it had recorded was recovered before this
    /// is called), and anyone's files older than 36 hours (the Maildir rule).
    pub fn clean_tmp(&self) {
        let Ok(entries) = fs::read_dir(self.root.join("tmp")) else { return };
        let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(36 * 3600);
        for e in entries.flatten() {
            let name = e.file_name();
            let orphan = orphan_pid(&name.to_string_lossy(), &self.host)
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            let stale = e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < cutoff);
            if orphan || stale {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// The writer PID in one of our own names for this host, if it is one.
fn orphan_pid(name: &str, host: &str) -> Option<u32> {
    let mut parts = name.splitn(3, '.');
    let (_, middle, right) = (parts.next()?, parts.next()?, parts.next()?);
    if right != host {
        return None;
    }
    let middle = middle.strip_suffix(OWN_MARK)?;
    let after_p = &middle[middle.find('P')? + 1..];
    after_p[..after_p.find('Q')?].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_new(md: &Path) -> Vec<Vec<u8>> {
        let mut v: Vec<_> =
            fs::read_dir(md.join("new")).unwrap().map(|e| fs::read(e.unwrap().path()).unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn durable_before_destructive_staged_messages_are_invisible_until_published() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open(&dir.path().join("Mail")).unwrap();
        let mut s = md.begin().unwrap();
        s.write(b"Subject: a\n\nbody\n").unwrap();
        let f = md.finish(s).unwrap();
        md.sync_staged(std::slice::from_ref(&f)).unwrap();
        assert!(read_new(md.path()).is_empty());
        md.publish(std::slice::from_ref(&f)).unwrap();
        assert_eq!(read_new(md.path()), vec![b"Subject: a\n\nbody\n".to_vec()]);
        assert_eq!(fs::read_dir(md.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn discarded_message_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open(dir.path()).unwrap();
        let mut s = md.begin().unwrap();
        s.write(b"partial").unwrap();
        md.discard(s);
        assert_eq!(fs::read_dir(md.path().join("tmp")).unwrap().count(), 0);
        assert!(read_new(md.path()).is_empty());
    }

    #[test]
    fn recover_finishes_or_reports_missing() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open(dir.path()).unwrap();
        let mut s = md.begin().unwrap();
        s.write(b"x\n").unwrap();
        let f = md.finish(s).unwrap();
        md.sync_staged(std::slice::from_ref(&f)).unwrap();
        // Crash before publish: recovery publishes it.
        assert!(md.recover(&f.name).unwrap());
        assert_eq!(read_new(md.path()).len(), 1);
        // Already published: still delivered, not published twice.
        assert!(md.recover(&f.name).unwrap());
        assert_eq!(read_new(md.path()).len(), 1);
        // Moved to cur/ with flags by a reader.
        fs::rename(md.path().join("new").join(&f.name), md.path().join("cur").join(format!("{}:2,S", f.name))).unwrap();
        assert!(md.recover(&f.name).unwrap());
        assert!(!md.recover("nonexistent.name").unwrap());
    }

    #[test]
    fn orphans_of_dead_writers_are_removed_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open(dir.path()).unwrap();
        let live = md.begin().unwrap();
        let dead = format!("1.M1P{}Q0{OWN_MARK}.{}", u32::MAX - 1, md.host);
        let foreign = format!("1.M1P{}Q0.{}", u32::MAX - 1, md.host);
        for n in [&dead, &foreign] {
            fs::write(md.path().join("tmp").join(n), b"x").unwrap();
        }
        md.clean_tmp();
        assert!(live.path.exists(), "a live writer's file was removed");
        assert!(!md.path().join("tmp").join(&dead).exists(), "our dead writer's file stayed");
        assert!(md.path().join("tmp").join(&foreign).exists(), "another program's file was removed");
        assert_eq!(orphan_pid(&dead, &md.host), Some(u32::MAX - 1));
    }

    #[test]
    fn unique_names() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open(dir.path()).unwrap();
        let a = md.begin().unwrap();
        let b = md.begin().unwrap();
        assert_ne!(a.name, b.name);
        assert!(!a.name.contains('/') && !a.name.contains(':'));
    }
}
