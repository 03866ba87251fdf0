//! Media recording (docs/recording.md) over real UDP sockets: an H.264 push from ffmpeg in
//! per_leg, recorded on request ([`Engine::record_call`]), leaves a pcap that a small reader
//! here parses: as many RTP packets as the callee received, in the same order, decrypted (each
//! payload is H.264: NAL types 1, 5, 7, 8, 24 or 28), with the addresses and ports they came
//! from and to; an end_to_end call recorded by policy (`media_all`) leaves the bytes as they
//! came in (SRTP stays encrypted) and its `media.json` says so, in files rotated by size; a
//! call nobody asked to record leaves no pcap. Files are mode 0600. The ffmpeg push, exported
//! (`mcvideo-relay recording export`), is one H.264 file that ffmpeg decodes all 125 frames of.
//!
//! A group call is recorded once per forwarded packet, whatever its receivers.
//!
//! Three transmissions of a group call in turn, one of them pre-empted, export as three files,
//! each named by its member, each decoding whole.
//!
//! Too little free space refuses the recording, not the call.
//!
//! Ports 33_400–33_699 and 34_000–34_299 (no other test uses them; tests/forward_allocations.rs
//! has 33_700–33_799).
#![cfg(feature = "sidecar")] // serde_json reads the metadata
#![allow(clippy::disallowed_methods)] // real sockets: the test waits by the clock

mod common;
use common::ffmpeg;
use common::net::*;
use mcvideo_relay::control::call::{AnswerCall, CallConfig};
use mcvideo_relay::control::MediaSecurity;
use mcvideo_relay::relay::{Engine, EngineConfig, RecordingConfig};
use mcvideo_relay::wire::tc::MessageKind;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn engine(dir: &Path, port_min: u16, rec: RecordingConfig, call: CallConfig) -> Engine {
    Engine::start(EngineConfig {
        port_min,
        port_max: port_min + 99,
        workers: 1,
        call,
        recording: Some(RecordingConfig {
            dir: dir.to_owned(),
            min_free_bytes: 0,
            ..rec
        }),
        ..EngineConfig::default()
    })
    .expect("engine starts")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mcvr-media-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// One packet of a pcap file, as the reader found it.
#[derive(Debug)]
struct Captured {
    /// Arrival time, µs since the epoch.
    at_us: u64,
    src: SocketAddr,
    dst: SocketAddr,
    /// The UDP payload (the RTP packet).
    payload: Vec<u8>,
}

/// Reads a classic pcap file of raw IPv4 packets (LINKTYPE_RAW) carrying UDP.
fn read_pcap(path: &Path) -> Vec<Captured> {
    let b = std::fs::read(path).unwrap();
    let u32_le = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    assert!(b.len() >= 24, "a global header");
    assert_eq!(u32_le(0), 0xa1b2_c3d4, "microsecond pcap, little-endian");
    assert_eq!(
        (
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]])
        ),
        (2, 4)
    );
    assert_eq!(u32_le(20), 101, "LINKTYPE_RAW");
    let mut out = Vec::new();
    let mut at = 24;
    while at < b.len() {
        assert!(at + 16 <= b.len(), "a whole record header");
        let (secs, usecs) = (u32_le(at), u32_le(at + 4));
        let (incl, orig) = (u32_le(at + 8) as usize, u32_le(at + 12) as usize);
        assert_eq!(incl, orig, "nothing cut");
        let p = &b[at + 16..at + 16 + incl];
        assert_eq!(p[0], 0x45, "IPv4, no options");
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), incl);
        assert_eq!(p[9], 17, "UDP");
        let ip = |i: usize| IpAddr::V4(Ipv4Addr::new(p[i], p[i + 1], p[i + 2], p[i + 3]));
        let port = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
        assert_eq!(usize::from(port(24)), incl - 20, "UDP length");
        out.push(Captured {
            at_us: u64::from(secs) * 1_000_000 + u64::from(usecs),
            src: SocketAddr::new(ip(12), port(20)),
            dst: SocketAddr::new(ip(16), port(22)),
            payload: p[28..].to_vec(),
        });
        at += 16 + incl;
    }
    out
}

/// The directory of call `id`'s recording in `dir`.
fn recording_of(dir: &Path, id: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{id}-"))
        })
        .map(|e| e.path())
        .unwrap_or_else(|| panic!("no recording of {id} in {dir:?}"))
}

/// Stream 0's pcap files of a recording, in order (`stream-0.pcap`, `stream-0.1.pcap`, ...).
fn stream_files(rec: &Path) -> Vec<PathBuf> {
    let mut parts: Vec<(u32, PathBuf)> = std::fs::read_dir(rec)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix("stream-0")?.strip_suffix(".pcap")?;
            let part = match rest.strip_prefix('.') {
                Some(n) => n.parse().ok()?,
                None if rest.is_empty() => 0,
                None => return None,
            };
            Some((part, e.path()))
        })
        .collect();
    parts.sort();
    parts.into_iter().map(|(_, p)| p).collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Waits until the recorder wrote `n` packets (or gives up after 5 s).
fn wait_written(engine: &Engine, n: u64) {
    let until = Instant::now() + Duration::from_secs(5);
    while engine.recording_stats().unwrap().packets_written < n && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Receives RTP datagrams on `s` until it is idle: each whole.
fn datagrams(s: &std::net::UdpSocket, idle: Duration) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    let s = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        while let Ok(n) = s.recv(&mut buf) {
            if n >= 12 {
                out.push(buf[..n].to_vec());
            }
            s.set_read_timeout(Some(idle)).unwrap();
        }
        out
    })
}

fn seq(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[2], p[3]])
}

/// The NAL unit type of an RTP packet's H.264 payload (RFC 6184: its first byte).
fn nal_type(rtp: &[u8]) -> u8 {
    let cc = usize::from(rtp[0] & 0x0f);
    let mut at = 12 + 4 * cc;
    if rtp[0] & 0x10 != 0 {
        let words = usize::from(u16::from_be_bytes([rtp[at + 2], rtp[at + 3]]));
        at += 4 + 4 * words;
    }
    rtp[at] & 0x1f
}

#[test]
fn an_ffmpeg_push_in_per_leg_is_recorded_decrypted_packet_for_packet() {
    ffmpeg::require("ffmpeg");
    let dir = tmp("ffmpeg");
    let mut call = CallConfig::default();
    call.tc.media_inactivity = Duration::from_secs(2);
    let engine = engine(&dir, 33_400, RecordingConfig::default(), call);
    let (caller_port, _c1, _c2) = ffmpeg::port_pair();
    let (_, key) = engine_ffmpeg_offer(&engine, "rec-ffmpeg", caller_port);
    assert!(engine.record_call("rec-ffmpeg").unwrap(), "recorded");
    assert!(
        engine.record_call("rec-ffmpeg").unwrap(),
        "asking again is fine"
    );
    let (recv_port, callee_rtp, _callee_rtcp) = ffmpeg::port_pair();
    let answer = engine
        .accept_call(
            "rec-ffmpeg",
            AnswerCall {
                callee_sdp: ffmpeg::video_sdp("viewer", recv_port, &key, None),
                callee_tc_key: None,
            },
        )
        .unwrap();
    let got = datagrams(&callee_rtp, Duration::from_millis(1500));
    let relay = RelayAddrs::from_sdp(&answer.sdp_answer).video;
    let sender = ffmpeg::send(relay);
    assert!(
        sender.status.success(),
        "sender: {}",
        String::from_utf8_lossy(&sender.stderr)
    );
    let got = got.join().unwrap();
    assert!(got.len() > 100, "the callee got the stream: {}", got.len());
    wait_written(&engine, got.len() as u64);

    let rec = recording_of(&dir, "rec-ffmpeg");
    let files = stream_files(&rec);
    assert_eq!(files.len(), 1, "one file (far below the rotation size)");
    assert_eq!(mode(&files[0]), 0o600);
    assert_eq!(mode(&rec.join("media.json")), 0o600);
    let all = read_pcap(&files[0]);
    let is_rtcp = |c: &Captured| (200..=204).contains(&c.payload[1]);
    let rtcp: Vec<&Captured> = all.iter().filter(|c| is_rtcp(c)).collect();
    assert!(!rtcp.is_empty(), "ffmpeg's sender reports are recorded too");
    for c in &rtcp {
        // SRTCP adds a 4-byte index and a 10-byte tag: the recorded compound has neither, its
        // packets' lengths add up to it.
        let (p, mut at) = (&c.payload, 0);
        while at + 4 <= p.len() {
            assert!((200..=204).contains(&p[at + 1]), "RTCP decrypted: {p:?}");
            at += 4 * (usize::from(u16::from_be_bytes([p[at + 2], p[at + 3]])) + 1);
        }
        assert_eq!(at, p.len(), "RTCP decrypted: {p:?}");
        assert_eq!(c.dst.port(), relay.port() + 1, "to the relay's RTCP port");
    }
    let pcap: Vec<&Captured> = all.iter().filter(|c| !is_rtcp(c)).collect();
    assert_eq!(
        pcap.len(),
        got.len(),
        "every packet the callee got, no other"
    );
    for (i, (c, g)) in pcap.iter().zip(&got).enumerate() {
        let p = &c.payload;
        assert_eq!(seq(p), seq(g), "packet {i} in order");
        assert_eq!(p[..12], g[..12], "packet {i}: the same RTP header");
        // SRTP (AES_CM_128_HMAC_SHA1_80) adds a 10-byte tag: the recorded one has none.
        assert_eq!(p.len() + 10, g.len(), "packet {i} decrypted");
        assert!(
            matches!(nal_type(p), 1 | 5 | 7 | 8 | 24 | 28),
            "packet {i}: H.264 NAL type {}",
            nal_type(p)
        );
        assert_eq!(c.dst, relay, "packet {i} to the relay's port");
        assert_eq!(c.src.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    assert!(
        pcap.windows(2).all(|w| w[0].at_us <= w[1].at_us),
        "arrival times in order"
    );
    let span = pcap.last().unwrap().at_us - pcap[0].at_us;
    assert!(
        (4_000_000..10_000_000).contains(&span),
        "a 5 s push spans about 5 s: {span} µs"
    );
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(rec.join("media.json")).unwrap()).unwrap();
    assert_eq!(meta["media_security"], "per_leg");
    assert_eq!(meta["streams"][0]["decrypted"], true);
    assert_eq!(meta["streams"][0]["encrypted"], false);
    let text = std::fs::read_to_string(rec.join("media.json")).unwrap();
    assert!(
        !text.contains(ffmpeg::SENDER_KEY) && !text.contains(&key),
        "no key material"
    );
    let s = engine.recording_stats().unwrap();
    assert_eq!(
        (s.started, s.packets_written, s.packets_dropped, s.stopped),
        (1, all.len() as u64, 0, 0)
    );

    // Exported (issue 22, item 3): the push ends by media inactivity; its one transmission
    // becomes one H.264 file, named by its member, that ffmpeg decodes whole.
    let log = rec.join("transmissions.jsonl");
    let until = Instant::now() + Duration::from_secs(8);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("\"released\"")
    {
        assert!(Instant::now() < until, "the call ends");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = dir.join("export");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_mcvideo-relay"))
        .arg("recording")
        .arg("export")
        .arg(&rec)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "export: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let files: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "one transmission: {files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("sip_camera_mcx.example-") && name.ends_with("-stream0.h264"),
        "{name}"
    );
    assert!(
        stdout.contains(&format!("{} RTP packets", got.len())),
        "every recorded packet in it: {stdout}"
    );
    ffmpeg::require("ffprobe");
    assert_eq!(
        ffmpeg::frames(&files[0]),
        ffmpeg::FRAMES,
        "ffmpeg decodes every frame of the exported file"
    );
    engine.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

const SSRC: u32 = 0x0e2e_0e2e;

/// Creates and answers a push with hand-made RTP over plain sockets: the caller and the
/// relay's address it sends to.
fn push(
    engine: &Engine,
    id: &str,
    proto: &str,
    security: MediaSecurity,
) -> (Peer, Peer, SocketAddr) {
    let (caller, callee) = (Peer::new(), Peer::new());
    let to = engine_push_as(engine, id, &caller, &callee, SSRC, proto, security).video;
    (caller, callee, to)
}

#[test]
fn an_end_to_end_call_is_recorded_as_received_by_policy_and_rotated_by_size() {
    let dir = tmp("e2e");
    let rec = RecordingConfig {
        media_all: true,
        max_file_bytes: 8 * 1024,
        ..RecordingConfig::default()
    };
    let engine = engine(&dir, 33_500, rec, CallConfig::default());
    let (caller, callee, to) = push(&engine, "rec-e2e", "RTP/SAVP", MediaSecurity::EndToEnd);
    let got = collect(
        &callee.rtp,
        Duration::from_secs(2),
        Duration::from_millis(300),
    );
    // SRTP the relay cannot read: the payload is opaque bytes to it.
    let sent: Vec<Vec<u8>> = (0..100u16)
        .map(|i| {
            let mut p = rtp_packet(2000 + i, SSRC, 300);
            for (j, b) in p[12..].iter_mut().enumerate() {
                *b = (j as u8).wrapping_mul(31).wrapping_add(i as u8);
            }
            p
        })
        .collect();
    for p in &sent {
        caller.rtp.send_to(p, to).unwrap();
        std::thread::sleep(Duration::from_micros(500));
    }
    assert_eq!(got.join().unwrap().len(), 100, "the media went through");
    wait_written(&engine, 100);
    engine.release_call("rec-e2e").unwrap();

    let rec = recording_of(&dir, "rec-e2e");
    let files = stream_files(&rec);
    assert!(files.len() > 2, "rotated by size: {files:?}");
    let mut all = Vec::new();
    for f in &files {
        assert_eq!(mode(f), 0o600);
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len <= 8 * 1024, "{f:?}: {len} bytes");
        all.extend(read_pcap(f));
    }
    assert_eq!(all.len(), 100);
    for (c, s) in all.iter().zip(&sent) {
        assert_eq!(&c.payload, s, "as received, byte for byte");
        assert_eq!(c.dst, to);
        assert_eq!(c.src, caller.rtp.local_addr().unwrap());
    }
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(rec.join("media.json")).unwrap()).unwrap();
    assert_eq!(meta["call"], "rec-e2e");
    assert_eq!(meta["media_security"], "end_to_end");
    assert_eq!(meta["linktype"], 101);
    assert_eq!(meta["streams"][0]["encrypted"], true, "{meta}");
    assert_eq!(meta["streams"][0]["decrypted"], false);
    assert!(rec.join("transmissions.jsonl").exists(), "beside its log");
    engine.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_call_nobody_asked_to_record_leaves_no_pcap() {
    let dir = tmp("off");
    let engine = engine(
        &dir,
        33_600,
        RecordingConfig::default(),
        CallConfig::default(),
    );
    let (caller, callee, to) = push(&engine, "rec-off", "RTP/AVP", MediaSecurity::EndToEnd);
    let got = collect(
        &callee.rtp,
        Duration::from_secs(2),
        Duration::from_millis(300),
    );
    for seq in 0..20u16 {
        caller.rtp.send_to(&rtp_packet(seq, SSRC, 300), to).unwrap();
        std::thread::sleep(Duration::from_micros(500));
    }
    assert_eq!(got.join().unwrap().len(), 20);
    engine.release_call("rec-off").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let rec = recording_of(&dir, "rec-off");
    let names: Vec<String> = std::fs::read_dir(&rec)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["transmissions.jsonl"], "the log only");
    let s = engine.recording_stats().unwrap();
    assert_eq!((s.packets_written, s.packets_dropped), (0, 0));
    engine.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

const NAMES: [&str; 3] = ["A", "B", "C"];

fn member_ssrc(i: usize) -> u32 {
    0x3000_0000 + i as u32 * 0x111
}

#[test]
fn a_group_call_is_recorded_once_per_packet_whatever_its_receivers() {
    let dir = tmp("group");
    let engine = engine(
        &dir,
        34_000,
        RecordingConfig::default(),
        CallConfig::default(),
    );
    // C has the highest priority: it pre-empts.
    let m: Vec<GroupMember> = engine_group(&engine, "rec-group", &NAMES, member_ssrc, |i| {
        if i == 2 {
            9
        } else {
            5
        }
    });
    assert!(engine.record_call("rec-group").unwrap());
    m[0].request(5);
    m[0].expect(MessageKind::TransmissionGranted);
    m[0].send_video(1..21);
    m[2].request(9);
    m[2].expect(MessageKind::TransmissionGranted);
    m[2].send_video(500..510);
    // B never holds the grant: what it sends is not forwarded, so not recorded.
    m[1].send_video(900..905);
    wait_written(&engine, 30);
    std::thread::sleep(Duration::from_millis(100));
    engine.release_group_call("rec-group").unwrap();

    let rec = recording_of(&dir, "rec-group");
    let pcap = read_pcap(&stream_files(&rec)[0]);
    let seqs: Vec<u16> = pcap.iter().map(|c| seq(&c.payload)).collect();
    let want: Vec<u16> = (1..21).chain(500..510).collect();
    assert_eq!(seqs, want, "A's transmission then C's, once each");
    for c in &pcap[..20] {
        assert_eq!(c.src, m[0].peer.rtp.local_addr().unwrap());
        assert_eq!(c.dst, m[0].video, "to A's relay socket");
    }
    for c in &pcap[20..] {
        assert_eq!(c.src, m[2].peer.rtp.local_addr().unwrap());
        assert_eq!(c.dst, m[2].video, "to C's relay socket");
    }
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(rec.join("media.json")).unwrap()).unwrap();
    assert_eq!(meta["kind"], "group");
    assert_eq!(meta["streams"][0]["encrypted"], false, "plain RTP");
    let s = engine.recording_stats().unwrap();
    assert_eq!((s.packets_written, s.packets_dropped), (30, 0));
    engine.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// One second of ffmpeg's H.264 test pattern (25 frames, one GOP) as plain RTP packets, as
/// ffmpeg sent them.
fn h264_clip() -> Vec<Vec<u8>> {
    let (port, rx, _rtcp) = ffmpeg::port_pair();
    let got = datagrams(&rx, Duration::from_millis(700));
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-t",
            "1",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args(["-profile:v", "baseline", "-pix_fmt", "yuv420p", "-g", "25"])
        .args(["-f", "rtp", "-payload_type", "96"])
        .arg(format!("rtp://127.0.0.1:{port}?pkt_size=1200"))
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    got.join().unwrap()
}

#[test]
fn a_group_calls_three_transmissions_export_as_three_files_named_by_member() {
    use mcvideo_relay::wire::tc::{MessageKind, TcMessage};
    ffmpeg::require("ffmpeg");
    ffmpeg::require("ffprobe");
    let clip = h264_clip();
    assert!(clip.len() > 25, "a clip: {} packets", clip.len());
    let dir = tmp("group-export");
    let engine = engine(
        &dir,
        34_100,
        RecordingConfig {
            media_all: true,
            ..RecordingConfig::default()
        },
        CallConfig::default(),
    );
    // C has the highest priority: it pre-empts.
    let m: Vec<GroupMember> = engine_group(&engine, "rec-group-x", &NAMES, member_ssrc, |i| {
        if i == 2 {
            9
        } else {
            5
        }
    });
    // Member `i` sends the clip under its own SSRC, numbered from `base`.
    let send_clip = |i: usize, base: u16| {
        for (k, p) in clip.iter().enumerate() {
            let mut p = p.clone();
            p[2..4].copy_from_slice(&base.wrapping_add(k as u16).to_be_bytes());
            p[8..12].copy_from_slice(&member_ssrc(i).to_be_bytes());
            m[i].peer.rtp.send_to(&p, m[i].video).unwrap();
            std::thread::sleep(Duration::from_micros(300));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    m[0].request(5);
    m[0].expect(MessageKind::TransmissionGranted);
    send_clip(0, 1000);
    // C's stronger request pre-empts A.
    m[2].request(9);
    m[2].expect(MessageKind::TransmissionGranted);
    send_clip(2, 5000);
    m[2].peer.send_tc(
        m[2].control,
        &TcMessage::new(MessageKind::TransmissionEndRequest, member_ssrc(2)),
    );
    std::thread::sleep(Duration::from_millis(100));
    m[1].request(5);
    m[1].expect(MessageKind::TransmissionGranted);
    send_clip(1, 60_000);
    engine.release_group_call("rec-group-x").unwrap();

    let rec = recording_of(&dir, "rec-group-x");
    let log = rec.join("transmissions.jsonl");
    let until = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("\"released\"")
    {
        assert!(Instant::now() < until, "the log is complete");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(r#""event":"preempted","member":"A","by":"C","cause":4"#),
        "{text}"
    );
    wait_written(&engine, 3 * clip.len() as u64);
    let out = dir.join("export");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_mcvideo-relay"))
        .args(["recording", "export"])
        .arg(&rec)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "export: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort_by_key(|f| f.file_name().unwrap().to_owned());
    let members: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy()[..1].to_owned())
        .collect();
    assert_eq!(
        members,
        ["A", "B", "C"],
        "one file per transmission: {files:?}"
    );
    for f in &files {
        assert_eq!(ffmpeg::frames(f), 25, "{f:?} decodes whole ({stdout})");
    }
    assert!(
        stdout
            .lines()
            .all(|l| l.contains(&format!("\t{} RTP packets", clip.len()))),
        "every packet of each transmission: {stdout}"
    );
    engine.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn too_little_free_space_refuses_the_recording_and_not_the_call() {
    let dir = tmp("nospace");
    let engine = Engine::start(EngineConfig {
        port_min: 34_200,
        port_max: 34_299,
        workers: 1,
        recording: Some(RecordingConfig {
            dir: dir.clone(),
            min_free_bytes: u64::MAX,
            transmission_log: false,
            ..RecordingConfig::default()
        }),
        ..EngineConfig::default()
    })
    .expect("engine starts");
    let (caller, callee, to) = push(&engine, "rec-nospace", "RTP/AVP", MediaSecurity::EndToEnd);
    assert!(
        !engine.record_call("rec-nospace").unwrap(),
        "the recording is refused"
    );
    let got = collect(
        &callee.rtp,
        Duration::from_secs(2),
        Duration::from_millis(300),
    );
    for seq in 0..20u16 {
        caller.rtp.send_to(&rtp_packet(seq, SSRC, 300), to).unwrap();
        std::thread::sleep(Duration::from_micros(500));
    }
    assert_eq!(got.join().unwrap().len(), 20, "the call goes on");
    let s = engine.recording_stats().unwrap();
    assert_eq!(
        (s.started, s.refused, s.packets_written, s.packets_dropped),
        (0, 1, 0, 0)
    );
    let left = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(left, 0, "nothing written");
    engine.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
