//! Debian's Chromium, headless, as a real WebRTC peer (docs/testing.md, "Real peers"): it
//! opens a page, and the page's `console.log` lines that start with `MCV-` are read from its
//! stderr. Killed with its whole process group on drop.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // the harness waits on the wall clock

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// Fails the test with an install hint when Chromium is missing.
pub fn require() {
    super::require_tool(
        "chromium",
        "--version",
        "`apt-get install -y chromium`, or run `./test.sh`, which installs it",
    );
}

/// Saves a screenshot of `url` (1280×800) to `path`, taken after `settle` of the page's own
/// time (its timers and fetches run first). Video is not captured: a headless screenshot is
/// taken from the page's layout, not from the compositor's decoded frames.
pub fn screenshot(url: &str, path: &std::path::Path, settle: Duration) {
    let profile = std::env::temp_dir().join(format!("mcv-chromium-shot-{}", std::process::id()));
    let out = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .args(["--window-size=1280,800", "--hide-scrollbars"])
        .arg(format!("--virtual-time-budget={}", settle.as_millis()))
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", path.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success() && path.exists(),
        "chromium --screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A headless Chromium on one page.
pub struct Browser {
    child: Child,
    lines: Receiver<String>,
    profile: PathBuf,
    /// Every `MCV-` line read so far.
    pub seen: Vec<String>,
}

impl Browser {
    /// Opens `url` in a fresh profile.
    pub fn open(url: &str) -> Browser {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = std::env::temp_dir().join(format!("mcv-chromium-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox", // root in CI
                "--disable-gpu",
                "--no-first-run",
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--allow-loopback-in-peer-connection",
                "--enable-logging=stderr",
                "--window-size=1280,800",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("chromium starts");
        let err = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                // `[pid:tid:time:INFO:CONSOLE:N] "MESSAGE", source: URL (N)`
                if let Some(i) = l.find("\"MCV-") {
                    let msg = &l[i + 1..];
                    let msg = msg.rsplit_once("\", source:").map_or(msg, |(m, _)| m);
                    if tx.send(msg.to_owned()).is_err() {
                        return;
                    }
                }
            }
        });
        Browser {
            child,
            lines,
            profile,
            seen: Vec::new(),
        }
    }

    /// Waits at most `timeout` for a line starting with `prefix` for which `f` holds on its
    /// text after the prefix (JSON).
    pub fn wait_for(
        &mut self,
        prefix: &str,
        timeout: Duration,
        mut f: impl FnMut(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(l) = self.lines.recv_timeout(left) else {
                break;
            };
            self.seen.push(l.clone());
            if let Some(rest) = l.strip_prefix(prefix) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(rest.trim()) {
                    if f(&v) {
                        return Some(v);
                    }
                }
            }
        }
        None
    }

    /// The last line starting with `prefix` within `d` (JSON after the prefix), if any.
    pub fn last_within(&mut self, prefix: &str, d: Duration) -> Option<serde_json::Value> {
        let mut last = None;
        let _ = self.wait_for(prefix, d, |v| {
            last = Some(v.clone());
            false
        });
        last
    }

    /// The last lines read, for a failure message.
    pub fn tail(&self) -> String {
        let n = self.seen.len().saturating_sub(8);
        self.seen[n..].join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SIGTERM to the group: the browser and its zygote, GPU and renderer processes.
        let pgid = self.child.id();
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pgid}")])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
