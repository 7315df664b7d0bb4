//! gregor: stream processing in Apache Samza's model, in Rust.
//!
//! A job is a Rust binary. Its `main` builds an [`App`] around a task factory
//! and hands over; gregor reads the job's command line (`--config FILE`,
//! `--set key=value`, `--until-end`), validates the config, computes the job
//! model, and runs the containers.
//!
//! ```no_run
//! use gregor::{App, IncomingEnvelope, MessageCollector, OutgoingEnvelope, StreamTask, SystemStream, TaskContext, TaskCoordinator, TaskError};
//!
//! /// Copies every line to an output stream, upper-cased.
//! #[derive(Default)]
//! struct Shout {
//!     output: Option<SystemStream>,
//! }
//!
//! impl StreamTask for Shout {
//!     type Key = String;
//!     type Message = String;
//!
//!     fn init(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
//!         let out = ctx.config().require("shout.output", "name the output stream")?;
//!         self.output = SystemStream::parse(out);
//!         Ok(())
//!     }
//!
//!     fn process(&mut self, env: IncomingEnvelope<'_, String, String>, collector: &mut MessageCollector, _: &mut TaskCoordinator) -> Result<(), TaskError> {
//!         let output = self.output.as_ref().ok_or_else(|| TaskError::msg("no output"))?;
//!         let line = env.message.unwrap_or_default().to_uppercase();
//!         collector.send(OutgoingEnvelope::to_partition(output, env.ssp.partition, env.key, line))?;
//!         Ok(())
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     App::new("shout", Shout::default).config_key("shout.output").main()
//! }
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod app;
mod args;
mod local;
pub mod memory;
pub mod monitor;
pub mod streams;
pub mod systems;
pub mod testing;
mod zk;

pub use app::{App, JobError, init_logging, init_logging_as};
pub use args::{JobArgs, LogFormat};
pub use gregor_api::{
    Config, Counter, Data, Gauge, IncomingEnvelope, KeyValueStore, MessageCollector, OutgoingEnvelope, Serde,
    SerdeError, ShutdownScope, Store, StreamTask, SystemStream, SystemStreamPartition, TaskContext, TaskCoordinator,
    TaskError, Timer, Upcoming, partition_for_key,
};
pub use gregor_runtime::{RunSummary, RuntimeError};

/// Lower-level pieces, for tools and tests.
pub mod runtime {
    pub use gregor_runtime::*;
}
