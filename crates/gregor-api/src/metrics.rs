//! Metrics handles tasks and the runtime update on the hot path.
//!
//! A [`MetricsRegistry`] holds named counters, gauges and timers in groups.
//! A [`Group`] has a kind (`container`, `task`, `input`, `store`, or a
//! name of the job's own) and labels (task, stream, partition, store), so
//! that a Prometheus endpoint can label what the log reporter shows as
//! `task.Partition 0`. Handles are cheap clones around atomics, so updating
//! one never locks; reporters read [`MetricsRegistry::snapshot`] or
//! [`MetricsRegistry::samples`] from any thread without the tasks knowing.
//! This module never does I/O.

use crate::system::SystemStreamPartition;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
/// A monotonically increasing count.
#[derive(Clone, Default, Debug)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Clone, Default, Debug)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of a [`Timer`]'s histogram buckets; one more
/// bucket counts everything above the last.
pub const TIMER_BUCKETS: [f64; 12] = [0.000_01, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];

/// Durations of an operation: count, total, maximum and a histogram
/// ([`TIMER_BUCKETS`]) since start.
#[derive(Clone, Default, Debug)]
pub struct Timer(Arc<TimerCells>);

#[derive(Default, Debug)]
struct TimerCells {
    count: AtomicU64,
    total_ns: AtomicU64,
    max_ns: AtomicU64,
    buckets: [AtomicU64; TIMER_BUCKETS.len() + 1],
}

impl Timer {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0.total_ns.fetch_add(ns, Ordering::Relaxed);
        self.0.max_ns.fetch_max(ns, Ordering::Relaxed);
        let secs = d.as_secs_f64();
        let bucket = TIMER_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(TIMER_BUCKETS.len());
        self.0.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
    /// Runs `f` and records how long it took.
    pub fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.record(start.elapsed());
        out
    }
    /// (count, total, max).
    pub fn get(&self) -> (u64, Duration, Duration) {
        (
            self.0.count.load(Ordering::Relaxed),
            Duration::from_nanos(self.0.total_ns.load(Ordering::Relaxed)),
            Duration::from_nanos(self.0.max_ns.load(Ordering::Relaxed)),
        )
    }
    /// Recordings per bucket of [`TIMER_BUCKETS`] (not cumulative; the last
    /// one is above the largest bound).
    pub fn buckets(&self) -> Vec<u64> {
        self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }
}

/// One metric's value in a snapshot.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum MetricValue {
    /// A counter.
    Counter(u64),
    /// A gauge.
    Gauge(i64),
    /// A timer: count, total and max in milliseconds.
    Timer {
        /// Number of recordings.
        count: u64,
        /// Sum, ms.
        total_ms: f64,
        /// Largest, ms.
        max_ms: f64,
    },
}

/// What a metric belongs to: a kind and labels. Its [`Group::name`] is how
/// snapshots and the log reporter show it (`task.Partition 0`,
/// `input.log.words[2]`, `store.Partition 0.counts`, `container`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Group {
    /// `container`, `task`, `input`, `store`, or a kind of the job's own.
    pub kind: String,
    /// Label names and values, e.g. `("task", "Partition 0")`.
    pub labels: Vec<(String, String)>,
}

impl Group {
    /// The container's own metrics.
    pub fn container() -> Group {
        Group { kind: "container".into(), labels: Vec::new() }
    }
    /// A task's metrics (the task's own ones included).
    pub fn task(task: &str) -> Group {
        Group { kind: "task".into(), labels: vec![("task".into(), task.into())] }
    }
    /// An input partition's metrics.
    pub fn input(ssp: &SystemStreamPartition) -> Group {
        Group {
            kind: "input".into(),
            labels: vec![
                ("system".into(), ssp.stream.system.to_string()),
                ("stream".into(), ssp.stream.stream.to_string()),
                ("partition".into(), ssp.partition.to_string()),
            ],
        }
    }
    /// A task's store.
    pub fn store(task: &str, store: &str) -> Group {
        Group { kind: "store".into(), labels: vec![("task".into(), task.into()), ("store".into(), store.into())] }
    }
    /// The value of label `name`, if it has one.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    /// How snapshots name the group.
    pub fn name(&self) -> String {
        match (self.kind.as_str(), self.label("task"), self.label("store")) {
            ("input", ..) => {
                let (system, stream, partition) =
                    (self.label("system").unwrap_or(""), self.label("stream").unwrap_or(""), self.label("partition"));
                format!("input.{system}.{stream}[{}]", partition.unwrap_or(""))
            }
            ("store", Some(task), Some(store)) => format!("store.{task}.{store}"),
            (kind, Some(task), None) => format!("{kind}.{task}"),
            (kind, ..) if self.labels.is_empty() => kind.to_owned(),
            (kind, ..) => {
                let values: Vec<&str> = self.labels.iter().map(|(_, v)| v.as_str()).collect();
                format!("{kind}.{}", values.join("."))
            }
        }
    }
}

impl From<&str> for Group {
    /// A group of the job's own, without labels (`"container"` is the
    /// container's group).
    fn from(kind: &str) -> Group {
        Group { kind: kind.to_owned(), labels: Vec::new() }
    }
}

impl From<&Group> for Group {
    fn from(g: &Group) -> Group {
        g.clone()
    }
}

/// One metric with its group, as [`MetricsRegistry::samples`] reads it
/// (and as the `process` mode's containers hand them to their supervisor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// What it belongs to.
    pub group: Group,
    /// Its name in the group, e.g. `messages-processed`.
    pub name: String,
    /// Its value.
    pub value: SampleValue,
}

/// A sample's value, tagged with its type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SampleValue {
    /// A counter.
    Counter {
        /// Its count.
        value: u64,
    },
    /// A gauge.
    Gauge {
        /// Its value.
        value: i64,
    },
    /// A timer.
    Timer {
        /// Recordings.
        count: u64,
        /// Their sum, seconds.
        sum_seconds: f64,
        /// The largest, seconds.
        max_seconds: f64,
        /// Per bucket of [`TIMER_BUCKETS`] plus one above it (not cumulative).
        buckets: Vec<u64>,
    },
}

#[derive(Clone)]
enum Metric {
    Counter(Counter),
    Gauge(Gauge),
    Timer(Timer),
}

type Entries = BTreeMap<(String, String), (Group, Metric)>;

/// Named metrics in groups, shared by a container's tasks and reporters.
#[derive(Clone, Default)]
pub struct MetricsRegistry {
    metrics: Arc<Mutex<Entries>>,
}

impl MetricsRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        MetricsRegistry::default()
    }

    fn get_or_insert(&self, group: Group, name: &str, make: impl FnOnce() -> Metric) -> Metric {
        let mut m = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        m.entry((group.name(), name.to_owned())).or_insert_with(|| (group, make())).1.clone()
    }

    /// The counter `group`/`name`, created on first use.
    pub fn counter(&self, group: impl Into<Group>, name: &str) -> Counter {
        match self.get_or_insert(group.into(), name, || Metric::Counter(Counter::default())) {
            Metric::Counter(c) => c,
            _ => Counter::default(), // a name reused with another kind: detached, never reported
        }
    }

    /// The gauge `group`/`name`, created on first use.
    pub fn gauge(&self, group: impl Into<Group>, name: &str) -> Gauge {
        match self.get_or_insert(group.into(), name, || Metric::Gauge(Gauge::default())) {
            Metric::Gauge(g) => g,
            _ => Gauge::default(),
        }
    }

    /// The timer `group`/`name`, created on first use.
    pub fn timer(&self, group: impl Into<Group>, name: &str) -> Timer {
        match self.get_or_insert(group.into(), name, || Metric::Timer(Timer::default())) {
            Metric::Timer(t) => t,
            _ => Timer::default(),
        }
    }

    /// Every metric's current value: group name -> metric name -> value.
    pub fn snapshot(&self) -> BTreeMap<String, BTreeMap<String, MetricValue>> {
        let m = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: BTreeMap<String, BTreeMap<String, MetricValue>> = BTreeMap::new();
        for ((group, name), (_, metric)) in m.iter() {
            let value = match metric {
                Metric::Counter(c) => MetricValue::Counter(c.get()),
                Metric::Gauge(g) => MetricValue::Gauge(g.get()),
                Metric::Timer(t) => {
                    let (count, total, max) = t.get();
                    MetricValue::Timer { count, total_ms: total.as_secs_f64() * 1e3, max_ms: max.as_secs_f64() * 1e3 }
                }
            };
            out.entry(group.clone()).or_default().insert(name.clone(), value);
        }
        out
    }

    /// Every metric with its group's kind and labels.
    pub fn samples(&self) -> Vec<Sample> {
        let m = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .map(|((_, name), (group, metric))| Sample {
                group: group.clone(),
                name: name.clone(),
                value: match metric {
                    Metric::Counter(c) => SampleValue::Counter { value: c.get() },
                    Metric::Gauge(g) => SampleValue::Gauge { value: g.get() },
                    Metric::Timer(t) => {
                        let (count, total, max) = t.get();
                        SampleValue::Timer {
                            count,
                            sum_seconds: total.as_secs_f64(),
                            max_seconds: max.as_secs_f64(),
                            buckets: t.buckets(),
                        }
                    }
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_share_values_with_the_snapshot() {
        let r = MetricsRegistry::new();
        r.counter("task.Partition 0", "messages").add(3);
        r.counter("task.Partition 0", "messages").inc();
        r.gauge("container", "lag").set(-2);
        r.timer("container", "commit").record(Duration::from_millis(4));
        let s = r.snapshot();
        assert_eq!(s["task.Partition 0"]["messages"], MetricValue::Counter(4));
        assert_eq!(s["container"]["lag"], MetricValue::Gauge(-2));
        assert!(matches!(s["container"]["commit"], MetricValue::Timer { count: 1, .. }));
    }

    #[test]
    fn groups_keep_the_snapshot_names_and_carry_labels() {
        let r = MetricsRegistry::new();
        let ssp = SystemStreamPartition::parse("log.words[2]").unwrap();
        r.counter(Group::input(&ssp), "messages-processed").add(7);
        r.gauge(Group::store("Partition 0", "counts"), "restored-records").set(5);
        r.timer(Group::task("Partition 1"), "process").record(Duration::from_micros(700));
        let s = r.snapshot();
        assert_eq!(s["input.log.words[2]"]["messages-processed"], MetricValue::Counter(7));
        assert_eq!(s["store.Partition 0.counts"]["restored-records"], MetricValue::Gauge(5));
        let samples = r.samples();
        let input = samples.iter().find(|x| x.group.kind == "input").unwrap();
        assert_eq!(input.group.label("partition"), Some("2"));
        assert_eq!(input.value, SampleValue::Counter { value: 7 });
        let timer = samples.iter().find(|x| x.name == "process").unwrap();
        let SampleValue::Timer { count: 1, buckets, .. } = &timer.value else { panic!("{timer:?}") };
        // 0.7 ms lies in the (0.5 ms, 1 ms] bucket.
        assert_eq!(buckets[3], 1);
        assert_eq!(buckets.iter().sum::<u64>(), 1);
        // Samples survive the trip a `process` container makes to its supervisor.
        let json = serde_json::to_string(&samples).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Sample>>(&json).unwrap(), samples);
    }
}
