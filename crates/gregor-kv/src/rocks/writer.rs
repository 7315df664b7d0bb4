//! Deferred RocksDB writes: one thread per database applies write batches
//! in the order they were submitted, so a task's thread does not wait for
//! memtable inserts (the cost of a RocksDB write) on its hot path or in a
//! commit. The task's thread only copies a batch into one buffer; this
//! thread sorts it by key (a sorted run is the cheapest insert into
//! RocksDB's skip list) and writes it. A batch of at least
//! `ingest_min_entries` (a commit's or an eviction's write-out of a large cache) is
//! instead written as an SST file and ingested, as restores are: no skip
//! list inserts (RocksDB flushes the memtable first when it holds keys in
//! the file's range; stores with a TTL never ingest, their values must be
//! stamped by RocksDB). It also takes the snapshots queued between
//! batches (RocksDB checkpoints), so that one holds exactly the batches
//! queued before it. This module must never reorder
//! batches or snapshots, nor writes of one key within a batch, and must never lose a
//! failure: after a failed write it applies nothing more and reports the
//! failure to every later caller.

use super::bulk::BulkLoad;
use super::turns;
use rocksdb::{DB, Options, WriteOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Batches submitted but not yet applied before `submit` waits: enough to
/// overlap building a batch with applying the previous one, and a bound on
/// the memory that batches in flight hold.
const QUEUE: usize = 2;

#[derive(Default)]
struct Progress {
    failed: Option<String>,
}

/// The writer a snapshot was queued to. Taken in the background, the
/// snapshot and the batches ahead of it take turns with the other writers
/// ([`turns`]); once [`Awaitable::expedite`]d, until this is dropped, they
/// skip the turns. Waiting for a commit's snapshots one by one while each
/// writer still took its turn made a commit of 4 snapshots take 100-200 ms.
pub(crate) struct Awaitable {
    shared: Arc<Shared>,
    awaited: bool,
}

impl Awaitable {
    /// Marks the writer as waited for (once).
    pub fn expedite(&mut self) {
        if !self.awaited {
            self.shared.waiters.start_waiting();
            self.awaited = true;
        }
    }
}

impl Drop for Awaitable {
    fn drop(&mut self) {
        if self.awaited {
            self.shared.waiters.stop_waiting();
        }
    }
}

#[derive(Default)]
struct Shared {
    /// Ticket of the last applied batch.
    applied: AtomicU64,
    progress: Mutex<Progress>,
    changed: Condvar,
    /// Task threads waiting for this writer (its batches skip the turn).
    waiters: turns::Waiters,
}

/// A batch copied into one buffer: entries are (key start, key length,
/// value start, value length or [`DELETE`]).
#[derive(Default)]
pub(super) struct OwnedBatch {
    bytes: Vec<u8>,
    entries: Vec<(u32, u32, u32, u32)>,
}

const DELETE: u32 = u32::MAX;

impl OwnedBatch {
    /// Appends a copy of `batch` (after the writes already in it).
    pub fn extend(&mut self, batch: &crate::WriteBatch<'_>) {
        let len: usize = batch.iter().map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len)).sum();
        self.bytes.reserve(len);
        self.entries.reserve(batch.len());
        for (k, v) in batch {
            let key_at = self.bytes.len() as u32;
            self.bytes.extend_from_slice(k);
            let value_at = self.bytes.len() as u32;
            match v {
                Some(v) => {
                    self.bytes.extend_from_slice(v);
                    self.entries.push((key_at, k.len() as u32, value_at, v.len() as u32));
                }
                None => self.entries.push((key_at, k.len() as u32, value_at, DELETE)),
            }
        }
    }

    /// Entries in the batch.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the batch holds no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Ingests the batch as one SST file through `load`.
    fn ingest(&self, db: &DB, load: &mut BulkLoad) -> Result<(), String> {
        for &(k, kl, v, vl) in &self.entries {
            let key = &self.bytes[k as usize..(k + kl) as usize];
            let value = (vl != DELETE).then(|| &self.bytes[v as usize..(v + vl) as usize]);
            load.push(db, key, value)?;
        }
        load.ingest(db)
    }

    /// RocksDB's batch, in key order (stable: of two writes to one key, the
    /// later still wins).
    fn sorted(mut self) -> rocksdb::WriteBatch {
        let bytes = &self.bytes;
        let key = |&(k, kl, _, _): &(u32, u32, u32, u32)| &bytes[k as usize..(k + kl) as usize];
        self.entries.sort_by(|a, b| key(a).cmp(key(b)));
        let mut out = rocksdb::WriteBatch::default();
        for e @ &(_, _, v, vl) in &self.entries {
            if vl == DELETE {
                out.delete(key(e));
            } else {
                out.put(key(e), &bytes[v as usize..(v + vl) as usize]);
            }
        }
        out
    }
}

/// What the writer thread does, in the order submitted.
enum Job {
    /// Applies a batch.
    Batch(OwnedBatch),
    /// Writes a RocksDB checkpoint of the database as it is after every
    /// earlier job into the new directory, and reports how that went.
    Snapshot(PathBuf, SyncSender<Result<(), String>>),
}

/// The writer thread of one database.
pub(super) struct Writer {
    queue: Option<SyncSender<(u64, Job)>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread; it writes with RocksDB's WAL if `wal`, and
    /// ingests batches of at least `ingest.1` entries as SST files written
    /// in `dir` with `ingest.0` (the database's options) unless that is `None`.
    pub fn start(
        db: Arc<DB>,
        wal: bool,
        name: &str,
        dir: &Path,
        ingest: Option<(Options, usize)>,
    ) -> std::io::Result<Writer> {
        let shared = Arc::new(Shared::default());
        let (queue, jobs) = sync_channel(QUEUE);
        // Runs of up to 64 MB: one file per batch (staged batches are
        // handed over before they reach that size).
        let mut ingest = ingest.map(|(o, min)| (BulkLoad::new(o, dir, "write"), min));
        let thread = std::thread::Builder::new().name(format!("rocksdb-write {name}")).spawn({
            let shared = shared.clone();
            move || {
                // A commit's batch waits for the cores the task threads
                // leave free instead of delaying their messages.
                super::background::become_background();
                // A panic must not leave waiters waiting: it becomes the
                // failure every later caller sees.
                let run = std::panic::AssertUnwindSafe(|| apply(&db, wal, &jobs, &shared, ingest.as_mut()));
                if std::panic::catch_unwind(run).is_err() {
                    lock(&shared.progress).failed = Some("the RocksDB writer thread panicked".into());
                    shared.changed.notify_all();
                }
            }
        })?;
        Ok(Writer { queue: Some(queue), shared, thread: Some(thread) })
    }

    /// Queues a batch (waiting while [`QUEUE`] jobs are ahead of it).
    pub fn submit(&self, ticket: u64, batch: OwnedBatch) -> Result<(), String> {
        let Some(job) = self.try_queue(ticket, Job::Batch(batch))? else { return Ok(()) };
        let _waiting = self.shared.waiters.waiting();
        match &self.queue {
            Some(q) if q.send((ticket, job)).is_ok() => Ok(()),
            _ => Err(self.stopped()),
        }
    }

    /// Queues a checkpoint of the database into the new directory `dir`,
    /// taken once every earlier batch is applied (and before any later
    /// one), in the background until someone waits for it
    /// ([`Awaitable::expedite`]); its outcome arrives on the returned
    /// channel. `Ok(None)` instead of waiting while [`QUEUE`] jobs are
    /// ahead of it: a commit that waited for a writer behind on its
    /// turns stopped its loop for 240-280 ms at half the latency bench's
    /// maximum rate. A failed snapshot is not a failed write: later
    /// batches still apply.
    pub fn try_snapshot(
        &self,
        ticket: u64,
        dir: PathBuf,
    ) -> Result<Option<(Receiver<Result<(), String>>, Awaitable)>, String> {
        let (done, outcome) = sync_channel(1);
        Ok(self
            .try_queue(ticket, Job::Snapshot(dir, done))?
            .is_none()
            .then(|| (outcome, Awaitable { shared: self.shared.clone(), awaited: false })))
    }

    /// Queues a batch unless [`QUEUE`] jobs are ahead of it; then hands it
    /// back (`Ok(Some)`) instead of waiting.
    pub fn try_submit(&self, ticket: u64, batch: OwnedBatch) -> Result<Option<OwnedBatch>, String> {
        match self.try_queue(ticket, Job::Batch(batch))? {
            Some(Job::Batch(batch)) => Ok(Some(batch)),
            _ => Ok(None),
        }
    }

    /// Why the queue is gone: the thread's failure, if it failed.
    fn stopped(&self) -> String {
        self.failure().err().unwrap_or_else(|| "the RocksDB writer thread stopped".into())
    }

    /// Queues `job` unless [`QUEUE`] jobs are ahead of it; then hands it
    /// back.
    fn try_queue(&self, ticket: u64, job: Job) -> Result<Option<Job>, String> {
        self.failure()?;
        match &self.queue {
            Some(q) => match q.try_send((ticket, job)) {
                Ok(()) => Ok(None),
                Err(TrySendError::Full((_, job))) => Ok(Some(job)),
                Err(TrySendError::Disconnected(_)) => Err(self.stopped()),
            },
            None => Err(self.stopped()),
        }
    }

    /// The ticket of the last applied batch.
    pub fn applied(&self) -> u64 {
        self.shared.applied.load(Ordering::Acquire)
    }

    /// The failure of an earlier batch, if one failed.
    pub fn failure(&self) -> Result<(), String> {
        match &lock(&self.shared.progress).failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Waits until the batch `ticket` (and so every one before) is applied.
    pub fn wait(&self, ticket: u64) -> Result<(), String> {
        let _waiting = (self.applied() < ticket).then(|| self.shared.waiters.waiting());
        let mut p = lock(&self.shared.progress);
        loop {
            if let Some(e) = &p.failed {
                return Err(e.clone());
            }
            if self.applied() >= ticket {
                return Ok(());
            }
            p = self.shared.changed.wait(p).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl Drop for Writer {
    /// Applies what is queued, then stops: the database closes (and its
    /// lock is released) only after its last write.
    fn drop(&mut self) {
        self.queue = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Held by a test to stop every writer thread before its next job.
#[cfg(test)]
pub(super) static PAUSE: Mutex<()> = Mutex::new(());

fn lock(m: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn apply(db: &DB, wal: bool, jobs: &Receiver<(u64, Job)>, shared: &Shared, mut ingest: Option<&mut (BulkLoad, usize)>) {
    let mut options = WriteOptions::default();
    options.disable_wal(!wal);
    for (ticket, job) in jobs {
        #[cfg(test)]
        drop(PAUSE.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let failed = match job {
            Job::Batch(batch) => {
                let _turn = turns::take(&shared.waiters);
                match ingest.as_deref_mut() {
                    Some((load, min)) if batch.len() >= *min => batch.ingest(db, load).err(),
                    _ => db.write_opt(batch.sorted(), &options).err().map(|e| e.to_string()),
                }
            }
            Job::Snapshot(dir, done) => {
                let started = std::time::Instant::now();
                let taken = rocksdb::checkpoint::Checkpoint::new(db).and_then(|cp| cp.create_checkpoint(&dir));
                tracing::debug!(dir = %dir.display(), ms = started.elapsed().as_secs_f64() * 1e3, "snapshot taken");
                // The receiver may be gone (its container stopped): the
                // snapshot then only stays unused.
                let _ = done.send(taken.map_err(|e| e.to_string()));
                None
            }
        };
        let stop = failed.is_some();
        {
            // Under the lock, so a waiter cannot miss the change.
            let mut p = lock(&shared.progress);
            match failed {
                None => shared.applied.store(ticket, Ordering::Release),
                Some(e) => p.failed = Some(e),
            }
        }
        shared.changed.notify_all();
        if stop {
            return;
        }
    }
}
