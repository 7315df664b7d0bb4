//! The log's error type: every variant names what a user needs to act on.

use std::path::PathBuf;

/// Errors of the embedded log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// An operating-system call failed; `context` says what was being done to which file.
    #[error("{context}: {source}")]
    Io {
        /// What was being attempted, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The data directory cannot be used.
    #[error("data directory {}: {reason}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// No stream of that name exists in the data directory.
    #[error("unknown stream '{stream}' in {} (create it with `gregor stream create {stream} --partitions N`)", data_dir.display())]
    StreamNotFound {
        /// The stream asked for.
        stream: String,
        /// Where it was looked for.
        data_dir: PathBuf,
    },
    /// `create` of a stream that already exists.
    #[error("stream '{stream}' already exists")]
    StreamExists {
        /// The stream.
        stream: String,
    },
    /// A stream name that is not allowed.
    #[error("invalid stream name '{name}': {reason}")]
    InvalidStreamName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A partition number outside `0..partitions`.
    #[error("stream '{stream}' has no partition {partition} (it has {partitions}: 0..{})", partitions - 1)]
    PartitionOutOfRange {
        /// The stream.
        stream: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the stream has.
        partitions: u32,
    },
    /// An offset outside the retained range of a partition.
    #[error(
        "offset {requested} is out of range for {stream}[{partition}]: the oldest retained offset is {oldest} and the next offset to be written is {next}"
    )]
    OffsetOutOfRange {
        /// The stream.
        stream: String,
        /// The partition.
        partition: u32,
        /// The offset asked for.
        requested: u64,
        /// The oldest offset still in the log.
        oldest: u64,
        /// The offset the next appended message will get.
        next: u64,
    },
    /// Damaged data where the log holds data it has already acknowledged.
    #[error("corrupt log data in {} at byte {position}: {reason}", file.display())]
    Corrupt {
        /// The segment or index file.
        file: PathBuf,
        /// Byte position of the damaged batch.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The stream's metadata file is missing, unreadable or inconsistent.
    #[error("stream metadata {}: {reason}", path.display())]
    InvalidMetadata {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A stream setting out of range.
    #[error("invalid stream setting: {0}")]
    InvalidConfig(String),
    /// An append that the stream refuses.
    #[error("cannot append to '{stream}': {reason}")]
    InvalidAppend {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
}

/// Result type of the log.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// Attaches "what was being done" context to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| LogError::Io { context: what(), source })
    }
}
