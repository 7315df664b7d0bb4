//! Stream-stream joins within a time bound (an interval join in event time).
//!
//! A left record at time `l` and a right record of the same key at time `r`
//! match when `l + lower <= r <= l + upper`. Both sides are buffered in
//! stores with changelogs (`<name>-left`, `<name>-right`); a left record is
//! dropped once the join's watermark (the slower side's) passes `l + upper`,
//! a right one once it passes `r - lower`: no record that could still match
//! it can arrive. That is also when a left or outer join emits a record that
//! matched nothing. Every matching pair is emitted once, when its second
//! record arrives, with the later of the two times.
//!
//! The buffers must never drop a record a future match still needs: set
//! the inputs' `max_out_of_order` to cover how late records arrive.

use super::builder::{StoreDecl, Stream, default_serde};
use super::graph::{Cx, Factory, Hook, IDLE, Init, MinWatermark, Push, Value, no_event_time};
use super::state::{Mirror, time_bytes};
use gregor_api::{Serde, TaskError};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// The time bound of a stream-stream join.
#[derive(Debug, Clone, Copy)]
pub struct JoinWindow {
    lower: i64,
    upper: i64,
}

impl JoinWindow {
    /// Right records from `before` before to `after` after the left record
    /// (both inclusive).
    pub fn between(before: Duration, after: Duration) -> Self {
        let ms = |d: Duration| d.as_millis().min(i64::MAX as u128 / 2) as i64;
        JoinWindow { lower: -ms(before), upper: ms(after) }
    }

    /// Right records up to `d` after the left one (inclusive).
    pub fn within_after(d: Duration) -> Self {
        Self::between(Duration::ZERO, d)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Inner,
    Left,
    Outer,
}

#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "K: Serialize, V: Serialize", deserialize = "K: Deserialize<'de>, V: Deserialize<'de>"))]
struct Buffered<K, V> {
    key: K,
    value: V,
    ts: i64,
    matched: bool,
}

type JoinFn<K, L, R, O> = Arc<dyn Fn(&K, Option<&L>, Option<&R>) -> Option<O> + Send + Sync>;

struct JoinState<K, L, R, O> {
    name: String,
    kind: Kind,
    window: JoinWindow,
    left: Mirror<Buffered<K, L>>,
    right: Mirror<Buffered<K, R>>,
    /// (expiry time, side (0 left, 1 right), entry key).
    expiry: BTreeSet<(i64, u8, Vec<u8>)>,
    key_serde: Arc<dyn Serde<K>>,
    f: JoinFn<K, L, R, O>,
    next: Box<dyn Push<K, O>>,
    watermarks: MinWatermark,
    key_buf: Vec<u8>,
    last_origin: (u64, u64),
    seq: u32,
}

/// An entry key: key length, key, time, then where the record came from
/// (unique per record, and the same when a crash replays it).
fn entry_key(key: &[u8], ts: i64, origin: (u64, u64), seq: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + key.len() + 28);
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k.extend_from_slice(key);
    k.extend_from_slice(&time_bytes(ts));
    k.extend_from_slice(&origin.0.to_be_bytes());
    k.extend_from_slice(&origin.1.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn key_prefix_len(entry: &[u8]) -> usize {
    let mut n = [0u8; 4];
    n.copy_from_slice(&entry[..4]);
    4 + u32::from_be_bytes(n) as usize
}

fn range(prefix: &[u8], from: i64, to: i64) -> (Vec<u8>, Vec<u8>) {
    let mut a = prefix.to_vec();
    a.extend_from_slice(&time_bytes(from));
    let mut b = prefix.to_vec();
    b.extend_from_slice(&time_bytes(to));
    b.extend_from_slice(&[0xff; 24]);
    (a, b)
}

impl<K: Value, L: Value, R: Value, O: Value> JoinState<K, L, R, O> {
    fn entry(&mut self, cx: &Cx<'_>, key: &K, ts: i64) -> Result<Vec<u8>, TaskError> {
        if ts < 0 {
            return Err(no_event_time(format_args!("join '{}'", self.name), ts));
        }
        self.key_buf.clear();
        self.key_serde.encode(key, &mut self.key_buf)?;
        let origin = (cx.origin.id, cx.origin.offset);
        if origin == self.last_origin {
            self.seq += 1;
        } else {
            self.last_origin = origin;
            self.seq = 0;
        }
        Ok(entry_key(&self.key_buf, ts, origin, self.seq))
    }

    fn push_left(&mut self, cx: &mut Cx<'_>, key: K, value: L, ts: i64) -> Result<(), TaskError> {
        let at = self.entry(cx, &key, ts)?;
        let prefix = &at[..key_prefix_len(&at)];
        let (from, to) = range(prefix, ts.saturating_add(self.window.lower), ts.saturating_add(self.window.upper));
        let matches: Vec<Vec<u8>> = self.right.range(from..=to).map(|(k, _)| k.clone()).collect();
        for m in &matches {
            if let Some(r) = self.right.get_mut(m) {
                r.matched = true;
                let out = (self.f)(&key, Some(&value), Some(&r.value));
                let t = ts.max(r.ts);
                if let Some(out) = out {
                    self.next.push(cx, key.clone(), out, t)?;
                }
            }
        }
        let expires = ts.saturating_add(self.window.upper);
        if expires >= self.watermarks.current() {
            self.expiry.insert((expires, 0, at.clone()));
            self.left.put(at, Buffered { key, value, ts, matched: !matches.is_empty() });
        } else if matches.is_empty()
            && self.kind != Kind::Inner
            && let Some(out) = (self.f)(&key, Some(&value), None)
        {
            self.next.push(cx, key, out, ts)?;
        }
        Ok(())
    }

    fn push_right(&mut self, cx: &mut Cx<'_>, key: K, value: R, ts: i64) -> Result<(), TaskError> {
        let at = self.entry(cx, &key, ts)?;
        let prefix = &at[..key_prefix_len(&at)];
        let (from, to) = range(prefix, ts.saturating_sub(self.window.upper), ts.saturating_sub(self.window.lower));
        let matches: Vec<Vec<u8>> = self.left.range(from..=to).map(|(k, _)| k.clone()).collect();
        for m in &matches {
            if let Some(l) = self.left.get_mut(m) {
                l.matched = true;
                let out = (self.f)(&key, Some(&l.value), Some(&value));
                let t = ts.max(l.ts);
                if let Some(out) = out {
                    self.next.push(cx, key.clone(), out, t)?;
                }
            }
        }
        let expires = ts.saturating_sub(self.window.lower);
        if expires >= self.watermarks.current() {
            self.expiry.insert((expires, 1, at.clone()));
            self.right.put(at, Buffered { key, value, ts, matched: !matches.is_empty() });
        } else if matches.is_empty()
            && self.kind == Kind::Outer
            && let Some(out) = (self.f)(&key, None, Some(&value))
        {
            self.next.push(cx, key, out, ts)?;
        }
        Ok(())
    }

    fn watermark(&mut self, cx: &mut Cx<'_>, side: usize, wm: i64) -> Result<(), TaskError> {
        let Some(wm) = self.watermarks.update(side, wm) else { return Ok(()) };
        if wm == IDLE {
            return self.next.watermark(cx, wm);
        }
        while let Some(first) = self.expiry.first() {
            if first.0 >= wm {
                break;
            }
            let Some((_, side, at)) = self.expiry.pop_first() else { break };
            if side == 0 {
                if let Some(l) = self.left.remove(&at)
                    && !l.matched
                    && self.kind != Kind::Inner
                    && let Some(out) = (self.f)(&l.key, Some(&l.value), None)
                {
                    self.next.push(cx, l.key, out, l.ts)?;
                }
            } else if let Some(r) = self.right.remove(&at)
                && !r.matched
                && self.kind == Kind::Outer
                && let Some(out) = (self.f)(&r.key, None, Some(&r.value))
            {
                self.next.push(cx, r.key, out, r.ts)?;
            }
        }
        self.next.watermark(cx, wm)
    }
}

impl<K: Value, L: Value, R: Value, O: Value> Hook for JoinState<K, L, R, O> {
    fn before_commit(&mut self, _: &mut Cx<'_>) -> Result<(), TaskError> {
        self.left.flush()?;
        self.right.flush()
    }
}

struct LeftEdge<K, L, R, O>(Rc<RefCell<JoinState<K, L, R, O>>>);
struct RightEdge<K, L, R, O>(Rc<RefCell<JoinState<K, L, R, O>>>);

impl<K: Value, L: Value, R: Value, O: Value> Push<K, L> for LeftEdge<K, L, R, O> {
    fn push(&mut self, cx: &mut Cx<'_>, key: K, value: L, ts: i64) -> Result<(), TaskError> {
        self.0.borrow_mut().push_left(cx, key, value, ts)
    }
    fn watermark(&mut self, cx: &mut Cx<'_>, wm: i64) -> Result<(), TaskError> {
        self.0.borrow_mut().watermark(cx, 0, wm)
    }
}

impl<K: Value, L: Value, R: Value, O: Value> Push<K, R> for RightEdge<K, L, R, O> {
    fn push(&mut self, cx: &mut Cx<'_>, key: K, value: R, ts: i64) -> Result<(), TaskError> {
        self.0.borrow_mut().push_right(cx, key, value, ts)
    }
    fn watermark(&mut self, cx: &mut Cx<'_>, wm: i64) -> Result<(), TaskError> {
        self.0.borrow_mut().watermark(cx, 1, wm)
    }
}

impl<K: Value, L: Value> Stream<K, L> {
    /// Joins this stream with `right` within `window` of event time: every
    /// pair of records with the same key in the bound gives `f(key, left, right)`.
    /// Both streams must be partitioned by the key alike.
    pub fn join<R: Value, O: Value>(
        &self,
        right: &Stream<K, R>,
        name: &str,
        window: JoinWindow,
        f: impl Fn(&K, &L, &R) -> O + Send + Sync + 'static,
    ) -> Stream<K, O> {
        let f = Arc::new(move |k: &K, l: Option<&L>, r: Option<&R>| Some(f(k, l?, r?)));
        self.join_as(right, name, window, Kind::Inner, f)
    }

    /// As [`Stream::join`], and a left record that matched nothing gives
    /// `f(key, left, None)` once no match can come any more.
    pub fn left_join<R: Value, O: Value>(
        &self,
        right: &Stream<K, R>,
        name: &str,
        window: JoinWindow,
        f: impl Fn(&K, &L, Option<&R>) -> O + Send + Sync + 'static,
    ) -> Stream<K, O> {
        let f = Arc::new(move |k: &K, l: Option<&L>, r: Option<&R>| Some(f(k, l?, r)));
        self.join_as(right, name, window, Kind::Left, f)
    }

    /// As [`Stream::left_join`], and a right record that matched nothing
    /// gives `f(key, None, right)`.
    pub fn outer_join<R: Value, O: Value>(
        &self,
        right: &Stream<K, R>,
        name: &str,
        window: JoinWindow,
        f: impl Fn(&K, Option<&L>, Option<&R>) -> O + Send + Sync + 'static,
    ) -> Stream<K, O> {
        let f = Arc::new(move |k: &K, l: Option<&L>, r: Option<&R>| Some(f(k, l, r)));
        self.join_as(right, name, window, Kind::Outer, f)
    }

    fn join_as<R: Value, O: Value>(
        &self,
        right: &Stream<K, R>,
        name: &str,
        window: JoinWindow,
        kind: Kind,
        f: JoinFn<K, L, R, O>,
    ) -> Stream<K, O> {
        let detail = format!(
            "{kind:?} join, right within [{}, {}] ms, stores {name}-left, {name}-right",
            window.lower, window.upper
        );
        self.b.borrow_mut().graph.co_partitioned.push((format!("join '{name}'"), self.node, right.node));
        let id = self.b.borrow_mut().add_node::<K, O>("join", Some(name), vec![self.node, right.node], detail);
        let (left_store, right_store) = (format!("{name}-left"), format!("{name}-right"));
        for s in [&left_store, &right_store] {
            let decl =
                StoreDecl { name: s.clone(), key_serde: "bytes", msg_serde: "bytes", logged: true, small: false };
            self.b.borrow_mut().add_store(id, decl);
        }
        let join_name = name.to_owned();
        let make = move |init: &mut Init<'_, '_>| {
            let (ls, rs, f, name) = (left_store.clone(), right_store.clone(), f.clone(), join_name.clone());
            init.shared(id, move |init| {
                let key_serde =
                    init.ctx.serdes().resolve::<K>(default_serde::<K>()).map_err(|e| TaskError::msg(e.to_string()))?;
                let left: Mirror<Buffered<K, L>> = Mirror::load(init.ctx.store(&ls)?)?;
                let right: Mirror<Buffered<K, R>> = Mirror::load(init.ctx.store(&rs)?)?;
                let mut expiry = BTreeSet::new();
                for (k, b) in left.iter() {
                    expiry.insert((b.ts.saturating_add(window.upper), 0, k.clone()));
                }
                for (k, b) in right.iter() {
                    expiry.insert((b.ts.saturating_sub(window.lower), 1, k.clone()));
                }
                let next = init.downstream::<K, O>(id)?;
                Ok(JoinState {
                    name,
                    kind,
                    window,
                    left,
                    right,
                    expiry,
                    key_serde,
                    f,
                    next,
                    watermarks: MinWatermark::new(2),
                    key_buf: Vec::new(),
                    last_origin: (0, 0),
                    seq: 0,
                })
            })
        };
        let make = Arc::new(make);
        let m = make.clone();
        let left_edge: Factory<K, L> = Arc::new(move |init| {
            let state = m(init)?;
            init.hook(state.clone());
            Ok(Box::new(LeftEdge(state)))
        });
        let right_edge: Factory<K, R> = Arc::new(move |init| Ok(Box::new(RightEdge(make(init)?))));
        self.attach(left_edge);
        right.attach(right_edge);
        Stream::at(&self.b, id)
    }
}
