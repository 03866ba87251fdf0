//! The transmission control server of one one-to-one call, video push or video pull
//! (sans-IO). Group video calls have their own server, [`super::group::GroupServer`].
//!
//! The rules (`docs/design.md` in the repository, "Video push rules"; the protocol facts and
//! what is UNCONFIRMED in `docs/transmission-control.md`), for a push; a pull is the mirror,
//! with the callee as the transmitter:
//!
//! * The caller holds the grant from the moment the callee accepts (implicit request):
//!   **Transmission Granted** to the caller with its Audio/Video SSRC, **Media Transmission
//!   Notification** to the callee with Permission to Request = 0.
//! * Granted is retransmitted every T4 up to C4 times until the first media packet (or an Ack).
//! * The callee is receive only: its Transmission Request gets **Rejected #5**; its media is
//!   dropped by the arbiter and, when it keeps sending, gets **Revoked #3** (retransmitted on T3
//!   while it still sends, at most C3 times).
//! * The caller's **Transmission End Request** gets End Response, the callee gets Transmission
//!   End Notify, and the call is released (reason `transmission_completed`).
//! * Safety nets: the optional maximum Duration (Revoked #2), media inactivity, T1 before any
//!   media, and — without a control channel — the caller's RTCP BYE.
//! * Every message with the `x` bit gets a Transmission Control Ack. Replies to a party are
//!   rate limited (a token bucket per party), so no input makes the server answer with more than
//!   a bounded number of messages.
//!
//! Inputs: [`TransmissionControlServer::grant`], [`TransmissionControlServer::handle_datagram`],
//! [`TransmissionControlServer::handle_media`], [`TransmissionControlServer::handle_rtcp_bye`],
//! [`TransmissionControlServer::handle_timeout`], [`TransmissionControlServer::release`].
//! Outputs: `poll_transmit`, `poll_event`, `poll_timeout`.

use super::arbiter::Arbiter;
use super::bucket::TokenBucket;
use super::snapshot::{RevokeSnapshot, TcPhase, TcSnapshot, TcStatsSnapshot};
use super::timer::{Timer, TimerTable};
use super::{Party, ReleaseReason};
use crate::ids::Ssrc;
use crate::wire::tc::{
    self, AppName, CauseField, EmitOptions, MessageKind, RejectCause, RevokeCause, Source,
    TcMessage,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reception Mode sent in Media Transmission Notification for a 1:1 push. **UNCONFIRMED**
/// (`docs/transmission-control.md` in the repository, "What the sources leave open"):
/// automatic (0), since there is one receiver.
pub const PUSH_RECEPTION_MODE: u16 = 0;

/// Timers, counters and limits of the transmission control server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct TcConfig {
    /// T4, Transmission Granted retransmission interval (spec default 1 s).
    pub t4_granted: Duration,
    /// C4, Granted retransmissions before giving up (spec default 3).
    pub c4_granted: u32,
    /// T3, Transmission Revoked retransmission interval (spec default 1 s).
    pub t3_revoke: Duration,
    /// Revoked retransmissions at most (no spec counter; 3 like C4).
    pub c3_revoke: u32,
    /// T1, private-call hang timer: release if no media flowed this long after the grant.
    pub t1_hang: Duration,
    /// No media from the granted caller for this long completes the transmission.
    pub media_inactivity: Duration,
    /// Maximum transmission duration, sent as Duration in Granted; `None` = unlimited.
    pub max_duration: Option<Duration>,
    /// Callee media packets tolerated (dropped) before it gets Revoked #3.
    pub callee_media_revoke_after: u32,
    /// Field ID written for Video SSRC (23 or 24).
    pub video_ssrc_field_id: u8,
    /// Replies (acks, rejections) a party may draw per second, sustained.
    pub reply_rate_per_sec: u32,
    /// Replies a party may draw in a burst.
    pub reply_burst: u32,
}

impl Default for TcConfig {
    fn default() -> Self {
        TcConfig {
            t4_granted: Duration::from_secs(1),
            c4_granted: 3,
            t3_revoke: Duration::from_secs(1),
            c3_revoke: 3,
            t1_hang: Duration::from_secs(30),
            media_inactivity: Duration::from_secs(10),
            max_duration: None,
            callee_media_revoke_after: 5,
            video_ssrc_field_id: tc::VIDEO_SSRC_FIELD_ID,
            reply_rate_per_sec: 20,
            reply_burst: 40,
        }
    }
}

/// Who the call is between and which SSRCs the transmission uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identities {
    /// The caller's MCVideo ID (User ID of the transmitting user).
    pub caller_id: String,
    /// The callee's MCVideo ID.
    pub callee_id: String,
    /// Audio SSRC of the transmitting user.
    pub audio_ssrc: Ssrc,
    /// Video SSRC of the transmitting user.
    pub video_ssrc: Ssrc,
    /// The server's own SSRC on the control channel.
    pub server_ssrc: Ssrc,
}

/// What the server reports to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcEvent {
    /// The caller was granted the transmission.
    Granted {
        /// Audio SSRC in Granted.
        audio_ssrc: Ssrc,
        /// Video SSRC in Granted.
        video_ssrc: Ssrc,
    },
    /// The first media packet from the caller arrived.
    MediaStarted,
    /// The transmission ended; the call must be released for `reason`.
    Ended {
        /// Why.
        reason: ReleaseReason,
    },
}

/// Transmission control message counters by [`MessageKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Counters of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcStats {
    /// Messages received, by kind.
    pub received: KindCounters,
    /// Messages sent, by kind.
    pub sent: KindCounters,
    /// Datagrams on the control channel that did not parse.
    pub malformed: u64,
    /// Well-formed messages that had nothing to do in their state (unknown, unexpected).
    pub ignored: u64,
    /// Replies not sent because the party exceeded its reply budget.
    pub rate_limited: u64,
    /// Media packets from the callee (all dropped).
    pub callee_media_packets: u64,
    /// Media packets from the caller reported to the server.
    pub caller_media_packets: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    Transmitting,
    Finished(ReleaseReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Granted,
    Notification,
    Rejected(RejectCause),
    Revoked(RevokeCause),
    EndRequest(RevokeCause),
    EndResponse,
    EndNotify,
    Ack { name: AppName, message_type: u8 },
    ReceiveMediaResponse { granted: bool },
    MediaReceptionEndResponse,
}

#[derive(Debug, Clone, Copy)]
struct Revoke {
    sent: u32,
    media_since: bool,
    acked: bool,
}

/// Queued transmits at most; beyond this the oldest is dropped (cannot happen when the driver
/// drains after each input, which the drain order requires).
const MAX_QUEUED: usize = 64;

/// The transmission control server of one call. See the [module docs](self).
#[derive(Debug)]
pub struct TransmissionControlServer {
    cfg: TcConfig,
    arbiter: Arc<Arbiter>,
    ids: Identities,
    /// The party that transmits: the caller in a push, the callee in a pull.
    transmitter: Party,
    control: [bool; 2],
    phase: Phase,
    timers: TimerTable,
    granted_sent: u32,
    first_media: bool,
    callee_media_run: u32,
    revoke: Option<Revoke>,
    /// Replies per party: [`TcConfig::reply_rate_per_sec`], [`TcConfig::reply_burst`].
    budget: [TokenBucket; 2],
    out: VecDeque<(Party, Out)>,
    events: VecDeque<TcEvent>,
    stats: TcStats,
}

impl TransmissionControlServer {
    /// A server for one call. `control[party]` says whether that party negotiated a
    /// transmission control channel (`m=application ... MCVideo` with a non-zero port); without
    /// it nothing is sent to that party.
    pub fn new(cfg: TcConfig, arbiter: Arc<Arbiter>, ids: Identities, control: [bool; 2]) -> Self {
        let budget = TokenBucket::new(
            f64::from(cfg.reply_rate_per_sec),
            f64::from(cfg.reply_burst),
        );
        TransmissionControlServer {
            cfg,
            arbiter,
            ids,
            transmitter: Party::Caller,
            control,
            phase: Phase::Pending,
            timers: TimerTable::default(),
            granted_sent: 0,
            first_media: false,
            callee_media_run: 0,
            revoke: None,
            budget: [budget; 2],
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: TcStats::default(),
        }
    }

    /// The server's state at `now` for a relay that takes the call over (see
    /// [`crate::control::snapshot`]). Take it after draining `poll_transmit` and `poll_event`:
    /// queued transmits and events are not part of it.
    pub fn snapshot(&self, now: Instant) -> TcSnapshot {
        let a = self.arbiter.snapshot();
        TcSnapshot {
            config: self.cfg.clone(),
            caller_id: self.ids.caller_id.clone(),
            callee_id: self.ids.callee_id.clone(),
            audio_ssrc: self.ids.audio_ssrc.get(),
            video_ssrc: self.ids.video_ssrc.get(),
            server_ssrc: self.ids.server_ssrc.get(),
            transmitter: self.transmitter,
            control: self.control,
            phase: match self.phase {
                Phase::Pending => TcPhase::Pending,
                Phase::Transmitting => TcPhase::Transmitting,
                Phase::Finished(r) => TcPhase::Finished(r),
            },
            arbiter_state: a.state,
            arbiter_holder: a.holder,
            arbiter_epoch: a.epoch,
            timers: self.timers.remaining_ms(now),
            granted_sent: self.granted_sent,
            first_media: self.first_media,
            receiver_media_run: self.callee_media_run,
            revoke: self.revoke.map(|r| RevokeSnapshot {
                sent: r.sent,
                media_since: r.media_since,
                acked: r.acked,
            }),
            stats: TcStatsSnapshot {
                received: self.stats.received.to_vec(),
                sent: self.stats.sent.to_vec(),
                malformed: self.stats.malformed,
                ignored: self.stats.ignored,
                rate_limited: self.stats.rate_limited,
                callee_media_packets: self.stats.callee_media_packets,
                caller_media_packets: self.stats.caller_media_packets,
            },
        }
    }

    /// The server of [`snapshot`](Self::snapshot) `s`, its timers armed as much later than
    /// `now` as they were left at the snapshot, with an arbiter in the snapshot's state (the
    /// forwarding side shares it: [`arbiter`](Self::arbiter)). Reply budgets start full.
    pub fn restore(s: &TcSnapshot, now: Instant) -> Self {
        let arbiter = Arc::new(Arbiter::restored(crate::control::arbiter::Snapshot {
            state: s.arbiter_state,
            holder: s.arbiter_holder,
            epoch: s.arbiter_epoch,
        }));
        let mut t = TransmissionControlServer::new(
            s.config.clone(),
            arbiter,
            Identities {
                caller_id: s.caller_id.clone(),
                callee_id: s.callee_id.clone(),
                audio_ssrc: Ssrc(s.audio_ssrc),
                video_ssrc: Ssrc(s.video_ssrc),
                server_ssrc: Ssrc(s.server_ssrc),
            },
            s.control,
        )
        .with_transmitter(s.transmitter);
        t.phase = match s.phase {
            TcPhase::Pending => Phase::Pending,
            TcPhase::Transmitting => Phase::Transmitting,
            TcPhase::Finished(r) => Phase::Finished(r),
        };
        t.timers = TimerTable::from_remaining_ms(now, &s.timers);
        t.granted_sent = s.granted_sent;
        t.first_media = s.first_media;
        t.callee_media_run = s.receiver_media_run;
        t.revoke = s.revoke.map(|r| Revoke {
            sent: r.sent,
            media_since: r.media_since,
            acked: r.acked,
        });
        t.stats = TcStats {
            received: KindCounters::from_slice(&s.stats.received),
            sent: KindCounters::from_slice(&s.stats.sent),
            malformed: s.stats.malformed,
            ignored: s.stats.ignored,
            rate_limited: s.stats.rate_limited,
            callee_media_packets: s.stats.callee_media_packets,
            caller_media_packets: s.stats.caller_media_packets,
        };
        t
    }

    /// Changes which parties have a control channel (e.g. once the callee's answer is known).
    pub fn set_control_channels(&mut self, control: [bool; 2]) {
        self.control = control;
    }

    /// The identities and SSRCs in use.
    pub fn identities(&self) -> &Identities {
        &self.ids
    }

    /// The shared arbiter.
    pub fn arbiter(&self) -> &Arc<Arbiter> {
        &self.arbiter
    }

    /// Counters.
    pub fn stats(&self) -> &TcStats {
        &self.stats
    }

    /// Whether the caller's first media packet has arrived.
    pub fn media_started(&self) -> bool {
        self.first_media
    }

    /// `Some(reason)` once the transmission is over.
    pub fn finished(&self) -> Option<ReleaseReason> {
        match self.phase {
            Phase::Finished(r) => Some(r),
            _ => None,
        }
    }

    /// Makes `party` the transmitter (the callee in a video pull, TS 23.281 §7.3.2.3); the
    /// other party is receive only. The caller by default (video push).
    #[must_use]
    pub fn with_transmitter(mut self, party: Party) -> Self {
        self.transmitter = party;
        self
    }

    /// The party that transmits.
    pub fn transmitter(&self) -> Party {
        self.transmitter
    }

    fn receiver(&self) -> Party {
        self.transmitter.peer()
    }

    fn transmitter_id(&self) -> &str {
        match self.transmitter {
            Party::Caller => &self.ids.caller_id,
            Party::Callee => &self.ids.callee_id,
        }
    }

    /// Whether the transmitter currently holds the grant.
    pub fn is_transmitting(&self) -> bool {
        self.phase == Phase::Transmitting
    }

    /// The callee accepted: grant the transmitter (implicit request, seed steps 9–10).
    pub fn grant(&mut self, now: Instant) {
        if self.phase != Phase::Pending {
            return;
        }
        let (tx, rx) = (self.transmitter, self.receiver());
        if self.arbiter.grant(tx).is_err() {
            // Released underneath us (engine shutdown): nothing to grant.
            self.finish(ReleaseReason::Released);
            return;
        }
        self.phase = Phase::Transmitting;
        self.queue(tx, Out::Granted);
        self.granted_sent = 1;
        self.queue(rx, Out::Notification);
        if self.control[tx.index()] {
            self.timers.set(Timer::T4Granted, now + self.cfg.t4_granted);
        }
        self.timers.set(Timer::T1Hang, now + self.cfg.t1_hang);
        if let Some(d) = self.cfg.max_duration {
            self.timers.set(Timer::MaxDuration, now + d);
        }
        self.events.push_back(TcEvent::Granted {
            audio_ssrc: self.ids.audio_ssrc,
            video_ssrc: self.ids.video_ssrc,
        });
    }

    /// A datagram arrived on `from`'s control channel (already authenticated and decrypted if
    /// SRTCP protects it). Every message in it is handled; a malformed one is counted and ends
    /// the walk.
    pub fn handle_datagram(&mut self, now: Instant, from: Party, datagram: &[u8]) {
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
    pub fn handle_message(&mut self, now: Instant, from: Party, msg: &TcMessage<'_>) {
        self.stats.received.add(msg.kind);
        if !msg.kind.is_known() {
            self.stats.ignored += 1;
            return;
        }
        if msg.ack_required && msg.kind != MessageKind::TransmissionControlAck {
            self.reply(
                now,
                from,
                Out::Ack {
                    name: msg.kind.name(),
                    message_type: msg.kind.message_type(),
                },
            );
        }
        let transmitting = self.phase == Phase::Transmitting;
        let (tx, rx) = (self.transmitter, self.receiver());
        let from_tx = from == tx;
        match (from_tx, msg.kind) {
            (_, MessageKind::TransmissionControlAck) => self.handle_ack(from, msg),
            (true, MessageKind::TransmissionRequest) if transmitting => {
                // The transmitter already holds the grant: confirm it again.
                self.reply(now, tx, Out::Granted);
            }
            (true, MessageKind::TransmissionEndRequest) if transmitting => {
                self.reply(now, tx, Out::EndResponse);
                self.queue(rx, Out::EndNotify);
                self.finish(ReleaseReason::TransmissionCompleted);
            }
            (false, MessageKind::TransmissionRequest) => {
                self.reply(now, rx, Out::Rejected(RejectCause::ReceiveOnly));
            }
            (false, MessageKind::ReceiveMediaRequest) => {
                self.reply(
                    now,
                    rx,
                    Out::ReceiveMediaResponse {
                        granted: transmitting,
                    },
                );
            }
            (false, MessageKind::MediaReceptionEndRequest) => {
                self.reply(now, rx, Out::MediaReceptionEndResponse);
                if transmitting {
                    // Nobody receives any more: stop the transmitter (server End Request, #8).
                    self.queue(tx, Out::EndRequest(RevokeCause::NoReceivingParticipant));
                    self.finish(ReleaseReason::ReceptionEnded);
                }
            }
            _ => self.stats.ignored += 1,
        }
    }

    fn handle_ack(&mut self, from: Party, msg: &TcMessage<'_>) {
        let acked = msg
            .fields
            .message_type
            .map(|t| MessageKind::from_wire(msg.fields.message_name.unwrap_or(AppName::Mcv1), t));
        match (from == self.transmitter, acked) {
            (true, Some(MessageKind::TransmissionGranted)) => {
                self.timers.stop(Timer::T4Granted);
            }
            (false, Some(MessageKind::TransmissionRevoked)) => {
                if let Some(r) = &mut self.revoke {
                    r.acked = true;
                }
            }
            _ => {}
        }
    }

    /// `packets` media packets (RTP) arrived from `from`. The forwarding side decides what
    /// passes (the arbiter); this tells the server about activity.
    pub fn handle_media(&mut self, now: Instant, from: Party, packets: u32) {
        if packets == 0 {
            return;
        }
        match from {
            Party::Caller => self.stats.caller_media_packets += u64::from(packets),
            Party::Callee => self.stats.callee_media_packets += u64::from(packets),
        }
        let rx = self.receiver();
        match from == self.transmitter {
            true => {
                if self.phase != Phase::Transmitting {
                    return;
                }
                if !self.first_media {
                    self.first_media = true;
                    self.timers.stop(Timer::T4Granted);
                    self.timers.stop(Timer::T1Hang);
                    self.events.push_back(TcEvent::MediaStarted);
                }
                self.timers
                    .set(Timer::MediaInactivity, now + self.cfg.media_inactivity);
            }
            false => {
                if matches!(self.phase, Phase::Finished(_)) {
                    return;
                }
                match &mut self.revoke {
                    Some(r) => r.media_since = true,
                    None => {
                        self.callee_media_run = self.callee_media_run.saturating_add(packets);
                        if self.callee_media_run >= self.cfg.callee_media_revoke_after {
                            self.revoke = Some(Revoke {
                                sent: 1,
                                media_since: false,
                                acked: false,
                            });
                            self.queue(rx, Out::Revoked(RevokeCause::NoPermission));
                            self.timers.set(Timer::T3Revoke, now + self.cfg.t3_revoke);
                        }
                    }
                }
            }
        }
    }

    /// An RTCP BYE arrived from `from`. Completes the transmission only for a transmitter
    /// without a control channel (with one, it ends with Transmission End Request).
    pub fn handle_rtcp_bye(&mut self, _now: Instant, from: Party) {
        if from == self.transmitter
            && self.phase == Phase::Transmitting
            && !self.control[self.transmitter.index()]
        {
            self.queue(self.receiver(), Out::EndNotify);
            self.finish(ReleaseReason::RtcpBye);
        }
    }

    /// Time passed: fire every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let (tx, rx) = (self.transmitter, self.receiver());
        while let Some(t) = self.timers.pop_expired(now) {
            if matches!(self.phase, Phase::Finished(_)) {
                break;
            }
            match t {
                Timer::T4Granted => {
                    if self.phase == Phase::Transmitting
                        && !self.first_media
                        && self.granted_sent <= self.cfg.c4_granted
                    {
                        self.queue(tx, Out::Granted);
                        self.granted_sent += 1;
                        if self.granted_sent <= self.cfg.c4_granted {
                            self.timers.set(Timer::T4Granted, now + self.cfg.t4_granted);
                        }
                    }
                }
                Timer::T3Revoke => match self.revoke {
                    Some(r) if r.media_since && !r.acked && r.sent <= self.cfg.c3_revoke => {
                        self.queue(rx, Out::Revoked(RevokeCause::NoPermission));
                        self.revoke = Some(Revoke {
                            sent: r.sent + 1,
                            media_since: false,
                            acked: false,
                        });
                        self.timers.set(Timer::T3Revoke, now + self.cfg.t3_revoke);
                    }
                    Some(r) if r.media_since => {
                        // Acked or out of retransmissions and still sending: keep dropping
                        // silently, and look again later.
                        self.revoke = Some(Revoke {
                            media_since: false,
                            ..r
                        });
                        self.timers.set(Timer::T3Revoke, now + self.cfg.t3_revoke);
                    }
                    _ => {
                        // The callee went quiet: a later burst starts a fresh count.
                        self.revoke = None;
                        self.callee_media_run = 0;
                    }
                },
                Timer::MaxDuration => {
                    if self.phase == Phase::Transmitting {
                        let _ = self.arbiter.revoke();
                        self.queue(tx, Out::Revoked(RevokeCause::MediaBurstTooLong));
                        self.queue(rx, Out::EndNotify);
                        self.finish(ReleaseReason::MaxDuration);
                    }
                }
                Timer::MediaInactivity => {
                    if self.phase == Phase::Transmitting {
                        self.queue(rx, Out::EndNotify);
                        self.finish(ReleaseReason::MediaTimeout);
                    }
                }
                Timer::T1Hang => {
                    if self.phase == Phase::Transmitting && !self.first_media {
                        self.queue(rx, Out::EndNotify);
                        self.finish(ReleaseReason::HangTimer);
                    }
                }
                Timer::OfferTimeout => {}
            }
        }
    }

    /// The call is being released from outside (API, callee rejected, shutdown). Sends
    /// nothing; the signalling server tells the clients.
    pub fn release(&mut self, reason: ReleaseReason) {
        self.finish(reason);
    }

    fn finish(&mut self, reason: ReleaseReason) {
        if matches!(self.phase, Phase::Finished(_)) {
            return;
        }
        let _ = self.arbiter.end();
        self.phase = Phase::Finished(reason);
        self.timers.stop_all();
        self.revoke = None;
        self.events.push_back(TcEvent::Ended { reason });
    }

    /// A reply drawn from `to`'s budget.
    fn reply(&mut self, now: Instant, to: Party, out: Out) {
        let Some(b) = self.budget.get_mut(to.index()) else {
            return;
        };
        if !b.take(now) {
            self.stats.rate_limited += 1;
            return;
        }
        self.queue(to, out);
    }

    fn queue(&mut self, to: Party, out: Out) {
        if !self.control.get(to.index()).copied().unwrap_or(false) {
            return;
        }
        if self.out.len() >= MAX_QUEUED {
            self.out.pop_front();
        }
        self.out.push_back((to, out));
    }

    /// The next message to send: written into `buf` (cleared first); returns its destination.
    #[must_use]
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Party> {
        while let Some((to, out)) = self.out.pop_front() {
            let msg = self.build(out);
            buf.clear();
            let Ok(len) = msg.buffer_len() else {
                continue; // identities are validated at call setup; unreachable in practice
            };
            buf.resize(len, 0);
            let opts = EmitOptions {
                video_ssrc_field_id: self.cfg.video_ssrc_field_id,
            };
            if msg.emit(buf, &opts).is_ok() {
                self.stats.sent.add(msg.kind);
                return Some(to);
            }
        }
        None
    }

    fn build(&self, out: Out) -> TcMessage<'_> {
        let ids = &self.ids;
        let transmitting_user = self.transmitter_id();
        let (kind, ack) = match out {
            Out::Granted => (MessageKind::TransmissionGranted, false),
            Out::Notification => (MessageKind::MediaTransmissionNotification, false),
            Out::Rejected(_) => (MessageKind::TransmissionRejected, false),
            Out::Revoked(_) => (MessageKind::TransmissionRevoked, true),
            Out::EndRequest(_) => (MessageKind::TransmissionEndRequest, true),
            Out::EndResponse => (MessageKind::TransmissionEndResponse, false),
            Out::EndNotify => (MessageKind::TransmissionEndNotify, false),
            Out::Ack { .. } => (MessageKind::TransmissionControlAck, false),
            Out::ReceiveMediaResponse { .. } => (MessageKind::ReceiveMediaResponse, false),
            Out::MediaReceptionEndResponse => (MessageKind::MediaReceptionEndResponse, false),
        };
        let mut m = TcMessage::new(kind, ids.server_ssrc.get());
        m.ack_required = ack;
        let f = &mut m.fields;
        let transmission = |f: &mut tc::Fields<'_>| {
            f.audio_ssrc = Some(ids.audio_ssrc.get());
            f.video_ssrc = Some(ids.video_ssrc.get());
        };
        match out {
            Out::Granted => {
                f.duration = self
                    .cfg
                    .max_duration
                    .map(|d| d.as_secs().min(u64::from(u16::MAX)) as u16);
                transmission(f);
            }
            Out::Notification => {
                f.transmitting_user_id = Some(transmitting_user);
                transmission(f);
                f.permission_to_request = Some(0);
                f.reception_mode = Some(PUSH_RECEPTION_MODE);
            }
            Out::Rejected(cause) => {
                f.reject_cause = Some(CauseField {
                    code: cause.into(),
                    phrase: "",
                });
            }
            Out::Revoked(cause) => {
                f.reject_cause = Some(CauseField {
                    code: cause.into(),
                    phrase: "",
                });
            }
            Out::EndRequest(cause) => {
                f.transmitting_user_id = Some(transmitting_user);
                transmission(f);
                f.reject_cause = Some(CauseField {
                    code: cause.into(),
                    phrase: "",
                });
            }
            Out::EndResponse | Out::EndNotify | Out::MediaReceptionEndResponse => {
                f.transmitting_user_id = Some(transmitting_user);
                transmission(f);
            }
            Out::Ack { name, message_type } => {
                f.message_type = Some(message_type);
                f.source = Some(Source::ControllingFunction);
                f.message_name = Some(name);
            }
            Out::ReceiveMediaResponse { granted } => {
                f.result = Some(u16::from(granted));
                if granted {
                    f.transmitting_user_id = Some(transmitting_user);
                    transmission(f);
                } else {
                    f.reject_cause = Some(CauseField {
                        code: 255,
                        phrase: "",
                    });
                }
            }
        }
        m
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<TcEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::control::arbiter::TransmissionState;

    fn server(cfg: TcConfig) -> TransmissionControlServer {
        TransmissionControlServer::new(
            cfg,
            Arc::new(Arbiter::new()),
            Identities {
                caller_id: "sip:alice@mcx".into(),
                callee_id: "sip:bob@mcx".into(),
                audio_ssrc: Ssrc(0xa0a0_a0a0),
                video_ssrc: Ssrc(0xb0b0_b0b0),
                server_ssrc: Ssrc(0x5e5e_5e5e),
            },
            [true, true],
        )
    }

    fn drain(s: &mut TransmissionControlServer) -> Vec<(Party, MessageKind, Vec<u8>)> {
        let mut buf = Vec::new();
        let mut v = Vec::new();
        while let Some(to) = s.poll_transmit(&mut buf) {
            let kind = TcMessage::parse(&buf).unwrap().kind;
            v.push((to, kind, buf.clone()));
        }
        v
    }

    fn kinds(v: &[(Party, MessageKind, Vec<u8>)]) -> Vec<(Party, MessageKind)> {
        v.iter().map(|(p, k, _)| (*p, *k)).collect()
    }

    #[test]
    fn grant_sends_granted_and_notification() {
        let t0 = Instant::now();
        let mut s = server(TcConfig::default());
        s.grant(t0);
        let out = drain(&mut s);
        assert_eq!(
            kinds(&out),
            [
                (Party::Caller, MessageKind::TransmissionGranted),
                (Party::Callee, MessageKind::MediaTransmissionNotification)
            ]
        );
        let g = TcMessage::parse(&out[0].2).unwrap();
        assert_eq!(g.fields.audio_ssrc, Some(0xa0a0_a0a0));
        assert_eq!(g.fields.video_ssrc, Some(0xb0b0_b0b0));
        assert_eq!(g.ssrc, 0x5e5e_5e5e);
        let n = TcMessage::parse(&out[1].2).unwrap();
        assert_eq!(n.fields.permission_to_request, Some(0));
        assert_eq!(n.fields.transmitting_user_id, Some("sip:alice@mcx"));
        assert!(s.arbiter().may_forward(Party::Caller));
        assert_eq!(
            s.poll_event(),
            Some(TcEvent::Granted {
                audio_ssrc: Ssrc(0xa0a0_a0a0),
                video_ssrc: Ssrc(0xb0b0_b0b0)
            })
        );
    }

    #[test]
    fn no_control_channel_means_no_messages() {
        let t0 = Instant::now();
        let mut s = server(TcConfig::default());
        s.set_control_channels([false, false]);
        s.grant(t0);
        assert!(drain(&mut s).is_empty());
        assert!(s.arbiter().may_forward(Party::Caller));
        s.handle_rtcp_bye(t0, Party::Caller);
        assert_eq!(s.finished(), Some(ReleaseReason::RtcpBye));
        assert_eq!(s.arbiter().state(), TransmissionState::Ended);
    }

    #[test]
    fn reply_budget_bounds_answers_to_a_flood() {
        let t0 = Instant::now();
        let mut s = server(TcConfig::default());
        s.grant(t0);
        drain(&mut s);
        let mut req = TcMessage::new(MessageKind::TransmissionRequest, 7);
        req.ack_required = true;
        let bytes = req.to_vec(&EmitOptions::default()).unwrap();
        for _ in 0..10_000 {
            s.handle_datagram(t0, Party::Callee, &bytes);
        }
        let out = drain(&mut s);
        assert!(out.len() <= 64, "{} replies", out.len());
        assert!(s.stats().rate_limited > 9_000);
    }
}
