//! A send-only member (its SDP offer receives on no stream, e.g. a browser publishing through
//! WHIP): it transmits like any member, is never routed a transmission, and its Receive Media
//! Request is Rejected #5 (Send only).
use super::harness::*;
use mcvideo_relay::control::server::{MemberSetup, ReceptionMode, TcConfig, TcEvent};
use mcvideo_relay::wire::tc::{MessageKind as K, TcMessage};

fn send_only(id: &str) -> MemberSetup {
    MemberSetup {
        send_only: true,
        ..member(id, 100)
    }
}

#[test]
fn a_send_only_member_transmits_and_is_never_routed_a_transmission() {
    let mut g = G::new(TcConfig::default());
    let a = g.join(member("a", 100));
    let b = g.join(member("b", 100));
    let publisher = g.join(send_only("publisher"));
    g.s.start(g.now);
    g.out();

    // Automatic reception: a's transmission goes to b only.
    g.request(a, None, None);
    let out = g.out();
    one(&out, a, K::TransmissionGranted);
    assert_eq!(g.arbiter().receivers(a), b.bit());
    assert!(!g.events().contains(&TcEvent::ReceptionStarted {
        receiver: publisher,
        transmitter: a
    }));
    // It still hears of the transmission on its control channel.
    one(&out, publisher, K::MediaTransmissionNotification);
    g.end(a);
    g.out();

    // It transmits: a and b receive it.
    g.request(publisher, None, None);
    one(&g.out(), publisher, K::TransmissionGranted);
    assert!(g.arbiter().may_forward(publisher));
    assert_eq!(g.arbiter().receivers(publisher), a.bit() | b.bit());
    // Nor is the next transmitter's: b's goes to a only.
    g.end(publisher);
    g.out();
    g.request(b, None, None);
    g.out();
    assert_eq!(g.arbiter().receivers(b), a.bit());
}

#[test]
fn a_send_only_members_receive_media_request_is_rejected_send_only() {
    let cfg = TcConfig {
        reception_mode: ReceptionMode::Manual,
        ..TcConfig::default()
    };
    let mut g = G::new(cfg);
    let a = g.join(member("a", 100));
    let publisher = g.join(send_only("publisher"));
    g.s.start(g.now);
    g.request(a, None, None);
    g.media(a, 1);
    g.out();
    let video = g.video_ssrc(a).unwrap().get();

    let mut req = TcMessage::new(K::ReceiveMediaRequest, 0x2000);
    req.fields.video_ssrc = Some(video);
    g.send(publisher, &req);
    let out = g.out();
    let resp = one(&out, publisher, K::ReceiveMediaResponse);
    assert_eq!(resp.msg().fields.result, Some(0), "refused");
    assert_eq!(cause_of(&resp), 5, "#5 Send only");
    assert_eq!(resp.msg().fields.video_ssrc, Some(video));
    assert_eq!(g.arbiter().receivers(a), 0);
    assert!(to_of(&out, K::MediaReceptionNotification).is_empty());
}
