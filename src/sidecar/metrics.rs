//! `GET /metrics`: the Prometheus text exposition, written by hand.
//!
//! Engine counters come from [`Engine::stats`] at scrape time; the control API's own request
//! counters and latency histograms are kept here.

use crate::control::ReleaseReason;
use crate::relay::{DropReason, Engine, EngineStats, LegSnapshot};
use crate::wire::tc::MessageKind;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the API latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Every refusal code of [`SetupError::code`](crate::control::call::SetupError::code), so each
/// series exists (at zero) before its first refusal (the test below proves the list complete).
const REFUSAL_CODES: [&str; 15] = [
    "not_video_push",
    "bad_request",
    "bad_sdp",
    "no_acceptable_media",
    "not_authorized",
    "callee_not_registered",
    "no_ports_available",
    "too_many_calls",
    "draining",
    "unknown_call",
    "duplicate_call_id",
    "wrong_state",
    "not_watchable",
    "worker_timeout",
    "internal_error",
];

#[derive(Debug, Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The control API's own counters.
#[derive(Debug, Default)]
pub(crate) struct ApiMetrics {
    routes: Mutex<BTreeMap<(String, &'static str), RouteStats>>,
    pub(crate) sse_clients: AtomicUsize,
}

fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Call kinds, each reported even at zero.
const CALL_KINDS: [&str; 3] = ["video_push", "video_pull", "group"];

/// Escapes a label value (`\`, `"`, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl ApiMetrics {
    /// Counts one request.
    pub(crate) fn observe(
        &self,
        route: &str,
        method: &axum::http::Method,
        status: u16,
        took: Duration,
    ) {
        let secs = took.as_secs_f64();
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let r = routes
            .entry((route.to_owned(), method_label(method)))
            .or_default();
        *r.by_status.entry(status).or_default() += 1;
        for (b, le) in r.buckets.iter_mut().zip(BUCKETS) {
            if secs <= le {
                *b += 1;
            }
        }
        r.count += 1;
        r.sum += secs;
    }
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }
    /// Starts the family `{P}_{metric}` of `kind`; returns its name, for its lines.
    fn family(&mut self, metric: &str, kind: &str, help: &str) -> String {
        let name = format!("{P}_{metric}");
        self.head(&name, kind, help);
        name
    }
    /// A metric of one series, no labels: `{P}_{metric}` of `kind` is `value`.
    fn single(&mut self, metric: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        let name = self.family(metric, kind, help);
        self.line(&name, "", value);
    }
    fn line(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }
}

/// A leg's traffic counters: what they count (in metric names, then in their help) and how
/// to read them, in and out.
type Traffic = (
    &'static str,
    &'static str,
    fn(&LegSnapshot) -> u64,
    fn(&LegSnapshot) -> u64,
);
const TRAFFIC: [Traffic; 2] = [
    ("packets", "Datagrams", |l| l.packets_in, |l| l.packets_out),
    ("bytes", "Bytes", |l| l.bytes_in, |l| l.bytes_out),
];

/// Prefix of every metric name.
const P: &str = "mcvideo_relay";

/// The whole exposition.
pub(crate) fn render(
    engine: &Engine,
    api: &ApiMetrics,
    q: &crate::relay::rules::QualityHistograms,
) -> String {
    let s = engine.stats();
    let mut o = Out(String::with_capacity(16 * 1024));
    render_process(&mut o, engine, &s);
    render_calls(&mut o, &s);
    render_outcomes(&mut o, &s);
    render_parties(&mut o, &s);
    render_tc(&mut o, &s);
    render_ports(&mut o, &s);
    render_quality(&mut o, q);
    render_recording(&mut o, &engine.recording_stats().unwrap_or_default());
    render_api(&mut o, api);
    o.0
}

/// The recorder's counters (all zero while recording is off).
fn render_recording(o: &mut Out, r: &crate::relay::RecordingStats) {
    let all: [(&str, &str, u64); 8] = [
        ("recordings_started_total", "Recordings started.", r.started),
        (
            "recordings_refused_total",
            "Recordings not started: too little free space, or the directory failed.",
            r.refused,
        ),
        (
            "recordings_stopped_total",
            "Recordings stopped early: a file could not be written (the media went on).",
            r.stopped,
        ),
        (
            "recording_records_written_total",
            "Transmission log records written.",
            r.records_written,
        ),
        (
            "recording_records_dropped_total",
            "Records dropped: the writer's queue was full or their recording had stopped.",
            r.records_dropped,
        ),
        (
            "recordings_removed_total",
            "Recordings removed by retention (age or total size).",
            r.removed,
        ),
        (
            "recording_packets_written_total",
            "Media packets written to recordings (pcap).",
            r.packets_written,
        ),
        (
            "recording_packets_dropped_total",
            "Media packets not recorded (no buffer, queue full, recording stopped); they were forwarded.",
            r.packets_dropped,
        ),
    ];
    for (metric, help, value) in all {
        o.single(metric, "counter", help, value);
    }
}

/// The relay itself: version, uptime, drain mode.
fn render_process(o: &mut Out, engine: &Engine, s: &EngineStats) {
    o.head(&format!("{P}_build_info"), "gauge", "Version of the relay.");
    o.line(
        &format!("{P}_build_info"),
        &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        1,
    );
    o.single(
        "uptime_seconds",
        "gauge",
        "Seconds since the engine started.",
        format!("{:.3}", engine.uptime().as_secs_f64()),
    );
    o.single(
        "draining",
        "gauge",
        "1 while the relay refuses new calls (drain mode or shutdown).",
        u8::from(s.draining),
    );
    o.single(
        "kernel_offload_active",
        "gauge",
        "1 while the kernel fast path forwards latched, granted end_to_end and plain RTP legs \
         (media.kernel_offload); 0: every packet is forwarded in userspace.",
        u8::from(engine.kernel_offload_active()),
    );
    o.single(
        "kernel_offload_legs",
        "gauge",
        "Media legs forwarded by the kernel fast path now.",
        s.kernel_offload_legs,
    );
    o.single(
        "kernel_offload_packets_total",
        "counter",
        "RTP packets the kernel fast path forwarded (counted in the party and quality figures \
         too).",
        s.kernel_offload_packets,
    );
    o.single(
        "kernel_offload_neighbour_waits_total",
        "counter",
        "Times a group leg stayed in userspace because a receiver's next hop was not in the \
         neighbour table yet (tried again after 250 ms, doubling up to 4 s).",
        s.kernel_offload_neighbour_waits,
    );
}

/// Calls held and created, in all and by kind, and group members' traffic.
fn render_calls(o: &mut Out, s: &EngineStats) {
    o.single(
        "calls_active",
        "gauge",
        "Calls held now (offered or established).",
        s.active_calls,
    );
    o.single(
        "calls_created_total",
        "counter",
        "Calls created since start.",
        s.calls_created,
    );

    // By kind: push and pull calls (above, together) and group calls.
    let name = o.family("calls_active_by_kind", "gauge", "Calls held now, by kind.");
    for kind in CALL_KINDS {
        let n = s.by_kind.get(kind).map_or(0, |k| k.active);
        o.line(&name, &format!("kind=\"{kind}\""), n);
    }
    let name = o.family(
        "calls_created_by_kind_total",
        "counter",
        "Calls created since start, by kind.",
    );
    for kind in CALL_KINDS {
        let n = s.by_kind.get(kind).map_or(0, |k| k.created);
        o.line(&name, &format!("kind=\"{kind}\""), n);
    }
    for (what, noun, get_in, get_out) in TRAFFIC {
        let name = format!("{P}_group_member_{what}_total");
        let help = format!("{noun} received from (in) and sent to (out) group call members.");
        o.head(&name, "counter", &help);
        o.line(&name, "direction=\"in\"", get_in(&s.group_members));
        o.line(&name, "direction=\"out\"", get_out(&s.group_members));
    }
}

/// Calls refused (by error code) and released (by reason), every series even at zero.
fn render_outcomes(o: &mut Out, s: &EngineStats) {
    let name = o.family(
        "calls_refused_total",
        "counter",
        "Call creations refused, by error code.",
    );
    let mut refused: BTreeMap<&str, u64> = REFUSAL_CODES.iter().map(|c| (*c, 0)).collect();
    for (code, n) in &s.calls_refused {
        *refused.entry(code).or_default() += n;
    }
    for (code, n) in refused {
        o.line(&name, &format!("code=\"{}\"", esc(code)), n);
    }

    let name = o.family(
        "calls_released_total",
        "counter",
        "Calls released, by reason.",
    );
    let mut released: BTreeMap<&str, u64> =
        ReleaseReason::ALL.iter().map(|r| (r.as_str(), 0)).collect();
    for (reason, n) in &s.calls_released {
        *released.entry(reason).or_default() += n;
    }
    for (reason, n) in released {
        o.line(&name, &format!("reason=\"{}\"", esc(reason)), n);
    }
}

/// Traffic, drops and latches of each party of the one-to-one calls.
fn render_parties(o: &mut Out, s: &EngineStats) {
    let legs: [(&str, &LegSnapshot); 2] = [("caller", &s.caller), ("callee", &s.callee)];
    for (what, noun, get_in, get_out) in TRAFFIC {
        let name = format!("{P}_{what}_total");
        let help = format!("{noun} received from (in) and sent to (out) each party.");
        o.head(&name, "counter", &help);
        for (party, l) in legs {
            o.line(
                &name,
                &format!("party=\"{party}\",direction=\"in\""),
                get_in(l),
            );
            o.line(
                &name,
                &format!("party=\"{party}\",direction=\"out\""),
                get_out(l),
            );
        }
    }
    let name = o.family(
        "dropped_packets_total",
        "counter",
        "Datagrams received from each party and dropped, by reason.",
    );
    for (party, l) in legs {
        for r in DropReason::ALL {
            o.line(
                &name,
                &format!("party=\"{party}\",reason=\"{}\"", r.as_str()),
                l.dropped(r),
            );
        }
    }
    let name = o.family(
        "latches_total",
        "counter",
        "Legs latched to a source other than the negotiated one.",
    );
    for (party, l) in legs {
        o.line(&name, &format!("party=\"{party}\""), l.latches);
    }
}

/// Transmission control messages received and sent, by type.
fn render_tc(o: &mut Out, s: &EngineStats) {
    for (name, help, counters) in [
        (
            format!("{P}_tc_messages_received_total"),
            "Transmission control messages received, by type.",
            &s.tc_received,
        ),
        (
            format!("{P}_tc_messages_sent_total"),
            "Transmission control messages sent, by type.",
            &s.tc_sent,
        ),
    ] {
        o.head(&name, "counter", help);
        let mut by: BTreeMap<&str, u64> = MessageKind::ALL.iter().map(|k| (k.label(), 0)).collect();
        for (label, n) in counters.iter() {
            by.insert(label, n);
        }
        for (label, n) in by {
            o.line(&name, &format!("type=\"{}\"", esc(label)), n);
        }
    }
}

/// Media port pairs in use and configured.
fn render_ports(o: &mut Out, s: &EngineStats) {
    o.single(
        "port_pairs_in_use",
        "gauge",
        "Media port pairs bound now.",
        s.ports_in_use,
    );
    o.single(
        "port_pairs_capacity",
        "gauge",
        "Media port pairs in the configured range.",
        s.ports_capacity,
    );
}

/// Media quality across live calls.
fn render_quality(o: &mut Out, q: &crate::relay::rules::QualityHistograms) {
    // Quality across live calls, as histograms in base units (seconds, ratio). They are a
    // snapshot at scrape time — each sending leg of a live call is one sample — not counters
    // that grow: use histogram_quantile() on them directly, never rate().
    o.single(
        "media_streams",
        "gauge",
        "Legs of live calls that sent RTP (one sample each in the two histograms below).",
        q.jitter_ms.count,
    );
    for (name, help, h, scale) in [
        (
            format!("{P}_media_jitter_seconds"),
            "Interarrival jitter (RFC 3550) of the RTP from each sending leg of the live calls (a snapshot, not cumulative).",
            &q.jitter_ms,
            1e-3,
        ),
        (
            format!("{P}_media_loss_ratio"),
            "Share of the RTP lost (sequence gaps) from each sending leg of the live calls (a snapshot, not cumulative).",
            &q.loss_percent,
            1e-2,
        ),
    ] {
        o.head(&name, "histogram", help);
        for (b, le) in h.buckets.iter().zip(h.bounds) {
            o.line(
                &format!("{name}_bucket"),
                &format!("le=\"{}\"", le * scale),
                b,
            );
        }
        o.line(&format!("{name}_bucket"), "le=\"+Inf\"", h.count);
        o.line(&format!("{name}_sum"), "", format!("{:.6}", h.sum * scale));
        o.line(&format!("{name}_count"), "", h.count);
    }
}

/// The control API: SSE clients, requests by status and their latency.
fn render_api(o: &mut Out, api: &ApiMetrics) {
    o.single(
        "sse_clients",
        "gauge",
        "Clients connected to GET /v1/events.",
        api.sse_clients.load(Ordering::Relaxed),
    );

    let routes = api.routes.lock().unwrap_or_else(|e| e.into_inner());
    let name = o.family(
        "api_requests_total",
        "counter",
        "Control API requests, by route, method and status.",
    );
    for ((route, method), r) in routes.iter() {
        for (status, n) in &r.by_status {
            o.line(
                &name,
                &format!(
                    "route=\"{}\",method=\"{method}\",status=\"{status}\"",
                    esc(route)
                ),
                n,
            );
        }
    }
    let name = o.family(
        "api_request_duration_seconds",
        "histogram",
        "Control API request latency (until the response head), by route and method.",
    );
    for ((route, method), r) in routes.iter() {
        let labels = format!("route=\"{}\",method=\"{method}\"", esc(route));
        for (b, le) in r.buckets.iter().zip(BUCKETS) {
            o.line(
                &format!("{name}_bucket"),
                &format!("{labels},le=\"{le}\""),
                b,
            );
        }
        o.line(
            &format!("{name}_bucket"),
            &format!("{labels},le=\"+Inf\""),
            r.count,
        );
        o.line(&format!("{name}_sum"), &labels, format!("{:.6}", r.sum));
        o.line(&format!("{name}_count"), &labels, r.count);
    }
}

#[cfg(test)]
mod tests {
    use super::REFUSAL_CODES;
    use crate::control::call::{CallState, SetupError};
    use crate::control::Party;
    use crate::sdp::SdpError;
    use std::collections::BTreeSet;

    /// Its position in [`every_setup_error`]; a variant added to [`SetupError`] stops this
    /// compiling until it is added there too (and its code to `REFUSAL_CODES`).
    fn index(e: &SetupError) -> usize {
        match e {
            SetupError::NotVideoPush => 0,
            SetupError::BadRequest(_) => 1,
            SetupError::BadSdp { .. } => 2,
            SetupError::NoAcceptableMedia { .. } => 3,
            SetupError::NotAuthorized { .. } => 4,
            SetupError::CalleeNotRegistered(_) => 5,
            SetupError::NoPortsAvailable => 6,
            SetupError::TooManyCalls => 7,
            SetupError::Draining => 8,
            SetupError::UnknownCall(_) => 9,
            SetupError::DuplicateCallId(_) => 10,
            SetupError::WrongState { .. } => 11,
            SetupError::MemberSdp { .. } => 12,
            SetupError::MemberMedia { .. } => 13,
            SetupError::MemberRequest { .. } => 14,
            SetupError::WorkerTimeout(_) => 15,
            SetupError::Internal(_) => 16,
            SetupError::NotWatchable { .. } => 17,
        }
    }

    fn every_setup_error() -> Vec<SetupError> {
        let s = String::new;
        vec![
            SetupError::NotVideoPush,
            SetupError::BadRequest(s()),
            SetupError::BadSdp {
                party: Party::Caller,
                error: SdpError {
                    line: 0,
                    content: s(),
                    reason: "",
                },
            },
            SetupError::NoAcceptableMedia {
                party: Party::Caller,
                reason: s(),
            },
            SetupError::NotAuthorized {
                party: Party::Caller,
                user: s(),
                reason: s(),
            },
            SetupError::CalleeNotRegistered(s()),
            SetupError::NoPortsAvailable,
            SetupError::TooManyCalls,
            SetupError::Draining,
            SetupError::UnknownCall(s()),
            SetupError::DuplicateCallId(s()),
            SetupError::WrongState {
                call_id: s(),
                state: CallState::Offered,
                operation: "",
            },
            SetupError::MemberSdp {
                member: s(),
                error: SdpError {
                    line: 0,
                    content: s(),
                    reason: "",
                },
            },
            SetupError::MemberMedia {
                member: s(),
                reason: s(),
            },
            SetupError::MemberRequest {
                member: s(),
                reason: s(),
            },
            SetupError::WorkerTimeout(s()),
            SetupError::Internal(s()),
            SetupError::NotWatchable {
                call_id: s(),
                reason: s(),
            },
        ]
    }

    #[test]
    fn refusal_codes_are_every_setup_error_code() {
        let all = every_setup_error();
        let indices: Vec<usize> = all.iter().map(index).collect();
        assert_eq!(indices, (0..all.len()).collect::<Vec<_>>());
        let codes: BTreeSet<&str> = all.iter().map(SetupError::code).collect();
        let listed: BTreeSet<&str> = REFUSAL_CODES.iter().copied().collect();
        assert_eq!(codes, listed);
        assert_eq!(listed.len(), REFUSAL_CODES.len(), "duplicates");
    }
}
