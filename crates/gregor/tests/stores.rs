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
    stores.totals.factory=memory\nstores.totals.key.serde=string\nstores.totals.msg.serde=long\nstores.totals.changelog=log.sum-changelog\n\
    stores.totals.object.cache.size=0\ntask.commit.ms=600000\n";

fn add(dir: &Path, messages: &[&str]) {
    let m: Vec<(u32, Option<&str>, &str)> = messages.iter().map(|m| (0, None, *m)).collect();
    common::produce(dir, "in", 1, &m);
}

fn run(dir: &Path, extra: &str, until_end: bool) -> Result<gregor::RunSummary, gregor::JobError> {
    App::new("sum", Sum::default).config_key("sum.fail").config_key("sum.stop.after").run_config(
        common::config(dir, &format!("{CONFIG}{extra}")),
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
fn uncommitted_changelog_writes_never_leak_into_a_restored_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    add(d, &["add a 1", "add b 2"]);
    run(d, "", true).unwrap(); // checkpoint C1: {a: 1, b: 2}

    // An interval that writes to the changelog and then fails before any commit.
    add(d, &["add a 10", "add z 7"]);
    let before = changelog_size(d);
    let dir2 = d.to_owned();
    let failing = std::thread::spawn(move || run(&dir2, "sum.fail=true\n", false));
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
    run(d, "sum.stop.after=1\n", false).unwrap();
    assert_eq!(last_dump(d), BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]));

    // Restored to C2: a was re-added, z's uncommitted write is gone.
    compact_changelog(d);
    run(d, "sum.stop.after=1\n", false).unwrap();
    assert_eq!(last_dump(d), BTreeMap::from([("a".into(), "11".into()), ("b".into(), "2".into())]));

    // And the rest of the input completes the state.
    run(d, "", true).unwrap();
    add(d, &["noop"]);
    run(d, "", true).unwrap();
    assert_eq!(
        last_dump(d),
        BTreeMap::from([("a".into(), "11".into()), ("b".into(), "2".into()), ("z".into(), "7".into())])
    );
}
