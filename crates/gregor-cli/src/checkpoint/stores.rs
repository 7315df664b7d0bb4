//! Resetting a task's stores to empty for `gregor checkpoint set`, without a
//! new checkpoint format: every key live in a store's changelog gets a
//! tombstone, and the store's checkpointed changelog offset becomes the
//! changelog's new end. A restore replays the changelog up to that offset,
//! tombstones included, so it yields an empty store from any starting point
//! (nothing, or an old local snapshot on any machine). Local directories on
//! this machine are removed as well, which only saves that replay.
//!
//! Two phases, around the caller's checkpoint write: [`reset_stores`]
//! writes the tombstones only; [`finish_resets`], once the new checkpoints
//! are written, moves the changelogs' compaction limits past them and
//! removes local directories. Until the checkpoints are written, the old
//! ones stay restorable: nothing may compact below them.
//!
//! This must never run beside a running job (the caller checks), never
//! leave a checkpoint pointing before a tombstone it wrote, and never touch
//! a store directory a container has locked.

use anyhow::{Context, Result};
use bytes::Bytes;
use gregor_api::system::SystemError;
use gregor_api::{StartOffset, SystemStreamPartition};
use gregor_runtime::job_config::StoreEngine;
use gregor_runtime::local_state::discard_local_state;
use gregor_runtime::{JobConfig, RuntimeError, StoreCheckpoint, Systems, TaskModel};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// What happened to one store of one task.
#[derive(Debug, Clone)]
pub struct StoreReset {
    /// Store name.
    pub store: String,
    /// Its changelog partition, if it has one.
    pub changelog: Option<SystemStreamPartition>,
    /// The changelog offset the old checkpoint recorded.
    pub old_offset: Option<u64>,
    /// Tombstones written (keys that were live).
    pub deleted: u64,
    /// The checkpointed changelog offset now (the changelog's end).
    pub new_offset: Option<u64>,
    /// Local directory removed on this machine.
    pub local_removed: bool,
}

/// Keys with a value at the end of a changelog partition read from its
/// oldest offset up to `end`.
fn live_keys(systems: &Systems, ssp: &SystemStreamPartition, end: u64) -> Result<HashSet<Bytes>, RuntimeError> {
    let mut keys = HashSet::new();
    systems.read_until(ssp, StartOffset::Oldest, end, Duration::from_secs(60), |m| {
        if let Some(key) = m.key {
            if m.value.is_some() {
                keys.insert(key);
            } else {
                keys.remove(&key);
            }
        }
        Ok(())
    })?;
    Ok(keys)
}

/// Writes a tombstone for every live key of `ssp`; returns how many and
/// the partition's end after them (flushed: the system has them).
fn tombstone_all(systems: &Systems, ssp: &SystemStreamPartition) -> Result<(u64, u64), RuntimeError> {
    let range = systems.offsets(ssp)?;
    let keys = live_keys(systems, ssp, range.next)?;
    if keys.is_empty() {
        return Ok((0, range.next));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut producer = systems.factory(&ssp.stream.system)?.producer()?;
    let slot = producer.slot(ssp)?;
    for key in &keys {
        producer.send(slot, Some(key), None, now)?;
    }
    producer.flush()?;
    let end = match producer.next_offset(ssp) {
        Some(end) => end,
        None => systems.offsets(ssp)?.next,
    };
    producer.stop()?;
    Ok((keys.len() as u64, end))
}

/// Writes a tombstone for every live key of every store of `task` (see the
/// module doc); returns what was done and the store entries of its new
/// checkpoint. `old` are the task's current store entries. Moves no
/// compaction limit and removes nothing: [`finish_resets`] does, after the
/// checkpoints.
///
/// # Errors
/// A changelog that cannot be read or written.
pub fn reset_stores(
    job: &JobConfig,
    systems: &Systems,
    task: &TaskModel,
    old: &BTreeMap<String, StoreCheckpoint>,
) -> Result<(Vec<StoreReset>, BTreeMap<String, StoreCheckpoint>)> {
    let mut done = Vec::new();
    let mut entries = BTreeMap::new();
    for spec in &job.stores {
        let mut reset = StoreReset {
            store: spec.name.clone(),
            changelog: None,
            old_offset: old.get(&spec.name).map(|s| s.offset),
            deleted: 0,
            new_offset: None,
            local_removed: false,
        };
        if let Some(changelog) = &spec.changelog {
            let ssp = changelog.partition(task.changelog_partition);
            match tombstone_all(systems, &ssp) {
                Ok((deleted, end)) => {
                    entries.insert(spec.name.clone(), StoreCheckpoint { changelog: ssp.clone(), offset: end });
                    (reset.deleted, reset.new_offset) = (deleted, Some(end));
                }
                // Never written: the store is empty wherever it is restored.
                Err(RuntimeError::System(SystemError::StreamNotFound { .. })) => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("resetting store '{}' of task '{}'", spec.name, task.name));
                }
            }
            reset.changelog = Some(ssp);
        }
        done.push(reset);
    }
    Ok((done, entries))
}

/// After the new checkpoints are written: lets compaction go up to the
/// tombstones and removes this machine's local state of the reset stores
/// (a container that holds a store directory is an error: the job runs).
///
/// # Errors
/// A compaction limit that cannot be set, or a local directory that cannot
/// be removed.
pub fn finish_resets(job: &JobConfig, systems: &Systems, resets: &mut [(String, Vec<StoreReset>)]) -> Result<()> {
    for (task, stores) in resets {
        for s in stores.iter_mut() {
            if let (Some(ssp), Some(end)) = (&s.changelog, s.new_offset) {
                systems.admin(&ssp.stream.system)?.set_compaction_limit(ssp, end)?;
            }
            let spec = job.stores.iter().find(|spec| spec.name == s.store);
            if spec.is_some_and(|spec| matches!(spec.engine, StoreEngine::RocksDb(_))) {
                s.local_removed = discard_local_state(&job.state_dir, &job.dir_name(), &s.store, task)?;
            }
        }
    }
    Ok(())
}
