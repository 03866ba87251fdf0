//! The maximum transmission duration: Duration in Granted, then Transmission Revoked #2 and
//! release when it runs out.

mod common;
use common::*;
use mcvideo_relay::control::call::{CallConfig, CallEventKind};
use mcvideo_relay::control::{Party, ReleaseReason};
use mcvideo_relay::wire::tc::{MessageKind, RevokeCause};
use std::time::Duration;

#[test]
fn duration_runs_out_revoked_2_then_release() {
    let mut cfg = CallConfig::default();
    cfg.tc.max_duration = Some(Duration::from_secs(20));
    let mut h = Harness::new(cfg);
    h.established();
    let sent = h.sent("call-1");
    assert_eq!(parse(&sent[0].1).fields.duration, Some(20));
    h.events("call-1");
    // Media flows the whole time, so only the duration can end it.
    for _ in 0..199 {
        h.advance(Duration::from_millis(100));
        h.media("call-1", Party::Caller, 4);
    }
    h.sent("call-1");
    assert!(h
        .table
        .get("call-1")
        .unwrap()
        .arbiter()
        .may_forward(Party::Caller.slot()));
    assert_eq!(h.events("call-1"), [CallEventKind::MediaStarted]);
    h.advance(Duration::from_millis(100));
    let sent = h.sent("call-1");
    assert_eq!(
        kinds(&sent),
        [
            (Party::Caller, MessageKind::TransmissionRevoked),
            (Party::Callee, MessageKind::TransmissionEndNotify)
        ]
    );
    assert_eq!(
        RevokeCause::from(parse(&sent[0].1).fields.reject_cause.unwrap().code),
        RevokeCause::MediaBurstTooLong
    );
    assert!(!h
        .table
        .get("call-1")
        .unwrap()
        .arbiter()
        .may_forward(Party::Caller.slot()));
    assert_eq!(
        h.events("call-1"),
        [
            CallEventKind::TransmissionEnded {
                reason: ReleaseReason::MaxDuration
            },
            CallEventKind::Released {
                reason: ReleaseReason::MaxDuration
            }
        ]
    );
}

#[test]
fn no_duration_field_when_unlimited() {
    let mut h = Harness::new(CallConfig::default());
    h.established();
    let sent = h.sent("call-1");
    assert_eq!(parse(&sent[0].1).fields.duration, None);
}
