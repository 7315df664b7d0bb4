//! The engine contract and the in-memory engine.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Bound;

/// An engine or layer failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KvError(pub String);

/// Changes applied together: `(key, Some(value))` puts, `(key, None)` deletes.
pub type WriteBatch = [(Bytes, Option<Bytes>)];

/// A byte-level key-value engine, ordered by key bytes.
pub trait Engine {
    /// The value of `key`.
    fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, KvError>;
    /// Applies puts and deletes in order.
    fn write_batch(&mut self, batch: &WriteBatch) -> Result<(), KvError>;
    /// Appends up to `limit` entries after `from` and before `to` to `out`, ascending.
    fn scan(
        &mut self,
        from: Bound<&[u8]>,
        to: Option<&[u8]>,
        limit: usize,
        out: &mut Vec<(Bytes, Bytes)>,
    ) -> Result<(), KvError>;
    /// Makes written data durable where the engine can (no-op in memory).
    fn flush(&mut self) -> Result<(), KvError>;
    /// Number of entries (exact or estimated).
    fn len_hint(&self) -> u64;
}

impl<E: Engine + ?Sized> Engine for Box<E> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        (**self).get(key)
    }
    fn write_batch(&mut self, batch: &WriteBatch) -> Result<(), KvError> {
        (**self).write_batch(batch)
    }
    fn scan(
        &mut self,
        from: Bound<&[u8]>,
        to: Option<&[u8]>,
        limit: usize,
        out: &mut Vec<(Bytes, Bytes)>,
    ) -> Result<(), KvError> {
        (**self).scan(from, to, limit, out)
    }
    fn flush(&mut self) -> Result<(), KvError> {
        (**self).flush()
    }
    fn len_hint(&self) -> u64 {
        (**self).len_hint()
    }
}

/// Keeps everything in an ordered map in memory; its contents survive a
/// restart only through the changelog.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    map: BTreeMap<Bytes, Bytes>,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        MemoryEngine::default()
    }
}

impl Engine for MemoryEngine {
    fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        Ok(self.map.get(key).cloned())
    }

    fn write_batch(&mut self, batch: &WriteBatch) -> Result<(), KvError> {
        for (k, v) in batch {
            match v {
                Some(v) => {
                    self.map.insert(k.clone(), v.clone());
                }
                None => {
                    self.map.remove(k);
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
        let upper = to.map_or(Bound::Unbounded, Bound::Excluded);
        if let (Bound::Included(f) | Bound::Excluded(f), Some(t)) = (from, to)
            && f >= t
        {
            return Ok(());
        }
        let range = self.map.range::<[u8], _>((from, upper));
        out.extend(range.take(limit).map(|(k, v)| (k.clone(), v.clone())));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), KvError> {
        Ok(())
    }

    fn len_hint(&self) -> u64 {
        self.map.len() as u64
    }
}
