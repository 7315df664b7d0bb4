//! Every config key gregor knows, with its form and default: the single
//! source for validation (and for `docs/config.md`, which mirrors it).
//!
//! A key is matched against patterns segment by segment: `*` matches one
//! segment (a system, stream id, store or reporter name) and `**` the rest of
//! the key (client settings passed through to a system). Keys a job declares
//! for itself (`App::config_key`) are accepted as strings.

use gregor_api::config::invalid;
use gregor_api::{Config, ConfigError, SystemStream};

/// The form a value must have.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Any text.
    Text,
    /// `true` or `false`.
    Bool,
    /// A non-negative integer.
    Count,
    /// A positive integer.
    Positive,
    /// An integer (may be negative).
    Integer,
    /// `system.stream`.
    Stream,
    /// A comma-separated list of `system.stream`.
    StreamList,
    /// One of these words.
    OneOf(&'static [&'static str]),
}

/// One known key pattern.
pub struct Key {
    /// The pattern.
    pub pattern: &'static str,
    /// Its form.
    pub kind: Kind,
    /// Default, as documented.
    pub default: &'static str,
    /// What it means.
    pub doc: &'static str,
}

const fn key(pattern: &'static str, kind: Kind, default: &'static str, doc: &'static str) -> Key {
    Key { pattern, kind, default, doc }
}

/// The keys of the runtime (later layers add theirs here).
pub const KEYS: &[Key] = &[
    key("job.name", Kind::Text, "(required)", "Name of the job; names its checkpoint stream and state."),
    key("job.id", Kind::Text, "1", "Instance id, to run the same job twice side by side."),
    key("job.container.count", Kind::Positive, "1", "Number of containers the tasks are spread over."),
    key(
        "job.intermediate.stream.partitions",
        Kind::Positive,
        "the largest input's partition count",
        "Partitions of an intermediate stream (`samza.intermediate=true`) that gregor creates and whose `streams.<id>.partitions` is not set.",
    ),
    key(
        "job.default.system",
        Kind::Text,
        "system of the first input",
        "System for checkpoints, changelogs and metrics streams unless a key names another.",
    ),
    key(
        "job.systemstreampartition.grouper",
        Kind::OneOf(&["partition", "ssp"]),
        "partition",
        "`partition`: task `Partition N` gets partition N of every input; `ssp`: one task per input partition.",
    ),
    key(
        "job.coordinator",
        Kind::OneOf(&["local", "process", "zookeeper"]),
        "local",
        "Execution mode: `local` runs containers as threads of this process; `process` runs each container as a supervised child process, restarted when it fails; `zookeeper` makes every process of the job a processor that agrees with the others through ZooKeeper (docs/execution.md).",
    ),
    key(
        "job.coordinator.zk.connect",
        Kind::Text,
        "(required in `zookeeper` mode)",
        "ZooKeeper connect string, e.g. `zk1:2181,zk2:2181/chroot`.",
    ),
    key(
        "job.coordinator.zk.session.timeout.ms",
        Kind::Positive,
        "30000",
        "`zookeeper` mode: session timeout; a processor unheard of for this long loses its tasks, and it stops processing after half of it without contact.",
    ),
    key(
        "job.coordinator.zk.connection.timeout.ms",
        Kind::Positive,
        "60000",
        "`zookeeper` mode: how long to try to reach ZooKeeper at start before failing.",
    ),
    key(
        "job.debounce.time.ms",
        Kind::Count,
        "20000",
        "`zookeeper` mode: how long the leader waits after a membership change before publishing a new job model (so several processors joining together cause one rebalance).",
    ),
    key(
        "job.coordinator.monitor-partition-change.frequency.ms",
        Kind::Positive,
        "60000",
        "How often the inputs' partition counts are checked: in `zookeeper` mode the leader publishes a new job model on a change; in `local` and `process` modes the job fails with a message naming the stream (restart it to cover the new partitions).",
    ),
    key(
        "processor.id",
        Kind::Text,
        "<hostname>-<pid>",
        "`zookeeper` mode: this processor's id (unique among the live processors of the job; names its container in the job model).",
    ),
    key(
        "cluster-manager.container.retry.count",
        Kind::Count,
        "8",
        "Failures of one container tolerated within `retry.window.ms` before the job fails (`process` mode: any failure; `local` mode: failures of its streaming systems, e.g. a broker away).",
    ),
    key(
        "cluster-manager.container.cpu.cores",
        Kind::Text,
        "(no limit)",
        "`process` mode: CPU cores each container may use (cgroups; e.g. `0.5`, `2`); skipped with a warning where cgroups are not writable.",
    ),
    key(
        "cluster-manager.container.memory.mb",
        Kind::Positive,
        "(no limit)",
        "`process` mode: memory each container may use, MiB (cgroups; skipped with a warning where not writable).",
    ),
    key(
        "cluster-manager.container.retry.window.ms",
        Kind::Positive,
        "300000",
        "The window in which container failures are counted (`process` and `local` modes).",
    ),
    key("task.inputs", Kind::StreamList, "(required)", "Input streams, e.g. `log.words,log.other`."),
    key(
        "task.commit.ms",
        Kind::Count,
        "1000 (exactly-once), 60000 (at-least-once)",
        "Commit (flush outputs and stores, write checkpoints) at least this often. Under exactly-once, outputs become visible at commits.",
    ),
    key("task.window.ms", Kind::Positive, "(off)", "Call each task's `window` this often."),
    key(
        "task.processing.guarantee",
        Kind::OneOf(&["at-least-once", "exactly-once"]),
        "exactly-once",
        "`exactly-once`: each commit's outputs, changelog writes and checkpoints become visible to read-committed readers together, or not at all (on Kafka, without transactions: state and intermediate streams exact, outputs at-least-once). See guarantees.md.",
    ),
    key(
        "task.checkpoint.system",
        Kind::Text,
        "job.default.system",
        "System of the checkpoint stream `__gregor-checkpoints-<job.name>-<job.id>`.",
    ),
    key(
        "task.drop.deserialization.errors",
        Kind::Bool,
        "false",
        "Skip (and count) input messages that fail to deserialize instead of failing the job.",
    ),
    key(
        "task.deserialization.errors.stream",
        Kind::Stream,
        "(none)",
        "Send input messages that fail to deserialize, as they were, to this stream and go on.",
    ),
    key(
        "task.max.buffered.messages",
        Kind::Positive,
        "10000",
        "Messages buffered per input partition before its consumer pauses.",
    ),
    key(
        "systems.*.factory",
        Kind::Text,
        "(required per system)",
        "Implementation of the system: `log` is the embedded log, `kafka` Apache Kafka (docs/kafka.md), `memory` streams in this process's memory (docs/testing.md); a job can add kinds (`App::system_kind`). An unknown kind is an error listing the known ones.",
    ),
    key("systems.*.path", Kind::Text, "$GREGOR_DATA_DIR or ./gregor-data", "Data directory of a `log` system."),
    key(
        "systems.*.memory.namespace",
        Kind::Text,
        "default",
        "`memory` systems: the set of in-memory streams this system shares with every other `memory` system of the process that names the same namespace.",
    ),
    key(
        "systems.*.bootstrap.servers",
        Kind::Text,
        "(required for `kafka`)",
        "`kafka` systems: host:port of one or more brokers, comma-separated.",
    ),
    key(
        "systems.*.consumer.**",
        Kind::Text,
        "(librdkafka defaults)",
        "`kafka` systems: passed to librdkafka's consumer (and the admin) unchanged, e.g. `systems.kafka.consumer.security.protocol=SASL_SSL`; never logged.",
    ),
    key(
        "systems.*.producer.**",
        Kind::Text,
        "acks=all, enable.idempotence=true, compression.type=lz4, linger.ms=5",
        "`kafka` systems: passed to librdkafka's producer unchanged (overriding gregor's defaults); never logged. With `enable.idempotence=false`, `max.in.flight.requests.per.connection` is 1 and a larger value is refused (partitions must keep send order across retries; docs/kafka.md).",
    ),
    key(
        "systems.*.changelog.min.compaction.lag.ms",
        Kind::Positive,
        "14400000",
        "`kafka` systems: `min.compaction.lag.ms` of the changelog topics gregor creates (4 hours, as Samza): a restore after a crash is exact when it starts within this time.",
    ),
    key(
        "systems.*.replication.factor",
        Kind::Positive,
        "1",
        "`kafka` systems: replication factor of the topics gregor creates (changelogs, checkpoints, outputs); use 3 on a production cluster.",
    ),
    key("systems.*.samza.key.serde", Kind::Text, "bytes", "Default key serde of the system's streams."),
    key("systems.*.samza.msg.serde", Kind::Text, "bytes", "Default message serde of the system's streams."),
    key(
        "systems.*.samza.offset.default",
        Kind::OneOf(&["oldest", "upcoming"]),
        "upcoming",
        "Where inputs without a checkpoint start.",
    ),
    key("streams.*.samza.system", Kind::Text, "(from task.inputs)", "System of the stream with this id."),
    key("streams.*.samza.physical.name", Kind::Text, "the id", "Name of the stream in its system."),
    key("streams.*.samza.key.serde", Kind::Text, "system default", "Key serde of this stream."),
    key("streams.*.samza.msg.serde", Kind::Text, "system default", "Message serde of this stream."),
    key(
        "streams.*.samza.offset.default",
        Kind::OneOf(&["oldest", "upcoming"]),
        "system default",
        "Where this input starts without a checkpoint.",
    ),
    key(
        "streams.*.samza.reset.offset",
        Kind::Bool,
        "false",
        "Ignore this input's checkpoint and start at its default offset.",
    ),
    key(
        "streams.*.samza.bootstrap",
        Kind::Bool,
        "false",
        "Read this input to its end (as of start-up) before any other input.",
    ),
    key(
        "streams.*.samza.priority",
        Kind::Integer,
        "0",
        "Inputs with higher priority are read first when several have messages.",
    ),
    key("streams.*.samza.bounded", Kind::Bool, "false", "This input ends at its newest offset as of start-up."),
    key(
        "streams.*.samza.intermediate",
        Kind::Bool,
        "false",
        "This input is also written by the job (a repartitioning step): with --until-end it is read until every container has finished its other inputs and nothing more arrives.",
    ),
    key(
        "streams.*.stamped",
        Kind::Bool,
        "true",
        "Under exactly-once on a system without transactions (Kafka): stamp what the job sends to this input with a producer id and sequence number, and drop re-sent copies on reading. Stamps assume a task sends the same messages in the same order after a restart; set false for a stream whose messages identify themselves and whose readers drop copies (the Streams API does this for its intermediate streams).",
    ),
    key(
        "streams.*.partitions",
        Kind::Positive,
        "the job's task count",
        "Partitions of this output stream when gregor creates it.",
    ),
    key(
        "stores.*.factory",
        Kind::OneOf(&["rocksdb", "memory"]),
        "(required per store)",
        "Store engine: `rocksdb` (local state on disk, snapshots at commits) or `memory` (rebuilt from the changelog at every start).",
    ),
    key("stores.*.key.serde", Kind::Text, "(required per store)", "Serde of the store's keys."),
    key("stores.*.msg.serde", Kind::Text, "(required per store)", "Serde of the store's values."),
    key(
        "stores.*.changelog",
        Kind::Stream,
        "(none)",
        "Changelog stream `system.stream` that makes the store survive restarts.",
    ),
    key(
        "stores.*.cache.max.bytes",
        Kind::Positive,
        "268435456",
        "Memory of the store's write-back cache per container (keys, values and bookkeeping; shared by its tasks), bytes. The cache serves reads of the keys it holds and coalesces repeated writes to one engine write and one changelog record per flush.",
    ),
    key(
        "stores.*.object.cache.size",
        Kind::Count,
        "(no limit)",
        "Most entries in the store's write-back cache per task, in addition to `cache.max.bytes` (0 disables the cache: every read and write reaches the engine, and every change the changelog). In-memory stores have no separate cache; 0 still sends each change to the changelog at once.",
    ),
    key(
        "stores.*.write.batch.size",
        Kind::Positive,
        "(no limit)",
        "Also write dirty cache entries to the changelog (and the engine, unless it waits for the next snapshot: docs/state.md) once this many accumulate. Without it they are written at commits, on eviction, before scans, and (RocksDB stores) when they hold a quarter of `cache.max.bytes`: each changed key once per commit interval. A limit shortens the commit-time flush but writes hot keys more often.",
    ),
    key(
        "stores.*.snapshot.records",
        Kind::Positive,
        "1000000",
        "Local (RocksDB) stores with a changelog: a commit starts a new local snapshot (taken in the background) once the changelog grew by this many records since the last one (also at a clean shutdown, and hourly while the store changes). A restart on the same machine replays at most about this many records plus one commit interval's; a smaller value makes restarts faster and costs more background work.",
    ),
    key(
        "stores.*.restore.bulk.records",
        Kind::Positive,
        "50000",
        "RocksDB stores: a restore that replays at least this many changelog records loads them in bulk (sorted runs of up to 64 MB per store ingested as SST files, no compactions meanwhile), then reopens the database for normal use.",
    ),
    key(
        "stores.*.container.cache.size.bytes",
        Kind::Positive,
        "104857600",
        "RocksDB block cache of the store per container, shared by its tasks, bytes.",
    ),
    key(
        "stores.*.container.write.buffer.size.bytes",
        Kind::Positive,
        "33554432",
        "RocksDB memtable size per container, shared by its tasks, bytes.",
    ),
    key("stores.*.rocksdb.num.write.buffers", Kind::Positive, "3", "RocksDB memtables."),
    key(
        "stores.*.rocksdb.compression",
        Kind::OneOf(&["snappy", "none", "zlib", "bzip2", "lz4", "lz4hc", "zstd"]),
        "snappy",
        "RocksDB block compression.",
    ),
    key("stores.*.rocksdb.block.size.bytes", Kind::Positive, "4096", "RocksDB data block size, bytes."),
    key(
        "stores.*.rocksdb.compaction.style",
        Kind::OneOf(&["level", "universal", "fifo"]),
        "level",
        "RocksDB compaction style.",
    ),
    key("stores.*.rocksdb.max.open.files", Kind::Integer, "-1", "RocksDB open file limit (-1: unlimited)."),
    key(
        "stores.*.rocksdb.ingest.min.entries",
        Kind::Positive,
        "20000",
        "RocksDB stores: the cache's writes, gathered until the next commit (or until 4 x this many entries or 64 MB), are written as an SST file and ingested when they are at least this many entries (duplicates included), instead of inserted into the memtable (cheaper for large batches; never in stores with a TTL). A very small value makes many small files.",
    ),
    key(
        "stores.*.rocksdb.ttl.ms",
        Kind::Positive,
        "(none)",
        "Entries older than this may be dropped by RocksDB compaction (not from the changelog).",
    ),
    key(
        "stores.*.rocksdb.wal.enabled",
        Kind::Bool,
        "false with a changelog, else true",
        "RocksDB's own write-ahead log; the changelog makes it redundant.",
    ),
    key(
        "job.logged.store.base.dir",
        Kind::Text,
        "<path of job.default.system>/__state",
        "Directory of the stores' local state (RocksDB), per job, store and task.",
    ),
    key("metrics.reporters", Kind::Text, "(none)", "Comma-separated names of metrics reporters."),
    key(
        "metrics.reporter.*.factory",
        Kind::OneOf(&["log", "stream"]),
        "(required per reporter)",
        "`log` writes snapshots to the log; `stream` sends them as JSON to a stream.",
    ),
    key("metrics.reporter.*.stream", Kind::Stream, "(required for `stream`)", "Stream receiving the snapshots."),
    key("metrics.reporter.*.interval", Kind::Positive, "60", "Seconds between snapshots."),
    key(
        "metrics.http.address",
        Kind::Text,
        "127.0.0.1:0",
        "Where the job serves its status page (`/`), `/status.json` and Prometheus `/metrics`: `host:port` (port 0 picks a free one; the URL is logged and shown by `gregor job status`), or `off`. In `process` mode the supervisor serves every container's; in `zookeeper` mode each processor serves its own.",
    ),
];

fn matches(pattern: &str, key: &str) -> bool {
    let mut p = pattern.split('.');
    let mut k = key.split('.');
    loop {
        match (p.next(), k.next()) {
            (Some("**"), Some(_)) => return true,
            (Some("*"), Some(seg)) if !seg.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn check_kind(key: &str, value: &str, kind: Kind) -> Result<(), ConfigError> {
    let ok = match kind {
        Kind::Text => true,
        Kind::Bool => value == "true" || value == "false",
        Kind::Count => value.parse::<u64>().is_ok(),
        Kind::Positive => value.parse::<u64>().is_ok_and(|v| v > 0),
        Kind::Integer => value.parse::<i64>().is_ok(),
        Kind::Stream => SystemStream::parse(value).is_some(),
        Kind::StreamList => {
            let items: Vec<&str> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            !items.is_empty() && items.iter().all(|s| SystemStream::parse(s).is_some())
        }
        Kind::OneOf(words) => words.contains(&value),
    };
    if ok {
        return Ok(());
    }
    let expected = match kind {
        Kind::Text => "text".to_owned(),
        Kind::Bool => "true or false".to_owned(),
        Kind::Count => "a non-negative integer".to_owned(),
        Kind::Positive => "a positive integer".to_owned(),
        Kind::Integer => "an integer".to_owned(),
        Kind::Stream => "a stream as system.stream, e.g. log.words".to_owned(),
        Kind::StreamList => "comma-separated streams as system.stream, e.g. log.words,log.other".to_owned(),
        Kind::OneOf(words) => format!("one of: {}", words.join(", ")),
    };
    Err(invalid(key, value, &expected))
}

/// Checks every key of `config` against [`KEYS`] plus the job's own keys.
///
/// # Errors
/// The first unknown key (with the nearest known key as a suggestion) or
/// malformed value.
pub fn validate(config: &Config, app_keys: &[&str]) -> Result<(), ConfigError> {
    for (k, v) in config.iter() {
        if app_keys.contains(&k) {
            continue;
        }
        match KEYS.iter().find(|spec| matches(spec.pattern, k)) {
            Some(spec) => check_kind(k, v, spec.kind)?,
            None => return Err(ConfigError::Unknown { key: k.to_owned(), suggestion: suggest(k, app_keys) }),
        }
    }
    Ok(())
}

/// Keys of `config` that no pattern matches (a job's own keys, to a tool
/// that does not know the job).
pub fn unknown_keys(config: &Config) -> Vec<&str> {
    config.iter().map(|(k, _)| k).filter(|k| !KEYS.iter().any(|spec| matches(spec.pattern, k))).collect()
}

/// " (did you mean 'x'?)" for the known key nearest to `key`, if any is near.
fn suggest(key: &str, app_keys: &[&str]) -> String {
    let segments: Vec<&str> = key.split('.').collect();
    let concrete = KEYS.iter().map(|spec| {
        spec.pattern
            .split('.')
            .enumerate()
            .map(|(i, p)| if p == "*" { segments.get(i).copied().unwrap_or("*") } else { p })
            .collect::<Vec<_>>()
            .join(".")
    });
    let best = concrete
        .chain(app_keys.iter().map(|k| (*k).to_owned()))
        .map(|c| (strsim::levenshtein(key, &c), c))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d <= 3.max(key.len() / 5) => format!(" (did you mean '{c}'?)"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Config {
        let mut c = Config::new();
        for (k, v) in pairs {
            c.set(*k, *v);
        }
        c
    }

    #[test]
    fn known_keys_pass_and_bad_values_name_the_key() {
        let c = cfg(&[
            ("job.name", "wc"),
            ("task.inputs", "log.words, log.x"),
            ("stores.counts.object.cache.size", "0"),
            ("wordcount.output", "log.out"),
        ]);
        validate(&c, &["wordcount.output"]).unwrap();
        let err = validate(&cfg(&[("task.commit.ms", "soon")]), &[]).unwrap_err().to_string();
        assert_eq!(err, "config key 'task.commit.ms' has invalid value 'soon': expected a non-negative integer");
        let err = validate(&cfg(&[("task.inputs", "words")]), &[]).unwrap_err().to_string();
        assert!(err.contains("system.stream"), "{err}");
        let err = validate(&cfg(&[("stores.s.factory", "redis")]), &[]).unwrap_err().to_string();
        assert!(err.contains("one of: rocksdb, memory"), "{err}");
    }

    #[test]
    fn unknown_keys_suggest_the_nearest() {
        let err = validate(&cfg(&[("task.comit.ms", "5")]), &[]).unwrap_err().to_string();
        assert_eq!(err, "unknown config key 'task.comit.ms' (did you mean 'task.commit.ms'?)");
        let err = validate(&cfg(&[("stores.counts.chnagelog", "log.c")]), &[]).unwrap_err().to_string();
        assert!(err.contains("did you mean 'stores.counts.changelog'"), "{err}");
        let err = validate(&cfg(&[("completely.different", "x")]), &[]).unwrap_err().to_string();
        assert_eq!(err, "unknown config key 'completely.different'");
    }
}

#[cfg(test)]
mod docs_tests {
    /// docs/config.md documents every key the runtime accepts.
    #[test]
    fn every_key_is_documented() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/config.md");
        let docs = std::fs::read_to_string(path).unwrap();
        for key in super::KEYS {
            let shown = format!("`{}`", key.pattern.replace("**", "<key>").replace('*', "<name>"));
            assert!(docs.contains(&shown), "docs/config.md lacks {shown}");
        }
    }
}
