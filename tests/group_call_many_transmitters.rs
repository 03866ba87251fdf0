//! A per_leg group call of 20 members over real UDP sockets on 127.0.0.1 in which every member
//! transmits in turn (asking on its MCVideo control channel, granted, sending, ending), then the
//! first four again: every receiver leg's outbound SRTP context is sent 19 transmitter SSRCs,
//! more than the 16 it keeps active, so SSRCs are evicted and come back. Every member's media
//! reaches every other member, decrypted by webrtc-srtp (an independent SRTP implementation)
//! with that receiver's own key from the relay's answer, payload intact, nothing refused.
//!
//! Ports 47_500–47_799 (no other test uses them).
#![allow(clippy::disallowed_methods)] // real sockets: the test waits by the clock

mod common;
use common::net::*;
use mcvideo_relay::control::MediaSecurity;
use mcvideo_relay::keys::{MasterKey, SrtpSuite};
use mcvideo_relay::relay::{CreateGroupCall, DropReason, Engine, EngineConfig, GroupMemberSpec};
use mcvideo_relay::sdp::{MediaKind, SessionDescription};
use mcvideo_relay::srtp::SrtpContext;
use mcvideo_relay::wire::rtp::RtpPacket;
use mcvideo_relay::wire::tc::{self, MessageKind, TcMessage};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use webrtc_srtp::context::Context as WebrtcContext;
use webrtc_srtp::protection_profile::ProtectionProfile;

const MEMBERS: usize = 20;
const PACKETS: u16 = 12;

fn ssrc(i: usize) -> u32 {
    0x2000_0000 + i as u32 * 0x1_0101
}

fn name(i: usize) -> String {
    format!("member-{i:02}")
}

/// Member `i`'s own SRTP key: 16 + 12 octets for AEAD_AES_128_GCM.
fn member_key(i: usize) -> MasterKey {
    MasterKey {
        suite: SrtpSuite::AeadAes128Gcm,
        material: (0..28)
            .map(|b| (b as u8).wrapping_mul(13) ^ (i as u8 + 0x21))
            .collect(),
    }
}

struct Member {
    peer: Peer,
    video: SocketAddr,
    control: SocketAddr,
    /// The member's sending context (ours) toward the relay.
    tx: SrtpContext,
    /// The member's receiving context: webrtc-srtp with the relay's key toward this member.
    rx: WebrtcContext,
    /// The next sequence number it sends.
    seq: u16,
}

impl Member {
    /// Waits for a control message of `kind`, skipping others.
    fn expect(&self, i: usize, kind: MessageKind) -> Vec<u8> {
        let until = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 2048];
        self.peer
            .ctl
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        while Instant::now() < until {
            let Ok((n, _)) = self.peer.ctl.recv_from(&mut buf) else {
                continue;
            };
            if tc::messages(&buf[..n]).flatten().any(|m| m.kind == kind) {
                return buf[..n].to_vec();
            }
        }
        panic!("{}: no {kind:?} in time", name(i));
    }

    fn send_tc(&self, msg: &TcMessage<'_>) {
        self.peer.send_tc(self.control, msg);
    }

    /// Sends `PACKETS` RTP packets with its SSRC, protected with its own key.
    fn send_video(&mut self, i: usize) -> Vec<u16> {
        let mut seqs = Vec::new();
        for _ in 0..PACKETS {
            let seq = self.seq;
            self.seq = self.seq.wrapping_add(1);
            let mut p = rtp_packet(seq, ssrc(i), 300);
            let len = p.len();
            p.resize(len + self.tx.rtp_overhead(), 0);
            let n = self.tx.protect_rtp(&mut p, len).unwrap();
            p.truncate(n);
            self.peer.rtp.send_to(&p, self.video).unwrap();
            seqs.push(seq);
            std::thread::sleep(Duration::from_micros(300));
        }
        seqs
    }
}

/// Receives on `s` until `count` datagrams arrived (or 5 s passed: the caller's assertion
/// then fails on what is missing).
fn receive(s: &std::net::UdpSocket, count: usize) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    let s = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        while got.len() < count && Instant::now() < until {
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                got.push(buf[..n].to_vec());
            }
        }
        got
    })
}

fn setup(engine: &Engine) -> Vec<Member> {
    let peers: Vec<Peer> = (0..MEMBERS).map(|_| Peer::new()).collect();
    let members = peers
        .iter()
        .enumerate()
        .map(|(i, p)| GroupMemberSpec {
            mcvideo_id: name(i),
            sdp_offer: p.sdp(
                &name(i),
                "RTP/SAVP",
                Some(ssrc(i)),
                true,
                &format!(
                    "a=crypto:1 AEAD_AES_128_GCM inline:{}\r\n",
                    member_key(i).to_base64()
                ),
            ),
            priority: 5,
            receive_only: false,
            tc_key: None,
        })
        .collect();
    let created = engine
        .create_group_call(CreateGroupCall {
            call_id: Some("group-20".into()),
            group_id: "sip:group-20@mcx.example".into(),
            media_security: MediaSecurity::PerLeg,
            max_transmitters: None,
            max_streams_per_receiver: None,
            reception_mode: None,
            members,
        })
        .expect("create_group_call");
    assert_eq!(created.members.len(), MEMBERS);
    peers
        .into_iter()
        .zip(&created.members)
        .enumerate()
        .map(|(i, (peer, a))| {
            assert_eq!(a.mcvideo_id, name(i));
            let r = RelayAddrs::from_sdp(&a.sdp_answer);
            let d = SessionDescription::parse(&a.sdp_answer).unwrap();
            let video = d
                .media()
                .iter()
                .find(|m| m.kind == MediaKind::Video)
                .unwrap();
            let c = video.crypto.first().expect("the relay's a=crypto");
            let key = MasterKey::from_base64(SrtpSuite::AeadAes128Gcm, &c.key_b64).unwrap();
            assert_ne!(key, member_key(i), "the relay answers with its own key");
            let rx = WebrtcContext::new(
                key.key(),
                key.salt(),
                ProtectionProfile::AeadAes128Gcm,
                None,
                None,
            )
            .unwrap();
            Member {
                peer,
                video: r.video,
                control: r.control.expect("a control channel in the answer"),
                tx: SrtpContext::new(&member_key(i)),
                rx,
                seq: 1000 * i as u16,
            }
        })
        .collect()
}

/// Member `i` asks, is granted, sends; every other member receives and decrypts all of it.
fn turn(m: &mut [Member], i: usize) {
    let mut r = TcMessage::new(MessageKind::TransmissionRequest, ssrc(i));
    r.fields.transmission_priority = Some(5);
    m[i].send_tc(&r);
    let g = m[i].expect(i, MessageKind::TransmissionGranted);
    assert_eq!(
        TcMessage::parse(&g).unwrap().fields.video_ssrc,
        Some(ssrc(i)),
        "{} granted with its own SSRC",
        name(i)
    );
    let collecting: Vec<_> = m
        .iter()
        .enumerate()
        .map(|(k, x)| (k != i).then(|| receive(&x.peer.rtp, usize::from(PACKETS))))
        .collect();
    let sent = m[i].send_video(i);
    for (k, c) in collecting.into_iter().enumerate() {
        let Some(c) = c else { continue };
        let mut got: Vec<u16> = c
            .join()
            .unwrap()
            .into_iter()
            .map(|wire| {
                let plain = m[k].rx.decrypt_rtp(&wire).unwrap_or_else(|e| {
                    panic!(
                        "{} cannot decrypt {}'s packet with webrtc-srtp: {e}",
                        name(k),
                        name(i)
                    )
                });
                let p = RtpPacket::new_checked(&plain[..]).expect("RTP");
                assert_eq!(p.ssrc(), ssrc(i), "{} gets {}'s SSRC", name(k), name(i));
                let seq = p.sequence_number();
                assert_eq!(
                    plain[..],
                    rtp_packet(seq, ssrc(i), 300)[..],
                    "payload intact"
                );
                seq
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, sent, "{} gets every packet of {}", name(k), name(i));
    }
    m[i].send_tc(&TcMessage::new(
        MessageKind::TransmissionEndRequest,
        ssrc(i),
    ));
    m[i].expect(i, MessageKind::TransmissionEndResponse);
}

#[test]
fn per_leg_group_of_twenty_taking_turns_reaches_every_receiver() {
    let engine = Engine::start(EngineConfig {
        port_min: 47_500,
        port_max: 47_799,
        workers: 2,
        ..EngineConfig::default()
    })
    .expect("engine starts");
    let mut m = setup(&engine);
    // Everyone once (each receiver sees 19 transmitter SSRCs: the first three it saw are
    // evicted), then the first four again: SSRCs coming back from eviction.
    for i in (0..MEMBERS).chain(0..4) {
        turn(&mut m, i);
    }
    let s = engine.group_call("group-20").expect("summary");
    for x in &s.members {
        for reason in [DropReason::Malformed, DropReason::AuthFailure] {
            assert_eq!(
                x.counters.dropped(reason),
                0,
                "{}: {reason:?} drops",
                x.mcvideo_id
            );
        }
    }
    engine.release_group_call("group-20").expect("release");
    engine.shutdown();
}
