//! `mcvideo-relay loadgen`: a load generator and latency meter for the relay.
//!
//! It sets up N one-to-one video push calls (through an in-process [`Engine`], a sidecar's
//! HTTP/JSON API, or a sidecar it starts), sends video-like RTP or SRTP bursts from N caller
//! sockets and receives them on N callee sockets, and reports one-way latency (HDR histogram:
//! p50, p90, p99, p99.9, max), loss, reordering and duplicates, offered and achieved rates, and
//! the relay's CPU time per forwarded packet. The same load sent with no relay (caller straight
//! to callee) is the **floor**; the relay's *added* latency is reported against it, measured
//! the same way in the same invocation (BENCHMARKING.md in the repository, "Method").
//!
//! Senders send frame bursts (`--pattern burst`, the default) or pace every call's packets
//! evenly, calls out of phase, one `sendmsg` per packet (`--pattern paced`). With
//! `--compare-forwarder` (or `--forwarder` alone) the same load also goes through a minimal
//! forwarder in a process of its own (`mcvideo-relay minimal-forwarder`, [`run_minimal_forwarder`]), and the
//! relay's CPU per packet is reported as a multiple of the forwarder's.
//!
//! Call SDP has one video stream with `a=rtcp-mux` and no MCVideo control line, so a call takes
//! two relay ports and the caller is granted on acceptance.
//!
//! With `--group-receivers N` the calls are group calls of 1 transmitter and N receive-only
//! members (module `group`): the transmitter asks to transmit on its MCVideo control channel and sends
//! with the SSRC it is granted; every figure is per **delivered** packet (sent × N), and the
//! receivers' latency is also reported to the last receiver of each packet. The floor is the
//! transmitter sending each packet to its N receivers itself.
//!
//! ```no_run
//! // What `mcvideo-relay loadgen --calls 10 --rate 2000 --duration 2` does:
//! let args: Vec<String> = ["--calls", "10", "--rate", "2000", "--duration", "2"]
//!     .map(String::from)
//!     .to_vec();
//! let _status = mcvideo_relay::loadgen::run(&args);
//! ```
//!
//! [`Engine`]: crate::relay::Engine
#![allow(clippy::disallowed_methods)] // a measuring tool reads the clock

mod args;
mod forwarder;
mod group;
#[doc(hidden)]
pub mod http;
#[cfg(test)]
mod http_tests;
pub mod netns;
mod report;
mod setup;
mod sys;
mod traffic;

use crate::control::MediaSecurity;
use crate::srtp::SrtpContext;
use args::{Options, Target};
pub use forwarder::run_minimal_forwarder;
use forwarder::ForwarderProcess;
use report::{Report, SetupFigures, Step, SweepOutcome};
use setup::{CallSet, Relay};
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use sys::Stop;
use traffic::{Load, Paths, PhaseResult, Probe, ProbeSource};

/// SSRC bases of the floor's and the relay's streams.
const FLOOR_SSRC: u32 = 0x4c46_0000;
const RELAY_SSRC: u32 = 0x4c52_0000;
/// SSRC base of the minimal forwarder's streams.
const FORWARDER_SSRC: u32 = 0x4c4d_0000;

/// Runs `loadgen` with the arguments after the subcommand name. Exit status: 0 done, 1 failed
/// (the table says why), 2 bad arguments, 130 interrupted (after releasing every call).
pub fn run(args: &[String]) -> ExitCode {
    let opts = match args::parse(args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{}", args::help());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    sys::install_sigint();
    // Its own sockets, and an in-process engine's: two or more per call.
    let _ = crate::relay::raise_open_files_limit();
    let stop = Stop::new();
    let mut rep = Report {
        relay_kind: "none",
        relay_description: "none: caller sockets send straight to callee sockets (the floor)"
            .into(),
        ..Report::default()
    };
    let result = session(&opts, &stop, &mut rep);
    if let Err(e) = &result {
        rep.error = Some(e.clone());
    }
    rep.interrupted = stop.requested();
    let mut failed = result.is_err();
    if let Err(e) = emit(&opts, &rep) {
        eprintln!("mcvideo-relay loadgen: {e}");
        failed = true;
    }
    if rep.interrupted {
        ExitCode::from(130)
    } else if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Prints the table (stdout, or stderr when the JSON goes to stdout) and writes the JSON.
fn emit(o: &Options, rep: &Report) -> Result<(), String> {
    let table = rep.to_table(o);
    let json_to_stdout = o.json.as_deref() == Some("-");
    if json_to_stdout {
        eprint!("{table}");
    } else {
        print!("{table}");
        let _ = std::io::stdout().flush();
    }
    if let Some(path) = &o.json {
        let text =
            serde_json::to_string_pretty(&rep.to_json(o)).map_err(|e| format!("JSON: {e}"))?;
        if json_to_stdout {
            println!("{text}");
        } else {
            std::fs::write(path, text + "\n").map_err(|e| format!("--json {path}: {e}"))?;
        }
    }
    Ok(())
}

/// File descriptors this process needs for the run (sockets per call, plus some slack).
fn fds_needed(o: &Options) -> usize {
    if let Some(n) = o.group_receivers {
        // Per group: the floor's and the relay's member sockets, the transmitter's control
        // socket, and the engine's member sockets (video, control).
        let members = n + 1;
        let floor = if o.floor() { members } else { 0 };
        let engine = if o.target == Target::Engine {
            members * 2 + 2
        } else {
            0
        };
        return o.calls * (floor + members + 1 + engine) + 64;
    }
    let floor = o.floor();
    let forwarder = if o.forwarder() && !o.setup_only { 2 } else { 0 };
    let per_call = match (&o.target, o.setup_only) {
        (Target::Engine, true) => 2,
        (_, true) => 0,
        (Target::Direct, false) => 2,
        (Target::Forwarder, false) => {
            if floor {
                2
            } else {
                0
            }
        }
        (Target::Engine, false) => 4 + if floor { 2 } else { 0 },
        (_, false) => 2 + if floor { 2 } else { 0 },
    } + forwarder;
    o.calls * per_call + 64
}

fn session(o: &Options, stop: &Stop, rep: &mut Report) -> Result<(), String> {
    check_open_files(o, rep)?;
    if let Some(cpu) = o.pin_cpu {
        sys::set_pin(cpu)?;
    }
    // Before anything is started or bound: this thread moves into the relay's namespace.
    let _topology = if o.netns {
        Some(netns::Topology::make()?)
    } else {
        None
    };
    let relay = Relay::open(o)?;
    if let Some(r) = &relay {
        rep.relay_kind = r.kind();
        rep.relay_description = r.describe();
        rep.relay_pid = r.pid();
    }
    if o.setup_only {
        let Some(relay) = &relay else {
            return Err("--setup-only needs a relay".into());
        };
        return setup_only(o, relay, stop, rep);
    }
    let mut floor = match (o.floor(), o.group_receivers) {
        (false, _) => None,
        (true, None) => Some(floor_paths(o)?),
        (true, Some(_)) => Some(group::floor_paths(o, FLOOR_SSRC)?),
    };
    let mut fwd = if o.forwarder() {
        Some(start_forwarder(o, relay.is_none(), rep)?)
    } else {
        None
    };
    let mut relayed = match (&relay, o.group_receivers) {
        (Some(r), None) => {
            let (p, calls) = establish(o, r, stop, rep)?;
            Some((p, Established::Calls(calls)))
        }
        (Some(r), Some(_)) => {
            let (p, groups) = group::establish(o, r, RELAY_SSRC, stop, rep)?;
            Some((p, Established::Groups(groups)))
        }
        (None, _) => None,
    };
    let result = run_steps(
        o,
        relay.as_ref(),
        Phases {
            floor: floor.as_mut(),
            forwarder: fwd.as_mut().map(|(f, p)| (f.pid(), p)),
            relay: relayed.as_mut().map(|(p, _)| p),
        },
        stop,
        rep,
    );
    drop(fwd);
    if let Some((_, calls)) = relayed.take() {
        rep.teardown = Some(calls.release());
    }
    if let Some(Relay::Engine(e)) = &relay {
        note_drops(e, rep);
    }
    result
}

/// Refuses a run that needs more open files than the limit allows (a setup-only run goes on,
/// with a note).
fn check_open_files(o: &Options, rep: &mut Report) -> Result<(), String> {
    let Some(limit) = sys::open_files_limit() else {
        return Ok(());
    };
    let need = fds_needed(o);
    if need as u64 <= limit {
        return Ok(());
    }
    let msg = format!(
        "{} calls need about {need} open files here and the limit is {limit} (ulimit -n){}",
        o.calls,
        match (&o.target, o.setup_only) {
            (Target::Engine, true) => ": the engine holds two sockets per call",
            (Target::Engine, false) => {
                "; --no-floor, or a relay in its own process (--spawn-relay), need fewer"
            }
            _ => "",
        }
    );
    if !o.setup_only {
        return Err(msg);
    }
    rep.notes.push(msg);
    Ok(())
}

/// The minimal forwarder and its paths, described in the report (as the relay when there is
/// no other).
fn start_forwarder(
    o: &Options,
    alone: bool,
    rep: &mut Report,
) -> Result<(ForwarderProcess, Paths), String> {
    let (proc_, paths) = forwarder_paths(o)?;
    let desc = format!(
        "minimal forwarder (pid {}): one thread, level-triggered epoll, one recv_from + \
         one send_to per event, no parsing",
        proc_.pid()
    );
    if alone {
        rep.relay_kind = "forwarder";
        rep.relay_description = desc.clone();
    }
    rep.forwarder_pid = Some(proc_.pid());
    rep.forwarder_description = Some(desc);
    if o.srtp == Some(MediaSecurity::PerLeg) {
        rep.notes.push(
            "the minimal forwarder passes SRTP through (end to end); the relay decrypts and \
             re-encrypts per leg: the CPU ratio includes that work"
                .into(),
        );
    }
    Ok((proc_, paths))
}

/// Notes the packets the in-process engine dropped.
fn note_drops(e: &crate::relay::Engine, rep: &mut Report) {
    let s = e.stats();
    let (a, b) = (s.caller.dropped_total(), s.callee.dropped_total());
    if a + b > 0 {
        rep.notes.push(format!(
            "the relay counted {a} dropped packet(s) on caller legs and {b} on callee legs"
        ));
    }
    let g = s.group_members.dropped_total();
    if g > 0 {
        rep.notes.push(format!(
            "the relay counted {g} dropped packet(s) on group member legs"
        ));
    }
}

/// Calls set up through the relay: one-to-one calls or group calls.
enum Established<'r> {
    Calls(CallSet<'r>),
    Groups(group::GroupSet<'r>),
}

impl Established<'_> {
    fn release(self) -> setup::Teardown {
        match self {
            Established::Calls(c) => c.release(),
            Established::Groups(g) => g.release(),
        }
    }
}

/// Caller/callee socket pairs sending straight to each other, with SRTP if asked for.
fn floor_paths(o: &Options) -> Result<Paths, String> {
    let mut p = Paths::bind(o.calls, FLOOR_SSRC).map_err(|e| format!("floor sockets: {e}"))?;
    if o.srtp.is_some() {
        for (t, r) in p.tx.iter_mut().zip(p.rx.iter_mut()) {
            let k = setup::fresh_key()?;
            t.srtp = Some(SrtpContext::new(&k));
            r.srtp = Some(SrtpContext::new(&k));
        }
    }
    Ok(p)
}

/// Caller/callee socket pairs through a minimal forwarder this run starts (SRTP end to end:
/// the forwarder does not look at the packets).
fn forwarder_paths(o: &Options) -> Result<(ForwarderProcess, Paths), String> {
    let mut p =
        Paths::bind(o.calls, FORWARDER_SSRC).map_err(|e| format!("forwarder sockets: {e}"))?;
    let bin = match &o.forwarder_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(|e| format!("current executable: {e}"))?,
    };
    let dests: Vec<SocketAddr> = p.tx.iter().map(|t| t.dest).collect();
    let (proc_, bound) = ForwarderProcess::start(&bin, &dests)?;
    for ((t, r), addr) in p.tx.iter_mut().zip(p.rx.iter_mut()).zip(bound) {
        t.dest = addr;
        if o.srtp.is_some() {
            let k = setup::fresh_key()?;
            t.srtp = Some(SrtpContext::new(&k));
            r.srtp = Some(SrtpContext::new(&k));
        }
    }
    Ok((proc_, p))
}

/// Sets up one call per socket pair through the relay and points the callers at it.
fn establish<'r>(
    o: &Options,
    relay: &'r Relay,
    stop: &Stop,
    rep: &mut Report,
) -> Result<(Paths, CallSet<'r>), String> {
    let n = o.calls;
    let mut paths = Paths::bind(n, RELAY_SSRC).map_err(|e| format!("call sockets: {e}"))?;
    let keys = |n: usize| -> Result<Vec<_>, String> {
        if o.srtp.is_some() {
            (0..n).map(|_| setup::fresh_key()).collect()
        } else {
            Ok(Vec::new())
        }
    };
    let (caller_keys, callee_keys) = (keys(n)?, keys(n)?);
    let caller_ports: Vec<u16> = paths.tx.iter().map(|t| t.port()).collect();
    let ssrcs: Vec<u32> = paths.tx.iter().map(|t| t.ssrc).collect();
    let callee_ports: Vec<u16> = paths
        .rx
        .iter()
        .map(|r| r.addr().map_or(0, |a| a.port()))
        .collect();
    let prefix = setup::id_prefix();
    let spec = |i: usize| {
        setup::call_spec(
            &prefix,
            i,
            (
                caller_ports.get(i).copied().unwrap_or(0),
                ssrcs.get(i).copied(),
                caller_keys.get(i),
            ),
            (
                callee_ports.get(i).copied().unwrap_or(0),
                callee_keys.get(i),
            ),
        )
    };
    let on_ok = |_: usize, offer: &str, answer: &str| {
        let (dest, _) = setup::video_of(answer)?;
        let (_, callee_key) = setup::video_of(offer)?;
        Ok::<(SocketAddr, Option<_>), String>((dest, callee_key))
    };
    let (run, calls) = set_up(o, relay, stop, &prefix, &spec, &on_ok)?;
    rep.setup = Some(run.figures());
    if stop.requested() {
        rep.teardown = Some(calls.release());
        return Err("interrupted during call setup".into());
    }
    if run.failed() > 0 || run.established() < n {
        let e = format!(
            "{} of {n} calls could not be set up; first error: {}",
            n - run.established(),
            run.first_error().unwrap_or("?")
        );
        rep.teardown = Some(calls.release());
        return Err(e);
    }
    for (i, r) in run.results.into_iter().enumerate() {
        let Some(Ok((dest, callee_key))) = r else {
            continue;
        };
        let (Some(t), Some(rx)) = (paths.tx.get_mut(i), paths.rx.get_mut(i)) else {
            continue;
        };
        t.dest = dest;
        if let Some(ck) = caller_keys.get(i) {
            t.srtp = Some(SrtpContext::new(ck));
            // per_leg: the key the relay put in the callee's offer; end_to_end: the caller's.
            let rk = match (o.srtp.unwrap_or(MediaSecurity::EndToEnd), callee_key) {
                (_, Some(k)) => k,
                (MediaSecurity::EndToEnd, None) => ck.clone(),
                (MediaSecurity::PerLeg, None) => {
                    return Err("per_leg: the relay's offer to the callee has no a=crypto".into())
                }
            };
            rx.srtp = Some(SrtpContext::new(&rk));
        }
    }
    Ok((paths, calls))
}

fn probes(relay: Option<&Relay>, phase: &str, group: bool) -> Vec<Probe> {
    let mut v = Vec::new();
    match relay {
        Some(Relay::Engine(e)) => {
            if phase == "relay" {
                v.push(Probe {
                    key: "relay_workers",
                    label: "relay worker threads (mcv-worker-*)".into(),
                    source: ProbeSource::Threads("mcv-worker"),
                });
                if e.kernel_offload_active() {
                    // The engine's kernel fast path program is this process's.
                    v.push(Probe {
                        key: "relay_bpf_program",
                        label: "relay's BPF program (bpf_stats)".into(),
                        source: ProbeSource::BpfPrograms(std::process::id()),
                    });
                }
            }
            v.push(Probe {
                key: "process",
                label: "process CPU (relay + loadgen)".into(),
                source: ProbeSource::SelfProcess,
            });
        }
        Some(r) => {
            if let Some(pid) = r.pid() {
                v.push(Probe {
                    key: "relay_process",
                    label: format!("relay process (pid {pid})"),
                    source: ProbeSource::Pid(pid),
                });
                if phase == "relay" {
                    v.push(Probe {
                        key: "relay_process",
                        label: format!("relay process (pid {pid})"),
                        source: ProbeSource::Switches(pid),
                    });
                    // Shown while kernel.bpf_stats_enabled = 1 and the relay holds its
                    // kernel fast path program.
                    v.push(Probe {
                        key: "relay_bpf_program",
                        label: "relay's BPF program (bpf_stats)".into(),
                        source: ProbeSource::BpfPrograms(pid),
                    });
                }
            }
            v.push(Probe {
                key: "process",
                label: "loadgen process".into(),
                source: ProbeSource::SelfProcess,
            });
        }
        None => v.push(Probe {
            key: "process",
            label: "loadgen process".into(),
            source: ProbeSource::SelfProcess,
        }),
    }
    v.extend(machine_probes());
    if group {
        // The floor's fan-out is the transmitter's own work: its sender threads apart.
        v.push(Probe {
            key: "loadgen_senders",
            label: "loadgen sender threads (lg-send-*)".into(),
            source: ProbeSource::Threads("lg-send"),
        });
        v.push(Probe {
            key: "loadgen_receivers",
            label: "loadgen receiver threads (lg-recv-*)".into(),
            source: ProbeSource::Threads("lg-recv"),
        });
    } else {
        v.push(Probe {
            key: "loadgen_threads",
            label: "loadgen send/receive threads".into(),
            source: ProbeSource::Threads("lg-"),
        });
    }
    v
}

/// The paths a run measures, each optional.
struct Phases<'a> {
    floor: Option<&'a mut Paths>,
    /// The minimal forwarder's pid and its paths.
    forwarder: Option<(u32, &'a mut Paths)>,
    relay: Option<&'a mut Paths>,
}

/// All CPUs' busy time: the kernel's work for the forwarding (softirq in the sender's
/// context) shows only here.
fn machine_probes() -> [Probe; 2] {
    [
        Probe {
            key: "machine",
            label: "machine (all CPUs, /proc/stat)".into(),
            source: ProbeSource::Machine,
        },
        Probe {
            key: "machine_by_idle",
            label: "machine (wall x CPUs - idle)".into(),
            source: ProbeSource::MachineByIdle,
        },
    ]
}

fn forwarder_probes(pid: u32) -> Vec<Probe> {
    let mut v = vec![
        Probe {
            key: "forwarder_process",
            label: format!("minimal forwarder process (pid {pid})"),
            source: ProbeSource::Pid(pid),
        },
        Probe {
            key: "forwarder_process",
            label: format!("minimal forwarder process (pid {pid})"),
            source: ProbeSource::Switches(pid),
        },
    ];
    v.extend(machine_probes());
    v.extend([
        Probe {
            key: "process",
            label: "loadgen process".into(),
            source: ProbeSource::SelfProcess,
        },
        Probe {
            key: "loadgen_threads",
            label: "loadgen send/receive threads".into(),
            source: ProbeSource::Threads("lg-"),
        },
    ]);
    v
}

/// A path's progress through a sweep.
#[derive(Debug, Default)]
struct SweepState {
    highest: Option<f64>,
    stopped: Option<String>,
}

impl SweepState {
    fn active(&self) -> bool {
        self.stopped.is_none()
    }

    /// Judges one step's result at `rate`.
    fn judge(&mut self, o: &Options, rate: f64, p: Option<&PhaseResult>) {
        if !self.active() {
            return;
        }
        let Some(p) = p else {
            self.stopped = Some("nothing measured".into());
            return;
        };
        let (loss, achieved) = (p.loss_pct(), p.achieved_pps());
        if loss > o.max_loss_pct {
            self.stopped = Some(format!(
                "loss {loss:.3} % > {} % at {rate:.0} pps",
                o.max_loss_pct
            ));
        } else if achieved < rate * 0.95 {
            self.stopped = Some(format!(
                "the senders offered only {achieved:.0} of {rate:.0} pps (loadgen-limited: \
                 try --senders 2, or fewer, larger bursts)"
            ));
        } else {
            self.highest = Some(rate);
        }
    }
}

/// The sweep follows the relay (or, without one, the forwarder or the floor) and, with
/// --compare-forwarder, the forwarder too, each until it loses packets.
struct Sweep {
    main: SweepState,
    fwd: SweepState,
    /// The forwarder is judged on its own, beside a relay.
    compare_fwd: bool,
}

impl Sweep {
    /// Whether the forwarder still runs its phase.
    fn forwarder_active(&self) -> bool {
        if self.compare_fwd {
            self.fwd.active()
        } else {
            self.main.active()
        }
    }

    /// Judges the step just measured.
    fn judge(&mut self, o: &Options, step: &Step) {
        let (f, fw, r) = (&step.floor, &step.forwarder, &step.relay);
        if self.compare_fwd {
            self.main.judge(o, step.rate, r.as_ref());
            self.fwd.judge(o, step.rate, fw.as_ref());
        } else {
            let main = r.as_ref().or(fw.as_ref()).or(f.as_ref());
            self.main.judge(o, step.rate, main);
        }
    }

    /// Why the sweep ends after the step at `rate`, if it does (empty: every path stopped on
    /// its own).
    fn end(&self, o: &Options, rate: f64, stop: &Stop) -> Option<String> {
        let any_active = self.main.active() || (self.compare_fwd && self.fwd.active());
        if stop.requested() {
            Some("interrupted".to_owned())
        } else if !any_active {
            Some(String::new())
        } else if rate * o.sweep_factor > o.sweep_max {
            Some(format!("reached --sweep-max {:.0}", o.sweep_max))
        } else {
            None
        }
    }

    /// The report's outcome of a sweep that ended because of `why`.
    fn outcome(&self, why: &str) -> SweepOutcome {
        let reason = |st: &SweepState| {
            st.stopped.clone().unwrap_or_else(|| {
                if why.is_empty() {
                    "?".into()
                } else {
                    why.to_owned()
                }
            })
        };
        SweepOutcome {
            highest_loss_free_pps: self.main.highest,
            stopped_because: reason(&self.main),
            forwarder: self
                .compare_fwd
                .then(|| (self.fwd.highest, reason(&self.fwd))),
        }
    }
}

/// The load of one phase at `rate`.
fn load(o: &Options, rate: f64, label: &'static str) -> Load {
    Load {
        label,
        rate,
        paced: o.pattern == args::Pattern::Paced,
        shape: o.shape,
        progress: !o.quiet,
    }
}

/// A sweep's progress line for each path measured (the floor only when it is all there is).
fn sweep_progress(step: &Step) {
    let (f, fw, r) = (&step.floor, &step.forwarder, &step.relay);
    for p in [fw.as_ref(), r.as_ref(), f.as_ref()].into_iter().flatten() {
        if p.label == "floor" && (fw.is_some() || r.is_some()) {
            continue;
        }
        eprintln!(
            "loadgen sweep: {} offered {:.0} pps, achieved {:.0}, loss {:.3} %, p50 {} µs, p99 {} µs",
            p.label,
            step.rate,
            p.achieved_pps(),
            p.loss_pct(),
            p.latency_us(0.5).map_or("-".into(), |v| format!("{v:.1}")),
            p.latency_us(0.99).map_or("-".into(), |v| format!("{v:.1}")),
        );
    }
}

fn run_steps(
    o: &Options,
    relay: Option<&Relay>,
    mut phases: Phases<'_>,
    stop: &Stop,
    rep: &mut Report,
) -> Result<(), String> {
    let mut rate = o.rate;
    let group = o.group_receivers.is_some();
    let floor_probes = probes(relay, "floor", group);
    let relay_probes = probes(relay, "relay", group);
    let fwd_probes = phases
        .forwarder
        .as_ref()
        .map(|(pid, _)| forwarder_probes(*pid))
        .unwrap_or_default();
    let mut sweep = Sweep {
        main: SweepState::default(),
        fwd: SweepState::default(),
        compare_fwd: relay.is_some() && phases.forwarder.is_some(),
    };
    loop {
        let f = match phases.floor.as_deref_mut() {
            Some(p) if !stop.requested() => Some(traffic::measure(
                p,
                &load(o, rate, "floor"),
                &floor_probes,
                stop,
            )?),
            _ => None,
        };
        let fw = match phases.forwarder.as_mut() {
            Some((_, p)) if !stop.requested() && sweep.forwarder_active() => Some(
                traffic::measure(p, &load(o, rate, "forwarder"), &fwd_probes, stop)?,
            ),
            _ => None,
        };
        let r = match phases.relay.as_deref_mut() {
            Some(p) if !stop.requested() && sweep.main.active() => Some(traffic::measure(
                p,
                &load(o, rate, "relay"),
                &relay_probes,
                stop,
            )?),
            _ => None,
        };
        let step = Step {
            rate,
            floor: f,
            forwarder: fw,
            relay: r,
        };
        if o.sweep && !o.quiet {
            sweep_progress(&step);
        }
        if o.sweep {
            sweep.judge(o, &step);
        }
        rep.steps.push(step);
        if !o.sweep {
            break;
        }
        if let Some(why) = sweep.end(o, rate, stop) {
            rep.sweep = Some(sweep.outcome(&why));
            break;
        }
        rate *= o.sweep_factor;
    }
    Ok(())
}

/// `--setup-only`: N calls set up and released, no media; setup rate and memory per call.
fn setup_only(o: &Options, relay: &Relay, stop: &Stop, rep: &mut Report) -> Result<(), String> {
    let n = o.calls;
    // Real sockets nobody reads stand in for the endpoints (the relay may send them a packet).
    let sink = |what: &str, side| {
        traffic::bind_socket(side)
            .and_then(|s| Ok((s.local_addr()?.port(), s)))
            .map_err(|e| format!("{what} socket: {e}"))
    };
    let (caller_port, _caller_sink) = sink("caller", traffic::Side::Caller)?;
    let (callee_port, _callee_sink) = sink("callee", traffic::Side::Callee)?;
    let (caller_key, callee_key) = if o.srtp.is_some() {
        (Some(setup::fresh_key()?), Some(setup::fresh_key()?))
    } else {
        (None, None)
    };
    let prefix = setup::id_prefix();
    let spec = |i: usize| {
        setup::call_spec(
            &prefix,
            i,
            (
                caller_port,
                Some(RELAY_SSRC.wrapping_add(i as u32)),
                caller_key.as_ref(),
            ),
            (callee_port, callee_key.as_ref()),
        )
    };
    let on_ok = |_: usize, _: &str, _: &str| Ok::<(), String>(());
    let (rss_pid, rss_source) = match relay {
        Relay::Engine(_) => (
            None,
            Some(
                "this process: relay engine + loadgen (kernel socket memory is not in RSS)"
                    .to_owned(),
            ),
        ),
        r => match r.pid() {
            Some(p) => (Some(p), Some(format!("relay process (pid {p})"))),
            None => {
                rep.notes
                    .push("no --relay-pid: the relay's memory per call is not measured".into());
                (None, None)
            }
        },
    };
    let rss = |src: &Option<String>| src.as_ref().and_then(|_| sys::rss_kib(rss_pid));
    let rss_before = rss(&rss_source);
    let (run, calls) = set_up(o, relay, stop, &prefix, &spec, &on_ok)?;
    // Let the workers start every call's tasks before reading the memory.
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss(&rss_source);
    rep.setup = Some(SetupFigures {
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        rss_source,
        ..run.figures()
    });
    if !o.quiet {
        eprintln!(
            "loadgen: {} calls set up; releasing {}",
            run.established(),
            calls.len()
        );
    }
    rep.teardown = Some(calls.release());
    std::thread::sleep(Duration::from_millis(300));
    rep.rss_after_release_kib = rss(&rep.setup.as_ref().and_then(|s| s.rss_source.clone()));
    if run.failed() > 0 {
        return Err(format!(
            "{} of {n} calls could not be set up; first error: {}",
            run.failed(),
            run.first_error().unwrap_or("?")
        ));
    }
    Ok(())
}

/// Sets up `o.calls` calls (`spec` and `on_ok` as for [`setup::setup_calls`]) and holds every
/// call that was tried (IDs `{prefix}-{i}`) for release.
fn set_up<'r, T: Send>(
    o: &Options,
    relay: &'r Relay,
    stop: &Stop,
    prefix: &str,
    spec: &(dyn Fn(usize) -> setup::CallSpec + Sync),
    on_ok: &(dyn Fn(usize, &str, &str) -> Result<T, String> + Sync),
) -> Result<(setup::SetupRun<T>, CallSet<'r>), String> {
    let security = o.srtp.unwrap_or(MediaSecurity::EndToEnd);
    let run = setup::setup_calls(
        relay,
        o.calls,
        o.setup_concurrency,
        security,
        stop,
        spec,
        on_ok,
    )?;
    let ids = established_ids(&run.results, prefix);
    Ok((run, CallSet::new(relay, ids, o.setup_concurrency)))
}

/// The IDs (`{prefix}-{i}`) of the calls whose setup succeeded.
fn established_ids<T>(results: &[Option<T>], prefix: &str) -> Vec<String> {
    results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_some())
        .map(|(i, _)| format!("{prefix}-{i}"))
        .collect()
}
