//! Where a daemon keeps its control socket and lock, and the checks a
//! client makes before it trusts them.
//!
//! The socket lives in `$XDG_RUNTIME_DIR/sshmail/` (a directory of mode
//! 0700, the socket 0600), named `control` for the default config file and
//! `control-HASH` for another; the daemon's lock file beside it holds its
//! PID and config file. Without a runtime directory the socket is under
//! `$TMPDIR`, where another user could have made the directory first and
//! be waiting there: a client checks that the directory is not a symlink,
//! is ours and closed to others, and that the socket is ours.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where a daemon for a config file keeps its socket and lock.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The config file.
    pub config: PathBuf,
    /// The directory (0700).
    pub dir: PathBuf,
    /// The socket.
    pub socket: PathBuf,
    /// The lock file, holding the daemon's PID.
    pub lock: PathBuf,
}

impl Paths {
    /// The paths for the daemon of the config file `given` (the default
    /// one when None).
    pub fn of(given: Option<&Path>) -> Paths {
        let (path, default) = crate::config::config_path(given);
        Paths::for_config(&path, default)
    }

    /// The paths for the daemon of `config` (`default`: the default config
    /// file, whose socket is plainly `control`).
    pub fn for_config(config: &Path, default: bool) -> Paths {
        let dir = crate::config::control_dir();
        let suffix = if default {
            String::new()
        } else {
            let canonical = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
            format!("-{}", crate::ledger::short_hash(&canonical.display().to_string(), 8))
        };
        Paths {
            config: config.to_path_buf(),
            socket: dir.join(format!("control{suffix}")),
            lock: dir.join(format!("daemon{suffix}.lock")),
            dir,
        }
    }

    /// A client's check of the directory before it looks inside: no
    /// symlink, a directory owned by us and closed to others. Says what is
    /// wrong, naming the path.
    pub fn check_dir(&self) -> std::result::Result<(), String> {
        let dir = std::fs::symlink_metadata(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        match crate::owned::problem(&dir, 0o077) {
            Some(why) => Err(refuse(&self.dir, &format!("{why} (700 expected)"))),
            None => Ok(()),
        }
    }

    /// A client's check of the socket file: a socket we own.
    pub fn check_socket(&self) -> std::result::Result<(), String> {
        use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
        let me = rustix::process::geteuid().as_raw();
        let socket = std::fs::symlink_metadata(&self.socket).map_err(|e| format!("{}: {e}", self.socket.display()))?;
        if !socket.file_type().is_socket() {
            return Err(refuse(&self.socket, "is not a socket"));
        }
        if socket.uid() != me {
            return Err(refuse(&self.socket, &format!("is owned by uid {}, not by you (uid {me})", socket.uid())));
        }
        Ok(())
    }

    /// The config files of the other daemons running for this user (their
    /// locks held), for a client that found none for its own.
    pub fn others_running(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("daemon") && name.ends_with(".lock")) || entry.path() == self.lock {
                continue;
            }
            if held(&entry.path()) {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                if let Some(config) = text.lines().nth(1).filter(|c| !c.is_empty()) {
                    found.push(PathBuf::from(config));
                }
            }
        }
        found.sort();
        found
    }

    /// Makes the directory (0700) if needed and checks it is ours and
    /// private.
    pub fn prepare(&self) -> Result<()> {
        let bad = |what: String| Error::Config(format!("control directory {}: {what}", self.dir.display()));
        if !self.dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| bad(format!("cannot create it: {e}")))?;
        }
        let meta = std::fs::symlink_metadata(&self.dir).map_err(|e| bad(e.to_string()))?;
        // Ours and a directory; too open, it is closed here (clients refuse it).
        if let Some(why) = crate::owned::problem(&meta, 0) {
            return Err(bad(format!("it {why}; remove it")));
        }
        use std::os::unix::fs::MetadataExt as _;
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| bad(format!("cannot make it private (chmod 700): {e}")))?;
        }
        Ok(())
    }
}

/// A client's refusal of `path`, for `what` is wrong with it.
fn refuse(path: &Path, what: &str) -> String {
    format!(
        "refusing the control socket: {} {what}; another user may have made it to pose as your daemon. Remove \
         it (or set XDG_RUNTIME_DIR to a private directory) and start the daemon again",
        path.display()
    )
}

/// The daemon's lock: held as long as this lives.
pub struct Lock {
    _file: std::fs::File,
}

impl Lock {
    /// Takes the lock, or says which PID holds it.
    pub fn take(paths: &Paths) -> std::result::Result<Lock, Held> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&paths.lock)
            .map_err(|e| Held::Error(Error::Config(format!("cannot open {}: {e}", paths.lock.display()))))?;
        use rustix::fs::{FlockOperation, flock};
        if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
            if e == rustix::io::Errno::WOULDBLOCK {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(Held::By(text.lines().next().and_then(|pid| pid.trim().parse().ok())));
            }
            return Err(Held::Error(Error::Config(format!("cannot lock {}: {e}", paths.lock.display()))));
        }
        // The PID, and the config file (for a client of another config).
        let text = format!("{}\n{}\n", std::process::id(), paths.config.display());
        let written = file.set_len(0).and_then(|()| file.write_all(text.as_bytes())).and_then(|()| file.sync_data());
        if let Err(e) = written {
            return Err(Held::Error(Error::Config(format!("cannot write {}: {e}", paths.lock.display()))));
        }
        Ok(Lock { _file: file })
    }
}

/// True while a daemon holds the lock file `lock`; looked at without
/// writing it.
pub fn held(lock: &Path) -> bool {
    use rustix::fs::{FlockOperation, flock};
    let Ok(file) = std::fs::File::open(lock) else { return false };
    // A shared lock is refused while the daemon holds its exclusive one;
    // taken, it goes with the file.
    flock(&file, FlockOperation::NonBlockingLockShared) == Err(rustix::io::Errno::WOULDBLOCK)
}

/// Why the lock was not taken.
#[derive(Debug)]
pub enum Held {
    /// Another daemon holds it (its PID, when readable).
    By(Option<u32>),
    /// The lock file could not be used.
    Error(Error),
}
