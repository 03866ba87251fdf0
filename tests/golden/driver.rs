//! The golden-file driver for one-to-one calls: runs a scenario on virtual time through the
//! public sans-IO API ([`CallTable`] and [`Call`] only) and writes a transcript of every input
//! and every output, one line each, in the order they happen.
//!
//! Transcript lines:
//!
//! * `# text` — a comment from the scenario;
//! * `at <ms>` — virtual time (ms since the scenario's base instant), written before the first
//!   line that happens at a new time;
//! * `> ...` — an input: `> create`, `> accept`, `> reject`, `> release`, `> remove`,
//!   `> rx <party> <hex>` (a transmission control datagram), `> media <party> <packets>`,
//!   `> bye <party>`, `> timer <call>` (the call's `poll_timeout` came due and
//!   `handle_timeout` ran);
//! * `offer ...`, `answer ...`, `sdp <for party> "<sdp>"`, `error <code>: <message>` — results
//!   of the table operations;
//! * `tx <party> <hex>` — a datagram from `poll_transmit`, byte for byte;
//! * `event <name> <json>` — a call event as the sidecar's SSE sends it (`event:` name and
//!   `data:` JSON, keys sorted);
//! * `timeout <ms>|none` — the call's `poll_timeout`, whenever it changes;
//! * `forward caller=<bool> callee=<bool>` — what the call's arbiter lets through, whenever it
//!   changes;
//! * `stats <call> ...` — transmission control counters at the end (or when a call leaves the
//!   table).
//!
//! After every input the call is drained in the order of the `control` module docs:
//! `poll_transmit` until `None`, then `poll_event` until `None`, then `poll_timeout`.
//!
//! Everything that depends on the call implementation is in this file (the scenarios only call
//! the methods below), so a refactor of the server behind [`Call`] changes nothing in the
//! scenarios; if `Call`'s API itself changes, only the few functions here are re-pointed.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use mcvideo_relay::control::call::{
    AnswerCall, Call, CallConfig, CallTable, CreateCall, PortAllocator, RelayPort, SeededEntropy,
};
use mcvideo_relay::control::policy::{AllowAll, AuthorizationPolicy};
use mcvideo_relay::control::registry::UeRegistry;
use mcvideo_relay::control::{Party, ReleaseReason};
use mcvideo_relay::sdp::MediaKind;
use mcvideo_relay::wire::tc::{EmitOptions, TcMessage};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The relay's address in every SDP the relay writes.
pub const RELAY_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9));

/// Port pairs from 40000 up; freed pairs are reused last-freed first.
#[derive(Debug)]
pub struct Ports {
    next: u16,
    limit: u16,
    in_use: HashSet<RelayPort>,
    free_list: Vec<RelayPort>,
}

impl Ports {
    pub fn new(pairs: u16) -> Self {
        Ports {
            next: 40_000,
            limit: 40_000 + pairs * 2,
            in_use: HashSet::new(),
            free_list: Vec::new(),
        }
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }
}

impl PortAllocator for Ports {
    fn allocate(&mut self, _party: Party, _kind: &MediaKind, rtcp_mux: bool) -> Option<RelayPort> {
        let p = match self.free_list.pop() {
            Some(p) => p,
            None => {
                if self.next >= self.limit {
                    return None;
                }
                let port = self.next;
                self.next += 2;
                RelayPort {
                    rtp: SocketAddr::new(RELAY_IP, port),
                    rtcp: SocketAddr::new(RELAY_IP, port + 1),
                }
            }
        };
        let p = if rtcp_mux {
            RelayPort { rtcp: p.rtp, ..p }
        } else {
            p
        };
        assert!(self.in_use.insert(p), "port handed out twice");
        Some(p)
    }

    fn free(&mut self, port: RelayPort) {
        assert!(self.in_use.remove(&port), "freed a port not in use");
        self.free_list.push(RelayPort {
            rtp: port.rtp,
            rtcp: SocketAddr::new(port.rtp.ip(), port.rtp.port() + 1),
        });
    }
}

/// What the transcript last said about a call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Seen {
    timeout: Option<Option<u64>>,
    forward: Option<String>,
}

/// One scenario: a call table on virtual time and the transcript so far.
pub struct Driver {
    pub table: CallTable,
    pub ports: Ports,
    base: Instant,
    now: Instant,
    logged_at: Option<Instant>,
    seen: BTreeMap<String, Seen>,
    log: String,
}

impl Driver {
    pub fn new(config: CallConfig) -> Self {
        Self::with_policy(config, Arc::new(AllowAll))
    }

    #[allow(clippy::disallowed_methods)] // the scenario's base instant; the core is only given it
    pub fn with_policy(config: CallConfig, policy: Arc<dyn AuthorizationPolicy>) -> Self {
        let base = Instant::now();
        Driver {
            table: CallTable::new(config, policy, Box::new(SeededEntropy(7))),
            ports: Ports::new(1000),
            base,
            now: base,
            logged_at: None,
            seen: BTreeMap::new(),
            log: String::new(),
        }
    }

    /// The UE registry (register UEs before creating calls).
    pub fn registry(&mut self) -> &mut UeRegistry {
        self.table.registry_mut()
    }

    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_millis() as u64
    }

    fn line(&mut self, s: &str) {
        if self.logged_at != Some(self.now) {
            self.logged_at = Some(self.now);
            let _ = writeln!(self.log, "at {}", self.ms(self.now));
        }
        self.log.push_str(s);
        self.log.push('\n');
    }

    /// A comment line.
    pub fn note(&mut self, s: &str) {
        self.line(&format!("# {s}"));
    }

    /// Virtual time now, in ms since the base.
    pub fn now_ms(&self) -> u64 {
        self.ms(self.now)
    }

    /// Moves time to `ms` (since the base), firing every call's timer at the instant it is due,
    /// earliest first (ties: by call ID).
    pub fn run_until(&mut self, ms: u64) {
        let end = self.base + Duration::from_millis(ms);
        assert!(end >= self.now, "time goes forward only");
        for _ in 0..1_000_000 {
            let due = self
                .table
                .iter()
                .filter_map(|c| c.poll_timeout().map(|t| (t, c.id().to_owned())))
                .filter(|(t, _)| *t <= end)
                .min();
            let Some((t, id)) = due else { break };
            self.now = self.now.max(t);
            self.line(&format!("> timer {id}"));
            let now = self.now;
            self.table.get_mut(&id).unwrap().handle_timeout(now);
            self.drain(&id);
        }
        self.now = end;
    }

    /// [`run_until`](Self::run_until) `ms` later than now.
    pub fn advance(&mut self, ms: u64) {
        let t = self.now_ms() + ms;
        self.run_until(t);
    }

    /// Drains call `id` (if the table still has it) and notes what changed.
    fn drain(&mut self, id: &str) {
        let Some(call) = self.table.get_mut(id) else {
            return;
        };
        let out = drain_call(call);
        let fwd = forwarding(call);
        let timeout = call.poll_timeout();
        for l in out {
            self.line(&l);
        }
        self.note_state(id, timeout, Some(fwd));
    }

    fn note_state(&mut self, id: &str, timeout: Option<Instant>, fwd: Option<String>) {
        let t = timeout.map(|t| self.ms(t));
        let mut seen = self.seen.get(id).cloned().unwrap_or_default();
        if seen.timeout != Some(t) {
            seen.timeout = Some(t);
            self.line(&match t {
                Some(ms) => format!("timeout {ms}"),
                None => "timeout none".to_owned(),
            });
        }
        if fwd.is_some() && seen.forward != fwd {
            seen.forward = fwd.clone();
            self.line(fwd.as_deref().unwrap_or_default());
        }
        self.seen.insert(id.to_owned(), seen);
    }

    /// `create_call`; returns the call ID on success.
    pub fn create(&mut self, req: CreateCall) -> Option<String> {
        self.line(&format!(
            "> create call_id={} caller={} callee={} push={} pull={} mode={} security={} tc_key={} interface={}",
            req.call_id.as_deref().unwrap_or("-"),
            req.caller_id,
            req.callee_id,
            req.video_push,
            req.video_pull,
            req.commencement_mode.map_or("-", |m| m.as_str()),
            req.media_security.as_str(),
            req.caller_tc_key.is_some(),
            req.callee_interface.as_deref().unwrap_or("-"),
        ));
        self.line(&format!("sdp from_caller {}", quote(&req.caller_sdp)));
        let now = self.now;
        match self.table.create_call(now, req, &mut self.ports) {
            Ok(offer) => {
                self.line(&format!(
                    "offer call_id={} mode={} deliver_to=[{}] ports_in_use={}",
                    offer.call_id,
                    offer.commencement_mode.as_str(),
                    offer.deliver_to.join(","),
                    self.ports.in_use()
                ));
                self.line(&format!("sdp to_callee {}", quote(&offer.sdp_offer)));
                let id = offer.call_id.to_string();
                self.drain(&id);
                Some(id)
            }
            Err(e) => {
                self.line(&format!(
                    "error {}: {e} (ports_in_use={})",
                    e.code(),
                    self.ports.in_use()
                ));
                None
            }
        }
    }

    /// `accept_call` with the callee's SDP.
    pub fn accept(&mut self, id: &str, callee_sdp: &str) {
        self.line(&format!("> accept {id}"));
        self.line(&format!("sdp from_callee {}", quote(callee_sdp)));
        let now = self.now;
        match self.table.accept_call(
            now,
            id,
            AnswerCall {
                callee_sdp: callee_sdp.to_owned(),
                callee_tc_key: None,
            },
        ) {
            Ok(answer) => {
                self.line(&format!("answer call_id={}", answer.call_id));
                self.line(&format!("sdp to_caller {}", quote(&answer.sdp_answer)));
            }
            Err(e) => self.line(&format!("error {}: {e}", e.code())),
        }
        self.drain(id);
    }

    /// `reject_call`; the call leaves the table (its ports are freed).
    pub fn reject(&mut self, id: &str) {
        self.line(&format!("> reject {id}"));
        let now = self.now;
        let r = self.table.reject_call(now, id);
        self.taken(id, r);
    }

    /// `release_call` for `reason`; the call leaves the table (its ports are freed).
    pub fn release(&mut self, id: &str, reason: ReleaseReason) {
        self.line(&format!("> release {id} {}", reason.as_str()));
        let now = self.now;
        let r = self.table.release_call(now, id, reason);
        self.taken(id, r);
    }

    /// `remove` (what an engine does with a released call); its ports are freed.
    pub fn remove(&mut self, id: &str) {
        self.line(&format!("> remove {id}"));
        let r = self
            .table
            .remove(id)
            .ok_or_else(|| mcvideo_relay::control::call::SetupError::UnknownCall(id.to_owned()));
        self.taken(id, r);
    }

    fn taken(&mut self, id: &str, r: Result<Call, mcvideo_relay::control::call::SetupError>) {
        match r {
            Ok(mut call) => {
                for l in drain_call(&mut call) {
                    self.line(&l);
                }
                let fwd = forwarding(&call);
                self.note_state(id, call.poll_timeout(), Some(fwd));
                self.line(&stats(&call));
                let ports: Vec<_> = call.relay_ports().collect();
                for p in &ports {
                    self.ports.free(*p);
                }
                self.line(&format!(
                    "removed {id} state={} ports_freed={} ports_in_use={}",
                    call.state().as_str(),
                    ports.len(),
                    self.ports.in_use()
                ));
            }
            Err(e) => self.line(&format!("error {}: {e}", e.code())),
        }
    }

    /// A transmission control datagram from `from` on call `id`.
    pub fn rx(&mut self, id: &str, from: Party, datagram: &[u8]) {
        self.line(&format!("> rx {from} {}", hex(datagram)));
        self.rx_quiet(id, from, datagram);
    }

    fn rx_quiet(&mut self, id: &str, from: Party, datagram: &[u8]) {
        let now = self.now;
        match self.table.get_mut(id) {
            Some(c) => c.handle_control(now, from, datagram),
            None => self.line(&format!("error no call {id}")),
        }
        self.drain(id);
    }

    /// `msg` (emitted with default options) from `from` on call `id`.
    pub fn msg(&mut self, id: &str, from: Party, msg: &TcMessage<'_>) {
        let bytes = msg.to_vec(&EmitOptions::default()).expect("emit");
        self.rx(id, from, &bytes);
    }

    /// The same datagram `n` times, `every_ms` apart (0: all at once), the call drained after
    /// each; timers fire in between at their own times.
    pub fn rx_repeat(&mut self, id: &str, from: Party, datagram: &[u8], n: u32, every_ms: u64) {
        self.line(&format!(
            "> rx {from} {} x{n} every {every_ms}ms",
            hex(datagram)
        ));
        for i in 0..n {
            if i > 0 {
                self.advance(every_ms);
            }
            self.rx_quiet(id, from, datagram);
        }
    }

    /// `packets` media packets from `from`.
    pub fn media(&mut self, id: &str, from: Party, packets: u32) {
        self.line(&format!("> media {from} {packets}"));
        self.media_quiet(id, from, packets);
    }

    fn media_quiet(&mut self, id: &str, from: Party, packets: u32) {
        let now = self.now;
        match self.table.get_mut(id) {
            Some(c) => c.handle_media(now, from, packets),
            None => self.line(&format!("error no call {id}")),
        }
        self.drain(id);
    }

    /// `n` times: wait `every_ms`, then `packets` media packets from `from` (timers fire in
    /// between at their own times). The input is written once.
    pub fn media_every(&mut self, id: &str, from: Party, packets: u32, n: u32, every_ms: u64) {
        self.line(&format!(
            "> media {from} {packets} x{n} every {every_ms}ms (first after {every_ms}ms)"
        ));
        for _ in 0..n {
            self.advance(every_ms);
            self.media_quiet(id, from, packets);
        }
    }

    /// An RTCP BYE from `from`.
    pub fn bye(&mut self, id: &str, from: Party) {
        self.line(&format!("> bye {from}"));
        let now = self.now;
        match self.table.get_mut(id) {
            Some(c) => c.handle_rtcp_bye(now, from),
            None => self.line(&format!("error no call {id}")),
        }
        self.drain(id);
    }

    /// `handle_timeout` now, whether a timer is due or not (a spurious wake-up).
    pub fn wake(&mut self, id: &str) {
        self.line(&format!("> wake {id}"));
        let now = self.now;
        if let Some(c) = self.table.get_mut(id) {
            c.handle_timeout(now);
        }
        self.drain(id);
    }

    /// Ends the scenario: the counters of every call left, then the transcript.
    pub fn finish(mut self) -> String {
        let mut ids: Vec<String> = self.table.iter().map(|c| c.id().to_owned()).collect();
        ids.sort();
        for id in ids {
            let call = self.table.get(&id).unwrap();
            let l = format!("{} (state={})", stats(call), call.state().as_str());
            self.line(&l);
        }
        self.log
    }
}

/// Every queued output of `call`, in the drain order.
fn drain_call(call: &mut Call) -> Vec<String> {
    let mut v = Vec::new();
    let mut buf = Vec::new();
    while let Some(to) = call.poll_transmit(&mut buf) {
        v.push(format!("tx {to} {}", hex(&buf)));
    }
    while let Some(ev) = call.poll_event() {
        let data = canonical(&mcvideo_relay::sidecar::event_json(&ev));
        v.push(format!("event {} {data}", ev.kind.name()));
    }
    v
}

/// What the call's arbiter lets through.
fn forwarding(call: &Call) -> String {
    let a = call.arbiter();
    format!(
        "forward caller={} callee={}",
        a.may_forward(Party::Caller.slot()),
        a.may_forward(Party::Callee.slot())
    )
}

/// The call's transmission control counters.
fn stats(call: &Call) -> String {
    let s = call.tc_stats();
    fn kinds(k: impl Iterator<Item = (&'static str, u64)>) -> String {
        k.map(|(l, n)| format!("{l}:{n}"))
            .collect::<Vec<_>>()
            .join(",")
    }
    format!(
        "stats {} received=[{}] sent=[{}] malformed={} ignored={} rate_limited={} caller_media={} callee_media={}",
        call.id(),
        kinds(s.received.iter()),
        kinds(s.sent.iter()),
        s.malformed,
        s.ignored,
        s.rate_limited,
        media(call, Party::Caller),
        media(call, Party::Callee)
    )
}

/// Media packets the server counted from `party`.
fn media(call: &Call, party: Party) -> u64 {
    call.server()
        .member_view(party.slot())
        .map_or(0, |m| m.media_packets)
}

/// Lower-case hex, no separators.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A string as a JSON string literal (SDPs keep their CRLFs visible as `\r\n`).
fn quote(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// JSON with object keys sorted at every level, no spaces.
pub fn canonical(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let body: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", quote(k), canonical(&m[k.as_str()])))
                .collect();
            format!("{{{}}}", body.join(","))
        }
        serde_json::Value::Array(a) => {
            format!(
                "[{}]",
                a.iter().map(canonical).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}

/// Compares `transcript` with `tests/golden/<name>.txt` byte for byte, or writes the file when
/// `GOLDEN_UPDATE=1`.
pub fn check(name: &str, transcript: &str) {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "golden",
        &format!("{name}.txt"),
    ]
    .iter()
    .collect();
    if std::env::var("GOLDEN_UPDATE").as_deref() == Ok("1") {
        std::fs::write(&path, transcript).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; write it with GOLDEN_UPDATE=1 (and justify it in the commit message)",
            path.display()
        )
    });
    if want != transcript {
        let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), transcript.lines().collect());
        let i = w
            .iter()
            .zip(&g)
            .position(|(a, b)| a != b)
            .unwrap_or(w.len().min(g.len()));
        let from = i.saturating_sub(5);
        panic!(
            "{} differs from the golden file at line {}:\n--- golden\n{}\n--- now\n{}\n(GOLDEN_UPDATE=1 rewrites it; justify it in the commit message)",
            path.display(),
            i + 1,
            w.get(from..(i + 5).min(w.len())).unwrap_or_default().join("\n"),
            g.get(from..(i + 5).min(g.len())).unwrap_or_default().join("\n"),
        );
    }
}
