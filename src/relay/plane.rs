//! The control plane below the workers: what is engine-wide rather than per call. The call
//! directory (IDs and SSRCs in use, the UE registry, the policy; which worker runs which call),
//! the port pool, the event channel, refusal and release totals, and each worker's handle.
//!
//! Every lock here is brief and none is on a call's path: a packet or a control message of a
//! call is handled by the worker that owns the call, without taking any of them. They are taken
//! when a call is created (the directory, twice, around the socket binding that happens
//! outside any lock; the pool, per port number), when one ends, and on a scrape.

use super::ports::{BoundPort, PortPool};
use super::rules::GroupStreamSetup;
use super::stats::LegCounters;
use super::EngineConfig;
use crate::control::call::{CallEvent, CallTable, Entropy, SetupError};
use crate::control::server::KindCounters;
use crate::control::ssrc::SsrcRegistry;
use crate::control::{MediaSecurity, Party, ReleaseReason};
use crate::sdp::{MediaKind, SessionDescription};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
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
    /// Which worker runs each call, push, pull and group alike (one namespace of call IDs).
    pub(crate) placement: HashMap<Arc<str>, usize>,
    /// Group calls: what a late joiner's setup needs, and who is in the call.
    pub(crate) groups: HashMap<Arc<str>, GroupEntry>,
}

impl Directory {
    /// Whether a call of any kind holds `id` (push, pull and group calls share one namespace).
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.placement.contains_key(id) || self.table.get(id).is_some()
    }

    /// The calls `max_calls` counts: every call, whatever its kind.
    pub(crate) fn calls(&self) -> usize {
        self.table.detached_len() + self.groups.len()
    }

    /// Reserves a new call's ID and places the call on `worker`: the `requested` ID if no call
    /// of any kind holds it, else [`SetupError::DuplicateCallId`]; without one, a fresh random
    /// ID; [`SetupError::TooManyCalls`] when `max_calls` calls run already. The one place these
    /// rules live: every create and takeover path reserves here, under the directory lock,
    /// and gives the ID back with [`Self::unreserve`] if the call is not made after all.
    pub(crate) fn reserve(
        &mut self,
        requested: Option<&str>,
        max_calls: usize,
        worker: usize,
        entropy: &mut dyn Entropy,
    ) -> Result<Arc<str>, SetupError> {
        let id: Arc<str> = match requested {
            Some(id) if self.holds(id) => return Err(SetupError::DuplicateCallId(id.to_owned())),
            Some(id) => id.into(),
            None => loop {
                let mut b = [0u8; 8];
                entropy.fill(&mut b);
                let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
                if !self.holds(&id) {
                    break id.into();
                }
            },
        };
        if self.calls() >= max_calls {
            return Err(SetupError::TooManyCalls);
        }
        self.placement.insert(id.clone(), worker);
        Ok(id)
    }

    /// Gives a reserved ID back (with a group call's entry, if it has one).
    pub(crate) fn unreserve(&mut self, id: &str) {
        self.placement.remove(id);
        self.groups.remove(id);
    }
}

/// The control plane's view of one group call.
#[derive(Debug, Clone)]
pub(crate) struct GroupEntry {
    pub(crate) security: MediaSecurity,
    pub(crate) streams: Vec<GroupStreamImage>,
    pub(crate) members: HashSet<String>,
}

/// One media stream of a group call as a high-availability image holds it: the rules' own
/// [`GroupStreamSetup`], under the name the image's other parts share.
pub type GroupStreamImage = GroupStreamSetup;

/// Counts kept by the control plane.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) created: u64,
    /// Calls held and created, by kind.
    pub(crate) by_kind: std::collections::BTreeMap<&'static str, super::KindTotals>,
    pub(crate) refused: HashMap<&'static str, u64>,
    pub(crate) released: HashMap<&'static str, u64>,
}

/// One worker's running totals, written by that worker only, summed on a scrape.
#[derive(Debug, Default)]
pub(crate) struct WorkerStats {
    pub(crate) legs: [LegCounters; 2],
    /// Group members' legs.
    pub(crate) group: LegCounters,
    /// Transmission control messages received and sent (booked when a call is stepped).
    pub(crate) tc: Mutex<(KindCounters, KindCounters)>,
    /// Calls on the worker.
    pub(crate) calls: AtomicUsize,
    /// Share of the last second the worker spent working rather than waiting, in ‰.
    pub(crate) busy_permille: AtomicU32,
    /// RTP packets the kernel fast path forwarded for the worker's calls (booked on a step).
    pub(crate) offload_packets: std::sync::atomic::AtomicU64,
    /// The worker's legs in the kernel fast path now.
    pub(crate) offload_legs: std::sync::atomic::AtomicU64,
    /// Installs put off because a receiver's next hop was not in the neighbour table yet.
    pub(crate) offload_neighbour_waits: std::sync::atomic::AtomicU64,
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
    /// Each worker's load figures, in worker order (the engine holds the workers themselves).
    pub(crate) worker_stats: Vec<Arc<WorkerStats>>,
    pub(crate) draining: AtomicBool,
    pub(crate) started: Instant,
    /// SSRCs of group transmissions, unique across the engine.
    pub(crate) ssrcs: Arc<SsrcRegistry>,
    /// The recording writer, when recording is configured.
    pub(crate) recorder: Option<super::recording::Recorder>,
    /// The kernel fast path, if it runs.
    pub(crate) offload: super::offload::Offload,
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
        {
            let mut d = lock(&self.directory);
            d.table.forget(call);
            d.placement.remove(call.id());
        }
        self.kind_ended(call.kind().as_str());
    }

    /// A call of `kind` was created.
    pub(crate) fn kind_created(&self, kind: &'static str) {
        let mut t = lock(&self.totals);
        let k = t.by_kind.entry(kind).or_default();
        k.active += 1;
        k.created += 1;
    }

    /// A call of `kind` ended.
    pub(crate) fn kind_ended(&self, kind: &'static str) {
        let mut t = lock(&self.totals);
        let k = t.by_kind.entry(kind).or_default();
        k.active = k.active.saturating_sub(1);
    }

    /// Gives relay ports back to their pools (their sockets must be closed by then).
    pub(crate) fn free_ports(&self, ports: &[(usize, u16)]) {
        for &(pool, port) in ports {
            if let Some(pool) = self.pools.get(pool) {
                lock(pool).free(port);
            }
        }
    }

    /// A member made ready and not taken after all: its sockets close, its ports go back.
    pub(crate) fn give_back(&self, m: MemberPrep) {
        let ports = m.ports.clone();
        drop(m); // closes the sockets
        self.free_ports(&ports);
    }

    /// A finished group call: its ports go back, its ID is free again.
    pub(crate) fn group_finished(&self, id: &str, ports: &[(usize, u16)]) {
        self.free_ports(ports);
        {
            let mut d = lock(&self.directory);
            d.groups.remove(id);
            d.placement.remove(id);
        }
        self.kind_ended(GROUP_KIND);
    }

    /// The worker a new call goes to: calls are packed onto the first workers, and spread to
    /// the next one only while the earlier ones are busier than the configured share (so light
    /// loads wake one thread, and two workers never fight over each packet's wake-up).
    pub(crate) fn place(&self) -> usize {
        let spread = u32::from(self.config.spread_above_busy_percent) * 10;
        let busy = |w: &Arc<WorkerStats>| w.busy_permille.load(Ordering::Relaxed);
        self.worker_stats
            .iter()
            .position(|w| busy(w) < spread)
            .or_else(|| {
                self.worker_stats
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

    /// The interfaces a new call's legs go on: each party's by name when one is given (it must
    /// exist, and the caller's must be of its SDP's address family), else the caller's is the
    /// first interface of its SDP's address family and the callee's is the caller's.
    pub(crate) fn interfaces_for(
        &self,
        caller_sdp: &str,
        caller: Option<&str>,
        callee: Option<&str>,
    ) -> Result<[usize; 2], SetupError> {
        let family = sdp_family(caller_sdp);
        let named = |party: &str, name: &str, family: Option<bool>| {
            self.named_interface(name, family)
                .map_err(|p| SetupError::BadRequest(format!("{party} interface {name:?}: {p}")))
        };
        let caller = match (caller, family) {
            (Some(name), _) => named("caller", name, family)?,
            (None, Some(v4)) => self
                .interfaces
                .iter()
                .position(|i| i.ip.is_ipv4() == v4)
                .ok_or_else(|| SetupError::NoAcceptableMedia {
                    party: Party::Caller,
                    reason: format!(
                        "its media address is {fam} and the relay has no {fam} media interface",
                        fam = family_name(v4)
                    ),
                })?,
            (None, None) => 0, // the call procedure reports the SDP's problem
        };
        let callee = match callee {
            Some(name) => named("callee", name, None)?,
            None => caller,
        };
        Ok([caller, callee])
    }

    /// The interface named `name`, if it can carry media of the address family `v4` (`None`:
    /// any): its index, or why not.
    pub(crate) fn named_interface(
        &self,
        name: &str,
        v4: Option<bool>,
    ) -> Result<usize, InterfaceProblem> {
        let Some(i) = self.interfaces.iter().position(|i| i.name == name) else {
            return Err(InterfaceProblem::Unknown {
                known: self.interfaces.iter().map(|i| i.name.clone()).collect(),
            });
        };
        let iface_v4 = self.interfaces.get(i).is_some_and(|f| f.ip.is_ipv4());
        match v4 {
            Some(sdp_v4) if sdp_v4 != iface_v4 => {
                Err(InterfaceProblem::Family { iface_v4, sdp_v4 })
            }
            _ => Ok(i),
        }
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

/// The kind label of group calls.
pub(crate) const GROUP_KIND: &str = "group";

/// The address family of an SDP's media (`Some(true)`: IPv4), from its first media address;
/// `None` when it has none or does not parse (the call procedure reports that).
pub(crate) fn sdp_family(sdp: &str) -> Option<bool> {
    SessionDescription::parse(sdp)
        .ok()
        .and_then(|d| d.media().iter().find_map(|m| m.rtp_addr()))
        .map(|a| a.is_ipv4())
}

fn family_name(v4: bool) -> &'static str {
    if v4 {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// Why a named media interface cannot carry a leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InterfaceProblem {
    /// No interface has that name.
    Unknown {
        /// The names the relay has.
        known: Vec<String>,
    },
    /// The interface is of the other address family than the party's SDP.
    Family {
        /// The interface is IPv4.
        iface_v4: bool,
        /// The SDP's media address is IPv4.
        sdp_v4: bool,
    },
}

impl core::fmt::Display for InterfaceProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InterfaceProblem::Unknown { known } => {
                write!(f, "the relay has no media interface of that name (it has ")?;
                for (n, k) in known.iter().enumerate() {
                    let sep = if n == 0 { "" } else { ", " };
                    write!(f, "{sep}{k:?}")?;
                }
                write!(f, ")")
            }
            InterfaceProblem::Family { iface_v4, sdp_v4 } => write!(
                f,
                "it is an {} interface and the SDP's media address is {}",
                family_name(*iface_v4),
                family_name(*sdp_v4)
            ),
        }
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
    ) -> super::ports::PreboundAllocator<'a> {
        let [a, b] = &mut self.ready;
        super::ports::PreboundAllocator {
            ready: [a, b],
            pools,
            bound: HashMap::new(),
        }
    }
}

/// One group member made ready on the control plane: its sockets bound, its SDP answered,
/// its rules' and server's inputs built. The worker that runs the call adopts it.
#[derive(Debug)]
pub(crate) struct MemberPrep {
    /// The group server's view of the member.
    pub(crate) setup: crate::control::server::MemberSetup,
    /// One leg per group stream (a stream the member did not take has no address).
    pub(crate) legs: Vec<super::rules::LegSetup>,
    /// Its transmission control channel.
    pub(crate) control: Option<super::rules::ControlSetup>,
    /// Per group stream: its sockets (none where the member did not take the stream).
    pub(crate) stream_sockets: Vec<Option<BoundPort>>,
    /// Its control channel's socket.
    pub(crate) control_socket: Option<BoundPort>,
    /// Its relay ports, with their pool.
    pub(crate) ports: Vec<(usize, u16)>,
    /// The SDP answer for the member.
    pub(crate) sdp_answer: String,
    /// Per group stream: its relay RTP address (as advertised) and whether RTCP is muxed on
    /// it (high availability: the ports a relay that takes the call over binds).
    pub(crate) relay: Vec<Option<(SocketAddr, bool)>>,
    /// Its control channel's relay address.
    pub(crate) control_relay: Option<SocketAddr>,
}

impl MemberPrep {
    /// A member of a group of `streams` streams before anything is bound: `setup` for the
    /// group server, no leg, socket, port, answer or relay address yet.
    pub(crate) fn new(setup: crate::control::server::MemberSetup, streams: usize) -> Self {
        MemberPrep {
            setup,
            legs: vec![Default::default(); streams],
            control: None,
            stream_sockets: (0..streams).map(|_| None).collect(),
            control_socket: None,
            ports: Vec::new(),
            sdp_answer: String::new(),
            relay: vec![None; streams],
            control_relay: None,
        }
    }

    /// The member's leg of group stream `si`, from its offer's stream `m`: it receives at
    /// `remote`, the relay's side is `relay` bound to `socket` (its address kept for high
    /// availability), with `keys` in per_leg mode.
    fn set_leg(
        &mut self,
        si: usize,
        m: &crate::sdp::Media,
        remote: SocketAddr,
        relay: crate::control::call::RelayPort,
        socket: BoundPort,
        keys: MemberLegKeys,
    ) {
        if let Some(leg) = self.legs.get_mut(si) {
            *leg = super::rules::LegSetup {
                remote_rtp: Some(remote),
                remote_rtcp: m.rtcp_addr(),
                announced: m.ssrcs.clone(),
                separate_rtcp: !relay.muxed(),
                srtp_in: keys.0,
                srtp_out: keys.1,
                send_only: !m.direction.receives(),
            };
        }
        if let Some(slot) = self.stream_sockets.get_mut(si) {
            *slot = Some(socket);
        }
        if let Some(r) = self.relay.get_mut(si) {
            *r = Some((relay.rtp, relay.muxed()));
        }
    }
}

/// A member's media the relay cannot carry.
fn member_error(id: &str, what: impl core::fmt::Display) -> crate::control::call::SetupError {
    crate::control::call::SetupError::MemberMedia {
        member: id.to_owned(),
        reason: what.to_string(),
    }
}

/// A member's malformed SDP (the error names the line).
fn member_sdp(id: &str, error: crate::sdp::SdpError) -> crate::control::call::SetupError {
    crate::control::call::SetupError::MemberSdp {
        member: id.to_owned(),
        error,
    }
}

impl Plane {
    /// The group's streams from its first member's offer: its first video stream (required)
    /// and, when audio is offered, its first audio stream, in the offer's order.
    pub(crate) fn group_streams(
        &self,
        id: &str,
        sdp: &str,
    ) -> Result<Vec<GroupStreamImage>, crate::control::call::SetupError> {
        let offer = SessionDescription::parse(sdp).map_err(|e| member_sdp(id, e))?;
        let mut streams: Vec<GroupStreamImage> = Vec::new();
        for m in offer.media() {
            let wanted = m.port != 0
                && match m.kind {
                    MediaKind::Video => true,
                    MediaKind::Audio => self.config.call.offer_audio,
                    _ => false,
                };
            if !wanted || streams.iter().any(|s| s.kind == m.kind) {
                continue;
            }
            streams.push(GroupStreamImage {
                kind: m.kind.clone(),
                encrypted: m.proto.to_ascii_uppercase().contains("SAVP"),
                clock_rate: m.clock_rate.unwrap_or(match m.kind {
                    MediaKind::Video => 90_000,
                    _ => 0,
                }),
                encoding: m.encoding.clone(),
            });
        }
        if !streams.iter().any(|s| s.kind == MediaKind::Video) {
            return Err(member_error(
                id,
                "its SDP offer has no video stream (m=video with a non-zero port)",
            ));
        }
        Ok(streams)
    }

    /// Binds a member's relay ports and answers its SDP offer. Nothing is kept on error.
    pub(crate) fn prepare_member(
        &self,
        spec: super::GroupMemberSpec,
        streams: &[GroupStreamImage],
        security: MediaSecurity,
        entropy: &mut dyn crate::control::call::Entropy,
    ) -> Result<MemberPrep, crate::control::call::SetupError> {
        let mut prep = MemberPrep::new(Default::default(), streams.len());
        match self.fill_member(&mut prep, spec, streams, security, entropy) {
            Ok(()) => Ok(prep),
            Err(e) => {
                let ports = std::mem::take(&mut prep.ports);
                drop(prep); // closes the sockets
                self.free_ports(&ports);
                Err(e)
            }
        }
    }

    fn fill_member(
        &self,
        prep: &mut MemberPrep,
        spec: super::GroupMemberSpec,
        streams: &[GroupStreamImage],
        security: MediaSecurity,
        entropy: &mut dyn crate::control::call::Entropy,
    ) -> Result<(), crate::control::call::SetupError> {
        use crate::control::call::SetupError;
        use crate::sdp::{MediaRewrite, Rewrite};
        let id = spec.mcvideo_id.as_str();
        check_member_id(id)?;
        let offer = SessionDescription::parse(&spec.sdp_offer).map_err(|e| member_sdp(id, e))?;
        let (iface, v4) = self.member_interface(id, &offer)?;
        let pool = self.pools.get(iface).ok_or(SetupError::NoPortsAvailable)?;
        let mut taken: Vec<MediaKind> = Vec::new();
        let mut rewrites = Vec::with_capacity(offer.media().len());
        let mut relay_ip = None;
        let mut video_ssrc = None;
        let mut audio_ssrc = None;
        let mut control_fmtp = None;
        // Which way its media streams go, from the member's side (RFC 3264 §5.1).
        let (mut sends, mut receives) = (false, false);
        for m in offer.media() {
            let first_of_kind = !taken.contains(&m.kind);
            taken.push(m.kind.clone());
            let stream = streams
                .iter()
                .position(|s| s.kind == m.kind)
                .filter(|_| first_of_kind && m.port != 0);
            let control = m.kind == MediaKind::Control && first_of_kind && m.port != 0;
            if stream.is_none() && !control {
                rewrites.push(MediaRewrite::Reject);
                continue;
            }
            let remote = member_remote(id, m, v4)?;
            let mux = m.rtcp_mux || control;
            let (relay, sockets) =
                PortPool::allocate_shared(pool, mux).ok_or(SetupError::NoPortsAvailable)?;
            prep.ports.push((iface, relay.rtp.port()));
            relay_ip = Some(relay.rtp.ip());
            let rtcp_port = (!relay.muxed()).then(|| relay.rtcp.port());
            if control {
                control_fmtp = m.mcvideo;
                prep.control = Some(super::rules::ControlSetup {
                    remote: Some(remote),
                    key: spec.tc_key.clone(),
                });
                prep.control_socket = Some(sockets);
                prep.control_relay = Some(relay.rtp);
                rewrites.push(MediaRewrite::Keep {
                    port: relay.rtp.port(),
                    rtcp_port: None,
                    crypto: None,
                });
                continue;
            }
            let Some(si) = stream else { continue };
            sends |= m.direction.sends();
            receives |= m.direction.receives();
            match m.kind {
                MediaKind::Video => video_ssrc = video_ssrc.or(m.ssrcs.first().copied()),
                MediaKind::Audio => audio_ssrc = audio_ssrc.or(m.ssrcs.first().copied()),
                _ => {}
            }
            let (crypto, keys) = member_keys(id, m, security, entropy)?;
            prep.set_leg(si, m, remote, relay, sockets, keys);
            rewrites.push(MediaRewrite::Keep {
                port: relay.rtp.port(),
                rtcp_port,
                crypto,
            });
        }
        if !prep.legs.iter().any(|l| l.remote_rtp.is_some()) {
            return Err(member_error(
                id,
                "its SDP offer has none of the group's media streams",
            ));
        }
        let relay_ip = relay_ip.ok_or_else(|| member_error(id, "no stream is usable"))?;
        prep.sdp_answer = offer
            .rewrite(&Rewrite {
                connection: relay_ip,
                media: rewrites,
            })
            .map(|rewritten| answer_from_offer(&rewritten))
            .map_err(|e| member_sdp(id, e))?;
        let control = prep.control.is_some();
        let directions = (sends, receives);
        prep.setup = member_setup(
            spec,
            control,
            control_fmtp,
            directions,
            video_ssrc,
            audio_ssrc,
        );
        Ok(())
    }

    /// The media interface of the member's address family (that of the first usable address
    /// in its offer), and whether it is IPv4.
    fn member_interface(
        &self,
        id: &str,
        offer: &SessionDescription,
    ) -> Result<(usize, bool), crate::control::call::SetupError> {
        let v4 = offer
            .media()
            .iter()
            .find_map(|m| m.rtp_addr())
            .map(|a| a.is_ipv4())
            .ok_or_else(|| member_error(id, "its SDP offer has no usable media address"))?;
        let iface = self
            .interfaces
            .iter()
            .position(|i| i.ip.is_ipv4() == v4)
            .ok_or_else(|| {
                member_error(
                    id,
                    format!(
                        "its media address is {} and the relay has no such media interface",
                        if v4 { "IPv4" } else { "IPv6" }
                    ),
                )
            })?;
        Ok((iface, v4))
    }
}

/// A member's `mcvideo_id`: 1 to `MAX_ID_LEN` octets with no control characters.
fn check_member_id(id: &str) -> Result<(), crate::control::call::SetupError> {
    let valid = !id.is_empty()
        && id.len() <= crate::control::registry::MAX_ID_LEN
        && !id.chars().any(char::is_control);
    if !valid {
        return Err(crate::control::call::SetupError::BadRequest(format!(
            "member mcvideo_id must be 1 to {} octets with no control characters",
            crate::control::registry::MAX_ID_LEN
        )));
    }
    Ok(())
}

/// Where the member receives the stream `m`: its RTP address, of the member's address family.
fn member_remote(
    id: &str,
    m: &crate::sdp::Media,
    v4: bool,
) -> Result<SocketAddr, crate::control::call::SetupError> {
    let remote = m.rtp_addr().ok_or_else(|| {
        member_error(
            id,
            format!("m= line {} has no usable address to send to", m.line),
        )
    })?;
    if remote.is_ipv4() != v4 {
        return Err(member_error(
            id,
            format!("m= line {}: mixed address families", m.line),
        ));
    }
    Ok(remote)
}

/// A member leg's SRTP keys (inbound, outbound): none end to end.
type MemberLegKeys = (
    Option<crate::keys::MasterKey>,
    Option<crate::keys::MasterKey>,
);

/// The keys of the member's stream `m`: in per_leg mode the `a=crypto` value of the relay's
/// answer, and the (inbound, outbound) pair: the member's key (from its offer) and the relay's
/// own key toward it (drawn from `entropy`); nothing end to end.
fn member_keys(
    id: &str,
    m: &crate::sdp::Media,
    security: MediaSecurity,
    entropy: &mut dyn crate::control::call::Entropy,
) -> Result<(Option<Vec<String>>, MemberLegKeys), crate::control::call::SetupError> {
    use crate::keys::{MasterKey, SrtpSuite};
    if security != MediaSecurity::PerLeg {
        return Ok((None, (None, None)));
    }
    let found = m
        .crypto
        .iter()
        .find_map(|c| SrtpSuite::from_name(&c.suite).map(|s| (c.tag, s, c.key_b64.as_str())));
    let Some((tag, suite, b64)) = found else {
        return Err(member_error(
            id,
            format!(
                "per_leg mode needs an a=crypto line with AEAD_AES_128_GCM or AES_CM_128_HMAC_SHA1_80 in the section of line {}",
                m.line
            ),
        ));
    };
    let inbound = MasterKey::from_base64(suite, b64)
        .map_err(|e| member_error(id, format!("m= line {}: a=crypto: {e}", m.line)))?;
    let mut material = vec![0u8; suite.key_len() + suite.salt_len()];
    entropy.fill(&mut material);
    let outbound = MasterKey { suite, material };
    Ok((
        Some(vec![outbound.sdes_attribute(tag)]),
        (Some(inbound), Some(outbound)),
    ))
}

/// The group server's view of the member: its identity, priority and role, and the SSRCs it
/// transmits with (its `a=fmtp:MCVideo` ones, else the first `a=ssrc` of its streams).
/// `(sends, receives)`: whether its offer sends, and receives, on any stream it takes. One
/// that sends on none never transmits; one that receives on none is never sent media (the
/// answer says the relay will not).
fn member_setup(
    spec: super::GroupMemberSpec,
    control: bool,
    fmtp: Option<crate::sdp::McVideoFmtp>,
    (sends, receives): (bool, bool),
    video_ssrc: Option<u32>,
    audio_ssrc: Option<u32>,
) -> crate::control::server::MemberSetup {
    crate::control::server::MemberSetup {
        user_id: spec.mcvideo_id,
        priority: spec.priority,
        receive_only: spec.receive_only || !sends,
        send_only: !receives,
        control,
        video_ssrc: fmtp
            .and_then(|f| f.mc_video_ssrc)
            .or(video_ssrc)
            .map(crate::ids::Ssrc),
        audio_ssrc: fmtp
            .and_then(|f| f.mc_audio_ssrc)
            .or(audio_ssrc)
            .map(crate::ids::Ssrc),
    }
}

/// The relay's answer from its rewrite of a member's offer (RFC 3264 §6.1): a `sendonly`
/// stream is answered `recvonly` and the other way round, and the member's own `a=ssrc` lines
/// are left out (the relay's sources are the transmitters, announced by transmission control).
fn answer_from_offer(rewritten: &str) -> String {
    let mut out = String::with_capacity(rewritten.len());
    for line in rewritten.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let end = line.get(body.len()..).unwrap_or_default();
        match body {
            "a=sendonly" => {
                out.push_str("a=recvonly");
                out.push_str(end);
            }
            "a=recvonly" => {
                out.push_str("a=sendonly");
                out.push_str(end);
            }
            b if b.starts_with("a=ssrc:") || b.starts_with("a=ssrc-group:") => {}
            _ => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_member_offer_becomes_an_answer() {
        let a = super::answer_from_offer(
            "v=0\r\nm=video 1 RTP/AVP 96\r\na=sendonly\r\na=ssrc:1 cname:x\r\n\
             m=audio 2 RTP/AVP 0\r\na=recvonly\r\na=ssrc-group:FID 1 2\r\na=rtpmap:0 PCMU/8000\n",
        );
        assert_eq!(
            a,
            "v=0\r\nm=video 1 RTP/AVP 96\r\na=recvonly\r\n\
             m=audio 2 RTP/AVP 0\r\na=sendonly\r\na=rtpmap:0 PCMU/8000\n"
        );
    }
}
