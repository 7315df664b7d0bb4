//! Sends to explicit partitions (gregor picks them: murmur2 of the key, as
//! Kafka's Java client), batched and compressed by librdkafka; `flush` waits
//! for every acknowledgement.
//!
//! Never reports an offset the broker has not acknowledged, and never lets a
//! failed delivery pass: the first failure since the last flush fails the
//! next `flush` with its topic, partition and error.

use crate::{KafkaSettings, Reports};
use gregor_api::SystemStreamPartition;
use gregor_api::system::{SystemError, SystemProducer};
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

#[derive(Default)]
struct Deliveries {
    /// topic -> partition -> one past the highest acknowledged offset
    /// (looked up by `&str`: no allocation per acknowledgement).
    next: HashMap<String, HashMap<i32, u64>>,
    /// The first failed delivery since the last flush.
    failed: Option<String>,
}

struct Acks(Mutex<Deliveries>, Reports);

impl ClientContext for Acks {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.1.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.1.error(error, reason);
    }
}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut d = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(m) => {
                let next = m.offset().max(0) as u64 + 1;
                let partitions = match d.next.get_mut(m.topic()) {
                    Some(p) => p,
                    None => d.next.entry(m.topic().to_owned()).or_default(),
                };
                let n = partitions.entry(m.partition()).or_insert(0);
                *n = (*n).max(next);
            }
            Err((e, m)) => {
                if d.failed.is_none() {
                    d.failed = Some(format!("delivery to {}[{}] failed: {e}", m.topic(), m.partition()));
                }
            }
        }
    }
}

pub(crate) struct KafkaProducer {
    settings: Arc<KafkaSettings>,
    producer: ThreadedProducer<Acks>,
    /// The partitions of the slots.
    slots: Vec<SystemStreamPartition>,
    index: HashMap<SystemStreamPartition, u32>,
}

impl KafkaProducer {
    pub(crate) fn new(settings: Arc<KafkaSettings>) -> Result<Self, SystemError> {
        let producer = settings
            .producer_config()
            .create_with_context(Acks(Mutex::new(Deliveries::default()), Reports::default()))
            .map_err(|e| settings.error("creating a producer", e))?;
        Ok(KafkaProducer { settings, producer, slots: Vec::new(), index: HashMap::new() })
    }

    fn deliveries(&self) -> std::sync::MutexGuard<'_, Deliveries> {
        self.producer.context().0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SystemProducer for KafkaProducer {
    fn slot(&mut self, ssp: &SystemStreamPartition) -> Result<u32, SystemError> {
        if let Some(&slot) = self.index.get(ssp) {
            return Ok(slot);
        }
        let slot = self.slots.len() as u32;
        self.slots.push(ssp.clone());
        self.index.insert(ssp.clone(), slot);
        Ok(slot)
    }

    fn send_with_headers(
        &mut self,
        slot: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: &[(&str, &[u8])],
    ) -> Result<(), SystemError> {
        let ssp = &self.slots[slot as usize];
        let mut record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(&ssp.stream.stream).partition(ssp.partition as i32).timestamp(timestamp);
        if !headers.is_empty() {
            let owned = headers.iter().fold(OwnedHeaders::new_with_capacity(headers.len()), |h, (key, value)| {
                h.insert(Header { key, value: Some(*value) })
            });
            record = record.headers(owned);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                // librdkafka's queue is full: wait for acknowledgements.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(self.settings.error(&format!("sending to {ssp}"), e)),
            }
        }
    }

    fn flush(&mut self) -> Result<(), SystemError> {
        // Waits for every message: librdkafka retries a broker that is away
        // until `message.timeout.ms` (5 minutes by default), then fails it.
        self.producer.flush(Timeout::Never).map_err(|e| self.settings.unavailable("flushing", e))?;
        if let Some(failed) = self.deliveries().failed.take() {
            return Err(self.settings.unavailable("sending", failed));
        }
        Ok(())
    }

    /// librdkafka sends by itself (`linger.ms`): nothing to wait for here;
    /// a failed delivery surfaces at the next `flush`.
    fn publish(&mut self) -> Result<(), SystemError> {
        Ok(())
    }

    fn next_offset(&self, ssp: &SystemStreamPartition) -> Option<u64> {
        self.deliveries().next.get(&*ssp.stream.stream).and_then(|p| p.get(&(ssp.partition as i32))).copied()
    }
}
