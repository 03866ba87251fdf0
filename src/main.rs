//! `mcvideo-relay` command-line entry point.
fn main() {
    eprintln!("mcvideo-relay: the sidecar is not built yet");
    std::process::exit(2);
}
