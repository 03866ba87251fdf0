//! A call's legs in the kernel fast path (docs/kernel-fast-path.md, feature `kernel-offload`):
//! the worker keeps the fast path's map in step with the call, for every kind of call.
//!
//! * **What is installed**: per stream, each transmitter's RTP toward whoever receives it, once
//!   the rules say the relay would forward it untouched ([`GroupRules::offload_route`]: not
//!   per_leg, the source latched on strong evidence, the SSRCs known), keyed by the
//!   transmitter's relay address and port. A push or pull: the transmitter toward its peer,
//!   with the grant the arbiter gives it at that moment. A group: each member holding a grant,
//!   toward every member its arbiter route names (reception control included), one entry with
//!   a copy for each (`bpf_clone_redirect`; up to 1 + 64 receivers, more stay in userspace).
//!   A receiver with no address yet is passed over, as the userspace fan-out does.
//! * **When**: [`CallRt::sync_offload`] runs in every step right before each `flush_control`,
//!   the only place a transmission control message leaves the call, and when a group member
//!   leaves, before its sockets close. A revoke, an end, a pre-emption, a reception change or
//!   a release therefore reaches the map before the message that announces it; a released
//!   call has no entry, and [`CallRt::drop_offload`] removes what is left before its sockets
//!   close and its ports go back.
//! * **Counters**: what the kernel forwarded is booked on the call's legs (the transmitter's in,
//!   each receiver's out, the worker's totals) and as media activity, so timers, `GET
//!   /v1/calls/{id}` and `/metrics` count it; a call with entries is stepped at least every
//!   [`POLL_EVERY`] for that.
//! * **Where**: [`Kernel::route`](crate::relay::offload::Kernel::route) gives each egress the
//!   interface toward its destination and attaches the program where its source arrives. A
//!   group receiver behind an interface needs its next hop in the neighbour table; until the
//!   relay's own sends have put it there the leg stays in userspace, tried again after
//!   [`NEIGHBOUR_RETRY`], doubling up to [`NEIGHBOUR_RETRY_MAX`] (the call is stepped then
//!   for it: media forwarded in userspace steps no call), each wait counted (`mcvideo_relay_kernel_offload_neighbour_waits_total`).

use super::call::{CallRt, Procedure};
use crate::control::arbiter::{slots, Slot};
use crate::relay::rules::KernelForwarded;
use crate::relay::stats::LegSnapshot;
use mcvideo_relay_fastpath::{Egress, FastPath, Leg};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

/// A call with legs in the kernel is stepped at least this often, to book its counters for
/// `/metrics` (a `GET`, a list and the quality histograms book them first; a step, and so
/// every timer, books them before it runs). Every wake-up of the worker for it is one the
/// kernel saved it not: at 50 packets/s per call, 2 s is 0.01 wake-ups per packet.
const POLL_EVERY: Duration = Duration::from_secs(2);

/// A group leg whose receivers' next hops are not in the neighbour table yet is tried again
/// after this (each try reads the route and neighbour tables); the wait doubles at each try
/// that fails again, up to [`NEIGHBOUR_RETRY_MAX`], so that calls whose receivers never
/// answer cost little.
const NEIGHBOUR_RETRY: Duration = Duration::from_millis(250);

/// The longest wait between two tries of a leg whose next hops do not resolve.
const NEIGHBOUR_RETRY_MAX: Duration = Duration::from_secs(4);

use crate::relay::offload::Handle;

/// Whether a leg that cannot be routed has been warned about (once per process).
static ROUTE_WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One installed leg.
#[derive(Debug)]
struct Installed {
    key: SocketAddrV4,
    leg: Leg,
    tx: Slot,
    /// Who gets its packets: the egress's member, then the fan-out's.
    receivers: Vec<Slot>,
    /// Its stream.
    si: usize,
    /// Packets, bytes, frames and keyframes already booked on the call.
    booked: [u64; 4],
}

/// A call's entries in the fast path.
#[derive(Debug, Default)]
pub(crate) struct Offloaded {
    fp: Option<Handle>,
    legs: Vec<Installed>,
    /// An install failed (the map full, ...): logged once per call.
    warned: bool,
    /// A fan-out receiver's next hop had no neighbour entry: not tried again before this (the
    /// relay's own sends resolve it meanwhile).
    neighbour_retry: Option<Instant>,
    /// The wait after the next try that fails ([`NEIGHBOUR_RETRY`] when zero).
    neighbour_wait: Duration,
}

impl Offloaded {
    /// Entries for a call on the fast path `fp` (`None`: the fast path does not run).
    pub(crate) fn new(fp: Option<Handle>) -> Offloaded {
        Offloaded {
            fp,
            ..Offloaded::default()
        }
    }

    /// A try failed for want of a next hop: the next is due after the current wait, which
    /// doubles for the one after ([`NEIGHBOUR_RETRY`] up to [`NEIGHBOUR_RETRY_MAX`]).
    fn defer(&mut self, now: Instant) {
        let wait = self.neighbour_wait.max(NEIGHBOUR_RETRY);
        self.neighbour_retry = Some(now + wait);
        self.neighbour_wait = (wait * 2).min(NEIGHBOUR_RETRY_MAX);
    }

    /// Before a sync: a retry that is due is this sync.
    fn retry_due(&mut self, now: Instant) {
        if self.neighbour_retry.is_some_and(|t| now >= t) {
            self.neighbour_retry = None;
        }
    }

    /// After a sync: with no retry set again (resolved, or nothing waits any more), the waits
    /// start over.
    fn retried(&mut self) {
        if self.neighbour_retry.is_none() {
            self.neighbour_wait = Duration::ZERO;
        }
    }

    /// When the call must be stepped for its entries at the latest: a leg waiting for a next
    /// hop is tried again when its wait is over (media in userspace does not step a call, so
    /// nothing else would), and legs in the kernel have their counters booked every
    /// [`POLL_EVERY`].
    pub(super) fn wake_at(&self, now: Instant) -> Option<Instant> {
        let poll = (!self.legs.is_empty()).then(|| now + POLL_EVERY);
        match (poll, self.neighbour_retry) {
            (Some(p), Some(r)) => Some(p.min(r)),
            (p, r) => p.or(r),
        }
    }
}

fn v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

impl CallRt {
    /// What should be in the kernel now, per stream: for a push or pull the transmitter's RTP
    /// toward its peer, with the grant as the arbiter has it; for a group, each member that
    /// holds a grant, toward every member that receives it (its arbiter route), one entry
    /// with a copy each. Nothing for a call not yet established or released, or one that
    /// keeps evidence (a transmission log, a media recording).
    fn offload_wanted(&self) -> Vec<Installed> {
        let mut want = Vec::new();
        // Evidence first: a call that keeps a transmission log or records its media needs
        // every packet in userspace (the log's first and last sequence numbers, the pcap).
        // per_leg re-protects every packet: nothing for the kernel, and nothing to work out
        // at each step.
        if self.released() || self.txlog.is_some() || self.rules.tapped() || self.rules.per_leg() {
            return want;
        }
        let arbiter = self.rules.arbiter();
        // (transmitter, granted, receivers)
        let senders: Vec<(Slot, bool, Vec<Slot>)> = match (&self.proc, self.pair) {
            (Procedure::Private(_), Some(face)) => {
                let tx = face.transmitter().slot();
                vec![(tx, arbiter.may_forward(tx), vec![face.peer(tx)])]
            }
            (Procedure::Private(_), None) => return want,
            (Procedure::Group(_), _) => slots(arbiter.permitted())
                .map(|tx| (tx, true, slots(arbiter.receivers(tx) & !tx.bit()).collect()))
                .collect(),
        };
        let local = |slot, si: usize| {
            let m = self.net.member(slot)?;
            let i = (*m.rtp.get(si)?)?;
            let s = self.net.socket(i)?;
            s.sock
                .local_addr()
                .and_then(v4)
                .filter(|a| !a.ip().is_unspecified())
        };
        // Toward `r` on stream `si`: from its relay port to its address (`None` while it has
        // none, or where it only sends on the stream: the userspace fan-out passes it over too).
        let egress = |r: Slot, si: usize| {
            Some(Egress {
                from: local(r, si)?,
                to: v4(self.rules.rtp_destination(r, si)?)?,
                ifindex: 0, // set by Kernel::route in sync_offload
            })
        };
        for (tx, granted, receivers) in senders {
            for si in 0..self.rules.streams() {
                let mut to: Vec<(Slot, Egress)> = receivers
                    .iter()
                    .filter_map(|&r| Some((r, egress(r, si)?)))
                    .collect();
                if to.is_empty() || to.len() > 1 + mcvideo_relay_fastpath::MAX_FANOUT {
                    continue; // no one to send to, or more than one entry takes: userspace
                }
                let (first, _) = to[0];
                let Some(route) = self.rules.offload_route(tx, first, si) else {
                    continue;
                };
                let (Some(key), Some(source)) = (local(tx, si), v4(route.source)) else {
                    continue;
                };
                let (_, main) = to.remove(0);
                want.push(Installed {
                    key,
                    leg: Leg {
                        source,
                        ssrcs: route.ssrcs,
                        granted,
                        egress: main,
                        clock_rate: route.clock_rate,
                        keyframes: route.keyframes,
                        last_keyframe: route.last_keyframe,
                        fanout: to.iter().map(|(_, e)| *e).collect(),
                    },
                    tx,
                    receivers: std::iter::once(first)
                        .chain(to.iter().map(|(r, _)| *r))
                        .collect(),
                    si,
                    booked: [0; 4],
                });
            }
        }
        want
    }

    /// Brings the kernel's entries in line with the call (see the module docs): books their
    /// counters, removes what must go, installs or updates what changed.
    pub(super) fn sync_offload(&mut self, now: Instant) {
        let Some(fp) = self.offload.fp.clone() else {
            return;
        };
        self.offload.retry_due(now);
        self.sync_entries(&fp, now);
        self.offload.retried();
    }

    fn sync_entries(&mut self, fp: &Handle, now: Instant) {
        let mut want = self.offload_wanted();
        if want.is_empty() && self.offload.legs.is_empty() {
            // Nothing in the kernel and nothing to put there (a per_leg call, one not yet
            // latched): no lock taken, as if the fast path did not run.
            return;
        }
        let mut k = fp.lock().unwrap_or_else(PoisonError::into_inner);
        // Where each leg leaves this host; one that cannot be routed stays in userspace.
        want.retain_mut(|w| match k.route(&mut w.leg, now) {
            Ok(()) => true,
            Err(e) => {
                if !std::mem::replace(&mut self.offload.warned, true) {
                    // One warning per process (a route missing for one call is missing for
                    // the next thousand), then one debug line per call.
                    if ROUTE_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::debug!(call = %self.call_id, error = %e, "leg stays in userspace");
                    } else {
                        tracing::warn!(call = %self.call_id, error = %e, "leg stays in userspace (said once; later calls at debug)");
                    }
                }
                false
            }
        });
        if self.offload.neighbour_retry.is_some_and(|t| now < t) {
            // A receiver's next hop is being resolved: what is in the kernel as wanted stays,
            // new or changed entries wait (a changed one leaves, and userspace serves it).
            let legs = &self.offload.legs;
            want.retain(|w| legs.iter().any(|k| k.key == w.key && k.leg == w.leg));
        }
        let fp = &mut k.fp;
        self.book_offload(fp, now);
        let mut kept = Vec::with_capacity(want.len());
        let before = self.offload.legs.len();
        for old in std::mem::take(&mut self.offload.legs) {
            if want.iter().any(|w| w.key == old.key) {
                kept.push(old);
            } else if let Err(e) = fp.remove(old.key) {
                tracing::error!(call = %self.call_id, key = %old.key, error = %e, "cannot remove a kernel fast-path entry");
            }
        }
        for w in want {
            match kept.iter().position(|k| k.key == w.key) {
                Some(i) if kept.get(i).is_some_and(|k| k.leg == w.leg) => {}
                Some(i) => {
                    // Only the grant changed: one map update; anything else: a new install
                    // (counters kept).
                    let r = match kept.get(i) {
                        Some(k)
                            if Leg {
                                granted: w.leg.granted,
                                ..k.leg.clone()
                            } == w.leg =>
                        {
                            fp.set_granted(w.key, w.leg.granted)
                        }
                        _ => fp.install(w.key, &w.leg),
                    };
                    match r {
                        Ok(()) => {
                            if let Some(k) = kept.get_mut(i) {
                                k.leg = w.leg;
                            }
                        }
                        Err(e) => {
                            // Never leave a stale leg forwarding: take it out.
                            if let mcvideo_relay_fastpath::Error::NoNeighbour(_) = e {
                                self.wait_for_neighbour(now);
                                tracing::debug!(call = %self.call_id, error = %e, "leg back in userspace until its receivers' next hops resolve");
                            } else {
                                tracing::error!(call = %self.call_id, error = %e, "cannot update a kernel fast-path entry: removing it");
                            }
                            let _ = fp.remove(w.key);
                            kept.remove(i);
                        }
                    }
                }
                None => match fp.install(w.key, &w.leg) {
                    Ok(()) => {
                        tracing::debug!(call = %self.call_id, relay = %w.key, to = %w.leg.egress.to, granted = w.leg.granted, "leg forwarded in the kernel");
                        kept.push(w);
                    }
                    Err(mcvideo_relay_fastpath::Error::NoNeighbour(a)) => {
                        // The relay's own sends resolve it; tried again a moment later.
                        self.wait_for_neighbour(now);
                        tracing::debug!(call = %self.call_id, receiver = %a.ip(), "leg stays in userspace until its receivers' next hops resolve");
                    }
                    Err(e) => {
                        if !std::mem::replace(&mut self.offload.warned, true) {
                            tracing::warn!(call = %self.call_id, error = %e, "leg stays in userspace");
                        }
                    }
                },
            }
        }
        self.set_offload_legs(before, kept);
    }

    /// A receiver's next hop is not in the neighbour table: new entries wait
    /// [`NEIGHBOUR_RETRY`], twice as long after each try that fails again (counted).
    fn wait_for_neighbour(&mut self, now: Instant) {
        self.offload.defer(now);
        self.totals
            .offload_neighbour_waits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The call's legs in the kernel are now `legs`, `before` before (the worker's gauge
    /// follows).
    fn set_offload_legs(&mut self, before: usize, legs: Vec<Installed>) {
        use std::sync::atomic::Ordering::Relaxed;
        let (before, after) = (before as u64, legs.len() as u64);
        let gauge = &self.totals.offload_legs;
        if after > before {
            gauge.fetch_add(after - before, Relaxed);
        } else if before > after {
            gauge.fetch_sub(before - after, Relaxed);
        }
        self.offload.legs = legs;
    }

    /// Books what the kernel forwarded since the last time on the call's legs and as media
    /// activity.
    fn book_offload(&mut self, fp: &FastPath, now: Instant) {
        let mut moved = Vec::new();
        for l in &mut self.offload.legs {
            let Ok(c) = fp.counters(l.key) else { continue };
            let now_counts = [c.packets, c.bytes, c.frames, c.keyframes];
            let mut d = [0u64; 4];
            for ((d, booked), c) in d.iter_mut().zip(&mut l.booked).zip(now_counts) {
                *d = c.saturating_sub(*booked);
                *booked = c.max(*booked);
            }
            if d[0] > 0 {
                let last = c
                    .last_forwarded_ago
                    .and_then(|a| now.checked_sub(a))
                    .unwrap_or(now);
                moved.push((l.tx, l.receivers.clone(), l.si, d, c, last));
            }
        }
        for (tx, receivers, si, [packets, bytes, frames, keyframes], c, last) in moved {
            self.totals
                .offload_packets
                .fetch_add(packets, std::sync::atomic::Ordering::Relaxed);
            let f = KernelForwarded {
                packets,
                bytes,
                frames,
                keyframes,
                highest_seq: c.highest_seq,
                last,
                jitter_q4: c.jitter_q4,
                last_keyframe: c.last_keyframe,
            };
            self.rules.offloaded(tx, si, &f);
            let mut i = LegSnapshot::default();
            i.add_in(packets, bytes);
            self.count(tx, &i);
            let mut o = LegSnapshot::default();
            o.add_out(packets, bytes);
            for r in receivers {
                self.count(r, &o);
            }
            if let Some(m) = self.net.member_mut(tx) {
                m.activity.total += packets;
                m.activity.since_step += packets;
                m.activity.last = Some(last);
            }
        }
    }

    /// Books the kernel's counters now (before a summary or a step reads them).
    pub(crate) fn poll_offload(&mut self, now: Instant) {
        let Some(fp) = self.offload.fp.clone() else {
            return;
        };
        if self.offload.legs.is_empty() {
            return;
        }
        let k = fp.lock().unwrap_or_else(PoisonError::into_inner);
        self.book_offload(&k.fp, now);
    }

    /// Removes every entry of the call (its counters booked first): before its sockets close
    /// and its ports go back, or when another relay takes it.
    pub(crate) fn drop_offload(&mut self, now: Instant) {
        let Some(fp) = self.offload.fp.clone() else {
            return;
        };
        let mut k = fp.lock().unwrap_or_else(PoisonError::into_inner);
        let fp = &mut k.fp;
        self.book_offload(fp, now);
        let before = self.offload.legs.len();
        for l in std::mem::take(&mut self.offload.legs) {
            if let Err(e) = fp.remove(l.key) {
                tracing::error!(call = %self.call_id, key = %l.key, error = %e, "cannot remove a kernel fast-path entry");
            }
        }
        self.set_offload_legs(before, Vec::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // a start for virtual time
    fn a_next_hop_that_stays_unresolved_is_tried_less_and_less_often() {
        let t0 = Instant::now();
        let mut o = Offloaded::new(None);
        assert_eq!(o.wake_at(t0), None, "nothing to step for");
        let mut at = t0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            o.retry_due(at);
            o.defer(at); // the try failed again
            o.retried();
            let next = o.wake_at(at).expect("stepped for the retry");
            waits.push(next.duration_since(at).as_millis());
            at = next;
        }
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 4000, 4000]);
        // A try that succeeds starts the waits over.
        o.retry_due(at);
        o.retried();
        assert_eq!(o.wake_at(at), None);
        o.defer(at);
        assert_eq!(o.wake_at(at), Some(at + NEIGHBOUR_RETRY));
    }
}
