//! Reload without a restart, on the built binary as an operator runs it: SIGHUP rotates the API
//! token while a video push runs (RTP flowing through an established call): the push goes on,
//! the old token works until `api.token_overlap_secs` has passed and then gets 401, the new one
//! works; the policy file and the log level are re-read too; `POST /v1/admin/reload` with a
//! broken config file answers 400 naming the key and keeps the settings in force.
#![cfg(all(feature = "sidecar", unix))]
#![allow(clippy::disallowed_methods)] // tests read the clock for their deadlines

mod sidecar_support;

use serde_json::json;
use sidecar_support::{create_body, eventually, relay_video_addr, rtp_packet, Api, Client};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mcvideo-relay");
const OLD: &str = "reload-test-old-token-51d0";
const NEW: &str = "reload-test-new-token-8a2f";
const SEC: Duration = Duration::from_secs(1);
/// `api.token_overlap_secs` in this test.
const OVERLAP_SECS: u64 = 2;

struct Relay {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Relay {
    fn spawn(config: &Path) -> Relay {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(config)
            .env_remove("MCVIDEO_RELAY_API_TOKEN")
            .env_remove("RUST_LOG");
        let p = sidecar_support::ServeProcess::start(cmd, "serve");
        Relay {
            child: p.child,
            addr: p.addr,
            stderr: p.stderr,
        }
    }

    fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} failed");
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

fn tmpdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("mcv-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_config(dir: &Path, log_level: &str) {
    std::fs::write(
        dir.join("relay.toml"),
        format!(
            "[api]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n\
             token_overlap_secs = {OVERLAP_SECS}\n\
             [media]\nport_min = 48400\nport_max = 48439\n\
             [policy]\nfile = \"policy.toml\"\n\
             [log]\nlevel = \"{log_level}\"\n"
        ),
    )
    .unwrap();
}

fn status(api: &Api, path: &str) -> u16 {
    api.get(path).status
}

#[test]
fn sighup_rotates_the_token_with_an_overlap_while_a_push_runs() {
    let dir = tmpdir();
    std::fs::write(dir.join("token"), format!("{OLD}\n")).unwrap();
    std::fs::write(
        dir.join("policy.toml"),
        "push_allow = [\"sip:*@police.example\"]\nreceive_allow = [\"*\"]\n",
    )
    .unwrap();
    write_config(&dir, "info");
    let relay = Relay::spawn(&dir.join("relay.toml"));
    let old = Api::new(relay.addr, Some(OLD));
    let new = Api::new(relay.addr, Some(NEW));
    assert_eq!(status(&old, "/v1/calls"), 200);
    assert_eq!(status(&new, "/v1/calls"), 401);

    // A push: established, RTP flowing from the caller through the relay to the callee.
    let caller = Client::new();
    let callee = Client::new();
    let ssrc = 0x5eed_0001;
    let r = old.post(
        "/v1/calls",
        &create_body(
            "push-r",
            "sip:alice@police.example",
            "sip:bob@police.example",
            &caller.sdp("alice", Some(ssrc)),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = old.post(
        "/v1/calls/push-r/answer",
        &json!({"sdp_answer": callee.sdp("bob", None)}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let to_relay = relay_video_addr(r.json()["sdp_answer"].as_str().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        let sock = caller.rtp.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut seq = 0u16;
            while !stop.load(Ordering::Relaxed) {
                sock.send_to(&rtp_packet(seq, ssrc, 200), to_relay).unwrap();
                seq = seq.wrapping_add(1);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let received = Arc::new(AtomicU64::new(0));
    let receiver = {
        let (stop, received) = (stop.clone(), received.clone());
        let sock = callee.rtp.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    assert_eq!(n, 12 + 200);
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    assert!(
        eventually(5 * SEC, || received.load(Ordering::Relaxed) >= 20),
        "media flows before the reload"
    );

    // Rotate: new token in the file, a new policy, a new log level, then SIGHUP.
    std::fs::write(dir.join("token"), format!("{NEW}\n")).unwrap();
    std::fs::write(
        dir.join("policy.toml"),
        "push_allow = [\"sip:*@police.example\"]\npush_deny = [\"sip:carol@police.example\"]\n\
         receive_allow = [\"*\"]\n",
    )
    .unwrap();
    write_config(&dir, "debug");
    let before = received.load(Ordering::Relaxed);
    relay.signal("-HUP");
    assert!(
        eventually(5 * SEC, || status(&new, "/v1/calls") == 200),
        "the new token works after SIGHUP; logs:\n{}",
        relay.logs()
    );
    let rotated = Instant::now();
    assert_eq!(
        status(&old, "/v1/calls"),
        200,
        "the old token still works during the overlap"
    );
    assert!(
        eventually(Duration::from_secs(OVERLAP_SECS + 5), || status(
            &old,
            "/v1/calls"
        ) == 401),
        "the old token stops working after the overlap"
    );
    assert!(rotated.elapsed() >= Duration::from_millis(OVERLAP_SECS * 1000 - 200));
    assert_eq!(status(&new, "/v1/calls"), 200);
    let anon = Api::new(relay.addr, None);
    assert_eq!(status(&anon, "/v1/calls"), 401);
    assert_eq!(status(&anon, "/healthz"), 200);

    // The push went on through the reload and still goes on.
    let after_reload = received.load(Ordering::Relaxed);
    assert!(
        eventually(5 * SEC, || received.load(Ordering::Relaxed)
            >= after_reload + 20),
        "media keeps flowing after the reload"
    );
    assert!(after_reload > before);
    let live = new.get("/v1/calls/push-r").json();
    assert_eq!(live["state"], "established", "{live}");
    assert_eq!(live["transmission"], "granted", "{live}");

    // The new policy applies to new calls.
    let other = Client::new();
    let r = new.post(
        "/v1/calls",
        &create_body(
            "push-carol",
            "sip:carol@police.example",
            "sip:bob@police.example",
            &other.sdp("carol", None),
        ),
    );
    assert_eq!(r.error().1, "not_authorized", "{}", r.body);

    // A broken file: 400 naming the key; the settings in force stay.
    std::fs::write(
        dir.join("relay.toml"),
        "[api]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n[log]\nlevel = \"info,==\"\n",
    )
    .unwrap();
    let r = new.post("/v1/admin/reload", &json!({}));
    let (code, err, msg) = r.error();
    assert_eq!((code, err.as_str()), (400, "invalid_config"), "{}", r.body);
    assert!(msg.contains("log.level"), "{msg}");
    assert_eq!(status(&new, "/v1/calls"), 200);
    // Fixed again: the API reload answers what changed.
    write_config(&dir, "debug");
    let r = new.post("/v1/admin/reload", &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["reloaded"], true);

    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    receiver.join().unwrap();
    let fin = new.delete("/v1/calls/push-r").json();
    assert_eq!(fin["release_reason"], "released", "{fin}");
    assert!(fin["callee"]["packets_out"].as_u64().unwrap() >= after_reload);

    relay.signal("-TERM");
    let logs = relay.logs();
    assert!(logs.contains("SIGHUP received"), "{logs}");
    assert!(logs.contains("api token: rotated"), "{logs}");
    assert!(logs.contains("log.level: `debug`"), "{logs}");
    assert!(
        logs.contains("DEBUG"),
        "debug lines once the level is debug:\n{logs}"
    );
    assert!(logs.contains("configuration not reloaded"), "{logs}");
    assert!(
        !logs.contains(OLD) && !logs.contains(NEW),
        "tokens are never logged"
    );
    let _ = std::fs::remove_dir_all(dir);
}
