//! The per-call transmission arbiter: the one piece of state the control side and the forwarding
//! side share.
//!
//! The control side (the transmission control server) grants, revokes, ends and releases; the
//! forwarding side asks "may this packet from this party pass?" with [`Arbiter::may_forward`],
//! which is **one atomic load and a compare**: no lock, no allocation, no branch on anything but
//! the loaded word.
//!
//! The state is one `AtomicU64`: `epoch (48 bits) | holder (8) | state (8)`. Every transition
//! bumps the epoch, so an observer can tell two grants apart. Transitions use compare-and-swap,
//! so concurrent writers (the control task and an engine shutting down) are safe; readers never
//! wait. The struct is cache-line aligned so the hot word shares its line with nothing else.

use super::Party;
use core::sync::atomic::{AtomicU64, Ordering};

/// Where a call's transmission stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[cfg_attr(
    any(feature = "ha", feature = "sidecar"),
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum TransmissionState {
    /// No transmission yet (call offered, or established and not granted).
    Idle = 0,
    /// A party holds the grant; its media passes.
    Granted = 1,
    /// The grant was revoked; media no longer passes.
    Revoked = 2,
    /// The transmission is complete.
    Ended = 3,
    /// The call is released; terminal.
    Released = 4,
}

impl TransmissionState {
    fn from_bits(b: u8) -> Self {
        match b {
            1 => TransmissionState::Granted,
            2 => TransmissionState::Revoked,
            3 => TransmissionState::Ended,
            4 => TransmissionState::Released,
            _ => TransmissionState::Idle,
        }
    }

    /// Lower-case label for logs, metrics and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            TransmissionState::Idle => "idle",
            TransmissionState::Granted => "granted",
            TransmissionState::Revoked => "revoked",
            TransmissionState::Ended => "ended",
            TransmissionState::Released => "released",
        }
    }
}

/// A consistent reading of the arbiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// The state.
    pub state: TransmissionState,
    /// Who holds (or last held) the grant.
    pub holder: Option<Party>,
    /// Number of transitions so far.
    pub epoch: u64,
}

/// Why a transition was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionError {
    /// The state the arbiter was in.
    pub from: TransmissionState,
    /// The transition asked for.
    pub to: TransmissionState,
}

impl core::fmt::Display for TransitionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "arbiter cannot go from {} to {}",
            self.from.as_str(),
            self.to.as_str()
        )
    }
}

impl std::error::Error for TransitionError {}

const STATE_MASK: u64 = 0xff;
const HOLDER_SHIFT: u32 = 8;
const EPOCH_SHIFT: u32 = 16;

const fn holder_bits(p: Option<Party>) -> u64 {
    match p {
        None => 0,
        Some(Party::Caller) => 1,
        Some(Party::Callee) => 2,
    }
}

const fn pack(state: TransmissionState, holder: Option<Party>, epoch: u64) -> u64 {
    (epoch << EPOCH_SHIFT) | (holder_bits(holder) << HOLDER_SHIFT) | state as u64
}

/// The lock-free per-call arbiter. Share it with `Arc`.
#[derive(Debug)]
#[repr(align(64))]
pub struct Arbiter {
    word: AtomicU64,
}

impl Default for Arbiter {
    fn default() -> Self {
        Self::new()
    }
}

impl Arbiter {
    /// A new arbiter in [`TransmissionState::Idle`].
    pub const fn new() -> Self {
        Arbiter {
            word: AtomicU64::new(pack(TransmissionState::Idle, None, 0)),
        }
    }

    /// An arbiter in the state `s` (a call restored from a snapshot on another relay).
    pub fn restored(s: Snapshot) -> Self {
        Arbiter {
            word: AtomicU64::new(pack(s.state, s.holder, s.epoch & ((1 << 48) - 1))),
        }
    }

    /// May a media packet from `from` be forwarded now? One atomic load.
    #[inline(always)]
    pub fn may_forward(&self, from: Party) -> bool {
        let granted = TransmissionState::Granted as u64 | (holder_bits(Some(from)) << HOLDER_SHIFT);
        self.word.load(Ordering::Acquire) & 0xffff == granted
    }

    /// Reads state, holder and epoch together.
    pub fn snapshot(&self) -> Snapshot {
        let w = self.word.load(Ordering::Acquire);
        Snapshot {
            state: TransmissionState::from_bits((w & STATE_MASK) as u8),
            holder: match (w >> HOLDER_SHIFT) & 0xff {
                1 => Some(Party::Caller),
                2 => Some(Party::Callee),
                _ => None,
            },
            epoch: w >> EPOCH_SHIFT,
        }
    }

    /// The current state.
    pub fn state(&self) -> TransmissionState {
        self.snapshot().state
    }

    fn transition(
        &self,
        to: TransmissionState,
        allowed: impl Fn(TransmissionState) -> bool,
        holder: impl Fn(Option<Party>) -> Option<Party>,
    ) -> Result<Snapshot, TransitionError> {
        let mut cur = self.word.load(Ordering::Acquire);
        loop {
            let from = TransmissionState::from_bits((cur & STATE_MASK) as u8);
            if !allowed(from) {
                return Err(TransitionError { from, to });
            }
            let old_holder = Snapshot::holder_of(cur);
            let epoch = (cur >> EPOCH_SHIFT) + 1;
            let new = pack(to, holder(old_holder), epoch);
            match self
                .word
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Ok(Snapshot {
                        state: to,
                        holder: holder(old_holder),
                        epoch,
                    })
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Grants the transmission to `to`. Allowed from `Idle` and `Ended` (a new transmission).
    pub fn grant(&self, to: Party) -> Result<Snapshot, TransitionError> {
        self.transition(
            TransmissionState::Granted,
            |s| matches!(s, TransmissionState::Idle | TransmissionState::Ended),
            |_| Some(to),
        )
    }

    /// Revokes the current grant. Allowed from `Granted`.
    pub fn revoke(&self) -> Result<Snapshot, TransitionError> {
        self.transition(
            TransmissionState::Revoked,
            |s| s == TransmissionState::Granted,
            |h| h,
        )
    }

    /// Marks the transmission complete. Allowed from `Granted` and `Revoked`.
    pub fn end(&self) -> Result<Snapshot, TransitionError> {
        self.transition(
            TransmissionState::Ended,
            |s| matches!(s, TransmissionState::Granted | TransmissionState::Revoked),
            |h| h,
        )
    }

    /// Releases the call: terminal, from any state but `Released`.
    pub fn release(&self) -> Result<Snapshot, TransitionError> {
        self.transition(
            TransmissionState::Released,
            |s| s != TransmissionState::Released,
            |h| h,
        )
    }
}

impl Snapshot {
    fn holder_of(w: u64) -> Option<Party> {
        match (w >> HOLDER_SHIFT) & 0xff {
            1 => Some(Party::Caller),
            2 => Some(Party::Callee),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn lifecycle() {
        let a = Arbiter::new();
        assert!(!a.may_forward(Party::Caller));
        assert!(a.revoke().is_err());
        let s = a.grant(Party::Caller).unwrap();
        assert_eq!(s.epoch, 1);
        assert!(a.may_forward(Party::Caller));
        assert!(!a.may_forward(Party::Callee));
        assert!(
            a.grant(Party::Callee).is_err(),
            "no second grant while granted"
        );
        a.revoke().unwrap();
        assert!(!a.may_forward(Party::Caller));
        a.end().unwrap();
        assert_eq!(a.snapshot().holder, Some(Party::Caller));
        a.release().unwrap();
        assert_eq!(
            a.release(),
            Err(TransitionError {
                from: TransmissionState::Released,
                to: TransmissionState::Released
            })
        );
        assert!(a.grant(Party::Caller).is_err(), "released is terminal");
        assert_eq!(a.snapshot().epoch, 4);
    }

    #[test]
    fn restored_from_a_snapshot() {
        let a = Arbiter::new();
        a.grant(Party::Caller).unwrap();
        let b = Arbiter::restored(a.snapshot());
        assert_eq!(b.snapshot(), a.snapshot());
        assert!(b.may_forward(Party::Caller));
        b.end().unwrap();
        assert_eq!(b.snapshot().epoch, 2);
    }

    #[test]
    fn cache_line_aligned() {
        assert_eq!(core::mem::align_of::<Arbiter>(), 64);
    }

    /// Forwarders hammer `may_forward` while a controller cycles grant/revoke/end. Invariants:
    /// the callee is never seen as holder; every `true` answer for the caller coincides with a
    /// snapshot in `Granted` (checked by reading around it); epochs never go backwards; the
    /// controller's transitions all succeed (no lost update) and the final epoch counts them all.
    #[test]
    fn concurrent_checks_and_transitions() {
        let a = Arc::new(Arbiter::new());
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let a = a.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let (mut passes, mut last_epoch) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        assert!(!a.may_forward(Party::Callee));
                        let before = a.snapshot();
                        let ok = a.may_forward(Party::Caller);
                        let after = a.snapshot();
                        assert!(before.epoch >= last_epoch && after.epoch >= before.epoch);
                        last_epoch = after.epoch;
                        if ok {
                            passes += 1;
                            // If nothing moved around the check, the state must have been Granted.
                            if before.epoch == after.epoch {
                                assert_eq!(before.state, TransmissionState::Granted);
                            }
                        } else if before.epoch == after.epoch {
                            assert_ne!(before.state, TransmissionState::Granted);
                        }
                    }
                    passes
                })
            })
            .collect();
        // A second writer races releases against the controller at the very end.
        let rounds = 20_000u64;
        for _ in 0..rounds {
            a.grant(Party::Caller).unwrap();
            a.revoke().unwrap();
            a.end().unwrap();
        }
        let racer = {
            let a = a.clone();
            std::thread::spawn(move || a.release().is_ok())
        };
        let mine = a.release().is_ok();
        let theirs = racer.join().unwrap();
        assert!(mine ^ theirs, "exactly one release wins");
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(a.snapshot().epoch, rounds * 3 + 1);
        assert_eq!(a.state(), TransmissionState::Released);
    }
}
