//! Kernel fast path for mcvideo-relay: a TCX ingress BPF program (`bpf/fastpath.bpf.c`) that
//! forwards a latched, granted media leg's RTP in the kernel, and its loader.
//!
//! The relay keeps one entry per leg, at the relay port the leg's packets arrive on, with the
//! relay address they are aimed at ([`FastPath::install`]): the maps are arrays indexed by port
//! within the range the fast path was opened for ([`FastPath::open_with_ports`]). The program forwards a packet only when it is RTP (version
//! 2, payload type outside 64–95), comes from the leg's latched source, carries an allowed SSRC
//! and the leg holds the grant ([`FastPath::set_granted`]); it rewrites addresses, ports and
//! checksums and sends the packet out of the egress interface (`bpf_redirect_neigh`), or, for a
//! destination on this host (`ifindex` 0, loopback), lets the stack deliver the rewritten packet.
//! Everything else goes up to the relay's socket unchanged, and packets aimed at a leg but not
//! forwarded are counted by reason ([`Counters`]).
//!
//! The program and its links belong to the [`FastPath`]: dropping it, or the process dying,
//! detaches them (TCX links are file descriptors; nothing is pinned).
//!
//! ```no_run
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use mcvideo_relay_fastpath::{Egress, FastPath, Leg};
//!
//! let mut fp = FastPath::open("lo")?;
//! let relay = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
//! fp.install(relay, &Leg {
//!     source: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5004),
//!     ssrcs: vec![0x1234_5678],
//!     granted: true,
//!     egress: Egress {
//!         from: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40002),
//!         to: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 6004),
//!         ifindex: 0,
//!     },
//!     clock_rate: 90_000,
//!     keyframes: true,
//!     last_keyframe: None,
//!     fanout: Vec::new(),
//! })?;
//! fp.set_granted(relay, false)?; // a Revoked: not one more packet in the kernel
//! println!("{:?}", fp.counters(relay)?);
//! fp.remove(relay)?;
//! # Ok::<(), mcvideo_relay_fastpath::Error>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, unreachable_pub)]

use std::fmt;
#[cfg(not(fastpath_no_bpf))]
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::time::Duration;

#[cfg(not(fastpath_no_bpf))]
use aya::{
    maps::{Array, MapData},
    programs::{
        tc::{SchedClassifierLink, TcAttachOptions},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    Ebpf, EbpfLoader,
};

/// The BPF object built from `bpf/fastpath.bpf.c` by build.rs.
#[cfg(not(fastpath_no_bpf))]
static OBJECT: &[u8] = aligned_object();

#[cfg(not(fastpath_no_bpf))]
const fn aligned_object() -> &'static [u8] {
    // The ELF parser wants 8-byte alignment; include_bytes! gives 1.
    #[repr(C, align(8))]
    struct Aligned<B: ?Sized>(B);
    static A: &Aligned<[u8]> =
        &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/fastpath.bpf.o")));
    &A.0
}

/// Whether this build carries the BPF program (false: clang was missing at build time, and
/// [`FastPath::open`] returns [`Error::NotBuilt`]).
pub const BUILT: bool = cfg!(not(fastpath_no_bpf));

/// The program's name in the object (its function).
pub const PROGRAM_NAME: &str = "fastpath";
#[cfg(not(fastpath_no_bpf))]
const CONF_MAP: &str = "fp_conf";
#[cfg(not(fastpath_no_bpf))]
const LEGS_MAP: &str = "fp_legs";
#[cfg(not(fastpath_no_bpf))]
const STATS_MAP: &str = "fp_stats";
#[cfg(not(fastpath_no_bpf))]
const FANOUT_MAP: &str = "fp_fanout";
/// How many SSRCs one leg may allow.
pub const MAX_SSRCS: usize = 4;
/// How many receivers a leg may send copies to besides its own egress ([`Leg::fanout`]).
pub const MAX_FANOUT: usize = 64;
/// The most memory the arrays may take (legs and counters together, allocated at load); a
/// port range and CPU count that need more are refused by [`FastPath::open_with_ports`].
pub const MAX_ARRAY_BYTES: u64 = 256 << 20;

/// The relay ports [`FastPath::open`] covers: every unprivileged port. The arrays take
/// `64 + 128 × CPUs` bytes a port, so a relay opens the fast path for its own media range
/// ([`FastPath::open_with_ports`]).
pub const DEFAULT_PORTS: RangeInclusive<u16> = 1024..=65535;

/// Why the fast path could not be set up or changed. [`Error::is_fallback`] tells the relay to
/// run the leg (or everything) in userspace instead.
#[derive(Debug)]
pub enum Error {
    /// This build has no BPF program: clang was missing when the crate was built.
    NotBuilt,
    /// The process may not load BPF programs or attach them (needs `CAP_BPF` or
    /// `CAP_SYS_ADMIN`, and `CAP_NET_ADMIN`; or seccomp/an LSM said no).
    NoPrivilege(String),
    /// The kernel cannot: no BPF syscall, no TCX (Linux < 6.6), a helper or map type missing,
    /// or the verifier rejected the program.
    Unsupported(String),
    /// No interface of that name in this network namespace.
    NoSuchInterface(String),
    /// The leg given to [`FastPath::install`] is not valid (the reason).
    InvalidLeg(&'static str),
    /// No entry for that relay address and port.
    NotFound(SocketAddrV4),
    /// No entry can hold a leg at that relay address and port: the port is outside the range
    /// the fast path was opened for, or a leg at another relay address holds it (or no
    /// fan-out block is free).
    NoSlot(SocketAddrV4),
    /// A fan-out receiver's next hop has no Ethernet address in the neighbour table yet (the
    /// relay's own sends to it resolve one).
    NoNeighbour(SocketAddrV4),
    /// Anything else (the loader's message).
    Other(String),
}

impl Error {
    /// True when the relay should carry on in userspace: the fast path cannot run here at all
    /// (not built, no privilege, the kernel cannot).
    pub fn is_fallback(&self) -> bool {
        matches!(
            self,
            Error::NotBuilt | Error::NoPrivilege(_) | Error::Unsupported(_)
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotBuilt => write!(f, "kernel fast path not built in (no clang at build time)"),
            Error::NoPrivilege(m) => write!(f, "no privilege for the kernel fast path: {m}"),
            Error::Unsupported(m) => write!(f, "the kernel cannot run the fast path: {m}"),
            Error::NoSuchInterface(i) => write!(f, "no interface {i:?}"),
            Error::InvalidLeg(m) => write!(f, "invalid leg: {m}"),
            Error::NotFound(k) => write!(f, "no fast-path entry for {k}"),
            Error::NoSlot(k) => write!(
                f,
                "no fast-path entry can hold {k}: its port is outside the fast path's range or \
                 taken by a leg at another address"
            ),
            Error::NoNeighbour(a) => write!(f, "no neighbour entry yet for the next hop to {a}"),
            Error::Other(m) => write!(f, "kernel fast path: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Where a leg's forwarded packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Egress {
    /// The relay's source address and port on the way out (the address of the egress
    /// interface, the port the destination knows the relay by).
    pub from: SocketAddrV4,
    /// The destination (negotiated or latched).
    pub to: SocketAddrV4,
    /// The interface to send on (`bpf_redirect_neigh`: route and neighbour resolved by the
    /// kernel), or 0 for a destination on this host: the rewritten packet is passed up to the
    /// local stack (`lo`). See [`ifindex`].
    pub ifindex: u32,
}

/// One media leg in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// The latched source: only its packets are forwarded.
    pub source: SocketAddrV4,
    /// The SSRCs forwarded (1 to [`MAX_SSRCS`]).
    pub ssrcs: Vec<u32>,
    /// Whether the leg's transmitter holds the grant (what the arbiter says).
    pub granted: bool,
    /// Where the packets go.
    pub egress: Egress,
    /// The stream's RTP clock rate in Hz, for the interarrival jitter (0: unknown, no jitter).
    pub clock_rate: u32,
    /// Count keyframes ([`Counters::keyframes`]): for a video stream whose payload the relay
    /// can read (plain RTP), as its own scan does.
    pub keyframes: bool,
    /// The last keyframe the relay counted itself, as (SSRC, RTP timestamp): a leg installed
    /// in the middle of that keyframe's packets does not count it again.
    pub last_keyframe: Option<(u32, u32)>,
    /// More receivers (a group's, up to [`MAX_FANOUT`]): each forwarded packet also goes to
    /// each of them, rewritten for it, before the copy for [`Leg::egress`]. One behind an
    /// interface needs its next hop's Ethernet address in the neighbour table when the leg is
    /// installed ([`Error::NoNeighbour`] otherwise; [`FastPath::refresh_neighbours`] follows
    /// changes). Empty for a one-to-one leg.
    pub fanout: Vec<Egress>,
}

/// A leg's counters, summed over CPUs. The `passed_up_*` packets were aimed at the leg's relay
/// port but not forwarded: they went to the relay's socket, which judges them as before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets forwarded in the kernel.
    pub packets: u64,
    /// UDP payload bytes forwarded (RTP header included).
    pub bytes: u64,
    /// Passed up: not from the latched source.
    pub passed_up_wrong_source: u64,
    /// Passed up: not one RTP datagram (RTCP or MCV0/1/2 on payload types 64–95, not version
    /// 2, too short, or a GSO batch of several datagrams).
    pub passed_up_not_rtp: u64,
    /// Passed up: an SSRC not allowed.
    pub passed_up_unknown_ssrc: u64,
    /// Passed up: the leg's transmitter had no grant.
    pub passed_up_not_granted: u64,
    /// Dropped in the kernel: a rewrite helper failed half way; or a fan-out copy the kernel
    /// would not send (should stay 0).
    pub errors: u64,
    /// The highest RTP sequence number forwarded (serial-number order), if any.
    pub highest_seq: Option<u16>,
    /// Packets forwarded with the RTP marker bit set (video: the last packet of a frame), so
    /// the relay's quality figures can count frames it did not see.
    pub frames: u64,
    /// How long ago the last packet was forwarded (at the time the counters were read).
    pub last_forwarded_ago: Option<Duration>,
    /// Interarrival jitter of the forwarded packets (RFC 3550 §6.4.1, A.8), in RTP timestamp
    /// units × 16, as the relay's own meter keeps it; from the CPU that forwarded the last
    /// packet. `None` without a clock rate or before two packets on one CPU.
    pub jitter_q4: Option<u64>,
    /// H.264 keyframes forwarded (legs with [`Leg::keyframes`]): IDR access units, each once
    /// per (SSRC, RTP timestamp), on whichever CPUs its packets arrived.
    pub keyframes: u64,
    /// The last keyframe counted (by the program, or the [`Leg::last_keyframe`] it started
    /// from), as (SSRC, RTP timestamp): where the relay takes the leg back, it goes on from
    /// there, so an access unit split between the kernel and the relay counts once.
    pub last_keyframe: Option<(u32, u32)>,
}

/// The program's own cost, from the kernel's BPF statistics (`kernel.bpf_stats_enabled=1`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Runs counted (every packet the program saw on every interface).
    pub run_count: u64,
    /// Total time in the program.
    pub run_time: Duration,
}

/// What the program did with one frame ([`FastPath::test_run`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRun {
    /// Its return value, a TC action: [`TestRun::PASS`] (not forwarded: the next program or
    /// the stack, and so the relay's socket), [`TestRun::LOCAL`] (forwarded to this host),
    /// [`TestRun::REDIRECT`] (forwarded out of an interface), [`TestRun::DROP`].
    pub verdict: i32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// Mean run time over the repeats.
    pub mean: Duration,
}

impl TestRun {
    /// `TC_ACT_UNSPEC` (TCX_NEXT): left alone.
    pub const PASS: i32 = -1;
    /// `TC_ACT_OK`: rewritten for a destination on this host and passed up.
    pub const LOCAL: i32 = 0;
    /// `TC_ACT_SHOT`: dropped (a rewrite failed half way).
    pub const DROP: i32 = 2;
    /// `TC_ACT_REDIRECT`: rewritten and sent out of the leg's interface.
    pub const REDIRECT: i32 = 7;
}

/// `BPF_PROG_TEST_RUN` (include/uapi/linux/bpf.h, `enum bpf_cmd`).
#[cfg(not(fastpath_no_bpf))]
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr` (include/uapi/linux/bpf.h), through `batch_size`.
#[cfg(not(fastpath_no_bpf))]
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

#[cfg(not(fastpath_no_bpf))]
const _: () = assert!(size_of::<TestRunAttr>() == 80);

// ---- the map layouts, mirrored from bpf/fastpath.bpf.c ----------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RawConf {
    port_base: u32,
    ncpus: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RawLeg {
    relay_addr: u32, // network byte order, as in the packet
    src_addr: u32,
    src_port: u16,
    n_ssrc: u8,
    flags: u8,
    ssrc: [u32; MAX_SSRCS],
    out_addr: u32,
    out_port: u16,
    dst_port: u16,
    dst_addr: u32,
    ifindex: u32,
    clock_rate: u32,
    ns_to_ts_q32: u32,
    fan_first: u32,
    fan_n: u32,
    reserved: u32,
}

/// One more receiver of a fan-out leg (`struct fp_out`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RawOut {
    out_addr: u32,
    out_port: u16,
    dst_port: u16,
    dst_addr: u32,
    ifindex: u32,
    macs: [u8; 12],
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RawCounters {
    packets: u64,
    bytes: u64,
    frames: u64,
    last_ns: u64,
    jitter_q4: u64,
    last_ts: u32,
    ts_valid: u32,
    highest_seq: u32,
    seq_valid: u32,
    wrong_source: u64,
    not_rtp: u64,
    unknown_ssrc: u64,
    not_granted: u64,
    errors: u64,
    keyframes: u64,
    last_key_ts: u32,
    last_key_ssrc: u32,
    key_valid: u32,
    pad: u32,
    reserved: u64,
}

const FP_GRANTED: u8 = 1;
const FP_ACTIVE: u8 = 2;
const FP_KEYFRAMES: u8 = 4;

const _: () = assert!(size_of::<RawConf>() == 8);
const _: () = assert!(size_of::<RawLeg>() == 64);
const _: () = assert!(size_of::<RawCounters>() == 128);
const _: () = assert!(size_of::<RawOut>() == 32);

// SAFETY: plain #[repr(C)] integers with no padding (sizes asserted above): every bit pattern
// is a valid value, and the kernel copies them as bytes.
#[cfg(not(fastpath_no_bpf))]
unsafe impl aya::Pod for RawConf {}
// SAFETY: as above.
#[cfg(not(fastpath_no_bpf))]
unsafe impl aya::Pod for RawLeg {}
// SAFETY: as above.
#[cfg(not(fastpath_no_bpf))]
unsafe impl aya::Pod for RawCounters {}
// SAFETY: as above.
#[cfg(not(fastpath_no_bpf))]
unsafe impl aya::Pod for RawOut {}

fn be32(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

fn be16(p: u16) -> u16 {
    p.to_be()
}

/// Whether arrays for `ports` ports and `ncpus` CPUs stay within [`MAX_ARRAY_BYTES`].
#[cfg_attr(fastpath_no_bpf, allow(dead_code))]
fn arrays_fit(ports: u32, ncpus: u32) -> Result<(), Error> {
    let bytes = u64::from(ports)
        * (size_of::<RawLeg>() as u64 + u64::from(ncpus) * size_of::<RawCounters>() as u64)
        + u64::from(fan_blocks(ports)) * (MAX_FANOUT * size_of::<RawOut>()) as u64;
    if bytes > MAX_ARRAY_BYTES {
        return Err(Error::Other(format!(
            "{ports} ports × {ncpus} CPUs need {} MiB of arrays, more than the {} MiB allowed: \
             give the media interfaces a smaller port range",
            bytes >> 20,
            MAX_ARRAY_BYTES >> 20
        )));
    }
    Ok(())
}

/// The calling thread's namespace's IPv4 routes and neighbours (`/proc/thread-self/net/route`
/// and `arp`), read once for a batch of lookups.
#[derive(Debug, Default)]
#[cfg_attr(fastpath_no_bpf, allow(dead_code))]
struct Neighbours {
    /// (interface, destination, mask, gateway), addresses in host order.
    routes: Vec<(String, u32, u32, u32)>,
    /// (interface, address, Ethernet address) of complete entries.
    arp: Vec<(String, Ipv4Addr, [u8; 6])>,
}

#[cfg_attr(fastpath_no_bpf, allow(dead_code))]
impl Neighbours {
    fn read() -> Neighbours {
        let text = |f: &str| std::fs::read_to_string(format!("/proc/thread-self/net/{f}"));
        Neighbours::parse(
            &text("route").unwrap_or_default(),
            &text("arp").unwrap_or_default(),
        )
    }

    fn parse(route: &str, arp: &str) -> Neighbours {
        let routes = route
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let up = u32::from_str_radix(f.get(3)?, 16).ok()? & 1 != 0;
                // An address is its network-order bytes read as a native word, in hex.
                let word = |i: usize| {
                    let v = u32::from_str_radix(f.get(i)?, 16).ok()?;
                    Some(u32::from_be_bytes(v.to_ne_bytes()))
                };
                up.then_some(((*f.first()?).to_owned(), word(1)?, word(7)?, word(2)?))
            })
            .collect();
        let arp = arp
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let flags = u32::from_str_radix(f.get(2)?.trim_start_matches("0x"), 16).ok()?;
                if flags & 0x2 == 0 {
                    return None; // not complete (ATF_COM)
                }
                let ip: Ipv4Addr = f.first()?.parse().ok()?;
                let mut mac = [0u8; 6];
                let mut parts = f.get(3)?.split(':');
                for b in &mut mac {
                    *b = u8::from_str_radix(parts.next()?, 16).ok()?;
                }
                Some(((*f.get(5)?).to_owned(), ip, mac))
            })
            .collect();
        Neighbours { routes, arp }
    }

    /// The next hop toward `to` out of `iface`: the gateway of the longest matching route
    /// there, or `to` itself when it is on the link.
    fn next_hop(&self, iface: &str, to: Ipv4Addr) -> Ipv4Addr {
        let t = u32::from(to);
        self.routes
            .iter()
            .filter(|(i, dest, mask, _)| i == iface && t & mask == *dest)
            .max_by_key(|(_, _, mask, _)| mask.count_ones())
            .map_or(
                to,
                |&(_, _, _, gw)| if gw == 0 { to } else { Ipv4Addr::from(gw) },
            )
    }

    /// The neighbour table's Ethernet address for `ip` on `iface`.
    fn mac(&self, iface: &str, ip: Ipv4Addr) -> Option<[u8; 6]> {
        self.arp
            .iter()
            .find(|(i, a, _)| i == iface && *a == ip)
            .map(|(_, _, m)| *m)
    }
}

/// The name and Ethernet address of interface `ifindex` (`SIOCGIFHWADDR`); an interface with
/// no Ethernet address cannot take fan-out copies.
#[cfg(not(fastpath_no_bpf))]
fn interface_mac(ifindex: u32) -> Result<(String, [u8; 6]), Error> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` has IF_NAMESIZE bytes, as if_indextoname requires.
    if unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) }.is_null() {
        return Err(Error::Other(format!("no interface with index {ifindex}")));
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into `name`.
    let iface = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: socket has no memory preconditions; a valid descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::Other(format!(
            "socket: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed ifreq is valid; its name is set below within IFNAMSIZ bytes.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.iter()) {
        *d = *s;
    }
    // SAFETY: SIOCGIFHWADDR reads the name and writes ifr_hwaddr of `req`, a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return Err(Error::Other(format!(
            "the Ethernet address of {iface}: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: after SIOCGIFHWADDR the union holds ifr_hwaddr.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    if hw.sa_family != libc::ARPHRD_ETHER {
        return Err(Error::Other(format!(
            "{iface} is not an Ethernet interface"
        )));
    }
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok((iface, mac))
}

/// How many fan-out blocks arrays for `ports` ports get: one entry a port, at least 64 blocks
/// (64 group transmitters with fan-out at once).
#[cfg_attr(fastpath_no_bpf, allow(dead_code))]
fn fan_blocks(ports: u32) -> u32 {
    ports.div_ceil(MAX_FANOUT as u32).max(64)
}

/// The entry of relay port `port` in arrays that start at `base` and hold `len` entries.
fn slot(base: u16, len: u32, port: u16) -> Option<u32> {
    let i = u32::from(port.checked_sub(base)?);
    (i < len).then_some(i)
}

/// The number of entries a port range takes.
fn range_len(ports: &RangeInclusive<u16>) -> u32 {
    u32::from(*ports.end())
        .saturating_sub(u32::from(*ports.start()))
        .saturating_add(1)
}

fn raw_leg(relay: SocketAddrV4, leg: &Leg) -> Result<RawLeg, Error> {
    if leg.ssrcs.is_empty() || leg.ssrcs.len() > MAX_SSRCS {
        return Err(Error::InvalidLeg("1 to 4 SSRCs"));
    }
    if leg.source.port() == 0 || leg.egress.to.port() == 0 || leg.egress.from.port() == 0 {
        return Err(Error::InvalidLeg("a port is 0"));
    }
    if leg.egress.to.ip().is_unspecified() || leg.egress.from.ip().is_unspecified() {
        return Err(Error::InvalidLeg("an egress address is 0.0.0.0"));
    }
    let mut ssrc = [0u32; MAX_SSRCS];
    for (slot, s) in ssrc.iter_mut().zip(&leg.ssrcs) {
        *slot = s.to_be();
    }
    Ok(RawLeg {
        relay_addr: be32(*relay.ip()),
        src_addr: be32(*leg.source.ip()),
        src_port: be16(leg.source.port()),
        n_ssrc: leg.ssrcs.len() as u8,
        flags: FP_ACTIVE
            | if leg.granted { FP_GRANTED } else { 0 }
            | if leg.keyframes { FP_KEYFRAMES } else { 0 },
        ssrc,
        out_addr: be32(*leg.egress.from.ip()),
        out_port: be16(leg.egress.from.port()),
        dst_port: be16(leg.egress.to.port()),
        dst_addr: be32(*leg.egress.to.ip()),
        ifindex: leg.egress.ifindex,
        clock_rate: leg.clock_rate,
        ns_to_ts_q32: ns_to_ts_q32(leg.clock_rate),
        fan_first: 0,
        fan_n: 0, // the loader's, once it has the entries
        reserved: 0,
    })
}

/// The program's entries for `leg`'s fan-out receivers.
fn raw_outs(leg: &Leg) -> Result<Vec<RawOut>, Error> {
    if leg.fanout.len() > MAX_FANOUT {
        return Err(Error::InvalidLeg("more than 64 fan-out receivers"));
    }
    leg.fanout
        .iter()
        .map(|e| {
            if e.to.port() == 0 || e.from.port() == 0 {
                return Err(Error::InvalidLeg("a fan-out port is 0"));
            }
            if e.to.ip().is_unspecified() || e.from.ip().is_unspecified() {
                return Err(Error::InvalidLeg("a fan-out address is 0.0.0.0"));
            }
            Ok(RawOut {
                out_addr: be32(*e.from.ip()),
                out_port: be16(e.from.port()),
                dst_port: be16(e.to.port()),
                dst_addr: be32(*e.to.ip()),
                ifindex: e.ifindex,
                ..RawOut::default()
            })
        })
        .collect()
}

/// The factor that turns nanoseconds into RTP timestamp units at `clock_rate` Hz, in 32.32
/// fixed point (the program multiplies and shifts rather than divide). 0, no jitter, for no
/// clock or one over 16 MHz, where the program's product could overflow.
fn ns_to_ts_q32(clock_rate: u32) -> u32 {
    if clock_rate > 16_000_000 {
        return 0;
    }
    u32::try_from(((u64::from(clock_rate) << 32) + 500_000_000) / 1_000_000_000).unwrap_or(0)
}

/// Sums per-CPU counters; the highest sequence number in RFC 1982 order across CPUs.
fn sum_counters(per_cpu: impl IntoIterator<Item = RawCounters>, now_ns: u64) -> Counters {
    let mut c = Counters::default();
    let mut last_ns = 0;
    for (cpu, v) in per_cpu.into_iter().enumerate() {
        if cpu == 0 && v.key_valid != 0 {
            // The leg's mark lives in its first CPU's entry (bpf/fastpath.bpf.c).
            c.last_keyframe = Some((u32::from_be(v.last_key_ssrc), v.last_key_ts));
        }
        c.frames += v.frames;
        c.keyframes += v.keyframes;
        if v.ts_valid != 0 && (c.jitter_q4.is_none() || v.last_ns >= last_ns) {
            // The jitter of the CPU that forwarded the latest packet.
            c.jitter_q4 = Some(v.jitter_q4);
        }
        last_ns = last_ns.max(v.last_ns);
        c.packets += v.packets;
        c.bytes += v.bytes;
        c.passed_up_wrong_source += v.wrong_source;
        c.passed_up_not_rtp += v.not_rtp;
        c.passed_up_unknown_ssrc += v.unknown_ssrc;
        c.passed_up_not_granted += v.not_granted;
        c.errors += v.errors;
        if v.seq_valid != 0 {
            let s = v.highest_seq as u16;
            c.highest_seq = match c.highest_seq {
                Some(h) if (s.wrapping_sub(h) as i16) <= 0 => Some(h),
                _ => Some(s),
            };
        }
    }
    if last_ns != 0 {
        c.last_forwarded_ago = Some(Duration::from_nanos(now_ns.saturating_sub(last_ns)));
    }
    c
}

/// The counters array mapped read-only into this process (`BPF_F_MMAPABLE`): a leg's counters
/// are read with plain loads, not one `bpf` system call per CPU. The kernel writes the words
/// as the program counts; each is read whole (aligned 64-bit loads), so a sum may lag a packet
/// behind the program, never hold a torn value.
#[cfg(not(fastpath_no_bpf))]
struct SharedCounters {
    ptr: std::ptr::NonNull<u64>,
    /// Entries mapped.
    entries: u32,
    /// Bytes mapped.
    len: usize,
}

// SAFETY: the mapping is read-only shared memory owned by this value; reading it from any
// thread is what it is for (atomic loads, below).
#[cfg(not(fastpath_no_bpf))]
unsafe impl Send for SharedCounters {}
// SAFETY: as above: `&self` only reads.
#[cfg(not(fastpath_no_bpf))]
unsafe impl Sync for SharedCounters {}

#[cfg(not(fastpath_no_bpf))]
impl SharedCounters {
    const WORDS: usize = size_of::<RawCounters>() / 8;

    /// Maps `entries` counters of the array behind `fd`.
    fn map(fd: std::os::fd::BorrowedFd<'_>, entries: u32) -> io::Result<SharedCounters> {
        use std::os::fd::AsRawFd;
        let len = (entries as usize)
            .checked_mul(size_of::<RawCounters>())
            .ok_or_else(|| io::Error::other("too many counters to map"))?;
        // SAFETY: a new read-only shared mapping of `len` bytes of the map behind `fd` (the
        // kernel checks `len` against the array); nothing else aliases it in this process.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast::<u64>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(SharedCounters { ptr, entries, len })
    }

    /// Counters entry `i`, `None` past the end.
    fn get(&self, i: u32) -> Option<RawCounters> {
        if i >= self.entries {
            return None;
        }
        let mut w = [0u64; Self::WORDS];
        for (k, word) in w.iter_mut().enumerate() {
            // SAFETY: `i < entries`, so the word lies inside the mapping, 8-byte aligned (the
            // mapping is page-aligned and an entry is 128 bytes); the kernel may write it
            // concurrently, so it is read atomically.
            let a = unsafe {
                &*self
                    .ptr
                    .as_ptr()
                    .add(i as usize * Self::WORDS + k)
                    .cast::<std::sync::atomic::AtomicU64>()
            };
            *word = a.load(std::sync::atomic::Ordering::Relaxed);
        }
        Some(counters_from_words(&w))
    }
}

#[cfg(not(fastpath_no_bpf))]
impl Drop for SharedCounters {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of `len` bytes, unmapped once.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// A counters entry from its sixteen 64-bit words, as `struct fp_counters` lays them out (two
/// 32-bit fields share a word, the first at the lower address).
#[cfg_attr(fastpath_no_bpf, allow(dead_code))]
fn counters_from_words(w: &[u64; 16]) -> RawCounters {
    let halves = |x: u64| {
        let b = x.to_ne_bytes();
        (
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        )
    };
    let (last_ts, ts_valid) = halves(w[5]);
    let (highest_seq, seq_valid) = halves(w[6]);
    let (last_key_ts, last_key_ssrc) = halves(w[13]);
    let (key_valid, pad) = halves(w[14]);
    RawCounters {
        packets: w[0],
        bytes: w[1],
        frames: w[2],
        last_ns: w[3],
        jitter_q4: w[4],
        last_ts,
        ts_valid,
        highest_seq,
        seq_valid,
        wrong_source: w[7],
        not_rtp: w[8],
        unknown_ssrc: w[9],
        not_granted: w[10],
        errors: w[11],
        keyframes: w[12],
        last_key_ts,
        last_key_ssrc,
        key_valid,
        pad,
        reserved: w[15],
    }
}

/// CLOCK_MONOTONIC in ns: the clock of the program's `bpf_ktime_get_ns`.
#[cfg(not(fastpath_no_bpf))]
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if r != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The interface index of `name` in the calling thread's network namespace (for
/// [`Egress::ifindex`]).
pub fn ifindex(name: &str) -> Result<u32, Error> {
    let c = std::ffi::CString::new(name).map_err(|_| Error::NoSuchInterface(name.to_owned()))?;
    // SAFETY: a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(Error::NoSuchInterface(name.to_owned()))
    } else {
        Ok(i)
    }
}

/// Whether this process has the capabilities to load and attach the program: (`CAP_BPF` or
/// `CAP_SYS_ADMIN`) and `CAP_NET_ADMIN`, from `/proc/self/status`.
pub fn has_privilege() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
    else {
        return false;
    };
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    (has(CAP_BPF) || has(CAP_SYS_ADMIN)) && has(CAP_NET_ADMIN)
}

/// Sorts a loader error into [`Error`] by the errno underneath and the stage it came from.
#[cfg(not(fastpath_no_bpf))]
fn classify(stage: &str, e: &(dyn std::error::Error + 'static)) -> Error {
    let mut errno = None;
    let mut verifier = false;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            errno = errno.or(io.raw_os_error());
        }
        if let Some(aya::programs::ProgramError::LoadError { verifier_log, .. }) =
            err.downcast_ref::<aya::programs::ProgramError>()
        {
            verifier = !verifier_log.to_string().trim().is_empty();
        }
        cur = err.source();
    }
    let msg = format!("{stage}: {}", chain(e));
    match errno {
        Some(libc::EPERM) => Error::NoPrivilege(msg),
        Some(libc::EACCES) if !verifier => Error::NoPrivilege(msg),
        Some(libc::ENODEV) | Some(libc::ENXIO) if stage == "attach" => Error::NoSuchInterface(msg),
        Some(
            libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP | libc::EACCES | 524, /* ENOTSUPP */
        ) => Error::Unsupported(msg),
        _ if stage == "load" => Error::Unsupported(msg),
        _ => Error::Other(msg),
    }
}

#[cfg(not(fastpath_no_bpf))]
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let m = err.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = err.source();
    }
    s
}

/// The loaded program, its maps and its TCX links. Dropping it detaches every link and unloads
/// the program and maps (nothing is pinned, so a killed process leaves nothing behind).
pub struct FastPath {
    #[cfg(not(fastpath_no_bpf))]
    links: Vec<(String, SchedClassifierLink)>,
    #[cfg(not(fastpath_no_bpf))]
    legs: Array<MapData, RawLeg>,
    /// The counters: `ncpus` entries a leg, one for each CPU; written through the map (at
    /// install), read through `stats_view` (no system call).
    #[cfg(not(fastpath_no_bpf))]
    stats: Array<MapData, RawCounters>,
    #[cfg(not(fastpath_no_bpf))]
    stats_view: SharedCounters,
    /// Fan-out receivers, in blocks of [`MAX_FANOUT`] entries, one block a fan-out leg.
    #[cfg(not(fastpath_no_bpf))]
    fanout: Array<MapData, RawOut>,
    #[cfg(not(fastpath_no_bpf))]
    fan: FanBlocks,
    /// Interface names and Ethernet addresses by index, as looked up.
    #[cfg(not(fastpath_no_bpf))]
    iface_macs: std::collections::HashMap<u32, (String, [u8; 6])>,
    /// The legs this value installed, by entry: what the kernel's array holds there (so a
    /// grant change or a counters read needs no lookup first).
    #[cfg(not(fastpath_no_bpf))]
    installed: std::collections::HashMap<u32, RawLeg>,
    /// The first relay port the arrays cover, and how many.
    #[cfg(not(fastpath_no_bpf))]
    ports: (u16, u32),
    #[cfg(not(fastpath_no_bpf))]
    nr_cpus: usize,
    // Last: the program is unloaded after its links are gone.
    #[cfg(not(fastpath_no_bpf))]
    ebpf: Ebpf,
    /// A build without the program never makes one.
    #[cfg(fastpath_no_bpf)]
    never: std::convert::Infallible,
}

/// Which fan-out blocks are free, which leg holds which, and which were given up a moment
/// ago: a packet that read a leg just before its update may still read the old block's
/// entries, so a block is zeroed and reused only after [`FanBlocks::GRACE`].
#[cfg(not(fastpath_no_bpf))]
#[derive(Debug, Default)]
struct FanBlocks {
    free: Vec<u32>,
    /// By leg entry: its block and what was written there.
    held: std::collections::HashMap<u32, (u32, Vec<RawOut>)>,
    retired: Vec<(u32, std::time::Instant)>,
}

#[cfg(not(fastpath_no_bpf))]
impl FanBlocks {
    /// Far longer than one run of the program.
    const GRACE: Duration = Duration::from_millis(50);

    /// Zeroes and frees the blocks retired long enough ago.
    fn reclaim(&mut self, map: &mut Array<MapData, RawOut>) -> Result<(), Error> {
        let now = std::time::Instant::now();
        let mut i = 0;
        while let Some(&(b, at)) = self.retired.get(i) {
            if now.saturating_duration_since(at) < Self::GRACE {
                i += 1;
                continue;
            }
            for k in 0..MAX_FANOUT as u32 {
                map.set(b * MAX_FANOUT as u32 + k, RawOut::default(), 0)
                    .map_err(|e| classify("update", &e))?;
            }
            self.retired.swap_remove(i);
            self.free.push(b);
        }
        Ok(())
    }

    /// Gives up leg entry `i`'s block, if it has one.
    fn retire(&mut self, i: u32) {
        if let Some((b, _)) = self.held.remove(&i) {
            self.retired.push((b, std::time::Instant::now()));
        }
    }
}

impl fmt::Debug for FastPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("FastPath");
        #[cfg(not(fastpath_no_bpf))]
        d.field("interfaces", &self.interfaces())
            .field("legs", &self.installed.len());
        d.finish_non_exhaustive()
    }
}

impl FastPath {
    /// Loads the program and attaches it at TCX ingress of `ifname` (in the calling thread's
    /// network namespace), with arrays for the relay ports [`DEFAULT_PORTS`].
    pub fn open(ifname: &str) -> Result<FastPath, Error> {
        Self::open_with_ports(ifname, DEFAULT_PORTS)
    }

    /// [`FastPath::open`] with arrays for the relay ports `ports` (the relay's media range):
    /// a leg can be installed at any address on one of them, one leg a port. Memory is
    /// allocated at load, `64 + 128 × CPUs` bytes a port (3.2 MB for 10,000 ports on 2 CPUs;
    /// the CPUs online at load, up to [`MAX_ARRAY_BYTES`]), and bounds what the fast path can
    /// ever hold.
    #[cfg(not(fastpath_no_bpf))]
    pub fn open_with_ports(ifname: &str, ports: RangeInclusive<u16>) -> Result<FastPath, Error> {
        if !has_privilege() {
            return Err(Error::NoPrivilege(
                "needs CAP_BPF (or CAP_SYS_ADMIN) and CAP_NET_ADMIN".to_owned(),
            ));
        }
        if ports.is_empty() {
            return Err(Error::Other(format!("an empty port range: {ports:?}")));
        }
        let len = range_len(&ports);
        // Counters for the CPUs online now (up to the highest number), not every possible
        // one: machines often declare far more possible CPUs than they run. A CPU brought
        // online later is past `ncpus` in the program, which then leaves its packets to
        // userspace: never forwarded uncounted.
        let ncpus = match aya::util::online_cpus() {
            Ok(online) => online.iter().max().map_or(1, |m| m.saturating_add(1)),
            Err(_) => {
                u32::try_from(aya::util::nr_cpus().map_err(|(_, e)| Error::Other(e.to_string()))?)
                    .map_err(|e| Error::Other(e.to_string()))?
            }
        };
        let nr_cpus = ncpus as usize;
        let stats_len = len
            .checked_mul(ncpus)
            .ok_or_else(|| Error::Other(format!("{len} ports × {ncpus} CPUs: too many")))?;
        arrays_fit(len, ncpus)?;
        let blocks = fan_blocks(len);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(LEGS_MAP, len)
            .map_max_entries(STATS_MAP, stats_len)
            .map_max_entries(FANOUT_MAP, blocks * MAX_FANOUT as u32)
            .load(OBJECT)
            .map_err(|e| classify("load", &e))?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| Error::Other("no program in the object".to_owned()))?
            .try_into()
            .map_err(|e| classify("load", &e))?;
        prog.load().map_err(|e| classify("load", &e))?;
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| Error::Other(format!("no map {name} in the object")))
        };
        let mut conf: Array<MapData, RawConf> =
            Array::try_from(take(CONF_MAP)?).map_err(|e| classify("load", &e))?;
        let legs = Array::try_from(take(LEGS_MAP)?).map_err(|e| classify("load", &e))?;
        let stats_map = take(STATS_MAP)?;
        use std::os::fd::AsFd;
        let stats_view = match &stats_map {
            aya::maps::Map::Array(data) => SharedCounters::map(data.fd().as_fd(), stats_len)
                .map_err(|e| Error::Other(format!("mmap of the counters: {e}")))?,
            _ => return Err(Error::Other("the counters map is not an array".to_owned())),
        };
        let stats = Array::try_from(stats_map).map_err(|e| classify("load", &e))?;
        let fanout = Array::try_from(take(FANOUT_MAP)?).map_err(|e| classify("load", &e))?;
        conf.set(
            0,
            RawConf {
                port_base: u32::from(*ports.start()),
                ncpus,
            },
            0,
        )
        .map_err(|e| classify("update", &e))?;
        let mut fp = FastPath {
            links: Vec::new(),
            legs,
            stats,
            stats_view,
            fanout,
            fan: FanBlocks {
                free: (0..blocks).rev().collect(),
                ..FanBlocks::default()
            },
            iface_macs: std::collections::HashMap::new(),
            installed: std::collections::HashMap::new(),
            ports: (*ports.start(), len),
            nr_cpus,
            ebpf,
        };
        fp.attach(ifname)?;
        Ok(fp)
    }

    /// Attaches the same program (same maps) at TCX ingress of one more interface, e.g. both
    /// veths of a relay between two networks. Attached last among the interface's TCX programs.
    #[cfg(not(fastpath_no_bpf))]
    pub fn attach(&mut self, ifname: &str) -> Result<(), Error> {
        ifindex(ifname)?;
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| Error::Other("no program".to_owned()))?
            .try_into()
            .map_err(|e| classify("attach", &e))?;
        let id = prog
            .attach_with_options(
                ifname,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|e| classify("attach", &e))?;
        let link = prog.take_link(id).map_err(|e| classify("attach", &e))?;
        self.links.push((ifname.to_owned(), link));
        Ok(())
    }

    /// The interfaces the program is attached to.
    #[cfg(not(fastpath_no_bpf))]
    pub fn interfaces(&self) -> Vec<&str> {
        self.links.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Installs (or replaces) the leg whose packets arrive at `relay`. Its counters start at
    /// zero when the entry was free and are kept when a leg at the same address is replaced
    /// (e.g. a new SSRC). [`Error::NoSlot`] when the port is outside the range or a leg at
    /// another address holds it.
    #[cfg(not(fastpath_no_bpf))]
    pub fn install(&mut self, relay: SocketAddrV4, leg: &Leg) -> Result<(), Error> {
        let value = raw_leg(relay, leg)?;
        let mut outs = raw_outs(leg)?;
        let i = slot(self.ports.0, self.ports.1, relay.port()).ok_or(Error::NoSlot(relay))?;
        if outs.iter().any(|o| o.ifindex != 0) {
            let tables = Neighbours::read();
            for (o, e) in outs.iter_mut().zip(&leg.fanout) {
                if o.ifindex != 0 {
                    o.macs = self.l2(&tables, o.ifindex, *e.to.ip())?;
                }
            }
        }
        match self.installed.get(&i) {
            Some(old) if old.relay_addr != value.relay_addr => return Err(Error::NoSlot(relay)),
            Some(_) => {}
            None => {
                // Counters first: the entry was free (inactive), so the program reads nothing
                // of them until the leg below is written. The keyframe mark matters in the
                // first CPU's entry only; it is written to all alike.
                let (ssrc, ts) = leg.last_keyframe.unwrap_or_default();
                let fresh = RawCounters {
                    key_valid: u32::from(leg.last_keyframe.is_some()),
                    last_key_ssrc: ssrc.to_be(),
                    last_key_ts: ts,
                    ..RawCounters::default()
                };
                for c in self.counter_entries(i) {
                    self.stats
                        .set(c, fresh, 0)
                        .map_err(|e| classify("update", &e))?;
                }
            }
        }
        self.put_leg(i, relay, value, outs)
    }

    /// Writes leg entry `i` with its fan-out receivers `outs`. The same receivers stay where
    /// they are; others go into a fresh block, written before the leg that points at it, and
    /// the old block is retired after (a packet may be reading it).
    #[cfg(not(fastpath_no_bpf))]
    fn put_leg(
        &mut self,
        i: u32,
        relay: SocketAddrV4,
        mut value: RawLeg,
        outs: Vec<RawOut>,
    ) -> Result<(), Error> {
        self.fan.reclaim(&mut self.fanout)?;
        let held = self.fan.held.get(&i);
        let keep = held.is_some_and(|(_, o)| *o == outs);
        if !outs.is_empty() {
            let block = match held {
                Some((b, _)) if keep => *b,
                _ => {
                    let b = self.fan.free.pop().ok_or(Error::NoSlot(relay))?;
                    for (k, o) in outs.iter().enumerate() {
                        let at = b * MAX_FANOUT as u32 + k as u32;
                        if let Err(e) = self.fanout.set(at, *o, 0) {
                            self.fan.retired.push((b, std::time::Instant::now()));
                            return Err(classify("update", &e));
                        }
                    }
                    b
                }
            };
            value.fan_first = block * MAX_FANOUT as u32;
            value.fan_n = outs.len() as u32; // at most MAX_FANOUT (raw_outs)
        }
        self.write_leg(i, value)?;
        if !keep {
            self.fan.retire(i);
            if !outs.is_empty() {
                self.fan
                    .held
                    .insert(i, (value.fan_first / MAX_FANOUT as u32, outs));
            }
        }
        Ok(())
    }

    /// Looks up again the Ethernet addresses of every fan-out receiver behind an interface
    /// (the neighbour table of the calling thread's namespace), and moves a leg whose next
    /// hop changed to the new addresses. One that has none now keeps the last it had. Call it
    /// every few seconds; a relay does at its route refresh.
    #[cfg(not(fastpath_no_bpf))]
    pub fn refresh_neighbours(&mut self) -> Result<(), Error> {
        let tables = Neighbours::read();
        self.iface_macs.clear(); // an interface's own address is looked up again too
        let held: Vec<(u32, Vec<RawOut>)> = self
            .fan
            .held
            .iter()
            .filter(|(_, (_, outs))| outs.iter().any(|o| o.ifindex != 0))
            .map(|(i, (_, outs))| (*i, outs.clone()))
            .collect();
        for (i, outs) in held {
            let mut fresh = outs.clone();
            for o in fresh.iter_mut().filter(|o| o.ifindex != 0) {
                let to = Ipv4Addr::from(o.dst_addr.to_ne_bytes());
                if let Ok(m) = self.l2(&tables, o.ifindex, to) {
                    o.macs = m;
                }
            }
            let Some(value) = self.installed.get(&i).copied() else {
                continue;
            };
            if fresh != outs {
                let relay = SocketAddrV4::new(
                    Ipv4Addr::from(value.relay_addr.to_ne_bytes()),
                    self.ports.0.wrapping_add(i as u16),
                );
                self.put_leg(i, relay, value, fresh)?;
            }
        }
        Ok(())
    }

    /// The Ethernet addresses (the next hop's, then the interface's) for a copy to `to` out of
    /// interface `ifindex`.
    #[cfg(not(fastpath_no_bpf))]
    fn l2(&mut self, tables: &Neighbours, ifindex: u32, to: Ipv4Addr) -> Result<[u8; 12], Error> {
        let (name, own) = match self.iface_macs.get(&ifindex) {
            Some(v) => v.clone(),
            None => {
                let v = interface_mac(ifindex)?;
                self.iface_macs.insert(ifindex, v.clone());
                v
            }
        };
        let next = tables.next_hop(&name, to);
        let theirs = tables
            .mac(&name, next)
            .ok_or(Error::NoNeighbour(SocketAddrV4::new(to, 0)))?;
        let mut m = [0u8; 12];
        m[..6].copy_from_slice(&theirs);
        m[6..].copy_from_slice(&own);
        Ok(m)
    }

    /// Sets the leg's grant, as the arbiter changes it: `false` before the relay announces a
    /// Revoked, an End Response or a pre-emption; from the moment this returns the program
    /// forwards no more of the leg's packets (they go up to userspace, counted not granted).
    #[cfg(not(fastpath_no_bpf))]
    pub fn set_granted(&mut self, relay: SocketAddrV4, granted: bool) -> Result<(), Error> {
        let (i, mut v) = self.own(relay).ok_or(Error::NotFound(relay))?;
        if granted {
            v.flags |= FP_GRANTED;
        } else {
            v.flags &= !FP_GRANTED;
        }
        self.write_leg(i, v)
    }

    /// Removes the leg (its counters go with it): call it before the relay socket's port is
    /// reused or the leg's source re-latched. Removing an absent leg is not an error.
    #[cfg(not(fastpath_no_bpf))]
    pub fn remove(&mut self, relay: SocketAddrV4) -> Result<(), Error> {
        let Some((i, _)) = self.own(relay) else {
            return Ok(());
        };
        self.legs
            .set(i, RawLeg::default(), 0)
            .map_err(|e| classify("update", &e))?;
        self.installed.remove(&i);
        self.fan.retire(i);
        Ok(())
    }

    /// The leg as installed, read back from the kernel (`None` when there is none).
    #[cfg(not(fastpath_no_bpf))]
    pub fn leg(&self, relay: SocketAddrV4) -> Result<Option<Leg>, Error> {
        let Some(i) = slot(self.ports.0, self.ports.1, relay.port()) else {
            return Ok(None);
        };
        let v = self.legs.get(&i, 0).map_err(|e| classify("lookup", &e))?;
        if v.flags & FP_ACTIVE == 0 || v.relay_addr != be32(*relay.ip()) {
            return Ok(None);
        }
        let addr = |a: u32| Ipv4Addr::from(a.to_ne_bytes());
        Ok(Some(Leg {
            source: SocketAddrV4::new(addr(v.src_addr), u16::from_be(v.src_port)),
            ssrcs: v.ssrc[..usize::from(v.n_ssrc).min(MAX_SSRCS)]
                .iter()
                .map(|s| u32::from_be(*s))
                .collect(),
            granted: v.flags & FP_GRANTED != 0,
            egress: Egress {
                from: SocketAddrV4::new(addr(v.out_addr), u16::from_be(v.out_port)),
                to: SocketAddrV4::new(addr(v.dst_addr), u16::from_be(v.dst_port)),
                ifindex: v.ifindex,
            },
            clock_rate: v.clock_rate,
            keyframes: v.flags & FP_KEYFRAMES != 0,
            last_keyframe: None, // not kept in the leg: the counters' starting mark
            fanout: (v.fan_first..v.fan_first.saturating_add(v.fan_n))
                .map(|k| {
                    let o = self.fanout.get(&k, 0).map_err(|e| classify("lookup", &e))?;
                    Ok(Egress {
                        from: SocketAddrV4::new(addr(o.out_addr), u16::from_be(o.out_port)),
                        to: SocketAddrV4::new(addr(o.dst_addr), u16::from_be(o.dst_port)),
                        ifindex: o.ifindex,
                    })
                })
                .collect::<Result<_, Error>>()?,
        }))
    }

    /// The leg's counters, summed over CPUs.
    #[cfg(not(fastpath_no_bpf))]
    pub fn counters(&self, relay: SocketAddrV4) -> Result<Counters, Error> {
        let (i, _) = self.own(relay).ok_or(Error::NotFound(relay))?;
        // Every entry of an installed leg is inside the mapping (`len × CPUs` entries, mapped
        // whole at open), so none is passed over.
        let per_cpu = self
            .counter_entries(i)
            .filter_map(|c| self.stats_view.get(c));
        Ok(sum_counters(per_cpu, monotonic_ns()))
    }

    /// The program's run count and run time so far (zero unless `kernel.bpf_stats_enabled` is
    /// 1 or [`enable_run_stats`] holds the statistics on).
    #[cfg(not(fastpath_no_bpf))]
    pub fn run_stats(&self) -> Result<RunStats, Error> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or_else(|| Error::Other("no program".to_owned()))?
            .try_into()
            .map_err(|e| classify("lookup", &e))?;
        let info = prog.info().map_err(|e| classify("lookup", &e))?;
        Ok(RunStats {
            run_count: info.run_count(),
            run_time: info.run_time(),
        })
    }

    /// Runs the program once on `frame` (an Ethernet frame, as TCX ingress sees it) without a
    /// network (`BPF_PROG_TEST_RUN`), `repeat` times in a row: what it decides, the frame as it
    /// left the program, and its mean run time (hot cache: the same frame and entries each
    /// time). The maps are the live ones, so a forwarded frame counts on its leg, `repeat`
    /// times. For testing the program's decisions and rewrites against a model, and for
    /// measuring its cost apart from the network stack.
    #[cfg(not(fastpath_no_bpf))]
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<TestRun, Error> {
        use std::os::fd::{AsFd, AsRawFd};
        let prog: &SchedClassifier = self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or_else(|| Error::Other("no program".to_owned()))?
            .try_into()
            .map_err(|e| classify("test run", &e))?;
        let fd = prog.fd().map_err(|e| classify("test run", &e))?;
        let mut out = vec![0u8; frame.len() + 256];
        let mut attr = TestRunAttr {
            prog_fd: fd.as_fd().as_raw_fd() as u32,
            data_size_in: u32::try_from(frame.len())
                .map_err(|_| Error::Other("frame too long".to_owned()))?,
            data_size_out: out.len() as u32, // frame.len() + 256 fits: frame.len() did
            data_in: frame.as_ptr() as u64,
            data_out: out.as_mut_ptr() as u64,
            repeat: repeat.max(1),
            ..TestRunAttr::default()
        };
        // SAFETY: `attr` is the BPF_PROG_TEST_RUN part of `union bpf_attr` (layout asserted
        // at its definition), valid for the call; `data_in` points at `data_size_in` readable
        // bytes and `data_out` at `data_size_out` writable ones, both alive until it returns.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                std::ptr::from_mut(&mut attr),
                size_of::<TestRunAttr>(),
            )
        };
        if r < 0 {
            return Err(Error::Other(format!(
                "BPF_PROG_TEST_RUN: {}",
                io::Error::last_os_error()
            )));
        }
        out.truncate((attr.data_size_out as usize).min(out.len()));
        Ok(TestRun {
            verdict: attr.retval as i32,
            frame: out,
            mean: Duration::from_nanos(u64::from(attr.duration)),
        })
    }

    /// The counters' entries of leg entry `i`, one for each CPU.
    #[cfg(not(fastpath_no_bpf))]
    fn counter_entries(&self, i: u32) -> std::ops::Range<u32> {
        let n = self.nr_cpus as u32; // fits: checked at open
        i * n..(i + 1) * n
    }

    /// The entry and leg this value installed at `relay`, if any.
    #[cfg(not(fastpath_no_bpf))]
    fn own(&self, relay: SocketAddrV4) -> Option<(u32, RawLeg)> {
        let i = slot(self.ports.0, self.ports.1, relay.port())?;
        self.installed
            .get(&i)
            .filter(|v| v.relay_addr == be32(*relay.ip()))
            .map(|v| (i, *v))
    }

    #[cfg(not(fastpath_no_bpf))]
    fn write_leg(&mut self, i: u32, v: RawLeg) -> Result<(), Error> {
        self.legs.set(i, v, 0).map_err(|e| classify("update", &e))?;
        self.installed.insert(i, v);
        Ok(())
    }
}

impl Drop for FastPath {
    /// Detaches every link (the program leaves the interfaces at once), then the program and
    /// the maps are unloaded with the last file descriptor.
    fn drop(&mut self) {
        #[cfg(not(fastpath_no_bpf))]
        self.links.clear();
        #[cfg(fastpath_no_bpf)]
        match self.never {}
    }
}

/// The same API in a build without the BPF program: [`FastPath::open`] always returns
/// [`Error::NotBuilt`], so no value exists and the methods are never reached.
#[cfg(fastpath_no_bpf)]
#[allow(missing_docs, clippy::missing_errors_doc)]
impl FastPath {
    pub fn open_with_ports(_ifname: &str, ports: RangeInclusive<u16>) -> Result<FastPath, Error> {
        let _ = slot(0, range_len(&ports), 0);
        Err(Error::NotBuilt)
    }
    pub fn attach(&mut self, _ifname: &str) -> Result<(), Error> {
        match self.never {}
    }
    pub fn interfaces(&self) -> Vec<&str> {
        match self.never {}
    }
    pub fn install(&mut self, relay: SocketAddrV4, leg: &Leg) -> Result<(), Error> {
        raw_leg(relay, leg)?;
        raw_outs(leg)?;
        match self.never {}
    }
    pub fn set_granted(&mut self, _relay: SocketAddrV4, _granted: bool) -> Result<(), Error> {
        match self.never {}
    }
    pub fn remove(&mut self, _relay: SocketAddrV4) -> Result<(), Error> {
        match self.never {}
    }
    pub fn leg(&self, _relay: SocketAddrV4) -> Result<Option<Leg>, Error> {
        match self.never {}
    }
    pub fn counters(&self, _relay: SocketAddrV4) -> Result<Counters, Error> {
        let _ = sum_counters([], 0);
        match self.never {}
    }
    pub fn test_run(&self, _frame: &[u8], _repeat: u32) -> Result<TestRun, Error> {
        match self.never {}
    }
    pub fn refresh_neighbours(&mut self) -> Result<(), Error> {
        match self.never {}
    }
    pub fn run_stats(&self) -> Result<RunStats, Error> {
        match self.never {}
    }
}

/// Without the BPF program in this build: [`Error::NotBuilt`].
#[cfg(fastpath_no_bpf)]
pub fn enable_run_stats() -> Result<std::os::fd::OwnedFd, Error> {
    Err(Error::NotBuilt)
}

/// Without the BPF program in this build: [`Error::NotBuilt`].
#[cfg(fastpath_no_bpf)]
pub fn tcx_ingress_programs(_ifname: &str) -> Result<Vec<(u32, String)>, Error> {
    Err(Error::NotBuilt)
}

/// Turns the kernel's BPF run-time statistics on for as long as the returned descriptor is open
/// (`BPF_ENABLE_STATS`; the same as `sysctl kernel.bpf_stats_enabled=1` while held).
#[cfg(not(fastpath_no_bpf))]
pub fn enable_run_stats() -> Result<std::os::fd::OwnedFd, Error> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| classify("stats", &e))
}

/// The ids and names of the TCX ingress programs attached to `ifname` (in the calling thread's
/// network namespace), by the kernel's own query (`BPF_PROG_QUERY`): what a leak check reads.
#[cfg(not(fastpath_no_bpf))]
pub fn tcx_ingress_programs(ifname: &str) -> Result<Vec<(u32, String)>, Error> {
    ifindex(ifname)?;
    let (_, progs) = SchedClassifier::query_tcx(ifname, TcAttachType::Ingress)
        .map_err(|e| classify("query", &e))?;
    Ok(progs
        .iter()
        .map(|p| (p.id(), p.name_as_str().unwrap_or_default().to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leg from and to `a`, SSRCs `ssrcs`, granted or not.
    fn leg_at(a: SocketAddrV4, ssrcs: Vec<u32>, granted: bool, clock_rate: u32) -> Leg {
        Leg {
            source: a,
            ssrcs,
            granted,
            egress: Egress {
                from: a,
                to: a,
                ifindex: 0,
            },
            clock_rate,
            keyframes: false,
            last_keyframe: None,
            fanout: Vec::new(),
        }
    }

    #[test]
    fn layouts_in_network_order() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 0x1234);
        let leg = leg_at(a, vec![7], false, 0);
        let raw = raw_leg(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 9), &leg).unwrap();
        assert_eq!(raw.relay_addr.to_ne_bytes(), [10, 0, 0, 2]);
        assert_eq!(raw.src_addr.to_ne_bytes(), [10, 0, 0, 1]);
        assert_eq!(raw.src_port.to_ne_bytes(), [0x12, 0x34]);
        assert_eq!(raw.flags, FP_ACTIVE);
    }

    #[test]
    fn the_fixed_point_factor_turns_nanoseconds_into_timestamp_units() {
        // What the program computes, (gap × factor) >> 32, against the division it replaces.
        for rate in [8_000u32, 48_000, 90_000, 1_000_000] {
            let q = u64::from(ns_to_ts_q32(rate));
            for gap in [1_000u64, 33_333_333, 1_000_000_000, (1 << 40) - 1] {
                let exact = gap * u64::from(rate) / 1_000_000_000;
                let fixed = (gap * q) >> 32;
                // Rounding the factor costs at most 1 / (2 × factor) of the gap: 8 ppm at 8 kHz.
                assert!(
                    exact.abs_diff(fixed) <= 1 + exact / 50_000,
                    "{rate} Hz, {gap} ns"
                );
            }
        }
        assert_eq!(ns_to_ts_q32(0), 0);
        assert_eq!(ns_to_ts_q32(16_000_001), 0);
    }

    #[test]
    fn counters_read_as_words_are_the_struct() {
        let c = RawCounters {
            packets: 1,
            bytes: 2,
            frames: 3,
            last_ns: 4,
            jitter_q4: 5,
            last_ts: 6,
            ts_valid: 7,
            highest_seq: 8,
            seq_valid: 9,
            wrong_source: 10,
            not_rtp: 11,
            unknown_ssrc: 12,
            not_granted: 13,
            errors: 14,
            keyframes: 15,
            last_key_ts: 16,
            last_key_ssrc: 17,
            key_valid: 18,
            pad: 19,
            reserved: 20,
        };
        // The words as they lie in memory: what the mapping holds.
        let mut w = [0u64; 16];
        let bytes: Vec<u8> = [
            c.packets.to_ne_bytes().as_slice(),
            &c.bytes.to_ne_bytes(),
            &c.frames.to_ne_bytes(),
            &c.last_ns.to_ne_bytes(),
            &c.jitter_q4.to_ne_bytes(),
            &c.last_ts.to_ne_bytes(),
            &c.ts_valid.to_ne_bytes(),
            &c.highest_seq.to_ne_bytes(),
            &c.seq_valid.to_ne_bytes(),
            &c.wrong_source.to_ne_bytes(),
            &c.not_rtp.to_ne_bytes(),
            &c.unknown_ssrc.to_ne_bytes(),
            &c.not_granted.to_ne_bytes(),
            &c.errors.to_ne_bytes(),
            &c.keyframes.to_ne_bytes(),
            &c.last_key_ts.to_ne_bytes(),
            &c.last_key_ssrc.to_ne_bytes(),
            &c.key_valid.to_ne_bytes(),
            &c.pad.to_ne_bytes(),
            &c.reserved.to_ne_bytes(),
        ]
        .concat();
        for (k, chunk) in bytes.chunks(8).enumerate() {
            w[k] = u64::from_ne_bytes(chunk.try_into().unwrap());
        }
        let r = counters_from_words(&w);
        assert_eq!(
            (
                r.packets,
                r.last_ts,
                r.ts_valid,
                r.highest_seq,
                r.seq_valid,
                r.errors
            ),
            (1, 6, 7, 8, 9, 14)
        );
        assert_eq!((r.jitter_q4, r.not_granted, r.keyframes), (5, 13, 15));
        assert_eq!(
            (
                r.last_key_ts,
                r.last_key_ssrc,
                r.key_valid,
                r.pad,
                r.reserved
            ),
            (16, 17, 18, 19, 20)
        );
    }

    #[test]
    #[cfg(target_endian = "little")] // the sample's words are as a little-endian host prints them
    fn the_next_hop_and_its_ethernet_address_come_from_the_route_and_neighbour_tables() {
        let route =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            eth1\t00000A0A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let arp =
            "IP address       HW type     Flags       HW address            Mask     Device\n\
            192.168.2.1      0x1         0x2         52:54:00:12:34:56     *        eth0\n\
            192.168.2.7      0x1         0x2         52:54:00:aa:bb:cc     *        eth0\n\
            10.10.0.9        0x1         0x0         00:00:00:00:00:00     *        eth1\n";
        let t = Neighbours::parse(route, arp);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        // Off the link: the default route's gateway; on it: the address itself.
        assert_eq!(t.next_hop("eth0", ip("8.8.8.8")), ip("192.168.2.1"));
        assert_eq!(t.next_hop("eth0", ip("192.168.2.7")), ip("192.168.2.7"));
        assert_eq!(
            t.mac("eth0", t.next_hop("eth0", ip("8.8.8.8"))),
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        assert_eq!(
            t.mac("eth0", ip("192.168.2.7")),
            Some([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc])
        );
        assert_eq!(t.mac("eth1", ip("10.10.0.9")), None, "incomplete: not used");
        assert_eq!(
            t.mac("eth1", ip("192.168.2.7")),
            None,
            "another interface's"
        );
    }

    #[test]
    fn arrays_beyond_the_memory_bound_are_refused_with_the_reason() {
        assert!(arrays_fit(10_000, 2).is_ok()); // 3.2 MB
        assert!(arrays_fit(10_000, 64).is_ok()); // 82 MB
        let e = arrays_fit(64_512, 64).unwrap_err().to_string(); // 508 MiB
        assert!(e.contains("smaller port range"), "{e}");
    }

    #[test]
    fn a_port_s_entry_is_its_offset_in_the_range() {
        let len = range_len(&(30_000..=39_999));
        assert_eq!(len, 10_000);
        assert_eq!(slot(30_000, len, 30_000), Some(0));
        assert_eq!(slot(30_000, len, 39_999), Some(9_999));
        assert_eq!(slot(30_000, len, 40_000), None);
        assert_eq!(slot(30_000, len, 29_999), None);
        assert_eq!(range_len(&(1..=65535)), 65_535);
        assert_eq!(range_len(&(0..=65535)), 65_536);
    }

    #[test]
    fn invalid_legs_refused() {
        let a = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1);
        let mut leg = leg_at(a, vec![], true, 90_000);
        assert!(matches!(raw_leg(a, &leg), Err(Error::InvalidLeg(_))));
        leg.ssrcs = vec![1, 2, 3, 4, 5];
        assert!(matches!(raw_leg(a, &leg), Err(Error::InvalidLeg(_))));
        leg.ssrcs = vec![7];
        let raw = raw_leg(a, &leg).unwrap();
        assert_eq!(raw.ssrc[0].to_ne_bytes(), [0, 0, 0, 7]);
        assert_eq!(raw.flags, FP_ACTIVE | FP_GRANTED);
        assert_eq!(raw.clock_rate, 90_000);
    }

    #[test]
    fn highest_seq_wraps() {
        let c = |s: u32| RawCounters {
            highest_seq: s,
            seq_valid: 1,
            packets: 1,
            ..Default::default()
        };
        let sum = sum_counters([c(65530), c(3), RawCounters::default()], 0);
        assert_eq!(sum.highest_seq, Some(3));
        assert_eq!(sum.packets, 2);
        assert_eq!(sum_counters([c(10), c(9)], 0).highest_seq, Some(10));
        assert_eq!(sum_counters([RawCounters::default()], 0).highest_seq, None);
    }

    #[test]
    fn frames_add_up_and_the_last_packet_is_the_latest_cpu_s() {
        let c = |frames: u64, last_ns: u64| RawCounters {
            frames,
            last_ns,
            packets: frames,
            ..Default::default()
        };
        let sum = sum_counters([c(3, 1_000), c(4, 5_000), c(0, 0)], 7_000);
        assert_eq!(sum.frames, 7);
        assert_eq!(sum.last_forwarded_ago, Some(Duration::from_nanos(2_000)));
        let none = sum_counters([RawCounters::default()], 7_000);
        assert_eq!(none.last_forwarded_ago, None);
        assert_eq!(none.jitter_q4, None);
    }

    #[test]
    fn the_jitter_is_the_latest_cpu_s() {
        let c = |jitter_q4: u64, last_ns: u64, ts_valid: u32| RawCounters {
            jitter_q4,
            last_ns,
            ts_valid,
            ..Default::default()
        };
        let j = |v: &[RawCounters]| sum_counters(v.iter().copied(), 9_000).jitter_q4;
        assert_eq!(
            j(&[c(160, 1_000, 1), c(480, 5_000, 1), c(0, 0, 0)]),
            Some(480)
        );
        assert_eq!(j(&[c(480, 5_000, 1), c(160, 1_000, 1)]), Some(480));
        assert_eq!(j(&[c(0, 0, 0), c(160, 1_000, 1)]), Some(160));
        assert_eq!(j(&[c(0, 0, 0)]), None);
    }
}
