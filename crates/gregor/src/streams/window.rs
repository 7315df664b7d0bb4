//! Windows over event time: tumbling, hopping and session windows, with
//! early firings, allowed lateness and a side output for late records.
//!
//! Semantics (docs/streams-api.md has the full story):
//! - a time window is `[start, end)`, aligned to the epoch; a record at
//!   exactly `end` belongs to the next window;
//! - a session is `[first, last]` of its records' times; a record within
//!   `gap` of a session (either side) joins it, merging sessions it bridges;
//!   it closes at `last + gap`;
//! - a window fires (on time) when the watermark reaches its end (close);
//!   it is kept for `allowed_lateness` more, during which every record for
//!   it fires it again (a late pane); after that its records are late: sent
//!   to the side output if one is set, and counted in `late-records`;
//! - accumulating (the default): every pane holds everything so far;
//!   discarding: a pane holds what came since the previous pane.
//!
//! State lives in the operator's store (with changelog) and in memory; it
//! must never fire a window twice on time, nor lose one across a restart.

use super::builder::{Output, StoreDecl, Stream, default_serde};
use super::graph::{Cx, Hook, IDLE, Push, Value, no_event_time};
use super::state::{Mirror, bytes_time, time_bytes};
use gregor_api::{OutgoingEnvelope, Serde, SystemStream, TaskError};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// How records are grouped in event time, and when results are emitted.
#[derive(Debug, Clone)]
pub struct Windows {
    kind: Kind,
    lateness: i64,
    early_count: Option<u64>,
    early_every: Option<i64>,
    discarding: bool,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Hopping { size: i64, advance: i64 },
    Session { gap: i64 },
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl Windows {
    /// Back-to-back windows of `size`.
    pub fn tumbling(size: Duration) -> Self {
        Self::hopping(size, size)
    }

    /// Windows of `size` starting every `advance` (a record is in
    /// `size / advance` of them). An advance above the size is a start-up
    /// error.
    pub fn hopping(size: Duration, advance: Duration) -> Self {
        let kind = Kind::Hopping { size: ms(size).max(1), advance: ms(advance).max(1) };
        Windows { kind, lateness: 0, early_count: None, early_every: None, discarding: false }
    }

    /// Sessions: records of a key less than `gap` apart.
    pub fn session(gap: Duration) -> Self {
        Windows {
            kind: Kind::Session { gap: ms(gap) },
            lateness: 0,
            early_count: None,
            early_every: None,
            discarding: false,
        }
    }

    /// Keeps a window `d` past its end: records arriving then update it and
    /// fire it again (late panes).
    pub fn allowed_lateness(mut self, d: Duration) -> Self {
        self.lateness = ms(d);
        self
    }

    /// Also fires a window early, every `n` records.
    pub fn early_every_count(mut self, n: u64) -> Self {
        self.early_count = Some(n.max(1));
        self
    }

    /// Also fires a window early, every `d` of processing time while it has
    /// new records.
    pub fn early_every(mut self, d: Duration) -> Self {
        self.early_every = Some(ms(d).max(1));
        self
    }

    /// Each pane holds only what arrived since the previous pane of its
    /// window (time windows; sessions always accumulate).
    pub fn discarding(mut self) -> Self {
        self.discarding = true;
        self
    }
}

/// Why a pane was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timing {
    /// Before the window closed.
    Early,
    /// When the watermark reached its end.
    OnTime,
    /// For records that arrived after that, within the allowed lateness.
    Late,
}

/// A window's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pane<A> {
    /// Time windows: the start (inclusive). Sessions: the first record's time.
    pub start: i64,
    /// Time windows: the end (exclusive). Sessions: the last record's time.
    pub end: i64,
    /// The aggregate.
    pub value: A,
    /// Why it was emitted.
    pub timing: Timing,
}

/// A stream grouped into windows per key; [`Windowed::aggregate`] says what
/// to compute.
pub struct Windowed<K, V> {
    stream: Stream<K, V>,
    name: String,
    spec: Windows,
    late: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "K: Serialize, A: Serialize", deserialize = "K: Deserialize<'de>, A: Deserialize<'de>"))]
struct WindowState<K, A> {
    key: K,
    start: i64,
    end: i64,
    acc: A,
    pending: u64,
    fired: bool,
    fired_at: i64,
}

type Fold<K, V, A> = Arc<dyn Fn(&K, V, A) -> A + Send + Sync>;
type Merge<K, A> = Arc<dyn Fn(&K, A, A) -> A + Send + Sync>;

struct WindowOp<K, V, A> {
    name: String,
    spec: Windows,
    state: Mirror<WindowState<K, A>>,
    /// Sessions: key bytes -> state keys of its open sessions.
    sessions: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    key_serde: Arc<dyn Serde<K>>,
    init: Arc<dyn Fn() -> A + Send + Sync>,
    fold: Fold<K, V, A>,
    merge: Option<Merge<K, A>>,
    next: Box<dyn Push<K, Pane<A>>>,
    late: Option<SystemStream>,
    late_records: gregor_api::Counter,
    wm: i64,
    key_buf: Vec<u8>,
    /// Reused for the state key of each record's window.
    at_buf: Vec<u8>,
}

fn state_key(close: i64, start: i64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + key.len());
    state_key_into(&mut k, close, start, key);
    k
}

/// [`state_key`] into `buf` (cleared first).
fn state_key_into(buf: &mut Vec<u8>, close: i64, start: i64, key: &[u8]) {
    buf.clear();
    buf.extend_from_slice(&time_bytes(close));
    buf.extend_from_slice(&time_bytes(start));
    buf.extend_from_slice(key);
}

/// Which pane an update of window `s`, closing at `close`, fires at once
/// (watermark `wm`, early panes every `early_count` records), if any.
fn pane_due<K, A>(wm: i64, early_count: Option<u64>, close: i64, s: &WindowState<K, A>) -> Option<Timing> {
    if close <= wm {
        // Past its end already (a late record within the lateness, or a
        // session that grew into the past): fire now.
        return Some(if s.fired { Timing::Late } else { Timing::OnTime });
    }
    early_count.is_some_and(|n| s.pending >= n).then_some(Timing::Early)
}

impl<K: Value, V: Value, A: Value> WindowOp<K, V, A> {
    fn close_of(&self, s: &WindowState<K, A>) -> i64 {
        match self.spec.kind {
            Kind::Hopping { .. } => s.end,
            Kind::Session { gap } => s.end.saturating_add(gap),
        }
    }

    fn emit(&mut self, cx: &mut Cx<'_>, at: &[u8], timing: Timing) -> Result<(), TaskError> {
        let discarding = self.spec.discarding && matches!(self.spec.kind, Kind::Hopping { .. });
        let init = self.init.clone();
        let Some(s) = self.state.get_mut(at) else { return Ok(()) };
        let value = if discarding { std::mem::replace(&mut s.acc, init()) } else { s.acc.clone() };
        let pane = Pane { start: s.start, end: s.end, value, timing };
        let ts = match self.spec.kind {
            Kind::Hopping { .. } => s.end - 1,
            Kind::Session { .. } => s.end,
        };
        s.pending = 0;
        s.fired_at = cx.now_ms;
        if timing != Timing::Early {
            s.fired = true;
        }
        let key = s.key.clone();
        self.next.push(cx, key, pane, ts)
    }

    fn late(&mut self, cx: &mut Cx<'_>, key: K, value: V, ts: i64) -> Result<(), TaskError> {
        self.late_records.inc();
        if let Some(stream) = &self.late {
            cx.out.send(OutgoingEnvelope {
                stream,
                partition: None,
                key: Some(key),
                message: Some(value),
                timestamp: Some(ts),
                headers: Vec::new(),
            })?;
        }
        Ok(())
    }

    /// After an update of the window at `at`: early or late panes.
    fn after_update(&mut self, cx: &mut Cx<'_>, at: Vec<u8>) -> Result<(), TaskError> {
        let Some(s) = self.state.get(&at) else { return Ok(()) };
        match pane_due(self.wm, self.spec.early_count, self.close_of(s), s) {
            Some(timing) => self.emit(cx, &at, timing),
            None => Ok(()),
        }
    }

    fn push_time_window(
        &mut self,
        cx: &mut Cx<'_>,
        key: K,
        value: V,
        ts: i64,
        size: i64,
        advance: i64,
    ) -> Result<(), TaskError> {
        // The windows [start, start + size) holding ts: start a multiple of
        // advance in (ts - size, last]. The earliest expire first.
        let last = ts - ts.rem_euclid(advance);
        let mut start = last;
        while start.saturating_sub(advance) > ts.saturating_sub(size) {
            start -= advance;
        }
        while start <= last && start.saturating_add(size).saturating_add(self.spec.lateness) <= self.wm {
            start += advance;
        }
        if start > last {
            return self.late(cx, key, value, ts);
        }
        // One clone per window but the last, which takes the value.
        let mut value = Some(value);
        while start <= last {
            let v = if start + advance > last { value.take() } else { value.clone() };
            let Some(v) = v else { break };
            // The window's state key, built in a reused buffer: the lookup
            // of an open window allocates nothing.
            let mut at = std::mem::take(&mut self.at_buf);
            state_key_into(&mut at, start + size, start, &self.key_buf);
            let due = match self.state.get_mut(&at) {
                Some(s) => {
                    let acc = std::mem::replace(&mut s.acc, (self.init)());
                    s.acc = (self.fold)(&key, v, acc);
                    s.pending += 1;
                    pane_due(self.wm, self.spec.early_count, start + size, s)
                }
                None => {
                    let acc = (self.fold)(&key, v, (self.init)());
                    let s = WindowState {
                        key: key.clone(),
                        start,
                        end: start + size,
                        acc,
                        pending: 1,
                        fired: false,
                        fired_at: cx.now_ms,
                    };
                    let due = pane_due(self.wm, self.spec.early_count, start + size, &s);
                    self.state.put(at.clone(), s);
                    due
                }
            };
            if let Some(timing) = due {
                self.emit(cx, &at, timing)?;
            }
            self.at_buf = at;
            start += advance;
        }
        Ok(())
    }

    fn push_session(&mut self, cx: &mut Cx<'_>, key: K, value: V, ts: i64, gap: i64) -> Result<(), TaskError> {
        let open = self.sessions.get(&self.key_buf).cloned().unwrap_or_default();
        let touching: Vec<Vec<u8>> = open
            .into_iter()
            .filter(|at| {
                self.state.get(at).is_some_and(|s| s.start.saturating_sub(gap) <= ts && ts <= s.end.saturating_add(gap))
            })
            .collect();
        if touching.is_empty() && ts.saturating_add(gap).saturating_add(self.spec.lateness) <= self.wm {
            return self.late(cx, key, value, ts);
        }
        let mut merged = WindowState {
            key: key.clone(),
            start: ts,
            end: ts,
            acc: (self.fold)(&key, value, (self.init)()),
            pending: 1,
            fired: false,
            fired_at: cx.now_ms,
        };
        for at in &touching {
            if let Some(s) = self.state.remove(at) {
                merged.start = merged.start.min(s.start);
                merged.end = merged.end.max(s.end);
                merged.pending += s.pending;
                merged.fired |= s.fired;
                let merge = self
                    .merge
                    .clone()
                    .ok_or_else(|| TaskError::msg(format!("window '{}': sessions need a merge function", self.name)))?;
                merged.acc = merge(&key, s.acc, merged.acc);
            }
        }
        let at = state_key(merged.end.saturating_add(gap), merged.start, &self.key_buf);
        let list = self.sessions.entry(self.key_buf.clone()).or_default();
        list.retain(|k| !touching.contains(k));
        list.push(at.clone());
        self.state.put(at.clone(), merged);
        self.after_update(cx, at)
    }
}

impl<K: Value, V: Value, A: Value> Push<K, V> for WindowOp<K, V, A> {
    fn push(&mut self, cx: &mut Cx<'_>, key: K, value: V, ts: i64) -> Result<(), TaskError> {
        if ts < 0 {
            return Err(no_event_time(format_args!("window '{}'", self.name), ts));
        }
        self.key_buf.clear();
        self.key_serde.encode(&key, &mut self.key_buf)?;
        match self.spec.kind {
            Kind::Hopping { size, advance } => self.push_time_window(cx, key, value, ts, size, advance),
            Kind::Session { gap } => self.push_session(cx, key, value, ts, gap),
        }
    }

    fn watermark(&mut self, cx: &mut Cx<'_>, wm: i64) -> Result<(), TaskError> {
        // An idle input closes nothing; what follows still learns of it (and
        // of a watermark that did not advance, which ends the idleness).
        if wm == IDLE || wm <= self.wm {
            return self.next.watermark(cx, wm);
        }
        self.wm = wm;
        let due: Vec<Vec<u8>> =
            self.state.range(..state_key(wm.saturating_add(1), i64::MIN, &[])).map(|(k, _)| k.clone()).collect();
        for at in due {
            let Some(s) = self.state.get(&at) else { continue };
            let close = bytes_time(&at);
            // A discarding window with nothing new since an early pane has nothing to say.
            let fire = !(s.fired || (s.pending == 0 && self.spec.discarding));
            if fire {
                self.emit(cx, &at, Timing::OnTime)?;
            } else if let Some(s) = self.state.get_mut(&at) {
                s.fired = true;
            }
            if close.saturating_add(self.spec.lateness) <= wm {
                self.state.remove(&at);
                let kb = at[16..].to_vec();
                if let Some(list) = self.sessions.get_mut(&kb) {
                    list.retain(|k| k != &at);
                    if list.is_empty() {
                        self.sessions.remove(&kb);
                    }
                }
            }
        }
        self.next.watermark(cx, wm)
    }
}

impl<K: Value, V: Value, A: Value> Hook for WindowOp<K, V, A> {
    fn tick(&mut self, cx: &mut Cx<'_>) -> Result<(), TaskError> {
        let Some(every) = self.spec.early_every else { return Ok(()) };
        let due: Vec<Vec<u8>> = self
            .state
            .iter()
            .filter(|(_, s)| !s.fired && s.pending > 0 && cx.now_ms.saturating_sub(s.fired_at) >= every)
            .map(|(k, _)| k.clone())
            .collect();
        for at in due {
            self.emit(cx, &at, Timing::Early)?;
        }
        Ok(())
    }

    fn before_commit(&mut self, _: &mut Cx<'_>) -> Result<(), TaskError> {
        self.state.flush()
    }
}

/// Forwards to the shared window operator (registered as a hook too).
struct Shared<T>(Rc<RefCell<T>>);
impl<K, V, T: Push<K, V>> Push<K, V> for Shared<T> {
    fn push(&mut self, cx: &mut Cx<'_>, key: K, value: V, ts: i64) -> Result<(), TaskError> {
        self.0.borrow_mut().push(cx, key, value, ts)
    }
    fn watermark(&mut self, cx: &mut Cx<'_>, wm: i64) -> Result<(), TaskError> {
        self.0.borrow_mut().watermark(cx, wm)
    }
}

impl<K: Value, V: Value> Stream<K, V> {
    /// Groups the records of each key into windows (the operator `name`
    /// keeps them in the store `name`). The records must be partitioned by
    /// key, and their input must have event time.
    pub fn window(&self, name: &str, windows: Windows) -> Windowed<K, V> {
        Windowed { stream: self.clone(), name: name.to_owned(), spec: windows, late: None }
    }
}

impl<K: Value, V: Value> Windowed<K, V> {
    /// Sends records later than the allowed lateness to `output` (they are
    /// counted in the task metric `late-records` either way).
    pub fn late_to(mut self, output: &Output<K, V>) -> Self {
        self.late = Some(output.id.clone());
        self
    }

    /// Folds each window's records: `fold(key, value, aggregate)`, starting
    /// from `init()`. Session windows need [`Windowed::aggregate_sessions`].
    pub fn aggregate<A: Value>(
        self,
        init: impl Fn() -> A + Send + Sync + 'static,
        fold: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
    ) -> Stream<K, Pane<A>> {
        if matches!(self.spec.kind, Kind::Session { .. }) {
            self.stream.b.borrow_mut().errors.push(format!(
                "window '{}': session windows merge, so use aggregate_sessions (with a merge function) or count",
                self.name
            ));
        }
        self.build(Arc::new(init), Arc::new(fold), None)
    }

    /// As [`Windowed::aggregate`], for session windows: `merge(key, a, b)`
    /// combines the aggregates of two sessions a record bridges.
    pub fn aggregate_sessions<A: Value>(
        self,
        init: impl Fn() -> A + Send + Sync + 'static,
        fold: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        merge: impl Fn(&K, A, A) -> A + Send + Sync + 'static,
    ) -> Stream<K, Pane<A>> {
        self.build(Arc::new(init), Arc::new(fold), Some(Arc::new(merge)))
    }

    /// Counts each window's records.
    pub fn count(self) -> Stream<K, Pane<i64>> {
        self.build(
            Arc::new(|| 0_i64),
            Arc::new(|_: &K, _: V, n: i64| n + 1),
            Some(Arc::new(|_: &K, a: i64, b: i64| a + b)),
        )
    }

    fn build<A: Value>(
        self,
        init: Arc<dyn Fn() -> A + Send + Sync>,
        fold: Fold<K, V, A>,
        merge: Option<Merge<K, A>>,
    ) -> Stream<K, Pane<A>> {
        let Windowed { stream, name, spec, late } = self;
        if let Kind::Hopping { size, advance } = spec.kind
            && advance > size
        {
            stream.b.borrow_mut().errors.push(format!(
                "window '{name}': hopping windows of {size} ms every {advance} ms leave records between windows; \
                 the advance must not exceed the size"
            ));
        }
        let detail = format!("{:?}, lateness {} ms, store {name}", spec.kind, spec.lateness);
        let op_name = name.clone();
        let out = stream.then("window", Some(&name), detail, move |init_, next| {
            let serdes = init_.ctx.serdes();
            let key_serde = serdes.resolve::<K>(default_serde::<K>()).map_err(|e| TaskError::msg(e.to_string()))?;
            let late = match &late {
                Some(id) => Some(init_.stream(id)?),
                None => None,
            };
            let state = Mirror::load(init_.ctx.store(&op_name)?)?;
            let mut sessions: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
            if matches!(spec.kind, Kind::Session { .. }) {
                for (k, _) in state.iter() {
                    sessions.entry(k[16..].to_vec()).or_default().push(k.clone());
                }
            }
            let op = Rc::new(RefCell::new(WindowOp {
                name: op_name.clone(),
                spec: spec.clone(),
                state,
                sessions,
                key_serde,
                init: init.clone(),
                fold: fold.clone(),
                merge: merge.clone(),
                next,
                late,
                late_records: init_.ctx.counter("late-records"),
                wm: i64::MIN,
                key_buf: Vec::new(),
                at_buf: Vec::new(),
            }));
            init_.hook(op.clone());
            Ok(Box::new(Shared(op)))
        });
        let decl = StoreDecl { name, key_serde: "bytes", msg_serde: "bytes", logged: true, small: false };
        stream.b.borrow_mut().add_store(out.node, decl);
        out
    }
}
