//! Property tests of the batch format: round trips and arbitrary damage.

use super::*;
use crate::Record;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct OwnedRecord {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: i64,
    headers: Vec<(String, Vec<u8>)>,
}

fn owned_record() -> impl Strategy<Value = OwnedRecord> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        any::<i64>(),
        proptest::collection::vec(("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..10)), 0..3),
    )
        .prop_map(|(key, value, timestamp, headers)| OwnedRecord { key, value, timestamp, headers })
}

fn encode(records: &[OwnedRecord], deltas: &[u32], base: u64) -> Vec<u8> {
    let mut enc = BatchEncoder::new();
    for (r, d) in records.iter().zip(deltas) {
        let headers: Vec<(&str, &[u8])> = r.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        let rec = Record { key: r.key.as_deref(), value: r.value.as_deref(), timestamp: None, headers: &headers };
        enc.push(*d, r.timestamp, &rec);
    }
    let batch = enc.finish();
    seal(batch, base);
    batch.to_vec()
}

proptest! {
    #[test]
    fn roundtrip(records in proptest::collection::vec(owned_record(), 1..20), gaps in proptest::collection::vec(1u32..5, 20), base in 0u64..(u64::MAX / 2)) {
        let mut deltas = Vec::new();
        let mut d = 0;
        for g in gaps.iter().take(records.len()) {
            deltas.push(d);
            d += g;
        }
        let bytes = encode(&records, &deltas, base);
        let header = BatchHeader::parse_verified(&bytes).unwrap();
        prop_assert_eq!(header.total_len, bytes.len());
        prop_assert_eq!(header.record_count as usize, records.len());
        prop_assert_eq!(header.last_offset(), base + u64::from(*deltas.last().unwrap()));
        let decoded: Vec<_> = RecordIter::new(header, &bytes).collect::<Result<_, _>>().unwrap();
        for ((got, want), delta) in decoded.iter().zip(&records).zip(&deltas) {
            prop_assert_eq!(got.offset, base + u64::from(*delta));
            prop_assert_eq!(got.timestamp, want.timestamp);
            prop_assert_eq!(got.key, want.key.as_deref());
            prop_assert_eq!(got.value, want.value.as_deref());
            let headers: Vec<_> = got.headers().collect();
            prop_assert_eq!(headers.len(), want.headers.len());
            for ((n, v), (wn, wv)) in headers.iter().zip(&want.headers) {
                prop_assert_eq!(*n, wn.as_bytes());
                prop_assert_eq!(*v, Some(wv.as_slice()));
            }
        }
        // Re-encoding decoded records verbatim gives identical bytes.
        let mut enc = BatchEncoder::new();
        for (r, delta) in decoded.iter().zip(&deltas) {
            enc.push_decoded(*delta, r);
        }
        let again = enc.finish();
        seal(again, base);
        prop_assert_eq!(&again[..], &bytes[..]);
    }

    /// Any damage is either caught by the CRC or decodes without panicking.
    #[test]
    fn damage_never_panics(records in proptest::collection::vec(owned_record(), 1..5), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), cut in any::<prop::sample::Index>()) {
        let deltas: Vec<u32> = (0..records.len() as u32).collect();
        let original = encode(&records, &deltas, 7);
        let mut bytes = original.clone();
        for (at, x) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x | 1;
        }
        let truncated = &bytes[..cut.index(bytes.len() + 1)];
        for input in [&bytes[..], truncated] {
            if let Ok(h) = BatchHeader::parse_verified(input) {
                for r in RecordIter::new(h, input).flatten() {
                    let _ = r.headers().count();
                }
            }
            // Structural decoding without the CRC must not panic either.
            if let Ok(h) = BatchHeader::parse(input)
                && input.len() >= h.total_len
            {
                let _ = RecordIter::new(h, input).count();
            }
        }
        // CRC32C catches every damage of up to 3 bits and all but 2^-32 of the rest.
        prop_assert!(bytes == original || BatchHeader::parse_verified(&bytes).is_err(), "damage must fail the CRC");
    }
}

#[test]
fn torn_batch_is_incomplete() {
    let rec = OwnedRecord { key: None, value: Some(vec![1; 50]), timestamp: 5, headers: vec![] };
    let bytes = encode(&[rec], &[0], 0);
    for cut in 0..bytes.len() {
        match BatchHeader::parse_verified(&bytes[..cut]) {
            Err(FormatError::Incomplete { .. }) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

proptest! {
    /// Transactional batches (version 2) carry their stamp, decode the same
    /// records, and take damage like version 1; control batches carry their marker.
    #[test]
    fn transactional_roundtrip(records in proptest::collection::vec(owned_record(), 1..10), producer_id in any::<u64>(), epoch in any::<u32>(), transaction in any::<u32>(), flip in any::<prop::sample::Index>(), commit in any::<bool>()) {
        let stamp = TxnStamp { producer_id, epoch, transaction };
        let mut enc = BatchEncoder::new();
        enc.begin_transaction(stamp);
        for (i, r) in records.iter().enumerate() {
            let headers: Vec<(&str, &[u8])> = r.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
            enc.push(i as u32, r.timestamp, &Record { key: r.key.as_deref(), value: r.value.as_deref(), timestamp: None, headers: &headers });
        }
        let bytes = { let b = enc.finish(); seal(b, 9); b.to_vec() };
        let h = BatchHeader::parse_verified(&bytes).unwrap();
        prop_assert_eq!((h.txn, h.control, h.header_len, bytes[12]), (Some(stamp), false, TXN_HEADER_LEN, MAGIC_TXN));
        let decoded: Vec<_> = RecordIter::new(h, &bytes).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(decoded.len(), records.len());
        for (got, want) in decoded.iter().zip(&records) {
            prop_assert_eq!(got.value, want.value.as_deref());
            prop_assert_eq!(got.key, want.key.as_deref());
        }
        let mut damaged = bytes.clone();
        let i = flip.index(damaged.len());
        damaged[i] ^= 0x41;
        prop_assert!(BatchHeader::parse_verified(&damaged).is_err(), "damage at {} must fail the CRC", i);

        let marker = if commit { Marker::Commit } else { Marker::Abort };
        let mut control = control_batch(stamp, marker, 5);
        seal(&mut control, 30);
        let h = BatchHeader::parse_verified(&control).unwrap();
        prop_assert!(h.control);
        prop_assert_eq!(h.txn, Some(stamp));
        let r = RecordIter::new(h, &control).next().unwrap().unwrap();
        prop_assert_eq!(Marker::from_key(r.key), Some(marker));
        prop_assert_eq!(r.offset, 30);
    }
}

#[test]
fn unknown_versions_are_refused_by_name() {
    let rec = OwnedRecord { key: None, value: Some(vec![1]), timestamp: 5, headers: vec![] };
    let mut bytes = encode(&[rec], &[0], 0);
    bytes[12] = 3;
    let err = BatchHeader::parse(&bytes).unwrap_err().to_string();
    assert!(err.contains("unknown batch format version 3"), "{err}");
}
