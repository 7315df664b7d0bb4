//! gregor's key-value stores: engines and the layers stacked on them.
//!
//! A task's store is built as `cache -> changelog logging -> engine` over
//! bytes (the serde layer sits above, in `gregor_api::Store`):
//! - [`CachedStore`] absorbs repeated writes to hot keys and writes dirty
//!   entries through in batches (`stores.<name>.object.cache.size`,
//!   `stores.<name>.write.batch.size`);
//! - [`LoggedEngine`] sends every change that reaches the engine to the
//!   store's changelog through a [`ChangelogSink`];
//! - an [`Engine`] keeps the data: [`RocksDbEngine`] (the default) or
//!   [`MemoryEngine`].
//!
//! Restores write changelog records straight into the engine, below the
//! logging layer. This crate never does stream I/O itself: the runtime
//! provides the sink and feeds restores.
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod cache;
mod engine;
mod logged;
mod rocks;

pub use cache::CachedStore;
pub use engine::{Engine, KvError, MemoryEngine, WriteBatch};
pub use logged::{ChangelogSink, LoggedEngine};
pub use rocks::{RocksDbEngine, RocksOptions, compaction_style, compression};
