//! gregor's key-value stores: engines and the layers stacked on them.
//!
//! A RocksDB store is built as `cache -> changelog logging -> engine` over
//! bytes (the serde layer sits above, in `gregor_api::Store`):
//! - [`CachedStore`] serves reads of hot keys from memory, absorbs repeated
//!   writes to them and writes dirty entries through in batches
//!   (`stores.<name>.cache.max.bytes`, `stores.<name>.object.cache.size`,
//!   `stores.<name>.write.batch.size`);
//! - [`LoggedEngine`] sends every change that reaches the engine to the
//!   store's changelog through a [`ChangelogSink`];
//! - an [`Engine`] keeps the data: [`RocksDbEngine`].
//!
//! An in-memory store is one layer, [`MemoryStore`] over a [`MemoryEngine`]:
//! a cache over memory would only hold every key twice, so the store itself
//! sends each changed key to the changelog once per flush.
//!
//! Restores write changelog records straight into the engine, below the
//! logging layer. This crate never does stream I/O itself: the runtime
//! provides the sink and feeds restores.
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod cache;
mod engine;
mod logged;
mod memory;
mod rocks;
mod slot_index;

pub use cache::{CacheLimits, CachedStore};
pub use engine::{Engine, KvError, PendingSnapshot, WriteBatch};
pub use logged::{ChangelogSink, LoggedEngine};
pub use memory::{MemoryEngine, MemoryStore};
pub use rocks::{RocksDbEngine, RocksOptions, compaction_style, compression};
