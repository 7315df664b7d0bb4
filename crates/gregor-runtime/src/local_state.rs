//! A store's local directory: the live database, snapshots taken at commits,
//! a marker naming its owner, and a lock.
//!
//! ```text
//! <job.logged.store.base.dir>/<job.name>-<job.id>/<store>/<task>/
//!   MARKER           "gregor-store 1", job, store, task: anything else here is foreign
//!   LOCK             held (flock) by the container using the store
//!   current/         the live RocksDB database
//!   snapshots/<changelog offset, 20 digits>/   RocksDB checkpoints (hard links)
//! ```
//!
//! The restore decision is a pure function ([`plan_restore`]) of the
//! checkpointed changelog offset, the snapshots present and the changelog's
//! range, so its edge cases are unit-tested without disks.

use crate::error::RuntimeError;
use std::fs::File;
use std::path::{Path, PathBuf};

/// How to rebuild a store to its checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestorePlan {
    /// Start from this snapshot (its changelog offset), or from empty.
    pub snapshot: Option<u64>,
    /// Replay the changelog from here ...
    pub replay_from: u64,
    /// ... up to here (exclusive): the checkpointed offset.
    pub target: u64,
}

/// Chooses the newest snapshot not past the checkpoint (a snapshot past it
/// holds writes that were never committed) and the changelog range to replay.
/// Without a checkpoint the store is restored empty. `snapshots` must hold
/// only snapshots young enough to use (see [`MAX_SNAPSHOT_AGE`]).
pub fn plan_restore(checkpointed: Option<u64>, snapshots: &[u64], oldest: u64, next: u64) -> RestorePlan {
    let target = checkpointed.unwrap_or(oldest).clamp(oldest, next.max(oldest));
    let snapshot = checkpointed.and_then(|_| snapshots.iter().copied().filter(|&s| s <= target && s >= oldest).max());
    RestorePlan { snapshot, replay_from: snapshot.unwrap_or(oldest), target }
}

/// A snapshot older than the checkpoint is only used while it is younger than
/// this: changelog compaction drops tombstones after their retention (24 h
/// by default on the log and on Kafka), and replaying from an older snapshot
/// could then miss a deletion. An older one means a full replay instead.
pub const MAX_SNAPSHOT_AGE: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// A store that changes gets a new snapshot at least this often, however
/// few changelog records it wrote, so its newest one stays usable.
pub const SNAPSHOT_REFRESH: std::time::Duration = std::time::Duration::from_secs(3600);

fn io(what: &'static str, path: &Path, source: std::io::Error) -> RuntimeError {
    RuntimeError::Io { what, path: path.to_owned(), source }
}

/// The local directory of one store of one task, locked while open.
pub(crate) struct LocalState {
    dir: PathBuf,
    _lock: File,
}

impl LocalState {
    /// Opens (creating) the directory, takes its lock, and wipes it if it is
    /// not a gregor store directory of this job, store and task.
    pub fn open(base: &Path, job: &str, store: &str, task: &str) -> Result<LocalState, RuntimeError> {
        let dir = base.join(job).join(store).join(task.replace('/', "_"));
        std::fs::create_dir_all(&dir).map_err(|e| io("creating the store directory", &dir, e))?;
        let lock = lock_dir(&dir, store, task)?;
        let marker = format!("gregor-store 1\njob={job}\nstore={store}\ntask={task}\n");
        let marker_path = dir.join("MARKER");
        match std::fs::read_to_string(&marker_path) {
            Ok(found) if found == marker => {}
            other => {
                let has_data = dir.join("current").exists() || dir.join("snapshots").exists();
                if has_data {
                    let why =
                        if other.is_ok() { "belongs to another job, store or task" } else { "has no valid MARKER" };
                    tracing::warn!(dir = %dir.display(), "local store directory {why}; discarding it and rebuilding from the changelog");
                    for sub in ["current", "snapshots"] {
                        let p = dir.join(sub);
                        if p.exists() {
                            std::fs::remove_dir_all(&p).map_err(|e| io("removing", &p, e))?;
                        }
                    }
                }
                std::fs::write(&marker_path, marker).map_err(|e| io("writing", &marker_path, e))?;
            }
        }
        // Snapshots an earlier run left unfinished (it held the lock, so
        // none is still being taken).
        if let Ok(entries) = std::fs::read_dir(dir.join("snapshots")) {
            for e in entries.flatten() {
                if e.file_name().to_str().is_none_or(|n| n.parse::<u64>().is_err()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(LocalState { dir, _lock: lock })
    }

    pub fn current(&self) -> PathBuf {
        self.dir.join("current")
    }

    fn snapshot_dir(&self, offset: u64) -> PathBuf {
        self.dir.join("snapshots").join(format!("{offset:020}"))
    }

    /// Offsets of the complete snapshots that are equal to `checkpointed` or
    /// younger than [`MAX_SNAPSHOT_AGE`].
    pub fn usable_snapshots(&self, checkpointed: Option<u64>) -> Result<Vec<u64>, RuntimeError> {
        let mut out = self.snapshots()?;
        out.retain(|&s| {
            Some(s) == checkpointed
                || std::fs::metadata(self.snapshot_dir(s))
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < MAX_SNAPSHOT_AGE))
        });
        Ok(out)
    }

    /// Offsets of the complete snapshots present (one being taken, or left
    /// unfinished until the next open, is not listed).
    pub fn snapshots(&self) -> Result<Vec<u64>, RuntimeError> {
        let root = self.dir.join("snapshots");
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&root) else { return Ok(out) };
        for e in entries {
            let e = e.map_err(|e| io("listing", &root, e))?;
            if let Some(o) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                out.push(o);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Replaces `current` with a copy of snapshot `offset` (SST files hard
    /// linked, the rest copied), or with nothing.
    pub fn reset_current(&self, snapshot: Option<u64>) -> Result<PathBuf, RuntimeError> {
        let current = self.current();
        if current.exists() {
            std::fs::remove_dir_all(&current).map_err(|e| io("removing", &current, e))?;
        }
        let Some(offset) = snapshot else { return Ok(current) };
        let src = self.snapshot_dir(offset);
        std::fs::create_dir_all(&current).map_err(|e| io("creating", &current, e))?;
        for e in std::fs::read_dir(&src).map_err(|e| io("listing", &src, e))? {
            let e = e.map_err(|e| io("listing", &src, e))?;
            let to = current.join(e.file_name());
            let immutable = e.file_name().to_str().is_some_and(|n| n.ends_with(".sst"));
            let result =
                if immutable { std::fs::hard_link(e.path(), &to) } else { std::fs::copy(e.path(), &to).map(|_| ()) };
            result.map_err(|err| io("copying a snapshot file to", &to, err))?;
        }
        Ok(current)
    }

    /// Takes a snapshot tagged `offset` with `take(dir)` (into a temporary
    /// name first, so a crash never leaves a partial snapshot under a real one).
    pub fn snapshot(
        &self,
        offset: u64,
        take: impl FnOnce(&Path) -> Result<(), RuntimeError>,
    ) -> Result<(), RuntimeError> {
        let Some(tmp) = self.begin_snapshot(offset)? else { return Ok(()) };
        take(&tmp)?;
        self.finish_snapshot(offset)
    }

    /// The directory a snapshot tagged `offset` is to be taken into (under
    /// a temporary name, made free), or `None` if that snapshot exists.
    /// [`Self::finish_snapshot`] publishes it once complete.
    pub fn begin_snapshot(&self, offset: u64) -> Result<Option<PathBuf>, RuntimeError> {
        if self.snapshot_dir(offset).exists() {
            return Ok(None);
        }
        let root = self.dir.join("snapshots");
        std::fs::create_dir_all(&root).map_err(|e| io("creating", &root, e))?;
        let tmp = self.taking_dir(offset);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io("removing", &tmp, e))?;
        }
        Ok(Some(tmp))
    }

    /// Publishes the complete snapshot [`Self::begin_snapshot`] started.
    pub fn finish_snapshot(&self, offset: u64) -> Result<(), RuntimeError> {
        let done = self.snapshot_dir(offset);
        std::fs::rename(self.taking_dir(offset), &done).map_err(|e| io("renaming", &done, e))
    }

    /// Removes a snapshot [`Self::begin_snapshot`] started that failed.
    pub fn abandon_snapshot(&self, offset: u64) {
        let _ = std::fs::remove_dir_all(self.taking_dir(offset));
    }

    fn taking_dir(&self, offset: u64) -> PathBuf {
        self.dir.join("snapshots").join(format!(".taking-{offset}"))
    }

    /// Deletes every snapshot but `keep`.
    pub fn retain(&self, keep: Option<u64>) -> Result<(), RuntimeError> {
        for s in self.snapshots()? {
            if Some(s) != keep {
                let p = self.snapshot_dir(s);
                std::fs::remove_dir_all(&p).map_err(|e| io("removing old snapshot", &p, e))?;
            }
        }
        Ok(())
    }
}

/// Deletes one store's local state of one task (its live database and
/// snapshots) if its directory exists on this machine, holding the store's
/// lock meanwhile; the MARKER and LOCK stay, so a container opening it
/// concurrently still excludes this. Returns whether there was a directory.
/// For operator tools that reset a store (`gregor checkpoint set`): the next
/// start restores the store from its changelog alone.
///
/// # Errors
/// [`RuntimeError::StoreLocked`] while a container has the store open; I/O.
pub fn discard_local_state(base: &Path, job: &str, store: &str, task: &str) -> Result<bool, RuntimeError> {
    let dir = base.join(job).join(store).join(task.replace('/', "_"));
    if !dir.is_dir() {
        return Ok(false);
    }
    let _lock = lock_dir(&dir, store, task)?;
    for sub in ["current", "snapshots"] {
        let p = dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(|e| io("removing", &p, e))?;
        }
    }
    Ok(true)
}

/// Takes the exclusive lock of a store directory without waiting.
fn lock_dir(dir: &Path, store: &str, task: &str) -> Result<File, RuntimeError> {
    let lock_path = dir.join("LOCK");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io("opening", &lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(RuntimeError::StoreLocked { store: store.to_owned(), task: task.to_owned(), lock: lock_path })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io("locking", &lock_path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_checkpoint_restores_nothing() {
        assert_eq!(plan_restore(None, &[], 0, 50), RestorePlan { snapshot: None, replay_from: 0, target: 0 });
        // A snapshot without a checkpoint was never committed.
        assert_eq!(plan_restore(None, &[40], 0, 50).snapshot, None);
        assert_eq!(plan_restore(None, &[10], 10, 50).snapshot, None);
    }

    #[test]
    fn the_newest_snapshot_not_past_the_checkpoint_is_used() {
        let p = plan_restore(Some(30), &[10, 20, 30, 40], 0, 50);
        assert_eq!(p, RestorePlan { snapshot: Some(30), replay_from: 30, target: 30 });
        // Crash between snapshot 40 and its checkpoint: 40 holds uncommitted writes.
        let p = plan_restore(Some(30), &[20, 40], 0, 50);
        assert_eq!(p, RestorePlan { snapshot: Some(20), replay_from: 20, target: 30 });
    }

    #[test]
    fn without_usable_snapshots_the_whole_changelog_is_replayed() {
        assert_eq!(plan_restore(Some(30), &[], 0, 50), RestorePlan { snapshot: None, replay_from: 0, target: 30 });
        assert_eq!(plan_restore(Some(30), &[35], 5, 50), RestorePlan { snapshot: None, replay_from: 5, target: 30 });
    }

    #[test]
    fn checkpoints_outside_the_changelog_are_clamped() {
        // Changelog recreated shorter than the checkpoint: restore what exists.
        assert_eq!(plan_restore(Some(80), &[], 0, 50).target, 50);
        // Records before the checkpoint deleted: start at the oldest.
        assert_eq!(plan_restore(Some(3), &[], 10, 50), RestorePlan { snapshot: None, replay_from: 10, target: 10 });
    }

    #[test]
    fn a_restore_interrupted_midway_is_redone_from_the_snapshot() {
        let base = tempfile::tempdir().unwrap();
        let s = LocalState::open(base.path(), "j-1", "s", "Partition 0").unwrap();
        s.snapshot(5, |d| {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("000001.sst"), b"table").unwrap();
            std::fs::write(d.join("MANIFEST-000002"), b"manifest").unwrap();
            Ok(())
        })
        .unwrap();
        // A crash during a restore left a half-built current/.
        let current = s.current();
        std::fs::create_dir_all(&current).unwrap();
        std::fs::write(current.join("000009.sst"), b"half").unwrap();
        s.reset_current(Some(5)).unwrap();
        let mut names: Vec<String> =
            std::fs::read_dir(&current).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["000001.sst", "MANIFEST-000002"]);
        // The manifest is a copy: the live database appending to it must not change the snapshot.
        std::fs::write(current.join("MANIFEST-000002"), b"changed").unwrap();
        let snap = base.path().join("j-1/s/Partition 0/snapshots").join(format!("{:020}", 5));
        assert_eq!(std::fs::read(snap.join("MANIFEST-000002")).unwrap(), b"manifest");
    }

    #[test]
    fn a_directory_marked_by_the_fixture_marker_keeps_its_state() {
        // The MARKER format of version 1, as checked in: a directory that
        // has it is this store's, and its data is kept.
        let marker = include_str!("../tests/fixtures/store-marker-v1");
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("wordcount-1/counts/Partition 0");
        std::fs::create_dir_all(dir.join("current")).unwrap();
        std::fs::write(dir.join("current/000007.sst"), b"data").unwrap();
        std::fs::write(dir.join("MARKER"), marker).unwrap();
        let s = LocalState::open(base.path(), "wordcount-1", "counts", "Partition 0").unwrap();
        assert!(s.current().join("000007.sst").exists(), "state under a matching marker is kept");
        assert_eq!(std::fs::read_to_string(dir.join("MARKER")).unwrap(), marker, "the marker is left as it was");
    }

    #[test]
    fn discarding_removes_the_data_but_not_while_the_store_is_open() {
        let base = tempfile::tempdir().unwrap();
        assert!(!discard_local_state(base.path(), "j-1", "s", "Partition 0").unwrap(), "nothing here");
        let open = LocalState::open(base.path(), "j-1", "s", "Partition 0").unwrap();
        open.snapshot(3, |d| std::fs::create_dir(d).map_err(|e| io("creating", d, e))).unwrap();
        std::fs::create_dir_all(open.current()).unwrap();
        let err = discard_local_state(base.path(), "j-1", "s", "Partition 0").unwrap_err();
        assert!(matches!(err, RuntimeError::StoreLocked { .. }), "{err}");
        drop(open);
        assert!(discard_local_state(base.path(), "j-1", "s", "Partition 0").unwrap());
        let dir = base.path().join("j-1/s/Partition 0");
        assert!(!dir.join("current").exists() && !dir.join("snapshots").exists());
        assert!(dir.join("MARKER").exists(), "the directory stays this store's");
        let reopened = LocalState::open(base.path(), "j-1", "s", "Partition 0").unwrap();
        assert!(reopened.snapshots().unwrap().is_empty());
    }

    #[test]
    fn directories_are_locked_marked_and_cleaned() {
        let base = tempfile::tempdir().unwrap();
        let a = LocalState::open(base.path(), "j-1", "s", "Partition 0").unwrap();
        let err = LocalState::open(base.path(), "j-1", "s", "Partition 0").err().unwrap().to_string();
        assert!(err.contains("already open by another container"), "{err}");
        // An interrupted snapshot is not listed; complete ones are.
        a.snapshot(7, |d| std::fs::create_dir(d).map_err(|e| io("creating", d, e))).unwrap();
        std::fs::create_dir_all(base.path().join("j-1/s/Partition 0/snapshots/.taking-9")).unwrap();
        assert_eq!(a.snapshots().unwrap(), vec![7]);
        // One being taken survives listing and retaining; the next open
        // removes what an earlier run left unfinished.
        a.retain(Some(7)).unwrap();
        assert!(base.path().join("j-1/s/Partition 0/snapshots/.taking-9").exists());
        drop(a);
        let a = LocalState::open(base.path(), "j-1", "s", "Partition 0").unwrap();
        assert!(!base.path().join("j-1/s/Partition 0/snapshots/.taking-9").exists());
        assert_eq!(a.snapshots().unwrap(), vec![7]);
        drop(a);
        // A foreign marker makes the directory be discarded.
        let dir = base.path().join("j-1/s/Partition 0");
        std::fs::write(dir.join("MARKER"), "something else").unwrap();
        let b = LocalState::open(base.path(), "j-1", "s", "Partition 0").unwrap();
        assert!(b.snapshots().unwrap().is_empty());
    }
}
