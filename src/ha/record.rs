//! [`CallRecord`]: one call as stored in Redis, with an opaque body and sealed key material.
//!
//! Encoding (version 1), all integers big-endian:
//!
//! ```text
//! 0x01 | id_len u8 | call_id | owner_len u8 | owner | epoch u64 | updated_unix_ms u64
//!      | body_len u32 | body | has_keys u8 (0/1) | [keys_len u32 | sealed_keys]
//! ```

use super::seal::{SealError, SealKey};
use crate::ids::CallId;
use std::fmt;

const VERSION: u8 = 1;
/// The field name under which a record's key material is sealed (associated data).
const KEYS_FIELD: &str = "keys";

/// One call's state as the HA store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// The call.
    pub call_id: CallId,
    /// The instance that owns it (in Redis the call key's `owner` field is authoritative: an
    /// adoption changes it).
    pub owner: String,
    /// The owner's lease epoch when the record was written.
    pub epoch: u64,
    /// When the owner last changed the call (Unix time, ms).
    pub updated_unix_ms: u64,
    /// The call's state, opaque to the store (e.g. JSON).
    pub body: Vec<u8>,
    /// Key material sealed with [`CallRecord::seal_keys`], if the call has any.
    pub sealed_keys: Option<Vec<u8>>,
}

/// Why bytes are not a [`CallRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// Shorter than its lengths say.
    Truncated,
    /// An unknown encoding version.
    Version(u8),
    /// The call ID or the owner is not valid.
    BadId,
    /// Bytes left over after the record.
    Trailing,
    /// A field too long to encode (call ID or owner over 255 bytes, body over 4 GiB).
    TooLong,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Truncated => f.write_str("call record truncated"),
            RecordError::Version(v) => write!(f, "call record of unknown version {v}"),
            RecordError::BadId => f.write_str("call record with an invalid call ID or owner"),
            RecordError::Trailing => f.write_str("bytes after the call record"),
            RecordError::TooLong => f.write_str("call record field too long"),
        }
    }
}

impl std::error::Error for RecordError {}

impl CallRecord {
    /// A record with no key material.
    pub fn new(
        call_id: CallId,
        owner: impl Into<String>,
        updated_unix_ms: u64,
        body: Vec<u8>,
    ) -> Self {
        CallRecord {
            call_id,
            owner: owner.into(),
            epoch: 0,
            updated_unix_ms,
            body,
            sealed_keys: None,
        }
    }

    /// Seals `plaintext` (e.g. the SRTP master keys) into [`CallRecord::sealed_keys`], bound to
    /// this call's ID.
    pub fn seal_keys(&mut self, key: &SealKey, plaintext: &[u8]) -> Result<(), SealError> {
        self.sealed_keys = Some(key.seal(&self.call_id, KEYS_FIELD, plaintext)?);
        Ok(())
    }

    /// Opens [`CallRecord::sealed_keys`] (`None` when the call has none).
    pub fn open_keys(&self, key: &SealKey) -> Result<Option<Vec<u8>>, SealError> {
        self.sealed_keys
            .as_deref()
            .map(|s| key.open(&self.call_id, KEYS_FIELD, s))
            .transpose()
    }

    /// The compact encoding.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let keys_len = self.sealed_keys.as_ref().map_or(0, |k| 4 + k.len());
        let mut out = Vec::with_capacity(
            1 + 1
                + self.call_id.len()
                + 1
                + self.owner.len()
                + 16
                + 4
                + self.body.len()
                + 1
                + keys_len,
        );
        out.push(VERSION);
        put_short(&mut out, self.call_id.as_bytes())?;
        put_short(&mut out, self.owner.as_bytes())?;
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.updated_unix_ms.to_be_bytes());
        put_long(&mut out, &self.body)?;
        match &self.sealed_keys {
            None => out.push(0),
            Some(k) => {
                out.push(1);
                put_long(&mut out, k)?;
            }
        }
        Ok(out)
    }

    /// Reads the encoding back.
    pub fn decode(bytes: &[u8]) -> Result<CallRecord, RecordError> {
        let mut r = Reader::new(bytes, RecordError::Truncated);
        let v = r.u8()?;
        if v != VERSION {
            return Err(RecordError::Version(v));
        }
        let call_id = r.short_str()?;
        if !CallId::is_valid(call_id) {
            return Err(RecordError::BadId);
        }
        let call_id = CallId::from(call_id);
        let owner = r.short_str()?.to_owned();
        let epoch = r.u64()?;
        let updated_unix_ms = r.u64()?;
        let body = r.long()?.to_vec();
        let sealed_keys = match r.u8()? {
            0 => None,
            1 => Some(r.long()?.to_vec()),
            _ => return Err(RecordError::Truncated),
        };
        r.end(RecordError::Trailing)?;
        Ok(CallRecord {
            call_id,
            owner,
            epoch,
            updated_unix_ms,
            body,
            sealed_keys,
        })
    }
}

fn put_short(out: &mut Vec<u8>, b: &[u8]) -> Result<(), RecordError> {
    let n = u8::try_from(b.len()).map_err(|_| RecordError::TooLong)?;
    out.push(n);
    out.extend_from_slice(b);
    Ok(())
}

fn put_long(out: &mut Vec<u8>, b: &[u8]) -> Result<(), RecordError> {
    let n = u32::try_from(b.len()).map_err(|_| RecordError::TooLong)?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

/// The record's reader: a short read is [`RecordError::Truncated`].
type Reader<'a> = crate::reader::Reader<'a, RecordError>;

impl<'a> Reader<'a> {
    fn short_str(&mut self) -> Result<&'a str, RecordError> {
        let n = self.u8()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| RecordError::BadId)
    }
    fn long(&mut self) -> Result<&'a [u8], RecordError> {
        let n = self.u32()?;
        self.take(n as usize)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ha::SEAL_KEY_LEN;

    fn rec() -> CallRecord {
        let mut r = CallRecord::new(
            CallId::from("call-1"),
            "relay-a",
            1_700_000_000_123,
            br#"{"x":1}"#.to_vec(),
        );
        r.epoch = 42;
        r
    }

    #[test]
    fn ha_record_round_trip() {
        let mut r = rec();
        assert_eq!(CallRecord::decode(&r.encode().unwrap()).unwrap(), r);
        let k = SealKey::from_bytes(&[3; SEAL_KEY_LEN]).unwrap();
        r.seal_keys(&k, b"srtp master").unwrap();
        let back = CallRecord::decode(&r.encode().unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.open_keys(&k).unwrap().unwrap(), b"srtp master");
        // version, "call-1", "relay-a", epoch + time, body, flag, sealed (version, nonce, 11, tag)
        let sealed = 1 + 12 + 11 + 16;
        assert_eq!(
            r.encode().unwrap().len(),
            1 + 7 + 8 + 16 + (4 + 7) + 1 + (4 + sealed)
        );
    }

    #[test]
    fn ha_record_keys_do_not_move_between_calls() {
        let k = SealKey::from_bytes(&[3; SEAL_KEY_LEN]).unwrap();
        let mut a = rec();
        a.seal_keys(&k, b"key of call-1").unwrap();
        let mut b = rec();
        b.call_id = CallId::from("call-2");
        b.sealed_keys = a.sealed_keys.clone();
        assert_eq!(b.open_keys(&k), Err(SealError::Open));
    }

    #[test]
    fn ha_record_rejects_bad_bytes() {
        let e = rec().encode().unwrap();
        for n in 0..e.len() {
            assert!(CallRecord::decode(&e[..n]).is_err(), "prefix {n}");
        }
        let mut t = e.clone();
        t.push(0);
        assert_eq!(CallRecord::decode(&t), Err(RecordError::Trailing));
        let mut v = e.clone();
        v[0] = 2;
        assert_eq!(CallRecord::decode(&v), Err(RecordError::Version(2)));
        let mut id = e;
        id[2] = b' ';
        assert_eq!(CallRecord::decode(&id), Err(RecordError::BadId));
    }
}
