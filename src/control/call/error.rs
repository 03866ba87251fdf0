//! Why a call could not be set up or changed.

use super::*;
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
    /// The call cannot be watched ([`crate::relay::watch`]): the relay cannot read its media
    /// (end_to_end: it holds no media key), or it has no stream of the kind asked for.
    NotWatchable {
        /// The call.
        call_id: String,
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
            SetupError::NotWatchable { .. } => "not_watchable",
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
            SetupError::NotWatchable { call_id, reason } => {
                write!(f, "call {call_id} cannot be watched: {reason}")
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
