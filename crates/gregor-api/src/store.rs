//! Key-value stores as tasks see them.
//!
//! A task gets typed stores ([`Store`]) from its context. Underneath, every
//! store is a [`RawStore`] over bytes built by the runtime from config (an
//! engine, a changelog layer, a write-back cache); `Store` adds the serdes.
//! Iteration is ordered by the *serialized* key bytes, fetches entries in
//! chunks by seeking, and is not a snapshot: writes made while iterating are
//! seen for keys not yet reached.
//!
//! Stores belong to one task and are used from its container's one thread.

use crate::serde::{Data, Serde, SerdeError};
use bytes::Bytes;
use std::cell::RefCell;
use std::ops::Bound;
use std::rc::Rc;
use std::sync::Arc;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A key or value that its serde could not handle.
    #[error("store '{store}': {what}: {source}")]
    Serde {
        /// The store.
        store: String,
        /// Key or value, and the operation.
        what: &'static str,
        /// The serde's error.
        source: SerdeError,
    },
    /// The engine, changelog or cache failed.
    #[error("store '{store}': {message}")]
    Engine {
        /// The store.
        store: String,
        /// What went wrong.
        message: String,
    },
}

/// Byte-level store operations, implemented by the store layers.
pub trait RawStore {
    /// Copies the value of `key` into `out` (cleared first); `false` if absent.
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StoreError>;
    /// Sets a key.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes a key.
    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError>;
    /// Appends to `out`, in ascending key order, up to `limit` entries whose
    /// key is after `from` (per its bound) and before `to` (exclusive; `None`
    /// means no upper bound).
    fn scan(
        &mut self,
        from: Bound<&[u8]>,
        to: Option<&[u8]>,
        limit: usize,
        out: &mut Vec<(Bytes, Bytes)>,
    ) -> Result<(), StoreError>;
    /// Writes buffered changes through to the changelog, and to the engine
    /// unless its writes wait for the next snapshot.
    fn flush(&mut self) -> Result<(), StoreError>;
    /// Starts loading what a read or write of `key` will touch, without
    /// waiting for it ([`Store::prefetch_raw`]); never changes what the
    /// store holds or answers. Does nothing by default.
    fn prefetch(&mut self, _key: &[u8]) {}
}

/// The store operations of Samza's `KeyValueStore`, typed.
pub trait KeyValueStore<K, V> {
    /// The value of `key`.
    fn get(&self, key: &K) -> Result<Option<V>, StoreError>;
    /// The values of several keys, in the same order.
    fn get_all(&self, keys: &[K]) -> Result<Vec<Option<V>>, StoreError>;
    /// Sets `key` to `value`.
    fn put(&self, key: &K, value: &V) -> Result<(), StoreError>;
    /// Sets several keys.
    fn put_all(&self, entries: &[(K, V)]) -> Result<(), StoreError>;
    /// Removes `key`.
    fn delete(&self, key: &K) -> Result<(), StoreError>;
    /// Removes several keys.
    fn delete_all(&self, keys: &[K]) -> Result<(), StoreError>;
    /// Entries with `from <= key < to`, ordered by serialized key.
    fn range(&self, from: &K, to: &K) -> Result<StoreIter<K, V>, StoreError>;
    /// All entries, ordered by serialized key.
    fn all(&self) -> Result<StoreIter<K, V>, StoreError>;
    /// Writes buffered changes through (the runtime also does this at commit).
    fn flush(&self) -> Result<(), StoreError>;
}

/// A typed store handle; clones share the same store.
pub struct Store<K, V> {
    name: Arc<str>,
    raw: Rc<RefCell<dyn RawStore>>,
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
    /// Reused key and value buffers: no allocation per operation.
    buffers: Rc<RefCell<(Vec<u8>, Vec<u8>)>>,
}

impl<K, V> Clone for Store<K, V> {
    fn clone(&self) -> Self {
        Store {
            name: self.name.clone(),
            raw: self.raw.clone(),
            key_serde: self.key_serde.clone(),
            value_serde: self.value_serde.clone(),
            buffers: self.buffers.clone(),
        }
    }
}

impl<K: Data, V: Data> Store<K, V> {
    /// Wraps a byte store with serdes (the runtime does this for tasks).
    pub fn new(
        name: &str,
        raw: Rc<RefCell<dyn RawStore>>,
        key_serde: Arc<dyn Serde<K>>,
        value_serde: Arc<dyn Serde<V>>,
    ) -> Self {
        Store { name: Arc::from(name), raw, key_serde, value_serde, buffers: Rc::default() }
    }

    /// The store's name in the config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts loading, without waiting, what a later `get` or `put` of the
    /// key whose serialized bytes are `key` will read (for the write-back
    /// cache and in-memory stores: the key's index line now, and its entry
    /// once a few more keys were prefetched), so that the lookups of
    /// upcoming messages overlap; see [`crate::StreamTask::prefetch`].
    /// `key` is the key as this store's key serde writes it (for a store
    /// keyed by an input's key with the same serde, the message's key
    /// bytes). A hint only: a wrong or unknown key costs a little time and
    /// nothing else.
    pub fn prefetch_raw(&self, key: &[u8]) {
        self.raw.borrow_mut().prefetch(key);
    }

    fn serde_err(&self, what: &'static str, source: SerdeError) -> StoreError {
        StoreError::Serde { store: self.name.to_string(), what, source }
    }

    fn encode_key(&self, key: &K, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        buf.clear();
        self.key_serde.encode(key, buf).map_err(|e| self.serde_err("encoding a key", e))
    }
}

impl<K: Data, V: Data> KeyValueStore<K, V> for Store<K, V> {
    fn get(&self, key: &K) -> Result<Option<V>, StoreError> {
        let mut bufs = self.buffers.borrow_mut();
        let (kb, vb) = &mut *bufs;
        self.encode_key(key, kb)?;
        if !self.raw.borrow_mut().get(kb, vb)? {
            return Ok(None);
        }
        self.value_serde.decode(vb).map(Some).map_err(|e| self.serde_err("decoding a value", e))
    }

    fn get_all(&self, keys: &[K]) -> Result<Vec<Option<V>>, StoreError> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    fn put(&self, key: &K, value: &V) -> Result<(), StoreError> {
        let mut bufs = self.buffers.borrow_mut();
        let (kb, vb) = &mut *bufs;
        self.encode_key(key, kb)?;
        vb.clear();
        self.value_serde.encode(value, vb).map_err(|e| self.serde_err("encoding a value", e))?;
        self.raw.borrow_mut().put(kb, vb)
    }

    fn put_all(&self, entries: &[(K, V)]) -> Result<(), StoreError> {
        entries.iter().try_for_each(|(k, v)| self.put(k, v))
    }

    fn delete(&self, key: &K) -> Result<(), StoreError> {
        let mut bufs = self.buffers.borrow_mut();
        self.encode_key(key, &mut bufs.0)?;
        self.raw.borrow_mut().delete(&bufs.0)
    }

    fn delete_all(&self, keys: &[K]) -> Result<(), StoreError> {
        keys.iter().try_for_each(|k| self.delete(k))
    }

    fn range(&self, from: &K, to: &K) -> Result<StoreIter<K, V>, StoreError> {
        let (mut f, mut t) = (Vec::new(), Vec::new());
        self.encode_key(from, &mut f)?;
        self.encode_key(to, &mut t)?;
        Ok(StoreIter::new(self.clone(), f, Some(t)))
    }

    fn all(&self) -> Result<StoreIter<K, V>, StoreError> {
        Ok(StoreIter::new(self.clone(), Vec::new(), None))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.raw.borrow_mut().flush()
    }
}

/// An iterator over store entries, fetching them in chunks.
pub struct StoreIter<K, V> {
    store: Store<K, V>,
    from: Vec<u8>,
    inclusive: bool,
    to: Option<Vec<u8>>,
    chunk: std::vec::IntoIter<(Bytes, Bytes)>,
    done: bool,
}

impl<K: Data, V: Data> StoreIter<K, V> {
    const CHUNK: usize = 256;

    fn new(store: Store<K, V>, from: Vec<u8>, to: Option<Vec<u8>>) -> Self {
        StoreIter { store, from, inclusive: true, to, chunk: Vec::new().into_iter(), done: false }
    }

    fn refill(&mut self) -> Result<(), StoreError> {
        let mut out = Vec::with_capacity(Self::CHUNK);
        let from = if self.inclusive { Bound::Included(&self.from[..]) } else { Bound::Excluded(&self.from[..]) };
        self.store.raw.borrow_mut().scan(from, self.to.as_deref(), Self::CHUNK, &mut out)?;
        if out.len() < Self::CHUNK {
            self.done = true;
        }
        if let Some((last, _)) = out.last() {
            self.from = last.to_vec();
            self.inclusive = false;
        }
        self.chunk = out.into_iter();
        Ok(())
    }
}

impl<K: Data, V: Data> Iterator for StoreIter<K, V> {
    type Item = Result<(K, V), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((k, v)) = self.chunk.next() {
                let s = &self.store;
                let key = s.key_serde.decode(&k).map_err(|e| s.serde_err("decoding a key", e));
                let value = s.value_serde.decode(&v).map_err(|e| s.serde_err("decoding a value", e));
                return Some(key.and_then(|k| value.map(|v| (k, v))));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.refill() {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}
