//! An image's stored refcounts: its refcount table, and blocks read through
//! the image's refcount-block cache.

use std::sync::Arc;

use super::Image;
use crate::error::{Error, Result};
use crate::qcow2::be::be64_table;
use crate::qcow2::refcount::{refcount_at, reftable_fields};

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
        self.image.header().refcounts_per_block()
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
        let Some(block) = reftable_fields(entry).block else {
            return Ok(0);
        };
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
