//! The end barrier of `--until-end`: how the containers of a job agree that
//! intermediate streams are complete.
//!
//! Each container arrives once its other inputs have ended and everything
//! it sent is flushed; when every container of the job has arrived, no more
//! intermediate data can come from any of them, and each intermediate input
//! ends at its newest offset as of that moment.
//!
//! Arrivals are recorded by container id, so a container that arrives again
//! (restarted after a failure) changes nothing: the barrier completes only
//! when every container has arrived, never early. Containers of one process
//! share an in-memory barrier; containers in separate processes (the
//! `process` mode) share a directory in which each arrival is a file named
//! after the container.

use crate::error::RuntimeError;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An end barrier shared by the containers `ids` of a job.
#[derive(Debug)]
pub struct EndBarrier {
    ids: Vec<String>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Memory(Mutex<BTreeSet<String>>),
    Files(PathBuf),
}

impl EndBarrier {
    /// A barrier for the containers `ids` of this process.
    pub fn new(ids: Vec<String>) -> Self {
        EndBarrier { ids, kind: Kind::Memory(Mutex::new(BTreeSet::new())) }
    }

    /// A barrier shared through `dir` by the containers `ids` (each its own process).
    pub fn in_directory(dir: &Path, ids: Vec<String>) -> Self {
        EndBarrier { ids, kind: Kind::Files(dir.to_owned()) }
    }

    /// Records that container `id` arrived (again: no effect).
    ///
    /// # Errors
    /// The directory barrier's file cannot be written.
    pub fn arrive(&self, id: &str) -> Result<(), RuntimeError> {
        match &self.kind {
            Kind::Memory(arrived) => {
                arrived.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_owned());
                Ok(())
            }
            Kind::Files(dir) => {
                std::fs::create_dir_all(dir).and_then(|_| std::fs::write(dir.join(id), b"")).map_err(|source| {
                    RuntimeError::Io { what: "recording an arrival at the end barrier in", path: dir.clone(), source }
                })
            }
        }
    }

    /// Whether every container has arrived.
    pub fn complete(&self) -> bool {
        match &self.kind {
            Kind::Memory(arrived) => {
                let arrived = arrived.lock().unwrap_or_else(|p| p.into_inner());
                self.ids.iter().all(|id| arrived.contains(id))
            }
            Kind::Files(dir) => self.ids.iter().all(|id| dir.join(id).exists()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| i.to_string()).collect()
    }

    #[test]
    fn a_container_arriving_twice_does_not_complete_the_barrier() {
        // A restarted container arrives a second time: with a counter, two
        // arrivals of container 0 would complete a barrier of two containers
        // while container 1 is still sending to intermediate streams.
        let b = EndBarrier::new(ids(2));
        b.arrive("0").unwrap();
        b.arrive("0").unwrap();
        assert!(!b.complete());
        b.arrive("1").unwrap();
        assert!(b.complete());
    }

    #[test]
    fn directory_barriers_complete_when_every_container_arrived() {
        let dir = tempfile::tempdir().unwrap();
        let b = EndBarrier::in_directory(&dir.path().join("barrier"), ids(2));
        assert!(!b.complete());
        b.arrive("1").unwrap();
        b.arrive("1").unwrap();
        assert!(!b.complete());
        EndBarrier::in_directory(&dir.path().join("barrier"), ids(2)).arrive("0").unwrap();
        assert!(b.complete());
    }
}
