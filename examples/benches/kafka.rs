//! Kafka throughput on loopback: gregor's producer and consumer alone, kcat
//! (librdkafka's own command-line client) on the same broker for
//! comparison, and the pass-through job over Kafka.
//!
//! `cargo bench -p gregor-examples --bench kafka [-- --messages N]`
//!
//! Uses the test broker (Tansu with SQLite storage, `scripts/test-deps`),
//! which is far slower than Apache Kafka: the figures compare clients on
//! one broker, they are not Kafka's speed.

use gregor_api::SystemStream;
use gregor_api::system::{StartOffset, SystemFactory};
use gregor_examples::kafka::{create, system};
use gregor_examples::kafka_broker::{KafkaBroker, tools_dir};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 8;
const VALUE_LEN: usize = 100;

fn report(what: &str, n: u64, secs: f64) {
    let rate = n as f64 / secs;
    println!("{what:<36} {n:>10} {secs:>9.2} {rate:>12.0} {:>8.1}", rate * VALUE_LEN as f64 / 1e6);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args
        .iter()
        .position(|a| a == "--messages")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let broker = KafkaBroker::start();
    let kafka = system(&broker.bootstrap());
    println!("Kafka on loopback (Tansu + SQLite), {n} messages of {VALUE_LEN} bytes, {PARTITIONS} partitions");
    println!("{:<36} {:>10} {:>9} {:>12} {:>8}", "what", "messages", "seconds", "messages/s", "MB/s");

    // gregor's producer.
    create(&kafka, "bench-in", PARTITIONS).expect("topic");
    let stream = SystemStream::new("kafka", "bench-in");
    let value = vec![b'x'; VALUE_LEN];
    let mut producer = kafka.producer().expect("producer");
    let t = Instant::now();
    for i in 0..n {
        producer.send_to(&stream.partition((i % PARTITIONS as u64) as u32), None, Some(&value), 0).expect("send");
    }
    producer.flush().expect("flush");
    report("gregor producer", n, t.elapsed().as_secs_f64());

    // gregor's consumer.
    let admin = kafka.admin().expect("admin");
    let mut consumer = kafka.consumer().expect("consumer");
    let mut ends = Vec::new();
    for p in 0..PARTITIONS {
        let ssp = stream.partition(p);
        ends.push((ssp.clone(), admin.offsets(&ssp).expect("offsets").next));
        consumer.register(&ssp, StartOffset::Oldest).expect("register");
    }
    consumer.start().expect("start");
    let t = Instant::now();
    let mut got = 0u64;
    while ends.iter().any(|(ssp, end)| consumer.position(ssp).is_some_and(|p| p < *end)) {
        got += consumer.poll(&|_| true, &mut |_, _| {}, Duration::from_millis(100)).expect("poll") as u64;
    }
    report("gregor consumer", got, t.elapsed().as_secs_f64());

    // kcat on the same broker.
    let lib = tools_dir().join("librdkafka");
    create(&kafka, "bench-kcat", PARTITIONS).expect("topic");
    let line = format!("{}\n", "x".repeat(VALUE_LEN));
    let t = Instant::now();
    let mut child = Command::new("kcat")
        .env("LD_LIBRARY_PATH", &lib)
        .args(["-b", &broker.bootstrap(), "-q", "-P", "-t", "bench-kcat", "-X", "acks=all", "-X", "linger.ms=5"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat (scripts/test-deps)");
    {
        let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("stdin"));
        for _ in 0..n {
            stdin.write_all(line.as_bytes()).expect("write");
        }
    }
    assert!(child.wait().expect("kcat").success());
    report("kcat -P (acks=all)", n, t.elapsed().as_secs_f64());
    let t = Instant::now();
    let out = Command::new("kcat")
        .env("LD_LIBRARY_PATH", &lib)
        .args(["-b", &broker.bootstrap(), "-q", "-C", "-t", "bench-kcat", "-e", "-f", "%o\\n"])
        .output()
        .expect("kcat");
    let read = out.stdout.iter().filter(|b| **b == b'\n').count() as u64;
    report("kcat -C", read, t.elapsed().as_secs_f64());

    // The jobs over Kafka: pass-through, and counting per key (100,000 keys
    // cycled) in RocksDB with its changelog on Kafka.
    let keyed = SystemStream::new("kafka", "bench-keyed");
    create(&kafka, "bench-keyed", PARTITIONS).expect("topic");
    let mut producer = kafka.producer().expect("producer");
    for i in 0..n {
        let key = format!("key-{:06}", i % 100_000);
        let p = gregor::partition_for_key(key.as_bytes(), PARTITIONS);
        producer.send_to(&keyed.partition(p), Some(key.as_bytes()), Some(&value), 0).expect("send");
    }
    producer.flush().expect("flush");
    let jobs: [(&str, &str); 2] = [
        (
            "pass-through job (read + write)",
            "task.inputs=kafka.bench-in\nbench.mode=pass-through\nbench.output=kafka.bench-out\n",
        ),
        (
            "count job, RocksDB + Kafka changelog",
            "task.inputs=kafka.bench-keyed\nbench.mode=count\nstores.counts.factory=rocksdb\n\
             stores.counts.key.serde=bytes\nstores.counts.msg.serde=long\nstores.counts.changelog=kafka.bench-counts\n\
             stores.counts.object.cache.size=100000\nstores.counts.write.batch.size=20000\n",
        ),
    ];
    for (name, keys) in jobs {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("bench.properties");
        std::fs::write(
            &config,
            format!(
                "job.name=bench\n{keys}task.commit.ms=5000\ntask.processing.guarantee=at-least-once\nsystems.kafka.factory=kafka\n\
                 systems.kafka.bootstrap.servers={}\nsystems.kafka.samza.offset.default=oldest\n\
                 job.logged.store.base.dir={}\n",
                broker.bootstrap(),
                dir.path().display()
            ),
        )
        .expect("config");
        let t = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_bench-job"))
            .args(["--config", config.to_str().expect("path"), "--until-end"])
            .env("RUST_LOG", "warn")
            .status()
            .expect("bench-job");
        assert!(status.success(), "{name} failed");
        report(name, n, t.elapsed().as_secs_f64());
    }
}
