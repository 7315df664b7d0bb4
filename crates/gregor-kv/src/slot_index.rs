//! The index of the cache's slots and of the memory engine's slab: from a
//! key's hash to the position of the entry that holds the key.
//!
//! One array of 8-byte entries, each a position and the key's 32-bit hash
//! ([`index_entry`]), probed linearly from the hash's home bucket. A lookup
//! therefore touches one line of the index (eight entries to a line; two
//! when its probe crosses a line's end) and then the entry whose hash
//! matches. `hashbrown`'s table, used before, keeps its control bytes apart
//! from its entries: two cache misses before the entry's, and in the
//! latency benchmark's count-forward job (4 stores of 125,000 keys per
//! container) those misses were a quarter of the container's CPU.
//!
//! Growing the index reads no entry (the index entries carry the hashes):
//! the stores of a container, fed alike, grow at the same moment, and a
//! rehash that read every entry (a cache miss each) held results back 20-40
//! ms in the latency benchmark. The index never compares keys itself:
//! [`SlotIndex::find`] asks its caller, and it must never move an entry of
//! its caller's.

/// An empty bucket. Real entries name positions below `u32::MAX`: the cache
/// caps its slots there, and the memory engine would need over 200 GB of
/// entries to reach it ([`index_entry`] checks in debug builds).
const EMPTY: u64 = u64::MAX;

/// Buckets of a new index.
const MIN_BUCKETS: usize = 16;

/// [`SlotIndex::prefetch`] starts loading the entry of the key it was given
/// this many calls before: by then that key's index line has arrived, and
/// reading it does not wait.
const PREFETCH_LAG: usize = 4;

/// Starts loading the cache lines of `value` into the CPU's caches, without
/// waiting for them. A hint: it never faults and changes no memory.
fn prefetch_value<T>(value: &T) {
    let start = (value as *const T).cast::<u8>();
    prefetch_line(start);
    prefetch_line(start.wrapping_add(std::mem::size_of::<T>().saturating_sub(1)));
}

#[inline]
fn prefetch_line(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and never faults,
    // whatever the address; SSE is part of every x86-64 CPU.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// The index entry of position `i` whose key hashes (low 32 bits) to `hash`.
pub(crate) fn index_entry(i: usize, hash: u32) -> u64 {
    debug_assert!(i < u32::MAX as usize, "position {i} does not fit an index entry");
    (i as u64) << 32 | u64::from(hash)
}

/// The position an index entry names.
pub(crate) fn slot_of(entry: u64) -> usize {
    (entry >> 32) as usize
}

/// A key hash spread over 64 bits (multiplication by an odd constant carries
/// every bit of `hash` up to the top bits, which pick the home bucket).
fn spread(hash: u32) -> u64 {
    u64::from(hash).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Positions by key hash; open addressing with linear probing, at most 3/4
/// full.
pub(crate) struct SlotIndex {
    buckets: Vec<u64>,
    /// `64 - log2(buckets.len())`: the home bucket is the spread hash's top bits.
    shift: u32,
    len: usize,
    /// The hashes of the last [`PREFETCH_LAG`] prefetched keys, by call
    /// number modulo the lag.
    lagging: [u32; PREFETCH_LAG],
    prefetches: usize,
}

impl Default for SlotIndex {
    fn default() -> Self {
        SlotIndex { buckets: Vec::new(), shift: 64, len: 0, lagging: [0; PREFETCH_LAG], prefetches: 0 }
    }
}

impl SlotIndex {
    fn home(&self, hash: u32) -> usize {
        (spread(hash) >> self.shift) as usize
    }

    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    /// The entry with `hash` for which `is_key` says yes.
    #[inline]
    pub(crate) fn find(&self, hash: u32, mut is_key: impl FnMut(u64) -> bool) -> Option<u64> {
        if self.buckets.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut b = self.home(hash);
        loop {
            let e = self.buckets[b];
            if e == EMPTY {
                return None;
            }
            if e as u32 == hash && is_key(e) {
                return Some(e);
            }
            b = (b + 1) & mask;
        }
    }

    /// Starts loading the index line of the key hashing to `hash`; and, for
    /// the key prefetched [`PREFETCH_LAG`] calls before, whose index line is
    /// in the CPU's cache by now, hands `load_entry` the position of the
    /// first entry with its hash (if any) to start loading that entry. Two
    /// stages, so that neither waits for memory; a 32-bit hash shared by
    /// two keys may load the wrong entry, which costs nothing but the load.
    pub(crate) fn prefetch(&mut self, hash: u32, load_entry: impl FnOnce(usize)) {
        if self.buckets.is_empty() {
            return;
        }
        prefetch_line((&raw const self.buckets[self.home(hash)]).cast());
        let earlier = std::mem::replace(&mut self.lagging[self.prefetches % PREFETCH_LAG], hash);
        self.prefetches += 1;
        if self.prefetches > PREFETCH_LAG
            && let Some(e) = self.find(earlier, |_| true)
        {
            load_entry(slot_of(e));
        }
    }

    /// [`Self::prefetch`], loading the entry from `entries` (the slots or
    /// slab this index names).
    pub(crate) fn prefetch_in<C>(&mut self, hash: u32, entries: &C)
    where
        C: std::ops::Index<usize, Output: Sized> + ?Sized,
    {
        self.prefetch(hash, |i| prefetch_value(&entries[i]));
    }

    /// Adds `entry` (the caller knows its key is not indexed yet).
    pub(crate) fn insert(&mut self, entry: u64) {
        debug_assert_ne!(entry, EMPTY);
        if (self.len + 1) * 4 > self.buckets.len() * 3 {
            self.grow();
        }
        self.place(entry);
        self.len += 1;
    }

    fn place(&mut self, entry: u64) {
        let mask = self.mask();
        let mut b = self.home(entry as u32);
        while self.buckets[b] != EMPTY {
            b = (b + 1) & mask;
        }
        self.buckets[b] = entry;
    }

    fn grow(&mut self) {
        let buckets = (self.buckets.len() * 2).max(MIN_BUCKETS);
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY; buckets]);
        self.shift = 64 - buckets.trailing_zeros();
        for e in old.into_iter().filter(|&e| e != EMPTY) {
            self.place(e);
        }
    }

    /// Removes `entry` if indexed; `true` if it was.
    pub(crate) fn remove(&mut self, entry: u64) -> bool {
        let Some(mut hole) = self.position(entry) else { return false };
        // Backward-shift deletion: every later entry of the run that may
        // live in the hole moves into it, so no lookup stops early.
        let mask = self.mask();
        let mut b = hole;
        loop {
            b = (b + 1) & mask;
            let e = self.buckets[b];
            if e == EMPTY {
                break;
            }
            let home = self.home(e as u32);
            if (b.wrapping_sub(home) & mask) >= (b.wrapping_sub(hole) & mask) {
                self.buckets[hole] = e;
                hole = b;
            }
        }
        self.buckets[hole] = EMPTY;
        self.len -= 1;
        true
    }

    fn position(&self, entry: u64) -> Option<usize> {
        if self.buckets.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut b = self.home(entry as u32);
        loop {
            match self.buckets[b] {
                EMPTY => return None,
                e if e == entry => return Some(b),
                _ => b = (b + 1) & mask,
            }
        }
    }

    /// Every indexed position, in no particular order.
    pub(crate) fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.buckets.iter().filter(|&&e| e != EMPTY).map(|&e| slot_of(e))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn an_index_entry_names_its_slot_and_keeps_the_whole_hash() {
        let e = index_entry(123_456, 0xDEAD_BEEF);
        assert_eq!((slot_of(e), e as u32), (123_456, 0xDEAD_BEEF));
        assert_ne!(index_entry(u32::MAX as usize - 1, u32::MAX), EMPTY);
        // High bits of the hash pick the bucket too.
        assert_ne!(spread(0x8000_0000) >> 60, spread(0) >> 60);
    }

    #[test]
    fn colliding_hashes_are_told_apart_by_the_caller_and_survive_removals() {
        let mut index = SlotIndex::default();
        for slot in 0..5 {
            index.insert(index_entry(slot, 42));
        }
        assert_eq!(index.find(42, |e| slot_of(e) == 3), Some(index_entry(3, 42)));
        assert!(index.remove(index_entry(1, 42)));
        assert!(!index.remove(index_entry(1, 42)), "already removed");
        for slot in [0, 2, 3, 4] {
            assert_eq!(index.find(42, |e| slot_of(e) == slot).map(slot_of), Some(slot));
        }
        assert_eq!(index.find(42, |e| slot_of(e) == 1), None);
        assert_eq!(index.find(7, |_| true), None);
        assert_eq!(index.len(), 4);
    }

    #[test]
    fn a_prefetch_loads_the_entry_of_the_key_prefetched_four_calls_before() {
        let mut index = SlotIndex::default();
        index.prefetch(1, |_| panic!("an empty index has no entry"));
        for slot in 0..8 {
            index.insert(index_entry(slot, 100 + slot as u32));
        }
        let mut loaded = Vec::new();
        for hash in [100, 101, 999, 103, 104, 105, 106, 107] {
            index.prefetch(hash, |slot| loaded.push(slot));
        }
        // The first four only start; then 100, 101 and 103 are loaded (999
        // is not indexed); 104 to 107 wait for later calls.
        assert_eq!(loaded, [0, 1, 3]);
        assert_eq!(index.find(105, |_| true).map(slot_of), Some(5), "prefetching changes nothing");
    }

    #[test]
    fn an_empty_index_finds_and_removes_nothing() {
        let mut index = SlotIndex::default();
        assert_eq!(index.find(0, |_| true), None);
        assert!(!index.remove(index_entry(0, 0)));
    }

    proptest! {
        /// Any sequence of inserts, removals and prefetches: the index finds
        /// exactly what a map from slot to hash holds (hashes from a small
        /// range, so runs collide, wrap around the end and shift back), and
        /// a prefetch only ever names an indexed slot.
        #[test]
        fn the_index_agrees_with_a_map(ops in proptest::collection::vec((0u8..5, 0usize..300, 0u32..64), 1..2000)) {
            let mut index = SlotIndex::default();
            let mut model: HashMap<usize, u32> = HashMap::new();
            for (op, slot, hash) in ops {
                let hash = hash.wrapping_mul(0x0100_0193) | (hash & 1) << 31;
                if op == 4 {
                    let mut named = None;
                    index.prefetch(hash, |s| named = Some(s));
                    if let Some(s) = named {
                        prop_assert!(model.contains_key(&s), "prefetch named slot {} that is not indexed", s);
                    }
                    continue;
                }
                let add = op < 2;
                match (add, model.get(&slot).copied()) {
                    (true, None) => {
                        index.insert(index_entry(slot, hash));
                        model.insert(slot, hash);
                    }
                    (false, Some(h)) => {
                        prop_assert!(index.remove(index_entry(slot, h)));
                        model.remove(&slot);
                    }
                    _ => {}
                }
                prop_assert_eq!(index.len(), model.len());
            }
            let mut positions: Vec<usize> = index.positions().collect();
            positions.sort_unstable();
            let mut expected: Vec<usize> = model.keys().copied().collect();
            expected.sort_unstable();
            prop_assert_eq!(positions, expected);
            for (&slot, &hash) in &model {
                prop_assert_eq!(index.find(hash, |e| slot_of(e) == slot), Some(index_entry(slot, hash)));
            }
            for hash in 0..64u32 {
                let hash = hash.wrapping_mul(0x0100_0193) | (hash & 1) << 31;
                prop_assert_eq!(index.find(hash, |e| !model.contains_key(&slot_of(e))), None);
            }
        }
    }
}
