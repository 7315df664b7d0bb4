//! Real processes: writers killed with SIGKILL mid-stream, and several
//! processes and threads appending to one partition while others tail it.

mod common;

use gregor_log::{Durability, Log, Message, PartitionReader, Record, StreamConfig};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const STRESS: &str = env!("CARGO_BIN_EXE_gregor-log-stress");

fn spawn_writer(dir: &std::path::Path, writer: &str, batches: u64, batch_size: usize) -> Child {
    Command::new(STRESS)
        .args([dir.to_str().unwrap(), "s", "0", writer, &batches.to_string(), &batch_size.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn gregor-log-stress")
}

/// Forwards `ack <first> <last>` lines of a writer to a channel.
fn forward_acks(child: &mut Child) -> (mpsc::Receiver<(u64, u64)>, std::thread::JoinHandle<()>) {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let parts: Vec<u64> = line.split(' ').skip(1).map(|n| n.parse().unwrap()).collect();
            if tx.send((parts[0], parts[1])).is_err() {
                break;
            }
        }
    });
    (rx, handle)
}

fn value_of(m: &Message) -> String {
    common::text(m)
}

#[test]
fn killed_writers_never_lose_an_acknowledged_batch() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        let config = StreamConfig { durability: Durability::Always, segment_bytes: 16 * 1024, ..StreamConfig::new(1) };
        log.create_stream("s", config).unwrap();
    }
    // Everything known to be in the log, by offset.
    let mut known: Vec<String> = Vec::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..12 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_after = 1 + seed % 40;
        let batch_size = 1 + (seed >> 8) as usize % 5;
        let writer = format!("w{round}");
        let mut child = spawn_writer(dir.path(), &writer, 1_000_000, batch_size);
        let (acks, reader) = forward_acks(&mut child);
        let mut acked = Vec::new();
        while (acked.len() as u64) < kill_after {
            acked.push(acks.recv_timeout(Duration::from_secs(60)).expect("writer acknowledges appends"));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        acked.extend(acks.try_iter());

        let log = Log::open(dir.path()).unwrap();
        let p = log.stream("s").unwrap().partition(0).unwrap();
        let all = common::read_all(&p);
        for (i, m) in all.iter().enumerate() {
            assert_eq!(m.offset, i as u64, "offsets are dense");
        }
        let values: Vec<String> = all.iter().map(value_of).collect();
        assert_eq!(values[..known.len()], known[..], "round {round}: earlier data changed");
        // This round's messages: a gap-free prefix of what the writer sent.
        for (seq, v) in values[known.len()..].iter().enumerate() {
            assert_eq!(v, &format!("{writer}:{seq}"), "round {round}");
        }
        let (_, last_acked) = *acked.last().unwrap();
        assert!(
            values.len() as u64 > last_acked,
            "round {round}: acknowledged offset {last_acked} lost (log has {})",
            values.len()
        );
        assert_eq!(acked[0].0, known.len() as u64, "round {round}: appends continued at the next offset");
        // Appends continue right after what survived.
        let at = p.append(&[Record::keyed(b"check", format!("check{round}").as_bytes())]).unwrap();
        assert_eq!(at.base_offset, values.len() as u64);
        known = values;
        known.push(format!("check{round}"));
    }
}

/// Checks that each writer's messages appear exactly once, in order, with
/// each batch's messages adjacent.
fn check_writers(messages: &[Message], writers: usize, batches: usize, batch_size: usize) {
    let mut next: HashMap<String, usize> = HashMap::new();
    let mut previous_offset = None;
    for (i, m) in messages.iter().enumerate() {
        if let Some(p) = previous_offset {
            assert_eq!(m.offset, p + 1, "offsets are dense");
        }
        previous_offset = Some(m.offset);
        let v = value_of(m);
        let (w, seq) = v.split_once(':').unwrap();
        let seq: usize = seq.parse().unwrap();
        let expected = next.entry(w.to_owned()).or_default();
        assert_eq!(seq, *expected, "writer {w}: out of order or duplicated at offset {}", m.offset);
        *expected += 1;
        if !seq.is_multiple_of(batch_size) {
            assert_eq!(
                value_of(&messages[i - 1]),
                format!("{w}:{}", seq - 1),
                "batch of {w} interleaved at offset {}",
                m.offset
            );
        }
    }
    assert_eq!(next.len(), writers);
    for (w, n) in next {
        assert_eq!(n, batches * batch_size, "writer {w} lost messages");
    }
}

/// Tails partition 0 from offset 0 until `total` messages arrived.
fn tail(p: std::sync::Arc<gregor_log::Partition>, total: usize) -> Vec<Message> {
    let mut reader = PartitionReader::new(p, 0);
    let mut out = Vec::with_capacity(total);
    let deadline = Instant::now() + Duration::from_secs(120);
    while out.len() < total {
        assert!(Instant::now() < deadline, "tailing reader saw only {} of {total}", out.len());
        let fetch = reader.poll_timeout(16 * 1024, Duration::from_secs(5)).unwrap();
        out.extend(fetch.messages().map(|m| m.unwrap()));
    }
    out
}

#[test]
fn processes_appending_to_one_partition_never_interleave_or_lose_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let config = StreamConfig { durability: Durability::Os, segment_bytes: 32 * 1024, ..StreamConfig::new(1) };
    let stream = log.create_stream("s", config).unwrap();
    let (writers, batches, batch_size) = (4, 400, 7);
    let p = stream.partition(0).unwrap();
    let tailer = std::thread::spawn(move || tail(p, writers * batches * batch_size));
    let mut children: Vec<Child> =
        (0..writers).map(|w| spawn_writer(dir.path(), &format!("p{w}"), batches as u64, batch_size)).collect();
    for c in &mut children {
        let out = c.stdout.take().unwrap();
        std::thread::spawn(move || std::io::copy(&mut BufReader::new(out), &mut std::io::sink()));
    }
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a writer process failed");
    }
    let tailed = tailer.join().unwrap();
    let final_read = common::read_all(&stream.partition(0).unwrap());
    assert_eq!(tailed, final_read, "the tailing reader saw the same log");
    check_writers(&final_read, writers, batches, batch_size);
    assert!(stream.partition(0).unwrap().segment_count().unwrap() > 3, "writers rolled segments");
}

#[test]
fn threads_appending_and_tailing_share_one_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let config = StreamConfig { durability: Durability::Os, segment_bytes: 16 * 1024, ..StreamConfig::new(1) };
    let stream = log.create_stream("s", config).unwrap();
    let (writers, batches, batch_size) = (4, 300, 3);
    let tailers: Vec<_> = (0..2)
        .map(|_| {
            let p = stream.partition(0).unwrap();
            std::thread::spawn(move || tail(p, writers * batches * batch_size))
        })
        .collect();
    std::thread::scope(|s| {
        for w in 0..writers {
            let stream = &stream;
            s.spawn(move || {
                for b in 0..batches {
                    let values: Vec<String> = (0..batch_size).map(|i| format!("t{w}:{}", b * batch_size + i)).collect();
                    let records: Vec<Record<'_>> = values.iter().map(|v| Record::value(v.as_bytes())).collect();
                    stream.append(0, &records).unwrap();
                }
            });
        }
    });
    let final_read = common::read_all(&stream.partition(0).unwrap());
    check_writers(&final_read, writers, batches, batch_size);
    for t in tailers {
        assert_eq!(t.join().unwrap(), final_read);
    }
}
