//! `gregor state` against the local state a real job left behind.

use gregor::{
    App, IncomingEnvelope, KeyValueStore, MessageCollector, Store, StreamTask, TaskContext, TaskCoordinator, TaskError,
};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

const GREGOR: &str = env!("CARGO_BIN_EXE_gregor");

#[derive(Default)]
struct Count(Option<Store<String, i64>>);

impl StreamTask for Count {
    type Key = String;
    type Message = String;
    fn init(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        self.0 = Some(ctx.store("counts")?);
        Ok(())
    }
    fn process(
        &mut self,
        e: IncomingEnvelope<'_, String, String>,
        _: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let counts = self.0.as_ref().unwrap();
        let word = e.message.unwrap_or_default();
        counts.put(&word, &(counts.get(&word)?.unwrap_or(0) + 1))?;
        Ok(())
    }
}

fn gregor(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(GREGOR).args(args).output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn list_dump_and_rebuild_a_jobs_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config_path = dir.path().join("count.properties");
    std::fs::write(
        &config_path,
        format!(
            "job.name=count\ntask.inputs=log.words\nsystems.log.factory=log\nsystems.log.path={}\nsystems.log.samza.offset.default=oldest\n\
             systems.log.samza.key.serde=string\nsystems.log.samza.msg.serde=string\ncount.unused=declared by the job only\n\
             stores.counts.factory=rocksdb\nstores.counts.key.serde=string\nstores.counts.msg.serde=long\nstores.counts.changelog=log.count-changelog\n",
            data.display()
        ),
    )
    .unwrap();
    let words = ["a", "b", "a", "c", "a", "b"];
    {
        let log = gregor_log::Log::open(&data).unwrap();
        let s = log.create_stream("words", gregor_log::StreamConfig::new(2)).unwrap();
        for (i, w) in words.iter().enumerate() {
            s.append((i % 2) as u32, &[gregor_log::Record::value(w.as_bytes())]).unwrap();
        }
    }
    let text = std::fs::read_to_string(&config_path).unwrap();
    let config = gregor::Config::from_properties(&text, "count").unwrap();
    App::new("count", Count::default)
        .config_key("count.unused")
        .run_config(config, true, Arc::new(AtomicBool::new(false)))
        .unwrap();

    let cfg = config_path.to_str().unwrap();
    let (ok, list, err) = gregor(&["state", "list", "--config", cfg]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = list.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{list}");
    assert!(rows.iter().all(|r| r.contains("rocksdb") && r.contains("log.count-changelog")), "{list}");

    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    for task in ["Partition 0", "Partition 1"] {
        let (ok, dump, err) = gregor(&["state", "dump", "--config", cfg, "--store", "counts", "--task", task]);
        assert!(ok, "{err}");
        for line in dump.lines() {
            let (k, v) = line.split_once('\t').unwrap();
            *totals.entry(k.to_owned()).or_default() += v.parse::<i64>().unwrap();
        }
    }
    assert_eq!(totals, BTreeMap::from([("a".into(), 3), ("b".into(), 2), ("c".into(), 1)]));

    let (ok, out, err) = gregor(&["state", "rebuild", "--config", cfg, "--store", "counts", "--task", "Partition 0"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("rebuilt store counts of task Partition 0 from"), "{out}");
    let (ok, _, err) = gregor(&["state", "dump", "--config", cfg, "--store", "counts", "--task", "Partition 9"]);
    assert!(!ok && err.contains("no task 'Partition 9'"), "{err}");

    // The job model and the status with lag per input partition.
    let (ok, model, err) = gregor(&["job", "model", "--config", cfg]);
    assert!(ok, "{err}");
    let model: serde_json::Value = serde_json::from_str(&model).unwrap();
    assert_eq!(model["task_count"], 2);
    assert_eq!(model["containers"][0]["tasks"][1]["inputs"][0], "log.words[1]");
    let (ok, status, err) = gregor(&["job", "status", "--config", cfg]);
    assert!(ok, "{err}");
    assert!(status.ends_with("total lag: 0\n"), "{status}");
    {
        let log = gregor_log::Log::open(&data).unwrap();
        log.stream("words").unwrap().append(1, &[gregor_log::Record::value(b"d")]).unwrap();
    }
    let (_, status, _) = gregor(&["job", "status", "--config", cfg]);
    assert!(status.ends_with("total lag: 1\n"), "{status}");
}
