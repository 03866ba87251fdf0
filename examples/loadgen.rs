//! `mcvideo-relay loadgen` as an example binary (same flags), e.g.
//! `cargo run --release --example loadgen -- --calls 100 --rate 20000 --duration 10`.
//! See `--help`.

#[cfg(feature = "loadgen")]
fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    mcvideo_relay::loadgen::run(&args)
}

#[cfg(not(feature = "loadgen"))]
fn main() {
    eprintln!("the loadgen example needs the `loadgen` feature");
    std::process::exit(2);
}
