//! gregor's Kafka system: admin, consumer and producer on librdkafka (the
//! `rdkafka` crate), so a job moves from the embedded log to Kafka by
//! changing its config:
//!
//! ```properties
//! systems.kafka.factory=kafka
//! systems.kafka.bootstrap.servers=broker1:9092,broker2:9092
//! task.inputs=kafka.page-views
//! ```
//!
//! - The consumer assigns partitions explicitly at the checkpointed offsets
//!   (gregor's job model owns the assignment: no consumer-group rebalancing),
//!   fetches in batches, and pauses partitions whose buffers are full.
//! - The producer sends with `acks=all` and idempotence by default, to the
//!   partition gregor chose (murmur2 of the key, as the Java client and
//!   librdkafka's `murmur2_random` do); `flush` waits for every
//!   acknowledgement and reports the first failed delivery with its topic,
//!   partition and error. Offsets it reports are the broker's.
//! - `systems.<name>.consumer.*` and `systems.<name>.producer.*` go to
//!   librdkafka unchanged (TLS, SASL, tuning); they are never logged.
//!
//! What this must never do: report an offset as written before the broker
//! acknowledged it, or skip messages when a checkpointed offset is gone (it
//! restarts from `samza.offset.default` with a warning naming both offsets).

mod admin;
mod consumer;
mod producer;

pub use admin::{CreateError, KafkaAdmin};
use gregor_api::config::{Config, ConfigError};
use gregor_api::system::{SystemAdmin, SystemConsumer, SystemError, SystemFactory, SystemProducer};
use rdkafka::ClientConfig;
use std::sync::Arc;
use std::time::Duration;

/// How long metadata and offset requests wait for the cluster.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of one Kafka system (`systems.<name>.*`).
#[derive(Clone)]
pub struct KafkaSettings {
    /// The system's name in the config.
    pub name: String,
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// librdkafka settings for consumers (and the admin).
    pub consumer: Vec<(String, String)>,
    /// librdkafka settings for producers.
    pub producer: Vec<(String, String)>,
    /// Replication factor of topics gregor creates.
    pub replication: i32,
    /// Where to start when there is no usable checkpoint: oldest or upcoming.
    pub start_oldest: bool,
    /// `min.compaction.lag.ms` of changelog topics gregor creates.
    pub changelog_compaction_lag_ms: u64,
}

impl KafkaSettings {
    /// Reads `systems.<name>.*`.
    ///
    /// # Errors
    /// A missing `bootstrap.servers` or a malformed value, naming the key.
    pub fn from_config(config: &Config, name: &str) -> Result<Self, ConfigError> {
        let key = format!("systems.{name}.bootstrap.servers");
        let bootstrap = config.require(&key, "host:port of one or more Kafka brokers, comma-separated")?.to_owned();
        let collect = |prefix: &str| -> Vec<(String, String)> {
            let p = format!("systems.{name}.{prefix}.");
            config.with_prefix(&p).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
        };
        let replication: i32 =
            config.get_parsed(&format!("systems.{name}.replication.factor"), "a positive count")?.unwrap_or(1);
        let start_oldest = config.get(&format!("systems.{name}.samza.offset.default")) != Some("upcoming");
        let lag_key = format!("systems.{name}.changelog.min.compaction.lag.ms");
        let changelog_compaction_lag_ms = config.get_parsed(&lag_key, "milliseconds")?.unwrap_or(4 * 3600 * 1000);
        let mut producer = collect("producer");
        keep_partition_order(name, &mut producer)?;
        Ok(KafkaSettings {
            name: name.to_owned(),
            bootstrap,
            consumer: collect("consumer"),
            producer,
            replication,
            start_oldest,
            changelog_compaction_lag_ms,
        })
    }

    /// A librdkafka config: gregor's defaults, then the user's settings.
    fn client_config(&self, defaults: &[(&str, &str)], user: &[(String, String)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in user {
            c.set(k, v);
        }
        c
    }

    fn consumer_config(&self) -> ClientConfig {
        self.client_config(
            &[
                ("group.id", "gregor"),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "false"),
                ("auto.offset.reset", if self.start_oldest { "earliest" } else { "latest" }),
                ("fetch.wait.max.ms", "100"),
                ("fetch.min.bytes", "1"),
                ("queued.max.messages.kbytes", "65536"),
                ("socket.connection.setup.timeout.ms", "10000"),
            ],
            &self.consumer,
        )
    }

    fn producer_config(&self) -> ClientConfig {
        self.client_config(
            &[
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("compression.type", "lz4"),
                ("linger.ms", "5"),
                ("batch.num.messages", "10000"),
                ("partitioner", "murmur2_random"),
                ("socket.connection.setup.timeout.ms", "10000"),
            ],
            &self.producer,
        )
    }

    fn error(&self, doing: &str, e: impl std::fmt::Display) -> SystemError {
        SystemError::other(format!("Kafka system '{}' ({}): {doing}", self.name, self.bootstrap), e)
    }

    /// An error worth retrying later: the cluster is away or slow.
    fn unavailable(&self, doing: &str, e: impl std::fmt::Display) -> SystemError {
        SystemError::unavailable(format!("Kafka system '{}' ({}): {doing}", self.name, self.bootstrap), e)
    }
}

/// librdkafka's own reports, as gregor logs them: connection trouble is
/// expected while a broker restarts (librdkafka retries), so it is a
/// warning, at most one every 10 seconds per client; details at debug.
#[derive(Default)]
pub(crate) struct Reports {
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Reports {
    fn warn(&self, what: std::fmt::Arguments<'_>) {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last = Some(std::time::Instant::now());
            tracing::warn!("Kafka: {what} (retrying; repeats logged at debug)");
        } else {
            tracing::debug!("Kafka: {what}");
        }
    }
}

impl rdkafka::ClientContext for Reports {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => self.warn(format_args!("{fac} {message}")),
            _ => tracing::debug!("librdkafka {fac} {message}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.warn(format_args!("{error}: {reason}"));
    }
}

impl rdkafka::consumer::ConsumerContext for Reports {}

/// The Kafka system: one admin shared by the job, a consumer and a producer
/// per container.
pub struct KafkaSystemFactory {
    settings: Arc<KafkaSettings>,
    admin: Arc<KafkaAdmin>,
}

impl KafkaSystemFactory {
    /// The system `name` as configured (clients are created; no request is
    /// made until one is needed).
    ///
    /// # Errors
    /// A config problem (naming the key).
    pub fn from_config(config: &Config, name: &str) -> Result<Self, ConfigError> {
        let settings = Arc::new(KafkaSettings::from_config(config, name)?);
        let admin = Arc::new(KafkaAdmin::new(settings.clone()).map_err(|e| {
            gregor_api::config::invalid(
                &format!("systems.{name}.bootstrap.servers"),
                &settings.bootstrap,
                &e.to_string(),
            )
        })?);
        Ok(KafkaSystemFactory { settings, admin })
    }

    /// The admin, with Kafka-specific operations (listing topics).
    pub fn kafka_admin(&self) -> &Arc<KafkaAdmin> {
        &self.admin
    }
}

impl SystemFactory for KafkaSystemFactory {
    fn admin(&self) -> Result<Arc<dyn SystemAdmin>, SystemError> {
        Ok(self.admin.clone())
    }

    fn consumer(&self) -> Result<Box<dyn SystemConsumer>, SystemError> {
        Ok(Box::new(consumer::KafkaConsumer::new(self.settings.clone(), self.admin.clone())?))
    }

    fn producer(&self) -> Result<Box<dyn SystemProducer>, SystemError> {
        Ok(Box::new(producer::KafkaProducer::new(self.settings.clone())?))
    }
}

/// Producer settings that keep each partition in send order across retries.
///
/// gregor relies on that order: a changelog is restored in offset order (a
/// store's last write must win), and the sequence numbers that drop re-sent
/// intermediate messages assume a producer's messages reach a partition in
/// the order sent. librdkafka keeps the order with idempotence (the
/// default) or with one request in flight; without idempotence its default
/// of up to 1,000,000 requests in flight lets a retried batch land after a
/// later one (seen after a broker restart: counts about 10% low, a retried
/// intermediate batch dropped as already seen). So turning idempotence off
/// also limits the requests in flight to 1, and turning it off with more
/// in flight is refused.
fn keep_partition_order(system: &str, producer: &mut Vec<(String, String)>) -> Result<(), ConfigError> {
    let get = |key: &str| producer.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.trim().to_owned());
    let idempotent = get("enable.idempotence").is_none_or(|v| !v.eq_ignore_ascii_case("false"));
    if idempotent {
        return Ok(());
    }
    let in_flight_keys = ["max.in.flight.requests.per.connection", "max.in.flight"]; // the second is an alias
    let set: Vec<(&str, String)> = in_flight_keys.iter().filter_map(|k| get(k).map(|v| (*k, v))).collect();
    if let Some((key, v)) = set.iter().find(|(_, v)| v != "1") {
        return Err(gregor_api::config::invalid(
            &format!("systems.{system}.producer.{key}"),
            v,
            &format!(
                "1 while systems.{system}.producer.enable.idempotence=false: more requests in flight without idempotence let a retried batch land after a later one, which reorders changelogs and makes re-sent messages look like duplicates"
            ),
        ));
    }
    if set.is_empty() {
        producer.push((in_flight_keys[0].to_owned(), "1".to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod order_tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<KafkaSettings, ConfigError> {
        let mut config = Config::new();
        config.set("systems.k.bootstrap.servers", "localhost:9092");
        for (k, v) in pairs {
            config.set(format!("systems.k.producer.{k}"), *v);
        }
        KafkaSettings::from_config(&config, "k")
    }

    fn in_flight(s: &KafkaSettings) -> Option<&str> {
        s.producer.iter().find(|(k, _)| k == "max.in.flight.requests.per.connection").map(|(_, v)| v.as_str())
    }

    #[test]
    fn without_idempotence_one_request_is_in_flight_and_more_are_refused() {
        assert_eq!(in_flight(&settings(&[]).unwrap()), None, "idempotence keeps the order by itself");
        assert_eq!(in_flight(&settings(&[("max.in.flight", "5")]).unwrap()), None);
        let off = settings(&[("enable.idempotence", "false")]).unwrap();
        assert_eq!(in_flight(&off), Some("1"));
        let config = off.producer_config();
        assert_eq!(config.get("max.in.flight.requests.per.connection"), Some("1"));
        assert_eq!(config.get("enable.idempotence"), Some("false"));
        assert!(settings(&[("enable.idempotence", "false"), ("max.in.flight", "1")]).is_ok());
        let refused = settings(&[("enable.idempotence", "False"), ("max.in.flight.requests.per.connection", "5")]);
        let message = refused.err().expect("refused").to_string();
        assert!(message.contains("systems.k.producer.max.in.flight.requests.per.connection"), "{message}");
        assert!(message.contains("enable.idempotence=false"), "{message}");
    }
}
