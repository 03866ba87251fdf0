//! A transmitter that leaves mid-transmission: the others hear the end, the next request is
//! granted, its grant and routes are gone.
use super::harness::*;
use mcvideo_relay::control::server::{EndReason, TcConfig, TcEvent};
use mcvideo_relay::wire::tc::MessageKind as K;

#[test]
fn leaving_ends_the_transmission_and_grants_the_queue() {
    let (mut g, m) = G::started(TcConfig::default(), &["a", "b", "c"]);
    let (a, b, c) = (m[0], m[1], m[2]);
    g.request(a, None, None);
    g.request(b, None, None);
    g.media(a, 5);
    g.out();
    g.events();
    assert_eq!(g.ssrcs.in_use(), 2);
    assert!(g.s.leave(g.now, a));
    let out = g.out();
    for r in [b, c] {
        one(&out, r, K::TransmissionEndNotify);
    }
    assert!(
        out.iter().all(|s| s.to != a),
        "nothing to the member that left"
    );
    one(&out, b, K::TransmissionGranted);
    assert_eq!(
        one(&out, c, K::MediaTransmissionNotification)
            .msg()
            .fields
            .transmitting_user_id,
        Some("b")
    );
    assert!(!g.arbiter().may_forward(a));
    assert_eq!(g.arbiter().receivers(b) & a.bit(), 0);
    let ev = g.events();
    assert!(ev.contains(&TcEvent::TransmissionEnded {
        member: a,
        reason: EndReason::Left
    }));
    assert!(ev.contains(&TcEvent::Left { member: a }));
    assert_eq!(g.ssrcs.in_use(), 2, "A's SSRCs freed, B's taken");
    assert!(!g.s.leave(g.now, a), "gone already");
    // Its media after leaving is nobody's business.
    g.media(a, 100);
    assert!(g.out().is_empty());
}

#[test]
fn the_last_transmitter_leaving_makes_the_group_idle() {
    let (mut g, m) = G::started(TcConfig::default(), &["a", "b", "c"]);
    g.request(m[0], None, None);
    g.out();
    g.s.leave(g.now, m[0]);
    let out = g.out();
    assert_eq!(to_of(&out, K::TransmissionIdle), [m[1], m[2]]);
    assert!(g.events().contains(&TcEvent::Idle));
}
