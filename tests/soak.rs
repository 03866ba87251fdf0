//! Soak: a relay in its own process (`mcvideo-relay serve`, spawned by the load generator)
//! carries a steady packet rate through many calls with **zero** loss, reordering or
//! duplication, and releases every call at the end.
//!
//! By default a short run that fits CI: 20 calls at 1,000 packets/s for 3 s. The documented
//! soak (BENCHMARKING.md) is 10 minutes at 50,000 packets/s through 100 calls, on a release
//! build:
//!
//! ```text
//! MCVIDEO_SOAK_SECS=600 MCVIDEO_SOAK_RATE=50000 MCVIDEO_SOAK_CALLS=100 \
//!     cargo nextest run --release --features loadgen --test soak --no-capture
//! ```
#![cfg(feature = "loadgen")]
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::process::ExitCode;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn steady_rate_through_a_relay_process_loses_nothing() {
    let secs = env("MCVIDEO_SOAK_SECS", 3);
    let rate = env("MCVIDEO_SOAK_RATE", 1_000);
    let calls = env("MCVIDEO_SOAK_CALLS", 20);
    let json = std::env::temp_dir().join(format!("soak-{}.json", std::process::id()));
    let args: Vec<String> = [
        "--spawn-relay",
        "--relay-bin",
        env!("CARGO_BIN_EXE_mcvideo-relay"),
        "--ports",
        "30000-30999",
        "--calls",
        &calls.to_string(),
        "--rate",
        &rate.to_string(),
        "--duration",
        &secs.to_string(),
        "--warmup",
        "0.5",
        "--no-floor",
        "--json",
        &json.display().to_string(),
        "--quiet",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let code = mcvideo_relay::loadgen::run(&args);
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", ExitCode::SUCCESS),
        "loadgen failed: {text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["setup"]["established"], calls, "{}", v["setup"]);
    assert_eq!(v["teardown"]["released"], calls, "{}", v["teardown"]);
    assert_eq!(v["teardown"]["failed"], 0);
    let p = &v["runs"][0]["relay"];
    let (sent, received) = (p["sent"].as_u64().unwrap(), p["received"].as_u64().unwrap());
    // The warm-up's packets are not counted: at least 90% of rate × duration.
    assert!(
        sent as f64 >= 0.9 * (rate * secs) as f64,
        "offered {rate} pps for {secs} s but sent {sent}"
    );
    for key in [
        "lost",
        "reordered",
        "duplicates",
        "send_failures",
        "decrypt_failures",
    ] {
        assert_eq!(p[key], 0, "{key}: {p}");
    }
    assert_eq!(received, sent, "{p}");
    eprintln!(
        "soak: {calls} calls, {rate} pps, {secs} s: sent {sent}, received {received}, 0 lost; \
         relay CPU {} µs/packet; one-way latency {}",
        p["relay_cpu_us_per_packet"], p["latency_us"]
    );
}
