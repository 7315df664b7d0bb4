//! Compatibility fixture of batch format version 2 (transactional batches
//! and markers): `tests/fixtures/v2/transactions/`, written by
//! `write_fixture_v2` (ignored) with the public API, must read back the
//! same forever, read-committed and read-uncommitted. v1 fixtures are
//! tested, unchanged, by `tests/fixtures.rs`.

use gregor_log::batch::{BatchEncoder, BatchHeader, MAGIC, MAGIC_TXN};
use gregor_log::txn::{CommittedFilter, Coordinator};
use gregor_log::{Entry, Log, PartitionReader, Record, StreamConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const T0: i64 = 1_700_000_000_000;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2/transactions")
}

/// (read-committed, read-uncommitted) values of out[0].
fn read(log: &Log) -> (Vec<String>, Vec<String>) {
    let partition = log.stream("out").unwrap().partition(0).unwrap();
    let fetch = PartitionReader::new(partition, 0).poll(1 << 20).unwrap();
    let mut filter = CommittedFilter::new();
    let mut all = Vec::new();
    for e in fetch.entries() {
        match e.unwrap() {
            Entry::Record(txn, r) => {
                let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                all.push(v.clone());
                filter.push_record(txn, v);
            }
            Entry::Marker(stamp, m) => filter.push_marker(stamp, m),
        }
    }
    let committed = std::iter::from_fn(|| filter.pop()).collect();
    (committed, all)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn transactional_batches_and_markers_read_back() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), dir.path());
    let log = Log::open(dir.path()).unwrap();
    let (committed, all) = read(&log);
    assert_eq!(committed, ["p0", "a", "b", "p1", "d"]);
    assert_eq!(all, ["p0", "a", "b", "x", "p1", "c", "d"]);
    // The framing as docs/log.md documents it: version 1 for plain
    // batches, 2 (a 60-byte header) for transactional ones, attribute 0x20
    // on markers.
    let segment = std::fs::read(dir.path().join("out/0/00000000000000000000.log")).unwrap();
    let mut at = 0;
    let mut kinds = Vec::new();
    while at < segment.len() {
        let h = BatchHeader::parse_verified(&segment[at..]).unwrap();
        kinds.push(match (segment[at + 12], segment[at + 13]) {
            (MAGIC, 0) => "plain",
            (MAGIC_TXN, 0) => "txn",
            (MAGIC_TXN, 0x20) => "marker",
            other => panic!("unexpected magic/attributes {other:?}"),
        });
        at += h.total_len;
    }
    assert_eq!(kinds, ["plain", "txn", "txn", "marker", "txn", "marker", "plain", "txn", "marker", "txn", "marker"]);
    // The producer's state: epoch 2, its transaction 1 open.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(".transactions/job-0.json")).unwrap()).unwrap();
    assert_eq!((state["epoch"].as_u64(), state["transaction"].as_u64()), (Some(2), Some(1)));
    assert_eq!(state["state"], "ongoing");
    // Appends and transactions go on from there.
    let log = Arc::new(log);
    let mut c = Coordinator::init(log.clone(), "job-0").unwrap();
    assert_eq!(c.stamp().epoch, 3);
    c.add_partitions([("out", 0)]).unwrap();
    append(&log, Some(&c), "e");
    c.commit().unwrap();
    assert_eq!(read(&log).0, ["p0", "a", "b", "p1", "d", "e"]);
}

fn append(log: &Log, c: Option<&Coordinator>, value: &str) {
    let mut e = BatchEncoder::new();
    if let Some(c) = c {
        e.begin_transaction(c.stamp());
    }
    e.push(0, T0, &Record { key: None, value: Some(value.as_bytes()), timestamp: Some(T0), headers: &[] });
    log.stream("out").unwrap().partition(0).unwrap().append_encoded(&mut e).unwrap();
}

/// Writes the fixture (`GREGOR_LOG_WRITE_FIXTURES=1 cargo test -p gregor-log
/// --test fixtures_v2 -- --ignored`); refuses to overwrite it.
#[test]
#[ignore]
fn write_fixture_v2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = if std::env::var_os("GREGOR_LOG_WRITE_FIXTURES").is_some() {
        assert!(!fixture().exists(), "never regenerate a released format version (tests/fixtures/README.md)");
        fixture()
    } else {
        tmp.path().join("transactions")
    };
    let log = Arc::new(Log::open(&out).unwrap());
    log.create_stream("out", StreamConfig::new(1)).unwrap();
    append(&log, None, "p0");
    let mut c = Coordinator::init(log.clone(), "job-0").unwrap();
    c.add_partitions([("out", 0)]).unwrap();
    append(&log, Some(&c), "a");
    // Two records in one batch of the first transaction.
    let mut e = BatchEncoder::new();
    e.begin_transaction(c.stamp());
    e.push(0, T0, &Record { key: None, value: Some(b"b"), timestamp: Some(T0), headers: &[] });
    log.stream("out").unwrap().partition(0).unwrap().append_encoded(&mut e).unwrap();
    c.commit().unwrap();
    append(&log, Some(&c), "x");
    c.abort().unwrap();
    append(&log, None, "p1");
    append(&log, Some(&c), "c");
    // A successor takes over: "c" is aborted.
    let mut successor = Coordinator::init(log.clone(), "job-0").unwrap();
    append(&log, Some(&successor), "d");
    successor.commit().unwrap();
    drop((c, successor, log));
    println!("wrote {}", out.display());
}
