//! High availability of a group call through the engine, in one process on 127.0.0.1: a group
//! of 4 runs on engine A (A transmits, B is queued, C and D receive; per_leg and end_to_end);
//! A's workers send the group's image on every control-plane change and while media flows; A
//! dies (its calls dropped silently, its sockets closed, as a crash would); engine B adopts the
//! last image (through the sealed record: the keys are not in its clear body): it binds the
//! same relay ports, the granted member goes on transmitting without a new request and its
//! video reaches both receivers (per_leg: decrypted with their own keys, across a sequence
//! number wrap before the image, so the rollover counters must survive) with no
//! authentication or replay failure; when A ends its transmission, B's queued request is
//! granted by engine B and B's video reaches the others.
//!
//! Ports 38_000–38_199 (no other test uses them): one range of 100 per test, shared by its two
//! engines.
#![allow(clippy::disallowed_methods)] // real sockets: the test waits by the clock

mod common;
use common::net::*;
use mcvideo_relay::control::call::{CallEvent, CallEventKind};
use mcvideo_relay::control::{MediaSecurity, ReleaseReason};
use mcvideo_relay::ha::{SealKey, StoredImage, SEAL_KEY_LEN};
use mcvideo_relay::keys::{MasterKey, SrtpSuite};
use mcvideo_relay::relay::{
    CreateGroupCall, DropReason, Engine, EngineConfig, GroupImage, GroupMemberSpec, HaUpdate,
};
use mcvideo_relay::sdp::{MediaKind, SessionDescription};
use mcvideo_relay::srtp::SrtpContext;
use mcvideo_relay::wire::rtp::RtpPacket;
use mcvideo_relay::wire::tc::{self, MessageKind, TcMessage};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

const NAMES: [&str; 4] = ["A", "B", "C", "D"];

fn ssrc(i: usize) -> u32 {
    0x2000_0000 + i as u32 * 0x111
}

/// Member `i`'s own SRTP key (per_leg).
fn member_key(i: usize) -> MasterKey {
    MasterKey {
        suite: SrtpSuite::AeadAes128Gcm,
        material: (0..28)
            .map(|b| (b as u8).wrapping_mul(11) ^ (i as u8 + 0x40))
            .collect(),
    }
}

struct Member {
    name: &'static str,
    peer: Peer,
    video: SocketAddr,
    control: SocketAddr,
    /// Per_leg: the member's sending context and its receiving one (the relay's key to it).
    tx: Option<SrtpContext>,
    rx: Option<SrtpContext>,
    seq: u16,
}

impl Member {
    fn send_tc(&self, msg: &TcMessage<'_>) {
        self.peer.send_tc(self.control, msg);
    }

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

    /// Sends `count` RTP packets with its own SSRC, going on from its last sequence number.
    fn send_video(&mut self, i: usize, count: u16) {
        for _ in 0..count {
            let mut p = rtp_packet(self.seq, ssrc(i), 400);
            self.seq = self.seq.wrapping_add(1);
            if let Some(ctx) = self.tx.as_mut() {
                let len = p.len();
                p.resize(len + 64, 0);
                let n = ctx.protect_rtp(&mut p, len).unwrap();
                p.truncate(n);
            }
            self.peer.rtp.send_to(&p, self.video).unwrap();
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

fn engine(port_min: u16) -> Engine {
    Engine::start(EngineConfig {
        port_min,
        port_max: port_min + 99,
        workers: 1,
        ..EngineConfig::default()
    })
    .expect("engine starts")
}

fn setup(engine: &Engine, id: &str, security: MediaSecurity) -> Vec<Member> {
    let per_leg = security == MediaSecurity::PerLeg;
    let peers: Vec<Peer> = (0..4).map(|_| Peer::new()).collect();
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
            group_id: "sip:group-ha@mcx.example".into(),
            media_security: security,
            max_transmitters: None,
            max_streams_per_receiver: None,
            reception_mode: None,
            members: specs,
        })
        .expect("create_group_call");
    peers
        .into_iter()
        .zip(&created.members)
        .enumerate()
        .map(|(i, (peer, a))| {
            let r = RelayAddrs::from_sdp(&a.sdp_answer);
            let d = SessionDescription::parse(&a.sdp_answer).unwrap();
            let video = d
                .media()
                .iter()
                .find(|m| m.kind == MediaKind::Video)
                .unwrap();
            let rx = per_leg.then(|| {
                let c = video.crypto.first().expect("the relay's a=crypto");
                SrtpContext::new(
                    &MasterKey::from_base64(SrtpSuite::AeadAes128Gcm, &c.key_b64).unwrap(),
                )
            });
            Member {
                name: NAMES[i],
                peer,
                video: r.video,
                control: r.control.expect("a control channel in the answer"),
                tx: per_leg.then(|| SrtpContext::new(&member_key(i))),
                rx,
                // The transmitter's sequence numbers wrap before the image: its SRTP rollover
                // counter (and the relay's toward each receiver) must come through the takeover.
                seq: 65_300,
            }
        })
        .collect()
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

/// `from` sends `count` packets while the members `to` listen: per receiver, the sequence
/// numbers it got from `from`'s SSRC and how many failed to decrypt (per_leg).
fn transmit(m: &mut [Member], from: usize, to: &[usize], count: u16) -> Vec<(Vec<u16>, usize)> {
    let handles: Vec<_> = to
        .iter()
        .map(|&i| {
            collect(
                &m[i].peer.rtp,
                Duration::from_millis(1500 + u64::from(count) * 2),
                Duration::from_millis(300),
            )
        })
        .collect();
    m[from].send_video(from, count);
    handles
        .into_iter()
        .zip(to)
        .map(|(h, &i)| {
            let (mut seqs, mut bad) = (Vec::new(), 0);
            for (mut b, _) in h.join().unwrap() {
                if let Some(ctx) = m[i].rx.as_mut() {
                    match ctx.unprotect_rtp(&mut b) {
                        Ok(n) => b.truncate(n),
                        Err(_) => {
                            bad += 1;
                            continue;
                        }
                    }
                }
                let p = RtpPacket::new_checked(&b[..]).expect("RTP");
                assert_eq!(
                    p.ssrc(),
                    ssrc(from),
                    "{}: the transmitter's SSRC",
                    m[i].name
                );
                let seq = p.sequence_number();
                assert_eq!(b, rtp_packet(seq, ssrc(from), 400), "payload intact");
                seqs.push(seq);
            }
            (seqs, bad)
        })
        .collect()
}

fn latest(rx: &crossbeam_channel::Receiver<HaUpdate>, last: &mut Option<GroupImage>) -> usize {
    let mut n = 0;
    while let Ok(u) = rx.try_recv() {
        if let HaUpdate::PutGroup(img) = u {
            *last = Some(*img);
            n += 1;
        }
    }
    n
}

fn group_survives_its_engine(security: MediaSecurity, id: &str, port_min: u16) {
    let per_leg = security == MediaSecurity::PerLeg;
    let a = engine(port_min);
    let b = engine(port_min);
    let updates = a.ha_updates();
    let mut a_events = a.subscribe();
    let mut b_events = b.subscribe();
    let mut m = setup(&a, id, security);
    events_until(&mut a_events, "transmission.idle");
    for x in &m {
        x.expect(MessageKind::TransmissionIdle);
    }
    // A is granted, B queued.
    let mut r = TcMessage::new(MessageKind::TransmissionRequest, ssrc(0));
    r.fields.transmission_priority = Some(5);
    m[0].send_tc(&r);
    m[0].expect(MessageKind::TransmissionGranted);
    let mut r = TcMessage::new(MessageKind::TransmissionRequest, ssrc(1));
    r.fields.transmission_priority = Some(5);
    m[1].send_tc(&r);
    m[1].expect(MessageKind::QueuePositionInfo);
    events_until(&mut a_events, "transmission.queued");

    let all = |got: &[(Vec<u16>, usize)], n: usize| {
        got.iter().all(|(s, bad)| {
            s.len() == n && *bad == 0 && s.windows(2).all(|w| w[1] == w[0].wrapping_add(1))
        })
    };
    let got = transmit(&mut m, 0, &[2, 3], 200);
    assert!(all(&got, 200), "{got:?}");
    // A refresh goes out after the media (about every second), then media the image does not
    // hold (the crash comes between two refreshes).
    std::thread::sleep(Duration::from_millis(1200));
    let got = transmit(&mut m, 0, &[2, 3], 200);
    assert!(all(&got, 200), "{got:?}");
    let mut image = None;
    assert!(
        latest(&updates, &mut image) >= 3,
        "images on grant, queue and while media flows"
    );
    let image = image.expect("an image of the group");
    let written = Instant::now();
    assert_eq!(image.group.tc.members.len(), 4);
    assert_eq!(image.group.tc.queue.len(), 1, "B is queued in the image");
    assert_eq!(image.secrets.members.len(), 4);
    assert_eq!(image.group.rules.has_srtp(), per_leg);
    let got = transmit(&mut m, 0, &[2, 3], 50);
    assert!(all(&got, 50), "{got:?}");

    // Through the record: the keys are sealed, not in the clear body.
    let seal = SealKey::from_bytes(&[7; SEAL_KEY_LEN]).unwrap();
    let record = image.to_record(&seal, 1).unwrap();
    let body = String::from_utf8(record.body.clone()).unwrap();
    for i in 0..4 {
        assert!(
            !body.contains(&member_key(i).to_base64()),
            "no member key in the body"
        );
    }
    let image = match StoredImage::from_record(&record, &seal).unwrap() {
        StoredImage::Group(g) => *g,
        StoredImage::Call(_) => panic!("a group record reads as a group"),
    };

    // A dies: its calls vanish without a word, its sockets close.
    assert_eq!(a.abandon_calls(), 1);
    assert!(a.group_call(id).is_none());
    m[0].send_video(0, 20); // lost: nobody listens
    std::thread::sleep(Duration::from_millis(50));
    for x in &m {
        drain(&x.peer.rtp, Duration::from_millis(20));
    }

    // B adopts and binds the same ports.
    let t = Instant::now();
    b.adopt_group_call(image, written.elapsed(), "relay-a")
        .unwrap();
    let took = t.elapsed();
    assert_eq!(b.adoptions(), 1);
    let evs = events_until(&mut b_events, "call.adopted");
    assert!(
        matches!(&evs[..], [CallEventKind::Adopted { from }] if &**from == "relay-a"),
        "{evs:?}"
    );
    let s = b.group_call(id).expect("the group on B");
    assert_eq!(s.members.len(), 4);
    assert_eq!(s.transmissions.len(), 1);
    assert_eq!(s.transmissions[0].mcvideo_id, "A");
    assert_eq!(s.queue.len(), 1);
    assert_eq!(s.queue[0].mcvideo_id, "B");

    // A goes on transmitting without a new request: both receivers get every packet.
    let gap_from = m[0].seq;
    let got = transmit(&mut m, 0, &[2, 3], 300);
    assert!(all(&got, 300), "after the takeover: {got:?}");
    assert_eq!(got[0].0[0], gap_from, "the first packet after the takeover");
    let s = b.group_call(id).unwrap();
    let sa = s.members.iter().find(|x| x.mcvideo_id == "A").unwrap();
    assert_eq!(sa.counters.dropped(DropReason::AuthFailure), 0);
    assert_eq!(sa.counters.dropped(DropReason::NotGranted), 0);
    assert_eq!(sa.counters.packets_in, 300);
    for x in s.members.iter().filter(|x| x.mcvideo_id != "A") {
        assert_eq!(x.counters.dropped(DropReason::AuthFailure), 0);
    }

    // A ends: B answers it, and grants the queued B without a new request from B.
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
    let evs = events_until(&mut b_events, "transmission.granted");
    assert!(evs
        .iter()
        .any(|e| matches!(e, CallEventKind::MemberGranted { member, .. } if &**member == "B")));
    let got = transmit(&mut m, 1, &[0, 2, 3], 100);
    assert!(all(&got, 100), "B's video after its grant: {got:?}");

    // Release on B: every port back.
    let fin = b.release_group_call(id).expect("release");
    assert_eq!(fin.release_reason, Some(ReleaseReason::Released));
    let until = Instant::now() + Duration::from_secs(2);
    while b.stats().ports_in_use != 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(b.stats().ports_in_use, 0, "every port is back");
    assert_eq!(
        a.stats().ports_in_use,
        0,
        "A gave its ports back when it dropped the call"
    );
    eprintln!("{security:?}: adoption took {took:?}");
}

#[test]
fn per_leg_group_survives_its_engine() {
    group_survives_its_engine(MediaSecurity::PerLeg, "ha-group-per-leg", 38_000);
}

#[test]
fn end_to_end_group_survives_its_engine() {
    group_survives_its_engine(MediaSecurity::EndToEnd, "ha-group-e2e", 38_100);
}
