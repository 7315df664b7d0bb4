//! Reading a partition: a cursor that follows the log as it grows.
//!
//! A `PartitionReader` reads whole batches straight from the segment file's
//! read-only mapping (no copy), checks every batch's CRC, and hands them out
//! as a [`Fetch`] whose messages are slices of the mapping (no allocation per
//! message). It never takes a lock and
//! never sees bytes past the published end. Waiting for new data sleeps on the
//! partition head's futex, so a tailing reader costs nothing while idle and
//! wakes as soon as any process appends.

use crate::batch::{BatchHeader, RecordIter};
use crate::error::{LogError, Result};
use crate::partition::Partition;
use crate::segment::{BatchScanner, Segment};
use crate::{Message, batch};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A batch of messages read from one partition.
pub struct Fetch {
    data: Bytes,
    /// Messages below this offset (earlier in the first batch) are skipped.
    skip_below: u64,
    segment: Option<Arc<Segment>>,
    file_pos: u64,
    next_offset: u64,
}

impl Fetch {
    fn empty(next_offset: u64) -> Fetch {
        Fetch { data: Bytes::new(), skip_below: next_offset, segment: None, file_pos: 0, next_offset }
    }

    /// True when the fetch holds no batches.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Bytes of batch data in the fetch.
    pub fn size_bytes(&self) -> usize {
        self.data.len()
    }

    /// The offset to read next after this fetch.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The messages, in offset order. A message that does not decode (a bug,
    /// since its batch passed the CRC) is an error naming file and position.
    pub fn messages(&self) -> impl Iterator<Item = Result<Message>> + '_ {
        self.records().map(|r| r.map(|r| self.to_message(&r)))
    }

    /// The records in place, in offset order (as [`Self::messages`], without
    /// building a [`Message`]; take what is needed with [`Self::share`]).
    /// Transaction markers are left out; records of aborted or open
    /// transactions are not (read-uncommitted: see [`Self::entries`]).
    pub fn records(&self) -> impl Iterator<Item = Result<batch::RecordRef<'_>>> + '_ {
        self.entries().filter_map(|e| match e {
            Ok(Entry::Record(_, r)) => Some(Ok(r)),
            Ok(Entry::Marker(..)) => None,
            Err(e) => Some(Err(e)),
        })
    }

    /// Records with their transaction, and transaction markers, in offset
    /// order: what a read-committed reader feeds its
    /// [`crate::txn::CommittedFilter`].
    pub fn entries(&self) -> impl Iterator<Item = Result<Entry<'_>>> + '_ {
        let mut at = 0usize;
        let mut current: Option<(usize, Option<batch::TxnStamp>, RecordIter<'_>)> = None;
        let mut failed = false;
        // Offsets only grow: anything at or below the last one served is a
        // duplicate (never expected; a guard against a damaged layout).
        let mut floor = self.skip_below;
        std::iter::from_fn(move || {
            loop {
                if failed {
                    return None;
                }
                if let Some((batch_at, txn, iter)) = &mut current {
                    match iter.next() {
                        Some(Ok(r)) if r.offset < floor => continue,
                        Some(Ok(r)) => {
                            floor = r.offset + 1;
                            return Some(Ok(Entry::Record(*txn, r)));
                        }
                        Some(Err(e)) => {
                            failed = true;
                            return Some(Err(self.corrupt(*batch_at, e.to_string())));
                        }
                        None => current = None,
                    }
                }
                if at >= self.data.len() {
                    return None;
                }
                match BatchHeader::parse(&self.data[at..]) {
                    Ok(h) if h.control => {
                        let batch_at = at;
                        at += h.total_len;
                        if h.base_offset < floor {
                            continue; // before where this read starts
                        }
                        floor = h.base_offset + 1;
                        let marker = RecordIter::new(h, &self.data[batch_at..])
                            .next()
                            .and_then(|r| r.ok())
                            .and_then(|r| batch::Marker::from_key(r.key));
                        match (h.txn, marker) {
                            (Some(stamp), Some(m)) => return Some(Ok(Entry::Marker(stamp, m))),
                            _ => {
                                failed = true;
                                return Some(Err(self.corrupt(batch_at, "a control batch without a marker".into())));
                            }
                        }
                    }
                    Ok(h) => {
                        current = Some((at, h.txn, RecordIter::new(h, &self.data[at..])));
                        at += h.total_len;
                    }
                    Err(e) => {
                        failed = true;
                        return Some(Err(self.corrupt(at, e.to_string())));
                    }
                }
            }
        })
    }

    /// A part of a record of this fetch (its key, say) as a shared buffer: no copy.
    pub fn share(&self, part: &[u8]) -> Bytes {
        self.data.slice_ref(part)
    }

    /// A record of this fetch as a [`Message`] (its buffers shared, not copied).
    pub fn message(&self, r: &batch::RecordRef<'_>) -> Message {
        self.to_message(r)
    }

    fn to_message(&self, r: &batch::RecordRef<'_>) -> Message {
        let slice = |b: &[u8]| self.data.slice_ref(b);
        Message {
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.map(slice),
            value: r.value.map(slice),
            headers: r.headers().map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), v.map(slice))).collect(),
        }
    }

    fn corrupt(&self, at: usize, reason: String) -> LogError {
        LogError::Corrupt {
            file: self.segment.as_ref().map(|s| s.path.clone()).unwrap_or_default(),
            position: self.file_pos + at as u64,
            reason,
        }
    }
}

/// One entry of a [`Fetch`]: a record (with its transaction, if it has
/// one) or the marker that ends a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A record.
    Record(Option<batch::TxnStamp>, batch::RecordRef<'a>),
    /// A transaction marker.
    Marker(batch::TxnStamp, batch::Marker),
}

struct Cursor {
    segment: Arc<Segment>,
    pos: u64,
}

/// A cursor over one partition, starting at an offset and following appends.
pub struct PartitionReader {
    partition: Arc<Partition>,
    next_offset: u64,
    cursor: Option<Cursor>,
    last_seq: u32,
}

impl PartitionReader {
    /// A reader of `partition` whose first message will be the one at `offset`
    /// (or the next one after it, if compaction removed it).
    pub fn new(partition: Arc<Partition>, offset: u64) -> Self {
        PartitionReader { partition, next_offset: offset, cursor: None, last_seq: 0 }
    }

    /// The offset of the next message this reader returns.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The partition read.
    pub fn partition(&self) -> &Arc<Partition> {
        &self.partition
    }

    /// Moves the reader to `offset`.
    pub fn seek(&mut self, offset: u64) {
        self.next_offset = offset;
        self.cursor = None;
    }

    /// Reads whole batches starting at the next offset, about `max_bytes` of
    /// them (at least one batch if any data is there), without waiting.
    ///
    /// # Errors
    /// [`LogError::OffsetOutOfRange`] if the next offset was deleted by
    /// retention or is past the end; [`LogError::Corrupt`] on damaged data.
    pub fn poll(&mut self, max_bytes: usize) -> Result<Fetch> {
        for _ in 0..10_000 {
            let snap = self.partition.snapshot()?;
            self.last_seq = snap.seq;
            if self.next_offset < snap.log_start || self.next_offset > snap.next_offset {
                return Err(self.partition.out_of_range(self.next_offset, &snap));
            }
            if self.next_offset == snap.next_offset {
                return Ok(Fetch::empty(self.next_offset));
            }
            let cursor = match self.cursor.take() {
                Some(c) => c,
                None => match self.locate(&snap)? {
                    Some(c) => c,
                    None => continue,
                },
            };
            let end = self.partition.readable_end(&cursor.segment, &snap)?;
            if cursor.pos >= end {
                if cursor.segment.base == snap.active_base {
                    self.cursor = Some(cursor);
                    return Ok(Fetch::empty(self.next_offset));
                }
                self.cursor = self.next_segment(&cursor.segment, &snap)?;
                continue;
            }
            // The active segment is mapped to its maximum size at once, so
            // following its growth does not map it again.
            let reserve = if cursor.segment.base == snap.active_base { self.partition.config.segment_bytes } else { 0 };
            let (data, last_offset) = read_batches(&cursor.segment, cursor.pos, end, max_bytes, reserve)?;
            let fetch = Fetch {
                skip_below: self.next_offset,
                segment: Some(cursor.segment.clone()),
                file_pos: cursor.pos,
                next_offset: self.next_offset.max(last_offset + 1),
                data,
            };
            self.cursor = Some(Cursor { pos: cursor.pos + fetch.data.len() as u64, segment: cursor.segment });
            if last_offset < self.next_offset {
                continue; // only messages before our offset (e.g. left by compaction)
            }
            self.next_offset = fetch.next_offset;
            return Ok(fetch);
        }
        Err(LogError::Io {
            context: format!("reading {}[{}]", self.partition.stream(), self.partition.id()),
            source: std::io::Error::other("the segment layout kept changing while reading"),
        })
    }

    /// Like [`Self::poll`], but waits up to `timeout` for data to arrive.
    pub fn poll_timeout(&mut self, max_bytes: usize, timeout: Duration) -> Result<Fetch> {
        let deadline =
            Instant::now().checked_add(timeout).unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365));
        loop {
            let fetch = self.poll(max_bytes)?;
            let now = Instant::now();
            if !fetch.is_empty() || now >= deadline {
                return Ok(fetch);
            }
            self.partition.head.wait(self.last_seq, deadline - now);
        }
    }

    /// Sleeps until any of `readers` may have new data (a partition changed
    /// since the reader's last poll) or `timeout` passes: one system call for
    /// all of them, woken by appends from any process.
    pub fn wait_any(readers: &[&PartitionReader], timeout: Duration) {
        let heads: Vec<(&crate::head::Head, u32)> = readers.iter().map(|r| (&r.partition.head, r.last_seq)).collect();
        crate::head::wait_any(&heads, timeout);
    }

    /// Finds the segment and byte position of `next_offset`.
    fn locate(&self, snap: &crate::head::Snapshot) -> Result<Option<Cursor>> {
        let set = self.partition.segment_set(snap.segments_gen)?;
        let i = set.list.partition_point(|s| s.base <= self.next_offset).saturating_sub(1);
        let Some(segment) = set.list.get(i).cloned() else {
            return Ok(None);
        };
        let end = self.partition.readable_end(&segment, snap)?;
        let hinted = segment.scan_start_for_offset(self.next_offset, end);
        // A stale index may point anywhere; on any doubt, scan from the start.
        for start in [hinted, 0] {
            let mut scan = BatchScanner::new(&segment.file, &segment.path, start, end);
            let mut first = true;
            loop {
                match scan.next_batch_or_fault(true)? {
                    Ok(Some((pos, h, _))) => {
                        if first && start > 0 && h.base_offset > self.next_offset {
                            break;
                        }
                        first = false;
                        if h.last_offset() >= self.next_offset {
                            return Ok(Some(Cursor { segment, pos }));
                        }
                    }
                    Ok(None) => return Ok(Some(Cursor { segment, pos: end })),
                    Err(fault) if start > 0 => {
                        let _ = fault;
                        break;
                    }
                    Err(fault) => {
                        return Err(LogError::Corrupt {
                            file: segment.path.clone(),
                            position: fault.position,
                            reason: fault.error.to_string(),
                        });
                    }
                }
            }
        }
        Ok(None)
    }

    /// Where to go after finishing a sealed segment. Usually the next segment
    /// by base offset; but compaction may have merged later segments into an
    /// earlier file, so first look the next offset up again.
    fn next_segment(&self, finished: &Segment, snap: &crate::head::Snapshot) -> Result<Option<Cursor>> {
        let mut after = finished.base;
        if let Some(found) = self.locate(snap)? {
            if found.pos < self.partition.readable_end(&found.segment, snap)? {
                return Ok(Some(found));
            }
            after = after.max(found.segment.base);
        }
        let set = self.partition.segment_set(snap.segments_gen)?;
        let i = set.list.partition_point(|s| s.base <= after);
        Ok(set.list.get(i).map(|s| Cursor { segment: s.clone(), pos: 0 }))
    }
}

/// Reads whole, CRC-checked batches from `pos`, about `max_bytes` of them.
/// Returns the bytes and the last offset they contain.
fn read_batches(seg: &Segment, pos: u64, end: u64, max_bytes: usize, reserve: u64) -> Result<(Bytes, u64)> {
    let corrupt =
        |at: usize, reason: String| LogError::Corrupt { file: seg.path.clone(), position: pos + at as u64, reason };
    let map = seg.mapped(end, reserve, pos)?;
    let (start, stop) = (pos as usize, end as usize);
    let avail = &map[start..stop];
    let want = avail.len().min(max_bytes.max(batch::HEADER_LEN));
    let mut at = 0;
    let mut last_offset = None;
    while at < want && avail.len() - at >= batch::PREFIX_LEN {
        let total = BatchHeader::total_len_from_prefix(&avail[at..]).map_err(|e| corrupt(at, e.to_string()))?;
        if at + total > want && at > 0 {
            break; // the next fetch starts with it
        }
        if at + total > avail.len() {
            return Err(corrupt(at, format!("batch of {total} bytes runs past the end of the data")));
        }
        let header = BatchHeader::parse_verified(&avail[at..at + total]).map_err(|e| corrupt(at, e.to_string()))?;
        last_offset = Some(header.last_offset());
        at += total;
    }
    let Some(last_offset) = last_offset else {
        return Err(corrupt(0, "fewer bytes than a batch header before the end of the data".into()));
    };
    Ok((map.slice(start..start + at), last_offset))
}

impl Partition {
    /// The offset of the first message with a timestamp at or after `ts`
    /// (ms since the epoch), or `None` if every message is older.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>> {
        let snap = self.snapshot()?;
        let set = self.segment_set(snap.segments_gen)?;
        for seg in &set.list {
            if seg.base != snap.active_base && seg.sealed_max_timestamp()? < ts {
                continue;
            }
            let end = self.readable_end(seg, &snap)?;
            let mut scan = BatchScanner::new(&seg.file, &seg.path, seg.scan_start_for_time(ts, end), end);
            while let Some((pos, header, bytes)) = scan.next_batch(true)? {
                if header.max_timestamp < ts || header.control {
                    continue;
                }
                for record in RecordIter::new(header, bytes) {
                    let record = record.map_err(|e| LogError::Corrupt {
                        file: seg.path.clone(),
                        position: pos,
                        reason: e.to_string(),
                    })?;
                    if record.timestamp >= ts && record.offset >= snap.log_start {
                        return Ok(Some(record.offset));
                    }
                }
            }
        }
        Ok(None)
    }
}
