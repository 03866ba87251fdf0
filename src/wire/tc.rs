//! MCVideo transmission control messages (TS 24.581 §9): RTCP APP packets named `MCV0`, `MCV1`
//! and `MCV2`.
//!
//! Each message is one RTCP APP packet (PT 204, padding bit 0, never compound; several may share a
//! datagram, see [`messages`]). The 5-bit RTCP subtype is the acknowledgement bit `x` (0x10) plus a
//! 4-bit message type; a message is identified by **(name, type)** because the same type means
//! different messages under `MCV0`, `MCV1` and `MCV2` (`docs/transmission-control.md` in the
//! repository, "Packet layout" and "Messages").
//!
//! Fields follow the header as `ID (8) | Length (8) | value | zero padding to 32 bits`; `Length`
//! counts only the value. Receiving rules: an unknown message is kept as
//! [`MessageKind::Unknown`] with no fields (callers discard it), an unknown field or one not
//! allowed in the message is skipped, a field with the wrong shape is ignored, parsing stops at a
//! zero ID with zero length (trailing padding). The first occurrence of a field wins.
//!
//! [`TcMessage`] borrows its text fields from the packet: parsing allocates nothing.
//!
//! Video SSRC is decoded from field 23 **and** 24, because the sources disagree; it is
//! emitted with [`VIDEO_SSRC_FIELD_ID`] unless [`EmitOptions`] says otherwise.

use super::{Error, Result};
use core::fmt;

/// RTCP packet type of an APP packet (RFC 3550 §6.7).
pub const RTCP_APP: u8 = 204;
/// Octets before the first field: V/P/subtype, PT, length, SSRC, name.
pub const HEADER_LEN: usize = 12;
/// The `x` bit of the subtype: "Acknowledgement is required" (TS 24.581 §9.1.2).
pub const ACK_REQUIRED: u8 = 0x10;
/// Video SSRC field ID written by default. **UNCONFIRMED** (`docs/transmission-control.md` in
/// the repository, "Field IDs": 23 in the V18.8.0 reading, 24 in the V18.5.0 one). Both are
/// always decoded.
pub const VIDEO_SSRC_FIELD_ID: u8 = 23;
/// The other Video SSRC field ID found in the sources; decoded, never emitted by default.
pub const VIDEO_SSRC_FIELD_ID_ALT: u8 = 24;
/// Longest value an 8-bit field length can carry.
pub const MAX_FIELD_VALUE: usize = 255;

/// The four ASCII octets of the APP `name` (TS 24.581 Tables 9.2.2.1-1 to -3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppName {
    /// `MCV0`: participant → transmission control server.
    Mcv0,
    /// `MCV1`: transmission control server → participant.
    Mcv1,
    /// `MCV2`: both directions.
    Mcv2,
    /// Any other name (e.g. `MCV3`, `MCPT`), kept as read.
    Other([u8; 4]),
}

impl AppName {
    /// Reads a name from its four octets.
    #[inline]
    pub const fn from_bytes(b: [u8; 4]) -> Self {
        match &b {
            b"MCV0" => AppName::Mcv0,
            b"MCV1" => AppName::Mcv1,
            b"MCV2" => AppName::Mcv2,
            _ => AppName::Other(b),
        }
    }

    /// The four octets on the wire.
    #[inline]
    pub const fn to_bytes(self) -> [u8; 4] {
        match self {
            AppName::Mcv0 => *b"MCV0",
            AppName::Mcv1 => *b"MCV1",
            AppName::Mcv2 => *b"MCV2",
            AppName::Other(b) => b,
        }
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.to_bytes() {
            if b.is_ascii_graphic() {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

macro_rules! messages {
    ($( $(#[$doc:meta])* $variant:ident = ($name:ident, $ty:literal, $text:literal, $label:literal, [$($fid:expr),*]); )*) => {
        /// A transmission control message, identified by (APP name, 4-bit message type) as in
        /// `docs/transmission-control.md` in the repository, "Messages". Listed in table order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum MessageKind {
            $( $(#[$doc])* $variant, )*
            /// A (name, type) pair this crate does not know; discarded by receivers
            /// (TS 24.581 §9.1.4).
            Unknown {
                /// The APP name.
                name: AppName,
                /// The 4-bit message type (the `x` bit cleared).
                message_type: u8,
            },
        }

        impl MessageKind {
            /// Identifies a message from its APP name and 4-bit type (`x` bit ignored).
            pub const fn from_wire(name: AppName, message_type: u8) -> Self {
                let message_type = message_type & 0x0f;
                match (name, message_type) {
                    $( (AppName::$name, $ty) => MessageKind::$variant, )*
                    _ => MessageKind::Unknown { name, message_type },
                }
            }

            /// The APP name this message travels under.
            pub const fn name(self) -> AppName {
                match self {
                    $( MessageKind::$variant => AppName::$name, )*
                    MessageKind::Unknown { name, .. } => name,
                }
            }

            /// The 4-bit message type (subtype without the `x` bit).
            pub const fn message_type(self) -> u8 {
                match self {
                    $( MessageKind::$variant => $ty, )*
                    MessageKind::Unknown { message_type, .. } => message_type & 0x0f,
                }
            }

            /// The message's name in TS 24.581.
            pub const fn text(self) -> &'static str {
                match self {
                    $( MessageKind::$variant => $text, )*
                    MessageKind::Unknown { .. } => "unknown",
                }
            }

            /// A short snake_case label for metrics and logs (the name in TS 24.581, snake_case).
            pub const fn label(self) -> &'static str {
                match self {
                    $( MessageKind::$variant => $label, )*
                    MessageKind::Unknown { .. } => "unknown",
                }
            }

            /// Bit set of the field IDs (Video SSRC as bit 23) this message may carry (the
            /// message tables of TS 24.581 §9.2).
            /// Messages §2.3 does not tabulate allow every field.
            pub const fn allowed_fields(self) -> u32 {
                match self {
                    $( MessageKind::$variant => mask(&[$($fid),*]), )*
                    MessageKind::Unknown { .. } => 0,
                }
            }

            /// Every known message, in table order.
            pub const ALL: &'static [MessageKind] = &[ $( MessageKind::$variant, )* ];
        }
    };
}

#[allow(clippy::indexing_slicing)] // `i < ids.len()`; slice `get` is not const
const fn mask(ids: &[u8]) -> u32 {
    if ids.is_empty() {
        return ALL_FIELDS;
    }
    let mut m = 0u32;
    let mut i = 0;
    while i < ids.len() {
        m |= 1 << ids[i];
        i += 1;
    }
    m
}

/// Every field ID 0..=23 (Video SSRC counted once, as bit 23).
const ALL_FIELDS: u32 = (1 << 24) - 1;

use field::*;

messages! {
    // ---- MCV0: participant → server (Table 9.2.2.1-1)
    /// MCV0/0 Transmission Request (§9.2.4).
    TransmissionRequest = (Mcv0, 0, "Transmission Request", "transmission_request",
        [TRANSMISSION_PRIORITY, USER_ID, TRANSMISSION_INDICATOR, FUNCTIONAL_ALIAS, TRACK_INFO]);
    /// MCV0/2 Transmission Release (§9.2.7); no on-network server procedure.
    TransmissionRelease = (Mcv0, 2, "Transmission Release", "transmission_release", []);
    /// MCV0/3 Queue Position Request (§9.2.11).
    QueuePositionRequest = (Mcv0, 3, "Queue Position Request", "queue_position_request", []);
    /// MCV0/4 Receive Media Request (§9.2.14).
    ReceiveMediaRequest = (Mcv0, 4, "Receive Media Request", "receive_media_request",
        [USER_ID, TRANSMITTING_USER_ID, AUDIO_SSRC, VIDEO_SSRC, TRANSMISSION_INDICATOR,
         RECEPTION_PRIORITY, TRACK_INFO, FUNCTIONAL_ALIAS]);
    /// MCV0/5 Transmission Cancel Request: Rel-15 only; decoded, never sent.
    TransmissionCancelRequest = (Mcv0, 5, "Transmission Cancel Request", "transmission_cancel_request", []);
    /// MCV0/7 Remote Transmission Request (§9.2.22).
    RemoteTransmissionRequest = (Mcv0, 7, "Remote Transmission Request", "remote_transmission_request", []);
    /// MCV0/8 Remote Transmission Cancel Request (§9.2.24).
    RemoteTransmissionCancelRequest = (Mcv0, 8, "Remote Transmission Cancel Request", "remote_transmission_cancel_request", []);
    // ---- MCV1: server → participant (Table 9.2.2.1-2)
    /// MCV1/0 Transmission Granted (§9.2.5).
    TransmissionGranted = (Mcv1, 0, "Transmission Granted", "transmission_granted",
        [DURATION, AUDIO_SSRC, VIDEO_SSRC, TRANSMISSION_PRIORITY, USER_ID, QUEUE_SIZE,
         QUEUED_USER_ID, QUEUE_INFO, TRANSMISSION_INDICATOR, TRACK_INFO]);
    /// MCV1/1 Transmission Rejected (§9.2.6).
    TransmissionRejected = (Mcv1, 1, "Transmission Rejected", "transmission_rejected",
        [REJECT_CAUSE, USER_ID, TRANSMISSION_INDICATOR, TRACK_INFO]);
    /// MCV1/2 Transmission Arbitration Taken (§9.2.8).
    TransmissionArbitrationTaken = (Mcv1, 2, "Transmission Arbitration Taken", "transmission_arbitration_taken",
        [TRANSMITTING_USER_ID, PERMISSION_TO_REQUEST, USER_ID, MESSAGE_SEQUENCE_NUMBER,
         TRANSMISSION_INDICATOR, AUDIO_SSRC, VIDEO_SSRC]);
    /// MCV1/3 Transmission Arbitration Release (§9.2.9).
    TransmissionArbitrationRelease = (Mcv1, 3, "Transmission Arbitration Release", "transmission_arbitration_release",
        [USER_ID, MESSAGE_SEQUENCE_NUMBER, TRANSMISSION_INDICATOR]);
    /// MCV1/4 Transmission Revoked (§9.2.10).
    TransmissionRevoked = (Mcv1, 4, "Transmission Revoked", "transmission_revoked",
        [REJECT_CAUSE, TRANSMISSION_INDICATOR, TRACK_INFO]);
    /// MCV1/5 Queue Position Info (§9.2.12).
    QueuePositionInfo = (Mcv1, 5, "Queue Position Info", "queue_position_info",
        [USER_ID, QUEUED_USER_ID, QUEUE_INFO, TRACK_INFO, TRANSMISSION_INDICATOR]);
    /// MCV1/6 Media Transmission Notification (§9.2.13).
    MediaTransmissionNotification = (Mcv1, 6, "Media Transmission Notification", "media_transmission_notification",
        [TRANSMITTING_USER_ID, AUDIO_SSRC, VIDEO_SSRC, PERMISSION_TO_REQUEST,
         TRANSMISSION_INDICATOR, TRACK_INFO, FUNCTIONAL_ALIAS, RECEPTION_MODE]);
    /// MCV1/7 Receive Media Response (§9.2.15); Result says granted or rejected.
    ReceiveMediaResponse = (Mcv1, 7, "Receive Media Response", "receive_media_response",
        [RESULT, REJECT_CAUSE, TRANSMITTING_USER_ID, AUDIO_SSRC, VIDEO_SSRC,
         TRANSMISSION_INDICATOR, TRACK_INFO]);
    /// MCV1/8 Media Reception Notification (§9.2.16).
    MediaReceptionNotification = (Mcv1, 8, "Media Reception Notification", "media_reception_notification",
        [USER_ID, AUDIO_SSRC, VIDEO_SSRC, FUNCTIONAL_ALIAS, TRACK_INFO]);
    /// MCV1/9 Transmission Cancel Response: Rel-15 only; decoded, never sent.
    TransmissionCancelResponse = (Mcv1, 9, "Transmission Cancel Response", "transmission_cancel_response", []);
    /// MCV1/10 Transmission Cancel Request Notify (§9.2.19).
    TransmissionCancelRequestNotify = (Mcv1, 10, "Transmission Cancel Request Notify", "transmission_cancel_request_notify", []);
    /// MCV1/11 Remote Transmission Response (§9.2.23).
    RemoteTransmissionResponse = (Mcv1, 11, "Remote Transmission Response", "remote_transmission_response", []);
    /// MCV1/12 Remote Transmission Cancel Response (§9.2.25).
    RemoteTransmissionCancelResponse = (Mcv1, 12, "Remote Transmission Cancel Response", "remote_transmission_cancel_response", []);
    /// MCV1/13 Media Reception Override Notification (§9.2.28).
    MediaReceptionOverrideNotification = (Mcv1, 13, "Media Reception Override Notification", "media_reception_override_notification", []);
    /// MCV1/14 Transmission End Notify (§9.2.29).
    TransmissionEndNotify = (Mcv1, 14, "Transmission End Notify", "transmission_end_notify",
        [TRANSMITTING_USER_ID, AUDIO_SSRC, VIDEO_SSRC]);
    /// MCV1/15 Transmission Idle (§9.2.30).
    TransmissionIdle = (Mcv1, 15, "Transmission Idle", "transmission_idle",
        [MESSAGE_SEQUENCE_NUMBER, TRANSMISSION_INDICATOR]);
    // ---- MCV2: both directions (Table 9.2.2.1-3)
    /// MCV2/0 Transmission End Request (§9.2.20).
    TransmissionEndRequest = (Mcv2, 0, "Transmission End Request", "transmission_end_request",
        [TRANSMITTING_USER_ID, AUDIO_SSRC, VIDEO_SSRC, REJECT_CAUSE, TRANSMISSION_INDICATOR,
         TRACK_INFO]);
    /// MCV2/1 Transmission End Response (§9.2.21).
    TransmissionEndResponse = (Mcv2, 1, "Transmission End Response", "transmission_end_response",
        [TRANSMITTING_USER_ID, AUDIO_SSRC, VIDEO_SSRC, TRANSMISSION_INDICATOR, TRACK_INFO]);
    /// MCV2/2 Media Reception End Request (§9.2.26).
    MediaReceptionEndRequest = (Mcv2, 2, "Media Reception End Request", "media_reception_end_request",
        [TRANSMITTING_USER_ID, AUDIO_SSRC, VIDEO_SSRC, TRANSMISSION_INDICATOR, TRACK_INFO]);
    /// MCV2/3 Media Reception End Response (§9.2.27).
    MediaReceptionEndResponse = (Mcv2, 3, "Media Reception End Response", "media_reception_end_response",
        [TRANSMITTING_USER_ID, AUDIO_SSRC, VIDEO_SSRC, TRANSMISSION_INDICATOR, TRACK_INFO]);
    /// MCV2/4 Transmission Control Ack (§9.2.31); never carries the `x` bit.
    TransmissionControlAck = (Mcv2, 4, "Transmission Control Ack", "transmission_control_ack",
        [MESSAGE_TYPE, SOURCE, MESSAGE_NAME, TRACK_INFO]);
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageKind::Unknown { name, message_type } => {
                write!(f, "unknown {name}/{message_type}")
            }
            k => write!(f, "{} ({}/{})", k.text(), k.name(), k.message_type()),
        }
    }
}

impl MessageKind {
    /// Whether this (name, type) is known.
    pub const fn is_known(self) -> bool {
        !matches!(self, MessageKind::Unknown { .. })
    }

    /// Whether field `id` (Video SSRC as 23) may appear in this message.
    pub const fn allows(self, id: u8) -> bool {
        id < 32 && self.allowed_fields() & (1 << id) != 0
    }
}

/// Field IDs of Table 9.2.3.1-1 (`docs/transmission-control.md` in the repository, "Field IDs").
pub mod field {
    /// Transmission Priority: 8-bit priority + 8 spare (§9.2.3.2).
    pub const TRANSMISSION_PRIORITY: u8 = 0;
    /// Duration: 16-bit seconds (§9.2.3.3).
    pub const DURATION: u8 = 1;
    /// Reject Cause: 16-bit cause + optional phrase (§9.2.3.4).
    pub const REJECT_CAUSE: u8 = 2;
    /// Queue Info: 8-bit position + 8-bit priority (§9.2.3.5).
    pub const QUEUE_INFO: u8 = 3;
    /// User ID of the Transmitting User: URI (§9.2.3.6).
    pub const TRANSMITTING_USER_ID: u8 = 4;
    /// Permission to Request the Transmission: 16-bit, 0 not allowed, 1 allowed (§9.2.3.7).
    pub const PERMISSION_TO_REQUEST: u8 = 5;
    /// User ID: URI (§9.2.3.8).
    pub const USER_ID: u8 = 6;
    /// Queue Size: 16-bit (§9.2.3.15).
    pub const QUEUE_SIZE: u8 = 7;
    /// Message Sequence Number: 16-bit (§9.2.3.9).
    pub const MESSAGE_SEQUENCE_NUMBER: u8 = 8;
    /// Queued User ID: URI (§9.2.3.14).
    pub const QUEUED_USER_ID: u8 = 9;
    /// Source: 16-bit (§9.2.3.12).
    pub const SOURCE: u8 = 10;
    /// Track Info (§9.2.3.13).
    pub const TRACK_INFO: u8 = 11;
    /// Message Type: 8-bit subtype of the acknowledged message + 8 spare (§9.2.3.10).
    pub const MESSAGE_TYPE: u8 = 12;
    /// Transmission Indicator: 16-bit flags (§9.2.3.11).
    pub const TRANSMISSION_INDICATOR: u8 = 13;
    /// Audio SSRC of the Transmitting User: 32-bit + 16 spare (§9.2.3.16).
    pub const AUDIO_SSRC: u8 = 14;
    /// Result: 16-bit, 0 rejected, 1 granted (§9.2.3.17).
    pub const RESULT: u8 = 15;
    /// Message Name: 4 ASCII + 2 spare (§9.2.3.18).
    pub const MESSAGE_NAME: u8 = 16;
    /// Overriding ID: URI (§9.2.3.8).
    pub const OVERRIDING_ID: u8 = 17;
    /// Overridden ID: URI (§9.2.3.8).
    pub const OVERRIDDEN_ID: u8 = 18;
    /// Reception Priority: 8-bit + spare (§9.2.3.19).
    pub const RECEPTION_PRIORITY: u8 = 19;
    /// MCVideo Group Identity: URI (§9.2.3.20).
    pub const GROUP_IDENTITY: u8 = 20;
    /// Functional Alias: URI (§9.2.3.21).
    pub const FUNCTIONAL_ALIAS: u8 = 21;
    /// Reception Mode: 16-bit, 0 automatic, 1 manual (§9.2.3.22).
    pub const RECEPTION_MODE: u8 = 22;
    /// Video SSRC of the Transmitting User, as counted in allowed-field masks. On the wire it is
    /// 23 or 24; see [`super::VIDEO_SSRC_FIELD_ID`].
    pub const VIDEO_SSRC: u8 = 23;
}

open_enum! {
    /// Transmission Rejected causes (§9.2.6.2; `docs/transmission-control.md`, "Causes").
    pub enum RejectCause(u16) {
        /// #1 Transmission limit reached.
        TransmissionLimitReached = 1,
        /// #2 Internal transmission control server error.
        InternalError = 2,
        /// #3 Only one participant.
        OnlyOneParticipant = 3,
        /// #4 Retry-after timer has not expired.
        RetryAfterTimerNotExpired = 4,
        /// #5 Receive only.
        ReceiveOnly = 5,
        /// #6 No resources available.
        NoResourcesAvailable = 6,
        /// #255 Other reason.
        Other = 255,
    }
}

open_enum! {
    /// Transmission Revoked causes (§9.2.10.2); also the server's Transmission End Request.
    pub enum RevokeCause(u16) {
        /// #1 Only one MCVideo client.
        OnlyOneClient = 1,
        /// #2 Media burst too long.
        MediaBurstTooLong = 2,
        /// #3 No permission to send a media burst.
        NoPermission = 3,
        /// #4 Media burst pre-empted.
        PreEmpted = 4,
        /// #5 Terminate the RTP stream.
        TerminateRtpStream = 5,
        /// #6 No resources available.
        NoResourcesAvailable = 6,
        /// #7 Queue the transmission.
        QueueTheTransmission = 7,
        /// #8 No receiving participant.
        NoReceivingParticipant = 8,
        /// #255 Other reason.
        Other = 255,
    }
}

open_enum! {
    /// Receive Media Response (Result 0) causes (§9.2.15.2; one source only).
    pub enum ReceiveRejectCause(u16) {
        /// #2 Internal transmission control server error.
        InternalError = 2,
        /// #4 Retry-after timer has not expired.
        RetryAfterTimerNotExpired = 4,
        /// #5 Send only.
        SendOnly = 5,
        /// #6 No resources available.
        NoResourcesAvailable = 6,
        /// #7 Maximum number of simultaneous streams to receive reached.
        MaxSimultaneousStreams = 7,
        /// #255 Other reason.
        Other = 255,
    }
}

open_enum! {
    /// Source field values (§9.2.3.12).
    pub enum Source(u16) {
        /// The transmission participant (a client).
        Participant = 0,
        /// The participating MCVideo function.
        ParticipatingFunction = 1,
        /// The controlling MCVideo function.
        ControllingFunction = 2,
        /// A non-controlling MCVideo function.
        NonControllingFunction = 3,
    }
}

/// Transmission Indicator flag: normal call (§9.2.3.11).
pub const INDICATOR_NORMAL: u16 = 0x8000;
/// Transmission Indicator flag: broadcast group call.
pub const INDICATOR_BROADCAST: u16 = 0x4000;
/// Transmission Indicator flag: system call.
pub const INDICATOR_SYSTEM: u16 = 0x2000;
/// Transmission Indicator flag: emergency call.
pub const INDICATOR_EMERGENCY: u16 = 0x1000;
/// Transmission Indicator flag: imminent peril call.
pub const INDICATOR_IMMINENT_PERIL: u16 = 0x0800;

/// Reject Cause field: a 16-bit code (read it with the table of the message that carries it)
/// and an optional phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CauseField<'a> {
    /// The cause code.
    pub code: u16,
    /// The Reject Phrase; empty when absent (or when it was not UTF-8).
    pub phrase: &'a str,
}

/// Queue Info field (§9.2.3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueInfo {
    /// Queue position; 254 = not queued, 255 = not disclosed.
    pub position: u8,
    /// Queue priority.
    pub priority: u8,
}

/// Track Info field (§9.2.3.13): queueing capability, participant type, participant references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrackInfo<'a> {
    /// Queueing capability (0 or 1).
    pub queueing_capability: u8,
    /// Participant type text.
    pub participant_type: &'a str,
    /// Participant references, 32 bits each, big-endian; read them with [`TrackInfo::references`].
    pub references_raw: &'a [u8],
}

impl TrackInfo<'_> {
    /// The participant references.
    pub fn references(&self) -> impl Iterator<Item = u32> + '_ {
        self.references_raw
            .chunks_exact(4)
            .filter_map(|c| <[u8; 4]>::try_from(c).ok())
            .map(u32::from_be_bytes)
    }

    fn value_len(&self) -> usize {
        2 + pad4(self.participant_type.len()) + self.references_raw.len()
    }
}

/// Every field of Table 9.2.3.1-1, each optional. Text fields borrow from the parsed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fields<'a> {
    /// Transmission Priority (0).
    pub transmission_priority: Option<u8>,
    /// Duration in seconds (1).
    pub duration: Option<u16>,
    /// Reject Cause (2).
    pub reject_cause: Option<CauseField<'a>>,
    /// Queue Info (3).
    pub queue_info: Option<QueueInfo>,
    /// User ID of the Transmitting User (4).
    pub transmitting_user_id: Option<&'a str>,
    /// Permission to Request the Transmission (5): 0 not allowed, 1 allowed.
    pub permission_to_request: Option<u16>,
    /// User ID (6).
    pub user_id: Option<&'a str>,
    /// Queue Size (7).
    pub queue_size: Option<u16>,
    /// Message Sequence Number (8).
    pub message_sequence_number: Option<u16>,
    /// Queued User ID (9).
    pub queued_user_id: Option<&'a str>,
    /// Source (10).
    pub source: Option<Source>,
    /// Track Info (11).
    pub track_info: Option<TrackInfo<'a>>,
    /// Message Type (12): the acknowledged message's subtype, `x` cleared.
    pub message_type: Option<u8>,
    /// Transmission Indicator (13).
    pub transmission_indicator: Option<u16>,
    /// Audio SSRC of the Transmitting User (14).
    pub audio_ssrc: Option<u32>,
    /// Result (15): 0 rejected, 1 granted.
    pub result: Option<u16>,
    /// Message Name (16) of the acknowledged message.
    pub message_name: Option<AppName>,
    /// Overriding ID (17).
    pub overriding_id: Option<&'a str>,
    /// Overridden ID (18).
    pub overridden_id: Option<&'a str>,
    /// Reception Priority (19).
    pub reception_priority: Option<u8>,
    /// MCVideo Group Identity (20).
    pub group_identity: Option<&'a str>,
    /// Functional Alias (21).
    pub functional_alias: Option<&'a str>,
    /// Reception Mode (22): 0 automatic, 1 manual.
    pub reception_mode: Option<u16>,
    /// Video SSRC of the Transmitting User (23 or 24).
    pub video_ssrc: Option<u32>,
}

/// Options for [`TcMessage::emit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmitOptions {
    /// Field ID written for Video SSRC (23 or 24); default [`VIDEO_SSRC_FIELD_ID`].
    pub video_ssrc_field_id: u8,
}

impl Default for EmitOptions {
    fn default() -> Self {
        EmitOptions {
            video_ssrc_field_id: VIDEO_SSRC_FIELD_ID,
        }
    }
}

/// One transmission control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcMessage<'a> {
    /// Which message.
    pub kind: MessageKind,
    /// The `x` bit: the receiver must answer with Transmission Control Ack.
    pub ack_required: bool,
    /// The sender's SSRC on the control channel.
    pub ssrc: u32,
    /// The fields present.
    pub fields: Fields<'a>,
}

#[inline]
const fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

impl<'a> TcMessage<'a> {
    /// A message with no fields.
    pub fn new(kind: MessageKind, ssrc: u32) -> Self {
        TcMessage {
            kind,
            ack_required: false,
            ssrc,
            fields: Fields::default(),
        }
    }

    /// Reads the one APP packet at the start of `buf`; bytes after the packet's length are not
    /// looked at (use [`messages`] for a datagram holding several).
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        let header = buf
            .get(..HEADER_LEN)
            .ok_or(Error::Truncated("transmission control header"))?;
        let [b0, pt, l0, l1, s0, s1, s2, s3, n0, n1, n2, n3] = header else {
            return Err(Error::Truncated("transmission control header"));
        };
        if b0 >> 6 != 2 {
            return Err(Error::BadVersion);
        }
        if b0 & 0x20 != 0 {
            return Err(Error::Malformed(
                "padding bit set in transmission control message",
            ));
        }
        if *pt != RTCP_APP {
            return Err(Error::Malformed("not an RTCP APP packet"));
        }
        let len = (usize::from(u16::from_be_bytes([*l0, *l1])) + 1) * 4;
        let packet = buf
            .get(..len)
            .ok_or(Error::BadLength("RTCP length exceeds datagram"))?;
        let subtype = b0 & 0x1f;
        let kind = MessageKind::from_wire(AppName::from_bytes([*n0, *n1, *n2, *n3]), subtype);
        let mut msg = TcMessage {
            kind,
            ack_required: subtype & ACK_REQUIRED != 0,
            ssrc: u32::from_be_bytes([*s0, *s1, *s2, *s3]),
            fields: Fields::default(),
        };
        if kind.is_known() {
            msg.parse_fields(packet.get(HEADER_LEN..).unwrap_or_default())?;
        }
        Ok(msg)
    }

    fn parse_fields(&mut self, mut rest: &'a [u8]) -> Result<()> {
        while rest.len() >= 2 {
            let (id, hdr, len) = match rest {
                [0, 0, ..] => break, // trailing zero padding (TS 24.581 §9.1.4)
                [id, a, b, ..] if *id >= 192 => (*id, 3, usize::from(u16::from_be_bytes([*a, *b]))),
                [id, _, ..] if *id >= 192 => return Err(Error::Truncated("field header")),
                [id, l, ..] => (*id, 2, usize::from(*l)),
                _ => break,
            };
            let value = rest
                .get(hdr..hdr + len)
                .ok_or(Error::BadLength("field overruns message"))?;
            // Padding may be missing after the last field; never read past the packet.
            rest = rest.get(pad4(hdr + len)..).unwrap_or_default();
            let canonical = if id == VIDEO_SSRC_FIELD_ID_ALT {
                field::VIDEO_SSRC
            } else {
                id
            };
            if !self.kind.allows(canonical) {
                continue; // unknown or not allowed here: skipped (TS 24.581 §9.1.4)
            }
            self.fields.set_from_wire(canonical, value);
        }
        Ok(())
    }

    /// Octets [`TcMessage::emit`] will write.
    pub fn buffer_len(&self) -> Result<usize> {
        let mut n = HEADER_LEN;
        let mut err = None;
        self.fields.for_each_value(self.kind, |_, v| match v.len() {
            Ok(len) if len <= MAX_FIELD_VALUE => n += pad4(2 + len),
            _ => err = Some(Error::Malformed("field value longer than 255 octets")),
        });
        match err {
            Some(e) => Err(e),
            None if n > (usize::from(u16::MAX) + 1) * 4 => {
                Err(Error::Malformed("message too long"))
            }
            None => Ok(n),
        }
    }

    /// Writes the message into `buf`, returning its length. Fields the message's table does not
    /// allow are not written. An unknown message is written with no fields.
    pub fn emit(&self, buf: &mut [u8], opts: &EmitOptions) -> Result<usize> {
        let total = self.buffer_len()?;
        let out = buf.get_mut(..total).ok_or(Error::BufferTooSmall)?;
        out.fill(0);
        let words = (total / 4 - 1) as u16;
        let subtype = self.kind.message_type()
            | if self.ack_required && self.kind != MessageKind::TransmissionControlAck {
                ACK_REQUIRED
            } else {
                0
            };
        let (head, mut body) = out.split_at_mut(HEADER_LEN);
        let [s0, s1, s2, s3] = self.ssrc.to_be_bytes();
        let [n0, n1, n2, n3] = self.kind.name().to_bytes();
        let [l0, l1] = words.to_be_bytes();
        head.copy_from_slice(&[
            0x80 | subtype,
            RTCP_APP,
            l0,
            l1,
            s0,
            s1,
            s2,
            s3,
            n0,
            n1,
            n2,
            n3,
        ]);
        self.fields.for_each_value(self.kind, |id, v| {
            let id = if id == field::VIDEO_SSRC {
                opts.video_ssrc_field_id
            } else {
                id
            };
            let len = v.len().unwrap_or(0); // checked by buffer_len
            let taken = core::mem::take(&mut body);
            let (f, rest) = taken.split_at_mut(pad4(2 + len).min(taken.len()));
            if let Some(([fid, flen], value)) = f.split_first_chunk_mut::<2>() {
                *fid = id;
                *flen = len as u8;
                if let Some(value) = value.get_mut(..len) {
                    v.write(value);
                }
            }
            body = rest;
        });
        Ok(total)
    }

    /// Convenience: emit into a fresh `Vec`.
    pub fn to_vec(&self, opts: &EmitOptions) -> Result<Vec<u8>> {
        let mut v = vec![0; self.buffer_len()?];
        self.emit(&mut v, opts)?;
        Ok(v)
    }
}

/// A field value on its way to the wire.
enum Value<'v> {
    U8Spare(u8),
    U16(u16),
    Ssrc(u32),
    Text(&'v str),
    Cause(CauseField<'v>),
    Pair(u8, u8),
    Name(AppName),
    Track(TrackInfo<'v>),
}

impl Value<'_> {
    fn len(&self) -> core::result::Result<usize, ()> {
        Ok(match self {
            Value::U8Spare(_) | Value::U16(_) | Value::Pair(..) => 2,
            Value::Ssrc(_) | Value::Name(_) => 6,
            Value::Text(t) => t.len(),
            Value::Cause(c) => 2 + c.phrase.len(),
            Value::Track(t) => {
                if t.participant_type.len() > MAX_FIELD_VALUE || t.references_raw.len() % 4 != 0 {
                    return Err(());
                }
                t.value_len()
            }
        })
    }

    /// `out` has exactly `self.len()` octets.
    #[allow(clippy::indexing_slicing)] // lengths fixed by `len()`
    fn write(&self, out: &mut [u8]) {
        match self {
            Value::U8Spare(v) => out[0] = *v,
            Value::U16(v) => out.copy_from_slice(&v.to_be_bytes()),
            Value::Pair(a, b) => {
                out[0] = *a;
                out[1] = *b;
            }
            Value::Ssrc(s) => out[..4].copy_from_slice(&s.to_be_bytes()),
            Value::Name(n) => out[..4].copy_from_slice(&n.to_bytes()),
            Value::Text(t) => out.copy_from_slice(t.as_bytes()),
            Value::Cause(c) => {
                out[..2].copy_from_slice(&c.code.to_be_bytes());
                out[2..].copy_from_slice(c.phrase.as_bytes());
            }
            Value::Track(t) => {
                out[0] = t.queueing_capability;
                out[1] = t.participant_type.len() as u8;
                let ty = t.participant_type.len();
                out[2..2 + ty].copy_from_slice(t.participant_type.as_bytes());
                let refs = 2 + pad4(ty);
                out[refs..].copy_from_slice(t.references_raw);
            }
        }
    }
}

/// Field emission order. Ascending ID, except Transmission Control Ack, which writes Message
/// Type, Source, Message Name, Track Info (the worked example in `docs/transmission-control.md`).
const ORDER: [u8; 24] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
];
const ACK_ORDER: [u8; 4] = [
    field::MESSAGE_TYPE,
    field::SOURCE,
    field::MESSAGE_NAME,
    field::TRACK_INFO,
];

/// The four octets of a 32-bit value followed by 16 spare bits (SSRCs, Message Name).
fn four_of_six(v: &[u8]) -> Option<[u8; 4]> {
    match v {
        [a, b, c, d, _, _] => Some([*a, *b, *c, *d]),
        _ => None,
    }
}

/// How a field's value is read from the wire and written back; its type says which.
trait Codec<'a>: Sized {
    /// The value in `v` (the field's value octets), or `None` when it has the wrong shape.
    fn read(v: &'a [u8]) -> Option<Self>;
    /// The value on its way to the wire.
    fn write(self) -> Value<'a>;
}

/// 8 bits and 8 spare.
impl<'a> Codec<'a> for u8 {
    fn read(v: &'a [u8]) -> Option<Self> {
        match v {
            [a, _] => Some(*a),
            _ => None,
        }
    }
    fn write(self) -> Value<'a> {
        Value::U8Spare(self)
    }
}

impl<'a> Codec<'a> for u16 {
    fn read(v: &'a [u8]) -> Option<Self> {
        v.try_into().ok().map(u16::from_be_bytes)
    }
    fn write(self) -> Value<'a> {
        Value::U16(self)
    }
}

/// An SSRC: 32 bits and 16 spare.
impl<'a> Codec<'a> for u32 {
    fn read(v: &'a [u8]) -> Option<Self> {
        four_of_six(v).map(u32::from_be_bytes)
    }
    fn write(self) -> Value<'a> {
        Value::Ssrc(self)
    }
}

/// A URI (UTF-8).
impl<'a> Codec<'a> for &'a str {
    fn read(v: &'a [u8]) -> Option<Self> {
        core::str::from_utf8(v).ok()
    }
    fn write(self) -> Value<'a> {
        Value::Text(self)
    }
}

impl<'a> Codec<'a> for CauseField<'a> {
    fn read(v: &'a [u8]) -> Option<Self> {
        let (c, p) = v.split_at_checked(2)?;
        Some(CauseField {
            code: u16::read(c)?,
            phrase: core::str::from_utf8(p).unwrap_or(""),
        })
    }
    fn write(self) -> Value<'a> {
        Value::Cause(self)
    }
}

impl<'a> Codec<'a> for QueueInfo {
    fn read(v: &'a [u8]) -> Option<Self> {
        match v {
            [p, q] => Some(QueueInfo {
                position: *p,
                priority: *q,
            }),
            _ => None,
        }
    }
    fn write(self) -> Value<'a> {
        Value::Pair(self.position, self.priority)
    }
}

impl<'a> Codec<'a> for Source {
    fn read(v: &'a [u8]) -> Option<Self> {
        u16::read(v).map(Source::from)
    }
    fn write(self) -> Value<'a> {
        Value::U16(self.into())
    }
}

impl<'a> Codec<'a> for TrackInfo<'a> {
    fn read(v: &'a [u8]) -> Option<Self> {
        let (&qc, rest) = v.split_first()?;
        let (&tlen, rest) = rest.split_first()?;
        let (ty, refs) = rest.split_at_checked(pad4(tlen as usize))?;
        let ty = ty.get(..tlen as usize)?;
        if refs.len() % 4 != 0 {
            return None;
        }
        Some(TrackInfo {
            queueing_capability: qc,
            participant_type: core::str::from_utf8(ty).ok()?,
            references_raw: refs,
        })
    }
    fn write(self) -> Value<'a> {
        Value::Track(self)
    }
}

/// The APP name of the acknowledged message: 4 octets and 16 spare bits.
impl<'a> Codec<'a> for AppName {
    fn read(v: &'a [u8]) -> Option<Self> {
        four_of_six(v).map(AppName::from_bytes)
    }
    fn write(self) -> Value<'a> {
        Value::Name(self)
    }
}

/// The field table: each field ID with the member of [`Fields`] that holds it, read and written
/// with the [`Codec`] of the member's type (a mask applies to the value both ways).
macro_rules! field_table {
    ($( $id:ident => $member:ident $(& $mask:literal)?, )*) => {
        impl<'a> Fields<'a> {
            /// Sets field `id` from its value octets `v`, unless it is set already (the first
            /// occurrence wins) or `v` has the wrong shape.
            fn set_from_wire(&mut self, id: u8, v: &'a [u8]) {
                match id {
                    $( $id if self.$member.is_none() => {
                        self.$member = Codec::read(v) $(.map(|x: u8| x & $mask))?;
                    } )*
                    _ => {}
                }
            }

            fn value(&self, id: u8) -> Option<Value<'a>> {
                match id {
                    $( $id => self.$member $(.map(|x| x & $mask))?.map(Codec::write), )*
                    _ => None,
                }
            }
        }
    };
}

field_table! {
    TRANSMISSION_PRIORITY => transmission_priority,
    DURATION => duration,
    REJECT_CAUSE => reject_cause,
    QUEUE_INFO => queue_info,
    TRANSMITTING_USER_ID => transmitting_user_id,
    PERMISSION_TO_REQUEST => permission_to_request,
    USER_ID => user_id,
    QUEUE_SIZE => queue_size,
    MESSAGE_SEQUENCE_NUMBER => message_sequence_number,
    QUEUED_USER_ID => queued_user_id,
    SOURCE => source,
    TRACK_INFO => track_info,
    MESSAGE_TYPE => message_type & 0x1f,
    TRANSMISSION_INDICATOR => transmission_indicator,
    AUDIO_SSRC => audio_ssrc,
    RESULT => result,
    MESSAGE_NAME => message_name,
    OVERRIDING_ID => overriding_id,
    OVERRIDDEN_ID => overridden_id,
    RECEPTION_PRIORITY => reception_priority,
    GROUP_IDENTITY => group_identity,
    FUNCTIONAL_ALIAS => functional_alias,
    RECEPTION_MODE => reception_mode,
    VIDEO_SSRC => video_ssrc,
}

impl<'a> Fields<'a> {
    fn for_each_value(&self, kind: MessageKind, mut f: impl FnMut(u8, Value<'a>)) {
        if !kind.is_known() {
            return;
        }
        let order: &[u8] = if kind == MessageKind::TransmissionControlAck {
            &ACK_ORDER
        } else {
            &ORDER
        };
        for &id in order {
            if kind.allows(id) {
                if let Some(v) = self.value(id) {
                    f(id, v);
                }
            }
        }
    }
}

/// Iterator over the transmission control messages of one datagram (§1.1: several messages may
/// share an IP packet, each sized by its RTCP length). Yields at most one error, then stops.
pub fn messages(datagram: &[u8]) -> Messages<'_> {
    Messages { rest: datagram }
}

/// See [`messages`].
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<TcMessage<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let buf = core::mem::take(&mut self.rest);
        match TcMessage::parse(buf) {
            Ok(m) => {
                let len = match buf {
                    [_, _, a, b, ..] => (usize::from(u16::from_be_bytes([*a, *b])) + 1) * 4,
                    _ => buf.len(),
                };
                self.rest = buf.get(len..).unwrap_or_default();
                Some(Ok(m))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::hex;

    /// `docs/transmission-control.md`, "Worked examples", the first one.
    fn request_bytes() -> Vec<u8> {
        let mut v = hex("80 cc 00 09 55 66 77 88 4d 43 56 30 00 02 05 00 06 15");
        v.extend_from_slice(b"sip:alice@example.org");
        v.push(0);
        v
    }

    #[test]
    fn worked_example_transmission_request() {
        let bytes = request_bytes();
        assert_eq!(bytes.len(), 40);
        let m = TcMessage::parse(&bytes).unwrap();
        assert_eq!(m.kind, MessageKind::TransmissionRequest);
        assert!(!m.ack_required);
        assert_eq!(m.ssrc, 0x5566_7788);
        assert_eq!(m.fields.transmission_priority, Some(5));
        assert_eq!(m.fields.user_id, Some("sip:alice@example.org"));
        let mut built = TcMessage::new(MessageKind::TransmissionRequest, 0x5566_7788);
        built.fields.transmission_priority = Some(5);
        built.fields.user_id = Some("sip:alice@example.org");
        assert_eq!(built.to_vec(&EmitOptions::default()).unwrap(), bytes);
    }

    #[test]
    fn worked_example_granted_with_ack_bit() {
        let bytes = hex("90 cc 00 07 11 22 33 44 4d 43 56 31 01 02 00 1e 0e 06 aa aa aa aa 00 00 17 06 bb bb bb bb 00 00");
        let m = TcMessage::parse(&bytes).unwrap();
        assert_eq!(m.kind, MessageKind::TransmissionGranted);
        assert!(m.ack_required);
        assert_eq!(m.fields.duration, Some(30));
        assert_eq!(m.fields.audio_ssrc, Some(0xaaaa_aaaa));
        assert_eq!(m.fields.video_ssrc, Some(0xbbbb_bbbb));
        assert_eq!(m.to_vec(&EmitOptions::default()).unwrap(), bytes);
    }

    #[test]
    fn worked_example_ack() {
        let bytes = hex(
            "84 cc 00 06 55 66 77 88 4d 43 56 32 0c 02 00 00 0a 02 00 00 10 06 4d 43 56 31 00 00",
        );
        let m = TcMessage::parse(&bytes).unwrap();
        assert_eq!(m.kind, MessageKind::TransmissionControlAck);
        assert!(!m.ack_required);
        assert_eq!(m.fields.message_type, Some(0));
        assert_eq!(m.fields.source, Some(Source::Participant));
        assert_eq!(m.fields.message_name, Some(AppName::Mcv1));
        assert_eq!(m.to_vec(&EmitOptions::default()).unwrap(), bytes);
    }

    #[test]
    fn video_ssrc_decoded_from_24_and_emitted_as_configured() {
        let mut bytes = hex("80 cc 00 04 11 22 33 44 4d 43 56 31 18 06 01 02 03 04 00 00");
        let m = TcMessage::parse(&bytes).unwrap();
        assert_eq!(m.kind, MessageKind::TransmissionGranted);
        assert_eq!(m.fields.video_ssrc, Some(0x0102_0304));
        let out = m
            .to_vec(&EmitOptions {
                video_ssrc_field_id: 24,
            })
            .unwrap();
        assert_eq!(out, bytes);
        let as23 = m.to_vec(&EmitOptions::default()).unwrap();
        bytes[12] = 23;
        assert_eq!(as23, bytes);
    }

    #[test]
    fn every_message_round_trips_with_every_allowed_field() {
        let refs = [0u8, 0, 0, 7, 0, 0, 1, 0];
        let full = Fields {
            transmission_priority: Some(7),
            duration: Some(60),
            reject_cause: Some(CauseField {
                code: 5,
                phrase: "receive only",
            }),
            queue_info: Some(QueueInfo {
                position: 254,
                priority: 3,
            }),
            transmitting_user_id: Some("sip:caller@mcx.example"),
            permission_to_request: Some(0),
            user_id: Some("sip:callee@mcx.example"),
            queue_size: Some(2),
            message_sequence_number: Some(9),
            queued_user_id: Some("sip:q@x"),
            source: Some(Source::ControllingFunction),
            track_info: Some(TrackInfo {
                queueing_capability: 1,
                participant_type: "first-responder",
                references_raw: &refs,
            }),
            message_type: Some(0),
            transmission_indicator: Some(INDICATOR_NORMAL | INDICATOR_EMERGENCY),
            audio_ssrc: Some(0x1234_5678),
            result: Some(1),
            message_name: Some(AppName::Mcv1),
            overriding_id: Some("sip:o@x"),
            overridden_id: Some("sip:p@x"),
            reception_priority: Some(4),
            group_identity: Some("sip:group@x"),
            functional_alias: Some("sip:alias@x"),
            reception_mode: Some(1),
            video_ssrc: Some(0x9abc_def0),
        };
        for &kind in MessageKind::ALL {
            for ack in [false, true] {
                let mut m = TcMessage::new(kind, 0xdead_beef);
                m.ack_required = ack;
                m.fields = full;
                let bytes = m.to_vec(&EmitOptions::default()).unwrap();
                assert_eq!(bytes.len() % 4, 0);
                assert_eq!(
                    (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])) + 1) * 4,
                    bytes.len()
                );
                let back = TcMessage::parse(&bytes).unwrap();
                assert_eq!(back.kind, kind);
                assert_eq!(
                    back.ack_required,
                    ack && kind != MessageKind::TransmissionControlAck
                );
                // Exactly the allowed fields survive.
                for id in 0..24u8 {
                    assert_eq!(
                        back.fields.value(id).is_some(),
                        kind.allows(id),
                        "{kind} field {id}"
                    );
                }
                assert_eq!(back.to_vec(&EmitOptions::default()).unwrap(), bytes);
            }
        }
        assert_eq!(MessageKind::ALL.len(), 28);
    }

    #[test]
    fn unknown_fields_and_disallowed_fields_are_skipped() {
        // Granted with an unknown field 99 (3-byte value), a field not allowed in Granted
        // (Result, 15), then Duration.
        let bytes = hex(
            "80 cc 00 06 00 00 00 01 4d 43 56 31 63 03 01 02 03 00 00 00 0f 02 00 01 01 02 00 0a",
        );
        let m = TcMessage::parse(&bytes).unwrap();
        assert_eq!(m.fields.duration, Some(10));
        assert_eq!(m.fields.result, None);
    }

    #[test]
    fn high_field_ids_use_16_bit_length() {
        // field 200 with 16-bit length 5, padded to 8 octets, then Duration.
        let bytes = hex("80 cc 00 05 00 00 00 01 4d 43 56 31 c8 00 05 01 02 03 04 05 01 02 00 03");
        let m = TcMessage::parse(&bytes).unwrap();
        assert_eq!(m.fields.duration, Some(3));
    }

    #[test]
    fn wrong_shape_fields_are_ignored_and_first_wins() {
        // Duration with length 3 (wrong shape), then a good Duration, then a second one.
        let bytes = hex(
            "80 cc 00 06 00 00 00 01 4d 43 56 31 01 03 00 05 09 00 00 00 01 02 00 07 01 02 00 08",
        );
        let m = TcMessage::parse(&bytes).unwrap();
        assert_eq!(m.fields.duration, Some(7));
        // Invalid UTF-8 in a URI: ignored.
        let bytes = hex("80 cc 00 03 00 00 00 01 4d 43 56 30 06 02 ff fe");
        let m = TcMessage::parse(&bytes).unwrap();
        assert_eq!(m.fields.user_id, None);
    }

    #[test]
    fn unknown_message_kept_without_fields() {
        let bytes = hex("81 cc 00 03 00 00 00 01 4d 43 56 30 01 02 00 05");
        let m = TcMessage::parse(&bytes).unwrap();
        assert_eq!(
            m.kind,
            MessageKind::Unknown {
                name: AppName::Mcv0,
                message_type: 1
            }
        );
        assert_eq!(m.fields, Fields::default());
        let other = hex("80 cc 00 02 00 00 00 01 4d 43 50 54");
        let m = TcMessage::parse(&other).unwrap();
        assert!(!m.kind.is_known());
        assert_eq!(m.kind.name(), AppName::Other(*b"MCPT"));
    }

    #[test]
    fn malformed_inputs_are_errors_not_panics() {
        let good = request_bytes();
        for cut in 0..good.len() {
            let r = TcMessage::parse(&good[..cut]);
            assert!(r.is_err(), "cut at {cut}");
        }
        let mut bad = good.clone();
        bad[0] = 0x40;
        assert_eq!(TcMessage::parse(&bad), Err(Error::BadVersion));
        let mut bad = good.clone();
        bad[1] = 200;
        assert!(TcMessage::parse(&bad).is_err());
        let mut bad = good.clone();
        bad[0] |= 0x20;
        assert!(TcMessage::parse(&bad).is_err());
        // A field length that runs past the message.
        let mut bad = good.clone();
        bad[17] = 0x40;
        assert_eq!(
            TcMessage::parse(&bad),
            Err(Error::BadLength("field overruns message"))
        );
        // Deterministic garbage never panics.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 64) as usize;
            let mut buf: Vec<u8> = (0..len).map(|i| (x >> (i % 56)) as u8).collect();
            if len > 12 {
                buf[0] = 0x80 | (buf[0] & 0x1f);
                buf[1] = RTCP_APP;
                buf[2] = 0;
                buf[3] = (len / 4 - 1) as u8;
                buf[8..12].copy_from_slice(b"MCV1");
            }
            let _ = TcMessage::parse(&buf);
            let _ = messages(&buf).count();
        }
    }

    #[test]
    fn several_messages_in_one_datagram() {
        let mut d = request_bytes();
        d.extend(hex(
            "84 cc 00 06 55 66 77 88 4d 43 56 32 0c 02 00 00 0a 02 00 00 10 06 4d 43 56 31 00 00",
        ));
        let kinds: Vec<_> = messages(&d).map(|m| m.unwrap().kind).collect();
        assert_eq!(
            kinds,
            [
                MessageKind::TransmissionRequest,
                MessageKind::TransmissionControlAck
            ]
        );
        d.extend([0x80, 0xcc]);
        let v: Vec<_> = messages(&d).collect();
        assert_eq!(v.len(), 3);
        assert!(v[2].is_err());
    }

    #[test]
    fn emit_rejects_overlong_values_and_small_buffers() {
        let long = "x".repeat(256);
        let mut m = TcMessage::new(MessageKind::TransmissionRequest, 1);
        m.fields.user_id = Some(&long);
        assert!(m.buffer_len().is_err());
        m.fields.user_id = Some("sip:a@b");
        let mut small = [0u8; 8];
        assert_eq!(
            m.emit(&mut small, &EmitOptions::default()),
            Err(Error::BufferTooSmall)
        );
    }

    #[test]
    fn open_enums_keep_unknown_values() {
        assert_eq!(RejectCause::from(5), RejectCause::ReceiveOnly);
        assert_eq!(RejectCause::from(77), RejectCause::Unknown(77));
        assert_eq!(u16::from(RejectCause::Unknown(77)), 77);
        assert_eq!(RevokeCause::from(2), RevokeCause::MediaBurstTooLong);
        assert_eq!(u16::from(RevokeCause::NoPermission), 3);
        assert_eq!(ReceiveRejectCause::from(5), ReceiveRejectCause::SendOnly);
        assert_eq!(Source::from(9), Source::Unknown(9));
        assert_eq!(
            MessageKind::from_wire(AppName::Mcv2, 0x14),
            MessageKind::TransmissionControlAck
        );
        assert_eq!(
            MessageKind::TransmissionEndNotify.label(),
            "transmission_end_notify"
        );
    }

    #[test]
    fn every_message_has_a_unique_snake_case_label_from_its_name() {
        let mut seen = std::collections::BTreeSet::new();
        for k in MessageKind::ALL {
            assert_eq!(k.label(), k.text().to_lowercase().replace(' ', "_"), "{k}");
            assert!(seen.insert(k.label()), "duplicate label {}", k.label());
        }
        let unknown = MessageKind::from_wire(AppName::Mcv0, 15);
        assert_eq!(unknown.label(), "unknown");
    }
}
