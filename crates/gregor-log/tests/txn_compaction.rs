//! Compaction of a stream with transactions, against what a read-committed
//! reader replaying it ends with: whatever producers wrote, committed,
//! aborted, left open, or wrote as fenced zombies, compacting never changes
//! the latest committed value of any key once every transaction has ended
//! (what a restore reads), drops aborted records for good, and keeps open
//! transactions' records until their marker.

use gregor_log::batch::BatchEncoder;
use gregor_log::txn::{CommittedFilter, Coordinator, TxnStamp};
use gregor_log::{Entry, Log, PartitionReader, Record, StreamConfig};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone)]
enum Op {
    Plain(u8, Option<u8>),
    Txn(usize, u8, Option<u8>),
    Commit(usize),
    Abort(usize),
    Crash(usize),
    Zombie(usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..6u8, proptest::option::weighted(0.8, any::<u8>())).prop_map(|(k, v)| Op::Plain(k, v)),
        5 => (0..2usize, 0..6u8, proptest::option::weighted(0.8, any::<u8>())).prop_map(|(p, k, v)| Op::Txn(p, k, v)),
        2 => (0..2usize).prop_map(Op::Commit),
        1 => (0..2usize).prop_map(Op::Abort),
        1 => (0..2usize).prop_map(Op::Crash),
        1 => (0..2usize, 0..6u8).prop_map(|(p, k)| Op::Zombie(p, k)),
    ]
}

fn append(log: &Log, stamp: Option<TxnStamp>, key: u8, value: Option<u8>) {
    let mut e = BatchEncoder::new();
    if let Some(s) = stamp {
        e.begin_transaction(s);
    }
    let (k, v) = ([key], value.map(|v| [v]));
    e.push(0, 0, &Record { key: Some(&k), value: v.as_ref().map(|v| &v[..]), timestamp: Some(0), headers: &[] });
    log.stream("state").unwrap().partition(0).unwrap().append_encoded(&mut e).unwrap();
}

/// (latest committed value per key, records a read-committed reader sees,
/// records a read-uncommitted reader sees, records still held).
fn replay(log: &Log) -> (BTreeMap<u8, u8>, usize, usize, usize) {
    let p = log.stream("state").unwrap().partition(0).unwrap();
    let mut reader = PartitionReader::new(p.clone(), p.oldest_offset().unwrap());
    let end = p.next_offset().unwrap();
    let mut filter = CommittedFilter::new();
    let (mut latest, mut committed, mut all) = (BTreeMap::new(), 0, 0);
    while reader.next_offset() < end {
        let fetch = reader.poll(1 << 20).unwrap();
        if fetch.is_empty() {
            break; // compaction removed the tail below the end
        }
        for e in fetch.entries() {
            match e.unwrap() {
                Entry::Record(txn, r) => {
                    all += 1;
                    filter.push_record(txn, (r.key.unwrap()[0], r.value.map(|v| v[0])));
                }
                Entry::Marker(s, m) => filter.push_marker(s, m),
            }
            while let Some((k, v)) = filter.pop() {
                committed += 1;
                match v {
                    Some(v) => latest.insert(k, v),
                    None => latest.remove(&k),
                };
            }
        }
    }
    (latest, committed, all, filter.held())
}

/// Applies `ops` to a fresh log in `dir`; returns it with its producers.
fn build(dir: &std::path::Path, ops: &[Op]) -> (Arc<Log>, Vec<Coordinator>) {
    let log = Arc::new(Log::open(dir).unwrap());
    let mut config = StreamConfig::compacted(1);
    config.segment_bytes = 1024;
    config.delete_retention_ms = 1_000;
    log.create_stream("state", config).unwrap();
    let init = |p: usize| {
        let mut c = Coordinator::init(log.clone(), &format!("p{p}")).unwrap();
        c.add_partitions([("state", 0)]).unwrap();
        c
    };
    let mut producers = vec![init(0), init(1)];
    let mut zombies: [Option<TxnStamp>; 2] = [None, None];
    for op in ops {
        match *op {
            Op::Plain(k, v) => append(&log, None, k, v),
            Op::Txn(p, k, v) => append(&log, Some(producers[p].stamp()), k, v),
            Op::Commit(p) => producers[p].commit().unwrap(),
            Op::Abort(p) => producers[p].abort().unwrap(),
            Op::Crash(p) => {
                zombies[p] = Some(producers[p].stamp());
                producers[p] = init(p);
            }
            Op::Zombie(p, k) => {
                if let Some(z) = zombies[p] {
                    append(&log, Some(z), k, Some(99));
                }
            }
        }
    }
    (log, producers)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn compaction_keeps_what_read_committed_readers_end_with(ops in proptest::collection::vec(op(), 1..80), retention_old in any::<bool>(), commit_open in any::<bool>()) {
        // The same history twice; only one is compacted.
        let (plain_dir, compacted_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (plain, mut plain_producers) = build(plain_dir.path(), &ops);
        let (compacted, mut compacted_producers) = build(compacted_dir.path(), &ops);
        // Markers and tombstones expire too when `retention_old`.
        let now = if retention_old { i64::MAX / 2 } else { 0 };
        compacted.stream("state").unwrap().partition(0).unwrap().compact(now, true).unwrap();
        // (While a transaction is open, a reader of the compacted log may
        // lack a value a later, held-back tombstone deletes: compaction
        // drops superseded records, as for any reader starting at the
        // beginning. What must agree is the state once every transaction ended.)
        let (_, _, all_after, _) = replay(&compacted);
        let (_, _, all_before, _) = replay(&plain);
        prop_assert!(all_after <= all_before);
        // The transactions still open end, the same way on both.
        for (a, b) in plain_producers.iter_mut().zip(&mut compacted_producers) {
            if commit_open {
                a.commit().unwrap();
                b.commit().unwrap();
            } else {
                a.abort().unwrap();
                b.abort().unwrap();
            }
        }
        let (before, _, _, held_before) = replay(&plain);
        let (after, _, _, held_after) = replay(&compacted);
        prop_assert_eq!(&after, &before, "after the open transactions ended");
        prop_assert_eq!((held_before, held_after), (0, 0));
    }
}

#[test]
fn aborted_records_are_gone_and_committed_ones_become_plain() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path()).unwrap());
    log.create_stream("state", StreamConfig::compacted(1)).unwrap();
    let mut c = Coordinator::init(log.clone(), "p").unwrap();
    c.add_partitions([("state", 0)]).unwrap();
    append(&log, Some(c.stamp()), 1, Some(10));
    c.commit().unwrap();
    append(&log, Some(c.stamp()), 1, Some(20));
    c.abort().unwrap();
    append(&log, Some(c.stamp()), 2, Some(30)); // open
    let (latest, _, all, held) = replay(&log);
    assert_eq!((latest.get(&1), all, held), (Some(&10), 3, 1));
    let p = log.stream("state").unwrap().partition(0).unwrap();
    p.compact(0, true).unwrap();
    let (latest, _, all, held) = replay(&log);
    assert_eq!(latest.get(&1), Some(&10), "the committed value");
    assert_eq!(all, 2, "the aborted record is gone; the open one stays");
    assert_eq!(held, 1, "the open one still waits for its marker");
    c.commit().unwrap();
    let (latest, ..) = replay(&log);
    assert_eq!(latest.get(&2), Some(&30));
}
