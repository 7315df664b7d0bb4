//! The in-memory system (`systems.<name>.factory=memory`): partitioned
//! streams held in this process's memory, shared by every container of the
//! process, gone when the process exits.
//!
//! Streams live in a *namespace* (`systems.<name>.memory.namespace`, default
//! `default`): every system configured with the same namespace sees the same
//! streams, and code outside the job (a test, a feeder thread) reaches them
//! with [`MemoryStreams::open`]. A namespace lives while any handle to it
//! does.
//!
//! Offsets start at 0 and grow by one per message; nothing is ever deleted
//! (no retention, no compaction: changelogs keep every record). A stream can
//! be *ended* ([`MemoryStreams::end_stream`]): its consumers then report end
//! of stream, and a task whose inputs all ended gets `end_of_stream`.
//!
//! It never blocks a writer, and never loses a message while its namespace
//! lives; it is not durable (a crashed process takes its streams along).

use bytes::Bytes;
use gregor_api::system::{
    PartitionOffsets, StreamKind, SystemAdmin, SystemConsumer, SystemError, SystemFactory, SystemProducer,
};
use gregor_api::{Config, ConfigError, RawMessage, StartOffset, SystemStream, SystemStreamPartition};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// One partition's messages and whether its stream ended.
#[derive(Default)]
struct Partition {
    messages: Vec<RawMessage>,
}

struct Stream {
    partitions: Vec<Partition>,
    ended: bool,
}

#[derive(Default)]
struct Data {
    streams: HashMap<String, Stream>,
    /// Bumped by every append, so waiting consumers can tell.
    generation: u64,
}

/// A namespace of streams.
#[derive(Default)]
struct Namespace {
    data: Mutex<Data>,
    appended: Condvar,
}

impl Namespace {
    fn lock(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn not_found(stream: &str) -> SystemError {
    SystemError::StreamNotFound {
        stream: SystemStream::new("memory", stream),
        hint: " (create it first: MemoryStreams::create_stream)".into(),
    }
}

fn existing_partition<'a>(data: &'a Data, ssp: &SystemStreamPartition) -> Result<&'a Partition, SystemError> {
    let s = data.streams.get(&*ssp.stream.stream).ok_or_else(|| not_found(&ssp.stream.stream))?;
    s.partitions
        .get(ssp.partition as usize)
        .ok_or_else(|| no_partition(&ssp.stream.stream, ssp.partition, s.partitions.len()))
}

fn no_partition(stream: &str, partition: u32, count: usize) -> SystemError {
    SystemError::other(format!("memory stream {stream}"), format!("has no partition {partition} (it has {count})"))
}

/// A handle to a namespace of in-memory streams.
#[derive(Clone)]
pub struct MemoryStreams {
    ns: Arc<Namespace>,
}

impl std::fmt::Debug for MemoryStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStreams").finish_non_exhaustive()
    }
}

impl MemoryStreams {
    /// The namespace `name` of this process (created if no handle to it exists).
    pub fn open(name: &str) -> MemoryStreams {
        static OPEN: Mutex<Vec<(String, Weak<Namespace>)>> = Mutex::new(Vec::new());
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|(_, w)| w.strong_count() > 0);
        if let Some(ns) = open.iter().find(|(n, _)| n == name).and_then(|(_, w)| w.upgrade()) {
            return MemoryStreams { ns };
        }
        let ns = Arc::new(Namespace::default());
        open.push((name.to_owned(), Arc::downgrade(&ns)));
        MemoryStreams { ns }
    }

    /// Creates `stream` with `partitions` partitions; an existing stream must
    /// have that many.
    ///
    /// # Errors
    /// An existing stream with another partition count, or zero partitions.
    pub fn create_stream(&self, stream: &str, partitions: u32) -> Result<(), SystemError> {
        if partitions == 0 {
            return Err(SystemError::other(format!("creating memory stream {stream}"), "a stream needs a partition"));
        }
        let mut data = self.ns.lock();
        match data.streams.get(stream) {
            Some(s) if s.partitions.len() == partitions as usize => Ok(()),
            Some(s) => Err(SystemError::other(
                format!("memory stream {stream}"),
                format!("has {} partitions, not {partitions}", s.partitions.len()),
            )),
            None => {
                let partitions = (0..partitions).map(|_| Partition::default()).collect();
                data.streams.insert(stream.to_owned(), Stream { partitions, ended: false });
                Ok(())
            }
        }
    }

    /// Adds partitions to `stream` so it has `partitions` (as Kafka's
    /// partition growth does; a job notices at its next partition check).
    ///
    /// # Errors
    /// An unknown stream, or fewer partitions than it has.
    pub fn grow_stream(&self, stream: &str, partitions: u32) -> Result<(), SystemError> {
        let mut data = self.ns.lock();
        let s = data.streams.get_mut(stream).ok_or_else(|| not_found(stream))?;
        if (partitions as usize) < s.partitions.len() {
            return Err(SystemError::other(
                format!("growing memory stream {stream}"),
                format!("it has {} partitions; partitions cannot be removed", s.partitions.len()),
            ));
        }
        s.partitions.resize_with(partitions as usize, Partition::default);
        Ok(())
    }

    /// Deletes `stream` and its messages (it can be created again, empty).
    ///
    /// # Errors
    /// An unknown stream.
    pub fn delete_stream(&self, stream: &str) -> Result<(), SystemError> {
        self.ns.lock().streams.remove(stream).map(|_| ()).ok_or_else(|| not_found(stream))
    }

    /// Partitions of `stream`, if it exists.
    pub fn partition_count(&self, stream: &str) -> Option<u32> {
        self.ns.lock().streams.get(stream).map(|s| s.partitions.len() as u32)
    }

    /// Appends messages to one partition; returns the offset of the first.
    ///
    /// # Errors
    /// An unknown stream or partition, or a stream that ended.
    pub fn append(
        &self,
        stream: &str,
        partition: u32,
        messages: impl IntoIterator<Item = (Option<Bytes>, Option<Bytes>, i64)>,
    ) -> Result<u64, SystemError> {
        self.append_with_headers(
            stream,
            partition,
            messages.into_iter().map(|(k, v, ts)| (k, v, ts, gregor_api::Headers::default())),
        )
    }

    /// [`Self::append`] with headers.
    ///
    /// # Errors
    /// As [`Self::append`].
    pub fn append_with_headers(
        &self,
        stream: &str,
        partition: u32,
        messages: impl IntoIterator<Item = (Option<Bytes>, Option<Bytes>, i64, gregor_api::Headers)>,
    ) -> Result<u64, SystemError> {
        let mut data = self.ns.lock();
        let s = data.streams.get_mut(stream).ok_or_else(|| not_found(stream))?;
        if s.ended {
            return Err(SystemError::other(format!("appending to memory stream {stream}"), "the stream has ended"));
        }
        let count = s.partitions.len();
        let p = s.partitions.get_mut(partition as usize).ok_or_else(|| no_partition(stream, partition, count))?;
        let first = p.messages.len() as u64;
        for (key, value, timestamp, headers) in messages {
            let offset = p.messages.len() as u64;
            p.messages.push(RawMessage { offset, timestamp, key, value, headers });
        }
        data.generation += 1;
        drop(data);
        self.ns.appended.notify_all();
        Ok(first)
    }

    /// Every message of one partition, in offset order.
    ///
    /// # Errors
    /// An unknown stream or partition.
    pub fn messages(&self, stream: &str, partition: u32) -> Result<Vec<RawMessage>, SystemError> {
        let data = self.ns.lock();
        let s = data.streams.get(stream).ok_or_else(|| not_found(stream))?;
        let p =
            s.partitions.get(partition as usize).ok_or_else(|| no_partition(stream, partition, s.partitions.len()))?;
        Ok(p.messages.clone())
    }

    /// Ends `stream`: it takes no more messages, and its consumers report
    /// end of stream once they have read everything.
    ///
    /// # Errors
    /// An unknown stream.
    pub fn end_stream(&self, stream: &str) -> Result<(), SystemError> {
        let mut data = self.ns.lock();
        data.streams.get_mut(stream).ok_or_else(|| not_found(stream))?.ended = true;
        data.generation += 1;
        drop(data);
        self.ns.appended.notify_all();
        Ok(())
    }

    fn offsets(&self, ssp: &SystemStreamPartition) -> Result<PartitionOffsets, SystemError> {
        let data = self.ns.lock();
        let p = existing_partition(&data, ssp)?;
        Ok(PartitionOffsets { oldest: 0, next: p.messages.len() as u64 })
    }

    fn offset_for_time(&self, ssp: &SystemStreamPartition, timestamp_ms: i64) -> Result<u64, SystemError> {
        let data = self.ns.lock();
        let p = existing_partition(&data, ssp)?;
        let first = p.messages.iter().find(|m| m.timestamp >= timestamp_ms);
        Ok(first.map_or(p.messages.len() as u64, |m| m.offset))
    }
}

/// The in-memory system as a gregor system.
pub struct MemorySystemFactory {
    streams: MemoryStreams,
}

impl MemorySystemFactory {
    /// The system called `name` as configured in `config`
    /// (`systems.<name>.memory.namespace`, default `default`).
    ///
    /// # Errors
    /// An empty namespace.
    pub fn from_config(config: &Config, name: &str) -> Result<Self, ConfigError> {
        let key = format!("systems.{name}.memory.namespace");
        match config.get(&key) {
            Some("") => Err(gregor_api::config::invalid(&key, "", "a non-empty name")),
            other => Ok(MemorySystemFactory { streams: MemoryStreams::open(other.unwrap_or("default")) }),
        }
    }

    /// The system over a namespace the caller holds.
    pub fn new(streams: MemoryStreams) -> Self {
        MemorySystemFactory { streams }
    }
}

impl SystemFactory for MemorySystemFactory {
    fn admin(&self) -> Result<Arc<dyn SystemAdmin>, SystemError> {
        Ok(Arc::new(MemoryAdmin(self.streams.clone())))
    }

    fn consumer(&self) -> Result<Box<dyn SystemConsumer>, SystemError> {
        Ok(Box::new(MemoryConsumer { streams: self.streams.clone(), parts: Vec::new() }))
    }

    fn producer(&self) -> Result<Box<dyn SystemProducer>, SystemError> {
        Ok(Box::new(MemoryProducer {
            streams: self.streams.clone(),
            slots: Vec::new(),
            index: HashMap::new(),
            pending: Vec::new(),
            next: HashMap::new(),
        }))
    }
}

struct MemoryAdmin(MemoryStreams);

impl SystemAdmin for MemoryAdmin {
    fn partition_count(&self, stream: &SystemStream) -> Result<u32, SystemError> {
        self.0.partition_count(&stream.stream).ok_or_else(|| not_found(&stream.stream))
    }

    fn offsets(&self, ssp: &SystemStreamPartition) -> Result<PartitionOffsets, SystemError> {
        self.0.offsets(ssp)
    }

    fn ensure_stream(&self, stream: &SystemStream, partitions: u32, _kind: StreamKind) -> Result<(), SystemError> {
        // Nothing is ever compacted here, so every kind is the same.
        self.0.create_stream(&stream.stream, partitions)
    }

    fn set_compaction_limit(&self, _ssp: &SystemStreamPartition, _offset: u64) -> Result<(), SystemError> {
        Ok(())
    }

    fn offset_for_time(&self, ssp: &SystemStreamPartition, timestamp_ms: i64) -> Result<u64, SystemError> {
        self.0.offset_for_time(ssp, timestamp_ms)
    }
}

struct MemoryConsumer {
    streams: MemoryStreams,
    /// Registered partitions and the next offset to deliver.
    parts: Vec<(SystemStreamPartition, u64)>,
}

/// Messages handed over per partition and poll at most.
const POLL_BATCH: usize = 4096;

impl MemoryConsumer {
    fn deliver(
        &mut self,
        wants: &dyn Fn(&SystemStreamPartition) -> bool,
        deliver: &mut dyn FnMut(&SystemStreamPartition, RawMessage),
    ) -> (usize, u64) {
        let data = self.streams.ns.lock();
        let mut delivered = 0;
        for (ssp, next) in &mut self.parts {
            if !wants(ssp) {
                continue;
            }
            let Some(p) = data.streams.get(&*ssp.stream.stream).and_then(|s| s.partitions.get(ssp.partition as usize))
            else {
                continue;
            };
            for m in p.messages.iter().skip(*next as usize).take(POLL_BATCH) {
                deliver(ssp, m.clone());
                *next += 1;
                delivered += 1;
            }
        }
        (delivered, data.generation)
    }
}

impl SystemConsumer for MemoryConsumer {
    fn register(&mut self, ssp: &SystemStreamPartition, start: StartOffset) -> Result<(), SystemError> {
        let offsets = self.streams.offsets(ssp)?;
        let next = match start {
            StartOffset::At(o) if o <= offsets.next => o,
            StartOffset::At(o) => {
                return Err(SystemError::OffsetOutOfRange {
                    ssp: ssp.clone(),
                    requested: o,
                    oldest: offsets.oldest,
                    next: offsets.next,
                });
            }
            StartOffset::Oldest => offsets.oldest,
            StartOffset::Upcoming => offsets.next,
        };
        self.parts.push((ssp.clone(), next));
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
        let (delivered, seen) = self.deliver(wants, deliver);
        if delivered > 0 || timeout.is_zero() {
            return Ok(delivered);
        }
        let deadline = Instant::now() + timeout;
        let mut data = self.streams.ns.lock();
        while data.generation == seen {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(0);
            }
            data = self.streams.ns.appended.wait_timeout(data, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        drop(data);
        Ok(self.deliver(wants, deliver).0)
    }

    fn position(&self, ssp: &SystemStreamPartition) -> Option<u64> {
        self.parts.iter().find(|(s, _)| s == ssp).map(|(_, next)| *next)
    }

    fn end_hint(&self, ssp: &SystemStreamPartition) -> Option<u64> {
        let data = self.streams.ns.lock();
        data.streams.get(&*ssp.stream.stream)?.partitions.get(ssp.partition as usize).map(|p| p.messages.len() as u64)
    }

    fn end_of_stream(&self, ssp: &SystemStreamPartition) -> Option<u64> {
        let data = self.streams.ns.lock();
        let s = data.streams.get(&*ssp.stream.stream)?;
        s.ended.then(|| s.partitions.get(ssp.partition as usize).map_or(0, |p| p.messages.len() as u64))
    }
}

struct MemoryProducer {
    streams: MemoryStreams,
    slots: Vec<SystemStreamPartition>,
    index: HashMap<SystemStreamPartition, u32>,
    /// Sent and not yet appended, in order: (slot, message).
    pending: Vec<(u32, RawMessage)>,
    /// Next offset per partition after what this producer appended.
    next: HashMap<SystemStreamPartition, u64>,
}

impl SystemProducer for MemoryProducer {
    fn slot(&mut self, ssp: &SystemStreamPartition) -> Result<u32, SystemError> {
        if let Some(&slot) = self.index.get(ssp) {
            return Ok(slot);
        }
        let slot = self.slots.len() as u32;
        self.slots.push(ssp.clone());
        self.index.insert(ssp.clone(), slot);
        Ok(slot)
    }

    fn send_with_headers(
        &mut self,
        slot: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: &[(&str, &[u8])],
    ) -> Result<(), SystemError> {
        let message = RawMessage {
            offset: 0,
            timestamp,
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            headers: headers.iter().map(|(n, v)| ((*n).to_owned(), Bytes::copy_from_slice(v))).collect(),
        };
        self.pending.push((slot, message));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SystemError> {
        let mut data = self.streams.ns.lock();
        for (slot, m) in self.pending.drain(..) {
            let ssp = &self.slots[slot as usize];
            let stream = &ssp.stream.stream;
            let s = data.streams.get_mut(&**stream).ok_or_else(|| not_found(stream))?;
            if s.ended {
                return Err(SystemError::other(format!("sending to memory stream {stream}"), "the stream has ended"));
            }
            let count = s.partitions.len();
            let p = s
                .partitions
                .get_mut(ssp.partition as usize)
                .ok_or_else(|| no_partition(stream, ssp.partition, count))?;
            let offset = p.messages.len() as u64;
            p.messages.push(RawMessage { offset, ..m });
            self.next.insert(ssp.clone(), offset + 1);
        }
        data.generation += 1;
        drop(data);
        self.streams.ns.appended.notify_all();
        Ok(())
    }

    fn next_offset(&self, ssp: &SystemStreamPartition) -> Option<u64> {
        self.next.get(ssp).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssp(stream: &str, p: u32) -> SystemStreamPartition {
        SystemStream::new("mem", stream).partition(p)
    }

    #[test]
    fn producers_append_in_order_and_consumers_read_from_their_offset() {
        let streams = MemoryStreams::open("memory-tests-order");
        let factory = MemorySystemFactory::new(streams.clone());
        factory.admin().unwrap().ensure_stream(&SystemStream::new("mem", "s"), 2, StreamKind::Regular).unwrap();
        let mut producer = factory.producer().unwrap();
        for i in 0..5u8 {
            producer.send_to(&ssp("s", 1), Some(&[i]), Some(b"v"), i64::from(i)).unwrap();
        }
        assert_eq!(streams.messages("s", 1).unwrap().len(), 0, "nothing is visible before a flush");
        producer.flush().unwrap();
        assert_eq!(producer.next_offset(&ssp("s", 1)), Some(5));
        let offsets = factory.admin().unwrap().offsets(&ssp("s", 1)).unwrap();
        assert_eq!((offsets.oldest, offsets.next), (0, 5));
        let mut consumer = factory.consumer().unwrap();
        consumer.register(&ssp("s", 1), StartOffset::At(2)).unwrap();
        consumer.start().unwrap();
        let mut got = Vec::new();
        consumer
            .poll(&|_| true, &mut |_, m| got.push((m.offset, m.key.unwrap()[0], m.timestamp)), Duration::ZERO)
            .unwrap();
        assert_eq!(got, vec![(2, 2, 2), (3, 3, 3), (4, 4, 4)]);
        assert_eq!(consumer.position(&ssp("s", 1)), Some(5));
        let err = consumer.register(&ssp("s", 0), StartOffset::At(1)).unwrap_err();
        assert!(matches!(err, SystemError::OffsetOutOfRange { requested: 1, next: 0, .. }), "{err}");
    }

    #[test]
    fn offsets_are_found_by_time() {
        let streams = MemoryStreams::open("memory-tests-time");
        streams.create_stream("s", 2).unwrap();
        let at = |ts: i64| (None, Some(Bytes::from_static(b"v")), ts);
        streams.append("s", 0, [at(10), at(20), at(15), at(30)]).unwrap();
        let admin = MemorySystemFactory::new(streams).admin().unwrap();
        let find = |ts| admin.offset_for_time(&ssp("s", 0), ts).unwrap();
        assert_eq!((find(0), find(10), find(11), find(16), find(21), find(31)), (0, 0, 1, 1, 3, 4));
        assert_eq!(admin.offset_for_time(&ssp("s", 1), 0).unwrap(), 0, "empty: the next offset");
        assert!(matches!(admin.offset_for_time(&ssp("nope", 0), 0), Err(SystemError::StreamNotFound { .. })));
    }

    #[test]
    fn ended_streams_report_their_end_and_refuse_appends() {
        let streams = MemoryStreams::open("memory-tests-end");
        streams.create_stream("s", 1).unwrap();
        streams.append("s", 0, [(None, Some(Bytes::from_static(b"a")), 0)]).unwrap();
        let factory = MemorySystemFactory::new(streams.clone());
        let mut consumer = factory.consumer().unwrap();
        consumer.register(&ssp("s", 0), StartOffset::Oldest).unwrap();
        assert_eq!(consumer.end_of_stream(&ssp("s", 0)), None);
        streams.end_stream("s").unwrap();
        assert_eq!(consumer.end_of_stream(&ssp("s", 0)), Some(1));
        assert!(streams.append("s", 0, [(None, None, 0)]).is_err());
    }

    #[test]
    fn a_waiting_consumer_wakes_on_append_and_namespaces_are_separate() {
        let streams = MemoryStreams::open("memory-tests-wait");
        streams.create_stream("s", 1).unwrap();
        assert_eq!(MemoryStreams::open("memory-tests-other").partition_count("s"), None);
        let factory = MemorySystemFactory::new(streams.clone());
        let mut consumer = factory.consumer().unwrap();
        consumer.register(&ssp("s", 0), StartOffset::Oldest).unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            streams.append("s", 0, [(None, Some(Bytes::from_static(b"x")), 0)]).unwrap();
        });
        let n = consumer.poll(&|_| true, &mut |_, _| {}, Duration::from_secs(30)).unwrap();
        writer.join().unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn configuration_errors_name_the_key() {
        let mut c = Config::new();
        c.set("systems.m.memory.namespace", "");
        let err = MemorySystemFactory::from_config(&c, "m").err().unwrap().to_string();
        assert!(err.contains("systems.m.memory.namespace"), "{err}");
        let streams = MemoryStreams::open("memory-tests-errors");
        assert!(streams.create_stream("s", 0).is_err());
        streams.create_stream("s", 2).unwrap();
        assert!(streams.create_stream("s", 3).unwrap_err().to_string().contains("has 2 partitions"));
        assert!(matches!(streams.messages("nope", 0), Err(SystemError::StreamNotFound { .. })));
    }
}
