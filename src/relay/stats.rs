//! Counters. A call's own counters are plain numbers owned by the worker that runs it
//! ([`LegSnapshot`]); each worker also keeps running totals ([`LegCounters`]) that the control
//! plane sums on a scrape without asking the worker: relaxed atomics with a single writer, so an
//! add is a plain load and store (no locked instruction on the forward path).

use std::sync::atomic::{AtomicU64, Ordering};

/// Number of [`DropReason`]s.
pub const DROP_KINDS: usize = DropReason::ALL.len();

/// Adds `n` to a counter only this thread writes.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    /// Media from a party that does not hold the grant (the callee, or the caller when not
    /// granted).
    NotGranted = 0,
    /// An SSRC the leg does not expect.
    UnknownSsrc = 1,
    /// From an address that is neither negotiated nor latched.
    WrongSource = 2,
    /// Not a well-formed RTP/RTCP/transmission control packet.
    Malformed = 3,
    /// SRTP/SRTCP authentication (or replay) check failed.
    AuthFailure = 4,
    /// Over a rate limit (keyframe requests, floods).
    RateLimited = 5,
    /// The kernel would not take it (send buffer full, peer unreachable).
    SendFailed = 6,
    /// Group media from a granted transmitter that nobody receives (no routes, or no receiver
    /// with an address yet).
    NoReceivers = 7,
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 8] = [
        DropReason::NotGranted,
        DropReason::UnknownSsrc,
        DropReason::WrongSource,
        DropReason::Malformed,
        DropReason::AuthFailure,
        DropReason::RateLimited,
        DropReason::SendFailed,
        DropReason::NoReceivers,
    ];

    /// snake_case label for metrics and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::NotGranted => "not_granted",
            DropReason::UnknownSsrc => "unknown_ssrc",
            DropReason::WrongSource => "wrong_source",
            DropReason::Malformed => "malformed",
            DropReason::AuthFailure => "auth_failure",
            DropReason::RateLimited => "rate_limited",
            DropReason::SendFailed => "send_failed",
            DropReason::NoReceivers => "no_receivers",
        }
    }
}

/// Running totals of one party's legs on one worker (single writer: that worker).
#[derive(Debug, Default)]
pub struct LegCounters {
    /// Datagrams received from the party (RTP, RTCP and control).
    pub packets_in: AtomicU64,
    /// Bytes received from the party.
    pub bytes_in: AtomicU64,
    /// Datagrams sent to the party.
    pub packets_out: AtomicU64,
    /// Bytes sent to the party.
    pub bytes_out: AtomicU64,
    /// Drops of packets received from the party, by [`DropReason`].
    pub drops: [AtomicU64; DropReason::ALL.len()],
    /// Times the leg latched to a source other than the negotiated one.
    pub latches: AtomicU64,
}

/// A copy of [`LegCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LegSnapshot {
    /// Datagrams received from the party.
    pub packets_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams sent to the party.
    pub packets_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Drops by [`DropReason`] (index with `reason as usize`).
    pub drops: [u64; DropReason::ALL.len()],
    /// Latches.
    pub latches: u64,
}

impl LegSnapshot {
    /// Drops for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.get(reason as usize).copied().unwrap_or(0)
    }

    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Adds another snapshot (for totals).
    pub fn add(&mut self, o: &LegSnapshot) {
        self.packets_in += o.packets_in;
        self.bytes_in += o.bytes_in;
        self.packets_out += o.packets_out;
        self.bytes_out += o.bytes_out;
        for (a, b) in self.drops.iter_mut().zip(o.drops) {
            *a += b;
        }
        self.latches += o.latches;
    }
}

impl LegSnapshot {
    /// Counts datagrams received from the party.
    #[inline]
    pub(crate) fn add_in(&mut self, packets: u64, bytes: u64) {
        self.packets_in += packets;
        self.bytes_in += bytes;
    }

    /// Counts datagrams sent to the party.
    #[inline]
    pub(crate) fn add_out(&mut self, packets: u64, bytes: u64) {
        self.packets_out += packets;
        self.bytes_out += bytes;
    }

    /// Counts drops by reason.
    #[inline]
    pub(crate) fn add_drops(&mut self, drops: &[u64; DROP_KINDS]) {
        for (c, &n) in self.drops.iter_mut().zip(drops) {
            *c += n;
        }
    }
}

impl LegCounters {
    /// Adds a call's batch (only the worker that owns these totals may call it).
    #[inline]
    pub(crate) fn add(&self, d: &LegSnapshot) {
        bump(&self.packets_in, d.packets_in);
        bump(&self.bytes_in, d.bytes_in);
        bump(&self.packets_out, d.packets_out);
        bump(&self.bytes_out, d.bytes_out);
        for (c, &n) in self.drops.iter().zip(&d.drops) {
            bump(c, n);
        }
        bump(&self.latches, d.latches);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> LegSnapshot {
        let mut drops = [0; DropReason::ALL.len()];
        for (d, c) in drops.iter_mut().zip(&self.drops) {
            *d = c.load(Ordering::Relaxed);
        }
        LegSnapshot {
            packets_in: self.packets_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            packets_out: self.packets_out.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            drops,
            latches: self.latches.load(Ordering::Relaxed),
        }
    }
}
