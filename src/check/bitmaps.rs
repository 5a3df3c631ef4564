//! The persistent bitmaps' share of the check: the bitmap directory and
//! every bitmap table, with their data clusters.

use super::walk::Walk;
use crate::error::Result;
use crate::qcow2::be::{Be, be64_table};
use crate::qcow2::bitmap::bitmap_entry_fields;
use crate::qcow2::header::BitmapDirectory;
use crate::qcow2::offsets::HostOffset;

/// The largest bitmap directory QEMU accepts (1 KiB for each of 65535
/// bitmaps); a larger one is reported, not read.
pub const MAX_BITMAP_DIRECTORY_BYTES: u64 = 1024 * 65535;
/// The most entries one bitmap table may have (as QEMU).
const MAX_BITMAP_TABLE_ENTRIES: u64 = 0x800_0000;
/// Bound on the bitmap table entries one check visits (2^24: 512 bitmaps
/// of a 1 PiB disk at the default granularity); past it the check stops as
/// incomplete.
pub const MAX_CHECK_BITMAP_ENTRIES: u64 = 1 << 24;
/// Bitmap table entries read at a time.
const BITMAP_TABLE_CHUNK: u64 = 8192;

impl Walk<'_> {
    /// Count the bitmap directory, every bitmap table and every bitmap data
    /// cluster. Tables are read a chunk at a time; their entries share the
    /// walk's bound on visited entries.
    pub(super) fn bitmaps(&mut self, dir: &BitmapDirectory) {
        self.inc(HostOffset(dir.offset), dir.size);
        if dir.size > MAX_BITMAP_DIRECTORY_BYTES || dir.offset & (self.cluster_size - 1) != 0 {
            return self.corrupt(format_args!(
                "ERROR bitmap directory of {} bytes at {:#x} is invalid",
                dir.size, dir.offset
            ));
        }
        let bytes = match self
            .image
            .file()
            .read_vec(dir.offset, dir.size, "bitmap directory")
        {
            Ok(b) => b,
            Err(e) => return self.corrupt(format_args!("ERROR {e}")),
        };
        let dir_bytes = Be::new(&bytes, "bitmap directory");
        let mut pos = 0usize;
        for i in 0..dir.count {
            // The entry's fixed 24 bytes; the last field read ends them.
            let fields = (|| -> Result<_> {
                Ok((
                    dir_bytes.u64(pos)?,
                    u64::from(dir_bytes.u32(pos + 8)?),
                    usize::from(dir_bytes.u16(pos + 18)?),
                    dir_bytes.u32(pos + 20)? as usize,
                ))
            })();
            let Ok((table_offset, table_size, name_size, extra_size)) = fields else {
                return self.corrupt(format_args!(
                    "ERROR bitmap {i} lies past the bitmap directory"
                ));
            };
            pos += (24 + name_size + extra_size).div_ceil(8) * 8;
            if table_size > MAX_BITMAP_TABLE_ENTRIES || table_offset & (self.cluster_size - 1) != 0
            {
                self.corrupt(format_args!(
                    "ERROR bitmap {i}: table of {table_size} entries at {table_offset:#x} is invalid"
                ));
                continue;
            }
            self.inc(HostOffset(table_offset), table_size * 8);
            self.bitmap_table(i, HostOffset(table_offset), table_size);
        }
    }

    pub(super) fn bitmap_table(&mut self, bitmap: u32, offset: HostOffset, entries: u64) {
        let mut done = 0;
        while done < entries {
            let n = (entries - done).min(BITMAP_TABLE_CHUNK);
            if self.bitmap_entries > MAX_CHECK_BITMAP_ENTRIES {
                return; // already reported
            }
            self.bitmap_entries += n;
            if self.bitmap_entries > MAX_CHECK_BITMAP_ENTRIES {
                return self.stop(MAX_CHECK_BITMAP_ENTRIES, "bitmap table entries");
            }
            let at = offset.advanced(done * 8).0;
            let table = match self.image.file().read_vec(at, n * 8, "bitmap table") {
                Ok(b) => be64_table(&b),
                Err(e) => return self.corrupt(format_args!("ERROR bitmap {bitmap}: {e}")),
            };
            for e in table {
                let f = bitmap_entry_fields(e);
                let aligned = f
                    .data
                    .is_none_or(|d| d.is_cluster_aligned(self.cluster_bits));
                if f.reserved != 0 || !aligned {
                    self.corrupt(format_args!(
                        "ERROR bitmap {bitmap}: invalid table entry {e:#x}"
                    ));
                } else if let Some(data) = f.data {
                    self.inc(data, self.cluster_size);
                }
            }
            done += n;
        }
    }
}
