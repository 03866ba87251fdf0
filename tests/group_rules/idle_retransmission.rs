//! Transmission Idle when nobody transmits: to all, with the `x` bit, repeated every T2 to those
//! that did not ack (C2 times); T1 inactivity then releases the call.
use super::harness::*;
use mcvideo_relay::control::server::{TcConfig, TcEvent};
use mcvideo_relay::control::ReleaseReason;
use mcvideo_relay::wire::tc::MessageKind as K;
use std::time::Duration;

fn cfg() -> TcConfig {
    TcConfig {
        t2_idle: Duration::from_secs(1),
        c2_idle: 3,
        t1_inactivity: Duration::from_secs(20),
        ..TcConfig::default()
    }
}

#[test]
fn idle_is_repeated_to_those_that_did_not_ack_then_t1_releases() {
    let mut g = G::new(cfg());
    let m: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|id| g.join(member(id, 100)))
        .collect();
    g.s.start(g.now);
    let out = g.out();
    assert_eq!(to_of(&out, K::TransmissionIdle), m);
    let first = out.first().unwrap();
    assert!(ack_required(first));
    let seq = first.msg().fields.message_sequence_number.unwrap();
    assert!(g.events().contains(&TcEvent::Idle));

    g.ack(m[0], K::TransmissionIdle);
    g.out();
    let mut repeats = 0;
    for _ in 0..10 {
        g.advance(Duration::from_secs(1));
        let out = g.out();
        if out.is_empty() {
            continue;
        }
        repeats += 1;
        let expected = if repeats <= 2 {
            vec![m[1], m[2]]
        } else {
            vec![m[2]]
        };
        assert_eq!(
            to_of(&out, K::TransmissionIdle),
            expected,
            "not to those that acked"
        );
        assert_eq!(out[0].msg().fields.message_sequence_number, Some(seq));
        if repeats == 2 {
            g.ack(m[1], K::TransmissionIdle);
            g.out();
        }
    }
    assert_eq!(repeats, 3, "C2 repeats");
    assert_eq!(g.s.finished(), None);
    g.advance(Duration::from_secs(20));
    assert_eq!(g.s.finished(), Some(ReleaseReason::HangTimer));
    assert!(g.events().contains(&TcEvent::Released {
        reason: ReleaseReason::HangTimer
    }));
}

#[test]
fn a_grant_stops_idle_and_t1_and_the_next_idle_has_a_new_sequence_number() {
    let mut g = G::new(cfg());
    let a = g.join(member("a", 100));
    let b = g.join(member("b", 100));
    g.s.start(g.now);
    let seq1 = g.out()[0].msg().fields.message_sequence_number.unwrap();
    g.request(a, None, None);
    g.media(a, 1);
    g.out();
    // Long past T1: the call lives while A transmits (its media keeps it active).
    for _ in 0..30 {
        g.advance(Duration::from_secs(1));
        g.media(a, 30);
    }
    assert!(g.out().iter().all(|s| s.kind() != K::TransmissionIdle));
    assert_eq!(g.s.finished(), None);
    g.end(a);
    let out = g.out();
    let idle = one(&out, b, K::TransmissionIdle);
    assert_ne!(idle.msg().fields.message_sequence_number, Some(seq1));
    one(&out, a, K::TransmissionIdle);
}
