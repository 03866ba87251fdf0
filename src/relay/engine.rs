//! [`Engine`]: the relay's public API over the control plane and the workers.

use super::io::Waker;
use super::offload::Offload;
use super::plane::{lock, Directory, Plane, Totals, WorkerStats};
use super::plane::{GroupEntry, GroupStreamImage, MemberPrep, GROUP_KIND};
use super::ports::PortPool;
use super::worker::GroupAdopt;
use super::worker::WorkerHandle;
use super::worker::{Cmd, OsEntropy, Reply, Worker};
use super::{CallSummary, EngineConfig, EngineStats};
use super::{
    CreateGroupCall, GroupCallCreated, GroupCallSummary, GroupMemberAnswer, GroupMemberSpec,
};
use crate::control::arbiter::{Slot, MAX_MEMBERS};
use crate::control::call::Entropy;
use crate::control::call::{
    AnswerCall, CallAnswer, CallEvent, CallOffer, CallTable, CreateCall, SetupError,
};
use crate::control::policy::AuthorizationPolicy;
use crate::control::registry::{RegistryError, UeEntry};
use crate::control::server::TcConfig;
use crate::control::ssrc::SsrcRegistry;
use crate::control::{MediaSecurity, ReleaseReason};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tracing::info;

/// How long the API waits for a worker's reply before it gives up
/// ([`SetupError::WorkerTimeout`]).
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How a caller waits for a worker's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// A thread blocked in `recv_timeout`: the blocking methods, for callers without tokio.
    Block,
    /// A task on a tokio runtime, on a oneshot under the runtime's timer: no runtime thread
    /// waits (the `_async` methods).
    Await,
}

/// The receiving half of a command's reply.
enum Rx<T> {
    Block(crossbeam_channel::Receiver<T>),
    Await(tokio::sync::oneshot::Receiver<T>),
}

fn reply_channel<T>(mode: Mode) -> (Reply<T>, Rx<T>) {
    match mode {
        Mode::Block => {
            let (tx, rx) = crossbeam_channel::bounded(1);
            (Reply::Wait(tx), Rx::Block(rx))
        }
        Mode::Await => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Reply::Wake(tx), Rx::Await(rx))
        }
    }
}

/// The worker is gone (the engine shut down, or its thread died): the command was dropped.
fn stopped(what: &str) -> SetupError {
    SetupError::Internal(format!("the worker that runs {what} has stopped"))
}

/// A command handed to a worker, its reply to come.
pub(super) struct Pending<T> {
    rx: Rx<T>,
    /// What the command is about, for errors ("call X").
    what: String,
}

impl<T> Pending<T> {
    /// Blocks the thread until the reply comes, at most [`REPLY_TIMEOUT`].
    pub(super) fn wait(self) -> Result<T, SetupError> {
        self.wait_until(Instant::now() + REPLY_TIMEOUT)
    }

    fn wait_until(self, deadline: Instant) -> Result<T, SetupError> {
        use crossbeam_channel::RecvTimeoutError;
        match self.rx {
            Rx::Block(rx) => rx.recv_deadline(deadline).map_err(|e| match e {
                RecvTimeoutError::Timeout => SetupError::WorkerTimeout(self.what),
                RecvTimeoutError::Disconnected => stopped(&self.what),
            }),
            // Only the async methods make these, and they never wait here.
            Rx::Await(_) => Err(SetupError::Internal(format!(
                "a blocking wait for an async reply ({})",
                self.what
            ))),
        }
    }

    /// Waits on the task until the reply comes, at most [`REPLY_TIMEOUT`].
    async fn wait_async(self) -> Result<T, SetupError> {
        self.wait_async_until(tokio::time::Instant::now() + REPLY_TIMEOUT)
            .await
    }

    async fn wait_async_until(self, deadline: tokio::time::Instant) -> Result<T, SetupError> {
        match self.rx {
            Rx::Await(rx) => match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(_)) => Err(stopped(&self.what)),
                Err(_) => Err(SetupError::WorkerTimeout(self.what)),
            },
            // Only the blocking methods make these, and they never wait here.
            Rx::Block(_) => Err(SetupError::Internal(format!(
                "an async wait for a blocking reply ({})",
                self.what
            ))),
        }
    }
}

/// A group call handed to its worker: what its setup finishes with.
struct GroupStart {
    id: Arc<str>,
    worker: usize,
    /// The members' MCVideo IDs, in order.
    ids: Vec<String>,
    /// Their SDP answers, in order.
    answers: Vec<String>,
    server_ssrc: crate::ids::Ssrc,
}

/// The relay engine. Cheap to share behind an `Arc`; dropping it shuts it down.
pub struct Engine {
    pub(super) plane: Arc<Plane>,
    /// How the engine reaches each worker.
    pub(super) workers: Vec<WorkerHandle>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Calls taken over from another relay (high availability).
    pub(super) adopted: std::sync::atomic::AtomicU64,
}

impl core::fmt::Debug for Engine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

/// The configured media interfaces, each with room for two port pairs at least.
fn checked_interfaces(config: &EngineConfig) -> io::Result<Vec<super::MediaInterface>> {
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
    Ok(interfaces)
}

/// The recording writer, when recording is configured (its directory must be writable).
fn start_recorder(config: &EngineConfig) -> io::Result<Option<super::recording::Recorder>> {
    let Some(r) = &config.recording else {
        return Ok(None);
    };
    super::recording::Recorder::start(r.clone())
        .map(Some)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("recording directory {}: {e}", r.dir.display()),
            )
        })
}

impl Engine {
    /// Starts the worker threads. Media sockets are bound per call, from the configured range.
    pub fn start(config: EngineConfig) -> io::Result<Engine> {
        let interfaces = checked_interfaces(&config)?;
        let n = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        // One kernel entry per relay port that media can arrive on: every interface's range.
        let ports = interfaces
            .iter()
            .map(|i| i.port_min)
            .min()
            .unwrap_or(config.port_min)
            ..=interfaces
                .iter()
                .map(|i| i.port_max)
                .max()
                .unwrap_or(config.port_max);
        let offload = Offload::open(
            config.kernel_offload,
            &interfaces.iter().map(|i| i.ip).collect::<Vec<_>>(),
            ports,
        )?;
        let (events, _) = broadcast::channel(config.event_capacity.max(16));
        let recorder = start_recorder(&config)?;
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
            worker_stats: workers.iter().map(|w| w.stats.clone()).collect(),
            draining: Default::default(),
            started: Instant::now(),
            ssrcs: Arc::new(SsrcRegistry::new({
                let mut seed = [0u8; 8];
                OsEntropy::default().fill(&mut seed);
                u64::from_le_bytes(seed)
            })),
            recorder,
            offload,
            config,
        });
        let mut threads = Vec::with_capacity(n);
        for (i, rx) in receivers.into_iter().enumerate() {
            let Some(h) = workers.get(i) else {
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
            workers,
            threads: Mutex::new(threads),
            adopted: Default::default(),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.plane.config
    }

    /// Whether the kernel fast path runs (`media.kernel_offload`; the metric
    /// `mcvideo_relay_kernel_offload_active`).
    pub fn kernel_offload_active(&self) -> bool {
        self.plane.offload.active()
    }

    /// A stream of every call's events, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CallEvent> {
        self.plane.events.subscribe()
    }

    /// Seed steps 1–4. See [`CallTable::create_call`]. The call's sockets are bound outside
    /// every lock the other calls use; the call then runs on one worker.
    pub fn create_call(&self, req: CreateCall) -> Result<CallOffer, SetupError> {
        self.admit(|worker| self.offer_call(req, worker))
    }

    /// The rules every new call meets, whatever its kind: nothing new while the engine
    /// drains; the call goes to the worker [`Plane::place`] picks, where `setup` (the kind's
    /// own steps, reserving the call's ID with [`Directory::reserve`](super::plane::Directory::reserve))
    /// makes it; every refusal is booked by its error code.
    fn admit<T>(
        &self,
        setup: impl FnOnce(usize) -> Result<T, SetupError>,
    ) -> Result<T, SetupError> {
        let p = &self.plane;
        let r = if p.draining.load(Ordering::Relaxed) {
            Err(SetupError::Draining)
        } else {
            setup(p.place())
        };
        if let Err(e) = &r {
            p.refused(e.code());
        }
        r
    }

    /// [`Self::create_call`] once admitted, on `worker`.
    fn offer_call(&self, req: CreateCall, worker: usize) -> Result<CallOffer, SetupError> {
        let p = &self.plane;
        lock(&p.directory).table.precheck(&req)?;
        let ifaces = p.interfaces_for(
            &req.caller_sdp,
            req.caller_interface.as_deref(),
            req.callee_interface.as_deref(),
        )?;
        let (Some(caller_pool), Some(callee_pool)) =
            (p.pools.get(ifaces[0]), p.pools.get(ifaces[1]))
        else {
            return Err(SetupError::NoPortsAvailable);
        };
        let mut pre = p.prebind(&req.caller_sdp, ifaces);
        let created = {
            let mut alloc = pre.allocator([caller_pool, callee_pool]);
            let mut d = lock(&p.directory);
            let max = p.config.call.max_calls;
            d.reserve(
                req.call_id.as_deref(),
                max,
                worker,
                &mut OsEntropy::default(),
            )
            .and_then(|id| {
                let req = CreateCall {
                    call_id: Some(id.clone().into()),
                    ..req
                };
                let r = d.table.create_detached(Instant::now(), req, &mut alloc);
                if r.is_err() {
                    d.unreserve(&id);
                }
                r
            })
            .map(|(call, offer)| (call, offer, alloc.bound))
        };
        p.unbind(pre, ifaces);
        let (call, offer, bound) = created?;
        lock(&p.totals).created += 1;
        p.kind_created(call.kind().as_str());
        info!(call = %offer.call_id, worker, "call offered");
        if let Some(w) = self.workers.get(worker) {
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

    /// Hands a command to the worker that runs `call_id`; its reply is to be waited for.
    fn send<T>(
        &self,
        call_id: &str,
        mode: Mode,
        cmd: impl FnOnce(Arc<str>, Reply<T>) -> Cmd,
    ) -> Result<Pending<T>, SetupError> {
        let w = *lock(&self.plane.directory)
            .placement
            .get(call_id)
            .ok_or_else(|| SetupError::UnknownCall(call_id.to_owned()))?;
        self.send_to(w, format!("call {call_id}"), mode, |r| {
            cmd(call_id.into(), r)
        })
    }

    /// Hands a command to worker `w`; `what` names what it is about in errors.
    pub(super) fn send_to<T>(
        &self,
        w: usize,
        what: String,
        mode: Mode,
        cmd: impl FnOnce(Reply<T>) -> Cmd,
    ) -> Result<Pending<T>, SetupError> {
        let (tx, rx) = reply_channel(mode);
        let sent = self.workers.get(w).is_some_and(|h| h.send(cmd(tx)));
        if sent {
            Ok(Pending { rx, what })
        } else {
            Err(stopped(&what))
        }
    }

    /// Seed steps 6–11: the callee accepted; media and transmission control start.
    ///
    /// Blocks the calling thread until the call's worker answers (at most 5 s, then
    /// [`SetupError::WorkerTimeout`]); on a tokio runtime use [`Self::accept_call_async`].
    pub fn accept_call(&self, call_id: &str, answer: AnswerCall) -> Result<CallAnswer, SetupError> {
        self.send(call_id, Mode::Block, |id, r| Cmd::Accept(id, answer, r))?
            .wait()?
    }

    /// [`Self::accept_call`] for a task on a tokio runtime (with its timer): the task, not a
    /// runtime thread, waits for the worker.
    pub async fn accept_call_async(
        &self,
        call_id: &str,
        answer: AnswerCall,
    ) -> Result<CallAnswer, SetupError> {
        self.send(call_id, Mode::Await, |id, r| Cmd::Accept(id, answer, r))?
            .wait_async()
            .await?
    }

    /// The callee declined (while offered): the call is released with reason `rejected`.
    /// Blocks as [`Self::accept_call`] does.
    pub fn reject_call(&self, call_id: &str) -> Result<CallSummary, SetupError> {
        self.send(call_id, Mode::Block, Cmd::Reject)?.wait()?
    }

    /// [`Self::reject_call`] for a task on a tokio runtime.
    pub async fn reject_call_async(&self, call_id: &str) -> Result<CallSummary, SetupError> {
        self.send(call_id, Mode::Await, Cmd::Reject)?
            .wait_async()
            .await?
    }

    /// Records the media of call `call_id` (one-to-one or group) from now on, in its
    /// recording beside its transmission log (docs/recording.md): `Ok(true)` when it is (or
    /// already was) recorded; `Ok(false)` when recording is not configured or was refused
    /// (too little free space, the writer's queue full: counted), and the call goes on
    /// unrecorded. Blocks as [`Self::accept_call`] does.
    pub fn record_call(&self, call_id: &str) -> Result<bool, SetupError> {
        if self.plane.recorder.is_none() {
            return Ok(false);
        }
        self.send(call_id, Mode::Block, Cmd::Record)?.wait()?
    }

    /// [`Self::record_call`] for a task on a tokio runtime.
    pub async fn record_call_async(&self, call_id: &str) -> Result<bool, SetupError> {
        if self.plane.recorder.is_none() {
            return Ok(false);
        }
        self.send(call_id, Mode::Await, Cmd::Record)?
            .wait_async()
            .await?
    }

    /// Copies the first `kind` stream of call `call_id` (any kind of call) to a watcher from
    /// now on: each RTP packet the relay forwards, plain, into a channel of `capacity`
    /// ([`super::watch`]). The call's transmitters are asked for a keyframe. Refused with
    /// [`SetupError::NotWatchable`] where the relay cannot read the media (end_to_end).
    pub async fn watch_call_async(
        &self,
        call_id: &str,
        kind: crate::sdp::MediaKind,
        capacity: usize,
    ) -> Result<super::Watch, SetupError> {
        let (cmd, made) = super::watch::command(kind, capacity);
        Ok(made(
            self.send(call_id, Mode::Await, cmd)?.wait_async().await??,
        ))
    }

    /// [`Self::watch_call_async`] for a caller not on a tokio runtime (it blocks).
    pub fn watch_call(
        &self,
        call_id: &str,
        kind: crate::sdp::MediaKind,
        capacity: usize,
    ) -> Result<super::Watch, SetupError> {
        let (cmd, made) = super::watch::command(kind, capacity);
        Ok(made(self.send(call_id, Mode::Block, cmd)?.wait()??))
    }

    /// A watcher (e.g. a browser's decoder) asks for a keyframe: the call's transmitters are
    /// asked (PLI), where the relay can sign RTCP and their keyframe policy allows one now
    /// (the same throttle as their receivers' requests). Does not wait for the worker.
    pub fn request_keyframe(&self, call_id: &str) -> Result<(), SetupError> {
        self.send(call_id, Mode::Await, Cmd::Keyframe).map(drop)
    }

    /// The controlling server releases the call (reason `released`). A group call is released
    /// with [`Self::release_group_call`] (here it is refused as in the wrong state). Blocks as
    /// [`Self::accept_call`] does.
    pub fn release_call(&self, call_id: &str) -> Result<CallSummary, SetupError> {
        self.send_release(call_id, Mode::Block)?.wait()?
    }

    /// [`Self::release_call`] for a task on a tokio runtime.
    pub async fn release_call_async(&self, call_id: &str) -> Result<CallSummary, SetupError> {
        self.send_release(call_id, Mode::Await)?
            .wait_async()
            .await?
    }

    fn send_release(
        &self,
        call_id: &str,
        mode: Mode,
    ) -> Result<Pending<Result<CallSummary, SetupError>>, SetupError> {
        if self.is_group_call(call_id) {
            return Err(SetupError::WrongState {
                call_id: call_id.to_owned(),
                state: crate::control::call::CallState::Established,
                operation:
                    "release it as a one-to-one call (it is a group call: use release_group_call)",
            });
        }
        self.send(call_id, mode, |id, r| {
            Cmd::Release(id, ReleaseReason::Released, r)
        })
    }

    /// One call's state and counters (`None` when there is no such call, or its worker did not
    /// answer: [`Self::call_async`] tells which). Blocks as [`Self::accept_call`] does.
    pub fn call(&self, call_id: &str) -> Option<CallSummary> {
        self.send(call_id, Mode::Block, Cmd::Get)
            .and_then(Pending::wait)
            .ok()?
            .ok()
    }

    /// One call's state and counters, for a task on a tokio runtime:
    /// [`SetupError::UnknownCall`], [`SetupError::WorkerTimeout`] or, after a bug while
    /// reading it, [`SetupError::Internal`].
    pub async fn call_async(&self, call_id: &str) -> Result<CallSummary, SetupError> {
        self.send(call_id, Mode::Await, Cmd::Get)?
            .wait_async()
            .await?
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
    /// Errors: bad requests (no members, a duplicate member) and a duplicate call ID are
    /// refused before anything is kept; a member's unusable SDP or key is one of the `Member*`
    /// errors, naming the member ([`SetupError::member`]) and the line;
    /// [`SetupError::NoPortsAvailable`] when the port range is exhausted;
    /// [`SetupError::WorkerTimeout`] when the worker does not take the call in time (it is
    /// released as soon as the worker gets to it). Blocks until the worker has taken the call:
    /// on a tokio runtime use [`Self::create_group_call_async`].
    pub fn create_group_call(&self, req: CreateGroupCall) -> Result<GroupCallCreated, SetupError> {
        let (start, pending) = self.start_group_call(req, Mode::Block)?;
        let r = pending.wait();
        self.finish_group_call(start, r)
    }

    /// [`Self::create_group_call`] for a task on a tokio runtime.
    pub async fn create_group_call_async(
        &self,
        req: CreateGroupCall,
    ) -> Result<GroupCallCreated, SetupError> {
        let (start, pending) = self.start_group_call(req, Mode::Await)?;
        let r = pending.wait_async().await;
        self.finish_group_call(start, r)
    }

    /// Everything of a group call's setup up to handing it to its worker.
    #[allow(clippy::type_complexity)]
    fn start_group_call(
        &self,
        req: CreateGroupCall,
        mode: Mode,
    ) -> Result<(GroupStart, Pending<Result<Vec<Slot>, SetupError>>), SetupError> {
        self.admit(|worker| self.start_group_on(req, mode, worker))
    }

    /// [`Self::start_group_call`] once admitted, on `worker`: the call's ID reserved, every
    /// member made ready, the call handed to the worker.
    #[allow(clippy::type_complexity)]
    fn start_group_on(
        &self,
        req: CreateGroupCall,
        mode: Mode,
        worker: usize,
    ) -> Result<(GroupStart, Pending<Result<Vec<Slot>, SetupError>>), SetupError> {
        let p = &self.plane;
        check_group_request(&req)?;
        let mut entropy = OsEntropy::default();
        let id = self.reserve_group(&req, worker, &mut entropy)?;
        let config = self.group_config(&req);
        let ids: Vec<String> = req.members.iter().map(|m| m.mcvideo_id.clone()).collect();
        let security = req.media_security;
        let (streams, members) = match self.prepare_members(req.members, security, &mut entropy) {
            Ok(ready) => ready,
            Err(e) => {
                lock(&p.directory).unreserve(&id);
                return Err(e);
            }
        };
        if let Some(g) = lock(&p.directory).groups.get_mut(&*id) {
            g.streams = streams.clone();
        }
        let answers: Vec<String> = members.iter().map(|m| m.sdp_answer.clone()).collect();
        let server_ssrc = p.ssrcs.allocate(None);
        let adopt = GroupAdopt {
            call_id: id.clone().into(),
            group_id: req.group_id,
            security,
            config,
            streams,
            server_ssrc,
            members,
        };
        let sent = self.send_to(worker, format!("group call {id}"), mode, |r| {
            Cmd::AdoptGroup(Box::new(adopt), r)
        });
        let start = GroupStart {
            id,
            worker,
            ids,
            answers,
            server_ssrc,
        };
        match sent {
            Ok(pending) => Ok((start, pending)),
            Err(e) => {
                // The worker is gone: the call's sockets went with the command.
                p.ssrcs.free(server_ssrc);
                lock(&p.directory).unreserve(&start.id);
                Err(e)
            }
        }
    }

    /// Reserves a new group call's ID on `worker`, with its directory entry: its members
    /// (so a late joiner cannot take a name twice) and no streams yet (a join waits for them).
    fn reserve_group(
        &self,
        req: &CreateGroupCall,
        worker: usize,
        entropy: &mut OsEntropy,
    ) -> Result<Arc<str>, SetupError> {
        let p = &self.plane;
        let mut d = lock(&p.directory);
        let id = d.reserve(
            req.call_id.as_deref(),
            p.config.call.max_calls,
            worker,
            entropy,
        )?;
        d.groups.insert(
            id.clone(),
            GroupEntry {
                security: req.media_security,
                streams: Vec::new(),
                members: req.members.iter().map(|m| m.mcvideo_id.clone()).collect(),
            },
        );
        Ok(id)
    }

    /// A group call's transmission control settings: the engine's, with what the request
    /// sets (Cx, C9, the reception mode).
    fn group_config(&self, req: &CreateGroupCall) -> TcConfig {
        let g = &self.plane.config.group;
        TcConfig {
            max_transmitters: req.max_transmitters.unwrap_or(g.max_transmitters),
            max_streams_per_receiver: req
                .max_streams_per_receiver
                .unwrap_or(g.max_streams_per_receiver),
            reception_mode: req.reception_mode.unwrap_or(g.reception_mode),
            ..g.clone()
        }
    }

    /// The members of a new group call made ready: the group's streams from the first
    /// member's offer, then each member's relay ports bound and its offer answered. On error
    /// what was bound goes back.
    fn prepare_members(
        &self,
        specs: Vec<GroupMemberSpec>,
        security: MediaSecurity,
        entropy: &mut OsEntropy,
    ) -> Result<(Vec<GroupStreamImage>, Vec<MemberPrep>), SetupError> {
        let p = &self.plane;
        let streams = match specs.first() {
            Some(m) => p.group_streams(&m.mcvideo_id, &m.sdp_offer)?,
            None => return Err(SetupError::BadRequest("a group call needs members".into())),
        };
        let mut members = Vec::with_capacity(specs.len());
        for spec in specs {
            match p.prepare_member(spec, &streams, security, entropy) {
                Ok(m) => members.push(m),
                Err(e) => {
                    members.into_iter().for_each(|m| p.give_back(m));
                    return Err(e);
                }
            }
        }
        Ok((streams, members))
    }

    /// A group call's setup once its worker answered (or did not).
    fn finish_group_call(
        &self,
        start: GroupStart,
        reply: Result<Result<Vec<Slot>, SetupError>, SetupError>,
    ) -> Result<GroupCallCreated, SetupError> {
        let p = &self.plane;
        let GroupStart {
            id,
            worker,
            ids,
            answers,
            server_ssrc,
        } = start;
        let slots = match reply {
            Ok(Ok(slots)) => slots,
            Ok(Err(e)) => {
                p.ssrcs.free(server_ssrc);
                lock(&p.directory).unreserve(&id);
                p.refused(e.code());
                return Err(e);
            }
            Err(e) => {
                // The worker did not answer in time: it may still take the call. Release it
                // then (the command queues behind the setup); the call counts until it ends.
                p.kind_created(GROUP_KIND);
                if let Some(w) = self.workers.get(worker) {
                    let (tx, _) = reply_channel(Mode::Block);
                    w.send(Cmd::ReleaseGroup(
                        id.clone(),
                        ReleaseReason::InternalError,
                        tx,
                    ));
                }
                p.refused(e.code());
                return Err(e);
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
    /// receives the running transmissions at once. Blocks until the call's worker has taken
    /// the member: on a tokio runtime use [`Self::add_group_member_async`].
    pub fn add_group_member(
        &self,
        call_id: &str,
        spec: GroupMemberSpec,
    ) -> Result<GroupMemberAnswer, SetupError> {
        let (join, pending) = self.start_join(call_id, spec, Mode::Block)?;
        let r = pending.wait();
        self.finish_join(call_id, join, r)
    }

    /// [`Self::add_group_member`] for a task on a tokio runtime.
    pub async fn add_group_member_async(
        &self,
        call_id: &str,
        spec: GroupMemberSpec,
    ) -> Result<GroupMemberAnswer, SetupError> {
        let (join, pending) = self.start_join(call_id, spec, Mode::Await)?;
        let r = pending.wait_async().await;
        self.finish_join(call_id, join, r)
    }

    /// A member's join up to handing it to the call's worker: (its MCVideo ID, its answer).
    #[allow(clippy::type_complexity)]
    fn start_join(
        &self,
        call_id: &str,
        spec: GroupMemberSpec,
        mode: Mode,
    ) -> Result<((usize, String, String), Pending<Result<Slot, SetupError>>), SetupError> {
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
                return Err(SetupError::MemberRequest {
                    reason: format!("it is already in call {call_id}"),
                    member: spec.mcvideo_id,
                });
            }
            (worker, g.security, g.streams.clone())
        };
        let user = spec.mcvideo_id.clone();
        let prep = match p.prepare_member(spec, &streams, security, &mut OsEntropy::default()) {
            Ok(m) => m,
            Err(e) => {
                self.unreserve_member(call_id, &user);
                return Err(e);
            }
        };
        let answer = prep.sdp_answer.clone();
        let what = format!("group call {call_id}");
        match self.send_to(worker, what, mode, |r| {
            Cmd::JoinGroup(call_id.into(), Box::new(prep), r)
        }) {
            Ok(pending) => Ok(((worker, user, answer), pending)),
            Err(e) => {
                self.unreserve_member(call_id, &user);
                Err(e)
            }
        }
    }

    fn finish_join(
        &self,
        call_id: &str,
        (worker, user, answer): (usize, String, String),
        reply: Result<Result<Slot, SetupError>, SetupError>,
    ) -> Result<GroupMemberAnswer, SetupError> {
        match reply {
            Ok(Ok(slot)) => Ok(GroupMemberAnswer {
                mcvideo_id: user,
                slot,
                sdp_answer: answer,
            }),
            Ok(Err(e)) => {
                self.unreserve_member(call_id, &user);
                Err(e)
            }
            Err(e) => {
                // The worker did not answer in time: it may still add the member. Take it out
                // again then (the command queues behind the join).
                if let Some(w) = self.workers.get(worker) {
                    let (tx, _) = reply_channel(Mode::Block);
                    w.send(Cmd::LeaveGroup(call_id.into(), user.clone(), tx));
                }
                self.unreserve_member(call_id, &user);
                Err(e)
            }
        }
    }

    fn unreserve_member(&self, call_id: &str, user: &str) {
        if let Some(g) = lock(&self.plane.directory).groups.get_mut(call_id) {
            g.members.remove(user);
        }
    }

    /// A member leaves a group call: a transmission it held ends for the others (and the
    /// next queued request is granted), its sockets close and its ports go back. Blocks as
    /// [`Self::accept_call`] does.
    pub fn remove_group_member(&self, call_id: &str, mcvideo_id: &str) -> Result<(), SetupError> {
        let r = self.send_leave(call_id, mcvideo_id, Mode::Block)?.wait()?;
        self.left(call_id, mcvideo_id, r)
    }

    /// [`Self::remove_group_member`] for a task on a tokio runtime.
    pub async fn remove_group_member_async(
        &self,
        call_id: &str,
        mcvideo_id: &str,
    ) -> Result<(), SetupError> {
        let r = self
            .send_leave(call_id, mcvideo_id, Mode::Await)?
            .wait_async()
            .await?;
        self.left(call_id, mcvideo_id, r)
    }

    fn send_leave(
        &self,
        call_id: &str,
        mcvideo_id: &str,
        mode: Mode,
    ) -> Result<Pending<Result<(), SetupError>>, SetupError> {
        if !self.is_group_call(call_id) {
            return Err(SetupError::UnknownCall(call_id.to_owned()));
        }
        let user = mcvideo_id.to_owned();
        self.send(call_id, mode, |id, r| Cmd::LeaveGroup(id, user, r))
    }

    fn left(
        &self,
        call_id: &str,
        mcvideo_id: &str,
        r: Result<(), SetupError>,
    ) -> Result<(), SetupError> {
        if r.is_ok() {
            self.unreserve_member(call_id, mcvideo_id);
        }
        r
    }

    /// One group call's members, transmissions (with their SSRCs), queue and counters
    /// (`None` as for [`Self::call`]). Blocks as [`Self::accept_call`] does.
    pub fn group_call(&self, call_id: &str) -> Option<GroupCallSummary> {
        if !self.is_group_call(call_id) {
            return None;
        }
        self.send(call_id, Mode::Block, Cmd::GetGroup)
            .and_then(Pending::wait)
            .ok()?
            .ok()
    }

    /// One group call's summary, for a task on a tokio runtime (errors as
    /// [`Self::call_async`]).
    pub async fn group_call_async(&self, call_id: &str) -> Result<GroupCallSummary, SetupError> {
        if !self.is_group_call(call_id) {
            return Err(SetupError::UnknownCall(call_id.to_owned()));
        }
        self.send(call_id, Mode::Await, Cmd::GetGroup)?
            .wait_async()
            .await?
    }

    /// Every group call (the calls of a worker that does not answer in time are left out:
    /// [`Self::group_calls_async`] says so). Blocks as [`Self::accept_call`] does.
    pub fn group_calls(&self) -> Vec<GroupCallSummary> {
        self.list(Cmd::ListGroups)
    }

    /// Every group call, for a task on a tokio runtime; [`SetupError::WorkerTimeout`] when
    /// a worker does not answer in time, [`SetupError::Internal`] after a bug while reading a
    /// call.
    pub async fn group_calls_async(&self) -> Result<Vec<GroupCallSummary>, SetupError> {
        self.list_async(Cmd::ListGroups).await
    }

    /// Whether `call_id` is a group call.
    pub fn is_group_call(&self, call_id: &str) -> bool {
        lock(&self.plane.directory).groups.contains_key(call_id)
    }

    /// Whether a call (of any kind) with this ID runs on this engine now. No worker is
    /// asked: the engine's directory answers.
    pub fn has_call(&self, call_id: &str) -> bool {
        lock(&self.plane.directory).placement.contains_key(call_id)
    }

    /// Releases a group call (reason `released`): `call.released` is published, every port
    /// goes back. Returns its final summary. Blocks as [`Self::accept_call`] does.
    pub fn release_group_call(&self, call_id: &str) -> Result<GroupCallSummary, SetupError> {
        self.send_group_release(call_id, Mode::Block)?.wait()?
    }

    /// [`Self::release_group_call`] for a task on a tokio runtime.
    pub async fn release_group_call_async(
        &self,
        call_id: &str,
    ) -> Result<GroupCallSummary, SetupError> {
        self.send_group_release(call_id, Mode::Await)?
            .wait_async()
            .await?
    }

    fn send_group_release(
        &self,
        call_id: &str,
        mode: Mode,
    ) -> Result<Pending<Result<GroupCallSummary, SetupError>>, SetupError> {
        if !self.is_group_call(call_id) {
            return Err(SetupError::UnknownCall(call_id.to_owned()));
        }
        self.send(call_id, mode, |id, r| {
            Cmd::ReleaseGroup(id, ReleaseReason::Released, r)
        })
    }

    /// Asks every worker at once and waits for each reply (all within one
    /// [`REPLY_TIMEOUT`]), blocking the thread.
    pub(super) fn ask_all<T>(&self, cmd: impl Fn(Reply<T>) -> Cmd) -> Vec<Result<T, SetupError>> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        self.send_all(Mode::Block, cmd)
            .into_iter()
            .map(|p| p.and_then(|p| p.wait_until(deadline)))
            .collect()
    }

    /// [`Self::ask_all`] for a task on a tokio runtime.
    pub(super) async fn ask_all_async<T>(
        &self,
        cmd: impl Fn(Reply<T>) -> Cmd,
    ) -> Vec<Result<T, SetupError>> {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        let mut out = Vec::with_capacity(self.workers.len());
        for p in self.send_all(Mode::Await, cmd) {
            out.push(match p {
                Ok(p) => p.wait_async_until(deadline).await,
                Err(e) => Err(e),
            });
        }
        out
    }

    fn send_all<T>(
        &self,
        mode: Mode,
        cmd: impl Fn(Reply<T>) -> Cmd,
    ) -> Vec<Result<Pending<T>, SetupError>> {
        (0..self.workers.len())
            .map(|w| self.send_to(w, format!("worker {w}"), mode, &cmd))
            .collect()
    }

    /// Every call's state and counters (the calls of a worker that does not answer in time
    /// are left out: [`Self::calls_async`] says so). Blocks as [`Self::accept_call`] does.
    pub fn calls(&self) -> Vec<CallSummary> {
        self.list(Cmd::List)
    }

    /// Every one-to-one call, for a task on a tokio runtime (errors as
    /// [`Self::group_calls_async`]).
    pub async fn calls_async(&self) -> Result<Vec<CallSummary>, SetupError> {
        self.list_async(Cmd::List).await
    }

    /// Every worker's list of one kind of call, in one (the calls of a worker that does not
    /// answer in time, or fails to read one of its calls, are left out). Blocks the thread.
    fn list<T>(&self, cmd: impl Fn(Reply<Result<Vec<T>, SetupError>>) -> Cmd) -> Vec<T> {
        let answered = self.ask_all(cmd).into_iter().filter_map(Result::ok);
        answered.flatten().flatten().collect()
    }

    /// [`Self::list`] for a task on a tokio runtime: the first worker's error, if any.
    async fn list_async<T>(
        &self,
        cmd: impl Fn(Reply<Result<Vec<T>, SetupError>>) -> Cmd,
    ) -> Result<Vec<T>, SetupError> {
        let mut all = Vec::new();
        for r in self.ask_all_async(cmd).await {
            all.extend(r??);
        }
        Ok(all)
    }

    /// Jitter and loss of the media arriving from every leg that sent RTP, across all calls,
    /// as histograms (for a scrape; each worker sums its own calls; a worker that does not
    /// answer in time is left out). Blocks as [`Self::accept_call`] does.
    pub fn quality(&self) -> crate::relay::rules::QualityHistograms {
        let mut all = crate::relay::rules::QualityHistograms::default();
        for h in self.ask_all(Cmd::Quality).into_iter().flatten() {
            all.merge(&h);
        }
        all
    }

    /// [`Self::quality`] for a task on a tokio runtime.
    pub async fn quality_async(&self) -> crate::relay::rules::QualityHistograms {
        let mut all = crate::relay::rules::QualityHistograms::default();
        for h in self.ask_all_async(Cmd::Quality).await.into_iter().flatten() {
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
        for w in &self.workers {
            s.caller.add(&w.stats.legs[0].snapshot());
            s.callee.add(&w.stats.legs[1].snapshot());
            s.group_members.add(&w.stats.group.snapshot());
            s.kernel_offload_packets += w.stats.offload_packets.load(Ordering::Relaxed);
            s.kernel_offload_legs += w.stats.offload_legs.load(Ordering::Relaxed);
            s.kernel_offload_neighbour_waits +=
                w.stats.offload_neighbour_waits.load(Ordering::Relaxed);
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
        for w in &self.workers {
            w.send(Cmd::Shutdown);
        }
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
        if let Some(r) = &self.plane.recorder {
            r.shutdown();
        }
    }

    /// The directory recordings go in (`None` when recording is not configured).
    pub fn recording_dir(&self) -> Option<&std::path::Path> {
        self.plane
            .recorder
            .as_ref()
            .map(|r| r.config().dir.as_path())
    }

    /// Whether recording `name` (its directory's name) is still being written.
    pub fn recording_open(&self, name: &str) -> bool {
        self.plane
            .recorder
            .as_ref()
            .is_some_and(|r| r.is_open(name))
    }

    /// The recorder's counters (`None` when recording is not configured).
    pub fn recording_stats(&self) -> Option<super::RecordingStats> {
        self.plane.recorder.as_ref().map(|r| r.stats())
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
            return Err(SetupError::MemberRequest {
                member: m.mcvideo_id.clone(),
                reason: "it appears twice".into(),
            });
        }
    }
    Ok(())
}
