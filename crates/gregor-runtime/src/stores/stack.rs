//! The layers a task's store is made of, once its engine is open: an
//! in-memory store is one layer; a RocksDB store is a write-back cache over
//! the changelog layer over the engine. Building them must never send
//! anything to a changelog: restores write below these layers.

use super::cache_limits;
use crate::job_config::{StoreEngine, StoreSpec};
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
    /// now, into `dir`, in the background where the engine can; with
    /// `now`, takes it before returning if it cannot start at once, else
    /// `Ok(None)` then ([`gregor_kv::Engine::start_snapshot`]). The cache
    /// first writes the changes it still owes the engine.
    pub fn start_snapshot(
        &mut self,
        dir: &std::path::Path,
        now: bool,
    ) -> Result<Option<gregor_kv::PendingSnapshot>, KvError> {
        let taken = || Some(gregor_kv::PendingSnapshot::taken());
        let s = match self {
            StoreStack::Cached(s) => s,
            StoreStack::Memory(s) => return s.snapshot(dir).map(|()| taken()),
        };
        s.store_unstored().map_err(|e| KvError::Engine {
            location: dir.display().to_string(),
            operation: "writing the changes a snapshot needs".into(),
            message: e.to_string(),
        })?;
        match s.engine_mut().start_snapshot(dir)? {
            None if now => s.engine_mut().snapshot(dir).map(|()| taken()),
            started => Ok(started),
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

    /// Lets idle write-outs also write what a RocksDB store's cache owes
    /// its engine ([`CachedStore::store_ahead`]).
    pub fn store_ahead(&mut self, on: bool) {
        if let StoreStack::Cached(s) = self {
            s.store_ahead(on);
        }
    }

    /// Keys with a value: exact in memory and while a RocksDB store's
    /// cache holds every key, else about ([`CachedStore::entries`]).
    pub fn entries(&mut self) -> u64 {
        match self {
            StoreStack::Cached(s) => s.entries(),
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
    fn prefetch(&mut self, key: &[u8]) {
        self.raw().prefetch(key);
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
                let logged = changelog.is_some();
                let engine: Box<dyn Engine> = match changelog {
                    Some(sink) => Box::new(LoggedEngine::new(e, sink)),
                    None => Box::new(e),
                };
                let mut cache = CachedStore::new(&spec.name, engine, cache_limits(spec, tasks));
                // The live database of a changelogged store is rebuilt from a
                // snapshot at every start: its writes wait for the next
                // snapshot. Without a changelog it is the whole state; with a
                // TTL its write times are the expiry's clock, and FIFO
                // compaction drops the files written first.
                let ordered =
                    matches!(&spec.engine, StoreEngine::RocksDb(o) if o.ttl.is_some() || o.compaction_style == "fifo");
                if logged && !ordered {
                    cache = cache.defer_engine_writes();
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_api::SystemStream;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[derive(Clone, Default)]
    struct Changelog(Rc<RefCell<Vec<Vec<u8>>>>);

    impl ChangelogSink for Changelog {
        fn send(&mut self, key: &[u8], _value: Option<&[u8]>) -> Result<(), KvError> {
            self.0.borrow_mut().push(key.to_vec());
            Ok(())
        }
    }

    fn spec(ttl: Option<std::time::Duration>) -> StoreSpec {
        StoreSpec {
            name: "counts".into(),
            engine: StoreEngine::RocksDb(gregor_kv::RocksOptions { ttl, ..Default::default() }),
            key_serde: "string".into(),
            msg_serde: "long".into(),
            changelog: Some(SystemStream::new("log", "counts-changelog")),
            cache_entries: usize::MAX,
            cache_bytes: 1 << 20,
            write_batch_size: usize::MAX,
            snapshot_records: 1_000_000,
            bulk_restore_records: 50_000,
        }
    }

    /// A changelogged RocksDB store's commits reach the changelog only; a
    /// snapshot started after them still holds every change (a restart
    /// replays the changelog from the snapshot's offset on, so a change
    /// missing from it would be lost).
    #[test]
    fn a_snapshot_holds_every_change_the_changelog_has_before_it() {
        let base = tempfile::tempdir().unwrap();
        let o = gregor_kv::RocksOptions::default();
        let engine = RocksDbEngine::open(&base.path().join("db"), &o).unwrap();
        let log = Changelog::default();
        let mut store = Opened::Rocks(engine).into_store(&spec(None), 1, Some(Box::new(log.clone())), true);
        for commit in 0..3u8 {
            for k in 0..100u8 {
                store.put(&[k], &[commit]).unwrap();
            }
            store.flush().unwrap();
        }
        assert_eq!(log.0.borrow().len(), 300, "each commit's changes are in the changelog");
        let StoreStack::Cached(cache) = &mut store else { panic!("a RocksDB store is cached") };
        assert_eq!(cache.engine_mut().len_hint(), 0, "RocksDB waits for the snapshot");
        let dir = base.path().join("snap");
        let pending = store.start_snapshot(&dir, true).unwrap().expect("taken when it must be");
        pending.wait().unwrap();
        drop(store);
        let mut snap = RocksDbEngine::open(&dir, &o).unwrap();
        let mut value = Vec::new();
        for k in 0..100u8 {
            assert!(snap.get(&[k], &mut value).unwrap(), "key {k} missing from the snapshot");
            assert_eq!(value, [2], "key {k}: the last commit's value");
        }
    }

    /// A TTL store's write times are its expiry clock: its changes reach
    /// RocksDB at every commit.
    #[test]
    fn a_ttl_store_writes_rocksdb_at_every_commit() {
        let base = tempfile::tempdir().unwrap();
        let o = gregor_kv::RocksOptions { ttl: Some(std::time::Duration::from_secs(3600)), ..Default::default() };
        let engine = RocksDbEngine::open(&base.path().join("db"), &o).unwrap();
        let spec = spec(o.ttl);
        let mut store = Opened::Rocks(engine).into_store(&spec, 1, Some(Box::new(Changelog::default())), true);
        store.put(b"k", b"v").unwrap();
        store.flush().unwrap();
        let StoreStack::Cached(cache) = &mut store else { panic!("a RocksDB store is cached") };
        cache.engine_mut().wait_applied().unwrap();
        let mut value = Vec::new();
        assert!(cache.engine_mut().get(b"k", &mut value).unwrap(), "written at the commit");
    }
}
