//! SSRCs unique across the engine (TS 24.581 §6.3.4.3.3 d: the server allocates globally unique
//! Audio and Video SSRCs for each transmission, preferring the offerer's `a=ssrc` when free).

use crate::ids::Ssrc;
use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

/// The SSRCs in use by transmissions across one engine. Share it with `Arc`; it is touched on
/// grants and ends only (the control plane), never per packet.
#[derive(Debug)]
pub struct SsrcRegistry {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    used: HashSet<u32>,
    state: u64,
}

/// splitmix64: a full-period generator; the seed comes from the engine's entropy.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SsrcRegistry {
    /// An empty registry drawing new SSRCs from `seed`.
    pub fn new(seed: u64) -> Self {
        SsrcRegistry {
            inner: Mutex::new(Inner {
                used: HashSet::new(),
                state: seed,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The set stays consistent whatever panicked while holding it: insert/remove only.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves `preferred` when it is free (and not 0), else a fresh random SSRC.
    pub fn allocate(&self, preferred: Option<Ssrc>) -> Ssrc {
        let mut g = self.lock();
        if let Some(p) = preferred.filter(|p| p.get() != 0) {
            if g.used.insert(p.get()) {
                return p;
            }
        }
        loop {
            let v = next(&mut g.state) as u32;
            if v != 0 && g.used.insert(v) {
                return Ssrc(v);
            }
        }
    }

    /// Reserves `ssrc` if it is free; `false` when it is already in use.
    pub fn reserve(&self, ssrc: Ssrc) -> bool {
        ssrc.get() != 0 && self.lock().used.insert(ssrc.get())
    }

    /// Gives `ssrc` back.
    pub fn free(&self, ssrc: Ssrc) {
        self.lock().used.remove(&ssrc.get());
    }

    /// SSRCs in use.
    pub fn in_use(&self) -> usize {
        self.lock().used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferred_when_free_else_fresh_and_unique() {
        let r = SsrcRegistry::new(7);
        assert_eq!(r.allocate(Some(Ssrc(42))), Ssrc(42));
        let b = r.allocate(Some(Ssrc(42)));
        assert_ne!(b, Ssrc(42));
        assert_ne!(b.get(), 0);
        assert_ne!(r.allocate(Some(Ssrc(0))).get(), 0);
        assert!(!r.reserve(Ssrc(42)));
        r.free(Ssrc(42));
        assert!(r.reserve(Ssrc(42)));
        let many: HashSet<u32> = (0..10_000).map(|_| r.allocate(None).get()).collect();
        assert_eq!(many.len(), 10_000);
        assert_eq!(r.in_use(), 10_003);
    }
}
