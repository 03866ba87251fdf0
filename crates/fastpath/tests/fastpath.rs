//! The kernel fast path on real interfaces, as root: each test makes its own network
//! namespaces (its own `lo`), so nothing is attached to the host's interfaces, and the
//! namespaces (with everything attached in them) are deleted at the end. Skipped, with the
//! reason printed, when not root or when the crate was built without clang.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mcvideo_relay_fastpath::{ifindex, tcx_ingress_programs, Egress, Error, FastPath, Leg};

const QUIET: Duration = Duration::from_millis(150);
const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The sockets of a one-leg relay on `lo`: the sender, the relay's port for the leg (where
/// packets the kernel does not forward arrive), the relay's egress port, the destination.
struct LoLeg {
    sender: std::net::UdpSocket,
    relay_in: std::net::UdpSocket,
    relay_out: std::net::UdpSocket,
    dest: std::net::UdpSocket,
    key: SocketAddrV4,
    leg: Leg,
}

const SSRC: u32 = 0x0bad_cafe;

fn lo_leg(granted: bool) -> LoLeg {
    let any = SocketAddrV4::new(LO, 0);
    let (sender, relay_in, relay_out, dest) = (udp(any), udp(any), udp(any), udp(any));
    let key = local(&relay_in);
    let leg = Leg {
        source: local(&sender),
        ssrcs: vec![0x1111, SSRC],
        granted,
        egress: Egress {
            from: local(&relay_out),
            to: local(&dest),
            ifindex: 0,
        },
        clock_rate: 90_000,
        keyframes: false,
        last_keyframe: None,
        fanout: Vec::new(),
    };
    LoLeg {
        sender,
        relay_in,
        relay_out,
        dest,
        key,
        leg,
    }
}

#[test]
fn lo_forwards_rewritten_with_correct_checksums_and_counts() {
    if !can_run("lo_forwards_rewritten_with_correct_checksums_and_counts") {
        return;
    }
    let ns = Netns::new("lo");
    ns.run(|| {
        let mut fp = FastPath::open("lo").expect("open");
        let l = lo_leg(true);
        fp.install(l.key, &l.leg).unwrap();
        assert_eq!(fp.leg(l.key).unwrap().as_ref(), Some(&l.leg));

        // Ordinary UDP (the checksum left to offload: CHECKSUM_PARTIAL on lo).
        for seq in 100..120u16 {
            l.sender.send_to(&rtp(96, seq, SSRC, 160), l.key).unwrap();
        }
        let got = drain(&l.dest, QUIET);
        assert_eq!(got.len(), 20, "all forwarded");
        for (i, (p, from)) in got.iter().enumerate() {
            assert_eq!(
                *from,
                local(&l.relay_out),
                "source rewritten to the relay's egress port"
            );
            assert_eq!(*p, rtp(96, 100 + i as u16, SSRC, 160), "payload intact");
        }
        assert!(
            drain(&l.relay_in, QUIET).is_empty(),
            "nothing reached the relay socket"
        );

        // A full software checksum (raw socket): the receiver verifies every byte of it.
        let before = udp_csum_errors();
        let src = l.leg.source;
        for (seq, with_checksum) in [(120u16, true), (121, false)] {
            let d = udp_datagram(src, l.key, &rtp(96, seq, 0x1111, 200), with_checksum);
            send_raw_udp(src, l.key, &d);
        }
        let got = drain(&l.dest, QUIET);
        assert_eq!(
            got.len(),
            2,
            "checksummed and checksum-less datagrams both delivered"
        );
        assert_eq!(got[0].0, rtp(96, 120, 0x1111, 200));
        assert_eq!(
            udp_csum_errors(),
            before,
            "no checksum error after the rewrite"
        );
        // The control: a wrong checksum is seen and counted by this namespace's UDP.
        let mut bad = udp_datagram(src, local(&l.dest), &rtp(96, 1, 0x1111, 20), true);
        bad[8] ^= 0xff;
        send_raw_udp(src, local(&l.dest), &bad);
        assert!(drain(&l.dest, QUIET).is_empty());
        assert_eq!(
            udp_csum_errors(),
            before + 1,
            "the control datagram failed its checksum"
        );

        let c = fp.counters(l.key).unwrap();
        assert_eq!(c.packets, 22);
        assert_eq!(c.bytes, 20 * (12 + 160) + 2 * (12 + 200));
        assert_eq!(c.highest_seq, Some(121));
        assert_eq!(c.errors, 0);
        assert_eq!(c.frames, 0, "no marker bit was set");
        assert!(
            c.last_forwarded_ago
                .is_some_and(|a| a < std::time::Duration::from_secs(10)),
            "{c:?}"
        );
        assert_eq!(
            c.passed_up_wrong_source
                + c.passed_up_not_rtp
                + c.passed_up_unknown_ssrc
                + c.passed_up_not_granted,
            0
        );
    });
}

#[test]
fn lo_passes_up_what_it_must_not_forward_counted_by_reason() {
    if !can_run("lo_passes_up_what_it_must_not_forward_counted_by_reason") {
        return;
    }
    let ns = Netns::new("up");
    ns.run(|| {
        let mut fp = FastPath::open("lo").expect("open");
        let l = lo_leg(true);
        fp.install(l.key, &l.leg).unwrap();
        let stranger = udp(SocketAddrV4::new(LO, 0));

        stranger.send_to(&rtp(96, 1, SSRC, 100), l.key).unwrap(); // wrong source
        l.sender.send_to(&rtp(96, 2, 0x7777, 100), l.key).unwrap(); // unknown SSRC
        l.sender.send_to(&rtcp(200, SSRC), l.key).unwrap(); // RTCP SR
        l.sender.send_to(&rtcp(204, SSRC), l.key).unwrap(); // MCV0 (RTCP APP)
        l.sender.send_to(&rtp(72, 3, SSRC, 100), l.key).unwrap(); // PT 72: an RTCP range type
        l.sender
            .send_to(b"\x40\x60short-and-not-rtp", l.key)
            .unwrap(); // version 1
        let up = drain(&l.relay_in, QUIET);
        assert_eq!(up.len(), 6, "all six reached the relay's socket");
        assert_eq!(
            up[0],
            (rtp(96, 1, SSRC, 100), local(&stranger)),
            "unchanged"
        );
        assert_eq!(up[2], (rtcp(200, SSRC), l.leg.source));
        assert!(drain(&l.dest, QUIET).is_empty(), "nothing forwarded");

        // Not granted.
        let mut leg = l.leg.clone();
        leg.granted = false;
        fp.install(l.key, &leg).unwrap();
        l.sender.send_to(&rtp(96, 4, SSRC, 100), l.key).unwrap();
        assert_eq!(drain(&l.relay_in, QUIET).len(), 1);
        assert!(drain(&l.dest, QUIET).is_empty());

        let c = fp.counters(l.key).unwrap();
        assert_eq!(c.packets, 0);
        assert_eq!(c.passed_up_wrong_source, 1);
        assert_eq!(c.passed_up_unknown_ssrc, 1);
        assert_eq!(c.passed_up_not_rtp, 4);
        assert_eq!(
            c.passed_up_not_granted, 1,
            "counters kept across a re-install"
        );
        assert_eq!(c.highest_seq, None);

        // A port with no entry is none of the program's business.
        let other = udp(SocketAddrV4::new(LO, 0));
        l.sender
            .send_to(&rtp(96, 5, SSRC, 100), local(&other))
            .unwrap();
        assert_eq!(drain(&other, QUIET).len(), 1);
    });
}

#[test]
fn a_gso_batch_goes_up_whole_and_is_judged_by_the_relay() {
    if !can_run("a_gso_batch_goes_up_whole_and_is_judged_by_the_relay") {
        return;
    }
    let ns = Netns::new("gso");
    ns.run(|| {
        let mut fp = FastPath::open("lo").expect("open");
        let l = lo_leg(true);
        fp.install(l.key, &l.leg).unwrap();
        // Three RTP packets in one send, cut by the kernel into 112-byte datagrams (UDP GSO):
        // the first has an allowed SSRC, the others one the leg does not allow.
        let mut batch = rtp(96, 1, SSRC, 100);
        batch.extend(rtp(96, 2, 0x7777, 100));
        batch.extend(rtp(96, 3, 0x7777, 100));
        set_udp_segment(&l.sender, 112);
        l.sender.send_to(&batch, l.key).unwrap();
        let up = drain(&l.relay_in, QUIET);
        assert_eq!(up.len(), 3, "the whole batch reached the relay's socket");
        assert_eq!(up[1].0, rtp(96, 2, 0x7777, 100));
        assert!(drain(&l.dest, QUIET).is_empty(), "nothing forwarded");
        // Passed up either before the lookup (on lo the batch's RTP headers lie outside the
        // linear data the program can read) or by the GSO check: never counted as forwarded.
        let c = fp.counters(l.key).unwrap();
        assert_eq!((c.packets, c.bytes), (0, 0), "{c:?}");
        // The same socket's single datagrams still go through the kernel.
        set_udp_segment(&l.sender, 0);
        l.sender.send_to(&rtp(96, 4, SSRC, 100), l.key).unwrap();
        assert_eq!(drain(&l.dest, QUIET).len(), 1);
        assert_eq!(fp.counters(l.key).unwrap().packets, 1);
    });
}

/// An RTP packet with timestamp `ts` (the `rtp` helper derives it from the sequence number).
fn rtp_at(seq: u16, ts: u32) -> Vec<u8> {
    let mut p = rtp(96, seq, SSRC, 100);
    p[4..8].copy_from_slice(&ts.to_be_bytes());
    p
}

/// An RTP packet with an H.264 payload, SSRC `SSRC`, with one CSRC and a one-word header
/// extension when `extras`.
fn h264(seq: u16, ts: u32, extras: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![if extras { 0x91 } else { 0x80 }, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&SSRC.to_be_bytes());
    if extras {
        p.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // a CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]); // extension, one word
    }
    p.extend_from_slice(payload);
    p
}

#[test]
fn the_kernel_counts_h264_keyframes_once_per_access_unit_as_the_relay_does() {
    if !can_run("the_kernel_counts_h264_keyframes_once_per_access_unit_as_the_relay_does") {
        return;
    }
    let ns = Netns::new("key");
    ns.run(|| {
        let mut fp = FastPath::open("lo").expect("open");
        let l = lo_leg(true);
        let mut leg = l.leg.clone();
        leg.keyframes = true;
        fp.install(l.key, &leg).unwrap();
        assert!(fp.leg(l.key).unwrap().unwrap().keyframes);
        let idr = [0x65, 0x88, 0x84, 0x00];
        let packets: Vec<Vec<u8>> = vec![
            // 1: an IDR in three single NAL unit packets of one access unit.
            h264(1, 1000, false, &idr),
            h264(2, 1000, false, &idr),
            h264(3, 1000, false, &idr),
            // 2: FU-A, the IDR's first and a middle fragment.
            h264(4, 2000, false, &[0x7c, 0x85, 0xaa]),
            h264(5, 2000, false, &[0x7c, 0x05, 0xbb]),
            // 3: STAP-A with SPS, PPS and the IDR.
            h264(
                6,
                3000,
                false,
                &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce, 0, 2, 0x65, 0x88],
            ),
            // not keyframes: a non-IDR slice, an SPS alone, a truncated STAP-A "holding" one.
            h264(7, 4000, false, &[0x41, 0x9a]),
            h264(8, 4000, false, &[0x67, 0x42]),
            h264(9, 4500, false, &[0x78, 0, 9, 0x65, 0x88]),
            // 4: behind a CSRC and a header extension.
            h264(10, 5000, true, &idr),
        ];
        for p in &packets {
            l.sender.send_to(p, l.key).unwrap();
        }
        assert_eq!(drain(&l.dest, QUIET).len(), packets.len());
        let c = fp.counters(l.key).unwrap();
        assert_eq!((c.packets, c.keyframes), (10, 4));
        // A leg not asked to count (end_to_end: the payload is ciphertext) counts none.
        fp.remove(l.key).unwrap();
        fp.install(l.key, &l.leg).unwrap();
        l.sender
            .send_to(&h264(11, 6000, false, &idr), l.key)
            .unwrap();
        assert_eq!(drain(&l.dest, QUIET).len(), 1);
        let c = fp.counters(l.key).unwrap();
        assert_eq!((c.packets, c.keyframes), (1, 0));
    });
}

#[test]
fn the_kernel_measures_interarrival_jitter_as_rfc_3550_does() {
    if !can_run("the_kernel_measures_interarrival_jitter_as_rfc_3550_does") {
        return;
    }
    let ns = Netns::new("jit");
    ns.run(|| {
        let mut fp = FastPath::open("lo").expect("open");
        let l = lo_leg(true);
        fp.install(l.key, &l.leg).unwrap();
        // Paced as stamped: 5 ms apart, 450 units apart at 90 kHz: little jitter.
        for i in 0..40u16 {
            l.sender
                .send_to(&rtp_at(i, u32::from(i) * 450), l.key)
                .unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(drain(&l.dest, QUIET).len(), 40);
        let paced = fp.counters(l.key).unwrap().jitter_q4.expect("measured") / 16;
        // Stamped 20 ms (1,800 units) apart but sent back to back: each |D| is about 1,800,
        // and J = J + (|D| - J) / 16 reaches 1,800 x (1 - (15/16)^39) = 1,655 after 40 more.
        fp.remove(l.key).unwrap();
        fp.install(l.key, &l.leg).unwrap();
        for i in 0..41u16 {
            l.sender
                .send_to(&rtp_at(100 + i, u32::from(i) * 1800), l.key)
                .unwrap();
        }
        assert_eq!(drain(&l.dest, QUIET).len(), 41);
        let burst = fp.counters(l.key).unwrap().jitter_q4.expect("measured") / 16;
        println!("jitter: paced {paced} units, burst {burst} units");
        assert!(paced < 900, "paced as stamped: {paced} units");
        assert!(
            (1_500..=1_800).contains(&burst),
            "a burst stamped 20 ms apart: {burst} units"
        );
        // Without a clock rate, no jitter.
        let mut leg = l.leg.clone();
        leg.clock_rate = 0;
        fp.remove(l.key).unwrap();
        fp.install(l.key, &leg).unwrap();
        for i in 0..10u16 {
            l.sender
                .send_to(&rtp_at(200 + i, u32::from(i) * 1800), l.key)
                .unwrap();
        }
        assert_eq!(drain(&l.dest, QUIET).len(), 10);
        assert_eq!(fp.counters(l.key).unwrap().jitter_q4, Some(0));
    });
}

/// A fan-out leg on `lo`: the leg's own egress and `n` more receivers, each with the relay
/// socket it is sent from.
fn lo_fanout(l: &mut LoLeg, n: usize) -> Vec<(std::net::UdpSocket, std::net::UdpSocket)> {
    let any = SocketAddrV4::new(LO, 0);
    let more: Vec<_> = (0..n).map(|_| (udp(any), udp(any))).collect();
    l.leg.fanout = more
        .iter()
        .map(|(from, to)| Egress {
            from: local(from),
            to: local(to),
            ifindex: 0,
        })
        .collect();
    more
}

#[test]
fn a_fan_out_leg_sends_every_receiver_its_own_copy_until_the_grant_goes() {
    if !can_run("a_fan_out_leg_sends_every_receiver_its_own_copy_until_the_grant_goes") {
        return;
    }
    let ns = Netns::new("fan");
    ns.run(|| {
        let mut fp = FastPath::open("lo").expect("open");
        let mut l = lo_leg(true);
        let more = lo_fanout(&mut l, 3);
        fp.install(l.key, &l.leg).unwrap();
        assert_eq!(
            fp.leg(l.key).unwrap().as_ref(),
            Some(&l.leg),
            "read back whole"
        );
        let errors = udp_csum_errors();
        for seq in 0..20u16 {
            l.sender.send_to(&rtp(96, seq, SSRC, 900), l.key).unwrap();
        }
        let mut all = vec![(drain(&l.dest, QUIET), local(&l.relay_out))];
        all.extend(
            more.iter()
                .map(|(from, to)| (drain(to, QUIET), local(from))),
        );
        for (i, (got, from)) in all.iter().enumerate() {
            assert_eq!(got.len(), 20, "receiver {i}: every packet");
            for (k, (p, f)) in got.iter().enumerate() {
                assert_eq!(f, from, "receiver {i}: from its own relay port");
                assert_eq!(
                    *p,
                    rtp(96, k as u16, SSRC, 900),
                    "receiver {i}: in order, intact"
                );
            }
        }
        assert_eq!(udp_csum_errors(), errors, "every copy's checksum verified");
        assert!(drain(&l.relay_in, QUIET).is_empty(), "none went up");
        let c = fp.counters(l.key).unwrap();
        assert_eq!((c.packets, c.errors), (20, 0));

        // One receiver leaves, another comes: the next packets follow the new set.
        let newcomer = (udp(SocketAddrV4::new(LO, 0)), udp(SocketAddrV4::new(LO, 0)));
        l.leg.fanout.remove(0);
        l.leg.fanout.push(Egress {
            from: local(&newcomer.0),
            to: local(&newcomer.1),
            ifindex: 0,
        });
        fp.install(l.key, &l.leg).unwrap();
        l.sender.send_to(&rtp(96, 20, SSRC, 900), l.key).unwrap();
        assert!(drain(&more[0].1, QUIET).is_empty(), "the one that left");
        for s in [&l.dest, &more[1].1, &more[2].1, &newcomer.1] {
            assert_eq!(drain(s, QUIET).len(), 1);
        }

        // The grant goes: nobody gets one more packet; the relay's socket gets it instead.
        fp.set_granted(l.key, false).unwrap();
        l.sender.send_to(&rtp(96, 21, SSRC, 900), l.key).unwrap();
        for s in [&l.dest, &more[1].1, &more[2].1, &newcomer.1] {
            assert!(drain(s, QUIET).is_empty());
        }
        assert_eq!(drain(&l.relay_in, QUIET).len(), 1);
        fp.remove(l.key).unwrap();
        assert_eq!(fp.leg(l.key).unwrap(), None);
    });
}

#[test]
fn fan_out_is_bounded_and_checked() {
    if !can_run("fan_out_is_bounded_and_checked") {
        return;
    }
    let ns = Netns::new("fanb");
    ns.run(|| {
        let mut fp = FastPath::open_with_ports("lo", 40000..=40001).expect("open");
        let mut l = lo_leg(true);
        let key = SocketAddrV4::new(LO, 40000);
        let e = |p: u16| Egress {
            from: SocketAddrV4::new(LO, 41000 + p),
            to: SocketAddrV4::new(LO, 42000 + p),
            ifindex: 0,
        };
        l.leg.fanout = (0..65).map(e).collect();
        assert!(matches!(fp.install(key, &l.leg), Err(Error::InvalidLeg(_))));
        l.leg.fanout = vec![
            e(0),
            Egress {
                to: SocketAddrV4::new(LO, 0),
                ..e(1)
            },
        ];
        assert!(matches!(fp.install(key, &l.leg), Err(Error::InvalidLeg(_))));
        assert_eq!(fp.leg(key).unwrap(), None, "nothing installed");
        l.leg.fanout = (0..64).map(e).collect();
        fp.install(key, &l.leg).unwrap();
        assert_eq!(fp.leg(key).unwrap().unwrap().fanout.len(), 64);
        // Blocks come back: installing new sets again and again never runs out.
        for round in 0..200u16 {
            l.leg.fanout = vec![e(round % 50)];
            fp.install(key, &l.leg).unwrap();
            if round % 40 == 0 {
                std::thread::sleep(Duration::from_millis(60)); // past the grace period
            }
        }
        fp.remove(key).unwrap();
    });
}

#[test]
fn revoking_the_grant_stops_forwarding_at_once() {
    if !can_run("revoking_the_grant_stops_forwarding_at_once") {
        return;
    }
    let ns = Netns::new("rv");
    ns.run(|| {
        let mut fp = FastPath::open("lo").expect("open");
        let l = lo_leg(true);
        fp.install(l.key, &l.leg).unwrap();
        let mut seq = 0u16;
        let mut send = |n: u16| {
            for _ in 0..n {
                l.sender.send_to(&rtp(96, seq, SSRC, 100), l.key).unwrap();
                seq += 1;
            }
        };
        send(5);
        assert_eq!(drain(&l.dest, QUIET).len(), 5);

        fp.set_granted(l.key, false).unwrap();
        send(5); // the very next packet, no wait
        assert!(
            drain(&l.dest, QUIET).is_empty(),
            "not one packet after the revoke"
        );
        assert_eq!(
            drain(&l.relay_in, QUIET).len(),
            5,
            "up to the relay, which drops them"
        );
        let c = fp.counters(l.key).unwrap();
        assert_eq!(
            (c.packets, c.passed_up_not_granted, c.highest_seq),
            (5, 5, Some(4))
        );

        fp.set_granted(l.key, true).unwrap();
        send(3);
        assert_eq!(drain(&l.dest, QUIET).len(), 3, "granted again");

        // Release: the entry and its counters are gone, packets go up uncounted.
        fp.remove(l.key).unwrap();
        fp.remove(l.key).unwrap(); // idempotent
        assert!(matches!(fp.counters(l.key), Err(Error::NotFound(_))));
        assert!(matches!(
            fp.set_granted(l.key, true),
            Err(Error::NotFound(_))
        ));
        assert_eq!(fp.leg(l.key).unwrap(), None);
        send(2);
        assert_eq!(drain(&l.relay_in, QUIET).len(), 2);
        assert!(drain(&l.dest, QUIET).is_empty());
    });
}

#[test]
fn two_instances_on_one_interface_each_forward_their_own() {
    if !can_run("two_instances_on_one_interface_each_forward_their_own") {
        return;
    }
    let ns = Netns::new("two");
    ns.run(|| {
        // Attached in this order, `first` runs first: what is not its own must reach `second`.
        let mut first = FastPath::open("lo").expect("open");
        let mut second = FastPath::open("lo").expect("open");
        let (a, b) = (lo_leg(true), lo_leg(true));
        first.install(a.key, &a.leg).unwrap();
        second.install(b.key, &b.leg).unwrap();
        for seq in 0..5u16 {
            a.sender.send_to(&rtp(96, seq, SSRC, 100), a.key).unwrap();
            b.sender.send_to(&rtp(96, seq, SSRC, 100), b.key).unwrap();
        }
        assert_eq!(drain(&a.dest, QUIET).len(), 5);
        assert_eq!(
            drain(&b.dest, QUIET).len(),
            5,
            "the second program saw its packets"
        );
        assert_eq!(first.counters(a.key).unwrap().packets, 5);
        assert_eq!(second.counters(b.key).unwrap().packets, 5);
        // A packet the first one passes up (no grant there) still reaches the relay's socket.
        first.set_granted(a.key, false).unwrap();
        a.sender.send_to(&rtp(96, 9, SSRC, 100), a.key).unwrap();
        assert_eq!(drain(&a.relay_in, QUIET).len(), 1);
    });
}

#[test]
fn a_port_outside_the_range_or_taken_at_another_address_is_refused_and_nothing_changes() {
    if !can_run(
        "a_port_outside_the_range_or_taken_at_another_address_is_refused_and_nothing_changes",
    ) {
        return;
    }
    let ns = Netns::new("slot");
    ns.run(|| {
        let legs: Vec<LoLeg> = (0..2).map(|_| lo_leg(true)).collect();
        let p = legs[0].key.port();
        // Arrays for exactly one relay port.
        let mut fp = FastPath::open_with_ports("lo", p..=p).expect("open");
        fp.install(legs[0].key, &legs[0].leg).unwrap();
        assert!(matches!(
            fp.install(legs[1].key, &legs[1].leg),
            Err(Error::NoSlot(k)) if k == legs[1].key
        ));
        assert_eq!(fp.leg(legs[1].key).unwrap(), None);
        // The same port at another relay address: the entry is the first leg's.
        let other = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), p);
        assert!(matches!(
            fp.install(other, &legs[0].leg),
            Err(Error::NoSlot(k)) if k == other
        ));
        assert_eq!(fp.leg(other).unwrap(), None);
        assert!(matches!(fp.counters(other), Err(Error::NotFound(_))));
        assert_eq!(fp.leg(legs[0].key).unwrap(), Some(legs[0].leg.clone()));
        legs[0]
            .sender
            .send_to(&rtp(96, 1, SSRC, 100), legs[0].key)
            .unwrap();
        assert_eq!(drain(&legs[0].dest, QUIET).len(), 1);
        assert_eq!(fp.counters(legs[0].key).unwrap().packets, 1);
        // Once removed, the port is free for a leg at any address, with fresh counters.
        fp.remove(legs[0].key).unwrap();
        assert!(matches!(fp.counters(legs[0].key), Err(Error::NotFound(_))));
        fp.install(other, &legs[0].leg).unwrap();
        assert_eq!(fp.counters(other).unwrap().packets, 0);
        fp.remove(other).unwrap();
        fp.install(legs[0].key, &legs[0].leg).unwrap();
        assert_eq!(fp.counters(legs[0].key).unwrap().packets, 0);
        legs[0]
            .sender
            .send_to(&rtp(96, 2, SSRC, 100), legs[0].key)
            .unwrap();
        assert_eq!(drain(&legs[0].dest, QUIET).len(), 1);
        assert_eq!(fp.counters(legs[0].key).unwrap().packets, 1);
    });
}

/// Caller, relay and callee namespaces joined by veths; IP forwarding off in the relay's.
struct Topology {
    caller: Netns,
    relay: Netns,
    callee: Netns,
}

const C_ADDR: [u8; 4] = [10, 77, 1, 1];
const R_CALLER_SIDE: [u8; 4] = [10, 77, 1, 2];
const R_CALLEE_SIDE: [u8; 4] = [10, 77, 2, 2];
const E_ADDR: [u8; 4] = [10, 77, 2, 1];

fn topology(tag: &str) -> Topology {
    let t = Topology {
        caller: Netns::new(&format!("{tag}c")),
        relay: Netns::new(&format!("{tag}r")),
        callee: Netns::new(&format!("{tag}e")),
    };
    veth(&t.caller, "c0", &t.relay, "r0");
    veth(&t.relay, "r1", &t.callee, "e0");
    t.caller.ip(&["addr", "add", "10.77.1.1/24", "dev", "c0"]);
    t.relay.ip(&["addr", "add", "10.77.1.2/24", "dev", "r0"]);
    t.relay.ip(&["addr", "add", "10.77.2.2/24", "dev", "r1"]);
    t.callee.ip(&["addr", "add", "10.77.2.1/24", "dev", "e0"]);
    for (ns, dev) in [
        (&t.caller, "c0"),
        (&t.relay, "r0"),
        (&t.relay, "r1"),
        (&t.callee, "e0"),
    ] {
        ns.ip(&["link", "set", dev, "up"]);
    }
    t.relay.sysctl("net.ipv4.ip_forward=0");
    t
}

#[test]
fn netns_relays_both_directions_with_redirect_neigh() {
    if !can_run("netns_relays_both_directions_with_redirect_neigh") {
        return;
    }
    let t = topology("nb");
    assert_eq!(
        t.relay
            .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap()),
        "0\n"
    );
    let caller = t.caller.run(|| udp(v4(C_ADDR, 0)));
    let callee = t.callee.run(|| udp(v4(E_ADDR, 0)));
    let (mut fp, r_a, r_b, if0, if1) = t.relay.run(|| {
        let mut fp = FastPath::open("r0").expect("open");
        fp.attach("r1").expect("attach r1");
        let a = udp(v4(R_CALLER_SIDE, 0));
        let b = udp(v4(R_CALLEE_SIDE, 0));
        (fp, a, b, ifindex("r0").unwrap(), ifindex("r1").unwrap())
    });
    assert_eq!(fp.interfaces(), ["r0", "r1"]);
    let (ka, kb) = (local(&r_a), local(&r_b));
    let (pc, pe) = (local(&caller), local(&callee));
    // caller -> relay A  ==>  relay B -> callee, out of r1
    let to_callee = Leg {
        source: pc,
        ssrcs: vec![0xc0c0],
        granted: true,
        egress: Egress {
            from: kb,
            to: pe,
            ifindex: if1,
        },
        clock_rate: 90_000,
        keyframes: false,
        last_keyframe: None,
        fanout: Vec::new(),
    };
    // callee -> relay B  ==>  relay A -> caller, out of r0
    let to_caller = Leg {
        source: pe,
        ssrcs: vec![0xe0e0],
        granted: true,
        egress: Egress {
            from: ka,
            to: pc,
            ifindex: if0,
        },
        clock_rate: 90_000,
        keyframes: false,
        last_keyframe: None,
        fanout: Vec::new(),
    };
    fp.install(ka, &to_callee).unwrap();
    fp.install(kb, &to_caller).unwrap();

    for seq in 0..50u16 {
        caller.send_to(&rtp(96, seq, 0xc0c0, 1200), ka).unwrap();
        callee.send_to(&rtp(97, seq, 0xe0e0, 1200), kb).unwrap();
    }
    let at_callee = drain(&callee, QUIET);
    let at_caller = drain(&caller, QUIET);
    assert_eq!(at_callee.len(), 50, "caller to callee");
    assert_eq!(at_caller.len(), 50, "callee to caller");
    assert!(at_callee.iter().all(|(_, from)| *from == kb));
    assert!(at_caller.iter().all(|(_, from)| *from == ka));
    assert_eq!(at_callee[7].0, rtp(96, 7, 0xc0c0, 1200));

    // The checksums as they arrive, addresses and ports rewritten. veth marks a datagram
    // without offload CHECKSUM_UNNECESSARY for its peer, so the callee's stack would not catch
    // a wrong one: a raw tap in the callee's namespace checks the field itself. The caller
    // sends one datagram with a full software checksum (raw socket) and one ordinary (offload:
    // the field holds the pseudo-header sum, which the program must update as well).
    let tap = t.callee.run(udp_tap);
    t.caller.run(|| {
        let d = udp_datagram(pc, ka, &rtp(96, 50, 0xc0c0, 300), true);
        send_raw_udp(pc, ka, &d);
    });
    caller.send_to(&rtp(96, 51, 0xc0c0, 301), ka).unwrap();
    let got = drain(&callee, QUIET);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, rtp(96, 50, 0xc0c0, 300));
    let seen = tapped(&tap, pe.port(), QUIET);
    assert_eq!(seen.len(), 2);
    assert_eq!(
        udp_csum_state(&seen[0]),
        UdpCsum::Full,
        "full checksum after the rewrite"
    );
    assert!(
        matches!(udp_csum_state(&seen[1]), UdpCsum::Partial | UdpCsum::Full),
        "offloaded checksum after the rewrite: {:?} {:02x?}",
        udp_csum_state(&seen[1]),
        &seen[1][..40]
    );

    // The relay's own sockets saw none of it; RTCP still goes up to them.
    assert!(drain(&r_a, QUIET).is_empty() && drain(&r_b, QUIET).is_empty());
    caller.send_to(&rtcp(204, 0xc0c0), ka).unwrap();
    assert_eq!(drain(&r_a, QUIET).len(), 1);
    assert!(drain(&callee, QUIET).is_empty());

    let (ca, cb) = (fp.counters(ka).unwrap(), fp.counters(kb).unwrap());
    assert_eq!(
        (ca.packets, ca.passed_up_not_rtp, ca.highest_seq),
        (52, 1, Some(51))
    );
    assert_eq!((cb.packets, cb.highest_seq), (50, Some(49)));

    // The grant, per direction.
    fp.set_granted(ka, false).unwrap();
    caller.send_to(&rtp(96, 52, 0xc0c0, 100), ka).unwrap();
    callee.send_to(&rtp(97, 50, 0xe0e0, 100), kb).unwrap();
    assert!(drain(&callee, QUIET).is_empty());
    assert_eq!(drain(&caller, QUIET).len(), 1);
    assert_eq!(drain(&r_a, QUIET).len(), 1);
    drop(fp);
    assert!(t
        .relay
        .run(|| tcx_ingress_programs("r0").unwrap().is_empty()));
    assert!(t
        .relay
        .run(|| tcx_ingress_programs("r1").unwrap().is_empty()));
}

#[test]
fn netns_fan_out_to_receivers_behind_an_interface_once_their_neighbour_is_known() {
    if !can_run("netns_fan_out_to_receivers_behind_an_interface_once_their_neighbour_is_known") {
        return;
    }
    let t = topology("nf");
    let caller = t.caller.run(|| udp(v4(C_ADDR, 0)));
    let receivers: Vec<_> = (0..4)
        .map(|_| t.callee.run(|| udp(v4(E_ADDR, 0))))
        .collect();
    let (mut fp, r_in, r_out, if1) = t.relay.run(|| {
        let fp = FastPath::open("r0").expect("open");
        let r_in = udp(v4(R_CALLER_SIDE, 0));
        let r_out: Vec<_> = (0..4).map(|_| udp(v4(R_CALLEE_SIDE, 0))).collect();
        (fp, r_in, r_out, ifindex("r1").unwrap())
    });
    let key = local(&r_in);
    let egress = |i: usize| Egress {
        from: local(&r_out[i]),
        to: local(&receivers[i]),
        ifindex: if1,
    };
    let leg = Leg {
        source: local(&caller),
        ssrcs: vec![0xc0c0],
        granted: true,
        egress: egress(0),
        clock_rate: 90_000,
        keyframes: false,
        last_keyframe: None,
        fanout: (1..4).map(egress).collect(),
    };
    // The callee's address not resolved yet: the leg cannot go into the kernel.
    let e = t.relay.run(|| fp.install(key, &leg));
    assert!(matches!(e, Err(Error::NoNeighbour(_))), "{e:?}");
    assert_eq!(fp.leg(key).unwrap(), None);

    // The relay sends to them itself (as it does in userspace), which resolves the neighbour.
    for (s, r) in r_out.iter().zip(&receivers) {
        s.send_to(&rtp(96, 0, 0xc0c0, 1000), local(r)).unwrap();
        assert_eq!(drain(r, QUIET).len(), 1);
    }
    t.relay.run(|| fp.install(key, &leg)).unwrap();
    let tap = t.callee.run(udp_tap);
    for seq in 1..=30u16 {
        caller.send_to(&rtp(96, seq, 0xc0c0, 1000), key).unwrap();
    }
    for (i, r) in receivers.iter().enumerate() {
        let got = drain(r, QUIET);
        assert_eq!(got.len(), 30, "receiver {i}");
        assert!(got.iter().all(|(_, from)| *from == local(&r_out[i])));
        assert_eq!(got[4].0, rtp(96, 5, 0xc0c0, 1000));
        // The copy's checksum as it arrived (veth would not have the stack check it).
        let seen = tapped(&tap, local(r).port(), QUIET);
        assert!(
            seen.iter()
                .all(|p| matches!(udp_csum_state(p), UdpCsum::Full | UdpCsum::Partial)),
            "receiver {i}: checksums"
        );
    }
    assert!(drain(&r_in, QUIET).is_empty());
    let c = fp.counters(key).unwrap();
    assert_eq!((c.packets, c.errors), (30, 0));

    // The callee's interface gets another Ethernet address: after a refresh the copies follow.
    t.callee
        .ip(&["link", "set", "e0", "address", "02:00:00:00:77:01"]);
    t.relay.ip(&[
        "neigh",
        "replace",
        "10.77.2.1",
        "lladdr",
        "02:00:00:00:77:01",
        "dev",
        "r1",
    ]);
    t.relay.run(|| fp.refresh_neighbours()).unwrap();
    caller.send_to(&rtp(96, 31, 0xc0c0, 1000), key).unwrap();
    for (i, r) in receivers.iter().enumerate() {
        assert_eq!(drain(r, QUIET).len(), 1, "receiver {i} after the change");
    }
    drop(fp);
}

fn ours(progs: &[(u32, String)]) -> usize {
    progs.iter().filter(|(_, n)| n == "fastpath").count()
}

#[test]
fn nothing_stays_attached_after_drop_or_sigkill() {
    if !can_run("nothing_stays_attached_after_drop_or_sigkill") {
        return;
    }
    let ns = Netns::new("leak");
    ns.run(|| {
        assert!(tcx_ingress_programs("lo").unwrap().is_empty());
        let fp = FastPath::open("lo").expect("open");
        let second = FastPath::open("lo").expect("a second instance next to the first");
        assert_eq!(ours(&tcx_ingress_programs("lo").unwrap()), 2);
        drop(fp);
        assert_eq!(ours(&tcx_ingress_programs("lo").unwrap()), 1);
        drop(second);
        assert!(
            tcx_ingress_programs("lo").unwrap().is_empty(),
            "detached on drop"
        );
    });

    // A process that attaches and is killed with SIGKILL: its links go with it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_fastpath-hold"))
        .args(["--netns", &ns.name, "lo"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn fastpath-hold");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "attached");
    let progs = ns.run(|| tcx_ingress_programs("lo").unwrap());
    assert_eq!(
        ours(&progs),
        1,
        "the child's program is attached: {progs:?}"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = ns.run(|| tcx_ingress_programs("lo").unwrap());
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still attached after SIGKILL: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_unprivileged_process_is_told_to_fall_back() {
    if !can_run("an_unprivileged_process_is_told_to_fall_back") {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIPPED an_unprivileged_process_is_told_to_fall_back: no setpriv");
        return;
    }
    let ns = Netns::new("np");
    // In the test's namespace, root's uid without any capability: no program may be loaded.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "setpriv"])
        .args([
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_fastpath-hold"))
        .arg("lo")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no privilege") && err.contains("fallback: true"),
        "{err}"
    );
}
