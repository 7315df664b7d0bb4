//! Where records enter a task's operators: the job's inputs, intermediate
//! streams read back, and tables loaded from compacted streams.
//!
//! A source decodes a message with the serdes of its declared types and
//! reports the event time it carries, so the task can keep watermarks. It
//! must never decide what a bad message means (the task applies the job's
//! deserialization policy) and never skip a record silently: duplicates
//! from a restarted producer are the only records it drops, and it counts
//! them.

use super::builder::{default_serde, is_unit};
use super::envelope::{self, Intermediate};
use super::graph::{Cx, Init, NodeId, Push, Value};
use bytes::Bytes;
use gregor_api::{KeyValueStore, Serde, Store, SystemStream, TaskError};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

/// How an input's event time is found, and how far out of order it may be.
pub struct EventTime<K, V> {
    pub(crate) extractor: Option<Extractor<K, V>>,
    pub(crate) max_out_of_order_ms: i64,
    pub(crate) idle_ms: Option<i64>,
    pub(crate) max_ahead_ms: i64,
}

/// How far ahead of processing time an event time may be by default (1 day).
pub(crate) const DEFAULT_MAX_AHEAD_MS: i64 = 24 * 3600 * 1000;

pub(crate) type Extractor<K, V> = Arc<dyn Fn(&K, &V, i64) -> i64 + Send + Sync>;

impl<K, V> EventTime<K, V> {
    /// Event time is the message's timestamp (the default).
    pub fn message_time() -> Self {
        EventTime { extractor: None, max_out_of_order_ms: 0, idle_ms: None, max_ahead_ms: DEFAULT_MAX_AHEAD_MS }
    }

    /// Event time from the record: `f(key, value, message timestamp)`.
    pub fn extract(f: impl Fn(&K, &V, i64) -> i64 + Send + Sync + 'static) -> Self {
        EventTime {
            extractor: Some(Arc::new(f)),
            max_out_of_order_ms: 0,
            idle_ms: None,
            max_ahead_ms: DEFAULT_MAX_AHEAD_MS,
        }
    }

    /// Records may arrive up to `d` behind the newest seen: the watermark
    /// of a partition is its newest event time minus `d`.
    pub fn max_out_of_order(mut self, d: std::time::Duration) -> Self {
        self.max_out_of_order_ms = d.as_millis().min(i64::MAX as u128) as i64;
        self
    }

    /// A partition with no message for `d` of processing time stops holding
    /// the watermark back until it has messages again.
    pub fn idle_after(mut self, d: std::time::Duration) -> Self {
        self.idle_ms = Some(d.as_millis().min(i64::MAX as u128) as i64);
        self
    }

    /// An event time more than `d` ahead of processing time (the
    /// container's clock) is a bad clock, not the future: it is counted in
    /// the task metric `future-records` and clamped to processing time plus
    /// `d`, so that one record cannot move the watermark days ahead and make
    /// every other record late. Default: 1 day.
    pub fn max_ahead(mut self, d: std::time::Duration) -> Self {
        self.max_ahead_ms = d.as_millis().min(i64::MAX as u128) as i64;
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceKind {
    Input,
    Intermediate,
    Table,
}

/// Builds a task's source.
pub(crate) type SourceFactory =
    Arc<dyn Fn(&mut Init<'_, '_>, &SourceEnv) -> Result<Box<dyn Source>, TaskError> + Send + Sync>;

/// A source of the description.
pub(crate) struct SourceSpec {
    /// The stream id (an intermediate stream: its operator's name).
    pub id: String,
    pub kind: SourceKind,
    pub node: NodeId,
    pub key_serde: &'static str,
    pub msg_serde: &'static str,
    pub max_out_of_order_ms: i64,
    pub idle_ms: Option<i64>,
    pub make: SourceFactory,
}

/// What a source learns at start-up.
pub(crate) struct SourceEnv {
    pub stream: SystemStream,
    pub key_serde: String,
    pub msg_serde: String,
}

impl SourceSpec {
    pub(crate) fn stream_id(&self, job: &str) -> String {
        match self.kind {
            SourceKind::Intermediate => format!("{job}-{}", self.id),
            _ => self.id.clone(),
        }
    }

    pub(crate) fn extra_keys(&self) -> Vec<(&'static str, &'static str)> {
        match self.kind {
            SourceKind::Input => Vec::new(),
            // Records carry their origin and readers drop re-sent copies by
            // it (`IntermediateSource`): runtime stamps would number
            // watermarks sent on the timer too, which a restart sends at
            // other points, and so drop new records as copies.
            SourceKind::Intermediate => {
                vec![("samza.intermediate", "true"), ("samza.offset.default", "oldest"), ("stamped", "false")]
            }
            // Reloaded whole at every start into an in-memory store.
            SourceKind::Table => {
                vec![("samza.bootstrap", "true"), ("samza.reset.offset", "true"), ("samza.offset.default", "oldest")]
            }
        }
    }

    fn base(
        id: &str,
        kind: SourceKind,
        node: NodeId,
        key: &'static str,
        msg: &'static str,
        make: SourceFactory,
    ) -> Self {
        SourceSpec {
            id: id.to_owned(),
            kind,
            node,
            key_serde: key,
            msg_serde: msg,
            max_out_of_order_ms: 0,
            idle_ms: None,
            make,
        }
    }

    pub(crate) fn input<K: Value, V: Value>(id: &str, node: NodeId) -> Self {
        Self::typed::<K, V>(id, SourceKind::Input, node, EventTime::message_time())
    }

    pub(crate) fn typed<K: Value, V: Value>(id: &str, kind: SourceKind, node: NodeId, time: EventTime<K, V>) -> Self {
        let EventTime { extractor, max_ahead_ms, .. } = time;
        let key = if is_unit::<K>() { "json" } else { default_serde::<K>() };
        let name = id.to_owned();
        let make: SourceFactory = Arc::new(move |init, env| {
            let codec = Codec::<K, V>::new(init, env)?;
            let next = init.downstream::<K, V>(node)?;
            Ok(match kind {
                SourceKind::Intermediate => {
                    let positions: Store<Vec<u8>, Vec<u8>> = init.ctx.store(super::POSITIONS_STORE)?;
                    Box::new(IntermediateSource {
                        codec,
                        next,
                        positions,
                        prefix: env.stream.to_string(),
                        last: HashMap::new(),
                        duplicates: init.ctx.counter(&format!("{name}-duplicates-dropped")),
                    })
                }
                _ => Box::new(InputSource {
                    codec,
                    next,
                    extractor: extractor.clone(),
                    max_ahead_ms,
                    future: init.ctx.counter("future-records"),
                }),
            })
        });
        Self::base(id, kind, node, key, default_serde::<V>(), make)
    }

    pub(crate) fn table<K: Value, V: Value>(id: &str, node: NodeId, store: String) -> Self {
        let key = if is_unit::<K>() { "json" } else { default_serde::<K>() };
        let make: SourceFactory = Arc::new(move |init, env| {
            let codec = Codec::<K, V>::new(init, env)?;
            let table: Store<K, V> = init.ctx.store(&store)?;
            Ok(Box::new(TableSource { codec, table }))
        });
        Self::base(id, SourceKind::Table, node, key, default_serde::<V>(), make)
    }
}

/// What a message meant.
pub(crate) enum Event {
    /// A record with this event time went through.
    Record(i64),
    /// An upstream task's watermark (intermediate streams).
    Upstream { task: String, tasks: u32, watermark: i64 },
    /// Nothing for the watermark (a duplicate, a tombstone, a table update).
    Nothing,
}

/// Why a message was not processed.
pub(crate) enum SourceError {
    /// It does not decode: the job's deserialization policy decides.
    Decode(String),
    /// An operator failed.
    Task(TaskError),
}

impl From<TaskError> for SourceError {
    fn from(e: TaskError) -> Self {
        SourceError::Task(e)
    }
}

/// A source of one task.
pub(crate) trait Source {
    fn message(
        &mut self,
        cx: &mut Cx<'_>,
        partition: u32,
        key: Option<Bytes>,
        value: Option<Bytes>,
        ts: i64,
    ) -> Result<Event, SourceError>;
    fn watermark(&mut self, cx: &mut Cx<'_>, wm: i64) -> Result<(), TaskError>;
    fn before_commit(&mut self) -> Result<(), TaskError> {
        Ok(())
    }
    /// The key bytes of a message of this source coming soon: handed to
    /// the operators it feeds ([`Push::prefetch`]) when they are the bytes
    /// `K`'s default serde writes. Returns whether this source prefetches,
    /// the same answer at every call (asked once with an empty key).
    fn prefetch(&mut self, _key: &[u8]) -> bool {
        false
    }
}

/// The serdes of a source's declared types.
struct Codec<K, V> {
    key: Option<Arc<dyn Serde<K>>>,
    unit: Option<K>,
    value: Arc<dyn Serde<V>>,
    /// The stream's key bytes are what `K`'s default serde writes (the
    /// stores' key bytes): they can be prefetched as they are.
    default_key_bytes: bool,
}

impl<K: Value, V: Value> Codec<K, V> {
    fn new(init: &Init<'_, '_>, env: &SourceEnv) -> Result<Self, TaskError> {
        let serdes = init.ctx.serdes();
        let err = |which: &str, name: &str, e: gregor_api::SerdeError| {
            TaskError::msg(format!("stream {}: {which} serde '{name}' does not fit the code's type: {e}", env.stream))
        };
        let (key, unit) = if is_unit::<K>() {
            (None, Some(serde_json::from_slice::<K>(b"null").map_err(|e| TaskError::msg(e.to_string()))?))
        } else {
            (Some(serdes.resolve::<K>(&env.key_serde).map_err(|e| err("key", &env.key_serde, e))?), None)
        };
        let value = serdes.resolve::<V>(&env.msg_serde).map_err(|e| err("message", &env.msg_serde, e))?;
        let default_key_bytes = key.is_some() && env.key_serde == default_serde::<K>();
        Ok(Codec { key, unit, value, default_key_bytes })
    }

    fn key(&self, key: Option<Bytes>) -> Result<K, SourceError> {
        match (&self.key, key) {
            (None, _) => self.unit.clone().ok_or_else(|| SourceError::Decode("no unit key".into())),
            (Some(s), Some(k)) => s.decode_owned(k).map_err(|e| SourceError::Decode(format!("key: {e}"))),
            (Some(_), None) => Err(SourceError::Decode(
                "the message has no key (declare the input with key type () to ignore keys)".into(),
            )),
        }
    }
}

struct InputSource<K, V> {
    codec: Codec<K, V>,
    next: Box<dyn Push<K, V>>,
    extractor: Option<Extractor<K, V>>,
    /// See [`EventTime::max_ahead`].
    max_ahead_ms: i64,
    future: gregor_api::Counter,
}

impl<K: Value, V: Value> Source for InputSource<K, V> {
    fn message(
        &mut self,
        cx: &mut Cx<'_>,
        _: u32,
        key: Option<Bytes>,
        value: Option<Bytes>,
        ts: i64,
    ) -> Result<Event, SourceError> {
        let Some(value) = value else { return Ok(Event::Nothing) };
        let key = self.codec.key(key)?;
        let value = self.codec.value.decode_owned(value).map_err(|e| SourceError::Decode(format!("message: {e}")))?;
        let mut ts = match &self.extractor {
            Some(f) => f(&key, &value, ts),
            None => ts,
        };
        // Below the watermarks that mean "idle" and "the end", whatever max_ahead is.
        let limit = cx.now_ms.saturating_add(self.max_ahead_ms).min(super::graph::IDLE - 1);
        if ts > limit {
            self.future.inc();
            ts = limit;
        }
        self.next.push(cx, key, value, ts)?;
        Ok(Event::Record(ts))
    }

    fn watermark(&mut self, cx: &mut Cx<'_>, wm: i64) -> Result<(), TaskError> {
        self.next.watermark(cx, wm)
    }

    fn prefetch(&mut self, key: &[u8]) -> bool {
        self.codec.default_key_bytes && self.next.prefetch(key)
    }
}

/// An intermediate stream read back: drops what a restarted producer
/// re-sends (by origin position, kept in the positions store).
struct IntermediateSource<K, V> {
    codec: Codec<K, V>,
    next: Box<dyn Push<K, V>>,
    positions: Store<Vec<u8>, Vec<u8>>,
    prefix: String,
    /// (partition, origin) -> the last record processed from it; one
    /// lookup per message (a few origins per task, so the map stays small).
    last: HashMap<(u32, u64), Position>,
    duplicates: gregor_api::Counter,
}

/// The last (offset, index) of an origin processed, if any, and whether
/// it changed since the last commit.
struct Position {
    last: Option<(u64, u32)>,
    changed: bool,
}

/// Where the positions store keeps an origin's [`Position`].
fn position_key(prefix: &str, partition: u32, origin: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 13);
    k.extend_from_slice(prefix.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(&origin.to_be_bytes());
    k
}

impl<K: Value, V: Value> Source for IntermediateSource<K, V> {
    fn message(
        &mut self,
        cx: &mut Cx<'_>,
        partition: u32,
        key: Option<Bytes>,
        value: Option<Bytes>,
        ts: i64,
    ) -> Result<Event, SourceError> {
        let value = value.ok_or_else(|| SourceError::Decode("an intermediate message without a value".into()))?;
        let (origin, offset, index, payload) = match envelope::decode(&value).map_err(SourceError::Decode)? {
            Intermediate::Watermark { watermark, tasks, task } => {
                return Ok(Event::Upstream { task: task.to_owned(), tasks, watermark });
            }
            Intermediate::Record { origin, offset, index, value: payload } => (origin, offset, index, payload),
        };
        if origin != 0 {
            let position = match self.last.entry((partition, origin)) {
                Entry::Occupied(o) => o.into_mut(),
                Entry::Vacant(v) => {
                    let stored =
                        self.positions.get(&position_key(&self.prefix, partition, origin)).map_err(TaskError::from)?;
                    let last = stored.and_then(|b| {
                        let o = u64::from_be_bytes(b.get(0..8)?.try_into().ok()?);
                        let i = u32::from_be_bytes(b.get(8..12)?.try_into().ok()?);
                        Some((o, i))
                    });
                    v.insert(Position { last, changed: false })
                }
            };
            if position.last.is_some_and(|l| (offset, index) <= l) {
                self.duplicates.inc();
                return Ok(Event::Nothing);
            }
            position.last = Some((offset, index));
            position.changed = true;
        }
        let key = self.codec.key(key)?;
        let start = value.len() - payload.len();
        let value = self
            .codec
            .value
            .decode_owned(value.slice(start..))
            .map_err(|e| SourceError::Decode(format!("message: {e}")))?;
        self.next.push(cx, key, value, ts)?;
        Ok(Event::Record(ts))
    }

    fn watermark(&mut self, cx: &mut Cx<'_>, wm: i64) -> Result<(), TaskError> {
        self.next.watermark(cx, wm)
    }

    fn prefetch(&mut self, key: &[u8]) -> bool {
        self.codec.default_key_bytes && self.next.prefetch(key)
    }

    fn before_commit(&mut self) -> Result<(), TaskError> {
        for (&(partition, origin), position) in &mut self.last {
            if let (true, Some((o, i))) = (position.changed, position.last) {
                let mut v = o.to_be_bytes().to_vec();
                v.extend_from_slice(&i.to_be_bytes());
                self.positions.put(&position_key(&self.prefix, partition, origin), &v)?;
            }
            position.changed = false;
        }
        Ok(())
    }
}

/// A table's compacted stream: the latest value per key, tombstones delete.
struct TableSource<K, V> {
    codec: Codec<K, V>,
    table: Store<K, V>,
}

impl<K: Value, V: Value> Source for TableSource<K, V> {
    fn message(
        &mut self,
        _: &mut Cx<'_>,
        _: u32,
        key: Option<Bytes>,
        value: Option<Bytes>,
        _: i64,
    ) -> Result<Event, SourceError> {
        let key = self.codec.key(key)?;
        match value {
            None => self.table.delete(&key).map_err(TaskError::from)?,
            Some(v) => {
                let v = self.codec.value.decode_owned(v).map_err(|e| SourceError::Decode(format!("message: {e}")))?;
                self.table.put(&key, &v).map_err(TaskError::from)?;
            }
        }
        Ok(Event::Nothing)
    }

    fn watermark(&mut self, _: &mut Cx<'_>, _: i64) -> Result<(), TaskError> {
        Ok(())
    }

    fn prefetch(&mut self, key: &[u8]) -> bool {
        if self.codec.default_key_bytes {
            self.table.prefetch_raw(key);
        }
        self.codec.default_key_bytes
    }
}
