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

mod sidecar_support;

use mcvideo_relay::sidecar::Config;
use sidecar_support::{Api, ServeProcess};
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

fn stop(mut p: ServeProcess) -> String {
    let _ = p.child.kill();
    let _ = p.child.wait();
    std::thread::sleep(Duration::from_millis(100));
    p.log()
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
    let p = ServeProcess::start(serve_cmd(&file, false), "serve (off)");
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
    let p = ServeProcess::start(serve_cmd(&file, true), "serve (auto, no capabilities)");
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
        let p = ServeProcess::start(serve_cmd(&file, false), "serve (root)");
        let pid = p.child.id();
        let m = Api::new(p.addr, None).metrics();
        assert_eq!(m.get(ACTIVE), 1.0, "{mode}: {}\n{}", m.0, p.log());
        let links = bpf_links(pid);
        assert!(links >= 1, "{mode}: the relay holds its TCX link");
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
    }
}

/// BPF links the process `pid` holds (`/proc/PID/fdinfo` of its `bpf-link` descriptors).
fn bpf_links(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().contains("bpf_link"))
        })
        .count()
}
