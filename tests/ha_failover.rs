//! High availability with real processes and a real Redis: two `mcvideo-relay serve` (a
//! primary and its standby, `[ha]` on, the same media port range on 127.0.0.1), a per_leg push
//! through the primary, `kill -9` of the primary while packets flow. The standby adopts the call
//! and binds the dead primary's ports (the media address "moves" on loopback: same IP, the
//! ports free once the process is gone). The callee keeps receiving: the gap fits the failure
//! detection time plus 200 ms; the callee decrypts every packet and the adopter counts zero
//! authentication or replay failures; the caller's Transmission End Request after the takeover
//! gets End Response and End Notify from the adopter, and the call is released once.
//!
//! Needs `redis-server` (Debian package; test.sh installs it), and ffmpeg/ffprobe for the H.264
//! push. Media ports 36600-37199, 37400-37599, 38200-38399 and
//! 61000-65399 (no other test uses them; 61000+ is above the ephemeral range).
#![cfg(all(feature = "sidecar", feature = "ha"))]
#![allow(clippy::disallowed_methods)] // real processes on real time

mod common;
mod ha_support;
mod ng_support;
mod sidecar_support;

use common::net::{Peer, RelayAddrs};
use ha_support::RedisServer;
use mcvideo_relay::keys::{MasterKey, SrtpSuite};
use mcvideo_relay::srtp::SrtpContext;
use mcvideo_relay::wire::tc::{MessageKind, TcMessage};
use serde_json::json;
use sidecar_support::{eventually, Api};

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mcvideo-relay");
const SEAL_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const SSRC: u32 = 0x5eed_0003;
const CALLER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==";
const CALLEE_KEY: &str = "GxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIBAA==";
const HEARTBEAT_MS: u64 = 200;
const FAILURE_MS: u64 = 1000;

struct Relay {
    child: Child,
    api: Api,
    stderr: Arc<Mutex<String>>,
}

impl Relay {
    fn spawn(dir: &Path, name: &str, redis_port: u16, standby_for: &[&str]) -> Relay {
        Relay::spawn_ports(dir, name, redis_port, standby_for, 36_600)
    }

    fn spawn_ports(
        dir: &Path,
        name: &str,
        redis_port: u16,
        standby_for: &[&str],
        port_min: u16,
    ) -> Relay {
        Relay::spawn_range(dir, name, redis_port, standby_for, port_min, port_min + 99)
    }

    fn spawn_range(
        dir: &Path,
        name: &str,
        redis_port: u16,
        standby_for: &[&str],
        port_min: u16,
        port_max: u16,
    ) -> Relay {
        let ng = "[ng]\nlisten = \"off\"\n";
        Relay::spawn_with(dir, name, redis_port, standby_for, (port_min, port_max), ng)
    }

    /// A relay whose config also holds `extra` (whole sections).
    fn spawn_with(
        dir: &Path,
        name: &str,
        redis_port: u16,
        standby_for: &[&str],
        (port_min, port_max): (u16, u16),
        extra: &str,
    ) -> Relay {
        Relay::spawn_api(
            dir,
            name,
            redis_port,
            standby_for,
            (port_min, port_max),
            extra,
            0,
        )
    }

    /// [`Relay::spawn_with`] with its control API (and probe address) on `api_port` (0: any).
    fn spawn_api(
        dir: &Path,
        name: &str,
        redis_port: u16,
        standby_for: &[&str],
        (port_min, port_max): (u16, u16),
        extra: &str,
        api_port: u16,
    ) -> Relay {
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[api]\nlisten = \"127.0.0.1:{api_port}\"\n[log]\nlevel = \"info\"\n\
                 [media]\nworkers = 1\nport_min = {port_min}\nport_max = {port_max}\n\
                 [ha]\nenabled = true\nredis_url = \"redis://127.0.0.1:{redis_port}\"\n\
                 instance_id = \"{name}\"\nstandby_for = {standby_for:?}\n\
                 heartbeat_ms = {HEARTBEAT_MS}\nfailure_ms = {FAILURE_MS}\n{extra}"
            ),
        )
        .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--config")
            .arg(&cfg)
            .env("MCVIDEO_RELAY_HA_SEAL_KEY", SEAL_KEY)
            .env_remove("MCVIDEO_RELAY_HA_REDIS_URL")
            .env_remove("MCVIDEO_RELAY_API_TOKEN")
            .env_remove("RUST_LOG");
        let p = sidecar_support::ServeProcess::start(cmd, name);
        Relay {
            child: p.child,
            api: Api::new(p.addr, None),
            stderr: p.stderr,
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// Waits (5 s at most) until `r` sees `n` live instances in its cluster view.
fn cluster_alive(r: &Relay, n: usize) {
    assert!(
        eventually(Duration::from_secs(5), || {
            let v = r.api.get("/v1/cluster");
            v.status == 200
                && v.json()["instances"]
                    .as_array()
                    .is_some_and(|a| a.iter().filter(|i| i["alive"] == true).count() == n)
        }),
        "{n} instances in the cluster view: {}",
        r.api.get("/v1/cluster").body
    );
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn srtp(b64: &str) -> SrtpContext {
    SrtpContext::new(&MasterKey::from_base64(SrtpSuite::AeadAes128Gcm, b64).unwrap())
}

fn rtp(seq: u16) -> Vec<u8> {
    common::net::rtp_packet(seq, SSRC, 300)
}

#[test]
fn primary_killed_mid_push_standby_takes_over() {
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("mcvr-ha-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut primary = Relay::spawn(&dir, "relay-a", redis.port, &[]);
    let standby = Relay::spawn(&dir, "relay-b", redis.port, &["relay-a"]);
    cluster_alive(&standby, 2);

    // A per_leg push through the primary.
    let (caller, callee) = (Peer::new(), Peer::new());
    let crypto = |k: &str| format!("a=crypto:1 AEAD_AES_128_GCM inline:{k}\r\n");
    let r = primary.api.post(
        "/v1/calls",
        &json!({
            "call_id": "push-1",
            "caller": {"mcvideo_id": "sip:alice@mcx.example",
                       "sdp_offer": caller.sdp("alice", "RTP/SAVP", Some(SSRC), true, &crypto(CALLER_KEY))},
            "callee": {"mcvideo_id": "sip:bob@mcx.example"},
            "video_push": true,
            "media_security": "per_leg",
        }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let callee_offer = r.json()["sdp_offer"].as_str().unwrap().to_owned();
    let r = primary.api.post(
        "/v1/calls/push-1/answer",
        &json!({"sdp_answer": callee.sdp("bob", "RTP/SAVP", None, true, &crypto(CALLEE_KEY))}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let to_caller = RelayAddrs::from_sdp(r.json()["sdp_answer"].as_str().unwrap());
    let relay_key = mcvideo_relay::sdp::SessionDescription::parse(&callee_offer)
        .unwrap()
        .media()[0]
        .crypto[0]
        .key_b64
        .clone();
    let sse = standby.api.events();

    // The callee: decrypts and timestamps every packet.
    type Arrivals = Arc<Mutex<Vec<(Instant, u16)>>>;
    let arrivals: Arrivals = Arc::default();
    let failures = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(AtomicBool::new(false));
    let rx_thread = {
        let sock = callee.rtp.try_clone().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (arrivals, failures, stop) = (arrivals.clone(), failures.clone(), stop.clone());
        let mut ctx = srtp(&relay_key);
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    match ctx.unprotect_rtp(&mut buf[..n]) {
                        Ok(_) => arrivals
                            .lock()
                            .unwrap()
                            .push((Instant::now(), u16::from_be_bytes([buf[2], buf[3]]))),
                        Err(_) => *failures.lock().unwrap() += 1,
                    }
                }
            }
        })
    };
    // The caller: a packet every 5 ms (200/s), across a sequence-number wrap.
    let sent: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::default();
    let tx_thread = {
        let sock = caller.rtp.try_clone().unwrap();
        let (sent, stop) = (sent.clone(), stop.clone());
        let mut ctx = srtp(CALLER_KEY);
        let to = to_caller.video;
        std::thread::spawn(move || {
            let mut seq: u16 = 64_500;
            let start = Instant::now();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let mut p = rtp(seq);
                let len = p.len();
                p.resize(len + 16, 0);
                let n = ctx.protect_rtp(&mut p, len).unwrap();
                let _ = sock.send_to(&p[..n], to);
                sent.lock().unwrap().push((Instant::now(), seq));
                seq = seq.wrapping_add(1);
                i += 1;
                let next = start + Duration::from_millis(5) * i;
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
        })
    };

    // Media for 2.5 s through the primary, then kill -9 (at a varying phase of the heartbeats:
    // up to 200 ms later, so that repeated runs sample the detection time).
    let phase = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()) % 200);
    std::thread::sleep(Duration::from_millis(2500 + phase));
    let before_kill = arrivals.lock().unwrap().len();
    assert!(
        before_kill > 400,
        "media flows through the primary: {before_kill}"
    );
    let killed_at = Instant::now();
    primary.child.kill().unwrap();
    primary.child.wait().unwrap();

    // The standby adopts; media flows again.
    assert!(
        eventually(Duration::from_secs(6), || arrivals
            .lock()
            .unwrap()
            .iter()
            .any(|(t, _)| *t > killed_at + Duration::from_millis(5))),
        "no media after the kill; standby log:\n{}",
        standby.log()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let adopted = sse
        .next(Duration::from_secs(2))
        .expect("an event from the standby");
    assert_eq!(adopted.name, "call.adopted", "{:?}", adopted.data);
    assert_eq!(adopted.data["call_id"], "push-1");
    assert_eq!(adopted.data["from"], "relay-a");

    // The gap, and the packets lost.
    let got = arrivals.lock().unwrap().clone();
    // A packet the primary forwarded just before it died may land just after the kill.
    let in_flight = killed_at + Duration::from_millis(10);
    let last_before = got
        .iter()
        .filter(|(t, _)| *t <= in_flight)
        .map(|(t, _)| *t)
        .max()
        .unwrap();
    let first_after = got
        .iter()
        .filter(|(t, _)| *t > in_flight)
        .map(|(t, _)| *t)
        .min()
        .unwrap();
    let takeover = first_after.duration_since(killed_at);
    let gap = first_after.duration_since(last_before);
    let sent_n = sent.lock().unwrap().len();
    let lost = sent
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t < first_after)
        .count()
        .saturating_sub(got.iter().filter(|(t, _)| *t < first_after).count());
    eprintln!(
        "takeover: {takeover:?} from the kill to the first forwarded packet; gap {gap:?}; \
         {lost} packets lost of {sent_n} sent (200/s)"
    );
    let budget = Duration::from_millis(FAILURE_MS + HEARTBEAT_MS + 200);
    assert!(
        gap <= budget,
        "gap {gap:?} over the detection time + 200 ms ({budget:?})"
    );
    // Detected by the probe (the dead primary's API port refuses), not by the failure time.
    assert!(
        standby.log().contains("detected_by=\"probe\""),
        "standby log:\n{}",
        standby.log()
    );
    assert_eq!(
        *failures.lock().unwrap(),
        0,
        "the callee decrypted every packet"
    );
    let s = standby.api.get("/v1/calls/push-1");
    assert_eq!(s.status, 200, "{}", s.body);
    let s = s.json();
    assert_eq!(s["owner"], "relay-b");
    assert_eq!(s["caller"]["drops"]["auth_failure"], 0, "{s}");
    assert!(s["callee"]["packets_out"].as_u64().unwrap() > 100, "{s}");

    // The caller ends its transmission: the adopter answers, and releases the call once.
    stop.store(true, Ordering::Relaxed);
    tx_thread.join().unwrap();
    rx_thread.join().unwrap();
    let end = TcMessage::new(MessageKind::TransmissionEndRequest, 0x0a11_ce00);
    common::net::drain(&caller.ctl, Duration::from_millis(50));
    common::net::drain(&callee.ctl, Duration::from_millis(50));
    caller.send_tc(to_caller.control.unwrap(), &end);
    let (resp, _) = common::net::recv(&caller.ctl, Duration::from_secs(2));
    assert_eq!(
        TcMessage::parse(&resp).unwrap().kind,
        MessageKind::TransmissionEndResponse
    );
    let (note, _) = common::net::recv(&callee.ctl, Duration::from_secs(2));
    assert_eq!(
        TcMessage::parse(&note).unwrap().kind,
        MessageKind::TransmissionEndNotify
    );
    let evs = sse.until_released("push-1", Duration::from_secs(3));
    let released: Vec<_> = evs.iter().filter(|e| e.name == "call.released").collect();
    assert_eq!(released.len(), 1, "{:?}", sidecar_support::names(&evs));
    assert_eq!(released[0].data["reason"], "transmission_completed");
    assert!(sse
        .next(Duration::from_millis(500))
        .is_none_or(|e| e.name != "call.released"));
    assert_eq!(standby.api.get("/v1/calls/push-1").status, 404);
    let m = standby.api.metrics();
    assert_eq!(m.get("mcvideo_relay_ha_adoptions_total"), 1.0);
    assert_eq!(m.get("mcvideo_relay_ha_store_up"), 1.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sets up a per_leg push through `api`; returns the caller's relay addresses and the key the
/// relay sends to the callee with.
fn per_leg_push(api: &Api, id: &str, caller: &Peer, callee: &Peer) -> (RelayAddrs, String) {
    let crypto = |k: &str| format!("a=crypto:1 AEAD_AES_128_GCM inline:{k}\r\n");
    let r = api.post(
        "/v1/calls",
        &json!({
            "call_id": id,
            "caller": {"mcvideo_id": "sip:alice@mcx.example",
                       "sdp_offer": caller.sdp("alice", "RTP/SAVP", Some(SSRC), true, &crypto(CALLER_KEY))},
            "callee": {"mcvideo_id": "sip:bob@mcx.example"},
            "video_push": true,
            "media_security": "per_leg",
        }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let callee_offer = r.json()["sdp_offer"].as_str().unwrap().to_owned();
    let r = api.post(
        &format!("/v1/calls/{id}/answer"),
        &json!({"sdp_answer": callee.sdp("bob", "RTP/SAVP", None, true, &crypto(CALLEE_KEY))}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let to_caller = RelayAddrs::from_sdp(r.json()["sdp_answer"].as_str().unwrap());
    let relay_key = mcvideo_relay::sdp::SessionDescription::parse(&callee_offer)
        .unwrap()
        .media()[0]
        .crypto[0]
        .key_b64
        .clone();
    (to_caller, relay_key)
}

/// Sends `n` packets from `seq` on and returns how many the callee decrypted.
fn burst(
    caller: &Peer,
    callee: &Peer,
    to: SocketAddr,
    tx: &mut SrtpContext,
    rx: &mut SrtpContext,
    seq: &mut u16,
    n: usize,
) -> (usize, usize) {
    let c = common::net::collect(
        &callee.rtp,
        Duration::from_millis(700),
        Duration::from_millis(200),
    );
    for _ in 0..n {
        let mut p = rtp(*seq);
        let len = p.len();
        p.resize(len + 16, 0);
        let m = tx.protect_rtp(&mut p, len).unwrap();
        caller.rtp.send_to(&p[..m], to).unwrap();
        *seq = seq.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(2));
    }
    let (mut ok, mut bad) = (0, 0);
    for (mut p, _) in c.join().unwrap() {
        match rx.unprotect_rtp(&mut p) {
            Ok(_) => ok += 1,
            Err(_) => bad += 1,
        }
    }
    (ok, bad)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

/// Fencing: a primary paused (SIGSTOP) past the failure time loses its call to the standby;
/// resumed, it learns it is fenced, says so in its log, drops the call (closing its ports, which
/// the standby then binds) and neither forwards nor answers for it. Restarted with the same ID,
/// it still does not: the standby keeps the call and ends it.
#[test]
fn paused_primary_is_fenced_and_restarted_primary_stays_out() {
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("mcvr-ha-fence-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut primary = Relay::spawn_ports(&dir, "relay-a", redis.port, &[], 36_700);
    let standby = Relay::spawn_ports(&dir, "relay-b", redis.port, &["relay-a"], 36_700);
    cluster_alive(&standby, 2);
    let (caller, callee) = (Peer::new(), Peer::new());
    let (to_caller, relay_key) = per_leg_push(&primary.api, "fence-1", &caller, &callee);
    let sse = standby.api.events();
    let (mut tx, mut rx) = (srtp(CALLER_KEY), srtp(&relay_key));
    let mut seq = 100u16;
    let b = |tx: &mut SrtpContext, rx: &mut SrtpContext, seq: &mut u16, n| {
        burst(&caller, &callee, to_caller.video, tx, rx, seq, n)
    };
    assert_eq!(b(&mut tx, &mut rx, &mut seq, 50), (50, 0));
    // Let the SRTP state reach Redis (refreshed about every second while media flows).
    std::thread::sleep(Duration::from_millis(1300));

    signal(&primary.child, "STOP");
    std::thread::sleep(Duration::from_millis(1800));
    signal(&primary.child, "CONT");
    assert!(
        eventually(Duration::from_secs(5), || primary.log().contains("fenced")),
        "the resumed primary says it is fenced; its log:\n{}",
        primary.log()
    );
    let fence_line = primary
        .log()
        .lines()
        .find(|l| l.contains("lost its calls to relay-b"))
        .map(str::to_owned);
    assert!(fence_line.is_some(), "{}", primary.log());
    let ev = sse.next(Duration::from_secs(5)).expect("call.adopted");
    assert_eq!(ev.name, "call.adopted");
    // A stopped process's kernel still accepts the probe: the failure time decided.
    assert!(
        standby.log().contains("detected_by=\"heartbeat\""),
        "standby log:\n{}",
        standby.log()
    );
    assert!(!standby.log().contains("detected_by=\"probe\""));
    // The standby forwards now (it bound the ports once the primary let them go).
    assert!(
        eventually(Duration::from_secs(3), || standby
            .api
            .get("/v1/calls/fence-1")
            .status
            == 200),
        "standby log:\n{}",
        standby.log()
    );
    let (ok, bad) = b(&mut tx, &mut rx, &mut seq, 50);
    assert_eq!((ok, bad), (50, 0), "forwarded by the standby, decryptable");
    let s = standby.api.get("/v1/calls/fence-1").json();
    assert_eq!(s["owner"], "relay-b");
    assert_eq!(s["caller"]["drops"]["auth_failure"], 0, "{s}");
    // The fenced primary neither answers nor releases it.
    assert_eq!(primary.api.delete("/v1/calls/fence-1").status, 404);
    let g = primary.api.get("/v1/calls/fence-1");
    assert_ne!(g.json()["owner"], "relay-a", "{}", g.body);
    assert_eq!(primary.api.metrics().get("mcvideo_relay_ha_fenced"), 1.0);
    // Its health check fails, so keepalived would move the media address away.
    let h = primary.api.get("/healthz");
    assert_eq!(
        (h.status, h.json()["status"].as_str()),
        (503, Some("fenced")),
        "{}",
        h.body
    );

    // Restarted with the same ID: a new lease, no calls; the call stays the standby's.
    primary.child.kill().unwrap();
    primary.child.wait().unwrap();
    let restarted = Relay::spawn_ports(&dir, "relay-a", redis.port, &[], 36_700);
    cluster_alive(&standby, 2);
    let g = restarted.api.get("/v1/calls/fence-1");
    assert_eq!(g.status, 200, "{}", g.body);
    assert_eq!(g.json()["owner"], "relay-b");
    assert_eq!(g.json()["remote"], true);
    assert_eq!(restarted.api.delete("/v1/calls/fence-1").status, 404);
    assert_eq!(
        b(&mut tx, &mut rx, &mut seq, 20),
        (20, 0),
        "still the standby's"
    );
    let end = TcMessage::new(MessageKind::TransmissionEndRequest, 0x0a11_ce00);
    common::net::drain(&caller.ctl, Duration::from_millis(50));
    caller.send_tc(to_caller.control.unwrap(), &end);
    let (resp, _) = common::net::recv(&caller.ctl, Duration::from_secs(2));
    assert_eq!(
        TcMessage::parse(&resp).unwrap().kind,
        MessageKind::TransmissionEndResponse
    );
    let evs = sse.until_released("fence-1", Duration::from_secs(3));
    assert_eq!(
        evs.iter().filter(|e| e.name == "call.released").count(),
        1,
        "{:?}",
        sidecar_support::names(&evs)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// 1,000 calls (`MCVIDEO_HA_FAILOVER_CALLS`) adopted at once: the time from the kill until the
/// standby runs them all, every call forwarding afterwards, every relay port accounted for.
#[test]
fn a_thousand_calls_adopted() {
    let n: usize = std::env::var("MCVIDEO_HA_FAILOVER_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let _ = mcvideo_relay::relay::raise_open_files_limit();
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("mcvr-ha-many-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut primary = Relay::spawn_range(&dir, "relay-a", redis.port, &[], 61_000, 65_399);
    let standby = Relay::spawn_range(&dir, "relay-b", redis.port, &["relay-a"], 61_000, 65_399);
    // One caller socket and one callee socket for every call: calls are told apart by SSRC.
    let caller = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sdp = |name: &str, sock: &std::net::UdpSocket, ssrc: Option<u32>| {
        let mut s = format!(
            "v=0\r\no={name} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=video {} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=rtcp-mux\r\n",
            sock.local_addr().unwrap().port()
        );
        if let Some(ssrc) = ssrc {
            s.push_str(&format!("a=ssrc:{ssrc} cname:{name}\r\n"));
        }
        s
    };
    let mut relay_ports = Vec::with_capacity(n);
    let t = Instant::now();
    for i in 0..n {
        let id = format!("many-{i}");
        let r = primary.api.post(
            "/v1/calls",
            &json!({
                "call_id": id,
                "caller": {"mcvideo_id": "sip:alice@mcx.example",
                           "sdp_offer": sdp("alice", &caller, Some(0x1000_0000 + i as u32))},
                "callee": {"mcvideo_id": "sip:bob@mcx.example"},
                "video_push": true,
            }),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let r = primary.api.post(
            &format!("/v1/calls/{id}/answer"),
            &json!({"sdp_answer": sdp("bob", &callee, None)}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        relay_ports.push(sidecar_support::relay_video_addr(
            r.json()["sdp_answer"].as_str().unwrap(),
        ));
    }
    eprintln!("{n} calls set up in {:?}", t.elapsed());
    let ports_before = primary.api.metrics().get("mcvideo_relay_port_pairs_in_use");
    assert!(ports_before >= n as f64, "{ports_before}");
    // Every call in Redis before the kill.
    assert!(
        eventually(Duration::from_secs(10), || redis.keys("mcvr:call:*").len()
            == n),
        "{} of {n} calls in Redis",
        redis.keys("mcvr:call:*").len()
    );
    let killed = Instant::now();
    primary.child.kill().unwrap();
    primary.child.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(30), || standby
            .api
            .metrics()
            .get("mcvideo_relay_ha_adoptions_total")
            == n as f64),
        "adoptions: {}; standby log:\n{}",
        standby
            .api
            .metrics()
            .get("mcvideo_relay_ha_adoptions_total"),
        standby.log()
    );
    let all_adopted = killed.elapsed();
    let took = standby
        .log()
        .lines()
        .find(|l| l.contains("took over the calls of a dead peer"))
        .map(str::to_owned)
        .unwrap_or_default();
    eprintln!("{n} calls adopted {all_adopted:?} after the kill (detection included); {took}");
    let m = standby.api.metrics();
    assert_eq!(m.get("mcvideo_relay_ha_adoption_failures_total"), 0.0);
    assert_eq!(
        m.get("mcvideo_relay_port_pairs_in_use"),
        ports_before,
        "every port accounted for"
    );
    // Every call forwards: one packet each, each reaches the callee.
    let c = common::net::collect(&callee, Duration::from_secs(2), Duration::from_millis(500));
    for (i, to) in relay_ports.iter().enumerate() {
        let p = common::net::rtp_packet(1, 0x1000_0000 + i as u32, 100);
        caller.send_to(&p, to).unwrap();
        if i % 64 == 63 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut seen: Vec<u32> = c
        .join()
        .unwrap()
        .iter()
        .map(|(b, _)| u32::from_be_bytes([b[8], b[9], b[10], b[11]]))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), n, "every adopted call forwards");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Redis killed mid-call and restarted empty: media goes on, the API answers (a call is set up
/// and released while Redis is down), `mcvideo_relay_ha_store_up` says so, and every live call
/// is back in Redis within seconds of its return. Then 10,000 create/answer/release cycles
/// (`MCVIDEO_HA_CHURN_CALLS` sets another count) leave no call key behind.
#[test]
fn redis_outage_and_churn() {
    let mut redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("mcvr-ha-outage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let relay = Relay::spawn_ports(&dir, "relay-a", redis.port, &[], 36_800);
    let (caller, callee) = (Peer::new(), Peer::new());
    let (to_caller, relay_key) = per_leg_push(&relay.api, "live-1", &caller, &callee);
    let (mut tx, mut rx) = (srtp(CALLER_KEY), srtp(&relay_key));
    let mut seq = 1u16;
    let b = |tx: &mut SrtpContext, rx: &mut SrtpContext, seq: &mut u16, n| {
        burst(&caller, &callee, to_caller.video, tx, rx, seq, n)
    };
    assert_eq!(b(&mut tx, &mut rx, &mut seq, 30), (30, 0));
    assert!(eventually(Duration::from_secs(5), || redis
        .keys("mcvr:call:*")
        .len()
        == 1));

    redis.kill();
    assert!(
        eventually(Duration::from_secs(5), || relay
            .api
            .metrics()
            .get("mcvideo_relay_ha_store_up")
            == 0.0),
        "store_up goes to 0"
    );
    assert_eq!(b(&mut tx, &mut rx, &mut seq, 50), (50, 0), "no media loss");
    let (c2, e2) = (Peer::new(), Peer::new());
    per_leg_push(&relay.api, "during-outage", &c2, &e2);
    let (c3, e3) = (Peer::new(), Peer::new());
    per_leg_push(&relay.api, "gone-during-outage", &c3, &e3);
    assert_eq!(relay.api.delete("/v1/calls/gone-during-outage").status, 200);
    assert_eq!(relay.api.get("/v1/cluster").status, 503);

    redis.restart();
    let back = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut k = redis.keys("mcvr:call:*");
            k.sort();
            k == ["mcvr:call:during-outage", "mcvr:call:live-1"]
        }),
        "live calls back in Redis: {:?}",
        redis.keys("mcvr:call:*")
    );
    eprintln!(
        "full state back in Redis {:?} after it returned",
        back.elapsed()
    );
    assert!(eventually(Duration::from_secs(5), || relay
        .api
        .metrics()
        .get("mcvideo_relay_ha_store_up")
        == 1.0));
    assert_eq!(b(&mut tx, &mut rx, &mut seq, 20), (20, 0));

    // Churn: every released call's key goes.
    assert_eq!(relay.api.delete("/v1/calls/live-1").status, 200);
    assert_eq!(relay.api.delete("/v1/calls/during-outage").status, 200);
    let n: usize = std::env::var("MCVIDEO_HA_CHURN_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let (c, e) = (Peer::new(), Peer::new());
    for i in 0..n {
        let id = format!("churn-{i}");
        per_leg_push(&relay.api, &id, &c, &e);
        assert_eq!(relay.api.delete(&format!("/v1/calls/{id}")).status, 200);
    }
    assert!(
        eventually(Duration::from_secs(10), || redis
            .keys("mcvr:call:*")
            .is_empty()),
        "keys left: {:?}",
        redis.keys("mcvr:call:*").len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The crash test with a real H.264 push: ffmpeg sends 5 s of video (SRTP AES-CM) to the
/// primary in per_leg mode, an ffmpeg receiver decrypts with the relay's key and records; the
/// primary is killed 2 s in. The standby adopts; the receiver's recording decodes with the frames
/// lost fitting the detection time plus 200 ms (at 25 fps), and the adopter counts zero
/// authentication failures.
#[test]
fn ffmpeg_push_survives_a_kill() {
    ffmpeg_push_across_a_kill("per_leg", 36_900);
}

/// The same in end_to_end mode: SRTP passes through both relays byte for byte with the camera's
/// own key, which the relays never hold.
#[test]
fn ffmpeg_push_survives_a_kill_end_to_end() {
    ffmpeg_push_across_a_kill("end_to_end", 37_000);
}

fn ffmpeg_push_across_a_kill(mode: &str, port_min: u16) {
    use common::ffmpeg::{
        frames, port_pair, require, send, spawn_receiver, video_sdp, FRAMES, SENDER_KEY, SSRC,
    };
    require("ffmpeg");
    require("ffprobe");
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("mcvr-ha-ffmpeg-{mode}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut primary = Relay::spawn_ports(&dir, "relay-a", redis.port, &[], port_min);
    let standby = Relay::spawn_ports(&dir, "relay-b", redis.port, &["relay-a"], port_min);
    cluster_alive(&standby, 2);
    let (caller_port, _c1, _c2) = port_pair();
    let r = primary.api.post(
        "/v1/calls",
        &json!({
            "call_id": "ffmpeg-ha",
            "caller": {"mcvideo_id": "sip:camera@mcx.example",
                       "sdp_offer": video_sdp("camera", caller_port, SENDER_KEY, Some(SSRC))},
            "callee": {"mcvideo_id": "sip:viewer@mcx.example"},
            "video_push": true,
            "media_security": mode,
        }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let relay_key = r.json()["sdp_offer"]
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.split("inline:").nth(1))
        .map(|k| k.split(['|', ' ']).next().unwrap().trim().to_owned())
        .unwrap();
    if mode == "per_leg" {
        assert_ne!(
            relay_key, SENDER_KEY,
            "per_leg: the relay's own key toward the callee"
        );
    } else {
        assert_eq!(
            relay_key, SENDER_KEY,
            "end_to_end: the camera's key passes through"
        );
    }
    let (recv_port, r1, r2) = port_pair();
    let recv_sdp = video_sdp("viewer", recv_port, &relay_key, None);
    let r = primary.api.post(
        "/v1/calls/ffmpeg-ha/answer",
        &json!({ "sdp_answer": recv_sdp }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let to_caller = sidecar_support::relay_video_addr(r.json()["sdp_answer"].as_str().unwrap());
    std::fs::write(dir.join("recv.sdp"), &recv_sdp).unwrap();
    drop((r1, r2));
    let out = dir.join("out.mkv");
    let receiver = spawn_receiver(&dir.join("recv.sdp"), &out);
    std::thread::sleep(Duration::from_millis(700));
    let sender = std::thread::spawn(move || send(to_caller));
    std::thread::sleep(Duration::from_millis(2000));
    primary.child.kill().unwrap();
    primary.child.wait().unwrap();
    let sent = sender.join().unwrap();
    assert!(
        sent.status.success(),
        "sender: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let received = receiver.wait_with_output().expect("receiver exits");
    assert!(
        received.status.success(),
        "receiver: {}",
        String::from_utf8_lossy(&received.stderr)
    );
    let got = frames(&out);
    let lost = FRAMES.saturating_sub(got);
    let budget = ((FAILURE_MS + HEARTBEAT_MS + 200) * 25).div_ceil(1000) as u32;
    eprintln!("ffmpeg push ({mode}) across a kill -9: {got} of {FRAMES} frames decode, {lost} lost (budget {budget})");
    assert!(lost <= budget, "{lost} frames lost, over {budget}");
    let s = standby.api.get("/v1/calls/ffmpeg-ha");
    assert_eq!(s.status, 200, "{}; standby log:\n{}", s.body, standby.log());
    let s = s.json();
    assert_eq!(s["owner"], "relay-b");
    assert_eq!(s["caller"]["drops"]["auth_failure"], 0, "{s}");
    assert!(s["callee"]["packets_out"].as_u64().unwrap() > 50, "{s}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The group crash test: a group of 4 on the primary (an ffmpeg H.264 camera granted,
/// a second member queued, two ffmpeg receivers), `kill -9` of the primary 2 s into 5 s of
/// video. The standby adopts the group: the camera goes on without a new request, both
/// receivers' recordings decode with the frames lost fitting the detection time plus 200 ms
/// (at 25 fps), the queued member (which receives too) decrypts every packet it gets, before
/// and after the kill, with no authentication or replay failure, and the adopter counts none;
/// when the camera's member ends its transmission, the adopter grants the queued member.
#[test]
fn ffmpeg_group_survives_a_kill() {
    ffmpeg_group_across_a_kill("per_leg", 38_200);
}

/// The same in end_to_end mode (the group's key passes through both relays).
#[test]
fn ffmpeg_group_survives_a_kill_end_to_end() {
    ffmpeg_group_across_a_kill("end_to_end", 38_300);
}

/// Keys the receivers and the queued member offer in per_leg mode (AES-CM, base64).
const GROUP_KEYS: [&str; 3] = [
    "ERITFBUWFxgZGhscHR4fICEiIyQlJicoKSorLC0u",
    "MTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkdISUpLTE1O",
    "UVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1u",
];

fn ffmpeg_group_across_a_kill(mode: &str, port_min: u16) {
    use common::ffmpeg::{
        frames, port_pair, require, send, spawn_receiver, video_sdp, FRAMES, SENDER_KEY, SSRC,
    };
    use mcvideo_relay::wire::tc::{self, EmitOptions};
    use std::net::UdpSocket;
    require("ffmpeg");
    require("ffprobe");
    let per_leg = mode == "per_leg";
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("mcvr-ha-group-{mode}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut primary = Relay::spawn_ports(&dir, "relay-a", redis.port, &[], port_min);
    let standby = Relay::spawn_ports(&dir, "relay-b", redis.port, &["relay-a"], port_min);
    cluster_alive(&standby, 2);
    let ctl_socket = || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    };
    let with_control = |sdp: String, ctl: &UdpSocket| {
        format!(
            "{sdp}m=application {} udp MCVideo\r\na=fmtp:MCVideo mc_queueing\r\n",
            ctl.local_addr().unwrap().port()
        )
    };
    let key = |i: usize| if per_leg { GROUP_KEYS[i] } else { SENDER_KEY };
    // The camera (ffmpeg sends; the test speaks MCVideo for it), the second member (the
    // test's sockets: it asks too and is queued; it receives the camera meanwhile), and two
    // receive-only ffmpeg receivers.
    let (camera_port, _c1, _c2) = port_pair();
    let camera_ctl = ctl_socket();
    let (second_port, second_rtp, _s2) = port_pair();
    let second_ctl = ctl_socket();
    let (r0, r0a, r0b) = port_pair();
    let (r1, r1a, r1b) = port_pair();
    let r = primary.api.post(
        "/v1/group-calls",
        &json!({
            "call_id": "ffmpeg-group-ha",
            "group_id": "sip:cameras@mcx.example",
            "media_security": mode,
            "members": [
                {"mcvideo_id": "camera", "priority": 5,
                 "sdp_offer": with_control(video_sdp("camera", camera_port, SENDER_KEY, Some(SSRC)), &camera_ctl)},
                {"mcvideo_id": "second", "priority": 5,
                 "sdp_offer": with_control(video_sdp("second", second_port, key(2), Some(0x5eed_0777)), &second_ctl)},
                {"mcvideo_id": "viewer0", "priority": 1, "receive_only": true,
                 "sdp_offer": video_sdp("viewer0", r0, key(0), None)},
                {"mcvideo_id": "viewer1", "priority": 1, "receive_only": true,
                 "sdp_offer": video_sdp("viewer1", r1, key(1), None)},
            ],
        }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let answers = r.json()["members"].as_array().unwrap().clone();
    let answer = |i: usize| answers[i]["sdp_answer"].as_str().unwrap().to_owned();
    let answer_key = |i: usize| {
        answer(i)
            .lines()
            .find_map(|l| l.split("inline:").nth(1))
            .map(|k| k.split(['|', ' ']).next().unwrap().trim().to_owned())
            .unwrap()
    };
    let camera = RelayAddrs::from_sdp(&answer(0));
    let second = RelayAddrs::from_sdp(&answer(1));
    let mut receivers = Vec::new();
    drop((r0a, r0b, r1a, r1b));
    for (i, port) in [(2usize, r0), (3, r1)] {
        let k = answer_key(i);
        assert_eq!(k == SENDER_KEY, !per_leg, "per_leg: the relay's own key");
        let sdp = dir.join(format!("recv{i}.sdp"));
        std::fs::write(&sdp, video_sdp("viewer", port, &k, None)).unwrap();
        let out = dir.join(format!("out{i}.mkv"));
        receivers.push((spawn_receiver(&sdp, &out), out));
    }
    let expect = |s: &UdpSocket, kind: MessageKind| {
        let mut buf = [0u8; 1500];
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            let Ok((n, _)) = s.recv_from(&mut buf) else {
                continue;
            };
            if tc::messages(&buf[..n]).flatten().any(|m| m.kind == kind) {
                return true;
            }
        }
        false
    };
    let send_tc = |s: &UdpSocket, kind: MessageKind, ssrc: u32, to: SocketAddr| {
        let mut m = TcMessage::new(kind, ssrc);
        m.fields.transmission_priority = Some(5);
        s.send_to(&m.to_vec(&EmitOptions::default()).unwrap(), to)
            .unwrap();
    };
    send_tc(
        &camera_ctl,
        MessageKind::TransmissionRequest,
        SSRC,
        camera.control.unwrap(),
    );
    assert!(expect(&camera_ctl, MessageKind::TransmissionGranted));
    send_tc(
        &second_ctl,
        MessageKind::TransmissionRequest,
        0x5eed_0777,
        second.control.unwrap(),
    );
    assert!(expect(&second_ctl, MessageKind::QueuePositionInfo));

    // The second member's video socket: every packet decrypted with its answer's key, timed.
    let second_key = answer_key(1);
    let stop = Arc::new(AtomicBool::new(false));
    let listener = {
        let stop = stop.clone();
        second_rtp
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        std::thread::spawn(move || {
            let mut ctx = SrtpContext::new(
                &MasterKey::from_base64(SrtpSuite::AesCm128HmacSha1_80, &second_key).unwrap(),
            );
            let (mut got, mut bad) = (Vec::new(), 0usize);
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let Ok(n) = second_rtp.recv(&mut buf) else {
                    continue;
                };
                let mut p = buf[..n].to_vec();
                match ctx.unprotect_rtp(&mut p) {
                    Ok(_) => got.push((Instant::now(), u16::from_be_bytes([p[2], p[3]]))),
                    Err(_) => bad += 1,
                }
            }
            (got, bad)
        })
    };
    // The standby describes the group from its record in Redis (no key in it).
    let remote = standby.api.get("/v1/calls/ffmpeg-group-ha");
    assert_eq!(remote.status, 200, "{}", remote.body);
    let remote = remote.json();
    assert_eq!(remote["kind"], "group", "{remote}");
    assert_eq!(remote["owner"], "relay-a", "{remote}");
    assert_eq!(
        remote["members"].as_array().map(Vec::len),
        Some(4),
        "{remote}"
    );
    std::thread::sleep(Duration::from_millis(700));
    let to = camera.video;
    let sender = std::thread::spawn(move || send(to));
    std::thread::sleep(Duration::from_millis(2000));
    let killed_at = Instant::now();
    primary.child.kill().unwrap();
    primary.child.wait().unwrap();
    let sent = sender.join().unwrap();
    assert!(
        sent.status.success(),
        "sender: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let budget = ((FAILURE_MS + HEARTBEAT_MS + 200) * 25).div_ceil(1000) as u32;
    let mut lost_frames = Vec::new();
    for (r, out) in receivers {
        let got = r.wait_with_output().expect("receiver exits");
        assert!(
            got.status.success(),
            "receiver: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        lost_frames.push(FRAMES.saturating_sub(frames(&out)));
    }
    stop.store(true, Ordering::Relaxed);
    let (got, bad) = listener.join().unwrap();
    let last_before = got
        .iter()
        .filter(|(t, _)| *t <= killed_at)
        .map(|(t, _)| *t)
        .max()
        .expect("media before the kill");
    let first_after = got
        .iter()
        .filter(|(t, _)| *t > killed_at)
        .map(|(t, _)| *t)
        .min()
        .expect("media after the kill");
    let gap = first_after.duration_since(last_before);
    let seqs: Vec<u16> = got.iter().map(|(_, s)| *s).collect();
    let lost_packets: usize = seqs
        .windows(2)
        .map(|w| usize::from(w[1].wrapping_sub(w[0]).wrapping_sub(1)))
        .filter(|&d| d < 10_000)
        .sum();
    eprintln!(
        "ffmpeg group ({mode}) across a kill -9: frames lost per receiver {lost_frames:?} of {FRAMES} \
         (budget {budget}); media gap {gap:?} ({lost_packets} packets lost, {} received, {bad} failing) \
         at the queued member",
        got.len()
    );
    assert_eq!(
        bad, 0,
        "no authentication or replay failure at the queued member"
    );
    for lost in &lost_frames {
        assert!(*lost <= budget, "{lost} frames lost, over {budget}");
    }
    let s = standby.api.get("/v1/group-calls/ffmpeg-group-ha");
    assert_eq!(s.status, 200, "{}; standby log:\n{}", s.body, standby.log());
    let s = s.json();
    assert_eq!(s["transmissions"][0]["mcvideo_id"], "camera", "{s}");
    assert_eq!(s["queue"][0]["mcvideo_id"], "second", "{s}");
    for m in s["members"].as_array().unwrap() {
        assert_eq!(m["drops"]["auth_failure"], 0, "{m}");
    }
    assert!(s["members"][0]["packets_in"].as_u64().unwrap() > 50, "{s}");

    // The camera's member ends: the adopter answers and grants the queued member.
    send_tc(
        &camera_ctl,
        MessageKind::TransmissionEndRequest,
        SSRC,
        camera.control.unwrap(),
    );
    assert!(expect(&camera_ctl, MessageKind::TransmissionEndResponse));
    assert!(expect(&second_ctl, MessageKind::TransmissionGranted));
    let s = standby.api.get("/v1/group-calls/ffmpeg-group-ha").json();
    assert_eq!(s["transmissions"][0]["mcvideo_id"], "second", "{s}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A plain push `id` (RTP/AVP, `ssrc` announced, with control channels) created and answered
/// on `api`: the relay's addresses for the caller.
fn plain_push(api: &Api, id: &str, caller: &Peer, callee: &Peer, ssrc: u32) -> RelayAddrs {
    let r = api.post(
        "/v1/calls",
        &json!({
            "call_id": id,
            "caller": {"mcvideo_id": "sip:alice@mcx.example",
                       "sdp_offer": caller.sdp("alice", "RTP/AVP", Some(ssrc), true, "")},
            "callee": {"mcvideo_id": "sip:bob@mcx.example"},
            "video_push": true,
        }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.post(
        &format!("/v1/calls/{id}/answer"),
        &json!({"sdp_answer": callee.sdp("bob", "RTP/AVP", None, true, "")}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    RelayAddrs::from_sdp(r.json()["sdp_answer"].as_str().unwrap())
}

/// Sends `n` plain RTP packets with `ssrc` from the caller to `to`, 5 ms apart; returns how
/// many reached the callee.
fn plain_forwarded(caller: &Peer, callee: &Peer, to: SocketAddr, ssrc: u32, n: u16) -> usize {
    let got = common::net::collect(
        &callee.rtp,
        Duration::from_millis(1500),
        Duration::from_millis(300),
    );
    for seq in 0..n {
        let p = common::net::rtp_packet(seq, ssrc, 160);
        caller.rtp.send_to(&p, to).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    got.join().unwrap().len()
}

/// Issue 20, item 5: calls in the middle of their setup survive a kill. A call offered over
/// the HTTP API and not yet answered is answered on the adopter (and its media flows); a call
/// offered over ng (as Kamailio's `rtpengine_offer`) is found by the adopter under its ng
/// Call-ID: the answer, query and delete Kamailio sends after the takeover all work there.
/// Nothing stays in Redis once both calls are over.
#[test]
fn early_dialog_and_ng_calls_survive_a_kill() {
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("mcvr-ha-early-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ng_ports = [0u8; 2].map(|_| {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    });
    let ng = |p: u16| format!("[ng]\nlisten = \"127.0.0.1:{p}\"\n");
    let ports = (37_400, 37_499);
    let mut primary = Relay::spawn_with(&dir, "relay-a", redis.port, &[], ports, &ng(ng_ports[0]));
    let standby = Relay::spawn_with(
        &dir,
        "relay-b",
        redis.port,
        &["relay-a"],
        ports,
        &ng(ng_ports[1]),
    );
    cluster_alive(&standby, 2);
    // An early-dialog push over the API, and one over ng.
    let (caller, callee) = (Peer::new(), Peer::new());
    let r = primary.api.post(
        "/v1/calls",
        &json!({
            "call_id": "early-1",
            "caller": {"mcvideo_id": "sip:alice@mcx.example",
                       "sdp_offer": caller.sdp("alice", "RTP/AVP", Some(SSRC), true, "")},
            "callee": {"mcvideo_id": "sip:bob@mcx.example"},
            "video_push": true,
        }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let (ng_caller, ng_callee) = (Peer::new(), Peer::new());
    let to_primary = ng_support::Ng::new(SocketAddr::from(([127, 0, 0, 1], ng_ports[0])));
    let offer = to_primary.request(
        "o1",
        &ng_support::d(&[
            ("command", ng_support::s("offer")),
            ("call-id", ng_support::s("ng-early@mcx.example")),
            ("from-tag", ng_support::s("ft-1")),
            (
                "sdp",
                ng_support::s(&ng_caller.sdp("carol", "RTP/AVP", Some(SSRC + 1), true, "")),
            ),
        ]),
    );
    assert_eq!(offer.str("result").as_deref(), Some("ok"), "{offer:?}");
    // Both offered calls are in Redis before the crash.
    assert!(
        eventually(Duration::from_secs(5), || redis.keys("mcvr:call:*").len()
            == 2),
        "two call records: {:?}",
        redis.keys("mcvr:call:*")
    );
    primary.child.kill().unwrap();
    let _ = primary.child.wait();
    assert!(
        eventually(Duration::from_secs(10), || standby
            .api
            .get("/v1/calls/early-1")
            .json()["owner"]
            == "relay-b"),
        "the standby adopted the early-dialog call: {}",
        standby.log()
    );
    // The API call is answered on the adopter, and its media flows.
    let r = standby.api.post(
        "/v1/calls/early-1/answer",
        &json!({"sdp_answer": callee.sdp("bob", "RTP/AVP", None, true, "")}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let to_caller = RelayAddrs::from_sdp(r.json()["sdp_answer"].as_str().unwrap());
    let got = plain_forwarded(&caller, &callee, to_caller.video, SSRC, 50);
    assert!(got >= 45, "{got} of 50 packets reached the callee");
    // The ng call: Kamailio's answer, query and delete reach the adopter.
    let to_standby = ng_support::Ng::new(SocketAddr::from(([127, 0, 0, 1], ng_ports[1])));
    let answer = to_standby.request(
        "a1",
        &ng_support::d(&[
            ("command", ng_support::s("answer")),
            ("call-id", ng_support::s("ng-early@mcx.example")),
            ("from-tag", ng_support::s("ft-1")),
            ("to-tag", ng_support::s("tt-1")),
            (
                "sdp",
                ng_support::s(&ng_callee.sdp("dave", "RTP/AVP", None, true, "")),
            ),
        ]),
    );
    assert_eq!(answer.str("result").as_deref(), Some("ok"), "{answer:?}");
    assert!(answer.str("sdp").is_some_and(|s| s.contains("m=video")));
    let query = to_standby.request(
        "q1",
        &ng_support::d(&[
            ("command", ng_support::s("query")),
            ("call-id", ng_support::s("ng-early@mcx.example")),
        ]),
    );
    assert_eq!(query.str("result").as_deref(), Some("ok"), "{query:?}");
    let delete = to_standby.request(
        "d1",
        &ng_support::d(&[
            ("command", ng_support::s("delete")),
            ("call-id", ng_support::s("ng-early@mcx.example")),
            ("from-tag", ng_support::s("ft-1")),
            ("to-tag", ng_support::s("tt-1")),
        ]),
    );
    assert_eq!(delete.str("result").as_deref(), Some("ok"), "{delete:?}");
    assert!(delete.get("warning").is_none(), "{delete:?}");
    assert_eq!(standby.api.delete("/v1/calls/early-1").status, 200);
    assert!(
        eventually(Duration::from_secs(5), || redis
            .keys("mcvr:call:*")
            .is_empty()),
        "keys left: {:?}",
        redis.keys("mcvr:call:*")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 20, item 1: N-way adoption. Three instances, each `standby_for = ["*"]`; six calls on
/// the first. When it is killed, the two live ones split its calls by load, three each, every
/// call claimed once; each adopter answers for its share and forwards its media.
#[test]
fn a_dead_instances_calls_are_spread_over_the_live_ones() {
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("mcvr-ha-nway-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ports = (37_500, 37_599);
    let off = "[ng]\nlisten = \"off\"\n";
    let spawn = |name: &str| Relay::spawn_with(&dir, name, redis.port, &["*"], ports, off);
    let mut a = spawn("relay-a");
    let b = spawn("relay-b");
    let c = spawn("relay-c");
    cluster_alive(&c, 3);
    let mut peers = Vec::new();
    for i in 0..6u32 {
        let (caller, callee) = (Peer::new(), Peer::new());
        let id = format!("nway-{i}");
        let to_caller = plain_push(&a.api, &id, &caller, &callee, SSRC + i);
        peers.push((id, caller, callee, to_caller));
    }
    assert!(
        eventually(Duration::from_secs(5), || redis.keys("mcvr:call:*").len()
            == 6),
        "six records"
    );
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let owned = |r: &Relay| {
        let v = r.api.get("/v1/calls").json();
        let mut ids: Vec<String> = v["calls"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|c| c["call_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    };
    assert!(
        eventually(Duration::from_secs(10), || owned(&b).len()
            + owned(&c).len()
            == 6),
        "all six adopted: b {:?}, c {:?}\n{}\n{}",
        owned(&b),
        owned(&c),
        b.log(),
        c.log()
    );
    let (on_b, on_c) = (owned(&b), owned(&c));
    assert_eq!(
        (on_b.len(), on_c.len()),
        (3, 3),
        "by load: {on_b:?} {on_c:?}"
    );
    assert!(
        on_b.iter().all(|id| !on_c.contains(id)),
        "each call claimed once"
    );
    // Each adopter forwards the media of one of its calls.
    for (relay, ids) in [(&b, &on_b), (&c, &on_c)] {
        let (id, caller, callee, to_caller) = peers.iter().find(|p| p.0 == ids[0]).unwrap();
        let s = relay.api.get(&format!("/v1/calls/{id}")).json();
        assert_eq!(s["state"], "established", "{s}");
        let ssrc = SSRC + id.trim_start_matches("nway-").parse::<u32>().unwrap();
        let got = plain_forwarded(caller, callee, to_caller.video, ssrc, 40);
        assert!(got >= 36, "{id}: {got} of 40 packets forwarded");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A primary killed and restarted at once under its ID, on the same API address (so the
/// standby's probe connects: only the heartbeat can tell). The new life waits until the standby
/// has taken the calls of the old one before it beats, instead of hiding its death and deleting
/// them in its first resync. The call goes on through the standby.
#[test]
fn a_primary_restarted_at_once_hands_its_calls_to_the_standby() {
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("mcvr-ha-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let api_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let off = "[ng]\nlisten = \"off\"\n";
    let ports = (37_100, 37_199);
    let spawn_primary = || Relay::spawn_api(&dir, "relay-a", redis.port, &[], ports, off, api_port);
    let mut primary = spawn_primary();
    let standby = Relay::spawn_with(&dir, "relay-b", redis.port, &["relay-a"], ports, off);
    cluster_alive(&standby, 2);
    let (caller, callee) = (Peer::new(), Peer::new());
    let to_caller = plain_push(&primary.api, "restart-1", &caller, &callee, SSRC);
    assert!(plain_forwarded(&caller, &callee, to_caller.video, SSRC, 20) >= 18);
    assert!(
        eventually(Duration::from_secs(5), || redis.keys("mcvr:call:*").len()
            == 1),
        "the call's record"
    );
    let sse = standby.api.events();
    primary.child.kill().unwrap();
    primary.child.wait().unwrap();
    let restarted = spawn_primary();
    let ev = sse.next(Duration::from_secs(6)).expect("call.adopted");
    assert_eq!(
        (ev.name.as_str(), &ev.data["call_id"]),
        ("call.adopted", &json!("restart-1"))
    );
    assert!(
        restarted.log().contains("previous life still owns calls"),
        "{}",
        restarted.log()
    );
    let got = plain_forwarded(&caller, &callee, to_caller.video, SSRC, 40);
    assert!(got >= 36, "{got} of 40 forwarded by the standby");
    assert_eq!(
        standby.api.get("/v1/calls/restart-1").json()["owner"],
        "relay-b"
    );
    assert_eq!(
        redis.keys("mcvr:call:*").len(),
        1,
        "the record stays, the standby's"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
