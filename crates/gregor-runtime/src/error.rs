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
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
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
