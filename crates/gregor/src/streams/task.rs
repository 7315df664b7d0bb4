//! The task a Streams API application compiles to: one per task of the job
//! model, running the operator graph over the task's input partitions.
//!
//! It reads messages undecoded ([`gregor_api::RawBytes`]) and lets each
//! source decode with its declared types, keeps one watermark clock per
//! source, and drives the operators' lifecycle (timer, commit, end of
//! input). It must never reorder the records of a partition.

use super::clock::SourceClock;
use super::graph::{Cx, Graph, Hook, Init, Origin};
use super::source::{Event, Source, SourceEnv, SourceError, SourceKind, SourceSpec};
use gregor_api::{
    Gauge, IncomingEnvelope, MessageCollector, RawBytes, StreamTask, SystemStream, TaskContext, TaskCoordinator,
    TaskError, Upcoming,
};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

/// The description, frozen and shared by every task of the job.
pub(crate) struct Frozen {
    pub graph: Graph,
    pub sources: Vec<SourceSpec>,
    pub job: String,
}

/// Filled in when the config is expanded, read when tasks start.
pub(crate) type FrozenSlot = Arc<Mutex<Option<Arc<Frozen>>>>;

/// A Streams API application's task (see the module docs).
pub struct GraphTask {
    slot: FrozenSlot,
    run: Option<Running>,
}

struct RunSource {
    source: Box<dyn Source>,
    clock: SourceClock,
    stream: SystemStream,
    kind: SourceKind,
    /// Hands upcoming keys on to a store ([`Source::prefetch`]; its answer
    /// is the same at every call, so it is asked once, at `init`).
    prefetches: bool,
}

struct Running {
    sources: Vec<RunSource>,
    hooks: Vec<Rc<RefCell<dyn Hook>>>,
    /// Per input partition seen: its source (index into `sources`) and its
    /// origin id. The partitions are clones of the run loop's, so they
    /// compare by pointer (`SystemStream`'s equality): no string comparison
    /// per message.
    partitions: Vec<(gregor_api::SystemStreamPartition, Option<usize>, u64)>,
    bad: BadMessages,
    watermark: Gauge,
    bad_count: gregor_api::Counter,
}

/// The job's deserialization policy, applied to what a source cannot decode.
enum BadMessages {
    Fail,
    Drop,
    DeadLetter(SystemStream),
}

impl GraphTask {
    /// The running graph and a context for a call that no input message
    /// caused (`window`, `before_commit`, `end_of_stream`: no origin).
    fn running<'c>(
        &mut self,
        collector: &'c mut MessageCollector,
        coordinator: &TaskCoordinator,
    ) -> Result<(&mut Running, Cx<'c>), TaskError> {
        let run = self.run.as_mut().ok_or_else(|| TaskError::msg("not initialised"))?;
        Ok((run, Cx { out: collector, now_ms: coordinator.now_ms(), origin: Origin::default() }))
    }

    pub(crate) fn new(slot: FrozenSlot) -> Self {
        GraphTask { slot, run: None }
    }
}

/// The serde names config gives stream id `id` (through its physical stream).
pub(crate) fn serde_names(ctx: &TaskContext<'_>, id: &str) -> (String, String) {
    let c = ctx.config();
    let get = |suffix: &str| {
        c.get(&format!("streams.{id}.samza.{suffix}"))
            .or_else(|| {
                let system = c.get(&format!("streams.{id}.samza.system"))?;
                c.get(&format!("systems.{system}.samza.{suffix}"))
            })
            .unwrap_or("bytes")
            .to_owned()
    };
    (get("key.serde"), get("msg.serde"))
}

/// The error for an operator that pairs records by key within a task
/// (`op`) when the streams of one side (`a`: stream, partition count) and
/// of the other (`b`) are not partitioned alike. Unknown counts pass.
pub(crate) fn co_partitioning_error(
    op: &str,
    a: &[(SystemStream, Option<u32>)],
    b: &[(SystemStream, Option<u32>)],
) -> Option<String> {
    for (sa, na) in a {
        for (sb, nb) in b {
            if let (Some(x), Some(y)) = (na, nb)
                && x != y
            {
                return Some(format!(
                    "{op}: {sa} has {x} partitions but {sb} has {y}; a task pairs only the records of its own \
                     partitions, so both must be partitioned alike (the same key, the same partition count): \
                     give them the same count, or repartition one with partition_by"
                ));
            }
        }
    }
    None
}

/// Refuses to start when an operator's two sides are not co-partitioned.
fn check_co_partitioning(frozen: &Frozen, ctx: &TaskContext<'_>) -> Result<(), TaskError> {
    // The streams a node's records are read from: the nearest sources up
    // the graph (an intermediate stream, not what was repartitioned into it).
    let side = |node: super::graph::NodeId| -> Vec<(SystemStream, Option<u32>)> {
        let mut out = Vec::new();
        let mut todo = vec![node];
        while let Some(n) = todo.pop() {
            match frozen.sources.iter().find(|s| s.node == n) {
                Some(s) => out.extend(frozen.graph.streams.get(&s.stream_id(&frozen.job))),
                None => todo.extend(&frozen.graph.nodes[n].inputs),
            }
        }
        out.into_iter().map(|stream| (stream.clone(), ctx.partition_count(stream))).collect()
    };
    for (op, a, b) in &frozen.graph.co_partitioned {
        if let Some(e) = co_partitioning_error(op, &side(*a), &side(*b)) {
            return Err(TaskError::msg(e));
        }
    }
    Ok(())
}

impl Running {
    /// The source of partition `ssp` (`None`: not an input of the
    /// application) and its origin id.
    fn partition(&mut self, ssp: &gregor_api::SystemStreamPartition) -> (Option<usize>, u64) {
        if let Some(i) = self.partitions.iter().position(|(s, _, _)| s == ssp) {
            // Messages come in runs of one partition: the last one found is
            // looked at first, and a miss costs a comparison of names.
            if i != 0 {
                self.partitions.swap(0, i);
            }
            let (_, source, id) = &self.partitions[0];
            return (*source, *id);
        }
        let source = self.sources.iter().position(|s| s.stream == ssp.stream);
        let id = super::envelope::origin_id(&ssp.to_string());
        self.partitions.push((ssp.clone(), source, id));
        (source, id)
    }

    /// Advances every source's watermark that can (time passes for idle partitions).
    fn advance(&mut self, cx: &mut Cx<'_>) -> Result<(), TaskError> {
        for s in &mut self.sources {
            if let Some(wm) = s.clock.advance(cx.now_ms) {
                s.source.watermark(cx, wm)?;
            }
        }
        Ok(())
    }
}

impl StreamTask for GraphTask {
    type Key = RawBytes;
    type Message = RawBytes;

    fn init(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let frozen =
            self.slot.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or_else(|| {
                TaskError::msg("the Streams API application was not described before its tasks started")
            })?;
        check_co_partitioning(&frozen, ctx)?;
        let mut init = Init::new(&frozen.graph, ctx);
        // Every task of the job writes every intermediate stream.
        init.producing_tasks = ctx.task_count().max(1);
        let mut sources = Vec::new();
        for spec in &frozen.sources {
            let id = spec.stream_id(&frozen.job);
            let stream = init.stream(&id)?;
            let (key_serde, msg_serde) = serde_names(ctx, &id);
            let env = SourceEnv { stream: stream.clone(), key_serde, msg_serde };
            let mut source = (spec.make)(&mut init, &env)?;
            let partitions: Vec<u32> =
                ctx.partitions().iter().filter(|p| p.stream == stream).map(|p| p.partition).collect();
            let clock = match spec.kind {
                SourceKind::Intermediate => SourceClock::intermediate(&partitions),
                _ => SourceClock::input(&partitions, spec.max_out_of_order_ms, spec.idle_ms),
            };
            let prefetches = source.prefetch(&[]);
            sources.push(RunSource { source, clock, stream, kind: spec.kind, prefetches });
        }
        let hooks = std::mem::take(&mut init.hooks);
        let c = ctx.config();
        let bad =
            match (c.get_bool("task.drop.deserialization.errors", false)?, c.get("task.deserialization.errors.stream"))
            {
                (_, Some(s)) => BadMessages::DeadLetter(SystemStream::parse(s).ok_or_else(|| {
                    TaskError::msg(format!("task.deserialization.errors.stream: '{s}' is not system.stream"))
                })?),
                (true, None) => BadMessages::Drop,
                (false, None) => BadMessages::Fail,
            };
        self.run = Some(Running {
            sources,
            hooks,
            partitions: Vec::new(),
            bad,
            watermark: ctx.gauge("watermark"),
            bad_count: ctx.counter("deserialization-errors"),
        });
        Ok(())
    }

    /// Hands the key to the message's sources that prefetch (an
    /// aggregation or table right after the source); says no when none
    /// does.
    fn prefetch(&mut self, upcoming: Upcoming<'_>) -> bool {
        let Some(run) = self.run.as_mut() else { return false };
        if let (Some(key), (Some(i), _)) = (upcoming.key, run.partition(upcoming.ssp)) {
            let s = &mut run.sources[i];
            if s.prefetches {
                s.source.prefetch(key);
            }
        }
        run.sources.iter().any(|s| s.prefetches)
    }

    fn process(
        &mut self,
        envelope: IncomingEnvelope<'_, RawBytes, RawBytes>,
        collector: &mut MessageCollector,
        coordinator: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let run = self.run.as_mut().ok_or_else(|| TaskError::msg("not initialised"))?;
        let ssp = envelope.ssp;
        let (source, origin) = run.partition(ssp);
        let Some(i) = source else {
            return Err(TaskError::msg(format!("{ssp} is not an input of this application")));
        };
        let origin = Origin { id: origin, offset: envelope.offset, next_index: 0 };
        let mut cx = Cx { out: collector, now_ms: coordinator.now_ms(), origin };
        let key = envelope.key.map(|k| k.0);
        let value = envelope.message.map(|m| m.0);
        // Shares the buffers (no copy) so a bad message can be set aside whole.
        let kept = matches!(run.bad, BadMessages::DeadLetter(_)).then(|| (key.clone(), value.clone()));
        let source = &mut run.sources[i];
        let event = source.source.message(&mut cx, ssp.partition, key, value, envelope.timestamp);
        match event {
            Ok(Event::Record(ts)) => source.clock.record(ssp.partition, ts, cx.now_ms),
            Ok(Event::Upstream { task, tasks, watermark }) => {
                source.clock.upstream(ssp.partition, &task, tasks, watermark, cx.now_ms)
            }
            Ok(Event::Nothing) => {}
            Err(SourceError::Task(e)) => return Err(e),
            Err(SourceError::Decode(why)) => {
                let what = format!("{ssp} offset {}: cannot decode: {why}", envelope.offset);
                match &run.bad {
                    BadMessages::Fail => return Err(TaskError::msg(what)),
                    BadMessages::Drop => tracing::warn!("skipping a message: {what}"),
                    BadMessages::DeadLetter(stream) => {
                        tracing::warn!(dead_letters = %stream, "setting aside a message: {what}");
                        let (k, v) = kept.unwrap_or_default();
                        cx.out.send_raw(stream, None, k.as_deref(), v.as_deref(), Some(envelope.timestamp));
                    }
                }
                run.bad_count.inc();
                return Ok(());
            }
        }
        if let Some(wm) = source.clock.advance(cx.now_ms) {
            source.source.watermark(&mut cx, wm)?;
        }
        Ok(())
    }

    fn window(&mut self, collector: &mut MessageCollector, coordinator: &mut TaskCoordinator) -> Result<(), TaskError> {
        let (run, mut cx) = self.running(collector, coordinator)?;
        run.advance(&mut cx)?;
        for h in &run.hooks {
            h.borrow_mut().tick(&mut cx)?;
        }
        let wm = run.sources.iter().filter(|s| s.kind != SourceKind::Table).map(|s| s.clock.current()).min();
        if let Some(wm) = wm.filter(|w| *w > i64::MIN) {
            run.watermark.set(wm);
        }
        Ok(())
    }

    fn before_commit(
        &mut self,
        collector: &mut MessageCollector,
        coordinator: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let (run, mut cx) = self.running(collector, coordinator)?;
        for s in &mut run.sources {
            s.source.before_commit()?;
        }
        for h in &run.hooks {
            h.borrow_mut().before_commit(&mut cx)?;
        }
        Ok(())
    }

    /// The end of the input (`--until-end`): event time jumps to the end, so
    /// every open window fires and every pending join result is emitted.
    fn end_of_stream(
        &mut self,
        collector: &mut MessageCollector,
        coordinator: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let (run, mut cx) = self.running(collector, coordinator)?;
        for s in &mut run.sources {
            if s.clock.finish() {
                s.source.watermark(&mut cx, i64::MAX)?;
            }
        }
        run.watermark.set(i64::MAX);
        Ok(())
    }
}
