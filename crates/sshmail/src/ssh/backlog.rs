//! What a channel's peer sends, taken off the SSH connection at once.
//!
//! russh hands each channel's data to a bounded queue and, when that queue
//! is full, waits in the connection's one loop; and it re-opens the SSH
//! window as data arrives, not as it is read. So one reader that stops (a
//! mail client suspended mid-FETCH, a slow MDA) would stop every channel of
//! its connection: the other clients, the daemon's IDLEs, the keepalives.
//!
//! A pump per channel therefore takes every message off the connection as
//! it comes and keeps it here until the reader wants it: in memory up to
//! [`MEMORY`] bytes, beyond that in an unlinked file that only the user can
//! read (in `$XDG_CACHE_HOME/sshmail`), up to [`SPILL_MAX`]. A reader that
//! leaves more than that waiting is cut off: its channel is closed, which
//! loses nothing (the server still has what it was sending). Memory stays
//! bounded per channel whatever the reader does.

use std::collections::VecDeque;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

/// Bytes kept in memory for one channel before the rest goes to disk.
pub const MEMORY: usize = 1 << 20;
/// Bytes kept on disk for one channel before its reader is cut off.
pub const SPILL_MAX: u64 = 2 << 30;
/// The largest piece read back from the disk at once.
const READ_BACK: u64 = 256 * 1024;

/// Why a push was not taken.
#[derive(Debug)]
pub enum Refused {
    /// The reader went away.
    Gone,
    /// The reader left [`SPILL_MAX`] bytes waiting, or the disk refused
    /// them; the text says which.
    Full(String),
}

/// One channel's waiting data, between the pump that fills it and the
/// reader that drains it.
#[derive(Default)]
pub struct Backlog {
    state: Mutex<State>,
    /// Something was pushed, or the end came (for the reader).
    changed: Notify,
    /// Where the spill file goes; the cache directory when None.
    dir: Option<PathBuf>,
}

#[derive(Default)]
struct State {
    memory: VecDeque<Bytes>,
    in_memory: usize,
    spill: Option<Arc<std::fs::File>>,
    /// Read back up to here.
    spill_read: u64,
    /// Written (and readable) up to here.
    spill_written: u64,
    /// A write to the spill file is under way (its bytes not yet counted).
    writing: bool,
    /// No more data comes.
    ended: bool,
    /// The reader is gone.
    gone: bool,
}

impl State {
    fn spilling(&self) -> bool {
        self.writing || self.spill_read < self.spill_written
    }
}

impl Backlog {
    /// A backlog that spills into `dir` (tests), not the cache directory.
    pub fn in_dir(dir: PathBuf) -> Backlog {
        Backlog { dir: Some(dir), ..Backlog::default() }
    }

    /// Bytes waiting (in memory and on disk).
    pub fn waiting(&self) -> u64 {
        let s = self.state.lock().expect("backlog lock");
        s.in_memory as u64 + (s.spill_written - s.spill_read)
    }

    /// Keeps `data` for the reader, after everything kept before it.
    /// Never waits for the reader; waits only for the disk when spilling.
    pub async fn push(&self, data: Bytes) -> Result<(), Refused> {
        let len = data.len() as u64;
        let (file, at) = {
            let mut s = self.state.lock().expect("backlog lock");
            if s.gone {
                return Err(Refused::Gone);
            }
            if !s.spilling() && s.in_memory + data.len() <= MEMORY {
                s.in_memory += data.len();
                s.memory.push_back(data);
                drop(s);
                self.changed.notify_one();
                return Ok(());
            }
            if s.spill_written - s.spill_read + len > SPILL_MAX {
                return Err(Refused::Full(format!(
                    "the reader left more than {} MiB unread",
                    (s.in_memory as u64 + SPILL_MAX) >> 20
                )));
            }
            s.writing = true;
            (s.spill.clone(), s.spill_written)
        };
        let dir = self.dir.clone();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<Arc<std::fs::File>> {
            let file = match file {
                Some(f) => f,
                None => Arc::new(spill_file(dir)?),
            };
            file.write_all_at(&data, at)?;
            Ok(file)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        let mut s = self.state.lock().expect("backlog lock");
        s.writing = false;
        match written {
            Ok(_) if s.gone => Err(Refused::Gone),
            Ok(file) => {
                s.spill = Some(file);
                s.spill_written += len;
                drop(s);
                self.changed.notify_one();
                Ok(())
            }
            Err(e) => Err(Refused::Full(format!("cannot keep the unread data on disk: {e}"))),
        }
    }

    /// Says that no more data comes: the reader gets what is kept, then
    /// the end.
    pub fn end(&self) {
        self.state.lock().expect("backlog lock").ended = true;
        self.changed.notify_one();
    }

    /// Says that the reader is gone: what is kept is dropped, and pushes
    /// are refused.
    pub fn forsake(&self) {
        let mut s = self.state.lock().expect("backlog lock");
        s.gone = true;
        s.memory.clear();
        s.in_memory = 0;
        s.spill = None;
    }

    /// The next piece, in order; None once the end came and all is read.
    pub async fn pop(&self) -> std::io::Result<Option<Bytes>> {
        loop {
            let next = {
                let mut s = self.state.lock().expect("backlog lock");
                if let Some(b) = s.memory.pop_front() {
                    s.in_memory -= b.len();
                    return Ok(Some(b));
                }
                match &s.spill {
                    Some(f) if s.spill_read < s.spill_written => {
                        Some((f.clone(), s.spill_read, (s.spill_written - s.spill_read).min(READ_BACK)))
                    }
                    _ if s.ended && !s.writing => return Ok(None),
                    _ => None,
                }
            };
            let Some((file, at, n)) = next else {
                self.changed.notified().await;
                continue;
            };
            let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
                let mut buf = vec![0u8; n as usize];
                file.read_exact_at(&mut buf, at)?;
                Ok(buf)
            })
            .await
            .map_err(std::io::Error::other)??;
            let mut s = self.state.lock().expect("backlog lock");
            s.spill_read += n;
            if s.spill_read == s.spill_written && !s.writing {
                // Caught up: start the file again from the beginning, and
                // give its blocks back.
                s.spill_read = 0;
                s.spill_written = 0;
                if let Some(f) = &s.spill {
                    let _ = f.set_len(0);
                }
            }
            return Ok(Some(Bytes::from(read)));
        }
    }
}

/// A new unlinked file, readable by the user only, in `dir` or the cache
/// directory.
fn spill_file(dir: Option<PathBuf>) -> std::io::Result<std::fs::File> {
    let dir = dir.unwrap_or_else(crate::config::cache_dir);
    std::fs::create_dir_all(&dir)?;
    tempfile::tempfile_in(&dir)
}

/// Starts the pumps of an open channel and returns the reader's end: what
/// the peer sends goes through a [`Backlog`], what is written to the end
/// goes to the peer (with an EOF when the end is shut down). Every message
/// other than data is handed to `other` (an exec's stderr, exit status).
/// The channel is closed when the reader drops its end; `lease` is held
/// until both directions are done.
pub fn attach(
    channel: russh::Channel<russh::client::Msg>,
    lease: super::lease::Lease,
    mut other: impl FnMut(russh::ChannelMsg) + Send + 'static,
) -> tokio::io::DuplexStream {
    use tokio::io::AsyncWriteExt as _;
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut from_remote, to_remote) = channel.split();
    let to_remote = Arc::new(to_remote);
    let (mut their_read, mut their_write) = tokio::io::split(theirs);
    let backlog = Arc::new(Backlog::default());
    let lease = Arc::new(lease);

    // Off the connection as soon as it comes.
    let (fill, fill_lease, closer) = (backlog.clone(), lease.clone(), to_remote.clone());
    tokio::spawn(async move {
        let mut after_eof = false;
        loop {
            let msg = if after_eof {
                // Collect a late exit status or stderr, a moment only.
                match tokio::time::timeout(std::time::Duration::from_secs(2), from_remote.wait()).await {
                    Ok(m) => m,
                    Err(_) => break,
                }
            } else {
                from_remote.wait().await
            };
            match msg {
                Some(russh::ChannelMsg::Data { data }) if !after_eof => match fill.push(data).await {
                    Ok(()) => {}
                    Err(Refused::Gone) => break,
                    Err(Refused::Full(why)) => {
                        tracing::warn!("closing an SSH channel whose reader stopped: {why}");
                        fill.forsake();
                        let _ = closer.close().await;
                        break;
                    }
                },
                Some(russh::ChannelMsg::Eof) => {
                    fill.end();
                    after_eof = true;
                }
                Some(russh::ChannelMsg::Close) | None => break,
                Some(m) => other(m),
            }
        }
        fill.end();
        drop(fill_lease);
    });

    // To the reader, as fast as it reads.
    let (drain, closer) = (backlog, to_remote.clone());
    tokio::spawn(async move {
        loop {
            match drain.pop().await {
                Ok(Some(piece)) => {
                    if their_write.write_all(&piece).await.is_err() {
                        drain.forsake();
                        let _ = closer.close().await;
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("closing an SSH channel: reading back its unread data: {e}");
                    drain.forsake();
                    let _ = closer.close().await;
                    return;
                }
            }
        }
        let _ = their_write.shutdown().await;
    });

    // From the reader's end to the peer.
    tokio::spawn(async move {
        let mut writer = to_remote.make_writer();
        let _ = tokio::io::copy(&mut their_read, &mut writer).await;
        let _ = to_remote.eof().await;
        drop(lease);
    });
    ours
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(n: usize, seed: u8) -> Bytes {
        Bytes::from((0..n).map(|i| seed.wrapping_add(i as u8)).collect::<Vec<u8>>())
    }

    /// Whatever part of the data went to disk, the reader gets every byte
    /// in the order it came, and memory holds at most MEMORY bytes.
    #[tokio::test]
    async fn bounded_memory_backlog_keeps_order_across_the_spill() {
        let dir = tempfile::tempdir().unwrap();
        let backlog = Arc::new(Backlog::in_dir(dir.path().into()));
        let mut sent = Vec::new();
        // 3 MiB with nobody reading: 1 MiB in memory, the rest on disk.
        for i in 0..96 {
            let p = piece(32 * 1024, i);
            sent.extend_from_slice(&p);
            backlog.push(p).await.unwrap();
            assert!(backlog.state.lock().unwrap().in_memory <= MEMORY);
        }
        assert_eq!(backlog.waiting(), sent.len() as u64);
        assert!(backlog.state.lock().unwrap().spill_written > 0, "nothing went to disk");
        // Read half of it, then push more while the rest is still on disk.
        let mut got = Vec::new();
        while got.len() < sent.len() / 2 {
            got.extend_from_slice(&backlog.pop().await.unwrap().unwrap());
        }
        for i in 0..8 {
            let p = piece(10_000, 200 + i);
            sent.extend_from_slice(&p);
            backlog.push(p).await.unwrap();
        }
        backlog.end();
        while let Some(p) = backlog.pop().await.unwrap() {
            got.extend_from_slice(&p);
        }
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the bytes came out of order");
        // Caught up: the file was emptied.
        assert_eq!(backlog.state.lock().unwrap().spill_written, 0);
    }

    #[tokio::test]
    async fn a_gone_reader_refuses_pushes_and_frees_what_was_kept() {
        let backlog = Backlog::default();
        backlog.push(piece(100, 1)).await.unwrap();
        backlog.forsake();
        assert_eq!(backlog.waiting(), 0);
        assert!(matches!(backlog.push(piece(1, 1)).await, Err(Refused::Gone)));
    }

    #[tokio::test]
    async fn a_spill_that_cannot_be_written_refuses_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"x").unwrap();
        let backlog = Backlog::in_dir(not_a_dir);
        backlog.push(piece(MEMORY, 1)).await.unwrap();
        match backlog.push(piece(10, 2)).await {
            Err(Refused::Full(why)) => assert!(why.contains("on disk"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // What was in memory is still there for the reader.
        assert_eq!(backlog.pop().await.unwrap().unwrap().len(), MEMORY);
    }
}
