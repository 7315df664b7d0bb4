//! The write-back cache: the top byte layer of every store.
//!
//! Reads of cached keys never reach the engine; writes mark entries dirty and
//! reach the engine (and so the changelog) only when `write.batch.size` dirty
//! entries accumulate, when a dirty entry would be evicted, before a scan,
//! and at `flush` (every commit). Ten updates of one key between flushes cost
//! one engine write and one changelog record.

use crate::engine::{Engine, KvError};
use bytes::Bytes;
use gregor_api::{RawStore, StoreError};
use lru::LruCache;
use std::ops::Bound;

#[derive(Clone)]
struct Entry {
    value: Option<Bytes>,
    dirty: bool,
}

/// A cached store over an engine, implementing the task-facing [`RawStore`].
pub struct CachedStore<E> {
    name: String,
    engine: E,
    cache: Option<LruCache<Bytes, Entry>>,
    dirty: Vec<Bytes>,
    batch_size: usize,
    batch: Vec<(Bytes, Option<Bytes>)>,
}

impl<E: Engine> CachedStore<E> {
    /// A store called `name` over `engine`, caching up to `cache_entries`
    /// keys (0 disables the cache) and writing dirty entries in batches of
    /// `batch_size`.
    pub fn new(name: &str, engine: E, cache_entries: usize, batch_size: usize) -> Self {
        CachedStore {
            name: name.to_owned(),
            engine,
            cache: std::num::NonZeroUsize::new(cache_entries).map(LruCache::new),
            dirty: Vec::new(),
            batch_size: batch_size.max(1),
            batch: Vec::new(),
        }
    }

    /// The engine underneath (for restores and snapshots).
    pub fn engine_mut(&mut self) -> &mut E {
        &mut self.engine
    }

    fn err(&self, e: KvError) -> StoreError {
        StoreError::Engine { store: self.name.clone(), message: e.0 }
    }

    /// Writes every dirty entry to the engine in one batch.
    fn write_dirty(&mut self) -> Result<(), StoreError> {
        let Some(cache) = self.cache.as_mut() else {
            return Ok(());
        };
        self.batch.clear();
        for key in self.dirty.drain(..) {
            if let Some(entry) = cache.peek_mut(&key)
                && entry.dirty
            {
                entry.dirty = false;
                self.batch.push((key, entry.value.clone()));
            }
        }
        if self.batch.is_empty() {
            return Ok(());
        }
        let result = self.engine.write_batch(&self.batch);
        self.batch.clear();
        result.map_err(|e| self.err(e))
    }

    fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        let key = Bytes::copy_from_slice(key);
        let value = value.map(Bytes::copy_from_slice);
        let Some(cache) = self.cache.as_mut() else {
            let result = self.engine.write_batch(&[(key, value)]);
            return result.map_err(|e| self.err(e));
        };
        // Never let the cache evict a dirty entry: write dirty ones first.
        if cache.len() == cache.cap().get() && !cache.contains(&key) && cache.peek_lru().is_some_and(|(_, e)| e.dirty) {
            self.write_dirty()?;
        }
        let Some(cache) = self.cache.as_mut() else {
            return Ok(());
        };
        let was_dirty = cache.peek(&key).is_some_and(|e| e.dirty);
        cache.put(key.clone(), Entry { value, dirty: true });
        if !was_dirty {
            self.dirty.push(key);
        }
        if self.dirty.len() >= self.batch_size {
            self.write_dirty()?;
        }
        Ok(())
    }
}

impl<E: Engine> RawStore for CachedStore<E> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        if let Some(entry) = self.cache.as_mut().and_then(|c| c.get(key)) {
            return Ok(entry.value.clone());
        }
        let value = self.engine.get(key).map_err(|e| self.err(e))?;
        if let Some(cache) = self.cache.as_mut()
            && (cache.len() < cache.cap().get() || cache.peek_lru().is_none_or(|(_, e)| !e.dirty))
        {
            cache.put(Bytes::copy_from_slice(key), Entry { value: value.clone(), dirty: false });
        }
        Ok(value)
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
        self.write_dirty()?;
        self.engine.flush().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests;
