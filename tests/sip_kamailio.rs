//! A real SIP call through Kamailio's `rtpengine` module driving the relay over ng: SIPp plays
//! a camera (INVITE with an H.264 video offer, then RTP from a pcap) and a viewer (answers and
//! receives), Kamailio (deploy/kamailio/kamailio.cfg) calls `rtpengine_offer`, `_answer` and
//! `_delete`. Checks: the viewer's INVITE names the relay's address and port, the viewer
//! receives the camera's packets through the relay, the BYE releases the call.
//!
//! A second call crosses networks as a Kamailio deployment with several media interfaces does:
//! the relay has two IPv4 networks (127.0.0.1, 127.0.0.2) and an IPv6 one (::1); Kamailio passes
//! rtpengine's `direction` (and `replace-origin`), an IPv4 SIPp camera reaches an IPv6 SIPp
//! viewer, and every leg lands where `direction` says.
//!
//! Needs `kamailio` (with its rtpengine module) and `sipp` (Debian: `kamailio`, `sip-tester`;
//! `.ci/run` installs them). Without them the tests say so loudly and pass.
#![cfg(feature = "sidecar")]
#![allow(clippy::disallowed_methods)] // tests read the clock for their deadlines

mod sidecar_support;

use mcvideo_relay::sidecar::config::InterfaceConfig;
use mcvideo_relay::sidecar::{Config, Settings, Sidecar};
use sidecar_support::{eventually, Api};
use std::net::{SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RELAY_PORT_MIN: u16 = 48_500;
const RELAY_PORT_MAX: u16 = 48_519;
/// The three interfaces of the second test: access (127.0.0.1), access-b (127.0.0.2), core
/// (::1), 20 ports each from here.
const IFACE_PORT_BASE: u16 = 46_000;
/// RTP packets in the camera's pcap (50 frames of 2 packets, 40 ms apart: 2 s of video).
const PCAP_PACKETS: usize = 100;

fn have(bin: &str, arg: &str) -> bool {
    Command::new(bin)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Two free UDP ports `p` and `p + 2` (SIPp sends video from its media port + 2).
fn free_media_port() -> u16 {
    for _ in 0..100 {
        let p = free_udp_port();
        if p < 60_000
            && UdpSocket::bind(("127.0.0.1", p)).is_ok()
            && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
            && UdpSocket::bind(("127.0.0.1", p + 2)).is_ok()
        {
            return p;
        }
    }
    panic!("no free media ports");
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A pcap (Ethernet, IPv4, UDP) of H.264 RTP (PT 96): `PCAP_PACKETS` packets, two per frame.
fn video_pcap(src_port: u16, dst_port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // DLT_EN10MB
    for i in 0..PCAP_PACKETS {
        let frame = i / 2;
        let last_of_frame = i % 2 == 1;
        let mut rtp = vec![0x80, if last_of_frame { 0x80 | 96 } else { 96 }];
        rtp.extend_from_slice(&(i as u16).to_be_bytes());
        rtp.extend_from_slice(&((frame as u32) * 3600).to_be_bytes());
        rtp.extend_from_slice(&0x5ee0_0001u32.to_be_bytes());
        rtp.push(if frame == 0 { 0x65 } else { 0x41 }); // IDR, then non-IDR slices
        rtp.extend((0..400).map(|b| (b as u8) ^ (i as u8)));
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&(ip_len as u16).to_be_bytes());
        ip.extend_from_slice(&(i as u16).to_be_bytes());
        ip.extend_from_slice(&[0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        let ck = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&ck.to_be_bytes());
        let mut pkt = vec![0u8; 12];
        pkt.extend_from_slice(&[0x08, 0x00]);
        pkt.extend_from_slice(&ip);
        pkt.extend_from_slice(&src_port.to_be_bytes());
        pkt.extend_from_slice(&dst_port.to_be_bytes());
        pkt.extend_from_slice(&(udp_len as u16).to_be_bytes());
        pkt.extend_from_slice(&[0, 0]);
        pkt.extend_from_slice(&rtp);
        let usec = (frame as u32) * 40_000 + (i as u32 % 2) * 100;
        out.extend_from_slice(&(usec / 1_000_000).to_le_bytes());
        out.extend_from_slice(&(usec % 1_000_000).to_le_bytes());
        out.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
        out.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
        out.extend_from_slice(&pkt);
    }
    out
}

/// Kills a child we started (by its own handle) when the test ends, however it ends.
struct Reaped(Child, &'static str);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        // SIGTERM first so Kamailio takes its worker processes down with it.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM: killing it", self.1);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes the test's scratch directory however the test ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The SIPp message logs in `dir` whose name starts with `prefix`, concatenated.
fn sipp_messages(dir: &Path, prefix: &str) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with("_messages.log") {
            all.push_str(&read(&e.path()));
        }
    }
    all
}

fn sip_tools_missing() -> bool {
    if have("kamailio", "-v") && have("sipp", "-v") {
        return false;
    }
    eprintln!(
        "\n\n!!!!!! SKIPPED tests/sip_kamailio.rs: `kamailio` and/or `sipp` not installed \
         (apt-get install kamailio sip-tester; .ci/run does) !!!!!!\n\n"
    );
    true
}

/// The viewer's video socket: counts the RTP (PT 96) the relay forwards to it.
struct Viewer {
    port: u16,
    received: Arc<AtomicUsize>,
    /// Where the packets came from (the relay's address on the viewer's side).
    from: Arc<std::sync::Mutex<Option<SocketAddr>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Viewer {
    fn bind(ip: &str) -> Viewer {
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        let port = sock.local_addr().unwrap().port();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let from = Arc::new(std::sync::Mutex::new(None));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (received, from, stop) = (received.clone(), from.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, src)) = sock.recv_from(&mut buf) {
                        if n > 12 && buf[0] >> 6 == 2 && buf[1] & 0x7f == 96 {
                            received.fetch_add(1, Ordering::Relaxed);
                            *from.lock().unwrap() = Some(src);
                        }
                    }
                }
            })
        };
        Viewer {
            port,
            received,
            from,
            stop,
            thread,
        }
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::Relaxed)
    }

    /// Stops counting: the packets received and the last source.
    fn finish(self) -> (usize, Option<SocketAddr>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        let from = *self.from.lock().unwrap();
        (self.received.load(Ordering::Relaxed), from)
    }
}

/// Kamailio with deploy/kamailio/kamailio.cfg in front of the relay, in a scratch directory.
struct Kamailio {
    dir: PathBuf,
    log: PathBuf,
    port: u16,
    _proc: Reaped,
    _scratch: Scratch,
}

impl Kamailio {
    /// Starts it (SIP on 127.0.0.1, plus `defines` as `-A` options) and waits for its ng ping.
    fn start(name: &str, ng: SocketAddr, api: &Api, defines: &[String]) -> Kamailio {
        let dir = std::env::temp_dir().join(format!("mcv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let scratch = Scratch(dir.clone());
        let port = free_udp_port();
        let log = dir.join("kamailio.log");
        let mut cmd = Command::new("kamailio");
        cmd.arg("-f")
            .arg(repo().join("deploy/kamailio/kamailio.cfg"))
            .args(["-DD", "-E", "-m", "32", "-M", "4", "-n", "1", "-Y"])
            .arg(&dir)
            .arg("-A")
            .arg(format!("LISTEN=udp:127.0.0.1:{port}"))
            .arg("-A")
            .arg(format!("NG_SOCK=\"udp:{ng}\""));
        for d in defines {
            cmd.arg("-A").arg(d);
        }
        let proc = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("kamailio runs");
        let proc = Reaped(proc, "kamailio");
        // Kamailio pings the relay at startup (ng `ping`); wait for that.
        assert!(
            eventually(Duration::from_secs(10), || {
                api.metrics()
                    .get("mcvideo_relay_ng_requests_total{command=\"ping\",result=\"ok\"}")
                    >= 1.0
            }),
            "Kamailio never pinged the relay over ng; its log:\n{}",
            read(&log)
        );
        std::thread::sleep(Duration::from_millis(300));
        Kamailio {
            dir,
            log,
            port,
            _proc: proc,
            _scratch: scratch,
        }
    }

    /// Kamailio's log and both SIPp message logs, for failure messages.
    fn diagnostics(&self) -> String {
        format!(
            "kamailio log:\n{}\n--- caller (uac) messages:\n{}\n--- viewer (uas) messages:\n{}",
            read(&self.log),
            sipp_messages(&self.dir, "uac_video_push"),
            sipp_messages(&self.dir, "uas_video_viewer")
        )
    }

    /// One call through Kamailio: the SIPp viewer (SIP and media on `viewer_ip`, answering
    /// with `viewer`'s port) and the SIPp camera on 127.0.0.1 playing the video pcap. Both
    /// scenarios must succeed. The SIP messages each received: (camera's, viewer's).
    fn call(&self, viewer_ip: &str, viewer: &Viewer) -> (String, String) {
        let uas_port = free_udp_port();
        let uac_port = free_udp_port();
        let uac_media = free_media_port();
        let pcap = self.dir.join("video.pcap");
        std::fs::write(&pcap, video_pcap(uac_media + 2, 9)).unwrap();
        let cfg_dir = repo().join("deploy/kamailio");
        let uas = Command::new("sipp")
            .current_dir(&self.dir)
            .arg("-sf")
            .arg(cfg_dir.join("uas_video_viewer.xml"))
            .args(["-i", viewer_ip, "-mi", viewer_ip, "-m", "1", "-nostdin"])
            .args(["-p", &uas_port.to_string()])
            .args(["-key", "video_port", &viewer.port.to_string()])
            .args([
                "-timeout",
                "30",
                "-timeout_error",
                "-trace_msg",
                "-trace_err",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp (uas) runs");
        let mut uas = Reaped(uas, "sipp uas");
        std::thread::sleep(Duration::from_millis(300));
        let callee_host = if viewer_ip.contains(':') {
            format!("[{viewer_ip}]")
        } else {
            viewer_ip.to_owned()
        };
        let uac_status = Command::new("sipp")
            .current_dir(&self.dir)
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("-sf")
            .arg(cfg_dir.join("uac_video_push.xml"))
            .args(["-i", "127.0.0.1", "-mi", "127.0.0.1", "-m", "1", "-nostdin"])
            .args(["-p", &uac_port.to_string()])
            .args(["-mp", &uac_media.to_string()])
            .args(["-key", "callee_host", &callee_host])
            .args(["-key", "callee_port", &uas_port.to_string()])
            .arg("-key")
            .arg("pcap")
            .arg(&pcap)
            .args([
                "-timeout",
                "30",
                "-timeout_error",
                "-trace_msg",
                "-trace_err",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("sipp (uac) runs");
        assert!(
            uac_status.success(),
            "SIPp caller failed ({uac_status}); {}",
            self.diagnostics()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !matches!(uas.0.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let uas_status = uas.0.try_wait().ok().flatten();
        assert!(
            uas_status.is_some_and(|s| s.success()),
            "SIPp viewer failed ({uas_status:?}); {}",
            self.diagnostics()
        );
        (
            sipp_messages(&self.dir, "uac_video_push"),
            sipp_messages(&self.dir, "uas_video_viewer"),
        )
    }
}

/// The SDP body's `o=` line, `c=` address and `m=video` port in a SIP message.
fn sdp_fields(msg: &str) -> (String, String, Option<u16>) {
    let line = |p: &str| {
        msg.lines()
            .find_map(|l| l.trim().strip_prefix(p).map(str::to_owned))
            .unwrap_or_default()
    };
    let port = line("m=video ")
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok());
    (line("o="), line("c="), port)
}

#[test]
fn kamailio_and_sipp_video_push_through_the_relay() {
    if sip_tools_missing() {
        return;
    }
    let mut c = Config::embedded();
    c.api.listen = "127.0.0.1:0".parse().unwrap();
    c.ng.listen = "127.0.0.1:0".into();
    c.media.port_min = RELAY_PORT_MIN;
    c.media.port_max = RELAY_PORT_MAX;
    c.media.workers = 1;
    // Kamailio hands the SIP From and To URIs over as the MCVideo IDs: a policy that allows
    // only these two shows they arrived.
    let mut settings = Settings::new(c);
    settings.policy = Some(std::sync::Arc::new(
        mcvideo_relay::control::policy::RulePolicy {
            push_allow: vec!["sip:camera@127.0.0.1*".into()],
            push_deny: vec![],
            receive_allow: vec!["sip:viewer@127.0.0.1*".into()],
            receive_deny: vec![],
        },
    ));
    let sc = Sidecar::start(settings).expect("relay starts");
    let api = Api::new(sc.local_addr(), None);
    let ng = sc.ng_addr().expect("ng listening");

    // The viewer's video socket: counts what the relay forwards.
    let viewer = Viewer::bind("127.0.0.1");
    let kamailio = Kamailio::start("sip", ng, &api, &[]);
    let (uac_msgs, uas_msgs) = kamailio.call("127.0.0.1", &viewer);
    let diagnostics = || kamailio.diagnostics();

    // The viewer's INVITE carried the relay's SDP: relay address, a relay port.
    let invite = uas_msgs
        .split("INVITE sip:")
        .nth(1)
        .unwrap_or_else(|| panic!("the viewer got no INVITE; {}", diagnostics()));
    assert!(invite.contains("c=IN IP4 127.0.0.1"), "{invite}");
    let port: u16 = invite
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=video "))
        .and_then(|m| m.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=video in the viewer's INVITE: {invite}"));
    assert!(
        (RELAY_PORT_MIN..=RELAY_PORT_MAX).contains(&port),
        "the viewer was offered port {port}, not a relay port: {invite}"
    );
    // And the camera's 200 OK named the relay too.
    let ok = uac_msgs.split("SIP/2.0 200 OK").nth(1).unwrap_or_default();
    let cam_port: Option<u16> = ok
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=video "))
        .and_then(|m| m.split_whitespace().next())
        .and_then(|p| p.parse().ok());
    assert!(
        cam_port.is_some_and(|p| (RELAY_PORT_MIN..=RELAY_PORT_MAX).contains(&p)),
        "the camera's 200 OK does not name a relay port: {ok}"
    );

    // The viewer received the camera's video through the relay.
    eventually(Duration::from_secs(2), || {
        viewer.received() >= PCAP_PACKETS * 9 / 10
    });
    let (got, _) = viewer.finish();
    eprintln!("the viewer received {got} of {PCAP_PACKETS} RTP packets through the relay");
    assert!(
        got >= PCAP_PACKETS * 9 / 10,
        "the viewer received {got} of {PCAP_PACKETS} packets; {}",
        diagnostics()
    );

    // BYE -> rtpengine_delete -> released.
    assert!(
        eventually(Duration::from_secs(5), || sc.engine().stats().active_calls
            == 0),
        "the call was not released after BYE; {}",
        diagnostics()
    );
    let calls = api.get("/v1/calls").json();
    assert_eq!(calls["calls"].as_array().map(Vec::len), Some(0), "{calls}");
    for cmd in ["offer", "answer", "delete"] {
        let series = format!("mcvideo_relay_ng_requests_total{{command=\"{cmd}\",result=\"ok\"}}");
        // Counted as the reply goes out, a moment after the engine acted.
        assert!(
            eventually(Duration::from_secs(2), || api.metrics().get(&series) == 1.0),
            "{series}: {}",
            api.metrics().get(&series)
        );
    }
    let m = api.metrics();
    assert_eq!(m.get("mcvideo_relay_calls_created_total"), 1.0);
    drop(kamailio);
    sc.shutdown();
}

fn iface_range(i: u16) -> RangeInclusive<u16> {
    IFACE_PORT_BASE + 20 * i..=IFACE_PORT_BASE + 20 * i + 19
}

#[test]
fn kamailio_direction_bridges_an_ipv4_camera_to_an_ipv6_viewer_on_the_named_networks() {
    if sip_tools_missing() {
        return;
    }
    let mut c = Config::embedded();
    c.api.listen = "127.0.0.1:0".parse().unwrap();
    c.ng.listen = "127.0.0.1:0".into();
    c.media.workers = 1;
    c.media.interfaces = [
        ("access", "127.0.0.1"),
        ("access-b", "127.0.0.2"),
        ("core", "::1"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (name, ip))| InterfaceConfig {
        name: (*name).into(),
        ip: ip.parse().unwrap(),
        advertised: None,
        port_min: *iface_range(i as u16).start(),
        port_max: *iface_range(i as u16).end(),
    })
    .collect();
    let sc = Sidecar::start(Settings::new(c)).expect("relay starts");
    let api = Api::new(sc.local_addr(), None);
    let ng = sc.ng_addr().expect("ng listening");

    // The camera is on the second IPv4 network, the viewer on the IPv6 one: the offer (sent by
    // the camera) names access-b first, the answer (sent by the viewer) names core first.
    let viewer = Viewer::bind("::1");
    let sip6 = free_udp_port();
    let kamailio = Kamailio::start(
        "sip-direction",
        ng,
        &api,
        &[
            format!("LISTEN6=udp:[::1]:{sip6}"),
            "OFFER_DIRECTION=\" direction=access-b direction=core\"".into(),
            "ANSWER_DIRECTION=\" direction=core direction=access-b\"".into(),
        ],
    );
    let (uac_msgs, uas_msgs) = kamailio.call("::1", &viewer);
    let diagnostics = || kamailio.diagnostics();

    // The viewer's INVITE: the relay's IPv6 address (c= and, replace-origin, o=) and a port of
    // core's range.
    let invite = uas_msgs
        .split("INVITE sip:")
        .nth(1)
        .unwrap_or_else(|| panic!("the viewer got no INVITE; {}", diagnostics()));
    let (o, conn, port) = sdp_fields(invite);
    assert_eq!(conn, "IN IP6 ::1", "{invite}");
    assert!(o.ends_with(" IN IP6 ::1"), "o= is the relay's: {invite}");
    assert!(
        port.is_some_and(|p| iface_range(2).contains(&p)),
        "the viewer was offered {port:?}, not a port of core: {invite}"
    );
    // The camera's 200 OK: the relay's address on access-b (127.0.0.2), not access's.
    let ok = uac_msgs
        .split("SIP/2.0 200 OK")
        .nth(1)
        .unwrap_or_else(|| panic!("the camera got no 200 OK; {}", diagnostics()));
    let (o, conn, port) = sdp_fields(ok);
    assert_eq!(conn, "IN IP4 127.0.0.2", "{ok}");
    assert!(o.ends_with(" IN IP4 127.0.0.2"), "o= is the relay's: {ok}");
    assert!(
        port.is_some_and(|p| iface_range(1).contains(&p)),
        "the camera was given {port:?}, not a port of access-b: {ok}"
    );

    // The camera's IPv4 video reached the IPv6 viewer, from the relay's core address.
    eventually(Duration::from_secs(2), || {
        viewer.received() >= PCAP_PACKETS * 9 / 10
    });
    let (got, from) = viewer.finish();
    eprintln!("the IPv6 viewer received {got} of {PCAP_PACKETS} RTP packets through the relay");
    assert!(
        got >= PCAP_PACKETS * 9 / 10,
        "the viewer received {got} of {PCAP_PACKETS} packets; {}",
        diagnostics()
    );
    let from = from.expect("a source");
    assert!(
        from.ip() == "::1".parse::<std::net::IpAddr>().unwrap()
            && iface_range(2).contains(&from.port()),
        "the video came from {from}, not the relay's core leg"
    );
    assert!(
        eventually(Duration::from_secs(5), || sc.engine().stats().active_calls
            == 0),
        "the call was not released after BYE; {}",
        diagnostics()
    );
    for cmd in ["offer", "answer", "delete"] {
        let series = format!("mcvideo_relay_ng_requests_total{{command=\"{cmd}\",result=\"ok\"}}");
        assert!(
            eventually(Duration::from_secs(2), || api.metrics().get(&series) == 1.0),
            "{series}: {}",
            api.metrics().get(&series)
        );
    }
    drop(kamailio);
    sc.shutdown();
}
