//! A bounds-checked big-endian reader over a buffer read from disk.
//!
//! Every structure is read with one call into a buffer and decoded from it
//! here; a field past the end of the buffer is a `Corrupt` error naming the
//! structure, never a panic.

use crate::error::{Error, Result};

/// Big-endian field access over an on-disk structure held in memory.
pub struct Be<'a> {
    buf: &'a [u8],
    what: &'a str,
}

impl<'a> Be<'a> {
    /// Wrap `buf`, which holds the structure named `what`.
    pub fn new(buf: &'a [u8], what: &'a str) -> Be<'a> {
        Be { buf, what }
    }

    /// The bytes `[off, off + len)`, or an error if they are not all there.
    pub fn bytes(&self, off: usize, len: usize) -> Result<&'a [u8]> {
        off.checked_add(len)
            .and_then(|end| self.buf.get(off..end))
            .ok_or_else(|| {
                Error::corrupt(
                    self.what.to_string(),
                    format!(
                        "field at byte {off} (+{len}) is past its end ({} bytes)",
                        self.buf.len()
                    ),
                )
            })
    }

    /// The byte at `off`.
    pub fn u8(&self, off: usize) -> Result<u8> {
        Ok(self.bytes(off, 1)?[0])
    }

    /// The big-endian u16 at `off`.
    pub fn u16(&self, off: usize) -> Result<u16> {
        let b = self.bytes(off, 2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// The big-endian u32 at `off`.
    pub fn u32(&self, off: usize) -> Result<u32> {
        let b = self.bytes(off, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The big-endian u64 at `off`.
    pub fn u64(&self, off: usize) -> Result<u64> {
        let b = self.bytes(off, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// Number of bytes in the buffer.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Decode a buffer of big-endian u64 table entries (L1, L2, refcount table).
pub fn be64_table(buf: &[u8]) -> Vec<u64> {
    buf.chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_be_bytes(a)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_rejects_short_buffers() {
        let buf = [0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3];
        let be = Be::new(&buf, "header");
        assert_eq!(be.u32(0).unwrap(), 0x514649fb);
        assert_eq!(be.u32(4).unwrap(), 3);
        assert_eq!(be.u16(6).unwrap(), 3);
        let err = be.u64(4).unwrap_err().to_string();
        assert!(err.contains("header"), "{err}");
        assert!(be.bytes(usize::MAX, 2).is_err());
    }

    #[test]
    fn decodes_tables() {
        let buf = [0, 0, 0, 0, 0, 1, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(be64_table(&buf), vec![0x10000, 0x8000_0000_0000_0001]);
    }
}
