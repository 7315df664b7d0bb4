//! What operators see and do with stores outside a running job (the
//! `gregor state` commands): list stores and tasks with their local state
//! and checkpointed changelog offsets, read a store's committed contents,
//! rebuild a task's local state from its changelog.
//!
//! These never write to changelogs or checkpoints; rebuilding takes the same
//! lock as a container, so it refuses to touch a store a job has open.

use crate::checkpoint::read_checkpoints;
use crate::error::RuntimeError;
use crate::job_config::{JobConfig, StoreEngine, StoreSpec};
use crate::local_state::{LocalState, plan_restore};
use crate::model::{JobModel, TaskModel, job_model_after};
use crate::systems::Systems;
use bytes::Bytes;
use gregor_api::SystemStreamPartition;
use gregor_kv::{Engine, MemoryEngine, RocksDbEngine};
use std::collections::BTreeMap;
use std::ops::Bound;

/// Where the `process` coordinator keeps the job model it runs.
pub fn coordinator_model_path(job: &JobConfig) -> std::path::PathBuf {
    job.state_dir.join(job_dir(job)).join("coordinator").join("job-model.json")
}

/// The last job model the `process` coordinator wrote, if any.
pub fn last_job_model(job: &JobConfig) -> Option<JobModel> {
    let path = coordinator_model_path(job);
    let bytes = std::fs::read(&path).ok()?;
    match JobModel::from_json(&bytes) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(path = %path.display(), "ignoring an unreadable job model (tasks may move): {e}");
            None
        }
    }
}

/// The job model as the job would compute it now (following the last model
/// of the `process` coordinator, so tasks stay where they are).
pub fn current_job_model(job: &JobConfig, systems: &Systems) -> Result<JobModel, RuntimeError> {
    let mut partitions = BTreeMap::new();
    for input in &job.inputs {
        partitions.insert(input.stream.clone(), systems.admin(&input.stream.system)?.partition_count(&input.stream)?);
    }
    Ok(job_model_after(job, &partitions, last_job_model(job).as_ref()))
}

/// One store of one task.
#[derive(Debug, Clone)]
pub struct StoreInfo {
    /// Store name.
    pub store: String,
    /// Task name.
    pub task: String,
    /// `rocksdb` or `memory`.
    pub engine: &'static str,
    /// The changelog partition of this task's store.
    pub changelog: Option<SystemStreamPartition>,
    /// The changelog offset its checkpoint records.
    pub checkpointed: Option<u64>,
    /// Local snapshots (changelog offsets).
    pub snapshots: Vec<u64>,
    /// Bytes of local files.
    pub local_bytes: u64,
}

fn dir_size(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

fn spec<'a>(job: &'a JobConfig, store: &str) -> Result<&'a StoreSpec, RuntimeError> {
    job.stores.iter().find(|s| s.name == store).ok_or_else(|| {
        let known: Vec<&str> = job.stores.iter().map(|s| s.name.as_str()).collect();
        RuntimeError::NotFound {
            kind: "store",
            name: store.to_owned(),
            hint: format!(" (its stores: {})", known.join(", ")),
        }
    })
}

fn task<'a>(model: &'a JobModel, name: &str) -> Result<&'a TaskModel, RuntimeError> {
    model.containers.iter().flat_map(|c| &c.tasks).find(|t| t.name == name).ok_or_else(|| RuntimeError::NotFound {
        kind: "task",
        name: name.to_owned(),
        hint: " (tasks are named like 'Partition 0')".into(),
    })
}

fn job_dir(job: &JobConfig) -> String {
    job.dir_name()
}

/// Every store of every task, with its local state and checkpoint.
pub fn list_stores(job: &JobConfig, systems: &Systems) -> Result<Vec<StoreInfo>, RuntimeError> {
    let model = current_job_model(job, systems)?;
    let checkpoints = read_checkpoints(systems, &job.checkpoint_stream)?;
    let mut out = Vec::new();
    for spec in &job.stores {
        for t in model.containers.iter().flat_map(|c| &c.tasks) {
            let changelog = spec.changelog.as_ref().map(|c| c.partition(t.changelog_partition));
            let checkpointed = checkpoints.get(&t.name).and_then(|c| c.stores.get(&spec.name)).map(|s| s.offset);
            let dir = job.state_dir.join(job_dir(job)).join(&spec.name).join(t.name.replace('/', "_"));
            let snapshots = std::fs::read_dir(dir.join("snapshots"))
                .map(|it| it.filter_map(Result::ok).filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
                .unwrap_or_default();
            let engine = match spec.engine {
                StoreEngine::RocksDb(_) => "rocksdb",
                StoreEngine::Memory => "memory",
            };
            out.push(StoreInfo {
                store: spec.name.clone(),
                task: t.name.clone(),
                engine,
                changelog,
                checkpointed,
                snapshots,
                local_bytes: dir_size(&dir),
            });
        }
    }
    Ok(out)
}

/// The committed contents of a store of a task (replayed from its changelog
/// into memory up to the checkpoint), as raw key and value bytes in key order.
pub fn read_store(
    job: &JobConfig,
    systems: &Systems,
    store: &str,
    task_name: &str,
) -> Result<Vec<(Bytes, Bytes)>, RuntimeError> {
    let spec = spec(job, store)?;
    let model = current_job_model(job, systems)?;
    let t = task(&model, task_name)?;
    let changelog = spec.changelog.as_ref().ok_or_else(|| {
        RuntimeError::NotApplicable(format!(
            "store '{store}' has no changelog; its state lives only in its local files"
        ))
    })?;
    let ssp = changelog.partition(t.changelog_partition);
    let offsets = systems.offsets(&ssp)?;
    let checkpoints = read_checkpoints(systems, &job.checkpoint_stream)?;
    let checkpointed =
        checkpoints.get(task_name).and_then(|c| c.stores.get(store)).filter(|s| s.changelog == ssp).map(|s| s.offset);
    let plan = plan_restore(checkpointed, &[], offsets.oldest, offsets.next);
    let mut engine: Box<dyn Engine> = Box::new(MemoryEngine::new());
    let read_end = crate::stores::read_end(job, &plan, offsets.next);
    crate::stores::replay(spec, t, &ssp, plan, read_end, &mut engine, systems, None)?;
    let mut out = Vec::new();
    engine.scan(Bound::Unbounded, None, usize::MAX, &mut out).map_err(|source| RuntimeError::StoreEngine {
        store: store.to_owned(),
        task: task_name.to_owned(),
        operation: "read",
        source: Box::new(source),
    })?;
    Ok(out)
}

/// Discards a task's local state of a RocksDB store and rebuilds it from the
/// changelog up to the checkpoint, leaving a snapshot the next start reuses.
/// Returns the records replayed.
pub fn rebuild_store(job: &JobConfig, systems: &Systems, store: &str, task_name: &str) -> Result<u64, RuntimeError> {
    let spec = spec(job, store)?;
    let StoreEngine::RocksDb(opts) = &spec.engine else {
        return Err(RuntimeError::NotApplicable(format!(
            "store '{store}' is in memory: it is rebuilt from its changelog at every start"
        )));
    };
    let model = current_job_model(job, systems)?;
    let t = task(&model, task_name)?;
    let changelog = spec
        .changelog
        .as_ref()
        .ok_or_else(|| RuntimeError::NotApplicable(format!("store '{store}' has no changelog to rebuild from")))?;
    let ssp = changelog.partition(t.changelog_partition);
    let local = LocalState::open(&job.state_dir, &job_dir(job), store, task_name)?;
    let offsets = systems.offsets(&ssp)?;
    let checkpoints = read_checkpoints(systems, &job.checkpoint_stream)?;
    let checkpointed =
        checkpoints.get(task_name).and_then(|c| c.stores.get(store)).filter(|s| s.changelog == ssp).map(|s| s.offset);
    let plan = plan_restore(checkpointed, &[], offsets.oldest, offsets.next);
    local.retain(None)?;
    let current = local.reset_current(None)?;
    let engine_err = |operation, source| RuntimeError::StoreEngine {
        store: store.to_owned(),
        task: task_name.to_owned(),
        operation,
        source: Box::new(source),
    };
    let mut engine: Box<dyn Engine> = Box::new(RocksDbEngine::open(&current, opts).map_err(|e| engine_err("open", e))?);
    let read_end = crate::stores::read_end(job, &plan, offsets.next);
    let (records, _) = crate::stores::replay(spec, t, &ssp, plan, read_end, &mut engine, systems, None)?;
    if checkpointed.is_some() {
        local.snapshot(plan.target, |dir| engine.snapshot(dir).map_err(|e| engine_err("snapshot", e)))?;
    }
    Ok(records)
}
