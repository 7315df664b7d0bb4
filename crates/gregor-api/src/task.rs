//! The task contract: what a user implements and what gregor hands it.
//!
//! # Contract
//! - gregor creates one task instance per task of the job model (by default
//!   one per input partition) and calls every method of it from one thread,
//!   never concurrently: a task needs no synchronisation.
//! - `init` is called once before the first `process`; `close` once after the
//!   last, at a clean shutdown only (not after an error or a crash).
//! - `process` is called once per input message, in offset order within a
//!   partition. A message may be processed again after a crash (everything
//!   since the last commit is replayed): delivery is at-least-once, and state
//!   in stores is restored to exactly the last commit.
//! - Returning an error (or panicking) stops the container without
//!   committing anything past the failing message.

use crate::collector::MessageCollector;
use crate::config::Config;
use crate::metrics::{Counter, Gauge, MetricsRegistry, Timer};
use crate::serde::{Data, Serdes};
use crate::store::{RawStore, Store, StoreError};
use crate::system::SystemStreamPartition;
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

/// An error from a task; `?` converts any standard error into one.
pub struct TaskError(Box<dyn std::error::Error + Send + Sync>);

impl TaskError {
    /// An error with a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        TaskError(message.to_string().into())
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(e: E) -> Self {
        TaskError(Box::new(e))
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A message delivered to a task, decoded with its stream's serdes.
#[derive(Debug)]
pub struct IncomingEnvelope<'a, K, M> {
    /// Where the message comes from.
    pub ssp: &'a SystemStreamPartition,
    /// Its offset in that partition.
    pub offset: u64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// The key, if the message had one.
    pub key: Option<K>,
    /// The message; `None` for a tombstone.
    pub message: Option<M>,
    /// Its headers, (name, value) in the order written (see
    /// [`crate::OutgoingEnvelope::with_header`]); names starting with
    /// `gregor.` are the runtime's.
    pub headers: &'a [(String, bytes::Bytes)],
}

impl<K, M> IncomingEnvelope<'_, K, M> {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| &v[..])
    }
}

/// A message a task will process a few messages from now, as its input
/// holds it (serialized, before the input's serdes): what
/// [`StreamTask::prefetch`] is shown.
#[derive(Debug, Clone, Copy)]
pub struct Upcoming<'a> {
    /// Where the message comes from.
    pub ssp: &'a SystemStreamPartition,
    /// Its offset in that partition.
    pub offset: u64,
    /// The key's bytes, if the message has a key.
    pub key: Option<&'a [u8]>,
    /// The message's bytes; `None` for a tombstone.
    pub message: Option<&'a [u8]>,
}

/// What a task asks of its container, and the container's processing time.
#[derive(Debug, Default)]
pub struct TaskCoordinator {
    commit: bool,
    shutdown: Option<ShutdownScope>,
    now_ms: i64,
}

/// Which tasks a shutdown request stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownScope {
    /// This task: it gets no more messages; the others go on.
    Task,
    /// The whole container, after a final commit.
    Container,
}

impl TaskCoordinator {
    /// Commits as soon as this call returns (instead of waiting for `task.commit.ms`).
    pub fn commit(&mut self) {
        self.commit = true;
    }

    /// Asks for a shutdown, after a final commit.
    pub fn shutdown(&mut self, scope: ShutdownScope) {
        self.shutdown = Some(match (self.shutdown, scope) {
            (Some(ShutdownScope::Container), _) => ShutdownScope::Container,
            _ => scope,
        });
    }

    /// Processing time, in milliseconds since the epoch, as the container's
    /// clock read it at the start of this loop turn (a test's manual clock
    /// under the test harness). Use it instead of the system clock, so a
    /// task's timing is testable; event time is in the messages.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    #[doc(hidden)]
    pub fn set_now_ms(&mut self, now_ms: i64) {
        self.now_ms = now_ms;
    }

    #[doc(hidden)]
    pub fn take_commit(&mut self) -> bool {
        std::mem::take(&mut self.commit)
    }

    #[doc(hidden)]
    pub fn take_shutdown(&mut self) -> Option<ShutdownScope> {
        self.shutdown.take()
    }
}

/// A user's stream task (Samza's `StreamTask`, `InitableTask`,
/// `WindowableTask`, `ClosableTask` and `EndOfStreamListenerTask` in one).
pub trait StreamTask: 'static {
    /// Type of input keys (decoded with each input's key serde).
    type Key: Data;
    /// Type of input messages (decoded with each input's message serde).
    type Message: Data;

    /// Called once before the first message: open stores, read config.
    fn init(&mut self, _context: &mut TaskContext<'_>) -> Result<(), TaskError> {
        Ok(())
    }

    /// Handles one message.
    fn process(
        &mut self,
        envelope: IncomingEnvelope<'_, Self::Key, Self::Message>,
        collector: &mut MessageCollector,
        coordinator: &mut TaskCoordinator,
    ) -> Result<(), TaskError>;

    /// Look-ahead, for speed only: the container shows the task each
    /// message some messages before `process` gets it (within a partition,
    /// in order; a message may also reach `process` without having been
    /// shown, and one shown may never come, when its task stops). A task
    /// whose state is keyed by the message's key starts loading that state
    /// here with [`Store::prefetch_raw`], so that the memory reads of several
    /// messages overlap instead of each `process` waiting for its own (over
    /// a million keys, most of a store lookup's time).
    ///
    /// Returns whether the task prefetches: the default says no, and the
    /// container then stops showing it messages. It must not change what
    /// the task computes; nothing it does is undone at a crash.
    ///
    /// ```
    /// # use gregor_api::*;
    /// struct Count { counts: Option<Store<bytes::Bytes, i64>> }
    /// impl StreamTask for Count {
    ///     type Key = bytes::Bytes;
    ///     type Message = bytes::Bytes;
    ///     fn prefetch(&mut self, upcoming: Upcoming<'_>) -> bool {
    ///         // The store's keys are serialized as the input's (`bytes`).
    ///         if let (Some(counts), Some(key)) = (&self.counts, upcoming.key) {
    ///             counts.prefetch_raw(key);
    ///         }
    ///         true
    ///     }
    ///     fn process(
    ///         &mut self,
    ///         e: IncomingEnvelope<'_, bytes::Bytes, bytes::Bytes>,
    ///         _: &mut MessageCollector,
    ///         _: &mut TaskCoordinator,
    ///     ) -> Result<(), TaskError> {
    ///         if let (Some(counts), Some(key)) = (&self.counts, &e.key) {
    ///             counts.put(key, &(counts.get(key)?.unwrap_or(0) + 1))?;
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// ```
    fn prefetch(&mut self, _upcoming: Upcoming<'_>) -> bool {
        false
    }

    /// Called every `task.window.ms`, if set.
    fn window(
        &mut self,
        _collector: &mut MessageCollector,
        _coordinator: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        Ok(())
    }

    /// Called at the start of every commit, before stores are flushed: a
    /// task that keeps state in memory writes it to its stores here, so the
    /// commit captures it with the input offsets. Sends made here are part
    /// of the commit too.
    fn before_commit(
        &mut self,
        _collector: &mut MessageCollector,
        _coordinator: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        Ok(())
    }

    /// Called once every input partition of this task reached its end (bounded inputs).
    fn end_of_stream(
        &mut self,
        _collector: &mut MessageCollector,
        _coordinator: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        Ok(())
    }

    /// Called once at a clean shutdown, after the final commit.
    fn close(&mut self) -> Result<(), TaskError> {
        Ok(())
    }
}

/// A byte store and the serde names its config gives it.
pub struct RawStoreHandle {
    /// The store.
    pub store: Rc<RefCell<dyn RawStore>>,
    /// `stores.<name>.key.serde`.
    pub key_serde: String,
    /// `stores.<name>.msg.serde`.
    pub msg_serde: String,
}

/// Opens stores by name for [`TaskContext::store`] (implemented by the runtime).
pub trait StoreProvider {
    /// The byte store called `name`.
    fn raw_store(&self, name: &str) -> Result<RawStoreHandle, StoreError>;
}

/// What a task gets at `init`.
pub struct TaskContext<'a> {
    config: &'a Config,
    task_name: &'a str,
    partitions: &'a [SystemStreamPartition],
    stores: &'a dyn StoreProvider,
    serdes: &'a Serdes,
    metrics: &'a MetricsRegistry,
    container_id: &'a str,
    model_version: u64,
    partition_counts: Option<&'a dyn Fn(&crate::system::SystemStream) -> Option<u32>>,
    task_count: u32,
}

impl<'a> TaskContext<'a> {
    #[doc(hidden)]
    pub fn new(
        config: &'a Config,
        task_name: &'a str,
        partitions: &'a [SystemStreamPartition],
        stores: &'a dyn StoreProvider,
        serdes: &'a Serdes,
        metrics: &'a MetricsRegistry,
    ) -> Self {
        TaskContext {
            config,
            task_name,
            partitions,
            stores,
            serdes,
            metrics,
            container_id: "",
            model_version: 0,
            partition_counts: None,
            task_count: 1,
        }
    }

    #[doc(hidden)]
    pub fn with_container(mut self, container_id: &'a str, model_version: u64) -> Self {
        self.container_id = container_id;
        self.model_version = model_version;
        self
    }

    #[doc(hidden)]
    pub fn with_partition_counts(mut self, counts: &'a dyn Fn(&crate::system::SystemStream) -> Option<u32>) -> Self {
        self.partition_counts = Some(counts);
        self
    }

    #[doc(hidden)]
    pub fn with_task_count(mut self, task_count: u32) -> Self {
        self.task_count = task_count;
        self
    }

    /// How many tasks the job model has (in every container together).
    pub fn task_count(&self) -> u32 {
        self.task_count
    }

    /// How many partitions `stream` has now (asks its system), if it exists.
    pub fn partition_count(&self, stream: &crate::system::SystemStream) -> Option<u32> {
        self.partition_counts.and_then(|f| f(stream))
    }

    /// The id of the container running this task (in `zookeeper` mode, the
    /// processor's id).
    pub fn container_id(&self) -> &str {
        self.container_id
    }

    /// The version of the job model this task was started under. Versions
    /// only grow, and a task runs on one container per version, so it is a
    /// fencing token: output tagged with it shows which assignment made it.
    pub fn job_model_version(&self) -> u64 {
        self.model_version
    }

    /// The job's configuration.
    pub fn config(&self) -> &Config {
        self.config
    }

    /// This task's name, e.g. `Partition 3`.
    pub fn task_name(&self) -> &str {
        self.task_name
    }

    /// The input partitions this task consumes.
    pub fn partitions(&self) -> &[SystemStreamPartition] {
        self.partitions
    }

    /// The store `name` (declared with `stores.<name>.*`), typed with its
    /// configured serdes.
    ///
    /// # Errors
    /// If the store is not configured or its serdes do not produce `K`/`V`.
    pub fn store<K: Data, V: Data>(&self, name: &str) -> Result<Store<K, V>, TaskError> {
        let RawStoreHandle { store: raw, key_serde, msg_serde } = self.stores.raw_store(name)?;
        let serde_err = |key: &str, e: crate::serde::SerdeError| TaskError::msg(format!("store '{name}': {key}: {e}"));
        let k = self.serdes.resolve::<K>(&key_serde).map_err(|e| serde_err(&format!("stores.{name}.key.serde"), e))?;
        let v = self.serdes.resolve::<V>(&msg_serde).map_err(|e| serde_err(&format!("stores.{name}.msg.serde"), e))?;
        Ok(Store::new(name, raw, k, v))
    }

    /// The job's serdes (built-in and registered), for tasks that decode
    /// for themselves.
    pub fn serdes(&self) -> &Serdes {
        self.serdes
    }

    /// The metrics registry of this task's container.
    pub fn metrics(&self) -> &MetricsRegistry {
        self.metrics
    }

    /// A counter in this task's metrics group.
    pub fn counter(&self, name: &str) -> Counter {
        self.metrics.counter(crate::metrics::Group::task(self.task_name), name)
    }

    /// A gauge in this task's metrics group.
    pub fn gauge(&self, name: &str) -> Gauge {
        self.metrics.gauge(crate::metrics::Group::task(self.task_name), name)
    }

    /// A timer in this task's metrics group.
    pub fn timer(&self, name: &str) -> Timer {
        self.metrics.timer(crate::metrics::Group::task(self.task_name), name)
    }
}
