//! The Streams API examples as a user runs them: real processes on the
//! embedded log, killed with SIGKILL, then checked against the same
//! computation written plainly here. And `--plan`.

mod common;

use gregor_examples::{ascii_words, keyed_values_by_partition, load_lines};
use std::collections::BTreeMap;
use std::path::Path;

const WORDCOUNT: &str = env!("CARGO_BIN_EXE_streams-wordcount");
const CONFIG: &str = "streams-wordcount.properties";

fn load(dir: &Path, n: usize, seed: u64) -> Vec<String> {
    let lines = common::text(n, seed);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    load_lines(dir, "lines", 4, &refs).unwrap();
    lines
}

fn model(lines: &[String]) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for w in lines.iter().flat_map(|l| ascii_words(l)) {
        *m.entry(w).or_insert(0) += 1;
    }
    m
}

/// Kills the job `rounds` times (each over more input), then runs it to the end.
fn kill_rounds(dir: &Path, lines: &mut Vec<String>, extra: &[&str], rounds: usize) -> usize {
    let mut kills = 0;
    for round in 0..rounds {
        lines.extend(load(dir, 150, 0x5a_0000_1000 + round as u64));
        let mut child = common::spawn(WORDCOUNT, CONFIG, dir, extra, true);
        let target = common::stream_size(dir, "word-counts") + 200 + (round as u64 * 37) % 200;
        if common::kill_once(&mut child, &format!("round {round}"), || {
            common::stream_size(dir, "word-counts") >= target
        }) {
            kills += 1;
        }
    }
    common::run_to_end(WORDCOUNT, CONFIG, dir, extra);
    kills
}

#[test]
fn streams_wordcount_is_exact_after_kill_9_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = load(dir.path(), 600, 0x5a_1234);
    let extra = ["task.commit.ms=30", "cluster-manager.container.retry.count=100000"];
    let kills = kill_rounds(dir.path(), &mut lines, &extra, 20);
    assert!(kills >= 10, "only {kills} runs were killed mid-way");
    // Read committed: every word's counts are 1, 2, ..., n, once each, in order.
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for partition in keyed_values_by_partition(dir.path(), "word-counts", true).unwrap() {
        for (word, count) in partition {
            let count: i64 = count.parse().unwrap();
            let prev = last.entry(word.clone()).or_insert(0);
            assert_eq!(count, *prev + 1, "word {word}: committed count {count} after {prev}");
            *prev = count;
        }
    }
    assert_eq!(last, model(&lines));
}

#[test]
fn streams_wordcount_counts_are_exact_after_kill_9_at_least_once() {
    // No transactions: the repartitioned words a restarted task re-sends are
    // dropped by the consuming task (origin positions in its checkpoint).
    let dir = tempfile::tempdir().unwrap();
    let mut lines = load(dir.path(), 600, 0x5a_4321);
    let extra = [
        "task.processing.guarantee=at-least-once",
        "task.commit.ms=30",
        "cluster-manager.container.retry.count=100000",
    ];
    let kills = kill_rounds(dir.path(), &mut lines, &extra, 15);
    assert!(kills >= 8, "only {kills} runs were killed mid-way");
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for partition in keyed_values_by_partition(dir.path(), "word-counts", true).unwrap() {
        for (word, count) in partition {
            let count: i64 = count.parse().unwrap();
            let prev = last.entry(word.clone()).or_insert(0);
            // Re-sent output repeats counts, but never skips or double-counts.
            assert!(count == *prev + 1 || count <= *prev, "word {word}: count {count} after {prev}");
            *prev = (*prev).max(count);
        }
    }
    assert_eq!(last, model(&lines));
}

/// The `gregor` tool, built by the workspace's test run (`scripts/test`).
fn gregor_cli() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("gregor");
    assert!(bin.exists(), "{} is missing: run the workspace's tests (./scripts/test), which build it", bin.display());
    bin
}

/// `gregor stream consume word-counts --isolation read-committed`: (word,
/// count) per partition, in offset order.
fn consume_committed(dir: &Path) -> Vec<Vec<(String, i64)>> {
    let out = std::process::Command::new(gregor_cli())
        .args(["--data-dir", &dir.display().to_string(), "stream", "consume", "word-counts"])
        .args(["--until-end", "--format", "json", "--isolation", "read-committed"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut partitions: Vec<Vec<(String, i64)>> = Vec::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        let p = m["partition"].as_u64().unwrap() as usize;
        partitions.resize(partitions.len().max(p + 1), Vec::new());
        let count = m["value"].as_str().unwrap().parse().unwrap();
        partitions[p].push((m["key"].as_str().unwrap().to_owned(), count));
    }
    partitions
}

#[test]
fn streams_wordcount_in_process_mode_is_exact_after_kill_9_of_containers() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = load(dir.path(), 400, 0x5a_9876);
    let extra = [
        "task.processing.guarantee=exactly-once",
        "job.coordinator=process",
        "job.container.count=2",
        "task.commit.ms=30",
        "cluster-manager.container.retry.count=100000",
        "cluster-manager.container.retry.window.ms=50",
    ];
    let log = dir.path().join("supervisor.log");
    let mut supervisor = common::job(WORDCOUNT, CONFIG, dir.path(), &extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let reports = dir.path().join("__state/streams-wordcount-1/coordinator/reports");
    let mut killed = std::collections::HashSet::new();
    let live_pid =
        |id: usize, killed: &std::collections::HashSet<i64>| common::live_container_pid(&reports, id, killed);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let mut kills = 0;
    while kills < 20 {
        assert!(
            supervisor.try_wait().unwrap().is_none(),
            "the supervisor stopped: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(std::time::Instant::now() < deadline, "no progress after {kills} kills");
        lines.extend(load(dir.path(), 60, 0x5a_9000 + kills as u64));
        let target = common::stream_size(dir.path(), "word-counts") + 150;
        while common::stream_size(dir.path(), "word-counts") < target && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        if let Some(pid) = live_pid(kills % 2, &killed).or_else(|| live_pid((kills + 1) % 2, &killed)) {
            // SAFETY: signalling a container process of the job this test started.
            unsafe { kill(pid as i32, 9) };
            killed.insert(pid);
            kills += 1;
        }
    }
    // SAFETY: as above, the supervisor.
    unsafe { kill(supervisor.id() as i32, 15) };
    supervisor.wait().unwrap();
    common::run_to_end(WORDCOUNT, CONFIG, dir.path(), &extra[..1]);
    // What a user reads with the CLI, read-committed: 1, 2, ..., n per word.
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for partition in consume_committed(dir.path()) {
        for (word, count) in partition {
            let prev = last.entry(word.clone()).or_insert(0);
            assert_eq!(count, *prev + 1, "word {word}: committed count {count} after {prev}");
            *prev = count;
        }
    }
    assert_eq!(last, model(&lines));
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn plan_prints_operators_tasks_streams_and_stores() {
    let dir = tempfile::tempdir().unwrap();
    load(dir.path(), 3, 1);
    let out = common::job(WORDCOUNT, CONFIG, dir.path(), &[]).arg("--plan").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "job streams-wordcount (id 1): 4 task(s) on 1 container(s)",
        "log.streams-wordcount-by-word (intermediate, 4 partitions)",
        "partition_by   by-word",
        "aggregate      counts",
        "counts                       rocksdb (changelog log.streams-wordcount-counts-changelog)",
    ] {
        assert!(text.contains(expected), "missing '{expected}' in:\n{text}");
    }
    let out = common::job(WORDCOUNT, CONFIG, dir.path(), &[]).arg("--plan=json").output().unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["version"], 1);
    assert_eq!(plan["tasks"], 4);
    assert!(plan["operators"].as_array().unwrap().iter().any(|o| o["name"] == "counts" && o["op"] == "aggregate"));
    // Nothing ran: no output stream, no intermediate stream.
    assert_eq!(common::stream_size(dir.path(), "word-counts"), 0);
    // A Streams API job lists its inputs in code: task.inputs is refused.
    let out = common::job(WORDCOUNT, CONFIG, dir.path(), &["job.name=x", "task.inputs=log.lines"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("task.inputs"), "{}", String::from_utf8_lossy(&out.stderr));
}
