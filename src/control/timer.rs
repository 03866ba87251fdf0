//! Timers as an enum plus a fixed table (quinn's `connection/timer.rs` pattern).
//!
//! The sans-IO core never reads the clock: it arms deadlines computed from the `now` it is given,
//! and [`TimerTable::next_timeout`] tells the driver when to call back.

use std::time::Instant;

/// The timers of one one-to-one call, push or pull (TS 24.581 §11; `docs/transmission-control.md`
/// in the repository, "Timers and counters").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "ha",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum Timer {
    /// T4 "Transmission Granted": retransmit Granted until the first media packet (C4 times).
    T4Granted,
    /// T3 "Transmission Revoke": retransmit Revoked while the revoked party keeps sending.
    T3Revoke,
    /// Maximum transmission duration (the Duration field of Granted); expiry: Revoked #2.
    MaxDuration,
    /// No media from the granted caller for this long: the transmission is complete.
    MediaInactivity,
    /// T1 (private-call hang timer): the safety net while no media has flowed.
    T1Hang,
    /// The callee never answered the offer.
    OfferTimeout,
}

impl Timer {
    /// Every timer, in table order.
    pub const VALUES: [Timer; 6] = [
        Timer::T4Granted,
        Timer::T3Revoke,
        Timer::MaxDuration,
        Timer::MediaInactivity,
        Timer::T1Hang,
        Timer::OfferTimeout,
    ];

    const fn index(self) -> usize {
        self as usize
    }
}

/// One optional deadline per [`Timer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TimerTable {
    data: [Option<Instant>; Timer::VALUES.len()],
}

impl TimerTable {
    /// Arms (or re-arms) `timer` to fire at `at`.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        if let Some(slot) = self.data.get_mut(timer.index()) {
            *slot = Some(at);
        }
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: Timer) {
        if let Some(slot) = self.data.get_mut(timer.index()) {
            *slot = None;
        }
    }

    /// Disarms every timer.
    pub fn stop_all(&mut self) {
        self.data = Default::default();
    }

    /// The deadline of `timer`, if armed.
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.data.get(timer.index()).copied().flatten()
    }

    /// The earliest armed deadline.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.data.iter().filter_map(|t| *t).min()
    }

    /// Every armed timer with the time left until it fires at `now`, in ms rounded up (for a
    /// snapshot: an `Instant` means nothing in another process).
    pub fn remaining_ms(&self, now: Instant) -> Vec<(Timer, u64)> {
        Timer::VALUES
            .iter()
            .filter_map(|&t| {
                self.get(t)
                    .map(|at| (t, crate::control::snapshot::ms_left(now, at)))
            })
            .collect()
    }

    /// A table with each of `timers` armed that many ms after `now` (the inverse of
    /// [`remaining_ms`](Self::remaining_ms)).
    pub fn from_remaining_ms(now: Instant, timers: &[(Timer, u64)]) -> Self {
        let mut t = TimerTable::default();
        for &(timer, ms) in timers {
            t.set(timer, now + std::time::Duration::from_millis(ms));
        }
        t
    }

    /// Disarms and returns the earliest timer due at `now`, if any (call until `None`).
    pub fn pop_expired(&mut self, now: Instant) -> Option<Timer> {
        let (timer, _) = Timer::VALUES
            .iter()
            .filter_map(|&t| self.get(t).filter(|&at| at <= now).map(|at| (t, at)))
            .min_by_key(|&(_, at)| at)?;
        self.stop(timer);
        Some(timer)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the test's own epoch
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_and_disarmed_on_pop() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::T1Hang, t0 + Duration::from_secs(30));
        t.set(Timer::T4Granted, t0 + Duration::from_secs(1));
        t.set(Timer::MaxDuration, t0 + Duration::from_secs(2));
        assert_eq!(t.next_timeout(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.pop_expired(t0), None);
        let now = t0 + Duration::from_secs(5);
        assert_eq!(t.pop_expired(now), Some(Timer::T4Granted));
        assert_eq!(t.pop_expired(now), Some(Timer::MaxDuration));
        assert_eq!(t.pop_expired(now), None);
        assert_eq!(t.get(Timer::T1Hang), Some(t0 + Duration::from_secs(30)));
        t.stop(Timer::T1Hang);
        assert_eq!(t.next_timeout(), None);
    }
}
