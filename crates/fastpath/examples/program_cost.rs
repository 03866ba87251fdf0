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
