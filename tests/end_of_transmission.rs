//! The end of the transmission releases the call: End Request → End Response + End Notify, then
//! `transmission.ended` and `call.released`; other ways the push completes.

mod common;
use common::*;
use mcvideo_relay::control::call::{AnswerCall, CallConfig, CallEventKind, CallState};
use mcvideo_relay::control::{Party, ReleaseReason};
use mcvideo_relay::wire::tc::{MessageKind, RevokeCause, TcMessage};

fn released(reason: ReleaseReason) -> [CallEventKind; 2] {
    [
        CallEventKind::TransmissionEnded { reason },
        CallEventKind::Released { reason },
    ]
}

#[test]
fn end_request_with_ack_bit_gets_ack_response_notify_and_release() {
    let mut h = Harness::new(CallConfig::default());
    h.established();
    h.sent("call-1");
    h.events("call-1");
    h.media("call-1", Party::Caller, 10);
    h.events("call-1");
    let mut end = TcMessage::new(MessageKind::TransmissionEndRequest, 0xa11ce);
    end.ack_required = true;
    end.fields.transmitting_user_id = Some(CALLER);
    h.control("call-1", Party::Caller, &end);
    let sent = h.sent("call-1");
    assert_eq!(
        kinds(&sent),
        [
            (Party::Caller, MessageKind::TransmissionControlAck),
            (Party::Caller, MessageKind::TransmissionEndResponse),
            (Party::Callee, MessageKind::TransmissionEndNotify)
        ]
    );
    let notify = parse(&sent[2].1);
    assert_eq!(notify.fields.transmitting_user_id, Some(CALLER));
    assert_eq!(notify.fields.video_ssrc, Some(2222));
    assert_eq!(
        h.events("call-1"),
        released(ReleaseReason::TransmissionCompleted)
    );
    // Late messages after release are ignored (no answer beyond an ack budget, no panic).
    h.control("call-1", Party::Caller, &end);
    assert!(h.sent("call-1").is_empty());
}

#[test]
fn end_request_from_callee_does_not_end_the_push() {
    let mut h = Harness::new(CallConfig::default());
    h.established();
    h.sent("call-1");
    h.events("call-1");
    h.control(
        "call-1",
        Party::Callee,
        &TcMessage::new(MessageKind::TransmissionEndRequest, 1),
    );
    assert_eq!(
        h.table.get("call-1").unwrap().state(),
        CallState::Established
    );
    assert!(h.events("call-1").is_empty());
}

#[test]
fn callee_ending_reception_stops_the_caller_and_releases() {
    let mut h = Harness::new(CallConfig::default());
    h.established();
    h.sent("call-1");
    h.events("call-1");
    h.control(
        "call-1",
        Party::Callee,
        &TcMessage::new(MessageKind::MediaReceptionEndRequest, 1),
    );
    let sent = h.sent("call-1");
    assert_eq!(
        kinds(&sent),
        [
            (Party::Callee, MessageKind::MediaReceptionEndResponse),
            (Party::Caller, MessageKind::TransmissionEndRequest)
        ]
    );
    let req = parse(&sent[1].1);
    assert_eq!(
        RevokeCause::from(req.fields.reject_cause.unwrap().code),
        RevokeCause::NoReceivingParticipant
    );
    assert_eq!(h.events("call-1"), released(ReleaseReason::ReceptionEnded));
}

#[test]
fn without_control_channel_rtcp_bye_completes_the_push() {
    let mut h = Harness::new(CallConfig::default());
    let offer = caller_offer();
    let no_control = offer.replace(
        "m=application 6004 udp MCVideo",
        "m=application 0 udp MCVideo",
    );
    h.create(create_request(no_control));
    h.table
        .accept_call(
            h.now,
            "call-1",
            AnswerCall {
                callee_sdp: callee_answer(false),
                callee_tc_key: None,
            },
        )
        .unwrap();
    assert!(
        h.sent("call-1").is_empty(),
        "no control channel, nothing to send"
    );
    assert!(
        h.table
            .get("call-1")
            .unwrap()
            .arbiter()
            .may_forward(Party::Caller.slot()),
        "implicit grant"
    );
    h.events("call-1");
    h.media("call-1", Party::Caller, 5);
    h.events("call-1");
    let now = h.now;
    h.table
        .get_mut("call-1")
        .unwrap()
        .handle_rtcp_bye(now, Party::Callee);
    assert!(
        h.events("call-1").is_empty(),
        "the callee's BYE does not end the push"
    );
    h.table
        .get_mut("call-1")
        .unwrap()
        .handle_rtcp_bye(now, Party::Caller);
    assert_eq!(h.events("call-1"), released(ReleaseReason::RtcpBye));
}

#[test]
fn with_control_channel_rtcp_bye_alone_does_not_release() {
    let mut h = Harness::new(CallConfig::default());
    h.established();
    h.events("call-1");
    let now = h.now;
    h.table
        .get_mut("call-1")
        .unwrap()
        .handle_rtcp_bye(now, Party::Caller);
    assert!(h.events("call-1").is_empty());
}

#[test]
fn external_release_and_reject() {
    let mut h = Harness::new(CallConfig::default());
    h.established();
    h.events("call-1");
    let mut call = h
        .table
        .release_call(h.now, "call-1", ReleaseReason::Released)
        .unwrap();
    let mut ev = Vec::new();
    while let Some(e) = call.poll_event() {
        ev.push(e.kind);
    }
    assert_eq!(ev, released(ReleaseReason::Released));
    assert!(h.table.get("call-1").is_none());

    // Reject while offered: released without a transmission.
    h.create(create_request(caller_offer()));
    h.events("call-1");
    let mut call = h.table.reject_call(h.now, "call-1").unwrap();
    assert_eq!(
        call.poll_event().unwrap().kind,
        CallEventKind::Released {
            reason: ReleaseReason::Rejected
        }
    );
    assert!(call.poll_event().is_none());
    assert!(h.table.reject_call(h.now, "call-1").is_err(), "unknown now");
}
