//! Operation sequences against a call table, with time moving forward: any order of API calls,
//! control datagrams, media and timer ticks keeps the invariants (no panic, the callee never
//! passes, released calls forward nothing and hold no timers, ports are never leaked or
//! double-freed, output per input is bounded).
#![no_main]
mod common;

use arbitrary::Arbitrary;
use common::{answer, offer};
use libfuzzer_sys::fuzz_target;
use mcvideo_relay::control::call::{
    AnswerCall, CallConfig, CallState, CallTable, CreateCall, PortAllocator, RelayPort,
    SeededEntropy,
};
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
    assert!(!call.arbiter().may_forward(Party::Callee));
    if call.state() == CallState::Released {
        assert!(!call.arbiter().may_forward(Party::Caller));
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
    for op in ops.into_iter().take(256) {
        let touched = match op {
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
