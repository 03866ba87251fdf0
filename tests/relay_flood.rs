//! Floods and faults at a live call: a stranger flooding junk and well-formed (S)RTP at the
//! caller's relay port never gets forwarded, never gets an answer, and does not stop the call's
//! media; the callee's port closing (ICMP port unreachable) does not kill the call; the caller
//! vanishing releases it by inactivity with reason `media_timeout`.

#![allow(clippy::disallowed_methods)] // a real-socket test reads the clock

mod common;
use common::net::*;
use mcvideo_relay::control::call::{AnswerCall, CallConfig, CallEventKind, CreateCall};
use mcvideo_relay::control::{MediaSecurity, ReleaseReason};
use mcvideo_relay::keys::{MasterKey, SrtpSuite};
use mcvideo_relay::relay::{DropReason, Engine, EngineConfig};
use mcvideo_relay::srtp::SrtpContext;
use std::net::UdpSocket;
use std::time::Duration;

const SSRC: u32 = 0xf100_d000;
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==";

fn protect(ctx: &mut SrtpContext, seq: u16) -> Vec<u8> {
    let mut p = rtp_packet(seq, SSRC, 900);
    let len = p.len();
    p.resize(len + 16, 0);
    let n = ctx.protect_rtp(&mut p, len).unwrap();
    p.truncate(n);
    p
}

#[test]
fn stranger_flood_is_dropped_counted_and_never_answered() {
    let mut call = CallConfig::default();
    call.tc.media_inactivity = Duration::from_secs(1);
    let engine = Engine::start(EngineConfig {
        port_min: 45_200,
        port_max: 45_299,
        workers: 1,
        call,
        ..EngineConfig::default()
    })
    .unwrap();
    let mut events = engine.subscribe();
    let (caller, callee) = (Peer::new(), Peer::new());
    let crypto = format!("a=crypto:1 AEAD_AES_128_GCM inline:{KEY}\r\n");
    engine
        .create_call(CreateCall {
            call_id: Some("flood".into()),
            caller_id: "sip:a@x".into(),
            caller_sdp: caller.sdp("a", "RTP/SAVP", Some(SSRC), false, &crypto),
            callee_id: "sip:b@x".into(),
            video_push: true,
            video_pull: false,
            commencement_mode: None,
            media_security: MediaSecurity::PerLeg,
            caller_tc_key: None,
            callee_interface: None,
            caller_interface: None,
        })
        .unwrap();
    let answer = engine
        .accept_call(
            "flood",
            AnswerCall {
                callee_sdp: callee.sdp("b", "RTP/SAVP", None, false, &crypto),
                callee_tc_key: None,
            },
        )
        .unwrap();
    let relay = RelayAddrs::from_sdp(&answer.sdp_answer);
    std::thread::sleep(Duration::from_millis(100));
    drain(&caller.rtcp, Duration::from_millis(50)); // the relay's keyframe request

    // Before the caller speaks, a stranger floods: a burst is looked at, the rest is rate
    // limited; nothing is forwarded, nothing latches (wrong keys fail authentication).
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut fake = SrtpContext::new(
        &MasterKey::from_base64(
            SrtpSuite::AeadAes128Gcm,
            "GxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIBAA==",
        )
        .unwrap(),
    );
    let c = collect(
        &callee.rtp,
        Duration::from_millis(400),
        Duration::from_millis(200),
    );
    let flood_started = std::time::Instant::now();
    for i in 0..5_000u16 {
        stranger
            .send_to(&protect(&mut fake, i), relay.video)
            .unwrap();
    }
    let flood_secs = flood_started.elapsed().as_secs_f64();
    assert!(c.join().unwrap().is_empty());
    // Now the caller, while the flood goes on (junk and well-formed packets).
    let mut ctx = SrtpContext::new(&MasterKey::from_base64(SrtpSuite::AeadAes128Gcm, KEY).unwrap());
    let c = collect(
        &callee.rtp,
        Duration::from_millis(500),
        Duration::from_millis(300),
    );
    let mut sent = 0;
    for i in 0..200u16 {
        caller
            .rtp
            .send_to(&protect(&mut ctx, i), relay.video)
            .unwrap();
        sent += 1;
        for j in 0..50u16 {
            let junk = if j % 2 == 0 {
                protect(&mut fake, 10_000 + i * 50 + j)
            } else {
                vec![0x80, 0x60, 0, 0]
            };
            stranger.send_to(&junk, relay.video).unwrap();
        }
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let got = c.join().unwrap();
    assert_eq!(
        got.len(),
        sent,
        "the caller's media flows through the flood"
    );
    // The relay never answered the stranger: no reflection, no amplification.
    let mut buf = [0u8; 2048];
    assert!(
        stranger.recv_from(&mut buf).is_err(),
        "nothing is ever sent to an unnegotiated address"
    );
    std::thread::sleep(Duration::from_millis(100));
    let s = engine.call("flood").unwrap();
    let flood = 5_000 + 200 * 50;
    let dropped = s.caller.dropped(DropReason::WrongSource)
        + s.caller.dropped(DropReason::RateLimited)
        + s.caller.dropped(DropReason::AuthFailure)
        + s.caller.dropped(DropReason::Malformed);
    assert_eq!(
        dropped, flood as u64,
        "every flood packet counted: {:?}",
        s.caller
    );
    let budget = mcvideo_relay::relay::STRANGER_BURST
        + mcvideo_relay::relay::STRANGER_RATE * (flood_secs + 0.05);
    assert!(
        s.caller.dropped(DropReason::AuthFailure) as f64 <= budget,
        "crypto spent on strangers is bounded by the budget: {:?}",
        s.caller
    );
    assert_eq!(s.caller.latches, 0);
    assert!(
        s.callee.bytes_out <= s.caller.bytes_in,
        "never more bytes out than in"
    );

    // The callee's port goes away (ICMP port unreachable): the call lives on.
    drop(callee);
    for i in 200..300u16 {
        caller
            .rtp
            .send_to(&protect(&mut ctx, i), relay.video)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let s = engine
        .call("flood")
        .expect("the call survives a closed callee port");
    assert_eq!(
        s.state,
        mcvideo_relay::control::call::CallState::Established
    );

    // The caller vanishes: released by inactivity.
    let mut reason = None;
    for _ in 0..30 {
        while let Ok(ev) = events.try_recv() {
            if let CallEventKind::Released { reason: r } = ev.kind {
                reason = Some(r);
            }
        }
        if reason.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(reason, Some(ReleaseReason::MediaTimeout));
}
