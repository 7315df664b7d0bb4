//! The speed targets of gregor, measured as a user would: the `bench-job`
//! binary run from the command line, timed from process start to exit (the
//! final commit included), median of several runs.
//!
//! `cargo bench -p gregor-examples --bench speed [-- --only NAME] [--runs N] [--messages N] [--scrape-ms N]`
//!
//! Workload (the one gregor was compared with Bytewax and Flink on): 2
//! million messages of 100 bytes in 8 partitions, keyed over 1 million
//! users; then:
//! - `pass-through`: every message copied to the same partition of an output;
//! - `count-memory`: messages counted per key in an in-memory store with a changelog;
//! - `count-rocksdb`: the same in RocksDB with a changelog, default store settings;
//! - `count-rocksdb-distinct`: 10 million messages, every key new;
//! - `startup`: from process start to the first message processed, on empty state.
//!
//! Each with 1 and 2 containers (local mode: one thread each). Prints
//! messages/s and MB/s of message values (MB = 10^6 bytes).
//! `GREGOR_BENCH_EXTRA="key=value;key=value"` adds config to every run.
//! `--scrape-ms N` fetches the job's Prometheus `/metrics` every N ms while
//! it runs (what monitoring costs) and prints the scrapes per run.

use gregor_examples::bench::{Keys, PARTITIONS, VALUE_LEN, load};
use gregor_examples::observe;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const JOB: &str = env!("CARGO_BIN_EXE_bench-job");

const COUNT: &[&str] = &[
    "bench.mode=count",
    "stores.counts.key.serde=bytes",
    "stores.counts.msg.serde=long",
    "stores.counts.changelog=log.bench-counts",
];

/// Runs bench-job over the input in `dir`; returns its wall time and its
/// stderr.
fn write_config(dir: &std::path::Path, containers: u32) -> std::path::PathBuf {
    let config = dir.join("bench.properties");
    std::fs::write(
        &config,
        format!(
            "job.name=bench\ntask.inputs=log.bench-in\ntask.commit.ms=1000\ntask.processing.guarantee=at-least-once\njob.container.count={containers}\n\
             systems.log.factory=log\nsystems.log.path={}\nsystems.log.samza.offset.default=oldest\n\
             systems.log.samza.key.serde=bytes\nsystems.log.samza.msg.serde=bytes\n",
            dir.display()
        ),
    )
    .expect("config");
    config
}

/// Scrapes the job in `dir` every `every` until `stop`; returns the scrapes.
fn scrape(dir: std::path::PathBuf, every: Duration, stop: Arc<AtomicBool>) -> u64 {
    let mut scrapes = 0;
    while !stop.load(Ordering::SeqCst) {
        if let Some(url) = observe::published_url(&dir.join("__state"), "bench") {
            let ok = observe::http_get(&format!("{url}metrics")).is_ok_and(|(code, _)| code == 200);
            scrapes += u64::from(ok);
        }
        std::thread::sleep(every);
    }
    scrapes
}

fn run(dir: &std::path::Path, containers: u32, extra: &[&str]) -> (Duration, String) {
    let config = write_config(dir, containers);
    let mut cmd = Command::new(JOB);
    cmd.args(["--config", config.to_str().expect("path"), "--until-end"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for e in extra {
        cmd.args(["--set", e]);
    }
    // GREGOR_BENCH_EXTRA="key=value;key=value" adds config (to compare settings).
    for e in std::env::var("GREGOR_BENCH_EXTRA").unwrap_or_default().split(';').filter(|e| !e.is_empty()) {
        cmd.args(["--set", e]);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = scrape_every().map(|every| {
        let (dir, stop) = (dir.to_owned(), stop.clone());
        std::thread::spawn(move || scrape(dir, every, stop))
    });
    let start = Instant::now();
    let out = cmd.output().expect("run bench-job");
    let took = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    if let Some(s) = scraper {
        let n = s.join().expect("scraper");
        eprintln!("  {n} scrapes of /metrics in {:.2} s", took.as_secs_f64());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "bench-job failed: {stderr}");
    (took, stderr)
}

/// The throughput jobs: name, messages, keys, config.
fn jobs(messages: u64) -> [(&'static str, u64, Keys, Vec<&'static str>); 4] {
    [
        ("pass-through", messages, Keys::Uniform(1_000_000), vec!["bench.mode=pass-through"]),
        ("count-memory", messages, Keys::Uniform(1_000_000), [COUNT, &["stores.counts.factory=memory"]].concat()),
        ("count-rocksdb", messages, Keys::Uniform(1_000_000), [COUNT, &["stores.counts.factory=rocksdb"]].concat()),
        ("count-rocksdb-distinct", 10_000_000, Keys::Distinct, [COUNT, &["stores.counts.factory=rocksdb"]].concat()),
    ]
}

/// `--scrape-ms N`.
fn scrape_every() -> Option<Duration> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == "--scrape-ms")?;
    args.get(i + 1)?.parse().ok().map(Duration::from_millis)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let runs: usize = arg("--runs").and_then(|n| n.parse().ok()).unwrap_or(3);
    let messages: u64 = arg("--messages").and_then(|n| n.parse().ok()).unwrap_or(2_000_000);
    let only = arg("--only");
    let wanted = |job: &str| only.as_deref().is_none_or(|o| o == job);
    let base = std::env::var_os("GREGOR_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    if let Some(dir) = arg("--prepare") {
        // For profiling: writes the input of `--only JOB` and its config
        // into DIR, prints the command that runs it, and stops.
        let dir = std::path::PathBuf::from(dir);
        let (name, n, keys, extra) = jobs(messages).into_iter().find(|j| wanted(j.0)).expect("--only JOB");
        load(&dir, n, keys);
        write_config(&dir, 1);
        let sets: Vec<String> = extra.iter().map(|e| format!("--set {e}")).collect();
        println!("{name}: {JOB} --config {}/bench.properties --until-end {}", dir.display(), sets.join(" "));
        return;
    }
    println!(
        "gregor speed: {VALUE_LEN}-byte messages in {PARTITIONS} partitions, bench-job process timed start to exit, median of {runs}"
    );
    println!(
        "{:<26} {:>10} {:>12} {:>9} {:>14} {:>9}",
        "job", "containers", "messages", "seconds", "messages/s", "MB/s"
    );
    for (name, n, keys, extra) in &jobs(messages) {
        if !wanted(name) {
            continue;
        }
        for containers in [1, 2] {
            let secs: Vec<f64> = (0..runs)
                .map(|_| {
                    let dir = tempfile::tempdir_in(&base).expect("dir");
                    load(dir.path(), *n, *keys);
                    run(dir.path(), containers, extra).0.as_secs_f64()
                })
                .collect();
            let s = median(secs);
            println!(
                "{name:<26} {containers:>10} {n:>12} {s:>9.2} {:>14.0} {:>9.1}",
                *n as f64 / s,
                *n as f64 * VALUE_LEN as f64 / s / 1e6
            );
        }
    }
    if wanted("startup") {
        let ms: Vec<f64> = (0..runs.max(5))
            .map(|_| {
                let dir = tempfile::tempdir_in(&base).expect("dir");
                load(dir.path(), 1, Keys::Uniform(1));
                let spawned = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_micros() as f64;
                let (_, stderr) = run(
                    dir.path(),
                    1,
                    &[&["bench.report.first=true"], COUNT, &["stores.counts.factory=rocksdb"]].concat(),
                );
                let first: f64 = stderr
                    .lines()
                    .find_map(|l| l.split("first-message-us=").nth(1))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("the job reports its first message");
                (first - spawned) / 1e3
            })
            .collect();
        println!(
            "startup: process start to first message processed (RocksDB store with a changelog, empty state): {:.1} ms (median)",
            median(ms)
        );
    }
}
