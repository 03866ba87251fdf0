//! Safety nets: media inactivity completes the transmission (`media_timeout`); T1 releases a
//! call whose media never started (`hang_timer`); an unanswered offer times out (`no_answer`).

mod common;
use common::*;
use mcvideo_relay::control::call::{CallConfig, CallEventKind, CallState};
use mcvideo_relay::control::{Party, ReleaseReason};
use mcvideo_relay::wire::tc::MessageKind;
use std::time::Duration;

fn released_at(h: &mut Harness, reason: ReleaseReason, step: Duration, max: Duration) -> Duration {
    let start = h.now;
    while h.now - start < max {
        h.advance(step);
        let ev = h.events("call-1");
        if ev.contains(&CallEventKind::Released { reason }) {
            return h.now - start;
        }
        assert!(
            !ev.iter()
                .any(|e| matches!(e, CallEventKind::Released { .. })),
            "{ev:?}"
        );
    }
    panic!("not released within {max:?}");
}

#[test]
fn caller_media_stops_call_released_for_media_timeout() {
    let cfg = CallConfig::default();
    let idle = cfg.tc.media_inactivity;
    let mut h = Harness::new(cfg);
    h.established();
    for _ in 0..100 {
        h.advance(Duration::from_millis(40));
        h.media("call-1", Party::Caller, 2);
    }
    h.sent("call-1");
    h.events("call-1");
    let after = released_at(
        &mut h,
        ReleaseReason::MediaTimeout,
        Duration::from_millis(100),
        idle * 2,
    );
    assert_eq!(after, idle);
    assert_eq!(
        kinds(&h.sent("call-1")),
        [(Party::Callee, MessageKind::TransmissionEndNotify)]
    );
}

#[test]
fn callee_media_does_not_keep_the_call_alive() {
    let cfg = CallConfig::default();
    let idle = cfg.tc.media_inactivity;
    let mut h = Harness::new(cfg);
    h.established();
    h.media("call-1", Party::Caller, 1);
    h.events("call-1");
    let start = h.now;
    while h.now - start < idle * 2 {
        h.advance(Duration::from_millis(100));
        h.media("call-1", Party::Callee, 1);
        if h.table.get("call-1").unwrap().state() == CallState::Released {
            break;
        }
    }
    assert_eq!(h.now - start, idle);
}

#[test]
fn t1_releases_a_call_whose_media_never_starts() {
    let cfg = CallConfig::default();
    let t1 = cfg.tc.t1_inactivity;
    let mut h = Harness::new(cfg);
    h.established();
    h.events("call-1");
    let after = released_at(
        &mut h,
        ReleaseReason::HangTimer,
        Duration::from_millis(500),
        t1 * 2,
    );
    assert_eq!(after, t1);
}

#[test]
fn unanswered_offer_times_out() {
    let cfg = CallConfig::default();
    let timeout = cfg.offer_timeout;
    let mut h = Harness::new(cfg);
    h.create(create_request(caller_offer()));
    h.events("call-1");
    let after = released_at(
        &mut h,
        ReleaseReason::NoAnswer,
        Duration::from_secs(1),
        timeout * 2,
    );
    assert_eq!(after, timeout);
    assert!(h.sent("call-1").is_empty());
}
