//! The daemon's event feed, for `sshmail status --follow`: what the tasks,
//! the SSH pool and the outbox report, broadcast to every follower. The
//! buffer is bounded: a follower that reads too slowly loses the oldest
//! events and is told how many ([`FeedEvent::Dropped`]); nothing that
//! reports ever waits for a follower.

use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::sync::broadcast;

use crate::control::protocol::{Reply, Response, VERSION};
use crate::control::status::{FeedEvent, Stamp};
use crate::stop::Stop;

/// Events kept for a follower that has not read them yet.
const BUFFERED: usize = 1024;

/// The feed.
pub struct Feed {
    tx: broadcast::Sender<Arc<FeedEvent>>,
}

impl Default for Feed {
    fn default() -> Feed {
        Feed { tx: broadcast::channel(BUFFERED).0 }
    }
}

impl Feed {
    /// Sends `event` to every follower (nothing when none follows).
    pub fn send(&self, event: FeedEvent) {
        if self.followed() {
            let _ = self.tx.send(Arc::new(event));
        }
    }

    /// Whether anyone follows: only then are new messages' headers read
    /// for the feed.
    pub fn followed(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Streams the events about `accounts` (all when empty; those about
    /// no account always) to a follower, until it goes away or `end`.
    /// `first` is the first event sent ([`FeedEvent::Following`]).
    pub async fn follow(&self, stream: BufReader<UnixStream>, accounts: &[String], first: FeedEvent, end: Stop) {
        let mut events = self.tx.subscribe();
        let (mut from, mut to) = stream.into_inner().into_split();
        let line = |response: Response| {
            let mut out = serde_json::to_vec(&Reply { version: VERSION, response }).unwrap_or_default();
            out.push(b'\n');
            out
        };
        let mut hello = line(Response::Done);
        hello.extend(line(Response::Event { event: Box::new(first) }));
        if to.write_all(&hello).await.is_err() {
            return;
        }
        let mut sink = [0u8; 64];
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                // The follower closed its end.
                n = from.read(&mut sink) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                },
                _ = end.wait() => return,
            };
            let event = match event {
                Ok(e) if accounts.is_empty() || e.account().is_none_or(|a| accounts.iter().any(|x| x == a)) => e,
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(count)) => {
                    Arc::new(FeedEvent::Dropped { at: Stamp::now(), count })
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let out = line(Response::Event { event: Box::new((*event).clone()) });
            let written = tokio::select! {
                w = to.write_all(&out) => w.is_ok(),
                _ = end.wait() => false,
            };
            if !written {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt as _;

    /// A follower that stops reading holds up nobody: events sent while
    /// it stalls never wait for it; once it reads again it is told how
    /// many it lost, and gets the newest ones.
    #[tokio::test]
    async fn a_stalled_follower_loses_the_oldest_events_is_told_how_many_and_holds_up_nobody() {
        let feed = Arc::new(Feed::default());
        let (ours, theirs) = UnixStream::pair().unwrap();
        let stop = Stop::new();
        let following = {
            let (feed, stop) = (feed.clone(), stop.clone());
            tokio::spawn(async move {
                let first = FeedEvent::Following { at: Stamp::now(), folders: Vec::new() };
                feed.follow(BufReader::new(ours), &[], first, stop).await;
            })
        };
        while !feed.followed() {
            tokio::task::yield_now().await;
        }
        let event = |i: usize| FeedEvent::Outbox {
            at: Stamp::now(),
            id: i.to_string(),
            outcome: "queued".into(),
            text: Some("x".repeat(1000)),
        };
        // Far more than the socket and the buffer hold, nobody reading.
        for i in 0..5000 {
            feed.send(event(i));
            if i % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let mut lines = BufReader::new(theirs).lines();
        let (mut dropped, mut last) = (0u64, String::new());
        while last != "4999" {
            let line = lines.next_line().await.unwrap().expect("a line");
            let reply: Reply = serde_json::from_str(&line).unwrap();
            match reply.response {
                Response::Event { event } => match *event {
                    FeedEvent::Dropped { count, .. } => dropped += count,
                    FeedEvent::Outbox { id, .. } => last = id,
                    _ => {}
                },
                Response::Done => {}
                other => panic!("{other:?}"),
            }
        }
        assert!(dropped > 0, "nothing was dropped for a reader that stalled");
        stop.request();
        following.await.unwrap();
    }
}
