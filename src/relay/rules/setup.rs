//! The inputs and outputs of the rules: what a call is made of, where a packet came in and
//! goes out, and the per-batch tally.

use super::super::stats::{DropReason, DROP_KINDS};
use crate::control::arbiter::Arbiter;
use crate::control::{MediaSecurity, Party};
use crate::keys::MasterKey;
use crate::sdp::MediaKind;
use std::net::SocketAddr;
use std::sync::Arc;

/// The transmitter's SSRCs on a stream: the announced ones, or the first one seen.
#[derive(Debug, Clone, Copy)]
pub struct SsrcFilter {
    allowed: [u32; 4],
    len: usize,
    learn: bool,
}

impl SsrcFilter {
    /// A filter allowing `ssrcs` (at most four); with none, the first SSRC seen is adopted.
    pub fn new(ssrcs: &[u32]) -> Self {
        let mut f = SsrcFilter {
            allowed: [0; 4],
            len: 0,
            learn: ssrcs.is_empty(),
        };
        for &s in ssrcs.iter().take(4) {
            if !f.allowed().contains(&s) {
                if let Some(slot) = f.allowed.get_mut(f.len) {
                    *slot = s;
                    f.len += 1;
                }
            }
        }
        f
    }

    fn allowed(&self) -> &[u32] {
        self.allowed.get(..self.len).unwrap_or_default()
    }

    /// The SSRCs allowed so far (announced, or the one adopted).
    pub fn ssrcs(&self) -> &[u32] {
        self.allowed()
    }

    /// Whether the first SSRC seen is adopted (nothing was announced).
    pub fn learns(&self) -> bool {
        self.learn
    }

    /// Whether `ssrc` is allowed (without adopting it).
    #[inline]
    pub fn contains(&self, ssrc: u32) -> bool {
        self.allowed().contains(&ssrc)
    }

    /// Forgets an adopted SSRC (nothing was announced): the next one seen is adopted. Used when
    /// the source that sent it turned out to be a stranger (a weak latch that gave way).
    pub fn forget(&mut self) {
        if self.learn {
            self.len = 0;
        }
    }

    /// Whether `ssrc` may pass; the first SSRC is adopted when nothing was announced.
    #[inline]
    pub fn admit(&mut self, ssrc: u32) -> bool {
        if self.allowed().contains(&ssrc) {
            return true;
        }
        if self.learn && self.len == 0 {
            self.allowed[0] = ssrc;
            self.len = 1;
            return true;
        }
        false
    }
}

/// What one batch of packets did, added to the counters once.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Datagrams received.
    pub in_packets: u64,
    /// Bytes received.
    pub in_bytes: u64,
    /// Datagrams sent on.
    pub out_packets: u64,
    /// Bytes sent on.
    pub out_bytes: u64,
    /// Drops by reason.
    pub drops: [u64; DROP_KINDS],
    /// RTP packets from the party that passed the source checks (media activity).
    pub media: u64,
    /// A leg latched to a new source.
    pub latched: bool,
    /// The caller sent RTCP BYE.
    pub bye: bool,
    /// An RTP sequence number wrapped: the SRTP rollover counter of its SSRC moved, so a
    /// call image should hold the new one at once (high availability).
    pub wrapped: bool,
    /// The first RTP packet of the batch that passed every rule (forwarded media).
    pub first_rtp: Option<RtpMark>,
    /// The last one.
    pub last_rtp: Option<RtpMark>,
    /// RTP packets of the batch that passed every rule.
    pub rtp_forwarded: u64,
}

/// An RTP packet's place in its stream: what the transmission log keeps of a transmission's
/// first and last packets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RtpMark {
    /// Its SSRC.
    pub ssrc: u32,
    /// Its sequence number.
    pub seq: u16,
    /// Its RTP timestamp.
    pub ts: u32,
}

impl Tally {
    /// Notes a forwarded RTP packet (two stores: the per-packet path stays cheap).
    #[inline]
    pub fn forwarded(&mut self, m: RtpMark) {
        if self.first_rtp.is_none() {
            self.first_rtp = Some(m);
        }
        self.last_rtp = Some(m);
        self.rtp_forwarded += 1;
    }

    /// Counts one dropped packet.
    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.drop_n(r, 1);
    }

    /// Counts `n` dropped packets.
    #[inline]
    pub fn drop_n(&mut self, r: DropReason, n: u64) {
        if let Some(d) = self.drops.get_mut(r as usize) {
            *d += n;
        }
    }
}

/// Where a packet came in: which stream, which party's leg, which socket of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingress {
    /// Index of the stream in the call.
    pub stream: usize,
    /// Whose leg.
    pub party: Party,
    /// The leg's separate RTCP socket (no rtcp-mux), rather than its RTP socket.
    pub rtcp_socket: bool,
}

impl Ingress {
    /// The same place with the party as its member slot (the one rule set's view).
    #[inline]
    pub fn member(self) -> super::GroupIngress {
        super::GroupIngress {
            stream: self.stream,
            member: self.party.slot(),
            rtcp_socket: self.rtcp_socket,
        }
    }
}

/// Where a judged packet goes: `len` bytes to the peer's RTP or RTCP destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Egress {
    /// Bytes to send (0: nothing left to send, every part was dropped and counted).
    pub len: usize,
    /// RTCP (its own destination, sent on its own) rather than RTP.
    pub rtcp: bool,
}

/// SRTP keys of one leg, as the call procedure made them.
#[derive(Debug, Clone, Default)]
pub struct LegSetup {
    /// Where the party receives RTP, from its SDP.
    pub remote_rtp: Option<SocketAddr>,
    /// Where it receives RTCP.
    pub remote_rtcp: Option<SocketAddr>,
    /// SSRCs its SDP announced.
    pub announced: Vec<u32>,
    /// The relay has a separate RTCP socket for this leg (no rtcp-mux): RTCP to the party goes
    /// to its RTCP address.
    pub separate_rtcp: bool,
    /// The key the party sends with (per_leg).
    pub srtp_in: Option<MasterKey>,
    /// The key the relay sends to the party with (per_leg).
    pub srtp_out: Option<MasterKey>,
    /// The party only sends on this stream (its SDP offer says `a=sendonly` or `a=inactive`):
    /// no RTP is sent to it, in userspace or by the kernel fast path; RTCP still is.
    pub send_only: bool,
}

/// One media stream of a call, both legs.
#[derive(Debug, Clone)]
pub struct StreamSetup {
    /// Media type.
    pub kind: MediaKind,
    /// SRTP on the wire (RTP/SAVP...): opaque past the header in end_to_end mode.
    pub encrypted: bool,
    /// RTP clock rate in Hz (jitter); 0 when unknown.
    pub clock_rate: u32,
    /// The encoding name of the first format (`H264`, `VP8`, ...), if the SDP named it.
    pub encoding: Option<String>,
    /// Caller's and callee's legs.
    pub legs: [LegSetup; 2],
    /// SSRCs the transmitter may send with (empty: adopt the first one seen).
    pub transmitter_ssrcs: Vec<u32>,
}

/// A party's transmission control channel.
#[derive(Debug, Clone, Default)]
pub struct ControlSetup {
    /// Where the party receives control messages.
    pub remote: Option<SocketAddr>,
    /// The SRTCP key of the channel, if the controlling server gave one.
    pub key: Option<MasterKey>,
}

/// Everything the rules of one call need.
#[derive(Debug, Clone)]
pub struct RulesSetup {
    /// The call's arbiter.
    pub arbiter: Arc<Arbiter>,
    /// How media is protected.
    pub security: MediaSecurity,
    /// The party that transmits (the caller in a push, the callee in a pull).
    pub transmitter: Party,
    /// Its media streams.
    pub streams: Vec<StreamSetup>,
    /// Each party's control channel.
    pub control: [Option<ControlSetup>; 2],
    /// The relay's SSRC (sender of its own RTCP).
    pub server_ssrc: u32,
    /// The transmission's video SSRC (media SSRC of the relay's keyframe requests).
    pub video_ssrc: u32,
    /// Consecutive packets from one new address that latch a leg without other evidence.
    pub latch_after: u32,
}
