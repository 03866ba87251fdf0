//! The SSRC table of one context and direction (RTP or RTCP): any number of SSRCs over a
//! context's life, in bounded memory, without ever letting an index be used twice.
//!
//! Three tiers:
//!
//! 1. **Active**: the full state of [`ACTIVE_SSRCS`] SSRCs in fixed arrays, scanned linearly
//!    per packet (the only tier the per-packet path touches for a known SSRC).
//! 2. **Evicted** (exact): when a new SSRC needs a place and the active tier is full, the
//!    least recently used active SSRC moves here with its whole state (highest index, replay
//!    bitmap, SRTCP send index). It holds at most [`EVICTED_SSRCS`] of them. An evicted SSRC
//!    that comes back takes its exact state back: nothing is lost, and it continues as if it
//!    had never left (same ROC, same window).
//! 3. **Floors**: when the evicted tier is full too, its entry evicted longest ago is folded
//!    into one of [`FLOOR_BUCKETS`] buckets chosen by a keyed hash of its SSRC: the bucket
//!    keeps the **maximum** of every index folded into it (per direction of use: the highest
//!    SRTP index; the highest SRTCP index received and the next SRTCP index to send).
//!
//! An SSRC that is neither active nor evicted (new, or folded earlier) starts from its bucket's
//! floor when the bucket has one: its window starts with the floor as its highest index and
//! every index at or below it marked used ([`Tracked::under`]). Hence the invariant, kept by
//! every operation: **for every SSRC ever stored, every index it used is at or below its
//! active state's highest index, or its evicted state's, or its bucket's floor**, and a
//! (re)created state refuses all of those. An index is therefore never protected twice under
//! one key (no keystream / GCM nonce reuse), and a packet index accepted once is never
//! accepted again (no replay through eviction).
//!
//! The evicted tier is allocated on the first eviction (one allocation of its full capacity),
//! the floors on the first fold (one allocation): a context that never sees more than
//! [`ACTIVE_SSRCS`] SSRCs allocates nothing, and after those two allocations nothing here
//! allocates again, evictions included. At most 14 KiB for an RTP table (10 KiB evicted
//! tier, 4 KiB floors), 15 KiB for an RTCP one (12 + 3).
//!
//! Like the rest of the SRTP state, lookup works on a *copy*: [`SsrcTable::lookup`] changes
//! nothing, and [`SsrcTable::store`] (after the packet passed) does the eviction, so a packet
//! that fails authentication evicts nothing.

use core::fmt;

use super::replay::{ReplayWindow, RtcpStream};
use super::{SsrcStats, ACTIVE_SSRCS, EVICTED_SSRCS, FLOOR_BUCKETS};

/// Per-SSRC state a [`SsrcTable`] holds, with the floor it folds into.
pub(super) trait Tracked: Copy + Default + fmt::Debug {
    /// What a floor bucket keeps: the maximum of every index folded into it.
    type Floor: Copy + Default + PartialEq + fmt::Debug;

    /// Raises `floor` to cover every index this state used (sent or accepted).
    fn raise(&self, floor: &mut Self::Floor);

    /// Raises `floor` to cover `other` too (joining two floors).
    fn join(floor: &mut Self::Floor, other: &Self::Floor);

    /// The state an SSRC starts from under `floor`: it refuses (or skips) every index the
    /// floor covers.
    fn under(floor: &Self::Floor) -> Self;

    /// The highest index a state started [`under`](Self::under) `floor` refuses by its replay
    /// window, if any (to count packets refused because of a floor).
    fn mark(floor: &Self::Floor) -> Option<u64>;
}

/// SRTP: the floor is the highest 48-bit packet index folded in.
impl Tracked for ReplayWindow {
    type Floor = Option<u64>;

    fn raise(&self, floor: &mut Option<u64>) {
        *floor = (*floor).max(self.top());
    }

    fn join(floor: &mut Option<u64>, other: &Option<u64>) {
        *floor = (*floor).max(*other);
    }

    fn under(floor: &Option<u64>) -> Self {
        ReplayWindow::from_parts(*floor, u64::MAX)
    }

    fn mark(floor: &Option<u64>) -> Option<u64> {
        *floor
    }
}

/// The floor of SRTCP streams: the highest next send index and the highest index received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RtcpFloor {
    /// The highest `next_send` folded in (0: none; a stream's is at least 1).
    pub(super) next_send: u32,
    /// The highest SRTCP index received, if any was.
    pub(super) received: Option<u32>,
}

/// SRTCP: the send index goes on from the highest one folded in (the index is carried in the
/// packet, so a receiver takes any first index), the receive window starts at the highest one.
impl Tracked for RtcpStream {
    type Floor = RtcpFloor;

    fn raise(&self, floor: &mut RtcpFloor) {
        floor.next_send = floor.next_send.max(self.next_send);
        let top = self.received.top().map(|t| t as u32);
        floor.received = floor.received.max(top);
    }

    fn join(floor: &mut RtcpFloor, other: &RtcpFloor) {
        floor.next_send = floor.next_send.max(other.next_send);
        floor.received = floor.received.max(other.received);
    }

    fn under(floor: &RtcpFloor) -> Self {
        RtcpStream {
            next_send: floor.next_send.max(RtcpStream::default().next_send),
            received: ReplayWindow::from_parts(floor.received.map(u64::from), u64::MAX),
        }
    }

    fn mark(floor: &RtcpFloor) -> Option<u64> {
        floor.received.map(u64::from)
    }
}

/// Where [`SsrcTable::lookup`] found an SSRC, for [`SsrcTable::store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// Active, at this index.
    Active(usize),
    /// Evicted, at this index of the evicted tier: its exact state.
    Evicted(usize),
    /// Neither: it starts under its bucket's floor, which refuses indices up to the mark.
    AtFloor(Option<u64>),
    /// Neither, and its bucket has no floor: a fresh state.
    Fresh,
}

/// One evicted SSRC.
#[derive(Debug, Clone, Copy)]
struct Gone<S> {
    ssrc: u32,
    state: S,
    /// When it was evicted (the table's tick): the oldest is folded first.
    at: u64,
}

/// The evicted tier and the floors, allocated on the first eviction.
#[derive(Debug)]
struct Evicted<S: Tracked> {
    /// Capacity [`EVICTED_SSRCS`], reserved at once; never grows past it.
    gone: Vec<Gone<S>>,
    /// [`FLOOR_BUCKETS`] floors, allocated on the first fold.
    floors: Option<Box<[S::Floor; FLOOR_BUCKETS]>>,
}

/// A copy reserves the full capacity too (an imported table never grows on eviction).
impl<S: Tracked> Clone for Evicted<S> {
    fn clone(&self) -> Self {
        let mut gone = Vec::with_capacity(EVICTED_SSRCS);
        gone.extend_from_slice(&self.gone);
        Evicted {
            gone,
            floors: self.floors.clone(),
        }
    }
}

/// The bucket of `ssrc` under `key`: the top 8 bits of murmur3's 32-bit finaliser of
/// `ssrc ^ key` (`FLOOR_BUCKETS` is 256).
fn bucket(key: u32, ssrc: u32) -> usize {
    let mut h = ssrc ^ key;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    (h >> 24) as usize
}

/// The SSRC table of one context and direction: see the module docs.
#[derive(Debug, Clone)]
pub(super) struct SsrcTable<S: Tracked> {
    ssrcs: [u32; ACTIVE_SSRCS],
    states: [S; ACTIVE_SSRCS],
    /// The tick of each active SSRC's last store: the least recently used is evicted.
    used: [u64; ACTIVE_SSRCS],
    /// Per active SSRC, the [`Tracked::mark`] of the floor it started under.
    marks: [Option<u64>; ACTIVE_SSRCS],
    len: usize,
    /// Counts stores; orders uses and evictions.
    tick: u64,
    /// Keys the bucket hash (derived from the master key; see [`super::SrtpContext`]).
    bucket_key: u32,
    evicted: Option<Evicted<S>>,
    /// The floor under every SSRC new to the table, whatever its bucket (a restored table:
    /// the context it came from may have used states the snapshot did not hold).
    base: S::Floor,
    stats: SsrcStats,
}

impl<S: Tracked> SsrcTable<S> {
    /// An empty table whose floor buckets are chosen under `bucket_key`.
    pub(super) fn new(bucket_key: u32) -> Self {
        SsrcTable {
            ssrcs: [0; ACTIVE_SSRCS],
            states: [S::default(); ACTIVE_SSRCS],
            used: [0; ACTIVE_SSRCS],
            marks: [None; ACTIVE_SSRCS],
            len: 0,
            tick: 0,
            bucket_key,
            evicted: None,
            base: S::Floor::default(),
            stats: SsrcStats::default(),
        }
    }

    /// Number of active SSRCs.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Number of evicted SSRCs held exactly.
    #[cfg(test)]
    pub(super) fn evicted_len(&self) -> usize {
        self.evicted.as_ref().map_or(0, |e| e.gone.len())
    }

    /// Capacity reserved for evicted SSRCs and the number of floor buckets allocated.
    #[cfg(test)]
    pub(super) fn reserved(&self) -> (usize, usize) {
        self.evicted.as_ref().map_or((0, 0), |e| {
            (e.gone.capacity(), e.floors.as_ref().map_or(0, |f| f.len()))
        })
    }

    /// What the table did.
    pub(super) fn stats(&self) -> SsrcStats {
        self.stats
    }

    /// A copy of the state of `ssrc` (its exact state if active or evicted, else the state it
    /// starts from) and where to store it. Changes nothing.
    #[inline]
    pub(super) fn lookup(&self, ssrc: u32) -> (Slot, S) {
        let active = self.ssrcs.get(..self.len).unwrap_or_default();
        match active.iter().position(|&s| s == ssrc) {
            Some(i) => (
                Slot::Active(i),
                self.states.get(i).copied().unwrap_or_default(),
            ),
            None => self.lookup_inactive(ssrc),
        }
    }

    /// [`lookup`](Self::lookup) of an SSRC that is not active: a linear scan of the evicted
    /// tier (at most [`EVICTED_SSRCS`]), then its floor.
    #[cold]
    #[inline(never)]
    fn lookup_inactive(&self, ssrc: u32) -> (Slot, S) {
        let mut floor = self.base;
        if let Some(ev) = self.evicted.as_ref() {
            if let Some(j) = ev.gone.iter().position(|g| g.ssrc == ssrc) {
                let state = ev.gone.get(j).map(|g| g.state).unwrap_or_default();
                return (Slot::Evicted(j), state);
            }
            let bucket_floor = ev
                .floors
                .as_deref()
                .and_then(|f| f.get(bucket(self.bucket_key, ssrc)));
            if let Some(f) = bucket_floor {
                S::join(&mut floor, f);
            }
        }
        if floor == S::Floor::default() {
            (Slot::Fresh, S::default())
        } else {
            (Slot::AtFloor(S::mark(&floor)), S::under(&floor))
        }
    }

    /// The floor under every SSRC new to the table (see [`Self::raise_base`]).
    pub(super) fn base(&self) -> S::Floor {
        self.base
    }

    /// Raises the floor under every SSRC new to the table, whatever its bucket, to cover
    /// `floor` (import).
    pub(super) fn raise_base(&mut self, floor: &S::Floor) {
        S::join(&mut self.base, floor);
    }

    /// Counts a packet of `slot` refused at `index` (replayed or too old) if its floor is why.
    #[cold]
    pub(super) fn refused(&mut self, slot: Slot, index: u64) {
        let mark = match slot {
            Slot::Active(i) => self.marks.get(i).copied().flatten(),
            Slot::AtFloor(m) => m,
            Slot::Evicted(_) | Slot::Fresh => None,
        };
        if mark.is_some_and(|m| index <= m) {
            self.stats.refused_at_floor += 1;
        }
    }

    /// Stores the state of `ssrc` at the slot [`lookup`](Self::lookup) returned: an SSRC that
    /// was not active becomes active, evicting the least recently used one if the active tier
    /// is full.
    #[inline]
    pub(super) fn store(&mut self, slot: Slot, ssrc: u32, state: S) {
        let tick = self.tick;
        self.tick = tick.wrapping_add(1);
        if let Slot::Active(i) = slot {
            if let (Some(st), Some(u)) = (self.states.get_mut(i), self.used.get_mut(i)) {
                *st = state;
                *u = tick;
            }
            return;
        }
        self.activate(slot, ssrc, state, tick);
    }

    /// [`store`](Self::store) of an SSRC that was not active.
    #[cold]
    #[inline(never)]
    fn activate(&mut self, slot: Slot, ssrc: u32, state: S, tick: u64) {
        let mark = match slot {
            Slot::Evicted(j) => {
                // Out of the evicted tier first: the eviction below may fold its oldest entry.
                if let Some(ev) = self.evicted.as_mut() {
                    if j < ev.gone.len() {
                        ev.gone.swap_remove(j);
                    }
                }
                self.stats.restored += 1;
                None
            }
            Slot::AtFloor(m) => {
                self.stats.started_at_floor += 1;
                m
            }
            Slot::Fresh | Slot::Active(_) => None,
        };
        let i = if self.len < ACTIVE_SSRCS {
            self.len += 1;
            self.len - 1
        } else {
            let lru = (0..ACTIVE_SSRCS)
                .min_by_key(|&k| self.used.get(k).copied().unwrap_or(0))
                .unwrap_or(0);
            self.evict(lru, tick);
            lru
        };
        if let (Some(s), Some(st), Some(u), Some(m)) = (
            self.ssrcs.get_mut(i),
            self.states.get_mut(i),
            self.used.get_mut(i),
            self.marks.get_mut(i),
        ) {
            *s = ssrc;
            *st = state;
            *u = tick;
            *m = mark;
        }
    }

    /// Moves active SSRC `i` to the evicted tier, folding that tier's oldest entry into its
    /// floor when the tier is full.
    fn evict(&mut self, i: usize, tick: u64) {
        let (Some(&ssrc), Some(&state)) = (self.ssrcs.get(i), self.states.get(i)) else {
            return;
        };
        self.stats.evicted += 1;
        let gone = Gone {
            ssrc,
            state,
            at: tick,
        };
        let ev = self.evicted.get_or_insert_with(|| Evicted {
            gone: Vec::with_capacity(EVICTED_SSRCS),
            floors: None,
        });
        if ev.gone.len() < EVICTED_SSRCS {
            ev.gone.push(gone);
            return;
        }
        let Some(oldest) = ev.gone.iter_mut().min_by_key(|g| g.at) else {
            return;
        };
        let folded = core::mem::replace(oldest, gone);
        let floors = ev
            .floors
            .get_or_insert_with(|| Box::new([S::Floor::default(); FLOOR_BUCKETS]));
        if let Some(f) = floors.get_mut(bucket(self.bucket_key, folded.ssrc)) {
            folded.state.raise(f);
        }
        self.stats.folded += 1;
    }

    /// Every SSRC held exactly with its state: the active ones, most recently used first, then
    /// the evicted ones, most recently evicted first.
    pub(super) fn entries(&self) -> Vec<(u32, S)> {
        let mut active: Vec<(u64, u32, S)> = self
            .ssrcs
            .iter()
            .zip(&self.states)
            .zip(&self.used)
            .take(self.len)
            .map(|((s, st), u)| (*u, *s, *st))
            .collect();
        active.sort_by_key(|a| core::cmp::Reverse(a.0));
        let mut gone: Vec<Gone<S>> = self
            .evicted
            .as_ref()
            .map(|e| e.gone.clone())
            .unwrap_or_default();
        gone.sort_by_key(|g| core::cmp::Reverse(g.at));
        active
            .into_iter()
            .map(|(_, s, st)| (s, st))
            .chain(gone.into_iter().map(|g| (g.ssrc, g.state)))
            .collect()
    }

    /// Every floor bucket that has a floor, with its number.
    pub(super) fn floors(&self) -> Vec<(usize, S::Floor)> {
        self.evicted
            .as_ref()
            .and_then(|e| e.floors.as_deref())
            .map(|f| {
                f.iter()
                    .enumerate()
                    .filter(|(_, f)| **f != S::Floor::default())
                    .map(|(i, f)| (i, *f))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Raises floor `bucket` to cover `floor` (import). `bucket` must be below
    /// [`FLOOR_BUCKETS`] (it is ignored otherwise).
    pub(super) fn raise_floor(&mut self, bucket: usize, floor: &S::Floor) {
        if bucket >= FLOOR_BUCKETS || *floor == S::Floor::default() {
            return;
        }
        let ev = self.evicted.get_or_insert_with(|| Evicted {
            gone: Vec::with_capacity(EVICTED_SSRCS),
            floors: None,
        });
        let floors = ev
            .floors
            .get_or_insert_with(|| Box::new([S::Floor::default(); FLOOR_BUCKETS]));
        if let Some(f) = floors.get_mut(bucket) {
            S::join(f, floor);
        }
    }

    /// Puts `state` in as the state of `ssrc`, most recently used (import): replaces what the
    /// table knew of it; may evict and fold as [`store`](Self::store) does. Counts nothing.
    pub(super) fn put(&mut self, ssrc: u32, state: S) {
        let stats = self.stats;
        let (slot, _) = self.lookup(ssrc);
        self.store(slot, ssrc, state);
        self.stats = stats;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores one packet at `index` for `ssrc` the way a context does; `Err` if refused.
    fn pass(t: &mut SsrcTable<ReplayWindow>, ssrc: u32, index: u64) -> Result<(), ()> {
        let (slot, mut w) = t.lookup(ssrc);
        if w.check(index).is_err() {
            t.refused(slot, index);
            return Err(());
        }
        w.accept(index);
        t.store(slot, ssrc, w);
        Ok(())
    }

    #[test]
    fn least_recently_used_is_evicted_and_comes_back_exactly() {
        let mut t = SsrcTable::<ReplayWindow>::new(7);
        for s in 0..ACTIVE_SSRCS as u32 {
            pass(&mut t, s, 100 + u64::from(s)).unwrap();
        }
        assert_eq!((t.len(), t.evicted_len(), t.reserved()), (16, 0, (0, 0)));
        // SSRC 0 used again: SSRC 1 is now the least recently used.
        pass(&mut t, 0, 101).unwrap();
        pass(&mut t, 1000, 5).unwrap();
        assert_eq!(t.lookup(1).0, Slot::Evicted(0));
        assert!(matches!(t.lookup(0).0, Slot::Active(_)));
        assert_eq!(t.stats().evicted, 1);
        assert_eq!(t.reserved(), (EVICTED_SSRCS, 0));
        // SSRC 1 comes back with its window: its index is a replay, the next one passes.
        assert_eq!(pass(&mut t, 1, 101), Err(()));
        pass(&mut t, 1, 99).unwrap(); // within the window, never seen
        pass(&mut t, 1, 102).unwrap();
        assert_eq!(t.stats().restored, 1);
        assert_eq!(t.stats().refused_at_floor, 0);
        assert_eq!(t.len(), ACTIVE_SSRCS);
        assert_eq!(t.evicted_len(), 1);
    }

    #[test]
    fn the_oldest_evicted_is_folded_into_its_bucket_floor() {
        let mut t = SsrcTable::<ReplayWindow>::new(0x5eed);
        let total = (ACTIVE_SSRCS + EVICTED_SSRCS) as u32;
        for s in 0..total {
            pass(&mut t, s, 1_000 + u64::from(s)).unwrap();
        }
        assert_eq!(t.stats().folded, 0);
        assert!(t.floors().is_empty());
        pass(&mut t, total, 1).unwrap();
        assert_eq!(t.stats().folded, 1);
        assert_eq!(t.reserved(), (EVICTED_SSRCS, FLOOR_BUCKETS));
        // SSRC 0 was evicted first: folded, its bucket's floor is its index.
        let b = bucket(0x5eed, 0);
        assert_eq!(t.floors(), vec![(b, Some(1_000))]);
        let under = ReplayWindow::from_parts(Some(1_000), u64::MAX);
        assert_eq!(t.lookup(0), (Slot::AtFloor(Some(1_000)), under));
        let w = t.lookup(0).1;
        assert!(w.check(1_000).is_err() && w.check(937).is_err() && w.check(3).is_err());
        assert_eq!(pass(&mut t, 0, 1_000), Err(()));
        assert_eq!(t.stats().refused_at_floor, 1);
        pass(&mut t, 0, 1_001).unwrap();
        assert_eq!(t.stats().started_at_floor, 1);
        // Once active again, an index at or below its floor is still refused, and counted.
        assert_eq!(pass(&mut t, 0, 990), Err(()));
        assert_eq!(t.stats().refused_at_floor, 2);
    }

    #[test]
    fn memory_stays_bounded_whatever_the_number_of_ssrcs() {
        let mut t = SsrcTable::<ReplayWindow>::new(1);
        for s in 0..100_000u32 {
            pass(&mut t, s.wrapping_mul(0x9e37_79b9), 1 + u64::from(s)).unwrap();
            assert!(t.evicted_len() <= EVICTED_SSRCS);
        }
        assert_eq!(t.len(), ACTIVE_SSRCS);
        assert_eq!(t.evicted_len(), EVICTED_SSRCS);
        assert_eq!(t.reserved(), (EVICTED_SSRCS, FLOOR_BUCKETS));
        assert_eq!(t.entries().len(), ACTIVE_SSRCS + EVICTED_SSRCS);
        assert!(t.floors().len() <= FLOOR_BUCKETS);
    }

    /// The figures the module docs give: what a table allocates at most, beyond the inline
    /// active tier.
    #[test]
    fn the_two_allocations_are_small() {
        use core::mem::size_of;
        let rtp = size_of::<Gone<ReplayWindow>>() * EVICTED_SSRCS
            + size_of::<[Option<u64>; FLOOR_BUCKETS]>();
        let rtcp =
            size_of::<Gone<RtcpStream>>() * EVICTED_SSRCS + size_of::<[RtcpFloor; FLOOR_BUCKETS]>();
        assert_eq!((rtp, rtcp), (14_336, 15_360));
    }

    #[test]
    fn rtcp_floor_skips_send_indices_and_refuses_received_ones() {
        let mut f = RtcpFloor::default();
        let a = RtcpStream {
            next_send: 40,
            received: ReplayWindow::from_parts(Some(7), 1),
        };
        a.raise(&mut f);
        RtcpStream::default().raise(&mut f);
        assert_eq!(
            f,
            RtcpFloor {
                next_send: 40,
                received: Some(7)
            }
        );
        let s = RtcpStream::under(&f);
        assert_eq!(s.next_send, 40);
        assert!(s.received.check(7).is_err() && s.received.check(0).is_err());
        assert!(s.received.check(8).is_ok());
        assert_eq!(RtcpStream::mark(&f), Some(7));
        // A floor of a protect-only context: the receive window stays fresh.
        let g = RtcpFloor {
            next_send: 3,
            received: None,
        };
        assert_eq!(RtcpStream::under(&g).received.top(), None);
    }
}
