//! The embedded log as a gregor system (`systems.<name>.factory=log`).
//!
//! `systems.<name>.path` names the data directory (default: `$GREGOR_DATA_DIR`,
//! else `./gregor-data`). All containers of a process share one [`Log`] per
//! directory, with background maintenance (interval fsyncs, retention,
//! compaction) running while any of them uses it.
//!
//! The producer encodes sends straight into each partition's next batch (up
//! to 5000 messages or 1 MiB) and appends a batch when it fills and at
//! `flush`; the consumer reads in 128 KiB polls per partition (about a
//! thousand small messages: what the container buffers stays in the CPU's
//! caches, which measured faster than larger polls) and sleeps on all its
//! partitions at once when idle.

use crate::txn::CommittedFilter;
use crate::{CleanupPolicy, Entry, Log, LogError, Maintenance, MaintenanceOptions, PartitionReader, StreamConfig};
use producer::LogProducer;

mod producer;
use bytes::Bytes;
use gregor_api::system::{
    PartitionOffsets, StreamKind, SystemAdmin, SystemConsumer, SystemError, SystemFactory, SystemProducer,
};
use gregor_api::{Config, ConfigError, RawMessage, StartOffset, SystemStream, SystemStreamPartition};
use hashbrown::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The default data directory: `$GREGOR_DATA_DIR`, else `./gregor-data`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("GREGOR_DATA_DIR").map_or_else(|| PathBuf::from("./gregor-data"), PathBuf::from)
}

struct Shared {
    log: Arc<Log>,
    _maintenance: Option<Maintenance>,
}

/// Opens (or shares) the log at `path` with maintenance running.
fn shared_log(path: &Path) -> Result<Arc<Shared>, LogError> {
    static OPEN: Mutex<Vec<(PathBuf, Weak<Shared>)>> = Mutex::new(Vec::new());
    let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    open.retain(|(_, w)| w.strong_count() > 0);
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    if let Some(shared) = open.iter().find(|(p, _)| *p == canonical).and_then(|(_, w)| w.upgrade()) {
        return Ok(shared);
    }
    let log = Arc::new(Log::open(path)?);
    let maintenance = log.start_maintenance(MaintenanceOptions::default());
    let shared = Arc::new(Shared { log, _maintenance: Some(maintenance) });
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    open.push((canonical, Arc::downgrade(&shared)));
    Ok(shared)
}

fn sys_err(context: impl Into<String>, e: impl std::fmt::Display) -> SystemError {
    SystemError::other(context, e)
}

fn to_system_error(e: LogError, stream: &SystemStream) -> SystemError {
    match e {
        LogError::StreamNotFound { .. } => SystemError::StreamNotFound {
            stream: stream.clone(),
            hint: format!(" (create it with `gregor stream create {} --partitions N`)", stream.stream),
        },
        LogError::OffsetOutOfRange { partition, requested, oldest, next, .. } => {
            SystemError::OffsetOutOfRange { ssp: stream.partition(partition), requested, oldest, next }
        }
        other => sys_err(format!("log system, stream {stream}"), other),
    }
}

/// Opens one partition of a stream of the shared log.
fn partition(shared: &Shared, ssp: &SystemStreamPartition) -> Result<Arc<crate::Partition>, SystemError> {
    shared
        .log
        .stream(&ssp.stream.stream)
        .and_then(|s| s.partition(ssp.partition))
        .map_err(|e| to_system_error(e, &ssp.stream))
}

/// The embedded log as a system.
pub struct LogSystemFactory {
    shared: Arc<Shared>,
}

impl LogSystemFactory {
    /// The system called `name` as configured in `config`.
    ///
    /// # Errors
    /// If the data directory cannot be used.
    pub fn from_config(config: &Config, name: &str) -> Result<Self, ConfigError> {
        let key = format!("systems.{name}.path");
        let path = config.get(&key).map_or_else(default_data_dir, PathBuf::from);
        Self::open(&path).map_err(|e| {
            gregor_api::config::invalid(&key, &path.display().to_string(), &format!("a usable data directory ({e})"))
        })
    }

    /// The system over the data directory `path`.
    ///
    /// # Errors
    /// If the directory cannot be used.
    pub fn open(path: &Path) -> Result<Self, LogError> {
        Ok(LogSystemFactory { shared: shared_log(path)? })
    }

    /// The system over a log the caller already opened, without background
    /// maintenance (for short-lived tools such as the CLI).
    pub fn from_log(log: Arc<Log>) -> Self {
        LogSystemFactory { shared: Arc::new(Shared { log, _maintenance: None }) }
    }

    /// The underlying log.
    pub fn log(&self) -> &Arc<Log> {
        &self.shared.log
    }
}

impl SystemFactory for LogSystemFactory {
    fn admin(&self) -> Result<Arc<dyn SystemAdmin>, SystemError> {
        Ok(Arc::new(LogAdmin { shared: self.shared.clone() }))
    }

    fn consumer(&self) -> Result<Box<dyn SystemConsumer>, SystemError> {
        Ok(Box::new(LogConsumer {
            shared: self.shared.clone(),
            readers: Vec::new(),
            index: HashMap::new(),
            next: 0,
            read_committed: true,
        }))
    }

    fn producer(&self) -> Result<Box<dyn SystemProducer>, SystemError> {
        Ok(Box::new(LogProducer::new(self.shared.clone())))
    }
}

struct LogAdmin {
    shared: Arc<Shared>,
}

impl SystemAdmin for LogAdmin {
    fn partition_count(&self, stream: &SystemStream) -> Result<u32, SystemError> {
        let s = self.shared.log.stream(&stream.stream).map_err(|e| to_system_error(e, stream))?;
        Ok(s.partition_count())
    }

    fn offsets(&self, ssp: &SystemStreamPartition) -> Result<PartitionOffsets, SystemError> {
        let p = partition(&self.shared, ssp)?;
        let (oldest, next) = (p.oldest_offset(), p.next_offset());
        Ok(PartitionOffsets {
            oldest: oldest.map_err(|e| to_system_error(e, &ssp.stream))?,
            next: next.map_err(|e| to_system_error(e, &ssp.stream))?,
        })
    }

    fn ensure_stream(&self, stream: &SystemStream, partitions: u32, kind: StreamKind) -> Result<(), SystemError> {
        let log = &self.shared.log;
        let existing = match log.stream(&stream.stream) {
            Ok(s) => s,
            Err(LogError::StreamNotFound { .. }) => {
                let config = match kind {
                    StreamKind::Regular => StreamConfig::new(partitions),
                    StreamKind::Compacted => StreamConfig::compacted(partitions),
                    StreamKind::Changelog => {
                        StreamConfig { compaction_bounded: true, ..StreamConfig::compacted(partitions) }
                    }
                };
                match log.create_stream(&stream.stream, config) {
                    Ok(_) => {
                        tracing::info!(%stream, partitions, ?kind, "created stream");
                        return Ok(());
                    }
                    Err(LogError::StreamExists { .. }) => {
                        log.stream(&stream.stream).map_err(|e| to_system_error(e, stream))?
                    }
                    Err(e) => return Err(to_system_error(e, stream)),
                }
            }
            Err(e) => return Err(to_system_error(e, stream)),
        };
        if existing.partition_count() != partitions {
            return Err(sys_err(
                format!("stream {stream}"),
                format!("has {} partitions, but the job needs {partitions}", existing.partition_count()),
            ));
        }
        if kind != StreamKind::Regular && existing.config().cleanup_policy != CleanupPolicy::Compact {
            return Err(sys_err(
                format!("stream {stream}"),
                "must be compacted (it holds changelogs or checkpoints) but was created without --compact",
            ));
        }
        Ok(())
    }

    fn set_compaction_limit(&self, ssp: &SystemStreamPartition, offset: u64) -> Result<(), SystemError> {
        partition(&self.shared, ssp)?.set_compaction_limit(offset).map_err(|e| to_system_error(e, &ssp.stream))
    }

    /// Takes over (and so ends the open transaction of) every producer in
    /// `<data dir>/.transactions/` whose id is `prefix` and a suffix `which`
    /// accepts.
    fn recover_transactions(&self, prefix: &str, which: &dyn Fn(&str) -> bool) -> Result<usize, SystemError> {
        let dir = self.shared.log.root().join(".transactions");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(SystemError::other(format!("reading {}", dir.display()), e)),
        };
        let mut found = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let wanted = |id: &&str| id.strip_prefix(prefix).is_some_and(which);
            let Some(id) = name.strip_suffix(".json").filter(wanted) else { continue };
            crate::txn::Coordinator::init(self.shared.log.clone(), id)
                .map_err(|e| SystemError::other(format!("recovering transactions of '{id}'"), e))?;
            found += 1;
        }
        Ok(found)
    }

    /// Skips whole segments and batches whose largest timestamp is older
    /// (and uses the sparse time index within a segment), then scans records.
    fn offset_for_time(&self, ssp: &SystemStreamPartition, timestamp_ms: i64) -> Result<u64, SystemError> {
        let p = partition(&self.shared, ssp)?;
        let err = |e| to_system_error(e, &ssp.stream);
        match p.offset_for_timestamp(timestamp_ms).map_err(err)? {
            Some(offset) => Ok(offset),
            None => p.next_offset().map_err(err),
        }
    }
}

/// A partition being read: its reader and, read-committed, what waits for
/// a transaction's marker.
struct Reading {
    ssp: SystemStreamPartition,
    reader: PartitionReader,
    held: CommittedFilter<RawMessage>,
}

impl Reading {
    /// Records were appended that this reader has not read (memory only).
    fn behind(&self) -> bool {
        self.reader.partition().next_offset().is_ok_and(|end| self.reader.next_offset() < end)
    }
}

struct LogConsumer {
    shared: Arc<Shared>,
    readers: Vec<Reading>,
    index: HashMap<SystemStreamPartition, usize>,
    /// Where the next poll starts, so no partition starves the others.
    next: usize,
    /// Records of aborted and open transactions are held back or dropped.
    read_committed: bool,
}

impl LogConsumer {
    const POLL_BYTES: usize = 1 << 17;
    /// Polls in a row (of `POLL_BYTES` per partition) while everything read
    /// is held for a marker, before the caller gets control back.
    const MAX_HELD_ROUNDS: usize = 256;

    fn poll_once(
        &mut self,
        wants: &dyn Fn(&SystemStreamPartition) -> bool,
        deliver: &mut dyn FnMut(&SystemStreamPartition, RawMessage),
    ) -> Result<usize, SystemError> {
        let mut delivered = 0;
        let n = self.readers.len();
        for i in 0..n {
            let Reading { ssp, reader, held } = &mut self.readers[(self.next + i) % n];
            if !wants(ssp) {
                continue;
            }
            let fetch = match reader.poll(Self::POLL_BYTES) {
                Ok(f) => f,
                Err(LogError::OffsetOutOfRange { requested, oldest, .. }) if requested < oldest => {
                    tracing::warn!(%ssp, requested, oldest, "messages were deleted by retention before they were read; skipping to the oldest offset");
                    reader.seek(oldest);
                    continue;
                }
                Err(e) => return Err(to_system_error(e, &ssp.stream)),
            };
            for e in fetch.entries() {
                match e.map_err(|e| to_system_error(e, &ssp.stream))? {
                    Entry::Record(txn, r) => {
                        let (key, value) = (r.key.map(|k| fetch.share(k)), r.value.map(|v| fetch.share(v)));
                        let headers = if r.header_count == 0 {
                            gregor_api::system::Headers::default()
                        } else {
                            r.headers()
                                .map(|(n, v)| {
                                    (
                                        String::from_utf8_lossy(n).into_owned(),
                                        v.map_or_else(Bytes::new, |v| fetch.share(v)),
                                    )
                                })
                                .collect()
                        };
                        let m = RawMessage { offset: r.offset, timestamp: r.timestamp, key, value, headers };
                        // Nothing waits, nothing to wait for: straight through.
                        if !self.read_committed || (txn.is_none() && held.held() == 0) {
                            deliver(ssp, m);
                            delivered += 1;
                        } else {
                            held.push_record(txn, m);
                        }
                    }
                    Entry::Marker(stamp, marker) => held.push_marker(stamp, marker),
                }
                while let Some(m) = held.pop() {
                    deliver(ssp, m);
                    delivered += 1;
                }
            }
        }
        self.next = (self.next + 1) % n.max(1);
        Ok(delivered)
    }
}

impl SystemConsumer for LogConsumer {
    fn register(&mut self, ssp: &SystemStreamPartition, start: StartOffset) -> Result<(), SystemError> {
        let p = partition(&self.shared, ssp)?;
        let offset = match start {
            StartOffset::At(o) => {
                p.check_offset(o).map_err(|e| to_system_error(e, &ssp.stream))?;
                o
            }
            StartOffset::Oldest => p.oldest_offset().map_err(|e| to_system_error(e, &ssp.stream))?,
            StartOffset::Upcoming => p.next_offset().map_err(|e| to_system_error(e, &ssp.stream))?,
        };
        self.index.insert(ssp.clone(), self.readers.len());
        self.readers.push(Reading {
            ssp: ssp.clone(),
            reader: PartitionReader::new(p, offset),
            held: CommittedFilter::new(),
        });
        Ok(())
    }

    fn start(&mut self) -> Result<(), SystemError> {
        Ok(())
    }

    fn poll(
        &mut self,
        wants: &dyn Fn(&SystemStreamPartition) -> bool,
        deliver: &mut dyn FnMut(&SystemStreamPartition, RawMessage),
        timeout: Duration,
    ) -> Result<usize, SystemError> {
        let mut delivered = self.poll_once(wants, deliver)?;
        // All that was read may wait for a transaction's marker further on:
        // read on at once while a partition has unread records (waiting
        // would wait for an append, and a large transaction would be read
        // one poll per wait).
        let read_to = |c: &Self| c.readers.iter().map(|r| r.reader.next_offset()).sum::<u64>();
        let mut rounds = 0;
        while delivered == 0
            && rounds < Self::MAX_HELD_ROUNDS
            && self.readers.iter().any(|r| wants(&r.ssp) && r.behind())
        {
            let before = read_to(self);
            delivered = self.poll_once(wants, deliver)?;
            rounds += 1;
            if read_to(self) == before {
                break; // appended but not readable yet: wait for it below
            }
        }
        if delivered > 0 || timeout.is_zero() {
            return Ok(delivered);
        }
        let waiting: Vec<&PartitionReader> = self.readers.iter().filter(|r| wants(&r.ssp)).map(|r| &r.reader).collect();
        if waiting.is_empty() {
            return Ok(0);
        }
        PartitionReader::wait_any(&waiting, timeout);
        self.poll_once(wants, deliver)
    }

    fn position(&self, ssp: &SystemStreamPartition) -> Option<u64> {
        // Past everything delivered, dropped and decided; at the first record
        // still waiting for its transaction's marker.
        let r = &self.readers[*self.index.get(ssp)?];
        Some(r.held.front().map_or_else(|| r.reader.next_offset(), |m| m.offset))
    }

    fn read_uncommitted(&mut self) {
        self.read_committed = false;
    }

    fn end_hint(&self, ssp: &SystemStreamPartition) -> Option<u64> {
        // The partition's shared head: memory only.
        self.index.get(ssp).and_then(|&i| self.readers[i].reader.partition().next_offset().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;
    use gregor_api::system::SystemFactory;

    #[test]
    fn offset_for_time_finds_the_first_message_at_or_after_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path()).unwrap());
        // Small segments and batches: the lookup skips whole segments and batches.
        let config = StreamConfig { segment_bytes: 1024, ..StreamConfig::new(2) };
        let stream = log.create_stream("events", config).unwrap();
        let at = |ts: i64| Record { key: None, value: Some(b"payload"), timestamp: Some(ts), headers: &[] };
        for batch in 0..60i64 {
            // Offsets 3b..3b+2 at times 1000 + 10b, +1, +2.
            let records: Vec<Record<'_>> = (0..3).map(|i| at(1000 + 10 * batch + i)).collect();
            stream.append(0, &records).unwrap();
        }
        let admin = LogSystemFactory::from_log(log).admin().unwrap();
        let ssp = SystemStream::new("log", "events").partition(0);
        let lookup = |ts| admin.offset_for_time(&ssp, ts).unwrap();
        assert_eq!(lookup(i64::MIN), 0, "before everything: the oldest offset");
        assert_eq!(lookup(1000), 0);
        assert_eq!(lookup(1001), 1, "inside a batch");
        assert_eq!(lookup(1003), 3, "between batches: the next batch's first message");
        assert_eq!(lookup(1000 + 10 * 43 + 2), 43 * 3 + 2, "in a later segment");
        assert_eq!(lookup(1000 + 10 * 59 + 2), 179, "the newest message");
        assert_eq!(lookup(1000 + 10 * 59 + 3), 180, "after everything: the next offset");
        assert!(stream.partition(0).unwrap().segment_count().unwrap() > 3, "the data spans several segments");
        // An empty partition answers its next offset.
        let empty = SystemStream::new("log", "events").partition(1);
        assert_eq!(admin.offset_for_time(&empty, 0).unwrap(), 0);
        // A missing stream is named.
        let missing = SystemStream::new("log", "nope").partition(0);
        let err = admin.offset_for_time(&missing, 0).unwrap_err().to_string();
        assert!(err.contains("log.nope does not exist"), "{err}");
    }

    #[test]
    fn a_committed_transaction_larger_than_a_poll_is_delivered_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path()).unwrap());
        log.create_stream("words", StreamConfig::new(1)).unwrap();
        let factory = LogSystemFactory::from_log(log);
        let ssp = SystemStream::new("log", "words").partition(0);
        let mut producer = factory.producer().unwrap();
        producer.init_transactions("big").unwrap();
        let slot = producer.slot(&ssp).unwrap();
        let value = [b'w'; 100];
        let n = 20_000; // about 2.5 MB: many polls of POLL_BYTES
        for _ in 0..n {
            producer.send(slot, None, Some(&value), 0).unwrap();
        }
        producer.commit_transaction().unwrap();
        let mut consumer = factory.consumer().unwrap();
        consumer.register(&ssp, gregor_api::system::StartOffset::Oldest).unwrap();
        let mut got = 0;
        // One call, no waiting: every record read is held until the marker
        // at the end, so the consumer reads on rather than wait for an append.
        consumer.poll(&|_| true, &mut |_, _| got += 1, Duration::ZERO).unwrap();
        assert_eq!(got, n, "the whole transaction in one poll");
    }
}
