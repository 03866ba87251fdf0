//! First-bytes demultiplexing of one UDP port (RFC 7983 §7, RFC 5761 §4).
//!
//! ```text
//!              +----------------+
//!              |        [0..3] -+--> STUN
//!              |      [16..19] -+--> ZRTP          (Unknown here)
//! packet -->   |      [20..63] -+--> DTLS
//!              |      [64..79] -+--> TURN channel  (Unknown here)
//!              |    [128..191] -+--> RTP / RTCP: second byte 192..=223 is RTCP, else RTP
//!              +----------------+
//! ```
//!
//! # Contract
//!
//! [`classify`] looks at the **first two bytes only** and never panics or allocates. It says
//! which parser to try, not that the packet is valid: an RTP packet needs 12 bytes and an RTCP
//! packet 8, which [`super::rtp::RtpPacket::new_checked`] and
//! [`super::rtcp::RtcpPacket::new_checked`] check. Anything shorter than two bytes is
//! [`PacketClass::Unknown`].

/// What a datagram on a multiplexed port carries, judged by its first two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketClass {
    /// RTP (or SRTP): first byte 128..=191, second byte not an RTCP packet type.
    Rtp,
    /// RTCP (or SRTCP): first byte 128..=191, second byte 192..=223 (RFC 5761 §4).
    Rtcp,
    /// STUN / ICE connectivity check: first byte 0..=3 (RFC 7983 §7).
    Stun,
    /// DTLS record (DTLS-SRTP key exchange): first byte 20..=63 (RFC 7983 §7).
    Dtls,
    /// Anything else, including ZRTP, TURN channel data and datagrams under two bytes.
    Unknown,
}

/// Classifies a datagram from its first two bytes (RFC 7983 §7, RFC 5761 §4).
///
/// RTP and RTCP share the first-byte range; the second byte decides. RTCP packet types 192..=223
/// seen as an RTP `M`+`PT` byte are payload types 64..=95 with the marker set, which RFC 5761 §4
/// forbids for RTP on a multiplexed port.
///
/// ```
/// use mcvideo_relay::wire::demux::{classify, PacketClass};
///
/// assert_eq!(classify(&[0x80, 0x60]), PacketClass::Rtp); // PT 96
/// assert_eq!(classify(&[0x81, 0xc9]), PacketClass::Rtcp); // RR
/// assert_eq!(classify(&[0x00, 0x01]), PacketClass::Stun); // Binding request
/// assert_eq!(classify(&[0x16, 0xfe]), PacketClass::Dtls); // handshake record
/// assert_eq!(classify(&[0x80]), PacketClass::Unknown);
/// ```
#[inline]
#[must_use]
pub fn classify(buf: &[u8]) -> PacketClass {
    let Some(&[first, second]) = buf.first_chunk::<2>() else {
        return PacketClass::Unknown;
    };
    match first {
        0..=3 => PacketClass::Stun,
        20..=63 => PacketClass::Dtls,
        128..=191 => match second {
            192..=223 => PacketClass::Rtcp,
            _ => PacketClass::Rtp,
        },
        _ => PacketClass::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_first_byte_ranges() {
        for first in 0..=u8::MAX {
            let expected = match first {
                0..=3 => PacketClass::Stun,
                20..=63 => PacketClass::Dtls,
                128..=191 => PacketClass::Rtp,
                _ => PacketClass::Unknown,
            };
            assert_eq!(classify(&[first, 0x60]), expected, "first byte {first}");
        }
        // ZRTP and TURN channel ranges are not ours.
        assert_eq!(classify(&[16, 0]), PacketClass::Unknown);
        assert_eq!(classify(&[19, 0]), PacketClass::Unknown);
        assert_eq!(classify(&[64, 0]), PacketClass::Unknown);
        assert_eq!(classify(&[79, 0]), PacketClass::Unknown);
    }

    #[test]
    fn test_rtp_rtcp_split() {
        for second in 0..=u8::MAX {
            let expected = if (192..=223).contains(&second) {
                PacketClass::Rtcp
            } else {
                PacketClass::Rtp
            };
            for first in [0x80, 0x81, 0x90, 0xa0, 0xbf] {
                assert_eq!(classify(&[first, second]), expected, "{first:#x} {second}");
            }
        }
        // Marker set on PT 96 (0xe0) is RTP; every RTCP type 200..=207 is RTCP.
        assert_eq!(classify(&[0x80, 0xe0]), PacketClass::Rtp);
        for pt in 200..=207 {
            assert_eq!(classify(&[0x80, pt]), PacketClass::Rtcp);
        }
    }

    #[test]
    fn test_short_and_real_packets() {
        assert_eq!(classify(&[]), PacketClass::Unknown);
        for first in 0..=u8::MAX {
            assert_eq!(classify(&[first]), PacketClass::Unknown);
        }
        // Only the first two bytes matter.
        assert_eq!(classify(&[0x80, 0x60, 0xff, 0xff]), PacketClass::Rtp);

        let mut rtp = [0u8; 12];
        let header = crate::wire::rtp::RtpHeader {
            payload_type: 96,
            marker: true,
            ..Default::default()
        };
        header.emit(&mut rtp).unwrap();
        assert_eq!(classify(&rtp), PacketClass::Rtp);

        let mut rtcp = [0u8; 20];
        let n = crate::wire::rtcp::emit_fir(1, 2, 3, &mut rtcp).unwrap();
        assert_eq!(classify(&rtcp[..n]), PacketClass::Rtcp);

        // STUN Binding request header (RFC 8489 §5): type 0x0001, magic cookie.
        let stun = [
            0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(classify(&stun), PacketClass::Stun);
        // DTLS 1.2 handshake record header: content type 22, version 0xfefd.
        assert_eq!(classify(&[22, 0xfe, 0xfd, 0, 0]), PacketClass::Dtls);
    }
}
