//! The operator graph: a description built once in `main`, instantiated once
//! per task.
//!
//! Each node keeps, type-erased, the factories of the operators that consume
//! its output. Instantiating a node builds its consumers first and hands
//! them to the node's operator, so a message moves through a task as plain
//! method calls: no queues, no boxing per message, no dynamic typing on the
//! hot path beyond one virtual call per operator.
//!
//! This module must never do I/O: operators reach stores and the collector
//! only through what [`Init`] and [`Cx`] give them.

use gregor_api::{Data, MessageCollector, TaskContext, TaskError};
use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// A node's index in [`Graph::nodes`].
pub(crate) type NodeId = usize;

/// What flows between operators: any key or value gregor can carry, and
/// clone (a stream consumed by several operators hands each its copy).
pub trait Value: Data + Clone {}
impl<T: Data + Clone> Value for T {}

/// Where the message being processed came from: intermediate sends carry it
/// so that the consuming task drops what a restarted producer re-sends.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Origin {
    /// A 64-bit hash of the input partition; 0 for sends not caused by a
    /// message (processing-time firings, end of input): never deduplicated.
    pub id: u64,
    /// The message's offset.
    pub offset: u64,
    /// Intermediate sends made so far while processing it.
    pub next_index: u32,
}

/// What an operator gets with each call.
pub(crate) struct Cx<'a> {
    pub out: &'a mut MessageCollector,
    /// Processing time (the container's clock).
    pub now_ms: i64,
    pub origin: Origin,
}

/// The error of an operator that needs event time (`what`: "window 'w'",
/// "join 'j'") given a record without one (a negative time: its message
/// carries no timestamp).
pub(crate) fn no_event_time(what: std::fmt::Arguments<'_>, ts: i64) -> TaskError {
    TaskError::msg(format!(
        "{what}: a record has no event time ({ts}: its message carries no timestamp); give its input an EventTime::extract"
    ))
}

/// An operator: consumes the records and watermarks of one stream.
pub(crate) trait Push<K, V> {
    /// A record with its event time.
    fn push(&mut self, cx: &mut Cx<'_>, key: K, value: V, ts: i64) -> Result<(), TaskError>;
    /// No record with an event time below `wm` is expected any more.
    fn watermark(&mut self, cx: &mut Cx<'_>, wm: i64) -> Result<(), TaskError>;
    /// The key of a record coming soon, as `K`'s default serde writes it
    /// (the serde of the stores keyed by it): an operator with a store
    /// keyed by it starts loading the key's entry
    /// ([`gregor_api::Store::prefetch_raw`]). Returns whether this operator
    /// or one it feeds prefetches, the same answer at every call; the
    /// default, no: the look-ahead stops at every operator but those that
    /// keep keys (`filter`, `map_values`, `flat_map_values`) and fan-outs.
    fn prefetch(&mut self, _key: &[u8]) -> bool {
        false
    }
}

/// Lifecycle calls for operators that keep state or act on processing time.
pub(crate) trait Hook {
    /// Called every `task.window.ms` (processing time).
    fn tick(&mut self, _cx: &mut Cx<'_>) -> Result<(), TaskError> {
        Ok(())
    }
    /// Called at the start of every commit: write in-memory state to stores.
    fn before_commit(&mut self, _cx: &mut Cx<'_>) -> Result<(), TaskError> {
        Ok(())
    }
}

pub(crate) type Factory<K, V> = Arc<dyn Fn(&mut Init<'_, '_>) -> Result<Box<dyn Push<K, V>>, TaskError> + Send + Sync>;

/// One operator of the description.
pub(crate) struct Node {
    /// Unique in the graph; names its stores and intermediate stream.
    pub name: String,
    /// What it does (`map`, `window`, ...), for the plan.
    pub op: &'static str,
    /// Upstream nodes.
    pub inputs: Vec<NodeId>,
    /// One line of detail for the plan.
    pub detail: String,
    /// Stores it owns.
    pub stores: Vec<String>,
    /// `Vec<Factory<K, V>>` for the node's output types.
    pub outs: Box<dyn Any + Send + Sync>,
}

/// The frozen description.
#[derive(Default)]
pub(crate) struct Graph {
    pub nodes: Vec<Node>,
    /// Stream ids resolved to streams (filled in from the config).
    pub streams: HashMap<String, gregor_api::SystemStream>,
    /// (operator, node, node): an operator that pairs the records of two
    /// nodes by key within a task, so the streams they come from must have
    /// as many partitions (checked when tasks start).
    pub co_partitioned: Vec<(String, NodeId, NodeId)>,
}

impl Graph {
    pub(crate) fn add_out<K: Value, V: Value>(&mut self, node: NodeId, factory: Factory<K, V>) {
        self.outs_mut::<K, V>(node).push(factory);
    }

    fn outs_mut<K: Value, V: Value>(&mut self, node: NodeId) -> &mut Vec<Factory<K, V>> {
        #[allow(clippy::expect_used)]
        self.nodes[node]
            .outs
            .downcast_mut::<Vec<Factory<K, V>>>()
            .expect("a stream handle's types are its node's output types")
    }
}

/// Instantiates the operators of one task.
pub(crate) struct Init<'g, 'c> {
    graph: &'g Graph,
    pub ctx: &'g TaskContext<'c>,
    shared: HashMap<NodeId, Box<dyn Any>>,
    pub hooks: Vec<Rc<RefCell<dyn Hook>>>,
    /// Tasks of the job, all of which write every intermediate stream.
    pub producing_tasks: u32,
}

impl<'g, 'c> Init<'g, 'c> {
    pub(crate) fn new(graph: &'g Graph, ctx: &'g TaskContext<'c>) -> Self {
        Init { graph, ctx, shared: HashMap::new(), hooks: Vec::new(), producing_tasks: 1 }
    }

    /// The operators consuming `node`'s output, as one.
    pub(crate) fn downstream<K: Value, V: Value>(&mut self, node: NodeId) -> Result<Box<dyn Push<K, V>>, TaskError> {
        let factories = match self.graph.nodes[node].outs.downcast_ref::<Vec<Factory<K, V>>>() {
            Some(f) => f.clone(),
            None => {
                return Err(TaskError::msg(format!(
                    "operator '{}': internal type mismatch",
                    self.graph.nodes[node].name
                )));
            }
        };
        let mut built = Vec::with_capacity(factories.len());
        for f in &factories {
            built.push(f(self)?);
        }
        Ok(match built.len() {
            0 => Box::new(Discard),
            1 => built.pop().unwrap_or_else(|| Box::new(Discard)),
            _ => Box::new(Fanout(built)),
        })
    }

    /// The state of a node several upstream edges share (merge, join), made once.
    pub(crate) fn shared<S: 'static>(
        &mut self,
        node: NodeId,
        make: impl FnOnce(&mut Self) -> Result<S, TaskError>,
    ) -> Result<Rc<RefCell<S>>, TaskError> {
        if let Some(s) = self.shared.get(&node).and_then(|b| b.downcast_ref::<Rc<RefCell<S>>>()) {
            return Ok(s.clone());
        }
        let s = Rc::new(RefCell::new(make(self)?));
        self.shared.insert(node, Box::new(s.clone()));
        Ok(s)
    }

    /// The stream that stream id `id` names.
    pub(crate) fn stream(&self, id: &str) -> Result<gregor_api::SystemStream, TaskError> {
        self.graph.streams.get(id).cloned().ok_or_else(|| TaskError::msg(format!("stream id '{id}' was not resolved")))
    }

    pub(crate) fn hook(&mut self, hook: Rc<RefCell<dyn Hook>>) {
        self.hooks.push(hook);
    }
}

/// A stream nobody consumes.
struct Discard;
impl<K, V> Push<K, V> for Discard {
    fn push(&mut self, _: &mut Cx<'_>, _: K, _: V, _: i64) -> Result<(), TaskError> {
        Ok(())
    }
    fn watermark(&mut self, _: &mut Cx<'_>, _: i64) -> Result<(), TaskError> {
        Ok(())
    }
}

/// A stream several operators consume: each gets a copy, in the order they
/// were attached.
struct Fanout<K, V>(Vec<Box<dyn Push<K, V>>>);
impl<K: Clone, V: Clone> Push<K, V> for Fanout<K, V> {
    fn prefetch(&mut self, key: &[u8]) -> bool {
        self.0.iter_mut().fold(false, |any, p| p.prefetch(key) | any)
    }
    fn push(&mut self, cx: &mut Cx<'_>, key: K, value: V, ts: i64) -> Result<(), TaskError> {
        let (last, rest) = self.0.split_last_mut().ok_or_else(|| TaskError::msg("empty fan-out"))?;
        for p in rest {
            p.push(cx, key.clone(), value.clone(), ts)?;
        }
        last.push(cx, key, value, ts)
    }
    fn watermark(&mut self, cx: &mut Cx<'_>, wm: i64) -> Result<(), TaskError> {
        for p in &mut self.0 {
            p.watermark(cx, wm)?;
        }
        Ok(())
    }
}

/// The watermark of a stream whose partitions are all idle (see
/// `clock.rs`): operators that combine several streams ([`MinWatermark`])
/// leave it out until a watermark comes again; the others pass it on and
/// otherwise ignore it. It travels in intermediate streams' watermark
/// messages too.
pub(crate) const IDLE: i64 = i64::MAX - 1;

/// The watermark of an operator with several inputs: the slowest input's,
/// leaving out idle inputs ([`IDLE`]); idle itself when every input is.
/// It never goes back.
#[derive(Debug, Clone)]
pub(crate) struct MinWatermark {
    inputs: Vec<i64>,
    idle: Vec<bool>,
    current: i64,
    idle_reported: bool,
}

impl MinWatermark {
    pub(crate) fn new(n: usize) -> Self {
        MinWatermark { inputs: vec![i64::MIN; n], idle: vec![false; n], current: i64::MIN, idle_reported: false }
    }

    /// Input `i` moved to `wm` (or became idle); what to pass on: the new
    /// combined watermark if it advanced, [`IDLE`] when every input just
    /// became idle, the current one when an input is back after that.
    pub(crate) fn update(&mut self, i: usize, wm: i64) -> Option<i64> {
        self.idle[i] = wm == IDLE;
        if wm != IDLE && wm > self.inputs[i] {
            self.inputs[i] = wm;
        }
        let active = self.inputs.iter().zip(&self.idle).filter(|(_, idle)| !**idle).map(|(w, _)| *w);
        let Some(min) = active.min() else {
            return (!std::mem::replace(&mut self.idle_reported, true)).then_some(IDLE);
        };
        if std::mem::take(&mut self.idle_reported) {
            self.current = self.current.max(min);
            return Some(self.current);
        }
        (min > self.current).then(|| {
            self.current = min;
            min
        })
    }

    pub(crate) fn current(&self) -> i64 {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_combined_watermark_is_the_slowest_input_and_never_goes_back() {
        let mut w = MinWatermark::new(2);
        assert_eq!(w.update(0, 10), None, "input 1 has said nothing yet");
        assert_eq!(w.update(1, 5), Some(5));
        assert_eq!(w.update(1, 3), None, "a regression is ignored");
        assert_eq!(w.update(1, 20), Some(10));
        assert_eq!(w.current(), 10);
    }

    #[test]
    fn an_idle_input_is_left_out_and_every_input_idle_is_idle() {
        let mut w = MinWatermark::new(2);
        assert_eq!(w.update(0, 10), None, "input 1 has said nothing yet");
        assert_eq!(w.update(1, IDLE), Some(10), "input 1 idle: left out");
        assert_eq!(w.update(0, 30), Some(30));
        assert_eq!(w.update(1, 20), None, "input 1 back, behind: it holds the watermark again");
        assert_eq!(w.update(1, 40), None, "input 0 is the slowest");
        assert_eq!(w.update(0, IDLE), Some(40), "input 0 idle");
        assert_eq!(w.update(1, IDLE), Some(IDLE), "both idle: idle");
        assert_eq!(w.update(1, IDLE), None, "said once");
        assert_eq!(w.update(0, 35), Some(40), "back: the current watermark, which did not go back");
        assert_eq!(w.current(), 40);
    }
}
