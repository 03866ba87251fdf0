//! Watching a call: a copy of one stream's media, as the relay forwards it, handed to a
//! consumer outside the worker (a WebRTC viewer in a browser, `crate::webrtc`, or a server
//! that links the engine and wants the pictures).
//!
//! Only a call the relay decrypts can be watched (`per_leg`): in `end_to_end` the relay holds
//! no media key, and a watcher would need one. [`Engine::watch_call`](super::Engine::watch_call)
//! refuses the others with [`SetupError::WrongState`](crate::control::call::SetupError).
//!
//! The worker never waits for a watcher. Every RTP packet of the watched stream that passed
//! every rule (the granted transmitter's, plain) is copied into a buffer and handed over with
//! `try_send` on a bounded channel; a full channel drops the copy and counts it
//! ([`Watch::dropped`]), and the call's own media goes on. The buffers come from a small pool
//! the watcher gives them back to ([`Watch::recycle`]): a watcher that does so costs the
//! worker no allocation per packet, one that does not costs one, as a fresh copy would. A watcher leaves by dropping its
//! [`Watch`]: the worker forgets it at the next packet. A watched call is never put in the
//! kernel fast path (the kernel would forward around the copy).

use crate::sdp::MediaKind;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// One RTP packet of a watched stream, plain, as the relay forwarded it.
#[derive(Debug, Clone)]
pub struct WatchedPacket {
    /// When the relay received it (the batch's time).
    pub at: Instant,
    /// The RTP packet (header and payload), decrypted.
    pub rtp: Vec<u8>,
}

/// What a watched stream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedStream {
    /// The stream's index among the call's streams.
    pub index: usize,
    /// Audio or video.
    pub kind: MediaKind,
    /// The encoding name of its first format (`H264`, `VP8`, ...), if its SDP named it.
    pub encoding: Option<String>,
    /// Its RTP clock rate in Hz (0: unknown).
    pub clock_rate: u32,
    /// How many members may transmit at once (the group's Cx; 1 in a one-to-one call): with
    /// more than one, the copies interleave several transmitters' packets.
    pub max_transmitters: u8,
}

/// A watcher of one stream of a call ([`Engine::watch_call`](super::Engine::watch_call)).
/// Dropping it stops the copies.
#[derive(Debug)]
pub struct Watch {
    /// The stream.
    pub stream: WatchedStream,
    /// The copies, in the order the relay forwarded them. The channel closes when the call
    /// ends.
    pub packets: Receiver<WatchedPacket>,
    dropped: Arc<AtomicU64>,
    spare: Sender<Vec<u8>>,
}

impl Watch {
    /// Copies dropped because the channel was full (the watcher did not keep up).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Gives a copy's buffer back for the next one, once done with it: the worker then copies
    /// into it instead of allocating. Never blocks (a full pool lets the buffer go).
    pub fn recycle(&self, p: WatchedPacket) {
        let _ = self.spare.try_send(p.rtp);
    }
}

/// Buffers made ready for a watcher's copies when it starts (more are made as needed, up to
/// the channel's capacity, and kept once given back).
const SPARE_BUFFERS: usize = 64;

/// Room each buffer is made with: a packet that does not fit grows it (once).
const BUFFER_BYTES: usize = 2048;

/// The worker's side of a [`Watch`], held by the call's rules.
#[derive(Debug)]
pub(crate) struct WatchSink {
    kind: MediaKind,
    /// The stream, once the worker found it.
    pub(crate) stream: usize,
    tx: Sender<WatchedPacket>,
    dropped: Arc<AtomicU64>,
    /// Buffers to copy into ([`Watch::recycle`] gives them back), and the way back for a
    /// copy the channel had no room for.
    spare: (Sender<Vec<u8>>, Receiver<Vec<u8>>),
}

/// The watcher's parts [`WatchSink::pair`] makes beside the sink.
pub(crate) type WatcherParts = (Receiver<WatchedPacket>, Arc<AtomicU64>, Sender<Vec<u8>>);

impl WatchSink {
    /// A watcher of the call's first `kind` stream with room for `capacity` packets, and its
    /// sink (the stream is set by the worker, [`Watch::stream`] from what it replies).
    pub(crate) fn pair(kind: MediaKind, capacity: usize) -> (WatchSink, WatcherParts) {
        let capacity = capacity.max(1);
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let spare = crossbeam_channel::bounded(capacity);
        for _ in 0..capacity.min(SPARE_BUFFERS) {
            let _ = spare.0.try_send(Vec::with_capacity(BUFFER_BYTES));
        }
        let dropped = Arc::new(AtomicU64::new(0));
        let back = spare.0.clone();
        let sink = WatchSink {
            kind,
            stream: usize::MAX,
            tx,
            dropped: dropped.clone(),
            spare,
        };
        (sink, (rx, dropped, back))
    }

    /// The kind of stream asked for.
    pub(crate) fn kind(&self) -> &MediaKind {
        &self.kind
    }

    /// Hands a copy of `rtp` over. `false`: the watcher is gone (forget the sink).
    pub(crate) fn offer(&self, at: Instant, rtp: &[u8]) -> bool {
        let mut buf = self
            .spare
            .1
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BUFFER_BYTES.max(rtp.len())));
        buf.clear();
        buf.extend_from_slice(rtp);
        match self.tx.try_send(WatchedPacket { at, rtp: buf }) {
            Ok(()) => true,
            Err(TrySendError::Full(p)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                let _ = self.spare.0.try_send(p.rtp);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// The worker command that adds a watcher of the call's first `kind` stream, and what makes
/// the [`Watch`] from the worker's reply.
#[allow(clippy::type_complexity)]
pub(crate) fn command(
    kind: MediaKind,
    capacity: usize,
) -> (
    impl FnOnce(
        Arc<str>,
        super::worker::Reply<Result<WatchedStream, crate::control::call::SetupError>>,
    ) -> super::worker::Cmd,
    impl FnOnce(WatchedStream) -> Watch,
) {
    let (sink, parts) = WatchSink::pair(kind, capacity);
    let cmd = move |id, reply| super::worker::Cmd::Watch(id, Box::new(sink), reply);
    (cmd, move |stream| watch(stream, parts))
}

/// Makes the watcher's side from its parts and the stream the worker found.
pub(crate) fn watch(stream: WatchedStream, (packets, dropped, spare): WatcherParts) -> Watch {
    Watch {
        stream,
        packets,
        dropped,
        spare,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> WatchedStream {
        WatchedStream {
            index: 0,
            kind: MediaKind::Video,
            encoding: Some("H264".into()),
            clock_rate: 90_000,
            max_transmitters: 1,
        }
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a time to stamp the copies with
    fn a_full_channel_drops_and_counts_and_a_gone_watcher_is_said() {
        let (sink, parts) = WatchSink::pair(MediaKind::Video, 2);
        let w = watch(stream(), parts);
        let now = Instant::now();
        for i in 0..5u8 {
            assert!(sink.offer(now, &[0x80, 96, 0, i]));
        }
        assert_eq!(w.dropped(), 3);
        let got: Vec<u8> = w.packets.try_iter().map(|p| p.rtp[3]).collect();
        assert_eq!(got, [0, 1]);
        drop(w);
        assert!(!sink.offer(now, &[0x80, 96, 0, 9]));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a time to stamp the copies with
    fn recycled_buffers_carry_the_next_copies() {
        let (sink, parts) = WatchSink::pair(MediaKind::Video, 2);
        let w = watch(stream(), parts);
        let now = Instant::now();
        let mut buffers = std::collections::HashSet::new();
        for i in 0..50u8 {
            let pkt = [0x80, 96, 0, i, 7, 7, 7, 7];
            assert!(sink.offer(now, &pkt));
            let p = w.packets.try_recv().expect("the copy");
            assert_eq!(p.rtp, pkt, "the copy holds this packet only");
            buffers.insert(p.rtp.as_ptr() as usize);
            w.recycle(p);
        }
        // The two made at the start go round; none was made per packet.
        assert_eq!(buffers.len(), 2, "{buffers:?}");
    }
}
