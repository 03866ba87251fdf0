//! A whole video push through the engine over real UDP sockets on 127.0.0.1, with test clients
//! that speak MCVideo transmission control: request, acceptance, Granted to the caller,
//! Notification to the callee, video forwarded byte for byte, End Request → End Response +
//! End Notify, call released, events in order, ports reusable and no descriptor leaked.

mod common;
use common::net::*;
use mcvideo_relay::control::call::{AnswerCall, CallEventKind, CreateCall};
use mcvideo_relay::control::{MediaSecurity, ReleaseReason};
use mcvideo_relay::relay::{DropReason, Engine, EngineConfig};
use mcvideo_relay::wire::tc::{MessageKind, TcMessage};
use std::time::Duration;

const CALLER_VIDEO_SSRC: u32 = 0x1234_5678;

fn engine(port_min: u16) -> Engine {
    Engine::start(EngineConfig {
        port_min,
        port_max: port_min + 399,
        workers: 2,
        ..EngineConfig::default()
    })
    .expect("engine starts")
}

fn request(caller: &Peer, id: &str) -> CreateCall {
    CreateCall {
        call_id: Some(id.into()),
        caller_id: "sip:alice@mcx.example".into(),
        caller_sdp: caller.sdp("alice", "RTP/AVP", Some(CALLER_VIDEO_SSRC), true, ""),
        callee_id: "sip:bob@mcx.example".into(),
        video_push: true,
        video_pull: false,
        commencement_mode: None,
        media_security: MediaSecurity::EndToEnd,
        caller_tc_key: None,
        callee_interface: None,
        caller_interface: None,
    }
}

fn create(engine: &Engine, caller: &Peer, id: &str) -> mcvideo_relay::control::call::CallOffer {
    engine
        .create_call(CreateCall {
            call_id: Some(id.into()),
            caller_id: "sip:alice@mcx.example".into(),
            caller_sdp: caller.sdp("alice", "RTP/AVP", Some(CALLER_VIDEO_SSRC), true, ""),
            callee_id: "sip:bob@mcx.example".into(),
            video_push: true,
            video_pull: false,
            commencement_mode: None,
            media_security: MediaSecurity::EndToEnd,
            caller_tc_key: None,
            callee_interface: None,
            caller_interface: None,
        })
        .expect("create_call")
}

/// A released call's worker closes its sockets a moment later: wait for the ports.
fn create_when_ports_free(
    engine: &Engine,
    caller: &Peer,
    id: &str,
) -> mcvideo_relay::control::call::CallOffer {
    for _ in 0..200 {
        match engine.create_call(request(caller, id)) {
            Ok(o) => return o,
            Err(e) if e.code() == "no_ports_available" => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("{id}: {e}"),
        }
    }
    panic!("{id}: ports never came back");
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `cargo test` runs the tests of one file on threads of one process, and some tests here
/// count the process's descriptors (and memory): they run one at a time (nextest runs each test
/// in a process of its own anyway).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn whole_video_push_over_udp() {
    let _serial = one_at_a_time();
    let engine = engine(42_000);
    let mut events = engine.subscribe();
    let (caller, callee) = (Peer::new(), Peer::new());

    let offer = create(&engine, &caller, "push-1");
    let to_callee = RelayAddrs::from_sdp(&offer.sdp_offer);
    let answer = engine
        .accept_call(
            "push-1",
            AnswerCall {
                callee_sdp: callee.sdp("bob", "RTP/AVP", None, true, "a=recvonly\r\n"),
                callee_tc_key: None,
            },
        )
        .expect("accept_call");
    let to_caller = RelayAddrs::from_sdp(&answer.sdp_answer);
    assert_ne!(to_caller.video, to_callee.video, "one relay port per leg");

    // Granted to the caller, from the relay's caller-facing control port.
    let (g, from) = recv(&caller.ctl, Duration::from_secs(2));
    assert_eq!(Some(from), to_caller.control);
    let g = TcMessage::parse(&g).unwrap();
    assert_eq!(g.kind, MessageKind::TransmissionGranted);
    assert_eq!(g.fields.video_ssrc, Some(CALLER_VIDEO_SSRC));
    // Notification to the callee.
    let (n, from) = recv(&callee.ctl, Duration::from_secs(2));
    assert_eq!(Some(from), to_callee.control);
    let n = TcMessage::parse(&n).unwrap();
    assert_eq!(n.kind, MessageKind::MediaTransmissionNotification);
    assert_eq!(n.fields.permission_to_request, Some(0));

    // Video: 200 packets, forwarded byte for byte from the callee-facing port.
    let sent: Vec<Vec<u8>> = (0..200)
        .map(|i| rtp_packet(i, CALLER_VIDEO_SSRC, 1188))
        .collect();
    let collector = collect(
        &callee.rtp,
        Duration::from_secs(2),
        Duration::from_millis(300),
    );
    for (i, p) in sent.iter().enumerate() {
        caller.rtp.send_to(p, to_caller.video).unwrap();
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let got = collector.join().unwrap();
    assert_eq!(got.len(), sent.len(), "every packet forwarded");
    for ((g, from), s) in got.iter().zip(&sent) {
        assert_eq!(g, s, "byte for byte");
        assert_eq!(*from, to_callee.video);
    }
    // Plain RTP: the relay asked the caller for a keyframe when the grant started (PLI).
    let (pli, from) = recv(&caller.rtcp, Duration::from_secs(1));
    assert_eq!(from, to_caller.video_rtcp);
    let pli = mcvideo_relay::wire::rtcp::RtcpPacket::new_checked(&pli[..]).unwrap();
    assert_eq!(pli.kind(), mcvideo_relay::wire::rtcp::RtcpKind::Pli);
    assert_eq!(pli.media_ssrc(), Some(CALLER_VIDEO_SSRC));
    // RTCP both ways: the callee's RR reaches the caller's RTCP port.
    let rr = [0x80, 201, 0, 1, 0, 0, 0, 7];
    callee.rtcp.send_to(&rr, to_callee.video_rtcp).unwrap();
    let (r, _) = recv(&caller.rtcp, Duration::from_secs(1));
    assert_eq!(r, rr);

    // The caller ends its transmission.
    let mut end = TcMessage::new(MessageKind::TransmissionEndRequest, 0xa11ce);
    end.ack_required = true;
    caller.send_tc(to_caller.control.unwrap(), &end);
    let replies: Vec<MessageKind> = drain(&caller.ctl, Duration::from_millis(300))
        .iter()
        .map(|(b, _)| TcMessage::parse(b).unwrap().kind)
        .collect();
    assert_eq!(
        replies,
        [
            MessageKind::TransmissionControlAck,
            MessageKind::TransmissionEndResponse
        ]
    );
    let (e, _) = recv(&callee.ctl, Duration::from_secs(1));
    assert_eq!(
        TcMessage::parse(&e).unwrap().kind,
        MessageKind::TransmissionEndNotify
    );

    // Events, in order.
    let mut kinds = Vec::new();
    while let Ok(ev) = events.try_recv() {
        assert_eq!(&*ev.call_id, "push-1");
        kinds.push(ev.kind);
    }
    let reason = ReleaseReason::TransmissionCompleted;
    assert_eq!(
        kinds,
        [
            CallEventKind::Progress,
            CallEventKind::Established,
            CallEventKind::TransmissionGranted {
                audio_ssrc: kinds.get(2).map_or(Default::default(), |k| match k {
                    CallEventKind::TransmissionGranted { audio_ssrc, .. } => *audio_ssrc,
                    _ => Default::default(),
                }),
                video_ssrc: mcvideo_relay::Ssrc(CALLER_VIDEO_SSRC)
            },
            CallEventKind::MediaStarted,
            CallEventKind::TransmissionEnded { reason },
            CallEventKind::Released { reason },
        ]
    );
    assert!(engine.call("push-1").is_none(), "released calls are gone");
    let stats = engine.stats();
    assert_eq!(
        stats.caller.packets_in,
        200 + 1,
        "video plus the End Request"
    );
    assert_eq!(
        stats.callee.packets_out,
        200 + 2,
        "video plus Notification and End Notify"
    );
    assert_eq!(
        stats.caller.packets_out,
        1 + 1 + 2 + 1,
        "Granted, PLI, Ack + End Response, the RR"
    );
    assert_eq!(stats.calls_released.get("transmission_completed"), Some(&1));
    // Control messages are counted as they arrive (a regression: the counter once moved only
    // with what a step itself did, so received messages were never counted).
    assert_eq!(
        stats.tc_received.get(MessageKind::TransmissionEndRequest),
        1
    );
    assert_eq!(stats.tc_received.total(), 1);
    assert_eq!(stats.tc_sent.get(MessageKind::TransmissionGranted), 1);
    assert_eq!(stats.tc_sent.get(MessageKind::TransmissionEndNotify), 1);
    engine.shutdown();
}

#[test]
fn released_ports_are_reused_and_no_descriptor_leaks() {
    let _serial = one_at_a_time();
    // 10 port pairs; a call takes 4 (video pair and control port per leg): 60 cycles only
    // succeed if every released call's ports come back.
    let engine = Engine::start(EngineConfig {
        port_min: 42_400,
        port_max: 42_419,
        workers: 2,
        ..EngineConfig::default()
    })
    .unwrap();
    let callee = Peer::new();
    let caller = Peer::new();
    // Warm up (thread-local buffers, runtime internals).
    for i in 0..3 {
        let id = format!("warm-{i}");
        create_when_ports_free(&engine, &caller, &id);
        engine
            .accept_call(
                &id,
                AnswerCall {
                    callee_sdp: callee.sdp("bob", "RTP/AVP", None, true, ""),
                    callee_tc_key: None,
                },
            )
            .unwrap();
        engine.release_call(&id).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let (fds, ports) = (fd_count(), engine.stats().ports_in_use);
    assert_eq!(ports, 0);
    let mut seen_ports = std::collections::HashSet::new();
    for i in 0..60 {
        let id = format!("cycle-{i}");
        let offer = create_when_ports_free(&engine, &caller, &id);
        seen_ports.insert(RelayAddrs::from_sdp(&offer.sdp_offer).video.port());
        if i % 3 == 0 {
            engine.reject_call(&id).unwrap();
        } else {
            engine
                .accept_call(
                    &id,
                    AnswerCall {
                        callee_sdp: callee.sdp("bob", "RTP/AVP", None, true, ""),
                        callee_tc_key: None,
                    },
                )
                .unwrap();
            engine.release_call(&id).unwrap();
        }
    }
    // Workers close sockets asynchronously: wait until everything is back.
    for _ in 0..50 {
        if engine.stats().ports_in_use == 0 && fd_count() <= fds {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        engine.stats().ports_in_use,
        0,
        "every port back in the pool"
    );
    assert!(
        fd_count() <= fds,
        "descriptors: {} before, {} after",
        fds,
        fd_count()
    );
    assert!(
        seen_ports.len() < 60,
        "ports were reused ({} distinct)",
        seen_ports.len()
    );
    engine.shutdown();
}

#[test]
fn shutdown_releases_every_call_with_its_events() {
    let _serial = one_at_a_time();
    let engine = engine(42_800);
    let mut events = engine.subscribe();
    let (caller, callee) = (Peer::new(), Peer::new());
    for i in 0..4 {
        let id = format!("s{i}");
        create(&engine, &caller, &id);
        if i % 2 == 0 {
            engine
                .accept_call(
                    &id,
                    AnswerCall {
                        callee_sdp: callee.sdp("bob", "RTP/AVP", None, true, ""),
                        callee_tc_key: None,
                    },
                )
                .unwrap();
        }
    }
    engine.shutdown();
    let mut released = 0;
    while let Ok(ev) = events.try_recv() {
        if ev.kind
            == (CallEventKind::Released {
                reason: ReleaseReason::Shutdown,
            })
        {
            released += 1;
        }
    }
    assert_eq!(released, 4);
    assert_eq!(engine.stats().active_calls, 0);
    let _ = DropReason::ALL;
}
