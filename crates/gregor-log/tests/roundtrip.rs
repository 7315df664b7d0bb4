//! Model-based property test: whatever is appended reads back byte-identical
//! at the same offsets, across segment rolls, reopenings and head loss, and
//! the time index agrees with a linear scan of the model.

mod common;

use gregor_log::{Durability, Log, Record, StreamConfig};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    ts: i64,
    headers: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Rec>),
    Reopen,
    ReopenWithoutHead,
}

fn rec() -> impl Strategy<Value = Rec> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        proptest::option::weighted(0.9, proptest::collection::vec(any::<u8>(), 0..400)),
        0i64..1_000_000,
        proptest::collection::vec(("[a-z]{1,5}", proptest::collection::vec(any::<u8>(), 0..8)), 0..2),
    )
        .prop_map(|(key, value, ts, headers)| Rec { key, value, ts, headers })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => proptest::collection::vec(rec(), 1..12).prop_map(Op::Append),
        1 => Just(Op::Reopen),
        1 => Just(Op::ReopenWithoutHead),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn appended_data_reads_back_identically(ops in proptest::collection::vec(op(), 1..40), probes in proptest::collection::vec((any::<prop::sample::Index>(), 0i64..1_100_000), 5)) {
        let dir = tempfile::tempdir().unwrap();
        let config = StreamConfig { segment_bytes: 2048, index_interval_bytes: 256, durability: Durability::Os, ..StreamConfig::new(1) };
        let mut log = Log::open(dir.path()).unwrap();
        log.create_stream("s", config).unwrap();
        let mut model: Vec<Rec> = Vec::new();
        for op in &ops {
            match op {
                Op::Append(batch) => {
                    let headers: Vec<Vec<(&str, &[u8])>> = batch.iter().map(|r| r.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect()).collect();
                    let records: Vec<Record<'_>> = batch.iter().zip(&headers).map(|(r, h)| Record { key: r.key.as_deref(), value: r.value.as_deref(), timestamp: Some(r.ts), headers: h }).collect();
                    let at = log.stream("s").unwrap().append(0, &records).unwrap();
                    prop_assert_eq!(at.base_offset, model.len() as u64);
                    model.extend(batch.iter().cloned());
                }
                Op::Reopen => {
                    drop(log);
                    log = Log::open(dir.path()).unwrap();
                }
                Op::ReopenWithoutHead => {
                    drop(log);
                    let _ = std::fs::remove_file(dir.path().join("s/0/head")); // absent if never opened
                    log = Log::open(dir.path()).unwrap();
                    prop_assert_eq!(log.stream("s").unwrap().partition(0).unwrap().recovery_report().bytes_dropped, 0);
                }
            }
        }
        let partition = log.stream("s").unwrap().partition(0).unwrap();
        prop_assert_eq!(partition.next_offset().unwrap(), model.len() as u64);
        let all = common::read_all(&partition);
        prop_assert_eq!(all.len(), model.len());
        for (i, (got, want)) in all.iter().zip(&model).enumerate() {
            prop_assert_eq!(got.offset, i as u64);
            prop_assert_eq!(got.timestamp, want.ts);
            prop_assert_eq!(got.key.as_deref(), want.key.as_deref());
            prop_assert_eq!(got.value.as_deref(), want.value.as_deref());
            let headers: Vec<(String, Vec<u8>)> = got.headers.iter().map(|(n, v)| (n.clone(), v.as_ref().unwrap().to_vec())).collect();
            prop_assert_eq!(&headers, &want.headers);
        }
        for (index, ts) in &probes {
            if model.is_empty() { break; }
            let from = index.index(model.len());
            let tail = common::read_from(&partition, from as u64);
            prop_assert_eq!(tail.first().map(|m| m.offset), Some(from as u64));
            prop_assert_eq!(tail.len(), model.len() - from);
            let expected = model.iter().position(|r| r.ts >= *ts).map(|p| p as u64);
            prop_assert_eq!(partition.offset_for_timestamp(*ts).unwrap(), expected, "time lookup for {}", ts);
        }
    }
}

#[test]
fn segments_roll_at_the_configured_size() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let stream = log.create_stream("s", StreamConfig { segment_bytes: 4096, ..StreamConfig::new(1) }).unwrap();
    let value = [7u8; 100];
    for _ in 0..200 {
        stream.append(0, &[Record::value(&value)]).unwrap();
    }
    let p = stream.partition(0).unwrap();
    let segments = p.segment_count().unwrap();
    // 200 batches of ~150 bytes in 4 KiB segments.
    assert!((7..=10).contains(&segments), "{segments} segments");
    for entry in std::fs::read_dir(dir.path().join("s/0")).unwrap() {
        let entry = entry.unwrap();
        if entry.path().extension().is_some_and(|e| e == "log") {
            assert!(entry.metadata().unwrap().len() <= 4096, "{:?} exceeds the segment size", entry.path());
        }
    }
    assert_eq!(common::read_all(&p).len(), 200);
}

/// Resident kB of this process's mappings of `file` (from /proc/self/smaps).
fn mapped_rss_kb(file: &std::path::Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = file.to_str().unwrap();
    let mut rss = 0;
    let mut inside = false;
    for line in smaps.lines() {
        if line.split_whitespace().next().is_some_and(|first| first.contains('-') && !first.ends_with(':')) {
            inside = line.ends_with(name);
        } else if inside && let Some(kb) = line.strip_prefix("Rss:") {
            rss += kb.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap();
        }
    }
    rss
}

/// A reader lets go of the memory of what it read long ago (so that leaving
/// a 128 MB segment does not stall it while 32,000 page-table entries are
/// torn down), and a message it handed out before still reads its bytes.
#[test]
fn a_reader_releases_what_it_read_and_earlier_messages_still_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let p = log.create_stream("s", StreamConfig::new(1)).unwrap().partition(0).unwrap();
    let value_of = |i: u64| vec![(i % 251) as u8; 64 << 10];
    for i in 0..512 {
        p.append(&[Record::value(&value_of(i))]).unwrap();
    }
    let mut reader = gregor_log::PartitionReader::new(p.clone(), 0);
    let first: Vec<_> = reader.poll(1 << 20).unwrap().messages().map(Result::unwrap).collect();
    while !reader.poll(1 << 20).unwrap().is_empty() {}
    assert_eq!(reader.next_offset(), 512);

    let segment = dir.path().join("s/0/00000000000000000000.log");
    let rss = mapped_rss_kb(&segment);
    assert!(rss > 0, "the segment is not mapped at all: is {} its file?", segment.display());
    assert!(rss <= 12 << 10, "{rss} kB of the 32 MB read are still mapped");
    for m in &first {
        assert_eq!(m.value.as_deref(), Some(&value_of(m.offset)[..]), "message {} changed", m.offset);
    }
}
