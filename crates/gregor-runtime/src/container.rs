//! The container: a group of tasks run by one thread over one event loop.
//!
//! Building a container reads the tasks' checkpoints, restores their stores,
//! calls their `init`, and registers every input partition with its system's
//! consumer where [`start_offset`](crate::offsets::start_offset) says. The
//! loop itself is in `run_loop`, the commit in `commit`.
//!
//! # Contract
//! - Everything here runs on the container's thread; tasks, stores,
//!   consumers and producers are never touched concurrently.
//! - Nothing is committed past a message whose processing failed.

use crate::barrier::EndBarrier;
use crate::checkpoint::{Checkpoint, checkpoint_partition, read_checkpoints};
use crate::chooser::Chooser;
use crate::clock::{Clock, SystemClock};
use crate::commit::CommitPoint;
use crate::error::{RuntimeError, call_task, panic_message};
use crate::job_config::JobConfig;
use crate::model::ContainerModel;
use crate::offsets::{StartReason, start_offset};
use crate::producers::{Producers, Router, SharedProducers};
use crate::reporter::Reporter;
use crate::stores::{TaskStore, open_store};
use crate::systems::Systems;
use bytes::Bytes;
use gregor_api::system::{StreamKind, SystemConsumer, SystemError};
use gregor_api::task::{RawStoreHandle, StoreProvider};
use gregor_api::{
    Counter, Group, MessageCollector, MetricsRegistry, RawStore, Serde, Serdes, StartOffset, StoreError, StreamTask,
    SystemStream, SystemStreamPartition, TaskContext, TaskCoordinator,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Called at each [`CommitPoint`] of a commit with the container's id;
/// returning `true` crashes the container there (tests only).
pub type CommitHook = Arc<dyn Fn(&str, CommitPoint) -> bool + Send + Sync>;

/// How a container runs.
#[derive(Clone, Default)]
pub struct ContainerOptions {
    /// Stop once every input reached its newest offset as of start-up
    /// (after a final commit). Intermediate inputs are read further: see
    /// [`EndBarrier`].
    pub until_end: bool,
    /// Shared by all containers of the job when `until_end` is set; `None`
    /// means this container is the only one.
    pub end_barrier: Option<Arc<EndBarrier>>,
    /// The job model version this container runs (given to tasks).
    pub model_version: u64,
    /// When set, the container processes, sends and commits only while it
    /// is valid, and fails with [`RuntimeError::LeaseExpired`] (committing
    /// nothing more) once it is not.
    pub lease: Option<Arc<crate::Lease>>,
    /// When set, the container re-reads its inputs' partition counts this
    /// often and fails with [`RuntimeError::PartitionCountChanged`] when one
    /// changed (the `local` and `process` modes compute the job model once;
    /// in `zookeeper` mode the leader watches counts instead).
    pub partition_check: Option<Duration>,
    /// Processing time (commits, windows, reports, send timestamps);
    /// `None` is the system clock.
    pub clock: Option<Arc<dyn Clock>>,
    /// Crash injection at points of a commit (tests).
    pub commit_hook: Option<CommitHook>,
    /// The registry to report into; `None` is a new one. A registry given
    /// here is read while the container starts (restore progress) and
    /// keeps counting across restarts of the container.
    pub metrics: Option<MetricsRegistry>,
}

impl std::fmt::Debug for ContainerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerOptions")
            .field("until_end", &self.until_end)
            .field("model_version", &self.model_version)
            .field("lease", &self.lease.is_some())
            .field("partition_check", &self.partition_check)
            .field("clock", &self.clock)
            .field("commit_hook", &self.commit_hook.is_some())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Input<T: StreamTask> {
    pub ssp: SystemStreamPartition,
    pub task: usize,
    pub consumer: usize,
    pub key_serde: Arc<dyn Serde<T::Key>>,
    pub msg_serde: Arc<dyn Serde<T::Message>>,
    /// The serdes hand buffers over unchanged ([`Serde::is_identity`]):
    /// the run loop skips calling them.
    pub key_is_identity: bool,
    pub msg_is_identity: bool,
    /// Next offset to process (what the checkpoint records).
    pub next_offset: u64,
    /// Where a bounded input ends.
    pub end: Option<u64>,
    /// Where a bootstrap input is caught up.
    pub bootstrap_end: Option<u64>,
    pub ended: bool,
    /// Also written by the job (`samza.intermediate`).
    pub intermediate: bool,
    /// What it processed per producer, when de-duplicating (exactly-once
    /// without transactions, intermediate inputs only).
    pub seen: Option<crate::sequences::Seen>,
    pub processed: LocalCount,
}

/// A count kept on the container's thread and added to its registry counter
/// once per loop turn (an atomic add per message costs more than many tasks'
/// work).
pub(crate) struct LocalCount {
    pub count: u64,
    reported: u64,
    counter: Counter,
}

impl LocalCount {
    pub fn new(counter: Counter) -> Self {
        // Counts since this start; the counter may go on from an earlier
        // run of the container (a registry shared across restarts).
        LocalCount { count: 0, reported: 0, counter }
    }

    /// Adds what was counted since the last report to the registry.
    pub fn report(&mut self) {
        self.counter.add(self.count - self.reported);
        self.reported = self.count;
    }
}

pub(crate) struct TaskInstance<T> {
    pub name: String,
    pub task: T,
    pub inputs: Vec<usize>,
    pub stores: Vec<TaskStore>,
    pub collector: MessageCollector,
    /// The router's route of each stream the collector knows (by its index).
    pub routes: Vec<usize>,
    pub coordinator: TaskCoordinator,
    pub processed: LocalCount,
    /// Duration of `process`, sampled on one message in `PROCESS_SAMPLE`.
    pub process_time: gregor_api::Timer,
    pub last_checkpoint: Option<Checkpoint>,
    /// When de-duplicating: what stamps its sends to intermediate streams.
    pub stamp: Option<crate::producers::Stamp>,
    /// Asked to shut down: gets no more messages.
    pub stopped: bool,
    pub end_of_stream_called: bool,
    /// Is shown upcoming messages ([`StreamTask::prefetch`]) until it says
    /// it does not prefetch.
    pub prefetches: bool,
}

/// A container running tasks of type `T`.
pub struct Container<T: StreamTask> {
    pub(crate) job: Arc<JobConfig>,
    pub(crate) systems: Arc<Systems>,
    pub(crate) id: String,
    pub(crate) tasks: Vec<TaskInstance<T>>,
    pub(crate) inputs: Vec<Input<T>>,
    pub(crate) input_index: HashMap<SystemStreamPartition, usize>,
    pub(crate) consumers: Vec<Box<dyn SystemConsumer>>,
    pub(crate) chooser: Chooser,
    pub(crate) producers: SharedProducers,
    pub(crate) router: Router,
    pub(crate) metrics: MetricsRegistry,
    pub(crate) reporters: Vec<Reporter>,
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) stop_requested: bool,
    pub(crate) commit_requested: bool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) commit_hook: Option<CommitHook>,
    pub(crate) next_commit: Instant,
    /// When a commit last moved the changelogs' compaction limits.
    pub(crate) limits_moved: Option<Instant>,
    pub(crate) next_window: Option<Instant>,
    /// When input offset and lag gauges are refreshed next.
    pub(crate) next_gauges: Instant,
    pub(crate) checkpoint_ssp: SystemStreamPartition,
    /// Messages sent by tasks (a hot-path handle: registry lookups lock).
    pub(crate) sends: Counter,
    /// Re-sent copies dropped from intermediate inputs (de-duplicating).
    pub(crate) duplicates: Counter,
    /// `until_end` with intermediate inputs: the barrier and whether this container arrived.
    pub(crate) end_barrier: Option<(Arc<EndBarrier>, bool)>,
    pub(crate) lease: Option<Arc<crate::Lease>>,
    /// Partition counts of the inputs at start, and when to look again.
    pub(crate) partition_counts: Vec<(SystemStream, u32)>,
    pub(crate) partition_check: Option<(Duration, Instant)>,
}

struct Stores<'a>(&'a [TaskStore]);

/// The de-duplication state of an input at start (from its checkpoint,
/// whose producer ids `decode_checkpoint` checked).
fn seen_of(
    deduplicating: bool,
    checkpoint: Option<&Checkpoint>,
    ssp: &SystemStreamPartition,
) -> Option<crate::sequences::Seen> {
    if !deduplicating {
        return None;
    }
    let seen = checkpoint.and_then(|c| c.seen.get(ssp));
    Some(seen.and_then(|s| crate::sequences::Seen::from_checkpoint(s).ok()).unwrap_or_default())
}

impl StoreProvider for Stores<'_> {
    fn raw_store(&self, name: &str) -> Result<RawStoreHandle, StoreError> {
        let s = self.0.iter().find(|s| s.spec.name == name).ok_or_else(|| StoreError::Engine {
            store: name.to_owned(),
            message: format!(
                "no such store is configured (declare it with stores.{name}.factory, key.serde and msg.serde)"
            ),
        })?;
        Ok(RawStoreHandle {
            store: s.store.clone(),
            key_serde: s.spec.key_serde.clone(),
            msg_serde: s.spec.msg_serde.clone(),
        })
    }
}

impl<T: StreamTask> Container<T> {
    /// Builds container `model.id`: restores state, initialises tasks made
    /// by `factory`, registers inputs.
    ///
    /// # Errors
    /// Any config, system, store or task-init failure.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        job: Arc<JobConfig>,
        systems: Arc<Systems>,
        model: &ContainerModel,
        task_count: u32,
        serdes: Arc<Serdes>,
        factory: &dyn Fn() -> T,
        shutdown: Arc<AtomicBool>,
        options: ContainerOptions,
    ) -> Result<Container<T>, RuntimeError> {
        let clock = options.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let transactional_id = crate::transactions::transactional_id(&job, &model.id);
        let producers: SharedProducers =
            Rc::new(RefCell::new(Producers::new(&job, &systems, clock.wall_ms(), &transactional_id)?));
        let checkpoints = read_checkpoints(&systems, &job.checkpoint_stream)?;
        let deduplicating = producers.borrow().deduplicating;
        for spec in &job.stores {
            if let Some(cl) = &spec.changelog {
                systems.admin(&cl.system)?.ensure_stream(cl, task_count, StreamKind::Changelog).map_err(
                    |e| match e {
                        SystemError::Other { context, message } => SystemError::Other {
                            context,
                            message: format!(
                                "{message} (it is the changelog of store '{}', which needs one partition per task)",
                                spec.name
                            ),
                        },
                        other => other,
                    },
                )?;
            }
        }
        let metrics = options.metrics.clone().unwrap_or_default();
        metrics.gauge("container", "model-version").set(options.model_version as i64);
        // Shown as 0 from the start (an absent series is not a zero in Prometheus).
        metrics.counter("container", "deserialization-errors");
        let names_job = job.clone();
        let mut tasks = Vec::new();
        let mut inputs: Vec<Input<T>> = Vec::new();
        let mut consumers: Vec<Box<dyn SystemConsumer>> = Vec::new();
        let mut consumer_of: HashMap<String, usize> = HashMap::new();
        for (t, tm) in model.tasks.iter().enumerate() {
            let checkpoint = checkpoints.get(&tm.name);
            let mut stores = Vec::new();
            for spec in &job.stores {
                let mut store =
                    open_store(spec, tm, checkpoint, &job, &systems, &producers, &metrics, model.tasks.len())?;
                store.snapshot_taken = clock.now();
                stores.push(store);
            }
            let mut task = catch_unwind(AssertUnwindSafe(factory)).map_err(|p| RuntimeError::Task {
                task: tm.name.clone(),
                phase: "creation",
                message: panic_message(&*p),
            })?;
            {
                let provider = Stores(&stores);
                let counts = |s: &SystemStream| systems.admin(&s.system).ok()?.partition_count(s).ok();
                let mut ctx = TaskContext::new(&job.raw, &tm.name, &tm.inputs, &provider, &serdes, &metrics)
                    .with_container(&model.id, options.model_version)
                    .with_partition_counts(&counts)
                    .with_task_count(task_count);
                call_task(&tm.name, "init", || task.init(&mut ctx))?;
            }
            let names_job = names_job.clone();
            let collector = MessageCollector::new(
                serdes.clone(),
                Box::new(move |s| {
                    if names_job.systems.contains_key(&*s.system) {
                        Ok(names_job.serde_names(s))
                    } else {
                        Err(format!("system '{}' is not configured (add systems.{}.factory)", s.system, s.system))
                    }
                }),
            );
            let group = Group::task(&tm.name);
            let mut task_inputs = Vec::new();
            for ssp in &tm.inputs {
                let spec =
                    job.inputs.iter().find(|i| i.stream == ssp.stream).ok_or_else(|| RuntimeError::NotFound {
                        kind: "input",
                        name: ssp.to_string(),
                        hint: " (the job model names an input the config does not; a stale model?)".into(),
                    })?;
                let serde_err =
                    |which, source| RuntimeError::InputSerde { stream: ssp.stream.to_string(), which, source };
                let key_serde = serdes.resolve::<T::Key>(&spec.key_serde).map_err(|e| serde_err("key", e))?;
                let msg_serde = serdes.resolve::<T::Message>(&spec.msg_serde).map_err(|e| serde_err("msg", e))?;
                let consumer = match consumer_of.get(&*ssp.stream.system) {
                    Some(&c) => c,
                    None => {
                        consumers.push(systems.factory(&ssp.stream.system)?.consumer()?);
                        consumer_of.insert(ssp.stream.system.to_string(), consumers.len() - 1);
                        consumers.len() - 1
                    }
                };
                let offsets = systems.offsets(ssp)?;
                let checkpointed = checkpoint.and_then(|c| c.inputs.get(ssp)).copied();
                let start = start_offset(checkpointed, offsets, spec.offset_default, spec.reset_offset);
                match start.reason {
                    StartReason::CheckpointAheadOfEnd { checkpointed } => tracing::warn!(
                        %ssp, checkpointed, next = offsets.next, starting_at = start.offset,
                        "the checkpoint is past the end of the partition (was the stream recreated?); starting at samza.offset.default"
                    ),
                    StartReason::CheckpointBelowOldest { checkpointed } => tracing::warn!(
                        %ssp, checkpointed, oldest = offsets.oldest, starting_at = start.offset,
                        "messages after the checkpoint were deleted by retention; starting at samza.offset.default"
                    ),
                    _ => {}
                }
                consumers[consumer].register(ssp, StartOffset::At(start.offset))?;
                inputs.push(Input {
                    ssp: ssp.clone(),
                    task: t,
                    consumer,
                    key_is_identity: key_serde.is_identity(),
                    msg_is_identity: msg_serde.is_identity(),
                    key_serde,
                    msg_serde,
                    next_offset: start.offset,
                    end: spec.bounded.then_some(offsets.next),
                    bootstrap_end: spec.bootstrap.then_some(offsets.next),
                    ended: false,
                    intermediate: spec.intermediate,
                    seen: seen_of(deduplicating && spec.intermediate && spec.stamped, checkpoint, ssp),
                    processed: LocalCount::new(metrics.counter(Group::input(ssp), "messages-processed")),
                });
                task_inputs.push(inputs.len() - 1);
            }
            tasks.push(TaskInstance {
                name: tm.name.clone(),
                task,
                inputs: task_inputs,
                stores,
                collector,
                routes: Vec::new(),
                coordinator: TaskCoordinator::default(),
                processed: LocalCount::new(metrics.counter(&group, "messages-processed")),
                process_time: metrics.timer(&group, "process"),
                last_checkpoint: checkpoint.cloned(),
                stamp: deduplicating.then(|| crate::producers::Stamp {
                    producer: crate::sequences::producer_id(&job.dir_name(), &tm.name),
                    next: checkpoint.map_or(0, |c| c.sequence),
                }),
                stopped: false,
                end_of_stream_called: false,
                prefetches: true,
            });
        }
        for c in &mut consumers {
            c.start()?;
        }
        let priorities: Vec<i64> = inputs
            .iter()
            .map(|i| job.inputs.iter().find(|s| s.stream == i.ssp.stream).map_or(0, |s| s.priority))
            .collect();
        let bootstrap: Vec<bool> = inputs.iter().map(|i| i.bootstrap_end.is_some()).collect();
        let now = clock.now();
        let reporters = job.reporters.iter().map(|r| Reporter::new(r.clone(), now)).collect();
        let mut partition_counts = Vec::new();
        if options.partition_check.is_some() {
            let streams: std::collections::BTreeSet<_> = inputs.iter().map(|i| i.ssp.stream.clone()).collect();
            for s in streams {
                let n = systems.admin(&s.system)?.partition_count(&s)?;
                partition_counts.push((s, n));
            }
        }
        let mut container = Container {
            input_index: inputs.iter().enumerate().map(|(i, inp)| (inp.ssp.clone(), i)).collect(),
            chooser: Chooser::new(&priorities, &bootstrap),
            router: Router::new(task_count),
            checkpoint_ssp: checkpoint_partition(&job.checkpoint_stream),
            sends: metrics.counter("container", "sends"),
            duplicates: metrics.counter("container", "duplicates-dropped"),
            next_commit: now + job.commit_interval,
            limits_moved: None,
            next_window: job.window_interval.map(|w| now + w),
            next_gauges: now,
            id: model.id.clone(),
            job,
            systems,
            tasks,
            inputs,
            consumers,
            producers,
            metrics,
            reporters,
            shutdown,
            stop_requested: false,
            commit_requested: false,
            clock,
            commit_hook: options.commit_hook,
            end_barrier: None,
            lease: options.lease,
            partition_counts,
            partition_check: options.partition_check.map(|every| (every, now + every)),
        };
        if options.until_end {
            let barrier = options.end_barrier.unwrap_or_else(|| Arc::new(EndBarrier::new(vec![model.id.clone()])));
            container.end_at_newest(barrier)?;
        }
        Ok(container)
    }

    /// From now on, stops once every input reached its newest offset as of
    /// this call (intermediate inputs: as of the moment every container
    /// arrived at `barrier`), as `until_end` does from the start.
    ///
    /// # Errors
    /// If the offsets cannot be read.
    pub fn end_at_newest(&mut self, barrier: Arc<EndBarrier>) -> Result<(), RuntimeError> {
        for input in &mut self.inputs {
            if !input.intermediate && input.end.is_none() {
                input.end = Some(self.systems.offsets(&input.ssp)?.next);
            }
        }
        self.end_barrier = Some((barrier, false));
        Ok(())
    }

    /// The container's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The names of the container's tasks.
    pub fn task_names(&self) -> impl Iterator<Item = &str> {
        self.tasks.iter().map(|t| t.name.as_str())
    }

    /// The current contents of `store` of task `task` (including writes not
    /// yet committed), as key and value bytes in key order. Reading flushes
    /// the store's cache into its engine, as a task's own range read does.
    ///
    /// # Errors
    /// An unknown task or store, or the store's failure.
    pub fn store_entries(&self, task: &str, store: &str) -> Result<Vec<(Bytes, Bytes)>, RuntimeError> {
        let t = self.tasks.iter().find(|t| t.name == task).ok_or_else(|| RuntimeError::NotFound {
            kind: "task",
            name: task.to_owned(),
            hint: format!(" in container {}", self.id),
        })?;
        let s = t.stores.iter().find(|s| s.spec.name == store).ok_or_else(|| RuntimeError::NotFound {
            kind: "store",
            name: store.to_owned(),
            hint: String::new(),
        })?;
        let mut out = Vec::new();
        s.store.borrow_mut().scan(Bound::Unbounded, None, usize::MAX, &mut out)?;
        Ok(out)
    }

    /// The changelog offset of the local snapshot a store of a task counts
    /// on (the one its next restart on this machine would start from).
    #[doc(hidden)]
    pub fn local_snapshot(&self, task: &str, store: &str) -> Option<u64> {
        let t = self.tasks.iter().find(|t| t.name == task)?;
        t.stores.iter().find(|s| s.spec.name == store)?.snapshot_at
    }

    /// Commits at the end of the next step, whatever the time.
    pub fn request_commit(&mut self) {
        self.commit_requested = true;
    }

    /// Messages processed so far by this container.
    pub fn processed(&self) -> u64 {
        self.tasks.iter().map(|t| t.processed.count).sum()
    }

    /// Checks the commit hook at `point`.
    pub(crate) fn commit_point(&self, point: CommitPoint) -> Result<(), RuntimeError> {
        gregor_api::failpoint::failpoint(point.name());
        match &self.commit_hook {
            Some(hook) if hook(&self.id, point) => {
                Err(RuntimeError::InjectedCrash { container: self.id.clone(), point })
            }
            _ => Ok(()),
        }
    }

    /// The container's metrics.
    pub fn metrics(&self) -> &MetricsRegistry {
        &self.metrics
    }
}
