//! Many concurrent calls on one engine, media through every one of them, then all released:
//! nothing is left behind (ports, descriptors, calls).
//!
//! By default 1,000 calls. The long run is `MCVIDEO_SCALE_CALLS=N cargo nextest run --release
//! --test scale_calls` (see BENCHMARKING.md). Every call holds two sockets (one per leg), so
//! N calls need an open-files limit above 2N: the test raises the soft limit to the hard limit
//! and, when even that is too low, fails saying so.
//!
//! Built with `--features alloc-mimalloc` or `alloc-jemalloc` the test runs on that allocator
//! (as the binary does); `MCVIDEO_SCALE_SETTLE_SECS=S` also reads the RSS again after the relay
//! sat idle S seconds with no call (allocators that return memory lazily).
#![cfg(feature = "relay")]
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // a test reads the clock

use mcvideo_relay::control::call::{AnswerCall, CreateCall};
use mcvideo_relay::control::MediaSecurity;
use mcvideo_relay::relay::{raise_open_files_limit, Engine, EngineConfig};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

#[cfg(feature = "alloc-mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(all(feature = "alloc-jemalloc", not(feature = "alloc-mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ALLOCATOR: &str = if cfg!(feature = "alloc-mimalloc") {
    "mimalloc"
} else if cfg!(feature = "alloc-jemalloc") {
    "jemalloc"
} else {
    "system (glibc)"
};

const DEFAULT_CALLS: usize = 1_000;
/// Sends in flight before the test waits for them at the callee (the callee socket's default
/// receive buffer holds a few hundred small datagrams).
const BATCH: usize = 64;

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn m_video(sdp: &str) -> SocketAddr {
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=video "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn sdp(port: u16, ssrc: u32, dir: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=video {port} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=rtcp-mux\r\na={dir}\r\n\
         a=ssrc:{ssrc} cname:scale\r\n"
    )
}

#[test]
fn many_concurrent_calls_then_all_released() {
    let n: usize = std::env::var("MCVIDEO_SCALE_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CALLS);
    let limit = raise_open_files_limit().unwrap();
    assert!(
        (2 * n + 64) as u64 <= limit,
        "{n} calls need {} descriptors (two sockets per call) but the open-files limit is \
         {limit}, and the hard limit cannot be raised from here",
        2 * n + 64
    );
    // Two port pairs per call; the default range stays clear of the other tests' ranges.
    let (port_min, port_max) = if n <= DEFAULT_CALLS {
        (32_000, 36_499)
    } else {
        (10_000, 59_999)
    };
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
    callee
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let (caller_port, callee_port) = (
        caller.local_addr().unwrap().port(),
        callee.local_addr().unwrap().port(),
    );
    // tokio's process-wide signal socket pair comes with the first runtime and stays: start
    // and stop an engine once so that it is counted before.
    Engine::start(EngineConfig {
        port_min,
        port_max,
        ..EngineConfig::default()
    })
    .unwrap()
    .shutdown();
    let fds_before = fd_count();
    let rss_before = rss_kib();
    let engine = Engine::start(EngineConfig {
        port_min,
        port_max,
        socket_buffer_bytes: 0,
        ..EngineConfig::default()
    })
    .unwrap();

    // Set up every call: offer, answer (no control channel: the grant is implicit).
    let t = Instant::now();
    let mut to_relay = Vec::with_capacity(n);
    for i in 0..n {
        let ssrc = 0x1000_0000 + i as u32;
        let offer = engine
            .create_call(CreateCall {
                call_id: Some(format!("s{i}").into()),
                caller_id: "sip:alice@example.org".into(),
                caller_sdp: sdp(caller_port, ssrc, "sendonly"),
                callee_id: "sip:bob@example.org".into(),
                video_push: true,
                video_pull: false,
                commencement_mode: None,
                media_security: MediaSecurity::EndToEnd,
                caller_tc_key: None,
                callee_interface: None,
                caller_interface: None,
            })
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(offer.call_id, format!("s{i}"));
        let answer = engine
            .accept_call(
                &offer.call_id,
                AnswerCall {
                    callee_sdp: sdp(callee_port, 0x2000_0000 + i as u32, "recvonly"),
                    callee_tc_key: None,
                },
            )
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        to_relay.push((m_video(&answer.sdp_answer), ssrc));
    }
    let setup = t.elapsed();
    let s = engine.stats();
    assert_eq!(s.active_calls, n);
    assert_eq!(s.ports_in_use, 2 * n, "two port pairs per call");
    let fds_peak = fd_count();
    let rss_peak = rss_kib();

    // One packet through every call, in batches, each one seen at the callee.
    let t = Instant::now();
    let mut seen = vec![false; n];
    let mut buf = [0u8; 1500];
    for (b, batch) in to_relay.chunks(BATCH).enumerate() {
        for (j, (dest, ssrc)) in batch.iter().enumerate() {
            let mut pkt = [0u8; 200];
            pkt[0] = 0x80;
            pkt[1] = 96 | 0x80;
            pkt[2..4].copy_from_slice(&1u16.to_be_bytes());
            pkt[8..12].copy_from_slice(&ssrc.to_be_bytes());
            pkt[12] = 0x65; // IDR slice
            pkt[13..17].copy_from_slice(&((b * BATCH + j) as u32).to_be_bytes());
            caller.send_to(&pkt, dest).unwrap();
        }
        let want = (b * BATCH)..(b * BATCH + batch.len());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen[want.clone()].iter().all(|s| *s) {
            assert!(
                Instant::now() < deadline,
                "calls {want:?}: {} of {} packets reached the callee",
                seen[want.clone()].iter().filter(|s| **s).count(),
                want.len()
            );
            let Ok((len, _)) = callee.recv_from(&mut buf) else {
                continue;
            };
            if len < 17 || buf[0] >> 6 != 2 || (buf[1] & 0x7f) != 96 {
                continue;
            }
            let i = u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]) as usize;
            let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
            assert!(i < n, "unknown payload {i}");
            assert_eq!(
                ssrc,
                0x1000_0000 + i as u32,
                "call {i} forwarded its own SSRC"
            );
            seen[i] = true;
        }
    }
    let media = t.elapsed();
    assert!(seen.iter().all(|s| *s));
    // The worker books its counters just after the send the callee already saw.
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.stats().callee.packets_out < n as u64 {
        assert!(
            Instant::now() < deadline,
            "{}",
            engine.stats().callee.packets_out
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    // Release every call; every port and descriptor comes back.
    let t = Instant::now();
    for i in 0..n {
        engine.release_call(&format!("s{i}")).unwrap();
    }
    let release = t.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.stats().ports_in_use > 0 {
        assert!(
            Instant::now() < deadline,
            "{} port pairs still held 30 s after release",
            engine.stats().ports_in_use
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = engine.stats();
    assert_eq!(s.active_calls, 0);
    assert_eq!(s.calls_released.get("released").copied(), Some(n as u64));
    assert!(engine.calls().is_empty());
    let fds_released = fd_count();
    let rss_released = rss_kib();
    let settle: u64 = std::env::var("MCVIDEO_SCALE_SETTLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if settle > 0 {
        eprintln!("released; idle {settle} s (pid {})", std::process::id());
        std::thread::sleep(Duration::from_secs(settle));
        eprintln!("RSS {} KiB after {settle} s idle with no call", rss_kib());
    }
    engine.shutdown();
    drop(engine);
    let fds_after = fd_count();
    // The engine's own handful (worker wakers, the event channel) go with it.
    assert!(
        fds_released <= fds_before + 16,
        "descriptors: {fds_before} before, {fds_peak} with {n} calls, {fds_released} after release"
    );
    assert!(fds_after <= fds_before, "{fds_after} > {fds_before}");
    eprintln!(
        "{ALLOCATOR}: {n} calls: setup {:.0} calls/s ({setup:?}), one packet through each in {media:?}, \
         release {:.0} calls/s; descriptors {fds_before} -> {fds_peak} -> {fds_released} \
         (engine stopped: {fds_after}); RSS {rss_before} -> {rss_peak} -> {rss_released} KiB \
         ({:.1} KiB per call)",
        n as f64 / setup.as_secs_f64(),
        n as f64 / release.as_secs_f64(),
        (rss_peak.saturating_sub(rss_before)) as f64 / n as f64,
    );
}
