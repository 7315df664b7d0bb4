//! Checkpoints: per task, the next input offset of every partition and the
//! changelog offset every store matches, written at each commit to the
//! job's compacted checkpoint stream (key = task name, value = JSON).
//!
//! A checkpoint is written only after the outputs and changelog writes it
//! covers were flushed, so restoring from it never misses data; reading one
//! that does not parse is an error, never silently ignored.

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
        let checkpoint: Checkpoint = serde_json::from_slice(&value).map_err(|e| RuntimeError::Checkpoint {
            task: task.clone(),
            stream: stream.to_string(),
            offset,
            reason: e.to_string(),
        })?;
        out.insert(task, checkpoint);
    }
    Ok(out)
}
