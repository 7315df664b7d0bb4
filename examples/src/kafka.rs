//! Reading and writing Kafka topics from tests and benchmarks, through
//! gregor's own Kafka system (the same client code jobs use).

use gregor_api::system::{StartOffset, StreamKind, SystemError, SystemFactory};
use gregor_api::{SystemStream, partition_for_key};
use gregor_kafka::KafkaSystemFactory;
use std::collections::BTreeMap;
use std::time::Duration;

/// One message read back: partition, offset, key, value.
pub type Read = (u32, u64, Option<Vec<u8>>, Option<Vec<u8>>);

/// A Kafka system called `kafka` at `bootstrap`.
pub fn system(bootstrap: &str) -> KafkaSystemFactory {
    let mut config = gregor::Config::new();
    config.set("systems.kafka.factory", "kafka");
    config.set("systems.kafka.bootstrap.servers", bootstrap);
    KafkaSystemFactory::from_config(&config, "kafka").expect("kafka system")
}

/// Creates `topic` with `partitions` partitions if missing.
///
/// # Errors
/// The broker's refusal.
pub fn create(kafka: &KafkaSystemFactory, topic: &str, partitions: u32) -> Result<(), SystemError> {
    kafka.admin()?.ensure_stream(&SystemStream::new("kafka", topic), partitions, StreamKind::Regular)
}

/// Writes `(key, value)` records, keyed ones to `murmur2(key) % partitions`
/// (as Kafka's Java client), unkeyed round-robin; waits for the acks.
///
/// # Errors
/// A failed send or flush.
pub fn produce(kafka: &KafkaSystemFactory, topic: &str, records: &[(Option<&str>, &str)]) -> Result<(), SystemError> {
    let stream = SystemStream::new("kafka", topic);
    let n = kafka.admin()?.partition_count(&stream)?;
    let mut producer = kafka.producer()?;
    for (i, (key, value)) in records.iter().enumerate() {
        let p = key.map_or(i as u32 % n, |k| partition_for_key(k.as_bytes(), n));
        producer.send_to(&stream.partition(p), key.map(str::as_bytes), Some(value.as_bytes()), 0)?;
    }
    producer.flush()
}

/// Every message of `topic`, up to each partition's end as of the call.
///
/// # Errors
/// The topic cannot be read.
pub fn read_all(kafka: &KafkaSystemFactory, topic: &str) -> Result<Vec<Read>, SystemError> {
    Ok(read_raw(kafka, topic)?
        .into_iter()
        .map(|(p, m)| (p, m.offset, m.key.map(|k| k.to_vec()), m.value.map(|v| v.to_vec())))
        .collect())
}

/// Every message of `topic` as the system delivers it (headers included),
/// with its partition, up to each partition's end as of the call.
///
/// # Errors
/// The topic cannot be read.
pub fn read_raw(kafka: &KafkaSystemFactory, topic: &str) -> Result<Vec<(u32, gregor_api::RawMessage)>, SystemError> {
    let stream = SystemStream::new("kafka", topic);
    let admin = kafka.admin()?;
    let n = admin.partition_count(&stream)?;
    let mut consumer = kafka.consumer()?;
    let mut ends = BTreeMap::new();
    for p in 0..n {
        let ssp = stream.partition(p);
        ends.insert(ssp.clone(), admin.offsets(&ssp)?.next);
        consumer.register(&ssp, StartOffset::Oldest)?;
    }
    consumer.start()?;
    let mut out = Vec::new();
    // Gives up after a minute without progress, not after a fixed time: a
    // test broker sharing 2 cores with other tests' brokers and jobs serves
    // a large topic slowly (a fixed 120 s ran out in parallel test runs).
    let mut last_progress = (std::time::Instant::now(), 0);
    while ends.iter().any(|(ssp, end)| consumer.position(ssp).is_some_and(|p| p < *end)) {
        if out.len() > last_progress.1 {
            last_progress = (std::time::Instant::now(), out.len());
        } else if last_progress.0.elapsed() > Duration::from_secs(60) {
            let behind: Vec<String> = (ends.iter())
                .filter_map(|(ssp, end)| Some(format!("{ssp} at {} of {end}", consumer.position(ssp)?)))
                .collect();
            return Err(SystemError::other(
                format!("reading {topic}"),
                format!("no progress for 60 s: {}", behind.join(", ")),
            ));
        }
        consumer.poll(
            &|_| true,
            &mut |ssp, m| {
                if m.offset < ends[ssp] {
                    out.push((ssp.partition, m));
                }
            },
            Duration::from_millis(100),
        )?;
    }
    consumer.stop();
    Ok(out)
}

/// The last value per key of `topic` (strings).
///
/// # Errors
/// The topic cannot be read.
pub fn latest_values(kafka: &KafkaSystemFactory, topic: &str) -> Result<BTreeMap<String, String>, SystemError> {
    let mut out = BTreeMap::new();
    let mut all = read_all(kafka, topic)?;
    all.sort_by_key(|(p, o, _, _)| (*p, *o));
    for (_, _, k, v) in all {
        let k = String::from_utf8_lossy(&k.unwrap_or_default()).into_owned();
        match v {
            Some(v) => out.insert(k, String::from_utf8_lossy(&v).into_owned()),
            None => out.remove(&k),
        };
    }
    Ok(out)
}
