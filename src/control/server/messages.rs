//! The messages the server sends, built from its state.

use super::*;
use crate::wire::tc::{
    CauseField, EmitOptions, QueueInfo, ReceiveRejectCause, RejectCause, INDICATOR_NORMAL,
};

fn cause(code: u16) -> CauseField<'static> {
    CauseField { code, phrase: "" }
}

impl TransmissionControlServer {
    pub(super) fn server_ssrc(&self) -> u32 {
        self.ids.server_ssrc.get()
    }

    pub(super) fn emit(&mut self, m: &TcMessage<'_>) -> Option<Vec<u8>> {
        let opts = EmitOptions {
            video_ssrc_field_id: self.cfg.video_ssrc_field_id,
        };
        // Identities are bounded at join; an oversized one only loses its message.
        let v = m.to_vec(&opts).ok()?;
        Some(v)
    }

    pub(super) fn push(&mut self, to: Slot, bytes: Option<Vec<u8>>) {
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

    /// `m` to `to`, outside its reply budget.
    pub(super) fn send(&mut self, to: Slot, m: &TcMessage<'_>) {
        let bytes = self.emit(m);
        self.push(to, bytes);
    }

    /// A reply drawn from `to`'s budget.
    pub(super) fn reply_bytes(&mut self, now: Instant, to: Slot, bytes: Option<Vec<u8>>) {
        let Some(m) = self.member_mut(to) else { return };
        if !m.budget.take(now) {
            self.stats.rate_limited += 1;
            return;
        }
        self.push(to, bytes);
    }

    pub(super) fn reply(&mut self, now: Instant, to: Slot, m: &TcMessage<'_>) {
        let bytes = self.emit(m);
        self.reply_bytes(now, to, bytes);
    }

    pub(super) fn tx_ids(&self, t: Slot) -> Option<(String, Ssrc, Ssrc)> {
        let m = self.member(t)?;
        let (a, v) = match &m.tx {
            Some(tx) => (tx.audio, tx.video),
            None => m.last_ssrcs?,
        };
        Some((m.setup.user_id.clone(), a, v))
    }

    pub(super) fn reject(&mut self, now: Instant, to: Slot, c: RejectCause) {
        self.events.push_back(TcEvent::Rejected {
            member: to,
            cause: c,
        });
        let mut m = TcMessage::new(MessageKind::TransmissionRejected, self.server_ssrc());
        m.fields.reject_cause = Some(cause(c.into()));
        self.reply(now, to, &m);
    }

    pub(super) fn send_granted(&mut self, to: Slot) {
        let bytes = self.granted_bytes(to);
        self.push(to, bytes);
    }

    /// Transmission Granted for `to`'s transmission.
    pub(super) fn granted_bytes(&mut self, to: Slot) -> Option<Vec<u8>> {
        let t = self.member(to)?.tx.clone()?;
        let mut m = TcMessage::new(MessageKind::TransmissionGranted, self.server_ssrc());
        m.fields.duration = self
            .cfg
            .max_duration
            .map(|d| d.as_secs().min(u64::from(u16::MAX)) as u16);
        m.fields.audio_ssrc = Some(t.audio.get());
        m.fields.video_ssrc = Some(t.video.get());
        // A private call's Granted: Duration and the SSRCs (no queue, no priorities), repeated
        // on T4 rather than acknowledged.
        if !self.is_private() {
            m.ack_required = true;
            m.fields.transmission_priority = Some(t.rank.priority);
            m.fields.transmission_indicator = Some(t.indicator);
            m.fields.queue_size = Some(self.queue.len().min(usize::from(u16::MAX)) as u16);
        }
        self.emit(&m)
    }

    /// Media Transmission Notification of `t`'s transmission to `r`.
    pub(super) fn notify(&mut self, r: Slot, t: Slot) {
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
        if self.is_private() {
            m.fields.reception_mode = Some(PUSH_RECEPTION_MODE);
        } else {
            m.fields.transmission_indicator = Some(tx.indicator);
            m.fields.reception_mode = Some(self.cfg.reception_mode.wire());
        }
        self.send(r, &m);
    }

    pub(super) fn send_idle(&mut self, to: Slot) {
        let mut m = TcMessage::new(MessageKind::TransmissionIdle, self.server_ssrc());
        m.ack_required = true;
        m.fields.message_sequence_number = Some(self.idle_seq);
        m.fields.transmission_indicator = Some(INDICATOR_NORMAL);
        self.send(to, &m);
    }

    pub(super) fn send_revoked(&mut self, to: Slot, c: RevokeCause) {
        let mut m = TcMessage::new(MessageKind::TransmissionRevoked, self.server_ssrc());
        m.ack_required = true;
        m.fields.reject_cause = Some(cause(c.into()));
        self.send(to, &m);
    }

    pub(super) fn send_end_request(&mut self, to: Slot, c: RevokeCause) {
        let Some((user, audio, video)) = self.tx_ids(to) else {
            return;
        };
        let mut m = TcMessage::new(MessageKind::TransmissionEndRequest, self.server_ssrc());
        m.ack_required = true;
        m.fields.transmitting_user_id = Some(&user);
        m.fields.audio_ssrc = Some(audio.get());
        m.fields.video_ssrc = Some(video.get());
        m.fields.reject_cause = Some(cause(c.into()));
        self.send(to, &m);
    }

    pub(super) fn send_end_response(&mut self, now: Instant, to: Slot) {
        let ids = self.tx_ids(to);
        let mut m = TcMessage::new(MessageKind::TransmissionEndResponse, self.server_ssrc());
        if let Some((user, audio, video)) = &ids {
            m.fields.transmitting_user_id = Some(user);
            m.fields.audio_ssrc = Some(audio.get());
            m.fields.video_ssrc = Some(video.get());
        }
        self.reply(now, to, &m);
    }

    pub(super) fn send_queue_position(&mut self, now: Instant, to: Slot) {
        let (position, priority) = match self.queue.iter().find(|q| q.member == to) {
            Some(q) => (self.position(to).unwrap_or(255), q.rank.priority),
            None => (254, 0),
        };
        let user = self.user_id(to);
        let mut m = TcMessage::new(MessageKind::QueuePositionInfo, self.server_ssrc());
        m.ack_required = position != 254;
        m.fields.user_id = Some(&user);
        m.fields.queued_user_id = Some(&user);
        m.fields.queue_info = Some(QueueInfo { position, priority });
        let bytes = self.emit(&m);
        self.reply_bytes(now, to, bytes);
    }

    pub(super) fn reply_receive_media(
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

    pub(super) fn send_receive_media_response(
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
                // A group's grant of reception is repeated on T6 until acked; a private call's
                // answer only tells the receiver it receives.
                m.ack_required = !self.is_private();
                m.fields.result = Some(1);
            }
            Err(c) => {
                m.fields.result = Some(0);
                m.fields.reject_cause = Some(cause(c.into()));
            }
        }
        self.send(to, &m);
    }

    /// Media Reception Notification to transmitter `t`: `r` receives it.
    pub(super) fn send_reception_notification(&mut self, t: Slot, r: Slot) {
        let Some((_, audio, video)) = self.tx_ids(t) else {
            return;
        };
        let user = self.user_id(r);
        let mut m = TcMessage::new(MessageKind::MediaReceptionNotification, self.server_ssrc());
        m.fields.user_id = Some(&user);
        m.fields.audio_ssrc = Some(audio.get());
        m.fields.video_ssrc = Some(video.get());
        self.send(t, &m);
    }
}
