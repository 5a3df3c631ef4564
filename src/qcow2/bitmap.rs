//! Persistent dirty bitmaps (spec, "Bitmaps extension"): the bit layout of
//! bitmap table entries.

/// Bitmap table entry bits that must be zero (1-8 and 56-63).
pub const BME_RESERVED_MASK: u64 = 0xff00_0000_0000_01fe;
/// Bitmap table entry bits holding the data cluster's offset.
pub const BME_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
