//! `gregor stream ...`: create, list, describe, produce, consume, compact and
//! delete streams of the embedded log.
//!
//! Output formats here are a contract (users script against them): change
//! them only with the docs in `docs/cli.md`.

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::{Subcommand, ValueEnum};
use gregor_api::system::{SystemFactory, SystemProducer};
use gregor_api::{SystemStream, SystemStreamPartition};
use gregor_log::system::LogSystemFactory;
use gregor_log::txn::CommittedFilter;
use gregor_log::{CleanupPolicy, Durability, Log, Message, PartitionReader, Stream, StreamConfig};
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Subcommand)]
pub enum StreamCommand {
    /// Create a stream.
    Create {
        /// Stream name: letters, digits, '.', '_' and '-'.
        stream: String,
        /// Number of partitions (fixed for the stream's life).
        #[arg(long)]
        partitions: u32,
        /// Keep only the latest message per key (changelogs, checkpoints).
        #[arg(long)]
        compact: bool,
        /// Delete old segments once a partition holds more than this many bytes.
        #[arg(long, value_name = "B")]
        retention_bytes: Option<u64>,
        /// Delete segments whose newest message is older than this many ms.
        #[arg(long, value_name = "T")]
        retention_ms: Option<u64>,
        /// fsync policy: 'always', 'os', or an interval such as '1000ms'.
        #[arg(long, value_parser = parse_durability)]
        durability: Option<Durability>,
        /// Roll to a new segment file past this many bytes.
        #[arg(long, value_name = "B")]
        segment_bytes: Option<u64>,
    },
    /// List the streams in the data directory.
    List,
    /// Show a stream's partitions, offsets, size and policy.
    Describe {
        /// Stream name.
        stream: String,
    },
    /// Append one message per line of standard input.
    Produce {
        /// Stream name.
        stream: String,
        /// Split each line into key and value at the first SEP.
        #[arg(long, value_name = "SEP")]
        key_separator: Option<String>,
        /// Write every message to this partition.
        #[arg(long, value_name = "P")]
        partition: Option<u32>,
    },
    /// Print messages.
    Consume {
        /// Stream name.
        stream: String,
        /// Read only this partition (default: all).
        #[arg(long, value_name = "P")]
        partition: Option<u32>,
        /// Where to start: 'oldest', 'newest' (only new messages) or an offset.
        #[arg(long, default_value = "oldest", value_parser = parse_start, allow_hyphen_values = true)]
        from: Start,
        /// Stop at the end of the data present at start instead of following.
        #[arg(long)]
        until_end: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// read-committed: leave out records of aborted transactions and
        /// wait for open ones (as gregor jobs read); read-uncommitted: every
        /// record written.
        #[arg(long, value_enum, default_value_t = Isolation::ReadCommitted)]
        isolation: Isolation,
    },
    /// Compact a compacted stream now (including its newest data).
    Compact {
        /// Stream name.
        stream: String,
    },
    /// Delete a stream and all its data.
    Delete {
        /// Stream name.
        stream: String,
    },
}

#[derive(Clone, Copy, Debug)]
pub enum Start {
    Oldest,
    Newest,
    Offset(u64),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// `key<TAB>value` per line (value only when there is no key).
    Text,
    /// One JSON object per message.
    Json,
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    s.parse::<Durability>().map_err(|e| e.to_string())
}

fn parse_start(s: &str) -> Result<Start, String> {
    match s {
        "oldest" => Ok(Start::Oldest),
        "newest" => Ok(Start::Newest),
        _ => s
            .parse()
            .map(Start::Offset)
            .map_err(|_| format!("'{s}' is not 'oldest', 'newest' or an offset (a non-negative integer)")),
    }
}

/// Opens a data directory that must already exist (commands that only read).
fn open_existing(data_dir: &Path) -> Result<Log> {
    if !data_dir.exists() {
        bail!(
            "data directory {} does not exist (create a stream first, or point --data-dir or GREGOR_DATA_DIR at your data)",
            data_dir.display()
        );
    }
    Ok(Log::open(data_dir)?)
}

pub fn run(data_dir: &Path, command: StreamCommand) -> Result<()> {
    match command {
        StreamCommand::Create {
            stream,
            partitions,
            compact,
            retention_bytes,
            retention_ms,
            durability,
            segment_bytes,
        } => {
            let mut config = if compact { StreamConfig::compacted(partitions) } else { StreamConfig::new(partitions) };
            config.retention_bytes = retention_bytes;
            config.retention_ms = retention_ms;
            config.durability = durability.unwrap_or(config.durability);
            config.segment_bytes = segment_bytes.unwrap_or(config.segment_bytes);
            Log::open(data_dir)?.create_stream(&stream, config)?;
            println!("created stream {stream} with {partitions} partition{}", if partitions == 1 { "" } else { "s" });
            Ok(())
        }
        StreamCommand::List => {
            let mut out = std::io::stdout().lock();
            for name in open_existing(data_dir)?.list_streams()? {
                writeln!(out, "{name}")?;
            }
            Ok(())
        }
        StreamCommand::Describe { stream } => describe(&*open_existing(data_dir)?.stream(&stream)?),
        StreamCommand::Produce { stream, key_separator, partition } => {
            produce(open_existing(data_dir)?, &stream, key_separator.as_deref(), partition, std::io::stdin().lock())
        }
        StreamCommand::Consume { stream, partition, from, until_end, format, isolation } => {
            let log = open_existing(data_dir)?;
            consume(&log.stream(&stream)?, partition, from, until_end, format, isolation)
        }
        StreamCommand::Compact { stream } => {
            let log = open_existing(data_dir)?;
            let stream = log.stream(&stream)?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
            for p in 0..stream.partition_count() {
                let o = stream.partition(p)?.compact(now, true)?;
                println!(
                    "partition {p}: {} -> {} messages, {} -> {} bytes",
                    o.records_before, o.records_after, o.bytes_before, o.bytes_after
                );
            }
            Ok(())
        }
        StreamCommand::Delete { stream } => {
            open_existing(data_dir)?.delete_stream(&stream)?;
            println!("deleted stream {stream}");
            Ok(())
        }
    }
}

fn describe(stream: &Stream) -> Result<()> {
    let c = stream.config();
    let limit = |v: Option<u64>, unit: &str| v.map_or("unlimited".to_owned(), |v| format!("{v} {unit}"));
    let mut out = std::io::stdout().lock();
    writeln!(out, "stream:         {}", stream.name())?;
    writeln!(out, "partitions:     {}", c.partitions)?;
    let policy = match c.cleanup_policy {
        CleanupPolicy::Delete => "delete",
        CleanupPolicy::Compact => "compact",
    };
    writeln!(out, "cleanup policy: {policy}")?;
    writeln!(
        out,
        "retention:      size {}, age {} (per partition)",
        limit(c.retention_bytes, "bytes"),
        limit(c.retention_ms, "ms")
    )?;
    writeln!(out, "durability:     {}", c.durability)?;
    writeln!(out, "segment bytes:  {}", c.segment_bytes)?;
    writeln!(
        out,
        "{:>9} {:>12} {:>12} {:>12} {:>14} {:>8}",
        "PARTITION", "OLDEST", "NEWEST", "NEXT", "BYTES", "SEGMENTS"
    )?;
    for p in 0..c.partitions {
        let part = stream.partition(p)?;
        let (oldest, next) = (part.oldest_offset()?, part.next_offset()?);
        let newest = if next > oldest { (next - 1).to_string() } else { "-".to_owned() };
        writeln!(
            out,
            "{p:>9} {oldest:>12} {newest:>12} {next:>12} {:>14} {:>8}",
            part.size_bytes()?,
            part.segment_count()?
        )?;
    }
    Ok(())
}

pub(crate) fn produce(
    log: Log,
    stream: &str,
    key_separator: Option<&str>,
    partition: Option<u32>,
    input: impl BufRead,
) -> Result<()> {
    let log = Arc::new(log);
    let partitions = log.stream(stream)?.partition_count();
    if let Some(p) = partition {
        log.stream(stream)?.partition(p)?; // a clear error for a bad partition before reading input
    }
    let mut producer = LogSystemFactory::from_log(log).producer()?;
    produce_lines(&mut *producer, &SystemStream::new("log", stream), partitions, key_separator, partition, input)
}

/// Sends one message per input line (see `Produce`), to either system.
pub(crate) fn produce_lines(
    producer: &mut dyn SystemProducer,
    stream: &SystemStream,
    partitions: u32,
    key_separator: Option<&str>,
    partition: Option<u32>,
    mut input: impl BufRead,
) -> Result<()> {
    if key_separator == Some("") {
        bail!("--key-separator must not be empty");
    }
    if let Some(p) = partition.filter(|p| *p >= partitions) {
        bail!("partition {p} of {} does not exist (it has {partitions})", stream.stream);
    }
    let ssps: Vec<SystemStreamPartition> = (0..partitions).map(|p| stream.partition(p)).collect();
    let mut line = Vec::new();
    let mut next_round_robin = 0u32;
    let mut line_number = 0u64;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).context("reading standard input")? == 0 {
            break;
        }
        line_number += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let (key, value) = match key_separator {
            None => (None, &line[..]),
            Some(sep) => match find(&line, sep.as_bytes()) {
                Some(at) => (Some(&line[..at]), &line[at + sep.len()..]),
                None => {
                    producer.flush()?;
                    bail!(
                        "line {line_number} has no key separator {sep:?} (the {} lines before it were produced)",
                        line_number - 1
                    );
                }
            },
        };
        let p = match (partition, key) {
            (Some(p), _) => p,
            (None, Some(k)) => gregor_api::partition_for_key(k, partitions),
            (None, None) => {
                next_round_robin = (next_round_robin + 1) % partitions;
                next_round_robin
            }
        };
        producer.send_to(&ssps[p as usize], key, Some(value), now_ms())?;
        // Nothing more buffered: the next read may wait for a person typing,
        // so make what we have visible now.
        if input.fill_buf().map(|b| b.is_empty()).unwrap_or(true) {
            producer.flush()?;
        }
    }
    Ok(producer.flush()?)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Which records `consume` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    /// Committed records only (and every non-transactional one).
    ReadCommitted,
    /// Every record, aborted and open transactions included.
    ReadUncommitted,
}

fn consume(
    stream: &Arc<Stream>,
    partition: Option<u32>,
    from: Start,
    until_end: bool,
    format: Format,
    isolation: Isolation,
) -> Result<()> {
    let partitions: Vec<u32> = match partition {
        Some(p) => vec![p],
        None => (0..stream.partition_count()).collect(),
    };
    let mut readers = Vec::new();
    for p in partitions {
        let part = stream.partition(p)?;
        let start = match from {
            Start::Oldest => part.oldest_offset()?,
            Start::Newest => part.next_offset()?,
            Start::Offset(o) => o,
        };
        part.check_offset(start)?;
        let end = part.next_offset()?;
        let held = match isolation {
            Isolation::ReadCommitted => CommittedFilter::<Message>::new(),
            Isolation::ReadUncommitted => CommittedFilter::read_uncommitted(),
        };
        readers.push((PartitionReader::new(part, start), end, held));
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    loop {
        let mut got_any = false;
        for (reader, end, held) in &mut readers {
            if until_end && reader.next_offset() >= *end {
                continue;
            }
            let fetch = reader.poll(1 << 20)?;
            if fetch.is_empty() && until_end {
                *end = 0; // nothing left below the end (compaction removed it)
            }
            got_any |= !fetch.is_empty();
            let id = reader.partition().id();
            for e in fetch.entries() {
                held.push_entry(e?, |r| fetch.message(&r));
                while let Some(m) = held.pop() {
                    if until_end && m.offset >= *end {
                        break;
                    }
                    write_message(&mut out, id, &m, format)?;
                }
            }
        }
        if until_end {
            // A transaction still open at the end holds back what follows it.
            if readers.iter().all(|(r, end, _)| r.next_offset() >= *end) {
                break;
            }
            continue;
        }
        if !got_any {
            // Following: show what we have, then sleep until any partition
            // receives data (one wait on all of them).
            out.flush()?;
            let waiting: Vec<&PartitionReader> = readers.iter().map(|(r, ..)| r).collect();
            PartitionReader::wait_any(&waiting, Duration::from_secs(1));
        }
    }
    out.flush()?;
    Ok(())
}

fn write_message(out: &mut impl Write, partition: u32, m: &Message, format: Format) -> std::io::Result<()> {
    let record = Record {
        partition,
        offset: m.offset,
        timestamp: m.timestamp,
        key: m.key.as_deref(),
        value: m.value.as_deref(),
        headers: &m.headers,
    };
    write_record(out, &record, format)
}

/// A message as `consume` prints it, from either system.
pub(crate) struct Record<'a> {
    pub partition: u32,
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(String, Option<bytes::Bytes>)],
}

pub(crate) fn write_record(out: &mut impl Write, m: &Record<'_>, format: Format) -> std::io::Result<()> {
    match format {
        Format::Text => {
            if let Some(k) = m.key {
                out.write_all(k)?;
                out.write_all(b"\t")?;
            }
            out.write_all(m.value.unwrap_or_default())?;
            out.write_all(b"\n")
        }
        Format::Json => {
            let headers: serde_json::Map<String, serde_json::Value> = m
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), v.as_deref().map_or(serde_json::Value::Null, json_bytes)))
                .collect();
            let value = serde_json::json!({
                "partition": m.partition,
                "offset": m.offset,
                "timestamp": m.timestamp,
                "key": m.key.map_or(serde_json::Value::Null, json_bytes),
                "value": m.value.map_or(serde_json::Value::Null, json_bytes),
                "headers": headers,
            });
            serde_json::to_writer(&mut *out, &value)?;
            out.write_all(b"\n")
        }
    }
}

/// UTF-8 bytes as a JSON string; anything else as `{"base64": "..."}`, so no
/// byte is ever lost or replaced.
fn json_bytes(b: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(b) {
        Ok(s) => serde_json::Value::String(s.to_owned()),
        Err(_) => {
            serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) })
        }
    }
}
