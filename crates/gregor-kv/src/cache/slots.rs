//! Where the cache keeps its entries, and how its index names them.
//!
//! Both exist so that a growing cache never stops for long: the slots grow
//! a chunk at a time instead of being copied to a larger array, and the
//! index entries carry their keys' hashes, so that growing the index never
//! reads a slot. Rehashing used to read every slot (a cache miss each), and
//! the stores of a container, fed the same way, grew at the same moment:
//! results waited 20-40 ms in the latency benchmark. Nothing here decides
//! what is cached.

use super::Slot;
use std::ops::{Index, IndexMut};

/// Slots per chunk.
const CHUNK: usize = 4096;

/// An array of slots that grows by whole chunks and never moves a slot.
#[derive(Default)]
pub(super) struct Slots {
    chunks: Vec<Vec<Slot>>,
    len: usize,
}

impl Slots {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn push(&mut self, slot: Slot) {
        if self.len.is_multiple_of(CHUNK) {
            // The first chunk grows as a vector does (a store with a few
            // keys keeps a few slots); later ones are whole at once.
            self.chunks.push(if self.chunks.is_empty() { Vec::new() } else { Vec::with_capacity(CHUNK) });
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(slot);
            self.len += 1;
        }
    }
}

impl Index<usize> for Slots {
    type Output = Slot;

    fn index(&self, i: usize) -> &Slot {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl IndexMut<usize> for Slots {
    fn index_mut(&mut self, i: usize) -> &mut Slot {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
}

/// The index entry of slot `i` whose key hashes (low 32 bits) to `hash`.
pub(super) fn index_entry(i: usize, hash: u32) -> u64 {
    (i as u64) << 32 | u64::from(hash)
}

/// The slot an index entry names.
pub(super) fn slot_of(entry: u64) -> usize {
    (entry >> 32) as usize
}

/// The index's hash of a key whose hash's low 32 bits are `hash`: the
/// table takes buckets from the low bits and its tag from the top 7, so
/// the multiplication (by an odd constant) carries every bit of `hash` up
/// to the top while keeping the low bits as they are.
pub(super) fn table_hash(hash: u32) -> u64 {
    u64::from(hash).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_keep_their_place_across_chunks() {
        let mut slots = Slots::default();
        assert!(slots.is_empty());
        for i in 0..(2 * CHUNK + 3) {
            slots.push(Slot { key_len: i as u32, ..Slot::default() });
        }
        assert_eq!(slots.len(), 2 * CHUNK + 3);
        for i in [0, CHUNK - 1, CHUNK, 2 * CHUNK + 2] {
            assert_eq!(slots[i].key_len, i as u32);
        }
        slots[CHUNK].key_len = 7;
        assert_eq!(slots[CHUNK].key_len, 7);
    }

    #[test]
    fn an_index_entry_names_its_slot_and_keeps_the_whole_hash() {
        let e = index_entry(123_456, 0xDEAD_BEEF);
        assert_eq!((slot_of(e), e as u32), (123_456, 0xDEAD_BEEF));
        // The table's tag (top 7 bits) depends on high bits of the hash too,
        // and its buckets (low bits) are the hash's own.
        assert_ne!(table_hash(0x8000_0000) >> 57, table_hash(0) >> 57);
        assert_eq!(table_hash(0xDEAD_BEEF) & 0xFF, u64::from(0xDEAD_BEEFu32.wrapping_mul(0x7F4A_7C15)) & 0xFF);
    }
}
