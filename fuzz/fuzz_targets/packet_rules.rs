//! Operation sequences against one call's per-packet rules (`relay::rules::CallRules`), with
//! time moving forward and no socket: packets from the caller, the callee and strangers, on
//! RTP and RTCP sockets and the control channels, grants and revokes in between.
//!
//! Invariants on every input: nothing panics; the receive-only party's media is never
//! forwarded; nothing is forwarded while the transmitter does not hold the grant, except RTCP;
//! a verdict never asks to send more bytes than the packet holds (plain mode); a stranger to a
//! leg with a source never gets a packet through.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mcvideo_relay::control::arbiter::Arbiter;
use mcvideo_relay::control::{MediaSecurity, Party};
use mcvideo_relay::relay::rules::{
    CallRules, ControlSetup, Ingress, LegSetup, RulesSetup, StreamSetup, Tally,
};
use mcvideo_relay::sdp::MediaKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Arbitrary)]
enum Who {
    Caller,
    Callee,
    Stranger(u8),
}

#[derive(Debug, Arbitrary)]
enum Op {
    Packet {
        who: Who,
        to_callee_leg: bool,
        rtcp_socket: bool,
        stream: u8,
        bytes: Vec<u8>,
    },
    Control {
        who: Who,
        callee_channel: bool,
        bytes: Vec<u8>,
    },
    Grant,
    Revoke,
    Keyframe,
    Wait(u16),
}

#[derive(Debug, Arbitrary)]
struct Input {
    pull: bool,
    announce: bool,
    ops: Vec<Op>,
}

fn addr(who: &Who, callee_leg: bool) -> SocketAddr {
    match who {
        Who::Caller => SocketAddr::from(([10, 0, 0, 1], 5000)),
        Who::Callee => SocketAddr::from(([10, 0, 0, 2], 6000)),
        Who::Stranger(n) => SocketAddr::from(([203, 0, 113, *n], 7000 + u16::from(callee_leg))),
    }
}

fuzz_target!(|input: Input| {
    let arbiter = Arc::new(Arbiter::with_members(2));
    let transmitter = if input.pull {
        Party::Callee
    } else {
        Party::Caller
    };
    let leg = |who: Who, ssrc: u32| LegSetup {
        remote_rtp: Some(addr(&who, false)),
        remote_rtcp: Some(addr(&who, false)),
        announced: if input.announce { vec![ssrc] } else { vec![] },
        separate_rtcp: true,
        srtp_in: None,
        srtp_out: None,
        send_only: false,
    };
    let stream = |kind| StreamSetup {
        kind,
        encrypted: false,
        clock_rate: 90_000,
        encoding: None,
        legs: [leg(Who::Caller, 0x1111), leg(Who::Callee, 0x2222)],
        transmitter_ssrcs: vec![],
    };
    let mut rules = CallRules::new(&RulesSetup {
        arbiter: arbiter.clone(),
        security: MediaSecurity::EndToEnd,
        transmitter,
        streams: vec![stream(MediaKind::Video), stream(MediaKind::Audio)],
        control: [
            Some(ControlSetup {
                remote: Some(addr(&Who::Caller, false)),
                key: None,
            }),
            Some(ControlSetup {
                remote: Some(addr(&Who::Callee, false)),
                key: None,
            }),
        ],
        server_ssrc: 1,
        video_ssrc: 0x1111,
        latch_after: 3,
    })
    .expect("plain rules build");
    #[allow(clippy::disallowed_methods)] // the target's own epoch; time then moves virtually
    let mut now = Instant::now();
    let mut tally = Tally::default();
    let mut spoken = [false; 2];
    for op in input.ops.into_iter().take(512) {
        match op {
            Op::Packet {
                who,
                to_callee_leg,
                rtcp_socket,
                stream,
                mut bytes,
            } => {
                let party = if to_callee_leg {
                    Party::Callee
                } else {
                    Party::Caller
                };
                let at = Ingress {
                    stream: usize::from(stream % 3),
                    party,
                    rtcp_socket,
                };
                let from = addr(&who, to_callee_leg);
                let owner = if to_callee_leg {
                    Who::Callee
                } else {
                    Who::Caller
                };
                let stranger = from != addr(&owner, false);
                let len = bytes.len();
                let verdict = rules.judge(at, from, now, &mut bytes, &mut tally);
                if let Ok(e) = verdict {
                    assert!(e.len <= len, "plain mode never grows a packet");
                    if !e.rtcp && e.len > 0 {
                        assert_eq!(party, transmitter, "receive-only media forwarded");
                        assert!(arbiter.may_forward(party.slot()), "forwarded without the grant");
                        assert!(
                            !(stranger && spoken[party.index()]),
                            "a stranger got through"
                        );
                    }
                    if !stranger {
                        spoken[party.index()] = true;
                    }
                }
            }
            Op::Control {
                who,
                callee_channel,
                mut bytes,
            } => {
                let party = if callee_channel {
                    Party::Callee
                } else {
                    Party::Caller
                };
                let from = addr(&who, false);
                if let Ok(n) = rules.admit_control(party, from, now, &mut bytes) {
                    assert!(n <= bytes.len());
                }
                let mut buf = vec![0u8; 128];
                let _ = rules.seal_control(party, &mut buf, 64);
            }
            Op::Grant => {
                let _ = arbiter.permit(transmitter.slot());
            }
            Op::Revoke => {
                arbiter.forbid(transmitter.slot());
            }
            Op::Keyframe => {
                let mut buf = [0u8; 64];
                if let Some((si, n)) = rules.keyframe_request(now, &mut buf) {
                    assert!(si < 2 && n <= buf.len());
                }
            }
            Op::Wait(ms) => now += Duration::from_millis(u64::from(ms)),
        }
    }
    let _ = rules.quality(now);
});
