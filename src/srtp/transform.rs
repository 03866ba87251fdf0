//! The two SRTP transforms, in place, with keys expanded once:
//!
//! * AEAD_AES_128_GCM (RFC 7714) over `ring`'s `LessSafeKey`;
//! * AES_CM_128_HMAC_SHA1_80 (RFC 3711) over RustCrypto `aes` + `ctr` and `hmac` + `sha1`.
//!
//! One [`Transform`] serves one of SRTP or SRTCP (they have separate session keys). Callers pass
//! exactly the bytes of the packet (`pkt.len()` is the protected length) and the packet index;
//! index estimation and replay checks are the caller's job.
//!
//! Packet layouts (no MKI):
//!
//! ```text
//! SRTP, both suites:   header | payload (encrypted)                | tag (16 GCM, 10 CM)
//! SRTCP, GCM (7714):   header(8) | body (encrypted if E)           | tag (16) | E|index (4)
//! SRTCP, CM (3711):    header(8) | body (encrypted if E) | E|index (4) | tag (10)
//! ```

use aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use aes::Aes128Enc;
use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use sha1::Sha1;

use super::kdf::Prf;
use super::SrtpError;
use crate::keys::SrtpSuite;

/// AES-CM as RFC 3711 §4.1.1 uses it: a 128-bit big-endian counter.
type Aes128Ctr = ctr::Ctr128BE<Aes128Enc>;
/// Its core, which can be built from an already expanded key.
type Aes128CtrCore = ctr::CtrCore<Aes128Enc, ctr::flavors::Ctr128BE>;

/// RFC 7714 §14.2: 16-octet tag.
pub(super) const GCM_TAG_LEN: usize = 16;
/// RFC 3711 §5.2 (HMAC-SHA1-80): 10-octet tag, for SRTP and SRTCP.
pub(super) const CM_TAG_LEN: usize = 10;
/// The `E|SRTCP index` word.
pub(super) const SRTCP_WORD_LEN: usize = 4;
/// The E bit of the SRTCP word: the body is encrypted.
pub(super) const SRTCP_E_BIT: u32 = 0x8000_0000;
/// The fixed RTCP header plus sender SSRC, never encrypted.
pub(super) const RTCP_HEADER_LEN: usize = 8;

/// Which of SRTP or SRTCP a transform keys (selects the KDF labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Srtp,
    Srtcp,
}

/// One keyed transform.
///
/// Both real variants hold expanded keys of several hundred octets inline; a context owns two
/// transforms for its whole life, so boxing one variant would save nothing and add an indirection.
#[allow(clippy::large_enum_variant)]
pub(super) enum Transform {
    /// AEAD_AES_128_GCM.
    Gcm {
        key: LessSafeKey,
        /// 96-bit session salt, right-aligned.
        salt: u128,
    },
    /// AES_CM_128_HMAC_SHA1_80.
    Cm {
        aes: Aes128Enc,
        /// 112-bit session salt shifted left by 16 (RFC 3711 §4.1.1).
        salt: u128,
        /// HMAC-SHA1 keyed with the session authentication key; cloned per packet.
        mac: Hmac<Sha1>,
    },
    /// Identity "encryption" and an all-zero "tag" (16 octets, GCM layout): fuzzing only.
    #[cfg(fuzzing)]
    Null,
}

/// The bytes of `x` from the fourth on: the low 96 bits, big-endian.
#[inline]
fn low96(x: u128) -> [u8; 12] {
    let [_, _, _, _, rest @ ..] = x.to_be_bytes();
    rest
}

impl Transform {
    /// Derives the session keys for `kind` from the master key (RFC 3711 §4.3, RFC 7714 §11).
    pub(super) fn derive(suite: SrtpSuite, prf: &Prf, kind: Kind) -> Self {
        use super::kdf::*;
        let (enc, auth, salt) = match kind {
            Kind::Srtp => (
                LABEL_SRTP_ENCRYPTION,
                LABEL_SRTP_AUTHENTICATION,
                LABEL_SRTP_SALT,
            ),
            Kind::Srtcp => (
                LABEL_SRTCP_ENCRYPTION,
                LABEL_SRTCP_AUTHENTICATION,
                LABEL_SRTCP_SALT,
            ),
        };
        let key: [u8; 16] = prf.derive_array(enc);
        match suite {
            SrtpSuite::AeadAes128Gcm => Self::gcm(&key, &prf.derive_array(salt)),
            SrtpSuite::AesCm128HmacSha1_80 => {
                Self::cm(&key, &prf.derive_array(salt), &prf.derive_array(auth))
            }
        }
    }

    /// A GCM transform from session key and salt.
    pub(super) fn gcm(key: &[u8; 16], salt: &[u8; 12]) -> Self {
        let mut s = [0u8; 16];
        for (d, b) in s.iter_mut().skip(4).zip(salt) {
            *d = *b;
        }
        match UnboundKey::new(&AES_128_GCM, key) {
            Ok(unbound) => Transform::Gcm {
                key: LessSafeKey::new(unbound),
                salt: u128::from_be_bytes(s),
            },
            // `ring` refuses only a key of the wrong length, and the type fixes it at 16.
            Err(_) => unreachable!("AES-128-GCM takes a 16-octet key"),
        }
    }

    /// An AES-CM/HMAC-SHA1 transform from session key, salt and authentication key.
    pub(super) fn cm(key: &[u8; 16], salt: &[u8; 14], auth: &[u8; 20]) -> Self {
        let mut s = [0u8; 16];
        for (d, b) in s.iter_mut().zip(salt) {
            *d = *b;
        }
        // HMAC pads a key shorter than the block with zeros (RFC 2104 §2): keying with the padded
        // block is the same thing, and infallible.
        let mut block = [0u8; 64];
        for (d, b) in block.iter_mut().zip(auth) {
            *d = *b;
        }
        Transform::Cm {
            aes: Aes128Enc::new(&(*key).into()),
            salt: u128::from_be_bytes(s),
            mac: <Hmac<Sha1> as KeyInit>::new(&block.into()),
        }
    }

    /// Tag length in octets.
    #[inline]
    pub(super) fn tag_len(&self) -> usize {
        match self {
            Transform::Gcm { .. } => GCM_TAG_LEN,
            Transform::Cm { .. } => CM_TAG_LEN,
            #[cfg(fuzzing)]
            Transform::Null => GCM_TAG_LEN,
        }
    }

    /// RFC 7714 §8.1 / §9.1: `(00 00 || SSRC || low) XOR salt`, where `low` is `ROC || SEQ`
    /// (SRTP) or `00 00 || 0 || index` (SRTCP): both are the 48-bit value `index`.
    #[inline]
    fn gcm_nonce(salt: u128, ssrc: u32, index: u64) -> Nonce {
        let x = (u128::from(ssrc) << 48) | u128::from(index & 0xffff_ffff_ffff);
        Nonce::assume_unique_for_key(low96(x ^ salt))
    }

    /// RFC 3711 §4.1.1: `IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)`.
    #[inline]
    fn cm_keystream(aes: &Aes128Enc, salt: u128, ssrc: u32, index: u64) -> Aes128Ctr {
        let iv = salt ^ (u128::from(ssrc) << 64) ^ (u128::from(index & 0xffff_ffff_ffff) << 16);
        Aes128Ctr::from_core(Aes128CtrCore::inner_iv_init(
            aes.clone(),
            &iv.to_be_bytes().into(),
        ))
    }

    /// HMAC-SHA1 over `parts`, the full 20 octets.
    #[inline]
    fn hmac(mac: &Hmac<Sha1>, parts: &[&[u8]]) -> Hmac<Sha1> {
        let mut mac = mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac
    }

    /// HMAC-SHA1 over `parts`, truncated to `tag`'s length and written there.
    #[inline]
    fn write_hmac(mac: &Hmac<Sha1>, parts: &[&[u8]], tag: &mut [u8]) {
        let full = Self::hmac(mac, parts).finalize().into_bytes();
        for (t, f) in tag.iter_mut().zip(full) {
            *t = f;
        }
    }

    /// RFC 7714 §17: an SRTCP packet's AAD, its header (8) then the `E|SRTCP index` word.
    #[inline]
    fn rtcp_aad(
        header: &[u8],
        word: &[u8; SRTCP_WORD_LEN],
    ) -> [u8; RTCP_HEADER_LEN + SRTCP_WORD_LEN] {
        let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_WORD_LEN];
        for (a, b) in aad.iter_mut().zip(header.iter().chain(word)) {
            *a = *b;
        }
        aad
    }

    /// `pkt` split before its last `n` octets (`short` when it has fewer).
    #[inline]
    fn split_tail(
        pkt: &mut [u8],
        n: usize,
        short: SrtpError,
    ) -> Result<(&mut [u8], &mut [u8]), SrtpError> {
        let at = pkt.len().checked_sub(n).ok_or(short)?;
        pkt.split_at_mut_checked(at).ok_or(short)
    }

    /// Encrypts `pkt[header_len..pkt.len() - tag_len]` and writes the tag into the last
    /// `tag_len` octets. `index` is the 48-bit SRTP packet index `ROC || SEQ`.
    pub(super) fn protect_rtp(
        &self,
        pkt: &mut [u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<(), SrtpError> {
        let (data, tag) = Self::split_tail(pkt, self.tag_len(), SrtpError::BufferTooSmall)?;
        match self {
            Transform::Gcm { key, salt } => {
                let (header, payload) = data
                    .split_at_mut_checked(header_len)
                    .ok_or(SrtpError::Malformed)?;
                let t = key
                    .seal_in_place_separate_tag(
                        Self::gcm_nonce(*salt, ssrc, index),
                        Aad::from(&*header),
                        payload,
                    )
                    .map_err(|_| SrtpError::Malformed)?;
                tag.copy_from_slice(t.as_ref());
            }
            Transform::Cm { aes, salt, mac } => {
                let payload = data.get_mut(header_len..).ok_or(SrtpError::Malformed)?;
                Self::cm_keystream(aes, *salt, ssrc, index).apply_keystream(payload);
                let roc = ((index >> 16) as u32).to_be_bytes();
                Self::write_hmac(mac, &[data, &roc], tag);
            }
            #[cfg(fuzzing)]
            Transform::Null => tag.fill(0),
        }
        Ok(())
    }

    /// Authenticates the whole SRTP packet `pkt` and decrypts its payload in place; the plain
    /// packet is then `pkt[..pkt.len() - tag_len]`. On error the contents are unspecified.
    pub(super) fn unprotect_rtp(
        &self,
        pkt: &mut [u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<(), SrtpError> {
        match self {
            Transform::Gcm { key, salt } => {
                let (header, sealed) = pkt
                    .split_at_mut_checked(header_len)
                    .ok_or(SrtpError::Malformed)?;
                key.open_in_place(
                    Self::gcm_nonce(*salt, ssrc, index),
                    Aad::from(&*header),
                    sealed,
                )
                .map_err(|_| SrtpError::AuthenticationFailed)?;
            }
            Transform::Cm { aes, salt, mac } => {
                let (data, tag) = Self::split_tail(pkt, CM_TAG_LEN, SrtpError::Malformed)?;
                let roc = ((index >> 16) as u32).to_be_bytes();
                Self::hmac(mac, &[data, &roc])
                    .verify_truncated_left(tag)
                    .map_err(|_| SrtpError::AuthenticationFailed)?;
                let payload = data.get_mut(header_len..).ok_or(SrtpError::Malformed)?;
                Self::cm_keystream(aes, *salt, ssrc, index).apply_keystream(payload);
            }
            #[cfg(fuzzing)]
            Transform::Null => {
                let tag = pkt
                    .len()
                    .checked_sub(GCM_TAG_LEN)
                    .and_then(|at| pkt.get(at..))
                    .ok_or(SrtpError::Malformed)?;
                if tag.iter().any(|&b| b != 0) {
                    return Err(SrtpError::AuthenticationFailed);
                }
            }
        }
        Ok(())
    }

    /// Offset of the `E|SRTCP index` word in an SRTCP packet of `len` octets.
    #[inline]
    pub(super) fn srtcp_word_at(&self, len: usize) -> Option<usize> {
        match self {
            Transform::Cm { .. } => len.checked_sub(CM_TAG_LEN + SRTCP_WORD_LEN),
            _ => len.checked_sub(SRTCP_WORD_LEN),
        }
    }

    /// Protects the RTCP packet `pkt[..plain_len]` with E = 1 and SRTCP index `index`, writing
    /// the trailer (`pkt.len() - plain_len` must be `4 + tag_len`).
    pub(super) fn protect_rtcp(
        &self,
        pkt: &mut [u8],
        plain_len: usize,
        ssrc: u32,
        index: u32,
    ) -> Result<(), SrtpError> {
        let word = (SRTCP_E_BIT | index).to_be_bytes();
        let (data, trailer) = pkt
            .split_at_mut_checked(plain_len)
            .ok_or(SrtpError::BufferTooSmall)?;
        let (header, body) = data
            .split_at_mut_checked(RTCP_HEADER_LEN)
            .ok_or(SrtpError::Malformed)?;
        match self {
            Transform::Gcm { key, salt } => {
                let t = key
                    .seal_in_place_separate_tag(
                        Self::gcm_nonce(*salt, ssrc, u64::from(index)),
                        Aad::from(Self::rtcp_aad(header, &word)),
                        body,
                    )
                    .map_err(|_| SrtpError::Malformed)?;
                let (tag, w) = trailer
                    .split_at_mut_checked(GCM_TAG_LEN)
                    .ok_or(SrtpError::BufferTooSmall)?;
                tag.copy_from_slice(t.as_ref());
                w.copy_from_slice(&word);
            }
            Transform::Cm { aes, salt, mac } => {
                Self::cm_keystream(aes, *salt, ssrc, u64::from(index)).apply_keystream(body);
                let (w, tag) = trailer
                    .split_at_mut_checked(SRTCP_WORD_LEN)
                    .ok_or(SrtpError::BufferTooSmall)?;
                w.copy_from_slice(&word);
                Self::write_hmac(mac, &[header, body, &word], tag);
            }
            #[cfg(fuzzing)]
            Transform::Null => {
                let (tag, w) = trailer
                    .split_at_mut_checked(GCM_TAG_LEN)
                    .ok_or(SrtpError::BufferTooSmall)?;
                tag.fill(0);
                w.copy_from_slice(&word);
            }
        }
        Ok(())
    }

    /// Authenticates the SRTCP packet `pkt` (whose trailer word is `word`) and decrypts it in
    /// place if E is set; the plain packet is then `pkt[..pkt.len() - 4 - tag_len]`. On error the
    /// contents are unspecified.
    pub(super) fn unprotect_rtcp(
        &self,
        pkt: &mut [u8],
        ssrc: u32,
        word: u32,
    ) -> Result<(), SrtpError> {
        let encrypted = word & SRTCP_E_BIT != 0;
        let index = u64::from(word & !SRTCP_E_BIT);
        let plain_len = pkt
            .len()
            .checked_sub(SRTCP_WORD_LEN + self.tag_len())
            .filter(|&n| n >= RTCP_HEADER_LEN)
            .ok_or(SrtpError::Malformed)?;
        match self {
            Transform::Gcm { key, salt } => {
                let nonce = Self::gcm_nonce(*salt, ssrc, index);
                let word = word.to_be_bytes();
                let sealed_end = plain_len + GCM_TAG_LEN;
                if encrypted {
                    // AAD = header || E|index; ciphertext || tag sit between them.
                    let (header, rest) = pkt
                        .split_at_mut_checked(RTCP_HEADER_LEN)
                        .ok_or(SrtpError::Malformed)?;
                    let sealed = rest
                        .get_mut(..sealed_end - RTCP_HEADER_LEN)
                        .ok_or(SrtpError::Malformed)?;
                    key.open_in_place(nonce, Aad::from(Self::rtcp_aad(header, &word)), sealed)
                        .map_err(|_| SrtpError::AuthenticationFailed)?;
                } else {
                    // RFC 7714 §17.3: AAD = whole packet || E|index, empty plaintext. Move the
                    // word in front of the tag so the AAD is one slice (no copy of the packet).
                    let swapped = pkt.get_mut(plain_len..).ok_or(SrtpError::Malformed)?;
                    swapped.rotate_right(SRTCP_WORD_LEN);
                    let (aad, tag) = pkt
                        .split_at_mut_checked(plain_len + SRTCP_WORD_LEN)
                        .ok_or(SrtpError::Malformed)?;
                    key.open_in_place(nonce, Aad::from(&*aad), tag)
                        .map_err(|_| SrtpError::AuthenticationFailed)?;
                }
            }
            Transform::Cm { aes, salt, mac } => {
                let (data, tag) = pkt
                    .split_at_mut_checked(plain_len + SRTCP_WORD_LEN)
                    .ok_or(SrtpError::Malformed)?;
                Self::hmac(mac, &[data])
                    .verify_truncated_left(tag)
                    .map_err(|_| SrtpError::AuthenticationFailed)?;
                if encrypted {
                    let body = data
                        .get_mut(RTCP_HEADER_LEN..plain_len)
                        .ok_or(SrtpError::Malformed)?;
                    Self::cm_keystream(aes, *salt, ssrc, index).apply_keystream(body);
                }
            }
            #[cfg(fuzzing)]
            Transform::Null => {
                let tag = pkt
                    .get(plain_len..plain_len + GCM_TAG_LEN)
                    .ok_or(SrtpError::Malformed)?;
                if tag.iter().any(|&b| b != 0) {
                    return Err(SrtpError::AuthenticationFailed);
                }
            }
        }
        Ok(())
    }

    /// XORs the AES-CM keystream for (`ssrc`, `index`) into `data` (tests: RFC 3711 B.2).
    #[cfg(test)]
    pub(super) fn cm_apply_keystream(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        if let Transform::Cm { aes, salt, .. } = self {
            Self::cm_keystream(aes, *salt, ssrc, index).apply_keystream(data);
        }
    }
}
