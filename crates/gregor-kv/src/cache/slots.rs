//! Where the cache keeps its entries.
//!
//! The slots grow a chunk at a time instead of being copied to a larger
//! array, so that a growing cache never stops for long (see
//! [`crate::slot_index`] for why), and a slot never moves, so that the
//! index can name it by number. Nothing here decides what is cached.

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
}
