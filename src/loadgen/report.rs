//! What a run prints: a table for people and, with `--json`, the same figures as JSON.

use super::args::{Options, Target};
use super::setup::Teardown;
use super::traffic::PhaseResult;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::fmt::Write as _;

/// Quantiles reported, with their JSON keys and table labels.
const QUANTILES: [(&str, &str, f64); 5] = [
    ("p50", "p50", 0.50),
    ("p90", "p90", 0.90),
    ("p99", "p99", 0.99),
    ("p99_9", "p99.9", 0.999),
    ("max", "max", 1.0),
];

/// One offered rate: the floor, the minimal forwarder and/or the relay at it.
#[derive(Debug)]
pub(crate) struct Step {
    pub(crate) rate: f64,
    pub(crate) floor: Option<PhaseResult>,
    pub(crate) forwarder: Option<PhaseResult>,
    pub(crate) relay: Option<PhaseResult>,
}

impl Step {
    /// The relay's CPU per packet as a multiple of the minimal forwarder's.
    pub(crate) fn cpu_ratio(&self) -> Option<f64> {
        let r = relay_cpu(self.relay.as_ref()?)?.us_per_packet;
        let f = relay_cpu(self.forwarder.as_ref()?)?.us_per_packet;
        (f > 0.0).then(|| r / f)
    }

    /// Machine-wide CPU per packet (all CPUs, `/proc/stat`) of a path above the floor's.
    pub(crate) fn machine_above_floor(&self, p: &PhaseResult) -> Option<f64> {
        self.above_floor(p, "machine")
    }

    /// CPU per packet of probe `key` of a path above the floor's.
    fn above_floor(&self, p: &PhaseResult, key: &str) -> Option<f64> {
        let of = |p: &PhaseResult| p.cpu.iter().find(|c| c.key == key).map(|c| c.us_per_packet);
        Some(of(p)? - of(self.floor.as_ref()?)?)
    }

    /// The relay's machine CPU per packet above the floor as a multiple of the minimal
    /// forwarder's.
    pub(crate) fn machine_ratio(&self) -> Option<f64> {
        let r = self.machine_above_floor(self.relay.as_ref()?)?;
        let f = self.machine_above_floor(self.forwarder.as_ref()?)?;
        (f > 0.0).then(|| r / f)
    }

    /// The measured phases in table order.
    fn phases(&self) -> impl Iterator<Item = &PhaseResult> {
        [
            self.floor.as_ref(),
            self.forwarder.as_ref(),
            self.relay.as_ref(),
        ]
        .into_iter()
        .flatten()
    }
}

/// Call setup figures.
#[derive(Debug, Default)]
pub(crate) struct SetupFigures {
    pub(crate) requested: usize,
    pub(crate) established: usize,
    pub(crate) failed: usize,
    pub(crate) first_error: Option<String>,
    pub(crate) seconds: f64,
    pub(crate) concurrency: usize,
    /// Create + answer, ms: p50, p99, max.
    pub(crate) latency_ms: Option<[f64; 3]>,
    pub(crate) rss_before_kib: Option<u64>,
    pub(crate) rss_after_kib: Option<u64>,
    pub(crate) rss_source: Option<String>,
}

impl SetupFigures {
    pub(crate) fn latency_from(h: &Histogram<u64>) -> Option<[f64; 3]> {
        (!h.is_empty()).then(|| [0.5, 0.99, 1.0].map(|q| h.value_at_quantile(q) as f64 / 1e6))
    }

    fn rss_per_call_bytes(&self) -> Option<f64> {
        let (b, a) = (self.rss_before_kib?, self.rss_after_kib?);
        (self.established > 0).then(|| (a as f64 - b as f64) * 1024.0 / self.established as f64)
    }
}

/// Sweep outcome.
#[derive(Debug)]
pub(crate) struct SweepOutcome {
    pub(crate) highest_loss_free_pps: Option<f64>,
    pub(crate) stopped_because: String,
    /// With --compare-forwarder: the forwarder's highest loss-free rate and why it stopped.
    pub(crate) forwarder: Option<(Option<f64>, String)>,
}

/// Everything a run found.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) relay_kind: &'static str,
    pub(crate) relay_description: String,
    pub(crate) relay_pid: Option<u32>,
    pub(crate) forwarder_pid: Option<u32>,
    pub(crate) forwarder_description: Option<String>,
    pub(crate) setup: Option<SetupFigures>,
    pub(crate) steps: Vec<Step>,
    pub(crate) sweep: Option<SweepOutcome>,
    pub(crate) teardown: Option<Teardown>,
    pub(crate) rss_after_release_kib: Option<u64>,
    pub(crate) notes: Vec<String>,
    pub(crate) interrupted: bool,
    pub(crate) error: Option<String>,
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

fn latency_json(p: &PhaseResult) -> Value {
    quantiles_json(p, PhaseResult::latency_us, |p| &p.latency, true)
}

/// A phase's latency histogram `hist` as JSON: `latency` at each quantile, the mean, the
/// minimum when asked, the count; `Null` when it is empty.
fn quantiles_json(
    p: &PhaseResult,
    latency: fn(&PhaseResult, f64) -> Option<f64>,
    hist: fn(&PhaseResult) -> &Histogram<u64>,
    with_min: bool,
) -> Value {
    let h = hist(p);
    if h.is_empty() {
        return Value::Null;
    }
    let mut m = Map::new();
    for (key, _, q) in QUANTILES {
        m.insert(key.into(), json!(round(latency(p, q).unwrap_or(0.0), 2)));
    }
    m.insert("mean".into(), json!(round(h.mean() / 1000.0, 2)));
    if with_min {
        m.insert("min".into(), json!(round(h.min() as f64 / 1000.0, 2)));
    }
    m.insert("count".into(), json!(h.len()));
    Value::Object(m)
}

/// The CPU figure of what forwarded a phase's packets: the relay's (or the minimal
/// forwarder's) process if known, else the relay's worker threads.
fn relay_cpu(p: &PhaseResult) -> Option<&super::traffic::CpuFigure> {
    p.cpu
        .iter()
        .find(|c| c.key == "relay_process" || c.key == "forwarder_process")
        .or_else(|| p.cpu.iter().find(|c| c.key == "relay_workers"))
}

/// All CPUs' busy time per received packet over a phase's window.
fn machine_cpu(p: &PhaseResult) -> Option<f64> {
    p.cpu
        .iter()
        .find(|c| c.key == "machine")
        .map(|c| c.us_per_packet)
}

/// Wake-ups (context switches) per received packet of what forwarded a phase's packets, when
/// it is a process of its own.
fn wakeups(p: &PhaseResult) -> Option<&super::traffic::WakeFigure> {
    p.wakeups.first()
}

/// Group calls: what fans a phase's packets out: the relay's (worker threads or process), or
/// in the floor the transmitters' own sender threads (N sends per packet).
fn fanout_cpu(p: &PhaseResult) -> Option<&super::traffic::CpuFigure> {
    if p.label == "floor" {
        p.cpu.iter().find(|c| c.key == "loadgen_senders")
    } else {
        relay_cpu(p)
    }
}

fn last_latency_json(p: &PhaseResult) -> Value {
    quantiles_json(p, PhaseResult::last_latency_us, |p| &p.last_latency, false)
}

fn phase_json(p: &PhaseResult, per_call: bool) -> Value {
    let mut v = json!({
        "mode": p.label,
        "calls": p.calls,
        "offered_pps": round(p.offered_pps, 1),
        "achieved_pps": round(p.achieved_pps(), 1),
        "received_pps": round(p.received_pps(), 1),
        "window_s": round(p.window_s, 3),
        "sent": p.sent,
        "received": p.totals.received,
        "lost": p.lost(),
        "loss_pct": round(p.loss_pct(), 4),
        "reordered": p.totals.reordered,
        "duplicates": p.totals.duplicates,
        "outside_window": p.totals.outside_window,
        "send_failures": p.send_failures,
        "first_send_error": p.first_send_error,
        "decrypt_failures": p.totals.decrypt_failures,
        "malformed": p.totals.malformed,
        "calls_with_loss": p.calls_with_loss,
        "worst_call_loss_pct": round(p.worst_call_loss_pct, 4),
        "sender_max_late_us": round(p.sender_max_late_us, 1),
        "skipped_frames": p.skipped_frames,
        "latency_us": latency_json(p),
        "cpu": p.cpu.iter().map(|c| json!({
            "what": c.key,
            "label": c.label,
            "seconds": round(c.seconds, 3),
            "us_per_packet": round(c.us_per_packet, 3),
        })).collect::<Vec<_>>(),
        "relay_cpu_us_per_packet": relay_cpu(p).map(|c| round(c.us_per_packet, 3)),
        "relay_cpu_source": relay_cpu(p).map(|c| c.label.clone()),
        "machine_cpu_us_per_packet": machine_cpu(p).map(|x| round(x, 3)),
        "wakeups": wakeups(p).map(|w| json!({
            "what": w.key,
            "label": w.label,
            "context_switches": w.switches,
            "per_packet": round(w.per_packet, 4),
        })),
        "interrupted": p.interrupted,
    });
    if p.fanout > 1 || !p.last_latency.is_empty() {
        if let Some(m) = v.as_object_mut() {
            m.insert("receivers_per_packet".into(), json!(p.fanout));
            m.insert("expected_deliveries".into(), json!(p.expected()));
            m.insert("delivered".into(), json!(p.totals.received));
            m.insert("receivers_with_loss".into(), json!(p.calls_with_loss));
            m.insert("reached_every_receiver".into(), json!(p.last_latency.len()));
            m.insert("last_receiver_latency_us".into(), last_latency_json(p));
            m.insert(
                "fanout_cpu_us_per_delivered".into(),
                json!(fanout_cpu(p).map(|c| round(c.us_per_packet, 3))),
            );
            m.insert(
                "fanout_cpu_source".into(),
                json!(fanout_cpu(p).map(|c| c.label.clone())),
            );
        }
    }
    if per_call {
        if let Some(m) = v.as_object_mut() {
            let group = p.fanout > 1 || !p.last_latency.is_empty();
            m.insert(
                if group { "per_receiver" } else { "per_call" }.into(),
                p.per_call
                    .iter()
                    .map(|c| {
                        let mut e = json!({
                            "call": c.index,
                            "sent": c.sent,
                            "received": c.counts.received,
                            "lost": c.sent.saturating_sub(c.counts.received),
                            "reordered": c.counts.reordered,
                            "duplicates": c.counts.duplicates,
                            "decrypt_failures": c.counts.decrypt_failures,
                        });
                        if group {
                            if let Some(o) = e.as_object_mut() {
                                o.remove("call");
                                o.insert("receiver".into(), json!(c.index));
                                o.insert("group".into(), json!(c.sender));
                                o.insert(
                                    "loss_pct".into(),
                                    json!(round(
                                        c.sent.saturating_sub(c.counts.received) as f64 * 100.0
                                            / c.sent.max(1) as f64,
                                        4
                                    )),
                                );
                            }
                        }
                        e
                    })
                    .collect(),
            );
        }
    }
    v
}

fn added_last_json(f: &PhaseResult, r: &PhaseResult) -> Value {
    added_quantiles(f, r, PhaseResult::last_latency_us, |p| &p.last_latency)
        .map_or(Value::Null, Value::Object)
}

fn added_json(f: &PhaseResult, r: &PhaseResult) -> Value {
    let Some(mut m) = added_quantiles(f, r, PhaseResult::latency_us, |p| &p.latency) else {
        return Value::Null;
    };
    m.insert(
        "mean".into(),
        json!(round((r.latency.mean() - f.latency.mean()) / 1000.0, 2)),
    );
    Value::Object(m)
}

/// What `r` adds to the floor `f` at each quantile of `latency` (of histogram `hist`); `None`
/// when either histogram is empty.
fn added_quantiles(
    f: &PhaseResult,
    r: &PhaseResult,
    latency: fn(&PhaseResult, f64) -> Option<f64>,
    hist: fn(&PhaseResult) -> &Histogram<u64>,
) -> Option<Map<String, Value>> {
    if hist(f).is_empty() || hist(r).is_empty() {
        return None;
    }
    let mut m = Map::new();
    for (key, _, q) in QUANTILES {
        let d = latency(r, q).unwrap_or(0.0) - latency(f, q).unwrap_or(0.0);
        m.insert(key.into(), json!(round(d, 2)));
    }
    Some(m)
}

/// One step's JSON: its phases and what the relay adds to the floor and to the forwarder.
fn step_json(s: &Step, per_call: bool) -> Value {
    let added = |x: &Option<PhaseResult>| match (&s.floor, x) {
        (Some(f), Some(r)) => added_json(f, r),
        _ => Value::Null,
    };
    let vs_forwarder = match (&s.forwarder, &s.relay) {
        (Some(f), Some(r)) => json!({
            "cpu_ratio": s.cpu_ratio().map(|x| round(x, 3)),
            "relay_cpu_us_per_packet": relay_cpu(r).map(|c| round(c.us_per_packet, 3)),
            "forwarder_cpu_us_per_packet": relay_cpu(f).map(|c| round(c.us_per_packet, 3)),
            "machine_cpu_ratio_above_floor": s.machine_ratio().map(|x| round(x, 3)),
            "latency_us_relay_minus_forwarder": added_json(f, r),
        }),
        _ => Value::Null,
    };
    json!({
        "rate_pps": round(s.rate, 1),
        "floor": s.floor.as_ref().map(|p| phase_json(p, per_call)),
        "forwarder": s.forwarder.as_ref().map(|p| phase_json(p, per_call)),
        "relay": s.relay.as_ref().map(|p| phase_json(p, per_call)),
        "added_latency_us": added(&s.relay),
        "added_last_receiver_latency_us": match (&s.floor, &s.relay) {
            (Some(f), Some(r)) => added_last_json(f, r),
            _ => Value::Null,
        },
        "forwarder_added_latency_us": added(&s.forwarder),
        "machine_cpu_above_floor_us_per_packet": {
            "forwarder": s.forwarder.as_ref().and_then(|p| s.machine_above_floor(p)).map(|x| round(x, 3)),
            "relay": s.relay.as_ref().and_then(|p| s.machine_above_floor(p)).map(|x| round(x, 3)),
        },
        "machine_by_idle_above_floor_us_per_packet": {
            "forwarder": s.forwarder.as_ref().and_then(|p| s.above_floor(p, "machine_by_idle")).map(|x| round(x, 3)),
            "relay": s.relay.as_ref().and_then(|p| s.above_floor(p, "machine_by_idle")).map(|x| round(x, 3)),
        },
        "relay_vs_forwarder": vs_forwarder,
    })
}

fn setup_json(s: &SetupFigures) -> Value {
    json!({
        "calls": s.requested,
        "established": s.established,
        "failed": s.failed,
        "first_error": s.first_error,
        "seconds": round(s.seconds, 3),
        "calls_per_s": round(s.established as f64 / s.seconds.max(1e-9), 1),
        "concurrency": s.concurrency,
        "latency_ms": s.latency_ms.map(|[p50, p99, max]| json!({
            "p50": round(p50, 3), "p99": round(p99, 3), "max": round(max, 3)
        })),
        "rss_before_kib": s.rss_before_kib,
        "rss_after_kib": s.rss_after_kib,
        "rss_per_call_bytes": s.rss_per_call_bytes().map(|b| round(b, 0)),
        "rss_source": s.rss_source,
    })
}

/// The options a run used, as the JSON's `config`.
fn config_json(o: &Options) -> Value {
    json!({
        "calls": o.calls,
        "group_receivers": o.group_receivers,
        "rate_pps": o.rate,
        "fps": o.shape.fps,
        "packet_size": o.shape.packet_size,
        "packets_per_frame_per_call": round(o.rate / o.calls as f64 / o.shape.fps, 3),
        "duration_s": o.shape.duration.as_secs_f64(),
        "warmup_s": o.shape.warmup.as_secs_f64(),
        "gso": o.shape.gso,
        "pattern": o.pattern.as_str(),
        "one_sendmsg_per_packet": o.one_send_per_packet(),
        "compare_forwarder": o.forwarder(),
        "srtp": o.srtp.map_or("none", |s| s.as_str()),
        "srtp_suite": o.srtp.map(|_| super::setup::SUITE.name()),
        "senders": o.shape.senders,
        "receivers": o.shape.receivers,
        "pin_cpu": o.pin_cpu,
        "netns": o.netns,
        "workers": (o.target == Target::Engine).then_some(o.workers),
        "floor": o.floor(),
        "sweep": o.sweep,
        "setup_only": o.setup_only,
        "max_loss_pct": o.max_loss_pct,
    })
}

impl Report {
    pub(crate) fn to_json(&self, o: &Options) -> Value {
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| step_json(s, o.per_call))
            .collect();
        let teardown = self.teardown.as_ref().map(|t| {
            json!({
                "released": t.released,
                "failed": t.failed,
                "first_error": t.first_error,
                "seconds": round(t.elapsed.as_secs_f64(), 3),
                "calls_per_s": round(t.released as f64 / t.elapsed.as_secs_f64().max(1e-9), 1),
                "rss_after_kib": self.rss_after_release_kib,
            })
        });
        json!({
            "tool": "mcvideo-relay loadgen",
            "version": env!("CARGO_PKG_VERSION"),
            "config": config_json(o),
            "relay": {
                "kind": self.relay_kind,
                "description": self.relay_description,
                "pid": self.relay_pid,
            },
            "forwarder": self.forwarder_pid.map(|pid| json!({
                "pid": pid,
                "description": self.forwarder_description,
            })),
            "setup": self.setup.as_ref().map(setup_json),
            "runs": steps,
            "sweep": self.sweep.as_ref().map(|s| json!({
                "highest_loss_free_pps": s.highest_loss_free_pps.map(|r| round(r, 1)),
                "stopped_because": s.stopped_because,
                "forwarder_highest_loss_free_pps": s.forwarder.as_ref().and_then(|f| f.0).map(|r| round(r, 1)),
                "forwarder_stopped_because": s.forwarder.as_ref().map(|f| f.1.clone()),
                "factor": o.sweep_factor,
            })),
            "teardown": teardown,
            "notes": self.notes,
            "interrupted": self.interrupted,
            "error": self.error,
        })
    }

    pub(crate) fn to_table(&self, o: &Options) -> String {
        let mut t = String::new();
        self.describe(&mut t, o);
        if let Some(s) = &self.setup {
            setup_lines(&mut t, s);
        }
        if self.steps.len() == 1 {
            if let Some(s) = self.steps.first() {
                t.push('\n');
                step_table(&mut t, s);
            }
        } else if !self.steps.is_empty() {
            t.push('\n');
            sweep_table(&mut t, &self.steps);
        }
        if let Some(s) = &self.sweep {
            sweep_lines(&mut t, s, o);
        }
        if let Some(td) = &self.teardown {
            self.teardown_lines(&mut t, td);
        }
        for n in &self.notes {
            let _ = writeln!(t, "note:    {n}");
        }
        if self.interrupted {
            let _ = writeln!(t, "INTERRUPTED: figures cover what ran before Ctrl-C");
        }
        if let Some(e) = &self.error {
            let _ = writeln!(t, "ERROR:   {e}");
        }
        t
    }

    /// What ran: the load, the relay, what it is compared with, the window.
    fn describe(&self, t: &mut String, o: &Options) {
        let srtp = match o.srtp {
            Some(s) => format!("SRTP {} ({})", super::setup::SUITE.name(), s.as_str()),
            None => "plain RTP".into(),
        };
        let calls = match o.group_receivers {
            Some(n) => format!(
                "{} group call(s) of 1 transmitter to {n} receivers",
                o.calls
            ),
            None => format!("{} calls", o.calls),
        };
        let _ = writeln!(
            t,
            "loadgen: {calls}, {} B RTP packets, {srtp}, {} fps, {}",
            o.shape.packet_size,
            o.shape.fps,
            match (o.pattern, o.shape.gso) {
                (super::args::Pattern::Paced, _) => format!(
                    "paced: each {} every {:.0} µs, out of phase, one sendmsg per packet{}",
                    if o.group_receivers.is_some() {
                        "transmitter"
                    } else {
                        "call"
                    },
                    1e6 * o.calls as f64 / o.rate,
                    if o.group_receivers.is_some() {
                        " (floor: one per receiver)"
                    } else {
                        ""
                    }
                ),
                (_, true) => "GSO bursts".into(),
                (_, false) => "bursts, one sendmsg per packet".into(),
            }
        );
        let _ = writeln!(t, "relay:   {}", self.relay_description);
        if let (Some(d), true) = (&self.forwarder_description, self.relay_kind != "forwarder") {
            let _ = writeln!(t, "compare: {d}");
        }
        if !o.setup_only {
            let _ = writeln!(
                t,
                "window:  {:.1} s after {:.1} s warm-up; {} sender / {} receiver thread(s){}{}",
                o.shape.duration.as_secs_f64(),
                o.shape.warmup.as_secs_f64(),
                o.shape.senders,
                o.shape.receivers,
                o.pin_cpu
                    .map(|c| format!(", pinned to CPU {c}"))
                    .unwrap_or_default(),
                if o.netns {
                    "; veth topology (--netns)"
                } else {
                    ""
                }
            );
        }
    }

    /// The release figures.
    fn teardown_lines(&self, t: &mut String, td: &Teardown) {
        let _ = write!(
            t,
            "\nrelease: {} calls in {:.2} s = {:.0} calls/s",
            td.released,
            td.elapsed.as_secs_f64(),
            td.released as f64 / td.elapsed.as_secs_f64().max(1e-9)
        );
        if td.failed > 0 {
            let _ = write!(
                t,
                "; {} failed: {}",
                td.failed,
                td.first_error.as_deref().unwrap_or("?")
            );
        }
        if let Some(r) = self.rss_after_release_kib {
            let _ = write!(t, "; RSS after {:.1} MiB", r as f64 / 1024.0);
        }
        t.push('\n');
    }
}

/// The setup figures: calls, rate, latency, failures, memory.
fn setup_lines(t: &mut String, s: &SetupFigures) {
    let _ = write!(
        t,
        "setup:   {} of {} calls in {:.2} s = {:.0} calls/s ({} clients)",
        s.established,
        s.requested,
        s.seconds,
        s.established as f64 / s.seconds.max(1e-9),
        s.concurrency
    );
    if let Some([p50, p99, max]) = s.latency_ms {
        let _ = write!(
            t,
            "; create+answer p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
        );
    }
    let _ = writeln!(t);
    if s.failed > 0 {
        let _ = writeln!(
            t,
            "         {} failed; first: {}",
            s.failed,
            s.first_error.as_deref().unwrap_or("?")
        );
    }
    if let (Some(b), Some(a), Some(per)) =
        (s.rss_before_kib, s.rss_after_kib, s.rss_per_call_bytes())
    {
        let _ = writeln!(
            t,
            "memory:  RSS {:.1} MiB before, {:.1} MiB with the calls: {:.0} bytes per call ({})",
            b as f64 / 1024.0,
            a as f64 / 1024.0,
            per,
            s.rss_source.as_deref().unwrap_or("")
        );
    }
}

/// How a sweep ended, for the relay and the forwarder.
fn sweep_lines(t: &mut String, s: &SweepOutcome, o: &Options) {
    let _ = writeln!(
        t,
        "\nsweep:   highest loss-free rate {} (loss <= {} %); stopped: {}",
        s.highest_loss_free_pps
            .map_or("none".to_owned(), |r| format!("{r:.0} pps")),
        o.max_loss_pct,
        s.stopped_because
    );
    if let Some((h, why)) = &s.forwarder {
        let _ = writeln!(
            t,
            "         minimal forwarder: highest loss-free rate {}; stopped: {why}",
            h.map_or("none".to_owned(), |r| format!("{r:.0} pps")),
        );
    }
}

fn cell_f(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

fn step_table(t: &mut String, s: &Step) {
    let table = StepTable::new(s);
    table.header(t);
    table.counts(t);
    table.latencies(t, "one-way latency", PhaseResult::latency_us);
    if table.group {
        table.row(t, "packets that reached every receiver", &|p| {
            format!("{}", p.last_latency.len())
        });
        table.latencies(t, "latency to last receiver", PhaseResult::last_latency_us);
    }
    table.cpu(t);
}

/// One step as a table: a column per measured phase, then a column per path with added latency
/// against the floor.
struct StepTable<'s> {
    step: &'s Step,
    cols: Vec<&'s PhaseResult>,
    /// The paths that have added latency against the floor.
    added: Vec<&'s PhaseResult>,
    /// Group calls: delivered packets to every receiver, not one per call.
    group: bool,
}

impl<'s> StepTable<'s> {
    fn new(step: &'s Step) -> Self {
        let cols: Vec<&PhaseResult> = step.phases().collect();
        let added = match &step.floor {
            Some(_) => cols
                .iter()
                .copied()
                .filter(|p| p.label != "floor")
                .collect(),
            None => Vec::new(),
        };
        let group = cols
            .iter()
            .any(|p| p.fanout > 1 || !p.last_latency.is_empty());
        StepTable {
            step,
            cols,
            added,
            group,
        }
    }

    fn header(&self, t: &mut String) {
        let _ = write!(t, "{:<40}", "");
        for p in &self.cols {
            let _ = write!(t, "{:>16}", p.label);
        }
        for p in &self.added {
            let _ = write!(t, "{:>16}", format!("added {}", p.label));
        }
        t.push('\n');
    }

    /// A row named `name` with `f` of each phase.
    fn row(&self, t: &mut String, name: &str, f: &dyn Fn(&PhaseResult) -> String) {
        let _ = write!(t, "{name:<40}");
        for p in &self.cols {
            let _ = write!(t, "{:>16}", f(p));
        }
        t.push('\n');
    }

    /// Rates, counts, losses and failures.
    fn counts(&self, t: &mut String) {
        let group = self.group;
        self.row(t, "offered pps", &|p| format!("{:.0}", p.offered_pps));
        self.row(t, "achieved pps (sent in window)", &|p| {
            format!("{:.0}", p.achieved_pps())
        });
        if group {
            self.row(t, "delivered pps (all receivers)", &|p| {
                format!("{:.0}", p.received_pps())
            });
            self.row(t, "receivers per packet", &|p| format!("{}", p.fanout));
            self.row(t, "sent / delivered", &|p| {
                format!("{}/{}", p.sent, p.totals.received)
            });
        } else {
            self.row(t, "received pps", &|p| format!("{:.0}", p.received_pps()));
            self.row(t, "sent / received", &|p| {
                format!("{}/{}", p.sent, p.totals.received)
            });
        }
        self.row(t, "lost", &|p| {
            format!("{} ({:.3}%)", p.lost(), p.loss_pct())
        });
        self.row(t, "reordered / duplicates", &|p| {
            format!("{} / {}", p.totals.reordered, p.totals.duplicates)
        });
        if self
            .cols
            .iter()
            .any(|p| p.send_failures > 0 || p.totals.decrypt_failures > 0 || p.totals.malformed > 0)
        {
            self.row(t, "send fail / decrypt fail / bad", &|p| {
                format!(
                    "{}/{}/{}",
                    p.send_failures, p.totals.decrypt_failures, p.totals.malformed
                )
            });
        }
        let with_loss = if group {
            "receivers with loss (worst %)"
        } else {
            "calls with loss (worst %)"
        };
        self.row(t, with_loss, &|p| {
            format!("{} ({:.2})", p.calls_with_loss, p.worst_call_loss_pct)
        });
        self.row(t, "sender max lateness µs", &|p| {
            format!("{:.0}", p.sender_max_late_us)
        });
        if self.cols.iter().any(|p| p.skipped_frames > 0) {
            self.row(t, "frames (paced: packets) skipped, behind", &|p| {
                format!("{}", p.skipped_frames)
            });
        }
    }

    /// A row per quantile of `what` (`latency` of a phase at a quantile), with what each path
    /// adds to the floor.
    fn latencies(&self, t: &mut String, what: &str, latency: fn(&PhaseResult, f64) -> Option<f64>) {
        for (_, label, q) in QUANTILES {
            let _ = write!(t, "{:<40}", format!("{what} {label} µs"));
            for p in &self.cols {
                let _ = write!(t, "{:>16}", cell_f(latency(p, q), 1));
            }
            if let Some(f) = &self.step.floor {
                for r in &self.added {
                    let d = match (latency(f, q), latency(r, q)) {
                        (Some(a), Some(b)) => format!("{:+.1}", b - a),
                        _ => "-".into(),
                    };
                    let _ = write!(t, "{d:>16}");
                }
            }
            t.push('\n');
        }
    }

    /// CPU rows: every probe any phase has, by key; the forwarding process; the fan-out; the
    /// relay against the minimal forwarder.
    fn cpu(&self, t: &mut String) {
        let mut keys: Vec<(&str, &str)> = Vec::new();
        for p in self.cols.iter().rev() {
            for c in &p.cpu {
                if !keys.iter().any(|(k, _)| *k == c.key) {
                    keys.push((c.key, &c.label));
                }
            }
        }
        if !keys.is_empty() {
            let per = if self.group {
                "CPU µs per delivered packet:"
            } else {
                "CPU µs per received packet:"
            };
            let _ = writeln!(t, "{per}");
        }
        for (key, label) in keys {
            self.row(t, &format!("  {label}"), &|p| {
                let v = p.cpu.iter().find(|c| c.key == key).map(|c| c.us_per_packet);
                cell_f(v, 2)
            });
        }
        let s = self.step;
        if s.forwarder.is_some() || s.relay.is_some() {
            self.row(t, "forwarding process CPU µs/packet", &|p| {
                cell_f(relay_cpu(p).map(|c| c.us_per_packet), 2)
            });
        }
        if self.group {
            self.row(t, "fan-out CPU µs/delivered (floor: sender)", &|p| {
                cell_f(fanout_cpu(p).map(|c| c.us_per_packet), 2)
            });
        }
        if s.floor.is_some() && (s.forwarder.is_some() || s.relay.is_some()) {
            self.row(t, "machine CPU µs/packet above the floor", &|p| {
                if p.label == "floor" {
                    "-".into()
                } else {
                    cell_f(s.machine_above_floor(p), 2)
                }
            });
            self.row(t, "  the same, wall x CPUs - idle", &|p| {
                if p.label == "floor" {
                    "-".into()
                } else {
                    cell_f(s.above_floor(p, "machine_by_idle"), 2)
                }
            });
        }
        if self.cols.iter().any(|p| !p.wakeups.is_empty()) {
            self.row(t, "forwarding process wake-ups/packet", &|p| {
                cell_f(wakeups(p).map(|w| w.per_packet), 3)
            });
        }
        if let Some(x) = s.cpu_ratio() {
            let _ = writeln!(
                t,
                "{:<40}{:>16}",
                "relay CPU / minimal forwarder CPU",
                format!("{x:.2}x")
            );
        }
        if let Some(x) = s.machine_ratio() {
            let _ = writeln!(
                t,
                "{:<40}{:>16}",
                "machine CPU above floor: relay / fwd",
                format!("{x:.2}x")
            );
        }
    }
}

fn sweep_table(t: &mut String, steps: &[Step]) {
    let _ = writeln!(
        t,
        "{:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "path",
        "offered",
        "achieved",
        "loss %",
        "p50 µs",
        "p99 µs",
        "+p50 µs",
        "+p99 µs",
        "floor %",
        "cpu µs/p"
    );
    for s in steps {
        let paths: Vec<&PhaseResult> = match (&s.forwarder, &s.relay, &s.floor) {
            (None, None, Some(f)) => vec![f],
            _ => [s.forwarder.as_ref(), s.relay.as_ref()]
                .into_iter()
                .flatten()
                .collect(),
        };
        for main in paths {
            let added = |q: f64| match (&s.floor, main.label) {
                (Some(f), "forwarder" | "relay") => match (f.latency_us(q), main.latency_us(q)) {
                    (Some(a), Some(b)) => format!("{:+.1}", b - a),
                    _ => "-".into(),
                },
                _ => "-".into(),
            };
            let cpu = relay_cpu(main)
                .or_else(|| main.cpu.first())
                .map(|c| c.us_per_packet);
            let _ = writeln!(
                t,
                "{:>10} {:>10.0} {:>10.0} {:>9.3} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                main.label,
                s.rate,
                main.achieved_pps(),
                main.loss_pct(),
                cell_f(main.latency_us(0.5), 1),
                cell_f(main.latency_us(0.99), 1),
                added(0.5),
                added(0.99),
                match (&s.floor, main.label) {
                    (Some(f), "forwarder" | "relay") => format!("{:.3}", f.loss_pct()),
                    _ => "-".into(),
                },
                cell_f(cpu, 2),
            );
        }
    }
}
