//! The write-back cache: the top byte layer of every store.
//!
//! Reads of cached keys never reach the engine; writes mark entries dirty and
//! reach the engine (and so the changelog) only when `write.batch.size` dirty
//! entries accumulate, when a dirty entry would be evicted, before a scan,
//! and at `flush` (every commit). Ten updates of one key between flushes cost
//! one engine write and one changelog record.
//!
//! The cache is a CLOCK (second-chance) cache over a fixed array of slots
//! whose key and value buffers are reused, so once it is full, reads and
//! writes allocate nothing.

use crate::engine::{Engine, KvError};
use bytes::Bytes;
use gregor_api::{RawStore, StoreError};
use hashbrown::HashTable;
use std::hash::BuildHasher;
use std::ops::Bound;

#[derive(Default)]
struct Slot {
    key: Vec<u8>,
    value: Vec<u8>,
    /// `false`: the key is known to be absent (deleted or never written).
    present: bool,
    dirty: bool,
    referenced: bool,
}

/// A cached store over an engine, implementing the task-facing [`RawStore`].
pub struct CachedStore<E> {
    name: String,
    engine: E,
    capacity: usize,
    slots: Vec<Slot>,
    index: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    hand: usize,
    dirty: Vec<u32>,
    batch_size: usize,
    /// Set when writing dirty entries through failed: the engine and the
    /// changelog may disagree, so every later call fails until the task restarts
    /// (and restores from its checkpoint).
    failed: Option<String>,
}

impl<E: Engine> CachedStore<E> {
    /// A store called `name` over `engine`, caching up to `cache_entries`
    /// keys (0 disables the cache) and writing dirty entries in batches of
    /// `batch_size`.
    pub fn new(name: &str, engine: E, cache_entries: usize, batch_size: usize) -> Self {
        CachedStore {
            name: name.to_owned(),
            engine,
            capacity: cache_entries.min(u32::MAX as usize),
            slots: Vec::new(),
            index: HashTable::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            hand: 0,
            dirty: Vec::new(),
            batch_size: batch_size.max(1),
            failed: None,
        }
    }

    /// The engine underneath.
    pub fn engine_mut(&mut self) -> &mut E {
        &mut self.engine
    }

    fn err(&self, e: KvError) -> StoreError {
        StoreError::Engine { store: self.name.clone(), message: e.to_string() }
    }

    fn check_failed(&self) -> Result<(), StoreError> {
        match &self.failed {
            None => Ok(()),
            Some(why) => Err(StoreError::Engine {
                store: self.name.clone(),
                message: format!("unusable after an earlier failure: {why}"),
            }),
        }
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        self.index.find(hash, |&i| self.slots[i as usize].key == key).map(|&i| i as usize)
    }

    /// Writes every dirty entry to the engine in one batch.
    fn write_dirty(&mut self) -> Result<(), StoreError> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        let slots = &self.slots;
        let batch: Vec<(&[u8], Option<&[u8]>)> = self
            .dirty
            .iter()
            .map(|&i| &slots[i as usize])
            .filter(|s| s.dirty)
            .map(|s| (&s.key[..], s.present.then_some(&s.value[..])))
            .collect();
        let result = self.engine.write_batch(&batch);
        drop(batch);
        if let Err(e) = result {
            self.failed = Some(e.to_string());
            return Err(self.err(e));
        }
        for &i in &self.dirty {
            self.slots[i as usize].dirty = false;
        }
        self.dirty.clear();
        Ok(())
    }

    /// A free slot: a new one while below capacity, else the CLOCK victim
    /// (dirty victims are written out first, with all other dirty entries).
    fn free_slot(&mut self) -> Result<usize, StoreError> {
        if self.slots.len() < self.capacity {
            self.slots.push(Slot::default());
            return Ok(self.slots.len() - 1);
        }
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            let slot = &mut self.slots[i];
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            if slot.dirty {
                self.write_dirty()?;
            }
            let hash = self.hasher.hash_one(&self.slots[i].key[..]);
            if let Ok(entry) = self.index.find_entry(hash, |&j| j as usize == i) {
                entry.remove();
            }
            return Ok(i);
        }
    }

    /// Puts `key` in slot `i` (reusing its buffers) and indexes it.
    fn fill(&mut self, i: usize, key: &[u8], value: Option<&[u8]>, dirty: bool) {
        let slot = &mut self.slots[i];
        slot.key.clear();
        slot.key.extend_from_slice(key);
        slot.value.clear();
        slot.value.extend_from_slice(value.unwrap_or_default());
        slot.present = value.is_some();
        slot.dirty = dirty;
        slot.referenced = true;
        let hasher = &self.hasher;
        let slots = &self.slots;
        self.index.insert_unique(hasher.hash_one(key), i as u32, |&j| hasher.hash_one(&slots[j as usize].key[..]));
    }

    fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        self.check_failed()?;
        if self.capacity == 0 {
            if let Err(e) = self.engine.write_batch(&[(key, value)]) {
                self.failed = Some(e.to_string());
                return Err(self.err(e));
            }
            return Ok(());
        }
        match self.find(key) {
            Some(i) => {
                let slot = &mut self.slots[i];
                slot.value.clear();
                slot.value.extend_from_slice(value.unwrap_or_default());
                slot.present = value.is_some();
                slot.referenced = true;
                if !slot.dirty {
                    slot.dirty = true;
                    self.dirty.push(i as u32);
                }
            }
            None => {
                let i = self.free_slot()?;
                self.fill(i, key, value, true);
                self.dirty.push(i as u32);
            }
        }
        if self.dirty.len() >= self.batch_size {
            self.write_dirty()?;
        }
        Ok(())
    }
}

impl<E: Engine> RawStore for CachedStore<E> {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StoreError> {
        self.check_failed()?;
        if let Some(i) = self.find(key) {
            let slot = &mut self.slots[i];
            slot.referenced = true;
            out.clear();
            out.extend_from_slice(&slot.value);
            return Ok(slot.present);
        }
        let found = self.engine.get(key, out).map_err(|e| self.err(e))?;
        if self.capacity > 0 {
            let i = self.free_slot()?;
            self.fill(i, key, found.then_some(&out[..]), false);
        }
        Ok(found)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.write(key, Some(value))
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.write(key, None)
    }

    fn scan(
        &mut self,
        from: Bound<&[u8]>,
        to: Option<&[u8]>,
        limit: usize,
        out: &mut Vec<(Bytes, Bytes)>,
    ) -> Result<(), StoreError> {
        self.write_dirty()?;
        self.engine.scan(from, to, limit, out).map_err(|e| self.err(e))
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.check_failed()?;
        self.write_dirty()?;
        self.engine.flush().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests;
