//! The keyframe policy of one video stream: which of the callee's keyframe requests (PLI, FIR)
//! reach the caller, and when the relay asks for a keyframe itself. Given time, never reads it.

use crate::wire::rtcp::{RtcpKind, RtcpPacket};
use std::time::{Duration, Instant};

/// Relay-originated keyframe requests at most this often; repeated callee requests within it
/// are dropped.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// A callee keyframe request arriving this soon after a keyframe passed is redundant.
pub const KEYFRAME_REDUNDANT_WINDOW: Duration = Duration::from_millis(250);

/// Whether an H.264 RTP payload (RFC 6184) carries an IDR slice or a part of one: a single NAL
/// unit of type 5, an aggregation packet (STAP-A, STAP-B) holding one, or any fragment (FU-A,
/// FU-B) of one (every fragment names its NAL type, so a lost first fragment still counts).
/// Parameter sets (SPS, PPS) and SEI are not keyframes by themselves: they travel with the IDR
/// slices in the same access unit (one RTP timestamp), see [`KeyframePolicy::on_video`].
/// A few byte compares; an aggregation packet is walked unit by unit, never past its end.
#[inline]
pub fn h264_idr(payload: &[u8]) -> bool {
    const IDR: u8 = 5;
    let nal = |b: u8| b & 0x1f;
    match payload {
        [h, ..] if nal(*h) == IDR => true,
        // FU-A (28), FU-B (29): FU indicator, FU header with the fragmented NAL's type.
        [h, fu, ..] if matches!(nal(*h), 28 | 29) => nal(*fu) == IDR,
        // STAP-A (24): 16-bit size + NAL unit, repeated.
        [h, units @ ..] if nal(*h) == 24 => aggregate_has_idr(units),
        // STAP-B (25): a 16-bit decoding order number first.
        [h, _, _, units @ ..] if nal(*h) == 25 => aggregate_has_idr(units),
        _ => false,
    }
}

/// Walks the (size, NAL unit) pairs of a single-time aggregation packet.
fn aggregate_has_idr(mut units: &[u8]) -> bool {
    while let [hi, lo, rest @ ..] = units {
        let size = usize::from(u16::from_be_bytes([*hi, *lo]));
        let Some(unit) = rest.get(..size) else {
            return false; // truncated: what is there is not trusted
        };
        if unit.first().is_some_and(|h| h & 0x1f == 5) {
            return true;
        }
        units = rest.get(size..).unwrap_or_default();
    }
    false
}

/// When the last keyframe passed and the last request went to the caller; which access unit
/// (SSRC, RTP timestamp) the last keyframe was, so that each is counted once.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyframePolicy {
    last_keyframe: Option<Instant>,
    last_request: Option<Instant>,
    last_idr: Option<(u32, u32)>,
}

fn within(at: Option<Instant>, now: Instant, window: Duration) -> bool {
    at.is_some_and(|at| now.saturating_duration_since(at) < window)
}

impl KeyframePolicy {
    /// A video RTP packet from the transmitter (H.264 payload readable) passed at `now`. `true`
    /// when it is the first packet seen of a keyframe: an IDR access unit not counted yet. The
    /// packets of one access unit (its parameter sets, SEI, IDR slices, their fragments and
    /// aggregates) share the RTP timestamp, so a keyframe is counted once however it is
    /// packetized: on the first packet with an IDR slice in it whose (SSRC, timestamp)
    /// differs from the last keyframe's. The keyframe is then booked for the request policy
    /// ([`Self::keyframe_seen`]). A few compares, no allocation.
    #[inline]
    pub fn on_video(&mut self, ssrc: u32, timestamp: u32, payload: &[u8], now: Instant) -> bool {
        let au = Some((ssrc, timestamp));
        if self.last_idr == au || !h264_idr(payload) {
            return false;
        }
        self.last_idr = au;
        self.keyframe_seen(now);
        true
    }

    /// The last keyframe counted, as (SSRC, RTP timestamp).
    pub fn last_keyframe(&self) -> Option<(u32, u32)> {
        self.last_idr
    }

    /// The access unit (SSRC, RTP timestamp) was counted as a keyframe elsewhere (the kernel
    /// fast path): its packets seen here later are not counted again.
    pub fn counted(&mut self, au: (u32, u32)) {
        self.last_idr = Some(au);
    }

    /// A keyframe from the caller passed at `now`.
    pub fn keyframe_seen(&mut self, now: Instant) {
        self.last_keyframe = Some(now);
    }

    /// Whether the relay may ask the caller for a keyframe now (and if so, books the request).
    pub fn may_request(&mut self, now: Instant) -> bool {
        if within(self.last_request, now, KEYFRAME_REQUEST_INTERVAL) {
            return false;
        }
        self.last_request = Some(now);
        true
    }

    /// Removes PLI/FIR packets that are redundant (a keyframe just passed) or too frequent from
    /// a plain RTCP compound in `buf`; returns the new length (0 when nothing is left) and how
    /// many requests were dropped.
    pub fn filter_requests(&mut self, buf: &mut [u8], now: Instant) -> (usize, u64) {
        let suppressed = within(self.last_keyframe, now, KEYFRAME_REDUNDANT_WINDOW)
            || within(self.last_request, now, KEYFRAME_REQUEST_INTERVAL);
        let (mut r, mut w, mut dropped) = (0usize, 0usize, 0u64);
        let mut forwarded_request = false;
        while r < buf.len() {
            let Some(p) = buf.get(r..).and_then(|b| RtcpPacket::new_checked(b).ok()) else {
                break;
            };
            let plen = p.packet_len();
            let is_request = matches!(p.kind(), RtcpKind::Pli | RtcpKind::Fir);
            if !is_request || !suppressed {
                forwarded_request |= is_request;
                if w != r {
                    buf.copy_within(r..r + plen, w);
                }
                w += plen;
            } else {
                dropped += 1;
            }
            r += plen;
        }
        if forwarded_request {
            self.last_request = Some(now);
        }
        (w, dropped)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests' own epoch; time then moves virtually
mod tests {
    use super::*;
    use crate::wire::rtcp::emit_pli;

    #[test]
    fn h264_idr_in_every_packetization() {
        assert!(h264_idr(&[0x65, 0x88]), "single NAL IDR slice");
        assert!(!h264_idr(&[0x67, 0x42]), "SPS alone");
        assert!(!h264_idr(&[0x68, 0xce]), "PPS alone");
        assert!(!h264_idr(&[0x06, 0x05]), "SEI alone");
        assert!(!h264_idr(&[0x41, 0x9a]), "non-IDR slice");
        assert!(!h264_idr(&[0x21, 0x9a]), "non-IDR slice, nal_ref_idc 1");
        assert!(h264_idr(&[0x7c, 0x85]), "FU-A start of IDR");
        assert!(h264_idr(&[0x7c, 0x05]), "FU-A middle of IDR");
        assert!(h264_idr(&[0x7c, 0x45]), "FU-A end of IDR");
        assert!(!h264_idr(&[0x7c, 0x81]), "FU-A start of a non-IDR slice");
        assert!(!h264_idr(&[0x7c]), "FU-A without its header");
        assert!(h264_idr(&[0x7d, 0x85, 0x00, 0x01]), "FU-B start of IDR");
        assert!(!h264_idr(&[]));
        // STAP-A: SPS (3 bytes) + PPS (2) + IDR slice (3).
        let stap = [
            0x78, 0, 3, 0x67, 0x42, 0, 0, 2, 0x68, 0xce, 0, 3, 0x65, 0x88, 0x84,
        ];
        assert!(h264_idr(&stap), "SPS+PPS+IDR in STAP-A");
        assert!(!h264_idr(&stap[..10]), "SPS+PPS only");
        assert!(!h264_idr(&stap[..13]), "IDR unit truncated: not trusted");
        let mut stap_b = vec![0x79, 0x00, 0x07];
        stap_b.extend_from_slice(&stap[1..]);
        assert!(h264_idr(&stap_b), "STAP-B: after the DON");
        // STAP-A: SEI + non-IDR slice; and a zero-size unit before an IDR.
        assert!(!h264_idr(&[0x78, 0, 2, 0x06, 0x05, 0, 2, 0x41, 0x9a]));
        assert!(h264_idr(&[0x78, 0, 0, 0, 2, 0x65, 0x88]));
        assert!(!h264_idr(&[0x78, 0, 5]), "a size and nothing after it");
    }

    /// RTP payloads of one access unit, in order.
    fn count(k: &mut KeyframePolicy, ssrc: u32, ts: u32, packets: &[&[u8]], now: Instant) -> u32 {
        packets
            .iter()
            .map(|p| u32::from(k.on_video(ssrc, ts, p, now)))
            .sum()
    }

    #[test]
    fn an_idr_access_unit_counts_once_however_it_is_packetized() {
        let t0 = Instant::now();
        let mut k = KeyframePolicy::default();
        let (sps, pps, sei) = (&[0x67u8, 0x42][..], &[0x68u8, 0xce][..], &[0x06u8, 5][..]);
        // SPS, PPS, SEI as single NAL units, then the IDR in FU-A fragments (ffmpeg's way
        // without aggregation), two slices.
        let (start, mid, end) = (
            &[0x7cu8, 0x85, 1][..],
            &[0x7cu8, 0x05, 2][..],
            &[0x7cu8, 0x45][..],
        );
        let au = [sps, pps, sei, start, mid, end, &[0x65, 0x88], &[0x65, 0x88]];
        assert_eq!(count(&mut k, 7, 3000, &au, t0), 1);
        // Non-IDR frames after it: nothing.
        let p = [&[0x41u8, 0x9a][..], &[0x7c, 0x81], &[0x7c, 0x41]];
        for ts in [6000, 9000] {
            assert_eq!(count(&mut k, 7, ts, &p, t0), 0);
        }
        // The next IDR: SPS+PPS+IDR aggregated (GStreamer's way), then more IDR fragments.
        let stap = [0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce, 0, 2, 0x65, 0x88];
        assert_eq!(count(&mut k, 7, 12_000, &[&stap, mid, mid, end], t0), 1);
        // Its first fragment lost: the next one counts it.
        assert_eq!(count(&mut k, 7, 15_000, &[sps, pps, mid, end], t0), 1);
        // Parameter sets repeated before a non-IDR frame: not a keyframe.
        assert_eq!(count(&mut k, 7, 18_000, &[sps, pps, p[0]], t0), 0);
        // The same timestamp from another SSRC (a new source): its own keyframe.
        assert_eq!(count(&mut k, 8, 15_000, &[start], t0), 1);
        // An access unit the kernel fast path counted, whose last packets come here after the
        // leg left the kernel: counted once, there. The next one counts here.
        k.counted((8, 21_000));
        assert_eq!(count(&mut k, 8, 21_000, &[mid, end], t0), 0);
        assert_eq!(count(&mut k, 8, 24_000, &[start, end], t0), 1);
    }

    #[test]
    fn a_counted_keyframe_makes_a_request_redundant() {
        let t0 = Instant::now();
        let mut k = KeyframePolicy::default();
        assert!(k.on_video(1, 90, &[0x65, 0x88], t0));
        let at = t0 + Duration::from_millis(100);
        assert_eq!(request(&mut k, at), (0, 1), "a keyframe just passed");
        // A non-IDR packet does not.
        let mut k = KeyframePolicy::default();
        assert!(!k.on_video(1, 90, &[0x67, 0x42], t0));
        assert_eq!(request(&mut k, at), (12, 0), "no keyframe passed");
    }

    fn pli() -> Vec<u8> {
        let mut b = [0u8; 12];
        let n = emit_pli(1, 2, &mut b).unwrap();
        b[..n].to_vec()
    }

    /// A PLI filtered at `at`: (octets kept, requests dropped).
    fn request(k: &mut KeyframePolicy, at: Instant) -> (usize, u64) {
        k.filter_requests(&mut pli(), at)
    }

    #[test]
    fn repeated_requests_are_throttled_on_virtual_time() {
        let t0 = Instant::now();
        let mut k = KeyframePolicy::default();
        assert_eq!(request(&mut k, t0), (12, 0), "first passes");
        let at = t0 + Duration::from_millis(100);
        assert_eq!(request(&mut k, at), (0, 1), "repeat within 500 ms");
        let at = t0 + KEYFRAME_REQUEST_INTERVAL + Duration::from_millis(1);
        assert_eq!(request(&mut k, at), (12, 0), "after the interval");
    }

    #[test]
    fn a_request_right_after_a_keyframe_is_redundant() {
        let t0 = Instant::now();
        let mut k = KeyframePolicy::default();
        k.keyframe_seen(t0);
        let at = t0 + Duration::from_millis(200);
        assert_eq!(request(&mut k, at).0, 0);
        let at = t0 + KEYFRAME_REDUNDANT_WINDOW + Duration::from_millis(1);
        assert_eq!(request(&mut k, at).0, 12);
    }

    #[test]
    fn other_rtcp_passes_and_requests_are_cut_out_of_a_compound() {
        let t0 = Instant::now();
        let mut k = KeyframePolicy::default();
        assert!(k.may_request(t0));
        // RR (8 bytes, no report blocks) + PLI: the PLI goes, the RR stays.
        let mut buf = vec![0x80, 201, 0, 1, 0, 0, 0, 9];
        buf.extend(pli());
        let (len, dropped) = k.filter_requests(&mut buf, t0 + Duration::from_millis(10));
        assert_eq!((len, dropped), (8, 1));
        assert!(!k.may_request(t0 + Duration::from_millis(20)));
        assert!(k.may_request(t0 + Duration::from_secs(1)));
    }
}
