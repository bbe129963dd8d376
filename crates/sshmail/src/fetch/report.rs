//! How a fetch says what it is doing while it runs. A fetch cycle reports
//! each transfer through a [`Report`]; the terminal's progress bar is one
//! ([`Terminal`]), silence under cron another ([`Quiet`]), and a daemon's
//! status board a third. Besides transfers, a cycle reports [`Event`]s (a
//! connection made, a pass over a folder ended, a wait for news begun),
//! which only the daemon listens to. The fetch itself knows none of them.

use indicatif::{ProgressBar, ProgressStyle};

/// Where a fetch reports its transfers.
pub trait Report: Send + Sync {
    /// A transfer of `messages` messages (`bytes` in all, as the server
    /// announced them) from `what` (an account or a folder) begins.
    fn transfer(&self, what: &str, messages: usize, bytes: u64) -> Box<dyn Transfer>;

    /// Something happened in a cycle; by default nobody listens.
    fn event(&self, _event: Event<'_>) {}

    /// Whether [`Report::arrived`] is listened to: only then is each
    /// delivered message's header read for its summary.
    fn hears_arrivals(&self) -> bool {
        false
    }

    /// A batch of messages is durable and recorded.
    fn arrived(&self, _batch: &[crate::news::Arrived]) {}
}

/// What a cycle reports besides transfers.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// The server was reached: `peer` as named in messages, `connection`
    /// the SSH connection it runs on (`user@host:port #N`), if any.
    Connected {
        /// Who is on the other end.
        peer: &'a str,
        /// Which SSH connection.
        connection: Option<&'a str>,
    },
    /// A pass over `folder` (POP3: the maildrop, named `INBOX`) ended.
    Passed {
        /// The folder.
        folder: &'a str,
        /// Messages delivered by this pass.
        delivered: usize,
        /// Their bytes.
        bytes: u64,
    },
    /// A watch waits for news on `folder`: by IDLE (`idle`), or where the
    /// server has none by NOOP; at most `until` before the next pass.
    Waiting {
        /// The folder.
        folder: &'a str,
        /// IDLE (true) or NOOP polling (false).
        idle: bool,
        /// The longest wait before the next pass.
        until: std::time::Duration,
    },
}

/// One transfer's progress; dropping it ends the transfer.
pub trait Transfer: Send {
    /// `bytes` more arrived.
    fn received(&mut self, bytes: u64);
    /// `done` of the transfer's messages are complete.
    fn messages(&mut self, done: usize);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

struct Nothing;

impl Transfer for Nothing {
    fn received(&mut self, _: u64) {}
    fn messages(&mut self, _: usize) {}
}

impl Report for Quiet {
    fn transfer(&self, _: &str, _: usize, _: u64) -> Box<dyn Transfer> {
        Box::new(Nothing)
    }
}

/// A progress bar on the terminal (stderr), cleared when the transfer ends.
#[derive(Debug, Default, Clone, Copy)]
pub struct Terminal;

struct Bar {
    bar: ProgressBar,
    total: usize,
}

impl Transfer for Bar {
    fn received(&mut self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn messages(&mut self, done: usize) {
        self.bar.set_message(format!("{done}/{}", self.total));
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl Report for Terminal {
    fn transfer(&self, what: &str, messages: usize, bytes: u64) -> Box<dyn Transfer> {
        if messages == 0 {
            return Box::new(Nothing);
        }
        let bar = ProgressBar::new(bytes);
        bar.set_style(
            ProgressStyle::with_template("{prefix} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        bar.set_message(format!("0/{messages}"));
        Box::new(Bar { bar, total: messages })
    }
}
