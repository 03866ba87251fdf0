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
//!     video_pull: false,
//!     commencement_mode: None,
//!     media_security: MediaSecurity::EndToEnd,
//!     caller_tc_key: None,
//!     callee_interface: None,
//!     caller_interface: None,
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
//! Threads: [`EngineConfig::workers`] worker threads, each a plain epoll loop (no async
//! runtime on the media path). A call is placed on one worker when it is created and stays
//! there; that worker owns its sans-IO control state, its sockets and its per-packet rules, so
//! no lock is taken on a call's path. Calls are packed onto the first workers and spread to the
//! next only as a worker's busy share rises ([`EngineConfig::spread_above_busy_percent`]). The
//! API reaches a worker through a queue and waits for its reply, at most 5 s
//! ([`crate::control::call::SetupError::WorkerTimeout`] then; a bug while the worker handles
//! it is [`crate::control::call::SetupError::Internal`]). The methods that wait block the
//! calling thread (for a server without an async runtime); each has an `_async` twin
//! ([`Engine::accept_call_async`], ...) for a task on a tokio runtime with its timer, where no
//! runtime thread waits. Counters are kept per worker and summed on a scrape.
//!
//! **Group video calls** (TS 23.281 §7.7.1.1) run on the same workers:
//! [`Engine::create_group_call`] with the members' SDP offers returns each member's SDP answer
//! and starts transmission control at once ([`crate::control::server::TransmissionControlServer`]: grants up
//! to Cx transmitters, queues or pre-empts the rest, reception control with C9, Transmission
//! Idle and T1). [`Engine::add_group_member`] and [`Engine::remove_group_member`] change the
//! members while the call runs, [`Engine::group_call`] reports its members, transmissions
//! (with their SSRCs) and queue, [`Engine::release_group_call`] ends it. Each granted
//! transmitter's media is fanned out by the call's [`rules::GroupRules`] from each receiver's
//! own relay socket; events name the member (`transmission.granted`, `transmission.queued`,
//! `transmission.preempted`, `transmission.ended`, `transmission.idle`, `participant.joined`,
//! `participant.left`, then `call.released`). Call IDs share one namespace with push and pull
//! calls; [`EngineStats::by_kind`] counts calls by kind.
//!
//! Only the I/O side reads the clock (the engine, the HA images, the workers: `worker` allows
//! it itself); the per-packet rules ([`rules`]) are given `now` and stay under the clock ban
//! of `clippy.toml`, so an `Instant::now()` there fails `cargo clippy -- -D warnings`.

#[doc(hidden)]
pub mod bench_support;
#[allow(clippy::disallowed_methods)] // the engine reads the clock (call start, replies)
mod engine;
#[allow(clippy::disallowed_methods)] // adoption places an image's ages on the clock
mod ha;
#[cfg(feature = "kernel-offload")]
mod kroute;
mod offload;

/// Updates the workers' high-availability channel holds at most ([`Engine::ha_updates`]).
pub const HA_UPDATES_CAPACITY: usize = 16_384;
pub mod io;
mod plane;
mod ports;
#[allow(clippy::disallowed_methods)] // the writer ages recordings for retention
pub mod recording;
pub mod rules;
pub mod stats;
pub mod watch;
mod worker;

pub use engine::Engine;
pub use ha::{
    AdoptError, CallImage, GroupControlImage, GroupImage, GroupLegImage, GroupMemberImage,
    GroupSnapshot, HaUpdate,
};
pub use offload::KernelOffload;
pub use plane::GroupStreamImage;
#[cfg(feature = "sidecar")]
pub(crate) use plane::{sdp_family, InterfaceProblem};
pub use recording::{RecordingConfig, RecordingStats};
pub use rules::{Evidence, Latch, StrangerBudget, Verdict, STRANGER_BURST, STRANGER_RATE};
pub use stats::{DropReason, LegCounters, LegSnapshot};
pub use watch::{Watch, WatchedPacket, WatchedStream};
#[cfg(test)]
pub(crate) use worker::hooks as test_hooks;

use crate::control::arbiter::Slot;
use crate::control::call::{CallConfig, CallState};
use crate::control::policy::{AllowAll, AuthorizationPolicy};
use crate::control::server::KindCounters;
use crate::control::server::TransmissionState;
use crate::control::server::{ReceptionMode, TcConfig, TcStats};
use crate::control::{CallKind, CommencementMode, MediaSecurity, ReleaseReason};
use crate::ids::Ssrc;
use crate::keys::MasterKey;
use std::collections::HashMap;
use std::io as stdio;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

/// Raises this process's open-files soft limit to its hard limit and returns the soft limit now
/// in force.
///
/// Every call holds one socket per relay port — two or more — so at the usual soft limit of
/// 1,024 a relay runs out of descriptors at a few hundred calls, long before it runs out of
/// ports. `mcvideo-relay serve` and `loadgen` call this at start; a program embedding the
/// [`Engine`] decides for itself. The hard limit is raised only by the service manager
/// (`LimitNOFILE=` in systemd, `--ulimit nofile=` for containers).
pub fn raise_open_files_limit() -> stdio::Result<u64> {
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
    /// Named media interfaces (rtpengine's `interface=`): SIP deployments bridge networks, e.g.
    /// IPv4 access and an IPv6 core. Each has its address, port range and, behind NAT, the
    /// address its SDP advertises. A caller's leg goes on the interface
    /// [`CreateCall::caller_interface`] names (of its SDP's address family), else on the first
    /// interface of its SDP's address family; the callee's on the one
    /// [`CreateCall::callee_interface`] names, else on the caller's. Empty: one interface,
    /// `default`, on `media_ip` with `port_min..=port_max`.
    ///
    /// [`CreateCall::callee_interface`]: crate::control::call::CreateCall::callee_interface
    /// [`CreateCall::caller_interface`]: crate::control::call::CreateCall::caller_interface
    pub interfaces: Vec<MediaInterface>,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// New calls go to the first worker busy less than this share of its time (percent);
    /// the next worker is used only when the earlier ones are busier.
    pub spread_above_busy_percent: u8,
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
    /// Group calls' defaults: Cx, C9, reception mode, queueing, timers (T1, T2/C2, T3/C3,
    /// T4/C4, T6/C6, T11) and counters. [`CreateGroupCall`] may override Cx, C9 and the
    /// reception mode per call.
    pub group: TcConfig,
    /// High availability: how often a call whose media flows is written again (its SRTP
    /// state, its timers), about. Control-plane changes and RTP sequence wraps (a new
    /// rollover counter) are written at once, whatever this is.
    pub ha_refresh: std::time::Duration,
    /// Recording (the transmission log of every call): `None`, the default, records
    /// nothing and starts no writer thread.
    pub recording: Option<RecordingConfig>,
    /// The kernel fast path (docs/kernel-fast-path.md): [`KernelOffload::Off`] by default for
    /// an embedded engine (`mcvideo-relay serve` defaults to `auto`). Without the
    /// `kernel-offload` feature `auto` runs in userspace and `required` refuses to start.
    pub kernel_offload: KernelOffload,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            media_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_min: 40_000,
            port_max: 49_999,
            interfaces: Vec::new(),
            workers: 0,
            spread_above_busy_percent: 50,
            call: CallConfig::default(),
            latch_after_packets: 5,
            socket_buffer_bytes: 1 << 20,
            event_capacity: 65_536,
            policy: Arc::new(AllowAll),
            group: TcConfig::default(),
            ha_refresh: std::time::Duration::from_secs(1),
            recording: None,
            kernel_offload: KernelOffload::Off,
        }
    }
}

/// A named media interface: where legs bind, which ports, what the SDP advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaInterface {
    /// Its name (the API and ng's `direction` refer to it).
    pub name: String,
    /// The address media sockets bind to.
    pub ip: IpAddr,
    /// The address written into SDP instead (behind NAT); `None`: `ip`.
    pub advertised: Option<IpAddr>,
    /// Lowest port of its range.
    pub port_min: u16,
    /// Highest port of its range.
    pub port_max: u16,
}

impl EngineConfig {
    /// The interfaces in force: [`Self::interfaces`], or one named `default` on `media_ip`.
    pub fn media_interfaces(&self) -> Vec<MediaInterface> {
        if !self.interfaces.is_empty() {
            return self.interfaces.clone();
        }
        vec![MediaInterface {
            name: "default".into(),
            ip: self.media_ip,
            advertised: None,
            port_min: self.port_min,
            port_max: self.port_max,
        }]
    }
}

/// The state and counters of one call, as the API reports them.
#[derive(Debug, Clone)]
pub struct CallSummary {
    /// The call's ID.
    pub call_id: crate::ids::CallId,
    /// Push or pull.
    pub kind: CallKind,
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
    /// Media quality per stream and leg (empty until the call is established).
    pub quality: Vec<rules::StreamQuality>,
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
    /// Calls held and created, by kind (`video_push`, `video_pull`, `group`). `active_calls`
    /// and `calls_created` above count push and pull calls only, as they always did.
    pub by_kind: std::collections::BTreeMap<&'static str, KindTotals>,
    /// All group members' legs (in = from members, out = to members).
    pub group_members: LegSnapshot,
    /// RTP packets the kernel fast path forwarded (also counted in the legs' figures above).
    pub kernel_offload_packets: u64,
    /// Legs forwarded by the kernel fast path now.
    pub kernel_offload_legs: u64,
    /// Times a group leg stayed in userspace because a receiver's next hop was not in the
    /// neighbour table yet (tried again after 250 ms, the wait doubling up to 4 s while it
    /// fails; the relay's own sends resolve it meanwhile). One that keeps rising names a
    /// receiver whose next hop never answers.
    pub kernel_offload_neighbour_waits: u64,
}

/// Engine-wide counters by call kind (`video_push`, `video_pull`, `group`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindTotals {
    /// Calls of this kind held now.
    pub active: usize,
    /// Calls of this kind created since start.
    pub created: u64,
}

/// One member of a group call as the controlling server adds it: its MCVideo ID and the SDP
/// offer its client sent (one `m=video`, optionally `m=audio`, and the MCVideo
/// `m=application` transmission control channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberSpec {
    /// MCVideo ID.
    pub mcvideo_id: String,
    /// The member's SDP offer. The relay answers it ([`GroupMemberAnswer::sdp_answer`]).
    pub sdp_offer: String,
    /// The highest Transmission Priority it may use (0–255, higher is stronger).
    pub priority: u8,
    /// Never transmits: its Transmission Requests get Rejected #5.
    pub receive_only: bool,
    /// Key protecting its transmission control channel (SRTCP), if the controlling server has
    /// one.
    pub tc_key: Option<MasterKey>,
}

/// A group video call with its members (TS 23.281 §7.7.1.1: transmission control with several
/// transmitters, queueing, pre-emption and reception control).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateGroupCall {
    /// Call ID chosen by the controlling server (one namespace with push and pull calls);
    /// generated when `None`.
    pub call_id: Option<crate::ids::CallId>,
    /// MCVideo Group Identity.
    pub group_id: String,
    /// How media is protected: `end_to_end` (the group key, SRTP passed through) or `per_leg`
    /// (SDES per member, re-encrypted per receiver).
    pub media_security: MediaSecurity,
    /// Cx, members transmitting at once; `None`: [`EngineConfig::group`]'s (default 1).
    pub max_transmitters: Option<u8>,
    /// C9, streams one receiver takes at once; `None`: the configured default (4).
    pub max_streams_per_receiver: Option<u8>,
    /// Reception mode; `None`: the configured default (automatic).
    pub reception_mode: Option<ReceptionMode>,
    /// The members at creation (at least one).
    pub members: Vec<GroupMemberSpec>,
}

/// What the relay answers one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberAnswer {
    /// MCVideo ID.
    pub mcvideo_id: String,
    /// Its place in the call.
    pub slot: Slot,
    /// The SDP answer for the member: the relay's ports, and in per_leg mode the relay's own
    /// `a=crypto` key toward the member.
    pub sdp_answer: String,
}

/// A group call set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCallCreated {
    /// The call's ID.
    pub call_id: crate::ids::CallId,
    /// One answer per member, in the order given.
    pub members: Vec<GroupMemberAnswer>,
}

/// One member of a group call, as the API reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMemberSummary {
    /// MCVideo ID.
    pub mcvideo_id: String,
    /// Its slot.
    pub slot: Slot,
    /// Its priority.
    pub priority: u8,
    /// Receive only: it may not transmit.
    pub receive_only: bool,
    /// Send only: nothing is routed to it (its SDP offer receives on no stream).
    pub send_only: bool,
    /// Transmitting now.
    pub transmitting: bool,
    /// Its request is queued.
    pub queued: bool,
    /// MCVideo IDs of the transmitters it receives (its Active SSRC List).
    pub receiving: Vec<String>,
    /// Counters of its legs (in = from the member, out = to it).
    pub counters: LegSnapshot,
    /// Per stream of the group: the media quality of what it sent the relay, and of what it
    /// reported receiving (its last receiver report, where the relay can read RTCP).
    pub quality: Vec<(crate::sdp::MediaKind, rules::LegQuality)>,
}

/// One transmission of a group call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTransmissionSummary {
    /// The transmitter's MCVideo ID.
    pub mcvideo_id: String,
    /// Its slot.
    pub slot: Slot,
    /// Audio SSRC.
    pub audio_ssrc: Ssrc,
    /// Video SSRC.
    pub video_ssrc: Ssrc,
    /// Transmission Priority.
    pub priority: u8,
    /// 2 emergency, 1 imminent peril, 0 normal.
    pub class: u8,
    /// Whether its media has arrived.
    pub media_started: bool,
    /// Time since the grant.
    pub duration: Duration,
    /// MCVideo IDs of its receivers.
    pub receivers: Vec<String>,
}

/// One queued request of a group call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupQueueSummary {
    /// The requester's MCVideo ID.
    pub mcvideo_id: String,
    /// 1 = next.
    pub position: u8,
    /// Transmission Priority.
    pub priority: u8,
    /// 2 emergency, 1 imminent peril, 0 normal.
    pub class: u8,
}

/// The state and counters of one group call.
#[derive(Debug, Clone)]
pub struct GroupCallSummary {
    /// The call's ID.
    pub call_id: crate::ids::CallId,
    /// MCVideo Group Identity.
    pub group_id: String,
    /// Media security mode.
    pub media_security: MediaSecurity,
    /// Cx.
    pub max_transmitters: u8,
    /// C9.
    pub max_streams_per_receiver: u8,
    /// Reception mode.
    pub reception_mode: ReceptionMode,
    /// `established` or `released`.
    pub state: CallState,
    /// Why it was released.
    pub release_reason: Option<ReleaseReason>,
    /// Time since creation (until release).
    pub duration: Duration,
    /// The members.
    pub members: Vec<GroupMemberSummary>,
    /// The transmissions.
    pub transmissions: Vec<GroupTransmissionSummary>,
    /// The queue, next first.
    pub queue: Vec<GroupQueueSummary>,
    /// Transmission control counters.
    pub tc: TcStats,
}
