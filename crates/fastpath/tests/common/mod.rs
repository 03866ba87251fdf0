//! Test helpers: network namespaces of the test's own, RTP packets, UDP with a full software
//! checksum (raw socket), the namespace's UDP checksum error counter.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// False (and the reason printed) when the test cannot run here: not root, or a build without
/// the BPF program.
pub fn can_run(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {test}: needs root (CAP_BPF, CAP_NET_ADMIN, network namespaces)");
        return false;
    }
    if !mcvideo_relay_fastpath::BUILT {
        eprintln!("SKIPPED {test}: the crate was built without clang (no BPF program)");
        return false;
    }
    true
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace that lives as long as the value (deleted on drop, with its veths and
/// anything attached to them).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "fpt-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v);
    }

    pub fn sysctl(&self, kv: &str) {
        sh(&["ip", "netns", "exec", &self.name, "sysctl", "-qw", kv]);
    }

    /// Runs `f` on a thread inside the namespace (sockets and the fast path it creates stay
    /// in the namespace wherever they are used later).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(&self.name);
                f()
            })
            .join()
            .expect("namespace thread panicked")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn enter(name: &str) {
    let f = std::fs::File::open(format!("/run/netns/{name}")).expect("open netns");
    // SAFETY: a valid namespace fd; setns changes only the calling thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

/// `veth` pair `a` (in `na`) – `b` (in `nb`).
pub fn veth(na: &Netns, a: &str, nb: &Netns, b: &str) {
    sh(&[
        "ip", "link", "add", a, "netns", &na.name, "type", "veth", "peer", "name", b, "netns",
        &nb.name,
    ]);
}

pub fn udp(addr: SocketAddrV4) -> UdpSocket {
    let s = UdpSocket::bind(addr).expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

pub fn local(s: &UdpSocket) -> SocketAddrV4 {
    match s.local_addr().unwrap() {
        SocketAddr::V4(a) => a,
        a => panic!("not v4: {a}"),
    }
}

/// An RTP packet: version 2, payload type `pt`, `seq`, `ssrc`, `len` bytes of payload.
pub fn rtp(pt: u8, seq: u16, ssrc: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0x80, pt & 0x7f];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..len).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// An RTCP packet (SR, payload type 200) or an MCV APP (204) from `ssrc`.
pub fn rtcp(pt: u8, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, pt, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(b"MCV0");
    p.extend_from_slice(&[0; 16]);
    p
}

/// Everything `s` receives until `quiet` passes with nothing (or 2 s in all).
pub fn drain(s: &UdpSocket, quiet: Duration) -> Vec<(Vec<u8>, SocketAddrV4)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let mut last = Instant::now();
    while last.elapsed() < quiet && start.elapsed() < Duration::from_secs(2) {
        match s.recv_from(&mut buf) {
            Ok((n, SocketAddr::V4(from))) => {
                got.push((buf[..n].to_vec(), from));
                last = Instant::now();
            }
            Ok(_) => {}
            Err(_) => {}
        }
    }
    got
}

fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        sum += u32::from(w);
    }
    sum
}

/// The UDP header and payload of a datagram with its checksum computed in full (or 0 when
/// `checksum` is false).
pub fn udp_datagram(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
    checksum: bool,
) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut d = Vec::with_capacity(len as usize);
    d.extend_from_slice(&src.port().to_be_bytes());
    d.extend_from_slice(&dst.port().to_be_bytes());
    d.extend_from_slice(&len.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    if checksum {
        let mut sum = csum_add(0, &src.ip().octets());
        sum = csum_add(sum, &dst.ip().octets());
        sum += 17 + u32::from(len);
        sum = csum_add(sum, &d);
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let mut c = !(sum as u16);
        if c == 0 {
            c = 0xffff;
        }
        d[6..8].copy_from_slice(&c.to_be_bytes());
    }
    d
}

/// Sends a UDP datagram through a raw socket bound to `src`'s address: the kernel adds the IP
/// header and leaves the UDP checksum as given, so the receiver verifies it in software
/// (no checksum offload to hide a wrong one).
pub fn send_raw_udp(src: SocketAddrV4, dst: SocketAddrV4, datagram: &[u8]) {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).expect("raw socket");
    s.bind(&SocketAddr::V4(SocketAddrV4::new(*src.ip(), 0)).into())
        .expect("bind raw");
    s.send_to(
        datagram,
        &SocketAddr::V4(SocketAddrV4::new(*dst.ip(), 0)).into(),
    )
    .expect("send raw");
}

/// `Udp: InCsumErrors` of the calling thread's namespace.
pub fn udp_csum_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let head: Vec<&str> = udp.next().unwrap().split_whitespace().collect();
    let vals: Vec<&str> = udp.next().unwrap().split_whitespace().collect();
    let i = head.iter().position(|h| *h == "InCsumErrors").unwrap();
    vals[i].parse().unwrap()
}

pub fn v4(a: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(a), port)
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// How an IPv4/UDP packet's UDP checksum field stands: `Full` when it verifies over the pseudo
/// header and the datagram, `Partial` when it holds exactly the pseudo-header sum a sender
/// with checksum offload leaves for the device (CHECKSUM_PARTIAL), `None` when zero, else `Bad`.
#[derive(Debug, PartialEq, Eq)]
pub enum UdpCsum {
    Full,
    Partial,
    None,
    Bad,
}

pub fn udp_csum_state(ip: &[u8]) -> UdpCsum {
    let ihl = usize::from(ip[0] & 0xf) * 4;
    let d = &ip[ihl..];
    let check = u16::from_be_bytes([d[6], d[7]]);
    if check == 0 {
        return UdpCsum::None;
    }
    let pseudo = csum_add(csum_add(0, &ip[12..16]), &ip[16..20]) + 17 + d.len() as u32;
    if fold(csum_add(pseudo, d)) == 0xffff {
        UdpCsum::Full
    } else if fold(pseudo) == check {
        UdpCsum::Partial
    } else {
        UdpCsum::Bad
    }
}

/// A raw socket that sees a copy of every UDP packet delivered in the calling thread's
/// namespace, IP header included.
pub fn udp_tap() -> socket2::Socket {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).expect("raw socket");
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

/// The IP packets `tap` saw to UDP port `port`, until `quiet` passes with nothing.
pub fn tapped(tap: &socket2::Socket, port: u16, quiet: Duration) -> Vec<Vec<u8>> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let mut last = Instant::now();
    let start = Instant::now();
    let mut tap = tap;
    while last.elapsed() < quiet && start.elapsed() < Duration::from_secs(2) {
        if let Ok(n) = tap.read(&mut buf) {
            let p = &buf[..n];
            let ihl = usize::from(p[0] & 0xf) * 4;
            if n >= ihl + 8 && u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]) == port {
                got.push(p.to_vec());
            }
            last = Instant::now();
        }
    }
    got
}

/// Sets UDP_SEGMENT (UDP GSO) on `s`: each send is cut into datagrams of `size` bytes by the
/// kernel; 0 turns it off.
pub fn set_udp_segment(s: &UdpSocket, size: u16) {
    let v = libc::c_int::from(size);
    // SAFETY: a valid socket and a c_int option value of the size given.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
}
