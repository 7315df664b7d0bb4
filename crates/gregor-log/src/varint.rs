//! LEB128 varints and zig-zag encoding for the record format.
//!
//! Decoding is total: malformed input yields `None`, never a panic, because
//! these functions read bytes straight from disk.

/// Appends `v` as an unsigned LEB128 varint.
#[inline]
pub fn put_u64(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends `v` zig-zag encoded.
#[inline]
pub fn put_i64(buf: &mut Vec<u8>, v: i64) {
    put_u64(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Number of bytes `put_u64(v)` writes.
#[inline]
pub fn len_u64(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Number of bytes `put_i64(v)` writes.
#[inline]
pub fn len_i64(v: i64) -> usize {
    len_u64(((v << 1) ^ (v >> 63)) as u64)
}

/// Reads an unsigned varint at `*pos`, advancing it.
#[inline]
pub fn get_u64(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut result = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        result |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(result);
        }
    }
    None
}

/// Reads a zig-zag varint at `*pos`, advancing it.
#[inline]
pub fn get_i64(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let v = get_u64(buf, pos)?;
    Some(((v >> 1) as i64) ^ -((v & 1) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_lengths() {
        for v in [0i64, 1, -1, 63, -64, 64, 300, -300, i64::MAX, i64::MIN] {
            let mut buf = Vec::new();
            put_i64(&mut buf, v);
            assert_eq!(buf.len(), len_i64(v), "len of {v}");
            let mut pos = 0;
            assert_eq!(get_i64(&buf, &mut pos), Some(v));
            assert_eq!(pos, buf.len());
        }
        for v in [0u64, 127, 128, 16383, 16384, u64::MAX] {
            let mut buf = Vec::new();
            put_u64(&mut buf, v);
            assert_eq!(buf.len(), len_u64(v));
        }
    }

    #[test]
    fn truncated_or_overlong_is_none() {
        assert_eq!(get_u64(&[0x80], &mut 0), None);
        assert_eq!(get_u64(&[0xff; 11], &mut 0), None);
    }
}
