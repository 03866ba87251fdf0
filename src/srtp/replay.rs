//! Per-SSRC state: packet-index estimation (RFC 3711 §3.3.1), the 64-packet replay window
//! (§3.3.2) and the SRTCP send index; [`super::table`] holds them.
//!
//! Everything here is `Copy` and fixed-size.
//! Callers work on a *copy* of an SSRC's state and store it back only after the packet has been
//! authenticated, so a packet that fails changes nothing.

use super::SrtpError;

/// Width of the replay window in packets (RFC 3711 §3.3.2 requires at least 64).
pub(super) const WINDOW: u64 = 64;

/// The highest SRTCP index (31 bits, RFC 3711 §3.4).
pub(super) const MAX_SRTCP_INDEX: u32 = 0x7fff_ffff;

/// A sliding replay window over packet indices (48-bit SRTP index or 31-bit SRTCP index).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ReplayWindow {
    /// Whether any packet has been accepted yet.
    started: bool,
    /// The highest accepted index.
    top: u64,
    /// Bit `i` set: index `top - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    /// A window from its parts: `top` the highest accepted index (`None`: nothing accepted),
    /// `seen` its bitmap (bit `i`: `top - i` accepted; bit 0 is always set once started).
    pub(super) fn from_parts(top: Option<u64>, seen: u64) -> Self {
        match top {
            Some(top) => ReplayWindow {
                started: true,
                top,
                seen: seen | 1,
            },
            None => ReplayWindow::default(),
        }
    }

    /// The bitmap of accepted indices behind [`top`](Self::top).
    pub(super) fn seen(&self) -> u64 {
        self.seen
    }

    /// The highest accepted index, if any.
    pub(super) fn top(&self) -> Option<u64> {
        self.started.then_some(self.top)
    }

    /// RFC 3711 §3.3.2: may a packet with this index be processed?
    pub(super) fn check(&self, index: u64) -> Result<(), SrtpError> {
        if !self.started || index > self.top {
            return Ok(());
        }
        let behind = self.top - index;
        if behind >= WINDOW {
            Err(SrtpError::TooOld)
        } else if (self.seen >> behind) & 1 == 1 {
            Err(SrtpError::Replayed)
        } else {
            Ok(())
        }
    }

    /// Records an authenticated packet (call only after [`check`](Self::check) accepted it).
    pub(super) fn accept(&mut self, index: u64) {
        if !self.started {
            self.started = true;
            self.top = index;
            self.seen = 1;
        } else if index > self.top {
            let ahead = index - self.top;
            self.seen = if ahead >= WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.top = index;
        } else {
            let behind = self.top - index;
            if behind < WINDOW {
                self.seen |= 1 << behind;
            }
        }
    }
}

/// RFC 3711 §3.3.1: the 48-bit index of a packet with sequence number `seq`, from the highest
/// index accepted so far (`ROC || s_l`).
///
/// The guess `ROC - 1` is not taken while `ROC` is 0 (as in libsrtp), and `ROC + 1` is not taken
/// past `2^32 - 1` (the index space is exhausted: such a packet lands behind the window).
pub(super) fn estimate_index(window: &ReplayWindow, seq: u16) -> u64 {
    let Some(top) = window.top() else {
        return u64::from(seq);
    };
    let roc = top >> 16;
    let s_l = top as u16;
    let v = if s_l < 0x8000 {
        if i32::from(seq) - i32::from(s_l) > 0x8000 {
            roc.saturating_sub(1)
        } else {
            roc
        }
    } else if i32::from(s_l) - 0x8000 > i32::from(seq) {
        (roc + 1).min(u64::from(u32::MAX))
    } else {
        roc
    };
    (v << 16) | u64::from(seq)
}

/// SRTCP state of one SSRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RtcpStream {
    /// The SRTCP index the next protected packet gets.
    ///
    /// Starts at 1, as libsrtp and webrtc-rs do (RFC 3711 §3.4 says 0; receivers accept both).
    pub(super) next_send: u32,
    /// Replay window of received packets.
    pub(super) received: ReplayWindow,
}

impl Default for RtcpStream {
    fn default() -> Self {
        RtcpStream {
            next_send: 1,
            received: ReplayWindow::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_accepts_new_rejects_replayed_and_too_old() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.check(1000), Ok(()));
        w.accept(1000);
        assert_eq!(w.check(1000), Err(SrtpError::Replayed));
        assert_eq!(w.check(1001), Ok(()));
        assert_eq!(w.check(999), Ok(()));
        assert_eq!(w.check(1000 - 63), Ok(()));
        assert_eq!(w.check(1000 - 64), Err(SrtpError::TooOld));
        w.accept(998);
        assert_eq!(w.check(998), Err(SrtpError::Replayed));
        w.accept(1100);
        assert_eq!(w.top(), Some(1100));
        assert_eq!(w.check(1000), Err(SrtpError::TooOld));
        assert_eq!(w.check(1100 - 63), Ok(()));
        w.accept(1101);
        // 1100 is now one behind.
        assert_eq!(w.check(1100), Err(SrtpError::Replayed));
        // A jump of more than the window clears it.
        w.accept(5000);
        assert_eq!(w.check(4999), Ok(()));
        assert_eq!(w.check(5000), Err(SrtpError::Replayed));
    }

    #[test]
    fn index_estimation_follows_rfc3711() {
        let mut w = ReplayWindow::default();
        assert_eq!(estimate_index(&w, 65_000), 65_000);
        w.accept(65_000);
        // Forward across the wrap: ROC + 1.
        assert_eq!(estimate_index(&w, 10), (1 << 16) | 10);
        // Behind but same ROC.
        assert_eq!(estimate_index(&w, 64_000), 64_000);
        w.accept((1 << 16) | 10);
        // Late packet from before the wrap: ROC - 1.
        assert_eq!(estimate_index(&w, 65_530), 65_530);
        assert_eq!(estimate_index(&w, 11), (1 << 16) | 11);
        // ROC 0 never guesses ROC - 1.
        let mut w = ReplayWindow::default();
        w.accept(5);
        assert_eq!(estimate_index(&w, 60_000), 60_000);
        // Exhausted index space: ROC stays at 2^32 - 1.
        let mut w = ReplayWindow::default();
        w.accept((u64::from(u32::MAX) << 16) | 65_535);
        assert_eq!(estimate_index(&w, 3), (u64::from(u32::MAX) << 16) | 3);
    }
}
