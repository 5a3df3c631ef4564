//! Refcount entries (docs/interop/qcow2.txt, "Host cluster management"):
//! refcount table entries and refcount block entries of any width, decoded
//! and encoded here and nowhere else.

use crate::qcow2::offsets::HostOffset;

/// Refcount table entry bits 9-63: offset of a refcount block.
const REFT_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;
/// Refcount table entry bits that must be zero (0-8).
const REFT_RESERVED_MASK: u64 = 0x1ff;

/// The fields of a refcount table entry, split out but not judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefTableEntry {
    /// The refcount block's offset (None for 0), aligned or not.
    pub block: Option<HostOffset>,
    /// The reserved bits that are set (0-8), for messages.
    pub reserved: u64,
}

/// Split a refcount table entry into its fields.
pub fn reftable_fields(entry: u64) -> RefTableEntry {
    let off = entry & REFT_OFFSET_MASK;
    RefTableEntry {
        block: (off != 0).then_some(HostOffset(off)),
        reserved: entry & REFT_RESERVED_MASK,
    }
}

/// Encode a refcount table entry pointing at the block at `block`.
pub fn encode_reftable(block: Option<HostOffset>) -> u64 {
    block.map_or(0, |b| b.0 & REFT_OFFSET_MASK)
}

/// Refcount entries in one refcount block of a file with clusters of
/// `1 << cluster_bits` bytes and `1 << refcount_order`-bit refcounts.
pub fn refcounts_per_block(cluster_bits: u32, refcount_order: u32) -> u64 {
    (8u64 << cluster_bits) >> refcount_order
}

/// The largest refcount `1 << refcount_order`-bit entries hold.
pub fn refcount_max(refcount_order: u32) -> u64 {
    if refcount_order >= 6 {
        u64::MAX
    } else {
        (1u64 << (1u32 << refcount_order)) - 1
    }
}

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

/// Byte `byte` of a refcount block with `1 << order`-bit entries whose
/// entry `i` is `refcount(i)` (values wider than an entry are cut to it):
/// a writer produces a block a byte at a time, and each byte from the
/// entries it holds, in the layout [`refcount_at`] reads.
pub fn refcount_block_byte(byte: u64, order: u32, refcount: &dyn Fn(u64) -> u64) -> u8 {
    let bits = 1u64 << order;
    if bits < 8 {
        // Several entries a byte, the first in the least significant bits.
        let per_byte = 8 / bits;
        let mask = (1u64 << bits) - 1;
        (0..per_byte).fold(0u8, |b, k| {
            b | (((refcount(byte * per_byte + k) & mask) << (k * bits)) as u8)
        })
    } else {
        let width = bits / 8;
        let value = refcount(byte / width);
        let shift = 8 * (width - 1 - byte % width);
        (value.checked_shr(shift as u32).unwrap_or(0) & 0xff) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn encodes_what_it_decodes_at_every_width() {
        let value = |i: u64| (i * 0x9e37_79b9_7f4a_7c15) >> 7;
        for order in 0..=6 {
            let max = refcount_max(order);
            let block: Vec<u8> = (0..64)
                .map(|b| refcount_block_byte(b, order, &value))
                .collect();
            let n = (64 * 8) >> order;
            for i in 0..n {
                assert_eq!(
                    refcount_at(&block, i, order),
                    value(i) & max,
                    "order {order}"
                );
            }
        }
    }

    #[test]
    fn splits_reftable_entries() {
        assert_eq!(
            reftable_fields(0x5_0000),
            RefTableEntry {
                block: Some(HostOffset(0x5_0000)),
                reserved: 0
            }
        );
        assert_eq!(reftable_fields(0x1ff).block, None);
        assert_eq!(reftable_fields(0x1ff).reserved, 0x1ff);
        assert_eq!(encode_reftable(Some(HostOffset(0x5_0000))), 0x5_0000);
        assert_eq!(refcounts_per_block(16, 4), 32768);
        assert_eq!(refcount_max(4), 0xffff);
        assert_eq!(refcount_max(6), u64::MAX);
    }
}
