//! Two requests at once with Cx = 1: one granted, one queued, then granted when the first ends.
use super::harness::*;
use mcvideo_relay::control::server::{EndReason, TcConfig, TcEvent};
use mcvideo_relay::wire::tc::MessageKind as K;

#[test]
fn second_request_is_queued_then_granted_when_the_first_ends() {
    let (mut g, m) = G::started(TcConfig::default(), &["a", "b", "c", "d"]);
    let (a, b, c, d) = (m[0], m[1], m[2], m[3]);
    g.request(a, None, None);
    g.request(b, None, None);
    let out = g.out();
    let granted = one(&out, a, K::TransmissionGranted);
    let video_a = granted.msg().fields.video_ssrc.unwrap();
    assert_eq!(Some(video_a), g.video_ssrc(a).map(|s| s.get()));
    // Everyone else is told who transmits, with the SSRCs to expect.
    for r in [b, c, d] {
        let n = one(&out, r, K::MediaTransmissionNotification);
        assert_eq!(n.msg().fields.transmitting_user_id, Some("a"));
        assert_eq!(n.msg().fields.video_ssrc, Some(video_a));
        assert_eq!(n.msg().fields.permission_to_request, Some(1));
    }
    let q = one(&out, b, K::QueuePositionInfo);
    assert_eq!(q.msg().fields.queue_info.unwrap().position, 1);
    assert_eq!(q.msg().fields.queued_user_id, Some("b"));
    assert!(g.arbiter().may_forward(a) && !g.arbiter().may_forward(b));
    assert!(g.events().contains(&TcEvent::Queued {
        member: b,
        position: 1
    }));

    // B asks where it stands.
    g.send(
        b,
        &mcvideo_relay::wire::tc::TcMessage::new(K::QueuePositionRequest, 7),
    );
    let q = one(&g.out(), b, K::QueuePositionInfo);
    assert_eq!(q.msg().fields.queue_info.unwrap().position, 1);
    // A stranger to the queue is told it is not queued (254).
    g.send(
        c,
        &mcvideo_relay::wire::tc::TcMessage::new(K::QueuePositionRequest, 7),
    );
    let q = one(&g.out(), c, K::QueuePositionInfo);
    assert_eq!(q.msg().fields.queue_info.unwrap().position, 254);

    g.end(a);
    let out = g.out();
    let resp = one(&out, a, K::TransmissionEndResponse);
    assert_eq!(resp.msg().fields.video_ssrc, Some(video_a));
    for r in [b, c, d] {
        let n = one(&out, r, K::TransmissionEndNotify);
        assert_eq!(n.msg().fields.transmitting_user_id, Some("a"));
    }
    one(&out, b, K::TransmissionGranted);
    for r in [a, c, d] {
        let n = one(&out, r, K::MediaTransmissionNotification);
        assert_eq!(n.msg().fields.transmitting_user_id, Some("b"));
    }
    assert!(
        to_of(&out, K::TransmissionIdle).is_empty(),
        "no idle between the two"
    );
    assert!(!g.arbiter().may_forward(a) && g.arbiter().may_forward(b));
    let ev = g.events();
    assert!(ev.contains(&TcEvent::TransmissionEnded {
        member: a,
        reason: EndReason::Completed
    }));
    assert!(ev
        .iter()
        .any(|e| matches!(e, TcEvent::Granted { member, .. } if *member == b)));
    assert!(g.s.queue().is_empty());
}

#[test]
fn queue_is_ordered_by_priority_then_arrival_and_bounded() {
    let cfg = TcConfig {
        max_queue: 2,
        ..TcConfig::default()
    };
    let mut g = G::new(cfg);
    let a = g.join(member("a", 100));
    let b = g.join(member("b", 10));
    let c = g.join(member("c", 200));
    let d = g.join(member("d", 100));
    g.s.start(g.now);
    g.request(a, Some(100), None);
    g.request(b, Some(10), None);
    g.request(c, Some(100), None); // equal to the transmitter: no pre-emption, queued first
    g.out();
    let q: Vec<_> = g.s.queue().iter().map(|q| (q.member, q.position)).collect();
    assert_eq!(q, [(c, 1), (b, 2)]);
    g.request(d, None, None);
    let r = one(&g.out(), d, K::TransmissionRejected);
    assert_eq!(cause_of(&r), 1, "queue full: transmission limit reached");
    // Queued and then ends its request: it leaves the queue with an End Response.
    g.end(b);
    one(&g.out(), b, K::TransmissionEndResponse);
    assert_eq!(g.s.queue().len(), 1);
}

#[test]
fn queueing_off_rejects_at_the_cap_and_a_lone_member_is_rejected() {
    let cfg = TcConfig {
        queueing: false,
        ..TcConfig::default()
    };
    let (mut g, m) = G::started(cfg.clone(), &["a", "b"]);
    g.request(m[0], None, None);
    g.request(m[1], None, None);
    assert_eq!(cause_of(&one(&g.out(), m[1], K::TransmissionRejected)), 1);

    let (mut g, m) = G::started(cfg, &["alone"]);
    g.request(m[0], None, None);
    assert_eq!(cause_of(&one(&g.out(), m[0], K::TransmissionRejected)), 3);
    assert!(!g.arbiter().may_forward(m[0]));
}
