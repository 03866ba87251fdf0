//! Command-line options of `mcvideo-relay loadgen` (hand-rolled: `--flag VALUE` or `--flag=VALUE`).

use crate::control::MediaSecurity;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) const USAGE: &str = "\
Usage: mcvideo-relay loadgen [OPTIONS]

Sets up N one-to-one video push calls, sends video-like RTP bursts from N caller sockets
and measures on N callee sockets: one-way latency (HDR histogram), loss, reordering,
duplicates; the relay's CPU per forwarded packet. Unless --no-floor, the same load is first
sent with no relay (caller straight to callee: the floor) and the relay's added latency is
reported against it. Every call is torn down at the end, also on Ctrl-C (a second Ctrl-C
exits at once).

Relay under test (one of):
  --engine                 an Engine in this process (default)
  --api URL                a running `mcvideo-relay serve`, e.g. http://127.0.0.1:8080
  --spawn-relay            start `RELAY_BIN serve --listen 127.0.0.1:0 --ports ...` and use it
  --direct                 no relay at all: the floor only
Relay options:
  --token T                bearer token for the API (also given to a spawned relay)
  --relay-pid PID          read the relay's CPU and memory from /proc/PID (with --api)
  --relay-bin PATH         binary for --spawn-relay (default: this executable)
  --relay-arg ARG          extra argument for the spawned `serve` (repeatable)
  --workers N              engine worker threads (--engine; default 1, 0 = one per core)
  --ports MIN-MAX          relay media port range (--engine, --spawn-relay; default sized
                           for --calls from 20000)
Load:
  --calls N                concurrent calls (default 100)
  --rate PPS               offered RTP packets/s over all calls (default 20000)
  --fps F                  video frames/s per call; a frame's packets go back to back
                           (default 25)
  --packet-size B          RTP packet bytes including the 12-byte header (default 1200;
                           SRTP adds its 16-byte tag)
  --duration S             measured window in seconds (default 10)
  --warmup S               seconds sent before the window, left out of the figures (default 1)
  --no-gso                 one sendmsg per packet instead of one GSO sendmsg per burst
  --srtp MODE              end_to_end or per_leg: SRTP AEAD_AES_128_GCM (default: plain RTP)
  --senders N              sender threads (default 1)
  --receivers N            receiver threads (default 1)
Runs:
  --compare                floor then relay, back to back (the default with a relay)
  --no-floor               relay only: no floor, no added latency
  --sweep                  raise the rate step by step from --rate until loss exceeds
                           --max-loss; reports the highest loss-free rate
  --sweep-factor X         rate multiplier per step (default 1.25)
  --sweep-max PPS          stop the sweep at this rate (default 2000000)
  --max-loss PCT           loss that ends a sweep, in percent (default 0.1)
  --setup-only             set the calls up (through the API or the engine), report calls/s
                           and the relay's memory per call, release them; no media
  --setup-concurrency K    parallel setup/teardown clients (default 4)
Output:
  --json FILE              also write the figures as JSON to FILE (`-`: stdout; the table
                           then goes to stderr)
  --per-call               per-call counters in the JSON
  --quiet                  no progress line on stderr
  -h, --help               this text
";

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
    pub(crate) ports: Option<(u16, u16)>,
    pub(crate) calls: usize,
    pub(crate) rate: f64,
    pub(crate) fps: f64,
    pub(crate) packet_size: usize,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) gso: bool,
    pub(crate) srtp: Option<MediaSecurity>,
    pub(crate) senders: usize,
    pub(crate) receivers: usize,
    pub(crate) no_floor: bool,
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
            ports: None,
            calls: 100,
            rate: 20_000.0,
            fps: 25.0,
            packet_size: 1200,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            gso: true,
            srtp: None,
            senders: 1,
            receivers: 1,
            no_floor: false,
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

/// Bytes of the loadgen payload after the RTP header: magic, call index, sequence, send time.
pub(crate) const PAYLOAD_HEADER: usize = 24;
/// The RTP fixed header.
pub(crate) const RTP_HEADER: usize = 12;

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: `{v}` is not a valid number"))
}

fn seconds(flag: &str, v: &str) -> Result<Duration, String> {
    let s: f64 = number(flag, v)?;
    if !s.is_finite() || !(0.0..=86_400.0).contains(&s) {
        return Err(format!("{flag}: `{v}` must be between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn positive(flag: &str, v: &str) -> Result<f64, String> {
    let x: f64 = number(flag, v)?;
    if !x.is_finite() || x <= 0.0 {
        return Err(format!("{flag}: `{v}` must be a positive number"));
    }
    Ok(x)
}

/// Parses the arguments after `loadgen`. `Ok(None)` = `--help`.
pub(crate) fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut o = Options::default();
    let mut targets: Vec<&'static str> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let takes_value = matches!(
            flag,
            "--api"
                | "--token"
                | "--relay-pid"
                | "--relay-bin"
                | "--relay-arg"
                | "--workers"
                | "--ports"
                | "--calls"
                | "--rate"
                | "--fps"
                | "--packet-size"
                | "--duration"
                | "--warmup"
                | "--srtp"
                | "--senders"
                | "--receivers"
                | "--sweep-factor"
                | "--sweep-max"
                | "--max-loss"
                | "--setup-concurrency"
                | "--json"
        );
        let value = if takes_value {
            match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))?,
            }
        } else {
            if inline.is_some() {
                return Err(format!("{flag} takes no value"));
            }
            String::new()
        };
        let v = value.as_str();
        match flag {
            "-h" | "--help" => return Ok(None),
            "--engine" => targets.push("--engine"),
            "--direct" => targets.push("--direct"),
            "--spawn-relay" => targets.push("--spawn-relay"),
            "--api" => {
                targets.push("--api");
                if !v.starts_with("http://") {
                    return Err(format!("--api: `{v}` must be an http:// URL"));
                }
                o.target = Target::Api(v.trim_end_matches('/').to_owned());
            }
            "--token" => o.token = Some(value),
            "--relay-pid" => o.relay_pid = Some(number(flag, v)?),
            "--relay-bin" => o.relay_bin = Some(PathBuf::from(v)),
            "--relay-arg" => o.relay_args.push(value),
            "--workers" => o.workers = number(flag, v)?,
            "--ports" => {
                let (a, b) = v
                    .split_once('-')
                    .ok_or_else(|| format!("--ports: `{v}` is not MIN-MAX"))?;
                let (a, b): (u16, u16) = (number(flag, a)?, number(flag, b)?);
                if a == 0 || b < a.saturating_add(3) {
                    return Err(format!("--ports: `{v}` must hold at least two port pairs"));
                }
                o.ports = Some((a, b));
            }
            "--calls" => o.calls = number(flag, v)?,
            "--rate" => o.rate = positive(flag, v)?,
            "--fps" => o.fps = positive(flag, v)?,
            "--packet-size" => o.packet_size = number(flag, v)?,
            "--duration" => o.duration = seconds(flag, v)?,
            "--warmup" => o.warmup = seconds(flag, v)?,
            "--no-gso" => o.gso = false,
            "--srtp" => {
                o.srtp = Some(match v {
                    "end_to_end" | "end-to-end" => MediaSecurity::EndToEnd,
                    "per_leg" | "per-leg" => MediaSecurity::PerLeg,
                    _ => return Err(format!("--srtp: `{v}` must be end_to_end or per_leg")),
                })
            }
            "--senders" => o.senders = number(flag, v)?,
            "--receivers" => o.receivers = number(flag, v)?,
            "--compare" => {}
            "--no-floor" => o.no_floor = true,
            "--sweep" => o.sweep = true,
            "--sweep-factor" => o.sweep_factor = positive(flag, v)?,
            "--sweep-max" => o.sweep_max = positive(flag, v)?,
            "--max-loss" => o.max_loss_pct = number(flag, v)?,
            "--setup-only" => o.setup_only = true,
            "--setup-concurrency" => o.setup_concurrency = number(flag, v)?,
            "--json" => o.json = Some(value),
            "--per-call" => o.per_call = true,
            "--quiet" => o.quiet = true,
            _ => return Err(format!("unknown option `{arg}` (see `loadgen --help`)")),
        }
    }
    match targets.as_slice() {
        [] | ["--engine"] | ["--api"] => {}
        ["--direct"] => o.target = Target::Direct,
        ["--spawn-relay"] => o.target = Target::Spawn,
        many => return Err(format!("choose one of {}", many.join(", "))),
    }
    validate(&o)?;
    Ok(Some(o))
}

fn validate(o: &Options) -> Result<(), String> {
    if o.calls == 0 || o.calls > 100_000 {
        return Err("--calls must be between 1 and 100000".into());
    }
    if o.packet_size < RTP_HEADER + PAYLOAD_HEADER || o.packet_size > 9_000 {
        return Err(format!(
            "--packet-size must be between {} and 9000",
            RTP_HEADER + PAYLOAD_HEADER
        ));
    }
    if o.duration.is_zero() && !o.setup_only {
        return Err("--duration must be more than 0".into());
    }
    if o.senders == 0 || o.receivers == 0 || o.senders > 64 || o.receivers > 64 {
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
    if o.setup_only && o.target == Target::Direct {
        return Err("--setup-only needs a relay (--engine, --api or --spawn-relay)".into());
    }
    if o.setup_only && o.sweep {
        return Err("--setup-only and --sweep do not go together".into());
    }
    if o.target == Target::Direct && o.no_floor {
        return Err("--direct measures the floor only; --no-floor leaves nothing".into());
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
        assert_eq!((o.calls, o.packet_size, o.gso), (100, 1200, true));
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
        assert_eq!(o.duration, Duration::from_millis(500));
        assert!(!o.gso);
        assert!(p(&["--help"]).unwrap().is_none());
        assert!(p(&["--direct", "--engine"]).is_err());
        assert!(p(&["--calls"]).is_err());
        assert!(p(&["--bogus"]).is_err());
        assert!(p(&["--packet-size", "20"]).is_err());
        assert!(p(&["--relay-pid", "1"]).is_err());
    }
}
