//! Retention (by size and age) and compaction (latest value per key, offsets
//! preserved, tombstones expiring), on demand and in the background.

mod common;

use gregor_log::{Durability, Log, LogError, MaintenanceOptions, PartitionReader, Record, StreamConfig};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn retention_by_size_deletes_whole_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let config = StreamConfig {
        segment_bytes: 4096,
        retention_bytes: Some(10_000),
        durability: Durability::Os,
        ..StreamConfig::new(1)
    };
    let s = log.create_stream("s", config).unwrap();
    let value = [b'v'; 100];
    for _ in 0..300 {
        s.append(0, &[Record::value(&value)]).unwrap();
    }
    let p = s.partition(0).unwrap();
    let before = p.size_bytes().unwrap();
    let outcome = p.enforce_retention(now_ms()).unwrap();
    assert!(outcome.segments_deleted > 0);
    let after = p.size_bytes().unwrap();
    assert_eq!(before - after, outcome.bytes_deleted);
    assert!((10_000..10_000 + 4096).contains(&after), "kept {after} bytes");
    let oldest = p.oldest_offset().unwrap();
    assert!(oldest > 0);
    match PartitionReader::new(p.clone(), 0).poll(1 << 20) {
        Err(LogError::OffsetOutOfRange { requested: 0, oldest: o, next: 300, .. }) => assert_eq!(o, oldest),
        other => panic!("expected out of range, got {:?}", other.map(|f| f.size_bytes())),
    }
    let rest = common::read_all(&p);
    assert_eq!(rest.first().unwrap().offset, oldest);
    assert_eq!(rest.len() as u64, 300 - oldest);
    // The error message tells the user what to do.
    let msg = PartitionReader::new(p, 1).poll(10).err().unwrap().to_string();
    assert!(msg.contains(&format!("oldest retained offset is {oldest}")), "{msg}");
}

#[test]
fn retention_by_age_keeps_recent_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let hour = 3_600_000;
    let config = StreamConfig {
        segment_bytes: 2048,
        retention_ms: Some(hour as u64),
        durability: Durability::Os,
        ..StreamConfig::new(1)
    };
    let s = log.create_stream("s", config).unwrap();
    let value = [b'v'; 100];
    let now = now_ms();
    for i in 0..100 {
        let ts = if i < 50 { now - 2 * hour } else { now };
        s.append(0, &[Record { timestamp: Some(ts), ..Record::value(&value) }]).unwrap();
    }
    let p = s.partition(0).unwrap();
    p.enforce_retention(now).unwrap();
    let oldest = p.oldest_offset().unwrap();
    assert!(oldest > 30 && oldest <= 50, "oldest {oldest}");
    assert!(common::read_all(&p).iter().skip_while(|m| m.offset < 50).all(|m| m.timestamp == now));
    assert_eq!(p.offset_for_timestamp(now - hour).unwrap(), Some(50));
}

/// Writes `rounds` updates of 20 keys, and tombstones for k3 (old) and k4 (new).
fn changelog(dir: &std::path::Path, rounds: usize) -> (Log, BTreeMap<String, (u64, Option<String>)>) {
    let log = Log::open(dir).unwrap();
    let config = StreamConfig {
        segment_bytes: 2048,
        delete_retention_ms: 60_000,
        durability: Durability::Os,
        ..StreamConfig::compacted(1)
    };
    let s = log.create_stream("c", config).unwrap();
    let mut model = BTreeMap::new();
    for r in 0..rounds {
        for k in 0..20 {
            let key = format!("k{k}");
            let value = format!("v{r}-{k}");
            let at = s.append(0, &[Record::keyed(key.as_bytes(), value.as_bytes())]).unwrap();
            model.insert(key, (at.base_offset, Some(value)));
        }
    }
    for (key, ts) in [("k3", now_ms() - 120_000), ("k4", now_ms())] {
        let at = s
            .append(0, &[Record { key: Some(key.as_bytes()), value: None, timestamp: Some(ts), headers: &[] }])
            .unwrap();
        model.insert(key.to_owned(), (at.base_offset, None));
    }
    (log, model)
}

#[test]
fn compaction_keeps_the_latest_value_per_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (log, model) = changelog(dir.path(), 30);
    let p = log.stream("c").unwrap().partition(0).unwrap();
    let segments_before = p.segment_count().unwrap();
    let outcome = p.compact(now_ms(), true).unwrap();
    assert_eq!(outcome.records_before, 30 * 20 + 2);
    assert_eq!(outcome.records_after, 20 - 1, "19 live keys; k3's old tombstone dropped, k4's kept");
    assert!(outcome.bytes_after < outcome.bytes_before / 10);
    assert!(p.segment_count().unwrap() < segments_before, "small cleaned segments were merged");

    let read = common::read_all(&p);
    let mut got = BTreeMap::new();
    for m in &read {
        let key = String::from_utf8(m.key.as_ref().unwrap().to_vec()).unwrap();
        let value = m.value.as_ref().map(|v| String::from_utf8(v.to_vec()).unwrap());
        assert!(got.insert(key, (m.offset, value)).is_none(), "a key appears twice after compaction");
    }
    let mut expected = model.clone();
    expected.remove("k3");
    assert_eq!(got, expected);
    // Offsets only grow, and appends continue after the old end.
    let next = p.next_offset().unwrap();
    assert_eq!(next, 30 * 20 + 2);
    assert_eq!(p.append(&[Record::keyed(b"k1", b"later")]).unwrap().base_offset, next);
    // Compaction survives a reopen.
    drop((log, p));
    let log = Log::open(dir.path()).unwrap();
    let reread = common::read_all(&log.stream("c").unwrap().partition(0).unwrap());
    assert_eq!(reread.len(), read.len() + 1);
}

#[test]
fn reading_and_appending_during_compaction_stay_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let (log, model) = changelog(dir.path(), 60);
    let stream = log.stream("c").unwrap();
    let p = stream.partition(0).unwrap();
    // A reader half way through the old segments when compaction runs.
    let mut reader = PartitionReader::new(p.clone(), 0);
    let mut seen = Vec::new();
    while seen.len() < 300 {
        seen.extend(reader.poll(512).unwrap().messages().map(|m| m.unwrap()));
    }
    let appender = {
        let stream = stream.clone();
        std::thread::spawn(move || {
            for i in 0..500 {
                stream.append(0, &[Record::keyed(b"live", format!("{i}").as_bytes())]).unwrap();
            }
        })
    };
    p.compact(now_ms(), true).unwrap();
    appender.join().unwrap();
    let end = p.next_offset().unwrap();
    while reader.next_offset() < end {
        seen.extend(reader.poll(512).unwrap().messages().map(|m| m.unwrap()));
    }
    assert!(seen.windows(2).all(|w| w[0].offset < w[1].offset), "offsets strictly increase");
    let last_live = seen.iter().rev().find(|m| m.key.as_deref() == Some(&b"live"[..])).unwrap();
    assert_eq!(last_live.value.as_deref(), Some(&b"499"[..]));
    for (key, (offset, _)) in model.iter().filter(|(k, _)| *k != "k3") {
        // (k3's tombstone is past its delete retention: compaction drops it.)
        assert!(seen.iter().any(|m| m.offset == *offset), "latest record of {key} at {offset} missed");
    }
}

#[test]
fn compaction_and_keys_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let c = log.create_stream("c", StreamConfig::compacted(1)).unwrap();
    let err = c.append(0, &[Record::value(b"no key")]).unwrap_err().to_string();
    assert!(err.contains("every message needs a key"), "{err}");
    let d = log.create_stream("d", StreamConfig::new(1)).unwrap();
    let err = d.partition(0).unwrap().compact(now_ms(), true).unwrap_err().to_string();
    assert!(err.contains("not compacted"), "{err}");
}

#[test]
fn background_maintenance_applies_retention_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path()).unwrap());
    let config = StreamConfig {
        segment_bytes: 2048,
        retention_bytes: Some(4096),
        durability: Durability::IntervalMs(20),
        ..StreamConfig::new(1)
    };
    let s = log.create_stream("s", config).unwrap();
    let (_, _model) = {
        drop(changelog(dir.path(), 20).0);
        ((), ())
    };
    let c = log.stream("c").unwrap();
    let options = MaintenanceOptions {
        tick: Duration::from_millis(10),
        retention_interval: Duration::from_millis(10),
        compaction_interval: Duration::from_millis(10),
    };
    let _maintenance = log.start_maintenance(options);
    for _ in 0..200 {
        s.append(0, &[Record::value(&[1u8; 100])]).unwrap();
    }
    // Seal the changelog's active segment so the background pass can clean it.
    c.append(0, &[Record::keyed(&[b'x'; 100], &[0u8; 1900])]).unwrap();
    let (p, cp) = (s.partition(0).unwrap(), c.partition(0).unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    // Retention may first run while appends are still going on: wait for a
    // pass after the last one.
    while p.oldest_offset().unwrap() == 0 || p.size_bytes().unwrap() >= 4096 + 2048 || common::read_all(&cp).len() > 40
    {
        assert!(Instant::now() < deadline, "background maintenance did not run");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(p.size_bytes().unwrap() < 4096 + 2048);
}

#[test]
fn compaction_and_appends_from_threads_of_one_process_never_lose_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let config = StreamConfig { segment_bytes: 4096, durability: Durability::Os, ..StreamConfig::compacted(1) };
    let stream = log.create_stream("c", config).unwrap();
    let (writers, per_writer) = (3, 400);
    std::thread::scope(|s| {
        for w in 0..writers {
            let stream = &stream;
            s.spawn(move || {
                for i in 0..per_writer {
                    let key = format!("w{w}-{i}");
                    stream.append(0, &[Record::keyed(key.as_bytes(), b"v")]).unwrap();
                }
            });
        }
        let p = stream.partition(0).unwrap();
        s.spawn(move || {
            for _ in 0..40 {
                p.compact(now_ms(), true).unwrap();
                p.enforce_retention(now_ms()).unwrap();
            }
        });
    });
    let p = stream.partition(0).unwrap();
    p.compact(now_ms(), true).unwrap();
    let all = common::read_all(&p);
    let keys: std::collections::BTreeSet<Vec<u8>> = all.iter().map(|m| m.key.as_ref().unwrap().to_vec()).collect();
    assert_eq!(all.len(), writers * per_writer, "every key written once survives compaction");
    assert_eq!(keys.len(), writers * per_writer);
    assert!(all.windows(2).all(|w| w[0].offset < w[1].offset));
}

#[test]
fn a_merge_interrupted_before_deleting_its_inputs_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let (log, model) = changelog(dir.path(), 40);
    let p = log.stream("c").unwrap().partition(0).unwrap();
    let pdir = dir.path().join("c/0");
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|e| e == "log" || e == "index"))
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();
    p.compact(now_ms(), false).unwrap();
    drop((p, log));
    // Put back the inputs the merge deleted, as if it crashed right after
    // installing the merged file.
    let mut restored = 0;
    for (path, bytes) in &before {
        if !path.exists() {
            std::fs::write(path, bytes).unwrap();
            restored += 1;
        }
    }
    assert!(restored > 0, "the merge removed inputs");
    let log = Log::open(dir.path()).unwrap();
    let p = log.stream("c").unwrap().partition(0).unwrap();
    p.compact(now_ms(), true).unwrap();
    let read = common::read_all(&p);
    assert!(read.windows(2).all(|w| w[0].offset < w[1].offset), "no record is served twice");
    let mut latest = BTreeMap::new();
    for m in &read {
        latest.insert(String::from_utf8(m.key.as_ref().unwrap().to_vec()).unwrap(), m.offset);
    }
    for (key, (offset, _)) in model.iter().filter(|(k, _)| *k != "k3") {
        assert_eq!(latest.get(key), Some(offset), "{key}");
    }
}

#[test]
fn bounded_compaction_leaves_records_at_and_after_the_limit_alone() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let config = StreamConfig {
        segment_bytes: 1024,
        compaction_bounded: true,
        durability: Durability::Os,
        ..StreamConfig::compacted(1)
    };
    let s = log.create_stream("c", config).unwrap();
    for i in 0..200 {
        s.append(0, &[Record::keyed(format!("k{}", i % 5).as_bytes(), format!("{i}").as_bytes())]).unwrap();
    }
    let p = s.partition(0).unwrap();
    // No limit yet: nothing may be compacted.
    assert_eq!(p.compact(now_ms(), true).unwrap().records_after, 200);
    p.set_compaction_limit(100).unwrap();
    p.compact(now_ms(), true).unwrap();
    let offsets: Vec<u64> = common::read_all(&p).iter().map(|m| m.offset).collect();
    // Below 100 only each key's newest record below 100 survives (95..99);
    // from 100 on everything is kept.
    let expected: Vec<u64> = (95..200).collect();
    assert_eq!(offsets, expected);
    // Replaying up to the limit gives the same latest values as before.
    let values: BTreeMap<Vec<u8>, Vec<u8>> = common::read_all(&p)
        .into_iter()
        .filter(|m| m.offset < 100)
        .map(|m| (m.key.unwrap().to_vec(), m.value.unwrap().to_vec()))
        .collect();
    for k in 0..5 {
        assert_eq!(values[format!("k{k}").as_bytes()], format!("{}", 95 + k).into_bytes());
    }
    assert!(p.set_compaction_limit(50).is_ok(), "a lower limit is ignored, not an error");
}
