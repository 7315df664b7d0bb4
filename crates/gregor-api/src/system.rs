//! Streaming systems as plug-ins: names, raw messages, and the admin,
//! consumer and producer contracts every system (the embedded log, Kafka)
//! implements.
//!
//! # Contract
//! - A system's [`SystemFactory`] is created once per process from the job
//!   config and shared by the process's containers; each container asks it
//!   for its own consumer and producer, used from the container's one thread
//!   only, so they need no internal locking.
//! - [`SystemConsumer::register`] is called once per partition before
//!   [`SystemConsumer::start`]; `poll` is called only after `start`.
//! - Offsets are 64-bit and only grow within a partition; "next offset" means
//!   one past the newest message.
//! - Implementations return errors; they never panic on bad data from outside.

use bytes::Bytes;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A stream in a system: `system.stream`.
///
/// Equality compares the names' pointers before their text: `Arc<str>`'s
/// own equality always compares bytes, and the run loop, the collector and
/// the Streams API compare a message's stream with clones of the same
/// registered one for every message.
#[derive(Debug, Clone, Eq, PartialOrd, Ord)]
pub struct SystemStream {
    /// The system's name in the config (`systems.<name>.*`).
    pub system: Arc<str>,
    /// The stream's physical name in that system.
    pub stream: Arc<str>,
}

impl PartialEq for SystemStream {
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &Arc<str>, b: &Arc<str>| Arc::ptr_eq(a, b) || a == b;
        same(&self.stream, &other.stream) && same(&self.system, &other.system)
    }
}

// By the names' text, as equality (which only adds a shortcut).
impl std::hash::Hash for SystemStream {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.system.hash(state);
        self.stream.hash(state);
    }
}

impl SystemStream {
    /// `system.stream`.
    pub fn new(system: &str, stream: &str) -> Self {
        SystemStream { system: Arc::from(system), stream: Arc::from(stream) }
    }

    /// Parses `system.stream` (the stream name may itself contain dots).
    pub fn parse(text: &str) -> Option<SystemStream> {
        let (system, stream) = text.trim().split_once('.')?;
        (!system.is_empty() && !stream.is_empty()).then(|| SystemStream::new(system, stream))
    }

    /// One partition of this stream.
    pub fn partition(&self, partition: u32) -> SystemStreamPartition {
        SystemStreamPartition { stream: self.clone(), partition }
    }
}

impl fmt::Display for SystemStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.system, self.stream)
    }
}

/// One partition of a system stream: `system.stream[partition]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SystemStreamPartition {
    /// The stream.
    pub stream: SystemStream,
    /// The partition number.
    pub partition: u32,
}

impl fmt::Display for SystemStreamPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.stream, self.partition)
    }
}

impl serde::Serialize for SystemStreamPartition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SystemStreamPartition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SystemStreamPartition::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("'{text}' is not system.stream[partition]")))
    }
}

impl SystemStreamPartition {
    /// Parses `system.stream[partition]`.
    pub fn parse(text: &str) -> Option<SystemStreamPartition> {
        let (stream, rest) = text.rsplit_once('[')?;
        let partition = rest.strip_suffix(']')?.parse().ok()?;
        Some(SystemStream::parse(stream)?.partition(partition))
    }
}

/// A message as a system delivers it: undecoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// Offset in its partition.
    pub offset: u64,
    /// Milliseconds since the epoch; negative when the message carries none
    /// (Kafka's message format v0).
    pub timestamp: i64,
    /// Key bytes, if any.
    pub key: Option<Bytes>,
    /// Value bytes; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers (name, value), in the order written; empty for most
    /// messages. A Kafka header with a null value arrives with an empty value.
    pub headers: Headers,
}

/// A message's headers: (name, value) pairs in the order written; names may
/// repeat. Most messages have none, and then this is one null pointer: the
/// run loop moves every message through its buffers, where a `Vec`'s three
/// words cost measurable throughput.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
// A boxed Vec is one word when absent; a boxed slice would be two.
#[allow(clippy::box_collection)]
pub struct Headers(Option<Box<Vec<(String, Bytes)>>>);

impl std::ops::Deref for Headers {
    type Target = [(String, Bytes)];
    fn deref(&self) -> &[(String, Bytes)] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl FromIterator<(String, Bytes)> for Headers {
    fn from_iter<I: IntoIterator<Item = (String, Bytes)>>(iter: I) -> Self {
        let all: Vec<_> = iter.into_iter().collect();
        Headers((!all.is_empty()).then(|| Box::new(all)))
    }
}

impl From<Vec<(String, Bytes)>> for Headers {
    fn from(all: Vec<(String, Bytes)>) -> Self {
        Headers((!all.is_empty()).then(|| Box::new(all)))
    }
}

/// Where a consumer starts reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// This exact offset (from a checkpoint).
    At(u64),
    /// The oldest retained offset.
    Oldest,
    /// Only messages written from now on.
    Upcoming,
}

/// Offsets of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// Oldest retained offset.
    pub oldest: u64,
    /// One past the newest message (equal to `oldest` when empty).
    pub next: u64,
}

/// How a stream is cleaned up, when a system creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Normal retention (inputs, outputs, metrics).
    Regular,
    /// Keeps the latest value per key (checkpoints).
    Compacted,
    /// A store changelog: compacted, and never compacted at or past the offset
    /// last passed to [`SystemAdmin::set_compaction_limit`], so a restore up
    /// to a checkpointed offset stays exact.
    Changelog,
}

/// A system's failure, with the context needed to act.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SystemError {
    /// A stream the job needs does not exist.
    #[error("stream {stream} does not exist{hint}")]
    StreamNotFound {
        /// The stream.
        stream: SystemStream,
        /// e.g. " (similar: ...)" or how to create it.
        hint: String,
    },
    /// An offset outside the retained range.
    #[error("offset {requested} is out of range for {ssp} (oldest {oldest}, next {next})")]
    OffsetOutOfRange {
        /// The partition.
        ssp: SystemStreamPartition,
        /// Offset asked for.
        requested: u64,
        /// Oldest retained offset.
        oldest: u64,
        /// Next offset.
        next: u64,
    },
    /// The system cannot be reached or did not acknowledge in time (a
    /// broker away): trying again later may succeed.
    #[error("{context}: {message}")]
    Unavailable {
        /// What was being done.
        context: String,
        /// What went wrong.
        message: String,
    },
    /// Anything else, described.
    #[error("{context}: {message}")]
    Other {
        /// What was being done.
        context: String,
        /// What went wrong.
        message: String,
    },
}

impl SystemError {
    /// A [`SystemError::Other`].
    pub fn other(context: impl Into<String>, message: impl fmt::Display) -> Self {
        SystemError::Other { context: context.into(), message: message.to_string() }
    }

    /// A [`SystemError::Unavailable`].
    pub fn unavailable(context: impl Into<String>, message: impl fmt::Display) -> Self {
        SystemError::Unavailable { context: context.into(), message: message.to_string() }
    }

    /// Whether trying again later may succeed (see [`SystemError::Unavailable`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, SystemError::Unavailable { .. })
    }
}

/// Streams, partitions and offsets of a system.
pub trait SystemAdmin: Send + Sync {
    /// Number of partitions of a stream.
    fn partition_count(&self, stream: &SystemStream) -> Result<u32, SystemError>;
    /// Oldest and next offsets of a partition.
    fn offsets(&self, ssp: &SystemStreamPartition) -> Result<PartitionOffsets, SystemError>;
    /// Creates a stream if it does not exist; if it exists, checks it has
    /// `partitions` partitions (when `Some`).
    fn ensure_stream(&self, stream: &SystemStream, partitions: u32, kind: StreamKind) -> Result<(), SystemError>;
    /// Ends the open transactions of (and fences) every transactional
    /// producer whose id is `prefix` followed by a suffix that `which`
    /// accepts: a job's containers, some of which may be gone for good (their
    /// successors never start). Returns how many it took over. Default: none.
    ///
    /// # Errors
    /// The system's transaction state cannot be read or written.
    fn recover_transactions(&self, prefix: &str, which: &dyn Fn(&str) -> bool) -> Result<usize, SystemError> {
        let _ = (prefix, which);
        Ok(0)
    }
    /// Tells a changelog that compaction must keep everything needed to
    /// restore up to `offset` (see [`StreamKind::Changelog`]).
    fn set_compaction_limit(&self, ssp: &SystemStreamPartition, offset: u64) -> Result<(), SystemError>;
    /// The offset of the first message of `ssp`, in offset order, whose
    /// timestamp is at or after `timestamp_ms` (milliseconds since the
    /// epoch); the partition's next offset when every message is older or
    /// the partition is empty. The answer lies in `[oldest, next]`. This is
    /// Kafka's `ListOffsets` by timestamp; operator tools use it to rewind a
    /// job to a point in time (`gregor checkpoint set --to time:T`).
    ///
    /// The default refuses (a system that cannot look offsets up by time);
    /// the built-in systems implement it.
    ///
    /// # Errors
    /// The partition does not exist, or the system cannot answer.
    fn offset_for_time(&self, ssp: &SystemStreamPartition, timestamp_ms: i64) -> Result<u64, SystemError> {
        let _ = timestamp_ms;
        Err(SystemError::other(
            format!("looking up the offset of a time in {ssp}"),
            "this system cannot look offsets up by time",
        ))
    }
}

/// Reads partitions of a system.
pub trait SystemConsumer {
    /// Adds a partition to read, starting at `start`.
    fn register(&mut self, ssp: &SystemStreamPartition, start: StartOffset) -> Result<(), SystemError>;
    /// Starts reading.
    fn start(&mut self) -> Result<(), SystemError>;
    /// Delivers available messages of registered partitions whose `wants`
    /// returns true (buffer space), waiting up to `timeout` if none is
    /// available. Returns the number of messages delivered.
    fn poll(
        &mut self,
        wants: &dyn Fn(&SystemStreamPartition) -> bool,
        deliver: &mut dyn FnMut(&SystemStreamPartition, RawMessage),
        timeout: Duration,
    ) -> Result<usize, SystemError>;
    /// The offset the consumer will deliver next for `ssp` (one past what it
    /// delivered; past any gap left by compaction). `None` if not registered.
    fn position(&self, ssp: &SystemStreamPartition) -> Option<u64>;
    /// Where `ssp` ends, if its system knows that it will receive nothing
    /// more (an ended stream of the in-memory system): once the container
    /// has processed up to this offset, the input has ended. `None` (the
    /// default) means the stream may always grow.
    fn end_of_stream(&self, _ssp: &SystemStreamPartition) -> Option<u64> {
        None
    }
    /// Reads every record, those of aborted and open transactions included
    /// (the default is read-committed, where a system has transactions).
    /// Called before [`Self::register`]. Default: nothing (a system
    /// without transactions has nothing uncommitted).
    fn read_uncommitted(&mut self) {}
    /// The partition's next offset as this consumer last learned it,
    /// without any I/O (the lag metrics read it every few seconds on the
    /// container's thread). `None` (the default) if the consumer does not
    /// know it.
    fn end_hint(&self, _ssp: &SystemStreamPartition) -> Option<u64> {
        None
    }
    /// Stops reading and releases resources.
    fn stop(&mut self) {}
}

/// Writes to streams of a system.
///
/// Partitions are addressed by *slots*: [`Self::slot`] gives a partition a
/// number once, and [`Self::send`] takes that number, so a caller sending
/// many messages to one partition never looks it up again.
pub trait SystemProducer {
    /// The slot of `ssp` (the same number every time for the same partition).
    ///
    /// # Errors
    /// If the partition cannot be written (a missing stream, say).
    fn slot(&mut self, ssp: &SystemStreamPartition) -> Result<u32, SystemError>;
    /// Queues a message with `headers` (most often none) for the partition
    /// of `slot` (batched; durable after `flush`). `slot` must come from
    /// [`Self::slot`] of this producer. A system that cannot store headers
    /// refuses a message that has some, rather than drop them.
    ///
    /// # Errors
    /// The system refuses the message (or its headers).
    fn send_with_headers(
        &mut self,
        slot: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: &[(&str, &[u8])],
    ) -> Result<(), SystemError>;
    /// [`Self::send_with_headers`] without headers.
    ///
    /// # Errors
    /// As [`Self::send_with_headers`].
    fn send(&mut self, slot: u32, key: Option<&[u8]>, value: Option<&[u8]>, timestamp: i64) -> Result<(), SystemError> {
        self.send_with_headers(slot, key, value, timestamp, &[])
    }
    /// Whether [`Self::init_transactions`] can work. Default: no.
    fn supports_transactions(&self) -> bool {
        false
    }
    /// [`Self::slot`] then [`Self::send`], for occasional messages.
    fn send_to(
        &mut self,
        ssp: &SystemStreamPartition,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
    ) -> Result<(), SystemError> {
        let slot = self.slot(ssp)?;
        self.send(slot, key, value, timestamp)
    }
    /// Writes everything queued and waits until the system acknowledged it.
    fn flush(&mut self) -> Result<(), SystemError>;

    /// Makes what was sent visible to readers soon, without necessarily
    /// waiting for the system to acknowledge it (durability and offsets come
    /// from [`Self::flush`], at commit). Called at the end of every loop
    /// turn. Default: `flush`.
    fn publish(&mut self) -> Result<(), SystemError> {
        self.flush()
    }
    /// The next offset of `ssp` after everything this producer flushed to it,
    /// if it wrote to it.
    fn next_offset(&self, ssp: &SystemStreamPartition) -> Option<u64>;
    /// Flushes and releases resources.
    fn stop(&mut self) -> Result<(), SystemError> {
        self.flush()
    }
    /// Makes this producer transactional as `transactional_id` (for
    /// `task.processing.guarantee=exactly-once`): fences any earlier
    /// producer of that id, ends its open transaction, and opens one.
    /// Everything sent from now on becomes visible to read-committed
    /// readers at [`Self::commit_transaction`], or never.
    ///
    /// # Errors
    /// The default refuses: the system has no transactions gregor can use.
    fn init_transactions(&mut self, transactional_id: &str) -> Result<(), SystemError> {
        Err(SystemError::other(
            format!("starting transactions as '{transactional_id}'"),
            "this system has no transactions gregor can use (task.processing.guarantee=exactly-once needs the embedded log)",
        ))
    }
    /// Flushes, then commits the open transaction (everything sent since
    /// the last commit, in every partition) and opens the next.
    ///
    /// # Errors
    /// A fenced producer (a successor took over), or I/O; the default refuses.
    fn commit_transaction(&mut self) -> Result<(), SystemError> {
        Err(SystemError::other("committing a transaction", "this system has no transactions"))
    }
}

/// Creates a system's parts from the job config (`systems.<name>.*`).
pub trait SystemFactory: Send + Sync {
    /// The admin.
    fn admin(&self) -> Result<Arc<dyn SystemAdmin>, SystemError>;
    /// A new consumer.
    fn consumer(&self) -> Result<Box<dyn SystemConsumer>, SystemError>;
    /// A new producer.
    fn producer(&self) -> Result<Box<dyn SystemProducer>, SystemError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal names are equal streams (and hash alike) whether or not they
    /// share their allocations; clones share them.
    #[test]
    fn streams_are_equal_by_their_names() {
        use std::hash::BuildHasher;
        let a = SystemStream::new("log", "in");
        let build = std::collections::hash_map::RandomState::new();
        let (b, c) = (a.clone(), SystemStream::new("log", "in"));
        assert!(Arc::ptr_eq(&a.stream, &b.stream) && !Arc::ptr_eq(&a.stream, &c.stream));
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(build.hash_one(&a), build.hash_one(&c));
        assert_ne!(a, SystemStream::new("log", "out"));
        assert_ne!(a, SystemStream::new("kafka", "in"));
        assert_ne!(a.partition(0), c.partition(1));
        assert_eq!(a.partition(3), c.partition(3));
    }

    #[test]
    fn headers_cost_one_word_when_absent() {
        assert_eq!(std::mem::size_of::<Headers>(), 8);
        let none: Headers = Vec::new().into();
        assert!(none.is_empty() && none == Headers::default());
        let some: Headers = vec![("a".to_owned(), Bytes::from_static(b"1"))].into();
        assert_eq!(some.len(), 1);
        assert_eq!(&some[0].1[..], b"1");
    }

    #[test]
    fn names_parse_and_print() {
        let ss = SystemStream::parse("log.page.views").unwrap();
        assert_eq!((&*ss.system, &*ss.stream), ("log", "page.views"));
        let ssp = ss.partition(3);
        assert_eq!(ssp.to_string(), "log.page.views[3]");
        assert_eq!(SystemStreamPartition::parse("log.page.views[3]"), Some(ssp));
        assert_eq!(SystemStream::parse("nodot"), None);
        assert_eq!(SystemStream::parse(".x"), None);
    }
}
