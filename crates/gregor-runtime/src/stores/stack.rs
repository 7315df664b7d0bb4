//! The layers a task's store is made of, once its engine is open: an
//! in-memory store is one layer; a RocksDB store is a write-back cache over
//! the changelog layer over the engine. Building them must never send
//! anything to a changelog: restores write below these layers.

use super::cache_limits;
use crate::job_config::StoreSpec;
use bytes::Bytes;
use gregor_api::{RawStore, StoreError};
use gregor_kv::{CachedStore, ChangelogSink, Engine, KvError, LoggedEngine, MemoryEngine, MemoryStore, RocksDbEngine};

/// The byte store a task's `Store` handles point at.
pub(crate) enum StoreStack {
    /// RocksDB under the changelog layer (when the store has a changelog)
    /// and a write-back cache.
    Cached(CachedStore<Box<dyn Engine>>),
    /// Memory: one layer that logs its own changes.
    Memory(MemoryStore),
}

impl StoreStack {
    /// Starts writing a consistent copy of the store's local files, as of
    /// now, into `dir`, in the background where the engine can.
    pub fn start_snapshot(&mut self, dir: &std::path::Path) -> Result<gregor_kv::PendingSnapshot, KvError> {
        match self {
            StoreStack::Cached(s) => s.engine_mut().start_snapshot(dir),
            StoreStack::Memory(s) => s.snapshot(dir).map(|()| gregor_kv::PendingSnapshot::taken()),
        }
    }

    /// Writes out up to `max` dirty cache entries (RocksDB stores; an
    /// in-memory store sends its changes at commits and every
    /// `write.batch.size` changes only); `true` if it wrote any.
    pub fn write_some(&mut self, max: usize) -> Result<bool, StoreError> {
        match self {
            StoreStack::Cached(s) => s.write_some(max),
            StoreStack::Memory(_) => Ok(false),
        }
    }

    /// Keys with a value: exact in memory, RocksDB's estimate (of what
    /// reached it: entries still only in the cache are not counted).
    pub fn entries(&mut self) -> u64 {
        match self {
            StoreStack::Cached(s) => s.engine_mut().len_hint(),
            StoreStack::Memory(s) => s.len() as u64,
        }
    }

    fn raw(&mut self) -> &mut dyn RawStore {
        match self {
            StoreStack::Cached(s) => s,
            StoreStack::Memory(s) => s,
        }
    }
}

// `get` and `put` (the hot path) match directly; the rest go through `raw`.
impl RawStore for StoreStack {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StoreError> {
        match self {
            StoreStack::Cached(s) => s.get(key, out),
            StoreStack::Memory(s) => s.get(key, out),
        }
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        match self {
            StoreStack::Cached(s) => s.put(key, value),
            StoreStack::Memory(s) => s.put(key, value),
        }
    }
    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.raw().delete(key)
    }
    fn scan(
        &mut self,
        from: std::ops::Bound<&[u8]>,
        to: Option<&[u8]>,
        limit: usize,
        out: &mut Vec<(Bytes, Bytes)>,
    ) -> Result<(), StoreError> {
        self.raw().scan(from, to, limit, out)
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        self.raw().flush()
    }
}

/// A freshly opened engine, before the layers on top.
// Built once per store opening and consumed at once: boxing would save nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Opened {
    Rocks(RocksDbEngine),
    Memory(MemoryEngine),
}

impl Opened {
    pub fn engine(&mut self) -> &mut dyn Engine {
        match self {
            Opened::Rocks(e) => e,
            Opened::Memory(e) => e,
        }
    }

    /// The task's store over this engine, its changes sent to `changelog`;
    /// `empty`: the engine holds nothing (no snapshot, nothing replayed), so
    /// the cache can answer reads of keys it lacks until it first evicts.
    pub fn into_store(
        self,
        spec: &StoreSpec,
        tasks: usize,
        changelog: Option<Box<dyn ChangelogSink>>,
        empty: bool,
    ) -> StoreStack {
        match self {
            Opened::Memory(e) => {
                // A disabled cache means every change reaches the changelog at once.
                let dirty = if spec.cache_entries == 0 { 1 } else { spec.write_batch_size };
                StoreStack::Memory(MemoryStore::new(&spec.name, e, changelog, dirty))
            }
            Opened::Rocks(e) => {
                let engine: Box<dyn Engine> = match changelog {
                    Some(sink) => Box::new(LoggedEngine::new(e, sink)),
                    None => Box::new(e),
                };
                let cache = CachedStore::new(&spec.name, engine, cache_limits(spec, tasks));
                StoreStack::Cached(if empty { cache.assume_empty_engine() } else { cache })
            }
        }
    }
}

/// One task's RocksDB options: `container.*` sizes are per container,
/// shared by its tasks (as in Samza).
pub(crate) fn rocks_options(opts: &gregor_kv::RocksOptions, tasks: usize) -> gregor_kv::RocksOptions {
    let share = |bytes: usize| (bytes / tasks.max(1)).max(1 << 20);
    gregor_kv::RocksOptions {
        block_cache_bytes: share(opts.block_cache_bytes),
        write_buffer_bytes: share(opts.write_buffer_bytes),
        ..opts.clone()
    }
}
