//! Transmission Granted is retransmitted every T4, at most C4 times, until the first media
//! packet — and not after it, nor after the caller acknowledges it.

mod common;
use common::*;
use mcvideo_relay::control::call::CallConfig;
use mcvideo_relay::control::Party;
use mcvideo_relay::wire::tc::{AppName, MessageKind, TcMessage};
use std::time::Duration;

fn granted_times(h: &mut Harness, seconds: u64) -> Vec<Duration> {
    let mut at = Vec::new();
    for _ in 0..seconds * 10 {
        h.advance(Duration::from_millis(100));
        for (p, k) in kinds(&h.sent("call-1")) {
            assert_eq!((p, k), (Party::Caller, MessageKind::TransmissionGranted));
            at.push(h.now - h.t0);
        }
    }
    at
}

#[test]
fn granted_retransmitted_c4_times_at_t4_without_media() {
    let cfg = CallConfig::default();
    let (t4, c4) = (cfg.tc.t4_granted, cfg.tc.c4_granted);
    let mut h = Harness::new(cfg);
    h.established();
    assert_eq!(h.sent("call-1").len(), 2);
    let at = granted_times(&mut h, 10);
    assert_eq!(at.len() as u32, c4);
    for (i, t) in at.iter().enumerate() {
        assert_eq!(*t, t4 * (i as u32 + 1));
    }
}

#[test]
fn first_media_stops_retransmission() {
    let mut h = Harness::new(CallConfig::default());
    h.established();
    h.sent("call-1");
    h.advance(Duration::from_millis(1_000));
    assert_eq!(
        kinds(&h.sent("call-1")).len(),
        1,
        "one retransmission at T4"
    );
    h.media("call-1", Party::Caller, 1);
    assert!(granted_times(&mut h, 5).is_empty());
}

#[test]
fn ack_stops_retransmission_and_acked_messages_are_answered() {
    let mut h = Harness::new(CallConfig::default());
    h.established();
    h.sent("call-1");
    let mut ack = TcMessage::new(MessageKind::TransmissionControlAck, 0xa11ce);
    ack.fields.message_type = Some(0);
    ack.fields.message_name = Some(AppName::Mcv1);
    h.control("call-1", Party::Caller, &ack);
    assert!(h.sent("call-1").is_empty(), "an Ack is never acknowledged");
    assert!(granted_times(&mut h, 5).is_empty());
    // The caller repeats its request (ack bit set): Ack, then Granted again.
    let mut req = TcMessage::new(MessageKind::TransmissionRequest, 0xa11ce);
    req.ack_required = true;
    h.control("call-1", Party::Caller, &req);
    assert_eq!(
        kinds(&h.sent("call-1")),
        [
            (Party::Caller, MessageKind::TransmissionControlAck),
            (Party::Caller, MessageKind::TransmissionGranted)
        ]
    );
}
