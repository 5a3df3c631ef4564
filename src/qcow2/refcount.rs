//! Refcount entries (docs/interop/qcow2.txt, "Host cluster management").

/// Entry `index` of a refcount block with `1 << order`-bit entries. Sub-byte
/// widths start from the least significant bit, as the spec says.
pub fn refcount_at(block: &[u8], index: u64, order: u32) -> u64 {
    let bits = 1u64 << order;
    let bit = index * bits;
    let byte = (bit / 8) as usize;
    let width = bits.div_ceil(8) as usize;
    let Some(b) = block.get(byte..byte + width) else {
        return 0;
    };
    if bits < 8 {
        (u64::from(b[0]) >> (bit % 8)) & ((1 << bits) - 1)
    } else {
        b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
    }
}

#[cfg(test)]
mod tests {
    use super::refcount_at;

    #[test]
    fn decodes_every_width() {
        let block = [0b1011_0110u8, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde];
        assert_eq!(refcount_at(&block, 0, 0), 0);
        assert_eq!(refcount_at(&block, 1, 0), 1);
        assert_eq!(refcount_at(&block, 1, 1), 0b01);
        assert_eq!(refcount_at(&block, 1, 2), 0b1011);
        assert_eq!(refcount_at(&block, 1, 3), 0x12);
        assert_eq!(refcount_at(&block, 1, 4), 0x3456);
        assert_eq!(refcount_at(&block, 1, 5), 0x789abcde);
        assert_eq!(refcount_at(&block, 0, 6), 0xb612_3456_789a_bcde);
        assert_eq!(refcount_at(&block, 9, 6), 0);
    }
}
