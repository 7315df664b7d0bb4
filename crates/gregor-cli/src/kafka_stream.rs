//! `gregor stream ... --system kafka --bootstrap-servers HOST:PORT`: the
//! same commands and output formats as on the embedded log, on Kafka topics,
//! through gregor's own Kafka system.
//!
//! Commands that only make sense for the embedded log (log-specific
//! `create` options, `compact`) fail with a message saying what to do.

use crate::stream::{Format, Record, Start, StreamCommand, produce_lines, write_record};
use anyhow::{Result, bail};
use gregor_api::system::{StartOffset, SystemAdmin, SystemFactory};
use gregor_api::{Config, SystemStream};
use gregor_kafka::{CreateError, KafkaAdmin, KafkaSystemFactory};
use std::io::Write;
use std::time::Duration;

/// Where the Kafka cluster is and how to talk to it.
pub struct KafkaTarget {
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// librdkafka settings (`key=value`), for consumers and producers alike.
    pub settings: Vec<String>,
}

fn system(target: &KafkaTarget) -> Result<KafkaSystemFactory> {
    let mut config = Config::new();
    config.set("systems.kafka.factory", "kafka");
    config.set("systems.kafka.bootstrap.servers", &target.bootstrap);
    for s in &target.settings {
        let Some((k, v)) = s.split_once('=') else { bail!("--kafka-config '{s}' is not key=value") };
        config.set(format!("systems.kafka.consumer.{k}"), v);
        config.set(format!("systems.kafka.producer.{k}"), v);
    }
    Ok(KafkaSystemFactory::from_config(&config, "kafka")?)
}

pub fn run(target: &KafkaTarget, command: StreamCommand) -> Result<()> {
    let kafka = system(target)?;
    let admin: &KafkaAdmin = kafka.kafka_admin();
    let stream = |name: &str| SystemStream::new("kafka", name);
    match command {
        StreamCommand::Create {
            stream: name,
            partitions,
            compact,
            retention_bytes,
            retention_ms,
            durability,
            segment_bytes,
        } => {
            if durability.is_some() || segment_bytes.is_some() {
                bail!(
                    "--durability and --segment-bytes apply to the embedded log only (set the broker's topic configs instead)"
                );
            }
            let (bytes, ms) = (retention_bytes.map(|b| b.to_string()), retention_ms.map(|m| m.to_string()));
            let mut configs = Vec::new();
            if compact {
                configs.push(("cleanup.policy", "compact"));
            }
            if let Some(b) = &bytes {
                configs.push(("retention.bytes", b.as_str()));
            }
            if let Some(m) = &ms {
                configs.push(("retention.ms", m.as_str()));
            }
            match admin.create_topic(&name, partitions, &configs) {
                Ok(()) => {}
                Err(CreateError::Exists) => bail!("stream {name} already exists in Kafka at {}", target.bootstrap),
                Err(CreateError::Failed(e)) => return Err(e.into()),
            }
            admin.wait_for(&name, partitions)?;
            println!("created stream {name} with {partitions} partition{}", if partitions == 1 { "" } else { "s" });
        }
        StreamCommand::List => {
            let mut out = std::io::stdout().lock();
            for (name, _) in admin.topics()? {
                writeln!(out, "{name}")?;
            }
        }
        StreamCommand::Describe { stream: name } => {
            let s = stream(&name);
            let n = admin.partition_count(&s)?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "stream:         {name} (Kafka at {})", target.bootstrap)?;
            writeln!(out, "partitions:     {n}")?;
            writeln!(out, "{:>9} {:>12} {:>12} {:>12}", "PARTITION", "OLDEST", "NEWEST", "NEXT")?;
            for p in 0..n {
                let o = admin.offsets(&s.partition(p))?;
                let newest = if o.next > o.oldest { (o.next - 1).to_string() } else { "-".to_owned() };
                writeln!(out, "{p:>9} {:>12} {newest:>12} {:>12}", o.oldest, o.next)?;
            }
        }
        StreamCommand::Produce { stream: name, key_separator, partition } => {
            let s = stream(&name);
            let partitions = admin.partition_count(&s)?;
            let mut producer = kafka.producer()?;
            produce_lines(
                &mut *producer,
                &s,
                partitions,
                key_separator.as_deref(),
                partition,
                std::io::stdin().lock(),
            )?;
        }
        StreamCommand::Consume { stream: name, partition, from, until_end, format, isolation } => {
            if isolation == crate::stream::Isolation::ReadUncommitted {
                bail!(
                    "--isolation read-uncommitted: gregor reads Kafka read-committed (librdkafka's default); gregor writes no Kafka transactions, so both show the same records"
                );
            }
            consume(&kafka, &stream(&name), partition, from, until_end, format)?;
        }
        StreamCommand::Compact { .. } => {
            bail!(
                "Kafka compacts topics with cleanup.policy=compact by itself; `compact` applies to the embedded log only"
            )
        }
        StreamCommand::Delete { stream: name } => {
            admin.delete_topic(&name)?;
            println!("deleted stream {name}");
        }
    }
    Ok(())
}

fn consume(
    kafka: &KafkaSystemFactory,
    stream: &SystemStream,
    partition: Option<u32>,
    from: Start,
    until_end: bool,
    format: Format,
) -> Result<()> {
    let admin = kafka.kafka_admin();
    let n = admin.partition_count(stream)?;
    let partitions: Vec<u32> = match partition {
        Some(p) if p >= n => bail!("partition {p} of {} does not exist (it has {n})", stream.stream),
        Some(p) => vec![p],
        None => (0..n).collect(),
    };
    let mut consumer = kafka.consumer()?;
    let mut ends = Vec::new();
    for p in partitions {
        let ssp = stream.partition(p);
        let range = admin.offsets(&ssp)?;
        let start = match from {
            Start::Oldest => StartOffset::Oldest,
            Start::Newest => StartOffset::Upcoming,
            Start::Offset(o) if o < range.oldest || o > range.next => {
                bail!("offset {o} is out of range for {ssp} (oldest {}, next {})", range.oldest, range.next)
            }
            Start::Offset(o) => StartOffset::At(o),
        };
        consumer.register(&ssp, start)?;
        ends.push((ssp, range.next));
    }
    consumer.start()?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut failed = None;
    loop {
        if until_end && ends.iter().all(|(ssp, end)| consumer.position(ssp).is_none_or(|p| p >= *end)) {
            break;
        }
        let got = consumer.poll(
            &|_| true,
            &mut |ssp, m| {
                let end = ends.iter().find(|(s, _)| s == ssp).map_or(u64::MAX, |(_, e)| *e);
                if failed.is_some() || (until_end && m.offset >= end) {
                    return;
                }
                let record = Record {
                    partition: ssp.partition,
                    offset: m.offset,
                    timestamp: m.timestamp,
                    key: m.key.as_deref(),
                    value: m.value.as_deref(),
                    headers: &[],
                };
                if let Err(e) = write_record(&mut out, &record, format) {
                    failed = Some(e);
                }
            },
            Duration::from_millis(500),
        )?;
        if let Some(e) = failed.take() {
            return Err(e.into());
        }
        if got == 0 {
            out.flush()?;
        }
    }
    consumer.stop();
    out.flush()?;
    Ok(())
}
