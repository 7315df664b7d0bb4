//! Recovery on open: torn tails are truncated and reported; damage inside the
//! log is an error naming file and position; random damage never panics and
//! never makes the log serve a record that differs from what was written.

mod common;

use common::{reopen_partition, segment_files};

use gregor_log::{Durability, Log, LogError, Record, StreamConfig};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

/// Writes `batches` batches of 3 messages `b<i>-<j>`.
fn fill(dir: &Path, config: StreamConfig, batches: usize) -> Vec<String> {
    let log = Log::open(dir).unwrap();
    let s = log.create_stream("s", config).unwrap();
    let mut all = Vec::new();
    for i in 0..batches {
        let values: Vec<String> = (0..3).map(|j| format!("b{i:03}-{j}")).collect(); // fixed width: equal batch sizes
        let records: Vec<Record<'_>> = values.iter().map(|v| Record::value(v.as_bytes())).collect();
        s.append(0, &records).unwrap();
        all.extend(values);
    }
    all
}

#[test]
fn torn_tail_after_the_last_sync_is_truncated_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill(dir.path(), StreamConfig { durability: Durability::Os, ..StreamConfig::new(1) }, 20);
    let seg = segment_files(&dir.path().join("s/0")).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    // A crash mid-write: the last batch lost its last 10 bytes.
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 10).unwrap();

    let (log, p) = reopen_partition(dir.path()).unwrap();
    let report = p.recovery_report();
    let last_batch_len = len / 20; // all batches have the same size here
    assert_eq!(report.bytes_dropped, last_batch_len - 10);
    assert_eq!(report.truncated_file.as_deref(), Some(seg.as_path()));
    let read: Vec<String> = common::read_all(&p).iter().map(common::text).collect();
    assert_eq!(read, written[..57]);
    // Appends continue at the next offset.
    let at = log.stream("s").unwrap().append(0, &[Record::value(b"after")]).unwrap();
    assert_eq!(at.base_offset, 57);
}

#[test]
fn partial_write_past_the_synced_end_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill(dir.path(), StreamConfig { durability: Durability::Always, ..StreamConfig::new(1) }, 5);
    let seg = segment_files(&dir.path().join("s/0")).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let batch_len = bytes.len() / 5;
    // Half of another copy of the first batch, as if a write was cut short.
    let mut torn = bytes.clone();
    torn.extend_from_slice(&bytes[..batch_len / 2]);
    std::fs::write(&seg, &torn).unwrap();

    let (_log, p) = reopen_partition(dir.path()).unwrap();
    assert_eq!(p.recovery_report().bytes_dropped, (batch_len / 2) as u64);
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);
    let read: Vec<String> = common::read_all(&p).iter().map(common::text).collect();
    assert_eq!(read, written);
}

#[test]
fn synced_data_that_vanished_is_an_error_not_a_truncation() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), StreamConfig { durability: Durability::Always, ..StreamConfig::new(1) }, 5);
    let seg = segment_files(&dir.path().join("s/0")).pop().unwrap();
    common::assert_lost_synced_data_is_refused(dir.path(), &seg);
}

#[test]
fn damage_in_the_middle_of_a_segment_is_reported_with_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), StreamConfig { durability: Durability::Os, ..StreamConfig::new(1) }, 20);
    let seg = segment_files(&dir.path().join("s/0")).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let batch_len = bytes.len() / 20;
    let damaged_batch = 7;
    bytes[damaged_batch * batch_len + 30] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();

    // The head still matches the file, so the damage is found on read.
    let (_log, p) = reopen_partition(dir.path()).unwrap();
    let mut reader = gregor_log::PartitionReader::new(p.clone(), 0);
    let mut result = Ok(());
    while reader.next_offset() < 60 {
        match reader.poll(batch_len * 3) {
            Ok(f) => assert!(f.messages().all(|m| m.is_ok())),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    match result {
        Err(LogError::Corrupt { file, position, reason }) => {
            assert_eq!(file, seg);
            assert_eq!(position, (damaged_batch * batch_len) as u64);
            assert!(reason.contains("CRC"), "{reason}");
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
    drop((_log, p));

    // Without a head, recovery scans the segment and refuses to truncate
    // intact data that follows the damage.
    std::fs::remove_file(dir.path().join("s/0/head")).unwrap();
    match reopen_partition(dir.path()) {
        Err(LogError::Corrupt { file, position, reason }) => {
            assert_eq!(file, seg);
            assert_eq!(position, (damaged_batch * batch_len) as u64);
            assert!(reason.contains("not a torn tail"), "{reason}");
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("damage inside the log was not reported"),
    }
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing may be truncated");
}

#[test]
fn a_missing_or_damaged_index_is_rebuilt_or_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let config = StreamConfig {
        durability: Durability::Os,
        segment_bytes: 2048,
        index_interval_bytes: 100,
        ..StreamConfig::new(1)
    };
    let written = fill(dir.path(), config, 60);
    let pdir = dir.path().join("s/0");
    let indexes: Vec<PathBuf> = std::fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .collect();
    assert!(indexes.len() > 2);
    std::fs::remove_file(&indexes[0]).unwrap();
    std::fs::write(&indexes[1], vec![0xAB; 48]).unwrap();
    let (_log, p) = reopen_partition(dir.path()).unwrap();
    for start in [0u64, 5, 31, 77, 150, 179] {
        let got: Vec<String> = common::read_from(&p, start).iter().map(common::text).collect();
        assert_eq!(got, written[start as usize..], "reading from {start}");
    }
}

#[derive(Debug, Clone)]
enum Damage {
    Flip { at: prop::sample::Index, xor: u8 },
    Truncate { at: prop::sample::Index },
    AppendGarbage(Vec<u8>),
    Zero { at: prop::sample::Index, len: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<prop::sample::Index>(), 1u8..).prop_map(|(at, xor)| Damage::Flip { at, xor }),
        any::<prop::sample::Index>().prop_map(|at| Damage::Truncate { at }),
        proptest::collection::vec(any::<u8>(), 1..200).prop_map(Damage::AppendGarbage),
        (any::<prop::sample::Index>(), 1usize..300).prop_map(|(at, len)| Damage::Zero { at, len }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever happens to the files, opening and reading never panics, and
    /// every message served is exactly the one written at that offset.
    #[test]
    fn damaged_files_never_panic_and_never_serve_wrong_data(
        damages in proptest::collection::vec((any::<prop::sample::Index>(), any::<bool>(), damage()), 1..4),
        drop_head in any::<bool>(),
        durability in prop_oneof![Just(Durability::Os), Just(Durability::Always)],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = StreamConfig { durability, segment_bytes: 1500, index_interval_bytes: 128, ..StreamConfig::new(1) };
        let written = fill(dir.path(), config, 40);
        let pdir = dir.path().join("s/0");
        for (which, index_file, d) in &damages {
            let mut files = segment_files(&pdir);
            if *index_file {
                files = files.iter().map(|f| f.with_extension("index")).filter(|f| f.exists()).collect();
            }
            if files.is_empty() { continue; }
            let file = &files[which.index(files.len())];
            let mut bytes = std::fs::read(file).unwrap();
            match d {
                Damage::Flip { at, xor } => if !bytes.is_empty() { let i = at.index(bytes.len()); bytes[i] ^= xor; },
                Damage::Truncate { at } => { let n = at.index(bytes.len() + 1); bytes.truncate(n); }
                Damage::AppendGarbage(g) => bytes.extend_from_slice(g),
                Damage::Zero { at, len } => if !bytes.is_empty() { let i = at.index(bytes.len()); let end = (i + len).min(bytes.len()); bytes[i..end].fill(0); },
            }
            std::fs::write(file, &bytes).unwrap();
        }
        if drop_head {
            std::fs::remove_file(pdir.join("head")).unwrap();
        }
        let Ok((_log, p)) = reopen_partition(dir.path()) else { return Ok(()); };
        let Ok(start) = p.oldest_offset() else { return Ok(()); };
        let mut reader = gregor_log::PartitionReader::new(p.clone(), start);
        for _ in 0..1000 {
            let Ok(fetch) = reader.poll(700) else { break };
            if fetch.is_empty() { break; }
            for m in fetch.messages() {
                let Ok(m) = m else { break };
                let expected = written.get(m.offset as usize);
                prop_assert_eq!(Some(&common::text(&m)), expected, "offset {} served wrong data", m.offset);
            }
        }
        // Appending still works or fails cleanly.
        let _ = p.append(&[Record::value(b"x")]);
    }
}
