//! The types and traits a gregor user codes against.
//!
//! This crate holds contracts only: it never performs I/O, never spawns threads
//! and never depends on a concrete streaming system. Everything here must stay
//! usable from any system (the embedded log, Kafka) and any execution mode.
#![forbid(unsafe_code)]
// Library code reports errors; it does not unwrap them.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod partitioner;

pub use partitioner::{murmur2, partition_for_key};
