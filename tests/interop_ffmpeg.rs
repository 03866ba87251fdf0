//! ffmpeg as the real peer (docs/testing.md, "Real peers"): an H.264 stream from an ffmpeg SRTP sender
//! goes through the engine to an ffmpeg receiver, and every frame must decode.
//!
//! * end_to_end: sender and receiver share one key; the relay forwards opaque SRTP.
//! * per_leg: the sender uses the key of the caller's offer, the receiver the key the relay put
//!   into the callee's offer; frames decode only if the relay decrypted and re-encrypted right.
//!
//! Needs `ffmpeg` and `ffprobe` (Debian: `apt-get install ffmpeg`); `.ci/run` installs them.

mod common;
use common::ffmpeg::*;
use common::net::RelayAddrs;
use mcvideo_relay::control::call::{AnswerCall, CallConfig, CallEventKind, CreateCall};
use mcvideo_relay::control::{MediaSecurity, ReleaseReason};
use mcvideo_relay::relay::{Engine, EngineConfig};
use mcvideo_relay::sdp::{MediaKind, SessionDescription};
use std::time::Duration;

/// Writes the receiver's SDP, starts the ffmpeg receiver on it, streams [`FRAMES`] frames to
/// `to` and checks that every one decodes.
fn stream_and_decode(dir: &std::path::Path, recv_sdp: String, to: std::net::SocketAddr) {
    std::fs::write(dir.join("recv.sdp"), recv_sdp).unwrap();
    let out = dir.join("out.mkv");
    let receiver = spawn_receiver(&dir.join("recv.sdp"), &out);
    std::thread::sleep(Duration::from_millis(700));
    let sender = send(to);
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
}

/// The reason of the first `call.released` within 4 s.
fn released(
    events: &mut tokio::sync::broadcast::Receiver<mcvideo_relay::control::call::CallEvent>,
) -> Option<ReleaseReason> {
    for _ in 0..40 {
        while let Ok(ev) = events.try_recv() {
            if let CallEventKind::Released { reason } = ev.kind {
                return Some(reason);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
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
            video_pull: false,
            commencement_mode: None,
            media_security: mode,
            caller_tc_key: None,
            callee_interface: None,
            caller_interface: None,
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
    drop((r1, r2));
    stream_and_decode(
        &dir,
        video_sdp("viewer", recv_port, &receiver_key, None),
        to_caller.video,
    );
    // The push completes by media inactivity (no control channel) and the call is released.
    let released = released(&mut events);
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

/// Video pull: the viewer calls the camera; the camera (the callee) is the only transmitter,
/// and every frame it sends decodes at the viewer after the relay.
fn pull_through_relay(mode: MediaSecurity, port_min: u16) {
    require("ffmpeg");
    require("ffprobe");
    let dir = tmpdir(&format!("pull-{}", mode.as_str()));
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
    // The viewer asks to pull; it offers where it receives, with the key it would send with.
    let (recv_port, r1, r2) = port_pair();
    let offer = engine
        .create_call(CreateCall {
            call_id: Some("pull".into()),
            caller_id: "sip:viewer@mcx.example".into(),
            caller_sdp: video_sdp("viewer", recv_port, SENDER_KEY, None),
            callee_id: "sip:camera@mcx.example".into(),
            video_push: false,
            video_pull: true,
            commencement_mode: None,
            media_security: mode,
            caller_tc_key: None,
            callee_interface: None,
            caller_interface: None,
        })
        .expect("create_call");
    let to_callee = RelayAddrs::from_sdp(&offer.sdp_offer);
    // The camera answers with the key it sends with and its SSRC.
    let (cam_port, _c1, _c2) = port_pair();
    let answer = engine
        .accept_call(
            "pull",
            AnswerCall {
                callee_sdp: video_sdp("camera", cam_port, SENDER_KEY, Some(SSRC)),
                callee_tc_key: None,
            },
        )
        .expect("accept_call");
    // The viewer decrypts with the key in the answer it got: the camera's end to end, the
    // relay's own per leg.
    let answer_sdp = SessionDescription::parse(&answer.sdp_answer).unwrap();
    let viewer_key = answer_sdp.media()[0].crypto[0].key_b64.clone();
    match mode {
        MediaSecurity::EndToEnd => assert_eq!(viewer_key, SENDER_KEY),
        MediaSecurity::PerLeg => assert_ne!(viewer_key, SENDER_KEY),
    }
    drop((r1, r2));
    stream_and_decode(
        &dir,
        video_sdp("viewer", recv_port, &viewer_key, None),
        to_callee.video,
    );
    let released = released(&mut events);
    assert_eq!(released, Some(ReleaseReason::MediaTimeout));
    let stats = engine.stats();
    assert!(
        stats.caller.packets_out > 100,
        "the viewer got the video: {stats:?}"
    );
    assert_eq!(stats.callee.dropped_total(), 0, "{stats:?}");
    engine.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ffmpeg_pull_end_to_end_mode() {
    pull_through_relay(MediaSecurity::EndToEnd, 48_000);
}

#[test]
fn ffmpeg_pull_per_leg_mode() {
    pull_through_relay(MediaSecurity::PerLeg, 48_400);
}
