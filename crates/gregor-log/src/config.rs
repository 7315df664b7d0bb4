//! Per-stream settings, stored with the data as `stream.json` and validated on open.
//!
//! The settings are fixed at creation; the file is the only place they live, so
//! every process that opens the stream sees the same policy. This module must
//! never silently accept a metadata file it does not fully understand.

use crate::error::{IoContext, LogError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::str::FromStr;

/// Version of the on-disk layout written by this code.
pub const FORMAT_VERSION: u32 = 1;

/// What happens to old data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CleanupPolicy {
    /// Old segments are deleted by retention (size and age).
    #[default]
    Delete,
    /// Only the latest record per key is kept (changelogs, checkpoints);
    /// every record must have a key.
    Compact,
}

/// When appended data is forced to stable storage.
///
/// | policy | lost on power failure | lost on process crash |
/// |---|---|---|
/// | `Always` | nothing that was acknowledged | nothing |
/// | `IntervalMs(n)` | up to the last `n` ms of acknowledged batches | nothing |
/// | `Os` | whatever the kernel had not written back (Linux: up to ~30 s by default) | nothing |
///
/// A process crash (even `kill -9`) never loses an acknowledged batch under any
/// policy: the data is in the kernel's page cache as soon as `append` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `fdatasync` before every append returns.
    Always,
    /// `fdatasync` by the background maintenance thread every this many ms
    /// (and when the log is closed).
    IntervalMs(u64),
    /// Never `fdatasync`; the kernel writes back when it chooses.
    Os,
}

impl Default for Durability {
    fn default() -> Self {
        Durability::IntervalMs(1000)
    }
}

impl FromStr for Durability {
    type Err = LogError;

    /// Parses `always`, `os`, or an interval like `500ms`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "always" => Ok(Durability::Always),
            "os" => Ok(Durability::Os),
            _ => s
                .strip_suffix("ms")
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|&n| n > 0)
                .map(Durability::IntervalMs)
                .ok_or_else(|| {
                    LogError::InvalidConfig(format!(
                        "durability '{s}' must be 'always', 'os' or an interval such as '1000ms'"
                    ))
                }),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Durability::Always => f.write_str("always"),
            Durability::IntervalMs(n) => write!(f, "{n}ms"),
            Durability::Os => f.write_str("os"),
        }
    }
}

/// The settings of one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Number of partitions, fixed at creation.
    pub partitions: u32,
    /// Deletion or compaction.
    #[serde(default)]
    pub cleanup_policy: CleanupPolicy,
    /// Delete old segments once a partition holds more than this many bytes.
    #[serde(default)]
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest message is older than this.
    #[serde(default)]
    pub retention_ms: Option<u64>,
    /// fsync policy.
    #[serde(default)]
    pub durability: Durability,
    /// Roll to a new segment file past this size.
    #[serde(default = "defaults::segment_bytes")]
    pub segment_bytes: u64,
    /// Roll to a new segment file once the active one is this old, so that
    /// retention and compaction reach quiet streams too.
    #[serde(default = "defaults::segment_ms")]
    pub segment_ms: u64,
    /// Bytes between two entries of the sparse offset/time index.
    #[serde(default = "defaults::index_interval_bytes")]
    pub index_interval_bytes: u32,
    /// How long compaction keeps a tombstone, counted from its timestamp.
    #[serde(default = "defaults::delete_retention_ms")]
    pub delete_retention_ms: u64,
    /// Largest accepted batch, in bytes.
    #[serde(default = "defaults::max_batch_bytes")]
    pub max_batch_bytes: u32,
    /// For compacted streams: compaction touches only records below the
    /// limit set with `Partition::set_compaction_limit` (store changelogs, so
    /// that a restore up to a checkpointed offset stays exact).
    #[serde(default)]
    pub compaction_bounded: bool,
}

mod defaults {
    pub fn segment_bytes() -> u64 {
        128 * 1024 * 1024
    }
    pub fn segment_ms() -> u64 {
        7 * 24 * 3600 * 1000
    }
    pub fn index_interval_bytes() -> u32 {
        4096
    }
    pub fn delete_retention_ms() -> u64 {
        24 * 3600 * 1000
    }
    pub fn max_batch_bytes() -> u32 {
        64 * 1024 * 1024
    }
}

impl StreamConfig {
    /// A delete-policy stream with default settings.
    pub fn new(partitions: u32) -> Self {
        StreamConfig {
            partitions,
            cleanup_policy: CleanupPolicy::Delete,
            retention_bytes: None,
            retention_ms: None,
            durability: Durability::default(),
            segment_bytes: defaults::segment_bytes(),
            segment_ms: defaults::segment_ms(),
            index_interval_bytes: defaults::index_interval_bytes(),
            delete_retention_ms: defaults::delete_retention_ms(),
            max_batch_bytes: defaults::max_batch_bytes(),
            compaction_bounded: false,
        }
    }

    /// A compacted stream (changelogs, checkpoints) with default settings.
    pub fn compacted(partitions: u32) -> Self {
        StreamConfig { cleanup_policy: CleanupPolicy::Compact, ..StreamConfig::new(partitions) }
    }

    /// Checks every setting is in range.
    ///
    /// # Errors
    /// [`LogError::InvalidConfig`] naming the setting and its allowed range.
    pub fn validate(&self) -> Result<()> {
        let check = |ok: bool, msg: &str| {
            if ok { Ok(()) } else { Err(LogError::InvalidConfig(msg.to_owned())) }
        };
        check(self.partitions >= 1 && self.partitions <= 65536, "partitions must be between 1 and 65536")?;
        check(self.segment_bytes >= 1024, "segment_bytes must be at least 1024")?;
        check(self.segment_bytes <= u64::from(u32::MAX), "segment_bytes must be below 4 GiB")?;
        check(self.segment_ms >= 1, "segment_ms must be positive")?;
        check(self.index_interval_bytes >= 1, "index_interval_bytes must be positive")?;
        check(self.max_batch_bytes >= 1024, "max_batch_bytes must be at least 1024")?;
        check(self.retention_bytes != Some(0), "retention_bytes must be positive")?;
        check(self.retention_ms != Some(0), "retention_ms must be positive")?;
        check(self.durability != Durability::IntervalMs(0), "a durability interval must be positive")?;
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataFile {
    format_version: u32,
    stream: String,
    config: StreamConfig,
}

/// Writes `stream.json` (to a temporary file first, then renamed into place).
pub(crate) fn write_metadata(dir: &Path, stream: &str, config: &StreamConfig) -> Result<()> {
    let path = dir.join("stream.json");
    let tmp = dir.join("stream.json.tmp");
    let body = MetadataFile { format_version: FORMAT_VERSION, stream: stream.to_owned(), config: config.clone() };
    let text = serde_json::to_vec_pretty(&body)
        .map_err(|e| LogError::InvalidMetadata { path: path.clone(), reason: e.to_string() })?;
    crate::fsutil::write_durably(&tmp, &text)?;
    std::fs::rename(&tmp, &path).context(|| format!("renaming {} into place", tmp.display()))
}

/// Reads and validates `stream.json`.
pub(crate) fn read_metadata(dir: &Path, stream: &str) -> Result<StreamConfig> {
    let path = dir.join("stream.json");
    let invalid = |reason: String| LogError::InvalidMetadata { path: path.clone(), reason };
    let text = std::fs::read(&path).map_err(|e| invalid(format!("cannot read: {e}")))?;
    let file: MetadataFile =
        serde_json::from_slice(&text).map_err(|e| invalid(format!("not valid stream metadata: {e}")))?;
    if file.format_version != FORMAT_VERSION {
        return Err(invalid(format!(
            "format version {} is not supported by this gregor (it reads version {FORMAT_VERSION})",
            file.format_version
        )));
    }
    if file.stream != stream {
        return Err(invalid(format!("belongs to stream '{}', found in the directory of '{stream}'", file.stream)));
    }
    file.config.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(file.config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_parses() {
        assert_eq!("always".parse::<Durability>().unwrap(), Durability::Always);
        assert_eq!("os".parse::<Durability>().unwrap(), Durability::Os);
        assert_eq!("250ms".parse::<Durability>().unwrap(), Durability::IntervalMs(250));
        assert!("0ms".parse::<Durability>().is_err());
        assert!("sometimes".parse::<Durability>().is_err());
    }

    #[test]
    fn metadata_roundtrip_and_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StreamConfig { retention_bytes: Some(1 << 20), ..StreamConfig::compacted(3) };
        write_metadata(dir.path(), "s", &cfg).unwrap();
        assert_eq!(read_metadata(dir.path(), "s").unwrap(), cfg);
        assert!(matches!(read_metadata(dir.path(), "other"), Err(LogError::InvalidMetadata { .. })));
        let path = dir.path().join("stream.json");
        let text = std::fs::read_to_string(&path).unwrap().replace("\"format_version\": 1", "\"format_version\": 9");
        std::fs::write(&path, text).unwrap();
        let err = read_metadata(dir.path(), "s").unwrap_err().to_string();
        assert!(err.contains("format version 9"), "{err}");
        std::fs::write(&path, "{ not json").unwrap();
        assert!(read_metadata(dir.path(), "s").is_err());
    }
}
