//! The two-member path of the one rule set: a one-to-one call (push or pull) is a call of two
//! members, the caller in slot 0 and the callee in slot 1, judged by the same fronts as any
//! group ([`GroupRules::rtp_front`], [`GroupRules::rtcp_front`]: source screen, SRTP, latch,
//! meter, arbiter, SSRC filter, keyframe scan). What the private call procedure changes is the
//! delivery:
//!
//! * one receiver, so nothing is copied: the datagram is re-protected (per_leg) **in place**
//!   toward the peer, and the worker sends it from the buffer it came in;
//! * RTCP goes to the peer **whole** (receiver reports included: the transmitter's own RTCP
//!   state needs its one receiver's reports), where a group splits a compound between its
//!   receivers and the transmitters it names. A receiver's keyframe requests still pass the
//!   transmitter's [`KeyframePolicy`](super::super::KeyframePolicy).
//!
//! [`CallRules`](super::super::CallRules) is the face of this path with parties for members.

use super::{GroupIngress, GroupRules, MemberStream, RtcpIn};
use crate::control::arbiter::Slot;
use crate::relay::rules::{
    ControlRulesSnapshot, Egress, Kind, LegQuality, LegRulesSnapshot, StreamRulesSnapshot, Tally,
};
use crate::relay::stats::DropReason;
use crate::sdp::MediaKind;
use crate::srtp::SrtpError;
use crate::wire::demux::{classify, PacketClass};
use crate::wire::rtcp;
use std::net::SocketAddr;
use std::time::Instant;

/// The two members of a datagram's path in a one-to-one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pair {
    /// Where it goes.
    pub(in crate::relay::rules) peer: Slot,
    /// The sender is the call's transmitter (only its media passes; only its BYE ends).
    pub(in crate::relay::rules) transmits: bool,
}

impl GroupRules {
    /// Judges one datagram of a two-member call in place: `Ok(egress)` is `egress.len` bytes
    /// of `pkt` for `pair.peer` ([`Self::pair_destination`]).
    #[inline]
    pub(crate) fn judge_pair(
        &mut self,
        at: GroupIngress,
        pair: Pair,
        from: SocketAddr,
        now: Instant,
        pkt: &mut [u8],
        t: &mut Tally,
    ) -> Result<Egress, DropReason> {
        let rtcp = at.rtcp_socket || classify(pkt) == PacketClass::Rtcp;
        let len = if rtcp {
            self.pair_rtcp(at, pair, from, now, pkt, t)?
        } else {
            let len = self.rtp_front(at, from, now, pkt, t, pair.transmits)?;
            self.seal_for(pair.peer, at.stream, Kind::Rtp, pkt, len)?
        };
        Ok(Egress { len, rtcp })
    }

    /// Re-protects `len` plain bytes of `pkt` toward `to` on stream `si` (per_leg), in place.
    fn seal_for(
        &mut self,
        to: Slot,
        si: usize,
        kind: Kind,
        pkt: &mut [u8],
        len: usize,
    ) -> Result<usize, DropReason> {
        let per_leg = self.per_leg;
        self.member_stream_mut(to, si)
            .ok_or(DropReason::Malformed)?
            .leg
            .seal(kind, pkt, len, per_leg)
    }

    /// One RTCP datagram of a two-member call, whole, in place (out of line: the RTP path
    /// stays small enough to inline what it calls).
    #[inline(never)]
    fn pair_rtcp(
        &mut self,
        at: GroupIngress,
        pair: Pair,
        from: SocketAddr,
        now: Instant,
        pkt: &mut [u8],
        t: &mut Tally,
    ) -> Result<usize, DropReason> {
        let RtcpIn {
            mut len,
            readable,
            video,
        } = self.rtcp_front(at, from, now, pkt, t)?;
        // Where the relay can read RTCP (plain RTP, or decrypted per leg), look inside.
        if readable {
            let body = pkt.get_mut(..len).ok_or(DropReason::Malformed)?;
            if rtcp::validate_compound(body).is_err() {
                return Err(DropReason::Malformed);
            }
            self.read_reports(at, body, pair.peer.bit(), pair.transmits, now, t);
            if !pair.transmits && video {
                // The transmitter's policy, across its keyframes and its receiver's requests.
                let tx = self.member_stream_mut(pair.peer, at.stream);
                let tx = tx.ok_or(DropReason::Malformed)?;
                let (kept, dropped) = tx.keyframes.filter_requests(body, now);
                t.drop_n(DropReason::RateLimited, dropped);
                len = kept;
                if len == 0 {
                    return Ok(0); // every packet in it was dropped (and counted) above
                }
            }
        }
        self.seal_for(pair.peer, at.stream, Kind::Rtcp, pkt, len)
    }

    /// Whether the call re-protects each packet per receiver (per_leg): then nothing of it
    /// can be forwarded untouched.
    #[cfg(feature = "kernel-offload")]
    pub(crate) fn per_leg(&self) -> bool {
        self.per_leg
    }

    /// What the kernel fast path needs to forward `tx`'s RTP to `peer` on stream `si` itself
    /// (docs/kernel-fast-path.md): `tx`'s latched source, its SSRCs, `peer`'s RTP destination,
    /// the stream's RTP clock rate (for the jitter) and whether to count keyframes. Only where
    /// the relay forwards RTP untouched (not per_leg), once the source is latched on strong
    /// evidence (a weak latch may still give way) and the SSRCs are known (1 to 4). `None`
    /// otherwise: the leg stays in userspace.
    #[cfg(feature = "kernel-offload")]
    pub(crate) fn offload_route(&self, tx: Slot, peer: Slot, si: usize) -> Option<OffloadRoute> {
        if self.per_leg {
            return None;
        }
        let ms = self.member_stream(tx, si)?;
        let latch = &ms.leg.rtp_latch;
        let source = latch.source().filter(|_| !latch.is_weak())?;
        let ssrcs = ms.ssrcs.ssrcs();
        if ssrcs.is_empty() || ssrcs.len() > 4 {
            return None;
        }
        let dest = self.rtp_destination(peer, si)?;
        let clock_rate = ms.leg.meter.clock_rate();
        let (readable, video) = self.stream_traits(si).ok()?;
        Some(OffloadRoute {
            source,
            ssrcs: ssrcs.to_vec(),
            dest,
            clock_rate,
            keyframes: readable && video,
            last_keyframe: ms.keyframes.last_keyframe(),
        })
    }

    /// The kernel fast path forwarded `packets` of `tx`'s RTP on stream `si` (see
    /// [`RtpMeter::on_offloaded`](crate::relay::rules::RtpMeter::on_offloaded)).
    #[cfg(feature = "kernel-offload")]
    pub(crate) fn offloaded(
        &mut self,
        tx: Slot,
        si: usize,
        f: &crate::relay::rules::KernelForwarded,
    ) {
        if let Some(ms) = self.member_stream_mut(tx, si) {
            ms.leg.meter.on_offloaded(f);
            if f.keyframes > 0 {
                // For the keyframe policy: a callee's request right after it is redundant.
                ms.keyframes.keyframe_seen(f.last);
            }
            if let Some(au) = f.last_keyframe {
                // Should the leg come back to userspace inside that access unit, its other
                // packets are not a new keyframe.
                ms.keyframes.counted(au);
            }
        }
    }

    /// Where a datagram for `to` on stream `si` goes: its RTP or its RTCP destination.
    #[inline]
    pub(in crate::relay::rules) fn pair_destination(
        &self,
        to: Slot,
        si: usize,
        rtcp: bool,
    ) -> Option<SocketAddr> {
        if rtcp {
            self.rtcp_destination(to, si)
        } else {
            self.rtp_destination(to, si)
        }
    }

    /// The transmitter's SSRC filter on stream `si`: `ssrcs` (announced in the setup), or
    /// learning when none.
    pub(in crate::relay::rules) fn set_stream_ssrcs(
        &mut self,
        slot: Slot,
        si: usize,
        ssrcs: &[u32],
    ) {
        if let Some(ms) = self.member_stream_mut(slot, si) {
            ms.ssrcs = super::SsrcFilter::new(ssrcs);
        }
    }

    /// Writes a keyframe request (PLI) for `media` toward `slot` (see
    /// [`Self::keyframe_request`]: the first video stream where the relay can sign RTCP and
    /// the policy allows one now).
    pub(in crate::relay::rules) fn pli_for(
        &mut self,
        slot: Slot,
        media: u32,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<(usize, usize)> {
        self.request_keyframe(slot, now, buf, |_| Some(media))
    }

    /// Per stream, `slot`'s leg quality.
    pub(in crate::relay::rules) fn leg_quality(
        &self,
        slot: Slot,
        now: Instant,
    ) -> Vec<(MediaKind, LegQuality)> {
        let Some(m) = self.members.get(slot.index()).and_then(Option::as_ref) else {
            return Vec::new();
        };
        self.streams
            .iter()
            .zip(&m.streams)
            .map(|(s, ms)| (s.kind.clone(), leg_quality(ms, now)))
            .collect()
    }

    /// Stream `si` of the two members as a one-to-one snapshot holds it: their legs and the
    /// transmitter's SSRCs.
    pub(in crate::relay::rules) fn pair_stream_snapshot(
        &self,
        si: usize,
        members: [Slot; 2],
        transmitter: Slot,
    ) -> StreamRulesSnapshot {
        let leg = |s: Slot| {
            self.member_stream(s, si)
                .map(|ms| ms.leg.snapshot())
                .unwrap_or_default()
        };
        StreamRulesSnapshot {
            legs: members.map(leg),
            transmitter_ssrcs: self
                .member_stream(transmitter, si)
                .map(|ms| ms.ssrcs.ssrcs().to_vec())
                .unwrap_or_default(),
        }
    }

    /// `slot`'s control channel state.
    pub(in crate::relay::rules) fn control_snapshot(
        &self,
        slot: Slot,
    ) -> Option<ControlRulesSnapshot> {
        let m = self.members.get(slot.index())?.as_ref()?;
        m.control.as_ref().map(|c| c.snapshot())
    }

    /// Restores `slot`'s leg on stream `si`, and, when it transmits, its SSRCs.
    pub(in crate::relay::rules) fn restore_pair_leg(
        &mut self,
        slot: Slot,
        si: usize,
        leg: &LegRulesSnapshot,
        transmitter_ssrcs: Option<&[u32]>,
    ) -> Result<(), SrtpError> {
        let ms = self
            .member_stream_mut(slot, si)
            .ok_or(SrtpError::Malformed)?;
        ms.leg.restore(leg)?;
        for &ssrc in transmitter_ssrcs.unwrap_or_default() {
            ms.ssrcs.admit(ssrc);
        }
        Ok(())
    }

    /// Restores `slot`'s control channel.
    pub(in crate::relay::rules) fn restore_control(
        &mut self,
        slot: Slot,
        snap: &ControlRulesSnapshot,
    ) -> Result<(), SrtpError> {
        match self.member_mut(slot).and_then(|m| m.control.as_mut()) {
            Some(c) => c.restore(snap),
            None => Ok(()),
        }
    }
}

/// A member's leg quality on one stream: its meter at `now`, with its last receiver report.
pub(super) fn leg_quality(ms: &MemberStream, now: Instant) -> LegQuality {
    LegQuality {
        receiver_report: ms.leg.reports.last,
        ..ms.leg.meter.snapshot(now)
    }
}

/// Where a transmitter's RTP on one stream can be forwarded in the kernel
/// ([`GroupRules::offload_route`]).
#[cfg(feature = "kernel-offload")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OffloadRoute {
    /// The latched source.
    pub(crate) source: SocketAddr,
    /// The SSRCs allowed (1 to 4).
    pub(crate) ssrcs: Vec<u32>,
    /// The peer's RTP destination.
    pub(crate) dest: SocketAddr,
    /// The stream's RTP clock rate (0: unknown).
    pub(crate) clock_rate: u32,
    /// Video whose payload the relay can read: the kernel counts its keyframes, as the
    /// relay's own scan would.
    pub(crate) keyframes: bool,
    /// The last keyframe the relay counted, (SSRC, RTP timestamp).
    pub(crate) last_keyframe: Option<(u32, u32)>,
}
