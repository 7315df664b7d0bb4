//! Opening a task's stores: engine, restore from the newest usable local
//! snapshot and the changelog up to the checkpointed offset, trimming of
//! uncommitted changelog writes, and the changelog and cache layers on top.
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
use crate::job_config::{JobConfig, StoreEngine, StoreSpec};
use crate::local_state::{LocalState, RestorePlan, plan_restore};
use crate::model::TaskModel;
use crate::producers::{ChangelogWriter, SharedProducers};
use crate::systems::Systems;
use bytes::Bytes;
use gregor_api::{MetricsRegistry, StartOffset, SystemStreamPartition};
use gregor_kv::{CacheLimits, Engine, KvError, MemoryEngine, RocksDbEngine};
use indicatif::{ProgressBar, ProgressStyle};
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

mod stack;

pub(crate) use stack::StoreStack;
use stack::{Opened, rocks_options};

pub(crate) struct TaskStore {
    pub spec: StoreSpec,
    pub store: Rc<RefCell<StoreStack>>,
    /// The changelog partition and the offset the store matches (exclusive).
    pub changelog: Option<(SystemStreamPartition, u64)>,
    /// The local directory (RocksDB), locked while the store is open.
    pub local: Option<LocalState>,
    /// Changelog offset of the newest local snapshot.
    pub snapshot_at: Option<u64>,
    /// When the container took or found it (the container's clock).
    pub snapshot_taken: Instant,
    /// The snapshot being taken in the background, and its changelog offset.
    pub snapshot_running: Option<(u64, gregor_kv::PendingSnapshot)>,
    /// The `entries` gauge of the store, set at each commit.
    pub entries: gregor_api::Gauge,
}

const RESTORE_BATCH: usize = 10_000;
const STALL: Duration = Duration::from_secs(120);

fn open_engine(spec: &StoreSpec, local: Option<&LocalState>, tasks: usize, bulk: bool) -> Result<Opened, KvError> {
    match (&spec.engine, local) {
        (StoreEngine::RocksDb(opts), Some(l)) => {
            let opts = rocks_options(opts, tasks);
            Ok(Opened::Rocks(if bulk {
                RocksDbEngine::open_bulk_load(&l.current(), &opts)?
            } else {
                RocksDbEngine::open(&l.current(), &opts)?
            }))
        }
        _ => Ok(Opened::Memory(MemoryEngine::new())),
    }
}

/// The cache limits of one task's instance of a store: the container's
/// `cache.max.bytes` is shared by its `tasks`.
fn cache_limits(spec: &StoreSpec, tasks: usize) -> CacheLimits {
    CacheLimits { entries: spec.cache_entries, bytes: spec.cache_bytes / tasks.max(1), dirty: spec.write_batch_size }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn open_store(
    spec: &StoreSpec,
    task: &TaskModel,
    checkpoint: Option<&Checkpoint>,
    job: &JobConfig,
    systems: &Systems,
    producers: &SharedProducers,
    metrics: &MetricsRegistry,
    tasks: usize,
) -> Result<TaskStore, RuntimeError> {
    let engine_err = |operation, source| RuntimeError::StoreEngine {
        store: spec.name.clone(),
        task: task.name.clone(),
        operation,
        source: Box::new(source),
    };
    let local = match spec.engine {
        StoreEngine::RocksDb(_) => Some(LocalState::open(&job.state_dir, &job.dir_name(), &spec.name, &task.name)?),
        StoreEngine::Memory => None,
    };
    let Some(changelog) = &spec.changelog else {
        // No changelog: the engine's own files are the whole state.
        let engine = open_engine(spec, local.as_ref(), tasks, false).map_err(|e| engine_err("open", e))?;
        // Its files may hold anything: never assumed empty.
        let mut store = engine.into_store(spec, tasks, None, false);
        let group = gregor_api::Group::store(&task.name, &spec.name);
        for name in ["restore-target-records", "restore-done-records", "restore-done-bytes", "restore-ms"] {
            metrics.gauge(&group, name).set(0); // nothing to restore
        }
        let entries = metrics.gauge(&group, "entries");
        entries.set(store.entries() as i64);
        return Ok(TaskStore {
            spec: spec.clone(),
            store: Rc::new(RefCell::new(store)),
            changelog: None,
            local,
            snapshot_at: None,
            snapshot_taken: Instant::now(),
            snapshot_running: None,
            entries,
        });
    };
    let ssp = changelog.partition(task.changelog_partition);
    let offsets = systems.offsets(&ssp)?;
    let checkpointed =
        checkpoint.and_then(|c| c.stores.get(&spec.name)).filter(|s| s.changelog == ssp).map(|s| s.offset);
    if let Some(c) = checkpointed
        && (c > offsets.next || c < offsets.oldest)
    {
        tracing::warn!(%ssp, checkpointed = c, oldest = offsets.oldest, next = offsets.next, "the checkpointed changelog offset is outside the changelog (deleted or recreated?); restoring what it holds");
    }
    let snapshots = match &local {
        Some(l) => l.usable_snapshots(checkpointed)?,
        None => Vec::new(),
    };
    let mut plan = plan_restore(checkpointed, &snapshots, offsets.oldest, offsets.next);
    // Bulk mode costs a reopening (milliseconds): only for long replays.
    let bulk = |plan: &RestorePlan| plan.target.saturating_sub(plan.replay_from) >= spec.bulk_restore_records;
    let mut engine = match &local {
        Some(l) => {
            l.reset_current(plan.snapshot)?;
            match open_engine(spec, Some(l), tasks, bulk(&plan)) {
                Ok(e) => e,
                // Damaged files: rebuild from the changelog. Anything else (a
                // full disk, permissions, file limits) is reported as it is,
                // and the snapshots are kept for the next try.
                Err(e) if e.is_corrupt() => {
                    tracing::warn!(store = %spec.name, task = %task.name, "{e}; discarding local state and rebuilding from the changelog");
                    l.reset_current(None)?;
                    plan = RestorePlan { snapshot: None, replay_from: offsets.oldest, target: plan.target };
                    open_engine(spec, Some(l), tasks, bulk(&plan)).map_err(|e| engine_err("open", e))?
                }
                Err(e) => return Err(engine_err("open", e)),
            }
        }
        None => open_engine(spec, None, tasks, false).map_err(|e| engine_err("open", e))?,
    };

    let started = Instant::now();
    let read_end = read_end(job, &plan, offsets.next);
    let (records, bytes) = replay(spec, task, &ssp, plan, read_end, engine.engine(), systems, Some(metrics))?;
    engine = match (engine, &spec.engine) {
        (Opened::Rocks(e), StoreEngine::RocksDb(opts)) if bulk(&plan) => {
            Opened::Rocks(e.end_bulk_load(&rocks_options(opts, tasks)).map_err(|e| engine_err("restore", e))?)
        }
        (other, _) => other,
    };
    // A snapshot of exactly the checkpointed state, so that the next restart
    // on this machine replays nothing.
    let mut snapshot_at = plan.snapshot;
    let matches = plan.target;
    if let Some(l) = &local
        && checkpointed.is_some()
        && plan.snapshot != Some(matches)
    {
        match l.snapshot(matches, |dir| engine.engine().snapshot(dir).map_err(|e| engine_err("snapshot", e))) {
            Ok(()) => snapshot_at = Some(matches),
            Err(e) => tracing::warn!(store = %spec.name, task = %task.name, "no snapshot after the restore: {e}"),
        }
    }
    let mut end = plan.target;
    if offsets.next > plan.target {
        end = trim(spec, task, &ssp, plan.target, offsets.next, engine.engine(), systems, producers)?;
    }
    let elapsed = started.elapsed();
    let group = gregor_api::Group::store(&task.name, &spec.name);
    metrics.gauge(&group, "restored-records").set(records as i64);
    metrics.gauge(&group, "restore-ms").set(elapsed.as_millis() as i64);
    tracing::info!(
        store = %spec.name, task = %task.name, changelog = %ssp, snapshot = ?plan.snapshot, records, mb = bytes as f64 / 1e6,
        ms = elapsed.as_millis() as u64, records_per_s = (records as f64 / elapsed.as_secs_f64().max(1e-6)) as u64, "restored store"
    );
    if let Some(l) = &local {
        l.retain(snapshot_at)?;
    }
    let target = producers.borrow_mut().target(&ssp)?;
    let writer = ChangelogWriter { producers: producers.clone(), target };
    // Nothing restored into a new database (`reset_current(None)` above):
    // the engine is empty.
    let empty = plan.snapshot.is_none() && records == 0;
    let mut store = engine.into_store(spec, tasks, Some(Box::new(writer)), empty);
    let entries = metrics.gauge(&group, "entries");
    entries.set(store.entries() as i64);
    Ok(TaskStore {
        spec: spec.clone(),
        store: Rc::new(RefCell::new(store)),
        changelog: Some((ssp, end)),
        local,
        // The snapshot kept above: `plan.snapshot` may be one `retain` just deleted.
        snapshot_at,
        snapshot_taken: Instant::now(),
        snapshot_running: None,
        entries,
    })
}

/// How far a restore reads: to the checkpointed offset, or, under
/// exactly-once, to the changelog's end. The last committed transaction's
/// changelog records lie below the checkpoint but its markers above, so a
/// read-committed replay must read past the checkpoint to see them; it
/// applies only what lies below it (plain records after the checkpoint, left
/// by an at-least-once run of the job, are not part of the committed state).
pub(crate) fn read_end(job: &JobConfig, plan: &RestorePlan, next: u64) -> u64 {
    if job.exactly_once { next.max(plan.target) } else { plan.target }
}

/// Replays the changelog range of `plan` into the engine in large batches
/// written straight to it (no changelog layer yet; message buffers are
/// borrowed, not copied), applied by the engine (RocksDB: several
/// batches at a time, while the next ones are read), and all applied before
/// it returns. Shows progress on a terminal
/// and, given `metrics`, in the store's `restore-*` gauges.
/// Returns (records, bytes).
#[allow(clippy::too_many_arguments)]
pub(crate) fn replay(
    spec: &StoreSpec,
    task: &TaskModel,
    ssp: &SystemStreamPartition,
    plan: RestorePlan,
    read_end: u64,
    engine: &mut dyn Engine,
    systems: &Systems,
    metrics: Option<&MetricsRegistry>,
) -> Result<(u64, u64), RuntimeError> {
    // Progress counts changelog offsets (a compacted changelog has gaps:
    // fewer records than offsets), so done reaches the target at the end.
    let total = plan.target.saturating_sub(plan.replay_from);
    let gauges = metrics.map(|m| {
        let group = gregor_api::Group::store(&task.name, &spec.name);
        m.gauge(&group, "restore-target-records").set(total as i64);
        m.gauge(&group, "restore-ms").set(-1); // restoring
        [m.gauge(&group, "restore-done-records"), m.gauge(&group, "restore-done-bytes")]
    });
    let progress = |done: u64, bytes: u64| {
        if let Some([r, b]) = &gauges {
            r.set(done.min(total) as i64);
            b.set(bytes as i64);
        }
    };
    progress(0, 0);
    if total == 0 {
        return Ok((0, 0));
    }
    let bar = ProgressBar::new(plan.target - plan.replay_from);
    bar.set_style(
        ProgressStyle::with_template("restoring {msg} [{bar:30}] {pos}/{len} records, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("{} of {}", spec.name, task.name));
    let mut batch: Vec<(bytes::Bytes, Option<bytes::Bytes>)> = Vec::with_capacity(RESTORE_BATCH);
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut last_log = Instant::now();
    let apply = |engine: &mut dyn Engine, batch: &mut Vec<(bytes::Bytes, Option<bytes::Bytes>)>| {
        let slices: Vec<(&[u8], Option<&[u8]>)> = batch.iter().map(|(k, v)| (&k[..], v.as_deref())).collect();
        // Deferred: RocksDB applies one batch while the next is read.
        let result = engine.write_batch_deferred(&slices).map(|_| ());
        drop(slices);
        batch.clear();
        result.map_err(|source| RuntimeError::StoreEngine {
            store: spec.name.clone(),
            task: task.name.clone(),
            operation: "restore",
            source: Box::new(source),
        })
    };
    let start = if plan.replay_from > 0 { StartOffset::At(plan.replay_from) } else { StartOffset::Oldest };
    systems.read_until(ssp, start, read_end, STALL, |m| {
        if m.offset >= plan.target {
            return Ok(()); // read for its transaction's marker only
        }
        let Some(key) = m.key else {
            return Err(RuntimeError::BadChangelog {
                store: spec.name.clone(),
                changelog: ssp.to_string(),
                offset: m.offset,
                problem: "a record without a key",
            });
        };
        bytes += (key.len() + m.value.as_ref().map_or(0, |v| v.len())) as u64;
        batch.push((key, m.value));
        records += 1;
        if batch.len() >= RESTORE_BATCH {
            apply(engine, &mut batch)?;
            progress(m.offset + 1 - plan.replay_from, bytes);
            bar.set_position(m.offset - plan.replay_from);
            if bar.is_hidden() && last_log.elapsed() >= Duration::from_secs(5) {
                last_log = Instant::now();
                let done = m.offset - plan.replay_from;
                tracing::info!(store = %spec.name, task = %task.name, done, total = plan.target - plan.replay_from, "restoring");
            }
        }
        Ok(())
    })?;
    apply(engine, &mut batch)?;
    engine.wait_applied().map_err(|source| RuntimeError::StoreEngine {
        store: spec.name.clone(),
        task: task.name.clone(),
        operation: "restore",
        source: Box::new(source),
    })?;
    bar.finish_and_clear();
    progress(total, bytes);
    Ok((records, bytes))
}

/// Rewrites, after `next`, the restored value of every key written to the
/// changelog in `[target, next)`; returns the changelog's new end.
#[allow(clippy::too_many_arguments)]
fn trim(
    spec: &StoreSpec,
    task: &TaskModel,
    ssp: &SystemStreamPartition,
    target: u64,
    next: u64,
    engine: &mut dyn Engine,
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
        let found = engine.get(key, &mut value).map_err(|source| RuntimeError::StoreEngine {
            store: spec.name.clone(),
            task: task.name.clone(),
            operation: "trimming uncommitted changelog writes",
            source: Box::new(source),
        })?;
        p.send(ssp, Some(key), found.then_some(&value[..]), now)?;
    }
    p.flush()?;
    tracing::info!(store = %spec.name, changelog = %ssp, uncommitted_from = target, keys = keys.len(), "undid changelog writes of an interval that never committed");
    Ok(p.next_offset(ssp).unwrap_or(next))
}
