//! `fastpath-hold [--netns NAME] IFNAME...`: loads the fast path, attaches it at TCX ingress of
//! each interface, prints `attached` and waits until killed. The leak test kills it with SIGKILL
//! and checks that nothing stays attached; an operator can use it to check that a machine can
//! run the fast path (it exits 2 with the reason when it cannot).

use std::io::Write;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--netns") && args.len() >= 2 {
        let ns = args.remove(1);
        args.remove(0);
        if let Err(e) = enter_netns(&ns) {
            eprintln!("fastpath-hold: cannot enter network namespace {ns}: {e}");
            std::process::exit(2);
        }
    }
    if args.is_empty() {
        eprintln!("usage: fastpath-hold [--netns NAME] IFNAME...");
        std::process::exit(2);
    }
    // One port's arrays: it only shows that the program loads and attaches here.
    let mut fp = match mcvideo_relay_fastpath::FastPath::open_with_ports(&args[0], 40000..=40000) {
        Ok(fp) => fp,
        Err(e) => {
            eprintln!("fastpath-hold: {e} (fallback: {})", e.is_fallback());
            std::process::exit(2);
        }
    };
    for ifname in &args[1..] {
        if let Err(e) = fp.attach(ifname) {
            eprintln!("fastpath-hold: {e}");
            std::process::exit(2);
        }
    }
    println!("attached");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}

fn enter_netns(name: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{name}"))?;
    // SAFETY: a valid namespace file descriptor; only this (single) thread changes namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
