//! Throughput, restart and restore against state size: the RocksDB count
//! job (`bench-job`, changelog on, default store settings) over inputs whose
//! every message has a new key, so the state holds as many keys as the input
//! has messages.
//!
//! `cargo bench -p gregor-examples --bench scaling [-- --keys 1000000,10000000] [--containers N] [--plot FILE.png]`
//!
//! Per state size:
//! - `count`: the job over the input, process start to exit (msg/s);
//! - `restart`: the job started again on the same machine with its local
//!   state (host affinity) and nothing new to read;
//! - `restore`: the same with the local state deleted, so every store is
//!   rebuilt from its changelog (records/s over the whole run).
//!
//! `GREGOR_BENCH_EXTRA="key=value;key=value"` adds config to every run;
//! `GREGOR_BENCH_JOB_LOG=FILE` keeps the jobs' logs.

mod plot;

use gregor_examples::bench::{Keys, VALUE_LEN, load};
use gregor_log::Log;
use std::process::{Command, Stdio};
use std::time::Instant;

const JOB: &str = env!("CARGO_BIN_EXE_bench-job");

/// Runs the count job over `dir` until its input ends; returns seconds.
fn run(dir: &std::path::Path, containers: u32) -> f64 {
    let config = dir.join("bench.properties");
    std::fs::write(
        &config,
        format!(
            "job.name=bench\ntask.inputs=log.bench-in\ntask.commit.ms=1000\ntask.processing.guarantee=at-least-once\njob.container.count={containers}\n\
             systems.log.factory=log\nsystems.log.path={}\nsystems.log.samza.offset.default=oldest\n\
             systems.log.samza.key.serde=bytes\nsystems.log.samza.msg.serde=bytes\nbench.mode=count\n\
             stores.counts.factory=rocksdb\nstores.counts.key.serde=bytes\nstores.counts.msg.serde=long\n\
             stores.counts.changelog=log.bench-counts\n",
            dir.display()
        ),
    )
    .expect("config");
    let mut cmd = Command::new(JOB);
    // GREGOR_BENCH_JOB_LOG=FILE keeps the jobs' logs (at RUST_LOG's level).
    let keep_log = std::env::var_os("GREGOR_BENCH_JOB_LOG");
    cmd.args(["--config", config.to_str().expect("path"), "--until-end"]).stdout(Stdio::null()).stderr(Stdio::piped());
    if keep_log.is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    for e in std::env::var("GREGOR_BENCH_EXTRA").unwrap_or_default().split(';').filter(|e| !e.is_empty()) {
        cmd.args(["--set", e]);
    }
    let start = Instant::now();
    let out = cmd.output().expect("run bench-job");
    let secs = start.elapsed().as_secs_f64();
    assert!(out.status.success(), "bench-job failed: {}", String::from_utf8_lossy(&out.stderr));
    if let Some(path) = keep_log {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("job log");
        writeln!(f, "--- run of {secs:.2} s").and_then(|()| f.write_all(&out.stderr)).expect("job log");
    }
    secs
}

fn changelog_records(dir: &std::path::Path) -> u64 {
    let log = Log::open(dir).expect("log");
    let s = log.stream("bench-counts").expect("changelog");
    (0..s.partition_count()).map(|p| s.partition(p).and_then(|p| p.next_offset()).unwrap_or(0)).sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let sizes: Vec<u64> =
        arg("--keys").map_or(vec![1_000_000, 10_000_000], |k| k.split(',').filter_map(|n| n.parse().ok()).collect());
    let containers: u32 = arg("--containers").and_then(|n| n.parse().ok()).unwrap_or(2);
    let base = std::env::var_os("GREGOR_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    println!(
        "gregor scaling: RocksDB count with changelog, every message a new key ({VALUE_LEN}-byte values), {containers} containers"
    );
    println!(
        "{:>12} {:>12} {:>11} {:>12} {:>12} {:>16}",
        "keys", "count msg/s", "restart s", "restore s", "restored", "restore rec/s"
    );
    let mut count_rate = plot::Series { name: "count, msg/s".into(), points: Vec::new() };
    let mut restore_rate = plot::Series { name: "restore from changelog, records/s".into(), points: Vec::new() };
    for keys in sizes {
        let dir = tempfile::tempdir_in(&base).expect("dir");
        load(dir.path(), keys, Keys::Distinct);
        let count = run(dir.path(), containers);
        let restart = run(dir.path(), containers);
        std::fs::remove_dir_all(dir.path().join("__state")).expect("delete the local state");
        let restore = run(dir.path(), containers);
        let records = changelog_records(dir.path());
        println!(
            "{keys:>12} {:>12.0} {restart:>11.2} {restore:>12.2} {records:>12} {:>16.0}",
            keys as f64 / count,
            records as f64 / restore
        );
        count_rate.points.push((keys as f64, keys as f64 / count));
        restore_rate.points.push((keys as f64, records as f64 / restore));
    }
    if let Some(path) = arg("--plot") {
        let title = format!("RocksDB count and restore against state size, {containers} containers");
        plot::line_chart(
            std::path::Path::new(&path),
            &title,
            "keys in the store (log)",
            "per second",
            true,
            false,
            &[count_rate, restore_rate],
        );
    }
}
