//! The types of the transmission control server: its configuration, members, events, counters
//! and the views the API reads.

use super::super::arbiter::Slot;
use super::super::ReleaseReason;
use crate::ids::Ssrc;
use crate::wire::tc::{
    self, MessageKind, RejectCause, INDICATOR_EMERGENCY, INDICATOR_IMMINENT_PERIL,
};
use std::time::{Duration, Instant};

/// Reception Mode sent in Media Transmission Notification for a private call. **UNCONFIRMED**
/// (docs/transmission-control.md): automatic (0), since there is one receiver.
pub const PUSH_RECEPTION_MODE: u16 = 0;

/// Which procedure of TS 24.581 the server runs: the rules of a private call, or of a group call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Procedure {
    /// A one-to-one call (video push or pull): two members, one of them the designated
    /// transmitter, granted implicitly when the call is established ([`super::TransmissionControlServer::start`])
    /// with the SSRCs the call procedure chose; the other is receive only (Rejected #5, Revoked
    /// #3). The call is released when the transmission ends (completed, BYE without a control
    /// channel, inactivity, maximum duration, T1 before any media, reception ended).
    Private {
        /// The member that transmits.
        transmitter: Slot,
        /// Its Audio SSRC, announced in Granted.
        audio_ssrc: Ssrc,
        /// Its Video SSRC.
        video_ssrc: Ssrc,
    },
    /// A group call: Cx transmitters, queueing, priorities and pre-emption, reception control,
    /// Transmission Idle and T1 inactivity.
    Group,
}

impl Procedure {
    /// The designated transmitter of a private call.
    pub const fn private_transmitter(&self) -> Option<Slot> {
        match self {
            Procedure::Private { transmitter, .. } => Some(*transmitter),
            Procedure::Group => None,
        }
    }
}

labelled_enum! {
    /// Where a call's transmission stands, as the API reports it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum TransmissionState {
        /// No transmission yet (call offered, or established and nobody granted).
        Idle => "idle",
        /// A member holds the grant; its media passes.
        Granted => "granted",
        /// The transmission is over (the call is being released).
        Ended => "ended",
        /// The call is released; terminal.
        Released => "released",
    }
    /// Lower-case label for logs, metrics and the API.
    as_str;
}

/// Transmission control message counters by [`MessageKind`]. A snapshot holds them as the list
/// of [`to_vec`](Self::to_vec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "ha",
    derive(serde::Serialize, serde::Deserialize),
    serde(from = "Vec<u64>", into = "Vec<u64>")
)]
pub struct KindCounters {
    counts: [u64; MessageKind::ALL.len() + 1],
}

impl Default for KindCounters {
    fn default() -> Self {
        KindCounters {
            counts: [0; MessageKind::ALL.len() + 1],
        }
    }
}

impl From<Vec<u64>> for KindCounters {
    fn from(counts: Vec<u64>) -> Self {
        KindCounters::from_slice(&counts)
    }
}

impl From<KindCounters> for Vec<u64> {
    fn from(k: KindCounters) -> Self {
        k.to_vec()
    }
}

impl KindCounters {
    /// The raw counts (in `MessageKind::ALL` order, then unknown kinds), for a snapshot.
    pub fn to_vec(&self) -> Vec<u64> {
        self.counts.to_vec()
    }

    /// Counters from [`to_vec`](Self::to_vec) (missing counts are 0, extra ones ignored).
    pub fn from_slice(counts: &[u64]) -> Self {
        let mut k = KindCounters::default();
        for (a, b) in k.counts.iter_mut().zip(counts) {
            *a = *b;
        }
        k
    }

    fn slot(kind: MessageKind) -> usize {
        MessageKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(MessageKind::ALL.len())
    }

    /// Counts one `kind`.
    pub fn add(&mut self, kind: MessageKind) {
        if let Some(c) = self.counts.get_mut(Self::slot(kind)) {
            *c += 1;
        }
    }

    /// The count for `kind` (all unknown kinds share one count).
    pub fn get(&self, kind: MessageKind) -> u64 {
        self.counts.get(Self::slot(kind)).copied().unwrap_or(0)
    }

    /// Non-zero counts by label.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (MessageKind::ALL.get(i).map_or("unknown", |k| k.label()), *c))
    }

    /// Sum of all counts.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds every count of `other`.
    pub fn add_all(&mut self, other: &KindCounters) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
    }

    /// The counts added since `earlier` (a snapshot of the same counters).
    pub fn since(&self, earlier: &KindCounters) -> KindCounters {
        let mut d = KindCounters::default();
        for ((d, a), b) in d.counts.iter_mut().zip(self.counts).zip(earlier.counts) {
            *d = a.saturating_sub(b);
        }
        d
    }
}

labelled_enum! {
    /// How receivers get a new transmission (Reception Mode field, §9.2.3.22).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub enum ReceptionMode {
        /// The media goes to every notified receiver at once (within its C9 cap).
        #[default]
        Automatic => "automatic",
        /// A receiver asks for each stream with Receive Media Request.
        Manual => "manual",
    }
    /// `"automatic"` or `"manual"`.
    as_str;
    /// Parses `"automatic"` / `"manual"`.
    parse;
}

impl ReceptionMode {
    pub(super) const fn wire(self) -> u16 {
        match self {
            ReceptionMode::Automatic => 0,
            ReceptionMode::Manual => 1,
        }
    }
}

/// Timers, counters and limits of the transmission control server. One configuration for every
/// kind of call: a private call uses the timers and counters (T1 is then the private-call hang
/// timer: no media this long after the grant releases the call) and ignores the group
/// attributes (Cx, C9, reception mode, queueing, T2, T6, T11).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct TcConfig {
    /// Cx: members that may transmit at once (the group attribute
    /// `mcvideo-maximum-simultaneous-mcvideo-transmitting-group-members`; default 1).
    pub max_transmitters: u8,
    /// C9: streams one receiver takes at once (`<MaxSimultaneousVideoStreams>`; default 4).
    pub max_streams_per_receiver: u8,
    /// How receivers get a new transmission.
    pub reception_mode: ReceptionMode,
    /// Queue requests at the cap (else Rejected #1).
    pub queueing: bool,
    /// Queued requests at most; past it, Rejected #1.
    pub max_queue: usize,
    /// T1, inactivity: nobody transmitted for this long, the call is released (`<on-network-hang-timer>`).
    pub t1_inactivity: Duration,
    /// T2, Transmission Idle retransmission interval.
    pub t2_idle: Duration,
    /// C2, Transmission Idle retransmissions.
    pub c2_idle: u32,
    /// T3, Transmission Revoked retransmission interval.
    pub t3_revoke: Duration,
    /// C3, Revoked retransmissions at most.
    pub c3_revoke: u32,
    /// T4, Transmission Granted retransmission interval until the first media.
    pub t4_granted: Duration,
    /// C4, Granted retransmissions.
    pub c4_granted: u32,
    /// T6, Receive Media Response (granted) retransmission interval until acked.
    pub t6_reception: Duration,
    /// C6, Receive Media Response retransmissions.
    pub c6_reception: u32,
    /// T11, stream reception idle (manual mode): a transmission nobody receives this long ends (#8).
    pub t11_stream_idle: Duration,
    /// Maximum transmission duration, sent in Granted; `None` = unlimited.
    pub max_duration: Option<Duration>,
    /// No media from a transmitter for this long ends its transmission.
    pub media_inactivity: Duration,
    /// Packets from a member without permission tolerated (dropped) before Revoked #3.
    pub revoke_after: u32,
    /// Field ID written for Video SSRC (23 or 24).
    pub video_ssrc_field_id: u8,
    /// Replies a member may draw per second, sustained.
    pub reply_rate_per_sec: u32,
    /// Replies a member may draw in a burst.
    pub reply_burst: u32,
}

impl Default for TcConfig {
    fn default() -> Self {
        TcConfig {
            max_transmitters: 1,
            max_streams_per_receiver: 4,
            reception_mode: ReceptionMode::Automatic,
            queueing: true,
            max_queue: 16,
            t1_inactivity: Duration::from_secs(30),
            t2_idle: Duration::from_secs(1),
            c2_idle: 10,
            t3_revoke: Duration::from_secs(1),
            c3_revoke: 3,
            t4_granted: Duration::from_secs(1),
            c4_granted: 3,
            t6_reception: Duration::from_secs(1),
            c6_reception: 3,
            t11_stream_idle: Duration::from_secs(10),
            max_duration: None,
            media_inactivity: Duration::from_secs(10),
            revoke_after: 5,
            video_ssrc_field_id: tc::VIDEO_SSRC_FIELD_ID,
            reply_rate_per_sec: 20,
            reply_burst: 40,
        }
    }
}

/// A member as the controlling server adds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct MemberSetup {
    /// MCVideo ID.
    pub user_id: String,
    /// The highest Transmission Priority this member may use (0–255; higher is stronger).
    pub priority: u8,
    /// Never transmits (Rejected #5, Permission to Request = 0).
    pub receive_only: bool,
    /// Never receives: no transmission is routed to it, and its Receive Media Requests get
    /// Rejected #5 (Send only). The relay sets it for a member whose SDP offer sends on every
    /// media stream and receives on none (`a=sendonly` or `a=inactive`), such as a browser
    /// publishing through WHIP.
    #[cfg_attr(feature = "ha", serde(default))]
    pub send_only: bool,
    /// It negotiated a transmission control channel; without one nothing is sent to it.
    pub control: bool,
    /// Its `a=ssrc` video SSRC, used for its transmissions when free.
    pub video_ssrc: Option<Ssrc>,
    /// Its `a=ssrc` audio SSRC, used when free.
    pub audio_ssrc: Option<Ssrc>,
}

/// Who the call is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerIdentity {
    /// The call's ID (a group call's: its MCVideo Group Identity).
    pub call_id: String,
    /// The server's SSRC on the control channels.
    pub server_ssrc: Ssrc,
}

/// How strong a request or transmission is: indicator class, then priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rank {
    /// 2 emergency, 1 imminent peril, 0 normal.
    pub class: u8,
    /// Transmission Priority, capped at the member's own.
    pub priority: u8,
}

impl Rank {
    pub(super) fn of(indicator: u16, priority: u8) -> Rank {
        let class = if indicator & INDICATOR_EMERGENCY != 0 {
            2
        } else if indicator & INDICATOR_IMMINENT_PERIL != 0 {
            1
        } else {
            0
        };
        Rank { class, priority }
    }
}

labelled_enum! {
    /// Why one transmission ended.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum EndReason {
        /// The transmitter sent Transmission End Request.
        Completed => "completed",
        /// A stronger request took its place (Revoked #4).
        Preempted => "preempted",
        /// The maximum Duration ran out (Revoked #2).
        MaxDuration => "max_duration",
        /// No media for the inactivity time.
        MediaTimeout => "media_timeout",
        /// Manual reception: nobody received it for T11 (End Request #8).
        NoReceivers => "no_receivers",
        /// The transmitter left the call.
        Left => "left",
        /// A transmitter without a control channel sent RTCP BYE.
        Bye => "bye",
        /// The call was released.
        Released => "released",
    }
    /// snake_case label.
    as_str;
}

/// What the server reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcEvent {
    /// A member joined.
    Joined {
        /// Its slot.
        member: Slot,
    },
    /// A member left.
    Left {
        /// Its slot.
        member: Slot,
    },
    /// A member was granted a transmission.
    Granted {
        /// The transmitter.
        member: Slot,
        /// Its audio SSRC.
        audio_ssrc: Ssrc,
        /// Its video SSRC.
        video_ssrc: Ssrc,
    },
    /// A request was queued.
    Queued {
        /// The requester.
        member: Slot,
        /// Its position (1 = next).
        position: u8,
    },
    /// A request was rejected.
    Rejected {
        /// The requester.
        member: Slot,
        /// Why.
        cause: RejectCause,
    },
    /// A transmission was pre-empted by a stronger request.
    Preempted {
        /// The transmitter that lost its grant.
        member: Slot,
        /// The requester that took it.
        by: Slot,
    },
    /// The first media of a transmission arrived.
    MediaStarted {
        /// The transmitter.
        member: Slot,
    },
    /// A transmission ended.
    TransmissionEnded {
        /// The transmitter.
        member: Slot,
        /// Why.
        reason: EndReason,
    },
    /// Nobody transmits any more (Transmission Idle sent).
    Idle,
    /// A receiver took a stream onto its Active SSRC List.
    ReceptionStarted {
        /// The receiver.
        receiver: Slot,
        /// The transmitter.
        transmitter: Slot,
    },
    /// A receiver took a stream off its list.
    ReceptionEnded {
        /// The receiver.
        receiver: Slot,
        /// The transmitter.
        transmitter: Slot,
    },
    /// The call is over.
    Released {
        /// Why.
        reason: ReleaseReason,
    },
}

/// Why a member could not join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// [`MAX_MEMBERS`](crate::control::arbiter::MAX_MEMBERS) members are in the call (or the
    /// call is private: its two members are fixed).
    Full,
    /// A member with this MCVideo ID is in the call.
    Duplicate,
    /// The call is released.
    Released,
}

impl core::fmt::Display for JoinError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            JoinError::Full => "the group call has its maximum number of members",
            JoinError::Duplicate => "a member with this MCVideo ID is already in the call",
            JoinError::Released => "the call is released",
        })
    }
}

impl std::error::Error for JoinError {}

/// Counters of one transmission control server (a snapshot holds them as they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct TcStats {
    /// Messages received, by kind.
    pub received: KindCounters,
    /// Messages sent, by kind.
    pub sent: KindCounters,
    /// Datagrams that did not parse.
    pub malformed: u64,
    /// Well-formed messages with nothing to do.
    pub ignored: u64,
    /// Replies not sent: the member exceeded its reply budget.
    pub rate_limited: u64,
    /// Media packets from members without permission (all dropped).
    pub unpermitted_media_packets: u64,
    /// Grants.
    pub grants: u64,
    /// Requests queued.
    pub queued: u64,
    /// Pre-emptions.
    pub preemptions: u64,
}

/// One transmission, for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransmissionView {
    /// The transmitter.
    pub member: Slot,
    /// Its MCVideo ID.
    pub user_id: String,
    /// Audio SSRC.
    pub audio_ssrc: Ssrc,
    /// Video SSRC.
    pub video_ssrc: Ssrc,
    /// Strength.
    pub rank: Rank,
    /// When it was granted.
    pub granted_at: Instant,
    /// Whether media has arrived.
    pub media_started: bool,
    /// Receivers (slots).
    pub receivers: Vec<Slot>,
}

/// One queued request, for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueView {
    /// The requester.
    pub member: Slot,
    /// Its MCVideo ID.
    pub user_id: String,
    /// Position, 1 = next.
    pub position: u8,
    /// Strength.
    pub rank: Rank,
}

/// One member, for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Its slot.
    pub member: Slot,
    /// MCVideo ID.
    pub user_id: String,
    /// Its priority.
    pub priority: u8,
    /// Receive only.
    pub receive_only: bool,
    /// Send only.
    pub send_only: bool,
    /// Media packets it sent (permitted or not).
    pub media_packets: u64,
    /// Transmitting now.
    pub transmitting: bool,
    /// Queued.
    pub queued: bool,
    /// Transmitters it receives.
    pub receiving: Vec<Slot>,
}
