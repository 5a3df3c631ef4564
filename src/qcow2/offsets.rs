//! Typed address spaces.
//!
//! A guest offset is a byte position in the virtual disk a state presents; a
//! host offset is a byte position in the image (or data) file. Keeping them
//! apart in the types means a mapping bug is a compile error, not a silent
//! read of the wrong bytes.

use std::fmt;

/// A byte offset in the virtual disk of a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GuestOffset(pub u64);

/// A byte offset in an image file or external data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HostOffset(pub u64);

impl HostOffset {
    /// The offset `n` bytes further on.
    pub fn advanced(self, n: u64) -> HostOffset {
        HostOffset(self.0 + n)
    }

    /// True when the offset is a multiple of the cluster size.
    pub fn is_cluster_aligned(self, cluster_bits: u32) -> bool {
        self.0 & ((1u64 << cluster_bits) - 1) == 0
    }
}

impl fmt::Display for GuestOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "guest {:#x}", self.0)
    }
}

impl fmt::Display for HostOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
