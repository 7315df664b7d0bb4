//! A writer process for gregor-log's crash and concurrency tests.
//!
//! `gregor-log-stress <data-dir> <stream> <partition> <writer-id> <batches> <batch-size>`
//! appends `batches` batches of `batch-size` messages whose values are
//! `<writer-id>:<sequence>`, and after each append prints
//! `ack <first offset> <last offset>` (flushed), so a test that kills it with
//! SIGKILL knows exactly which messages were acknowledged.

use gregor_log::{Log, Record};
use std::io::Write;

fn main() {
    if let Err(e) = run() {
        eprintln!("gregor-log-stress: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, stream, partition, writer, batches, batch_size] = args.as_slice() else {
        return Err(
            "usage: gregor-log-stress <data-dir> <stream> <partition> <writer-id> <batches> <batch-size>".into()
        );
    };
    let (partition, batches, batch_size): (u32, u64, usize) =
        (partition.parse()?, batches.parse()?, batch_size.parse()?);
    let log = Log::open(dir)?;
    let stream = log.stream(stream)?;
    let partition = stream.partition(partition)?;
    let mut out = std::io::stdout().lock();
    let mut values: Vec<String> = Vec::with_capacity(batch_size);
    let mut seq = 0u64;
    for _ in 0..batches {
        values.clear();
        for _ in 0..batch_size {
            values.push(format!("{writer}:{seq}"));
            seq += 1;
        }
        let records: Vec<Record<'_>> = values.iter().map(|v| Record::keyed(writer.as_bytes(), v.as_bytes())).collect();
        let at = partition.append(&records)?;
        writeln!(out, "ack {} {}", at.base_offset, at.last_offset)?;
        out.flush()?;
    }
    Ok(())
}
