//! Metrics handles tasks and the runtime update on the hot path.
//!
//! A [`MetricsRegistry`] holds named counters, gauges and timers in groups
//! (e.g. `task.Partition 0`). Handles are cheap clones around atomics, so
//! updating one never locks; reporters (a log line, a metrics stream, later a
//! Prometheus endpoint) read [`MetricsRegistry::snapshot`] from any thread
//! without the tasks knowing.

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

/// Durations of an operation: count, total and maximum since start.
#[derive(Clone, Default, Debug)]
pub struct Timer(Arc<TimerCells>);

#[derive(Default, Debug)]
struct TimerCells {
    count: AtomicU64,
    total_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Timer {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0.total_ns.fetch_add(ns, Ordering::Relaxed);
        self.0.max_ns.fetch_max(ns, Ordering::Relaxed);
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

#[derive(Clone)]
enum Metric {
    Counter(Counter),
    Gauge(Gauge),
    Timer(Timer),
}

/// Named metrics in groups, shared by a container's tasks and reporters.
#[derive(Clone, Default)]
pub struct MetricsRegistry {
    metrics: Arc<Mutex<BTreeMap<(String, String), Metric>>>,
}

impl MetricsRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        MetricsRegistry::default()
    }

    fn get_or_insert(&self, group: &str, name: &str, make: impl FnOnce() -> Metric) -> Metric {
        let mut m = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        m.entry((group.to_owned(), name.to_owned())).or_insert_with(make).clone()
    }

    /// The counter `group`/`name`, created on first use.
    pub fn counter(&self, group: &str, name: &str) -> Counter {
        match self.get_or_insert(group, name, || Metric::Counter(Counter::default())) {
            Metric::Counter(c) => c,
            _ => Counter::default(), // a name reused with another kind: detached, never reported
        }
    }

    /// The gauge `group`/`name`, created on first use.
    pub fn gauge(&self, group: &str, name: &str) -> Gauge {
        match self.get_or_insert(group, name, || Metric::Gauge(Gauge::default())) {
            Metric::Gauge(g) => g,
            _ => Gauge::default(),
        }
    }

    /// The timer `group`/`name`, created on first use.
    pub fn timer(&self, group: &str, name: &str) -> Timer {
        match self.get_or_insert(group, name, || Metric::Timer(Timer::default())) {
            Metric::Timer(t) => t,
            _ => Timer::default(),
        }
    }

    /// Every metric's current value: group -> name -> value.
    pub fn snapshot(&self) -> BTreeMap<String, BTreeMap<String, MetricValue>> {
        let m = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: BTreeMap<String, BTreeMap<String, MetricValue>> = BTreeMap::new();
        for ((group, name), metric) in m.iter() {
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
}
