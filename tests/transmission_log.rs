//! The transmission log (docs/recording.md) over real UDP sockets: a one-to-one push whose
//! log names the caller for the grant, the media start and the end, with the sequence numbers
//! and timestamps of the first and last packets the relay forwarded; a group call whose log
//! shows a queued request with its position and a pre-emption with cause #4, the pre-empted
//! transmission's last packet included; an H.264 push from ffmpeg (per_leg SRTP) whose log
//! names the first and last packets the callee received. Files are mode 0600.
//!
//! Ports 33_000–33_299 (no other test uses them).
#![cfg(feature = "sidecar")] // serde_json reads the log
#![allow(clippy::disallowed_methods)] // real sockets: the test waits by the clock

mod common;
use common::ffmpeg;
use common::net::*;
use mcvideo_relay::control::call::{AnswerCall, CallConfig};
use mcvideo_relay::relay::{Engine, EngineConfig, RecordingConfig};
use mcvideo_relay::wire::tc::MessageKind;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn engine(dir: &Path, port_min: u16) -> Engine {
    engine_with(dir, port_min, CallConfig::default())
}

fn engine_with(dir: &Path, port_min: u16, call: CallConfig) -> Engine {
    Engine::start(EngineConfig {
        port_min,
        port_max: port_min + 99,
        workers: 1,
        call,
        recording: Some(RecordingConfig {
            dir: dir.to_owned(),
            min_free_bytes: 0,
            ..RecordingConfig::default()
        }),
        ..EngineConfig::default()
    })
    .expect("engine starts")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mcvr-txlog-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The log of call `id` in `dir`, once its `released` line is written.
fn log_of(dir: &Path, id: &str) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let file = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{id}-"))
            })
            .map(|e| e.path().join("transmissions.jsonl"));
        if let Some(f) = file {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
                .collect();
            if lines.iter().any(|l| l["event"] == "released") {
                let mode = std::fs::metadata(&f).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "the log is the owner's only");
                return lines;
            }
        }
        assert!(
            Instant::now() < until,
            "no complete log for {id} in {dir:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn events(log: &[Value]) -> Vec<&str> {
    log.iter().map(|l| l["event"].as_str().unwrap()).collect()
}

fn find<'a>(log: &'a [Value], event: &str, member: &str) -> &'a Value {
    log.iter()
        .find(|l| l["event"] == event && l["member"] == member)
        .unwrap_or_else(|| panic!("no {event} of {member} in {log:#?}"))
}

const SSRC: u32 = 0x0c0f_fee0;

#[test]
fn a_push_logs_grant_media_start_and_end_with_the_callers_sequence_numbers() {
    let dir = tmp("push");
    let engine = engine(&dir, 33_000);
    let (caller, callee) = (Peer::new(), Peer::new());
    let to_caller = engine_push(&engine, "push-log", &caller, &callee, SSRC);
    let got = collect(
        &callee.rtp,
        Duration::from_secs(2),
        Duration::from_millis(300),
    );
    for seq in 1000..1040u16 {
        caller
            .rtp
            .send_to(&rtp_packet(seq, SSRC, 300), to_caller.video)
            .unwrap();
        std::thread::sleep(Duration::from_micros(500));
    }
    assert_eq!(
        got.join().unwrap().len(),
        40,
        "every packet reached the callee"
    );
    engine.release_call("push-log").unwrap();
    let log = log_of(&dir, "push-log");

    assert_eq!(
        events(&log),
        [
            "granted",
            "reception_started",
            "media_started",
            "transmission_ended",
            "released"
        ],
        "{log:#?}"
    );
    assert_eq!(
        find(&log, "reception_started", "sip:viewer@x")["transmitter"],
        "sip:cam@x"
    );
    let granted = find(&log, "granted", "sip:cam@x");
    assert_eq!(granted["video_ssrc"], SSRC);
    assert_eq!(granted["call"], "push-log");
    assert!(granted["time"].as_str().unwrap().ends_with('Z'));
    let started = &find(&log, "media_started", "sip:cam@x")["media"][0];
    assert_eq!(
        (
            &started["ssrc"],
            &started["first_seq"],
            &started["first_ts"]
        ),
        (
            &Value::from(SSRC),
            &Value::from(1000),
            &Value::from(3_000_000)
        )
    );
    let ended = find(&log, "transmission_ended", "sip:cam@x");
    assert_eq!(ended["reason"], "released");
    let m = &ended["media"][0];
    assert_eq!(
        (m["first_seq"].as_u64(), m["last_seq"].as_u64()),
        (Some(1000), Some(1039))
    );
    assert_eq!(m["last_ts"], 1039 * 3000);
    assert_eq!(m["packets"], 40);
    let s = engine.recording_stats().unwrap();
    assert_eq!((s.started, s.records_dropped, s.stopped), (1, 0, 0));
    engine.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

const NAMES: [&str; 3] = ["A", "B", "C"];

fn ssrc(i: usize) -> u32 {
    0x2000_0000 + i as u32 * 0x111
}

#[test]
fn a_group_call_logs_the_queue_and_a_preemption_with_cause_4() {
    let dir = tmp("group");
    let engine = engine(&dir, 33_100);
    // C has the highest priority: it pre-empts.
    let m: Vec<GroupMember> = engine_group(&engine, "group-log", &NAMES, ssrc, |i| {
        if i == 2 {
            9
        } else {
            5
        }
    });
    m[0].request(5);
    m[0].expect(MessageKind::TransmissionGranted);
    m[0].send_video(1..21);
    m[1].request(5);
    m[1].expect(MessageKind::QueuePositionInfo);
    std::thread::sleep(Duration::from_millis(100));
    m[2].request(9);
    m[2].expect(MessageKind::TransmissionGranted);
    m[2].send_video(500..510);
    std::thread::sleep(Duration::from_millis(100));
    engine.release_group_call("group-log").unwrap();
    let log = log_of(&dir, "group-log");

    assert!(find(&log, "granted", "A")["video_ssrc"].as_u64().is_some());
    assert_eq!(find(&log, "queued", "B")["position"], 1);
    let pre = find(&log, "preempted", "A");
    assert_eq!(
        (&pre["by"], &pre["cause"]),
        (&Value::from("C"), &Value::from(4))
    );
    let a_end = find(&log, "transmission_ended", "A");
    assert_eq!(
        (&a_end["reason"], &a_end["cause"]),
        (&Value::from("preempted"), &Value::from(4))
    );
    let a = &a_end["media"][0];
    assert_eq!(
        (a["first_seq"].as_u64(), a["last_seq"].as_u64()),
        (Some(1), Some(20))
    );
    assert_eq!(a["ssrc"], ssrc(0));
    find(&log, "granted", "C");
    let c = &find(&log, "transmission_ended", "C")["media"][0];
    assert_eq!(
        (c["first_seq"].as_u64(), c["last_seq"].as_u64()),
        (Some(500), Some(509))
    );
    let order: Vec<&str> = events(&log);
    let at = |e: &str| order.iter().position(|x| *x == e).unwrap();
    assert!(at("preempted") < at("transmission_ended"), "{order:?}");
    engine.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The RTP header fields (SSRC, sequence number, timestamp) of every datagram the callee's
/// socket gets until `idle` passes with nothing (after the first one, or 10 s before it).
fn headers(
    s: &std::net::UdpSocket,
    idle: Duration,
) -> std::thread::JoinHandle<Vec<(u32, u16, u32)>> {
    let s = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        while let Ok(n) = s.recv(&mut buf) {
            if n >= 12 {
                let u32_at = |i: usize| u32::from_be_bytes(buf[i..i + 4].try_into().unwrap());
                out.push((u32_at(8), u16::from_be_bytes([buf[2], buf[3]]), u32_at(4)));
            }
            s.set_read_timeout(Some(idle)).unwrap();
        }
        out
    })
}

#[test]
fn an_ffmpeg_push_logs_the_first_and_last_packet_the_callee_got() {
    ffmpeg::require("ffmpeg");
    let dir = tmp("ffmpeg");
    let mut call = CallConfig::default();
    call.tc.media_inactivity = Duration::from_secs(2);
    let engine = engine_with(&dir, 33_200, call);
    let (caller_port, _c1, _c2) = ffmpeg::port_pair();
    let (_, key) = engine_ffmpeg_offer(&engine, "ffmpeg-log", caller_port);
    // The callee: a socket that reads the RTP headers (SRTP leaves them in the clear).
    let (recv_port, callee_rtp, _callee_rtcp) = ffmpeg::port_pair();
    let answer = engine
        .accept_call(
            "ffmpeg-log",
            AnswerCall {
                callee_sdp: ffmpeg::video_sdp("viewer", recv_port, &key, None),
                callee_tc_key: None,
            },
        )
        .unwrap();
    let got = headers(&callee_rtp, Duration::from_millis(1500));
    let sender = ffmpeg::send(RelayAddrs::from_sdp(&answer.sdp_answer).video);
    assert!(
        sender.status.success(),
        "sender: {}",
        String::from_utf8_lossy(&sender.stderr)
    );
    let got = got.join().unwrap();
    assert!(got.len() > 100, "the callee got the stream: {}", got.len());
    // The push ends by media inactivity and the call is released.
    let log = log_of(&dir, "ffmpeg-log");

    let granted = find(&log, "granted", "sip:camera@mcx.example");
    assert_eq!(granted["video_ssrc"], ffmpeg::SSRC);
    let (first, last) = (got[0], got[got.len() - 1]);
    assert!(
        got.iter().all(|h| h.0 == ffmpeg::SSRC),
        "one SSRC end to end"
    );
    let started = &find(&log, "media_started", "sip:camera@mcx.example")["media"][0];
    assert_eq!(started["ssrc"], ffmpeg::SSRC);
    assert_eq!(
        (&started["first_seq"], &started["first_ts"]),
        (&Value::from(first.1), &Value::from(first.2))
    );
    let ended = find(&log, "transmission_ended", "sip:camera@mcx.example");
    assert_eq!(ended["reason"], "media_timeout", "{log:#?}");
    let m = &ended["media"][0];
    assert_eq!(
        (&m["first_seq"], &m["first_ts"]),
        (&Value::from(first.1), &Value::from(first.2))
    );
    assert_eq!(
        (&m["last_seq"], &m["last_ts"]),
        (&Value::from(last.1), &Value::from(last.2))
    );
    assert_eq!(
        m["packets"],
        got.len(),
        "every packet the relay forwarded reached the callee"
    );
    let order = events(&log);
    let at = |e: &str| order.iter().position(|x| *x == e).unwrap();
    assert!(at("granted") < at("media_started"), "{order:?}");
    assert!(at("media_started") < at("transmission_ended"), "{order:?}");
    assert_eq!(order.last(), Some(&"released"), "{order:?}");
    let s = engine.recording_stats().unwrap();
    assert_eq!((s.started, s.records_dropped, s.stopped), (1, 0, 0));
    engine.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
