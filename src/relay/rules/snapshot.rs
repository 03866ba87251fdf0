//! Snapshot and restore of a call's per-packet rules, for high availability: the sources each
//! leg latched, the SSRC each stream learned, and the per-SSRC state of every SRTP context
//! (never the keys: a restored call's rules are built from its [`RulesSetup`], whose keys come
//! from the restored call, and the SRTP state is then imported into them).
//!
//! Rate limiters, quality meters and the keyframe policy start afresh.

use super::{
    CallRules, ControlRules, GroupRules, LegRules, PairFace, RulesSetup, SrtpSlot, PARTIES,
};
use crate::control::Party;
use crate::srtp::{SrtpError, SrtpState};
use std::net::SocketAddr;

/// SRTCP indices a restored *sending* context skips: the relay that died may have protected
/// that many RTCP packets per SSRC after its last snapshot (RTCP runs at a few packets a
/// second, snapshots of SRTP state are taken about every second), and none of its indices may
/// be used again.
pub const SRTCP_RESTORE_SKIP: u32 = 4096;

/// One party's leg of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct LegRulesSnapshot {
    /// The RTP socket's confirmed source.
    pub rtp_source: Option<SocketAddr>,
    /// The RTCP socket's confirmed source.
    pub rtcp_source: Option<SocketAddr>,
    /// Latches to a new address so far, RTP and RTCP.
    pub latches: [u32; 2],
    /// The state of the context that authenticates what the party sends (per_leg).
    pub srtp_in: Option<SrtpState>,
    /// The state of the context that protects what the relay sends the party (per_leg).
    pub srtp_out: Option<SrtpState>,
}

/// One stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct StreamRulesSnapshot {
    /// Caller's and callee's legs.
    pub legs: [LegRulesSnapshot; 2],
    /// The transmitter's SSRCs allowed so far (announced, or learned from the first packet).
    pub transmitter_ssrcs: Vec<u32>,
}

/// One party's transmission control channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct ControlRulesSnapshot {
    /// The confirmed source.
    pub source: Option<SocketAddr>,
    /// Latches so far.
    pub latches: u32,
    /// SRTCP state of what the party sends.
    pub srtcp_in: Option<SrtpState>,
    /// SRTCP state of what the relay sends the party.
    pub srtcp_out: Option<SrtpState>,
}

/// A call's rules, without keys: latched sources, learned SSRCs, SRTP state per SSRC
/// ([`CallRules::snapshot`], [`CallRules::restore`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct RulesSnapshot {
    /// Every stream, in the order of the setup's.
    pub streams: Vec<StreamRulesSnapshot>,
    /// Each party's control channel.
    pub control: [Option<ControlRulesSnapshot>; 2],
}

impl LegRulesSnapshot {
    /// Whether it holds SRTP state (per_leg).
    pub fn has_srtp(&self) -> bool {
        self.srtp_in.is_some() || self.srtp_out.is_some()
    }
}

impl ControlRulesSnapshot {
    /// Whether it holds SRTCP state (a keyed channel).
    pub fn has_srtp(&self) -> bool {
        self.srtcp_in.is_some() || self.srtcp_out.is_some()
    }
}

impl RulesSnapshot {
    /// Whether it holds any SRTP state (a per_leg call, or keyed control channels).
    pub fn has_srtp(&self) -> bool {
        self.streams
            .iter()
            .flat_map(|s| &s.legs)
            .any(LegRulesSnapshot::has_srtp)
            || self
                .control
                .iter()
                .flatten()
                .any(ControlRulesSnapshot::has_srtp)
    }
}

fn export(slot: &SrtpSlot) -> Option<SrtpState> {
    slot.as_ref().map(|c| c.export_state())
}

fn import(slot: &mut SrtpSlot, state: Option<&SrtpState>, sending: bool) -> Result<(), SrtpError> {
    match (slot.as_mut(), state) {
        (Some(ctx), Some(st)) if sending => {
            ctx.import_state(&st.clone().with_srtcp_send_skip(SRTCP_RESTORE_SKIP))
        }
        (Some(ctx), Some(st)) => ctx.import_state(st),
        _ => Ok(()),
    }
}

impl LegRules {
    pub(super) fn snapshot(&self) -> LegRulesSnapshot {
        LegRulesSnapshot {
            rtp_source: self.rtp_latch.source(),
            rtcp_source: self.rtcp_latch.source(),
            latches: [self.rtp_latch.latches(), self.rtcp_latch.latches()],
            srtp_in: export(&self.srtp_in),
            srtp_out: export(&self.srtp_out),
        }
    }

    pub(super) fn restore(&mut self, s: &LegRulesSnapshot) -> Result<(), SrtpError> {
        self.rtp_latch.restore(s.rtp_source, s.latches[0]);
        self.rtcp_latch.restore(s.rtcp_source, s.latches[1]);
        import(&mut self.srtp_in, s.srtp_in.as_ref(), false)?;
        import(&mut self.srtp_out, s.srtp_out.as_ref(), true)
    }
}

impl ControlRules {
    pub(super) fn snapshot(&self) -> ControlRulesSnapshot {
        ControlRulesSnapshot {
            source: self.latch.source(),
            latches: self.latch.latches(),
            srtcp_in: export(&self.srtcp_in),
            srtcp_out: export(&self.srtcp_out),
        }
    }

    pub(super) fn restore(&mut self, cs: &ControlRulesSnapshot) -> Result<(), SrtpError> {
        self.latch.restore(cs.source, cs.latches);
        import(&mut self.srtcp_in, cs.srtcp_in.as_ref(), false)?;
        import(&mut self.srtcp_out, cs.srtcp_out.as_ref(), true)
    }
}

impl PairFace {
    /// The state of a two-member call's `rules`: latched sources, learned SSRCs, SRTP state
    /// per SSRC (no keys), as a one-to-one snapshot holds them.
    pub(crate) fn snapshot(&self, rules: &GroupRules) -> RulesSnapshot {
        let members = PARTIES.map(Party::slot);
        let tx = self.transmitter().slot();
        RulesSnapshot {
            streams: (0..rules.streams())
                .map(|si| rules.pair_stream_snapshot(si, members, tx))
                .collect(),
            control: members.map(|m| rules.control_snapshot(m)),
        }
    }
}

impl CallRules {
    /// The rules' state: latched sources, learned SSRCs, SRTP state per SSRC (no keys).
    pub fn snapshot(&self) -> RulesSnapshot {
        self.face.snapshot(&self.rules)
    }

    /// The rules of `setup` (built from the restored call, with its keys) in the state of
    /// `snap`: the same sources, SSRCs and SRTP positions, so that the packets after the
    /// snapshot pass and replays of earlier ones do not. Sending SRTCP contexts skip
    /// [`SRTCP_RESTORE_SKIP`] indices. A snapshot of other streams than the setup's (not the
    /// same call) is refused with [`SrtpError::Malformed`].
    pub fn restore(setup: &RulesSetup, snap: &RulesSnapshot) -> Result<CallRules, SrtpError> {
        let mut rules = CallRules::new(setup)?;
        if snap.streams.len() != rules.streams() {
            return Err(SrtpError::Malformed);
        }
        let tx = rules.transmitter();
        for (si, ss) in snap.streams.iter().enumerate() {
            for (p, ls) in PARTIES.into_iter().zip(&ss.legs) {
                let ssrcs = (p == tx).then_some(ss.transmitter_ssrcs.as_slice());
                rules.rules.restore_pair_leg(p.slot(), si, ls, ssrcs)?;
            }
        }
        for (p, cs) in PARTIES.into_iter().zip(&snap.control) {
            if let Some(cs) = cs {
                rules.rules.restore_control(p.slot(), cs)?;
            }
        }
        Ok(rules)
    }
}
