//! `mcvideo-relay` command-line entry point: parses the command (clap) and hands over to
//! [`mcvideo_relay::sidecar`] or [`mcvideo_relay::loadgen`].
use std::process::ExitCode;

// The binary's allocator; the library never sets one (BENCHMARKING.md, "Memory after a mass
// release: allocators").
#[cfg(feature = "alloc-mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(all(feature = "alloc-jemalloc", not(feature = "alloc-mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(feature = "sidecar")]
mod cli {
    use clap::{Parser, Subcommand};
    use mcvideo_relay::sidecar::{
        self, ServeOptions, SERVE_ABOUT, SERVE_AFTER_HELP, SERVE_HELP_TEMPLATE, SERVE_LONG_ABOUT,
    };
    use std::path::PathBuf;
    use std::process::ExitCode;

    #[cfg(feature = "loadgen")]
    const USAGE: &str = "
  mcvideo-relay serve [--config FILE] [--listen ADDR] [--media-ip IP] [--ports MIN-MAX]
                      [--log-format json|text]
  mcvideo-relay check-config FILE
  mcvideo-relay recording export DIR [--out DIR]
  mcvideo-relay loadgen [--engine | --api URL | --spawn-relay | --direct] [--calls N] [--rate PPS] ...
  mcvideo-relay --help | --version";
    /// Without the `loadgen` feature the subcommand is not listed (it says how to build it).
    #[cfg(not(feature = "loadgen"))]
    const USAGE: &str = "
  mcvideo-relay serve [--config FILE] [--listen ADDR] [--media-ip IP] [--ports MIN-MAX]
                      [--log-format json|text]
  mcvideo-relay check-config FILE
  mcvideo-relay recording export DIR [--out DIR]
  mcvideo-relay --help | --version";

    const LOADGEN_ABOUT: &str =
        "video push calls under load: one-way latency (p50..max) against the no-relay
floor, loss, relay CPU per packet, sweeps (`loadgen --help` for details)";

    /// mcvideo-relay: media relay for 3GPP MCVideo video push, video pull and group video calls
    #[derive(Debug, Parser)]
    #[command(name = "mcvideo-relay", version, override_usage = USAGE, arg_required_else_help = true)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Debug, Subcommand)]
    enum Command {
        #[command(
            about = SERVE_ABOUT,
            before_help = SERVE_LONG_ABOUT,
            after_help = SERVE_AFTER_HELP,
            help_template = SERVE_HELP_TEMPLATE
        )]
        Serve(ServeOptions),
        /// report every problem in a configuration file (with its key), exit 1 if any
        #[command(
            before_help = "Reports every problem in FILE with its key and exits 1 if there is any.",
            help_template = SERVE_HELP_TEMPLATE
        )]
        CheckConfig {
            /// the configuration file (TOML)
            #[arg(value_name = "FILE")]
            file: PathBuf,
        },
        /// recordings: export a per_leg or plain one as playable H.264, one file per transmission
        #[command(subcommand)]
        Recording(RecordingCommand),
        /// The yardstick `loadgen --compare-forwarder` starts: one thread, epoll, one recv and
        /// one send per packet (stdin/stdout protocol in src/loadgen/forwarder.rs).
        #[command(hide = true)]
        MinimalForwarder,
        #[command(disable_help_flag = true, about = LOADGEN_ABOUT, hide = !cfg!(feature = "loadgen"))]
        Loadgen {
            /// loadgen's own options (`mcvideo-relay loadgen --help`)
            #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
            args: Vec<String>,
        },
    }

    #[derive(Debug, Subcommand)]
    enum RecordingCommand {
        /// write one H.264 Annex B file per transmission (RFC 6184 depacketized, split by the
        /// transmission log) of recording DIR (docs/recording.md)
        Export {
            /// a recording's directory (`<recording.dir>/<call id>-<unix ms>`)
            #[arg(value_name = "DIR")]
            dir: PathBuf,
            /// where the files go (default: DIR/export)
            #[arg(long, value_name = "DIR")]
            out: Option<PathBuf>,
        },
    }

    fn export(dir: &std::path::Path, out: Option<PathBuf>) -> ExitCode {
        let out = out.unwrap_or_else(|| dir.join("export"));
        match sidecar::export::export_recording(dir, &out) {
            Ok(done) if done.is_empty() => {
                eprintln!(
                    "mcvideo-relay: {}: no transmission with media",
                    dir.display()
                );
                ExitCode::from(1)
            }
            Ok(done) => {
                print!("{}", sidecar::export::report(&done));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mcvideo-relay: recording export {}: {e}", dir.display());
                ExitCode::from(1)
            }
        }
    }

    pub(crate) fn main() -> ExitCode {
        match Cli::parse().command {
            Command::Recording(RecordingCommand::Export { dir, out }) => export(&dir, out),
            Command::Serve(opts) => sidecar::run_serve(opts),
            Command::CheckConfig { file } => sidecar::check_config(&file),
            Command::Loadgen { args } => loadgen(&args),
            Command::MinimalForwarder => minimal_forwarder(),
        }
    }

    #[cfg(feature = "loadgen")]
    fn loadgen(args: &[String]) -> ExitCode {
        mcvideo_relay::loadgen::run(args)
    }

    #[cfg(feature = "loadgen")]
    fn minimal_forwarder() -> ExitCode {
        mcvideo_relay::loadgen::run_minimal_forwarder()
    }

    #[cfg(not(feature = "loadgen"))]
    fn minimal_forwarder() -> ExitCode {
        eprintln!("mcvideo-relay: `minimal-forwarder` needs the `loadgen` feature");
        ExitCode::from(2)
    }

    #[cfg(not(feature = "loadgen"))]
    fn loadgen(_args: &[String]) -> ExitCode {
        eprintln!(
            "mcvideo-relay: this build has no load generator: build it with `--features loadgen` \
             (e.g. `cargo run --release --features loadgen -- loadgen --help`)"
        );
        ExitCode::from(2)
    }
}

#[cfg(feature = "sidecar")]
fn main() -> ExitCode {
    cli::main()
}

/// Without the `sidecar` feature only `loadgen` (when built) is here.
#[cfg(not(feature = "sidecar"))]
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        #[cfg(feature = "loadgen")]
        Some((cmd, rest)) if cmd == "loadgen" => mcvideo_relay::loadgen::run(rest),
        _ => {
            eprintln!(
                "mcvideo-relay: built without the `sidecar` feature: only `loadgen` (with the \
                 `loadgen` feature) is available (cargo build --features sidecar)"
            );
            ExitCode::from(2)
        }
    }
}
