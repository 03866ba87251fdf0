//! The private call procedure on a worker: a push or pull is a [`CallRt`] of two members, the
//! caller in slot 0 and the callee in slot 1, whose transmission control is wrapped in a
//! [`Call`] (offer/answer, the implicit grant, release when the transmission ends). Its sockets
//! are bound when the call is offered and become the members' once the call is established;
//! then it forwards to its one peer in place
//! ([`PairFace`](super::super::rules::PairFace)).

use super::super::plane::WorkerStats;
use super::super::ports::BoundPort;
use super::super::rules::{
    CallRules, ControlSetup, GroupIngress, GroupRules, GroupRulesSetup, LegSetup, RulesSetup,
    RulesSnapshot, StreamSetup,
};
use super::super::{CallImage, CallSummary};
use super::call::{CallRt, Procedure};
use super::media::{MemberRt, Role};
use crate::control::call::{Call, CallEvent, CallState};
use crate::control::server::TransmissionState;
use crate::control::Party;
use crate::sdp::MediaKind;
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Instant;

/// A push or pull's procedure: its [`Call`], and its sockets until the call is established.
#[derive(Debug)]
pub(crate) struct Private {
    pub(crate) call: Call,
    /// Sockets bound while the call is offered (by relay port).
    pub(super) bound: HashMap<u16, BoundPort>,
    /// Relay ports to give back when the call ends, with their interface's pool.
    pub(super) ports: Vec<(usize, u16)>,
    /// The transmitter sent a BYE since the last step.
    pub(super) bye: bool,
    requested_keyframe: bool,
}

impl Private {
    /// Whether the call is over.
    pub(super) fn released(&self) -> bool {
        self.call.state() == CallState::Released
    }

    /// What an image of the call holds besides what every call's does (state, first media).
    pub(super) fn marks(&self) -> (CallState, bool) {
        (self.call.state(), self.call.server().media_started())
    }
}

impl CallRt {
    /// A push or pull as offered: its call and the sockets bound for it on interfaces
    /// `ifaces` (caller's, callee's).
    pub(crate) fn private(
        call: Call,
        bound: HashMap<u16, BoundPort>,
        ifaces: [usize; 2],
        latch_after: u32,
        totals: Arc<WorkerStats>,
    ) -> CallRt {
        let ports = call
            .streams()
            .iter()
            .flat_map(|s| {
                s.relay
                    .iter()
                    .zip(ifaces)
                    .filter_map(|(r, i)| r.map(|r| (i, r.rtp.port())))
            })
            .collect();
        let call_id = call.call_id().clone();
        // No stream and no member until the call is established.
        let rules = GroupRules::new(&GroupRulesSetup {
            arbiter: call.arbiter().clone(),
            security: call.media_security(),
            streams: Vec::new(),
            server_ssrc: call.identities().server_ssrc.get(),
            latch_after,
        });
        let proc = Procedure::Private(Box::new(Private {
            call,
            bound,
            ports,
            bye: false,
            requested_keyframe: false,
        }));
        CallRt::empty(call_id, proc, rules, latch_after, totals)
    }

    /// The one-to-one call's [`Call`], if this is one.
    pub(crate) fn call_mut(&mut self) -> Option<&mut Call> {
        match &mut self.proc {
            Procedure::Private(p) => Some(&mut p.call),
            Procedure::Group(_) => None,
        }
    }

    /// Builds the media plane once the call is established: rules from the negotiated streams,
    /// the bound sockets become the two members'. Sockets of streams nobody uses are closed.
    pub(crate) fn start_media(&mut self) -> io::Result<()> {
        self.start_media_from(None)
    }

    /// [`Self::start_media`] with the rules in the state of `snapshot` (a call taken over from
    /// another relay), or fresh.
    pub(crate) fn start_media_from(&mut self, snapshot: Option<&RulesSnapshot>) -> io::Result<()> {
        let Procedure::Private(p) = &mut self.proc else {
            return Err(io::Error::other("not a one-to-one call"));
        };
        let (setup, plan) = rules_setup(&p.call, self.latch_after);
        let rules = match snapshot {
            Some(s) => CallRules::restore(&setup, s),
            None => CallRules::new(&setup),
        }
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut bound = std::mem::take(&mut p.bound);
        let ids = [p.call.caller_id(), p.call.callee_id()].map(Arc::<str>::from);
        let (rules, face) = rules.into_parts();
        let streams = plan.streams.len();
        let tap = std::mem::replace(&mut self.rules, rules).take_tap();
        if let Some(tap) = tap {
            // A recording started before the streams were known: its metadata names them now.
            self.rules.set_tap(tap);
            let meta = self.media_meta();
            if let Some(tap) = self.rules.tap_mut() {
                tap.meta(meta);
            }
        }
        self.dirty = vec![0; streams];
        let tx = face.transmitter();
        self.net.members = ids
            .into_iter()
            .map(|id| Some(MemberRt::new(id, streams)))
            .collect();
        if let Some(m) = self.net.member_mut(tx.slot()) {
            m.media_seen = false; // its first packet steps the call
        }
        for (si, ports) in plan.streams.iter().enumerate() {
            for party in [Party::Caller, Party::Callee] {
                let b = bound
                    .remove(&ports[party.index()])
                    .ok_or_else(|| io::Error::other("a relay port lost its socket"))?;
                let at = |rtcp_socket| {
                    Role::Media(GroupIngress {
                        stream: si,
                        member: party.slot(),
                        rtcp_socket,
                    })
                };
                self.add_socket(party.slot(), b.rtp, at(false), |m, i| {
                    set(&mut m.rtp, si, i)
                })?;
                if let Some(s) = b.rtcp {
                    self.add_socket(party.slot(), s, at(true), |m, i| set(&mut m.rtcp, si, i))?;
                }
            }
        }
        for party in [Party::Caller, Party::Callee] {
            let b = plan.control[party.index()].and_then(|port| bound.remove(&port));
            if let Some(b) = b {
                let role = Role::Control(party.slot());
                self.add_socket(party.slot(), b.rtp, role, |m, i| m.control = Some(i))?;
            }
        }
        drop(bound); // sockets of streams nobody uses
        self.pair = Some(face);
        Ok(())
    }

    /// A private call's events, published; and once granted, a keyframe request to the
    /// transmitter.
    pub(super) fn private_events(&mut self, now: Instant, publish: &mut dyn FnMut(CallEvent)) {
        let Procedure::Private(p) = &mut self.proc else {
            return;
        };
        while let Some(ev) = p.call.poll_event() {
            publish(ev);
        }
        while let Some(ev) = self.call_mut().and_then(Call::poll_tc_event) {
            self.log_event(&ev);
        }
        let Procedure::Private(p) = &mut self.proc else {
            return;
        };
        if p.requested_keyframe || p.call.transmission_state() != TransmissionState::Granted {
            return;
        }
        p.requested_keyframe = true;
        let Some(face) = self.pair else { return };
        let mut buf = [0u8; 64];
        if let Some((si, len)) = face.keyframe_request(&mut self.rules, now, &mut buf) {
            let tx = face.transmitter().slot();
            self.send_keyframe_request(tx, si, buf.get(..len).unwrap_or_default());
        }
    }

    /// The media quality of every stream.
    fn private_quality(&self, now: Instant) -> Vec<super::super::rules::StreamQuality> {
        self.pair
            .map(|f| f.quality(&self.rules, now))
            .unwrap_or_default()
    }

    /// A one-to-one call's state and counters.
    pub(super) fn private_summary(&self, p: &Private, now: Instant) -> CallSummary {
        let call = &p.call;
        let times = call.times();
        let counters = |party: Party| {
            self.net
                .member(party.slot())
                .map(|m| m.counters)
                .unwrap_or_default()
        };
        CallSummary {
            call_id: call.call_id().clone(),
            kind: call.kind(),
            state: call.state(),
            transmission: call.transmission_state(),
            caller_id: call.caller_id().to_owned(),
            callee_id: call.callee_id().to_owned(),
            media_security: call.media_security(),
            commencement_mode: call.commencement_mode(),
            deliver_to: call.deliver_to().to_vec(),
            release_reason: call.release_reason(),
            duration: times
                .released
                .unwrap_or(now)
                .saturating_duration_since(times.created),
            caller: counters(Party::Caller),
            callee: counters(Party::Callee),
            quality: self.private_quality(now),
            tc: *call.tc_stats(),
        }
    }

    /// A one-to-one call's image for high availability (after a step: nothing queued).
    pub(super) fn private_image(&self, p: &Private, now: Instant) -> CallImage {
        let (call, secrets) = p.call.snapshot(now);
        CallImage {
            call,
            secrets,
            rules: self.pair.map(|f| f.snapshot(&self.rules)),
        }
    }
}

/// Puts socket index `i` at stream `si`.
fn set(v: &mut [Option<usize>], si: usize, i: usize) {
    if let Some(x) = v.get_mut(si) {
        *x = Some(i);
    }
}

/// Which relay port serves which stream and party.
#[derive(Debug, Default)]
struct Plan {
    streams: Vec<[u16; 2]>,
    control: [Option<u16>; 2],
}

/// The rules' setup of an established `call`, and which relay port serves which stream and
/// party.
fn rules_setup(call: &Call, latch_after: u32) -> (RulesSetup, Plan) {
    let ids = call.identities();
    let tx = call.kind().transmitter();
    let tx_has_control = call
        .streams()
        .iter()
        .any(|s| s.kind == MediaKind::Control && s.relay[tx.index()].is_some());
    let mut plan = Plan::default();
    let mut streams = Vec::new();
    let mut control: [Option<ControlSetup>; 2] = [None, None];
    for s in call.streams() {
        if s.kind == MediaKind::Control {
            for party in [Party::Caller, Party::Callee] {
                let i = party.index();
                if let (Some(relay), Some(remote)) = (s.relay[i], s.remote_rtp[i]) {
                    plan.control[i] = Some(relay.rtp.port());
                    control[i] = Some(ControlSetup {
                        remote: Some(remote),
                        key: call.tc_key(party).cloned(),
                    });
                }
            }
            continue;
        }
        let (Some(a), Some(b)) = (s.relay[0], s.relay[1]) else {
            continue;
        };
        if !s.active() {
            continue;
        }
        let leg = |i: usize, mux: bool| LegSetup {
            remote_rtp: s.remote_rtp[i],
            remote_rtcp: s.remote_rtcp[i],
            announced: s.announced_ssrcs[i].clone(),
            separate_rtcp: !mux,
            srtp_in: s.keys[i].as_ref().map(|k| k.inbound.clone()),
            srtp_out: s.keys[i].as_ref().map(|k| k.outbound.clone()),
            send_only: false,
        };
        let mut transmitter_ssrcs = s.announced_ssrcs[tx.index()].clone();
        if tx_has_control || !transmitter_ssrcs.is_empty() {
            match s.kind {
                MediaKind::Video => transmitter_ssrcs.push(ids.video_ssrc.get()),
                MediaKind::Audio => transmitter_ssrcs.push(ids.audio_ssrc.get()),
                _ => {}
            }
        }
        plan.streams.push([a.rtp.port(), b.rtp.port()]);
        streams.push(StreamSetup {
            kind: s.kind.clone(),
            encrypted: s.proto.to_ascii_uppercase().contains("SAVP"),
            clock_rate: s.clock_rate.unwrap_or(match s.kind {
                MediaKind::Video => 90_000, // every video payload format's clock
                _ => 0,
            }),
            encoding: s.encoding.clone(),
            legs: [leg(0, a.muxed()), leg(1, b.muxed())],
            transmitter_ssrcs,
        });
    }
    let setup = RulesSetup {
        arbiter: call.arbiter().clone(),
        security: call.media_security(),
        transmitter: tx,
        streams,
        control,
        server_ssrc: ids.server_ssrc.get(),
        video_ssrc: ids.video_ssrc.get(),
        latch_after,
    };
    (setup, plan)
}
