//! Interval durability across segment rolls: a roll does not sync the sealed
//! segment (the next interval flush does), so a power failure may tear a
//! segment sealed since the last flush, and recovery must scan and truncate
//! it; what a flush synced is never truncated.

mod common;

use common::{reopen_partition, segment_files};

use gregor_log::{Durability, Log, Partition, Record, StreamConfig};
use std::os::unix::fs::FileExt;
use std::path::Path;

fn config() -> StreamConfig {
    StreamConfig {
        // Never flushed in the background: the tests flush by hand.
        durability: Durability::IntervalMs(3_600_000),
        segment_bytes: 2048,
        index_interval_bytes: 100,
        ..StreamConfig::new(1)
    }
}

/// Appends batches of 3 messages until the partition has `segments` files.
fn append_until(p: &Partition, segments: usize, written: &mut Vec<String>) {
    while p.segment_count().unwrap() < segments {
        let i = written.len() / 3;
        let values: Vec<String> = (0..3).map(|j| format!("b{i:04}-{j}")).collect();
        let records: Vec<Record<'_>> = values.iter().map(|v| Record::value(v.as_bytes())).collect();
        p.append(&records).unwrap();
        written.extend(values);
    }
}

fn base_of(segment: &Path) -> u64 {
    segment.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// The process dies (no close, so no flush on close), then the machine
/// reboots: the head's boot id no longer matches, which makes the next open
/// scan from the recovery point.
fn crash_and_reboot(log: Log, partition_dir: &Path) {
    std::mem::forget(log);
    let head = std::fs::OpenOptions::new().write(true).open(partition_dir.join("head")).unwrap();
    head.write_all_at(&[0u8; 40], 128).unwrap(); // the boot id field (head.rs)
}

#[test]
fn a_reboot_can_tear_a_segment_sealed_since_the_last_flush_and_recovery_truncates_it() {
    // Cut inside a batch, and between two batches (an offset gap before the
    // next segment, with nothing malformed to find).
    for cut_inside_a_batch in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("s/0");
        let log = Log::open(dir.path()).unwrap();
        let p = log.create_stream("s", config()).unwrap().partition(0).unwrap();
        let mut written = Vec::new();
        append_until(&p, 3, &mut written);
        p.flush().unwrap();
        let synced = written.len();
        append_until(&p, 6, &mut written);
        drop(p);
        crash_and_reboot(log, &pdir);

        // The 4th segment was sealed after the flush: the power failure lost
        // the end of it.
        let files = segment_files(&pdir);
        assert_eq!(files.len(), 6);
        let torn = &files[3];
        let len = std::fs::metadata(torn).unwrap().len();
        // Batches of 3 equal-width messages are equally long.
        let batches = (base_of(&files[4]) - base_of(torn)) / 3;
        let batch_len = len / batches;
        assert_eq!(batch_len * batches, len);
        let cut = batches / 2 * batch_len + if cut_inside_a_batch { 5 } else { 0 };
        std::fs::OpenOptions::new().write(true).open(torn).unwrap().set_len(cut).unwrap();

        let (_log, p) =
            reopen_partition(dir.path()).expect("a torn unsynced segment is a tail to truncate, not an error");
        let report = p.recovery_report();
        assert_eq!(report.truncated_file.as_deref(), Some(torn.as_path()));
        assert!(report.bytes_dropped > len - cut, "the torn end and the later segments: {report:?}");
        assert_eq!(segment_files(&pdir), files[..4], "the segments after the damage go too");
        let read: Vec<String> = common::read_all(&p).iter().map(common::text).collect();
        assert!(read.len() >= synced, "what the flush synced survives: {} < {synced}", read.len());
        assert_eq!(read, written[..read.len()], "a prefix of what was written, nothing else");
        let at = p.append(&[Record::value(b"after")]).unwrap();
        assert_eq!(at.base_offset, read.len() as u64, "appends go on after the cut");
    }
}

#[test]
fn a_flush_covers_the_segments_sealed_since_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("s/0");
    let log = Log::open(dir.path()).unwrap();
    let p = log.create_stream("s", config()).unwrap().partition(0).unwrap();
    let mut written = Vec::new();
    // Rolled three times, never flushed; then one flush syncs it all.
    append_until(&p, 4, &mut written);
    p.flush().unwrap();
    drop(p);
    crash_and_reboot(log, &pdir);

    // Losing synced data at the end of the active segment is damage, not a
    // torn tail: the flush moved the recovery point there.
    let active = segment_files(&pdir).pop().unwrap();
    common::assert_lost_synced_data_is_refused(dir.path(), &active);
}

#[test]
fn after_a_reboot_every_segment_sealed_since_the_flush_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("s/0");
    let log = Log::open(dir.path()).unwrap();
    let p = log.create_stream("s", config()).unwrap().partition(0).unwrap();
    let mut written = Vec::new();
    append_until(&p, 2, &mut written);
    p.flush().unwrap();
    append_until(&p, 5, &mut written);
    drop(p);
    crash_and_reboot(log, &pdir);
    // The power failure tore the index of a sealed, unsynced segment.
    let index = segment_files(&pdir)[2].with_extension("index");
    std::fs::write(&index, vec![0xAB; 36]).unwrap();

    let (_log, p) = reopen_partition(dir.path()).unwrap();
    assert_eq!(p.recovery_report().bytes_dropped, 0);
    // Readers check index entries against the data, so a torn index only
    // slows them down; recovery rebuilds it so that it does not stay slow.
    let rebuilt = std::fs::read(&index).unwrap();
    assert!(!rebuilt.is_empty() && rebuilt != vec![0xAB; 36], "the torn index was rebuilt");
    let count = written.len() as u64;
    for start in [0, count / 3, count / 2, count * 2 / 3, count - 1] {
        let got: Vec<String> = common::read_from(&p, start).iter().map(common::text).collect();
        assert_eq!(got, written[start as usize..], "reading from {start}");
    }
}
