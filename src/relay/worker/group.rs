//! The group call procedure on a worker: a group is a [`CallRt`] whose transmission control
//! is the bare [`TransmissionControlServer`] (no offer/answer around it), with members joining
//! and leaving, each added to the one rule set and given its sockets; it fans each granted
//! transmitter's media out to its receivers (`media.rs`). The server's events become call
//! events here, and a grant opens the member's SSRC filter and asks it for a keyframe.

use super::super::plane::{MemberPrep, WorkerStats};
use super::super::ports::BoundPort;
use super::super::rules::{
    GroupIngress, GroupMemberRulesSnapshot, GroupRules, GroupRulesSetup, MemberMedia,
};
use super::super::{
    GroupCallSummary, GroupControlImage, GroupImage, GroupLegImage, GroupMemberImage,
    GroupMemberSummary, GroupQueueSummary, GroupSnapshot, GroupStreamImage,
    GroupTransmissionSummary,
};
use super::call::{CallRt, Procedure};
use super::media::{MemberRt, Role};
use crate::control::arbiter::{Arbiter, Slot, MAX_MEMBERS};
use crate::control::call::snapshot::{GroupSecrets, MemberSecrets};
use crate::control::call::{CallEvent, CallEventKind, CallState, SetupError};
use crate::control::server::{
    JoinError, ServerIdentity, TcConfig, TcEvent, TransmissionControlServer,
};
use crate::control::ssrc::SsrcRegistry;
use crate::control::timer::ms_before;
use crate::control::{MediaSecurity, ReleaseReason};
use crate::ids::{CallId, Ssrc};
use std::io;
use std::sync::Arc;
use std::time::Instant;

/// A refusal, with the relay ports (their sockets closed) for the caller to give back.
pub(crate) type Refused = (SetupError, Vec<(usize, u16)>);

/// A group call as the control plane hands it to a worker.
#[derive(Debug)]
pub(crate) struct GroupAdopt {
    pub(crate) call_id: CallId,
    pub(crate) group_id: String,
    pub(crate) security: MediaSecurity,
    pub(crate) config: TcConfig,
    pub(crate) streams: Vec<GroupStreamImage>,
    pub(crate) server_ssrc: Ssrc,
    pub(crate) members: Vec<MemberPrep>,
}

/// A group call's procedure: the bare transmission control server, and what the group is.
#[derive(Debug)]
pub(crate) struct Group {
    pub(super) group_id: String,
    pub(super) security: MediaSecurity,
    pub(super) server: TransmissionControlServer,
    /// The group's streams as an image holds them.
    stream_images: Vec<GroupStreamImage>,
    created: Instant,
    released_at: Option<Instant>,
    pub(super) server_ssrc: Ssrc,
    pub(super) ssrcs: Arc<SsrcRegistry>,
}

impl Group {
    /// What an image of the call holds besides what every call's does (grants, queue,
    /// pre-emptions).
    pub(super) fn marks(&self) -> (u64, u64, u64) {
        let st = self.server.stats();
        (st.grants, st.queued, st.preemptions)
    }
}

/// A group call's identity and streams, new or taken over.
struct GroupHead {
    call_id: CallId,
    group_id: String,
    security: MediaSecurity,
    streams: Vec<GroupStreamImage>,
    server_ssrc: Ssrc,
    created: Instant,
}

impl CallRt {
    /// A group call: its server and its members. On error every member's sockets are closed
    /// and their ports are returned for the caller to give back.
    pub(crate) fn group(
        adopt: GroupAdopt,
        now: Instant,
        latch_after: u32,
        ssrcs: Arc<SsrcRegistry>,
        totals: Arc<WorkerStats>,
    ) -> Result<(CallRt, Vec<Slot>), Refused> {
        let GroupAdopt {
            call_id,
            group_id,
            security,
            config,
            streams,
            server_ssrc,
            members,
        } = adopt;
        let server = TransmissionControlServer::group(
            config,
            ServerIdentity {
                call_id: group_id.clone(),
                server_ssrc,
            },
            Arc::new(Arbiter::new()),
            ssrcs.clone(),
        );
        let head = GroupHead {
            call_id,
            group_id,
            security,
            streams,
            server_ssrc,
            created: now,
        };
        let mut rt = CallRt::group_of(head, server, latch_after, ssrcs, totals);
        let mut slots = Vec::with_capacity(members.len());
        let mut members = members.into_iter();
        while let Some(m) = members.next() {
            match rt.join(now, m) {
                Ok(s) => slots.push(s),
                Err((e, own)) => return Err(rt.give_up(e, own, members.map(|m| m.ports))),
            }
        }
        if let Some(g) = rt.group_mut() {
            g.server.start(now);
        }
        Ok((rt, slots))
    }

    /// A group call with its server and rules and no member yet: what a new call and one taken
    /// over start from.
    fn group_of(
        head: GroupHead,
        server: TransmissionControlServer,
        latch_after: u32,
        ssrcs: Arc<SsrcRegistry>,
        totals: Arc<WorkerStats>,
    ) -> CallRt {
        let GroupHead {
            call_id,
            group_id,
            security,
            streams,
            server_ssrc,
            created,
        } = head;
        let rules = GroupRules::new(&GroupRulesSetup {
            arbiter: server.arbiter().clone(),
            security,
            streams: streams.clone(),
            server_ssrc: server_ssrc.get(),
            latch_after,
        });
        let proc = Procedure::Group(Box::new(Group {
            group_id,
            security,
            server,
            stream_images: streams,
            created,
            released_at: None,
            server_ssrc,
            ssrcs,
        }));
        let mut rt = CallRt::empty(call_id, proc, rules, latch_after, totals);
        rt.net.members = (0..MAX_MEMBERS).map(|_| None).collect();
        rt
    }

    /// The group call's procedure, if this is one.
    fn group_mut(&mut self) -> Option<&mut Group> {
        match &mut self.proc {
            Procedure::Group(g) => Some(g),
            Procedure::Private(_) => None,
        }
    }

    /// A member could not be set up, so the call is not either: its sockets close. Returns the
    /// error with every relay port to give back: the call's, the refused member's (`own`) and
    /// those of the members not added yet (`rest`).
    fn give_up(
        mut self,
        e: SetupError,
        own: Vec<(usize, u16)>,
        rest: impl Iterator<Item = Vec<(usize, u16)>>,
    ) -> Refused {
        let mut ports = self.all_ports();
        ports.extend(own);
        ports.extend(rest.flatten());
        // The engine gives the server SSRC back when it hears of the refusal.
        if let Some(g) = self.group_mut() {
            g.server.release(ReleaseReason::InternalError);
        }
        drop(self); // closes the sockets
        (e, ports)
    }

    /// Adds a member: server, rules, sockets. On error its sockets are closed and its ports are
    /// returned for the caller to give back.
    pub(crate) fn join(&mut self, now: Instant, prep: MemberPrep) -> Result<Slot, Refused> {
        let user_id = prep.setup.user_id.clone();
        let call_id = self.call_id.clone();
        let Some(g) = self.group_mut() else {
            return Err((SetupError::UnknownCall(call_id.to_string()), prep.ports));
        };
        let slot = match g.server.join(now, prep.setup.clone()) {
            Ok(s) => s,
            Err(e) => {
                let e = match e {
                    JoinError::Duplicate => SetupError::MemberRequest {
                        member: user_id.to_string(),
                        reason: format!("it is already in call {call_id}"),
                    },
                    JoinError::Full => SetupError::BadRequest(format!(
                        "call {call_id} has its maximum of {MAX_MEMBERS} members"
                    )),
                    JoinError::Released => SetupError::WrongState {
                        call_id: call_id.to_string(),
                        state: CallState::Released,
                        operation: "add a member",
                    },
                };
                return Err((e, prep.ports));
            }
        };
        self.attach(now, slot, prep, None)?;
        Ok(slot)
    }

    /// Member `slot` leaves the server (its setup failed).
    fn server_leave(&mut self, now: Instant, slot: Slot) {
        if let Some(g) = self.group_mut() {
            g.server.leave(now, slot);
        }
    }

    /// The rules and sockets of a member the server has in `slot` (its rules in the state of
    /// `restored`, when the call is taken over). On error the member leaves the server, its
    /// sockets are closed and its ports are returned.
    fn attach(
        &mut self,
        now: Instant,
        slot: Slot,
        prep: MemberPrep,
        restored: Option<&GroupMemberRulesSnapshot>,
    ) -> Result<(), Refused> {
        let MemberPrep {
            setup,
            legs,
            control,
            stream_sockets,
            control_socket,
            ports,
            relay,
            control_relay,
            ..
        } = prep;
        let user_id: Arc<str> = setup.user_id.as_str().into();
        let announced: Vec<u32> = legs.iter().flat_map(|l| l.announced.clone()).collect();
        let media = MemberMedia { legs, control };
        let added = match restored {
            Some(r) => self.rules.restore_member(slot, &media, r),
            None => self.rules.add_member(slot, &media),
        };
        if let Err(e) = added {
            self.server_leave(now, slot);
            return Err((
                SetupError::MemberMedia {
                    member: user_id.to_string(),
                    reason: format!("unusable SRTP key: {e}"),
                },
                ports,
            ));
        }
        let mut m = MemberRt::new(user_id, self.rules.streams());
        m.announced = announced;
        m.ports = ports;
        m.media = media;
        m.relay = relay;
        m.control_relay = control_relay;
        if let Some(x) = self.net.members.get_mut(slot.index()) {
            *x = Some(m);
        }
        if let Err(e) = self.add_sockets(slot, stream_sockets, control_socket) {
            let ports = self.drop_member(slot);
            self.rules.remove_member(slot);
            self.server_leave(now, slot);
            return Err((
                SetupError::BadRequest(format!("cannot use the member's sockets: {e}")),
                ports,
            ));
        }
        Ok(())
    }

    /// Takes in member `slot`'s sockets: per stream its RTP socket and a separate RTCP one,
    /// and its control channel's.
    fn add_sockets(
        &mut self,
        slot: Slot,
        stream_sockets: Vec<Option<BoundPort>>,
        control_socket: Option<BoundPort>,
    ) -> io::Result<()> {
        for (si, b) in stream_sockets.into_iter().enumerate() {
            let Some(b) = b else { continue };
            let at = |rtcp_socket| {
                Role::Media(GroupIngress {
                    stream: si,
                    member: slot,
                    rtcp_socket,
                })
            };
            self.add_socket(slot, b.rtp, at(false), |m, i| set(&mut m.rtp, si, i))?;
            if let Some(s) = b.rtcp {
                self.add_socket(slot, s, at(true), |m, i| set(&mut m.rtcp, si, i))?;
            }
        }
        if let Some(b) = control_socket {
            self.add_socket(slot, b.rtp, Role::Control(slot), |m, i| m.control = Some(i))?;
        }
        Ok(())
    }

    /// Closes a member's sockets and forgets it here; returns its ports.
    fn drop_member(&mut self, slot: Slot) -> Vec<(usize, u16)> {
        let Some(m) = self.net.remove_member(slot) else {
            return Vec::new();
        };
        for d in &mut self.dirty {
            *d &= !slot.bit();
        }
        self.departed.push((slot, m.user_id.clone()));
        m.ports
    }

    /// A member leaves (by MCVideo ID): its transmission ends for the others, its sockets
    /// close. Returns its ports.
    pub(crate) fn leave(
        &mut self,
        now: Instant,
        user_id: &str,
    ) -> Result<Vec<(usize, u16)>, SetupError> {
        let call_id = self.call_id.clone();
        let no_member =
            || SetupError::BadRequest(format!("call {call_id} has no member {user_id}"));
        let slot = match self.group_mut() {
            Some(g) => g.server.slot_of(user_id).ok_or_else(no_member)?,
            None => return Err(no_member()),
        };
        self.feed_activity(now);
        self.server_leave(now, slot);
        self.rules.remove_member(slot);
        // Out of the kernel's entries (as a transmitter and as a receiver) before its sockets
        // close and its ports can go to another call.
        self.sync_offload(now);
        Ok(self.drop_member(slot))
    }

    /// A group call's events, each published as the call event it means (and acted on: a
    /// grant opens the member's SSRC filter and asks it for a keyframe).
    pub(super) fn group_events(&mut self, now: Instant, publish: &mut dyn FnMut(CallEvent)) {
        while let Some(ev) = self.group_mut().and_then(|g| g.server.poll_event()) {
            self.log_event(&ev);
            if let Some(kind) = self.on_event(now, ev) {
                publish(CallEvent {
                    call_id: self.call_id.clone(),
                    kind,
                });
            }
        }
        if let Some(g) = self.group_mut() {
            if g.server.finished().is_some() && g.released_at.is_none() {
                g.released_at = Some(now);
            }
        }
    }

    pub(super) fn user(&self, s: Slot) -> Arc<str> {
        match self.net.member(s) {
            Some(m) => m.user_id.clone(),
            None => self
                .departed
                .iter()
                .find(|(d, _)| *d == s)
                .map_or_else(|| Arc::from(""), |(_, n)| n.clone()),
        }
    }

    /// Member `slot`'s transmission's first media is still to come (`false`), or not.
    fn set_media_seen(&mut self, slot: Slot, seen: bool) {
        if let Some(m) = self.net.member_mut(slot) {
            m.media_seen = seen;
        }
    }

    fn on_event(&mut self, now: Instant, ev: TcEvent) -> Option<CallEventKind> {
        Some(match ev {
            TcEvent::Joined { member } => CallEventKind::ParticipantJoined {
                member: self.user(member),
            },
            TcEvent::Left { member } => CallEventKind::ParticipantLeft {
                member: self.user(member),
            },
            TcEvent::Granted {
                member,
                audio_ssrc,
                video_ssrc,
            } => {
                // Video first: the relay's keyframe requests name the filter's first SSRC.
                let mut allowed = vec![video_ssrc.get(), audio_ssrc.get()];
                if let Some(m) = self.net.member(member) {
                    allowed.extend(m.announced.iter().copied());
                }
                self.set_media_seen(member, false);
                self.rules.set_transmitter_ssrcs(member, &allowed);
                self.request_keyframe(now, member);
                CallEventKind::MemberGranted {
                    member: self.user(member),
                    audio_ssrc,
                    video_ssrc,
                }
            }
            TcEvent::Queued { member, position } => CallEventKind::TransmissionQueued {
                member: self.user(member),
                position,
            },
            TcEvent::Preempted { member, by } => CallEventKind::TransmissionPreempted {
                member: self.user(member),
                by: self.user(by),
            },
            TcEvent::MediaStarted { member } => {
                self.set_media_seen(member, true);
                return None;
            }
            TcEvent::TransmissionEnded { member, reason } => {
                self.rules.set_transmitter_ssrcs(member, &[]);
                self.set_media_seen(member, true);
                CallEventKind::MemberTransmissionEnded {
                    member: self.user(member),
                    reason,
                }
            }
            TcEvent::Idle => CallEventKind::TransmissionIdle,
            TcEvent::Released { reason } => CallEventKind::Released { reason },
            TcEvent::Rejected { .. }
            | TcEvent::ReceptionStarted { .. }
            | TcEvent::ReceptionEnded { .. } => return None,
        })
    }

    /// Asks a new transmitter for a keyframe (PLI) where the relay can sign RTCP, so its
    /// receivers can start decoding.
    pub(super) fn request_keyframe(&mut self, now: Instant, member: Slot) {
        let mut buf = [0u8; 64];
        if let Some((si, len)) = self.rules.keyframe_request(member, now, &mut buf) {
            self.send_keyframe_request(member, si, buf.get(..len).unwrap_or_default());
        }
    }

    /// A group call's state and counters.
    pub(super) fn group_summary(&self, g: &Group, now: Instant) -> GroupCallSummary {
        let cfg = g.server.config();
        let name = |s: Slot| self.user(s).to_string();
        let mut quality = self.rules.quality(now);
        GroupCallSummary {
            call_id: self.call_id.clone(),
            group_id: g.group_id.clone(),
            media_security: g.security,
            max_transmitters: cfg.max_transmitters,
            max_streams_per_receiver: cfg.max_streams_per_receiver,
            reception_mode: cfg.reception_mode,
            state: if self.released() {
                CallState::Released
            } else {
                CallState::Established
            },
            release_reason: g.server.finished(),
            duration: g
                .released_at
                .unwrap_or(now)
                .saturating_duration_since(g.created),
            members: g
                .server
                .members()
                .into_iter()
                .map(|v| GroupMemberSummary {
                    mcvideo_id: v.user_id,
                    slot: v.member,
                    priority: v.priority,
                    receive_only: v.receive_only,
                    send_only: v.send_only,
                    transmitting: v.transmitting,
                    queued: v.queued,
                    receiving: v.receiving.iter().map(|&s| name(s)).collect(),
                    counters: self
                        .net
                        .member(v.member)
                        .map(|m| m.counters)
                        .unwrap_or_default(),
                    quality: quality
                        .iter_mut()
                        .find(|q| q.member == v.member)
                        .map(|q| std::mem::take(&mut q.streams))
                        .unwrap_or_default(),
                })
                .collect(),
            transmissions: g
                .server
                .transmissions()
                .into_iter()
                .map(|t| GroupTransmissionSummary {
                    mcvideo_id: t.user_id,
                    slot: t.member,
                    audio_ssrc: t.audio_ssrc,
                    video_ssrc: t.video_ssrc,
                    priority: t.rank.priority,
                    class: t.rank.class,
                    media_started: t.media_started,
                    duration: now.saturating_duration_since(t.granted_at),
                    receivers: t.receivers.iter().map(|&s| name(s)).collect(),
                })
                .collect(),
            queue: g
                .server
                .queue()
                .into_iter()
                .map(|q| GroupQueueSummary {
                    mcvideo_id: q.user_id,
                    position: q.position,
                    priority: q.rank.priority,
                    class: q.rank.class,
                })
                .collect(),
            tc: *g.server.stats(),
        }
    }
}

/// Puts socket index `i` at stream `si`.
fn set(v: &mut [Option<usize>], si: usize, i: usize) {
    if let Some(x) = v.get_mut(si) {
        *x = Some(i);
    }
}

/// A group call to take over: its snapshot, its members made ready (sockets bound, keys in
/// their legs) by slot, when the image was taken (on this relay's clock) and the relay it came
/// from.
#[derive(Debug)]
pub(crate) struct GroupRestore {
    pub(crate) group: GroupSnapshot,
    pub(crate) members: Vec<(Slot, MemberPrep)>,
    pub(crate) at: Instant,
    pub(crate) from: Arc<str>,
}

impl CallRt {
    /// The group call of a relay that died, as its image left it: the server with its members,
    /// grants, queue, reception state and timers (as much later than the image's time as they
    /// were left), the rules with their latches, SSRCs and SRTP state, the members' sockets.
    /// The transmissions' SSRCs are reserved in `ssrcs`. On error every socket is closed and
    /// the ports are returned for the caller to give back.
    pub(crate) fn restore_group(
        r: GroupRestore,
        latch_after: u32,
        ssrcs: Arc<SsrcRegistry>,
        totals: Arc<WorkerStats>,
    ) -> Result<CallRt, Refused> {
        let GroupRestore {
            group: g,
            members,
            at,
            ..
        } = r;
        let server = TransmissionControlServer::restore(&g.tc, at, Some(ssrcs.clone()));
        let head = GroupHead {
            call_id: CallId::from(g.call_id.as_str()),
            group_id: g.group_id.clone(),
            security: g.media_security,
            streams: g.streams.clone(),
            server_ssrc: Ssrc(g.tc.server_ssrc),
            created: ms_before(at, g.created_ms_ago),
        };
        let mut rt = CallRt::group_of(head, server, latch_after, ssrcs, totals);
        // The dead relay's counts are not this relay's work.
        rt.tc_published = rt.tc_counters();
        let mut members = members.into_iter();
        while let Some((slot, prep)) = members.next() {
            if let Err((e, own)) = rt.attach(at, slot, prep, g.rules.member(slot)) {
                return Err(rt.give_up(e, own, members.map(|(_, m)| m.ports)));
            }
        }
        // A granted member whose media had not come yet still owes its first packet.
        for t in &g.tc.members {
            let waiting = t.transmission.as_ref().is_some_and(|x| !x.first_media);
            if let Some(slot) = Slot::new(usize::from(t.slot)) {
                if rt.net.member(slot).is_some() {
                    rt.set_media_seen(slot, !waiting);
                }
            }
        }
        Ok(rt)
    }

    /// A group call's image for high availability (after a step: nothing queued).
    pub(super) fn group_image(&self, g: &Group, now: Instant) -> GroupImage {
        let mut members = Vec::new();
        let mut secrets = GroupSecrets::default();
        for (i, m) in self.net.members.iter().enumerate() {
            let (Some(m), Ok(slot)) = (m, u8::try_from(i)) else {
                continue;
            };
            let legs = (0..self.rules.streams())
                .map(|si| {
                    let (relay, muxed) = m.relay.get(si).copied().flatten()?;
                    let l = m.media.legs.get(si)?;
                    Some(GroupLegImage {
                        relay,
                        muxed,
                        remote_rtp: l.remote_rtp,
                        remote_rtcp: l.remote_rtcp,
                        announced: l.announced.clone(),
                        send_only: l.send_only,
                    })
                })
                .collect();
            members.push(GroupMemberImage {
                slot,
                mcvideo_id: m.user_id.to_string(),
                legs,
                control: m.control_relay.map(|relay| GroupControlImage {
                    relay,
                    remote: m.media.control.as_ref().and_then(|c| c.remote),
                }),
            });
            secrets.members.push(MemberSecrets {
                slot,
                legs: m
                    .media
                    .legs
                    .iter()
                    .map(|l| (l.srtp_in.clone(), l.srtp_out.clone()))
                    .collect(),
                control: m.media.control.as_ref().and_then(|c| c.key.clone()),
            });
        }
        GroupImage {
            group: GroupSnapshot {
                call_id: self.call_id.to_string(),
                group_id: g.group_id.clone(),
                media_security: g.security,
                streams: g.stream_images.clone(),
                created_ms_ago: now.saturating_duration_since(g.created).as_millis() as u64,
                tc: g.server.snapshot(now),
                members,
                rules: self.rules.snapshot(),
            },
            secrets,
        }
    }
}
