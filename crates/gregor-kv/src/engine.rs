//! The engine contract: what every store engine offers the layers above.

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
    /// Applies puts and deletes in order (after any deferred batches).
    fn write_batch(&mut self, batch: &WriteBatch<'_>) -> Result<(), KvError>;
    /// Hands a batch to the engine and returns its ticket, without waiting
    /// for the engine to apply it (RocksDB gathers such batches until the
    /// next [`Engine::flush`], then applies them on a thread of its own).
    ///
    /// Until [`Engine::applied`] reaches the ticket, [`Engine::get`] may not
    /// see the batch: the caller must serve reads of its keys itself (the
    /// cache keeps them). Scans and snapshots wait for every deferred batch.
    /// Engines that apply at once (the default) return ticket 0.
    fn write_batch_deferred(&mut self, batch: &WriteBatch<'_>) -> Result<u64, KvError> {
        self.write_batch(batch).map(|()| 0)
    }
    /// Sends `batch` to the changelog only, if this engine is the
    /// changelog layer over an engine whose own copy may wait: the caller
    /// then owes the engine those writes ([`Engine::write_unlogged_deferred`])
    /// before it takes a snapshot, scans or forgets them. `Ok(false)` (the
    /// default): nothing was done; write the batch with
    /// [`Engine::write_batch_deferred`].
    fn log_only(&mut self, _batch: &WriteBatch<'_>) -> Result<bool, KvError> {
        Ok(false)
    }
    /// As [`Engine::write_batch_deferred`], for a batch that
    /// [`Engine::log_only`] sent to the changelog already.
    fn write_unlogged_deferred(&mut self, batch: &WriteBatch<'_>) -> Result<u64, KvError> {
        self.write_batch_deferred(batch)
    }
    /// The ticket up to which deferred batches are applied.
    fn applied(&self) -> u64 {
        u64::MAX
    }
    /// Whether deferred batches wait to be handed over because the engine
    /// is behind (RocksDB: its writer thread's queue is full), so that
    /// more of them could soon make a write wait. Work that can wait (the
    /// cache writing ahead of a snapshot) holds back meanwhile.
    fn behind(&self) -> bool {
        false
    }
    /// Waits until every deferred batch is applied.
    fn wait_applied(&mut self) -> Result<(), KvError> {
        Ok(())
    }
    /// Appends up to `limit` entries after `from` and before `to` to `out`, ascending.
    fn scan(
        &mut self,
        from: Bound<&[u8]>,
        to: Option<&[u8]>,
        limit: usize,
        out: &mut Vec<(Bytes, Bytes)>,
    ) -> Result<(), KvError>;
    /// Makes written data durable where the engine can (no-op in memory),
    /// and starts applying the deferred batches it gathered.
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
    /// Starts what [`Engine::snapshot`] does, of the state after every
    /// write made so far, and returns without waiting for it: later writes
    /// are not in the copy. The default takes it before returning.
    /// `Ok(None)` if the engine cannot start it without waiting (RocksDB:
    /// its writer thread is behind): nothing was started, and the caller
    /// asks again later or calls [`Engine::snapshot`].
    ///
    /// # Errors
    /// As [`Engine::snapshot`], for what fails before the work is handed
    /// over; later failures arrive through the [`PendingSnapshot`].
    fn start_snapshot(&mut self, dir: &std::path::Path) -> Result<Option<PendingSnapshot>, KvError> {
        self.snapshot(dir).map(|()| Some(PendingSnapshot::taken()))
    }
}

/// A snapshot an engine is taking in the background.
pub struct PendingSnapshot {
    location: String,
    /// `None`: taken already.
    outcome: Option<std::sync::mpsc::Receiver<Result<(), String>>>,
    /// The writer taking it, told when someone waits for it (it then no
    /// longer defers to background work).
    writer: Option<crate::rocks::Awaitable>,
}

impl PendingSnapshot {
    /// A snapshot taken before it was handed over.
    pub fn taken() -> Self {
        PendingSnapshot { location: String::new(), outcome: None, writer: None }
    }

    /// A snapshot whose outcome arrives on `outcome` (engine directory
    /// `location`), taken by `writer`.
    pub(crate) fn pending(
        location: String,
        outcome: std::sync::mpsc::Receiver<Result<(), String>>,
        writer: crate::rocks::Awaitable,
    ) -> Self {
        PendingSnapshot { location, outcome: Some(outcome), writer: Some(writer) }
    }

    /// Tells the engine that it is waited for from now on: taken in the
    /// background it yields to other work (RocksDB: its writer thread
    /// takes turns with the other stores' writers), which a caller about to
    /// wait for several snapshots must not let it do. [`Self::wait`] does
    /// this itself.
    pub fn expedite(&mut self) {
        if let Some(writer) = &mut self.writer {
            writer.expedite();
        }
    }

    /// `None` while it is being taken; then whether it was.
    pub fn outcome(&mut self) -> Option<Result<(), KvError>> {
        use std::sync::mpsc::TryRecvError;
        let Some(rx) = &self.outcome else { return Some(Ok(())) };
        match rx.try_recv() {
            Ok(r) => Some(r.map_err(|m| self.failed(m))),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(self.failed("the engine stopped before taking it".into()))),
        }
    }

    /// Waits until it is taken.
    ///
    /// # Errors
    /// The engine failed to take it.
    pub fn wait(mut self) -> Result<(), KvError> {
        self.expedite();
        let Some(rx) = &self.outcome else { return Ok(()) };
        match rx.recv() {
            Ok(r) => r.map_err(|m| self.failed(m)),
            Err(_) => Err(self.failed("the engine stopped before taking it".into())),
        }
    }

    fn failed(&self, message: String) -> KvError {
        KvError::Engine { location: self.location.clone(), operation: "snapshot".into(), message }
    }
}

impl<E: Engine + ?Sized> Engine for Box<E> {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, KvError> {
        (**self).get(key, out)
    }
    fn write_batch(&mut self, batch: &WriteBatch<'_>) -> Result<(), KvError> {
        (**self).write_batch(batch)
    }
    fn write_batch_deferred(&mut self, batch: &WriteBatch<'_>) -> Result<u64, KvError> {
        (**self).write_batch_deferred(batch)
    }
    fn log_only(&mut self, batch: &WriteBatch<'_>) -> Result<bool, KvError> {
        (**self).log_only(batch)
    }
    fn write_unlogged_deferred(&mut self, batch: &WriteBatch<'_>) -> Result<u64, KvError> {
        (**self).write_unlogged_deferred(batch)
    }
    fn applied(&self) -> u64 {
        (**self).applied()
    }
    fn behind(&self) -> bool {
        (**self).behind()
    }
    fn wait_applied(&mut self) -> Result<(), KvError> {
        (**self).wait_applied()
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
    fn start_snapshot(&mut self, dir: &std::path::Path) -> Result<Option<PendingSnapshot>, KvError> {
        (**self).start_snapshot(dir)
    }
}
