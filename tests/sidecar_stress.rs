//! The control API under stress, and call churn: 1,000 concurrent requests (good, malformed
//! and oversized) while 200 slow clients hold half-sent requests open; then create/answer/
//! release cycles through the API that must leave no port, file descriptor or memory behind.
//!
//! The churn runs 2,000 cycles by default; `MCVIDEO_CHURN_CYCLES=100000 cargo nextest run
//! --test sidecar_stress` is the long version (about two minutes in a debug build).
#![cfg(feature = "sidecar")]
#![allow(clippy::disallowed_methods)] // tests read the clock for their deadlines

mod sidecar_support;

use mcvideo_relay::sidecar::{Config, Settings, Sidecar};
use serde_json::{json, Value};
use sidecar_support::{create_body, Api, Client};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn start(port_min: u16, port_max: u16, max_body: usize) -> (Sidecar, Api) {
    let mut c = Config::embedded();
    c.api.listen = "127.0.0.1:0".parse().unwrap();
    c.api.max_body_bytes = max_body;
    c.media.port_min = port_min;
    c.media.port_max = port_max;
    c.media.workers = 1;
    let s = Sidecar::start(Settings::new(c)).expect("sidecar starts");
    let api = Api::new(s.local_addr(), None);
    (s, api)
}

/// `cargo test` runs the tests of one file on threads of one process, and some tests here
/// count the process's descriptors (and memory): they run one at a time (nextest runs each test
/// in a process of its own anyway).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn api_survives_concurrency_slow_clients_and_oversized_bodies() {
    let _serial = one_at_a_time();
    let (sc, api) = start(47_000, 47_099, 64 * 1024);
    // Slow clients: half a request each, then silence.
    let slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(api.addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    // 1,000 requests from 20 threads at once.
    let threads: Vec<_> = (0..20)
        .map(|t| {
            let api = Api::new(api.addr, None);
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                for i in 0..50 {
                    let (expect, r) = match (t + i) % 4 {
                        0 => (200, api.get("/healthz")),
                        1 => (200, api.get("/v1/calls")),
                        2 => (
                            400,
                            api.raw(
                                "POST",
                                "/v1/calls",
                                &[("content-type", "application/json")],
                                b"{\"caller\": ",
                            ),
                        ),
                        _ => (
                            413,
                            api.raw(
                                "POST",
                                "/v1/calls",
                                &[("content-type", "application/json")],
                                &vec![b' '; 128 * 1024],
                            ),
                        ),
                    };
                    seen.push((expect, r.status));
                }
                seen
            })
        })
        .collect();
    let mut answered = 0;
    for t in threads {
        for (expect, got) in t.join().unwrap() {
            assert_eq!(got, expect);
            answered += 1;
        }
    }
    assert_eq!(answered, 1_000);
    // The slow clients are still there; a real call still goes through.
    let client = Client::new();
    let r = api.post(
        "/v1/calls",
        &create_body("after-stress", "sip:a@x", "sip:b@x", &client.sdp("a", None)),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.post(
        "/v1/calls/after-stress/answer",
        &json!({"sdp_answer": client.sdp("b", None)}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.delete("/v1/calls/after-stress").status, 200);
    drop(slow);
    sc.shutdown();
}

/// HTTP/1.1 over one kept-alive connection (responses carry Content-Length).
struct KeepAlive {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl KeepAlive {
    fn new(addr: SocketAddr) -> KeepAlive {
        let w = TcpStream::connect(addr).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        KeepAlive { w, r }
    }

    fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: relay\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.w.write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut len = 0;
        loop {
            let mut h = String::new();
            self.r.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut b = vec![0; len];
        self.r.read_exact(&mut b).unwrap();
        (status, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap()
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn call_churn_leaves_no_port_descriptor_or_memory_behind() {
    let _serial = one_at_a_time();
    let cycles: usize = std::env::var("MCVIDEO_CHURN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let (sc, api) = start(47_200, 47_299, 256 * 1024);
    let mut http = KeepAlive::new(api.addr);
    let client = Client::new();
    let (offer, answer) = (client.sdp("a", Some(7)), client.sdp("b", None));
    let mut cycle = |i: usize| {
        let id = format!("churn-{i}");
        let (s, b) = http.call(
            "POST",
            "/v1/calls",
            Some(&create_body(&id, "sip:a@x", "sip:b@x", &offer)),
        );
        assert_eq!(s, 201, "{b}");
        let (s, b) = http.call(
            "POST",
            &format!("/v1/calls/{id}/answer"),
            Some(&json!({"sdp_answer": answer})),
        );
        assert_eq!(s, 200, "{b}");
        let (s, b) = http.call("DELETE", &format!("/v1/calls/{id}"), None);
        assert_eq!(s, 200, "{b}");
    };
    let settle = |sc: &Sidecar| {
        for _ in 0..100 {
            if sc.engine().stats().ports_in_use == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Warm up (allocator arenas, runtime internals), then measure.
    let warm = (cycles / 10).max(100);
    for i in 0..warm {
        cycle(i);
    }
    settle(&sc);
    let (fd0, rss0) = (fds(), rss_kib());
    let half = cycles / 2;
    for i in warm..warm + half {
        cycle(i);
    }
    settle(&sc);
    let rss_half = rss_kib();
    for i in warm + half..warm + cycles {
        cycle(i);
    }
    settle(&sc);
    let (fd1, rss1) = (fds(), rss_kib());
    let stats = sc.engine().stats();
    eprintln!(
        "churn: {cycles} cycles; fds {fd0} -> {fd1}; RSS {rss0} KiB -> {rss_half} KiB (half) -> {rss1} KiB; ports in use {}",
        stats.ports_in_use
    );
    assert_eq!(stats.ports_in_use, 0, "every port back in the pool");
    assert_eq!(stats.active_calls, 0);
    assert!(fd1 <= fd0, "descriptors: {fd0} before, {fd1} after");
    // A leak grows with the cycles: the second half may not add more than noise.
    let second_half = rss1.saturating_sub(rss_half);
    assert!(
        second_half < 4 * 1024,
        "RSS grew {second_half} KiB over the second {half} cycles"
    );
    sc.shutdown();
}
