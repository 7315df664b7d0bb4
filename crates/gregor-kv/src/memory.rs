//! In-memory state: [`MemoryEngine`], a hash table of byte keys and values,
//! and [`MemoryStore`], the task-facing store built on it.
//!
//! A memory store needs no separate cache: the engine is as fast as a cache
//! would be, and caching it would keep every key twice. The cache's other
//! job, writing each key to the changelog once per flush however often it
//! changed, is done by the store itself: it marks changed entries dirty and
//! sends their current values when the dirty limit is reached and at every
//! flush (commit).
//!
//! Layout, chosen for the hot path (a lookup and an update per message):
//! entries live in a slab indexed by [`crate::slot_index`] (slab positions
//! with their keys' hashes: growing it reads no entry), and dirty lists and
//! the sorted order for scans name entries by position;
//! each entry keeps its key and value in one buffer that holds up to 24 bytes
//! inline, so a typical small key and counter cost no heap allocation and one
//! memory access fewer per lookup. This module must never send anything to a
//! changelog except from [`MemoryStore`]'s dirty list, in the order entries
//! first became dirty.

use crate::engine::{Engine, KvError, WriteBatch};
use crate::logged::ChangelogSink;
use crate::slot_index::{SlotIndex, index_entry, slot_of};
use bytes::Bytes;
use gregor_api::{RawStore, StoreError};
use smallvec::SmallVec;
use std::hash::BuildHasher;
use std::ops::Bound;

/// One key and its value (`live == false`: deleted, awaiting its tombstone
/// in the changelog, or a free slab slot).
#[derive(Default)]
struct Entry {
    /// The low 32 bits of the key's hash (also kept in the index).
    hash: u32,
    /// The key, then the value.
    data: SmallVec<[u8; 24]>,
    key_len: u32,
    live: bool,
    dirty: bool,
}

impl Entry {
    fn key(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }
    fn value(&self) -> &[u8] {
        &self.data[self.key_len as usize..]
    }
    fn set_value(&mut self, value: &[u8]) {
        self.data.truncate(self.key_len as usize);
        self.data.extend_from_slice(value);
    }
}

/// Keeps everything in memory; its contents survive a restart only through
/// a changelog. Point reads and writes are one hash lookup, overwriting a
/// value reuses its buffer, and the sorted key order that scans need is
/// built on the first scan after keys were added or removed.
#[derive(Default)]
pub struct MemoryEngine {
    index: SlotIndex,
    slab: Vec<Entry>,
    /// Slab positions free for reuse.
    free: Vec<u32>,
    /// Slab positions of indexed entries, by key (built by scans).
    sorted: Option<Vec<u32>>,
    hasher: hashbrown::DefaultHashBuilder,
    live: usize,
}

impl std::fmt::Debug for MemoryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryEngine").field("entries", &self.live).finish()
    }
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        MemoryEngine::default()
    }

    fn find(&self, key: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(key) as u32;
        let slab = &self.slab;
        self.index.find(hash, |e| slab[slot_of(e)].key() == key).map(|e| slot_of(e) as u32)
    }

    /// Starts loading what a lookup of `key` reads ([`SlotIndex::prefetch`]).
    fn prefetch(&mut self, key: &[u8]) {
        self.index.prefetch_in(self.hasher.hash_one(key) as u32, &self.slab);
    }

    /// The entry of `key`, indexed (not live) if it was not.
    fn entry(&mut self, key: &[u8]) -> u32 {
        if let Some(i) = self.find(key) {
            return i;
        }
        let hash = self.hasher.hash_one(key) as u32;
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slab.push(Entry::default());
                (self.slab.len() - 1) as u32
            }
        };
        let e = &mut self.slab[i as usize];
        e.hash = hash;
        e.data.clear();
        e.data.extend_from_slice(key);
        e.key_len = key.len() as u32;
        e.live = false;
        e.dirty = false;
        self.index.insert(index_entry(i as usize, hash));
        self.sorted = None;
        i
    }

    fn set(&mut self, i: u32, value: Option<&[u8]>) {
        let e = &mut self.slab[i as usize];
        match value {
            Some(v) => {
                self.live += usize::from(!e.live);
                e.live = true;
                e.set_value(v);
            }
            None => {
                self.live -= usize::from(e.live);
                e.live = false;
                e.set_value(&[]);
            }
        }
    }

    /// Drops entry `i` from the index and frees its slot.
    fn remove(&mut self, i: u32) {
        let e = &mut self.slab[i as usize];
        self.live -= usize::from(e.live);
        e.live = false;
        e.dirty = false;
        e.data = SmallVec::new();
        let hash = e.hash;
        self.index.remove(index_entry(i as usize, hash));
        self.free.push(i);
        self.sorted = None;
    }

    /// Number of keys with a value.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no key has a value.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
}

impl Engine for MemoryEngine {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, KvError> {
        out.clear();
        match self.find(key) {
            Some(i) if self.slab[i as usize].live => {
                out.extend_from_slice(self.slab[i as usize].value());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn write_batch(&mut self, batch: &WriteBatch<'_>) -> Result<(), KvError> {
        for (k, v) in batch {
            match v {
                Some(v) => {
                    let i = self.entry(k);
                    self.set(i, Some(v));
                }
                None => {
                    if let Some(i) = self.find(k) {
                        self.remove(i);
                    }
                }
            }
        }
        Ok(())
    }

    fn scan(
        &mut self,
        from: Bound<&[u8]>,
        to: Option<&[u8]>,
        limit: usize,
        out: &mut Vec<(Bytes, Bytes)>,
    ) -> Result<(), KvError> {
        let slab = &self.slab;
        let index = &self.index;
        let sorted = self.sorted.get_or_insert_with(|| {
            let mut order: Vec<u32> = index.positions().map(|i| i as u32).collect();
            order.sort_unstable_by(|&a, &b| slab[a as usize].key().cmp(slab[b as usize].key()));
            order
        });
        let key = |i: &u32| slab[*i as usize].key();
        let start = match from {
            Bound::Included(f) => sorted.partition_point(|i| key(i) < f),
            Bound::Excluded(f) => sorted.partition_point(|i| key(i) <= f),
            Bound::Unbounded => 0,
        };
        let entries = sorted[start..].iter().take_while(|i| to.is_none_or(|t| key(i) < t)).map(|&i| &slab[i as usize]);
        for e in entries.filter(|e| e.live).take(limit) {
            out.push((Bytes::copy_from_slice(e.key()), Bytes::copy_from_slice(e.value())));
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), KvError> {
        Ok(())
    }

    fn len_hint(&self) -> u64 {
        self.live as u64
    }
}

/// A task's in-memory store: a [`MemoryEngine`] whose changes reach the
/// changelog (if any) once per key per flush.
pub struct MemoryStore {
    name: String,
    engine: MemoryEngine,
    sink: Option<Box<dyn ChangelogSink>>,
    /// Slab positions of dirty entries, in the order they became dirty.
    dirty: Vec<u32>,
    dirty_limit: usize,
    /// Set when the changelog refused a change: the store and its changelog
    /// may disagree, so every later call fails until the task restarts.
    failed: Option<String>,
}

impl MemoryStore {
    /// The store `name` over `engine` (restored already), logging to `sink`
    /// (`None`: no changelog) once `dirty_limit` entries changed and at
    /// every flush.
    pub fn new(name: &str, engine: MemoryEngine, sink: Option<Box<dyn ChangelogSink>>, dirty_limit: usize) -> Self {
        MemoryStore {
            name: name.to_owned(),
            engine,
            sink,
            dirty: Vec::new(),
            dirty_limit: dirty_limit.max(1),
            failed: None,
        }
    }

    /// Number of keys with a value.
    pub fn len(&self) -> usize {
        self.engine.len()
    }

    /// Whether no key has a value.
    pub fn is_empty(&self) -> bool {
        self.engine.is_empty()
    }

    /// Fails: memory keeps no local files to snapshot.
    ///
    /// # Errors
    /// Always.
    pub fn snapshot(&mut self, dir: &std::path::Path) -> Result<(), KvError> {
        self.engine.snapshot(dir)
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

    fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        self.check_failed()?;
        if self.sink.is_none() {
            return self.engine.write_batch(&[(key, value)]).map_err(|e| self.err(e));
        }
        let i = match value {
            Some(_) => self.engine.entry(key),
            None => match self.engine.find(key) {
                // Absent here is absent in the changelog's state too: the
                // engine holds every key.
                None => return Ok(()),
                Some(i) => i,
            },
        };
        self.engine.set(i, value);
        let e = &mut self.engine.slab[i as usize];
        if !e.dirty {
            e.dirty = true;
            self.dirty.push(i);
            if self.dirty.len() >= self.dirty_limit {
                self.write_dirty()?;
            }
        }
        Ok(())
    }

    fn err(&self, e: KvError) -> StoreError {
        StoreError::Engine { store: self.name.clone(), message: e.to_string() }
    }

    /// Sends the current value (or a tombstone) of every dirty entry to the
    /// changelog, then forgets deleted entries.
    fn write_dirty(&mut self) -> Result<(), StoreError> {
        let Some(sink) = &mut self.sink else { return Ok(()) };
        for n in 0..self.dirty.len() {
            let i = self.dirty[n];
            let e = &self.engine.slab[i as usize];
            if let Err(err) = sink.send(e.key(), e.live.then(|| e.value())) {
                self.failed = Some(err.to_string());
                return Err(StoreError::Engine { store: self.name.clone(), message: err.to_string() });
            }
        }
        for n in 0..self.dirty.len() {
            let i = self.dirty[n];
            if self.engine.slab[i as usize].live {
                self.engine.slab[i as usize].dirty = false;
            } else {
                self.engine.remove(i);
            }
        }
        self.dirty.clear();
        Ok(())
    }
}

impl RawStore for MemoryStore {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StoreError> {
        self.check_failed()?;
        self.engine.get(key, out).map_err(|e| self.err(e))
    }

    fn prefetch(&mut self, key: &[u8]) {
        self.engine.prefetch(key);
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
        self.check_failed()?;
        self.engine.scan(from, to, limit, out).map_err(|e| self.err(e))
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.check_failed()?;
        self.write_dirty()
    }
}

#[cfg(test)]
mod tests;
