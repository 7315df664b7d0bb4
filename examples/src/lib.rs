//! Helpers shared by gregor's example jobs, their tests and benchmarks.

pub mod bench;
pub mod kafka;
pub mod kafka_broker;
pub mod observe;
pub mod zookeeper_server;

use gregor_log::txn::CommittedFilter;
use gregor_log::{Log, PartitionReader};
use std::collections::BTreeMap;
use std::path::Path;

/// xorshift64: deterministic test and benchmark input from a seed (not zero).
pub struct Rng(pub u64);

impl Rng {
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The words of a line: maximal runs of alphanumeric characters, lowercased.
pub fn words(line: &str) -> impl Iterator<Item = String> + '_ {
    line.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

/// The words of `line` as the Streams API examples define them: maximal
/// runs of ASCII letters and digits, lower-cased.
pub fn ascii_words(line: &str) -> impl Iterator<Item = String> + '_ {
    line.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_ascii_lowercase)
}

/// The Streams API word count of the `streams-wordcount` example: lines from
/// the stream id `lines`, `word -> new count` to `word-counts` (shared with
/// the `streams` benchmark, so that it measures the shipped job).
///
/// # Errors
/// None today; the signature is the one `gregor::streams::app` takes.
pub fn describe_streams_wordcount(app: &mut gregor::streams::StreamApp) -> Result<(), gregor::TaskError> {
    let counts = app.output::<String, i64>("word-counts");
    app.input::<(), String>("lines")
        .flat_map(|_, line: String| ascii_words(&line).map(|w| (w, ())).collect::<Vec<_>>())
        .partition_by("by-word")
        .count("counts")
        .to(&counts);
    Ok(())
}

/// The last value per key of a stream in the log at `data_dir` (what a
/// changelog-like output means), reading every partition to its end.
///
/// # Errors
/// If the stream cannot be read.
pub fn latest_values(data_dir: &Path, stream: &str) -> Result<BTreeMap<String, String>, gregor_log::LogError> {
    let mut out = BTreeMap::new();
    for_each_message(data_dir, stream, true, |_, key, value| {
        let key = String::from_utf8_lossy(key.unwrap_or_default()).into_owned();
        match value {
            Some(v) => out.insert(key, String::from_utf8_lossy(v).into_owned()),
            None => out.remove(&key),
        };
    })?;
    Ok(out)
}

/// The values of every partition of a stream, in offset order
/// (read-committed, as gregor jobs read).
///
/// # Errors
/// If the stream cannot be read.
pub fn values_by_partition(data_dir: &Path, stream: &str) -> Result<Vec<Vec<String>>, gregor_log::LogError> {
    keyed_values_by_partition(data_dir, stream, true)
        .map(|ps| ps.into_iter().map(|p| p.into_iter().map(|(_, v)| v).collect()).collect())
}

/// (key, value) of every message of every partition, in offset order;
/// `read_committed` leaves out records of aborted and open transactions.
///
/// # Errors
/// If the stream cannot be read.
pub fn keyed_values_by_partition(
    data_dir: &Path,
    stream: &str,
    read_committed: bool,
) -> Result<Vec<Vec<(String, String)>>, gregor_log::LogError> {
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    for_each_message(data_dir, stream, read_committed, |p, key, value| {
        if out.len() <= p as usize {
            out.resize(p as usize + 1, Vec::new());
        }
        let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
        out[p as usize].push((text(key), text(value)));
    })?;
    Ok(out)
}

/// The number of messages in a stream (every partition to its end); with
/// `read_committed`, only those of committed transactions. Unlike the sum of
/// the partitions' next offsets, transaction markers do not count.
///
/// # Errors
/// If the stream cannot be read.
pub fn message_count(data_dir: &Path, stream: &str, read_committed: bool) -> Result<u64, gregor_log::LogError> {
    let mut n = 0;
    for_each_message(data_dir, stream, read_committed, |_, _, _| n += 1)?;
    Ok(n)
}

/// Calls `f(partition, key, value)` for every message of a stream, up to
/// the end of each partition as of the call (read-committed: through a
/// [`gregor_log::txn::CommittedFilter`]; a transaction still open at the
/// end holds back what follows it).
fn for_each_message(
    data_dir: &Path,
    stream: &str,
    read_committed: bool,
    mut f: impl FnMut(u32, Option<&[u8]>, Option<&[u8]>),
) -> Result<(), gregor_log::LogError> {
    let log = Log::open(data_dir)?;
    let stream = log.stream(stream)?;
    for p in 0..stream.partition_count() {
        let partition = stream.partition(p)?;
        let end = partition.next_offset()?;
        let mut reader = PartitionReader::new(partition.clone(), partition.oldest_offset()?);
        let mut filter = if read_committed { CommittedFilter::new() } else { CommittedFilter::read_uncommitted() };
        while reader.next_offset() < end {
            let fetch = reader.poll(1 << 20)?;
            for e in fetch.entries() {
                filter.push_entry(e?, |r| fetch.message(&r));
                while let Some(m) = filter.pop() {
                    if m.offset < end {
                        f(p, m.key.as_deref(), m.value.as_deref());
                    }
                }
            }
        }
    }
    Ok(())
}

/// Appends `lines` to a stream of the log at `data_dir`, spread round-robin
/// over its partitions (created with `partitions` partitions if missing).
///
/// # Errors
/// If the log cannot be written.
pub fn load_lines(data_dir: &Path, stream: &str, partitions: u32, lines: &[&str]) -> Result<(), gregor_log::LogError> {
    let s = open_or_create(data_dir, stream, partitions)?;
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

/// Appends keyed messages (`None` values are tombstones) to a stream of the
/// log at `data_dir`, each to the partition its key hashes to (as a keyed
/// send does), in the given order; creates the stream with `partitions`
/// partitions if missing.
///
/// # Errors
/// If the log cannot be written.
pub fn load_keyed(
    data_dir: &Path,
    stream: &str,
    partitions: u32,
    messages: &[(&str, Option<&str>)],
) -> Result<(), gregor_log::LogError> {
    let s = open_or_create(data_dir, stream, partitions)?;
    let n = s.partition_count();
    let mut by_partition: Vec<Vec<gregor_log::Record<'_>>> = vec![Vec::new(); n as usize];
    for (key, value) in messages {
        let record = gregor_log::Record {
            key: Some(key.as_bytes()),
            value: value.map(str::as_bytes),
            ..gregor_log::Record::default()
        };
        by_partition[gregor::partition_for_key(key.as_bytes(), n) as usize].push(record);
    }
    for (p, records) in by_partition.iter().enumerate() {
        if !records.is_empty() {
            s.append(p as u32, records)?;
        }
    }
    Ok(())
}

fn open_or_create(
    data_dir: &Path,
    stream: &str,
    partitions: u32,
) -> Result<std::sync::Arc<gregor_log::Stream>, gregor_log::LogError> {
    let log = Log::open(data_dir)?;
    match log.stream(stream) {
        Ok(s) => Ok(s),
        Err(gregor_log::LogError::StreamNotFound { .. }) => {
            log.create_stream(stream, gregor_log::StreamConfig::new(partitions))
        }
        Err(e) => Err(e),
    }
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
