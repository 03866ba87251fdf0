//! The whole one-to-one video push from request to release (seed steps 1–11 and NOTE 2).

mod common;
use common::*;
use mcvideo_relay::control::call::{
    AnswerCall, CallConfig, CallEventKind, CallState, PortAllocator,
};
use mcvideo_relay::control::server::TransmissionState;
use mcvideo_relay::control::{CommencementMode, Party, ReleaseReason};
use mcvideo_relay::sdp::SessionDescription;
use mcvideo_relay::wire::tc::{MessageKind, TcMessage};
use std::time::Duration;

#[test]
fn video_push_from_request_to_release() {
    let mut h = Harness::new(CallConfig::default());

    // Steps 1–4: the request, authorization, the offer for the callee.
    let offer = h.create(create_request(caller_offer()));
    assert_eq!(offer.call_id, "call-1");
    assert_eq!(offer.commencement_mode, CommencementMode::Manual);
    let sdp = SessionDescription::parse(&offer.sdp_offer).unwrap();
    assert_eq!(sdp.session_connection(), Some(RELAY_IP));
    assert_eq!(sdp.media().len(), 3);
    for m in sdp.media() {
        assert!(
            m.port >= 40_000,
            "relay port in the callee's offer: {}",
            m.port
        );
    }
    assert!(
        offer.sdp_offer.contains(
            "a=key-mgmt:mikey AQAFgM0XflABAAAAAAAAAAAAAAYAyO2ZsKrXRmUAAAAAAAAAAAAAAAAAAAAAAA==\r\n"
        ),
        "MIKEY passes byte for byte"
    );
    assert_eq!(h.events("call-1"), [CallEventKind::Progress]);
    let call = h.table.get("call-1").unwrap();
    assert_eq!(call.state(), CallState::Offered);
    assert!(
        !call.arbiter().may_forward(Party::Caller.slot()),
        "no media before acceptance"
    );

    // Steps 6–7: the callee answers; the caller gets an answer pointing at the relay.
    let answer = h
        .table
        .accept_call(
            h.now,
            "call-1",
            AnswerCall {
                callee_sdp: callee_answer(true),
                callee_tc_key: None,
            },
        )
        .unwrap();
    let ans = SessionDescription::parse(&answer.sdp_answer).unwrap();
    assert_eq!(ans.session_connection(), Some(RELAY_IP));
    assert!(ans.media().iter().all(|m| m.port >= 40_000));
    let call = h.table.get("call-1").unwrap();
    let video = &call.streams()[1];
    assert_eq!(
        video.remote_rtp[Party::Caller.index()],
        Some("192.0.2.10:6002".parse().unwrap())
    );
    assert_eq!(
        video.remote_rtp[Party::Callee.index()],
        Some("198.51.100.20:7002".parse().unwrap())
    );
    assert_eq!(
        video.remote_rtcp[Party::Callee.index()],
        Some("198.51.100.20:7003".parse().unwrap())
    );

    // Steps 8–10: Granted to the caller with its own SSRCs, Notification to the callee.
    let sent = h.sent("call-1");
    assert_eq!(
        kinds(&sent),
        [
            (Party::Caller, MessageKind::TransmissionGranted),
            (Party::Callee, MessageKind::MediaTransmissionNotification)
        ]
    );
    let granted = parse(&sent[0].1);
    assert_eq!(granted.fields.audio_ssrc, Some(1111));
    assert_eq!(granted.fields.video_ssrc, Some(2222));
    let note = parse(&sent[1].1);
    assert_eq!(note.fields.permission_to_request, Some(0));
    assert_eq!(note.fields.transmitting_user_id, Some(CALLER));
    assert_eq!(
        h.events("call-1"),
        [
            CallEventKind::Established,
            CallEventKind::TransmissionGranted {
                audio_ssrc: mcvideo_relay::Ssrc(1111),
                video_ssrc: mcvideo_relay::Ssrc(2222)
            }
        ]
    );
    assert!(h
        .table
        .get("call-1")
        .unwrap()
        .arbiter()
        .may_forward(Party::Caller.slot()));

    // Step 11: media flows for a while.
    for _ in 0..50 {
        h.advance(Duration::from_millis(40));
        h.media("call-1", Party::Caller, 3);
    }
    assert_eq!(h.events("call-1"), [CallEventKind::MediaStarted]);
    assert!(
        h.sent("call-1").is_empty(),
        "no Granted retransmission once media flows"
    );

    // NOTE 2: the caller ends its transmission; the call is released.
    let end = TcMessage::new(MessageKind::TransmissionEndRequest, 0x0a11_ce00);
    h.control("call-1", Party::Caller, &end);
    assert_eq!(
        kinds(&h.sent("call-1")),
        [
            (Party::Caller, MessageKind::TransmissionEndResponse),
            (Party::Callee, MessageKind::TransmissionEndNotify)
        ]
    );
    assert_eq!(
        h.events("call-1"),
        [
            CallEventKind::TransmissionEnded {
                reason: ReleaseReason::TransmissionCompleted
            },
            CallEventKind::Released {
                reason: ReleaseReason::TransmissionCompleted
            }
        ]
    );
    let call = h.table.get("call-1").unwrap();
    assert_eq!(call.state(), CallState::Released);
    assert_eq!(call.transmission_state(), TransmissionState::Released);
    assert!(!call.arbiter().may_forward(Party::Caller.slot()));
    assert_eq!(call.poll_timeout(), None, "no timer outlives the call");

    // The engine removes it and gives every port back.
    let call = h.table.remove("call-1").unwrap();
    let ports: Vec<_> = call.relay_ports().collect();
    assert_eq!(ports.len(), 6, "two legs × three streams");
    for p in ports {
        h.ports.free(p);
    }
    assert!(h.ports.in_use.is_empty());
}

#[test]
fn ssrcs_are_fresh_and_unique_when_the_offer_names_none() {
    let mut h = Harness::new(CallConfig::default());
    let bare = caller_offer()
        .replace("a=ssrc:1111 cname:alice\r\n", "")
        .replace("a=ssrc:2222 cname:alice\r\n", "");
    let mut seen = std::collections::HashSet::new();
    for i in 0..20 {
        let mut req = create_request(bare.clone());
        req.call_id = Some(format!("c{i}").into());
        h.create(req);
        let ids = h.table.get(&format!("c{i}")).unwrap().identities().clone();
        for s in [ids.audio_ssrc, ids.video_ssrc, ids.server_ssrc] {
            assert!(s != 0 && seen.insert(s), "SSRC {s:#x} repeated");
        }
    }
}

#[test]
fn mc_video_ssrc_in_fmtp_wins_over_a_ssrc() {
    let mut h = Harness::new(CallConfig::default());
    let offer = caller_offer().replace(
        "mc_implicit_request\r\n",
        "mc_implicit_request;mc_video_ssrc=3333;mc_audio_ssrc=4444\r\n",
    );
    h.create(create_request(offer));
    let ids = h.table.get("call-1").unwrap().identities().clone();
    assert_eq!((ids.audio_ssrc.get(), ids.video_ssrc.get()), (4444, 3333));
}
