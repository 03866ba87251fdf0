//! The body of a one-to-one call's [`CallRecord`]: the call's snapshot and its rules' snapshot
//! as JSON, and apart from them, sealed, the call's key material and SDPs
//! ([`CallSecrets`]) of a [`CallImage`] together with a SHA-256 digest of the body. The digest binds the clear
//! body to the sealed part: whoever can write to Redis but has no seal key cannot change a
//! call's addresses or state (e.g. to send media elsewhere) without the record failing to open
//! on the adopter.
//!
//! Nothing here logs; `Debug` of the secrets shows no key.

use super::record::CallRecord;
use super::seal::{SealError, SealKey};
use crate::control::call::snapshot::{CallSecrets, CallSnapshot, RestoreError};
use crate::ids::CallId;
use crate::relay::rules::RulesSnapshot;
use crate::relay::CallImage;
use std::fmt;

/// Version of the body's JSON.
const BODY_VERSION: u8 = 1;
const DIGEST_LEN: usize = 32;

#[derive(serde::Serialize, serde::Deserialize)]
struct Body {
    v: u8,
    call: CallSnapshot,
    rules: Option<RulesSnapshot>,
}

/// Why a record is not a call this relay can restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredCallError {
    /// The body is not the JSON of a call snapshot (or of an unknown version).
    Body(String),
    /// The sealed part does not open (another seal key, or tampered), or is missing.
    Seal(SealError),
    /// The body does not match the digest sealed with it: it was changed in the store.
    Tampered,
    /// The secrets do not decode, or the snapshot is not of this record's call.
    Restore(RestoreError),
}

impl fmt::Display for StoredCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredCallError::Body(m) => write!(f, "call record body: {m}"),
            StoredCallError::Seal(e) => write!(f, "call record keys: {e}"),
            StoredCallError::Tampered => {
                f.write_str("call record body changed in the store (digest mismatch)")
            }
            StoredCallError::Restore(e) => write!(f, "call record: {e}"),
        }
    }
}

impl std::error::Error for StoredCallError {}

fn digest(body: &[u8]) -> [u8; DIGEST_LEN] {
    let d = ring::digest::digest(&ring::digest::SHA256, body);
    let mut out = [0u8; DIGEST_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

impl CallImage {
    /// The record of this call (owner and epoch are set by the store), written at
    /// `updated_unix_ms`.
    pub fn to_record(
        &self,
        key: &SealKey,
        updated_unix_ms: u64,
    ) -> Result<CallRecord, StoredCallError> {
        let body = serde_json::to_vec(&Body {
            v: BODY_VERSION,
            call: self.call.clone(),
            rules: self.rules.clone(),
        })
        .map_err(|e| StoredCallError::Body(e.to_string()))?;
        let mut plain = digest(&body).to_vec();
        plain.extend_from_slice(&self.secrets.encode());
        let mut r = CallRecord::new(
            CallId::from(self.call.call_id.as_str()),
            String::new(),
            updated_unix_ms,
            body,
        );
        r.seal_keys(key, &plain).map_err(StoredCallError::Seal)?;
        Ok(r)
    }

    /// Opens a record written by [`CallImage::to_record`].
    pub fn from_record(r: &CallRecord, key: &SealKey) -> Result<CallImage, StoredCallError> {
        let plain = r
            .open_keys(key)
            .map_err(StoredCallError::Seal)?
            .ok_or(StoredCallError::Seal(SealError::Malformed))?;
        if plain.len() < DIGEST_LEN || plain[..DIGEST_LEN] != digest(&r.body) {
            return Err(StoredCallError::Tampered);
        }
        let secrets =
            CallSecrets::decode(&plain[DIGEST_LEN..]).map_err(StoredCallError::Restore)?;
        let body: Body =
            serde_json::from_slice(&r.body).map_err(|e| StoredCallError::Body(e.to_string()))?;
        if body.v != BODY_VERSION {
            return Err(StoredCallError::Body(format!("version {}", body.v)));
        }
        if body.call.call_id != r.call_id.as_str() {
            return Err(StoredCallError::Restore(RestoreError::Invalid(
                "the body is another call's",
            )));
        }
        Ok(CallImage {
            call: body.call,
            secrets,
            rules: body.rules,
        })
    }
}
