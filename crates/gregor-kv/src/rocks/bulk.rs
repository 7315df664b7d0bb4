//! A bulk load (a restore from a changelog, or a large batch of the
//! cache's writes) as sorted runs ingested into RocksDB as SST files,
//! instead of writes through memtables.
//!
//! Writes are copied into an arena; when it holds [`RUN_BYTES`], the run is
//! sorted by key (in Rust: a plain byte comparison, no RocksDB comparator),
//! reduced to the last write of each key, written with an `SstFileWriter`
//! and ingested (moved into the database, newer than everything before).
//! Later runs override earlier ones key by key, as later writes would.
//!
//! This module must never reorder two writes of one key: the sort is
//! stable and the last write of a key wins.

use rocksdb::{DB, IngestExternalFileOptions, Options, SstFileWriter};
use std::path::{Path, PathBuf};

/// Memory per run (per store being restored): keys and values plus their
/// index entries.
pub(crate) const RUN_BYTES: usize = 64 << 20;

/// One write: offsets into the arena; `value: None` deletes. `prefix`:
/// the key's first 16 bytes as two big-endian numbers (zero-padded), which
/// order most keys with one or two integer comparisons.
struct Entry {
    prefix: [u64; 2],
    key: (u32, u32),
    value: Option<(u32, u32)>,
}

fn prefix(key: &[u8]) -> [u64; 2] {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key[..n]);
    let half = |r: std::ops::Range<usize>| b[r].iter().fold(0u64, |n, &x| n << 8 | u64::from(x));
    [half(0..8), half(8..16)]
}

/// The writes of a bulk load not yet ingested.
pub(crate) struct BulkLoad {
    options: Options,
    dir: PathBuf,
    /// File name prefix (restores and the writer thread use their own).
    name: &'static str,
    arena: Vec<u8>,
    entries: Vec<Entry>,
    runs: u64,
    /// [`RUN_BYTES`] (tests use less).
    pub(crate) run_bytes: usize,
}

impl BulkLoad {
    /// `options`: the database's (table format, compression), for the SST
    /// files, written in `dir` as `<name>-<n>.sst` before they are ingested.
    pub(crate) fn new(options: Options, dir: &Path, name: &'static str) -> Self {
        BulkLoad {
            options,
            dir: dir.to_owned(),
            name,
            arena: Vec::new(),
            entries: Vec::new(),
            runs: 0,
            run_bytes: RUN_BYTES,
        }
    }

    /// Writes buffered and not yet ingested.
    pub(crate) fn pending(&self) -> usize {
        self.entries.len()
    }

    /// Buffers a write; a full run is ingested into `db`.
    pub(crate) fn push(&mut self, db: &DB, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let mut at = |bytes: &[u8]| {
            let start = self.arena.len() as u32;
            self.arena.extend_from_slice(bytes);
            (start, bytes.len() as u32)
        };
        let prefix = prefix(key);
        let key = at(key);
        let value = value.map(at);
        self.entries.push(Entry { prefix, key, value });
        let used = self.arena.len() + self.entries.len() * std::mem::size_of::<Entry>();
        if used >= self.run_bytes { self.ingest(db) } else { Ok(()) }
    }

    /// Sorts, writes and ingests what is buffered (nothing if empty).
    pub(crate) fn ingest(&mut self, db: &DB) -> Result<(), String> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let arena = &self.arena;
        let bytes = |(start, len): (u32, u32)| &arena[start as usize..(start + len) as usize];
        // Stable: of two writes of one key, the later stays later.
        self.entries.sort_by(|a, b| a.prefix.cmp(&b.prefix).then_with(|| bytes(a.key).cmp(bytes(b.key))));
        let path = self.dir.join(format!("{}-{}.sst", self.name, self.runs));
        self.runs += 1;
        let mut writer = SstFileWriter::create(&self.options);
        writer.open(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        for (i, e) in self.entries.iter().enumerate() {
            // Equal keys are adjacent, in write order: only the last counts.
            if self.entries.get(i + 1).is_some_and(|next| bytes(next.key) == bytes(e.key)) {
                continue;
            }
            let written = match e.value {
                Some(v) => writer.put(bytes(e.key), bytes(v)),
                None => writer.delete(bytes(e.key)),
            };
            written.map_err(|err| format!("writing {}: {err}", path.display()))?;
        }
        writer.finish().map_err(|e| format!("finishing {}: {e}", path.display()))?;
        reload_page_cache(&path);
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        db.ingest_external_file_opts(&ingest, vec![&path]).map_err(|e| format!("ingesting {}: {e}", path.display()))?;
        // Moved when RocksDB could link it; otherwise it made a copy.
        let _ = std::fs::remove_file(&path);
        self.arena.clear();
        self.entries.clear();
        Ok(())
    }
}

/// Asks the kernel to read `path` back into the page cache. RocksDB's
/// `SstFileWriter` drops a file's pages once it is written (its C API offers
/// no way to keep them), so without this the first reads of an ingested
/// file (bloom filter false positives, keys evicted from the cache) wait for
/// the disk on the task's thread: measured as the latency bench's p99.
/// Best effort and asynchronous (readahead).
#[cfg(target_os = "linux")]
fn reload_page_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    if let Ok(file) = std::fs::File::open(path) {
        // SAFETY: an advisory call on a descriptor this function owns.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
    }
}

#[cfg(not(target_os = "linux"))]
fn reload_page_cache(_: &Path) {}
