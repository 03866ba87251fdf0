//! SRTP and SRTCP in place (RFC 3711, RFC 7714), for the relay's `per_leg` mode and its
//! transmission-control channel.
//!
//! A [`SrtpContext`] is one direction of one leg: it either protects (relay → peer) or
//! unprotects (peer → relay), RTP and RTCP, for any number of SSRCs over its life.
//!
//! # Suites
//!
//! * AEAD_AES_128_GCM (RFC 7714): 16-octet tag, 12-octet salt, AAD = the full RTP header
//!   (CSRCs and extension included); `ring`'s `LessSafeKey`.
//! * AES_CM_128_HMAC_SHA1_80 (RFC 3711): 10-octet tag for SRTP and SRTCP; RustCrypto `aes` +
//!   `ctr` and `hmac` + `sha1` (SHA-NI where the CPU has it).
//!
//! Session keys are derived once per context (RFC 3711 §4.3, AES-CM PRF, key derivation rate 0;
//! RFC 7714 §11 for GCM), and cipher keys are expanded once: protecting or unprotecting a packet
//! allocates nothing and re-keys nothing. No MKI.
//!
//! # State and replay protection
//!
//! Per SSRC the context keeps the highest packet index (ROC and highest sequence number, RFC 3711
//! §3.3.1) and a 64-packet replay window for SRTP; the SRTCP send index and a 64-packet window
//! for SRTCP. Replay protection is always on, and the state of an SSRC changes only when a
//! packet has been authenticated (or protected): a packet that fails changes nothing, and an
//! SSRC is remembered only once one of its packets has passed.
//!
//! Protecting applies the same index rules: protecting an index twice (which would reuse a
//! keystream / GCM nonce) is refused with [`SrtpError::Replayed`], and a packet more than 64
//! indices behind the highest one protected with [`SrtpError::TooOld`] (as libsrtp does).
//!
//! The first SRTCP index sent for an SSRC is 1, as libsrtp and webrtc-rs send it, so their output
//! and ours agree byte for byte; a receiver accepts any first index.
//!
//! # Any number of SSRCs, bounded memory, no index used twice
//!
//! A context takes any number of SSRCs over its life (a `per_leg` group receiver leg is sent
//! every member's media in turn), in bounded memory, RTP and RTCP SSRCs in separate tables of
//! three tiers ([`SsrcStats`] counts what moves between them):
//!
//! 1. **Active**: the full state of [`ACTIVE_SSRCS`] SSRCs, scanned per packet. A new SSRC when
//!    it is full evicts the **least recently used** one.
//! 2. **Evicted**: the exact state of up to [`EVICTED_SSRCS`] evicted SSRCs. One that comes back
//!    takes its state back and continues as if it had never left: same ROC, same replay window.
//! 3. **Floors**: when the evicted tier is full, its entry evicted longest ago is folded into
//!    one of [`FLOOR_BUCKETS`] buckets (a hash of the SSRC keyed by a value derived from the
//!    master key): each bucket keeps the maximum index folded into it. An SSRC that is neither
//!    active nor evicted starts **under its bucket's floor**: every index at or below it is
//!    refused (SRTP, SRTCP received) or skipped (the SRTCP send index starts above it).
//!
//! So every index an SSRC has used stays at or below its active state, its evicted state or
//! its bucket's floor, and a (re)created state refuses all of them: **the same SSRC and index
//! are never protected twice under one key** (no keystream or GCM nonce reuse, whatever
//! evictions happened in between) and **a packet is never accepted twice** (no replay through
//! an eviction). Memory per table: the active tier inline (as before); the evicted tier
//! (allocated once, at its full capacity, on the first eviction) and the floors (allocated once
//! on the first fold) only in contexts that have seen more SSRCs than the tier before them. A
//! packet of an active SSRC costs what it did (a scan of [`ACTIVE_SSRCS`] SSRCs, plus one
//! least-recently-used tick stored); eviction allocates nothing after those two allocations.
//!
//! **What a floor costs.** Floors exist only after more than `ACTIVE_SSRCS + EVICTED_SSRCS` =
//! 272 distinct SSRCs have gone through one context (a group has at most 64 members). Then an
//! SSRC new to the context lands in a bucket with a floor with probability about `k / 256`
//! after `k` SSRCs were folded (`1 - (1 - 1/256)^k`): 0.4 % for the first. Such an SSRC (and a
//! folded one that comes back) starts with the floor `F` as its highest index, so its packet
//! indices are estimated from `F` (RFC 3711 §3.3.1) and every index at or below `F` is refused,
//! counted in [`SsrcStats::refused_at_floor`]. Received SRTP: the sender's packets are refused
//! until its index passes `F`; after that its ROC is guessed from `F` as it would be from any
//! earlier packet (RFC 3711 §3.3.1). Protected SRTP: only indices above `F` are sent,
//! so a receiver that starts a new SSRC at ROC 0 decodes it only if `F`'s ROC is 0 and the
//! sequence numbers have passed `F`'s (before that, nothing is sent); if `F`'s ROC is above 0,
//! that receiver cannot decode the SSRC at all. SRTCP: nothing is lost when sending (the index
//! travels in the packet, receivers take any first index); received SRTCP is refused until
//! the sender's index passes the floor. Nothing is ever lost before floors exist.
//!
//! # Robustness
//!
//! Nothing here panics on any packet bytes: every malformed input is an [`SrtpError`]. On error
//! the packet must be dropped; the buffer's contents are then unspecified.
#![warn(clippy::indexing_slicing)]

use core::fmt;

use crate::keys::{MasterKey, SrtpSuite};

mod kdf;
mod replay;
mod table;
#[cfg(test)]
mod tests;
mod transform;

use replay::{ReplayWindow, RtcpStream};
use table::SsrcTable;
use transform::{Kind, Transform, RTCP_HEADER_LEN, SRTCP_E_BIT, SRTCP_WORD_LEN};

/// How many SSRCs a context keeps active (scanned per packet), for RTP and separately for
/// RTCP. A new SSRC beyond them evicts the least recently used one.
pub const ACTIVE_SSRCS: usize = 16;

/// How many evicted SSRCs a context keeps with their exact state, for RTP and separately for
/// RTCP; beyond them, the one evicted longest ago is folded into a floor bucket.
pub const EVICTED_SSRCS: usize = 256;

/// How many floor buckets a context has, for RTP and separately for RTCP.
pub const FLOOR_BUCKETS: usize = 256;

/// The KDF label of the value that keys the floor buckets' hash: outside the labels RFC 3711
/// (0x00–0x05) and RFC 6904 (0x06–0x07) use, so it is independent of every session key.
const LABEL_FLOOR_BUCKETS: u8 = 0x80;

/// Why a packet was not protected or unprotected. The packet must be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpError {
    /// Not a packet this context can process: shorter than its header plus trailer, version not
    /// 2, CSRC list or header extension past the end (or the key material has the wrong length).
    Malformed,
    /// The tag does not verify: wrong key, or the packet was altered.
    AuthenticationFailed,
    /// The packet index was already received (unprotect), or already protected, or the SRTCP
    /// index space is exhausted (protect: going on would reuse a keystream).
    Replayed,
    /// The packet index is more than 64 behind the highest one seen (RFC 3711 §3.3.2).
    TooOld,
    /// [`SrtpContext::import_state`]: the state holds more SSRCs than a context keeps exactly
    /// ([`ACTIVE_SSRCS`] + [`EVICTED_SSRCS`] per table). Packets never get it: a context takes
    /// any number of SSRCs.
    TooManySsrcs,
    /// The output buffer cannot hold the packet plus the SRTP overhead, or `len` exceeds it.
    BufferTooSmall,
}

impl fmt::Display for SrtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SrtpError::Malformed => "malformed SRTP/SRTCP packet",
            SrtpError::AuthenticationFailed => "SRTP/SRTCP authentication failed",
            SrtpError::Replayed => "SRTP/SRTCP packet index already used",
            SrtpError::TooOld => "SRTP/SRTCP packet index behind the replay window",
            SrtpError::TooManySsrcs => "too many SSRCs in one SRTP context",
            SrtpError::BufferTooSmall => "buffer too small for the SRTP/SRTCP packet",
        })
    }
}

impl std::error::Error for SrtpError {}

/// The SRTP state of one RTP SSRC in a context (no key material): where its packet index
/// stands and which of the last 64 indices were received (or protected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct RtpStreamState {
    /// The SSRC.
    pub ssrc: u32,
    /// Rollover counter of the highest index (RFC 3711 §3.3.1).
    pub roc: u32,
    /// Highest sequence number (with `roc`, the highest packet index).
    pub highest_seq: u16,
    /// Replay window: bit `i` set when index `highest - i` was accepted.
    pub window: u64,
}

impl RtpStreamState {
    /// The highest 48-bit packet index, `ROC || SEQ`.
    pub fn highest_index(&self) -> u64 {
        (u64::from(self.roc) << 16) | u64::from(self.highest_seq)
    }
}

/// The SRTCP state of one RTCP sender SSRC in a context (no key material).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct RtcpStreamState {
    /// The sender SSRC.
    pub ssrc: u32,
    /// The SRTCP index the next packet this context protects gets.
    pub next_send_index: u32,
    /// The highest SRTCP index received, if any.
    pub highest_received: Option<u32>,
    /// Replay window of received indices: bit `i` set when `highest_received - i` was accepted.
    pub window: u64,
}

/// The floor of one SRTP floor bucket (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct RtpFloor {
    /// The bucket, below [`FLOOR_BUCKETS`].
    pub bucket: u16,
    /// The highest 48-bit packet index of the SSRCs folded into it.
    pub index: u64,
}

/// The floor of one SRTCP floor bucket (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct RtcpFloor {
    /// The bucket, below [`FLOOR_BUCKETS`].
    pub bucket: u16,
    /// The highest next SRTCP send index of the SSRCs folded into it.
    pub next_send_index: u32,
    /// The highest SRTCP index they received, if any.
    pub highest_received: Option<u32>,
}

/// The per-SSRC state of a [`SrtpContext`] without its keys: what a relay that takes over a
/// call needs so that a context keyed with the same master key goes on where this one stood
/// ([`SrtpContext::export_state`], [`SrtpContext::import_state`]).
///
/// Serialized format: `rtp` and `rtcp` are the same lists as before evictions existed, now
/// possibly longer than 16 (a reader that predates evictions refuses such a state with
/// [`SrtpError::TooManySsrcs`] rather than forget an SSRC); the floor lists are new, absent
/// when empty (always, before more than 272 SSRCs went through one context) and default to
/// empty, so every older state reads as it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct SrtpState {
    /// RTP SSRCs held exactly, most recently used first: the active ones (at most
    /// [`ACTIVE_SSRCS`]), then the evicted ones, most recently evicted first (at most
    /// [`EVICTED_SSRCS`]).
    pub rtp: Vec<RtpStreamState>,
    /// RTCP SSRCs, in the same order and within the same bounds.
    pub rtcp: Vec<RtcpStreamState>,
    /// The SRTP floor buckets that have a floor (at most [`FLOOR_BUCKETS`]).
    #[cfg_attr(feature = "ha", serde(default, skip_serializing_if = "Vec::is_empty"))]
    pub rtp_floors: Vec<RtpFloor>,
    /// The SRTCP floor buckets that have a floor (at most [`FLOOR_BUCKETS`]).
    #[cfg_attr(feature = "ha", serde(default, skip_serializing_if = "Vec::is_empty"))]
    pub rtcp_floors: Vec<RtcpFloor>,
    /// The SRTCP send index an SSRC new to the context starts at, when above the usual 1
    /// (0: none). Set by [`SrtpState::with_srtcp_send_skip`]: a context restored from a
    /// snapshot must not start at 1 an SSRC the old context first protected after the
    /// snapshot was taken. Absent when 0, so every older state reads as it did.
    #[cfg_attr(feature = "ha", serde(default, skip_serializing_if = "is_zero"))]
    pub rtcp_fresh_send_index: u32,
}

#[cfg(feature = "ha")]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What the SSRC tables of a context did, RTP and RTCP together (see the [module docs](self)).
/// Not part of [`SrtpState`]: a context that imports a state starts counting from zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SsrcStats {
    /// Active SSRCs evicted (least recently used) to make room for another.
    pub evicted: u64,
    /// Evicted SSRCs that came back and continued from their exact state.
    pub restored: u64,
    /// Evicted SSRCs folded into a floor bucket (the evicted tier was full).
    pub folded: u64,
    /// SSRCs (new, or folded ones back) that started under their bucket's floor.
    pub started_at_floor: u64,
    /// Packets refused (replayed or too old) because their index was at or below the floor
    /// their SSRC started under.
    pub refused_at_floor: u64,
}

impl SsrcStats {
    fn add(self, o: SsrcStats) -> SsrcStats {
        SsrcStats {
            evicted: self.evicted + o.evicted,
            restored: self.restored + o.restored,
            folded: self.folded + o.folded,
            started_at_floor: self.started_at_floor + o.started_at_floor,
            refused_at_floor: self.refused_at_floor + o.refused_at_floor,
        }
    }
}

impl SrtpState {
    /// Moves every SRTCP send index `n` ahead, the floors' too (an exhausted index space stays
    /// exhausted), so that a sending context restored from a state taken a while ago never
    /// protects an SRTCP index the old context may have used after the snapshot (that would
    /// reuse a keystream, and the peer would drop the packet as a replay). SRTP needs no jump: its indices come
    /// from the forwarded packets' sequence numbers.
    #[must_use]
    pub fn with_srtcp_send_skip(mut self, n: u32) -> Self {
        let skip = |i: u32| i.saturating_add(n).min(replay::MAX_SRTCP_INDEX + 1);
        for s in &mut self.rtcp {
            s.next_send_index = skip(s.next_send_index);
        }
        for f in &mut self.rtcp_floors {
            f.next_send_index = skip(f.next_send_index);
        }
        // SSRCs the state does not hold: the old context may have started them after the
        // snapshot, at 1.
        self.rtcp_fresh_send_index = skip(self.rtcp_fresh_send_index.max(1));
        self
    }
}

/// The fields of an RTP header SRTP needs.
#[derive(Debug, Clone, Copy)]
struct RtpHeaderInfo {
    /// Octets of the full header: fixed part, CSRCs and extension.
    len: usize,
    sequence_number: u16,
    ssrc: u32,
}

/// Reads the RTP header at the start of `pkt` (RFC 3550 §5.1, §5.3.1) with the one RTP parser,
/// [`crate::wire::rtp::RtpPacket`] (the padding count is encrypted, so it is not checked).
fn parse_rtp_header(pkt: &[u8]) -> Result<RtpHeaderInfo, SrtpError> {
    let p = crate::wire::rtp::RtpPacket::new_unchecked(pkt);
    let len = p.check_header().map_err(|_| SrtpError::Malformed)?;
    Ok(RtpHeaderInfo {
        len,
        sequence_number: p.sequence_number(),
        ssrc: p.ssrc(),
    })
}

/// Reads the sender SSRC of the RTCP packet at the start of `pkt` (version must be 2).
fn parse_rtcp_header(pkt: &[u8]) -> Result<u32, SrtpError> {
    let fixed: &[u8; RTCP_HEADER_LEN] = pkt.first_chunk().ok_or(SrtpError::Malformed)?;
    if fixed[0] >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    Ok(u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]))
}

/// One direction of one leg: either protects (relay → peer) or unprotects (peer → relay), RTP
/// and RTCP.
///
/// ```
/// use mcvideo_relay::keys::{MasterKey, SrtpSuite};
/// use mcvideo_relay::srtp::SrtpContext;
///
/// let key = MasterKey::new(SrtpSuite::AeadAes128Gcm, (1..=28).collect()).unwrap();
/// let (mut tx, mut rx) = (SrtpContext::new(&key), SrtpContext::new(&key));
///
/// let mut buf = [0u8; 1500];
/// let plain = [0x80, 96, 0, 1, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, b'h', b'i'];
/// buf[..plain.len()].copy_from_slice(&plain);
/// let n = tx.protect_rtp(&mut buf, plain.len()).unwrap();
/// assert_eq!(n, plain.len() + tx.rtp_overhead());
///
/// let m = rx.unprotect_rtp(&mut buf[..n]).unwrap();
/// assert_eq!(&buf[..m], &plain);
/// ```
pub struct SrtpContext {
    suite: SrtpSuite,
    srtp: Transform,
    srtcp: Transform,
    rtp_streams: SsrcTable<ReplayWindow>,
    rtcp_streams: SsrcTable<RtcpStream>,
}

impl fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .field("keys", &"<redacted>")
            .field("rtp_ssrcs", &self.rtp_streams.len())
            .field("rtcp_ssrcs", &self.rtcp_streams.len())
            .finish()
    }
}

impl SrtpContext {
    /// A context keyed by `key`: derives the session keys for SRTP and SRTCP.
    ///
    /// # Panics
    ///
    /// If `key.material` is not `key_len + salt_len` octets for its suite, which
    /// [`MasterKey::new`] and [`MasterKey::from_base64`] guarantee. Use
    /// [`try_new`](Self::try_new) for a `MasterKey` built by hand.
    pub fn new(key: &MasterKey) -> Self {
        match Self::try_new(key) {
            Ok(ctx) => ctx,
            Err(_) => panic!("SRTP master key material has the wrong length for its suite"),
        }
    }

    /// A context keyed by `key`, or [`SrtpError::Malformed`] if the key material does not have
    /// the suite's length.
    ///
    /// # Errors
    ///
    /// [`SrtpError::Malformed`] for key material of the wrong length.
    pub fn try_new(key: &MasterKey) -> Result<Self, SrtpError> {
        let suite = key.suite;
        if key.material.len() != suite.key_len() + suite.salt_len() {
            return Err(SrtpError::Malformed);
        }
        let master_key: &[u8; 16] = key.key().try_into().map_err(|_| SrtpError::Malformed)?;
        let prf = kdf::Prf::new(master_key, key.salt());
        Ok(Self::with_transforms(
            suite,
            Transform::derive(suite, &prf, Kind::Srtp),
            Transform::derive(suite, &prf, Kind::Srtcp),
            u32::from_be_bytes(prf.derive_array(LABEL_FLOOR_BUCKETS)),
        ))
    }

    fn with_transforms(
        suite: SrtpSuite,
        srtp: Transform,
        srtcp: Transform,
        bucket_key: u32,
    ) -> Self {
        SrtpContext {
            suite,
            srtp,
            srtcp,
            rtp_streams: SsrcTable::new(bucket_key),
            rtcp_streams: SsrcTable::new(bucket_key ^ 0x5352_5443),
        }
    }

    /// A context whose "authentication" accepts a tag of all zero octets and whose "encryption"
    /// is the identity, so fuzzers reach the code behind authentication. GCM layout (16-octet
    /// tag); `suite()` reports AEAD_AES_128_GCM. Exists only under `cfg(fuzzing)`.
    #[cfg(fuzzing)]
    pub fn new_null_for_fuzzing() -> Self {
        Self::with_transforms(
            SrtpSuite::AeadAes128Gcm,
            Transform::Null,
            Transform::Null,
            0,
        )
    }

    /// The suite.
    pub fn suite(&self) -> SrtpSuite {
        self.suite
    }

    /// What the SSRC tables did: evictions, restorations, folds, floors (RTP and RTCP).
    pub fn ssrc_stats(&self) -> SsrcStats {
        self.rtp_streams.stats().add(self.rtcp_streams.stats())
    }

    /// Octets [`protect_rtp`](Self::protect_rtp) adds to an RTP packet: the tag (16 for GCM, 10
    /// for AES-CM/HMAC-SHA1-80).
    pub fn rtp_overhead(&self) -> usize {
        self.srtp.tag_len()
    }

    /// Octets [`protect_rtcp`](Self::protect_rtcp) adds to an RTCP packet: the 4-octet
    /// `E|SRTCP index` word and the tag (20 for GCM, 14 for AES-CM/HMAC-SHA1-80).
    pub fn rtcp_overhead(&self) -> usize {
        SRTCP_WORD_LEN + self.srtcp.tag_len()
    }

    /// The packet index of sequence number `seq` of RTP stream `ssrc` (RFC 3711 §3.3.1), with the
    /// stream's slot and window; an index the window has seen, or that is too old, is refused
    /// (and remembered as such) before any crypto.
    #[inline]
    fn rtp_index(
        &mut self,
        ssrc: u32,
        seq: u16,
    ) -> Result<(table::Slot, ReplayWindow, u64), SrtpError> {
        let (slot, window) = self.rtp_streams.lookup(ssrc);
        let index = replay::estimate_index(&window, seq);
        if let Err(e) = window.check(index) {
            self.rtp_streams.refused(slot, index);
            return Err(e);
        }
        Ok((slot, window, index))
    }

    /// Encrypts `buf[..len]` (a plain RTP packet) in place and appends the tag; `buf.len()` must
    /// be at least `len + rtp_overhead()`. Returns the new length.
    ///
    /// # Errors
    ///
    /// [`SrtpError::BufferTooSmall`], [`SrtpError::Malformed`] (not an RTP packet),
    /// [`SrtpError::Replayed`] / [`SrtpError::TooOld`] (the index was already protected, or is
    /// behind the window or at or below a floor: protecting would reuse a keystream).
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let total = len
            .checked_add(self.srtp.tag_len())
            .ok_or(SrtpError::BufferTooSmall)?;
        let pkt = buf.get_mut(..total).ok_or(SrtpError::BufferTooSmall)?;
        let header = parse_rtp_header(pkt.get(..len).ok_or(SrtpError::BufferTooSmall)?)?;
        let (slot, mut window, index) = self.rtp_index(header.ssrc, header.sequence_number)?;
        self.srtp.protect_rtp(pkt, header.len, header.ssrc, index)?;
        window.accept(index);
        self.rtp_streams.store(slot, header.ssrc, window);
        Ok(total)
    }

    /// Authenticates (replay check first, RFC 3711 §3.3.2) and decrypts `buf` (a whole SRTP
    /// packet) in place; returns the plain length. On any error the packet must be dropped, and
    /// the replay window is not updated.
    ///
    /// # Errors
    ///
    /// [`SrtpError::Malformed`], [`SrtpError::Replayed`], [`SrtpError::TooOld`] (checked before
    /// authentication), [`SrtpError::AuthenticationFailed`].
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let plain_len = buf
            .len()
            .checked_sub(self.srtp.tag_len())
            .ok_or(SrtpError::Malformed)?;
        let header = parse_rtp_header(buf.get(..plain_len).ok_or(SrtpError::Malformed)?)?;
        let (slot, mut window, index) = self.rtp_index(header.ssrc, header.sequence_number)?;
        self.srtp
            .unprotect_rtp(buf, header.len, header.ssrc, index)?;
        window.accept(index);
        self.rtp_streams.store(slot, header.ssrc, window);
        Ok(plain_len)
    }

    /// Encrypts `buf[..len]` (a plain RTCP packet or compound packet) in place with the next
    /// SRTCP index of its sender SSRC, E bit set, and appends the `E|index` word and the tag;
    /// `buf.len()` must be at least `len + rtcp_overhead()`. Returns the new length.
    ///
    /// # Errors
    ///
    /// [`SrtpError::BufferTooSmall`], [`SrtpError::Malformed`] (shorter than 8 octets, version
    /// not 2), [`SrtpError::Replayed`] (the 31-bit index space of the SSRC is exhausted:
    /// re-key).
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let total = len
            .checked_add(self.rtcp_overhead())
            .ok_or(SrtpError::BufferTooSmall)?;
        let pkt = buf.get_mut(..total).ok_or(SrtpError::BufferTooSmall)?;
        let ssrc = parse_rtcp_header(pkt.get(..len).ok_or(SrtpError::BufferTooSmall)?)?;
        let (slot, mut stream) = self.rtcp_streams.lookup(ssrc);
        let index = stream.next_send;
        if index > replay::MAX_SRTCP_INDEX {
            return Err(SrtpError::Replayed);
        }
        self.srtcp.protect_rtcp(pkt, len, ssrc, index)?;
        stream.next_send = index + 1;
        self.rtcp_streams.store(slot, ssrc, stream);
        Ok(total)
    }

    /// Authenticates (replay check first) and, if its E bit is set, decrypts `buf` (a whole
    /// SRTCP packet) in place; returns the plain length. Packets with E = 0 (authenticated only)
    /// are accepted too. On any error the packet must be dropped, and the replay window is not
    /// updated.
    ///
    /// # Errors
    ///
    /// As [`unprotect_rtp`](Self::unprotect_rtp).
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let plain_len = buf
            .len()
            .checked_sub(self.rtcp_overhead())
            .filter(|&n| n >= RTCP_HEADER_LEN)
            .ok_or(SrtpError::Malformed)?;
        let ssrc = parse_rtcp_header(buf)?;
        let word: &[u8; 4] = self
            .srtcp
            .srtcp_word_at(buf.len())
            .and_then(|at| buf.get(at..))
            .and_then(<[u8]>::first_chunk)
            .ok_or(SrtpError::Malformed)?;
        let word = u32::from_be_bytes(*word);
        let index = u64::from(word & !SRTCP_E_BIT);
        let (slot, mut stream) = self.rtcp_streams.lookup(ssrc);
        if let Err(e) = stream.received.check(index) {
            self.rtcp_streams.refused(slot, index);
            return Err(e);
        }
        self.srtcp.unprotect_rtcp(buf, ssrc, word)?;
        stream.received.accept(index);
        self.rtcp_streams.store(slot, ssrc, stream);
        Ok(plain_len)
    }

    /// The per-SSRC state (ROC, highest sequence number and replay window per RTP SSRC; SRTCP
    /// send index and replay window per RTCP SSRC) of every SSRC held exactly, active ones
    /// first, and the floors, without the keys.
    pub fn export_state(&self) -> SrtpState {
        SrtpState {
            rtp: self
                .rtp_streams
                .entries()
                .into_iter()
                .filter_map(|(ssrc, w)| {
                    let top = w.top()?;
                    Some(RtpStreamState {
                        ssrc,
                        roc: (top >> 16) as u32,
                        highest_seq: top as u16,
                        window: w.seen(),
                    })
                })
                .collect(),
            rtcp: self
                .rtcp_streams
                .entries()
                .into_iter()
                .map(|(ssrc, st)| RtcpStreamState {
                    ssrc,
                    next_send_index: st.next_send,
                    highest_received: st.received.top().map(|t| t as u32),
                    window: st.received.seen(),
                })
                .collect(),
            rtp_floors: self
                .rtp_streams
                .floors()
                .into_iter()
                .filter_map(|(bucket, f)| {
                    Some(RtpFloor {
                        bucket: bucket as u16,
                        index: f?,
                    })
                })
                .collect(),
            rtcp_floors: self
                .rtcp_streams
                .floors()
                .into_iter()
                .map(|(bucket, f)| RtcpFloor {
                    bucket: bucket as u16,
                    next_send_index: f.next_send,
                    highest_received: f.received,
                })
                .collect(),
            rtcp_fresh_send_index: self.rtcp_streams.base().next_send,
        }
    }

    /// Takes over `state` (from [`export_state`](Self::export_state) of a context with the same
    /// master key): each SSRC's state replaces what this context knew of it (the first ones
    /// listed end up active, as they were), and each floor is raised to the state's. Packets
    /// after the exported ones then pass, and those the window holds are still replays.
    ///
    /// # Errors
    ///
    /// [`SrtpError::TooManySsrcs`] when a list holds more SSRCs than a context keeps exactly
    /// ([`ACTIVE_SSRCS`] + [`EVICTED_SSRCS`]) or more floors than [`FLOOR_BUCKETS`];
    /// [`SrtpError::Malformed`] for an SRTCP index past 31 bits, an SRTP index past 48 bits or
    /// a bucket past [`FLOOR_BUCKETS`]. Nothing is changed then.
    pub fn import_state(&mut self, state: &SrtpState) -> Result<(), SrtpError> {
        const HELD: usize = ACTIVE_SSRCS + EVICTED_SSRCS;
        if state.rtp.len() > HELD
            || state.rtcp.len() > HELD
            || state.rtp_floors.len() > FLOOR_BUCKETS
            || state.rtcp_floors.len() > FLOOR_BUCKETS
        {
            return Err(SrtpError::TooManySsrcs);
        }
        let srtcp_ok = |i: Option<u32>| i.is_none_or(|i| i <= replay::MAX_SRTCP_INDEX);
        let bucket_ok = |b: u16| usize::from(b) < FLOOR_BUCKETS;
        if !state.rtcp.iter().all(|s| {
            s.next_send_index <= replay::MAX_SRTCP_INDEX + 1 && srtcp_ok(s.highest_received)
        }) || !state.rtcp_floors.iter().all(|f| {
            bucket_ok(f.bucket)
                && f.next_send_index <= replay::MAX_SRTCP_INDEX + 1
                && srtcp_ok(f.highest_received)
        }) || !state
            .rtp_floors
            .iter()
            .all(|f| bucket_ok(f.bucket) && f.index < 1 << 48)
            || state.rtcp_fresh_send_index > replay::MAX_SRTCP_INDEX + 1
        {
            return Err(SrtpError::Malformed);
        }
        let mut rtp = self.rtp_streams.clone();
        for f in &state.rtp_floors {
            rtp.raise_floor(usize::from(f.bucket), &Some(f.index));
        }
        // Least recently used first, so that the first ones listed end up active.
        for s in state.rtp.iter().rev() {
            rtp.put(
                s.ssrc,
                ReplayWindow::from_parts(Some(s.highest_index()), s.window),
            );
        }
        let mut rtcp = self.rtcp_streams.clone();
        for f in &state.rtcp_floors {
            rtcp.raise_floor(
                usize::from(f.bucket),
                &table::RtcpFloor {
                    next_send: f.next_send_index,
                    received: f.highest_received,
                },
            );
        }
        rtcp.raise_base(&table::RtcpFloor {
            next_send: state.rtcp_fresh_send_index,
            received: None,
        });
        for s in state.rtcp.iter().rev() {
            rtcp.put(
                s.ssrc,
                RtcpStream {
                    next_send: s.next_send_index,
                    received: ReplayWindow::from_parts(s.highest_received.map(u64::from), s.window),
                },
            );
        }
        self.rtp_streams = rtp;
        self.rtcp_streams = rtcp;
        Ok(())
    }

    /// A context over session keys given directly (RFC 7714 §16–17 vectors), GCM.
    #[cfg(test)]
    fn from_gcm_session_keys(key: &[u8; 16], salt: &[u8; 12]) -> Self {
        Self::with_transforms(
            SrtpSuite::AeadAes128Gcm,
            Transform::gcm(key, salt),
            Transform::gcm(key, salt),
            0,
        )
    }

    /// Sets the next SRTCP index to send for `ssrc` (tests).
    #[cfg(test)]
    fn set_next_srtcp_index(&mut self, ssrc: u32, index: u32) {
        let (slot, mut stream) = self.rtcp_streams.lookup(ssrc);
        stream.next_send = index;
        self.rtcp_streams.store(slot, ssrc, stream);
    }
}
