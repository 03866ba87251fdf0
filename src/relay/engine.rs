//! [`Engine`]: the relay's public API over the control plane and the workers.

use super::io::Waker;
use super::plane::{lock, Directory, Plane, Totals, WorkerHandle, WorkerStats};
use super::plane::{GroupEntry, GROUP_KIND};
use super::ports::PortPool;
use super::worker::GroupAdopt;
use super::worker::{Cmd, OsEntropy, Worker};
use super::{CallSummary, EngineConfig, EngineStats};
use super::{
    CreateGroupCall, GroupCallCreated, GroupCallSummary, GroupMemberAnswer, GroupMemberSpec,
};
use crate::control::arbiter::MAX_MEMBERS;
use crate::control::call::{
    AnswerCall, CallAnswer, CallEvent, CallOffer, CallTable, CreateCall, SetupError,
};
use crate::control::call::{Entropy, PortAllocator};
use crate::control::policy::AuthorizationPolicy;
use crate::control::registry::{RegistryError, UeEntry};
use crate::control::ssrc::SsrcRegistry;
use crate::control::ReleaseReason;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tracing::info;

/// How long the API waits for a worker's reply before it gives up on the call.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The relay engine. Cheap to share behind an `Arc`; dropping it shuts it down.
pub struct Engine {
    pub(super) plane: Arc<Plane>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Calls taken over from another relay (high availability).
    pub(super) adopted: std::sync::atomic::AtomicU64,
}

impl core::fmt::Debug for Engine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("workers", &self.plane.workers.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts the worker threads. Media sockets are bound per call, from the configured range.
    pub fn start(config: EngineConfig) -> io::Result<Engine> {
        let interfaces = config.media_interfaces();
        for i in &interfaces {
            if i.port_min > i.port_max || i.port_max - i.port_min < 3 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "media interface {}: the port range must hold at least two port pairs",
                        i.name
                    ),
                ));
            }
        }
        let n = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let (events, _) = broadcast::channel(config.event_capacity.max(16));
        let mut receivers = Vec::with_capacity(n);
        let mut workers = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = crossbeam_channel::unbounded();
            receivers.push(rx);
            workers.push(WorkerHandle {
                tx,
                waker: Arc::new(Waker::new()?),
                stats: Arc::new(WorkerStats::default()),
            });
        }
        let plane = Arc::new(Plane {
            directory: Mutex::new(Directory {
                table: CallTable::new(
                    config.call.clone(),
                    config.policy.clone(),
                    Box::new(OsEntropy(ring::rand::SystemRandom::new())),
                ),
                placement: HashMap::new(),
                groups: HashMap::new(),
            }),
            pools: interfaces
                .iter()
                .map(|i| {
                    let pool =
                        PortPool::new(i.ip, i.port_min, i.port_max, config.socket_buffer_bytes);
                    Mutex::new(pool.advertise(i.advertised.unwrap_or(i.ip)))
                })
                .collect(),
            interfaces,
            events,
            totals: Mutex::new(Totals::default()),
            workers,
            draining: Default::default(),
            started: Instant::now(),
            ssrcs: Arc::new(SsrcRegistry::new({
                let mut seed = [0u8; 8];
                OsEntropy::default().fill(&mut seed);
                u64::from_le_bytes(seed)
            })),
            config,
        });
        let mut threads = Vec::with_capacity(n);
        for (i, rx) in receivers.into_iter().enumerate() {
            let Some(h) = plane.workers.get(i) else {
                continue;
            };
            let worker = Worker::new(i, plane.clone(), rx, h.waker.clone(), h.stats.clone())?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("mcv-worker-{i}"))
                    .spawn(move || worker.run())?,
            );
        }
        for i in &plane.interfaces {
            info!(interface = %i.name, ip = %i.ip, port_min = i.port_min, port_max = i.port_max, "media interface");
        }
        info!(workers = n, io = "epoll", "engine started");
        Ok(Engine {
            plane,
            threads: Mutex::new(threads),
            adopted: Default::default(),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.plane.config
    }

    /// A stream of every call's events, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CallEvent> {
        self.plane.events.subscribe()
    }

    /// Seed steps 1–4. See [`CallTable::create_call`]. The call's sockets are bound outside
    /// every lock the other calls use; the call then runs on one worker.
    pub fn create_call(&self, req: CreateCall) -> Result<CallOffer, SetupError> {
        let p = &self.plane;
        let refuse = |e: SetupError| {
            p.refused(e.code());
            Err(e)
        };
        if p.draining.load(Ordering::Relaxed) {
            return refuse(SetupError::Draining);
        }
        if let Err(e) = lock(&p.directory).table.precheck(&req) {
            return refuse(e);
        }
        let ifaces = match p.interfaces_for(
            &req.caller_sdp,
            req.caller_interface.as_deref(),
            req.callee_interface.as_deref(),
        ) {
            Ok(i) => i,
            Err(e) => return refuse(e),
        };
        let (Some(caller_pool), Some(callee_pool)) =
            (p.pools.get(ifaces[0]), p.pools.get(ifaces[1]))
        else {
            return refuse(SetupError::NoPortsAvailable);
        };
        let mut pre = p.prebind(&req.caller_sdp, ifaces);
        let worker = p.place();
        let created = {
            let mut alloc = pre.allocator([caller_pool, callee_pool]);
            let mut d = lock(&p.directory);
            // One namespace of call IDs with group calls (the table knows only its own).
            let taken = req
                .call_id
                .as_ref()
                .filter(|id| d.groups.contains_key(id.as_str()));
            let r = match taken {
                Some(id) => Err(SetupError::DuplicateCallId(id.to_string())),
                None => d.table.create_detached(Instant::now(), req, &mut alloc),
            };
            let r = match r {
                Ok((call, _)) if d.groups.contains_key(call.id()) => {
                    // A generated ID that a group call holds: give everything back.
                    let e = SetupError::DuplicateCallId(call.id().to_owned());
                    d.table.forget(&call);
                    for port in call.relay_ports() {
                        alloc.free(port);
                    }
                    Err(e)
                }
                r => r,
            };
            if let Ok((call, _)) = &r {
                d.placement.insert(call.id().into(), worker);
            }
            r.map(|(call, offer)| (call, offer, alloc.bound))
        };
        p.unbind(pre, ifaces);
        let (call, offer, bound) = match created {
            Ok(c) => c,
            Err(e) => return refuse(e),
        };
        lock(&p.totals).created += 1;
        p.kind_created(call.kind().as_str());
        info!(call = %offer.call_id, worker, "call offered");
        if let Some(w) = p.workers.get(worker) {
            w.send(Cmd::Adopt(Box::new((call, bound, ifaces))));
        }
        Ok(offer)
    }

    /// The media interfaces in force (see [`EngineConfig::interfaces`]), in their order.
    pub fn interfaces(&self) -> &[super::MediaInterface] {
        &self.plane.interfaces
    }

    /// The interfaces a call with this caller SDP and these interface names would get, as
    /// indices into [`Self::interfaces`] (caller's, callee's); the error `create_call` would
    /// give when a name is unknown or the caller's is of the other address family.
    pub fn interfaces_for(
        &self,
        caller_sdp: &str,
        caller: Option<&str>,
        callee: Option<&str>,
    ) -> Result<[usize; 2], SetupError> {
        self.plane.interfaces_for(caller_sdp, caller, callee)
    }

    /// The interface named `name`, if it can carry media of the address family `v4`
    /// (`Some(true)`: IPv4; `None`: any): its index, or why not.
    #[cfg(feature = "sidecar")]
    pub(crate) fn named_interface(
        &self,
        name: &str,
        v4: Option<bool>,
    ) -> Result<usize, super::plane::InterfaceProblem> {
        self.plane.named_interface(name, v4)
    }

    /// Asks the worker that runs `call_id` and waits for its reply.
    fn ask<T>(
        &self,
        call_id: &str,
        cmd: impl FnOnce(Arc<str>, crossbeam_channel::Sender<T>) -> Cmd,
    ) -> Option<T> {
        let w = *lock(&self.plane.directory).placement.get(call_id)?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        if !self.plane.workers.get(w)?.send(cmd(call_id.into(), tx)) {
            return None;
        }
        rx.recv_timeout(REPLY_TIMEOUT).ok()
    }

    /// Seed steps 6–11: the callee accepted; media and transmission control start.
    pub fn accept_call(&self, call_id: &str, answer: AnswerCall) -> Result<CallAnswer, SetupError> {
        self.ask(call_id, |id, r| Cmd::Accept(id, answer, r))
            .unwrap_or_else(|| Err(SetupError::UnknownCall(call_id.to_owned())))
    }

    /// The callee declined (while offered): the call is released with reason `rejected`.
    pub fn reject_call(&self, call_id: &str) -> Result<CallSummary, SetupError> {
        self.ask(call_id, Cmd::Reject)
            .unwrap_or_else(|| Err(SetupError::UnknownCall(call_id.to_owned())))
    }

    /// The controlling server releases the call (reason `released`). A group call is released
    /// with [`Self::release_group_call`] (here it is refused as in the wrong state).
    pub fn release_call(&self, call_id: &str) -> Result<CallSummary, SetupError> {
        if self.is_group_call(call_id) {
            return Err(SetupError::WrongState {
                call_id: call_id.to_owned(),
                state: crate::control::call::CallState::Established,
                operation:
                    "release it as a one-to-one call (it is a group call: use release_group_call)",
            });
        }
        self.ask(call_id, |id, r| {
            Cmd::Release(id, ReleaseReason::Released, r)
        })
        .unwrap_or_else(|| Err(SetupError::UnknownCall(call_id.to_owned())))
    }

    /// One call's state and counters.
    pub fn call(&self, call_id: &str) -> Option<CallSummary> {
        self.ask(call_id, Cmd::Get).flatten()
    }

    // ---- group calls ---------------------------------------------------------------------

    /// Sets up a group video call with its members (TS 23.281 §7.7.1.1): binds each member's
    /// relay ports, answers each member's SDP offer, and starts transmission control
    /// (Transmission Idle to every member, then T1). Members then ask to transmit on their
    /// control channels; the engine grants up to Cx of them, queues or pre-empts the rest,
    /// and fans each granted transmitter's media out to its receivers.
    ///
    /// The group's media streams come from the first member's offer: its first `m=video`
    /// (required) and, when audio is offered ([`crate::control::call::CallConfig::offer_audio`]),
    /// its first `m=audio`. Every member's answer keeps those streams and its MCVideo
    /// `m=application` control channel, and rejects (port 0) the rest. In `per_leg` mode each
    /// member's offered `a=crypto` key is the key it sends with, and the answer carries the
    /// relay's own key toward it; in `end_to_end` mode `a=crypto` lines pass through
    /// untouched (the group's media key is shared end to end).
    ///
    /// Errors: bad requests (no members, a duplicate member, an unusable SDP, naming the
    /// member and the line) and a duplicate call ID are refused before anything is kept;
    /// [`SetupError::NoPortsAvailable`] when the port range is exhausted.
    pub fn create_group_call(&self, req: CreateGroupCall) -> Result<GroupCallCreated, SetupError> {
        let p = &self.plane;
        let refuse = |e: SetupError| {
            p.refused(e.code());
            Err(e)
        };
        if p.draining.load(Ordering::Relaxed) {
            return refuse(SetupError::Draining);
        }
        if let Err(e) = check_group_request(&req) {
            return refuse(e);
        }
        let mut entropy = OsEntropy::default();
        let worker = p.place();
        // Reserve the call ID (one namespace with push and pull calls).
        let id: Arc<str> = {
            let mut d = lock(&p.directory);
            let id: Arc<str> = match &req.call_id {
                Some(id) => {
                    let id: &str = id;
                    if d.placement.contains_key(id) || d.table.get(id).is_some() {
                        drop(d);
                        return refuse(SetupError::DuplicateCallId(id.to_owned()));
                    }
                    id.into()
                }
                None => loop {
                    let mut b = [0u8; 8];
                    entropy.fill(&mut b);
                    let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
                    if !d.placement.contains_key(id.as_str()) && d.table.get(&id).is_none() {
                        break id.into();
                    }
                },
            };
            if d.table.detached_len() + d.groups.len() >= p.config.call.max_calls {
                drop(d);
                return refuse(SetupError::TooManyCalls);
            }
            d.placement.insert(id.clone(), worker);
            d.groups.insert(
                id.clone(),
                GroupEntry {
                    security: req.media_security,
                    streams: Vec::new(),
                    members: req.members.iter().map(|m| m.mcvideo_id.clone()).collect(),
                },
            );
            id
        };
        let unreserve = || {
            let mut d = lock(&p.directory);
            d.placement.remove(&*id);
            d.groups.remove(&*id);
        };
        let first = req
            .members
            .first()
            .map(|m| (m.mcvideo_id.clone(), m.sdp_offer.clone()));
        let streams = match first.map(|(m, sdp)| p.group_streams(&m, &sdp)) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                unreserve();
                return refuse(e);
            }
            None => {
                unreserve();
                return refuse(SetupError::BadRequest("a group call needs members".into()));
            }
        };
        let mut members = Vec::with_capacity(req.members.len());
        let mut ids = Vec::with_capacity(req.members.len());
        for spec in req.members {
            ids.push(spec.mcvideo_id.clone());
            match p.prepare_member(spec, &streams, req.media_security, &mut entropy) {
                Ok(m) => members.push(m),
                Err(e) => {
                    for m in members {
                        let ports = m.ports.clone();
                        drop(m);
                        p.free_ports(&ports);
                    }
                    unreserve();
                    return refuse(e);
                }
            }
        }
        if let Some(g) = lock(&p.directory).groups.get_mut(&*id) {
            g.streams = streams.clone();
        }
        let answers: Vec<String> = members.iter().map(|m| m.sdp_answer.clone()).collect();
        let g = &p.config.group;
        let config = crate::control::server::TcConfig {
            max_transmitters: req.max_transmitters.unwrap_or(g.max_transmitters),
            max_streams_per_receiver: req
                .max_streams_per_receiver
                .unwrap_or(g.max_streams_per_receiver),
            reception_mode: req.reception_mode.unwrap_or(g.reception_mode),
            ..g.clone()
        };
        let server_ssrc = p.ssrcs.allocate(None);
        let adopt = GroupAdopt {
            call_id: id.clone().into(),
            group_id: req.group_id,
            security: req.media_security,
            config,
            streams,
            server_ssrc,
            members,
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        let sent = p
            .workers
            .get(worker)
            .is_some_and(|w| w.send(Cmd::AdoptGroup(Box::new(adopt), tx)));
        let slots = match sent.then(|| rx.recv_timeout(REPLY_TIMEOUT).ok()).flatten() {
            Some(Ok(slots)) => slots,
            Some(Err(e)) => {
                p.ssrcs.free(server_ssrc);
                unreserve();
                return refuse(e);
            }
            None => {
                // The worker is gone or stuck: it keeps (or dropped) the call's resources.
                return refuse(SetupError::BadRequest(
                    "the relay's worker did not take the group call".into(),
                ));
            }
        };
        p.kind_created(GROUP_KIND);
        info!(call = %id, worker, members = slots.len(), "group call set up");
        Ok(GroupCallCreated {
            call_id: id.into(),
            members: ids
                .into_iter()
                .zip(slots)
                .zip(answers)
                .map(|((mcvideo_id, slot), sdp_answer)| GroupMemberAnswer {
                    mcvideo_id,
                    slot,
                    sdp_answer,
                })
                .collect(),
        })
    }

    /// A member joins a running group call (a late joiner): its ports are bound and its SDP
    /// offer answered as at creation; it is told the current state (a Media Transmission
    /// Notification per transmission, or Transmission Idle) and, in automatic reception,
    /// receives the running transmissions at once.
    pub fn add_group_member(
        &self,
        call_id: &str,
        spec: GroupMemberSpec,
    ) -> Result<GroupMemberAnswer, SetupError> {
        let p = &self.plane;
        let (worker, security, streams) = {
            let mut d = lock(&p.directory);
            let Some(&worker) = d.placement.get(call_id) else {
                return Err(SetupError::UnknownCall(call_id.to_owned()));
            };
            let Some(g) = d.groups.get_mut(call_id) else {
                return Err(SetupError::WrongState {
                    call_id: call_id.to_owned(),
                    state: crate::control::call::CallState::Established,
                    operation: "add a member (it is not a group call)",
                });
            };
            if g.streams.is_empty() {
                return Err(SetupError::UnknownCall(call_id.to_owned())); // still being set up
            }
            if g.members.len() >= MAX_MEMBERS {
                return Err(SetupError::BadRequest(format!(
                    "call {call_id} has its maximum of {MAX_MEMBERS} members"
                )));
            }
            if !g.members.insert(spec.mcvideo_id.clone()) {
                return Err(SetupError::BadRequest(format!(
                    "member {} is already in call {call_id}",
                    spec.mcvideo_id
                )));
            }
            (worker, g.security, g.streams.clone())
        };
        let user = spec.mcvideo_id.clone();
        let unreserve = || {
            if let Some(g) = lock(&p.directory).groups.get_mut(call_id) {
                g.members.remove(&user);
            }
        };
        let prep = match p.prepare_member(spec, &streams, security, &mut OsEntropy::default()) {
            Ok(m) => m,
            Err(e) => {
                unreserve();
                return Err(e);
            }
        };
        let answer = prep.sdp_answer.clone();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let sent = p
            .workers
            .get(worker)
            .is_some_and(|w| w.send(Cmd::JoinGroup(call_id.into(), Box::new(prep), tx)));
        match sent.then(|| rx.recv_timeout(REPLY_TIMEOUT).ok()).flatten() {
            Some(Ok(slot)) => Ok(GroupMemberAnswer {
                mcvideo_id: user,
                slot,
                sdp_answer: answer,
            }),
            Some(Err(e)) => {
                unreserve();
                Err(e)
            }
            None => {
                unreserve();
                Err(SetupError::UnknownCall(call_id.to_owned()))
            }
        }
    }

    /// A member leaves a group call: a transmission it held ends for the others (and the
    /// next queued request is granted), its sockets close and its ports go back.
    pub fn remove_group_member(&self, call_id: &str, mcvideo_id: &str) -> Result<(), SetupError> {
        if !lock(&self.plane.directory).groups.contains_key(call_id) {
            return Err(SetupError::UnknownCall(call_id.to_owned()));
        }
        let user = mcvideo_id.to_owned();
        let r = self
            .ask(call_id, |id, r| Cmd::LeaveGroup(id, user, r))
            .unwrap_or_else(|| Err(SetupError::UnknownCall(call_id.to_owned())));
        if r.is_ok() {
            if let Some(g) = lock(&self.plane.directory).groups.get_mut(call_id) {
                g.members.remove(mcvideo_id);
            }
        }
        r
    }

    /// One group call's members, transmissions (with their SSRCs), queue and counters.
    pub fn group_call(&self, call_id: &str) -> Option<GroupCallSummary> {
        if !lock(&self.plane.directory).groups.contains_key(call_id) {
            return None;
        }
        self.ask(call_id, Cmd::GetGroup).flatten()
    }

    /// Every group call.
    pub fn group_calls(&self) -> Vec<GroupCallSummary> {
        self.ask_all(Cmd::ListGroups)
            .into_iter()
            .flatten()
            .collect()
    }

    /// Whether `call_id` is a group call.
    pub fn is_group_call(&self, call_id: &str) -> bool {
        lock(&self.plane.directory).groups.contains_key(call_id)
    }

    /// Releases a group call (reason `released`): `call.released` is published, every port
    /// goes back. Returns its final summary.
    pub fn release_group_call(&self, call_id: &str) -> Result<GroupCallSummary, SetupError> {
        if !self.is_group_call(call_id) {
            return Err(SetupError::UnknownCall(call_id.to_owned()));
        }
        self.ask(call_id, |id, r| {
            Cmd::ReleaseGroup(id, ReleaseReason::Released, r)
        })
        .unwrap_or_else(|| Err(SetupError::UnknownCall(call_id.to_owned())))
    }

    /// Asks every worker at once and gathers the replies that come in time.
    pub(super) fn ask_all<T>(&self, cmd: impl Fn(crossbeam_channel::Sender<T>) -> Cmd) -> Vec<T> {
        let replies: Vec<_> = self
            .plane
            .workers
            .iter()
            .filter_map(|w| {
                let (tx, rx) = crossbeam_channel::bounded(1);
                w.send(cmd(tx)).then_some(rx)
            })
            .collect();
        replies
            .into_iter()
            .filter_map(|rx| rx.recv_timeout(REPLY_TIMEOUT).ok())
            .collect()
    }

    /// Every call's state and counters.
    pub fn calls(&self) -> Vec<CallSummary> {
        self.ask_all(Cmd::List).into_iter().flatten().collect()
    }

    /// Jitter and loss of the media arriving from every leg that sent RTP, across all calls,
    /// as histograms (for a scrape; each worker sums its own calls).
    pub fn quality(&self) -> crate::relay::rules::QualityHistograms {
        let mut all = crate::relay::rules::QualityHistograms::default();
        for h in self.ask_all(Cmd::Quality) {
            all.merge(&h);
        }
        all
    }

    /// Registers (or updates) a UE of a user. Returns whether it is new.
    pub fn register_ue(&self, user: &str, ue: UeEntry) -> Result<bool, RegistryError> {
        lock(&self.plane.directory)
            .table
            .registry_mut()
            .register(user, ue)
    }

    /// Removes a UE. Returns whether it was registered.
    pub fn unregister_ue(&self, user: &str, ue_id: &str) -> bool {
        lock(&self.plane.directory)
            .table
            .registry_mut()
            .unregister(user, ue_id)
    }

    /// The UEs of a user.
    pub fn ues(&self, user: &str) -> Vec<UeEntry> {
        lock(&self.plane.directory)
            .table
            .registry()
            .ues(user)
            .to_vec()
    }

    /// Replaces the authorization policy for calls created from now on.
    pub fn set_policy(&self, policy: Arc<dyn AuthorizationPolicy>) {
        lock(&self.plane.directory).table.set_policy(policy);
    }

    /// Drain mode: refuse new calls, let existing ones run to completion.
    pub fn set_draining(&self, draining: bool) {
        self.plane.draining.store(draining, Ordering::Relaxed);
    }

    /// Engine-wide counters: the workers' totals summed, without asking the workers.
    pub fn stats(&self) -> EngineStats {
        let p = &self.plane;
        let active_calls = lock(&p.directory).table.detached_len();
        let (ports_in_use, ports_capacity) = p.pools.iter().fold((0, 0), |(u, c), pool| {
            let pool = lock(pool);
            (u + pool.in_use(), c + pool.capacity())
        });
        let mut s = {
            let t = lock(&p.totals);
            EngineStats {
                active_calls,
                calls_created: t.created,
                calls_refused: t.refused.clone(),
                calls_released: t.released.clone(),
                ports_in_use,
                ports_capacity,
                draining: p.draining.load(Ordering::Relaxed),
                by_kind: t.by_kind.clone(),
                ..EngineStats::default()
            }
        };
        for w in &p.workers {
            s.caller.add(&w.stats.legs[0].snapshot());
            s.callee.add(&w.stats.legs[1].snapshot());
            s.group_members.add(&w.stats.group.snapshot());
            let tc = lock(&w.stats.tc);
            s.tc_received.add_all(&tc.0);
            s.tc_sent.add_all(&tc.1);
        }
        s
    }

    /// Time since the engine started.
    pub fn uptime(&self) -> Duration {
        self.plane.started.elapsed()
    }

    /// Releases every call (reason `shutdown`, each with its events), stops the workers and
    /// waits for them. Idempotent.
    pub fn shutdown(&self) {
        for w in &self.plane.workers {
            w.send(Cmd::Shutdown);
        }
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The checks of a group call request that need nothing bound.
fn check_group_request(req: &CreateGroupCall) -> Result<(), SetupError> {
    use crate::control::registry::MAX_ID_LEN;
    let bad = |m: String| Err(SetupError::BadRequest(m));
    if let Some(id) = &req.call_id {
        if !crate::ids::CallId::is_valid(id) {
            return bad(format!(
                "call_id must be 1 to {} characters of A-Z a-z 0-9 - _ .",
                crate::ids::CallId::MAX_LEN
            ));
        }
    }
    if req.group_id.is_empty()
        || req.group_id.len() > MAX_ID_LEN
        || req.group_id.chars().any(char::is_control)
    {
        return bad(format!(
            "group_id must be 1 to {MAX_ID_LEN} octets with no control characters"
        ));
    }
    if req.members.is_empty() {
        return bad("a group call needs at least one member".into());
    }
    if req.members.len() > MAX_MEMBERS {
        return bad(format!("a group call holds at most {MAX_MEMBERS} members"));
    }
    if req.max_transmitters == Some(0) {
        return bad("max_transmitters (Cx) must be at least 1".into());
    }
    if req.max_streams_per_receiver == Some(0) {
        return bad("max_streams_per_receiver (C9) must be at least 1".into());
    }
    let mut seen = std::collections::HashSet::new();
    for m in &req.members {
        if !seen.insert(m.mcvideo_id.as_str()) {
            return bad(format!("member {} appears twice", m.mcvideo_id));
        }
    }
    Ok(())
}
