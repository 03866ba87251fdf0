//! A group video call of 5 through the engine over real UDP sockets on 127.0.0.1: members ask
//! to transmit on their MCVideo control channels; A is granted, B queued; A's video reaches
//! every other member, byte for byte in end_to_end and re-encrypted per receiver in per_leg,
//! and nothing of B's; A ends, B is granted and its video reaches the others. A member removed
//! mid-call gets nothing more; release gives every port back. Members' SDP directions decide
//! who may transmit and who is sent media, in userspace and through the kernel fast path.
//!
//! Ports 49_200–49_399 (no other test uses them).
#![allow(clippy::disallowed_methods)] // real sockets: the test waits by the clock

mod common;
use common::net::*;
use mcvideo_relay::control::call::{CallEvent, CallEventKind};
use mcvideo_relay::control::{MediaSecurity, ReleaseReason};
use mcvideo_relay::keys::{MasterKey, SrtpSuite};
use mcvideo_relay::relay::{
    CreateGroupCall, Engine, EngineConfig, GroupCallCreated, GroupMemberSpec,
};
use mcvideo_relay::sdp::{MediaKind, SessionDescription};
use mcvideo_relay::srtp::SrtpContext;
use mcvideo_relay::wire::rtp::RtpPacket;
use mcvideo_relay::wire::tc::{self, MessageKind, TcMessage};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

const NAMES: [&str; 5] = ["A", "B", "C", "D", "E"];
const PACKETS: u16 = 30;

fn ssrc(i: usize) -> u32 {
    0x1000_0000 + i as u32 * 0x111
}

/// Member `i`'s own SRTP key (per_leg): 16 + 12 octets for AEAD_AES_128_GCM.
fn member_key(i: usize) -> MasterKey {
    MasterKey {
        suite: SrtpSuite::AeadAes128Gcm,
        material: (0..28)
            .map(|b| (b as u8).wrapping_mul(7) ^ (i as u8 + 1))
            .collect(),
    }
}

struct Member {
    name: &'static str,
    peer: Peer,
    video: SocketAddr,
    control: SocketAddr,
    /// Per_leg: the member's sending context and the relay's key toward it.
    tx: Option<SrtpContext>,
    rx_key: Option<MasterKey>,
}

impl Member {
    fn send_tc(&self, msg: &TcMessage<'_>) {
        self.peer.send_tc(self.control, msg);
    }

    /// Waits for a control message of `kind`, skipping others.
    fn expect(&self, kind: MessageKind) -> Vec<u8> {
        let until = Instant::now() + Duration::from_secs(3);
        let mut buf = [0u8; 2048];
        while Instant::now() < until {
            self.peer
                .ctl
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let Ok((n, _)) = self.peer.ctl.recv_from(&mut buf) else {
                continue;
            };
            for m in tc::messages(&buf[..n]).flatten() {
                if m.kind == kind {
                    return buf[..n].to_vec();
                }
            }
        }
        panic!("{}: no {kind:?} in time", self.name);
    }

    /// Sends `PACKETS` RTP packets with its own SSRC (protected in per_leg).
    fn send_video(&mut self, i: usize, first_seq: u16, count: u16) {
        for seq in first_seq..first_seq + count {
            let mut p = rtp_packet(seq, ssrc(i), 400);
            if let Some(ctx) = self.tx.as_mut() {
                let len = p.len();
                p.resize(len + 64, 0);
                let n = ctx.protect_rtp(&mut p, len).unwrap();
                p.truncate(n);
            }
            self.peer.rtp.send_to(&p, self.video).unwrap();
            std::thread::sleep(Duration::from_micros(300));
        }
    }
}

fn engine() -> Engine {
    engine_with(mcvideo_relay::relay::KernelOffload::Off)
}

fn engine_with(kernel_offload: mcvideo_relay::relay::KernelOffload) -> Engine {
    Engine::start(EngineConfig {
        port_min: 49_200,
        port_max: 49_399,
        workers: 2,
        kernel_offload,
        ..EngineConfig::default()
    })
    .expect("engine starts")
}

fn setup(engine: &Engine, id: &str, security: MediaSecurity) -> (GroupCallCreated, Vec<Member>) {
    let per_leg = security == MediaSecurity::PerLeg;
    let peers: Vec<Peer> = (0..5).map(|_| Peer::new()).collect();
    let specs = peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (proto, crypto) = if per_leg {
                (
                    "RTP/SAVP",
                    format!(
                        "a=crypto:1 AEAD_AES_128_GCM inline:{}\r\n",
                        member_key(i).to_base64()
                    ),
                )
            } else {
                ("RTP/AVP", String::new())
            };
            GroupMemberSpec {
                mcvideo_id: NAMES[i].into(),
                sdp_offer: p.sdp(NAMES[i], proto, Some(ssrc(i)), true, &crypto),
                priority: 5,
                receive_only: false,
                tc_key: None,
            }
        })
        .collect();
    let created = engine
        .create_group_call(CreateGroupCall {
            call_id: Some(id.into()),
            group_id: "sip:group-1@mcx.example".into(),
            media_security: security,
            max_transmitters: None,
            max_streams_per_receiver: None,
            reception_mode: None,
            members: specs,
        })
        .expect("create_group_call");
    assert_eq!(created.members.len(), 5);
    let members = peers
        .into_iter()
        .zip(&created.members)
        .enumerate()
        .map(|(i, (peer, a))| {
            assert_eq!(a.mcvideo_id, NAMES[i]);
            let r = RelayAddrs::from_sdp(&a.sdp_answer);
            let d = SessionDescription::parse(&a.sdp_answer).unwrap();
            let video = d
                .media()
                .iter()
                .find(|m| m.kind == MediaKind::Video)
                .unwrap();
            let rx_key = per_leg.then(|| {
                let c = video
                    .crypto
                    .first()
                    .expect("the relay's a=crypto in per_leg");
                let k = MasterKey::from_base64(SrtpSuite::AeadAes128Gcm, &c.key_b64).unwrap();
                assert_ne!(k, member_key(i), "the relay answers with its own key");
                k
            });
            if !per_leg {
                assert!(video.crypto.is_empty());
            }
            Member {
                name: NAMES[i],
                peer,
                video: r.video,
                control: r.control.expect("a control channel in the answer"),
                tx: per_leg.then(|| SrtpContext::new(&member_key(i))),
                rx_key,
            }
        })
        .collect();
    (created, members)
}

/// Member `i` of an end_to_end group without SRTP, from its SDP answer.
fn plain_member(peer: Peer, sdp_answer: &str, i: usize) -> Member {
    let r = RelayAddrs::from_sdp(sdp_answer);
    Member {
        name: NAMES[i],
        peer,
        video: r.video,
        control: r.control.expect("a control channel in the answer"),
        tx: None,
        rx_key: None,
    }
}

/// Every member of `created`, in order, on `peers`.
fn plain_members(peers: Vec<Peer>, created: &GroupCallCreated) -> Vec<Member> {
    peers
        .into_iter()
        .zip(&created.members)
        .enumerate()
        .map(|(i, (peer, a))| plain_member(peer, &a.sdp_answer, i))
        .collect()
}

type Collecting = Vec<(
    std::thread::JoinHandle<Vec<(Vec<u8>, SocketAddr)>>,
    Option<MasterKey>,
    &'static str,
)>;

/// Starts collecting on every member's video socket.
fn listen(members: &[Member], window: Duration) -> Collecting {
    members
        .iter()
        .map(|m| {
            (
                collect(&m.peer.rtp, window, Duration::from_millis(300)),
                m.rx_key.clone(),
                m.name,
            )
        })
        .collect()
}

/// What receivers got: per member, the (SSRC, seq) of every RTP packet (decrypted in
/// per_leg), checking the bytes against what the transmitter sent.
fn received(c: Collecting) -> Vec<Vec<(u32, u16)>> {
    c.into_iter()
        .map(|(h, key, name)| {
            let mut ctx = key.as_ref().map(SrtpContext::new);
            h.join()
                .unwrap()
                .into_iter()
                .map(|(mut b, _)| {
                    if let Some(ctx) = ctx.as_mut() {
                        let n = ctx
                            .unprotect_rtp(&mut b)
                            .expect("decrypts with the relay's key");
                        b.truncate(n);
                    }
                    let p = RtpPacket::new_checked(&b[..]).expect("RTP");
                    let (seq, ssrc) = (p.sequence_number(), p.ssrc());
                    assert_eq!(b, rtp_packet(seq, ssrc, 400), "{name}: payload intact");
                    (ssrc, seq)
                })
                .collect()
        })
        .collect()
}

fn request(m: &Member, i: usize) {
    let mut r = TcMessage::new(MessageKind::TransmissionRequest, ssrc(i));
    r.fields.transmission_priority = Some(5);
    m.send_tc(&r);
}

fn events_until(rx: &mut broadcast::Receiver<CallEvent>, want: &str) -> Vec<CallEventKind> {
    let until = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while Instant::now() < until {
        match rx.try_recv() {
            Ok(ev) => {
                let done = ev.kind.name() == want;
                got.push(ev.kind);
                if done {
                    return got;
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    panic!("no {want} event in time; got {got:?}");
}

fn two_members_transmit_in_turn(security: MediaSecurity, id: &str) {
    transmit_in_turn(engine(), security, id);
}

/// Whether the kernel fast path runs here (root, the feature); the reason printed if not.
fn kernel_here(test: &str) -> bool {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !cfg!(feature = "kernel-offload") || !root {
        eprintln!("SKIPPED {test}: needs root and the kernel-offload feature");
        return false;
    }
    true
}

/// What a receiver got, in sequence order where the kernel fast path took the stream over:
/// packets already queued at the relay's socket when it did are sent after the first ones the
/// kernel forwarded (a few places out of order once, as with any relay that hands a stream to
/// the kernel; a receiver's jitter buffer puts them back). Every packet once, none twice.
fn in_order(got: &[(u32, u16)], kernel: bool) -> Vec<(u32, u16)> {
    let mut v = got.to_vec();
    if kernel {
        v.sort_unstable();
    }
    v
}

fn transmit_in_turn(engine: Engine, security: MediaSecurity, id: &str) {
    let kernel = engine.kernel_offload_active();
    let mut events = engine.subscribe();
    let (created, mut m) = setup(&engine, id, security);
    let evs = events_until(&mut events, "transmission.idle");
    let joined = evs
        .iter()
        .filter(|e| matches!(e, CallEventKind::ParticipantJoined { .. }))
        .count();
    assert_eq!(joined, 5, "{evs:?}");
    for x in &m {
        x.expect(MessageKind::TransmissionIdle);
    }

    // A asks and is granted with its own SSRC; the others are told; B asks and is queued.
    request(&m[0], 0);
    let g = m[0].expect(MessageKind::TransmissionGranted);
    assert_eq!(
        TcMessage::parse(&g).unwrap().fields.video_ssrc,
        Some(ssrc(0))
    );
    for x in &m[1..] {
        let n = x.expect(MessageKind::MediaTransmissionNotification);
        let n = TcMessage::parse(&n).unwrap();
        assert_eq!(n.fields.transmitting_user_id, Some("A"));
        assert_eq!(n.fields.video_ssrc, Some(ssrc(0)));
    }
    request(&m[1], 1);
    m[1].expect(MessageKind::QueuePositionInfo);
    let evs = events_until(&mut events, "transmission.queued");
    assert!(
        evs.iter()
            .any(|e| matches!(e, CallEventKind::MemberGranted { member, .. } if &**member == "A")),
        "{evs:?}"
    );
    let summary = engine.group_call(&created.call_id).expect("summary");
    assert_eq!(summary.transmissions.len(), 1);
    assert_eq!(summary.transmissions[0].mcvideo_id, "A");
    assert_eq!(summary.transmissions[0].video_ssrc.get(), ssrc(0));
    assert_eq!(summary.queue.len(), 1);
    assert_eq!(summary.queue[0].mcvideo_id, "B");

    // A transmits, B (not granted) sends too: everyone else gets exactly A's packets.
    let c = listen(&m, Duration::from_secs(2));
    m[0].send_video(0, 1, PACKETS);
    m[1].send_video(1, 1, PACKETS);
    let collecting = received(c);
    if kernel {
        // A's source latched, its SSRC known: the rest of its packets went to the four
        // others in the kernel, a copy each.
        let st = engine.stats();
        assert!(st.kernel_offload_packets > 0, "through the kernel: {st:?}");
        assert_eq!(st.kernel_offload_legs, 1, "one entry, A's");
    }
    let want: Vec<(u32, u16)> = (1..=PACKETS).map(|q| (ssrc(0), q)).collect();
    assert!(
        collecting[0].is_empty(),
        "A gets nothing back: {:?}",
        collecting[0]
    );
    for (i, got) in collecting.iter().enumerate().skip(1) {
        assert_eq!(
            in_order(got, kernel),
            want,
            "{} gets exactly A's packets",
            NAMES[i]
        );
    }
    // B kept sending without permission: Revoked #3.
    let revoked = m[1].expect(MessageKind::TransmissionRevoked);
    let revoked = TcMessage::parse(&revoked).unwrap();
    assert_eq!(revoked.fields.reject_cause.map(|c| c.code), Some(3));
    let s = engine.group_call(&created.call_id).unwrap();
    let a = s.members.iter().find(|x| x.mcvideo_id == "A").unwrap();
    assert_eq!(a.quality[0].0, MediaKind::Video);
    assert_eq!(
        a.quality[0].1.packets,
        u64::from(PACKETS),
        "A's media quality"
    );
    assert!(a.counters.packets_in >= u64::from(PACKETS));
    let b = s.members.iter().find(|x| x.mcvideo_id == "B").unwrap();
    assert_eq!(
        b.counters
            .dropped(mcvideo_relay::relay::DropReason::NotGranted),
        u64::from(PACKETS),
        "B's video dropped, counted"
    );
    assert!(s.tc.unpermitted_media_packets >= u64::from(PACKETS) - 4);

    // A ends: End Response to A, B is granted.
    m[0].send_tc(&TcMessage::new(
        MessageKind::TransmissionEndRequest,
        ssrc(0),
    ));
    m[0].expect(MessageKind::TransmissionEndResponse);
    let g = m[1].expect(MessageKind::TransmissionGranted);
    assert_eq!(
        TcMessage::parse(&g).unwrap().fields.video_ssrc,
        Some(ssrc(1))
    );
    let c = listen(&m, Duration::from_secs(2));
    m[1].send_video(1, 100, PACKETS);
    m[0].send_video(0, 100, PACKETS); // A no longer holds the grant
    let collecting = received(c);
    let want: Vec<(u32, u16)> = (100..100 + PACKETS).map(|q| (ssrc(1), q)).collect();
    assert!(collecting[1].is_empty(), "B gets nothing back");
    for (i, got) in collecting.iter().enumerate() {
        if i != 1 {
            assert_eq!(
                in_order(got, kernel),
                want,
                "{} gets exactly B's packets",
                NAMES[i]
            );
        }
    }

    // E is removed mid-call: it gets nothing more; the others still get B's video.
    engine
        .remove_group_member(&created.call_id, "E")
        .expect("remove E");
    let evs = events_until(&mut events, "participant.left");
    assert!(evs
        .iter()
        .any(|e| matches!(e, CallEventKind::ParticipantLeft { member } if &**member == "E")));
    let c = listen(&m, Duration::from_millis(1500));
    m[1].send_video(1, 200, 10);
    let collecting = received(c);
    assert!(collecting[4].is_empty(), "E gets nothing after it left");
    for i in [0, 2, 3] {
        assert_eq!(collecting[i].len(), 10, "{} still receives", NAMES[i]);
    }
    assert_eq!(
        engine.group_call(&created.call_id).unwrap().members.len(),
        4
    );

    // Release: call.released, every port back.
    let fin = engine
        .release_group_call(&created.call_id)
        .expect("release");
    assert_eq!(fin.release_reason, Some(ReleaseReason::Released));
    let evs = events_until(&mut events, "call.released");
    assert!(evs.iter().any(|e| matches!(
        e,
        CallEventKind::Released {
            reason: ReleaseReason::Released
        }
    )));
    assert!(engine.group_call(&created.call_id).is_none());
    let until = Instant::now() + Duration::from_secs(2);
    while engine.stats().ports_in_use != 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = engine.stats();
    assert_eq!(stats.ports_in_use, 0, "every port is back");
    assert_eq!(stats.kernel_offload_legs, 0, "nothing left in the kernel");
    if kernel {
        // B's turn and the three receivers after E left went through the kernel too.
        assert!(
            stats.kernel_offload_packets >= u64::from(PACKETS),
            "{stats:?}"
        );
    }
    assert_eq!(
        stats.by_kind.get("group").map(|k| (k.active, k.created)),
        Some((0, 1))
    );
    assert!(stats.group_members.packets_out >= u64::from(PACKETS) * 8);
    // Control messages are counted as they arrive, before the step they ask for.
    assert_eq!(stats.tc_received.get(MessageKind::TransmissionRequest), 2);
    assert_eq!(
        stats.tc_received.get(MessageKind::TransmissionEndRequest),
        1
    );
    assert!(stats.tc_sent.get(MessageKind::TransmissionGranted) >= 2);
    engine.shutdown();
}

#[test]
fn group_of_five_two_transmit_in_turn_end_to_end() {
    two_members_transmit_in_turn(MediaSecurity::EndToEnd, "group-e2e");
}

/// The same with the kernel fast path (end_to_end is what it forwards): the grant, the queue,
/// the removal of a member, each reaches the kernel before the message that announces it.
#[test]
fn group_of_five_two_transmit_in_turn_through_the_kernel() {
    if !kernel_here("group_of_five_two_transmit_in_turn_through_the_kernel") {
        return;
    }
    let engine = engine_with(mcvideo_relay::relay::KernelOffload::Required);
    assert!(engine.kernel_offload_active());
    transmit_in_turn(engine, MediaSecurity::EndToEnd, "group-kernel");
}

#[test]
fn group_of_five_two_transmit_in_turn_per_leg() {
    two_members_transmit_in_turn(MediaSecurity::PerLeg, "group-per-leg");
}

#[test]
fn group_call_setup_errors_are_clear() {
    let engine = engine();
    let p = Peer::new();
    let spec = |id: &str, sdp: String| GroupMemberSpec {
        mcvideo_id: id.into(),
        sdp_offer: sdp,
        priority: 1,
        receive_only: false,
        tc_key: None,
    };
    let req = |call_id: &str, members: Vec<GroupMemberSpec>| CreateGroupCall {
        call_id: Some(call_id.into()),
        group_id: "g".into(),
        media_security: MediaSecurity::EndToEnd,
        max_transmitters: None,
        max_streams_per_receiver: None,
        reception_mode: None,
        members,
    };
    let good = |name: &str| p.sdp(name, "RTP/AVP", None, true, "");
    let e = engine.create_group_call(req("g1", vec![])).unwrap_err();
    assert_eq!(e.code(), "bad_request");
    let e = engine
        .create_group_call(req("g1", vec![spec("A", good("a")), spec("A", good("a"))]))
        .unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
    let e = engine
        .create_group_call(req("g1", vec![spec("A", "v=0\r\nnonsense".into())]))
        .unwrap_err();
    assert!(e.to_string().contains("member A"), "{e}");
    assert_eq!(engine.stats().ports_in_use, 0, "nothing kept");
    let e = engine
        .create_group_call(req(
            "g1",
            vec![spec("A", good("a")), spec("B", "v=0\r\nm=video x".into())],
        ))
        .unwrap_err();
    assert!(e.to_string().contains("member B"), "{e}");
    assert_eq!(engine.stats().ports_in_use, 0, "A's ports went back");
    let ok = engine
        .create_group_call(req("g1", vec![spec("A", good("a")), spec("B", good("b"))]))
        .expect("created");
    let e = engine
        .create_group_call(req("g1", vec![spec("A", good("a"))]))
        .unwrap_err();
    assert_eq!(e.code(), "duplicate_call_id");
    let e = engine
        .add_group_member(&ok.call_id, spec("B", good("b")))
        .unwrap_err();
    assert!(e.to_string().contains("already"), "{e}");
    let e = engine
        .add_group_member("nope", spec("C", good("c")))
        .unwrap_err();
    assert_eq!(e.code(), "unknown_call");
    let e = engine.remove_group_member(&ok.call_id, "Z").unwrap_err();
    assert!(e.to_string().contains("no member Z"), "{e}");
    let late = engine
        .add_group_member(&ok.call_id, spec("C", good("c")))
        .expect("a late joiner");
    assert!(RelayAddrs::from_sdp(&late.sdp_answer).control.is_some());
    assert_eq!(engine.group_call(&ok.call_id).unwrap().members.len(), 3);
    assert_eq!(
        engine.release_call(&ok.call_id).unwrap_err().code(),
        "wrong_state"
    );
    engine.release_group_call(&ok.call_id).expect("released");
    assert_eq!(
        engine.release_group_call(&ok.call_id).unwrap_err().code(),
        "unknown_call"
    );
    engine.shutdown();
}

#[test]
fn late_joiner_receives_the_running_transmission_then_t1_releases_the_idle_call() {
    let engine = Engine::start(EngineConfig {
        port_min: 49_200,
        port_max: 49_399,
        workers: 1,
        group: mcvideo_relay::control::server::TcConfig {
            t1_inactivity: Duration::from_millis(800),
            ..Default::default()
        },
        ..EngineConfig::default()
    })
    .expect("engine starts");
    let mut events = engine.subscribe();
    let peers: Vec<Peer> = (0..4).map(|_| Peer::new()).collect();
    let spec = |i: usize| GroupMemberSpec {
        mcvideo_id: NAMES[i].into(),
        sdp_offer: peers[i].sdp(NAMES[i], "RTP/AVP", Some(ssrc(i)), true, ""),
        priority: 5,
        receive_only: false,
        tc_key: None,
    };
    let created = engine
        .create_group_call(CreateGroupCall {
            call_id: Some("group-late".into()),
            group_id: "g".into(),
            media_security: MediaSecurity::EndToEnd,
            max_transmitters: None,
            max_streams_per_receiver: None,
            reception_mode: None,
            members: (0..3).map(spec).collect(),
        })
        .expect("created");
    let late_spec = spec(3);
    let mut peers = peers.into_iter();
    let mut m: Vec<Member> = created
        .members
        .iter()
        .enumerate()
        .map(|(i, a)| plain_member(peers.next().unwrap(), &a.sdp_answer, i))
        .collect();
    request(&m[0], 0);
    m[0].expect(MessageKind::TransmissionGranted);

    // D joins while A transmits: it is told who transmits and gets A's video at once.
    let late = engine
        .add_group_member("group-late", late_spec)
        .expect("late joiner");
    m.push(plain_member(peers.next().unwrap(), &late.sdp_answer, 3));
    let n = m[3].expect(MessageKind::MediaTransmissionNotification);
    let n = TcMessage::parse(&n).unwrap();
    assert_eq!(n.fields.transmitting_user_id, Some("A"));
    assert_eq!(n.fields.video_ssrc, Some(ssrc(0)));
    let c = listen(&m, Duration::from_secs(2));
    m[0].send_video(0, 1, 10);
    let got = received(c);
    for (i, g) in got.iter().enumerate().skip(1) {
        assert_eq!(g.len(), 10, "{} receives A", NAMES[i]);
    }

    // A ends; nobody transmits; T1 runs out: the call is released (hang_timer), ports back.
    m[0].send_tc(&TcMessage::new(
        MessageKind::TransmissionEndRequest,
        ssrc(0),
    ));
    m[0].expect(MessageKind::TransmissionEndResponse);
    let evs = events_until(&mut events, "call.released");
    assert!(
        evs.iter().any(|e| matches!(
            e,
            CallEventKind::Released {
                reason: ReleaseReason::HangTimer
            }
        )),
        "{evs:?}"
    );
    assert!(evs
        .iter()
        .any(|e| matches!(e, CallEventKind::TransmissionIdle)));
    let until = Instant::now() + Duration::from_secs(2);
    while engine.stats().ports_in_use != 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(engine.stats().ports_in_use, 0);
    assert!(engine.group_call("group-late").is_none());

    // Shutdown releases a live group call with its event.
    let p = Peer::new();
    engine
        .create_group_call(CreateGroupCall {
            call_id: Some("group-shutdown".into()),
            group_id: "g".into(),
            media_security: MediaSecurity::EndToEnd,
            max_transmitters: None,
            max_streams_per_receiver: None,
            reception_mode: None,
            members: vec![GroupMemberSpec {
                mcvideo_id: "A".into(),
                sdp_offer: p.sdp("a", "RTP/AVP", None, true, ""),
                priority: 0,
                receive_only: false,
                tc_key: None,
            }],
        })
        .expect("created");
    engine.shutdown();
    let evs = events_until(&mut events, "call.released");
    assert!(evs.iter().any(|e| matches!(
        e,
        CallEventKind::Released {
            reason: ReleaseReason::Shutdown
        }
    )));
    assert_eq!(engine.stats().ports_in_use, 0);
}

#[test]
fn manual_reception_then_a_stronger_request_preempts() {
    preempts(engine());
}

/// The same through the kernel fast path: reception control and the pre-emption reach the
/// kernel before the messages that announce them.
#[test]
fn manual_reception_and_preemption_through_the_kernel() {
    if !kernel_here("manual_reception_and_preemption_through_the_kernel") {
        return;
    }
    preempts(engine_with(mcvideo_relay::relay::KernelOffload::Required));
}

fn preempts(engine: Engine) {
    let kernel = engine.kernel_offload_active();
    let mut events = engine.subscribe();
    let peers: Vec<Peer> = (0..3).map(|_| Peer::new()).collect();
    let created = engine
        .create_group_call(CreateGroupCall {
            call_id: Some("group-manual".into()),
            group_id: "g".into(),
            media_security: MediaSecurity::EndToEnd,
            max_transmitters: Some(1),
            max_streams_per_receiver: None,
            reception_mode: Some(mcvideo_relay::control::server::ReceptionMode::Manual),
            members: peers
                .iter()
                .enumerate()
                .map(|(i, p)| GroupMemberSpec {
                    mcvideo_id: NAMES[i].into(),
                    sdp_offer: p.sdp(NAMES[i], "RTP/AVP", Some(ssrc(i)), true, ""),
                    priority: if i == 2 { 9 } else { 5 },
                    receive_only: false,
                    tc_key: None,
                })
                .collect(),
        })
        .expect("created");
    let mut m = plain_members(peers, &created);
    request(&m[0], 0);
    m[0].expect(MessageKind::TransmissionGranted);
    m[1].expect(MessageKind::MediaTransmissionNotification);

    // Manual reception: nobody receives A until it asks.
    let c = listen(&m, Duration::from_millis(800));
    m[0].send_video(0, 1, 5);
    assert!(
        received(c).iter().all(Vec::is_empty),
        "nobody asked to receive"
    );
    m[1].send_tc(&TcMessage::new(MessageKind::ReceiveMediaRequest, ssrc(1)));
    m[1].expect(MessageKind::ReceiveMediaResponse);
    m[0].expect(MessageKind::MediaReceptionNotification);
    let c = listen(&m, Duration::from_secs(2));
    m[0].send_video(0, 10, 10);
    let got = received(c);
    assert_eq!(got[1].len(), 10, "B asked and receives");
    assert!(got[2].is_empty(), "C did not ask");
    if kernel {
        assert!(
            engine.stats().kernel_offload_packets > 0,
            "A to B in the kernel"
        );
    }

    // C, stronger, asks at the cap: A is pre-empted (Revoked #4), C granted.
    let mut r = TcMessage::new(MessageKind::TransmissionRequest, ssrc(2));
    r.fields.transmission_priority = Some(9);
    m[2].send_tc(&r);
    let revoked = m[0].expect(MessageKind::TransmissionRevoked);
    let revoked = TcMessage::parse(&revoked).unwrap();
    assert_eq!(revoked.fields.reject_cause.map(|c| c.code), Some(4));
    m[2].expect(MessageKind::TransmissionGranted);
    let evs = events_until(&mut events, "transmission.preempted");
    let pre = evs.last().unwrap();
    assert!(
        matches!(pre, CallEventKind::TransmissionPreempted { member, by } if &**member == "A" && &**by == "C"),
        "{pre:?}"
    );
    let s = engine.group_call("group-manual").unwrap();
    assert_eq!(s.transmissions[0].mcvideo_id, "C");
    assert!(s.tc.preemptions >= 1);

    // A keeps sending after its Revoked: nothing of it reaches anyone, every packet counted.
    let dropped = |engine: &Engine| {
        let s = engine.group_call("group-manual").unwrap();
        let a = s.members.iter().find(|x| x.mcvideo_id == "A").unwrap();
        a.counters
            .dropped(mcvideo_relay::relay::DropReason::NotGranted)
    };
    let before = dropped(&engine);
    let c = listen(&m, Duration::from_millis(800));
    m[0].send_video(0, 100, 10);
    assert!(
        received(c).iter().all(Vec::is_empty),
        "nothing of A after the pre-emption"
    );
    assert_eq!(
        dropped(&engine) - before,
        10,
        "A's packets dropped, counted"
    );
    engine.shutdown();
}

/// A minimal RTCP sender report from `ssrc`.
fn sender_report(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x11; 8]); // NTP
    p.extend_from_slice(&[0, 0, 0x10, 0]); // RTP timestamp
    p.extend_from_slice(&10u32.to_be_bytes()); // packets
    p.extend_from_slice(&4000u32.to_be_bytes()); // octets
    p
}

#[test]
fn keyframe_request_on_grant_and_sender_reports_reach_the_receivers() {
    let engine = engine();
    let (created, m) = setup(&engine, "group-rtcp", MediaSecurity::EndToEnd);
    let relay_rtcp: Vec<SocketAddr> = created
        .members
        .iter()
        .map(|a| RelayAddrs::from_sdp(&a.sdp_answer).video_rtcp)
        .collect();
    request(&m[0], 0);
    m[0].expect(MessageKind::TransmissionGranted);
    // The relay asks the new transmitter for a keyframe, on its RTCP leg, naming its SSRC.
    let (pli, from) = recv(&m[0].peer.rtcp, Duration::from_secs(2));
    assert_eq!((pli[0] & 0x1f, pli[1]), (1, 206), "a PLI: {pli:?}");
    assert_eq!(&pli[8..12], &ssrc(0).to_be_bytes());
    assert_eq!(
        from, relay_rtcp[0],
        "from the transmitter's own relay RTCP port"
    );
    // The transmitter's sender report reaches every receiver on its RTCP port, from the
    // receiver's own relay RTCP port.
    let handles: Vec<_> = m[1..]
        .iter()
        .map(|x| {
            collect(
                &x.peer.rtcp,
                Duration::from_secs(2),
                Duration::from_millis(300),
            )
        })
        .collect();
    m[0].peer
        .rtcp
        .send_to(&sender_report(ssrc(0)), relay_rtcp[0])
        .unwrap();
    for (i, h) in handles.into_iter().enumerate() {
        let got = h.join().unwrap();
        let srs: Vec<_> = got.iter().filter(|(b, _)| b.get(1) == Some(&200)).collect();
        assert_eq!(srs.len(), 1, "{} gets A's SR: {got:?}", NAMES[i + 1]);
        assert_eq!(srs[0].1, relay_rtcp[i + 1]);
        assert_eq!(&srs[0].0[4..8], &ssrc(0).to_be_bytes());
    }
    engine.shutdown();
}

/// A granted member that floods Transmission Requests over its control channel is answered
/// from its reply budget, as a private call's transmitter is: its Granted confirmations stay
/// within the budget (a burst, then a refill per second) and the rest are counted as
/// `rate_limited`. They once bypassed the budget: one Granted per request.
#[test]
fn a_granted_members_request_flood_is_answered_within_its_reply_budget() {
    const FLOOD: u64 = 400;
    let engine = engine();
    let (_, members) = setup(&engine, "g-flood", MediaSecurity::EndToEnd);
    let a = &members[0];
    request(a, 0);
    a.expect(MessageKind::TransmissionGranted);
    let started = Instant::now();
    for _ in 0..FLOOD {
        request(a, 0);
        std::thread::sleep(Duration::from_micros(50)); // within the sockets' buffers
    }
    let mut granted = 0u64;
    let mut buf = [0u8; 2048];
    a.peer
        .ctl
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    while let Ok((n, _)) = a.peer.ctl.recv_from(&mut buf) {
        let kinds = tc::messages(&buf[..n]).flatten().map(|m| m.kind);
        granted += kinds
            .filter(|k| *k == MessageKind::TransmissionGranted)
            .count() as u64;
    }
    let tc = engine.group_call("g-flood").expect("the call runs").tc;
    // Burst 40, then 20 a second (TcConfig's defaults) over the flood and the wait after it.
    let budget = 40 + (20.0 * started.elapsed().as_secs_f64()).ceil() as u64;
    assert!(granted <= budget, "{granted} Granted for {FLOOD} requests");
    // Every request the relay read after the first was answered or limited (a datagram lost
    // in a socket buffer was neither).
    let read = tc.received.get(MessageKind::TransmissionRequest) - 1;
    assert!(read >= budget, "{read} of {FLOOD} requests read");
    assert!(tc.rate_limited >= read - budget, "{tc:?}");
    engine.release_group_call("g-flood").unwrap();
}

/// Directions from the SDP offers: C offers `a=sendonly` (a publisher, as a WHIP browser does)
/// and D `a=recvonly` (a viewer). A's transmission reaches B and D but never C; C may transmit
/// and reaches A, B and D; D's Transmission Request is Rejected #5 (Receive only).
#[test]
fn a_sendonly_member_is_sent_nothing_and_a_recvonly_member_may_not_transmit() {
    directions(engine());
}

/// The same through the kernel fast path: the publisher has no entry as a receiver.
#[test]
fn a_sendonly_member_is_sent_nothing_through_the_kernel() {
    if !kernel_here("a_sendonly_member_is_sent_nothing_through_the_kernel") {
        return;
    }
    directions(engine_with(mcvideo_relay::relay::KernelOffload::Required));
}

/// C offers `a=sendonly`, D `a=recvonly` (see the test above).
fn directions(engine: Engine) {
    let peers: Vec<Peer> = (0..4).map(|_| Peer::new()).collect();
    let direction = ["", "", "a=sendonly\r\n", "a=recvonly\r\n"];
    let created = engine
        .create_group_call(CreateGroupCall {
            call_id: Some("group-directions".into()),
            group_id: "g".into(),
            media_security: MediaSecurity::EndToEnd,
            max_transmitters: None,
            max_streams_per_receiver: None,
            reception_mode: None,
            members: (0..4)
                .map(|i| GroupMemberSpec {
                    mcvideo_id: NAMES[i].into(),
                    sdp_offer: peers[i].sdp(NAMES[i], "RTP/AVP", Some(ssrc(i)), true, direction[i]),
                    priority: 5,
                    receive_only: false,
                    tc_key: None,
                })
                .collect(),
        })
        .expect("created");
    let answer_direction = |i: usize| {
        let d = SessionDescription::parse(&created.members[i].sdp_answer).unwrap();
        let v = d
            .media()
            .iter()
            .find(|m| m.kind == MediaKind::Video)
            .unwrap();
        (v.direction.sends(), v.direction.receives())
    };
    assert_eq!(
        answer_direction(2),
        (false, true),
        "recvonly toward the publisher"
    );
    assert_eq!(
        answer_direction(3),
        (true, false),
        "sendonly toward the viewer"
    );
    let mut m = plain_members(peers, &created);
    let n = usize::from(PACKETS);

    request(&m[0], 0);
    m[0].expect(MessageKind::TransmissionGranted);
    let c = listen(&m, Duration::from_secs(2));
    m[0].send_video(0, 1, PACKETS);
    let got: Vec<usize> = received(c).iter().map(Vec::len).collect();
    assert_eq!(
        got,
        [0, n, 0, n],
        "A's video reaches B and D, not the publisher C"
    );
    if engine.kernel_offload_active() {
        let st = engine.stats();
        assert!(st.kernel_offload_packets > 0, "through the kernel: {st:?}");
    }
    m[0].send_tc(&TcMessage::new(
        MessageKind::TransmissionEndRequest,
        ssrc(0),
    ));
    m[0].expect(MessageKind::TransmissionEndResponse);

    request(&m[3], 3);
    let rejected = m[3].expect(MessageKind::TransmissionRejected);
    let r = TcMessage::parse(&rejected).unwrap();
    assert_eq!(
        r.fields.reject_cause.map(|c| c.code),
        Some(5),
        "#5 Receive only"
    );

    request(&m[2], 2);
    m[2].expect(MessageKind::TransmissionGranted);
    let c = listen(&m, Duration::from_secs(2));
    m[2].send_video(2, 1, PACKETS);
    let got: Vec<usize> = received(c).iter().map(Vec::len).collect();
    assert_eq!(got, [n, n, 0, n], "the publisher reaches everyone else");
    engine.shutdown();
}
