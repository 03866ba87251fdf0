//! Sealing key material before it goes to Redis: AES-256-GCM (`ring`), a random 96-bit nonce
//! per record, and the record's place (call ID and field) as associated data, so a sealed
//! value opens only where it was written: not under another key, not altered, not moved to
//! another call or field.
//!
//! Sealed layout: `version (1) | nonce (12) | ciphertext | tag (16)`.

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use std::path::Path;

/// Length of a [`SealKey`] in bytes.
pub const SEAL_KEY_LEN: usize = 32;

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const AAD_CONTEXT: &[u8] = b"mcvideo-relay/ha/seal/v1";

/// Why a value could not be sealed or opened, or a key not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealError {
    /// The key is not 32 bytes of hex or base64 (the message says what was found).
    BadKey(String),
    /// The key file could not be read.
    KeyFile(String),
    /// The sealed value is too short or of an unknown version.
    Malformed,
    /// Authentication failed: another key, a tampered value, or a value moved from another
    /// call or field.
    Open,
    /// The system random generator failed.
    Random,
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::BadKey(m) => write!(f, "bad key: {m}"),
            SealError::KeyFile(m) => write!(f, "key file: {m}"),
            SealError::Malformed => f.write_str("sealed value malformed"),
            SealError::Open => f.write_str(
                "sealed value does not open (another key, tampered, or moved from another call)",
            ),
            SealError::Random => f.write_str("system random generator failed"),
        }
    }
}

impl std::error::Error for SealError {}

/// The AEAD key that seals key material in Redis. Its bytes are never printed: `Debug` shows
/// `SealKey(..)`.
pub struct SealKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<SealKey, SealError> {
        if bytes.len() != SEAL_KEY_LEN {
            return Err(SealError::BadKey(format!(
                "{} bytes, must be {SEAL_KEY_LEN}",
                bytes.len()
            )));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| SealError::BadKey("rejected by AES-256-GCM".into()))?;
        Ok(SealKey {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        })
    }

    /// A key from text: 64 hex digits, or base64 (standard or URL-safe, padded or not) of 32
    /// bytes. Surrounding whitespace is ignored (a key file may end with a newline).
    pub fn from_text(text: &str) -> Result<SealKey, SealError> {
        let t = text.trim();
        if t.len() == 2 * SEAL_KEY_LEN && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut bytes = [0u8; SEAL_KEY_LEN];
            for (i, out) in bytes.iter_mut().enumerate() {
                let pair = t.get(2 * i..2 * i + 2).unwrap_or("00");
                *out = u8::from_str_radix(pair, 16)
                    .map_err(|_| SealError::BadKey("not hex".into()))?;
            }
            return SealKey::from_bytes(&bytes);
        }
        let engines = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for e in engines {
            if let Ok(bytes) = e.decode(t) {
                return SealKey::from_bytes(&bytes);
            }
        }
        Err(SealError::BadKey(format!(
            "must be {} hex digits or base64 of {SEAL_KEY_LEN} bytes ({} characters given)",
            2 * SEAL_KEY_LEN,
            t.len()
        )))
    }

    /// A key from a file holding its text (see [`SealKey::from_text`]).
    pub fn from_file(path: &Path) -> Result<SealKey, SealError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SealError::KeyFile(format!("{}: {e}", path.display())))?;
        SealKey::from_text(&text)
    }

    /// Seals `plaintext` for `field` of call `call_id`.
    pub fn seal(&self, call_id: &str, field: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let mut body = out.split_off(1 + NONCE_LEN);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(call_id, field)),
                &mut body,
            )
            .map_err(|_| SealError::Open)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens what [`SealKey::seal`] sealed for the same call and field.
    pub fn open(&self, call_id: &str, field: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != VERSION {
            return Err(SealError::Malformed);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[1..1 + NONCE_LEN]);
        let mut body = sealed[1 + NONCE_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(call_id, field)),
                &mut body,
            )
            .map_err(|_| SealError::Open)?;
        let n = plain.len();
        body.truncate(n);
        Ok(body)
    }
}

/// The associated data: a context string, then the call ID and the field, each length-prefixed
/// so that no two (call, field) pairs give the same bytes.
fn aad(call_id: &str, field: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_CONTEXT.len() + 4 + call_id.len() + field.len());
    a.extend_from_slice(AAD_CONTEXT);
    for part in [call_id, field] {
        a.extend_from_slice(&(part.len() as u16).to_be_bytes());
        a.extend_from_slice(part.as_bytes());
    }
    a
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(b: u8) -> SealKey {
        SealKey::from_bytes(&[b; SEAL_KEY_LEN]).unwrap()
    }

    #[test]
    fn ha_seal_round_trip_and_fresh_nonce() {
        let k = key(7);
        let a = k.seal("call-1", "keys", b"master key bytes").unwrap();
        let b = k.seal("call-1", "keys", b"master key bytes").unwrap();
        assert_ne!(a, b, "a nonce per record");
        assert_eq!(k.open("call-1", "keys", &a).unwrap(), b"master key bytes");
        assert_eq!(k.open("call-1", "keys", &b).unwrap(), b"master key bytes");
        let empty = k.seal("c", "f", b"").unwrap();
        assert_eq!(k.open("c", "f", &empty).unwrap(), b"");
    }

    #[test]
    fn ha_seal_wrong_key_fails() {
        let s = key(1).seal("call-1", "keys", b"secret").unwrap();
        assert_eq!(key(2).open("call-1", "keys", &s), Err(SealError::Open));
    }

    #[test]
    fn ha_seal_tampered_fails() {
        let k = key(1);
        let s = k.seal("call-1", "keys", b"secret").unwrap();
        for i in 1..s.len() {
            let mut t = s.clone();
            t[i] ^= 0x01;
            assert_eq!(
                k.open("call-1", "keys", &t),
                Err(SealError::Open),
                "byte {i}"
            );
        }
        assert_eq!(
            k.open("call-1", "keys", &s[..s.len() - 1]),
            Err(SealError::Open)
        );
        assert_eq!(
            k.open("call-1", "keys", &s[..10]),
            Err(SealError::Malformed)
        );
        let mut v = s.clone();
        v[0] = 9;
        assert_eq!(k.open("call-1", "keys", &v), Err(SealError::Malformed));
    }

    #[test]
    fn ha_seal_moved_record_fails() {
        let k = key(1);
        let s = k.seal("call-1", "keys", b"secret").unwrap();
        assert_eq!(k.open("call-2", "keys", &s), Err(SealError::Open));
        assert_eq!(k.open("call-1", "other", &s), Err(SealError::Open));
        // no ambiguity between the two parts
        let s = k.seal("ab", "c", b"x").unwrap();
        assert_eq!(k.open("a", "bc", &s), Err(SealError::Open));
    }

    #[test]
    fn ha_seal_key_from_text() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let a = SealKey::from_text(&format!("{hex}\n")).unwrap();
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let b = SealKey::from_text(&b64).unwrap();
        let s = a.seal("c", "k", b"x").unwrap();
        assert_eq!(b.open("c", "k", &s).unwrap(), b"x");
        assert!(matches!(
            SealKey::from_text("abcd"),
            Err(SealError::BadKey(_))
        ));
        assert!(matches!(
            SealKey::from_text(&base64::engine::general_purpose::STANDARD.encode([0u8; 16])),
            Err(SealError::BadKey(_))
        ));
        assert_eq!(format!("{a:?}"), "SealKey(..)");
    }
}
