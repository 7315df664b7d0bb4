//! Testing a job in-process: in-memory streams, a manual clock, containers
//! driven step by step, injected crashes.
//!
//! A [`TestJob`] runs a job's real containers (the same run loop, stores,
//! changelogs and checkpoints as in production) on the test's thread, over
//! the in-memory system: every system of the config becomes a `memory`
//! system private to the test, stores keep their local state in a temporary
//! directory, and processing time is a [`ManualClock`] that moves only when
//! the test says so.
//!
//! ```
//! use gregor::testing::TestJob;
//! use gregor::{App, Config, IncomingEnvelope, MessageCollector, OutgoingEnvelope, StreamTask, SystemStream, TaskCoordinator, TaskError};
//!
//! /// Upper-cases every line into `log.shouts`.
//! struct Shout(SystemStream);
//!
//! impl StreamTask for Shout {
//!     type Key = String;
//!     type Message = String;
//!     fn process(&mut self, e: IncomingEnvelope<'_, String, String>, c: &mut MessageCollector, _: &mut TaskCoordinator) -> Result<(), TaskError> {
//!         let line = e.message.unwrap_or_default().to_uppercase();
//!         c.send(OutgoingEnvelope::to_partition(&self.0, e.ssp.partition, e.key, line))?;
//!         Ok(())
//!     }
//! }
//!
//! let config = Config::from_properties(
//!     "job.name=shout\ntask.inputs=log.lines\nsystems.log.factory=log\n\
//!      systems.log.samza.key.serde=string\nsystems.log.samza.msg.serde=string\nsystems.log.samza.offset.default=oldest\n",
//!     "test",
//! ).unwrap();
//! let app = App::new("shout", || Shout(SystemStream::new("log", "shouts")));
//! let mut job = TestJob::new(app, config).unwrap();
//! job.create_stream("lines", 2).unwrap();
//! job.create_stream("shouts", 2).unwrap();
//! let lines = job.input::<String, String>("lines").unwrap();
//! lines.send(1, "k".into(), "hello".into()).unwrap();
//! job.run_to_end().unwrap();
//! let out = job.output::<String, String>("shouts").unwrap();
//! assert_eq!(out.values(), vec!["HELLO".to_owned()]);
//! assert_eq!(out.records()[0].partition, 1);
//! ```
//!
//! Everything runs on one thread, deterministically: the same inputs and
//! the same calls give the same outputs. A `TestJob` never touches the
//! files or streams of a real job.

mod streams;

pub use gregor_api::metrics::MetricValue;
pub use gregor_runtime::{Clock, CommitPoint, ManualClock};
pub use streams::{Input, Output, Record};

use crate::app::{App, JobError};
use crate::memory::MemoryStreams;
use gregor_api::{Config, Data, MetricsRegistry, Serdes, StreamTask, SystemStream};
use gregor_runtime::{
    Container, ContainerOptions, EndBarrier, JobConfig, JobModel, RunSummary, RuntimeError, StepOutcome, Systems,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Metric values by group and name.
pub type MetricsSnapshot = BTreeMap<String, BTreeMap<String, MetricValue>>;

/// Wall-clock time a test's manual clock starts at (2026-01-01T00:00:00Z).
pub const START_MS: i64 = 1_767_225_600_000;

/// One container of the job model and its state in the test.
struct Slot<T: StreamTask> {
    id: String,
    container: Option<Container<T>>,
    /// Metrics of the last container that ran in this slot.
    metrics: Option<MetricsRegistry>,
    finished: bool,
}

/// A job under test: see the [module documentation](self).
pub struct TestJob<T: StreamTask> {
    app: App<T>,
    job: Arc<JobConfig>,
    systems: Arc<Systems>,
    /// The in-memory namespace of each system of the config.
    namespaces: BTreeMap<String, MemoryStreams>,
    clock: ManualClock,
    model: Option<JobModel>,
    slots: Vec<Slot<T>>,
    barrier: Option<Arc<EndBarrier>>,
    /// (container, point): crash there at the next commit that reaches it.
    crash_at: Arc<Mutex<Vec<(String, CommitPoint)>>>,
    _state_dir: tempfile::TempDir,
}

static NAMESPACES: AtomicU64 = AtomicU64::new(0);

impl<T: StreamTask> TestJob<T> {
    /// A test of `app` with `config` (as the job's `--config` file would
    /// give it). Every `systems.<name>.factory` becomes `memory` in a
    /// namespace of this test; the stores' local state goes to a temporary
    /// directory removed when the `TestJob` is dropped.
    ///
    /// # Errors
    /// An invalid config, naming the key.
    pub fn new(app: App<T>, mut config: Config) -> Result<TestJob<T>, JobError> {
        let run = NAMESPACES.fetch_add(1, Ordering::Relaxed);
        let systems: Vec<String> = config
            .iter()
            .filter_map(|(k, _)| k.strip_prefix("systems.")?.strip_suffix(".factory").map(str::to_owned))
            .collect();
        let mut namespaces = BTreeMap::new();
        for system in systems {
            let ns = format!("gregor-test-{}-{run}-{system}", std::process::id());
            config.set(format!("systems.{system}.factory"), "memory");
            config.set(format!("systems.{system}.memory.namespace"), ns.clone());
            namespaces.insert(system, MemoryStreams::open(&ns));
        }
        let state_dir = tempfile::Builder::new()
            .prefix("gregor-test-state-")
            .tempdir()
            .map_err(|e| JobError::Usage(format!("cannot create a temporary directory for the stores: {e}")))?;
        config.set("job.logged.store.base.dir", state_dir.path().display().to_string());
        let job = Arc::new(app.job_config(config)?);
        let systems = Arc::new(Systems::new(&job, &crate::systems::builtin_kinds())?);
        Ok(TestJob {
            app,
            job,
            systems,
            namespaces,
            clock: ManualClock::new(START_MS),
            model: None,
            slots: Vec::new(),
            barrier: None,
            crash_at: Arc::new(Mutex::new(Vec::new())),
            _state_dir: state_dir,
        })
    }

    /// The job's validated config.
    pub fn job_config(&self) -> &JobConfig {
        &self.job
    }

    /// The processing-time clock the containers use.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// Moves processing time forward (commits and `window` calls fall due;
    /// they happen at the next [`run`](Self::run) or [`step`](Self::step)).
    pub fn advance_time(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// The stream a name designates: `system.stream`, a stream id with
    /// `streams.<id>.samza.physical.name`, or a stream of the default system.
    pub fn stream(&self, name: &str) -> SystemStream {
        if let Some(s) = SystemStream::parse(name).filter(|s| self.job.systems.contains_key(&*s.system)) {
            return s;
        }
        let c = &self.job.raw;
        let physical = c.get(&format!("streams.{name}.samza.physical.name")).unwrap_or(name);
        let system = c.get(&format!("streams.{name}.samza.system")).unwrap_or(&self.job.default_system);
        SystemStream::new(system, physical)
    }

    fn streams_of(&self, stream: &SystemStream) -> Result<&MemoryStreams, JobError> {
        self.namespaces.get(&*stream.system).ok_or_else(|| {
            JobError::Usage(format!("stream {stream}: system '{}' is not in the job's config", stream.system))
        })
    }

    /// Creates a stream (input, output or intermediate) with `partitions` partitions.
    ///
    /// # Errors
    /// The stream exists with another partition count.
    pub fn create_stream(&self, name: &str, partitions: u32) -> Result<(), JobError> {
        let stream = self.stream(name);
        self.streams_of(&stream)?.create_stream(&stream.stream, partitions).map_err(|e| JobError::Runtime(e.into()))
    }

    /// The in-memory streams behind a system of the config (to grow, delete
    /// or inspect streams directly).
    ///
    /// # Errors
    /// A system the config does not have.
    pub fn memory_streams(&self, system: &str) -> Result<&MemoryStreams, JobError> {
        self.namespaces.get(system).ok_or_else(|| JobError::Usage(format!("the config has no system '{system}'")))
    }

    /// Ends an input stream: a task whose inputs all ended gets `end_of_stream`.
    ///
    /// # Errors
    /// An unknown stream.
    pub fn end_stream(&self, name: &str) -> Result<(), JobError> {
        let stream = self.stream(name);
        self.streams_of(&stream)?.end_stream(&stream.stream).map_err(|e| JobError::Runtime(e.into()))
    }

    fn serdes(&self) -> &Serdes {
        &self.app.serdes
    }

    /// A typed writer to an input stream, encoding with the stream's
    /// configured serdes.
    ///
    /// # Errors
    /// The stream's serdes do not fit `K` and `V` (naming the stream and
    /// both types), or its system is not configured.
    pub fn input<K: Data, V: Data>(&self, name: &str) -> Result<Input<K, V>, JobError> {
        let stream = self.stream(name);
        Input::new(self.streams_of(&stream)?.clone(), stream, &self.job, self.serdes(), self.clock.clone())
    }

    /// Everything written to a stream so far, decoded with its configured serdes.
    ///
    /// # Errors
    /// An unknown stream, serdes that do not fit `K` and `V`, or a message
    /// that does not decode.
    pub fn output<K: Data, V: Data>(&self, name: &str) -> Result<Output<K, V>, JobError> {
        let stream = self.stream(name);
        Output::read(self.streams_of(&stream)?, &stream, &self.job, self.serdes())
    }

    /// Starts the containers (done by the first run or step).
    fn start(&mut self) -> Result<(), JobError> {
        if self.model.is_some() {
            return Ok(());
        }
        let (_, model) = crate::local::prepare(&self.job, &self.systems, None)?;
        self.barrier = Some(Arc::new(EndBarrier::new(model.containers.iter().map(|c| c.id.clone()).collect())));
        self.slots = model
            .containers
            .iter()
            .map(|c| Slot { id: c.id.clone(), container: None, metrics: None, finished: false })
            .collect();
        self.model = Some(model);
        for i in 0..self.slots.len() {
            self.start_slot(i)?;
        }
        Ok(())
    }

    fn start_slot(&mut self, i: usize) -> Result<(), JobError> {
        let Some(model) = &self.model else { return Ok(()) };
        let cm = &model.containers[i];
        let crash_at = self.crash_at.clone();
        let options = ContainerOptions {
            model_version: model.version,
            // As in the `local` mode; the test clock decides when it is due.
            partition_check: Some(crate::app::partition_check(&self.job)?),
            clock: Some(Arc::new(self.clock.clone())),
            commit_hook: Some(Arc::new(move |id: &str, point: CommitPoint| {
                let mut armed = crash_at.lock().unwrap_or_else(|p| p.into_inner());
                let hit = armed.iter().position(|(c, p)| c == id && *p == point);
                hit.map(|at| armed.remove(at)).is_some()
            })),
            ..Default::default()
        };
        let container = Container::new(
            self.job.clone(),
            self.systems.clone(),
            cm,
            model.task_count,
            Arc::new(self.app.serdes.clone()),
            &*self.app.factory,
            Arc::new(AtomicBool::new(false)),
            options,
        )?;
        let slot = &mut self.slots[i];
        slot.metrics = Some(container.metrics().clone());
        slot.container = Some(container);
        slot.finished = false;
        Ok(())
    }

    fn slot(&self, container: &str) -> Result<usize, JobError> {
        self.slots.iter().position(|s| s.id == container).ok_or_else(|| {
            let ids: Vec<&str> = self.slots.iter().map(|s| s.id.as_str()).collect();
            JobError::Usage(format!("no container '{container}' (containers: {})", ids.join(", ")))
        })
    }

    /// Steps container `i` (if running), at most `limit` messages; a
    /// container that fails is dropped without committing, as a crashed one
    /// is, and an injected crash is not an error.
    fn step_slot(&mut self, i: usize, limit: usize) -> Result<Option<StepOutcome>, JobError> {
        let Some(c) = self.slots[i].container.as_mut() else { return Ok(None) };
        match c.step_at_most(limit) {
            Ok(out) => Ok(Some(out)),
            Err(e) => {
                self.slots[i].container = None;
                match e {
                    RuntimeError::InjectedCrash { .. } => Ok(None),
                    e => Err(e.into()),
                }
            }
        }
    }

    /// Steps every running container once, each processing at most
    /// `budget` messages; returns the messages processed and still buffered.
    fn round(&mut self, mut budget: usize) -> Result<(usize, usize), JobError> {
        let (mut processed, mut buffered) = (0, 0);
        for i in 0..self.slots.len() {
            if let Some(out) = self.step_slot(i, budget)? {
                processed += out.processed;
                buffered += out.buffered;
                budget -= out.processed.min(budget);
            }
        }
        Ok((processed, buffered))
    }

    /// Processes until every running container is idle: all input available
    /// now, and all that this produces (through intermediate streams), is
    /// processed. Commits and `window` calls that fall due by the clock
    /// happen on the way. Returns the messages processed.
    ///
    /// # Errors
    /// A task or container failure (that container is then dropped without
    /// committing, as after a crash). A crash injected with
    /// [`crash_at_commit`](Self::crash_at_commit) is not an error.
    pub fn run(&mut self) -> Result<u64, JobError> {
        self.start()?;
        let mut total = 0u64;
        let mut idle_rounds = 0;
        loop {
            let (processed, buffered) = self.round(usize::MAX)?;
            total += processed as u64;
            // Twice: a round's `window` call may send after it looked for input.
            if processed == 0 && buffered == 0 {
                idle_rounds += 1;
                if idle_rounds == 2 {
                    return Ok(total);
                }
            } else {
                idle_rounds = 0;
            }
        }
    }

    /// Processes at most `messages` messages over all containers (fewer if
    /// the input runs out); returns how many.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn step(&mut self, messages: usize) -> Result<usize, JobError> {
        self.start()?;
        let mut done = 0;
        while done < messages {
            let (processed, buffered) = self.round(messages - done)?;
            done += processed;
            if processed == 0 && buffered == 0 {
                break;
            }
        }
        Ok(done)
    }

    /// Processes everything available, then ends the job as `--until-end`
    /// does: every input ends at its newest offset, intermediate streams
    /// once every container has sent all it will, tasks get
    /// `end_of_stream`, every container commits and closes.
    ///
    /// # Errors
    /// As [`run`](Self::run); and a container that crashed and was not
    /// restarted (the end would never come).
    pub fn run_to_end(&mut self) -> Result<RunSummary, JobError> {
        self.run()?;
        if let Some(slot) = self.slots.iter().find(|s| s.container.is_none() && !s.finished) {
            return Err(JobError::Usage(format!(
                "container {} is down (crashed and not restarted): restart it before running to the end",
                slot.id
            )));
        }
        let barrier = self.barrier.clone().ok_or_else(|| JobError::Usage("the job has not started".into()))?;
        for slot in &mut self.slots {
            if let Some(c) = slot.container.as_mut() {
                c.end_at_newest(barrier.clone())?;
            }
        }
        let mut summary = RunSummary::default();
        while self.slots.iter().any(|s| s.container.is_some()) {
            for i in 0..self.slots.len() {
                let done = self.step_slot(i, gregor_runtime::TURN)?.is_some_and(|out| out.done);
                if done && let Some(c) = self.slots[i].container.take() {
                    summary.processed += c.finish()?.processed;
                    self.slots[i].finished = true;
                }
            }
            if let Some(slot) = self.slots.iter().find(|s| s.container.is_none() && !s.finished) {
                return Err(JobError::Usage(format!("container {} crashed before the end", slot.id)));
            }
        }
        Ok(summary)
    }

    /// Asks every running container to commit now (at its next step, which
    /// this runs).
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn commit(&mut self) -> Result<(), JobError> {
        self.start()?;
        for slot in &mut self.slots {
            if let Some(c) = slot.container.as_mut() {
                c.request_commit();
            }
        }
        self.round(0)?;
        Ok(())
    }

    /// Drops container `id` without committing, as a `kill -9` would: what
    /// it processed since its last commit is processed again after
    /// [`restart`](Self::restart), and its stores are restored to that commit.
    ///
    /// # Errors
    /// An unknown container.
    pub fn crash(&mut self, id: &str) -> Result<(), JobError> {
        self.start()?;
        let i = self.slot(id)?;
        self.slots[i].container = None;
        Ok(())
    }

    /// Makes container `id` crash at `point` of its next commit that
    /// reaches it (see [`CommitPoint`]).
    ///
    /// # Errors
    /// An unknown container.
    pub fn crash_at_commit(&mut self, id: &str, point: CommitPoint) -> Result<(), JobError> {
        self.start()?;
        self.slot(id)?;
        self.crash_at.lock().unwrap_or_else(|p| p.into_inner()).push((id.to_owned(), point));
        Ok(())
    }

    /// Starts container `id` again (from its checkpoints, with its stores
    /// restored), after a crash.
    ///
    /// # Errors
    /// An unknown or still running container, or a failure to start.
    pub fn restart(&mut self, id: &str) -> Result<(), JobError> {
        self.start()?;
        let i = self.slot(id)?;
        if self.slots[i].container.is_some() {
            return Err(JobError::Usage(format!("container {id} is running; crash it first")));
        }
        self.start_slot(i)
    }

    /// Whether container `id` runs (started, not crashed or finished).
    pub fn is_running(&self, id: &str) -> bool {
        self.slots.iter().any(|s| s.id == id && s.container.is_some())
    }

    /// The job model the containers run (after the first run or step).
    pub fn model(&self) -> Option<&JobModel> {
        self.model.as_ref()
    }

    /// The contents of `store` of `task`: live (uncommitted writes
    /// included) while its container runs, else as committed (replayed from
    /// its changelog up to the task's checkpoint).
    ///
    /// # Errors
    /// An unknown store or task, serdes that do not fit `K` and `V`, or a
    /// store without a changelog whose container is not running.
    pub fn store<K: Data + Ord, V: Data>(&self, task: &str, store: &str) -> Result<BTreeMap<K, V>, JobError> {
        let spec = self
            .job
            .stores
            .iter()
            .find(|s| s.name == store)
            .ok_or_else(|| JobError::Usage(format!("the job has no store '{store}'")))?;
        let live = self.slots.iter().filter_map(|s| s.container.as_ref()).find(|c| c.task_names().any(|t| t == task));
        let entries = match live {
            Some(c) => c.store_entries(task, store)?,
            None => gregor_runtime::inspect::read_store(&self.job, &self.systems, store, task)?,
        };
        let fit = |which: &str, e: gregor_api::SerdeError| {
            JobError::Usage(format!(
                "store '{store}': stores.{store}.{which}.serde does not fit the type asked for: {e}"
            ))
        };
        let k = self.serdes().resolve::<K>(&spec.key_serde).map_err(|e| fit("key", e))?;
        let v = self.serdes().resolve::<V>(&spec.msg_serde).map_err(|e| fit("msg", e))?;
        let mut out = BTreeMap::new();
        for (key, value) in entries {
            let key = k.decode(&key).map_err(|e| fit("key", e))?;
            out.insert(key, v.decode(&value).map_err(|e| fit("msg", e))?);
        }
        Ok(out)
    }

    /// The changelog offset of the local snapshot that `store` of `task`
    /// counts on, if its container runs and it has one (RocksDB stores).
    #[doc(hidden)]
    pub fn local_snapshot(&self, task: &str, store: &str) -> Option<u64> {
        self.slots.iter().filter_map(|s| s.container.as_ref()).find_map(|c| c.local_snapshot(task, store))
    }

    /// A snapshot of container `id`'s metrics (of its last run, if it is
    /// not running).
    ///
    /// # Errors
    /// An unknown container, or one that never started.
    pub fn metrics(&self, id: &str) -> Result<MetricsSnapshot, JobError> {
        let slot =
            self.slots.iter().find(|s| s.id == id).ok_or_else(|| JobError::Usage(format!("no container '{id}'")))?;
        slot.metrics
            .as_ref()
            .map(MetricsRegistry::snapshot)
            .ok_or_else(|| JobError::Usage(format!("container {id} never started")))
    }

    /// Messages processed by the running containers since they (re)started.
    pub fn processed(&self) -> HashMap<String, u64> {
        self.slots.iter().filter_map(|s| Some((s.id.clone(), s.container.as_ref()?.processed()))).collect()
    }
}
