//! The built binary as an operator runs it: `mcvideo-relay serve` as a process, driven over
//! HTTP; ffmpeg video pushed through it (as in interop_ffmpeg.rs); SIGTERM with live calls;
//! `check-config` and the command line.
//!
//! Needs `ffmpeg` and `ffprobe` (Debian: `apt-get install ffmpeg`).
#![cfg(feature = "sidecar")]
#![allow(clippy::disallowed_methods)] // tests read the clock for their deadlines

mod common;
mod sidecar_support;

use common::ffmpeg::{
    frames, port_pair, require, send, spawn_receiver, tmpdir, video_sdp, FRAMES, SENDER_KEY, SSRC,
};

use serde_json::json;
use sidecar_support::{create_body, eventually, names, relay_video_addr, Api, Client, Metrics};

use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mcvideo-relay");
const TOKEN: &str = "process-test-token-7c1e";
const SEC: Duration = Duration::from_secs(1);

/// `mcvideo-relay serve` as a child process.
struct Relay {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Relay {
    fn spawn(args: &[&str]) -> Relay {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(args)
            .env("MCVIDEO_RELAY_API_TOKEN", TOKEN)
            .env_remove("RUST_LOG");
        let p = sidecar_support::ServeProcess::start(cmd, "serve");
        Relay {
            child: p.child,
            addr: p.addr,
            stderr: p.stderr,
        }
    }

    fn api(&self) -> Api {
        Api::new(self.addr, Some(TOKEN))
    }

    fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `kill -TERM <pid>`, then waits (at most 20 s) for the exit.
    fn terminate(&mut self) -> ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the relay did not exit after SIGTERM; stderr:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn crypto_key(sdp: &str) -> String {
    sdp.lines()
        .find_map(|l| l.split("inline:").nth(1))
        .map(|k| k.split(['|', ' ']).next().unwrap().trim().to_owned())
        .expect("an a=crypto line")
}

#[test]
fn serve_pushes_ffmpeg_video_end_to_end_and_counts_it() {
    require("ffmpeg");
    require("ffprobe");
    let dir = tmpdir("ffmpeg");
    // Inactivity well past the 5 s push: the call is released by DELETE, not by a timer.
    std::fs::write(
        dir.join("relay.toml"),
        "[transmission_control]\nmedia_inactivity_secs = 60\n[media]\nworkers = 1\n",
    )
    .unwrap();
    let config = dir.join("relay.toml");
    let mut relay = Relay::spawn(&[
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--ports",
        "48000-48199",
    ]);
    let api = relay.api();
    let events = api.events();
    let before = api.metrics();

    let (caller_port, _c1, _c2) = port_pair();
    let r = api.post(
        "/v1/calls",
        &create_body(
            "ffmpeg-push",
            "sip:camera@mcx.example",
            "sip:viewer@mcx.example",
            &video_sdp("camera", caller_port, SENDER_KEY, Some(SSRC)),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let offer = r.json();
    let receiver_key = crypto_key(offer["sdp_offer"].as_str().unwrap());
    assert_eq!(receiver_key, SENDER_KEY, "end_to_end: keys pass through");

    let (recv_port, r1, r2) = port_pair();
    let recv_sdp = video_sdp("viewer", recv_port, &receiver_key, None);
    let r = api.post(
        "/v1/calls/ffmpeg-push/answer",
        &json!({ "sdp_answer": recv_sdp }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let to_caller = relay_video_addr(r.json()["sdp_answer"].as_str().unwrap());
    std::fs::write(dir.join("recv.sdp"), &recv_sdp).unwrap();
    drop((r1, r2));
    let out = dir.join("out.mkv");
    let receiver = spawn_receiver(&dir.join("recv.sdp"), &out);
    std::thread::sleep(Duration::from_millis(700));
    // While the push runs, the call's quality shows the stream live (its rates go to 0 once the
    // stream is quiet): the highest bitrate and frame rate seen by polling.
    let pushing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let poller = {
        let (api, pushing) = (api.clone(), Arc::clone(&pushing));
        std::thread::spawn(move || {
            let (mut bitrate, mut frame_rate) = (0u64, 0f64);
            while pushing.load(std::sync::atomic::Ordering::Relaxed) {
                let q = api.get("/v1/calls/ffmpeg-push").json()["quality"][0]["caller"].clone();
                bitrate = bitrate.max(q["bitrate_bps"].as_u64().unwrap_or(0));
                frame_rate = frame_rate.max(q["frame_rate"].as_f64().unwrap_or(0.0));
                std::thread::sleep(Duration::from_millis(200));
            }
            (bitrate, frame_rate)
        })
    };
    let sender = send(to_caller);
    pushing.store(false, std::sync::atomic::Ordering::Relaxed);
    let (live_bitrate, live_frame_rate) = poller.join().expect("quality poller");
    assert!(
        sender.status.success(),
        "sender: {}",
        String::from_utf8_lossy(&sender.stderr)
    );
    assert!(live_bitrate > 0, "bitrate_bps while pushing");
    assert!(live_frame_rate > 0.0, "frame_rate while pushing");
    let received = receiver.wait_with_output().expect("receiver exits");
    assert!(
        received.status.success(),
        "receiver: {}",
        String::from_utf8_lossy(&received.stderr)
    );
    assert_eq!(frames(&out), FRAMES, "every frame decodes after the relay");

    let live = api.get("/v1/calls/ffmpeg-push").json();
    assert_eq!(live["state"], "established", "{live}");
    assert_eq!(live["transmission"], "granted");
    // The caller's stream as the relay measured it: every packet, every frame, nothing lost.
    let q = &live["quality"][0];
    assert_eq!(q["kind"], "video", "{live}");
    let caller_q = &q["caller"];
    assert!(caller_q["packets"].as_u64().unwrap() > 100, "{caller_q}");
    assert!(caller_q["frames"].as_u64().unwrap() > 100, "{caller_q}");
    assert_eq!(caller_q["lost"], 0, "{caller_q}");
    assert!(
        caller_q["jitter_ms"].as_f64().unwrap().is_finite(),
        "{caller_q}"
    );

    // Release: the final statistics.
    let r = api.delete("/v1/calls/ffmpeg-push");
    assert_eq!(r.status, 200, "{}", r.body);
    let fin = r.json();
    assert_eq!(fin["release_reason"], "released");
    let caller_in = fin["caller"]["packets_in"].as_u64().unwrap();
    let caller_bytes = fin["caller"]["bytes_in"].as_u64().unwrap();
    let callee_out = fin["callee"]["packets_out"].as_u64().unwrap();
    let callee_bytes = fin["callee"]["bytes_out"].as_u64().unwrap();
    assert!(callee_out >= u64::from(FRAMES), "{fin}");
    assert!(caller_in >= callee_out, "{fin}");
    assert_eq!(fin["caller"]["drops"]["auth_failure"], 0);
    assert!(
        fin["caller"]["latches"].as_u64().unwrap() >= 1,
        "latched by the announced SSRC"
    );

    let evs = events.until_released("ffmpeg-push", 5 * SEC);
    assert_eq!(
        names(&evs),
        [
            "call.progress",
            "call.established",
            "transmission.granted",
            "transmission.media_started",
            "transmission.ended",
            "call.released"
        ],
        "{evs:?}"
    );
    assert_eq!(evs[2].data["video_ssrc"], SSRC);
    assert_eq!(evs[5].data["reason"], "released");

    // Metrics moved by exactly this call.
    let mut after = Metrics(String::new());
    let settled = eventually(5 * SEC, || {
        after = api.metrics();
        after.get("mcvideo_relay_port_pairs_in_use") == 0.0
            && after.get(r#"mcvideo_relay_packets_total{party="caller",direction="in"}"#)
                - before.get(r#"mcvideo_relay_packets_total{party="caller",direction="in"}"#)
                == caller_in as f64
    });
    assert!(settled, "{}", after.0);
    let d = |k: &str| after.get(k) - before.get(k);
    assert_eq!(d("mcvideo_relay_calls_created_total"), 1.0);
    assert_eq!(
        d(r#"mcvideo_relay_calls_released_total{reason="released"}"#),
        1.0
    );
    assert_eq!(after.get("mcvideo_relay_calls_active"), 0.0);
    assert_eq!(
        d(r#"mcvideo_relay_bytes_total{party="caller",direction="in"}"#),
        caller_bytes as f64
    );
    assert_eq!(
        d(r#"mcvideo_relay_packets_total{party="callee",direction="out"}"#),
        callee_out as f64
    );
    assert_eq!(
        d(r#"mcvideo_relay_bytes_total{party="callee",direction="out"}"#),
        callee_bytes as f64
    );
    assert_eq!(
        d(r#"mcvideo_relay_dropped_packets_total{party="caller",reason="auth_failure"}"#),
        0.0
    );
    assert_eq!(
        after.get(
            r#"mcvideo_relay_api_requests_total{route="/v1/calls",method="POST",status="201"}"#
        ),
        1.0
    );

    let status = relay.terminate();
    assert_eq!(status.code(), Some(0), "{}", relay.logs());
    let logs = relay.logs();
    assert!(!logs.contains(TOKEN), "the token is never logged");
    assert!(!logs.contains(SENDER_KEY), "SDES keys are never logged");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigterm_releases_live_calls_with_reason_shutdown_and_exits_0() {
    let mut relay = Relay::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--ports",
        "48200-48239",
        "--log-format",
        "json",
    ]);
    let api = relay.api();
    let events = api.events();
    let caller = Client::new();
    let callee = Client::new();
    for id in ["live-offered", "live-established"] {
        let r = api.post(
            "/v1/calls",
            &create_body(
                id,
                "sip:a@x.example",
                "sip:b@x.example",
                &caller.sdp("a", None),
            ),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = api.post(
        "/v1/calls/live-established/answer",
        &json!({"sdp_answer": callee.sdp("b", None)}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    let status = relay.terminate();
    let mut released = Vec::new();
    let mut ended = false;
    while let Some(ev) = events.next(5 * SEC) {
        if ev.name == "<end of stream>" {
            ended = true;
            break;
        }
        if ev.name == "call.released" {
            released.push((
                ev.data["call_id"].as_str().unwrap().to_owned(),
                ev.data["reason"].as_str().unwrap().to_owned(),
            ));
        }
    }
    released.sort();
    assert_eq!(
        released,
        [
            ("live-established".to_owned(), "shutdown".to_owned()),
            ("live-offered".to_owned(), "shutdown".to_owned())
        ],
        "{}",
        relay.logs()
    );
    assert!(ended, "the event stream ends after the last release");
    assert_eq!(status.code(), Some(0), "{}", relay.logs());

    // JSON logs: one object per line, the startup and shutdown story told.
    let logs = relay.logs();
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    for needle in [
        "no authorization policy configured",
        "control API requires a bearer token",
        "SIGTERM received",
        "\"reason\":\"shutdown\"",
        "stopped",
    ] {
        assert!(logs.contains(needle), "{needle} not in:\n{logs}");
    }
    assert!(!logs.contains(TOKEN));
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("MCVIDEO_RELAY_API_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn command_line_and_check_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/config.example.toml");
    let (code, out, err) = run(&["check-config", example]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.trim_end().ends_with(": OK"), "{out}");

    let dir = tmpdir("check");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[api]\nlisten = \"1.2.3.4\"\ncolour = 1\n[media]\nport_min = 50000\nport_max = 40000\n\
         [transmission_control]\nvideo_ssrc_field_id = 25\n[policy]\nfile = \"missing.toml\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    for line in [
        "api.listen: `1.2.3.4` is not an IP:port address",
        "api.colour: unknown key",
        "media.port_min: must be <= media.port_max (50000 > 40000)",
        "transmission_control.video_ssrc_field_id: must be 23 or 24, not 25",
        "policy.file: cannot read",
        "5 problems",
    ] {
        assert!(err.contains(line), "{line:?} not in:\n{err}");
    }
    let (code, _, err) = run(&["check-config", dir.join("absent.toml").to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot read"), "{err}");
    let (code, _, err) = run(&["check-config"]);
    assert_eq!(code, Some(2), "{err}");

    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out.trim(),
        concat!("mcvideo-relay ", env!("CARGO_PKG_VERSION"))
    );
    let (code, out, _) = run(&["check-config", "--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("Reports every problem in FILE"), "{out}");
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("serve") && out.contains("check-config"),
        "{out}"
    );
    let (code, out, _) = run(&["serve", "--help"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("--ports <MIN-MAX>") && out.contains("MCVIDEO_RELAY_API_TOKEN"),
        "{out}"
    );
    if cfg!(feature = "loadgen") {
        let (code, out, err) = run(&["loadgen", "--help"]);
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains("--calls") && out.contains("--direct"), "{out}");
        let (code, _, err) = run(&["loadgen", "--frobnicate"]);
        assert_eq!(code, Some(2));
        assert!(err.contains("--frobnicate"), "{err}");
    } else {
        // Built without the load generator: not listed, and asking for it says how to build it.
        let (_, out, _) = run(&["--help"]);
        assert!(!out.contains("loadgen"), "{out}");
        let (code, _, err) = run(&["loadgen", "--help"]);
        assert_eq!(code, Some(2));
        assert!(err.contains("--features loadgen"), "{err}");
    }
    let (code, _, err) = run(&["frobnicate"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("unrecognized subcommand 'frobnicate'"),
        "{err}"
    );
    let (code, _, err) = run(&["serve", "--ports", "9-x"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--ports"), "{err}");
    let (code, _, err) = run(&["serve", "--frobnicate"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--frobnicate"), "{err}");

    // Not loopback and no token: refuses to start.
    let (code, out, err) = run(&["serve", "--listen", "0.0.0.0:0", "--ports", "48300-48319"]);
    assert_ne!(code, Some(0));
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("refusing to start") && err.contains("loopback"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
