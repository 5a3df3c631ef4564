//! The qcow2 header and its extensions (docs/interop/qcow2.txt, "Header").

use crate::error::{Error, Result};
use crate::qcow2::be::Be;
use crate::qcow2::cluster::{L2E_WORD_SIZE, SUBCLUSTERS};
use crate::qcow2::extensions::Extensions;
pub use crate::qcow2::extensions::{BitmapDirectory, FeatureName};
use crate::qcow2::offsets::HostOffset;
use crate::qcow2::refcount::{refcount_max, refcounts_per_block};
use crate::qcow2::table::validate_table;
use crate::source::SourceFile;

/// "QFI\xfb": the first four bytes of every qcow2 file.
pub const QCOW2_MAGIC: u32 = 0x5146_49fb;
/// QEMU counts disk sizes in whole 512-byte sectors: a virtual size or a
/// snapshot's disk size is rounded down to a multiple of this.
pub const SECTOR_SIZE: u64 = 512;
/// Smallest cluster size the specification allows (512 bytes).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest cluster size QEMU creates or opens (2 MiB).
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Length of the version 2 header; version 3 headers are at least 104 bytes.
pub const V2_HEADER_LENGTH: u32 = 72;
/// Minimum version 3 header length (spec: "header_length ... 104 or 112").
pub const V3_MIN_HEADER_LENGTH: u32 = 104;
/// QEMU refuses backing file names longer than this (1023 bytes).
pub const MAX_BACKING_FILE_NAME: u32 = 1023;
/// QEMU's limit on the L1 table size (QCOW_MAX_L1_SIZE, 32 MiB).
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// QEMU's limit on the refcount table size (QCOW_MAX_REFTABLE_SIZE, 8 MiB).
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// QEMU's limit on the number of snapshots (QCOW_MAX_SNAPSHOTS).
pub const MAX_SNAPSHOTS: u32 = 65536;
/// QEMU's limit on the snapshot table size (QCOW_MAX_SNAPSHOTS_SIZE, 64 MiB).
pub const MAX_SNAPSHOT_TABLE_BYTES: u64 = 64 << 20;
/// Largest refcount_order the specification allows (64-bit refcounts).
pub const MAX_REFCOUNT_ORDER: u32 = 6;

/// Incompatible feature bit 0: the image was not closed cleanly.
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit 1: the image was marked corrupt by QEMU.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: guest data lives in an external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: the compression type field is valid.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: L2 entries are 128 bits with subclusters.
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
/// Every incompatible bit this reader understands.
pub const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
/// Compatible feature bit 0: lazy refcounts.
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;
/// Autoclear feature bit 0: bitmaps extension is consistent.
pub const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
/// Autoclear feature bit 1: the external data file is raw (guest = host offsets).
pub const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

/// Byte offsets of the header fields (spec, "Header"), used by both the
/// decoder and the layer header's encoder.
pub(super) mod field {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const BACKING_FILE_OFFSET: usize = 8;
    pub const BACKING_FILE_SIZE: usize = 16;
    pub const CLUSTER_BITS: usize = 20;
    pub const SIZE: usize = 24;
    pub const CRYPT_METHOD: usize = 32;
    pub const L1_SIZE: usize = 36;
    pub const L1_TABLE_OFFSET: usize = 40;
    pub const REFCOUNT_TABLE_OFFSET: usize = 48;
    pub const REFCOUNT_TABLE_CLUSTERS: usize = 56;
    pub const NB_SNAPSHOTS: usize = 60;
    pub const SNAPSHOTS_OFFSET: usize = 64;
    pub const INCOMPATIBLE_FEATURES: usize = 72;
    pub const COMPATIBLE_FEATURES: usize = 80;
    pub const AUTOCLEAR_FEATURES: usize = 88;
    pub const REFCOUNT_ORDER: usize = 96;
    pub const HEADER_LENGTH: usize = 100;
    pub const COMPRESSION_TYPE: usize = 104;
}

/// How compressed clusters are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionType {
    /// Raw deflate (RFC 1951), QEMU's default.
    Zlib,
    /// A zstd frame.
    Zstd,
}

/// A decoded qcow2 header, with its extensions. Field names follow the spec.
#[derive(Clone, Debug)]
pub struct Header {
    /// Format version: 2 or 3.
    pub version: u32,
    /// Where the backing file name is, 0 for none.
    pub backing_file_offset: u64,
    /// Length of the backing file name.
    pub backing_file_size: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes, as recorded.
    pub size: u64,
    /// 0: not encrypted.
    pub crypt_method: u32,
    /// Entries of the active L1 table.
    pub l1_size: u32,
    /// Where the active L1 table is.
    pub l1_table_offset: u64,
    /// Where the refcount table is.
    pub refcount_table_offset: u64,
    /// Clusters the refcount table occupies.
    pub refcount_table_clusters: u32,
    /// Number of internal snapshots.
    pub nb_snapshots: u32,
    /// Where the snapshot table is.
    pub snapshots_offset: u64,
    /// Incompatible feature bits.
    pub incompatible_features: u64,
    /// Compatible feature bits.
    pub compatible_features: u64,
    /// Autoclear feature bits.
    pub autoclear_features: u64,
    /// log2 of the refcount width in bits.
    pub refcount_order: u32,
    /// Length of the header structure.
    pub header_length: u32,
    /// How compressed clusters are encoded.
    pub compression_type: CompressionType,
    /// The backing file name, if any.
    pub backing_file: Option<String>,
    /// The backing file format extension, if present.
    pub backing_format: Option<String>,
    /// The external data file name extension, if present.
    pub data_file: Option<String>,
    /// The feature name table, if present.
    pub feature_names: Vec<FeatureName>,
    /// True when a bitmaps extension is present.
    pub has_bitmaps: bool,
    /// Where the bitmaps extension puts the bitmap directory, when the
    /// extension is well formed.
    pub bitmap_directory: Option<BitmapDirectory>,
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits
    }

    /// True when L2 entries are extended (128-bit, with subclusters).
    pub fn extended_l2(&self) -> bool {
        self.incompatible_features & INCOMPAT_EXTL2 != 0
    }

    /// Size of one L2 entry in bytes (two words with extended L2 entries).
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2() {
            2 * L2E_WORD_SIZE
        } else {
            L2E_WORD_SIZE
        }
    }

    /// Bytes of one subcluster: the cluster size without extended L2
    /// entries, a 32nd of it with them.
    pub fn subcluster_size(&self) -> u64 {
        if self.extended_l2() {
            self.cluster_size() / u64::from(SUBCLUSTERS)
        } else {
            self.cluster_size()
        }
    }

    /// Number of entries in one L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_size()
    }

    /// Guest bytes covered by one L1 entry.
    pub fn l1_coverage(&self) -> u64 {
        self.cluster_size() * self.l2_entries()
    }

    /// Width of one refcount in bits.
    pub fn refcount_bits(&self) -> u32 {
        1 << self.refcount_order
    }

    /// Refcount entries in one refcount block.
    pub fn refcounts_per_block(&self) -> u64 {
        refcounts_per_block(self.cluster_bits, self.refcount_order)
    }

    /// The largest refcount an entry holds.
    pub fn refcount_max(&self) -> u64 {
        refcount_max(self.refcount_order)
    }

    /// Name of a feature bit from the image's own table, if it has one.
    pub fn feature_name(&self, kind: u8, bit: u8) -> Option<&str> {
        self.feature_names
            .iter()
            .find(|f| f.kind == kind && f.bit == bit)
            .map(|f| f.name.as_str())
    }

    /// Read and validate the header of `file`.
    pub fn read(file: &SourceFile) -> Result<Header> {
        let Start {
            version,
            cluster_bits,
            header_length,
        } = Start::read(file)?;
        // The header and its extensions live in the first cluster.
        let first_cluster_len = (1u64 << cluster_bits).min(file.readable_len());
        let cluster = file.read_vec(0, first_cluster_len, "header cluster")?;
        let be = Be::new(&cluster, "header");

        let (incompatible_features, compatible_features, autoclear_features, refcount_order) =
            if version == 3 {
                (
                    be.u64(field::INCOMPATIBLE_FEATURES)?,
                    be.u64(field::COMPATIBLE_FEATURES)?,
                    be.u64(field::AUTOCLEAR_FEATURES)?,
                    be.u32(field::REFCOUNT_ORDER)?,
                )
            } else {
                (0, 0, 0, 4)
            };
        let compression_type =
            compression_type(&be, version, header_length, incompatible_features)?;
        let ext = Extensions::read(&be, header_length)?;
        let mut h = Header {
            version,
            backing_file_offset: be.u64(field::BACKING_FILE_OFFSET)?,
            backing_file_size: be.u32(field::BACKING_FILE_SIZE)?,
            cluster_bits,
            size: be.u64(field::SIZE)? & !(SECTOR_SIZE - 1),
            crypt_method: be.u32(field::CRYPT_METHOD)?,
            l1_size: be.u32(field::L1_SIZE)?,
            l1_table_offset: be.u64(field::L1_TABLE_OFFSET)?,
            refcount_table_offset: be.u64(field::REFCOUNT_TABLE_OFFSET)?,
            refcount_table_clusters: be.u32(field::REFCOUNT_TABLE_CLUSTERS)?,
            nb_snapshots: be.u32(field::NB_SNAPSHOTS)?,
            snapshots_offset: be.u64(field::SNAPSHOTS_OFFSET)?,
            incompatible_features,
            compatible_features,
            autoclear_features,
            refcount_order,
            header_length,
            compression_type,
            backing_file: None,
            backing_format: ext.backing_format,
            data_file: ext.data_file,
            feature_names: ext.feature_names,
            has_bitmaps: ext.has_bitmaps,
            bitmap_directory: ext.bitmap_directory,
        };
        h.validate(file)?;
        h.backing_file = h.read_backing_file_name(file)?;
        Ok(h)
    }

    /// The backing file name the header points at, if any.
    fn read_backing_file_name(&self, file: &SourceFile) -> Result<Option<String>> {
        if self.backing_file_offset == 0 || self.backing_file_size == 0 {
            return Ok(None);
        }
        if self.backing_file_size > MAX_BACKING_FILE_NAME {
            return Err(Error::TooLarge {
                what: "backing_file_size",
                value: u64::from(self.backing_file_size),
                limit: u64::from(MAX_BACKING_FILE_NAME),
            });
        }
        let name = file.read_vec(
            self.backing_file_offset,
            u64::from(self.backing_file_size),
            "backing file name",
        )?;
        Ok(Some(String::from_utf8_lossy(&name).into_owned()))
    }

    fn validate(&self, file: &SourceFile) -> Result<()> {
        if self.crypt_method != 0 {
            let how = if self.crypt_method == 1 {
                "AES"
            } else {
                "LUKS"
            };
            return Err(Error::Unsupported {
                feature: format!("encryption ({how}, crypt_method {})", self.crypt_method),
            });
        }
        let unknown = self.incompatible_features & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let names: Vec<String> = (0..64u8)
                .filter(|b| unknown & (1u64 << b) != 0)
                .map(|b| match self.feature_name(0, b) {
                    Some(n) => format!("bit {b} ({n})"),
                    None => format!("bit {b}"),
                })
                .collect();
            return Err(Error::Unsupported {
                feature: format!("incompatible feature {}", names.join(", ")),
            });
        }
        if self.refcount_order > MAX_REFCOUNT_ORDER {
            return Err(Error::corrupt(
                "header",
                format!("refcount_order {} is above 6", self.refcount_order),
            ));
        }
        if self.incompatible_features & INCOMPAT_DATA_FILE != 0 && self.data_file.is_none() {
            return Err(Error::Unsupported {
                feature: "external data file without a data file name extension".into(),
            });
        }
        if self.nb_snapshots > MAX_SNAPSHOTS {
            return Err(Error::TooLarge {
                what: "nb_snapshots",
                value: u64::from(self.nb_snapshots),
                limit: u64::from(MAX_SNAPSHOTS),
            });
        }
        validate_table(
            file,
            self.cluster_bits,
            "L1 table",
            self.l1_table_offset,
            u64::from(self.l1_size) * 8,
            MAX_L1_BYTES,
        )?;
        validate_table(
            file,
            self.cluster_bits,
            "refcount table",
            self.refcount_table_offset,
            u64::from(self.refcount_table_clusters) << self.cluster_bits,
            MAX_REFTABLE_BYTES,
        )?;
        if self.nb_snapshots > 0
            && !HostOffset(self.snapshots_offset).is_cluster_aligned(self.cluster_bits)
        {
            return Err(Error::corrupt(
                "snapshot table",
                format!("offset {:#x} is not cluster aligned", self.snapshots_offset),
            ));
        }
        // The L1 table must be large enough to map the whole virtual disk.
        let needed = self.size.div_ceil(self.l1_coverage());
        if needed > u64::from(self.l1_size) {
            return Err(Error::corrupt(
                "L1 table",
                format!(
                    "l1_size {} cannot map a virtual size of {} bytes ({needed} entries needed)",
                    self.l1_size, self.size
                ),
            ));
        }
        Ok(())
    }
}

/// What the first bytes of a header say before the rest can be read: that
/// the file is qcow2, its version, and how long its header and clusters are.
struct Start {
    version: u32,
    cluster_bits: u32,
    header_length: u32,
}

impl Start {
    fn read(file: &SourceFile) -> Result<Start> {
        let mut first = [0u8; 112];
        let avail = file.readable_len().min(first.len() as u64) as usize;
        if avail < 4 {
            return Err(Error::NotQcow2 {
                path: file.path().to_path_buf(),
            });
        }
        file.read_exact_at(&mut first[..avail], 0, "header")?;
        let be = Be::new(&first[..avail], "header");
        if be.u32(field::MAGIC)? != QCOW2_MAGIC {
            return Err(Error::NotQcow2 {
                path: file.path().to_path_buf(),
            });
        }
        let version = be.u32(field::VERSION)?;
        if version != 2 && version != 3 {
            return Err(Error::Unsupported {
                feature: format!("qcow2 version {version}"),
            });
        }
        let cluster_bits = be.u32(field::CLUSTER_BITS)?;
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Error::corrupt(
                "header",
                format!(
                    "cluster_bits {cluster_bits} outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"
                ),
            ));
        }
        let header_length = if version == 2 {
            V2_HEADER_LENGTH
        } else {
            be.u32(field::HEADER_LENGTH)?
        };
        if version == 3 && (header_length < V3_MIN_HEADER_LENGTH || header_length % 8 != 0) {
            return Err(Error::corrupt(
                "header",
                format!("header_length {header_length} is not a multiple of 8 of at least 104"),
            ));
        }
        let cluster_size = 1u64 << cluster_bits;
        if u64::from(header_length) > cluster_size {
            return Err(Error::corrupt(
                "header",
                format!("header_length {header_length} exceeds the cluster size {cluster_size}"),
            ));
        }
        Ok(Start {
            version,
            cluster_bits,
            header_length,
        })
    }
}

/// The compression type field: present in version 3 headers longer than
/// 104 bytes, and set only together with its incompatible bit.
fn compression_type(
    be: &Be<'_>,
    version: u32,
    header_length: u32,
    incompatible_features: u64,
) -> Result<CompressionType> {
    let t = if version == 3 && header_length > V3_MIN_HEADER_LENGTH {
        match be.u8(field::COMPRESSION_TYPE)? {
            0 => CompressionType::Zlib,
            1 => CompressionType::Zstd,
            t => {
                return Err(Error::Unsupported {
                    feature: format!("compression type {t}"),
                });
            }
        }
    } else {
        CompressionType::Zlib
    };
    if t != CompressionType::Zlib && incompatible_features & INCOMPAT_COMPRESSION == 0 {
        return Err(Error::corrupt(
            "header",
            "compression_type is set but the compression incompatible bit is not",
        ));
    }
    Ok(t)
}
