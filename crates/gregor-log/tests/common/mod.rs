//! Helpers shared by the log's integration tests.
#![allow(dead_code)]

use gregor_log::{Message, Partition, PartitionReader};
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
