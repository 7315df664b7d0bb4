//! Segment files and their sparse index.
//!
//! A partition is a directory of segments `<base offset, 20 digits>.log`, each
//! holding whole batches back to back, and beside each an `.index` of 16-byte
//! entries `(offset - base: u32, byte position: u32, max timestamp of all
//! earlier batches in the segment: i64)`, one per `index_interval_bytes` of
//! data. The index is an accelerator only: it is checked against the data it
//! points to and rebuilt from the segment whenever it is missing or wrong.
//!
//! This module reads and scans; it never decides what to truncate or delete.

use crate::batch::{BatchHeader, FormatError};
use crate::error::{IoContext, LogError, Result};
use bytes::Bytes;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Size of one index entry.
pub(crate) const INDEX_ENTRY_LEN: usize = 16;

/// File name of the segment starting at `base`.
pub(crate) fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// File name of the index of the segment starting at `base`.
pub(crate) fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

/// Base offsets of the segments in `dir`, ascending.
pub(crate) fn list_bases(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).context(|| format!("listing {}", dir.display()))? {
        let entry = entry.context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".log")
            && stem.len() == 20
            && let Ok(base) = stem.parse::<u64>()
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// One sparse index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Offset of the indexed batch's first record slot, relative to the segment base.
    pub rel_offset: u32,
    /// Byte position of the batch.
    pub position: u32,
    /// Largest timestamp of all batches before this one in the segment.
    pub max_ts_before: i64,
}

impl IndexEntry {
    pub fn encode(&self) -> [u8; INDEX_ENTRY_LEN] {
        let mut b = [0u8; INDEX_ENTRY_LEN];
        b[0..4].copy_from_slice(&self.rel_offset.to_le_bytes());
        b[4..8].copy_from_slice(&self.position.to_le_bytes());
        b[8..16].copy_from_slice(&self.max_ts_before.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> IndexEntry {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[8..16]);
        IndexEntry {
            rel_offset: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            position: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            max_ts_before: i64::from_le_bytes(ts),
        }
    }
}

/// An open segment, shared by all readers of the partition in this process.
pub(crate) struct Segment {
    pub base: u64,
    pub path: PathBuf,
    pub file: File,
    /// The index, opened with the segment so both always come from the same
    /// generation of files (compaction replaces them by rename).
    index_file: Option<File>,
    index: Mutex<IndexCache>,
    /// The file mapped for reading (see [`Segment::mapped`]).
    map: Mutex<MapState>,
}

#[derive(Default)]
struct MapState {
    bytes: Option<Bytes>,
    /// The start of the mapping up to here was released ([`release_below`]).
    released: u64,
}

/// Read bytes are released in steps of this many (a multiple of the page size).
const RELEASE_CHUNK: u64 = 4 << 20;

/// Bytes just below the reader's position stay mapped: messages buffered
/// in the run loop point there.
const RELEASE_SLACK: u64 = 4 << 20;

/// The start of a mapping to release, from `released` to a chunk boundary
/// at least [`RELEASE_SLACK`] below the read position; `None` until a whole
/// chunk is due.
fn release_range(read_pos: u64, released: u64, mapped_len: u64) -> Option<std::ops::Range<u64>> {
    let to = read_pos.saturating_sub(RELEASE_SLACK).min(mapped_len) / RELEASE_CHUNK * RELEASE_CHUNK;
    (to >= released.saturating_add(RELEASE_CHUNK)).then_some(released..to)
}

/// Drops this process's page-table entries for the mapped bytes well below
/// `read_pos`, a chunk at a time (Linux `MADV_DONTNEED`). Without this,
/// unmapping a read 128 MB segment tore down 32,000 entries at once: 5-20 ms
/// in the reading thread, for every partition rolling at about the same
/// time. The file's pages stay in the page cache, and a message still held
/// from a released range reads the same bytes (the mapping is shared and
/// read-only, its bytes never change; touching them maps them again).
fn release_below(map: &mut MapState, read_pos: u64) {
    let MapState { bytes: Some(bytes), released } = map else { return };
    let Some(range) = release_range(read_pos, *released, bytes.len() as u64) else { return };
    #[cfg(target_os = "linux")]
    // SAFETY: the range lies inside the mapping, which `bytes` keeps
    // alive; it starts at the mapping's (page-aligned) start and the
    // range is a multiple of the page size. The mapping is of a file,
    // shared and read-only, and its bytes never change (see `mapped`),
    // so every later read of the range sees the same bytes.
    unsafe {
        libc::madvise(
            bytes.as_ptr().add(range.start as usize) as *mut libc::c_void,
            (range.end - range.start) as usize,
            libc::MADV_DONTNEED,
        );
    }
    *released = range.end;
}

/// A read-only mapping of a segment file, owned by the `Bytes` handed out.
struct Mapping(memmap2::Mmap);

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Default)]
struct IndexCache {
    entries: Vec<IndexEntry>,
    /// Bytes of the index file already read (the file only grows, except when
    /// rebuilt, which changes the segment generation and so this cache).
    bytes_read: u64,
    /// Largest timestamp and last offset of a sealed segment, computed once.
    sealed_summary: Option<(i64, Option<u64>)>,
}

impl Segment {
    /// Opens the segment starting at `base` in `dir`. `Ok(None)` if it no
    /// longer exists (retention or compaction removed it meanwhile).
    pub fn open(dir: &Path, base: u64) -> Result<Option<Segment>> {
        let path = log_path(dir, base);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context(|| format!("opening {}", path.display())),
        };
        let index_file = File::open(index_path(dir, base)).ok();
        Ok(Some(Segment {
            base,
            path,
            file,
            index_file,
            index: Mutex::new(IndexCache::default()),
            map: Mutex::new(MapState::default()),
        }))
    }

    /// The segment's bytes up to at least `end`, mapped from the file (no
    /// copy; slices of it stay valid as long as they are held). The mapping
    /// covers `reserve` bytes when that is more, so a growing active segment
    /// is mapped again only when it outgrows it.
    ///
    /// Only bytes below the partition's published end may be read from it
    /// (the caller's `end`): they are written before they are published and
    /// never changed or truncated afterwards (recovery cuts only unpublished
    /// bytes; compaction and retention replace or delete whole files, which
    /// a mapping keeps alive).
    ///
    /// A reader at `read_pos` also releases what it read well before
    /// ([`release_below`]), under the same lock.
    pub fn mapped(&self, end: u64, reserve: u64, read_pos: u64) -> Result<Bytes> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = map.bytes.clone()
            && m.len() as u64 >= end
        {
            release_below(&mut map, read_pos);
            return Ok(m);
        }
        let len = end.max(reserve);
        let len = usize::try_from(len).map_err(|_| LogError::Io {
            context: format!("mapping {}", self.path.display()),
            source: std::io::Error::other("the segment is larger than the address space"),
        })?;
        // SAFETY: the mapped bytes that are read never change while mapped
        // (see above), and pages past the file's end are never touched.
        let mmap = unsafe { memmap2::MmapOptions::new().len(len).map(&self.file) }
            .context(|| format!("mapping {}", self.path.display()))?;
        let _ = mmap.advise(memmap2::Advice::Sequential);
        let bytes = Bytes::from_owner(Mapping(mmap));
        *map = MapState { bytes: Some(bytes.clone()), released: 0 };
        release_below(&mut map, read_pos);
        Ok(bytes)
    }

    /// Current size of this segment's file.
    pub fn len(&self) -> Result<u64> {
        crate::fsutil::file_len(&self.file, &self.path)
    }

    /// The byte position to start scanning from to find `offset`, using the
    /// index entries that point below `valid_end`.
    pub fn scan_start_for_offset(&self, offset: u64, valid_end: u64) -> u64 {
        let rel = offset.saturating_sub(self.base).min(u64::from(u32::MAX)) as u32;
        self.with_index(valid_end, |entries| {
            let i = entries.partition_point(|e| e.rel_offset <= rel);
            if i == 0 { 0 } else { u64::from(entries[i - 1].position) }
        })
    }

    /// The byte position to start scanning from to find the first record with
    /// a timestamp at or after `ts`.
    pub fn scan_start_for_time(&self, ts: i64, valid_end: u64) -> u64 {
        self.with_index(valid_end, |entries| {
            let i = entries.partition_point(|e| e.max_ts_before < ts);
            if i == 0 { 0 } else { u64::from(entries[i - 1].position) }
        })
    }

    /// Largest timestamp in this (sealed) segment, `i64::MIN` if empty.
    pub fn sealed_max_timestamp(&self) -> Result<i64> {
        Ok(self.sealed_summary()?.0)
    }

    /// Offset of the last record in this (sealed) segment, `None` if empty.
    pub fn sealed_last_offset(&self) -> Result<Option<u64>> {
        Ok(self.sealed_summary()?.1)
    }

    /// Scans the tail of a sealed segment from its last index entry (from the
    /// start if that entry turns out not to point at an intact batch).
    fn sealed_summary(&self) -> Result<(i64, Option<u64>)> {
        if let Some(summary) = self.lock_index().sealed_summary {
            return Ok(summary);
        }
        let end = self.len()?;
        let hint = self.with_index(end, |e| e.last().map(|e| (u64::from(e.position), e.max_ts_before)));
        for (start, max_before) in hint.into_iter().chain([(0, i64::MIN)]) {
            let mut scan = BatchScanner::new(&self.file, &self.path, start, end);
            let (mut max_ts, mut last) = (max_before, None);
            let fault = loop {
                match scan.next_batch_or_fault(true)? {
                    Ok(Some((_, header, _))) => {
                        max_ts = max_ts.max(header.max_timestamp);
                        last = Some(header.last_offset());
                    }
                    Ok(None) => break None,
                    Err(fault) => break Some(fault),
                }
            };
            match fault {
                None => {
                    self.lock_index().sealed_summary = Some((max_ts, last));
                    return Ok((max_ts, last));
                }
                Some(fault) if start == 0 => {
                    return Err(LogError::Corrupt {
                        file: self.path.clone(),
                        position: fault.position,
                        reason: fault.error.to_string(),
                    });
                }
                Some(_) => {} // a stale index entry: rescan from the start
            }
        }
        Ok((i64::MIN, None))
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, IndexCache> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_index<T>(&self, valid_end: u64, f: impl FnOnce(&[IndexEntry]) -> T) -> T {
        let mut cache = self.lock_index();
        self.refresh_index(&mut cache);
        let n = cache.entries.partition_point(|e| u64::from(e.position) < valid_end);
        f(&cache.entries[..n])
    }

    /// Reads index entries appended since the last look. An unreadable or
    /// inconsistent index is ignored (scans start earlier; never wrong).
    fn refresh_index(&self, cache: &mut IndexCache) {
        let Some(file) = &self.index_file else {
            return;
        };
        let Ok(len) = file.metadata().map(|m| m.len()) else {
            return;
        };
        let len = len - len % INDEX_ENTRY_LEN as u64;
        if len <= cache.bytes_read {
            return;
        }
        let mut buf = vec![0u8; (len - cache.bytes_read) as usize];
        if file.read_exact_at(&mut buf, cache.bytes_read).is_err() {
            return;
        }
        for chunk in buf.chunks_exact(INDEX_ENTRY_LEN) {
            let e = IndexEntry::decode(chunk);
            let ordered = cache.entries.last().is_none_or(|l| {
                e.rel_offset > l.rel_offset && e.position > l.position && e.max_ts_before >= l.max_ts_before
            });
            if !ordered {
                break; // stop at the first inconsistent entry: the rest is not trusted
            }
            cache.entries.push(e);
        }
        cache.bytes_read = len;
    }
}

/// Scans whole batches of a segment sequentially through a large buffer.
pub(crate) struct BatchScanner<'a> {
    file: &'a File,
    path: &'a Path,
    /// File position of `buf[0]`.
    buf_pos: u64,
    buf: Vec<u8>,
    /// Position of the next batch.
    pos: u64,
    end: u64,
}

/// A batch found by a scan: its byte position, header and bytes.
pub(crate) type ScannedBatch<'b> = (u64, BatchHeader, &'b [u8]);

/// Where and why a scan stopped on bad bytes.
#[derive(Debug)]
pub(crate) struct ScanFault {
    pub position: u64,
    pub error: FormatError,
}

impl<'a> BatchScanner<'a> {
    const CHUNK: usize = 1 << 20;

    /// Scans `file` from byte `start` up to byte `end`.
    pub fn new(file: &'a File, path: &'a Path, start: u64, end: u64) -> Self {
        BatchScanner { file, path, buf_pos: start, buf: Vec::new(), pos: start, end }
    }

    /// The next batch, `Ok(None)` at `end`. Bad bytes give a `Corrupt` error;
    /// use [`Self::next_batch_or_fault`] to handle them yourself.
    pub fn next_batch(&mut self, verify_crc: bool) -> Result<Option<ScannedBatch<'_>>> {
        let path = self.path;
        match self.next_batch_or_fault(verify_crc)? {
            Ok(found) => Ok(found),
            Err(fault) => Err(LogError::Corrupt {
                file: path.to_owned(),
                position: fault.position,
                reason: fault.error.to_string(),
            }),
        }
    }

    /// The next batch; I/O errors are the outer `Err`, bad bytes the inner.
    pub fn next_batch_or_fault(
        &mut self,
        verify_crc: bool,
    ) -> Result<std::result::Result<Option<ScannedBatch<'_>>, ScanFault>> {
        if self.pos >= self.end {
            return Ok(Ok(None));
        }
        let fault = |position, error| Ok(Err(ScanFault { position, error }));
        let remaining = self.end - self.pos;
        if remaining < crate::batch::PREFIX_LEN as u64 {
            return fault(self.pos, FormatError::Incomplete { needed: crate::batch::PREFIX_LEN });
        }
        self.fill(crate::batch::PREFIX_LEN)?;
        let at = (self.pos - self.buf_pos) as usize;
        let total = match BatchHeader::total_len_from_prefix(&self.buf[at..]) {
            Ok(t) => t,
            Err(e) => return fault(self.pos, e),
        };
        if total as u64 > remaining {
            return fault(self.pos, FormatError::Incomplete { needed: total });
        }
        self.fill(total)?;
        let at = (self.pos - self.buf_pos) as usize;
        let bytes = &self.buf[at..at + total];
        let parsed = if verify_crc { BatchHeader::parse_verified(bytes) } else { BatchHeader::parse(bytes) };
        match parsed {
            Ok(header) => {
                let position = self.pos;
                self.pos += total as u64;
                Ok(Ok(Some((position, header, bytes))))
            }
            Err(e) => fault(self.pos, e),
        }
    }

    /// Ensures `buf` holds `need` bytes from `pos`.
    fn fill(&mut self, need: usize) -> Result<()> {
        let have_from = self.pos - self.buf_pos;
        if have_from + need as u64 <= self.buf.len() as u64 {
            return Ok(());
        }
        let want = need.max(Self::CHUNK).min((self.end - self.pos) as usize).max(need);
        self.buf.resize(want, 0);
        crate::fsutil::read_exact_at(self.file, &mut self.buf, self.pos, self.path)?;
        self.buf_pos = self.pos;
        Ok(())
    }
}

/// Writes a fresh index (to `index_out`) for a whole segment by scanning it; returns the
/// position of the last index entry and the segment's largest timestamp.
pub(crate) fn rebuild_index(
    base: u64,
    file: &File,
    path: &Path,
    end: u64,
    interval: u32,
    index_out: &Path,
) -> Result<(u64, i64)> {
    let mut out = Vec::new();
    let mut last_pos = crate::head::NO_INDEX;
    let mut max_ts = i64::MIN;
    let mut scan = BatchScanner::new(file, path, 0, end);
    while let Some((pos, header, _)) = scan.next_batch(false)? {
        if last_pos == crate::head::NO_INDEX || pos - last_pos >= u64::from(interval) {
            let e = IndexEntry {
                rel_offset: (header.base_offset - base) as u32,
                position: pos as u32,
                max_ts_before: max_ts,
            };
            out.extend_from_slice(&e.encode());
            last_pos = pos;
        }
        max_ts = max_ts.max(header.max_timestamp);
    }
    let tmp = index_out.with_extension("tmp");
    crate::fsutil::write_durably(&tmp, &out)?;
    std::fs::rename(&tmp, index_out).context(|| format!("renaming {} into place", tmp.display()))?;
    Ok((last_pos, max_ts))
}

#[cfg(test)]
mod tests {
    use super::{RELEASE_CHUNK, RELEASE_SLACK, release_range};

    #[test]
    fn read_bytes_are_released_a_chunk_at_a_time_behind_a_slack() {
        let (chunk, slack) = (RELEASE_CHUNK, RELEASE_SLACK);
        let mapped = 128 << 20;
        // Nothing until a whole chunk lies below the slack.
        assert_eq!(release_range(0, 0, mapped), None);
        assert_eq!(release_range(slack + chunk - 1, 0, mapped), None);
        assert_eq!(release_range(slack + chunk, 0, mapped), Some(0..chunk));
        // Then from where the last release ended, to a chunk boundary.
        assert_eq!(release_range(slack + 2 * chunk + 5, chunk, mapped), Some(chunk..2 * chunk));
        assert_eq!(release_range(slack + 2 * chunk - 1, chunk, mapped), None);
        // A read position past the mapping (a remapped active segment) never
        // releases past the mapping's end.
        assert_eq!(release_range(u64::MAX, 0, 3 * chunk + 10), Some(0..3 * chunk));
        // A reader that went back (seek) releases nothing.
        assert_eq!(release_range(0, 8 * chunk, mapped), None);
    }
}
