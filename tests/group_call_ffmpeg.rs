//! ffmpeg as the real peers of a group video call (docs/testing.md, "Real peers"): one ffmpeg H.264
//! SRTP sender and three ffmpeg receivers, all members of one group call; the sender's member
//! asks to transmit on its control channel (ffmpeg does not speak MCVideo, the test does it
//! for it), is granted with its announced SSRC, and every receiver must decode every frame.
//!
//! * end_to_end: every member offers the group's key; the relay fans out opaque SRTP.
//! * per_leg: each member offers its own key; each receiver decrypts with the key the relay put
//!   into its answer, so frames decode only if the relay decrypted once and re-encrypted per
//!   receiver right.
//!
//! Needs `ffmpeg` and `ffprobe` (Debian: `apt-get install ffmpeg`). Ports 49_500–49_699.

mod common;
use common::ffmpeg::*;
use common::net::RelayAddrs;
use mcvideo_relay::control::MediaSecurity;
use mcvideo_relay::relay::{CreateGroupCall, Engine, EngineConfig, GroupMemberSpec};
use mcvideo_relay::sdp::{MediaKind, SessionDescription};
use mcvideo_relay::wire::tc::{self, EmitOptions, MessageKind, TcMessage};
use std::net::UdpSocket;
use std::time::Duration;

const RECEIVERS: usize = 3;
/// Keys the receivers offer in per_leg mode (each its own; 16 + 14 octets, base64).
const RECEIVER_KEYS: [&str; RECEIVERS] = [
    "ERITFBUWFxgZGhscHR4fICEiIyQlJicoKSorLC0u",
    "MTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkdISUpLTE1O",
    "UVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1u",
];

/// `video_sdp` with the MCVideo control channel on `ctl_port`.
fn member_sdp(name: &str, port: u16, key: &str, ssrc: Option<u32>, ctl_port: u16) -> String {
    format!(
        "{}m=application {ctl_port} udp MCVideo\r\na=fmtp:MCVideo mc_queueing\r\n",
        video_sdp(name, port, key, ssrc)
    )
}

fn group_through_relay(mode: MediaSecurity, call_id: &str, port_min: u16) {
    require("ffmpeg");
    require("ffprobe");
    let dir = tmpdir(&format!("group-{}", mode.as_str()));
    let engine = Engine::start(EngineConfig {
        port_min,
        port_max: port_min + 99,
        workers: 1,
        // The transmission must outlive the receivers' decoding on a loaded machine (the
        // summary below is read after they exit): no inactivity end within the test.
        group: mcvideo_relay::control::server::TcConfig {
            media_inactivity: Duration::from_secs(300),
            ..Default::default()
        },
        ..EngineConfig::default()
    })
    .unwrap();
    let per_leg = mode == MediaSecurity::PerLeg;

    // The sender only sends; the ports it names are held so nothing else takes them. Its
    // control channel is the test's socket.
    let (sender_port, _s1, _s2) = port_pair();
    let ctl = UdpSocket::bind("127.0.0.1:0").unwrap();
    ctl.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let ctl_port = ctl.local_addr().unwrap().port();
    let mut members = vec![GroupMemberSpec {
        mcvideo_id: "sip:camera@mcx.example".into(),
        sdp_offer: member_sdp("camera", sender_port, SENDER_KEY, Some(SSRC), ctl_port),
        priority: 5,
        receive_only: false,
        tc_key: None,
    }];
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for (i, key) in RECEIVER_KEYS.iter().enumerate() {
        let (port, a, b) = port_pair();
        held.push((a, b));
        ports.push(port);
        let key = if per_leg { key } else { SENDER_KEY };
        members.push(GroupMemberSpec {
            mcvideo_id: format!("sip:viewer{i}@mcx.example"),
            sdp_offer: video_sdp(&format!("viewer{i}"), port, key, None),
            priority: 1,
            receive_only: true,
            tc_key: None,
        });
    }
    let created = engine
        .create_group_call(CreateGroupCall {
            call_id: Some(call_id.into()),
            group_id: "sip:cameras@mcx.example".into(),
            media_security: mode,
            max_transmitters: None,
            max_streams_per_receiver: None,
            reception_mode: None,
            members,
        })
        .expect("create_group_call");
    let relay = RelayAddrs::from_sdp(&created.members[0].sdp_answer);

    // Each receiver decrypts with the key of its answer: the group key passed through
    // (end_to_end), or the relay's own key toward it (per_leg).
    let mut receivers = Vec::new();
    drop(held);
    for (i, port) in ports.iter().enumerate() {
        let answer = SessionDescription::parse(&created.members[i + 1].sdp_answer).unwrap();
        let video = answer
            .media()
            .iter()
            .find(|m| m.kind == MediaKind::Video)
            .unwrap();
        let key = video.crypto[0].key_b64.clone();
        if per_leg {
            assert_ne!(key, RECEIVER_KEYS[i], "the relay keys each receiver leg");
            assert_ne!(key, SENDER_KEY);
        } else {
            assert_eq!(key, SENDER_KEY, "a=crypto passes through end to end");
        }
        let sdp = dir.join(format!("recv{i}.sdp"));
        std::fs::write(&sdp, video_sdp(&format!("viewer{i}"), *port, &key, None)).unwrap();
        let out = dir.join(format!("out{i}.mkv"));
        receivers.push((spawn_receiver(&sdp, &out), out));
    }

    // The camera's member asks to transmit and is granted with its own SSRC.
    let req = TcMessage::new(MessageKind::TransmissionRequest, SSRC)
        .to_vec(&EmitOptions::default())
        .unwrap();
    ctl.send_to(&req, relay.control.expect("control channel"))
        .unwrap();
    let mut buf = [0u8; 1500];
    let granted = (0..25).find_map(|_| {
        let (n, _) = ctl.recv_from(&mut buf).ok()?;
        tc::messages(&buf[..n])
            .flatten()
            .find(|m| m.kind == MessageKind::TransmissionGranted)
            .map(|m| m.fields.video_ssrc)
    });
    assert_eq!(granted, Some(Some(SSRC)), "granted with the announced SSRC");

    std::thread::sleep(Duration::from_millis(700));
    let sender = send(relay.video);
    assert!(
        sender.status.success(),
        "sender: {}",
        String::from_utf8_lossy(&sender.stderr)
    );
    for (i, (r, out)) in receivers.into_iter().enumerate() {
        let got = r.wait_with_output().expect("receiver exits");
        assert!(
            got.status.success(),
            "receiver {i}: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert_eq!(frames(&out), FRAMES, "receiver {i} decodes every frame");
    }
    let summary = engine.group_call(call_id).expect("the call runs");
    let camera = &summary.members[0];
    assert!(camera.transmitting);
    assert_eq!(
        camera
            .counters
            .dropped(mcvideo_relay::relay::DropReason::AuthFailure),
        0
    );
    for m in &summary.members[1..] {
        assert!(m.counters.packets_out > 100, "{m:?}");
    }
    engine.release_group_call(call_id).expect("released");
    engine.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ffmpeg_group_one_sender_three_receivers_end_to_end() {
    group_through_relay(MediaSecurity::EndToEnd, "ffmpeg-group-e2e", 49_500);
}

#[test]
fn ffmpeg_group_one_sender_three_receivers_per_leg() {
    group_through_relay(MediaSecurity::PerLeg, "ffmpeg-group-per-leg", 49_600);
}
