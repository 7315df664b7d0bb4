//! The container: a group of tasks run by one thread over one event loop.
//!
//! Building a container reads the tasks' checkpoints, restores their stores,
//! calls their `init`, and registers every input partition with its system's
//! consumer at the checkpointed offset (or the configured default). The loop
//! itself is in `run_loop`.
//!
//! # Contract
//! - Everything here runs on the container's thread; tasks, stores,
//!   consumers and producers are never touched concurrently.
//! - Nothing is committed past a message whose processing failed.

use crate::checkpoint::{Checkpoint, checkpoint_partition, read_checkpoints};
use crate::chooser::Chooser;
use crate::error::{RuntimeError, call_task, panic_message};
use crate::job_config::{JobConfig, OffsetDefault};
use crate::model::ContainerModel;
use crate::producers::{Producers, Router, SharedProducers};
use crate::reporter::Reporter;
use crate::stores::{TaskStore, open_store};
use crate::systems::Systems;
use gregor_api::system::{StreamKind, SystemConsumer, SystemError};
use gregor_api::task::{RawStoreHandle, StoreProvider};
use gregor_api::{
    Counter, MessageCollector, MetricsRegistry, Serde, Serdes, StartOffset, StoreError, StreamTask,
    SystemStreamPartition, TaskContext, TaskCoordinator,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// How a container runs.
#[derive(Debug, Clone, Default)]
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
    pub partition_check: Option<std::time::Duration>,
}

/// How containers agree that intermediate streams are complete under
/// `until_end`: each container arrives once its other inputs have ended and
/// everything it sent is flushed; when all have arrived, no more
/// intermediate data can come from them, and each intermediate input ends at
/// its newest offset as of that moment.
///
/// Containers of one process share an in-memory barrier; containers in
/// separate processes (the `process` mode) share a directory in which each
/// arrival is a file named after the container (so a restarted container
/// arriving again changes nothing).
#[derive(Debug)]
pub struct EndBarrier {
    kind: BarrierKind,
}

#[derive(Debug)]
enum BarrierKind {
    Memory { expected: usize, arrived: std::sync::atomic::AtomicUsize },
    Files { dir: std::path::PathBuf, ids: Vec<String>, me: String },
}

impl EndBarrier {
    /// A barrier for `containers` containers of this process.
    pub fn new(containers: usize) -> Self {
        EndBarrier {
            kind: BarrierKind::Memory { expected: containers, arrived: std::sync::atomic::AtomicUsize::new(0) },
        }
    }

    /// Container `me`'s view of a barrier shared through `dir` by the
    /// containers `ids` (each its own process).
    pub fn in_directory(dir: &std::path::Path, ids: Vec<String>, me: &str) -> Self {
        EndBarrier { kind: BarrierKind::Files { dir: dir.to_owned(), ids, me: me.to_owned() } }
    }

    pub(crate) fn arrive(&self) -> Result<(), RuntimeError> {
        match &self.kind {
            BarrierKind::Memory { arrived, .. } => {
                arrived.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
            BarrierKind::Files { dir, me, .. } => {
                std::fs::create_dir_all(dir).and_then(|_| std::fs::write(dir.join(me), b"")).map_err(|e| {
                    RuntimeError::Other(format!("cannot record arrival at the end barrier in {}: {e}", dir.display()))
                })
            }
        }
    }

    pub(crate) fn complete(&self) -> bool {
        match &self.kind {
            BarrierKind::Memory { expected, arrived } => arrived.load(std::sync::atomic::Ordering::SeqCst) >= *expected,
            BarrierKind::Files { dir, ids, .. } => ids.iter().all(|id| dir.join(id).exists()),
        }
    }
}

pub(crate) struct Input<T: StreamTask> {
    pub ssp: SystemStreamPartition,
    pub task: usize,
    pub consumer: usize,
    pub key_serde: Arc<dyn Serde<T::Key>>,
    pub msg_serde: Arc<dyn Serde<T::Message>>,
    /// Next offset to process (what the checkpoint records).
    pub next_offset: u64,
    /// Where a bounded input ends.
    pub end: Option<u64>,
    /// Where a bootstrap input is caught up.
    pub bootstrap_end: Option<u64>,
    pub ended: bool,
    /// An intermediate input under `until_end`: its end is set at the barrier.
    pub intermediate: bool,
    pub processed: Counter,
}

pub(crate) struct TaskInstance<T> {
    pub name: String,
    pub task: T,
    pub inputs: Vec<usize>,
    pub stores: Vec<TaskStore>,
    pub collector: MessageCollector,
    pub coordinator: TaskCoordinator,
    pub processed: Counter,
    /// Duration of `process`, sampled on one message in `PROCESS_SAMPLE`.
    pub process_time: gregor_api::Timer,
    pub last_checkpoint: Option<Checkpoint>,
    /// Asked to shut down: gets no more messages.
    pub stopped: bool,
    pub end_of_stream_called: bool,
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
    pub(crate) next_commit: Instant,
    pub(crate) next_window: Option<Instant>,
    pub(crate) checkpoint_ssp: SystemStreamPartition,
    /// Messages sent by tasks (a hot-path handle: registry lookups lock).
    pub(crate) sends: Counter,
    /// `until_end` with intermediate inputs: the barrier and whether this container arrived.
    pub(crate) end_barrier: Option<(Arc<EndBarrier>, bool)>,
    pub(crate) lease: Option<Arc<crate::Lease>>,
    /// Partition counts of the inputs at start, and when to look again.
    pub(crate) partition_counts: Vec<(gregor_api::SystemStream, u32)>,
    pub(crate) partition_check: Option<(std::time::Duration, Instant)>,
}

struct Stores<'a>(&'a [TaskStore]);

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
        let producers: SharedProducers = Rc::new(RefCell::new(Producers::new(&job, &systems)?));
        let checkpoints = read_checkpoints(&systems, &job.checkpoint_stream)?;
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
        let metrics = MetricsRegistry::new();
        let names_job = job.clone();
        let mut tasks = Vec::new();
        let mut inputs: Vec<Input<T>> = Vec::new();
        let mut consumers: Vec<Box<dyn SystemConsumer>> = Vec::new();
        let mut consumer_of: HashMap<String, usize> = HashMap::new();
        for (t, tm) in model.tasks.iter().enumerate() {
            let checkpoint = checkpoints.get(&tm.name);
            let mut stores = Vec::new();
            for spec in &job.stores {
                stores.push(open_store(spec, tm, checkpoint, &job, &systems, &producers, &metrics, model.tasks.len())?);
            }
            let mut task = catch_unwind(AssertUnwindSafe(factory)).map_err(|p| RuntimeError::Task {
                task: tm.name.clone(),
                phase: "creation",
                message: panic_message(&*p),
            })?;
            {
                let provider = Stores(&stores);
                let mut ctx = TaskContext::new(&job.raw, &tm.name, &tm.inputs, &provider, &serdes, &metrics)
                    .with_container(&model.id, options.model_version);
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
            let group = format!("task.{}", tm.name);
            let mut task_inputs = Vec::new();
            for ssp in &tm.inputs {
                let spec = job
                    .inputs
                    .iter()
                    .find(|i| i.stream == ssp.stream)
                    .ok_or_else(|| RuntimeError::Other(format!("{ssp} is not an input of the job")))?;
                let serde_err = |which: &str, e: gregor_api::SerdeError| {
                    RuntimeError::Other(format!(
                        "input {}: {which} serde: {e} (set streams.{}.samza.{which}.serde)",
                        ssp.stream, ssp.stream.stream
                    ))
                };
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
                let default = match spec.offset_default {
                    OffsetDefault::Oldest => (StartOffset::Oldest, offsets.oldest),
                    // The end as read now: what arrives later is processed.
                    OffsetDefault::Upcoming => (StartOffset::At(offsets.next), offsets.next),
                };
                let checkpointed = checkpoint.and_then(|c| c.inputs.get(ssp)).copied().filter(|_| !spec.reset_offset);
                let (start, next_offset) = match checkpointed {
                    Some(o) if o >= offsets.oldest && o <= offsets.next => (StartOffset::At(o), o),
                    Some(o) if o < offsets.oldest => {
                        tracing::warn!(%ssp, checkpointed = o, oldest = offsets.oldest, "messages after the checkpoint were deleted by retention; starting at the oldest offset");
                        (StartOffset::Oldest, offsets.oldest)
                    }
                    Some(o) => {
                        tracing::warn!(%ssp, checkpointed = o, next = offsets.next, "the checkpoint is ahead of the stream (was it recreated?); starting at its end");
                        (StartOffset::At(offsets.next), offsets.next)
                    }
                    None => default,
                };
                consumers[consumer].register(ssp, start)?;
                let intermediate = options.until_end && spec.intermediate;
                let bounded = (options.until_end && !intermediate) || spec.bounded;
                inputs.push(Input {
                    ssp: ssp.clone(),
                    task: t,
                    consumer,
                    key_serde,
                    msg_serde,
                    next_offset,
                    end: bounded.then_some(offsets.next),
                    bootstrap_end: spec.bootstrap.then_some(offsets.next),
                    ended: false,
                    intermediate,
                    processed: metrics.counter(&format!("input.{ssp}"), "messages-processed"),
                });
                task_inputs.push(inputs.len() - 1);
            }
            tasks.push(TaskInstance {
                name: tm.name.clone(),
                task,
                inputs: task_inputs,
                stores,
                collector,
                coordinator: TaskCoordinator::default(),
                processed: metrics.counter(&group, "messages-processed"),
                process_time: metrics.timer(&group, "process"),
                last_checkpoint: checkpoint.cloned(),
                stopped: false,
                end_of_stream_called: false,
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
        let now = Instant::now();
        let reporters = job.reporters.iter().map(|r| Reporter::new(r.clone(), now)).collect();
        let mut partition_counts = Vec::new();
        if options.partition_check.is_some() {
            let streams: std::collections::BTreeSet<_> = inputs.iter().map(|i| i.ssp.stream.clone()).collect();
            for s in streams {
                let n = systems.admin(&s.system)?.partition_count(&s)?;
                partition_counts.push((s, n));
            }
        }
        Ok(Container {
            input_index: inputs.iter().enumerate().map(|(i, inp)| (inp.ssp.clone(), i)).collect(),
            chooser: Chooser::new(&priorities, &bootstrap),
            router: Router::new(task_count),
            checkpoint_ssp: checkpoint_partition(&job.checkpoint_stream),
            sends: metrics.counter("container", "sends"),
            next_commit: now + job.commit_interval,
            next_window: job.window_interval.map(|w| now + w),
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
            end_barrier: options
                .until_end
                .then(|| (options.end_barrier.clone().unwrap_or_else(|| Arc::new(EndBarrier::new(1))), false)),
            lease: options.lease,
            partition_counts,
            partition_check: options.partition_check.map(|every| (every, now + every)),
        })
    }

    /// The container's metrics.
    pub fn metrics(&self) -> &MetricsRegistry {
        &self.metrics
    }
}
