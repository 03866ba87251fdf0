//! HA with Redis Sentinel, real processes only: a Redis primary, one replica, three
//! `redis-server --sentinel` (quorum 2, down after 500 ms), all on free loopback ports (the
//! primary behind a proxy that can cut its replication link), and a
//! `mcvideo-relay serve` with `[ha] sentinels` and `master_name`. A call with paced media (200
//! packets/s) runs through the relay; the replica's link is cut just before the call is set up,
//! so the replica never sees its record (the writes a new primary loses in an asynchronous
//! failover); then the primary is killed (`SIGKILL`). The sentinels promote the replica; the
//! relay finds it without a restart, writes its whole state again, and the call's record is in
//! the new primary within 2 s of the promotion. Media never stops: the callee gets every packet.
//! At the end the call is released and nothing of it stays in Redis.
//!
//! Needs `redis-server` (Debian package; test.sh installs it; `--sentinel` is the same binary).
//! Media ports 37600-37619 (no other test uses them).
#![cfg(all(feature = "sidecar", feature = "ha"))]
#![allow(clippy::disallowed_methods)] // real processes on real time

mod ha_support;
mod sidecar_support;

use ha_support::{RedisProxy, RedisServer, Sentinel};
use serde_json::json;
use sidecar_support::{create_body, eventually, relay_video_addr, Api, Client, ServeProcess};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mcvideo-relay");
const SEAL_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const MASTER: &str = "mcvr-test";
const SSRC: u32 = 0x5e47_0001;

fn exists(port_of: &dyn Fn(&[&str]) -> Option<Vec<u8>>, key: &str) -> bool {
    port_of(&["EXISTS", key]).is_some_and(|r| r.starts_with(b":1"))
}

#[test]
fn redis_primary_killed_under_sentinel_mid_call() {
    // Redis: a primary (behind a proxy that can cut its replication), a replica, three
    // sentinels.
    let mut primary = RedisServer::start();
    let proxy = RedisProxy::to(primary.port);
    let replica = RedisServer::start_replica_of(proxy.port);
    let sentinels: Vec<Sentinel> = (0..3)
        .map(|_| Sentinel::start(MASTER, proxy.port))
        .collect();
    assert!(
        eventually(Duration::from_secs(20), || sentinels
            .iter()
            .all(|s| s.peers(MASTER) == (2, 1))),
        "the sentinels know each other and the replica: {:?}",
        sentinels
            .iter()
            .map(|s| s.peers(MASTER))
            .collect::<Vec<_>>()
    );

    // The relay, told only where the sentinels are.
    let dir = std::env::temp_dir().join(format!("mcvr-ha-sentinel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("relay-a.toml");
    let list: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    std::fs::write(
        &cfg,
        format!(
            "[api]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"info\"\n\
             [media]\nworkers = 1\nport_min = 37600\nport_max = 37619\n\
             [ha]\nenabled = true\nredis_url = \"redis://127.0.0.1:1/0\"\n\
             sentinels = {list:?}\nmaster_name = \"{MASTER}\"\ninstance_id = \"relay-a\"\n"
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
    let relay = sidecar_support::KilledOnDrop(ServeProcess::start(cmd, "relay-a"));
    let api = Api::new(relay.0.addr, None);
    let store_up = || api.metrics().get("mcvideo_relay_ha_store_up") == 1.0;
    assert!(
        eventually(Duration::from_secs(10), store_up),
        "the relay reaches the primary through the sentinels:\n{}",
        relay.0.log()
    );
    let lease = "mcvr:lease:relay-a";
    assert!(
        eventually(Duration::from_secs(5), || exists(
            &|a| replica.command(a),
            lease
        )),
        "the lease reached the replica"
    );

    // From now on the replica misses every write: the call exists on the old primary only.
    proxy.cut_replication();
    let (caller, callee) = (Client::new(), Client::new());
    let r = api.post(
        "/v1/calls",
        &create_body(
            "sentinel-1",
            "sip:alice@mcx.example",
            "sip:bob@mcx.example",
            &caller.sdp("alice", Some(SSRC)),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.post(
        "/v1/calls/sentinel-1/answer",
        &json!({"sdp_answer": callee.sdp("bob", None)}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let to_relay = relay_video_addr(r.json()["sdp_answer"].as_str().unwrap());
    let call_key = "mcvr:call:sentinel-1";
    assert!(
        eventually(Duration::from_secs(5), || exists(
            &|a| primary.command(a),
            call_key
        )),
        "the call's record is in the primary"
    );
    assert!(
        !exists(&|a| replica.command(a), call_key),
        "the replica must not have the record (its link is cut)"
    );

    // Paced media, 200 packets/s, caller -> relay -> callee, counted on both sides.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let rx = {
        let sock = callee.rtp.try_clone().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut quiet_since: Option<Instant> = None;
            loop {
                match sock.recv_from(&mut buf) {
                    Ok((n, _)) if n >= 12 => {
                        received.fetch_add(1, Ordering::Relaxed);
                        quiet_since = None;
                    }
                    _ => {
                        // After the sender stopped: 500 ms with nothing more ends the count.
                        if stop.load(Ordering::Relaxed) {
                            let q = *quiet_since.get_or_insert_with(Instant::now);
                            if q.elapsed() > Duration::from_millis(500) {
                                return;
                            }
                        }
                    }
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
                sock.send_to(&p, to_relay).unwrap();
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
        eventually(Duration::from_secs(5), || received.load(Ordering::Relaxed)
            >= 100),
        "media flows before the failover"
    );

    // The primary dies; the sentinels promote the replica (the moment the first one names it).
    let killed = Instant::now();
    primary.kill();
    let promoted = loop {
        if sentinels
            .iter()
            .any(|s| s.primary_port(MASTER) == Some(replica.port))
        {
            break Instant::now();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no failover within 30 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // The relay follows it and writes its state again: the call's record is in the new
    // primary (which never had it).
    let protected = loop {
        if exists(&|a| replica.command(a), call_key) && exists(&|a| replica.command(a), lease) {
            break Instant::now();
        }
        assert!(
            promoted.elapsed() < Duration::from_secs(10),
            "the call's record never reached the new primary:\n{}",
            relay.0.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let after_promotion = protected.saturating_duration_since(promoted);
    eprintln!(
        "sentinel failover: promoted {} ms after the kill; call record in the new primary {} ms \
         after the promotion ({} ms after the kill)",
        promoted.duration_since(killed).as_millis(),
        after_promotion.as_millis(),
        protected.duration_since(killed).as_millis()
    );
    assert!(
        after_promotion <= Duration::from_secs(2),
        "HA protection back {} ms after the promotion (over 2 s):\n{}",
        after_promotion.as_millis(),
        relay.0.log()
    );
    assert!(
        eventually(Duration::from_secs(5), store_up),
        "store up again:\n{}",
        relay.0.log()
    );

    // Media went on all along: a second more, then stop and count.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    tx.join().unwrap();
    rx.join().unwrap();
    let (sent, received) = (
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
    eprintln!("media: {sent} packets sent, {received} received");
    assert_eq!(received, sent, "no media loss across the Redis failover");
    let log = relay.0.log();
    assert!(
        log.contains("Redis primary found through Sentinel")
            && log.contains(&replica.port.to_string()),
        "the log names the new primary:\n{log}"
    );
    assert!(!log.contains("fenced"), "{log}");

    // Released: nothing of the call stays in the new primary.
    assert_eq!(api.delete("/v1/calls/sentinel-1").status, 200);
    assert!(
        eventually(Duration::from_secs(5), || !exists(
            &|a| replica.command(a),
            call_key
        ) && replica
            .keys("mcvr:call:*")
            .is_empty()),
        "the call's keys are gone: {:?}",
        replica.keys("mcvr:*")
    );
    let owned = replica
        .command(&["SCARD", "mcvr:owner:relay-a:calls"])
        .unwrap();
    assert!(
        owned.starts_with(b":0"),
        "{}",
        String::from_utf8_lossy(&owned)
    );
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}
