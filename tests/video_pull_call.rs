//! Video pull (TS 23.281 §7.3.2.3), the mirror of the push: only the called party transmits,
//! to the caller; the caller is receive only (Rejected #5, Revoked #3 when it keeps sending);
//! the call is released when the callee's transmission completes.

mod common;
use common::*;
use mcvideo_relay::control::call::{AnswerCall, CallConfig, CallEventKind, CallState, SetupError};
use mcvideo_relay::control::{CallKind, Party, ReleaseReason};
use mcvideo_relay::wire::tc::{MessageKind, RejectCause, RevokeCause, TcMessage};

fn pull(h: &mut Harness) {
    let mut req = create_request(caller_offer());
    req.video_push = false;
    req.video_pull = true;
    h.create(req);
    h.table
        .accept_call(
            h.now,
            "call-1",
            AnswerCall {
                callee_sdp: callee_answer(true),
                callee_tc_key: None,
            },
        )
        .expect("accept");
}

#[test]
fn the_callee_is_granted_and_the_caller_notified() {
    let mut h = Harness::new(CallConfig::default());
    pull(&mut h);
    let call = h.table.get("call-1").unwrap();
    assert_eq!(call.kind(), CallKind::VideoPull);
    assert!(call.arbiter().may_forward(Party::Callee.slot()));
    assert!(!call.arbiter().may_forward(Party::Caller.slot()));
    let sent = h.sent("call-1");
    assert_eq!(
        kinds(&sent),
        [
            (Party::Callee, MessageKind::TransmissionGranted),
            (Party::Caller, MessageKind::MediaTransmissionNotification)
        ]
    );
    // The notification names the transmitting user: the callee.
    assert_eq!(parse(&sent[1].1).fields.transmitting_user_id, Some(CALLEE));
    // The caller's own a=ssrc are not the transmission's (the callee sends).
    let granted = parse(&sent[0].1);
    assert_ne!(granted.fields.video_ssrc, Some(2222));
    assert_eq!(h.events("call-1")[0], CallEventKind::Progress);
}

#[test]
fn the_caller_is_receive_only() {
    let cfg = CallConfig::default();
    let threshold = cfg.tc.revoke_after;
    let mut h = Harness::new(cfg);
    pull(&mut h);
    h.sent("call-1");
    let req = TcMessage::new(MessageKind::TransmissionRequest, 0xa11ce);
    h.control("call-1", Party::Caller, &req);
    let sent = h.sent("call-1");
    assert_eq!(
        kinds(&sent),
        [(Party::Caller, MessageKind::TransmissionRejected)]
    );
    let cause = parse(&sent[0].1).fields.reject_cause.unwrap().code;
    assert_eq!(RejectCause::from(cause), RejectCause::ReceiveOnly);
    h.media("call-1", Party::Caller, threshold);
    let sent = h.sent("call-1");
    assert_eq!(
        kinds(&sent),
        [(Party::Caller, MessageKind::TransmissionRevoked)]
    );
    let cause = parse(&sent[0].1).fields.reject_cause.unwrap().code;
    assert_eq!(RevokeCause::from(cause), RevokeCause::NoPermission);
    assert_eq!(
        h.table.get("call-1").unwrap().state(),
        CallState::Established
    );
}

#[test]
fn the_callees_end_request_completes_the_pull() {
    let mut h = Harness::new(CallConfig::default());
    pull(&mut h);
    h.sent("call-1");
    h.events("call-1");
    h.media("call-1", Party::Callee, 5);
    assert_eq!(h.events("call-1"), [CallEventKind::MediaStarted]);
    // The caller's End Request does not end someone else's transmission.
    h.control(
        "call-1",
        Party::Caller,
        &TcMessage::new(MessageKind::TransmissionEndRequest, 1),
    );
    assert_eq!(
        h.table.get("call-1").unwrap().state(),
        CallState::Established
    );
    h.sent("call-1");
    h.control(
        "call-1",
        Party::Callee,
        &TcMessage::new(MessageKind::TransmissionEndRequest, 2),
    );
    assert_eq!(
        kinds(&h.sent("call-1")),
        [
            (Party::Callee, MessageKind::TransmissionEndResponse),
            (Party::Caller, MessageKind::TransmissionEndNotify)
        ]
    );
    let reason = ReleaseReason::TransmissionCompleted;
    assert_eq!(
        h.events("call-1"),
        [
            CallEventKind::TransmissionEnded { reason },
            CallEventKind::Released { reason }
        ]
    );
}

#[test]
fn push_and_pull_together_or_neither_is_refused() {
    let mut h = Harness::new(CallConfig::default());
    for (push, pull) in [(true, true), (false, false)] {
        let mut req = create_request(caller_offer());
        req.video_push = push;
        req.video_pull = pull;
        let err = h.table.create_call(h.now, req, &mut h.ports).unwrap_err();
        assert_eq!(err, SetupError::NotVideoPush);
    }
}
