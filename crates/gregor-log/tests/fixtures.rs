//! Compatibility fixtures: data directories written in format v1 that every
//! future version of the log must still read exactly.
//!
//! `tests/fixtures/v1/` holds four complete data directories (see its
//! README.md): `basic`, `compacted`, `torn-tail` and `corrupt-middle`. Each
//! test copies one to a temporary directory (opening rewrites the head and
//! indexes), opens it with the public API and checks what a user would see:
//! every message with its partition, offset, key, value, timestamp and
//! headers; what recovery reports; where appends continue. The tables below
//! are the frozen expectation: if a change to the format or to recovery makes
//! these tests fail, it broke reading data that users already have on disk.
//!
//! The fixtures' version fields and framing are also checked by reading bytes
//! as documented in docs/log.md, independently of the crate's decoder.
//!
//! `write_fixtures` (ignored) is the generator that wrote them with the public
//! API. Never regenerate a released format version; add `v2/` instead.

mod common;

use common::segment_files;

use gregor_log::{CleanupPolicy, Durability, Log, LogError, Message, PartitionReader, Record, StreamConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

// ---------------------------------------------------------------------------
// What the fixtures hold.
// ---------------------------------------------------------------------------

/// 2023-11-14T22:13:20Z: every timestamp in the fixtures is explicit.
const T0: i64 = 1_700_000_000_000;

/// One message as written, and as it must read back.
struct Msg {
    offset: u64,
    timestamp: i64,
    key: Option<&'static [u8]>,
    value: Option<&'static [u8]>,
    headers: &'static [(&'static str, &'static [u8])],
}

const fn m(offset: u64, timestamp: i64, key: Option<&'static [u8]>, value: Option<&'static [u8]>) -> Msg {
    Msg { offset, timestamp, key, value, headers: &[] }
}

const fn mh(
    offset: u64,
    timestamp: i64,
    key: Option<&'static [u8]>,
    value: Option<&'static [u8]>,
    headers: &'static [(&'static str, &'static [u8])],
) -> Msg {
    Msg { offset, timestamp, key, value, headers }
}

/// One append: the messages of one batch, in one partition.
struct Batch {
    partition: u32,
    messages: &'static [Msg],
}

/// Stream `events` of `basic` (and of `torn-tail` and `corrupt-middle`, which
/// are damaged copies of it), in append order.
const BASIC: &[Batch] = &[
    Batch {
        partition: 0,
        messages: &[
            mh(
                0,
                T0,
                Some(b"alice"),
                Some(b"signed up: plan=free, country=NZ, referrer=newsletter"),
                &[("source", b"web"), ("trace-id", b"")],
            ),
            m(1, T0 + 1_000, None, Some(b"page view: /pricing, 1920x1080, firefox 119")),
        ],
    },
    Batch {
        partition: 1,
        messages: &[m(0, T0 + 500, Some(b"zoe"), Some(b"signed up: plan=free, country=CA, referrer=podcast"))],
    },
    Batch {
        partition: 0,
        messages: &[
            m(2, T0 + 2_000, Some(b"bob"), Some(b"signed up: plan=pro, country=DE, referrer=search")),
            m(3, T0 + 3_000, Some(b"alice"), Some(b"upgraded: plan=free -> plan=pro, paid by card")),
            // A late event: older than the first message of its batch.
            m(4, T0 + 1_500, Some(b"carol"), Some(b"signed up: plan=team, country=BR, referrer=partner")),
        ],
    },
    Batch { partition: 0, messages: &[m(5, T0 + 5_000, Some(b"bob"), None)] },
    Batch {
        partition: 1,
        messages: &[
            m(1, T0 + 4_500, None, Some(b"health check from monitoring: ok, 12 ms")),
            m(2, T0 + 4_600, Some(b"zoe"), None),
        ],
    },
    Batch {
        partition: 0,
        messages: &[
            m(6, T0 + 6_000, Some(b"dave"), Some(b"\x00\x01\x7f\x80\xfe\xff binary payload, not UTF-8")),
            m(7, T0 + 7_000, None, None),
            m(8, T0 + 8_000, Some(b"erin"), Some(b"")),
        ],
    },
    Batch {
        partition: 0,
        messages: &[
            mh(
                9,
                T0 + 9_000,
                Some(b"carol"),
                Some(b"downgraded: plan=team -> plan=pro, seats 12 -> 5"),
                &[("source", b"billing")],
            ),
            m(10, T0 + 10_000, Some(b"alice"), Some(b"logged in from a new device: android 14, Wellington")),
        ],
    },
    Batch {
        partition: 1,
        messages: &[mh(
            3,
            T0 + 9_500,
            Some(b"yann"),
            Some(b"signed up: plan=pro, country=FR, referrer=search"),
            &[("source", b"mobile")],
        )],
    },
    Batch {
        partition: 0,
        messages: &[
            m(11, T0 + 11_000, Some(b"frank"), Some(b"signed up: plan=free, country=JP, referrer=conference")),
            m(12, T0 + 12_000, Some(b"erin"), Some(b"changed email: erin@example.org -> erin@example.net")),
        ],
    },
    Batch {
        partition: 0,
        messages: &[
            m(13, T0 + 13_000, Some(b"alice"), Some(b"exported data: 3 files, 12 MiB, requested in settings")),
            m(14, T0 + 14_000, Some(b"dave"), None),
        ],
    },
    Batch {
        partition: 1,
        messages: &[m(4, T0 + 15_000, Some(b"yann"), Some(b"upgraded: plan=pro -> plan=team, seats 1 -> 8"))],
    },
    Batch {
        partition: 0,
        messages: &[
            m(15, T0 + 15_000, Some(b"bob"), Some(b"signed up again: plan=free, country=DE, referrer=word of mouth")),
            m(16, T0 + 16_000, Some(b"frank"), Some(b"upgraded: plan=free -> plan=team, seats 1 -> 3, by invoice")),
        ],
    },
    Batch {
        partition: 0,
        messages: &[m(17, T0 + 17_000, Some(b"carol"), Some(b"support ticket #4711 opened: cannot invite a 6th seat"))],
    },
];

/// The settings of stream `events`, spelled out in full: what a v1
/// `stream.json` holding them must mean forever.
fn basic_config() -> StreamConfig {
    StreamConfig {
        partitions: 2,
        cleanup_policy: CleanupPolicy::Delete,
        retention_bytes: None,
        retention_ms: None,
        durability: Durability::IntervalMs(1000),
        segment_bytes: 1024,
        segment_ms: 7 * 24 * 3600 * 1000,
        index_interval_bytes: 256,
        delete_retention_ms: 24 * 3600 * 1000,
        max_batch_bytes: 64 * 1024 * 1024,
        compaction_bounded: false,
    }
}

/// Base offsets of the segments of `events` in `basic`, per partition.
const BASIC_SEGMENTS: [&[u64]; 2] = [&[0, 13], &[0]];

/// Stream `profiles` of `compacted` (one partition): written before compaction.
const COMPACTED_WRITES: &[Batch] = &[
    Batch {
        partition: 0,
        messages: &[
            m(0, T0 + 1_000, Some(b"alice"), Some(b"name=Alice Archer; plan=free; email=alice@example.org")),
            m(1, T0 + 2_000, Some(b"bob"), Some(b"name=Bob Baker; plan=pro; email=bob@example.org")),
        ],
    },
    Batch {
        partition: 0,
        messages: &[
            m(2, T0 + 3_000, Some(b"carol"), Some(b"name=Carol Cooper; plan=team; email=carol@example.org")),
            m(3, T0 + 4_000, Some(b"dave"), Some(b"name=Dave Dyer; plan=free; email=dave@example.org")),
        ],
    },
    Batch {
        partition: 0,
        messages: &[m(4, T0 + 10_000, Some(b"alice"), Some(b"name=Alice Archer; plan=pro; email=alice@example.org"))],
    },
    // Deleted long before compaction: the tombstone is dropped with the key.
    Batch { partition: 0, messages: &[m(5, T0 + 12_000, Some(b"dave"), None)] },
    Batch {
        partition: 0,
        messages: &[
            m(6, T0 + 20_000, Some(b"bob"), Some(b"name=Bob Baker; plan=pro; email=bob@example.net")),
            m(7, T0 + 21_000, Some(b"erin"), Some(b"name=Erin Evans; plan=free; email=erin@example.org")),
        ],
    },
    Batch {
        partition: 0,
        messages: &[
            m(8, T0 + 30_000, Some(b"carol"), Some(b"name=Carol Cooper; plan=pro; email=carol@example.org")),
            m(9, T0 + 31_000, Some(b"alice"), Some(b"name=Alice Archer; plan=team; email=alice@example.org")),
        ],
    },
    Batch {
        partition: 0,
        messages: &[m(
            10,
            T0 + 50_000,
            Some(b"frank"),
            Some(b"name=Frank Fischer; plan=free; email=frank@example.org"),
        )],
    },
    Batch {
        partition: 0,
        messages: &[
            // Deleted shortly before compaction: the tombstone survives it.
            m(11, T0 + 90_000, Some(b"erin"), None),
            m(12, T0 + 91_000, Some(b"bob"), Some(b"name=Bob Baker; plan=team; email=bob@example.net")),
        ],
    },
    Batch {
        partition: 0,
        messages: &[m(13, T0 + 95_000, Some(b"frank"), Some(b"name=Frank Fischer; plan=pro; email=frank@example.org"))],
    },
];

/// The `now` given to the compaction that `compacted` went through: tombstones
/// older than `delete_retention_ms` (60 s) before it were dropped.
const COMPACTED_AT: i64 = T0 + 100_000;

/// Appended after that compaction, so still in the active segment.
const COMPACTED_LATER: &[Batch] = &[Batch {
    partition: 0,
    messages: &[
        m(14, T0 + 101_000, Some(b"alice"), Some(b"name=Alice Archer; plan=free; email=alice@example.net")),
        m(15, T0 + 102_000, Some(b"gina"), Some(b"name=Gina Gray; plan=free; email=gina@example.org")),
    ],
}];

/// Offsets left in `compacted`: each key's newest record at compaction time,
/// the recent tombstone of `erin`, and the two appends after it.
const COMPACTED_SURVIVORS: &[u64] = &[8, 9, 11, 12, 13, 14, 15];

/// Base offsets of the segments of `profiles` in `compacted`: the sealed
/// segments were cleaned and merged into one file that keeps base 0.
const COMPACTED_SEGMENTS: &[u64] = &[0, 14];

/// The settings of stream `profiles`, spelled out in full.
fn compacted_config() -> StreamConfig {
    StreamConfig {
        partitions: 1,
        cleanup_policy: CleanupPolicy::Compact,
        retention_bytes: None,
        retention_ms: None,
        durability: Durability::IntervalMs(1000),
        segment_bytes: 1024,
        segment_ms: 7 * 24 * 3600 * 1000,
        index_interval_bytes: 256,
        delete_retention_ms: 60_000,
        max_batch_bytes: 64 * 1024 * 1024,
        compaction_bounded: false,
    }
}

/// `torn-tail`: the last batch of `events`/0 (offset 17, in the segment with
/// base 13) was cut after half of its bytes, and no head file is left.
const TORN_SEGMENT: &str = "events/0/00000000000000000013.log";
/// Byte position of the torn batch in that segment, and its first offset.
const TORN_AT: u64 = 304;
const TORN_OFFSET: u64 = 17;

/// `corrupt-middle`, partition 0 (head kept): one bit flipped in the batch of
/// offsets 2..=4 in the first segment, followed by intact batches.
const CORRUPT_P0_SEGMENT: &str = "events/0/00000000000000000000.log";
const CORRUPT_P0_AT: u64 = 179;
const CORRUPT_P0_OFFSET: u64 = 2;
/// `corrupt-middle`, partition 1 (head removed): one bit flipped in the batch
/// of offsets 1..=2, followed by intact batches in the same segment.
const CORRUPT_P1_SEGMENT: &str = "events/1/00000000000000000000.log";
const CORRUPT_P1_AT: u64 = 103;

// ---------------------------------------------------------------------------
// Reading fixtures.
// ---------------------------------------------------------------------------

/// Directory of the v1 fixtures.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            // Not fs::copy: that would carry over the read-only mode of a
            // read-only checkout, and opening needs to write.
            std::fs::write(&target, std::fs::read(entry.path()).unwrap()).unwrap();
        }
    }
}

/// A private copy of fixture `name`: opening may rewrite its files.
fn copy_of(name: &str) -> tempfile::TempDir {
    let source = fixtures().join(name);
    assert!(source.is_dir(), "fixture {} is missing", source.display());
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&source, dir.path());
    dir
}

/// A message in a form that compares exactly and prints readably (bytes are
/// shown escaped, so binary values stay exact).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    offset: u64,
    timestamp: i64,
    key: Option<String>,
    value: Option<String>,
    headers: Vec<(String, Option<String>)>,
}

fn escaped(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn row_of(m: &Message) -> Row {
    Row {
        offset: m.offset,
        timestamp: m.timestamp,
        key: m.key.as_deref().map(escaped),
        value: m.value.as_deref().map(escaped),
        headers: m.headers.iter().map(|(n, v)| (n.clone(), v.as_deref().map(escaped))).collect(),
    }
}

fn expected_row(m: &Msg) -> Row {
    Row {
        offset: m.offset,
        timestamp: m.timestamp,
        key: m.key.map(escaped),
        value: m.value.map(escaped),
        headers: m.headers.iter().map(|(n, v)| ((*n).to_owned(), Some(escaped(v)))).collect(),
    }
}

/// The messages of `partition` in `batches`, in offset order.
fn expected(batches: &[Batch], partition: u32) -> Vec<Row> {
    batches.iter().filter(|b| b.partition == partition).flat_map(|b| b.messages.iter().map(expected_row)).collect()
}

fn rows(messages: &[Message]) -> Vec<Row> {
    messages.iter().map(row_of).collect()
}

/// Reads one batch per poll from `offset` until the end or an error; returns
/// what was served before the error and the error.
fn read_batch_by_batch(partition: &Arc<gregor_log::Partition>, offset: u64) -> (Vec<Row>, Option<LogError>) {
    let end = partition.next_offset().unwrap();
    let mut reader = PartitionReader::new(partition.clone(), offset);
    let mut served = Vec::new();
    while reader.next_offset() < end {
        // A poll of fewer bytes than a batch still returns one whole batch.
        match reader.poll(1) {
            Ok(fetch) => {
                assert!(!fetch.is_empty(), "empty fetch before the end at {}", reader.next_offset());
                for m in fetch.messages() {
                    served.push(row_of(&m.unwrap()));
                }
            }
            Err(e) => return (served, Some(e)),
        }
    }
    (served, None)
}

fn segment_bases(partition_dir: &Path) -> Vec<u64> {
    segment_files(partition_dir).iter().map(|p| p.file_stem().unwrap().to_str().unwrap().parse().unwrap()).collect()
}

// ---------------------------------------------------------------------------
// The documented v1 byte layout, decoded independently of the crate.
// ---------------------------------------------------------------------------

/// A batch found by walking a segment file with the framing of docs/log.md.
#[derive(Debug)]
struct RawBatch {
    position: u64,
    len: u64,
    base_offset: u64,
    magic: u8,
    /// The stored CRC32C equals the one computed over bytes 20.., then 0..8 and 12..16.
    crc_ok: bool,
    last_offset: u64,
    max_timestamp: i64,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The whole batches of a segment file, and how many bytes follow the last one.
fn raw_batches(segment: &Path) -> (Vec<RawBatch>, u64) {
    let bytes = std::fs::read(segment).unwrap();
    let mut batches = Vec::new();
    let mut pos = 0usize;
    while bytes.len() - pos >= 12 {
        let len = 12 + le_u32(&bytes, pos + 8) as usize;
        if len < 44 || pos + len > bytes.len() {
            break;
        }
        let b = &bytes[pos..pos + len];
        let crc = crc32c::crc32c_append(crc32c::crc32c_append(crc32c::crc32c(&b[20..]), &b[0..8]), &b[12..16]);
        batches.push(RawBatch {
            position: pos as u64,
            len: len as u64,
            base_offset: le_u64(b, 0),
            magic: b[12],
            crc_ok: crc == le_u32(b, 16),
            last_offset: le_u64(b, 0) + u64::from(le_u32(b, 20)),
            max_timestamp: le_u64(b, 32) as i64,
        });
        pos += len;
    }
    (batches, (bytes.len() - pos) as u64)
}

/// Checks a segment's `.index` against docs/log.md: 16-byte entries
/// `(offset - base: u32, position: u32, max timestamp before: i64)`, the first
/// at position 0, each pointing at the start of a batch with that offset.
/// Returns the number of entries.
fn assert_index_matches(segment: &Path) -> usize {
    let base: u64 = segment.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let (batches, _) = raw_batches(segment);
    let index = std::fs::read(segment.with_extension("index")).unwrap();
    assert_eq!(index.len() % 16, 0, "{}: index length", segment.display());
    assert!(!index.is_empty(), "{}: a segment with data has an index entry", segment.display());
    for (n, entry) in index.chunks_exact(16).enumerate() {
        let (rel, position, max_before) = (le_u32(entry, 0), le_u32(entry, 4), le_u64(entry, 8) as i64);
        let i = batches
            .iter()
            .position(|b| b.position == u64::from(position))
            .unwrap_or_else(|| panic!("{}: index entry {n} points at byte {position}, not a batch", segment.display()));
        if n == 0 {
            assert_eq!(position, 0, "{}: the first entry indexes the first batch", segment.display());
        }
        assert_eq!(batches[i].base_offset - base, u64::from(rel), "{}: entry {n} offset", segment.display());
        let expected_max = batches[..i].iter().map(|b| b.max_timestamp).max().unwrap_or(i64::MIN);
        assert_eq!(max_before, expected_max, "{}: entry {n} max timestamp before", segment.display());
    }
    index.len() / 16
}

/// The v1 version fields of every file of a fixture: `stream.json` says
/// `"format_version": 1`, every whole batch has magic byte 1, and every head
/// file is 4 KiB starting with `GRGRHEAD` and version 1 (u64 LE at byte 8).
#[test]
fn every_fixture_is_format_v1() {
    for name in ["basic", "compacted", "torn-tail", "corrupt-middle"] {
        let root = fixtures().join(name);
        let streams: Vec<PathBuf> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(streams.len(), 1, "{name}: one stream");
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(streams[0].join("stream.json")).unwrap()).unwrap();
        assert_eq!(meta["format_version"], 1, "{name}: stream.json format_version");
        let mut batches = 0;
        for partition in std::fs::read_dir(&streams[0]).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()) {
            let head = partition.join("head");
            if head.exists() {
                let bytes = std::fs::read(&head).unwrap();
                assert_eq!(bytes.len(), 4096, "{}: head size", head.display());
                assert_eq!(&bytes[0..8], b"GRGRHEAD", "{}: head magic", head.display());
                assert_eq!(le_u64(&bytes, 8), 1, "{}: head version", head.display());
                // The generator zeroed the boot id (bytes 128..168), so that
                // every machine opens the fixture as after a reboot.
                assert!(bytes[128..168].iter().all(|&b| b == 0), "{}: boot id", head.display());
            }
            for segment in segment_files(&partition) {
                for batch in raw_batches(&segment).0 {
                    assert_eq!(batch.magic, 1, "{}: batch at byte {} magic", segment.display(), batch.position);
                    batches += 1;
                }
            }
        }
        assert!(batches > 0, "{name}: holds batches");
    }
}

// ---------------------------------------------------------------------------
// The fixtures, read with the public API.
// ---------------------------------------------------------------------------

#[test]
fn basic_reads_back_every_message_exactly() {
    let fixture = fixtures().join("basic");
    for p in 0..2u32 {
        let pdir = fixture.join(format!("events/{p}"));
        assert!(pdir.join("head").exists(), "basic keeps its head files");
        assert_eq!(segment_bases(&pdir), BASIC_SEGMENTS[p as usize], "segments of partition {p}");
        let mut last_offset = None;
        for segment in segment_files(&pdir) {
            let (batches, trailing) = raw_batches(&segment);
            assert_eq!(trailing, 0, "{}: whole batches only", segment.display());
            for b in &batches {
                assert!(b.crc_ok, "{}: CRC of batch at byte {}", segment.display(), b.position);
                assert!(last_offset.is_none_or(|l| b.base_offset > l), "offsets grow");
                last_offset = Some(b.last_offset);
            }
            assert_index_matches(&segment);
        }
    }
    // The sparse index has more than one entry somewhere, so lookups use it.
    let first = fixture.join("events/0/00000000000000000000.log");
    assert!(assert_index_matches(&first) > 1, "the first segment has several index entries");

    let dir = copy_of("basic");
    let log = Log::open(dir.path()).unwrap();
    let events = log.stream("events").unwrap();
    assert_eq!(events.config(), &basic_config());
    for p in 0..2u32 {
        let partition = events.partition(p).unwrap();
        assert_eq!(partition.recovery_report(), Default::default(), "nothing dropped from intact data");
        let want = expected(BASIC, p);
        assert_eq!(rows(&common::read_all(&partition)), want, "partition {p}");
        assert_eq!(partition.oldest_offset().unwrap(), 0);
        assert_eq!(partition.next_offset().unwrap(), want.len() as u64);
        assert_eq!(partition.segment_count().unwrap(), BASIC_SEGMENTS[p as usize].len());
        // Reading from any offset (located through the offset index).
        for (i, row) in want.iter().enumerate() {
            assert_eq!(
                rows(&common::read_from(&partition, row.offset)),
                want[i..],
                "partition {p} from {}",
                row.offset
            );
        }
        // Looking up by time (through the time index): the first message in
        // offset order whose timestamp is at or after the one asked for.
        let mut times: Vec<i64> = want.iter().flat_map(|r| [r.timestamp - 1, r.timestamp, r.timestamp + 1]).collect();
        times.extend([i64::MIN, T0 - 1, T0 + 1_000_000]);
        for t in times {
            let first = want.iter().find(|r| r.timestamp >= t).map(|r| r.offset);
            assert_eq!(partition.offset_for_timestamp(t).unwrap(), first, "partition {p}: time {t}");
        }
    }
    // The old data stays writable: an append continues at the next offset.
    let at = events.append(0, &[Record { timestamp: Some(T0 + 20_000), ..Record::keyed(b"gina", b"new") }]).unwrap();
    assert_eq!((at.base_offset, at.last_offset), (18, 18));
    let all = rows(&common::read_all(&events.partition(0).unwrap()));
    assert_eq!(all[..18], expected(BASIC, 0)[..]);
    assert_eq!((all[18].offset, all[18].value.as_deref()), (18, Some("new")));
}

#[test]
fn compacted_reads_back_the_survivors_with_their_offsets() {
    let fixture = fixtures().join("compacted");
    let pdir = fixture.join("profiles/0");
    assert!(pdir.join("head").exists(), "compacted keeps its head file");
    assert_eq!(segment_bases(&pdir), COMPACTED_SEGMENTS);
    for segment in segment_files(&pdir) {
        let (batches, trailing) = raw_batches(&segment);
        assert_eq!(trailing, 0);
        assert!(batches.iter().all(|b| b.crc_ok), "{}: CRCs", segment.display());
        assert_index_matches(&segment);
    }
    let written: Vec<Row> = expected(COMPACTED_WRITES, 0).into_iter().chain(expected(COMPACTED_LATER, 0)).collect();
    let survivors: Vec<Row> = written.iter().filter(|r| COMPACTED_SURVIVORS.contains(&r.offset)).cloned().collect();

    let dir = copy_of("compacted");
    let log = Log::open(dir.path()).unwrap();
    let profiles = log.stream("profiles").unwrap();
    assert_eq!(profiles.config(), &compacted_config());
    let partition = profiles.partition(0).unwrap();
    assert_eq!(partition.recovery_report(), Default::default());
    // Every survivor keeps the offset it was written at: offsets have gaps.
    assert_eq!(rows(&common::read_all(&partition)), survivors);
    assert_eq!(partition.oldest_offset().unwrap(), 0, "compaction does not move the oldest offset");
    assert_eq!(partition.next_offset().unwrap(), 16, "offsets are never reused");
    // Reading from an offset that was compacted away starts at the next survivor.
    assert_eq!(common::read_from(&partition, 0)[0].offset, 8);
    assert_eq!(common::read_from(&partition, 10)[0].offset, 11);
    assert_eq!(partition.offset_for_timestamp(T0 + 40_000).unwrap(), Some(11));

    // Compacting the old data again: alice@9 is superseded by alice@14, and
    // erin's tombstone is now older than delete_retention_ms.
    partition.compact(T0 + 200_000, true).unwrap();
    let kept: Vec<Row> = written.iter().filter(|r| [8, 12, 13, 14, 15].contains(&r.offset)).cloned().collect();
    assert_eq!(rows(&common::read_all(&partition)), kept);
    let at = profiles.append(0, &[Record { timestamp: Some(T0 + 300_000), ..Record::keyed(b"bob", b"x") }]).unwrap();
    assert_eq!(at.base_offset, 16);
}

#[test]
fn torn_tail_is_truncated_reported_and_appends_continue() {
    let fixture = fixtures().join("torn-tail");
    for p in 0..2 {
        assert!(!fixture.join(format!("events/{p}/head")).exists(), "torn-tail has no head files");
    }
    // The tear, as on disk: whole batches up to TORN_AT, then part of one.
    let torn = fixture.join(TORN_SEGMENT);
    let (batches, trailing) = raw_batches(&torn);
    let torn_len = std::fs::metadata(&torn).unwrap().len();
    assert!(batches.iter().all(|b| b.crc_ok));
    assert_eq!(batches.last().map(|b| b.position + b.len), Some(TORN_AT));
    assert_eq!(torn_len, TORN_AT + trailing);
    assert!(trailing > 44, "the cut is in the middle of the batch, past its header");
    // Apart from the cut, the segments are those of `basic`.
    let basic = std::fs::read(fixtures().join("basic").join(TORN_SEGMENT)).unwrap();
    assert_eq!(std::fs::read(&torn).unwrap(), basic[..torn_len as usize]);

    let dir = copy_of("torn-tail");
    let log = Log::open(dir.path()).unwrap();
    let events = log.stream("events").unwrap();
    let p0 = events.partition(0).unwrap();
    let report = p0.recovery_report();
    assert_eq!(report.truncated_file.as_deref(), Some(dir.path().join(TORN_SEGMENT).as_path()));
    assert_eq!(report.truncated_at, TORN_AT);
    assert_eq!(report.bytes_dropped, trailing);
    assert_eq!(std::fs::metadata(dir.path().join(TORN_SEGMENT)).unwrap().len(), TORN_AT, "the tail was cut off");
    // Everything before the torn batch is there; the torn batch is gone.
    let before_tear: Vec<Row> = expected(BASIC, 0).into_iter().filter(|r| r.offset < TORN_OFFSET).collect();
    assert_eq!(rows(&common::read_all(&p0)), before_tear);
    assert_eq!(p0.next_offset().unwrap(), TORN_OFFSET);
    // Appends continue where the torn batch would have been.
    let at = events.append(0, &[Record { timestamp: Some(T0 + 20_000), ..Record::keyed(b"gina", b"after") }]).unwrap();
    assert_eq!(at.base_offset, TORN_OFFSET);
    let after = rows(&common::read_from(&p0, TORN_OFFSET));
    assert_eq!(after.len(), 1);
    assert_eq!((after[0].key.as_deref(), after[0].value.as_deref()), (Some("gina"), Some("after")));

    // The other partition was not torn: recovered without loss.
    let p1 = events.partition(1).unwrap();
    assert_eq!(p1.recovery_report(), Default::default());
    assert_eq!(rows(&common::read_all(&p1)), expected(BASIC, 1));
}

#[test]
fn corrupt_middle_is_an_error_naming_file_and_byte() {
    let fixture = fixtures().join("corrupt-middle");
    // On disk: exactly one batch per partition fails its CRC, and intact
    // batches follow it.
    for (segment, at) in [(CORRUPT_P0_SEGMENT, CORRUPT_P0_AT), (CORRUPT_P1_SEGMENT, CORRUPT_P1_AT)] {
        let (batches, trailing) = raw_batches(&fixture.join(segment));
        assert_eq!(trailing, 0);
        let damaged: Vec<u64> = batches.iter().filter(|b| !b.crc_ok).map(|b| b.position).collect();
        assert_eq!(damaged, [at], "{segment}: the damaged batch");
        assert!(batches.last().unwrap().position > at, "{segment}: intact batches follow the damage");
    }
    assert!(fixture.join("events/0/head").exists(), "partition 0 keeps its head");
    assert!(!fixture.join("events/1/head").exists(), "partition 1 has no head");

    let dir = copy_of("corrupt-middle");
    let log = Log::open(dir.path()).unwrap();
    let events = log.stream("events").unwrap();

    // Partition 1, no head: recovery scans the segment, finds intact data
    // after the damage, and refuses to open it rather than truncate.
    let p1_segment = dir.path().join(CORRUPT_P1_SEGMENT);
    match events.partition(1) {
        Err(LogError::Corrupt { file, position, reason }) => {
            assert_eq!(file, p1_segment);
            assert_eq!(position, CORRUPT_P1_AT);
            assert!(reason.contains("CRC mismatch"), "{reason}");
            assert!(reason.contains("not a torn tail"), "{reason}");
        }
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("damage followed by intact data was accepted"),
    }
    assert_eq!(
        std::fs::read(&p1_segment).unwrap(),
        std::fs::read(fixture.join(CORRUPT_P1_SEGMENT)).unwrap(),
        "nothing was truncated"
    );

    // Partition 0, head kept: the damage is in a segment sealed before the
    // recovery point, so it opens, and reading reports the damaged batch
    // instead of skipping it.
    let p0 = events.partition(0).unwrap();
    assert_eq!(p0.recovery_report(), Default::default());
    let want = expected(BASIC, 0);
    let (served, error) = read_batch_by_batch(&p0, 0);
    assert_eq!(served, want[..CORRUPT_P0_OFFSET as usize], "everything before the damaged batch is served");
    let p0_segment = dir.path().join(CORRUPT_P0_SEGMENT);
    let assert_names_damage = |error: Option<LogError>| match error {
        Some(LogError::Corrupt { file, position, reason }) => {
            assert_eq!(file, p0_segment);
            assert_eq!(position, CORRUPT_P0_AT);
            assert!(reason.contains("CRC mismatch"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    };
    assert_names_damage(error);
    // A large read that includes the damaged batch fails the same way.
    assert_names_damage(PartitionReader::new(p0.clone(), 0).poll(1 << 20).err());
    // Data in later segments stays readable by seeking past the damage.
    let next_segment = BASIC_SEGMENTS[0][1];
    let (rest, error) = read_batch_by_batch(&p0, next_segment);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(rest, want[next_segment as usize..]);
}

// ---------------------------------------------------------------------------
// The generator.
// ---------------------------------------------------------------------------

fn append_all(log: &Log, stream: &str, batches: &[Batch]) {
    let stream = log.stream(stream).unwrap();
    for batch in batches {
        let records: Vec<Record<'_>> = batch
            .messages
            .iter()
            .map(|m| Record { key: m.key, value: m.value, timestamp: Some(m.timestamp), headers: m.headers })
            .collect();
        let at = stream.append(batch.partition, &records).unwrap();
        let first = batch.messages[0].offset;
        let last = batch.messages[batch.messages.len() - 1].offset;
        assert_eq!((at.base_offset, at.last_offset), (first, last), "offsets of the batch starting at {first}");
    }
}

/// Zeroes the boot id in a head file (40 bytes at 128, see src/head.rs), so
/// that every machine, including the one that wrote it, opens the fixture as
/// after a reboot: the path every user of old data takes.
fn forget_boot_id(head: &Path) {
    let mut bytes = std::fs::read(head).unwrap();
    assert_eq!(&bytes[0..8], b"GRGRHEAD");
    bytes[128..168].fill(0);
    std::fs::write(head, bytes).unwrap();
}

/// Flips one bit (0x20: the case of a letter) of the byte where `needle`
/// starts in `file`; returns the position of the batch holding it.
fn flip_bit_at(file: &Path, needle: &[u8]) -> u64 {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("needle in the segment");
    let (batches, _) = raw_batches(file);
    let batch = batches.iter().find(|b| b.position <= at as u64 && (at as u64) < b.position + b.len).unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(file, bytes).unwrap();
    batch.position
}

/// Prints every batch of every segment under `dir` (for the README).
fn print_layout(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries.into_iter().rev() {
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "log") {
                println!("{}", path.strip_prefix(dir).unwrap().display());
                for b in raw_batches(&path).0 {
                    println!(
                        "  byte {:5}: offsets {}..={} ({} bytes)",
                        b.position, b.base_offset, b.last_offset, b.len
                    );
                }
            }
        }
    }
}

/// Writes the v1 fixtures with the current public API.
///
/// `GREGOR_LOG_WRITE_FIXTURES=1 cargo test -p gregor-log --test fixtures -- --ignored write_fixtures`
/// writes `tests/fixtures/v1`, refusing if it exists. Without the variable it
/// writes to a temporary directory and only runs its own checks.
#[test]
#[ignore = "writes the fixtures; see tests/fixtures/README.md"]
fn write_fixtures() {
    let tmp = tempfile::tempdir().unwrap();
    let out = if std::env::var_os("GREGOR_LOG_WRITE_FIXTURES").is_some() {
        let out = fixtures();
        assert!(
            !out.exists(),
            "{} exists: never regenerate a released format version (see tests/fixtures/README.md)",
            out.display()
        );
        out
    } else {
        tmp.path().join("v1")
    };

    // basic
    let basic = out.join("basic");
    {
        let log = Log::open(&basic).unwrap();
        log.create_stream("events", basic_config()).unwrap();
        append_all(&log, "events", BASIC);
    }
    print_layout(&basic);
    for (p, bases) in BASIC_SEGMENTS.iter().enumerate() {
        forget_boot_id(&basic.join(format!("events/{p}/head")));
        assert_eq!(segment_bases(&basic.join(format!("events/{p}"))), *bases);
    }

    // compacted
    let compacted = out.join("compacted");
    {
        let log = Log::open(&compacted).unwrap();
        log.create_stream("profiles", compacted_config()).unwrap();
        append_all(&log, "profiles", COMPACTED_WRITES);
        let outcome = log.stream("profiles").unwrap().partition(0).unwrap().compact(COMPACTED_AT, true).unwrap();
        println!("compaction: {outcome:?}");
        append_all(&log, "profiles", COMPACTED_LATER);
        let offsets: Vec<u64> =
            common::read_all(&log.stream("profiles").unwrap().partition(0).unwrap()).iter().map(|m| m.offset).collect();
        assert_eq!(offsets, COMPACTED_SURVIVORS);
    }
    print_layout(&compacted);
    forget_boot_id(&compacted.join("profiles/0/head"));
    assert_eq!(segment_bases(&compacted.join("profiles/0")), COMPACTED_SEGMENTS);

    // torn-tail: basic, without heads, the last batch of partition 0 cut in half.
    let torn = out.join("torn-tail");
    copy_dir(&basic, &torn);
    for p in 0..2 {
        std::fs::remove_file(torn.join(format!("events/{p}/head"))).unwrap();
    }
    let segment = torn.join(TORN_SEGMENT);
    let (batches, _) = raw_batches(&segment);
    let last = batches.last().unwrap();
    assert_eq!((last.base_offset, last.position), (TORN_OFFSET, TORN_AT));
    std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(last.position + last.len / 2).unwrap();

    // corrupt-middle: basic with one bit flipped in a value in each partition;
    // partition 1 also loses its head.
    let corrupt = out.join("corrupt-middle");
    copy_dir(&basic, &corrupt);
    let at = flip_bit_at(&corrupt.join(CORRUPT_P0_SEGMENT), b"upgraded: plan=free -> plan=pro");
    assert_eq!(at, CORRUPT_P0_AT);
    std::fs::remove_file(corrupt.join("events/1/head")).unwrap();
    let at = flip_bit_at(&corrupt.join(CORRUPT_P1_SEGMENT), b"health check");
    assert_eq!(at, CORRUPT_P1_AT);

    println!("wrote the fixtures to {}", out.display());
}
