//! Watching a call: a copy of one stream's media, as the relay forwards it, handed to a
//! consumer outside the worker (a WebRTC viewer in a browser, `crate::webrtc`, or a server
//! that links the engine and wants the pictures).
//!
//! Only a call the relay decrypts can be watched (`per_leg`): in `end_to_end` the relay holds
//! no media key, and a watcher would need one. [`Engine::watch_call`](super::Engine::watch_call)
//! refuses the others with [`SetupError::WrongState`](crate::control::call::SetupError).
//!
//! The worker never waits for a watcher. Every RTP packet of the watched stream that passed
//! every rule (the granted transmitter's, plain) is copied into a fresh buffer and handed over
//! with `try_send` on a bounded channel; a full channel drops the copy and counts it
//! ([`Watch::dropped`]), and the call's own media goes on. A watcher leaves by dropping its
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
}

impl Watch {
    /// Copies dropped because the channel was full (the watcher did not keep up).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The worker's side of a [`Watch`], held by the call's rules.
#[derive(Debug)]
pub(crate) struct WatchSink {
    kind: MediaKind,
    /// The stream, once the worker found it.
    pub(crate) stream: usize,
    tx: Sender<WatchedPacket>,
    dropped: Arc<AtomicU64>,
}

impl WatchSink {
    /// A watcher of the call's first `kind` stream with room for `capacity` packets, and its
    /// sink (the stream is set by the worker, [`Watch::stream`] from what it replies).
    pub(crate) fn pair(
        kind: MediaKind,
        capacity: usize,
    ) -> (WatchSink, Receiver<WatchedPacket>, Arc<AtomicU64>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let sink = WatchSink {
            kind,
            stream: usize::MAX,
            tx,
            dropped: dropped.clone(),
        };
        (sink, rx, dropped)
    }

    /// The kind of stream asked for.
    pub(crate) fn kind(&self) -> &MediaKind {
        &self.kind
    }

    /// Hands a copy of `rtp` over. `false`: the watcher is gone (forget the sink).
    pub(crate) fn offer(&self, at: Instant, rtp: &[u8]) -> bool {
        let copy = WatchedPacket {
            at,
            rtp: rtp.to_vec(),
        };
        match self.tx.try_send(copy) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
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
    let (sink, rx, dropped) = WatchSink::pair(kind, capacity);
    let cmd = move |id, reply| super::worker::Cmd::Watch(id, Box::new(sink), reply);
    (cmd, move |stream| watch(stream, rx, dropped))
}

/// Makes the watcher's side from its parts and the stream the worker found.
pub(crate) fn watch(
    stream: WatchedStream,
    packets: Receiver<WatchedPacket>,
    dropped: Arc<AtomicU64>,
) -> Watch {
    Watch {
        stream,
        packets,
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // a time to stamp the copies with
    fn a_full_channel_drops_and_counts_and_a_gone_watcher_is_said() {
        let (sink, rx, dropped) = WatchSink::pair(MediaKind::Video, 2);
        let w = watch(
            WatchedStream {
                index: 0,
                kind: MediaKind::Video,
                encoding: Some("H264".into()),
                clock_rate: 90_000,
                max_transmitters: 1,
            },
            rx,
            dropped,
        );
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
}
