//! The changelog layer: every change that reaches the engine also goes to
//! the store's changelog partition, so the store can be rebuilt elsewhere.
//!
//! Changes are handed to the sink in the order they are applied; the sink
//! (the runtime's producer) batches them and makes them durable at commit,
//! before the checkpoint that records the changelog offset is written.

use crate::engine::{Engine, KvError, WriteBatch};
use bytes::Bytes;
use std::ops::Bound;

/// Where changelog records go (the runtime's producer for the changelog partition).
pub trait ChangelogSink {
    /// Queues one change; `None` is a deletion (a tombstone).
    fn send(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), KvError>;
}

/// An engine whose writes are also sent to a changelog.
pub struct LoggedEngine<E> {
    engine: E,
    sink: Box<dyn ChangelogSink>,
}

impl<E: Engine> LoggedEngine<E> {
    /// Logs `engine`'s writes to `sink`.
    pub fn new(engine: E, sink: Box<dyn ChangelogSink>) -> Self {
        LoggedEngine { engine, sink }
    }

    /// The engine underneath.
    pub fn engine_mut(&mut self) -> &mut E {
        &mut self.engine
    }
}

impl<E: Engine> Engine for LoggedEngine<E> {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, KvError> {
        self.engine.get(key, out)
    }

    fn write_batch(&mut self, batch: &WriteBatch<'_>) -> Result<(), KvError> {
        self.engine.write_batch(batch)?;
        for (k, v) in batch {
            self.sink.send(k, *v)?;
        }
        Ok(())
    }

    fn write_batch_deferred(&mut self, batch: &WriteBatch<'_>) -> Result<u64, KvError> {
        let ticket = self.engine.write_batch_deferred(batch)?;
        for (k, v) in batch {
            self.sink.send(k, *v)?;
        }
        Ok(ticket)
    }

    /// Whether the engine's copy may wait is the caller's call (the cache
    /// of a RocksDB store, which the runtime rebuilds from a snapshot and
    /// the changelog at every start, lets it wait for the next snapshot).
    fn log_only(&mut self, batch: &WriteBatch<'_>) -> Result<bool, KvError> {
        for (k, v) in batch {
            self.sink.send(k, *v)?;
        }
        Ok(true)
    }

    fn write_unlogged_deferred(&mut self, batch: &WriteBatch<'_>) -> Result<u64, KvError> {
        self.engine.write_batch_deferred(batch)
    }

    fn applied(&self) -> u64 {
        self.engine.applied()
    }

    fn behind(&self) -> bool {
        self.engine.behind()
    }

    fn wait_applied(&mut self) -> Result<(), KvError> {
        self.engine.wait_applied()
    }

    fn scan(
        &mut self,
        from: Bound<&[u8]>,
        to: Option<&[u8]>,
        limit: usize,
        out: &mut Vec<(Bytes, Bytes)>,
    ) -> Result<(), KvError> {
        self.engine.scan(from, to, limit, out)
    }

    fn flush(&mut self) -> Result<(), KvError> {
        self.engine.flush()
    }

    fn len_hint(&self) -> u64 {
        self.engine.len_hint()
    }

    fn snapshot(&mut self, dir: &std::path::Path) -> Result<(), KvError> {
        self.engine.snapshot(dir)
    }

    fn start_snapshot(&mut self, dir: &std::path::Path) -> Result<Option<crate::PendingSnapshot>, KvError> {
        self.engine.start_snapshot(dir)
    }
}
