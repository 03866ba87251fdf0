//! `media.kernel_offload` (docs/kernel-fast-path.md) as an operator meets it: the key is
//! checked; `off` runs in userspace; `auto` without the privilege logs one line, reports
//! `mcvideo_relay_kernel_offload_active 0` and serves; `required` without it refuses to start,
//! saying why; as root (and with the `kernel-offload` feature) `auto` and `required` run the fast
//! path on `lo`, and nothing stays attached after the process is gone.
//!
//! The unprivileged runs use `setpriv` (util-linux) to drop every capability. The privileged
//! ones attach the program at TCX ingress of this host's `lo`: it acts only on the relay's own
//! ports (and passes everything else on), and its link belongs to the relay process.
#![cfg(feature = "sidecar")]
#![allow(clippy::disallowed_methods)] // tests read the clock for their deadlines

mod common;
mod sidecar_support;

use mcvideo_relay::sidecar::Config;
use sidecar_support::{Api, KilledOnDrop, ServeProcess};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mcvideo-relay");
const ACTIVE: &str = "mcvideo_relay_kernel_offload_active";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A config file with `[media] kernel_offload = mode` and its own port range.
fn config(tag: &str, mode: &str, ports: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mcv-offload-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (lo, hi) = ports.split_once('-').unwrap();
    let p = dir.join("relay.toml");
    std::fs::write(
        &p,
        format!(
            "[api]\nlisten = \"127.0.0.1:0\"\n[media]\nkernel_offload = \"{mode}\"\n\
             port_min = {lo}\nport_max = {hi}\nworkers = 1\n[log]\nlevel = \"info\"\n"
        ),
    )
    .unwrap();
    p
}

/// `serve --config FILE`, optionally under `setpriv` with no capability at all.
fn serve_cmd(file: &std::path::Path, unprivileged: bool) -> Command {
    let mut cmd = if unprivileged {
        let mut c = Command::new("setpriv");
        c.args([
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
            "--",
            BIN,
        ]);
        c
    } else {
        Command::new(BIN)
    };
    cmd.args(["serve", "--config", file.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .env_remove("MCVIDEO_RELAY_API_TOKEN");
    cmd
}

/// A relay started by a test: killed (SIGKILL) when dropped, also when an assertion fails
/// half way, so no relay (and no program on `lo`) outlives its test; its config directory goes
/// with it.
struct Relay(KilledOnDrop, std::path::PathBuf);

impl std::ops::Deref for Relay {
    type Target = ServeProcess;
    fn deref(&self) -> &ServeProcess {
        &self.0
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The relay is killed when the field drops, after this.
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// `serve` with the config `file` (made by [`config`]), under `setpriv` when `unprivileged`.
fn start(file: &std::path::Path, unprivileged: bool, what: &str) -> Relay {
    let p = ServeProcess::start(serve_cmd(file, unprivileged), what);
    Relay(KilledOnDrop(p), file.parent().unwrap().to_owned())
}

/// Kills the relay (SIGKILL) and returns its log.
fn stop(mut p: Relay) -> String {
    let _ = p.0.child.kill();
    let _ = p.0.child.wait();
    std::thread::sleep(Duration::from_millis(100));
    p.0.log()
}

/// The relay's log lines about the fast path.
fn offload_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("kernel fast path"))
        .collect()
}

#[test]
fn the_key_is_checked() {
    let (c, problems) = Config::parse("[media]\nkernel_offload = \"required\"\n");
    assert!(problems.is_empty(), "{problems:?}");
    assert!(c.validate().is_empty());
    assert_eq!(
        c.engine_config().kernel_offload,
        mcvideo_relay::relay::KernelOffload::Required
    );
    let (c, problems) = Config::parse("");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        c.engine_config().kernel_offload,
        mcvideo_relay::relay::KernelOffload::Auto,
        "serve's default is auto"
    );
    for bad in ["\"on\"", "\"Auto\"", "true", "1"] {
        let (c, mut problems) = Config::parse(&format!("[media]\nkernel_offload = {bad}\n"));
        problems.extend(c.validate());
        assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
        assert_eq!(problems[0].key, "media.kernel_offload", "{problems:?}");
    }
    // An embedded engine does not load BPF unless asked.
    assert_eq!(
        mcvideo_relay::relay::EngineConfig::default().kernel_offload,
        mcvideo_relay::relay::KernelOffload::Off
    );
}

#[test]
fn off_serves_in_userspace_and_says_so() {
    let file = config("off", "off", "47600-47619");
    let p = start(&file, false, "serve (off)");
    let m = Api::new(p.addr, None).metrics();
    assert_eq!(m.get(ACTIVE), 0.0, "{}", m.0);
    let log = stop(p);
    let lines = offload_lines(&log);
    assert_eq!(lines.len(), 1, "one line about the fast path: {log}");
    assert!(lines[0].contains("off"), "{log}");
}

#[test]
fn auto_without_privilege_falls_back_with_one_line_and_the_metric() {
    if !have("setpriv") {
        println!("SKIPPED auto_without_privilege: no setpriv");
        return;
    }
    let file = config("auto-unpriv", "auto", "47620-47639");
    let p = start(&file, true, "serve (auto, no capabilities)");
    let m = Api::new(p.addr, None).metrics();
    assert_eq!(m.get(ACTIVE), 0.0, "{}", m.0);
    let log = stop(p);
    let lines = offload_lines(&log);
    assert_eq!(lines.len(), 1, "one line about the fast path: {log}");
    assert!(
        lines[0].contains("not available"),
        "a fallback, not an error: {log}"
    );
    if cfg!(feature = "kernel-offload") {
        assert!(lines[0].contains("privilege"), "says why: {log}");
    }
}

#[test]
fn required_without_privilege_refuses_to_start_and_says_why() {
    if !have("setpriv") {
        println!("SKIPPED required_without_privilege: no setpriv");
        return;
    }
    let file = config("req-unpriv", "required", "47640-47659");
    let mut cmd = serve_cmd(&file, true);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve with kernel_offload = required and no privilege kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{stdout}\n{stderr}");
    assert!(
        !stdout.contains("listening on"),
        "never serves: {stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("kernel_offload = \"required\""),
        "names the key: {stderr}"
    );
    if cfg!(feature = "kernel-offload") {
        assert!(stderr.contains("privilege"), "says why: {stderr}");
    } else {
        assert!(
            stderr.contains("kernel-offload"),
            "names the feature: {stderr}"
        );
    }
}

#[test]
fn as_root_auto_and_required_run_the_fast_path_and_leave_nothing_behind() {
    if !cfg!(feature = "kernel-offload") {
        println!("SKIPPED as_root_auto_and_required: built without the kernel-offload feature");
        return;
    }
    if !is_root() {
        println!("SKIPPED as_root_auto_and_required: not root");
        return;
    }
    for (mode, ports) in [("auto", "47660-47679"), ("required", "47680-47699")] {
        let file = config(&format!("root-{mode}"), mode, ports);
        let p = start(&file, false, "serve (root)");
        let pid = p.child.id();
        let m = Api::new(p.addr, None).metrics();
        assert_eq!(m.get(ACTIVE), 1.0, "{mode}: {}\n{}", m.0, p.log());
        let progs = bpf_link_programs(pid);
        assert_eq!(progs.len(), 1, "{mode}: the relay holds its TCX link on lo");
        assert!(
            attached_on_lo().contains(&progs[0]),
            "{mode}: its program is attached at lo's TCX ingress"
        );
        // kill -9: the kernel detaches what the process held.
        let log = stop(p);
        let lines = offload_lines(&log);
        assert_eq!(
            lines.len(),
            1,
            "{mode}: one line about the fast path: {log}"
        );
        assert!(lines[0].contains("on"), "{mode}: {log}");
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{mode}: the relay is gone"
        );
        // The kernel detached it with the process (the link dies with its last descriptor).
        let deadline = Instant::now() + Duration::from_secs(5);
        while attached_on_lo().contains(&progs[0]) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !attached_on_lo().contains(&progs[0]),
            "{mode}: nothing left attached after kill -9"
        );
    }
}

/// The programs of the BPF links the process `pid` holds (`prog_id` in `/proc/PID/fdinfo` of
/// its `bpf_link` descriptors).
fn bpf_link_programs(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().contains("bpf_link"))
        })
        .filter_map(|e| {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                e.file_name().to_string_lossy()
            ))
            .ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

/// The TCX ingress programs attached to this namespace's `lo`, by the kernel's own query.
#[cfg(feature = "kernel-offload")]
fn attached_on_lo() -> Vec<u32> {
    mcvideo_relay_fastpath::tcx_ingress_programs("lo")
        .expect("query lo")
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}
#[cfg(not(feature = "kernel-offload"))]
fn attached_on_lo() -> Vec<u32> {
    Vec::new()
}

/// A plain RTP push through `serve` with `mode`: 200 packets from the caller reach the callee,
/// `GET /v1/calls/{id}` counts them; after the release a caller that keeps sending gets nothing
/// through. Returns the packets the kernel forwarded, the legs it had during the push, and the
/// relay's log.
/// A 200-packet push through `serve` with `kernel_offload = mode` and `extra` config lines,
/// released; what the kernel forwarded, its legs during the push, the relay's log.
fn push_and_release(tag: &str, mode: &str, ports: &str, extra: &str) -> (u64, f64, String) {
    use sidecar_support::{create_body, relay_video_addr, rtp_packet, Client};
    let file = config(tag, mode, ports);
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "level = \"info\"",
        &format!("level = \"debug\"\n[transmission_control]\nmedia_inactivity_secs = 60\n{extra}"),
    );
    std::fs::write(&file, text).unwrap();
    let p = start(&file, false, "serve (push)");
    let api = Api::new(p.addr, None);
    let (caller, callee) = (Client::new(), Client::new());
    let ssrc = 0x0bad_cafe;
    let r = api.post(
        "/v1/calls",
        &create_body(
            "kpush",
            "sip:cam@mcx.example",
            "sip:view@mcx.example",
            &caller.sdp("cam", Some(ssrc)),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.post(
        "/v1/calls/kpush/answer",
        &serde_json::json!({ "sdp_answer": callee.sdp("view", None) }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let to_relay = relay_video_addr(r.json()["sdp_answer"].as_str().unwrap());
    // Counts what reaches the callee while it is sent (a socket buffer holds fewer than 200
    // datagrams on lo), until 500 ms pass without one.
    let receive = || {
        let sock = callee.rtp.try_clone().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut n = 0u64;
            while let Ok((len, _)) = sock.recv_from(&mut buf) {
                if len > 12 && buf[1] & 0x7f == 96 {
                    n += 1;
                }
            }
            n
        })
    };
    let receiver = receive();
    // The first packet latches (the announced SSRC), and the leg goes to the kernel; every one
    // of them reaches the callee either way.
    for seq in 0..200u16 {
        caller
            .rtp
            .send_to(&rtp_packet(seq, ssrc, 400), to_relay)
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let got = receiver.join().unwrap();
    let live = api.get("/v1/calls/kpush").json();
    assert_eq!(got, 200, "{mode}: every packet reaches the callee\n{live}");
    assert_eq!(live["caller"]["packets_in"], 200, "{mode}: {live}");
    assert_eq!(live["callee"]["packets_out"], 200, "{mode}: {live}");
    assert_eq!(live["caller"]["bytes_in"], 200 * 412, "{mode}: {live}");
    let q = &live["quality"][0]["caller"];
    assert_eq!(
        q["packets"], 200,
        "{mode}: quality counts every packet: {live}"
    );
    assert_eq!(q["bytes"], 200 * 412, "{mode}: {live}");
    assert_eq!(q["lost"], 0, "{mode}: {live}");
    // The packets are stamped 3,000 units (33 ms at 90 kHz) apart and sent about 2 ms apart:
    // |D| is about 2,800 units a packet, and the jitter converges to about 31 ms, measured by
    // the kernel for the packets it forwarded (more when the sender's packets alternate CPUs:
    // the kernel's D then spans two packets), by the relay otherwise. Had the kernel measured
    // nothing, the relay's figure from the one or two packets it saw would be under 4 ms.
    let jitter = q["jitter_ms"].as_f64().unwrap();
    assert!(
        (15.0..=100.0).contains(&jitter),
        "{mode}: jitter {jitter} ms: {live}"
    );
    let m = api.metrics();
    let in_kernel = m.get("mcvideo_relay_kernel_offload_packets_total") as u64;
    let legs = m.get("mcvideo_relay_kernel_offload_legs");
    // The release: from now on a caller that keeps sending gets nothing through.
    let r = api.delete("/v1/calls/kpush");
    assert_eq!(r.status, 200, "{}", r.body);
    let fin = r.json();
    assert_eq!(fin["caller"]["packets_in"], 200, "{mode}: {fin}");
    let receiver = receive();
    for seq in 200..300u16 {
        caller
            .rtp
            .send_to(&rtp_packet(seq, ssrc, 400), to_relay)
            .unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        receiver.join().unwrap(),
        0,
        "{mode}: nothing after the release"
    );
    let m = api.metrics();
    assert_eq!(
        m.get("mcvideo_relay_kernel_offload_legs"),
        0.0,
        "{mode}: no leg left in the kernel after the release"
    );
    assert_eq!(
        m.get("mcvideo_relay_kernel_offload_packets_total") as u64,
        in_kernel,
        "{mode}: nothing forwarded in the kernel after the release"
    );
    (in_kernel, legs, stop(p))
}

#[test]
fn a_push_is_forwarded_in_the_kernel_counted_and_stopped_at_release() {
    if !cfg!(feature = "kernel-offload") || !is_root() {
        println!("SKIPPED a_push_is_forwarded_in_the_kernel: needs root and kernel-offload");
        return;
    }
    let (in_kernel, legs, log) = push_and_release("push-required", "required", "47700-47719", "");
    assert!(
        log.contains("leg forwarded in the kernel"),
        "the leg was installed: {log}"
    );
    assert_eq!(legs, 1.0, "one leg in the kernel during the push");
    // The first packet latches in userspace; the leg is installed at the step that follows.
    assert!(
        in_kernel >= 190,
        "the kernel forwarded all but the first few: {in_kernel} of 200"
    );
}

#[test]
fn with_offload_off_the_same_push_runs_in_userspace() {
    let (in_kernel, legs, log) = push_and_release("push-off", "off", "47720-47739", "");
    assert!(!log.contains("leg forwarded in the kernel"), "{log}");
    assert_eq!(
        (in_kernel, legs),
        (0, 0.0),
        "userspace forwarded every packet"
    );
}

#[test]
fn a_push_that_keeps_evidence_stays_in_userspace_with_every_packet_logged_and_recorded() {
    if !cfg!(feature = "kernel-offload") || !is_root() {
        println!("SKIPPED a_push_that_keeps_evidence: needs root and kernel-offload");
        return;
    }
    let dir = std::env::temp_dir().join(format!("mcv-offload-rec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let extra = format!(
        "[recording]\ndir = \"{}\"\nmedia = \"all\"\nmin_free_bytes = 0\n",
        dir.display()
    );
    let (in_kernel, legs, log) =
        push_and_release("push-evidence", "required", "47740-47759", &extra);
    assert!(!log.contains("leg forwarded in the kernel"), "{log}");
    assert_eq!(
        (in_kernel, legs),
        (0, 0.0),
        "a recorded call is forwarded in userspace"
    );
    // The evidence has every packet: the log's transmission runs from seq 0 to 199.
    let call = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("kpush-"))
        .expect("the call's recording directory")
        .path();
    let txlog = std::fs::read_to_string(call.join("transmissions.jsonl")).unwrap();
    assert!(
        txlog.contains("\"first_seq\":0,") && txlog.contains("\"last_seq\":199,"),
        "{txlog}"
    );
    assert!(call.join("stream-0.pcap").exists(), "the media recording");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_ffmpeg_h264_push_through_the_kernel_decodes_every_frame_and_get_counts_it() {
    use common::ffmpeg::{
        frames, port_pair, require, send, spawn_receiver, tmpdir, video_sdp, FRAMES, SENDER_KEY,
        SSRC,
    };
    use sidecar_support::{create_body, relay_video_addr};
    if !cfg!(feature = "kernel-offload") || !is_root() {
        println!("SKIPPED an_ffmpeg_h264_push_through_the_kernel: needs root and kernel-offload");
        return;
    }
    require("ffmpeg");
    require("ffprobe");
    let dir = tmpdir("offload-ffmpeg");
    let file = config("ffmpeg", "required", "47860-47879");
    let text = std::fs::read_to_string(&file).unwrap()
        + "[transmission_control]\nmedia_inactivity_secs = 60\n";
    std::fs::write(&file, text).unwrap();
    let p = start(&file, false, "serve (ffmpeg, required)");
    let api = Api::new(p.addr, None);
    let (caller_port, _c1, _c2) = port_pair();
    let r = api.post(
        "/v1/calls",
        &create_body(
            "kffmpeg",
            "sip:camera@mcx.example",
            "sip:viewer@mcx.example",
            &video_sdp("camera", caller_port, SENDER_KEY, Some(SSRC)),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let (recv_port, r1, r2) = port_pair();
    // end_to_end: the receiver uses the sender's key (the relay holds none it uses).
    let recv_sdp = video_sdp("viewer", recv_port, SENDER_KEY, None);
    let r = api.post(
        "/v1/calls/kffmpeg/answer",
        &serde_json::json!({ "sdp_answer": recv_sdp }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let to_relay = relay_video_addr(r.json()["sdp_answer"].as_str().unwrap());
    std::fs::write(dir.join("recv.sdp"), &recv_sdp).unwrap();
    drop((r1, r2));
    let out = dir.join("out.mkv");
    let receiver = spawn_receiver(&dir.join("recv.sdp"), &out);
    std::thread::sleep(Duration::from_millis(700));
    // While the push runs, the call's quality shows it live, as in userspace.
    let pushing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let poller = {
        let (api, pushing) = (api.clone(), pushing.clone());
        std::thread::spawn(move || {
            let (mut bitrate, mut frame_rate) = (0u64, 0f64);
            while pushing.load(std::sync::atomic::Ordering::Relaxed) {
                let q = api.get("/v1/calls/kffmpeg").json()["quality"][0]["caller"].clone();
                bitrate = bitrate.max(q["bitrate_bps"].as_u64().unwrap_or(0));
                frame_rate = frame_rate.max(q["frame_rate"].as_f64().unwrap_or(0.0));
                std::thread::sleep(Duration::from_millis(200));
            }
            (bitrate, frame_rate)
        })
    };
    let sender = send(to_relay);
    pushing.store(false, std::sync::atomic::Ordering::Relaxed);
    let (bitrate, frame_rate) = poller.join().unwrap();
    common::ffmpeg::assert_exited_ok("sender", &sender);
    common::ffmpeg::assert_exited_ok(
        "receiver",
        &receiver.wait_with_output().expect("receiver exits"),
    );
    assert_eq!(frames(&out), FRAMES, "every frame decodes after the kernel");
    assert!(
        bitrate > 0 && frame_rate > 0.0,
        "{bitrate} bps, {frame_rate} fps"
    );

    let live = api.get("/v1/calls/kffmpeg").json();
    assert_eq!(live["transmission"], "granted", "{live}");
    let caller_in = live["caller"]["packets_in"].as_u64().unwrap();
    let callee_out = live["callee"]["packets_out"].as_u64().unwrap();
    assert!(callee_out >= u64::from(FRAMES), "{live}");
    assert!(caller_in >= callee_out, "{live}");
    let q = &live["quality"][0]["caller"];
    // Every RTP packet (the caller's RTCP is counted on the leg, not in the RTP quality).
    assert!(q["packets"].as_u64().unwrap() + 5 >= caller_in, "{live}");
    assert!(q["frames"].as_u64().unwrap() >= u64::from(FRAMES), "{live}");
    assert_eq!(q["lost"], 0, "{live}");
    let m = api.metrics();
    let in_kernel = m.get("mcvideo_relay_kernel_offload_packets_total");
    println!("ffmpeg push: {caller_in} packets in, {in_kernel} of them forwarded in the kernel");
    // All but RTCP and the first burst (the packets before the step that installs the leg).
    assert!(
        in_kernel >= 0.9 * callee_out as f64,
        "the kernel forwarded the push: {in_kernel} of {callee_out}"
    );
    let r = api.delete("/v1/calls/kffmpeg");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.metrics().get("mcvideo_relay_kernel_offload_legs"), 0.0);
    stop(p);
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether `got` holds an RTP datagram of `len` bytes.
fn has_len(got: &[(Vec<u8>, std::net::SocketAddr)], len: usize) -> usize {
    got.iter().filter(|(b, _)| b.len() == len).count()
}

#[test]
fn the_end_request_takes_the_leg_out_of_the_kernel_before_the_end_response() {
    use common::net::{collect, recv, rtp_packet, Peer, RelayAddrs};
    use mcvideo_relay::control::call::{AnswerCall, CreateCall};
    use mcvideo_relay::control::MediaSecurity;
    use mcvideo_relay::relay::{DropReason, Engine, EngineConfig, KernelOffload};
    use mcvideo_relay::wire::tc::{MessageKind, TcMessage};
    if !cfg!(feature = "kernel-offload") || !is_root() {
        println!("SKIPPED the_end_request_takes_the_leg_out: needs root and kernel-offload");
        return;
    }
    const SSRC: u32 = 0x1234_5678;
    let engine = Engine::start(EngineConfig {
        port_min: 47_760,
        port_max: 47_799,
        workers: 1,
        kernel_offload: KernelOffload::Required,
        ..EngineConfig::default()
    })
    .expect("engine starts with the fast path");
    assert!(engine.kernel_offload_active());
    let (caller, callee, stranger) = (Peer::new(), Peer::new(), Peer::new());
    let offer = engine
        .create_call(CreateCall {
            call_id: Some("kend".into()),
            caller_id: "sip:alice@mcx.example".into(),
            caller_sdp: caller.sdp("alice", "RTP/AVP", Some(SSRC), true, ""),
            callee_id: "sip:bob@mcx.example".into(),
            video_push: true,
            video_pull: false,
            commencement_mode: None,
            media_security: MediaSecurity::EndToEnd,
            caller_tc_key: None,
            callee_interface: None,
            caller_interface: None,
        })
        .expect("create_call");
    let to_callee = RelayAddrs::from_sdp(&offer.sdp_offer);
    let answer = engine
        .accept_call(
            "kend",
            AnswerCall {
                callee_sdp: callee.sdp("bob", "RTP/AVP", None, true, "a=recvonly\r\n"),
                callee_tc_key: None,
            },
        )
        .expect("accept_call");
    let to_caller = RelayAddrs::from_sdp(&answer.sdp_answer);
    let (g, _) = recv(&caller.ctl, Duration::from_secs(2));
    assert_eq!(
        TcMessage::parse(&g).unwrap().kind,
        MessageKind::TransmissionGranted
    );

    // The push: 100 packets of 1,012 bytes, all but the first forwarded by the kernel.
    let at_callee = collect(
        &callee.rtp,
        Duration::from_secs(2),
        Duration::from_millis(300),
    );
    for i in 0..100u16 {
        caller
            .rtp
            .send_to(&rtp_packet(i, SSRC, 1000), to_caller.video)
            .unwrap();
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert_eq!(has_len(&at_callee.join().unwrap(), 1012), 100);
    let deadline = Instant::now() + Duration::from_secs(3);
    while engine.stats().kernel_offload_packets < 90 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = engine.stats();
    assert!(
        stats.kernel_offload_packets >= 90,
        "{}",
        stats.kernel_offload_packets
    );
    assert_eq!(stats.kernel_offload_legs, 1);

    // A stranger with the caller's SSRC, and the callee's own media: never forwarded, and
    // judged in userspace as before.
    let at_callee = collect(
        &callee.rtp,
        Duration::from_millis(500),
        Duration::from_millis(300),
    );
    let at_caller = collect(
        &caller.rtp,
        Duration::from_millis(500),
        Duration::from_millis(300),
    );
    for i in 0..20u16 {
        stranger
            .rtp
            .send_to(&rtp_packet(1000 + i, SSRC, 500), to_caller.video)
            .unwrap();
        callee
            .rtp
            .send_to(&rtp_packet(i, 0x5eed, 500), to_callee.video)
            .unwrap();
    }
    assert_eq!(has_len(&at_callee.join().unwrap(), 512), 0, "stranger");
    assert_eq!(has_len(&at_caller.join().unwrap(), 512), 0, "callee");
    let s = engine.call("kend").expect("live");
    assert!(s.caller.dropped(DropReason::WrongSource) > 0, "{s:?}");
    assert!(s.callee.dropped_total() > 0, "{s:?}");
    assert_eq!(s.caller.packets_in, 100 + s.caller.dropped_total(), "{s:?}");

    // The caller ends its transmission; right after the End Response, nothing more gets
    // through, not even in the kernel.
    let mut end = TcMessage::new(MessageKind::TransmissionEndRequest, 0xa11ce);
    end.ack_required = true;
    caller.send_tc(to_caller.control.unwrap(), &end);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (m, _) = recv(&caller.ctl, Duration::from_secs(2));
        if TcMessage::parse(&m).unwrap().kind == MessageKind::TransmissionEndResponse {
            break;
        }
        assert!(Instant::now() < deadline, "no End Response");
    }
    let at_callee = collect(
        &callee.rtp,
        Duration::from_millis(500),
        Duration::from_millis(300),
    );
    for i in 0..50u16 {
        caller
            .rtp
            .send_to(&rtp_packet(2000 + i, SSRC, 1000), to_caller.video)
            .unwrap();
    }
    assert_eq!(
        has_len(&at_callee.join().unwrap(), 1012),
        0,
        "nothing after the End Response"
    );
    let stats = engine.stats();
    assert_eq!(stats.kernel_offload_legs, 0);
    assert!(stats.kernel_offload_packets <= 100);
    engine.shutdown();
}

#[test]
fn with_the_leg_in_the_kernel_a_flood_is_dropped_and_counted_and_inactivity_still_releases() {
    use common::net::{collect, drain, engine_push, rtp_packet, Peer};
    use mcvideo_relay::control::call::{CallConfig, CallEventKind};
    use mcvideo_relay::control::ReleaseReason;
    use mcvideo_relay::relay::{DropReason, Engine, EngineConfig, KernelOffload};
    if !cfg!(feature = "kernel-offload") || !is_root() {
        println!("SKIPPED with_the_leg_in_the_kernel_a_flood: needs root and kernel-offload");
        return;
    }
    const SSRC: u32 = 0xf100_d000;
    let mut call = CallConfig::default();
    call.tc.media_inactivity = Duration::from_secs(1);
    let engine = Engine::start(EngineConfig {
        port_min: 47_800,
        port_max: 47_839,
        workers: 1,
        call,
        kernel_offload: KernelOffload::Required,
        ..EngineConfig::default()
    })
    .unwrap();
    let mut events = engine.subscribe();
    let (caller, callee) = (Peer::new(), Peer::new());
    let relay = engine_push(&engine, "kflood", &caller, &callee, SSRC);
    std::thread::sleep(Duration::from_millis(100));
    drain(&caller.rtcp, Duration::from_millis(50)); // the relay's keyframe request

    // The caller's media for 3 s (three times the inactivity timer), the leg in the kernel,
    // while a stranger floods the same port with well-formed RTP of the caller's SSRC and
    // with junk.
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let c = collect(
        &callee.rtp,
        Duration::from_millis(500),
        Duration::from_millis(300),
    );
    let mut sent = 0u64;
    for i in 0..300u16 {
        caller
            .rtp
            .send_to(&rtp_packet(i, SSRC, 900), relay.video)
            .unwrap();
        sent += 1;
        for j in 0..20u16 {
            let junk = if j % 2 == 0 {
                rtp_packet(10_000 + i * 20 + j, SSRC, 900)
            } else {
                vec![0x80, 0x60, 0, 0]
            };
            stranger.send_to(&junk, relay.video).unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let got = c.join().unwrap();
    assert_eq!(
        got.len() as u64,
        sent,
        "the caller's media flows through the flood"
    );
    let mut buf = [0u8; 2048];
    assert!(
        stranger.recv_from(&mut buf).is_err(),
        "nothing is ever sent to an unnegotiated address"
    );
    let s = engine
        .call("kflood")
        .expect("still live: the kernel's packets are activity");
    assert_eq!(
        s.state,
        mcvideo_relay::control::call::CallState::Established
    );
    let stats = engine.stats();
    assert!(
        stats.kernel_offload_packets >= sent - 10,
        "the kernel forwarded the media: {} of {sent}",
        stats.kernel_offload_packets
    );
    let flood = 300 * 20;
    let dropped = s.caller.dropped(DropReason::WrongSource)
        + s.caller.dropped(DropReason::RateLimited)
        + s.caller.dropped(DropReason::Malformed);
    assert_eq!(dropped, flood, "every flood packet counted: {:?}", s.caller);
    assert_eq!(s.caller.packets_in, sent + flood, "{:?}", s.caller);
    assert_eq!(s.callee.packets_out, sent, "{:?}", s.callee);

    // The caller stops: released by inactivity, as in userspace.
    let mut reason = None;
    for _ in 0..40 {
        while let Ok(ev) = events.try_recv() {
            if let CallEventKind::Released { reason: r } = ev.kind {
                reason = Some(r);
            }
        }
        if reason.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(reason, Some(ReleaseReason::MediaTimeout));
    assert_eq!(engine.stats().kernel_offload_legs, 0);
    engine.shutdown();
}

#[cfg(feature = "loadgen")] // the topology is the load generator's
/// Three network namespaces made by the test, deleted on drop (their veths go with them): the
/// load generator's topology (the caller's 10.78.1.2 and the callee's 10.78.2.2, each on a veth
/// into the relay's, which has 10.78.1.1 on `va`, its media address, and 10.78.2.1 on `vb`),
/// with no IP forwarding: what crosses it is forwarded by the relay, in userspace or in the
/// kernel.
fn namespaces(tag: &str) -> mcvideo_relay::loadgen::netns::Topology {
    mcvideo_relay::loadgen::netns::Topology::build(&format!("mcvk-{tag}"), false).unwrap()
}

#[cfg(feature = "loadgen")]
use sidecar_support::enter_netns as enter;

#[cfg(feature = "loadgen")]
/// A UDP socket bound to `ip` (port 0) in namespace `ns` (it stays there once made).
fn udp_in(ns: &str, ip: &str) -> std::net::UdpSocket {
    let (ns, ip) = (ns.to_owned(), ip.to_owned());
    std::thread::spawn(move || {
        enter(&ns);
        let s = std::net::UdpSocket::bind((ip.as_str(), 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s
    })
    .join()
    .unwrap()
}

#[cfg(feature = "loadgen")]
/// A plain RTP SDP naming `sock` (and `a=ssrc` when given).
fn plain_sdp(name: &str, sock: &std::net::UdpSocket, ssrc: Option<u32>) -> String {
    let a = sock.local_addr().unwrap();
    let mut s = format!(
        "v=0\r\no={name} 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=video {port} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
        ip = a.ip(),
        port = a.port(),
    );
    if let Some(ssrc) = ssrc {
        s.push_str(&format!("a=ssrc:{ssrc} cname:{name}\r\n"));
    }
    s
}

#[cfg(feature = "loadgen")]
#[test]
fn across_namespaces_a_push_goes_through_the_kernel_on_real_interfaces_and_ffmpeg_decodes_it() {
    use common::ffmpeg::{
        frames, require, send_from, spawn_receiver_in, tmpdir, video_sdp, FRAMES, SENDER_KEY, SSRC,
    };
    use sidecar_support::{create_body, relay_video_addr, rtp_packet};
    if !cfg!(feature = "kernel-offload") || !is_root() {
        println!("SKIPPED across_namespaces_a_push: needs root and kernel-offload");
        return;
    }
    require("ffmpeg");
    require("ffprobe");
    let ns = namespaces("push");
    // This thread talks to the relay's API on the relay namespace's own loopback.
    enter(ns.relay());
    let file = config("netns", "required", "40000-40019");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("[media]\n", "[media]\nip = \"10.78.1.1\"\n")
        + "[transmission_control]\nmedia_inactivity_secs = 60\n";
    std::fs::write(&file, text).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns.relay(), BIN, "serve", "--config"])
        .arg(&file)
        .env_remove("RUST_LOG")
        .env_remove("MCVIDEO_RELAY_API_TOKEN");
    let p = Relay(
        KilledOnDrop(ServeProcess::start(cmd, "serve (netns)")),
        file.parent().unwrap().to_owned(),
    );
    let api = Api::new(p.addr, None);
    assert_eq!(api.metrics().get(ACTIVE), 1.0, "{}", p.log());

    // 1. Plain RTP, counted exactly: caller → va → (kernel) → vb → callee.
    let caller = udp_in(ns.caller(), "10.78.1.2");
    let callee = udp_in(ns.callee(), "10.78.2.2");
    let ssrc = 0x0bad_f00d;
    let r = api.post(
        "/v1/calls",
        &create_body(
            "nsplain",
            "sip:cam@mcx.example",
            "sip:view@mcx.example",
            &plain_sdp("cam", &caller, Some(ssrc)),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.post(
        "/v1/calls/nsplain/answer",
        &serde_json::json!({ "sdp_answer": plain_sdp("view", &callee, None) }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let to_relay = relay_video_addr(r.json()["sdp_answer"].as_str().unwrap());
    assert_eq!(to_relay.ip().to_string(), "10.78.1.1");
    let receive = || {
        let sock = callee.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let (mut n, mut from) = (0u64, None);
            while let Ok((len, f)) = sock.recv_from(&mut buf) {
                if len > 12 && buf[1] & 0x7f == 96 {
                    n += 1;
                    from = Some(f);
                }
            }
            (n, from)
        })
    };
    let receiver = receive();
    for seq in 0..300u16 {
        caller
            .send_to(&rtp_packet(seq, ssrc, 1000), to_relay)
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let (got, from) = receiver.join().unwrap();
    let live = api.get("/v1/calls/nsplain").json();
    assert_eq!(
        got,
        300,
        "every packet reaches the callee\n{live}\n{}",
        p.log()
    );
    let from = from.unwrap();
    assert_eq!(
        from.ip().to_string(),
        "10.78.1.1",
        "the callee sees the relay's media address"
    );
    assert_eq!(live["caller"]["packets_in"], 300, "{live}");
    assert_eq!(live["callee"]["packets_out"], 300, "{live}");
    assert_eq!(live["quality"][0]["caller"]["lost"], 0, "{live}");
    let m = api.metrics();
    let in_kernel = m.get("mcvideo_relay_kernel_offload_packets_total") as u64;
    assert!(
        in_kernel >= 290,
        "the kernel forwarded all but the first few: {in_kernel} of 300\n{}",
        p.log()
    );
    // The program went onto va, where the caller's packets arrive (the relay namespace's
    // query: this thread is in it).
    let on_va = mcvideo_relay_fastpath_programs("va");
    assert_eq!(on_va.len(), 1, "one program at va's TCX ingress");
    assert!(
        p.log().contains("attached to one more interface"),
        "{}",
        p.log()
    );
    let r = api.delete("/v1/calls/nsplain");
    assert_eq!(r.status, 200, "{}", r.body);
    let receiver = receive();
    for seq in 300..400u16 {
        caller
            .send_to(&rtp_packet(seq, ssrc, 1000), to_relay)
            .unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(receiver.join().unwrap().0, 0, "nothing after the release");
    assert_eq!(api.metrics().get("mcvideo_relay_kernel_offload_legs"), 0.0);

    // 2. ffmpeg H.264 over SRTP (end_to_end), sender and receiver in their namespaces.
    let dir = tmpdir("offload-netns-ffmpeg");
    let sdp_in = |name: &str, ip: &str, port: u16, ssrc: Option<u32>| {
        video_sdp(name, port, SENDER_KEY, ssrc).replace("127.0.0.1", ip)
    };
    let r = api.post(
        "/v1/calls",
        &create_body(
            "nsffmpeg",
            "sip:camera@mcx.example",
            "sip:viewer@mcx.example",
            &sdp_in("camera", "10.78.1.2", 5004, Some(SSRC)),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let recv_sdp = sdp_in("viewer", "10.78.2.2", 5004, None);
    let r = api.post(
        "/v1/calls/nsffmpeg/answer",
        &serde_json::json!({ "sdp_answer": recv_sdp }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let to_relay = relay_video_addr(r.json()["sdp_answer"].as_str().unwrap());
    std::fs::write(dir.join("recv.sdp"), &recv_sdp).unwrap();
    let out = dir.join("out.mkv");
    let receiver = spawn_receiver_in(Some(ns.callee()), &dir.join("recv.sdp"), &out);
    std::thread::sleep(Duration::from_millis(700));
    let before = api
        .metrics()
        .get("mcvideo_relay_kernel_offload_packets_total");
    let sender = send_from(Some(ns.caller()), to_relay);
    common::ffmpeg::assert_exited_ok("sender", &sender);
    common::ffmpeg::assert_exited_ok(
        "receiver",
        &receiver.wait_with_output().expect("receiver exits"),
    );
    assert_eq!(frames(&out), FRAMES, "every frame decodes after the kernel");
    let live = api.get("/v1/calls/nsffmpeg").json();
    let callee_out = live["callee"]["packets_out"].as_u64().unwrap();
    let q = &live["quality"][0]["caller"];
    assert!(q["frames"].as_u64().unwrap() >= u64::from(FRAMES), "{live}");
    assert_eq!(q["lost"], 0, "{live}");
    let in_kernel = api
        .metrics()
        .get("mcvideo_relay_kernel_offload_packets_total")
        - before;
    println!(
        "ffmpeg across namespaces: {callee_out} packets out, {in_kernel} forwarded in the kernel"
    );
    assert!(
        in_kernel >= 0.9 * callee_out as f64,
        "the kernel forwarded the push: {in_kernel} of {callee_out}"
    );
    let r = api.delete("/v1/calls/nsffmpeg");
    assert_eq!(r.status, 200, "{}", r.body);
    // kill -9: the links on va and lo die with the process.
    drop(p);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !mcvideo_relay_fastpath_programs("va").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        mcvideo_relay_fastpath_programs("va"),
        Vec::<u32>::new(),
        "nothing left attached at va after kill -9"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The TCX ingress programs attached to interface `name` in this thread's namespace.
#[cfg(all(feature = "kernel-offload", feature = "loadgen"))]
fn mcvideo_relay_fastpath_programs(name: &str) -> Vec<u32> {
    mcvideo_relay_fastpath::tcx_ingress_programs(name)
        .expect("query the interface")
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}
#[cfg(all(not(feature = "kernel-offload"), feature = "loadgen"))]
fn mcvideo_relay_fastpath_programs(_name: &str) -> Vec<u32> {
    Vec::new()
}

#[test]
fn an_adopted_push_goes_back_into_the_kernel_of_the_engine_that_adopts_it() {
    use common::net::{collect, engine_push, rtp_packet, Peer};
    use mcvideo_relay::relay::{CallImage, Engine, EngineConfig, HaUpdate, KernelOffload};
    if !cfg!(feature = "kernel-offload") || !is_root() {
        println!(
            "SKIPPED an_adopted_push_goes_back_into_the_kernel: needs root and kernel-offload"
        );
        return;
    }
    const SSRC: u32 = 0xad09_7ed0;
    // Two engines in one process, each with its own program on lo (the adopter's runs after
    // the first one's, which passes on what its emptied map does not hold).
    let start = || {
        Engine::start(EngineConfig {
            port_min: 47_900,
            port_max: 47_939,
            workers: 1,
            kernel_offload: KernelOffload::Required,
            ..EngineConfig::default()
        })
        .expect("engine starts with the fast path")
    };
    let (a, b) = (start(), start());
    let updates = a.ha_updates();
    let (caller, callee) = (Peer::new(), Peer::new());
    let to_relay = engine_push(&a, "kha", &caller, &callee, SSRC);
    let push = |first: u16, n: u16| {
        let at_callee = collect(
            &callee.rtp,
            Duration::from_secs(2),
            Duration::from_millis(300),
        );
        for i in first..first + n {
            caller
                .rtp
                .send_to(&rtp_packet(i, SSRC, 1000), to_relay.video)
                .unwrap();
            if i % 10 == 9 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        has_len(&at_callee.join().unwrap(), 1012)
    };
    let in_kernel = |e: &Engine, at_least: u64| {
        let deadline = Instant::now() + Duration::from_secs(3);
        while e.stats().kernel_offload_packets < at_least && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        e.stats()
    };
    assert_eq!(push(0, 100), 100);
    // Most of them in the kernel: the first went through userspace until the leg was latched
    // and installed, how many depending on when the worker got to them (10 to 20 here).
    let s = in_kernel(&a, 60);
    assert!(s.kernel_offload_packets >= 60, "A's kernel: {s:?}");
    assert_eq!(s.kernel_offload_legs, 1);
    // A refresh of the call's image after the media (about every second while it flows).
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(push(100, 50), 50);
    let mut image: Option<CallImage> = None;
    while let Ok(u) = updates.try_recv() {
        if let HaUpdate::Put(img) = u {
            image = Some(*img);
        }
    }
    let image = image.expect("an image of the call");

    // A dies: its calls vanish, their legs leave its kernel map before its sockets close.
    assert_eq!(a.abandon_calls(), 1);
    assert_eq!(a.stats().kernel_offload_legs, 0);
    assert_eq!(
        push(150, 20),
        0,
        "nobody forwards between the crash and the adoption"
    );

    // B adopts: the restored latch puts the leg in B's kernel at its first step.
    b.adopt_call(image, Duration::ZERO, "relay-a").unwrap();
    assert_eq!(
        push(200, 200),
        200,
        "every packet after the adoption arrives"
    );
    let s = in_kernel(&b, 190);
    assert!(
        s.kernel_offload_packets >= 190,
        "B's kernel forwarded the adopted push: {s:?}"
    );
    assert_eq!(s.kernel_offload_legs, 1);
    let live = b.call("kha").expect("adopted");
    assert_eq!(live.callee.packets_out, 200, "{live:?}");
    let fin = b.release_call("kha").unwrap();
    assert_eq!(fin.caller.packets_in, 200, "{fin:?}");
    assert_eq!(b.stats().kernel_offload_legs, 0);
    assert_eq!(push(400, 20), 0, "nothing after the release");
    a.shutdown();
    b.shutdown();
}

#[cfg(feature = "loadgen")]
/// A group across namespaces: the transmitter in the caller's, three receivers in the callee's
/// behind `vb`, the engine (and its fast path) in the relay's. The receivers' next hop is not in
/// the relay's neighbour table at first, so the first packets are fanned out in userspace (which
/// resolves it); then the kernel takes the transmitter's RTP with a copy for each receiver,
/// each with the Ethernet addresses the loader looked up. Every receiver gets every packet once,
/// from its own relay port; the transmitter's End Request takes the leg out before the End
/// Response, and what it sends after is dropped and counted. Then the receivers' next hop stops
/// answering ARP: the next grant's leg waits in userspace (the wait counted) and is tried
/// again, on its own, until the next hop answers and the kernel takes the leg.
#[test]
fn across_namespaces_a_group_fans_out_in_the_kernel_once_the_receivers_next_hop_is_known() {
    use common::net::{Peer, RelayAddrs};
    use mcvideo_relay::control::MediaSecurity;
    use mcvideo_relay::relay::{
        CreateGroupCall, DropReason, Engine, EngineConfig, GroupMemberSpec, KernelOffload,
    };
    use mcvideo_relay::wire::rtp::RtpPacket;
    use mcvideo_relay::wire::tc::{self, MessageKind, TcMessage};
    if !cfg!(feature = "kernel-offload") || !is_root() {
        println!("SKIPPED across_namespaces_a_group: needs root and kernel-offload");
        return;
    }
    const SSRC: u32 = 0x0671_0001;
    let ns = namespaces("grp");
    let peer = |ns: &str, ip: &str| Peer {
        rtp: udp_in(ns, ip),
        rtcp: udp_in(ns, ip),
        ctl: udp_in(ns, ip),
    };
    let tx = peer(ns.caller(), "10.78.1.2");
    let rx: Vec<Peer> = (0..3).map(|_| peer(ns.callee(), "10.78.2.2")).collect();
    let relay_ns = ns.relay().to_owned();
    let engine = std::thread::spawn(move || {
        enter(&relay_ns); // the engine's threads are made here, in the relay's namespace
        Engine::start(EngineConfig {
            media_ip: "10.78.1.1".parse().unwrap(),
            port_min: 47_960,
            port_max: 47_999,
            workers: 1,
            kernel_offload: KernelOffload::Required,
            ..EngineConfig::default()
        })
        .expect("engine with the fast path")
    })
    .join()
    .unwrap();
    let members = std::iter::once(("T", &tx, Some(SSRC), false))
        .chain(
            rx.iter()
                .enumerate()
                .map(|(i, p)| (["R1", "R2", "R3"][i], p, None, true)),
        )
        .map(|(name, p, ssrc, receive_only)| GroupMemberSpec {
            mcvideo_id: name.into(),
            sdp_offer: p.sdp(name, "RTP/AVP", ssrc, true, ""),
            priority: 5,
            receive_only,
            tc_key: None,
        })
        .collect();
    // The relay's sockets are bound by the calling thread: in the relay's namespace.
    let created = std::thread::scope(|sc| {
        sc.spawn(|| {
            enter(ns.relay());
            engine.create_group_call(CreateGroupCall {
                call_id: Some("nsgroup".into()),
                group_id: "sip:ns-group@mcx.example".into(),
                media_security: MediaSecurity::EndToEnd,
                max_transmitters: None,
                max_streams_per_receiver: None,
                reception_mode: None,
                members,
            })
        })
        .join()
        .unwrap()
    })
    .expect("group created");
    let relay = RelayAddrs::from_sdp(&created.members[0].sdp_answer);
    let expect = |p: &Peer, kind: MessageKind| {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if let Ok((n, _)) = p.ctl.recv_from(&mut buf) {
                if tc::messages(&buf[..n]).flatten().any(|m| m.kind == kind) {
                    return;
                }
            }
        }
        panic!("no {kind:?}");
    };
    let mut req = TcMessage::new(MessageKind::TransmissionRequest, SSRC);
    req.fields.transmission_priority = Some(5);
    tx.send_tc(relay.control.unwrap(), &req);
    expect(&tx, MessageKind::TransmissionGranted);

    let send = |first: u16, n: u16| {
        for q in first..first + n {
            let mut p = vec![0x80, 96];
            p.extend_from_slice(&q.to_be_bytes());
            p.extend_from_slice(&(u32::from(q) * 3000).to_be_bytes());
            p.extend_from_slice(&SSRC.to_be_bytes());
            p.resize(1012, q as u8);
            tx.rtp.send_to(&p, relay.video).unwrap();
            if q % 10 == 9 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    };
    // Each receiver read as the packets come (the kernel delivers a burst faster than a
    // socket's default buffer holds it).
    let listen = || {
        rx.iter()
            .map(|p| {
                common::net::collect(&p.rtp, Duration::from_secs(2), Duration::from_millis(900))
            })
            .collect::<Vec<_>>()
    };
    let got = |h: std::thread::JoinHandle<Vec<(Vec<u8>, std::net::SocketAddr)>>| {
        h.join()
            .unwrap()
            .into_iter()
            .map(|(b, from)| {
                let r = RtpPacket::new_checked(&b[..]).expect("RTP");
                assert_eq!(r.ssrc(), SSRC);
                (r.sequence_number(), from)
            })
            .collect::<Vec<_>>()
    };
    // The first burst: in userspace until the receivers' next hop is resolved (the relay's
    // own sends resolve it), then in the kernel, retried a moment later.
    let hs = listen();
    send(0, 50);
    std::thread::sleep(Duration::from_millis(600));
    send(50, 150);
    let mut from_ports = Vec::new();
    for (i, h) in hs.into_iter().enumerate() {
        let mut v = got(h);
        let from: std::collections::HashSet<_> = v.iter().map(|(_, f)| *f).collect();
        assert_eq!(from.len(), 1, "R{}: from one relay port: {from:?}", i + 1);
        from_ports.extend(from);
        v.sort_unstable();
        let seqs: Vec<u16> = v.iter().map(|(q, _)| *q).collect();
        assert_eq!(
            seqs,
            (0..200).collect::<Vec<u16>>(),
            "R{}: every packet once",
            i + 1
        );
    }
    // The summary books what the kernel forwarded first.
    let s = engine.group_call("nsgroup").unwrap();
    for r in s.members.iter().filter(|m| m.mcvideo_id != "T") {
        // Its 200 copies and the two control messages it was sent (Idle, the notification).
        assert_eq!(
            r.counters.packets_out, 202,
            "{}: each copy counted",
            r.mcvideo_id
        );
    }
    let st = engine.stats();
    assert!(
        st.kernel_offload_packets >= 100,
        "most of the second burst through the kernel: {st:?}"
    );
    assert_eq!(st.kernel_offload_legs, 1);

    // The End Request: out of the kernel before the End Response; what follows is dropped.
    tx.send_tc(
        relay.control.unwrap(),
        &TcMessage::new(MessageKind::TransmissionEndRequest, SSRC),
    );
    expect(&tx, MessageKind::TransmissionEndResponse);
    assert_eq!(engine.stats().kernel_offload_legs, 0);
    let hs = listen();
    send(200, 20);
    for h in hs {
        assert!(got(h).is_empty(), "nothing after the end");
    }
    let s = engine.group_call("nsgroup").unwrap();
    let t = s.members.iter().find(|m| m.mcvideo_id == "T").unwrap();
    assert_eq!(t.counters.dropped(DropReason::NotGranted), 20, "{t:?}");

    // A next hop that does not answer: the callee's side stops answering ARP and the relay
    // forgets its neighbours (an unanswered resolution fails after 50 ms). The next grant's
    // leg stays in userspace, the wait counted, and nothing can be delivered.
    let sh = |args: &[&str]| {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    let (r, c) = (ns.relay(), ns.callee());
    for key in ["retrans_time_ms=50", "ucast_solicit=1", "mcast_solicit=1"] {
        sh(&[
            "ip",
            "netns",
            "exec",
            r,
            "sysctl",
            "-qw",
            &format!("net.ipv4.neigh.vb.{key}"),
        ]);
    }
    sh(&["ip", "-n", c, "link", "set", "eth0", "arp", "off"]);
    sh(&["ip", "-n", r, "neigh", "flush", "dev", "vb"]);
    let waits = engine.stats().kernel_offload_neighbour_waits;
    tx.send_tc(relay.control.unwrap(), &req);
    expect(&tx, MessageKind::TransmissionGranted);
    let hs = listen();
    send(220, 30);
    std::thread::sleep(Duration::from_millis(300)); // what waited for ARP is dropped
    for h in hs {
        assert!(got(h).is_empty(), "no next hop, nothing delivered");
    }
    let st = engine.stats();
    assert!(
        st.kernel_offload_neighbour_waits > waits,
        "the wait counted: {st:?}"
    );
    assert_eq!(
        st.kernel_offload_legs, 0,
        "not in the kernel without a next hop"
    );

    // ARP answers again: the relay's own sends resolve the next hop (what they queued while
    // it resolved goes out then), and a retry puts the leg in the kernel on its own, within
    // the longest wait; then every packet of a burst reaches every receiver once, from the
    // kernel.
    sh(&["ip", "-n", c, "link", "set", "eth0", "arp", "on"]);
    // Sends the burst `first..end` and checks that each receiver got every packet of it once.
    let every_packet_once = |first: u16, end: u16, what: &str| {
        let hs = listen();
        send(first, end - first);
        for (i, h) in hs.into_iter().enumerate() {
            let mut seqs: Vec<u16> = got(h).into_iter().map(|(q, _)| q).collect();
            seqs.sort_unstable();
            let want: Vec<u16> = (first..end).collect();
            assert_eq!(seqs, want, "R{}: {what}every packet once", i + 1);
        }
    };
    every_packet_once(250, 300, "in userspace, ");
    let deadline = Instant::now() + Duration::from_secs(6);
    while engine.stats().kernel_offload_legs == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        engine.stats().kernel_offload_legs,
        1,
        "in the kernel once resolved, without a new grant"
    );
    engine.group_call("nsgroup").unwrap(); // books what the kernel forwarded
    let in_kernel = engine.stats().kernel_offload_packets;
    every_packet_once(300, 450, "");
    engine.group_call("nsgroup").unwrap();
    let st = engine.stats();
    assert_eq!(
        st.kernel_offload_packets,
        in_kernel + 150,
        "the whole burst through the kernel: {st:?}"
    );
    engine.shutdown();
}
