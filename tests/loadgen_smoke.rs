//! `loadgen` end to end, in process: 10 calls at 2000 pps through an in-process engine (with the
//! floor measured first), the floor alone (`--direct`), and a short per-leg SRTP run; each writes
//! its JSON to a temporary file and the figures must be plausible. Paced senders through the
//! minimal forwarder (this package's binary, `minimal-forwarder`) alone and next to the engine.
#![cfg(feature = "loadgen")]
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::process::ExitCode;

fn run(name: &str, args: &[&str]) -> Value {
    let path =
        std::env::temp_dir().join(format!("loadgen-smoke-{}-{name}.json", std::process::id()));
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

/// Checks one phase's figures and returns its p50 in µs.
fn check_phase(p: &Value, mode: &str, rate: f64) -> f64 {
    assert_eq!(p["mode"], mode);
    for key in [
        "offered_pps",
        "achieved_pps",
        "received_pps",
        "sent",
        "received",
        "lost",
        "loss_pct",
        "reordered",
        "duplicates",
        "send_failures",
        "decrypt_failures",
        "latency_us",
        "cpu",
    ] {
        assert!(p.get(key).is_some(), "{mode}: no `{key}` in {p}");
    }
    let (sent, received) = (p["sent"].as_u64().unwrap(), p["received"].as_u64().unwrap());
    assert!(received > 0, "{mode}: nothing received: {p}");
    assert!(received <= sent, "{mode}: {p}");
    let achieved = p["achieved_pps"].as_f64().unwrap();
    assert!(
        achieved > rate * 0.8 && achieved < rate * 1.2,
        "{mode}: achieved {achieved} pps for {rate} offered"
    );
    assert!(p["loss_pct"].as_f64().unwrap() < 2.0, "{mode}: loss: {p}");
    assert_eq!(p["decrypt_failures"], 0, "{mode}: {p}");
    assert_eq!(p["duplicates"], 0, "{mode}: {p}");
    let lat = &p["latency_us"];
    for q in ["p50", "p90", "p99", "p99_9", "max"] {
        assert!(lat[q].as_f64().unwrap() > 0.0, "{mode}: {q}: {lat}");
    }
    assert!(lat["p50"].as_f64().unwrap() <= lat["p99"].as_f64().unwrap());
    assert!(lat["p99"].as_f64().unwrap() <= lat["max"].as_f64().unwrap());
    // Generous: a loaded CI machine, a debug build.
    assert!(lat["p50"].as_f64().unwrap() < 50_000.0, "{mode}: {lat}");
    assert!(!p["cpu"].as_array().unwrap().is_empty());
    lat["p50"].as_f64().unwrap()
}

#[test]
fn engine_direct_and_per_leg_srtp() {
    let base = [
        "--calls",
        "10",
        "--rate",
        "2000",
        "--duration",
        "2",
        "--warmup",
        "0.5",
    ];

    // Relay (in-process engine), the floor first: both phases and the difference.
    let mut args = vec!["--engine", "--ports", "31000-31099"];
    args.extend(base);
    let v = run("engine", &args);
    assert_eq!(v["relay"]["kind"], "engine");
    assert_eq!(v["config"]["calls"], 10);
    assert_eq!(v["setup"]["established"], 10);
    assert_eq!(v["teardown"]["released"], 10);
    assert_eq!(v["teardown"]["failed"], 0);
    let step = &v["runs"][0];
    let floor_p50 = check_phase(&step["floor"], "floor", 2000.0);
    let relay_p50 = check_phase(&step["relay"], "relay", 2000.0);
    let added = step["added_latency_us"]["p50"].as_f64().unwrap();
    assert!((added - (relay_p50 - floor_p50)).abs() < 0.1, "{step}");
    let relay_cpu = step["relay"]["relay_cpu_us_per_packet"].as_f64().unwrap();
    assert!((0.0..10_000.0).contains(&relay_cpu), "{relay_cpu}");
    assert!(step["relay"]["relay_cpu_source"]
        .as_str()
        .unwrap()
        .contains("worker"));
    eprintln!(
        "engine: floor p50 {floor_p50} µs, relay p50 {relay_p50} µs, relay CPU {relay_cpu} µs/packet"
    );

    // The floor alone.
    let mut args = vec!["--direct"];
    args.extend(base);
    let v = run("direct", &args);
    assert_eq!(v["relay"]["kind"], "none");
    assert!(v["runs"][0]["relay"].is_null());
    assert!(v["setup"].is_null());
    check_phase(&v["runs"][0]["floor"], "floor", 2000.0);

    // Per-leg SRTP through the engine, relay only: the callee decrypts with the relay's key.
    let v = run(
        "per-leg",
        &[
            "--engine",
            "--ports",
            "31100-31199",
            "--srtp",
            "per_leg",
            "--no-floor",
            "--calls",
            "10",
            "--rate",
            "2000",
            "--duration",
            "1",
            "--warmup",
            "0.3",
        ],
    );
    assert_eq!(v["config"]["srtp"], "per_leg");
    assert!(v["runs"][0]["floor"].is_null());
    check_phase(&v["runs"][0]["relay"], "relay", 2000.0);
    assert_eq!(v["teardown"]["released"], 10);
}

/// The minimal forwarder is this package's binary (the test binary is not).
const BIN: &str = env!("CARGO_BIN_EXE_mcvideo-relay");

/// Zero loss, and the forwarding process's CPU figure present.
fn check_forwarded(p: &Value, mode: &str, cpu_source: &str) {
    check_phase(p, mode, 2000.0);
    assert_eq!(p["lost"], 0, "{mode}: {p}");
    assert_eq!(p["reordered"], 0, "{mode}: {p}");
    let cpu = p["relay_cpu_us_per_packet"].as_f64().unwrap();
    assert!((0.0..10_000.0).contains(&cpu), "{mode}: {cpu}");
    assert!(
        p["relay_cpu_source"].as_str().unwrap().contains(cpu_source),
        "{mode}: {p}"
    );
}

#[test]
fn paced_through_the_minimal_forwarder() {
    let v = run(
        "forwarder",
        &[
            "--forwarder",
            "--forwarder-bin",
            BIN,
            "--pattern",
            "paced",
            "--calls",
            "4",
            "--rate",
            "2000",
            "--duration",
            "1",
            "--warmup",
            "0.3",
        ],
    );
    assert_eq!(v["relay"]["kind"], "forwarder");
    assert_eq!(v["config"]["pattern"], "paced");
    assert_eq!(v["config"]["one_sendmsg_per_packet"], true);
    assert!(v["forwarder"]["pid"].as_u64().unwrap() > 0);
    let step = &v["runs"][0];
    check_phase(&step["floor"], "floor", 2000.0);
    assert_eq!(step["floor"]["lost"], 0);
    check_forwarded(&step["forwarder"], "forwarder", "minimal forwarder");
    assert!(step["relay"].is_null());
    assert!(step["forwarder_added_latency_us"]["p50"].is_number());
    assert!(step["relay_vs_forwarder"].is_null());
}

#[test]
fn paced_engine_against_the_minimal_forwarder() {
    let v = run(
        "compare-forwarder",
        &[
            "--engine",
            "--ports",
            "31200-31299",
            "--compare-forwarder",
            "--forwarder-bin",
            BIN,
            "--pattern",
            "paced",
            "--calls",
            "4",
            "--rate",
            "2000",
            "--duration",
            "1",
            "--warmup",
            "0.3",
        ],
    );
    assert_eq!(v["relay"]["kind"], "engine");
    assert_eq!(v["config"]["compare_forwarder"], true);
    let step = &v["runs"][0];
    check_phase(&step["floor"], "floor", 2000.0);
    check_forwarded(&step["forwarder"], "forwarder", "minimal forwarder");
    check_forwarded(&step["relay"], "relay", "worker");
    for key in ["added_latency_us", "forwarder_added_latency_us"] {
        for q in ["p50", "p99", "p99_9"] {
            assert!(step[key][q].is_number(), "{key}.{q}: {step}");
        }
    }
    let vs = &step["relay_vs_forwarder"];
    let ratio = vs["cpu_ratio"].as_f64().unwrap();
    let (r, f) = (
        vs["relay_cpu_us_per_packet"].as_f64().unwrap(),
        vs["forwarder_cpu_us_per_packet"].as_f64().unwrap(),
    );
    assert!(f > 0.0 && ratio > 0.0, "{vs}");
    assert!((ratio - r / f).abs() < 0.01 * ratio + 0.01, "{vs}");
    assert_eq!(v["teardown"]["released"], 4);
}

#[test]
fn bad_arguments_are_refused() {
    let code = mcvideo_relay::loadgen::run(&["--calls".to_string(), "zero".to_string()]);
    assert_eq!(format!("{code:?}"), format!("{:?}", ExitCode::from(2)));
}
