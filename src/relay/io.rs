//! The socket layer: batched UDP receive (`recvmmsg` with GRO, through quinn-udp) and the GRO
//! split, GSO sends with coalescing of equal-size packets, and a level-triggered epoll poller
//! with a cross-thread waker. Used by the relay's workers and by the load generator.
//!
//! **Drained queues.** A receive that returns fewer datagrams than there are slots has emptied
//! the socket's queue at that instant; the poller is level-triggered, so a worker goes back to
//! `epoll_wait` instead of paying another `recvmmsg` that would only say `EAGAIN`.

use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};
use rustix::event::{epoll, eventfd, EventfdFlags};
use rustix::fd::{AsFd, OwnedFd};
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// Receive buffer per batch slot: room for a GRO super-packet.
pub const SLOT: usize = 64 * 1024;
/// Largest GSO send (UDP payload limit, with room for headers).
pub const GSO_MAX_BYTES: usize = 65_000;

/// A non-blocking UDP socket with quinn-udp's batched I/O state.
#[derive(Debug)]
pub struct UdpSock {
    sock: UdpSocket,
    state: UdpSocketState,
    /// The address it is bound to, read once (it does not change: the relay's sockets are
    /// bound before they are wrapped and never connected).
    local: Option<SocketAddr>,
}

/// What one [`UdpSock::send`] put on the wire.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams the kernel took.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Datagrams the kernel refused (send buffer full, unreachable).
    pub failed: u64,
}

impl UdpSock {
    /// Wraps a bound socket (made non-blocking).
    pub fn new(sock: UdpSocket) -> io::Result<UdpSock> {
        sock.set_nonblocking(true)?;
        let state = UdpSocketState::new((&sock).into())?;
        let local = sock.local_addr().ok();
        Ok(UdpSock { sock, state, local })
    }

    /// The socket.
    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// The address it is bound to (no system call: read when it was wrapped).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// Segments one GSO send may carry (1 without GSO).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments().max(1)
    }

    /// Sends `buf` as segments of `stride` bytes (one GSO `sendmsg` per run of up to
    /// [`Self::max_gso_segments`]) and says what went out.
    pub fn send(&self, dest: SocketAddr, buf: &[u8], stride: usize) -> Sent {
        send_segments(
            &self.state,
            &self.sock,
            dest,
            buf,
            stride,
            self.max_gso_segments(),
            |_| {},
        )
    }

    /// Receives up to [`BATCH_SIZE`] datagrams (each possibly a GRO super-packet) into `batch`.
    /// `Ok(n)` with `n < batch.slots()` means the queue was drained.
    pub fn recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let RecvBatch { bufs, metas, n } = batch;
        *n = 0;
        let mut chunks = bufs.chunks_exact_mut(SLOT);
        let mut iovs: [IoSliceMut<'_>; BATCH_SIZE] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        let got = self.state.recv((&self.sock).into(), &mut iovs, metas)?;
        *n = got;
        Ok(got)
    }
}

/// Receive scratch: [`BATCH_SIZE`] slots of [`SLOT`] bytes. One per thread, reused for every
/// socket (no allocation per packet).
pub struct RecvBatch {
    bufs: Vec<u8>,
    metas: [RecvMeta; BATCH_SIZE],
    n: usize,
}

impl core::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecvBatch").field("n", &self.n).finish()
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![0; BATCH_SIZE * SLOT],
            metas: [RecvMeta::default(); BATCH_SIZE],
            n: 0,
        }
    }
}

impl RecvBatch {
    /// Datagrams a receive may return.
    pub const fn slots(&self) -> usize {
        BATCH_SIZE
    }

    /// The datagrams of the last receive: source, bytes (a GRO super-packet is several
    /// segments of `stride` bytes, the last possibly shorter) and the segment size.
    pub fn datagrams(&mut self) -> impl Iterator<Item = (SocketAddr, &mut [u8], usize)> + '_ {
        self.bufs
            .chunks_exact_mut(SLOT)
            .zip(self.metas.iter())
            .take(self.n)
            .filter_map(|(slot, m)| {
                let data = slot.get_mut(..m.len)?;
                let stride = if m.stride == 0 { m.len } else { m.stride };
                Some((m.addr, data, stride.max(1)))
            })
    }
}

/// Gathers single-packet datagrams of one size going to one destination into one GSO send: a
/// sender that does not use GSO itself (a camera, ffmpeg) still costs one `sendmsg` per run of
/// equal-size packets (a video frame) instead of one per packet.
#[derive(Debug)]
pub struct Coalescer {
    out: Vec<u8>,
    seg: usize,
    closed: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer {
            out: Vec::with_capacity(GSO_MAX_BYTES),
            seg: 0,
            closed: false,
        }
    }
}

impl Coalescer {
    /// Adds one packet for `dest` through `sock`; sends what was gathered first when it cannot
    /// join the run.
    pub fn push(&mut self, pkt: &[u8], sock: &UdpSock, dest: SocketAddr) -> Sent {
        let mut sent = Sent::default();
        let fits = !self.out.is_empty()
            && !self.closed
            && pkt.len() <= self.seg
            && self.out.len() + pkt.len() <= GSO_MAX_BYTES
            && self.out.len() / self.seg.max(1) < sock.max_gso_segments();
        if !fits {
            sent = self.flush(sock, dest);
            self.seg = pkt.len();
        }
        // A shorter packet may only end a GSO run.
        self.closed = pkt.len() < self.seg;
        self.out.extend_from_slice(pkt);
        sent
    }

    /// Sends what was gathered.
    pub fn flush(&mut self, sock: &UdpSock, dest: SocketAddr) -> Sent {
        if self.out.is_empty() {
            return Sent::default();
        }
        let sent = sock.send(dest, &self.out, self.seg);
        self.out.clear();
        self.closed = false;
        sent
    }
}

/// A level-triggered epoll instance: each registered socket carries a `u64` token.
#[derive(Debug)]
pub struct Poller {
    ep: OwnedFd,
}

/// The ready list one [`Poller::wait`] fills (kept by the waiting thread).
pub struct Events(Vec<epoll::Event>);

impl Events {
    /// Room for `capacity` ready sockets per wait.
    pub fn with_capacity(capacity: usize) -> Events {
        Events(Vec::with_capacity(capacity.max(1)))
    }

    /// The tokens of the ready sockets.
    pub fn tokens(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().map(|e| e.data.u64())
    }

    /// How many are ready.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl core::fmt::Debug for Events {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.tokens()).finish()
    }
}

impl Poller {
    /// A poller.
    pub fn new() -> io::Result<Poller> {
        Ok(Poller {
            ep: epoll::create(epoll::CreateFlags::CLOEXEC)?,
        })
    }

    /// Watches `fd` for readability (level-triggered).
    pub fn add(&self, fd: impl AsFd, token: u64) -> io::Result<()> {
        epoll::add(
            &self.ep,
            fd,
            epoll::EventData::new_u64(token),
            epoll::EventFlags::IN,
        )?;
        Ok(())
    }

    /// Stops watching `fd` (closing it does too).
    pub fn delete(&self, fd: impl AsFd) -> io::Result<()> {
        epoll::delete(&self.ep, fd)?;
        Ok(())
    }

    /// Waits up to `timeout` (forever with `None`) and fills `events` with the ready sockets.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        let ts = timeout.map(|d| rustix::event::Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        events.0.clear();
        match epoll::wait(
            &self.ep,
            rustix::buffer::spare_capacity(&mut events.0),
            ts.as_ref(),
        ) {
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Wakes a thread blocked in [`Poller::wait`] from any thread (an eventfd).
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    /// A waker; register [`Self::fd`] with the poller.
    pub fn new() -> io::Result<Waker> {
        Ok(Waker {
            fd: eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?,
        })
    }

    /// The descriptor to watch.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Makes the poller's next (or current) wait return.
    pub fn wake(&self) {
        // EAGAIN only when the counter is saturated: the poller is awake then anyway.
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }

    /// Clears the wake-up (after the poller reported it).
    pub fn drain(&self) {
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut b);
    }
}

/// Sends `buf` to `dest` from `sock` as segments of `stride` bytes, `per_send` of them per
/// `sendmsg` (GSO when more than one); `refused` sees the error of each `sendmsg` the kernel
/// refused. Shared by [`UdpSock::send`] and the load generator's senders (blocking sockets).
pub fn send_segments(
    state: &UdpSocketState,
    sock: &UdpSocket,
    dest: SocketAddr,
    buf: &[u8],
    stride: usize,
    per_send: usize,
    mut refused: impl FnMut(io::Error),
) -> Sent {
    let stride = stride.max(1);
    let mut r = Sent::default();
    for chunk in buf.chunks(stride * per_send.max(1)) {
        let segments = chunk.len().div_ceil(stride) as u64;
        let t = Transmit {
            destination: dest,
            ecn: None,
            contents: chunk,
            segment_size: (chunk.len() > stride).then_some(stride),
            src_ip: None,
        };
        match state.try_send(sock.into(), &t) {
            Ok(()) => {
                r.packets += segments;
                r.bytes += chunk.len() as u64;
            }
            Err(e) => {
                r.failed += segments;
                refused(e);
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").unwrap()
    }

    #[test]
    fn a_short_batch_means_the_queue_is_drained() {
        let rx = UdpSock::new(bind()).unwrap();
        let tx = bind();
        let to = rx.socket().local_addr().unwrap();
        for i in 0..3u8 {
            tx.send_to(&[i; 100], to).unwrap();
        }
        let poller = Poller::new().unwrap();
        let mut ev = Events::with_capacity(8);
        poller.add(rx.socket(), 7).unwrap();
        poller.wait(&mut ev, Some(Duration::from_secs(2))).unwrap();
        assert_eq!(ev.tokens().collect::<Vec<_>>(), [7]);
        let mut batch = RecvBatch::default();
        let mut got = 0;
        while got < 3 {
            let n = rx.recv(&mut batch).unwrap();
            got += batch
                .datagrams()
                .map(|(_, d, s)| d.len().div_ceil(s))
                .sum::<usize>();
            assert!(n < batch.slots());
        }
        assert_eq!(got, 3);
        poller
            .wait(&mut ev, Some(Duration::from_millis(10)))
            .unwrap();
        assert!(ev.is_empty(), "level-triggered: nothing left to report");
    }

    #[test]
    fn the_waker_wakes_and_clears() {
        let poller = Poller::new().unwrap();
        let mut ev = Events::with_capacity(8);
        let w = Waker::new().unwrap();
        poller.add(w.fd(), 1).unwrap();
        w.wake();
        poller.wait(&mut ev, None).unwrap();
        assert_eq!(ev.len(), 1);
        w.drain();
        poller
            .wait(&mut ev, Some(Duration::from_millis(5)))
            .unwrap();
        assert!(ev.is_empty());
    }

    #[test]
    fn equal_packets_coalesce_into_one_send() {
        let tx = UdpSock::new(bind()).unwrap();
        let rx = bind();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let to = rx.local_addr().unwrap();
        let mut c = Coalescer::default();
        let mut sent = Sent::default();
        for _ in 0..4 {
            sent.packets += c.push(&[1; 200], &tx, to).packets;
        }
        sent.packets += c.push(&[2; 50], &tx, to).packets; // a shorter last packet joins
        sent.packets += c.flush(&tx, to).packets;
        assert_eq!(sent.packets, 5);
        let mut buf = [0u8; 300];
        let lens: Vec<usize> = (0..5).map(|_| rx.recv(&mut buf).unwrap()).collect();
        assert_eq!(lens, [200, 200, 200, 200, 50]);
    }
}
