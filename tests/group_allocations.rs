//! The group fan-out allocates nothing per packet or per receiver: once a `FanOut` has grown to
//! its high-water mark, a transmitter's media to 50 receivers (end_to_end and per_leg) and the
//! receivers' keyframe requests back are judged while a counting global allocator watches.
#![cfg(feature = "relay")]
#![allow(clippy::disallowed_methods)] // the test's own epoch; time then moves virtually

use mcvideo_relay::control::arbiter::{Arbiter, Slot};
use mcvideo_relay::control::MediaSecurity;
use mcvideo_relay::keys::{MasterKey, SrtpSuite};
use mcvideo_relay::relay::rules::{
    FanOut, GroupIngress, GroupRules, GroupRulesSetup, GroupStreamSetup, LegSetup, MemberMedia,
    Tally,
};
use mcvideo_relay::sdp::MediaKind;
use mcvideo_relay::srtp::SrtpContext;
use mcvideo_relay::wire::rtcp::emit_pli;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SSRC: u32 = 0xa110_c000;
const RECEIVERS: usize = 50;

fn s(i: usize) -> Slot {
    Slot::new(i).unwrap()
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 5000))
}

fn key(b: u8) -> MasterKey {
    MasterKey::new(SrtpSuite::AeadAes128Gcm, vec![b; 28]).unwrap()
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&SSRC.to_be_bytes());
    p.extend(std::iter::repeat_n(0x41u8, 1200));
    p
}

/// Judges 2,000 media packets and 50 keyframe requests after a warm-up; returns the
/// allocations counted during them and the deliveries made.
fn run(security: MediaSecurity) -> (usize, usize) {
    let per_leg = security == MediaSecurity::PerLeg;
    let arbiter = Arc::new(Arbiter::new());
    let mut g = GroupRules::new(&GroupRulesSetup {
        arbiter: arbiter.clone(),
        security,
        streams: vec![GroupStreamSetup {
            kind: MediaKind::Video,
            encrypted: per_leg,
            clock_rate: 90_000,
            encoding: None,
        }],
        server_ssrc: 1,
        latch_after: 3,
    });
    for i in 0..=RECEIVERS {
        let leg = LegSetup {
            remote_rtp: Some(addr(i)),
            remote_rtcp: Some(addr(i)),
            srtp_in: per_leg.then(|| key(2 * i as u8 + 1)),
            srtp_out: per_leg.then(|| key(2 * i as u8 + 2)),
            ..LegSetup::default()
        };
        let media = MemberMedia {
            legs: vec![leg],
            control: None,
        };
        g.add_member(s(i), &media).unwrap();
    }
    assert!(arbiter.permit(s(0)));
    for r in 1..=RECEIVERS {
        arbiter.add_route(s(0), s(r));
    }
    g.set_transmitter_ssrcs(s(0), &[SSRC]);
    // Every packet made before counting (the test's own allocations).
    let mut tx = SrtpContext::new(&key(1));
    let mut media: Vec<Vec<u8>> = (0..2_100u16)
        .map(|seq| {
            let mut p = rtp(seq);
            if per_leg {
                let len = p.len();
                p.resize(len + 16, 0);
                let n = tx.protect_rtp(&mut p, len).unwrap();
                p.truncate(n);
            }
            p
        })
        .collect();
    let mut plis: Vec<Vec<u8>> = (1..=RECEIVERS)
        .map(|r| {
            let mut p = vec![0u8; 64];
            let n = emit_pli(0x100 + r as u32, SSRC, &mut p).unwrap();
            if per_leg {
                let mut ctx = SrtpContext::new(&key(2 * r as u8 + 1));
                let n = ctx.protect_rtcp(&mut p, n).unwrap();
                p.truncate(n);
            } else {
                p.truncate(n);
            }
            p
        })
        .collect();
    let t0 = Instant::now();
    let (mut out, mut t) = (FanOut::new(), Tally::default());
    let at = |m: usize| GroupIngress {
        stream: 0,
        member: s(m),
        rtcp_socket: false,
    };
    let (warm, counted) = media.split_at_mut(100);
    for p in warm {
        g.judge(at(0), addr(0), t0, p, &mut out, &mut t).unwrap();
    }
    let mut delivered = 0;
    let region = Region::new(GLOBAL);
    for (i, p) in counted.iter_mut().enumerate() {
        let now = t0 + Duration::from_millis(i as u64);
        g.judge(at(0), addr(0), now, p, &mut out, &mut t).unwrap();
        delivered += out.len();
    }
    let later = t0 + Duration::from_secs(5);
    for (i, p) in plis.iter_mut().enumerate() {
        let r = i + 1;
        g.judge(at(r), addr(r), later, p, &mut out, &mut t).unwrap();
        delivered += out.len();
    }
    let allocations = region.change().allocations;
    (allocations, delivered)
}

#[test]
fn group_fan_out_allocates_nothing() {
    for security in [MediaSecurity::EndToEnd, MediaSecurity::PerLeg] {
        let (allocations, delivered) = run(security);
        eprintln!("{security:?}: {allocations} allocations for {delivered} deliveries");
        // 2,000 packets to 50 receivers, and the first of 50 simultaneous PLIs.
        assert_eq!(delivered, 2_000 * RECEIVERS + 1, "{security:?}");
        assert_eq!(allocations, 0, "{security:?}");
    }
}
