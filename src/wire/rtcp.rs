//! RTCP packets (RFC 3550 §6, RFC 4585 §6, RFC 5104 §4.3): a view of one packet, a walk over a
//! compound datagram, and emitters for the few packets a relay originates.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|  count  |      PT       |     length (words − 1)        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   SSRC of packet sender                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   body: report blocks, SDES chunks, BYE list, APP name+data,  |
//! |   feedback media SSRC + FCI ...            | padding (P=1)    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! # Contract
//!
//! * [`RtcpPacket::new_checked`] accepts a buffer that *starts* with a well-formed packet: version
//!   2, at least the 8-byte header + sender SSRC, a `length` field that stays inside the buffer,
//!   and (if `P` is set) a non-zero padding count that fits in the body. The buffer may continue
//!   past the packet; the view only ever reads the packet's own `(length + 1) × 4` bytes.
//! * [`compound`] walks a datagram packet by packet using the `length` fields; it stops after the
//!   first error, and every step consumes at least 8 bytes, so a datagram of `n` bytes yields at
//!   most `n / 8 + 1` items. [`validate_compound`] also requires the packets to tile the datagram
//!   exactly and padding to appear only on the last packet (RFC 3550 §6.4.1).
//! * Nothing in this module panics, whatever the bytes; reading allocates nothing. Views built
//!   with [`RtcpPacket::new_unchecked`] read missing fields as zero / empty.
//! * Type-specific contents (report blocks, SDES items) are not validated: the relay forwards them
//!   untouched. The helpers [`RtcpPacket::media_ssrc`], [`RtcpPacket::bye_ssrcs`],
//!   [`RtcpPacket::app_name`], [`RtcpPacket::fir_entries`] and [`RtcpPacket::nack_entries`] read
//!   the fields the relay acts on, bounded by the packet.
//! * The datagram must be plain RTCP: strip the SRTCP trailer (RFC 3711 §3.4) before walking.
//! * Emitters write into a caller-owned buffer and return the number of bytes written, or
//!   [`Error::BufferTooSmall`].

use core::iter::FusedIterator;

use super::{be16, be32, Error, Result};

/// Field offsets shared by every RTCP packet (RFC 3550 §6.4) and feedback packet (RFC 4585 §6.1).
mod field {
    /// `V(2) P(1) count(5)`.
    pub(super) const V_P_COUNT: usize = 0;
    /// Packet type.
    pub(super) const PT: usize = 1;
    /// Length in 32-bit words minus one (2 bytes).
    pub(super) const LENGTH: usize = 2;
    /// SSRC of the packet sender (4 bytes).
    pub(super) const SENDER_SSRC: usize = 4;
    /// Start of the type-specific body.
    pub(super) const BODY: usize = 8;
    /// Feedback (PT 205/206): SSRC of the media source (4 bytes).
    pub(super) const MEDIA_SSRC: usize = 8;
    /// Feedback (PT 205/206): feedback control information.
    pub(super) const FCI: usize = 12;
    /// APP (PT 204): four ASCII characters.
    pub(super) const APP_NAME: usize = 8;
}

/// The RTCP version this module reads and writes (RFC 3550 §6.4.1).
pub const VERSION: u8 = 2;

/// Length of the common header plus the sender SSRC: the shortest packet [`RtcpPacket`] accepts.
pub const HEADER_LEN: usize = field::BODY;

/// RFC 4585 §6.2.1: transport-layer feedback FMT 1, Generic NACK.
const FMT_NACK: u8 = 1;
/// RFC 4585 §6.3.1: payload-specific feedback FMT 1, Picture Loss Indication.
const FMT_PLI: u8 = 1;
/// RFC 5104 §4.3.1: payload-specific feedback FMT 4, Full Intra Request.
const FMT_FIR: u8 = 4;

open_enum! {
    /// RTCP packet type (the second header byte), an open enum.
    ///
    /// `From<u8>` maps every known number to its variant, so `Unknown` only ever holds numbers
    /// not listed here; the conversion back to `u8` is lossless.
    pub enum PacketType(u8) {
        /// 200, SR: sender report (RFC 3550 §6.4.1).
        SenderReport = 0xc8,
        /// 201, RR: receiver report (RFC 3550 §6.4.2).
        ReceiverReport = 0xc9,
        /// 202, SDES: source description (RFC 3550 §6.5).
        SourceDescription = 0xca,
        /// 203, BYE: goodbye (RFC 3550 §6.6).
        Goodbye = 0xcb,
        /// 204, APP: application-defined (RFC 3550 §6.7); MCVideo transmission control rides here.
        App = 0xcc,
        /// 205, RTPFB: transport-layer feedback (RFC 4585 §6.2).
        TransportFeedback = 0xcd,
        /// 206, PSFB: payload-specific feedback (RFC 4585 §6.3, RFC 5104 §4.3).
        PayloadFeedback = 0xce,
        /// 207, XR: extended report (RFC 3611).
        ExtendedReport = 0xcf,
    }
}

/// What an RTCP packet is, from its packet type and, for feedback, its FMT (the count field).
///
/// The `u8` in `TransportFeedback`/`PayloadFeedback` is the FMT; in `Unknown` it is the packet
/// type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RtcpKind {
    /// PT 200.
    SenderReport,
    /// PT 201.
    ReceiverReport,
    /// PT 202.
    SourceDescription,
    /// PT 203.
    Goodbye,
    /// PT 204.
    App,
    /// PT 205 FMT 1: Generic NACK (RFC 4585 §6.2.1).
    Nack,
    /// PT 205 with any other FMT (e.g. 15: transport-wide congestion control).
    TransportFeedback(u8),
    /// PT 206 FMT 1: Picture Loss Indication (RFC 4585 §6.3.1).
    Pli,
    /// PT 206 FMT 4: Full Intra Request (RFC 5104 §4.3.1).
    Fir,
    /// PT 206 with any other FMT (e.g. 15: application layer feedback such as REMB).
    PayloadFeedback(u8),
    /// PT 207.
    ExtendedReport,
    /// Any other packet type.
    Unknown(u8),
}

/// `u32` from a 4-byte chunk (as produced by `chunks_exact(4)`).
#[inline]
fn word(chunk: &[u8]) -> u32 {
    chunk.first_chunk().map_or(0, |b| u32::from_be_bytes(*b))
}

/// A view of one RTCP packet (RFC 3550 §6.4) at the start of a buffer.
///
/// ```
/// use mcvideo_relay::wire::rtcp::{self, RtcpKind, RtcpPacket};
///
/// let mut buf = [0u8; 64];
/// let n = rtcp::emit_pli(0x1111, 0x2222, &mut buf).unwrap();
/// let pli = RtcpPacket::new_checked(&buf[..n]).unwrap();
/// assert_eq!(pli.kind(), RtcpKind::Pli);
/// assert_eq!(pli.media_ssrc(), Some(0x2222));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RtcpPacket<T> {
    packet_view_basics! {
        /// Wraps a buffer without validating it (for emitting; getters never panic but read zeros /
        /// empty slices where bytes are missing).
    }

    /// Checks that the buffer starts with a well-formed RTCP packet.
    ///
    /// # Errors
    ///
    /// * [`Error::Truncated`]: fewer than 8 bytes;
    /// * [`Error::BadVersion`]: `V` is not 2;
    /// * [`Error::BadLength`]: the `length` field points past the buffer, or makes the packet
    ///   shorter than 8 bytes (`length` 0), or the padding count is larger than the body;
    /// * [`Error::Malformed`]: `P` is set and the padding count is zero.
    pub fn check_len(&self) -> Result<()> {
        let buf = self.buffer.as_ref();
        if buf.len() < HEADER_LEN {
            return Err(Error::Truncated("rtcp header"));
        }
        if self.version() != VERSION {
            return Err(Error::BadVersion);
        }
        let packet_len = self.packet_len();
        if packet_len > buf.len() {
            return Err(Error::BadLength("rtcp length past end of datagram"));
        }
        if packet_len < HEADER_LEN {
            return Err(Error::BadLength("rtcp length shorter than header and ssrc"));
        }
        if self.padding() {
            let count = self.padding_len();
            if count == 0 {
                return Err(Error::Malformed("rtcp padding count is zero"));
            }
            if count > packet_len - HEADER_LEN {
                return Err(Error::BadLength("rtcp padding count"));
            }
        }
        Ok(())
    }

    /// Unwraps the buffer (all of it, including bytes past this packet).
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// This packet's bytes: exactly [`packet_len`](Self::packet_len) bytes for a checked view.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        buf.get(..self.packet_len()).unwrap_or(buf)
    }

    /// Padding flag `P`.
    #[inline]
    pub fn padding(&self) -> bool {
        self.byte(field::V_P_COUNT) & 0x20 != 0
    }

    /// The 5-bit count field: report count (SR/RR), source count (SDES/BYE), FMT (feedback),
    /// subtype (APP).
    #[inline]
    pub fn count(&self) -> u8 {
        self.byte(field::V_P_COUNT) & 0x1f
    }

    /// Packet type.
    #[inline]
    pub fn packet_type(&self) -> PacketType {
        PacketType::from(self.byte(field::PT))
    }

    /// The `length` field: packet length in 32-bit words, minus one.
    #[inline]
    pub fn length_words(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Packet length in bytes, `(length + 1) × 4` (at least 4, even for `length` 0).
    #[inline]
    pub fn packet_len(&self) -> usize {
        (usize::from(self.length_words()) + 1) * 4
    }

    /// SSRC of the packet sender (bytes 4..8).
    #[inline]
    pub fn sender_ssrc(&self) -> u32 {
        be32(self.as_bytes(), field::SENDER_SSRC).unwrap_or(0)
    }

    /// Number of padding bytes at the end of the packet (its last byte, if `P` is set; else 0).
    #[inline]
    pub fn padding_len(&self) -> usize {
        if self.padding() {
            self.as_bytes().last().copied().map_or(0, usize::from)
        } else {
            0
        }
    }

    /// Range of the body inside the packet: after the sender SSRC, before the padding.
    #[inline]
    fn body_range(&self) -> core::ops::Range<usize> {
        field::BODY..self.packet_len().saturating_sub(self.padding_len())
    }

    /// The body: everything after the 8-byte header + sender SSRC, within the packet, without
    /// padding.
    #[inline]
    pub fn body(&self) -> &[u8] {
        self.as_bytes().get(self.body_range()).unwrap_or_default()
    }

    /// Classifies the packet by type and FMT.
    #[inline]
    pub fn kind(&self) -> RtcpKind {
        let fmt = self.count();
        match self.packet_type() {
            PacketType::SenderReport => RtcpKind::SenderReport,
            PacketType::ReceiverReport => RtcpKind::ReceiverReport,
            PacketType::SourceDescription => RtcpKind::SourceDescription,
            PacketType::Goodbye => RtcpKind::Goodbye,
            PacketType::App => RtcpKind::App,
            PacketType::TransportFeedback if fmt == FMT_NACK => RtcpKind::Nack,
            PacketType::TransportFeedback => RtcpKind::TransportFeedback(fmt),
            PacketType::PayloadFeedback if fmt == FMT_PLI => RtcpKind::Pli,
            PacketType::PayloadFeedback if fmt == FMT_FIR => RtcpKind::Fir,
            PacketType::PayloadFeedback => RtcpKind::PayloadFeedback(fmt),
            PacketType::ExtendedReport => RtcpKind::ExtendedReport,
            PacketType::Unknown(pt) => RtcpKind::Unknown(pt),
        }
    }

    /// Whether this is a feedback packet (PT 205 or 206) with room for the media SSRC.
    #[inline]
    fn is_feedback(&self) -> bool {
        matches!(
            self.packet_type(),
            PacketType::TransportFeedback | PacketType::PayloadFeedback
        ) && self.body_range().end >= field::FCI
    }

    /// SSRC of the media source, for feedback packets (PT 205/206, RFC 4585 §6.1); `None` for
    /// other types or a feedback packet too short to hold it.
    ///
    /// For FIR this field is 0 by RFC 5104 §4.3.1; the target is in [`fir_entries`](Self::fir_entries).
    #[inline]
    pub fn media_ssrc(&self) -> Option<u32> {
        if self.is_feedback() {
            be32(self.as_bytes(), field::MEDIA_SSRC)
        } else {
            None
        }
    }

    /// Feedback control information (after the media SSRC, before padding) for feedback
    /// packets; empty for other types.
    #[inline]
    pub fn fci(&self) -> &[u8] {
        if !self.is_feedback() {
            return &[];
        }
        let end = self.body_range().end;
        self.as_bytes().get(field::FCI..end).unwrap_or_default()
    }

    /// The FCI of a packet of feedback `kind`; empty for any other packet.
    #[inline]
    fn fci_of(&self, kind: RtcpKind) -> &[u8] {
        if self.kind() == kind {
            self.fci()
        } else {
            &[]
        }
    }

    /// FIR entries `(ssrc, command sequence number)` (RFC 5104 §4.3.1.1); empty unless
    /// [`kind`](Self::kind) is [`RtcpKind::Fir`]. A trailing partial entry is ignored.
    #[inline]
    pub fn fir_entries(&self) -> impl ExactSizeIterator<Item = (u32, u8)> + '_ {
        self.fci_of(RtcpKind::Fir).chunks_exact(8).map(|e| {
            let ssrc = word(e);
            let seq = e.get(4).copied().unwrap_or(0);
            (ssrc, seq)
        })
    }

    /// Generic NACK entries `(pid, blp)` (RFC 4585 §6.2.1); empty unless [`kind`](Self::kind) is
    /// [`RtcpKind::Nack`].
    #[inline]
    pub fn nack_entries(&self) -> impl ExactSizeIterator<Item = (u16, u16)> + '_ {
        self.fci_of(RtcpKind::Nack).chunks_exact(4).map(|e| {
            let w = word(e);
            ((w >> 16) as u16, w as u16)
        })
    }

    /// Every SSRC/CSRC a BYE says goodbye for (RFC 3550 §6.6), starting with the one in the
    /// sender-SSRC position; empty for other types.
    ///
    /// Yields `min(count, words in the packet after the header word)` items: a source count
    /// larger than the packet is cut at the packet end (before padding).
    #[inline]
    pub fn bye_ssrcs(&self) -> impl Iterator<Item = u32> + '_ {
        let (list, count) = if self.packet_type() == PacketType::Goodbye {
            let end = self.body_range().end;
            let list = self
                .as_bytes()
                .get(field::SENDER_SSRC..end)
                .unwrap_or_default();
            (list, usize::from(self.count()))
        } else {
            (&[][..], 0)
        };
        list.chunks_exact(4).take(count).map(word)
    }

    /// The 4-character name of an APP packet (RFC 3550 §6.7); `None` for other types or an APP
    /// packet too short to hold it.
    #[inline]
    pub fn app_name(&self) -> Option<[u8; 4]> {
        if self.packet_type() != PacketType::App || self.body_range().end < field::APP_NAME + 4 {
            return None;
        }
        self.as_bytes()
            .get(field::APP_NAME..)
            .and_then(<[u8]>::first_chunk)
            .copied()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RtcpPacket<T> {
    /// Sets the SSRC of the packet sender.
    #[inline]
    pub fn set_sender_ssrc(&mut self, ssrc: u32) {
        if let Some(dst) = self
            .buffer
            .as_mut()
            .get_mut(field::SENDER_SSRC..)
            .and_then(<[u8]>::first_chunk_mut)
        {
            *dst = ssrc.to_be_bytes();
        }
    }

    /// Sets the SSRC of the media source of a feedback packet (PT 205/206). Returns `false`, and
    /// writes nothing, if [`media_ssrc`](RtcpPacket::media_ssrc) would be `None`.
    #[inline]
    pub fn set_media_ssrc(&mut self, ssrc: u32) -> bool {
        if !self.is_feedback() {
            return false;
        }
        match self
            .buffer
            .as_mut()
            .get_mut(field::MEDIA_SSRC..)
            .and_then(<[u8]>::first_chunk_mut)
        {
            Some(dst) => {
                *dst = ssrc.to_be_bytes();
                true
            }
            None => false,
        }
    }
}

/// Iterator over the packets of an RTCP datagram; see [`compound`].
#[derive(Debug, Clone)]
pub struct Compound<'a> {
    rest: &'a [u8],
}

impl<'a> Compound<'a> {
    /// The bytes not yet walked (empty after an error).
    #[inline]
    #[must_use]
    pub fn remaining(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<RtcpPacket<&'a [u8]>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = RtcpPacket::new_checked(self.rest).and_then(|p| {
            // `check_len` put the packet inside `rest`, and `packet_len >= HEADER_LEN`.
            let (packet, tail) = self
                .rest
                .split_at_checked(p.packet_len())
                .ok_or(Error::BadLength("rtcp length past end of datagram"))?;
            self.rest = tail;
            Ok(RtcpPacket::new_unchecked(packet))
        });
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.rest.is_empty() {
            (0, Some(0))
        } else {
            (1, Some(self.rest.len() / HEADER_LEN + 1))
        }
    }
}

impl FusedIterator for Compound<'_> {}

/// Walks every packet of an RTCP datagram (compound or not) by its `length` field.
///
/// Each item is a checked view restricted to one packet. After the first `Err` the iterator is
/// exhausted; since every packet is at least 8 bytes, the walk is bounded by the datagram length.
///
/// ```
/// use mcvideo_relay::wire::rtcp::{self, RtcpKind};
///
/// let mut buf = [0u8; 20];
/// let n = rtcp::emit_receiver_report_empty(7, &mut buf).unwrap();
/// let m = rtcp::emit_pli(7, 9, &mut buf[n..]).unwrap();
/// let kinds: Vec<_> = rtcp::compound(&buf[..n + m]).map(|p| p.unwrap().kind()).collect();
/// assert_eq!(kinds, [RtcpKind::ReceiverReport, RtcpKind::Pli]);
/// ```
#[inline]
#[must_use]
pub fn compound(buf: &[u8]) -> Compound<'_> {
    Compound { rest: buf }
}

/// Checks a whole RTCP datagram and returns its packet count.
///
/// Every packet must pass [`RtcpPacket::new_checked`], the packets must tile `buf` exactly, and
/// only the last one may carry padding (RFC 3550 §6.4.1). No rule is imposed on the first packet
/// type, so reduced-size RTCP (RFC 5506, e.g. a lone PLI) passes.
///
/// # Errors
///
/// The first packet's error; [`Error::Truncated`] for an empty datagram or trailing bytes too few
/// for a header; [`Error::Malformed`] for padding before the last packet.
pub fn validate_compound(buf: &[u8]) -> Result<usize> {
    if buf.is_empty() {
        return Err(Error::Truncated("empty rtcp datagram"));
    }
    let (mut count, mut walked) = (0, 0);
    for packet in compound(buf) {
        let packet = packet?;
        walked += packet.packet_len();
        if packet.padding() && walked != buf.len() {
            return Err(Error::Malformed("rtcp padding before the last packet"));
        }
        count += 1;
    }
    Ok(count)
}

/// Writes `words` as big-endian 32-bit words at the start of `buf`.
#[inline]
fn emit_words<const N: usize>(buf: &mut [u8], words: [u32; N]) -> Result<usize> {
    let out = buf.get_mut(..N * 4).ok_or(Error::BufferTooSmall)?;
    for (dst, w) in out.chunks_exact_mut(4).zip(words) {
        dst.copy_from_slice(&w.to_be_bytes());
    }
    Ok(N * 4)
}

/// First header word: `V=2, P=0`, count, packet type and `length` for an `N`-word packet.
#[inline]
const fn header_word(count: u8, packet_type: u8, words: usize) -> u32 {
    ((VERSION as u32) << 30)
        | (((count & 0x1f) as u32) << 24)
        | ((packet_type as u32) << 16)
        | ((words - 1) as u32)
}

/// Writes a Picture Loss Indication (RFC 4585 §6.3.1: PT 206, FMT 1, no FCI), 12 bytes.
///
/// # Errors
///
/// [`Error::BufferTooSmall`] if `buf` is shorter than 12 bytes.
pub fn emit_pli(sender_ssrc: u32, media_ssrc: u32, buf: &mut [u8]) -> Result<usize> {
    emit_words(
        buf,
        [header_word(FMT_PLI, 0xce, 3), sender_ssrc, media_ssrc],
    )
}

/// Writes a Full Intra Request (RFC 5104 §4.3.1: PT 206, FMT 4) with one FCI entry, 20 bytes.
///
/// The header's media-source field is 0 as §4.3.1 requires; `media_ssrc` (the sender asked for a
/// decoder refresh) goes in the FCI with `seq_nr`, which the requester increments per new request.
///
/// # Errors
///
/// [`Error::BufferTooSmall`] if `buf` is shorter than 20 bytes.
pub fn emit_fir(sender_ssrc: u32, media_ssrc: u32, seq_nr: u8, buf: &mut [u8]) -> Result<usize> {
    emit_words(
        buf,
        [
            header_word(FMT_FIR, 0xce, 5),
            sender_ssrc,
            0,
            media_ssrc,
            u32::from(seq_nr) << 24,
        ],
    )
}

/// Writes a BYE for one source, without a reason (RFC 3550 §6.6), 8 bytes.
///
/// # Errors
///
/// [`Error::BufferTooSmall`] if `buf` is shorter than 8 bytes.
pub fn emit_bye(ssrc: u32, buf: &mut [u8]) -> Result<usize> {
    emit_words(buf, [header_word(1, 0xcb, 2), ssrc])
}

/// Writes a receiver report with no report blocks (RFC 3550 §6.4.2, RC 0), 8 bytes: the packet
/// that must head a compound when there is nothing to report (RFC 3550 §6.1).
///
/// # Errors
///
/// [`Error::BufferTooSmall`] if `buf` is shorter than 8 bytes.
pub fn emit_receiver_report_empty(ssrc: u32, buf: &mut [u8]) -> Result<usize> {
    emit_words(buf, [header_word(0, 0xc9, 2), ssrc])
}

/// Writes a Generic NACK (RFC 4585 §6.2.1: PT 205, FMT 1) with one `(pid, blp)` entry, 16 bytes.
///
/// `pid` is the first lost sequence number; bit `i` of `blp` reports `pid + i + 1` lost too.
///
/// # Errors
///
/// [`Error::BufferTooSmall`] if `buf` is shorter than 16 bytes.
pub fn emit_nack(
    sender_ssrc: u32,
    media_ssrc: u32,
    pid: u16,
    blp: u16,
    buf: &mut [u8],
) -> Result<usize> {
    emit_words(
        buf,
        [
            header_word(FMT_NACK, 0xcd, 4),
            sender_ssrc,
            media_ssrc,
            (u32::from(pid) << 16) | u32::from(blp),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SR (RC=1) + SDES (CNAME). The SR is assembled by hand per RFC 3550 §6.4.1; the SDES chunk is
    /// the one in [`REAL_PACKET`].
    static SR_SDES: [u8; 104] = [
        // SR: V=2 P=0 RC=1, PT=200, length=12 (52 bytes)
        0x81, 0xc8, 0x00, 0x0c, //
        0x90, 0x2f, 0x9e, 0x2e, // SSRC of sender
        0xe9, 0x6e, 0x3e, 0x1a, // NTP msw
        0x10, 0x62, 0x4d, 0xd3, // NTP lsw
        0x00, 0x01, 0x5f, 0x90, // RTP timestamp
        0x00, 0x00, 0x01, 0x2c, // packet count 300
        0x00, 0x05, 0x7e, 0x40, // octet count 360000
        0xbc, 0x5e, 0x9a, 0x40, // report block: SSRC_1
        0x01, 0x00, 0x00, 0x02, // fraction lost 1/256, cumulative lost 2
        0x00, 0x00, 0x46, 0xe1, // extended highest seq
        0x00, 0x00, 0x01, 0x11, // jitter
        0x09, 0xf3, 0x64, 0x32, // LSR
        0x00, 0x02, 0x4a, 0x79, // DLSR
        // SDES: V=2 P=0 SC=1, PT=202, length=12 (52 bytes)
        0x81, 0xca, 0x00, 0x0c, //
        0x90, 0x2f, 0x9e, 0x2e, // SSRC/CSRC_1
        0x01, 0x26, // CNAME, 38 bytes
        0x7b, 0x39, 0x63, 0x30, 0x30, 0x65, 0x62, 0x39, 0x32, 0x2d, 0x31, 0x61, 0x66, 0x62, 0x2d,
        0x39, 0x64, 0x34, 0x39, 0x2d, 0x61, 0x34, 0x37, 0x64, 0x2d, 0x39, 0x31, 0x66, 0x36, 0x34,
        0x65, 0x65, 0x65, 0x36, 0x39, 0x66, 0x35, 0x7d, //
        0x00, 0x00, 0x00, 0x00, // END + pad to word
    ];

    /// A captured compound: RR, SDES, BYE, PLI, RTPFB FMT 5 (TMMBR-era "rapid resync"), APP.
    /// From pion/rtcp `packet_test.go` `realPacket()` ("An RTCP packet from a packet dump"), MIT.
    static REAL_PACKET: [u8; 132] = [
        0x81, 0xc9, 0x00, 0x07, 0x90, 0x2f, 0x9e, 0x2e, 0xbc, 0x5e, 0x9a, 0x40, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x46, 0xe1, 0x00, 0x00, 0x01, 0x11, 0x09, 0xf3, 0x64, 0x32, 0x00, 0x02,
        0x4a, 0x79, // RR (32)
        0x81, 0xca, 0x00, 0x0c, 0x90, 0x2f, 0x9e, 0x2e, 0x01, 0x26, 0x7b, 0x39, 0x63, 0x30, 0x30,
        0x65, 0x62, 0x39, 0x32, 0x2d, 0x31, 0x61, 0x66, 0x62, 0x2d, 0x39, 0x64, 0x34, 0x39, 0x2d,
        0x61, 0x34, 0x37, 0x64, 0x2d, 0x39, 0x31, 0x66, 0x36, 0x34, 0x65, 0x65, 0x65, 0x36, 0x39,
        0x66, 0x35, 0x7d, 0x00, 0x00, 0x00, 0x00, // SDES (52)
        0x81, 0xcb, 0x00, 0x01, 0x90, 0x2f, 0x9e, 0x2e, // BYE (8)
        0x81, 0xce, 0x00, 0x02, 0x90, 0x2f, 0x9e, 0x2e, 0x90, 0x2f, 0x9e, 0x2e, // PLI (12)
        0x85, 0xcd, 0x00, 0x02, 0x90, 0x2f, 0x9e, 0x2e, 0x90, 0x2f, 0x9e,
        0x2e, // RTPFB 5 (12)
        0x80, 0xcc, 0x00, 0x03, 0x4b, 0xaa, 0xe1, 0xab, b'N', b'A', b'M', b'E', b'A', b'B', b'C',
        b'D', // APP (16)
    ];

    /// PLI, sender 0x01020304, media 0x05060708 (RFC 4585 §6.3.1).
    static PLI: [u8; 12] = [
        0x81, 0xce, 0x00, 0x02, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
    ];

    /// FIR, sender 0x01020304, target 0x05060708, seq 9 (RFC 5104 §4.3.1).
    static FIR: [u8; 20] = [
        0x84, 0xce, 0x00, 0x04, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0x05, 0x06, 0x07,
        0x08, 0x09, 0x00, 0x00, 0x00,
    ];

    /// Generic NACK, sender 0x01020304, media 0x05060708, pid 0x1234, blp 0x8001 (RFC 4585 §6.2.1).
    static NACK: [u8; 16] = [
        0x81, 0xcd, 0x00, 0x03, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x12, 0x34, 0x80,
        0x01,
    ];

    /// BYE for two sources with reason "bye" (RFC 3550 §6.6).
    static BYE2: [u8; 16] = [
        0x82, 0xcb, 0x00, 0x03, 0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x22, 0x22, 0x03, b'b', b'y',
        b'e',
    ];

    /// APP subtype 3, name "MCV0", 4 data bytes, then 4 bytes of padding (P=1, count 4).
    static APP_PADDED: [u8; 20] = [
        0xa3, 0xcc, 0x00, 0x04, 0x0a, 0x0b, 0x0c, 0x0d, b'M', b'C', b'V', b'0', 0xde, 0xad, 0xbe,
        0xef, 0x00, 0x00, 0x00, 0x04,
    ];

    #[test]
    fn test_packet_type_roundtrip() {
        for n in 0..=u8::MAX {
            let t = PacketType::from(n);
            assert_eq!(u8::from(t), n);
            assert_eq!(
                matches!(t, PacketType::Unknown(_)),
                !(200..=207).contains(&n)
            );
        }
        assert_eq!(PacketType::from(200), PacketType::SenderReport);
        assert_eq!(PacketType::from(207), PacketType::ExtendedReport);
    }

    #[test]
    fn test_deconstruct_sr_sdes() {
        let sr = RtcpPacket::new_checked(&SR_SDES[..]).unwrap();
        assert_eq!(sr.version(), 2);
        assert!(!sr.padding());
        assert_eq!(sr.count(), 1);
        assert_eq!(sr.packet_type(), PacketType::SenderReport);
        assert_eq!(sr.kind(), RtcpKind::SenderReport);
        assert_eq!(sr.length_words(), 12);
        assert_eq!(sr.packet_len(), 52);
        assert_eq!(sr.sender_ssrc(), 0x902f_9e2e);
        assert_eq!(
            sr.as_bytes(),
            &SR_SDES[..52],
            "view restricted to the packet"
        );
        assert_eq!(sr.body(), &SR_SDES[8..52]);
        assert_eq!(sr.media_ssrc(), None);
        assert_eq!(sr.bye_ssrcs().count(), 0);
        assert_eq!(sr.app_name(), None);
        assert_eq!(sr.fci(), b"");

        let packets: Vec<_> = compound(&SR_SDES).map(Result::unwrap).collect();
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0], RtcpPacket::new_unchecked(&SR_SDES[..52]));
        let sdes = packets[1];
        assert_eq!(sdes.kind(), RtcpKind::SourceDescription);
        assert_eq!(sdes.count(), 1);
        assert_eq!(sdes.sender_ssrc(), 0x902f_9e2e);
        assert_eq!(sdes.body()[0..2], [0x01, 0x26]);
        assert_eq!(
            &sdes.body()[2..40],
            b"{9c00eb92-1afb-9d49-a47d-91f64eee69f5}"
        );
        assert_eq!(validate_compound(&SR_SDES), Ok(2));
    }

    #[test]
    fn test_real_compound() {
        let packets: Vec<_> = compound(&REAL_PACKET).map(Result::unwrap).collect();
        let kinds: Vec<_> = packets.iter().map(RtcpPacket::kind).collect();
        assert_eq!(
            kinds,
            [
                RtcpKind::ReceiverReport,
                RtcpKind::SourceDescription,
                RtcpKind::Goodbye,
                RtcpKind::Pli,
                RtcpKind::TransportFeedback(5),
                RtcpKind::App,
            ]
        );
        let lens: Vec<_> = packets.iter().map(RtcpPacket::packet_len).collect();
        assert_eq!(lens, [32, 52, 8, 12, 12, 16]);
        assert_eq!(lens.iter().sum::<usize>(), REAL_PACKET.len());
        for p in &packets {
            assert_eq!(p.as_bytes().len(), p.packet_len());
        }
        assert_eq!(packets[0].count(), 1);
        assert_eq!(packets[0].body()[..4], [0xbc, 0x5e, 0x9a, 0x40]);
        assert_eq!(packets[2].bye_ssrcs().collect::<Vec<_>>(), [0x902f_9e2e]);
        assert_eq!(packets[3].sender_ssrc(), 0x902f_9e2e);
        assert_eq!(packets[3].media_ssrc(), Some(0x902f_9e2e));
        assert_eq!(packets[4].media_ssrc(), Some(0x902f_9e2e));
        assert_eq!(packets[4].nack_entries().count(), 0);
        assert_eq!(packets[5].sender_ssrc(), 0x4baa_e1ab);
        assert_eq!(packets[5].app_name(), Some(*b"NAME"));
        assert_eq!(packets[5].body(), b"NAMEABCD");
        assert_eq!(packets[5].media_ssrc(), None);
        assert_eq!(validate_compound(&REAL_PACKET), Ok(6));
    }

    #[test]
    fn test_feedback_vectors() {
        let pli = RtcpPacket::new_checked(&PLI[..]).unwrap();
        assert_eq!(pli.kind(), RtcpKind::Pli);
        assert_eq!(pli.sender_ssrc(), 0x0102_0304);
        assert_eq!(pli.media_ssrc(), Some(0x0506_0708));
        assert_eq!(pli.fci(), b"");
        assert_eq!(pli.fir_entries().count(), 0);

        let fir = RtcpPacket::new_checked(&FIR[..]).unwrap();
        assert_eq!(fir.kind(), RtcpKind::Fir);
        assert_eq!(fir.media_ssrc(), Some(0));
        assert_eq!(fir.fir_entries().collect::<Vec<_>>(), [(0x0506_0708, 9)]);

        let nack = RtcpPacket::new_checked(&NACK[..]).unwrap();
        assert_eq!(nack.kind(), RtcpKind::Nack);
        assert_eq!(nack.media_ssrc(), Some(0x0506_0708));
        assert_eq!(nack.nack_entries().collect::<Vec<_>>(), [(0x1234, 0x8001)]);
        assert_eq!(nack.fir_entries().count(), 0);

        // Other FMTs keep their number.
        let mut buf = PLI;
        buf[0] = 0x8f; // PSFB FMT 15 (AFB, e.g. REMB)
        assert_eq!(
            RtcpPacket::new_checked(&buf[..]).unwrap().kind(),
            RtcpKind::PayloadFeedback(15)
        );
        buf[1] = 0xcd;
        assert_eq!(
            RtcpPacket::new_checked(&buf[..]).unwrap().kind(),
            RtcpKind::TransportFeedback(15)
        );
        buf[1] = 0xcf;
        assert_eq!(
            RtcpPacket::new_checked(&buf[..]).unwrap().kind(),
            RtcpKind::ExtendedReport
        );
        buf[1] = 0xd0;
        let p = RtcpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.kind(), RtcpKind::Unknown(0xd0));
        assert_eq!(p.packet_type(), PacketType::Unknown(0xd0));
        assert_eq!(p.media_ssrc(), None);

        // A feedback packet too short for the media SSRC.
        let short = [0x81, 0xce, 0x00, 0x01, 0x01, 0x02, 0x03, 0x04];
        let p = RtcpPacket::new_checked(&short[..]).unwrap();
        assert_eq!(p.kind(), RtcpKind::Pli);
        assert_eq!(p.media_ssrc(), None);
        assert_eq!(p.fci(), b"");
    }

    #[test]
    fn test_bye() {
        let bye = RtcpPacket::new_checked(&BYE2[..]).unwrap();
        assert_eq!(bye.kind(), RtcpKind::Goodbye);
        assert_eq!(bye.count(), 2);
        assert_eq!(
            bye.bye_ssrcs().collect::<Vec<_>>(),
            [0x1111_1111, 0x2222_2222]
        );
        // A source count past the packet is cut at the packet end.
        let mut buf = BYE2;
        buf[0] = 0x9f; // SC = 31
        let bye = RtcpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(bye.bye_ssrcs().count(), 3);
        // ... and at the padding.
        buf[0] = 0xbf; // P=1, SC=31; last byte 'e' = 101 > body: rejected
        assert_eq!(
            RtcpPacket::new_checked(&buf[..]),
            Err(Error::BadLength("rtcp padding count"))
        );
        buf[15] = 4;
        let bye = RtcpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(bye.padding_len(), 4);
        assert_eq!(
            bye.bye_ssrcs().collect::<Vec<_>>(),
            [0x1111_1111, 0x2222_2222]
        );
        // Trailing bytes after the packet are not read.
        let mut long = [0x33u8; 24];
        long[..16].copy_from_slice(&BYE2);
        long[0] = 0x9f;
        let bye = RtcpPacket::new_checked(&long[..]).unwrap();
        assert_eq!(bye.bye_ssrcs().count(), 3);
    }

    #[test]
    fn test_app_padding() {
        let app = RtcpPacket::new_checked(&APP_PADDED[..]).unwrap();
        assert_eq!(app.kind(), RtcpKind::App);
        assert_eq!(app.count(), 3, "APP subtype");
        assert!(app.padding());
        assert_eq!(app.padding_len(), 4);
        assert_eq!(app.sender_ssrc(), 0x0a0b_0c0d);
        assert_eq!(app.app_name(), Some(*b"MCV0"));
        assert_eq!(app.body(), b"MCV0\xde\xad\xbe\xef");
        // Padding on the last packet only.
        let mut two = [0u8; 32];
        two[..12].copy_from_slice(&PLI);
        two[12..].copy_from_slice(&APP_PADDED);
        assert_eq!(validate_compound(&two), Ok(2));
        two[..20].copy_from_slice(&APP_PADDED);
        two[20..].copy_from_slice(&PLI);
        assert_eq!(
            validate_compound(&two),
            Err(Error::Malformed("rtcp padding before the last packet"))
        );
        assert_eq!(
            compound(&two).filter(Result::is_ok).count(),
            2,
            "walk is lenient"
        );
        // Bad padding counts.
        let mut buf = APP_PADDED;
        buf[19] = 0;
        assert_eq!(
            RtcpPacket::new_checked(&buf[..]),
            Err(Error::Malformed("rtcp padding count is zero"))
        );
        buf[19] = 12; // whole body: allowed
        let p = RtcpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.body(), b"");
        assert_eq!(p.app_name(), None);
        buf[19] = 13; // reaches the sender SSRC
        assert_eq!(
            RtcpPacket::new_checked(&buf[..]),
            Err(Error::BadLength("rtcp padding count"))
        );
    }

    #[test]
    fn test_impossible_len() {
        for n in 0..8 {
            assert_eq!(
                RtcpPacket::new_checked(&PLI[..n]),
                Err(Error::Truncated("rtcp header")),
                "{n} bytes"
            );
        }
        // Length overruns the buffer by one word, and by a lot.
        assert_eq!(
            RtcpPacket::new_checked(&PLI[..8]),
            Err(Error::BadLength("rtcp length past end of datagram"))
        );
        let mut buf = PLI;
        buf[2] = 0xff;
        buf[3] = 0xff;
        assert_eq!(
            RtcpPacket::new_checked(&buf[..]),
            Err(Error::BadLength("rtcp length past end of datagram"))
        );
        let p = RtcpPacket::new_unchecked(&buf[..]);
        assert_eq!(p.packet_len(), 0x1_0000 * 4);
        assert_eq!(
            p.as_bytes(),
            &buf[..],
            "unchecked view falls back to the buffer"
        );
        assert_eq!(p.body(), b"");
        // Bad version.
        let mut buf = PLI;
        buf[0] &= 0x3f;
        assert_eq!(RtcpPacket::new_checked(&buf[..]), Err(Error::BadVersion));
    }

    #[test]
    fn test_zero_length_terminates() {
        // length 0 = 4 bytes: a header without SSRC. Rejected, and the walk stops.
        let zeros = [0x80, 0xc9, 0x00, 0x00].repeat(64);
        let p = RtcpPacket::new_unchecked(&zeros[..]);
        assert_eq!(p.packet_len(), 4, "length 0 still covers the 4-byte header");
        let items: Vec<_> = compound(&zeros).collect();
        assert_eq!(
            items,
            [Err(Error::BadLength(
                "rtcp length shorter than header and ssrc"
            ))]
        );
        assert!(validate_compound(&zeros).is_err());
        // After a good packet too.
        let mut buf = PLI.to_vec();
        buf.extend_from_slice(&zeros);
        let mut walk = compound(&buf);
        assert!(walk.next().unwrap().is_ok());
        assert!(walk.next().unwrap().is_err());
        assert!(walk.remaining().is_empty());
        assert!(walk.next().is_none());
        assert!(walk.next().is_none());
        // All-zero bytes: version 0.
        assert_eq!(
            compound(&[0u8; 64]).collect::<Vec<_>>(),
            [Err(Error::BadVersion)]
        );
    }

    #[test]
    fn test_truncated_and_overlong_datagrams() {
        let boundaries = [32, 84, 92, 104, 116, 132];
        for n in 0..=REAL_PACKET.len() {
            let r = validate_compound(&REAL_PACKET[..n]);
            if boundaries.contains(&n) {
                let count = boundaries.iter().position(|&b| b == n).unwrap() + 1;
                assert_eq!(r, Ok(count), "{n} bytes");
            } else {
                assert!(r.is_err(), "{n} bytes");
                // The walk yields the whole packets, then one error, then stops.
                let items: Vec<_> = compound(&REAL_PACKET[..n]).collect();
                let whole = boundaries.iter().filter(|&&b| b <= n).count();
                if n > 0 {
                    assert_eq!(items.len(), whole + 1, "{n} bytes");
                    assert!(items[..whole].iter().all(Result::is_ok));
                    assert!(items[whole].is_err());
                } else {
                    assert!(items.is_empty());
                }
            }
        }
        assert_eq!(
            validate_compound(&[]),
            Err(Error::Truncated("empty rtcp datagram"))
        );
        // Trailing garbage after a valid compound.
        let mut buf = REAL_PACKET.to_vec();
        buf.extend_from_slice(&[0xde, 0xad, 0xbe]);
        assert_eq!(
            validate_compound(&buf),
            Err(Error::Truncated("rtcp header"))
        );
        // A length field that swallows the next packet: still walks, different tiling.
        let mut buf = REAL_PACKET;
        buf[84 + 3] = 4; // BYE now claims 20 bytes: BYE + PLI
        let kinds: Vec<_> = compound(&buf).map(|p| p.unwrap().kind()).collect();
        assert_eq!(kinds.len(), 5);
        // A length field that overruns the datagram.
        buf[84 + 3] = 0x20;
        let items: Vec<_> = compound(&buf).collect();
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[2],
            Err(Error::BadLength("rtcp length past end of datagram"))
        );
    }

    #[test]
    fn test_garbage_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut buf = [0u8; 96];
        for round in 0..20_000 {
            let len = (next() % 97) as usize;
            for b in &mut buf[..len] {
                *b = next() as u8;
            }
            if round % 2 == 0 && len >= 4 {
                // Plausible headers reach deeper into the code.
                buf[0] = 0x80 | (buf[0] & 0x3f);
                buf[2] = 0;
                buf[3] %= 8;
            }
            let mut items = 0;
            for item in compound(&buf[..len]) {
                items += 1;
                if let Ok(p) = item {
                    let _ = (p.kind(), p.sender_ssrc(), p.media_ssrc(), p.app_name());
                    let _ = (p.body(), p.fci(), p.padding_len());
                    let _ = (p.bye_ssrcs().count(), p.fir_entries().count());
                    let _ = p.nack_entries().count();
                    assert!(p.body().len() + HEADER_LEN <= p.packet_len());
                }
            }
            assert!(items <= len / HEADER_LEN + 1);
            let _ = validate_compound(&buf[..len]);
            let mut p = RtcpPacket::new_unchecked(&mut buf[..len]);
            let _ = (p.kind(), p.body(), p.bye_ssrcs().count(), p.fci());
            p.set_sender_ssrc(1);
            let _ = p.set_media_ssrc(2);
        }
    }

    #[test]
    fn test_emit_roundtrip() {
        let mut buf = [0xa5u8; 24];
        assert_eq!(emit_pli(0x0102_0304, 0x0506_0708, &mut buf), Ok(12));
        assert_eq!(buf[..12], PLI);
        assert_eq!(buf[12..], [0xa5; 12], "emit wrote past the packet");

        let mut buf = [0xa5u8; 24];
        assert_eq!(emit_fir(0x0102_0304, 0x0506_0708, 9, &mut buf), Ok(20));
        assert_eq!(buf[..20], FIR);

        let mut buf = [0xa5u8; 24];
        assert_eq!(
            emit_nack(0x0102_0304, 0x0506_0708, 0x1234, 0x8001, &mut buf),
            Ok(16)
        );
        assert_eq!(buf[..16], NACK);

        let mut buf = [0xa5u8; 24];
        assert_eq!(emit_bye(0x902f_9e2e, &mut buf), Ok(8));
        assert_eq!(buf[..8], REAL_PACKET[84..92]);
        let bye = RtcpPacket::new_checked(&buf[..8]).unwrap();
        assert_eq!(bye.bye_ssrcs().collect::<Vec<_>>(), [0x902f_9e2e]);

        let mut buf = [0xa5u8; 24];
        assert_eq!(emit_receiver_report_empty(0xcafe_babe, &mut buf), Ok(8));
        assert_eq!(buf[..8], [0x80, 0xc9, 0x00, 0x01, 0xca, 0xfe, 0xba, 0xbe]);
        let rr = RtcpPacket::new_checked(&buf[..8]).unwrap();
        assert_eq!(rr.kind(), RtcpKind::ReceiverReport);
        assert_eq!(rr.count(), 0);
        assert_eq!(rr.body(), b"");

        // A compound the relay would send: empty RR + PLI + FIR.
        let mut buf = [0u8; 40];
        let mut n = emit_receiver_report_empty(1, &mut buf).unwrap();
        n += emit_pli(1, 2, &mut buf[n..]).unwrap();
        n += emit_fir(1, 2, 3, &mut buf[n..]).unwrap();
        assert_eq!(n, 40);
        assert_eq!(validate_compound(&buf), Ok(3));
        let kinds: Vec<_> = compound(&buf).map(|p| p.unwrap().kind()).collect();
        assert_eq!(
            kinds,
            [RtcpKind::ReceiverReport, RtcpKind::Pli, RtcpKind::Fir]
        );
    }

    #[test]
    fn test_emit_buffer_too_small() {
        let mut buf = [0u8; 20];
        assert_eq!(emit_pli(1, 2, &mut buf[..11]), Err(Error::BufferTooSmall));
        assert_eq!(
            emit_fir(1, 2, 3, &mut buf[..19]),
            Err(Error::BufferTooSmall)
        );
        assert_eq!(
            emit_nack(1, 2, 3, 4, &mut buf[..15]),
            Err(Error::BufferTooSmall)
        );
        assert_eq!(emit_bye(1, &mut buf[..7]), Err(Error::BufferTooSmall));
        assert_eq!(
            emit_receiver_report_empty(1, &mut buf[..7]),
            Err(Error::BufferTooSmall)
        );
        assert_eq!(emit_bye(1, &mut []), Err(Error::BufferTooSmall));
        assert_eq!(buf, [0; 20], "nothing written on error");
    }

    #[test]
    fn test_setters() {
        let mut buf = NACK;
        let mut p = RtcpPacket::new_checked(&mut buf[..]).unwrap();
        p.set_sender_ssrc(0xaaaa_aaaa);
        assert!(p.set_media_ssrc(0xbbbb_bbbb));
        assert_eq!(p.sender_ssrc(), 0xaaaa_aaaa);
        assert_eq!(p.media_ssrc(), Some(0xbbbb_bbbb));
        assert_eq!(p.nack_entries().collect::<Vec<_>>(), [(0x1234, 0x8001)]);
        assert_eq!(buf[..4], NACK[..4]);

        let mut buf = BYE2;
        let mut p = RtcpPacket::new_checked(&mut buf[..]).unwrap();
        assert!(!p.set_media_ssrc(1), "BYE has no media SSRC");
        assert_eq!(buf, BYE2);
    }
}
