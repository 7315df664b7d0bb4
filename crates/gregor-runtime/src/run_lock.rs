//! The job-level run lock: how an operator tool on this machine knows that
//! a job is running.
//!
//! ```text
//! <job.logged.store.base.dir>/<job.name>-<job.id>/RUNNING
//! ```
//!
//! A running job holds a *shared* `flock` on this file (the `local` runner
//! for the whole run, every container process of the `process` mode while
//! it runs); tools that must not work beside a running job (`gregor
//! checkpoint set`) take it *exclusively*, without waiting, and refuse when
//! they cannot. A job starting while a tool holds it waits for the tool.
//! The kernel releases the lock when its holder dies, so it never goes
//! stale. It covers processes on this machine (with this state directory)
//! only; the `zookeeper` mode's processors are found through ZooKeeper.
//!
//! This module never deletes the file (a holder and a waiter must lock the
//! same inode) and never blocks a tool: only a job waits.

use crate::error::RuntimeError;
use crate::job_config::JobConfig;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

/// The run lock file of a job.
pub fn run_lock_path(job: &JobConfig) -> PathBuf {
    job.job_dir().join("RUNNING")
}

/// A held run lock (released when dropped).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

fn open(path: &Path) -> Result<File, RuntimeError> {
    let io = |what, source| RuntimeError::Io { what, path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("creating the job's state directory for", e))?;
    }
    File::options().create(true).truncate(false).write(true).open(path).map_err(|e| io("opening the run lock", e))
}

impl RunLock {
    /// Holds the lock shared, as a running job does; waits (logging why)
    /// while a tool holds it exclusively.
    ///
    /// # Errors
    /// The file cannot be created or locked.
    pub fn running(job: &JobConfig) -> Result<RunLock, RuntimeError> {
        let path = run_lock_path(job);
        let file = open(&path)?;
        let locking = |source| RuntimeError::Io { what: "locking", path: path.clone(), source };
        match file.try_lock_shared() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                tracing::warn!(lock = %path.display(), "an operator tool (gregor checkpoint set) is changing this job's checkpoints; waiting for it to finish");
                file.lock_shared().map_err(locking)?;
            }
            Err(TryLockError::Error(e)) => return Err(locking(e)),
        }
        Ok(RunLock { _file: file, path })
    }

    /// Takes the lock exclusively without waiting: `Ok(None)` when a running
    /// job (or another tool) holds it.
    ///
    /// # Errors
    /// The file cannot be created or locked.
    pub fn exclusive(job: &JobConfig) -> Result<Option<RunLock>, RuntimeError> {
        let path = run_lock_path(job);
        let file = open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(RunLock { _file: file, path })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(source)) => Err(RuntimeError::Io { what: "locking", path, source }),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(dir: &Path) -> JobConfig {
        let mut c = gregor_api::Config::new();
        c.set("job.name", "j");
        c.set("task.inputs", "log.in");
        c.set("systems.log.factory", "log");
        c.set("job.logged.store.base.dir", dir.display().to_string());
        JobConfig::new(c, &[]).unwrap()
    }

    #[test]
    fn jobs_share_the_lock_and_tools_are_kept_out() {
        let dir = tempfile::tempdir().unwrap();
        let job = job(dir.path());
        assert_eq!(run_lock_path(&job), dir.path().join("j-1/RUNNING"));
        let a = RunLock::running(&job).unwrap();
        let b = RunLock::running(&job).unwrap(); // containers of one job share it
        assert!(RunLock::exclusive(&job).unwrap().is_none(), "a tool sees the job running");
        drop((a, b));
        let tool = RunLock::exclusive(&job).unwrap().expect("free once the job stopped");
        assert!(RunLock::exclusive(&job).unwrap().is_none(), "one tool at a time");
        // A job starting now would wait for the tool: its shared lock is
        // refused while the tool holds the file (checked without blocking).
        let probe = File::options().write(true).open(run_lock_path(&job)).unwrap();
        assert!(matches!(probe.try_lock_shared(), Err(TryLockError::WouldBlock)), "the job must wait for the tool");
        drop(tool);
        let waiter = {
            let job = job.clone();
            std::thread::spawn(move || RunLock::running(&job).unwrap())
        };
        let lock = waiter.join().unwrap();
        assert_eq!(lock.path(), dir.path().join("j-1/RUNNING"));
    }
}
