//! The job's configuration, validated and typed once at start-up.
//!
//! Everything the container needs is resolved here (per-stream settings
//! with their system defaults, stores, policies), so that a config mistake
//! stops the job before it touches any data, with the key named.

use crate::schema;
use gregor_api::config::invalid;
use gregor_api::{Config, ConfigError, SystemStream};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where an input without a checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetDefault {
    /// The oldest retained message.
    Oldest,
    /// Only messages written after start-up.
    Upcoming,
}

/// An input stream and its settings.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// The stream.
    pub stream: SystemStream,
    /// Key serde name.
    pub key_serde: String,
    /// Message serde name.
    pub msg_serde: String,
    /// Start without a checkpoint.
    pub offset_default: OffsetDefault,
    /// Ignore the checkpoint.
    pub reset_offset: bool,
    /// Read to the end before other inputs.
    pub bootstrap: bool,
    /// Higher is read first.
    pub priority: i64,
    /// Ends at its newest offset as of start-up.
    pub bounded: bool,
    /// Also written by the job (a repartitioning step).
    pub intermediate: bool,
    /// Under exactly-once without transactions, what the job sends here is
    /// stamped and re-sent copies are dropped by the runtime
    /// (`streams.<id>.stamped`, default true; see `gregor_runtime::sequences`).
    pub stamped: bool,
}

/// Store engines.
#[derive(Debug, Clone)]
pub enum StoreEngine {
    /// In memory, rebuilt from the changelog on start.
    Memory,
    /// RocksDB on local disk, with snapshots at commits.
    RocksDb(gregor_kv::RocksOptions),
}

/// A store and its settings.
#[derive(Debug, Clone)]
pub struct StoreSpec {
    /// Name.
    pub name: String,
    /// Engine.
    pub engine: StoreEngine,
    /// Key serde name.
    pub key_serde: String,
    /// Value serde name.
    pub msg_serde: String,
    /// Changelog stream, if any.
    pub changelog: Option<SystemStream>,
    /// Write-back cache entries per task (`usize::MAX`: bounded by bytes only).
    pub cache_entries: usize,
    /// Write-back cache memory per container, shared by its tasks.
    pub cache_bytes: usize,
    /// Dirty entries written together (`usize::MAX` unless set: then at
    /// commits, evictions and the cache's dirty byte share only).
    pub write_batch_size: usize,
    /// Changelog records after which a commit takes a new local snapshot.
    pub snapshot_records: u64,
    /// Changelog records to replay from which RocksDB restores in bulk-load mode.
    pub bulk_restore_records: u64,
}

/// What happens to an input message that fails to deserialize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeserializationPolicy {
    /// Stop the job with an error naming stream, partition and offset.
    Fail,
    /// Skip it and count it.
    Drop,
    /// Send its bytes to this stream and go on.
    DeadLetter(SystemStream),
}

/// How input partitions become tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouper {
    /// `Partition N` gets partition N of every input.
    Partition,
    /// One task per input partition.
    Ssp,
}

/// A metrics reporter.
#[derive(Debug, Clone)]
pub struct ReporterSpec {
    /// Its name.
    pub name: String,
    /// `None` logs; `Some` sends to a stream.
    pub stream: Option<SystemStream>,
    /// Time between snapshots.
    pub interval: Duration,
}

/// The validated configuration of a job.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// The raw keys (tasks read their own from here).
    pub raw: Config,
    /// `job.name`.
    pub name: String,
    /// `job.id`.
    pub id: String,
    /// `job.container.count`.
    pub container_count: u32,
    /// Inputs, in `task.inputs` order.
    pub inputs: Vec<InputSpec>,
    /// Systems: name -> factory.
    pub systems: BTreeMap<String, String>,
    /// `job.default.system`.
    pub default_system: String,
    /// The checkpoint stream.
    pub checkpoint_stream: SystemStream,
    /// `task.commit.ms`.
    pub commit_interval: Duration,
    /// `task.processing.guarantee=exactly-once`: each commit's outputs,
    /// changelog writes and checkpoints become visible together or not at
    /// all (one transaction per container and commit interval).
    pub exactly_once: bool,
    /// `task.window.ms`.
    pub window_interval: Option<Duration>,
    /// Stores, by name.
    pub stores: Vec<StoreSpec>,
    /// Bad input messages.
    pub deserialization: DeserializationPolicy,
    /// Partition grouper.
    pub grouper: Grouper,
    /// Metrics reporters.
    pub reporters: Vec<ReporterSpec>,
    /// Buffered messages per input partition.
    pub max_buffered: usize,
    /// `job.logged.store.base.dir`: stores keep local state in
    /// `<state_dir>/<name>-<id>/<store>/<task>`.
    pub state_dir: std::path::PathBuf,
}

fn required<'a>(c: &'a Config, key: &str, hint: &str) -> Result<&'a str, ConfigError> {
    c.require(key, hint)
}

impl JobConfig {
    /// Validates `config` (accepting `app_keys` as the job's own) and types it.
    ///
    /// # Errors
    /// The first problem found, naming the key.
    pub fn new(config: Config, app_keys: &[&str]) -> Result<JobConfig, ConfigError> {
        schema::validate(&config, app_keys)?;
        let c = &config;
        let name = required(c, "job.name", "name the job, e.g. job.name=wordcount")?.to_owned();
        let id = c.get("job.id").unwrap_or("1").to_owned();
        let input_list = c.get_list("task.inputs");
        if input_list.is_empty() {
            return Err(ConfigError::Missing {
                key: "task.inputs".into(),
                hint: "list the input streams, e.g. task.inputs=log.words".into(),
            });
        }
        let mut systems = BTreeMap::new();
        for (k, v) in c.with_prefix("systems.") {
            if let Some(system) = k.strip_suffix(".factory") {
                systems.insert(system.to_owned(), v.to_owned());
            }
        }
        let mut inputs = Vec::new();
        for text in &input_list {
            let stream = SystemStream::parse(text).ok_or_else(|| invalid("task.inputs", text, "system.stream"))?;
            inputs.push(input_spec(c, stream)?);
        }
        let default_system =
            c.get("job.default.system").map_or_else(|| inputs[0].stream.system.to_string(), str::to_owned);
        let checkpoint_system = c.get("task.checkpoint.system").unwrap_or(&default_system).to_owned();
        let mut stores = Vec::new();
        let store_names: std::collections::BTreeSet<&str> =
            c.with_prefix("stores.").filter_map(|(k, _)| k.split_once('.').map(|(n, _)| n)).collect();
        for store in store_names {
            stores.push(store_spec(c, store)?);
        }
        let deserialization = match (
            c.get_bool("task.drop.deserialization.errors", false)?,
            c.get("task.deserialization.errors.stream"),
        ) {
            (true, Some(_)) => {
                return Err(ConfigError::Conflict(
                    "task.drop.deserialization.errors=true and task.deserialization.errors.stream: choose dropping or a dead-letter stream".into(),
                ));
            }
            (true, None) => DeserializationPolicy::Drop,
            (false, Some(s)) => DeserializationPolicy::DeadLetter(
                SystemStream::parse(s)
                    .ok_or_else(|| invalid("task.deserialization.errors.stream", s, "system.stream"))?,
            ),
            (false, None) => DeserializationPolicy::Fail,
        };
        let grouper = match c.get("job.systemstreampartition.grouper").unwrap_or("partition") {
            "ssp" => Grouper::Ssp,
            _ => Grouper::Partition,
        };
        let mut reporters = Vec::new();
        for r in c.get_list("metrics.reporters") {
            let factory_key = format!("metrics.reporter.{r}.factory");
            let factory = required(c, &factory_key, "set it to log or stream")?;
            let stream = if factory == "stream" {
                let key = format!("metrics.reporter.{r}.stream");
                let text = required(c, &key, "name the stream receiving snapshots, e.g. log.metrics")?;
                Some(SystemStream::parse(text).ok_or_else(|| invalid(&key, text, "system.stream"))?)
            } else {
                None
            };
            let secs = c.get_parsed::<u64>(&format!("metrics.reporter.{r}.interval"), "seconds")?.unwrap_or(60);
            reporters.push(ReporterSpec { name: r, stream, interval: Duration::from_secs(secs) });
        }
        // The default since exactly-once cost at most 15% (docs/benchmarks.md).
        let exactly_once = c.get("task.processing.guarantee") != Some("at-least-once");
        let job = JobConfig {
            checkpoint_stream: SystemStream::new(&checkpoint_system, &format!("__gregor-checkpoints-{name}-{id}")),
            container_count: c.get_parsed("job.container.count", "a positive integer")?.unwrap_or(1),
            // Under exactly-once outputs show at commits: a minute (Samza's
            // default) would hold every result back that long.
            commit_interval: c.get_millis("task.commit.ms", Duration::from_secs(if exactly_once { 1 } else { 60 }))?,
            exactly_once,
            window_interval: c
                .get_parsed::<u64>("task.window.ms", "a positive number of milliseconds")?
                .map(Duration::from_millis),
            max_buffered: c.get_parsed("task.max.buffered.messages", "a positive integer")?.unwrap_or(10_000),
            // The facade sets this key (from the embedded log's directory)
            // when the user did not; the runtime knows no system.
            state_dir: std::path::PathBuf::from(c.get("job.logged.store.base.dir").unwrap_or("gregor-state")),
            name,
            id,
            inputs,
            systems,
            default_system,
            stores,
            deserialization,
            grouper,
            reporters,
            raw: config,
        };
        job.check_systems()?;
        let mut changelogs: Vec<(&SystemStream, &str)> =
            job.stores.iter().filter_map(|s| s.changelog.as_ref().map(|c| (c, s.name.as_str()))).collect();
        changelogs.sort();
        if let Some(w) = changelogs.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(ConfigError::Conflict(format!(
                "stores '{}' and '{}' share the changelog {}; each store needs its own",
                w[0].1, w[1].1, w[0].0
            )));
        }
        Ok(job)
    }

    /// Every stream the job names must belong to a configured system.
    fn check_systems(&self) -> Result<(), ConfigError> {
        let mut named: Vec<(String, &SystemStream)> =
            self.inputs.iter().map(|i| ("task.inputs".to_owned(), &i.stream)).collect();
        for s in &self.stores {
            if let Some(cl) = &s.changelog {
                named.push((format!("stores.{}.changelog", s.name), cl));
            }
        }
        if let DeserializationPolicy::DeadLetter(s) = &self.deserialization {
            named.push(("task.deserialization.errors.stream".into(), s));
        }
        for r in &self.reporters {
            if let Some(s) = &r.stream {
                named.push((format!("metrics.reporter.{}.stream", r.name), s));
            }
        }
        named.push(("task.checkpoint.system".into(), &self.checkpoint_stream));
        for (key, stream) in named {
            if !self.systems.contains_key(&*stream.system) {
                return Err(ConfigError::Missing {
                    key: format!("systems.{}.factory", stream.system),
                    hint: format!(
                        "{key} uses system '{}'; define it, e.g. systems.{}.factory=log",
                        stream.system, stream.system
                    ),
                });
            }
        }
        Ok(())
    }

    /// `<job.name>-<job.id>`: the job's directory under `state_dir` (local
    /// stores, run lock, monitor file, `process` coordinator) and the prefix
    /// of its transactional ids.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.name, self.id)
    }

    /// `job.coordinator`: the execution mode (`local`, `process` or
    /// `zookeeper`; validated by the schema).
    pub fn coordinator(&self) -> &str {
        self.raw.get("job.coordinator").unwrap_or("local")
    }

    /// The job's own directory under `job.logged.store.base.dir`.
    pub fn job_dir(&self) -> std::path::PathBuf {
        self.state_dir.join(self.dir_name())
    }

    /// A per-stream setting: `streams.<id>.<suffix>` for the stream's id,
    /// else `systems.<system>.<suffix>`.
    pub fn stream_setting(&self, stream: &SystemStream, suffix: &str) -> Option<&str> {
        stream_setting(&self.raw, stream, suffix)
    }

    /// `streams.<id>.partitions` (or the system's default) of `stream`, if set.
    ///
    /// # Errors
    /// A value that is not a positive number, naming the key.
    pub fn stream_partitions(&self, stream: &SystemStream) -> Result<Option<u32>, ConfigError> {
        match self.stream_setting(stream, "partitions") {
            None => Ok(None),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(invalid(
                    &format!("streams.{}.partitions", stream_id(&self.raw, stream)),
                    v,
                    "a positive number of partitions",
                )),
            },
        }
    }

    /// The key and message serde names of any stream (inputs and outputs).
    pub fn serde_names(&self, stream: &SystemStream) -> (String, String) {
        serde_names(&self.raw, stream)
    }
}

/// The id of `stream` under `streams.*`: one whose `samza.physical.name`
/// (and system, if given) matches, else the stream name itself.
fn stream_id(c: &Config, stream: &SystemStream) -> String {
    for (k, v) in c.with_prefix("streams.") {
        if let Some(id) = k.strip_suffix(".samza.physical.name")
            && v == &*stream.stream
            && c.get(&format!("streams.{id}.samza.system")).is_none_or(|s| s == &*stream.system)
        {
            return id.to_owned();
        }
    }
    stream.stream.to_string()
}

fn stream_setting<'a>(c: &'a Config, stream: &SystemStream, suffix: &str) -> Option<&'a str> {
    let id = stream_id(c, stream);
    c.get(&format!("streams.{id}.{suffix}")).or_else(|| c.get(&format!("systems.{}.{suffix}", stream.system)))
}

fn serde_names(c: &Config, stream: &SystemStream) -> (String, String) {
    let key = stream_setting(c, stream, "samza.key.serde").unwrap_or("bytes").to_owned();
    let msg = stream_setting(c, stream, "samza.msg.serde").unwrap_or("bytes").to_owned();
    (key, msg)
}

fn input_spec(c: &Config, stream: SystemStream) -> Result<InputSpec, ConfigError> {
    let id = stream_id(c, &stream);
    let flag = |name: &str| c.get_bool(&format!("streams.{id}.samza.{name}"), false);
    let offset_default = match stream_setting(c, &stream, "samza.offset.default") {
        Some("oldest") => OffsetDefault::Oldest,
        _ => OffsetDefault::Upcoming,
    };
    let (key_serde, msg_serde) = serde_names(c, &stream);
    Ok(InputSpec {
        key_serde,
        msg_serde,
        offset_default,
        reset_offset: flag("reset.offset")?,
        bootstrap: flag("bootstrap")?,
        bounded: flag("bounded")?,
        intermediate: flag("intermediate")?,
        stamped: c.get_bool(&format!("streams.{id}.stamped"), true)?,
        priority: c.get_parsed(&format!("streams.{id}.samza.priority"), "an integer")?.unwrap_or(0),
        stream,
    })
}

fn store_spec(c: &Config, name: &str) -> Result<StoreSpec, ConfigError> {
    let k = |suffix: &str| format!("stores.{name}.{suffix}");
    let engine = match required(c, &k("factory"), "choose the store engine, e.g. rocksdb")? {
        "memory" => StoreEngine::Memory,
        "rocksdb" => {
            let d = gregor_kv::RocksOptions::default();
            let num = |suffix: &str, default: usize| -> Result<usize, ConfigError> {
                Ok(c.get_parsed(&k(suffix), "a positive number")?.unwrap_or(default))
            };
            StoreEngine::RocksDb(gregor_kv::RocksOptions {
                block_cache_bytes: num("container.cache.size.bytes", d.block_cache_bytes)?,
                write_buffer_bytes: num("container.write.buffer.size.bytes", d.write_buffer_bytes)?,
                write_buffers: c
                    .get_parsed(&k("rocksdb.num.write.buffers"), "a positive number")?
                    .unwrap_or(d.write_buffers),
                compression: c.get(&k("rocksdb.compression")).unwrap_or(&d.compression).to_owned(),
                block_size: num("rocksdb.block.size.bytes", d.block_size)?,
                compaction_style: c.get(&k("rocksdb.compaction.style")).unwrap_or(&d.compaction_style).to_owned(),
                max_open_files: c.get_parsed(&k("rocksdb.max.open.files"), "an integer")?.unwrap_or(d.max_open_files),
                ttl: c.get_parsed::<u64>(&k("rocksdb.ttl.ms"), "milliseconds")?.map(Duration::from_millis),
                wal: c.get_bool(&k("rocksdb.wal.enabled"), c.get(&k("changelog")).is_none())?,
                ingest_min_entries: num("rocksdb.ingest.min.entries", d.ingest_min_entries)?,
            })
        }
        other => return Err(invalid(&k("factory"), other, "rocksdb or memory")),
    };
    let changelog = match c.get(&k("changelog")) {
        None => None,
        Some(text) => Some(SystemStream::parse(text).ok_or_else(|| invalid(&k("changelog"), text, "system.stream"))?),
    };
    Ok(StoreSpec {
        name: name.to_owned(),
        engine,
        key_serde: required(c, &k("key.serde"), "name the serde of the store's keys, e.g. string")?.to_owned(),
        msg_serde: required(c, &k("msg.serde"), "name the serde of the store's values, e.g. long")?.to_owned(),
        changelog,
        cache_entries: c.get_parsed(&k("object.cache.size"), "a non-negative integer")?.unwrap_or(usize::MAX),
        cache_bytes: c.get_parsed(&k("cache.max.bytes"), "a positive number of bytes")?.unwrap_or(256 << 20),
        write_batch_size: c.get_parsed(&k("write.batch.size"), "a positive integer")?.unwrap_or(usize::MAX),
        snapshot_records: c.get_parsed(&k("snapshot.records"), "a positive integer")?.unwrap_or(1_000_000),
        bulk_restore_records: c.get_parsed(&k("restore.bulk.records"), "a positive integer")?.unwrap_or(50_000),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<JobConfig, ConfigError> {
        JobConfig::new(Config::from_properties(text, "t").unwrap(), &["app.key"])
    }

    #[test]
    fn resolves_stream_settings_with_system_defaults() {
        let job = parse(
            "job.name=wc\ntask.inputs=log.words,log.profiles\nsystems.log.factory=log\nsystems.log.samza.msg.serde=string\n\
             systems.log.samza.offset.default=oldest\nstreams.profiles.samza.bootstrap=true\nstreams.profiles.samza.msg.serde=json\n\
             stores.counts.factory=memory\nstores.counts.key.serde=string\nstores.counts.msg.serde=long\nstores.counts.changelog=log.counts-changelog\n",
        )
        .unwrap();
        assert_eq!(job.inputs[0].msg_serde, "string");
        assert_eq!(job.inputs[1].msg_serde, "json");
        assert!(job.inputs[1].bootstrap && !job.inputs[0].bootstrap);
        assert_eq!(job.inputs[0].offset_default, OffsetDefault::Oldest);
        assert_eq!(job.checkpoint_stream.to_string(), "log.__gregor-checkpoints-wc-1");
        assert_eq!(job.stores[0].changelog.as_ref().unwrap().to_string(), "log.counts-changelog");
        assert!(job.exactly_once, "the default guarantee");
        assert_eq!(job.commit_interval, Duration::from_secs(1), "exactly-once's default: outputs show at commits");
        let alo = parse(
            "job.name=wc\ntask.inputs=log.words\nsystems.log.factory=log\ntask.processing.guarantee=at-least-once\n",
        )
        .unwrap();
        assert!(!alo.exactly_once);
        assert_eq!(alo.commit_interval, Duration::from_secs(60), "Samza's default");
    }

    #[test]
    fn mistakes_name_the_key_and_the_fix() {
        let err = parse("task.inputs=log.w\nsystems.log.factory=log\n").unwrap_err().to_string();
        assert_eq!(err, "missing required config key 'job.name': name the job, e.g. job.name=wordcount");
        let err = parse("job.name=x\ntask.inputs=kafka.w\nsystems.log.factory=log\n").unwrap_err().to_string();
        assert!(err.contains("systems.kafka.factory"), "{err}");
        let err = parse("job.name=x\ntask.inputs=log.w\nsystems.log.factory=log\nstores.s.factory=memory\nstores.s.key.serde=string\n").unwrap_err().to_string();
        assert!(err.contains("stores.s.msg.serde"), "{err}");
        let err = parse("job.name=x\ntask.inputs=log.w\nsystems.log.factory=log\ntask.drop.deserialization.errors=true\ntask.deserialization.errors.stream=log.dlq\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("conflict"), "{err}");
    }

    #[test]
    fn stream_ids_map_to_physical_names() {
        let job = parse("job.name=x\ntask.inputs=log.PageViewEvent\nsystems.log.factory=log\nstreams.views.samza.system=log\nstreams.views.samza.physical.name=PageViewEvent\nstreams.views.samza.priority=3\n").unwrap();
        assert_eq!(job.inputs[0].priority, 3);
    }
}
