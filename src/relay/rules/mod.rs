//! The relay's rules for every packet (`docs/design.md` in the repository), as plain
//! state with no socket, no runtime and no clock: the caller gives each packet with the address
//! it came from and the `now` it arrived at, and gets a verdict. The worker applies the verdict
//! with real sockets; tests and benchmarks apply it to byte buffers on virtual time.
//!
//! Per packet, in order: the cheap **source screen** (a stranger to a leg that has its source
//! is dropped; unknown addresses are rate limited, since they may cost an SRTP check), **SRTP**
//! authentication in per_leg mode, the **latch** (with the SSRC or the authentication as
//! evidence), the **arbiter** (one atomic load: may this party's media pass?), the **SSRC
//! filter**, the **keyframe policy**, and re-protection toward the peer in per_leg mode.

mod group;
mod keyframe;
mod latch;
mod quality;
mod setup;
mod snapshot;

pub use group::{
    Delivery, FanOut, GroupIngress, GroupMemberRulesSnapshot, GroupRules, GroupRulesSetup,
    GroupRulesSnapshot, GroupStreamRulesSnapshot, GroupStreamSetup, MemberMedia, MemberQuality,
    FANOUT_MTU,
};
pub use keyframe::{
    h264_idr, KeyframePolicy, KEYFRAME_REDUNDANT_WINDOW, KEYFRAME_REQUEST_INTERVAL,
};
pub use latch::{Evidence, Latch, StrangerBudget, Verdict, STRANGER_BURST, STRANGER_RATE};
pub use quality::{
    Histogram, KernelForwarded, LegQuality, QualityHistograms, ReceiverReport, RtpMeter, RttProbe,
    JITTER_MS_BOUNDS, LOSS_PERCENT_BOUNDS,
};
pub use setup::{
    ControlSetup, Egress, Ingress, LegSetup, RtpMark, RulesSetup, SsrcFilter, StreamSetup, Tally,
};
pub use snapshot::{
    ControlRulesSnapshot, LegRulesSnapshot, RulesSnapshot, StreamRulesSnapshot, SRTCP_RESTORE_SKIP,
};

use super::stats::DropReason;
use crate::control::arbiter::Slot;
use crate::control::Party;
use crate::keys::MasterKey;
use crate::sdp::MediaKind;
use crate::srtp::{SrtpContext, SrtpError};
use crate::wire::rtcp::RtcpPacket;
use crate::wire::rtp::RtpPacket;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// An SRTP context, boxed: a leg that terminates no SRTP (end_to_end mode, plain control
/// channels) pays one pointer, not a context (memory per idle call).
type SrtpSlot = Option<Box<SrtpContext>>;

fn srtp(key: Option<&MasterKey>) -> Result<SrtpSlot, SrtpError> {
    key.map(|k| SrtpContext::try_new(k).map(Box::new))
        .transpose()
}

/// RTP or RTCP: which SRTP transform applies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rtp,
    Rtcp,
}

/// Source state and SRTP contexts of one party's leg of one stream.
#[derive(Debug)]
struct LegRules {
    rtp_latch: Latch,
    rtcp_latch: Latch,
    strangers: StrangerBudget,
    announced: Vec<u32>,
    separate_rtcp: bool,
    /// No RTP to this leg's party ([`LegSetup::send_only`]).
    send_only: bool,
    srtp_in: SrtpSlot,
    srtp_out: SrtpSlot,
    /// RTP received from this leg's party.
    meter: RtpMeter,
    /// Sender reports forwarded to this leg's party, and its receiver reports.
    reports: RttProbe,
}

/// The media quality of one stream: what each party sent, and what each reported receiving.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamQuality {
    /// Media type.
    pub kind: MediaKind,
    /// Caller's and callee's legs.
    pub legs: [LegQuality; 2],
}

/// Cheap checks before any per-packet work: a stranger to a leg or channel with a confirmed
/// source is dropped; packets from unknown addresses are rate limited (they may cost an SRTP
/// check).
#[inline]
fn screen(
    latch: &Latch,
    strangers: &mut StrangerBudget,
    from: SocketAddr,
    now: Instant,
) -> Result<(), DropReason> {
    if latch.rejects(from) {
        return Err(DropReason::WrongSource);
    }
    if !latch.knows(from) && !strangers.take(now) {
        return Err(DropReason::RateLimited);
    }
    Ok(())
}

fn latch_verdict(v: Verdict, t: &mut Tally) -> Result<(), DropReason> {
    match v {
        Verdict::WrongSource => Err(DropReason::WrongSource),
        Verdict::Latched => {
            t.latched = true;
            Ok(())
        }
        Verdict::Accept => Ok(()),
    }
}

impl LegRules {
    fn new(l: &LegSetup, latch_after: u32, clock_rate: u32) -> Result<Self, SrtpError> {
        Ok(LegRules {
            rtp_latch: Latch::new(l.remote_rtp, latch_after),
            rtcp_latch: Latch::new(l.remote_rtcp, latch_after),
            strangers: StrangerBudget::default(),
            announced: l.announced.clone(),
            separate_rtcp: l.separate_rtcp,
            send_only: l.send_only,
            srtp_in: srtp(l.srtp_in.as_ref())?,
            srtp_out: srtp(l.srtp_out.as_ref())?,
            meter: RtpMeter::new(clock_rate),
            reports: RttProbe::default(),
        })
    }

    /// The front every media packet from this leg's party goes through: the source screen,
    /// SRTP authentication in per_leg mode, then the latch (with the SSRC as evidence).
    /// Returns the plain length, the sender's SSRC, and whether this packet just proved the
    /// party at its source (its SDP address, or strong evidence: the caller then makes weak
    /// latches of the party's other sockets to other IPs give way, [`LegRules::yield_weak`]).
    #[inline]
    fn admit(
        &mut self,
        (kind, rtcp_latch): (Kind, bool),
        seg: &mut [u8],
        from: SocketAddr,
        now: Instant,
        (per_leg, present): (bool, Option<IpAddr>),
        t: &mut Tally,
    ) -> Result<(usize, u32, bool), DropReason> {
        let latch = if rtcp_latch {
            &mut self.rtcp_latch
        } else {
            &mut self.rtp_latch
        };
        screen(latch, &mut self.strangers, from, now)?;
        let ssrc = match kind {
            Kind::Rtp => RtpPacket::new_checked(&*seg).map(|p| p.ssrc()),
            Kind::Rtcp => RtcpPacket::new_checked(&*seg).map(|p| p.sender_ssrc()),
        }
        .map_err(|_| DropReason::Malformed)?;
        let mut len = seg.len();
        if per_leg {
            if let Some(ctx) = self.srtp_in.as_mut() {
                len = match kind {
                    Kind::Rtp => ctx.unprotect_rtp(seg),
                    Kind::Rtcp => ctx.unprotect_rtcp(seg),
                }
                .map_err(|_| DropReason::AuthFailure)?;
            }
        }
        let strong = per_leg || self.announced.contains(&ssrc); // authenticated, or announced
                                                                // Weak evidence never moves a socket of a party that has shown up from another IP on
                                                                // any of its sockets (`present`): the party is there, so a new address is a stranger.
        if !strong && !latch.knows(from) && present.is_some_and(|ip| ip != from.ip()) {
            return Err(DropReason::WrongSource);
        }
        let had_source = latch.source().is_some();
        let v = latch.check(from, || {
            if strong {
                Evidence::Strong
            } else {
                Evidence::Weak
            }
        });
        latch_verdict(v, t)?;
        let proved = !had_source && latch.source().is_some() && !latch.is_weak();
        Ok((len, ssrc, proved))
    }

    /// The party proved itself at `ip` elsewhere: weak latches of this leg to other IPs give
    /// way.
    /// Returns whether the RTP socket's latch gave way.
    fn yield_weak(&mut self, ip: IpAddr) -> bool {
        self.rtcp_latch.yield_weak(ip);
        self.rtp_latch.yield_weak(ip)
    }

    /// The IP this leg's party has shown up from (its first confirmed source), if any.
    fn source_ip(&self) -> Option<IpAddr> {
        self.rtp_latch
            .source()
            .or(self.rtcp_latch.source())
            .map(|a| a.ip())
    }

    /// Whether `from` is new to this leg's RTP socket (its RTCP socket when `rtcp`).
    #[inline]
    fn is_new(&self, rtcp: bool, from: SocketAddr) -> bool {
        let latch = if rtcp {
            &self.rtcp_latch
        } else {
            &self.rtp_latch
        };
        !latch.knows(from)
    }

    /// The tail toward this leg's party: re-protect with the relay's key in per_leg mode.
    fn seal(
        &mut self,
        kind: Kind,
        seg: &mut [u8],
        len: usize,
        per_leg: bool,
    ) -> Result<usize, DropReason> {
        match (per_leg, self.srtp_out.as_mut()) {
            (true, Some(ctx)) => match kind {
                Kind::Rtp => ctx.protect_rtp(seg, len),
                Kind::Rtcp => ctx.protect_rtcp(seg, len),
            }
            .map_err(|_| DropReason::Malformed),
            _ => Ok(len),
        }
    }

    /// Where RTP to this leg's party goes: its latched or negotiated address, none while
    /// unknown or when the party only sends on the stream.
    #[inline]
    fn rtp_destination(&self) -> Option<SocketAddr> {
        if self.send_only {
            None
        } else {
            self.rtp_latch.destination()
        }
    }

    /// Where RTCP to this leg's party goes (its RTCP address when the leg has its own RTCP
    /// socket).
    fn rtcp_destination(&self) -> Option<SocketAddr> {
        if self.separate_rtcp {
            self.rtcp_latch.destination()
        } else {
            self.rtp_latch.destination()
        }
    }
}

#[derive(Debug)]
struct ControlRules {
    latch: Latch,
    strangers: StrangerBudget,
    srtcp_in: SrtpSlot,
    srtcp_out: SrtpSlot,
}

impl ControlRules {
    fn new(c: &ControlSetup, latch_after: u32) -> Result<Self, SrtpError> {
        Ok(ControlRules {
            latch: Latch::new(c.remote, latch_after),
            strangers: StrangerBudget::default(),
            srtcp_in: srtp(c.key.as_ref())?,
            srtcp_out: srtp(c.key.as_ref())?,
        })
    }

    /// Source screen, SRTCP authentication when the channel has a key, then the latch.
    fn admit(
        &mut self,
        from: SocketAddr,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<usize, DropReason> {
        screen(&self.latch, &mut self.strangers, from, now)?;
        let (len, authenticated) = match self.srtcp_in.as_mut() {
            Some(ctx) => (
                ctx.unprotect_rtcp(buf)
                    .map_err(|_| DropReason::AuthFailure)?,
                true,
            ),
            None => (buf.len(), false),
        };
        let v = self.latch.check(from, || {
            if authenticated {
                Evidence::Strong
            } else {
                Evidence::Weak
            }
        });
        match v {
            Verdict::WrongSource => Err(DropReason::WrongSource),
            _ => Ok(len),
        }
    }

    /// Protects a control message toward the party and says where it goes.
    fn seal(
        &mut self,
        buf: &mut [u8],
        len: usize,
    ) -> Option<Result<(usize, SocketAddr), SrtpError>> {
        let dest = self.latch.destination()?;
        Some(match self.srtcp_out.as_mut() {
            Some(ctx) => ctx.protect_rtcp(buf, len).map(|l| (l, dest)),
            None => Ok((len, dest)),
        })
    }
}

/// The per-packet rules of a one-to-one call (push or pull), both parties, every stream and
/// control channel: the one rule set ([`GroupRules`]) with two members, the caller in slot 0
/// and the callee in slot 1, on its in-place path (the `group::pair` module: one receiver,
/// nothing copied, RTCP to the peer whole). This is its face with parties for members; the
/// worker holds the same two parts ([`GroupRules`] and the pair face that says which party
/// transmits) in its one call type.
#[derive(Debug)]
pub struct CallRules {
    rules: GroupRules,
    face: PairFace,
}

/// A one-to-one call's two members, caller first.
const PARTIES: [Party; 2] = [Party::Caller, Party::Callee];

/// What the private call procedure adds to the one rule set of a two-member call: which party
/// transmits (only its media passes, only its BYE ends) and the video SSRC the relay asks
/// keyframes for. Every packet of the call is judged by [`GroupRules`] on its pair path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PairFace {
    transmitter: Party,
    video_ssrc: u32,
}

/// The other member of a two-member call.
#[inline]
fn pair_peer(member: Slot) -> Slot {
    if member == Slot::FIRST {
        Slot::SECOND
    } else {
        Slot::FIRST
    }
}

impl PairFace {
    /// The party that transmits.
    pub(crate) fn transmitter(&self) -> Party {
        self.transmitter
    }

    /// The other member of the call.
    #[inline]
    pub(crate) fn peer(&self, member: Slot) -> Slot {
        pair_peer(member)
    }

    /// The path of a datagram from `member`: to its peer, and whether it is the transmitter's
    /// ([`GroupRules::judge_pair`] judges it on that path, in place).
    #[inline]
    pub(crate) fn route(&self, member: Slot) -> group::Pair {
        group::Pair {
            peer: pair_peer(member),
            transmits: member == self.transmitter.slot(),
        }
    }

    /// Where a packet judged at `at` goes: the peer's latched or negotiated RTP address, or its
    /// RTCP address.
    #[inline]
    pub(crate) fn destination(
        &self,
        rules: &GroupRules,
        at: GroupIngress,
        rtcp: bool,
    ) -> Option<SocketAddr> {
        rules.pair_destination(pair_peer(at.member), at.stream, rtcp)
    }

    /// Writes a keyframe request (PLI) toward the transmitter for the first video stream where
    /// the relay can sign RTCP and the policy allows one now. Returns the stream and the length.
    pub(crate) fn keyframe_request(
        &self,
        rules: &mut GroupRules,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<(usize, usize)> {
        rules.pli_for(self.transmitter.slot(), self.video_ssrc, now, buf)
    }

    /// The media quality of every stream at `now`.
    pub(crate) fn quality(&self, rules: &GroupRules, now: Instant) -> Vec<StreamQuality> {
        let [caller, callee] = PARTIES.map(|p| rules.leg_quality(p.slot(), now));
        caller
            .into_iter()
            .zip(callee)
            .map(|((kind, a), (_, b))| StreamQuality { kind, legs: [a, b] })
            .collect()
    }
}

impl CallRules {
    /// The rules of a call about to be established. Fails only on an unusable SRTP key.
    pub fn new(setup: &RulesSetup) -> Result<CallRules, SrtpError> {
        let mut rules = GroupRules::new(&GroupRulesSetup {
            arbiter: setup.arbiter.clone(),
            security: setup.security,
            streams: setup
                .streams
                .iter()
                .map(|s| {
                    GroupStreamSetup::new(&s.kind, s.encrypted, s.clock_rate, s.encoding.clone())
                })
                .collect(),
            server_ssrc: setup.server_ssrc,
            latch_after: setup.latch_after,
        });
        for p in PARTIES {
            let media = MemberMedia {
                legs: setup
                    .streams
                    .iter()
                    .map(|s| s.legs.get(p.index()).cloned().unwrap_or_default())
                    .collect(),
                control: setup.control.get(p.index()).cloned().flatten(),
            };
            rules.add_member(p.slot(), &media)?;
        }
        let tx = setup.transmitter.slot();
        for (si, s) in setup.streams.iter().enumerate() {
            rules.set_stream_ssrcs(tx, si, &s.transmitter_ssrcs);
        }
        Ok(CallRules {
            rules,
            face: PairFace {
                transmitter: setup.transmitter,
                video_ssrc: setup.video_ssrc,
            },
        })
    }

    /// The one rule set and the private procedure's face on it, for a worker's call.
    pub(crate) fn into_parts(self) -> (GroupRules, PairFace) {
        (self.rules, self.face)
    }

    /// The party that transmits.
    pub fn transmitter(&self) -> Party {
        self.face.transmitter
    }

    /// Number of media streams.
    pub fn streams(&self) -> usize {
        self.rules.streams()
    }

    /// RTP sequence wraps seen so far ([`GroupRules::wraps`]).
    pub fn wraps(&self) -> u64 {
        self.rules.wraps()
    }

    /// The media quality of every stream at `now`.
    pub fn quality(&self, now: Instant) -> Vec<StreamQuality> {
        self.face.quality(&self.rules, now)
    }

    /// Judges one datagram (one segment of a GRO batch) that arrived at `at` from `from`, in
    /// place. `Ok(egress)`: send `egress.len` bytes to the peer ([`Self::destination`]).
    #[inline]
    pub fn judge(
        &mut self,
        at: Ingress,
        from: SocketAddr,
        now: Instant,
        pkt: &mut [u8],
        t: &mut Tally,
    ) -> Result<Egress, DropReason> {
        let at = at.member();
        let route = self.face.route(at.member);
        self.rules.judge_pair(at, route, from, now, pkt, t)
    }

    /// Where a packet judged at `at` goes: the peer's latched or negotiated RTP address, or its
    /// RTCP address.
    #[inline]
    pub fn destination(&self, at: Ingress, rtcp: bool) -> Option<SocketAddr> {
        self.face.destination(&self.rules, at.member(), rtcp)
    }

    /// Writes a keyframe request (PLI) toward the transmitter for the first video stream where
    /// the relay can sign RTCP and the policy allows one now. Returns the stream and the length.
    pub fn keyframe_request(&mut self, now: Instant, buf: &mut [u8]) -> Option<(usize, usize)> {
        self.face.keyframe_request(&mut self.rules, now, buf)
    }

    /// Where RTCP to `party` on stream `si` goes.
    pub fn rtcp_destination(&self, si: usize, party: Party) -> Option<SocketAddr> {
        self.rules.rtcp_destination(party.slot(), si)
    }

    /// A datagram on `party`'s transmission control channel: source screen, SRTCP
    /// authentication when the channel has a key, then the latch. Returns the plain length.
    pub fn admit_control(
        &mut self,
        party: Party,
        from: SocketAddr,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<usize, DropReason> {
        self.rules.admit_control(party.slot(), from, now, buf)
    }

    /// Protects a control message of `len` bytes in `buf` toward `party` (SRTCP when the channel
    /// has a key) and says where it goes. `None`: the party has no channel or no address yet.
    pub fn seal_control(
        &mut self,
        party: Party,
        buf: &mut [u8],
        len: usize,
    ) -> Option<Result<(usize, SocketAddr), SrtpError>> {
        self.rules.seal_control(party.slot(), buf, len)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests' own epoch; time then moves virtually
mod tests;
