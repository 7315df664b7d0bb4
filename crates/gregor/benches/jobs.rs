//! Throughput of whole jobs on the embedded log.
//!
//! `cargo bench -p gregor --bench jobs [-- --quick] [--containers N] [--only pass-through|count|rocksdb]`
//!
//! - pass-through: 100-byte values in 8 partitions, each copied to the same
//!   partition of an output stream (bytes serde: no copies, no allocation per
//!   message in gregor);
//! - stateful count: 100-byte values keyed over 1 million distinct keys
//!   (uniformly random), counted per key in an in-memory store with a
//!   changelog (every update reaches the changelog, as most keys miss the
//!   1000-entry cache).
//!
//! - rocksdb: the same count in RocksDB stores, with and without a changelog,
//!   over 10 million distinct keys and over 100 thousand keys with skewed
//!   reuse; then the restart time with local state and the restore rate from
//!   the changelog with local state wiped.
//!
//! The input is written first; then the job runs with `--until-end`
//! semantics and the wall time from start to the final commit is measured.
//! Prints messages/s and MB/s of message values (MB = 10^6 bytes).
//! `GREGOR_BENCH_STORE_EXTRA="key=value;key=value"` adds config to the RocksDB runs.

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

/// How input messages are keyed.
#[derive(Clone, Copy)]
enum Keys {
    None,
    /// Uniformly random over this many keys.
    Uniform(u64),
    /// Every message its own key, in scrambled order.
    Distinct,
    /// 80% of messages over the hottest 1% of this many keys, the rest uniform.
    Skewed(u64),
}

/// Writes `messages` 100-byte values over 8 partitions, keyed as `keys` says.
fn load(dir: &std::path::Path, messages: u64, keys: Keys) {
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
            let i = written + key_bufs.len() as u64;
            key_bufs.push(match keys {
                Keys::None => String::new(),
                Keys::Uniform(k) => format!("key-{}", rng % k),
                // 2654435761 is odd and prime, so i -> i * p mod 2^32 is a bijection.
                Keys::Distinct => format!("key-{:010}", (i.wrapping_mul(2_654_435_761)) & 0xffff_ffff),
                Keys::Skewed(k) if rng % 10 < 8 => format!("key-{}", (rng >> 8) % (k / 100).max(1)),
                Keys::Skewed(k) => format!("key-{}", (rng >> 8) % k),
            });
        }
        let records: Vec<Record<'_>> = key_bufs
            .iter()
            .map(|k| Record { key: (!k.is_empty()).then_some(k.as_bytes()), ..Record::value(&value) })
            .collect();
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
        load(dir.path(), messages, Keys::None);
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
        load(dir.path(), messages, Keys::Uniform(keys));
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
    let tuned = std::env::var("GREGOR_BENCH_STORE_EXTRA").unwrap_or_default().replace(';', "\n");
    let rocks = |changelog: bool| {
        let mut extra = format!("{tuned}\n")
            + &String::from(
                "systems.log.samza.key.serde=bytes\nsystems.log.samza.msg.serde=bytes\nstores.counts.factory=rocksdb\nstores.counts.key.serde=bytes\nstores.counts.msg.serde=long\n",
            );
        if changelog {
            extra.push_str("stores.counts.changelog=log.bench-counts\n");
        }
        extra
    };
    for (label, keys) in [("10M keys", Keys::Distinct), ("100k keys, skewed", Keys::Skewed(100_000))] {
        for changelog in [false, true] {
            for &c in containers.iter().filter(|_| wanted("rocksdb")) {
                let dir = tempfile::tempdir_in(&base).expect("dir");
                load(dir.path(), messages, keys);
                let cfg = config(dir.path(), c, &rocks(changelog));
                let start = Instant::now();
                let summary = App::new("bench", Count::default)
                    .run_config(cfg, true, Arc::new(AtomicBool::new(false)))
                    .expect("count");
                assert_eq!(summary.processed, messages);
                let name = format!("rocksdb{} {label}", if changelog { "+changelog" } else { "" });
                report(&name, c, messages, start.elapsed().as_secs_f64());
                if changelog && matches!(keys, Keys::Distinct) && c == *containers.last().unwrap_or(&1) {
                    restarts(dir.path(), c, &rocks(true));
                }
            }
        }
    }
}

/// Restart costs of the job above: with its local state (host affinity), and
/// with the local state wiped (restore from the changelog).
fn restarts(dir: &std::path::Path, containers: u32, extra: &str) {
    let one_more = |dir: &std::path::Path| {
        let log = Log::open(dir).expect("log");
        let s = log.stream("bench-in").expect("stream");
        for p in 0..PARTITIONS {
            s.append(p, &[Record { key: Some(b"key-new"), ..Record::value(&[b'v'; VALUE_LEN]) }]).expect("append");
        }
    };
    one_more(dir);
    let start = Instant::now();
    App::new("bench", Count::default)
        .run_config(config(dir, containers, extra), true, Arc::new(AtomicBool::new(false)))
        .expect("restart");
    println!("restart with local state (host affinity), then 8 messages: {:.2} s", start.elapsed().as_secs_f64());
    let changelog_bytes: u64 = {
        let log = Log::open(dir).expect("log");
        let s = log.stream("bench-counts").expect("changelog");
        (0..s.partition_count()).map(|p| s.partition(p).and_then(|p| p.size_bytes()).unwrap_or(0)).sum()
    };
    let records: u64 = {
        let log = Log::open(dir).expect("log");
        let s = log.stream("bench-counts").expect("changelog");
        (0..s.partition_count()).map(|p| s.partition(p).and_then(|p| p.next_offset()).unwrap_or(0)).sum()
    };
    std::fs::remove_dir_all(dir.join("__state")).expect("wipe state");
    one_more(dir);
    let start = Instant::now();
    App::new("bench", Count::default)
        .run_config(config(dir, containers, extra), true, Arc::new(AtomicBool::new(false)))
        .expect("restore");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "restore from the changelog ({records} records, {:.0} MB on disk) with {containers} container(s): {secs:.1} s, {:.0} records/s, {:.1} MB/s",
        changelog_bytes as f64 / 1e6,
        records as f64 / secs,
        changelog_bytes as f64 / 1e6 / secs
    );
}
