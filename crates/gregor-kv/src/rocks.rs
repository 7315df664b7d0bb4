//! The RocksDB engine (gregor's default), one database per store per task.
//!
//! With a changelog, the changelog is the source of truth, so RocksDB's own
//! write-ahead log is off by default (`wal: false`): a crash loses at most
//! unflushed memtables, which the restore replays from the changelog.
//! Consistent local snapshots (RocksDB checkpoints: hard links) let a
//! restarted task reuse its state instead of replaying the whole changelog.
//!
//! Deferred writes ([`Engine::write_batch_deferred`], which the cache uses)
//! are gathered until the next `flush` (a commit) and then applied by a
//! thread per database ([`writer`]), in order, large batches as ingested SST
//! files; scans, snapshots and immediate writes wait for them first.

mod background;
mod bulk;
mod turns;
mod writer;

pub(crate) use writer::Awaitable;

/// Bytes of keys and values staged before they are handed to the writer
/// thread whatever their count: bounds the memory they hold (and keeps a
/// batch's 32-bit offsets far from overflowing).
const STAGE_BYTES: usize = 64 << 20;

use crate::engine::{Engine, KvError, WriteBatch};
use bytes::Bytes;
use rocksdb::{
    BlockBasedOptions, Cache, DB, DBCompactionStyle, DBCompressionType, Direction, ErrorKind, IteratorMode, Options,
    WriteOptions,
};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use writer::{OwnedBatch, Writer};

/// RocksDB settings (Samza's `stores.<name>.rocksdb.*` and `container.*` keys).
#[derive(Debug, Clone)]
pub struct RocksOptions {
    /// Block cache size in bytes.
    pub block_cache_bytes: usize,
    /// Memtable size in bytes.
    pub write_buffer_bytes: usize,
    /// Number of memtables.
    pub write_buffers: i32,
    /// `none`, `snappy`, `zlib`, `bzip2`, `lz4`, `lz4hc` or `zstd`.
    pub compression: String,
    /// Data block size in bytes.
    pub block_size: usize,
    /// `level`, `universal` or `fifo`.
    pub compaction_style: String,
    /// Open file limit (-1: unlimited).
    pub max_open_files: i32,
    /// Entries older than this may be dropped by compaction.
    pub ttl: Option<Duration>,
    /// RocksDB's own write-ahead log.
    pub wal: bool,
    /// Deferred batches of at least this many entries are ingested as SST
    /// files instead of inserted into the memtable (not in TTL stores).
    pub ingest_min_entries: usize,
}

impl Default for RocksOptions {
    fn default() -> Self {
        RocksOptions {
            block_cache_bytes: 100 << 20,
            write_buffer_bytes: 32 << 20,
            write_buffers: 3,
            compression: "snappy".into(),
            block_size: 4096,
            compaction_style: "level".into(),
            max_open_files: -1,
            ttl: None,
            wal: false,
            ingest_min_entries: 20_000,
        }
    }
}

/// Checks a compression name.
pub fn compression(name: &str) -> Option<DBCompressionType> {
    Some(match name {
        "none" => DBCompressionType::None,
        "snappy" => DBCompressionType::Snappy,
        "zlib" => DBCompressionType::Zlib,
        "bzip2" => DBCompressionType::Bz2,
        "lz4" => DBCompressionType::Lz4,
        "lz4hc" => DBCompressionType::Lz4hc,
        "zstd" => DBCompressionType::Zstd,
        _ => return None,
    })
}

/// A failure of a bulk load's run (see `bulk`).
fn classify_bulk(path: &Path, message: String) -> KvError {
    KvError::Engine { location: format!("RocksDB in {}", path.display()), operation: "bulk load".into(), message }
}

/// Checks a compaction style name.
pub fn compaction_style(name: &str) -> Option<DBCompactionStyle> {
    Some(match name {
        "level" => DBCompactionStyle::Level,
        "universal" => DBCompactionStyle::Universal,
        "fifo" => DBCompactionStyle::Fifo,
        _ => return None,
    })
}

/// RocksDB's background jobs (flushes and compactions) at once, per
/// process: RocksDB runs up to a quarter of them (at least one) as flushes
/// and the rest as compactions.
const BACKGROUND_JOBS: i32 = 4;

/// A RocksDB database used as a store engine.
pub struct RocksDbEngine {
    /// Declared before `db`: dropping it applies the queued batches first.
    writer: Option<Writer>,
    db: Arc<DB>,
    path: PathBuf,
    write: WriteOptions,
    wal: bool,
    /// Ticket of the last deferred batch handed to the writer thread.
    submitted: u64,
    /// Deferred batches not yet handed to the writer thread (ticket
    /// `submitted + 1`): gathered into one, so that the small batches a
    /// container writes out while it waits for input reach RocksDB as one
    /// large batch (ingested, and with each key's repeated writes reduced to
    /// the last) at the next flush, not as one skip-list insert per write.
    staged: OwnedBatch,
    /// Entries written since open (an estimate of growth, for `len_hint`).
    written: u64,
    /// During a bulk load: the writes not yet ingested.
    bulk: Option<bulk::BulkLoad>,
    /// During a bulk load: the last ticket whose writes were all ingested.
    bulk_applied: u64,
    /// Staged entries from which they are handed to the writer thread
    /// without waiting for a flush (with [`STAGE_BYTES`], bounds the memory
    /// they hold).
    stage_max: usize,
    /// The options SST files for ingestion are written with, and the batch
    /// size from which they are used (`None` for a TTL store: ingested
    /// values would lack RocksDB's TTL stamps).
    ingest: Option<(Options, usize)>,
}

impl RocksDbEngine {
    /// Opens (creating) the database in `path`.
    ///
    /// # Errors
    /// If it cannot be opened (damaged files, RocksDB's lock held, I/O),
    /// with RocksDB's own message.
    pub fn open(path: &Path, o: &RocksOptions) -> Result<Self, KvError> {
        Self::open_with(path, o, false)
    }

    /// Opens the database for a bulk load (a restore): deferred writes are
    /// gathered in sorted runs ingested as SST files (see `bulk`), with
    /// automatic compactions off. Reads do not see writes not yet ingested:
    /// end it with [`Self::end_bulk_load`] (or wait for the writes) before
    /// serving reads.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_bulk_load(path: &Path, o: &RocksOptions) -> Result<Self, KvError> {
        Self::open_with(path, o, true)
    }

    /// Flushes what a bulk load wrote and reopens the database for normal
    /// use (compactions then catch up in the background).
    ///
    /// # Errors
    /// If the flush or the reopening fails.
    pub fn end_bulk_load(mut self, o: &RocksOptions) -> Result<Self, KvError> {
        self.wait_applied()?;
        self.db.flush().map_err(|e| self.err("flush after a bulk load", e))?;
        let path = self.path.clone();
        drop(self);
        Self::open(&path, o)
    }

    fn open_with(path: &Path, o: &RocksOptions, bulk: bool) -> Result<Self, KvError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_write_buffer_size(o.write_buffer_bytes);
        opts.set_max_write_buffer_number(o.write_buffers);
        opts.set_compression_type(
            compression(&o.compression)
                .ok_or_else(|| KvError::InvalidOption(format!("unknown compression '{}'", o.compression)))?,
        );
        opts.set_compaction_style(
            compaction_style(&o.compaction_style)
                .ok_or_else(|| KvError::InvalidOption(format!("unknown compaction style '{}'", o.compaction_style)))?,
        );
        opts.set_max_open_files(o.max_open_files);
        // Bloom filters: most reads of a counting job are for keys that are
        // new or cold, and a filter answers "absent" without a search.
        opts.set_memtable_whole_key_filtering(true);
        opts.set_memtable_prefix_bloom_ratio(0.1);
        let mut table = BlockBasedOptions::default();
        table.set_block_size(o.block_size);
        table.set_bloom_filter(10.0, false);
        let cache = Cache::new_lru_cache(o.block_cache_bytes)
            .map_err(|e| classify(path, &format!("creating a block cache of {} bytes", o.block_cache_bytes), e))?;
        table.set_block_cache(&cache);
        opts.set_block_based_table_factory(&table);
        // All of a process's databases share RocksDB's background threads
        // (the default environment's); with RocksDB's default of one flush
        // thread, the stores of a container flush one at a time (a restore
        // waits on it). They run under SCHED_IDLE (`background`).
        background::start_pools(BACKGROUND_JOBS);
        opts.set_max_background_jobs(BACKGROUND_JOBS);
        if bulk {
            opts.set_memtable_factory(rocksdb::MemtableFactory::Vector);
            opts.set_allow_concurrent_memtable_write(false);
            opts.set_write_buffer_size(o.write_buffer_bytes.max(8 << 20));
            opts.set_disable_auto_compactions(true);
            opts.set_level_zero_slowdown_writes_trigger(1 << 30);
            opts.set_level_zero_stop_writes_trigger(1 << 30);
        }
        // RocksDB's TTL wrapper stamps each value it writes with a time; an
        // ingested SST file bypasses it, so a TTL store loads through
        // memtables (the vector memtable above).
        let bulk = (bulk && o.ttl.is_none()).then(|| bulk::BulkLoad::new(opts.clone(), path, "bulk"));
        let ingest = o.ttl.is_none().then(|| (opts.clone(), o.ingest_min_entries.max(1)));
        let db = match o.ttl {
            Some(ttl) => DB::open_with_ttl(&opts, path, ttl),
            None => DB::open(&opts, path),
        }
        .map_err(|e| classify(path, "open", e))?;
        let mut write = WriteOptions::default();
        write.disable_wal(!o.wal);
        Ok(RocksDbEngine {
            writer: None,
            db: Arc::new(db),
            path: path.to_owned(),
            write,
            wal: o.wal,
            submitted: 0,
            written: 0,
            bulk,
            bulk_applied: 0,
            staged: OwnedBatch::default(),
            stage_max: o.ingest_min_entries.max(1).saturating_mul(4),
            ingest,
        })
    }

    fn writer_failed(&self, message: String) -> KvError {
        KvError::Engine { location: format!("RocksDB in {}", self.path.display()), operation: "write".into(), message }
    }

    fn rocks_batch(&mut self, batch: &WriteBatch<'_>) -> rocksdb::WriteBatch {
        let mut b = rocksdb::WriteBatch::default();
        for (k, v) in batch {
            match v {
                Some(v) => b.put(k, v),
                None => b.delete(k),
            }
        }
        self.written += batch.len() as u64;
        b
    }

    /// Hands the staged writes to the writer thread if its queue has room,
    /// else keeps them staged (still readable from the cache above) while
    /// they stay below twice the staging limits: a task thread does not
    /// wait for a writer that is behind (it runs at the lowest priority)
    /// until the memory it holds says so.
    fn offer_staged(&mut self) -> Result<(), KvError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        if self.staged.len() >= 2 * self.stage_max || self.staged.bytes() >= 2 * STAGE_BYTES {
            return self.submit_staged();
        }
        let batch = std::mem::take(&mut self.staged);
        let offered = match &self.writer {
            Some(w) => w.try_submit(self.submitted + 1, batch).map_err(|e| self.writer_failed(e))?,
            None => return Err(self.writer_failed("the writer thread was not started".into())),
        };
        match offered {
            None => self.submitted += 1,
            Some(back) => self.staged = back,
        }
        Ok(())
    }

    /// Hands the staged writes to the writer thread (waiting for room in
    /// its queue).
    fn submit_staged(&mut self) -> Result<(), KvError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.staged);
        self.submitted += 1;
        match &self.writer {
            Some(w) => w.submit(self.submitted, batch).map_err(|e| self.writer_failed(e)),
            None => Err(self.writer_failed("the writer thread was not started".into())),
        }
    }

    fn err(&self, what: &str, e: rocksdb::Error) -> KvError {
        classify(&self.path, what, e)
    }

    /// Approximate bytes on disk (SST files).
    pub fn size_bytes(&self) -> u64 {
        self.db.property_int_value("rocksdb.total-sst-files-size").ok().flatten().unwrap_or(0)
    }
}

impl Drop for RocksDbEngine {
    /// Applies the queued writes and flushes the memtables (without a WAL
    /// they would be lost), but does not wait for compactions in progress:
    /// after a bulk load or a busy run a large store can have minutes of
    /// them queued, and RocksDB resumes them at the next open.
    fn drop(&mut self) {
        if let Err(e) = self.submit_staged() {
            tracing::warn!(path = %self.path.display(), "RocksDB: writing staged writes before closing: {e}");
        }
        drop(self.writer.take());
        if !self.wal
            && let Err(e) = self.db.flush()
        {
            tracing::warn!(path = %self.path.display(), "RocksDB: flushing before closing: {e}");
        }
        self.db.cancel_all_background_work(false);
    }
}

/// Types a RocksDB error. RocksDB reports damage as `Corruption`, and files
/// that its metadata names but that are gone as an I/O error with the
/// "path not found" subcode (ENOENT); both mean the directory cannot be
/// used as it is. RocksDB gives no other form of these than its status text,
/// so this one place reads it.
fn classify(path: &Path, operation: &str, e: rocksdb::Error) -> KvError {
    let location = format!("RocksDB in {}", path.display());
    let message = e.to_string();
    let missing = matches!(e.kind(), ErrorKind::IOError) && message.contains("No such file or directory");
    if matches!(e.kind(), ErrorKind::Corruption) || missing {
        KvError::Corrupt { location, message: format!("{operation}: {message}") }
    } else {
        KvError::Engine { location, operation: operation.to_owned(), message }
    }
}

impl Engine for RocksDbEngine {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, KvError> {
        out.clear();
        match self.db.get_pinned(key).map_err(|e| self.err("get", e))? {
            Some(v) => {
                out.extend_from_slice(&v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn write_batch(&mut self, batch: &WriteBatch<'_>) -> Result<(), KvError> {
        self.wait_applied()?;
        let b = self.rocks_batch(batch);
        self.db.write_opt(b, &self.write).map_err(|e| self.err("write", e))
    }

    fn write_batch_deferred(&mut self, batch: &WriteBatch<'_>) -> Result<u64, KvError> {
        if let Some(b) = &mut self.bulk {
            let ticket = self.submitted + 1;
            for (k, v) in batch {
                let before = b.pending();
                b.push(&self.db, k, *v).map_err(|e| classify_bulk(&self.path, e))?;
                if b.pending() < before {
                    // A run was ingested: every earlier batch is applied.
                    self.bulk_applied = ticket - 1;
                }
            }
            if b.pending() == 0 {
                self.bulk_applied = ticket;
            }
            self.written += batch.len() as u64;
            self.submitted = ticket;
            return Ok(ticket);
        }
        if self.writer.is_none() {
            let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let writer = Writer::start(self.db.clone(), self.wal, &name, &self.path, self.ingest.clone())
                .map_err(|e| self.writer_failed(format!("starting the writer thread: {e}")))?;
            self.writer = Some(writer);
        }
        self.staged.extend(batch);
        self.written += batch.len() as u64;
        let ticket = self.submitted + 1;
        if self.staged.len() >= self.stage_max || self.staged.bytes() >= STAGE_BYTES {
            self.offer_staged()?;
        }
        Ok(ticket)
    }

    /// The staged writes reached the size at which they are offered to the
    /// writer thread, and it had no room for them.
    fn behind(&self) -> bool {
        self.staged.len() >= self.stage_max || self.staged.bytes() >= STAGE_BYTES
    }

    fn applied(&self) -> u64 {
        if self.bulk.is_some() {
            return self.bulk_applied;
        }
        self.writer.as_ref().map_or(u64::MAX, Writer::applied)
    }

    fn wait_applied(&mut self) -> Result<(), KvError> {
        if let Some(b) = &mut self.bulk {
            b.ingest(&self.db).map_err(|e| classify_bulk(&self.path, e))?;
            self.bulk_applied = self.submitted;
        }
        self.submit_staged()?;
        match &self.writer {
            Some(w) => w.wait(self.submitted).map_err(|e| self.writer_failed(e)),
            None => Ok(()),
        }
    }

    fn scan(
        &mut self,
        from: Bound<&[u8]>,
        to: Option<&[u8]>,
        limit: usize,
        out: &mut Vec<(Bytes, Bytes)>,
    ) -> Result<(), KvError> {
        self.wait_applied()?;
        let mode = match from {
            Bound::Included(f) | Bound::Excluded(f) => IteratorMode::From(f, Direction::Forward),
            Bound::Unbounded => IteratorMode::Start,
        };
        let mut taken = 0;
        for item in self.db.iterator(mode) {
            let (k, v) = item.map_err(|e| self.err("scan", e))?;
            if let Bound::Excluded(f) = from
                && &k[..] == f
            {
                continue;
            }
            if to.is_some_and(|t| &k[..] >= t) || taken == limit {
                break;
            }
            out.push((Bytes::from(k.into_vec()), Bytes::from(v.into_vec())));
            taken += 1;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), KvError> {
        // Durability comes from the changelog and from snapshots (which flush
        // memtables themselves): the staged writes are only offered to the
        // writer here (a commit does not wait for a writer that is behind),
        // and an earlier batch's failure reported (a commit must not
        // succeed over it).
        self.offer_staged()?;
        match &self.writer {
            Some(w) => w.failure().map_err(|e| self.writer_failed(e)),
            None => Ok(()),
        }
    }

    fn len_hint(&self) -> u64 {
        self.db.property_int_value("rocksdb.estimate-num-keys").ok().flatten().unwrap_or(self.written)
    }

    fn snapshot(&mut self, dir: &Path) -> Result<(), KvError> {
        self.wait_applied()?;
        let cp = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(|e| self.err("snapshot", e))?;
        cp.create_checkpoint(dir).map_err(|e| self.err(&format!("snapshot into {}", dir.display()), e))
    }

    /// Queues the checkpoint behind the writes made so far, for the writer
    /// thread (which applies them in order); the caller chooses whether to
    /// wait for it ([`crate::PendingSnapshot::wait`]). Writes made after
    /// this call are queued behind it, and a bulk load or a database
    /// without a writer yet takes it at once. `Ok(None)`, without waiting,
    /// while the writer's queue has no room for it and the staged writes
    /// ahead of it.
    fn start_snapshot(&mut self, dir: &Path) -> Result<Option<crate::PendingSnapshot>, KvError> {
        if self.bulk.is_some() || self.writer.is_none() {
            return self.snapshot(dir).map(|()| Some(crate::PendingSnapshot::taken()));
        }
        self.offer_staged()?;
        if !self.staged.is_empty() {
            return Ok(None);
        }
        match self.writer.as_ref().map(|w| w.try_snapshot(self.submitted + 1, dir.to_owned())) {
            Some(Ok(Some((outcome, writer)))) => {
                self.submitted += 1;
                Ok(Some(crate::PendingSnapshot::pending(self.path.display().to_string(), outcome, writer)))
            }
            Some(Ok(None)) => Ok(None),
            Some(Err(e)) => Err(self.writer_failed(e)),
            None => Err(self.writer_failed("the writer thread was not started".into())),
        }
    }
}

#[cfg(test)]
mod tests;
