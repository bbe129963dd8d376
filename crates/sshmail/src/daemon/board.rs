//! The status board: what every account × folder task of the daemon is
//! doing, kept up to date by the tasks (each reports through a [`Slot`],
//! which is also the fetch's [`Report`]) and read by `sshmail status` and
//! `sshmail poll`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::control::status::{
    AccountStatus, Clients, FeedEvent, FolderStatus, Happened, LastError, Mode, Next, Stamp, Status,
};
use crate::error::{Error, Retry};
use crate::fetch::report::{Event, Quiet, Report, Transfer};

/// Every task's status, by account and folder.
pub struct Board {
    inner: Mutex<Inner>,
    /// What followers (`status --follow`) are told.
    feed: super::feed::Feed,
    /// Desktop notifications.
    notifier: Arc<super::notify::Notifier>,
    /// Bumped at every change, for whoever waits for one (a poll).
    changed: watch::Sender<u64>,
    pid: u32,
    started: Stamp,
    config: String,
}

/// An account's protocol, server and folders; each folder with the number
/// of the slot that owns it, so a task that ends after its account was
/// restarted does not touch its successor's entry.
type Folders = BTreeMap<String, (u64, FolderStatus)>;

struct Inner {
    accounts: BTreeMap<String, (String, String, Folders)>,
    config_error: Option<String>,
    slots: u64,
}

impl Board {
    /// An empty board for the daemon running `config`.
    pub fn new(config: &std::path::Path) -> Arc<Board> {
        Arc::new(Board {
            inner: Mutex::new(Inner { accounts: BTreeMap::new(), config_error: None, slots: 0 }),
            feed: super::feed::Feed::default(),
            notifier: Arc::default(),
            changed: watch::channel(0).0,
            pid: std::process::id(),
            started: Stamp::now(),
            config: config.display().to_string(),
        })
    }

    /// A slot for a task on `folder` of `account`.
    pub fn slot(self: &Arc<Board>, account: &crate::config::Account, folder: &str) -> Arc<Slot> {
        let protocol = format!("{:?}", account.protocol).to_ascii_lowercase();
        let mut inner = self.inner.lock().expect("board lock");
        inner.slots += 1;
        let id = inner.slots;
        let entry = inner.accounts.entry(account.name.clone()).or_default();
        (entry.0, entry.1) = (protocol, account.route_shown());
        entry.2.insert(
            folder.to_string(),
            (
                id,
                FolderStatus {
                    folder: folder.to_string(),
                    mode: Mode::Starting,
                    connected: false,
                    connection: None,
                    peer: None,
                    last_event: None,
                    last_poll: None,
                    next: None,
                    delivered: 0,
                    last_error: None,
                    passes: 0,
                    failures: 0,
                    connects: 0,
                    busy: true,
                    unread_new: None,
                },
            ),
        );
        drop(inner);
        self.bump();
        let notify = account.hooks.notifies(folder).then(|| account.hooks.notify_skip_headers.clone());
        Arc::new(Slot { board: self.clone(), account: account.name.clone(), folder: folder.to_string(), id, notify })
    }

    /// Forgets a slot's folder (its task ended: an account removed or
    /// changed), unless a newer slot took it over.
    fn remove(&self, slot: &Slot) {
        let mut inner = self.inner.lock().expect("board lock");
        if let Some(a) = inner.accounts.get_mut(&slot.account) {
            if a.2.get(&slot.folder).is_some_and(|(id, _)| *id == slot.id) {
                a.2.remove(&slot.folder);
            }
            if a.2.is_empty() {
                inner.accounts.remove(&slot.account);
            }
        }
        drop(inner);
        self.bump();
    }

    /// Records why the config file as it is now was refused (None: taken).
    pub fn config_error(&self, error: Option<String>) {
        self.inner.lock().expect("board lock").config_error = error;
        self.bump();
    }

    /// The status of `accounts` (all when empty).
    pub fn status(&self, accounts: &[String]) -> Status {
        let inner = self.inner.lock().expect("board lock");
        Status {
            pid: self.pid,
            started: self.started.clone(),
            config: self.config.clone(),
            config_error: inner.config_error.clone(),
            accounts: inner
                .accounts
                .iter()
                .filter(|(name, _)| accounts.is_empty() || accounts.contains(name))
                .map(|(name, (protocol, server, folders))| {
                    // The server as it answered, said once: on the account,
                    // and on a folder only where it answered otherwise.
                    let peer = folders.values().find_map(|(_, f)| f.peer.clone());
                    let folders = folders
                        .values()
                        .map(|(_, f)| {
                            let mut f = f.clone();
                            if f.peer == peer {
                                f.peer = None;
                            }
                            f
                        })
                        .collect();
                    AccountStatus {
                        name: name.clone(),
                        protocol: protocol.clone(),
                        server: server.clone(),
                        peer,
                        folders,
                    }
                })
                .collect(),
            endpoints: Vec::new(),
            tunnels: Clients::default(),
            connections: Vec::new(),
        }
    }

    /// The event feed.
    pub fn feed(&self) -> &super::feed::Feed {
        &self.feed
    }

    /// The desktop notifier.
    pub fn notifier(&self) -> &Arc<super::notify::Notifier> {
        &self.notifier
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    fn update(&self, slot: &Slot, f: impl FnOnce(&mut FolderStatus)) {
        let mut inner = self.inner.lock().expect("board lock");
        if let Some((_, s)) = inner
            .accounts
            .get_mut(&slot.account)
            .and_then(|a| a.2.get_mut(&slot.folder))
            .filter(|(id, _)| *id == slot.id)
        {
            f(s);
        }
        drop(inner);
        self.bump();
    }
}

/// One task's place on the board; the fetch reports into it.
pub struct Slot {
    board: Arc<Board>,
    account: String,
    folder: String,
    id: u64,
    /// Its new mail is shown on the desktop, but for messages with these
    /// header fields.
    notify: Option<Vec<String>>,
}

impl Slot {
    /// The account's name.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The folder's name.
    pub fn folder(&self) -> &str {
        &self.folder
    }

    /// A try (a connection, a poll) begins.
    pub fn trying(&self) {
        self.board.update(self, |s| {
            s.busy = true;
            s.next = None;
        });
    }

    /// The try ended with `error`; the next one is in `next_try` (None:
    /// not until the config changes or a poll is asked for).
    pub fn failed(&self, error: &Error, next_try: Option<Duration>) {
        let retry = match error.retry() {
            Retry::Now => "now",
            Retry::Later => "later",
            Retry::Never => "never",
            Retry::Login => "login",
        };
        let text = error.to_string();
        let (account, folder, at) = (self.account.clone(), self.folder.clone(), Stamp::now());
        let waited = self.with_status(|s| s.last_error.as_ref().is_some_and(|e| e.retry == "login")) == Some(true);
        if error.retry() == Retry::Login && !waited && self.notify.is_some() {
            // Told once each time it comes to wait, not on every try.
            let notifier = self.board.notifier.clone();
            let about = format!("{account}/{folder}");
            let summary = format!("{account}: waiting for login");
            let body = format!("The SSH host needs a person: run `sshmail login {account}` on a terminal.");
            tokio::spawn(async move { notifier.alert(&about, &summary, &body).await });
        }
        self.board.feed.send(match error.retry() {
            Retry::Login => FeedEvent::LoginNeeded { at, account, folder, text: text.clone() },
            _ => FeedEvent::Error { at, account, folder, text: text.clone(), retry: retry.to_string() },
        });
        self.board.update(self, |s| {
            s.busy = false;
            s.connected = false;
            s.failures += 1;
            s.last_event = Some(Happened { at: Stamp::now(), what: format!("error: {text}") });
            s.last_error = Some(LastError {
                at: Stamp::now(),
                text,
                retry: retry.to_string(),
                next_try: next_try.map(Stamp::after),
            });
            s.next = next_try.map(|d| Next { at: Stamp::after(d), what: "retry".into() });
        });
    }

    /// A polling task's cycle ended (`problem`: what went wrong with some
    /// messages or folders); the next is in `next`.
    pub fn polled(&self, next: Duration, problem: Option<String>) {
        self.board.update(self, |s| {
            s.busy = false;
            s.connected = false;
            s.mode = Mode::Polling;
            s.last_error = problem.map(|text| LastError {
                at: Stamp::now(),
                text,
                retry: "later".into(),
                next_try: Some(Stamp::after(next)),
            });
            s.next = Some(Next { at: Stamp::after(next), what: "poll".into() });
        });
    }

    /// The task ended: its entry goes.
    pub fn ended(&self) {
        self.board.remove(self);
    }

    /// Its status now.
    pub fn status(&self) -> Option<FolderStatus> {
        self.with_status(FolderStatus::clone)
    }

    /// Passes and failed tries so far: what a poll waits to see grow.
    pub fn tries(&self) -> Option<u64> {
        self.with_status(|s| s.passes + s.failures)
    }

    fn with_status<R>(&self, f: impl FnOnce(&FolderStatus) -> R) -> Option<R> {
        let inner = self.board.inner.lock().expect("board lock");
        inner
            .accounts
            .get(&self.account)
            .and_then(|a| a.2.get(&self.folder))
            .filter(|(id, _)| *id == self.id)
            .map(|(_, s)| f(s))
    }
}

impl Report for Slot {
    fn transfer(&self, what: &str, messages: usize, bytes: u64) -> Box<dyn Transfer> {
        Quiet.transfer(what, messages, bytes)
    }

    fn hears_arrivals(&self) -> bool {
        self.notify.is_some() || self.board.feed.followed()
    }

    fn arrived(&self, batch: &[crate::news::Arrived]) {
        let Some(first) = batch.first() else { return };
        if let Some(skip) = &self.notify {
            let (notifier, batch, skip) = (self.board.notifier.clone(), batch.to_vec(), skip.clone());
            tokio::spawn(async move {
                // Read on a blocking thread: the headers of the batch.
                let shown = tokio::task::spawn_blocking(move || {
                    batch
                        .into_iter()
                        .filter(|m| {
                            m.path.as_ref().is_none_or(|p| !crate::news::Summary::file_matches(p.as_ref(), &skip))
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default();
                notifier.show(&shown).await;
            });
        }
        self.board.feed.send(FeedEvent::New {
            at: Stamp::now(),
            account: first.account.clone(),
            folder: first.folder.clone(),
            count: batch.len(),
            messages: batch.to_vec(),
        });
    }

    fn event(&self, event: Event<'_>) {
        match event {
            Event::Connected { peer, .. } => self.board.feed.send(FeedEvent::Connected {
                at: Stamp::now(),
                account: self.account.clone(),
                folder: self.folder.clone(),
                peer: peer.to_string(),
            }),
            Event::Passed { .. } | Event::Waiting { .. } => {}
        }
        match event {
            Event::Connected { peer, connection } => self.board.update(self, |s| {
                s.connected = true;
                s.connects += 1;
                s.busy = true;
                s.peer = Some(peer.to_string());
                s.connection = connection.map(str::to_string);
                s.last_event = Some(Happened { at: Stamp::now(), what: "connected".to_string() });
            }),
            Event::Passed { folder, delivered, bytes } => {
                if delivered > 0 {
                    tracing::info!(
                        target: "sshmail::daemon",
                        "{}: {folder}: {delivered} new ({})",
                        self.account,
                        crate::fetch::human_bytes(bytes)
                    );
                }
                self.board.update(self, |s| {
                    s.passes += 1;
                    s.delivered += delivered as u64;
                    s.last_error = None;
                    let what = format!("{delivered} new");
                    s.last_poll = Some(Happened { at: Stamp::now(), what: what.clone() });
                    if delivered > 0 {
                        s.last_event = Some(Happened { at: Stamp::now(), what: format!("delivered {what}") });
                    }
                });
            }
            Event::Waiting { idle, until, .. } => self.board.update(self, |s| {
                s.busy = false;
                s.mode = if idle { Mode::Idle } else { Mode::Polling };
                s.next =
                    Some(Next { at: Stamp::after(until), what: if idle { "idle renewal" } else { "poll" }.into() });
            }),
        }
    }
}
