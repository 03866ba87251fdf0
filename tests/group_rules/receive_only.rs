//! A receive-only member: Rejected #5, Permission to Request 0, its media dropped and revoked.
use super::harness::*;
use mcvideo_relay::control::server::{MemberSetup, TcConfig};
use mcvideo_relay::wire::tc::MessageKind as K;
use std::time::Duration;

#[test]
fn receive_only_member_is_rejected_told_no_permission_and_revoked_when_it_sends() {
    let mut g = G::new(TcConfig::default());
    let a = g.join(member("a", 100));
    let viewer = g.join(MemberSetup {
        receive_only: true,
        ..member("viewer", 100)
    });
    g.s.start(g.now);
    g.out();
    g.request(viewer, None, None);
    assert_eq!(cause_of(&one(&g.out(), viewer, K::TransmissionRejected)), 5);
    g.request(a, None, None);
    let out = g.out();
    let n = one(&out, viewer, K::MediaTransmissionNotification);
    assert_eq!(n.msg().fields.permission_to_request, Some(0));
    assert_ne!(g.arbiter().receivers(a) & viewer.bit(), 0, "it receives");
    assert!(!g.arbiter().may_forward(viewer), "its media is dropped");

    // It sends anyway: revoked after the tolerance, repeated on T3 while it keeps sending.
    g.media(viewer, 4);
    assert!(g.out().is_empty());
    g.media(viewer, 1);
    let r = one(&g.out(), viewer, K::TransmissionRevoked);
    assert_eq!(cause_of(&r), 3);
    g.media(viewer, 10);
    g.advance(Duration::from_millis(1_001));
    assert_eq!(to_of(&g.out(), K::TransmissionRevoked), [viewer]);
    // It stops: no more.
    g.advance(Duration::from_secs(5));
    assert!(to_of(&g.out(), K::TransmissionRevoked).is_empty());
    assert_eq!(g.s.stats().unpermitted_media_packets, 15);
}

#[test]
fn media_without_permission_while_idle_is_dropped_silently() {
    let (mut g, m) = G::started(TcConfig::default(), &["a", "b"]);
    g.media(m[1], 50);
    assert!(
        g.out().is_empty(),
        "idle, and it never transmitted: no revoke"
    );
    assert!(!g.arbiter().may_forward(m[1]));
    // Right after its own transmission ended, it is revoked (it did not stop).
    g.request(m[1], None, None);
    g.end(m[1]);
    g.out();
    g.media(m[1], 5);
    assert_eq!(cause_of(&one(&g.out(), m[1], K::TransmissionRevoked)), 3);
}
