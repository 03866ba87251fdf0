//! Timers as an enum plus a fixed table (quinn's `connection/timer.rs` pattern).
//!
//! The sans-IO core never reads the clock: it arms deadlines computed from the `now` it is given,
//! and [`TimerTable::next_timeout`] tells the driver when to call back.

use std::time::Instant;

/// The timers of the one-to-one call procedure itself. Transmission control's timers (T1–T11,
/// the maximum duration, media inactivity) are the transmission control server's
/// (`control::server`; `docs/transmission-control.md` in the repository, "Timers and
/// counters").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "ha",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum Timer {
    /// The callee never answered the offer.
    OfferTimeout,
}

impl Timer {
    /// Every timer, in table order.
    pub const VALUES: [Timer; 1] = [Timer::OfferTimeout];

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
            .filter_map(|&t| self.get(t).map(|at| (t, ms_left(now, at))))
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

/// Milliseconds left from `now` until `at`, rounded up (0 when past).
pub(crate) fn ms_left(now: std::time::Instant, at: std::time::Instant) -> u64 {
    let d = at.saturating_duration_since(now);
    let ms = d.as_millis() as u64;
    if d > std::time::Duration::from_millis(ms) {
        ms + 1
    } else {
        ms
    }
}

/// `now` less `ms` milliseconds (`now` itself when the clock does not go back that far).
pub(crate) fn ms_before(now: std::time::Instant, ms: u64) -> std::time::Instant {
    now.checked_sub(std::time::Duration::from_millis(ms))
        .unwrap_or(now)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the test's own epoch
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ms_left_rounds_up() {
        let t0 = Instant::now();
        let d = Duration::from_micros(1500);
        assert_eq!(ms_left(t0, t0 + d), 2);
        assert_eq!(ms_left(t0 + d, t0), 0);
        assert_eq!(ms_left(t0, t0 + Duration::from_secs(3)), 3000);
    }

    #[test]
    fn armed_until_due_then_disarmed_on_pop() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::OfferTimeout, t0 + Duration::from_secs(2));
        assert_eq!(t.next_timeout(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(t.pop_expired(t0), None);
        assert_eq!(
            t.remaining_ms(t0 + Duration::from_millis(500)),
            [(Timer::OfferTimeout, 1500)]
        );
        let now = t0 + Duration::from_secs(5);
        assert_eq!(t.pop_expired(now), Some(Timer::OfferTimeout));
        assert_eq!(t.pop_expired(now), None);
        assert_eq!(t.get(Timer::OfferTimeout), None);
        t.set(Timer::OfferTimeout, now);
        t.stop(Timer::OfferTimeout);
        assert_eq!(t.next_timeout(), None);
    }
}
