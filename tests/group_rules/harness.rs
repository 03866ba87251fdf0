//! A group server on virtual time, with the client side's messages built and the server's
//! parsed.
use mcvideo_relay::control::arbiter::{Arbiter, Slot};
use mcvideo_relay::control::server::{
    MemberSetup, ServerIdentity, TcConfig, TcEvent, TransmissionControlServer,
};
use mcvideo_relay::control::ssrc::SsrcRegistry;
use mcvideo_relay::wire::tc::{EmitOptions, MessageKind, TcMessage};
use mcvideo_relay::Ssrc;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const SERVER_SSRC: u32 = 0x5e5e_5e5e;

/// One message the server sent, owned.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) to: Slot,
    pub(crate) bytes: Vec<u8>,
}

impl Sent {
    pub(crate) fn msg(&self) -> TcMessage<'_> {
        TcMessage::parse(&self.bytes).unwrap()
    }

    pub(crate) fn kind(&self) -> MessageKind {
        self.msg().kind
    }
}

pub(crate) struct G {
    pub(crate) s: TransmissionControlServer,
    pub(crate) now: Instant,
    pub(crate) ssrcs: Arc<SsrcRegistry>,
}

pub(crate) fn member(id: &str, priority: u8) -> MemberSetup {
    MemberSetup {
        user_id: id.into(),
        priority,
        control: true,
        ..MemberSetup::default()
    }
}

impl G {
    pub(crate) fn new(cfg: TcConfig) -> G {
        let ssrcs = Arc::new(SsrcRegistry::new(0x1234));
        let t0 = Instant::now();
        G {
            s: TransmissionControlServer::group(
                cfg,
                ServerIdentity {
                    call_id: "sip:group1@mcx".into(),
                    server_ssrc: Ssrc(SERVER_SSRC),
                },
                Arc::new(Arbiter::new()),
                ssrcs.clone(),
            ),
            now: t0,
            ssrcs,
        }
    }

    /// A started group with members `ids` (priority 100 each); messages and events drained.
    pub(crate) fn started(cfg: TcConfig, ids: &[&str]) -> (G, Vec<Slot>) {
        let mut g = G::new(cfg);
        let slots = ids.iter().map(|id| g.join(member(id, 100))).collect();
        g.s.start(g.now);
        g.out();
        g.events();
        (g, slots)
    }

    pub(crate) fn join(&mut self, setup: MemberSetup) -> Slot {
        self.s.join(self.now, setup).unwrap()
    }

    pub(crate) fn arbiter(&self) -> &Arbiter {
        self.s.arbiter()
    }

    pub(crate) fn send(&mut self, from: Slot, m: &TcMessage<'_>) {
        let bytes = m.to_vec(&EmitOptions::default()).unwrap();
        self.s.handle_datagram(self.now, from, &bytes);
    }

    pub(crate) fn request(&mut self, from: Slot, priority: Option<u8>, indicator: Option<u16>) {
        let mut m = TcMessage::new(
            MessageKind::TransmissionRequest,
            0x1000 + from.index() as u32,
        );
        m.fields.transmission_priority = priority;
        m.fields.transmission_indicator = indicator;
        self.send(from, &m);
    }

    pub(crate) fn end(&mut self, from: Slot) {
        let m = TcMessage::new(
            MessageKind::TransmissionEndRequest,
            0x1000 + from.index() as u32,
        );
        self.send(from, &m);
    }

    pub(crate) fn ack(&mut self, from: Slot, acked: MessageKind) {
        let mut m = TcMessage::new(
            MessageKind::TransmissionControlAck,
            0x1000 + from.index() as u32,
        );
        m.fields.message_type = Some(acked.message_type());
        m.fields.message_name = Some(acked.name());
        self.send(from, &m);
    }

    pub(crate) fn media(&mut self, from: Slot, packets: u32) {
        self.s.handle_media(self.now, from, packets);
    }

    /// Moves time forward by `d`, firing every timer on the way at its own deadline.
    pub(crate) fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        while let Some(t) = self.s.poll_timeout() {
            if t > target {
                break;
            }
            self.now = self.now.max(t);
            self.s.handle_timeout(self.now);
        }
        self.now = target;
    }

    pub(crate) fn out(&mut self) -> Vec<Sent> {
        let mut buf = Vec::new();
        let mut v = Vec::new();
        while let Some(to) = self.s.poll_transmit(&mut buf) {
            v.push(Sent {
                to,
                bytes: buf.clone(),
            });
        }
        v
    }

    pub(crate) fn events(&mut self) -> Vec<TcEvent> {
        std::iter::from_fn(|| self.s.poll_event()).collect()
    }

    /// The granted video SSRC of `s`'s transmission.
    pub(crate) fn video_ssrc(&self, s: Slot) -> Option<Ssrc> {
        self.s
            .transmissions()
            .into_iter()
            .find(|t| t.member == s)
            .map(|t| t.video_ssrc)
    }
}

/// The messages of `kind` in `out`, by destination.
pub(crate) fn to_of(out: &[Sent], kind: MessageKind) -> Vec<Slot> {
    out.iter()
        .filter(|m| m.kind() == kind)
        .map(|m| m.to)
        .collect()
}

/// The one message to `to` of `kind`.
pub(crate) fn one(out: &[Sent], to: Slot, kind: MessageKind) -> Sent {
    let v: Vec<_> = out
        .iter()
        .filter(|m| m.to == to && m.kind() == kind)
        .cloned()
        .collect();
    assert_eq!(
        v.len(),
        1,
        "expected one {kind} to {to}, got {}: {out:?}",
        v.len()
    );
    v.into_iter().next().unwrap()
}

/// The cause code of a Rejected/Revoked/End Request.
pub(crate) fn cause_of(m: &Sent) -> u16 {
    m.msg().fields.reject_cause.unwrap().code
}

pub(crate) fn ack_required(m: &Sent) -> bool {
    m.msg().ack_required
}
