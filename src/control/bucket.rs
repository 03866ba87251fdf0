//! One token bucket, sans-IO: the caller says what time it is.
//!
//! Used for every rate limit in the crate: the replies a transmission control server sends to
//! one party ([`super::server`]), and the packets from unknown sources the relay looks at
//! (`relay::StrangerBudget`).

use std::time::Instant;

/// A token bucket: `rate` tokens a second, at most `burst` held, full at the start.
///
/// No clock inside: [`TokenBucket::take`] is given `now`, so tests run it on virtual time.
/// Time going backwards refills nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket refilled at `rate` tokens a second that holds at most `burst` tokens.
    pub const fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            at: None,
        }
    }

    /// Tokens a second.
    pub const fn rate(&self) -> f64 {
        self.rate
    }

    /// Most tokens held.
    pub const fn burst(&self) -> f64 {
        self.burst
    }

    /// Takes one token at `now`; `false` when the bucket is empty.
    #[inline]
    pub fn take(&mut self, now: Instant) -> bool {
        if let Some(at) = self.at {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        }
        if self.at.is_none_or(|at| now > at) {
            self.at = Some(now);
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[allow(clippy::disallowed_methods)] // the test's own epoch; all else is virtual time
    fn t0() -> Instant {
        Instant::now()
    }

    fn taken(b: &mut TokenBucket, now: Instant) -> usize {
        (0..10_000).filter(|_| b.take(now)).count()
    }

    #[test]
    fn starts_full_and_empties_at_the_burst() {
        let t = t0();
        let mut b = TokenBucket::new(200.0, 50.0);
        assert_eq!(taken(&mut b, t), 50);
        assert!(!b.take(t));
    }

    #[test]
    fn refills_at_the_rate_and_never_beyond_the_burst() {
        let t = t0();
        let mut b = TokenBucket::new(200.0, 50.0);
        taken(&mut b, t);
        assert_eq!(taken(&mut b, t + Duration::from_millis(100)), 20);
        // A long silence refills to the burst, not to rate × silence.
        assert_eq!(taken(&mut b, t + Duration::from_secs(60)), 50);
    }

    #[test]
    fn sustained_rate_is_the_rate() {
        let t = t0();
        let mut b = TokenBucket::new(20.0, 40.0);
        // One attempt every millisecond for 10 s: the burst plus 10 s of rate.
        let ok = (0..10_000u64)
            .filter(|ms| b.take(t + Duration::from_millis(*ms)))
            .count();
        assert!((239..=241).contains(&ok), "{ok}");
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let t = t0() + Duration::from_secs(10);
        let mut b = TokenBucket::new(100.0, 1.0);
        assert!(b.take(t));
        assert!(!b.take(t - Duration::from_secs(5)));
        // And the earlier instant does not become the reference: no double refill later.
        assert!(b.take(t + Duration::from_millis(10)));
        assert!(!b.take(t + Duration::from_millis(10)));
    }

    #[test]
    fn zero_rate_is_a_fixed_allowance() {
        let t = t0();
        let mut b = TokenBucket::new(0.0, 3.0);
        assert_eq!(taken(&mut b, t), 3);
        assert_eq!(taken(&mut b, t + Duration::from_secs(3600)), 0);
    }
}
