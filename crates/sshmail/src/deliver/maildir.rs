//! Maildir delivery (<https://cr.yp.to/proto/maildir.html>).
//!
//! A message is written to `tmp/` (the Maildir's [`Spool`]) under a unique
//! name as it arrives, then a batch is made durable in three steps, in this
//! order:
//!
//! 1. [`Spool::sync`]: fdatasync every staged file;
//! 2. (the caller records `P key name` in the ledger and fsyncs it);
//! 3. [`Maildir::publish`]: rename each into `new/`, then fsync `new/`.
//!
//! A crash after 1 leaves complete files in `tmp/` that no reader sees; after
//! 2 the ledger knows their names, so [`Maildir::recover`] finishes the job
//! on the next run instead of fetching again: no loss, no duplicate.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::spool::{Finished, Spool};
use crate::error::{Result, delivery};
use crate::fault;
use crate::ledger::sync_dir;

/// A Maildir on local disk.
#[derive(Debug)]
pub struct Maildir {
    root: PathBuf,
    spool: Spool,
}

impl Maildir {
    /// Opens a Maildir, creating it (mode 0700) if it does not exist.
    pub fn open(root: &Path) -> Result<Maildir> {
        create_dirs(root)?;
        Ok(Maildir { root: root.to_path_buf(), spool: Spool::open(&root.join("tmp"))? })
    }

    /// The Maildir's root.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Its `tmp/`, where messages are staged.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// The directory a message goes to: the Maildir, or a Maildir++
    /// subfolder (`.NAME`, created on demand).
    fn folder_dir(&self, subfolder: Option<&str>) -> Result<PathBuf> {
        let Some(sub) = subfolder else { return Ok(self.root.clone()) };
        let dir = self.root.join(sub);
        create_dirs(&dir)?;
        // Maildir++ readers (Dovecot, Courier) look for this marker.
        let marker = dir.join("maildirfolder");
        if !marker.exists() {
            fs::write(&marker, b"").map_err(|e| delivery(format!("cannot create {}", marker.display()), e))?;
        }
        Ok(dir)
    }

    /// The ledger token for a message staged as `name` and published into
    /// `subfolder`.
    pub fn token(&self, subfolder: Option<&str>, name: &str) -> String {
        match subfolder {
            Some(sub) => format!("{}/{name}", crate::ledger::percent_encode(sub)),
            None => name.to_string(),
        }
    }

    /// Step 3: moves the batch into `new/` (of the Maildir, or of a
    /// Maildir++ subfolder) and makes the renames durable.
    pub fn publish(&self, subfolder: Option<&str>, batch: &[Finished]) -> Result<()> {
        let dir = self.folder_dir(subfolder)?;
        for f in batch {
            self.publish_one(&dir, &f.name)?;
            fault::point("maildir-renamed");
        }
        sync_dir(&dir.join("new")).map_err(|e| delivery("cannot sync Maildir new/", e))?;
        fault::point("maildir-dir-synced");
        Ok(())
    }

    fn publish_one(&self, dir: &Path, name: &str) -> Result<()> {
        let from = self.root.join("tmp").join(name);
        let to = dir.join("new").join(name);
        fs::rename(&from, &to).map_err(|e| delivery(format!("cannot move {} to {}", from.display(), to.display()), e))
    }

    /// After a crash: is the message recorded with `token` delivered?
    /// Finishes a publish that was interrupted. Returns false if it is
    /// nowhere, so the caller fetches it again.
    pub fn recover(&self, token: &str) -> Result<bool> {
        let (subfolder, name) = match token.split_once('/') {
            Some((sub, name)) => (crate::ledger::percent_decode(sub), name),
            None => (None, token),
        };
        let dir = self.folder_dir(subfolder.as_deref())?;
        if dir.join("new").join(name).exists() {
            sync_dir(&dir.join("new")).map_err(|e| delivery("cannot sync Maildir new/", e))?;
            return Ok(true);
        }
        // A reader may have moved it to cur/ and added flags already.
        let prefix = format!("{name}:");
        if let Ok(entries) = fs::read_dir(dir.join("cur")) {
            for e in entries.flatten() {
                let n = e.file_name();
                let n = n.to_string_lossy();
                if n == name || n.starts_with(&prefix) {
                    return Ok(true);
                }
            }
        }
        if self.root.join("tmp").join(name).exists() {
            self.publish_one(&dir, name)?;
            sync_dir(&dir.join("new")).map_err(|e| delivery("cannot sync Maildir new/", e))?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// Creates `tmp/`, `new/` and `cur/` (mode 0700) where missing.
fn create_dirs(dir: &Path) -> Result<()> {
    for sub in ["tmp", "new", "cur"] {
        let d = dir.join(sub);
        if !d.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(|e| delivery(format!("cannot create Maildir {}", d.display()), e))?;
        }
    }
    Ok(())
}

/// The Maildir++ subfolder for an IMAP folder: none for INBOX, else `.`
/// and the name with `/` turned into `.` (`lists/rust` → `.lists.rust`).
pub fn subfolder_name(folder: &str) -> Option<String> {
    if folder.eq_ignore_ascii_case("INBOX") {
        return None;
    }
    let name = folder.strip_prefix("INBOX/").or_else(|| folder.strip_prefix("INBOX.")).unwrap_or(folder);
    Some(format!(".{}", name.replace('/', ".")))
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

    #[tokio::test]
    async fn durable_before_destructive_staged_messages_are_invisible_until_published() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open(&dir.path().join("Mail")).unwrap();
        let mut s = md.spool().begin(b"").unwrap();
        s.write(b"Subject: a\n\nbody\n").unwrap();
        let f = md.spool().finish(s).unwrap();
        md.spool().sync(std::slice::from_ref(&f)).await.unwrap();
        assert!(read_new(md.path()).is_empty());
        md.publish(None, std::slice::from_ref(&f)).unwrap();
        assert_eq!(read_new(md.path()), vec![b"Subject: a\n\nbody\n".to_vec()]);
        assert_eq!(fs::read_dir(md.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn subfolders_are_maildirplusplus_and_recoverable() {
        assert_eq!(subfolder_name("INBOX"), None);
        assert_eq!(subfolder_name("lists/rust").as_deref(), Some(".lists.rust"));
        assert_eq!(subfolder_name("INBOX.Sent").as_deref(), Some(".Sent"));
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open(dir.path()).unwrap();
        let mut s = md.spool().begin(b"").unwrap();
        s.write(b"x\n").unwrap();
        let f = md.spool().finish(s).unwrap();
        let token = md.token(Some(".My Lists"), &f.name);
        assert!(!token.contains(' '));
        // Crash before publish: recovery puts it into the subfolder.
        assert!(md.recover(&token).unwrap());
        assert!(dir.path().join(".My Lists/new").join(&f.name).exists());
        assert!(dir.path().join(".My Lists/maildirfolder").exists());
    }

    #[tokio::test]
    async fn recover_finishes_or_reports_missing() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open(dir.path()).unwrap();
        let mut s = md.spool().begin(b"").unwrap();
        s.write(b"x\n").unwrap();
        let f = md.spool().finish(s).unwrap();
        md.spool().sync(std::slice::from_ref(&f)).await.unwrap();
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
}
