//! The coordinator on a real log: commits become visible together in every
//! partition, aborts never, a successor fences its predecessor and ends its
//! open transaction, a decided commit survives a crash before its markers,
//! and the state format reads back from a checked-in fixture.

use super::*;
use crate::batch::BatchEncoder;
use crate::txn::CommittedFilter;
use crate::{Entry, PartitionReader, Record, StreamConfig};
use std::sync::Arc;

fn log() -> (tempfile::TempDir, Arc<Log>) {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path()).unwrap());
    log.create_stream("out", StreamConfig::new(2)).unwrap();
    (dir, log)
}

/// Appends `values` to out[p] in the coordinator's open transaction.
fn write(log: &Log, c: &mut Coordinator, p: u32, values: &[&str]) {
    c.add_partitions([("out", p)]).unwrap();
    let mut e = BatchEncoder::new();
    e.begin_transaction(c.stamp());
    for (i, v) in values.iter().enumerate() {
        e.push(i as u32, 0, &Record { key: None, value: Some(v.as_bytes()), timestamp: Some(0), headers: &[] });
    }
    log.stream("out").unwrap().partition(p).unwrap().append_encoded(&mut e).unwrap();
}

/// (read-committed, read-uncommitted) values of out[p].
fn read(log: &Log, p: u32) -> (Vec<String>, Vec<String>) {
    let partition = log.stream("out").unwrap().partition(p).unwrap();
    let fetch = PartitionReader::new(partition, 0).poll(1 << 20).unwrap();
    let mut filter = CommittedFilter::new();
    let mut uncommitted = Vec::new();
    for e in fetch.entries() {
        match e.unwrap() {
            Entry::Record(txn, r) => {
                let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                uncommitted.push(v.clone());
                filter.push_record(txn, v);
            }
            Entry::Marker(stamp, m) => filter.push_marker(stamp, m),
        }
    }
    let mut committed = Vec::new();
    while let Some(v) = filter.pop() {
        committed.push(v);
    }
    (committed, uncommitted)
}

#[test]
fn commits_show_in_every_partition_and_aborts_in_none() {
    let (_dir, log) = log();
    let mut c = Coordinator::init(log.clone(), "job-0").unwrap();
    assert_eq!(c.stamp().epoch, 1);
    write(&log, &mut c, 0, &["a", "b"]);
    write(&log, &mut c, 1, &["c"]);
    assert_eq!(read(&log, 0).0, Vec::<String>::new(), "nothing visible before the commit");
    c.commit().unwrap();
    assert_eq!(read(&log, 0).0, ["a", "b"]);
    assert_eq!(read(&log, 1).0, ["c"]);
    write(&log, &mut c, 0, &["x"]);
    c.abort().unwrap();
    write(&log, &mut c, 1, &["d"]);
    c.commit().unwrap();
    let (committed, uncommitted) = read(&log, 0);
    assert_eq!(committed, ["a", "b"], "the aborted record stays invisible");
    assert_eq!(uncommitted, ["a", "b", "x"], "a read-uncommitted reader sees it");
    assert_eq!(read(&log, 1).0, ["c", "d"]);
}

#[test]
fn a_successor_fences_its_predecessor_and_aborts_its_open_transaction() {
    let (_dir, log) = log();
    let mut old = Coordinator::init(log.clone(), "job-0").unwrap();
    write(&log, &mut old, 0, &["committed"]);
    old.commit().unwrap();
    write(&log, &mut old, 0, &["open"]);
    let mut new = Coordinator::init(log.clone(), "job-0").unwrap();
    assert_eq!(new.stamp().epoch, 2);
    // The zombie writes more and tries to commit: nothing of it shows.
    write_unregistered(&log, &old, 0, "zombie");
    assert!(matches!(old.commit(), Err(TxnError::Fenced { mine: 1, current: 2, .. })));
    assert!(matches!(old.add_partitions([("out", 1)]), Err(TxnError::Fenced { .. })));
    write(&log, &mut new, 0, &["new"]);
    new.commit().unwrap();
    let (committed, uncommitted) = read(&log, 0);
    assert_eq!(committed, ["committed", "new"]);
    assert_eq!(uncommitted, ["committed", "open", "zombie", "new"]);
}

#[test]
fn taking_an_idle_producer_over_again_writes_no_marker() {
    let (_dir, log) = log();
    let mut c = Coordinator::init(log.clone(), "job-0").unwrap();
    write(&log, &mut c, 0, &["a"]);
    write(&log, &mut c, 1, &["b"]);
    drop(c);
    let next = |p| log.stream("out").unwrap().partition(p).unwrap().next_offset().unwrap();
    let _first = Coordinator::init(log.clone(), "job-0").unwrap();
    let after_first = (next(0), next(1));
    assert_eq!(after_first, (2, 2), "the open transaction is aborted in both partitions");
    // Its departed processor is taken over at every rebalance: the second
    // time there is nothing left to end.
    let again = Coordinator::init(log.clone(), "job-0").unwrap();
    assert_eq!((next(0), next(1)), after_first);
    assert_eq!(again.stamp().epoch, 3, "still fenced anew");
    assert!(again.partitions().is_empty());
}

#[test]
fn a_producer_closed_idle_leaves_nothing_to_end() {
    let (_dir, log) = log();
    let mut c = Coordinator::init(log.clone(), "job-0").unwrap();
    write(&log, &mut c, 0, &["a"]);
    c.commit().unwrap();
    let next = || log.stream("out").unwrap().partition(0).unwrap().next_offset().unwrap();
    let after_commit = next();
    c.close_idle().unwrap();
    let _successor = Coordinator::init(log.clone(), "job-0").unwrap();
    assert_eq!(next(), after_commit, "no abort marker for a transaction that wrote nothing");
    assert_eq!(read(&log, 0).0, ["a"]);
    // A fenced instance's close changes nothing.
    c.close_idle().unwrap();
}

fn write_unregistered(log: &Log, c: &Coordinator, p: u32, value: &str) {
    let mut e = BatchEncoder::new();
    e.begin_transaction(c.stamp());
    e.push(0, 0, &Record { key: None, value: Some(value.as_bytes()), timestamp: Some(0), headers: &[] });
    log.stream("out").unwrap().partition(p).unwrap().append_encoded(&mut e).unwrap();
}

#[test]
fn a_commit_decided_before_a_crash_is_completed_by_the_successor() {
    let (dir, log) = log();
    let mut c = Coordinator::init(log.clone(), "job-0").unwrap();
    write(&log, &mut c, 0, &["a"]);
    write(&log, &mut c, 1, &["b"]);
    // The process dies right after recording the decision: no marker yet.
    let path = dir.path().join(".transactions/job-0.json");
    let mut state: State = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    state.state = Phase::Ending(Marker::Commit);
    state.ending_epoch = state.epoch;
    state.ending_transaction = state.transaction;
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    drop(c);
    assert_eq!(read(&log, 0).0, Vec::<String>::new());
    let _successor = Coordinator::init(log.clone(), "job-0").unwrap();
    assert_eq!(read(&log, 0).0, ["a"]);
    assert_eq!(read(&log, 1).0, ["b"]);
}

#[test]
fn taking_over_ends_what_the_state_says() {
    let mut s = State::new("t");
    let (_, ending, opened) = s.take_over();
    assert_eq!(ending, None, "a new producer ends nothing");
    assert_eq!((opened.epoch, opened.transaction, opened.state), (1, 0, Phase::Ongoing));
    s = opened;
    s.transaction = 7;
    let (fenced, ending, _) = s.take_over();
    assert_eq!(ending, Some((TxnStamp { producer_id: s.producer_id, epoch: 1, transaction: 7 }, Marker::Abort)));
    assert_eq!(fenced.epoch, 2);
    assert_eq!(fenced.state, Phase::Ending(Marker::Abort), "the abort is recorded before its markers");
    s.state = Phase::Ending(Marker::Commit);
    s.ending_epoch = 1;
    s.ending_transaction = 6;
    let (_, ending, _) = s.take_over();
    assert_eq!(ending.map(|e| (e.0.transaction, e.1)), Some((6, Marker::Commit)));
}

#[test]
fn the_state_format_reads_back_from_its_fixture() {
    let fixture = include_str!("state-v1.json");
    let state: State = serde_json::from_str(fixture).unwrap();
    assert_eq!(state.format_version, 1);
    assert_eq!(state.transactional_id, "wordcount-1-0");
    assert_eq!((state.epoch, state.transaction), (3, 12));
    assert_eq!(state.state, Phase::Ending(Marker::Commit));
    assert_eq!((state.ending_epoch, state.ending_transaction), (3, 11));
    assert!(state.partitions.contains(&("word-counts".to_owned(), 2)));
    // A newer version is refused with a clear error.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wordcount-1-0.json");
    std::fs::write(&path, fixture.replace("\"format_version\": 1", "\"format_version\": 2")).unwrap();
    let err = Coordinator::read(&path, "wordcount-1-0").unwrap_err().to_string();
    assert!(err.contains("format version 2"), "{err}");
}
