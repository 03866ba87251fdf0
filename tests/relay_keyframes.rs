//! Video needs keyframes. The callee's PLI/FIR reach the caller; where the relay can read and
//! sign RTCP (plain RTP here) it asks the caller for a keyframe when the grant starts, drops a
//! request repeated within the rate limit, and one made redundant by a keyframe it just saw.
//! A real encoder's stream (ffmpeg libx264) through the relay: `quality.keyframes` is the
//! number of IDR frames ffprobe finds in the same input, however they were packetized.

mod common;
use common::ffmpeg::{require, tmpdir};
use common::net::*;
use mcvideo_relay::control::call::{AnswerCall, CreateCall};
use mcvideo_relay::control::MediaSecurity;
use mcvideo_relay::relay::{DropReason, Engine, EngineConfig, KernelOffload};
use mcvideo_relay::wire::rtcp::{self, RtcpKind, RtcpPacket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SSRC: u32 = 0x0c0f_fee0;

fn pli() -> Vec<u8> {
    let mut b = [0u8; 12];
    let n = rtcp::emit_pli(0xb0b, SSRC, &mut b).unwrap();
    b[..n].to_vec()
}

fn keyframe_packet(seq: u16) -> Vec<u8> {
    let mut p = rtp_packet(seq, SSRC, 0);
    p.extend_from_slice(&[0x7c, 0x85, 0x88, 0x84]); // FU-A, start of an IDR slice
    p.extend(std::iter::repeat_n(0u8, 600));
    p
}

#[test]
fn keyframe_requests_at_grant_rate_limited_and_redundant_dropped() {
    let engine = Engine::start(EngineConfig {
        port_min: 45_000,
        port_max: 45_099,
        workers: 1,
        ..EngineConfig::default()
    })
    .unwrap();
    let (caller, callee) = (Peer::new(), Peer::new());
    let offer = engine
        .create_call(CreateCall {
            call_id: Some("kf".into()),
            caller_id: "sip:cam@x".into(),
            caller_sdp: caller.sdp("cam", "RTP/AVP", Some(SSRC), false, ""),
            callee_id: "sip:viewer@x".into(),
            video_push: true,
            video_pull: false,
            commencement_mode: None,
            media_security: MediaSecurity::EndToEnd,
            caller_tc_key: None,
            callee_interface: None,
            caller_interface: None,
        })
        .unwrap();
    let to_callee = RelayAddrs::from_sdp(&offer.sdp_offer);
    let answer = engine
        .accept_call(
            "kf",
            AnswerCall {
                callee_sdp: callee.sdp("viewer", "RTP/AVP", None, false, ""),
                callee_tc_key: None,
            },
        )
        .unwrap();
    let to_caller = RelayAddrs::from_sdp(&answer.sdp_answer);
    let pli_at_caller = |within: Duration| -> usize {
        drain(&caller.rtcp, within)
            .iter()
            .filter(|(b, _)| {
                RtcpPacket::new_checked(&b[..]).is_ok_and(|p| p.kind() == RtcpKind::Pli)
            })
            .count()
    };

    // At the grant: the relay's own PLI for the caller's video SSRC.
    let (b, from) = recv(&caller.rtcp, Duration::from_secs(2));
    assert_eq!(from, to_caller.video_rtcp);
    let p = RtcpPacket::new_checked(&b[..]).unwrap();
    assert_eq!((p.kind(), p.media_ssrc()), (RtcpKind::Pli, Some(SSRC)));

    // The callee asks right away: the relay just asked, so this one is dropped.
    callee.rtcp.send_to(&pli(), to_callee.video_rtcp).unwrap();
    assert_eq!(
        pli_at_caller(Duration::from_millis(200)),
        0,
        "repeated within the interval"
    );

    // Later a keyframe passes; a request right after it is redundant.
    std::thread::sleep(Duration::from_millis(600));
    caller
        .rtp
        .send_to(&keyframe_packet(1), to_caller.video)
        .unwrap();
    let (k, _) = recv(&callee.rtp, Duration::from_secs(1));
    assert_eq!(k, keyframe_packet(1));
    callee.rtcp.send_to(&pli(), to_callee.video_rtcp).unwrap();
    assert_eq!(
        pli_at_caller(Duration::from_millis(200)),
        0,
        "a keyframe just went out"
    );

    // Past both windows the callee's request reaches the caller, byte for byte; a second one
    // straight after is dropped.
    std::thread::sleep(Duration::from_millis(600));
    callee.rtcp.send_to(&pli(), to_callee.video_rtcp).unwrap();
    let (b, _) = recv(&caller.rtcp, Duration::from_secs(1));
    assert_eq!(b, pli());
    callee.rtcp.send_to(&pli(), to_callee.video_rtcp).unwrap();
    assert_eq!(pli_at_caller(Duration::from_millis(200)), 0);

    let s = engine.call("kf").unwrap();
    assert_eq!(s.callee.dropped(DropReason::RateLimited), 3);
}

/// Runs a tool to the end; panics with its stderr when it fails.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Key frames ffprobe finds in `path` (it decodes only those).
fn ffprobe_key_frames(path: &Path) -> u64 {
    let text = run(Command::new("ffprobe")
        .args(["-v", "error", "-skip_frame", "nokey", "-count_frames"])
        .args([
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
        ])
        .args(["-of", "default=nw=1"])
        .arg(path));
    text.trim()
        .strip_prefix("nb_read_frames=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("ffprobe said {text:?}"))
}

#[test]
fn keyframes_of_a_real_encoder_are_counted_once_each() {
    count_a_real_encoder_s_keyframes(KernelOffload::Off, 45_100);
}

/// The same stream with the leg in the kernel fast path (plain RTP, `required`): the program
/// counts the keyframes the relay no longer sees, and the one the leg went in during is not
/// counted twice.
#[test]
fn keyframes_forwarded_in_the_kernel_are_counted_once_each_too() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !cfg!(feature = "kernel-offload") || !root {
        println!("SKIPPED keyframes_forwarded_in_the_kernel: needs root and kernel-offload");
        return;
    }
    count_a_real_encoder_s_keyframes(KernelOffload::Required, 45_200);
}

fn count_a_real_encoder_s_keyframes(kernel_offload: KernelOffload, port_min: u16) {
    require("ffmpeg");
    require("ffprobe");
    // 53 frames, an IDR every 10 (no scene cut, no B-frames), two slices per frame: ffmpeg's
    // RTP packetizer sends each IDR as SPS+PPS(+SEI) in a STAP-A and its two slices in FU-A
    // fragments, and each other frame as a STAP-A of two slices.
    const FRAMES: u64 = 53;
    let dir = tmpdir("keyframes");
    let input = dir.join("in.h264");
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
        .args(["-frames:v", &FRAMES.to_string(), "-c:v", "libx264"])
        .args([
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-profile:v",
            "baseline",
        ])
        .args(["-pix_fmt", "yuv420p", "-g", "10", "-keyint_min", "10"])
        .args(["-sc_threshold", "0", "-bf", "0", "-x264-params", "slices=2"])
        .arg(&input));
    let idr_frames = ffprobe_key_frames(&input);
    assert_eq!(idr_frames, 6, "frames 0, 10, .., 50");

    let engine = Engine::start(EngineConfig {
        port_min,
        port_max: port_min + 99,
        workers: 1,
        kernel_offload,
        ..EngineConfig::default()
    })
    .unwrap();
    let (caller, callee) = (Peer::new(), Peer::new());
    engine
        .create_call(CreateCall {
            call_id: Some("x264".into()),
            caller_id: "sip:cam@x".into(),
            caller_sdp: caller.sdp("cam", "RTP/AVP", Some(SSRC), false, ""),
            callee_id: "sip:viewer@x".into(),
            video_push: true,
            video_pull: false,
            commencement_mode: None,
            media_security: MediaSecurity::EndToEnd,
            caller_tc_key: None,
            caller_interface: None,
            callee_interface: None,
        })
        .unwrap();
    let answer = engine
        .accept_call(
            "x264",
            AnswerCall {
                callee_sdp: callee.sdp("viewer", "RTP/AVP", None, false, ""),
                callee_tc_key: None,
            },
        )
        .unwrap();
    let to_caller = RelayAddrs::from_sdp(&answer.sdp_answer);
    let rx = collect(
        &callee.rtp,
        Duration::from_secs(5),
        Duration::from_millis(1000),
    );
    let url = format!(
        "rtp://{}?pkt_size=1200&rtcpport={}",
        to_caller.video,
        to_caller.video_rtcp.port()
    );
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .arg("-i")
        .arg(&input)
        .args(["-c", "copy", "-f", "rtp", "-payload_type", "96"])
        .args(["-ssrc", &SSRC.to_string()])
        .arg(url));
    let got = rx.join().unwrap();
    let q = engine.call("x264").unwrap().quality[0].legs[0];
    eprintln!("{q:?}");
    assert_eq!(
        q.packets,
        got.len() as u64,
        "every packet reached the callee"
    );
    assert_eq!(q.frames, FRAMES, "one marker bit per frame");
    assert_eq!(q.keyframes, idr_frames, "one per IDR frame");
    let in_kernel = engine.stats().kernel_offload_packets;
    eprintln!(
        "{in_kernel} of {} packets forwarded in the kernel",
        q.packets
    );
    if kernel_offload == KernelOffload::Required {
        // All but the packets before the leg's source latched and the step that installs it.
        assert!(
            in_kernel * 10 >= q.packets * 8,
            "{in_kernel} of {}",
            q.packets
        );
    } else {
        assert_eq!(in_kernel, 0);
    }
    engine.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
