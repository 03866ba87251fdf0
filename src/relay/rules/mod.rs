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
    Histogram, LegQuality, QualityHistograms, ReceiverReport, RtpMeter, RttProbe, JITTER_MS_BOUNDS,
    LOSS_PERCENT_BOUNDS,
};
pub use setup::{
    ControlSetup, Egress, Ingress, LegSetup, RulesSetup, SsrcFilter, StreamSetup, Tally,
};
pub use snapshot::{
    ControlRulesSnapshot, LegRulesSnapshot, RulesSnapshot, StreamRulesSnapshot, SRTCP_RESTORE_SKIP,
};

use super::stats::DropReason;
use crate::control::arbiter::Arbiter;
use crate::control::{MediaSecurity, Party};
use crate::keys::MasterKey;
use crate::sdp::MediaKind;
use crate::srtp::{SrtpContext, SrtpError};
use crate::wire::demux::{classify, PacketClass};
use crate::wire::rtcp::{self, RtcpKind, RtcpPacket};
use crate::wire::rtp::RtpPacket;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
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
struct StreamRules {
    kind: MediaKind,
    encrypted: bool,
    legs: [LegRules; 2],
    transmitter_ssrcs: SsrcFilter,
    keyframes: KeyframePolicy,
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

/// The per-packet rules of one call, both parties, every stream and control channel.
#[derive(Debug)]
pub struct CallRules {
    arbiter: Arc<Arbiter>,
    transmitter: Party,
    per_leg: bool,
    streams: Vec<StreamRules>,
    control: [Option<ControlRules>; 2],
    server_ssrc: u32,
    video_ssrc: u32,
}

fn leg(s: &StreamRules, p: Party) -> Result<&LegRules, DropReason> {
    s.legs.get(p.index()).ok_or(DropReason::Malformed)
}

fn leg_mut(s: &mut StreamRules, p: Party) -> Result<&mut LegRules, DropReason> {
    s.legs.get_mut(p.index()).ok_or(DropReason::Malformed)
}

impl CallRules {
    /// The rules of a call about to be established. Fails only on an unusable SRTP key.
    pub fn new(setup: &RulesSetup) -> Result<CallRules, SrtpError> {
        let mut streams = Vec::with_capacity(setup.streams.len());
        for s in &setup.streams {
            let [a, b] = &s.legs;
            streams.push(StreamRules {
                kind: s.kind.clone(),
                encrypted: s.encrypted,
                legs: [
                    LegRules::new(a, setup.latch_after, s.clock_rate)?,
                    LegRules::new(b, setup.latch_after, s.clock_rate)?,
                ],
                transmitter_ssrcs: SsrcFilter::new(&s.transmitter_ssrcs),
                keyframes: KeyframePolicy::default(),
            });
        }
        let control = |c: &Option<ControlSetup>| -> Result<Option<ControlRules>, SrtpError> {
            c.as_ref()
                .map(|c| ControlRules::new(c, setup.latch_after))
                .transpose()
        };
        let [c0, c1] = &setup.control;
        Ok(CallRules {
            arbiter: setup.arbiter.clone(),
            transmitter: setup.transmitter,
            per_leg: setup.security == MediaSecurity::PerLeg,
            streams,
            control: [control(c0)?, control(c1)?],
            server_ssrc: setup.server_ssrc,
            video_ssrc: setup.video_ssrc,
        })
    }

    /// The address `party` has shown up from, on any socket of any of its streams: the IP of
    /// the first confirmed source. Looked up only for a packet from an address its socket does
    /// not know yet (the rare path).
    fn present(&self, party: Party) -> Option<IpAddr> {
        self.streams
            .iter()
            .filter_map(|s| s.legs.get(party.index()))
            .find_map(LegRules::source_ip)
    }

    /// `party` proved itself at `ip` (see [`LegRules::admit`]): weak latches of its sockets to
    /// other IPs give way. The rare path: at most once per socket.
    /// An SSRC the transmitter's filter adopted from the stranger is forgotten with it.
    fn proved(&mut self, party: Party, ip: IpAddr) {
        let transmits = party == self.transmitter;
        for s in &mut self.streams {
            let gave_way = s
                .legs
                .get_mut(party.index())
                .is_some_and(|l| l.yield_weak(ip));
            if gave_way && transmits {
                s.transmitter_ssrcs.forget();
            }
        }
    }

    /// Whether `from` is new to `party`'s socket on stream `si` (its RTCP socket when `rtcp`).
    fn unknown(&self, si: usize, party: Party, rtcp: bool, from: SocketAddr) -> bool {
        self.streams
            .get(si)
            .and_then(|s| s.legs.get(party.index()))
            .is_some_and(|l| l.is_new(rtcp, from))
    }

    /// The party that transmits.
    pub fn transmitter(&self) -> Party {
        self.transmitter
    }

    /// Number of media streams.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// The media quality of every stream at `now`.
    pub fn quality(&self, now: Instant) -> Vec<StreamQuality> {
        self.streams
            .iter()
            .map(|s| StreamQuality {
                kind: s.kind.clone(),
                legs: s.legs.each_ref().map(|l| LegQuality {
                    receiver_report: l.reports.last,
                    ..l.meter.snapshot(now)
                }),
            })
            .collect()
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
        let rtcp = at.rtcp_socket || classify(pkt) == PacketClass::Rtcp;
        let len = if rtcp {
            self.on_rtcp(at, from, now, pkt, t)?
        } else {
            self.on_rtp(at.stream, at.party, from, now, pkt, t)?
        };
        Ok(Egress { len, rtcp })
    }

    /// Where a packet judged at `at` goes: the peer's latched or negotiated RTP address, or its
    /// RTCP address.
    #[inline]
    pub fn destination(&self, at: Ingress, rtcp: bool) -> Option<SocketAddr> {
        let s = self.streams.get(at.stream)?;
        let peer = s.legs.get(at.party.peer().index())?;
        if rtcp {
            peer.rtcp_destination()
        } else {
            peer.rtp_latch.destination()
        }
    }

    /// One RTP packet from `party` on stream `si`, in place. `Ok(len)`: forward `len` bytes.
    fn on_rtp(
        &mut self,
        si: usize,
        party: Party,
        from: SocketAddr,
        now: Instant,
        seg: &mut [u8],
        t: &mut Tally,
    ) -> Result<usize, DropReason> {
        let per_leg = self.per_leg;
        let present = if self.unknown(si, party, false, from) {
            self.present(party)
        } else {
            None
        };
        let s = self.streams.get_mut(si).ok_or(DropReason::Malformed)?;
        let (len, ssrc, proved) =
            leg_mut(s, party)?.admit((Kind::Rtp, false), seg, from, now, (per_leg, present), t)?;
        if proved {
            self.proved(party, from.ip());
        }
        let s = self.streams.get_mut(si).ok_or(DropReason::Malformed)?;
        let l = leg_mut(s, party)?;
        t.media += 1;
        let p = RtpPacket::new_unchecked(seg.get(..len).unwrap_or_default());
        l.meter
            .on_packet(now, p.sequence_number(), p.timestamp(), p.marker(), len);
        if party != self.transmitter || !self.arbiter.may_forward(party.slot()) {
            return Err(DropReason::NotGranted);
        }
        if !s.transmitter_ssrcs.admit(ssrc) {
            return Err(DropReason::UnknownSsrc);
        }
        if s.kind == MediaKind::Video && (!s.encrypted || per_leg) {
            if let Ok(p) = RtpPacket::new_checked(seg.get(..len).unwrap_or_default()) {
                if s.keyframes.on_video(ssrc, p.timestamp(), p.payload(), now) {
                    if let Some(l) = s.legs.get_mut(party.index()) {
                        l.meter.on_keyframe();
                    }
                }
            }
        }
        leg_mut(s, party.peer())?.seal(Kind::Rtp, seg, len, per_leg)
    }

    /// One RTCP datagram from `party`, in place.
    fn on_rtcp(
        &mut self,
        at: Ingress,
        from: SocketAddr,
        now: Instant,
        seg: &mut [u8],
        t: &mut Tally,
    ) -> Result<usize, DropReason> {
        let per_leg = self.per_leg;
        let from_transmitter = at.party == self.transmitter;
        let present = if self.unknown(at.stream, at.party, at.rtcp_socket, from) {
            self.present(at.party)
        } else {
            None
        };
        let s = self
            .streams
            .get_mut(at.stream)
            .ok_or(DropReason::Malformed)?;
        let (mut len, _, proved) = leg_mut(s, at.party)?.admit(
            (Kind::Rtcp, at.rtcp_socket),
            seg,
            from,
            now,
            (per_leg, present),
            t,
        )?;
        if proved {
            self.proved(at.party, from.ip());
        }
        let s = self
            .streams
            .get_mut(at.stream)
            .ok_or(DropReason::Malformed)?;
        // Where the relay can read RTCP (plain RTP, or decrypted per leg), look inside.
        if !s.encrypted || per_leg {
            let body = seg.get_mut(..len).ok_or(DropReason::Malformed)?;
            if rtcp::validate_compound(body).is_err() {
                return Err(DropReason::Malformed);
            }
            for p in rtcp::compound(body).flatten() {
                match p.kind() {
                    RtcpKind::Goodbye if from_transmitter => t.bye = true,
                    RtcpKind::SenderReport => {
                        // The NTP timestamp's middle 32 bits, as the receiver echoes it in LSR.
                        let ntp = p.body().get(..8).unwrap_or_default();
                        if let Some(mid) = ntp.get(2..6).and_then(|b| b.try_into().ok()) {
                            let peer = leg_mut(s, at.party.peer())?;
                            peer.reports.sender_report(u32::from_be_bytes(mid), now);
                        }
                        leg_mut(s, at.party)?.reports.receiver_report(&p, now);
                    }
                    RtcpKind::ReceiverReport => {
                        leg_mut(s, at.party)?.reports.receiver_report(&p, now);
                    }
                    _ => {}
                }
            }
            if !from_transmitter && s.kind == MediaKind::Video {
                let (kept, dropped) = s.keyframes.filter_requests(body, now);
                t.drop_n(DropReason::RateLimited, dropped);
                len = kept;
                if len == 0 {
                    return Ok(0); // every packet in it was dropped (and counted) above
                }
            }
        }
        leg_mut(s, at.party.peer())?.seal(Kind::Rtcp, seg, len, per_leg)
    }

    /// Writes a keyframe request (PLI) toward the transmitter for the first video stream where
    /// the relay can sign RTCP and the policy allows one now. Returns the stream and the length.
    pub fn keyframe_request(&mut self, now: Instant, buf: &mut [u8]) -> Option<(usize, usize)> {
        let per_leg = self.per_leg;
        let tx = self.transmitter;
        let (server, video) = (self.server_ssrc, self.video_ssrc);
        for (si, s) in self.streams.iter_mut().enumerate() {
            if s.kind != MediaKind::Video || (s.encrypted && !per_leg) {
                continue;
            }
            let Ok(len) = rtcp::emit_pli(server, video, buf) else {
                continue;
            };
            if leg(s, tx).ok()?.rtcp_destination().is_none() || !s.keyframes.may_request(now) {
                continue;
            }
            let len = leg_mut(s, tx)
                .ok()?
                .seal(Kind::Rtcp, buf, len, per_leg)
                .ok()?;
            return Some((si, len));
        }
        None
    }

    /// Where RTCP to `party` on stream `si` goes.
    pub fn rtcp_destination(&self, si: usize, party: Party) -> Option<SocketAddr> {
        self.streams
            .get(si)?
            .legs
            .get(party.index())?
            .rtcp_destination()
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
        let c = self
            .control
            .get_mut(party.index())
            .and_then(Option::as_mut)
            .ok_or(DropReason::Malformed)?;
        c.admit(from, now, buf)
    }

    /// Protects a control message of `len` bytes in `buf` toward `party` (SRTCP when the channel
    /// has a key) and says where it goes. `None`: the party has no channel or no address yet.
    pub fn seal_control(
        &mut self,
        party: Party,
        buf: &mut [u8],
        len: usize,
    ) -> Option<Result<(usize, SocketAddr), SrtpError>> {
        self.control
            .get_mut(party.index())?
            .as_mut()?
            .seal(buf, len)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests' own epoch; time then moves virtually
mod tests;
