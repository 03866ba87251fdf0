//! `loadgen --group-receivers` end to end, in process: 2 group calls of 1 transmitter to 5
//! receivers through an in-process engine, paced, at a low rate, in end_to_end (one group
//! key) and per_leg (the relay re-encrypts per receiver) SRTP, with the floor (the
//! transmitter sending to its receivers itself) first. Every packet sent must reach every
//! receiver, with the latency figures and the CPU per delivered packet in the JSON.
//!
//! Ports 31400–31599 (no other test uses them).
#![cfg(feature = "loadgen")]
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::process::ExitCode;

const GROUPS: u64 = 2;
const RECEIVERS: u64 = 5;
const RATE: f64 = 400.0;

fn run(name: &str, args: &[&str]) -> Value {
    let path = std::env::temp_dir().join(format!(
        "loadgen-group-smoke-{}-{name}.json",
        std::process::id()
    ));
    let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    v.extend([
        "--json".into(),
        path.display().to_string(),
        "--quiet".into(),
    ]);
    let code = mcvideo_relay::loadgen::run(&v);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", ExitCode::SUCCESS),
        "loadgen {args:?} failed: {text}"
    );
    serde_json::from_str(&text).unwrap()
}

/// Every packet to every receiver, latency figures in order, CPU per delivered packet.
fn check_phase(p: &Value, mode: &str) {
    assert_eq!(p["mode"], mode, "{p}");
    assert_eq!(p["calls"], GROUPS, "{p}");
    assert_eq!(p["receivers_per_packet"], RECEIVERS, "{p}");
    let (sent, delivered) = (
        p["sent"].as_u64().unwrap(),
        p["delivered"].as_u64().unwrap(),
    );
    // The senders may fall behind on a loaded machine; what they sent must all arrive.
    assert!(sent as f64 > RATE * 0.5, "{mode}: only {sent} sent: {p}");
    assert_eq!(
        delivered,
        sent * RECEIVERS,
        "{mode}: delivered = sent x receivers: {p}"
    );
    assert_eq!(p["expected_deliveries"], sent * RECEIVERS);
    assert_eq!(p["received"], delivered);
    assert_eq!(p["lost"], 0, "{mode}: {p}");
    assert_eq!(p["receivers_with_loss"], 0, "{mode}: {p}");
    for k in [
        "duplicates",
        "decrypt_failures",
        "malformed",
        "send_failures",
    ] {
        assert_eq!(p[k], 0, "{mode}: {k}: {p}");
    }
    assert_eq!(p["reached_every_receiver"], sent, "{mode}: {p}");
    // Loss per receiver: every receiver of every group, each with its group's packets.
    let per = p["per_receiver"].as_array().unwrap();
    assert_eq!(per.len() as u64, GROUPS * RECEIVERS, "{mode}: {p}");
    for (i, r) in per.iter().enumerate() {
        assert_eq!(r["receiver"], i as u64);
        assert_eq!(r["group"], i as u64 / RECEIVERS);
        assert_eq!(r["lost"], 0, "{mode}: {r}");
        assert_eq!(r["loss_pct"], 0.0, "{mode}: {r}");
        assert_eq!(r["received"], r["sent"], "{mode}: {r}");
    }
    let by_group: u64 = per.iter().map(|r| r["sent"].as_u64().unwrap()).sum();
    assert_eq!(by_group, sent * RECEIVERS, "{mode}");
    for key in ["latency_us", "last_receiver_latency_us"] {
        let lat = &p[key];
        for q in ["p50", "p90", "p99", "p99_9", "max"] {
            assert!(lat[q].as_f64().unwrap() > 0.0, "{mode}: {key}.{q}: {lat}");
        }
        assert!(lat["p50"].as_f64().unwrap() <= lat["p99_9"].as_f64().unwrap());
        assert!(lat["p99_9"].as_f64().unwrap() <= lat["max"].as_f64().unwrap());
        assert!(lat["p50"].as_f64().unwrap() < 50_000.0, "{mode}: {lat}");
    }
    assert_eq!(p["latency_us"]["count"], delivered);
    assert_eq!(p["last_receiver_latency_us"]["count"], sent);
    // The last receiver's latency is the latest of the packet's deliveries.
    assert!(
        p["last_receiver_latency_us"]["p50"].as_f64().unwrap()
            >= p["latency_us"]["p50"].as_f64().unwrap()
    );
    let cpu = p["fanout_cpu_us_per_delivered"].as_f64().unwrap();
    assert!(cpu > 0.0 && cpu < 10_000.0, "{mode}: {cpu}");
}

fn group_run(security: &str, ports: &str) {
    let g = GROUPS.to_string();
    let n = RECEIVERS.to_string();
    let rate = RATE.to_string();
    let v = run(
        security,
        &[
            "--engine",
            "--ports",
            ports,
            "--group-receivers",
            &n,
            "--calls",
            &g,
            "--rate",
            &rate,
            "--security",
            security,
            "--duration",
            "1.5",
            "--warmup",
            "0.3",
            "--per-call",
        ],
    );
    assert_eq!(v["config"]["group_receivers"], RECEIVERS);
    assert_eq!(v["config"]["pattern"], "paced");
    assert_eq!(v["config"]["packet_size"], 1200);
    assert_eq!(v["config"]["srtp"], security);
    assert_eq!(v["relay"]["kind"], "engine");
    assert_eq!(v["setup"]["established"], GROUPS);
    assert_eq!(v["teardown"]["released"], GROUPS);
    assert_eq!(v["teardown"]["failed"], 0);
    let step = &v["runs"][0];
    check_phase(&step["floor"], "floor");
    check_phase(&step["relay"], "relay");
    assert!(step["floor"]["fanout_cpu_source"]
        .as_str()
        .unwrap()
        .contains("sender"));
    assert!(step["relay"]["fanout_cpu_source"]
        .as_str()
        .unwrap()
        .contains("worker"));
    let relay_cpu = step["relay"]["relay_cpu_us_per_packet"].as_f64().unwrap();
    assert!(relay_cpu > 0.0, "relay CPU per delivered packet: {step}");
    for key in ["added_latency_us", "added_last_receiver_latency_us"] {
        for q in ["p50", "p99_9"] {
            assert!(step[key][q].is_number(), "{key}.{q}: {step}");
        }
    }
    eprintln!(
        "{security}: relay CPU {relay_cpu} µs/delivered, last receiver p50 {} µs (floor {} µs)",
        step["relay"]["last_receiver_latency_us"]["p50"],
        step["floor"]["last_receiver_latency_us"]["p50"]
    );
}

#[test]
fn group_fan_out_end_to_end() {
    group_run("end_to_end", "31400-31499");
}

#[test]
fn group_fan_out_per_leg() {
    group_run("per_leg", "31500-31599");
}

#[test]
fn group_arguments_are_checked() {
    for bad in [
        vec!["--group-receivers", "0"],
        vec!["--group-receivers", "64"],
        vec!["--group-receivers", "5", "--spawn-relay"],
        vec!["--group-receivers", "5", "--setup-only"],
    ] {
        let args: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
        let code = mcvideo_relay::loadgen::run(&args);
        assert_eq!(
            format!("{code:?}"),
            format!("{:?}", ExitCode::from(2)),
            "{bad:?}"
        );
    }
}
