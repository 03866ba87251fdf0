//! The private-call procedure on the transmission control server: a push between the caller
//! (slot 0) and the callee (slot 1).

use super::*;
use crate::control::Party;
use crate::wire::tc::EmitOptions;

fn member(user_id: &str, receive_only: bool) -> MemberSetup {
    MemberSetup {
        user_id: user_id.into(),
        receive_only,
        control: true,
        ..MemberSetup::default()
    }
}

fn server(cfg: TcConfig) -> TransmissionControlServer {
    TransmissionControlServer::private(
        cfg,
        Procedure::Private {
            transmitter: Party::Caller.slot(),
            audio_ssrc: Ssrc(0xa0a0_a0a0),
            video_ssrc: Ssrc(0xb0b0_b0b0),
        },
        ServerIdentity {
            call_id: "c1".into(),
            server_ssrc: Ssrc(0x5e5e_5e5e),
        },
        Arc::new(Arbiter::with_members(2)),
        [member("sip:alice@mcx", false), member("sip:bob@mcx", true)],
    )
}

fn drain(s: &mut TransmissionControlServer) -> Vec<(Party, MessageKind, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut v = Vec::new();
    while let Some(to) = s.poll_transmit(&mut buf).and_then(Party::of_slot) {
        let kind = TcMessage::parse(&buf).unwrap().kind;
        v.push((to, kind, buf.clone()));
    }
    v
}

fn kinds(v: &[(Party, MessageKind, Vec<u8>)]) -> Vec<(Party, MessageKind)> {
    v.iter().map(|(p, k, _)| (*p, *k)).collect()
}

#[test]
fn grant_sends_granted_and_notification() {
    let t0 = Instant::now();
    let mut s = server(TcConfig::default());
    s.start(t0);
    let out = drain(&mut s);
    assert_eq!(
        kinds(&out),
        [
            (Party::Caller, MessageKind::TransmissionGranted),
            (Party::Callee, MessageKind::MediaTransmissionNotification)
        ]
    );
    let g = TcMessage::parse(&out[0].2).unwrap();
    assert_eq!(g.fields.audio_ssrc, Some(0xa0a0_a0a0));
    assert_eq!(g.fields.video_ssrc, Some(0xb0b0_b0b0));
    assert_eq!(g.ssrc, 0x5e5e_5e5e);
    let n = TcMessage::parse(&out[1].2).unwrap();
    assert_eq!(n.fields.permission_to_request, Some(0));
    assert_eq!(n.fields.transmitting_user_id, Some("sip:alice@mcx"));
    assert!(s.arbiter().may_forward(Party::Caller.slot()));
    assert_eq!(
        s.poll_event(),
        Some(TcEvent::Granted {
            member: Party::Caller.slot(),
            audio_ssrc: Ssrc(0xa0a0_a0a0),
            video_ssrc: Ssrc(0xb0b0_b0b0)
        })
    );
}

#[test]
fn no_control_channel_means_no_messages() {
    let t0 = Instant::now();
    let mut s = server(TcConfig::default());
    s.set_control(Party::Caller.slot(), false);
    s.set_control(Party::Callee.slot(), false);
    s.start(t0);
    assert!(drain(&mut s).is_empty());
    assert!(s.arbiter().may_forward(Party::Caller.slot()));
    s.handle_rtcp_bye(t0, Party::Caller.slot());
    assert_eq!(s.finished(), Some(ReleaseReason::RtcpBye));
    assert_eq!(s.transmission_state(), TransmissionState::Released);
}

#[test]
fn reply_budget_bounds_answers_to_a_flood() {
    let t0 = Instant::now();
    let mut s = server(TcConfig::default());
    s.start(t0);
    drain(&mut s);
    let mut req = TcMessage::new(MessageKind::TransmissionRequest, 7);
    req.ack_required = true;
    let bytes = req.to_vec(&EmitOptions::default()).unwrap();
    for _ in 0..10_000 {
        s.handle_datagram(t0, Party::Callee.slot(), &bytes);
    }
    let out = drain(&mut s);
    assert!(out.len() <= 64, "{} replies", out.len());
    assert!(s.stats().rate_limited > 9_000);
}
