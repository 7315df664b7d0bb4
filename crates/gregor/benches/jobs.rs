//! Throughput of whole jobs on the embedded log.
//!
//! `cargo bench -p gregor --bench jobs [-- --quick] [--containers N] [--only pass-through|count]`
//!
//! - pass-through: 100-byte values in 8 partitions, each copied to the same
//!   partition of an output stream (bytes serde: no copies, no allocation per
//!   message in gregor);
//! - stateful count: 100-byte values keyed over 1 million distinct keys
//!   (uniformly random), counted per key in an in-memory store with a
//!   changelog (every update reaches the changelog, as most keys miss the
//!   1000-entry cache).
//!
//! The input is written first; then the job runs with `--until-end`
//! semantics and the wall time from start to the final commit is measured.
//! Prints messages/s and MB/s of message values (MB = 10^6 bytes).

use bytes::Bytes;
use gregor::{
    App, Config, IncomingEnvelope, KeyValueStore, MessageCollector, OutgoingEnvelope, Store, StreamTask, SystemStream,
    TaskContext, TaskCoordinator, TaskError,
};
use gregor_log::{Durability, Log, Record, StreamConfig};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

const PARTITIONS: u32 = 8;
const VALUE_LEN: usize = 100;

#[derive(Default)]
struct PassThrough {
    out: Option<SystemStream>,
}

impl StreamTask for PassThrough {
    type Key = Bytes;
    type Message = Bytes;

    fn init(&mut self, _: &mut TaskContext<'_>) -> Result<(), TaskError> {
        self.out = SystemStream::parse("log.bench-out");
        Ok(())
    }

    fn process(
        &mut self,
        e: IncomingEnvelope<'_, Bytes, Bytes>,
        c: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let out = self.out.as_ref().ok_or_else(|| TaskError::msg("no output"))?;
        c.send(OutgoingEnvelope {
            stream: out,
            partition: Some(e.ssp.partition),
            key: e.key,
            message: e.message,
            timestamp: Some(e.timestamp),
        })?;
        Ok(())
    }
}

#[derive(Default)]
struct Count {
    counts: Option<Store<Bytes, i64>>,
}

impl StreamTask for Count {
    type Key = Bytes;
    type Message = Bytes;

    fn init(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        self.counts = Some(ctx.store("counts")?);
        Ok(())
    }

    fn process(
        &mut self,
        e: IncomingEnvelope<'_, Bytes, Bytes>,
        _: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let counts = self.counts.as_ref().ok_or_else(|| TaskError::msg("no store"))?;
        let key = e.key.ok_or_else(|| TaskError::msg("no key"))?;
        let n = counts.get(&key)?.unwrap_or(0) + 1;
        counts.put(&key, &n)?;
        Ok(())
    }
}

/// Writes `messages` 100-byte values over 8 partitions; keyed over `keys` distinct keys if given.
fn load(dir: &std::path::Path, messages: u64, keys: Option<u64>) {
    let log = Log::open(dir).expect("log");
    let s = log
        .create_stream("bench-in", StreamConfig { durability: Durability::Os, ..StreamConfig::new(PARTITIONS) })
        .expect("create");
    let value = [b'v'; VALUE_LEN];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let bar = indicatif::ProgressBar::new(messages).with_message("writing input");
    let mut key_bufs: Vec<String> = Vec::with_capacity(1000);
    let mut written = 0;
    while written < messages {
        let n = 1000.min(messages - written);
        key_bufs.clear();
        for _ in 0..n {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            key_bufs.push(keys.map_or_else(String::new, |k| format!("key-{}", rng % k)));
        }
        let records: Vec<Record<'_>> =
            key_bufs.iter().map(|k| Record { key: keys.map(|_| k.as_bytes()), ..Record::value(&value) }).collect();
        s.append(((written / 1000) % u64::from(PARTITIONS)) as u32, &records).expect("append");
        written += n;
        bar.set_position(written);
    }
    bar.finish_and_clear();
}

fn config(dir: &std::path::Path, containers: u32, extra: &str) -> Config {
    let text = format!(
        "job.name=bench\ntask.inputs=log.bench-in\njob.container.count={containers}\ntask.commit.ms=5000\n\
         systems.log.factory=log\nsystems.log.path={}\nsystems.log.samza.offset.default=oldest\n{extra}",
        dir.display()
    );
    Config::from_properties(&text, "bench").expect("config")
}

fn report(name: &str, containers: u32, messages: u64, secs: f64) {
    println!(
        "{name:<16} {containers:>10} {messages:>12} {:>12.1} {:>14.0} {:>9.1}",
        secs,
        messages as f64 / secs,
        messages as f64 * VALUE_LEN as f64 / secs / 1e6
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let messages: u64 = if quick { 1_000_000 } else { 10_000_000 };
    let keys: u64 = if quick { 100_000 } else { 1_000_000 };
    let containers: Vec<u32> = match args.iter().position(|a| a == "--containers") {
        Some(i) => vec![args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(1)],
        None => vec![1, 2],
    };
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let wanted = |job: &str| only.as_deref().is_none_or(|o| o == job);
    let base = std::env::var_os("GREGOR_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    println!("gregor jobs on the embedded log: {messages} messages of {VALUE_LEN} bytes in {PARTITIONS} partitions");
    println!(
        "{:<16} {:>10} {:>12} {:>12} {:>14} {:>9}",
        "job", "containers", "messages", "seconds", "messages/s", "MB/s"
    );
    for &c in containers.iter().filter(|_| wanted("pass-through")) {
        let dir = tempfile::tempdir_in(&base).expect("dir");
        load(dir.path(), messages, None);
        let cfg = config(dir.path(), c, "systems.log.samza.key.serde=bytes\nsystems.log.samza.msg.serde=bytes\n");
        let start = Instant::now();
        let summary = App::new("bench", PassThrough::default)
            .run_config(cfg, true, Arc::new(AtomicBool::new(false)))
            .expect("pass-through");
        assert_eq!(summary.processed, messages);
        report("pass-through", c, messages, start.elapsed().as_secs_f64());
    }
    for &c in containers.iter().filter(|_| wanted("count")) {
        let dir = tempfile::tempdir_in(&base).expect("dir");
        load(dir.path(), messages, Some(keys));
        let cfg = config(
            dir.path(),
            c,
            "systems.log.samza.key.serde=bytes\nsystems.log.samza.msg.serde=bytes\nstores.counts.factory=memory\n\
             stores.counts.key.serde=bytes\nstores.counts.msg.serde=long\nstores.counts.changelog=log.bench-counts\n",
        );
        let start = Instant::now();
        let summary =
            App::new("bench", Count::default).run_config(cfg, true, Arc::new(AtomicBool::new(false))).expect("count");
        assert_eq!(summary.processed, messages);
        report(&format!("count {}k keys", keys / 1000), c, messages, start.elapsed().as_secs_f64());
    }
}
