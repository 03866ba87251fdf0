//! C9: a receiver takes at most this many streams at once.
use super::harness::*;
use mcvideo_relay::control::arbiter::slots;
use mcvideo_relay::control::server::{ReceptionMode, TcConfig};
use mcvideo_relay::wire::tc::{MessageKind as K, TcMessage};

#[test]
fn automatic_reception_stops_at_c9_and_a_request_beyond_it_is_refused_with_7() {
    let cfg = TcConfig {
        max_transmitters: 3,
        max_streams_per_receiver: 2,
        ..TcConfig::default()
    };
    let (mut g, m) = G::started(cfg, &["a", "b", "c", "viewer"]);
    let (a, b, c, viewer) = (m[0], m[1], m[2], m[3]);
    for t in [a, b, c] {
        g.request(t, None, None);
    }
    let out = g.out();
    // Told of all three, receives the first two.
    assert_eq!(
        out.iter()
            .filter(|s| s.to == viewer && s.kind() == K::MediaTransmissionNotification)
            .count(),
        3
    );
    let receiving: Vec<_> = [a, b, c]
        .into_iter()
        .filter(|t| g.arbiter().receivers(*t) & viewer.bit() != 0)
        .collect();
    assert_eq!(receiving, [a, b]);
    let view = g.s.member_view(viewer).unwrap();
    assert_eq!(view.receiving, [a, b]);

    let mut req = TcMessage::new(K::ReceiveMediaRequest, 9);
    req.fields.transmitting_user_id = Some("c");
    g.send(viewer, &req);
    let r = one(&g.out(), viewer, K::ReceiveMediaResponse);
    assert_eq!(r.msg().fields.result, Some(0));
    assert_eq!(cause_of(&r), 7);

    // A frees a place: the viewer can now take C.
    g.end(a);
    g.out();
    g.send(viewer, &req);
    assert_eq!(
        one(&g.out(), viewer, K::ReceiveMediaResponse)
            .msg()
            .fields
            .result,
        Some(1)
    );
    assert_eq!(
        slots(g.arbiter().receivers(c))
            .filter(|r| *r == viewer)
            .count(),
        1
    );
}

#[test]
fn manual_requests_count_against_c9_too() {
    let cfg = TcConfig {
        max_transmitters: 2,
        max_streams_per_receiver: 1,
        reception_mode: ReceptionMode::Manual,
        ..TcConfig::default()
    };
    let (mut g, m) = G::started(cfg, &["a", "b", "v"]);
    g.request(m[0], None, None);
    g.request(m[1], None, None);
    g.out();
    let mut req = TcMessage::new(K::ReceiveMediaRequest, 9);
    req.fields.transmitting_user_id = Some("a");
    g.send(m[2], &req);
    assert_eq!(
        one(&g.out(), m[2], K::ReceiveMediaResponse)
            .msg()
            .fields
            .result,
        Some(1)
    );
    req.fields.transmitting_user_id = Some("b");
    g.send(m[2], &req);
    let r = one(&g.out(), m[2], K::ReceiveMediaResponse);
    assert_eq!((r.msg().fields.result, cause_of(&r)), (Some(0), 7));
}
