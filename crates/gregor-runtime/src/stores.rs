//! Opening a task's stores: engine, restore from the changelog up to the
//! checkpointed offset, trimming of uncommitted changelog writes, and the
//! changelog and cache layers on top.
//!
//! Transactional state: a store restored from a checkpoint equals the store
//! as it was at that commit, exactly. Writes that reached the changelog after
//! the checkpoint (an interval that never committed) are not replayed, and
//! they are "trimmed": every key they touched is written again with its
//! restored value (or a tombstone), so a later restore up to a later
//! checkpoint replays them harmlessly. A changelog is compacted only below
//! its last checkpointed offset (see `StreamKind::Changelog`).

use crate::checkpoint::Checkpoint;
use crate::error::RuntimeError;
use crate::job_config::{StoreEngine, StoreSpec};
use crate::model::TaskModel;
use crate::producers::{ChangelogWriter, SharedProducers};
use crate::systems::Systems;
use bytes::Bytes;
use gregor_api::{StartOffset, SystemStreamPartition};
use gregor_kv::{CachedStore, Engine, LoggedEngine, MemoryEngine};
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The byte store stack a task's `Store` handles point at.
pub(crate) type StoreStack = CachedStore<Box<dyn Engine>>;

pub(crate) struct TaskStore {
    pub spec: StoreSpec,
    pub store: Rc<RefCell<StoreStack>>,
    /// The changelog partition and the offset the store matches (exclusive).
    pub changelog: Option<(SystemStreamPartition, u64)>,
}

const RESTORE_BATCH: usize = 10_000;
const STALL: Duration = Duration::from_secs(120);

fn new_engine(spec: &StoreSpec) -> Box<dyn Engine> {
    match spec.engine {
        StoreEngine::Memory => Box::new(MemoryEngine::new()),
    }
}

pub(crate) fn open_store(
    spec: &StoreSpec,
    task: &TaskModel,
    checkpoint: Option<&Checkpoint>,
    systems: &Systems,
    producers: &SharedProducers,
) -> Result<TaskStore, RuntimeError> {
    let mut engine = new_engine(spec);
    let Some(changelog) = &spec.changelog else {
        let store = CachedStore::new(&spec.name, engine, spec.cache_size, spec.write_batch_size);
        return Ok(TaskStore { spec: spec.clone(), store: Rc::new(RefCell::new(store)), changelog: None });
    };
    let ssp = changelog.partition(task.changelog_partition);
    let offsets = systems.offsets(&ssp)?;
    let checkpointed =
        checkpoint.and_then(|c| c.stores.get(&spec.name)).filter(|s| s.changelog == ssp).map(|s| s.offset);
    let mut target = checkpointed.unwrap_or(offsets.oldest);
    if target > offsets.next {
        tracing::warn!(%ssp, checkpointed = target, next = offsets.next, "the changelog ends before the checkpointed offset (was it deleted?); restoring what it holds");
        target = offsets.next;
    }
    if target < offsets.oldest {
        tracing::warn!(%ssp, checkpointed = target, oldest = offsets.oldest, "changelog records before the checkpoint were deleted; the restored store may miss keys");
        target = offsets.oldest;
    }

    let started = Instant::now();
    let mut restored = 0u64;
    if target > offsets.oldest {
        // Restore in large batches written straight to the engine (no
        // changelog layer yet): the messages' buffers are borrowed, not copied.
        let mut batch: Vec<(bytes::Bytes, Option<bytes::Bytes>)> = Vec::with_capacity(RESTORE_BATCH);
        let name = spec.name.clone();
        let apply = |engine: &mut Box<dyn Engine>, batch: &mut Vec<(bytes::Bytes, Option<bytes::Bytes>)>| {
            let slices: Vec<(&[u8], Option<&[u8]>)> = batch.iter().map(|(k, v)| (&k[..], v.as_deref())).collect();
            let result = engine.write_batch(&slices);
            drop(slices);
            batch.clear();
            result.map_err(|e| RuntimeError::Other(format!("restoring store '{name}': {e}")))
        };
        systems.read_until(&ssp, StartOffset::Oldest, target, STALL, |m| {
            let Some(key) = m.key else {
                return Err(RuntimeError::Other(format!(
                    "changelog {ssp} of store '{}' has a message without a key at offset {}",
                    spec.name, m.offset
                )));
            };
            batch.push((key, m.value));
            restored += 1;
            if batch.len() >= RESTORE_BATCH {
                apply(&mut engine, &mut batch)?;
            }
            Ok(())
        })?;
        apply(&mut engine, &mut batch)?;
    }

    let mut end = target;
    if offsets.next > target {
        end = trim(spec, &ssp, target, offsets.next, &mut engine, systems, producers)?;
    }
    let elapsed = started.elapsed();
    tracing::info!(
        store = %spec.name, task = %task.name, changelog = %ssp, records = restored, up_to = target,
        ms = elapsed.as_millis() as u64, "restored store"
    );
    let writer = ChangelogWriter { producers: producers.clone(), ssp: ssp.clone() };
    let logged: Box<dyn Engine> = Box::new(LoggedEngine::new(engine, Box::new(writer)));
    let store = CachedStore::new(&spec.name, logged, spec.cache_size, spec.write_batch_size);
    Ok(TaskStore { spec: spec.clone(), store: Rc::new(RefCell::new(store)), changelog: Some((ssp, end)) })
}

/// Rewrites, after `next`, the restored value of every key written to the
/// changelog in `[target, next)`; returns the changelog's new end.
fn trim(
    spec: &StoreSpec,
    ssp: &SystemStreamPartition,
    target: u64,
    next: u64,
    engine: &mut Box<dyn Engine>,
    systems: &Systems,
    producers: &SharedProducers,
) -> Result<u64, RuntimeError> {
    let mut keys: HashSet<Bytes> = HashSet::new();
    systems.read_until(ssp, StartOffset::At(target), next, STALL, |m| {
        if let Some(k) = m.key {
            keys.insert(k);
        }
        Ok(())
    })?;
    let mut p = producers.borrow_mut();
    let now = p.now_ms;
    let mut value = Vec::new();
    for key in &keys {
        let found =
            engine.get(key, &mut value).map_err(|e| RuntimeError::Other(format!("store '{}': {e}", spec.name)))?;
        p.send(ssp, Some(key), found.then_some(&value[..]), now)?;
    }
    p.flush()?;
    tracing::info!(store = %spec.name, changelog = %ssp, uncommitted_from = target, keys = keys.len(), "undid changelog writes of an interval that never committed");
    Ok(p.next_offset(ssp).unwrap_or(next))
}
