//! Cx = 2: two members transmit at once; a third request waits.
use super::harness::*;
use mcvideo_relay::control::arbiter::slots;
use mcvideo_relay::control::server::TcConfig;
use mcvideo_relay::wire::tc::MessageKind as K;

#[test]
fn two_simultaneous_transmitters_each_with_unique_ssrcs() {
    let cfg = TcConfig {
        max_transmitters: 2,
        ..TcConfig::default()
    };
    let (mut g, m) = G::started(cfg, &["a", "b", "c", "d"]);
    let (a, b, c, d) = (m[0], m[1], m[2], m[3]);
    g.request(a, None, None);
    g.request(b, None, None);
    let out = g.out();
    let va = one(&out, a, K::TransmissionGranted)
        .msg()
        .fields
        .video_ssrc
        .unwrap();
    let vb = one(&out, b, K::TransmissionGranted)
        .msg()
        .fields
        .video_ssrc
        .unwrap();
    assert_ne!(va, vb, "each grant has its own SSRC");
    // A learns about B and B about A; C and D about both.
    one(&out, a, K::MediaTransmissionNotification);
    one(&out, b, K::MediaTransmissionNotification);
    for r in [c, d] {
        let n: Vec<_> = out
            .iter()
            .filter(|s| s.to == r && s.kind() == K::MediaTransmissionNotification)
            .map(|s| s.msg().fields.video_ssrc.unwrap())
            .collect();
        assert_eq!(n, [va, vb]);
    }
    let arb = g.arbiter();
    assert!(arb.may_forward(a) && arb.may_forward(b));
    assert_eq!(slots(arb.receivers(a)).collect::<Vec<_>>(), [b, c, d]);
    assert_eq!(slots(arb.receivers(b)).collect::<Vec<_>>(), [a, c, d]);
    assert_eq!(g.ssrcs.in_use(), 4);

    g.request(c, None, None);
    assert_eq!(
        one(&g.out(), c, K::QueuePositionInfo)
            .msg()
            .fields
            .queue_info
            .unwrap()
            .position,
        1
    );
    g.end(a);
    one(&g.out(), c, K::TransmissionGranted);
    assert!(g.arbiter().may_forward(b) && g.arbiter().may_forward(c));
    assert!(!g.arbiter().may_forward(a));
    assert_eq!(g.ssrcs.in_use(), 4, "A's SSRCs went back");
}

#[test]
fn a_members_a_ssrc_is_used_when_free() {
    let mut g = G::new(TcConfig::default());
    let mut a = member("a", 100);
    a.video_ssrc = Some(mcvideo_relay::Ssrc(0xaaaa_0001));
    let a = g.join(a);
    let mut b = member("b", 100);
    b.video_ssrc = Some(mcvideo_relay::Ssrc(0xaaaa_0001)); // taken by A's grant below
    let b = g.join(b);
    g.s.start(g.now);
    g.request(a, None, None);
    let out = g.out();
    assert_eq!(
        one(&out, a, K::TransmissionGranted).msg().fields.video_ssrc,
        Some(0xaaaa_0001)
    );
    g.end(a);
    g.out();
    // Free again after A's end: B gets it.
    g.request(b, None, None);
    assert_eq!(
        one(&g.out(), b, K::TransmissionGranted)
            .msg()
            .fields
            .video_ssrc,
        Some(0xaaaa_0001)
    );
    // A asks while B holds it (Cx = 1): queued, and when granted it cannot have B's SSRC.
    g.request(a, None, None);
    g.out();
    assert!(g.ssrcs.in_use() >= 2);
}
