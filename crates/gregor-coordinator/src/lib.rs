//! gregor's execution layer beyond one process.
//!
//! The `process` mode: the job's own binary, started as the coordinator,
//! computes the job model and runs each container as a child process (the
//! same binary re-executed with the container's id and the model), watches
//! them, restarts a failed one with exponential backoff, and fails the job
//! after `cluster-manager.container.retry.count` failures of a container
//! within `cluster-manager.container.retry.window.ms`. SIGTERM or SIGINT to
//! the coordinator stops every container gracefully (each commits), and a
//! coordinator that dies takes its containers with it (they get SIGTERM from
//! the kernel), so no container outlives it.
//!
//! Containers can be given CPU and memory limits through cgroups
//! (`cluster-manager.container.cpu.cores`, `memory.mb`).
//!
//! The job model and groupers are in `gregor_runtime::model`.
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod cgroups;
mod process;
pub mod zookeeper;

pub use process::{CONTAINER_ENV, END_BARRIER_ENV, JOB_MODEL_ENV, SupervisorError, SupervisorOptions, supervise};
