//! The media address moves for real: network namespaces made by the test (root or
//! CAP_NET_ADMIN; skipped with a message otherwise). A "LAN" namespace holds a bridge, Redis
//! and the clients (10.77.0.1); the primary relay runs in its own namespace (10.77.0.11) and
//! the standby in another (10.77.0.12), each on a veth into the bridge. The media address
//! 10.77.0.100 is on the primary's veth. A call with paced media (200 packets/s) runs through
//! the primary; then `kill -9` of the primary, and the address moves to the standby's veth the
//! way keepalived moves it (`ip addr del` / `ip addr add`, an unsolicited ARP with `arping -U`).
//! The clients change nothing: the caller keeps sending to 10.77.0.100 on the same port, and
//! the callee gets the packets again from that same address once the standby has adopted the
//! call. All traffic stays inside the namespaces; they (and their veths) are removed at the
//! end, also when an assertion fails. Built with `kernel-offload` (as CI builds it), both relays
//! run the kernel fast path on their eth0 (root, `kernel_offload = "auto"`), and the adopted
//! call's leg is checked to be in the standby's kernel.
//!
//! Needs `ip` (iproute2), `arping` (Debian package iputils-arping) and `redis-server` (test.sh
//! installs them).
#![cfg(all(feature = "sidecar", feature = "ha"))]
#![allow(clippy::disallowed_methods)] // real processes on real time

mod sidecar_support;

use serde_json::json;
use sidecar_support::{create_body, eventually, relay_video_addr, Api, Client, ServeProcess};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mcvideo-relay");
const SEAL_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const SSRC: u32 = 0x5e47_0002;
/// The control API listens on each namespace's own address, so it wants a token.
const TOKEN: &str = "netns-test-token-4b1d";
const LAN_IP: &str = "10.77.0.1";
const VIP: &str = "10.77.0.100";

/// Whether this process may make network namespaces (CAP_NET_ADMIN, bit 12 of CapEff).
fn can_admin_network() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

/// Runs a command, panics with its output if it fails.
fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (test.sh installs iproute2, iputils-arping)"));
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The three namespaces, deleted on drop (their veths and bridge go with them).
struct Namespaces {
    lan: String,
    a: String,
    b: String,
}

impl Namespaces {
    fn make() -> Namespaces {
        let pid = std::process::id();
        let ns = Namespaces {
            lan: format!("mcvr-lan-{pid}"),
            a: format!("mcvr-a-{pid}"),
            b: format!("mcvr-b-{pid}"),
        };
        for n in [&ns.lan, &ns.a, &ns.b] {
            run(&["ip", "netns", "add", n]);
        }
        let (lan, a, b) = (ns.lan.as_str(), ns.a.as_str(), ns.b.as_str());
        run(&["ip", "-n", lan, "link", "add", "br0", "type", "bridge"]);
        for (port, peer) in [("pa", a), ("pb", b)] {
            run(&[
                "ip", "-n", lan, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", peer,
            ]);
            run(&["ip", "-n", lan, "link", "set", port, "master", "br0"]);
            run(&["ip", "-n", lan, "link", "set", port, "up"]);
        }
        run(&["ip", "-n", lan, "addr", "add", "10.77.0.1/24", "dev", "br0"]);
        run(&["ip", "-n", lan, "link", "set", "br0", "up"]);
        for (n, ip) in [(a, "10.77.0.11/24"), (b, "10.77.0.12/24")] {
            run(&["ip", "-n", n, "addr", "add", ip, "dev", "eth0"]);
            run(&["ip", "-n", n, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", n, "link", "set", "lo", "up"]);
            // Both may bind the media address before they own it (deploy/README.md).
            run(&[
                "ip",
                "netns",
                "exec",
                n,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_nonlocal_bind",
            ]);
        }
        run(&["ip", "-n", lan, "link", "set", "lo", "up"]);
        // The media address starts on the primary's veth.
        run(&[
            "ip",
            "-n",
            a,
            "addr",
            "add",
            "10.77.0.100/24",
            "dev",
            "eth0",
        ]);
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        sidecar_support::delete_netns([&self.lan, &self.a, &self.b]);
    }
}

use sidecar_support::enter_netns as enter;

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A relay in namespace `ns`, killed on drop.
struct Relay {
    p: ServeProcess,
    api: Api,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.p.child.kill();
        let _ = self.p.child.wait();
    }
}

fn relay(dir: &std::path::Path, ns: &str, name: &str, ip: &str, standby_for: &[&str]) -> Relay {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[api]\nlisten = \"{ip}:0\"\n[log]\nlevel = \"info\"\n\
             [media]\nip = \"{VIP}\"\nworkers = 1\nport_min = 40000\nport_max = 40019\n\
             [ha]\nenabled = true\nredis_url = \"redis://{LAN_IP}:6379\"\n\
             instance_id = \"{name}\"\nstandby_for = {standby_for:?}\n\
             heartbeat_ms = 200\nfailure_ms = 1000\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, BIN, "serve", "--config"])
        .arg(&cfg)
        .env("MCVIDEO_RELAY_HA_SEAL_KEY", SEAL_KEY)
        .env_remove("MCVIDEO_RELAY_HA_REDIS_URL")
        .env("MCVIDEO_RELAY_API_TOKEN", TOKEN)
        .env_remove("RUST_LOG");
    let p = ServeProcess::start(cmd, name);
    let api = Api::new(p.addr, Some(TOKEN));
    Relay { p, api }
}

#[test]
fn media_address_moves_to_the_adopter_across_namespaces() {
    if !can_admin_network() {
        eprintln!(
            "SKIPPED ha_netns: needs root or CAP_NET_ADMIN to make network namespaces \
             (run the suite as root, as CI does)"
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("mcvr-ha-netns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ns = Namespaces::make();
    // From here on this thread (and the threads it starts) lives in the LAN namespace: Redis'
    // commands, the control API and the clients' media all stay inside.
    enter(&ns.lan);
    let _redis = Killed(
        Command::new("ip")
            .args(["netns", "exec", &ns.lan, "redis-server", "--bind", LAN_IP])
            .args(["--port", "6379", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no"]) // clients on the LAN, not loopback
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs"),
    );
    assert!(
        eventually(Duration::from_secs(10), || std::net::TcpStream::connect((
            LAN_IP, 6379
        ))
        .is_ok()),
        "redis-server in the LAN namespace"
    );
    let a = relay(&dir, &ns.a, "relay-a", "10.77.0.11", &[]);
    let b = relay(&dir, &ns.b, "relay-b", "10.77.0.12", &["relay-a"]);
    assert!(
        eventually(Duration::from_secs(10), || {
            let r = b.api.get("/v1/cluster");
            r.status == 200
                && r.json()["instances"]
                    .as_array()
                    .is_some_and(|i| i.iter().filter(|i| i["alive"] == true).count() == 2)
        }),
        "both relays alive in Redis: {}\n{}\n{}",
        b.api.get("/v1/cluster").body,
        a.p.log(),
        b.p.log()
    );

    // The clients, on the LAN: a plain RTP push through the primary.
    let bind = || {
        let c = Client {
            rtp: UdpSocket::bind((LAN_IP, 0)).unwrap(),
            rtcp: UdpSocket::bind((LAN_IP, 0)).unwrap(),
        };
        c.rtp
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        c
    };
    let (caller, callee) = (bind(), bind());
    let sdp =
        |c: &Client, name: &str, ssrc: Option<u32>| c.sdp(name, ssrc).replace("127.0.0.1", LAN_IP);
    let r = a.api.post(
        "/v1/calls",
        &create_body(
            "moving-1",
            "sip:alice@mcx.example",
            "sip:bob@mcx.example",
            &sdp(&caller, "alice", Some(SSRC)),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = a.api.post(
        "/v1/calls/moving-1/answer",
        &json!({"sdp_answer": sdp(&callee, "bob", None)}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let to_relay = relay_video_addr(r.json()["sdp_answer"].as_str().unwrap());
    assert_eq!(to_relay.ip().to_string(), VIP);

    type Arrivals = Arc<Mutex<Vec<(Instant, u16, SocketAddr)>>>;
    let arrivals: Arrivals = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let rx = {
        let sock = callee.rtp.try_clone().unwrap();
        let (arrivals, stop) = (arrivals.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut quiet: Option<Instant> = None;
            loop {
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) if n >= 12 => {
                        let seq = u16::from_be_bytes([buf[2], buf[3]]);
                        arrivals.lock().unwrap().push((Instant::now(), seq, from));
                        quiet = None;
                    }
                    // After the sender stopped: 500 ms with nothing more ends the count.
                    _ if stop.load(Ordering::Relaxed)
                        && quiet.get_or_insert_with(Instant::now).elapsed()
                            > Duration::from_millis(500) =>
                    {
                        return;
                    }
                    _ => {}
                }
            }
        })
    };
    let tx = {
        let sock = caller.rtp.try_clone().unwrap();
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut seq: u16 = 1;
            while !stop.load(Ordering::Relaxed) {
                let p = sidecar_support::rtp_packet(seq, SSRC, 400);
                let _ = sock.send_to(&p, to_relay);
                sent.fetch_add(1, Ordering::Relaxed);
                seq = seq.wrapping_add(1);
                let next = start + Duration::from_millis(5) * u32::from(seq);
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || arrivals.lock().unwrap().len()
            >= 100),
        "media through the primary before the kill"
    );

    // The primary dies; the address moves to the standby's veth, as keepalived moves it.
    let sse = b.api.events();
    let killed = Instant::now();
    let mut a = a;
    let _ = a.p.child.kill();
    let _ = a.p.child.wait();
    run(&[
        "ip",
        "-n",
        &ns.a,
        "addr",
        "del",
        "10.77.0.100/24",
        "dev",
        "eth0",
    ]);
    run(&[
        "ip",
        "-n",
        &ns.b,
        "addr",
        "add",
        "10.77.0.100/24",
        "dev",
        "eth0",
    ]);
    let moved = killed.elapsed();
    run(&[
        "ip", "netns", "exec", &ns.b, "arping", "-U", "-c", "1", "-I", "eth0", VIP,
    ]);
    let adopted = loop {
        match sse.next(Duration::from_secs(10)) {
            Some(e) if e.name == "call.adopted" => break e,
            Some(_) => {}
            None => panic!("no call.adopted on the standby:\n{}", b.p.log()),
        }
    };
    assert_eq!(adopted.data["call_id"], "moving-1");
    let n_before = arrivals.lock().unwrap().len();
    assert!(
        eventually(Duration::from_secs(5), || arrivals.lock().unwrap().len()
            >= n_before + 100),
        "media flows again, through the adopter:\n{}",
        b.p.log()
    );
    // Run as root, both relays forward in the kernel (`kernel_offload = "auto"`, the default):
    // the adopted call's leg goes into the standby's own fast path, on its eth0.
    if cfg!(feature = "kernel-offload") {
        assert!(
            eventually(Duration::from_secs(5), || b
                .api
                .metrics()
                .get("mcvideo_relay_kernel_offload_legs")
                == 1.0),
            "the adopted leg in the standby's kernel:\n{}",
            b.p.log()
        );
    }
    stop.store(true, Ordering::Relaxed);
    tx.join().unwrap();
    rx.join().unwrap();

    let got = arrivals.lock().unwrap().clone();
    let sent = sent.load(Ordering::Relaxed);
    // Every packet came from the one relay address the callee was given, before and after.
    assert!(
        got.iter().all(|(_, _, from)| from.ip().to_string() == VIP),
        "a packet from another address than the media address"
    );
    let sources: std::collections::BTreeSet<SocketAddr> = got.iter().map(|a| a.2).collect();
    assert_eq!(sources.len(), 1, "one relay source address: {sources:?}");
    // The takeover gap: the longest silence between two arrivals around the kill. (Not "the
    // last arrival before the kill to the first after": with the kernel fast path a packet the
    // primary forwarded just before its death can be read just after it.)
    let mut times: Vec<Instant> = got.iter().map(|a| a.0).collect();
    times.sort();
    let gap = times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap();
    let lost = sent.saturating_sub(got.len() as u64);
    eprintln!(
        "moving address: address on the standby's veth {} ms after the kill; media gap {} ms (the \
         longest silence at the callee), {lost} of {sent} packets lost",
        moved.as_millis(),
        gap.as_millis()
    );
    // The loss is the takeover gap alone: at 200 packets/s, one packet per 5 ms of gap (and a
    // few more for a sender that catches up after a stall).
    assert!(
        lost <= (gap.as_millis() as u64) / 5 + 10,
        "{lost} packets lost for a {} ms gap",
        gap.as_millis()
    );

    // The adopter owns the call now and releases it.
    let g = b.api.get("/v1/calls/moving-1");
    assert_eq!(g.status, 200, "{}", g.body);
    assert_eq!(b.api.delete("/v1/calls/moving-1").status, 200);
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
