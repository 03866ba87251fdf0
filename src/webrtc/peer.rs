//! What a viewer and a publisher share: a browser's WebRTC peer driven by one thread.
//!
//! [`Peer`] owns the str0m instance (sans-IO: it is given the datagrams and the time, and says
//! what to send), the UDP socket toward the browser and a thread that reads that socket into a
//! channel. A leg's thread asks it for the next [`Step`]: an event to handle, or how long to wait
//! for input. The common events (connected, ICE lost, closed) and the checks (alive, connected in
//! time) are handled here; the rest go to the leg.

use crossbeam_channel::{Receiver, Sender};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::format::Codec;
use str0m::media::Mid;
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

/// A browser leg's counters, read by the API.
#[derive(Debug, Default)]
pub struct BrowserCounters {
    /// Packets passed on: a viewer's written to the browser, a publisher's sent to the call.
    pub packets: AtomicU64,
    /// Packets not passed on: no track (or no relay address) yet, another payload type,
    /// or refused by str0m or SRTP.
    pub skipped: AtomicU64,
    /// Keyframe requests: a viewer's from the browser passed to the transmitters, a
    /// publisher's sent to the browser.
    pub keyframe_requests: AtomicU64,
    /// Set once ICE and DTLS are up.
    pub connected: AtomicBool,
    /// A publisher holds the grant (Transmission Granted, until it ends or is revoked).
    pub granted: AtomicBool,
    /// A viewer's in-relay latency: from the watched packet's arrival at the relay to the
    /// datagram carrying it leaving toward the browser, in power-of-two microsecond buckets
    /// (bucket `i` counts `[2^i, 2^(i+1))` µs; bucket 0 also takes 0).
    pub latency_us: [AtomicU64; LATENCY_BUCKETS],
}

/// Buckets of [`BrowserCounters::latency_us`]: up to about 8.4 s.
pub const LATENCY_BUCKETS: usize = 24;

impl BrowserCounters {
    /// Counts one in-relay latency.
    pub(crate) fn latency(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        let i = (63 - us.leading_zeros() as usize).min(LATENCY_BUCKETS - 1);
        if let Some(b) = self.latency_us.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The in-relay latency at quantile `q` (0–1), in µs: the upper edge of its bucket.
    /// `None` before any packet.
    pub fn latency_quantile(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .latency_us
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Some(1u64 << (i + 1));
            }
        }
        None
    }
}

/// A datagram read by a socket thread.
pub(crate) struct Datagram {
    pub(crate) at: Instant,
    pub(crate) from: SocketAddr,
    pub(crate) data: Vec<u8>,
}

/// A thread reading a socket into a channel, until [`Reader::stop`] or the channel is gone.
pub(crate) struct Reader {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reader {
    /// Stops the thread (within its 200 ms read timeout) and waits for it.
    pub(crate) fn stop(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Reader {
    /// A reader dropped without [`Reader::stop`] (a leg given up while it was being made)
    /// still ends, within its read timeout.
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Starts a thread named `name` that reads (a clone of) `socket` into `tx`.
pub(crate) fn spawn_reader(socket: &UdpSocket, tx: Sender<Datagram>, name: &str) -> Option<Reader> {
    let socket = socket.try_clone().ok()?;
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || read_socket(socket, tx, d))
        .ok()?;
    Some(Reader {
        done,
        thread: Some(thread),
    })
}

/// Reads `socket` until `done` is raised or the channel is gone.
fn read_socket(socket: UdpSocket, tx: Sender<Datagram>, done: Arc<AtomicBool>) {
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 2048];
    while !done.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let d = Datagram {
                    at: Instant::now(),
                    from,
                    data: buf.get(..n).unwrap_or_default().to_vec(),
                };
                if let Err(crossbeam_channel::TrySendError::Disconnected(_)) = tx.try_send(d) {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                tracing::debug!(error = %e, "browser leg socket closed");
                return;
            }
        }
    }
}

/// The browser's payload type for `codec` on `mid` (H.264: packetization mode 1).
pub(crate) fn payload_params(
    rtc: &Rtc,
    mid: Mid,
    codec: Codec,
) -> Option<str0m::format::PayloadParams> {
    let media = rtc.media(mid)?;
    let remote = media.remote_pts();
    rtc.codec_config()
        .params()
        .iter()
        .filter(|p| remote.contains(&p.pt()) && p.spec().codec == codec)
        .find(|p| codec != Codec::H264 || p.spec().format.packetization_mode == Some(1))
        .cloned()
}

/// The mid of the video media event `e` adds, if the relay sends on it (`relay_sends`: a
/// viewer) or receives on it (a publisher).
pub(crate) fn video_added(e: &Event, relay_sends: bool) -> Option<Mid> {
    use str0m::media::{Direction, MediaKind};
    let Event::MediaAdded(m) = e else {
        return None;
    };
    let way = match m.direction {
        Direction::SendRecv => true,
        Direction::SendOnly => relay_sends,
        Direction::RecvOnly => !relay_sends,
        _ => false,
    };
    (m.kind == MediaKind::Video && way).then_some(m.mid)
}

/// What a leg's thread does next.
pub(crate) enum Step {
    /// Handle this event (str0m may have more to say: ask again).
    Event(Box<Event>),
    /// Nothing more until input: wait at most this long.
    Wait(Duration),
    /// The leg is over, for this reason.
    End(&'static str),
}

/// A browser's WebRTC peer: str0m, its socket, the thread reading it.
pub(crate) struct Peer {
    pub(crate) rtc: Rtc,
    socket: UdpSocket,
    pub(crate) counters: Arc<BrowserCounters>,
    /// The browser's datagrams.
    pub(crate) net: Receiver<Datagram>,
    reader: Option<Reader>,
    local: SocketAddr,
    started: Instant,
    connect_timeout: Duration,
    /// When the packet last handed to str0m arrived at the relay: the next datagram sent
    /// carries it (a viewer's in-relay latency).
    pub(crate) written: Option<Instant>,
}

impl Peer {
    /// Starts reading `socket` (thread `name`) for `rtc`, which must connect within
    /// `connect_timeout`.
    pub(crate) fn start(
        rtc: Rtc,
        socket: UdpSocket,
        counters: Arc<BrowserCounters>,
        connect_timeout: Duration,
        name: &str,
    ) -> Result<Peer, &'static str> {
        let local = socket.local_addr().map_err(|_| "no socket address")?;
        let (tx, net) = crossbeam_channel::bounded::<Datagram>(512);
        let reader = spawn_reader(&socket, tx, name);
        Ok(Peer {
            rtc,
            socket,
            counters,
            net,
            reader,
            local,
            started: Instant::now(),
            connect_timeout,
            written: None,
        })
    }

    /// Sends what str0m has to say up to its next event or deadline.
    pub(crate) fn step(&mut self) -> Step {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(deadline)) => return self.wait(deadline),
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                    if let Some(at) = self.written.take() {
                        self.counters.latency(at.elapsed());
                    }
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => {
                        self.counters.connected.store(true, Ordering::Relaxed);
                        return Step::Event(Box::new(Event::Connected));
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        return Step::End("the browser left (ICE disconnected)");
                    }
                    Event::Closed => return Step::End("closed"),
                    e => return Step::Event(Box::new(e)),
                },
                Err(e) => {
                    tracing::debug!(error = %e, "browser leg: str0m");
                    return Step::End("WebRTC error");
                }
            }
        }
    }

    /// How long to wait for input before `deadline`, or why the leg is over.
    fn wait(&self, deadline: Instant) -> Step {
        if !self.rtc.is_alive() {
            return Step::End("the browser left");
        }
        if !self.counters.connected.load(Ordering::Relaxed)
            && self.started.elapsed() > self.connect_timeout
        {
            return Step::End("the browser did not connect in time");
        }
        Step::Wait(
            deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1)),
        )
    }

    /// Gives str0m a datagram from the browser, or (`None`) the time.
    pub(crate) fn input(&mut self, d: Option<Datagram>) {
        let r = match d {
            Some(d) => match d.data.as_slice().try_into() {
                Ok(contents) => self.rtc.handle_input(Input::Receive(
                    d.at,
                    Receive {
                        proto: Protocol::Udp,
                        source: d.from,
                        destination: self.local,
                        contents,
                    },
                )),
                Err(_) => Ok(()), // not STUN, DTLS or SRTP: ignored
            },
            None => self.rtc.handle_input(Input::Timeout(Instant::now())),
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "browser leg: str0m input");
        }
    }

    /// Ends the session: the DTLS close alert and whatever else str0m still has to say, then
    /// the socket's reader thread.
    pub(crate) fn close(mut self) {
        self.rtc.disconnect();
        while let Ok(Output::Transmit(t)) = self.rtc.poll_output() {
            let _ = self.socket.send_to(&t.contents, t.destination);
        }
        if let Some(r) = self.reader.take() {
            r.stop();
        }
    }

    /// The relay's socket toward the browser.
    pub(crate) fn local(&self) -> SocketAddr {
        self.local
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_come_from_power_of_two_buckets() {
        let c = BrowserCounters::default();
        assert_eq!(c.latency_quantile(0.5), None);
        for us in [0, 1, 3, 100, 120, 130, 5000] {
            c.latency(Duration::from_micros(us));
        }
        // 0 and 1 µs in [1, 2); 3 in [2, 4); 100, 120 in [64, 128); 130 in [128, 256).
        assert_eq!(c.latency_quantile(0.5), Some(128));
        assert_eq!(c.latency_quantile(0.99), Some(8192));
        assert_eq!(c.latency_quantile(0.2), Some(2));
    }
}
