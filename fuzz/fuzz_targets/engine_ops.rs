//! Operation sequences against a running engine — real worker thread, real sockets, real SRTP:
//! create, answer, reject and release calls, register UEs, drain, and send RTP, RTCP,
//! transmission control and garbage from the caller, the callee and a stranger, in any order.
//!
//! A group call (`Group*` ops) runs beside them: three members on sockets of their own, with
//! transmission control channels, asking to transmit (with priorities and emergency), ending,
//! asking to receive, sending RTP/RTCP/garbage, leaving and joining again.
//!
//! Invariants: no panic (on any thread); the stranger, which is neither negotiated nor able to
//! latch (count latching is off, it never uses an announced SSRC or a key), never receives a
//! byte; the caller never receives RTP (the callee's media never reaches it); the relay sends
//! no more bytes than it received plus a small allowance per established call; every created
//! call is released exactly once; once every call is released, every port is back in the pool.
#![no_main]
mod common;

use arbitrary::Arbitrary;
use common::{CALLEE_KEY, CALLER_KEY};
use libfuzzer_sys::fuzz_target;
use mcvideo_relay::control::call::{AnswerCall, CallEventKind, CreateCall};
use mcvideo_relay::control::server::ReceptionMode;
use mcvideo_relay::control::registry::UeEntry;
use mcvideo_relay::control::MediaSecurity;
use mcvideo_relay::keys::{MasterKey, SrtpSuite};
use mcvideo_relay::relay::{CreateGroupCall, Engine, EngineConfig, GroupMemberSpec};
use mcvideo_relay::srtp::SrtpContext;
use mcvideo_relay::wire::rtcp;
use mcvideo_relay::wire::tc::INDICATOR_EMERGENCY;
use mcvideo_relay::wire::tc::{AppName, EmitOptions, MessageKind, TcMessage};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::OnceLock;
use std::time::Duration;

const ANNOUNCED_SSRC: u32 = 42;
const STRANGER_SSRC: u32 = 0x5742_4E47;
/// Bytes the relay may originate per established call (grant, retransmissions, PLI, replies).
const ALLOWANCE_PER_CALL: u64 = 16 * 1024;
/// Group members in the fuzzed group call.
const MEMBERS: usize = 3;
/// Bytes the relay may originate per group call (notifications, idle, replies to 3 members).
const ALLOWANCE_PER_GROUP: u64 = 64 * 1024;
const SLOTS: usize = 3;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Who {
    Caller,
    Callee,
    Stranger,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Dest {
    /// The caller's relay video port.
    CallerLeg,
    /// The callee's relay video port.
    CalleeLeg,
    CallerControl,
    CalleeControl,
}

#[derive(Arbitrary, Debug)]
enum Rtcp {
    Pli,
    Fir(u8),
    Rr,
    Bye,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Create {
        slot: u8,
        per_leg: bool,
        control: bool,
        audio: bool,
        ssrc: bool,
        manual: bool,
    },
    Accept {
        slot: u8,
        control: bool,
        reject_audio: bool,
    },
    AcceptRaw {
        slot: u8,
        sdp: String,
    },
    Reject {
        slot: u8,
    },
    Release {
        slot: u8,
    },
    Register {
        ue: u8,
        designated: bool,
    },
    Unregister {
        ue: u8,
    },
    Drain(bool),
    Rtp {
        slot: u8,
        from: Who,
        to: Dest,
        announced: bool,
        seq: u16,
        marker: bool,
        pt: u8,
        len: u16,
    },
    Rtcp {
        slot: u8,
        from: Who,
        to: Dest,
        kind: Rtcp,
    },
    Tc {
        slot: u8,
        from: Who,
        to: Dest,
        name: u8,
        message_type: u8,
        ack: bool,
    },
    Raw {
        slot: u8,
        from: Who,
        to: Dest,
        bytes: Vec<u8>,
    },
    Wait {
        ms: u8,
    },
    /// Create then accept, both with a transmission control channel and an announced SSRC: a
    /// live call to send transmission control to in one step.
    Established {
        slot: u8,
        per_leg: bool,
        audio: bool,
    },
    /// A group call of three members (replacing the current one, which is released).
    Group {
        per_leg: bool,
        third_receive_only: bool,
        manual: bool,
        cx: u8,
    },
    GroupTc {
        member: u8,
        kind: GroupTc,
    },
    GroupRtp {
        member: u8,
        announced: bool,
        seq: u16,
        len: u16,
    },
    GroupRtcp {
        member: u8,
        kind: Rtcp,
    },
    GroupRaw {
        member: u8,
        control: bool,
        bytes: Vec<u8>,
    },
    GroupLeave {
        member: u8,
    },
    GroupJoin {
        member: u8,
    },
    GroupRelease,
}

#[derive(Arbitrary, Debug)]
enum GroupTc {
    Request {
        priority: Option<u8>,
        emergency: bool,
    },
    End,
    QueuePosition,
    ReceiveMedia {
        of: u8,
    },
    ReceptionEnd {
        of: u8,
    },
    Ack {
        name: u8,
        message_type: u8,
    },
    Other {
        name: u8,
        message_type: u8,
        ack: bool,
    },
}

struct Clients {
    caller: UdpSocket,
    caller_ctl: UdpSocket,
    callee: UdpSocket,
    callee_ctl: UdpSocket,
    stranger: UdpSocket,
    /// The group members' media and control sockets.
    members: [(UdpSocket, UdpSocket); MEMBERS],
}

fn bind() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_nonblocking(true).expect("nonblocking");
    s
}

fn clients() -> &'static Clients {
    static C: OnceLock<Clients> = OnceLock::new();
    C.get_or_init(|| Clients {
        caller: bind(),
        caller_ctl: bind(),
        callee: bind(),
        callee_ctl: bind(),
        stranger: bind(),
        members: [(bind(), bind()), (bind(), bind()), (bind(), bind())],
    })
}

fn member_ssrc(i: usize) -> u32 {
    0x6d00_0000 + i as u32
}

fn member_key(i: usize) -> MasterKey {
    MasterKey {
        suite: SrtpSuite::AeadAes128Gcm,
        material: (0..28u8)
            .map(|b| b.wrapping_mul(13) ^ (i as u8 + 7))
            .collect(),
    }
}

fn member_offer(c: &Clients, i: usize, per_leg: bool) -> String {
    let (media, ctl) = &c.members[i];
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
    format!(
        "v=0\r\no=m{i} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=video {} {proto} 96\r\na=rtpmap:96 H264/90000\r\na=rtcp-mux\r\n{crypto}\
         a=ssrc:{} cname:m{i}\r\n\
         m=application {} udp MCVideo\r\na=fmtp:MCVideo mc_queueing\r\n",
        port(media),
        member_ssrc(i),
        port(ctl),
    )
}

/// The fuzzed group call.
struct Group {
    id: String,
    per_leg: bool,
    receive_only: [bool; MEMBERS],
    /// Relay ports per member: video, control (absent: not in the call).
    ports: [Option<(u16, Option<u16>)>; MEMBERS],
    srtp: [Option<SrtpContext>; MEMBERS],
}

fn member_spec(c: &Clients, i: usize, per_leg: bool, receive_only: bool) -> GroupMemberSpec {
    GroupMemberSpec {
        mcvideo_id: format!("sip:m{i}@example.org"),
        sdp_offer: member_offer(c, i, per_leg),
        priority: 10 + 50 * i as u8,
        receive_only,
        tc_key: None,
    }
}

fn answer_ports(sdp: &str) -> Option<(u16, Option<u16>)> {
    Some((m_port(sdp, "video")?, m_port(sdp, "application")))
}

fn port(s: &UdpSocket) -> u16 {
    s.local_addr().expect("addr").port()
}

/// Datagrams and bytes waiting on a socket; with `no_rtp`, fails on an RTP packet.
fn drain(s: &UdpSocket, no_rtp: bool) -> u64 {
    let mut buf = [0u8; 2048];
    let mut bytes = 0;
    while let Ok((n, _)) = s.recv_from(&mut buf) {
        bytes += n as u64;
        if no_rtp && n >= 2 && buf[0] >> 6 == 2 {
            let pt = buf[1] & 0x7f;
            // RFC 5761: 64..=95 (with the marker bit, 192..=223) is RTCP.
            assert!(
                (64..=95).contains(&pt),
                "the caller received RTP (pt {pt}): the callee's media reached it"
            );
        }
    }
    bytes
}

fn offer(c: &Clients, per_leg: bool, control: bool, audio: bool, ssrc: bool) -> String {
    let (proto, crypto) = if per_leg {
        (
            "RTP/SAVP",
            format!("a=crypto:1 AEAD_AES_128_GCM inline:{CALLER_KEY}\r\n"),
        )
    } else {
        ("RTP/AVP", String::new())
    };
    let mut s =
        String::from("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n");
    if audio {
        s += &format!(
            "m=audio {} {proto} 96\r\na=rtpmap:96 PCMU/8000\r\na=rtcp-mux\r\n{crypto}",
            port(&c.caller)
        );
    }
    s += &format!(
        "m=video {} {proto} 97\r\na=rtpmap:97 H264/90000\r\na=rtcp-mux\r\na=sendonly\r\n{crypto}",
        port(&c.caller)
    );
    if ssrc {
        s += &format!("a=ssrc:{ANNOUNCED_SSRC} cname:fuzz\r\n");
    }
    if control {
        s += &format!(
            "m=application {} udp MCVideo\r\na=fmtp:MCVideo mc_implicit_request\r\n",
            port(&c.caller_ctl)
        );
    }
    s
}

/// An answer mirroring the relay's offer to the callee, line for line.
fn answer(c: &Clients, relay_offer: &str, control: bool, reject_audio: bool) -> String {
    let mut s =
        String::from("v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n");
    let mut crypto = false;
    for line in relay_offer.lines() {
        if line.starts_with("a=crypto:") {
            crypto = true;
        }
    }
    for line in relay_offer.lines() {
        let Some(rest) = line.strip_prefix("m=") else {
            continue;
        };
        let mut f = rest.split(' ');
        let (kind, p, proto, fmt) = (
            f.next().unwrap_or(""),
            f.next().unwrap_or("0"),
            f.next().unwrap_or(""),
            f.next().unwrap_or(""),
        );
        let port = match kind {
            _ if p == "0" => 0,
            "video" => port(&c.callee),
            "audio" if !reject_audio => port(&c.callee),
            "application" if control => port(&c.callee_ctl),
            _ => 0,
        };
        s += &format!("m={kind} {port} {proto} {fmt}\r\n");
        if kind != "application" {
            s += "a=rtcp-mux\r\na=recvonly\r\n";
            if crypto {
                s += &format!("a=crypto:1 AEAD_AES_128_GCM inline:{CALLEE_KEY}\r\n");
            }
        }
    }
    s
}

/// The `m=<kind>` port in an SDP.
fn m_port(sdp: &str, kind: &str) -> Option<u16> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("m="))
        .find(|l| l.starts_with(kind))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|p| p.parse().ok())
        .filter(|p| *p != 0)
}

#[derive(Default)]
struct Slot {
    id: Option<String>,
    per_leg: bool,
    offer_to_callee: Option<String>,
    /// Relay ports: caller video, callee video, caller control, callee control.
    ports: [Option<u16>; 4],
    srtp: [Option<SrtpContext>; 2],
}

fn key(b64: &str) -> MasterKey {
    MasterKey::from_base64(SrtpSuite::AeadAes128Gcm, b64).expect("key")
}

fuzz_target!(|ops: Vec<Op>| {
    let c = clients();
    for s in [
        &c.caller,
        &c.caller_ctl,
        &c.callee,
        &c.callee_ctl,
        &c.stranger,
    ] {
        drain(s, false);
    }
    for (m, ctl) in &c.members {
        drain(m, false);
        drain(ctl, false);
    }
    let engine = Engine::start(EngineConfig {
        port_min: 53_000,
        port_max: 53_023,
        workers: 1,
        latch_after_packets: u32::MAX,
        socket_buffer_bytes: 0,
        event_capacity: 1024,
        ..EngineConfig::default()
    })
    .expect("engine");
    let mut events = engine.subscribe();
    let mut slots: [Slot; SLOTS] = Default::default();
    let mut created: Vec<String> = Vec::new();
    let mut established = 0u64;
    let mut sent = 0u64;
    let mut seq_calls = 0u32;
    let mut buf = vec![0u8; 1600];
    let mut group: Option<Group> = None;
    let mut groups: Vec<String> = Vec::new();
    let mut group_sent = 0u64;
    let mut group_tc = 0u64;
    let ops = ops.into_iter().flat_map(|op| match op {
        Op::Established {
            slot,
            per_leg,
            audio,
        } => vec![
            Op::Create {
                slot,
                per_leg,
                control: true,
                audio,
                ssrc: true,
                manual: false,
            },
            Op::Accept {
                slot,
                control: true,
                reject_audio: false,
            },
        ],
        other => vec![other],
    });
    for op in ops.take(64) {
        match op {
            Op::Create {
                slot,
                per_leg,
                control,
                audio,
                ssrc,
                manual,
            } => {
                let s = &mut slots[usize::from(slot) % SLOTS];
                seq_calls += 1;
                let r = engine.create_call(CreateCall {
                    call_id: Some(format!("f{seq_calls}").into()),
                    caller_id: "sip:alice@example.org".into(),
                    caller_sdp: offer(c, per_leg, control, audio, ssrc),
                    callee_id: "sip:bob@example.org".into(),
                    video_push: true,
                    video_pull: false,
                    commencement_mode: Some(if manual {
                        mcvideo_relay::control::CommencementMode::Manual
                    } else {
                        mcvideo_relay::control::CommencementMode::Automatic
                    }),
                    media_security: if per_leg {
                        MediaSecurity::PerLeg
                    } else {
                        MediaSecurity::EndToEnd
                    },
                    caller_tc_key: None,
                    callee_interface: None,
                    caller_interface: None,
                });
                if let Ok(o) = r {
                    created.push(o.call_id.to_string());
                    *s = Slot {
                        id: Some(o.call_id.to_string()),
                        per_leg,
                        ports: [
                            None,
                            m_port(&o.sdp_offer, "video"),
                            None,
                            m_port(&o.sdp_offer, "application"),
                        ],
                        offer_to_callee: Some(o.sdp_offer),
                        srtp: [
                            per_leg.then(|| SrtpContext::new(&key(CALLER_KEY))),
                            per_leg.then(|| SrtpContext::new(&key(CALLEE_KEY))),
                        ],
                    };
                }
            }
            Op::Accept {
                slot,
                control,
                reject_audio,
            } => {
                let s = &mut slots[usize::from(slot) % SLOTS];
                let (Some(id), Some(o)) = (&s.id, &s.offer_to_callee) else {
                    continue;
                };
                let a = AnswerCall {
                    callee_sdp: answer(c, o, control, reject_audio),
                    callee_tc_key: None,
                };
                if let Ok(a) = engine.accept_call(id, a) {
                    established += 1;
                    s.ports[0] = m_port(&a.sdp_answer, "video");
                    s.ports[2] = m_port(&a.sdp_answer, "application");
                }
            }
            Op::AcceptRaw { slot, sdp } => {
                let s = &mut slots[usize::from(slot) % SLOTS];
                let Some(id) = &s.id else { continue };
                if let Ok(a) = engine.accept_call(
                    id,
                    AnswerCall {
                        callee_sdp: sdp,
                        callee_tc_key: None,
                    },
                ) {
                    established += 1;
                    s.ports[0] = m_port(&a.sdp_answer, "video");
                    s.ports[2] = m_port(&a.sdp_answer, "application");
                }
            }
            Op::Reject { slot } => {
                if let Some(id) = &slots[usize::from(slot) % SLOTS].id {
                    let _ = engine.reject_call(id);
                }
            }
            Op::Release { slot } => {
                if let Some(id) = &slots[usize::from(slot) % SLOTS].id {
                    let _ = engine.release_call(id);
                }
            }
            Op::Register { ue, designated } => {
                let _ = engine.register_ue(
                    "sip:bob@example.org",
                    UeEntry {
                        ue_id: format!("ue{}", ue % 4),
                        designated_for_private_calls: designated,
                        commencement_mode: None,
                    },
                );
            }
            Op::Unregister { ue } => {
                engine.unregister_ue("sip:bob@example.org", &format!("ue{}", ue % 4));
            }
            Op::Drain(on) => engine.set_draining(on),
            Op::Wait { ms } => std::thread::sleep(Duration::from_millis(u64::from(ms % 4))),
            Op::Established { .. } => {} // expanded above
            Op::Group {
                per_leg,
                third_receive_only,
                manual,
                cx,
            } => {
                if let Some(g) = group.take() {
                    if let Ok(s) = engine.release_group_call(&g.id) {
                        group_tc += s.tc.received.total();
                    }
                }
                seq_calls += 1;
                let id = format!("g{seq_calls}");
                let r = engine.create_group_call(CreateGroupCall {
                    call_id: Some(id.clone().into()),
                    group_id: "sip:group@example.org".into(),
                    media_security: if per_leg {
                        MediaSecurity::PerLeg
                    } else {
                        MediaSecurity::EndToEnd
                    },
                    max_transmitters: Some(cx % 3 + 1),
                    max_streams_per_receiver: Some(2),
                    reception_mode: Some(if manual {
                        ReceptionMode::Manual
                    } else {
                        ReceptionMode::Automatic
                    }),
                    members: (0..MEMBERS)
                        .map(|i| member_spec(c, i, per_leg, third_receive_only && i == MEMBERS - 1))
                        .collect(),
                });
                if let Ok(created) = r {
                    groups.push(id.clone());
                    let mut ports = [None; MEMBERS];
                    for (i, a) in created.members.iter().enumerate().take(MEMBERS) {
                        ports[i] = answer_ports(&a.sdp_answer);
                    }
                    group = Some(Group {
                        id,
                        per_leg,
                        receive_only: [false, false, third_receive_only],
                        ports,
                        srtp: std::array::from_fn(|i| {
                            per_leg.then(|| SrtpContext::new(&member_key(i)))
                        }),
                    });
                }
            }
            Op::GroupTc { member, kind } => {
                let Some(g) = &group else { continue };
                let i = usize::from(member) % MEMBERS;
                let me = member_ssrc(i);
                let mut m = match kind {
                    GroupTc::Request {
                        priority,
                        emergency,
                    } => {
                        let mut m = TcMessage::new(MessageKind::TransmissionRequest, me);
                        m.fields.transmission_priority = priority;
                        m.fields.transmission_indicator = emergency.then_some(INDICATOR_EMERGENCY);
                        m
                    }
                    GroupTc::End => TcMessage::new(MessageKind::TransmissionEndRequest, me),
                    GroupTc::QueuePosition => TcMessage::new(MessageKind::QueuePositionRequest, me),
                    GroupTc::ReceiveMedia { of } => {
                        let mut m = TcMessage::new(MessageKind::ReceiveMediaRequest, me);
                        m.fields.video_ssrc = Some(member_ssrc(usize::from(of) % MEMBERS));
                        m
                    }
                    GroupTc::ReceptionEnd { of } => {
                        let mut m = TcMessage::new(MessageKind::MediaReceptionEndRequest, me);
                        m.fields.video_ssrc = Some(member_ssrc(usize::from(of) % MEMBERS));
                        m
                    }
                    GroupTc::Ack { name, message_type } => {
                        let mut m = TcMessage::new(MessageKind::TransmissionControlAck, me);
                        m.fields.message_type = Some(message_type & 0x1f);
                        m.fields.message_name = Some(
                            [AppName::Mcv0, AppName::Mcv1, AppName::Mcv2][usize::from(name % 3)],
                        );
                        m
                    }
                    GroupTc::Other {
                        name,
                        message_type,
                        ack,
                    } => {
                        let app =
                            [AppName::Mcv0, AppName::Mcv1, AppName::Mcv2][usize::from(name % 3)];
                        let mut m = TcMessage::new(MessageKind::from_wire(app, message_type), me);
                        m.ack_required = ack;
                        m
                    }
                };
                m.fields.user_id = None;
                if let (Some((_, Some(ctl))), Ok(b)) =
                    (g.ports[i], m.to_vec(&EmitOptions::default()))
                {
                    group_sent += send_to(&c.members[i].1, ctl, &b);
                }
            }
            Op::GroupRtp {
                member,
                announced,
                seq,
                len,
            } => {
                let Some(g) = &mut group else { continue };
                let i = usize::from(member) % MEMBERS;
                let Some((video, _)) = g.ports[i] else {
                    continue;
                };
                let ssrc = if announced {
                    member_ssrc(i)
                } else {
                    0x7777_0000 + i as u32
                };
                let n = 12 + usize::from(len % 1200);
                buf[..n].fill(0xcd);
                buf[0] = 0x80;
                buf[1] = 96;
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                buf[4..8].copy_from_slice(&u32::from(seq).wrapping_mul(3000).to_be_bytes());
                buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
                let n = match g.srtp[i].as_mut() {
                    Some(x) => x.protect_rtp(&mut buf, n).ok(),
                    None => Some(n),
                };
                if let Some(n) = n {
                    group_sent += send_to(&c.members[i].0, video, &buf[..n]);
                }
            }
            Op::GroupRtcp { member, kind } => {
                let Some(g) = &mut group else { continue };
                let i = usize::from(member) % MEMBERS;
                let Some((video, _)) = g.ports[i] else {
                    continue;
                };
                let me = member_ssrc(i);
                let media = member_ssrc((i + 1) % MEMBERS);
                let n = match kind {
                    Rtcp::Pli => rtcp::emit_pli(me, media, &mut buf),
                    Rtcp::Fir(n) => rtcp::emit_fir(me, media, n, &mut buf),
                    Rtcp::Rr => rtcp::emit_receiver_report_empty(me, &mut buf),
                    Rtcp::Bye => rtcp::emit_bye(me, &mut buf),
                };
                let Ok(n) = n else { continue };
                let n = match g.srtp[i].as_mut() {
                    Some(x) => x.protect_rtcp(&mut buf, n).ok(),
                    None => Some(n),
                };
                if let Some(n) = n {
                    group_sent += send_to(&c.members[i].0, video, &buf[..n]);
                }
            }
            Op::GroupRaw {
                member,
                control,
                mut bytes,
            } => {
                let Some(g) = &group else { continue };
                let i = usize::from(member) % MEMBERS;
                let Some((video, ctl)) = g.ports[i] else {
                    continue;
                };
                bytes.truncate(1500);
                let (sock, to) = match (control, ctl) {
                    (true, Some(ctl)) => (&c.members[i].1, ctl),
                    _ => (&c.members[i].0, video),
                };
                group_sent += send_to(sock, to, &bytes);
            }
            Op::GroupLeave { member } => {
                let Some(g) = &mut group else { continue };
                let i = usize::from(member) % MEMBERS;
                if g.ports[i].is_some()
                    && engine
                        .remove_group_member(&g.id, &format!("sip:m{i}@example.org"))
                        .is_ok()
                {
                    g.ports[i] = None;
                }
            }
            Op::GroupJoin { member } => {
                let Some(g) = &mut group else { continue };
                let i = usize::from(member) % MEMBERS;
                if g.ports[i].is_some() {
                    continue;
                }
                if let Ok(answer) =
                    engine.add_group_member(&g.id, member_spec(c, i, g.per_leg, g.receive_only[i]))
                {
                    g.ports[i] = answer_ports(&answer.sdp_answer);
                    // A fresh leg: a fresh SRTP context (the relay's replay window is new).
                    g.srtp[i] = g.per_leg.then(|| SrtpContext::new(&member_key(i)));
                }
            }
            Op::GroupRelease => {
                if let Some(g) = group.take() {
                    if let Ok(s) = engine.release_group_call(&g.id) {
                        group_tc += s.tc.received.total();
                    }
                }
            }
            Op::Rtp {
                slot,
                from,
                to,
                announced,
                seq,
                marker,
                pt,
                len,
            } => {
                let s = &mut slots[usize::from(slot) % SLOTS];
                let ssrc = match from {
                    Who::Stranger => STRANGER_SSRC,
                    _ if announced => ANNOUNCED_SSRC,
                    Who::Caller => 0x1111_1111,
                    Who::Callee => 0x2222_2222,
                };
                let n = 12 + usize::from(len % 1200);
                buf[..n].fill(0xab);
                buf[0] = 0x80;
                buf[1] = (u8::from(marker) << 7) | (pt & 0x7f);
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                buf[4..8].copy_from_slice(&u32::from(seq).wrapping_mul(3000).to_be_bytes());
                buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
                if n > 12 {
                    buf[12] = if marker { 0x65 } else { 0x41 }; // H.264 IDR / non-IDR NAL
                }
                let n = match (from, s.per_leg) {
                    (Who::Caller, true) => s.srtp[0]
                        .as_mut()
                        .and_then(|x| x.protect_rtp(&mut buf, n).ok()),
                    (Who::Callee, true) => s.srtp[1]
                        .as_mut()
                        .and_then(|x| x.protect_rtp(&mut buf, n).ok()),
                    _ => Some(n),
                };
                if let Some(n) = n {
                    sent += send(c, s, from, to, &buf[..n]);
                }
            }
            Op::Rtcp {
                slot,
                from,
                to,
                kind,
            } => {
                let s = &mut slots[usize::from(slot) % SLOTS];
                let me = if matches!(from, Who::Stranger) {
                    STRANGER_SSRC
                } else {
                    0x3333_3333
                };
                let n = match kind {
                    Rtcp::Pli => rtcp::emit_pli(me, ANNOUNCED_SSRC, &mut buf),
                    Rtcp::Fir(n) => rtcp::emit_fir(me, ANNOUNCED_SSRC, n, &mut buf),
                    Rtcp::Rr => rtcp::emit_receiver_report_empty(me, &mut buf),
                    Rtcp::Bye => rtcp::emit_bye(me, &mut buf),
                };
                let Ok(n) = n else { continue };
                let n = match (from, s.per_leg) {
                    (Who::Caller, true) => s.srtp[0]
                        .as_mut()
                        .and_then(|x| x.protect_rtcp(&mut buf, n).ok()),
                    (Who::Callee, true) => s.srtp[1]
                        .as_mut()
                        .and_then(|x| x.protect_rtcp(&mut buf, n).ok()),
                    _ => Some(n),
                };
                if let Some(n) = n {
                    sent += send(c, s, from, to, &buf[..n]);
                }
            }
            Op::Tc {
                slot,
                from,
                to,
                name,
                message_type,
                ack,
            } => {
                let s = &slots[usize::from(slot) % SLOTS];
                let app = [AppName::Mcv0, AppName::Mcv1, AppName::Mcv2][usize::from(name % 3)];
                let me = if matches!(from, Who::Stranger) {
                    STRANGER_SSRC
                } else {
                    0x4444_4444
                };
                let mut m = TcMessage::new(MessageKind::from_wire(app, message_type), me);
                m.ack_required = ack;
                if let Ok(b) = m.to_vec(&EmitOptions::default()) {
                    sent += send(c, s, from, to, &b);
                }
            }
            Op::Raw {
                slot,
                from,
                to,
                mut bytes,
            } => {
                let s = &slots[usize::from(slot) % SLOTS];
                bytes.truncate(1500);
                if matches!(from, Who::Stranger) && bytes.len() >= 12 {
                    // Never an announced SSRC (RTP) or sender SSRC (RTCP) from the stranger.
                    bytes[4..12].copy_from_slice(&[0x57, 0x42, 0x4e, 0x47, 0x57, 0x42, 0x4e, 0x47]);
                }
                sent += send(c, s, from, to, &bytes);
            }
        }
    }
    // Let the worker finish what it was sent (and send what it originates), then count what
    // came back.
    if sent > 0 || established > 0 {
        std::thread::sleep(Duration::from_millis(3));
    }
    let caller_in = drain(&c.caller, true);
    let back = caller_in
        + drain(&c.caller_ctl, false)
        + drain(&c.callee, false)
        + drain(&c.callee_ctl, false);
    let mut group_back = 0;
    for (m, ctl) in &c.members {
        group_back += drain(m, false) + drain(ctl, false);
    }
    assert!(
        group_back <= 2 * group_sent + groups.len() as u64 * ALLOWANCE_PER_GROUP,
        "group amplification: {group_back} bytes out for {group_sent} in over {} groups",
        groups.len()
    );
    if let Some(g) = group.take() {
        if let Ok(s) = engine.release_group_call(&g.id) {
            group_tc += s.tc.received.total();
        }
    }
    let stranger_in = drain(&c.stranger, false);
    assert_eq!(
        stranger_in, 0,
        "the relay sent to an address that was neither negotiated nor latched"
    );
    assert!(
        back <= sent + established * ALLOWANCE_PER_CALL,
        "amplification: {back} bytes out for {sent} in over {established} calls"
    );
    common::release_all_and_check(&engine);
    let stats = engine.stats();
    if std::env::var_os("ENGINE_OPS_STATS").is_some() {
        // What an input reached: run a corpus with `-runs=0` and this set.
        eprintln!(
            "engine_ops: created {} established {established} sent {sent} back {back} forwarded to callee {} caller drops {} callee drops {} tc in {}",
            created.len(),
            stats.callee.packets_out,
            stats.caller.dropped_total(),
            stats.callee.dropped_total(),
            stats.tc_received.total(),
        );
        eprintln!(
            "engine_ops: groups {} group bytes in {group_sent} out {group_back} group tc in {group_tc}",
            groups.len()
        );
    }
    engine.shutdown();
    let mut released: HashMap<String, u32> = HashMap::new();
    while let Ok(ev) = events.try_recv() {
        if let CallEventKind::Released { .. } = ev.kind {
            *released.entry(ev.call_id.to_string()).or_default() += 1;
        }
    }
    for id in created.iter().chain(&groups) {
        assert_eq!(
            released.get(id).copied().unwrap_or(0),
            1,
            "call {id} released once"
        );
    }
    assert_eq!(released.len(), created.len() + groups.len());
});

/// Sends `b` from `sock` to the relay's port `to`; the bytes sent.
fn send_to(sock: &UdpSocket, to: u16, b: &[u8]) -> u64 {
    match sock.send_to(b, SocketAddr::from(([127, 0, 0, 1], to))) {
        Ok(n) => n as u64,
        Err(_) => 0,
    }
}

/// Sends `b` from `from` to the relay port `to` of the slot's call; the bytes sent.
fn send(c: &Clients, s: &Slot, from: Who, to: Dest, b: &[u8]) -> u64 {
    let i = match to {
        Dest::CallerLeg => 0,
        Dest::CalleeLeg => 1,
        Dest::CallerControl => 2,
        Dest::CalleeControl => 3,
    };
    let Some(p) = s.ports[i] else { return 0 };
    let sock = match (from, to) {
        (Who::Stranger, _) => &c.stranger,
        (Who::Caller, Dest::CallerControl | Dest::CalleeControl) => &c.caller_ctl,
        (Who::Caller, _) => &c.caller,
        (Who::Callee, Dest::CallerControl | Dest::CalleeControl) => &c.callee_ctl,
        (Who::Callee, _) => &c.callee,
    };
    match sock.send_to(b, SocketAddr::from(([127, 0, 0, 1], p))) {
        Ok(n) => n as u64,
        Err(_) => 0,
    }
}
