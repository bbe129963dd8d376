//! mbox delivery (mboxrd): a `From ` line before each message, lines that
//! match `>*From ` get one more `>`, a blank line after each message.
//!
//! Locking interoperates with mutt, procmail and Dovecot: a dotlock
//! (`PATH.lock`, created exclusively, holding our PID; stale when that
//! process is gone or after 5 minutes) and a POSIX fcntl write lock on the
//! whole file. A batch is appended and fsync'd as
//! one; if anything fails, the file is truncated back to its old length, so
//! the mbox is never left with half a message.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::envelope;
use crate::error::{Error, Result, delivery};

/// How long to wait for another program's lock.
const LOCK_WAIT: Duration = Duration::from_secs(30);
/// A dotlock older than this is considered left behind by a crash.
const STALE: Duration = Duration::from_secs(300);

/// An mbox file.
#[derive(Debug, Clone)]
pub struct Mbox {
    path: PathBuf,
}

impl Mbox {
    /// An mbox at `path` (created on first delivery, mode 0600).
    /// The mbox at `path`, checked before anything is fetched: it must be
    /// (or be creatable as) a regular file we can append to, in a directory
    /// that exists.
    pub fn open(path: &Path) -> Result<Mbox> {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(Error::Delivery(format!(
                "mbox {}: the directory {} does not exist",
                path.display(),
                parent.display()
            )));
        }
        match std::fs::metadata(path) {
            Ok(m) if !m.is_file() => {
                return Err(Error::Delivery(format!("mbox {} is not a regular file", path.display())));
            }
            Ok(_) => {
                OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(|e| delivery(format!("cannot append to mbox {}", path.display()), e))?;
            }
            Err(_) => {
                // Creatable? The directory must be writable for the file
                // and for its dotlock.
                rustix::fs::access(parent, rustix::fs::Access::WRITE_OK).map_err(|e| {
                    Error::Delivery(format!("mbox {}: cannot create it in {}: {e}", path.display(), parent.display()))
                })?;
            }
        }
        Ok(Mbox { path: path.to_path_buf() })
    }

    /// Appends every message of the batch (staged files), durably, or
    /// none. It blocks (waiting for a dotlock, fsync): run it off the
    /// async workers.
    pub fn deliver(&self, batch: &[PathBuf]) -> Result<()> {
        let _dot = DotLock::take(&self.path)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| delivery(format!("cannot open mbox {}", self.path.display()), e))?;
        fcntl_lock(&file, &self.path)?;
        let old_len = file.metadata().map_err(|e| delivery("cannot stat mbox", e))?.len();
        let result = self.append_all(&mut file, old_len, batch);
        if let Err(e) = result {
            // Never leave half a message: back to the old length.
            let undo = file.set_len(old_len).and_then(|_| file.sync_all());
            if let Err(u) = undo {
                return Err(Error::Delivery(format!(
                    "{e}; and truncating {} back to {old_len} bytes failed: {u} — check the end of that mbox",
                    self.path.display()
                )));
            }
            return Err(e);
        }
        Ok(())
    }

    fn append_all(&self, file: &mut File, old_len: u64, batch: &[PathBuf]) -> Result<()> {
        let ctx = |e| delivery(format!("cannot write mbox {}", self.path.display()), e);
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, &mut *file);
        if old_len > 0 {
            // Messages are separated by a blank line; add what is missing.
            let mut f = File::open(&self.path).map_err(ctx)?;
            let tail_len = old_len.min(2);
            f.seek(SeekFrom::Start(old_len - tail_len)).map_err(ctx)?;
            let mut tail = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut tail).map_err(ctx)?;
            let missing: &[u8] = match tail.as_slice() {
                [.., b'\n', b'\n'] => b"",
                [b'\n'] => b"",
                [.., b'\n'] => b"\n",
                _ => b"\n\n",
            };
            out.write_all(missing).map_err(ctx)?;
        }
        for msg in batch {
            let env = envelope::read(msg).map_err(ctx)?;
            let sender = if env.sender.is_empty() { "MAILER-DAEMON".to_string() } else { env.sender };
            let date = chrono::Local::now().format("%a %b %e %H:%M:%S %Y");
            writeln!(out, "From {sender} {date}").map_err(ctx)?;
            let reader = BufReader::with_capacity(128 * 1024, File::open(msg).map_err(ctx)?);
            for line in reader.split(b'\n') {
                let line = line.map_err(ctx)?;
                if is_from_line(&line) {
                    out.write_all(b">").map_err(ctx)?;
                }
                out.write_all(&line).map_err(ctx)?;
                out.write_all(b"\n").map_err(ctx)?;
            }
            out.write_all(b"\n").map_err(ctx)?;
        }
        out.flush().map_err(ctx)?;
        drop(out);
        crate::fault::point("mbox-written");
        file.sync_all().map_err(ctx)?;
        Ok(())
    }
}

/// `>*From ` at the start of a line (mboxrd quoting).
fn is_from_line(line: &[u8]) -> bool {
    let rest = &line[line.iter().take_while(|&&b| b == b'>').count()..];
    rest.starts_with(b"From ")
}

fn fcntl_lock(file: &File, path: &Path) -> Result<()> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match rustix::fs::fcntl_lock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => {
                return Err(Error::Delivery(format!(
                    "mbox {} stayed locked (fcntl) by another program for {} s: {e}",
                    path.display(),
                    LOCK_WAIT.as_secs()
                )));
            }
        }
    }
}

/// `PATH.lock`, created with O_EXCL; removed on drop.
struct DotLock {
    path: PathBuf,
}

impl DotLock {
    fn take(mbox: &Path) -> Result<DotLock> {
        let mut name = mbox.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
                Ok(mut f) => {
                    // The PID lets the next run see that a crashed holder is gone.
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(DotLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let old = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() > STALE);
                    // Only a real PID says who holds it: procmail's lockfile
                    // writes "0", mutt nothing; such a lock goes stale by
                    // age alone.
                    let holder_gone = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok())
                        .filter(|pid| *pid > 1)
                        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
                    let stale = old || holder_gone;
                    if stale {
                        tracing::warn!("removing stale lock {}", path.display());
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if std::time::Instant::now() > deadline {
                        return Err(Error::Delivery(format!(
                            "mbox lock {} held by another program for {} s",
                            path.display(),
                            LOCK_WAIT.as_secs()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(delivery(format!("cannot create lock {}", path.display()), e)),
            }
        }
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::spool::{Finished, Spool};

    fn staged(spool: &Spool, content: &[u8]) -> Finished {
        let mut s = spool.begin(b"").unwrap();
        s.write(content).unwrap();
        spool.finish(s).unwrap()
    }

    /// Regression: an `mbox:` path problem was found only after fetching.
    #[test]
    fn an_mbox_path_problem_is_found_before_fetching() {
        let dir = tempfile::tempdir().unwrap();
        let e = Mbox::open(&dir.path().join("no/such/dir/mbox")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = Mbox::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(Mbox::open(&dir.path().join("mbox")).is_ok());
    }

    #[test]
    fn mboxrd_quoting_and_separation() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let mbox = Mbox::open(&dir.path().join("mbox")).unwrap();
        let a = staged(&spool, b"Return-Path: <a@x>\nSubject: a\n\nFrom here\n>From there\nno newline");
        let b = staged(&spool, b"From: b@y\n\nbody\n");
        mbox.deliver(&[a.path.clone(), b.path.clone()]).unwrap();
        let text = std::fs::read_to_string(dir.path().join("mbox")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("From a@x "), "{text}");
        assert_eq!(&lines[1..7], ["Return-Path: <a@x>", "Subject: a", "", ">From here", ">>From there", "no newline"]);
        assert_eq!(lines[7], "");
        assert!(lines[8].starts_with("From b@y "), "{text}");
        assert!(text.ends_with("body\n\n"));
        assert!(!dir.path().join("mbox.lock").exists());
    }

    #[test]
    fn a_failed_append_leaves_the_mbox_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let path = dir.path().join("mbox");
        std::fs::write(&path, "From x Sat Nov 21 12:00:00 2026\nSubject: old\n\nold\n\n").unwrap();
        let good = staged(&spool, b"Subject: new\n\nnew\n");
        let gone = staged(&spool, b"Subject: gone\n\n");
        std::fs::remove_file(&gone.path).unwrap();
        let before = std::fs::read(&path).unwrap();
        assert!(Mbox::open(&path).unwrap().deliver(&[good.path.clone(), gone.path.clone()]).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn dotlock_of_a_dead_process_is_taken_over() {
        // Regression: a killed fetch left its dotlock, and the next run
        // waited 30 s and failed.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mbox");
        std::fs::write(dir.path().join("mbox.lock"), format!("{}\n", u32::MAX - 1)).unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let started = std::time::Instant::now();
        let m = staged(&spool, b"Subject: s\n\nx\n");
        Mbox::open(&path).unwrap().deliver(std::slice::from_ref(&m.path)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!dir.path().join("mbox.lock").exists());
    }

    #[test]
    fn a_held_dotlock_is_waited_for_and_stale_ones_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mbox");
        let lock = dir.path().join("mbox.lock");
        std::fs::write(&lock, "").unwrap();
        let old = SystemTime::now() - Duration::from_secs(600);
        std::fs::File::options().write(true).open(&lock).unwrap().set_modified(old).unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let m = staged(&spool, b"Subject: s\n\nx\n");
        Mbox::open(&path).unwrap().deliver(std::slice::from_ref(&m.path)).unwrap();
        assert!(!lock.exists());
    }
}
