//! SDP through the call procedure: the media subset offered to the callee, per_leg SDES keys
//! rewritten on each leg while everything else passes byte for byte, and bad SDP refused with
//! the line named.

mod common;
use common::*;
use mcvideo_relay::control::call::{AnswerCall, CallConfig, SetupError};
use mcvideo_relay::control::{MediaSecurity, Party};
use mcvideo_relay::keys::{MasterKey, SrtpSuite};
use mcvideo_relay::sdp::{MediaKind, SessionDescription};

const CALLER_KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e";
const CALLEE_KEY: &str = "HRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgEA";

fn with_crypto(sdp: &str, key: &str) -> String {
    sdp.replace(
        "a=rtpmap:97 H264/90000\r\n",
        &format!("a=rtpmap:97 H264/90000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"),
    )
}

#[test]
fn audio_left_out_of_the_offer_when_configured() {
    let mut h = Harness::new(CallConfig {
        offer_audio: false,
        ..CallConfig::default()
    });
    let offer = h.create(create_request(caller_offer()));
    let sdp = SessionDescription::parse(&offer.sdp_offer).unwrap();
    let kinds: Vec<_> = sdp
        .media()
        .iter()
        .map(|m| (m.kind.clone(), m.port != 0))
        .collect();
    assert_eq!(
        kinds,
        [
            (MediaKind::Audio, false),
            (MediaKind::Video, true),
            (MediaKind::Control, true)
        ],
        "a stream not offered goes with port 0 so the answer lines up"
    );
    assert_eq!(h.ports.in_use.len(), 4, "no ports for the audio");
    let answer = callee_answer(true).replace("m=audio 7000", "m=audio 0");
    let a = h
        .table
        .accept_call(
            h.now,
            "call-1",
            AnswerCall {
                callee_sdp: answer,
                callee_tc_key: None,
            },
        )
        .unwrap();
    let sdp = SessionDescription::parse(&a.sdp_answer).unwrap();
    assert_eq!(
        sdp.media()[0].port,
        0,
        "the caller's audio is rejected in its answer"
    );
    assert!(sdp.media()[1].port != 0 && sdp.media()[2].port != 0);
}

#[test]
fn lines_other_than_address_and_ports_pass_byte_for_byte() {
    let mut h = Harness::new(CallConfig::default());
    let original = caller_offer();
    let offer = h.create(create_request(original.clone()));
    let changed: Vec<(&str, &str)> = original
        .split("\r\n")
        .zip(offer.sdp_offer.split("\r\n"))
        .filter(|(a, b)| a != b)
        .collect();
    for (before, after) in &changed {
        assert!(
            before.starts_with("c=") || before.starts_with("m="),
            "only c= and m= lines change: {before:?} -> {after:?}"
        );
    }
    assert_eq!(
        original.split("\r\n").count(),
        offer.sdp_offer.split("\r\n").count()
    );
}

#[test]
fn per_leg_mode_rewrites_crypto_on_each_leg() {
    let mut h = Harness::new(CallConfig::default());
    let mut req = create_request(with_crypto(&caller_offer(), CALLER_KEY));
    req.media_security = MediaSecurity::PerLeg;
    // Audio has no a=crypto: per_leg refuses, naming the line.
    let err = h
        .table
        .create_call(h.now, req.clone(), &mut h.ports)
        .unwrap_err();
    assert!(
        matches!(
            err,
            SetupError::NoAcceptableMedia {
                party: Party::Caller,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("line 7"), "{err}");
    assert!(h.ports.in_use.is_empty());

    let mut cfg_h = Harness::new(CallConfig {
        offer_audio: false,
        ..CallConfig::default()
    });
    let offer = cfg_h.create(req);
    assert!(
        !offer.sdp_offer.contains(CALLER_KEY),
        "the caller's key never reaches the callee"
    );
    let sdp = SessionDescription::parse(&offer.sdp_offer).unwrap();
    let c = &sdp.media()[1].crypto[0];
    assert_eq!((c.tag, c.suite.as_str()), (1, "AES_CM_128_HMAC_SHA1_80"));
    let relay_to_callee =
        MasterKey::from_base64(SrtpSuite::AesCm128HmacSha1_80, &c.key_b64).unwrap();

    // The callee answers with its own key; it must not be the one the relay offered.
    let answer = with_crypto(&callee_answer(true), CALLEE_KEY).replace("m=audio 7000", "m=audio 0");
    let a = cfg_h
        .table
        .accept_call(
            cfg_h.now,
            "call-1",
            AnswerCall {
                callee_sdp: answer,
                callee_tc_key: None,
            },
        )
        .unwrap();
    assert!(
        !a.sdp_answer.contains(CALLEE_KEY),
        "the callee's key never reaches the caller"
    );
    let ans = SessionDescription::parse(&a.sdp_answer).unwrap();
    let relay_to_caller = MasterKey::from_base64(
        SrtpSuite::AesCm128HmacSha1_80,
        &ans.media()[1].crypto[0].key_b64,
    )
    .unwrap();

    let video = &cfg_h.table.get("call-1").unwrap().streams()[1];
    let caller = video.keys[Party::Caller.index()].as_ref().unwrap();
    let callee = video.keys[Party::Callee.index()].as_ref().unwrap();
    assert_eq!(caller.inbound.to_base64(), CALLER_KEY);
    assert_eq!(callee.inbound.to_base64(), CALLEE_KEY);
    assert_eq!(callee.outbound, relay_to_callee);
    assert_eq!(caller.outbound, relay_to_caller);
    assert_ne!(caller.outbound, callee.outbound, "a fresh key per leg");
}

#[test]
fn end_to_end_mode_keeps_crypto_lines() {
    let mut h = Harness::new(CallConfig::default());
    let offer = h.create(create_request(with_crypto(&caller_offer(), CALLER_KEY)));
    assert!(offer.sdp_offer.contains(&format!(
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{CALLER_KEY}\r\n"
    )));
    assert!(h.table.get("call-1").unwrap().streams()[1]
        .keys
        .iter()
        .all(Option::is_none));
}

#[test]
fn bad_sdp_names_the_line_and_the_party() {
    let mut h = Harness::new(CallConfig::default());
    let bad = caller_offer().replace("m=video 6002 RTP/SAVP 97", "m=video sixty RTP/SAVP 97");
    let err = h
        .table
        .create_call(h.now, create_request(bad), &mut h.ports)
        .unwrap_err();
    match &err {
        SetupError::BadSdp {
            party: Party::Caller,
            error,
        } => {
            assert_eq!(error.line, 11);
            assert!(error.content.contains("m=video sixty"));
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(err.code(), "bad_sdp");

    let no_video = caller_offer().replace("m=video 6002", "m=video 0");
    let err = h
        .table
        .create_call(h.now, create_request(no_video), &mut h.ports)
        .unwrap_err();
    assert_eq!(err.code(), "no_acceptable_media");
    assert!(h.ports.in_use.is_empty());

    // The callee's answer: garbage, too few m= lines, rejected video. The call stays offered.
    h.create(create_request(caller_offer()));
    for (answer, code) in [
        ("v=0\r\nnonsense\r\n".to_owned(), "bad_sdp"),
        (
            callee_answer(true)
                .split("m=application")
                .next()
                .unwrap()
                .to_owned(),
            "bad_sdp",
        ),
        (
            callee_answer(true).replace("m=video 7002", "m=video 0"),
            "no_acceptable_media",
        ),
    ] {
        let err = h
            .table
            .accept_call(
                h.now,
                "call-1",
                AnswerCall {
                    callee_sdp: answer,
                    callee_tc_key: None,
                },
            )
            .unwrap_err();
        assert_eq!(err.code(), code, "{err}");
    }
    h.table
        .accept_call(
            h.now,
            "call-1",
            AnswerCall {
                callee_sdp: callee_answer(true),
                callee_tc_key: None,
            },
        )
        .unwrap();
    let again = h
        .table
        .accept_call(
            h.now,
            "call-1",
            AnswerCall {
                callee_sdp: callee_answer(true),
                callee_tc_key: None,
            },
        )
        .unwrap_err();
    assert_eq!(again.code(), "wrong_state");
}
