//! The one validator for contiguous tables, called before anything is
//! allocated for a table.

use crate::error::{Error, Result};
use crate::qcow2::offsets::HostOffset;
use crate::source::SourceFile;

/// The one validator for contiguous tables (L1, refcount table, snapshot
/// table, snapshot L1 tables): offset aligned, size within `limit`, and the
/// whole table inside the file. Called before anything is allocated for it.
pub fn validate_table(
    file: &SourceFile,
    cluster_bits: u32,
    what: &'static str,
    offset: u64,
    bytes: u64,
    limit: u64,
) -> Result<()> {
    if bytes > limit {
        return Err(Error::TooLarge {
            what,
            value: bytes,
            limit,
        });
    }
    if bytes == 0 {
        return Ok(());
    }
    if !HostOffset(offset).is_cluster_aligned(cluster_bits) {
        return Err(Error::corrupt(
            what,
            format!("offset {offset:#x} is not cluster aligned"),
        ));
    }
    if offset == 0 {
        return Err(Error::corrupt(what, "offset 0 overlaps the header"));
    }
    file.check_range(offset, bytes, what)
}
