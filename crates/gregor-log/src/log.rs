//! The log: a data directory of streams, each a directory of partitions.
//!
//! ```text
//! <data dir>/<stream>/stream.json        settings, validated on open
//! <data dir>/<stream>/<partition>/head   published end (shared mapping)
//! <data dir>/<stream>/<partition>/<base>.log, <base>.index
//! ```
//!
//! A `Log` caches one `Partition` per partition it opened, so all threads of a
//! process share one writer state and one segment view; other processes open
//! their own and coordinate through the files. Creating and deleting a stream
//! is atomic (a rename); deleting a stream that another process is using is
//! not supported.

use crate::Record;
use crate::config::{StreamConfig, read_metadata, write_metadata};
use crate::error::{IoContext, LogError, Result};
use crate::partition::{AppendInfo, Partition};
use crate::reader::PartitionReader;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// A data directory holding streams.
pub struct Log {
    root: PathBuf,
    streams: Mutex<HashMap<String, Arc<Stream>>>,
}

/// One stream: a fixed number of partitions sharing settings.
pub struct Stream {
    name: Arc<str>,
    dir: PathBuf,
    config: Arc<StreamConfig>,
    partitions: Vec<OnceLock<Arc<Partition>>>,
}

/// Checks a stream name: 1 to 249 of `[A-Za-z0-9._-]`, not starting with a dot.
///
/// # Errors
/// [`LogError::InvalidStreamName`] naming the rule broken.
pub fn validate_stream_name(name: &str) -> Result<()> {
    let bad = |reason| Err(LogError::InvalidStreamName { name: name.to_owned(), reason });
    if name.is_empty() || name.len() > 249 {
        return bad("a name has 1 to 249 characters");
    }
    if name.starts_with('.') {
        return bad("a name must not start with '.'");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return bad("a name may contain only letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

impl Log {
    /// Opens the data directory `root`, creating it if it does not exist.
    ///
    /// # Errors
    /// [`LogError::DataDir`] if `root` is not a usable directory.
    pub fn open(root: impl AsRef<Path>) -> Result<Log> {
        let root = root.as_ref().to_path_buf();
        let data_dir = |reason: String| LogError::DataDir { path: root.clone(), reason };
        match std::fs::metadata(&root) {
            Ok(m) if !m.is_dir() => return Err(data_dir("exists and is not a directory".into())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&root).map_err(|e| data_dir(format!("cannot create it: {e}")))?;
            }
            Err(e) => return Err(data_dir(format!("cannot access it: {e}"))),
        }
        std::fs::read_dir(&root).map_err(|e| data_dir(format!("cannot read it: {e}")))?;
        Ok(Log { root, streams: Mutex::new(HashMap::new()) })
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Stream>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a stream.
    ///
    /// # Errors
    /// [`LogError::StreamExists`], [`LogError::InvalidStreamName`],
    /// [`LogError::InvalidConfig`], or I/O errors.
    pub fn create_stream(&self, name: &str, config: StreamConfig) -> Result<Arc<Stream>> {
        validate_stream_name(name)?;
        config.validate()?;
        let dir = self.root.join(name);
        if dir.exists() {
            return Err(LogError::StreamExists { stream: name.to_owned() });
        }
        // Unique per process and call: threads may race to create the same stream.
        static ATTEMPT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let attempt = ATTEMPT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.root.join(format!(".{name}.creating-{}-{attempt}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).context(|| format!("creating {}", tmp.display()))?;
        write_metadata(&tmp, name, &config)?;
        for p in 0..config.partitions {
            let pdir = tmp.join(p.to_string());
            std::fs::create_dir(&pdir).context(|| format!("creating {}", pdir.display()))?;
        }
        // rename(2) onto an existing non-empty directory fails: the loser of a
        // creation race learns the stream exists.
        if let Err(e) = std::fs::rename(&tmp, &dir) {
            let _ = std::fs::remove_dir_all(&tmp);
            if dir.exists() {
                return Err(LogError::StreamExists { stream: name.to_owned() });
            }
            return Err(e).context(|| format!("creating stream directory {}", dir.display()));
        }
        crate::fsutil::sync_dir(&self.root)?;
        self.stream(name)
    }

    /// Opens an existing stream.
    ///
    /// # Errors
    /// [`LogError::StreamNotFound`] or [`LogError::InvalidMetadata`].
    pub fn stream(&self, name: &str) -> Result<Arc<Stream>> {
        if let Some(s) = self.cache().get(name) {
            return Ok(s.clone());
        }
        validate_stream_name(name)?;
        let dir = self.root.join(name);
        if !dir.join("stream.json").exists() {
            return Err(LogError::StreamNotFound { stream: name.to_owned(), data_dir: self.root.clone() });
        }
        let config = read_metadata(&dir, name)?;
        for entry in std::fs::read_dir(&dir).context(|| format!("listing {}", dir.display()))? {
            let entry = entry.context(|| format!("listing {}", dir.display()))?;
            if let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                && p >= config.partitions
            {
                return Err(LogError::InvalidMetadata {
                    path: dir.join("stream.json"),
                    reason: format!(
                        "partition directory {p} exists but the stream has {} partitions",
                        config.partitions
                    ),
                });
            }
        }
        let stream = Arc::new(Stream {
            name: Arc::from(name),
            partitions: (0..config.partitions).map(|_| OnceLock::new()).collect(),
            config: Arc::new(config),
            dir,
        });
        Ok(self.cache().entry(name.to_owned()).or_insert(stream).clone())
    }

    /// Names of all streams, sorted.
    pub fn list_streams(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root).context(|| format!("listing {}", self.root.display()))? {
            let entry = entry.context(|| format!("listing {}", self.root.display()))?;
            if let Some(name) = entry.file_name().to_str()
                && validate_stream_name(name).is_ok()
                && entry.path().join("stream.json").is_file()
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Deletes a stream and all its data.
    pub fn delete_stream(&self, name: &str) -> Result<()> {
        validate_stream_name(name)?;
        let dir = self.root.join(name);
        if !dir.join("stream.json").exists() {
            return Err(LogError::StreamNotFound { stream: name.to_owned(), data_dir: self.root.clone() });
        }
        self.cache().remove(name);
        static ATTEMPT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let attempt = ATTEMPT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let doomed = self.root.join(format!(".{name}.deleting-{}-{attempt}", std::process::id()));
        std::fs::rename(&dir, &doomed).context(|| format!("deleting stream directory {}", dir.display()))?;
        crate::fsutil::sync_dir(&self.root)?;
        std::fs::remove_dir_all(&doomed).context(|| format!("removing {}", doomed.display()))
    }

    /// Streams opened through this handle.
    pub(crate) fn opened_streams(&self) -> Vec<Arc<Stream>> {
        self.cache().values().cloned().collect()
    }
}

impl Drop for Log {
    /// Syncs partitions with interval durability, so that closing a log loses
    /// nothing on a later power failure. Every partition's writeback starts
    /// before the first sync waits, so that the disk writes them together.
    fn drop(&mut self) {
        let interval = |s: &Arc<Stream>| matches!(s.config().durability, crate::Durability::IntervalMs(_));
        let streams: Vec<_> = self.opened_streams().into_iter().filter(interval).collect();
        for stream in &streams {
            for p in stream.opened_partitions() {
                if let Err(e) = p.start_writeback(None, 1) {
                    tracing::warn!(
                        stream = stream.name(),
                        partition = p.id(),
                        "starting writeback on close failed: {e}"
                    );
                }
            }
        }
        for stream in streams {
            for p in stream.opened_partitions() {
                if let Err(e) = p.flush() {
                    tracing::error!(stream = stream.name(), partition = p.id(), "syncing on close failed: {e}");
                }
            }
        }
    }
}

impl Stream {
    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream's settings.
    pub fn config(&self) -> &StreamConfig {
        &self.config
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.config.partitions
    }

    /// Opens (once per process, recovering it if needed) a partition.
    ///
    /// # Errors
    /// [`LogError::PartitionOutOfRange`], or recovery errors.
    pub fn partition(&self, partition: u32) -> Result<Arc<Partition>> {
        let slot = self.partitions.get(partition as usize).ok_or_else(|| LogError::PartitionOutOfRange {
            stream: self.name.to_string(),
            partition,
            partitions: self.config.partitions,
        })?;
        if let Some(p) = slot.get() {
            return Ok(p.clone());
        }
        let opened =
            Partition::open(self.name.clone(), partition, self.dir.join(partition.to_string()), self.config.clone())?;
        Ok(slot.get_or_init(|| opened).clone())
    }

    /// Partitions already opened by this process.
    pub(crate) fn opened_partitions(&self) -> impl Iterator<Item = &Arc<Partition>> {
        self.partitions.iter().filter_map(|s| s.get())
    }

    /// Appends a batch to one partition.
    pub fn append(&self, partition: u32, records: &[Record<'_>]) -> Result<AppendInfo> {
        self.partition(partition)?.append(records)
    }

    /// A reader of one partition starting at `offset`.
    pub fn reader(&self, partition: u32, offset: u64) -> Result<PartitionReader> {
        Ok(PartitionReader::new(self.partition(partition)?, offset))
    }
}
