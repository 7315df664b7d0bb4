//! The engine contract and the in-memory engine.

use bytes::Bytes;
use std::ops::Bound;

/// An engine or layer failure, typed by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// The engine's files are damaged or missing: the store cannot be used
    /// as it is, and must be rebuilt (from its changelog, if it has one).
    #[error("{location}: damaged or missing files: {message}")]
    Corrupt {
        /// The engine's directory.
        location: String,
        /// The engine's own description.
        message: String,
    },
    /// An option the engine does not accept.
    #[error("{0}")]
    InvalidOption(String),
    /// The changelog refused a change (the store's write did not happen
    /// durably; the container must not commit).
    #[error("changelog: {0}")]
    Changelog(String),
    /// Anything else (I/O, a lock held, resources), described.
    #[error("{location}: {operation}: {message}")]
    Engine {
        /// The engine's directory, or `memory`.
        location: String,
        /// What was being done.
        operation: String,
        /// The engine's own description.
        message: String,
    },
}

impl KvError {
    /// Whether the store's files are damaged or missing (rebuilding helps;
    /// retrying does not).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, KvError::Corrupt { .. })
    }
}

/// Changes applied together: `(key, Some(value))` puts, `(key, None)` deletes.
pub type WriteBatch<'a> = [(&'a [u8], Option<&'a [u8]>)];

/// A byte-level key-value engine, ordered by key bytes.
pub trait Engine {
    /// Copies the value of `key` into `out` (cleared first); `false` if absent.
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, KvError>;
    /// Applies puts and deletes in order.
    fn write_batch(&mut self, batch: &WriteBatch<'_>) -> Result<(), KvError>;
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
    /// Writes a consistent copy of the engine's state into the new directory
    /// `dir` (cheaply: hard links where possible).
    ///
    /// # Errors
    /// Engines without local state (memory) cannot.
    fn snapshot(&mut self, dir: &std::path::Path) -> Result<(), KvError> {
        Err(KvError::Engine {
            location: "memory".into(),
            operation: format!("snapshot into {}", dir.display()),
            message: "this engine keeps no local files".into(),
        })
    }
}

impl<E: Engine + ?Sized> Engine for Box<E> {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, KvError> {
        (**self).get(key, out)
    }
    fn write_batch(&mut self, batch: &WriteBatch<'_>) -> Result<(), KvError> {
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
    fn snapshot(&mut self, dir: &std::path::Path) -> Result<(), KvError> {
        (**self).snapshot(dir)
    }
}

/// Keeps everything in a hash map in memory; its contents survive a restart
/// only through the changelog.
///
/// Point reads and writes (the hot path) are hash lookups, and overwriting a
/// key reuses its value buffer, so a steady workload does not allocate. The
/// sorted key order that scans need is built on the first scan after keys
/// were added or removed, and kept until the next such change.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    map: hashbrown::HashMap<Box<[u8]>, Vec<u8>>,
    sorted: Option<Vec<Box<[u8]>>>,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        MemoryEngine::default()
    }
}

impl Engine for MemoryEngine {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, KvError> {
        out.clear();
        match self.map.get(key) {
            Some(v) => {
                out.extend_from_slice(v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn write_batch(&mut self, batch: &WriteBatch<'_>) -> Result<(), KvError> {
        for (k, v) in batch {
            match v {
                Some(v) => {
                    if let Some(slot) = self.map.get_mut(*k) {
                        slot.clear();
                        slot.extend_from_slice(v);
                    } else {
                        self.map.insert(Box::from(*k), v.to_vec());
                        self.sorted = None;
                    }
                }
                None => {
                    if self.map.remove(*k).is_some() {
                        self.sorted = None;
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
        let map = &self.map;
        let sorted = self.sorted.get_or_insert_with(|| {
            let mut keys: Vec<Box<[u8]>> = map.keys().cloned().collect();
            keys.sort_unstable();
            keys
        });
        let start = match from {
            Bound::Included(f) => sorted.partition_point(|k| &k[..] < f),
            Bound::Excluded(f) => sorted.partition_point(|k| &k[..] <= f),
            Bound::Unbounded => 0,
        };
        for k in sorted[start..].iter().take_while(|k| to.is_none_or(|t| &k[..] < t)).take(limit) {
            if let Some(v) = map.get(k) {
                out.push((Bytes::copy_from_slice(k), Bytes::copy_from_slice(v)));
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), KvError> {
        Ok(())
    }

    fn len_hint(&self) -> u64 {
        self.map.len() as u64
    }
}
