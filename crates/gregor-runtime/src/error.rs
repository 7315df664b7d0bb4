//! The runtime's error type: each variant tells the user what failed, where
//! (stream, partition, offset, task) and, where there is one, the fix.

use gregor_api::system::SystemError;
use gregor_api::{ConfigError, StoreError};

/// Why a container stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A config problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A streaming system failed.
    #[error(transparent)]
    System(#[from] SystemError),
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A task's `process` returned an error or panicked.
    #[error("task '{task}' failed processing {ssp} at offset {offset}: {message}")]
    Process {
        /// The task.
        task: String,
        /// The input partition.
        ssp: String,
        /// The message's offset (nothing from it on was committed).
        offset: u64,
        /// The task's error or panic message.
        message: String,
    },
    /// A task failed outside `process` (init, window, end of stream, close).
    #[error("task '{task}' failed in {phase}: {message}")]
    Task {
        /// The task.
        task: String,
        /// Which call.
        phase: &'static str,
        /// The error or panic message.
        message: String,
    },
    /// An input message that its serde rejected, under the default policy.
    #[error(
        "cannot deserialize the {what} of the message at offset {offset} of {ssp}: {reason} (set task.drop.deserialization.errors=true to skip such messages, or task.deserialization.errors.stream to set them aside)"
    )]
    Deserialization {
        /// The input partition.
        ssp: String,
        /// The message's offset.
        offset: u64,
        /// `key` or `message`.
        what: &'static str,
        /// The serde's error.
        reason: String,
    },
    /// A checkpoint that cannot be read.
    #[error("checkpoint of task '{task}' in {stream} at offset {offset} is unreadable: {reason}")]
    Checkpoint {
        /// The task.
        task: String,
        /// The checkpoint stream.
        stream: String,
        /// Offset of the bad checkpoint message.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A store engine failed (opening, snapshotting, restoring).
    #[error("store '{store}' of task '{task}': {operation}: {source}")]
    StoreEngine {
        /// The store.
        store: String,
        /// The task.
        task: String,
        /// What was being done.
        operation: &'static str,
        /// The engine's error.
        #[source]
        source: Box<gregor_kv::KvError>,
    },
    /// A store's local directory is in use by another container or process.
    #[error("store '{store}' of task '{task}' is already open by another container or process (lock held on {})", lock.display())]
    StoreLocked {
        /// The store.
        store: String,
        /// The task.
        task: String,
        /// The lock file.
        lock: std::path::PathBuf,
    },
    /// A changelog holds something a store cannot be restored from.
    #[error("changelog {changelog} of store '{store}' at offset {offset}: {problem}")]
    BadChangelog {
        /// The store.
        store: String,
        /// The changelog partition.
        changelog: String,
        /// The offending record.
        offset: u64,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A local file or directory could not be used.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "creating the store directory".
        what: &'static str,
        /// The path.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Reading a partition (a restore, the checkpoints) made no progress.
    #[error(
        "reading {ssp} stalled at offset {position} for {stall_secs} s (expected to reach {end}); is its system reachable?"
    )]
    Stalled {
        /// The partition.
        ssp: String,
        /// Where reading stopped.
        position: u64,
        /// Where it had to go.
        end: u64,
        /// How long without progress.
        stall_secs: u64,
    },
    /// A task sent to a partition its stream does not have.
    #[error("task output to partition {partition} of {stream}, which has {count} partitions")]
    NoSuchPartition {
        /// The stream.
        stream: String,
        /// The partition asked for.
        partition: u32,
        /// Partitions the stream has.
        count: u32,
    },
    /// An input stream's serde does not produce the task's key or message type.
    #[error("input {stream}: {which} serde: {source} (set streams.<id>.samza.{which}.serde for {stream})")]
    InputSerde {
        /// The stream.
        stream: String,
        /// `key` or `msg`.
        which: &'static str,
        /// Why it does not fit.
        #[source]
        source: gregor_api::SerdeError,
    },
    /// Encoding a checkpoint or a metrics snapshot failed.
    #[error("encoding {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A name given by a user (a CLI argument) that the job does not have.
    #[error("the job has no {kind} '{name}'{hint}")]
    NotFound {
        /// `store`, `task`, `container`, ...
        kind: &'static str,
        /// The name given.
        name: String,
        /// What exists, or how names look.
        hint: String,
    },
    /// An operation that does not apply to this store or job.
    #[error("{0}")]
    NotApplicable(String),
    /// A container panicked outside a task call (a bug in gregor or a system).
    #[error("container {container} panicked: {message}")]
    Panicked {
        /// The container.
        container: String,
        /// The panic message.
        message: String,
    },
    /// A thread could not be started.
    #[error("cannot start a thread for container {container}: {source}")]
    Thread {
        /// The container.
        container: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A crash injected by a test at a point of a commit.
    #[error("container {container}: crash injected at {point:?} of a commit")]
    InjectedCrash {
        /// The container.
        container: String,
        /// Where.
        point: crate::commit::CommitPoint,
    },
    /// An input's partition count changed under a running container.
    #[error(
        "input {stream} now has {now} partitions, {was} when the job model was computed; restart the job so its model covers them (or run it with job.coordinator=zookeeper, which rebalances by itself)"
    )]
    PartitionCountChanged {
        /// The input stream.
        stream: String,
        /// Count the model was computed from.
        was: u32,
        /// Count now.
        now: u32,
    },
    /// The container's lease ran out (its processor lost contact with the
    /// coordination service long enough that its tasks may run elsewhere);
    /// it stopped without committing.
    #[error(
        "container {container} stopped without committing: its lease expired (no contact with the coordinator for too long; its tasks may already run elsewhere)"
    )]
    LeaseExpired {
        /// The container.
        container: String,
    },
}

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_owned()
    }
}

/// Calls a task method, turning its error or panic into [`RuntimeError::Task`].
pub(crate) fn call_task(
    task: &str,
    phase: &'static str,
    f: impl FnOnce() -> Result<(), gregor_api::TaskError>,
) -> Result<(), RuntimeError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RuntimeError::Task { task: task.to_owned(), phase, message: e.to_string() }),
        Err(p) => Err(RuntimeError::Task { task: task.to_owned(), phase, message: panic_message(&*p) }),
    }
}
