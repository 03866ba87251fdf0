//! Command-line options of `mcvideo-relay loadgen` (clap derive: `--flag VALUE` or
//! `--flag=VALUE`), resolved and checked into [`Options`].

use super::traffic::Shape;
use crate::control::MediaSecurity;
use clap::{ArgGroup, CommandFactory as _, Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

const ABOUT: &str = "\
Sets up N one-to-one video push calls, sends video-like RTP from N caller sockets (frame
bursts, or paced: evenly spaced packets) and measures on N callee sockets: one-way latency
(HDR histogram), loss, reordering, duplicates; the relay's CPU per forwarded packet. Unless
--no-floor, the same load is first sent with no relay (caller straight to callee: the floor)
and the relay's added latency is reported against it. --compare-forwarder also sends it
through a minimal forwarder (one thread, epoll, recv_from + send_to, no parsing) and reports
the relay's CPU per packet as a multiple of the forwarder's. Every call is torn down at the
end, also on Ctrl-C (a second Ctrl-C exits at once).

With --group-receivers N it sets up --calls group calls instead, each with 1 transmitter (which
asks to transmit on its MCVideo control channel and sends with the SSRC it is granted) and N
receive-only members, and measures per delivered packet (sent x N): loss per receiver, latency
of every delivery and to the last receiver, the relay's CPU per delivered packet; the floor is
the transmitter sending every packet to the N receivers itself.";

/// How each call's packets are spaced in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Pattern {
    /// A frame's packets back to back (one GSO sendmsg per frame unless --no-gso).
    Burst,
    /// Each call's packets evenly spaced, calls out of phase, one sendmsg per packet.
    Paced,
}

impl Pattern {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Pattern::Burst => "burst",
            Pattern::Paced => "paced",
        }
    }
}

/// The command line as clap sees it.
#[derive(Debug, Parser)]
#[command(
    name = "mcvideo-relay loadgen",
    bin_name = "mcvideo-relay loadgen",
    override_usage = "mcvideo-relay loadgen [OPTIONS]",
    about = ABOUT,
    help_template = "{usage-heading} {usage}\n\n{about}\n\n{all-args}\n",
    disable_version_flag = true,
    disable_help_flag = true,
    args_override_self = true,
    group(ArgGroup::new("target").args(["engine", "api", "spawn_relay", "direct", "forwarder"])),
)]
struct Cli {
    /// an Engine in this process (default)
    #[arg(long, help_heading = "Relay under test (one of)")]
    engine: bool,
    /// a running `mcvideo-relay serve`, e.g. http://127.0.0.1:8080
    #[arg(long, value_name = "URL", value_parser = api_url, help_heading = "Relay under test (one of)")]
    api: Option<String>,
    /// start `RELAY_BIN serve --listen 127.0.0.1:0 --ports ...` and use it
    #[arg(long, help_heading = "Relay under test (one of)")]
    spawn_relay: bool,
    /// no relay at all: the floor only
    #[arg(long, help_heading = "Relay under test (one of)")]
    direct: bool,
    /// the minimal forwarder only (`FORWARDER_BIN minimal-forwarder`, started by this run)
    #[arg(long, help_heading = "Relay under test (one of)")]
    forwarder: bool,

    /// bearer token for the API (also given to a spawned relay)
    #[arg(long, value_name = "T", help_heading = "Relay options")]
    token: Option<String>,
    /// read the relay's CPU and memory from /proc/PID (with --api)
    #[arg(long, value_name = "PID", help_heading = "Relay options")]
    relay_pid: Option<u32>,
    /// binary for --spawn-relay (default: this executable)
    #[arg(long, value_name = "PATH", help_heading = "Relay options")]
    relay_bin: Option<PathBuf>,
    /// extra argument for the spawned `serve` (repeatable)
    #[arg(
        long = "relay-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        help_heading = "Relay options"
    )]
    relay_args: Vec<String>,
    /// engine worker threads (--engine; default 1, 0 = one per core)
    #[arg(long, value_name = "N", help_heading = "Relay options")]
    workers: Option<usize>,
    /// the in-process engine's kernel fast path: auto, off or required (--engine; default
    /// off, as for any embedded engine; a spawned relay follows its config)
    #[arg(long, value_name = "MODE", value_parser = kernel_offload, help_heading = "Relay options")]
    kernel_offload: Option<crate::relay::KernelOffload>,
    /// relay media port range (--engine, --spawn-relay; default sized for --calls from 20000)
    #[arg(long, value_name = "MIN-MAX", value_parser = port_range, help_heading = "Relay options")]
    ports: Option<(u16, u16)>,
    /// also measure the same load through the minimal forwarder, between the floor and the
    /// relay, and report the relay's CPU per packet as a multiple of the forwarder's
    #[arg(long, help_heading = "Relay options")]
    compare_forwarder: bool,
    /// binary for the minimal forwarder (default: this executable; it runs
    /// `FORWARDER_BIN minimal-forwarder`)
    #[arg(long, value_name = "PATH", help_heading = "Relay options")]
    forwarder_bin: Option<PathBuf>,

    /// concurrent calls (default 100; group calls with --group-receivers: default 1)
    #[arg(long, value_name = "N", help_heading = "Load")]
    calls: Option<usize>,
    /// group calls of 1 transmitter and N receive-only members instead of one-to-one calls
    /// (in-process engine or --direct; default then: --pattern paced, --rate 1000)
    #[arg(long, value_name = "N", help_heading = "Load")]
    group_receivers: Option<usize>,
    /// offered RTP packets/s over all calls (default 20000)
    #[arg(long, value_name = "PPS", value_parser = positive, help_heading = "Load")]
    rate: Option<f64>,
    /// burst: a frame's packets back to back (default); paced: call i sends every
    /// calls/rate s, offset by i/calls of that interval, one sendmsg per packet
    #[arg(long, value_name = "PATTERN", value_enum, help_heading = "Load")]
    pattern: Option<Pattern>,
    /// video frames/s per call; a frame's packets go back to back (default 25)
    #[arg(long, value_name = "F", value_parser = positive, help_heading = "Load")]
    fps: Option<f64>,
    /// RTP packet bytes including the 12-byte header (default 1200; SRTP adds its 16-byte tag)
    #[arg(long, value_name = "B", help_heading = "Load")]
    packet_size: Option<usize>,
    /// measured window in seconds (default 10)
    #[arg(long, value_name = "S", value_parser = seconds, help_heading = "Load")]
    duration: Option<Duration>,
    /// seconds sent before the window, left out of the figures (default 1)
    #[arg(long, value_name = "S", value_parser = seconds, help_heading = "Load")]
    warmup: Option<Duration>,
    /// one sendmsg per packet instead of one GSO sendmsg per burst
    #[arg(long, help_heading = "Load")]
    no_gso: bool,
    /// run on a veth topology instead of lo: caller, relay (or forwarder, or for the floor
    /// the kernel's IP forwarding) and callee each in a network namespace of its own, made
    /// for the run and deleted after it (root; with --spawn-relay, --forwarder or --direct;
    /// one-to-one calls)
    #[arg(long, help_heading = "Load")]
    netns: bool,
    /// run the load generator's send and receive threads on CPU N only (the relay or
    /// forwarder it spawns is not pinned): one-way latency that does not depend on where the
    /// scheduler puts the receiving thread
    #[arg(long, value_name = "N", help_heading = "Load")]
    pin_cpu: Option<usize>,
    /// end_to_end or per_leg: SRTP AEAD_AES_128_GCM (default: plain RTP); in group calls
    /// end_to_end is one group key every member shares, per_leg a key per member
    #[arg(long, visible_alias = "security", value_name = "MODE", value_parser = srtp_mode, help_heading = "Load")]
    srtp: Option<MediaSecurity>,
    /// sender threads (default 1)
    #[arg(long, value_name = "N", help_heading = "Load")]
    senders: Option<usize>,
    /// receiver threads (default 1)
    #[arg(long, value_name = "N", help_heading = "Load")]
    receivers: Option<usize>,

    /// floor then relay, back to back (the default with a relay)
    #[arg(long, help_heading = "Runs")]
    compare: bool,
    /// relay only: no floor, no added latency
    #[arg(long, help_heading = "Runs")]
    no_floor: bool,
    /// raise the rate step by step from --rate until loss exceeds --max-loss; reports the
    /// highest loss-free rate (of the relay and of the forwarder)
    #[arg(long, help_heading = "Runs")]
    sweep: bool,
    /// rate multiplier per step (default 1.25)
    #[arg(long, value_name = "X", value_parser = positive, help_heading = "Runs")]
    sweep_factor: Option<f64>,
    /// stop the sweep at this rate (default 2000000)
    #[arg(long, value_name = "PPS", value_parser = positive, help_heading = "Runs")]
    sweep_max: Option<f64>,
    /// loss that ends a sweep, in percent (default 0.1)
    #[arg(long = "max-loss", value_name = "PCT", help_heading = "Runs")]
    max_loss_pct: Option<f64>,
    /// set the calls up (through the API or the engine), report calls/s and the relay's
    /// memory per call, release them; no media
    #[arg(long, help_heading = "Runs")]
    setup_only: bool,
    /// parallel setup/teardown clients (default 4)
    #[arg(long, value_name = "K", help_heading = "Runs")]
    setup_concurrency: Option<usize>,

    /// also write the figures as JSON to FILE (`-`: stdout; the table then goes to stderr)
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    json: Option<String>,
    /// per-call counters in the JSON (per receiver with --group-receivers)
    #[arg(long, help_heading = "Output")]
    per_call: bool,
    /// no progress line on stderr
    #[arg(long, help_heading = "Output")]
    quiet: bool,
    /// this text
    #[arg(short, long, action = clap::ArgAction::Help, help_heading = "Output")]
    help: Option<bool>,
}

/// Which relay the calls go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// An [`Engine`](crate::relay::Engine) in this process.
    Engine,
    /// A sidecar at this base URL.
    Api(String),
    /// A sidecar this run starts.
    Spawn,
    /// No relay: the floor only.
    Direct,
    /// The minimal forwarder only (a process this run starts).
    Forwarder,
}

/// Parsed options.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) target: Target,
    pub(crate) token: Option<String>,
    pub(crate) relay_pid: Option<u32>,
    pub(crate) relay_bin: Option<PathBuf>,
    pub(crate) relay_args: Vec<String>,
    pub(crate) workers: usize,
    /// `--kernel-offload` (the in-process engine's).
    pub(crate) kernel_offload: crate::relay::KernelOffload,
    pub(crate) ports: Option<(u16, u16)>,
    pub(crate) compare_forwarder: bool,
    pub(crate) forwarder_bin: Option<PathBuf>,
    pub(crate) calls: usize,
    /// Group calls: receivers per group (`None`: one-to-one calls).
    pub(crate) group_receivers: Option<usize>,
    pub(crate) rate: f64,
    pub(crate) pattern: Pattern,
    pub(crate) shape: Shape,
    pub(crate) srtp: Option<MediaSecurity>,
    pub(crate) no_floor: bool,
    /// `--netns`: the veth topology (loadgen::netns).
    pub(crate) netns: bool,
    /// `--pin-cpu`: the CPU for the send and receive threads.
    pub(crate) pin_cpu: Option<usize>,
    pub(crate) sweep: bool,
    pub(crate) sweep_factor: f64,
    pub(crate) sweep_max: f64,
    pub(crate) max_loss_pct: f64,
    pub(crate) setup_only: bool,
    pub(crate) setup_concurrency: usize,
    pub(crate) json: Option<String>,
    pub(crate) per_call: bool,
    pub(crate) quiet: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target: Target::Engine,
            token: None,
            relay_pid: None,
            relay_bin: None,
            relay_args: Vec::new(),
            workers: 1,
            kernel_offload: crate::relay::KernelOffload::Off,
            ports: None,
            compare_forwarder: false,
            forwarder_bin: None,
            calls: 100,
            group_receivers: None,
            rate: 20_000.0,
            pattern: Pattern::Burst,
            shape: Shape {
                fps: 25.0,
                packet_size: 1200,
                duration: Duration::from_secs(10),
                warmup: Duration::from_secs(1),
                gso: true,
                senders: 1,
                receivers: 1,
            },
            srtp: None,
            no_floor: false,
            netns: false,
            pin_cpu: None,
            sweep: false,
            sweep_factor: 1.25,
            sweep_max: 2_000_000.0,
            max_loss_pct: 0.1,
            setup_only: false,
            setup_concurrency: 4,
            json: None,
            per_call: false,
            quiet: false,
        }
    }
}

impl Options {
    /// Whether this run measures the minimal forwarder.
    pub(crate) fn forwarder(&self) -> bool {
        self.target == Target::Forwarder || self.compare_forwarder
    }

    /// Whether this run measures the floor.
    pub(crate) fn floor(&self) -> bool {
        self.target == Target::Direct || !self.no_floor
    }

    /// Relay ports to provide for: two pairs per call, per group member in group calls.
    pub(crate) fn port_units(&self) -> usize {
        match self.group_receivers {
            Some(n) => self.calls * (n + 1),
            None => self.calls,
        }
    }

    /// One sendmsg per packet: paced, or bursts with --no-gso.
    pub(crate) fn one_send_per_packet(&self) -> bool {
        self.pattern == Pattern::Paced || !self.shape.gso
    }
}

/// Bytes of the loadgen payload after the RTP header: magic, call index, sequence, send time.
pub(crate) const PAYLOAD_HEADER: usize = 24;
/// The RTP fixed header.
pub(crate) const RTP_HEADER: usize = 12;

fn seconds(v: &str) -> Result<Duration, String> {
    let s: f64 = v
        .parse()
        .map_err(|_| format!("`{v}` is not a valid number"))?;
    if !s.is_finite() || !(0.0..=86_400.0).contains(&s) {
        return Err(format!("`{v}` must be between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn positive(v: &str) -> Result<f64, String> {
    let x: f64 = v
        .parse()
        .map_err(|_| format!("`{v}` is not a valid number"))?;
    if !x.is_finite() || x <= 0.0 {
        return Err(format!("`{v}` must be a positive number"));
    }
    Ok(x)
}

fn api_url(v: &str) -> Result<String, String> {
    if !v.starts_with("http://") {
        return Err(format!("`{v}` must be an http:// URL"));
    }
    Ok(v.trim_end_matches('/').to_owned())
}

fn port_range(v: &str) -> Result<(u16, u16), String> {
    let (a, b) = v
        .split_once('-')
        .ok_or_else(|| format!("`{v}` is not MIN-MAX"))?;
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("`{p}` is not a valid port"))
    };
    let (a, b) = (port(a)?, port(b)?);
    if a == 0 || b < a.saturating_add(3) {
        return Err(format!("`{v}` must hold at least two port pairs"));
    }
    Ok((a, b))
}

fn srtp_mode(v: &str) -> Result<MediaSecurity, String> {
    match v {
        "end_to_end" | "end-to-end" => Ok(MediaSecurity::EndToEnd),
        "per_leg" | "per-leg" => Ok(MediaSecurity::PerLeg),
        _ => Err(format!("`{v}` must be end_to_end or per_leg")),
    }
}

fn kernel_offload(v: &str) -> Result<crate::relay::KernelOffload, String> {
    crate::relay::KernelOffload::parse(v)
        .ok_or_else(|| format!("`{v}` must be auto, off or required"))
}

/// The `--help` text.
pub(crate) fn help() -> String {
    Cli::command().render_help().to_string()
}

/// Parses the arguments after `loadgen`. `Ok(None)` = `--help`; `Err` holds the whole message
/// for stderr.
pub(crate) fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let argv = std::iter::once("loadgen").chain(args.iter().map(String::as_str));
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => return Ok(None),
        Err(e) => return Err(e.render().to_string()),
    };
    let o = resolve(cli);
    validate(&o)
        .map_err(|e| format!("error: {e}\n\nRun `mcvideo-relay loadgen --help` for usage.\n"))?;
    Ok(Some(o))
}

fn resolve(c: Cli) -> Options {
    let d = Options::default();
    let target = if let Some(url) = c.api {
        Target::Api(url)
    } else if c.spawn_relay {
        Target::Spawn
    } else if c.direct {
        Target::Direct
    } else if c.forwarder {
        Target::Forwarder
    } else {
        Target::Engine
    };
    let _ = (c.engine, c.compare, c.help);
    let group = c.group_receivers.is_some();
    Options {
        target,
        token: c.token,
        relay_pid: c.relay_pid,
        relay_bin: c.relay_bin,
        relay_args: c.relay_args,
        workers: c.workers.unwrap_or(d.workers),
        kernel_offload: c.kernel_offload.unwrap_or(d.kernel_offload),
        ports: c.ports,
        compare_forwarder: c.compare_forwarder,
        forwarder_bin: c.forwarder_bin,
        calls: c.calls.unwrap_or(if group { 1 } else { d.calls }),
        group_receivers: c.group_receivers,
        rate: c.rate.unwrap_or(if group { 1_000.0 } else { d.rate }),
        pattern: c
            .pattern
            .unwrap_or(if group { Pattern::Paced } else { d.pattern }),
        shape: Shape {
            fps: c.fps.unwrap_or(d.shape.fps),
            packet_size: c.packet_size.unwrap_or(d.shape.packet_size),
            duration: c.duration.unwrap_or(d.shape.duration),
            warmup: c.warmup.unwrap_or(d.shape.warmup),
            gso: !c.no_gso,
            senders: c.senders.unwrap_or(d.shape.senders),
            receivers: c.receivers.unwrap_or(d.shape.receivers),
        },
        srtp: c.srtp,
        no_floor: c.no_floor,
        netns: c.netns,
        pin_cpu: c.pin_cpu,
        sweep: c.sweep,
        sweep_factor: c.sweep_factor.unwrap_or(d.sweep_factor),
        sweep_max: c.sweep_max.unwrap_or(d.sweep_max),
        max_loss_pct: c.max_loss_pct.unwrap_or(d.max_loss_pct),
        setup_only: c.setup_only,
        setup_concurrency: c.setup_concurrency.unwrap_or(d.setup_concurrency),
        json: c.json,
        per_call: c.per_call,
        quiet: c.quiet,
    }
}

fn validate(o: &Options) -> Result<(), String> {
    if o.calls == 0 || o.calls > 100_000 {
        return Err("--calls must be between 1 and 100000".into());
    }
    if o.shape.packet_size < RTP_HEADER + PAYLOAD_HEADER || o.shape.packet_size > 9_000 {
        return Err(format!(
            "--packet-size must be between {} and 9000",
            RTP_HEADER + PAYLOAD_HEADER
        ));
    }
    if o.shape.duration.is_zero() && !o.setup_only {
        return Err("--duration must be more than 0".into());
    }
    if o.shape.senders == 0
        || o.shape.receivers == 0
        || o.shape.senders > 64
        || o.shape.receivers > 64
    {
        return Err("--senders and --receivers must be between 1 and 64".into());
    }
    if o.setup_concurrency == 0 || o.setup_concurrency > 256 {
        return Err("--setup-concurrency must be between 1 and 256".into());
    }
    if o.sweep_factor <= 1.0 {
        return Err("--sweep-factor must be more than 1".into());
    }
    if !(0.0..=100.0).contains(&o.max_loss_pct) {
        return Err("--max-loss must be a percentage".into());
    }
    if o.relay_pid.is_some() && !matches!(o.target, Target::Api(_)) {
        return Err("--relay-pid goes with --api".into());
    }
    if o.setup_only && matches!(o.target, Target::Direct | Target::Forwarder) {
        return Err("--setup-only needs a relay (--engine, --api or --spawn-relay)".into());
    }
    if o.setup_only && (o.sweep || o.compare_forwarder) {
        return Err("--setup-only goes with neither --sweep nor --compare-forwarder".into());
    }
    if o.target == Target::Direct && o.no_floor {
        return Err("--direct measures the floor only; --no-floor leaves nothing".into());
    }
    if let Some(n) = o.group_receivers {
        let max = crate::control::arbiter::MAX_MEMBERS - 1;
        if n == 0 || n > max {
            return Err(format!("--group-receivers must be between 1 and {max}"));
        }
        if !matches!(o.target, Target::Engine | Target::Direct) {
            return Err(
                "--group-receivers runs on the in-process engine (--engine) or --direct: the \
                 sidecar has no group call routes yet"
                    .into(),
            );
        }
        if o.compare_forwarder || o.setup_only {
            return Err(
                "--group-receivers goes with neither --compare-forwarder nor --setup-only".into(),
            );
        }
    }
    if o.netns
        && (o.group_receivers.is_some()
            || !matches!(o.target, Target::Spawn | Target::Forwarder | Target::Direct))
    {
        return Err(
            "--netns runs one-to-one calls with --spawn-relay, --forwarder or --direct (the \
             relay must start inside the topology)"
                .into(),
        );
    }
    if o.target == Target::Direct && o.compare_forwarder {
        return Err("--direct measures the floor only; use --forwarder for the forwarder".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Option<Options>, String> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn defaults_and_flags() {
        let o = p(&[]).unwrap().unwrap();
        assert_eq!(o.target, Target::Engine);
        assert_eq!(
            (o.calls, o.shape.packet_size, o.shape.gso),
            (100, 1200, true)
        );
        assert_eq!(o.pattern, Pattern::Burst);
        assert!(!o.forwarder());
        let o = p(&[
            "--api=http://127.0.0.1:8080/",
            "--calls",
            "10",
            "--srtp",
            "per_leg",
            "--no-gso",
            "--duration",
            "0.5",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(o.target, Target::Api("http://127.0.0.1:8080".into()));
        assert_eq!(o.srtp, Some(MediaSecurity::PerLeg));
        assert_eq!(o.shape.duration, Duration::from_millis(500));
        assert!(!o.shape.gso);
        assert!(p(&["--help"]).unwrap().is_none());
        assert!(p(&["--direct", "--engine"]).is_err());
        assert!(p(&["--forwarder", "--spawn-relay"]).is_err());
        assert!(p(&["--calls"]).is_err());
        assert!(p(&["--calls", "zero"]).is_err());
        assert!(p(&["--bogus"]).is_err());
        assert!(p(&["--packet-size", "20"]).is_err());
        assert!(p(&["--relay-pid", "1"]).is_err());
        assert!(p(&["--rate", "-5"]).is_err());
        assert!(p(&["--ports", "100-101"]).is_err());
        assert!(p(&["--api", "https://x"]).is_err());
        assert!(p(&["--direct", "--compare-forwarder"]).is_err());
        assert!(p(&["--pattern", "wobbly"]).is_err());
    }

    #[test]
    fn paced_forwarder_and_relay_args() {
        let o = p(&[
            "--spawn-relay",
            "--compare-forwarder",
            "--pattern",
            "paced",
            "--relay-arg",
            "--config",
            "--relay-arg=/tmp/w1.toml",
            "--ports",
            "30000-30099",
            "--quiet",
            "--quiet",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(o.target, Target::Spawn);
        assert_eq!(o.pattern, Pattern::Paced);
        assert!(o.forwarder() && o.floor() && o.one_send_per_packet());
        assert_eq!(o.relay_args, ["--config", "/tmp/w1.toml"]);
        assert_eq!(o.ports, Some((30000, 30099)));
        let o = p(&["--forwarder", "--no-floor"]).unwrap().unwrap();
        assert_eq!(o.target, Target::Forwarder);
        assert!(o.forwarder() && !o.floor());
    }

    #[test]
    fn netns_and_pinning() {
        let o = p(&["--spawn-relay", "--netns", "--pin-cpu", "1"])
            .unwrap()
            .unwrap();
        assert!(o.netns);
        assert_eq!(o.pin_cpu, Some(1));
        assert_eq!(p(&["--direct"]).unwrap().unwrap().pin_cpu, None);
        // The relay must start inside the topology, and groups are not built there.
        assert!(p(&["--engine", "--netns"]).is_err());
        assert!(p(&["--api", "http://127.0.0.1:1", "--netns"]).is_err());
        assert!(p(&["--direct", "--netns", "--group-receivers", "5"]).is_err());
        assert!(p(&["--forwarder", "--netns"]).is_ok());
        assert!(p(&["--spawn-relay", "--pin-cpu", "x"]).is_err());
    }

    #[test]
    fn group_mode_defaults_and_limits() {
        let o = p(&["--group-receivers", "50", "--security", "per_leg"])
            .unwrap()
            .unwrap();
        assert_eq!(o.group_receivers, Some(50));
        assert_eq!((o.calls, o.rate, o.shape.packet_size), (1, 1_000.0, 1200));
        assert_eq!(o.pattern, Pattern::Paced);
        assert_eq!(o.srtp, Some(MediaSecurity::PerLeg));
        assert_eq!(o.port_units(), 51);
        let o = p(&[
            "--group-receivers",
            "10",
            "--calls",
            "3",
            "--pattern",
            "burst",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (o.calls, o.pattern, o.port_units()),
            (3, Pattern::Burst, 33)
        );
        assert!(p(&["--group-receivers", "0"]).is_err());
        assert!(p(&["--group-receivers", "64"]).is_err());
        assert!(p(&["--group-receivers", "5", "--spawn-relay"]).is_err());
        assert!(p(&["--group-receivers", "5", "--compare-forwarder"]).is_err());
        assert!(p(&["--group-receivers", "5", "--direct"]).is_ok());
    }

    #[test]
    fn help_keeps_every_flag() {
        let h = help();
        for flag in [
            "--engine",
            "--api",
            "--spawn-relay",
            "--direct",
            "--forwarder",
            "--token",
            "--relay-pid",
            "--relay-bin",
            "--relay-arg",
            "--workers",
            "--ports",
            "--compare-forwarder",
            "--forwarder-bin",
            "--calls",
            "--group-receivers",
            "--rate",
            "--pattern",
            "--fps",
            "--packet-size",
            "--duration",
            "--warmup",
            "--no-gso",
            "--srtp",
            "--senders",
            "--receivers",
            "--compare",
            "--no-floor",
            "--sweep",
            "--sweep-factor",
            "--sweep-max",
            "--max-loss",
            "--setup-only",
            "--setup-concurrency",
            "--json",
            "--per-call",
            "--quiet",
            "--help",
        ] {
            assert!(h.contains(flag), "{flag} missing from --help:\n{h}");
        }
        assert!(h.contains("Relay under test (one of)"));
        assert!(h.contains("Usage: mcvideo-relay loadgen [OPTIONS]"));
    }
}
