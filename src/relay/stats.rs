//! Counters shared between the forwarding threads and the control plane. Each is a relaxed
//! atomic with a single writer (the worker that owns the leg); forwarding adds once per batch.

use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 7] = [
        DropReason::NotGranted,
        DropReason::UnknownSsrc,
        DropReason::WrongSource,
        DropReason::Malformed,
        DropReason::AuthFailure,
        DropReason::RateLimited,
        DropReason::SendFailed,
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
        }
    }
}

/// Counters of one party's leg (all its streams).
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

impl LegCounters {
    #[inline]
    pub(crate) fn add_in(&self, packets: u64, bytes: u64) {
        if packets > 0 {
            self.packets_in.fetch_add(packets, Ordering::Relaxed);
            self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    #[inline]
    pub(crate) fn add_out(&self, packets: u64, bytes: u64) {
        if packets > 0 {
            self.packets_out.fetch_add(packets, Ordering::Relaxed);
            self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    #[inline]
    pub(crate) fn add_drops(&self, drops: &[u64; DropReason::ALL.len()]) {
        for (c, &n) in self.drops.iter().zip(drops) {
            if n > 0 {
                c.fetch_add(n, Ordering::Relaxed);
            }
        }
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
