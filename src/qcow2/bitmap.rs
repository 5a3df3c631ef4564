//! Persistent dirty bitmaps (spec, "Bitmaps extension"): the bit layout of
//! bitmap table entries.

use crate::qcow2::offsets::HostOffset;

/// Bitmap table entry bits that must be zero (1-8 and 56-63).
const BME_RESERVED_MASK: u64 = 0xff00_0000_0000_01fe;
/// Bitmap table entry bits holding the data cluster's offset.
const BME_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// The fields of a bitmap table entry, split out but not judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitmapEntry {
    /// The data cluster's offset (None for 0: all zeros, or all ones when
    /// bit 0 is set), aligned or not.
    pub data: Option<HostOffset>,
    /// The reserved bits that are set, for messages.
    pub reserved: u64,
}

/// Split a bitmap table entry into its fields.
pub fn bitmap_entry_fields(entry: u64) -> BitmapEntry {
    let off = entry & BME_OFFSET_MASK;
    BitmapEntry {
        data: (off != 0).then_some(HostOffset(off)),
        reserved: entry & BME_RESERVED_MASK,
    }
}
