//! Exactly-once on the embedded log with real processes and real kills: the
//! word count *without* its duplicate suppression
//! (`wordcount.deduplicate=false`) under
//! `task.processing.guarantee=exactly-once`, killed with SIGKILL at random
//! points and aborted inside commits (`GREGOR_FAILPOINT`), in the `local`,
//! `process` and `zookeeper` modes (there also a processor frozen past its
//! session that wakes up). The check is stronger than final counts: a
//! read-committed reader of the output sees, for every word, the counts 1,
//! 2, ..., n exactly once each and in order. A read-uncommitted reader sees
//! the aborted outputs (so the test can tell the difference), and the same
//! job under at-least-once over-counts.

mod common;

use gregor_examples::{keyed_values_by_partition, load_lines, word_counts};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Stdio};

const WORDCOUNT: &str = env!("CARGO_BIN_EXE_wordcount");
const EXACTLY_ONCE: &[&str] = &[
    "task.processing.guarantee=exactly-once",
    "wordcount.deduplicate=false",
    "task.commit.ms=30",
    "cluster-manager.container.retry.count=100000",
];

fn load(dir: &Path, n: usize, seed: u64) -> Vec<String> {
    let lines = common::text(n, seed);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    load_lines(dir, "words", 4, &refs).unwrap();
    lines
}

/// Output offsets (records of every transaction, aborted ones included,
/// and markers): a cheap measure of progress.
fn written(dir: &Path) -> u64 {
    common::stream_size(dir, "word-counts")
}

/// Checks that every word's committed counts are 1, 2, ..., n in order and
/// end at its true count; returns the number of committed records.
fn check_sequences(dir: &Path, lines: &[String]) -> usize {
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    let mut records = 0;
    for partition in keyed_values_by_partition(dir, "word-counts", true).unwrap() {
        for (word, count) in partition {
            let count: i64 = count.parse().unwrap();
            let prev = last.entry(word.clone()).or_insert(0);
            assert_eq!(count, *prev + 1, "word {word}: committed count {count} after {prev}");
            *prev = count;
            records += 1;
        }
    }
    let finals: BTreeMap<String, String> = last.into_iter().map(|(w, c)| (w, c.to_string())).collect();
    assert_eq!(finals, word_counts(lines), "final committed counts");
    records
}

fn spawn(dir: &Path, extra: &[&str], env: Option<(&str, String)>) -> Child {
    let mut cmd = common::job(WORDCOUNT, "wordcount.properties", dir, extra);
    cmd.arg("--until-end").stdout(Stdio::null()).stderr(Stdio::null());
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Runs `rounds` times, each over 150 more lines (appended to `lines`),
/// killed with SIGKILL once the output grew by a round-dependent amount (or
/// left to finish); returns the kills.
fn kill_rounds(dir: &Path, lines: &mut Vec<String>, extra: &[&str], rounds: usize, step: u64) -> usize {
    let mut kills = 0;
    for round in 0..rounds {
        lines.extend(load(dir, 150, 0x0e05_0000_0000_1000 + round as u64));
        let mut child = spawn(dir, extra, None);
        let target = written(dir) + step + (round as u64 * 37) % step;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "round {round}: the job failed");
                break;
            }
            if written(dir) >= target {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                break;
            }
            assert!(std::time::Instant::now() < deadline, "round {round}: no progress");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    kills
}

#[test]
fn local_mode_survives_kill_9_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = load(dir.path(), 1000, 0x0e05_1234_5678_9abc);
    let kills = kill_rounds(dir.path(), &mut lines, EXACTLY_ONCE, 60, 300);
    assert!(kills >= 40, "only {kills} runs were killed mid-way");
    let out = common::run_to_end(WORDCOUNT, "wordcount.properties", dir.path(), EXACTLY_ONCE);
    assert!(out.status.success());
    let committed = check_sequences(dir.path(), &lines);
    // A read-uncommitted reader sees the aborted counts: repeated values.
    let uncommitted: usize =
        keyed_values_by_partition(dir.path(), "word-counts", false).unwrap().iter().map(Vec::len).sum();
    assert!(uncommitted > committed, "read-uncommitted {uncommitted} vs committed {committed}");
    eprintln!("{kills} kills; {committed} committed output records, {} aborted", uncommitted - committed);
}

#[test]
fn process_mode_survives_kill_9_of_containers_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = load(dir.path(), 500, 0x0e05_4321_8765_cba9);
    // A short failure window keeps the restart backoff at its first step.
    let extra: Vec<&str> = EXACTLY_ONCE
        .iter()
        .copied()
        .chain(["job.coordinator=process", "job.container.count=2", "cluster-manager.container.retry.window.ms=50"])
        .collect();
    // The job runs (no --until-end) while input keeps arriving; a container
    // process is killed (the supervisor restarts it) after each growth.
    let reports = dir.path().join("__state/wordcount-1/coordinator/reports");
    let log = dir.path().join("supervisor.log");
    let mut supervisor = common::job(WORDCOUNT, "wordcount.properties", dir.path(), &extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let killed = std::cell::RefCell::new(std::collections::HashSet::new());
    let live_pid = |id: usize| common::live_container_pid(&reports, id, &killed.borrow());
    let mut kills = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    while kills < 80 {
        assert!(supervisor.try_wait().unwrap().is_none(), "the supervisor stopped");
        assert!(std::time::Instant::now() < deadline, "no progress after {kills} kills");
        lines.extend(load(dir.path(), 100, 0x0e05_4321_0000_0000 + kills as u64));
        let target = written(dir.path()) + 200;
        while written(dir.path()) < target && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if let Some(pid) = live_pid(kills % 2).or_else(|| live_pid((kills + 1) % 2)) {
            // SAFETY: signalling a container process of the job this test started.
            unsafe { kill(pid as i32, 9) };
            killed.borrow_mut().insert(pid);
            kills += 1;
        }
    }
    // Both containers run again (a stop during a restart is reported as a failure).
    while live_pid(0).is_none() || live_pid(1).is_none() {
        assert!(std::time::Instant::now() < deadline, "the containers did not come back");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: as above, the supervisor.
    unsafe { kill(supervisor.id() as i32, 15) };
    let status = supervisor.wait().unwrap();
    assert!(status.success(), "the supervisor did not stop cleanly: {}", std::fs::read_to_string(&log).unwrap());
    let out = common::run_to_end(WORDCOUNT, "wordcount.properties", dir.path(), &extra);
    assert!(out.status.success());
    check_sequences(dir.path(), &lines);
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Processors of the word count in the `zookeeper` mode, each with its own
/// state directory (as on its own machine) and with the lease check
/// switched off (`GREGOR_FAILPOINT_SKIP=lease-check`): only the log's epoch
/// fencing stands between a frozen processor that wakes up and the output.
struct Processors {
    zk: gregor_examples::zookeeper_server::ZkServer,
    dir: std::path::PathBuf,
    live: Vec<(String, Child)>,
    started: usize,
}

const ZK_SESSION_MS: u64 = 1500;

impl Processors {
    fn start(&mut self, id: &str) {
        let state = self.dir.join(format!("__state-{id}"));
        let settings = [
            "job.coordinator=zookeeper".to_owned(),
            format!("job.coordinator.zk.connect={}", self.zk.connect()),
            format!("job.coordinator.zk.session.timeout.ms={ZK_SESSION_MS}"),
            "job.debounce.time.ms=200".to_owned(),
            format!("processor.id={id}"),
            format!("job.logged.store.base.dir={}", state.display()),
        ];
        let extra: Vec<&str> = EXACTLY_ONCE.iter().copied().chain(settings.iter().map(String::as_str)).collect();
        let log = std::fs::File::create(self.dir.join(format!("{id}.log"))).unwrap();
        let child = common::job(WORDCOUNT, "wordcount.properties", &self.dir, &extra)
            .env("GREGOR_FAILPOINT_SKIP", "lease-check")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.live.push((id.to_owned(), child));
    }

    /// Starts a processor with an id never used before.
    fn start_new(&mut self) {
        self.started += 1;
        let id = format!("p{}", self.started);
        self.start(&id);
    }

    fn log_of(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{id}.log"))).unwrap_or_default()
    }

    /// Fails the test if a live processor exited.
    fn check_alive(&mut self, what: &str) {
        let exited = self.live.iter_mut().find_map(|(id, c)| c.try_wait().unwrap().map(|_| id.clone()));
        if let Some(id) = exited {
            panic!("{what}: processor {id} exited: {}", self.log_of(&id));
        }
    }

    /// Waits until the committed counts are the true ones.
    fn wait_exact(&mut self, lines: &[String], what: &str) {
        let truth = word_counts(lines);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let mut finals = BTreeMap::new();
            for partition in keyed_values_by_partition(&self.dir, "word-counts", true).unwrap_or_default() {
                finals.extend(partition);
            }
            if finals == truth {
                return;
            }
            self.check_alive(what);
            assert!(std::time::Instant::now() < deadline, "{what}: counts not exact after 120 s");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

#[test]
fn zookeeper_mode_survives_kill_9_and_a_frozen_processor_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = load(dir.path(), 300, 0x0e05_2b2b_0000_0001);
    let zk = gregor_examples::zookeeper_server::ZkServer::start();
    let mut ps = Processors { zk, dir: dir.path().to_owned(), live: Vec::new(), started: 0 };
    for _ in 0..3 {
        ps.start_new();
    }
    ps.wait_exact(&lines, "three processors");
    // kill -9 one processor after each growth of the output and start a
    // new one (a new id: a restarted machine); the dead one's tasks (and its
    // open transaction, which holds readers back) wait for its session to
    // expire, then the others end its transaction and take its tasks.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    for kill in 0..40 {
        lines.extend(load(dir.path(), 40, 0x0e05_2b2b_1000_0000 + kill as u64));
        let target = written(dir.path()) + 60 + (kill as u64 * 13) % 60;
        while written(dir.path()) < target {
            assert!(std::time::Instant::now() < deadline, "no progress after {kill} kills");
            ps.check_alive("kill loop");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let (id, mut victim) = ps.live.remove(kill % ps.live.len());
        victim.kill().unwrap(); // SIGKILL
        victim.wait().unwrap();
        assert!(!ps.log_of(&id).contains("panicked"), "{id}: {}", ps.log_of(&id));
        ps.start_new();
    }
    ps.wait_exact(&lines, "after the kills");

    // Freeze a processor that holds tasks (SIGSTOP) past its session: the
    // others end its transaction and take its tasks. Woken up, it goes on
    // (its lease check is off) and tries to commit: it was fenced, and none
    // of what it wrote since shows.
    let (frozen_id, frozen) = ps.live.remove(0);
    // SAFETY: signalling a processor this test started.
    unsafe { kill(frozen.id() as i32, 19) }; // SIGSTOP
    lines.extend(load(dir.path(), 300, 0x0e05_2b2b_2000_0000));
    ps.wait_exact(&lines, "while a processor is frozen");
    unsafe { kill(frozen.id() as i32, 18) }; // SIGCONT
    ps.live.push((frozen_id.clone(), frozen));
    let woke = std::time::Instant::now();
    while !ps.log_of(&frozen_id).contains("was fenced") {
        assert!(woke.elapsed() < std::time::Duration::from_secs(60), "{frozen_id}: {}", ps.log_of(&frozen_id));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    lines.extend(load(dir.path(), 300, 0x0e05_2b2b_3000_0000));
    ps.wait_exact(&lines, "after the frozen processor woke");

    for (_, child) in &ps.live {
        // SAFETY: as above.
        unsafe { kill(child.id() as i32, 15) };
    }
    for (id, mut child) in std::mem::take(&mut ps.live) {
        let status = child.wait().unwrap();
        assert!(status.success(), "{id} did not stop cleanly: {}", ps.log_of(&id));
    }
    let committed = check_sequences(dir.path(), &lines);
    let all = gregor_examples::message_count(dir.path(), "word-counts", false).unwrap() as usize;
    assert!(all > committed, "the kills left no aborted output ({all} written, {committed} committed)");
}

#[test]
fn aborts_inside_commits_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let points = [
        "StoresFlushed",
        "OutputsFlushed",
        "CheckpointsSent",
        "CheckpointsFlushed",
        "txn-decided",
        "TransactionCommitted",
    ];
    let mut lines = Vec::new();
    let mut aborted = 0;
    for round in 0..30 {
        // New input every round, so every run commits several times.
        lines.extend(load(dir.path(), 400, 0x0e05_aaaa_bbbb_0000 + round as u64));
        let point = points[round % points.len()];
        let visit = 1 + round % 3;
        let mut child = spawn(dir.path(), EXACTLY_ONCE, Some(("GREGOR_FAILPOINT", format!("{point}:{visit}"))));
        let status = child.wait().unwrap();
        aborted += usize::from(!status.success());
    }
    assert!(aborted >= 20, "only {aborted} runs reached their failpoint");
    let out = common::run_to_end(WORDCOUNT, "wordcount.properties", dir.path(), EXACTLY_ONCE);
    assert!(out.status.success());
    check_sequences(dir.path(), &lines);
}

#[test]
fn at_least_once_without_deduplication_overcounts_under_the_same_kills() {
    // The control experiment: the test above would notice duplicates.
    let dir = tempfile::tempdir().unwrap();
    let extra = ["task.processing.guarantee=at-least-once", "wordcount.deduplicate=false", "task.commit.ms=30"];
    let mut lines = Vec::new();
    let mut aborted = 0;
    for round in 0..6 {
        lines.extend(load(dir.path(), 400, 0x0e05_dddd_eeee_0000 + round as u64));
        let mut child =
            spawn(dir.path(), &extra, Some(("GREGOR_FAILPOINT", format!("CheckpointsSent:{}", 1 + round % 2))));
        aborted += usize::from(!child.wait().unwrap().success());
    }
    assert!(aborted >= 3);
    common::run_to_end(WORDCOUNT, "wordcount.properties", dir.path(), &extra);
    let finals = gregor_examples::latest_values(dir.path(), "word-counts").unwrap();
    let truth = word_counts(&lines);
    let over = truth
        .iter()
        .filter(|(w, c)| finals.get(*w).is_some_and(|f| f.parse::<i64>().unwrap() > c.parse::<i64>().unwrap()))
        .count();
    assert!(over > 0, "at-least-once without deduplication counted exactly: the kill test could not tell");
}
