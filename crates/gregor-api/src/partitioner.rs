//! The key partitioner shared by every gregor system.
//!
//! gregor places a keyed message in partition `(murmur2(key) & 0x7fffffff) % N`,
//! bit for bit the rule of Kafka's Java client (`Utils.murmur2` +
//! `Utils.toPositive`) and of librdkafka's `murmur2_random` partitioner, so data
//! written by gregor, by a Kafka client or by the `gregor` CLI lands in the same
//! partition whichever wrote it. This hash must never change: doing so would
//! move keys between partitions and break every task's local state.

/// Kafka's 32-bit murmur2 hash (seed `0x9747b28c`) of `data`.
///
/// ```
/// assert_eq!(gregor_api::murmur2(b"foobar"), -790332482);
/// ```
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = 0x9747_b28c ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition (in `0..partitions`) that a message with this key belongs to.
///
/// # Panics
/// Panics if `partitions` is zero: a stream always has at least one partition,
/// and callers validate counts they read from users.
///
/// ```
/// let p = gregor_api::partition_for_key(b"user-42", 8);
/// assert!(p < 8);
/// assert_eq!(p, gregor_api::partition_for_key(b"user-42", 8));
/// ```
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a stream has at least one partition");
    ((murmur2(key) as u32) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn matches_kafka_java_client() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
            (b"abc", 479470107),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input), *expected, "murmur2({:?})", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn partition_is_positive_modulo() {
        // -790332482 & 0x7fffffff = 1357151166; % 8 = 6
        assert_eq!(partition_for_key(b"foobar", 8), 1357151166 % 8);
        assert_eq!(partition_for_key(b"", 1), 0);
    }
}
