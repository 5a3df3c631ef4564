//! Reading stored refcounts (docs/interop/qcow2.txt, "Host cluster management").

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::image::Image;
use crate::qcow2::be::be64_table;
use crate::qcow2::cluster::REFT_OFFSET_MASK;
use crate::qcow2::offsets::HostOffset;

/// The refcount table of an image, loaded once, with blocks read through the
/// image's refcount-block cache.
pub struct Refcounts {
    image: Arc<Image>,
    table: Vec<u64>,
}

impl Refcounts {
    /// Load the refcount table (its size was validated when the header was read).
    pub fn load(image: &Arc<Image>) -> Result<Refcounts> {
        let h = image.header();
        let bytes = image.file().read_vec(
            h.refcount_table_offset,
            u64::from(h.refcount_table_clusters) << h.cluster_bits,
            "refcount table",
        )?;
        Ok(Refcounts {
            image: Arc::clone(image),
            table: be64_table(&bytes),
        })
    }

    /// The raw refcount table entries.
    pub fn table(&self) -> &[u64] {
        &self.table
    }

    /// Refcount entries per refcount block.
    pub fn entries_per_block(&self) -> u64 {
        let h = self.image.header();
        (h.cluster_size() * 8) >> h.refcount_order
    }

    /// The stored refcount of host cluster `cluster`. Clusters beyond the
    /// table, or in a block that is not allocated, have refcount 0.
    pub fn get(&self, cluster: u64) -> Result<u64> {
        let h = self.image.header();
        let per_block = self.entries_per_block();
        let Some(&entry) = usize::try_from(cluster / per_block)
            .ok()
            .and_then(|i| self.table.get(i))
        else {
            return Ok(0);
        };
        let block = HostOffset(entry & REFT_OFFSET_MASK);
        if block.0 == 0 {
            return Ok(0);
        }
        if !block.is_cluster_aligned(h.cluster_bits) {
            return Err(Error::corrupt(
                format!("refcount table entry {}", cluster / per_block),
                format!("refcount block offset {block} is not cluster aligned"),
            ));
        }
        let image = &self.image;
        let data = image
            .caches()
            .refblocks
            .get_or_load((image.id(), block.0), || {
                image.file().read_vec(
                    block.0,
                    h.cluster_size(),
                    &format!("refcount block at {block}"),
                )
            })?;
        Ok(refcount_at(&data, cluster % per_block, h.refcount_order))
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
