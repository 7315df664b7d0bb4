//! Checkpoints: per task, the next input offset of every partition and the
//! changelog offset every store matches, written at each commit to the
//! job's compacted checkpoint stream (key = task name, value = JSON).
//!
//! A checkpoint is written only after the outputs and changelog writes it
//! covers were flushed, so restoring from it never misses data; reading one
//! that does not parse is an error, never silently ignored.
//!
//! Format (version 1):
//! `{"format_version": 1, "inputs": {"<system>.<stream>[<p>]": <next offset>, ...},
//!   "stores": {"<store>": {"changelog": "<system>.<stream>[<p>]", "offset": <n>}, ...}}`.
//! Version 2 adds, for exactly-once without transactions (see
//! `crate::sequences`), `"sequence": <n>` (the next sequence number the task
//! stamps on what it sends to the job's intermediate streams) and `"seen":
//! {"<intermediate input partition>": {"<producer id, 16 hex digits>": <highest
//! sequence>}}`; it is written only when one of them is set, so jobs that do
//! not use them keep writing version 1 (which older gregors read).
//! Checkpoints written before the version field existed have the same
//! layout without it and are read as version 1; a newer version is refused
//! with an error naming it (fixtures in `tests/fixtures/checkpoints`).
//!
//! Operator tools (`gregor checkpoint set`) write checkpoints of a stopped
//! job with [`write_checkpoints`], in the same encoding.

use crate::error::RuntimeError;
use crate::systems::Systems;
use gregor_api::system::StreamKind;
use gregor_api::{StartOffset, SystemStream, SystemStreamPartition};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// One store's position in its changelog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreCheckpoint {
    /// The changelog partition.
    pub changelog: SystemStreamPartition,
    /// The store equals a replay of the changelog up to (excluding) this offset.
    pub offset: u64,
}

/// A task's checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Next offset to process, per input partition.
    pub inputs: BTreeMap<SystemStreamPartition, u64>,
    /// Changelog position per store name.
    #[serde(default)]
    pub stores: BTreeMap<String, StoreCheckpoint>,
    /// Exactly-once without transactions: the next sequence number of what
    /// the task sends to the job's intermediate streams (0: none yet).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sequence: u64,
    /// Exactly-once without transactions: per intermediate input partition,
    /// the highest sequence number processed per producer (hex id).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seen: BTreeMap<SystemStreamPartition, BTreeMap<String, u64>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Checkpoint {
    /// The format version this checkpoint is written in: 2 only when it
    /// holds sequence numbers.
    pub fn format_version(&self) -> u32 {
        if self.sequence == 0 && self.seen.is_empty() { 1 } else { 2 }
    }
}

/// The newest checkpoint format this gregor writes (and reads).
pub const CHECKPOINT_FORMAT: u32 = 2;

#[derive(Serialize)]
struct Versioned<'a> {
    format_version: u32,
    #[serde(flatten)]
    checkpoint: &'a Checkpoint,
}

#[derive(Deserialize)]
struct Read {
    #[serde(default = "legacy_version")]
    format_version: u32,
    #[serde(flatten)]
    checkpoint: Checkpoint,
}

fn legacy_version() -> u32 {
    1
}

/// The bytes of a checkpoint message.
///
/// # Errors
/// Never for checkpoints the runtime builds; typed for safety.
pub fn encode_checkpoint(checkpoint: &Checkpoint) -> Result<Vec<u8>, RuntimeError> {
    serde_json::to_vec(&Versioned { format_version: checkpoint.format_version(), checkpoint })
        .map_err(|source| RuntimeError::Encode { what: "a checkpoint", source })
}

/// Reads a checkpoint message.
///
/// # Errors
/// Malformed JSON, or a format version this gregor does not read.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, String> {
    let read: Read = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if !(1..=CHECKPOINT_FORMAT).contains(&read.format_version) {
        return Err(format!(
            "checkpoint format version {} is not supported by this gregor (it reads versions 1 to {CHECKPOINT_FORMAT}); was it written by a newer gregor?",
            read.format_version
        ));
    }
    for producer in read.checkpoint.seen.values().flat_map(BTreeMap::keys) {
        crate::sequences::parse_producer(producer)?;
    }
    Ok(read.checkpoint)
}

/// Writes checkpoints of tasks (key = task name, value as the runtime
/// encodes it) to the checkpoint stream and waits until the system has them.
/// For operator tools rewriting a *stopped* job's positions: a running job
/// overwrites them at its next commit.
///
/// # Errors
/// The checkpoint stream cannot be created or written.
pub fn write_checkpoints(
    systems: &Systems,
    stream: &SystemStream,
    checkpoints: &[(String, Checkpoint)],
) -> Result<(), RuntimeError> {
    let admin = systems.admin(&stream.system)?;
    admin.ensure_stream(stream, 1, StreamKind::Compacted)?;
    let ssp = checkpoint_partition(stream);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut producer = systems.factory(&stream.system)?.producer()?;
    for (task, checkpoint) in checkpoints {
        producer.send_to(&ssp, Some(task.as_bytes()), Some(&encode_checkpoint(checkpoint)?), now)?;
    }
    producer.flush()?;
    producer.stop()?;
    Ok(())
}

/// The checkpoint stream's only partition.
pub fn checkpoint_partition(stream: &SystemStream) -> SystemStreamPartition {
    stream.partition(0)
}

/// Reads the latest checkpoint of every task (creating the stream if needed).
pub fn read_checkpoints(systems: &Systems, stream: &SystemStream) -> Result<HashMap<String, Checkpoint>, RuntimeError> {
    let admin = systems.admin(&stream.system)?;
    admin.ensure_stream(stream, 1, StreamKind::Compacted)?;
    let ssp = checkpoint_partition(stream);
    let end = admin.offsets(&ssp)?.next;
    let mut latest: HashMap<String, (u64, Option<bytes::Bytes>)> = HashMap::new();
    systems.read_until(&ssp, StartOffset::Oldest, end, Duration::from_secs(60), |m| {
        let Some(key) = m.key else { return Ok(()) };
        latest.insert(String::from_utf8_lossy(&key).into_owned(), (m.offset, m.value));
        Ok(())
    })?;
    let mut out = HashMap::new();
    for (task, (offset, value)) in latest {
        let Some(value) = value else { continue };
        let checkpoint = decode_checkpoint(&value).map_err(|reason| RuntimeError::Checkpoint {
            task: task.clone(),
            stream: stream.to_string(),
            offset,
            reason,
        })?;
        out.insert(task, checkpoint);
    }
    Ok(out)
}
