//! The per-packet forward path without sockets, for benchmarks (`benches/forward.rs`).

use super::rules::{CallRules, Ingress, LegSetup, RulesSetup, StreamSetup, Tally};
use super::DropReason;
use crate::control::arbiter::Arbiter;
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
        };
        let arbiter = Arc::new(Arbiter::new());
        let _ = arbiter.grant(Party::Caller);
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
