//! One partition: appends, crash recovery, and the shared segment view readers use.
//!
//! # Contract
//! - Appends are atomic and ordered: a batch gets consecutive offsets and is
//!   either wholly visible to readers or not at all, whichever thread or
//!   process wrote it. Writers serialise on an `flock` of the head file.
//! - Readers never take the lock: they read the published end from the head.
//! - Only the active (last) segment is ever written; sealed segments change
//!   only through retention (deleted whole) and compaction (replaced whole),
//!   both under the separate maintenance lock, so neither blocks appends.
//! - Recovery never drops data that was fsynced: damage there is an error.

use crate::Record;
use crate::batch::BatchEncoder;
use crate::config::{CleanupPolicy, Durability, StreamConfig};
use crate::error::{IoContext, LogError, Result};
use crate::fsutil::{LockGuard, ProcessLock, now_ms};
use crate::head::{Head, NO_INDEX, Snapshot, WriterFields};
use crate::segment::{self, IndexEntry, Segment};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first message of the batch.
    pub base_offset: u64,
    /// Offset of the last message of the batch.
    pub last_offset: u64,
}

/// What recovery on open found and did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    /// Bytes of torn or corrupt tail that were truncated.
    pub bytes_dropped: u64,
    /// The segment file the tail was cut in, if any.
    pub truncated_file: Option<PathBuf>,
    /// Byte position of the cut.
    pub truncated_at: u64,
}

pub(crate) struct SegmentSet {
    pub generation: u64,
    pub list: Vec<Arc<Segment>>,
}

struct ActiveFiles {
    base: u64,
    generation: u64,
    log: File,
    log_path: PathBuf,
    index: File,
}

#[derive(Default)]
struct Writer {
    encoder: BatchEncoder,
    active: Option<ActiveFiles>,
}

/// A partition of a stream in the embedded log.
pub struct Partition {
    pub(crate) stream: Arc<str>,
    pub(crate) id: u32,
    pub(crate) dir: PathBuf,
    pub(crate) config: Arc<StreamConfig>,
    pub(crate) head: Head,
    /// Serialises writers (and head repairs) across threads and processes.
    write: ProcessLock,
    /// Serialises retention and compaction across threads and processes.
    pub(crate) maintenance: ProcessLock,
    segments: RwLock<Arc<SegmentSet>>,
    writer: Mutex<Writer>,
    recovery: Mutex<RecoveryReport>,
}

fn no_active() -> LogError {
    LogError::Io { context: "opening the active segment".into(), source: std::io::Error::other("no active segment") }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Partition {
    /// Opens the partition in `dir` (creating it if missing) and recovers it if needed.
    pub(crate) fn open(stream: Arc<str>, id: u32, dir: PathBuf, config: Arc<StreamConfig>) -> Result<Arc<Partition>> {
        std::fs::create_dir_all(&dir).context(|| format!("creating partition directory {}", dir.display()))?;
        let head_path = dir.join("head");
        let partition = Partition {
            head: Head::open(&head_path)?,
            write: ProcessLock::open(&head_path)?,
            maintenance: ProcessLock::open(&dir.join("maintenance.lock"))?,
            stream,
            id,
            dir,
            config,
            segments: RwLock::new(Arc::new(SegmentSet { generation: u64::MAX, list: Vec::new() })),
            writer: Mutex::new(Writer::default()),
            recovery: Mutex::new(RecoveryReport::default()),
        };
        {
            let _lock = partition.write_lock()?;
            partition.recover_locked()?;
        }
        Ok(Arc::new(partition))
    }

    /// The stream this partition belongs to.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The partition number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// What the last recovery of this partition by this process did.
    pub fn recovery_report(&self) -> RecoveryReport {
        lock(&self.recovery).clone()
    }

    pub(crate) fn write_lock(&self) -> Result<LockGuard<'_>> {
        self.write.lock()
    }

    /// A consistent view of the published end, repairing the head if a writer died mid-update.
    pub(crate) fn snapshot(&self) -> Result<Snapshot> {
        loop {
            if let Some(s) = self.head.snapshot() {
                return Ok(s);
            }
            let _lock = self.write_lock()?;
            if self.head.seq_is_odd() {
                tracing::warn!(stream = %self.stream, partition = self.id, "a writer died while publishing; recovering the partition head");
                self.recover_locked()?;
            }
        }
    }

    /// Oldest offset still in the log.
    pub fn oldest_offset(&self) -> Result<u64> {
        Ok(self.snapshot()?.log_start)
    }

    /// The offset the next appended message will get (one past the newest).
    pub fn next_offset(&self) -> Result<u64> {
        Ok(self.snapshot()?.next_offset)
    }

    /// Checks that `offset` is readable: at least the oldest retained offset
    /// and at most the next offset (reading there waits for new data).
    ///
    /// # Errors
    /// [`LogError::OffsetOutOfRange`] naming the valid range.
    pub fn check_offset(&self, offset: u64) -> Result<()> {
        let snap = self.snapshot()?;
        if offset < snap.log_start || offset > snap.next_offset {
            return Err(self.out_of_range(offset, &snap));
        }
        Ok(())
    }

    pub(crate) fn out_of_range(&self, requested: u64, snap: &Snapshot) -> LogError {
        LogError::OffsetOutOfRange {
            stream: self.stream.to_string(),
            partition: self.id,
            requested,
            oldest: snap.log_start,
            next: snap.next_offset,
        }
    }

    /// The segments as of `generation`, reloaded from the directory when it changed.
    pub(crate) fn segment_set(&self, generation: u64) -> Result<Arc<SegmentSet>> {
        {
            let current = self.segments.read().unwrap_or_else(|p| p.into_inner());
            if current.generation == generation {
                return Ok(current.clone());
            }
        }
        // A file listed but gone by the time it is opened means compaction or
        // retention changed the layout meanwhile; list again, so that a merged
        // segment is never combined with the originals it replaced.
        let mut list = Vec::new();
        'listing: for _ in 0..100 {
            list.clear();
            for base in segment::list_bases(&self.dir)? {
                match Segment::open(&self.dir, base)? {
                    Some(seg) => list.push(Arc::new(seg)),
                    None => continue 'listing,
                }
            }
            break;
        }
        let set = Arc::new(SegmentSet { generation, list });
        *self.segments.write().unwrap_or_else(|p| p.into_inner()) = set.clone();
        Ok(set)
    }

    /// Byte length of the readable part of `seg`.
    pub(crate) fn readable_end(&self, seg: &Segment, snap: &Snapshot) -> Result<u64> {
        if seg.base == snap.active_base { Ok(snap.active_len) } else { seg.len() }
    }

    /// Total bytes in the partition's segment files.
    pub fn size_bytes(&self) -> Result<u64> {
        let snap = self.snapshot()?;
        let set = self.segment_set(snap.segments_gen)?;
        set.list.iter().map(|s| self.readable_end(s, &snap)).sum()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> Result<usize> {
        let snap = self.snapshot()?;
        Ok(self.segment_set(snap.segments_gen)?.list.len())
    }

    /// Appends one batch of records and returns the offsets they got.
    ///
    /// # Errors
    /// [`LogError::InvalidAppend`] for an empty batch, a batch over
    /// `max_batch_bytes`, or an unkeyed record in a compacted stream;
    /// [`LogError::Io`] if the disk fails (nothing is published then).
    pub fn append(&self, records: &[Record<'_>]) -> Result<AppendInfo> {
        let mut w = lock(&self.writer);
        let now = now_ms();
        let Writer { encoder, active } = &mut *w;
        encoder.clear();
        for (i, record) in records.iter().enumerate() {
            encoder.push(i as u32, record.timestamp.unwrap_or(now), record);
        }
        self.write_encoded(encoder, active, now)
    }

    /// Appends a batch the caller encoded (records pushed with offset deltas
    /// 0, 1, 2, ... and their timestamps), saving the copy [`Self::append`]
    /// makes; the encoder is cleared for reuse, also on error.
    ///
    /// # Errors
    /// As [`Self::append`].
    pub fn append_encoded(&self, encoder: &mut BatchEncoder) -> Result<AppendInfo> {
        let mut w = lock(&self.writer);
        let result = self.write_encoded(encoder, &mut w.active, now_ms());
        encoder.clear();
        result
    }

    /// Appends the control batch that ends transaction `stamp` in this
    /// partition with `marker` (see `crate::txn`).
    ///
    /// # Errors
    /// As [`Self::append`].
    pub fn append_marker(&self, stamp: crate::batch::TxnStamp, marker: crate::batch::Marker) -> Result<AppendInfo> {
        let mut w = lock(&self.writer);
        let now = now_ms();
        let Writer { encoder, active } = &mut *w;
        encoder.clear();
        encoder.begin_control(stamp, marker, now);
        let result = self.write_encoded(encoder, active, now);
        encoder.clear();
        result
    }

    /// Checks and writes an encoded batch (the writer's lock held).
    fn write_encoded(
        &self,
        encoder: &mut BatchEncoder,
        active: &mut Option<ActiveFiles>,
        now: i64,
    ) -> Result<AppendInfo> {
        let refuse = |reason: String| LogError::InvalidAppend { stream: self.stream.to_string(), reason };
        if encoder.is_empty() {
            return Err(refuse("a batch needs at least one message".into()));
        }
        if self.config.cleanup_policy == CleanupPolicy::Compact && encoder.unkeyed() > 0 {
            return Err(refuse("the stream is compacted, so every message needs a key".into()));
        }
        let batch_len = encoder.len() as u64;
        if batch_len > u64::from(self.config.max_batch_bytes) {
            return Err(refuse(format!(
                "a batch of {batch_len} bytes exceeds the stream's max_batch_bytes of {}",
                self.config.max_batch_bytes
            )));
        }
        let count = u64::from(encoder.count());
        let max_ts = encoder.max_timestamp();

        let _lock = self.write_lock()?;
        if self.head.seq_is_odd() || self.head.pending() {
            tracing::warn!(stream = %self.stream, partition = self.id, "a writer died mid-append; recovering before appending");
            self.recover_locked()?;
        }
        let mut f = self.head.writer_fields();
        self.head.set_pending();
        self.ensure_active(active, &f)?;
        if f.active_len > 0
            && (f.active_len + batch_len > self.config.segment_bytes
                || now - f.active_created_ms >= self.config.segment_ms as i64)
        {
            self.roll_locked(active, &mut f, now)?;
        }
        let active = active.as_ref().ok_or_else(no_active)?;
        let batch = encoder.finish();
        crate::batch::seal(batch, f.next_offset);
        active
            .log
            .write_all_at(batch, f.active_len)
            .context(|| format!("appending to {}", active.log_path.display()))?;
        if f.index_last_pos == NO_INDEX
            || f.active_len - f.index_last_pos >= u64::from(self.config.index_interval_bytes)
        {
            let entry = IndexEntry {
                rel_offset: (f.next_offset - f.active_base) as u32,
                position: f.active_len as u32,
                max_ts_before: f.active_max_ts,
            };
            (&active.index)
                .write_all(&entry.encode())
                .context(|| format!("appending to the index of {}", active.log_path.display()))?;
            f.index_last_pos = f.active_len;
        }
        let info = AppendInfo { base_offset: f.next_offset, last_offset: f.next_offset + count - 1 };
        f.next_offset = info.last_offset + 1;
        f.active_len += batch_len;
        f.active_max_ts = f.active_max_ts.max(max_ts);
        if self.config.durability == Durability::Always {
            active.log.sync_data().context(|| format!("syncing {}", active.log_path.display()))?;
            f.recovery_base = f.active_base;
            f.recovery_pos = f.active_len;
        }
        self.head.publish(&f);
        Ok(info)
    }

    /// The writer's open files of the active segment, reopened when another
    /// writer rolled or recovery rebuilt files.
    fn ensure_active(&self, slot: &mut Option<ActiveFiles>, f: &WriterFields) -> Result<()> {
        if slot.as_ref().is_none_or(|a| a.base != f.active_base || a.generation != f.segments_gen) {
            *slot = Some(self.open_active(f.active_base, f.segments_gen, false)?);
        }
        Ok(())
    }

    fn open_active(&self, base: u64, generation: u64, create: bool) -> Result<ActiveFiles> {
        let log_path = segment::log_path(&self.dir, base);
        let index_path = segment::index_path(&self.dir, base);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(create)
            .open(&log_path)
            .context(|| format!("opening segment {}", log_path.display()))?;
        let index = OpenOptions::new()
            .append(true)
            .create(true)
            .truncate(false)
            .open(&index_path)
            .context(|| format!("opening index {}", index_path.display()))?;
        if create {
            index.set_len(0).context(|| format!("truncating {}", index_path.display()))?;
        }
        Ok(ActiveFiles { base, generation, log, log_path, index })
    }

    /// Seals the active segment and starts a new one at the next offset.
    ///
    /// Under `always` the sealed segment is synced here (its index was not
    /// yet) and the recovery point moves into the new one. Under an interval
    /// the roll syncs nothing: a roll of every partition at once used to stop
    /// the appending thread for 3-13 ms per partition. The recovery point
    /// stays where the last [`Self::flush`] left it, recovery scans on from
    /// there across every later segment, and the next flush syncs the sealed
    /// segments, the directory and the active segment before moving it.
    fn roll_locked(&self, slot: &mut Option<ActiveFiles>, f: &mut WriterFields, now: i64) -> Result<()> {
        let always = self.config.durability == Durability::Always;
        if always && let Some(old) = slot.as_ref() {
            old.log.sync_data().context(|| format!("syncing {}", old.log_path.display()))?;
            old.index.sync_data().context(|| format!("syncing the index of {}", old.log_path.display()))?;
        }
        let base = f.next_offset;
        let generation = f.segments_gen.wrapping_add(1);
        *slot = Some(self.open_active(base, generation, true)?);
        if always {
            crate::fsutil::sync_dir(&self.dir)?;
        }
        f.active_base = base;
        f.active_len = 0;
        f.active_max_ts = i64::MIN;
        f.active_created_ms = now;
        f.index_last_pos = NO_INDEX;
        f.segments_gen = generation;
        if always {
            f.recovery_base = base;
            f.recovery_pos = 0;
        }
        Ok(())
    }

    /// Seals the active segment now if it holds data (for on-demand compaction).
    pub(crate) fn roll_now(&self) -> Result<()> {
        let mut w = lock(&self.writer);
        let _lock = self.write_lock()?;
        let mut f = self.head.writer_fields();
        if f.active_len == 0 {
            return Ok(());
        }
        self.head.set_pending();
        self.ensure_active(&mut w.active, &f)?;
        self.roll_locked(&mut w.active, &mut f, now_ms())?;
        self.head.publish(&f);
        Ok(())
    }

    /// fsyncs what is not yet synced (interval durability): the segments
    /// sealed since the last flush (data and index), the directory that
    /// names them, and the active segment; then moves the recovery point to
    /// the synced end.
    pub fn flush(&self) -> Result<()> {
        // Sync without holding the write lock, so appends go on meanwhile;
        // then record what is now durable (unless a later flush got further).
        let (recovery_base, base, len) = {
            let _lock = self.write_lock()?;
            let f = self.head.writer_fields();
            if f.recovery_base == f.active_base && f.recovery_pos >= f.active_len {
                return Ok(());
            }
            (f.recovery_base, f.active_base, f.active_len)
        };
        if recovery_base < base {
            let bases = segment::list_bases(&self.dir)?;
            for &sealed in sealed_since(&bases, recovery_base, base) {
                let path = segment::log_path(&self.dir, sealed);
                for (file, what) in [(path.clone(), "segment"), (segment::index_path(&self.dir, sealed), "index")] {
                    sync_if_present(&file).context(|| format!("syncing the sealed {what} {}", file.display()))?;
                }
            }
            crate::fsutil::sync_dir(&self.dir)?;
        }
        let path = segment::log_path(&self.dir, base);
        if !sync_if_present(&path).context(|| format!("syncing {}", path.display()))? {
            // Retention or compaction replaced it meanwhile: the next flush syncs what is there now.
            return Ok(());
        }
        let _lock = self.write_lock()?;
        let mut f = self.head.writer_fields();
        if (f.recovery_base, f.recovery_pos) < (base, len) {
            f.recovery_base = base;
            f.recovery_pos = len;
            self.head.publish(&f);
        }
        Ok(())
    }

    /// Starts the kernel writing the active segment's new bytes to disk
    /// without waiting (interval durability), so that the next [`Self::flush`]
    /// and the one at close wait for less: a job that wrote hundreds of MB
    /// since the last flush otherwise waits for all of it when it stops.
    /// `since` is what the previous call returned; nothing happens until
    /// `min_bytes` are new. Returns the (segment base, end) now covered.
    pub(crate) fn start_writeback(
        &self,
        since: Option<WritebackMark>,
        min_bytes: u64,
    ) -> Result<Option<WritebackMark>> {
        let s = self.snapshot()?;
        let Some(range) = writeback_range(since, (s.active_base, s.active_len), min_bytes) else {
            return Ok(None);
        };
        let path = segment::log_path(&self.dir, s.active_base);
        let file = match File::open(&path) {
            Ok(file) => file,
            // Rolled and removed meanwhile: the next call covers the new segment.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context(|| format!("opening {}", path.display())),
        };
        crate::fsutil::start_writeback(&file, range.start, range.end)
            .context(|| format!("starting the writeback of {}", path.display()))?;
        Ok(Some((s.active_base, range.end)))
    }

    /// Applies a maintenance change (retention, compaction) to the head:
    /// bumps the segment generation and sets the oldest offset.
    pub(crate) fn publish_segment_change(&self, log_start: Option<u64>) -> Result<()> {
        let _lock = self.write_lock()?;
        let mut f = self.head.writer_fields();
        f.segments_gen = f.segments_gen.wrapping_add(1);
        if let Some(start) = log_start {
            f.log_start = f.log_start.max(start);
        }
        if f.recovery_base < f.log_start {
            f.recovery_base = f.log_start;
            f.recovery_pos = 0;
        }
        self.head.publish(&f);
        Ok(())
    }
}

/// The sealed segments a flush syncs: from the one holding the recovery
/// point (whose tail may have been written since) up to the active one.
fn sealed_since(bases: &[u64], recovery_base: u64, active_base: u64) -> &[u64] {
    let from = bases.partition_point(|&b| b <= recovery_base).saturating_sub(1);
    let to = bases.partition_point(|&b| b < active_base);
    &bases[from.min(to)..to]
}

/// A segment's base offset and the byte position writeback was started up to.
pub(crate) type WritebackMark = (u64, u64);

/// The bytes of the active segment (`(base, len)`) to start writing back:
/// from where the last start ended, or from 0 once the segment rolled; none
/// until at least `min_bytes` (at least one) are new.
fn writeback_range(since: Option<WritebackMark>, active: (u64, u64), min_bytes: u64) -> Option<std::ops::Range<u64>> {
    let (base, len) = active;
    let from = match since {
        Some((b, end)) if b == base => end.min(len),
        _ => 0,
    };
    (len - from >= min_bytes.max(1)).then_some(from..len)
}

/// `fdatasync`s a file by path; `false` if it no longer exists (retention or
/// compaction removed it, which syncs what replaces it).
fn sync_if_present(path: &std::path::Path) -> std::io::Result<bool> {
    match File::open(path) {
        Ok(file) => file.sync_data().map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::{sealed_since, writeback_range};

    #[test]
    fn writeback_of_a_real_segment_covers_what_was_appended_since_the_last_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = crate::Log::open(dir.path()).unwrap();
        let p = log.create_stream("s", crate::StreamConfig::new(1)).unwrap().partition(0).unwrap();
        let value = vec![7u8; 64 << 10];
        let append = |n| {
            for _ in 0..n {
                p.append(&[crate::Record::value(&value)]).unwrap();
            }
        };
        append(20);
        let mark = p.start_writeback(None, 1 << 20).unwrap().expect("1.3 MB are new");
        assert_eq!(mark, (0, p.snapshot().unwrap().active_len));
        assert_eq!(p.start_writeback(Some(mark), 1 << 20).unwrap(), None, "nothing new");
        append(20);
        let next = p.start_writeback(Some(mark), 1 << 20).unwrap().expect("1.3 MB more");
        assert_eq!(next, (0, p.snapshot().unwrap().active_len));
        assert!(next.1 > mark.1);
    }

    #[test]
    fn writeback_starts_where_the_last_one_ended_once_enough_is_new() {
        // First call: the whole active segment, if it holds enough.
        assert_eq!(writeback_range(None, (0, 5 << 20), 1 << 20), Some(0..5 << 20));
        assert_eq!(writeback_range(None, (0, 1000), 1 << 20), None);
        // Same segment: only the new bytes, once there are enough of them.
        assert_eq!(writeback_range(Some((0, 5 << 20)), (0, 6 << 20), 1 << 20), Some(5 << 20..6 << 20));
        assert_eq!(writeback_range(Some((0, 5 << 20)), (0, (5 << 20) + 10), 1 << 20), None);
        // Rolled since: the new segment from its start.
        assert_eq!(writeback_range(Some((0, 5 << 20)), (900, 2 << 20), 1 << 20), Some(0..2 << 20));
        // Recovery cut the segment below the mark: nothing new, no underflow.
        assert_eq!(writeback_range(Some((0, 5 << 20)), (0, 4 << 20), 1 << 20), None);
        // A zero minimum still needs one new byte.
        assert_eq!(writeback_range(Some((0, 10)), (0, 10), 0), None);
        assert_eq!(writeback_range(Some((0, 10)), (0, 11), 0), Some(10..11));
    }

    #[test]
    fn a_flush_syncs_the_segments_sealed_since_the_recovery_point() {
        let bases = [0, 100, 200, 300];
        // Nothing sealed since: only the active segment is synced.
        assert_eq!(sealed_since(&bases, 300, 300), &[] as &[u64]);
        // Rolled twice since the recovery point at the start of 100.
        assert_eq!(sealed_since(&bases, 100, 300), &[100, 200]);
        // A recovery point inside a segment that compaction merged away
        // still covers the segment holding it.
        assert_eq!(sealed_since(&bases, 150, 300), &[100, 200]);
        // Retention removed everything before the active segment.
        assert_eq!(sealed_since(&[300], 100, 300), &[] as &[u64]);
        // A recovery point older than every file (retention moved past it).
        assert_eq!(sealed_since(&[200, 300], 0, 300), &[200]);
    }
}

mod recovery;
