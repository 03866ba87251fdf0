//! High availability through the engine, in one process on 127.0.0.1: a per_leg push runs on
//! engine A; A's workers send call images on every control-plane change and while media flows;
//! A dies (its calls dropped silently, its sockets closed, as a crash would); engine B adopts
//! the last image: it binds the same relay ports, the callee keeps receiving the caller's
//! video with zero authentication or replay failures, and the caller's Transmission End
//! Request gets End Response and End Notify from B, which releases the call once.

#![allow(clippy::disallowed_methods)] // real sockets on real time

mod common;
use common::net::*;
use mcvideo_relay::control::call::{AnswerCall, CallEventKind, CreateCall};
use mcvideo_relay::control::{MediaSecurity, ReleaseReason};
use mcvideo_relay::keys::{MasterKey, SrtpSuite};
use mcvideo_relay::relay::{CallImage, DropReason, Engine, EngineConfig, HaUpdate};
use mcvideo_relay::srtp::SrtpContext;
use mcvideo_relay::wire::tc::{MessageKind, TcMessage};
use std::time::{Duration, Instant};

const SSRC: u32 = 0x5eed_0002;
const CALLER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==";
const CALLEE_KEY: &str = "GxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIBAA==";

fn engine(port_min: u16) -> Engine {
    Engine::start(EngineConfig {
        port_min,
        port_max: port_min + 99,
        workers: 1,
        ..EngineConfig::default()
    })
    .unwrap()
}

fn srtp(b64: &str) -> SrtpContext {
    SrtpContext::new(&MasterKey::from_base64(SrtpSuite::AeadAes128Gcm, b64).unwrap())
}

fn latest(rx: &crossbeam_channel::Receiver<HaUpdate>, last: &mut Option<CallImage>) -> usize {
    let mut n = 0;
    while let Ok(u) = rx.try_recv() {
        if let HaUpdate::Put(img) = u {
            *last = Some(*img);
            n += 1;
        }
    }
    n
}

/// A per_leg push `id` on `e`, offered and answered: the callee's offer and the caller's answer.
fn per_leg_push(
    e: &Engine,
    id: &str,
    caller: &Peer,
    callee: &Peer,
) -> (
    mcvideo_relay::control::call::CallOffer,
    mcvideo_relay::control::call::CallAnswer,
) {
    let crypto = |k: &str| format!("a=crypto:1 AEAD_AES_128_GCM inline:{k}\r\n");
    let offer = e
        .create_call(CreateCall {
            call_id: Some(id.into()),
            caller_id: "sip:alice@mcx.example".into(),
            caller_sdp: caller.sdp("alice", "RTP/SAVP", Some(SSRC), true, &crypto(CALLER_KEY)),
            callee_id: "sip:bob@mcx.example".into(),
            video_push: true,
            video_pull: false,
            commencement_mode: None,
            media_security: MediaSecurity::PerLeg,
            caller_tc_key: None,
            callee_interface: None,
            caller_interface: None,
        })
        .unwrap();
    let answer = e
        .accept_call(
            id,
            AnswerCall {
                callee_sdp: callee.sdp("bob", "RTP/SAVP", None, true, &crypto(CALLEE_KEY)),
                callee_tc_key: None,
            },
        )
        .unwrap();
    (offer, answer)
}

#[test]
fn per_leg_push_survives_its_engine() {
    let a = engine(36_500);
    let b = engine(36_500);
    let updates = a.ha_updates();
    let mut b_events = b.subscribe();
    let (caller, callee) = (Peer::new(), Peer::new());
    let (offer, answer) = per_leg_push(&a, "ha-1", &caller, &callee);
    let to_callee = RelayAddrs::from_sdp(&offer.sdp_offer);
    let to_caller = RelayAddrs::from_sdp(&answer.sdp_answer);
    let relay_key = mcvideo_relay::sdp::SessionDescription::parse(&offer.sdp_offer)
        .unwrap()
        .media()[0]
        .crypto[0]
        .key_b64
        .clone();
    std::thread::sleep(Duration::from_millis(200));
    drain(&caller.ctl, Duration::from_millis(50));
    drain(&callee.ctl, Duration::from_millis(50));
    drain(&caller.rtcp, Duration::from_millis(50));

    // The caller sends across a sequence-number wrap; the callee decrypts every packet.
    let mut sender = srtp(CALLER_KEY);
    let mut receiver = srtp(&relay_key);
    let mut seq: u16 = 65_000;
    let mut send = |n: usize, seq: &mut u16| {
        for _ in 0..n {
            let mut p = rtp_packet(*seq, SSRC, 400);
            let len = p.len();
            p.resize(len + 16, 0);
            let m = sender.protect_rtp(&mut p, len).unwrap();
            caller.rtp.send_to(&p[..m], to_caller.video).unwrap();
            *seq = seq.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let recv_while = |receiver: &mut SrtpContext, send: &mut dyn FnMut()| {
        let c = collect(
            &callee.rtp,
            Duration::from_millis(1000),
            Duration::from_millis(300),
        );
        send();
        let (mut ok, mut bad) = (0, 0);
        for (mut p, _) in c.join().unwrap() {
            match receiver.unprotect_rtp(&mut p) {
                Ok(_) => ok += 1,
                Err(_) => bad += 1,
            }
        }
        (ok, bad)
    };
    assert_eq!(
        recv_while(&mut receiver, &mut || send(300, &mut seq)),
        (300, 0)
    );
    // Let a refresh go out after the media (about every second), then a little more media
    // that the image does not hold (the crash comes between two refreshes).
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        recv_while(&mut receiver, &mut || send(600, &mut seq)),
        (600, 0)
    );
    let mut image = None;
    assert!(
        latest(&updates, &mut image) >= 2,
        "images on changes and refreshes"
    );
    let image = image.expect("an image of the call");
    assert!(image.rules.as_ref().unwrap().has_srtp());
    let written = Instant::now();
    assert_eq!(
        recv_while(&mut receiver, &mut || send(50, &mut seq)),
        (50, 0)
    );

    // A dies: its calls vanish without a word, its sockets close.
    assert_eq!(a.abandon_calls(), 1);
    assert!(a.call("ha-1").is_none());
    send(20, &mut seq); // lost: nobody listens

    // B adopts the image and binds the same ports.
    let t = Instant::now();
    b.adopt_call(image, written.elapsed(), "relay-a").unwrap();
    let took = t.elapsed();
    assert_eq!(b.adoptions(), 1);
    let ev = b_events.try_recv().unwrap();
    assert_eq!(ev.call_id, "ha-1");
    assert_eq!(
        ev.kind,
        CallEventKind::Adopted {
            from: "relay-a".into()
        }
    );
    drain(&callee.rtp, Duration::from_millis(50));
    assert_eq!(
        recv_while(&mut receiver, &mut || send(400, &mut seq)),
        (400, 0),
        "no packet lost or failing"
    );
    let s = b.call("ha-1").unwrap();
    assert_eq!(s.caller.dropped(DropReason::AuthFailure), 0);
    assert_eq!(s.caller.packets_in, 400);
    assert_eq!(s.callee.packets_out, 400);

    // The caller ends its transmission: B answers.
    let end = TcMessage::new(MessageKind::TransmissionEndRequest, 0x0a11_ce00);
    caller.send_tc(to_caller.control.unwrap(), &end);
    let (resp, _) = recv(&caller.ctl, Duration::from_secs(2));
    assert_eq!(
        TcMessage::parse(&resp).unwrap().kind,
        MessageKind::TransmissionEndResponse
    );
    let (note, _) = recv(&callee.ctl, Duration::from_secs(2));
    assert_eq!(
        TcMessage::parse(&note).unwrap().kind,
        MessageKind::TransmissionEndNotify
    );
    let _ = to_callee;
    let mut released = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match b_events.try_recv() {
            Ok(ev) => {
                if let CallEventKind::Released { reason } = ev.kind {
                    assert_eq!(reason, ReleaseReason::TransmissionCompleted);
                    released += 1;
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    assert_eq!(released, 1);
    assert!(b.call("ha-1").is_none());
    eprintln!("adoption took {took:?}");
}

/// Issue 20, item 8: an RTP sequence wrap moves the SRTP rollover counter, and the call's image
/// holds the new one at once, not at the next refresh. The refresh is set to ten minutes here,
/// so the only image that can carry ROC 1 is the one the wrap itself writes.
#[test]
fn a_sequence_wrap_writes_the_calls_srtp_image_at_once() {
    let a = Engine::start(EngineConfig {
        port_min: 37_200,
        port_max: 37_299,
        workers: 1,
        ha_refresh: Duration::from_secs(600),
        ..EngineConfig::default()
    })
    .unwrap();
    let updates = a.ha_updates();
    let (caller, callee) = (Peer::new(), Peer::new());
    let (_, answer) = per_leg_push(&a, "ha-wrap", &caller, &callee);
    let to_caller = RelayAddrs::from_sdp(&answer.sdp_answer);
    let mut sender = srtp(CALLER_KEY);
    let mut send = |seqs: &mut dyn Iterator<Item = u16>| {
        for seq in seqs {
            let mut p = rtp_packet(seq, SSRC, 200);
            let len = p.len();
            p.resize(len + 16, 0);
            let m = sender.protect_rtp(&mut p, len).unwrap();
            caller.rtp.send_to(&p[..m], to_caller.video).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    // The caller's ROC as the images of the call hold it (None: no image with its state).
    let roc_in = |img: &CallImage| {
        let rules = img.rules.as_ref()?;
        let leg = &rules.streams.first()?.legs[0];
        leg.srtp_in
            .as_ref()?
            .rtp
            .iter()
            .find(|s| s.ssrc == SSRC)
            .map(|s| s.roc)
    };
    let wait_for = |want: u32| {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(HaUpdate::Put(img)) = updates.recv_timeout(Duration::from_millis(50)) {
                let r = roc_in(&img);
                seen.push(r);
                if r == Some(want) {
                    return seen;
                }
            }
        }
        panic!("no image with ROC {want} within 5 s; images' ROCs: {seen:?}");
    };
    // Before the wrap: media starts (a control-plane change: an image with ROC 0).
    send(&mut (65_400..=65_500));
    wait_for(0);
    // Across the wrap: the image with ROC 1 comes at once (the refresh is ten minutes away).
    send(&mut (65_501..=65_535).chain(0..20));
    wait_for(1);
    a.shutdown();
}

/// A push with no transmission control channel ends by media inactivity. Its inactivity timer
/// counts from the last packet its transmission control was told of, and the worker tells it
/// when it steps the call: on the first packet, then when the timer falls due. An image taken
/// between steps held a deadline from the first packet (found by the chaos run): an adopter
/// restored a timer about to fall due and released the live call at once. Here the timer is
/// 4 s, the media runs 3.5 s, the adopter takes the last image 2 s after it came: from the first
/// packet the call has no time left, from the last it has about 2 s.
#[test]
fn an_adopted_push_without_control_keeps_its_media_inactivity_time() {
    let mut cfg = EngineConfig {
        port_min: 37_300,
        port_max: 37_399,
        workers: 1,
        ..EngineConfig::default()
    };
    cfg.call.tc.media_inactivity = Duration::from_secs(4);
    let a = Engine::start(cfg.clone()).unwrap();
    let b = Engine::start(cfg).unwrap();
    let updates = a.ha_updates();
    let (caller, callee) = (Peer::new(), Peer::new());
    let mut req = common::create_request(caller.sdp("cam", "RTP/AVP", Some(SSRC), false, ""));
    req.call_id = Some("ha-quiet".into());
    a.create_call(req).unwrap();
    let answer = a
        .accept_call(
            "ha-quiet",
            AnswerCall {
                callee_sdp: callee.sdp("desk", "RTP/AVP", None, false, ""),
                callee_tc_key: None,
            },
        )
        .unwrap();
    let to = RelayAddrs::from_sdp(&answer.sdp_answer).video;
    let mut seq = 0u16;
    let mut send = |n: u16| {
        for _ in 0..n {
            caller.rtp.send_to(&rtp_packet(seq, SSRC, 100), to).unwrap();
            seq = seq.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (mut image, mut came) = (None, Instant::now());
    for _ in 0..35 {
        send(5);
        if latest(&updates, &mut image) > 0 {
            came = Instant::now();
        }
    }
    let image = image.expect("an image of the call");
    assert_eq!(a.abandon_calls(), 1);
    std::thread::sleep(Duration::from_secs(2).saturating_sub(came.elapsed()));
    b.adopt_call(image, came.elapsed(), "relay-a").unwrap();
    drain(&callee.rtp, Duration::from_millis(20));
    send(25);
    let s = b.call("ha-quiet").expect("the adopted call lives");
    assert_eq!(s.release_reason, None);
    assert!(s.callee.packets_out >= 20, "{:?}", s.callee);
    a.shutdown();
    b.shutdown();
}
