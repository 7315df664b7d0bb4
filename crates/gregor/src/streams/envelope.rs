//! The wire format of intermediate streams (`partition_by`), version 1.
//!
//! An intermediate stream carries the user's records and the producing
//! tasks' watermarks. The key is the user's key, encoded with the stream's
//! key serde (so partitioning is by key, as for any stream); the value
//! starts with a type byte:
//!
//! | type | layout after the type byte (integers big-endian) |
//! |---|---|
//! | `1` record | origin `u64`, origin offset `u64`, index `u32`, then the value in the stream's message serde |
//! | `2` watermark | watermark `i64` (`i64::MAX - 1`: the producing task's stream is idle, leave it out until its next watermark), producing task count `u32`, task name length `u16`, task name (UTF-8) |
//!
//! The origin (a hash of the input partition the producing task was
//! processing, 0 for none), its offset and the index of the send within
//! that message identify a record: a consumer drops any record at or before
//! the last it saw from the same origin, which is what a restarted producer
//! re-sends. Type bytes other than these are refused with an error naming
//! the version, so a newer format is never misread.
//!
//! This module must never allocate on the record path beyond the output
//! buffer it is given.

use bytes::Bytes;

pub(crate) const RECORD: u8 = 1;
pub(crate) const WATERMARK: u8 = 2;
const RECORD_HEADER: usize = 1 + 8 + 8 + 4;

/// A decoded intermediate message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Intermediate<'a> {
    Record { origin: u64, offset: u64, index: u32, value: &'a [u8] },
    Watermark { watermark: i64, tasks: u32, task: &'a str },
}

/// Writes a record's header into `out` (cleared first); the caller appends the value.
pub(crate) fn record_header(out: &mut Vec<u8>, origin: u64, offset: u64, index: u32) {
    out.clear();
    out.push(RECORD);
    out.extend_from_slice(&origin.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&index.to_be_bytes());
}

/// A watermark message.
pub(crate) fn watermark(watermark: i64, tasks: u32, task: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + 4 + 2 + task.len());
    out.push(WATERMARK);
    out.extend_from_slice(&watermark.to_be_bytes());
    out.extend_from_slice(&tasks.to_be_bytes());
    out.extend_from_slice(&(task.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(&task.as_bytes()[..task.len().min(u16::MAX as usize)]);
    out
}

/// Decodes a message of an intermediate stream.
pub(crate) fn decode(bytes: &Bytes) -> Result<Intermediate<'_>, String> {
    let be = |at: usize, n: usize| bytes.get(at..at + n).ok_or_else(|| format!("truncated at byte {at}"));
    match bytes.first() {
        Some(&RECORD) => {
            let origin = u64::from_be_bytes(be(1, 8)?.try_into().map_err(|_| "bad origin")?);
            let offset = u64::from_be_bytes(be(9, 8)?.try_into().map_err(|_| "bad offset")?);
            let index = u32::from_be_bytes(be(17, 4)?.try_into().map_err(|_| "bad index")?);
            Ok(Intermediate::Record { origin, offset, index, value: &bytes[RECORD_HEADER..] })
        }
        Some(&WATERMARK) => {
            let watermark = i64::from_be_bytes(be(1, 8)?.try_into().map_err(|_| "bad watermark")?);
            let tasks = u32::from_be_bytes(be(9, 4)?.try_into().map_err(|_| "bad task count")?);
            let len = u16::from_be_bytes(be(13, 2)?.try_into().map_err(|_| "bad name length")?) as usize;
            let task = std::str::from_utf8(be(15, len)?).map_err(|_| "task name is not UTF-8")?;
            Ok(Intermediate::Watermark { watermark, tasks, task })
        }
        Some(other) => Err(format!(
            "type byte {other} is not a record (1) or watermark (2) of intermediate format version 1 (written by a newer gregor, or not an intermediate stream)"
        )),
        None => Err("an empty message is not an intermediate record".into()),
    }
}

/// FNV-1a, 64 bits: a stable name for an input partition in records' origins.
pub(crate) fn origin_id(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_watermarks_round_trip() {
        let mut out = Vec::new();
        record_header(&mut out, 7, 42, 3);
        out.extend_from_slice(b"hello");
        let b = Bytes::from(out);
        assert_eq!(decode(&b).unwrap(), Intermediate::Record { origin: 7, offset: 42, index: 3, value: b"hello" });
        let w = Bytes::from(watermark(-5, 4, "Partition 1"));
        assert_eq!(decode(&w).unwrap(), Intermediate::Watermark { watermark: -5, tasks: 4, task: "Partition 1" });
    }

    #[test]
    fn the_checked_in_fixture_decodes_forever() {
        // tests/fixtures/streams/intermediate-v1.hex: one record, one watermark.
        let text = include_str!("../../tests/fixtures/streams/intermediate-v1.hex");
        let lines: Vec<Bytes> =
            text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(|l| Bytes::from(hex(l))).collect();
        assert_eq!(
            decode(&lines[0]).unwrap(),
            Intermediate::Record { origin: 0x0102_0304_0506_0708, offset: 9, index: 2, value: b"\"v\"" }
        );
        assert_eq!(
            decode(&lines[1]).unwrap(),
            Intermediate::Watermark { watermark: 1000, tasks: 2, task: "Partition 0" }
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn unknown_types_and_truncation_are_errors_not_guesses() {
        assert!(decode(&Bytes::from_static(&[9, 1])).unwrap_err().contains("version 1"));
        assert!(decode(&Bytes::from_static(&[1, 0, 0])).unwrap_err().contains("truncated"));
        assert!(decode(&Bytes::new()).is_err());
        assert_ne!(origin_id("log.a.0"), origin_id("log.a.1"));
        assert_ne!(origin_id(""), 0);
    }
}
