//! The `local` execution mode: every container of the job on its own thread
//! of this process.
//!
//! SIGINT and SIGTERM ask every container to finish its current message,
//! commit and close; a second signal exits at once. If one container fails,
//! the others are stopped the same graceful way and the first error is
//! returned.

use gregor_api::system::{StreamKind, SystemError};
use gregor_api::{Serdes, StreamTask, SystemStream};
use gregor_runtime::{
    Container, ContainerOptions, EndBarrier, JobConfig, JobModel, RunSummary, RuntimeError, SystemKinds, Systems,
    job_model_after,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// How often a container that failed on its streaming system is restarted:
/// more than `count` failures within `window` fail the job
/// (`cluster-manager.container.retry.count`, `retry.window.ms`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RestartPolicy {
    pub(crate) count: u32,
    pub(crate) window: std::time::Duration,
}

/// Failures within the window, and the backoff (200 ms doubling, at most 10 s).
struct Restarts {
    policy: RestartPolicy,
    failures: std::collections::VecDeque<std::time::Instant>,
    backoff: std::time::Duration,
}

impl Restarts {
    fn new(policy: RestartPolicy) -> Self {
        Restarts { policy, failures: Default::default(), backoff: std::time::Duration::from_millis(200) }
    }

    /// Records a failure; the wait before the restart, or `None` to give up.
    fn next(&mut self) -> Option<std::time::Duration> {
        let now = std::time::Instant::now();
        self.failures.retain(|t| now.duration_since(*t) < self.policy.window);
        self.failures.push_back(now);
        if self.failures.len() > self.policy.count as usize {
            return None;
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(std::time::Duration::from_secs(10));
        Some(wait)
    }
}

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

/// The systems and the job model: partition counts read now (intermediate
/// inputs created when the config gives their partition count).
/// `previous` (the last model of this job, if known) keeps tasks where they were.
pub(crate) fn prepare(
    job: &JobConfig,
    kinds: &SystemKinds,
    previous: Option<&JobModel>,
) -> Result<(Arc<Systems>, JobModel), RuntimeError> {
    let (systems, partitions) = partition_counts(job, kinds)?;
    Ok((systems, job_model_after(job, &partitions, previous)))
}

/// The systems and every input's partition count.
pub(crate) fn partition_counts(
    job: &JobConfig,
    kinds: &SystemKinds,
) -> Result<(Arc<Systems>, BTreeMap<SystemStream, u32>), RuntimeError> {
    let systems = Arc::new(Systems::new(job, kinds)?);
    let mut partitions: BTreeMap<SystemStream, u32> = BTreeMap::new();
    for input in &job.inputs {
        let admin = systems.admin(&input.stream.system)?;
        let n = match admin.partition_count(&input.stream) {
            // An intermediate stream (an input the job also writes) is created
            // when the config gives its partition count.
            Err(SystemError::StreamNotFound { .. }) if job.stream_setting(&input.stream, "partitions").is_some() => {
                let text = job.stream_setting(&input.stream, "partitions").unwrap_or_default();
                let n = text.parse().map_err(|_| {
                    RuntimeError::Other(format!("partitions of {}: '{text}' is not a number", input.stream))
                })?;
                admin.ensure_stream(&input.stream, n, StreamKind::Regular)?;
                tracing::info!(stream = %input.stream, partitions = n, "created intermediate input stream");
                n
            }
            other => other?,
        };
        partitions.insert(input.stream.clone(), n);
    }
    Ok((systems, partitions))
}

/// Runs one container of an already computed model on this thread (the
/// `process` mode's child side).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_one<T: StreamTask>(
    job: Arc<JobConfig>,
    kinds: &SystemKinds,
    serdes: Arc<Serdes>,
    factory: Arc<dyn Fn() -> T + Send + Sync>,
    model: &JobModel,
    id: &str,
    options: ContainerOptions,
    shutdown: Arc<AtomicBool>,
) -> Result<RunSummary, RuntimeError> {
    let systems = Arc::new(Systems::new(&job, kinds)?);
    let cm = model
        .containers
        .iter()
        .find(|c| c.id == id)
        .ok_or_else(|| RuntimeError::Other(format!("container {id} is not in the job model (a stale model file, or a leftover GREGOR_CONTAINER_ID in the environment?)")))?;
    Container::new(job, systems, cm, model.task_count, serdes, &*factory, shutdown, options).and_then(Container::run)
}

pub(crate) fn run<T: StreamTask>(
    job: Arc<JobConfig>,
    kinds: &SystemKinds,
    serdes: Arc<Serdes>,
    factory: Arc<dyn Fn() -> T + Send + Sync>,
    options: ContainerOptions,
    restart: RestartPolicy,
    shutdown: Arc<AtomicBool>,
) -> Result<RunSummary, RuntimeError> {
    let (systems, model) = prepare(&job, kinds, None)?;
    let options = ContainerOptions {
        end_barrier: Some(Arc::new(EndBarrier::new(model.containers.len()))),
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
            let options = options.clone();
            let task_count = model.task_count;
            std::thread::Builder::new().name(format!("gregor-container-{}", cm.id)).spawn(move || {
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
                    .unwrap_or_else(|_| Err(RuntimeError::Other(format!("container {} panicked", cm.id))));
                    match result {
                        // A streaming system was away (a broker down, a send
                        // that failed for good): start over from the last
                        // checkpoint, as the `process` mode restarts a container.
                        // Other failures (bad config, corrupt data) would
                        // only fail again.
                        Err(RuntimeError::System(e)) if e.is_transient() && !shutdown.load(Ordering::SeqCst) => {
                            let Some(wait) = restarts.next() else {
                                break Err(RuntimeError::System(e));
                            };
                            tracing::warn!(container = %cm.id, "container failed: {e}; restarting it from its last checkpoint in {wait:?}");
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
            })
        })
        .collect::<Result<_, _>>()
        .map_err(|e| RuntimeError::Other(format!("cannot start a container thread: {e}")))?;
    let mut total = RunSummary::default();
    let mut first_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => total.processed += s.processed,
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(RuntimeError::Other("a container thread panicked".into()));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn restarts_back_off_and_give_up_past_the_count() {
        let mut r = Restarts::new(RestartPolicy { count: 3, window: Duration::from_secs(60) });
        assert_eq!(r.next(), Some(Duration::from_millis(200)));
        assert_eq!(r.next(), Some(Duration::from_millis(400)));
        assert_eq!(r.next(), Some(Duration::from_millis(800)));
        assert_eq!(r.next(), None, "a fourth failure within the window fails the job");
        let mut r = Restarts::new(RestartPolicy { count: 1, window: Duration::ZERO });
        assert!(r.next().is_some() && r.next().is_some(), "failures outside the window do not count");
    }
}
