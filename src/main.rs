//! `mcvideo-relay` command-line entry point: parses the command and hands over to
//! [`mcvideo_relay::sidecar`].
use std::process::ExitCode;

const USAGE: &str = "\
mcvideo-relay: media relay for 3GPP MCVideo one-to-one video push

Usage:
  mcvideo-relay serve [--config FILE] [--listen ADDR] [--media-ip IP] [--ports MIN-MAX]
                      [--log-format json|text] [--ng-listen ADDR|off]
  mcvideo-relay check-config FILE
  mcvideo-relay loadgen [--engine | --api URL | --spawn-relay | --direct] [--calls N] [--rate PPS] ...
  mcvideo-relay --help | --version

Commands:
  serve          run the relay and its HTTP/JSON control API (`serve --help` for details);
                 with no file it runs on embedded defaults (API on 127.0.0.1:8080,
                 rtpengine ng on udp 127.0.0.1:2223, media on 127.0.0.1 ports 40000-49999)
  check-config   report every problem in a configuration file (with its key), exit 1 if any
  loadgen        video push calls under load: one-way latency (p50..max) against the no-relay
                 floor, loss, relay CPU per packet, sweeps (`loadgen --help` for details)
";

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("mcvideo-relay: {msg}");
    eprintln!("Run `mcvideo-relay --help` for usage.");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match cmd {
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        "-V" | "--version" => {
            println!("mcvideo-relay {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        "serve" | "check-config" => sidecar(cmd, rest),
        "loadgen" => loadgen(rest),
        other => usage_error(&format!("unknown command `{other}`")),
    }
}

#[cfg(feature = "sidecar")]
fn sidecar(cmd: &str, rest: &[String]) -> ExitCode {
    use mcvideo_relay::sidecar;
    if cmd == "check-config" {
        return match rest {
            [flag] if matches!(flag.as_str(), "-h" | "--help") => {
                print!("Usage: mcvideo-relay check-config FILE\n\nReports every problem in FILE with its key and exits 1 if there is any.\n");
                ExitCode::SUCCESS
            }
            [file] => sidecar::check_config(std::path::Path::new(file)),
            _ => usage_error("check-config takes one FILE"),
        };
    }
    match sidecar::ServeOptions::parse(rest) {
        Ok(Some(opts)) => sidecar::run_serve(opts),
        Ok(None) => {
            print!("{}", sidecar::SERVE_USAGE);
            ExitCode::SUCCESS
        }
        Err(e) => usage_error(&e),
    }
}

#[cfg(feature = "loadgen")]
fn loadgen(rest: &[String]) -> ExitCode {
    mcvideo_relay::loadgen::run(rest)
}

#[cfg(not(feature = "loadgen"))]
fn loadgen(_rest: &[String]) -> ExitCode {
    usage_error("`loadgen` needs the `loadgen` feature (cargo build --features loadgen)")
}

#[cfg(not(feature = "sidecar"))]
fn sidecar(cmd: &str, _rest: &[String]) -> ExitCode {
    usage_error(&format!(
        "`{cmd}` needs the `sidecar` feature (cargo build --features sidecar)"
    ))
}
