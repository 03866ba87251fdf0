//! What the server does with each request a member sends.

use super::*;
use crate::wire::tc::{AppName, ReceiveRejectCause, RejectCause, INDICATOR_NORMAL};

impl TransmissionControlServer {
    /// A private call's rules for a message from `from` (acked already when it asked): the
    /// transmitter may confirm its grant (Granted again) or end its transmission, which
    /// releases the call; the receiver is refused (Rejected #5), told whether it receives, or
    /// ends reception, which ends the transmission (server End Request #8). Anything else is
    /// ignored.
    pub(super) fn on_private_message(&mut self, now: Instant, from: Slot, msg: &TcMessage<'_>) {
        let Some(tx) = self.procedure.private_transmitter() else {
            return;
        };
        let transmitting = self.member(tx).is_some_and(|m| m.tx.is_some());
        match (from == tx, msg.kind) {
            (_, MessageKind::TransmissionControlAck) => self.on_ack(from, msg),
            (true, MessageKind::TransmissionRequest) if transmitting => {
                // It holds the grant already: confirm it (a reply, from its budget).
                let bytes = self.granted_bytes(tx);
                self.reply_bytes(now, tx, bytes);
            }
            (true, MessageKind::TransmissionEndRequest) if transmitting => {
                self.send_end_response(now, tx);
                self.end_transmission(tx, EndReason::Completed);
                self.finish(ReleaseReason::TransmissionCompleted);
            }
            (false, MessageKind::TransmissionRequest) => {
                self.reject(now, from, RejectCause::ReceiveOnly);
            }
            (false, MessageKind::ReceiveMediaRequest) => {
                let result = if transmitting {
                    Ok(())
                } else {
                    Err(ReceiveRejectCause::Other)
                };
                self.reply_receive_media(now, from, transmitting.then_some(tx), result);
            }
            (false, MessageKind::MediaReceptionEndRequest) => {
                self.reply_reception_end(now, from, Some(tx));
                if transmitting {
                    // Nobody receives any more: stop the transmitter (server End Request #8).
                    self.send_end_request(tx, RevokeCause::NoReceivingParticipant);
                    self.finish(ReleaseReason::ReceptionEnded);
                }
            }
            _ => self.stats.ignored += 1,
        }
    }

    pub(super) fn on_ack(&mut self, from: Slot, msg: &TcMessage<'_>) {
        let name = msg.fields.message_name.unwrap_or(AppName::Mcv1);
        let Some(acked) = msg
            .fields
            .message_type
            .map(|t| MessageKind::from_wire(name, t))
        else {
            // An ack that names no message: a group counts it as ignored, a private call never
            // did.
            if !self.is_private() {
                self.stats.ignored += 1;
            }
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

    pub(super) fn on_request(&mut self, now: Instant, from: Slot, msg: &TcMessage<'_>) {
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
            // It holds the grant already: confirm it (a reply, from its budget, as in a
            // private call: a flood of requests gets no more answers than anything else).
            let bytes = self.granted_bytes(from);
            self.reply_bytes(now, from, bytes);
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
                self.events.push_back(TcEvent::Preempted {
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
            self.events.push_back(TcEvent::Queued {
                member: from,
                position,
            });
            self.send_queue_position(now, from);
        } else {
            self.reject(now, from, RejectCause::TransmissionLimitReached);
        }
    }

    pub(super) fn on_end_request(&mut self, now: Instant, from: Slot) {
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

    pub(super) fn on_queue_position_request(&mut self, now: Instant, from: Slot) {
        self.send_queue_position(now, from);
    }

    /// The transmission a reception message names: by Video SSRC, by transmitting user, or the
    /// only one.
    pub(super) fn named_transmission(&self, msg: &TcMessage<'_>) -> Option<Slot> {
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

    pub(super) fn on_receive_media_request(
        &mut self,
        now: Instant,
        from: Slot,
        msg: &TcMessage<'_>,
    ) {
        if self.member(from).is_some_and(|m| m.setup.send_only) {
            let t = self.named_transmission(msg);
            self.reply_receive_media(now, from, t, Err(ReceiveRejectCause::SendOnly));
            return;
        }
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
            self.disarm(t, |t| &mut t.t11);
        }
        self.reply_receive_media(now, from, Some(t), Ok(()));
    }

    pub(super) fn on_media_reception_end_request(
        &mut self,
        now: Instant,
        from: Slot,
        msg: &TcMessage<'_>,
    ) {
        let t = self.named_transmission(msg);
        if let Some(t) = t {
            self.unroute(t, from);
            if let Some(m) = self.member_mut(from) {
                m.reception_grants.retain(|g| g.transmitter != t);
            }
            self.maybe_arm_t11(now, t);
        }
        self.reply_reception_end(now, from, t);
    }

    /// Media Reception End Response to `to`, naming transmission `t` while it runs.
    fn reply_reception_end(&mut self, now: Instant, to: Slot, t: Option<Slot>) {
        let mut r = TcMessage::new(MessageKind::MediaReceptionEndResponse, self.server_ssrc());
        let ids = t.and_then(|t| self.tx_ids(t));
        if let Some((user, audio, video)) = &ids {
            r.fields.transmitting_user_id = Some(user);
            r.fields.audio_ssrc = Some(audio.get());
            r.fields.video_ssrc = Some(video.get());
        }
        let bytes = self.emit(&r);
        self.reply_bytes(now, to, bytes);
    }
}
