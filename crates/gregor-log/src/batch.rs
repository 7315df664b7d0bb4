//! The on-disk record-batch format: encoding, CRC32C, and total decoding.
//!
//! A batch is the unit of append, fsync, CRC and replication-free durability.
//! All integers are little-endian. Layout (offsets in bytes):
//!
//! ```text
//!  0  base_offset        u64   offset of the first record slot in the batch
//!  8  batch_len          u32   bytes that follow this field (batch = 12 + batch_len)
//! 12  magic              u8    format version: 1, or 2 for a transactional batch
//! 13  attributes         u8    0x20: a control batch (version 2 only); other bits 0
//! 14  reserved           u16   0
//! 16  crc                u32   CRC32C of bytes 20.. then of bytes 0..8 and 12..16
//! 20  last_offset_delta  u32
//! 24  first_timestamp    i64   ms since the epoch
//! 32  max_timestamp      i64
//! 40  record_count       u32
//! version 2 only:
//! 44  producer_id        u64   the transactional producer
//! 52  producer_epoch     u32   its epoch (a successor has a larger one)
//! 56  transaction        u32   the producer's transaction number in that epoch
//! 44 (60 in version 2): records: length varint, then ts_delta (zig-zag),
//!     offset_delta, key_len (zig-zag, -1 = none), key, value_len (zig-zag,
//!     -1 = tombstone), value, header_count, then per header: name_len, name
//!     (UTF-8), value_len, value
//! ```
//!
//! Non-transactional batches are written in version 1, so logs and readers
//! that never use transactions see the format they always had. A control
//! batch holds one record whose key is a [`Marker`] byte: it ends the
//! transaction of its stamp in this partition (see `crate::txn`).
//!
//! Offsets are per record (`base_offset + offset_delta`), so compaction can drop
//! records and keep every survivor's offset. The CRC covers the base offset too,
//! so a damaged offset is caught like damaged data.
//!
//! This module is pure: it never does I/O, and decoding arbitrary bytes never
//! panics (it is property-tested with random damage).

use crate::varint;

/// Size of the fixed batch header (version 1).
pub const HEADER_LEN: usize = 44;
/// Size of a transactional (version 2) batch header.
pub const TXN_HEADER_LEN: usize = 60;
/// Bytes before `batch_len` ends: the length prefix needed to size a batch.
pub const PREFIX_LEN: usize = 12;
/// The format version of non-transactional batches.
pub const MAGIC: u8 = 1;
/// The format version of transactional batches (data and control).
pub const MAGIC_TXN: u8 = 2;
/// The attribute bit of a control batch.
const ATTR_CONTROL: u8 = 0x20;

/// Which transaction a transactional batch belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnStamp {
    /// The transactional producer.
    pub producer_id: u64,
    /// Its epoch: bumped when a successor takes the producer over.
    pub epoch: u32,
    /// The transaction's number within the epoch.
    pub transaction: u32,
}

/// What a control batch says about its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Marker {
    /// The transaction's records are visible to read-committed readers.
    Commit,
    /// The transaction's records are never visible to them.
    Abort,
}

impl Marker {
    fn byte(self) -> u8 {
        match self {
            Marker::Commit => b'C',
            Marker::Abort => b'A',
        }
    }

    /// The marker a control record's key encodes.
    pub fn from_key(key: Option<&[u8]>) -> Option<Marker> {
        match key {
            Some(b"C") => Some(Marker::Commit),
            Some(b"A") => Some(Marker::Abort),
            _ => None,
        }
    }
}

/// Why bytes are not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// Fewer bytes than the batch needs: a torn write at the end of a file.
    Incomplete {
        /// Bytes the batch needs in total.
        needed: usize,
    },
    /// Bytes that cannot be a batch (bad magic, impossible length, CRC mismatch,
    /// malformed record).
    Invalid(String),
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::Incomplete { needed } => {
                write!(f, "incomplete batch ({needed} bytes needed)")
            }
            FormatError::Invalid(why) => f.write_str(why),
        }
    }
}

fn invalid(why: impl Into<String>) -> FormatError {
    FormatError::Invalid(why.into())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record slot.
    pub base_offset: u64,
    /// Size of the whole batch in bytes.
    pub total_len: usize,
    /// Stored CRC32C.
    pub crc: u32,
    /// Offset delta of the last record.
    pub last_offset_delta: u32,
    /// Timestamp of the first record.
    pub first_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Number of records.
    pub record_count: u32,
    /// Where the records start (the header's length: 44, or 60 in version 2).
    pub header_len: usize,
    /// The transaction of a version-2 batch.
    pub txn: Option<TxnStamp>,
    /// A control batch (its record is a [`Marker`]).
    pub control: bool,
}

impl BatchHeader {
    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta)
    }

    /// Reads the total batch length from its first 12 bytes.
    pub fn total_len_from_prefix(prefix: &[u8]) -> Result<usize, FormatError> {
        if prefix.len() < PREFIX_LEN {
            return Err(FormatError::Incomplete { needed: PREFIX_LEN });
        }
        let batch_len = u32_at(prefix, 8) as usize;
        if batch_len < HEADER_LEN - PREFIX_LEN {
            return Err(invalid(format!("batch length {batch_len} is shorter than a batch header")));
        }
        Ok(PREFIX_LEN + batch_len)
    }

    /// Parses and sanity-checks the header at the start of `buf` (no CRC check).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, FormatError> {
        let total_len = Self::total_len_from_prefix(buf)?;
        if buf.len() < HEADER_LEN {
            return Err(FormatError::Incomplete { needed: HEADER_LEN.max(total_len) });
        }
        let (header_len, txn, control) = match buf[12] {
            MAGIC => (HEADER_LEN, None, false),
            MAGIC_TXN => {
                if total_len < TXN_HEADER_LEN {
                    return Err(invalid(format!("batch length {total_len} is shorter than a transactional header")));
                }
                if buf.len() < TXN_HEADER_LEN {
                    return Err(FormatError::Incomplete { needed: total_len });
                }
                let stamp =
                    TxnStamp { producer_id: u64_at(buf, 44), epoch: u32_at(buf, 52), transaction: u32_at(buf, 56) };
                (TXN_HEADER_LEN, Some(stamp), buf[13] & ATTR_CONTROL != 0)
            }
            v => {
                return Err(invalid(format!(
                    "unknown batch format version {v} (this gregor reads {MAGIC} and {MAGIC_TXN}; written by a newer gregor?)"
                )));
            }
        };
        let header = BatchHeader {
            base_offset: u64_at(buf, 0),
            total_len,
            crc: u32_at(buf, 16),
            last_offset_delta: u32_at(buf, 20),
            first_timestamp: u64_at(buf, 24) as i64,
            max_timestamp: u64_at(buf, 32) as i64,
            record_count: u32_at(buf, 40),
            header_len,
            txn,
            control,
        };
        if header.record_count == 0 {
            return Err(invalid("batch holds no records"));
        }
        if header.control && header.record_count != 1 {
            return Err(invalid("a control batch holds one record"));
        }
        if header.record_count as usize > total_len - header_len {
            return Err(invalid("record count larger than the batch can hold"));
        }
        if header.base_offset.checked_add(u64::from(header.last_offset_delta)).is_none() {
            return Err(invalid("batch offsets overflow"));
        }
        Ok(header)
    }

    /// Parses the header and checks the CRC of the whole batch in `buf`.
    pub fn parse_verified(buf: &[u8]) -> Result<BatchHeader, FormatError> {
        let header = Self::parse(buf)?;
        if buf.len() < header.total_len {
            return Err(FormatError::Incomplete { needed: header.total_len });
        }
        let computed = crc_of(&buf[..header.total_len]);
        if computed != header.crc {
            return Err(invalid(format!("CRC mismatch (stored {:#010x}, computed {computed:#010x})", header.crc)));
        }
        Ok(header)
    }
}

/// CRC32C of a complete batch, excluding the CRC field itself.
fn crc_of(batch: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&batch[20..]);
    let crc = crc32c::crc32c_append(crc, &batch[0..8]);
    crc32c::crc32c_append(crc, &batch[12..16])
}

/// Writes `base_offset` and the CRC into an encoded batch, making it final.
pub fn seal(batch: &mut [u8], base_offset: u64) {
    batch[0..8].copy_from_slice(&base_offset.to_le_bytes());
    let crc = crc_of(batch);
    batch[16..20].copy_from_slice(&crc.to_le_bytes());
}

/// Builds one batch in a reusable buffer: after the first few batches, encoding
/// allocates nothing.
#[derive(Debug, Default)]
pub struct BatchEncoder {
    buf: Vec<u8>,
    /// The transaction of the batch being built (a version-2 batch).
    txn: Option<TxnStamp>,
    /// The batch is a control batch (see [`Self::begin_control`]).
    control: bool,
    count: u32,
    /// Records without a key (a compacted stream refuses them).
    unkeyed: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    last_offset_delta: u32,
}

impl BatchEncoder {
    /// An empty encoder.
    pub fn new() -> Self {
        let mut e = BatchEncoder::default();
        e.clear();
        e
    }

    /// Forgets the current batch, keeping the buffer's capacity. The next
    /// batch is non-transactional unless [`Self::begin_transaction`] says otherwise.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.buf.resize(HEADER_LEN, 0);
        self.txn = None;
        self.control = false;
        self.count = 0;
        self.unkeyed = 0;
        self.first_timestamp = 0;
        self.max_timestamp = i64::MIN;
        self.last_offset_delta = 0;
    }

    /// Makes the (empty) batch being built a transactional one of `stamp`.
    ///
    /// # Panics
    /// If records were pushed already (the header size would change under them).
    pub fn begin_transaction(&mut self, stamp: TxnStamp) {
        assert!(self.is_empty(), "begin_transaction on a batch that has records");
        self.buf.resize(TXN_HEADER_LEN, 0);
        self.txn = Some(stamp);
    }

    /// Makes the (empty) batch being built the control batch ending
    /// transaction `stamp` with `marker`; push nothing more to it.
    pub fn begin_control(&mut self, stamp: TxnStamp, marker: Marker, timestamp: i64) {
        self.begin_transaction(stamp);
        let key = [marker.byte()];
        self.push(
            0,
            timestamp,
            &crate::Record { key: Some(&key), value: None, timestamp: Some(timestamp), headers: &[] },
        );
        self.control = true;
    }

    /// The transaction of the batch being built, if it is transactional.
    pub fn transaction(&self) -> Option<TxnStamp> {
        self.txn
    }

    /// Records pushed since the last `clear`.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Records pushed without a key.
    pub fn unkeyed(&self) -> u32 {
        self.unkeyed
    }

    /// The newest timestamp pushed (`i64::MIN` when empty).
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Bytes the batch occupies so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no record has been pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn begin_record(&mut self, timestamp: i64, offset_delta: u32, body_len: usize, keyed: bool) {
        self.unkeyed += u32::from(!keyed);
        if self.count == 0 {
            self.first_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.last_offset_delta = offset_delta;
        self.count += 1;
        self.buf.reserve(body_len + 5);
        varint::put_u64(&mut self.buf, body_len as u64);
        varint::put_i64(&mut self.buf, timestamp.wrapping_sub(self.first_timestamp));
        varint::put_u64(&mut self.buf, u64::from(offset_delta));
    }

    fn put_bytes(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            None => varint::put_i64(&mut self.buf, -1),
            Some(b) => {
                varint::put_i64(&mut self.buf, b.len() as i64);
                self.buf.extend_from_slice(b);
            }
        }
    }

    fn body_prefix_len(&self, timestamp: i64, offset_delta: u32, key: Option<&[u8]>, value: Option<&[u8]>) -> usize {
        let first = if self.count == 0 { timestamp } else { self.first_timestamp };
        let opt_len = |b: Option<&[u8]>| b.map_or(1, |b| varint::len_i64(b.len() as i64) + b.len());
        varint::len_i64(timestamp.wrapping_sub(first))
            + varint::len_u64(u64::from(offset_delta))
            + opt_len(key)
            + opt_len(value)
    }

    /// Appends a record. Offset deltas must strictly increase within a batch.
    pub fn push(&mut self, offset_delta: u32, timestamp: i64, record: &crate::Record<'_>) {
        let headers_len: usize = record
            .headers
            .iter()
            .map(|(n, v)| varint::len_u64(n.len() as u64) + n.len() + varint::len_i64(v.len() as i64) + v.len())
            .sum();
        let body_len = self.body_prefix_len(timestamp, offset_delta, record.key, record.value)
            + varint::len_u64(record.headers.len() as u64)
            + headers_len;
        self.begin_record(timestamp, offset_delta, body_len, record.key.is_some());
        self.put_bytes(record.key);
        self.put_bytes(record.value);
        varint::put_u64(&mut self.buf, record.headers.len() as u64);
        for (name, value) in record.headers {
            varint::put_u64(&mut self.buf, name.len() as u64);
            self.buf.extend_from_slice(name.as_bytes());
            self.put_bytes(Some(value));
        }
    }

    /// Appends a record read from another batch, copying its encoded headers
    /// verbatim (used by compaction, which must preserve records exactly).
    pub fn push_decoded(&mut self, offset_delta: u32, record: &RecordRef<'_>) {
        let body_len = self.body_prefix_len(record.timestamp, offset_delta, record.key, record.value)
            + varint::len_u64(u64::from(record.header_count))
            + record.raw_headers.len();
        self.begin_record(record.timestamp, offset_delta, body_len, record.key.is_some());
        self.put_bytes(record.key);
        self.put_bytes(record.value);
        varint::put_u64(&mut self.buf, u64::from(record.header_count));
        self.buf.extend_from_slice(record.raw_headers);
    }

    /// Fills in the header (all but base offset and CRC, see [`seal`]) and
    /// returns the encoded batch.
    pub fn finish(&mut self) -> &mut [u8] {
        let batch_len = (self.buf.len() - PREFIX_LEN) as u32;
        let b = &mut self.buf;
        b[8..12].copy_from_slice(&batch_len.to_le_bytes());
        b[12] = if self.txn.is_some() { MAGIC_TXN } else { MAGIC };
        b[13] = if self.control { ATTR_CONTROL } else { 0 };
        b[14..16].copy_from_slice(&[0, 0]);
        if let Some(t) = self.txn {
            b[44..52].copy_from_slice(&t.producer_id.to_le_bytes());
            b[52..56].copy_from_slice(&t.epoch.to_le_bytes());
            b[56..60].copy_from_slice(&t.transaction.to_le_bytes());
        }
        b[20..24].copy_from_slice(&self.last_offset_delta.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_timestamp.to_le_bytes());
        b[32..40].copy_from_slice(&self.max_timestamp.to_le_bytes());
        b[40..44].copy_from_slice(&self.count.to_le_bytes());
        &mut self.buf
    }
}

/// An unsealed control batch ending transaction `stamp` with `marker`
/// (seal it with its base offset, as any batch).
pub fn control_batch(stamp: TxnStamp, marker: Marker, timestamp: i64) -> Vec<u8> {
    let mut e = BatchEncoder::new();
    e.begin_control(stamp, marker, timestamp);
    e.finish().to_vec()
}

/// A record decoded in place from a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Absolute offset.
    pub offset: u64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Key bytes.
    pub key: Option<&'a [u8]>,
    /// Value bytes, `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// Number of headers.
    pub header_count: u32,
    /// The encoded headers (validated).
    pub raw_headers: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// The record's headers, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let raw = self.raw_headers;
        let mut pos = 0;
        (0..self.header_count).map_while(move |_| read_header(raw, &mut pos))
    }
}

fn read_opt_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = varint::get_i64(buf, pos)?;
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let end = pos.checked_add(len)?;
    let bytes = buf.get(*pos..end)?;
    *pos = end;
    Some(Some(bytes))
}

fn read_header<'a>(buf: &'a [u8], pos: &mut usize) -> Option<(&'a [u8], Option<&'a [u8]>)> {
    let name_len = usize::try_from(varint::get_u64(buf, pos)?).ok()?;
    let end = pos.checked_add(name_len)?;
    let name = buf.get(*pos..end)?;
    std::str::from_utf8(name).ok()?;
    *pos = end;
    Some((name, read_opt_bytes(buf, pos)?))
}

/// Iterates over the records of one complete, CRC-checked batch.
pub struct RecordIter<'a> {
    header: BatchHeader,
    buf: &'a [u8],
    pos: usize,
    index: u32,
    previous_delta: Option<u32>,
}

impl<'a> RecordIter<'a> {
    /// Records of `batch`, whose header is `header`.
    pub fn new(header: BatchHeader, batch: &'a [u8]) -> Self {
        RecordIter { header, buf: &batch[..header.total_len], pos: header.header_len, index: 0, previous_delta: None }
    }

    fn decode_next(&mut self) -> Result<RecordRef<'a>, FormatError> {
        let bad = |what: &str| invalid(format!("malformed record {}: {what}", self.index));
        let len = varint::get_u64(self.buf, &mut self.pos).ok_or_else(|| bad("length"))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| self.pos.checked_add(l))
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| bad("length past the batch end"))?;
        let body = &self.buf[..end];
        let mut pos = self.pos;
        let ts_delta = varint::get_i64(body, &mut pos).ok_or_else(|| bad("timestamp"))?;
        let delta =
            varint::get_u64(body, &mut pos).and_then(|d| u32::try_from(d).ok()).ok_or_else(|| bad("offset delta"))?;
        if self.previous_delta.is_some_and(|p| delta <= p) || delta > self.header.last_offset_delta {
            return Err(bad("offset delta out of order"));
        }
        let key = read_opt_bytes(body, &mut pos).ok_or_else(|| bad("key"))?;
        let value = read_opt_bytes(body, &mut pos).ok_or_else(|| bad("value"))?;
        let header_count =
            varint::get_u64(body, &mut pos).and_then(|c| u32::try_from(c).ok()).ok_or_else(|| bad("header count"))?;
        let headers_start = pos;
        for _ in 0..header_count {
            read_header(body, &mut pos).ok_or_else(|| bad("header"))?;
        }
        if pos != end {
            return Err(bad("trailing bytes"));
        }
        self.pos = end;
        self.index += 1;
        self.previous_delta = Some(delta);
        Ok(RecordRef {
            offset: self.header.base_offset + u64::from(delta),
            timestamp: self.header.first_timestamp.wrapping_add(ts_delta),
            key,
            value,
            header_count,
            raw_headers: &body[headers_start..end],
        })
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordRef<'a>, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index == self.header.record_count {
            if self.pos != self.buf.len() {
                self.index += 1; // report once, then stop
                return Some(Err(invalid("bytes after the last record")));
            }
            return None;
        }
        if self.index > self.header.record_count {
            return None;
        }
        let result = self.decode_next();
        if result.is_err() {
            self.index = self.header.record_count + 1;
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests;
