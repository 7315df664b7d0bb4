//! gregor's embedded log: durable, partitioned streams on local disk.
//!
//! This is gregor's default streaming system, so a new user runs real jobs
//! with nothing else installed. A [`Log`] is a data directory of [`Stream`]s;
//! each stream has a fixed number of partitions; within a partition messages
//! are totally ordered and addressed by a 64-bit offset that only grows.
//!
//! - Appends are batches with a CRC32C, written to segment files that roll at
//!   a configurable size, with a sparse offset and time index.
//! - Several threads *and several processes* may append to one partition;
//!   batches never interleave or get lost (an `flock` serialises writers).
//! - Readers follow a growing partition without locks and sleep on a futex
//!   while waiting, so tailing costs nothing while idle.
//! - Opening a partition recovers it: a torn tail is truncated and reported;
//!   damage in data already synced is an error, never skipped.
//! - Retention deletes whole old segments; compacted streams keep the latest
//!   record per key. Both run in the background or on demand.
//!
//! This crate must never lose an acknowledged batch on a process crash, never
//! serve a record that fails its CRC, and never panic on bad bytes from disk.
//! It runs on Linux (it uses `flock`, shared futexes and the boot id).
//!
//! ```
//! use gregor_log::{Log, Record, StreamConfig};
//! # let dir = tempfile::tempdir()?;
//! let log = Log::open(dir.path())?;
//! let words = log.create_stream("words", StreamConfig::new(2))?;
//! let at = words.append(0, &[Record::keyed(b"k", b"hello"), Record::value(b"world")])?;
//! assert_eq!((at.base_offset, at.last_offset), (0, 1));
//!
//! let mut reader = words.reader(0, 0)?;
//! let fetch = reader.poll(1 << 20)?;
//! let values: Vec<_> = fetch.messages().map(|m| m.map(|m| m.value)).collect::<Result<_, _>>()?;
//! assert_eq!(values, [Some("hello".into()), Some("world".into())]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
// Library code reports errors; it does not unwrap them.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod batch;
mod compaction;
mod config;
mod error;
mod fsutil;
mod head;
mod log;
mod maintenance;
mod partition;
mod reader;
mod record;
mod retention;
mod segment;
pub mod system;
pub mod txn;
mod varint;

pub use compaction::CompactionOutcome;
pub use config::{CleanupPolicy, Durability, StreamConfig};
pub use error::{LogError, Result};
pub use log::{Log, Stream, validate_stream_name};
pub use maintenance::{Maintenance, MaintenanceOptions};
pub use partition::{AppendInfo, Partition, RecoveryReport};
pub use reader::{Entry, Fetch, PartitionReader};
pub use record::{Message, Record};
pub use retention::RetentionOutcome;

impl Log {
    /// Starts background maintenance (interval fsyncs, retention, compaction)
    /// of the partitions this handle opens; it stops when the returned guard
    /// is dropped.
    pub fn start_maintenance(self: &std::sync::Arc<Self>, options: MaintenanceOptions) -> Maintenance {
        maintenance::start(self.clone(), options)
    }
}
