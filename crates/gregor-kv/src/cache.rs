//! The write-back cache: the top byte layer of every store.
//!
//! Reads of cached keys never reach the engine; writes mark entries dirty and
//! reach the changelog (and the engine, unless its writes are deferred:
//! below) only at `flush` (every commit),
//! when a dirty entry would be evicted, before a scan, when dirty entries
//! fill a quarter of the byte budget, and when the optional entry limit
//! ([`CacheLimits::dirty`]) is reached. Ten updates of one key between flushes
//! cost one changelog record (and at most one engine write). As in Kafka Streams, a
//! working set that fits the cache is written once per commit, not once per
//! change: over a million keys that halves RocksDB's work (see
//! `docs/benchmarks.md`).
//!
//! The cache is a CLOCK (second-chance) cache over an array of slots that
//! grows until it holds [`CacheLimits::entries`] keys or
//! [`CacheLimits::bytes`] of keys, values and bookkeeping; from then on slots
//! are reused, their key and value buffers too, so reads and writes allocate
//! nothing.
//!
//! A cache told to [`CachedStore::defer_engine_writes`] sends dirty entries
//! to the changelog only, and writes them to the engine later, together:
//! before a snapshot ([`CachedStore::store_unstored`]), a scan, or the
//! eviction of one of them, or when they hold half the byte budget. A
//! RocksDB store is rebuilt from a snapshot and its changelog at every
//! start, so its live database only has to be complete when a snapshot is
//! taken; a key changed at every commit then costs RocksDB one write per
//! snapshot instead of one per commit (RocksDB's writer threads and
//! compactions were 60% of a core at half the latency bench's maximum
//! rate).
//!
//! Dirty entries go to the engine as deferred writes: the task's thread
//! does not wait for RocksDB to apply them. An entry stays cached, and so readable, until
//! the engine applied the write that carries it; a miss can therefore never
//! read an older value from the engine.

use crate::engine::{Engine, KvError};
use bytes::Bytes;
use gregor_api::{RawStore, StoreError};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::ops::Bound;

mod slots;
use crate::slot_index::{SlotIndex, index_entry, slot_of};
use slots::Slots;

#[derive(Default)]
struct Slot {
    /// The low 32 bits of the key's hash (also kept in the index).
    hash: u32,
    /// The key, then the value: up to 24 bytes inline, so a small key and
    /// value cost no heap allocation and no extra memory access per lookup.
    data: SmallVec<[u8; 24]>,
    key_len: u32,
    /// `false`: the key is known to be absent (deleted or never written).
    present: bool,
    /// Changed since the changelog last had it.
    dirty: bool,
    /// In the changelog but not yet written to the engine (deferred engine
    /// writes only); kept until written.
    unstored: bool,
    referenced: bool,
    /// The deferred engine write that carries this entry's value: until the
    /// engine applied it, the entry is the only place to read it from, so
    /// it is not evicted.
    ticket: u64,
}

impl Slot {
    fn key(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }
    fn value(&self) -> &[u8] {
        &self.data[self.key_len as usize..]
    }
    /// Heap bytes beyond the slot itself.
    fn heap(&self) -> usize {
        if self.data.spilled() { self.data.capacity() } else { 0 }
    }
}

/// Bookkeeping bytes per cached entry beyond its key and value (the slot and
/// its index entry), counted against [`CacheLimits::bytes`].
const SLOT_OVERHEAD: usize = std::mem::size_of::<Slot>() + 16;

/// Dirty entries are written out once they hold this share (1/4) of the
/// byte budget: at most a quarter of the cache waits for a write-out, and
/// one write-out stays a bounded batch (a few MB per task by default)
/// instead of the whole cache at once.
const DIRTY_SHARE: usize = 4;

/// Entries owed to the engine (deferred engine writes) are written once
/// they hold this share (1/2) of the byte budget, so that evictions rarely
/// meet one.
const UNSTORED_SHARE: usize = 2;

/// The writes that carry the entries of `slots` at `indexes` that `keep`
/// selects (a deletion for an absent key).
fn batch_of<'a>(
    slots: &'a Slots,
    indexes: impl Iterator<Item = &'a u32>,
    keep: impl Fn(&Slot) -> bool,
) -> Vec<(&'a [u8], Option<&'a [u8]>)> {
    indexes.map(|&i| &slots[i as usize]).filter(|s| keep(s)).map(|s| (s.key(), s.present.then(|| s.value()))).collect()
}

/// How much a [`CachedStore`] may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Most keys cached (`0` disables the cache: every operation reaches the
    /// engine); `usize::MAX` for no limit but `bytes`.
    pub entries: usize,
    /// Most bytes of keys, values and bookkeeping cached.
    pub bytes: usize,
    /// Dirty entries written to the engine together once this many
    /// accumulate (`usize::MAX`: no count limit; dirty entries are then
    /// written when flushed, evicted or scanned, or when they hold a
    /// quarter of `bytes`).
    pub dirty: usize,
}

/// A cached store over an engine, implementing the task-facing [`RawStore`].
pub struct CachedStore<E> {
    name: String,
    engine: E,
    capacity: usize,
    max_bytes: usize,
    /// Bytes the slots hold (keys, values and bookkeeping).
    bytes: usize,
    /// Cached entries with a value (`present`).
    live: usize,
    slots: Slots,
    /// Each entry is a slot number and its key's hash ([`index_entry`]): a
    /// lookup compares hashes without touching the slot, and growing the
    /// index reads no slot (see [`crate::slot_index`]).
    index: SlotIndex,
    hasher: hashbrown::DefaultHashBuilder,
    hand: usize,
    /// Slots of dirty entries, oldest first (idle write-outs take from the front).
    dirty: VecDeque<u32>,
    /// Slots of entries in the changelog but not in the engine (with
    /// `defer_engine`), oldest first.
    unstored: VecDeque<u32>,
    /// Idle write-outs also write owed entries ([`Self::store_ahead`]).
    store_ahead: bool,
    /// Whether the changelog layer may send dirty entries ahead of the
    /// engine's copy ([`Self::defer_engine_writes`]).
    defer_engine: bool,
    batch_size: usize,
    /// Every key the store holds is in the cache: the engine was empty when
    /// the store opened and no entry was evicted since, so a key the cache
    /// lacks is absent and a read need not ask the engine (a RocksDB `Get`
    /// for a new key probes a bloom filter per file, a cache miss each).
    complete: bool,
    /// Set when writing dirty entries through failed: the engine and the
    /// changelog may disagree, so every later call fails until the task restarts
    /// (and restores from its checkpoint).
    failed: Option<String>,
}

impl<E: Engine> CachedStore<E> {
    /// A store called `name` over `engine`, caching within `limits`.
    pub fn new(name: &str, engine: E, limits: CacheLimits) -> Self {
        CachedStore {
            name: name.to_owned(),
            engine,
            capacity: limits.entries.min(u32::MAX as usize),
            max_bytes: limits.bytes,
            bytes: 0,
            live: 0,
            slots: Slots::default(),
            index: SlotIndex::default(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            hand: 0,
            dirty: VecDeque::new(),
            unstored: VecDeque::new(),
            store_ahead: false,
            defer_engine: false,
            batch_size: limits.dirty.max(1),
            complete: false,
            failed: None,
        }
    }

    /// Declares the engine empty (a store created or rebuilt from nothing):
    /// until the cache first evicts an entry, reads of keys it lacks answer
    /// "absent" without asking the engine.
    pub fn assume_empty_engine(mut self) -> Self {
        self.complete = self.capacity > 0;
        self
    }

    /// Sends dirty entries to the changelog only ([`Engine::log_only`]) and
    /// writes them to the engine later (module docs). Only for an engine
    /// whose live copy nothing reads back but this cache, a scan and a
    /// snapshot taken after [`Self::store_unstored`].
    pub fn defer_engine_writes(mut self) -> Self {
        self.defer_engine = self.capacity > 0;
        self
    }

    /// Keys with a value: exact while the cache holds every key (see
    /// `complete`), else the engine's estimate, or the cached ones if more
    /// (an engine whose writes wait for a snapshot lags behind).
    pub fn entries(&self) -> u64 {
        let live = self.live as u64;
        if self.complete { live } else { self.engine.len_hint().max(live) }
    }

    /// The engine underneath.
    pub fn engine_mut(&mut self) -> &mut E {
        &mut self.engine
    }

    fn err(&self, e: KvError) -> StoreError {
        StoreError::Engine { store: self.name.clone(), message: e.to_string() }
    }

    /// Marks the store unusable after `e` (a write that may have reached
    /// the changelog or the engine only in part).
    fn fail(&mut self, e: KvError) -> StoreError {
        self.failed = Some(e.to_string());
        self.err(e)
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
        let hash = self.hasher.hash_one(key) as u32;
        let slots = &self.slots;
        self.index.find(hash, |e| slots[slot_of(e)].key() == key).map(slot_of)
    }

    /// Hands every dirty entry to the engine in one deferred batch (the
    /// changelog layer sends them at once).
    fn write_dirty(&mut self) -> Result<(), StoreError> {
        self.write_oldest_dirty(self.dirty.len())
    }

    /// Writes out up to `max` of the entries dirty the longest, as
    /// [`Self::write_dirty`] does; `true` if there were any. The runtime
    /// calls this while its container waits for input, so that a commit
    /// finds little left to write (a short pause) without giving up the
    /// coalescing of a busy container, which never waits.
    ///
    /// # Errors
    /// As a write: the engine or the changelog refused the batch.
    /// With [`Self::store_ahead`] set and no dirty entry left, it writes
    /// up to `max` of the entries owed to the engine longest instead,
    /// unless the engine is [`Engine::behind`].
    pub fn write_some(&mut self, max: usize) -> Result<bool, StoreError> {
        self.check_failed()?;
        if max == 0 {
            return Ok(false);
        }
        if !self.dirty.is_empty() {
            self.write_oldest_dirty(max.min(self.dirty.len()))?;
            return Ok(true);
        }
        // Never so far ahead that a write would wait for the engine.
        if self.store_ahead && !self.unstored.is_empty() && !self.engine.behind() {
            self.store_oldest_unstored(max)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether idle write-outs ([`Self::write_some`]) also write the
    /// entries owed to the engine: set while a snapshot is near, so that
    /// its commit finds little left to write. Writing all of a large
    /// cache's owed entries in that commit stopped the loop for 40-80 ms.
    pub fn store_ahead(&mut self, on: bool) {
        self.store_ahead = on;
    }

    fn write_oldest_dirty(&mut self, n: usize) -> Result<(), StoreError> {
        if n == 0 {
            return Ok(());
        }
        let batch = batch_of(&self.slots, self.dirty.range(..n), |s| s.dirty);
        let logged_only = if self.defer_engine { self.engine.log_only(&batch) } else { Ok(false) };
        let result = logged_only
            .and_then(|logged| if logged { Ok(None) } else { self.engine.write_batch_deferred(&batch).map(Some) });
        drop(batch);
        let ticket = result.map_err(|e| self.fail(e))?;
        for &i in self.dirty.range(..n) {
            let slot = &mut self.slots[i as usize];
            slot.dirty = false;
            match ticket {
                Some(ticket) => slot.ticket = ticket,
                None if !slot.unstored => {
                    slot.unstored = true;
                    self.unstored.push_back(i);
                }
                None => {}
            }
        }
        self.dirty.drain(..n);
        if self.unstored_over_budget() {
            self.store_unstored()?;
        }
        Ok(())
    }

    /// Writes the entries owed to the engine (in the changelog already) to
    /// it, as one deferred batch: before a snapshot, which must hold every
    /// change the changelog has up to its offset. Entries changed again
    /// since are written when they are next logged.
    ///
    /// # Errors
    /// As a write: the engine refused the batch.
    pub fn store_unstored(&mut self) -> Result<(), StoreError> {
        self.check_failed()?;
        self.store_oldest_unstored(self.unstored.len())
    }

    /// Writes up to `n` of the entries owed to the engine longest (those
    /// changed again since stay owed, to be written once logged again).
    fn store_oldest_unstored(&mut self, n: usize) -> Result<(), StoreError> {
        let n = n.min(self.unstored.len());
        if n == 0 {
            return Ok(());
        }
        let batch = batch_of(&self.slots, self.unstored.range(..n), |s| !s.dirty);
        let result = self.engine.write_unlogged_deferred(&batch);
        drop(batch);
        let ticket = result.map_err(|e| self.fail(e))?;
        for _ in 0..n {
            let Some(i) = self.unstored.pop_front() else { break };
            let slot = &mut self.slots[i as usize];
            if slot.dirty {
                self.unstored.push_back(i);
            } else {
                slot.unstored = false;
                slot.ticket = ticket;
            }
        }
        Ok(())
    }

    /// A free slot: a new one while below capacity, else the CLOCK victim
    /// (dirty victims are written out first, with all other dirty entries).
    fn free_slot(&mut self) -> Result<usize, StoreError> {
        if self.slots.is_empty() || (self.slots.len() < self.capacity && self.bytes < self.max_bytes) {
            self.slots.push(Slot::default());
            self.bytes += SLOT_OVERHEAD;
            return Ok(self.slots.len() - 1);
        }
        // From here on a slot is reused: its key leaves the cache.
        self.complete = false;
        let mut applied = self.engine.applied();
        let mut visited = 0;
        let mut handed_over = false;
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            visited += 1;
            if visited > 2 * self.slots.len() {
                // Every entry is waiting for its deferred write.
                self.engine.wait_applied().map_err(|e| self.err(e))?;
                applied = self.engine.applied();
                visited = 0;
            }
            let slot = &mut self.slots[i];
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            if slot.ticket > applied {
                if !handed_over {
                    // Written out but maybe still gathered by the engine
                    // (RocksDB stages writes until a flush): start applying
                    // them, so the sweep finds them evictable soon.
                    handed_over = true;
                    self.engine.flush().map_err(|e| self.err(e))?;
                    applied = self.engine.applied();
                }
                continue;
            }
            if slot.dirty || slot.unstored {
                // Written out with the other dirty (and owed) entries; it
                // becomes a victim once the engine applied the write.
                self.write_dirty()?;
                self.store_unstored()?;
                applied = self.engine.applied();
                continue;
            }
            let hash = self.slots[i].hash;
            self.index.remove(index_entry(i, hash));
            if self.slots[i].present {
                self.slots[i].present = false;
                self.live -= 1;
            }
            return Ok(i);
        }
    }

    /// Whether the dirty entries hold 1/[`DIRTY_SHARE`] of the byte budget,
    /// estimated as their count times the mean bytes of a slot (tracking
    /// each dirty entry's size would cost the hot path more than it tells).
    fn dirty_over_budget(&self) -> bool {
        let share = self.max_bytes / DIRTY_SHARE;
        self.dirty.len().saturating_mul(self.bytes) >= self.slots.len().saturating_mul(share)
    }

    /// Whether the entries owed to the engine hold 1/[`UNSTORED_SHARE`] of
    /// the byte budget (estimated as [`Self::dirty_over_budget`] does).
    fn unstored_over_budget(&self) -> bool {
        let share = self.max_bytes / UNSTORED_SHARE;
        self.unstored.len().saturating_mul(self.bytes) >= self.slots.len().saturating_mul(share)
    }

    /// Puts `key` in slot `i` (reusing its buffers) and indexes it.
    fn fill(&mut self, i: usize, key: &[u8], value: Option<&[u8]>, dirty: bool) {
        let hash = self.hasher.hash_one(key) as u32;
        let slot = &mut self.slots[i];
        let before = slot.heap();
        slot.hash = hash;
        slot.data.clear();
        slot.data.extend_from_slice(key);
        slot.data.extend_from_slice(value.unwrap_or_default());
        slot.key_len = key.len() as u32;
        self.bytes = self.bytes + slot.heap() - before;
        slot.present = value.is_some();
        self.live += usize::from(slot.present);
        slot.dirty = dirty;
        slot.unstored = false;
        slot.referenced = true;
        slot.ticket = 0;
        self.index.insert(index_entry(i, hash));
    }

    fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        self.check_failed()?;
        if self.capacity == 0 {
            return self.engine.write_batch(&[(key, value)]).map_err(|e| self.fail(e));
        }
        match self.find(key) {
            Some(i) => {
                let slot = &mut self.slots[i];
                let before = slot.heap();
                slot.data.truncate(slot.key_len as usize);
                slot.data.extend_from_slice(value.unwrap_or_default());
                self.bytes = self.bytes + slot.heap() - before;
                self.live = self.live + usize::from(value.is_some()) - usize::from(slot.present);
                slot.present = value.is_some();
                slot.referenced = true;
                if !slot.dirty {
                    slot.dirty = true;
                    self.dirty.push_back(i as u32);
                }
            }
            None => {
                let i = self.free_slot()?;
                self.fill(i, key, value, true);
                self.dirty.push_back(i as u32);
            }
        }
        if self.dirty.len() >= self.batch_size || self.dirty_over_budget() {
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
            out.extend_from_slice(slot.value());
            return Ok(slot.present);
        }
        let found = if self.complete {
            out.clear();
            false
        } else {
            self.engine.get(key, out).map_err(|e| self.err(e))?
        };
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
        self.store_unstored()?;
        self.engine.scan(from, to, limit, out).map_err(|e| self.err(e))
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.check_failed()?;
        self.write_dirty()?;
        self.engine.flush().map_err(|e| self.err(e))
    }

    fn prefetch(&mut self, key: &[u8]) {
        self.index.prefetch_in(self.hasher.hash_one(key) as u32, &self.slots);
    }
}

#[cfg(test)]
mod tests;
