//! `a=crypto` lines (RFC 4568 SDES): the type and its parser.

use super::token::{num, tokens};
use super::*;

/// An `a=crypto` line (RFC 4568 SDES).
///
/// `Debug` redacts the key material.
#[derive(Clone, PartialEq, Eq)]
pub struct Crypto {
    /// The crypto tag.
    pub tag: u32,
    /// The crypto suite, e.g. `AEAD_AES_128_GCM` or `AES_CM_128_HMAC_SHA1_80`.
    pub suite: String,
    /// The text after `inline:` up to `|`, `;` or a space: base64 master key and salt.
    pub key_b64: String,
    /// The whole attribute value after `a=crypto:`, as written.
    pub raw: String,
}

impl fmt::Debug for Crypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crypto")
            .field("tag", &self.tag)
            .field("suite", &self.suite)
            .field("key_b64", &"<redacted>")
            .field("raw", &"<redacted>")
            .finish()
    }
}

/// `<tag> <suite> inline:<key>[|...][;inline:...] [session params]`.
pub(super) fn parse_crypto(value: &str) -> Result<Crypto, &'static str> {
    const BAD: &str = "bad a=crypto (need <tag> <suite> inline:<key>)";
    let toks = tokens(value);
    let [(_, tag), (_, suite), (_, key_params), ..] = toks.as_slice() else {
        return Err(BAD);
    };
    let tag = num::<u32>(tag).filter(|t| *t <= 999_999_999).ok_or(BAD)?;
    let method = key_params.get(..7).ok_or(BAD)?;
    if !method.eq_ignore_ascii_case("inline:") {
        return Err(BAD);
    }
    let rest = key_params.get(7..).ok_or(BAD)?;
    let key = rest.split(['|', ';']).next().unwrap_or_default();
    let b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=';
    if key.is_empty() || !key.bytes().all(b64) {
        return Err(BAD);
    }
    Ok(Crypto {
        tag,
        suite: (*suite).to_owned(),
        key_b64: key.to_owned(),
        raw: value.to_owned(),
    })
}
