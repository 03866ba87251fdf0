//! The one per-packet rule set, over a member set: a group call with **fan-out**, and a
//! one-to-one call as two members on the in-place path of the `pair` module (its face is
//! [`CallRules`](super::CallRules)).
//!
//! Per packet, for every call kind (`rtp_front`, `rtcp_front`): the **source screen** of the ingress
//! member's leg, **SRTP** authentication in per_leg mode, the **latch**, the **arbiter** (one
//! load: [`Arbiter::may_forward`]), the transmitter's **SSRC filter**, the **keyframe
//! scan**, then one more load for the receiver set ([`Arbiter::receivers`]) and, for each
//! receiver with an address, one [`Delivery`]:
//!
//! * **end_to_end**: every delivery carries the same bytes (one buffer in the [`FanOut`], the
//!   packet copied into it once, whatever the number of receivers);
//! * **per_leg**: the plain packet is copied into the receiver's own buffer and protected with
//!   that receiver leg's outbound SRTP context (one encryption per receiver leg). That context
//!   takes any number of transmitter SSRCs over the call's life: past
//!   [`ACTIVE_SSRCS`](crate::srtp::ACTIVE_SSRCS) the least recently used one is evicted and
//!   comes back with its exact state, and no SSRC and index is ever protected twice (the
//!   [`srtp`](crate::srtp) module docs say how).
//!
//! The [`FanOut`] is reusable output: its buffers grow to their high-water mark once and are
//! reused, so judging allocates nothing per packet or per receiver.
//!
//! **RTCP.** Where the relay can read it (plain RTP, or per_leg after SRTCP authentication):
//!
//! * from a granted transmitter, everything but receiver reports and feedback (SR, SDES, BYE,
//!   APP, XR) fans out to its receivers, each copy re-protected per leg;
//! * feedback (NACK, PLI, FIR and other RTPFB/PSFB) goes **only to the transmitter it names**
//!   by media SSRC (the FIR entry's SSRC for FIR) among the transmitters the sender receives, or
//!   to the only transmitter it receives when the SSRC names none; feedback that names none of
//!   several is dropped (`unknown_ssrc`). PLI/FIR pass the transmitter's [`KeyframePolicy`]: the
//!   throttle is kept **per transmitter across all its receivers**, so 50 receivers asking at
//!   once reach it as one request per [`KEYFRAME_REQUEST_INTERVAL`](super::KEYFRAME_REQUEST_INTERVAL);
//!   the others are dropped (`rate_limited`). NACKs are not merged: each receiver's reaches
//!   the transmitter. What reaches a transmitter is reduced-size RTCP (RFC 5506): the feedback
//!   packets only. In per_leg mode their sender SSRC becomes the relay's (`server_ssrc`, as in
//!   its own PLI): the relay terminates SRTCP toward the transmitter, and its outbound SRTP
//!   context keeps the state of [`ACTIVE_SSRCS`](crate::srtp::ACTIVE_SSRCS) sender SSRCs at
//!   a time, fewer than a group's receivers (a 17th evicts one);
//! * receiver reports are consumed for quality ([`GroupRules::quality`]), never fanned out;
//!   RTCP with nowhere to go is consumed (`Ok` with no delivery), not counted as a drop.
//!
//! Where RTCP is **opaque** (SRTCP in end_to_end mode) it cannot be read, split or throttled:
//! a datagram from a member goes, unchanged, to the receivers of that member when it transmits
//! and to every transmitter it receives (its feedback and reports must reach them), each
//! recipient once.

mod pair;
mod snapshot;

pub(super) use pair::Pair;
#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests' own epoch; time then moves virtually
mod tests;

pub use snapshot::{GroupMemberRulesSnapshot, GroupRulesSnapshot, GroupStreamRulesSnapshot};

use super::{
    ControlRules, ControlSetup, KeyframePolicy, Kind, LegQuality, LegRules, LegSetup, RtpMark,
    SsrcFilter, Tally,
};
use crate::control::arbiter::{slots, Arbiter, Slot, MAX_MEMBERS};
use crate::control::MediaSecurity;
use crate::relay::stats::DropReason;
use crate::sdp::MediaKind;
use crate::srtp::SrtpError;
use crate::wire::demux::{classify, PacketClass};
use crate::wire::rtcp::{self, RtcpKind, RtcpPacket};
use crate::wire::rtp::RtpPacket;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// Size of each buffer of a [`FanOut`]: the largest datagram (plain, plus the SRTP overhead of
/// the receiver leg) that fans out. Larger ones are dropped as `malformed`.
pub const FANOUT_MTU: usize = 2048;

/// One media stream of a group call, the same for every member (fixed by the first member's
/// offer); as the rules, the control plane, the worker and a high-availability image
/// ([`GroupStreamImage`](crate::relay::GroupStreamImage), the same type) hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct GroupStreamSetup {
    /// Media type.
    pub kind: MediaKind,
    /// SRTP on the wire (RTP/SAVP...): opaque past the header in end_to_end mode.
    pub encrypted: bool,
    /// RTP clock rate in Hz (jitter); 0 when unknown.
    pub clock_rate: u32,
    /// The encoding name of the first format (`H264`, `VP8`, ...), if the SDP named it: what
    /// a WebRTC viewer of the stream is offered.
    #[cfg_attr(feature = "ha", serde(default))]
    pub encoding: Option<String>,
}

impl GroupStreamSetup {
    /// A stream of `kind`, SRTP on the wire when `encrypted`, at `clock_rate` Hz, of
    /// `encoding` (if known).
    pub fn new(
        kind: &MediaKind,
        encrypted: bool,
        clock_rate: u32,
        encoding: Option<String>,
    ) -> Self {
        GroupStreamSetup {
            kind: kind.clone(),
            encrypted,
            clock_rate,
            encoding,
        }
    }
}

/// Everything the rules of one group call need before members join.
#[derive(Debug, Clone)]
pub struct GroupRulesSetup {
    /// The group's arbiter, shared with its transmission control server.
    pub arbiter: Arc<Arbiter>,
    /// How media is protected.
    pub security: MediaSecurity,
    /// The group's media streams (video, maybe audio), in the order of every member's legs.
    pub streams: Vec<GroupStreamSetup>,
    /// The relay's SSRC (sender of its own RTCP, e.g. keyframe requests).
    pub server_ssrc: u32,
    /// Consecutive packets from one new address that latch a leg without other evidence.
    pub latch_after: u32,
}

/// One member's media legs and control channel.
#[derive(Debug, Clone, Default)]
pub struct MemberMedia {
    /// One leg per stream of the group, in the same order. A missing leg is a leg with no
    /// address: the member neither sends nor receives on that stream; extra legs are ignored.
    pub legs: Vec<LegSetup>,
    /// Its transmission control channel, if it has one.
    pub control: Option<ControlSetup>,
}

/// Where a datagram came in: which stream, which member's relay socket of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupIngress {
    /// Index of the stream in the group.
    pub stream: usize,
    /// Whose leg (the member whose relay socket received it).
    pub member: Slot,
    /// The leg's separate RTCP socket (no rtcp-mux), rather than its RTP socket.
    pub rtcp_socket: bool,
}

/// One copy to send: from `member`'s relay socket of `stream` (its RTCP socket when `rtcp` and
/// the leg has one) to `dest`; the bytes are [`FanOut::bytes`] of the same index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The member it goes to (whose relay socket sends it).
    pub member: Slot,
    /// Index of the stream.
    pub stream: usize,
    /// RTCP (to the member's RTCP destination) rather than RTP.
    pub rtcp: bool,
    /// The member's latched or negotiated address.
    pub dest: SocketAddr,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    delivery: Delivery,
    /// Buffer index (0: the shared one).
    buf: usize,
    len: usize,
}

/// Reusable output of [`GroupRules::judge`]: the deliveries of one datagram and their bytes.
///
/// Buffer 0 holds bytes shared by several deliveries (end_to_end fan-out); each per_leg copy
/// has a buffer of its own. Buffers of [`FANOUT_MTU`] bytes are added when a datagram needs
/// more than ever before, and kept: keep one `FanOut` per worker and reuse it.
pub struct FanOut {
    entries: Vec<Entry>,
    bufs: Vec<u8>,
    /// Buffers in use (buffer 0 included once anything is written).
    used: usize,
}

impl core::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FanOut")
            .field("entries", &self.entries)
            .field("buffers", &(self.bufs.len() / FANOUT_MTU))
            .finish()
    }
}

impl Default for FanOut {
    fn default() -> Self {
        Self::new()
    }
}

impl FanOut {
    /// Room for a delivery to every member (twice: RTCP may go to a member as a receiver and
    /// as a transmitter); buffers for a few receivers, grown on demand.
    pub fn new() -> Self {
        FanOut {
            entries: Vec::with_capacity(2 * MAX_MEMBERS),
            bufs: vec![0; 4 * FANOUT_MTU],
            used: 0,
        }
    }

    /// Forgets the deliveries (keeps the buffers).
    #[inline]
    pub fn clear(&mut self) {
        self.entries.clear();
        self.used = 0;
    }

    /// Number of deliveries.
    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No delivery.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Delivery `i` and its bytes.
    #[inline]
    pub fn get(&self, i: usize) -> Option<(&Delivery, &[u8])> {
        let e = self.entries.get(i)?;
        Some((&e.delivery, self.buf(e.buf, e.len)?))
    }

    /// The bytes of delivery `i`.
    #[inline]
    pub fn bytes(&self, i: usize) -> Option<&[u8]> {
        self.get(i).map(|(_, b)| b)
    }

    /// Whether delivery `i` shares its bytes with the other shared deliveries (end_to_end
    /// fan-out: one buffer, many destinations).
    #[inline]
    pub fn is_shared(&self, i: usize) -> bool {
        self.entries.get(i).is_some_and(|e| e.buf == 0)
    }

    /// Every delivery with its bytes, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Delivery, &[u8])> + '_ {
        (0..self.entries.len()).filter_map(|i| self.get(i))
    }

    fn buf(&self, k: usize, len: usize) -> Option<&[u8]> {
        let at = k.checked_mul(FANOUT_MTU)?;
        self.bufs.get(at..at.checked_add(len)?)
    }

    fn buf_mut(&mut self, k: usize) -> &mut [u8] {
        let at = k.saturating_mul(FANOUT_MTU);
        let end = at.saturating_add(FANOUT_MTU);
        if self.bufs.len() < end {
            self.bufs.resize(end, 0); // a new high-water mark; kept afterwards
        }
        self.bufs.get_mut(at..end).unwrap_or_default()
    }

    /// A fresh buffer of its own for one delivery: its index and its bytes.
    fn own(&mut self) -> (usize, &mut [u8]) {
        let k = self.used.max(1);
        self.used = k + 1;
        (k, self.buf_mut(k))
    }

    /// Buffer 0, the shared one.
    fn shared_mut(&mut self) -> &mut [u8] {
        self.used = self.used.max(1);
        self.buf_mut(0)
    }

    fn push(&mut self, delivery: Delivery, buf: usize, len: usize) {
        self.entries.push(Entry { delivery, buf, len });
    }
}

/// One member's state on one stream.
#[derive(Debug)]
struct MemberStream {
    leg: LegRules,
    /// The SSRCs it may send with while it transmits.
    ssrcs: SsrcFilter,
    /// The SSRC of its last media packet that passed (the media SSRC of keyframe requests).
    seen: Option<u32>,
    /// Its keyframes and the keyframe requests that reached it (as a transmitter), across all
    /// its receivers.
    keyframes: KeyframePolicy,
}

#[derive(Debug)]
struct Member {
    streams: Vec<MemberStream>,
    control: Option<ControlRules>,
}

/// The media quality of one member's legs: what it sent on each stream, and what it reported
/// receiving.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberQuality {
    /// The member.
    pub member: Slot,
    /// Per stream of the group, in order: its media type and the member's leg.
    pub streams: Vec<(MediaKind, LegQuality)>,
}

/// The per-packet rules of one group call: every member's legs and control channel.
#[derive(Debug)]
pub struct GroupRules {
    arbiter: Arc<Arbiter>,
    per_leg: bool,
    streams: Vec<GroupStreamSetup>,
    members: Vec<Option<Member>>,
    server_ssrc: u32,
    latch_after: u32,
    /// Members with media activity since [`GroupRules::take_active`].
    active: u64,
    /// RTP sequence wraps seen, on every leg ([`GroupRules::wraps`]).
    wraps: u64,
    /// The call's media recording, when it is recorded: every RTP packet that passes and
    /// every RTCP datagram admitted from a member is copied to it (plain where the relay
    /// decrypts, else as received).
    tap: Option<Box<crate::relay::recording::MediaTap>>,
    /// Watchers of the call ([`crate::relay::watch`]): each gets a copy of every RTP packet
    /// of its stream that passes. Empty in nearly every call.
    viewers: Vec<crate::relay::watch::WatchSink>,
}

/// The IP `member` has shown up from on any of its sockets (the rare path of
/// [`GroupRules`]' `present`).
#[cold]
#[inline(never)]
fn present_ip(member: &Member) -> Option<IpAddr> {
    member.streams.iter().find_map(|s| s.leg.source_ip())
}

#[inline]
fn rtcp_readable(s: &GroupStreamSetup, per_leg: bool) -> bool {
    !s.encrypted || per_leg
}

/// An RTCP datagram past [`GroupRules`]' `rtcp_front`: its plain length, and what its stream
/// lets the relay do with it.
#[derive(Debug, Clone, Copy)]
pub(super) struct RtcpIn {
    /// The plain length, in place in the datagram.
    pub(super) len: usize,
    /// The relay can read it (plain RTP, or per_leg): it may look inside.
    pub(super) readable: bool,
    /// Of a video stream.
    pub(super) video: bool,
}

/// The transmitter SSRC a feedback packet names: the media SSRC, or the first FIR entry's.
fn feedback_target<T: AsRef<[u8]>>(p: &RtcpPacket<T>) -> Option<u32> {
    if p.kind() == RtcpKind::Fir {
        p.fir_entries().next().map(|(ssrc, _)| ssrc)
    } else {
        p.media_ssrc()
    }
}

fn is_feedback(k: RtcpKind) -> bool {
    matches!(
        k,
        RtcpKind::Nack
            | RtcpKind::TransportFeedback(_)
            | RtcpKind::Pli
            | RtcpKind::Fir
            | RtcpKind::PayloadFeedback(_)
    )
}

impl GroupRules {
    /// The rules of a group call with no member yet.
    pub fn new(setup: &GroupRulesSetup) -> Self {
        GroupRules {
            arbiter: setup.arbiter.clone(),
            per_leg: setup.security == MediaSecurity::PerLeg,
            streams: setup.streams.clone(),
            members: Vec::new(),
            server_ssrc: setup.server_ssrc,
            latch_after: setup.latch_after,
            active: 0,
            wraps: 0,
            tap: None,
            viewers: Vec::new(),
        }
    }

    /// Records the call's media from now on in `tap`.
    pub(crate) fn set_tap(&mut self, tap: crate::relay::recording::MediaTap) {
        self.tap = Some(Box::new(tap));
    }

    /// The call's media recording, taken out of the rules.
    pub(crate) fn take_tap(&mut self) -> Option<crate::relay::recording::MediaTap> {
        self.tap.take().map(|t| *t)
    }

    /// Whether the call's media is copied out (recorded or watched): asked by the kernel
    /// fast path, which would forward around the copy.
    #[cfg(feature = "kernel-offload")]
    pub(crate) fn tapped(&self) -> bool {
        self.tap.is_some() || !self.viewers.is_empty()
    }

    /// Adds a watcher of the first stream of its kind: the stream, or why not (the relay
    /// cannot read the media: end_to_end; no such stream).
    pub(crate) fn watch(
        &mut self,
        mut sink: crate::relay::watch::WatchSink,
    ) -> Result<crate::relay::watch::WatchedStream, &'static str> {
        let (index, s) = self
            .streams
            .iter()
            .enumerate()
            .find(|(_, s)| &s.kind == sink.kind())
            .ok_or("the call has no stream of that kind")?;
        if !rtcp_readable(s, self.per_leg) {
            return Err(
                "the relay cannot read this call's media (end_to_end): it holds no media key",
            );
        }
        let stream = crate::relay::watch::WatchedStream {
            index,
            kind: s.kind.clone(),
            encoding: s.encoding.clone(),
            clock_rate: s.clock_rate,
            max_transmitters: 1,
        };
        sink.stream = index;
        self.viewers.push(sink);
        Ok(stream)
    }

    /// Hands a copy of RTP packet `body` of stream `si` to its watchers, forgetting the
    /// ones that left.
    #[cold]
    #[inline(never)]
    fn feed_viewers(
        viewers: &mut Vec<crate::relay::watch::WatchSink>,
        si: usize,
        now: Instant,
        body: &[u8],
    ) {
        viewers.retain(|v| v.stream != si || v.offer(now, body));
    }

    /// Members with the grant now (a bit per slot).
    pub(crate) fn granted(&self) -> u64 {
        self.arbiter.permitted()
    }

    /// The call's media recording, if it is recorded.
    #[inline]
    pub(crate) fn tap_mut(&mut self) -> Option<&mut crate::relay::recording::MediaTap> {
        self.tap.as_deref_mut()
    }

    /// Whether the media is decrypted by the relay (per_leg), and per stream its kind and
    /// whether it is SRTP on the wire: what a recording's metadata says.
    pub(crate) fn recording_traits(&self) -> (bool, Vec<(MediaKind, bool)>) {
        let streams = self.streams.iter();
        (
            self.per_leg,
            streams.map(|s| (s.kind.clone(), s.encrypted)).collect(),
        )
    }

    /// RTP sequence wraps seen so far on every leg: each moved an SRTP rollover counter, which
    /// a call image should hold at once (high availability writes one when this moves).
    pub fn wraps(&self) -> u64 {
        self.wraps
    }

    /// The group's arbiter.
    pub fn arbiter(&self) -> &Arc<Arbiter> {
        &self.arbiter
    }

    /// Number of media streams.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// The members, as a set of slot bits.
    pub fn members(&self) -> u64 {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_some())
            .filter_map(|(i, _)| Slot::new(i))
            .fold(0, |set, s| set | s.bit())
    }

    /// Adds (or replaces) the member in `slot`. Fails only on an unusable SRTP key.
    pub fn add_member(&mut self, slot: Slot, media: &MemberMedia) -> Result<(), SrtpError> {
        let none = LegSetup::default();
        let mut streams = Vec::with_capacity(self.streams.len());
        for (i, s) in self.streams.iter().enumerate() {
            let l = media.legs.get(i).unwrap_or(&none);
            streams.push(MemberStream {
                leg: LegRules::new(l, self.latch_after, s.clock_rate)?,
                ssrcs: SsrcFilter::new(&[]),
                seen: None,
                keyframes: KeyframePolicy::default(),
            });
        }
        let control = media
            .control
            .as_ref()
            .map(|c| ControlRules::new(c, self.latch_after))
            .transpose()?;
        if self.members.len() <= slot.index() {
            // Grown to the highest slot in use: a two-member call holds two entries, not 64.
            self.members.resize_with(slot.index() + 1, || None);
        }
        if let Some(m) = self.members.get_mut(slot.index()) {
            *m = Some(Member { streams, control });
        }
        Ok(())
    }

    /// Forgets the member in `slot` (its legs, SRTP contexts and control channel). The arbiter
    /// is its transmission control server's to update.
    pub fn remove_member(&mut self, slot: Slot) {
        if let Some(m) = self.members.get_mut(slot.index()) {
            *m = None;
        }
        self.active &= !slot.bit();
    }

    /// The SSRCs a granted transmitter may send with (its Granted audio/video SSRCs and its
    /// announced ones), on every stream; cleared with an empty slice when its transmission
    /// ends (then the first SSRC seen is adopted, as [`SsrcFilter`] does).
    pub fn set_transmitter_ssrcs(&mut self, slot: Slot, ssrcs: &[u32]) {
        if let Some(m) = self.member_mut(slot) {
            for s in &mut m.streams {
                s.ssrcs = SsrcFilter::new(ssrcs);
            }
        }
    }

    /// Members whose RTP passed the source checks since the last call (media activity, for
    /// the group's transmission control server), as a set of slot bits; resets it.
    pub fn take_active(&mut self) -> u64 {
        core::mem::take(&mut self.active)
    }

    #[inline]
    fn member_mut(&mut self, slot: Slot) -> Option<&mut Member> {
        self.members.get_mut(slot.index()).and_then(Option::as_mut)
    }

    #[inline]
    fn member_stream_mut(&mut self, slot: Slot, si: usize) -> Option<&mut MemberStream> {
        self.member_mut(slot)?.streams.get_mut(si)
    }

    /// The IP `m` has shown up from on any socket of any stream (see [`CallRules`]' rule: weak
    /// evidence from another IP then moves none of its sockets), looked up only for a packet
    /// from an address its socket does not know yet.
    #[inline]
    fn present(&self, m: Slot, si: usize, rtcp: bool, from: SocketAddr) -> Option<IpAddr> {
        let member = self.members.get(m.index()).and_then(Option::as_ref)?;
        if !member.streams.get(si)?.leg.is_new(rtcp, from) {
            return None;
        }
        present_ip(member)
    }

    /// `m` proved itself at `ip` (see [`LegRules`]' `admit`): weak latches of its sockets to
    /// other IPs give way. The rare path: at most once per socket.
    /// An SSRC the member's filter adopted from the stranger is forgotten with it.
    fn proved(&mut self, m: Slot, ip: IpAddr) {
        if let Some(member) = self.member_mut(m) {
            for s in &mut member.streams {
                if s.leg.yield_weak(ip) {
                    s.ssrcs.forget();
                    s.seen = None;
                }
            }
        }
    }

    #[inline]
    fn member_stream(&self, slot: Slot, si: usize) -> Option<&MemberStream> {
        self.members
            .get(slot.index())
            .and_then(Option::as_ref)?
            .streams
            .get(si)
    }

    /// Where RTP to `slot` on stream `si` goes (none while unknown, or where the member only
    /// sends on the stream).
    pub fn rtp_destination(&self, slot: Slot, si: usize) -> Option<SocketAddr> {
        self.member_stream(slot, si)?.leg.rtp_destination()
    }

    /// Where RTCP to `slot` on stream `si` goes.
    pub fn rtcp_destination(&self, slot: Slot, si: usize) -> Option<SocketAddr> {
        self.member_stream(slot, si)?.leg.rtcp_destination()
    }

    /// The media quality of every member at `now`.
    pub fn quality(&self, now: Instant) -> Vec<MemberQuality> {
        self.members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| Some((Slot::new(i)?, m.as_ref()?)))
            .map(|(member, m)| MemberQuality {
                member,
                streams: self
                    .streams
                    .iter()
                    .zip(&m.streams)
                    .map(|(s, ms)| (s.kind.clone(), pair::leg_quality(ms, now)))
                    .collect(),
            })
            .collect()
    }

    /// Judges one datagram (one segment of a GRO batch) that arrived at `at` from `from`, in
    /// place. The copies to send are put in `out` (cleared first). `Ok` with no delivery: the
    /// datagram was consumed (RTCP for the relay only) or every part of it was dropped and
    /// counted in `t`. RTP that passed the source checks counts as media activity of
    /// `at.member` (`t.media`, and [`Self::take_active`]); `t.bye`: `at.member` sent RTCP BYE
    /// (where RTCP is readable).
    #[inline]
    pub fn judge(
        &mut self,
        at: GroupIngress,
        from: SocketAddr,
        now: Instant,
        pkt: &mut [u8],
        out: &mut FanOut,
        t: &mut Tally,
    ) -> Result<(), DropReason> {
        out.clear();
        if at.rtcp_socket || classify(pkt) == PacketClass::Rtcp {
            return self.on_rtcp(at, from, now, pkt, out, t);
        }
        let len = self.rtp_front(at, from, now, pkt, t, true)?;
        let m = at.member;
        let to = self.arbiter.receivers(m) & !m.bit();
        if to == 0 {
            return Err(DropReason::NoReceivers);
        }
        let body = pkt.get(..len).ok_or(DropReason::Malformed)?;
        // Copies that fail to protect are counted each; none with an address is one drop.
        if self.fan_out(Kind::Rtp, at.stream, to, body, out, t)? == 0 {
            return Err(DropReason::NoReceivers);
        }
        Ok(())
    }

    /// What every RTP packet goes through, whatever the number of receivers: the member leg's
    /// front ([`LegRules`]' `admit`: screen, SRTP, latch), the meter, the arbiter (and
    /// `may_send`, the call procedure's word on this member), the member's SSRC filter and the
    /// keyframe scan. Returns the plain length of the packet, in place in `pkt`.
    #[inline]
    pub(super) fn rtp_front(
        &mut self,
        at: GroupIngress,
        from: SocketAddr,
        now: Instant,
        pkt: &mut [u8],
        t: &mut Tally,
        may_send: bool,
    ) -> Result<usize, DropReason> {
        let per_leg = self.per_leg;
        let m = at.member;
        let (readable, video) = self.stream_traits(at.stream)?;
        let scan = video && readable;
        let present = self.present(m, at.stream, false, from);
        let ms = self
            .member_stream_mut(m, at.stream)
            .ok_or(DropReason::Malformed)?;
        let (len, ssrc, proved) =
            ms.leg
                .admit((Kind::Rtp, false), pkt, from, now, (per_leg, present), t)?;
        if proved {
            self.proved(m, from.ip());
        }
        let ms = self
            .members
            .get_mut(m.index())
            .and_then(Option::as_mut)
            .and_then(|mm| mm.streams.get_mut(at.stream))
            .ok_or(DropReason::Malformed)?;
        t.media += 1;
        self.active |= m.bit();
        let body = pkt.get(..len).ok_or(DropReason::Malformed)?;
        let p = RtpPacket::new_unchecked(body);
        let wrapped =
            ms.leg
                .meter
                .on_packet(now, p.sequence_number(), p.timestamp(), p.marker(), len);
        if wrapped {
            t.wrapped = true;
            self.wraps += 1;
        }
        if !may_send || !self.arbiter.may_forward(m) {
            return Err(DropReason::NotGranted);
        }
        if !ms.ssrcs.admit(ssrc) {
            return Err(DropReason::UnknownSsrc);
        }
        ms.seen = Some(ssrc);
        t.forwarded(RtpMark {
            ssrc,
            seq: p.sequence_number(),
            ts: p.timestamp(),
        });
        if let Some(tap) = self.tap.as_deref_mut() {
            tap.packet(at.stream, from, now, body);
        }
        if !self.viewers.is_empty() {
            Self::feed_viewers(&mut self.viewers, at.stream, now, body);
        }
        if scan {
            if let Ok(p) = RtpPacket::new_checked(body) {
                if ms.keyframes.on_video(ssrc, p.timestamp(), p.payload(), now) {
                    ms.leg.meter.on_keyframe();
                }
            }
        }
        Ok(len)
    }

    /// Whether the relay can read stream `si`'s RTCP ([`rtcp_readable`]), and whether it is
    /// a video stream.
    #[inline]
    fn stream_traits(&self, si: usize) -> Result<(bool, bool), DropReason> {
        let conf = self.streams.get(si).ok_or(DropReason::Malformed)?;
        Ok((
            rtcp_readable(conf, self.per_leg),
            conf.kind == MediaKind::Video,
        ))
    }

    /// What every RTCP datagram goes through first: the member leg's front (screen, SRTCP,
    /// latch). Returns the plain length (in place in `pkt`) and the stream's traits.
    #[inline]
    pub(super) fn rtcp_front(
        &mut self,
        at: GroupIngress,
        from: SocketAddr,
        now: Instant,
        pkt: &mut [u8],
        t: &mut Tally,
    ) -> Result<RtcpIn, DropReason> {
        let (readable, video) = self.stream_traits(at.stream)?;
        let present = self.present(at.member, at.stream, at.rtcp_socket, from);
        let per_leg = self.per_leg;
        let ms = self
            .member_stream_mut(at.member, at.stream)
            .ok_or(DropReason::Malformed)?;
        let (len, _, proved) = ms.leg.admit(
            (Kind::Rtcp, at.rtcp_socket),
            pkt,
            from,
            now,
            (per_leg, present),
            t,
        )?;
        if proved {
            self.proved(at.member, from.ip());
        }
        if let (Some(tap), Some(body)) = (self.tap.as_deref_mut(), pkt.get(..len)) {
            // As it came in (decrypted where the relay decrypts), before any filtering.
            tap.packet(at.stream, from, now, body);
        }
        Ok(RtcpIn {
            len,
            readable,
            video,
        })
    }

    /// One delivery of plain `body` to each member of `to` with an address on stream `si`:
    /// the shared buffer (no SRTP toward it), or its own copy protected with its leg's key.
    /// Returns how many members had an address.
    fn fan_out(
        &mut self,
        kind: Kind,
        si: usize,
        to: u64,
        body: &[u8],
        out: &mut FanOut,
        t: &mut Tally,
    ) -> Result<usize, DropReason> {
        if body.len() > FANOUT_MTU {
            return Err(DropReason::Malformed);
        }
        let per_leg = self.per_leg;
        let mut shared = false;
        let mut addressed = 0;
        for r in slots(to) {
            let Some(ms) = self
                .members
                .get_mut(r.index())
                .and_then(Option::as_mut)
                .and_then(|mm| mm.streams.get_mut(si))
            else {
                continue;
            };
            let leg = &mut ms.leg;
            let rtcp = kind == Kind::Rtcp;
            let dest = if rtcp {
                leg.rtcp_destination()
            } else {
                leg.rtp_destination()
            };
            let Some(dest) = dest else {
                continue;
            };
            let d = Delivery {
                member: r,
                stream: si,
                rtcp,
                dest,
            };
            addressed += 1;
            if per_leg && leg.srtp_out.is_some() {
                let (k, buf) = out.own();
                let Some(plain) = buf.get_mut(..body.len()) else {
                    continue;
                };
                plain.copy_from_slice(body);
                match leg.seal(kind, buf, body.len(), true) {
                    Ok(n) => out.push(d, k, n),
                    Err(e) => t.drop(e),
                }
            } else {
                if !shared {
                    let Some(b) = out.shared_mut().get_mut(..body.len()) else {
                        return Err(DropReason::Malformed);
                    };
                    b.copy_from_slice(body);
                    shared = true;
                }
                out.push(d, 0, body.len());
            }
        }
        Ok(addressed)
    }

    /// The transmitters `m` receives: permitted members other than `m` whose routes hold it.
    fn sources_of(&self, m: Slot) -> u64 {
        slots(self.arbiter.permitted() & !m.bit())
            .filter(|&s| self.arbiter.receivers(s) & m.bit() != 0)
            .fold(0, |set, s| set | s.bit())
    }

    fn on_rtcp(
        &mut self,
        at: GroupIngress,
        from: SocketAddr,
        now: Instant,
        pkt: &mut [u8],
        out: &mut FanOut,
        t: &mut Tally,
    ) -> Result<(), DropReason> {
        let (m, si) = (at.member, at.stream);
        let RtcpIn {
            len,
            readable,
            video,
        } = self.rtcp_front(at, from, now, pkt, t)?;
        let receivers = if self.arbiter.may_forward(m) {
            self.arbiter.receivers(m) & !m.bit()
        } else {
            0
        };
        let sources = self.sources_of(m);
        let body = pkt.get(..len).ok_or(DropReason::Malformed)?;
        if !readable {
            // Opaque SRTCP: to its receivers and to the transmitters it receives, unchanged.
            return self
                .fan_out(Kind::Rtcp, si, receivers | sources, body, out, t)
                .map(|_| ());
        }
        if rtcp::validate_compound(body).is_err() {
            return Err(DropReason::Malformed);
        }
        let sender_part = self.read_reports(at, body, receivers, true, now, t);
        // A transmitter's SR, SDES, BYE...: to its receivers.
        if sender_part && receivers != 0 {
            let mut part = [0u8; FANOUT_MTU];
            let n = select(body, &mut part, |p| {
                !is_feedback(p.kind()) && p.kind() != RtcpKind::ReceiverReport
            });
            if let Some(part) = part.get(..n) {
                self.fan_out(Kind::Rtcp, si, receivers, part, out, t)?;
            }
        }
        // Feedback: each packet to the transmitter it names, throttled per transmitter.
        if sources != 0 {
            self.route_feedback(si, body, sources, (video, now), out, t);
        }
        Ok(())
    }

    /// Reads the reports of a (validated) compound from the member of `at`: its receiver
    /// reports and sender reports for its leg's round-trip time, each sender report's NTP time
    /// for the legs of `receivers` (they echo it in LSR), a BYE into `t` when `bye` counts.
    /// Returns whether it holds anything for receivers (SR, SDES, BYE, APP...).
    pub(super) fn read_reports(
        &mut self,
        at: GroupIngress,
        body: &[u8],
        receivers: u64,
        bye: bool,
        now: Instant,
        t: &mut Tally,
    ) -> bool {
        let (m, si) = (at.member, at.stream);
        let mut sender_part = false;
        for p in rtcp::compound(body).flatten() {
            let k = p.kind();
            if is_feedback(k) {
                continue;
            }
            if matches!(k, RtcpKind::ReceiverReport | RtcpKind::SenderReport) {
                if let Some(ms) = self.member_stream_mut(m, si) {
                    ms.leg.reports.receiver_report(&p, now);
                }
            }
            if k == RtcpKind::ReceiverReport {
                continue;
            }
            sender_part = true;
            t.bye |= bye && k == RtcpKind::Goodbye;
            if k == RtcpKind::SenderReport {
                // The NTP timestamp's middle 32 bits, as each receiver echoes it in LSR.
                let ntp = p.body().get(..8).unwrap_or_default();
                if let Some(mid) = ntp.get(2..6).and_then(|b| b.try_into().ok()) {
                    for r in slots(receivers) {
                        if let Some(rs) = self.member_stream_mut(r, si) {
                            rs.leg.reports.sender_report(u32::from_be_bytes(mid), now);
                        }
                    }
                }
            }
        }
        sender_part
    }

    /// The feedback packets of a (validated) compound from a member: each to the transmitter
    /// among `sources` it names (or the only one), throttled per transmitter (keyframe
    /// requests on video), re-protected toward it; unrouted ones counted `unknown_ssrc`.
    fn route_feedback(
        &mut self,
        si: usize,
        body: &[u8],
        sources: u64,
        (video, now): (bool, Instant),
        out: &mut FanOut,
        t: &mut Tally,
    ) {
        let per_leg = self.per_leg;
        let only = (sources.count_ones() == 1).then_some(sources);
        let server_ssrc = self.server_ssrc;
        let unrouted = rtcp::compound(body)
            .flatten()
            .filter(|p| is_feedback(p.kind()) && self.route(p, si, sources, only).is_none())
            .count();
        t.drop_n(DropReason::UnknownSsrc, unrouted as u64);
        for tx in slots(sources) {
            let (k, buf) = out.own();
            let n = select(body, buf, |p| {
                is_feedback(p.kind()) && self.route(p, si, sources, only) == Some(tx)
            });
            if n == 0 {
                out.used -= 1; // give the buffer back
                continue;
            }
            let Some(ts) = self.member_stream_mut(tx, si) else {
                continue;
            };
            let n = if video {
                let (kept, dropped) = ts
                    .keyframes
                    .filter_requests(buf.get_mut(..n).unwrap_or_default(), now);
                t.drop_n(DropReason::RateLimited, dropped);
                kept
            } else {
                n
            };
            if n == 0 {
                continue;
            }
            let Some(dest) = ts.leg.rtcp_destination() else {
                continue;
            };
            if per_leg {
                relay_as_sender(buf.get_mut(..n).unwrap_or_default(), server_ssrc);
            }
            let d = Delivery {
                member: tx,
                stream: si,
                rtcp: true,
                dest,
            };
            match ts.leg.seal(Kind::Rtcp, buf, n, per_leg) {
                Ok(n) => out.push(d, k, n),
                Err(e) => t.drop(e),
            }
        }
    }

    /// The transmitter (among `sources`) a feedback packet is for: the one whose SSRC it names
    /// on stream `si`, else the only one.
    fn route<T: AsRef<[u8]>>(
        &self,
        p: &RtcpPacket<T>,
        si: usize,
        sources: u64,
        only: Option<u64>,
    ) -> Option<Slot> {
        if let Some(ssrc) = feedback_target(p) {
            let named = slots(sources).find(|&s| {
                self.member_stream(s, si)
                    .is_some_and(|ms| ms.ssrcs.contains(ssrc))
            });
            if named.is_some() {
                return named;
            }
        }
        only.and_then(|set| slots(set).next())
    }

    /// Writes a keyframe request (PLI) toward transmitter `slot` for the first video stream
    /// where the relay can sign RTCP, the transmitter's SSRC is known (the last one its media
    /// passed with, else the first one set) and its policy allows one now (shared with its
    /// receivers' requests). Returns the stream and the length; the
    /// request goes to [`Self::rtcp_destination`].
    pub fn keyframe_request(
        &mut self,
        slot: Slot,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<(usize, usize)> {
        self.request_keyframe(slot, now, buf, |ms| {
            ms.seen.or(ms.ssrcs.ssrcs().first().copied())
        })
    }

    /// [`Self::keyframe_request`] for the media SSRC `media` gives on each stream.
    fn request_keyframe(
        &mut self,
        slot: Slot,
        now: Instant,
        buf: &mut [u8],
        media: impl Fn(&MemberStream) -> Option<u32>,
    ) -> Option<(usize, usize)> {
        let per_leg = self.per_leg;
        let server = self.server_ssrc;
        let confs = &self.streams;
        let m = self.members.get_mut(slot.index())?.as_mut()?;
        for (si, (conf, ms)) in confs.iter().zip(m.streams.iter_mut()).enumerate() {
            if conf.kind != MediaKind::Video || !rtcp_readable(conf, per_leg) {
                continue;
            }
            let Some(media) = media(ms) else {
                continue;
            };
            let Ok(len) = rtcp::emit_pli(server, media, buf) else {
                continue;
            };
            if ms.leg.rtcp_destination().is_none() || !ms.keyframes.may_request(now) {
                continue;
            }
            let len = ms.leg.seal(Kind::Rtcp, buf, len, per_leg).ok()?;
            return Some((si, len));
        }
        None
    }

    /// A datagram on `slot`'s transmission control channel: source screen, SRTCP
    /// authentication when the channel has a key, then the latch. Returns the plain length.
    pub fn admit_control(
        &mut self,
        slot: Slot,
        from: SocketAddr,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<usize, DropReason> {
        self.member_mut(slot)
            .and_then(|m| m.control.as_mut())
            .ok_or(DropReason::Malformed)?
            .admit(from, now, buf)
    }

    /// Protects a control message of `len` bytes in `buf` toward `slot` (SRTCP when the
    /// channel has a key) and says where it goes. `None`: no such member, no channel, or no
    /// address yet.
    pub fn seal_control(
        &mut self,
        slot: Slot,
        buf: &mut [u8],
        len: usize,
    ) -> Option<Result<(usize, SocketAddr), SrtpError>> {
        self.member_mut(slot)?.control.as_mut()?.seal(buf, len)
    }
}

/// Rewrites the sender SSRC of every packet of a plain RTCP compound to the relay's.
fn relay_as_sender(buf: &mut [u8], server_ssrc: u32) {
    let mut at = 0;
    while let Some(rest) = buf.get_mut(at..) {
        let Ok(mut p) = RtcpPacket::new_checked(rest) else {
            return;
        };
        let len = p.packet_len();
        p.set_sender_ssrc(server_ssrc);
        at += len;
    }
}

/// Copies the packets of the (validated) compound `body` that `keep` selects into `dst`, in
/// order; returns the length written (0 when none, or when `dst` is too small).
fn select(body: &[u8], dst: &mut [u8], mut keep: impl FnMut(&RtcpPacket<&[u8]>) -> bool) -> usize {
    let mut w = 0;
    for p in rtcp::compound(body).flatten() {
        if !keep(&p) {
            continue;
        }
        let bytes = p.as_bytes();
        let Some(d) = dst.get_mut(w..w + bytes.len()) else {
            return 0;
        };
        d.copy_from_slice(bytes);
        w += bytes.len();
    }
    w
}
