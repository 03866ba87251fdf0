//! The media load: caller sockets send video-like RTP bursts, callee sockets receive them.
//!
//! * **Senders** (`lg-send-N` threads), burst pattern, pace by frame slots: call `i`'s frame `k` leaves at
//!   `start + k/fps + i/(fps·calls)`, so the calls' frames are spread evenly over a frame
//!   interval, and a frame's packets go back to back as one GSO `sendmsg` (quinn-udp), or one
//!   `sendmsg` per packet with `--no-gso`. Every payload carries the send time (monotonic ns
//!   since a process-wide epoch), the call index and a per-call sequence number.
//! * **Paced senders** (`--pattern paced`) send each call's packets evenly spaced: call `i` of
//!   `n` sends packet `k` at `start + (k + i/n)·n/rate` (see [`paced_offset_ns`]), one `sendmsg`
//!   per packet, so the calls are out of phase and the packets of all calls are `1/rate` apart.
//!   The thread's timer slack is set to 1 ns (`PR_SET_TIMERSLACK`); it sleeps to within a
//!   margin of each send time (learnt from the timer's overshoot, at most [`SPIN_MAX`]) and
//!   never spins: a packet due within that margin goes at once (a spinning sender would take a
//!   core from the relay it measures).
//! * **Receivers** (`lg-recv-N` threads) each run a level-triggered epoll loop over their
//!   callee sockets with the relay's own socket layer (`relay::io`: batched `recvmmsg` + GRO,
//!   super-packets split by `stride`, a short batch means drained), decrypt SRTP, and records one-way latency in an HDR histogram, plus
//!   loss, reordering and duplicates per call (a 1024-packet window: bounded memory).
//!
//! The floor (no relay) and the relay runs use exactly this code; only the destination differs.

use super::args::{PAYLOAD_HEADER, RTP_HEADER};
use super::sys::{self, Stop};
use crate::relay::io::{Events, Poller, RecvBatch};
use crate::srtp::{SrtpContext, SrtpError};
use hdrhistogram::Histogram;
use quinn_udp::UdpSocketState;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// First word of every loadgen payload.
pub(crate) const MAGIC: [u8; 4] = *b"MCLG";
/// Socket buffers asked for on every loadgen socket (the relay's default too).
const SOCKET_BUFFER: usize = 1 << 20;
/// Largest GSO send (the UDP length limit).
const MAX_GSO_BYTES: usize = 65_000;

pub(crate) use super::netns::Side;
/// Duplicate/reorder window per call, in packets (a multiple of 64).
const SEQ_WINDOW: u64 = 1024;
/// Lowest latency the histogram tracks, highest, significant figures.
const HIST_MAX_NS: u64 = 60_000_000_000;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process-wide epoch.
fn ns(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_nanos() as u64
}

/// A latency histogram in nanoseconds.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("fixed, valid histogram bounds")
}

/// A UDP socket of `side` with the loadgen's buffer sizes: on 127.0.0.1, or with `--netns` in
/// that side's namespace on its address.
pub(crate) fn bind_socket(side: Side) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let ip = super::netns::ip(side);
    super::netns::in_side(side, move || {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
        s.bind(&SocketAddr::new(ip, 0).into())?;
        Ok(s.into())
    })
}

/// The sending end of one call.
pub(crate) struct TxSide {
    pub(crate) index: u32,
    pub(crate) ssrc: u32,
    socket: UdpSocket,
    state: UdpSocketState,
    /// Where the caller sends: the relay's address for the caller, or the callee (floor).
    pub(crate) dest: SocketAddr,
    /// Group floor: every packet also goes to these (the transmitter fans out itself, one
    /// `sendmsg` per destination).
    pub(crate) fan_dests: Vec<SocketAddr>,
    /// Group calls: the per-packet arrival record its receivers fill in.
    pub(crate) fan: Option<Arc<FanTrack>>,
    pub(crate) srtp: Option<SrtpContext>,
    seq: u64,
    frame: u32,
    credit: f64,
    /// Packets sent with a send time inside the measured window (this phase).
    sent_window: u64,
}

/// The receiving end of one call.
pub(crate) struct RxSide {
    /// Unique among a path's receivers (their order in [`Paths::rx`]).
    pub(crate) index: u32,
    /// The sender (call or group) index its packets carry: `index` in one-to-one calls.
    pub(crate) call: u32,
    /// Group calls: the sender's per-packet arrival record.
    pub(crate) fan: Option<Arc<FanTrack>>,
    /// The relay's socket layer (batched receive, GRO split), shared with its workers.
    sock: crate::relay::io::UdpSock,
    pub(crate) srtp: Option<SrtpContext>,
    track: SeqTrack,
    counts: RxCounts,
}

impl TxSide {
    /// A bound caller socket (its destination and key are filled in once known).
    pub(crate) fn bind(index: u32, ssrc: u32) -> io::Result<TxSide> {
        let socket = bind_socket(Side::Caller)?;
        let state = UdpSocketState::new((&socket).into())?;
        let dest = socket.local_addr()?;
        Ok(TxSide {
            index,
            ssrc,
            socket,
            state,
            dest,
            fan_dests: Vec::new(),
            fan: None,
            srtp: None,
            seq: 0,
            frame: 0,
            credit: 0.0,
            sent_window: 0,
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.socket.local_addr().map_or(0, |a| a.port())
    }
}

impl RxSide {
    pub(crate) fn bind(index: u32) -> io::Result<RxSide> {
        Ok(RxSide {
            index,
            call: index,
            fan: None,
            sock: crate::relay::io::UdpSock::new(bind_socket(Side::Callee)?)?,
            srtp: None,
            track: SeqTrack::default(),
            counts: RxCounts::default(),
        })
    }

    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        self.sock.socket().local_addr().ok()
    }
}

/// Every call of one path kind (floor or relay), in call index order.
pub(crate) struct Paths {
    pub(crate) tx: Vec<TxSide>,
    pub(crate) rx: Vec<RxSide>,
}

impl Paths {
    /// `n` caller/callee socket pairs; destinations are the callees (the floor) until changed.
    pub(crate) fn bind(n: usize, ssrc_base: u32) -> io::Result<Paths> {
        let mut tx = Vec::with_capacity(n);
        let mut rx = Vec::with_capacity(n);
        for i in 0..n {
            let index = i as u32;
            let mut t = TxSide::bind(index, ssrc_base.wrapping_add(index))?;
            let r = RxSide::bind(index)?;
            if let Some(a) = r.addr() {
                t.dest = a;
            }
            tx.push(t);
            rx.push(r);
        }
        Ok(Paths { tx, rx })
    }
}

/// Slots of a [`FanTrack`]: a packet's slot is reused `FAN_SLOTS` packets later (at 10,000
/// packets/s per transmitter, after 6.5 s).
const FAN_SLOTS: u64 = 1 << 16;

/// One transmitter's packets on their way to its receivers (group calls): per packet, how
/// many receivers got it and the latest one-way latency among them. The sender clears a
/// packet's slot before sending it; the receiver that completes it (the last of `receivers`)
/// gets the latency to the last receiver. Lock-free: receivers may be on several threads.
#[derive(Debug)]
pub(crate) struct FanTrack {
    receivers: u32,
    slots: Box<[FanSlot]>,
}

#[derive(Debug, Default)]
struct FanSlot {
    count: AtomicU32,
    max_ns: AtomicU64,
}

impl FanTrack {
    pub(crate) fn new(receivers: usize) -> Arc<FanTrack> {
        Arc::new(FanTrack {
            receivers: u32::try_from(receivers).unwrap_or(u32::MAX),
            slots: (0..FAN_SLOTS).map(|_| FanSlot::default()).collect(),
        })
    }

    fn slot(&self, seq: u64) -> Option<&FanSlot> {
        self.slots.get((seq % FAN_SLOTS) as usize)
    }

    /// Before packet `seq` is sent.
    fn clear(&self, seq: u64) {
        if let Some(s) = self.slot(seq) {
            s.count.store(0, Ordering::SeqCst);
            s.max_ns.store(0, Ordering::SeqCst);
        }
    }

    /// A receiver got packet `seq` after `latency_ns`; the latency to the last receiver once
    /// every receiver has it.
    fn arrive(&self, seq: u64, latency_ns: u64) -> Option<u64> {
        let s = self.slot(seq)?;
        s.max_ns.fetch_max(latency_ns, Ordering::SeqCst);
        let n = s.count.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
        (n == self.receivers).then(|| s.max_ns.load(Ordering::SeqCst))
    }
}

/// A receiver thread's latency histograms: every delivery, and per sent packet the latency to
/// its last receiver (group calls).
pub(crate) struct Hists {
    pub(crate) all: Histogram<u64>,
    pub(crate) last: Histogram<u64>,
}

impl Hists {
    fn new() -> Hists {
        Hists {
            all: new_histogram(),
            last: new_histogram(),
        }
    }
}

/// Per-call sequence tracking: highest sequence seen and a window of what arrived.
#[derive(Debug, Clone, Default)]
struct SeqTrack {
    highest: Option<u64>,
    bits: [u64; (SEQ_WINDOW / 64) as usize],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    New,
    Reordered,
    Duplicate,
}

impl SeqTrack {
    fn bit(seq: u64) -> (usize, u64) {
        let b = seq % SEQ_WINDOW;
        ((b / 64) as usize, 1 << (b % 64))
    }

    fn set(&mut self, seq: u64, on: bool) {
        let (w, m) = Self::bit(seq);
        if let Some(word) = self.bits.get_mut(w) {
            if on {
                *word |= m;
            } else {
                *word &= !m;
            }
        }
    }

    fn get(&self, seq: u64) -> bool {
        let (w, m) = Self::bit(seq);
        self.bits.get(w).is_some_and(|word| word & m != 0)
    }

    fn see(&mut self, seq: u64) -> Seen {
        match self.highest {
            None => {
                self.highest = Some(seq);
                self.set(seq, true);
                Seen::New
            }
            Some(h) if seq > h => {
                if seq - h >= SEQ_WINDOW {
                    self.bits = Default::default();
                } else {
                    for s in h + 1..seq {
                        self.set(s, false);
                    }
                }
                self.set(seq, true);
                self.highest = Some(seq);
                Seen::New
            }
            Some(h) => {
                if h - seq >= SEQ_WINDOW {
                    // Older than the window: cannot tell a duplicate; late, so counted reordered.
                    Seen::Reordered
                } else if self.get(seq) {
                    Seen::Duplicate
                } else {
                    self.set(seq, true);
                    Seen::Reordered
                }
            }
        }
    }
}

/// What a receiver counted for one call in one phase.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RxCounts {
    /// Distinct packets sent inside the window that arrived.
    pub(crate) received: u64,
    pub(crate) reordered: u64,
    pub(crate) duplicates: u64,
    /// Packets sent before the window (warm-up) or after it.
    pub(crate) outside_window: u64,
    /// SRTP authentication or replay failures (duplicates a replay check caught are duplicates).
    pub(crate) decrypt_failures: u64,
    /// Datagrams that are not this call's loadgen packets.
    pub(crate) malformed: u64,
}

impl RxCounts {
    fn add(&mut self, o: &RxCounts) {
        self.received += o.received;
        self.reordered += o.reordered;
        self.duplicates += o.duplicates;
        self.outside_window += o.outside_window;
        self.decrypt_failures += o.decrypt_failures;
        self.malformed += o.malformed;
    }
}

/// What the traffic of every phase of a run is made of, as the options set it: frames and
/// packets, GSO, the measuring window and the sending and receiving threads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) fps: f64,
    pub(crate) packet_size: usize,
    pub(crate) gso: bool,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) senders: usize,
    pub(crate) receivers: usize,
}

/// One phase's load.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    pub(crate) label: &'static str,
    pub(crate) rate: f64,
    /// Paced pattern (else frame bursts).
    pub(crate) paced: bool,
    pub(crate) shape: Shape,
    pub(crate) progress: bool,
}

/// A CPU time source read at the start and the end of the window.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    /// JSON key.
    pub(crate) key: &'static str,
    /// What it measures, for people.
    pub(crate) label: String,
    pub(crate) source: ProbeSource,
}

#[derive(Debug, Clone)]
pub(crate) enum ProbeSource {
    /// A process by pid.
    Pid(u32),
    /// This process.
    SelfProcess,
    /// Threads of this process whose names start with this.
    Threads(&'static str),
    /// All the machine's CPUs (busy time of `/proc/stat`): what the kernel does in softirq
    /// for any process is in it.
    Machine,
    /// All the machine's CPUs: wall time × CPUs less idle and iowait (`/proc/stat`).
    MachineByIdle,
    /// Not CPU: the context switches of a process's threads (its wake-ups).
    Switches(u32),
    /// The run time of the BPF programs a process holds (`bpf_stats`).
    BpfPrograms(u32),
}

impl Probe {
    /// CPU time in nanoseconds, or a count of context switches.
    fn sample(&self) -> Option<u64> {
        let cpu = match &self.source {
            ProbeSource::Pid(p) => sys::process_cpu(Some(*p)),
            ProbeSource::SelfProcess => sys::process_cpu(None),
            ProbeSource::Threads(prefix) => sys::threads_cpu(prefix),
            ProbeSource::Machine => sys::machine_busy(),
            ProbeSource::MachineByIdle => sys::machine_busy_by_idle(),
            ProbeSource::Switches(p) => return sys::process_switches(*p),
            ProbeSource::BpfPrograms(p) => sys::bpf_run_time(*p),
        };
        cpu.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// Wake-ups (context switches) of a process over the window.
#[derive(Debug, Clone)]
pub(crate) struct WakeFigure {
    pub(crate) key: &'static str,
    pub(crate) label: String,
    pub(crate) switches: u64,
    /// Per packet received in the window.
    pub(crate) per_packet: f64,
}

/// CPU used over the window by one probe.
#[derive(Debug, Clone)]
pub(crate) struct CpuFigure {
    pub(crate) key: &'static str,
    pub(crate) label: String,
    pub(crate) seconds: f64,
    /// Microseconds per packet received in the window.
    pub(crate) us_per_packet: f64,
}

/// Per-call figures of one phase.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallFigures {
    /// The receiver (the call, in one-to-one calls).
    pub(crate) index: u32,
    /// Its sender: the call, or the group.
    pub(crate) sender: u32,
    pub(crate) sent: u64,
    pub(crate) counts: RxCounts,
}

/// What one phase measured.
#[derive(Debug, Clone)]
pub(crate) struct PhaseResult {
    pub(crate) label: &'static str,
    pub(crate) calls: usize,
    /// Receivers per sent packet: 1 in one-to-one calls, N in groups of 1 → N.
    pub(crate) fanout: usize,
    pub(crate) offered_pps: f64,
    pub(crate) window_s: f64,
    /// Packets handed to the kernel with a send time inside the window.
    pub(crate) sent: u64,
    pub(crate) send_failures: u64,
    pub(crate) first_send_error: Option<String>,
    pub(crate) totals: RxCounts,
    pub(crate) calls_with_loss: usize,
    pub(crate) worst_call_loss_pct: f64,
    pub(crate) sender_max_late_us: f64,
    /// Frames the senders skipped (more than a frame interval behind).
    pub(crate) skipped_frames: u64,
    pub(crate) latency: Histogram<u64>,
    /// Group calls: per sent packet that reached every receiver, the latency to the last.
    pub(crate) last_latency: Histogram<u64>,
    pub(crate) cpu: Vec<CpuFigure>,
    pub(crate) wakeups: Vec<WakeFigure>,
    pub(crate) per_call: Vec<CallFigures>,
    pub(crate) interrupted: bool,
}

impl PhaseResult {
    /// Deliveries expected: every packet sent, to each of its receivers.
    pub(crate) fn expected(&self) -> u64 {
        self.sent.saturating_mul(self.fanout as u64)
    }

    pub(crate) fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.totals.received)
    }

    pub(crate) fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.lost() as f64 * 100.0 / self.expected() as f64
        }
    }

    /// Group calls: latency to the last receiver, in microseconds.
    pub(crate) fn last_latency_us(&self, q: f64) -> Option<f64> {
        (!self.last_latency.is_empty())
            .then(|| self.last_latency.value_at_quantile(q) as f64 / 1000.0)
    }

    pub(crate) fn achieved_pps(&self) -> f64 {
        self.sent as f64 / self.window_s.max(1e-9)
    }

    pub(crate) fn received_pps(&self) -> f64 {
        self.totals.received as f64 / self.window_s.max(1e-9)
    }

    /// Latency quantile in microseconds (`None` without samples).
    pub(crate) fn latency_us(&self, q: f64) -> Option<f64> {
        (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// Shared progress counters.
#[derive(Debug, Default)]
struct Progress {
    sent: AtomicU64,
    received: AtomicU64,
}

/// When a phase sends and what it counts.
#[derive(Debug, Clone, Copy)]
struct Plan {
    start: Instant,
    /// Send times (ns since epoch) counted: `[window.0, window.1)`.
    window: (u64, u64),
    /// Sending ends at this offset from `start`, in ns.
    total_ns: f64,
    frame_ns: f64,
    slot_ns: f64,
    per_frame: f64,
    shape: Shape,
    /// Paced pattern: offered packets/s over all calls, and the number of calls.
    paced: Option<(f64, usize)>,
}

impl Plan {
    fn new(load: &Load, clock: &Clock, calls: usize) -> Plan {
        let frame_ns = 1e9 / load.shape.fps;
        Plan {
            start: clock.start,
            window: (ns(clock.window_start), ns(clock.window_end)),
            total_ns: (clock.window_end - clock.start).as_nanos() as f64,
            frame_ns,
            slot_ns: frame_ns / calls.max(1) as f64,
            per_frame: load.rate / calls.max(1) as f64 / load.shape.fps,
            shape: load.shape,
            paced: load.paced.then_some((load.rate, calls.max(1))),
        }
    }
}

#[derive(Default)]
struct SendOut {
    failures: u64,
    /// Frames not sent because the sender was more than a frame interval behind.
    skipped: u64,
    first_error: Option<String>,
    max_late: Duration,
}

impl SendOut {
    /// The sender threads' results added up, and the first error one of them had.
    fn merge(results: Vec<Result<SendOut, String>>) -> (SendOut, Option<String>) {
        let mut all = SendOut::default();
        let mut first_err = None;
        for t in results {
            match t {
                Ok(o) => {
                    all.failures += o.failures;
                    all.skipped += o.skipped;
                    all.first_error = all.first_error.or(o.first_error);
                    all.max_late = all.max_late.max(o.max_late);
                }
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        (all, first_err)
    }

    /// Writes call `c`'s next packet into `p` (`packet_size` octets of RTP, then room for the
    /// SRTP trailer) and protects it; a protect failure is counted and the packet not sent.
    fn stamp(
        &mut self,
        c: &mut TxSide,
        p: &mut [u8],
        packet_size: usize,
        rtp_ts: u32,
        last: bool,
        sent_at: u64,
    ) -> bool {
        let seq = c.seq;
        c.seq += 1;
        if let Some(f) = &c.fan {
            f.clear(seq);
        }
        write_packet(p, c, seq, rtp_ts, last, sent_at);
        if let Some(ctx) = c.srtp.as_mut() {
            if let Err(e) = ctx.protect_rtp(p, packet_size) {
                self.failures += 1;
                self.first_error
                    .get_or_insert_with(|| format!("SRTP protect: {e}"));
                return false;
            }
        }
        true
    }

    /// Sends the packets in `data` (`stride` apart) for call `c` and counts them: refusals here,
    /// on the call when they were sent inside the window, every one in `progress`.
    fn send(
        &mut self,
        c: &mut TxSide,
        data: &[u8],
        stride: usize,
        gso: bool,
        in_window: bool,
        progress: &Progress,
    ) {
        let (ok, failed) = send_burst(c, data, stride, gso, &mut self.first_error);
        self.failures += failed;
        if in_window {
            c.sent_window += ok;
        }
        progress.sent.fetch_add(ok, Ordering::Relaxed);
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Sends every frame (or paced packet) of `calls` until the plan's end; returns failures and
/// lateness.
fn send_loop(calls: &mut [&mut TxSide], plan: &Plan, progress: &Progress, stop: &Stop) -> SendOut {
    if let Some((rate, n)) = plan.paced {
        return send_paced(calls, plan, rate, n, progress, stop);
    }
    let mut out = SendOut::default();
    let Some(first) = calls.first() else {
        return out;
    };
    let overhead = first.srtp.as_ref().map_or(0, SrtpContext::rtp_overhead);
    let stride = plan.shape.packet_size + overhead;
    let max_packets = plan.per_frame.ceil() as usize + 1;
    let mut buf = vec![0u8; max_packets * stride];
    let ts_step = (90_000.0 / plan.shape.fps).round() as u32;
    let mut k: u64 = 0;
    'frames: loop {
        let frame_off = k as f64 * plan.frame_ns;
        if frame_off >= plan.total_ns {
            break;
        }
        for c in calls.iter_mut() {
            let at = frame_off + f64::from(c.index) * plan.slot_ns;
            if at >= plan.total_ns {
                continue;
            }
            let target = plan.start + Duration::from_nanos(at as u64);
            sleep_until(target);
            if stop.requested() {
                break 'frames;
            }
            let now = Instant::now();
            let late = now.saturating_duration_since(target);
            if late.as_nanos() as f64 > plan.frame_ns {
                // More than a frame behind: this frame is skipped, not sent late on top of the
                // next one (the offered rate is what the senders managed; see `skipped`).
                out.skipped += 1;
                c.frame = c.frame.wrapping_add(1);
                continue;
            }
            c.credit += plan.per_frame;
            let n = (c.credit.floor() as usize).min(max_packets);
            c.credit -= n as f64;
            c.frame = c.frame.wrapping_add(1);
            if n == 0 {
                continue;
            }
            out.max_late = out.max_late.max(late);
            let sent_at = ns(now);
            let rtp_ts = c.frame.wrapping_mul(ts_step);
            let mut len = 0;
            for j in 0..n {
                let Some(p) = buf.get_mut(len..len + stride) else {
                    break;
                };
                if !out.stamp(c, p, plan.shape.packet_size, rtp_ts, j + 1 == n, sent_at) {
                    continue;
                }
                len += stride;
            }
            let Some(data) = buf.get(..len) else { continue };
            let in_window = (plan.window.0..plan.window.1).contains(&sent_at);
            out.send(c, data, stride, plan.shape.gso, in_window, progress);
        }
        k += 1;
    }
    out
}

/// The most and the least of a paced send time's wait that is not slept (the packet goes a
/// little early instead). The margin follows the timer's measured wake-up overshoot (on this VM
/// with a 1 ns timer slack ≈ 14 µs and steady to ±0.5 µs; with the default 50 µs slack ≈ 65
/// µs), so the thread wakes ≈ 1.5 µs early. A wake-up later than that is preemption (the
/// machine is busy): it neither raises the margin past [`SPIN_MAX`] nor counts for more than
/// twice it.
pub(crate) const SPIN_MAX: Duration = Duration::from_micros(25);
const SPIN_MIN_NS: f64 = 1_500.0;

/// Sleeps to within a margin of deadlines, then spins; learns the margin from the overshoot.
#[derive(Debug)]
pub(crate) struct PreciseSleeper {
    /// Moving average of how late a sleep wakes up, in ns.
    overshoot_ns: f64,
}

impl PreciseSleeper {
    pub(crate) fn new() -> PreciseSleeper {
        PreciseSleeper {
            overshoot_ns: 5_000.0,
        }
    }

    fn margin(&self) -> Duration {
        let ns = (self.overshoot_ns + SPIN_MIN_NS).min(SPIN_MAX.as_nanos() as f64);
        Duration::from_nanos(ns as u64)
    }

    /// Returns at about `t`: sleeps to within the timer's wake-up latency, then returns (at
    /// once if `t` is nearer than that). It never spins: a sender that spins between packets
    /// 20 µs apart takes a whole core from the relay it measures on a 2-core machine, and the
    /// figures would measure the starvation. So at high rates a packet may leave up to the
    /// wake-up latency (≈ 15 µs here) early; latency is measured from the actual send time.
    pub(crate) fn until(&mut self, t: Instant) {
        let now = Instant::now();
        if t <= now {
            return;
        }
        let margin = self.margin();
        if t - now > margin {
            let wake = t - margin;
            std::thread::sleep(wake - now);
            let over = Instant::now().saturating_duration_since(wake).as_nanos() as f64;
            let cap = 2.0 * SPIN_MAX.as_nanos() as f64;
            self.overshoot_ns += (over.min(cap) - self.overshoot_ns) / 16.0;
        }
    }
}

/// Paced pattern: when call `index` of `calls` sends its packet `k`, in ns from the start. A
/// call sends every `calls/rate` s; call `i` is offset by `i/calls` of that interval, so the
/// packets of all calls are `1/rate` s apart, round robin.
pub(crate) fn paced_offset_ns(k: u64, index: u32, calls: usize, rate: f64) -> f64 {
    let gap = 1e9 / rate;
    (k as f64 * calls as f64 + f64::from(index)) * gap
}

/// Lowers this thread's timer slack to 1 ns; returns whether it could.
fn precise_timers() -> bool {
    rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1)).is_ok()
}

/// The paced pattern: one packet per call per interval, one `sendmsg` each.
fn send_paced(
    calls: &mut [&mut TxSide],
    plan: &Plan,
    rate: f64,
    n_calls: usize,
    progress: &Progress,
    stop: &Stop,
) -> SendOut {
    let mut out = SendOut::default();
    let Some(first) = calls.first() else {
        return out;
    };
    // The default 50 µs timer slack would make every wait that much late.
    let _ = precise_timers();
    let mut sleeper = PreciseSleeper::new();
    let overhead = first.srtp.as_ref().map_or(0, SrtpContext::rtp_overhead);
    let stride = plan.shape.packet_size + overhead;
    let mut buf = vec![0u8; stride];
    let interval_ns = 1e9 * n_calls as f64 / rate;
    let ts_step = (90_000.0 / plan.shape.fps).round() as u32;
    let mut k: u64 = 0;
    'rounds: loop {
        if paced_offset_ns(k, 0, n_calls, rate) >= plan.total_ns {
            break;
        }
        for c in calls.iter_mut() {
            let at = paced_offset_ns(k, c.index, n_calls, rate);
            if at >= plan.total_ns {
                continue;
            }
            let target = plan.start + Duration::from_nanos(at as u64);
            sleeper.until(target);
            if stop.requested() {
                break 'rounds;
            }
            let now = Instant::now();
            let late = now.saturating_duration_since(target);
            if late.as_nanos() as f64 > interval_ns {
                // A whole interval behind: skipped, not sent late on top of the next one.
                out.skipped += 1;
                continue;
            }
            out.max_late = out.max_late.max(late);
            // Video-like RTP: the frame this send time falls in; the marker on a frame's last.
            let frame = (at * plan.shape.fps / 1e9) as u64;
            let next_frame = ((at + interval_ns) * plan.shape.fps / 1e9) as u64;
            let rtp_ts = (frame as u32).wrapping_mul(ts_step);
            let sent_at = ns(now);
            let last = next_frame != frame;
            if !out.stamp(c, &mut buf, plan.shape.packet_size, rtp_ts, last, sent_at) {
                continue;
            }
            let in_window = (plan.window.0..plan.window.1).contains(&sent_at);
            out.send(c, &buf, stride, false, in_window, progress);
        }
        k += 1;
    }
    out
}

fn write_packet(p: &mut [u8], c: &TxSide, seq: u64, rtp_ts: u32, last: bool, sent_at: u64) {
    let Some(h) = p.get_mut(..RTP_HEADER + PAYLOAD_HEADER) else {
        return;
    };
    let (rtp, payload) = h.split_at_mut(RTP_HEADER);
    rtp[0] = 0x80;
    rtp[1] = 96 | if last { 0x80 } else { 0 };
    rtp[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    rtp[4..8].copy_from_slice(&rtp_ts.to_be_bytes());
    rtp[8..12].copy_from_slice(&c.ssrc.to_be_bytes());
    payload[0..4].copy_from_slice(&MAGIC);
    payload[4..8].copy_from_slice(&c.index.to_be_bytes());
    payload[8..16].copy_from_slice(&seq.to_be_bytes());
    payload[16..24].copy_from_slice(&sent_at.to_be_bytes());
}

/// One frame to the call's destination and, in a group floor, to each of its `fan_dests`.
/// Returns packets the kernel took for the first destination and sends it refused anywhere.
fn send_burst(
    c: &TxSide,
    data: &[u8],
    stride: usize,
    gso: bool,
    first_error: &mut Option<String>,
) -> (u64, u64) {
    let (ok, mut failed) = send_to_one(c, c.dest, data, stride, gso, first_error);
    for &d in &c.fan_dests {
        failed += send_to_one(c, d, data, stride, gso, first_error).1;
    }
    (ok, failed)
}

/// One frame to one destination: GSO `sendmsg`s of up to 64 kB, or one `sendmsg` per packet.
/// Returns packets the kernel took and packets it refused.
fn send_to_one(
    c: &TxSide,
    dest: SocketAddr,
    data: &[u8],
    stride: usize,
    gso: bool,
    first_error: &mut Option<String>,
) -> (u64, u64) {
    let per_send = if gso {
        c.state
            .max_gso_segments()
            .min(MAX_GSO_BYTES / stride)
            .max(1)
    } else {
        1
    };
    let sent =
        crate::relay::io::send_segments(&c.state, &c.socket, dest, data, stride, per_send, |e| {
            first_error.get_or_insert_with(|| format!("send to {dest}: {e}"));
        });
    (sent.packets, sent.failed)
}

/// Handles one received packet of call `side`.
fn on_packet(seg: &mut [u8], now_ns: u64, side: &mut RxSide, window: (u64, u64), hist: &mut Hists) {
    let len = match side.srtp.as_mut() {
        Some(ctx) => match ctx.unprotect_rtp(seg) {
            Ok(n) => n,
            Err(SrtpError::Replayed) => {
                // The replay check caught a duplicate; its send time is unreadable: count it.
                side.counts.duplicates += 1;
                return;
            }
            Err(_) => {
                side.counts.decrypt_failures += 1;
                return;
            }
        },
        None => seg.len(),
    };
    let Some(pkt) = seg.get(..len) else { return };
    let Some(payload) = rtp_payload(pkt) else {
        side.counts.malformed += 1;
        return;
    };
    let field = |r: std::ops::Range<usize>| payload.get(r);
    let (Some(magic), Some(idx), Some(seq), Some(sent)) =
        (field(0..4), field(4..8), field(8..16), field(16..24))
    else {
        side.counts.malformed += 1;
        return;
    };
    let idx = u32::from_be_bytes(idx.try_into().unwrap_or_default());
    if magic != MAGIC || idx != side.call {
        side.counts.malformed += 1;
        return;
    }
    let seq = u64::from_be_bytes(seq.try_into().unwrap_or_default());
    let sent = u64::from_be_bytes(sent.try_into().unwrap_or_default());
    let seen = side.track.see(seq);
    if !(window.0..window.1).contains(&sent) {
        side.counts.outside_window += 1;
        return;
    }
    match seen {
        Seen::Duplicate => side.counts.duplicates += 1,
        Seen::New | Seen::Reordered => {
            side.counts.received += 1;
            if seen == Seen::Reordered {
                side.counts.reordered += 1;
            }
            let latency = now_ns.saturating_sub(sent).max(1);
            hist.all.saturating_record(latency);
            if let Some(last) = side.fan.as_ref().and_then(|f| f.arrive(seq, latency)) {
                hist.last.saturating_record(last);
            }
        }
    }
}

/// The payload of a plain RTP packet (after CSRCs and the header extension), read with the
/// crate's one RTP parser.
fn rtp_payload(p: &[u8]) -> Option<&[u8]> {
    let pkt = crate::wire::rtp::RtpPacket::new_checked(p).ok()?;
    let start = pkt.header_len();
    p.get(start..start + pkt.payload().len())
}

/// Receives one socket's queue in batches until it is drained (a short batch); returns the
/// packets seen.
fn drain_side(
    side: &mut RxSide,
    batch: &mut RecvBatch,
    window: (u64, u64),
    hist: &mut Hists,
) -> u64 {
    let mut packets = 0;
    // Bounded: a socket that keeps returning errors cannot hold the thread.
    for _ in 0..64 {
        let n = match side.sock.recv(batch) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // ICMP errors (a relay port gone) and the like: keep receiving.
            Err(_) => continue,
        };
        let now_ns = ns(Instant::now());
        for (_, data, stride) in batch.datagrams() {
            for seg in data.chunks_mut(stride) {
                packets += 1;
                on_packet(seg, now_ns, side, window, hist);
            }
        }
        if n < batch.slots() {
            break; // drained
        }
    }
    packets
}

/// Runs one receiver thread until `stop`: a level-triggered epoll loop over its callee
/// sockets with the relay's socket layer (`relay::io`); returns the sides and the histogram.
fn receive_loop(
    mut sides: Vec<RxSide>,
    stop: watch::Receiver<bool>,
    window: (u64, u64),
    progress: Arc<Progress>,
) -> io::Result<(Vec<RxSide>, Hists)> {
    let poller = Poller::new()?;
    for (i, s) in sides.iter().enumerate() {
        poller.add(s.sock.socket(), i as u64)?;
    }
    let mut events = Events::with_capacity(256);
    let mut batch = RecvBatch::default();
    let mut hist = Hists::new();
    while !*stop.borrow() {
        poller.wait(&mut events, Some(Duration::from_millis(20)))?;
        let mut packets = 0;
        for t in events.tokens() {
            if let Some(side) = usize::try_from(t).ok().and_then(|i| sides.get_mut(i)) {
                packets += drain_side(side, &mut batch, window, &mut hist);
            }
        }
        if packets > 0 {
            progress.received.fetch_add(packets, Ordering::Relaxed);
        }
    }
    Ok((sides, hist))
}

/// Sends `load` over `paths` for warm-up + window, measures, and returns the figures. The
/// sockets and SRTP contexts stay in `paths` for the next phase.
pub(crate) fn measure(
    paths: &mut Paths,
    load: &Load,
    probes: &[Probe],
    stop: &Stop,
) -> Result<PhaseResult, String> {
    let calls = paths.tx.len();
    let rx_count = paths.rx.len();
    let fanout = (rx_count / calls.max(1)).max(1);
    for t in &mut paths.tx {
        t.sent_window = 0;
        t.credit = 0.0;
    }
    for r in &mut paths.rx {
        r.counts = RxCounts::default();
    }
    let clock = Clock::new(load);
    let plan = Plan::new(load, &clock, calls);
    let progress = Arc::new(Progress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let sampled = AtomicBool::new(false);
    let rx_groups = deal(
        std::mem::take(&mut paths.rx),
        load.shape.receivers.min(rx_count).max(1),
    );
    let tx_groups = deal(paths.tx.iter_mut(), load.shape.senders.min(calls).max(1));

    let mut cpu = CpuWindow::default();
    let (rx_results, tx_results) = std::thread::scope(|sc| {
        let rx_handles: Vec<_> = rx_groups
            .into_iter()
            .enumerate()
            .map(|(g, sides)| {
                let (stop_rx, progress) = (stop_rx.clone(), progress.clone());
                let window = plan.window;
                std::thread::Builder::new()
                    .name(format!("lg-recv-{g}"))
                    .spawn_scoped(sc, move || {
                        sys::pin_this_thread();
                        receive_loop(sides, stop_rx, window, progress)
                    })
            })
            .collect();
        let tx_handles: Vec<_> = tx_groups
            .into_iter()
            .enumerate()
            .map(|(g, mut group)| {
                let (plan, progress, sampled) = (&plan, &progress, &sampled);
                std::thread::Builder::new()
                    .name(format!("lg-send-{g}"))
                    .spawn_scoped(sc, move || {
                        sys::pin_this_thread();
                        sender_thread(&mut group, plan, progress, stop, sampled)
                    })
            })
            .collect();
        cpu = clock.keep_time(load, probes, &progress, stop);
        sampled.store(true, Ordering::Release);
        let tx_results = joined(tx_handles, "sender", Ok);
        drain(&progress);
        let _ = stop_tx.send(true);
        let rx_results = joined(rx_handles, "receiver", |r| r.map_err(|e| e.to_string()));
        (rx_results, tx_results)
    });

    let (rx_all, hists, rx_err) = gather_receivers(rx_results, rx_count);
    paths.rx = rx_all;
    let (out, tx_err) = SendOut::merge(tx_results);
    if let Some(e) = rx_err.or(tx_err) {
        return Err(e);
    }
    if paths.rx.len() != rx_count {
        return Err("a receiver lost its sockets".into());
    }
    let tally = Tally::of(paths);
    let received = tally.totals.received.max(1) as f64;
    Ok(PhaseResult {
        label: load.label,
        calls,
        fanout,
        offered_pps: load.rate,
        window_s: cpu.measured_s.unwrap_or(load.shape.duration.as_secs_f64()),
        sent: tally.sent,
        send_failures: out.failures,
        first_send_error: out.first_error,
        totals: tally.totals,
        calls_with_loss: tally.calls_with_loss,
        worst_call_loss_pct: tally.worst,
        sender_max_late_us: out.max_late.as_secs_f64() * 1e6,
        skipped_frames: out.skipped,
        latency: hists.all,
        last_latency: hists.last,
        cpu: cpu.figures(probes, received),
        wakeups: cpu.wakeups(probes, received),
        per_call: tally.per_call,
        interrupted: stop.requested(),
    })
}

/// `items` dealt round-robin into `n` groups (one per thread).
fn deal<T>(items: impl IntoIterator<Item = T>, n: usize) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        if let Some(g) = groups.get_mut(i % n) {
            g.push(item);
        }
    }
    groups
}

/// A phase's times: sending starts at `start`, is counted from `window_start` to `window_end`.
struct Clock {
    start: Instant,
    window_start: Instant,
    window_end: Instant,
}

impl Clock {
    fn new(load: &Load) -> Clock {
        let start = Instant::now() + Duration::from_millis(50);
        let window_start = start + load.shape.warmup;
        Clock {
            start,
            window_start,
            window_end: window_start + load.shape.duration,
        }
    }

    /// The main thread keeps time: CPU at the window's edges, a progress line each second.
    /// Returns when the window ends or a stop is asked for.
    fn keep_time(
        &self,
        load: &Load,
        probes: &[Probe],
        progress: &Progress,
        stop: &Stop,
    ) -> CpuWindow {
        let (start, window_start, window_end) = (self.start, self.window_start, self.window_end);
        let mut cpu = CpuWindow::default();
        let total = window_end - start;
        let show = load.progress && total >= Duration::from_secs(4);
        let mut next_tick = start + Duration::from_secs(1);
        let mut last = (0u64, 0u64, start);
        let mut in_window = false;
        loop {
            let now = Instant::now();
            if !in_window && now >= window_start {
                cpu.start = probes.iter().map(Probe::sample).collect();
                in_window = true;
            }
            if now >= window_end || stop.requested() {
                break;
            }
            if show && now >= next_tick {
                let (s, r) = (
                    progress.sent.load(Ordering::Relaxed),
                    progress.received.load(Ordering::Relaxed),
                );
                let dt = now
                    .saturating_duration_since(last.2)
                    .as_secs_f64()
                    .max(1e-3);
                eprintln!(
                    "loadgen [{}] {:>5.1}/{:.1} s  sent {s} ({:.0}/s)  received {r} ({:.0}/s){}",
                    load.label,
                    now.saturating_duration_since(start).as_secs_f64(),
                    total.as_secs_f64(),
                    (s - last.0) as f64 / dt,
                    r.saturating_sub(last.1) as f64 / dt,
                    if in_window { "" } else { "  (warm-up)" }
                );
                last = (s, r, now);
                next_tick += Duration::from_secs(1);
            }
            let wake = [window_start, window_end, next_tick]
                .into_iter()
                .filter(|t| *t > now)
                .min()
                .unwrap_or(now + Duration::from_millis(10));
            std::thread::sleep((wake - now).min(Duration::from_millis(100)));
        }
        if in_window {
            cpu.end = probes.iter().map(Probe::sample).collect();
            let end = Instant::now().min(window_end);
            cpu.measured_s = Some(end.saturating_duration_since(window_start).as_secs_f64());
        }
        cpu
    }
}

/// What the probes read at the window's edges, and how long the window really was (`None`:
/// it was never entered, the planned duration stands).
#[derive(Default)]
struct CpuWindow {
    start: Vec<Option<u64>>,
    end: Vec<Option<u64>>,
    measured_s: Option<f64>,
}

impl CpuWindow {
    /// CPU used over the window by each probe that could be read at both edges.
    fn figures(&self, probes: &[Probe], received: f64) -> Vec<CpuFigure> {
        self.deltas(probes, false)
            .map(|(p, ns)| {
                let d = Duration::from_nanos(ns);
                CpuFigure {
                    key: p.key,
                    label: p.label.clone(),
                    seconds: d.as_secs_f64(),
                    us_per_packet: d.as_secs_f64() * 1e6 / received,
                }
            })
            .collect()
    }

    /// Context switches over the window by each switch probe read at both edges.
    fn wakeups(&self, probes: &[Probe], received: f64) -> Vec<WakeFigure> {
        self.deltas(probes, true)
            .map(|(p, n)| WakeFigure {
                key: p.key,
                label: p.label.clone(),
                switches: n,
                per_packet: n as f64 / received,
            })
            .collect()
    }

    /// What each probe (the switch probes, or the CPU ones) moved by over the window.
    fn deltas<'a>(
        &'a self,
        probes: &'a [Probe],
        switches: bool,
    ) -> impl Iterator<Item = (&'a Probe, u64)> + 'a {
        probes
            .iter()
            .zip(self.start.iter().zip(&self.end))
            .filter(move |(p, _)| matches!(p.source, ProbeSource::Switches(_)) == switches)
            .filter_map(|(p, (a, b))| Some((p, b.as_ref()?.saturating_sub(*a.as_ref()?))))
    }
}

/// A sender thread: sends, then stays alive until the window's CPU time is read (threads
/// that ended leave /proc).
fn sender_thread(
    calls: &mut [&mut TxSide],
    plan: &Plan,
    progress: &Progress,
    stop: &Stop,
    sampled: &AtomicBool,
) -> SendOut {
    let out = send_loop(calls, plan, progress, stop);
    let until = Instant::now() + Duration::from_secs(5);
    while !sampled.load(Ordering::Acquire) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    out
}

/// What each of a phase's `role` threads returned (`result` of it), or why it did not.
fn joined<T, R>(
    handles: Vec<io::Result<std::thread::ScopedJoinHandle<'_, T>>>,
    role: &str,
    result: impl Fn(T) -> Result<R, String>,
) -> Vec<Result<R, String>> {
    handles
        .into_iter()
        .map(|h| {
            h.map_err(|e| e.to_string()).and_then(|h| {
                h.join()
                    .map_err(|_| format!("{role} panicked"))
                    .and_then(&result)
            })
        })
        .collect()
}

/// After sending: waits until nothing arrived for 100 ms (at most 1 s).
fn drain(progress: &Progress) {
    let drain_end = Instant::now() + Duration::from_secs(1);
    let mut seen = progress.received.load(Ordering::Relaxed);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now_seen = progress.received.load(Ordering::Relaxed);
        if now_seen == seen || Instant::now() >= drain_end {
            break;
        }
        seen = now_seen;
    }
}

/// The receiver threads' sides back in call index order, their histograms added up, and the
/// first error one of them had.
fn gather_receivers(
    results: Vec<Result<(Vec<RxSide>, Hists), String>>,
    rx_count: usize,
) -> (Vec<RxSide>, Hists, Option<String>) {
    let mut hists = Hists {
        all: new_histogram(),
        last: new_histogram(),
    };
    let mut rx_all: Vec<RxSide> = Vec::with_capacity(rx_count);
    let mut first_err = None;
    for r in results {
        match r {
            Ok((sides, h)) => {
                rx_all.extend(sides);
                let _ = hists.all.add(&h.all);
                let _ = hists.last.add(&h.last);
            }
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    rx_all.sort_by_key(|r| r.index);
    (rx_all, hists, first_err)
}

/// What the receivers counted against what their senders sent in the window.
struct Tally {
    totals: RxCounts,
    sent: u64,
    calls_with_loss: usize,
    /// The worst receiver's loss, %.
    worst: f64,
    per_call: Vec<CallFigures>,
}

impl Tally {
    fn of(paths: &Paths) -> Tally {
        let mut tally = Tally {
            totals: RxCounts::default(),
            sent: paths.tx.iter().map(|t| t.sent_window).sum(),
            calls_with_loss: 0,
            worst: 0.0,
            per_call: Vec::new(),
        };
        // Per receiver (one per call in one-to-one calls): what its sender sent against what
        // it got.
        for r in &paths.rx {
            tally.totals.add(&r.counts);
            let t_sent = paths
                .tx
                .iter()
                .find(|t| t.index == r.call)
                .map_or(0, |t| t.sent_window);
            let lost = t_sent.saturating_sub(r.counts.received);
            if lost > 0 {
                tally.calls_with_loss += 1;
                tally.worst = tally.worst.max(lost as f64 * 100.0 / t_sent.max(1) as f64);
            }
            tally.per_call.push(CallFigures {
                index: r.index,
                sender: r.call,
                sent: t_sent,
                counts: r.counts,
            });
        }
        tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_track_counts_reorder_and_duplicates() {
        let mut t = SeqTrack::default();
        assert_eq!(t.see(0), Seen::New);
        assert_eq!(t.see(2), Seen::New);
        assert_eq!(t.see(1), Seen::Reordered);
        assert_eq!(t.see(1), Seen::Duplicate);
        assert_eq!(t.see(2), Seen::Duplicate);
        assert_eq!(t.see(5000), Seen::New);
        assert_eq!(t.see(4999), Seen::Reordered);
        assert_eq!(t.see(10), Seen::Reordered, "older than the window");
        // A stale bit from one window ago does not read as a duplicate.
        assert_eq!(t.see(5000 + SEQ_WINDOW + 1), Seen::New);
        assert_eq!(t.see(5000 + SEQ_WINDOW), Seen::Reordered);
    }

    #[test]
    fn fan_track_reports_the_last_receiver_once() {
        let f = FanTrack::new(3);
        f.clear(7);
        assert_eq!(f.arrive(7, 100), None);
        assert_eq!(f.arrive(7, 300), None);
        assert_eq!(f.arrive(7, 200), Some(300), "the latest of the three");
        assert_eq!(f.arrive(7, 50), None, "a fourth arrival completes nothing");
        // The slot is reused FAN_SLOTS packets later, cleared by the sender first.
        f.clear(7 + FAN_SLOTS);
        assert_eq!(f.arrive(7 + FAN_SLOTS, 10), None);
        // Receivers on several threads: exactly one completes each packet.
        let f = FanTrack::new(4);
        for seq in 0..1000 {
            f.clear(seq);
        }
        let done: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4u64)
                .map(|r| {
                    let f = &f;
                    s.spawn(move || {
                        (0..1000)
                            .filter(|&seq| {
                                f.arrive(seq, seq * 10 + r).is_some_and(|l| {
                                    assert_eq!(l, seq * 10 + 3);
                                    true
                                })
                            })
                            .count() as u64
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(done, 1000);
    }

    #[test]
    fn paced_schedule_spacing_and_offsets() {
        // 100 calls at 50k pps: each call every 2 ms, call i 20 µs after call i-1.
        let (calls, rate) = (100, 50_000.0);
        let at = |k, i| paced_offset_ns(k, i, calls, rate);
        assert_eq!(at(0, 0), 0.0);
        assert!((at(0, 1) - 20_000.0).abs() < 1e-6);
        assert!((at(0, 99) - 1_980_000.0).abs() < 1e-6);
        assert!((at(1, 0) - 2_000_000.0).abs() < 1e-6, "per-call interval");
        assert!((at(7, 42) - at(6, 42) - 2_000_000.0).abs() < 1e-3);
        // Every send time, all calls together, is 1/rate apart: the round robin never bunches.
        let mut all: Vec<f64> = (0..5)
            .flat_map(|k| (0..calls as u32).map(move |i| (k, i)))
            .map(|(k, i)| at(k, i))
            .collect();
        all.sort_by(f64::total_cmp);
        for w in all.windows(2) {
            assert!((w[1] - w[0] - 20_000.0).abs() < 1e-3, "{w:?}");
        }
        // One call alone: every 1/rate.
        assert!((paced_offset_ns(3, 0, 1, 2000.0) - 1.5e6).abs() < 1e-6);
        // Per call rate = rate / calls, whatever the number of calls.
        let per_call =
            |c: usize| 1e9 / (paced_offset_ns(1, 0, c, rate) - paced_offset_ns(0, 0, c, rate));
        assert!((per_call(1000) - 50.0).abs() < 1e-9);
        assert!((per_call(4) - 12_500.0).abs() < 1e-6);
    }

    #[test]
    fn precise_sleep_returns_within_its_margin_of_the_deadline() {
        let mut s = PreciseSleeper::new();
        for _ in 0..20 {
            let t = Instant::now() + Duration::from_micros(200);
            let margin = s.margin();
            s.until(t);
            assert!(
                Instant::now() + margin >= t,
                "never earlier than the margin"
            );
        }
        assert!(s.margin() <= SPIN_MAX && s.margin() >= Duration::from_micros(1));
        // A deadline in the past returns at once.
        s.until(Instant::now());
    }

    #[test]
    fn payload_round_trip() {
        let t = TxSide::bind(7, 0x1234).unwrap();
        let mut p = vec![0u8; 100];
        write_packet(&mut p, &t, 42, 9000, true, 123_456);
        let payload = rtp_payload(&p).unwrap();
        assert_eq!(&payload[..4], &MAGIC);
        assert_eq!(u32::from_be_bytes(payload[4..8].try_into().unwrap()), 7);
        assert_eq!(u64::from_be_bytes(payload[8..16].try_into().unwrap()), 42);
        assert_eq!(
            u64::from_be_bytes(payload[16..24].try_into().unwrap()),
            123_456
        );
        assert_eq!(p[1], 0x80 | 96);
    }
}
