//! The minimal forwarder (`mcvideo-relay minimal-forwarder`): the cheapest userspace UDP relay,
//! the yardstick the relay's CPU per packet is compared with. One thread, one level-triggered
//! epoll set, and per readiness event one `recv_from` and one `send_to`: no parsing, no
//! batching, no allocation. A packet arriving on route `i`'s socket goes to route `i`'s
//! destination, whatever it holds and wherever it came from.
//!
//! Setup over stdin/stdout (so `loadgen` can start it with [`std::env::current_exe`]):
//!
//! ```text
//! stdin:  LISTEN_ADDR DEST_ADDR      one line per route, e.g. `127.0.0.1:0 127.0.0.1:5555`
//!         go                         bind everything and start
//! stdout: BOUND_ADDR                 one line per route, in order
//!         forwarding N               then it forwards until stdin closes (EOF) or it is killed
//! ```
//!
//! On a bad line or a socket error it prints `error: ...` on stdout and exits with status 1.
//! Sockets get 1 MiB send and receive buffers, as the relay's.

use std::io::{self, BufRead as _, Read as _, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::Duration;

/// Socket buffers of the forwarder's sockets (the relay's default).
const SOCKET_BUFFER: usize = 1 << 20;
/// epoll data of stdin.
const STDIN_KEY: u64 = u64::MAX;

/// Runs the minimal forwarder on this process's stdin and stdout (the hidden
/// `mcvideo-relay minimal-forwarder` subcommand). Exit status: 0 once stdin closes, 1 on error.
pub fn run_minimal_forwarder() -> ExitCode {
    match serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "error: {e}");
            let _ = out.flush();
            ExitCode::FAILURE
        }
    }
}

/// One `LISTEN DEST` line.
fn parse_route(line: &str) -> io::Result<(SocketAddr, SocketAddr)> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{line}` is not `LISTEN_ADDR DEST_ADDR`"),
        )
    };
    let mut it = line.split_whitespace();
    let (Some(l), Some(d), None) = (it.next(), it.next(), it.next()) else {
        return Err(bad());
    };
    Ok((l.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?))
}

fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

fn serve() -> io::Result<()> {
    let stdin = io::stdin();
    let mut routes: Vec<(UdpSocket, SocketAddr)> = Vec::new();
    let mut answer = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(()); // closed before `go`: nothing to do
        }
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l == "go" {
            break;
        }
        let (listen, dest) = parse_route(l)?;
        let sock = bind(listen)?;
        answer.push_str(&format!("{}\n", sock.local_addr()?));
        routes.push((sock, dest));
    }
    // Answered only after `go`: the loadgen never blocks writing while this blocks answering.
    let mut out = io::stdout().lock();
    out.write_all(answer.as_bytes())?;
    writeln!(out, "forwarding {}", routes.len())?;
    out.flush()?;
    drop(out);
    forward(&routes, &stdin)
}

/// The forwarding loop: until stdin reaches EOF.
fn forward(routes: &[(UdpSocket, SocketAddr)], stdin: &io::Stdin) -> io::Result<()> {
    use rustix::event::epoll;
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    for (i, (sock, _)) in routes.iter().enumerate() {
        epoll::add(
            &ep,
            sock,
            epoll::EventData::new_u64(i as u64),
            epoll::EventFlags::IN,
        )?;
    }
    epoll::add(
        &ep,
        stdin,
        epoll::EventData::new_u64(STDIN_KEY),
        epoll::EventFlags::IN,
    )?;
    let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
    let mut buf = vec![0u8; 65_536];
    loop {
        events.clear();
        match epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        for ev in &events {
            let key = { ev.data }.u64();
            if key == STDIN_KEY {
                // EOF: the loadgen is done (or gone). Anything else on stdin is ignored.
                let mut scratch = [0u8; 256];
                match stdin.lock().read(&mut scratch) {
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(_) => continue,
                }
            }
            let Some((sock, dest)) = routes.get(key as usize) else {
                continue;
            };
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                if let Some(p) = buf.get(..n) {
                    let _ = sock.send_to(p, dest);
                }
            }
        }
    }
}

/// A minimal forwarder this run started (stopped when dropped: stdin closed, then killed).
pub(crate) struct ForwarderProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<io::BufReader<ChildStdout>>,
}

impl ForwarderProcess {
    /// Starts `bin minimal-forwarder` with one route per destination (listening on
    /// 127.0.0.1, or the relay's address with `--netns`, any port); returns it and the address each route listens on.
    pub(crate) fn start(
        bin: &Path,
        dests: &[SocketAddr],
    ) -> Result<(ForwarderProcess, Vec<SocketAddr>), String> {
        let mut cmd = Command::new(bin);
        cmd.arg("minimal-forwarder")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = super::sys::spawn_own_group(&mut cmd)
            .map_err(|e| format!("cannot start {} minimal-forwarder: {e}", bin.display()))?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the forwarder's stdin/stdout are not piped".into());
        };
        let mut fp = ForwarderProcess {
            child,
            stdin: None,
            stdout: None,
        };
        let mut script = String::with_capacity(dests.len() * 40 + 3);
        for d in dests {
            script.push_str(&format!("{}:0 {d}\n", super::netns::relay_ip()));
        }
        script.push_str("go\n");
        let what = |e: &dyn std::fmt::Display| {
            format!(
                "{} minimal-forwarder: {e} (is it an mcvideo-relay binary? --forwarder-bin)",
                bin.display()
            )
        };
        stdin
            .write_all(script.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| what(&e))?;
        fp.stdin = Some(stdin);
        let mut reader = io::BufReader::new(stdout);
        let mut next_line = || -> Result<String, String> {
            let mut l = String::new();
            match reader.read_line(&mut l) {
                Ok(0) => Err(what(&"it exited during setup")),
                Ok(_) => match l.trim().strip_prefix("error: ") {
                    Some(e) => Err(what(&e)),
                    None => Ok(l.trim().to_owned()),
                },
                Err(e) => Err(what(&e)),
            }
        };
        let mut bound = Vec::with_capacity(dests.len());
        while bound.len() < dests.len() {
            let line = next_line()?;
            bound.push(line.parse().map_err(|_| what(&format!("`{line}`")))?);
        }
        let last = next_line()?;
        if !last.starts_with("forwarding") {
            return Err(what(&format!("expected `forwarding N`, got `{last}`")));
        }
        // Its stdout stays open (unread: it writes nothing more unless it fails).
        fp.stdout = Some(reader);
        Ok((fp, bound))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ForwarderProcess {
    fn drop(&mut self) {
        drop(self.stdin.take()); // EOF: it exits
        drop(self.stdout.take());
        super::sys::reap(
            &mut self.child,
            Duration::from_secs(2),
            Duration::from_millis(10),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        let (l, d) = parse_route("127.0.0.1:0 127.0.0.1:5555").unwrap();
        assert_eq!(l, "127.0.0.1:0".parse().unwrap());
        assert_eq!(d.port(), 5555);
        assert!(parse_route("127.0.0.1:0").is_err());
        assert!(parse_route("127.0.0.1:0 x").is_err());
        assert!(parse_route("127.0.0.1:0 127.0.0.1:1 3").is_err());
    }
}
