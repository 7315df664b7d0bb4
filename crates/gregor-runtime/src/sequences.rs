//! Exactly-once for what a job reads back, on a system without transactions
//! (Kafka here): each task stamps what it sends to the job's own
//! intermediate streams with its producer id and a sequence number, and
//! each task reading an intermediate stream drops a message whose sequence
//! is not above the highest it processed from that producer. Both numbers
//! live in the tasks' checkpoints, so they move together with the input
//! offsets and the state:
//!
//! - a producer restarted from its checkpoint re-sends what it sent since,
//!   with the same numbers (it processes the same input again from the same
//!   state), then goes on from there;
//! - a reader drops those copies it already processed, and processes the
//!   ones it had not (its own crash made it forget them as well).
//!
//! This holds when what a task sends in answer to a message depends only on
//! the message and the task's state (not on the wall clock or timers:
//! `window()` sends are numbered too, but a restart may send them at other
//! points). This module never does I/O; it only decides.

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};

/// The header holding the stamp: the producer id then the sequence number,
/// 8 bytes each, big-endian. (One header, not two: brokers may store each
/// header apart; the test broker, Tansu 0.6, reads a record with one header
/// 7 times slower than one without, and with two, 27 times.)
pub const STAMP_HEADER: &str = "gregor.stamp";

/// The value of [`STAMP_HEADER`].
pub fn stamp_bytes(producer: u64, sequence: u64) -> [u8; 16] {
    let mut b = [0; 16];
    b[..8].copy_from_slice(&producer.to_be_bytes());
    b[8..].copy_from_slice(&sequence.to_be_bytes());
    b
}

/// Task `task` of job `job_dir`'s producer id: the same in every run, every
/// container and every execution mode (a hash: 64 bits keep collisions
/// between a job's tasks out of reach).
pub fn producer_id(job_dir: &str, task: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(format!("{job_dir}/{task}").as_bytes())
}

/// The (producer id, sequence) a message was stamped with, if any: the last
/// [`STAMP_HEADER`] wins (the runtime's comes after a task's own headers).
pub fn stamp_of(headers: &[(String, Bytes)]) -> Option<(u64, u64)> {
    let (_, v) = headers.iter().rev().find(|(n, _)| n == STAMP_HEADER)?;
    let b: &[u8; 16] = (&v[..]).try_into().ok()?;
    let half = |r: std::ops::Range<usize>| b[r].iter().fold(0u64, |n, &x| n << 8 | u64::from(x));
    Some((half(0..8), half(8..16)))
}

/// What one intermediate input partition has processed: the highest
/// sequence number per producer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen(HashMap<u64, u64>);

impl Seen {
    /// Whether a message stamped (`producer`, `sequence`) is new; records it
    /// if so. A copy re-sent by a restarted producer is not.
    pub fn admit(&mut self, producer: u64, sequence: u64) -> bool {
        match self.0.get_mut(&producer) {
            Some(last) if sequence <= *last => false,
            Some(last) => {
                *last = sequence;
                true
            }
            None => {
                self.0.insert(producer, sequence);
                true
            }
        }
    }

    /// As a checkpoint stores it (producer ids in hex).
    pub fn to_checkpoint(&self) -> BTreeMap<String, u64> {
        self.0.iter().map(|(p, s)| (format!("{p:016x}"), *s)).collect()
    }

    /// From a checkpoint.
    ///
    /// # Errors
    /// A producer id that is not 16 hex digits (a damaged checkpoint:
    /// `decode_checkpoint` refuses those).
    pub fn from_checkpoint(seen: &BTreeMap<String, u64>) -> Result<Seen, String> {
        let mut map = HashMap::with_capacity(seen.len());
        for (p, s) in seen {
            map.insert(parse_producer(p)?, *s);
        }
        Ok(Seen(map))
    }
}

/// A producer id as a checkpoint writes it (16 hex digits).
///
/// # Errors
/// Anything else, named.
pub fn parse_producer(text: &str) -> Result<u64, String> {
    (text.len() == 16)
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
        .ok_or_else(|| format!("producer id '{text}' in \"seen\" is not 16 hex digits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(producer: u64, seq: u64) -> Vec<(String, Bytes)> {
        vec![(STAMP_HEADER.to_owned(), Bytes::copy_from_slice(&stamp_bytes(producer, seq)))]
    }

    #[test]
    fn a_restarted_producers_copies_are_dropped_and_its_new_messages_kept() {
        let mut seen = Seen::default();
        // First run: 1..=5 arrive, the producer crashes before its checkpoint
        // (which says: next is 3), restarts and re-sends 3..=5, then 6.
        let admitted: Vec<bool> = [1, 2, 3, 4, 5, 3, 4, 5, 6].iter().map(|&s| seen.admit(7, s)).collect();
        assert_eq!(admitted, [true, true, true, true, true, false, false, false, true]);
        assert!(seen.admit(8, 1), "producers are counted apart");
        assert!(!seen.admit(8, 1));
    }

    #[test]
    fn stamps_read_back_and_the_runtime_s_headers_win() {
        assert_eq!(stamp_of(&stamped(0xabc, 42)), Some((0xabc, 42)));
        assert_eq!(stamp_of(&[]), None, "unstamped: never dropped");
        let mut forged = stamped(1, 1);
        forged.extend(stamped(2, 9));
        assert_eq!(stamp_of(&forged), Some((2, 9)));
        let short = vec![(STAMP_HEADER.to_owned(), Bytes::from_static(b"\x01"))];
        assert_eq!(stamp_of(&short), None);
    }

    #[test]
    fn seen_round_trips_through_a_checkpoint_and_bad_ids_are_named() {
        let mut seen = Seen::default();
        seen.admit(0x0f3a_5c7e_9b1d_2468, 7311);
        let cp = seen.to_checkpoint();
        assert_eq!(cp, [("0f3a5c7e9b1d2468".to_owned(), 7311)].into());
        assert_eq!(Seen::from_checkpoint(&cp).unwrap(), seen);
        let err = Seen::from_checkpoint(&[("xyz".to_owned(), 1)].into()).unwrap_err();
        assert!(err.contains("'xyz'"), "{err}");
    }

    #[test]
    fn producer_ids_are_stable() {
        // Checkpoints of running jobs hold them: they must never change.
        assert_eq!(producer_id("wordcount-1", "Partition 0"), producer_id("wordcount-1", "Partition 0"));
        assert_ne!(producer_id("wordcount-1", "Partition 0"), producer_id("wordcount-1", "Partition 1"));
        assert_eq!(format!("{:016x}", producer_id("wordcount-1", "Partition 0")), PINNED);
    }

    const PINNED: &str = "1cb40c015e29ae24";
}
