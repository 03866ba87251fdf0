//! The forward path allocates nothing: a live call forwards 2,000 packets (plain RTP, then
//! per-leg SRTP, then plain RTP with the call's transmission log on, then per-leg SRTP with
//! its media recorded) while a counting global allocator watches every thread of the process
//! (the recorder's writer thread included).

mod common;
use common::net::*;
use mcvideo_relay::control::call::{AnswerCall, CreateCall};
use mcvideo_relay::control::MediaSecurity;
use mcvideo_relay::keys::{MasterKey, SrtpSuite};
use mcvideo_relay::relay::{Engine, EngineConfig, RecordingConfig};
use mcvideo_relay::srtp::SrtpContext;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SSRC: u32 = 0xa110_c000;
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==";

fn run(mode: MediaSecurity, port_min: u16, recording: Option<&std::path::Path>) -> (u64, u64) {
    run_with(mode, port_min, recording, false)
}

/// [`run`], the call's media recorded when `record`.
fn run_with(
    mode: MediaSecurity,
    port_min: u16,
    recording: Option<&std::path::Path>,
    record: bool,
) -> (u64, u64) {
    let engine = Engine::start(EngineConfig {
        port_min,
        port_max: port_min + 99,
        workers: 1,
        recording: recording.map(|dir| RecordingConfig {
            dir: dir.to_owned(),
            min_free_bytes: 0,
            ..RecordingConfig::default()
        }),
        ..EngineConfig::default()
    })
    .unwrap();
    let (caller, callee) = (Peer::new(), Peer::new());
    let (proto, crypto) = match mode {
        MediaSecurity::PerLeg => (
            "RTP/SAVP",
            format!("a=crypto:1 AEAD_AES_128_GCM inline:{KEY}\r\n"),
        ),
        MediaSecurity::EndToEnd => ("RTP/AVP", String::new()),
    };
    engine
        .create_call(CreateCall {
            call_id: Some("alloc".into()),
            caller_id: "sip:a@x".into(),
            caller_sdp: caller.sdp("a", proto, Some(SSRC), true, &crypto),
            callee_id: "sip:b@x".into(),
            video_push: true,
            video_pull: false,
            commencement_mode: None,
            media_security: mode,
            caller_tc_key: None,
            callee_interface: None,
            caller_interface: None,
        })
        .unwrap();
    let answer = engine
        .accept_call(
            "alloc",
            AnswerCall {
                callee_sdp: callee.sdp("b", proto, None, true, &crypto),
                callee_tc_key: None,
            },
        )
        .unwrap();
    if record {
        assert!(engine.record_call("alloc").unwrap(), "recorded");
    }
    let to_caller = RelayAddrs::from_sdp(&answer.sdp_answer);
    let mut ctx = SrtpContext::new(&MasterKey::from_base64(SrtpSuite::AeadAes128Gcm, KEY).unwrap());
    let packets: Vec<Vec<u8>> = (0..2_100u16)
        .map(|i| {
            let mut p = rtp_packet(i, SSRC, 1_100);
            if mode == MediaSecurity::PerLeg {
                let len = p.len();
                p.resize(len + 16, 0);
                let n = ctx.protect_rtp(&mut p, len).unwrap();
                p.truncate(n);
            }
            p
        })
        .collect();
    // A receiver that does not allocate while it counts.
    let received = Arc::new(AtomicU64::new(0));
    let rx = {
        let (s, received) = (callee.rtp.try_clone().unwrap(), received.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            s.set_read_timeout(Some(Duration::from_millis(700)))
                .unwrap();
            while s.recv_from(&mut buf).is_ok() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Warm up: first media (the driver wakes once), thread-local buffers, the runtime.
    for (i, p) in packets[..100].iter().enumerate() {
        caller.rtp.send_to(p, to_caller.video).unwrap();
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let region = Region::new(GLOBAL);
    for (i, p) in packets[100..].iter().enumerate() {
        caller.rtp.send_to(p, to_caller.video).unwrap();
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let change = region.change();
    rx.join().unwrap();
    engine.shutdown();
    (change.allocations as u64, received.load(Ordering::Relaxed))
}

#[test]
fn forward_path_allocates_nothing() {
    let (allocs, received) = run(MediaSecurity::EndToEnd, 44_700, None);
    eprintln!(
        "plain RTP: {allocs} allocations while forwarding 2000 packets ({received} received)"
    );
    // Loss is not this test's subject (a loaded CI machine may drop a few on loopback); that
    // the packets were forwarded at all, and without allocating, is.
    assert!(received >= 1_500, "{received}");
    assert_eq!(allocs, 0, "allocations on the forward path");
    let (allocs, received) = run(MediaSecurity::PerLeg, 44_800, None);
    eprintln!(
        "per-leg SRTP: {allocs} allocations while forwarding 2000 packets ({received} received)"
    );
    assert!(received >= 1_500, "{received}");
    assert_eq!(allocs, 0, "allocations on the per-leg SRTP forward path");
    // The transmission log formats a line at the media start (in the warm-up) and at the end;
    // in between, the worker only extends the running transmission's last packet.
    let dir = std::env::temp_dir().join(format!("mcvr-alloc-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (allocs, received) = run(MediaSecurity::EndToEnd, 44_900, Some(&dir));
    eprintln!(
        "plain RTP with a transmission log: {allocs} allocations while forwarding 2000 packets \
         ({received} received)"
    );
    let logged = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path().join("transmissions.jsonl")).unwrap())
        .collect::<String>();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        logged.contains("\"media_started\""),
        "the call kept a log: {logged}"
    );
    assert!(received >= 1_500, "{received}");
    assert_eq!(
        allocs, 0,
        "allocations on the forward path of a call with a log"
    );
    // Per-leg SRTP recorded: each packet is copied, decrypted, into a buffer of the
    // recorder's pool and written by its thread; the pool is made when the recording starts.
    let dir = std::env::temp_dir().join(format!("mcvr-alloc-media-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (allocs, received) = run_with(MediaSecurity::PerLeg, 33_700, Some(&dir), true);
    eprintln!(
        "per-leg SRTP recorded: {allocs} allocations while forwarding 2000 packets \
         ({received} received)"
    );
    let pcap: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| std::fs::metadata(e.path().join("stream-0.pcap")).map_or(0, |m| m.len()))
        .sum();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(pcap > 2_000 * 1_100, "the media was recorded: {pcap} bytes");
    assert!(received >= 1_500, "{received}");
    assert_eq!(
        allocs, 0,
        "allocations on the forward path of a recorded call"
    );
}
