//! The `local` execution mode: every container of the job on its own thread
//! of this process.
//!
//! SIGINT and SIGTERM ask every container to finish its current message,
//! commit and close; a second signal exits at once. If one container fails,
//! the others are stopped the same graceful way and the first error is
//! returned.
//!
//! While containers run, this process holds the job's run lock shared
//! (`gregor_runtime::run_lock`), so `gregor checkpoint set` on this machine
//! refuses to rewrite the checkpoints of a running job.

use gregor_api::system::{StreamKind, SystemError};
use gregor_api::{Serdes, StreamTask, SystemStream};
use gregor_runtime::{
    Container, ContainerOptions, EndBarrier, JobConfig, JobModel, RestartDecision, RestartPolicy, Restarts, RunSummary,
    RuntimeError, SystemKinds, Systems, job_model_after,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Sets the returned flag on SIGINT/SIGTERM; with `second_exits`, a second
/// signal exits at once (for a person pressing Ctrl-C twice).
pub(crate) fn shutdown_flag(second_exits: bool) -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if second_exits {
            let _ = signal_hook::flag::register_conditional_shutdown(signal, 1, flag.clone());
        }
        let _ = signal_hook::flag::register(signal, flag.clone());
    }
    flag
}

/// The job model from partition counts read now (intermediate inputs
/// created when the config gives their partition count). `previous` (the
/// last model of this job, if known) keeps tasks where they were.
pub(crate) fn prepare(
    job: &JobConfig,
    systems: &Systems,
    previous: Option<&JobModel>,
) -> Result<(BTreeMap<SystemStream, u32>, JobModel), RuntimeError> {
    create_intermediate_streams(job, systems)?;
    if job.exactly_once {
        // Containers of an earlier run that this run has no more (fewer
        // containers now) would leave their open transactions holding
        // readers back for ever: end them all before any container starts.
        let n = gregor_runtime::transactions::end_transactions_except(job, systems, &|_| false)?;
        tracing::debug!(producers = n, "ended the open transactions of the job's previous run");
    }
    let partitions = partition_counts(job, systems)?;
    let model = job_model_after(job, &partitions, previous);
    Ok((partitions, model))
}

/// Creates every intermediate input (an input the job also writes) that
/// does not exist yet and whose partition count the config gives.
pub(crate) fn create_intermediate_streams(job: &JobConfig, systems: &Systems) -> Result<(), RuntimeError> {
    for input in &job.inputs {
        let admin = systems.admin(&input.stream.system)?;
        if let Err(SystemError::StreamNotFound { .. }) = admin.partition_count(&input.stream)
            && let Some(n) = match job.stream_partitions(&input.stream)? {
                Some(n) => Some(n),
                None if input.intermediate => Some(intermediate_partitions(job, systems)?),
                None => None,
            }
        {
            admin.ensure_stream(&input.stream, n, StreamKind::Regular)?;
            tracing::info!(stream = %input.stream, partitions = n, "created intermediate input stream");
        }
    }
    Ok(())
}

/// An intermediate stream's partition count when its config names none:
/// `job.intermediate.stream.partitions`, else the largest partition count
/// of the job's other inputs (Samza's rule).
fn intermediate_partitions(job: &JobConfig, systems: &Systems) -> Result<u32, RuntimeError> {
    let key = "job.intermediate.stream.partitions";
    if let Some(n) = job.raw.get_parsed::<u32>(key, "a positive number of partitions")? {
        return Ok(n.max(1));
    }
    let mut largest = 1;
    for input in job.inputs.iter().filter(|i| !i.intermediate) {
        if let Ok(n) = systems.admin(&input.stream.system)?.partition_count(&input.stream) {
            largest = largest.max(n);
        }
    }
    Ok(largest)
}

/// Every input's partition count, as the systems report it now (a query:
/// creates nothing).
pub(crate) fn partition_counts(
    job: &JobConfig,
    systems: &Systems,
) -> Result<BTreeMap<SystemStream, u32>, RuntimeError> {
    let mut partitions = BTreeMap::new();
    for input in &job.inputs {
        let n = systems.admin(&input.stream.system)?.partition_count(&input.stream)?;
        partitions.insert(input.stream.clone(), n);
    }
    Ok(partitions)
}

/// Holds the job's run lock shared for as long as the result lives. A lock
/// that cannot be taken (a read-only state directory) only costs the
/// protection against operator tools, so it is a warning, not a failure.
/// Checkpoints in the in-memory system are out of any tool's reach: no lock.
pub(crate) fn run_lock(job: &JobConfig) -> Option<gregor_runtime::run_lock::RunLock> {
    if job.systems.get(&*job.checkpoint_stream.system).is_some_and(|kind| kind == "memory") {
        return None;
    }
    gregor_runtime::run_lock::RunLock::running(job)
        .inspect_err(|e| {
            tracing::warn!("{e}; running without the run lock (gregor checkpoint set cannot tell this job is running)")
        })
        .ok()
}

/// Runs one container of an already computed model on this thread (the
/// `process` mode's child side).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_one<T: StreamTask>(
    job: Arc<JobConfig>,
    systems: Arc<Systems>,
    serdes: Arc<Serdes>,
    factory: Arc<dyn Fn() -> T + Send + Sync>,
    model: &JobModel,
    id: &str,
    options: ContainerOptions,
    shutdown: Arc<AtomicBool>,
) -> Result<RunSummary, RuntimeError> {
    let cm = model.containers.iter().find(|c| c.id == id).ok_or_else(|| RuntimeError::NotFound {
        kind: "container",
        name: id.to_owned(),
        hint: " in the job model (a stale model file, or a leftover GREGOR_CONTAINER_ID in the environment?)".into(),
    })?;
    let _running = run_lock(&job);
    Container::new(job, systems, cm, model.task_count, serdes, &*factory, shutdown, options).and_then(Container::run)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn run<T: StreamTask>(
    job: Arc<JobConfig>,
    kinds: &SystemKinds,
    serdes: Arc<Serdes>,
    factory: Arc<dyn Fn() -> T + Send + Sync>,
    options: ContainerOptions,
    restart: RestartPolicy,
    shutdown: Arc<AtomicBool>,
    monitor: &crate::monitor::Monitor,
) -> Result<RunSummary, RuntimeError> {
    let _running = run_lock(&job);
    let systems = Arc::new(Systems::new(&job, kinds)?);
    let (_, model) = prepare(&job, &systems, None)?;
    monitor.set_model(&model);
    let options = ContainerOptions {
        end_barrier: Some(Arc::new(EndBarrier::new(model.containers.iter().map(|c| c.id.clone()).collect()))),
        model_version: model.version,
        ..options
    };
    tracing::info!(job = %job.name, containers = model.containers.len(), tasks = model.task_count, "starting");
    let handles: Vec<_> = model
        .containers
        .iter()
        .map(|cm| {
            let (job, systems, serdes, factory, shutdown) =
                (job.clone(), systems.clone(), serdes.clone(), factory.clone(), shutdown.clone());
            let cm = cm.clone();
            let metrics = monitor.container(&cm.id);
            let restart_count = metrics.counter("container", "restarts");
            let options = ContainerOptions { metrics: Some(metrics), ..options.clone() };
            let task_count = model.task_count;
            let id = cm.id.clone();
            let spawned = std::thread::Builder::new().name(format!("gregor-container-{id}")).spawn(move || {
                let mut restarts = Restarts::new(restart);
                let result = loop {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        Container::new(
                            job.clone(),
                            systems.clone(),
                            &cm,
                            task_count,
                            serdes.clone(),
                            &*factory,
                            shutdown.clone(),
                            options.clone(),
                        )
                        .and_then(Container::run)
                    }))
                    .unwrap_or_else(|p| {
                        Err(RuntimeError::Panicked { container: cm.id.clone(), message: panic_text(&*p) })
                    });
                    match result {
                        // A streaming system was away (a broker down, a send
                        // that failed for good): start over from the last
                        // checkpoint, as the `process` mode restarts a container.
                        // Other failures (bad config, corrupt data) would
                        // only fail again.
                        Err(RuntimeError::System(e)) if e.is_transient() && !shutdown.load(Ordering::SeqCst) => {
                            let RestartDecision::RestartAfter(wait) = restarts.on_failure(std::time::Instant::now())
                            else {
                                break Err(RuntimeError::System(e));
                            };
                            tracing::warn!(container = %cm.id, "container failed: {e}; restarting it from its last checkpoint in {wait:?}");
                            restart_count.inc();
                            let until = std::time::Instant::now() + wait;
                            while std::time::Instant::now() < until && !shutdown.load(Ordering::SeqCst) {
                                std::thread::sleep(std::time::Duration::from_millis(50));
                            }
                        }
                        other => break other,
                    }
                };
                if let Err(e) = &result {
                    tracing::error!(container = %cm.id, "container failed: {e}");
                    shutdown.store(true, Ordering::SeqCst);
                }
                result
            });
            spawned.map(|h| (id.clone(), h)).map_err(|source| RuntimeError::Thread { container: id, source })
        })
        .collect::<Result<_, _>>()?;
    let mut total = RunSummary::default();
    let mut first_error = None;
    for (id, h) in handles {
        match h.join() {
            Ok(Ok(s)) => total.processed += s.processed,
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error
                    .get_or_insert(RuntimeError::Panicked { container: id, message: "its thread panicked".into() });
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// The message of a caught panic.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
