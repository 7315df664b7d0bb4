//! Throughput of whole jobs on the embedded log.
//!
//! `cargo bench -p gregor-examples --bench jobs [-- --quick] [--containers N] [--only pass-through|count|rocksdb]`
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

use gregor::Config;
use gregor_examples::bench::{Keys, PARTITIONS, VALUE_LEN, app, load};
use gregor_log::{Log, Record};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

fn config(dir: &std::path::Path, containers: u32, extra: &str) -> Config {
    let text = format!(
        "job.name=bench\ntask.inputs=log.bench-in\njob.container.count={containers}\ntask.commit.ms=5000\ntask.processing.guarantee=at-least-once\n\
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
        let summary = app().run_config(cfg, true, Arc::new(AtomicBool::new(false))).expect("pass-through");
        assert_eq!(summary.processed, messages);
        report("pass-through", c, messages, start.elapsed().as_secs_f64());
    }
    for &c in containers.iter().filter(|_| wanted("count")) {
        let dir = tempfile::tempdir_in(&base).expect("dir");
        load(dir.path(), messages, Keys::Uniform(keys));
        let cfg = config(
            dir.path(),
            c,
            "bench.mode=count\nsystems.log.samza.key.serde=bytes\nsystems.log.samza.msg.serde=bytes\nstores.counts.factory=memory\n\
             stores.counts.key.serde=bytes\nstores.counts.msg.serde=long\nstores.counts.changelog=log.bench-counts\n",
        );
        let start = Instant::now();
        let summary = app().run_config(cfg, true, Arc::new(AtomicBool::new(false))).expect("count");
        assert_eq!(summary.processed, messages);
        report(&format!("count {}k keys", keys / 1000), c, messages, start.elapsed().as_secs_f64());
    }
    let tuned = std::env::var("GREGOR_BENCH_STORE_EXTRA").unwrap_or_default().replace(';', "\n");
    let rocks = |changelog: bool| {
        let mut extra = format!("{tuned}\n")
            + &String::from(
                "bench.mode=count\nsystems.log.samza.key.serde=bytes\nsystems.log.samza.msg.serde=bytes\nstores.counts.factory=rocksdb\nstores.counts.key.serde=bytes\nstores.counts.msg.serde=long\n",
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
                let summary = app().run_config(cfg, true, Arc::new(AtomicBool::new(false))).expect("count");
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
    app().run_config(config(dir, containers, extra), true, Arc::new(AtomicBool::new(false))).expect("restart");
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
    app().run_config(config(dir, containers, extra), true, Arc::new(AtomicBool::new(false))).expect("restore");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "restore from the changelog ({records} records, {:.0} MB on disk) with {containers} container(s): {secs:.1} s, {:.0} records/s, {:.1} MB/s",
        changelog_bytes as f64 / 1e6,
        records as f64 / secs,
        changelog_bytes as f64 / 1e6 / secs
    );
}
