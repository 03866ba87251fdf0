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
#[cfg(feature = "kernel-offload")]
mod offload;
#[cfg(not(feature = "kernel-offload"))]
mod offload {
    //! Without the `kernel-offload` feature a call never has legs in the kernel.
    use super::call::CallRt;
    use std::time::Instant;

    /// A call's entries in the fast path: none in this build.
    #[derive(Debug, Default)]
    pub(crate) struct Offloaded;

    impl Offloaded {
        pub(super) fn wake_at(&self, _now: Instant) -> Option<Instant> {
            None
        }
    }

    impl CallRt {
        pub(super) fn sync_offload(&mut self, _now: Instant) {}
        pub(crate) fn poll_offload(&mut self, _now: Instant) {}
        pub(crate) fn drop_offload(&mut self, _now: Instant) {}
    }
}
mod private;
mod restore;
mod txlog;

pub(crate) use group::{GroupAdopt, GroupRestore};

use super::io::{Events, Poller, Waker};
use super::plane::{lock, Plane, WorkerStats};
use super::ports::BoundPort;
use super::{CallSummary, GroupCallSummary};
use crate::control::call::{AnswerCall, Call, CallAnswer, Entropy, SetupError};
use crate::control::ReleaseReason;
use call::{CallRt, Summary};
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
    /// Record the call's media from now on: whether it is (or was already) recorded.
    Record(Arc<str>, Reply<Result<bool, SetupError>>),
    /// Copy a stream of the call to a watcher from now on: the stream.
    Watch(
        Arc<str>,
        Box<super::watch::WatchSink>,
        Reply<Result<super::WatchedStream, SetupError>>,
    ),
    /// A watcher asks for a keyframe: ask the call's transmitters (their policy permitting).
    Keyframe(Arc<str>, Reply<Result<(), SetupError>>),
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
            Cmd::Record(..) => "Record",
            Cmd::Watch(..) => "Watch",
            Cmd::Keyframe(..) => "Keyframe",
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

/// A slab entry: the call and the generation its tokens and timers carry.
struct Entry {
    gen: u32,
    rt: CallRt,
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
    /// Every call on this worker, one-to-one and group alike.
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    next_gen: u32,
    by_id: HashMap<Arc<str>, u32>,
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
                reply.send(self.reject(&id, now));
            }
            Cmd::Release(id, reason, reply) => {
                reply.send(self.release(&id, reason, now));
            }
            Cmd::Get(id, reply) => {
                reply.send(self.summary(&id, now, Summary::private));
            }
            Cmd::List(reply) => {
                reply.send(self.list(now, Summary::private));
            }
            Cmd::Quality(reply) => {
                let mut h = super::rules::QualityHistograms::default();
                self.slots.iter_mut().flatten().for_each(|s| {
                    s.rt.poll_offload(now); // what the kernel forwarded since the last step
                    s.rt.quality(now, &mut h)
                });
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
                reply.send(self.leave_group(&id, &user, now));
            }
            Cmd::GetGroup(id, reply) => {
                reply.send(self.summary(&id, now, Summary::group));
            }
            Cmd::ListGroups(reply) => {
                reply.send(self.list(now, Summary::group));
            }
            Cmd::ReleaseGroup(id, reason, reply) => {
                reply.send(self.release_group(&id, reason, now));
            }
            Cmd::Record(id, reply) => {
                reply.send(self.record(&id));
            }
            Cmd::Watch(id, sink, reply) => {
                let r = self.with_call(&id, "watching", |rt| rt.watch(*sink, now));
                reply.send(r.and_then(|r| {
                    r.map_err(|why| SetupError::NotWatchable {
                        call_id: id.to_string(),
                        reason: why.into(),
                    })
                }));
            }
            Cmd::Keyframe(id, reply) => {
                reply.send(
                    self.with_call(&id, "asking for a keyframe", |rt| rt.request_keyframes(now)),
                );
            }
            Cmd::HaSink(tx) => self.ha = Some(restore::HaSink::new(tx, now)),
            Cmd::Snapshot(reply) => {
                reply.send(self.each(|rt| rt.private_image_now(now)));
            }
            Cmd::Restore(r, reply) => {
                reply.send(self.restore(*r, now));
            }
            Cmd::Abandon(reply) => {
                reply.send(self.abandon());
            }
            Cmd::SnapshotGroups(reply) => {
                reply.send(self.each(|rt| rt.group_image_now(now)));
            }
            Cmd::RestoreGroup(r, reply) => {
                reply.send(self.restore_group(*r, now));
            }
            Cmd::Shutdown => {}
        }
    }

    /// The callee of one-to-one call `id` declined: the call is released (`rejected`).
    fn reject(&mut self, id: &str, now: Instant) -> Result<CallSummary, SetupError> {
        let r = self.with_kind(id, "rejecting", CallRt::if_private, |rt| {
            let rejected = rt.call_mut().map(|c| c.reject(now));
            rejected
                .unwrap_or(Ok(()))
                .map(|()| rt.summary(now).private())
        });
        self.step_id(id, now);
        r??.ok_or_else(|| SetupError::UnknownCall(id.to_owned()))
    }

    /// Records call `id`'s media from now on (whatever its kind): whether it is recorded.
    fn record(&mut self, id: &str) -> Result<bool, SetupError> {
        let plane = self.plane.clone();
        let Some(recorder) = plane.recorder.as_ref() else {
            return Ok(false);
        };
        self.with_call(id, "recording", |rt| rt.record_media(recorder))
    }

    /// Releases one-to-one call `id` for `reason`.
    fn release(
        &mut self,
        id: &str,
        reason: ReleaseReason,
        now: Instant,
    ) -> Result<CallSummary, SetupError> {
        let r = self.with_kind(id, "releasing", CallRt::if_private, |rt| {
            rt.release(now, reason);
            rt.summary(now)
        });
        self.step_id(id, now);
        r.map(|s| s.private())?
            .ok_or_else(|| SetupError::UnknownCall(id.to_owned()))
    }

    /// Member `user` leaves group call `id`: its ports go back.
    fn leave_group(&mut self, id: &str, user: &str, now: Instant) -> Result<(), SetupError> {
        let plane = self.plane.clone();
        let r = self.with_kind(id, "removing a member of", CallRt::if_group, |rt| {
            rt.leave(now, user).map(|ports| plane.free_ports(&ports))
        });
        self.step_id(id, now);
        r?
    }

    /// Releases group call `id` for `reason`: its last summary.
    fn release_group(
        &mut self,
        id: &str,
        reason: ReleaseReason,
        now: Instant,
    ) -> Result<GroupCallSummary, SetupError> {
        self.with_kind(id, "releasing", CallRt::if_group, |rt| {
            rt.release(now, reason)
        })?;
        // Released with no summary: the release failed.
        let summary = self.step_id(id, now).and_then(Summary::group);
        summary.ok_or_else(|| panicked(id, "releasing"))
    }

    /// The summary of call `id`, if `pick` takes its kind: else it is an unknown call here.
    fn summary<T>(
        &mut self,
        id: &str,
        now: Instant,
        pick: fn(Summary) -> Option<T>,
    ) -> Result<T, SetupError> {
        let s = self.with_call(id, "reading", |rt| {
            rt.poll_offload(now);
            rt.summary(now)
        })?;
        pick(s).ok_or_else(|| SetupError::UnknownCall(id.to_owned()))
    }

    /// The summary of every call that `pick` takes (one kind); an internal error if reading
    /// one of them panicked.
    fn list<T>(
        &mut self,
        now: Instant,
        pick: impl Fn(Summary) -> Option<T>,
    ) -> Result<Vec<T>, SetupError> {
        let ids: Vec<Arc<str>> = self.by_id.keys().cloned().collect();
        let mut all = Vec::with_capacity(ids.len());
        let mut failed = None;
        for id in ids {
            match self.with_call(&id, "listing", |rt| {
                rt.poll_offload(now);
                rt.summary(now)
            }) {
                Ok(s) => all.extend(pick(s)),
                Err(e @ SetupError::Internal(_)) => failed = Some(e),
                Err(_) => {}
            }
        }
        failed.map_or(Ok(all), Err)
    }

    /// Runs `f` on the call `id`, ending the call if `f` panics: [`SetupError::UnknownCall`]
    /// when the call does not live here, [`SetupError::Internal`] (naming what was being
    /// `doing`) after a panic. The one place a command reaches a call.
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

    /// [`Self::with_call`] on a call of the kind `kind` picks out ([`CallRt::if_private`],
    /// [`CallRt::if_group`]): a call of another kind is an unknown call here.
    fn with_kind<K, T>(
        &mut self,
        id: &str,
        doing: &str,
        kind: fn(&mut CallRt) -> Option<&mut K>,
        f: impl FnOnce(&mut K) -> T,
    ) -> Result<T, SetupError> {
        self.with_call(id, doing, |rt| kind(rt).map(f))?
            .ok_or_else(|| SetupError::UnknownCall(id.to_owned()))
    }

    /// What `f` makes of each call here (that it takes).
    fn each<T>(&self, f: impl Fn(&CallRt) -> Option<T>) -> Vec<T> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|s| f(&s.rt))
            .collect()
    }

    /// Puts a call in the slab, under `id`. Returns its slot and generation.
    fn insert(&mut self, id: Arc<str>, mut rt: CallRt) -> (u32, u32) {
        // Every kind of call, new or adopted, on the process's kernel fast path if it runs.
        #[cfg(feature = "kernel-offload")]
        {
            rt.offload = offload::Offloaded::new(self.plane.offload.handle());
        }
        if let Some(r) = &self.plane.recorder {
            let (log, media) = (r.config().transmission_log, r.config().media_all);
            if log || media {
                rt.rec = r.open(&id, std::time::SystemTime::now(), log).map(Arc::new);
            }
            if let (true, Some(h)) = (log, &rt.rec) {
                rt.keep_log(h.clone());
            }
            if media && rt.rec.is_some() {
                // (A recording refused above is not asked for again: it was counted once.)
                rt.record_media(r);
            }
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            (self.slots.len() - 1) as u32
        });
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = Some(Entry { gen, rt });
        }
        self.by_id.insert(id, slot);
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        (slot, gen)
    }

    /// Polls the call's sockets (those of its members `only`, or all of them). `false` when
    /// one of them could not be polled (logged).
    fn poll(&mut self, slot: u32, only: Option<&[crate::control::arbiter::Slot]>) -> bool {
        let Some(Some(s)) = self.slots.get(slot as usize) else {
            return true;
        };
        let sockets = match only {
            Some(members) => members
                .iter()
                .flat_map(|&m| s.rt.member_sockets(m))
                .collect(),
            None => s.rt.sockets(),
        };
        let mut all = true;
        for (i, sock) in sockets {
            if let Err(e) = self.poller.add(sock, token(slot, s.gen, i)) {
                let id = s.rt.call_id();
                warn!(worker = self.index, call = %id, error = %e, "cannot poll a call's socket");
                all = false;
            }
        }
        all
    }

    fn adopt(
        &mut self,
        call: Call,
        bound: HashMap<u16, BoundPort>,
        ifaces: [usize; 2],
        now: Instant,
    ) {
        let id: Arc<str> = call.id().into();
        let rt = CallRt::private(
            call,
            bound,
            ifaces,
            self.plane.config.latch_after_packets,
            self.stats.clone(),
        );
        let (slot, _) = self.insert(id, rt);
        self.step(slot, now); // publishes call.progress, arms the offer timeout
    }

    fn accept(
        &mut self,
        id: &str,
        answer: AnswerCall,
        now: Instant,
    ) -> Result<CallAnswer, SetupError> {
        let mut entropy = std::mem::take(&mut self.entropy);
        let r = self.with_kind(id, "answering", CallRt::call_mut, |call| {
            call.accept(now, answer, &mut entropy)
        });
        self.entropy = entropy;
        let answer = r??;
        let Some(&slot) = self.by_id.get(id) else {
            return Ok(answer);
        };
        let started = self.with_kind(id, "starting the media of", CallRt::if_private, |rt| {
            let r = rt.start_media();
            if let Err(e) = &r {
                warn!(call = %rt.call_id(), error = %e, "cannot start the call's media");
                rt.release(now, ReleaseReason::InternalError);
            }
            r.is_ok()
        });
        if started == Ok(true) && !self.poll(slot, None) {
            let _ = self.with_kind(id, "starting the media of", CallRt::if_private, |rt| {
                rt.release(now, ReleaseReason::InternalError)
            });
        }
        self.step(slot, now); // Granted, the Notification, call.established
        Ok(answer)
    }

    /// A socket is readable.
    fn readable(&mut self, t: u64, now: Instant) {
        let (slot, gen, socket) = untoken(t);
        let Some(Some(s)) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if s.gen & 0xffff != gen {
            return;
        }
        let (rt, scratch) = (&mut s.rt, &mut self.scratch);
        match catch_unwind(AssertUnwindSafe(|| rt.on_readable(socket, now, scratch))) {
            Ok(true) => self.to_step.push(slot),
            Ok(false) => {}
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
            let live = match self.slots.get_mut(slot as usize) {
                Some(Some(s)) if s.gen == gen => {
                    let armed = s.rt.armed();
                    let live = *armed == Some(at);
                    if live {
                        *armed = None;
                    }
                    live
                }
                _ => false,
            };
            if live {
                self.step(slot, now);
            }
        }
    }

    fn step_pending(&mut self, now: Instant) {
        while let Some(slot) = self.to_step.pop() {
            self.step(slot, now);
        }
    }

    /// Steps the call `id`, if it lives here (see [`Self::step`]).
    fn step_id(&mut self, id: &str, now: Instant) -> Option<Summary> {
        let slot = *self.by_id.get(id)?;
        self.step(slot, now)
    }

    /// Runs one call: feeds it, sends what it polls out, publishes its events, re-arms its
    /// timer, and ends it once released. Returns its last summary when it ended.
    fn step(&mut self, slot: u32, now: Instant) -> Option<Summary> {
        let s = self.slots.get_mut(slot as usize)?.as_mut()?;
        let gen = s.gen;
        let (rt, tx, plane) = (&mut s.rt, &mut self.tx, &self.plane);
        let next = match catch_unwind(AssertUnwindSafe(|| rt.step(now, tx, plane))) {
            Ok(next) => next,
            Err(_) => {
                self.fail(slot, now);
                return None;
            }
        };
        // Most steps (media activity, a receive-only party that keeps sending) move no
        // transmission control counter: take the worker's stats lock only when one moved since
        // the last time (messages are counted as they arrive, on the socket path, before the
        // step they ask for).
        let after = rt.tc_counters();
        let before = rt.tc_published();
        if after.0 != before.0 || after.1 != before.1 {
            let mut tc = lock(&self.stats.tc);
            tc.0.add_all(&after.0.since(&before.0));
            tc.1.add_all(&after.1.since(&before.1));
            *before = after;
        }
        if rt.released() {
            let summary = rt.summary(now);
            self.end(slot);
            return Some(summary);
        }
        if let Some(ha) = self.ha.as_mut() {
            ha.after_step(rt, now);
        }
        let armed = rt.armed();
        if next != *armed {
            *armed = next;
            if let Some(at) = next {
                self.timers.push(Reverse((at, slot, gen)));
            }
        }
        None
    }

    /// Takes a call out of the slab: its slot and ID go back and it stops counting.
    fn remove(&mut self, slot: u32) -> Option<CallRt> {
        let Entry { rt, .. } = self.slots.get_mut(slot as usize).and_then(Option::take)?;
        self.free.push(slot);
        self.by_id.remove(rt.call_id().as_str());
        self.stats.calls.fetch_sub(1, Ordering::Relaxed);
        Some(rt)
    }

    /// Removes a released call: its sockets close, its counters go to the worker's totals,
    /// its ports and IDs go back.
    fn end(&mut self, slot: u32) {
        let Some(rt) = self.remove(slot) else {
            return;
        };
        if let Some(ha) = self.ha.as_mut() {
            ha.ended(rt.call_id());
        }
        if !rt.finish(&self.plane) {
            error!(worker = self.index, "a call's teardown panicked");
        }
    }

    /// A panic while handling the call in `slot`: release it with `internal_error` and go on
    /// with the others.
    fn fail(&mut self, slot: u32, now: Instant) {
        let Some(Some(s)) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let id: Arc<str> = s.rt.call_id().as_str().into();
        error!(worker = self.index, call = %id, "a bug while handling this call: releasing it");
        let (plane, rt, tx) = (&self.plane, &mut s.rt, &mut self.tx);
        if catch_unwind(AssertUnwindSafe(|| rt.fail(now, tx, plane))).is_err() {
            plane.released_without_call(&id, ReleaseReason::InternalError);
        }
        self.end(slot);
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
            CallRt::group(
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
        let (slot, _) = self.insert(id, rt);
        let _ = self.poll(slot, None);
        self.step(slot, now); // participant.joined, Transmission Idle to all, T1
        Ok(members)
    }

    fn join_group(
        &mut self,
        id: &str,
        prep: super::plane::MemberPrep,
        now: Instant,
    ) -> Result<crate::control::arbiter::Slot, SetupError> {
        let Some(&slot) = self.by_id.get(id) else {
            self.plane.give_back(prep);
            return Err(SetupError::UnknownCall(id.to_owned()));
        };
        let r = self.with_kind(id, "adding a member to", CallRt::if_group, |rt| {
            rt.join(now, prep)
        });
        let member = match r {
            Ok(Ok(m)) => m,
            Ok(Err((e, ports))) => {
                self.plane.free_ports(&ports);
                return Err(e);
            }
            Err(e) => return Err(e), // a panic: the call is released, its ports went back
        };
        let _ = self.poll(slot, Some(&[member]));
        self.step(slot, now);
        Ok(member)
    }

    fn shutdown(&mut self) {
        let now = Instant::now();
        let ids: Vec<Arc<str>> = self.by_id.keys().cloned().collect();
        for id in ids {
            let _ = self.with_call(&id, "shutting down", |rt| {
                rt.release(now, ReleaseReason::Shutdown)
            });
            self.step_id(&id, now);
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
