//! The commit protocol at the container level, driven with the test
//! harness: a crash at any point of a commit, or between commits, loses
//! nothing and double-counts nothing in the stores; uncommitted changelog
//! writes are undone on restore; commits happen when the clock says.

use gregor::runtime::CommitPoint;
use gregor::testing::TestJob;
use gregor::{
    App, Config, IncomingEnvelope, KeyValueStore, MessageCollector, OutgoingEnvelope, Store, StreamTask, SystemStream,
    TaskContext, TaskCoordinator, TaskError,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// Counts messages per key in the store `counts` and sends `key -> count`
/// to `log.counts`.
#[derive(Default)]
struct Count {
    counts: Option<Store<String, i64>>,
}

impl StreamTask for Count {
    type Key = String;
    type Message = String;

    fn init(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        self.counts = Some(ctx.store("counts")?);
        Ok(())
    }

    fn process(
        &mut self,
        e: IncomingEnvelope<'_, String, String>,
        c: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let store = self.counts.as_ref().ok_or_else(|| TaskError::msg("no store"))?;
        let key = e.key.ok_or_else(|| TaskError::msg("no key"))?;
        let n = store.get(&key)?.unwrap_or(0) + 1;
        store.put(&key, &n)?;
        c.send(OutgoingEnvelope::keyed(&SystemStream::new("log", "counts"), key, n))?;
        Ok(())
    }
}

fn config(engine: &str, extra: &str) -> Config {
    Config::from_properties(
        &format!(
            "job.name=count\ntask.inputs=log.keys\njob.container.count=2\ntask.commit.ms=1000\n\
             systems.log.factory=log\nsystems.log.samza.offset.default=oldest\n\
             systems.log.samza.key.serde=string\nsystems.log.samza.msg.serde=string\n\
             streams.counts.samza.msg.serde=long\n\
             stores.counts.factory={engine}\nstores.counts.key.serde=string\nstores.counts.msg.serde=long\n\
             stores.counts.changelog=log.counts-changelog\n{extra}"
        ),
        "test",
    )
    .unwrap()
}

fn job(engine: &str, extra: &str) -> TestJob<Count> {
    let job = TestJob::new(App::new("count", Count::default), config(engine, extra)).unwrap();
    job.create_stream("keys", 4).unwrap();
    job.create_stream("counts", 4).unwrap();
    job
}

/// Sends `n` messages over 13 keys, partitioned by key; returns the true counts.
fn feed(job: &TestJob<Count>, from: usize, n: usize) -> BTreeMap<String, i64> {
    let input = job.input::<String, String>("keys").unwrap();
    let mut counts = BTreeMap::new();
    for i in from..from + n {
        let key = format!("k{}", i % 13);
        input.send_keyed(key.clone(), format!("m{i}")).unwrap();
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

fn merge(a: &mut BTreeMap<String, i64>, b: BTreeMap<String, i64>) {
    for (k, v) in b {
        *a.entry(k).or_insert(0) += v;
    }
}

/// The store contents of every task, merged.
fn stores(job: &TestJob<Count>) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for p in 0..4 {
        merge(&mut out, job.store::<String, i64>(&format!("Partition {p}"), "counts").unwrap());
    }
    out
}

/// After everything: stores and the latest output per key are the true
/// counts, and every count 1..=n appears in the output (at-least-once:
/// values may repeat after a crash, never skip).
fn check_exact(job: &TestJob<Count>, truth: &BTreeMap<String, i64>) {
    assert_eq!(&stores(job), truth, "store contents");
    let out = job.output::<String, i64>("counts").unwrap();
    assert_eq!(&out.latest_by_key(), truth, "latest output per key");
    for (key, n) in truth {
        let mut seen: Vec<i64> =
            out.key_values().into_iter().filter(|(k, _)| k == key).filter_map(|(_, v)| v).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, (1..=*n).collect::<Vec<_>>(), "counts sent for {key}");
    }
}

#[test]
fn a_crash_at_any_point_of_a_commit_loses_and_double_counts_nothing() {
    for engine in ["memory", "rocksdb"] {
        for point in [
            CommitPoint::Start,
            CommitPoint::StoresFlushed,
            CommitPoint::OutputsFlushed,
            CommitPoint::CheckpointsSent,
            CommitPoint::CheckpointsFlushed,
        ] {
            let mut job = job(engine, "");
            let mut truth = feed(&job, 0, 200);
            job.run().unwrap();
            job.commit().unwrap();
            merge(&mut truth, feed(&job, 200, 300));
            job.run().unwrap();
            job.crash_at_commit("0", point).unwrap();
            job.commit().unwrap();
            assert!(!job.is_running("0"), "{engine} {point:?}: container 0 crashed");
            job.restart("0").unwrap();
            merge(&mut truth, feed(&job, 500, 100));
            job.run_to_end().unwrap();
            check_exact(&job, &truth);
        }
    }
}

#[test]
fn crashes_between_commits_restore_stores_to_the_checkpoint() {
    // RocksDB restarts from its local snapshot; the memory engine replays
    // the changelog (as RocksDB does on another machine).
    for engine in ["rocksdb", "memory"] {
        crash_between_commits(engine);
    }
}

fn crash_between_commits(engine: &str) {
    // No cache: every write reaches the changelog at once.
    let mut job = job(engine, "stores.counts.object.cache.size=0\n");
    let mut truth = feed(&job, 0, 120);
    job.run().unwrap();
    job.commit().unwrap();
    let committed = stores(&job);
    assert_eq!(committed, truth);
    // Writes after the commit reach the changelog (each loop turn publishes)...
    let more = feed(&job, 120, 80);
    job.run().unwrap();
    assert_ne!(stores(&job), committed);
    // ... but a crash leaves the stores exactly at the checkpoint.
    job.crash("0").unwrap();
    job.crash("1").unwrap();
    job.restart("0").unwrap();
    job.restart("1").unwrap();
    assert_eq!(stores(&job), committed, "restored to the checkpoint, uncommitted writes undone");
    // A commit after reprocessing only one of those messages records a
    // changelog offset past the undone writes; restoring from it must not
    // bring them back (they would count the rest twice).
    job.step(1).unwrap();
    job.commit().unwrap();
    job.crash("0").unwrap();
    job.crash("1").unwrap();
    job.restart("0").unwrap();
    job.restart("1").unwrap();
    // The messages since the checkpoint are processed again, once.
    merge(&mut truth, more);
    job.run_to_end().unwrap();
    check_exact(&job, &truth);
}

#[test]
fn repeated_random_crashes_keep_the_counts_exact() {
    // A small deterministic generator: crash points vary with the seed.
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s % n
    };
    let mut job = job("memory", "task.commit.ms=50\n");
    let mut truth = BTreeMap::new();
    let mut sent = 0;
    for _ in 0..30 {
        let n = 1 + next(60) as usize;
        merge(&mut truth, feed(&job, sent, n));
        sent += n;
        job.step(next(80) as usize).unwrap();
        job.advance_time(Duration::from_millis(next(120)));
        let victim = next(2).to_string();
        match next(3) {
            0 => {
                job.crash(&victim).unwrap();
                job.restart(&victim).unwrap();
            }
            1 => {
                let point = [CommitPoint::StoresFlushed, CommitPoint::OutputsFlushed, CommitPoint::CheckpointsSent]
                    [next(3) as usize];
                job.crash_at_commit(&victim, point).unwrap();
                job.advance_time(Duration::from_secs(1));
                job.run().unwrap();
                if !job.is_running(&victim) {
                    job.restart(&victim).unwrap();
                }
            }
            _ => {}
        }
    }
    job.run_to_end().unwrap();
    check_exact(&job, &truth);
}

#[test]
fn commits_happen_when_the_manual_clock_says() {
    let mut job = job("memory", "");
    feed(&job, 0, 40);
    job.run().unwrap();
    let checkpoints =
        |job: &TestJob<Count>| job.output::<String, String>("__gregor-checkpoints-count-1").map_or(0, |o| o.len());
    assert_eq!(checkpoints(&job), 0, "nothing is committed before task.commit.ms");
    job.advance_time(Duration::from_millis(999));
    job.run().unwrap();
    assert_eq!(checkpoints(&job), 0, "999 ms is not yet 1000");
    job.advance_time(Duration::from_millis(1));
    job.run().unwrap();
    assert_eq!(checkpoints(&job), 4, "one checkpoint per task once the interval passed");
    job.advance_time(Duration::from_secs(5));
    job.run().unwrap();
    assert_eq!(checkpoints(&job), 4, "an unchanged checkpoint is not written again");
    let metrics = job.metrics("0").unwrap();
    assert!(matches!(metrics["container"]["commits"], gregor::testing::MetricValue::Counter(n) if n >= 2));
}

#[test]
fn a_restored_store_counts_on_a_snapshot_that_exists() {
    let mut job = job("rocksdb", "");
    feed(&job, 0, 50);
    job.run().unwrap();
    job.commit().unwrap();
    job.crash("0").unwrap();
    // Restored from scratch (no local state): the restore snapshots the
    // checkpointed state and counts on that snapshot, not on none.
    let state = std::path::PathBuf::from(&job.job_config().state_dir);
    std::fs::remove_dir_all(state.join("count-1/counts/Partition 0")).unwrap();
    job.restart("0").unwrap();
    let at = job.local_snapshot("Partition 0", "counts");
    let snapshots = state.join("count-1/counts/Partition 0/snapshots");
    let on_disk: Vec<u64> = std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap().parse().unwrap())
        .collect();
    assert!(at.is_some(), "the restore took a snapshot");
    assert_eq!(on_disk, vec![at.unwrap()], "the one snapshot kept is the one the store counts on");
}

#[test]
fn a_damaged_local_snapshot_is_rebuilt_from_the_changelog() {
    let mut job = job("rocksdb", "");
    let truth = feed(&job, 0, 80);
    job.run().unwrap();
    job.commit().unwrap();
    job.crash("0").unwrap();
    let state = std::path::PathBuf::from(&job.job_config().state_dir);
    let snapshots = state.join("count-1/counts/Partition 0/snapshots");
    let mut damaged = 0;
    for snapshot in std::fs::read_dir(&snapshots).unwrap() {
        for file in std::fs::read_dir(snapshot.unwrap().path()).unwrap() {
            let p = file.unwrap().path();
            if p.extension().is_some_and(|x| x == "sst") {
                std::fs::remove_file(p).unwrap();
                damaged += 1;
            }
        }
    }
    assert!(damaged > 0, "the snapshot had table files to lose");
    job.restart("0").unwrap();
    assert_eq!(stores(&job), truth, "rebuilt from the changelog, exactly");
}
