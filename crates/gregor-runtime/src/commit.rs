//! The commit: what it writes (a pure plan) and the order it writes it in.
//!
//! Order, so that restoring from any checkpoint never misses data:
//! 1. stores flushed (cache -> engine -> changelog sends);
//! 2. producers flushed: outputs and changelog writes acknowledged;
//! 3. local snapshots started of the stores whose changelog moved far
//!    enough since their last one (a restart on this machine starts from the
//!    newest snapshot and replays only the changelog after it). RocksDB takes
//!    them in the background, behind the writes made so far: the loop goes
//!    on, and a later commit finds them complete (the final commit waits);
//! 4. checkpoints sent and flushed (one per task whose position changed);
//! 5. changelog compaction allowed up to the new checkpoints (at most every
//!    [`COMPACTION_LIMIT_EVERY`]), and local snapshots other than the newest
//!    deleted.
//!
//! A crash between any two steps leaves the previous checkpoint in force,
//! and everything after it is replayed or trimmed on restart.
//!
//! The plan ([`plan_commit`]) is a pure function of what the container
//! knows; [`CommitPoint`]s name the places between steps, where tests can
//! inject a crash.

use crate::checkpoint::{Checkpoint, StoreCheckpoint, encode_checkpoint};
use crate::container::Container;
use crate::error::RuntimeError;
use crate::stores::TaskStore;
use gregor_api::{RawStore, StreamTask, SystemStreamPartition};
use std::collections::BTreeMap;

/// A place inside a commit, between two of its steps (for injected crashes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CommitPoint {
    /// Before anything is written.
    Start,
    /// Stores flushed into the producers; nothing acknowledged yet.
    StoresFlushed,
    /// Outputs and changelog writes acknowledged; no checkpoint sent.
    OutputsFlushed,
    /// Checkpoints sent but not yet acknowledged.
    CheckpointsSent,
    /// Checkpoints acknowledged; compaction limits not yet moved (and,
    /// under exactly-once, the transaction not yet committed).
    CheckpointsFlushed,
    /// Under exactly-once: the transaction committed (markers written).
    TransactionCommitted,
}

impl CommitPoint {
    /// The point's name (as `GREGOR_FAILPOINT` takes it).
    pub fn name(self) -> &'static str {
        match self {
            CommitPoint::Start => "Start",
            CommitPoint::StoresFlushed => "StoresFlushed",
            CommitPoint::OutputsFlushed => "OutputsFlushed",
            CommitPoint::CheckpointsSent => "CheckpointsSent",
            CommitPoint::CheckpointsFlushed => "CheckpointsFlushed",
            CommitPoint::TransactionCommitted => "TransactionCommitted",
        }
    }
}

/// How often commits move the changelogs' compaction limits (and the final
/// commit always does). Moving one replaces a small file, which ext4 writes
/// out at once (milliseconds on a busy disk, for every changelog partition),
/// while compaction runs far less often than commits.
pub const COMPACTION_LIMIT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// What the container knows about one store at commit time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFacts {
    /// Store name.
    pub name: String,
    /// Its changelog partition and the offset the store matched at the last
    /// commit (`None`: no changelog).
    pub changelog: Option<(SystemStreamPartition, u64)>,
    /// The changelog's next offset after everything this container's
    /// producer wrote to it was acknowledged (`None`: nothing written).
    pub acked_end: Option<u64>,
    /// Whether the store keeps local files that can be snapshotted.
    pub local: bool,
    /// Changelog offset of its newest local snapshot.
    pub snapshot_at: Option<u64>,
    /// Changelog records after which a new snapshot is due
    /// (`stores.<name>.snapshot.records`).
    pub snapshot_records: u64,
    /// Whether the newest snapshot is old enough to be refreshed whatever the
    /// records since (see [`crate::local_state::SNAPSHOT_REFRESH`]).
    pub snapshot_stale: bool,
    /// Whether a snapshot is still being taken (no second one is started).
    pub snapshot_running: bool,
}

/// What the container knows about one task at commit time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFacts {
    /// Next offset to process, per input partition.
    pub inputs: Vec<(SystemStreamPartition, u64)>,
    /// Its stores.
    pub stores: Vec<StoreFacts>,
    /// The checkpoint last written (or read at start).
    pub last: Option<Checkpoint>,
    /// Exactly-once without transactions: the next sequence number and what
    /// each intermediate input processed (see `crate::sequences`).
    pub sequences: Sequences,
}

/// What a task's checkpoint records of `crate::sequences` (empty unless
/// de-duplicating).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sequences {
    /// The next sequence number of the task's sends to intermediate streams.
    pub next: u64,
    /// Per intermediate input partition, the highest sequence per producer.
    pub seen: BTreeMap<SystemStreamPartition, BTreeMap<String, u64>>,
}

/// What one task's commit writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPlan {
    /// The task's new checkpoint.
    pub checkpoint: Checkpoint,
    /// Whether it differs from the last one (else it is not written again).
    pub write: bool,
    /// Local snapshots to take before the checkpoint: (store index, changelog offset).
    pub snapshots: Vec<(usize, u64)>,
}

/// The plan of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPlan {
    /// Per task, in the order given.
    pub tasks: Vec<TaskPlan>,
    /// Changelog partitions whose compaction may move up to the offset their
    /// new checkpoint records, once the checkpoints are acknowledged.
    pub compaction_limits: Vec<(SystemStreamPartition, u64)>,
}

impl CommitPlan {
    /// Whether any checkpoint is written.
    pub fn writes_checkpoints(&self) -> bool {
        self.tasks.iter().any(|t| t.write)
    }
}

/// Plans a commit: each task's checkpoint records its inputs' next offsets
/// and, per store with a changelog, the changelog's acknowledged end (or
/// its previous offset when nothing was written). Compaction limits move
/// only when some checkpoint is written and `limits_due` (see
/// [`COMPACTION_LIMIT_EVERY`]); a limit left behind only makes compaction
/// keep more for a while.
///
/// A local store whose recorded offset has no snapshot gets one when it has
/// none at all, when its changelog grew by `snapshot_records` since the
/// newest, when that one is stale, or at the `last` commit of a clean
/// shutdown (so a restart replays nothing). Otherwise its snapshot is left
/// behind the checkpoint: a snapshot flushes RocksDB's memtables, too slow
/// for every commit, and a restart replays the changelog after it. None is
/// planned while the store's previous one is still being taken.
pub fn plan_commit(tasks: &[TaskFacts], last: bool, limits_due: bool) -> CommitPlan {
    let mut plans = Vec::with_capacity(tasks.len());
    let mut compaction_limits = Vec::new();
    for task in tasks {
        let mut checkpoint =
            Checkpoint { sequence: task.sequences.next, seen: task.sequences.seen.clone(), ..Checkpoint::default() };
        checkpoint.inputs.extend(task.inputs.iter().cloned());
        let mut snapshots = Vec::new();
        for (i, store) in task.stores.iter().enumerate() {
            let Some((changelog, previous)) = &store.changelog else { continue };
            let offset = store.acked_end.unwrap_or(*previous);
            checkpoint.stores.insert(store.name.clone(), StoreCheckpoint { changelog: changelog.clone(), offset });
            let due = |at: u64| last || store.snapshot_stale || offset.saturating_sub(at) >= store.snapshot_records;
            if store.local
                && !store.snapshot_running
                && store.snapshot_at != Some(offset)
                && store.snapshot_at.is_none_or(due)
            {
                snapshots.push((i, offset));
            }
            compaction_limits.push((changelog.clone(), offset));
        }
        let write = task.last.as_ref() != Some(&checkpoint);
        plans.push(TaskPlan { checkpoint, write, snapshots });
    }
    let plan = CommitPlan { tasks: plans, compaction_limits };
    if plan.writes_checkpoints() && limits_due { plan } else { CommitPlan { compaction_limits: Vec::new(), ..plan } }
}

/// Whether a store's next snapshot is near: its changelog `end` is three
/// quarters of `records` past its newest snapshot (`at`). Its cache then
/// writes what it owes the engine while the container waits for input, so
/// that the snapshot's commit has little left to write. Without a snapshot
/// the next commit takes one (of a store that has little).
pub(crate) fn snapshot_near(end: u64, at: Option<u64>, records: u64) -> bool {
    at.is_some_and(|at| end.saturating_sub(at) >= records - records / 4)
}

/// Whether a snapshot put off because its writer was behind must now be
/// taken even if that means waiting: the changelog grew by twice
/// `records` since the newest one, or that one is stale (a restart would
/// replay ever more, and after [`crate::local_state::MAX_SNAPSHOT_AGE`]
/// all of the changelog).
pub(crate) fn snapshot_overdue(end: u64, at: Option<u64>, records: u64, stale: bool) -> bool {
    stale || at.is_some_and(|at| end.saturating_sub(at) >= records.saturating_mul(2))
}

/// Starts the snapshot of `store` at changelog `offset`; the store's engine
/// takes it behind the writes the commit flushed (RocksDB: on its writer
/// thread) while the loop goes on, and [`collect_snapshot`] publishes it at
/// a later commit. Waiting for it instead stopped the loop for 110-320 ms at
/// half the latency bench's maximum rate. An engine that cannot start it
/// without waiting (a writer thread behind) is asked again at the next
/// commit, unless `now` (the last commit, or the snapshot is overdue:
/// [`snapshot_overdue`]), which takes it. The changelog is the
/// source of truth: a failed snapshot only makes the next restart slower,
/// so it is logged, not returned.
fn start_snapshot(store: &mut TaskStore, task: &str, offset: u64, now: bool, clock_now: std::time::Instant) {
    let Some(local) = &store.local else { return };
    let name = &store.spec.name;
    let started = local.begin_snapshot(offset).and_then(|dir| {
        let Some(dir) = dir else { return Ok(Started::Exists) };
        let pending = store.store.borrow_mut().start_snapshot(&dir, now).map_err(|source| RuntimeError::StoreEngine {
            store: name.clone(),
            task: task.to_owned(),
            operation: "snapshot",
            source: Box::new(source),
        });
        if !matches!(pending, Ok(Some(_))) {
            local.abandon_snapshot(offset);
        }
        pending.map(|p| p.map_or(Started::Later, Started::Running))
    });
    match started {
        Ok(Started::Exists) => {
            store.snapshot_at = Some(offset);
            store.snapshot_taken = clock_now;
        }
        Ok(Started::Running(pending)) => store.snapshot_running = Some((offset, pending)),
        Ok(Started::Later) => tracing::debug!(store = %name, task, "snapshot put off: the store's writer is behind"),
        Err(e) => tracing::warn!(store = %name, task, "skipping this commit's local snapshot: {e}"),
    }
}

/// What [`start_snapshot`] did.
enum Started {
    /// The snapshot of that offset exists already.
    Exists,
    Running(gregor_kv::PendingSnapshot),
    /// The engine could not start it without waiting.
    Later,
}

/// Publishes the store's background snapshot if it is complete (waiting
/// for it if `wait`).
fn collect_snapshot(store: &mut TaskStore, task: &str, wait: bool, now: std::time::Instant) {
    let (Some(local), Some((offset, pending))) = (&store.local, &mut store.snapshot_running) else { return };
    let offset = *offset;
    let outcome = if wait { store.snapshot_running.take().map(|(_, p)| p.wait()) } else { pending.outcome() };
    let Some(outcome) = outcome else { return }; // still being taken
    store.snapshot_running = None;
    match outcome.map_err(|e| e.to_string()).and_then(|()| local.finish_snapshot(offset).map_err(|e| e.to_string())) {
        Ok(()) => {
            store.snapshot_at = Some(offset);
            store.snapshot_taken = now;
        }
        Err(e) => {
            local.abandon_snapshot(offset);
            tracing::warn!(store = %store.spec.name, task, "skipping a local snapshot: {e}");
        }
    }
}

impl<T: StreamTask> Container<T> {
    /// Publishes the background snapshots that are complete (with `wait`,
    /// once they are: all are expedited first, so that their writers work
    /// side by side).
    fn collect_snapshots(&mut self, wait: bool) {
        let now = self.clock.now();
        if wait {
            let running = self.tasks.iter_mut().flat_map(|t| t.stores.iter_mut());
            running.filter_map(|s| s.snapshot_running.as_mut()).for_each(|(_, pending)| pending.expedite());
        }
        for task in &mut self.tasks {
            for store in &mut task.stores {
                collect_snapshot(store, &task.name, wait, now);
            }
        }
    }

    /// Commits: see the module documentation for the order of the steps.
    pub(crate) fn commit(&mut self, last: bool) -> Result<(), RuntimeError> {
        let started = std::time::Instant::now();
        self.commit_point(CommitPoint::Start)?;
        self.check_lease()?;
        for t in 0..self.tasks.len() {
            let task = &mut self.tasks[t];
            if task.stopped {
                continue;
            }
            crate::error::call_task(&task.name, "before_commit", || {
                task.task.before_commit(&mut task.collector, &mut task.coordinator)
            })?;
            self.route(t)?;
        }
        for task in &self.tasks {
            for store in &task.stores {
                let mut s = store.store.borrow_mut();
                s.flush()?;
                store.entries.set(s.entries() as i64);
            }
        }
        self.commit_point(CommitPoint::StoresFlushed)?;
        let stores_flushed = started.elapsed();
        self.check_lease()?;
        self.producers.borrow_mut().flush()?;
        self.commit_point(CommitPoint::OutputsFlushed)?;
        let outputs_flushed = started.elapsed();
        self.collect_snapshots(last);
        let plan = {
            let producers = self.producers.borrow();
            let facts: Vec<TaskFacts> = self
                .tasks
                .iter()
                .map(|task| TaskFacts {
                    inputs: task
                        .inputs
                        .iter()
                        .map(|&i| (self.inputs[i].ssp.clone(), self.inputs[i].next_offset))
                        .collect(),
                    stores: task
                        .stores
                        .iter()
                        .map(|s| StoreFacts {
                            name: s.spec.name.clone(),
                            changelog: s.changelog.clone(),
                            acked_end: s.changelog.as_ref().and_then(|(ssp, _)| producers.next_offset(ssp)),
                            local: s.local.is_some(),
                            snapshot_at: s.snapshot_at,
                            snapshot_records: s.spec.snapshot_records,
                            snapshot_stale: self.clock.now().saturating_duration_since(s.snapshot_taken)
                                >= crate::local_state::SNAPSHOT_REFRESH,
                            snapshot_running: s.snapshot_running.is_some(),
                        })
                        .collect(),
                    last: task.last_checkpoint.clone(),
                    sequences: match &task.stamp {
                        Some(stamp) => Sequences {
                            next: stamp.next,
                            seen: task
                                .inputs
                                .iter()
                                .filter_map(|&i| {
                                    Some((self.inputs[i].ssp.clone(), self.inputs[i].seen.as_ref()?.to_checkpoint()))
                                })
                                .collect(),
                        },
                        None => Sequences::default(),
                    },
                })
                .collect();
            let limits_due = last
                || self
                    .limits_moved
                    .is_none_or(|t| self.clock.now().saturating_duration_since(t) >= COMPACTION_LIMIT_EVERY);
            plan_commit(&facts, last, limits_due)
        };
        let now = self.producers.borrow().now_ms;
        let clock_now = self.clock.now();
        let mut checkpoints_flushed = std::time::Duration::ZERO;
        let plan_snapshots: usize = plan.tasks.iter().map(|t| t.snapshots.len()).sum();
        let writes = plan.writes_checkpoints();
        for (task, tp) in self.tasks.iter_mut().zip(plan.tasks) {
            for store in &mut task.stores {
                if let (Some((_, end)), Some(cp)) = (&mut store.changelog, tp.checkpoint.stores.get(&store.spec.name)) {
                    *end = cp.offset;
                }
            }
            for &(i, offset) in &tp.snapshots {
                let s = &task.stores[i];
                let stale =
                    clock_now.saturating_duration_since(s.snapshot_taken) >= crate::local_state::SNAPSHOT_REFRESH;
                let now = last || snapshot_overdue(offset, s.snapshot_at, s.spec.snapshot_records, stale);
                start_snapshot(&mut task.stores[i], &task.name, offset, now, clock_now);
            }
            for store in task.stores.iter().filter(|s| s.local.is_some()) {
                let end = store.changelog.as_ref().map_or(0, |(_, end)| *end);
                let near = snapshot_near(end, store.snapshot_at, store.spec.snapshot_records);
                store.store.borrow_mut().store_ahead(near);
            }
            if tp.write {
                let json = encode_checkpoint(&tp.checkpoint)?;
                self.producers.borrow_mut().send(&self.checkpoint_ssp, Some(task.name.as_bytes()), Some(&json), now)?;
                task.last_checkpoint = Some(tp.checkpoint);
            }
        }
        if last {
            // A clean shutdown leaves snapshots of exactly the final
            // checkpoint, so that a restart replays nothing.
            self.collect_snapshots(true);
        }
        if writes {
            self.commit_point(CommitPoint::CheckpointsSent)?;
            self.check_lease()?;
            self.producers.borrow_mut().flush()?;
            self.commit_point(CommitPoint::CheckpointsFlushed)?;
            checkpoints_flushed = started.elapsed();
        }
        // Exactly-once: everything above becomes visible now, together.
        self.producers.borrow_mut().commit_transaction()?;
        if writes {
            self.commit_point(CommitPoint::TransactionCommitted)?;
            for (ssp, offset) in &plan.compaction_limits {
                self.systems.admin(&ssp.stream.system)?.set_compaction_limit(ssp, *offset)?;
            }
            if !plan.compaction_limits.is_empty() {
                self.limits_moved = Some(clock_now);
            }
            for store in self.tasks.iter().flat_map(|t| &t.stores) {
                if let Some(local) = &store.local {
                    local.retain(store.snapshot_at)?; // the checkpoint now matches the newest snapshot
                }
            }
        }
        self.commit_requested = false;
        self.next_commit = self.clock.now() + self.job.commit_interval;
        tracing::debug!(
            container = %self.id,
            ms = started.elapsed().as_secs_f64() * 1e3,
            stores_ms = stores_flushed.as_secs_f64() * 1e3,
            outputs_ms = (outputs_flushed - stores_flushed).as_secs_f64() * 1e3,
            checkpoints_at_ms = checkpoints_flushed.as_secs_f64() * 1e3,
            snapshots = plan_snapshots,
            last,
            "committed"
        );
        self.metrics.counter("container", "commits").inc();
        self.metrics.gauge("container", "last-commit-timestamp-ms").set(self.clock.wall_ms());
        self.metrics.timer("container", "commit").record(started.elapsed());
        self.router.sent_to_inputs = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_api::SystemStream;

    fn ssp(s: &str, p: u32) -> SystemStreamPartition {
        SystemStream::new("log", s).partition(p)
    }

    /// A cache writes ahead from three quarters of the snapshot interval
    /// on, and not for a store without a snapshot (its next commit takes one).
    #[test]
    fn a_snapshot_is_near_three_quarters_of_its_records_on() {
        assert!(!snapshot_near(1_749, Some(1_000), 1_000));
        assert!(snapshot_near(1_750, Some(1_000), 1_000));
        assert!(snapshot_near(9_000, Some(1_000), 1_000), "overdue (its writer was behind)");
        assert!(!snapshot_near(5_000, None, 1_000));
        assert!(!snapshot_near(0, Some(10), 1_000), "a changelog behind the snapshot");
        assert!(snapshot_near(1, Some(0), 1), "one record per snapshot");
    }

    /// A snapshot put off since twice its records, or stale, is taken even
    /// if the commit waits for it.
    #[test]
    fn a_snapshot_put_off_too_long_is_overdue() {
        assert!(!snapshot_overdue(2_999, Some(1_000), 1_000, false));
        assert!(snapshot_overdue(3_000, Some(1_000), 1_000, false));
        assert!(snapshot_overdue(1_001, Some(1_000), 1_000, true), "stale");
        assert!(!snapshot_overdue(5_000, None, 1_000, false), "the first one is taken at once anyway");
        assert!(snapshot_overdue(u64::MAX, Some(0), u64::MAX, false), "saturates instead of overflowing");
    }

    fn store(acked: Option<u64>, local: bool, snapshot_at: Option<u64>) -> StoreFacts {
        StoreFacts {
            name: "counts".into(),
            changelog: Some((ssp("cl", 0), 40)),
            acked_end: acked,
            local,
            snapshot_at,
            snapshot_records: 1000,
            snapshot_stale: false,
            snapshot_running: false,
        }
    }

    #[test]
    fn a_checkpoint_records_inputs_and_the_acknowledged_changelog_end() {
        let plan = plan_commit(
            &[TaskFacts {
                inputs: vec![(ssp("in", 0), 17)],
                stores: vec![store(Some(55), false, None)],
                last: None,
                sequences: Sequences::default(),
            }],
            false,
            true,
        );
        let cp = &plan.tasks[0].checkpoint;
        assert_eq!(cp.inputs[&ssp("in", 0)], 17);
        assert_eq!(cp.stores["counts"], StoreCheckpoint { changelog: ssp("cl", 0), offset: 55 });
        assert!(plan.tasks[0].write);
        assert_eq!(plan.compaction_limits, vec![(ssp("cl", 0), 55)]);
    }

    #[test]
    fn a_store_nothing_was_written_to_keeps_its_offset() {
        let plan = plan_commit(
            &[TaskFacts {
                inputs: vec![],
                stores: vec![store(None, false, None)],
                last: None,
                sequences: Sequences::default(),
            }],
            false,
            true,
        );
        assert_eq!(plan.tasks[0].checkpoint.stores["counts"].offset, 40);
    }

    #[test]
    fn an_unchanged_checkpoint_is_not_written_and_moves_no_limit() {
        let facts = TaskFacts {
            inputs: vec![(ssp("in", 0), 17)],
            stores: vec![store(None, true, Some(40))],
            last: None,
            sequences: Sequences::default(),
        };
        let first = plan_commit(std::slice::from_ref(&facts), false, true);
        let again = plan_commit(&[TaskFacts { last: Some(first.tasks[0].checkpoint.clone()), ..facts }], false, true);
        assert!(!again.tasks[0].write && !again.writes_checkpoints());
        assert!(again.compaction_limits.is_empty());
        assert!(again.tasks[0].snapshots.is_empty(), "the snapshot at 40 matches");
    }

    fn snapshots(stores: Vec<StoreFacts>, last: bool) -> Vec<(usize, u64)> {
        plan_commit(&[TaskFacts { inputs: vec![], stores, last: None, sequences: Sequences::default() }], last, true)
            .tasks[0]
            .snapshots
            .clone()
    }

    #[test]
    fn compaction_limits_move_only_when_due() {
        let facts = [TaskFacts {
            inputs: vec![],
            stores: vec![store(Some(55), false, None)],
            last: None,
            sequences: Sequences::default(),
        }];
        assert!(plan_commit(&facts, false, false).compaction_limits.is_empty());
        assert!(plan_commit(&facts, false, false).tasks[0].write, "the checkpoint is written all the same");
        assert_eq!(plan_commit(&facts, false, true).compaction_limits, vec![(ssp("cl", 0), 55)]);
    }

    #[test]
    fn a_snapshot_waits_until_the_changelog_grew_enough_since_the_last_one() {
        // 999 records since the snapshot at 40: not yet; 1000: due.
        assert_eq!(snapshots(vec![store(Some(1039), true, Some(40))], false), vec![]);
        assert_eq!(snapshots(vec![store(Some(1040), true, Some(40))], false), vec![(0, 1040)]);
    }

    #[test]
    fn a_snapshot_is_taken_at_shutdown_when_stale_or_when_there_is_none() {
        assert_eq!(snapshots(vec![store(Some(41), true, Some(40))], true), vec![(0, 41)], "clean shutdown");
        let stale = StoreFacts { snapshot_stale: true, ..store(Some(41), true, Some(40)) };
        assert_eq!(snapshots(vec![stale], false), vec![(0, 41)], "hourly refresh");
        assert_eq!(snapshots(vec![store(Some(41), true, None)], false), vec![(0, 41)], "none yet");
        let unchanged = StoreFacts { snapshot_stale: true, ..store(None, true, Some(40)) };
        assert_eq!(snapshots(vec![unchanged], true), vec![], "the snapshot matches the checkpoint");
    }

    #[test]
    fn no_snapshot_starts_while_the_previous_one_is_being_taken() {
        let running = StoreFacts { snapshot_running: true, ..store(Some(5040), true, Some(40)) };
        assert_eq!(snapshots(vec![running.clone()], false), vec![]);
        let none_yet = StoreFacts { snapshot_at: None, ..running };
        assert_eq!(snapshots(vec![none_yet], false), vec![], "not even the first");
        assert_eq!(snapshots(vec![store(Some(5040), true, Some(40))], false), vec![(0, 5040)], "once it is done");
    }

    #[test]
    fn snapshots_are_planned_for_local_stores_whose_offset_has_none() {
        let plan = plan_commit(
            &[TaskFacts {
                inputs: vec![],
                stores: vec![
                    store(Some(1060), true, Some(40)),
                    StoreFacts { name: "mem".into(), ..store(Some(60), false, None) },
                    StoreFacts { name: "plain".into(), changelog: None, ..store(None, true, None) },
                ],
                last: None,
                sequences: Sequences::default(),
            }],
            false,
            true,
        );
        assert_eq!(plan.tasks[0].snapshots, vec![(0, 1060)]);
        assert!(!plan.tasks[0].checkpoint.stores.contains_key("plain"), "no changelog, no offset to record");
    }

    #[test]
    fn one_changed_task_moves_the_limits_of_all() {
        let unchanged = TaskFacts {
            inputs: vec![(ssp("in", 0), 1)],
            stores: vec![store(None, false, None)],
            last: None,
            sequences: Sequences::default(),
        };
        let last = plan_commit(std::slice::from_ref(&unchanged), false, true).tasks[0].checkpoint.clone();
        let plan = plan_commit(
            &[
                TaskFacts { last: Some(last), ..unchanged },
                TaskFacts {
                    inputs: vec![(ssp("in", 1), 9)],
                    stores: vec![],
                    last: None,
                    sequences: Sequences::default(),
                },
            ],
            false,
            true,
        );
        assert_eq!((plan.tasks[0].write, plan.tasks[1].write), (false, true));
        assert_eq!(plan.compaction_limits, vec![(ssp("cl", 0), 40)]);
    }

    #[test]
    fn sequences_are_checkpointed_and_a_change_is_written() {
        let sequences =
            Sequences { next: 12, seen: [(ssp("mid", 1), [("00000000000000ab".to_owned(), 9)].into())].into() };
        let facts = TaskFacts { inputs: vec![(ssp("in", 0), 1)], stores: vec![], last: None, sequences };
        let first = plan_commit(std::slice::from_ref(&facts), false, true);
        assert_eq!(first.tasks[0].checkpoint.sequence, 12);
        assert_eq!(first.tasks[0].checkpoint.seen[&ssp("mid", 1)]["00000000000000ab"], 9);
        let last = Some(first.tasks[0].checkpoint.clone());
        let same = plan_commit(&[TaskFacts { last: last.clone(), ..facts.clone() }], false, true);
        assert!(!same.tasks[0].write);
        // Only intermediate messages were dropped or sent: still a new checkpoint.
        let moved = Sequences { next: 13, ..facts.sequences.clone() };
        let next = plan_commit(&[TaskFacts { last, sequences: moved, ..facts }], false, true);
        assert!(next.tasks[0].write);
    }
}
