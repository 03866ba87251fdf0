//! A full disk under a media recording (docs/recording.md, "Never at the cost of media"): a
//! file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored: writes past it fail with EFBIG, as on a
//! full disk) lets the pcap's first packets in and refuses the rest. The push goes on with no
//! packet lost; the media recording stops, counted once, and the packets it lost are counted.
//!
//! Its own test binary: the limit holds for the whole process, which runs this one test again
//! in a child (`common::net::under_file_size_limit`). Ports 33_800–33_899.
#![cfg(feature = "sidecar")]
#![allow(clippy::disallowed_methods)] // real sockets: the test waits by the clock

mod common;
use common::net::*;
use mcvideo_relay::relay::{Engine, EngineConfig, RecordingConfig};
use std::time::{Duration, Instant};

const SSRC: u32 = 0x0d15_c0ff;
/// Bytes a file of the process may have: the first fifty packets or so of the pcap.
const LIMIT: u64 = 16_384;
const PACKETS: u16 = 500;

/// This test's name, for the child that runs it under the limit.
const NAME: &str = "a_full_disk_stops_the_media_recording_and_not_the_media";

#[test]
fn a_full_disk_stops_the_media_recording_and_not_the_media() {
    if !under_file_size_limit(NAME, LIMIT) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("mcvr-media-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = Engine::start(EngineConfig {
        port_min: 33_800,
        port_max: 33_899,
        workers: 1,
        recording: Some(RecordingConfig {
            dir: dir.clone(),
            min_free_bytes: 0,
            transmission_log: false,
            media_all: true,
            ..RecordingConfig::default()
        }),
        ..EngineConfig::default()
    })
    .expect("engine starts");
    let (caller, callee) = (Peer::new(), Peer::new());
    let to_caller = engine_push(&engine, "full", &caller, &callee, SSRC);
    let got = collect(
        &callee.rtp,
        Duration::from_secs(2),
        Duration::from_millis(500),
    );
    for seq in 0..PACKETS {
        caller
            .rtp
            .send_to(&rtp_packet(seq, SSRC, 300), to_caller.video)
            .unwrap();
        std::thread::sleep(Duration::from_micros(500));
    }
    let got = got.join().unwrap();
    assert_eq!(
        got.len(),
        usize::from(PACKETS),
        "no packet lost to the full disk"
    );
    engine.release_call("full").unwrap();

    // The media recording stops once, when its file cannot grow; the packets after are
    // dropped and counted.
    let until = Instant::now() + Duration::from_secs(5);
    let s = loop {
        let s = engine.recording_stats().unwrap();
        let all = s.packets_written + s.packets_dropped == u64::from(PACKETS);
        if s.stopped > 0 && all || Instant::now() > until {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!((s.started, s.stopped), (1, 1), "{s:?}");
    assert!(s.packets_written > 0, "what fit was written: {s:?}");
    assert!(
        s.packets_dropped > 0 && s.packets_written + s.packets_dropped == u64::from(PACKETS),
        "every packet is written or counted as dropped: {s:?}"
    );
    let rec = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .next()
        .expect("the recording was started")
        .path();
    let pcap = std::fs::read(rec.join("stream-0.pcap")).unwrap();
    assert!(pcap.len() as u64 <= LIMIT, "{}", pcap.len());
    assert_eq!(pcap[..4], 0xa1b2_c3d4u32.to_le_bytes(), "a pcap file");
    engine.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
