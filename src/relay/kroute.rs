//! Where a leg in the kernel fast path enters and leaves this host (docs/kernel-fast-path.md,
//! "Real interfaces"): the interface a source's packets arrive on, where the program must be
//! attached, and the interface toward a destination, which `bpf_redirect_neigh` sends on (the
//! kernel then finds the next hop and its neighbour entry itself).
//!
//! Read from procfs, in safe Rust, and refreshed at most every [`REFRESH`]:
//! * `/proc/net/route`: the main routing table (interface, destination, mask, metric); the
//!   longest prefix wins, then the lowest metric.
//! * `/proc/net/fib_trie`: the addresses of this host (`/32 host LOCAL`). A packet between two
//!   addresses of this host travels over `lo`: such a source arrives on `lo`, and such a
//!   destination is delivered by passing the rewritten packet up the local stack (egress 0).
//! * `if_nametoindex`: the interface's index.
//!
//! Policy routing (rules and tables other than `main`) is not read: a host that steers media
//! by source address should keep `media.kernel_offload = "off"` or check that the main table
//! gives the same interfaces.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// The tables are read again when older than this (a route or an address that changes is seen
/// by the next install after it).
pub(crate) const REFRESH: Duration = Duration::from_secs(2);

/// One IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    iface: String,
    dest: u32,
    mask: u32,
    metric: u32,
}

/// Where a packet for an address goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Via {
    /// An address of this host: over `lo`.
    Local,
    /// Out of this interface (name, index).
    Iface(String, u32),
}

/// A snapshot of the routing table and the host's addresses.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    routes: Vec<Route>,
    local: HashSet<Ipv4Addr>,
    indexes: Vec<(String, u32)>,
    read: Option<Instant>,
}

impl Routes {
    /// Where a packet for `ip` goes, or why the fast path cannot tell.
    pub(crate) fn via(&mut self, ip: Ipv4Addr, now: Instant) -> Result<Via, String> {
        if self
            .read
            .is_none_or(|t| now.saturating_duration_since(t) >= REFRESH)
        {
            self.reload(now);
        }
        if ip.is_loopback() || self.local.contains(&ip) {
            return Ok(Via::Local);
        }
        let iface = best(&self.routes, ip)
            .ok_or_else(|| format!("no route to {ip} in the main table"))?
            .to_owned();
        if iface == "lo" {
            return Ok(Via::Local);
        }
        if let Some((_, i)) = self.indexes.iter().find(|(n, _)| *n == iface) {
            return Ok(Via::Iface(iface, *i));
        }
        // By name in this process's namespace (`if_nametoindex`): /sys/class/net shows the
        // namespace sysfs was mounted in, which need not be this one.
        let i = mcvideo_relay_fastpath::ifindex(&iface)
            .map_err(|e| format!("no index for interface {iface}: {e}"))?;
        self.indexes.push((iface.clone(), i));
        Ok(Via::Iface(iface, i))
    }

    /// Whether the tables were read again since `seen` (and notes that they were seen).
    pub(crate) fn refreshed(&self, seen: &mut Option<Instant>) -> bool {
        let changed = self.read.is_some() && *seen != self.read;
        *seen = self.read;
        changed
    }

    fn reload(&mut self, now: Instant) {
        // The calling thread's namespace (`/proc/net` is the process's first thread's): an
        // engine may run in threads that entered another one.
        self.routes = std::fs::read_to_string("/proc/thread-self/net/route")
            .map(|t| parse_routes(&t))
            .unwrap_or_default();
        self.local = std::fs::read_to_string("/proc/thread-self/net/fib_trie")
            .map(|t| parse_local(&t))
            .unwrap_or_default();
        self.indexes.clear();
        self.read = Some(now);
    }
}

/// The route `ip` takes: the longest prefix, then the lowest metric.
fn best(routes: &[Route], ip: Ipv4Addr) -> Option<&str> {
    let ip = u32::from(ip);
    routes
        .iter()
        .filter(|r| ip & r.mask == r.dest)
        .max_by(|a, b| {
            a.mask
                .count_ones()
                .cmp(&b.mask.count_ones())
                .then(b.metric.cmp(&a.metric))
        })
        .map(|r| r.iface.as_str())
}

/// `/proc/net/route`: a header, then `Iface Destination Gateway Flags RefCnt Use Metric Mask
/// ...`, addresses in hex as the kernel holds them (network order read as a little-endian
/// word on the machines this runs on). Routes that are not up (flag 0x1) are left out.
fn parse_routes(text: &str) -> Vec<Route> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let hex = |i: usize| f.get(i).and_then(|s| u32::from_str_radix(s, 16).ok());
            let flags = hex(3)?;
            if flags & 1 == 0 {
                return None;
            }
            let word = |i: usize| hex(i).map(|v| u32::from_be_bytes(v.to_le_bytes()));
            Some(Route {
                iface: (*f.first()?).to_owned(),
                dest: word(1)?,
                mask: word(7)?,
                metric: f.get(6)?.parse().ok()?,
            })
        })
        .collect()
}

/// `/proc/net/fib_trie`: every address followed by a `/32 host LOCAL` line is this host's.
fn parse_local(text: &str) -> HashSet<Ipv4Addr> {
    let mut out = HashSet::new();
    let mut last: Option<Ipv4Addr> = None;
    for l in text.lines() {
        let t = l.trim_start_matches([' ', '|', '+', '-']).trim();
        if let Ok(ip) = t.parse::<Ipv4Addr>() {
            last = Some(ip);
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(ip) = last {
                out.insert(ip);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0102000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
vb\t00024E0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
va\t00014E0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
down\t00034E0A\t00000000\t0000\t0\t0\t0\t00FFFFFF\t0\t0\t0
wide\t00004E0A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
";

    #[test]
    fn the_longest_prefix_wins_and_the_default_route_takes_the_rest() {
        let r = parse_routes(ROUTE);
        assert_eq!(r.len(), 5, "the route that is not up is left out");
        let via = |ip: &str| best(&r, ip.parse().unwrap());
        assert_eq!(via("10.78.1.2"), Some("va"));
        assert_eq!(via("10.78.2.200"), Some("vb"));
        assert_eq!(via("10.78.3.1"), Some("wide"), "the down /24 is not used");
        assert_eq!(via("10.0.2.15"), Some("eth0"));
        assert_eq!(via("192.0.2.1"), Some("eth0"), "the default route");
        assert_eq!(best(&[], "192.0.2.1".parse().unwrap()), None);
    }

    #[test]
    fn between_equal_prefixes_the_lower_metric_wins() {
        let text = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    slow\t00014E0A\t0\t0001\t0\t0\t200\t00FFFFFF\n\
                    fast\t00014E0A\t0\t0001\t0\t0\t10\t00FFFFFF\n";
        let r = parse_routes(text);
        assert_eq!(best(&r, "10.78.1.9".parse().unwrap()), Some("fast"));
    }

    #[test]
    fn malformed_lines_are_skipped_not_fatal() {
        let r = parse_routes("header\nonly-a-name\nx zz 0 0001 0 0 0 00FFFFFF\n\n");
        assert!(r.is_empty());
    }

    #[test]
    fn the_hosts_own_addresses_come_from_fib_trie() {
        let text = "\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.78.1.0/24 2 0 2
        |-- 10.78.1.0
           /24 link UNICAST
        |-- 10.78.1.1
           /32 host LOCAL
        |-- 10.78.1.255
           /32 link BROADCAST
Local:
  +-- 127.0.0.0/8 2 0 2
     |-- 127.0.0.1
        /32 host LOCAL
";
        let l = parse_local(text);
        let want: HashSet<Ipv4Addr> = ["10.78.1.1", "127.0.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(l, want);
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a real read of this host's tables
    fn this_hosts_loopback_is_local() {
        let mut r = Routes::default();
        assert_eq!(r.via(Ipv4Addr::LOCALHOST, Instant::now()), Ok(Via::Local));
    }
}
