//! One WHEP viewer: a browser that receives a call's video over WebRTC.
//!
//! The relay is ICE-lite on one UDP socket of its own, terminates DTLS-SRTP toward the
//! browser with [str0m](https://docs.rs/str0m) (sans-IO: this thread gives it the socket's
//! datagrams, the watched packets and the time, and sends what it says), and writes the
//! watched stream's RTP packets into the browser's track in str0m's RTP mode: no
//! depacketizing, no re-encoding.
//!
//! The browser sees one track whoever transmits. When the transmitter changes (a new SSRC:
//! the grant moved in a group, or a new transmission), the sequence numbers and timestamps go
//! on from where the last ones stopped ([`Rewriter`]), and the new transmitter is asked for a
//! keyframe. The browser's PLI/FIR become a keyframe request to the call's transmitters
//! (throttled by the relay's keyframe policy, as every receiver's); its NACKs are answered by
//! str0m from the packets it sent (`nackable`), not passed to the transmitter.

use crate::relay::{Engine, Watch, WatchedPacket};
use crossbeam_channel::{select, Receiver, Sender};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
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

/// Keeps the browser's track continuous across transmitters: each new SSRC's sequence
/// numbers and timestamps are shifted to follow the last ones written. Only the payload type
/// the SSRC started with passes (a second format, e.g. RTX, would be mislabelled).
#[derive(Debug, Default)]
pub(crate) struct Rewriter {
    /// The SSRC being written and its payload type.
    source: Option<(u32, u8)>,
    seq_shift: u16,
    ts_shift: u32,
    /// The last sequence number written, extended to 64 bits, and its 16 bits.
    last_seq: Option<(u64, u16)>,
    last_ts: u32,
}

/// The timestamp step put between two transmitters' media (one frame at 30 frames/s, 90 kHz).
const SWITCH_TS_STEP: u32 = 3000;

impl Rewriter {
    /// The sequence number (extended) and timestamp to write a packet of `ssrc` with, and
    /// whether it is a new source. `None`: not written (another payload type).
    pub(crate) fn map(&mut self, ssrc: u32, pt: u8, seq: u16, ts: u32) -> Option<(u64, u32, bool)> {
        let switched = match self.source {
            Some((s, p)) if s == ssrc => {
                if p != pt {
                    return None;
                }
                false
            }
            _ => {
                let (next_seq, next_ts) = match self.last_seq {
                    Some((_, s16)) => (
                        s16.wrapping_add(1),
                        self.last_ts.wrapping_add(SWITCH_TS_STEP),
                    ),
                    None => (seq, ts),
                };
                self.seq_shift = next_seq.wrapping_sub(seq);
                self.ts_shift = next_ts.wrapping_sub(ts);
                self.source = Some((ssrc, pt));
                true
            }
        };
        let s16 = seq.wrapping_add(self.seq_shift);
        let ext = match self.last_seq {
            None => u64::from(s16),
            Some((last, last16)) => {
                let delta = i64::from(s16.wrapping_sub(last16) as i16);
                last.checked_add_signed(delta).unwrap_or(last)
            }
        };
        let out_ts = ts.wrapping_add(self.ts_shift);
        if self.last_seq.is_none_or(|(last, _)| ext > last) {
            self.last_seq = Some((ext, s16));
            self.last_ts = out_ts;
        }
        Some((ext, out_ts, switched))
    }
}

/// What a viewer's thread needs.
pub(crate) struct Session {
    pub(crate) rtc: Rtc,
    pub(crate) socket: UdpSocket,
    pub(crate) watch: Watch,
    pub(crate) engine: Arc<Engine>,
    pub(crate) call_id: String,
    pub(crate) codec: Codec,
    pub(crate) counters: Arc<BrowserCounters>,
    pub(crate) stop: Receiver<()>,
    /// How long ICE and DTLS may take before the viewer is given up.
    pub(crate) connect_timeout: Duration,
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
    thread: std::thread::JoinHandle<()>,
}

impl Reader {
    /// Stops the thread (within its 200 ms read timeout) and waits for it.
    pub(crate) fn stop(self) {
        self.done.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
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
    Some(Reader { done, thread })
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

impl Session {
    /// Runs the viewer until the browser leaves, the call ends, the API closes it or it never
    /// connects. Returns why it ended.
    pub(crate) fn run(mut self) -> &'static str {
        let local = match self.socket.local_addr() {
            Ok(a) => a,
            Err(_) => return "no socket address",
        };
        let (net_tx, net_rx) = crossbeam_channel::bounded::<Datagram>(512);
        let reader = spawn_reader(&self.socket, net_tx, "whep-socket");
        let why = self.drive(local, &net_rx);
        self.rtc.disconnect();
        // The DTLS close alert and anything else str0m still has to say.
        while let Ok(Output::Transmit(t)) = self.rtc.poll_output() {
            let _ = self.socket.send_to(&t.contents, t.destination);
        }
        drop(net_rx);
        if let Some(r) = reader {
            r.stop();
        }
        why
    }

    fn drive(&mut self, local: SocketAddr, net: &Receiver<Datagram>) -> &'static str {
        let started = Instant::now();
        let mut mid: Option<Mid> = None;
        let mut pt = None;
        let mut rewriter = Rewriter::default();
        let mut written: Option<Instant> = None;
        loop {
            // Everything str0m has to say, up to its next deadline.
            let deadline = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Transmit(t)) => {
                        let _ = self.socket.send_to(&t.contents, t.destination);
                        // The first datagram after a write carries the packet written.
                        if let Some(at) = written.take() {
                            self.counters.latency(at.elapsed());
                        }
                    }
                    Ok(Output::Event(e)) => match e {
                        Event::MediaAdded(m)
                            if m.kind == MediaKind::Video
                                && matches!(
                                    m.direction,
                                    Direction::SendOnly | Direction::SendRecv
                                ) =>
                        {
                            mid = Some(m.mid);
                            pt = payload_params(&self.rtc, m.mid, self.codec);
                            if pt.is_none() {
                                return "the browser offered no payload type for the call's codec";
                            }
                        }
                        Event::Connected => {
                            self.counters.connected.store(true, Ordering::Relaxed);
                            let _ = self.engine.request_keyframe(&self.call_id);
                            tracing::info!(call = %self.call_id, "WHEP viewer connected");
                        }
                        Event::KeyframeRequest(_) => {
                            self.counters
                                .keyframe_requests
                                .fetch_add(1, Ordering::Relaxed);
                            let _ = self.engine.request_keyframe(&self.call_id);
                        }
                        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                            return "the browser left (ICE disconnected)";
                        }
                        Event::Closed => return "closed",
                        _ => {}
                    },
                    Err(e) => {
                        tracing::debug!(error = %e, "viewer: str0m");
                        return "WebRTC error";
                    }
                }
            };
            if !self.rtc.is_alive() {
                return "the browser left";
            }
            if !self.counters.connected.load(Ordering::Relaxed)
                && started.elapsed() > self.connect_timeout
            {
                return "the browser did not connect in time";
            }
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1));
            let input = select! {
                recv(net) -> d => match d {
                    Ok(d) => Some(d),
                    Err(_) => return "socket closed",
                },
                recv(self.watch.packets) -> p => match p {
                    Ok(p) => {
                        if self.write(&p, mid, pt, &mut rewriter) {
                            written = Some(p.at);
                        }
                        None
                    }
                    Err(_) => return "the call ended",
                },
                recv(self.stop) -> _ => return "closed by the API",
                default(wait) => None,
            };
            let now = Instant::now();
            let r = match input {
                Some(d) => match d.data.as_slice().try_into() {
                    Ok(contents) => self.rtc.handle_input(Input::Receive(
                        d.at,
                        Receive {
                            proto: Protocol::Udp,
                            source: d.from,
                            destination: local,
                            contents,
                        },
                    )),
                    Err(_) => Ok(()), // not STUN, DTLS or SRTP: ignored
                },
                None => self.rtc.handle_input(Input::Timeout(now)),
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "viewer: str0m input");
            }
        }
    }

    /// Writes a watched packet into the browser's track: whether it was written.
    fn write(
        &mut self,
        p: &WatchedPacket,
        mid: Option<Mid>,
        params: Option<str0m::format::PayloadParams>,
        rewriter: &mut Rewriter,
    ) -> bool {
        let skipped = || {
            self.counters.skipped.fetch_add(1, Ordering::Relaxed);
        };
        let (Some(mid), Some(params)) = (mid, params) else {
            skipped();
            return false;
        };
        if !self.counters.connected.load(Ordering::Relaxed) {
            skipped();
            return false;
        }
        let Ok(rtp) = crate::wire::rtp::RtpPacket::new_checked(p.rtp.as_slice()) else {
            skipped();
            return false;
        };
        let Some((seq, ts, switched)) = rewriter.map(
            rtp.ssrc(),
            rtp.payload_type(),
            rtp.sequence_number(),
            rtp.timestamp(),
        ) else {
            skipped();
            return false;
        };
        let payload: Arc<[u8]> = Arc::from(rtp.payload());
        let marker = rtp.marker();
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            skipped();
            return false;
        };
        tx.write_rtp(
            RtpWrite::new(params.pt(), SeqNo::from(seq), ts, p.at, payload)
                .marker(marker)
                .nackable(true),
        );
        self.counters.packets.fetch_add(1, Ordering::Relaxed);
        if switched {
            let _ = self.engine.request_keyframe(&self.call_id);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_transmitter_follows_on_from_the_last_one() {
        let mut r = Rewriter::default();
        assert_eq!(r.map(1, 96, 100, 5000), Some((100, 5000, true)));
        assert_eq!(r.map(1, 96, 101, 8000), Some((101, 8000, false)));
        // Reordered: an older number, the highest kept.
        assert_eq!(r.map(1, 96, 99, 2000), Some((99, 2000, false)));
        // Another payload type of the same source is not written.
        assert_eq!(r.map(1, 97, 102, 8000), None);
        // A new SSRC starting anywhere goes on at 102, one frame later.
        assert_eq!(r.map(2, 96, 40_000, 7), Some((102, 11_000, true)));
        assert_eq!(r.map(2, 96, 40_001, 3007), Some((103, 14_000, false)));
    }

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

    #[test]
    fn the_sequence_number_is_extended_across_the_wrap() {
        let mut r = Rewriter::default();
        assert_eq!(r.map(1, 96, 65_535, 0).map(|x| x.0), Some(65_535));
        assert_eq!(r.map(1, 96, 0, 0).map(|x| x.0), Some(65_536));
        assert_eq!(r.map(1, 96, 1, 0).map(|x| x.0), Some(65_537));
    }
}
