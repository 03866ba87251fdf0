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

/// The three namespaces of the module's picture, joined by veths, deleted (with their veths)
/// when dropped. Tests use it too, to run a relay across real interfaces.
#[derive(Debug)]
pub struct Topology {
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
    /// Makes namespaces `{prefix}-r-{pid}` (the relay's), `{prefix}-c-{pid}` (the caller's)
    /// and `{prefix}-v-{pid}` (the callee's) with the addresses above. With `ip_forward` the
    /// relay's namespace routes between the two itself (the no-relay floor); without, only a
    /// relay running in it moves packets across. Needs root; what was made is deleted on error.
    pub fn build(prefix: &str, ip_forward: bool) -> Result<Topology, String> {
        let pid = std::process::id();
        let t = Topology {
            names: Names {
                relay: format!("{prefix}-r-{pid}"),
                caller: format!("{prefix}-c-{pid}"),
                callee: format!("{prefix}-v-{pid}"),
            },
        };
        let (r, c, v) = (t.relay(), t.caller(), t.callee());
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
        let forward = format!("net.ipv4.ip_forward={}", u8::from(ip_forward));
        run(&["ip", "netns", "exec", r, "sysctl", "-qw", &forward])?;
        Ok(t)
    }

    /// The relay's namespace (10.78.1.1 on `va`, 10.78.2.1 on `vb`).
    pub fn relay(&self) -> &str {
        &self.names.relay
    }

    /// The caller's namespace (10.78.1.2 on `eth0`).
    pub fn caller(&self) -> &str {
        &self.names.caller
    }

    /// The callee's namespace (10.78.2.2 on `eth0`).
    pub fn callee(&self) -> &str {
        &self.names.callee
    }

    /// `--netns`: the floor's topology, with the calling thread moved into the relay's
    /// namespace.
    pub(crate) fn make() -> Result<Topology, String> {
        let t = Topology::build("mcvlg", true)?;
        enter(t.relay())?;
        ACTIVE
            .set(t.names.clone())
            .map_err(|_| "--netns: a topology exists already".to_owned())?;
        Ok(t)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in [self.relay(), self.caller(), self.callee()] {
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
