//! Where an input partition starts: the one rule every system follows.
//!
//! A checkpointed offset is used when it is valid for the partition as it is
//! now (between its oldest retained offset and its end, inclusive). A
//! checkpoint that is not valid (ahead of the end, as after the stream was
//! deleted and recreated, or below the oldest offset, because retention
//! deleted what the job had not read yet) falls back to the stream's
//! `samza.offset.default`, with a warning naming the partition and both
//! offsets; so does an input whose checkpoint is to be ignored
//! (`samza.reset.offset`). Starting a recreated stream "at its end" would
//! silently skip its data; this rule never does.
//!
//! The rule is a pure function ([`start_offset`]); consumers are handed the
//! offset it chose and apply no rule of their own.

use crate::job_config::OffsetDefault;
use gregor_api::system::PartitionOffsets;

/// Why an input starts where it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartReason {
    /// At its checkpointed offset.
    Checkpoint,
    /// No checkpoint: at `samza.offset.default`.
    NoCheckpoint,
    /// `samza.reset.offset=true`: the checkpoint is ignored.
    Reset,
    /// The checkpoint is past the partition's end.
    CheckpointAheadOfEnd {
        /// The checkpointed offset.
        checkpointed: u64,
    },
    /// The checkpoint is below the partition's oldest offset.
    CheckpointBelowOldest {
        /// The checkpointed offset.
        checkpointed: u64,
    },
}

/// Where to start and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartDecision {
    /// The first offset to read.
    pub offset: u64,
    /// Why.
    pub reason: StartReason,
}

/// The start offset of a partition with range `offsets`, given its
/// checkpointed offset (if any), the stream's `samza.offset.default` and
/// `samza.reset.offset`.
pub fn start_offset(
    checkpointed: Option<u64>,
    offsets: PartitionOffsets,
    default: OffsetDefault,
    reset: bool,
) -> StartDecision {
    let fallback = match default {
        OffsetDefault::Oldest => offsets.oldest,
        // The end as read now: what arrives later is processed.
        OffsetDefault::Upcoming => offsets.next,
    };
    let (offset, reason) = match checkpointed {
        _ if reset => (fallback, StartReason::Reset),
        None => (fallback, StartReason::NoCheckpoint),
        Some(c) if c > offsets.next => (fallback, StartReason::CheckpointAheadOfEnd { checkpointed: c }),
        Some(c) if c < offsets.oldest => (fallback, StartReason::CheckpointBelowOldest { checkpointed: c }),
        Some(c) => (c, StartReason::Checkpoint),
    };
    StartDecision { offset, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OffsetDefault::{Oldest, Upcoming};

    const RANGE: PartitionOffsets = PartitionOffsets { oldest: 10, next: 50 };

    fn at(c: Option<u64>, default: OffsetDefault, reset: bool) -> (u64, StartReason) {
        let d = start_offset(c, RANGE, default, reset);
        (d.offset, d.reason)
    }

    #[test]
    fn a_valid_checkpoint_is_used_up_to_both_edges() {
        assert_eq!(at(Some(10), Upcoming, false), (10, StartReason::Checkpoint));
        assert_eq!(at(Some(30), Upcoming, false), (30, StartReason::Checkpoint));
        assert_eq!(at(Some(50), Oldest, false), (50, StartReason::Checkpoint));
    }

    #[test]
    fn without_a_checkpoint_or_when_reset_the_default_applies() {
        assert_eq!(at(None, Oldest, false), (10, StartReason::NoCheckpoint));
        assert_eq!(at(None, Upcoming, false), (50, StartReason::NoCheckpoint));
        assert_eq!(at(Some(30), Oldest, true), (10, StartReason::Reset));
        assert_eq!(at(Some(30), Upcoming, true), (50, StartReason::Reset));
    }

    #[test]
    fn an_invalid_checkpoint_falls_back_to_the_default_not_to_the_nearest_edge() {
        // Recreated stream: with `oldest` its data is read again, not skipped.
        assert_eq!(at(Some(51), Oldest, false), (10, StartReason::CheckpointAheadOfEnd { checkpointed: 51 }));
        assert_eq!(at(Some(900), Upcoming, false), (50, StartReason::CheckpointAheadOfEnd { checkpointed: 900 }));
        // Deleted by retention: `upcoming` means the end, as the config says.
        assert_eq!(at(Some(9), Upcoming, false), (50, StartReason::CheckpointBelowOldest { checkpointed: 9 }));
        assert_eq!(at(Some(0), Oldest, false), (10, StartReason::CheckpointBelowOldest { checkpointed: 0 }));
    }

    #[test]
    fn an_empty_partition_starts_at_its_end() {
        let empty = PartitionOffsets { oldest: 7, next: 7 };
        assert_eq!(start_offset(Some(7), empty, Oldest, false).offset, 7);
        assert_eq!(start_offset(None, empty, Oldest, false).offset, 7);
        assert_eq!(start_offset(Some(3), empty, Upcoming, false).offset, 7);
    }
}
