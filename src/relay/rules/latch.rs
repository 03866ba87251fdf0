//! Where media may come from and where it may go (`docs/design.md` in the repository, "The
//! relay's rules for every packet", source checks).
//!
//! Each leg expects packets from the address its SDP names. A client behind NAT sends from a
//! different address; the leg **latches** to that address only on strong evidence:
//!
//! * [`Evidence::Strong`]: the packet carries an SSRC announced in the SDP (`a=ssrc`,
//!   `mc_video_ssrc`), or it passed SRTP authentication with the leg's key (per_leg mode);
//! * otherwise: nothing has arrived from the SDP address, and [`Latch::new`]'s `after`
//!   consecutive packets came from the same new address.
//!
//! Once a leg has a source — the SDP address seen, or a latch — a stranger never takes it over
//! (RTP Bleed, 2017). Nothing is ever sent to an address that was neither negotiated nor
//! latched. A latch on weak evidence is a guess: when the party then proves itself on another
//! of its sockets (from its SDP address, or with strong evidence) at another IP, the guess gives
//! way ([`Latch::yield_weak`]) and the socket waits for its party again.

use crate::control::bucket::TokenBucket;
use std::net::SocketAddr;

/// How much a packet from an unexpected source proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Only the address: count consecutive packets.
    Weak,
    /// Announced SSRC or SRTP authentication: latch at once.
    Strong,
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From the leg's source: process it.
    Accept,
    /// It just latched the leg to a new source: process it (and log the latch).
    Latched,
    /// Not from the leg's source: drop and count (`wrong_source`).
    WrongSource,
}

/// Source state of one leg socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latch {
    expected: Option<SocketAddr>,
    source: Option<SocketAddr>,
    candidate: Option<(SocketAddr, u32)>,
    after: u32,
    latches: u32,
    /// The source was latched on weak evidence alone (it gives way: [`Latch::yield_weak`]).
    weak: bool,
}

impl Latch {
    /// A leg whose SDP names `expected`; a new source latches after `after` consecutive packets
    /// of weak evidence (at least 1).
    pub fn new(expected: Option<SocketAddr>, after: u32) -> Self {
        Latch {
            expected,
            source: None,
            candidate: None,
            after: after.max(1),
            latches: 0,
            weak: false,
        }
    }

    /// Where to send to this leg's party: the confirmed source, else the negotiated address.
    #[inline]
    pub fn destination(&self) -> Option<SocketAddr> {
        self.source.or(self.expected)
    }

    /// The confirmed source, if any.
    pub fn source(&self) -> Option<SocketAddr> {
        self.source
    }

    /// Whether `from` is the leg's source or its negotiated address.
    #[inline]
    pub fn knows(&self, from: SocketAddr) -> bool {
        self.source == Some(from) || (self.source.is_none() && self.expected == Some(from))
    }

    /// Whether the leg has a confirmed source and `from` is not it: such a packet is dropped
    /// before any other work.
    #[inline]
    pub fn rejects(&self, from: SocketAddr) -> bool {
        self.source.is_some_and(|s| s != from)
    }

    /// How many times the leg latched to an address other than the negotiated one.
    pub fn latches(&self) -> u32 {
        self.latches
    }

    /// Sets the confirmed source and the latch count (a call restored from a snapshot): from
    /// then on the leg behaves as the one that was snapshot did.
    pub fn restore(&mut self, source: Option<SocketAddr>, latches: u32) {
        self.source = source;
        self.candidate = None;
        self.latches = latches;
        self.weak = false;
    }

    /// Whether the source was taken on weak evidence alone (consecutive packets from a new
    /// address while the party had shown up nowhere).
    pub fn is_weak(&self) -> bool {
        self.source.is_some() && self.weak
    }

    /// The party proved itself at `ip` on another socket (its SDP address, or strong evidence):
    /// a source latched here on weak evidence from another IP was a guess that lost, so the
    /// socket forgets it and waits for its party again. Returns whether it gave way.
    pub fn yield_weak(&mut self, ip: std::net::IpAddr) -> bool {
        match self.source {
            Some(src) if self.weak && src.ip() != ip => {
                self.source = None;
                self.candidate = None;
                self.weak = false;
                true
            }
            _ => false,
        }
    }

    /// Judges a packet from `from`. `evidence` is only consulted for unexpected sources.
    #[inline]
    pub fn check(&mut self, from: SocketAddr, evidence: impl FnOnce() -> Evidence) -> Verdict {
        if let Some(src) = self.source {
            return if src == from {
                Verdict::Accept
            } else {
                Verdict::WrongSource
            };
        }
        if self.expected == Some(from) {
            self.source = Some(from);
            self.candidate = None;
            self.weak = false;
            return Verdict::Accept;
        }
        match evidence() {
            Evidence::Strong => {
                self.weak = false;
                self.latch(from)
            }
            Evidence::Weak => {
                let count = match self.candidate {
                    Some((addr, n)) if addr == from => n + 1,
                    _ => 1,
                };
                if count >= self.after {
                    self.weak = true;
                    self.latch(from)
                } else {
                    self.candidate = Some((from, count));
                    Verdict::WrongSource
                }
            }
        }
    }

    fn latch(&mut self, from: SocketAddr) -> Verdict {
        self.source = Some(from);
        self.candidate = None;
        self.latches += 1;
        Verdict::Latched
    }
}

/// Packets per second an unknown address may make the relay look at (and, in per_leg mode,
/// authenticate) while a leg has no confirmed source.
pub const STRANGER_RATE: f64 = 200.0;
/// Burst allowance for [`STRANGER_RATE`].
pub const STRANGER_BURST: f64 = 50.0;

/// A token bucket that bounds the work spent on packets from unknown sources:
/// a [`TokenBucket`] of [`STRANGER_RATE`] and [`STRANGER_BURST`].
#[derive(Debug, Clone, Copy)]
pub struct StrangerBudget(TokenBucket);

impl Default for StrangerBudget {
    fn default() -> Self {
        StrangerBudget(TokenBucket::new(STRANGER_RATE, STRANGER_BURST))
    }
}

impl StrangerBudget {
    /// Takes one token at `now`; `false` when the budget is spent.
    #[inline]
    pub fn take(&mut self, now: std::time::Instant) -> bool {
        self.0.take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sdp_address_is_confirmed_and_never_replaced() {
        let (sdp, stranger) = (a("192.0.2.1:5000"), a("203.0.113.9:6666"));
        let mut l = Latch::new(Some(sdp), 3);
        assert_eq!(l.check(sdp, || Evidence::Weak), Verdict::Accept);
        for _ in 0..100 {
            assert_eq!(l.check(stranger, || Evidence::Strong), Verdict::WrongSource);
        }
        assert_eq!(l.destination(), Some(sdp));
        assert_eq!(l.latches(), 0);
    }

    #[test]
    fn weak_evidence_needs_consecutive_packets_and_silence_from_sdp_address() {
        let mut l = Latch::new(Some(a("10.0.0.5:5000")), 3);
        let nat = a("198.51.100.7:40001");
        let other = a("203.0.113.9:6666");
        assert_eq!(l.check(nat, || Evidence::Weak), Verdict::WrongSource);
        assert_eq!(
            l.check(other, || Evidence::Weak),
            Verdict::WrongSource,
            "interleaved stranger resets"
        );
        assert_eq!(l.check(nat, || Evidence::Weak), Verdict::WrongSource);
        assert_eq!(l.check(nat, || Evidence::Weak), Verdict::WrongSource);
        assert_eq!(l.check(nat, || Evidence::Weak), Verdict::Latched);
        assert_eq!(l.check(nat, || Evidence::Weak), Verdict::Accept);
        assert_eq!(l.destination(), Some(nat));
        assert_eq!(l.latches(), 1);
        // A latched leg is not re-latched, not even with strong evidence.
        assert_eq!(l.check(other, || Evidence::Strong), Verdict::WrongSource);
        assert_eq!(
            l.check(a("10.0.0.5:5000"), || Evidence::Strong),
            Verdict::WrongSource
        );
    }

    #[test]
    fn strong_evidence_latches_at_once() {
        let mut l = Latch::new(Some(a("10.0.0.5:5000")), 5);
        let nat = a("198.51.100.7:1");
        assert_eq!(l.check(nat, || Evidence::Strong), Verdict::Latched);
        assert_eq!(l.destination(), Some(nat));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // the test's own epoch
    fn stranger_budget_bounds_work() {
        let t0 = std::time::Instant::now();
        let mut b = StrangerBudget::default();
        let taken = (0..10_000).filter(|_| b.take(t0)).count();
        assert_eq!(taken as f64, STRANGER_BURST);
        let later = t0 + std::time::Duration::from_millis(100);
        let taken = (0..10_000).filter(|_| b.take(later)).count();
        assert_eq!(taken as f64, STRANGER_RATE / 10.0);
    }

    #[test]
    fn knows_and_rejects() {
        let mut l = Latch::new(Some(a("10.0.0.5:5000")), 3);
        assert!(l.knows(a("10.0.0.5:5000")) && !l.rejects(a("1.2.3.4:5")));
        l.check(a("10.0.0.5:5000"), || Evidence::Weak);
        assert!(l.rejects(a("1.2.3.4:5")) && !l.knows(a("1.2.3.4:5")));
    }

    #[test]
    fn a_weak_latch_gives_way_to_the_party_proved_elsewhere() {
        let mut l = Latch::new(Some(a("10.0.0.5:5000")), 2);
        let stranger = a("203.0.113.9:6666");
        l.check(stranger, || Evidence::Weak);
        assert_eq!(l.check(stranger, || Evidence::Weak), Verdict::Latched);
        assert!(l.is_weak());
        assert!(!l.yield_weak(a("203.0.113.9:1").ip()), "same IP: kept");
        assert!(l.yield_weak(a("10.0.0.5:5001").ip()));
        assert_eq!(l.source(), None);
        assert!(l.rejects(stranger) || !l.knows(stranger));
        assert_eq!(
            l.check(a("10.0.0.5:5000"), || Evidence::Weak),
            Verdict::Accept
        );
        // A source proved by the SDP address or strong evidence never gives way.
        assert!(!l.yield_weak(stranger.ip()));
        let mut s = Latch::new(None, 2);
        assert_eq!(s.check(stranger, || Evidence::Strong), Verdict::Latched);
        assert!(!s.is_weak() && !s.yield_weak(a("10.0.0.5:1").ip()));
    }

    #[test]
    fn no_destination_without_negotiation_or_latch() {
        let l = Latch::new(None, 3);
        assert_eq!(l.destination(), None);
    }
}
