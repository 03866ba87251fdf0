//! The body of a call's [`CallRecord`]: for a one-to-one call ([`CallImage`]) the call's
//! snapshot and its rules' snapshot as JSON (`{"v":1,"call":…,"rules":…}`), and apart from
//! them, sealed, the call's key material and SDPs ([`CallSecrets`]) together with a SHA-256
//! digest of the body; for a group call ([`GroupImage`]) the group's snapshot as JSON
//! (`{"v":1,"group":…}`: transmission control, members' relay ports and addresses, rules'
//! state) and, sealed, the members' keys ([`GroupSecrets`], its own encoding version) with the
//! digest. [`StoredImage::from_record`] reads either; a reader that knows only one-to-one
//! calls refuses a group record with a clear error (its body has no `call`). The digest binds the clear
//! body to the sealed part: whoever can write to Redis but has no seal key cannot change a
//! call's addresses or state (e.g. to send media elsewhere) without the record failing to open
//! on the adopter.
//!
//! Nothing here logs; `Debug` of the secrets shows no key.

use super::record::CallRecord;
use super::seal::{SealError, SealKey};
use crate::control::call::snapshot::{CallSecrets, CallSnapshot, GroupSecrets, RestoreError};
use crate::ids::CallId;
use crate::relay::rules::RulesSnapshot;
use crate::relay::{CallImage, GroupImage, GroupSnapshot};
use std::fmt;

/// Version of the body's JSON.
const BODY_VERSION: u8 = 1;
const DIGEST_LEN: usize = 32;

#[derive(serde::Serialize)]
struct Body<'a> {
    v: u8,
    call: &'a CallSnapshot,
    rules: &'a Option<RulesSnapshot>,
}

#[derive(serde::Serialize)]
struct GroupBody<'a> {
    v: u8,
    group: &'a GroupSnapshot,
}

/// Either body, as read.
#[derive(serde::Deserialize)]
struct AnyBody {
    v: u8,
    #[serde(default)]
    call: Option<CallSnapshot>,
    #[serde(default)]
    rules: Option<RulesSnapshot>,
    #[serde(default)]
    group: Option<GroupSnapshot>,
}

/// A call as a record holds it: one-to-one or group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredImage {
    /// A push or pull call.
    Call(Box<CallImage>),
    /// A group call.
    Group(Box<GroupImage>),
}

impl StoredImage {
    /// The call's ID.
    pub fn call_id(&self) -> &str {
        match self {
            StoredImage::Call(c) => &c.call.call_id,
            StoredImage::Group(g) => &g.group.call_id,
        }
    }

    /// Opens a record written by [`CallImage::to_record`] or [`GroupImage::to_record`].
    pub fn from_record(r: &CallRecord, key: &SealKey) -> Result<StoredImage, StoredCallError> {
        let plain = open(r, key)?;
        let body: AnyBody =
            serde_json::from_slice(&r.body).map_err(|e| StoredCallError::Body(e.to_string()))?;
        if body.v != BODY_VERSION {
            return Err(StoredCallError::Body(format!("version {}", body.v)));
        }
        let other =
            || StoredCallError::Restore(RestoreError::Invalid("the body is another call's"));
        match (body.call, body.group) {
            (Some(call), None) => {
                if call.call_id != r.call_id.as_str() {
                    return Err(other());
                }
                let secrets = CallSecrets::decode(&plain).map_err(StoredCallError::Restore)?;
                Ok(StoredImage::Call(Box::new(CallImage {
                    call,
                    secrets,
                    rules: body.rules,
                })))
            }
            (None, Some(group)) => {
                if group.call_id != r.call_id.as_str() {
                    return Err(other());
                }
                let secrets = GroupSecrets::decode(&plain).map_err(StoredCallError::Restore)?;
                Ok(StoredImage::Group(Box::new(GroupImage { group, secrets })))
            }
            _ => Err(StoredCallError::Body(
                "neither a one-to-one nor a group call".into(),
            )),
        }
    }
}

/// The sealed part of `r` opened and checked against the body: the secrets' encoding.
fn open(r: &CallRecord, key: &SealKey) -> Result<Vec<u8>, StoredCallError> {
    let plain = r
        .open_keys(key)
        .map_err(StoredCallError::Seal)?
        .ok_or(StoredCallError::Seal(SealError::Malformed))?;
    if plain.len() < DIGEST_LEN || plain[..DIGEST_LEN] != digest(&r.body) {
        return Err(StoredCallError::Tampered);
    }
    Ok(plain[DIGEST_LEN..].to_vec())
}

/// A record of `call_id` with `body` in the clear (its JSON) and, sealed, the body's digest and
/// `secrets`.
fn seal(
    key: &SealKey,
    call_id: &str,
    updated_unix_ms: u64,
    body: &impl serde::Serialize,
    secrets: &[u8],
) -> Result<CallRecord, StoredCallError> {
    let body = serde_json::to_vec(body).map_err(|e| StoredCallError::Body(e.to_string()))?;
    let mut plain = digest(&body).to_vec();
    plain.extend_from_slice(secrets);
    let mut r = CallRecord::new(CallId::from(call_id), String::new(), updated_unix_ms, body);
    r.seal_keys(key, &plain).map_err(StoredCallError::Seal)?;
    Ok(r)
}

impl GroupImage {
    /// The record of this group call (owner and epoch are set by the store), written at
    /// `updated_unix_ms`: the snapshot in the clear body, the members' keys sealed.
    pub fn to_record(
        &self,
        key: &SealKey,
        updated_unix_ms: u64,
    ) -> Result<CallRecord, StoredCallError> {
        seal(
            key,
            &self.group.call_id,
            updated_unix_ms,
            &GroupBody {
                v: BODY_VERSION,
                group: &self.group,
            },
            &self.secrets.encode(),
        )
    }
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
        seal(
            key,
            &self.call.call_id,
            updated_unix_ms,
            &Body {
                v: BODY_VERSION,
                call: &self.call,
                rules: &self.rules,
            },
            &self.secrets.encode(),
        )
    }

    /// Opens a record written by [`CallImage::to_record`] (a group call's record is refused:
    /// read it with [`StoredImage::from_record`]).
    pub fn from_record(r: &CallRecord, key: &SealKey) -> Result<CallImage, StoredCallError> {
        match StoredImage::from_record(r, key)? {
            StoredImage::Call(c) => Ok(*c),
            StoredImage::Group(_) => Err(StoredCallError::Body(
                "a group call's record, not a one-to-one call's".into(),
            )),
        }
    }
}
