//! Snapshots of a one-to-one call, for high availability: everything a relay that takes the
//! call over needs to go on where its owner stopped ([`super::Call::snapshot`],
//! [`super::Call::restore`]).
//!
//! What a snapshot holds: the parties, kind, commencement mode and media security, the media
//! streams as negotiated (relay ports, the parties' addresses, announced SSRCs), the SDPs the
//! relay handed out, the transmission control state (phase, who holds the grant, whether media
//! started, the Granted and Revoked retransmission counts, the counters) and every running
//! timer as the time **left** at the snapshot (an `Instant` means nothing in another process;
//! the core never reads the clock, so the I/O layer says how long ago the snapshot was taken
//! when it restores).
//!
//! Key material (per_leg SRTP master keys, the control channels' SRTCP keys) and the SDPs
//! (which carry `a=crypto` keys in per_leg mode) are apart, in [`CallSecrets`], with their own
//! compact encoding ([`CallSecrets::encode`]): they are meant to be sealed (the HA store seals
//! them with AES-256-GCM) and never to go where the rest goes (logs, the record's clear body).
//! `CallSecrets`' `Debug` shows no key.
//!
//! Not kept: queued transmits and events (a snapshot is taken after the driver drained them),
//! the reply token buckets (they start full), and the call's media quality meters.

use super::types::{CallState, LegKeys, MediaStream};
pub use crate::control::server::TcSnapshot;
use crate::control::timer::Timer;
use crate::control::{CallKind, CommencementMode, MediaSecurity, ReleaseReason};
use crate::keys::{MasterKey, SrtpSuite};
use std::fmt;

/// Encoding version of [`CallSecrets`].
const SECRETS_VERSION: u8 = 1;

/// One call's state, without key material. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct CallSnapshot {
    /// The call ID.
    pub call_id: String,
    /// Push or pull.
    pub kind: CallKind,
    /// The caller's MCVideo ID.
    pub caller_id: String,
    /// The callee's MCVideo ID.
    pub callee_id: String,
    /// Offered, established or released.
    pub state: CallState,
    /// The chosen commencement mode.
    pub commencement_mode: CommencementMode,
    /// The media security mode.
    pub media_security: MediaSecurity,
    /// The UE(s) the call was delivered to.
    pub deliver_to: Vec<String>,
    /// The media streams, in the order of the caller's offer.
    pub streams: Vec<MediaStream>,
    /// The transmission control server.
    pub tc: TcSnapshot,
    /// The call's own timers (the offer timeout), as time left in ms.
    pub timers: Vec<(Timer, u64)>,
    /// Why it was released, once it is.
    pub release_reason: Option<ReleaseReason>,
    /// How long before the snapshot the call was created (ms).
    pub created_ms_ago: u64,
    /// How long before the snapshot it was established (ms).
    pub established_ms_ago: Option<u64>,
}

/// Keys the relay made or was given while the call is offered (per_leg mode), of one stream.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingKeysSnapshot {
    /// The `a=crypto` tag of the caller's offer.
    pub tag: u32,
    /// The caller's key.
    pub caller_inbound: MasterKey,
    /// The relay's key toward the callee.
    pub callee_outbound: MasterKey,
}

/// The key material of one stream.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamSecrets {
    /// Index of the `m=` line.
    pub index: usize,
    /// Per-leg SRTP keys per party (per_leg mode, established).
    pub keys: [Option<LegKeys>; 2],
    /// Keys of an offered per_leg call.
    pub pending: Option<PendingKeysSnapshot>,
}

/// A call's key material and SDPs: to be sealed, never logged. See the [module docs](self).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CallSecrets {
    /// The control channels' SRTCP keys per party.
    pub tc_keys: [Option<MasterKey>; 2],
    /// The SDPs the relay handed out: the offer for the callee, the answer for the caller.
    pub sdp: [Option<String>; 2],
    /// Streams with key material.
    pub streams: Vec<StreamSecrets>,
}

impl fmt::Debug for CallSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallSecrets")
            .field("tc_keys", &self.tc_keys.iter().flatten().count())
            .field("sdp", &"<redacted>")
            .field("streams", &self.streams.len())
            .finish()
    }
}

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreError {
    /// The snapshot is inconsistent (the message says how).
    Invalid(&'static str),
    /// The secrets' encoding is truncated, of an unknown version or has bytes left over.
    BadSecrets,
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::Invalid(m) => write!(f, "call snapshot not restorable: {m}"),
            RestoreError::BadSecrets => f.write_str("call secrets do not decode"),
        }
    }
}

impl std::error::Error for RestoreError {}

fn suite_byte(s: SrtpSuite) -> u8 {
    match s {
        SrtpSuite::AeadAes128Gcm => 1,
        SrtpSuite::AesCm128HmacSha1_80 => 2,
    }
}

fn put_key(out: &mut Vec<u8>, k: Option<&MasterKey>) {
    match k {
        None => out.push(0),
        Some(k) => {
            out.push(suite_byte(k.suite));
            out.push(k.material.len() as u8);
            out.extend_from_slice(&k.material);
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// The secrets' reader: a short read is [`RestoreError::BadSecrets`].
type Reader<'a> = crate::reader::Reader<'a, RestoreError>;

impl Reader<'_> {
    fn key(&mut self) -> Result<Option<MasterKey>, RestoreError> {
        let suite = match self.u8()? {
            0 => return Ok(None),
            1 => SrtpSuite::AeadAes128Gcm,
            2 => SrtpSuite::AesCm128HmacSha1_80,
            _ => return Err(RestoreError::BadSecrets),
        };
        let n = self.u8()? as usize;
        if n != suite.key_len() + suite.salt_len() {
            return Err(RestoreError::BadSecrets);
        }
        Ok(Some(MasterKey {
            suite,
            material: self.take(n)?.to_vec(),
        }))
    }
    fn required_key(&mut self) -> Result<MasterKey, RestoreError> {
        self.key()?.ok_or(RestoreError::BadSecrets)
    }
    fn str(&mut self) -> Result<Option<String>, RestoreError> {
        match self.u8()? {
            0 => Ok(None),
            1 => {
                let n = self.u32()? as usize;
                let b = self.take(n)?;
                String::from_utf8(b.to_vec())
                    .map(Some)
                    .map_err(|_| RestoreError::BadSecrets)
            }
            _ => Err(RestoreError::BadSecrets),
        }
    }
}

impl CallSecrets {
    /// Whether there is nothing to keep secret.
    pub fn is_empty(&self) -> bool {
        self == &CallSecrets::default()
    }

    /// The compact encoding (version 1):
    ///
    /// ```text
    /// 0x01 | tc key × 2 | sdp × 2 | streams u16 | per stream: index u16,
    ///      (inbound key, outbound key) × 2 parties, pending flag [tag u32, key, key]
    /// key: 0 (none) | suite (1 GCM, 2 AES-CM) | len u8 | material
    /// sdp: 0 (none) | 1 | len u32 | UTF-8
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.push(SECRETS_VERSION);
        for k in &self.tc_keys {
            put_key(&mut out, k.as_ref());
        }
        for s in &self.sdp {
            put_str(&mut out, s.as_deref());
        }
        out.extend_from_slice(&(self.streams.len() as u16).to_be_bytes());
        for s in &self.streams {
            out.extend_from_slice(&(s.index as u16).to_be_bytes());
            for k in &s.keys {
                match k {
                    Some(k) => {
                        out.push(1);
                        put_key(&mut out, Some(&k.inbound));
                        put_key(&mut out, Some(&k.outbound));
                    }
                    None => out.push(0),
                }
            }
            match &s.pending {
                Some(p) => {
                    out.push(1);
                    out.extend_from_slice(&p.tag.to_be_bytes());
                    put_key(&mut out, Some(&p.caller_inbound));
                    put_key(&mut out, Some(&p.callee_outbound));
                }
                None => out.push(0),
            }
        }
        out
    }

    /// Reads [`CallSecrets::encode`] back.
    pub fn decode(bytes: &[u8]) -> Result<CallSecrets, RestoreError> {
        let mut r = Reader::new(bytes, RestoreError::BadSecrets);
        if r.u8()? != SECRETS_VERSION {
            return Err(RestoreError::BadSecrets);
        }
        let tc_keys = [r.key()?, r.key()?];
        let sdp = [r.str()?, r.str()?];
        let hi = r.u8()?;
        let n = u16::from_be_bytes([hi, r.u8()?]) as usize;
        let mut streams = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let hi = r.u8()?;
            let index = u16::from_be_bytes([hi, r.u8()?]) as usize;
            let mut keys: [Option<LegKeys>; 2] = [None, None];
            for k in &mut keys {
                if r.u8()? == 1 {
                    *k = Some(LegKeys {
                        inbound: r.required_key()?,
                        outbound: r.required_key()?,
                    });
                }
            }
            let pending = match r.u8()? {
                0 => None,
                1 => Some(PendingKeysSnapshot {
                    tag: r.u32()?,
                    caller_inbound: r.required_key()?,
                    callee_outbound: r.required_key()?,
                }),
                _ => return Err(RestoreError::BadSecrets),
            };
            streams.push(StreamSecrets {
                index,
                keys,
                pending,
            });
        }
        r.end(RestoreError::BadSecrets)?;
        Ok(CallSecrets {
            tc_keys,
            sdp,
            streams,
        })
    }
}

/// Encoding version of [`GroupSecrets`] (its first byte; distinct from [`CallSecrets`]').
const GROUP_SECRETS_VERSION: u8 = 0x81;

/// One group member's key material.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MemberSecrets {
    /// The member's slot.
    pub slot: u8,
    /// Per stream of the group, in order: the key it sends with and the relay's key toward it
    /// (per_leg).
    pub legs: Vec<(Option<MasterKey>, Option<MasterKey>)>,
    /// Its control channel's SRTCP key.
    pub control: Option<MasterKey>,
}

/// A group call's key material: to be sealed, never logged (`Debug` shows no key).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GroupSecrets {
    /// Every member's, by slot.
    pub members: Vec<MemberSecrets>,
}

impl fmt::Debug for GroupSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupSecrets")
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

impl GroupSecrets {
    /// The member in `slot`'s keys.
    pub fn member(&self, slot: u8) -> Option<&MemberSecrets> {
        self.members.iter().find(|m| m.slot == slot)
    }

    /// The compact encoding:
    ///
    /// ```text
    /// 0x81 | members u16 | per member: slot u8, control key, legs u16, (in key, out key) × legs
    /// key: as in CallSecrets::encode
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 100 * self.members.len());
        out.push(GROUP_SECRETS_VERSION);
        out.extend_from_slice(&(self.members.len() as u16).to_be_bytes());
        for m in &self.members {
            out.push(m.slot);
            put_key(&mut out, m.control.as_ref());
            out.extend_from_slice(&(m.legs.len() as u16).to_be_bytes());
            for (i, o) in &m.legs {
                put_key(&mut out, i.as_ref());
                put_key(&mut out, o.as_ref());
            }
        }
        out
    }

    /// Reads [`GroupSecrets::encode`] back.
    pub fn decode(bytes: &[u8]) -> Result<GroupSecrets, RestoreError> {
        let mut r = Reader::new(bytes, RestoreError::BadSecrets);
        if r.u8()? != GROUP_SECRETS_VERSION {
            return Err(RestoreError::BadSecrets);
        }
        let hi = r.u8()?;
        let n = u16::from_be_bytes([hi, r.u8()?]) as usize;
        let mut members = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let slot = r.u8()?;
            let control = r.key()?;
            let hi = r.u8()?;
            let k = u16::from_be_bytes([hi, r.u8()?]) as usize;
            let mut legs = Vec::with_capacity(k.min(8));
            for _ in 0..k {
                legs.push((r.key()?, r.key()?));
            }
            members.push(MemberSecrets {
                slot,
                legs,
                control,
            });
        }
        r.end(RestoreError::BadSecrets)?;
        Ok(GroupSecrets { members })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(suite: SrtpSuite, b: u8) -> MasterKey {
        MasterKey {
            suite,
            material: vec![b; suite.key_len() + suite.salt_len()],
        }
    }

    #[test]
    fn secrets_round_trip_and_refuse_bad_bytes() {
        let s = CallSecrets {
            tc_keys: [Some(key(SrtpSuite::AeadAes128Gcm, 1)), None],
            sdp: [Some("v=0\r\n".into()), Some("v=0 é\r\n".into())],
            streams: vec![
                StreamSecrets {
                    index: 1,
                    keys: [
                        Some(LegKeys {
                            inbound: key(SrtpSuite::AesCm128HmacSha1_80, 2),
                            outbound: key(SrtpSuite::AesCm128HmacSha1_80, 3),
                        }),
                        None,
                    ],
                    pending: None,
                },
                StreamSecrets {
                    index: 2,
                    keys: [None, None],
                    pending: Some(PendingKeysSnapshot {
                        tag: 7,
                        caller_inbound: key(SrtpSuite::AeadAes128Gcm, 4),
                        callee_outbound: key(SrtpSuite::AeadAes128Gcm, 5),
                    }),
                },
            ],
        };
        let e = s.encode();
        assert_eq!(CallSecrets::decode(&e).unwrap(), s);
        assert!(
            GroupSecrets::decode(&e).is_err(),
            "a one-to-one call's secrets"
        );
        for n in 0..e.len() {
            assert!(CallSecrets::decode(&e[..n]).is_err(), "prefix {n}");
        }
        let mut t = e.clone();
        t.push(0);
        assert_eq!(CallSecrets::decode(&t), Err(RestoreError::BadSecrets));
        let d = format!("{s:?}");
        assert!(!d.contains("v=0") && !d.contains("material"), "{d}");
        assert!(CallSecrets::default().is_empty());
        assert_eq!(
            CallSecrets::decode(&CallSecrets::default().encode()).unwrap(),
            CallSecrets::default()
        );
    }

    #[test]
    fn group_secrets_round_trip() {
        let s = GroupSecrets {
            members: vec![
                MemberSecrets {
                    slot: 0,
                    legs: vec![(
                        Some(key(SrtpSuite::AeadAes128Gcm, 1)),
                        Some(key(SrtpSuite::AeadAes128Gcm, 2)),
                    )],
                    control: None,
                },
                MemberSecrets {
                    slot: 5,
                    legs: vec![
                        (None, None),
                        (Some(key(SrtpSuite::AesCm128HmacSha1_80, 3)), None),
                    ],
                    control: Some(key(SrtpSuite::AeadAes128Gcm, 4)),
                },
            ],
        };
        let e = s.encode();
        assert_eq!(GroupSecrets::decode(&e).unwrap(), s);
        for n in 0..e.len() {
            assert!(GroupSecrets::decode(&e[..n]).is_err(), "prefix {n}");
        }
        assert!(CallSecrets::decode(&e).is_err(), "a group's secrets");
        assert!(!format!("{s:?}").contains("material"));
    }
}
