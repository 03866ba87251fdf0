//! A worker: one thread, one level-triggered epoll loop, no async runtime on the media path.
//! It owns its calls outright — their sans-IO control state, their sockets, their per-packet
//! rules — so nothing on a call's path takes a lock. The control plane reaches it through a
//! queue ([`Cmd`], crossbeam) and an eventfd waker, and waits for the reply.
//!
//! Per wake-up: drain the command queue; `epoll_wait` until the earliest call timer; for each
//! ready socket, receive and judge its batch (going back to `epoll_wait` as soon as a batch
//! comes back short: the queue is drained); run the calls that asked for it and the timers
//! that are due. A panic while handling one call ends that call (`internal_error`) and nothing
//! else.
#![allow(clippy::disallowed_methods)] // the worker is where the clock is read

mod call;
mod group;
#[cfg(test)]
pub(crate) mod hooks;
mod media;
mod restore;

pub(crate) use group::{GroupAdopt, GroupRestore};

use super::io::{Events, Poller, Waker};
use super::plane::{lock, Plane, WorkerStats};
use super::ports::BoundPort;
use super::{CallSummary, GroupCallSummary};
use crate::control::call::{AnswerCall, Call, CallAnswer, Entropy, SetupError};
use crate::control::ReleaseReason;
use call::CallRt;
use group::GroupRt;
use media::Scratch;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, warn};

/// How the engine reaches a worker.
#[derive(Debug)]
pub(crate) struct WorkerHandle {
    pub(crate) tx: crossbeam_channel::Sender<Cmd>,
    pub(crate) waker: Arc<Waker>,
    pub(crate) stats: Arc<WorkerStats>,
}

impl WorkerHandle {
    /// Queues `cmd` and wakes the worker. `false`: the worker is gone.
    pub(crate) fn send(&self, cmd: Cmd) -> bool {
        let ok = self.tx.send(cmd).is_ok();
        self.waker.wake();
        ok
    }
}

/// The reply half of a command: a blocking caller waits on a channel, an async one on a
/// oneshot (so no runtime thread waits for a worker).
pub(crate) enum Reply<T> {
    /// A caller blocked in `recv_timeout`.
    Wait(crossbeam_channel::Sender<T>),
    /// An awaiting task.
    Wake(tokio::sync::oneshot::Sender<T>),
}

impl<T> Reply<T> {
    /// Hands the reply over; `false` when the caller has given up on it.
    pub(crate) fn send(self, v: T) -> bool {
        match self {
            Reply::Wait(tx) => tx.send(v).is_ok(),
            Reply::Wake(tx) => tx.send(v).is_ok(),
        }
    }
}

/// What a panic while handling a command for call `id` tells the caller.
fn panicked(id: &str, doing: &str) -> SetupError {
    SetupError::Internal(format!(
        "a bug while {doing} call {id}: the call was released (internal_error)"
    ))
}

/// What the control plane asks of a worker.
pub(crate) enum Cmd {
    /// Run this offered call (its sockets are bound, not yet polled).
    Adopt(Box<(Call, HashMap<u16, BoundPort>, [usize; 2])>),
    /// The callee accepted.
    Accept(Arc<str>, AnswerCall, Reply<Result<CallAnswer, SetupError>>),
    /// The callee declined.
    Reject(Arc<str>, Reply<Result<CallSummary, SetupError>>),
    /// Release the call.
    Release(
        Arc<str>,
        ReleaseReason,
        Reply<Result<CallSummary, SetupError>>,
    ),
    /// One call's summary.
    Get(Arc<str>, Reply<Result<CallSummary, SetupError>>),
    /// Every call's summary.
    List(Reply<Result<Vec<CallSummary>, SetupError>>),
    /// Jitter and loss of every leg that sent media, as histograms.
    Quality(Reply<super::rules::QualityHistograms>),
    /// Run this group call (its members' sockets are bound, not yet polled); reply with the
    /// members' slots, in order.
    AdoptGroup(
        Box<GroupAdopt>,
        Reply<Result<Vec<crate::control::arbiter::Slot>, SetupError>>,
    ),
    /// A member joins a group call.
    JoinGroup(
        Arc<str>,
        Box<super::plane::MemberPrep>,
        Reply<Result<crate::control::arbiter::Slot, SetupError>>,
    ),
    /// A member (by MCVideo ID) leaves a group call.
    LeaveGroup(Arc<str>, String, Reply<Result<(), SetupError>>),
    /// One group call's summary.
    GetGroup(Arc<str>, Reply<Result<GroupCallSummary, SetupError>>),
    /// Every group call's summary.
    ListGroups(Reply<Result<Vec<GroupCallSummary>, SetupError>>),
    /// Release a group call.
    ReleaseGroup(
        Arc<str>,
        ReleaseReason,
        Reply<Result<GroupCallSummary, SetupError>>,
    ),
    /// High availability: send call images there from now on.
    HaSink(crossbeam_channel::Sender<super::HaUpdate>),
    /// High availability: every one-to-one call's image.
    Snapshot(Reply<Vec<super::CallImage>>),
    /// High availability: run this call taken over from another relay (its sockets are bound);
    /// the rules' state and the relay it came from.
    Restore(Box<restore::Restore>, Reply<Result<(), String>>),
    /// High availability: drop every call silently (another relay has them).
    Abandon(Reply<usize>),
    /// High availability: every group call's image.
    SnapshotGroups(Reply<Vec<super::GroupImage>>),
    /// High availability: run this group call taken over from another relay (its members'
    /// sockets are bound).
    RestoreGroup(Box<group::GroupRestore>, Reply<Result<(), String>>),
    /// Release every call (reason `shutdown`) and stop.
    Shutdown,
}

impl core::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Cmd::Adopt(_) => "Adopt",
            Cmd::Accept(..) => "Accept",
            Cmd::Reject(..) => "Reject",
            Cmd::Release(..) => "Release",
            Cmd::Get(..) => "Get",
            Cmd::List(_) => "List",
            Cmd::Quality(_) => "Quality",
            Cmd::AdoptGroup(..) => "AdoptGroup",
            Cmd::JoinGroup(..) => "JoinGroup",
            Cmd::LeaveGroup(..) => "LeaveGroup",
            Cmd::GetGroup(..) => "GetGroup",
            Cmd::ListGroups(_) => "ListGroups",
            Cmd::ReleaseGroup(..) => "ReleaseGroup",
            Cmd::HaSink(_) => "HaSink",
            Cmd::Snapshot(_) => "Snapshot",
            Cmd::Restore(..) => "Restore",
            Cmd::Abandon(_) => "Abandon",
            Cmd::SnapshotGroups(_) => "SnapshotGroups",
            Cmd::RestoreGroup(..) => "RestoreGroup",
            Cmd::Shutdown => "Shutdown",
        })
    }
}

/// The waker's token.
const WAKER: u64 = u64::MAX;
/// Marks a group call's slot in tokens and timers (group calls have their own slab).
const GROUP_TAG: u32 = 1 << 31;
/// Ready sockets reported per `epoll_wait`.
const EVENTS: usize = 256;

fn token(slot: u32, gen: u32, socket: usize) -> u64 {
    (u64::from(slot) << 32) | (u64::from(gen & 0xffff) << 16) | (socket as u64 & 0xffff)
}

fn untoken(t: u64) -> (u32, u32, usize) {
    (
        (t >> 32) as u32,
        ((t >> 16) & 0xffff) as u32,
        (t & 0xffff) as usize,
    )
}

/// Randomness from the OS (the relay's per_leg keys toward the caller).
pub(crate) struct OsEntropy(pub(crate) ring::rand::SystemRandom);

impl Default for OsEntropy {
    fn default() -> Self {
        OsEntropy(ring::rand::SystemRandom::new())
    }
}

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        use ring::rand::SecureRandom;
        if self.0.fill(buf).is_err() {
            // The OS generator does not fail on Linux; never hand out zeros silently.
            panic!("the operating system's random generator failed");
        }
    }
}

struct Entry {
    gen: u32,
    rt: CallRt,
}

struct GroupEntry {
    gen: u32,
    rt: GroupRt,
}

/// Time spent working, for the placement of new calls.
struct Busy {
    since: Instant,
    worked: Duration,
}

pub(crate) struct Worker {
    index: usize,
    plane: Arc<Plane>,
    rx: crossbeam_channel::Receiver<Cmd>,
    waker: Arc<Waker>,
    stats: Arc<WorkerStats>,
    poller: Poller,
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    next_gen: u32,
    by_id: HashMap<Arc<str>, u32>,
    groups: Vec<Option<GroupEntry>>,
    group_free: Vec<u32>,
    group_by_id: HashMap<Arc<str>, u32>,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    ready: Vec<u64>,
    to_step: Vec<u32>,
    scratch: Scratch,
    tx: Vec<u8>,
    entropy: OsEntropy,
    busy: Busy,
    /// High availability: where call images go, if anywhere.
    ha: Option<restore::HaSink>,
}

impl Worker {
    pub(crate) fn new(
        index: usize,
        plane: Arc<Plane>,
        rx: crossbeam_channel::Receiver<Cmd>,
        waker: Arc<Waker>,
        stats: Arc<WorkerStats>,
    ) -> std::io::Result<Worker> {
        let poller = Poller::new()?;
        poller.add(waker.fd(), WAKER)?;
        Ok(Worker {
            index,
            plane,
            rx,
            waker,
            stats,
            poller,
            slots: Vec::new(),
            free: Vec::new(),
            next_gen: 0,
            by_id: HashMap::new(),
            groups: Vec::new(),
            group_free: Vec::new(),
            group_by_id: HashMap::new(),
            timers: BinaryHeap::new(),
            ready: Vec::with_capacity(EVENTS),
            to_step: Vec::new(),
            scratch: Scratch::default(),
            tx: Vec::with_capacity(1600),
            entropy: OsEntropy(ring::rand::SystemRandom::new()),
            busy: Busy {
                since: Instant::now(),
                worked: Duration::ZERO,
            },
            ha: None,
        })
    }

    /// Runs until [`Cmd::Shutdown`] (or the engine is gone).
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            if !self.commands() {
                return;
            }
            let before = Instant::now();
            let timeout = self.timers.peek().map(|Reverse((t, ..))| {
                t.saturating_duration_since(before) + Duration::from_micros(50)
            });
            self.ready.clear();
            match self.poller.wait(&mut events, timeout) {
                Ok(()) => self.ready.extend(events.tokens()),
                Err(e) => {
                    error!(worker = self.index, error = %e, "epoll_wait failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let now = Instant::now();
            for i in 0..self.ready.len() {
                match self.ready.get(i).copied() {
                    Some(WAKER) => self.waker.drain(),
                    Some(t) => self.readable(t, now),
                    None => {}
                }
            }
            self.expire(now);
            self.step_pending(now);
            self.ha_refresh(now);
            self.account(before, now);
        }
    }

    /// Handles every queued command; `false` once the worker must stop.
    fn commands(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(Cmd::Shutdown) | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    self.shutdown();
                    return false;
                }
                Ok(cmd) => self.command(cmd),
                Err(crossbeam_channel::TryRecvError::Empty) => return true,
            }
        }
    }

    fn command(&mut self, cmd: Cmd) {
        let now = Instant::now();
        match cmd {
            Cmd::Adopt(b) => {
                let (call, bound, ifaces) = *b;
                self.adopt(call, bound, ifaces, now);
            }
            Cmd::Accept(id, answer, reply) => {
                let r = self.accept(&id, answer, now);
                reply.send(r);
            }
            Cmd::Reject(id, reply) => {
                let r = self.with_call(&id, "rejecting", |rt| {
                    rt.call.reject(now).map(|()| rt.summary(now))
                });
                self.end_if_released(&id, now);
                reply.send(r.and_then(|r| r));
            }
            Cmd::Release(id, reason, reply) => {
                let r = self.with_call(&id, "releasing", |rt| {
                    rt.call.release(now, reason);
                    rt.summary(now)
                });
                self.end_if_released(&id, now);
                reply.send(r);
            }
            Cmd::Get(id, reply) => {
                let r = self.with_call(&id, "reading", |rt| rt.summary(now));
                reply.send(r);
            }
            Cmd::List(reply) => {
                let ids: Vec<Arc<str>> = self.by_id.keys().cloned().collect();
                let mut all = Vec::with_capacity(ids.len());
                let mut failed = None;
                for id in ids {
                    match self.with_call(&id, "listing", |rt| rt.summary(now)) {
                        Ok(s) => all.push(s),
                        Err(e @ SetupError::Internal(_)) => failed = Some(e),
                        Err(_) => {}
                    }
                }
                reply.send(failed.map_or(Ok(all), Err));
            }
            Cmd::Quality(reply) => {
                let mut h = super::rules::QualityHistograms::default();
                for s in self.slots.iter().flatten() {
                    for q in s.rt.quality(now) {
                        q.legs.iter().for_each(|l| h.observe(l));
                    }
                }
                for s in self.groups.iter().flatten() {
                    for q in s.rt.quality(now) {
                        q.streams.iter().for_each(|(_, l)| h.observe(l));
                    }
                }
                reply.send(h);
            }
            Cmd::AdoptGroup(adopt, reply) => {
                let r = self.adopt_group(*adopt, now);
                reply.send(r);
            }
            Cmd::JoinGroup(id, prep, reply) => {
                let r = self.join_group(&id, *prep, now);
                reply.send(r);
            }
            Cmd::LeaveGroup(id, user, reply) => {
                let plane = self.plane.clone();
                let r = self.with_group(&id, "removing a member of", |rt| {
                    rt.leave(now, &user).map(|ports| plane.free_ports(&ports))
                });
                self.group_step_id(&id, now);
                reply.send(r.and_then(|r| r));
            }
            Cmd::GetGroup(id, reply) => {
                let r = self.with_group(&id, "reading", |rt| rt.summary(now));
                reply.send(r);
            }
            Cmd::ListGroups(reply) => {
                let ids: Vec<Arc<str>> = self.group_by_id.keys().cloned().collect();
                let mut all = Vec::with_capacity(ids.len());
                let mut failed = None;
                for id in ids {
                    match self.with_group(&id, "listing", |rt| rt.summary(now)) {
                        Ok(s) => all.push(s),
                        Err(e @ SetupError::Internal(_)) => failed = Some(e),
                        Err(_) => {}
                    }
                }
                reply.send(failed.map_or(Ok(all), Err));
            }
            Cmd::ReleaseGroup(id, reason, reply) => {
                let r = self
                    .with_group(&id, "releasing", |rt| rt.release(reason))
                    .and_then(|()| {
                        self.group_step_id(&id, now).ok_or_else(|| {
                            panicked(&id, "releasing") // released, no summary: it failed
                        })
                    });
                reply.send(r);
            }
            Cmd::HaSink(tx) => self.ha = Some(restore::HaSink::new(tx, now)),
            Cmd::Snapshot(reply) => {
                let all = self.slots.iter().flatten();
                reply.send(all.map(|s| s.rt.image(now)).collect());
            }
            Cmd::Restore(r, reply) => {
                reply.send(self.restore(*r, now));
            }
            Cmd::Abandon(reply) => {
                reply.send(self.abandon());
            }
            Cmd::SnapshotGroups(reply) => {
                let all = self.groups.iter().flatten();
                let _ = reply.send(all.map(|s| s.rt.image(now)).collect());
            }
            Cmd::RestoreGroup(r, reply) => {
                let _ = reply.send(self.restore_group(*r, now));
            }
            Cmd::Shutdown => {}
        }
    }

    /// Runs `f` on the call `id`, ending the call if `f` panics: [`SetupError::UnknownCall`]
    /// when the call does not live here, [`SetupError::Internal`] (naming what was being
    /// `doing`) after a panic.
    fn with_call<T>(
        &mut self,
        id: &str,
        doing: &str,
        f: impl FnOnce(&mut CallRt) -> T,
    ) -> Result<T, SetupError> {
        #[cfg(test)]
        hooks::stall_hook(id);
        let unknown = || SetupError::UnknownCall(id.to_owned());
        let slot = *self.by_id.get(id).ok_or_else(unknown)?;
        let rt = &mut self
            .slots
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
            .ok_or_else(unknown)?
            .rt;
        match catch_unwind(AssertUnwindSafe(|| {
            #[cfg(test)]
            hooks::panic_hook(id, doing);
            f(rt)
        })) {
            Ok(v) => Ok(v),
            Err(_) => {
                self.fail(slot, Instant::now());
                Err(panicked(id, doing))
            }
        }
    }

    fn adopt(
        &mut self,
        call: Call,
        bound: HashMap<u16, BoundPort>,
        ifaces: [usize; 2],
        now: Instant,
    ) {
        let id: Arc<str> = call.id().into();
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            (self.slots.len() - 1) as u32
        });
        self.next_gen = self.next_gen.wrapping_add(1);
        let rt = CallRt::new(
            call,
            bound,
            ifaces,
            self.plane.config.latch_after_packets,
            self.stats.clone(),
        );
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = Some(Entry {
                gen: self.next_gen,
                rt,
            });
        }
        self.by_id.insert(id, slot);
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.step(slot, now); // publishes call.progress, arms the offer timeout
    }

    fn accept(
        &mut self,
        id: &str,
        answer: AnswerCall,
        now: Instant,
    ) -> Result<CallAnswer, SetupError> {
        let mut entropy = std::mem::take(&mut self.entropy);
        let r = self.with_call(id, "answering", |rt| {
            rt.call.accept(now, answer, &mut entropy)
        });
        self.entropy = entropy;
        let answer = r??;
        let Some(&slot) = self.by_id.get(id) else {
            return Ok(answer);
        };
        if let Err(e) = self.start_media(slot) {
            warn!(call = %id, error = %e, "cannot start the call's media");
            let _ = self.with_call(id, "starting the media of", |rt| {
                rt.call.release(now, ReleaseReason::InternalError)
            });
        }
        self.step(slot, now); // Granted, the Notification, call.established
        Ok(answer)
    }

    fn start_media(&mut self, slot: u32) -> std::io::Result<()> {
        let Some(Some(s)) = self.slots.get_mut(slot as usize) else {
            return Ok(());
        };
        let gen = s.gen;
        s.rt.start_media()?;
        for (i, sock) in s.rt.sockets() {
            self.poller.add(sock, token(slot, gen, i))?;
        }
        Ok(())
    }

    /// A socket is readable.
    fn readable(&mut self, t: u64, now: Instant) {
        let (slot, gen, socket) = untoken(t);
        if slot & GROUP_TAG != 0 {
            return self.group_readable(slot & !GROUP_TAG, gen, socket, now);
        }
        let Some(Some(s)) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if s.gen & 0xffff != gen {
            return;
        }
        let (rt, scratch) = (&mut s.rt, &mut self.scratch);
        match catch_unwind(AssertUnwindSafe(|| rt.on_readable(socket, now, scratch))) {
            Ok(w) if w.step => self.to_step.push(slot),
            Ok(_) => {}
            Err(_) => self.fail(slot, now),
        }
    }

    /// Runs the timers that are due.
    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((at, slot, gen))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if slot & GROUP_TAG != 0 {
                let g = slot & !GROUP_TAG;
                let live = matches!(self.groups.get(g as usize), Some(Some(s)) if s.gen == gen && s.rt.armed == Some(at));
                if live {
                    if let Some(Some(s)) = self.groups.get_mut(g as usize) {
                        s.rt.armed = None;
                    }
                    self.group_step(g, now);
                }
                continue;
            }
            let live = matches!(self.slots.get(slot as usize), Some(Some(s)) if s.gen == gen && s.rt.armed == Some(at));
            if live {
                if let Some(Some(s)) = self.slots.get_mut(slot as usize) {
                    s.rt.armed = None;
                }
                self.step(slot, now);
            }
        }
    }

    fn step_pending(&mut self, now: Instant) {
        while let Some(slot) = self.to_step.pop() {
            if slot & GROUP_TAG != 0 {
                self.group_step(slot & !GROUP_TAG, now);
            } else {
                self.step(slot, now);
            }
        }
    }

    /// Runs one call: feeds it, sends what it polls out, publishes its events, re-arms its
    /// timer, and ends it once released.
    fn step(&mut self, slot: u32, now: Instant) {
        let Some(Some(s)) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let gen = s.gen;
        let (rt, tx, plane) = (&mut s.rt, &mut self.tx, &self.plane);
        let r = catch_unwind(AssertUnwindSafe(|| {
            rt.step(now, tx);
            while let Some(ev) = rt.call.poll_event() {
                plane.publish(ev);
            }
            rt.call.poll_timeout()
        }));
        let next = match r {
            Ok(next) => next,
            Err(_) => return self.fail(slot, now),
        };
        let after = *rt.call.tc_stats();
        let before = &rt.tc_published;
        // Most steps (media activity, a receive-only party that keeps sending) move no
        // transmission control counter: take the worker's stats lock only when one moved since
        // the last time (messages are counted as they arrive, on the socket path, before the
        // step they ask for).
        if after.received != before.0 || after.sent != before.1 {
            let mut tc = lock(&self.stats.tc);
            tc.0.add_all(&after.received.since(&before.0));
            tc.1.add_all(&after.sent.since(&before.1));
            rt.tc_published = (after.received, after.sent);
        }
        if rt.released() {
            return self.end(slot);
        }
        if let Some(ha) = self.ha.as_mut() {
            ha.after_step(rt, now);
        }
        if next != rt.armed {
            rt.armed = next;
            if let Some(at) = next {
                self.timers.push(Reverse((at, slot, gen)));
            }
        }
    }

    fn end_if_released(&mut self, id: &str, now: Instant) {
        if let Some(&slot) = self.by_id.get(id) {
            self.step(slot, now);
        }
    }

    /// Removes a released call: its sockets close, its counters go to the worker's totals,
    /// its ports and IDs go back.
    fn end(&mut self, slot: u32) {
        let Some(s) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        let Entry { rt, .. } = s;
        self.by_id.remove(rt.call.id());
        if let Some(ha) = self.ha.as_mut() {
            ha.ended(rt.call.call_id());
        }
        self.stats.calls.fetch_sub(1, Ordering::Relaxed);
        let ports = rt.ports.clone();
        let call = catch_unwind(AssertUnwindSafe(move || {
            let CallRt { call, .. } = rt; // drops the sockets
            call
        }));
        match call {
            Ok(call) => self.plane.finished(&call, &ports),
            Err(_) => error!(worker = self.index, "a call's teardown panicked"),
        }
    }

    /// A panic while handling the call in `slot`: release it with `internal_error` and go on
    /// with the others.
    fn fail(&mut self, slot: u32, now: Instant) {
        let Some(Some(s)) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let id: Arc<str> = s.rt.call.id().into();
        error!(worker = self.index, call = %id, "a bug while handling this call: releasing it");
        let plane = &self.plane;
        let rt = &mut s.rt;
        let clean = catch_unwind(AssertUnwindSafe(|| {
            rt.call.release(now, ReleaseReason::InternalError);
            while let Some(ev) = rt.call.poll_event() {
                plane.publish(ev);
            }
        }));
        if clean.is_err() {
            plane.released_without_call(&id, ReleaseReason::InternalError);
        }
        self.end(slot);
    }

    /// Runs `f` on the group call `id`, ending the call if `f` panics (errors as
    /// [`Self::with_call`]).
    fn with_group<T>(
        &mut self,
        id: &str,
        doing: &str,
        f: impl FnOnce(&mut GroupRt) -> T,
    ) -> Result<T, SetupError> {
        #[cfg(test)]
        hooks::stall_hook(id);
        let unknown = || SetupError::UnknownCall(id.to_owned());
        let slot = *self.group_by_id.get(id).ok_or_else(unknown)?;
        let rt = &mut self
            .groups
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
            .ok_or_else(unknown)?
            .rt;
        match catch_unwind(AssertUnwindSafe(|| {
            #[cfg(test)]
            hooks::panic_hook(id, doing);
            f(rt)
        })) {
            Ok(v) => Ok(v),
            Err(_) => {
                self.group_fail(slot, Instant::now());
                Err(panicked(id, doing))
            }
        }
    }

    fn adopt_group(
        &mut self,
        adopt: GroupAdopt,
        now: Instant,
    ) -> Result<Vec<crate::control::arbiter::Slot>, SetupError> {
        let id: Arc<str> = adopt.call_id.as_str().into();
        let ports: Vec<(usize, u16)> = adopt.members.iter().flat_map(|m| m.ports.clone()).collect();
        let (rt, members) = match catch_unwind(AssertUnwindSafe(|| {
            #[cfg(test)]
            hooks::panic_hook(&id, "setting up");
            GroupRt::new(
                adopt,
                now,
                self.plane.config.latch_after_packets,
                self.plane.ssrcs.clone(),
                self.stats.clone(),
            )
        })) {
            Ok(Ok(r)) => r,
            Ok(Err((e, ports))) => {
                self.plane.free_ports(&ports);
                return Err(e);
            }
            Err(_) => {
                error!(worker = self.index, call = %id, "a bug while setting up this group call");
                // The members' sockets closed as the panic unwound: their ports go back.
                self.plane.free_ports(&ports);
                return Err(SetupError::Internal(format!(
                    "a bug while setting up group call {id}: it was not set up"
                )));
            }
        };
        let slot = self.group_free.pop().unwrap_or_else(|| {
            self.groups.push(None);
            (self.groups.len() - 1) as u32
        });
        self.next_gen = self.next_gen.wrapping_add(1);
        if let Some(s) = self.groups.get_mut(slot as usize) {
            *s = Some(GroupEntry {
                gen: self.next_gen,
                rt,
            });
        }
        self.group_by_id.insert(id, slot);
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        for m in &members {
            if let Err(e) = self.register_member(slot, *m) {
                warn!(worker = self.index, error = %e, "cannot poll a group member's sockets");
            }
        }
        self.group_step(slot, now); // participant.joined, Transmission Idle to all, T1
        Ok(members)
    }

    fn register_member(
        &mut self,
        slot: u32,
        member: crate::control::arbiter::Slot,
    ) -> std::io::Result<()> {
        let Some(Some(s)) = self.groups.get(slot as usize) else {
            return Ok(());
        };
        for (i, sock) in s.rt.member_sockets(member) {
            self.poller.add(sock, token(slot | GROUP_TAG, s.gen, i))?;
        }
        Ok(())
    }

    fn join_group(
        &mut self,
        id: &str,
        prep: super::plane::MemberPrep,
        now: Instant,
    ) -> Result<crate::control::arbiter::Slot, SetupError> {
        let Some(&slot) = self.group_by_id.get(id) else {
            let ports = prep.ports.clone();
            drop(prep);
            self.plane.free_ports(&ports);
            return Err(SetupError::UnknownCall(id.to_owned()));
        };
        let r = self.with_group(id, "adding a member to", |rt| rt.join(now, prep));
        let member = match r {
            Ok(Ok(m)) => m,
            Ok(Err((e, ports))) => {
                self.plane.free_ports(&ports);
                return Err(e);
            }
            Err(e) => return Err(e), // a panic: the call is released, its ports went back
        };
        if let Err(e) = self.register_member(slot, member) {
            warn!(worker = self.index, error = %e, "cannot poll a group member's sockets");
        }
        self.group_step(slot, now);
        Ok(member)
    }

    fn group_readable(&mut self, slot: u32, gen: u32, socket: usize, now: Instant) {
        let Some(Some(s)) = self.groups.get_mut(slot as usize) else {
            return;
        };
        if s.gen & 0xffff != gen {
            return;
        }
        let (rt, scratch) = (&mut s.rt, &mut self.scratch);
        match catch_unwind(AssertUnwindSafe(|| rt.on_readable(socket, now, scratch))) {
            Ok(true) => self.to_step.push(slot | GROUP_TAG),
            Ok(false) => {}
            Err(_) => self.group_fail(slot, now),
        }
    }

    fn group_step_id(&mut self, id: &str, now: Instant) -> Option<GroupCallSummary> {
        let slot = *self.group_by_id.get(id)?;
        self.group_step(slot, now)
    }

    /// Runs one group call: feeds it, sends what it polls out, publishes its events, re-arms
    /// its timer, and ends it once released. Returns its last summary when it ended.
    fn group_step(&mut self, slot: u32, now: Instant) -> Option<GroupCallSummary> {
        let s = self.groups.get_mut(slot as usize)?.as_mut()?;
        let gen = s.gen;
        let (rt, tx, plane) = (&mut s.rt, &mut self.tx, &self.plane);
        let r = catch_unwind(AssertUnwindSafe(|| {
            rt.step(now, tx, &mut |ev| plane.publish(ev))
        }));
        let next = match r {
            Ok(next) => next,
            Err(_) => {
                self.group_fail(slot, now);
                return None;
            }
        };
        // Against what was last added: messages are counted as they arrive, on the socket
        // path, before the step they ask for.
        let after = rt.tc_counters();
        let before = &rt.tc_published;
        if after.0 != before.0 || after.1 != before.1 {
            let mut tc = lock(&self.stats.tc);
            tc.0.add_all(&after.0.since(&before.0));
            tc.1.add_all(&after.1.since(&before.1));
            rt.tc_published = after;
        }
        if rt.released() {
            let summary = rt.summary(now);
            self.group_end(slot);
            return Some(summary);
        }
        if let Some(ha) = self.ha.as_mut() {
            ha.after_group_step(rt, now);
        }
        if next != rt.armed {
            rt.armed = next;
            if let Some(at) = next {
                self.timers.push(Reverse((at, slot | GROUP_TAG, gen)));
            }
        }
        None
    }

    /// Removes a released group call: its sockets close, its ports, ID and SSRC go back.
    fn group_end(&mut self, slot: u32) {
        let Some(s) = self.groups.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        self.group_free.push(slot);
        let id: Arc<str> = s.rt.call_id.as_str().into();
        self.group_by_id.remove(&id);
        if let Some(ha) = self.ha.as_mut() {
            ha.ended(&s.rt.call_id);
        }
        self.stats.calls.fetch_sub(1, Ordering::Relaxed);
        let ports = s.rt.all_ports();
        let (ssrc, registry) = (s.rt.server_ssrc(), s.rt.ssrc_registry().clone());
        let dropped = catch_unwind(AssertUnwindSafe(move || drop(s)));
        if dropped.is_err() {
            error!(worker = self.index, "a group call's teardown panicked");
        }
        registry.free(ssrc);
        self.plane.group_finished(&id, &ports);
    }

    /// A panic while handling the group call in `slot`: release it with `internal_error`.
    fn group_fail(&mut self, slot: u32, now: Instant) {
        let Some(Some(s)) = self.groups.get_mut(slot as usize) else {
            return;
        };
        let id: Arc<str> = s.rt.call_id.as_str().into();
        error!(worker = self.index, call = %id, "a bug while handling this group call: releasing it");
        let plane = &self.plane;
        let rt = &mut s.rt;
        let tx = &mut self.tx;
        let clean = catch_unwind(AssertUnwindSafe(|| {
            rt.release(ReleaseReason::InternalError);
            rt.step(now, tx, &mut |ev| plane.publish(ev));
        }));
        if clean.is_err() {
            plane.released_without_call(&id, ReleaseReason::InternalError);
        }
        self.group_end(slot);
    }

    fn shutdown(&mut self) {
        let now = Instant::now();
        let ids: Vec<Arc<str>> = self.by_id.keys().cloned().collect();
        for id in ids {
            let _ = self.with_call(&id, "shutting down", |rt| {
                rt.call.release(now, ReleaseReason::Shutdown)
            });
            self.end_if_released(&id, now);
        }
        let ids: Vec<Arc<str>> = self.group_by_id.keys().cloned().collect();
        for id in ids {
            let _ = self.with_group(&id, "shutting down", |rt| {
                rt.release(ReleaseReason::Shutdown)
            });
            self.group_step_id(&id, now);
        }
    }

    /// Tracks the share of time spent working (published once a second).
    fn account(&mut self, before: Instant, now: Instant) {
        self.busy.worked += Instant::now().saturating_duration_since(now);
        let _ = before;
        let span = now.saturating_duration_since(self.busy.since);
        if span >= Duration::from_secs(1) {
            let permille = (self.busy.worked.as_secs_f64() / span.as_secs_f64() * 1000.0) as u32;
            self.stats
                .busy_permille
                .store(permille.min(1000), Ordering::Relaxed);
            self.busy = Busy {
                since: now,
                worked: Duration::ZERO,
            };
        }
    }
}

#[cfg(test)]
mod tests;
