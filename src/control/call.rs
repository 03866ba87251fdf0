//! The one-to-one call procedure, sans-IO: video push (the seed, steps 1–11 and release; see
//! `docs/design.md` in the repository) and its mirror, video pull, in which the callee
//! transmits. Both run on the [`super::server::TransmissionControlServer`] group video calls run
//! on, as its private procedure.
//!
//! | seed step | here |
//! |---|---|
//! | 1 private call request with video push indication | [`CallTable::create_call`] with [`CreateCall`] |
//! | 2 caller may push, callee may receive a push | [`super::policy::AuthorizationPolicy`]; refusal = [`SetupError::NotAuthorized`] naming the party |
//! | 3 progress indication | [`CallEventKind::Progress`] |
//! | 4 media subset, commencement mode, designated UE | [`CallOffer`]: SDP for the callee, mode, `deliver_to` |
//! | 6 callee accepts | [`CallTable::accept_call`] with the callee's SDP answer (or [`CallTable::reject_call`]) |
//! | 7 established | [`CallAnswer`] (SDP for the caller), [`CallEventKind::Established`] |
//! | 9–10 Granted / Media Transmission Notification | the call's [`TransmissionControlServer`] |
//! | NOTE 2 release on completion | [`CallEventKind::TransmissionEnded`] then [`CallEventKind::Released`] |
//!
//! Relay ports come from a [`PortAllocator`] the I/O layer implements; randomness (SSRCs, call
//! IDs, per-leg SRTP keys) from an [`Entropy`] source. Neither the clock nor a socket is touched.
//!
//! Media offered to the callee are the caller's, less the kinds [`CallConfig`] does not offer;
//! a stream not offered goes to the callee with port 0 (RFC 3264 §8.2), so the callee's answer
//! lines up with the caller's offer and the caller's answer is the callee's, rewritten.

use super::arbiter::Arbiter;
use super::policy::AuthorizationPolicy;
use super::registry::{UeRegistry, MAX_ID_LEN};
use super::server::{MemberSetup, Procedure, ProcedureSnapshot, ServerIdentity, TransmissionState};
use super::server::{TcConfig, TcEvent, TcStats, TransmissionControlServer};
use super::snapshot::{
    CallSecrets, CallSnapshot, PendingKeysSnapshot, RestoreError, StreamSecrets, StreamSnapshot,
};
use super::timer::{Timer, TimerTable};
use super::{CallKind, CommencementMode, MediaSecurity, Party, ReleaseReason};
use crate::ids::{CallId, Ssrc};
use crate::keys::{MasterKey, SrtpSuite};
use crate::sdp::{MediaKind, MediaRewrite, Rewrite, SdpError, SessionDescription};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of the call procedure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallConfig {
    /// Transmission control timers and limits.
    pub tc: TcConfig,
    /// Offer the caller's audio to the callee (video and the control channel always are).
    pub offer_audio: bool,
    /// Offer media other than audio, video and the control channel.
    pub offer_other_media: bool,
    /// Commencement mode when neither the caller nor the callee's UE sets one.
    pub default_commencement_mode: CommencementMode,
    /// Refuse calls to users with no registered UE.
    pub require_registered_callee: bool,
    /// Release an offered call the callee has not answered after this long.
    pub offer_timeout: Duration,
    /// Calls at most at once.
    pub max_calls: usize,
}

impl Default for CallConfig {
    fn default() -> Self {
        CallConfig {
            tc: TcConfig::default(),
            offer_audio: true,
            offer_other_media: false,
            default_commencement_mode: CommencementMode::Manual,
            require_registered_callee: false,
            offer_timeout: Duration::from_secs(120),
            max_calls: 20_000,
        }
    }
}

/// A relay port pair handed out by a [`PortAllocator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct RelayPort {
    /// Where the relay receives (and sends) RTP for this stream.
    pub rtp: SocketAddr,
    /// Where it receives RTCP: `rtp` itself with rtcp-mux, else usually port + 1.
    pub rtcp: SocketAddr,
}

impl RelayPort {
    /// Whether RTP and RTCP share the port.
    pub fn muxed(&self) -> bool {
        self.rtp == self.rtcp
    }
}

/// Hands out relay ports. Implemented by the I/O layer (which binds sockets); tests use a
/// counter.
pub trait PortAllocator {
    /// A port (pair) for one stream of one leg; `rtcp_mux` asks for a single port. `None` when
    /// the pool is exhausted.
    fn allocate(&mut self, party: Party, kind: &MediaKind, rtcp_mux: bool) -> Option<RelayPort>;
    /// Returns a port to the pool.
    fn free(&mut self, port: RelayPort);
}

/// A source of random bytes (SSRCs, call IDs, SRTP keys). The engine uses the OS.
pub trait Entropy: Send {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

/// Deterministic entropy for tests and fuzzing (SplitMix64). **Not** for keys in production.
#[derive(Debug, Clone)]
pub struct SeededEntropy(pub u64);

impl Entropy for SeededEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let bytes = z.to_le_bytes();
            chunk.copy_from_slice(bytes.get(..chunk.len()).unwrap_or_default());
        }
    }
}

/// Seed step 1: the caller's private call request with the video push indication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateCall {
    /// Call ID chosen by the controlling server; generated when `None`.
    pub call_id: Option<CallId>,
    /// The caller's MCVideo ID.
    pub caller_id: String,
    /// The caller's SDP offer.
    pub caller_sdp: String,
    /// The callee's MCVideo ID.
    pub callee_id: String,
    /// The video push indication: the caller transmits.
    pub video_push: bool,
    /// The video pull indication (TS 23.281 §7.3.2.3): the callee transmits to the caller.
    /// Exactly one of `video_push` and `video_pull` is `true`.
    pub video_pull: bool,
    /// The caller's requested commencement mode.
    pub commencement_mode: Option<CommencementMode>,
    /// How media is protected.
    pub media_security: MediaSecurity,
    /// Key protecting the caller's transmission control channel (SRTCP), if any.
    pub caller_tc_key: Option<MasterKey>,
    /// The media interface the callee's leg goes on (an engine's named interfaces, e.g. the
    /// IPv6 core while the caller is on IPv4 access); `None`: the caller's.
    pub callee_interface: Option<String>,
    /// The media interface the caller's leg goes on (by name; it must be of the address family
    /// of the caller's SDP, e.g. one of two IPv4 networks); `None`: the first interface of
    /// that family.
    pub caller_interface: Option<String>,
}

/// Seed step 6: the callee's acceptance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerCall {
    /// The callee's SDP answer to the offer it was given.
    pub callee_sdp: String,
    /// Key protecting the callee's transmission control channel (SRTCP), if any.
    pub callee_tc_key: Option<MasterKey>,
}

/// Seed step 4: what the controlling server sends on to the callee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOffer {
    /// The call's ID.
    pub call_id: CallId,
    /// The SDP offer for the callee (relay addresses, the offered media subset).
    pub sdp_offer: String,
    /// The chosen commencement mode.
    pub commencement_mode: CommencementMode,
    /// The callee's UE(s) to deliver the request to (empty when the registry knows none).
    pub deliver_to: Vec<String>,
}

/// Seed step 7: what the controlling server sends back to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallAnswer {
    /// The call's ID.
    pub call_id: CallId,
    /// The SDP answer for the caller.
    pub sdp_answer: String,
}

/// Why a call could not be set up or changed. Every refusal names the party and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetupError {
    /// The request has neither the video push nor the video pull indication (or both).
    NotVideoPush,
    /// A field of the request is unusable.
    BadRequest(String),
    /// A party's SDP is malformed or unusable.
    BadSdp {
        /// Whose SDP.
        party: Party,
        /// What is wrong, naming the line.
        error: SdpError,
    },
    /// The media offered or answered cannot carry a video push.
    NoAcceptableMedia {
        /// Whose SDP.
        party: Party,
        /// Why.
        reason: String,
    },
    /// The policy refused a party.
    NotAuthorized {
        /// Which party.
        party: Party,
        /// Its MCVideo ID.
        user: String,
        /// The policy's reason.
        reason: String,
    },
    /// The callee has no registered UE and the configuration requires one.
    CalleeNotRegistered(String),
    /// No relay ports are left.
    NoPortsAvailable,
    /// The engine already carries its maximum number of calls.
    TooManyCalls,
    /// The engine is draining: it takes no new calls.
    Draining,
    /// No call has this ID.
    UnknownCall(String),
    /// A call with this ID exists already.
    DuplicateCallId(String),
    /// The call is not in a state that allows the operation.
    WrongState {
        /// The call.
        call_id: String,
        /// Its state.
        state: CallState,
        /// The operation.
        operation: &'static str,
    },
    /// A group member's SDP offer is malformed or unusable.
    MemberSdp {
        /// The member's MCVideo ID.
        member: String,
        /// What is wrong, naming the line.
        error: SdpError,
    },
    /// A group member's media cannot be carried (no video stream, no address the relay can
    /// reach, no usable key).
    MemberMedia {
        /// The member's MCVideo ID.
        member: String,
        /// Why, naming the `m=` line where there is one.
        reason: String,
    },
    /// A group member's part of the request is unusable (it appears twice, it is in the call
    /// already, its transmission control key does not fit).
    MemberRequest {
        /// The member's MCVideo ID.
        member: String,
        /// Why.
        reason: String,
    },
    /// The worker that runs the call did not answer in time (it is overloaded or stuck): the
    /// outcome of the operation is unknown. Ask again (`GET` the call) before retrying.
    WorkerTimeout(String),
    /// A bug in the relay while handling the operation: the call it touched was released
    /// with reason `internal_error`. The text says which call and what was being done.
    Internal(String),
}

impl SetupError {
    /// snake_case code for API errors.
    pub const fn code(&self) -> &'static str {
        match self {
            SetupError::NotVideoPush => "not_video_push",
            SetupError::BadRequest(_) => "bad_request",
            SetupError::BadSdp { .. } => "bad_sdp",
            SetupError::NoAcceptableMedia { .. } => "no_acceptable_media",
            SetupError::NotAuthorized { .. } => "not_authorized",
            SetupError::CalleeNotRegistered(_) => "callee_not_registered",
            SetupError::NoPortsAvailable => "no_ports_available",
            SetupError::TooManyCalls => "too_many_calls",
            SetupError::Draining => "draining",
            SetupError::UnknownCall(_) => "unknown_call",
            SetupError::DuplicateCallId(_) => "duplicate_call_id",
            SetupError::WrongState { .. } => "wrong_state",
            SetupError::MemberSdp { .. } => "bad_sdp",
            SetupError::MemberMedia { .. } => "no_acceptable_media",
            SetupError::MemberRequest { .. } => "bad_request",
            SetupError::WorkerTimeout(_) => "worker_timeout",
            SetupError::Internal(_) => "internal_error",
        }
    }

    /// The group member the error is about (its MCVideo ID), for member-specific errors.
    pub fn member(&self) -> Option<&str> {
        match self {
            SetupError::MemberSdp { member, .. }
            | SetupError::MemberMedia { member, .. }
            | SetupError::MemberRequest { member, .. } => Some(member),
            _ => None,
        }
    }
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SetupError::NotVideoPush => f.write_str(
                "exactly one of video_push and video_pull must be true: this relay carries one-to-one video push and video pull calls",
            ),
            SetupError::BadRequest(m) => f.write_str(m),
            SetupError::BadSdp { party, error } => write!(f, "{party}'s {error}"),
            SetupError::NoAcceptableMedia { party, reason } => write!(f, "{party}'s SDP: {reason}"),
            SetupError::NotAuthorized {
                party,
                user,
                reason,
            } => {
                write!(f, "{party} {user} is not authorized: {reason}")
            }
            SetupError::CalleeNotRegistered(u) => write!(f, "callee {u} has no registered UE"),
            SetupError::NoPortsAvailable => {
                f.write_str("no relay ports left in the configured range")
            }
            SetupError::TooManyCalls => {
                f.write_str("the relay carries its maximum number of calls")
            }
            SetupError::Draining => f.write_str("the relay is draining and takes no new calls"),
            SetupError::UnknownCall(id) => write!(f, "no call with id {id}"),
            SetupError::DuplicateCallId(id) => write!(f, "a call with id {id} exists already"),
            SetupError::WrongState {
                call_id,
                state,
                operation,
            } => {
                write!(
                    f,
                    "call {call_id} is {}: cannot {operation}",
                    state.as_str()
                )
            }
            SetupError::MemberSdp { member, error } => write!(f, "member {member}'s {error}"),
            SetupError::MemberMedia { member, reason }
            | SetupError::MemberRequest { member, reason } => {
                write!(f, "member {member}: {reason}")
            }
            SetupError::WorkerTimeout(what) => write!(
                f,
                "the relay's worker did not answer in time ({what}): the outcome is unknown"
            ),
            SetupError::Internal(what) => write!(f, "internal error in the relay: {what}"),
        }
    }
}

impl std::error::Error for SetupError {}

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    any(feature = "ha", feature = "sidecar"),
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum CallState {
    /// Offered to the callee, not yet answered.
    Offered,
    /// Answered; media and transmission control live.
    Established,
    /// Released; terminal.
    Released,
}

impl CallState {
    /// Lower-case label.
    pub const fn as_str(self) -> &'static str {
        match self {
            CallState::Offered => "offered",
            CallState::Established => "established",
            CallState::Released => "released",
        }
    }
}

/// What happened on a call.
///
/// Push and pull calls report the first six kinds; group calls (`relay::Engine`'s
/// `create_group_call`) report the member-named ones and `Released`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEventKind {
    /// Seed step 3: the request is on its way to the callee.
    Progress,
    /// Seed step 7: the callee accepted.
    Established,
    /// Seed step 9: the caller holds the grant.
    TransmissionGranted {
        /// Audio SSRC of the transmission.
        audio_ssrc: Ssrc,
        /// Video SSRC of the transmission.
        video_ssrc: Ssrc,
    },
    /// The caller's first media packet arrived.
    MediaStarted,
    /// The transmission is over.
    TransmissionEnded {
        /// Why.
        reason: ReleaseReason,
    },
    /// The call is released; the signalling server should end both SIP dialogs.
    Released {
        /// Why.
        reason: ReleaseReason,
    },
    /// Group call: a member was granted a transmission (`transmission.granted`).
    MemberGranted {
        /// The transmitter's MCVideo ID.
        member: Arc<str>,
        /// Audio SSRC of the transmission.
        audio_ssrc: Ssrc,
        /// Video SSRC of the transmission.
        video_ssrc: Ssrc,
    },
    /// Group call: a member's request was queued (`transmission.queued`).
    TransmissionQueued {
        /// The requester's MCVideo ID.
        member: Arc<str>,
        /// Its queue position (1 = next).
        position: u8,
    },
    /// Group call: a transmission was pre-empted by a stronger request
    /// (`transmission.preempted`, Revoked #4).
    TransmissionPreempted {
        /// The transmitter that lost its grant.
        member: Arc<str>,
        /// The requester that took it.
        by: Arc<str>,
    },
    /// Group call: a member's transmission ended (`transmission.ended`).
    MemberTransmissionEnded {
        /// The transmitter's MCVideo ID.
        member: Arc<str>,
        /// Why.
        reason: super::server::EndReason,
    },
    /// Group call: nobody transmits; Transmission Idle was sent (`transmission.idle`).
    TransmissionIdle,
    /// Group call: a member joined (`participant.joined`).
    ParticipantJoined {
        /// Its MCVideo ID.
        member: Arc<str>,
    },
    /// Group call: a member left (`participant.left`).
    ParticipantLeft {
        /// Its MCVideo ID.
        member: Arc<str>,
    },
    /// High availability: this relay took the call over from a relay that died
    /// (`call.adopted`); it forwards and answers for the call from now on.
    Adopted {
        /// The instance that owned the call.
        from: Arc<str>,
    },
}

impl CallEventKind {
    /// Event name on the API (`call.progress`, `transmission.granted`, ...).
    pub const fn name(&self) -> &'static str {
        match self {
            CallEventKind::Progress => "call.progress",
            CallEventKind::Established => "call.established",
            CallEventKind::TransmissionGranted { .. } => "transmission.granted",
            CallEventKind::MediaStarted => "transmission.media_started",
            CallEventKind::TransmissionEnded { .. } => "transmission.ended",
            CallEventKind::Released { .. } => "call.released",
            CallEventKind::MemberGranted { .. } => "transmission.granted",
            CallEventKind::TransmissionQueued { .. } => "transmission.queued",
            CallEventKind::TransmissionPreempted { .. } => "transmission.preempted",
            CallEventKind::MemberTransmissionEnded { .. } => "transmission.ended",
            CallEventKind::TransmissionIdle => "transmission.idle",
            CallEventKind::ParticipantJoined { .. } => "participant.joined",
            CallEventKind::ParticipantLeft { .. } => "participant.left",
            CallEventKind::Adopted { .. } => "call.adopted",
        }
    }
}

/// An event and the call it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    /// The call.
    pub call_id: CallId,
    /// What happened.
    pub kind: CallEventKind,
}

/// SRTP keys of one party's leg in per_leg mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegKeys {
    /// The key the party sends with (the relay decrypts with it).
    pub inbound: MasterKey,
    /// The key the relay sends to the party with (the relay generated it).
    pub outbound: MasterKey,
}

/// One media stream (one `m=` line of the caller's offer) and both of its legs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaStream {
    /// Index of the `m=` line.
    pub index: usize,
    /// Media type.
    pub kind: MediaKind,
    /// Transport protocol of the caller's `m=` line (`RTP/AVP`, `RTP/SAVP`, `udp`, ...).
    pub proto: String,
    /// Whether the stream was offered to the callee (else it went with port 0).
    pub offered: bool,
    /// The relay's port per party (index with [`Party::index`]).
    pub relay: [Option<RelayPort>; 2],
    /// Where each party receives RTP, from its SDP.
    pub remote_rtp: [Option<SocketAddr>; 2],
    /// Where each party receives RTCP, from its SDP.
    pub remote_rtcp: [Option<SocketAddr>; 2],
    /// SSRCs each party announced (`a=ssrc`).
    pub announced_ssrcs: [Vec<u32>; 2],
    /// Per-leg SRTP keys (per_leg mode, audio and video), per party; set when the call is
    /// established.
    pub keys: [Option<LegKeys>; 2],
    /// RTP clock rate from the caller's `a=rtpmap` for the stream's first format.
    pub clock_rate: Option<u32>,
    pending_keys: Option<PendingKeys>,
}

/// Keys known while the call is offered (per_leg mode).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingKeys {
    tag: u32,
    caller_inbound: MasterKey,
    callee_outbound: MasterKey,
}

impl MediaStream {
    /// Whether both legs are usable (offered, and accepted by the callee once answered).
    pub fn active(&self) -> bool {
        self.offered && self.relay.iter().all(Option::is_some)
    }
}

/// Who a one-to-one call is between and which SSRCs its transmission uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identities {
    /// The caller's MCVideo ID.
    pub caller_id: String,
    /// The callee's MCVideo ID.
    pub callee_id: String,
    /// Audio SSRC of the transmitting party (Granted, the SSRC filter).
    pub audio_ssrc: Ssrc,
    /// Video SSRC of the transmitting party.
    pub video_ssrc: Ssrc,
    /// The server's own SSRC on the control channels.
    pub server_ssrc: Ssrc,
}

/// Times and counters of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTimes {
    /// When the call was created.
    pub created: Instant,
    /// When the callee accepted.
    pub established: Option<Instant>,
    /// When it was released.
    pub released: Option<Instant>,
}

/// One video push call. Drive it with the `handle_*` methods and drain it with the `poll_*`
/// methods in the order of the [module docs](super).
#[derive(Debug)]
pub struct Call {
    id: CallId,
    kind: CallKind,
    caller_id: String,
    callee_id: String,
    state: CallState,
    commencement_mode: CommencementMode,
    media_security: MediaSecurity,
    deliver_to: Vec<String>,
    streams: Vec<MediaStream>,
    tc_keys: [Option<MasterKey>; 2],
    ids: Identities,
    server: TransmissionControlServer,
    timers: TimerTable,
    events: VecDeque<CallEvent>,
    release_reason: Option<ReleaseReason>,
    times: CallTimes,
    /// The SDPs handed out: the offer for the callee, the answer for the caller.
    sdp: [Option<Arc<str>>; 2],
}

impl Call {
    /// The call ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The call ID, typed.
    pub fn call_id(&self) -> &CallId {
        &self.id
    }

    /// Push or pull: which party transmits.
    pub fn kind(&self) -> CallKind {
        self.kind
    }

    /// The caller's MCVideo ID.
    pub fn caller_id(&self) -> &str {
        &self.caller_id
    }

    /// The callee's MCVideo ID.
    pub fn callee_id(&self) -> &str {
        &self.callee_id
    }

    /// The call's state.
    pub fn state(&self) -> CallState {
        self.state
    }

    /// The chosen commencement mode.
    pub fn commencement_mode(&self) -> CommencementMode {
        self.commencement_mode
    }

    /// The media security mode.
    pub fn media_security(&self) -> MediaSecurity {
        self.media_security
    }

    /// The UE(s) the call was delivered to.
    pub fn deliver_to(&self) -> &[String] {
        &self.deliver_to
    }

    /// The media streams, in the order of the caller's offer.
    pub fn streams(&self) -> &[MediaStream] {
        &self.streams
    }

    /// The SRTCP key of `party`'s transmission control channel, if the controlling server gave
    /// one.
    pub fn tc_key(&self, party: Party) -> Option<&MasterKey> {
        self.tc_keys.get(party.index()).and_then(Option::as_ref)
    }

    /// The arbiter the forwarding side checks.
    pub fn arbiter(&self) -> &Arc<Arbiter> {
        self.server.arbiter()
    }

    /// The transmission control server (read-only): the same server a group call runs, with
    /// the caller in slot 0 and the callee in slot 1 ([`Party::slot`]).
    pub fn server(&self) -> &TransmissionControlServer {
        &self.server
    }

    /// The parties and the transmission's SSRCs.
    pub fn identities(&self) -> &Identities {
        &self.ids
    }

    /// Where the transmission stands.
    pub fn transmission_state(&self) -> TransmissionState {
        match self.state {
            CallState::Released => TransmissionState::Released,
            _ => self.server.transmission_state(),
        }
    }

    /// Transmission control counters.
    pub fn tc_stats(&self) -> &TcStats {
        self.server.stats()
    }

    /// Creation, establishment and release times.
    pub fn times(&self) -> CallTimes {
        self.times
    }

    /// Why the call was released.
    pub fn release_reason(&self) -> Option<ReleaseReason> {
        self.release_reason
    }

    /// The SDP the relay handed out for `party`: the offer for the callee, the answer for the
    /// caller (once the call is established).
    pub fn sdp_for(&self, party: Party) -> Option<&str> {
        self.sdp
            .get(party.peer().index())
            .and_then(Option::as_deref)
    }

    /// The call's state at `now` for a relay that takes it over, and apart from it the key
    /// material and SDPs (to be sealed). Take it after draining `poll_transmit` and
    /// `poll_event` (queued messages and events are not in it). See
    /// [`crate::control::snapshot`].
    pub fn snapshot(&self, now: Instant) -> (CallSnapshot, CallSecrets) {
        let streams = self
            .streams
            .iter()
            .map(|s| StreamSnapshot {
                index: s.index,
                kind: s.kind.clone(),
                proto: s.proto.clone(),
                offered: s.offered,
                relay: s.relay,
                remote_rtp: s.remote_rtp,
                remote_rtcp: s.remote_rtcp,
                announced_ssrcs: s.announced_ssrcs.clone(),
                clock_rate: s.clock_rate,
            })
            .collect();
        let secrets = CallSecrets {
            tc_keys: self.tc_keys.clone(),
            sdp: self.sdp.clone().map(|s| s.map(|s| s.to_string())),
            streams: self
                .streams
                .iter()
                .filter(|s| s.keys.iter().any(Option::is_some) || s.pending_keys.is_some())
                .map(|s| StreamSecrets {
                    index: s.index,
                    keys: s.keys.clone(),
                    pending: s.pending_keys.as_ref().map(|p| PendingKeysSnapshot {
                        tag: p.tag,
                        caller_inbound: p.caller_inbound.clone(),
                        callee_outbound: p.callee_outbound.clone(),
                    }),
                })
                .collect(),
        };
        let ago = |t: Instant| now.saturating_duration_since(t).as_millis() as u64;
        let snap = CallSnapshot {
            call_id: self.id.to_string(),
            kind: self.kind,
            caller_id: self.caller_id.clone(),
            callee_id: self.callee_id.clone(),
            state: self.state,
            commencement_mode: self.commencement_mode,
            media_security: self.media_security,
            deliver_to: self.deliver_to.clone(),
            streams,
            tc: self.server.snapshot(now),
            timers: self.timers.remaining_ms(now),
            release_reason: self.release_reason,
            created_ms_ago: ago(self.times.created),
            established_ms_ago: self.times.established.map(ago),
        };
        (snap, secrets)
    }

    /// The call of [`snapshot`](Self::snapshot) `snap` with its `secrets`, as of `now`: every
    /// timer fires as long after `now` as it had left at the snapshot, and the arbiter is in
    /// the snapshot's state (a granted caller's media passes at once). When the snapshot was
    /// taken a while ago (read back from a store), pass the `now` the snapshot was taken at on
    /// this host's clock (`now` less the record's age). No event is queued.
    pub fn restore(
        snap: CallSnapshot,
        secrets: CallSecrets,
        now: Instant,
    ) -> Result<Call, RestoreError> {
        if !CallId::is_valid(&snap.call_id) {
            return Err(RestoreError::Invalid("call ID"));
        }
        if !valid_user_id(&snap.caller_id) || !valid_user_id(&snap.callee_id) {
            return Err(RestoreError::Invalid("MCVideo ID"));
        }
        let ProcedureSnapshot::Private {
            transmitter,
            audio_ssrc,
            video_ssrc,
        } = snap.tc.procedure
        else {
            return Err(RestoreError::Invalid("not a private call's server"));
        };
        if usize::from(transmitter) != snap.kind.transmitter().slot().index() {
            return Err(RestoreError::Invalid(
                "transmitter does not match the call kind",
            ));
        }
        let ids = Identities {
            caller_id: snap.caller_id.clone(),
            callee_id: snap.callee_id.clone(),
            audio_ssrc: Ssrc(audio_ssrc),
            video_ssrc: Ssrc(video_ssrc),
            server_ssrc: Ssrc(snap.tc.server_ssrc),
        };
        let mut streams: Vec<MediaStream> = snap
            .streams
            .into_iter()
            .map(|s| MediaStream {
                index: s.index,
                kind: s.kind,
                proto: s.proto,
                offered: s.offered,
                relay: s.relay,
                remote_rtp: s.remote_rtp,
                remote_rtcp: s.remote_rtcp,
                announced_ssrcs: s.announced_ssrcs,
                keys: [None, None],
                clock_rate: s.clock_rate,
                pending_keys: None,
            })
            .collect();
        for k in secrets.streams {
            let s =
                streams
                    .iter_mut()
                    .find(|s| s.index == k.index)
                    .ok_or(RestoreError::Invalid(
                        "keys of a stream the call does not have",
                    ))?;
            s.keys = k.keys;
            s.pending_keys = k.pending.map(|p| PendingKeys {
                tag: p.tag,
                caller_inbound: p.caller_inbound,
                callee_outbound: p.callee_outbound,
            });
        }
        if snap.media_security == MediaSecurity::PerLeg
            && snap.state == CallState::Established
            && streams
                .iter()
                .any(|s| s.active() && is_rtp_media(&s.kind) && s.keys.iter().any(Option::is_none))
        {
            return Err(RestoreError::Invalid("a per_leg stream without its keys"));
        }
        let before = |ms: u64| super::timer::ms_before(now, ms);
        Ok(Call {
            id: snap.call_id.into(),
            kind: snap.kind,
            caller_id: snap.caller_id,
            callee_id: snap.callee_id,
            state: snap.state,
            commencement_mode: snap.commencement_mode,
            media_security: snap.media_security,
            deliver_to: snap.deliver_to,
            streams,
            tc_keys: secrets.tc_keys,
            ids,
            server: TransmissionControlServer::restore(&snap.tc, now, None),
            timers: TimerTable::from_remaining_ms(now, &snap.timers),
            events: VecDeque::new(),
            release_reason: snap.release_reason,
            times: CallTimes {
                created: before(snap.created_ms_ago),
                established: snap.established_ms_ago.map(before),
                released: None,
            },
            sdp: secrets.sdp.map(|s| s.map(Arc::from)),
        })
    }

    /// Queues an event on the call (e.g. [`CallEventKind::Adopted`] by the engine that
    /// restored it).
    pub fn push_event(&mut self, kind: CallEventKind) {
        self.push(kind);
    }

    /// Every relay port the call holds (to give back to the pool once it is released).
    pub fn relay_ports(&self) -> impl Iterator<Item = RelayPort> + '_ {
        self.streams
            .iter()
            .flat_map(|s| s.relay.iter().flatten().copied())
    }

    /// Seed steps 6–10: the callee accepted with `answer`. Builds the caller's answer,
    /// establishes the call and grants the caller; `entropy` makes the relay's per_leg key
    /// toward the caller. On error the call stays offered.
    pub fn accept(
        &mut self,
        now: Instant,
        answer: AnswerCall,
        entropy: &mut dyn Entropy,
    ) -> Result<CallAnswer, SetupError> {
        let call_id: &str = &self.id.clone();
        if self.state != CallState::Offered {
            return Err(SetupError::WrongState {
                call_id: call_id.to_owned(),
                state: self.state,
                operation: "answer",
            });
        }
        let fresh: Vec<(usize, MasterKey)> = self
            .streams
            .iter()
            .filter_map(|s| {
                let k = s.pending_keys.as_ref()?;
                Some((s.index, fresh_key(entropy, k.caller_inbound.suite)))
            })
            .collect();
        let call = self;
        let sdp =
            SessionDescription::parse(&answer.callee_sdp).map_err(|error| SetupError::BadSdp {
                party: Party::Callee,
                error,
            })?;
        let bad = |reason: String| SetupError::NoAcceptableMedia {
            party: Party::Callee,
            reason,
        };
        if sdp.media().len() != call.streams.len() {
            return Err(SetupError::BadSdp {
                party: Party::Callee,
                error: SdpError {
                    line: 0,
                    content: format!(
                        "{} media sections, the offer had {}",
                        sdp.media().len(),
                        call.streams.len()
                    ),
                    reason: "an answer must have one m= line per offered m= line (RFC 3264 §6)",
                },
            });
        }
        let mut streams = call.streams.clone();
        let mut rewrites = Vec::with_capacity(streams.len());
        for (s, m) in streams.iter_mut().zip(sdp.media()) {
            if m.kind != s.kind {
                return Err(bad(format!(
                    "m= line {} answers a different media type than was offered",
                    m.line
                )));
            }
            let accepted = s.offered && m.port != 0;
            if !accepted {
                // Callee rejected it (or it was never offered): release the callee leg's port
                // later with the call; nothing flows on it.
                if s.kind == MediaKind::Video {
                    return Err(bad(format!(
                        "m= line {}: the callee rejected the video stream",
                        m.line
                    )));
                }
                if s.kind != MediaKind::Control {
                    rewrites.push(MediaRewrite::Reject);
                    s.offered = false;
                    continue;
                }
            }
            if accepted && m.rtp_addr().is_none() {
                return Err(bad(format!(
                    "m= line {} has no usable address to send to",
                    m.line
                )));
            }
            if let (true, Some(r), Some(a)) =
                (accepted, s.relay[Party::Callee.index()], m.rtp_addr())
            {
                if r.rtp.is_ipv4() != a.is_ipv4() {
                    return Err(bad(format!(
                        "m= line {}: the callee's address is {} but its leg was offered on an {} interface of the relay (name the callee's interface when creating the call)",
                        m.line,
                        if a.is_ipv4() { "IPv4" } else { "IPv6" },
                        if r.rtp.is_ipv4() { "IPv4" } else { "IPv6" }
                    )));
                }
            }
            s.remote_rtp[Party::Callee.index()] = m.rtp_addr();
            s.remote_rtcp[Party::Callee.index()] = m.rtcp_addr();
            s.announced_ssrcs[Party::Callee.index()] = m.ssrcs.clone();
            let mut crypto = None;
            if let Some(p) = s.pending_keys.take() {
                let suite = p.caller_inbound.suite;
                let Some(c) = m.crypto.iter().find(|c| c.suite == suite.name()) else {
                    return Err(bad(format!(
                        "m= line {}: per_leg mode needs an a=crypto line with {} in the answer",
                        m.line,
                        suite.name()
                    )));
                };
                let callee_inbound = MasterKey::from_base64(suite, &c.key_b64)
                    .map_err(|e| bad(format!("m= line {}: a=crypto: {e}", m.line)))?;
                let caller_outbound = fresh
                    .iter()
                    .find(|(i, _)| *i == s.index)
                    .map(|(_, k)| k.clone())
                    .ok_or_else(|| bad("internal: no key prepared".to_owned()))?;
                crypto = Some(vec![caller_outbound.sdes_attribute(p.tag)]);
                s.keys = [
                    Some(LegKeys {
                        inbound: p.caller_inbound,
                        outbound: caller_outbound,
                    }),
                    Some(LegKeys {
                        inbound: callee_inbound,
                        outbound: p.callee_outbound,
                    }),
                ];
            }
            match s.relay[Party::Caller.index()] {
                Some(relay) => rewrites.push(MediaRewrite::Keep {
                    port: relay.rtp.port(),
                    rtcp_port: (!relay.muxed()).then(|| relay.rtcp.port()),
                    crypto,
                }),
                None => rewrites.push(MediaRewrite::Reject),
            }
        }
        let caller_ip = streams
            .iter()
            .find_map(|s| s.relay[Party::Caller.index()])
            .map(|p| p.rtp.ip())
            .ok_or_else(|| bad("no stream is usable".to_owned()))?;
        let sdp_answer = sdp
            .rewrite(&Rewrite {
                connection: caller_ip,
                media: rewrites,
            })
            .map_err(|error| SetupError::BadSdp {
                party: Party::Callee,
                error,
            })?;
        let callee_control = streams
            .iter()
            .zip(sdp.media())
            .any(|(s, m)| s.kind == MediaKind::Control && s.offered && m.port != 0);
        let caller_control = streams
            .iter()
            .any(|s| s.kind == MediaKind::Control && s.offered && s.relay[0].is_some());
        call.streams = streams;
        call.sdp[1] = Some(sdp_answer.as_str().into());
        call.tc_keys[Party::Callee.index()] = answer.callee_tc_key;
        call.server
            .set_control(Party::Caller.slot(), caller_control);
        call.server
            .set_control(Party::Callee.slot(), callee_control);
        call.state = CallState::Established;
        call.times.established = Some(now);
        call.timers.stop(Timer::OfferTimeout);
        call.push(CallEventKind::Established);
        call.server.start(now);
        call.sync(now);
        Ok(CallAnswer {
            call_id: call_id.into(),
            sdp_answer,
        })
    }

    /// The callee declined (while offered): the call is released with reason `rejected`.
    pub fn reject(&mut self, now: Instant) -> Result<(), SetupError> {
        if self.state != CallState::Offered {
            return Err(SetupError::WrongState {
                call_id: self.id.to_string(),
                state: self.state,
                operation: "reject",
            });
        }
        self.release(now, ReleaseReason::Rejected);
        Ok(())
    }

    /// A datagram arrived on `from`'s transmission control channel (SRTCP already removed).
    pub fn handle_control(&mut self, now: Instant, from: Party, datagram: &[u8]) {
        if self.state != CallState::Established {
            return;
        }
        self.server.handle_datagram(now, from.slot(), datagram);
        self.sync(now);
    }

    /// `packets` RTP packets arrived from `from`.
    pub fn handle_media(&mut self, now: Instant, from: Party, packets: u32) {
        if self.state != CallState::Established {
            return;
        }
        self.server.handle_media(now, from.slot(), packets);
        self.sync(now);
    }

    /// An RTCP BYE arrived from `from`.
    pub fn handle_rtcp_bye(&mut self, now: Instant, from: Party) {
        if self.state != CallState::Established {
            return;
        }
        self.server.handle_rtcp_bye(now, from.slot());
        self.sync(now);
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.timers.pop_expired(now) {
            if t == Timer::OfferTimeout && self.state == CallState::Offered {
                self.release(now, ReleaseReason::NoAnswer);
            }
        }
        if self.state == CallState::Established {
            self.server.handle_timeout(now);
            self.sync(now);
        }
    }

    /// Releases the call (idempotent). Events follow: `TransmissionEnded` if a transmission was
    /// under way, then `Released`.
    pub fn release(&mut self, now: Instant, reason: ReleaseReason) {
        if self.state == CallState::Released {
            return;
        }
        self.server.release(reason);
        self.sync(now);
        self.finish_release(now, reason);
    }

    fn finish_release(&mut self, now: Instant, reason: ReleaseReason) {
        if self.state == CallState::Released {
            return;
        }
        self.server.arbiter().release();
        self.state = CallState::Released;
        self.release_reason = Some(reason);
        self.times.released = Some(now);
        self.timers.stop_all();
        self.push(CallEventKind::Released { reason });
    }

    /// Moves server events into call events and applies their consequences.
    fn sync(&mut self, now: Instant) {
        while let Some(ev) = self.server.poll_event() {
            match ev {
                TcEvent::Granted {
                    audio_ssrc,
                    video_ssrc,
                    ..
                } => self.push(CallEventKind::TransmissionGranted {
                    audio_ssrc,
                    video_ssrc,
                }),
                TcEvent::MediaStarted { .. } => self.push(CallEventKind::MediaStarted),
                // The transmission's end is the call's: reported with the release reason.
                TcEvent::Released { reason } => {
                    if self.state == CallState::Established {
                        self.push(CallEventKind::TransmissionEnded { reason });
                    }
                    self.finish_release(now, reason);
                }
                _ => {}
            }
        }
    }

    fn push(&mut self, kind: CallEventKind) {
        self.events.push_back(CallEvent {
            call_id: self.id.clone(),
            kind,
        });
    }

    /// The next transmission control message: written into `buf`; returns its destination.
    #[must_use]
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Party> {
        while let Some(slot) = self.server.poll_transmit(buf) {
            if let Some(party) = Party::of_slot(slot) {
                return Some(party);
            }
        }
        None
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.timers.next_timeout(), self.server.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The calls of one engine, with the registry, the policy and the SSRCs in use.
#[derive(Debug)]
pub struct CallTable {
    config: CallConfig,
    policy: Arc<dyn AuthorizationPolicy>,
    registry: UeRegistry,
    entropy: EntropyBox,
    calls: HashMap<CallId, Call>,
    /// IDs of calls created here but run elsewhere ([`CallTable::create_detached`]).
    detached: std::collections::HashSet<CallId>,
    ssrcs: HashMap<u32, u32>,
}

struct EntropyBox(Box<dyn Entropy>);

impl core::fmt::Debug for EntropyBox {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Entropy")
    }
}

/// Longest call ID accepted.
pub const MAX_CALL_ID_LEN: usize = CallId::MAX_LEN;

fn valid_call_id(id: &str) -> bool {
    CallId::is_valid(id)
}

fn valid_user_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control)
}

/// The supported `a=crypto` line of a stream, if any: (tag, suite).
fn pick_crypto(m: &crate::sdp::Media) -> Option<(u32, SrtpSuite, &str)> {
    m.crypto
        .iter()
        .find_map(|c| SrtpSuite::from_name(&c.suite).map(|s| (c.tag, s, c.key_b64.as_str())))
}

/// A fresh SRTP master key (and salt) for `suite`.
fn fresh_key(entropy: &mut dyn Entropy, suite: SrtpSuite) -> MasterKey {
    let mut material = vec![0u8; suite.key_len() + suite.salt_len()];
    entropy.fill(&mut material);
    MasterKey { suite, material }
}

fn is_rtp_media(kind: &MediaKind) -> bool {
    matches!(kind, MediaKind::Audio | MediaKind::Video)
}

/// The transmission control server of a one-to-one call: the private procedure, the caller in
/// slot 0 and the callee in slot 1, the kind's transmitter granted at acceptance with `ids`'
/// SSRCs. The callee's control channel is known at the answer ([`TransmissionControlServer::set_control`]).
fn private_server(
    cfg: &TcConfig,
    kind: CallKind,
    call_id: &str,
    ids: &Identities,
    caller_control: bool,
) -> TransmissionControlServer {
    let transmitter = kind.transmitter();
    let member = |party: Party, user_id: &str, control: bool| MemberSetup {
        user_id: user_id.to_owned(),
        receive_only: party != transmitter,
        control,
        ..MemberSetup::default()
    };
    TransmissionControlServer::private(
        cfg.clone(),
        Procedure::Private {
            transmitter: transmitter.slot(),
            audio_ssrc: ids.audio_ssrc,
            video_ssrc: ids.video_ssrc,
        },
        ServerIdentity {
            call_id: call_id.to_owned(),
            server_ssrc: ids.server_ssrc,
        },
        Arc::new(Arbiter::with_members(2)),
        [
            member(Party::Caller, &ids.caller_id, caller_control),
            member(Party::Callee, &ids.callee_id, false),
        ],
    )
}

impl CallTable {
    /// An empty table.
    pub fn new(
        config: CallConfig,
        policy: Arc<dyn AuthorizationPolicy>,
        entropy: Box<dyn Entropy>,
    ) -> Self {
        CallTable {
            config,
            policy,
            registry: UeRegistry::default(),
            entropy: EntropyBox(entropy),
            calls: HashMap::new(),
            detached: Default::default(),
            ssrcs: HashMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CallConfig {
        &self.config
    }

    /// The UE registry.
    pub fn registry(&self) -> &UeRegistry {
        &self.registry
    }

    /// The UE registry, to register and unregister UEs.
    pub fn registry_mut(&mut self) -> &mut UeRegistry {
        &mut self.registry
    }

    /// Replaces the authorization policy (for calls created from now on).
    pub fn set_policy(&mut self, policy: Arc<dyn AuthorizationPolicy>) {
        self.policy = policy;
    }

    /// Number of calls held (any state).
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is held.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// A call by ID.
    pub fn get(&self, id: &str) -> Option<&Call> {
        self.calls.get(id)
    }

    /// A call by ID, to drive it.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Call> {
        self.calls.get_mut(id)
    }

    /// Every call.
    pub fn iter(&self) -> impl Iterator<Item = &Call> {
        self.calls.values()
    }

    /// Every call, to drive them.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Call> {
        self.calls.values_mut()
    }

    /// Removes a call (normally one that is released) and forgets its SSRCs. The caller gives
    /// its [`Call::relay_ports`] back to the pool and drains its remaining events.
    pub fn remove(&mut self, id: &str) -> Option<Call> {
        let call = self.calls.remove(id)?;
        self.release_ssrcs(&call);
        Some(call)
    }

    /// Calls created with [`Self::create_detached`] and not yet forgotten.
    pub fn detached_len(&self) -> usize {
        self.detached.len()
    }

    /// Forgets a call made with [`Self::create_detached`] once it is released: its ID and SSRCs
    /// are free again. The caller gives its [`Call::relay_ports`] back to the pool.
    pub fn forget(&mut self, call: &Call) {
        if self.detached.remove(call.id()) {
            self.release_ssrcs(call);
        }
    }

    fn release_ssrcs(&mut self, call: &Call) {
        let ids = call.identities();
        for ssrc in [ids.audio_ssrc, ids.video_ssrc, ids.server_ssrc] {
            if let Some(n) = self.ssrcs.get_mut(&ssrc.get()) {
                *n -= 1;
                if *n == 0 {
                    self.ssrcs.remove(&ssrc.get());
                }
            }
        }
    }

    fn random_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.entropy.0.fill(&mut b);
        u32::from_be_bytes(b)
    }

    /// A random SSRC not in use in this table (and not 0).
    fn fresh_ssrc(&mut self) -> u32 {
        loop {
            let s = self.random_u32();
            if s != 0 && !self.ssrcs.contains_key(&s) {
                return s;
            }
        }
    }

    fn fresh_key(&mut self, suite: SrtpSuite) -> MasterKey {
        fresh_key(&mut *self.entropy.0, suite)
    }

    fn fresh_call_id(&mut self) -> String {
        loop {
            let mut b = [0u8; 8];
            self.entropy.0.fill(&mut b);
            let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
            if !self.calls.contains_key(id.as_str()) && !self.detached.contains(id.as_str()) {
                return id;
            }
        }
    }

    /// Seed steps 1–4: checks, authorizes, allocates relay ports and builds the callee's offer.
    /// Nothing is kept when it fails.
    pub fn create_call(
        &mut self,
        now: Instant,
        req: CreateCall,
        ports: &mut dyn PortAllocator,
    ) -> Result<CallOffer, SetupError> {
        let (call, offer) = self.create_detached(now, req, ports)?;
        self.detached.remove(call.id());
        self.calls.insert(call.id.clone(), call);
        Ok(offer)
    }

    /// The checks of [`Self::create_call`] that need no SDP work and allocate nothing: request
    /// fields, duplicate ID, call limit, authorization and the callee's registration. An engine
    /// runs them before it binds sockets for the call.
    pub fn precheck(&self, req: &CreateCall) -> Result<(), SetupError> {
        self.admit(req).map(|_| ())
    }

    /// Takes in a call restored from a snapshot ([`Call::restore`]) to run it here, as
    /// [`Self::create_call`] keeps a call it made. Refused when the ID is taken or the table
    /// is full.
    pub fn insert_restored(&mut self, call: Call) -> Result<(), SetupError> {
        self.adopt_detached(&call)?;
        self.detached.remove(call.id());
        self.calls.insert(call.id.clone(), call);
        Ok(())
    }

    /// Takes in a call restored from a snapshot ([`Call::restore`]) that runs elsewhere, as
    /// [`Self::create_detached`] would have: its ID and SSRCs stay reserved until
    /// [`Self::forget`]. Refused when the ID is taken or the table is full.
    pub fn adopt_detached(&mut self, call: &Call) -> Result<(), SetupError> {
        if self.calls.contains_key(call.id()) || self.detached.contains(call.id()) {
            return Err(SetupError::DuplicateCallId(call.id().to_owned()));
        }
        if self.calls.len() + self.detached.len() >= self.config.max_calls {
            return Err(SetupError::TooManyCalls);
        }
        let ids = call.identities();
        for s in [ids.audio_ssrc, ids.video_ssrc, ids.server_ssrc] {
            *self.ssrcs.entry(s.get()).or_insert(0) += 1;
        }
        self.detached.insert(call.call_id().clone());
        Ok(())
    }

    /// [`Self::create_call`] for a call that runs elsewhere (an engine's worker): the call is
    /// returned instead of kept; its ID and SSRCs stay reserved until [`Self::forget`].
    pub fn create_detached(
        &mut self,
        now: Instant,
        req: CreateCall,
        ports: &mut dyn PortAllocator,
    ) -> Result<(Call, CallOffer), SetupError> {
        let delivery = self.admit(&req)?;
        let commencement_mode = req
            .commencement_mode
            .or(delivery.commencement_mode)
            .unwrap_or(self.config.default_commencement_mode);
        self.offer(now, req, ports, delivery.ue_ids, commencement_mode)
    }

    fn admit(&self, req: &CreateCall) -> Result<super::registry::Delivery, SetupError> {
        if req.video_push == req.video_pull {
            return Err(SetupError::NotVideoPush);
        }
        for (what, id) in [
            ("caller mcvideo_id", &req.caller_id),
            ("callee mcvideo_id", &req.callee_id),
        ] {
            if !valid_user_id(id) {
                return Err(SetupError::BadRequest(format!(
                    "{what} must be 1 to {MAX_ID_LEN} octets with no control characters"
                )));
            }
        }
        if let Some(id) = &req.call_id {
            if !valid_call_id(id) {
                return Err(SetupError::BadRequest(format!(
                    "call_id must be 1 to {MAX_CALL_ID_LEN} characters of A-Z a-z 0-9 - _ ."
                )));
            }
            if self.calls.contains_key(id.as_str()) || self.detached.contains(id.as_str()) {
                return Err(SetupError::DuplicateCallId(id.to_string()));
            }
        }
        if self.calls.len() + self.detached.len() >= self.config.max_calls {
            return Err(SetupError::TooManyCalls);
        }
        // Step 2: authorization, nothing allocated yet.
        self.policy
            .may_push(&req.caller_id)
            .map_err(|reason| SetupError::NotAuthorized {
                party: Party::Caller,
                user: req.caller_id.clone(),
                reason,
            })?;
        self.policy
            .may_receive_push(&req.callee_id)
            .map_err(|reason| SetupError::NotAuthorized {
                party: Party::Callee,
                user: req.callee_id.clone(),
                reason,
            })?;
        // Step 4: where the call goes and how it commences.
        let delivery = self.registry.delivery(&req.callee_id);
        if delivery.ue_ids.is_empty() && self.config.require_registered_callee {
            return Err(SetupError::CalleeNotRegistered(req.callee_id.clone()));
        }
        Ok(delivery)
    }

    fn offer(
        &mut self,
        now: Instant,
        req: CreateCall,
        ports: &mut dyn PortAllocator,
        deliver_to: Vec<String>,
        commencement_mode: CommencementMode,
    ) -> Result<(Call, CallOffer), SetupError> {
        let offer =
            SessionDescription::parse(&req.caller_sdp).map_err(|error| SetupError::BadSdp {
                party: Party::Caller,
                error,
            })?;
        let offered: Vec<bool> = offer
            .media()
            .iter()
            .map(|m| {
                m.port != 0
                    && match &m.kind {
                        MediaKind::Video | MediaKind::Control => true,
                        MediaKind::Audio => self.config.offer_audio,
                        MediaKind::Other(_) => self.config.offer_other_media,
                    }
            })
            .collect();
        let no_media = |reason: &str| SetupError::NoAcceptableMedia {
            party: Party::Caller,
            reason: reason.to_owned(),
        };
        let video = offer
            .media()
            .iter()
            .find(|m| m.kind == MediaKind::Video && m.port != 0)
            .ok_or_else(|| {
                no_media("the offer has no video stream (m=video with a non-zero port)")
            })?;
        for (m, &o) in offer.media().iter().zip(&offered) {
            if o && m.rtp_addr().is_none() {
                return Err(no_media(&format!(
                    "m= line {} has no usable address to send to",
                    m.line
                )));
            }
            if o && req.media_security == MediaSecurity::PerLeg && is_rtp_media(&m.kind) {
                let Some((_, suite, b64)) = pick_crypto(m) else {
                    return Err(no_media(&format!(
                        "per_leg mode needs an a=crypto line with AEAD_AES_128_GCM or AES_CM_128_HMAC_SHA1_80 in the section of line {}",
                        m.line
                    )));
                };
                MasterKey::from_base64(suite, b64).map_err(|e| SetupError::BadSdp {
                    party: Party::Caller,
                    error: SdpError {
                        line: m.line,
                        content: format!("a=crypto ({})", suite.name()),
                        reason: if e == crate::keys::KeyError::BadBase64 {
                            "key is not valid base64"
                        } else {
                            "key and salt have the wrong length for the suite"
                        },
                    },
                })?;
            }
        }
        // SSRCs of the transmission: the caller's own when its SDP names them.
        let control_fmtp = offer
            .media()
            .iter()
            .find(|m| m.kind == MediaKind::Control)
            .and_then(|m| m.mcvideo);
        let video_ssrc = control_fmtp
            .and_then(|f| f.mc_video_ssrc)
            .or_else(|| video.ssrcs.first().copied());
        let audio_ssrc = control_fmtp.and_then(|f| f.mc_audio_ssrc).or_else(|| {
            offer
                .media()
                .iter()
                .find(|m| m.kind == MediaKind::Audio)
                .and_then(|m| m.ssrcs.first().copied())
        });

        // Relay ports for both legs of every offered stream.
        let mut streams = Vec::with_capacity(offer.media().len());
        let mut failed = false;
        for (index, (m, &o)) in offer.media().iter().zip(&offered).enumerate() {
            let mut s = MediaStream {
                index,
                kind: m.kind.clone(),
                proto: m.proto.clone(),
                offered: o,
                relay: [None, None],
                remote_rtp: [m.rtp_addr(), None],
                remote_rtcp: [m.rtcp_addr(), None],
                announced_ssrcs: [m.ssrcs.clone(), Vec::new()],
                keys: [None, None],
                clock_rate: m.clock_rate,
                pending_keys: None,
            };
            if o && !failed {
                for party in [Party::Caller, Party::Callee] {
                    match ports.allocate(party, &m.kind, m.rtcp_mux) {
                        Some(p) => s.relay[party.index()] = Some(p),
                        None => failed = true,
                    }
                }
            }
            streams.push(s);
        }
        if failed {
            for p in streams
                .iter()
                .flat_map(|s| s.relay.iter().flatten().copied())
            {
                ports.free(p);
            }
            return Err(SetupError::NoPortsAvailable);
        }
        // A leg on an interface of the other address family could never reach its party.
        let mismatch = streams.iter().zip(offer.media()).find(|(s, m)| {
            match (s.relay[Party::Caller.index()], m.rtp_addr()) {
                (Some(r), Some(a)) => r.rtp.is_ipv4() != a.is_ipv4(),
                _ => false,
            }
        });
        if let Some((_, m)) = mismatch {
            for p in streams
                .iter()
                .flat_map(|s| s.relay.iter().flatten().copied())
            {
                ports.free(p);
            }
            return Err(no_media(&format!(
                "m= line {}: its address family has no media interface on the relay",
                m.line
            )));
        }

        // Per-leg keys: the caller's inbound key is in its offer; the relay makes its own key
        // toward the callee now and the one toward the caller when the answer comes.
        let mut rewrites = Vec::with_capacity(streams.len());
        for (s, m) in streams.iter_mut().zip(offer.media()) {
            let Some(relay) = s.relay[Party::Callee.index()] else {
                rewrites.push(MediaRewrite::Reject);
                continue;
            };
            let mut crypto = None;
            if req.media_security == MediaSecurity::PerLeg && is_rtp_media(&m.kind) {
                if let Some((tag, suite, b64)) = pick_crypto(m) {
                    if let Ok(caller_inbound) = MasterKey::from_base64(suite, b64) {
                        let callee_outbound = self.fresh_key(suite);
                        crypto = Some(vec![callee_outbound.sdes_attribute(tag)]);
                        s.pending_keys = Some(PendingKeys {
                            tag,
                            caller_inbound,
                            callee_outbound,
                        });
                    }
                }
            }
            rewrites.push(MediaRewrite::Keep {
                port: relay.rtp.port(),
                rtcp_port: (!relay.muxed()).then(|| relay.rtcp.port()),
                crypto,
            });
        }
        let callee_ip = streams
            .iter()
            .find_map(|s| s.relay[Party::Callee.index()])
            .map(|p| p.rtp.ip())
            .ok_or_else(|| no_media("no stream could be offered"))?;
        let sdp_offer = match offer.rewrite(&Rewrite {
            connection: callee_ip,
            media: rewrites,
        }) {
            Ok(s) => s,
            Err(error) => {
                for p in streams
                    .iter()
                    .flat_map(|s| s.relay.iter().flatten().copied())
                {
                    ports.free(p);
                }
                return Err(SetupError::BadSdp {
                    party: Party::Caller,
                    error,
                });
            }
        };

        let kind = if req.video_pull {
            CallKind::VideoPull
        } else {
            CallKind::VideoPush
        };
        // In a pull the callee transmits: the caller's SSRCs are not the transmission's.
        let (audio_ssrc, video_ssrc) = match kind {
            CallKind::VideoPush => (audio_ssrc, video_ssrc),
            CallKind::VideoPull => (None, None),
        };
        let audio_ssrc = audio_ssrc.unwrap_or_else(|| self.fresh_ssrc());
        let video_ssrc = video_ssrc.unwrap_or_else(|| self.fresh_ssrc());
        let server_ssrc = self.fresh_ssrc();
        for s in [audio_ssrc, video_ssrc, server_ssrc] {
            *self.ssrcs.entry(s).or_insert(0) += 1;
        }
        let caller_control = streams
            .iter()
            .any(|s| s.kind == MediaKind::Control && s.active());
        let call_id: CallId = match req.call_id {
            Some(id) => id,
            None => self.fresh_call_id().into(),
        };
        let ids = Identities {
            caller_id: req.caller_id.clone(),
            callee_id: req.callee_id.clone(),
            audio_ssrc: Ssrc(audio_ssrc),
            video_ssrc: Ssrc(video_ssrc),
            server_ssrc: Ssrc(server_ssrc),
        };
        let server = private_server(&self.config.tc, kind, &call_id, &ids, caller_control);
        let mut timers = TimerTable::default();
        timers.set(Timer::OfferTimeout, now + self.config.offer_timeout);
        let mut call = Call {
            id: call_id.clone(),
            kind,
            caller_id: req.caller_id,
            callee_id: req.callee_id,
            state: CallState::Offered,
            commencement_mode,
            media_security: req.media_security,
            deliver_to: deliver_to.clone(),
            streams,
            tc_keys: [req.caller_tc_key, None],
            ids,
            server,
            timers,
            events: VecDeque::new(),
            release_reason: None,
            times: CallTimes {
                created: now,
                established: None,
                released: None,
            },
            sdp: [Some(sdp_offer.as_str().into()), None],
        };
        call.push(CallEventKind::Progress);
        self.detached.insert(call_id.clone());
        let offer = CallOffer {
            call_id,
            sdp_offer,
            commencement_mode,
            deliver_to,
        };
        Ok((call, offer))
    }

    /// Seed steps 6–10: the callee accepted with `answer`. Builds the caller's answer,
    /// establishes the call and grants the caller. On error the call stays offered.
    pub fn accept_call(
        &mut self,
        now: Instant,
        call_id: &str,
        answer: AnswerCall,
    ) -> Result<CallAnswer, SetupError> {
        let call = self
            .calls
            .get_mut(call_id)
            .ok_or_else(|| SetupError::UnknownCall(call_id.to_owned()))?;
        call.accept(now, answer, &mut *self.entropy.0)
    }

    /// The callee declined. The call is released (reason `rejected`) and removed; the caller
    /// gives its ports back and drains its events.
    pub fn reject_call(&mut self, now: Instant, call_id: &str) -> Result<Call, SetupError> {
        self.calls
            .get_mut(call_id)
            .ok_or_else(|| SetupError::UnknownCall(call_id.to_owned()))?
            .reject(now)?;
        self.remove(call_id)
            .ok_or_else(|| SetupError::UnknownCall(call_id.to_owned()))
    }

    /// Releases a call for `reason` and removes it.
    pub fn release_call(
        &mut self,
        now: Instant,
        call_id: &str,
        reason: ReleaseReason,
    ) -> Result<Call, SetupError> {
        let call = self
            .calls
            .get_mut(call_id)
            .ok_or_else(|| SetupError::UnknownCall(call_id.to_owned()))?;
        call.release(now, reason);
        self.remove(call_id)
            .ok_or_else(|| SetupError::UnknownCall(call_id.to_owned()))
    }
}
