//! A late joiner is told the current state: who transmits and the SSRCs to expect, or Idle.
use super::harness::*;
use mcvideo_relay::control::server::{ReceptionMode, TcConfig, TcEvent};
use mcvideo_relay::wire::tc::MessageKind as K;

#[test]
fn a_joiner_learns_the_transmission_and_receives_it() {
    let (mut g, m) = G::started(TcConfig::default(), &["a", "b"]);
    g.request(m[0], None, None);
    g.out();
    let video = g.video_ssrc(m[0]).unwrap();
    let late = g.join(member("late", 100));
    let out = g.out();
    assert_eq!(out.len(), 1, "only the joiner hears of it: {out:?}");
    let n = one(&out, late, K::MediaTransmissionNotification);
    assert_eq!(n.msg().fields.transmitting_user_id, Some("a"));
    assert_eq!(n.msg().fields.video_ssrc, Some(video.get()));
    assert_eq!(n.msg().fields.reception_mode, Some(0));
    assert_ne!(
        g.arbiter().receivers(m[0]) & late.bit(),
        0,
        "automatic: it receives at once"
    );
    let ev = g.events();
    assert!(ev.contains(&TcEvent::Joined { member: late }));
    assert!(ev.contains(&TcEvent::ReceptionStarted {
        receiver: late,
        transmitter: m[0]
    }));
    // It may ask to transmit like anyone: queued behind A.
    g.request(late, None, None);
    one(&g.out(), late, K::QueuePositionInfo);
}

#[test]
fn a_joiner_while_idle_gets_idle_and_in_manual_mode_no_media_until_it_asks() {
    let (mut g, _) = G::started(TcConfig::default(), &["a", "b"]);
    let late = g.join(member("late", 100));
    assert_eq!(to_of(&g.out(), K::TransmissionIdle), [late]);

    let cfg = TcConfig {
        reception_mode: ReceptionMode::Manual,
        ..TcConfig::default()
    };
    let (mut g, m) = G::started(cfg, &["a", "b"]);
    g.request(m[0], None, None);
    g.out();
    let late = g.join(member("late", 100));
    let n = one(&g.out(), late, K::MediaTransmissionNotification);
    assert_eq!(n.msg().fields.reception_mode, Some(1));
    assert_eq!(g.arbiter().receivers(m[0]) & late.bit(), 0);
}
