//! gregor's processing layer: containers that run tasks.
//!
//! A [`Container`] runs a group of tasks on one thread: it polls input
//! batches from the systems' consumers, picks messages with a chooser
//! (bootstrap inputs first, then by priority, round-robin), calls the tasks,
//! routes their sends to producers, calls `window` on time, and commits:
//! stores flushed (changelog writes first), producers flushed, then
//! checkpoints written. A restarted task resumes from its checkpoint with
//! stores restored exactly to it.
//!
//! This crate never spawns threads or processes (execution modes do that) and
//! never commits past a message that failed.
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod barrier;
mod checkpoint;
mod chooser;
mod clock;
pub mod commit;
mod container;
mod error;
pub mod inspect;
pub mod job_config;
mod lease;
pub mod local_state;
pub mod model;
pub mod offsets;
mod producers;
mod reporter;
pub mod restart;
pub mod run_lock;
mod run_loop;
pub mod schema;
pub mod sequences;
mod stores;
mod systems;
pub mod transactions;

pub use barrier::EndBarrier;
pub use checkpoint::{
    CHECKPOINT_FORMAT, Checkpoint, StoreCheckpoint, decode_checkpoint, encode_checkpoint, read_checkpoints,
    write_checkpoints,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use commit::CommitPoint;
pub use container::{CommitHook, Container, ContainerOptions};
pub use error::RuntimeError;
pub use job_config::JobConfig;
pub use lease::Lease;
pub use model::{
    ContainerModel, JOB_MODEL_FORMAT, JobModel, TaskModel, assign, assign_to, job_model, job_model_after, job_model_for,
};
pub use restart::{RestartDecision, RestartPolicy, Restarts};
pub use run_loop::{RunSummary, StepOutcome, TURN};
pub use systems::{SystemConstructor, SystemKinds, Systems};
