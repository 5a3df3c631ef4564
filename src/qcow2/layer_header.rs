//! The header of a synthesized layer (docs/interop/qcow2.txt, "Header"):
//! encoded with the field offsets the decoder in [`super::header`] reads.

use crate::error::{Error, Result};
use crate::qcow2::extensions::{EXT_BACKING_FORMAT, EXT_END};
use crate::qcow2::header::{CompressionType, INCOMPAT_COMPRESSION, QCOW2_MAGIC, field};

/// Length of the version 3 header with the compression type field, padded
/// to 8 bytes: what [`LayerHeader::encode`] writes.
pub const V3_HEADER_LENGTH: u32 = 112;

/// The header of a synthesized layer: a qcow2 v3 header over an optional
/// backing file, with no snapshots and 16-bit or other refcounts.
pub struct LayerHeader<'a> {
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual size in bytes.
    pub size: u64,
    /// Entries of the L1 table.
    pub l1_size: u32,
    /// Where the L1 table is.
    pub l1_table_offset: u64,
    /// Where the refcount table is.
    pub refcount_table_offset: u64,
    /// Clusters of the refcount table.
    pub refcount_table_clusters: u32,
    /// log2 of the refcount width in bits.
    pub refcount_order: u32,
    /// How compressed clusters are encoded.
    pub compression_type: CompressionType,
    /// Backing file name and format, if any.
    pub backing: Option<(&'a str, &'a str)>,
}

impl LayerHeader<'_> {
    /// The first cluster of the file: header, backing format extension,
    /// end of extensions, then the backing file name.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let cs = 1usize << self.cluster_bits;
        let mut b = vec![0u8; V3_HEADER_LENGTH as usize];
        let put32 = |b: &mut [u8], o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_be_bytes());
        let put64 = |b: &mut [u8], o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_be_bytes());
        let zstd = self.compression_type == CompressionType::Zstd;
        put32(&mut b, field::MAGIC, QCOW2_MAGIC);
        put32(&mut b, field::VERSION, 3);
        put32(&mut b, field::CLUSTER_BITS, self.cluster_bits);
        put64(&mut b, field::SIZE, self.size);
        put32(&mut b, field::L1_SIZE, self.l1_size);
        put64(&mut b, field::L1_TABLE_OFFSET, self.l1_table_offset);
        put64(
            &mut b,
            field::REFCOUNT_TABLE_OFFSET,
            self.refcount_table_offset,
        );
        put32(
            &mut b,
            field::REFCOUNT_TABLE_CLUSTERS,
            self.refcount_table_clusters,
        );
        let incompatible = if zstd { INCOMPAT_COMPRESSION } else { 0 };
        put64(&mut b, field::INCOMPATIBLE_FEATURES, incompatible);
        put32(&mut b, field::REFCOUNT_ORDER, self.refcount_order);
        put32(&mut b, field::HEADER_LENGTH, V3_HEADER_LENGTH);
        b[field::COMPRESSION_TYPE] = u8::from(zstd);
        if let Some((_, format)) = self.backing {
            let fmt = format.as_bytes();
            b.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
            b.extend_from_slice(&(fmt.len() as u32).to_be_bytes());
            b.extend_from_slice(fmt);
            b.resize(b.len().next_multiple_of(8), 0);
        }
        b.extend_from_slice(&EXT_END.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        if let Some((name, _)) = self.backing {
            let at = b.len() as u64;
            put64(&mut b, field::BACKING_FILE_OFFSET, at);
            put32(&mut b, field::BACKING_FILE_SIZE, name.len() as u32);
            b.extend_from_slice(name.as_bytes());
        }
        if b.len() > cs {
            return Err(Error::Unsupported {
                feature: format!("backing file name too long for a {cs}-byte header cluster"),
            });
        }
        b.resize(cs, 0);
        Ok(b)
    }
}
