//! High availability on a worker: call images (one-to-one and group) to the HA writer on every
//! control-plane change and about every second while media flows, calls taken over from
//! another relay, and calls dropped once another relay has them.

use super::call::CallRt;
use super::group::GroupRestore;
use super::Worker;
use crate::control::call::CallEvent;
use crate::control::call::{Call, CallEventKind, CallState};
use crate::ids::CallId;
use crate::relay::ports::BoundPort;
use crate::relay::rules::RulesSnapshot;
use crate::relay::HaUpdate;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tracing::{error, warn};

/// A call to take over: the restored call, its bound sockets, its interfaces, its rules'
/// state and the relay it came from.
pub(crate) type Restore = (
    Call,
    HashMap<u16, BoundPort>,
    [usize; 2],
    Option<RulesSnapshot>,
    Arc<str>,
);

/// Deletes kept for a writer that is behind, at most (past it the key's TTL and the next full
/// resync remove the record).
const MAX_PENDING_DELETES: usize = 65_536;

/// Where a worker's call images go, and what was sent last per call.
pub(crate) struct HaSink {
    /// Bounded ([`crate::relay::HA_UPDATES_CAPACITY`]): a writer that falls behind costs
    /// images, never memory. An image that finds it full is not recorded as sent, so the next
    /// refresh sends it again.
    tx: crossbeam_channel::Sender<HaUpdate>,
    /// Per call: the control-plane marks and the packets received at the last image.
    sent: HashMap<CallId, (u64, u64)>,
    /// Deletes that found the channel full, sent again at the next refresh.
    deletes: Vec<CallId>,
    last_refresh: Instant,
    /// Where the refresh walk over the worker's calls stands.
    cursor: usize,
}

impl HaSink {
    pub(crate) fn new(tx: crossbeam_channel::Sender<HaUpdate>, now: Instant) -> Self {
        HaSink {
            tx,
            sent: HashMap::new(),
            deletes: Vec::new(),
            last_refresh: now,
            cursor: 0,
        }
    }

    fn put(&mut self, rt: &CallRt, now: Instant, marks: (u64, u64)) {
        self.send(rt.call_id(), marks, || rt.image(now));
    }

    fn send(&mut self, id: &CallId, marks: (u64, u64), image: impl FnOnce() -> HaUpdate) {
        if self.tx.is_full() {
            return; // the writer is behind: this call is sent again at a later refresh
        }
        if self.tx.try_send(image()).is_ok() {
            self.sent.insert(id.clone(), marks);
        }
    }

    /// Deletes that found the channel full, while there is room.
    fn retry_deletes(&mut self) {
        while let Some(id) = self.deletes.pop() {
            if let Err(e) = self.tx.try_send(HaUpdate::Delete(id)) {
                if let HaUpdate::Delete(id) = e.into_inner() {
                    self.deletes.push(id);
                }
                break;
            }
        }
    }

    /// After a step: an image when the control plane moved.
    pub(crate) fn after_step(&mut self, rt: &CallRt, now: Instant) {
        let marks = rt.ha_marks();
        if self.sent.get(rt.call_id()).map(|m| m.0) != Some(marks.0) {
            self.put(rt, now, marks);
        }
    }

    /// A call ended.
    pub(crate) fn ended(&mut self, id: &CallId) {
        self.sent.remove(id);
        if let Err(e) = self.tx.try_send(HaUpdate::Delete(id.clone())) {
            if let HaUpdate::Delete(id) = e.into_inner() {
                if self.deletes.len() < MAX_PENDING_DELETES {
                    self.deletes.push(id);
                }
            }
        }
    }
}

impl Worker {
    /// An image of every call whose media moved since its last one, each call about once per
    /// [`EngineConfig::ha_refresh`](crate::relay::EngineConfig::ha_refresh). The walk goes a slice of the calls at a time, in proportion to the
    /// time since the last slice, so a worker with thousands of calls never stops its packets
    /// to image all of them at once.
    pub(super) fn ha_refresh(&mut self, now: Instant) {
        let Some(ha) = self.ha.as_mut() else { return };
        let n = self.slots.len();
        let elapsed = now.saturating_duration_since(ha.last_refresh);
        let every = self.plane.config.ha_refresh;
        let due = (n as u128 * elapsed.as_nanos() / every.as_nanos().max(1)) as usize;
        if due == 0 {
            return;
        }
        ha.last_refresh = now;
        ha.retry_deletes();
        let mut moved = Vec::new();
        for _ in 0..due.min(n) {
            ha.cursor = (ha.cursor + 1) % n;
            if let Some(Some(s)) = self.slots.get(ha.cursor) {
                if ha.sent.get(s.rt.call_id()) != Some(&s.rt.ha_marks()) {
                    moved.push(ha.cursor as u32);
                }
            }
        }
        // A call whose media moved is stepped first: the media seen since its last step reaches
        // its transmission control, so the image's inactivity timers count from the last packet
        // (an adopter restoring timers from before would release a live call at once).
        for slot in moved {
            self.step(slot, now);
            let (Some(ha), Some(Some(s))) = (self.ha.as_mut(), self.slots.get(slot as usize))
            else {
                continue;
            };
            let marks = s.rt.ha_marks();
            if ha.sent.get(s.rt.call_id()) != Some(&marks) {
                ha.put(&s.rt, now, marks);
            }
        }
    }

    /// Runs a call taken over from another relay.
    pub(super) fn restore(&mut self, r: Restore, now: Instant) -> Result<(), String> {
        let (mut call, bound, ifaces, rules, from) = r;
        call.push_event(CallEventKind::Adopted { from });
        let established = call.state() == CallState::Established;
        let id: Arc<str> = call.id().into();
        self.adopt(call, bound, ifaces, now);
        let Some(&slot) = self.by_id.get(&id) else {
            return Err("the call ended at once".into());
        };
        if established {
            let started = self.with_kind(&id, "restoring the media of", CallRt::if_private, |rt| {
                let r = rt.start_media_from(rules.as_ref());
                if let Err(e) = &r {
                    warn!(call = %id, error = %e, "cannot restore the call's media");
                    rt.release(now, crate::control::ReleaseReason::InternalError);
                }
                r.map_err(|e| e.to_string())
            });
            match started {
                Ok(Ok(())) => {
                    let _ = self.poll(slot, None);
                }
                Ok(Err(e)) => {
                    self.step(slot, now);
                    return Err(e);
                }
                Err(e) => return Err(e.to_string()),
            }
            self.step(slot, now);
        }
        Ok(())
    }

    /// Drops every call (one-to-one and group) silently: no message, no event; sockets close,
    /// ports and IDs go back.
    pub(super) fn abandon(&mut self) -> usize {
        let slots: Vec<u32> = self.by_id.values().copied().collect();
        let n = slots.len();
        for slot in slots {
            let Some(mut rt) = self.remove(slot) else {
                continue;
            };
            if let Some(ha) = self.ha.as_mut() {
                ha.sent.remove(rt.call_id());
            }
            rt.abandon();
            if !rt.finish(&self.plane) {
                error!(worker = self.index, "an abandoned call's teardown panicked");
            }
        }
        n
    }

    /// Runs a group call taken over from another relay: its members' sockets polled,
    /// `call.adopted` published, then stepped (its due timers run, the rest are armed).
    pub(super) fn restore_group(&mut self, r: GroupRestore, now: Instant) -> Result<(), String> {
        let id: Arc<str> = r.group.call_id.as_str().into();
        let from = r.from.clone();
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            CallRt::restore_group(
                r,
                self.plane.config.latch_after_packets,
                self.plane.ssrcs.clone(),
                self.stats.clone(),
            )
        }));
        let rt = match built {
            Ok(Ok(rt)) => rt,
            Ok(Err((e, ports))) => {
                self.plane.free_ports(&ports);
                return Err(e.to_string());
            }
            Err(_) => return Err("internal error while restoring the group call".into()),
        };
        let call_id = rt.call_id.clone();
        let (slot, _) = self.insert(id, rt);
        let _ = self.poll(slot, None);
        self.plane.publish(CallEvent {
            call_id,
            kind: CallEventKind::Adopted { from },
        });
        self.step(slot, now);
        Ok(())
    }
}
