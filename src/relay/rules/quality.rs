//! Media quality as the relay sees it, per leg and direction, in every security mode: the RTP
//! header is clear even when the payload is not. Packets, bytes and bitrate; loss from sequence
//! gaps (RFC 3550 A.1, A.3); interarrival jitter (RFC 3550 §6.4.1, A.8) in the stream's clock;
//! frame rate from marker bits; the age of the last packet; keyframes (IDR access units, each
//! once) where the payload is readable; and the receiver's own view from its RTCP receiver
//! reports (fraction lost, cumulative loss, jitter, and the round trip relay → receiver → relay
//! from LSR/DLSR).
//!
//! Plain numbers updated in place: no allocation, no lock, a few nanoseconds per packet.

use crate::wire::rtcp::{PacketType, RtcpPacket};
use std::time::{Duration, Instant};

/// RFC 3550 A.1: a jump this far ahead is a gap (packets lost), not a restart.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: this far behind is a late (reordered) packet.
const MAX_MISORDER: u16 = 100;
/// Rates are measured over windows of this length.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Incoming RTP of one leg (one stream, from one party).
#[derive(Debug, Clone, Copy)]
pub struct RtpMeter {
    clock_rate: u32,
    started: Option<Instant>,
    last_at: Option<Instant>,
    packets: u64,
    bytes: u64,
    max_seq: u16,
    cycles: u64,
    base_seq: u64,
    received: u64,
    last_transit: Option<i64>,
    jitter_q4: u64,
    frames: u64,
    keyframes: u64,
    /// Start of the current rate window, ns after `started`.
    window_at_ns: u64,
    window_bytes: u64,
    window_frames: u64,
    bitrate_bps: u64,
    frame_rate_milli: u64,
}

/// What a receiver said about the stream in its last RTCP receiver report block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverReport {
    /// Fraction lost since its previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed in the report).
    pub cumulative_lost: i32,
    /// Its interarrival jitter, in timestamp units.
    pub jitter: u32,
    /// Round trip relay → receiver → relay, from LSR/DLSR of a sender report the relay
    /// forwarded (`None` until one matches).
    pub rtt: Option<Duration>,
}

/// A copy of one leg's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LegQuality {
    /// RTP packets received from the party on this stream.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bits per second over the last full second.
    pub bitrate_bps: u64,
    /// Packets missing from the sequence (expected − received, never negative).
    pub lost: u64,
    /// Interarrival jitter in milliseconds (RFC 3550 §6.4.1), 0 without a known clock.
    pub jitter_ms: f64,
    /// Frames (marker bits) per second over the last full second.
    pub frame_rate: f64,
    /// Frames seen (marker bits).
    pub frames: u64,
    /// Keyframes seen (only where the payload is readable: plain RTP, per_leg).
    pub keyframes: u64,
    /// Time since the last packet at the moment of the snapshot.
    pub last_packet_age: Option<Duration>,
    /// The party's own receiver report about the media it receives on this stream.
    pub receiver_report: Option<ReceiverReport>,
}

/// What the kernel fast path forwarded for a leg since the relay last looked
/// ([`RtpMeter::on_offloaded`]).
#[derive(Debug, Clone, Copy)]
pub struct KernelForwarded {
    /// RTP packets.
    pub packets: u64,
    /// Their bytes (RTP header included).
    pub bytes: u64,
    /// Those with the marker bit (video: a frame's last packet).
    pub frames: u64,
    /// Keyframes (IDR access units) the kernel counted (plain RTP video).
    pub keyframes: u64,
    /// The highest sequence number the kernel forwarded so far (serial-number order).
    pub highest_seq: Option<u16>,
    /// When the last one was forwarded.
    pub last: Instant,
    /// The interarrival jitter the kernel measured, in timestamp units × 16 (the meter's own
    /// fixed point), if it did.
    pub jitter_q4: Option<u64>,
    /// The last keyframe the kernel counted, as (SSRC, RTP timestamp), if any.
    pub last_keyframe: Option<(u32, u32)>,
}

impl RtpMeter {
    /// A meter for a stream whose RTP clock runs at `clock_rate` Hz (0: unknown, no jitter).
    pub fn new(clock_rate: u32) -> RtpMeter {
        RtpMeter {
            clock_rate,
            started: None,
            last_at: None,
            packets: 0,
            bytes: 0,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            received: 0,
            last_transit: None,
            jitter_q4: 0,
            frames: 0,
            keyframes: 0,
            window_at_ns: 0,
            window_bytes: 0,
            window_frames: 0,
            bitrate_bps: 0,
            frame_rate_milli: 0,
        }
    }

    /// One RTP packet of `len` bytes arrived at `now`. Returns whether its sequence number
    /// wrapped (a new cycle: the SRTP rollover counter of its SSRC moved too).
    #[inline]
    pub fn on_packet(
        &mut self,
        now: Instant,
        seq: u16,
        timestamp: u32,
        marker: bool,
        len: usize,
    ) -> bool {
        // One clock difference per packet serves the jitter and the rate window.
        let started = *self.started.get_or_insert(now);
        let t_ns = now.saturating_duration_since(started).as_nanos() as u64;
        self.packets += 1;
        self.bytes += len as u64;
        self.last_at = Some(now);
        let wrapped = self.sequence(seq);
        if marker {
            self.frames += 1;
        }
        self.jitter(t_ns, timestamp);
        self.rates(t_ns, len as u64, u64::from(marker));
        wrapped
    }

    /// Packets the kernel fast path forwarded for this leg, which the relay did not see
    /// (docs/kernel-fast-path.md). Packets, bytes, frames, loss, rates and the last packet's
    /// age go on as if the relay had seen them; the jitter becomes the kernel's own estimate
    /// (the same formula, since the leg went into the kernel); keyframes are the kernel's count
    /// (it scans plain RTP video as the relay does).
    pub fn on_offloaded(&mut self, f: &KernelForwarded) {
        let KernelForwarded {
            packets,
            bytes,
            frames,
            keyframes,
            highest_seq,
            last,
            jitter_q4,
            last_keyframe: _, // the keyframe policy's (GroupRules::offloaded)
        } = *f;
        if packets == 0 {
            return;
        }
        if let Some(j) = jitter_q4.filter(|_| self.clock_rate != 0) {
            // Same formula, same fixed point: the kernel's estimate replaces the meter's.
            self.jitter_q4 = j;
        }
        let started = *self.started.get_or_insert(last);
        let t_ns = last.saturating_duration_since(started).as_nanos() as u64;
        self.packets += packets;
        self.bytes += bytes;
        self.frames += frames;
        self.keyframes += keyframes;
        self.last_at = Some(self.last_at.map_or(last, |t| t.max(last)));
        if let Some(h) = highest_seq {
            if self.received == 0 {
                self.max_seq = h;
                self.base_seq = u64::from(h).saturating_sub(packets - 1);
            } else {
                // Serial-number order: the kernel's highest moved forward (across a wrap).
                let udelta = h.wrapping_sub(self.max_seq);
                if udelta != 0 && udelta < 0x8000 {
                    if h < self.max_seq {
                        self.cycles += 1 << 16;
                    }
                    self.max_seq = h;
                }
            }
            self.received += packets;
        }
        self.rates(t_ns, bytes, frames);
    }

    /// A keyframe (an IDR access unit not counted yet) started in the last packet.
    pub fn on_keyframe(&mut self) {
        self.keyframes += 1;
    }

    /// RFC 3550 A.1 sequence tracking. Returns whether a new cycle began.
    fn sequence(&mut self, seq: u16) -> bool {
        if self.received == 0 {
            self.max_seq = seq;
            self.base_seq = u64::from(seq);
            self.received = 1;
            return false;
        }
        let mut wrapped = false;
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += 1 << 16;
                wrapped = true;
            }
            self.max_seq = seq;
        } else if udelta <= u16::MAX - MAX_MISORDER {
            // A very large jump: the sender restarted its sequence; start counting again.
            self.max_seq = seq;
            self.cycles = 0;
            self.base_seq = u64::from(seq);
            self.received = 0;
        }
        // else: a duplicate or reordered packet.
        self.received += 1;
        wrapped
    }

    /// RFC 3550 A.8: J += (|D| − J) / 16, in timestamp units, kept ×16.
    fn jitter(&mut self, t_ns: u64, timestamp: u32) {
        if self.clock_rate == 0 {
            return;
        }
        // In µs first: no overflow for years of call (ns × 90 kHz would wrap after 2.3 days).
        let arrival = (t_ns / 1_000).saturating_mul(u64::from(self.clock_rate)) / 1_000_000;
        let transit = (arrival as i64).wrapping_sub(i64::from(timestamp));
        if let Some(last) = self.last_transit {
            let d = transit.wrapping_sub(last).unsigned_abs();
            // Late packets of another era would explode the figure: clamp one step.
            let d = d.min(u64::from(u32::MAX));
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    fn rates(&mut self, t_ns: u64, bytes: u64, frames: u64) {
        let span = t_ns.saturating_sub(self.window_at_ns);
        if span >= RATE_WINDOW.as_nanos() as u64 {
            let s = span as f64 / 1e9;
            self.bitrate_bps = (self.window_bytes as f64 * 8.0 / s) as u64;
            self.frame_rate_milli = (self.window_frames as f64 * 1000.0 / s) as u64;
            self.window_at_ns = t_ns;
            self.window_bytes = 0;
            self.window_frames = 0;
        }
        self.window_bytes += bytes;
        self.window_frames += frames;
    }

    /// Packets lost so far (expected from the sequence numbers, less those received).
    pub fn lost(&self) -> u64 {
        if self.received == 0 {
            return 0;
        }
        let expected = (self.cycles + u64::from(self.max_seq)).saturating_sub(self.base_seq) + 1;
        expected.saturating_sub(self.received)
    }

    /// The stream's RTP clock rate in Hz (0: unknown).
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// Jitter in timestamp units.
    pub fn jitter_units(&self) -> u64 {
        self.jitter_q4 >> 4
    }

    /// The figures at `now`.
    pub fn snapshot(&self, now: Instant) -> LegQuality {
        let jitter_ms = if self.clock_rate == 0 {
            0.0
        } else {
            self.jitter_units() as f64 * 1000.0 / f64::from(self.clock_rate)
        };
        // A stream that went quiet has no current rate.
        let stale = self
            .last_at
            .is_none_or(|t| now.saturating_duration_since(t) > 2 * RATE_WINDOW);
        LegQuality {
            packets: self.packets,
            bytes: self.bytes,
            bitrate_bps: if stale { 0 } else { self.bitrate_bps },
            lost: self.lost(),
            jitter_ms,
            frame_rate: if stale {
                0.0
            } else {
                self.frame_rate_milli as f64 / 1000.0
            },
            frames: self.frames,
            keyframes: self.keyframes,
            last_packet_age: self.last_at.map(|t| now.saturating_duration_since(t)),
            receiver_report: None,
        }
    }
}

/// A histogram with fixed upper bounds (Prometheus style: each bucket counts the samples at or
/// below its bound; the last, implicit bucket is +Inf).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds, ascending.
    pub bounds: &'static [f64],
    /// Samples at or below each bound (cumulative).
    pub buckets: Vec<u64>,
    /// Sum of the samples.
    pub sum: f64,
    /// Number of samples.
    pub count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds`.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Adds one sample.
    pub fn observe(&mut self, v: f64) {
        for (b, le) in self.buckets.iter_mut().zip(self.bounds) {
            if v <= *le {
                *b += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    /// Adds another histogram over the same bounds.
    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        self.sum += o.sum;
        self.count += o.count;
    }
}

/// Bounds of the jitter histogram across streams, in milliseconds.
pub const JITTER_MS_BOUNDS: &[f64] = &[0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0];
/// Bounds of the loss histogram across streams, in percent of the packets expected.
pub const LOSS_PERCENT_BOUNDS: &[f64] = &[0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0];

/// Jitter and loss of the media arriving at the relay, one sample per leg that sent RTP.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityHistograms {
    /// Interarrival jitter, ms.
    pub jitter_ms: Histogram,
    /// Loss, percent of expected packets.
    pub loss_percent: Histogram,
}

impl Default for QualityHistograms {
    fn default() -> Self {
        QualityHistograms {
            jitter_ms: Histogram::new(JITTER_MS_BOUNDS),
            loss_percent: Histogram::new(LOSS_PERCENT_BOUNDS),
        }
    }
}

impl QualityHistograms {
    /// Adds one leg's figures (legs that sent nothing are left out).
    pub fn observe(&mut self, q: &LegQuality) {
        if q.packets == 0 {
            return;
        }
        self.jitter_ms.observe(q.jitter_ms);
        let expected = q.packets + q.lost;
        self.loss_percent
            .observe(q.lost as f64 * 100.0 / expected.max(1) as f64);
    }

    /// Adds another set.
    pub fn merge(&mut self, o: &QualityHistograms) {
        self.jitter_ms.merge(&o.jitter_ms);
        self.loss_percent.merge(&o.loss_percent);
    }
}

/// Sender reports forwarded to a receiver, to match its receiver reports' LSR against.
#[derive(Debug, Clone, Copy, Default)]
pub struct RttProbe {
    sent: [(u32, Option<Instant>); 4],
    next: usize,
    /// The receiver's last report.
    pub last: Option<ReceiverReport>,
}

impl RttProbe {
    /// A sender report whose NTP timestamp's middle 32 bits are `ntp_mid` went to the receiver.
    pub fn sender_report(&mut self, ntp_mid: u32, now: Instant) {
        if let Some(slot) = self.sent.get_mut(self.next) {
            *slot = (ntp_mid, Some(now));
        }
        self.next = (self.next + 1) % self.sent.len();
    }

    /// Reads the report block about `media_ssrc` (or the first one) from the receiver's RTCP
    /// packet `p` (RR or SR) that arrived at `now`.
    pub fn receiver_report<T: AsRef<[u8]>>(&mut self, p: &RtcpPacket<T>, now: Instant) {
        let offset = match p.packet_type() {
            PacketType::ReceiverReport => 0,
            PacketType::SenderReport => 20,
            _ => return,
        };
        if p.count() == 0 {
            return;
        }
        // The body follows the sender SSRC: [sender info] then 24-byte report blocks.
        let Some(b) = p.body().get(offset..offset + 24) else {
            return;
        };
        let word = |i: usize| {
            b.get(i..i + 4)
                .and_then(|w| w.try_into().ok())
                .map_or(0, u32::from_be_bytes)
        };
        let lost = word(4) & 0x00ff_ffff;
        // 24-bit two's complement.
        let cumulative_lost = ((lost << 8) as i32) >> 8;
        let (lsr, dlsr) = (word(16), word(20));
        let rtt = self.sent.iter().find_map(|&(mid, at)| {
            let at = at?;
            (lsr != 0 && mid == lsr).then(|| {
                let dlsr = Duration::from_secs_f64(f64::from(dlsr) / 65536.0);
                now.saturating_duration_since(at).saturating_sub(dlsr)
            })
        });
        self.last = Some(ReceiverReport {
            fraction_lost: b.get(4).copied().unwrap_or(0),
            cumulative_lost,
            jitter: word(12),
            rtt: rtt.or(self.last.and_then(|r| r.rtt)),
        });
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests' own epoch; time then moves virtually
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_gap_of_ten_is_ten_lost() {
        let t0 = Instant::now();
        let mut m = RtpMeter::new(90_000);
        for seq in (0u16..100).filter(|s| !(40..50).contains(s)) {
            m.on_packet(
                t0 + MS * u32::from(seq),
                seq,
                u32::from(seq) * 90,
                false,
                1200,
            );
        }
        assert_eq!(m.lost(), 10);
        assert_eq!(m.snapshot(t0 + MS * 100).packets, 90);
    }

    #[test]
    fn sequence_wraps_reorders_and_duplicates() {
        let t0 = Instant::now();
        let mut m = RtpMeter::new(0);
        for (i, seq) in [65_534u16, 65_535, 1, 0, 0, 2].into_iter().enumerate() {
            m.on_packet(t0 + MS * i as u32, seq, 0, false, 100);
        }
        // 65534..=2 is five numbers; six arrived (one duplicate): no loss.
        assert_eq!(m.lost(), 0);
        let mut m = RtpMeter::new(0);
        m.on_packet(t0, 10, 0, false, 100);
        m.on_packet(t0, 30_000, 0, false, 100); // a restart, not 29,989 lost
        m.on_packet(t0, 30_001, 0, false, 100);
        assert_eq!(m.lost(), 0);
    }

    #[test]
    fn a_fixed_delay_sender_has_no_jitter() {
        let t0 = Instant::now();
        let mut m = RtpMeter::new(90_000);
        for i in 0..200u32 {
            // 20 ms apart on the wire and in the RTP clock (1,800 ticks).
            m.on_packet(t0 + MS * (20 * i), i as u16, 1_000 + 1_800 * i, true, 1200);
        }
        assert!(m.jitter_units() <= 1, "{}", m.jitter_units());
        let q = m.snapshot(t0 + MS * 4000);
        assert!((q.frame_rate - 50.0).abs() < 1.0, "{}", q.frame_rate);
        assert!(
            q.bitrate_bps > 400_000 && q.bitrate_bps < 560_000,
            "{}",
            q.bitrate_bps
        );
    }

    #[test]
    fn what_the_kernel_forwarded_goes_on_the_meter() {
        // Ten packets seen, then the kernel forwards in lumps (polled every 500 ms): 25 frames
        // per second of 4 packets, 1,200 B each, a sequence that wraps, one packet lost.
        let t0 = Instant::now();
        let mut m = RtpMeter::new(90_000);
        for i in 0..10u16 {
            let seq = 65_526u16.wrapping_add(i);
            m.on_packet(t0 + MS * u32::from(i), seq, 0, i % 4 == 3, 1200);
        }
        let mut highest = 65_535u16;
        for lump in 1..=8u32 {
            let packets = if lump == 4 { 49 } else { 50 }; // one lost in the fourth
            highest = highest.wrapping_add(50);
            m.on_offloaded(&KernelForwarded {
                packets,
                bytes: packets * 1200,
                frames: 12,
                keyframes: 0,
                highest_seq: Some(highest),
                last: t0 + MS * (500 * lump),
                jitter_q4: Some(16 * 450),
                last_keyframe: None,
            });
        }
        let q = m.snapshot(t0 + MS * 4100);
        assert_eq!(q.packets, 10 + 8 * 50 - 1);
        assert_eq!(q.bytes, (10 + 8 * 50 - 1) * 1200);
        assert_eq!(q.frames, 2 + 8 * 12);
        assert_eq!(m.lost(), 1, "the wrap counted, the one lost seen");
        assert!((q.frame_rate - 24.0).abs() < 1.5, "{}", q.frame_rate);
        assert!(q.bitrate_bps > 800_000, "{}", q.bitrate_bps);
        assert_eq!(q.last_packet_age, Some(MS * 100));
        assert_eq!(m.jitter_units(), 450, "the kernel's jitter");
        assert!(
            (q.jitter_ms - 5.0).abs() < 1e-9,
            "450 units at 90 kHz: {}",
            q.jitter_ms
        );
        // Nothing forwarded: nothing moves.
        m.on_offloaded(&KernelForwarded {
            packets: 0,
            bytes: 0,
            frames: 0,
            keyframes: 0,
            highest_seq: Some(highest),
            last: t0 + MS * 9000,
            jitter_q4: Some(0),
            last_keyframe: None,
        });
        assert_eq!(m.snapshot(t0 + MS * 4100).packets, q.packets);
        assert_eq!(m.jitter_units(), 450);
        // A stream without a known clock keeps no jitter, whatever the kernel says.
        let mut u = RtpMeter::new(0);
        u.on_offloaded(&KernelForwarded {
            packets: 5,
            bytes: 500,
            frames: 1,
            keyframes: 0,
            highest_seq: Some(4),
            last: t0,
            jitter_q4: Some(16 * 450),
            last_keyframe: None,
        });
        assert_eq!(u.jitter_units(), 0);
    }

    #[test]
    fn alternating_delays_give_the_rfc_value() {
        // Every other packet arrives 10 ms late: |D| is 900 ticks (10 ms at 90 kHz) for every
        // packet, so J converges to 900 ticks = 10 ms (J += (|D| − J)/16).
        let t0 = Instant::now();
        let mut m = RtpMeter::new(90_000);
        for i in 0..400u32 {
            let late = if i % 2 == 1 { 10 } else { 0 };
            m.on_packet(t0 + MS * (20 * i + late), i as u16, 1_800 * i, false, 1200);
        }
        let j = m.snapshot(t0 + MS * 8000).jitter_ms;
        assert!((j - 10.0).abs() < 0.2, "{j}");
    }

    #[test]
    fn receiver_report_with_round_trip() {
        let t0 = Instant::now();
        let mut p = RttProbe::default();
        p.sender_report(0x1234_5678, t0);
        // RR: one block, fraction 25/256, cumulative 7, jitter 450, LSR, DLSR = 0.5 s.
        let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0, 9];
        rr.extend_from_slice(&0xaabb_ccddu32.to_be_bytes());
        rr.extend_from_slice(&[25, 0, 0, 7]);
        rr.extend_from_slice(&100u32.to_be_bytes());
        rr.extend_from_slice(&450u32.to_be_bytes());
        rr.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        rr.extend_from_slice(&0x8000u32.to_be_bytes());
        let pkt = RtcpPacket::new_checked(&rr[..]).unwrap();
        p.receiver_report(&pkt, t0 + MS * 530);
        let r = p.last.unwrap();
        assert_eq!((r.fraction_lost, r.cumulative_lost, r.jitter), (25, 7, 450));
        let rtt = r.rtt.unwrap();
        assert!(rtt >= MS * 29 && rtt <= MS * 31, "{rtt:?}");
    }
}
