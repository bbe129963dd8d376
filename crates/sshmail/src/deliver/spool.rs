//! A staging directory: messages are written here as they arrive, under
//! unique Maildir-style names, and made durable in batches.
//!
//! A Maildir's `tmp/` is one; every other sink gets one beside the ledger.
//! Nothing in a spool is ever visible to a mail reader; a message cut off
//! mid-transfer is removed, never delivered: a [`Staged`] message that is
//! dropped unfinished (an error, a cancelled task) removes its file.
//!
//! Our names carry the writer's PID and a run token, unique to each
//! [`Spool`] of the process. [`Spool::clean`] removes our files whose
//! writer is gone: another process that has died, or a spool of this
//! process that no longer exists (a daemon's PID lives for months; its
//! earlier cycles' leftovers must go all the same).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, delivery};
use crate::fault;

/// Ends the middle part of our own file names, so that files left behind by
/// a crashed sshmail can be told from other writers' files.
pub const OWN_MARK: &str = "sshmail";

/// The run tokens of this process's spools that exist now.
static LIVE_RUNS: Mutex<Option<HashSet<u64>>> = Mutex::new(None);
/// The next run token.
static NEXT_RUN: AtomicU64 = AtomicU64::new(1);

/// A staging directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    host: String,
    pid: u32,
    /// This spool's run token: what tells its files from those of the
    /// process's earlier spools.
    run: u64,
    seq: AtomicU64,
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Some(live) = LIVE_RUNS.lock().expect("runs lock").as_mut() {
            live.remove(&self.run);
        }
    }
}

/// A message being written; dropped unfinished, its file is removed.
#[derive(Debug)]
pub struct Staged {
    /// The unique file name (for a Maildir also the ledger token).
    pub name: String,
    path: PathBuf,
    file: Option<BufWriter<File>>,
    /// Bytes written.
    pub len: u64,
}

impl Staged {
    /// Appends message bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.len += data.len() as u64;
        let file = self.file.as_mut().expect("a staged file is open until finished");
        file.write_all(data).map_err(|e| delivery(format!("cannot write {}", self.path.display()), e))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// How many of a batch's files are synced at once (each on a blocking
/// thread, each an open descriptor while it is).
pub const SYNCS_AT_ONCE: usize = 16;

/// A staged message that is complete and flushed.
#[derive(Debug)]
pub struct Finished {
    /// The unique file name.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Bytes in the message.
    pub len: u64,
    /// What recognises the message if its server renumbers it, when the
    /// protocol gives one (`fetch::fingerprint`).
    pub fingerprint: Option<String>,
    /// The ledger may name this file (it is about to be recorded as
    /// staged): it stays when dropped, for the recovery of an interrupted
    /// publish. Otherwise dropping it removes it.
    kept: bool,
}

impl Finished {
    /// Keeps the file when this is dropped: the ledger is about to name it.
    pub fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The fdatasyncs of a batch, running on blocking threads.
#[derive(Debug)]
pub struct SyncJob {
    tasks: Vec<tokio::task::JoinHandle<std::result::Result<(), (PathBuf, std::io::Error)>>>,
}

impl SyncJob {
    /// True once every file's sync has ended (well or not).
    pub fn is_finished(&self) -> bool {
        self.tasks.iter().all(tokio::task::JoinHandle::is_finished)
    }

    /// Waits for every sync; the first failure is the error.
    pub async fn wait(self) -> Result<()> {
        let mut first_error = None;
        for t in self.tasks {
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

    /// Opens the staging directory in the state directory (beside the
    /// ledger): it must be ours, private and no symbolic link.
    pub fn open_private(dir: &Path) -> Result<Spool> {
        crate::owned::private_dir(dir, "staging directory")?;
        Ok(Spool::at(dir))
    }

    /// The spool at `dir`, not created (for `--check`, which stages nothing).
    pub fn at(dir: &Path) -> Spool {
        let run = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
        LIVE_RUNS.lock().expect("runs lock").get_or_insert_with(HashSet::new).insert(run);
        Spool {
            dir: dir.to_path_buf(),
            host: hostname_for_names(),
            pid: std::process::id(),
            run,
            seq: AtomicU64::new(0),
        }
    }

    /// Starts a new message, writing `prefix` (a trace header) first.
    pub fn begin(&self, prefix: &[u8]) -> Result<Staged> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}.M{}P{}Q{}R{}{OWN_MARK}.{}",
            now.as_secs(),
            now.subsec_micros(),
            self.pid,
            seq,
            self.run,
            self.host
        );
        let path = self.dir.join(&name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| delivery(format!("cannot create {}", path.display()), e))?;
        let mut staged = Staged { name, path, file: Some(BufWriter::with_capacity(128 * 1024, file)), len: 0 };
        if !prefix.is_empty() {
            staged.write(prefix)?;
        }
        Ok(staged)
    }

    /// Flushes a complete message.
    /// A message that cannot be flushed is removed.
    pub fn finish(&self, mut staged: Staged) -> Result<Finished> {
        let writer = staged.file.take().expect("a staged file is open until finished");
        let (name, path, len) = (std::mem::take(&mut staged.name), staged.path.clone(), staged.len);
        // Flushed and closed: a finished message holds no descriptor.
        if let Err(e) = writer.into_inner() {
            let _ = fs::remove_file(&path);
            return Err(delivery(format!("cannot write {}", path.display()), e.into_error()));
        }
        Ok(Finished { name, path, len, fingerprint: None, kept: false })
    }

    /// Removes a finished message that will not be delivered from here (as
    /// dropping it does, unless it was kept).
    pub fn discard_finished(&self, finished: Finished) {
        let path = finished.path.clone();
        drop(finished);
        let _ = fs::remove_file(path);
    }

    /// Makes every file's content durable, several at a time, on the
    /// runtime's blocking threads (reused, not started per batch).
    pub async fn sync(&self, batch: &[Finished]) -> Result<()> {
        self.start_sync_of(&batch.iter().collect::<Vec<_>>())?.wait().await
    }

    /// Starts making every file's content durable, several at a time, on
    /// the runtime's blocking threads, and returns at once: the transfer
    /// goes on while the disk works. Nothing counts as durable until
    /// [`SyncJob::wait`] returns.
    pub fn start_sync_of(&self, batch: &[&Finished]) -> Result<SyncJob> {
        let chunk = batch.len().div_ceil(SYNCS_AT_ONCE).max(1);
        let mut tasks = Vec::with_capacity(SYNCS_AT_ONCE);
        for part in batch.chunks(chunk) {
            let paths: Vec<PathBuf> = part.iter().map(|f| f.path.clone()).collect();
            tasks.push(tokio::task::spawn_blocking(move || {
                for path in paths {
                    // Opened again to be synced: a batch holds no
                    // descriptor per message, only one per sync running.
                    let synced = OpenOptions::new()
                        .read(true)
                        .custom_flags(crate::owned::NO_FOLLOW)
                        .open(&path)
                        .and_then(|file| file.sync_data());
                    synced.map_err(|e| (path, e))?;
                }
                Ok::<(), (PathBuf, std::io::Error)>(())
            }));
        }
        Ok(SyncJob { tasks })
    }

    /// Removes our own files whose writer is gone (a dead process, or a
    /// spool of this process that no longer exists), and anyone's files
    /// older than 36 hours (the Maildir rule for `tmp/`). Call it after the
    /// ledger's pending entries were finished: their files are a gone
    /// writer's too.
    pub fn clean(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(36 * 3600);
        let live: HashSet<u64> = LIVE_RUNS.lock().expect("runs lock").clone().unwrap_or_default();
        for e in entries.flatten() {
            let name = e.file_name();
            let orphan = match own_writer(&name.to_string_lossy(), &self.host) {
                None => false,
                Some((pid, run)) if pid == self.pid => run.is_some_and(|r| !live.contains(&r)),
                Some((pid, _)) => !Path::new(&format!("/proc/{pid}")).exists(),
            };
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

/// The writer of one of our own names for this host, if it is one: its PID,
/// and its run token (names from before tokens have none).
pub fn own_writer(name: &str, host: &str) -> Option<(u32, Option<u64>)> {
    let mut parts = name.splitn(3, '.');
    let (_, middle, right) = (parts.next()?, parts.next()?, parts.next()?);
    if right != host {
        return None;
    }
    let middle = middle.strip_suffix(OWN_MARK)?;
    let after_p = &middle[middle.find('P')? + 1..];
    let pid = after_p[..after_p.find('Q')?].parse().ok()?;
    let run = after_p.find('R').and_then(|r| after_p[r + 1..].parse().ok());
    Some((pid, run))
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
        assert_eq!(own_writer(&dead, &spool.host), Some((u32::MAX - 1, None)));
    }

    /// A long-lived process (the daemon) never dies, so its own leftovers
    /// are told by the run token: those of a spool that is gone are
    /// removed, those of a spool that lives (another account delivering
    /// into the same Maildir) kept.
    #[test]
    fn durable_before_destructive_orphans_of_this_process_are_told_by_run_not_pid() {
        let dir = tempfile::tempdir().unwrap();
        let earlier = Spool::open(dir.path()).unwrap();
        let left = earlier.begin(b"x").unwrap();
        let left = earlier.finish(left).unwrap();
        let left_path = left.path.clone();
        drop(left);
        drop(earlier);
        let other = Spool::open(dir.path()).unwrap();
        let busy = other.begin(b"y").unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.clean();
        assert!(!left_path.exists(), "a gone spool's file of this process stayed");
        assert!(busy.path.exists(), "a living spool's file was removed");
    }

    /// A message dropped unfinished (an error, a cancelled task) leaves no
    /// file behind.
    #[test]
    fn a_staged_message_dropped_unfinished_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut staged = spool.begin(b"Received: x\n").unwrap();
        staged.write(b"half a message").unwrap();
        drop(staged);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
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
        drop(b);
        spool.discard_finished(f);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
