//! The control plane below the workers: what is engine-wide rather than per call. The call
//! directory (IDs and SSRCs in use, the UE registry, the policy; which worker runs which call),
//! the port pool, the event channel, refusal and release totals, and each worker's handle.
//!
//! Every lock here is brief and none is on a call's path: a packet or a control message of a
//! call is handled by the worker that owns the call, without taking any of them. They are taken
//! when a call is created (the directory, twice, around the socket binding that happens
//! outside any lock; the pool, per port number), when one ends, and on a scrape.

use super::io::Waker;
use super::ports::{BoundPort, PortPool};
use super::stats::LegCounters;
use super::worker::Cmd;
use super::EngineConfig;
use crate::control::call::{CallEvent, CallTable};
use crate::control::server::KindCounters;
use crate::control::{Party, ReleaseReason};
use crate::sdp::{MediaKind, SessionDescription};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::broadcast;

/// Locks `m`, going on after a panic elsewhere (the data stays consistent: every critical
/// section here is a few map operations).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The engine-wide part of the call procedure, and where each call runs.
#[derive(Debug)]
pub(crate) struct Directory {
    pub(crate) table: CallTable,
    pub(crate) placement: HashMap<Arc<str>, usize>,
}

/// Counts kept by the control plane.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) created: u64,
    pub(crate) refused: HashMap<&'static str, u64>,
    pub(crate) released: HashMap<&'static str, u64>,
}

/// One worker's running totals, written by that worker only, summed on a scrape.
#[derive(Debug, Default)]
pub(crate) struct WorkerStats {
    pub(crate) legs: [LegCounters; 2],
    /// Transmission control messages received and sent (booked when a call is stepped).
    pub(crate) tc: Mutex<(KindCounters, KindCounters)>,
    /// Calls on the worker.
    pub(crate) calls: AtomicUsize,
    /// Share of the last second the worker spent working rather than waiting, in ‰.
    pub(crate) busy_permille: AtomicU32,
}

/// How the control plane reaches a worker.
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

/// The engine's shared state.
#[derive(Debug)]
pub(crate) struct Plane {
    pub(crate) config: EngineConfig,
    pub(crate) directory: Mutex<Directory>,
    /// One port pool per media interface (same order as `interfaces`).
    pub(crate) pools: Vec<Mutex<PortPool>>,
    pub(crate) interfaces: Vec<super::MediaInterface>,
    pub(crate) events: broadcast::Sender<CallEvent>,
    pub(crate) totals: Mutex<Totals>,
    pub(crate) workers: Vec<WorkerHandle>,
    pub(crate) draining: AtomicBool,
    pub(crate) started: Instant,
}

impl Plane {
    /// Books a refusal by its error code.
    pub(crate) fn refused(&self, code: &'static str) {
        *lock(&self.totals).refused.entry(code).or_default() += 1;
    }

    /// Sends an event to the subscribers (and counts releases).
    pub(crate) fn publish(&self, ev: CallEvent) {
        use crate::control::call::CallEventKind;
        match ev.kind {
            CallEventKind::Released { reason } => {
                *lock(&self.totals)
                    .released
                    .entry(reason.as_str())
                    .or_default() += 1;
                tracing::info!(call = %ev.call_id, reason = reason.as_str(), "call released");
            }
            CallEventKind::Established => tracing::info!(call = %ev.call_id, "call established"),
            _ => {}
        }
        let _ = self.events.send(ev);
    }

    /// A finished call's resources: its ports go back to the pool (its sockets are closed by
    /// then), its ID and SSRCs are free again.
    pub(crate) fn finished(&self, call: &crate::control::call::Call, ports: &[(usize, u16)]) {
        for &(pool, port) in ports {
            if let Some(pool) = self.pools.get(pool) {
                lock(pool).free(port);
            }
        }
        let mut d = lock(&self.directory);
        d.table.forget(call);
        d.placement.remove(call.id());
    }

    /// The worker a new call goes to: calls are packed onto the first workers, and spread to
    /// the next one only while the earlier ones are busier than the configured share (so light
    /// loads wake one thread, and two workers never fight over each packet's wake-up).
    pub(crate) fn place(&self) -> usize {
        let spread = u32::from(self.config.spread_above_busy_percent) * 10;
        let busy = |w: &WorkerHandle| w.stats.busy_permille.load(Ordering::Relaxed);
        self.workers
            .iter()
            .position(|w| busy(w) < spread)
            .or_else(|| {
                self.workers
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, w)| busy(w))
                    .map(|(i, _)| i)
            })
            .unwrap_or(0)
    }

    /// Binds, outside every lock but the pool's (per port number), the sockets the caller's
    /// offer will need: one port per offered stream and party (two without rtcp-mux), each
    /// party's on its interface (`ifaces`).
    pub(crate) fn prebind(&self, caller_sdp: &str, ifaces: [usize; 2]) -> Prebound {
        let mut p = Prebound::default();
        let Ok(offer) = SessionDescription::parse(caller_sdp) else {
            return p; // the call procedure reports the error, naming the line
        };
        let c = &self.config.call;
        for m in offer.media() {
            let offered = m.port != 0
                && match m.kind {
                    MediaKind::Video | MediaKind::Control => true,
                    MediaKind::Audio => c.offer_audio,
                    MediaKind::Other(_) => c.offer_other_media,
                };
            if !offered {
                continue;
            }
            let mux = m.rtcp_mux || m.kind == MediaKind::Control;
            for party in [Party::Caller, Party::Callee] {
                let i = party.index();
                let Some(pool) = ifaces.get(i).and_then(|&f| self.pools.get(f)) else {
                    return p;
                };
                match PortPool::allocate_shared(pool, mux) {
                    Some(b) => p.ready[i].push(b),
                    None => return p,
                }
            }
        }
        p
    }

    /// Gives unused pre-bound sockets back.
    pub(crate) fn unbind(&self, p: Prebound, ifaces: [usize; 2]) {
        for (ready, iface) in p.ready.into_iter().zip(ifaces) {
            if let Some(pool) = self.pools.get(iface) {
                let mut pool = lock(pool);
                for (port, _) in ready {
                    pool.free(port.rtp.port()); // the sockets close as the entry drops
                }
            }
        }
    }

    /// The interfaces a new call's legs go on: the caller's by its SDP's address family, the
    /// callee's by name, else the caller's family.
    pub(crate) fn interfaces_for(
        &self,
        caller_sdp: &str,
        callee: Option<&str>,
    ) -> Result<[usize; 2], crate::control::call::SetupError> {
        use crate::control::call::SetupError;
        let family = SessionDescription::parse(caller_sdp)
            .ok()
            .and_then(|d| d.media().iter().find_map(|m| m.rtp_addr()))
            .map(|a| a.is_ipv4());
        let of_family = |v4: bool| self.interfaces.iter().position(|i| i.ip.is_ipv4() == v4);
        let caller = match family {
            Some(v4) => of_family(v4).ok_or_else(|| SetupError::NoAcceptableMedia {
                party: Party::Caller,
                reason: format!(
                    "its media address is {} and the relay has no {} media interface",
                    if v4 { "IPv4" } else { "IPv6" },
                    if v4 { "IPv4" } else { "IPv6" }
                ),
            })?,
            None => 0, // the call procedure reports the SDP's problem
        };
        let callee = match callee {
            Some(name) => self
                .interfaces
                .iter()
                .position(|i| i.name == name)
                .ok_or_else(|| {
                    SetupError::BadRequest(format!(
                        "callee interface: no media interface named {name:?}"
                    ))
                })?,
            None => caller,
        };
        Ok([caller, callee])
    }

    /// Why a call was released, for the totals (used when a worker cannot run the call's
    /// own release, e.g. after a panic).
    pub(crate) fn released_without_call(&self, id: &Arc<str>, reason: ReleaseReason) {
        self.publish(CallEvent {
            call_id: id.clone().into(),
            kind: crate::control::call::CallEventKind::Released { reason },
        });
    }
}

/// Sockets bound before the call procedure runs.
#[derive(Debug, Default)]
pub(crate) struct Prebound {
    /// Per party.
    pub(crate) ready: [Vec<(crate::control::call::RelayPort, BoundPort)>; 2],
}

impl Prebound {
    /// A [`crate::control::call::PortAllocator`] handing out these sockets.
    pub(crate) fn allocator<'a>(
        &'a mut self,
        pools: [&'a Mutex<PortPool>; 2],
    ) -> super::ports::Prebound<'a> {
        let [a, b] = &mut self.ready;
        super::ports::Prebound {
            ready: [a, b],
            pools,
            bound: HashMap::new(),
        }
    }
}
