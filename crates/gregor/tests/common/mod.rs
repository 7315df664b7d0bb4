//! Helpers for the facade's integration tests: a data directory with the
//! embedded log, configs, and readers of output streams.
#![allow(dead_code)]

use gregor::Config;
use gregor_log::{Log, PartitionReader, Record, StreamConfig};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

pub fn config(dir: &Path, text: &str) -> Config {
    let mut c = Config::from_properties(text, "test").unwrap();
    c.set("systems.log.factory", "log");
    c.set("systems.log.path", dir.display().to_string());
    c.set("systems.log.samza.offset.default", "oldest");
    c
}

/// A Streams API application `name` under test over the in-memory system,
/// at-least-once (the in-memory system has no transactions), with `extra`
/// config lines.
pub fn streams_job(
    name: &str,
    extra: &str,
    describe: impl Fn(&mut gregor::streams::StreamApp) -> Result<(), gregor::TaskError> + Send + Sync + 'static,
) -> Result<gregor::testing::TestJob<gregor::streams::GraphTask>, gregor::JobError> {
    let text = format!(
        "job.name={name}\ntask.processing.guarantee=at-least-once\nsystems.log.factory=log\n\
         systems.log.samza.offset.default=oldest\n{extra}"
    );
    gregor::testing::TestJob::new(gregor::streams::app(name, describe), Config::from_properties(&text, "test").unwrap())
}

/// A counter summed over container 0's metric groups (its tasks).
pub fn counter<T: gregor::StreamTask>(job: &gregor::testing::TestJob<T>, name: &str) -> u64 {
    let metrics = job.metrics("0").unwrap();
    let value =
        |v: &gregor::testing::MetricValue| if let gregor::testing::MetricValue::Counter(n) = v { *n } else { 0 };
    metrics.values().filter_map(|g| g.get(name)).map(value).sum()
}

pub fn no_signal() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

/// Creates `stream` with `partitions` partitions and appends `(key, value)`
/// messages to the given partitions.
pub fn produce(dir: &Path, stream: &str, partitions: u32, messages: &[(u32, Option<&str>, &str)]) {
    let log = Log::open(dir).unwrap();
    let s = match log.stream(stream) {
        Ok(s) => s,
        Err(_) => log.create_stream(stream, StreamConfig::new(partitions)).unwrap(),
    };
    for (p, k, v) in messages {
        s.append(*p, &[Record { key: k.map(str::as_bytes), ..Record::value(v.as_bytes()) }]).unwrap();
    }
}

/// (partition, offset, key, value) of every message of a stream.
pub fn read(dir: &Path, stream: &str) -> Vec<(u32, u64, Option<String>, Option<String>)> {
    let log = Log::open(dir).unwrap();
    let s = log.stream(stream).unwrap();
    let mut out = Vec::new();
    for p in 0..s.partition_count() {
        let part = s.partition(p).unwrap();
        let end = part.next_offset().unwrap();
        let mut r = PartitionReader::new(part.clone(), part.oldest_offset().unwrap());
        while r.next_offset() < end {
            for m in r.poll(1 << 20).unwrap().messages() {
                let m = m.unwrap();
                let text = |b: Option<bytes::Bytes>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
                out.push((p, m.offset, text(m.key), text(m.value)));
            }
        }
    }
    out
}
