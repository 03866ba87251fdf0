//! Grants, ends, idle, release and reception routes: the server's state changes.

use super::*;

impl TransmissionControlServer {
    /// The SSRCs of a transmission by `to`: a private call's are fixed by its procedure; a group
    /// draws them from the registry, the member's own when free.
    fn allocate_ssrcs(&self, to: Slot) -> Option<(Ssrc, Ssrc)> {
        if let Procedure::Private {
            audio_ssrc,
            video_ssrc,
            ..
        } = self.procedure
        {
            return Some((audio_ssrc, video_ssrc));
        }
        let m = self.member(to)?;
        let r = self.ssrcs.as_ref()?;
        Some((
            r.allocate(m.setup.audio_ssrc),
            r.allocate(m.setup.video_ssrc),
        ))
    }

    fn free_ssrcs(&self, t: &Transmission) {
        if let Some(r) = &self.ssrcs {
            r.free(t.audio);
            r.free(t.video);
        }
    }

    pub(super) fn grant(&mut self, now: Instant, to: Slot, rank: Rank, indicator: u16) {
        if !self.arbiter.permit(to) {
            self.finish(ReleaseReason::Released);
            return;
        }
        let Some((audio, video)) = self.allocate_ssrcs(to) else {
            return;
        };
        let Some(m) = self.member(to) else { return };
        let has_control = m.setup.control;
        let private = self.is_private();
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
            // A private call's transmission waits for its first media under T1 (the hang
            // timer); a group's inactivity runs from the grant.
            inactivity: (!private).then_some(now + cfg.media_inactivity),
            t11: None,
        };
        let t1 = private.then_some(now + cfg.t1_inactivity);
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
        self.t1 = t1;
        self.t2 = None;
        self.stats.grants += 1;
        self.send_granted(to);
        self.events.push_back(TcEvent::Granted {
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
            if let Some(t) = self.tx_mut(to) {
                t.t11 = Some(now + t11);
            }
        }
    }

    /// Ends `s`'s transmission: grant gone, SSRCs freed, End Notify to the others. The caller
    /// then grants the next queued request or goes idle ([`Self::grant_next`]), or grants a
    /// pre-empting request.
    pub(super) fn end_transmission(&mut self, s: Slot, reason: EndReason) {
        let Some(t) = self.member_mut(s).and_then(|m| m.tx.take()) else {
            return;
        };
        if let Some(m) = self.member_mut(s) {
            m.recently_ended = true;
        }
        self.arbiter.forbid(s);
        self.free_ssrcs(&t);
        let user = self.user_id(s);
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
                    self.events.push_back(TcEvent::ReceptionEnded {
                        receiver: r,
                        transmitter: s,
                    });
                }
            }
            self.push(r, bytes.clone());
        }
        self.events
            .push_back(TcEvent::TransmissionEnded { member: s, reason });
    }

    /// Grants queued requests while there is room.
    pub(super) fn grant_next(&mut self, now: Instant) {
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

    pub(super) fn enter_idle(&mut self, now: Instant) {
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
        self.events.push_back(TcEvent::Idle);
    }

    pub(super) fn finish(&mut self, reason: ReleaseReason) {
        if self.finished.is_some() {
            return;
        }
        for s in self.present_slots() {
            if let Some(t) = self.member_mut(s).and_then(|m| m.tx.take()) {
                self.free_ssrcs(&t);
                self.events.push_back(TcEvent::TransmissionEnded {
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
        self.events.push_back(TcEvent::Released { reason });
    }

    /// `r` receives `t` from now on (Active SSRC List, arbiter route), within its C9 cap and
    /// unless it is send-only. Returns whether it was added.
    pub(super) fn route(&mut self, t: Slot, r: Slot) -> bool {
        let cap = u32::from(self.cfg.max_streams_per_receiver);
        let Some(m) = self.member_mut(r) else {
            return false;
        };
        if m.setup.send_only || m.receiving & t.bit() != 0 || m.receiving.count_ones() >= cap {
            return false;
        }
        m.receiving |= t.bit();
        self.arbiter.add_route(t, r);
        self.events.push_back(TcEvent::ReceptionStarted {
            receiver: r,
            transmitter: t,
        });
        true
    }

    pub(super) fn unroute(&mut self, t: Slot, r: Slot) {
        let Some(m) = self.member_mut(r) else { return };
        if m.receiving & t.bit() == 0 {
            return;
        }
        m.receiving &= !t.bit();
        self.arbiter.remove_route(t, r);
        self.events.push_back(TcEvent::ReceptionEnded {
            receiver: r,
            transmitter: t,
        });
    }

    /// Manual mode: a transmission nobody receives starts T11.
    pub(super) fn maybe_arm_t11(&mut self, now: Instant, t: Slot) {
        if self.cfg.reception_mode != ReceptionMode::Manual {
            return;
        }
        let anyone = self.present().any(|(_, m)| m.receiving & t.bit() != 0);
        let t11 = self.cfg.t11_stream_idle;
        if let Some(tx) = self.tx_mut(t) {
            if !anyone && tx.t11.is_none() {
                tx.t11 = Some(now + t11);
            }
        }
    }

    pub(super) fn sort_queue(&mut self) {
        self.queue
            .sort_by(|a, b| b.rank.cmp(&a.rank).then(a.seq.cmp(&b.seq)));
    }

    pub(super) fn position(&self, s: Slot) -> Option<u8> {
        self.queue
            .iter()
            .position(|q| q.member == s)
            .map(|i| (i + 1).min(253) as u8)
    }
}

/// A timer that is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    T1,
    T2,
    MaxDuration(Slot),
    Inactivity(Slot),
    T11(Slot),
    T4(Slot),
    Revoke(Slot),
    Reception(Slot, usize),
}

impl Due {
    /// Which of several timers due at the same instant fires first in a private call (the
    /// private call's timer order: T4, T3, maximum duration, inactivity, T1).
    fn private_rank(self) -> u8 {
        match self {
            Due::T4(_) => 0,
            Due::Revoke(_) => 1,
            Due::MaxDuration(_) => 2,
            Due::Inactivity(_) => 3,
            Due::T1 => 4,
            _ => 5,
        }
    }
}

impl TransmissionControlServer {
    /// Every timer due at `now` with its deadline, in the group's order (T1, T2, then per
    /// member in slot order: maximum duration, inactivity, T11, T4, T3, T6).
    fn due(&self, now: Instant) -> Vec<(Instant, Due)> {
        let mut v = Vec::new();
        let mut at = |d: Option<Instant>, what: Due| {
            if let Some(d) = d.filter(|d| *d <= now) {
                v.push((d, what));
            }
        };
        at(self.t1, Due::T1);
        at(self.t2, Due::T2);
        for (s, m) in self.present() {
            if let Some(t) = &m.tx {
                at(t.max_duration, Due::MaxDuration(s));
                at(t.inactivity, Due::Inactivity(s));
                at(t.t11, Due::T11(s));
                at(t.t4, Due::T4(s));
            }
            at(m.revoke.map(|r| r.due), Due::Revoke(s));
            if let Some((i, g)) = m
                .reception_grants
                .iter()
                .enumerate()
                .find(|(_, g)| g.due <= now)
            {
                at(Some(g.due), Due::Reception(s, i));
            }
        }
        v
    }

    /// Fires the next due timer: in a private call the earliest deadline first (ties in the
    /// private order), in a group call the group's fixed order. `false` when none is due.
    pub(super) fn fire_one(&mut self, now: Instant) -> bool {
        let due = self.due(now);
        let next = if self.is_private() {
            due.into_iter().min_by_key(|(d, w)| (*d, w.private_rank()))
        } else {
            due.into_iter().next()
        };
        let Some((_, what)) = next else {
            return false;
        };
        match what {
            Due::T1 => {
                self.t1 = None;
                if let Some(t) = self.procedure.private_transmitter() {
                    // The hang timer: granted, and no media yet.
                    self.end_transmission(t, EndReason::MediaTimeout);
                }
                self.finish(ReleaseReason::HangTimer);
            }
            Due::T2 => self.fire_t2(now),
            Due::MaxDuration(s) => {
                self.disarm(s, |t| &mut t.max_duration);
                self.send_revoked(s, RevokeCause::MediaBurstTooLong);
                self.end_transmission(s, EndReason::MaxDuration);
                self.after_end(now, ReleaseReason::MaxDuration);
            }
            Due::Inactivity(s) => {
                self.disarm(s, |t| &mut t.inactivity);
                // A private call's transmission is simply complete; a group's transmitter is
                // told (End Request #255).
                if !self.is_private() {
                    self.send_end_request(s, RevokeCause::Other);
                }
                self.end_transmission(s, EndReason::MediaTimeout);
                self.after_end(now, ReleaseReason::MediaTimeout);
            }
            Due::T11(s) => {
                self.disarm(s, |t| &mut t.t11);
                self.send_end_request(s, RevokeCause::NoReceivingParticipant);
                self.end_transmission(s, EndReason::NoReceivers);
                self.grant_next(now);
            }
            Due::T4(s) => self.fire_t4(now, s),
            Due::Revoke(s) => self.fire_t3(now, s),
            Due::Reception(s, i) => self.fire_t6(now, s, i),
        }
        true
    }

    /// After a transmission ended: a private call is released (`reason`), a group grants the
    /// next queued request or goes idle.
    pub(super) fn after_end(&mut self, now: Instant, reason: ReleaseReason) {
        if self.is_private() {
            self.finish(reason);
        } else {
            self.grant_next(now);
        }
    }

    fn fire_t2(&mut self, now: Instant) {
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
    }

    fn fire_t4(&mut self, now: Instant, s: Slot) {
        let (c4, t4) = (self.cfg.c4_granted, self.cfg.t4_granted);
        let again = self.tx_mut(s).map(|t| {
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
    }

    fn fire_t3(&mut self, now: Instant, s: Slot) {
        let Some(r) = self.member(s).and_then(|m| m.revoke) else {
            return;
        };
        let (c3, t3) = (self.cfg.c3_revoke, self.cfg.t3_revoke);
        let resend =
            !r.acked && r.sent <= c3 && (r.media_since || r.cause != RevokeCause::NoPermission);
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
    }

    fn fire_t6(&mut self, now: Instant, s: Slot, i: usize) {
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
            if resend.is_none() && i < m.reception_grants.len() {
                m.reception_grants.remove(i);
            }
        }
        if let Some(t) = resend {
            self.send_receive_media_response(s, Some(t), Ok(()));
        }
    }
}
