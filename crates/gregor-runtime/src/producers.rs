//! The container's producers (one per system) and the routing of task
//! output to partitions.
//!
//! Tasks' sends, changelog writes and checkpoints all go through here, so one
//! `flush` at commit makes everything durable in the right order. Shared by
//! the stores' changelog layers through an `Rc<RefCell<_>>`: all of it lives
//! on the container's one thread.
//!
//! The per-message path looks nothing up by name: an output stream becomes a
//! [`Router`] route once (partition count, producer), each partition a
//! producer slot once, and a task's sends name routes by index.

use crate::error::RuntimeError;
use crate::job_config::JobConfig;
use crate::systems::Systems;
use gregor_api::collector::PendingSend;
use gregor_api::system::{StreamKind, SystemError, SystemProducer};
use gregor_api::{SystemStream, SystemStreamPartition};
use gregor_kv::{ChangelogSink, KvError};
use hashbrown::HashMap;
use std::cell::RefCell;
use std::rc::Rc;

pub(crate) struct Producers {
    /// One per configured system, in name order.
    producers: Vec<Box<dyn SystemProducer>>,
    names: Vec<String>,
    /// Something was sent since the last publish.
    sent: bool,
    /// Under exactly-once: the transactional producer (the checkpoint
    /// system's), the only one the job may write through.
    transactional: Option<usize>,
    /// Under exactly-once on a system without transactions: tasks stamp
    /// what they send to intermediate streams and drop re-sent copies
    /// (`crate::sequences`).
    pub deduplicating: bool,
    /// The time stamped on changelog and checkpoint messages (updated per loop turn).
    pub now_ms: i64,
}

pub(crate) type SharedProducers = Rc<RefCell<Producers>>;

/// A partition of a producer: (producer index, slot).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    producer: usize,
    slot: u32,
}

impl Producers {
    /// The container's producers. Under exactly-once, the checkpoint
    /// system's becomes transactional as `transactional_id` first (which
    /// ends the open transaction of the container's previous run: do this
    /// before reading checkpoints or restoring stores).
    pub fn new(
        job: &JobConfig,
        systems: &Systems,
        now_ms: i64,
        transactional_id: &str,
    ) -> Result<Producers, SystemError> {
        let mut producers = Vec::new();
        let mut names = Vec::new();
        for name in job.systems.keys() {
            producers.push(systems.factory(name)?.producer()?);
            names.push(name.clone());
        }
        let mut p = Producers { producers, names, sent: false, transactional: None, deduplicating: false, now_ms };
        if job.exactly_once {
            let t = p.producer_of(&job.checkpoint_stream.system)?;
            if !p.producers[t].supports_transactions() {
                tracing::info!(
                    system = %job.checkpoint_stream.system,
                    "exactly-once without transactions: intermediate streams are de-duplicated by producer id and sequence number; outputs others read stay at-least-once (docs/guarantees.md)"
                );
                p.deduplicating = true;
                return Ok(p);
            }
            p.producers[t].init_transactions(transactional_id).map_err(|e| match e {
                SystemError::Other { context, message } => SystemError::Other {
                    context,
                    message: format!(
                        "{message} (task.processing.guarantee=exactly-once on system '{}', which holds the checkpoints)",
                        job.checkpoint_stream.system
                    ),
                },
                other => other,
            })?;
            p.transactional = Some(t);
        }
        Ok(p)
    }

    /// Under exactly-once: commits the open transaction (after a flush).
    pub fn commit_transaction(&mut self) -> Result<(), SystemError> {
        match self.transactional {
            Some(t) => self.producers[t].commit_transaction(),
            None => Ok(()),
        }
    }

    fn producer_of(&self, system: &str) -> Result<usize, SystemError> {
        self.names.iter().position(|n| n == system).ok_or_else(|| {
            SystemError::other(format!("sending to system '{system}'"), format!("system '{system}' is not configured"))
        })
    }

    /// The target of `ssp` (looked up once; then use [`Self::send_to`]).
    pub fn target(&mut self, ssp: &SystemStreamPartition) -> Result<Target, SystemError> {
        let producer = self.producer_of(&ssp.stream.system)?;
        if let Some(t) = self.transactional
            && t != producer
        {
            return Err(SystemError::other(
                format!("sending to {ssp}"),
                format!(
                    "task.processing.guarantee=exactly-once: everything the job writes (outputs, changelogs, checkpoints) must be on system '{}', whose transactions make it visible together; this stream is on '{}'",
                    self.names[t], ssp.stream.system
                ),
            ));
        }
        let slot = self.producers[producer].slot(ssp)?;
        Ok(Target { producer, slot })
    }

    pub fn send_to(
        &mut self,
        target: Target,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
    ) -> Result<(), SystemError> {
        self.send_with_headers_to(target, key, value, timestamp, &[])
    }

    pub fn send_with_headers_to(
        &mut self,
        target: Target,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: &[(&str, &[u8])],
    ) -> Result<(), SystemError> {
        self.sent = true;
        self.producers[target.producer].send_with_headers(target.slot, key, value, timestamp, headers)
    }

    /// Sends one message to `ssp` (for occasional messages: checkpoints).
    pub fn send(
        &mut self,
        ssp: &SystemStreamPartition,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
    ) -> Result<(), SystemError> {
        let target = self.target(ssp)?;
        self.send_to(target, key, value, timestamp)
    }

    pub fn flush(&mut self) -> Result<(), SystemError> {
        self.sent = false;
        self.producers.iter_mut().try_for_each(|p| p.flush())
    }

    /// Publishes (see `SystemProducer::publish`) if anything was sent since.
    pub fn flush_sent(&mut self) -> Result<(), SystemError> {
        if !self.sent {
            return Ok(());
        }
        self.sent = false;
        self.producers.iter_mut().try_for_each(|p| p.publish())
    }

    pub fn next_offset(&self, ssp: &SystemStreamPartition) -> Option<u64> {
        let p = self.producer_of(&ssp.stream.system).ok()?;
        self.producers[p].next_offset(ssp)
    }

    pub fn stop(&mut self) -> Result<(), SystemError> {
        self.producers.iter_mut().try_for_each(|p| p.stop())
    }
}

/// Sends a store's changes to its changelog partition.
pub(crate) struct ChangelogWriter {
    pub producers: SharedProducers,
    pub target: Target,
}

impl ChangelogSink for ChangelogWriter {
    fn send(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), KvError> {
        let mut p = self.producers.borrow_mut();
        let now = p.now_ms;
        p.send_to(self.target, Some(key), value, now).map_err(|e| KvError::Changelog(e.to_string()))
    }
}

/// One output stream: its partition count, producer, and the producer
/// slots of the partitions written so far.
struct Route {
    stream: SystemStream,
    partitions: u32,
    targets: Vec<Option<Target>>,
    round_robin: u32,
    /// An input of the job too (`stamped`): stamped when de-duplicating.
    intermediate: bool,
    /// An input of the job too (stamped or not).
    to_input: bool,
}

/// A task's stamp for what it sends to intermediate streams (exactly-once
/// without transactions): its producer id and next sequence number. Not
/// `Copy`: a copy advanced by mistake would reuse numbers.
#[derive(Debug)]
pub(crate) struct Stamp {
    pub producer: u64,
    pub next: u64,
}

/// Picks partitions for task output: explicit, by key (murmur2, as Kafka),
/// or round-robin; creates output streams that do not exist yet.
pub(crate) struct Router {
    routes: Vec<Route>,
    by_stream: HashMap<SystemStream, usize>,
    default_partitions: u32,
    /// Something was sent to one of the job's inputs since the last commit.
    pub sent_to_inputs: bool,
}

impl Router {
    pub fn new(default_partitions: u32) -> Self {
        Router {
            routes: Vec::new(),
            by_stream: HashMap::new(),
            default_partitions: default_partitions.max(1),
            sent_to_inputs: false,
        }
    }

    /// The route of `stream` (created, with the stream if it is missing, on
    /// first use).
    pub fn route_of(
        &mut self,
        job: &JobConfig,
        systems: &Systems,
        stream: &SystemStream,
    ) -> Result<usize, RuntimeError> {
        if let Some(&r) = self.by_stream.get(stream) {
            return Ok(r);
        }
        let admin = systems.admin(&stream.system)?;
        let partitions = match admin.partition_count(stream) {
            Ok(n) => n,
            Err(SystemError::StreamNotFound { .. }) => {
                let n = job.stream_partitions(stream)?.unwrap_or(self.default_partitions);
                admin.ensure_stream(stream, n, StreamKind::Regular)?;
                tracing::info!(%stream, partitions = n, "created output stream (set streams.<id>.partitions to choose the count)");
                n
            }
            Err(e) => return Err(e.into()),
        };
        self.routes.push(Route {
            stream: stream.clone(),
            partitions,
            targets: vec![None; partitions as usize],
            round_robin: 0,
            intermediate: job.inputs.iter().any(|i| i.stream == *stream && i.stamped),
            to_input: job.inputs.iter().any(|i| i.stream == *stream),
        });
        self.by_stream.insert(stream.clone(), self.routes.len() - 1);
        Ok(self.routes.len() - 1)
    }

    /// Sends one recorded task output along `route`, stamped with `stamp`
    /// (then advanced) if the route is an intermediate stream.
    pub fn send(
        &mut self,
        route: usize,
        producers: &mut Producers,
        send: &PendingSend,
        buf: &[u8],
        stamp: Option<&mut Stamp>,
    ) -> Result<(), RuntimeError> {
        let r = &mut self.routes[route];
        self.sent_to_inputs |= r.to_input;
        let key = send.key.clone().map(|k| &buf[k]);
        let value = send.value.clone().map(|v| &buf[v]);
        let partition = match (send.partition, key) {
            (Some(p), _) if p >= r.partitions => {
                return Err(RuntimeError::NoSuchPartition {
                    stream: r.stream.to_string(),
                    partition: p,
                    count: r.partitions,
                });
            }
            (Some(p), _) => p,
            (None, Some(k)) => gregor_api::partition_for_key(k, r.partitions),
            (None, None) => {
                r.round_robin = (r.round_robin + 1) % r.partitions;
                r.round_robin
            }
        };
        let target = match r.targets[partition as usize] {
            Some(t) => t,
            None => {
                let t = producers.target(&r.stream.partition(partition))?;
                r.targets[partition as usize] = Some(t);
                t
            }
        };
        let ts = send.timestamp.unwrap_or(producers.now_ms);
        let stamp = stamp.filter(|_| r.intermediate);
        let own = send.headers.as_deref().map_or(&[][..], Vec::as_slice);
        if own.is_empty() && stamp.is_none() {
            return Ok(producers.send_to(target, key, value, ts)?);
        }
        let bytes = stamp.map(|s| {
            s.next += 1;
            crate::sequences::stamp_bytes(s.producer, s.next - 1)
        });
        let stamp_header = bytes.as_ref().map(|b| (crate::sequences::STAMP_HEADER, &b[..]));
        if own.is_empty() {
            // Only the stamp: no allocation per message.
            return Ok(producers.send_with_headers_to(target, key, value, ts, stamp_header.as_slice())?);
        }
        let mut headers: Vec<(&str, &[u8])> = own.iter().map(|(n, v)| (n.as_str(), &v[..])).collect();
        // After the task's own: the last occurrence is the one read back.
        headers.extend(stamp_header);
        Ok(producers.send_with_headers_to(target, key, value, ts, &headers)?)
    }
}
