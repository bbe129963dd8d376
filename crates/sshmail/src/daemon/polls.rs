//! How many accounts the daemon polls at once: as many as the servers keep
//! up with.
//!
//! A poll that finds nothing new is a handful of round trips and a login,
//! so its time says how loaded the way to the server is: near the fastest
//! seen, there is room, and the number of polls at once grows (by a quarter,
//! after half as many quick polls as are allowed at once); well above it,
//! the server or the link is queueing them, and the number shrinks by a
//! quarter (at most once per that many polls, so the polls already under
//! way when it shrank do not shrink it again). A failed poll counts as a
//! slow one. Polls that delivered mail say nothing either way: their time
//! is the mail's. Far from the server (200 ms round trips) a thousand
//! accounts are polled by many at once; on a server that is busy logging
//! them in, by few.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Polls at once to begin with, and the bounds.
const START: usize = 16;
const MIN: usize = 4;
const MAX: usize = 256;

/// A poll this many times the fastest seen is a sign of queueing.
const SLOW: u32 = 3;
/// A poll within this many times the fastest is a sign of room.
const QUICK: u32 = 2;

/// The polls at once, adapting.
pub struct Polls {
    turns: Arc<Semaphore>,
    state: Mutex<State>,
}

/// What a poll's time says, and what is allowed now.
#[derive(Debug, Clone)]
struct State {
    /// Polls allowed at once.
    limit: usize,
    /// Permits to take out of use as polls end (after a shrink).
    owed: usize,
    /// The fastest poll seen (learned again when polls stay slow with the
    /// fewest at once: the server became slower for good).
    fastest: Option<Duration>,
    /// Quick polls since the last change.
    quick: usize,
    /// Polls since the last shrink.
    since_shrink: usize,
}

/// What a poll reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// It found nothing new, in this time.
    Checked(Duration),
    /// It delivered mail: its time says nothing about the way.
    Delivered,
    /// It failed.
    Failed,
}

impl State {
    fn new() -> State {
        State { limit: START, owed: 0, fastest: None, quick: 0, since_shrink: usize::MAX / 2 }
    }

    /// Takes a poll's report; the new limit.
    fn sample(&mut self, sample: Sample) -> usize {
        self.since_shrink = self.since_shrink.saturating_add(1);
        let took = match sample {
            Sample::Delivered => return self.limit,
            Sample::Failed => None,
            Sample::Checked(took) => Some(took),
        };
        if let Some(took) = took {
            let fastest = self.fastest.map_or(took, |f| f.min(took));
            self.fastest = Some(fastest);
            if took <= fastest * QUICK {
                self.quick += 1;
                if self.quick * 2 >= self.limit {
                    self.limit = (self.limit + self.limit.div_ceil(4)).min(MAX);
                    self.quick = 0;
                }
                return self.limit;
            }
            if took <= fastest * SLOW {
                return self.limit;
            }
            if self.limit == MIN {
                // Slow with as few at once as allowed: not queueing, the
                // server itself became slower. Its new pace is learned.
                self.fastest = Some(took);
                return self.limit;
            }
        }
        if self.since_shrink >= self.limit {
            self.limit = (self.limit - self.limit / 4).max(MIN);
            self.quick = 0;
            self.since_shrink = 0;
        }
        self.limit
    }
}

impl Default for Polls {
    fn default() -> Polls {
        Polls { turns: Arc::new(Semaphore::new(START)), state: Mutex::new(State::new()) }
    }
}

impl Polls {
    /// A turn to poll, when one is free.
    pub async fn turn(self: &Arc<Polls>) -> Turn {
        let permit = self.turns.clone().acquire_owned().await.expect("the turns are never closed");
        Turn { polls: self.clone(), permit: Some(permit), started: Instant::now() }
    }

    /// Polls allowed at once now.
    #[cfg(test)]
    fn limit(&self) -> usize {
        self.lock().limit
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A turn ended with `sample`: the limit follows, the permits with it.
    fn ended(&self, sample: Sample, permit: OwnedSemaphorePermit) {
        let mut state = self.lock();
        let before = state.limit;
        let now = state.sample(sample);
        if now > before {
            // What is still owed from a shrink is cancelled first.
            let grow = now - before;
            let cancelled = grow.min(state.owed);
            state.owed -= cancelled;
            self.turns.add_permits(grow - cancelled);
        } else {
            state.owed += before - now;
        }
        if state.owed > 0 {
            state.owed -= 1;
            permit.forget();
        }
    }
}

/// A turn to poll; [`Turn::done`] reports how it went. Dropped without a
/// report (the task stopped), it is given back and says nothing.
pub struct Turn {
    polls: Arc<Polls>,
    permit: Option<OwnedSemaphorePermit>,
    started: Instant,
}

impl Turn {
    /// The poll ended: `Some(n)` messages delivered, or `None` failed.
    pub fn done(mut self, delivered: Option<usize>) {
        let sample = match delivered {
            Some(0) => Sample::Checked(self.started.elapsed()),
            Some(_) => Sample::Delivered,
            None => Sample::Failed,
        };
        if let Some(permit) = self.permit.take() {
            self.polls.ended(sample, permit);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            let mut state = self.polls.lock();
            if state.owed > 0 {
                state.owed -= 1;
                permit.forget();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs polls against a model server that takes `base` for a poll while
    /// `capacity` or fewer run at once, and proportionally longer beyond
    /// (it queues them); the limit after `n` polls.
    fn settle(base: Duration, capacity: usize, n: usize) -> usize {
        let mut state = State::new();
        for _ in 0..n {
            let load = state.limit.max(capacity) as u32;
            let took = base * load / capacity as u32;
            state.sample(Sample::Checked(took));
        }
        state.limit
    }

    /// Far from the server, polls take their round trips however many run:
    /// the number at once grows to the bound within one cycle of a
    /// thousand accounts.
    #[test]
    fn polls_at_once_grow_where_the_server_keeps_up() {
        assert_eq!(settle(Duration::from_millis(1000), 10_000, 1000), MAX);
    }

    /// A server that queues logins beyond 24 at once: the number stays
    /// near what it keeps up with, neither at the bound nor at the floor.
    #[test]
    fn polls_at_once_settle_where_the_server_queues() {
        let limit = settle(Duration::from_millis(100), 24, 5000);
        assert!((12..=96).contains(&limit), "{limit}");
    }

    /// Failures shrink the number, down to the floor and no further; mail
    /// delivered changes nothing.
    #[test]
    fn failed_polls_shrink_polls_at_once_to_the_floor() {
        let mut state = State::new();
        assert_eq!(state.sample(Sample::Delivered), START);
        for _ in 0..1000 {
            state.sample(Sample::Failed);
        }
        assert_eq!(state.limit, MIN);
    }

    /// A server that became slower for good (its logins take ten times
    /// as long whatever the load) is learned: the number shrinks to the
    /// floor, the new pace is taken as the fastest, and it grows again.
    #[test]
    fn a_server_slower_for_good_is_learned() {
        let mut state = State::new();
        for _ in 0..200 {
            state.sample(Sample::Checked(Duration::from_millis(100)));
        }
        for _ in 0..5000 {
            state.sample(Sample::Checked(Duration::from_millis(1000)));
        }
        assert_eq!(state.limit, MAX);
    }

    /// The permits follow the limit: after a shrink, ending turns are
    /// taken out of use until as many run as are allowed.
    #[tokio::test]
    async fn permits_follow_the_limit() {
        let polls = Arc::new(Polls::default());
        let mut turns = Vec::new();
        for _ in 0..START {
            turns.push(polls.turn().await);
        }
        // Failures with every turn out: the limit shrinks, and that many of
        // the ending turns are not given back.
        for t in turns.drain(..) {
            t.done(None);
        }
        assert!(polls.limit() < START, "{}", polls.limit());
        assert_eq!(polls.turns.available_permits(), polls.limit());
        // Quick polls: it grows again, and the permits with it.
        for _ in 0..64 {
            let permit = polls.turn().await.permit.take().expect("a turn holds a permit");
            polls.ended(Sample::Checked(Duration::from_millis(100)), permit);
        }
        assert!(polls.limit() > START, "{}", polls.limit());
        assert_eq!(polls.turns.available_permits(), polls.limit());
    }
}
