//! Local delivery.
//!
//! Every message is first staged in a [`Spool`] as it streams in; a batch is
//! then delivered as a whole (group commit), and only after that recorded in
//! the ledger and deleted on the server. The sinks:
//!
//! | sink | durable when | a crash can cause |
//! |---|---|---|
//! | Maildir | file fsync'd, renamed into `new/`, `new/` fsync'd | nothing: the ledger's `P` record lets the next run finish the rename |
//! | mbox | the batch is appended and the mbox fsync'd | a duplicate, if killed after the fsync and before the ledger record |
//! | MDA | the MDA exited 0 | a duplicate, if killed after the exit and before the ledger record |
//! | SMTP/LMTP | the server said 2xx to the end of DATA | a duplicate, if killed after that reply and before the ledger record |

pub mod envelope;
pub mod maildir;
pub mod mbox;
pub mod mda;
pub mod smtp;
pub mod spool;

use std::path::Path;
use std::time::Duration;

pub use maildir::Maildir;
pub use mda::Refusal;
pub use spool::{Finished, Spool, Staged, SyncJob};

use crate::config::Delivery;
use crate::error::Result;

/// Where delivered mail goes.
#[derive(Debug)]
pub enum Sink {
    /// A Maildir; staging in its `tmp/`.
    Maildir(Maildir),
    /// An mbox file; staging beside the ledger.
    Mbox(mbox::Mbox, Spool),
    /// An MDA command; staging beside the ledger.
    Mda(mda::Mda, Spool),
    /// An SMTP or LMTP server; staging beside the ledger.
    Smtp(smtp::Smtp, Spool),
}

impl Sink {
    /// Opens the sink for `delivery`; `staging` is the spool directory for
    /// sinks other than Maildir.
    pub fn open(delivery: &Delivery, staging: &Path, recipient: &str, timeout: Duration) -> Result<Sink> {
        Ok(match delivery {
            Delivery::Maildir(p) => Sink::Maildir(Maildir::open(p)?),
            Delivery::Mbox(p) => Sink::Mbox(mbox::Mbox::open(p)?, Spool::open_private(staging)?),
            Delivery::Mda(cmd) => Sink::Mda(mda::Mda::new(cmd, recipient, timeout)?, Spool::open_private(staging)?),
            Delivery::Smtp(e) => {
                Sink::Smtp(smtp::Smtp::new(e.clone(), false, recipient, timeout), Spool::open_private(staging)?)
            }
            Delivery::Lmtp(e) => {
                Sink::Smtp(smtp::Smtp::new(e.clone(), true, recipient, timeout), Spool::open_private(staging)?)
            }
        })
    }

    /// The sink for `--check`: nothing is created (no Maildir, no spool),
    /// since nothing is delivered.
    pub fn for_check(delivery: &Delivery, staging: &Path, recipient: &str, timeout: Duration) -> Result<Sink> {
        Ok(match delivery {
            Delivery::Maildir(p) => Sink::Maildir(Maildir::at(p)),
            Delivery::Mbox(p) => Sink::Mbox(mbox::Mbox::open(p)?, Spool::at(staging)),
            Delivery::Mda(cmd) => Sink::Mda(mda::Mda::new(cmd, recipient, timeout)?, Spool::at(staging)),
            Delivery::Smtp(e) => Sink::Smtp(smtp::Smtp::new(e.clone(), false, recipient, timeout), Spool::at(staging)),
            Delivery::Lmtp(e) => Sink::Smtp(smtp::Smtp::new(e.clone(), true, recipient, timeout), Spool::at(staging)),
        })
    }

    /// Where messages are staged.
    pub fn spool(&self) -> &Spool {
        match self {
            Sink::Maildir(m) => m.spool(),
            Sink::Mbox(_, s) | Sink::Mda(_, s) | Sink::Smtp(_, s) => s,
        }
    }

    /// The Maildir, for the sink that can recover interrupted deliveries.
    pub fn maildir(&self) -> Option<&Maildir> {
        match self {
            Sink::Maildir(m) => Some(m),
            _ => None,
        }
    }

    /// Delivers a batch to a sink other than Maildir. The outer error means
    /// nothing of the batch was delivered; the inner results are per message.
    pub async fn deliver(&self, batch: &[Finished]) -> Result<Vec<std::result::Result<(), Refusal>>> {
        match self {
            Sink::Maildir(_) => unreachable!("Maildir batches go through sync, prepare and publish"),
            Sink::Mbox(m, _) => {
                // Dotlock waits and fsyncs block: not on the async workers.
                let (m, paths) = (m.clone(), batch.iter().map(|f| f.path.clone()).collect::<Vec<_>>());
                on_disk("the mbox delivery", move || m.deliver(&paths)).await?;
                Ok(batch.iter().map(|_| Ok(())).collect())
            }
            Sink::Mda(m, _) => {
                let mut out = Vec::with_capacity(batch.len());
                for f in batch {
                    out.push(m.deliver(f).await?);
                }
                Ok(out)
            }
            Sink::Smtp(s, _) => s.deliver(batch).await,
        }
    }
}

impl Sink {
    /// Delivers one message that sshmail writes itself (a notice of mail
    /// not sent), durably, the way a fetched one goes: staged, synced, then
    /// published or handed on. `write` fills the staged file.
    pub async fn deliver_one(&self, write: impl FnOnce(&mut Staged) -> Result<()>) -> Result<()> {
        let mut staged = self.spool().begin(b"")?;
        write(&mut staged)?;
        let finished = self.spool().finish(staged)?;
        let batch = [finished];
        self.spool().sync(&batch).await?;
        match self.maildir() {
            Some(m) => m.publish(None, &batch),
            None => match self.deliver(&batch).await?.pop() {
                Some(Err(refusal)) => Err(crate::error::Error::Delivery(refusal.text().to_string())),
                _ => Ok(()),
            },
        }
    }
}

/// Runs local disk work that blocks (fsyncs, renames, lock waits, directory
/// scans) on the runtime's blocking threads, so the async workers go on
/// with other tasks; `what` names it if the thread itself fails.
pub async fn on_disk<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> crate::error::Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| crate::error::Error::Delivery(format!("{what} failed: {e}")))?
}
