//! Typed access to a test's streams: [`Input`] encodes messages with a
//! stream's configured serdes and appends them; [`Output`] reads and decodes
//! everything a stream holds.

use crate::app::JobError;
use crate::memory::MemoryStreams;
use bytes::Bytes;
use gregor_api::{Data, Serde, Serdes, SystemStream};
use gregor_runtime::{Clock, JobConfig, ManualClock};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The stream's key and message serdes, resolved for `K` and `V`, or an
/// error naming the stream, the serde and the type.
fn serdes_for<K: Data, V: Data>(
    stream: &SystemStream,
    job: &JobConfig,
    serdes: &Serdes,
) -> Result<(Arc<dyn Serde<K>>, Arc<dyn Serde<V>>), JobError> {
    let (key, msg) = job.serde_names(stream);
    let fit = |which: &str, e: gregor_api::SerdeError| {
        JobError::Usage(format!(
            "stream {stream}: its {which} serde does not fit: {e} (streams.<id>.samza.{which}.serde)"
        ))
    };
    Ok((serdes.resolve::<K>(&key).map_err(|e| fit("key", e))?, serdes.resolve::<V>(&msg).map_err(|e| fit("msg", e))?))
}

/// Writes typed messages to one stream of a [`TestJob`](super::TestJob).
pub struct Input<K, V> {
    streams: MemoryStreams,
    stream: SystemStream,
    key: Arc<dyn Serde<K>>,
    value: Arc<dyn Serde<V>>,
    clock: ManualClock,
}

impl<K: Data, V: Data> Input<K, V> {
    pub(super) fn new(
        streams: MemoryStreams,
        stream: SystemStream,
        job: &JobConfig,
        serdes: &Serdes,
        clock: ManualClock,
    ) -> Result<Self, JobError> {
        let (key, value) = serdes_for::<K, V>(&stream, job, serdes)?;
        Ok(Input { streams, stream, key, value, clock })
    }

    fn encode<T: 'static>(
        serde: &dyn Serde<T>,
        value: Option<&T>,
        stream: &SystemStream,
    ) -> Result<Option<Bytes>, JobError> {
        let Some(value) = value else { return Ok(None) };
        let mut buf = Vec::new();
        serde.encode(value, &mut buf).map_err(|e| JobError::Usage(format!("encoding a message for {stream}: {e}")))?;
        Ok(Some(Bytes::from(buf)))
    }

    /// Appends one message to `partition` with full control: no key, a
    /// tombstone (`value: None`), or an explicit event timestamp (`None`:
    /// the test clock's wall time). Returns its offset.
    ///
    /// # Errors
    /// An unknown stream or partition (create streams with
    /// [`TestJob::create_stream`](super::TestJob::create_stream)), or a value
    /// the serde cannot encode.
    pub fn send_message(
        &self,
        partition: u32,
        key: Option<K>,
        value: Option<V>,
        timestamp: Option<i64>,
    ) -> Result<u64, JobError> {
        let k = Self::encode(&*self.key, key.as_ref(), &self.stream)?;
        let v = Self::encode(&*self.value, value.as_ref(), &self.stream)?;
        let ts = timestamp.unwrap_or_else(|| self.clock.wall_ms());
        self.streams.append(&self.stream.stream, partition, [(k, v, ts)]).map_err(|e| JobError::Runtime(e.into()))
    }

    /// Appends a message with headers (what `IncomingEnvelope::headers`
    /// shows the task).
    ///
    /// # Errors
    /// As [`Self::send_message`].
    pub fn send_with_headers(
        &self,
        partition: u32,
        key: Option<K>,
        value: Option<V>,
        headers: &[(&str, &[u8])],
    ) -> Result<u64, JobError> {
        let k = Self::encode(&*self.key, key.as_ref(), &self.stream)?;
        let v = Self::encode(&*self.value, value.as_ref(), &self.stream)?;
        let headers = headers.iter().map(|(n, v)| ((*n).to_owned(), Bytes::copy_from_slice(v))).collect();
        self.streams
            .append_with_headers(&self.stream.stream, partition, [(k, v, self.clock.wall_ms(), headers)])
            .map_err(|e| JobError::Runtime(e.into()))
    }

    /// Appends a keyed message to `partition`.
    ///
    /// # Errors
    /// As [`send_message`](Self::send_message).
    pub fn send(&self, partition: u32, key: K, value: V) -> Result<u64, JobError> {
        self.send_message(partition, Some(key), Some(value), None)
    }

    /// Appends a message without a key to `partition`.
    ///
    /// # Errors
    /// As [`send_message`](Self::send_message).
    pub fn send_value(&self, partition: u32, value: V) -> Result<u64, JobError> {
        self.send_message(partition, None, Some(value), None)
    }

    /// Appends a keyed message to the partition its key hashes to (murmur2,
    /// as gregor and Kafka partition keyed output).
    ///
    /// # Errors
    /// As [`send_message`](Self::send_message).
    pub fn send_keyed(&self, key: K, value: V) -> Result<u64, JobError> {
        let count = self.streams.partition_count(&self.stream.stream).ok_or_else(|| {
            JobError::Usage(format!("stream {} does not exist: create it with TestJob::create_stream", self.stream))
        })?;
        let k = Self::encode(&*self.key, Some(&key), &self.stream)?.unwrap_or_default();
        self.send_message(gregor_api::partition_for_key(&k, count), Some(key), Some(value), None)
    }
}

/// One decoded message of an output stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<K, V> {
    /// Its partition.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// The key, if any.
    pub key: Option<K>,
    /// The value; `None` for a tombstone.
    pub value: Option<V>,
    /// Its headers, in the order written.
    pub headers: gregor_api::Headers,
}

/// Everything a stream held when it was read, decoded.
#[derive(Debug, Clone)]
pub struct Output<K, V> {
    records: Vec<Record<K, V>>,
}

impl<K: Data, V: Data> Output<K, V> {
    pub(super) fn read(
        streams: &MemoryStreams,
        stream: &SystemStream,
        job: &JobConfig,
        serdes: &Serdes,
    ) -> Result<Self, JobError> {
        let (key, value) = serdes_for::<K, V>(stream, job, serdes)?;
        let count = streams.partition_count(&stream.stream).ok_or_else(|| {
            JobError::Usage(format!("stream {stream} does not exist (nothing was sent to it, and it was not created)"))
        })?;
        let mut records = Vec::new();
        for partition in 0..count {
            for m in streams.messages(&stream.stream, partition).map_err(|e| JobError::Runtime(e.into()))? {
                let bad = |what: &str, e: gregor_api::SerdeError| {
                    JobError::Usage(format!(
                        "{stream}[{partition}] offset {}: the {what} does not decode: {e}",
                        m.offset
                    ))
                };
                records.push(Record {
                    partition,
                    offset: m.offset,
                    timestamp: m.timestamp,
                    key: m.key.as_ref().map(|k| key.decode_shared(k)).transpose().map_err(|e| bad("key", e))?,
                    value: m.value.as_ref().map(|v| value.decode_shared(v)).transpose().map_err(|e| bad("value", e))?,
                    headers: m.headers.clone(),
                });
            }
        }
        Ok(Output { records })
    }

    /// Every message, partition by partition, in offset order.
    pub fn records(&self) -> &[Record<K, V>] {
        &self.records
    }

    /// The messages of one partition, in offset order.
    pub fn partition(&self, partition: u32) -> Vec<&Record<K, V>> {
        self.records.iter().filter(|r| r.partition == partition).collect()
    }

    /// The values (tombstones left out), partition by partition.
    pub fn values(&self) -> Vec<V>
    where
        V: Clone,
    {
        self.records.iter().filter_map(|r| r.value.clone()).collect()
    }

    /// `(key, value)` of every keyed message, partition by partition.
    pub fn key_values(&self) -> Vec<(K, Option<V>)>
    where
        K: Clone,
        V: Clone,
    {
        self.records.iter().filter_map(|r| Some((r.key.clone()?, r.value.clone()))).collect()
    }

    /// The last value of every key (a key whose last message is a tombstone
    /// is left out): what a compacted stream keeps.
    pub fn latest_by_key(&self) -> BTreeMap<K, V>
    where
        K: Ord + Clone,
        V: Clone,
    {
        let mut out = BTreeMap::new();
        for r in &self.records {
            let Some(k) = &r.key else { continue };
            match &r.value {
                Some(v) => out.insert(k.clone(), v.clone()),
                None => out.remove(k),
            };
        }
        out
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the stream is empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}
