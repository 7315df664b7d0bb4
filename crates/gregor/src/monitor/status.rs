//! `/status.json`: what the status page shows, built from the job model and
//! the containers' metrics. A pure function (no I/O, no clock of its own).
//!
//! Format (version 1; documented in docs/operations.md):
//! `{"format_version": 1, "now_ms", "job": {name, id, mode, model_version,
//! started_ms, url}, "containers": [{id, reported_ms, stale, processed,
//! sends, commits, last_commit_ms, restarts, tasks: [{name, processed,
//! inputs: [{system, stream, partition, offset, lag, processed}], stores: [{name,
//! entries, restore_done, restore_total, restored_records, restore_ms}]}]}],
//! "totals": {processed, lag}, "throughput": [{t_ms, messages_per_s}],
//! "events": [{timestamp_ms, level, message}]}`.

use super::events::Event;
use gregor_api::metrics::{Sample, SampleValue};
use gregor_runtime::JobModel;
use serde::Serialize;

/// The status document's format version.
pub const STATUS_FORMAT: u32 = 1;

/// A report older than this (a `process` container's) is shown as stale.
pub const STALE_MS: i64 = 10_000;

/// The job, as the status page names it.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    /// `job.name`.
    pub name: String,
    /// `job.id`.
    pub id: String,
    /// `local`, `process` or `zookeeper`.
    pub mode: String,
    /// When this process started serving (Unix ms).
    pub started_ms: i64,
    /// Where it serves.
    pub url: String,
}

/// One container's metrics as the monitor has them.
#[derive(Debug, Clone)]
pub struct ContainerView {
    /// Its id.
    pub id: String,
    /// When it reported them (a `process` child), or `None` (live, in this process).
    pub reported_ms: Option<i64>,
    /// Its metrics.
    pub samples: Vec<Sample>,
}

#[derive(Serialize)]
struct Doc<'a> {
    format_version: u32,
    now_ms: i64,
    job: JobDoc<'a>,
    containers: Vec<ContainerDoc>,
    totals: Totals,
    throughput: Vec<Rate>,
    events: &'a [Event],
}

#[derive(Serialize)]
struct JobDoc<'a> {
    #[serde(flatten)]
    info: &'a JobInfo,
    model_version: Option<u64>,
}

#[derive(Serialize)]
struct ContainerDoc {
    id: String,
    reported_ms: Option<i64>,
    stale: bool,
    processed: u64,
    sends: u64,
    commits: u64,
    last_commit_ms: Option<i64>,
    restarts: u64,
    tasks: Vec<TaskDoc>,
}

#[derive(Serialize)]
struct TaskDoc {
    name: String,
    processed: u64,
    inputs: Vec<InputDoc>,
    stores: Vec<StoreDoc>,
}

#[derive(Serialize)]
struct InputDoc {
    system: String,
    stream: String,
    partition: u32,
    offset: Option<i64>,
    lag: Option<i64>,
    processed: u64,
}

#[derive(Serialize)]
struct StoreDoc {
    name: String,
    entries: Option<i64>,
    restore_done: Option<i64>,
    restore_total: Option<i64>,
    restored_records: Option<i64>,
    restore_ms: Option<i64>,
}

#[derive(Serialize)]
struct Totals {
    processed: u64,
    /// `null` while any input's lag is not known yet.
    lag: Option<i64>,
}

#[derive(Serialize)]
struct Rate {
    t_ms: i64,
    messages_per_s: f64,
}

fn find<'a>(samples: &'a [Sample], kind: &str, labels: &[(&str, &str)], name: &str) -> Option<&'a SampleValue> {
    samples
        .iter()
        .find(|s| s.name == name && s.group.kind == kind && labels.iter().all(|(k, v)| s.group.label(k) == Some(*v)))
        .map(|s| &s.value)
}

fn count(v: Option<&SampleValue>) -> u64 {
    match v {
        Some(SampleValue::Counter { value }) => *value,
        _ => 0,
    }
}

fn gauge(v: Option<&SampleValue>) -> Option<i64> {
    match v {
        Some(SampleValue::Gauge { value }) => Some(*value),
        _ => None,
    }
}

/// The messages processed by every container, summed (for the throughput history).
pub fn processed_total(containers: &[ContainerView]) -> u64 {
    containers
        .iter()
        .flat_map(|c| &c.samples)
        .filter(|s| s.group.kind == "task" && s.name == "messages-processed")
        .map(|s| count(Some(&s.value)))
        .sum()
}

/// The status document. `history` holds (Unix ms, total processed)
/// points, oldest first; `restarts` the supervisor's (or runner's) restart
/// count per container id.
pub fn status(
    job: &JobInfo,
    model: Option<&JobModel>,
    containers: &[ContainerView],
    restarts: &dyn Fn(&str) -> u64,
    history: &[(i64, u64)],
    events: &[Event],
    now_ms: i64,
) -> serde_json::Value {
    let mut totals = Totals { processed: 0, lag: Some(0) };
    let mut docs = Vec::new();
    for view in containers {
        let s = &view.samples;
        let tasks = model
            .and_then(|m| m.containers.iter().find(|c| c.id == view.id))
            .map(|c| c.tasks.as_slice())
            .unwrap_or_default();
        let tasks: Vec<TaskDoc> = tasks
            .iter()
            .map(|t| {
                let inputs = t
                    .inputs
                    .iter()
                    .map(|ssp| {
                        let p = ssp.partition.to_string();
                        let labels =
                            [("system", &*ssp.stream.system), ("stream", &*ssp.stream.stream), ("partition", &*p)];
                        let lag = gauge(find(s, "input", &labels, "lag"));
                        totals.lag = totals.lag.zip(lag).map(|(t, l)| t + l);
                        InputDoc {
                            system: ssp.stream.system.to_string(),
                            stream: ssp.stream.stream.to_string(),
                            partition: ssp.partition,
                            offset: gauge(find(s, "input", &labels, "offset")),
                            lag,
                            processed: count(find(s, "input", &labels, "messages-processed")),
                        }
                    })
                    .collect();
                let mut store_names: Vec<&str> = s
                    .iter()
                    .filter(|x| x.group.kind == "store" && x.group.label("task") == Some(&t.name))
                    .filter_map(|x| x.group.label("store"))
                    .collect();
                store_names.dedup();
                let stores = store_names
                    .into_iter()
                    .map(|name| {
                        let labels = [("task", t.name.as_str()), ("store", name)];
                        StoreDoc {
                            name: name.to_owned(),
                            entries: gauge(find(s, "store", &labels, "entries")),
                            restore_done: gauge(find(s, "store", &labels, "restore-done-records")),
                            restore_total: gauge(find(s, "store", &labels, "restore-target-records")),
                            restored_records: gauge(find(s, "store", &labels, "restored-records")),
                            restore_ms: gauge(find(s, "store", &labels, "restore-ms")),
                        }
                    })
                    .collect();
                let processed = count(find(s, "task", &[("task", &t.name)], "messages-processed"));
                TaskDoc { name: t.name.clone(), processed, inputs, stores }
            })
            .collect();
        let processed: u64 = tasks.iter().map(|t| t.processed).sum();
        totals.processed += processed;
        docs.push(ContainerDoc {
            id: view.id.clone(),
            reported_ms: view.reported_ms,
            stale: view.reported_ms.is_some_and(|t| now_ms - t > STALE_MS),
            processed,
            sends: count(find(s, "container", &[], "sends")),
            commits: count(find(s, "container", &[], "commits")),
            last_commit_ms: gauge(find(s, "container", &[], "last-commit-timestamp-ms")),
            restarts: restarts(&view.id) + count(find(s, "container", &[], "restarts")),
            tasks,
        });
    }
    let throughput = history
        .windows(2)
        .map(|w| {
            let ((t0, n0), (t1, n1)) = (w[0], w[1]);
            let secs = ((t1 - t0) as f64 / 1e3).max(1e-3);
            Rate { t_ms: t1, messages_per_s: n1.saturating_sub(n0) as f64 / secs }
        })
        .collect();
    let doc = Doc {
        format_version: STATUS_FORMAT,
        now_ms,
        job: JobDoc { info: job, model_version: model.map(|m| m.version) },
        containers: docs,
        totals,
        throughput,
        events,
    };
    serde_json::to_value(doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_api::{Group, MetricsRegistry, SystemStreamPartition};
    use gregor_runtime::{ContainerModel, TaskModel};

    #[test]
    fn shows_tasks_offsets_lag_restores_and_rates() {
        let ssp = SystemStreamPartition::parse("log.words[3]").unwrap();
        let model = JobModel {
            version: 4,
            task_count: 1,
            containers: vec![ContainerModel {
                id: "0".into(),
                tasks: vec![TaskModel {
                    name: "Partition 3".into(),
                    inputs: vec![ssp.clone()],
                    changelog_partition: 3,
                }],
            }],
        };
        let r = MetricsRegistry::new();
        r.gauge(Group::input(&ssp), "offset").set(90);
        r.gauge(Group::input(&ssp), "lag").set(10);
        r.counter(Group::input(&ssp), "messages-processed").add(80);
        r.counter(Group::task("Partition 3"), "messages-processed").add(90);
        r.gauge(Group::store("Partition 3", "counts"), "restore-done-records").set(5);
        r.gauge(Group::store("Partition 3", "counts"), "restore-target-records").set(8);
        r.gauge(Group::store("Partition 3", "counts"), "entries").set(6);
        r.gauge("container", "last-commit-timestamp-ms").set(1_000);
        let job = JobInfo { name: "wc".into(), id: "1".into(), mode: "local".into(), started_ms: 0, url: "u".into() };
        let views = [ContainerView { id: "0".into(), reported_ms: Some(0), samples: r.samples() }];
        assert_eq!(processed_total(&views), 90);
        let doc = status(&job, Some(&model), &views, &|_| 2, &[(0, 0), (2_000, 90)], &[], 20_000);
        assert_eq!(doc["format_version"], 1);
        assert_eq!(doc["job"]["name"], "wc");
        assert_eq!(doc["job"]["model_version"], 4);
        let c = &doc["containers"][0];
        assert_eq!(c["stale"], true, "reported 20 s ago");
        assert_eq!(c["restarts"], 2);
        assert_eq!(c["last_commit_ms"], 1_000);
        let t = &c["tasks"][0];
        assert_eq!(t["name"], "Partition 3");
        assert_eq!(t["inputs"][0]["partition"], 3);
        assert_eq!(t["inputs"][0]["offset"], 90);
        assert_eq!(t["inputs"][0]["lag"], 10);
        assert_eq!(t["inputs"][0]["processed"], 80);
        assert_eq!(t["stores"][0]["name"], "counts");
        assert_eq!(t["stores"][0]["restore_done"], 5);
        assert_eq!(t["stores"][0]["restore_total"], 8);
        assert_eq!(t["stores"][0]["entries"], 6);
        assert_eq!(doc["totals"]["processed"], 90);
        assert_eq!(doc["totals"]["lag"], 10);
        assert_eq!(doc["throughput"][0]["messages_per_s"], 45.0);
    }
}
