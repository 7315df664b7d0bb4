//! Retention: deleting whole old segments by size and by age.
//!
//! Runs under the partition's maintenance lock, never the write lock (except
//! for the instant it publishes the new oldest offset), so appends go on. The
//! oldest offset moves forward *before* files are deleted, so no reader is
//! ever told an offset exists that it then cannot find. The active segment is
//! never deleted.

use crate::error::Result;
use crate::partition::Partition;

/// What a retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Segments deleted.
    pub segments_deleted: usize,
    /// Bytes freed.
    pub bytes_deleted: u64,
}

impl Partition {
    /// Deletes the oldest sealed segments while the partition is over its
    /// retention size, or while they hold only messages older than its
    /// retention time (`now_ms` is the current time).
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionOutcome> {
        let (max_bytes, max_age) = (self.config.retention_bytes, self.config.retention_ms);
        if max_bytes.is_none() && max_age.is_none() {
            return Ok(RetentionOutcome::default());
        }
        let _maintenance = self.maintenance.lock()?;
        let snap = self.snapshot()?;
        let set = self.segment_set(snap.segments_gen)?;
        let mut total: u64 = set.list.iter().map(|s| self.readable_end(s, &snap)).sum::<Result<u64>>()?;
        let mut doomed = Vec::new();
        for (i, seg) in set.list.iter().enumerate() {
            if seg.base >= snap.active_base || i + 1 >= set.list.len() {
                break;
            }
            let size = seg.len()?;
            let over_size = max_bytes.is_some_and(|limit| total - size >= limit);
            let too_old = match max_age {
                Some(age) => seg.sealed_max_timestamp()? < now_ms.saturating_sub(age as i64),
                None => false,
            };
            if !over_size && !too_old {
                break;
            }
            total -= size;
            doomed.push((seg.base, set.list[i + 1].base));
        }
        let Some(&(_, new_start)) = doomed.last() else {
            return Ok(RetentionOutcome::default());
        };
        self.publish_segment_change(Some(new_start))?;
        let mut outcome = RetentionOutcome::default();
        for (base, _) in doomed {
            outcome.bytes_deleted += self.remove_segment_files(base)?;
            outcome.segments_deleted += 1;
        }
        crate::fsutil::sync_dir(&self.dir)?;
        tracing::debug!(stream = %self.stream, partition = self.id, new_start, ?outcome, "retention deleted old segments");
        Ok(outcome)
    }
}
