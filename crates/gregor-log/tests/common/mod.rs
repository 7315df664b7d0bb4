//! Helpers shared by the log's integration tests.
#![allow(dead_code)]

use gregor_log::{Log, LogError, Message, Partition, PartitionReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Reads every message of a partition from its oldest offset to its end.
pub fn read_all(partition: &Arc<Partition>) -> Vec<Message> {
    let stream_start = partition.oldest_offset().unwrap();
    read_from(partition, stream_start)
}

/// Reads every message from `offset` to the end.
pub fn read_from(partition: &Arc<Partition>, offset: u64) -> Vec<Message> {
    let end = partition.next_offset().unwrap();
    let mut reader = PartitionReader::new(partition.clone(), offset);
    let mut out = Vec::new();
    while reader.next_offset() < end {
        let fetch = reader.poll(64 * 1024).unwrap();
        assert!(
            !fetch.is_empty() || reader.next_offset() >= end,
            "empty fetch before the end at {}",
            reader.next_offset()
        );
        for m in fetch.messages() {
            out.push(m.unwrap());
        }
    }
    out
}

/// The text of a message's value.
pub fn text(m: &Message) -> String {
    String::from_utf8(m.value.as_ref().expect("value").to_vec()).expect("utf-8")
}

/// The segment files of a partition directory, oldest first.
pub fn segment_files(partition_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(partition_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Opens the log at `dir` and partition 0 of its stream `s` (recovering it).
pub fn reopen_partition(dir: &Path) -> Result<(Log, Arc<Partition>), LogError> {
    let log = Log::open(dir)?;
    let p = log.stream("s")?.partition(0)?;
    Ok((log, p))
}

/// Cuts the last 3 bytes of `segment` (data the head says was synced) and
/// checks that reopening refuses, naming the file, and truncates nothing.
pub fn assert_lost_synced_data_is_refused(dir: &Path, segment: &Path) {
    let len = std::fs::metadata(segment).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(segment).unwrap().set_len(len - 3).unwrap();
    match reopen_partition(dir) {
        Err(LogError::Corrupt { file, reason, .. }) => {
            assert_eq!(file, segment);
            assert!(reason.contains("already synced"), "{reason}");
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("recovery silently accepted lost synced data"),
    }
    assert_eq!(std::fs::metadata(segment).unwrap().len(), len - 3, "nothing may be truncated");
}
