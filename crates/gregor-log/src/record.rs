//! Messages as they go into the log and as they come back out.
//!
//! Writing takes borrowed slices (`Record`) so a producer never has to copy its
//! data into an owned type; reading yields `Message`s whose key and value are
//! cheap `Bytes` slices of one shared read buffer, so consuming a batch does not
//! allocate per message. Nothing here touches the disk.

use bytes::Bytes;

/// One message to append: an optional key, an optional value (`None` is a
/// tombstone in a compacted stream), a timestamp and optional headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record<'a> {
    /// Partitioning and compaction key.
    pub key: Option<&'a [u8]>,
    /// Payload; `None` deletes the key in a compacted stream.
    pub value: Option<&'a [u8]>,
    /// Milliseconds since the Unix epoch; `None` means "now" at append time.
    pub timestamp: Option<i64>,
    /// Header names and values, kept in order.
    pub headers: &'a [(&'a str, &'a [u8])],
}

impl<'a> Record<'a> {
    /// A record with only a value.
    pub fn value(value: &'a [u8]) -> Self {
        Record { value: Some(value), ..Record::default() }
    }

    /// A record with a key and a value.
    pub fn keyed(key: &'a [u8], value: &'a [u8]) -> Self {
        Record { key: Some(key), value: Some(value), ..Record::default() }
    }
}

/// A message read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Position of the message in its partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Key, if the message had one.
    pub key: Option<Bytes>,
    /// Value, or `None` for a tombstone.
    pub value: Option<Bytes>,
    /// Headers in the order they were written.
    pub headers: Vec<(String, Option<Bytes>)>,
}
