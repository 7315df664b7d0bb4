//! Latency of a stateful job on the embedded log, from a message's append
//! to the append of its result, with commits and RocksDB flushes running.
//!
//! `cargo bench -p gregor-examples --bench latency [-- --seconds N] [--max-rate MSGS_PER_S] [--containers N] [--loads 10,50,90] [--plot FILE.png]`
//!
//! The job is `bench-job` in `count-forward` mode as a separate process: it
//! counts each message per key in a RocksDB store with a changelog (default
//! store settings, `task.commit.ms=1000`), prefetching upcoming keys
//! (`StreamTask::prefetch`), then copies the message to an output stream. This process appends 100-byte messages keyed over 1
//! million keys and partitioned by key (each task counts its own 125,000
//! keys) at a fixed rate, each stamped with its append time, and
//! tails the output; a result's latency is the time its fetch was read
//! minus the stamp (so it includes the reader's wake-up, tens of
//! microseconds).
//!
//! First the job's maximum rate is measured (a backlog of 1 million
//! messages, process start to exit, the median of 3 runs: one run on this
//! machine can read 25% high or low) unless `--max-rate` gives it; then each
//! load (10%, 50% and 90% of it) runs for `--seconds` (default 10) after a
//! 2-second warm-up. Prints p50, p99, p99.9 and the maximum.
//! `GREGOR_BENCH_EXTRA="key=value;key=value"` adds config to the job;
//! `GREGOR_BENCH_JOB_LOG=FILE` keeps its log; `GREGOR_BENCH_TIMELINE=MS`
//! prints each 100 ms (by append time) whose slowest result took more than
//! MS, to see when a tail happens, and each append of the load generator
//! that took longer than MS.

mod plot;

use gregor_examples::Rng;
use gregor_examples::bench::{PARTITIONS, VALUE_LEN};
use gregor_log::txn::CommittedFilter;
use gregor_log::{Durability, Log, PartitionReader, Record, StreamConfig};
use hdrhistogram::Histogram;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const JOB: &str = env!("CARGO_BIN_EXE_bench-job");
const KEYS: u64 = 1_000_000;
const WARM_UP: Duration = Duration::from_secs(2);

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos() as u64
}

fn start_job(dir: &std::path::Path, containers: u32, until_end: bool) -> Child {
    let config = dir.join("bench.properties");
    std::fs::write(
        &config,
        format!(
            "job.name=bench\ntask.inputs=log.bench-in\ntask.commit.ms=1000\ntask.processing.guarantee=at-least-once\njob.container.count={containers}\n\
             systems.log.factory=log\nsystems.log.path={}\nsystems.log.samza.offset.default=oldest\n\
             systems.log.samza.key.serde=bytes\nsystems.log.samza.msg.serde=bytes\nbench.mode=count-forward\n\
             stores.counts.factory=rocksdb\nstores.counts.key.serde=bytes\nstores.counts.msg.serde=long\n\
             stores.counts.changelog=log.bench-counts\n",
            dir.display()
        ),
    )
    .expect("config");
    let mut cmd = Command::new(JOB);
    cmd.args(["--config", config.to_str().expect("path")]).stdout(Stdio::null());
    // GREGOR_BENCH_JOB_LOG=FILE keeps the job's log (at RUST_LOG's level,
    // e.g. `gregor_runtime=debug` shows each commit's duration).
    match std::env::var_os("GREGOR_BENCH_JOB_LOG") {
        Some(path) => {
            let file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("job log");
            cmd.stderr(file);
        }
        None => {
            cmd.env("RUST_LOG", "warn");
        }
    }
    if until_end {
        cmd.arg("--until-end");
    }
    // GREGOR_BENCH_EXTRA="key=value;key=value" adds config (to compare settings).
    for e in std::env::var("GREGOR_BENCH_EXTRA").unwrap_or_default().split(';').filter(|e| !e.is_empty()) {
        cmd.args(["--set", e]);
    }
    cmd.spawn().expect("start bench-job")
}

/// Messages per second the job sustains: a backlog, process start to exit.
fn max_rate(base: &std::path::Path, containers: u32) -> f64 {
    let dir = tempfile::tempdir_in(base).expect("dir");
    let messages = 1_000_000;
    {
        let log = Log::open(dir.path()).expect("log");
        let input = create_input(&log);
        let mut keyed = Keyed::new();
        for _ in 0..messages / 10_000 {
            keyed.append(&input, 10_000);
        }
    }
    let started = Instant::now();
    let status = start_job(dir.path(), containers, true).wait().expect("wait");
    assert!(status.success(), "bench-job failed");
    messages as f64 / started.elapsed().as_secs_f64()
}

fn create_input(log: &Log) -> Arc<gregor_log::Stream> {
    log.create_stream("bench-in", StreamConfig { durability: Durability::Os, ..StreamConfig::new(PARTITIONS) })
        .expect("create input")
}

/// Messages keyed uniformly over [`KEYS`] keys and partitioned by key, as a
/// producer of keyed data does, so that each task counts its own keys
/// (125,000 of them), as a real job would; each value starts with its
/// append time (ns), read once per append (the messages of one append are
/// appended together; the clock read per message was 12% of this
/// process's CPU, which the job's containers share the cores with).
struct Keyed {
    rng: Rng,
    /// Per partition: the keys one after the other, and where each ends.
    keys: Vec<(Vec<u8>, Vec<usize>)>,
    values: Vec<Vec<[u8; VALUE_LEN]>>,
}

impl Keyed {
    fn new() -> Self {
        Keyed {
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            keys: vec![(Vec::new(), Vec::new()); PARTITIONS as usize],
            values: vec![Vec::new(); PARTITIONS as usize],
        }
    }

    /// Appends `n` messages, one append per partition.
    fn append(&mut self, input: &gregor_log::Stream, n: u64) {
        use std::io::Write;
        let mut v = [b'v'; VALUE_LEN];
        v[..8].copy_from_slice(&now_ns().to_le_bytes());
        for _ in 0..n {
            let key = self.rng.below(KEYS);
            let p = (key % u64::from(PARTITIONS)) as usize;
            let (arena, ends) = &mut self.keys[p];
            write!(arena, "key-{key}").expect("write to a Vec");
            ends.push(arena.len());
            self.values[p].push(v);
        }
        for p in 0..PARTITIONS as usize {
            let (arena, ends) = &mut self.keys[p];
            if ends.is_empty() {
                continue;
            }
            let starts = std::iter::once(0).chain(ends.iter().copied());
            let records: Vec<Record<'_>> = starts
                .zip(ends.iter())
                .zip(&self.values[p])
                .map(|((start, &end), v)| Record { key: Some(&arena[start..end]), ..Record::value(v) })
                .collect();
            input.append(p as u32, &records).expect("append");
            arena.clear();
            ends.clear();
            self.values[p].clear();
        }
    }
}

/// Appends `rate` messages per second, stamped, until `stop`; returns how many.
fn produce(log: &Log, rate: f64, stop: &AtomicBool) -> u64 {
    let input = create_input(log);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut keyed = Keyed::new();
    // GREGOR_BENCH_TIMELINE also reports appends slower than its threshold:
    // a result's latency counts from its stamp, taken before the append.
    let slow_append: Option<u64> = std::env::var("GREGOR_BENCH_TIMELINE").ok().and_then(|ms| ms.parse().ok());
    while !stop.load(Ordering::Relaxed) {
        // Every millisecond, the messages due by now (as a client that
        // batches for 1 ms).
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        if due > sent {
            let at = now_ns();
            keyed.append(&input, due - sent);
            let took = now_ns().saturating_sub(at);
            if slow_append.is_some_and(|ms| took > ms * 1_000_000) {
                eprintln!("slow append: {:.1} ms (at {:.1})", took as f64 / 1e6, at as f64 / 1e9);
            }
            sent = due;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    sent
}

/// Reads the output until `expected` results arrived (or it stalls for 10 s);
/// records the latency of those stamped after `measure_from` (ns).
fn consume(log: &Log, measure_from: u64, expected: &dyn Fn() -> Option<u64>) -> (Histogram<u64>, u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let output = loop {
        match log.stream("bench-out") {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("the job created no output: {e}"),
        }
    };
    let mut readers: Vec<PartitionReader> =
        (0..output.partition_count()).map(|p| output.reader(p, 0).expect("reader")).collect();
    // Read-committed, as a downstream gregor job reads: under exactly-once a
    // result counts when its transaction commits.
    let mut held: Vec<CommittedFilter<u64>> = readers.iter().map(|_| CommittedFilter::new()).collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).expect("histogram");
    let mut received = 0u64;
    // GREGOR_BENCH_TIMELINE (module docs): (threshold ms, slowest per 100 ms).
    let mut timeline: Option<(u64, Vec<u64>)> =
        std::env::var("GREGOR_BENCH_TIMELINE").ok().and_then(|ms| ms.parse().ok()).map(|ms| (ms, Vec::new()));
    let mut last_progress = Instant::now();
    loop {
        let mut got = 0;
        for (r, held) in readers.iter_mut().zip(&mut held) {
            let fetch = r.poll(1 << 20).expect("poll");
            // Once per fetch: its results were read together.
            let now = now_ns();
            for e in fetch.entries() {
                held.push_entry(e.expect("record"), |rec| {
                    u64::from_le_bytes(rec.value.expect("value")[..8].try_into().expect("stamp"))
                });
            }
            while let Some(stamp) = held.pop() {
                if stamp >= measure_from {
                    let latency = now.saturating_sub(stamp).max(1_000);
                    hist.record(latency).expect("record");
                    if let Some((_, t)) = timeline.as_mut() {
                        let w = ((stamp - measure_from) / 100_000_000) as usize;
                        if t.len() <= w {
                            t.resize(w + 1, 0);
                        }
                        t[w] = t[w].max(latency);
                    }
                }
                got += 1;
            }
        }
        received += got;
        if got > 0 {
            last_progress = Instant::now();
        } else if expected().is_some_and(|e| received >= e) || last_progress.elapsed() > Duration::from_secs(10) {
            if let Some((over, t)) = timeline {
                for (w, max) in t.iter().enumerate().filter(|(_, m)| **m > over * 1_000_000) {
                    let at = (measure_from + w as u64 * 100_000_000) as f64 / 1e9; // Unix time, for the job's log
                    eprintln!("timeline: {:.1} s: max {:.1} ms (at {at:.1})", w as f64 / 10.0, *max as f64 / 1e6);
                }
            }
            return (hist, received);
        } else {
            let refs: Vec<&PartitionReader> = readers.iter().collect();
            PartitionReader::wait_any(&refs, Duration::from_millis(50));
        }
    }
}

fn run_load(base: &std::path::Path, containers: u32, rate: f64, seconds: u64) -> (Histogram<u64>, u64, u64) {
    let dir = tempfile::tempdir_in(base).expect("dir");
    let log = Arc::new(Log::open(dir.path()).expect("log"));
    let stop = Arc::new(AtomicBool::new(false));
    let sent_total = Arc::new(std::sync::Mutex::new(None));
    let producer = {
        let (log, stop, sent_total) = (log.clone(), stop.clone(), sent_total.clone());
        std::thread::spawn(move || {
            let sent = produce(&log, rate, &stop);
            *sent_total.lock().expect("lock") = Some(sent);
        })
    };
    // The input exists before the job starts (it checks its inputs).
    while log.stream("bench-in").is_err() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut job = start_job(dir.path(), containers, false);
    let measure_from = now_ns() + WARM_UP.as_nanos() as u64;
    let timer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(WARM_UP + Duration::from_secs(seconds));
            stop.store(true, Ordering::Relaxed);
        })
    };
    let expected = || *sent_total.lock().expect("lock");
    let (hist, received) = consume(&log, measure_from, &expected);
    timer.join().expect("timer");
    producer.join().expect("producer");
    job.kill().ok();
    job.wait().ok();
    let sent = expected().unwrap_or(0);
    (hist, sent, received)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let seconds: u64 = arg("--seconds").and_then(|n| n.parse().ok()).unwrap_or(10);
    let containers: u32 = arg("--containers").and_then(|n| n.parse().ok()).unwrap_or(2);
    let base = std::env::var_os("GREGOR_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let max = arg("--max-rate").and_then(|n| n.parse().ok()).unwrap_or_else(|| {
        let mut runs: Vec<f64> = (0..3).map(|_| max_rate(&base, containers)).collect();
        runs.sort_by(f64::total_cmp);
        println!("maximum rate, 3 runs: {:.0}, {:.0}, {:.0} msg/s", runs[0], runs[1], runs[2]);
        runs[1]
    });
    println!(
        "gregor latency: count-forward job (RocksDB + changelog, commit every 1 s), {containers} containers, \
         maximum rate {max:.0} msg/s; {seconds} s per load after {} s warm-up",
        WARM_UP.as_secs()
    );
    println!(
        "{:>6} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "load", "messages/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "measured"
    );
    let loads: Vec<u32> =
        arg("--loads").map_or(vec![10, 50, 90], |l| l.split(',').filter_map(|x| x.parse().ok()).collect());
    let mut percentiles: Vec<plot::Series> =
        ["p50", "p99", "p99.9"].iter().map(|n| plot::Series { name: (*n).to_string(), points: Vec::new() }).collect();
    for load_pct in loads {
        let rate = max * f64::from(load_pct) / 100.0;
        let (h, sent, received) = run_load(&base, containers, rate, seconds);
        assert_eq!(received, sent, "every message has its result");
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
        for (s, q) in percentiles.iter_mut().zip([0.5, 0.99, 0.999]) {
            s.points.push((f64::from(load_pct), ms(q)));
        }
        println!(
            "{:>5}% {:>12.0} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10}",
            load_pct,
            rate,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1e6,
            h.len()
        );
    }
    if let Some(path) = arg("--plot") {
        let title = format!("count-forward latency, RocksDB + changelog, {containers} containers (max {max:.0} msg/s)");
        plot::line_chart(
            std::path::Path::new(&path),
            &title,
            "load, % of maximum rate",
            "ms (log)",
            false,
            true,
            &percentiles,
        );
    }
}
