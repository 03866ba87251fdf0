//! SRTP suites and master keys as SDP carries them (RFC 4568 SDES `inline:` keys).
//!
//! Key material never appears in `Debug` output or logs.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use core::fmt;

/// The SRTP protection profiles the relay supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    /// AEAD_AES_128_GCM (RFC 7714): the MC profile (TS 33.180 §7.5.1).
    AeadAes128Gcm,
    /// AES_CM_128_HMAC_SHA1_80 (RFC 3711, RFC 4568).
    AesCm128HmacSha1_80,
}

impl SrtpSuite {
    /// The SDES name.
    pub const fn name(self) -> &'static str {
        match self {
            SrtpSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
        }
    }

    /// Parses an SDES suite name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "AEAD_AES_128_GCM" => Some(SrtpSuite::AeadAes128Gcm),
            "AES_CM_128_HMAC_SHA1_80" => Some(SrtpSuite::AesCm128HmacSha1_80),
            _ => None,
        }
    }

    /// Master key length in octets.
    pub const fn key_len(self) -> usize {
        16
    }

    /// Master salt length in octets (12 for GCM, RFC 7714 §12; 14 for AES-CM).
    pub const fn salt_len(self) -> usize {
        match self {
            SrtpSuite::AeadAes128Gcm => 12,
            SrtpSuite::AesCm128HmacSha1_80 => 14,
        }
    }
}

/// A master key and salt for one direction of one leg.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    /// The suite.
    pub suite: SrtpSuite,
    /// Master key then master salt (`key_len + salt_len` octets).
    pub material: Vec<u8>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("suite", &self.suite)
            .field("material", &"<redacted>")
            .finish()
    }
}

/// Base64 runs at least this long are taken for key material by [`redact`]: an SDES key and
/// salt is 40 characters, a tc_key the same; the only other unbroken base64 runs this long an SDP
/// or API request carries are ICE passwords, which are secrets too.
pub const REDACT_BASE64_RUN: usize = 24;

/// `text` fit to quote in an error or a log line: all that follows `inline:` (wherever it
/// stands, so a malformed `a=crypto` line is covered) and every base64 run of
/// [`REDACT_BASE64_RUN`] characters or more (a key spliced into some other line or JSON value)
/// become `<redacted>`.
pub fn redact(text: &str) -> String {
    let head = match text.find("inline:") {
        Some(i) => text.get(..i + 7).unwrap_or_default(),
        None => text,
    };
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=';
    let mut out = String::with_capacity(head.len() + 10);
    let mut rest = head;
    while !rest.is_empty() {
        let run = rest.find(|c: char| !is_b64(c)).unwrap_or(rest.len());
        let (b64, tail) = rest.split_at(run);
        out.push_str(if b64.len() >= REDACT_BASE64_RUN {
            "<redacted>"
        } else {
            b64
        });
        let other = tail.find(is_b64).unwrap_or(tail.len());
        let (plain, tail) = tail.split_at(other);
        out.push_str(plain);
        rest = tail;
    }
    if head.len() < text.len() {
        out.push_str("<redacted>");
    }
    out
}

/// Why key material was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Not a supported suite name.
    UnknownSuite,
    /// The base64 text does not decode.
    BadBase64,
    /// Decoded, but not `key_len + salt_len` octets.
    WrongLength,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyError::UnknownSuite => {
                "unsupported SRTP suite (AEAD_AES_128_GCM or AES_CM_128_HMAC_SHA1_80)"
            }
            KeyError::BadBase64 => "key is not valid base64",
            KeyError::WrongLength => "key and salt have the wrong length for the suite",
        })
    }
}

impl std::error::Error for KeyError {}

impl MasterKey {
    /// A key from the SDES `inline:` base64 text.
    pub fn from_base64(suite: SrtpSuite, b64: &str) -> Result<Self, KeyError> {
        let material = base64_decode(b64).ok_or(KeyError::BadBase64)?;
        Self::new(suite, material)
    }

    /// A key from raw material.
    pub fn new(suite: SrtpSuite, material: Vec<u8>) -> Result<Self, KeyError> {
        if material.len() != suite.key_len() + suite.salt_len() {
            return Err(KeyError::WrongLength);
        }
        Ok(MasterKey { suite, material })
    }

    /// The master key.
    pub fn key(&self) -> &[u8] {
        self.material
            .get(..self.suite.key_len())
            .unwrap_or_default()
    }

    /// The master salt.
    pub fn salt(&self) -> &[u8] {
        self.material
            .get(self.suite.key_len()..)
            .unwrap_or_default()
    }

    /// The SDES `inline:` base64 text.
    pub fn to_base64(&self) -> String {
        base64_encode(&self.material)
    }

    /// The value of an `a=crypto` attribute carrying this key.
    pub fn sdes_attribute(&self, tag: u32) -> String {
        format!("{tag} {} inline:{}", self.suite.name(), self.to_base64())
    }
}

/// Standard alphabet; padding written, optional when read; non-zero trailing bits accepted
/// (SDES keys come from many implementations).
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    B64.encode(data)
}

/// Standard base64, padding optional; `None` on any other character.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    B64.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_key_material_wherever_it_stands() {
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==";
        for (text, want) in [
            (format!("s{key}"), "<redacted>".to_owned()),
            (
                format!("a=crypto:1 X inline:{key}|2^20"),
                "a=crypto:1 X inline:<redacted>".to_owned(),
            ),
            (
                format!("invalid type: string \"{key}\", expected a boolean"),
                "invalid type: string \"<redacted>\", expected a boolean".to_owned(),
            ),
            (
                format!("a {key} b {key}"),
                "a <redacted> b <redacted>".to_owned(),
            ),
            (
                "a=rtpmap:96 H264/90000".to_owned(),
                "a=rtpmap:96 H264/90000".to_owned(),
            ),
            (
                "unknown field `colour` at line 1 column 9".to_owned(),
                "unknown field `colour` at line 1 column 9".to_owned(),
            ),
            (String::new(), String::new()),
        ] {
            assert_eq!(redact(&text), want);
        }
        // A run one short of the threshold stays.
        let short = "A".repeat(REDACT_BASE64_RUN - 1);
        assert_eq!(redact(&short), short);
        assert_eq!(redact(&"A".repeat(REDACT_BASE64_RUN)), "<redacted>");
    }

    #[test]
    fn base64_known_answers() {
        // The key the ffmpeg interop tests use (docs/testing.md).
        let k = base64_decode("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e").unwrap();
        assert_eq!(k, (1..=30).collect::<Vec<u8>>());
        assert_eq!(
            base64_encode(&k),
            "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e"
        );
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), plain.as_bytes());
        }
        assert!(base64_decode("Zm9v!").is_none());
        assert!(base64_decode("Z").is_none());
        assert_eq!(base64_decode("Zm8").unwrap(), b"fo");
        assert!(base64_decode("Zm 9v").is_none());
    }

    #[test]
    fn key_lengths_per_suite_and_redaction() {
        let cm = MasterKey::from_base64(
            SrtpSuite::AesCm128HmacSha1_80,
            "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e",
        )
        .unwrap();
        assert_eq!(cm.key().len(), 16);
        assert_eq!(cm.salt().len(), 14);
        assert_eq!(
            MasterKey::new(SrtpSuite::AeadAes128Gcm, vec![0; 30]),
            Err(KeyError::WrongLength)
        );
        assert!(!format!("{cm:?}").contains("AQID"));
        assert_eq!(
            cm.sdes_attribute(1),
            "1 AES_CM_128_HMAC_SHA1_80 inline:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e"
        );
    }
}
