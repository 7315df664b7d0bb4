//! Throughput of jobs in the `process` execution mode with 1 and 2
//! container processes: does a second container use the second core?
//!
//! `cargo bench -p gregor-examples --bench process_mode [-- --quick]`
//!
//! Runs the `bench-job` binary as users run jobs (`--config`, `--set`,
//! `--until-end`) over 100-byte messages in 8 partitions written beforehand:
//! pass-through to an output stream, and counting per key (1 million keys)
//! in a RocksDB store with a changelog. Prints messages/s and MB/s.

use gregor_examples::bench::{Keys, PARTITIONS, VALUE_LEN, load};
use std::process::Command;
use std::time::Instant;

const JOB: &str = env!("CARGO_BIN_EXE_bench-job");
fn run(dir: &std::path::Path, containers: u32, extra: &[&str]) -> f64 {
    let config = dir.join("bench.properties");
    std::fs::write(
        &config,
        format!(
            "job.name=bench\ntask.inputs=log.bench-in\ntask.commit.ms=5000\ntask.processing.guarantee=at-least-once\njob.coordinator=process\njob.container.count={containers}\n\
             systems.log.factory=log\nsystems.log.path={}\nsystems.log.samza.offset.default=oldest\n\
             systems.log.samza.key.serde=bytes\nsystems.log.samza.msg.serde=bytes\n",
            dir.display()
        ),
    )
    .expect("config");
    let mut cmd = Command::new(JOB);
    cmd.args(["--config", config.to_str().expect("path"), "--until-end"]).env("RUST_LOG", "warn");
    for e in extra {
        cmd.args(["--set", e]);
    }
    let start = Instant::now();
    let status = cmd.status().expect("run bench-job");
    assert!(status.success(), "bench-job failed");
    start.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let messages: u64 = if quick { 1_000_000 } else { 10_000_000 };
    let base = std::env::var_os("GREGOR_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    println!("process mode: {messages} messages of {VALUE_LEN} bytes in {PARTITIONS} partitions");
    println!("{:<28} {:>10} {:>10} {:>14} {:>9}", "job", "processes", "seconds", "messages/s", "MB/s");
    let jobs: [(&str, &[&str]); 2] = [
        ("pass-through", &["bench.mode=pass-through"]),
        (
            "count, RocksDB + changelog",
            &[
                "bench.mode=count",
                "stores.counts.factory=rocksdb",
                "stores.counts.key.serde=bytes",
                "stores.counts.msg.serde=long",
                "stores.counts.changelog=log.bench-counts",
                "stores.counts.object.cache.size=100000",
                "stores.counts.write.batch.size=20000",
            ],
        ),
    ];
    for (name, extra) in jobs {
        for containers in [1, 2] {
            let dir = tempfile::tempdir_in(&base).expect("dir");
            load(dir.path(), messages, Keys::Uniform(100_000));
            let secs = run(dir.path(), containers, extra);
            println!(
                "{name:<28} {containers:>10} {secs:>10.1} {:>14.0} {:>9.1}",
                messages as f64 / secs,
                messages as f64 * VALUE_LEN as f64 / secs / 1e6
            );
        }
    }
}
