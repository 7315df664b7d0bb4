//! Append and read throughput of the embedded log.
//!
//! `cargo bench -p gregor-log --bench log_throughput [-- --quick]`
//!
//! 100-byte values, 8 partitions, batch sizes 1/100/1000, each durability
//! policy. One thread appends round-robin over the partitions; then one
//! thread reads everything back, decoding every message. Each case runs for
//! at most a time budget (fsync-per-batch with tiny batches is slow by nature)
//! and prints messages/s and MB/s (MB = 10^6 bytes of message values).
//! Set `GREGOR_BENCH_DIR` to put the data on a particular disk.

use gregor_log::{Durability, Log, PartitionReader, Record, StreamConfig};
use indicatif::{ProgressBar, ProgressStyle};
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 8;
const VALUE_LEN: usize = 100;

struct Case {
    durability: Durability,
    batch: usize,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (max_messages, budget) =
        if quick { (200_000u64, Duration::from_secs(1)) } else { (4_000_000u64, Duration::from_secs(4)) };
    let base = std::env::var_os("GREGOR_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    println!("gregor-log: {VALUE_LEN}-byte values, {PARTITIONS} partitions, one appending thread, one reading thread");
    println!("data in {}; each case stops at {max_messages} messages or {budget:?} of appending", base.display());
    println!();
    println!(
        "{:<11} {:>6} {:>10} {:>14} {:>11} {:>14} {:>11}",
        "durability", "batch", "messages", "append msg/s", "append MB/s", "read msg/s", "read MB/s"
    );
    for durability in [Durability::Always, Durability::IntervalMs(1000), Durability::Os] {
        for batch in [1usize, 100, 1000] {
            run(&base, &Case { durability, batch }, max_messages, budget);
        }
    }
}

fn progress(len: u64, what: String) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what);
    bar
}

fn run(base: &std::path::Path, case: &Case, max_messages: u64, budget: Duration) {
    let dir = tempfile::tempdir_in(base).expect("bench directory");
    let log = Log::open(dir.path()).expect("open log");
    let stream = log
        .create_stream("bench", StreamConfig { durability: case.durability, ..StreamConfig::new(PARTITIONS) })
        .expect("create");
    let partitions: Vec<_> = (0..PARTITIONS).map(|p| stream.partition(p).expect("partition")).collect();
    let value = [b'x'; VALUE_LEN];
    let records = vec![Record::value(&value); case.batch];
    let bar = progress(max_messages, format!("append {} x{}", case.durability, case.batch));

    let start = Instant::now();
    let mut written = 0u64;
    let mut p = 0;
    while written < max_messages && start.elapsed() < budget {
        partitions[p].append(&records).expect("append");
        p = (p + 1) % partitions.len();
        written += case.batch as u64;
        if written % 65_536 < case.batch as u64 {
            bar.set_position(written);
        }
    }
    let append_secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let bar = progress(written, format!("read {} x{}", case.durability, case.batch));
    let start = Instant::now();
    let mut read = 0u64;
    let mut bytes = 0u64;
    for partition in &partitions {
        let end = partition.next_offset().expect("end");
        let mut reader = PartitionReader::new(partition.clone(), 0);
        while reader.next_offset() < end {
            let fetch = reader.poll(1 << 20).expect("poll");
            for m in fetch.messages() {
                bytes += m.expect("message").value.map_or(0, |v| v.len() as u64);
                read += 1;
            }
            bar.set_position(read);
        }
    }
    let read_secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    assert_eq!(read, written, "read back everything");
    assert_eq!(bytes, written * VALUE_LEN as u64);
    let mb = |n: u64, s: f64| n as f64 * VALUE_LEN as f64 / s / 1e6;
    println!(
        "{:<11} {:>6} {:>10} {:>14.0} {:>11.1} {:>14.0} {:>11.1}",
        case.durability.to_string(),
        case.batch,
        written,
        written as f64 / append_secs,
        mb(written, append_secs),
        read as f64 / read_secs,
        mb(read, read_secs)
    );
}
