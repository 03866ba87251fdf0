//! A call on a worker, whatever its kind: the one slab entry type, so the worker has one
//! create, readable, step, end and fail path for every call. A push or pull call is
//! [`CallRt`] (two parties, one [`Call`](crate::control::call::Call) with its offer/answer);
//! a group call is [`GroupRt`] (members joining and leaving). Both run the one
//! transmission-control server; what differs per kind stays behind the methods here.

use super::super::plane::Plane;
use super::super::rules::QualityHistograms;
use super::super::{CallSummary, GroupCallSummary, HaUpdate};
use super::call::CallRt;
use super::group::GroupRt;
use super::media::Scratch;
use crate::control::server::KindCounters;
use crate::control::ReleaseReason;
use crate::ids::CallId;
use std::net::UdpSocket;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

/// One call on a worker.
// Unboxed on purpose: a one-to-one call's packets reach it with no pointer to follow, as
// before the slab was shared; a group entry's unused bytes cost ~2 KiB a group call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Rt {
    /// A one-to-one call (push or pull).
    Private(CallRt),
    /// A group call.
    Group(GroupRt),
}

/// A call's state and counters, as its kind reports them (transient: built for a reply).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Summary {
    Private(CallSummary),
    Group(GroupCallSummary),
}

impl Summary {
    /// A one-to-one call's summary, if this is one.
    pub(crate) fn private(self) -> Option<CallSummary> {
        match self {
            Summary::Private(s) => Some(s),
            Summary::Group(_) => None,
        }
    }

    /// A group call's summary, if this is one.
    pub(crate) fn group(self) -> Option<GroupCallSummary> {
        match self {
            Summary::Group(s) => Some(s),
            Summary::Private(_) => None,
        }
    }
}

impl Rt {
    /// The call's ID.
    pub(crate) fn call_id(&self) -> &CallId {
        match self {
            Rt::Private(c) => c.call.call_id(),
            Rt::Group(g) => &g.call_id,
        }
    }

    /// The one-to-one call, if this is one.
    pub(crate) fn private(&mut self) -> Option<&mut CallRt> {
        match self {
            Rt::Private(c) => Some(c),
            Rt::Group(_) => None,
        }
    }

    /// The group call, if this is one.
    pub(crate) fn group(&mut self) -> Option<&mut GroupRt> {
        match self {
            Rt::Group(g) => Some(g),
            Rt::Private(_) => None,
        }
    }

    /// The one-to-one call, if this is one (to read).
    pub(crate) fn as_private(&self) -> Option<&CallRt> {
        match self {
            Rt::Private(c) => Some(c),
            Rt::Group(_) => None,
        }
    }

    /// The group call, if this is one (to read).
    pub(crate) fn as_group(&self) -> Option<&GroupRt> {
        match self {
            Rt::Group(g) => Some(g),
            Rt::Private(_) => None,
        }
    }

    /// Every socket the worker polls for this call, with its index in the call.
    pub(crate) fn sockets(&self) -> Vec<(usize, &UdpSocket)> {
        match self {
            Rt::Private(c) => c.sockets().collect(),
            Rt::Group(g) => g
                .member_slots()
                .into_iter()
                .flat_map(|m| g.member_sockets(m))
                .collect(),
        }
    }

    /// Socket `index` is readable; `true` when the call wants a step.
    #[inline]
    pub(crate) fn on_readable(&mut self, index: usize, now: Instant, io: &mut Scratch) -> bool {
        match self {
            Rt::Private(c) => c.on_readable(index, now, io).step,
            Rt::Group(g) => g.on_readable(index, now, io),
        }
    }

    /// Feeds the call, sends what it polls out, publishes its events; returns its next
    /// deadline.
    pub(crate) fn step(
        &mut self,
        now: Instant,
        tx: &mut Vec<u8>,
        plane: &Plane,
    ) -> Option<Instant> {
        match self {
            Rt::Private(c) => {
                c.step(now, tx);
                while let Some(ev) = c.call.poll_event() {
                    plane.publish(ev);
                }
                c.call.poll_timeout()
            }
            Rt::Group(g) => g.step(now, tx, &mut |ev| plane.publish(ev)),
        }
    }

    /// A panic while handling the call: release it with `internal_error` and publish what that
    /// says, as far as the call still can.
    pub(crate) fn fail(&mut self, now: Instant, tx: &mut Vec<u8>, plane: &Plane) {
        match self {
            Rt::Private(c) => {
                c.call.release(now, ReleaseReason::InternalError);
                while let Some(ev) = c.call.poll_event() {
                    plane.publish(ev);
                }
            }
            Rt::Group(g) => {
                g.release(ReleaseReason::InternalError);
                g.step(now, tx, &mut |ev| plane.publish(ev));
            }
        }
    }

    /// Transmission control counters (received, sent), for the worker's totals.
    pub(crate) fn tc_counters(&self) -> (KindCounters, KindCounters) {
        match self {
            Rt::Private(c) => {
                let s = c.call.tc_stats();
                (s.received, s.sent)
            }
            Rt::Group(g) => g.tc_counters(),
        }
    }

    /// The counters as last added to the worker's totals.
    pub(crate) fn tc_published(&mut self) -> &mut (KindCounters, KindCounters) {
        match self {
            Rt::Private(c) => &mut c.tc_published,
            Rt::Group(g) => &mut g.tc_published,
        }
    }

    /// The deadline the worker's timer heap holds for this call.
    pub(crate) fn armed(&mut self) -> &mut Option<Instant> {
        match self {
            Rt::Private(c) => &mut c.armed,
            Rt::Group(g) => &mut g.armed,
        }
    }

    /// Whether the call is over (the worker then ends it).
    pub(crate) fn released(&self) -> bool {
        match self {
            Rt::Private(c) => c.released(),
            Rt::Group(g) => g.released(),
        }
    }

    /// Releases the call for `reason` (the next step sends and publishes what that says).
    pub(crate) fn release(&mut self, now: Instant, reason: ReleaseReason) {
        match self {
            Rt::Private(c) => c.call.release(now, reason),
            Rt::Group(g) => g.release(reason),
        }
    }

    /// The call's state and counters.
    pub(crate) fn summary(&self, now: Instant) -> Summary {
        match self {
            Rt::Private(c) => Summary::Private(c.summary(now)),
            Rt::Group(g) => Summary::Group(g.summary(now)),
        }
    }

    /// Adds the jitter and loss of every leg that sent media to `h`.
    pub(crate) fn quality(&self, now: Instant, h: &mut QualityHistograms) {
        match self {
            Rt::Private(c) => c
                .quality(now)
                .iter()
                .for_each(|q| q.legs.iter().for_each(|l| h.observe(l))),
            Rt::Group(g) => g
                .quality(now)
                .iter()
                .for_each(|q| q.streams.iter().for_each(|(_, l)| h.observe(l))),
        }
    }

    /// High availability: the control-plane mark and the packets received (an image is due
    /// when they moved).
    pub(crate) fn ha_marks(&self) -> (u64, u64) {
        match self {
            Rt::Private(c) => c.ha_marks(),
            Rt::Group(g) => g.ha_marks(),
        }
    }

    /// High availability: the call's image.
    pub(crate) fn image(&self, now: Instant) -> HaUpdate {
        match self {
            Rt::Private(c) => HaUpdate::Put(Box::new(c.image(now))),
            Rt::Group(g) => HaUpdate::PutGroup(Box::new(g.image(now))),
        }
    }

    /// Another relay has the call: stop it without a message (the arbiter forgets its grants).
    pub(crate) fn abandon(&mut self) {
        match self {
            Rt::Private(c) => c.call.arbiter().release(),
            Rt::Group(g) => g.abandon(),
        }
    }

    /// Tears the call down: its sockets close, its ports (and a group's server SSRC) go back,
    /// and the plane forgets it. `false` when the teardown panicked.
    pub(crate) fn finish(self, plane: &Plane) -> bool {
        match self {
            Rt::Private(c) => {
                let ports = c.ports.clone();
                let call = catch_unwind(AssertUnwindSafe(move || {
                    let CallRt { call, .. } = c; // drops the sockets
                    call
                }));
                match call {
                    Ok(call) => {
                        plane.finished(&call, &ports);
                        true
                    }
                    Err(_) => false,
                }
            }
            Rt::Group(g) => {
                let id: Arc<str> = g.call_id.as_str().into();
                let ports = g.all_ports();
                let (ssrc, registry) = (g.server_ssrc(), g.ssrc_registry().clone());
                let clean = catch_unwind(AssertUnwindSafe(move || drop(g))).is_ok();
                registry.free(ssrc);
                plane.group_finished(&id, &ports);
                clean
            }
        }
    }
}
