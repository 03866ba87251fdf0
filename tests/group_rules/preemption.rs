//! Priority pre-emption: at the cap, a stronger request takes the weakest transmission's place
//! (Revoked #4).
use super::harness::*;
use mcvideo_relay::control::server::{EndReason, TcConfig, TcEvent};
use mcvideo_relay::wire::tc::MessageKind as K;
use std::time::Duration;

#[test]
fn higher_priority_preempts_with_revoked_4() {
    let mut g = G::new(TcConfig::default());
    let low = g.join(member("low", 50));
    let high = g.join(member("high", 200));
    let c = g.join(member("c", 100));
    g.s.start(g.now);
    g.out();
    g.request(low, None, None);
    g.media(low, 10);
    g.out();
    g.events();

    g.request(high, Some(200), None);
    let out = g.out();
    let r = one(&out, low, K::TransmissionRevoked);
    assert_eq!(cause_of(&r), 4);
    assert!(ack_required(&r));
    one(&out, high, K::TransmissionGranted);
    // The others hear the end of the old transmission and the new one.
    one(&out, c, K::TransmissionEndNotify);
    assert_eq!(
        one(&out, c, K::MediaTransmissionNotification)
            .msg()
            .fields
            .transmitting_user_id,
        Some("high")
    );
    assert!(!g.arbiter().may_forward(low) && g.arbiter().may_forward(high));
    let ev = g.events();
    assert!(ev.contains(&TcEvent::Preempted {
        member: low,
        by: high
    }));
    assert!(ev.contains(&TcEvent::TransmissionEnded {
        member: low,
        reason: EndReason::Preempted
    }));
    assert!(!ev.contains(&TcEvent::Idle), "no idle in a handover");

    // Revoked is repeated on T3 until acked or answered...
    g.advance(Duration::from_millis(1_001));
    assert_eq!(to_of(&g.out(), K::TransmissionRevoked), [low]);
    g.ack(low, K::TransmissionRevoked);
    g.advance(Duration::from_secs(5));
    assert!(to_of(&g.out(), K::TransmissionRevoked).is_empty());
    // ...and the loser's End Request gets its End Response.
    g.end(low);
    one(&g.out(), low, K::TransmissionEndResponse);
    assert!(g.arbiter().may_forward(high));
}

#[test]
fn equal_or_lower_priority_waits_and_the_requested_priority_is_capped() {
    let mut g = G::new(TcConfig::default());
    let a = g.join(member("a", 100));
    let b = g.join(member("b", 100));
    let weak = g.join(member("weak", 20));
    g.s.start(g.now);
    g.request(a, None, None);
    g.request(b, Some(100), None);
    g.out();
    assert_eq!(g.s.queue().len(), 1);
    // Asking for 255 while allowed 20 counts as 20: no pre-emption.
    g.request(weak, Some(255), None);
    let out = g.out();
    one(&out, weak, K::QueuePositionInfo);
    assert!(to_of(&out, K::TransmissionRevoked).is_empty());
    assert!(g.arbiter().may_forward(a));
}

#[test]
fn the_weakest_of_two_is_preempted() {
    let cfg = TcConfig {
        max_transmitters: 2,
        ..TcConfig::default()
    };
    let mut g = G::new(cfg);
    let strong = g.join(member("strong", 150));
    let weak = g.join(member("weak", 30));
    let boss = g.join(member("boss", 100));
    g.s.start(g.now);
    g.request(strong, Some(150), None);
    g.request(weak, Some(30), None);
    g.out();
    g.request(boss, Some(100), None);
    let out = g.out();
    assert_eq!(to_of(&out, K::TransmissionRevoked), [weak]);
    one(&out, boss, K::TransmissionGranted);
    assert!(g.arbiter().may_forward(strong) && g.arbiter().may_forward(boss));
}
