//! The sans-IO core: transmission control and the call procedures of one-to-one video push,
//! one-to-one video pull and group video calls.
//!
//! Nothing here touches a socket or reads the clock. Every input carries the `now` it happened
//! at; outputs are polled:
//!
//! * [`server::TransmissionControlServer`] — one per call, for every kind of call: a call is a
//!   set of members and the [`server::Procedure`] says which rules apply (a private call — video
//!   push or pull — or a group call): grants, rejections, revocations, queueing and
//!   pre-emption, reception control, retransmissions, the end of a transmission (TS 24.581 as
//!   read in `docs/transmission-control.md`, with the call rules of `docs/design.md`, both in
//!   the repository);
//! * [`arbiter::Arbiter`] — the lock-free bit sets the forwarding side checks per packet (who
//!   may transmit, to whom);
//! * [`ssrc::SsrcRegistry`] — SSRCs unique across the engine for group transmissions;
//! * [`bucket::TokenBucket`] — the one rate limiter (replies per party, packets from strangers);
//! * [`call::CallTable`] / [`call::Call`] — the seed procedure, steps 1–11 and release:
//!   authorization ([`policy`]), the designated UE ([`registry`]), commencement mode, SDP for
//!   each side, events.
//!
//! Drain order after any input (the same for [`call::Call`] and the server): `poll_transmit`
//! until `None`, then `poll_event` until `None`, then re-arm the timer from `poll_timeout`.

/// Defines a fieldless enum of the API whose variants each have a snake_case label: the enum
/// (serde as snake_case under the `ha` and `sidecar` features), its `as_str` and, where the
/// invocation asks, `parse` (the inverse of `as_str`) and `impl Display;` (the label).
macro_rules! labelled_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $label:literal, )+
        }
        $(#[$as_str_doc:meta])* as_str;
        $($extra:tt)*
    ) => {
        $(#[$meta])*
        #[cfg_attr(
            any(feature = "ha", feature = "sidecar"),
            derive(serde::Serialize, serde::Deserialize),
            serde(rename_all = "snake_case")
        )]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            $(#[$as_str_doc])*
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )+
                }
            }
        }

        labelled_enum!(@extra $name { $( $variant => $label, )+ } $($extra)*);
    };
    (@extra $name:ident { $( $variant:ident => $label:literal, )+ }
        $(#[$parse_doc:meta])* parse; $($extra:tt)*) => {
        impl $name {
            $(#[$parse_doc])*
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $( $label => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        labelled_enum!(@extra $name { $( $variant => $label, )+ } $($extra)*);
    };
    (@extra $name:ident { $( $variant:ident => $label:literal, )+ } impl Display;) => {
        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
    (@extra $name:ident { $( $variant:ident => $label:literal, )+ }) => {};
}

pub mod arbiter;
pub mod bucket;
pub mod call;
pub mod policy;
pub mod registry;
pub mod server;
pub mod ssrc;
pub mod timer;

labelled_enum! {
    /// The two parties of a one-to-one call (push or pull): member slots 0 and 1 of its
    /// transmission control server ([`Party::slot`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum Party {
        /// The calling party: the transmitter in a video push.
        Caller => "caller",
        /// The called party: the transmitter in a video pull, receive only in a push.
        Callee => "callee",
    }
    /// Lower-case label.
    as_str;
    impl Display;
}

impl Party {
    /// The other party.
    pub const fn peer(self) -> Party {
        match self {
            Party::Caller => Party::Callee,
            Party::Callee => Party::Caller,
        }
    }

    /// `0` for the caller, `1` for the callee: an index into per-party arrays.
    pub const fn index(self) -> usize {
        match self {
            Party::Caller => 0,
            Party::Callee => 1,
        }
    }

    /// Its member slot in the call's transmission control server and arbiter.
    pub const fn slot(self) -> arbiter::Slot {
        match self {
            Party::Caller => arbiter::Slot::FIRST,
            Party::Callee => arbiter::Slot::SECOND,
        }
    }

    /// The party in `slot` (0 the caller, 1 the callee).
    pub const fn of_slot(slot: arbiter::Slot) -> Option<Party> {
        match slot.index() {
            0 => Some(Party::Caller),
            1 => Some(Party::Callee),
            _ => None,
        }
    }
}

labelled_enum! {
    /// Why a call was released (the `reason` of the `call.released` event).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum ReleaseReason {
        /// The caller ended its transmission (MCV2 Transmission End Request): the push is complete.
        TransmissionCompleted => "transmission_completed",
        /// The caller sent RTCP BYE on a call without a transmission control channel.
        RtcpBye => "rtcp_bye",
        /// No media from the granted caller for the configured inactivity time.
        MediaTimeout => "media_timeout",
        /// The maximum transmission duration ran out (Transmission Revoked #2).
        MaxDuration => "max_duration",
        /// T1, the private-call hang timer, ran out before any media flowed.
        HangTimer => "hang_timer",
        /// The callee ended reception (MCV2 Media Reception End Request).
        ReceptionEnded => "reception_ended",
        /// The callee declined the call.
        Rejected => "rejected",
        /// The callee did not answer in time.
        NoAnswer => "no_answer",
        /// The controlling server released the call.
        Released => "released",
        /// The engine shut down.
        Shutdown => "shutdown",
        /// The engine could not run the call (e.g. its sockets could not be registered).
        InternalError => "internal_error",
    }
    /// snake_case label used by the API, events and metrics.
    as_str;
    impl Display;
}

impl ReleaseReason {
    /// Every reason, for metrics pre-registration.
    pub const ALL: [ReleaseReason; 11] = [
        ReleaseReason::TransmissionCompleted,
        ReleaseReason::RtcpBye,
        ReleaseReason::MediaTimeout,
        ReleaseReason::MaxDuration,
        ReleaseReason::HangTimer,
        ReleaseReason::ReceptionEnded,
        ReleaseReason::Rejected,
        ReleaseReason::NoAnswer,
        ReleaseReason::Released,
        ReleaseReason::Shutdown,
        ReleaseReason::InternalError,
    ];
}

labelled_enum! {
    /// Which kind of one-to-one video call, that is, which party transmits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub enum CallKind {
        /// One-to-one video push (TS 23.281 §7.4): only the caller transmits.
        #[default]
        VideoPush => "video_push",
        /// Video pull (TS 23.281 §7.3.2.3): only the called party transmits, to the caller.
        VideoPull => "video_pull",
    }
    /// `"video_push"` or `"video_pull"`.
    as_str;
}

impl CallKind {
    /// The party that transmits; the other is receive only.
    pub const fn transmitter(self) -> Party {
        match self {
            CallKind::VideoPush => Party::Caller,
            CallKind::VideoPull => Party::Callee,
        }
    }
}

labelled_enum! {
    /// Private call commencement mode (TS 23.281 §7.2.1).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum CommencementMode {
        /// The called client answers without its user's action.
        Automatic => "automatic",
        /// The called user accepts the call.
        Manual => "manual",
    }
    /// `"automatic"` or `"manual"`.
    as_str;
    /// Parses `"automatic"` / `"manual"`.
    parse;
}

labelled_enum! {
    /// How media is protected on a call (`docs/design.md` in the repository, "Media security
    /// modes").
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub enum MediaSecurity {
        /// The MC mode: SRTP passes byte for byte; the relay holds no media keys.
        #[default]
        EndToEnd => "end_to_end",
        /// The relay terminates SDES-keyed SRTP on each leg.
        PerLeg => "per_leg",
    }
    /// `"end_to_end"` or `"per_leg"`.
    as_str;
    /// Parses `"end_to_end"` / `"per_leg"`.
    parse;
}
