//! The relay engine: real UDP sockets, SRTP, and the sans-IO core driven on worker threads.
//!
//! This is the only module that uses tokio or reads the clock. An MCVideo server links it and
//! drives it with four calls and an event stream:
//!
//! ```
//! use mcvideo_relay::control::call::{AnswerCall, CallEventKind, CreateCall};
//! use mcvideo_relay::control::MediaSecurity;
//! use mcvideo_relay::relay::{Engine, EngineConfig};
//! use mcvideo_relay::sdp::SessionDescription;
//! use mcvideo_relay::wire::tc::{MessageKind, TcMessage};
//! use std::net::UdpSocket;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::start(EngineConfig { port_min: 46_000, port_max: 46_099, ..Default::default() })?;
//! let mut events = engine.subscribe();
//! // Two clients on this machine: a video socket and a transmission control socket each.
//! let (caller_video, caller_ctl) = (UdpSocket::bind("127.0.0.1:0")?, UdpSocket::bind("127.0.0.1:0")?);
//! let (callee_video, callee_ctl) = (UdpSocket::bind("127.0.0.1:0")?, UdpSocket::bind("127.0.0.1:0")?);
//! callee_video.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
//! let sdp = |video: &UdpSocket, ctl: &UdpSocket| -> std::io::Result<String> {
//!     Ok(format!(
//!         "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
//!          m=video {} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=rtcp-mux\r\na=ssrc:4660 cname:x\r\n\
//!          m=application {} udp MCVideo\r\na=fmtp:MCVideo mc_implicit_request\r\n",
//!         video.local_addr()?.port(),
//!         ctl.local_addr()?.port()
//!     ))
//! };
//! // Seed steps 1–4: the caller's request; `offer.sdp_offer` goes to the callee's UE(s).
//! let offer = engine.create_call(CreateCall {
//!     call_id: None,
//!     caller_id: "sip:alice@mcx.example".into(),
//!     caller_sdp: sdp(&caller_video, &caller_ctl)?,
//!     callee_id: "sip:bob@mcx.example".into(),
//!     video_push: true,
//!     commencement_mode: None,
//!     media_security: MediaSecurity::EndToEnd,
//!     caller_tc_key: None,
//! })?;
//! // Seed steps 6–7: the callee accepts; `answer.sdp_answer` goes back to the caller.
//! let answer = engine.accept_call(
//!     &offer.call_id,
//!     AnswerCall { callee_sdp: sdp(&callee_video, &callee_ctl)?, callee_tc_key: None },
//! )?;
//! let relay = SessionDescription::parse(&answer.sdp_answer)?;
//! let (relay_video, relay_ctl) = (relay.media()[0].rtp_addr().unwrap(), relay.media()[1].rtp_addr().unwrap());
//! // Steps 9–11: the caller is granted, sends video, the callee receives it.
//! let mut buf = [0u8; 1500];
//! let (n, _) = caller_ctl.recv_from(&mut buf)?;
//! assert_eq!(TcMessage::parse(&buf[..n])?.kind, MessageKind::TransmissionGranted);
//! let packet = [0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0xde, 0xad];
//! caller_video.send_to(&packet, relay_video)?;
//! let (n, _) = callee_video.recv_from(&mut buf)?;
//! assert_eq!(&buf[..n], &packet);
//! // NOTE 2: the caller ends its transmission; the call is released.
//! let end = TcMessage::new(MessageKind::TransmissionEndRequest, 1).to_vec(&Default::default())?;
//! caller_ctl.send_to(&end, relay_ctl)?;
//! loop {
//!     let ev = events.blocking_recv()?;
//!     if let CallEventKind::Released { reason } = ev.kind {
//!         assert_eq!(reason.as_str(), "transmission_completed"); // now send the SIP BYEs
//!         break;
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Threads: [`EngineConfig::workers`] worker threads, each a current-thread runtime; a call is
//! placed on one worker (round robin) for its whole life. The control plane (create, accept,
//! release, timers, transmission control) takes one mutex; the media path takes none.
#![allow(clippy::disallowed_methods)] // the I/O layer is where the clock is read

mod latch;
mod ports;
pub mod stats;
mod worker;
#[doc(hidden)]
pub use worker::bench_support;

pub use latch::{Evidence, Latch, StrangerBudget, Verdict, STRANGER_BURST, STRANGER_RATE};
pub use stats::{DropReason, LegCounters, LegSnapshot};

use crate::control::arbiter::TransmissionState;
use crate::control::call::{
    AnswerCall, Call, CallAnswer, CallConfig, CallEvent, CallEventKind, CallOffer, CallState,
    CallTable, CreateCall, Entropy, SetupError,
};
use crate::control::policy::{AllowAll, AuthorizationPolicy};
use crate::control::registry::{RegistryError, UeEntry};
use crate::control::server::{KindCounters, TcStats};
use crate::control::{CommencementMode, MediaSecurity, Party, ReleaseReason};
use crate::sdp::MediaKind;
use ports::{BoundPort, PortPool};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};
use worker::{CallSetup, ControlSetup, LegSetup, Step, StreamSetup, WorkerCmd};

pub(crate) const DROP_KINDS: usize = DropReason::ALL.len();

/// Raises this process's open-files soft limit to its hard limit and returns the soft limit now
/// in force.
///
/// Every call holds one socket per relay port — two or more — so at the usual soft limit of
/// 1,024 a relay runs out of descriptors at a few hundred calls, long before it runs out of
/// ports. `mcvideo-relay serve` and `loadgen` call this at start; a program embedding the
/// [`Engine`] decides for itself. The hard limit is raised only by the service manager
/// (`LimitNOFILE=` in systemd, `--ulimit nofile=` for containers).
pub fn raise_open_files_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Address the relay's media sockets bind to and that goes into the SDP it hands on.
    pub media_ip: IpAddr,
    /// Lowest port of the media range.
    pub port_min: u16,
    /// Highest port of the media range.
    pub port_max: u16,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Call procedure and transmission control settings.
    pub call: CallConfig,
    /// Consecutive packets from one new address that latch a leg without other evidence.
    pub latch_after_packets: u32,
    /// SO_RCVBUF / SO_SNDBUF asked for on each media socket (0 = the kernel's default).
    pub socket_buffer_bytes: usize,
    /// Call events kept for slow subscribers before they miss some.
    pub event_capacity: usize,
    /// Who may push and receive pushes.
    pub policy: Arc<dyn AuthorizationPolicy>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            media_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_min: 40_000,
            port_max: 49_999,
            workers: 0,
            call: CallConfig::default(),
            latch_after_packets: 5,
            socket_buffer_bytes: 1 << 20,
            event_capacity: 65_536,
            policy: Arc::new(AllowAll),
        }
    }
}

/// The state and counters of one call, as the API reports them.
#[derive(Debug, Clone)]
pub struct CallSummary {
    /// The call's ID.
    pub call_id: String,
    /// Offered, established or released.
    pub state: CallState,
    /// Where the transmission stands.
    pub transmission: TransmissionState,
    /// The caller's MCVideo ID.
    pub caller_id: String,
    /// The callee's MCVideo ID.
    pub callee_id: String,
    /// Media security mode.
    pub media_security: MediaSecurity,
    /// Commencement mode.
    pub commencement_mode: CommencementMode,
    /// UEs the call was delivered to.
    pub deliver_to: Vec<String>,
    /// Why it was released.
    pub release_reason: Option<ReleaseReason>,
    /// Time since creation (until release, once released).
    pub duration: Duration,
    /// Counters of the caller's leg.
    pub caller: LegSnapshot,
    /// Counters of the callee's leg.
    pub callee: LegSnapshot,
    /// Transmission control counters.
    pub tc: TcStats,
}

/// Engine-wide counters (live calls plus released ones).
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    /// Calls held now (offered or established).
    pub active_calls: usize,
    /// Calls created since start.
    pub calls_created: u64,
    /// Calls refused at creation, by error code.
    pub calls_refused: HashMap<&'static str, u64>,
    /// Calls released, by reason.
    pub calls_released: HashMap<&'static str, u64>,
    /// All caller legs.
    pub caller: LegSnapshot,
    /// All callee legs.
    pub callee: LegSnapshot,
    /// Transmission control messages received.
    pub tc_received: KindCounters,
    /// Transmission control messages sent.
    pub tc_sent: KindCounters,
    /// Port pairs in use.
    pub ports_in_use: usize,
    /// Port pairs in the range.
    pub ports_capacity: usize,
    /// Whether the engine refuses new calls.
    pub draining: bool,
}

struct LiveCall {
    worker: usize,
    counters: [Arc<LegCounters>; 2],
}

struct Totals {
    created: u64,
    refused: HashMap<&'static str, u64>,
    released: HashMap<&'static str, u64>,
    legs: [LegSnapshot; 2],
    tc_received: KindCounters,
    tc_sent: KindCounters,
}

pub(crate) struct Control {
    table: CallTable,
    pool: PortPool,
    pending: HashMap<Arc<str>, HashMap<u16, BoundPort>>,
    live: HashMap<Arc<str>, LiveCall>,
    totals: Totals,
    next_worker: usize,
    workers: usize,
    draining: bool,
}

pub(crate) struct Shared {
    control: Mutex<Control>,
    events: broadcast::Sender<CallEvent>,
    started: Instant,
}

/// Randomness from the OS for SSRCs, call IDs and keys.
struct OsEntropy(ring::rand::SystemRandom);

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        use ring::rand::SecureRandom;
        if self.0.fill(buf).is_err() {
            // The OS generator does not fail on Linux; never hand out zeros silently.
            panic!("the operating system's random generator failed");
        }
    }
}

fn add_tc(into: &mut KindCounters, from: &KindCounters, _: ()) {
    for kind in crate::wire::tc::MessageKind::ALL {
        for _ in 0..from.get(*kind) {
            into.add(*kind);
        }
    }
}

/// Sends a call's pending events to subscribers (and counts releases).
fn publish(totals: &mut Totals, call: &mut Call, events: &broadcast::Sender<CallEvent>) {
    while let Some(ev) = call.poll_event() {
        match ev.kind {
            CallEventKind::Released { reason } => {
                *totals.released.entry(reason.as_str()).or_default() += 1;
                info!(call = %ev.call_id, reason = reason.as_str(), "call released");
            }
            CallEventKind::Established => info!(call = %ev.call_id, "call established"),
            _ => {}
        }
        let _ = events.send(ev);
    }
}

impl Control {
    fn publish_for(&mut self, id: &str, events: &broadcast::Sender<CallEvent>) {
        let Control { table, totals, .. } = self;
        if let Some(call) = table.get_mut(id) {
            publish(totals, call, events);
        }
    }

    /// Books a finished call's leg counters into the totals (once its driver sent its last).
    fn account_legs(&mut self, id: &str) {
        if let Some(l) = self.live.remove(id) {
            for (t, c) in self.totals.legs.iter_mut().zip(&l.counters) {
                t.add(&c.snapshot());
            }
        }
    }

    /// Books a removed call's transmission control counters into the totals.
    fn account(&mut self, call: &Call) {
        let tc = call.tc_stats();
        add_tc(&mut self.totals.tc_received, &tc.received, ());
        add_tc(&mut self.totals.tc_sent, &tc.sent, ());
    }

    fn summary(&self, call: &Call, counters: Option<&[Arc<LegCounters>; 2]>) -> CallSummary {
        let snap = |p: Party| {
            counters
                .and_then(|c| c.get(p.index()))
                .map(|c| c.snapshot())
                .unwrap_or_default()
        };
        let times = call.times();
        CallSummary {
            call_id: call.id().to_owned(),
            state: call.state(),
            transmission: call.arbiter().state(),
            caller_id: call.caller_id().to_owned(),
            callee_id: call.callee_id().to_owned(),
            media_security: call.media_security(),
            commencement_mode: call.commencement_mode(),
            deliver_to: call.deliver_to().to_vec(),
            release_reason: call.release_reason(),
            duration: times
                .released
                .unwrap_or_else(Instant::now)
                .saturating_duration_since(times.created),
            caller: snap(Party::Caller),
            callee: snap(Party::Callee),
            tc: *call.tc_stats(),
        }
    }

    /// Frees the sockets and ports of a call that never reached a worker.
    fn drop_pending(&mut self, id: &str) {
        if let Some(bound) = self.pending.remove(id) {
            for port in bound.into_keys() {
                self.pool.free(port);
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Control> {
        // A panic while holding the lock would be a bug; keep serving the other calls.
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn next_timeout(&self, id: &str) -> Option<Instant> {
        self.lock().table.get(id).and_then(Call::poll_timeout)
    }

    /// Feeds a call what its driver saw and collects what it wants sent.
    pub(crate) fn step_call(
        &self,
        id: &str,
        now: Instant,
        activity: [(u32, Option<Instant>); 2],
        bye: bool,
        control: Option<(Party, &[u8])>,
        out: &mut Vec<(Party, Vec<u8>)>,
    ) -> Step {
        let mut guard = self.lock();
        let c = &mut *guard;
        let Some(call) = c.table.get_mut(id) else {
            return Step::Gone;
        };
        for (party, (n, at)) in [Party::Caller, Party::Callee].into_iter().zip(activity) {
            if n > 0 {
                call.handle_media(at.unwrap_or(now).min(now), party, n);
            }
        }
        if bye {
            call.handle_rtcp_bye(now, Party::Caller);
        }
        if let Some((party, bytes)) = control {
            call.handle_control(now, party, bytes);
        }
        if call.poll_timeout().is_some_and(|t| t <= now) {
            call.handle_timeout(now);
        }
        let mut buf = Vec::new();
        while let Some(to) = call.poll_transmit(&mut buf) {
            out.push((to, buf.clone()));
        }
        let granted = call.arbiter().state() == TransmissionState::Granted;
        let released = call.state() == CallState::Released;
        if !released {
            c.publish_for(id, &self.events);
            return Step::Running { granted };
        }
        if let Some(mut call) = c.table.remove(id) {
            publish(&mut c.totals, &mut call, &self.events);
            c.account(&call);
        }
        Step::Gone
    }

    /// The driver of a call has finished: book its counters and take its ports back.
    pub(crate) fn free_ports(&self, id: &str, ports: &[u16]) {
        let mut c = self.lock();
        c.account_legs(id);
        for &p in ports {
            c.pool.free(p);
        }
    }

    pub(crate) fn fail_call(&self, id: &str, ports: &[u16]) {
        let mut guard = self.lock();
        let c = &mut *guard;
        if let Ok(mut call) = c
            .table
            .release_call(Instant::now(), id, ReleaseReason::InternalError)
        {
            publish(&mut c.totals, &mut call, &self.events);
            c.account(&call);
        }
        c.account_legs(id);
        for &p in ports {
            c.pool.free(p);
        }
    }

    /// Offered calls have no driver: their offer timeout is run from here.
    pub(crate) fn housekeep(&self, now: Instant) {
        let mut guard = self.lock();
        let c = &mut *guard;
        let due: Vec<Arc<str>> = c
            .pending
            .keys()
            .filter(|id| {
                c.table
                    .get(id)
                    .and_then(Call::poll_timeout)
                    .is_some_and(|t| t <= now)
            })
            .cloned()
            .collect();
        let events = self.events.clone();
        for id in due {
            if let Some(call) = c.table.get_mut(&id) {
                call.handle_timeout(now);
                if call.state() == CallState::Released {
                    if let Some(mut call) = c.table.remove(&id) {
                        publish(&mut c.totals, &mut call, &events);
                        c.account(&call);
                    }
                    c.drop_pending(&id);
                }
            }
        }
    }
}

/// The relay engine. Cheap to share behind an `Arc`; dropping it shuts it down.
pub struct Engine {
    shared: Arc<Shared>,
    workers: Vec<mpsc::UnboundedSender<WorkerCmd>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    config: EngineConfig,
}

impl core::fmt::Debug for Engine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts the worker threads. Media sockets are bound per call, from the configured range.
    pub fn start(config: EngineConfig) -> io::Result<Engine> {
        if config.port_min > config.port_max || config.port_max - config.port_min < 3 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the media port range must hold at least two port pairs",
            ));
        }
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let (events, _) = broadcast::channel(config.event_capacity.max(16));
        let shared = Arc::new(Shared {
            control: Mutex::new(Control {
                table: CallTable::new(
                    config.call.clone(),
                    config.policy.clone(),
                    Box::new(OsEntropy(ring::rand::SystemRandom::new())),
                ),
                pool: PortPool::new(
                    config.media_ip,
                    config.port_min,
                    config.port_max,
                    config.socket_buffer_bytes,
                ),
                pending: HashMap::new(),
                live: HashMap::new(),
                totals: Totals {
                    created: 0,
                    refused: HashMap::new(),
                    released: HashMap::new(),
                    legs: Default::default(),
                    tc_received: KindCounters::default(),
                    tc_sent: KindCounters::default(),
                },
                next_worker: 0,
                workers,
                draining: false,
            }),
            events,
            started: Instant::now(),
        });
        let mut senders = Vec::with_capacity(workers);
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let (tx, rx) = mpsc::unbounded_channel();
            let sh = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("mcv-worker-{i}"))
                    .spawn(move || worker::run(rx, sh, i))?,
            );
            senders.push(tx);
        }
        info!(workers, media_ip = %config.media_ip, port_min = config.port_min, port_max = config.port_max, "engine started");
        Ok(Engine {
            shared,
            workers: senders,
            threads: Mutex::new(threads),
            config,
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// A stream of every call's events, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CallEvent> {
        self.shared.events.subscribe()
    }

    /// Seed steps 1–4. See [`CallTable::create_call`].
    pub fn create_call(&self, req: CreateCall) -> Result<CallOffer, SetupError> {
        let mut guard = self.shared.lock();
        let c = &mut *guard;
        let result = if c.draining {
            Err(SetupError::Draining)
        } else {
            let mut binder = ports::Binder {
                pool: &mut c.pool,
                bound: HashMap::new(),
            };
            c.table
                .create_call(Instant::now(), req, &mut binder)
                .map(|offer| (offer, binder.bound))
        };
        match result {
            Ok((offer, bound)) => {
                let id: Arc<str> = offer.call_id.as_str().into();
                c.pending.insert(id.clone(), bound);
                c.totals.created += 1;
                c.publish_for(&id, &self.shared.events);
                info!(call = %id, "call offered");
                Ok(offer)
            }
            Err(e) => {
                *c.totals.refused.entry(e.code()).or_default() += 1;
                Err(e)
            }
        }
    }

    /// Seed steps 6–11: the callee accepted; media and transmission control start.
    pub fn accept_call(&self, call_id: &str, answer: AnswerCall) -> Result<CallAnswer, SetupError> {
        let mut guard = self.shared.lock();
        let c = &mut *guard;
        let answer = c.table.accept_call(Instant::now(), call_id, answer)?;
        let id: Arc<str> = call_id.into();
        let mut bound = c.pending.remove(call_id).unwrap_or_default();
        c.publish_for(call_id, &self.shared.events);
        let Some(call) = c.table.get(call_id) else {
            return Err(SetupError::UnknownCall(call_id.to_owned()));
        };
        let setup = self.setup_for(call, &mut bound);
        drop(bound); // sockets of streams nobody uses
        let worker = c.next_worker % c.workers.max(1);
        c.next_worker = c.next_worker.wrapping_add(1);
        c.live.insert(
            id.clone(),
            LiveCall {
                worker,
                counters: setup.counters.clone(),
            },
        );
        drop(guard);
        if let Some(tx) = self.workers.get(worker) {
            if tx.send(WorkerCmd::Start(Box::new(setup))).is_err() {
                warn!(call = %id, "worker gone: the engine is shutting down");
            }
        }
        Ok(answer)
    }

    fn setup_for(&self, call: &Call, bound: &mut HashMap<u16, BoundPort>) -> CallSetup {
        let ids = call.server().identities();
        let caller_has_control = call
            .streams()
            .iter()
            .any(|s| s.kind == MediaKind::Control && s.relay[Party::Caller.index()].is_some());
        let mut streams = Vec::new();
        let mut control: [Option<ControlSetup>; 2] = [None, None];
        for s in call.streams() {
            if s.kind == MediaKind::Control {
                for party in [Party::Caller, Party::Callee] {
                    let i = party.index();
                    let (Some(relay), Some(remote)) = (s.relay[i], s.remote_rtp[i]) else {
                        continue;
                    };
                    if let Some(b) = bound.remove(&relay.rtp.port()) {
                        control[i] = Some(ControlSetup {
                            socket: b.rtp,
                            remote: Some(remote),
                            key: call.tc_key(party).cloned(),
                        });
                    }
                }
                continue;
            }
            if !s.active() {
                continue;
            }
            let mut legs = Vec::with_capacity(2);
            for party in [Party::Caller, Party::Callee] {
                let i = party.index();
                let Some(b) = s.relay[i].and_then(|r| bound.remove(&r.rtp.port())) else {
                    break;
                };
                let keys = s.keys[i].as_ref();
                legs.push(LegSetup {
                    rtp: b.rtp,
                    rtcp: b.rtcp,
                    remote_rtp: s.remote_rtp[i],
                    remote_rtcp: s.remote_rtcp[i],
                    announced: s.announced_ssrcs[i].clone(),
                    srtp_in: keys.map(|k| k.inbound.clone()),
                    srtp_out: keys.map(|k| k.outbound.clone()),
                });
            }
            let Ok(legs) = <[LegSetup; 2]>::try_from(legs) else {
                continue;
            };
            let mut caller_ssrcs = s.announced_ssrcs[Party::Caller.index()].clone();
            if caller_has_control || !caller_ssrcs.is_empty() {
                match s.kind {
                    MediaKind::Video => caller_ssrcs.push(ids.video_ssrc),
                    MediaKind::Audio => caller_ssrcs.push(ids.audio_ssrc),
                    _ => {}
                }
            }
            streams.push(StreamSetup {
                kind: s.kind.clone(),
                encrypted: s.proto.to_ascii_uppercase().contains("SAVP"),
                legs,
                caller_ssrcs,
            });
        }
        CallSetup {
            id: call.id().into(),
            arbiter: call.arbiter().clone(),
            security: call.media_security(),
            streams,
            control,
            counters: [Arc::default(), Arc::default()],
            ports: call.relay_ports().map(|p| p.rtp.port()).collect(),
            server_ssrc: ids.server_ssrc,
            video_ssrc: ids.video_ssrc,
            latch_after: self.config.latch_after_packets,
        }
    }

    fn finish(&self, id: &str, mut call: Call) -> CallSummary {
        let mut guard = self.shared.lock();
        let c = &mut *guard;
        publish(&mut c.totals, &mut call, &self.shared.events);
        c.drop_pending(id);
        c.account(&call);
        // The driver books the leg counters when it has stopped (after its last packet).
        let worker = c.live.get(id).map(|l| l.worker);
        let summary = c.summary(&call, c.live.get(id).map(|l| &l.counters));
        drop(guard);
        if let Some(tx) = worker.and_then(|w| self.workers.get(w)) {
            let _ = tx.send(WorkerCmd::Stop(id.into()));
        }
        summary
    }

    /// The callee declined (while offered): the call is released with reason `rejected`.
    pub fn reject_call(&self, call_id: &str) -> Result<CallSummary, SetupError> {
        let call = self
            .shared
            .lock()
            .table
            .reject_call(Instant::now(), call_id)?;
        Ok(self.finish(call_id, call))
    }

    /// The controlling server releases the call (reason `released`).
    pub fn release_call(&self, call_id: &str) -> Result<CallSummary, SetupError> {
        self.release_with(call_id, ReleaseReason::Released)
    }

    fn release_with(
        &self,
        call_id: &str,
        reason: ReleaseReason,
    ) -> Result<CallSummary, SetupError> {
        let call = self
            .shared
            .lock()
            .table
            .release_call(Instant::now(), call_id, reason)?;
        Ok(self.finish(call_id, call))
    }

    /// One call's state and counters.
    pub fn call(&self, call_id: &str) -> Option<CallSummary> {
        let c = self.shared.lock();
        let call = c.table.get(call_id)?;
        Some(c.summary(call, c.live.get(call_id).map(|l| &l.counters)))
    }

    /// Every call's state and counters.
    pub fn calls(&self) -> Vec<CallSummary> {
        let c = self.shared.lock();
        c.table
            .iter()
            .map(|call| c.summary(call, c.live.get(call.id()).map(|l| &l.counters)))
            .collect()
    }

    /// Registers (or updates) a UE of a user. Returns whether it is new.
    pub fn register_ue(&self, user: &str, ue: UeEntry) -> Result<bool, RegistryError> {
        self.shared.lock().table.registry_mut().register(user, ue)
    }

    /// Removes a UE. Returns whether it was registered.
    pub fn unregister_ue(&self, user: &str, ue_id: &str) -> bool {
        self.shared
            .lock()
            .table
            .registry_mut()
            .unregister(user, ue_id)
    }

    /// The UEs of a user.
    pub fn ues(&self, user: &str) -> Vec<UeEntry> {
        self.shared.lock().table.registry().ues(user).to_vec()
    }

    /// Drain mode: refuse new calls, let existing ones run to completion.
    pub fn set_draining(&self, draining: bool) {
        self.shared.lock().draining = draining;
    }

    /// Replaces the authorization policy for calls created from now on; live calls are
    /// untouched ([`Engine::config`] still shows the policy the engine started with).
    pub fn set_policy(&self, policy: Arc<dyn AuthorizationPolicy>) {
        self.shared.lock().table.set_policy(policy);
    }

    /// Engine-wide counters.
    pub fn stats(&self) -> EngineStats {
        let c = self.shared.lock();
        let mut s = EngineStats {
            active_calls: c.table.len(),
            calls_created: c.totals.created,
            calls_refused: c.totals.refused.clone(),
            calls_released: c.totals.released.clone(),
            caller: c.totals.legs[0],
            callee: c.totals.legs[1],
            tc_received: c.totals.tc_received,
            tc_sent: c.totals.tc_sent,
            ports_in_use: c.pool.in_use(),
            ports_capacity: c.pool.capacity(),
            draining: c.draining,
        };
        for l in c.live.values() {
            s.caller.add(&l.counters[0].snapshot());
            s.callee.add(&l.counters[1].snapshot());
        }
        for call in c.table.iter() {
            add_tc(&mut s.tc_received, &call.tc_stats().received, ());
            add_tc(&mut s.tc_sent, &call.tc_stats().sent, ());
        }
        s
    }

    /// Time since the engine started.
    pub fn uptime(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// Releases every call (reason `shutdown`, each with its events), stops the workers and
    /// waits for them. Idempotent.
    pub fn shutdown(&self) {
        let ids: Vec<String> = self
            .shared
            .lock()
            .table
            .iter()
            .map(|c| c.id().to_owned())
            .collect();
        for id in ids {
            let _ = self.release_with(&id, ReleaseReason::Shutdown);
        }
        for tx in &self.workers {
            let _ = tx.send(WorkerCmd::Shutdown);
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
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
