//! The types and traits a gregor user codes against.
//!
//! A job implements [`StreamTask`]: gregor calls `process` for every input
//! message with an [`IncomingEnvelope`] decoded by the configured serdes; the
//! task sends with the [`MessageCollector`], keeps state in [`Store`]s it
//! opens in `init`, and asks for commits or shutdown through the
//! [`TaskCoordinator`]. Streaming systems plug in through the traits in
//! [`system`].
//!
//! This crate holds contracts only: it never performs I/O, never spawns
//! threads and never depends on a concrete streaming system or store engine.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Library code reports errors; it does not unwrap them.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod collector;
pub mod config;
pub mod failpoint;
pub mod metrics;
pub mod partitioner;
pub mod serde;
pub mod store;
pub mod system;
pub mod task;

pub use collector::{MessageCollector, OutgoingEnvelope, SendError};
pub use config::{Config, ConfigError};
pub use metrics::{Counter, Gauge, Group, MetricsRegistry, Timer};
pub use partitioner::{murmur2, partition_for_key};
pub use serde::{Data, RawBytes, Serde, SerdeError, Serdes};
pub use store::{KeyValueStore, RawStore, Store, StoreError, StoreIter};
pub use system::{Headers, RawMessage, StartOffset, SystemStream, SystemStreamPartition};
pub use task::{IncomingEnvelope, ShutdownScope, StreamTask, TaskContext, TaskCoordinator, TaskError, Upcoming};
