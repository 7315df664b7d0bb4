//! Transactional state: a store restored after a failure equals the store
//! at its last checkpoint exactly, even when the failed interval had already
//! written changes to the changelog, and after repeated failures.

mod common;

use gregor::{
    App, IncomingEnvelope, KeyValueStore, MessageCollector, OutgoingEnvelope, ShutdownScope, Store, StreamTask,
    SystemStream, TaskContext, TaskCoordinator, TaskError,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Sums `add <key> <n>` messages per key in the store `totals`. At init it
/// sends its whole store to `log.dump` (one message per entry, then `end`).
/// `sum.fail=true` makes `fail` messages fail; `sum.stop.after=N` stops the
/// container after N messages.
#[derive(Default)]
struct Sum {
    totals: Option<Store<String, i64>>,
    fail: bool,
    stop_after: Option<u64>,
    seen: u64,
    dumped: bool,
}

impl StreamTask for Sum {
    type Key = String;
    type Message = String;

    fn init(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        self.totals = Some(ctx.store("totals")?);
        self.fail = ctx.config().get_bool("sum.fail", false)?;
        self.stop_after = ctx.config().get_parsed("sum.stop.after", "a count")?;
        Ok(())
    }

    fn process(
        &mut self,
        e: IncomingEnvelope<'_, String, String>,
        c: &mut MessageCollector,
        co: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let totals = self.totals.as_ref().unwrap();
        if !self.dumped {
            let dump = SystemStream::new("log", "dump");
            for entry in totals.all()? {
                let (k, v) = entry?;
                c.send(OutgoingEnvelope::to_partition(&dump, 0, Some(k), v.to_string()))?;
            }
            c.send(OutgoingEnvelope::to_partition(&dump, 0, Some("end".to_owned()), String::new()))?;
            self.dumped = true;
        }
        let text = e.message.unwrap_or_default();
        let parts: Vec<&str> = text.split(' ').collect();
        match parts.as_slice() {
            ["add", k, n] => {
                let k = (*k).to_owned();
                totals.put(&k, &(totals.get(&k)?.unwrap_or(0) + n.parse::<i64>()?))?;
            }
            ["fail"] if self.fail => return Err(TaskError::msg("asked to fail")),
            _ => {}
        }
        self.seen += 1;
        if self.stop_after == Some(self.seen) {
            co.shutdown(ShutdownScope::Container);
        }
        Ok(())
    }
}

const CONFIG: &str = "job.name=sum\ntask.inputs=log.in\nsystems.log.samza.key.serde=string\nsystems.log.samza.msg.serde=string\n\
    stores.totals.key.serde=string\nstores.totals.msg.serde=long\nstores.totals.changelog=log.sum-changelog\n\
    stores.totals.object.cache.size=0\ntask.commit.ms=600000\n";

fn add(dir: &Path, messages: &[&str]) {
    let m: Vec<(u32, Option<&str>, &str)> = messages.iter().map(|m| (0, None, *m)).collect();
    common::produce(dir, "in", 1, &m);
}

fn run(dir: &Path, factory: &str, extra: &str, until_end: bool) -> Result<gregor::RunSummary, gregor::JobError> {
    let config = common::config(dir, &format!("{CONFIG}stores.totals.factory={factory}\n{extra}"));
    App::new("sum", Sum::default).config_key("sum.fail").config_key("sum.stop.after").run_config(
        config,
        until_end,
        common::no_signal(),
    )
}

/// The store as the last run dumped it at its start.
fn last_dump(dir: &Path) -> BTreeMap<String, String> {
    let all = common::read(dir, "dump");
    let start = all.iter().rposition(|m| m.2.as_deref() == Some("end")).unwrap();
    let begin = all[..start].iter().rposition(|m| m.2.as_deref() == Some("end")).map_or(0, |i| i + 1);
    all[begin..start].iter().map(|m| (m.2.clone().unwrap(), m.3.clone().unwrap())).collect()
}

/// Compacts the changelog now, as background maintenance would.
fn compact_changelog(dir: &Path) {
    let log = gregor_log::Log::open(dir).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    log.stream("sum-changelog").unwrap().partition(0).unwrap().compact(now, true).unwrap();
}

fn changelog_size(dir: &Path) -> u64 {
    common::read(dir, "sum-changelog").len() as u64
}

#[test]
fn uncommitted_changelog_writes_never_leak_into_a_restored_rocksdb_store() {
    uncommitted_writes_never_leak("rocksdb");
}

#[test]
fn uncommitted_changelog_writes_never_leak_into_a_restored_memory_store() {
    uncommitted_writes_never_leak("memory");
}

fn uncommitted_writes_never_leak(factory: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    add(d, &["add a 1", "add b 2"]);
    run(d, factory, "", true).unwrap(); // checkpoint C1: {a: 1, b: 2}

    // An interval that writes to the changelog and then fails before any commit.
    add(d, &["add a 10", "add z 7"]);
    let before = changelog_size(d);
    let dir2 = d.to_owned();
    let failing = std::thread::spawn(move || run(&dir2, factory, "sum.fail=true\n", false));
    let deadline = Instant::now() + Duration::from_secs(30);
    while changelog_size(d) < before + 2 {
        assert!(Instant::now() < deadline, "the changelog writes did not appear");
        std::thread::sleep(Duration::from_millis(5));
    }
    add(d, &["fail"]);
    let err = failing.join().unwrap().unwrap_err().to_string();
    assert!(err.contains("asked to fail"), "{err}");
    // Compaction must not let the uncommitted writes replace committed values.
    compact_changelog(d);

    // Restored to C1 exactly; it commits C2 after one message ("add a 10").
    run(d, factory, "sum.stop.after=1\n", false).unwrap();
    assert_eq!(last_dump(d), BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]));

    // Restored to C2: a was re-added, z's uncommitted write is gone.
    compact_changelog(d);
    run(d, factory, "sum.stop.after=1\n", false).unwrap();
    assert_eq!(last_dump(d), BTreeMap::from([("a".into(), "11".into()), ("b".into(), "2".into())]));

    // And the rest of the input completes the state.
    run(d, factory, "", true).unwrap();
    add(d, &["noop"]);
    run(d, factory, "", true).unwrap();
    assert_eq!(
        last_dump(d),
        BTreeMap::from([("a".into(), "11".into()), ("b".into(), "2".into()), ("z".into(), "7".into())])
    );
}

/// Applies `put <key> <value>` and `del <key>` to the store `kv`; on its first
/// message it sends the whole store and the range [k100, k200) to `log.dump`.
#[derive(Default)]
struct Ops {
    kv: Option<Store<String, String>>,
    dumped: bool,
}

impl StreamTask for Ops {
    type Key = String;
    type Message = String;

    fn init(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        self.kv = Some(ctx.store("kv")?);
        Ok(())
    }

    fn process(
        &mut self,
        e: IncomingEnvelope<'_, String, String>,
        c: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let kv = self.kv.as_ref().unwrap();
        if !self.dumped {
            let dump = SystemStream::new("log", "dump");
            let all: Vec<(String, String)> = kv.all()?.collect::<Result<_, _>>()?;
            let range: Vec<(String, String)> =
                kv.range(&"k100".to_owned(), &"k200".to_owned())?.collect::<Result<_, _>>()?;
            c.send(OutgoingEnvelope::to_partition(&dump, 0, Some("all".to_owned()), serde_json::to_string(&all)?))?;
            c.send(OutgoingEnvelope::to_partition(&dump, 0, Some("range".to_owned()), serde_json::to_string(&range)?))?;
            self.dumped = true;
        }
        let text = e.message.unwrap_or_default();
        match text.split(' ').collect::<Vec<_>>().as_slice() {
            ["put", k, v] => kv.put(&(*k).to_owned(), &(*v).to_owned())?,
            ["del", k] => kv.delete(&(*k).to_owned())?,
            _ => {}
        }
        Ok(())
    }
}

const OPS_CONFIG: &str = "job.name=ops\ntask.inputs=log.in\nsystems.log.samza.key.serde=string\nsystems.log.samza.msg.serde=string\n\
    stores.kv.factory=rocksdb\nstores.kv.key.serde=string\nstores.kv.msg.serde=string\nstores.kv.changelog=log.ops-changelog\n\
    stores.kv.object.cache.size=50\ntask.commit.ms=5\n\
    metrics.reporters=snap\nmetrics.reporter.snap.factory=stream\nmetrics.reporter.snap.stream=log.metrics\n";

/// (all, range) as the last run dumped them, and the records its restore replayed.
fn ops_run(dir: &Path) -> (Vec<(String, String)>, Vec<(String, String)>, i64) {
    add(dir, &["noop"]);
    App::new("ops", Ops::default).run_config(common::config(dir, OPS_CONFIG), true, common::no_signal()).unwrap();
    let dump = common::read(dir, "dump");
    let last = |k: &str| {
        dump.iter()
            .rev()
            .find(|m| m.2.as_deref() == Some(k))
            .and_then(|m| serde_json::from_str(m.3.as_ref()?).ok())
            .unwrap()
    };
    let metrics = common::read(dir, "metrics");
    let snapshot: serde_json::Value = serde_json::from_str(metrics.last().unwrap().3.as_ref().unwrap()).unwrap();
    let replayed = snapshot["metrics"]["store.Partition 0.kv"]["restored-records"].as_i64().unwrap();
    (last("all"), last("range"), replayed)
}

#[test]
fn a_restored_rocksdb_store_equals_a_reference_map_with_and_without_local_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut model = BTreeMap::new();
    let mut ops = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..3000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let key = format!("k{:03}", rng % 300);
        if rng.is_multiple_of(5) {
            model.remove(&key);
            ops.push(format!("del {key}"));
        } else {
            model.insert(key.clone(), format!("v{i}"));
            ops.push(format!("put {key} v{i}"));
        }
    }
    let refs: Vec<&str> = ops.iter().map(String::as_str).collect();
    add(d, &refs);
    App::new("ops", Ops::default).run_config(common::config(d, OPS_CONFIG), true, common::no_signal()).unwrap();
    let expected_all: Vec<(String, String)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let expected_range: Vec<(String, String)> =
        model.range("k100".to_owned().."k200".to_owned()).map(|(k, v)| (k.clone(), v.clone())).collect();

    // Same machine: the commit snapshot is reused, nothing is replayed.
    let (all, range, replayed) = ops_run(d);
    assert_eq!(all, expected_all);
    assert_eq!(range, expected_range);
    assert_eq!(replayed, 0, "host affinity: the local snapshot matched the checkpoint");

    // New machine: only the changelog is left.
    std::fs::remove_dir_all(d.join("__state")).unwrap();
    let (all, range, replayed) = ops_run(d);
    assert_eq!(all, expected_all);
    assert_eq!(range, expected_range);
    assert!(replayed > 0, "restored from the changelog");

    // Damaged local state (a foreign marker) is discarded and rebuilt.
    std::fs::write(d.join("__state/ops-1/kv/Partition 0/MARKER"), "not ours").unwrap();
    let (all, _, replayed) = ops_run(d);
    assert_eq!(all, expected_all);
    assert!(replayed > 0);
}
