//! Operation sequences against a call table and a group call, with time moving forward: any
//! order of API calls, control datagrams, media and timer ticks keeps the invariants (no panic,
//! the callee never passes, released calls forward nothing and hold no timers, ports are never
//! leaked or double-freed, output per input is bounded).
//!
//! Group calls (`Op::Group`): joins, leaves, transmission requests with priorities and
//! indicators, ends, reception requests, raw datagrams and media from any member keep the
//! group's invariants: at most Cx members permitted, only present members that may transmit,
//! nobody receives itself or more than C9 streams, a send-only member receives nothing, the
//! SSRC registry holds exactly the running transmissions' SSRCs, every output parses, and a
//! released group forwards nothing and holds no timer and no SSRC.
#![no_main]
mod common;

use arbitrary::Arbitrary;
use common::{answer, offer};
use libfuzzer_sys::fuzz_target;
use mcvideo_relay::control::call::{
    AnswerCall, CallConfig, CallState, CallTable, CreateCall, PortAllocator, RelayPort,
    SeededEntropy,
};
use mcvideo_relay::control::arbiter::{slots, Arbiter, Slot};
use mcvideo_relay::control::server::{TcConfig, ServerIdentity, TransmissionControlServer, MemberSetup, ReceptionMode};
use mcvideo_relay::control::ssrc::SsrcRegistry;
use mcvideo_relay::control::policy::AllowAll;
use mcvideo_relay::control::registry::UeEntry;
use mcvideo_relay::control::{MediaSecurity, Party, ReleaseReason};
use mcvideo_relay::sdp::MediaKind;
use mcvideo_relay::wire::tc::{AppName, EmitOptions, MessageKind, TcMessage};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Arbitrary, Debug)]
enum Op {
    Create {
        id: u8,
        audio: bool,
        control: bool,
        per_leg: bool,
        ssrc: bool,
    },
    CreateRaw {
        id: u8,
        sdp: String,
    },
    Accept {
        id: u8,
        control: bool,
        reject_audio: bool,
    },
    AcceptRaw {
        id: u8,
        sdp: String,
    },
    Reject {
        id: u8,
    },
    Release {
        id: u8,
    },
    Control {
        id: u8,
        callee: bool,
        bytes: Vec<u8>,
    },
    Message {
        id: u8,
        callee: bool,
        name: u8,
        message_type: u8,
        ack: bool,
        acked_type: u8,
    },
    Media {
        id: u8,
        callee: bool,
        packets: u8,
    },
    Bye {
        id: u8,
        callee: bool,
    },
    Tick {
        ms: u16,
    },
    Register {
        ue: u8,
        designated: bool,
    },
    Unregister {
        ue: u8,
    },
    Group(GroupOp),
}

#[derive(Arbitrary, Debug)]
enum GroupOp {
    /// A fresh group with these attributes (replaces the current one).
    New {
        cx: u8,
        c9: u8,
        manual: bool,
        queueing: bool,
    },
    Join {
        member: u8,
        priority: u8,
        receive_only: bool,
        send_only: bool,
        control: bool,
        ssrc: Option<u32>,
    },
    Leave {
        member: u8,
    },
    Start,
    Request {
        member: u8,
        priority: Option<u8>,
        indicator: u16,
    },
    End {
        member: u8,
    },
    Message {
        member: u8,
        name: u8,
        message_type: u8,
        ack: bool,
        acked_type: u8,
        video_ssrc: Option<u32>,
        user: Option<u8>,
    },
    Bytes {
        member: u8,
        bytes: Vec<u8>,
    },
    Media {
        member: u8,
        packets: u8,
    },
    Release,
}

struct Group {
    s: TransmissionControlServer,
    ssrcs: Arc<SsrcRegistry>,
    cx: u32,
    c9: u32,
}

impl Group {
    fn new(cx: u8, c9: u8, manual: bool, queueing: bool) -> Group {
        let cfg = TcConfig {
            max_transmitters: cx % 3 + 1,
            max_streams_per_receiver: c9 % 3 + 1,
            reception_mode: if manual {
                ReceptionMode::Manual
            } else {
                ReceptionMode::Automatic
            },
            queueing,
            max_queue: 4,
            max_duration: Some(Duration::from_secs(60)),
            ..TcConfig::default()
        };
        let ssrcs = Arc::new(SsrcRegistry::new(3));
        Group {
            cx: u32::from(cfg.max_transmitters),
            c9: u32::from(cfg.max_streams_per_receiver),
            s: TransmissionControlServer::group(
                cfg,
                ServerIdentity {
                    call_id: "sip:g@x".into(),
                    server_ssrc: mcvideo_relay::Ssrc(5),
                },
                Arc::new(Arbiter::new()),
                ssrcs.clone(),
            ),
            ssrcs,
        }
    }

    fn user(m: u8) -> String {
        format!("sip:m{}@x", m % 12)
    }

    fn slot(&self, m: u8) -> Option<Slot> {
        self.s.slot_of(&Self::user(m))
    }

    fn op(&mut self, now: Instant, op: GroupOp) {
        match op {
            GroupOp::New { .. } => {}
            GroupOp::Join {
                member,
                priority,
                receive_only,
                send_only,
                control,
                ssrc,
            } => {
                let _ = self.s.join(
                    now,
                    MemberSetup {
                        user_id: Self::user(member),
                        priority,
                        receive_only,
                        send_only,
                        control,
                        video_ssrc: ssrc.map(mcvideo_relay::Ssrc),
                        audio_ssrc: None,
                    },
                );
            }
            GroupOp::Leave { member } => {
                if let Some(s) = self.slot(member) {
                    assert!(self.s.leave(now, s));
                }
            }
            GroupOp::Start => self.s.start(now),
            GroupOp::Request {
                member,
                priority,
                indicator,
            } => {
                let mut m = TcMessage::new(MessageKind::TransmissionRequest, 9);
                m.fields.transmission_priority = priority;
                m.fields.transmission_indicator = Some(indicator);
                self.send(now, member, &m);
            }
            GroupOp::End { member } => {
                self.send(
                    now,
                    member,
                    &TcMessage::new(MessageKind::TransmissionEndRequest, 9),
                );
            }
            GroupOp::Message {
                member,
                name: n,
                message_type,
                ack,
                acked_type,
                video_ssrc,
                user,
            } => {
                let app = [AppName::Mcv0, AppName::Mcv1, AppName::Mcv2][usize::from(n % 3)];
                let mut m = TcMessage::new(MessageKind::from_wire(app, message_type), 7);
                m.ack_required = ack;
                m.fields.message_type = Some(acked_type & 0x1f);
                m.fields.message_name = Some(AppName::Mcv1);
                m.fields.video_ssrc = video_ssrc;
                let user = user.map(Self::user);
                m.fields.transmitting_user_id = user.as_deref();
                self.send(now, member, &m);
            }
            GroupOp::Bytes { member, bytes } => {
                if let Some(s) = self.slot(member) {
                    self.s.handle_datagram(now, s, &bytes);
                }
            }
            GroupOp::Media { member, packets } => {
                if let Some(s) = self.slot(member) {
                    self.s.handle_media(now, s, u32::from(packets));
                }
            }
            GroupOp::Release => self.s.release(ReleaseReason::Released),
        }
    }

    fn send(&mut self, now: Instant, member: u8, m: &TcMessage<'_>) {
        if let (Some(s), Ok(b)) = (self.slot(member), m.to_vec(&EmitOptions::default())) {
            self.s.handle_datagram(now, s, &b);
        }
    }

    fn tick(&mut self, now: Instant) {
        if self.s.poll_timeout().is_some_and(|t| t <= now) {
            self.s.handle_timeout(now);
        }
    }

    fn check(&mut self) {
        let mut buf = Vec::new();
        let mut n = 0;
        while self.s.poll_transmit(&mut buf).is_some() {
            n += 1;
            assert!(TcMessage::parse(&buf).is_ok(), "group output parses");
            assert!(n < 1100, "unbounded group output");
        }
        while self.s.poll_event().is_some() {}
        let arb = self.s.arbiter().clone();
        let members = self.s.members();
        let permitted = arb.permitted();
        assert!(permitted.count_ones() <= self.cx, "more than Cx transmit");
        let txs = self.s.transmissions();
        assert_eq!(txs.len() as u32, permitted.count_ones());
        for m in &members {
            assert_eq!(arb.may_forward(m.member), m.transmitting);
            assert!(
                !(m.receive_only && m.transmitting),
                "a receive-only member transmits"
            );
            assert!(
                !(m.send_only && !m.receiving.is_empty()),
                "a send-only member receives"
            );
            assert!(m.receiving.len() as u32 <= self.c9, "over C9");
            assert!(!m.receiving.contains(&m.member), "receives itself");
            for t in &m.receiving {
                assert!(
                    arb.receivers(*t) & m.member.bit() != 0,
                    "list and routes agree"
                );
            }
        }
        for s in slots(permitted) {
            assert!(
                members.iter().any(|m| m.member == s),
                "an absent member permitted"
            );
        }
        assert_eq!(self.ssrcs.in_use(), 2 * txs.len(), "SSRCs leaked or lost");
        if self.s.finished().is_some() {
            assert_eq!(permitted, 0);
            assert_eq!(self.s.poll_timeout(), None);
            assert_eq!(self.ssrcs.in_use(), 0);
        }
    }
}

#[derive(Default)]
struct Ports {
    next: u16,
    in_use: HashSet<u16>,
}

impl PortAllocator for Ports {
    fn allocate(&mut self, _: Party, _: &MediaKind, _: bool) -> Option<RelayPort> {
        if self.in_use.len() >= 40 {
            return None;
        }
        loop {
            self.next = self.next.wrapping_add(2) % 1000;
            if self.in_use.insert(self.next) {
                let p = 40_000 + self.next;
                return Some(RelayPort {
                    rtp: SocketAddr::from(([127, 0, 0, 1], p)),
                    rtcp: SocketAddr::from(([127, 0, 0, 1], p + 1)),
                });
            }
        }
    }
    fn free(&mut self, port: RelayPort) {
        assert!(
            self.in_use.remove(&(port.rtp.port() - 40_000)),
            "double free"
        );
    }
}

fn settle(table: &mut CallTable, ports: &mut Ports, id: &str) {
    let Some(call) = table.get_mut(id) else {
        return;
    };
    let mut buf = Vec::new();
    let mut n = 0;
    while call.poll_transmit(&mut buf).is_some() {
        n += 1;
        assert!(TcMessage::parse(&buf).is_ok(), "server output parses");
        assert!(n < 100, "unbounded output");
    }
    while call.poll_event().is_some() {}
    assert!(!call.arbiter().may_forward(Party::Callee.slot()));
    if call.state() == CallState::Released {
        assert!(!call.arbiter().may_forward(Party::Caller.slot()));
        assert_eq!(call.poll_timeout(), None);
        let call = table.remove(id).unwrap();
        for p in call.relay_ports() {
            ports.free(p);
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut cfg = CallConfig::default();
    cfg.max_calls = 8;
    cfg.tc.max_duration = Some(Duration::from_secs(60));
    let mut table = CallTable::new(cfg, Arc::new(AllowAll), Box::new(SeededEntropy(1)));
    let mut ports = Ports::default();
    let t0 = Instant::now();
    let mut now = t0;
    let name = |id: u8| format!("c{}", id % 8);
    let mut group = Group::new(0, 3, false, true);
    for op in ops.into_iter().take(256) {
        let touched = match op {
            Op::Group(GroupOp::New {
                cx,
                c9,
                manual,
                queueing,
            }) => {
                group = Group::new(cx, c9, manual, queueing);
                continue;
            }
            Op::Group(op) => {
                group.op(now, op);
                group.check();
                continue;
            }
            Op::Create {
                id,
                audio,
                control,
                per_leg,
                ssrc,
            } => {
                let req = CreateCall {
                    call_id: Some(name(id).into()),
                    caller_id: "sip:a@x".into(),
                    caller_sdp: offer(audio, control, per_leg, ssrc),
                    callee_id: "sip:b@x".into(),
                    video_push: true,
                    video_pull: false,
                    commencement_mode: None,
                    media_security: if per_leg {
                        MediaSecurity::PerLeg
                    } else {
                        MediaSecurity::EndToEnd
                    },
                    caller_tc_key: None,
                    callee_interface: None,
                    caller_interface: None,
                };
                let _ = table.create_call(now, req, &mut ports);
                name(id)
            }
            Op::CreateRaw { id, sdp } => {
                let req = CreateCall {
                    call_id: Some(name(id).into()),
                    caller_id: "sip:a@x".into(),
                    caller_sdp: sdp,
                    callee_id: "sip:b@x".into(),
                    video_push: true,
                    video_pull: false,
                    commencement_mode: None,
                    media_security: MediaSecurity::PerLeg,
                    caller_tc_key: None,
                    callee_interface: None,
                    caller_interface: None,
                };
                let _ = table.create_call(now, req, &mut ports);
                name(id)
            }
            Op::Accept {
                id,
                control,
                reject_audio,
            } => {
                let a = AnswerCall {
                    callee_sdp: answer(control, reject_audio, true),
                    callee_tc_key: None,
                };
                let _ = table.accept_call(now, &name(id), a);
                name(id)
            }
            Op::AcceptRaw { id, sdp } => {
                let _ = table.accept_call(
                    now,
                    &name(id),
                    AnswerCall {
                        callee_sdp: sdp,
                        callee_tc_key: None,
                    },
                );
                name(id)
            }
            Op::Reject { id } | Op::Release { id } => {
                let r = if matches!(op, Op::Reject { .. }) {
                    table.reject_call(now, &name(id))
                } else {
                    table.release_call(now, &name(id), ReleaseReason::Released)
                };
                if let Ok(call) = r {
                    assert_eq!(call.state(), CallState::Released);
                    for p in call.relay_ports() {
                        ports.free(p);
                    }
                }
                name(id)
            }
            Op::Control { id, callee, bytes } => {
                if let Some(c) = table.get_mut(&name(id)) {
                    c.handle_control(
                        now,
                        if callee { Party::Callee } else { Party::Caller },
                        &bytes,
                    );
                }
                name(id)
            }
            Op::Message {
                id,
                callee,
                name: n,
                message_type,
                ack,
                acked_type,
            } => {
                let app = [AppName::Mcv0, AppName::Mcv1, AppName::Mcv2][usize::from(n % 3)];
                let mut m = TcMessage::new(MessageKind::from_wire(app, message_type), 7);
                m.ack_required = ack;
                m.fields.message_type = Some(acked_type & 0x1f);
                m.fields.message_name = Some(AppName::Mcv1);
                if let (Some(c), Ok(b)) =
                    (table.get_mut(&name(id)), m.to_vec(&EmitOptions::default()))
                {
                    c.handle_control(now, if callee { Party::Callee } else { Party::Caller }, &b);
                }
                name(id)
            }
            Op::Media {
                id,
                callee,
                packets,
            } => {
                if let Some(c) = table.get_mut(&name(id)) {
                    c.handle_media(
                        now,
                        if callee { Party::Callee } else { Party::Caller },
                        u32::from(packets),
                    );
                }
                name(id)
            }
            Op::Bye { id, callee } => {
                if let Some(c) = table.get_mut(&name(id)) {
                    c.handle_rtcp_bye(now, if callee { Party::Callee } else { Party::Caller });
                }
                name(id)
            }
            Op::Tick { ms } => {
                now += Duration::from_millis(u64::from(ms) * 10);
                group.tick(now);
                group.check();
                let ids: Vec<String> = table.iter().map(|c| c.id().to_owned()).collect();
                for id in &ids {
                    if let Some(c) = table.get_mut(id) {
                        if c.poll_timeout().is_some_and(|t| t <= now) {
                            c.handle_timeout(now);
                        }
                    }
                    settle(&mut table, &mut ports, id);
                }
                continue;
            }
            Op::Register { ue, designated } => {
                let _ = table.registry_mut().register(
                    "sip:b@x",
                    UeEntry {
                        ue_id: format!("ue{}", ue % 4),
                        designated_for_private_calls: designated,
                        commencement_mode: None,
                    },
                );
                continue;
            }
            Op::Unregister { ue } => {
                table
                    .registry_mut()
                    .unregister("sip:b@x", &format!("ue{}", ue % 4));
                continue;
            }
        };
        settle(&mut table, &mut ports, &touched);
    }
    // Every port in use belongs to a live call.
    let held: usize = table.iter().map(|c| c.relay_ports().count()).sum();
    assert_eq!(held, ports.in_use.len());
});
