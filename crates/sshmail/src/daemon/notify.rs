//! Desktop notifications of new mail (`notify = true`), through the
//! freedesktop notification service on the session D-Bus
//! (`org.freedesktop.Notifications.Notify`), with no program forked.
//!
//! One notification per batch of a folder — "3 new in uni/INBOX", the
//! newest senders and subjects — and a folder's next batch within
//! [`REPLACE_WITHIN`] replaces it with the count so far, so that a flood
//! of 500 messages is one notification, not 500. An account that comes to
//! wait for `sshmail login` is shown too, once each time. Without a
//! session bus nothing is shown, and the log says so once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::news::Arrived;

/// A folder's notification is replaced by its next batch within this.
const REPLACE_WITHIN: Duration = Duration::from_secs(60);
/// Messages named in a notification's body.
const NAMED: usize = 3;
/// The longest the bus may take to connect or to answer.
const BUS_WAIT: Duration = Duration::from_secs(5);

/// The notifier: the session bus (connected on first use) and each
/// folder's notification on screen.
#[derive(Default)]
pub struct Notifier {
    bus: tokio::sync::OnceCell<Option<zbus::Connection>>,
    shown: tokio::sync::Mutex<HashMap<(String, String), Shown>>,
}

/// A folder's notification: its id, what it counts and names, and when.
struct Shown {
    id: u32,
    count: usize,
    named: Vec<String>,
    at: Instant,
}

impl Notifier {
    /// The session bus, connected once; None (said once in the log) when
    /// there is none.
    pub async fn bus(&self) -> Option<&zbus::Connection> {
        self.bus
            .get_or_init(|| async {
                match session_bus().await {
                    Ok(c) => {
                        tracing::info!(target: "sshmail::daemon", "desktop notifications through the session D-Bus");
                        Some(c)
                    }
                    Err(why) => {
                        tracing::warn!(
                            target: "sshmail::daemon",
                            "no session D-Bus ({why}): desktop notifications are off (notify = true needs a desktop \
                             session; under \
                             systemd --user the bus is found by itself)"
                        );
                        None
                    }
                }
            })
            .await
            .as_ref()
    }

    /// Shows (or updates) the notification of `batch`'s folder.
    pub async fn show(&self, batch: &[Arrived]) {
        let Some(first) = batch.first() else { return };
        let Some(bus) = self.bus().await else { return };
        let key = (first.account.clone(), first.folder.clone());
        // One at a time: a folder's next batch replaces what this shows.
        let mut shown = self.shown.lock().await;
        let earlier = shown.remove(&key).filter(|s| s.at.elapsed() < REPLACE_WITHIN);
        let (replaces, before, mut named) = match earlier {
            Some(s) => (s.id, s.count, s.named),
            None => (0, 0, Vec::new()),
        };
        let count = before + batch.len();
        // The newest first.
        let mut newest: Vec<String> = batch.iter().rev().take(NAMED).map(line).collect();
        newest.append(&mut named);
        newest.truncate(NAMED);
        let mut body = newest.join("\n");
        if count > newest.len() {
            body.push_str(&format!("\n… and {} more", count - newest.len()));
        }
        let summary = format!("{count} new in {}/{}", key.0, key.1);
        let about = format!("{}/{}", key.0, key.1);
        let Some(id) = notify(bus, replaces, "mail-unread", &summary, &body, "email.arrived", &about).await else {
            return;
        };
        shown.insert(key, Shown { id, count, named: newest, at: Instant::now() });
    }

    /// Shows a notification of its own (an account waiting for a login).
    pub async fn alert(&self, about: &str, summary: &str, body: &str) {
        if let Some(bus) = self.bus().await {
            notify(bus, 0, "dialog-password", summary, &escape(body), "network.error", about).await;
        }
    }
}

/// The session bus, or why there is none (the error, or its silence),
/// within [`BUS_WAIT`] (for the
/// notifier and for `doctor`).
pub async fn session_bus() -> std::result::Result<zbus::Connection, String> {
    match tokio::time::timeout(BUS_WAIT, zbus::Connection::session()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("it did not answer within {} s", BUS_WAIT.as_secs())),
    }
}

/// One `Notify` call; the notification's id, None when it failed (said in
/// the log, naming `about`).
async fn notify(
    bus: &zbus::Connection,
    replaces: u32,
    icon: &str,
    summary: &str,
    body: &str,
    category: &str,
    about: &str,
) -> Option<u32> {
    let hints: HashMap<&str, zbus::Variant<'_>> =
        HashMap::from([("category", category.into()), ("desktop-entry", "sshmail".into())]);
    let args = ("sshmail", replaces, icon, summary, body, Vec::<&str>::new(), hints, -1i32);
    let call = bus.call_method(
        Some("org.freedesktop.Notifications"),
        "/org/freedesktop/Notifications",
        Some("org.freedesktop.Notifications"),
        "Notify",
        &args,
    );
    match tokio::time::timeout(BUS_WAIT, call).await {
        Ok(Ok(reply)) => Some(reply.body().deserialize::<u32>().unwrap_or(0)),
        Ok(Err(e)) => {
            tracing::warn!(target: "sshmail::daemon", "{about}: the desktop notification failed: {e}");
            None
        }
        Err(_) => {
            tracing::warn!(target: "sshmail::daemon", "{about}: the notification service did not answer");
            None
        }
    }
}

/// A message as a notification names it: sender and subject, with the
/// characters a notification server takes as markup escaped.
fn line(m: &Arrived) -> String {
    let from = m.summary.from.split('<').next().unwrap_or("").trim();
    let from = if from.is_empty() { m.summary.from.as_str() } else { from };
    escape(&format!("{}: {}", crate::term::one_line(from, 60), crate::term::one_line(&m.summary.subject, 100)))
}

/// `&`, `<` and `>` as entities (the body may be read as markup).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
