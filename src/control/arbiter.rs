//! The lock-free arbiter of a call: which members may transmit, and to whom each transmitter's
//! media goes. The one piece of state the transmission control server and the forwarding side
//! share, for every kind of call (a private call is a call of two members).
//!
//! Both answers are bit sets of [`Slot`]s in `AtomicU64`s:
//!
//! * `permitted` — bit `t` set: member `t` holds a grant. The forward path checks it with
//!   **one atomic load** ([`Arbiter::may_forward`]);
//! * `routes[t]` — bit `r` set: receiver `r` accepted transmitter `t`'s media (automatic
//!   reception, or a granted Receive Media Request). The fan-out reads it with one more load
//!   ([`Arbiter::receivers`]) and walks the bits: no lock, no allocation.
//!
//! Writers (the call's transmission control server, an engine releasing the call) use
//! `fetch_or`/`fetch_and`, so they never lose each other's updates; readers never wait. A
//! revocation clears the `permitted` bit first, so a reader that saw it cleared forwards
//! nothing, whatever the routes say. A call sized for two members (a private call) keeps two
//! route words, a group call [`MAX_MEMBERS`].

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Members a group call holds at most: one bit each in the arbiter's words.
pub const MAX_MEMBERS: usize = 64;

/// A member's place in a call (0..[`MAX_MEMBERS`]). Stable while the member is in the
/// call; a slot freed by a member that left can be given to a later joiner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u8);

impl Slot {
    /// Slot 0 (a private call's caller).
    pub const FIRST: Slot = Slot(0);
    /// Slot 1 (a private call's callee).
    pub const SECOND: Slot = Slot(1);

    /// The slot with this index, if below [`MAX_MEMBERS`].
    pub const fn new(index: usize) -> Option<Slot> {
        if index < MAX_MEMBERS {
            Some(Slot(index as u8))
        } else {
            None
        }
    }

    /// The index, below [`MAX_MEMBERS`].
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// This slot's bit in a member set.
    pub const fn bit(self) -> u64 {
        1u64 << (self.0 & 63)
    }
}

impl core::fmt::Display for Slot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The slots in a member set, lowest first.
pub fn slots(mut set: u64) -> impl Iterator<Item = Slot> {
    core::iter::from_fn(move || {
        if set == 0 {
            return None;
        }
        let i = set.trailing_zeros() as usize;
        set &= set - 1;
        Slot::new(i)
    })
}

/// A consistent-enough reading for the API: each word is read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct ArbiterSnapshot {
    /// Members holding a grant.
    pub permitted: u64,
    /// Changes so far.
    pub epoch: u64,
    /// The call is released; nothing passes any more.
    pub released: bool,
}

/// The grant word alone on its cache line: route changes and the epoch (written on every
/// change) do not invalidate the line every forwarded packet reads first.
#[derive(Debug)]
#[repr(align(64))]
struct Permitted(AtomicU64);

/// The lock-free arbiter of one call. Share it with `Arc`.
#[derive(Debug)]
#[repr(align(64))]
pub struct Arbiter {
    permitted: Permitted,
    /// One word per member slot the call can hold (2 for a private call).
    routes: Box<[AtomicU64]>,
    epoch: AtomicU64,
    released: AtomicBool,
}

impl Default for Arbiter {
    fn default() -> Self {
        Self::new()
    }
}

impl Arbiter {
    /// Nobody transmits, nobody receives; room for [`MAX_MEMBERS`] members.
    pub fn new() -> Self {
        Self::with_members(MAX_MEMBERS)
    }

    /// Room for `members` member slots (at most [`MAX_MEMBERS`]): a private call needs 2.
    pub fn with_members(members: usize) -> Self {
        Arbiter {
            permitted: Permitted(AtomicU64::new(0)),
            routes: (0..members.clamp(1, MAX_MEMBERS))
                .map(|_| AtomicU64::new(0))
                .collect(),
            epoch: AtomicU64::new(0),
            released: AtomicBool::new(false),
        }
    }

    /// Member slots it has room for.
    pub fn capacity(&self) -> usize {
        self.routes.len()
    }

    /// An arbiter in the state `s` with routes `routes` (`(transmitter, receivers)`), for a call
    /// taken over from another relay.
    pub fn restored(members: usize, s: ArbiterSnapshot, routes: &[(Slot, u64)]) -> Self {
        let a = Self::with_members(members);
        a.permitted.0.store(s.permitted, Ordering::Release);
        for &(t, r) in routes {
            if let Some(w) = a.routes.get(t.index()) {
                w.store(r, Ordering::Release);
            }
        }
        a.epoch.store(s.epoch, Ordering::Release);
        a.released.store(s.released, Ordering::Release);
        a
    }

    /// Every transmitter's receivers, for a snapshot: `(transmitter, receivers)` where non-empty.
    pub fn routes(&self) -> Vec<(Slot, u64)> {
        self.routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let r = r.load(Ordering::Acquire);
                Some((Slot::new(i)?, r)).filter(|_| r != 0)
            })
            .collect()
    }

    /// May a media packet from `from` be forwarded now? One atomic load.
    #[inline(always)]
    pub fn may_forward(&self, from: Slot) -> bool {
        self.permitted.0.load(Ordering::Acquire) & from.bit() != 0
    }

    /// The receivers of `from`'s media: one atomic load. Meaningful only while
    /// [`may_forward`](Self::may_forward) says yes.
    #[inline(always)]
    pub fn receivers(&self, from: Slot) -> u64 {
        self.routes
            .get(from.index())
            .map_or(0, |r| r.load(Ordering::Acquire))
    }

    /// Members holding a grant.
    pub fn permitted(&self) -> u64 {
        self.permitted.0.load(Ordering::Acquire)
    }

    /// Reads the state for the API.
    pub fn snapshot(&self) -> ArbiterSnapshot {
        ArbiterSnapshot {
            permitted: self.permitted.0.load(Ordering::Acquire),
            epoch: self.epoch.load(Ordering::Acquire),
            released: self.released.load(Ordering::Acquire),
        }
    }

    fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Grants `to`. Refused (false) once the call is released.
    pub fn permit(&self, to: Slot) -> bool {
        if self.released.load(Ordering::Acquire) {
            return false;
        }
        self.permitted.0.fetch_or(to.bit(), Ordering::AcqRel);
        // A release that raced in after the check wins: take the bit back.
        if self.released.load(Ordering::Acquire) {
            self.permitted.0.store(0, Ordering::Release);
            return false;
        }
        self.bump();
        true
    }

    /// Takes `from`'s grant away (revoked, ended, pre-empted). Its routes are cleared too.
    pub fn forbid(&self, from: Slot) {
        self.permitted.0.fetch_and(!from.bit(), Ordering::AcqRel);
        if let Some(r) = self.routes.get(from.index()) {
            r.store(0, Ordering::Release);
        }
        self.bump();
    }

    /// `receiver` gets `from`'s media from now on.
    pub fn add_route(&self, from: Slot, receiver: Slot) {
        if let Some(r) = self.routes.get(from.index()) {
            r.fetch_or(receiver.bit(), Ordering::AcqRel);
            self.bump();
        }
    }

    /// `receiver` no longer gets `from`'s media.
    pub fn remove_route(&self, from: Slot, receiver: Slot) {
        if let Some(r) = self.routes.get(from.index()) {
            r.fetch_and(!receiver.bit(), Ordering::AcqRel);
            self.bump();
        }
    }

    /// `member` left: no grant, no routes from it, and it is nobody's receiver any more.
    pub fn remove_member(&self, member: Slot) {
        self.forbid(member);
        for r in self.routes.iter() {
            r.fetch_and(!member.bit(), Ordering::AcqRel);
        }
        self.bump();
    }

    /// The call is released: nothing passes any more, and no later grant takes effect.
    pub fn release(&self) {
        self.released.store(true, Ordering::Release);
        self.permitted.0.store(0, Ordering::Release);
        for r in self.routes.iter() {
            r.store(0, Ordering::Release);
        }
        self.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn s(i: usize) -> Slot {
        Slot::new(i).unwrap()
    }

    #[test]
    fn permit_route_forbid_release() {
        let a = Arbiter::new();
        assert!(!a.may_forward(s(0)));
        assert!(a.permit(s(0)));
        a.add_route(s(0), s(1));
        a.add_route(s(0), s(63));
        assert!(a.may_forward(s(0)));
        assert!(!a.may_forward(s(1)));
        assert_eq!(slots(a.receivers(s(0))).collect::<Vec<_>>(), [s(1), s(63)]);
        a.remove_member(s(63));
        assert_eq!(a.receivers(s(0)), s(1).bit());
        a.forbid(s(0));
        assert!(!a.may_forward(s(0)));
        assert_eq!(a.receivers(s(0)), 0);
        a.release();
        assert!(!a.permit(s(2)), "released is terminal");
        assert!(!a.may_forward(s(2)));
        assert!(a.snapshot().released);
        assert!(Slot::new(64).is_none());
    }

    /// Readers check grants while a writer cycles pre-emptions between two members: a reader
    /// never sees both members permitted when the writer keeps at most one (Cx = 1), and the
    /// epoch never goes back.
    #[test]
    fn readers_never_see_a_torn_handover() {
        let a = Arc::new(Arbiter::new());
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (a, stop) = (a.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut last = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let p = a.permitted();
                        assert!(p.count_ones() <= 1, "{p:b}");
                        let e = a.snapshot().epoch;
                        assert!(e >= last);
                        last = e;
                    }
                })
            })
            .collect();
        for i in 0..20_000usize {
            let (from, to) = (s(i % 2), s((i + 1) % 2));
            a.forbid(from);
            assert!(a.permit(to));
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
    }
}
