//! The program's decisions against a model, frame by frame, without a network: tens of
//! thousands of frames made from valid RTP by random damage (bytes flipped, the frame cut
//! short or lengthened, each header field the program reads set to a value it must refuse or
//! accept) are run through the loaded program with `BPF_PROG_TEST_RUN`, and for each one the
//! verdict, the rewritten frame and, at the end, every leg's counters must be what the rules
//! say (the crate's documentation; the relay's per-packet rules in userspace):
//!
//! * a frame is forwarded only when it is an IPv4 (no options, not a fragment) UDP datagram
//!   aimed at a leg's relay address and port, from its latched source, one RTP packet
//!   (version 2, payload type outside 64–95, a UDP length that holds an RTP header) with an
//!   allowed SSRC, and the leg holds the grant;
//! * a forwarded frame has the egress addresses and ports and checksums that verify exactly
//!   when they verified before (an absent UDP checksum stays absent), and nothing else changed;
//! * everything else leaves the program untouched, counted by the first rule it failed when it
//!   was aimed at a leg, and not counted at all otherwise.
//!
//! Root only (skipped otherwise, with the reason); in a namespace of its own.

mod common;

use common::*;
use mcvideo_relay_fastpath::{ifindex, Egress, FastPath, Leg, TestRun};
use std::net::{Ipv4Addr, SocketAddrV4};

const ETH: usize = 14;
const IP: usize = ETH;
const UDP: usize = ETH + 20;
const RTP: usize = UDP + 8;

/// The legs of the run: where they are installed and what they are.
struct Fixture {
    legs: Vec<(SocketAddrV4, Leg)>,
}

fn fixture(lo: u32) -> Fixture {
    let relay = Ipv4Addr::new(10, 9, 0, 1);
    let leg = |port: u16, ssrcs: Vec<u32>, granted: bool, ifindex: u32| {
        (
            SocketAddrV4::new(relay, port),
            Leg {
                source: v4([10, 9, 1, 2], 5000 + port % 100),
                ssrcs,
                granted,
                egress: Egress {
                    from: SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 3), port + 1000),
                    to: v4([10, 9, 2, 2], 6000 + port % 100),
                    ifindex,
                },
                clock_rate: 90_000,
                keyframes: port.is_multiple_of(4),
                last_keyframe: None,
                fanout: Vec::new(),
            },
        )
    };
    Fixture {
        legs: vec![
            leg(40000, vec![0x1111_2222], true, 0),
            leg(40002, vec![0xa, 0xb, 0xc, 0xd], true, lo),
            leg(40004, vec![0x1111_2222], false, lo),
            // A group's transmitter: two more receivers on this host, each sent a copy (a
            // clone through lo) before the leg's own egress; the verdict and the frame left
            // are the own egress's.
            {
                let (k, mut l) = leg(40006, vec![0x1111_2222, 0xa], true, 0);
                l.fanout = (0..2)
                    .map(|i| Egress {
                        from: SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 3), 41006 + i),
                        to: v4([10, 9, 3, 2], 7000 + i),
                        ifindex: 0,
                    })
                    .collect();
                (k, l)
            },
        ],
    }
}

/// What the rules say of a frame: left alone (counted on a leg by a reason, or not at all),
/// or forwarded by a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    NotOurs,
    Up(usize, Reason),
    Forward(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    WrongSource,
    NotRtp,
    UnknownSsrc,
    NotGranted,
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn be32(f: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]])
}

fn model(fx: &Fixture, f: &[u8]) -> Expect {
    if f.len() < RTP + 12
        || be16(f, 12) != 0x0800
        || f[IP] != 0x45
        || f[IP + 9] != 17
        || be16(f, IP + 6) & 0x3fff != 0
    {
        return Expect::NotOurs;
    }
    let daddr = Ipv4Addr::from(be32(f, IP + 16));
    let dport = be16(f, UDP + 2);
    let Some(i) = fx
        .legs
        .iter()
        .position(|(k, _)| *k.ip() == daddr && k.port() == dport)
    else {
        return Expect::NotOurs;
    };
    let leg = &fx.legs[i].1;
    let from = SocketAddrV4::new(Ipv4Addr::from(be32(f, IP + 12)), be16(f, UDP));
    if from != leg.source {
        return Expect::Up(i, Reason::WrongSource);
    }
    let pt = f[RTP + 1] & 0x7f;
    if f[RTP] & 0xc0 != 0x80 || (64..=95).contains(&pt) || be16(f, UDP + 4) < 8 + 12 {
        return Expect::Up(i, Reason::NotRtp);
    }
    if !leg.ssrcs.contains(&be32(f, RTP + 8)) {
        return Expect::Up(i, Reason::UnknownSsrc);
    }
    if !leg.granted {
        return Expect::Up(i, Reason::NotGranted);
    }
    Expect::Forward(i)
}

/// A deterministic generator (xorshift64*), seeded from `PROGRAM_MODEL_SEED` when set.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h.chunks(2).map(|c| u32::from(be16(c, 0))).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A valid frame for leg `i`: from its source to its relay port, one of its SSRCs.
fn valid_frame(fx: &Fixture, i: usize, rng: &mut Rng) -> Vec<u8> {
    let (key, leg) = &fx.legs[i];
    let ssrc = leg.ssrcs[rng.below(leg.ssrcs.len())];
    let payload_len = 12 + rng.below(1200);
    let mut rtp = rtp(
        96 + rng.below(30) as u8,
        rng.next() as u16,
        ssrc,
        payload_len - 12,
    );
    if rng.coin() {
        rtp[1] |= 0x80; // the marker
    }
    ip_frame(leg.source, *key, &rtp, rng.below(4) != 0, rng)
}

/// An Ethernet frame holding `rtp` in UDP from `src` to `dst`, valid in every header.
fn ip_frame(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    rtp: &[u8],
    csum: bool,
    rng: &mut Rng,
) -> Vec<u8> {
    let datagram = udp_datagram(src, dst, rtp, csum);
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let tot = (20 + datagram.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&tot.to_be_bytes());
    ip.extend_from_slice(&(rng.next() as u16).to_be_bytes());
    ip.extend_from_slice(&(if rng.coin() { 0x4000u16 } else { 0 }).to_be_bytes());
    ip.extend_from_slice(&[64, 17, 0, 0]);
    ip.extend_from_slice(&src.ip().octets());
    ip.extend_from_slice(&dst.ip().octets());
    let c = ip_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&datagram);
    f
}

/// One kind of damage, chosen at random.
fn damage(fx: &Fixture, f: &mut Vec<u8>, rng: &mut Rng) {
    let other_leg = &fx.legs[rng.below(fx.legs.len())];
    let put16 =
        |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_be_bytes());
    let put32 =
        |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_be_bytes());
    if f.len() < RTP + 12 {
        // Too short for the header fields below: only bytes flipped or added.
        if rng.coin() {
            let at = rng.below(f.len());
            f[at] ^= 1 << rng.below(8);
        } else {
            f.extend((0..rng.below(64)).map(|_| rng.next() as u8));
        }
        return;
    }
    match rng.below(18) {
        0 => {
            let at = rng.below(f.len());
            f[at] ^= 1 << rng.below(8);
        }
        1 => {
            let at = rng.below(f.len().min(RTP + 16));
            f[at] = rng.next() as u8;
        }
        2 => f.truncate(IP + 20 + rng.below(RTP + 16 - IP - 20)),
        3 => f.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
        4 => put16(f, 12, [0x86dd, 0x0806, 0x8100][rng.below(3)]),
        5 => f[IP] = [0x46, 0x44, 0x55, 0x65][rng.below(4)],
        6 => f[IP + 9] = [6, 1, 132, 0][rng.below(4)],
        7 => put16(
            f,
            IP + 6,
            [0x2000, 0x0001, 0x3fff, 0x6000, 0x4000][rng.below(5)],
        ),
        8 => put32(f, IP + 12, be32(f, IP + 12) ^ (1 << rng.below(32))),
        9 => put16(f, UDP, other_leg.1.source.port()),
        10 => put16(
            f,
            UDP + 2,
            [other_leg.0.port(), 40001, 40006, 39999][rng.below(4)],
        ),
        11 => put32(
            f,
            IP + 16,
            u32::from(*other_leg.0.ip()) ^ rng.below(2) as u32,
        ),
        12 => f[RTP] = (f[RTP] & 0x3f) | [0x00, 0x40, 0xc0][rng.below(3)],
        13 => f[RTP + 1] = (f[RTP + 1] & 0x80) | (64 + rng.below(32) as u8),
        14 => put16(f, UDP + 4, rng.below(8 + 12 + 4) as u16),
        15 => {
            let ssrcs = &other_leg.1.ssrcs;
            let s = if rng.coin() {
                ssrcs[rng.below(ssrcs.len())]
            } else {
                rng.next() as u32
            };
            put32(f, RTP + 8, s);
        }
        16 => {
            let src = other_leg.1.source;
            put32(f, IP + 12, u32::from(*src.ip()));
            put16(f, UDP, src.port());
        }
        _ => f[RTP] |= 0x1f, // padding, extension, fifteen CSRCs: still RTP
    }
}

/// The UDP checksum's residue over the pseudo header and the datagram: 0xffff when it
/// verifies; `None` when the field is zero (absent) or the frame is too short to say.
fn udp_residue(f: &[u8]) -> Option<u16> {
    let len = usize::from(be16(f, UDP + 4));
    if be16(f, UDP + 6) == 0 || len < 8 || UDP + len > f.len() {
        return None;
    }
    let mut sum: u32 = 17 + len as u32;
    for c in f[IP + 12..IP + 20]
        .chunks(2)
        .chain(f[UDP..UDP + len].chunks(2))
    {
        sum += u32::from(if c.len() == 2 {
            be16(c, 0)
        } else {
            u16::from(c[0]) << 8
        });
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    Some(sum as u16)
}

#[test]
fn the_program_decides_and_rewrites_every_frame_as_the_rules_say() {
    if !can_run("the_program_decides_and_rewrites_every_frame_as_the_rules_say") {
        return;
    }
    let seed = std::env::var("PROGRAM_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x006d_6376_6964_656f);
    let cases: usize = std::env::var("PROGRAM_MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40_000);
    let ns = Netns::new("model");
    ns.run(|| {
        let mut fp = FastPath::open("lo").expect("open");
        let fx = fixture(ifindex("lo").unwrap());
        for (k, l) in &fx.legs {
            fp.install(*k, l).unwrap();
        }
        let mut rng = Rng(seed);
        let mut forwarded = vec![0u64; fx.legs.len()];
        let mut up = vec![[0u64; 4]; fx.legs.len()];
        let mut seen = [0usize; 3];
        for case in 0..cases {
            let mut f = valid_frame(&fx, rng.below(fx.legs.len()), &mut rng);
            for _ in 0..rng.below(3) {
                damage(&fx, &mut f, &mut rng);
            }
            if f.len() < IP + 40 && be16(&f, 12) == 0x86dd {
                // BPF_PROG_TEST_RUN refuses an IPv6 frame shorter than its header (and an
                // IPv4 one shorter than 20 bytes of IP, which no damage makes).
                f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
            }
            let want = model(&fx, &f);
            let got = fp.test_run(&f, 1).unwrap_or_else(|e| panic!("case {case}: {e}: {f:02x?}"));
            let ctx = || format!("case {case} (seed {seed}): {want:?}, frame {f:02x?}");
            match want {
                Expect::NotOurs | Expect::Up(..) => {
                    assert_eq!(got.verdict, TestRun::PASS, "{}", ctx());
                    assert_eq!(got.frame, f, "left untouched: {}", ctx());
                    if let Expect::Up(i, r) = want {
                        up[i][r as usize] += 1;
                        seen[1] += 1;
                    } else {
                        seen[0] += 1;
                    }
                }
                Expect::Forward(i) => {
                    seen[2] += 1;
                    forwarded[i] += 1;
                    let e = fx.legs[i].1.egress;
                    let verdict = if e.ifindex == 0 { TestRun::LOCAL } else { TestRun::REDIRECT };
                    assert_eq!(got.verdict, verdict, "{}", ctx());
                    let o = &got.frame;
                    assert_eq!(o.len(), f.len(), "{}", ctx());
                    assert_eq!(Ipv4Addr::from(be32(o, IP + 12)), *e.from.ip(), "{}", ctx());
                    assert_eq!(Ipv4Addr::from(be32(o, IP + 16)), *e.to.ip(), "{}", ctx());
                    assert_eq!(be16(o, UDP), e.from.port(), "{}", ctx());
                    assert_eq!(be16(o, UDP + 2), e.to.port(), "{}", ctx());
                    assert_eq!(
                        ip_checksum(&o[IP..IP + 20]),
                        ip_checksum(&f[IP..IP + 20]),
                        "the IP checksum verifies as before: {}",
                        ctx()
                    );
                    assert_eq!(
                        udp_residue(o),
                        udp_residue(&f),
                        "the UDP checksum verifies as before: {}",
                        ctx()
                    );
                    // Nothing else changed: the checksums and the rewritten fields aside, and
                    // for a fan-out leg the Ethernet addresses (the last copy's; the frame's
                    // own egress sets its own, or, passed up locally, has no use for them).
                    let fan = !fx.legs[i].1.fanout.is_empty();
                    let keep = |at: usize| {
                        !((IP + 10..IP + 20).contains(&at)
                            || (UDP..UDP + 4).contains(&at)
                            || (UDP + 6..UDP + 8).contains(&at)
                            || (fan && at < 12))
                    };
                    for at in (0..f.len()).filter(|&at| keep(at)) {
                        assert_eq!(o[at], f[at], "byte {at} changed: {}", ctx());
                    }
                }
            }
        }
        // Every kind of outcome was exercised, each in numbers.
        assert!(seen.iter().all(|&n| n > cases / 20), "{seen:?}");
        for (i, (k, _)) in fx.legs.iter().enumerate() {
            let c = fp.counters(*k).unwrap();
            let [ws, nr, us, ng] = up[i];
            assert_eq!(c.packets, forwarded[i], "leg {i} forwarded");
            assert_eq!(c.passed_up_wrong_source, ws, "leg {i} wrong source");
            assert_eq!(c.passed_up_not_rtp, nr, "leg {i} not RTP");
            assert_eq!(c.passed_up_unknown_ssrc, us, "leg {i} unknown SSRC");
            assert_eq!(c.passed_up_not_granted, ng, "leg {i} not granted");
            assert_eq!(c.errors, 0, "leg {i}: no rewrite failed");
        }
        eprintln!(
            "{cases} frames: {} not aimed at a leg, {} passed up, {} forwarded; forwarded {forwarded:?}, passed up {up:?}",
            seen[0], seen[1], seen[2]
        );
    });
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity only read and
    // write the set given, for the calling thread (0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0,
            "pin to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn an_access_unit_split_between_cpus_is_one_keyframe() {
    if !can_run("an_access_unit_split_between_cpus_is_one_keyframe") {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("SKIPPED an_access_unit_split_between_cpus_is_one_keyframe: one CPU");
        return;
    }
    let ns = Netns::new("keycpu");
    ns.run(|| {
        let mut fp = FastPath::open("lo").expect("open");
        let fx = fixture(ifindex("lo").unwrap());
        let (key, mut leg) = fx.legs[0].clone();
        leg.keyframes = true;
        leg.last_keyframe = Some((0x1111_2222, 1_000)); // what the relay counted before
        fp.install(key, &leg).unwrap();
        assert_eq!(
            fp.counters(key).unwrap().last_keyframe,
            Some((0x1111_2222, 1_000))
        );
        let mut rng = Rng(1);
        let fu_a = |ts: u32, start: bool| {
            let mut p = rtp(96, ts as u16, 0x1111_2222, 0);
            p[4..8].copy_from_slice(&ts.to_be_bytes());
            p.extend_from_slice(&[0x7c, if start { 0x85 } else { 0x05 }, 0xaa, 0xbb]);
            p
        };
        let mut run_on = |cpu: usize, ts: u32, start: bool| {
            pin(cpu);
            let f = ip_frame(leg.source, key, &fu_a(ts, start), true, &mut rng);
            assert_eq!(fp.test_run(&f, 1).unwrap().verdict, TestRun::LOCAL); // leg 0: ifindex 0
        };
        // The relay's own last keyframe goes on in the kernel: not counted again.
        run_on(1, 1_000, false);
        // One access unit, its packets on CPU 1, then 0, then 1: one keyframe.
        run_on(1, 4_000, true);
        run_on(0, 4_000, false);
        run_on(1, 4_000, false);
        // The next, first on CPU 0: one more.
        run_on(0, 7_000, true);
        run_on(1, 7_000, false);
        let c = fp.counters(key).unwrap();
        assert_eq!(c.packets, 6);
        assert_eq!(c.keyframes, 2, "{c:?}");
        assert_eq!(c.last_keyframe, Some((0x1111_2222, 7_000)));
    });
}
