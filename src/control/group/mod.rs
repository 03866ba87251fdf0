//! Group video calls: transmission control for many members (sans-IO).
//!
//! TS 23.281 §7.7.1.1 applies transmission control to group calls as to private calls; TS 24.581
//! §6.3.4–§6.3.7 (mcvideo-media-plane.md §3.2) give the server's rules, read here as:
//!
//! * **Grant** while fewer than **Cx** members transmit ([`GroupConfig::max_transmitters`]).
//!   Each grant allocates a video (and audio) SSRC unique across the engine
//!   ([`SsrcRegistry`]), the member's `a=ssrc` when free. Granted announces them; every other
//!   member gets **Media Transmission Notification** with the transmitter's identity and SSRCs.
//! * **At the cap**: a request stronger than the weakest transmission **pre-empts** it
//!   (Revoked #4 to the loser, the requester granted); otherwise it is **queued** (Queue
//!   Position Info; Queue Position Request answered at any time) or, with queueing off or the
//!   queue full, **Rejected #1**. Strength is the Transmission Indicator class (emergency >
//!   imminent peril > normal), then Transmission Priority (capped at the member's own), then
//!   who asked first.
//! * Receive-only members get **Rejected #5**; a lone member **Rejected #3**.
//! * **End**: End Response to the transmitter, **End Notify** to the others, the next queued
//!   request granted. When nobody transmits: **Transmission Idle** to all (with the `x` bit,
//!   retransmitted every T2 to those that did not ack, C2 times) and **T1** (inactivity): when
//!   it runs out the call is released.
//! * **Media without permission** is dropped by the arbiter; after
//!   [`GroupConfig::revoke_after`] packets the sender gets **Revoked #3** (while somebody
//!   transmits, or right after its own transmission ended, §6.3.5.3.8/§6.3.5.4.6), repeated on
//!   T3 while it keeps sending (C3).
//! * Safety nets per transmission: Granted repeated on T4 until the first media (C4), the
//!   maximum Duration (Revoked #2), media inactivity (server Transmission End Request #255).
//! * **Reception control** (§6.3.6/§6.3.7): each receiver has an **Active SSRC List** (the
//!   transmissions it receives) capped at **C9** streams. In **automatic** mode (the default;
//!   emergency, imminent peril, broadcast and system calls) a notified receiver gets the media
//!   at once while under C9. In **manual** mode it sends **Receive Media Request**: Receive
//!   Media Response (Result 1 with the `x` bit, repeated on T6 up to C6 until acked; or Result
//!   0 with #7 at C9), and the transmitter gets Media Reception Notification. **Media
//!   Reception End Request** takes a stream off the list. In manual mode a transmission nobody
//!   receives for T11 is ended with a server Transmission End Request #8.
//! * **Members join and leave** while the call runs. A late joiner is told the current state:
//!   a Media Transmission Notification per transmission (who transmits, which SSRCs), or
//!   Transmission Idle. A transmitter that leaves ends its transmission for the others.
//!
//! The forwarding side reads only the [`GroupArbiter`]: one load to check a transmitter, one
//! more for its receivers. Inputs and outputs follow the crate's sans-IO contract: every input
//! carries `now`; drain `poll_transmit`, then `poll_event`, then re-arm from `poll_timeout`.

pub mod arbiter;
pub mod ssrc;

pub use arbiter::{slots, GroupArbiter, GroupSnapshot, Slot, MAX_MEMBERS};
pub use ssrc::SsrcRegistry;

use super::bucket::TokenBucket;
use super::server::KindCounters;
use super::ReleaseReason;
use crate::ids::Ssrc;
use crate::wire::tc::{
    self, AppName, CauseField, EmitOptions, MessageKind, QueueInfo, ReceiveRejectCause,
    RejectCause, RevokeCause, Source, TcMessage, INDICATOR_EMERGENCY, INDICATOR_IMMINENT_PERIL,
    INDICATOR_NORMAL,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How receivers get a new transmission (Reception Mode field, §9.2.3.22).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    any(feature = "ha", feature = "sidecar"),
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum ReceptionMode {
    /// The media goes to every notified receiver at once (within its C9 cap).
    #[default]
    Automatic,
    /// A receiver asks for each stream with Receive Media Request.
    Manual,
}

impl ReceptionMode {
    /// `"automatic"` or `"manual"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReceptionMode::Automatic => "automatic",
            ReceptionMode::Manual => "manual",
        }
    }

    /// Parses `"automatic"` / `"manual"`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "automatic" => Some(ReceptionMode::Automatic),
            "manual" => Some(ReceptionMode::Manual),
            _ => None,
        }
    }

    const fn wire(self) -> u16 {
        match self {
            ReceptionMode::Automatic => 0,
            ReceptionMode::Manual => 1,
        }
    }
}

/// The group's attributes, timers and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
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

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
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
pub struct MemberSetup {
    /// MCVideo ID.
    pub user_id: String,
    /// The highest Transmission Priority this member may use (0–255; higher is stronger).
    pub priority: u8,
    /// Never transmits (Rejected #5, Permission to Request = 0).
    pub receive_only: bool,
    /// It negotiated a transmission control channel; without one nothing is sent to it.
    pub control: bool,
    /// Its `a=ssrc` video SSRC, used for its transmissions when free.
    pub video_ssrc: Option<Ssrc>,
    /// Its `a=ssrc` audio SSRC, used when free.
    pub audio_ssrc: Option<Ssrc>,
}

/// Who the group is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupIdentity {
    /// MCVideo Group Identity.
    pub group_id: String,
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
    fn of(indicator: u16, priority: u8) -> Rank {
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

/// Why one transmission ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    any(feature = "ha", feature = "sidecar"),
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum EndReason {
    /// The transmitter sent Transmission End Request.
    Completed,
    /// A stronger request took its place (Revoked #4).
    Preempted,
    /// The maximum Duration ran out (Revoked #2).
    MaxDuration,
    /// No media for the inactivity time.
    MediaTimeout,
    /// Manual reception: nobody received it for T11 (End Request #8).
    NoReceivers,
    /// The transmitter left the call.
    Left,
    /// The call was released.
    Released,
}

impl EndReason {
    /// snake_case label.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndReason::Completed => "completed",
            EndReason::Preempted => "preempted",
            EndReason::MaxDuration => "max_duration",
            EndReason::MediaTimeout => "media_timeout",
            EndReason::NoReceivers => "no_receivers",
            EndReason::Left => "left",
            EndReason::Released => "released",
        }
    }
}

/// What the server reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupEvent {
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
    /// [`MAX_MEMBERS`] members are in the call.
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

/// Counters of one group server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupStats {
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

#[derive(Debug, Clone)]
struct Transmission {
    audio: Ssrc,
    video: Ssrc,
    rank: Rank,
    indicator: u16,
    granted_at: Instant,
    first_media: bool,
    granted_sent: u32,
    t4: Option<Instant>,
    max_duration: Option<Instant>,
    inactivity: Option<Instant>,
    t11: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Revoke {
    cause: RevokeCause,
    sent: u32,
    due: Instant,
    media_since: bool,
    acked: bool,
}

#[derive(Debug, Clone, Copy)]
struct ReceptionGrant {
    transmitter: Slot,
    sent: u32,
    due: Instant,
}

#[derive(Debug)]
struct Member {
    setup: MemberSetup,
    tx: Option<Transmission>,
    /// Its last transmission's SSRCs (End Response to a late End Request).
    last_ssrcs: Option<(Ssrc, Ssrc)>,
    recently_ended: bool,
    unpermitted_run: u32,
    revoke: Option<Revoke>,
    /// Transmitters it receives (its Active SSRC List), mirrored in the arbiter's routes.
    receiving: u64,
    reception_grants: Vec<ReceptionGrant>,
    idle_acked: bool,
    budget: TokenBucket,
}

#[derive(Debug, Clone, Copy)]
struct Queued {
    member: Slot,
    rank: Rank,
    indicator: u16,
    seq: u64,
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
    /// Transmitting now.
    pub transmitting: bool,
    /// Queued.
    pub queued: bool,
    /// Transmitters it receives.
    pub receiving: Vec<Slot>,
}

/// Queued outgoing messages at most (the driver drains after each input).
const MAX_OUT: usize = 1024;

/// The transmission control server of one group call. See the [module docs](self).
#[derive(Debug)]
pub struct GroupServer {
    cfg: GroupConfig,
    ids: GroupIdentity,
    arbiter: Arc<GroupArbiter>,
    ssrcs: Arc<SsrcRegistry>,
    members: Vec<Option<Member>>,
    queue: Vec<Queued>,
    queue_seq: u64,
    started: bool,
    finished: Option<ReleaseReason>,
    t1: Option<Instant>,
    t2: Option<Instant>,
    idle_sent: u32,
    idle_seq: u16,
    out: VecDeque<(Slot, Vec<u8>)>,
    events: VecDeque<GroupEvent>,
    stats: GroupStats,
}

fn cause(code: u16) -> CauseField<'static> {
    CauseField { code, phrase: "" }
}

impl GroupServer {
    /// A group call with no members yet.
    pub fn new(
        cfg: GroupConfig,
        ids: GroupIdentity,
        arbiter: Arc<GroupArbiter>,
        ssrcs: Arc<SsrcRegistry>,
    ) -> Self {
        GroupServer {
            cfg,
            ids,
            arbiter,
            ssrcs,
            members: (0..MAX_MEMBERS).map(|_| None).collect(),
            queue: Vec::new(),
            queue_seq: 0,
            started: false,
            finished: None,
            t1: None,
            t2: None,
            idle_sent: 0,
            idle_seq: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: GroupStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GroupConfig {
        &self.cfg
    }

    /// The group's identity.
    pub fn identity(&self) -> &GroupIdentity {
        &self.ids
    }

    /// The shared arbiter.
    pub fn arbiter(&self) -> &Arc<GroupArbiter> {
        &self.arbiter
    }

    /// Counters.
    pub fn stats(&self) -> &GroupStats {
        &self.stats
    }

    /// `Some(reason)` once the call is over.
    pub fn finished(&self) -> Option<ReleaseReason> {
        self.finished
    }

    /// Whether nobody transmits.
    pub fn is_idle(&self) -> bool {
        self.transmitting() == 0
    }

    fn member(&self, s: Slot) -> Option<&Member> {
        self.members.get(s.index()).and_then(Option::as_ref)
    }

    fn member_mut(&mut self, s: Slot) -> Option<&mut Member> {
        self.members.get_mut(s.index()).and_then(Option::as_mut)
    }

    fn present(&self) -> impl Iterator<Item = (Slot, &Member)> + '_ {
        self.members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| Some((Slot::new(i)?, m.as_ref()?)))
    }

    fn present_slots(&self) -> Vec<Slot> {
        self.present().map(|(s, _)| s).collect()
    }

    fn transmitting(&self) -> usize {
        self.present().filter(|(_, m)| m.tx.is_some()).count()
    }

    /// Members in the call.
    pub fn member_count(&self) -> usize {
        self.present().count()
    }

    /// The slot of the member with MCVideo ID `user_id`.
    pub fn slot_of(&self, user_id: &str) -> Option<Slot> {
        self.present()
            .find(|(_, m)| m.setup.user_id == user_id)
            .map(|(s, _)| s)
    }

    /// The member in `slot`, for the API.
    pub fn member_view(&self, slot: Slot) -> Option<MemberView> {
        let m = self.member(slot)?;
        Some(MemberView {
            member: slot,
            user_id: m.setup.user_id.clone(),
            priority: m.setup.priority,
            receive_only: m.setup.receive_only,
            transmitting: m.tx.is_some(),
            queued: self.queue.iter().any(|q| q.member == slot),
            receiving: slots(m.receiving).collect(),
        })
    }

    /// Every member, for the API.
    pub fn members(&self) -> Vec<MemberView> {
        self.present_slots()
            .into_iter()
            .filter_map(|s| self.member_view(s))
            .collect()
    }

    /// The transmissions, for the API.
    pub fn transmissions(&self) -> Vec<TransmissionView> {
        self.present()
            .filter_map(|(s, m)| {
                let t = m.tx.as_ref()?;
                Some(TransmissionView {
                    member: s,
                    user_id: m.setup.user_id.clone(),
                    audio_ssrc: t.audio,
                    video_ssrc: t.video,
                    rank: t.rank,
                    granted_at: t.granted_at,
                    media_started: t.first_media,
                    receivers: self
                        .present()
                        .filter(|(_, r)| r.receiving & s.bit() != 0)
                        .map(|(r, _)| r)
                        .collect(),
                })
            })
            .collect()
    }

    /// The queue, strongest first.
    pub fn queue(&self) -> Vec<QueueView> {
        self.queue
            .iter()
            .enumerate()
            .filter_map(|(i, q)| {
                Some(QueueView {
                    member: q.member,
                    user_id: self.member(q.member)?.setup.user_id.clone(),
                    position: (i + 1).min(253) as u8,
                    rank: q.rank,
                })
            })
            .collect()
    }

    // ---- inputs ------------------------------------------------------------------------------

    /// Adds a member. Before [`start`](Self::start) it is silent; after, the joiner is told the
    /// current state (a Media Transmission Notification per transmission, or Transmission
    /// Idle), and in automatic mode receives the running transmissions within its C9 cap.
    pub fn join(&mut self, _now: Instant, setup: MemberSetup) -> Result<Slot, JoinError> {
        if self.finished.is_some() {
            return Err(JoinError::Released);
        }
        if self.slot_of(&setup.user_id).is_some() {
            return Err(JoinError::Duplicate);
        }
        let free = self.members.iter().position(Option::is_none);
        let Some(slot) = free.and_then(Slot::new) else {
            return Err(JoinError::Full);
        };
        let budget = TokenBucket::new(
            f64::from(self.cfg.reply_rate_per_sec),
            f64::from(self.cfg.reply_burst),
        );
        if let Some(m) = self.members.get_mut(slot.index()) {
            *m = Some(Member {
                setup,
                tx: None,
                last_ssrcs: None,
                recently_ended: false,
                unpermitted_run: 0,
                revoke: None,
                receiving: 0,
                reception_grants: Vec::new(),
                idle_acked: false,
                budget,
            });
        }
        self.events.push_back(GroupEvent::Joined { member: slot });
        if self.started {
            let txs: Vec<Slot> = self
                .present()
                .filter(|(_, m)| m.tx.is_some())
                .map(|(s, _)| s)
                .collect();
            if txs.is_empty() {
                // Idle to the joiner alone; the others' retransmission cycle is not restarted.
                self.send_idle(slot);
            }
            for t in txs {
                self.notify(slot, t);
                if self.cfg.reception_mode == ReceptionMode::Automatic {
                    self.route(t, slot);
                }
            }
        }
        Ok(slot)
    }

    /// The call is established: Transmission Idle to every member, T1 runs.
    pub fn start(&mut self, now: Instant) {
        if self.started || self.finished.is_some() {
            return;
        }
        self.started = true;
        if self.is_idle() {
            self.enter_idle(now);
        }
    }

    /// A member leaves. A transmission it held ends for the others; a queued request goes.
    /// `false` when there is no such member.
    pub fn leave(&mut self, now: Instant, slot: Slot) -> bool {
        if self.member(slot).is_none() {
            return false;
        }
        if self.member(slot).is_some_and(|m| m.tx.is_some()) {
            self.end_transmission(slot, EndReason::Left);
        }
        self.queue.retain(|q| q.member != slot);
        // Streams it received: gone.
        let receiving = self.member(slot).map_or(0, |m| m.receiving);
        for t in slots(receiving) {
            self.events.push_back(GroupEvent::ReceptionEnded {
                receiver: slot,
                transmitter: t,
            });
        }
        self.arbiter.remove_member(slot);
        if let Some(m) = self.members.get_mut(slot.index()) {
            *m = None;
        }
        for t in slots(receiving) {
            self.maybe_arm_t11(now, t);
        }
        for m in self.members.iter_mut().flatten() {
            m.reception_grants.retain(|g| g.transmitter != slot);
        }
        self.events.push_back(GroupEvent::Left { member: slot });
        self.grant_next(now);
        true
    }

    /// A datagram on `from`'s control channel (authenticated and decrypted already). A
    /// malformed message is counted and ends the walk.
    pub fn handle_datagram(&mut self, now: Instant, from: Slot, datagram: &[u8]) {
        for m in tc::messages(datagram) {
            match m {
                Ok(m) => self.handle_message(now, from, &m),
                Err(_) => {
                    self.stats.malformed += 1;
                    break;
                }
            }
        }
    }

    /// One parsed transmission control message from `from`.
    pub fn handle_message(&mut self, now: Instant, from: Slot, msg: &TcMessage<'_>) {
        self.stats.received.add(msg.kind);
        if self.finished.is_some() || self.member(from).is_none() || !msg.kind.is_known() {
            self.stats.ignored += 1;
            return;
        }
        if msg.ack_required && msg.kind != MessageKind::TransmissionControlAck {
            let mut a = TcMessage::new(MessageKind::TransmissionControlAck, self.server_ssrc());
            a.fields.message_type = Some(msg.kind.message_type());
            a.fields.source = Some(Source::ControllingFunction);
            a.fields.message_name = Some(msg.kind.name());
            self.reply(now, from, &a);
        }
        match msg.kind {
            MessageKind::TransmissionControlAck => self.on_ack(from, msg),
            MessageKind::TransmissionRequest => self.on_request(now, from, msg),
            MessageKind::TransmissionEndRequest => self.on_end_request(now, from),
            MessageKind::QueuePositionRequest => self.on_queue_position_request(now, from),
            MessageKind::ReceiveMediaRequest => self.on_receive_media_request(now, from, msg),
            MessageKind::MediaReceptionEndRequest => {
                self.on_media_reception_end_request(now, from, msg)
            }
            _ => self.stats.ignored += 1,
        }
    }

    /// `packets` RTP packets arrived from `from` (before the arbiter dropped any).
    pub fn handle_media(&mut self, now: Instant, from: Slot, packets: u32) {
        if packets == 0 || self.finished.is_some() {
            return;
        }
        let busy = !self.is_idle();
        let (media_inactivity, revoke_after, t3) = (
            self.cfg.media_inactivity,
            self.cfg.revoke_after,
            self.cfg.t3_revoke,
        );
        let Some(m) = self.members.get_mut(from.index()).and_then(Option::as_mut) else {
            return;
        };
        if let Some(t) = m.tx.as_mut() {
            t.inactivity = Some(now + media_inactivity);
            if !t.first_media {
                t.first_media = true;
                t.t4 = None;
                self.events
                    .push_back(GroupEvent::MediaStarted { member: from });
            }
            return;
        }
        self.stats.unpermitted_media_packets += u64::from(packets);
        if let Some(r) = m.revoke.as_mut() {
            r.media_since = true;
            return;
        }
        if !(busy || m.recently_ended) {
            return;
        }
        m.unpermitted_run = m.unpermitted_run.saturating_add(packets);
        if m.unpermitted_run >= revoke_after {
            m.revoke = Some(Revoke {
                cause: RevokeCause::NoPermission,
                sent: 1,
                due: now + t3,
                media_since: false,
                acked: false,
            });
            self.send_revoked(from, RevokeCause::NoPermission);
        }
    }

    /// Time passed: fire everything due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Each pass handles what is due; a handler may arm new deadlines (never at or before
        // `now`, every interval being positive), so this ends.
        for _ in 0..(4 * MAX_MEMBERS + 8) {
            if self.finished.is_some() || !self.fire_one(now) {
                break;
            }
        }
    }

    fn fire_one(&mut self, now: Instant) -> bool {
        let due = |d: Option<Instant>| d.is_some_and(|d| d <= now);
        if due(self.t1) {
            self.t1 = None;
            self.finish(ReleaseReason::HangTimer);
            return true;
        }
        if due(self.t2) {
            self.t2 = None;
            if self.is_idle() && self.idle_sent <= self.cfg.c2_idle {
                for s in self.present_slots() {
                    if self.member(s).is_some_and(|m| !m.idle_acked) {
                        self.send_idle(s);
                    }
                }
                self.idle_sent += 1;
                if self.idle_sent <= self.cfg.c2_idle {
                    self.t2 = Some(now + self.cfg.t2_idle);
                }
            }
            return true;
        }
        for s in self.present_slots() {
            let Some(m) = self.member(s) else { continue };
            if let Some(t) = &m.tx {
                if due(t.max_duration) {
                    self.send_revoked(s, RevokeCause::MediaBurstTooLong);
                    self.end_transmission(s, EndReason::MaxDuration);
                    self.grant_next(now);
                    return true;
                }
                if due(t.inactivity) {
                    self.send_end_request(s, RevokeCause::Other);
                    self.end_transmission(s, EndReason::MediaTimeout);
                    self.grant_next(now);
                    return true;
                }
                if due(t.t11) {
                    self.send_end_request(s, RevokeCause::NoReceivingParticipant);
                    self.end_transmission(s, EndReason::NoReceivers);
                    self.grant_next(now);
                    return true;
                }
                if due(t.t4) {
                    let (c4, t4) = (self.cfg.c4_granted, self.cfg.t4_granted);
                    let again = self.member_mut(s).and_then(|m| m.tx.as_mut()).map(|t| {
                        t.t4 = None;
                        if !t.first_media && t.granted_sent <= c4 {
                            t.granted_sent += 1;
                            if t.granted_sent <= c4 {
                                t.t4 = Some(now + t4);
                            }
                            true
                        } else {
                            false
                        }
                    });
                    if again == Some(true) {
                        self.send_granted(s);
                    }
                    return true;
                }
            }
            if let Some(r) = m.revoke.filter(|r| r.due <= now) {
                let (c3, t3) = (self.cfg.c3_revoke, self.cfg.t3_revoke);
                let resend = !r.acked
                    && r.sent <= c3
                    && (r.media_since || r.cause != RevokeCause::NoPermission);
                let still_sending = r.media_since;
                if let Some(m) = self.member_mut(s) {
                    m.revoke = if resend {
                        Some(Revoke {
                            sent: r.sent + 1,
                            due: now + t3,
                            media_since: false,
                            ..r
                        })
                    } else if still_sending {
                        // Out of retransmissions or acked, still sending: keep dropping.
                        Some(Revoke {
                            due: now + t3,
                            media_since: false,
                            ..r
                        })
                    } else {
                        m.unpermitted_run = 0;
                        None
                    };
                }
                if resend {
                    self.send_revoked(s, r.cause);
                }
                return true;
            }
            if let Some(i) = m.reception_grants.iter().position(|g| g.due <= now) {
                let (c6, t6) = (self.cfg.c6_reception, self.cfg.t6_reception);
                let mut resend = None;
                if let Some(m) = self.member_mut(s) {
                    if let Some(g) = m.reception_grants.get_mut(i) {
                        if g.sent <= c6 {
                            g.sent += 1;
                            g.due = now + t6;
                            resend = Some(g.transmitter);
                        }
                    }
                    if resend.is_none() {
                        m.reception_grants.remove(i);
                    }
                }
                if let Some(t) = resend {
                    self.send_receive_media_response(s, Some(t), Ok(()));
                }
                return true;
            }
        }
        false
    }

    /// The call is released from outside (API, shutdown). Sends nothing.
    pub fn release(&mut self, reason: ReleaseReason) {
        self.finish(reason);
    }

    // ---- outputs ----------------------------------------------------------------------------

    /// The next message: written into `buf` (cleared first); returns its destination.
    #[must_use]
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Slot> {
        let (to, bytes) = self.out.pop_front()?;
        buf.clear();
        buf.extend_from_slice(&bytes);
        Some(to)
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<GroupEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished.is_some() {
            return None;
        }
        let mut next = [self.t1, self.t2].into_iter().flatten().min();
        let mut at = |d: Option<Instant>| {
            if let Some(d) = d {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        };
        for (_, m) in self.present() {
            if let Some(t) = &m.tx {
                at(t.t4);
                at(t.max_duration);
                at(t.inactivity);
                at(t.t11);
            }
            at(m.revoke.map(|r| r.due));
            at(m.reception_grants.iter().map(|g| g.due).min());
        }
        next
    }

    // ---- request handling -------------------------------------------------------------------

    fn on_ack(&mut self, from: Slot, msg: &TcMessage<'_>) {
        let name = msg.fields.message_name.unwrap_or(AppName::Mcv1);
        let Some(acked) = msg
            .fields
            .message_type
            .map(|t| MessageKind::from_wire(name, t))
        else {
            self.stats.ignored += 1;
            return;
        };
        let Some(m) = self.member_mut(from) else {
            return;
        };
        match acked {
            MessageKind::TransmissionGranted => {
                if let Some(t) = m.tx.as_mut() {
                    t.t4 = None;
                }
            }
            MessageKind::TransmissionRevoked => {
                if let Some(r) = m.revoke.as_mut() {
                    r.acked = true;
                }
            }
            MessageKind::TransmissionIdle => m.idle_acked = true,
            // An ack names no stream: it acks the oldest pending grant.
            MessageKind::ReceiveMediaResponse if !m.reception_grants.is_empty() => {
                m.reception_grants.remove(0);
            }
            _ => {}
        }
    }

    fn on_request(&mut self, now: Instant, from: Slot, msg: &TcMessage<'_>) {
        let Some(m) = self.member(from) else { return };
        if m.setup.receive_only {
            self.reject(now, from, RejectCause::ReceiveOnly);
            return;
        }
        if self.member_count() < 2 {
            self.reject(now, from, RejectCause::OnlyOneParticipant);
            return;
        }
        if m.tx.is_some() {
            // It holds the grant already: confirm.
            self.send_granted(from);
            return;
        }
        let indicator = msg
            .fields
            .transmission_indicator
            .unwrap_or(INDICATOR_NORMAL);
        let priority = msg
            .fields
            .transmission_priority
            .map_or(m.setup.priority, |p| p.min(m.setup.priority));
        let rank = Rank::of(indicator, priority);
        // Asked again while queued: judged afresh with the (possibly new) strength, keeping its
        // place among equals if it stays queued.
        let earlier = self.queue.iter().position(|q| q.member == from);
        let seq = earlier.map(|i| self.queue.remove(i).seq);
        if self.transmitting() < usize::from(self.cfg.max_transmitters.max(1)) {
            self.grant(now, from, rank, indicator);
            return;
        }
        // At the cap: pre-empt the weakest transmission if this request is stronger.
        let weakest = self
            .present()
            .filter_map(|(s, m)| m.tx.as_ref().map(|t| (s, t.rank, t.granted_at)))
            .min_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)));
        if let Some((loser, loser_rank, _)) = weakest {
            if rank > loser_rank {
                self.stats.preemptions += 1;
                self.events.push_back(GroupEvent::Preempted {
                    member: loser,
                    by: from,
                });
                let t3 = self.cfg.t3_revoke;
                if let Some(m) = self.member_mut(loser) {
                    m.revoke = Some(Revoke {
                        cause: RevokeCause::PreEmpted,
                        sent: 1,
                        due: now + t3,
                        media_since: false,
                        acked: false,
                    });
                }
                self.send_revoked(loser, RevokeCause::PreEmpted);
                self.end_transmission(loser, EndReason::Preempted);
                self.grant(now, from, rank, indicator);
                return;
            }
        }
        if self.cfg.queueing && (seq.is_some() || self.queue.len() < self.cfg.max_queue) {
            let seq = seq.unwrap_or_else(|| {
                self.queue_seq += 1;
                self.queue_seq
            });
            self.queue.push(Queued {
                member: from,
                rank,
                indicator,
                seq,
            });
            self.sort_queue();
            self.stats.queued += 1;
            let position = self.position(from).unwrap_or(255);
            self.events.push_back(GroupEvent::Queued {
                member: from,
                position,
            });
            self.send_queue_position(now, from);
        } else {
            self.reject(now, from, RejectCause::TransmissionLimitReached);
        }
    }

    fn on_end_request(&mut self, now: Instant, from: Slot) {
        let transmitting = self.member(from).is_some_and(|m| m.tx.is_some());
        let queued = self.queue.iter().any(|q| q.member == from);
        if let Some(m) = self.member_mut(from) {
            // An End Request answers a Revoked: stop repeating it.
            if m.revoke
                .is_some_and(|r| r.cause != RevokeCause::NoPermission)
            {
                m.revoke = None;
            }
        }
        if transmitting {
            self.send_end_response(now, from);
            self.end_transmission(from, EndReason::Completed);
            self.grant_next(now);
        } else {
            if queued {
                self.queue.retain(|q| q.member != from);
            }
            // No transmission (already ended by the server, or never granted): answer anyway so
            // the client's T101 stops.
            self.send_end_response(now, from);
        }
    }

    fn on_queue_position_request(&mut self, now: Instant, from: Slot) {
        self.send_queue_position(now, from);
    }

    /// The transmission a reception message names: by Video SSRC, by transmitting user, or the
    /// only one.
    fn named_transmission(&self, msg: &TcMessage<'_>) -> Option<Slot> {
        let f = &msg.fields;
        if let Some(v) = f.video_ssrc {
            return self
                .present()
                .find(|(_, m)| m.tx.as_ref().is_some_and(|t| t.video.get() == v))
                .map(|(s, _)| s);
        }
        if let Some(u) = f.transmitting_user_id {
            return self
                .present()
                .find(|(_, m)| m.tx.is_some() && m.setup.user_id == u)
                .map(|(s, _)| s);
        }
        let mut txs = self.present().filter(|(_, m)| m.tx.is_some());
        match (txs.next(), txs.next()) {
            (Some((s, _)), None) => Some(s),
            _ => None,
        }
    }

    fn on_receive_media_request(&mut self, now: Instant, from: Slot, msg: &TcMessage<'_>) {
        let Some(t) = self.named_transmission(msg) else {
            self.reply_receive_media(now, from, None, Err(ReceiveRejectCause::Other));
            return;
        };
        if t == from {
            self.reply_receive_media(now, from, Some(t), Err(ReceiveRejectCause::Other));
            return;
        }
        let Some(m) = self.member(from) else { return };
        if m.receiving & t.bit() == 0
            && m.receiving.count_ones() >= u32::from(self.cfg.max_streams_per_receiver)
        {
            self.reply_receive_media(
                now,
                from,
                Some(t),
                Err(ReceiveRejectCause::MaxSimultaneousStreams),
            );
            return;
        }
        let newly = self.route(t, from);
        if newly {
            let t6 = self.cfg.t6_reception;
            if let Some(m) = self.member_mut(from) {
                m.reception_grants.push(ReceptionGrant {
                    transmitter: t,
                    sent: 1,
                    due: now + t6,
                });
            }
            self.send_reception_notification(t, from);
            if let Some(tx) = self.member_mut(t).and_then(|m| m.tx.as_mut()) {
                tx.t11 = None;
            }
        }
        self.reply_receive_media(now, from, Some(t), Ok(()));
    }

    fn on_media_reception_end_request(&mut self, now: Instant, from: Slot, msg: &TcMessage<'_>) {
        let t = self.named_transmission(msg);
        if let Some(t) = t {
            self.unroute(t, from);
            if let Some(m) = self.member_mut(from) {
                m.reception_grants.retain(|g| g.transmitter != t);
            }
            self.maybe_arm_t11(now, t);
        }
        let mut r = TcMessage::new(MessageKind::MediaReceptionEndResponse, self.server_ssrc());
        let ids = t.and_then(|t| self.tx_ids(t));
        if let Some((user, audio, video)) = &ids {
            r.fields.transmitting_user_id = Some(user);
            r.fields.audio_ssrc = Some(audio.get());
            r.fields.video_ssrc = Some(video.get());
        }
        let bytes = self.emit(&r);
        self.reply_bytes(now, from, bytes);
    }

    // ---- transitions ------------------------------------------------------------------------

    fn grant(&mut self, now: Instant, to: Slot, rank: Rank, indicator: u16) {
        if !self.arbiter.permit(to) {
            self.finish(ReleaseReason::Released);
            return;
        }
        let Some(m) = self.member(to) else { return };
        let audio = self.ssrcs.allocate(m.setup.audio_ssrc);
        let video = self.ssrcs.allocate(m.setup.video_ssrc);
        let has_control = m.setup.control;
        let cfg = &self.cfg;
        let tx = Transmission {
            audio,
            video,
            rank,
            indicator,
            granted_at: now,
            first_media: false,
            granted_sent: 1,
            t4: has_control.then_some(now + cfg.t4_granted),
            max_duration: cfg.max_duration.map(|d| now + d),
            inactivity: Some(now + cfg.media_inactivity),
            t11: None,
        };
        let manual = cfg.reception_mode == ReceptionMode::Manual;
        let t11 = cfg.t11_stream_idle;
        if let Some(m) = self.member_mut(to) {
            m.tx = Some(tx);
            m.last_ssrcs = Some((audio, video));
            m.revoke = None;
            m.unpermitted_run = 0;
        }
        for m in self.members.iter_mut().flatten() {
            m.recently_ended = false;
        }
        self.queue.retain(|q| q.member != to);
        self.t1 = None;
        self.t2 = None;
        self.stats.grants += 1;
        self.send_granted(to);
        self.events.push_back(GroupEvent::Granted {
            member: to,
            audio_ssrc: audio,
            video_ssrc: video,
        });
        for r in self.present_slots() {
            if r == to {
                continue;
            }
            self.notify(r, to);
            if !manual {
                self.route(to, r);
            }
        }
        if manual {
            if let Some(t) = self.member_mut(to).and_then(|m| m.tx.as_mut()) {
                t.t11 = Some(now + t11);
            }
        }
    }

    /// Ends `s`'s transmission: grant gone, SSRCs freed, End Notify to the others. The caller
    /// then grants the next queued request or goes idle ([`Self::grant_next`]), or grants a
    /// pre-empting request.
    fn end_transmission(&mut self, s: Slot, reason: EndReason) {
        let Some(t) = self.member_mut(s).and_then(|m| m.tx.take()) else {
            return;
        };
        if let Some(m) = self.member_mut(s) {
            m.recently_ended = true;
        }
        self.arbiter.forbid(s);
        self.ssrcs.free(t.audio);
        self.ssrcs.free(t.video);
        let user = self
            .member(s)
            .map(|m| m.setup.user_id.clone())
            .unwrap_or_default();
        let mut n = TcMessage::new(MessageKind::TransmissionEndNotify, self.server_ssrc());
        n.fields.transmitting_user_id = Some(&user);
        n.fields.audio_ssrc = Some(t.audio.get());
        n.fields.video_ssrc = Some(t.video.get());
        let bytes = self.emit(&n);
        for r in self.present_slots() {
            if r == s {
                continue;
            }
            if let Some(m) = self.member_mut(r) {
                let received = m.receiving & s.bit() != 0;
                m.receiving &= !s.bit();
                m.reception_grants.retain(|g| g.transmitter != s);
                if received {
                    self.events.push_back(GroupEvent::ReceptionEnded {
                        receiver: r,
                        transmitter: s,
                    });
                }
            }
            self.push(r, bytes.clone());
        }
        self.events
            .push_back(GroupEvent::TransmissionEnded { member: s, reason });
    }

    /// Grants queued requests while there is room.
    fn grant_next(&mut self, now: Instant) {
        if self.finished.is_some() {
            return;
        }
        while self.transmitting() < usize::from(self.cfg.max_transmitters.max(1)) {
            if self.queue.is_empty() {
                break;
            }
            let q = self.queue.remove(0);
            if self.member(q.member).is_some() {
                self.grant(now, q.member, q.rank, q.indicator);
            }
        }
        if self.is_idle() && self.t1.is_none() && self.started {
            self.enter_idle(now);
        }
    }

    fn enter_idle(&mut self, now: Instant) {
        if !self.started || self.finished.is_some() {
            return;
        }
        self.idle_seq = self.idle_seq.wrapping_add(1);
        self.idle_sent = 1;
        for s in self.present_slots() {
            if let Some(m) = self.member_mut(s) {
                m.idle_acked = false;
            }
            self.send_idle(s);
        }
        self.t2 = Some(now + self.cfg.t2_idle);
        self.t1 = Some(now + self.cfg.t1_inactivity);
        self.events.push_back(GroupEvent::Idle);
    }

    fn finish(&mut self, reason: ReleaseReason) {
        if self.finished.is_some() {
            return;
        }
        for s in self.present_slots() {
            if let Some(t) = self.member_mut(s).and_then(|m| m.tx.take()) {
                self.ssrcs.free(t.audio);
                self.ssrcs.free(t.video);
                self.events.push_back(GroupEvent::TransmissionEnded {
                    member: s,
                    reason: EndReason::Released,
                });
            }
        }
        self.arbiter.release();
        for m in self.members.iter_mut().flatten() {
            m.receiving = 0;
            m.reception_grants.clear();
            m.revoke = None;
        }
        self.queue.clear();
        self.t1 = None;
        self.t2 = None;
        self.finished = Some(reason);
        self.events.push_back(GroupEvent::Released { reason });
    }

    /// `r` receives `t` from now on (Active SSRC List, arbiter route), within its C9 cap.
    /// Returns whether it was added.
    fn route(&mut self, t: Slot, r: Slot) -> bool {
        let cap = u32::from(self.cfg.max_streams_per_receiver);
        let Some(m) = self.member_mut(r) else {
            return false;
        };
        if m.receiving & t.bit() != 0 || m.receiving.count_ones() >= cap {
            return false;
        }
        m.receiving |= t.bit();
        self.arbiter.add_route(t, r);
        self.events.push_back(GroupEvent::ReceptionStarted {
            receiver: r,
            transmitter: t,
        });
        true
    }

    fn unroute(&mut self, t: Slot, r: Slot) {
        let Some(m) = self.member_mut(r) else { return };
        if m.receiving & t.bit() == 0 {
            return;
        }
        m.receiving &= !t.bit();
        self.arbiter.remove_route(t, r);
        self.events.push_back(GroupEvent::ReceptionEnded {
            receiver: r,
            transmitter: t,
        });
    }

    /// Manual mode: a transmission nobody receives starts T11.
    fn maybe_arm_t11(&mut self, now: Instant, t: Slot) {
        if self.cfg.reception_mode != ReceptionMode::Manual {
            return;
        }
        let anyone = self.present().any(|(_, m)| m.receiving & t.bit() != 0);
        let t11 = self.cfg.t11_stream_idle;
        if let Some(tx) = self.member_mut(t).and_then(|m| m.tx.as_mut()) {
            if !anyone && tx.t11.is_none() {
                tx.t11 = Some(now + t11);
            }
        }
    }

    fn sort_queue(&mut self) {
        self.queue
            .sort_by(|a, b| b.rank.cmp(&a.rank).then(a.seq.cmp(&b.seq)));
    }

    fn position(&self, s: Slot) -> Option<u8> {
        self.queue
            .iter()
            .position(|q| q.member == s)
            .map(|i| (i + 1).min(253) as u8)
    }

    // ---- messages ---------------------------------------------------------------------------

    fn server_ssrc(&self) -> u32 {
        self.ids.server_ssrc.get()
    }

    fn emit(&mut self, m: &TcMessage<'_>) -> Option<Vec<u8>> {
        let opts = EmitOptions {
            video_ssrc_field_id: self.cfg.video_ssrc_field_id,
        };
        // Identities are bounded at join; an oversized one only loses its message.
        let v = m.to_vec(&opts).ok()?;
        Some(v)
    }

    fn push(&mut self, to: Slot, bytes: Option<Vec<u8>>) {
        let Some(bytes) = bytes else { return };
        if !self.member(to).is_some_and(|m| m.setup.control) {
            return;
        }
        if let Ok(m) = TcMessage::parse(&bytes) {
            self.stats.sent.add(m.kind);
        }
        if self.out.len() >= MAX_OUT {
            self.out.pop_front();
        }
        self.out.push_back((to, bytes));
    }

    /// A reply drawn from `to`'s budget.
    fn reply_bytes(&mut self, now: Instant, to: Slot, bytes: Option<Vec<u8>>) {
        let Some(m) = self.member_mut(to) else { return };
        if !m.budget.take(now) {
            self.stats.rate_limited += 1;
            return;
        }
        self.push(to, bytes);
    }

    fn reply(&mut self, now: Instant, to: Slot, m: &TcMessage<'_>) {
        let bytes = self.emit(m);
        self.reply_bytes(now, to, bytes);
    }

    fn tx_ids(&self, t: Slot) -> Option<(String, Ssrc, Ssrc)> {
        let m = self.member(t)?;
        let (a, v) = match &m.tx {
            Some(tx) => (tx.audio, tx.video),
            None => m.last_ssrcs?,
        };
        Some((m.setup.user_id.clone(), a, v))
    }

    fn reject(&mut self, now: Instant, to: Slot, c: RejectCause) {
        self.events.push_back(GroupEvent::Rejected {
            member: to,
            cause: c,
        });
        let mut m = TcMessage::new(MessageKind::TransmissionRejected, self.server_ssrc());
        m.fields.reject_cause = Some(cause(c.into()));
        self.reply(now, to, &m);
    }

    fn send_granted(&mut self, to: Slot) {
        let Some(mm) = self.member(to) else { return };
        let Some(t) = mm.tx.clone() else { return };
        let mut m = TcMessage::new(MessageKind::TransmissionGranted, self.server_ssrc());
        m.ack_required = true;
        m.fields.duration = self
            .cfg
            .max_duration
            .map(|d| d.as_secs().min(u64::from(u16::MAX)) as u16);
        m.fields.audio_ssrc = Some(t.audio.get());
        m.fields.video_ssrc = Some(t.video.get());
        m.fields.transmission_priority = Some(t.rank.priority);
        m.fields.transmission_indicator = Some(t.indicator);
        m.fields.queue_size = Some(self.queue.len().min(usize::from(u16::MAX)) as u16);
        let bytes = self.emit(&m);
        self.push(to, bytes);
    }

    /// Media Transmission Notification of `t`'s transmission to `r`.
    fn notify(&mut self, r: Slot, t: Slot) {
        let Some(rm) = self.member(r) else { return };
        let permission = u16::from(!rm.setup.receive_only);
        let Some(tm) = self.member(t) else { return };
        let Some(tx) = tm.tx.clone() else { return };
        let user = tm.setup.user_id.clone();
        let mut m = TcMessage::new(
            MessageKind::MediaTransmissionNotification,
            self.server_ssrc(),
        );
        m.fields.transmitting_user_id = Some(&user);
        m.fields.audio_ssrc = Some(tx.audio.get());
        m.fields.video_ssrc = Some(tx.video.get());
        m.fields.permission_to_request = Some(permission);
        m.fields.transmission_indicator = Some(tx.indicator);
        m.fields.reception_mode = Some(self.cfg.reception_mode.wire());
        let bytes = self.emit(&m);
        self.push(r, bytes);
    }

    fn send_idle(&mut self, to: Slot) {
        let mut m = TcMessage::new(MessageKind::TransmissionIdle, self.server_ssrc());
        m.ack_required = true;
        m.fields.message_sequence_number = Some(self.idle_seq);
        m.fields.transmission_indicator = Some(INDICATOR_NORMAL);
        let bytes = self.emit(&m);
        self.push(to, bytes);
    }

    fn send_revoked(&mut self, to: Slot, c: RevokeCause) {
        let mut m = TcMessage::new(MessageKind::TransmissionRevoked, self.server_ssrc());
        m.ack_required = true;
        m.fields.reject_cause = Some(cause(c.into()));
        let bytes = self.emit(&m);
        self.push(to, bytes);
    }

    fn send_end_request(&mut self, to: Slot, c: RevokeCause) {
        let Some((user, audio, video)) = self.tx_ids(to) else {
            return;
        };
        let mut m = TcMessage::new(MessageKind::TransmissionEndRequest, self.server_ssrc());
        m.ack_required = true;
        m.fields.transmitting_user_id = Some(&user);
        m.fields.audio_ssrc = Some(audio.get());
        m.fields.video_ssrc = Some(video.get());
        m.fields.reject_cause = Some(cause(c.into()));
        let bytes = self.emit(&m);
        self.push(to, bytes);
    }

    fn send_end_response(&mut self, now: Instant, to: Slot) {
        let ids = self.tx_ids(to);
        let mut m = TcMessage::new(MessageKind::TransmissionEndResponse, self.server_ssrc());
        if let Some((user, audio, video)) = &ids {
            m.fields.transmitting_user_id = Some(user);
            m.fields.audio_ssrc = Some(audio.get());
            m.fields.video_ssrc = Some(video.get());
        }
        self.reply(now, to, &m);
    }

    fn send_queue_position(&mut self, now: Instant, to: Slot) {
        let (position, priority) = match self.queue.iter().find(|q| q.member == to) {
            Some(q) => (self.position(to).unwrap_or(255), q.rank.priority),
            None => (254, 0),
        };
        let user = self
            .member(to)
            .map(|m| m.setup.user_id.clone())
            .unwrap_or_default();
        let mut m = TcMessage::new(MessageKind::QueuePositionInfo, self.server_ssrc());
        m.ack_required = position != 254;
        m.fields.user_id = Some(&user);
        m.fields.queued_user_id = Some(&user);
        m.fields.queue_info = Some(QueueInfo { position, priority });
        let bytes = self.emit(&m);
        self.reply_bytes(now, to, bytes);
    }

    fn reply_receive_media(
        &mut self,
        now: Instant,
        to: Slot,
        t: Option<Slot>,
        result: Result<(), ReceiveRejectCause>,
    ) {
        if let Some(m) = self.member_mut(to) {
            if !m.budget.take(now) {
                self.stats.rate_limited += 1;
                return;
            }
        }
        self.send_receive_media_response(to, t, result);
    }

    fn send_receive_media_response(
        &mut self,
        to: Slot,
        t: Option<Slot>,
        result: Result<(), ReceiveRejectCause>,
    ) {
        let ids = t.and_then(|t| self.tx_ids(t));
        let mut m = TcMessage::new(MessageKind::ReceiveMediaResponse, self.server_ssrc());
        if let Some((user, audio, video)) = &ids {
            m.fields.transmitting_user_id = Some(user);
            m.fields.audio_ssrc = Some(audio.get());
            m.fields.video_ssrc = Some(video.get());
        }
        match result {
            Ok(()) => {
                m.ack_required = true;
                m.fields.result = Some(1);
            }
            Err(c) => {
                m.fields.result = Some(0);
                m.fields.reject_cause = Some(cause(c.into()));
            }
        }
        let bytes = self.emit(&m);
        self.push(to, bytes);
    }

    /// Media Reception Notification to transmitter `t`: `r` receives it.
    fn send_reception_notification(&mut self, t: Slot, r: Slot) {
        let Some((_, audio, video)) = self.tx_ids(t) else {
            return;
        };
        let user = self
            .member(r)
            .map(|m| m.setup.user_id.clone())
            .unwrap_or_default();
        let mut m = TcMessage::new(MessageKind::MediaReceptionNotification, self.server_ssrc());
        m.fields.user_id = Some(&user);
        m.fields.audio_ssrc = Some(audio.get());
        m.fields.video_ssrc = Some(video.get());
        let bytes = self.emit(&m);
        self.push(t, bytes);
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests;
