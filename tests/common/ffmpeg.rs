//! ffmpeg and ffprobe as the real peers (docs/testing.md, "Real peers"): an H.264 SRTP sender, a
//! receiver that writes what it got, and a frame count.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The SRTP key (master key and salt, base64) the sender uses.
pub const SENDER_KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e";
/// The sender's SSRC (announced in its SDP).
pub const SSRC: u32 = 305_419_896;
/// Frames the sender sends: 5 s at 25 fps.
pub const FRAMES: u32 = 125;

/// Fails the test with an install hint when `tool` is missing.
pub fn require(tool: &str) {
    super::require_tool(
        tool,
        "-version",
        "install ffmpeg (`apt-get install -y --no-install-recommends ffmpeg`) or run \
         `./test.sh`, which installs it",
    );
}

/// An even port P with P and P+1 free, held until dropped.
pub fn port_pair() -> (u16, UdpSocket, UdpSocket) {
    for _ in 0..200 {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p % 2 != 0 || p == u16::MAX {
            continue;
        }
        if let Ok(b) = UdpSocket::bind(("127.0.0.1", p + 1)) {
            return (p, a, b);
        }
    }
    panic!("no free port pair");
}

/// A client's SDP: one H.264 stream over SRTP (AES_CM_128_HMAC_SHA1_80, ffmpeg's suite).
pub fn video_sdp(name: &str, port: u16, key: &str, ssrc: Option<u32>) -> String {
    let mut s = format!(
        "v=0\r\no={name} 0 0 IN IP4 127.0.0.1\r\ns=relay-e2e\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=video {port} RTP/SAVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n\
         a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"
    );
    if let Some(ssrc) = ssrc {
        s.push_str(&format!("a=ssrc:{ssrc} cname:{name}\r\n"));
    }
    s
}

/// A fresh temporary directory for one test.
pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mcv-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts the receiver on the SDP at `sdp` (it listens on the `m=` port), writing to `out`.
/// It exits about 4 s after the stream stops.
pub fn spawn_receiver(sdp: &Path, out: &Path) -> Child {
    spawn_receiver_in(None, sdp, out)
}

/// `ffmpeg`, or `ip netns exec NS ffmpeg` in network namespace `ns`.
fn ffmpeg_in(ns: Option<&str>) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "ffmpeg"]);
            c
        }
        None => Command::new("ffmpeg"),
    }
}

/// [`spawn_receiver`] in network namespace `ns` (`None`: this one).
pub fn spawn_receiver_in(ns: Option<&str>, sdp: &Path, out: &Path) -> Child {
    ffmpeg_in(ns)
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-listen_timeout",
            "2",
        ])
        .args(["-protocol_whitelist", "file,udp,rtp,srtp,crypto", "-i"])
        .arg(sdp)
        .args(["-c", "copy", "-y"])
        .arg(out)
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg receiver starts")
}

/// Sends [`FRAMES`] frames of test pattern as H.264 over SRTP ([`SENDER_KEY`], [`SSRC`]) to `to`.
pub fn send(to: SocketAddr) -> Output {
    send_from(None, to)
}

/// [`send`] from network namespace `ns` (`None`: this one).
pub fn send_from(ns: Option<&str>, to: SocketAddr) -> Output {
    send_as(ns, to, SSRC, SENDER_KEY)
}

/// [`send_from`] with SSRC `ssrc` and SRTP key `key` (base64 key and salt).
pub fn send_as(ns: Option<&str>, to: SocketAddr, ssrc: u32, key: &str) -> Output {
    ffmpeg_in(ns)
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
        ])
        .args(["-i", "testsrc=size=640x360:rate=25", "-t", "5"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-profile:v",
            "baseline",
        ])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-g",
            "25",
            "-f",
            "rtp",
            "-payload_type",
            "96",
        ])
        .args([
            "-ssrc",
            &ssrc.to_string(),
            "-srtp_out_suite",
            "AES_CM_128_HMAC_SHA1_80",
        ])
        .args(["-srtp_out_params", key])
        .arg(format!("srtp://{to}?pkt_size=1200"))
        .output()
        .expect("ffmpeg sender runs")
}

/// Frames ffprobe can decode in `path`.
pub fn frames(path: &Path) -> u32 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "default=nw=1",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .strip_prefix("nb_read_frames=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "ffprobe said {text:?} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// Asserts that an ffmpeg process (`what`: sender, receiver) exited 0, with its stderr if not.
pub fn assert_exited_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
