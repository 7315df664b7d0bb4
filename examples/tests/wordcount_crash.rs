//! wordcount killed with SIGKILL at random points, again and again, then run
//! to the end: every word's last count in the output must equal its true
//! count, computed here independently. With RocksDB stores keeping their
//! local state (host affinity), with local state wiped before every restart
//! (restore from the changelog only), with snapshots taken every few records,
//! with bulk restores, with the cache's writes ingested as SST files, and
//! with in-memory stores. Exercises checkpoints,
//! changelog restores, RocksDB's deferred writes, the trimming of
//! uncommitted changelog writes, and the duplicate suppression of the
//! repartitioning step.

mod common;

use gregor_examples::{latest_values, load_lines, message_count, word_counts, words};
use std::time::{Duration, Instant};

const WORDCOUNT: &str = env!("CARGO_BIN_EXE_wordcount");

fn crash_repeatedly(extra: &[&str], rounds: usize, seed: u64, wipe_local_state: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = common::text(8000, seed);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    load_lines(dir.path(), "words", 4, &refs).unwrap();
    let mut rng = seed;
    let mut kills = 0;
    for round in 0..rounds {
        if round == rounds / 2 {
            // More input arrives between crashes.
            let more = common::text(1500, seed + 1);
            let refs: Vec<&str> = more.iter().map(String::as_str).collect();
            load_lines(dir.path(), "words", 4, &refs).unwrap();
            lines.extend(more);
        }
        if wipe_local_state {
            // As if the job moved to a new machine: only the changelogs remain.
            let _ = std::fs::remove_dir_all(dir.path().join("__state"));
        }
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        // Committed results (read-committed): a run is killed only after it
        // committed some progress, at a random point after that, so that
        // every restart resumes from a checkpoint with state. (Counting all
        // appended records instead killed most runs at their first
        // uncommitted append, and the next run redid the same work.)
        let committed = || message_count(dir.path(), "word-counts", true).unwrap_or(0);
        let target = committed() + 1 + (rng >> 33) % 4000;
        let mut child = common::spawn(WORDCOUNT, "wordcount.properties", dir.path(), extra, true);
        let what = format!("round {round}");
        if common::kill_once(&mut child, &what, || committed() >= target) {
            kills += 1;
        } else {
            // The run reached the end of its input before its kill point (a
            // fast machine, or a slow poll of the output): more input, so
            // that the next run has work to be killed in.
            let more = common::text(1000, seed ^ (round as u64 + 2));
            let refs: Vec<&str> = more.iter().map(String::as_str).collect();
            load_lines(dir.path(), "words", 4, &refs).unwrap();
            lines.extend(more);
        }
    }
    assert!(kills >= rounds / 2, "only {kills} of {rounds} runs were killed mid-way");
    common::run_to_end(WORDCOUNT, "wordcount.properties", dir.path(), extra);
    let counts = latest_values(dir.path(), "word-counts").unwrap();
    let expected = word_counts(&lines);
    let wrong: Vec<_> = expected.iter().filter(|(w, c)| counts.get(*w) != Some(c)).take(5).collect();
    assert!(
        wrong.is_empty(),
        "after {kills} kills, wrong counts (word, true count): {wrong:?}; got {:?}",
        wrong.iter().map(|(w, _)| counts.get(*w)).collect::<Vec<_>>()
    );
    assert_eq!(counts.len(), expected.len(), "no invented words");
}

#[test]
fn counts_are_exact_after_many_kills_with_one_container() {
    crash_repeatedly(&["task.commit.ms=20"], 12, 0x9e37_79b9_7f4a_7c15, false);
}

#[test]
fn counts_are_exact_after_many_kills_with_two_containers() {
    crash_repeatedly(&["task.commit.ms=30", "job.container.count=2"], 10, 0x2545_f491_4f6c_dd1d, false);
}

#[test]
fn counts_are_exact_after_many_kills_with_local_state_wiped() {
    crash_repeatedly(&["task.commit.ms=25"], 10, 0x1234_5678_9abc_def1, true);
}

/// Local snapshots every few changelog records, taken in the background:
/// restarts start from snapshots behind the checkpoint (replaying the
/// rest), find snapshots past it (started by a commit that was killed
/// before its checkpoint) and unfinished ones (killed while the writer
/// thread took them).
#[test]
fn counts_are_exact_after_many_kills_with_snapshots_behind_and_ahead_of_the_checkpoint() {
    crash_repeatedly(
        &["task.commit.ms=20", "stores.counts.snapshot.records=40", "stores.positions.snapshot.records=40"],
        10,
        0x5851_f42d_4c95_7f2d,
        false,
    );
}

/// Every restore from the changelog is a bulk load (then a reopening).
#[test]
fn counts_are_exact_after_many_kills_with_bulk_restores() {
    crash_repeatedly(
        &["task.commit.ms=25", "stores.counts.restore.bulk.records=1", "stores.positions.restore.bulk.records=1"],
        10,
        0x1405_7b7e_f767_814f,
        true,
    );
}

/// The cache's write-outs reach RocksDB as ingested SST files (every batch,
/// here), with a cache small enough to evict and snapshots every few records.
#[test]
fn counts_are_exact_after_many_kills_with_ingested_write_outs() {
    crash_repeatedly(
        &[
            "task.commit.ms=25",
            "stores.counts.rocksdb.ingest.min.entries=1",
            "stores.counts.cache.max.bytes=20000",
            "stores.counts.snapshot.records=200",
        ],
        10,
        0x3c6e_f372_fe94_f82b,
        false,
    );
}

#[test]
fn counts_are_exact_after_many_kills_with_in_memory_stores() {
    crash_repeatedly(
        &["task.commit.ms=25", "stores.counts.factory=memory", "stores.positions.factory=memory"],
        8,
        0x0bad_cafe_dead_beef,
        false,
    );
}

#[test]
fn sigterm_commits_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let lines = common::text(400, 7);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    load_lines(dir.path(), "words", 4, &refs).unwrap();
    let total: u64 = lines.iter().map(|l| words(l).count() as u64).sum();
    // A long commit interval: only the shutdown commit can save the progress
    // (at-least-once, whose output shows before any commit).
    let alo = "task.processing.guarantee=at-least-once";
    let mut child =
        common::spawn(WORDCOUNT, "wordcount.properties", dir.path(), &["task.commit.ms=600000", alo], false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::stream_size(dir.path(), "word-counts") < total {
        assert!(Instant::now() < deadline, "the job did not count everything");
        assert!(child.try_wait().unwrap().is_none(), "the job exited early");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: sending SIGTERM to our own child process.
    unsafe { libc_kill(child.id() as i32, 15) };
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM must end the job with exit code 0, got {status:?}");
    // Everything was committed: a new run has nothing left to do.
    common::run_to_end(WORDCOUNT, "wordcount.properties", dir.path(), &[alo]);
    assert_eq!(common::stream_size(dir.path(), "word-counts"), total, "no message was processed twice");
    assert_eq!(latest_values(dir.path(), "word-counts").unwrap(), word_counts(&lines));
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn until_end_finishes_with_more_containers_than_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let lines = common::text(200, 3);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    load_lines(dir.path(), "words", 4, &refs).unwrap();
    // 6 containers for 4 tasks: two have nothing to do and must not hold up the others.
    common::run_to_end(WORDCOUNT, "wordcount.properties", dir.path(), &["job.container.count=6"]);
    assert_eq!(latest_values(dir.path(), "word-counts").unwrap(), word_counts(&lines));
}
