//! ffmpeg as the real peer (shared/docs/interop.md): an H.264 stream from an ffmpeg SRTP sender
//! goes through the engine to an ffmpeg receiver, and every frame must decode.
//!
//! * end_to_end: sender and receiver share one key; the relay forwards opaque SRTP.
//! * per_leg: the sender uses the key of the caller's offer, the receiver the key the relay put
//!   into the callee's offer; frames decode only if the relay decrypted and re-encrypted right.
//!
//! Needs `ffmpeg` and `ffprobe` (Debian: `apt-get install ffmpeg`); `.ci/run` installs them.

mod common;
use common::net::RelayAddrs;
use mcvideo_relay::control::call::{AnswerCall, CallConfig, CallEventKind, CreateCall};
use mcvideo_relay::control::{MediaSecurity, ReleaseReason};
use mcvideo_relay::relay::{Engine, EngineConfig};
use mcvideo_relay::sdp::{MediaKind, SessionDescription};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const SENDER_KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e";
const SSRC: u32 = 305_419_896;
const FRAMES: u32 = 125; // 5 s at 25 fps

fn require(tool: &str) {
    let ok = Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{tool}` is needed for this test: apt-get install -y --no-install-recommends ffmpeg"
    );
}

/// An even port P with P and P+1 free, held until dropped.
fn port_pair() -> (u16, UdpSocket, UdpSocket) {
    for _ in 0..200 {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p % 2 != 0 || p == u16::MAX {
            continue;
        }
        if let Ok(b) = UdpSocket::bind(("127.0.0.1", p + 1)) {
            return (p, a, b);
        }
    }
    panic!("no free port pair");
}

fn video_sdp(name: &str, port: u16, key: &str, ssrc: Option<u32>) -> String {
    let mut s = format!(
        "v=0\r\no={name} 0 0 IN IP4 127.0.0.1\r\ns=relay-e2e\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=video {port} RTP/SAVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n\
         a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"
    );
    if let Some(ssrc) = ssrc {
        s.push_str(&format!("a=ssrc:{ssrc} cname:{name}\r\n"));
    }
    s
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mcv-ffmpeg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn frames(path: &Path) -> u32 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "default=nw=1",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .strip_prefix("nb_read_frames=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "ffprobe said {text:?} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

fn push_through_relay(mode: MediaSecurity, port_min: u16) {
    require("ffmpeg");
    require("ffprobe");
    let dir = tmpdir(mode.as_str());
    let mut call = CallConfig::default();
    call.tc.media_inactivity = Duration::from_secs(2);
    let engine = Engine::start(EngineConfig {
        port_min,
        port_max: port_min + 199,
        workers: 1,
        call,
        ..EngineConfig::default()
    })
    .unwrap();
    let mut events = engine.subscribe();

    // The sender only sends; the ports it names are held so nothing else takes them.
    let (caller_port, _c1, _c2) = port_pair();
    let offer = engine
        .create_call(CreateCall {
            call_id: Some("ffmpeg".into()),
            caller_id: "sip:camera@mcx.example".into(),
            caller_sdp: video_sdp("camera", caller_port, SENDER_KEY, Some(SSRC)),
            callee_id: "sip:viewer@mcx.example".into(),
            video_push: true,
            commencement_mode: None,
            media_security: mode,
            caller_tc_key: None,
        })
        .expect("create_call");
    let callee_offer = SessionDescription::parse(&offer.sdp_offer).unwrap();
    let video = callee_offer
        .media()
        .iter()
        .find(|m| m.kind == MediaKind::Video)
        .unwrap();
    let receiver_key = video.crypto[0].key_b64.clone();
    match mode {
        MediaSecurity::EndToEnd => assert_eq!(receiver_key, SENDER_KEY, "keys pass end to end"),
        MediaSecurity::PerLeg => {
            assert_ne!(receiver_key, SENDER_KEY, "the relay keys the callee leg")
        }
    }

    // The receiver listens on a pair of its own; it uses one key both ways (ffmpeg).
    let (recv_port, r1, r2) = port_pair();
    let answer = engine
        .accept_call(
            "ffmpeg",
            AnswerCall {
                callee_sdp: video_sdp("viewer", recv_port, &receiver_key, None),
                callee_tc_key: None,
            },
        )
        .expect("accept_call");
    let to_caller = RelayAddrs::from_sdp(&answer.sdp_answer);
    std::fs::write(
        dir.join("recv.sdp"),
        video_sdp("viewer", recv_port, &receiver_key, None),
    )
    .unwrap();
    drop((r1, r2));
    let out = dir.join("out.mkv");
    let receiver = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-listen_timeout",
            "2",
        ])
        .args(["-protocol_whitelist", "file,udp,rtp,srtp,crypto", "-i"])
        .arg(dir.join("recv.sdp"))
        .args(["-c", "copy", "-y"])
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg receiver starts");
    std::thread::sleep(Duration::from_millis(700));
    let sender = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
        ])
        .args(["-i", "testsrc=size=640x360:rate=25", "-t", "5"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-profile:v",
            "baseline",
        ])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-g",
            "25",
            "-f",
            "rtp",
            "-payload_type",
            "96",
        ])
        .args([
            "-ssrc",
            &SSRC.to_string(),
            "-srtp_out_suite",
            "AES_CM_128_HMAC_SHA1_80",
        ])
        .args(["-srtp_out_params", SENDER_KEY])
        .arg(format!("srtp://{}?pkt_size=1200", to_caller.video))
        .output()
        .expect("ffmpeg sender runs");
    assert!(
        sender.status.success(),
        "sender: {}",
        String::from_utf8_lossy(&sender.stderr)
    );
    let received = receiver.wait_with_output().expect("receiver exits");
    assert!(
        received.status.success(),
        "receiver: {}",
        String::from_utf8_lossy(&received.stderr)
    );
    assert_eq!(frames(&out), FRAMES, "every frame decodes after the relay");

    // The push completes by media inactivity (no control channel) and the call is released.
    let mut released = None;
    for _ in 0..40 {
        while let Ok(ev) = events.try_recv() {
            if let CallEventKind::Released { reason } = ev.kind {
                released = Some(reason);
            }
        }
        if released.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(released, Some(ReleaseReason::MediaTimeout));
    let stats = engine.stats();
    assert!(stats.callee.packets_out > 100, "{stats:?}");
    assert_eq!(
        stats
            .caller
            .dropped(mcvideo_relay::relay::DropReason::AuthFailure),
        0
    );
    assert!(
        stats.caller.latches >= 1,
        "the sender's source port was latched by its announced SSRC"
    );
    engine.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ffmpeg_push_end_to_end_mode() {
    push_through_relay(MediaSecurity::EndToEnd, 43_000);
}

#[test]
fn ffmpeg_push_per_leg_mode() {
    push_through_relay(MediaSecurity::PerLeg, 43_400);
}
