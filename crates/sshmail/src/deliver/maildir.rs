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

    /// The Maildir at `root` as it is, created by nothing (for `--check`).
    pub fn at(root: &Path) -> Maildir {
        Maildir { root: root.to_path_buf(), spool: Spool::at(&root.join("tmp")) }
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
    fn folder_dir(&self, subfolder: Option<&Subfolder>) -> Result<PathBuf> {
        let Some(sub) = subfolder else { return Ok(self.root.clone()) };
        let dir = self.root.join(&sub.0);
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
    pub fn token(&self, subfolder: Option<&Subfolder>, name: &str) -> String {
        match subfolder {
            Some(sub) => format!("{}/{name}", crate::ledger::percent_encode(&sub.0)),
            None => name.to_string(),
        }
    }

    /// Step 3: moves the batch into `new/` (of the Maildir, or of a
    /// Maildir++ subfolder) and makes the renames durable.
    pub fn publish(&self, subfolder: Option<&Subfolder>, batch: &[Finished]) -> Result<()> {
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
    /// Finishes a publish that was interrupted. Returns where it is now,
    /// or None if it is nowhere, so the caller fetches it again.
    pub fn recover(&self, token: &str) -> Result<Option<PathBuf>> {
        let (subfolder, name) = match token.split_once('/') {
            Some((sub, name)) => {
                let sub = crate::ledger::percent_decode(sub).and_then(|s| Subfolder::checked(&s));
                let Some(sub) = sub else {
                    return Err(crate::error::Error::Delivery(format!("bad subfolder in ledger token {token:?}")));
                };
                (Some(sub), name)
            }
            None => (None, token),
        };
        if !is_one_component(name) {
            return Err(crate::error::Error::Delivery(format!("bad file name in ledger token {token:?}")));
        }
        let dir = self.folder_dir(subfolder.as_ref())?;
        let published = dir.join("new").join(name);
        if published.exists() {
            sync_dir(&dir.join("new")).map_err(|e| delivery("cannot sync Maildir new/", e))?;
            return Ok(Some(published));
        }
        // A reader may have moved it to cur/ and added flags already.
        let prefix = format!("{name}:");
        if let Ok(entries) = fs::read_dir(dir.join("cur")) {
            for e in entries.flatten() {
                let n = e.file_name();
                let n = n.to_string_lossy();
                if n == name || n.starts_with(&prefix) {
                    return Ok(Some(e.path()));
                }
            }
        }
        if self.root.join("tmp").join(name).exists() {
            self.publish_one(&dir, name)?;
            sync_dir(&dir.join("new")).map_err(|e| delivery("cannot sync Maildir new/", e))?;
            return Ok(Some(published));
        }
        Ok(None)
    }

    /// Where a message staged as `name` is once published into
    /// `subfolder`.
    pub fn published(&self, subfolder: Option<&Subfolder>, name: &str) -> PathBuf {
        self.new_dir(subfolder).join(name)
    }

    /// The `new/` of the Maildir, or of a subfolder.
    pub fn new_dir(&self, subfolder: Option<&Subfolder>) -> PathBuf {
        match subfolder {
            Some(sub) => self.root.join(&sub.0).join("new"),
            None => self.root.join("new"),
        }
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

/// A Maildir++ subfolder name: always one path component of the form
/// `.NAME`, never `.` or `..`, without `/`, NUL or control characters, so
/// joined to the Maildir it names a direct child of it. The only ways to
/// make one are [`Subfolder::for_folder`] (from a server's folder name) and
/// [`Subfolder::checked`] (from our own ledger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subfolder(String);

impl Subfolder {
    /// The subfolder for an IMAP folder: none for INBOX, else `.` and the
    /// name with `/` turned into `.` (`lists/rust` → `.lists.rust`).
    /// Folder names come from the server and are untrusted: a name that has
    /// an empty, `.` or `..` level, or a control character, is refused with
    /// the reason.
    pub fn for_folder(folder: &str) -> std::result::Result<Option<Subfolder>, String> {
        if folder.eq_ignore_ascii_case("INBOX") {
            return Ok(None);
        }
        let name = ["INBOX/", "INBOX."]
            .iter()
            .find_map(|p| folder.get(..p.len()).filter(|h| h.eq_ignore_ascii_case(p)).map(|_| &folder[p.len()..]))
            .unwrap_or(folder);
        if folder.chars().any(char::is_control) {
            return Err(format!("the folder name {folder:?} holds control characters"));
        }
        if name.split('/').any(|level| level.is_empty() || level == "." || level == "..") {
            return Err(format!("the folder name {folder:?} has an empty, `.` or `..` level"));
        }
        Subfolder::checked(&format!(".{}", name.replace('/', ".")))
            .map(Some)
            .ok_or_else(|| format!("the folder name {folder:?} has no safe local name"))
    }

    /// A subfolder name read back from our own records, checked again.
    pub fn checked(name: &str) -> Option<Subfolder> {
        let ok = name.starts_with('.') && name != "." && name != ".." && is_one_component(name);
        ok.then(|| Subfolder(name.to_string()))
    }

    /// The directory name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// True if `name` is one path component: not empty, not `.` or `..`, no
/// `/`, no NUL or control characters, at most 255 bytes.
fn is_one_component(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control)
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
        let sub = |f: &str| Subfolder::for_folder(f).unwrap().map(|s| s.0);
        assert_eq!(sub("INBOX"), None);
        assert_eq!(sub("lists/rust").as_deref(), Some(".lists.rust"));
        assert_eq!(sub("INBOX.Sent").as_deref(), Some(".Sent"));
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open(dir.path()).unwrap();
        let mut s = md.spool().begin(b"").unwrap();
        s.write(b"x\n").unwrap();
        let f = md.spool().finish(s).unwrap();
        let token = md.token(Subfolder::checked(".My Lists").as_ref(), &f.name);
        assert!(!token.contains(' '));
        // Crash before publish: recovery puts it into the subfolder.
        assert!(md.recover(&token).unwrap().is_some());
        assert!(dir.path().join(".My Lists/new").join(&f.name).exists());
        assert!(dir.path().join(".My Lists/maildirfolder").exists());
    }

    /// Regression: `.`, `INBOX/.` and `INBOX..` mapped to `..`, so mail was
    /// filed into the Maildir's parent; control characters went into
    /// directory names raw.
    #[test]
    fn regression_what_the_server_names_is_untrusted_hostile_folder_names_are_refused() {
        for bad in [
            ".",
            "..",
            "INBOX/.",
            "INBOX..",
            "INBOX/..",
            "a/../../escape",
            "a//b",
            "/abs",
            "x/",
            "bad\u{1}name",
            "nul\0",
        ] {
            assert!(Subfolder::for_folder(bad).is_err(), "{bad:?} was accepted");
        }
        for bad in ["..", ".", "", "./x", ".a/b", "a", ".a\nb"] {
            assert!(Subfolder::checked(bad).is_none(), "{bad:?} was accepted");
        }
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open(&dir.path().join("Mail")).unwrap();
        assert!(md.recover("%2E%2E/name").is_err(), "a ledger token naming .. was followed");
        assert!(md.recover("..").is_err());
        assert!(!dir.path().join("new").exists());
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
        assert!(md.recover(&f.name).unwrap().is_some());
        assert_eq!(read_new(md.path()).len(), 1);
        // Already published: still delivered, not published twice.
        assert!(md.recover(&f.name).unwrap().is_some());
        assert_eq!(read_new(md.path()).len(), 1);
        // Moved to cur/ with flags by a reader.
        fs::rename(md.path().join("new").join(&f.name), md.path().join("cur").join(format!("{}:2,S", f.name))).unwrap();
        assert!(md.recover(&f.name).unwrap().is_some());
        assert!(md.recover("nonexistent.name").unwrap().is_none());
    }
}
