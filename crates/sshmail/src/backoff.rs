//! Pauses between failed tries: one policy, each user with its numbers.
//!
//! A pause doubles from `first` up to `longest`, give or take a spread (so
//! that tasks that failed together do not try again together). An error
//! of class [`Retry::Now`] (a connection that worked dropped) is retried
//! at once, once; [`Retry::Never`] not at all until something changes.
//! Users: the daemon's tasks (2 s to 2 min, ±25 %), `fetch --idle` (5 s to
//! 5 min), the SSH pool's failed connects (1 s to 60 s, no spread), and
//! the outbox's tries (1 min to 1 h, counted by the entry's tries).

use std::time::Duration;

use crate::error::Retry;

/// A back-off: its numbers, and the failures in a row so far.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    longest: Duration,
    spread: f64,
    failures: u32,
    retried_at_once: bool,
}

impl Backoff {
    /// Pauses from `first` doubling to `longest`, give or take `spread` of
    /// each (0.25: a quarter).
    pub const fn new(first: Duration, longest: Duration, spread: f64) -> Backoff {
        Backoff { first, longest, spread, failures: 0, retried_at_once: false }
    }

    /// The pause after the `n`th failure in a row (1: the first), before
    /// any spread.
    pub fn nth(&self, n: u32) -> Duration {
        self.first.saturating_mul(1 << n.saturating_sub(1).min(16)).min(self.longest)
    }

    /// The pause after one more failure.
    pub fn pause(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        jitter(self.nth(self.failures), self.spread)
    }

    /// The pause before the next try after an error of class `retry`
    /// (None: not until the config changes or a poll is asked for).
    pub fn next(&mut self, retry: Retry) -> Option<Duration> {
        match retry {
            Retry::Never | Retry::Login => None,
            Retry::Now if !self.retried_at_once => {
                self.retried_at_once = true;
                Some(Duration::ZERO)
            }
            _ => Some(self.pause()),
        }
    }

    /// A success (or a session that lasted): the next failure is a first.
    pub fn reset(&mut self) {
        self.failures = 0;
        self.retried_at_once = false;
    }
}

/// `d` give or take `spread` of it (a quarter: 0.25), so that tasks that
/// failed or polled together do not try again together.
pub fn jitter(d: Duration, spread: f64) -> Duration {
    if spread == 0.0 {
        return d;
    }
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() { u16::from_le_bytes(b) } else { 0x8000 };
    let frac = f64::from(r) / f64::from(u16::MAX); // 0..=1
    d.mul_f64(1.0 - spread + 2.0 * spread * frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_retries_a_lost_link_at_once_once_then_grows_with_jitter_and_never_retries_a_refusal() {
        let (first, longest) = (Duration::from_secs(2), Duration::from_secs(120));
        let mut b = Backoff::new(first, longest, 0.25);
        assert_eq!(b.next(Retry::Now), Some(Duration::ZERO));
        let pause = b.next(Retry::Now).unwrap();
        assert!(pause >= first.mul_f64(0.75) && pause <= first.mul_f64(1.25), "{pause:?}");
        let mut last = pause;
        for _ in 0..10 {
            last = b.next(Retry::Later).unwrap();
        }
        assert!(last <= longest.mul_f64(1.25) && last >= longest.mul_f64(0.75), "{last:?}");
        assert_eq!(b.next(Retry::Never), None);
        b.reset();
        assert_eq!(b.next(Retry::Now), Some(Duration::ZERO));
    }

    #[test]
    fn without_spread_the_pauses_double_exactly_up_to_the_longest() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 0.0);
        let pauses: Vec<u64> = (0..8).map(|_| b.pause().as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.nth(1000), Duration::from_secs(60));
    }
}
