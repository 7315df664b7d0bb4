//! Recovery: making a partition's head agree with its segment files.
//!
//! Runs under the write lock, when a process opens a partition and when a
//! writer finds that another writer died mid-append. Three cases:
//! - the head is consistent with the files (the common case): nothing to do;
//! - a writer died mid-append on this boot: everything it published is intact
//!   (the page cache survives a process), so only its unpublished bytes past
//!   the published end are cut off: constant time;
//! - otherwise (a reboot, a missing or foreign head, a writer that died inside
//!   the publish itself): every batch after the last fsync point (the recovery
//!   point) is validated; the first torn or corrupt batch there and everything
//!   after it is truncated and reported. Damage before the recovery point is
//!   data acknowledged as durable, so it is an error naming file and byte.

use super::{Partition, RecoveryReport, lock};
use crate::batch::FormatError;
use crate::error::{IoContext, LogError, Result};
use crate::fsutil::{now_ms, open_rw, sync_dir};
use crate::head::{NO_INDEX, WriterFields};
use crate::segment::{self, BatchScanner, INDEX_ENTRY_LEN};

impl Partition {
    /// Makes the head trustworthy again, rebuilding it from the files if needed.
    pub(crate) fn recover_locked(&self) -> Result<()> {
        let bases = segment::list_bases(&self.dir)?;
        let initialized = self.head.is_initialized();
        let f = self.head.writer_fields();
        let Some(&last) = bases.last() else {
            return self.initialize_empty(initialized, &f);
        };
        if initialized
            && self.head.boot_id_matches()
            && !self.head.seq_is_odd()
            && bases.binary_search(&f.active_base).is_ok()
        {
            let path = segment::log_path(&self.dir, f.active_base);
            let len = std::fs::metadata(&path).context(|| format!("reading the size of {}", path.display()))?.len();
            if !self.head.pending() && last == f.active_base && len == f.active_len {
                return Ok(());
            }
            if self.head.pending() && len >= f.active_len {
                return self.cut_unpublished(&bases, f);
            }
        }
        self.full_recovery(bases, initialized, &f)
    }

    fn initialize_empty(&self, initialized: bool, old: &WriterFields) -> Result<()> {
        // A new partition, or one whose files were all removed by hand: offsets
        // still only grow, so it restarts at the recorded end.
        let base = if initialized { old.next_offset } else { 0 };
        let generation = if initialized { old.segments_gen.wrapping_add(1) } else { 1 };
        drop(self.open_active(base, generation, true)?);
        sync_dir(&self.dir)?;
        self.head.publish(&WriterFields {
            next_offset: base,
            active_base: base,
            active_len: 0,
            log_start: base,
            segments_gen: generation,
            recovery_base: base,
            recovery_pos: 0,
            active_max_ts: i64::MIN,
            active_created_ms: now_ms(),
            index_last_pos: NO_INDEX,
        });
        self.head.stamp();
        Ok(())
    }

    /// A writer died after `set_pending` on this boot: drop what it did not publish.
    fn cut_unpublished(&self, bases: &[u64], mut f: WriterFields) -> Result<()> {
        let mut dropped = 0;
        for &later in bases.iter().filter(|&&b| b > f.active_base) {
            dropped += self.remove_segment_files(later)?;
        }
        let path = segment::log_path(&self.dir, f.active_base);
        let file = open_rw(&path)?;
        dropped += crate::fsutil::file_len(&file, &path)? - f.active_len;
        file.set_len(f.active_len).context(|| format!("truncating {}", path.display()))?;
        let index_path = segment::index_path(&self.dir, f.active_base);
        let index = open_rw(&index_path)?;
        let index_len = crate::fsutil::file_len(&index, &index_path)?;
        let keep = if f.index_last_pos == NO_INDEX {
            0
        } else {
            // Entries are in position order; keep those up to the last published one.
            let mut buf = vec![0u8; index_len as usize];
            crate::fsutil::read_exact_at(&index, &mut buf, 0, &index_path)?;
            let n = buf
                .chunks_exact(INDEX_ENTRY_LEN)
                .take_while(|c| u64::from(u32::from_le_bytes([c[4], c[5], c[6], c[7]])) <= f.index_last_pos)
                .count();
            (n * INDEX_ENTRY_LEN) as u64
        };
        index.set_len(keep).context(|| format!("truncating {}", index_path.display()))?;
        f.segments_gen = f.segments_gen.wrapping_add(1);
        self.head.publish(&f);
        if dropped > 0 {
            tracing::warn!(file = %path.display(), position = f.active_len, bytes_dropped = dropped, "dropped an unpublished append of a writer that died");
            *lock(&self.recovery) =
                RecoveryReport { bytes_dropped: dropped, truncated_file: Some(path), truncated_at: f.active_len };
        }
        Ok(())
    }

    fn full_recovery(&self, mut bases: Vec<u64>, initialized: bool, old: &WriterFields) -> Result<()> {
        // Scan from the segment holding the recovery point (the last segment
        // if the head is unknown). Earlier segments were synced before the
        // recovery point moved past them; the later ones, sealed since, were
        // not (an interval roll does not sync), so their indexes are rebuilt.
        let (start, durable_pos) = if initialized {
            let i = bases.partition_point(|&b| b <= old.recovery_base).saturating_sub(1);
            (i, if bases[i] == old.recovery_base { old.recovery_pos } else { 0 })
        } else {
            (bases.len() - 1, 0)
        };
        let mut expected = bases[start];
        let mut report = RecoveryReport::default();
        let (mut active_len, mut active_max_ts, mut index_last_pos) = (0, i64::MIN, NO_INDEX);
        let mut i = start;
        while i < bases.len() {
            let base = bases[i];
            let path = segment::log_path(&self.dir, base);
            let file = open_rw(&path)?;
            let len = crate::fsutil::file_len(&file, &path)?;
            let mut scan = BatchScanner::new(&file, &path, 0, len);
            expected = expected.max(base);
            let mut valid_end = 0;
            let fault = loop {
                match scan.next_batch_or_fault(true)? {
                    Ok(Some((pos, header, _))) if header.base_offset < expected => {
                        let why = format!(
                            "batch offset {} goes backwards (expected at least {expected})",
                            header.base_offset
                        );
                        break Some((pos, FormatError::Invalid(why)));
                    }
                    Ok(Some((pos, header, _))) => {
                        expected = header.last_offset() + 1;
                        valid_end = pos + header.total_len as u64;
                    }
                    Ok(None) => break None,
                    Err(f) => break Some((f.position, f.error)),
                }
            };
            let is_last = i + 1 == bases.len();
            // A sealed segment that ends short of the next one's base lost its
            // tail (a power failure before the flush after its roll), unless
            // compaction removed those records. Without compaction segments
            // are contiguous, so the gap is a torn tail like any other.
            let fault = match fault {
                None if !is_last
                    && expected < bases[i + 1]
                    && self.config.cleanup_policy != crate::config::CleanupPolicy::Compact =>
                {
                    let why =
                        format!("the segment ends at offset {expected} but the next one starts at {}", bases[i + 1]);
                    Some((valid_end, FormatError::Invalid(why)))
                }
                fault => fault,
            };
            let faulted = fault.is_some();
            if let Some((position, error)) = fault {
                if i == start && position < durable_pos {
                    return Err(LogError::Corrupt {
                        file: path,
                        position,
                        reason: format!("{error} in data that was already synced to disk"),
                    });
                }
                // Intact data after the damage means it is not a torn tail. With
                // no head we cannot tell what was synced, so refuse; past the
                // recovery point the policy allowed losing it, so truncate
                // (as Kafka does) but say loudly what happened.
                if let Some((file_with_data, at)) =
                    self.valid_data_after(&file, &path, position, len, &bases[i + 1..])?
                {
                    if !initialized {
                        return Err(LogError::Corrupt {
                            file: path,
                            position,
                            reason: format!(
                                "{error}, followed by intact data in {} at byte {at}: this is damage inside the log, not a torn tail, so nothing was truncated",
                                file_with_data.display()
                            ),
                        });
                    }
                    tracing::error!(file = %path.display(), position, "{error} after the last fsync point, followed by intact data in {} at byte {at}: truncating everything from the damage on, as the durability policy allows", file_with_data.display());
                }
                let mut dropped = len - position;
                for &later in &bases[i + 1..] {
                    dropped += self.remove_segment_files(later)?;
                }
                bases.truncate(i + 1);
                file.set_len(position).context(|| format!("truncating {}", path.display()))?;
                tracing::warn!(file = %path.display(), position, bytes_dropped = dropped, "recovered a torn or corrupt tail: {error}");
                report = RecoveryReport {
                    bytes_dropped: dropped,
                    truncated_file: Some(path.clone()),
                    truncated_at: position,
                };
            }
            let index_out = segment::index_path(&self.dir, base);
            let interval = self.config.index_interval_bytes;
            let (last_index, max_ts) = segment::rebuild_index(base, &file, &path, valid_end, interval, &index_out)?;
            if faulted || is_last {
                (active_len, active_max_ts, index_last_pos) = (valid_end, max_ts, last_index);
            }
            file.sync_data().context(|| format!("syncing {}", path.display()))?;
            i += 1;
        }
        sync_dir(&self.dir)?;
        let active_base = bases[bases.len() - 1];
        self.head.publish(&WriterFields {
            next_offset: expected,
            active_base,
            active_len,
            log_start: bases[0],
            segments_gen: if initialized { old.segments_gen.wrapping_add(1) } else { 1 },
            recovery_base: active_base,
            recovery_pos: active_len,
            active_max_ts,
            active_created_ms: now_ms(),
            index_last_pos,
        });
        self.head.stamp();
        if report.bytes_dropped > 0 {
            *lock(&self.recovery) = report;
        }
        Ok(())
    }

    /// Looks for an intact batch after a fault at `position` (in this segment
    /// from the next byte on, and in every later segment). A crash can only
    /// tear the end of the log, so intact data after a fault means damage.
    fn valid_data_after(
        &self,
        file: &std::fs::File,
        path: &std::path::Path,
        position: u64,
        len: u64,
        later: &[u64],
    ) -> Result<Option<(std::path::PathBuf, u64)>> {
        if let Some(at) = find_intact_batch(file, path, position + 1, len)? {
            return Ok(Some((path.to_owned(), at)));
        }
        for &base in later {
            let later_path = segment::log_path(&self.dir, base);
            let later_file =
                std::fs::File::open(&later_path).context(|| format!("opening {}", later_path.display()))?;
            let later_len = crate::fsutil::file_len(&later_file, &later_path)?;
            if let Some(at) = find_intact_batch(&later_file, &later_path, 0, later_len)? {
                return Ok(Some((later_path, at)));
            }
        }
        Ok(None)
    }

    /// Deletes a segment and its index; returns the bytes the segment held.
    pub(crate) fn remove_segment_files(&self, base: u64) -> Result<u64> {
        let path = segment::log_path(&self.dir, base);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        for p in [path, segment::index_path(&self.dir, base)] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).context(|| format!("deleting {}", p.display())),
            }
        }
        Ok(len)
    }
}

/// The position of the first CRC-valid batch starting at or after `from`.
fn find_intact_batch(file: &std::fs::File, path: &std::path::Path, from: u64, len: u64) -> Result<Option<u64>> {
    const WINDOW: u64 = 8 << 20;
    let mut start = from;
    while start + (crate::batch::HEADER_LEN as u64) <= len {
        let window_len = (len - start).min(WINDOW);
        let mut buf = vec![0u8; window_len as usize];
        crate::fsutil::read_exact_at(file, &mut buf, start, path)?;
        for at in 0..buf.len() {
            let Ok(total) = crate::batch::BatchHeader::total_len_from_prefix(&buf[at..]) else {
                continue;
            };
            let candidate = start + at as u64;
            if candidate + total as u64 > len || crate::batch::BatchHeader::parse(&buf[at..]).is_err() {
                continue;
            }
            let mut batch = vec![0u8; total];
            crate::fsutil::read_exact_at(file, &mut batch, candidate, path)?;
            if crate::batch::BatchHeader::parse_verified(&batch).is_ok() {
                return Ok(Some(candidate));
            }
        }
        start += window_len.saturating_sub(crate::batch::HEADER_LEN as u64).max(1);
    }
    Ok(None)
}
