//! The per-packet forward path without sockets, for benchmarks (`benches/forward.rs`,
//! `benches/group.rs`).

use super::rules::{
    CallRules, FanOut, GroupIngress, GroupRules, GroupRulesSetup, GroupStreamSetup, Ingress,
    LegSetup, MemberMedia, RulesSetup, StreamSetup, Tally,
};
use super::DropReason;
use crate::control::arbiter::{Arbiter, Slot};
use crate::control::{MediaSecurity, Party};
use crate::keys::MasterKey;
use crate::sdp::MediaKind;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// A one-stream video call (caller → callee, granted) and the exact judgement a worker applies
/// to each caller RTP packet: source screen, SRTP (per_leg), latch, arbiter, SSRC filter,
/// keyframe scan, re-protection. No socket, no runtime.
#[derive(Debug)]
pub struct ForwardPath {
    rules: CallRules,
    from: SocketAddr,
    tally: Tally,
}

impl ForwardPath {
    /// Builds the call. `keys`: per_leg mode with (caller's key, relay's key toward the callee).
    pub fn new(ssrc: u32, keys: Option<(MasterKey, MasterKey)>) -> io::Result<ForwardPath> {
        let from = SocketAddr::from(([127, 0, 0, 1], 5000));
        let to = SocketAddr::from(([127, 0, 0, 1], 6000));
        let per_leg = keys.is_some();
        let (caller_in, callee_out) = keys.unzip();
        let leg = |remote, srtp_in, srtp_out| LegSetup {
            remote_rtp: Some(remote),
            remote_rtcp: Some(remote),
            announced: vec![ssrc],
            separate_rtcp: false,
            srtp_in,
            srtp_out,
            send_only: false,
        };
        let arbiter = Arc::new(Arbiter::with_members(2));
        let _ = arbiter.permit(Party::Caller.slot());
        let rules = CallRules::new(&RulesSetup {
            arbiter,
            transmitter: Party::Caller,
            security: if per_leg {
                MediaSecurity::PerLeg
            } else {
                MediaSecurity::EndToEnd
            },
            streams: vec![StreamSetup {
                kind: MediaKind::Video,
                encrypted: per_leg,
                clock_rate: 90_000,
                encoding: None,
                legs: [leg(from, caller_in, None), leg(to, None, callee_out)],
                transmitter_ssrcs: vec![ssrc],
            }],
            control: [None, None],
            server_ssrc: 1,
            video_ssrc: ssrc,
            latch_after: 5,
        })
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(ForwardPath {
            rules,
            from,
            tally: Tally::default(),
        })
    }

    /// Judges one caller RTP packet in place; `Ok(len)`: it would be sent with `len` bytes.
    #[inline]
    pub fn forward(&mut self, pkt: &mut [u8], now: Instant) -> Result<usize, DropReason> {
        self.judge_from(pkt, self.from, now)
    }

    /// The same judgement for a packet from `from` (a flooder, a spoofer): what each junk
    /// packet costs the worker once the kernel has handed it over.
    #[inline]
    pub fn judge_from(
        &mut self,
        pkt: &mut [u8],
        from: SocketAddr,
        now: Instant,
    ) -> Result<usize, DropReason> {
        let at = Ingress {
            stream: 0,
            party: Party::Caller,
            rtcp_socket: false,
        };
        self.rules
            .judge(at, from, now, pkt, &mut self.tally)
            .map(|e| e.len)
    }
}

/// A one-stream video group call: member 0 granted, routed to `receivers` members, and the
/// exact judgement a worker applies to each of its RTP packets (source screen, SRTP in
/// per_leg, latch, group arbiter, SSRC filter, keyframe scan, fan-out with one encryption per
/// receiver leg in per_leg). No socket, no runtime.
#[derive(Debug)]
pub struct GroupFanOutPath {
    rules: GroupRules,
    out: FanOut,
    from: SocketAddr,
    tally: Tally,
}

impl GroupFanOutPath {
    /// Builds the group. `keys`: per_leg mode with (the transmitter's key, the relay's key
    /// toward each receiver: one per receiver).
    pub fn new(
        ssrc: u32,
        receivers: usize,
        keys: Option<(MasterKey, Vec<MasterKey>)>,
    ) -> io::Result<GroupFanOutPath> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
        let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], 5000 + 2 * i as u16));
        let per_leg = keys.is_some();
        let (tx_key, rx_keys) = keys.unzip();
        let arbiter = Arc::new(Arbiter::new());
        let mut rules = GroupRules::new(&GroupRulesSetup {
            arbiter: arbiter.clone(),
            security: if per_leg {
                MediaSecurity::PerLeg
            } else {
                MediaSecurity::EndToEnd
            },
            streams: vec![GroupStreamSetup {
                kind: MediaKind::Video,
                encrypted: per_leg,
                clock_rate: 90_000,
                encoding: None,
            }],
            server_ssrc: 1,
            latch_after: 5,
        });
        let slot = |i: usize| Slot::new(i).ok_or_else(|| invalid(format!("member {i}")));
        for i in 0..=receivers {
            let leg = LegSetup {
                remote_rtp: Some(addr(i)),
                remote_rtcp: Some(addr(i)),
                announced: if i == 0 { vec![ssrc] } else { vec![] },
                separate_rtcp: false,
                srtp_in: if i == 0 { tx_key.clone() } else { None },
                srtp_out: i
                    .checked_sub(1)
                    .and_then(|r| rx_keys.as_ref().and_then(|k| k.get(r)).cloned()),
                send_only: false,
            };
            let media = MemberMedia {
                legs: vec![leg],
                control: None,
            };
            rules
                .add_member(slot(i)?, &media)
                .map_err(|e| invalid(e.to_string()))?;
            if i > 0 {
                arbiter.add_route(slot(0)?, slot(i)?);
            }
        }
        arbiter.permit(slot(0)?);
        rules.set_transmitter_ssrcs(slot(0)?, &[ssrc]);
        Ok(GroupFanOutPath {
            rules,
            out: FanOut::new(),
            from: addr(0),
            tally: Tally::default(),
        })
    }

    /// The group's arbiter.
    pub fn arbiter(&self) -> &Arc<Arbiter> {
        self.rules.arbiter()
    }

    /// Judges one RTP packet from the transmitter in place; `Ok(n)`: `n` copies would be sent
    /// (their bytes in [`Self::out`]).
    #[inline]
    pub fn forward(&mut self, pkt: &mut [u8], now: Instant) -> Result<usize, DropReason> {
        let at = GroupIngress {
            stream: 0,
            member: Slot::new(0).ok_or(DropReason::Malformed)?,
            rtcp_socket: false,
        };
        self.rules
            .judge(at, self.from, now, pkt, &mut self.out, &mut self.tally)?;
        Ok(self.out.len())
    }

    /// Judges one datagram (RTP or RTCP) from member `member` (0: the transmitter, 1..:
    /// receivers) at its own address; `Ok(n)`: `n` copies would be sent.
    #[inline]
    pub fn judge_from_member(
        &mut self,
        member: usize,
        pkt: &mut [u8],
        now: Instant,
    ) -> Result<usize, DropReason> {
        let at = GroupIngress {
            stream: 0,
            member: Slot::new(member).ok_or(DropReason::Malformed)?,
            rtcp_socket: false,
        };
        let from = SocketAddr::from(([127, 0, 0, 1], 5000 + 2 * member as u16));
        self.rules
            .judge(at, from, now, pkt, &mut self.out, &mut self.tally)?;
        Ok(self.out.len())
    }

    /// The copies of the last packet judged.
    pub fn out(&self) -> &FanOut {
        &self.out
    }
}
