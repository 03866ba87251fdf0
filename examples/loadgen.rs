//! `mcvideo-relay loadgen` as an example binary (same flags), e.g.
//! `cargo run --release --features loadgen --example loadgen -- --calls 100 --rate 20000 --duration 10`.
//! See `--help`.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    mcvideo_relay::loadgen::run(&args)
}
