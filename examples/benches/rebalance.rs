//! Rebalance time in the `zookeeper` mode: from a processor's death
//! (SIGKILL) to its tasks processing again on the survivor, with small state
//! and with a store of 1 million keys.
//!
//! `cargo bench -p gregor-examples --bench rebalance [-- --quick]`
//!
//! Two `key-counter` processors share 8 partitions (4 tasks each) against a
//! real ZooKeeper started for the run. After all input is counted, one is
//! killed and one new message is appended to each of its partitions; the
//! time until the survivor has processed all of them is the rebalance time.
//! It includes the session timeout (ZooKeeper notices the death only then)
//! and the debounce, which are settings, so they are printed apart from the
//! rest (new model, barrier, restoring the dead processor's stores from their
//! changelogs, first message).

use gregor_examples::zookeeper_server::ZkServer;
use gregor_log::{Log, PartitionReader, Record, StreamConfig};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY_COUNTER: &str = env!("CARGO_BIN_EXE_key-counter");
const PARTITIONS: u32 = 8;
const SESSION_MS: u64 = 2000;
const DEBOUNCE_MS: u64 = 200;

fn processor(dir: &Path, zk: &ZkServer, id: &str) -> Child {
    Command::new(KEY_COUNTER)
        .args(["--config", concat!(env!("CARGO_MANIFEST_DIR"), "/config/key-counter.properties")])
        .args(["--set", &format!("systems.log.path={}", dir.join("data").display())])
        .args(["--set", &format!("job.coordinator.zk.connect={}", zk.connect())])
        .args(["--set", &format!("processor.id={id}")])
        .args(["--set", &format!("job.logged.store.base.dir={}", dir.join(format!("state-{id}")).display())])
        .args(["--set", &format!("job.coordinator.zk.session.timeout.ms={SESSION_MS}")])
        .args(["--set", &format!("job.debounce.time.ms={DEBOUNCE_MS}")])
        .args(["--set", "task.commit.ms=1000", "--set", "task.processing.guarantee=at-least-once"])
        .args(["--set", "stores.counts.object.cache.size=100000"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start key-counter")
}

/// Audit records `(partition, processor)` from `from` on, and the new end.
fn audit_since(log: &Log, from: u64) -> (Vec<(u32, String)>, u64) {
    let Ok(stream) = log.stream("key-counter-audit") else { return (Vec::new(), from) };
    let p = stream.partition(0).expect("audit partition");
    let end = p.next_offset().expect("end");
    let mut reader = PartitionReader::new(p, from);
    let mut out = Vec::new();
    while reader.next_offset() < end {
        for m in reader.poll(1 << 20).expect("read audit").messages() {
            let v = m.expect("audit record").value.unwrap_or_default();
            let text = String::from_utf8_lossy(&v);
            let mut f = text.split(' ');
            let partition = f.next().and_then(|x| x.parse().ok()).expect("partition");
            f.next();
            out.push((partition, f.next().unwrap_or_default().to_owned()));
        }
    }
    (out, end)
}

fn run(keys: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let zk = ZkServer::start();
    let log = Log::open(dir.path().join("data")).expect("log");
    let events = log.create_stream("events", StreamConfig::new(PARTITIONS)).expect("events");
    let mut batches: Vec<Vec<String>> = vec![Vec::new(); PARTITIONS as usize];
    for i in 0..keys {
        let key = format!("key-{i:08}");
        batches[gregor::partition_for_key(key.as_bytes(), PARTITIONS) as usize].push(key);
    }
    for (p, keys) in batches.iter().enumerate() {
        for chunk in keys.chunks(10_000) {
            let records: Vec<Record<'_>> = chunk.iter().map(|k| Record::keyed(k.as_bytes(), b"x")).collect();
            events.append(p as u32, &records).expect("append");
        }
    }
    let mut a = processor(dir.path(), &zk, "a");
    let mut b = processor(dir.path(), &zk, "b");
    // Wait until every message is processed by the two.
    let mut seen = 0u64;
    let mut offset = 0;
    let mut owners: std::collections::BTreeMap<u32, String> = Default::default();
    while seen < keys {
        let (records, end) = audit_since(&log, offset);
        seen += records.len() as u64;
        offset = end;
        for (p, who) in records {
            owners.insert(p, who);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let b_partitions: BTreeSet<u32> = owners.iter().filter(|(_, w)| *w == "b").map(|(p, _)| *p).collect();
    assert!(!b_partitions.is_empty(), "b had no partitions: {owners:?}");
    // Let a commit happen so checkpoints cover everything.
    std::thread::sleep(Duration::from_millis(1500));
    let (_, mut offset) = audit_since(&log, offset);
    b.kill().expect("kill b");
    let died = Instant::now();
    b.wait().expect("reap b");
    for p in &b_partitions {
        events.append(*p, &[Record::keyed(b"after-death", b"x")]).expect("append marker");
    }
    let mut pending = b_partitions.clone();
    while !pending.is_empty() {
        let (records, end) = audit_since(&log, offset);
        offset = end;
        for (p, who) in records {
            if who == "a" {
                pending.remove(&p);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
        assert!(died.elapsed() < Duration::from_secs(300), "tasks never moved");
    }
    let total = died.elapsed().as_secs_f64();
    let settings = (SESSION_MS + DEBOUNCE_MS) as f64 / 1000.0;
    println!(
        "{:<22} {:>8} {:>12.2} {:>20.2} {:>14.2}",
        format!("{keys} keys"),
        b_partitions.len(),
        total,
        settings,
        total - settings
    );
    let _ = a.kill();
    let _ = a.wait();
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    println!(
        "zookeeper mode, 2 processors, {PARTITIONS} partitions; kill -9 one (session timeout {SESSION_MS} ms, debounce {DEBOUNCE_MS} ms)"
    );
    println!("{:<22} {:>8} {:>12} {:>20} {:>14}", "state", "moved", "seconds", "timeout+debounce", "the rest");
    run(1_000);
    run(if quick { 100_000 } else { 1_000_000 });
}
