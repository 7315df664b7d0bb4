//! Operator state kept in memory and written to its store (with changelog)
//! at every commit: windows and join buffers, which are read by time range
//! on every watermark and would otherwise scan the store each time.
//!
//! The store is the truth: the memory copy is loaded from it at start-up
//! (after the store was restored to the last commit), and only entries
//! changed since the last commit are written back. This module must never
//! let memory and store disagree at a commit.

use gregor_api::{KeyValueStore, Store, TaskError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::ops::RangeBounds;

/// An `i64` as 8 bytes that sort as the numbers do.
pub(crate) fn time_bytes(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

/// The inverse of [`time_bytes`].
pub(crate) fn bytes_time(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    (u64::from_be_bytes(a) ^ (1 << 63)) as i64
}

/// The memory copy of one operator's store, ordered by key (operators read
/// it by range: windows by closing time, join buffers by key and time).
pub(crate) struct Mirror<V> {
    map: BTreeMap<Vec<u8>, Held<V>>,
    /// Keys changed since the last [`Mirror::flush`]: those whose entry is
    /// marked `changed`, and those removed. A per-message update finds its
    /// entry once; a separate set of changed keys cost a second search,
    /// a third of the window operator's time.
    changed: Vec<Vec<u8>>,
    store: Store<Vec<u8>, Vec<u8>>,
    name: String,
}

struct Held<V> {
    value: V,
    /// Listed in [`Mirror::changed`] since the last flush.
    changed: bool,
}

impl<V: Serialize + DeserializeOwned> Mirror<V> {
    /// Loads the store's entries.
    pub(crate) fn load(store: Store<Vec<u8>, Vec<u8>>) -> Result<Self, TaskError> {
        let name = store.name().to_owned();
        let mut map = BTreeMap::new();
        for entry in store.all()? {
            let (k, v) = entry?;
            let value: V = serde_json::from_slice(&v)
                .map_err(|e| TaskError::msg(format!("store '{name}': an entry does not decode: {e}")))?;
            map.insert(k, Held { value, changed: false });
        }
        Ok(Mirror { map, changed: Vec::new(), store, name })
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&V> {
        self.map.get(key).map(|h| &h.value)
    }

    /// The entries whose keys are in `range`, in key order.
    pub(crate) fn range<R: RangeBounds<Vec<u8>>>(&self, range: R) -> impl Iterator<Item = (&Vec<u8>, &V)> {
        self.map.range(range).map(|(k, h)| (k, &h.value))
    }

    /// Every entry, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &V)> {
        self.map.iter().map(|(k, h)| (k, &h.value))
    }

    pub(crate) fn put(&mut self, key: Vec<u8>, value: V) {
        match self.map.entry(key) {
            Entry::Occupied(mut o) => {
                if !o.get().changed {
                    self.changed.push(o.key().clone());
                }
                o.insert(Held { value, changed: true });
            }
            Entry::Vacant(v) => {
                // Listed twice if it was removed since the last flush; the
                // flush writes it once.
                self.changed.push(v.key().clone());
                v.insert(Held { value, changed: true });
            }
        }
    }

    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let held = self.map.get_mut(key)?;
        if !held.changed {
            held.changed = true;
            self.changed.push(key.to_vec());
        }
        Some(&mut held.value)
    }

    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<V> {
        let held = self.map.remove(key)?;
        if !held.changed {
            self.changed.push(key.to_vec());
        }
        Some(held.value)
    }

    /// Writes what changed since the last call to the store, in key order,
    /// each key once. After an error the keys not written yet stay listed.
    pub(crate) fn flush(&mut self) -> Result<(), TaskError> {
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        changed.dedup();
        for (i, k) in changed.iter().enumerate() {
            if let Err(e) = self.write(k) {
                self.changed.extend(changed.drain(i..));
                return Err(e);
            }
        }
        Ok(())
    }

    /// Writes key `k`'s entry to the store, or deletes it there if removed.
    fn write(&mut self, k: &Vec<u8>) -> Result<(), TaskError> {
        match self.map.get_mut(k) {
            Some(held) if held.changed => {
                let bytes = serde_json::to_vec(&held.value)
                    .map_err(|e| TaskError::msg(format!("store '{}': cannot encode an entry: {e}", self.name)))?;
                self.store.put(k, &bytes)?;
                held.changed = false;
            }
            Some(_) => {} // unchanged: a listed key present again was put, which marks it
            None => self.store.delete(k)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use gregor_api::{RawStore, Serde, SerdeError, StoreError};
    use proptest::prelude::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::ops::Bound;
    use std::rc::Rc;
    use std::sync::Arc;

    /// A byte store in a map, recording how many writes it got (the real
    /// stores are exercised by the Streams model tests).
    #[derive(Default)]
    struct MapStore {
        map: BTreeMap<Vec<u8>, Vec<u8>>,
        writes: usize,
        /// Writes fail once this many were made.
        fail_at: Option<usize>,
    }

    impl MapStore {
        fn count_write(&mut self) -> Result<(), StoreError> {
            if self.fail_at.is_some_and(|n| self.writes >= n) {
                return Err(StoreError::Engine { store: "s".into(), message: "disk full".into() });
            }
            self.writes += 1;
            Ok(())
        }
    }

    impl RawStore for MapStore {
        fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StoreError> {
            out.clear();
            Ok(self.map.get(key).map(|v| out.extend_from_slice(v)).is_some())
        }
        fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
            self.count_write()?;
            self.map.insert(key.to_vec(), value.to_vec());
            Ok(())
        }
        fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
            self.count_write()?;
            self.map.remove(key);
            Ok(())
        }
        fn scan(
            &mut self,
            from: Bound<&[u8]>,
            to: Option<&[u8]>,
            limit: usize,
            out: &mut Vec<(Bytes, Bytes)>,
        ) -> Result<(), StoreError> {
            let to = to.map_or(Bound::Unbounded, Bound::Excluded);
            for (k, v) in self.map.range::<[u8], _>((from, to)).take(limit) {
                out.push((Bytes::copy_from_slice(k), Bytes::copy_from_slice(v)));
            }
            Ok(())
        }
        fn flush(&mut self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    struct Raw;
    impl Serde<Vec<u8>> for Raw {
        fn encode(&self, value: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), SerdeError> {
            out.extend_from_slice(value);
            Ok(())
        }
        fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, SerdeError> {
            Ok(bytes.to_vec())
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u32),
        Add(u8, u32),
        Remove(u8),
        Flush,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..6u8, any::<u32>()).prop_map(|(k, v)| Op::Put(k, v)),
            (0..6u8, 0..100u32).prop_map(|(k, v)| Op::Add(k, v)),
            (0..6u8).prop_map(Op::Remove),
            Just(Op::Flush),
        ]
    }

    /// A flush that fails part-way keeps what it did not write, and the
    /// next one writes it.
    #[test]
    fn a_failed_flush_writes_the_rest_next_time() {
        let raw = Rc::new(RefCell::new(MapStore::default()));
        let store = Store::new("s", raw.clone(), Arc::new(Raw), Arc::new(Raw));
        let mut mirror: Mirror<u32> = Mirror::load(store).unwrap();
        for k in 0..4u8 {
            mirror.put(vec![k], u32::from(k));
        }
        raw.borrow_mut().fail_at = Some(2);
        assert!(mirror.flush().is_err());
        assert_eq!(raw.borrow().map.len(), 2);
        raw.borrow_mut().fail_at = None;
        mirror.flush().unwrap();
        let stored: Vec<Vec<u8>> = raw.borrow().map.keys().cloned().collect();
        assert_eq!(stored, [[0], [1], [2], [3]]);
        assert_eq!(raw.borrow().writes, 4, "each key written once");
    }

    proptest! {
        /// After every flush the store holds exactly what the memory copy
        /// holds, each changed key written once per flush, and a reload
        /// reads it back.
        #[test]
        fn a_flush_leaves_the_store_equal_to_memory(ops in proptest::collection::vec(op(), 0..60)) {
            let raw = Rc::new(RefCell::new(MapStore::default()));
            let store = Store::new("s", raw.clone(), Arc::new(Raw), Arc::new(Raw));
            let mut mirror: Mirror<u32> = Mirror::load(store.clone()).unwrap();
            let mut model: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
            let mut touched = std::collections::BTreeSet::new();
            for op in ops.into_iter().chain([Op::Flush]) {
                match op {
                    Op::Put(k, v) => {
                        mirror.put(vec![k], v);
                        model.insert(vec![k], v);
                        touched.insert(k);
                    }
                    Op::Add(k, n) => {
                        let got = mirror.get_mut(&[k]).map(|v| {
                            *v = v.wrapping_add(n);
                            *v
                        });
                        let want = model.get_mut(&vec![k]).map(|v| {
                            *v = v.wrapping_add(n);
                            *v
                        });
                        prop_assert_eq!(got, want);
                        if want.is_some() {
                            touched.insert(k);
                        }
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(mirror.remove(&[k]), model.remove(&vec![k]));
                        touched.insert(k);
                    }
                    Op::Flush => {
                        raw.borrow_mut().writes = 0;
                        mirror.flush().unwrap();
                        let stored: BTreeMap<Vec<u8>, u32> = raw
                            .borrow()
                            .map
                            .iter()
                            .map(|(k, v)| (k.clone(), serde_json::from_slice(v).unwrap()))
                            .collect();
                        prop_assert_eq!(&stored, &model);
                        prop_assert!(raw.borrow().writes <= touched.len(), "a key written twice in one flush");
                        touched.clear();
                    }
                }
                let held: BTreeMap<Vec<u8>, u32> = mirror.iter().map(|(k, v)| (k.clone(), *v)).collect();
                prop_assert_eq!(&held, &model);
            }
            let reloaded: Mirror<u32> = Mirror::load(store).unwrap();
            let held: BTreeMap<Vec<u8>, u32> = reloaded.iter().map(|(k, v)| (k.clone(), *v)).collect();
            prop_assert_eq!(held, model);
        }
    }

    #[test]
    fn time_bytes_sort_as_times() {
        let times = [i64::MIN, -5, -1, 0, 1, 1000, i64::MAX];
        for w in times.windows(2) {
            assert!(time_bytes(w[0]) < time_bytes(w[1]));
        }
        for t in times {
            assert_eq!(bytes_time(&time_bytes(t)), t);
        }
    }
}
