//! Per-call media quality over real sockets: an injected gap is counted as loss, a paced
//! sender shows its frame rate and bitrate and near-zero jitter, and the callee's receiver
//! report comes back with a round trip. (The exact RFC 3550 figures on virtual time are unit
//! tests beside the meter, `relay::rules::quality`.)

#![allow(clippy::disallowed_methods)] // the test paces a real sender by the clock
mod common;
use common::net::*;
use mcvideo_relay::control::call::{AnswerCall, CreateCall};
use mcvideo_relay::control::MediaSecurity;
use mcvideo_relay::relay::{Engine, EngineConfig};
use std::time::Duration;

const SSRC: u32 = 0x0a0a_0001;

/// RTP with the marker bit on every packet (one packet per frame), 90 kHz timestamps 20 ms
/// apart.
fn frame(seq: u16) -> Vec<u8> {
    let mut p = rtp_packet(seq, SSRC, 1000);
    p[1] |= 0x80;
    p[4..8].copy_from_slice(&(u32::from(seq) * 1800).to_be_bytes());
    p
}

#[test]
fn loss_frame_rate_bitrate_jitter_and_receiver_report() {
    let engine = Engine::start(EngineConfig {
        port_min: 45_300,
        port_max: 45_399,
        workers: 1,
        ..EngineConfig::default()
    })
    .unwrap();
    let (caller, callee) = (Peer::new(), Peer::new());
    let offer = engine
        .create_call(CreateCall {
            call_id: Some("q".into()),
            caller_id: "sip:a@x".into(),
            caller_sdp: caller.sdp("a", "RTP/AVP", Some(SSRC), false, ""),
            callee_id: "sip:b@x".into(),
            video_push: true,
            video_pull: false,
            commencement_mode: None,
            media_security: MediaSecurity::EndToEnd,
            caller_tc_key: None,
            callee_interface: None,
            caller_interface: None,
        })
        .unwrap();
    let answer = engine
        .accept_call(
            "q",
            AnswerCall {
                callee_sdp: callee.sdp("b", "RTP/AVP", None, false, ""),
                callee_tc_key: None,
            },
        )
        .unwrap();
    let relay = RelayAddrs::from_sdp(&answer.sdp_answer);
    let offer_side = engine.call("q").unwrap();
    assert_eq!(offer_side.quality.len(), 1, "one video stream");
    let rx = collect(
        &callee.rtp,
        Duration::from_secs(2),
        Duration::from_millis(500),
    );
    // 50 frames per second for 1.6 s, ten packets (seq 40..50) never sent.
    let start = std::time::Instant::now();
    for seq in 0u16..80 {
        let due = start + Duration::from_millis(20 * u64::from(seq));
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        if !(40..50).contains(&seq) {
            caller.rtp.send_to(&frame(seq), relay.video).unwrap();
        }
    }
    let got = rx.join().unwrap();
    assert_eq!(got.len(), 70);
    let q = engine.call("q").unwrap().quality[0].legs[0];
    eprintln!("{:?}", engine.call("q").unwrap());
    assert_eq!(q.packets, 70);
    assert_eq!(q.lost, 10, "the gap of ten");
    assert_eq!(q.frames, 70);
    assert!(
        (35.0..=55.0).contains(&q.frame_rate),
        "about 50 frames/s less the gap: {}",
        q.frame_rate
    );
    assert!(q.bitrate_bps > 250_000, "{}", q.bitrate_bps);
    // Paced by the sender's own clock: jitter stays a few ms at most on a loaded machine.
    assert!(q.jitter_ms < 5.0, "{}", q.jitter_ms);
    // Across calls (what /metrics exports): one leg sent media, 12.5 % of it lost.
    let h = engine.quality();
    assert_eq!((h.jitter_ms.count, h.loss_percent.count), (1, 1));
    assert!(
        (h.loss_percent.sum - 12.5).abs() < 1e-9,
        "{}",
        h.loss_percent.sum
    );
    // The callee's receiver report (with LSR of the caller's SR it was given) comes back
    // with a round trip.
    let mut sr = vec![0x80, 200, 0, 6];
    sr.extend_from_slice(&SSRC.to_be_bytes());
    sr.extend_from_slice(&[0, 0, 0x12, 0x34, 0x56, 0x78, 0, 0]); // NTP
    sr.extend_from_slice(&[0; 12]); // RTP ts, packet and octet counts
    caller.rtcp.send_to(&sr, relay.video_rtcp).unwrap();
    let (fwd, _) = recv(&callee.rtcp, Duration::from_secs(2));
    assert_eq!(fwd, sr);
    let to_callee = RelayAddrs::from_sdp(&offer.sdp_offer);
    let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0, 2];
    rr.extend_from_slice(&SSRC.to_be_bytes());
    rr.extend_from_slice(&[10, 0, 0, 10]);
    rr.extend_from_slice(&79u32.to_be_bytes());
    rr.extend_from_slice(&90u32.to_be_bytes());
    rr.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    rr.extend_from_slice(&0u32.to_be_bytes());
    // (The relay's own keyframe request at the grant may be waiting there: clear it first.)
    drain(&caller.rtcp, Duration::from_millis(100));
    callee.rtcp.send_to(&rr, to_callee.video_rtcp).unwrap();
    let (fwd, _) = recv(&caller.rtcp, Duration::from_secs(2));
    assert_eq!(fwd[1], 201, "the receiver report reached the caller");
    let r = engine.call("q").unwrap().quality[0].legs[1]
        .receiver_report
        .expect("the callee's report");
    assert_eq!((r.fraction_lost, r.cumulative_lost, r.jitter), (10, 10, 90));
    assert!(r.rtt.is_some_and(|d| d < Duration::from_secs(1)), "{r:?}");
    engine.shutdown();
}
