//! What the call procedure takes and gives: requests and answers, states, events, the media
//! streams of a call.

use super::*;
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

labelled_enum! {
    /// Where a call stands.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum CallState {
        /// Offered to the callee, not yet answered.
        Offered => "offered",
        /// Answered; media and transmission control live.
        Established => "established",
        /// Released; terminal.
        Released => "released",
    }
    /// Lower-case label.
    as_str;
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
        reason: crate::control::server::EndReason,
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

/// One media stream (one `m=` line of the caller's offer) and both of its legs. A
/// [`CallSnapshot`](super::CallSnapshot) holds it without its keys (they go in the
/// [`CallSecrets`](super::CallSecrets)): serialized, the keys are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
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
    #[cfg_attr(feature = "ha", serde(skip))]
    pub keys: [Option<LegKeys>; 2],
    /// RTP clock rate from the caller's `a=rtpmap` for the stream's first format.
    pub clock_rate: Option<u32>,
    /// The encoding name of the caller's first format (`H264`, `VP8`, ...), from its
    /// `a=rtpmap`.
    #[cfg_attr(feature = "ha", serde(default))]
    pub encoding: Option<String>,
    #[cfg_attr(feature = "ha", serde(skip))]
    pub(super) pending_keys: Option<PendingKeys>,
}

/// Keys known while the call is offered (per_leg mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PendingKeys {
    pub(super) tag: u32,
    pub(super) caller_inbound: MasterKey,
    pub(super) callee_outbound: MasterKey,
}

impl MediaStream {
    /// The stream without its keys, as a snapshot holds it.
    pub(super) fn without_keys(&self) -> MediaStream {
        MediaStream {
            keys: [None, None],
            pending_keys: None,
            ..self.clone()
        }
    }

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
