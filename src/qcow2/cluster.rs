//! Cluster mapping: L1 and L2 entry decoding (docs/interop/qcow2.txt,
//! "Cluster mapping" and "Extended L2 Entries").
//!
//! This is the only module that knows the bit layout of L1 and L2 entries
//! (refcount entries are [`super::refcount`]'s); reads match on
//! [`L2Entry`] and [`Mapping`], the check on the fields of [`l1_fields`]
//! and [`l2_fields`], the one classifier both start from.

use crate::error::{Error, Result};
use crate::qcow2::offsets::HostOffset;

/// L1 entry bits 9-55: offset of the L2 table.
pub const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry bits 9-55: host cluster offset of a standard cluster.
pub const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bit 63 of L1 and L2 entries: refcount is exactly one.
pub const QCOW_OFLAG_COPIED: u64 = 1 << 63;
/// Bit 62 of an L2 entry: the cluster is compressed.
pub const QCOW_OFLAG_COMPRESSED: u64 = 1 << 62;
/// Bit 0 of a standard L2 entry: the cluster reads as zeros.
pub const QCOW_OFLAG_ZERO: u64 = 1;
/// L1 entry bits that must be zero (1-8 and 56-62).
pub const L1E_RESERVED_MASK: u64 = 0x7f00_0000_0000_01ff;
/// Standard L2 entry bits that must be zero (1-8 and 56-61).
pub const L2E_STD_RESERVED_MASK: u64 = 0x3f00_0000_0000_01fe;
/// Number of subclusters per cluster with extended L2 entries.
pub const SUBCLUSTERS: u32 = 32;
/// Bytes of a standard L2 entry (and of an L1 entry); an extended L2 entry
/// is two of these words, the entry and its subcluster bitmap.
pub const L2E_WORD_SIZE: u64 = 8;

/// Geometry of compressed cluster descriptors, derived from cluster_bits.
#[derive(Clone, Copy, Debug)]
pub struct CompressedGeometry {
    csize_shift: u32,
    csize_mask: u64,
    offset_mask: u64,
}

impl CompressedGeometry {
    /// The descriptor layout for clusters of `1 << cluster_bits` bytes.
    pub fn new(cluster_bits: u32) -> CompressedGeometry {
        let csize_shift = 62 - (cluster_bits - 8);
        CompressedGeometry {
            csize_shift,
            csize_mask: (1u64 << (cluster_bits - 8)) - 1,
            offset_mask: (1u64 << csize_shift) - 1,
        }
    }
}

/// What one L2 entry says about its guest cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2Entry {
    /// Not allocated here: read from the backing file, or zeros.
    Unallocated,
    /// Reads as zeros; the host cluster (if any) is preallocation only.
    Zero {
        /// Preallocated host cluster, if any.
        host: Option<HostOffset>,
    },
    /// Data in one host cluster.
    Data {
        /// Host cluster offset (cluster aligned).
        host: HostOffset,
    },
    /// Extended L2 entry: per-subcluster allocation and zero bits.
    Subclusters {
        /// Host cluster offset, if set.
        host: Option<HostOffset>,
        /// Allocation bitmap (bit x: subcluster x).
        alloc: u32,
        /// Reads-as-zero bitmap (bit x: subcluster x).
        zero: u32,
    },
    /// Compressed data at an unaligned host offset.
    Compressed {
        /// Host offset of the compressed data.
        host: HostOffset,
        /// Number of bytes that may hold compressed data.
        len: u64,
    },
}

/// What a run of guest bytes of a state maps to, at the image's own level:
/// the one enum for "what is this guest byte"; everything above this
/// module matches on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// Not allocated in this image: the backing file's bytes, or zeros.
    Unallocated,
    /// Reads as zeros.
    Zero,
    /// Stored at this host offset (of the first byte of the run).
    Data(HostOffset),
    /// Inside a compressed cluster.
    Compressed {
        /// Host offset of the compressed data.
        host: HostOffset,
        /// Bytes of compressed data.
        len: u64,
        /// Offset of the run's first byte inside the decompressed cluster.
        within: u64,
    },
}

impl Mapping {
    /// The mapping of the byte `k` bytes further into a run that starts
    /// with this one.
    pub fn advanced(self, k: u64) -> Mapping {
        match self {
            Mapping::Data(h) => Mapping::Data(HostOffset(h.0 + k)),
            Mapping::Compressed { host, len, within } => Mapping::Compressed {
                host,
                len,
                within: within + k,
            },
            m => m,
        }
    }
}

/// The fields of an L1 entry, split out but not judged: what the check
/// counts, and what [`decode_l1`] judges for a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L1Fields {
    /// Bits 9-55: the L2 table's offset (None for 0), aligned or not.
    pub l2: Option<HostOffset>,
    /// Bit 63: QCOW_OFLAG_COPIED.
    pub copied: bool,
    /// The reserved bits that are set (1-8 and 56-62), for messages.
    pub reserved: u64,
}

/// Split an L1 entry into its fields.
pub fn l1_fields(entry: u64) -> L1Fields {
    let off = entry & L1E_OFFSET_MASK;
    L1Fields {
        l2: (off != 0).then_some(HostOffset(off)),
        copied: entry & QCOW_OFLAG_COPIED != 0,
        reserved: entry & L1E_RESERVED_MASK,
    }
}

/// Decode an L1 entry into the offset of its L2 table, if any.
/// `what` names the table for the error message.
pub fn decode_l1(
    entry: u64,
    cluster_bits: u32,
    what: &dyn Fn() -> String,
) -> Result<Option<HostOffset>> {
    let Some(off) = l1_fields(entry).l2 else {
        return Ok(None);
    };
    if !off.is_cluster_aligned(cluster_bits) {
        return Err(Error::corrupt(
            what(),
            format!("L2 table offset {off} is not cluster aligned"),
        ));
    }
    Ok(Some(off))
}

/// The fields of an L2 entry (and of its bitmap word, with extended L2
/// entries), classified as QEMU's `qcow2_get_cluster_type` classifies them
/// but not judged: the one classifier, which the check counts from and
/// [`decode_l2`] judges for a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2Fields {
    /// Compressed or standard, with the fields of that kind.
    pub kind: L2Kind,
    /// Bit 63: QCOW_OFLAG_COPIED.
    pub copied: bool,
    /// The bitmap word of an extended entry (0 without one), for messages.
    pub bitmap: u64,
}

/// The two kinds of L2 entry (bit 62).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2Kind {
    /// A compressed cluster's descriptor.
    Compressed {
        /// Host offset of the compressed data.
        host: HostOffset,
        /// Bytes from `host` to the end of the descriptor's last sector.
        len: u64,
        /// Bits 0-61 of the entry, as QEMU prints a descriptor.
        descriptor: u64,
    },
    /// A standard cluster descriptor.
    Standard {
        /// Bits 9-55: the host cluster (None for 0), aligned or not.
        host: Option<HostOffset>,
        /// Bit 0 of an entry without subclusters: the cluster reads as zeros.
        zero: bool,
        /// The reserved bits that are set (1-8 and 56-61), for messages.
        reserved: u64,
        /// With extended L2 entries, the subclusters' bitmaps.
        subclusters: Option<SubclusterBits>,
    },
}

/// The bitmap word of an extended L2 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubclusterBits {
    /// Bits 0-31: allocated subclusters (bit x: subcluster x).
    pub alloc: u32,
    /// Bits 32-63: subclusters that read as zeros.
    pub zero: u32,
}

impl SubclusterBits {
    /// Split a bitmap word.
    pub fn of(bitmap: u64) -> SubclusterBits {
        SubclusterBits {
            alloc: bitmap as u32,
            zero: (bitmap >> 32) as u32,
        }
    }

    /// True when some subcluster is allocated or reads as zeros.
    pub fn any(self) -> bool {
        self.alloc != 0 || self.zero != 0
    }
}

/// Split an L2 entry into its fields; `bitmap` is the second word of an
/// extended entry.
pub fn l2_fields(entry: u64, bitmap: Option<u64>, geo: CompressedGeometry) -> L2Fields {
    let kind = if entry & QCOW_OFLAG_COMPRESSED != 0 {
        let host = entry & geo.offset_mask;
        let nb_csectors = ((entry >> geo.csize_shift) & geo.csize_mask) + 1;
        L2Kind::Compressed {
            host: HostOffset(host),
            len: nb_csectors * 512 - (host & 511),
            descriptor: entry & !QCOW_OFLAG_COPIED & !QCOW_OFLAG_COMPRESSED,
        }
    } else {
        let raw = entry & L2E_OFFSET_MASK;
        L2Kind::Standard {
            host: (raw != 0).then_some(HostOffset(raw)),
            zero: bitmap.is_none() && entry & QCOW_OFLAG_ZERO != 0,
            reserved: entry & L2E_STD_RESERVED_MASK,
            subclusters: bitmap.map(SubclusterBits::of),
        }
    };
    L2Fields {
        kind,
        copied: entry & QCOW_OFLAG_COPIED != 0,
        bitmap: bitmap.unwrap_or(0),
    }
}

/// Entry `index` of an L2 table of raw words (two words an entry with
/// extended L2 entries): the entry, and its bitmap word when extended.
/// Words past the end of the table read as zeros.
pub fn l2_words(table: &[u64], index: u64, extended: bool) -> (u64, Option<u64>) {
    let word = |i: u64| {
        usize::try_from(i)
            .ok()
            .and_then(|i| table.get(i))
            .copied()
            .unwrap_or(0)
    };
    if extended {
        (word(index * 2), Some(word(index * 2 + 1)))
    } else {
        (word(index), None)
    }
}

/// Decode an L2 entry for a read; `bitmap` is the second word of an
/// extended entry. What [`l2_fields`] finds, judged: a host cluster must be
/// aligned, and subcluster bitmaps consistent.
pub fn decode_l2(
    entry: u64,
    bitmap: Option<u64>,
    cluster_bits: u32,
    geo: CompressedGeometry,
    what: &dyn Fn() -> String,
) -> Result<L2Entry> {
    let (host, zero, subclusters) = match l2_fields(entry, bitmap, geo).kind {
        L2Kind::Compressed { host, len, .. } => return Ok(L2Entry::Compressed { host, len }),
        L2Kind::Standard {
            host,
            zero,
            subclusters,
            ..
        } => (host, zero, subclusters),
    };
    if let Some(h) = host
        && !h.is_cluster_aligned(cluster_bits)
    {
        return Err(Error::corrupt(
            what(),
            format!("cluster offset {h} is not cluster aligned"),
        ));
    }
    if let Some(SubclusterBits { alloc, zero }) = subclusters {
        let bitmap = bitmap.unwrap_or(0);
        if alloc & zero != 0 {
            return Err(Error::corrupt(
                what(),
                format!("subcluster bitmap {bitmap:#x} marks subclusters both allocated and zero"),
            ));
        }
        if alloc != 0 && host.is_none() {
            return Err(Error::corrupt(
                what(),
                format!("subcluster bitmap {bitmap:#x} allocates subclusters of no cluster"),
            ));
        }
        return Ok(L2Entry::Subclusters { host, alloc, zero });
    }
    if zero {
        return Ok(L2Entry::Zero { host });
    }
    Ok(match host {
        Some(host) => L2Entry::Data { host },
        None => L2Entry::Unallocated,
    })
}

/// Encode an L1 entry pointing at the L2 table at `l2` (refcount one).
pub fn encode_l1(l2: Option<HostOffset>) -> u64 {
    l2.map_or(0, |o| o.0 | QCOW_OFLAG_COPIED)
}

impl L2Entry {
    /// Encode as a standard (64-bit) L2 entry, as a writer of a new image
    /// whose every data cluster has refcount one. Subcluster entries have
    /// no standard form and encode as unallocated.
    pub fn encode(&self, geo: CompressedGeometry) -> u64 {
        match *self {
            L2Entry::Unallocated | L2Entry::Subclusters { .. } => 0,
            L2Entry::Zero { host } => host.map_or(0, |h| h.0) | QCOW_OFLAG_ZERO,
            L2Entry::Data { host } => host.0 | QCOW_OFLAG_COPIED,
            L2Entry::Compressed { host, len } => {
                let nb_csectors = (len + (host.0 & 511)).div_ceil(512);
                let extra = (nb_csectors.saturating_sub(1)) & geo.csize_mask;
                QCOW_OFLAG_COMPRESSED | (extra << geo.csize_shift) | (host.0 & geo.offset_mask)
            }
        }
    }

    /// What byte `in_cluster` of the entry's cluster maps to, with
    /// subclusters of `sc_size` bytes (the cluster size without extended L2).
    pub fn mapping_at(&self, in_cluster: u64, sc_size: u64) -> Mapping {
        let sc = (in_cluster / sc_size) as u32;
        let in_sc = in_cluster % sc_size;
        match *self {
            L2Entry::Unallocated => Mapping::Unallocated,
            L2Entry::Zero { .. } => Mapping::Zero,
            L2Entry::Data { host } => Mapping::Data(HostOffset(host.0 + in_cluster)),
            L2Entry::Compressed { host, len } => Mapping::Compressed {
                host,
                len,
                within: in_cluster,
            },
            L2Entry::Subclusters { host, alloc, zero } => {
                let bit = 1u32.checked_shl(sc).unwrap_or(0);
                if alloc & bit != 0 {
                    // decode_l2 guarantees a host offset when any bit is allocated.
                    let base = host.map_or(0, |h| h.0);
                    Mapping::Data(HostOffset(base + u64::from(sc) * sc_size + in_sc))
                } else if zero & bit != 0 {
                    Mapping::Zero
                } else {
                    Mapping::Unallocated
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn what() -> String {
        "test".into()
    }

    #[test]
    fn decodes_standard_entries() {
        let geo = CompressedGeometry::new(16);
        assert_eq!(
            decode_l2(0, None, 16, geo, &what).unwrap(),
            L2Entry::Unallocated
        );
        assert_eq!(
            decode_l2(QCOW_OFLAG_COPIED | 0x50000, None, 16, geo, &what).unwrap(),
            L2Entry::Data {
                host: HostOffset(0x50000)
            }
        );
        assert_eq!(
            decode_l2(1, None, 16, geo, &what).unwrap(),
            L2Entry::Zero { host: None }
        );
        assert!(decode_l2(0x50200, None, 16, geo, &what).is_err());
    }

    #[test]
    fn decodes_compressed_entries() {
        // 64 KiB clusters: csize_shift = 54; 3 extra sectors at offset 0x12345.
        let geo = CompressedGeometry::new(16);
        let entry = QCOW_OFLAG_COMPRESSED | (3u64 << 54) | 0x12345;
        assert_eq!(
            decode_l2(entry, None, 16, geo, &what).unwrap(),
            L2Entry::Compressed {
                host: HostOffset(0x12345),
                len: 4 * 512 - 0x145
            }
        );
    }

    #[test]
    fn encodes_what_it_decodes() {
        let geo = CompressedGeometry::new(16);
        for e in [
            L2Entry::Unallocated,
            L2Entry::Zero { host: None },
            L2Entry::Data {
                host: HostOffset(0x70000),
            },
            L2Entry::Compressed {
                host: HostOffset(0x12345),
                len: 4 * 512 - 0x145,
            },
        ] {
            assert_eq!(decode_l2(e.encode(geo), None, 16, geo, &what).unwrap(), e);
        }
        assert_eq!(
            encode_l1(Some(HostOffset(0x30000))),
            QCOW_OFLAG_COPIED | 0x30000
        );
        assert_eq!(encode_l1(None), 0);
    }

    #[test]
    fn decodes_subclusters() {
        let geo = CompressedGeometry::new(16);
        let e = decode_l2(0x50000, Some((0b10u64 << 32) | 0b01), 16, geo, &what).unwrap();
        assert_eq!(e.mapping_at(0, 2048), Mapping::Data(HostOffset(0x50000)));
        assert_eq!(e.mapping_at(100, 2048), Mapping::Data(HostOffset(0x50064)));
        assert_eq!(e.mapping_at(2048, 2048), Mapping::Zero);
        assert_eq!(e.mapping_at(4096, 2048), Mapping::Unallocated);
        assert!(decode_l2(0, Some(1), 16, geo, &what).is_err());
        assert!(decode_l2(0x50000, Some((1u64 << 32) | 1), 16, geo, &what).is_err());
    }

    #[test]
    fn l1_entries_must_be_aligned() {
        assert_eq!(decode_l1(0, 16, &what).unwrap(), None);
        assert_eq!(
            decode_l1(QCOW_OFLAG_COPIED | 0x30000, 16, &what).unwrap(),
            Some(HostOffset(0x30000))
        );
        assert!(decode_l1(0x30200, 16, &what).is_err());
    }
}
