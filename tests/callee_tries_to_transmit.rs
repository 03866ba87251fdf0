//! The callee is receive only: its Transmission Request is Rejected #5, its media is dropped
//! and, when it keeps sending, Revoked #3 — retransmitted only while it keeps sending, a bounded
//! number of times, and never at the cost of the call.

mod common;
use common::*;
use mcvideo_relay::control::call::{CallConfig, CallEventKind, CallState};
use mcvideo_relay::control::Party;
use mcvideo_relay::wire::tc::{MessageKind, RejectCause, RevokeCause, TcMessage};
use std::time::Duration;

#[test]
fn callee_transmission_request_is_rejected_receive_only() {
    let mut h = Harness::new(CallConfig::default());
    h.established();
    h.sent("call-1");
    h.events("call-1");
    let mut req = TcMessage::new(MessageKind::TransmissionRequest, 0xb0b);
    req.fields.user_id = Some(CALLEE);
    req.ack_required = true;
    h.control("call-1", Party::Callee, &req);
    let sent = h.sent("call-1");
    assert_eq!(
        kinds(&sent),
        [
            (Party::Callee, MessageKind::TransmissionControlAck),
            (Party::Callee, MessageKind::TransmissionRejected)
        ]
    );
    let ack = parse(&sent[0].1);
    assert_eq!(ack.fields.message_type, Some(0));
    assert_eq!(
        ack.fields.message_name,
        Some(mcvideo_relay::wire::tc::AppName::Mcv0)
    );
    let rej = parse(&sent[1].1);
    assert_eq!(
        RejectCause::from(rej.fields.reject_cause.unwrap().code),
        RejectCause::ReceiveOnly
    );
    let call = h.table.get("call-1").unwrap();
    assert!(
        call.arbiter().may_forward(Party::Caller.slot()),
        "the caller keeps the grant"
    );
    assert!(!call.arbiter().may_forward(Party::Callee.slot()));
    assert!(h.events("call-1").is_empty());
}

#[test]
fn callee_media_is_revoked_then_retransmitted_while_it_persists() {
    let cfg = CallConfig::default();
    let threshold = cfg.tc.revoke_after;
    let c3 = cfg.tc.c3_revoke;
    let mut h = Harness::new(cfg);
    h.established();
    h.sent("call-1");
    // A few stray packets are only dropped.
    h.media("call-1", Party::Callee, threshold - 1);
    assert!(h.sent("call-1").is_empty());
    h.media("call-1", Party::Callee, 1);
    let sent = h.sent("call-1");
    assert_eq!(
        kinds(&sent),
        [(Party::Callee, MessageKind::TransmissionRevoked)]
    );
    let rev = parse(&sent[0].1);
    assert!(rev.ack_required);
    assert_eq!(
        RevokeCause::from(rev.fields.reject_cause.unwrap().code),
        RevokeCause::NoPermission
    );
    // It keeps sending: Revoked again every T3, at most C3 more times.
    let mut revokes = 1;
    for _ in 0..20 {
        for _ in 0..10 {
            h.advance(Duration::from_millis(100));
            h.media("call-1", Party::Callee, 2);
            h.media("call-1", Party::Caller, 2);
        }
        revokes += kinds(&h.sent("call-1")).len();
    }
    assert_eq!(revokes as u32, 1 + c3, "bounded retransmission");
    let call = h.table.get("call-1").unwrap();
    assert_eq!(call.state(), CallState::Established, "the call survives");
    assert!(call.arbiter().may_forward(Party::Caller.slot()));
    assert_eq!(
        call.tc_stats().unpermitted_media_packets,
        u64::from(threshold) + 400
    );
    assert!(!h
        .events("call-1")
        .iter()
        .any(|e| matches!(e, CallEventKind::Released { .. })));
}

#[test]
fn revoke_stops_when_the_callee_goes_quiet_or_acks() {
    let mut h = Harness::new(CallConfig::default());
    h.established();
    h.sent("call-1");
    h.media("call-1", Party::Caller, 1); // media flows: no Granted retransmission in the way
    h.media("call-1", Party::Callee, 10);
    assert_eq!(h.sent("call-1").len(), 1);
    // Quiet after the revoke: no retransmission.
    for _ in 0..50 {
        h.advance(Duration::from_millis(100));
        h.media("call-1", Party::Caller, 1);
    }
    assert!(h.sent("call-1").is_empty());
    // A new burst starts a fresh count; the callee acks the Revoked this time.
    h.media("call-1", Party::Callee, 10);
    assert_eq!(
        kinds(&h.sent("call-1")),
        [(Party::Callee, MessageKind::TransmissionRevoked)]
    );
    let mut ack = TcMessage::new(MessageKind::TransmissionControlAck, 0xb0b);
    ack.fields.message_type = Some(4);
    ack.fields.message_name = Some(mcvideo_relay::wire::tc::AppName::Mcv1);
    h.control("call-1", Party::Callee, &ack);
    for _ in 0..30 {
        h.advance(Duration::from_millis(100));
        h.media("call-1", Party::Callee, 1);
        h.media("call-1", Party::Caller, 1);
    }
    assert!(
        h.sent("call-1").is_empty(),
        "an acked revoke is not repeated"
    );
}
