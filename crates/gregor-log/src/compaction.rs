//! Log compaction: keep only the latest record per key, preserving offsets.
//!
//! Two passes under the partition's maintenance lock (never the write lock,
//! so appends continue): first map every key's hash (128-bit xxh3, so that a
//! collision, which would drop a live key, is practically impossible) to its
//! newest offset across all segments including the active one; then rewrite
//! each sealed segment keeping a record only if it is its key's newest, and
//! dropping tombstones older than `delete_retention_ms` (measured from the
//! tombstone's timestamp). Each rewritten segment replaces the old one by an
//! atomic rename; consecutive small segments are then concatenated. Readers
//! holding the old files keep reading them; new reads see the new ones.
//! The active segment is never rewritten.
//!
//! Transactions (see `crate::txn`): a first pass collects every marker.
//! Records of a committed transaction count like any record (and are
//! rewritten as plain records: they are decided); those of an aborted one are
//! dropped and supersede nothing; those of a transaction without a marker yet
//! are kept as written. Markers are kept for `delete_retention_ms` (as
//! tombstones), so that a reader holding a transaction's records still finds
//! its marker. Compaction never changes what a read-committed reader replaying
//! the partition ends with, key by key.

use crate::batch::{BatchEncoder, Marker, RecordIter, TxnStamp, seal};
use crate::config::CleanupPolicy;
use crate::error::{IoContext, LogError, Result};
use crate::fsutil::sync_dir;
use crate::partition::Partition;
use crate::segment::{self, BatchScanner, Segment};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_128;

/// What a compaction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    /// Records in the sealed segments before.
    pub records_before: u64,
    /// Records kept.
    pub records_after: u64,
    /// Bytes of the sealed segments before.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
    /// Segment files rewritten or merged.
    pub segments_rewritten: usize,
}

impl Partition {
    /// Compacts the sealed segments. With `seal_active`, the active segment is
    /// sealed first so that everything written so far is compacted (the
    /// on-demand `gregor stream compact`); the background pass leaves it alone.
    ///
    /// # Errors
    /// [`LogError::InvalidConfig`] if the stream is not compacted; I/O and
    /// corruption errors (compaction never rewrites data it cannot read).
    pub fn compact(&self, now_ms: i64, seal_active: bool) -> Result<CompactionOutcome> {
        if self.config.cleanup_policy != CleanupPolicy::Compact {
            return Err(LogError::InvalidConfig(format!(
                "stream '{}' is not compacted (create it with --compact to keep only the latest value per key)",
                self.stream
            )));
        }
        let _maintenance = self.maintenance.lock()?;
        self.remove_leftovers()?;
        self.remove_merged_originals()?;
        if seal_active {
            self.roll_now()?;
        }
        let snap = self.snapshot()?;
        let set = self.segment_set(snap.segments_gen)?;
        let sealed: Vec<Arc<Segment>> = set.list.iter().filter(|s| s.base < snap.active_base).cloned().collect();
        let mut outcome = CompactionOutcome::default();
        if sealed.is_empty() {
            return Ok(outcome);
        }
        let limit = self.compaction_limit()?;
        // Every transaction's end (its first marker's offset), wherever it lies.
        let mut decided: HashMap<TxnStamp, (Marker, u64)> = HashMap::new();
        for seg in &set.list {
            let end = self.readable_end(seg, &snap)?;
            let mut scan = BatchScanner::new(&seg.file, &seg.path, 0, end);
            while let Some((pos, header, bytes)) = scan.next_batch(true)? {
                if let (true, Some(stamp)) = (header.control, header.txn) {
                    let record = RecordIter::new(header, bytes).next().and_then(|r| r.ok());
                    let marker = record.and_then(|r| Marker::from_key(r.key));
                    let marker = marker.ok_or_else(|| {
                        corrupt(seg, pos, crate::batch::FormatError::Invalid("a control batch without a marker".into()))
                    })?;
                    decided.entry(stamp).or_insert((marker, header.base_offset));
                }
            }
        }
        let mut latest: HashMap<u128, u64> = HashMap::new();
        // Keys of records whose transaction is still open: when it commits,
        // a later tombstone of the key must still be there to delete them.
        let mut open_keys: HashSet<u128> = HashSet::new();
        for seg in &set.list {
            let end = self.readable_end(seg, &snap)?;
            let mut scan = BatchScanner::new(&seg.file, &seg.path, 0, end);
            while let Some((pos, header, bytes)) = scan.next_batch(true)? {
                // Only committed transactional records supersede anything.
                match fate(&decided, &header) {
                    _ if header.control => continue,
                    Fate::Open => {
                        for record in RecordIter::new(header, bytes) {
                            let record = record.map_err(|e| corrupt(seg, pos, e))?;
                            open_keys.insert(xxh3_128(record.key.unwrap_or_default()));
                        }
                        continue;
                    }
                    Fate::Dropped => continue,
                    Fate::Committed | Fate::Plain => {}
                }
                for record in RecordIter::new(header, bytes) {
                    let record = record.map_err(|e| corrupt(seg, pos, e))?;
                    if record.offset >= limit {
                        break;
                    }
                    latest.insert(xxh3_128(record.key.unwrap_or_default()), record.offset);
                }
            }
        }
        let mut sizes = Vec::with_capacity(sealed.len());
        for seg in &sealed {
            let (before, after, bytes_before, bytes_after) =
                self.clean_segment(seg, &latest, &decided, &open_keys, limit, now_ms)?;
            outcome.records_before += before;
            outcome.records_after += after;
            outcome.bytes_before += bytes_before;
            outcome.bytes_after += bytes_after;
            if after < before {
                outcome.segments_rewritten += 1;
            }
            sizes.push(bytes_after);
        }
        outcome.segments_rewritten += self.merge_small(&sealed, &sizes, snap.active_base)?;
        sync_dir(&self.dir)?;
        self.publish_segment_change(None)?;
        tracing::debug!(stream = %self.stream, partition = self.id, ?outcome, "compacted");
        Ok(outcome)
    }

    /// The offset from which compaction must leave records alone: `u64::MAX`
    /// for ordinary compacted streams; for streams created with
    /// `compaction_bounded` (store changelogs), the last offset given to
    /// [`Partition::set_compaction_limit`], or 0 if none was given yet.
    fn compaction_limit(&self) -> Result<u64> {
        if !self.config.compaction_bounded {
            return Ok(u64::MAX);
        }
        let path = self.dir.join(LIMIT_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| LogError::Corrupt {
                file: path.clone(),
                position: 0,
                reason: format!("'{}' is not an offset", text.trim()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e).context(|| format!("reading {}", path.display())),
        }
    }

    /// Lets compaction use and drop records below `offset` only, so that
    /// replaying the partition up to any offset at or above it gives the same
    /// latest values as before compaction. A store changelog sets this to the
    /// changelog offset of its last checkpoint. Only for streams created with
    /// `compaction_bounded`; the limit never moves backwards.
    pub fn set_compaction_limit(&self, offset: u64) -> Result<()> {
        if !self.config.compaction_bounded {
            return Err(LogError::InvalidConfig(format!(
                "stream '{}' was not created with compaction_bounded",
                self.stream
            )));
        }
        // A lock of its own, not the maintenance lock: a commit sets the
        // limit and must not wait for a compaction pass, which reads the
        // limit once when it starts (the file is replaced atomically).
        let lock_path = self.dir.join(LIMIT_LOCK);
        let lock = crate::fsutil::open_rw(&lock_path)?;
        crate::fsutil::with_flock(&lock, &lock_path, || {
            if self.compaction_limit()? >= offset {
                return Ok(());
            }
            let path = self.dir.join(LIMIT_FILE);
            let tmp = self.dir.join(format!("{LIMIT_FILE}.tmp"));
            std::fs::write(&tmp, offset.to_string()).context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).context(|| format!("renaming {}", tmp.display()))
        })
    }

    /// Rewrites one sealed segment without superseded records and expired
    /// tombstones. Returns (records before, after, bytes before, after).
    fn clean_segment(
        &self,
        seg: &Segment,
        latest: &HashMap<u128, u64>,
        decided: &HashMap<TxnStamp, (Marker, u64)>,
        open_keys: &HashSet<u128>,
        limit: u64,
        now_ms: i64,
    ) -> Result<(u64, u64, u64, u64)> {
        let end = seg.len()?;
        let out_path = cleaned_path(&self.dir, seg.base);
        let out = create_rw(&out_path)?;
        let mut out_len = 0u64;
        let (mut before, mut after) = (0u64, 0u64);
        let mut encoder = BatchEncoder::new();
        let mut scan = BatchScanner::new(&seg.file, &seg.path, 0, end);
        // Whether the rewrite differs from the segment (beyond dropped records).
        let mut changed = false;
        while let Some((pos, header, bytes)) = scan.next_batch(true)? {
            let expired = |ts: i64| now_ms.saturating_sub(ts) >= self.config.delete_retention_ms as i64;
            let verbatim = match (header.control, fate(decided, &header)) {
                // A marker stays while readers may still need it.
                (true, _) => !expired(header.max_timestamp),
                // Not decided yet: kept as written, for its marker to come.
                (false, Fate::Open) => true,
                (false, Fate::Dropped) => {
                    before += u64::from(header.record_count);
                    changed = true;
                    continue;
                }
                // Committed (rewritten below as plain records) or plain.
                (false, Fate::Committed | Fate::Plain) => false,
            };
            if verbatim || header.control {
                before += u64::from(header.record_count);
                if verbatim {
                    let batch = &bytes[..header.total_len];
                    out.write_all_at(batch, out_len).context(|| format!("writing {}", out_path.display()))?;
                    out_len += batch.len() as u64;
                    after += u64::from(header.record_count);
                }
                continue;
            }
            changed |= header.txn.is_some();
            encoder.clear();
            let mut base = None;
            for record in RecordIter::new(header, bytes) {
                let record = record.map_err(|e| corrupt(seg, pos, e))?;
                before += 1;
                let hash = xxh3_128(record.key.unwrap_or_default());
                let newest = latest.get(&hash) == Some(&record.offset);
                let expired_tombstone = record.value.is_none()
                    && now_ms.saturating_sub(record.timestamp) >= self.config.delete_retention_ms as i64
                    && !open_keys.contains(&hash);
                if record.offset >= limit || (newest && !expired_tombstone) {
                    let base = *base.get_or_insert(record.offset);
                    encoder.push_decoded((record.offset - base) as u32, &record);
                    after += 1;
                }
            }
            if let Some(base) = base {
                let batch = encoder.finish();
                seal(batch, base);
                out.write_all_at(batch, out_len).context(|| format!("writing {}", out_path.display()))?;
                out_len += batch.len() as u64;
            }
        }
        if after == before && !changed {
            drop(out);
            std::fs::remove_file(&out_path).context(|| format!("removing {}", out_path.display()))?;
            return Ok((before, after, end, end));
        }
        out.sync_all().context(|| format!("syncing {}", out_path.display()))?;
        self.install(seg.base, &out, &out_path, out_len)?;
        Ok((before, after, end, out_len))
    }

    /// Concatenates runs of consecutive sealed segments that together fit in
    /// one segment. Returns how many segment files were merged away.
    fn merge_small(&self, sealed: &[Arc<Segment>], sizes: &[u64], active_base: u64) -> Result<usize> {
        let mut merged = 0;
        let mut i = 0;
        while i < sealed.len() {
            let first = sealed[i].base;
            let mut total = sizes[i];
            let mut j = i + 1;
            while j < sealed.len() {
                let next_start = sealed.get(j + 1).map_or(active_base, |s| s.base);
                if total + sizes[j] > self.config.segment_bytes || next_start - first > u64::from(u32::MAX) {
                    break;
                }
                total += sizes[j];
                j += 1;
            }
            if j - i >= 2 {
                self.concatenate(first, &sealed[i..j])?;
                merged += j - i - 1;
            }
            i = j;
        }
        Ok(merged)
    }

    fn concatenate(&self, first: u64, group: &[Arc<Segment>]) -> Result<()> {
        let out_path = cleaned_path(&self.dir, first);
        let mut out = create_rw(&out_path)?;
        for seg in group {
            // Open by name: clean_segment may just have replaced the file.
            let path = segment::log_path(&self.dir, seg.base);
            let mut input = std::fs::File::open(&path).context(|| format!("opening {}", path.display()))?;
            std::io::copy(&mut input, &mut out)
                .context(|| format!("copying {} into {}", path.display(), out_path.display()))?;
        }
        out.sync_all().context(|| format!("syncing {}", out_path.display()))?;
        let len = crate::fsutil::file_len(&out, &out_path)?;
        self.install(first, &out, &out_path, len)?;
        for seg in &group[1..] {
            self.remove_segment_files(seg.base)?;
        }
        Ok(())
    }

    /// Puts a rewritten segment (synced, at `out_path`) in place of the
    /// segment `base`: its index is built beside it, then the log is renamed
    /// over the old one, then the index. Readers check index hints against
    /// the data, so the instant between the two renames is harmless.
    fn install(&self, base: u64, out: &std::fs::File, out_path: &std::path::Path, len: u64) -> Result<()> {
        let index_tmp = self.dir.join(format!("{base:020}.index.cleaned"));
        segment::rebuild_index(base, out, out_path, len, self.config.index_interval_bytes, &index_tmp)?;
        let path = segment::log_path(&self.dir, base);
        std::fs::rename(out_path, &path).context(|| format!("replacing {}", path.display()))?;
        let index = segment::index_path(&self.dir, base);
        std::fs::rename(&index_tmp, &index).context(|| format!("replacing {}", index.display()))
    }

    /// Deletes segments left behind by a merge that crashed after installing
    /// the merged file: their records all lie inside the segment before them.
    fn remove_merged_originals(&self) -> Result<()> {
        let snap = self.snapshot()?;
        let set = self.segment_set(snap.segments_gen)?;
        let mut removed = false;
        let mut covered_to: Option<u64> = None;
        for seg in set.list.iter().filter(|s| s.base < snap.active_base) {
            let last = seg.sealed_last_offset()?;
            if let Some(covered) = covered_to
                && seg.base <= covered
            {
                if last.is_some_and(|l| l > covered) {
                    return Err(LogError::Corrupt {
                        file: seg.path.clone(),
                        position: 0,
                        reason: format!(
                            "segment overlaps the one before it (which ends at offset {covered}) without being contained in it"
                        ),
                    });
                }
                tracing::warn!(file = %seg.path.display(), "removing a segment left behind by an interrupted merge");
                self.remove_segment_files(seg.base)?;
                removed = true;
                continue;
            }
            covered_to = last.or(covered_to);
        }
        if removed {
            self.publish_segment_change(None)?;
        }
        Ok(())
    }

    /// Removes temporary files of an interrupted compaction.
    fn remove_leftovers(&self) -> Result<()> {
        for entry in std::fs::read_dir(&self.dir).context(|| format!("listing {}", self.dir.display()))? {
            let entry = entry.context(|| format!("listing {}", self.dir.display()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".cleaned") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

/// Creates (truncating) a file opened for reading and writing.
/// What becomes of a data batch's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Not transactional.
    Plain,
    /// Its transaction committed, and it came before the marker.
    Committed,
    /// Aborted, or written after its transaction's marker (a fenced
    /// producer's): a read-committed reader never sees it.
    Dropped,
    /// No marker yet.
    Open,
}

fn fate(decided: &HashMap<TxnStamp, (Marker, u64)>, header: &crate::batch::BatchHeader) -> Fate {
    let Some(stamp) = header.txn else { return Fate::Plain };
    match decided.get(&stamp) {
        None => Fate::Open,
        Some((Marker::Commit, at)) if header.base_offset < *at => Fate::Committed,
        Some(_) => Fate::Dropped,
    }
}

fn create_rw(path: &std::path::Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .context(|| format!("creating {}", path.display()))
}

/// Per-partition file holding the compaction limit of a bounded stream.
const LIMIT_FILE: &str = "compaction.limit";
const LIMIT_LOCK: &str = "compaction.limit.lock";

fn cleaned_path(dir: &std::path::Path, base: u64) -> std::path::PathBuf {
    dir.join(format!("{base:020}.log.cleaned"))
}

fn corrupt(seg: &Segment, pos: u64, e: crate::batch::FormatError) -> LogError {
    LogError::Corrupt { file: seg.path.clone(), position: pos, reason: e.to_string() }
}
