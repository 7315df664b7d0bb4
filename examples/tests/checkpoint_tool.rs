//! `gregor checkpoint show|set` against real jobs, as an operator uses it:
//! the word count rewound to its oldest offsets and to a time recounts from
//! scratch (stores reset), not on top of its old counts; `--keep-stores`
//! keeps the state (and doubles a job that is not idempotent); a running
//! job is refused; mistakes are named; the same on Kafka (Tansu), with the
//! Kafka system's time lookup.
//!
//! The `gregor` binary belongs to the gregor-cli package, which this one
//! cannot depend on, so it is built with cargo once per run (a no-op after
//! `cargo test --workspace`, which builds it).

mod common;

use gregor_examples::kafka_broker::KafkaBroker;
use gregor_examples::{latest_values, load_lines, word_counts, words};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const WORDCOUNT: &str = env!("CARGO_BIN_EXE_wordcount");
const KEY_COUNTER: &str = env!("CARGO_BIN_EXE_key-counter");

/// `target/<profile>/gregor`, built for the profile of this test.
fn gregor_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "gregor-cli", "--bin", "gregor", "--profile", &profile])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "building the gregor CLI failed");
        profile_dir.join("gregor")
    })
}

/// A job's binary, config and directories (data: the log; state: stores and the run lock).
struct Job {
    dir: tempfile::TempDir,
    binary: &'static str,
    config: String,
    sets: Vec<String>,
}

impl Job {
    fn new(binary: &'static str, config: &str, extra: &[&str]) -> Job {
        let dir = tempfile::tempdir().unwrap();
        let mut sets = vec![
            format!("systems.log.path={}", dir.path().join("data").display()),
            format!("job.logged.store.base.dir={}", dir.path().join("state").display()),
            "task.commit.ms=100".to_owned(),
        ];
        sets.extend(extra.iter().map(|s| (*s).to_owned()));
        Job { dir, binary, config: common::config_path(config), sets }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `--config F --set ...` as the job and the CLI both take them.
    fn args(&self) -> Vec<String> {
        let mut args = vec!["--config".to_owned(), self.config.clone()];
        for s in &self.sets {
            args.extend(["--set".to_owned(), s.clone()]);
        }
        args
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(self.binary);
        cmd.args(self.args()).env("RUST_LOG", "warn");
        cmd
    }

    fn run_to_end(&self) {
        let out = self.command().arg("--until-end").output().unwrap();
        assert!(out.status.success(), "the job failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `gregor checkpoint <sub> <job args> <extra>`.
    fn checkpoint(&self, sub: &str, extra: &[&str]) -> Output {
        Command::new(gregor_bin()).args(["checkpoint", sub]).args(self.args()).args(extra).output().unwrap()
    }

    /// `gregor checkpoint set ...`, which must succeed; its stdout.
    fn set(&self, extra: &[&str]) -> String {
        let out = self.checkpoint("set", extra);
        assert!(out.status.success(), "checkpoint set {extra:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `gregor checkpoint set ...`, which must fail; its stderr.
    fn set_fails(&self, extra: &[&str]) -> String {
        let out = self.checkpoint("set", extra);
        assert!(!out.status.success(), "checkpoint set {extra:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }

    fn show_json(&self) -> Value {
        let out = self.checkpoint("show", &["--json"]);
        assert!(out.status.success(), "checkpoint show failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Checkpointed offset per input partition, and store entries, from `show --json`.
fn positions(show: &Value) -> (BTreeMap<String, Value>, Vec<Value>) {
    let tasks = show["tasks"].as_array().unwrap();
    let inputs = tasks.iter().flat_map(|t| t["inputs"].as_array().unwrap());
    let stores = tasks.iter().flat_map(|t| t["stores"].as_array().unwrap().clone()).collect();
    (inputs.map(|i| (i["input"].as_str().unwrap().to_owned(), i["checkpoint"].clone())).collect(), stores)
}

/// Next offset of every partition of a log stream.
fn ends(data: &Path, stream: &str) -> Vec<u64> {
    let log = gregor_log::Log::open(data).unwrap();
    let s = log.stream(stream).unwrap();
    (0..s.partition_count()).map(|p| s.partition(p).unwrap().next_offset().unwrap()).collect()
}

/// The last value per key among the messages of a log stream from `from[p]` on.
fn latest_since(data: &Path, stream: &str, from: &[u64]) -> BTreeMap<String, String> {
    let log = gregor_log::Log::open(data).unwrap();
    let s = log.stream(stream).unwrap();
    let mut out = BTreeMap::new();
    for (p, &start) in from.iter().enumerate() {
        let part = s.partition(p as u32).unwrap();
        let end = part.next_offset().unwrap();
        let mut reader = gregor_log::PartitionReader::new(part, start);
        while reader.next_offset() < end {
            for m in reader.poll(1 << 20).unwrap().messages() {
                let m = m.unwrap();
                let key = String::from_utf8(m.key.unwrap().to_vec()).unwrap();
                out.insert(key, String::from_utf8(m.value.unwrap().to_vec()).unwrap());
            }
        }
    }
    out
}

fn total_words(lines: &[String]) -> u64 {
    lines.iter().map(|l| words(l).count() as u64).sum()
}

fn wordcount_with(lines: &[String]) -> Job {
    let job = Job::new(WORDCOUNT, "wordcount.properties", &[]);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    load_lines(&job.data(), "words", 4, &refs).unwrap();
    job
}

fn output_size(job: &Job) -> u64 {
    gregor_examples::message_count(&job.data(), "word-counts", true).unwrap()
}

#[test]
fn rewinding_to_oldest_recounts_from_scratch_and_keep_stores_keeps_the_state() {
    let lines = common::text(400, 0x5eed_0001);
    let job = wordcount_with(&lines);
    job.run_to_end();
    assert_eq!(latest_values(&job.data(), "word-counts").unwrap(), word_counts(&lines));
    let before = output_size(&job);

    let out = job.set(&["--to", "oldest"]);
    assert!(out.contains("moving 8 input partitions of 4 tasks to oldest; stores reset to empty"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("Partition 0") && l.contains("log.words[0]") && l.ends_with("-> 0")),
        "{out}"
    );
    assert!(out.contains("intermediate input: skipped to its end"), "{out}");
    assert!(out.lines().any(|l| l.contains("store counts") && l.contains("reset:")), "{out}");
    assert!(out.contains("removed 8 local store directories on this machine"), "{out}");
    let (inputs, _) = positions(&job.show_json());
    assert_eq!(inputs["log.words[3]"], 0, "show prints the moved offsets");

    job.run_to_end();
    // Every word counted once more from zero: the last count per word is
    // the true count, not twice it.
    assert_eq!(latest_values(&job.data(), "word-counts").unwrap(), word_counts(&lines));
    assert_eq!(output_size(&job), before + total_words(&lines), "each word was recounted exactly once");

    // --keep-stores: the store positions stay, so the job still remembers
    // what it counted (the word count drops words it has seen: no output).
    let (_, stores_before) = positions(&job.show_json());
    let out = job.set(&["--to", "oldest", "--keep-stores"]);
    assert!(!out.contains("store counts"), "{out}");
    let (inputs, stores_after) = positions(&job.show_json());
    assert_eq!(stores_after, stores_before, "--keep-stores leaves store checkpoints unchanged");
    assert_eq!(inputs["log.words[0]"], 0);
    let size = output_size(&job);
    job.run_to_end();
    assert_eq!(output_size(&job), size, "the kept state knew every word already");
    assert_eq!(latest_values(&job.data(), "word-counts").unwrap(), word_counts(&lines));
}

#[test]
fn keep_stores_double_counts_a_job_that_is_not_idempotent_and_the_default_does_not() {
    let job = Job::new(KEY_COUNTER, "key-counter.properties", &["job.coordinator=local"]);
    let log = gregor_log::Log::open(job.data()).unwrap();
    let events = log.create_stream("events", gregor_log::StreamConfig::new(2)).unwrap();
    for i in 0..30u32 {
        let key = ["a", "b", "c"][i as usize % 3];
        events
            .append(gregor::partition_for_key(key.as_bytes(), 2), &[gregor_log::Record::keyed(key.as_bytes(), b"e")])
            .unwrap();
    }
    drop((events, log));
    let counts = || latest_values(&job.data(), "key-counts").unwrap();
    let expect = |n: &str| BTreeMap::from([("a", n), ("b", n), ("c", n)].map(|(k, v)| (k.to_owned(), v.to_owned())));
    job.run_to_end();
    assert_eq!(counts(), expect("10"));
    job.set(&["--to", "oldest"]);
    job.run_to_end();
    assert_eq!(counts(), expect("10"), "stores reset: counted from zero again");
    job.set(&["--to", "oldest", "--keep-stores"]);
    job.run_to_end();
    assert_eq!(counts(), expect("20"), "stores kept: every message counted twice");
}

/// `lines` appended round-robin over the 4 partitions of `words`, stamped `ts`, `ts + 1`, ...
fn load_at(data: &Path, lines: &[String], ts: i64) {
    let log = gregor_log::Log::open(data).unwrap();
    let s = log.stream("words").or_else(|_| log.create_stream("words", gregor_log::StreamConfig::new(4))).unwrap();
    for p in 0..4 {
        let records: Vec<gregor_log::Record<'_>> = (p..lines.len())
            .step_by(4)
            .map(|i| gregor_log::Record {
                key: None,
                value: Some(lines[i].as_bytes()),
                timestamp: Some(ts + i as i64),
                headers: &[],
            })
            .collect();
        s.append(p as u32, &records).unwrap();
    }
}

#[test]
fn rewinding_to_a_time_recounts_exactly_what_came_after_it() {
    let (old, new) = (common::text(200, 0x0001), common::text(120, 0x0002));
    let job = Job::new(WORDCOUNT, "wordcount.properties", &[]);
    load_at(&job.data(), &old, 1_748_736_000_000); // 2025-06-01
    load_at(&job.data(), &new, 1_769_904_000_000); // 2026-02-01
    job.run_to_end();
    let all: Vec<String> = old.iter().chain(&new).cloned().collect();
    assert_eq!(latest_values(&job.data(), "word-counts").unwrap(), word_counts(&all));
    let before = ends(&job.data(), "word-counts");

    let out = job.set(&["--to", "time:2026-01-01T00:00:00Z"]);
    assert!(out.contains("to time 2026-01-01T00:00:00Z"), "{out}");
    let (inputs, _) = positions(&job.show_json());
    let shown = String::from_utf8(job.checkpoint("show", &[]).stdout).unwrap();
    for p in 0..4 {
        let first_new = old.len().saturating_sub(p).div_ceil(4) as u64; // phase-1 lines in partition p
        assert_eq!(inputs[&format!("log.words[{p}]")], first_new, "partition {p}");
        let row = format!("log.words[{p}]");
        assert!(
            shown.lines().any(|l| l.contains(&row) && l.split_whitespace().nth(3) == Some(&first_new.to_string())),
            "{shown}"
        );
    }
    job.run_to_end();
    // Stores were reset: what the job wrote since is the count of the new lines alone.
    assert_eq!(latest_since(&job.data(), "word-counts", &before), word_counts(&new));
}

fn produce_keyed(data: &Path, stream: &str, messages: &[(&str, String)]) {
    let log = gregor_log::Log::open(data).unwrap();
    let s = log.stream(stream).or_else(|_| log.create_stream(stream, gregor_log::StreamConfig::new(2))).unwrap();
    for (k, v) in messages {
        s.append(gregor::partition_for_key(k.as_bytes(), 2), &[gregor_log::Record::keyed(k.as_bytes(), v.as_bytes())])
            .unwrap();
    }
}

#[test]
fn a_reset_table_is_rebuilt_from_its_bootstrap_input() {
    let job = Job::new(env!("CARGO_BIN_EXE_stream-table-join"), "stream-table-join.properties", &[]);
    let profiles: Vec<(&str, String)> = ["Ana", "Bo", "Cy"]
        .iter()
        .enumerate()
        .map(|(i, n)| (["u1", "u2", "u3"][i], format!("{{\"name\":\"{n}\"}}")))
        .collect();
    produce_keyed(&job.data(), "user-profiles", &profiles);
    let views: Vec<(&str, String)> =
        (0..30).map(|i| (["u1", "u2", "u3"][i % 3], format!("{{\"page\":\"/p{i}\"}}"))).collect();
    produce_keyed(&job.data(), "page-views", &views);
    job.run_to_end();
    assert_eq!(gregor_examples::message_count(&job.data(), "enriched-page-views", true).unwrap(), 30);
    // Skip every page view; the table store is reset, so its bootstrap
    // input is read again from the start rather than skipped too.
    let out = job.set(&["--to", "newest"]);
    assert!(
        out.lines().any(|l| l.contains("log.user-profiles[") && l.contains("bootstrap input: re-read from oldest")),
        "{out}"
    );
    produce_keyed(&job.data(), "page-views", &[("u2", "{\"page\":\"/later\"}".to_owned())]);
    job.run_to_end();
    assert_eq!(
        gregor_examples::message_count(&job.data(), "enriched-page-views", true).unwrap(),
        31,
        "only the new view was processed"
    );
    let later: Value = serde_json::from_str(&latest_values(&job.data(), "enriched-page-views").unwrap()["u2"]).unwrap();
    assert_eq!(
        (later["page"].as_str(), later["name"].as_str()),
        (Some("/later"), Some("Bo")),
        "the table is whole again"
    );
}

/// Waits for `f`, failing after two minutes.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn refuses_while_running(extra: &[&str]) {
    let lines = common::text(200, 0x5eed_0003);
    let mut job = wordcount_with(&lines);
    job.sets.extend(extra.iter().map(|s| (*s).to_owned()));
    let mut child = job.command().stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Running and committed: every line's checkpoint is at the end.
    wait_until("the job to checkpoint its input", || {
        let show = job.checkpoint("show", &["--json"]);
        let doc: Value = serde_json::from_slice(&show.stdout).unwrap_or(Value::Null);
        let (inputs, _) = if doc.is_null() { Default::default() } else { positions(&doc) };
        (0..4).all(|p| {
            inputs.get(&format!("log.words[{p}]")).and_then(Value::as_u64) == Some(ends(&job.data(), "words")[p])
        })
    });
    let (before, _) = positions(&job.show_json());
    let err = job.set_fails(&["--to", "oldest"]);
    let lock = job.dir.path().join("state/wordcount-1/RUNNING");
    let expected = format!("job wordcount-1 is running ({} is locked by a running job); stop it first", lock.display());
    assert!(err.contains(&expected), "{err}");
    assert_eq!(positions(&job.show_json()).0, before, "nothing was changed");
    assert!(child.try_wait().unwrap().is_none(), "the job still runs");
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "the job stopped cleanly");
    job.set(&["--to", "oldest"]); // stopped: allowed
}

#[test]
fn set_is_refused_while_the_job_runs() {
    refuses_while_running(&[]);
}

#[test]
fn set_is_refused_while_the_job_runs_in_process_mode() {
    refuses_while_running(&["job.coordinator=process"]);
}

#[test]
fn set_is_refused_while_zookeeper_lists_live_processors() {
    let zk = gregor_examples::zookeeper_server::ZkServer::start();
    let sets = [
        format!("job.coordinator.zk.connect={}", zk.connect()),
        "job.debounce.time.ms=300".to_owned(),
        "job.coordinator.zk.session.timeout.ms=3000".to_owned(),
    ];
    let job = Job::new(KEY_COUNTER, "key-counter.properties", &sets.iter().map(String::as_str).collect::<Vec<_>>());
    let keys: Vec<(&str, String)> = (0..40).map(|i| (["a", "b", "c", "d"][i % 4], "e".to_owned())).collect();
    produce_keyed(&job.data(), "events", &keys);
    // The processor keeps its state elsewhere, as on another machine: only
    // ZooKeeper can tell the tool that the job runs.
    let elsewhere = job.dir.path().join("state-elsewhere");
    let mut processor = job
        .command()
        .args(["--set", "processor.id=p1", "--set", &format!("job.logged.store.base.dir={}", elsewhere.display())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the processor to checkpoint its input", || {
        let doc: Value = serde_json::from_slice(&job.checkpoint("show", &["--json"]).stdout).unwrap_or(Value::Null);
        let (inputs, _) = if doc.is_null() { Default::default() } else { positions(&doc) };
        (0..2).all(|p| {
            inputs.get(&format!("log.events[{p}]")).and_then(Value::as_u64) == Some(ends(&job.data(), "events")[p])
        })
    });
    let err = job.set_fails(&["--to", "oldest"]);
    assert!(
        err.contains(
            "job key-counter-1 is running (live processors in ZooKeeper: p1); stop them first, or pass --force if their sessions are stale"
        ),
        "{err}"
    );
    let status = Command::new("kill").args(["-TERM", &processor.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(processor.wait().unwrap().success(), "the processor stopped cleanly");
    job.set(&["--to", "oldest"]); // it left the group: allowed
}

#[test]
fn mistakes_are_named_and_change_nothing() {
    let job = wordcount_with(&common::text(40, 0x5eed_0004));
    // Never ran here: the tool cannot tell whether it runs elsewhere.
    let err = job.set_fails(&["--to", "oldest"]);
    assert!(err.contains("job wordcount-1 never ran with the state directory") && err.contains("--force"), "{err}");
    let err = job.set_fails(&["--to", "oldest", "--force"]);
    assert!(err.contains("job wordcount-1 has no checkpoints") && err.contains("--create"), "{err}");
    let out = job.checkpoint("show", &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("has no checkpoints yet"), "show says so");
    job.run_to_end();
    let before = job.show_json();
    let cases: [(&[&str], &str); 7] = [
        (
            &["--to", "offset:1000", "--stream", "words", "--partition", "1"],
            "offset 1000 is out of range for log.words[1]",
        ),
        (&["--to", "time:yesterday"], "'yesterday' is not a time"),
        (&["--to", "sometime"], "'sometime' is not oldest, newest, offset:N or time:T"),
        (&["--to", "oldest", "--task", "Partition 9"], "the job has no task 'Partition 9' (its tasks: Partition 0,"),
        (&["--to", "oldest", "--stream", "words", "--partition", "4"], "input log.words has no partition 4"),
        (&["--to", "oldest", "--stream", "clicks"], "the job has no input stream 'clicks'"),
        (&["--to", "oldest", "--partition", "1"], "--partition needs --stream"),
    ];
    for (args, message) in cases {
        let err = job.set_fails(args);
        assert!(err.contains(message) && err.lines().count() == 1, "{args:?}: {err}");
    }
    assert_eq!(job.show_json(), before, "no mistake changed a checkpoint");
    // One partition, explicitly: only it moves (and its task's stores are reset).
    let out = job.set(&["--to", "offset:2", "--stream", "log.words", "--partition", "1"]);
    assert!(out.contains("moving 1 input partition of 1 task"), "{out}");
    let (inputs, _) = positions(&job.show_json());
    let (old, _) = positions(&before);
    assert_eq!(inputs["log.words[1]"], 2);
    assert_eq!(inputs["log.words[2]"], old["log.words[2]"]);
}

fn kafka_wordcount(broker: &KafkaBroker) -> Job {
    let mut job = Job::new(WORDCOUNT, "wordcount-kafka.properties", &[]);
    job.sets.push(format!("systems.kafka.bootstrap.servers={}", broker.bootstrap()));
    job
}

#[test]
fn kafka_rewind_to_oldest_recounts_exactly() {
    use gregor_examples::kafka::{create, latest_values, produce, read_all, system};
    let broker = KafkaBroker::start();
    let kafka = system(&broker.bootstrap());
    let lines = common::text(300, 0x5eed_0005);
    create(&kafka, "words", 4).unwrap();
    produce(&kafka, "words", &lines.iter().map(|l| (None, l.as_str())).collect::<Vec<_>>()).unwrap();
    let job = kafka_wordcount(&broker);
    job.run_to_end();
    assert_eq!(latest_values(&kafka, "word-counts").unwrap(), word_counts(&lines));
    let before = read_all(&kafka, "word-counts").unwrap().len() as u64;
    let out = job.set(&["--to", "oldest"]);
    assert!(out.contains("kafka.words[0]") && out.contains("store counts"), "{out}");
    job.run_to_end();
    assert_eq!(latest_values(&kafka, "word-counts").unwrap(), word_counts(&lines));
    assert_eq!(read_all(&kafka, "word-counts").unwrap().len() as u64, before + total_words(&lines));
}

#[test]
fn kafka_finds_offsets_by_time() {
    use gregor_api::system::{StreamKind, SystemFactory};
    let broker = KafkaBroker::start();
    let kafka = gregor_examples::kafka::system(&broker.bootstrap());
    let admin = kafka.admin().unwrap();
    let stream = gregor::SystemStream::new("kafka", "times");
    admin.ensure_stream(&stream, 2, StreamKind::Regular).unwrap();
    let base = 1_764_576_000_000; // 2025-12-01
    let mut producer = kafka.producer().unwrap();
    for i in 0..10 {
        producer.send_to(&stream.partition(0), None, Some(b"m"), base + i * 1000).unwrap();
    }
    producer.flush().unwrap();
    let at = |ts| admin.offset_for_time(&stream.partition(0), ts).unwrap();
    assert_eq!(at(base - 5000), 0, "before everything: the oldest");
    assert_eq!(at(base), 0);
    assert_eq!(at(base + 3500), 4, "between messages: the next one");
    assert_eq!(at(base + 9000), 9, "the newest message");
    assert_eq!(at(base + 9001), 10, "after everything: the next offset");
    assert_eq!(admin.offset_for_time(&stream.partition(1), base).unwrap(), 0, "an empty partition");
    let missing = gregor::SystemStream::new("kafka", "no-such-topic").partition(0);
    let err = admin.offset_for_time(&missing, base).unwrap_err().to_string();
    assert!(err.contains("no-such-topic"), "{err}");
}
