//! The transmission control server (the server side of TS 24.581), sans-IO: **one server for
//! every kind of call**. A call is a set of members, each with what it may do; the
//! [`Procedure`] says which rules apply:
//!
//! * a **private call** (one-to-one video push, or pull) is two members where the designated
//!   transmitter is granted implicitly when the call is established ([`start`]), with the SSRCs
//!   the call procedure chose: **Transmission Granted** to it (repeated on T4 up to C4 until the
//!   first media) and **Media Transmission Notification** (Permission to Request = 0) to the
//!   receive-only member. The receiver's Transmission Request gets **Rejected #5** and its media
//!   **Revoked #3** (repeated on T3 while it keeps sending, C3). The call is released when the
//!   transmission ends: the transmitter's **Transmission End Request** (End Response to it,
//!   **End Notify** to the receiver), its RTCP BYE without a control channel, media
//!   inactivity, the maximum Duration (Revoked #2), T1 before any media (the hang timer), or
//!   the receiver's Media Reception End Request (server End Request #8 to the transmitter).
//!   Receive Media Request is answered with the current grant;
//! * a **group call** grants while fewer than **Cx** members transmit
//!   ([`TcConfig::max_transmitters`]). Each grant allocates a video (and audio) SSRC unique
//!   across the engine ([`SsrcRegistry`]), the member's `a=ssrc` when free. Granted announces
//!   them; every other member gets **Media Transmission Notification**. At the cap a request
//!   stronger than the weakest transmission **pre-empts** it (Revoked #4 to the loser);
//!   otherwise it is **queued** (Queue Position Info; Queue Position Request answered at any
//!   time) or, with queueing off or the queue full, **Rejected #1**. Strength is the
//!   Transmission Indicator class (emergency > imminent peril > normal), then Transmission
//!   Priority (capped at the member's own), then who asked first. Receive-only members get
//!   **Rejected #5**; a lone member **Rejected #3**. **End**: End Response to the transmitter,
//!   **End Notify** to the others, the next queued request granted. When nobody transmits:
//!   **Transmission Idle** to all (with the `x` bit, retransmitted every T2 to those that did
//!   not ack, C2 times) and **T1** (inactivity): when it runs out the call is released. Media
//!   without permission gets **Revoked #3** after [`TcConfig::revoke_after`] packets (while
//!   somebody transmits, or right after its own transmission ended). Safety nets per
//!   transmission: Granted on T4 until the first media (C4), the maximum Duration (Revoked #2),
//!   media inactivity (server Transmission End Request #255). **Reception control**: each
//!   receiver has an **Active SSRC List** capped at **C9**; in **automatic** mode a notified
//!   receiver gets the media at once, in **manual** mode it asks with **Receive Media Request**
//!   (Receive Media Response with the `x` bit, repeated on T6 up to C6; Media Reception
//!   Notification to the transmitter), **Media Reception End Request** takes a stream off, and
//!   a transmission nobody receives for T11 is ended (End Request #8). Members join and leave
//!   while the call runs; a late joiner is told the current state.
//!
//! Every message with the `x` bit gets a Transmission Control Ack; replies are rate limited per
//! member (a token bucket), so no input makes the server answer with more than a bounded number
//! of messages. Timers fire in deadline order.
//!
//! The forwarding side reads only the [`Arbiter`]: one load to check a transmitter, one more for
//! its receivers. Inputs and outputs follow the crate's sans-IO contract: every input carries
//! `now`; drain `poll_transmit`, then `poll_event`, then re-arm from `poll_timeout`.
//!
//! [`start`]: TransmissionControlServer::start

mod messages;
mod requests;
mod snapshot;
mod transitions;
mod types;

pub use snapshot::{
    MemberSnapshot, ProcedureSnapshot, QueuedSnapshot, RevokeSnapshot, TcSnapshot,
    TransmissionSnapshot,
};
pub use types::*;

use super::arbiter::{slots, Arbiter, Slot, MAX_MEMBERS};
use super::bucket::TokenBucket;
use super::ssrc::SsrcRegistry;
use super::ReleaseReason;
use crate::ids::Ssrc;
use crate::wire::tc::{self, MessageKind, RevokeCause, Source, TcMessage, INDICATOR_NORMAL};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

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
    /// A transmission of its had media (kept after it ended).
    media_seen: bool,
    /// Media packets it sent (permitted or not).
    media_packets: u64,
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

/// Queued outgoing messages at most (the driver drains after each input).
const MAX_OUT: usize = 1024;

/// The transmission control server of one call. See the [module docs](self).
#[derive(Debug)]
pub struct TransmissionControlServer {
    cfg: TcConfig,
    procedure: Procedure,
    ids: ServerIdentity,
    arbiter: Arc<Arbiter>,
    /// Where group grants draw their SSRCs (a private call's are fixed by its procedure).
    ssrcs: Option<Arc<SsrcRegistry>>,
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
    events: VecDeque<TcEvent>,
    stats: TcStats,
}

impl TransmissionControlServer {
    /// A group call with no members yet ([`Procedure::Group`]); grants draw SSRCs from `ssrcs`.
    pub fn group(
        cfg: TcConfig,
        ids: ServerIdentity,
        arbiter: Arc<Arbiter>,
        ssrcs: Arc<SsrcRegistry>,
    ) -> Self {
        Self::new(cfg, Procedure::Group, ids, arbiter, Some(ssrcs))
    }

    /// A private call ([`Procedure::Private`]) between `members` (joined in order: slots 0 and
    /// 1), the designated transmitter granted with its SSRCs at [`start`](Self::start).
    pub fn private(
        cfg: TcConfig,
        procedure: Procedure,
        ids: ServerIdentity,
        arbiter: Arc<Arbiter>,
        members: [MemberSetup; 2],
    ) -> Self {
        let mut s = Self::new(cfg, procedure, ids, arbiter, None);
        for m in members {
            let _ = s.add(m);
        }
        s
    }

    fn new(
        cfg: TcConfig,
        procedure: Procedure,
        ids: ServerIdentity,
        arbiter: Arc<Arbiter>,
        ssrcs: Option<Arc<SsrcRegistry>>,
    ) -> Self {
        TransmissionControlServer {
            cfg,
            procedure,
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
            stats: TcStats::default(),
        }
    }

    /// The procedure it runs.
    pub fn procedure(&self) -> Procedure {
        self.procedure
    }

    fn is_private(&self) -> bool {
        matches!(self.procedure, Procedure::Private { .. })
    }

    /// Where the transmission stands (the API's `transmission`).
    pub fn transmission_state(&self) -> TransmissionState {
        if self.arbiter.snapshot().released {
            TransmissionState::Released
        } else if self.finished.is_some() {
            TransmissionState::Ended
        } else if self.transmitting() > 0 {
            TransmissionState::Granted
        } else {
            TransmissionState::Idle
        }
    }

    /// Whether any transmission's first media packet has arrived (a private call's
    /// transmitter's).
    pub fn media_started(&self) -> bool {
        self.present().any(|(_, m)| m.media_seen)
    }

    /// Says whether `slot` has a transmission control channel (e.g. once a private call's
    /// answer is known). Without one nothing is sent to it.
    pub fn set_control(&mut self, slot: Slot, control: bool) {
        if let Some(m) = self.member_mut(slot) {
            m.setup.control = control;
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TcConfig {
        &self.cfg
    }

    /// The call's identity.
    pub fn identity(&self) -> &ServerIdentity {
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

    /// The transmission of member `s`, while it has one.
    fn tx_mut(&mut self, s: Slot) -> Option<&mut Transmission> {
        self.member_mut(s).and_then(|m| m.tx.as_mut())
    }

    /// Stops the timer `timer` of member `s`'s transmission.
    fn disarm(&mut self, s: Slot, timer: impl FnOnce(&mut Transmission) -> &mut Option<Instant>) {
        if let Some(t) = self.tx_mut(s) {
            *timer(t) = None;
        }
    }

    /// Member `s`'s MCVideo ID (empty when it left).
    fn user_id(&self, s: Slot) -> String {
        self.member(s)
            .map(|m| m.setup.user_id.clone())
            .unwrap_or_default()
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
            send_only: m.setup.send_only,
            media_packets: m.media_packets,
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

    /// Adds a member. Before [`start`](Self::start) it is silent; after, the joiner is told the
    /// current state (a Media Transmission Notification per transmission, or Transmission
    /// Idle), and in automatic mode receives the running transmissions within its C9 cap.
    /// A private call's two members are fixed: joining one is refused ([`JoinError::Full`]).
    pub fn join(&mut self, _now: Instant, setup: MemberSetup) -> Result<Slot, JoinError> {
        if self.is_private() {
            return Err(JoinError::Full);
        }
        let slot = self.add(setup)?;
        self.events.push_back(TcEvent::Joined { member: slot });
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

    /// Puts `setup` in the first free slot.
    fn add(&mut self, setup: MemberSetup) -> Result<Slot, JoinError> {
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
                media_seen: false,
                media_packets: 0,
                unpermitted_run: 0,
                revoke: None,
                receiving: 0,
                reception_grants: Vec::new(),
                idle_acked: false,
                budget,
            });
        }
        Ok(slot)
    }

    /// The call is established: Transmission Idle to every member, T1 runs.
    ///
    /// A private call: the designated transmitter is granted (the implicit request, seed steps
    /// 9–10), and T1 (the hang timer) runs until its first media.
    pub fn start(&mut self, now: Instant) {
        if self.started || self.finished.is_some() {
            return;
        }
        self.started = true;
        match self.procedure.private_transmitter() {
            Some(t) => {
                let rank = Rank::of(
                    INDICATOR_NORMAL,
                    self.member(t).map_or(0, |m| m.setup.priority),
                );
                self.grant(now, t, rank, INDICATOR_NORMAL);
            }
            None if self.is_idle() => self.enter_idle(now),
            None => {}
        }
    }

    /// A member leaves. A transmission it held ends for the others; a queued request goes.
    /// `false` when there is no such member, or the call is private (its members are fixed).
    pub fn leave(&mut self, now: Instant, slot: Slot) -> bool {
        if self.member(slot).is_none() || self.is_private() {
            return false;
        }
        if self.member(slot).is_some_and(|m| m.tx.is_some()) {
            self.end_transmission(slot, EndReason::Left);
        }
        self.queue.retain(|q| q.member != slot);
        // Streams it received: gone.
        let receiving = self.member(slot).map_or(0, |m| m.receiving);
        for t in slots(receiving) {
            self.events.push_back(TcEvent::ReceptionEnded {
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
        self.events.push_back(TcEvent::Left { member: slot });
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
        // A private call still answers what follows its end in the same datagram (acks, and
        // the receiver's requests, from the members' budgets); a group ignores it.
        let ended = self.finished.is_some() && !self.is_private();
        if ended || self.member(from).is_none() || !msg.kind.is_known() {
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
        if self.is_private() {
            self.on_private_message(now, from, msg);
            return;
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
        let private = self.is_private();
        let (media_inactivity, revoke_after, t3) = (
            self.cfg.media_inactivity,
            self.cfg.revoke_after,
            self.cfg.t3_revoke,
        );
        let Some(m) = self.members.get_mut(from.index()).and_then(Option::as_mut) else {
            return;
        };
        m.media_packets = m.media_packets.saturating_add(u64::from(packets));
        if let Some(t) = m.tx.as_mut() {
            t.inactivity = Some(now + media_inactivity);
            if !t.first_media {
                t.first_media = true;
                m.media_seen = true;
                t.t4 = None;
                if private {
                    self.t1 = None; // the hang timer waits for the first media only
                }
                self.events
                    .push_back(TcEvent::MediaStarted { member: from });
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

    /// An RTCP BYE arrived from `from`. It ends `from`'s transmission only when `from` has no
    /// control channel (with one, it ends with Transmission End Request): End Notify to the
    /// others, then the next queued request (a private call is released, `rtcp_bye`).
    pub fn handle_rtcp_bye(&mut self, now: Instant, from: Slot) {
        let Some(m) = self.member(from) else { return };
        if self.finished.is_some() || m.tx.is_none() || m.setup.control {
            return;
        }
        self.end_transmission(from, EndReason::Bye);
        self.after_end(now, ReleaseReason::RtcpBye);
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

    /// The call is released from outside (API, shutdown). Sends nothing.
    pub fn release(&mut self, reason: ReleaseReason) {
        self.finish(reason);
    }

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
    pub fn poll_event(&mut self) -> Option<TcEvent> {
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
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod group_tests;
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod private_tests;
