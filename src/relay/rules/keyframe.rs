//! The keyframe policy of one video stream: which of the callee's keyframe requests (PLI, FIR)
//! reach the caller, and when the relay asks for a keyframe itself. Given time, never reads it.

use crate::wire::rtcp::{RtcpKind, RtcpPacket};
use std::time::{Duration, Instant};

/// Relay-originated keyframe requests at most this often; repeated callee requests within it
/// are dropped.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// A callee keyframe request arriving this soon after a keyframe passed is redundant.
pub const KEYFRAME_REDUNDANT_WINDOW: Duration = Duration::from_millis(250);

/// H.264 keyframe start (IDR or SPS, directly, in STAP-A, or the first FU-A fragment).
pub fn h264_keyframe_start(payload: &[u8]) -> bool {
    let nal = |b: u8| b & 0x1f;
    match payload {
        [h, ..] if matches!(nal(*h), 5 | 7) => true,
        [h, _, _, n, ..] if nal(*h) == 24 => matches!(nal(*n), 5 | 7),
        [h, fu, ..] if nal(*h) == 28 => fu & 0x80 != 0 && nal(*fu) == 5,
        _ => false,
    }
}

/// When the last keyframe passed and the last request went to the caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyframePolicy {
    last_keyframe: Option<Instant>,
    last_request: Option<Instant>,
}

fn within(at: Option<Instant>, now: Instant, window: Duration) -> bool {
    at.is_some_and(|at| now.saturating_duration_since(at) < window)
}

impl KeyframePolicy {
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

    fn pli() -> Vec<u8> {
        let mut b = [0u8; 12];
        let n = emit_pli(1, 2, &mut b).unwrap();
        b[..n].to_vec()
    }

    #[test]
    fn repeated_requests_are_throttled_on_virtual_time() {
        let t0 = Instant::now();
        let mut k = KeyframePolicy::default();
        let mut p = pli();
        assert_eq!(k.filter_requests(&mut p, t0), (12, 0), "first passes");
        let mut p = pli();
        let at = t0 + Duration::from_millis(100);
        assert_eq!(
            k.filter_requests(&mut p, at),
            (0, 1),
            "repeat within 500 ms"
        );
        let mut p = pli();
        let at = t0 + KEYFRAME_REQUEST_INTERVAL + Duration::from_millis(1);
        assert_eq!(k.filter_requests(&mut p, at), (12, 0), "after the interval");
    }

    #[test]
    fn a_request_right_after_a_keyframe_is_redundant() {
        let t0 = Instant::now();
        let mut k = KeyframePolicy::default();
        k.keyframe_seen(t0);
        let mut p = pli();
        let at = t0 + Duration::from_millis(200);
        assert_eq!(k.filter_requests(&mut p, at).0, 0);
        let mut p = pli();
        let at = t0 + KEYFRAME_REDUNDANT_WINDOW + Duration::from_millis(1);
        assert_eq!(k.filter_requests(&mut p, at).0, 12);
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
