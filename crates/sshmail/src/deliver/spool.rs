//! A staging directory: messages are written here as they arrive, under
//! unique Maildir-style names, and made durable in batches.
//!
//! A Maildir's `tmp/` is one; every other sink gets one beside the ledger.
//! Nothing in a spool is ever visible to a mail reader; a message cut off
//! mid-transfer is removed, never delivered.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, delivery};
use crate::fault;

/// Ends the middle part of our own file names, so that files left behind by
/// a crashed sshmail can be told from other writers' files.
pub const OWN_MARK: &str = "sshmail";

/// A staging directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    host: String,
    pid: u32,
    seq: AtomicU64,
}

/// A message being written.
#[derive(Debug)]
pub struct Staged {
    /// The unique file name (for a Maildir also the ledger token).
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

/// A staged message that is complete and flushed.
#[derive(Debug)]
pub struct Finished {
    /// The unique file name.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    file: File,
    /// Bytes in the message.
    pub len: u64,
    /// What recognises the message if its server renumbers it, when the
    /// protocol gives one ([`crate::fetch::fingerprint`]).
    pub fingerprint: Option<String>,
}

impl Spool {
    /// Opens (creating, mode 0700) a staging directory.
    pub fn open(dir: &Path) -> Result<Spool> {
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| delivery(format!("cannot create {}", dir.display()), e))?;
        }
        Ok(Spool::at(dir))
    }

    /// The spool at `dir`, not created (for `--check`, which stages nothing).
    pub fn at(dir: &Path) -> Spool {
        Spool { dir: dir.to_path_buf(), host: hostname_for_names(), pid: std::process::id(), seq: AtomicU64::new(0) }
    }

    /// Starts a new message, writing `prefix` (a trace header) first.
    pub fn begin(&self, prefix: &[u8]) -> Result<Staged> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}.M{}P{}Q{}{OWN_MARK}.{}", now.as_secs(), now.subsec_micros(), self.pid, seq, self.host);
        let path = self.dir.join(&name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| delivery(format!("cannot create {}", path.display()), e))?;
        let mut staged = Staged { name, path, file: BufWriter::with_capacity(128 * 1024, file), len: 0 };
        if !prefix.is_empty() {
            staged.write(prefix)?;
        }
        Ok(staged)
    }

    /// Flushes a complete message.
    pub fn finish(&self, staged: Staged) -> Result<Finished> {
        let Staged { name, path, file, len } = staged;
        let file =
            file.into_inner().map_err(|e| delivery(format!("cannot write {}", path.display()), e.into_error()))?;
        Ok(Finished { name, path, file, len, fingerprint: None })
    }

    /// Removes an unfinished message.
    pub fn discard(&self, staged: Staged) {
        let path = staged.path.clone();
        drop(staged);
        let _ = fs::remove_file(path);
    }

    /// Removes a finished message that will not be delivered from here.
    pub fn discard_finished(&self, finished: Finished) {
        let path = finished.path.clone();
        drop(finished);
        let _ = fs::remove_file(path);
    }

    /// Makes every file's content durable, several at a time, on the
    /// runtime's blocking threads (reused, not started per batch).
    pub async fn sync(&self, batch: &[Finished]) -> Result<()> {
        const PARALLEL: usize = 16;
        let chunk = batch.len().div_ceil(PARALLEL).max(1);
        let mut tasks = Vec::with_capacity(PARALLEL);
        for part in batch.chunks(chunk) {
            let files = part
                .iter()
                .map(|f| f.file.try_clone().map(|file| (f.path.clone(), file)))
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(|e| delivery("cannot sync staged messages", e))?;
            tasks.push(tokio::task::spawn_blocking(move || {
                for (path, file) in files {
                    file.sync_data().map_err(|e| (path, e))?;
                }
                Ok::<(), (PathBuf, std::io::Error)>(())
            }));
        }
        let mut first_error = None;
        for t in tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err((path, e))) => {
                    first_error.get_or_insert_with(|| delivery(format!("cannot sync {}", path.display()), e));
                }
                Err(e) => {
                    first_error
                        .get_or_insert_with(|| delivery("cannot sync staged messages", std::io::Error::other(e)));
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        fault::point("maildir-synced");
        Ok(())
    }

    /// Removes our own files whose writer process is gone, and anyone's
    /// files older than 36 hours (the Maildir rule for `tmp/`).
    pub fn clean(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(36 * 3600);
        for e in entries.flatten() {
            let name = e.file_name();
            let orphan = orphan_pid(&name.to_string_lossy(), &self.host)
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            let stale = e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < cutoff);
            if orphan || stale {
                let _ = fs::remove_file(e.path());
                crate::fault::point("orphan-removed");
            }
        }
    }
}

fn hostname_for_names() -> String {
    gethostname::gethostname().to_string_lossy().replace('/', "\\057").replace(':', "\\072")
}

/// The writer PID in one of our own names for this host, if it is one.
pub fn orphan_pid(name: &str, host: &str) -> Option<u32> {
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

    #[test]
    fn orphans_of_dead_writers_are_removed_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let live = spool.begin(b"").unwrap();
        let dead = format!("1.M1P{}Q0{OWN_MARK}.{}", u32::MAX - 1, spool.host);
        let foreign = format!("1.M1P{}Q0.{}", u32::MAX - 1, spool.host);
        for n in [&dead, &foreign] {
            fs::write(dir.path().join(n), b"x").unwrap();
        }
        spool.clean();
        assert!(live.path.exists(), "a live writer's file was removed");
        assert!(!dir.path().join(&dead).exists(), "our dead writer's file stayed");
        assert!(dir.path().join(&foreign).exists(), "another program's file was removed");
        assert_eq!(orphan_pid(&dead, &spool.host), Some(u32::MAX - 1));
    }

    #[test]
    fn unique_names_and_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let a = spool.begin(b"Received: x\n").unwrap();
        let b = spool.begin(b"").unwrap();
        assert_ne!(a.name, b.name);
        assert!(!a.name.contains('/') && !a.name.contains(':'));
        let f = spool.finish(a).unwrap();
        assert_eq!(fs::read(&f.path).unwrap(), b"Received: x\n");
        spool.discard(b);
        spool.discard_finished(f);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
