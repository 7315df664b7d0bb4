//! The container's producers (one per system) and the routing of task
//! output to partitions.
//!
//! Tasks' sends, changelog writes and checkpoints all go through here, so one
//! `flush` at commit makes everything durable in the right order. Shared by
//! the stores' changelog layers through an `Rc<RefCell<_>>`: all of it lives
//! on the container's one thread.

use crate::error::RuntimeError;
use crate::job_config::JobConfig;
use crate::systems::Systems;
use gregor_api::collector::PendingSend;
use gregor_api::system::{StreamKind, SystemError, SystemProducer};
use gregor_api::{SystemStream, SystemStreamPartition};
use gregor_kv::{ChangelogSink, KvError};
use hashbrown::HashMap;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

pub(crate) struct Producers {
    by_system: BTreeMap<String, Box<dyn SystemProducer>>,
    /// Something was sent since the last flush.
    sent: bool,
    /// The time stamped on changelog and checkpoint messages (updated per loop turn).
    pub now_ms: i64,
}

pub(crate) type SharedProducers = Rc<RefCell<Producers>>;

impl Producers {
    pub fn new(job: &JobConfig, systems: &Systems, now_ms: i64) -> Result<Producers, SystemError> {
        let mut by_system = BTreeMap::new();
        for name in job.systems.keys() {
            by_system.insert(name.clone(), systems.factory(name)?.producer()?);
        }
        Ok(Producers { by_system, sent: false, now_ms })
    }

    pub fn send(
        &mut self,
        ssp: &SystemStreamPartition,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
    ) -> Result<(), SystemError> {
        self.sent = true;
        match self.by_system.get_mut(&*ssp.stream.system) {
            Some(p) => p.send(ssp, key, value, timestamp),
            None => Err(SystemError::other(
                format!("sending to {ssp}"),
                format!("system '{}' is not configured", ssp.stream.system),
            )),
        }
    }

    pub fn flush(&mut self) -> Result<(), SystemError> {
        self.sent = false;
        self.by_system.values_mut().try_for_each(|p| p.flush())
    }

    /// Publishes (see `SystemProducer::publish`) if anything was sent since.
    pub fn flush_sent(&mut self) -> Result<(), SystemError> {
        if !self.sent {
            return Ok(());
        }
        self.sent = false;
        self.by_system.values_mut().try_for_each(|p| p.publish())
    }

    pub fn next_offset(&self, ssp: &SystemStreamPartition) -> Option<u64> {
        self.by_system.get(&*ssp.stream.system).and_then(|p| p.next_offset(ssp))
    }

    pub fn stop(&mut self) -> Result<(), SystemError> {
        self.by_system.values_mut().try_for_each(|p| p.stop())
    }
}

/// Sends a store's changes to its changelog partition.
pub(crate) struct ChangelogWriter {
    pub producers: SharedProducers,
    pub ssp: SystemStreamPartition,
}

impl ChangelogSink for ChangelogWriter {
    fn send(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), KvError> {
        let mut p = self.producers.borrow_mut();
        let now = p.now_ms;
        p.send(&self.ssp, Some(key), value, now).map_err(|e| KvError::Changelog(e.to_string()))
    }
}

/// Picks partitions for task output: explicit, by key (murmur2, as Kafka),
/// or round-robin; creates output streams that do not exist yet.
pub(crate) struct Router {
    partitions: HashMap<SystemStream, u32>,
    round_robin: HashMap<SystemStream, u32>,
    default_partitions: u32,
}

impl Router {
    pub fn new(default_partitions: u32) -> Self {
        Router {
            partitions: HashMap::new(),
            round_robin: HashMap::new(),
            default_partitions: default_partitions.max(1),
        }
    }

    fn partition_count(
        &mut self,
        job: &JobConfig,
        systems: &Systems,
        stream: &SystemStream,
    ) -> Result<u32, RuntimeError> {
        if let Some(n) = self.partitions.get(stream) {
            return Ok(*n);
        }
        let admin = systems.admin(&stream.system)?;
        let n = match admin.partition_count(stream) {
            Ok(n) => n,
            Err(SystemError::StreamNotFound { .. }) => {
                let n = match job.stream_partitions(stream)? {
                    Some(n) => n,
                    None => self.default_partitions,
                };
                admin.ensure_stream(stream, n, StreamKind::Regular)?;
                tracing::info!(%stream, partitions = n, "created output stream (set streams.<id>.partitions to choose the count)");
                n
            }
            Err(e) => return Err(e.into()),
        };
        self.partitions.insert(stream.clone(), n);
        Ok(n)
    }

    /// Sends one recorded task output.
    pub fn route(
        &mut self,
        job: &JobConfig,
        systems: &Systems,
        producers: &mut Producers,
        send: &PendingSend,
        buf: &[u8],
    ) -> Result<(), RuntimeError> {
        let key = send.key.clone().map(|r| &buf[r]);
        let value = send.value.clone().map(|r| &buf[r]);
        let count = self.partition_count(job, systems, &send.stream)?;
        let partition = match (send.partition, key) {
            (Some(p), _) if p >= count => {
                return Err(RuntimeError::NoSuchPartition { stream: send.stream.to_string(), partition: p, count });
            }
            (Some(p), _) => p,
            (None, Some(k)) => gregor_api::partition_for_key(k, count),
            (None, None) => {
                let next = match self.round_robin.get_mut(&send.stream) {
                    Some(n) => n,
                    None => self.round_robin.entry(send.stream.clone()).or_insert(0),
                };
                *next = (*next + 1) % count;
                *next
            }
        };
        let ssp = send.stream.partition(partition);
        let ts = send.timestamp.unwrap_or(producers.now_ms);
        Ok(producers.send(&ssp, key, value, ts)?)
    }
}
