//! The cached store behaves like a plain map, whatever the cache size, and
//! coalesces writes before the changelog.

use super::*;
use crate::{ChangelogSink, LoggedEngine, MemoryEngine};
use proptest::prelude::*;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

#[derive(Clone, Default)]
struct Recorder(Rc<RefCell<Vec<(Vec<u8>, Option<Vec<u8>>)>>>);

impl ChangelogSink for Recorder {
    fn send(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), KvError> {
        self.0.borrow_mut().push((key.to_vec(), value.map(<[u8]>::to_vec)));
        Ok(())
    }
}

/// An engine that applies deferred batches only when told to (as RocksDB's
/// writer thread does, some time later): reads see applied batches only.
struct Deferring {
    engine: MemoryEngine,
    queued: std::collections::VecDeque<Vec<(Vec<u8>, Option<Vec<u8>>)>>,
    applied: u64,
    /// Reads that reached the engine.
    reads: u32,
    /// What [`Engine::behind`] answers.
    behind: bool,
}

impl Deferring {
    fn new() -> Self {
        Deferring { engine: MemoryEngine::new(), queued: Default::default(), applied: 0, reads: 0, behind: false }
    }
    fn apply_one(&mut self) {
        if let Some(b) = self.queued.pop_front() {
            let slices: Vec<(&[u8], Option<&[u8]>)> = b.iter().map(|(k, v)| (&k[..], v.as_deref())).collect();
            self.engine.write_batch(&slices).unwrap();
            self.applied += 1;
        }
    }
}

impl Engine for Deferring {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, KvError> {
        self.reads += 1;
        self.engine.get(key, out)
    }
    fn write_batch(&mut self, batch: &crate::WriteBatch<'_>) -> Result<(), KvError> {
        self.wait_applied()?;
        self.engine.write_batch(batch)
    }
    fn write_batch_deferred(&mut self, batch: &crate::WriteBatch<'_>) -> Result<u64, KvError> {
        self.queued.push_back(batch.iter().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect());
        Ok(self.applied + self.queued.len() as u64)
    }
    fn applied(&self) -> u64 {
        self.applied
    }
    fn behind(&self) -> bool {
        self.behind
    }
    fn wait_applied(&mut self) -> Result<(), KvError> {
        while !self.queued.is_empty() {
            self.apply_one();
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
        self.wait_applied()?;
        self.engine.scan(from, to, limit, out)
    }
    fn flush(&mut self) -> Result<(), KvError> {
        Ok(())
    }
    fn len_hint(&self) -> u64 {
        self.engine.len_hint()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, Vec<u8>),
    Delete(u8),
    Get(u8),
    Scan(u8, u8),
    Flush,
    /// Writes out up to this many dirty entries (as a waiting container does).
    WriteSome(usize),
    /// The engine applies its oldest deferred batch.
    Apply,
    /// What a commit that takes a snapshot does: flush, write what the
    /// engine is owed, and let it apply everything; the engine then holds
    /// the state.
    Snapshot,
    /// Idle write-outs also write what the engine is owed, or stop to.
    StoreAhead(bool),
    /// A hint that changes nothing the store answers.
    Prefetch(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // Values from empty to past the inline size, so buffers spill and shrink.
        4 => (0u8..20, proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(k, v)| Op::Put(k, v)),
        1 => (0u8..20).prop_map(Op::Delete),
        3 => (0u8..20).prop_map(Op::Get),
        2 => (0u8..24).prop_map(Op::Prefetch),
        1 => (0u8..20, 0u8..21).prop_map(|(a, b)| Op::Scan(a, b)),
        1 => Just(Op::Flush),
        1 => (0usize..4).prop_map(Op::WriteSome),
        2 => Just(Op::Apply),
        1 => Just(Op::Snapshot),
        1 => any::<bool>().prop_map(Op::StoreAhead),
    ]
}

proptest! {
    #[test]
    fn behaves_like_a_map_and_the_changelog_replays_to_the_same_state(ops in proptest::collection::vec(op(), 1..200), cache in 0usize..8, bytes in 0usize..2000, batch in 1usize..6, empty in any::<bool>(), defer in any::<bool>()) {
        let log = Recorder::default();
        let engine = LoggedEngine::new(Deferring::new(), Box::new(log.clone()));
        // Entry and byte limits both bound the cache, whichever is hit first.
        let mut store = CachedStore::new("s", engine, CacheLimits { entries: cache, bytes, dirty: batch });
        if empty {
            // True here: the engine starts empty.
            store = store.assume_empty_engine();
        }
        if defer {
            store = store.defer_engine_writes();
        }
        let engine_state = |store: &mut CachedStore<LoggedEngine<Deferring>>| {
            store.engine_mut().wait_applied().unwrap();
            let mut all = Vec::new();
            store.engine_mut().scan(Bound::Unbounded, None, usize::MAX, &mut all).unwrap();
            all.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect::<BTreeMap<Vec<u8>, Vec<u8>>>()
        };
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for op in &ops {
            match op {
                Op::Put(k, v) => { store.put(&[*k], v).unwrap(); model.insert(vec![*k], v.clone()); }
                Op::Delete(k) => { store.delete(&[*k]).unwrap(); model.remove(&vec![*k]); }
                Op::Prefetch(k) => store.prefetch(&[*k]),
                Op::Get(k) => {
                    let mut out = Vec::new();
                    let found = store.get(&[*k], &mut out).unwrap();
                    prop_assert_eq!(found.then_some(out), model.get(&vec![*k]).cloned());
                }
                Op::Scan(a, b) => {
                    let mut out = Vec::new();
                    store.scan(Bound::Included(&[*a]), Some(&[*b]), 100, &mut out).unwrap();
                    let got: Vec<_> = out.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
                    let want: Vec<_> = model.range(vec![*a]..).take_while(|(k, _)| k[..] < [*b][..]).map(|(k, v)| (k.clone(), v.clone())).collect();
                    prop_assert_eq!(got, want);
                }
                Op::Flush => {
                    store.flush().unwrap();
                    if store.complete {
                        prop_assert_eq!(store.entries(), model.len() as u64, "exact while every key is cached");
                    }
                }
                Op::WriteSome(n) => { store.write_some(*n).unwrap(); }
                Op::Apply => store.engine_mut().engine_mut().apply_one(),
                Op::StoreAhead(on) => store.store_ahead(*on),
                Op::Snapshot => {
                    store.flush().unwrap();
                    store.store_unstored().unwrap();
                    prop_assert_eq!(&engine_state(&mut store), &model);
                }
            }
        }
        store.flush().unwrap();
        store.store_unstored().unwrap();
        // Once every deferred write is applied, the engine holds the state.
        prop_assert_eq!(&engine_state(&mut store), &model);
        let mut replayed: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for (k, v) in log.0.borrow().iter() {
            match v { Some(v) => { replayed.insert(k.clone(), v.clone()); } None => { replayed.remove(k); } }
        }
        prop_assert_eq!(replayed, model);
    }
}

/// A cache of `entries` over a changelog (`log`) and an engine that
/// queues deferred writes, its engine writes waiting for a snapshot.
fn deferring(entries: usize, log: &Recorder) -> CachedStore<LoggedEngine<Deferring>> {
    let engine = LoggedEngine::new(Deferring::new(), Box::new(log.clone()));
    let limits = CacheLimits { entries, bytes: 1 << 20, dirty: usize::MAX };
    CachedStore::new("s", engine, limits).defer_engine_writes()
}

/// With deferred engine writes, a commit's flush reaches the changelog
/// only; the engine gets each key once, when a snapshot needs it.
#[test]
fn deferred_engine_writes_wait_for_the_snapshot_and_write_each_key_once() {
    let log = Recorder::default();
    let mut store = deferring(100, &log);
    for commit in 0..5u8 {
        store.put(b"hot", &[commit]).unwrap();
        store.put(&[b'k', commit], b"v").unwrap();
        store.flush().unwrap();
    }
    assert_eq!(log.0.borrow().len(), 10, "every commit's changes are in the changelog");
    assert!(store.engine_mut().engine_mut().queued.is_empty(), "no engine write before the snapshot");
    let mut out = Vec::new();
    assert!(store.get(b"hot", &mut out).unwrap() && out == [4], "read from the cache");
    store.store_unstored().unwrap();
    let queued = &store.engine_mut().engine_mut().queued;
    assert_eq!(queued.len(), 1, "one batch");
    assert_eq!(queued[0].len(), 6, "each key once");
    assert!(queued[0].contains(&(b"hot".to_vec(), Some(vec![4]))), "the newest value");
}

/// The store's size is exact while the cache holds every key, even with
/// the engine's writes waiting for a snapshot; once it evicts, it is the
/// engine's estimate or the cached keys, whichever is more.
#[test]
fn entries_are_exact_while_the_cache_holds_every_key() {
    let mut store = deferring(4, &Recorder::default()).assume_empty_engine();
    for k in 0..3u8 {
        store.put(&[k], b"v").unwrap();
    }
    store.delete(&[1]).unwrap();
    store.delete(&[9]).unwrap(); // never there
    store.put(&[0], b"w").unwrap();
    store.flush().unwrap();
    assert_eq!(store.entries(), 2);
    for k in 10..20u8 {
        store.put(&[k], b"v").unwrap(); // evicts
    }
    store.flush().unwrap();
    store.engine_mut().wait_applied().unwrap();
    assert!(store.entries() >= 4, "at least the cached keys: {}", store.entries());
}

/// Near a snapshot, idle write-outs write the oldest owed entries, after
/// the dirty ones are logged.
#[test]
fn idle_write_outs_store_ahead_of_a_snapshot() {
    let log = Recorder::default();
    let mut store = deferring(100, &log);
    for k in [b"a", b"b", b"c"] {
        store.put(k, b"1").unwrap();
    }
    store.flush().unwrap();
    store.put(b"d", b"1").unwrap();
    assert!(store.write_some(10).unwrap(), "logs d");
    assert!(!store.write_some(10).unwrap(), "owed entries wait while no snapshot is near");
    store.store_ahead(true);
    store.engine_mut().engine_mut().behind = true;
    assert!(!store.write_some(2).unwrap(), "no writing ahead while the engine is behind");
    store.engine_mut().engine_mut().behind = false;
    assert!(store.write_some(2).unwrap());
    let queued = |store: &mut CachedStore<LoggedEngine<Deferring>>| store.engine_mut().engine_mut().queued.clone();
    let key = |k: &[u8]| (k.to_vec(), Some(b"1".to_vec()));
    assert_eq!(queued(&mut store), vec![vec![key(b"a"), key(b"b")]], "the oldest two");
    assert!(store.write_some(10).unwrap());
    assert!(!store.write_some(10).unwrap(), "nothing left");
    assert_eq!(queued(&mut store)[1], vec![key(b"c"), key(b"d")]);
    assert_eq!(log.0.borrow().len(), 4);
}

#[test]
fn repeated_writes_to_a_key_reach_the_changelog_once_per_flush() {
    let log = Recorder::default();
    let engine = LoggedEngine::new(MemoryEngine::new(), Box::new(log.clone()));
    let mut store = CachedStore::new("s", engine, CacheLimits { entries: 100, bytes: 1 << 20, dirty: 50 });
    for i in 0..10u8 {
        store.put(b"hot", &[i]).unwrap();
    }
    store.flush().unwrap();
    assert_eq!(*log.0.borrow(), vec![(b"hot".to_vec(), Some(vec![9]))]);
}

#[test]
fn the_byte_limit_bounds_the_cache_and_dirty_entries_wait_for_the_flush() {
    let log = Recorder::default();
    let engine = LoggedEngine::new(MemoryEngine::new(), Box::new(log.clone()));
    // An entry costs its slot (8-byte keys and values are held inline).
    let entry = SLOT_OVERHEAD;
    let limits = CacheLimits { entries: usize::MAX, bytes: 100 * entry, dirty: usize::MAX };
    let mut store = CachedStore::new("s", engine, limits);
    for round in 0..10u8 {
        for i in 0..24u32 {
            store.put(&i.to_be_bytes(), &[round; 8]).unwrap();
        }
    }
    assert!(
        log.0.borrow().is_empty(),
        "24 dirty entries are below a quarter of the cache: nothing written before the flush"
    );
    store.flush().unwrap();
    assert_eq!(log.0.borrow().len(), 24, "one record per key per flush");
    for i in 0..1000u32 {
        store.put(&i.to_be_bytes(), &[1; 8]).unwrap();
    }
    assert_eq!(store.slots.len(), 100, "the byte limit stopped the growth");
    assert!(store.bytes <= limits.bytes, "{} bytes cached", store.bytes);
    store.flush().unwrap();
    let mut out = Vec::new();
    assert!(store.get(&7u32.to_be_bytes(), &mut out).unwrap() && out == [1; 8]);
}

#[test]
fn dirty_entries_are_written_once_they_fill_a_quarter_of_the_cache() {
    let log = Recorder::default();
    let engine = LoggedEngine::new(MemoryEngine::new(), Box::new(log.clone()));
    let limits = CacheLimits { entries: usize::MAX, bytes: 100 * SLOT_OVERHEAD, dirty: usize::MAX };
    let mut store = CachedStore::new("s", engine, limits);
    for i in 0..24u32 {
        store.put(&i.to_be_bytes(), &[0; 8]).unwrap();
    }
    assert!(log.0.borrow().is_empty());
    store.put(&24u32.to_be_bytes(), &[0; 8]).unwrap();
    assert_eq!(log.0.borrow().len(), 25, "the 25th dirty entry of a 100-entry cache writes them all");
    assert!(store.dirty.is_empty());
}

#[test]
fn a_waiting_container_writes_out_the_oldest_dirty_entries_first() {
    let log = Recorder::default();
    let engine = LoggedEngine::new(MemoryEngine::new(), Box::new(log.clone()));
    let mut store = CachedStore::new("s", engine, CacheLimits { entries: 100, bytes: 1 << 20, dirty: usize::MAX });
    for k in [b"a", b"b", b"c"] {
        store.put(k, b"1").unwrap();
    }
    assert!(store.write_some(2).unwrap());
    assert_eq!(log.0.borrow().iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), vec![b"a".to_vec(), b"b".to_vec()]);
    store.put(b"a", b"2").unwrap(); // dirty again, now the newest
    assert!(store.write_some(1).unwrap());
    assert_eq!(log.0.borrow().last().unwrap(), &(b"c".to_vec(), Some(b"1".to_vec())));
    store.flush().unwrap();
    assert_eq!(log.0.borrow().last().unwrap(), &(b"a".to_vec(), Some(b"2".to_vec())));
    assert!(!store.write_some(10).unwrap(), "nothing left to write");
    assert_eq!(log.0.borrow().len(), 4);
}

#[test]
fn a_store_over_an_empty_engine_reads_it_only_once_the_cache_evicted() {
    let limits = CacheLimits { entries: 4, bytes: usize::MAX, dirty: usize::MAX };
    let mut store = CachedStore::new("s", Deferring::new(), limits).assume_empty_engine();
    let mut out = Vec::new();
    for k in 0..4u8 {
        assert!(!store.get(&[k], &mut out).unwrap());
        store.put(&[k], &[k]).unwrap();
    }
    assert_eq!(store.engine_mut().reads, 0, "every key is cached: new keys are absent without a read");
    for k in 4..8u8 {
        store.put(&[k], &[k]).unwrap(); // evicts
    }
    for k in 0..8u8 {
        assert!(store.get(&[k], &mut out).unwrap() && out == [k], "key {k}");
    }
    assert!(store.engine_mut().reads > 0, "evicted keys are read back from the engine");
}
