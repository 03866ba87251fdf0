//! Manual reception: a receiver asks for a stream with Receive Media Request; T6 repeats the
//! granted response until acked; Media Reception End Request takes it off; T11 ends a stream
//! nobody receives.
use super::harness::*;
use mcvideo_relay::control::server::{EndReason, ReceptionMode, TcConfig, TcEvent};
use mcvideo_relay::wire::tc::{MessageKind as K, TcMessage};
use std::time::Duration;

fn cfg() -> TcConfig {
    TcConfig {
        reception_mode: ReceptionMode::Manual,
        t11_stream_idle: Duration::from_secs(10),
        ..TcConfig::default()
    }
}

#[test]
fn receive_media_request_grants_the_stream() {
    let (mut g, m) = G::started(cfg(), &["a", "b", "c"]);
    let (a, b, c) = (m[0], m[1], m[2]);
    g.request(a, None, None);
    g.media(a, 1);
    let out = g.out();
    assert_eq!(
        one(&out, b, K::MediaTransmissionNotification)
            .msg()
            .fields
            .reception_mode,
        Some(1)
    );
    assert_eq!(g.arbiter().receivers(a), 0, "nobody receives until asked");
    let video = g.video_ssrc(a).unwrap().get();

    let mut req = TcMessage::new(K::ReceiveMediaRequest, 0x2000);
    req.fields.video_ssrc = Some(video);
    g.send(b, &req);
    let out = g.out();
    let resp = one(&out, b, K::ReceiveMediaResponse);
    assert_eq!(resp.msg().fields.result, Some(1));
    assert_eq!(resp.msg().fields.video_ssrc, Some(video));
    assert!(ack_required(&resp));
    let n = one(&out, a, K::MediaReceptionNotification);
    assert_eq!(n.msg().fields.user_id, Some("b"));
    assert_eq!(g.arbiter().receivers(a), b.bit());
    assert!(g.events().contains(&TcEvent::ReceptionStarted {
        receiver: b,
        transmitter: a
    }));

    // Not acked: repeated on T6, up to C6; acked: no more.
    g.advance(Duration::from_millis(1_001));
    assert_eq!(to_of(&g.out(), K::ReceiveMediaResponse), [b]);
    g.ack(b, K::ReceiveMediaResponse);
    g.advance(Duration::from_secs(3));
    assert!(to_of(&g.out(), K::ReceiveMediaResponse).is_empty());

    // By transmitting user, too.
    let mut req = TcMessage::new(K::ReceiveMediaRequest, 0x2001);
    req.fields.transmitting_user_id = Some("a");
    g.send(c, &req);
    assert_eq!(
        one(&g.out(), c, K::ReceiveMediaResponse)
            .msg()
            .fields
            .result,
        Some(1)
    );
    assert_eq!(g.arbiter().receivers(a), b.bit() | c.bit());

    // Reception end: off the list.
    let mut end = TcMessage::new(K::MediaReceptionEndRequest, 0x2000);
    end.fields.video_ssrc = Some(video);
    g.send(b, &end);
    one(&g.out(), b, K::MediaReceptionEndResponse);
    assert_eq!(g.arbiter().receivers(a), c.bit());
}

#[test]
fn a_stream_nobody_receives_ends_after_t11_with_cause_8() {
    let (mut g, m) = G::started(cfg(), &["a", "b"]);
    g.request(m[0], None, None);
    g.out();
    g.events();
    for _ in 0..9 {
        g.advance(Duration::from_secs(1));
        g.media(m[0], 30);
    }
    assert!(g.arbiter().may_forward(m[0]));
    g.advance(Duration::from_millis(1_001));
    let out = g.out();
    let e = one(&out, m[0], K::TransmissionEndRequest);
    assert_eq!(cause_of(&e), 8);
    one(&out, m[1], K::TransmissionEndNotify);
    assert!(!g.arbiter().may_forward(m[0]));
    assert!(g.events().contains(&TcEvent::TransmissionEnded {
        member: m[0],
        reason: EndReason::NoReceivers
    }));
}

#[test]
fn a_request_naming_no_transmission_is_refused() {
    let (mut g, m) = G::started(cfg(), &["a", "b"]);
    g.send(m[1], &TcMessage::new(K::ReceiveMediaRequest, 1));
    let r = one(&g.out(), m[1], K::ReceiveMediaResponse);
    assert_eq!(r.msg().fields.result, Some(0));
    assert_eq!(cause_of(&r), 255);
}

#[test]
fn the_last_receiver_leaving_starts_t11() {
    let (mut g, m) = G::started(cfg(), &["a", "b", "c"]);
    g.request(m[0], None, None);
    let mut req = TcMessage::new(K::ReceiveMediaRequest, 9);
    req.fields.transmitting_user_id = Some("a");
    g.send(m[1], &req);
    g.out();
    // Receiving: T11 is off; A keeps sending past T11.
    for _ in 0..12 {
        g.advance(Duration::from_secs(1));
        g.media(m[0], 30);
    }
    assert!(g.arbiter().may_forward(m[0]));
    g.s.leave(g.now, m[1]);
    for _ in 0..11 {
        g.advance(Duration::from_secs(1));
        g.media(m[0], 30);
    }
    assert!(!g.arbiter().may_forward(m[0]), "nobody received it for T11");
}
