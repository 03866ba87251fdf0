//! The relay under test and the calls through it: an in-process [`Engine`], a sidecar's HTTP API,
//! or a sidecar this run starts; parallel call setup and release with their rates.

use super::args::{Options, Target};
use super::http::HttpClient;
use super::netns::Side;
use super::report::SetupFigures;
use super::sys::Stop;
use super::traffic::new_histogram;
use crate::control::call::{AnswerCall, CreateCall, SetupError};
use crate::control::MediaSecurity;
use crate::keys::{MasterKey, SrtpSuite};
use crate::relay::{Engine, EngineConfig};
use crate::sdp::{MediaKind, SessionDescription};
use hdrhistogram::Histogram;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The SRTP suite the load uses (the MC profile).
pub(crate) const SUITE: SrtpSuite = SrtpSuite::AeadAes128Gcm;

/// The port range a relay needs for `calls` calls (two port pairs each, rtcp-mux) with room.
pub(crate) fn default_ports(calls: usize) -> (u16, u16) {
    let min = 20_000u32;
    let max = (min + calls as u32 * 4 + 64).min(65_534);
    (min as u16, max as u16)
}

/// Media inactivity and T1 of the loadgen's engine in group calls (the defaults, 10 s and 30 s,
/// would end a transmission or the call while the floor runs).
pub(crate) const GROUP_TIMERS: Duration = Duration::from_secs(24 * 3600);

/// A fresh random master key.
pub(crate) fn fresh_key() -> Result<MasterKey, String> {
    use ring::rand::SecureRandom;
    let mut material = vec![0u8; SUITE.key_len() + SUITE.salt_len()];
    ring::rand::SystemRandom::new()
        .fill(&mut material)
        .map_err(|_| "the OS random generator failed".to_owned())?;
    MasterKey::new(SUITE, material).map_err(|e| e.to_string())
}

/// An SDP with one video stream, rtcp-mux and no MCVideo control line (the grant is implicit
/// on acceptance; two relay ports per call).
pub(crate) fn media_sdp(
    name: &str,
    side: super::netns::Side,
    port: u16,
    ssrc: Option<u32>,
    key: Option<&MasterKey>,
) -> String {
    let proto = if key.is_some() { "RTP/SAVP" } else { "RTP/AVP" };
    let ip = super::netns::ip(side);
    let mut s = format!(
        "v=0\r\no={name} 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=video {port} {proto} 96\r\na=rtpmap:96 H264/90000\r\na=rtcp-mux\r\n"
    );
    if let Some(k) = key {
        s.push_str(&format!("a=crypto:{}\r\n", k.sdes_attribute(1)));
    }
    if let Some(ssrc) = ssrc {
        s.push_str(&format!("a=ssrc:{ssrc} cname:{name}\r\n"));
    }
    s
}

/// The video stream's address and first usable SRTP key in an SDP the relay handed out.
pub(crate) fn video_of(sdp: &str) -> Result<(SocketAddr, Option<MasterKey>), String> {
    let d = SessionDescription::parse(sdp).map_err(|e| format!("relay SDP: {e}"))?;
    let v = d
        .media()
        .iter()
        .find(|m| m.kind == MediaKind::Video)
        .ok_or("relay SDP has no video stream")?;
    let addr = v
        .rtp_addr()
        .ok_or("relay SDP's video stream has no address")?;
    let key = v.crypto.iter().find_map(|c| {
        SrtpSuite::from_name(&c.suite).and_then(|s| MasterKey::from_base64(s, &c.key_b64).ok())
    });
    Ok((addr, key))
}

/// A sidecar started by this run (stopped when dropped).
pub(crate) struct Spawned {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Spawned {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn start(o: &Options) -> Result<Spawned, String> {
        let bin = match &o.relay_bin {
            Some(b) => b.clone(),
            None => std::env::current_exe().map_err(|e| format!("current executable: {e}"))?,
        };
        let (min, max) = o.ports.unwrap_or_else(|| default_ports(o.calls));
        let mut cmd = Command::new(&bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--ports"])
            .arg(format!("{min}-{max}"));
        if super::netns::active() {
            cmd.arg("--media-ip")
                .arg(super::netns::RELAY_IP.to_string());
        }
        cmd.args(&o.relay_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        if let Some(t) = &o.token {
            cmd.env("MCVIDEO_RELAY_API_TOKEN", t);
        }
        let mut child = super::sys::spawn_own_group(&mut cmd)
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err("the relay's stdout is not piped".into());
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let _ = std::thread::Builder::new()
            .name("lg-relay-out".into())
            .spawn(move || {
                let mut lines = std::io::BufReader::new(stdout).lines();
                let first = lines.next();
                let _ = tx.send(first.map(|l| l.unwrap_or_default()));
                // Keep draining so the relay never blocks on a full pipe.
                for _ in lines {}
            });
        let first = rx.recv_timeout(Duration::from_secs(20));
        let addr = first.ok().flatten().and_then(|l| {
            l.strip_prefix("listening on ")
                .and_then(|a| a.trim().parse().ok())
        });
        match addr {
            Some(addr) => Ok(Spawned { child, addr }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "{} serve did not print `listening on ADDR` on its first line \
                     (use --api URL and --relay-pid PID with a relay started by hand)",
                    bin.display()
                ))
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // SIGTERM for a clean shutdown, then SIGKILL after 5 s.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        super::sys::reap(
            &mut self.child,
            Duration::from_secs(5),
            Duration::from_millis(20),
        );
    }
}

/// The relay under test.
pub(crate) enum Relay {
    Engine(Arc<Engine>),
    Api {
        url: String,
        token: Option<String>,
        pid: Option<u32>,
        spawned: Option<Spawned>,
    },
}

impl Relay {
    /// Starts or reaches the relay the options name; `None` for `--direct`.
    pub(crate) fn open(o: &Options) -> Result<Option<Relay>, String> {
        Ok(Some(match &o.target {
            Target::Direct | Target::Forwarder => return Ok(None),
            Target::Engine => {
                let (port_min, port_max) = o.ports.unwrap_or_else(|| default_ports(o.port_units()));
                let mut group = crate::control::server::TcConfig::default();
                if o.group_receivers.is_some() {
                    // The transmitter is granted once, before the floor runs; it sends nothing
                    // to the relay while the floor (or a sweep's floors) run.
                    group.media_inactivity = GROUP_TIMERS;
                    group.t1_inactivity = GROUP_TIMERS;
                }
                let engine = Engine::start(EngineConfig {
                    port_min,
                    port_max,
                    workers: o.workers,
                    group,
                    kernel_offload: o.kernel_offload,
                    ..EngineConfig::default()
                })
                .map_err(|e| format!("engine: {e}"))?;
                Relay::Engine(Arc::new(engine))
            }
            Target::Api(url) => Relay::Api {
                url: url.clone(),
                token: o.token.clone(),
                pid: o.relay_pid,
                spawned: None,
            },
            Target::Spawn => {
                let s = Spawned::start(o)?;
                Relay::Api {
                    url: format!("http://{}", s.addr),
                    token: o.token.clone(),
                    pid: Some(s.pid()),
                    spawned: Some(s),
                }
            }
        }))
    }

    /// The relay's process, when it is another one.
    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            Relay::Engine(_) => None,
            Relay::Api { pid, .. } => *pid,
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Relay::Engine(_) => "engine",
            Relay::Api {
                spawned: Some(_), ..
            } => "spawned",
            Relay::Api { .. } => "api",
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Relay::Engine(e) => format!(
                "in-process engine, {} worker thread(s), ports {}-{}",
                e.config().workers,
                e.config().port_min,
                e.config().port_max
            ),
            Relay::Api {
                url,
                pid,
                spawned: Some(_),
                ..
            } => format!("spawned relay at {url} (pid {})", pid.unwrap_or_default()),
            Relay::Api { url, pid, .. } => match pid {
                Some(p) => format!("relay API at {url} (pid {p})"),
                None => format!("relay API at {url} (no --relay-pid: no relay CPU or memory)"),
            },
        }
    }

    fn connect(&self) -> Result<Conn<'_>, String> {
        Ok(match self {
            Relay::Engine(e) => Conn::Engine(e),
            Relay::Api { url, token, .. } => Conn::Http(HttpClient::new(url, token.clone())?),
        })
    }
}

/// One client of the relay: the engine itself, or an HTTP connection.
enum Conn<'a> {
    Engine(&'a Engine),
    Http(HttpClient),
}

/// One call to set up.
pub(crate) struct CallSpec {
    pub(crate) id: String,
    pub(crate) caller_id: String,
    pub(crate) callee_id: String,
    pub(crate) caller_sdp: String,
    pub(crate) callee_sdp: String,
}

/// Call `i` of a run whose IDs start with `prefix`: the caller at `caller` (port, SSRC, key),
/// the callee at `callee` (port, key).
pub(crate) fn call_spec(
    prefix: &str,
    i: usize,
    caller: (u16, Option<u32>, Option<&MasterKey>),
    callee: (u16, Option<&MasterKey>),
) -> CallSpec {
    let (caller_id, callee_id) = party_ids(i);
    CallSpec {
        id: format!("{prefix}-{i}"),
        caller_id,
        callee_id,
        caller_sdp: media_sdp("lgcaller", Side::Caller, caller.0, caller.1, caller.2),
        callee_sdp: media_sdp("lgcallee", Side::Callee, callee.0, None, callee.1),
    }
}

fn api_error(what: &str, status: u16, body: &str) -> String {
    let detail = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            Some(format!(
                "{}: {}",
                e.get("code")?.as_str()?,
                e.get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or_default()
            ))
        })
        .unwrap_or_else(|| body.chars().take(200).collect());
    format!("{what}: HTTP {status}: {detail}")
}

fn json_field(body: &str, field: &str) -> Result<String, String> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get(field)?.as_str().map(str::to_owned))
        .ok_or_else(|| format!("the response has no `{field}`"))
}

impl Conn<'_> {
    /// Creates and answers a call; returns (the offer for the callee, the answer for the caller).
    fn establish(
        &mut self,
        spec: &CallSpec,
        security: MediaSecurity,
    ) -> Result<(String, String), String> {
        match self {
            Conn::Engine(e) => {
                let offer = e
                    .create_call(CreateCall {
                        call_id: Some(spec.id.clone().into()),
                        caller_id: spec.caller_id.clone(),
                        caller_sdp: spec.caller_sdp.clone(),
                        callee_id: spec.callee_id.clone(),
                        video_push: true,
                        video_pull: false,
                        commencement_mode: None,
                        media_security: security,
                        caller_tc_key: None,
                        callee_interface: None,
                        caller_interface: None,
                    })
                    .map_err(|e| format!("create {}: {e}", spec.id))?;
                match e.accept_call(
                    &spec.id,
                    AnswerCall {
                        callee_sdp: spec.callee_sdp.clone(),
                        callee_tc_key: None,
                    },
                ) {
                    Ok(a) => Ok((offer.sdp_offer, a.sdp_answer)),
                    Err(err) => {
                        let _ = e.release_call(&spec.id);
                        Err(format!("answer {}: {err}", spec.id))
                    }
                }
            }
            Conn::Http(c) => {
                let body = serde_json::json!({
                    "call_id": spec.id,
                    "caller": {"mcvideo_id": spec.caller_id, "sdp_offer": spec.caller_sdp},
                    "callee": {"mcvideo_id": spec.callee_id},
                    "video_push": true,
                    "media_security": security.as_str(),
                })
                .to_string();
                let r = c.request("POST", "/v1/calls", Some(&body))?;
                if r.status != 201 {
                    return Err(api_error(
                        &format!("POST /v1/calls ({})", spec.id),
                        r.status,
                        &r.body,
                    ));
                }
                let offer = json_field(&r.body, "sdp_offer")?;
                let body = serde_json::json!({ "sdp_answer": spec.callee_sdp }).to_string();
                let path = format!("/v1/calls/{}/answer", spec.id);
                let answered = c.request("POST", &path, Some(&body)).and_then(|r| {
                    if r.status == 200 {
                        json_field(&r.body, "sdp_answer")
                    } else {
                        Err(api_error(&format!("POST {path}"), r.status, &r.body))
                    }
                });
                match answered {
                    Ok(a) => Ok((offer, a)),
                    Err(e) => {
                        let _ = c.request("DELETE", &format!("/v1/calls/{}", spec.id), None);
                        Err(e)
                    }
                }
            }
        }
    }

    fn release(&mut self, id: &str) -> Result<(), String> {
        match self {
            Conn::Engine(e) => match e.release_call(id) {
                // A call whose setup failed was released on the way (like HTTP 404).
                Ok(_) | Err(SetupError::UnknownCall(_)) => Ok(()),
                Err(err) => Err(format!("release {id}: {err}")),
            },
            Conn::Http(c) => {
                let path = format!("/v1/calls/{id}");
                let r = c.request("DELETE", &path, None)?;
                match r.status {
                    200 | 204 | 404 => Ok(()),
                    s => Err(api_error(&format!("DELETE {path}"), s, &r.body)),
                }
            }
        }
    }
}

/// How a parallel setup went.
pub(crate) struct SetupRun<T> {
    /// Per call: what `on_ok` made of the SDPs, or why it failed; `None` = not tried (stopped).
    pub(crate) results: Vec<Option<Result<T, String>>>,
    pub(crate) elapsed: Duration,
    /// Create + answer latency, ns.
    pub(crate) latency: Histogram<u64>,
    pub(crate) concurrency: usize,
}

impl<T> SetupRun<T> {
    pub(crate) fn established(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r, Some(Ok(_))))
            .count()
    }

    pub(crate) fn failed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r, Some(Err(_))))
            .count()
    }

    pub(crate) fn first_error(&self) -> Option<&str> {
        self.results.iter().find_map(|r| match r {
            Some(Err(e)) => Some(e.as_str()),
            _ => None,
        })
    }

    /// The report's setup figures for this run (no memory figures).
    pub(crate) fn figures(&self) -> SetupFigures {
        SetupFigures {
            requested: self.results.len(),
            established: self.established(),
            failed: self.failed(),
            first_error: self.first_error().map(str::to_owned),
            seconds: self.elapsed.as_secs_f64(),
            concurrency: self.concurrency,
            latency_ms: SetupFigures::latency_from(&self.latency),
            ..SetupFigures::default()
        }
    }
}

/// Sets up `n` calls with `concurrency` clients. `spec(i)` makes call `i`; `on_ok(i, offer,
/// answer)` keeps what the run needs of it (a failure there counts as a failed call, which is
/// still established: its ID is in `SetupRun::results` only as an error, so callers release
/// every call they asked for by ID).
pub(crate) fn setup_calls<T: Send>(
    relay: &Relay,
    n: usize,
    concurrency: usize,
    security: MediaSecurity,
    stop: &Stop,
    spec: &(dyn Fn(usize) -> CallSpec + Sync),
    on_ok: &(dyn Fn(usize, &str, &str) -> Result<T, String> + Sync),
) -> Result<SetupRun<T>, String> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<T, String>>>> = Mutex::new((0..n).map(|_| None).collect());
    let latency = Mutex::new(new_histogram());
    let workers = concurrency.clamp(1, n.max(1));
    let started = Instant::now();
    let errors: Vec<String> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (next, results, latency) = (&next, &results, &latency);
                std::thread::Builder::new()
                    .name(format!("lg-setup-{w}"))
                    .spawn_scoped(sc, move || -> Result<(), String> {
                        let mut conn = relay.connect()?;
                        let mut hist = new_histogram();
                        loop {
                            if stop.requested() {
                                break;
                            }
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= n {
                                break;
                            }
                            let s = spec(i);
                            let t0 = Instant::now();
                            let r = conn
                                .establish(&s, security)
                                .and_then(|(offer, answer)| on_ok(i, &offer, &answer));
                            hist.saturating_record(t0.elapsed().as_nanos() as u64);
                            if let Some(slot) =
                                results.lock().unwrap_or_else(|e| e.into_inner()).get_mut(i)
                            {
                                *slot = Some(r);
                            }
                        }
                        let _ = latency.lock().unwrap_or_else(|e| e.into_inner()).add(&hist);
                        Ok(())
                    })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| match h {
                Ok(h) => match h.join() {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some("a setup thread panicked".to_owned()),
                },
                Err(e) => Some(format!("setup thread: {e}")),
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = errors.into_iter().next() {
        if results.iter().all(Option::is_none) {
            return Err(e);
        }
    }
    Ok(SetupRun {
        results,
        elapsed,
        latency: latency.into_inner().unwrap_or_else(|e| e.into_inner()),
        concurrency: workers,
    })
}

/// How a release went.
#[derive(Debug, Clone)]
pub(crate) struct Teardown {
    pub(crate) released: usize,
    pub(crate) failed: usize,
    pub(crate) first_error: Option<String>,
    pub(crate) elapsed: Duration,
}

/// Releases the calls `ids` with `concurrency` clients (Ctrl-C does not stop this).
pub(crate) fn release_calls(relay: &Relay, ids: &[String], concurrency: usize) -> Teardown {
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let first_error = Mutex::new(None);
    let started = Instant::now();
    let workers = concurrency.clamp(1, ids.len().max(1));
    std::thread::scope(|sc| {
        for w in 0..workers {
            let (next, failed, first_error) = (&next, &failed, &first_error);
            let _ = std::thread::Builder::new()
                .name(format!("lg-release-{w}"))
                .spawn_scoped(sc, move || {
                    let keep_first = |e: String| {
                        let mut first = first_error.lock().unwrap_or_else(|e| e.into_inner());
                        first.get_or_insert(e);
                    };
                    let mut conn = match relay.connect() {
                        Ok(c) => Some(c),
                        Err(e) => {
                            keep_first(e);
                            None
                        }
                    };
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(id) = ids.get(i) else { break };
                        let r = match conn.as_mut() {
                            Some(c) => c.release(id),
                            None => Err("no connection to the relay".into()),
                        };
                        if let Err(e) = r {
                            failed.fetch_add(1, Ordering::Relaxed);
                            keep_first(e);
                        }
                    }
                });
        }
    });
    let failed = failed.into_inner();
    Teardown {
        released: ids.len().saturating_sub(failed),
        failed,
        first_error: first_error.into_inner().unwrap_or_else(|e| e.into_inner()),
        elapsed: started.elapsed(),
    }
}

/// Calls that must be released: on [`CallSet::release`] or, failing that, when dropped (an
/// error or a panic on the way).
pub(crate) struct CallSet<'r> {
    relay: &'r Relay,
    ids: Vec<String>,
    concurrency: usize,
}

impl<'r> CallSet<'r> {
    pub(crate) fn new(relay: &'r Relay, ids: Vec<String>, concurrency: usize) -> Self {
        CallSet {
            relay,
            ids,
            concurrency,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    pub(crate) fn release(mut self) -> Teardown {
        let ids = std::mem::take(&mut self.ids);
        release_calls(self.relay, &ids, self.concurrency)
    }
}

impl Drop for CallSet<'_> {
    fn drop(&mut self) {
        if !self.ids.is_empty() {
            let ids = std::mem::take(&mut self.ids);
            let t = release_calls(self.relay, &ids, self.concurrency);
            if t.failed > 0 {
                eprintln!(
                    "loadgen: {} call(s) could not be released: {}",
                    t.failed,
                    t.first_error.unwrap_or_default()
                );
            }
        }
    }
}

/// A call ID prefix unique to this run (the relay may be shared).
pub(crate) fn id_prefix() -> String {
    let t = std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .map_or(0, |d| d.as_micros() % 1_000_000_000);
    format!("lg-{}-{t}", std::process::id())
}

/// The MCVideo IDs of call `i`.
pub(crate) fn party_ids(i: usize) -> (String, String) {
    (
        format!("sip:lg-caller-{i}@loadgen.invalid"),
        format!("sip:lg-callee-{i}@loadgen.invalid"),
    )
}
