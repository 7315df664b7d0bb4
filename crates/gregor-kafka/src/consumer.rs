//! Reads assigned partitions: explicit assignment at the checkpointed
//! offsets, batched polls, pause/resume for back-pressure.
//!
//! Starts where it is told: the container chooses the start offset
//! (`gregor_runtime::offsets`, the same rule for every system, including the
//! fall-back to `samza.offset.default` for a checkpoint Kafka no longer
//! holds). Broker outages are waited out (librdkafka reconnects with
//! backoff) with a warning.

use crate::{KafkaAdmin, KafkaSettings, Reports};
use bytes::Bytes;
use gregor_api::SystemStreamPartition;
use gregor_api::system::{RawMessage, StartOffset, SystemAdmin, SystemConsumer, SystemError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages taken from librdkafka per `poll` call at most.
const MAX_BATCH: usize = 20_000;

/// How long a partition may be unwanted before it is paused.
const PAUSE_AFTER: Duration = Duration::from_millis(200);

pub(crate) struct KafkaConsumer {
    settings: Arc<KafkaSettings>,
    admin: Arc<KafkaAdmin>,
    consumer: BaseConsumer<Reports>,
    registered: Vec<(SystemStreamPartition, StartOffset)>,
    /// topic -> partition -> index into `parts` (looked up by `&str`: no
    /// allocation per message).
    index: HashMap<String, HashMap<i32, usize>>,
    parts: Vec<Part>,
}

struct Part {
    ssp: SystemStreamPartition,
    next: u64,
    paused: bool,
    /// Since when `wants` has said no, while not paused.
    unwanted_since: Option<Instant>,
}

impl KafkaConsumer {
    pub(crate) fn new(settings: Arc<KafkaSettings>, admin: Arc<KafkaAdmin>) -> Result<Self, SystemError> {
        let consumer = settings
            .consumer_config()
            .create_with_context(Reports::default())
            .map_err(|e| settings.error("creating a consumer", e))?;
        Ok(KafkaConsumer {
            settings,
            admin,
            consumer,
            registered: Vec::new(),
            index: HashMap::new(),
            parts: Vec::new(),
        })
    }

    fn set_paused(&mut self, i: usize, paused: bool) -> Result<(), SystemError> {
        let part = &mut self.parts[i];
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&part.ssp.stream.stream, part.ssp.partition as i32);
        let r = if paused { self.consumer.pause(&tpl) } else { self.consumer.resume(&tpl) };
        r.map_err(|e| self.settings.error(&format!("pausing/resuming {}", part.ssp), e))?;
        part.paused = paused;
        Ok(())
    }
}

impl SystemConsumer for KafkaConsumer {
    fn register(&mut self, ssp: &SystemStreamPartition, start: StartOffset) -> Result<(), SystemError> {
        self.registered.push((ssp.clone(), start));
        Ok(())
    }

    fn start(&mut self) -> Result<(), SystemError> {
        let mut tpl = TopicPartitionList::new();
        for (ssp, start) in std::mem::take(&mut self.registered) {
            // The container decided the offset (gregor_runtime::offsets);
            // `Oldest`/`Upcoming` come from tools reading a stream.
            let from = match start {
                StartOffset::At(o) => o,
                StartOffset::Oldest => self.admin.offsets(&ssp)?.oldest,
                StartOffset::Upcoming => self.admin.offsets(&ssp)?.next,
            };
            tpl.add_partition_offset(&ssp.stream.stream, ssp.partition as i32, Offset::Offset(from as i64))
                .map_err(|e| self.settings.error(&format!("assigning {ssp}"), e))?;
            self.index.entry(ssp.stream.stream.to_string()).or_default().insert(ssp.partition as i32, self.parts.len());
            self.parts.push(Part { ssp, next: from, paused: false, unwanted_since: None });
        }
        self.consumer.assign(&tpl).map_err(|e| self.settings.error("assigning partitions", e))
    }

    fn poll(
        &mut self,
        wants: &dyn Fn(&SystemStreamPartition) -> bool,
        deliver: &mut dyn FnMut(&SystemStreamPartition, RawMessage),
        timeout: Duration,
    ) -> Result<usize, SystemError> {
        // librdkafka drops what it prefetched for a partition when it is
        // paused and fetches it again on resume, so a buffer that is full
        // for a moment must not pause it: then nothing is taken from
        // librdkafka's queue (bounded, so fetching stops by itself) until the
        // container has made room. Only a partition unwanted for a while (its
        // input ended, its task stopped) is paused.
        let now = Instant::now();
        let mut waiting_for_room = false;
        for i in 0..self.parts.len() {
            let want = wants(&self.parts[i].ssp);
            let part = &mut self.parts[i];
            if want {
                part.unwanted_since = None;
                if part.paused {
                    self.set_paused(i, false)?;
                }
            } else if !part.paused {
                let since = *part.unwanted_since.get_or_insert(now);
                if now.duration_since(since) >= PAUSE_AFTER {
                    self.set_paused(i, true)?;
                } else {
                    waiting_for_room = true;
                }
            }
        }
        if waiting_for_room {
            std::thread::sleep(timeout.min(Duration::from_millis(1)));
            return Ok(0);
        }
        let mut delivered = 0;
        let mut wait = timeout;
        while delivered < MAX_BATCH {
            let Some(result) = self.consumer.poll(wait) else { break };
            wait = Duration::ZERO;
            let m = match result {
                Ok(m) => m,
                Err(e @ KafkaError::MessageConsumption(_)) | Err(e @ KafkaError::Global(_)) => {
                    let fatal = e.rdkafka_error_code().is_some_and(|c| {
                        matches!(
                            c,
                            rdkafka::types::RDKafkaErrorCode::Fatal
                                | rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed
                        )
                    });
                    if fatal {
                        return Err(self.settings.error("consuming", e));
                    }
                    self.consumer.context().warn(format_args!("consuming: {e}"));
                    continue;
                }
                Err(e) => return Err(self.settings.error("consuming", e)),
            };
            let Some(&i) = self.index.get(m.topic()).and_then(|p| p.get(&m.partition())) else { continue };
            let part = &mut self.parts[i];
            let offset = m.offset().max(0) as u64;
            part.next = offset + 1;
            let raw = RawMessage {
                offset,
                // -1: none (message format v0); time operators refuse it.
                timestamp: m.timestamp().to_millis().unwrap_or(-1),
                key: m.key().map(Bytes::copy_from_slice),
                value: m.payload().map(Bytes::copy_from_slice),
                headers: m.headers().map_or_else(gregor_api::system::Headers::default, |h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.map_or_else(Bytes::new, Bytes::copy_from_slice)))
                        .collect()
                }),
            };
            deliver(&part.ssp, raw);
            delivered += 1;
        }
        Ok(delivered)
    }

    fn position(&self, ssp: &SystemStreamPartition) -> Option<u64> {
        self.parts.iter().find(|p| p.ssp == *ssp).map(|p| p.next)
    }

    fn end_hint(&self, ssp: &SystemStreamPartition) -> Option<u64> {
        // librdkafka's high watermark as of the last fetch response (no
        // request: rd_kafka_get_watermark_offsets only reads its cache; the
        // rdkafka crate wraps only the querying variant).
        let topic = std::ffi::CString::new(ssp.stream.stream.as_bytes()).ok()?;
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client pointer lives as long as `self.consumer`; the
        // topic is a NUL-terminated string that outlives the call; the out
        // pointers are to locals.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                topic.as_ptr(),
                ssp.partition as i32,
                &mut low,
                &mut high,
            )
        };
        (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then_some(())?;
        u64::try_from(high).ok()
    }

    fn stop(&mut self) {
        let _ = self.consumer.unassign();
    }
}
