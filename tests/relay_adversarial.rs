//! Bad input at a live call's ports: garbage and truncated datagrams, a spoofed source, callee
//! media, a wrong SSRC, SRTP with a bad tag or replayed, unprotected control on an SRTCP
//! channel. None of it is forwarded, all of it is counted, and the call goes on unharmed.

mod common;
use common::net::*;
use mcvideo_relay::control::call::{AnswerCall, CreateCall};
use mcvideo_relay::control::MediaSecurity;
use mcvideo_relay::keys::{MasterKey, SrtpSuite};
use mcvideo_relay::relay::{DropReason, Engine, EngineConfig};
use mcvideo_relay::srtp::SrtpContext;
use mcvideo_relay::wire::tc::{MessageKind, RevokeCause, TcMessage};
use std::net::UdpSocket;
use std::time::Duration;

const SSRC: u32 = 0x5eed_0001;

struct Live {
    engine: Engine,
    callee_offer: String,
    caller: Peer,
    callee: Peer,
    to_caller: RelayAddrs,
    to_callee: RelayAddrs,
}

fn live(
    port_min: u16,
    mode: MediaSecurity,
    caller_extra: &str,
    callee_extra: &str,
    tc_key: Option<MasterKey>,
) -> Live {
    let engine = Engine::start(EngineConfig {
        port_min,
        port_max: port_min + 99,
        workers: 1,
        ..EngineConfig::default()
    })
    .unwrap();
    let (caller, callee) = (Peer::new(), Peer::new());
    let proto = if mode == MediaSecurity::PerLeg {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    let offer = engine
        .create_call(CreateCall {
            call_id: Some("adv".into()),
            caller_id: "sip:alice@mcx.example".into(),
            caller_sdp: caller.sdp("alice", proto, Some(SSRC), true, caller_extra),
            callee_id: "sip:bob@mcx.example".into(),
            video_push: true,
            video_pull: false,
            commencement_mode: None,
            media_security: mode,
            caller_tc_key: tc_key.clone(),
            callee_interface: None,
            caller_interface: None,
        })
        .unwrap();
    let to_callee = RelayAddrs::from_sdp(&offer.sdp_offer);
    let answer = engine
        .accept_call(
            "adv",
            AnswerCall {
                callee_sdp: callee.sdp("bob", proto, None, true, callee_extra),
                callee_tc_key: tc_key,
            },
        )
        .unwrap();
    let to_caller = RelayAddrs::from_sdp(&answer.sdp_answer);
    // Let Granted / Notification / the keyframe request arrive and get them out of the way.
    std::thread::sleep(Duration::from_millis(200));
    drain(&caller.ctl, Duration::from_millis(50));
    drain(&callee.ctl, Duration::from_millis(50));
    drain(&caller.rtcp, Duration::from_millis(50));
    Live {
        engine,
        callee_offer: offer.sdp_offer,
        caller,
        callee,
        to_caller,
        to_callee,
    }
}

fn forwarded(l: &Live, burst: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let c = collect(
        &l.callee.rtp,
        Duration::from_millis(500),
        Duration::from_millis(200),
    );
    for p in burst {
        l.caller.rtp.send_to(p, l.to_caller.video).unwrap();
    }
    c.join().unwrap().into_iter().map(|(b, _)| b).collect()
}

fn forwarded_count(l: &Live, burst: &[Vec<u8>]) -> usize {
    forwarded(l, burst).len()
}

#[test]
fn garbage_spoofing_callee_media_and_wrong_ssrc() {
    let l = live(44_000, MediaSecurity::EndToEnd, "", "", None);
    let relay = l.to_caller.video;

    // A stranger sends a few well-formed packets first: too few to latch, none forwarded.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..3 {
        stranger.send_to(&rtp_packet(i, 0xbad, 200), relay).unwrap();
    }
    // The caller speaks from its SDP address: its source is confirmed; media flows.
    let good: Vec<Vec<u8>> = (10..30).map(|i| rtp_packet(i, SSRC, 800)).collect();
    assert_eq!(forwarded_count(&l, &good), 20);

    // Garbage and truncated datagrams from the caller's own address.
    let mut junk: Vec<Vec<u8>> = vec![
        vec![0x80],
        vec![0x80, 96, 0, 1],
        vec![0x40; 40],
        vec![0xff; 1500],
    ];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 300) as usize;
        junk.push((0..len).map(|i| (x >> (i % 56)) as u8 & 0x3f).collect()); // version 0
    }
    let mut truncated = rtp_packet(1, SSRC, 0);
    truncated[0] = 0x8f; // 15 CSRCs announced, none present
    junk.push(truncated);
    // Zero-length datagrams may not even reach user space (UDP GRO); they are sent, not counted.
    junk.retain(|j| !j.is_empty());
    l.caller.rtp.send_to(&[], relay).unwrap();
    assert_eq!(forwarded_count(&l, &junk), 0, "junk is never forwarded");

    // A spoofer with the caller's SSRC, after the caller's source is known.
    let spoof: Vec<Vec<u8>> = (100..200).map(|i| rtp_packet(i, SSRC, 800)).collect();
    let c = collect(
        &l.callee.rtp,
        Duration::from_millis(400),
        Duration::from_millis(200),
    );
    for p in &spoof {
        stranger.send_to(p, relay).unwrap();
    }
    assert!(
        c.join().unwrap().is_empty(),
        "a stranger never takes over a latched leg"
    );

    // A wrong SSRC from the caller's own address.
    let wrong: Vec<Vec<u8>> = (0..10).map(|i| rtp_packet(i, 0x00dd_ba11, 800)).collect();
    assert_eq!(forwarded_count(&l, &wrong), 0);

    // The callee sends media: dropped, and it is told Revoked #3.
    let c = collect(
        &l.caller.rtp,
        Duration::from_millis(400),
        Duration::from_millis(200),
    );
    for i in 0..20 {
        l.callee
            .rtp
            .send_to(&rtp_packet(i, 0xcafe, 400), l.to_callee.video)
            .unwrap();
    }
    assert!(
        c.join().unwrap().is_empty(),
        "callee media never reaches the caller"
    );
    let (rev, _) = recv(&l.callee.ctl, Duration::from_secs(2));
    let rev = TcMessage::parse(&rev).unwrap();
    assert_eq!(rev.kind, MessageKind::TransmissionRevoked);
    assert_eq!(
        RevokeCause::from(rev.fields.reject_cause.unwrap().code),
        RevokeCause::NoPermission
    );

    // Garbage on the control ports: counted, never answered beyond the reply budget.
    for j in &junk {
        l.caller
            .ctl
            .send_to(j, l.to_caller.control.unwrap())
            .unwrap();
    }

    // The call is unharmed.
    let good: Vec<Vec<u8>> = (300..340).map(|i| rtp_packet(i, SSRC, 800)).collect();
    assert_eq!(forwarded_count(&l, &good), 40);
    std::thread::sleep(Duration::from_millis(200));
    let s = l.engine.call("adv").expect("still live");
    assert_eq!(
        s.state,
        mcvideo_relay::control::call::CallState::Established
    );
    assert_eq!(
        s.callee.packets_out,
        60 + 1 + 1,
        "60 packets plus Notification and Revoked"
    );
    assert_eq!(s.caller.dropped(DropReason::Malformed), junk.len() as u64);
    assert_eq!(s.caller.dropped(DropReason::WrongSource), 3 + 100);
    assert_eq!(s.caller.dropped(DropReason::UnknownSsrc), 10);
    assert_eq!(s.callee.dropped(DropReason::NotGranted), 20);
    assert!(s.tc.malformed > 0, "control junk counted");
    assert_eq!(s.caller.latches, 0);
}

fn srtp_ctx(b64: &str) -> SrtpContext {
    SrtpContext::new(&MasterKey::from_base64(SrtpSuite::AeadAes128Gcm, b64).unwrap())
}

const CALLER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==";
const CALLEE_KEY: &str = "GxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIBAA==";

#[test]
fn per_leg_srtp_bad_tag_and_replay_are_dropped() {
    let crypto = |k: &str| format!("a=crypto:1 AEAD_AES_128_GCM inline:{k}\r\n");
    let l = live(
        44_200,
        MediaSecurity::PerLeg,
        &crypto(CALLER_KEY),
        &crypto(CALLEE_KEY),
        None,
    );
    // The callee decrypts with the key the relay put into its offer.
    let relay_key = mcvideo_relay::sdp::SessionDescription::parse(&l.callee_offer)
        .unwrap()
        .media()[0]
        .crypto[0]
        .key_b64
        .clone();
    assert_ne!(relay_key, CALLER_KEY);
    let mut receiver = srtp_ctx(&relay_key);
    let mut sender = srtp_ctx(CALLER_KEY);
    let packets: Vec<Vec<u8>> = (0..10u16)
        .map(|i| {
            let mut p = rtp_packet(i, SSRC, 600);
            let len = p.len();
            p.resize(len + 16, 0);
            let n = sender.protect_rtp(&mut p, len).unwrap();
            p.truncate(n);
            p
        })
        .collect();
    let got = forwarded(&l, &packets[..5]);
    assert_eq!(got.len(), 5);
    for (i, mut g) in got.into_iter().enumerate() {
        let n = receiver
            .unprotect_rtp(&mut g)
            .expect("re-encrypted with the callee leg's key");
        assert_eq!(
            &g[..n],
            &rtp_packet(i as u16, SSRC, 600)[..],
            "same plain packet"
        );
    }
    // Replays of what already passed.
    assert_eq!(forwarded_count(&l, &packets[..5]), 0, "replays dropped");
    // Out of order but new: accepted.
    let reordered = vec![packets[7].clone(), packets[5].clone(), packets[6].clone()];
    assert_eq!(forwarded_count(&l, &reordered), 3);
    // A flipped bit in the payload or the tag.
    let mut bad = packets[8].clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let mut bad2 = packets[9].clone();
    bad2[20] ^= 0x80;
    assert_eq!(
        forwarded_count(&l, &[bad, bad2]),
        0,
        "authentication failures dropped"
    );
    // The genuine 8 and 9 still pass afterwards: a failed packet does not move the window.
    assert_eq!(forwarded_count(&l, &packets[8..10]), 2);
    std::thread::sleep(Duration::from_millis(100));
    let s = l.engine.call("adv").unwrap();
    assert_eq!(s.caller.dropped(DropReason::AuthFailure), 5 + 2);
    assert_eq!(
        s.callee.packets_out,
        5 + 3 + 2 + 1,
        "10 packets plus the Notification"
    );
}

#[test]
fn srtcp_protected_control_channel() {
    let key = MasterKey::from_base64(SrtpSuite::AeadAes128Gcm, CALLER_KEY).unwrap();
    let engine = Engine::start(EngineConfig {
        port_min: 44_500,
        port_max: 44_599,
        workers: 1,
        ..EngineConfig::default()
    })
    .unwrap();
    let (caller, callee) = (Peer::new(), Peer::new());
    engine
        .create_call(CreateCall {
            call_id: Some("k".into()),
            caller_id: "sip:alice@mcx.example".into(),
            caller_sdp: caller.sdp("alice", "RTP/AVP", Some(SSRC), true, ""),
            callee_id: "sip:bob@mcx.example".into(),
            video_push: true,
            video_pull: false,
            commencement_mode: None,
            media_security: MediaSecurity::EndToEnd,
            caller_tc_key: Some(key.clone()),
            callee_interface: None,
            caller_interface: None,
        })
        .unwrap();
    let answer = engine
        .accept_call(
            "k",
            AnswerCall {
                callee_sdp: callee.sdp("bob", "RTP/AVP", None, true, ""),
                callee_tc_key: None,
            },
        )
        .unwrap();
    let to_caller = RelayAddrs::from_sdp(&answer.sdp_answer);
    let mut client = SrtpContext::new(&key);
    // Granted arrives as SRTCP: only the key opens it.
    let (mut g, _) = recv(&caller.ctl, Duration::from_secs(2));
    assert!(
        TcMessage::parse(&g).is_err() || TcMessage::parse(&g).unwrap().fields.video_ssrc.is_none()
    );
    let n = client
        .unprotect_rtcp(&mut g)
        .expect("SRTCP from the relay authenticates");
    assert_eq!(
        TcMessage::parse(&g[..n]).unwrap().kind,
        MessageKind::TransmissionGranted
    );
    // The callee has no key: plain.
    let (n, _) = recv(&callee.ctl, Duration::from_secs(2));
    assert_eq!(
        TcMessage::parse(&n).unwrap().kind,
        MessageKind::MediaTransmissionNotification
    );
    // An unprotected End Request is dropped; the call goes on.
    let end = TcMessage::new(MessageKind::TransmissionEndRequest, 0xa11ce);
    caller.send_tc(to_caller.control.unwrap(), &end);
    std::thread::sleep(Duration::from_millis(300));
    let s = engine
        .call("k")
        .expect("unprotected control does not end the call");
    assert_eq!(s.caller.dropped(DropReason::AuthFailure), 1);
    // The protected one ends it.
    let mut b = end.to_vec(&Default::default()).unwrap();
    let len = b.len();
    b.resize(len + 64, 0);
    let n = client.protect_rtcp(&mut b, len).unwrap();
    caller
        .ctl
        .send_to(&b[..n], to_caller.control.unwrap())
        .unwrap();
    let (mut r, _) = recv(&caller.ctl, Duration::from_secs(2));
    let n = client.unprotect_rtcp(&mut r).unwrap();
    assert_eq!(
        TcMessage::parse(&r[..n]).unwrap().kind,
        MessageKind::TransmissionEndResponse
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(engine.call("k").is_none(), "released");
}
