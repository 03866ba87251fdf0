//! One worker thread per core, each with its own current-thread tokio runtime. A call lives on
//! one worker: its sockets, its media tasks and its driver all run on that thread, so per-call
//! state is plain `Cell`/`RefCell` (no lock, no atomic) and the only shared word on the media
//! path is the call's [`Arbiter`].
//!
//! * A **media task** per socket receives in batches (`recvmmsg` and GRO through quinn-udp),
//!   judges every packet (source, version, SSRC, grant, SRTP), compacts what passes in place and
//!   sends it on with one GSO `sendmsg` per batch to the peer's negotiated or latched address.
//! * The **driver** of the call runs the sans-IO [`Call`](crate::control::call::Call) under the
//!   engine's control lock: transmission control datagrams, timers, media activity; it sends what
//!   the call polls out and publishes its events. When the call is released it stops the media
//!   tasks, closes the sockets and gives the ports back.

use super::latch::{Evidence, Latch, StrangerBudget, Verdict};
use super::stats::{DropReason, LegCounters};
use super::{Shared, DROP_KINDS};
use crate::control::arbiter::Arbiter;
use crate::control::{MediaSecurity, Party};
use crate::keys::MasterKey;
use crate::sdp::MediaKind;
use crate::srtp::{SrtpContext, SrtpError};
use crate::wire::demux::{classify, PacketClass};
use crate::wire::rtcp::{self, RtcpKind, RtcpPacket};
use crate::wire::rtp::RtpPacket;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

/// Receive buffer per batch slot: room for a GRO super-packet.
const SLOT: usize = 64 * 1024;
/// Batches a media task drains per wake-up before it lets other tasks run.
const BATCHES_PER_WAKE: usize = 8;
/// Relay-originated keyframe requests at most this often.
pub(crate) const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// A callee keyframe request arriving this soon after a keyframe passed is redundant.
pub(crate) const KEYFRAME_REDUNDANT_WINDOW: Duration = Duration::from_millis(250);
/// Largest transmission control datagram received (one MTU).
const CONTROL_MTU: usize = 1500;
/// Callee media packets between wake-ups of the driver (so it can revoke).
const CALLEE_MEDIA_WAKE_EVERY: u32 = 4;

/// Sockets and keys of one stream of one leg, as the engine hands them to a worker.
pub(crate) struct LegSetup {
    pub(crate) rtp: std::net::UdpSocket,
    pub(crate) rtcp: Option<std::net::UdpSocket>,
    pub(crate) remote_rtp: Option<SocketAddr>,
    pub(crate) remote_rtcp: Option<SocketAddr>,
    pub(crate) announced: Vec<u32>,
    pub(crate) srtp_in: Option<MasterKey>,
    pub(crate) srtp_out: Option<MasterKey>,
}

/// One media stream (both legs).
pub(crate) struct StreamSetup {
    pub(crate) kind: MediaKind,
    /// SRTP on the wire (RTP/SAVP...): opaque past the first header in end_to_end mode.
    pub(crate) encrypted: bool,
    pub(crate) legs: [LegSetup; 2],
    /// SSRCs the caller may send with on this stream (empty: adopt the first one seen).
    pub(crate) caller_ssrcs: Vec<u32>,
}

/// A party's transmission control channel.
pub(crate) struct ControlSetup {
    pub(crate) socket: std::net::UdpSocket,
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) key: Option<MasterKey>,
}

/// Everything a worker needs to run an established call.
pub(crate) struct CallSetup {
    pub(crate) id: Arc<str>,
    pub(crate) arbiter: Arc<Arbiter>,
    pub(crate) security: MediaSecurity,
    pub(crate) streams: Vec<StreamSetup>,
    pub(crate) control: [Option<ControlSetup>; 2],
    pub(crate) counters: [Arc<LegCounters>; 2],
    pub(crate) ports: Vec<u16>,
    pub(crate) server_ssrc: u32,
    pub(crate) video_ssrc: u32,
    pub(crate) latch_after: u32,
}

pub(crate) enum WorkerCmd {
    Start(Box<CallSetup>),
    Stop(Arc<str>),
    Shutdown,
}

/// A tokio UDP socket with quinn-udp's batched I/O state.
struct Sock {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
}

impl Sock {
    fn new(std: std::net::UdpSocket) -> io::Result<Sock> {
        let io = tokio::net::UdpSocket::from_std(std)?;
        let state = UdpSocketState::new((&io).into())?;
        Ok(Sock { io, state })
    }

    /// Sends `buf` as segments of `stride` (GSO when more than one) and says what went out.
    fn send(&self, dest: SocketAddr, buf: &[u8], stride: usize) -> Sent {
        let stride = stride.max(1);
        let max = self.state.max_gso_segments().max(1);
        let mut r = Sent::default();
        for chunk in buf.chunks(stride * max) {
            let segments = chunk.len().div_ceil(stride) as u64;
            let t = Transmit {
                destination: dest,
                ecn: None,
                contents: chunk,
                segment_size: (chunk.len() > stride).then_some(stride),
                src_ip: None,
            };
            match self.state.try_send((&self.io).into(), &t) {
                Ok(()) => {
                    r.packets += segments;
                    r.bytes += chunk.len() as u64;
                }
                Err(_) => r.failed += segments,
            }
        }
        r
    }
}

/// What one [`Sock::send`] put on the wire.
#[derive(Debug, Default, Clone, Copy)]
struct Sent {
    packets: u64,
    bytes: u64,
    /// Packets the kernel refused (send buffer full, unreachable).
    failed: u64,
}

/// Per-worker receive scratch: `BATCH_SIZE` slots of [`SLOT`] bytes, shared by every media task
/// of the thread (they never hold it across an await).
struct Scratch {
    bufs: Vec<u8>,
    metas: [RecvMeta; BATCH_SIZE],
    out: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        bufs: vec![0; BATCH_SIZE * SLOT],
        metas: [RecvMeta::default(); BATCH_SIZE],
        out: Vec::with_capacity(GSO_MAX_BYTES),
    });
}

/// Largest GSO send (UDP payload limit, with room for headers).
const GSO_MAX_BYTES: usize = 65_000;

/// Gathers forwarded single-packet datagrams of one size into one GSO send: a sender that
/// does not use GSO itself (a camera, ffmpeg) still costs the relay one `sendmsg` per run of
/// equal-size packets (a video frame) instead of one per packet.
struct Coalescer<'a> {
    out: &'a mut Vec<u8>,
    seg: usize,
    closed: bool,
    max_segments: usize,
}

impl Coalescer<'_> {
    fn push(&mut self, pkt: &[u8], sock: &Sock, dest: SocketAddr, t: &mut Tally) {
        let fits = !self.out.is_empty()
            && !self.closed
            && pkt.len() <= self.seg
            && self.out.len() + pkt.len() <= GSO_MAX_BYTES
            && self.out.len() / self.seg.max(1) < self.max_segments;
        if !fits {
            self.flush(sock, dest, t);
            self.seg = pkt.len();
        }
        // A shorter packet may only end a GSO run.
        self.closed = pkt.len() < self.seg;
        self.out.extend_from_slice(pkt);
    }

    fn flush(&mut self, sock: &Sock, dest: SocketAddr, t: &mut Tally) {
        if self.out.is_empty() {
            return;
        }
        t.sent(sock.send(dest, self.out, self.seg));
        self.out.clear();
        self.closed = false;
    }
}

/// The caller's SSRCs on a stream.
#[derive(Debug, Clone, Copy)]
struct SsrcFilter {
    allowed: [u32; 4],
    len: usize,
    learn: bool,
}

impl SsrcFilter {
    fn new(ssrcs: &[u32]) -> Self {
        let mut f = SsrcFilter {
            allowed: [0; 4],
            len: 0,
            learn: ssrcs.is_empty(),
        };
        for &s in ssrcs.iter().take(4) {
            if !f.allowed.get(..f.len).unwrap_or_default().contains(&s) {
                if let Some(slot) = f.allowed.get_mut(f.len) {
                    *slot = s;
                    f.len += 1;
                }
            }
        }
        f
    }

    /// Whether `ssrc` may pass; the first SSRC is adopted when nothing was announced.
    #[inline]
    fn admit(&mut self, ssrc: u32) -> bool {
        if self
            .allowed
            .get(..self.len)
            .unwrap_or_default()
            .contains(&ssrc)
        {
            return true;
        }
        if self.learn && self.len == 0 {
            self.allowed[0] = ssrc;
            self.len = 1;
            return true;
        }
        false
    }
}

struct LegRt {
    rtp: Sock,
    rtcp: Option<Sock>,
    rtp_latch: Cell<Latch>,
    rtcp_latch: Cell<Latch>,
    strangers: Cell<StrangerBudget>,
    announced: Vec<u32>,
    srtp_in: SrtpSlot,
    srtp_out: SrtpSlot,
}

impl LegRt {
    /// The socket and destination for RTCP to this leg's party.
    fn rtcp_path(&self) -> (&Sock, Option<SocketAddr>) {
        match &self.rtcp {
            Some(s) => (s, self.rtcp_latch.get().destination()),
            None => (&self.rtp, self.rtp_latch.get().destination()),
        }
    }
}

struct StreamRt {
    kind: MediaKind,
    encrypted: bool,
    legs: [LegRt; 2],
    caller_ssrcs: Cell<SsrcFilter>,
    last_keyframe: Cell<Option<Instant>>,
    last_request: Cell<Option<Instant>>,
}

struct ControlRt {
    sock: Sock,
    latch: Cell<Latch>,
    strangers: Cell<StrangerBudget>,
    srtcp_in: SrtpSlot,
    srtcp_out: SrtpSlot,
}

/// A running call on this worker.
pub(crate) struct CallRt {
    id: Arc<str>,
    arbiter: Arc<Arbiter>,
    security: MediaSecurity,
    streams: Vec<StreamRt>,
    control: [Option<ControlRt>; 2],
    counters: [Arc<LegCounters>; 2],
    ports: Vec<u16>,
    server_ssrc: u32,
    video_ssrc: u32,
    closed: Cell<bool>,
    stop: Notify,
    wake: Notify,
    // Media activity, read by the driver.
    media_packets: [Cell<u64>; 2],
    last_media: [Cell<Option<Instant>>; 2],
    caller_bye: Cell<bool>,
}

/// An SRTP context slot: boxed, so a leg that terminates no SRTP (end_to_end mode, plain
/// control channels) pays one pointer, not a context (memory per idle call).
type SrtpSlot = RefCell<Option<Box<SrtpContext>>>;

fn srtp(key: Option<MasterKey>) -> io::Result<SrtpSlot> {
    let ctx = key
        .map(|k| SrtpContext::try_new(&k).map(Box::new))
        .transpose()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    Ok(RefCell::new(ctx))
}

impl CallRt {
    fn build(setup: CallSetup) -> io::Result<CallRt> {
        let CallSetup {
            id,
            arbiter,
            security,
            streams,
            control,
            counters,
            ports,
            server_ssrc,
            video_ssrc,
            latch_after,
        } = setup;
        let mut rt_streams = Vec::with_capacity(streams.len());
        for s in streams {
            let [a, b] = s.legs;
            let leg = |l: LegSetup| -> io::Result<LegRt> {
                Ok(LegRt {
                    rtp: Sock::new(l.rtp)?,
                    rtcp: l.rtcp.map(Sock::new).transpose()?,
                    rtp_latch: Cell::new(Latch::new(l.remote_rtp, latch_after)),
                    rtcp_latch: Cell::new(Latch::new(l.remote_rtcp, latch_after)),
                    strangers: Cell::new(StrangerBudget::default()),
                    announced: l.announced,
                    srtp_in: srtp(l.srtp_in)?,
                    srtp_out: srtp(l.srtp_out)?,
                })
            };
            rt_streams.push(StreamRt {
                kind: s.kind,
                encrypted: s.encrypted,
                legs: [leg(a)?, leg(b)?],
                caller_ssrcs: Cell::new(SsrcFilter::new(&s.caller_ssrcs)),
                last_keyframe: Cell::new(None),
                last_request: Cell::new(None),
            });
        }
        let [c0, c1] = control;
        let ctl = |c: Option<ControlSetup>| -> io::Result<Option<ControlRt>> {
            c.map(|c| {
                Ok(ControlRt {
                    sock: Sock::new(c.socket)?,
                    latch: Cell::new(Latch::new(c.remote, latch_after)),
                    strangers: Cell::new(StrangerBudget::default()),
                    srtcp_in: srtp(c.key.clone())?,
                    srtcp_out: srtp(c.key)?,
                })
            })
            .transpose()
        };
        Ok(CallRt {
            id,
            arbiter,
            security,
            streams: rt_streams,
            control: [ctl(c0)?, ctl(c1)?],
            counters,
            ports,
            server_ssrc,
            video_ssrc,
            closed: Cell::new(false),
            stop: Notify::new(),
            wake: Notify::new(),
            media_packets: [Cell::new(0), Cell::new(0)],
            last_media: [Cell::new(None), Cell::new(None)],
            caller_bye: Cell::new(false),
        })
    }

    fn close(&self) {
        self.closed.set(true);
        self.stop.notify_waiters();
        self.wake.notify_one();
    }

    fn per_leg(&self) -> bool {
        self.security == MediaSecurity::PerLeg
    }
}

/// Where and when a datagram arrived.
#[derive(Clone, Copy)]
struct Arrival {
    from: SocketAddr,
    now: Instant,
}

/// What a batch did, added to the counters once.
#[derive(Default)]
struct Tally {
    in_packets: u64,
    in_bytes: u64,
    out_packets: u64,
    out_bytes: u64,
    drops: [u64; DROP_KINDS],
    media: u64,
    latched: bool,
    bye: bool,
}

impl Tally {
    #[inline]
    fn drop(&mut self, r: DropReason) {
        self.drop_n(r, 1);
    }

    #[inline]
    fn drop_n(&mut self, r: DropReason, n: u64) {
        if let Some(d) = self.drops.get_mut(r as usize) {
            *d += n;
        }
    }

    /// Books a send: what went out, and what the kernel refused.
    #[inline]
    fn sent(&mut self, s: Sent) {
        self.out_packets += s.packets;
        self.out_bytes += s.bytes;
        self.drop_n(DropReason::SendFailed, s.failed);
    }
}

/// H.264 keyframe start (IDR or SPS, directly, in STAP-A, or the first FU-A fragment).
fn h264_keyframe_start(payload: &[u8]) -> bool {
    let nal = |b: u8| b & 0x1f;
    match payload {
        [h, ..] if matches!(nal(*h), 5 | 7) => true,
        [h, _, _, n, ..] if nal(*h) == 24 => matches!(nal(*n), 5 | 7),
        [h, fu, ..] if nal(*h) == 28 => fu & 0x80 != 0 && nal(*fu) == 5,
        _ => false,
    }
}

impl LegRt {
    #[inline]
    fn screen(
        &self,
        latch: &Cell<Latch>,
        from: SocketAddr,
        now: Instant,
    ) -> Result<(), DropReason> {
        screen(latch, &self.strangers, from, now)
    }
}

/// Cheap checks before any per-packet work: a stranger to a leg or channel with a confirmed
/// source is dropped; packets from unknown addresses are rate limited (they may cost an SRTP
/// check).
#[inline]
fn screen(
    latch: &Cell<Latch>,
    strangers: &Cell<StrangerBudget>,
    from: SocketAddr,
    now: Instant,
) -> Result<(), DropReason> {
    let l = latch.get();
    if l.rejects(from) {
        return Err(DropReason::WrongSource);
    }
    if !l.knows(from) {
        let mut b = strangers.get();
        let ok = b.take(now);
        strangers.set(b);
        if !ok {
            return Err(DropReason::RateLimited);
        }
    }
    Ok(())
}

/// RTP or RTCP: which SRTP transform applies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rtp,
    Rtcp,
}

impl LegRt {
    /// The front every media packet from this leg's party goes through: the cheap source
    /// screen, SRTP authentication in per_leg mode, then the latch (with the SSRC as evidence).
    /// Returns the plain length and the (sender) SSRC.
    fn admit(
        &self,
        latch: &Cell<Latch>,
        kind: Kind,
        seg: &mut [u8],
        at: Arrival,
        per_leg: bool,
        t: &mut Tally,
    ) -> Result<(usize, u32), DropReason> {
        self.screen(latch, at.from, at.now)?;
        let ssrc = match kind {
            Kind::Rtp => RtpPacket::new_checked(&*seg).map(|p| p.ssrc()),
            Kind::Rtcp => RtcpPacket::new_checked(&*seg).map(|p| p.sender_ssrc()),
        }
        .map_err(|_| DropReason::Malformed)?;
        let mut len = seg.len();
        if per_leg {
            if let Some(ctx) = self.srtp_in.borrow_mut().as_mut() {
                len = match kind {
                    Kind::Rtp => ctx.unprotect_rtp(seg),
                    Kind::Rtcp => ctx.unprotect_rtcp(seg),
                }
                .map_err(|_| DropReason::AuthFailure)?;
            }
        }
        let mut l = latch.get();
        let verdict = l.check(at.from, || {
            if per_leg || self.announced.contains(&ssrc) {
                Evidence::Strong // authenticated above, or an announced SSRC
            } else {
                Evidence::Weak
            }
        });
        latch.set(l);
        match verdict {
            Verdict::WrongSource => Err(DropReason::WrongSource),
            Verdict::Latched => {
                t.latched = true;
                Ok((len, ssrc))
            }
            Verdict::Accept => Ok((len, ssrc)),
        }
    }

    /// The tail toward this leg's party: re-protect with the relay's key in per_leg mode.
    fn seal(
        &self,
        kind: Kind,
        seg: &mut [u8],
        len: usize,
        per_leg: bool,
    ) -> Result<usize, DropReason> {
        if !per_leg {
            return Ok(len);
        }
        match self.srtp_out.borrow_mut().as_mut() {
            Some(ctx) => match kind {
                Kind::Rtp => ctx.protect_rtp(seg, len),
                Kind::Rtcp => ctx.protect_rtcp(seg, len),
            }
            .map_err(|_| DropReason::Malformed),
            None => Ok(len),
        }
    }
}

impl CallRt {
    /// One RTP packet from `party` on stream `si`, in place. `Ok(len)`: forward `len` bytes.
    fn on_rtp(
        &self,
        si: usize,
        party: Party,
        seg: &mut [u8],
        at: Arrival,
        t: &mut Tally,
    ) -> Result<usize, DropReason> {
        let now = at.now;
        let s = self.streams.get(si).ok_or(DropReason::Malformed)?;
        let leg = s.legs.get(party.index()).ok_or(DropReason::Malformed)?;
        let (len, ssrc) = leg.admit(&leg.rtp_latch, Kind::Rtp, seg, at, self.per_leg(), t)?;
        t.media += 1;
        if party == Party::Callee || !self.arbiter.may_forward(party) {
            return Err(DropReason::NotGranted);
        }
        let mut filter = s.caller_ssrcs.get();
        let admitted = filter.admit(ssrc);
        s.caller_ssrcs.set(filter);
        if !admitted {
            return Err(DropReason::UnknownSsrc);
        }
        if s.kind == MediaKind::Video && (!s.encrypted || self.per_leg()) {
            if let Ok(p) = RtpPacket::new_checked(seg.get(..len).unwrap_or_default()) {
                if h264_keyframe_start(p.payload()) {
                    s.last_keyframe.set(Some(now));
                }
            }
        }
        let peer = s
            .legs
            .get(party.peer().index())
            .ok_or(DropReason::Malformed)?;
        peer.seal(Kind::Rtp, seg, len, self.per_leg())
    }

    /// One RTCP datagram from `party` on stream `si`, in place.
    fn on_rtcp(
        &self,
        si: usize,
        party: Party,
        seg: &mut [u8],
        at: Arrival,
        muxed: bool,
        t: &mut Tally,
    ) -> Result<usize, DropReason> {
        let now = at.now;
        let s = self.streams.get(si).ok_or(DropReason::Malformed)?;
        let leg = s.legs.get(party.index()).ok_or(DropReason::Malformed)?;
        let cell = if muxed {
            &leg.rtp_latch
        } else {
            &leg.rtcp_latch
        };
        let (mut len, _) = leg.admit(cell, Kind::Rtcp, seg, at, self.per_leg(), t)?;
        // Where the relay can read RTCP (plain RTP, or decrypted per leg), look inside.
        if !s.encrypted || self.per_leg() {
            let body = seg.get_mut(..len).ok_or(DropReason::Malformed)?;
            if rtcp::validate_compound(body).is_err() {
                return Err(DropReason::Malformed);
            }
            if party == Party::Caller
                && rtcp::compound(body).any(|p| p.is_ok_and(|p| p.kind() == RtcpKind::Goodbye))
            {
                t.bye = true;
            }
            if party == Party::Callee && s.kind == MediaKind::Video {
                len = self.filter_keyframe_requests(s, body, now, t);
                if len == 0 {
                    return Ok(0); // every packet in it was dropped (and counted) above
                }
            }
        }
        let peer = s
            .legs
            .get(party.peer().index())
            .ok_or(DropReason::Malformed)?;
        peer.seal(Kind::Rtcp, seg, len, self.per_leg())
    }

    /// Removes PLI/FIR packets that are redundant (a keyframe just passed) or too frequent from a
    /// plain compound; returns the new length (0 when nothing is left).
    fn filter_keyframe_requests(
        &self,
        s: &StreamRt,
        buf: &mut [u8],
        now: Instant,
        t: &mut Tally,
    ) -> usize {
        let recent = |c: &Cell<Option<Instant>>, w: Duration| {
            c.get()
                .is_some_and(|at| now.saturating_duration_since(at) < w)
        };
        let (mut r, mut w) = (0usize, 0usize);
        let total = buf.len();
        let mut forwarded_request = false;
        while r < total {
            let Some(p) = buf.get(r..).and_then(|b| RtcpPacket::new_checked(b).ok()) else {
                break;
            };
            let plen = p.packet_len();
            let is_request = matches!(p.kind(), RtcpKind::Pli | RtcpKind::Fir);
            let keep = !is_request
                || !(recent(&s.last_keyframe, KEYFRAME_REDUNDANT_WINDOW)
                    || recent(&s.last_request, KEYFRAME_REQUEST_INTERVAL));
            if keep {
                if is_request {
                    forwarded_request = true;
                }
                if w != r {
                    buf.copy_within(r..r + plen, w);
                }
                w += plen;
            } else {
                t.drop(DropReason::RateLimited);
            }
            r += plen;
        }
        if forwarded_request {
            s.last_request.set(Some(now));
        }
        w
    }

    /// Asks the caller for a keyframe (PLI) on every video stream where the relay can sign
    /// RTCP, at most once per [`KEYFRAME_REQUEST_INTERVAL`].
    fn request_keyframe(&self, now: Instant) {
        for s in &self.streams {
            if s.kind != MediaKind::Video || (s.encrypted && !self.per_leg()) {
                continue;
            }
            if s.last_request
                .get()
                .is_some_and(|at| now.saturating_duration_since(at) < KEYFRAME_REQUEST_INTERVAL)
            {
                continue;
            }
            let Some(caller) = s.legs.first() else {
                continue;
            };
            let mut buf = [0u8; 64];
            let Ok(mut len) = rtcp::emit_pli(self.server_ssrc, self.video_ssrc, &mut buf) else {
                continue;
            };
            if self.per_leg() {
                match caller
                    .srtp_out
                    .borrow_mut()
                    .as_mut()
                    .map(|c| c.protect_rtcp(&mut buf, len))
                {
                    Some(Ok(l)) => len = l,
                    Some(Err(_)) => continue,
                    None => {}
                }
            }
            let (sock, dest) = caller.rtcp_path();
            if let (Some(dest), Some(bytes)) = (dest, buf.get(..len)) {
                let sent = sock.send(dest, bytes, len);
                if let Some(c) = self.counters.first() {
                    c.add_out(sent.packets, sent.bytes);
                }
                s.last_request.set(Some(now));
            }
        }
    }
}

enum Recv {
    Batch,
    WouldBlock,
    Error,
}

/// Receives and forwards what one socket has, batch by batch.
fn pump(call: &CallRt, si: usize, party: Party, rtcp_socket: bool) -> Recv {
    let Some(s) = call.streams.get(si) else {
        return Recv::Error;
    };
    let Some(leg) = s.legs.get(party.index()) else {
        return Recv::Error;
    };
    let Some(peer) = s.legs.get(party.peer().index()) else {
        return Recv::Error;
    };
    let sock = if rtcp_socket {
        match &leg.rtcp {
            Some(r) => r,
            None => return Recv::Error,
        }
    } else {
        &leg.rtp
    };
    SCRATCH.with_borrow_mut(|scratch| {
        let Scratch { bufs, metas, out } = scratch;
        let n = {
            let mut chunks = bufs.chunks_exact_mut(SLOT);
            let mut iovs: [IoSliceMut<'_>; BATCH_SIZE] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            match sock.io.try_io(Interest::READABLE, || {
                sock.state.recv((&sock.io).into(), &mut iovs, metas)
            }) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Recv::WouldBlock,
                Err(e) => {
                    debug!(call = %call.id, error = %e, "receive error");
                    return Recv::Error;
                }
            }
        };
        let now = Instant::now();
        let mut t = Tally::default();
        let dest = peer.rtp_latch.get().destination();
        out.clear();
        let mut coalesce = Coalescer {
            out,
            seg: 0,
            closed: false,
            max_segments: peer.rtp.state.max_gso_segments().max(1),
        };
        for (slot, meta) in bufs.chunks_exact_mut(SLOT).zip(metas.iter()).take(n) {
            let Some(data) = slot.get_mut(..meta.len) else {
                continue;
            };
            let stride = if meta.stride == 0 {
                meta.len
            } else {
                meta.stride
            };
            let (mut r, mut w) = (0usize, 0usize);
            let total = data.len();
            while r < total {
                let seg_len = stride.min(total - r);
                t.in_packets += 1;
                t.in_bytes += seg_len as u64;
                let Some(seg) = data.get_mut(r..r + seg_len) else {
                    break;
                };
                let is_rtcp = rtcp_socket || classify(seg) == PacketClass::Rtcp;
                let at = Arrival {
                    from: meta.addr,
                    now,
                };
                let verdict = if is_rtcp {
                    call.on_rtcp(si, party, seg, at, !rtcp_socket, &mut t)
                } else {
                    call.on_rtp(si, party, seg, at, &mut t)
                };
                match verdict {
                    Ok(0) => {}
                    Ok(len) if is_rtcp || len != seg_len => {
                        // RTCP (its own destination) or a changed size: sent on its own.
                        let (sock_out, dest) = if is_rtcp {
                            peer.rtcp_path()
                        } else {
                            (&peer.rtp, peer.rtp_latch.get().destination())
                        };
                        match (dest, seg.get(..len)) {
                            (Some(dest), Some(out)) => {
                                t.sent(sock_out.send(dest, out, len));
                            }
                            _ => t.drop(DropReason::WrongSource),
                        }
                    }
                    Ok(len) => {
                        if w != r {
                            data.copy_within(r..r + len, w);
                        }
                        w += len;
                    }
                    Err(reason) => t.drop(reason),
                }
                r += seg_len;
            }
            if w > 0 && total == stride {
                // One packet: gather it with its neighbours into one GSO send.
                match (dest, data.get(..w)) {
                    (Some(dest), Some(pkt)) => coalesce.push(pkt, &peer.rtp, dest, &mut t),
                    _ => t.drop(DropReason::WrongSource),
                }
            } else if w > 0 {
                // A GRO super-packet: forward it as it is, after what was gathered so far.
                if let Some(d) = dest {
                    coalesce.flush(&peer.rtp, d, &mut t);
                }
                match (dest, data.get(..w)) {
                    (Some(dest), Some(out)) => {
                        t.sent(peer.rtp.send(dest, out, stride));
                    }
                    _ => {
                        for _ in 0..w.div_ceil(stride) {
                            t.drop(DropReason::WrongSource);
                        }
                    }
                }
            }
        }
        if let Some(d) = dest {
            coalesce.flush(&peer.rtp, d, &mut t);
        }
        finish_batch(call, party, now, &t);
        Recv::Batch
    })
}

fn finish_batch(call: &CallRt, party: Party, now: Instant, t: &Tally) {
    if let Some(c) = call.counters.get(party.index()) {
        c.add_in(t.in_packets, t.in_bytes);
        c.add_drops(&t.drops);
        if t.latched {
            c.latches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            info!(call = %call.id, party = %party, "leg latched to a new source");
        }
    }
    if let Some(c) = call.counters.get(party.peer().index()) {
        c.add_out(t.out_packets, t.out_bytes);
    }
    if t.media > 0 {
        if let (Some(n), Some(at)) = (
            call.media_packets.get(party.index()),
            call.last_media.get(party.index()),
        ) {
            let before = n.get();
            n.set(before + t.media);
            at.set(Some(now));
            let wake = match party {
                Party::Caller => before == 0,
                Party::Callee => {
                    before / u64::from(CALLEE_MEDIA_WAKE_EVERY)
                        != (before + t.media) / u64::from(CALLEE_MEDIA_WAKE_EVERY)
                }
            };
            if wake {
                call.wake.notify_one();
            }
        }
    }
    if t.bye && party == Party::Caller {
        call.caller_bye.set(true);
        call.wake.notify_one();
    }
}

async fn media_task(call: Rc<CallRt>, si: usize, party: Party, rtcp_socket: bool) {
    loop {
        if call.closed.get() {
            return;
        }
        let Some(leg) = call.streams.get(si).and_then(|s| s.legs.get(party.index())) else {
            return;
        };
        let sock = match (&leg.rtcp, rtcp_socket) {
            (Some(r), true) => r,
            (None, true) => return,
            (_, false) => &leg.rtp,
        };
        tokio::select! {
            biased;
            _ = call.stop.notified() => return,
            r = sock.io.readable() => if r.is_err() { return },
        }
        for _ in 0..BATCHES_PER_WAKE {
            if call.closed.get() {
                return;
            }
            match pump(&call, si, party, rtcp_socket) {
                Recv::Batch => {}
                Recv::WouldBlock => break,
                Recv::Error => break, // e.g. ICMP-induced errors: the socket stays usable
            }
        }
    }
}

impl ControlRt {
    /// Source screen (a stranger to a known source is dropped, unknown sources are rate
    /// limited), SRTCP authentication when the channel has a key, then the latch. Returns the
    /// plain length.
    fn admit(&self, buf: &mut [u8], from: SocketAddr, now: Instant) -> Result<usize, DropReason> {
        screen(&self.latch, &self.strangers, from, now)?;
        let (len, authenticated) = match self.srtcp_in.borrow_mut().as_mut() {
            Some(ctx) => (
                ctx.unprotect_rtcp(buf)
                    .map_err(|_| DropReason::AuthFailure)?,
                true,
            ),
            None => (buf.len(), false),
        };
        let mut l = self.latch.get();
        let v = l.check(from, || {
            if authenticated {
                Evidence::Strong
            } else {
                Evidence::Weak
            }
        });
        self.latch.set(l);
        match v {
            Verdict::WrongSource => Err(DropReason::WrongSource),
            _ => Ok(len),
        }
    }
}

/// Receives one transmission control datagram from `party` (pends forever without a channel).
async fn recv_control(ctl: Option<&ControlRt>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match ctl {
        Some(c) => c.sock.io.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Drives one call until it is released, then cleans up.
async fn drive(call: Rc<CallRt>, shared: Arc<Shared>) {
    let mut tasks = Vec::new();
    for (si, s) in call.streams.iter().enumerate() {
        for party in [Party::Caller, Party::Callee] {
            tasks.push(tokio::task::spawn_local(media_task(
                call.clone(),
                si,
                party,
                false,
            )));
            if s.legs.get(party.index()).is_some_and(|l| l.rtcp.is_some()) {
                tasks.push(tokio::task::spawn_local(media_task(
                    call.clone(),
                    si,
                    party,
                    true,
                )));
            }
        }
    }
    let mut seen = [0u64; 2];
    let mut bye_seen = false;
    // Receive buffers only for the control channels the call has; the transmit list grows on
    // the rare occasions control messages go out (memory per idle call stays small).
    let control_buf = |i: usize| match call.control.get(i) {
        Some(Some(_)) => vec![0u8; CONTROL_MTU],
        _ => Vec::new(),
    };
    let mut bufs = [control_buf(0), control_buf(1)];
    let mut out = Vec::new();
    let mut requested_keyframe = false;
    // The first pass runs at once: acceptance queued Granted and the Notification.
    let mut first = true;
    loop {
        if call.closed.get() {
            break;
        }
        let deadline = shared.next_timeout(&call.id);
        let sleep_until = deadline.map_or_else(
            || tokio::time::Instant::now() + Duration::from_secs(3600),
            tokio::time::Instant::from_std,
        );
        let [b0, b1] = &mut bufs;
        let mut datagram: Option<(Party, usize, SocketAddr)> = None;
        if !std::mem::take(&mut first) {
            tokio::select! {
              biased;
              _ = call.stop.notified() => break,
              _ = call.wake.notified() => {}
              _ = tokio::time::sleep_until(sleep_until) => {}
              r = recv_control(call.control[0].as_ref(), b0) => if let Ok((n, from)) = r { datagram = Some((Party::Caller, n, from)) },
              r = recv_control(call.control[1].as_ref(), b1) => if let Ok((n, from)) = r { datagram = Some((Party::Callee, n, from)) },
            }
        }
        let now = Instant::now();
        // A control datagram: source check and SRTCP before the call sees it.
        let mut control_in: Option<(Party, usize)> = None;
        if let Some((party, n, from)) = datagram {
            let ctl = call.control.get(party.index()).and_then(Option::as_ref);
            let buf = bufs.get_mut(party.index()).and_then(|b| b.get_mut(..n));
            if let (Some(ctl), Some(buf), Some(counters)) =
                (ctl, buf, call.counters.get(party.index()))
            {
                counters.add_in(1, n as u64);
                match ctl.admit(buf, from, now) {
                    Ok(len) => control_in = Some((party, len)),
                    Err(r) => {
                        let mut drops = [0u64; DROP_KINDS];
                        if let Some(d) = drops.get_mut(r as usize) {
                            *d += 1;
                        }
                        counters.add_drops(&drops);
                    }
                }
            }
            if control_in.is_none() {
                // Only a dropped datagram woke us (the select is biased: no timer or wake-up
                // was pending): do not take the engine's control lock for it.
                continue;
            }
        }
        // Media activity since the last look.
        let mut activity = [(0u32, None); 2];
        for party in [Party::Caller, Party::Callee] {
            let i = party.index();
            let (Some(n), Some(at), Some(s)) = (
                call.media_packets.get(i),
                call.last_media.get(i),
                seen.get_mut(i),
            ) else {
                continue;
            };
            let delta = n.get() - *s;
            *s = n.get();
            if let Some(a) = activity.get_mut(i) {
                *a = (delta.min(u64::from(u32::MAX)) as u32, at.get());
            }
        }
        let bye = call.caller_bye.get() && !bye_seen;
        bye_seen |= bye;
        out.clear();
        let control_bytes = control_in.and_then(|(p, len)| {
            bufs.get(p.index())
                .and_then(|b| b.get(..len))
                .map(|b| (p, b))
        });
        let step = shared.step_call(&call.id, now, activity, bye, control_bytes, &mut out);
        // Send what the call polled out.
        for (party, msg) in &out {
            let Some(ctl) = call.control.get(party.index()).and_then(Option::as_ref) else {
                continue;
            };
            let Some(dest) = ctl.latch.get().destination() else {
                continue;
            };
            let mut buf = [0u8; 1500];
            let Some(b) = buf.get_mut(..msg.len()) else {
                continue;
            };
            b.copy_from_slice(msg);
            let mut len = msg.len();
            if let Some(ctx) = ctl.srtcp_out.borrow_mut().as_mut() {
                match ctx.protect_rtcp(&mut buf, len) {
                    Ok(l) => len = l,
                    Err(e) => {
                        warn!(call = %call.id, error = %e, "cannot protect a control message");
                        continue;
                    }
                }
            }
            if let Some(b) = buf.get(..len) {
                let sent = ctl.sock.send(dest, b, len);
                if let Some(c) = call.counters.get(party.index()) {
                    c.add_out(sent.packets, sent.bytes);
                }
            }
        }
        match step {
            Step::Running { granted } => {
                if granted && !requested_keyframe {
                    requested_keyframe = true;
                    call.request_keyframe(now);
                }
            }
            Step::Gone => break,
        }
    }
    call.close();
    for t in tasks {
        let _ = t.await;
    }
    let ports = call.ports.clone();
    let id = call.id.clone();
    drop(call); // closes every socket of the call
    shared.free_ports(&id, &ports);
}

/// What the driver learned from stepping the call.
pub(crate) enum Step {
    Running { granted: bool },
    Gone,
}

/// The worker thread's main loop.
pub(crate) fn run(mut rx: mpsc::UnboundedReceiver<WorkerCmd>, shared: Arc<Shared>, index: usize) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            warn!(worker = index, error = %e, "cannot start a worker runtime");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let calls: Rc<RefCell<HashMap<Arc<str>, Rc<CallRt>>>> = Rc::default();
        let mut drivers = Vec::new();
        if index == 0 {
            // Offered calls have no driver yet: run their offer timeout from here.
            let shared = shared.clone();
            tokio::task::spawn_local(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    shared.housekeep(Instant::now());
                }
            });
        }
        while let Some(cmd) = rx.recv().await {
            match cmd {
                WorkerCmd::Start(setup) => {
                    let id = setup.id.clone();
                    let ports = setup.ports.clone();
                    match CallRt::build(*setup) {
                        Ok(call) => {
                            let call = Rc::new(call);
                            calls.borrow_mut().insert(id.clone(), call.clone());
                            let shared = shared.clone();
                            let calls = calls.clone();
                            drivers.push(tokio::task::spawn_local(async move {
                                drive(call, shared).await;
                                calls.borrow_mut().remove(&id);
                            }));
                        }
                        Err(e) => {
                            warn!(call = %id, error = %e, "cannot register the call's sockets");
                            shared.fail_call(&id, &ports);
                        }
                    }
                    drivers.retain(|d: &tokio::task::JoinHandle<()>| !d.is_finished());
                }
                WorkerCmd::Stop(id) => {
                    if let Some(c) = calls.borrow().get(&id) {
                        c.close();
                    }
                }
                WorkerCmd::Shutdown => {
                    for c in calls.borrow().values() {
                        c.close();
                    }
                    break;
                }
            }
        }
        for d in drivers {
            let _ = d.await;
        }
    });
}

impl From<SrtpError> for DropReason {
    fn from(_: SrtpError) -> Self {
        DropReason::AuthFailure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_keyframes() {
        assert!(h264_keyframe_start(&[0x65, 0x88]));
        assert!(h264_keyframe_start(&[0x67, 0x42]));
        assert!(!h264_keyframe_start(&[0x41, 0x9a]));
        assert!(
            h264_keyframe_start(&[0x78, 0x00, 0x10, 0x67]),
            "STAP-A starting with SPS"
        );
        assert!(h264_keyframe_start(&[0x7c, 0x85]), "FU-A start of IDR");
        assert!(!h264_keyframe_start(&[0x7c, 0x05]), "FU-A continuation");
        assert!(!h264_keyframe_start(&[]));
    }

    #[test]
    fn ssrc_filter_adopts_once_or_enforces() {
        let mut f = SsrcFilter::new(&[]);
        assert!(f.admit(7));
        assert!(f.admit(7));
        assert!(!f.admit(8));
        let mut f = SsrcFilter::new(&[1, 2, 2]);
        assert!(f.admit(2) && f.admit(1));
        assert!(!f.admit(3));
    }
}

/// The per-packet forward path without the syscalls, for benchmarks (`benches/forward.rs`).
#[doc(hidden)]
pub mod bench_support {
    use super::*;

    /// A one-stream video call (caller → callee, granted) with real but unused sockets, and
    /// the exact judgement the worker applies to each caller RTP packet: source screen, SRTP
    /// (per_leg), latch, arbiter, SSRC filter, keyframe scan, re-protection.
    pub struct ForwardPath {
        call: CallRt,
        from: SocketAddr,
        tally: Tally,
    }

    impl ForwardPath {
        /// Builds the call. Must run inside a tokio runtime context (`Runtime::enter`).
        /// `keys`: per_leg mode with (caller's key, relay's key toward the callee).
        pub fn new(ssrc: u32, keys: Option<(MasterKey, MasterKey)>) -> io::Result<ForwardPath> {
            let bind = || std::net::UdpSocket::bind("127.0.0.1:0");
            let from = SocketAddr::from(([127, 0, 0, 1], 5000));
            let to = SocketAddr::from(([127, 0, 0, 1], 6000));
            let per_leg = keys.is_some();
            let (caller_in, callee_out) = keys.unzip();
            let leg = |remote, srtp_in, srtp_out| -> io::Result<LegSetup> {
                Ok(LegSetup {
                    rtp: bind()?,
                    rtcp: None,
                    remote_rtp: Some(remote),
                    remote_rtcp: Some(remote),
                    announced: vec![ssrc],
                    srtp_in,
                    srtp_out,
                })
            };
            let arbiter = Arc::new(Arbiter::new());
            let _ = arbiter.grant(Party::Caller);
            let call = CallRt::build(CallSetup {
                id: "bench".into(),
                arbiter,
                security: if per_leg {
                    MediaSecurity::PerLeg
                } else {
                    MediaSecurity::EndToEnd
                },
                streams: vec![StreamSetup {
                    kind: MediaKind::Video,
                    encrypted: per_leg,
                    legs: [leg(from, caller_in, None)?, leg(to, None, callee_out)?],
                    caller_ssrcs: vec![ssrc],
                }],
                control: [None, None],
                counters: [Arc::default(), Arc::default()],
                ports: Vec::new(),
                server_ssrc: 1,
                video_ssrc: ssrc,
                latch_after: 5,
            })?;
            Ok(ForwardPath {
                call,
                from,
                tally: Tally::default(),
            })
        }

        /// Judges one caller RTP packet in place; `Ok(len)`: it would be sent with `len` bytes.
        #[inline]
        pub fn forward(&mut self, pkt: &mut [u8], now: Instant) -> Result<usize, DropReason> {
            self.judge_from(pkt, self.from, now)
        }

        /// The same judgement for a packet from `from` (a flooder, a spoofer): what each junk
        /// packet costs the worker once the kernel has handed it over.
        #[inline]
        pub fn judge_from(
            &mut self,
            pkt: &mut [u8],
            from: SocketAddr,
            now: Instant,
        ) -> Result<usize, DropReason> {
            let at = Arrival { from, now };
            self.call.on_rtp(0, Party::Caller, pkt, at, &mut self.tally)
        }
    }
}
