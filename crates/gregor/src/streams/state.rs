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
use std::collections::{BTreeMap, BTreeSet};

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

pub(crate) struct Mirror<V> {
    pub map: BTreeMap<Vec<u8>, V>,
    dirty: BTreeSet<Vec<u8>>,
    store: Store<Vec<u8>, Vec<u8>>,
    name: String,
}

impl<V: Serialize + DeserializeOwned> Mirror<V> {
    /// Loads the store's entries.
    pub(crate) fn load(store: Store<Vec<u8>, Vec<u8>>) -> Result<Self, TaskError> {
        let name = store.name().to_owned();
        let mut map = BTreeMap::new();
        for entry in store.all()? {
            let (k, v) = entry?;
            let v: V = serde_json::from_slice(&v)
                .map_err(|e| TaskError::msg(format!("store '{name}': an entry does not decode: {e}")))?;
            map.insert(k, v);
        }
        Ok(Mirror { map, dirty: BTreeSet::new(), store, name })
    }

    pub(crate) fn put(&mut self, key: Vec<u8>, value: V) {
        self.dirty.insert(key.clone());
        self.map.insert(key, value);
    }

    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let v = self.map.get_mut(key)?;
        if !self.dirty.contains(key) {
            self.dirty.insert(key.to_vec());
        }
        Some(v)
    }

    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<V> {
        let v = self.map.remove(key)?;
        self.dirty.insert(key.to_vec());
        Some(v)
    }

    /// Writes what changed since the last call to the store.
    pub(crate) fn flush(&mut self) -> Result<(), TaskError> {
        for k in std::mem::take(&mut self.dirty) {
            match self.map.get(&k) {
                Some(v) => {
                    let bytes = serde_json::to_vec(v)
                        .map_err(|e| TaskError::msg(format!("store '{}': cannot encode an entry: {e}", self.name)))?;
                    self.store.put(&k, &bytes)?;
                }
                None => self.store.delete(&k)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
