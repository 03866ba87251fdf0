//! `--netns`: the run on a veth topology instead of `lo` (needs root: CAP_SYS_ADMIN and
//! CAP_NET_ADMIN). Three network namespaces, made for the run and deleted at its end:
//!
//! ```text
//!  caller ns            relay ns                          callee ns
//!  eth0 10.78.1.2 ── va 10.78.1.1 (media)  vb 10.78.2.1 ── eth0 10.78.2.2
//! ```
//!
//! The caller sockets live in the caller's namespace, the callee sockets in the callee's; this
//! process's main thread (and so the relay or forwarder it spawns, its API client and its
//! measuring threads) in the relay's, where IP forwarding is on: the floor (no relay) is the
//! kernel routing each packet from `va` to `vb`, the relay and the forwarder receive on
//! 10.78.1.1 and send out of `vb`. `/proc/stat` is the machine's, so the machine-wide CPU figures
//! cover all three. Sockets keep the namespace they were made in: each is made by a short-lived
//! thread that entered the side's namespace first.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Which end of a call a socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The sending party.
    Caller,
    /// The receiving party.
    Callee,
}

/// The relay's media address in the topology.
pub(crate) const RELAY_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 1, 1);
const CALLER_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 1, 2);
const CALLEE_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 2, 2);

/// The namespaces of this run, once made.
static ACTIVE: OnceLock<Names> = OnceLock::new();

#[derive(Debug, Clone)]
struct Names {
    relay: String,
    caller: String,
    callee: String,
}

/// The topology, deleted when dropped.
#[derive(Debug)]
pub(crate) struct Topology {
    names: Names,
}

/// Whether this run is on the veth topology.
pub(crate) fn active() -> bool {
    ACTIVE.get().is_some()
}

/// The address a side's sockets bind: 127.0.0.1 on `lo`.
pub(crate) fn ip(side: Side) -> IpAddr {
    IpAddr::V4(match (active(), side) {
        (false, _) => Ipv4Addr::LOCALHOST,
        (true, Side::Caller) => CALLER_IP,
        (true, Side::Callee) => CALLEE_IP,
    })
}

/// The address the relay or the forwarder receives on: 127.0.0.1 on `lo`.
pub(crate) fn relay_ip() -> IpAddr {
    if active() {
        IpAddr::V4(RELAY_IP)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e} (--netns needs iproute2)", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Moves the calling thread (and the threads and processes it starts from now on) into `ns`.
fn enter(ns: &str) -> Result<(), String> {
    let f = std::fs::File::open(format!("/run/netns/{ns}"))
        .map_err(|e| format!("namespace {ns}: {e}"))?;
    rustix::thread::move_into_link_name_space(
        f.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(|e| format!("entering namespace {ns}: {e} (--netns needs root)"))
}

impl Topology {
    /// Makes the namespaces and veths and moves the calling thread into the relay's namespace.
    pub(crate) fn make() -> Result<Topology, String> {
        let pid = std::process::id();
        let names = Names {
            relay: format!("mcvlg-r-{pid}"),
            caller: format!("mcvlg-c-{pid}"),
            callee: format!("mcvlg-v-{pid}"),
        };
        let t = Topology {
            names: names.clone(),
        };
        let (r, c, v) = (
            names.relay.as_str(),
            names.caller.as_str(),
            names.callee.as_str(),
        );
        for n in [r, c, v] {
            run(&["ip", "netns", "add", n])?;
            run(&["ip", "-n", n, "link", "set", "lo", "up"])?;
        }
        for (veth, peer, relay_ip, peer_ip) in [
            ("va", c, "10.78.1.1/24", "10.78.1.2/24"),
            ("vb", v, "10.78.2.1/24", "10.78.2.2/24"),
        ] {
            run(&[
                "ip", "-n", r, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                "netns", peer,
            ])?;
            run(&["ip", "-n", r, "addr", "add", relay_ip, "dev", veth])?;
            run(&["ip", "-n", r, "link", "set", veth, "up"])?;
            run(&["ip", "-n", peer, "addr", "add", peer_ip, "dev", "eth0"])?;
            run(&["ip", "-n", peer, "link", "set", "eth0", "up"])?;
            let gw = relay_ip.trim_end_matches("/24");
            run(&["ip", "-n", peer, "route", "add", "default", "via", gw])?;
        }
        // The floor: the kernel forwards caller → callee through the relay's namespace.
        run(&[
            "ip",
            "netns",
            "exec",
            r,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        enter(r)?;
        ACTIVE
            .set(names)
            .map_err(|_| "--netns: a topology exists already".to_owned())?;
        Ok(t)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in [&self.names.relay, &self.names.caller, &self.names.callee] {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `make()` run in `side`'s namespace (this thread's own without `--netns`).
pub(crate) fn in_side<T: Send + 'static>(
    side: Side,
    make: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let Some(names) = ACTIVE.get() else {
        return make();
    };
    let ns = match side {
        Side::Caller => names.caller.clone(),
        Side::Callee => names.callee.clone(),
    };
    std::thread::spawn(move || {
        enter(&ns).map_err(std::io::Error::other)?;
        make()
    })
    .join()
    .map_err(|_| std::io::Error::other("socket thread panicked"))?
}
