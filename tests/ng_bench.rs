//! `offer` + `answer` + `delete` per second over ng (UDP, one request at a time) against the
//! same three steps over the HTTP API (one keep-alive connection), on one in-process relay.
//! Ignored by default (a measurement, not a check):
//!
//! `cargo test --release --test ng_bench -- --ignored --nocapture`
#![cfg(feature = "sidecar")]
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

mod ng_support;
mod sidecar_support;

use mcvideo_relay::sidecar::{Config, Settings, Sidecar};
use ng_support::{d, s, Ng};
use sidecar_support::{create_body, Client};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const CALLS: usize = 2000;
const ROUNDS: usize = 10;

/// A keep-alive HTTP/1.1 client for the JSON API.
struct KeepAlive {
    w: TcpStream,
    r: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl KeepAlive {
    fn new(addr: SocketAddr) -> KeepAlive {
        let w = TcpStream::connect(addr).unwrap();
        w.set_nodelay(true).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        KeepAlive { w, r, addr }
    }

    fn req(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        self.w.write_all(head.as_bytes()).unwrap();
        self.w.write_all(body.as_bytes()).unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut len = 0usize;
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut b = vec![0u8; len];
        self.r.read_exact(&mut b).unwrap();
        (status, String::from_utf8(b).unwrap())
    }
}

fn relay() -> Sidecar {
    let mut c = Config::embedded();
    c.api.listen = "127.0.0.1:0".parse().unwrap();
    c.ng.listen = "127.0.0.1:0".into();
    c.media.port_min = 54_000;
    c.media.port_max = 59_999;
    c.media.workers = 1;
    c.log.level = "warn".parse().unwrap();
    Sidecar::start(Settings::new(c)).expect("relay starts")
}

fn rate(n: usize, t: Duration) -> f64 {
    n as f64 / t.as_secs_f64()
}

#[test]
#[ignore = "a measurement: cargo test --release --test ng_bench -- --ignored --nocapture"]
fn offer_answer_delete_per_second_ng_vs_http() {
    let sc = relay();
    let caller = Client::new();
    let callee = Client::new();
    let offer_sdp = caller.sdp("alice", None);
    let answer_sdp = callee.sdp("bob", None);

    let ng = Ng::new(sc.ng_addr().unwrap());
    let mut http = KeepAlive::new(sc.local_addr());
    let answer_body = serde_json::json!({ "sdp_answer": answer_sdp }).to_string();
    // Interleaved rounds, so that the machine's noise falls on both alike.
    let (mut ng_time, mut http_time) = (Duration::ZERO, Duration::ZERO);
    for round in 0..ROUNDS {
        let t = Instant::now();
        for i in round * CALLS / ROUNDS..(round + 1) * CALLS / ROUNDS {
            let id = format!("bench-{i}@sip.example");
            let o = ng.request(
                &format!("o{i}"),
                &d(&[
                    ("command", s("offer")),
                    ("call-id", s(&id)),
                    ("from-tag", s("ft")),
                    ("sdp", s(&offer_sdp)),
                ]),
            );
            assert_eq!(o.str("result").as_deref(), Some("ok"), "{o:?}");
            let a = ng.request(
                &format!("a{i}"),
                &d(&[
                    ("command", s("answer")),
                    ("call-id", s(&id)),
                    ("from-tag", s("ft")),
                    ("to-tag", s("tt")),
                    ("sdp", s(&answer_sdp)),
                ]),
            );
            assert_eq!(a.str("result").as_deref(), Some("ok"), "{a:?}");
            let x = ng.request(
                &format!("d{i}"),
                &d(&[("command", s("delete")), ("call-id", s(&id))]),
            );
            assert_eq!(x.str("result").as_deref(), Some("ok"), "{x:?}");
        }
        ng_time += t.elapsed();
        let t = Instant::now();
        for i in round * CALLS / ROUNDS..(round + 1) * CALLS / ROUNDS {
            let id = format!("bench-{i}");
            let body = create_body(&id, "sip:alice@x", "sip:bob@x", &offer_sdp).to_string();
            let (st, b) = http.req("POST", "/v1/calls", &body);
            assert_eq!(st, 201, "{b}");
            let (st, b) = http.req("POST", &format!("/v1/calls/{id}/answer"), &answer_body);
            assert_eq!(st, 200, "{b}");
            let (st, b) = http.req("DELETE", &format!("/v1/calls/{id}"), "");
            assert_eq!(st, 200, "{b}");
        }
        http_time += t.elapsed();
        // Ports come back when a released call's tasks have stopped: start each round clean.
        let engine = sc.engine().clone();
        sidecar_support::eventually(Duration::from_secs(10), move || {
            engine.stats().ports_in_use == 0
        });
    }
    println!(
        "offer+answer+delete, {CALLS} calls one after another: ng (UDP) {:.0} calls/s \
         ({:.0} us per call), HTTP API (keep-alive) {:.0} calls/s ({:.0} us per call)",
        rate(CALLS, ng_time),
        ng_time.as_micros() as f64 / CALLS as f64,
        rate(CALLS, http_time),
        http_time.as_micros() as f64 / CALLS as f64,
    );
    assert_eq!(sc.engine().stats().active_calls, 0);

    // The protocols alone (no engine work): ng `ping` against `GET /healthz`.
    const PINGS: usize = 20_000;
    let (mut ng_ping, mut http_ping) = (Duration::ZERO, Duration::ZERO);
    for round in 0..ROUNDS {
        let t = Instant::now();
        for i in round * PINGS / ROUNDS..(round + 1) * PINGS / ROUNDS {
            let r = ng.request(&format!("p{i}"), &d(&[("command", s("ping"))]));
            assert_eq!(r.str("result").as_deref(), Some("pong"));
        }
        ng_ping += t.elapsed();
        let t = Instant::now();
        for _ in 0..PINGS / ROUNDS {
            assert_eq!(http.req("GET", "/healthz", "").0, 200);
        }
        http_ping += t.elapsed();
    }
    println!(
        "round trips without engine work: ng ping {:.0}/s ({:.0} us), HTTP GET /healthz {:.0}/s \
         ({:.0} us)",
        rate(PINGS, ng_ping),
        ng_ping.as_micros() as f64 / PINGS as f64,
        rate(PINGS, http_ping),
        http_ping.as_micros() as f64 / PINGS as f64,
    );
    sc.shutdown();
}
