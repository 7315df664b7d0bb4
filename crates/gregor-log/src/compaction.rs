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

use crate::batch::{BatchEncoder, RecordIter, seal};
use crate::config::CleanupPolicy;
use crate::error::{IoContext, LogError, Result};
use crate::fsutil::{FileLock, sync_dir};
use crate::partition::Partition;
use crate::segment::{self, BatchScanner, Segment};
use std::collections::HashMap;
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
        let _maintenance = FileLock::exclusive(&self.maint_lock, &self.maint_path)?;
        self.remove_leftovers()?;
        if seal_active {
            self.roll_now()?;
        }
        let snap = self.snapshot()?;
        let set = self.segment_set(snap.segments_gen)?;
        let sealed: Vec<Arc<Segment>> = set
            .list
            .iter()
            .filter(|s| s.base < snap.active_base)
            .cloned()
            .collect();
        let mut outcome = CompactionOutcome::default();
        if sealed.is_empty() {
            return Ok(outcome);
        }
        let mut latest: HashMap<u128, u64> = HashMap::new();
        for seg in &set.list {
            let end = self.readable_end(seg, &snap)?;
            let mut scan = BatchScanner::new(&seg.file, &seg.path, 0, end);
            while let Some((pos, header, bytes)) = scan.next_batch(true)? {
                for record in RecordIter::new(header, bytes) {
                    let record = record.map_err(|e| corrupt(seg, pos, e))?;
                    latest.insert(xxh3_128(record.key.unwrap_or_default()), record.offset);
                }
            }
        }
        let mut sizes = Vec::with_capacity(sealed.len());
        for seg in &sealed {
            let (before, after, bytes_before, bytes_after) =
                self.clean_segment(seg, &latest, now_ms)?;
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

    /// Rewrites one sealed segment without superseded records and expired
    /// tombstones. Returns (records before, after, bytes before, after).
    fn clean_segment(
        &self,
        seg: &Segment,
        latest: &HashMap<u128, u64>,
        now_ms: i64,
    ) -> Result<(u64, u64, u64, u64)> {
        let end = seg.len()?;
        let out_path = cleaned_path(&self.dir, seg.base);
        let out = create_rw(&out_path)?;
        let mut out_len = 0u64;
        let (mut before, mut after) = (0u64, 0u64);
        let mut encoder = BatchEncoder::new();
        let mut scan = BatchScanner::new(&seg.file, &seg.path, 0, end);
        while let Some((pos, header, bytes)) = scan.next_batch(true)? {
            encoder.clear();
            let mut base = None;
            for record in RecordIter::new(header, bytes) {
                let record = record.map_err(|e| corrupt(seg, pos, e))?;
                before += 1;
                let newest =
                    latest.get(&xxh3_128(record.key.unwrap_or_default())) == Some(&record.offset);
                let expired_tombstone = record.value.is_none()
                    && now_ms.saturating_sub(record.timestamp)
                        >= self.config.delete_retention_ms as i64;
                if newest && !expired_tombstone {
                    let base = *base.get_or_insert(record.offset);
                    encoder.push_decoded((record.offset - base) as u32, &record);
                    after += 1;
                }
            }
            if let Some(base) = base {
                let batch = encoder.finish();
                seal(batch, base);
                out.write_all_at(batch, out_len)
                    .context(|| format!("writing {}", out_path.display()))?;
                out_len += batch.len() as u64;
            }
        }
        if after == before {
            drop(out);
            std::fs::remove_file(&out_path)
                .context(|| format!("removing {}", out_path.display()))?;
            return Ok((before, after, end, end));
        }
        out.sync_all()
            .context(|| format!("syncing {}", out_path.display()))?;
        segment::rebuild_index(
            &self.dir,
            seg.base,
            &out,
            &out_path,
            out_len,
            self.config.index_interval_bytes,
        )?;
        let path = segment::log_path(&self.dir, seg.base);
        std::fs::rename(&out_path, &path).context(|| format!("replacing {}", path.display()))?;
        Ok((before, after, end, out_len))
    }

    /// Concatenates runs of consecutive sealed segments that together fit in
    /// one segment. Returns how many segment files were merged away.
    fn merge_small(
        &self,
        sealed: &[Arc<Segment>],
        sizes: &[u64],
        active_base: u64,
    ) -> Result<usize> {
        let mut merged = 0;
        let mut i = 0;
        while i < sealed.len() {
            let first = sealed[i].base;
            let mut total = sizes[i];
            let mut j = i + 1;
            while j < sealed.len() {
                let next_start = sealed.get(j + 1).map_or(active_base, |s| s.base);
                if total + sizes[j] > self.config.segment_bytes
                    || next_start - first > u64::from(u32::MAX)
                {
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
            let mut input =
                std::fs::File::open(&path).context(|| format!("opening {}", path.display()))?;
            std::io::copy(&mut input, &mut out)
                .context(|| format!("copying {} into {}", path.display(), out_path.display()))?;
        }
        out.sync_all()
            .context(|| format!("syncing {}", out_path.display()))?;
        let len = crate::fsutil::file_len(&out, &out_path)?;
        segment::rebuild_index(
            &self.dir,
            first,
            &out,
            &out_path,
            len,
            self.config.index_interval_bytes,
        )?;
        let path = segment::log_path(&self.dir, first);
        std::fs::rename(&out_path, &path).context(|| format!("replacing {}", path.display()))?;
        for seg in &group[1..] {
            self.remove_segment_files(seg.base)?;
        }
        Ok(())
    }

    /// Removes temporary files of an interrupted compaction.
    fn remove_leftovers(&self) -> Result<()> {
        for entry in
            std::fs::read_dir(&self.dir).context(|| format!("listing {}", self.dir.display()))?
        {
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
fn create_rw(path: &std::path::Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .context(|| format!("creating {}", path.display()))
}

fn cleaned_path(dir: &std::path::Path, base: u64) -> std::path::PathBuf {
    dir.join(format!("{base:020}.log.cleaned"))
}

fn corrupt(seg: &Segment, pos: u64, e: crate::batch::FormatError) -> LogError {
    LogError::Corrupt {
        file: seg.path.clone(),
        position: pos,
        reason: e.to_string(),
    }
}
