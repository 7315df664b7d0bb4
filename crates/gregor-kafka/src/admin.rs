//! Partition counts, offsets (low and high watermarks) and topic creation.
//!
//! Never creates a topic with a partition count other than asked, and never
//! accepts an existing changelog whose partition count differs from the
//! task count (its partitions would belong to the wrong tasks).

use crate::{KafkaSettings, REQUEST_TIMEOUT, Reports};
use gregor_api::system::{PartitionOffsets, StreamKind, SystemAdmin, SystemError};
use gregor_api::{SystemStream, SystemStreamPartition};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The admin of one Kafka system.
pub struct KafkaAdmin {
    settings: Arc<KafkaSettings>,
    metadata: BaseConsumer<Reports>,
    admin: AdminClient<Reports>,
}

impl KafkaAdmin {
    pub(crate) fn new(settings: Arc<KafkaSettings>) -> Result<KafkaAdmin, SystemError> {
        let config = settings.consumer_config();
        let metadata =
            config.create_with_context(Reports::default()).map_err(|e| settings.error("creating a client", e))?;
        let admin = config
            .create_with_context(Reports::default())
            .map_err(|e| settings.error("creating an admin client", e))?;
        Ok(KafkaAdmin { settings, metadata, admin })
    }

    /// Every topic name in the cluster (internal ones excluded).
    ///
    /// # Errors
    /// The cluster cannot be reached within the request timeout.
    pub fn topics(&self) -> Result<Vec<(String, u32)>, SystemError> {
        let md = self.metadata.fetch_metadata(None, REQUEST_TIMEOUT).map_err(|e| self.unreachable(e))?;
        let mut out: Vec<(String, u32)> = md
            .topics()
            .iter()
            .filter(|t| !t.name().starts_with("__consumer_offsets") && t.error().is_none())
            .map(|t| (t.name().to_owned(), t.partitions().len() as u32))
            .collect();
        out.sort();
        Ok(out)
    }

    fn unreachable(&self, e: KafkaError) -> SystemError {
        self.settings.unavailable(
            &format!("no answer from the brokers within {}s", REQUEST_TIMEOUT.as_secs()),
            format!("{e} (is bootstrap.servers right and a broker up?)"),
        )
    }

    /// Partition count, or `None` when the topic does not exist.
    fn count(&self, topic: &str) -> Result<Option<u32>, SystemError> {
        let md = self.metadata.fetch_metadata(Some(topic), REQUEST_TIMEOUT).map_err(|e| self.unreachable(e))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else { return Ok(None) };
        match t.error() {
            None if !t.partitions().is_empty() => Ok(Some(t.partitions().len() as u32)),
            None => Ok(None),
            Some(e) if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition => Ok(None),
            Some(e) => {
                Err(self.settings.error(&format!("reading metadata of topic {topic}"), RDKafkaErrorCode::from(e)))
            }
        }
    }

    fn not_found(&self, stream: &SystemStream) -> SystemError {
        let similar: Vec<String> = self
            .topics()
            .unwrap_or_default()
            .into_iter()
            .map(|(t, _)| t)
            .filter(|t| similar(t, &stream.stream))
            .take(5)
            .collect();
        let hint = if similar.is_empty() {
            format!(
                " in Kafka at {} (create it, e.g. `gregor stream create {} --system {} ...`)",
                self.settings.bootstrap, stream.stream, stream.system
            )
        } else {
            format!(" in Kafka at {} (similar topics: {})", self.settings.bootstrap, similar.join(", "))
        };
        SystemError::StreamNotFound { stream: stream.clone(), hint }
    }
}

/// Whether two topic names look alike (case, separators, a typo or two).
fn similar(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.to_lowercase().replace(['_', '.', '-'], "");
    let (a, b) = (norm(a), norm(b));
    if a.contains(&b) || b.contains(&a) {
        return true;
    }
    // Levenshtein distance, bounded.
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()] <= 2
}

impl SystemAdmin for KafkaAdmin {
    fn partition_count(&self, stream: &SystemStream) -> Result<u32, SystemError> {
        self.count(&stream.stream)?.ok_or_else(|| self.not_found(stream))
    }

    fn offsets(&self, ssp: &SystemStreamPartition) -> Result<PartitionOffsets, SystemError> {
        let (low, high) = self
            .metadata
            .fetch_watermarks(&ssp.stream.stream, ssp.partition as i32, REQUEST_TIMEOUT)
            .map_err(|e| match e {
                KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition)
                | KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownPartition) => self.not_found(&ssp.stream),
                e => self.settings.unavailable(&format!("reading the offsets of {ssp}"), e),
            })?;
        Ok(PartitionOffsets { oldest: low.max(0) as u64, next: high.max(0) as u64 })
    }

    fn ensure_stream(&self, stream: &SystemStream, partitions: u32, kind: StreamKind) -> Result<(), SystemError> {
        let topic = &*stream.stream;
        if let Some(n) = self.count(topic)? {
            if kind == StreamKind::Changelog && n != partitions {
                return Err(self.settings.error(
                    &format!("changelog topic {topic}"),
                    format!("has {n} partitions but the job has {partitions} tasks (one partition per task is needed; recreate the topic or fix the job)"),
                ));
            }
            return Ok(());
        }
        // A changelog keeps every record younger than the lag: a restore to
        // a checkpoint needs the values at the checkpoint, which compaction
        // would otherwise drop in favour of writes made after it by a
        // container that then crashed (Samza sets the same, 4 hours).
        let lag = self.settings.changelog_compaction_lag_ms.to_string();
        let configs: &[(&str, &str)] = match kind {
            StreamKind::Regular => &[],
            StreamKind::Compacted => &[("cleanup.policy", "compact")],
            StreamKind::Changelog => &[("cleanup.policy", "compact"), ("min.compaction.lag.ms", &lag)],
        };
        match self.create_topic(topic, partitions, configs) {
            Ok(()) => {}
            Err(CreateError::Exists) => {} // created meanwhile by another container
            Err(CreateError::Failed(e)) => return Err(e),
        }
        tracing::info!(system = %self.settings.name, topic, partitions, compacted = kind != StreamKind::Regular, "created Kafka topic");
        self.wait_for(topic, partitions)
    }

    /// Kafka compacts on its own schedule and cannot be told to keep a
    /// changelog's tail; restore does not depend on compaction (see
    /// docs/kafka.md).
    fn set_compaction_limit(&self, _: &SystemStreamPartition, _: u64) -> Result<(), SystemError> {
        Ok(())
    }

    /// Kafka's `ListOffsets` by timestamp (librdkafka's `offsets_for_times`),
    /// checked against the message it names (see [`KafkaAdmin::first_timestamp_from`]).
    fn offset_for_time(&self, ssp: &SystemStreamPartition, timestamp_ms: i64) -> Result<u64, SystemError> {
        let range = self.offsets(ssp)?;
        // Negative timestamps are Kafka's "latest" (-1) and "earliest" (-2)
        // markers, not times; every real timestamp is at or after them.
        if timestamp_ms <= 0 || range.oldest == range.next {
            return Ok(range.oldest);
        }
        let doing = format!("looking up the offset of time {timestamp_ms} in {ssp}");
        let (topic, partition) = (&*ssp.stream.stream, ssp.partition as i32);
        let mut query = TopicPartitionList::new();
        query
            .add_partition_offset(topic, partition, Offset::Offset(timestamp_ms))
            .map_err(|e| self.settings.error(&doing, e))?;
        let answer = self.metadata.offsets_for_times(query, REQUEST_TIMEOUT).map_err(|e| match e {
            KafkaError::OffsetFetch(RDKafkaErrorCode::UnknownTopicOrPartition) => self.not_found(&ssp.stream),
            e => self.settings.unavailable(&doing, e),
        })?;
        let elem = answer
            .find_partition(topic, partition)
            .ok_or_else(|| self.settings.error(&doing, "the broker did not answer for this partition"))?;
        elem.error().map_err(|e| self.settings.error(&doing, e))?;
        let found = match elem.offset() {
            Offset::Offset(o) if o >= 0 => (o as u64).clamp(range.oldest, range.next),
            _ => return Ok(range.next), // Offset::End: no message is that recent
        };
        // Some brokers (Tansu 0.6) answer "no such message" with offset 0
        // instead of -1: a message older than asked means there is none.
        if found < range.next && self.first_timestamp_from(ssp, found)?.is_some_and(|ts| ts < timestamp_ms) {
            return Ok(range.next);
        }
        Ok(found)
    }
}

impl KafkaAdmin {
    /// The timestamp of the first message at or after `offset` of `ssp`
    /// (`None` if none arrives within the request timeout).
    fn first_timestamp_from(&self, ssp: &SystemStreamPartition, offset: u64) -> Result<Option<i64>, SystemError> {
        let doing = format!("reading {ssp} at offset {offset}");
        let consumer: BaseConsumer<Reports> = self
            .settings
            .consumer_config()
            .create_with_context(Reports::default())
            .map_err(|e| self.settings.error("creating a consumer", e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&ssp.stream.stream, ssp.partition as i32, Offset::Offset(offset as i64))
            .map_err(|e| self.settings.error(&doing, e))?;
        consumer.assign(&tpl).map_err(|e| self.settings.error(&doing, e))?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match consumer.poll(left.min(Duration::from_millis(200))) {
                Some(Ok(m)) if m.topic() == &*ssp.stream.stream && m.partition() == ssp.partition as i32 => {
                    return Ok(m.timestamp().to_millis());
                }
                Some(Err(e)) => consumer.context().warn(format_args!("{doing}: {e}")),
                _ => {}
            }
        }
        Ok(None)
    }
}

/// Why a topic was not created.
pub enum CreateError {
    /// It exists already.
    Exists,
    /// Anything else.
    Failed(SystemError),
}

impl KafkaAdmin {
    /// Creates `topic` with topic-level `configs` (e.g. `cleanup.policy`).
    ///
    /// # Errors
    /// [`CreateError::Exists`], or the broker's refusal.
    pub fn create_topic(&self, topic: &str, partitions: u32, configs: &[(&str, &str)]) -> Result<(), CreateError> {
        let mut new = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(self.settings.replication));
        for (k, v) in configs {
            new = new.set(k, v);
        }
        let options =
            AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)).request_timeout(Some(REQUEST_TIMEOUT));
        let results = futures_executor::block_on(self.admin.create_topics([&new], &options))
            .map_err(|e| CreateError::Failed(self.settings.error(&format!("creating topic {topic}"), e)))?;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => return Err(CreateError::Exists),
                Err((name, code)) => {
                    return Err(CreateError::Failed(self.settings.error(&format!("creating topic {name}"), code)));
                }
            }
        }
        Ok(())
    }

    /// Deletes `topic`.
    ///
    /// # Errors
    /// A missing topic or the broker's refusal.
    pub fn delete_topic(&self, topic: &str) -> Result<(), SystemError> {
        let options =
            AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)).request_timeout(Some(REQUEST_TIMEOUT));
        let results = futures_executor::block_on(self.admin.delete_topics(&[topic], &options))
            .map_err(|e| self.settings.error(&format!("deleting topic {topic}"), e))?;
        for r in results {
            if let Err((name, code)) = r {
                if code == RDKafkaErrorCode::UnknownTopicOrPartition {
                    return Err(self.not_found(&SystemStream::new(&self.settings.name, &name)));
                }
                return Err(self.settings.error(&format!("deleting topic {name}"), code));
            }
        }
        Ok(())
    }

    /// Waits until metadata shows `topic` with `partitions` partitions
    /// (metadata lags creation on some brokers).
    ///
    /// # Errors
    /// Another partition count, or the topic never shows.
    pub fn wait_for(&self, topic: &str, partitions: u32) -> Result<(), SystemError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            match self.count(topic)? {
                Some(n) if n == partitions => return Ok(()),
                Some(n) => {
                    return Err(self.settings.error(
                        &format!("topic {topic}"),
                        format!("was created with {n} partitions, not {partitions}"),
                    ));
                }
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                None => {
                    return Err(self
                        .settings
                        .error(&format!("topic {topic}"), "was created but does not show in metadata"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn similar_names() {
        assert!(super::similar("page-views", "pageviews"));
        assert!(super::similar("page_views", "page-viewz"));
        assert!(super::similar("words", "Words"));
        assert!(!super::similar("words", "clicks"));
    }
}
