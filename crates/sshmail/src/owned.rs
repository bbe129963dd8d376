//! Files and directories that must be the user's own: the state directory,
//! the control directory and socket. Another local user who made one of
//! them first could plant links there, swap files, or pose as the daemon;
//! every check of that kind is [`problem`], so the daemon, its clients and
//! the ledger judge a path alike.

use std::fs::Metadata;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::Path;

use crate::error::{Error, Result, delivery};

/// `O_NOFOLLOW`: a file that is a symbolic link is refused (ELOOP), never
/// written through.
pub const NO_FOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;

/// Reads a file that must not be a symbolic link (ELOOP if it is).
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut bytes = Vec::new();
    std::fs::OpenOptions::new().read(true).custom_flags(NO_FOLLOW).open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// What is wrong with `meta` (read without following a link) for a
/// directory of ours: a symbolic link, not a directory, another owner, or
/// any of the mode bits `closed` set (0o077: private; 0o022: nobody else
/// writes). None when it is fine.
pub fn problem(meta: &Metadata, closed: u32) -> Option<String> {
    let me = rustix::process::geteuid().as_raw();
    if meta.file_type().is_symlink() {
        Some("is a symbolic link".into())
    } else if !meta.is_dir() {
        Some("is not a directory".into())
    } else if meta.uid() != me {
        Some(format!("is owned by uid {}, not by you (uid {me})", meta.uid()))
    } else if meta.mode() & closed != 0 {
        Some(format!("has mode {:o}, open to others", meta.mode() & 0o777))
    } else {
        None
    }
}

/// Makes `dir` (mode 0700, whatever the umask) if it is missing, and checks
/// it is a directory of ours that nobody else can write to.
pub fn private_dir(dir: &Path, what: &str) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| delivery(format!("cannot create {what} {}", dir.display()), e))?;
    }
    let meta =
        std::fs::symlink_metadata(dir).map_err(|e| delivery(format!("cannot read {what} {}", dir.display()), e))?;
    match problem(&meta, 0o022) {
        Some(why) => Err(Error::Permissions(format!(
            "refusing the {what} {}: it {why}; make it yours and private (chmod 700), or set state_dir elsewhere",
            dir.display()
        ))),
        None => Ok(()),
    }
}
