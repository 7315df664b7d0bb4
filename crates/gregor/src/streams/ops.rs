//! Stateless operators, outputs, and repartitioning through intermediate
//! streams.
//!
//! None of these keeps state across messages except `partition_by`'s
//! watermark bookkeeping; they must never buffer records.

use super::builder::{Output, StoreDecl, Stream, is_unit};
use super::envelope;
use super::graph::{Cx, Factory, Hook, IDLE, Init, MinWatermark, Push, Value};
use super::source::{EventTime, SourceKind, SourceSpec};
use gregor_api::{OutgoingEnvelope, Serde, SystemStream, TaskError};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

/// Applies `f` to every record, keeping the watermark.
struct Map<F, N> {
    f: Arc<F>,
    next: N,
    /// `f` keeps every record's key (`map_values`): upcoming keys are
    /// passed on to what follows ([`Push::prefetch`]).
    keeps_key: bool,
}

macro_rules! forward_watermark {
    () => {
        fn watermark(&mut self, cx: &mut Cx<'_>, wm: i64) -> Result<(), TaskError> {
            self.next.watermark(cx, wm)
        }
    };
}

impl<K, V, K2, V2, F> Push<K, V> for Map<F, Box<dyn Push<K2, V2>>>
where
    F: Fn(K, V) -> (K2, V2),
{
    fn push(&mut self, cx: &mut Cx<'_>, key: K, value: V, ts: i64) -> Result<(), TaskError> {
        let (k, v) = (self.f)(key, value);
        self.next.push(cx, k, v, ts)
    }
    fn prefetch(&mut self, key: &[u8]) -> bool {
        self.keeps_key && self.next.prefetch(key)
    }
    forward_watermark!();
}

struct FlatMap<F, N> {
    f: Arc<F>,
    next: N,
    /// As [`Map::keeps_key`] (`filter`, `flat_map_values`).
    keeps_key: bool,
}

impl<K, V, K2, V2, I, F> Push<K, V> for FlatMap<F, Box<dyn Push<K2, V2>>>
where
    F: Fn(K, V) -> I,
    I: IntoIterator<Item = (K2, V2)>,
{
    fn push(&mut self, cx: &mut Cx<'_>, key: K, value: V, ts: i64) -> Result<(), TaskError> {
        for (k, v) in (self.f)(key, value) {
            self.next.push(cx, k, v, ts)?;
        }
        Ok(())
    }
    fn prefetch(&mut self, key: &[u8]) -> bool {
        self.keeps_key && self.next.prefetch(key)
    }
    forward_watermark!();
}

/// Calls `f` on every record (a sink with access to the collector).
struct Sink<F> {
    f: Arc<F>,
}

impl<K, V, F> Push<K, V> for Sink<F>
where
    F: Fn(K, V, i64, &mut gregor_api::MessageCollector) -> Result<(), TaskError>,
{
    fn push(&mut self, cx: &mut Cx<'_>, key: K, value: V, ts: i64) -> Result<(), TaskError> {
        (self.f)(key, value, ts, cx.out)
    }
    fn watermark(&mut self, _: &mut Cx<'_>, _: i64) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Sends every record to an output stream, keyed (partitioned by key), with
/// its event time as the message timestamp; passes it on when `next` is set
/// (`send_to`), ends the stream otherwise (`to`: no copy of the record).
struct SendTo<K, V> {
    stream: SystemStream,
    next: Option<Box<dyn Push<K, V>>>,
    unit_key: bool,
}

impl<K: Value, V: Value> SendTo<K, V> {
    fn send(&self, cx: &mut Cx<'_>, key: Option<K>, value: V, ts: i64) -> Result<(), TaskError> {
        let key = if self.unit_key { None } else { key };
        cx.out.send(OutgoingEnvelope {
            stream: &self.stream,
            partition: None,
            key,
            message: Some(value),
            timestamp: Some(ts),
            headers: Vec::new(),
        })?;
        Ok(())
    }
}

impl<K: Value, V: Value> Push<K, V> for SendTo<K, V> {
    fn push(&mut self, cx: &mut Cx<'_>, key: K, value: V, ts: i64) -> Result<(), TaskError> {
        match &mut self.next {
            None => self.send(cx, Some(key), value, ts),
            Some(_) => {
                self.send(cx, Some(key.clone()), value.clone(), ts)?;
                match &mut self.next {
                    Some(next) => next.push(cx, key, value, ts),
                    None => Ok(()),
                }
            }
        }
    }
    fn watermark(&mut self, cx: &mut Cx<'_>, wm: i64) -> Result<(), TaskError> {
        match &mut self.next {
            Some(next) => next.watermark(cx, wm),
            None => Ok(()),
        }
    }
}

/// Merges several streams: records in arrival order, the watermark is the
/// slowest input's.
struct MergeInput<K, V> {
    index: usize,
    shared: Rc<RefCell<MergeState<K, V>>>,
}

struct MergeState<K, V> {
    watermarks: MinWatermark,
    next: Box<dyn Push<K, V>>,
}

impl<K, V> Push<K, V> for MergeInput<K, V> {
    fn push(&mut self, cx: &mut Cx<'_>, key: K, value: V, ts: i64) -> Result<(), TaskError> {
        self.shared.borrow_mut().next.push(cx, key, value, ts)
    }
    fn watermark(&mut self, cx: &mut Cx<'_>, wm: i64) -> Result<(), TaskError> {
        let mut s = self.shared.borrow_mut();
        match s.watermarks.update(self.index, wm) {
            Some(w) => s.next.watermark(cx, w),
            None => Ok(()),
        }
    }
}

/// Sends each record to the first branch whose predicate holds.
struct Branch<K, V> {
    predicates: Vec<Arc<dyn Fn(&K, &V) -> bool + Send + Sync>>,
    branches: Vec<Box<dyn Push<K, V>>>,
}

impl<K, V> Push<K, V> for Branch<K, V> {
    fn push(&mut self, cx: &mut Cx<'_>, key: K, value: V, ts: i64) -> Result<(), TaskError> {
        match self.predicates.iter().position(|p| p(&key, &value)) {
            Some(i) => self.branches[i].push(cx, key, value, ts),
            None => Ok(()),
        }
    }
    fn watermark(&mut self, cx: &mut Cx<'_>, wm: i64) -> Result<(), TaskError> {
        for b in &mut self.branches {
            b.watermark(cx, wm)?;
        }
        Ok(())
    }
}

/// Writes records to an intermediate stream in the envelope format, and
/// this task's watermark to every partition of it.
struct Repartition<K, V> {
    stream: SystemStream,
    key: Option<Arc<dyn Serde<K>>>,
    value: Arc<dyn Serde<V>>,
    key_buf: Vec<u8>,
    buf: Vec<u8>,
    wm: Rc<RefCell<WatermarkSender>>,
}

/// Sends a task's watermark downstream: when it advanced, at most every
/// 100 ms of processing time (and at once for the end of input).
pub(crate) struct WatermarkSender {
    stream: SystemStream,
    partitions: u32,
    tasks: u32,
    task: String,
    current: i64,
    sent: i64,
    sent_at: i64,
    /// The stream is idle ([`IDLE`]); `idle_sent`: downstream was told.
    idle: bool,
    idle_sent: bool,
}

impl WatermarkSender {
    fn send(&mut self, cx: &mut Cx<'_>) {
        let value = match (self.idle, self.idle_sent) {
            (true, true) => return,
            (true, false) => IDLE,
            // Back from idle: the watermark again, advanced or not.
            (false, true) => self.current,
            (false, false) if self.current <= self.sent => return,
            (false, false) => self.current,
        };
        let message = envelope::watermark(value, self.tasks, &self.task);
        for p in 0..self.partitions {
            cx.out.send_raw(&self.stream, Some(p), None, Some(&message), Some(cx.now_ms));
        }
        self.idle_sent = self.idle;
        if !self.idle {
            self.sent = self.current;
        }
        self.sent_at = cx.now_ms;
    }
}

impl Hook for WatermarkSender {
    fn tick(&mut self, cx: &mut Cx<'_>) -> Result<(), TaskError> {
        self.send(cx);
        Ok(())
    }
}

impl<K: Value, V: Value> Push<K, V> for Repartition<K, V> {
    fn push(&mut self, cx: &mut Cx<'_>, key: K, value: V, ts: i64) -> Result<(), TaskError> {
        let index = cx.origin.next_index;
        cx.origin.next_index += 1;
        envelope::record_header(&mut self.buf, cx.origin.id, cx.origin.offset, index);
        self.value.encode(&value, &mut self.buf)?;
        match &self.key {
            Some(k) => {
                self.key_buf.clear();
                k.encode(&key, &mut self.key_buf)?;
                cx.out.send_raw(&self.stream, None, Some(&self.key_buf), Some(&self.buf), Some(ts));
            }
            // No key: one partition gets everything (as Samza's null key).
            None => cx.out.send_raw(&self.stream, Some(0), None, Some(&self.buf), Some(ts)),
        }
        Ok(())
    }
    fn watermark(&mut self, cx: &mut Cx<'_>, wm: i64) -> Result<(), TaskError> {
        let mut s = self.wm.borrow_mut();
        s.idle = wm == IDLE;
        if wm != IDLE {
            s.current = s.current.max(wm);
        }
        // Idleness changes, and the end, go out at once.
        if wm == i64::MAX || s.idle != s.idle_sent || cx.now_ms - s.sent_at >= 100 {
            s.send(cx);
        }
        Ok(())
    }
}

impl<K: Value, V: Value> Stream<K, V> {
    /// Transforms every record's key and value.
    pub fn map<K2: Value, V2: Value>(&self, f: impl Fn(K, V) -> (K2, V2) + Send + Sync + 'static) -> Stream<K2, V2> {
        let f = Arc::new(f);
        self.then("map", None, String::new(), move |_, next| Ok(Box::new(Map { f: f.clone(), next, keeps_key: false })))
    }

    /// Transforms every record's value.
    pub fn map_values<V2: Value>(&self, f: impl Fn(V) -> V2 + Send + Sync + 'static) -> Stream<K, V2> {
        let f = Arc::new(move |k: K, v: V| (k, f(v)));
        self.then("map_values", None, String::new(), move |_, next| {
            Ok(Box::new(Map { f: f.clone(), next, keeps_key: true }))
        })
    }

    /// Gives every record a new key (computed from key and value).
    pub fn key_by<K2: Value>(&self, f: impl Fn(&K, &V) -> K2 + Send + Sync + 'static) -> Stream<K2, V> {
        let f = Arc::new(move |k: K, v: V| (f(&k, &v), v));
        self.then("key_by", None, String::new(), move |_, next| {
            Ok(Box::new(Map { f: f.clone(), next, keeps_key: false }))
        })
    }

    /// Keeps the records for which `f` holds.
    pub fn filter(&self, f: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Stream<K, V> {
        let f = Arc::new(move |k: K, v: V| f(&k, &v).then_some((k, v)));
        self.then("filter", None, String::new(), move |_, next| {
            Ok(Box::new(FlatMap { f: f.clone(), next, keeps_key: true }))
        })
    }

    /// Turns every record into any number of records.
    pub fn flat_map<K2: Value, V2: Value, I>(&self, f: impl Fn(K, V) -> I + Send + Sync + 'static) -> Stream<K2, V2>
    where
        I: IntoIterator<Item = (K2, V2)> + 'static,
    {
        let f = Arc::new(f);
        self.then("flat_map", None, String::new(), move |_, next| {
            Ok(Box::new(FlatMap { f: f.clone(), next, keeps_key: false }))
        })
    }

    /// Turns every record's value into any number of values, keeping the key.
    pub fn flat_map_values<V2: Value, I>(&self, f: impl Fn(V) -> I + Send + Sync + 'static) -> Stream<K, V2>
    where
        I: IntoIterator<Item = V2> + 'static,
    {
        let f = Arc::new(move |k: K, v: V| f(v).into_iter().map(move |v2| (k.clone(), v2)));
        self.then("flat_map_values", None, String::new(), move |_, next| {
            Ok(Box::new(FlatMap { f: f.clone(), next, keeps_key: true }))
        })
    }

    /// Runs `f` on every record (logging, metrics, side effects).
    pub fn for_each(&self, f: impl Fn(&K, &V) + Send + Sync + 'static) {
        self.sink(move |k, v, _, _| {
            f(&k, &v);
            Ok(())
        });
    }

    /// Ends the stream in user code with access to the collector:
    /// `f(key, value, event time, collector)`.
    pub fn sink(
        &self,
        f: impl Fn(K, V, i64, &mut gregor_api::MessageCollector) -> Result<(), TaskError> + Send + Sync + 'static,
    ) {
        let f = Arc::new(f);
        let _: Stream<K, V> = self.then("sink", None, String::new(), move |_, _| Ok(Box::new(Sink { f: f.clone() })));
    }

    /// Sends every record to `output` (partitioned by key, timestamped with
    /// its event time) and passes it on.
    pub fn send_to(&self, output: &Output<K, V>) -> Stream<K, V> {
        let id = output.id.clone();
        let unit_key = is_unit::<K>();
        self.then("send_to", None, format!("stream {id}"), move |init, next| {
            Ok(Box::new(SendTo { stream: init.stream(&id)?, next: Some(next), unit_key }))
        })
    }

    /// Sends every record to `output` and ends the stream (as
    /// [`Stream::send_to`], without copying records for later operators).
    pub fn to(&self, output: &Output<K, V>) {
        let id = output.id.clone();
        let unit_key = is_unit::<K>();
        let _: Stream<K, V> = self.then("to", None, format!("stream {id}"), move |init, _| {
            Ok(Box::new(SendTo { stream: init.stream(&id)?, next: None, unit_key }))
        });
    }

    /// One stream of this stream's and `others`' records.
    pub fn merge<'a>(&self, others: impl IntoIterator<Item = &'a Stream<K, V>>) -> Stream<K, V> {
        let mut all = vec![self.clone()];
        all.extend(others.into_iter().cloned());
        let inputs: Vec<_> = all.iter().map(|s| s.node).collect();
        let n = inputs.len();
        let id = self.b.borrow_mut().add_node::<K, V>("merge", None, inputs, String::new());
        for (index, s) in all.iter().enumerate() {
            let factory: Factory<K, V> = Arc::new(move |init: &mut Init<'_, '_>| {
                let shared = init.shared(id, |init| {
                    Ok(MergeState { watermarks: MinWatermark::new(n), next: init.downstream::<K, V>(id)? })
                })?;
                Ok(Box::new(MergeInput { index, shared }))
            });
            s.attach(factory);
        }
        Stream::at(&self.b, id)
    }

    /// Splits the stream: each record goes to the first branch whose
    /// predicate holds (none: dropped). Returns one stream per predicate.
    pub fn branch(&self, predicates: Vec<Box<dyn Fn(&K, &V) -> bool + Send + Sync>>) -> Vec<Stream<K, V>> {
        let predicates: Vec<Arc<dyn Fn(&K, &V) -> bool + Send + Sync>> =
            predicates.into_iter().map(Arc::from).collect();
        let n = predicates.len();
        let ids: Vec<_> = (0..n)
            .map(|i| self.b.borrow_mut().add_node::<K, V>("branch", None, vec![self.node], format!("branch {i}")))
            .collect();
        let branch_ids = ids.clone();
        self.attach(Arc::new(move |init: &mut Init<'_, '_>| {
            let mut branches = Vec::new();
            for &id in &branch_ids {
                branches.push(init.downstream::<K, V>(id)?);
            }
            Ok(Box::new(Branch { predicates: predicates.clone(), branches }))
        }));
        ids.into_iter().map(|id| Stream::at(&self.b, id)).collect()
    }

    /// Repartitions by key: writes to the intermediate stream
    /// `<job.name>-<name>` and reads it back, so every record of a key
    /// reaches the same task. After a crash the consuming task drops what
    /// the producing task re-sends, so results stay exact.
    pub fn partition_by(&self, name: &str) -> Stream<K, V> {
        let key_serde = if is_unit::<K>() { "json" } else { super::builder::default_serde::<K>() };
        let value_serde = super::builder::default_serde::<V>();
        let mut b = self.b.borrow_mut();
        let sink = b.add_node::<K, V>("partition_by", Some(name), vec![self.node], String::new());
        let source = b.add_node::<K, V>("intermediate", Some(&format!("{name}-read")), vec![sink], String::new());
        let job = b.config.get("job.name").unwrap_or(&b.app).to_owned();
        let stream_id = format!("{job}-{name}");
        b.graph.nodes[sink].detail = format!("stream {stream_id}");
        b.graph.nodes[source].detail = format!("stream {stream_id}");
        let mut spec = SourceSpec::typed::<K, V>(name, SourceKind::Intermediate, source, EventTime::message_time());
        spec.key_serde = key_serde;
        spec.msg_serde = value_serde;
        b.sources.push(spec);
        if !b.stores.iter().any(|s| s.name == super::POSITIONS_STORE) {
            let store = StoreDecl {
                name: super::POSITIONS_STORE.into(),
                key_serde: "bytes",
                msg_serde: "bytes",
                logged: true,
                small: true,
            };
            b.add_store(source, store);
        }
        drop(b);
        let id = stream_id.clone();
        self.attach(Arc::new(move |init: &mut Init<'_, '_>| {
            let stream = init.stream(&id)?;
            let (key_name, value_name) = super::task::serde_names(init.ctx, &id);
            let serdes = init.ctx.serdes();
            let err = |which, name: &str, e: gregor_api::SerdeError| {
                TaskError::msg(format!(
                    "intermediate stream {stream}: {which} serde '{name}' does not fit the code's type: {e}"
                ))
            };
            let key = match is_unit::<K>() {
                true => None,
                false => Some(serdes.resolve::<K>(&key_name).map_err(|e| err("key", &key_name, e))?),
            };
            let value = serdes.resolve::<V>(&value_name).map_err(|e| err("message", &value_name, e))?;
            let partitions = init.ctx.partition_count(&stream).ok_or_else(|| {
                TaskError::msg(format!("intermediate stream {stream} does not exist (it is created at start-up)"))
            })?;
            let wm = Rc::new(RefCell::new(WatermarkSender {
                stream: stream.clone(),
                partitions,
                tasks: init.producing_tasks,
                task: init.ctx.task_name().to_owned(),
                current: i64::MIN,
                sent: i64::MIN,
                sent_at: i64::MIN / 2,
                idle: false,
                idle_sent: false,
            }));
            init.hook(wm.clone());
            Ok(Box::new(Repartition { stream, key, value, key_buf: Vec::new(), buf: Vec::new(), wm }))
        }));
        Stream::at(&self.b, source)
    }

    /// Re-keys with `f`, then repartitions ([`Stream::partition_by`]).
    pub fn group_by<K2: Value>(&self, name: &str, f: impl Fn(&K, &V) -> K2 + Send + Sync + 'static) -> Stream<K2, V> {
        self.key_by(f).partition_by(name)
    }

    /// Sets how this input's event time is read: only on streams that
    /// [`super::StreamApp::input`] returned.
    pub fn event_time(self, time: EventTime<K, V>) -> Stream<K, V> {
        let mut b = self.b.borrow_mut();
        let name = b.graph.nodes[self.node].name.clone();
        match b.sources.iter().position(|s| s.node == self.node && s.kind == SourceKind::Input) {
            Some(i) => {
                let (max_out_of_order_ms, idle_ms) = (time.max_out_of_order_ms, time.idle_ms);
                let mut spec = SourceSpec::typed::<K, V>(&name, SourceKind::Input, self.node, time);
                spec.max_out_of_order_ms = max_out_of_order_ms;
                spec.idle_ms = idle_ms;
                b.sources[i] = spec;
            }
            None => {
                b.errors.push(format!("event_time on '{name}': only an input stream (app.input) has an event time"))
            }
        }
        drop(b);
        self
    }
}
