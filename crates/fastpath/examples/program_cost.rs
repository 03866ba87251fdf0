//! A measurement, not a test (root): the program's own cost per packet, apart from the network
//! stack and with everything in cache, by `BPF_PROG_TEST_RUN` ([`FastPath::test_run`]) in a
//! network namespace of the process's own. Each case runs the program on one frame a million
//! times in a row and prints the mean:
//!
//! * `forward`: a 1,200-byte RTP packet forwarded; two legs whose egresses point at each other,
//!   so that every run rewrites the frame back into what the next one forwards (the full
//!   rewrite: addresses, ports, both checksums), with jitter and sequence tracking;
//! * `forward+keyframes`: the same with the H.264 keyframe scan on (an FU-A payload);
//! * `wrong source`, `unknown SSRC`: passed up, counted;
//! * `not ours`: a port with no leg;
//! * `fan-out 1+n`: a group transmitter's leg with n more receivers on this host, a clone
//!   through lo for each (then dropped by the namespace's stack: no socket there), a tenth as
//!   many runs; per copy, with a 1,200-byte and a 100-byte packet.
//!
//! The gap between these figures and `bpf_stats` in a traffic run is what the traffic adds:
//! cache misses on the legs and counters, and the kernel's own measuring.
//!
//! ```sh
//! cargo run --release -p mcvideo-relay-fastpath --example program_cost -- [RUNS]
//! ```

use mcvideo_relay_fastpath::{ifindex, Egress, FastPath, Leg, TestRun};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;

const SSRC: u32 = 0x1234_5678;

fn frame(src: SocketAddrV4, dst: SocketAddrV4, ssrc: u32, fu_a_idr: bool) -> Vec<u8> {
    let mut rtp = vec![0x80, 96, 0, 1, 0, 0, 0x10, 0];
    rtp.extend_from_slice(&ssrc.to_be_bytes());
    if fu_a_idr {
        rtp.extend_from_slice(&[0x7c, 0x85]); // FU-A, start, IDR
    }
    rtp.resize(12 + 1200, 0xab);
    let udp_len = (8 + rtp.len()) as u16;
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
    f.extend_from_slice(&(20 + udp_len).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src.ip().octets());
    f.extend_from_slice(&dst.ip().octets());
    let c = ip_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&src.port().to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&0x1234u16.to_be_bytes()); // any checksum: the update is incremental
    f.extend_from_slice(&rtp);
    f
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn main() {
    let runs: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    // SAFETY: unshare has no memory preconditions; it moves this (single-threaded) process
    // into a network namespace of its own, gone when it exits.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "unshare(CLONE_NEWNET): {} (run as root)",
            std::io::Error::last_os_error()
        );
        std::process::exit(2);
    }
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status();
    assert!(up.is_ok_and(|s| s.success()), "ip link set lo up");
    let mut fp = FastPath::open("lo").unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let lo = ifindex("lo").unwrap();
    let a = SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 1), 40000); // relay port of leg A
    let b = SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 1), 40002); // relay port of leg B
    let caller = SocketAddrV4::new(Ipv4Addr::new(10, 1, 1, 2), 5004);
    let callee = SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 2), 6004);
    // A forwards caller → b from callee; B forwards callee → a from caller: every run turns
    // the frame into the next run's input.
    let leg = |source, from, to, keyframes| Leg {
        source,
        ssrcs: vec![SSRC],
        granted: true,
        egress: Egress {
            from,
            to,
            ifindex: lo,
        },
        clock_rate: 90_000,
        keyframes,
        last_keyframe: None,
        fanout: Vec::new(),
    };
    let cases: [(&str, bool, Vec<u8>); 5] = [
        ("forward", false, frame(caller, a, SSRC, false)),
        ("forward+keyframes", true, frame(caller, a, SSRC, true)),
        ("wrong source", false, frame(callee, a, SSRC, false)),
        ("unknown SSRC", false, frame(caller, a, 0x9999, false)),
        (
            "not ours",
            false,
            frame(caller, SocketAddrV4::new(*a.ip(), 40010), SSRC, false),
        ),
    ];
    println!("{runs} runs a case, mean per run (hot cache, no network):");
    let fan_runs = (runs / 10).max(1);
    for (name, keyframes, f) in cases {
        fp.install(a, &leg(caller, callee, b, keyframes)).unwrap();
        fp.install(b, &leg(callee, caller, a, keyframes)).unwrap();
        let r = fp.test_run(&f, runs).expect("test run");
        let verdict = match r.verdict {
            TestRun::PASS => "passed up",
            TestRun::REDIRECT => "forwarded",
            TestRun::LOCAL => "forwarded (local)",
            _ => "dropped",
        };
        println!("  {name:18} {:6} ns  ({verdict})", r.mean.as_nanos());
        fp.remove(a).unwrap();
        fp.remove(b).unwrap();
    }
    cold(&mut fp, &leg, caller, callee);
    // A group's transmitter: n more receivers on this host, each a clone through lo (which
    // the namespace's stack then drops: no socket there).
    for (n, size) in [(8usize, 1200usize), (8, 100), (32, 1200)] {
        // Its own egress is the frame as it came (from the caller to a), so every run
        // starts from the same frame: n copies, then the frame rewritten back.
        let mut fan = leg(caller, caller, a, false);
        fan.fanout = (0..n as u16)
            .map(|i| Egress {
                from: SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 1), 41000 + i),
                to: SocketAddrV4::new(Ipv4Addr::new(10, 1, 3, 2), 7000 + i),
                ifindex: 0,
            })
            .collect();
        fp.install(a, &fan).unwrap();
        let mut f = frame(caller, a, SSRC, false);
        f.truncate(14 + 20 + 8 + size);
        let tot = (20 + 8 + size) as u16;
        f[16..18].copy_from_slice(&tot.to_be_bytes());
        f[38..40].copy_from_slice(&((8 + size) as u16).to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let c = ip_checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let r = fp.test_run(&f, fan_runs).expect("test run");
        println!(
            "  fan-out 1+{n:<2} {size:5} B {:6} ns a run, {:4} ns a copy",
            r.mean.as_nanos(),
            r.mean.as_nanos() / (n as u128 + 1)
        );
        fp.remove(a).unwrap();
    }
}

/// Legs in the cold-cache cases: a traffic run's thousand calls.
const COLD_LEGS: u16 = 1000;

/// What a traffic run with many legs adds: each packet finds its leg and counters gone from
/// the caches (and the TLB), because a thousand other legs' packets came in between. One run
/// a sample, the legs in turn, after the caches were pushed out in one of three ways:
///
/// * `round robin`: nothing but the legs themselves (COLD_LEGS × 64 B of legs and 128 B of
///   counters a CPU: they fit in L2);
/// * `TLB`: one byte in each of 16,384 pages (64 MiB): the page translations go, little of the
///   data cache;
/// * `caches`: 32 MiB read line by line: the data caches and the TLB.
///
/// Each figure is a median over the samples, against one run of the same kind on one leg
/// kept hot (the kernel's timer around a single run costs something of its own).
fn cold(
    fp: &mut FastPath,
    leg: &dyn Fn(SocketAddrV4, SocketAddrV4, SocketAddrV4, bool) -> Leg,
    caller: SocketAddrV4,
    callee: SocketAddrV4,
) {
    let relay = |i: u16| SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 1), 42000 + 2 * i);
    let frames: Vec<Vec<u8>> = (0..COLD_LEGS)
        .map(|i| frame(caller, relay(i), SSRC, false))
        .collect();
    for i in 0..COLD_LEGS {
        fp.install(relay(i), &leg(caller, relay(i), callee, false))
            .unwrap();
    }
    // Two buffers: one on 4 KiB pages (for the TLB), one on 2 MiB pages (for the caches).
    let small = Thrash::new(16 << 20, libc::MADV_NOHUGEPAGE);
    let huge = Thrash::new(8 << 20, libc::MADV_HUGEPAGE);
    let samples = 20_000usize;
    let median = |mut v: Vec<u128>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let mut hot = Vec::with_capacity(samples / 10);
    for _ in 0..samples / 10 {
        hot.push(
            fp.test_run(&frames[0], 1)
                .expect("test run")
                .mean
                .as_nanos(),
        );
    }
    println!(
        "{COLD_LEGS} legs, one run a sample, median ns: hot (one leg) {}",
        median(hot)
    );
    let mut sink = 0u64;
    for (name, tlb, caches) in [
        ("round robin", false, false),
        ("TLB", true, false),
        ("L2", false, true),
        ("TLB + L2", true, true),
    ] {
        let mut t = Vec::with_capacity(samples);
        for k in 0..samples {
            if tlb {
                // 4,096 pages, a line each: twice a large second-level TLB, 256 KiB of lines.
                sink = sink.wrapping_add(small.touch(k, 4096 + 64, 4096));
            }
            if caches {
                // 4 MiB line by line on two huge pages: L2 twice over, two TLB entries.
                sink = sink.wrapping_add(huge.touch(0, 64, 4 << 14));
            }
            let f = &frames[k % usize::from(COLD_LEGS)];
            t.push(fp.test_run(f, 1).expect("test run").mean.as_nanos());
        }
        println!("  {name:12} {:6} ns", median(t));
    }
    std::hint::black_box(sink);
    for i in 0..COLD_LEGS {
        fp.remove(relay(i)).unwrap();
    }
}

/// A buffer read to push things out of the caches or the TLB.
struct Thrash(&'static mut [u8]);

impl Thrash {
    fn new(len: usize, advice: libc::c_int) -> Thrash {
        // SAFETY: an anonymous private mapping of len bytes, never unmapped (the process ends
        // soon after); madvise only advises on it.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED, "mmap");
            libc::madvise(p, len, advice);
            std::ptr::write_bytes(p.cast::<u8>(), 1, len);
            Thrash(std::slice::from_raw_parts_mut(p.cast::<u8>(), len))
        }
    }

    /// Reads and writes `count` bytes `step` apart from a start that moves with `k`.
    fn touch(&self, k: usize, step: usize, count: usize) -> u64 {
        let mut sum = 0u64;
        let mut off = (k * 64) % 4096;
        for _ in 0..count {
            let i = off % self.0.len();
            sum = sum.wrapping_add(u64::from(std::hint::black_box(self.0[i])));
            off += step;
        }
        sum
    }
}
