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

use super::peer::{payload_params, video_added, Peer, Step};
use crate::relay::{Engine, Watch, WatchedPacket};
use crossbeam_channel::{select, Receiver};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::format::Codec;
use str0m::media::Mid;
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::Event;

/// Keeps the browser's track continuous across transmitters: each new SSRC's sequence
/// numbers and timestamps are shifted to follow the last ones written, the timestamps by the
/// wall-clock time between the two. Only the payload type an SSRC started with passes (a
/// second format would be mislabelled).
///
/// One source at a time. Where one member transmits at a time (a one-to-one call, a group
/// with Cx = 1), the arbiter lets only the granted transmitter's media through, so a new SSRC
/// with the same payload type is the next transmitter and takes the track at once. Otherwise
/// (a group with Cx > 1 interleaves transmitters; another payload type under its own SSRC is
/// RTX or a second format) the current source keeps the track until it has been silent for
/// [`SOURCE_IDLE`].
#[derive(Debug)]
pub(crate) struct Rewriter {
    /// The stream's RTP clock rate (Hz).
    clock_rate: u32,
    /// Only one transmitter's media passes at a time.
    one_at_a_time: bool,
    /// The SSRC being written, its payload type, and when its last packet came.
    source: Option<(u32, u8, Instant)>,
    seq_shift: u16,
    ts_shift: u32,
    /// The last sequence number written, extended to 64 bits, and its 16 bits.
    last_seq: Option<(u64, u16)>,
    last_ts: u32,
}

/// How long the source being written must be silent before another may take the track.
pub(crate) const SOURCE_IDLE: Duration = Duration::from_millis(300);

impl Rewriter {
    /// A rewriter for a stream whose clock runs at `clock_rate` Hz (0: 90 kHz, video's) on
    /// which up to `max_transmitters` transmit at once.
    pub(crate) fn new(clock_rate: u32, max_transmitters: u8) -> Self {
        Rewriter {
            clock_rate: if clock_rate == 0 { 90_000 } else { clock_rate },
            one_at_a_time: max_transmitters <= 1,
            source: None,
            seq_shift: 0,
            ts_shift: 0,
            last_seq: None,
            last_ts: 0,
        }
    }

    /// The sequence number (extended) and timestamp to write a packet of `ssrc` that came at
    /// `at` with, and whether it is a new source. `None`: not written (another source holds
    /// the track, or another payload type).
    pub(crate) fn map(
        &mut self,
        ssrc: u32,
        pt: u8,
        (seq, ts): (u16, u32),
        at: Instant,
    ) -> Option<(u64, u32, bool)> {
        let switched = match self.source {
            Some((s, p, _)) if s == ssrc => {
                if p != pt {
                    return None;
                }
                false
            }
            Some((_, p, last))
                if !(self.one_at_a_time && p == pt)
                    && at.saturating_duration_since(last) < SOURCE_IDLE =>
            {
                return None
            }
            _ => {
                let (next_seq, next_ts) = match (self.last_seq, self.source) {
                    (Some((_, s16)), Some((_, _, last))) => {
                        let gap = at.saturating_duration_since(last).as_micros();
                        let ticks = gap.saturating_mul(u128::from(self.clock_rate)) / 1_000_000;
                        let step = u32::try_from(ticks).unwrap_or(u32::MAX).max(1);
                        (s16.wrapping_add(1), self.last_ts.wrapping_add(step))
                    }
                    _ => (seq, ts),
                };
                self.seq_shift = next_seq.wrapping_sub(seq);
                self.ts_shift = next_ts.wrapping_sub(ts);
                true
            }
        };
        self.source = Some((ssrc, pt, at));
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

/// A viewer asks the transmitters for a keyframe at most this often (the browser's PLI/FIR,
/// a new transmitter, the connection); the relay's keyframe policy throttles again per
/// transmitter.
const KEYFRAME_ASK_EVERY: Duration = Duration::from_millis(500);

/// What a viewer's thread needs.
pub(crate) struct Session {
    pub(crate) peer: Peer,
    pub(crate) watch: Watch,
    pub(crate) engine: Arc<Engine>,
    pub(crate) call_id: String,
    pub(crate) codec: Codec,
    pub(crate) stop: Receiver<()>,
    /// When the transmitters were last asked for a keyframe.
    pub(crate) last_ask: Option<Instant>,
}

impl Session {
    /// Runs the viewer until the browser leaves, the call ends, the API closes it or it never
    /// connects. Returns why it ended.
    pub(crate) fn run(mut self) -> &'static str {
        let why = self.drive();
        self.peer.close();
        why
    }

    fn drive(&mut self) -> &'static str {
        let mut mid: Option<Mid> = None;
        let mut pt = None;
        let mut rewriter = Rewriter::new(
            self.watch.stream.clock_rate,
            self.watch.stream.max_transmitters,
        );
        loop {
            let wait = match self.peer.step() {
                Step::Event(e) => {
                    match *e {
                        ref e if video_added(e, true).is_some() => {
                            mid = video_added(e, true);
                            pt = mid.and_then(|m| payload_params(&self.peer.rtc, m, self.codec));
                            if pt.is_none() {
                                return "the browser offered no payload type for the call's codec";
                            }
                        }
                        Event::Connected => {
                            self.ask_keyframe();
                            tracing::info!(call = %self.call_id, "WHEP viewer connected");
                        }
                        Event::KeyframeRequest(_) => {
                            let c = &self.peer.counters.keyframe_requests;
                            c.fetch_add(1, Ordering::Relaxed);
                            self.ask_keyframe();
                        }
                        _ => {}
                    }
                    continue;
                }
                Step::Wait(w) => w,
                Step::End(why) => return why,
            };
            let input = select! {
                recv(self.peer.net) -> d => match d {
                    Ok(d) => Some(d),
                    Err(_) => return "socket closed",
                },
                recv(self.watch.packets) -> p => match p {
                    Ok(p) => {
                        if self.write(&p, mid, pt, &mut rewriter) {
                            self.peer.written = Some(p.at);
                        }
                        None
                    }
                    Err(_) => return "the call ended",
                },
                recv(self.stop) -> _ => return "closed by the API",
                default(wait) => None,
            };
            self.peer.input(input);
        }
    }

    /// Asks the call's transmitters for a keyframe, at most every [`KEYFRAME_ASK_EVERY`].
    fn ask_keyframe(&mut self) {
        let now = Instant::now();
        if self
            .last_ask
            .is_some_and(|t| now.duration_since(t) < KEYFRAME_ASK_EVERY)
        {
            return;
        }
        self.last_ask = Some(now);
        let _ = self.engine.request_keyframe(&self.call_id);
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
            self.peer.counters.skipped.fetch_add(1, Ordering::Relaxed);
        };
        let (Some(mid), Some(params)) = (mid, params) else {
            skipped();
            return false;
        };
        if !self.peer.counters.connected.load(Ordering::Relaxed) {
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
            (rtp.sequence_number(), rtp.timestamp()),
            p.at,
        ) else {
            skipped();
            return false;
        };
        let payload: Arc<[u8]> = Arc::from(rtp.payload());
        let marker = rtp.marker();
        let mut api = self.peer.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            skipped();
            return false;
        };
        tx.write_rtp(
            RtpWrite::new(params.pt(), SeqNo::from(seq), ts, p.at, payload)
                .marker(marker)
                .nackable(true),
        );
        self.peer.counters.packets.fetch_add(1, Ordering::Relaxed);
        if switched {
            self.ask_keyframe();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // a base instant for the packets' arrival times
    fn a_new_transmitter_follows_on_from_the_last_one() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut r = Rewriter::new(90_000, 2);
        assert_eq!(r.map(1, 96, (100, 5000), ms(0)), Some((100, 5000, true)));
        assert_eq!(r.map(1, 96, (101, 8000), ms(33)), Some((101, 8000, false)));
        // Reordered: an older number, the highest kept.
        assert_eq!(r.map(1, 96, (99, 2000), ms(34)), Some((99, 2000, false)));
        // Another payload type of the same source is not written.
        assert_eq!(r.map(1, 96 + 1, (102, 8000), ms(35)), None);
        // Another source while this one sends (two may transmit at once): skipped.
        assert_eq!(r.map(2, 96, (7, 7), ms(100)), None);
        // Once the first is silent for SOURCE_IDLE, the next follows on at 102, its timestamp
        // 999 ms at 90 kHz (89,910 ticks) after the last one written (seq 101, ts 8000, at 34 ms).
        assert_eq!(
            r.map(2, 96, (40_000, 7), ms(1033)),
            Some((102, 97_910, true))
        );
        assert_eq!(
            r.map(2, 96, (40_001, 3007), ms(1066)),
            Some((103, 100_910, false))
        );
    }

    #[test]
    #[allow(clippy::disallowed_methods)]
    fn with_one_transmitter_at_a_time_the_next_takes_the_track_at_once() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut r = Rewriter::new(90_000, 1);
        assert_eq!(r.map(1, 96, (10, 0), ms(0)), Some((10, 0, true)));
        assert_eq!(r.map(2, 96, (500, 0), ms(40)), Some((11, 3_600, true)));
        // RTX-like: another payload type under another SSRC waits for the source to go quiet.
        assert_eq!(r.map(3, 97, (1, 0), ms(50)), None);
    }

    #[test]
    #[allow(clippy::disallowed_methods)]
    fn the_sequence_number_is_extended_across_the_wrap() {
        let t = Instant::now();
        let mut r = Rewriter::new(0, 1);
        assert_eq!(r.map(1, 96, (65_535, 0), t).map(|x| x.0), Some(65_535));
        assert_eq!(r.map(1, 96, (0, 0), t).map(|x| x.0), Some(65_536));
        assert_eq!(r.map(1, 96, (1, 0), t).map(|x| x.0), Some(65_537));
    }
}
