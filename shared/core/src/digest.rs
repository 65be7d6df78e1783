//! Stable digests: the same input gives the same value in every process and release (unlike
//! `std`'s randomly seeded hasher), so they can be stored and compared later (drift hashes, pod-set
//! digests).

/// FNV-1a, 64 bits, as 16 hex digits.
pub fn fnv1a_hex(bytes: impl IntoIterator<Item = u8>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_values() {
        // The published FNV-1a 64 test vectors.
        assert_eq!(super::fnv1a_hex(*b""), "cbf29ce484222325");
        assert_eq!(super::fnv1a_hex(*b"a"), "af63dc4c8601ec8c");
        assert_eq!(super::fnv1a_hex(*b"foobar"), "85944171f73967e8");
    }
}
