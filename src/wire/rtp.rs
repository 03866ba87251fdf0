//! RTP data packets (RFC 3550 §5.1): a zero-copy view and a minimal header emitter.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|X|  CC   |M|     PT      |       sequence number         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           timestamp                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           synchronization source (SSRC) identifier            |
//! +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
//! |       contributing source (CSRC) identifiers (0..=15)         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  defined by profile (X=1)     |           length (words)      |
//! |                  header extension (length × 4 bytes)          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                payload ...    | padding (P=1) ... | pad count |
//! ```
//!
//! # Contract
//!
//! * [`RtpPacket::new_checked`] is the entry point for bytes from the network. When it returns
//!   `Ok`, the version is 2, the CSRC list and the header extension lie inside the buffer, and the
//!   padding count (if `P` is set) is non-zero and fits after the header. Every getter is then
//!   meaningful, and [`RtpPacket::payload`] is exactly the bytes between the header and the
//!   padding.
//! * Nothing in this module panics, whatever the bytes. A view built with
//!   [`RtpPacket::new_unchecked`] over a buffer that would fail the check reads missing fields as
//!   zero / empty, and setters on bytes that are not there do nothing. Use `new_unchecked` only
//!   when emitting into a buffer you own.
//! * Reading allocates nothing. The view reads the buffer in place, and setters rewrite it in place
//!   (the relay rewrites SSRC and sequence number this way).
//! * [`RtpHeader`] is the small emitter used to build packets (tests, load generator): 12 bytes,
//!   `V=2`, no CSRC, no extension, no padding.
//!
//! The payload type is not interpreted here: RTP/RTCP demultiplexing on one port (RFC 5761) is
//! [`super::demux`]'s job.

use super::{be16, be32, Error, Result};

/// Field offsets of the fixed header (RFC 3550 §5.1).
mod field {
    /// A byte range inside the packet.
    pub(super) type Field = core::ops::Range<usize>;

    /// `V(2) P(1) X(1) CC(4)`.
    pub(super) const VPXCC: usize = 0;
    /// `M(1) PT(7)`.
    pub(super) const M_PT: usize = 1;
    /// Sequence number.
    pub(super) const SEQUENCE: Field = 2..4;
    /// Timestamp.
    pub(super) const TIMESTAMP: Field = 4..8;
    /// Synchronization source.
    pub(super) const SSRC: Field = 8..12;
    /// First CSRC (the CSRC list is `CC` words from here).
    pub(super) const CSRC: usize = 12;
}

/// The RTP version this module reads and writes (RFC 3550 §5.1: "V=2").
pub const VERSION: u8 = 2;

/// Length of the fixed RTP header, without CSRCs or extension (RFC 3550 §5.1).
pub const HEADER_LEN: usize = field::SSRC.end;

/// Length of the header-extension preamble: 16-bit profile + 16-bit length (RFC 3550 §5.3.1).
const EXTENSION_HEADER_LEN: usize = 4;

/// Writes `bytes` at `at`; does nothing if the buffer ends first.
#[inline]
fn put<const N: usize>(buf: &mut [u8], at: usize, bytes: [u8; N]) {
    if let Some(dst) = buf.get_mut(at..).and_then(<[u8]>::first_chunk_mut) {
        *dst = bytes;
    }
}

/// A read/write view of one RTP packet (RFC 3550 §5.1) over any byte buffer.
///
/// Build it with [`new_checked`](Self::new_checked) for untrusted input. The view owns nothing but
/// `T`; getters read the buffer on every call.
///
/// ```
/// use mcvideo_relay::wire::rtp::{RtpHeader, RtpPacket};
///
/// let mut buf = [0u8; RtpHeader::LEN + 3];
/// let header = RtpHeader { marker: true, payload_type: 96, sequence_number: 7, timestamp: 90_000, ssrc: 0xdead_beef };
/// let n = header.emit(&mut buf).unwrap();
/// buf[n..].copy_from_slice(b"abc");
///
/// let packet = RtpPacket::new_checked(&buf[..]).unwrap();
/// assert_eq!(packet.ssrc(), 0xdead_beef);
/// assert_eq!(packet.payload(), b"abc");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RtpPacket<T> {
    packet_view_basics! {
        /// Wraps a buffer without validating it.
        ///
        /// Getters never panic, but over a malformed buffer they read zeros and empty slices. Use this
        /// for buffers you are about to fill; use [`new_checked`](Self::new_checked) for input.
    }

    /// Checks that the buffer holds a well-formed RTP packet.
    ///
    /// # Errors
    ///
    /// * [`Error::Truncated`]: fewer than 12 bytes, or the CSRC list or the extension preamble
    ///   runs past the end;
    /// * [`Error::BadVersion`]: `V` is not 2;
    /// * [`Error::BadLength`]: the extension length runs past the end, or the padding count is
    ///   larger than what follows the header;
    /// * [`Error::Malformed`]: `P` is set and the padding count is zero.
    pub fn check_len(&self) -> Result<()> {
        let buf = self.buffer.as_ref();
        let len = buf.len();
        let header_len = self.check_header()?;
        if self.padding() {
            // `len >= HEADER_LEN`, so the last byte exists.
            let count = buf.last().copied().map_or(0, usize::from);
            if count == 0 {
                return Err(Error::Malformed("rtp padding count is zero"));
            }
            if count > len - header_len {
                return Err(Error::BadLength("rtp padding count"));
            }
        }
        Ok(())
    }

    /// Checks the header alone (version, CSRC list, extension) and returns its length. Unlike
    /// [`check_len`](Self::check_len) it does not look at the padding count, which an SRTP
    /// packet carries encrypted.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`], [`Error::BadVersion`], [`Error::BadLength`] as for `check_len`.
    pub fn check_header(&self) -> Result<usize> {
        let buf = self.buffer.as_ref();
        let len = buf.len();
        if len < HEADER_LEN {
            return Err(Error::Truncated("rtp fixed header"));
        }
        if self.version() != VERSION {
            return Err(Error::BadVersion);
        }
        let mut header_len = self.csrc_end();
        if len < header_len {
            return Err(Error::Truncated("rtp csrc list"));
        }
        if self.has_extension() {
            if len < header_len + EXTENSION_HEADER_LEN {
                return Err(Error::Truncated("rtp header extension"));
            }
            header_len += EXTENSION_HEADER_LEN + 4 * usize::from(be16(buf, header_len + 2));
            if len < header_len {
                return Err(Error::BadLength("rtp header extension length"));
            }
        }
        Ok(header_len)
    }

    /// Unwraps the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole buffer (header, payload and padding).
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Padding flag `P`: the packet ends with [`padding_len`](Self::padding_len) padding bytes.
    #[inline]
    pub fn padding(&self) -> bool {
        self.byte(field::VPXCC) & 0x20 != 0
    }

    /// Extension flag `X`: a header extension follows the CSRC list (see
    /// [`extension`](Self::extension)).
    #[inline]
    pub fn has_extension(&self) -> bool {
        self.byte(field::VPXCC) & 0x10 != 0
    }

    /// CSRC count `CC` (0..=15).
    #[inline]
    pub fn csrc_count(&self) -> u8 {
        self.byte(field::VPXCC) & 0x0f
    }

    /// Marker bit `M` (for video: last packet of a frame).
    #[inline]
    pub fn marker(&self) -> bool {
        self.byte(field::M_PT) & 0x80 != 0
    }

    /// Payload type `PT` (7 bits).
    #[inline]
    pub fn payload_type(&self) -> u8 {
        self.byte(field::M_PT) & 0x7f
    }

    /// Sequence number.
    #[inline]
    pub fn sequence_number(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SEQUENCE.start)
    }

    /// Media timestamp.
    #[inline]
    pub fn timestamp(&self) -> u32 {
        be32(self.buffer.as_ref(), field::TIMESTAMP.start).unwrap_or(0)
    }

    /// Synchronization source identifier.
    #[inline]
    pub fn ssrc(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SSRC.start).unwrap_or(0)
    }

    /// End of the CSRC list.
    #[inline]
    fn csrc_end(&self) -> usize {
        field::CSRC + 4 * usize::from(self.csrc_count())
    }

    /// The `index`-th contributing source, or `None` if `index >= csrc_count()`.
    #[inline]
    pub fn csrc(&self, index: usize) -> Option<u32> {
        if index >= usize::from(self.csrc_count()) {
            return None;
        }
        let at = field::CSRC + 4 * index;
        self.buffer
            .as_ref()
            .get(at..)
            .and_then(<[u8]>::first_chunk)
            .map(|b| u32::from_be_bytes(*b))
    }

    /// All contributing sources, in order.
    #[inline]
    pub fn csrcs(&self) -> impl ExactSizeIterator<Item = u32> + '_ {
        let list = self
            .buffer
            .as_ref()
            .get(field::CSRC..self.csrc_end())
            .unwrap_or_default();
        list.chunks_exact(4)
            .map(|w| w.first_chunk().map_or(0, |b| u32::from_be_bytes(*b)))
    }

    /// Header length: fixed header, CSRC list and header extension (if `X` is set).
    #[inline]
    pub fn header_len(&self) -> usize {
        let csrc_end = self.csrc_end();
        if self.has_extension() {
            let words = usize::from(be16(self.buffer.as_ref(), csrc_end + 2));
            csrc_end + EXTENSION_HEADER_LEN + 4 * words
        } else {
            csrc_end
        }
    }

    /// The header extension (RFC 3550 §5.3.1) as `(profile, data)`, `None` if `X` is clear.
    ///
    /// `data` is the raw extension body (`length × 4` bytes); RFC 8285 elements inside it are not
    /// parsed here.
    #[inline]
    pub fn extension(&self) -> Option<(u16, &[u8])> {
        if !self.has_extension() {
            return None;
        }
        let buf = self.buffer.as_ref();
        let at = self.csrc_end();
        let profile = be16(buf, at);
        let data = buf
            .get(at + EXTENSION_HEADER_LEN..self.header_len())
            .unwrap_or_default();
        Some((profile, data))
    }

    /// Number of padding bytes at the end (the last byte, if `P` is set; else 0).
    #[inline]
    pub fn padding_len(&self) -> usize {
        if self.padding() {
            self.buffer.as_ref().last().copied().map_or(0, usize::from)
        } else {
            0
        }
    }

    /// Range of the payload: after the header, before the padding.
    #[inline]
    fn payload_range(&self) -> core::ops::Range<usize> {
        let end = self
            .buffer
            .as_ref()
            .len()
            .saturating_sub(self.padding_len());
        self.header_len()..end
    }

    /// The payload, without header and padding.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(self.payload_range())
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RtpPacket<T> {
    /// Sets the marker bit.
    #[inline]
    pub fn set_marker(&mut self, marker: bool) {
        if let Some(b) = self.buffer.as_mut().get_mut(field::M_PT) {
            *b = (*b & 0x7f) | if marker { 0x80 } else { 0 };
        }
    }

    /// Sets the payload type; only the low 7 bits of `payload_type` are used.
    #[inline]
    pub fn set_payload_type(&mut self, payload_type: u8) {
        if let Some(b) = self.buffer.as_mut().get_mut(field::M_PT) {
            *b = (*b & 0x80) | (payload_type & 0x7f);
        }
    }

    /// Sets the sequence number.
    #[inline]
    pub fn set_sequence_number(&mut self, sequence_number: u16) {
        put(
            self.buffer.as_mut(),
            field::SEQUENCE.start,
            sequence_number.to_be_bytes(),
        );
    }

    /// Sets the media timestamp.
    #[inline]
    pub fn set_timestamp(&mut self, timestamp: u32) {
        put(
            self.buffer.as_mut(),
            field::TIMESTAMP.start,
            timestamp.to_be_bytes(),
        );
    }

    /// Sets the synchronization source identifier.
    #[inline]
    pub fn set_ssrc(&mut self, ssrc: u32) {
        put(self.buffer.as_mut(), field::SSRC.start, ssrc.to_be_bytes());
    }

    /// The payload, mutably (same bounds as [`payload`](RtpPacket::payload)).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.payload_range();
        self.buffer.as_mut().get_mut(range).unwrap_or_default()
    }
}

/// The fixed RTP header without CSRCs, extension or padding: what a relay or a load generator
/// emits in front of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RtpHeader {
    /// Marker bit `M`.
    pub marker: bool,
    /// Payload type, 0..=127.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence_number: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronization source identifier.
    pub ssrc: u32,
}

impl RtpHeader {
    /// Bytes written by [`emit`](Self::emit) (RFC 3550 §5.1 fixed header).
    pub const LEN: usize = HEADER_LEN;

    /// Reads the fixed-header fields of a packet (CSRCs, extension and padding are ignored).
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(packet: &RtpPacket<T>) -> Self {
        Self {
            marker: packet.marker(),
            payload_type: packet.payload_type(),
            sequence_number: packet.sequence_number(),
            timestamp: packet.timestamp(),
            ssrc: packet.ssrc(),
        }
    }

    /// Writes the 12-byte header (`V=2, P=0, X=0, CC=0`) at the start of `buf` and returns
    /// [`Self::LEN`]. The rest of `buf` is left untouched.
    ///
    /// # Errors
    ///
    /// * [`Error::BufferTooSmall`] if `buf` is shorter than [`Self::LEN`];
    /// * [`Error::Malformed`] if `payload_type` does not fit in 7 bits.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        if self.payload_type > 0x7f {
            return Err(Error::Malformed("rtp payload type above 127"));
        }
        let out: &mut [u8; HEADER_LEN] = buf.first_chunk_mut().ok_or(Error::BufferTooSmall)?;
        let [s0, s1] = self.sequence_number.to_be_bytes();
        let [t0, t1, t2, t3] = self.timestamp.to_be_bytes();
        let [c0, c1, c2, c3] = self.ssrc.to_be_bytes();
        let m_pt = if self.marker { 0x80 } else { 0 } | self.payload_type;
        *out = [VERSION << 6, m_pt, s0, s1, t0, t1, t2, t3, c0, c1, c2, c3];
        Ok(Self::LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-assembled per RFC 3550 §5.1: V=2, P=0, X=0, CC=0, M=1, PT=96, seq=0x1234,
    /// ts=0xdeadbeef, SSRC=0x01020304, payload "abcd".
    static PACKET_BYTES: [u8; 16] = [
        0x80, 0xe0, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04, b'a', b'b', b'c',
        b'd',
    ];

    /// webrtc-rs `rtp` 0.17 `packet_test.rs::test_basic` (from pion/rtp): X=1, profile 0x0001,
    /// one extension word, M=1, PT=96, seq=27023, ts=3653407706, SSRC=476325762.
    static EXT_BYTES: [u8; 25] = [
        0x90, 0xe0, 0x69, 0x8f, 0xd9, 0xc2, 0x93, 0xda, 0x1c, 0x64, 0x27, 0x82, 0x00, 0x01, 0x00,
        0x01, 0xff, 0xff, 0xff, 0xff, 0x98, 0x36, 0xbe, 0x88, 0x9e,
    ];

    /// webrtc-rs `rtp` 0.17 `packet_test.rs::test_padding`: P=1, 3 padding bytes, 25-byte payload.
    static PADDED_BYTES: [u8; 40] = [
        0xa0, 0x60, 0x19, 0x58, 0x63, 0xff, 0x7d, 0x7c, 0x4b, 0x98, 0xd4, 0x0a, 0x67, 0x4d, 0x00,
        0x29, 0x9a, 0x64, 0x03, 0xc0, 0x11, 0x3f, 0x2c, 0xd4, 0x04, 0x04, 0x05, 0x00, 0x00, 0x03,
        0x03, 0xe8, 0x00, 0x00, 0xea, 0x60, 0x04, 0x00, 0x00, 0x03,
    ];

    /// CC=2, X=1 (RFC 8285 one-byte profile 0xBEDE, one word), P=1 (2 bytes), payload "xy".
    static FULL_BYTES: [u8; 36] = [
        0xb2, 0x08, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01, 0xca, 0xfe, 0xba, 0xbe, // fixed
        0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x22, 0x22, // CSRCs
        0xbe, 0xde, 0x00, 0x01, 0x10, 0xaa, 0x00, 0x00, // extension
        b'x', b'y', // payload
        0x00, 0x00, 0x00, 0x00, 0x00, 0x06, // padding, count 6
    ];

    #[test]
    fn test_deconstruct() {
        let p = RtpPacket::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.version(), 2);
        assert!(!p.padding());
        assert!(!p.has_extension());
        assert_eq!(p.csrc_count(), 0);
        assert!(p.marker());
        assert_eq!(p.payload_type(), 96);
        assert_eq!(p.sequence_number(), 0x1234);
        assert_eq!(p.timestamp(), 0xdead_beef);
        assert_eq!(p.ssrc(), 0x0102_0304);
        assert_eq!(p.csrc(0), None);
        assert_eq!(p.csrcs().count(), 0);
        assert_eq!(p.header_len(), 12);
        assert_eq!(p.extension(), None);
        assert_eq!(p.padding_len(), 0);
        assert_eq!(p.payload(), b"abcd");
        assert_eq!(p.as_bytes(), &PACKET_BYTES[..]);
        assert_eq!(
            RtpHeader::parse(&p),
            RtpHeader {
                marker: true,
                payload_type: 96,
                sequence_number: 0x1234,
                timestamp: 0xdead_beef,
                ssrc: 0x0102_0304
            }
        );
    }

    #[test]
    fn test_deconstruct_extension() {
        let p = RtpPacket::new_checked(&EXT_BYTES[..]).unwrap();
        assert!(p.has_extension());
        assert!(p.marker());
        assert_eq!(p.payload_type(), 96);
        assert_eq!(p.sequence_number(), 27023);
        assert_eq!(p.timestamp(), 3_653_407_706);
        assert_eq!(p.ssrc(), 476_325_762);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.extension(), Some((1, &[0xff; 4][..])));
        assert_eq!(p.payload(), &[0x98, 0x36, 0xbe, 0x88, 0x9e]);
    }

    #[test]
    fn test_deconstruct_padding() {
        let p = RtpPacket::new_checked(&PADDED_BYTES[..]).unwrap();
        assert!(p.padding());
        assert_eq!(p.padding_len(), 3);
        assert_eq!(p.payload(), &PADDED_BYTES[12..12 + 25]);
    }

    #[test]
    fn test_deconstruct_full() {
        let p = RtpPacket::new_checked(&FULL_BYTES[..]).unwrap();
        assert_eq!(p.csrc_count(), 2);
        assert!(!p.marker());
        assert_eq!(p.payload_type(), 8);
        assert_eq!(p.sequence_number(), 0xffff);
        assert_eq!(p.timestamp(), 1);
        assert_eq!(p.ssrc(), 0xcafe_babe);
        assert_eq!(p.csrc(0), Some(0x1111_1111));
        assert_eq!(p.csrc(1), Some(0x2222_2222));
        assert_eq!(p.csrc(2), None);
        assert_eq!(p.csrcs().collect::<Vec<_>>(), [0x1111_1111, 0x2222_2222]);
        assert_eq!(p.csrcs().len(), 2);
        assert_eq!(p.header_len(), 28);
        assert_eq!(p.extension(), Some((0xbede, &[0x10, 0xaa, 0, 0][..])));
        assert_eq!(p.padding_len(), 6);
        assert_eq!(p.payload(), b"xy");
    }

    #[test]
    fn test_construct() {
        let mut buf = [0xa5u8; 16];
        let header = RtpHeader {
            marker: true,
            payload_type: 96,
            sequence_number: 0x1234,
            timestamp: 0xdead_beef,
            ssrc: 0x0102_0304,
        };
        assert_eq!(header.emit(&mut buf), Ok(12));
        assert_eq!(buf[12..], [0xa5; 4], "emit wrote past the header");
        buf[12..].copy_from_slice(b"abcd");
        assert_eq!(buf, PACKET_BYTES);
    }

    #[test]
    fn test_emit_errors() {
        let header = RtpHeader::default();
        assert_eq!(header.emit(&mut [0; 11]), Err(Error::BufferTooSmall));
        assert_eq!(header.emit(&mut []), Err(Error::BufferTooSmall));
        let bad_pt = RtpHeader {
            payload_type: 128,
            ..RtpHeader::default()
        };
        assert!(matches!(
            bad_pt.emit(&mut [0; 12]),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn test_setters() {
        let mut buf = FULL_BYTES;
        let mut p = RtpPacket::new_checked(&mut buf[..]).unwrap();
        p.set_marker(true);
        p.set_payload_type(0xff); // only 7 bits used
        p.set_sequence_number(0x0102);
        p.set_timestamp(0x0304_0506);
        p.set_ssrc(0x0708_090a);
        p.payload_mut().copy_from_slice(b"XY");
        assert!(p.marker());
        assert_eq!(p.payload_type(), 0x7f);
        p.set_payload_type(96);
        assert!(p.marker(), "set_payload_type kept the marker");
        assert_eq!(p.payload_type(), 96);
        p.set_marker(false);
        assert_eq!(p.payload_type(), 96, "set_marker kept the payload type");
        assert_eq!(p.sequence_number(), 0x0102);
        assert_eq!(p.timestamp(), 0x0304_0506);
        assert_eq!(p.ssrc(), 0x0708_090a);
        assert_eq!(p.payload(), b"XY");
        // Nothing else moved.
        assert_eq!(buf[0], FULL_BYTES[0]);
        assert_eq!(buf[12..28], FULL_BYTES[12..28]);
        assert_eq!(buf[30..], FULL_BYTES[30..]);
        assert_eq!(
            buf[..12],
            [0xb2, 96, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a]
        );
    }

    #[test]
    fn test_impossible_len() {
        // Short fixed header, including the empty buffer.
        for n in 0..12 {
            assert_eq!(
                RtpPacket::new_checked(&PACKET_BYTES[..n]),
                Err(Error::Truncated("rtp fixed header")),
                "{n} bytes"
            );
        }
        // Exactly 12 bytes is a packet with an empty payload.
        let p = RtpPacket::new_checked(&PACKET_BYTES[..12]).unwrap();
        assert_eq!(p.payload(), b"");
    }

    #[test]
    fn test_bad_version() {
        for v in [0u8, 1, 3] {
            let mut buf = PACKET_BYTES;
            buf[0] = (buf[0] & 0x3f) | (v << 6);
            assert_eq!(RtpPacket::new_checked(&buf[..]), Err(Error::BadVersion));
        }
    }

    #[test]
    fn test_csrc_overflow() {
        let mut buf = PACKET_BYTES; // 4 bytes after the fixed header: room for one CSRC
        buf[0] |= 0x01;
        assert!(RtpPacket::new_checked(&buf[..]).is_ok());
        buf[0] |= 0x0f; // CC = 15
        assert_eq!(
            RtpPacket::new_checked(&buf[..]),
            Err(Error::Truncated("rtp csrc list"))
        );
        let p = RtpPacket::new_unchecked(&buf[..]);
        assert_eq!(p.csrc(0), Some(u32::from_be_bytes(*b"abcd")));
        assert_eq!(p.csrc(1), None, "unchecked views read nothing past the end");
        assert_eq!(
            p.csrcs().count(),
            0,
            "unchecked views read nothing past the end"
        );
        assert_eq!(p.payload(), b"");
    }

    #[test]
    fn test_extension_overflow() {
        // X=1 but no room for the 4-byte preamble.
        let mut buf = [0u8; 14];
        buf[..12].copy_from_slice(&PACKET_BYTES[..12]);
        buf[0] |= 0x10;
        assert_eq!(
            RtpPacket::new_checked(&buf[..]),
            Err(Error::Truncated("rtp header extension"))
        );
        // Extension length runs one word past the end.
        let mut buf = EXT_BYTES;
        buf[15] = 5; // 20 bytes of extension data, only 9 bytes left
        assert_eq!(
            RtpPacket::new_checked(&buf[..]),
            Err(Error::BadLength("rtp header extension length"))
        );
        // Extension length 0xffff.
        buf[14] = 0xff;
        buf[15] = 0xff;
        assert_eq!(
            RtpPacket::new_checked(&buf[..]),
            Err(Error::BadLength("rtp header extension length"))
        );
        let p = RtpPacket::new_unchecked(&buf[..]);
        assert_eq!(p.extension(), Some((1, &[][..])));
        assert_eq!(p.payload(), b"");
        // Extension exactly fills the rest: empty payload.
        let mut buf = EXT_BYTES;
        buf[15] = 2; // 8 bytes; 9 remain
        assert!(RtpPacket::new_checked(&buf[..20 + 4]).is_ok());
        assert_eq!(
            RtpPacket::new_checked(&buf[..20 + 4]).unwrap().payload(),
            b""
        );
    }

    #[test]
    fn test_bad_padding() {
        // Count 0.
        let mut buf = PADDED_BYTES;
        buf[39] = 0;
        assert_eq!(
            RtpPacket::new_checked(&buf[..]),
            Err(Error::Malformed("rtp padding count is zero"))
        );
        // Count eats the whole payload: allowed (payload empty).
        buf[39] = 28;
        let p = RtpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload(), b"");
        // Count reaches into the header.
        buf[39] = 29;
        assert_eq!(
            RtpPacket::new_checked(&buf[..]),
            Err(Error::BadLength("rtp padding count"))
        );
        buf[39] = 0xff;
        assert_eq!(
            RtpPacket::new_checked(&buf[..]),
            Err(Error::BadLength("rtp padding count"))
        );
        let p = RtpPacket::new_unchecked(&buf[..]);
        assert_eq!(p.payload(), b"");
        // P=1 on a bare 12-byte header: the count is the last SSRC byte and overruns.
        let mut buf = PACKET_BYTES;
        buf[0] |= 0x20;
        assert_eq!(
            RtpPacket::new_checked(&buf[..12]),
            Err(Error::BadLength("rtp padding count"))
        );
        // Padding after CSRCs and extension is measured from the end of the full header.
        let mut buf = FULL_BYTES;
        buf[35] = 8; // payload (2) + padding (6) = 8 bytes after the 28-byte header
        assert!(RtpPacket::new_checked(&buf[..]).is_ok());
        buf[35] = 9;
        assert_eq!(
            RtpPacket::new_checked(&buf[..]),
            Err(Error::BadLength("rtp padding count"))
        );
    }

    #[test]
    fn test_unchecked_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut buf = [0u8; 64];
        for _ in 0..20_000 {
            let len = (rng.next() % 65) as usize;
            for b in &mut buf[..len] {
                *b = rng.next() as u8;
            }
            let mut p = RtpPacket::new_unchecked(&mut buf[..len]);
            let checked = p.check_len().is_ok();
            let _ = (p.version(), p.padding(), p.csrc_count(), p.marker());
            let _ = (
                p.payload_type(),
                p.sequence_number(),
                p.timestamp(),
                p.ssrc(),
            );
            let _ = (p.csrc(3), p.csrcs().count(), p.header_len(), p.extension());
            let (payload_len, padding_len, header_len) =
                (p.payload().len(), p.padding_len(), p.header_len());
            if checked {
                assert_eq!(header_len + payload_len + padding_len, len);
            }
            p.set_marker(true);
            p.set_payload_type(1);
            p.set_sequence_number(2);
            p.set_timestamp(3);
            p.set_ssrc(4);
            let _ = p.payload_mut().len();
        }
    }

    /// Tiny xorshift64 PRNG so the tests need no `rand`.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Differential test against webrtc-rs `rtp` 0.17, the oracle: random headers (CSRCs,
    /// RFC 8285 extensions, padding) are serialized by `rtp`'s own `Marshal`, parsed by both
    /// `rtp`'s `Unmarshal` and this view, and every field must agree.
    #[test]
    fn test_oracle_rtp_crate() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut checked_ext = 0;
        for case in 0..500 {
            let mut h = rtp::header::Header {
                version: 2,
                padding: rng.next() % 4 == 0,
                marker: rng.next() % 2 == 0,
                payload_type: (rng.next() % 128) as u8,
                sequence_number: rng.next() as u16,
                timestamp: rng.next() as u32,
                ssrc: rng.next() as u32,
                csrc: (0..rng.next() % 16).map(|_| rng.next() as u32).collect(),
                ..Default::default()
            };
            for _ in 0..rng.next() % 4 {
                // Lengths 1..=20 select the one-byte (<= 16) or two-byte profile in `rtp`.
                let len = 1 + (rng.next() % 20) as usize;
                let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                let id = 1 + (rng.next() % 14) as u8;
                // `rtp` rejects some (id, size) pairs for the profile it picked: skip those.
                let _ = h.set_extension(id, data.into());
            }
            let payload: Vec<u8> = (0..rng.next() % 1300).map(|_| rng.next() as u8).collect();

            use webrtc_util::marshal::{Marshal, Unmarshal};
            let pkt = rtp::packet::Packet {
                header: h.clone(),
                payload: payload.clone().into(),
            };
            let bytes = pkt.marshal().expect("rtp marshals its own header").to_vec();
            let theirs = rtp::packet::Packet::unmarshal(&mut &bytes[..]).expect("rtp unmarshals");
            assert_eq!(theirs.header.ssrc, h.ssrc);
            let p = RtpPacket::new_checked(&bytes[..])
                .unwrap_or_else(|e| panic!("case {case}: {e} for {h:?}"));
            assert_eq!(p.version(), h.version, "case {case}");
            assert_eq!(p.padding(), h.padding, "case {case}");
            assert_eq!(p.has_extension(), h.extension, "case {case}");
            assert_eq!(p.marker(), h.marker, "case {case}");
            assert_eq!(p.payload_type(), h.payload_type, "case {case}");
            assert_eq!(p.sequence_number(), h.sequence_number, "case {case}");
            assert_eq!(p.timestamp(), h.timestamp, "case {case}");
            assert_eq!(p.ssrc(), h.ssrc, "case {case}");
            assert_eq!(usize::from(p.csrc_count()), h.csrc.len(), "case {case}");
            assert_eq!(p.csrcs().collect::<Vec<_>>(), h.csrc, "case {case}");
            match p.extension() {
                None => assert!(!h.extension, "case {case}"),
                Some((profile, data)) => {
                    checked_ext += 1;
                    assert_eq!(profile, h.extension_profile, "case {case}");
                    let words = h.get_extension_payload_len().div_ceil(4);
                    assert_eq!(data.len(), words * 4, "case {case}");
                }
            }
            assert_eq!(
                p.payload(),
                &theirs.payload[..],
                "case {case}: payload as rtp reads it"
            );
            assert_eq!(p.payload(), &payload[..], "case {case}");
            assert_eq!(RtpHeader::parse(&p).ssrc, h.ssrc);
        }
        assert!(checked_ext > 100, "too few extension cases: {checked_ext}");
    }
}
