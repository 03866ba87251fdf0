//! A measurement, not a test (root): three network namespaces (caller, relay, callee) joined by
//! veth pairs, and one call's media through the relay's namespace, three ways in turn:
//!
//! * `fastpath`: IP forwarding off in the relay; the BPF program on both relay veths forwards
//!   (bpf_redirect_neigh), with `bpf_stats` on for the program's own run time per packet;
//! * `ipforward`: no program, plain kernel IP forwarding in the relay (the floor: routing
//!   without any relay logic, addresses not rewritten);
//!
//! For each: a one-second blast caller → callee (packets sent, forwarded, delivered), and a
//! ping-pong (the callee echoes every packet back through the relay) for the round-trip time.
//!
//! ```sh
//! cargo run --release -p mcvideo-relay-fastpath --example netns_blast -- [SIZE] [ROUNDS]
//! ```
//! SIZE is the RTP payload in bytes (default 1200), ROUNDS the ping-pong round trips (20000).

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mcvideo_relay_fastpath::{enable_run_stats, ifindex, Egress, FastPath, Leg};

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Ns(String);
impl Ns {
    fn new(tag: &str) -> Ns {
        let n = format!("fpb-{tag}-{}", std::process::id());
        sh(&["ip", "netns", "add", &n]);
        let ns = Ns(n);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }
    fn ip(&self, a: &[&str]) {
        let mut v = vec!["ip", "-n", &self.0];
        v.extend_from_slice(a);
        sh(&v);
    }
    fn sysctl(&self, kv: &str) {
        sh(&["ip", "netns", "exec", &self.0, "sysctl", "-qw", kv]);
    }
    fn enter(&self) {
        let f = std::fs::File::open(format!("/run/netns/{}", self.0)).unwrap();
        // SAFETY: a valid namespace fd; setns changes only this thread.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
    }
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter();
                f()
            })
            .join()
            .unwrap()
        })
    }
}
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sock(addr: &str) -> UdpSocket {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    s.set_recv_buffer_size(32 << 20).unwrap();
    s.bind(&addr.parse::<SocketAddr>().unwrap().into()).unwrap();
    s.into()
}

fn local(s: &UdpSocket) -> SocketAddrV4 {
    match s.local_addr().unwrap() {
        SocketAddr::V4(a) => a,
        _ => unreachable!(),
    }
}

fn rtp(seq: u16, ssrc: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.resize(12 + len, 0x5a);
    p
}

fn rcvbuf_errors(ns: &Ns) -> u64 {
    ns.run(|| {
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
        let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
        let h: Vec<&str> = udp.next().unwrap().split_whitespace().collect();
        let v: Vec<&str> = udp.next().unwrap().split_whitespace().collect();
        v[h.iter().position(|x| *x == "RcvbufErrors").unwrap()]
            .parse()
            .unwrap()
    })
}

/// Blast from `tx` to `to` for one second; `rx` counts until 300 ms of quiet.
fn blast(tx: &UdpSocket, to: SocketAddrV4, rx: &UdpSocket, size: usize) -> (u64, u64) {
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let counter = s.spawn(|| {
            let mut buf = [0u8; 2048];
            let mut n = 0u64;
            loop {
                match rx.recv(&mut buf) {
                    Ok(_) => n += 1,
                    Err(_) if done.load(Ordering::Relaxed) => return n,
                    Err(_) => {}
                }
            }
        });
        let mut sent = 0u64;
        let start = Instant::now();
        let mut seq = 0u16;
        let pkt = rtp(0, 0xc0c0, size);
        let mut pkt = pkt;
        while start.elapsed() < Duration::from_secs(1) {
            pkt[2..4].copy_from_slice(&seq.to_be_bytes());
            if tx.send_to(&pkt, to).is_ok() {
                sent += 1;
            }
            seq = seq.wrapping_add(1);
        }
        done.store(true, Ordering::Relaxed);
        (sent, counter.join().unwrap())
    })
}

/// `rounds` round trips: `a` sends to `to_b`, the echo thread on `b` answers to `b_reply`.
fn ping_pong(
    a: &UdpSocket,
    to_b: SocketAddrV4,
    b: &UdpSocket,
    b_reply: SocketAddrV4,
    rounds: usize,
    size: usize,
) -> Vec<Duration> {
    a.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    b.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = b.recv(&mut buf) {
                    let _ = b.send_to(&buf[..n], b_reply);
                }
            }
        });
        let mut rtts = Vec::with_capacity(rounds);
        let mut buf = [0u8; 2048];
        let pkt = rtp(1, 0xc0c0, size);
        for _ in 0..rounds {
            let t = Instant::now();
            a.send_to(&pkt, to_b).unwrap();
            if a.recv(&mut buf).is_ok() {
                rtts.push(t.elapsed());
            }
        }
        stop.store(true, Ordering::Relaxed);
        rtts
    })
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size: usize = args.get(1).map_or(1200, |s| s.parse().unwrap());
    let rounds: usize = args.get(2).map_or(20000, |s| s.parse().unwrap());
    let (c, r, e) = (Ns::new("c"), Ns::new("r"), Ns::new("e"));
    sh(&[
        "ip", "link", "add", "c0", "netns", &c.0, "type", "veth", "peer", "name", "r0", "netns",
        &r.0,
    ]);
    sh(&[
        "ip", "link", "add", "r1", "netns", &r.0, "type", "veth", "peer", "name", "e0", "netns",
        &e.0,
    ]);
    c.ip(&["addr", "add", "10.77.1.1/24", "dev", "c0"]);
    r.ip(&["addr", "add", "10.77.1.2/24", "dev", "r0"]);
    r.ip(&["addr", "add", "10.77.2.2/24", "dev", "r1"]);
    e.ip(&["addr", "add", "10.77.2.1/24", "dev", "e0"]);
    for (ns, d) in [(&c, "c0"), (&r, "r0"), (&r, "r1"), (&e, "e0")] {
        ns.ip(&["link", "set", d, "up"]);
    }
    c.ip(&["route", "add", "10.77.2.0/24", "via", "10.77.1.2"]);
    e.ip(&["route", "add", "10.77.1.0/24", "via", "10.77.2.2"]);
    let caller = c.run(|| sock("10.77.1.1:0"));
    let callee = e.run(|| sock("10.77.2.1:0"));
    let (pc, pe) = (local(&caller), local(&callee));
    println!("payload {size} B (+12 RTP, +8 UDP, +20 IP), {rounds} round trips");

    // --- the fast path ---
    r.sysctl("net.ipv4.ip_forward=0");
    let (mut fp, ra, rb, i0, i1) = r.run(|| {
        let mut fp = FastPath::open("r0").expect("open");
        fp.attach("r1").unwrap();
        (
            fp,
            sock("10.77.1.2:0"),
            sock("10.77.2.2:0"),
            ifindex("r0").unwrap(),
            ifindex("r1").unwrap(),
        )
    });
    let (ka, kb) = (local(&ra), local(&rb));
    fp.install(
        ka,
        &Leg {
            source: pc,
            ssrcs: vec![0xc0c0],
            granted: true,
            egress: Egress {
                from: kb,
                to: pe,
                ifindex: i1,
            },
            clock_rate: 90_000,
            keyframes: false,
            last_keyframe: None,
            fanout: Vec::new(),
        },
    )
    .unwrap();
    fp.install(
        kb,
        &Leg {
            source: pe,
            ssrcs: vec![0xc0c0],
            granted: true,
            egress: Egress {
                from: ka,
                to: pc,
                ifindex: i0,
            },
            clock_rate: 90_000,
            keyframes: false,
            last_keyframe: None,
            fanout: Vec::new(),
        },
    )
    .unwrap();
    let stats_on = enable_run_stats().expect("BPF_ENABLE_STATS");
    let _ = ping_pong(&caller, ka, &callee, kb, 1000, size); // warm up (neighbours, caches)
    let before = fp.run_stats().unwrap();
    let fwd0 = fp.counters(ka).unwrap().packets;
    let err0 = rcvbuf_errors(&e);
    let (sent, got) = blast(&caller, ka, &callee, size);
    let after = fp.run_stats().unwrap();
    let err1 = rcvbuf_errors(&e);
    let fwd = fp.counters(ka).unwrap();
    let runs = after.run_count - before.run_count;
    let ns_per = (after.run_time - before.run_time).as_nanos() as f64 / runs.max(1) as f64;
    println!(
        "fastpath   blast: sent {sent}, forwarded by the program {}, delivered {got} ({:.1} %), callee socket buffer drops {}",
        fwd.packets - fwd0,
        100.0 * got as f64 / sent as f64,
        err1 - err0
    );
    println!(
        "fastpath   bpf_stats: {runs} runs, {ns_per:.0} ns per run (program run time / run count)"
    );
    let b0 = fp.run_stats().unwrap();
    let mut rtt = ping_pong(&caller, ka, &callee, kb, rounds, size);
    let b1 = fp.run_stats().unwrap();
    let pp_ns =
        (b1.run_time - b0.run_time).as_nanos() as f64 / (b1.run_count - b0.run_count).max(1) as f64;
    println!(
        "fastpath   ping-pong ({} answered): RTT p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs; program {pp_ns:.0} ns per run",
        rtt.len(),
        pct(&mut rtt, 0.5),
        pct(&mut rtt, 0.99),
        pct(&mut rtt, 0.999)
    );
    drop((ra, rb));
    drop(stats_on);
    drop(fp);

    // --- plain kernel IP forwarding, no program ---
    r.sysctl("net.ipv4.ip_forward=1");
    let err0 = rcvbuf_errors(&e);
    let (sent, got) = blast(&caller, pe, &callee, size);
    let err1 = rcvbuf_errors(&e);
    println!(
        "ipforward  blast: sent {sent}, delivered {got} ({:.1} %), callee socket buffer drops {}",
        100.0 * got as f64 / sent as f64,
        err1 - err0
    );
    let mut rtt = ping_pong(&caller, pe, &callee, pc, rounds, size);
    println!(
        "ipforward  ping-pong ({} answered): RTT p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
        rtt.len(),
        pct(&mut rtt, 0.5),
        pct(&mut rtt, 0.99),
        pct(&mut rtt, 0.999)
    );
}
