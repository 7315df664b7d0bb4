//! Helpers shared by gregor's example jobs, their tests and benchmarks.

pub mod bench;

use gregor_log::{Log, PartitionReader};
use std::collections::BTreeMap;
use std::path::Path;

/// The words of a line: maximal runs of alphanumeric characters, lowercased.
pub fn words(line: &str) -> impl Iterator<Item = String> + '_ {
    line.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

/// The last value per key of a stream in the log at `data_dir` (what a
/// changelog-like output means), reading every partition to its end.
///
/// # Errors
/// If the stream cannot be read.
pub fn latest_values(data_dir: &Path, stream: &str) -> Result<BTreeMap<String, String>, gregor_log::LogError> {
    let log = Log::open(data_dir)?;
    let stream = log.stream(stream)?;
    let mut out = BTreeMap::new();
    for p in 0..stream.partition_count() {
        let partition = stream.partition(p)?;
        let end = partition.next_offset()?;
        let mut reader = PartitionReader::new(partition.clone(), partition.oldest_offset()?);
        while reader.next_offset() < end {
            for m in reader.poll(1 << 20)?.messages() {
                let m = m?;
                let key = String::from_utf8_lossy(m.key.as_deref().unwrap_or_default()).into_owned();
                match m.value {
                    Some(v) => out.insert(key, String::from_utf8_lossy(&v).into_owned()),
                    None => out.remove(&key),
                };
            }
        }
    }
    Ok(out)
}

/// Appends `lines` to a stream of the log at `data_dir`, spread round-robin
/// over its partitions (created with `partitions` partitions if missing).
///
/// # Errors
/// If the log cannot be written.
pub fn load_lines(data_dir: &Path, stream: &str, partitions: u32, lines: &[&str]) -> Result<(), gregor_log::LogError> {
    let log = Log::open(data_dir)?;
    let s = match log.stream(stream) {
        Ok(s) => s,
        Err(gregor_log::LogError::StreamNotFound { .. }) => {
            log.create_stream(stream, gregor_log::StreamConfig::new(partitions))?
        }
        Err(e) => return Err(e),
    };
    let n = s.partition_count() as usize;
    for p in 0..n {
        let records: Vec<gregor_log::Record<'_>> =
            lines.iter().skip(p).step_by(n).map(|l| gregor_log::Record::value(l.as_bytes())).collect();
        if !records.is_empty() {
            s.append(p as u32, &records)?;
        }
    }
    Ok(())
}

/// The true word counts of `lines` (what a correct word count outputs last per word).
pub fn word_counts(lines: &[String]) -> BTreeMap<String, String> {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for l in lines {
        for w in words(l) {
            *counts.entry(w).or_default() += 1;
        }
    }
    counts.into_iter().map(|(w, c)| (w, c.to_string())).collect()
}
