//! The sidecar tests' API client (over the crate's one HTTP client, `src/loadgen/http.rs`,
//! compiled in here from its source so that these tests do not need the `loadgen` feature):
//! requests, a Server-Sent Events reader, a Prometheus text reader, and SDP/UDP helpers.
#![allow(dead_code, unreachable_pub, missing_docs)]
#![allow(clippy::disallowed_methods)] // tests read the clock for their deadlines

#[path = "../../src/loadgen/http.rs"]
mod http;

use http::{read_chunk, HttpClient, Response};
use serde_json::Value;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A whole response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl From<Response> for Resp {
    fn from(r: Response) -> Resp {
        Resp {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// `(status, error.code, error.message)` of an error response.
    pub fn error(&self) -> (u16, String, String) {
        let v = self.json();
        (
            self.status,
            v["error"]["code"].as_str().unwrap_or_default().to_owned(),
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    }
}

/// An API client for one address and (optional) token.
#[derive(Debug, Clone)]
pub struct Api {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Api {
    pub fn new(addr: SocketAddr, token: Option<&str>) -> Api {
        Api {
            addr,
            token: token.map(str::to_owned),
        }
    }

    fn client(&self) -> HttpClient {
        HttpClient::new(&format!("http://{}", self.addr), self.token.clone())
            .expect("an API address")
    }

    /// Sends one request (`Connection: close`) and reads the whole response.
    pub fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut all = vec![("Connection", "close")];
        all.extend_from_slice(headers);
        self.client()
            .send(method, path, &all, body)
            .map(Resp::from)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn get(&self, path: &str) -> Resp {
        self.raw("GET", path, &[], b"")
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.raw("DELETE", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.raw(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    pub fn put(&self, path: &str, body: &Value) -> Resp {
        self.raw(
            "PUT",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    pub fn metrics(&self) -> Metrics {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "{}", r.body);
        Metrics(r.body)
    }

    /// Opens `GET /v1/events`; once this returns, the server has subscribed.
    pub fn events(&self) -> Events {
        let stream = self
            .client()
            .stream("GET", "/v1/events", &[("Accept", "text/event-stream")])
            .expect("GET /v1/events");
        assert_eq!(stream.status, 200, "event stream status");
        assert!(
            stream
                .header("content-type")
                .is_some_and(|v| v.starts_with("text/event-stream")),
            "{:?}",
            stream.headers
        );
        assert!(stream.chunked(), "{:?}", stream.headers);
        let s = stream.conn.get_ref().try_clone().expect("clone the stream");
        let mut r = stream.conn;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut pending = String::new();
            let (mut name, mut data) = (String::new(), String::new());
            while let Ok(Some(chunk)) = read_chunk(&mut r) {
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(i) = pending.find('\n') {
                    let line: String = pending.drain(..=i).collect();
                    let line = line.trim_end_matches(['\r', '\n']);
                    if line.is_empty() {
                        if !name.is_empty() || !data.is_empty() {
                            let v = serde_json::from_str(&data).unwrap_or(Value::Null);
                            if tx
                                .send(SseEvent {
                                    name: std::mem::take(&mut name),
                                    data: v,
                                })
                                .is_err()
                            {
                                return;
                            }
                            data.clear();
                        }
                    } else if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
            }
            let _ = tx.send(SseEvent {
                name: "<end of stream>".into(),
                data: Value::Null,
            });
        });
        Events { rx, _stream: s }
    }
}

#[derive(Debug, Clone)]
pub struct SseEvent {
    pub name: String,
    pub data: Value,
}

pub struct Events {
    rx: mpsc::Receiver<SseEvent>,
    _stream: TcpStream,
}

impl Events {
    pub fn next(&self, timeout: Duration) -> Option<SseEvent> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Events of `call_id` until (and including) `call.released`, or until `timeout`.
    pub fn until_released(&self, call_id: &str, timeout: Duration) -> Vec<SseEvent> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(ev) = self.next(left) else { break };
            if ev.name == "<end of stream>" {
                got.push(ev);
                break;
            }
            if ev.data["call_id"] == call_id {
                let done = ev.name == "call.released";
                got.push(ev);
                if done {
                    break;
                }
            }
        }
        got
    }

    /// Whether the server ended the stream within `timeout`.
    pub fn ends_within(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(ev) if ev.name == "<end of stream>" => return true,
                Some(_) => continue,
                None => return false,
            }
        }
        false
    }
}

pub fn names(evs: &[SseEvent]) -> Vec<&str> {
    evs.iter().map(|e| e.name.as_str()).collect()
}

/// A Prometheus text exposition.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the series written exactly as `series` (`name` or `name{labels}`); 0 when
    /// absent.
    pub fn get(&self, series: &str) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                (k == series).then(|| v.parse::<f64>().ok())?
            })
            .unwrap_or(0.0)
    }

    pub fn has(&self, series: &str) -> bool {
        self.0
            .lines()
            .any(|l| l.rsplit_once(' ').is_some_and(|(k, _)| k == series))
    }
}

/// A client's media sockets: video RTP and RTCP, held open until dropped.
pub struct Client {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
}

impl Client {
    pub fn new() -> Client {
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
        rtp.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        Client { rtp, rtcp }
    }

    /// A plain RTP video SDP naming these sockets (and `a=ssrc` when given).
    pub fn sdp(&self, name: &str, ssrc: Option<u32>) -> String {
        let mut s = format!(
            "v=0\r\no={name} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=video {} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=rtcp:{}\r\n",
            self.rtp.local_addr().unwrap().port(),
            self.rtcp.local_addr().unwrap().port()
        );
        if let Some(ssrc) = ssrc {
            s.push_str(&format!("a=ssrc:{ssrc} cname:{name}\r\n"));
        }
        s
    }
}

/// The relay's video address in an SDP it handed out.
pub fn relay_video_addr(sdp: &str) -> SocketAddr {
    let mut ip = None;
    let mut port = None;
    for l in sdp.lines() {
        if let Some(c) = l.strip_prefix("c=IN IP4 ") {
            ip = Some(c.trim().to_owned());
        }
        if let Some(m) = l.strip_prefix("m=video ") {
            port = m.split_whitespace().next().map(str::to_owned);
        }
    }
    format!("{}:{}", ip.expect("c= line"), port.expect("m=video line"))
        .parse()
        .unwrap()
}

/// A plain RTP packet (V=2, PT 96).
pub fn rtp_packet(seq: u16, ssrc: u32, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..payload_len).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// The `POST /v1/calls` body.
pub fn create_body(call_id: &str, caller: &str, callee: &str, sdp: &str) -> Value {
    serde_json::json!({
        "call_id": call_id,
        "caller": {"mcvideo_id": caller, "sdp_offer": sdp},
        "callee": {"mcvideo_id": callee},
        "video_push": true,
    })
}

/// Polls `f` until it is true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `mcvideo-relay serve` process started by a test: its first stdout line (`listening on
/// ADDR`) read, its stderr gathered as it comes.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServeProcess {
    /// Starts `cmd` (a `serve` command line with its environment set) with piped output and
    /// waits at most 20 s for `listening on ADDR`; panics with `what` and the stderr otherwise.
    pub fn start(mut cmd: std::process::Command, what: &str) -> ServeProcess {
        use std::io::{BufRead, BufReader, Read};
        use std::process::Stdio;
        use std::sync::{Arc, Mutex};
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the relay binary starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let first = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "{what}: no `listening on` line; stderr:\n{}",
                    stderr.lock().unwrap()
                )
            });
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{what}: first stdout line: {first:?}"))
            .parse()
            .unwrap();
        ServeProcess {
            child,
            addr,
            stderr,
        }
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// A relay a test started, killed (SIGKILL) when dropped, also when an assertion fails half
/// way: it would keep its ports and, as root, its kernel fast path on `lo`.
pub struct KilledOnDrop(pub ServeProcess);

impl std::ops::Deref for KilledOnDrop {
    type Target = ServeProcess;
    fn deref(&self) -> &ServeProcess {
        &self.0
    }
}

impl std::ops::DerefMut for KilledOnDrop {
    fn deref_mut(&mut self) -> &mut ServeProcess {
        &mut self.0
    }
}

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

/// Moves the calling thread (and the threads and processes it starts from now on) into the
/// network namespace `ns` (made with `ip netns add`).
#[cfg(feature = "relay")]
pub fn enter_netns(ns: &str) {
    use std::os::fd::AsFd;
    let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    rustix::thread::move_into_link_name_space(
        f.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap();
}

/// Deletes the network namespaces `names` (their veths go with them), ignoring any missing.
pub fn delete_netns<'a>(names: impl IntoIterator<Item = &'a String>) {
    for n in names {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", n])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
