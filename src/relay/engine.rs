//! [`Engine`]: the relay's public API over the control plane and the workers.

use super::io::Waker;
use super::plane::{lock, Directory, Plane, Totals, WorkerHandle, WorkerStats};
use super::ports::PortPool;
use super::worker::{Cmd, OsEntropy, Worker};
use super::{CallSummary, EngineConfig, EngineStats};
use crate::control::call::{
    AnswerCall, CallAnswer, CallEvent, CallOffer, CallTable, CreateCall, SetupError,
};
use crate::control::policy::AuthorizationPolicy;
use crate::control::registry::{RegistryError, UeEntry};
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
    plane: Arc<Plane>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
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
        let ifaces = match p.interfaces_for(&req.caller_sdp, req.callee_interface.as_deref()) {
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
            let r = d.table.create_detached(Instant::now(), req, &mut alloc);
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
        info!(call = %offer.call_id, worker, "call offered");
        if let Some(w) = p.workers.get(worker) {
            w.send(Cmd::Adopt(Box::new((call, bound, ifaces))));
        }
        Ok(offer)
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

    /// The controlling server releases the call (reason `released`).
    pub fn release_call(&self, call_id: &str) -> Result<CallSummary, SetupError> {
        self.ask(call_id, |id, r| {
            Cmd::Release(id, ReleaseReason::Released, r)
        })
        .unwrap_or_else(|| Err(SetupError::UnknownCall(call_id.to_owned())))
    }

    /// One call's state and counters.
    pub fn call(&self, call_id: &str) -> Option<CallSummary> {
        self.ask(call_id, Cmd::Get).flatten()
    }

    /// Asks every worker at once and gathers the replies that come in time.
    fn ask_all<T>(&self, cmd: impl Fn(crossbeam_channel::Sender<T>) -> Cmd) -> Vec<T> {
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
                ..EngineStats::default()
            }
        };
        for w in &p.workers {
            s.caller.add(&w.stats.legs[0].snapshot());
            s.callee.add(&w.stats.legs[1].snapshot());
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
