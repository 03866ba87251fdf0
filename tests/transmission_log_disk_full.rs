//! A full disk under the transmission log (docs/recording.md, "Never at the cost of media"): a
//! file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored: writes past it fail with EFBIG, as on a
//! full disk) lets the log's first lines in and refuses the rest. The push goes on with no
//! packet lost; the recording stops, counted once, and its lost lines are counted.
//!
//! Its own test binary: the limit holds for the whole process, which runs this one test again
//! in a child (`common::net::under_file_size_limit`). Ports 33_300–33_399.
#![cfg(feature = "sidecar")]
#![allow(clippy::disallowed_methods)] // real sockets: the test waits by the clock

mod common;
use common::net::*;
use mcvideo_relay::relay::{Engine, EngineConfig, RecordingConfig};
use std::time::{Duration, Instant};

const SSRC: u32 = 0x0d15_c0ff;
/// Bytes a file of the process may have: the first line or two of a log.
const LIMIT: u64 = 200;
const PACKETS: u16 = 500;

/// This test's name, for the child that runs it under the limit.
const NAME: &str = "a_full_disk_stops_the_log_and_not_the_media";

#[test]
fn a_full_disk_stops_the_log_and_not_the_media() {
    if !under_file_size_limit(NAME, LIMIT) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("mcvr-txlog-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = Engine::start(EngineConfig {
        port_min: 33_300,
        port_max: 33_399,
        workers: 1,
        recording: Some(RecordingConfig {
            dir: dir.clone(),
            min_free_bytes: 0,
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

    // The recording stops once, when its file cannot grow; the lines after are dropped.
    let until = Instant::now() + Duration::from_secs(5);
    let s = loop {
        let s = engine.recording_stats().unwrap();
        if s.stopped > 0 && s.records_dropped >= 2 || Instant::now() > until {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!((s.started, s.stopped), (1, 1), "{s:?}");
    assert!(s.records_dropped >= 2, "the lost lines are counted: {s:?}");
    let log = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| std::fs::read(e.path().join("transmissions.jsonl")).unwrap())
        .next()
        .expect("the log was started");
    assert!(log.len() as u64 <= LIMIT, "{}", log.len());
    assert!(
        String::from_utf8_lossy(&log).starts_with("{\"time\""),
        "what fit was written"
    );
    engine.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
