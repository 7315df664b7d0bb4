//! The Prometheus text format of a job's metrics (through the
//! `prometheus-client` crate's encoder), from registry samples.
//!
//! Names: `gregor_<group kind>_<metric name>`, with `-` turned into `_`;
//! counters end in `_total`, timers are histograms in seconds
//! (`_seconds_bucket/_sum/_count`, plus a `_seconds_max` gauge), gauges
//! named `*-ms` are exported in seconds (`*_seconds`). Labels: `job`,
//! `job_id`, `container`, then the group's own (`task`, `system`, `stream`,
//! `partition`, `store`). A pure function: it never does I/O.

use gregor_api::metrics::{Sample, SampleValue, TIMER_BUCKETS};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::collections::BTreeMap;

/// Where samples came from: a container (its id becomes the `container`
/// label), or the job process itself (`None`: its groups carry their own
/// labels, e.g. the supervisor's restarts per container).
#[derive(Debug, Clone)]
pub struct Source {
    /// The container id, if the samples are one container's.
    pub container: Option<String>,
    /// Its metrics.
    pub samples: Vec<Sample>,
}

type Labels = Vec<(String, String)>;

#[derive(Debug)]
enum Values {
    Counter(Vec<(Labels, u64)>),
    Gauge(Vec<(Labels, f64)>),
    Histogram(Vec<(Labels, f64, u64, Vec<(f64, u64)>)>),
}

#[derive(Debug)]
struct Family {
    help: String,
    values: Values,
}

/// A Prometheus metric name part from a gregor name (`messages-processed`
/// -> `messages_processed`; anything outside `[a-zA-Z0-9_]` becomes `_`).
pub fn sanitize(name: &str) -> String {
    let mut out: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// What the help line says for a metric gregor itself reports.
fn help(kind: &str, name: &str) -> String {
    let known = match (kind, name) {
        ("input", "messages-processed") => "Messages of this input partition processed.",
        ("input", "lag") => "Messages in the partition not yet processed (its next offset minus the container's).",
        ("input", "offset") => "Next offset the container processes in this partition.",
        ("task", "messages-processed") => "Messages this task processed.",
        ("task", "process") => "Time in the task's process() (one message in 64 is timed).",
        ("container", "sends") => "Messages the container sent.",
        ("container", "commits") => "Commits (outputs flushed, changelogs written, checkpoints written).",
        ("container", "commit") => "Duration of a commit.",
        ("container", "last-commit-timestamp-ms") => "When the container last committed (Unix time).",
        ("container", "deserialization-errors") => "Messages that could not be deserialized.",
        ("container", "model-version") => "Version of the job model the container runs.",
        ("container", "restarts") => "Times the container was restarted after a failure.",
        ("store", "restore-target-records") => "Changelog records the store's restore replays.",
        ("store", "restore-done-records") => "Changelog records the store's restore has replayed so far.",
        ("store", "restore-done-bytes") => "Bytes of changelog the store's restore has replayed so far.",
        ("store", "entries") => "Keys with a value in the store (RocksDB: its estimate), as of the last commit.",
        ("store", "restored-records") => "Changelog records replayed by the store's last restore.",
        ("store", "restore-ms") => "Duration of the store's last restore.",
        _ => "",
    };
    if known.is_empty() { format!("{kind} metric '{name}' (reported by the job)") } else { known.to_owned() }
}

/// The Prometheus text exposition of `sources` for job `job`-`job_id`.
pub fn render(job: &str, job_id: &str, sources: &[Source]) -> String {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for source in sources {
        for sample in &source.samples {
            let mut labels: Labels = vec![("job".into(), job.into()), ("job_id".into(), job_id.into())];
            if let Some(c) = &source.container {
                labels.push(("container".into(), c.clone()));
            }
            labels.extend(sample.group.labels.iter().map(|(k, v)| (sanitize(k), v.clone())));
            let base = format!("gregor_{}_{}", sanitize(&sample.group.kind), sanitize(&sample.name));
            let help = help(&sample.group.kind, &sample.name);
            match &sample.value {
                SampleValue::Counter { value } => {
                    let family = families
                        .entry(format!("{base}_total"))
                        .or_insert_with(|| Family { help: help.clone(), values: Values::Counter(Vec::new()) });
                    if let Values::Counter(v) = &mut family.values {
                        v.push((labels, *value));
                    }
                }
                SampleValue::Gauge { value } => {
                    let (name, value) = match base.strip_suffix("_ms") {
                        Some(stem) => (format!("{stem}_seconds"), *value as f64 / 1e3),
                        None => (base, *value as f64),
                    };
                    let family = families
                        .entry(name)
                        .or_insert_with(|| Family { help: help.clone(), values: Values::Gauge(Vec::new()) });
                    if let Values::Gauge(v) = &mut family.values {
                        v.push((labels, value));
                    }
                }
                SampleValue::Timer { count, sum_seconds, max_seconds, buckets } => {
                    let family = families
                        .entry(format!("{base}_seconds"))
                        .or_insert_with(|| Family { help: help.clone(), values: Values::Histogram(Vec::new()) });
                    if let Values::Histogram(v) = &mut family.values {
                        let bounds = TIMER_BUCKETS.iter().copied().chain([f64::INFINITY]);
                        v.push((labels.clone(), *sum_seconds, *count, bounds.zip(buckets.iter().copied()).collect()));
                    }
                    let family = families.entry(format!("{base}_seconds_max")).or_insert_with(|| Family {
                        help: format!("Largest recorded: {help}"),
                        values: Values::Gauge(Vec::new()),
                    });
                    if let Values::Gauge(v) = &mut family.values {
                        v.push((labels, *max_seconds));
                    }
                }
            }
        }
    }
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Families(families)));
    let mut out = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug here.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// The families of one scrape, handed to the encoder as a collector.
#[derive(Debug)]
struct Families(BTreeMap<String, Family>);

impl prometheus_client::collector::Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        for (name, family) in &self.0 {
            encode_family(&mut encoder, name, family)?;
        }
        Ok(())
    }
}

fn encode_family(encoder: &mut DescriptorEncoder, name: &str, family: &Family) -> std::fmt::Result {
    {
        match &family.values {
            Values::Counter(values) => {
                // The encoder appends `_total` itself.
                let stem = name.strip_suffix("_total").unwrap_or(name);
                let mut metric = encoder.encode_descriptor(stem, &family.help, None, MetricType::Counter)?;
                for (labels, v) in values {
                    ConstCounter::new(*v).encode(metric.encode_family(labels)?)?;
                }
            }
            Values::Gauge(values) => {
                let mut metric = encoder.encode_descriptor(name, &family.help, None, MetricType::Gauge)?;
                for (labels, v) in values {
                    ConstGauge::new(*v).encode(metric.encode_family(labels)?)?;
                }
            }
            Values::Histogram(values) => {
                let mut metric = encoder.encode_descriptor(name, &family.help, None, MetricType::Histogram)?;
                for (labels, sum, count, buckets) in values {
                    metric.encode_family(labels)?.encode_histogram::<Labels>(*sum, *count, buckets, None)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_api::{Group, MetricsRegistry, SystemStreamPartition};
    use std::time::Duration;

    #[test]
    fn names_labels_and_units_follow_prometheus_conventions() {
        let r = MetricsRegistry::new();
        let ssp = SystemStreamPartition::parse("log.words[1]").unwrap();
        r.counter(Group::input(&ssp), "messages-processed").add(42);
        r.gauge(Group::input(&ssp), "lag").set(7);
        r.gauge("container", "last-commit-timestamp-ms").set(1_500);
        r.timer("container", "commit").record(Duration::from_millis(3));
        r.counter(Group::task("Partition 1"), "bad words!").inc();
        let text = render("wordcount", "1", &[Source { container: Some("0".into()), samples: r.samples() }]);
        let lines: Vec<&str> = text.lines().collect();
        let has = |l: &str| lines.contains(&l);
        assert!(
            has(
                r#"gregor_input_messages_processed_total{job="wordcount",job_id="1",container="0",system="log",stream="words",partition="1"} 42"#
            ),
            "{text}"
        );
        assert!(has("# TYPE gregor_input_messages_processed counter"), "{text}");
        assert!(
            has(
                r#"gregor_input_lag{job="wordcount",job_id="1",container="0",system="log",stream="words",partition="1"} 7.0"#
            ),
            "{text}"
        );
        assert!(
            has(r#"gregor_container_last_commit_timestamp_seconds{job="wordcount",job_id="1",container="0"} 1.5"#),
            "{text}"
        );
        assert!(has("# TYPE gregor_container_commit_seconds histogram"), "{text}");
        assert!(
            has(r#"gregor_container_commit_seconds_bucket{le="0.005",job="wordcount",job_id="1",container="0"} 1"#),
            "{text}"
        );
        assert!(has(r#"gregor_container_commit_seconds_count{job="wordcount",job_id="1",container="0"} 1"#), "{text}");
        assert!(
            has(r#"gregor_task_bad_words__total{job="wordcount",job_id="1",container="0",task="Partition 1"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn one_family_per_name_across_containers() {
        let (a, b) = (MetricsRegistry::new(), MetricsRegistry::new());
        a.counter("container", "commits").add(2);
        b.counter("container", "commits").add(3);
        let sources = [
            Source { container: Some("0".into()), samples: a.samples() },
            Source { container: Some("1".into()), samples: b.samples() },
        ];
        let text = render("j", "1", &sources);
        assert_eq!(text.matches("# TYPE gregor_container_commits counter").count(), 1, "{text}");
        assert!(text.contains(r#"gregor_container_commits_total{job="j",job_id="1",container="1"} 3"#), "{text}");
    }
}
