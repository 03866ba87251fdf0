//! Snapshot and restore of a group call's per-packet rules, for high availability: per member
//! and stream the latched sources, the SSRCs it may transmit with (granted, announced or
//! learned) and the SRTP state of its receiving and sending contexts; per member its control
//! channel. Never keys: a restored group's rules are built from its members' [`MemberMedia`]
//! (whose keys come from the sealed part of the image), and the state is then imported into
//! them, as [`CallRules::restore`](super::super::CallRules::restore) does for a one-to-one
//! call (sending SRTCP contexts skip [`SRTCP_RESTORE_SKIP`](super::super::SRTCP_RESTORE_SKIP)
//! indices).
//!
//! Rate limiters, quality meters and the keyframe policy start afresh.

use super::{GroupRules, MemberMedia};
use crate::control::arbiter::Slot;
use crate::relay::rules::{ControlRulesSnapshot, LegRulesSnapshot, SsrcFilter};
use crate::srtp::SrtpError;

/// One member's state on one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct GroupStreamRulesSnapshot {
    /// Its leg: latched sources, SRTP state of what it sends (`srtp_in`) and of what the relay
    /// sends it (`srtp_out`, per_leg).
    pub leg: LegRulesSnapshot,
    /// The SSRCs it may transmit with now.
    pub ssrcs: Vec<u32>,
    /// The filter adopts the first SSRC seen (nothing was set).
    pub learn: bool,
    /// The SSRC of its last media packet that passed.
    pub seen: Option<u32>,
}

/// One member's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct GroupMemberRulesSnapshot {
    /// Its slot.
    pub slot: u8,
    /// Per stream of the group, in order.
    pub streams: Vec<GroupStreamRulesSnapshot>,
    /// Its control channel.
    pub control: Option<ControlRulesSnapshot>,
}

/// A group call's rules, without keys ([`GroupRules::snapshot`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct GroupRulesSnapshot {
    /// Every member, by slot.
    pub members: Vec<GroupMemberRulesSnapshot>,
}

impl GroupRulesSnapshot {
    /// Whether it holds any SRTP state (per_leg, or keyed control channels).
    pub fn has_srtp(&self) -> bool {
        self.members.iter().any(|m| {
            m.streams.iter().any(|s| s.leg.has_srtp())
                || m.control
                    .as_ref()
                    .is_some_and(ControlRulesSnapshot::has_srtp)
        })
    }

    /// The state of the member in `slot`.
    pub fn member(&self, slot: Slot) -> Option<&GroupMemberRulesSnapshot> {
        self.members
            .iter()
            .find(|m| usize::from(m.slot) == slot.index())
    }
}

impl GroupRules {
    /// The rules' state: per member its latched sources, SSRCs and SRTP state (no keys).
    pub fn snapshot(&self) -> GroupRulesSnapshot {
        let members = self
            .members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let m = m.as_ref()?;
                Some(GroupMemberRulesSnapshot {
                    slot: u8::try_from(i).ok()?,
                    streams: m
                        .streams
                        .iter()
                        .map(|s| GroupStreamRulesSnapshot {
                            leg: s.leg.snapshot(),
                            ssrcs: s.ssrcs.ssrcs().to_vec(),
                            learn: s.ssrcs.learns(),
                            seen: s.seen,
                        })
                        .collect(),
                    control: m.control.as_ref().map(|c| c.snapshot()),
                })
            })
            .collect();
        GroupRulesSnapshot { members }
    }

    /// Adds the member in `slot` from its media (with its keys) in the state of `snap`: the
    /// same sources, SSRCs and SRTP positions, so that its packets after the snapshot pass and
    /// replays of earlier ones do not, and what the relay sends it never reuses a keystream.
    /// A snapshot of another number of streams than the group's is refused with
    /// [`SrtpError::Malformed`].
    pub fn restore_member(
        &mut self,
        slot: Slot,
        media: &MemberMedia,
        snap: &GroupMemberRulesSnapshot,
    ) -> Result<(), SrtpError> {
        if snap.streams.len() != self.streams.len() {
            return Err(SrtpError::Malformed);
        }
        self.add_member(slot, media)?;
        let Some(m) = self.member_mut(slot) else {
            return Err(SrtpError::Malformed);
        };
        for (s, ss) in m.streams.iter_mut().zip(&snap.streams) {
            s.leg.restore(&ss.leg)?;
            let mut f = SsrcFilter::new(if ss.learn { &[] } else { &ss.ssrcs });
            for &x in &ss.ssrcs {
                f.admit(x);
            }
            s.ssrcs = f;
            s.seen = ss.seen;
        }
        if let (Some(c), Some(cs)) = (m.control.as_mut(), snap.control.as_ref()) {
            c.restore(cs)?;
        }
        Ok(())
    }
}
