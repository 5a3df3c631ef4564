//! Backing files passed through into a chain folder, served with the
//! name of the next file of the folder written in where needed.

use super::{BackingRewrite, Passthrough};
use crate::error::Result;
use crate::view::View;

/// A passed-through file as served: byte for byte, or with its backing
/// file name rewritten.
pub fn pass_view(p: &Passthrough) -> Result<Box<dyn View>> {
    let raw = crate::view::RawView::open(&p.path)?;
    Ok(match &p.rewrite {
        None => Box::new(raw),
        Some(r) => Box::new(Rewritten::new(raw, r)),
    })
}

/// A qcow2 file served with another backing file name: the header's
/// `backing_file_size` and the name's bytes (zeros past a shorter name)
/// are replaced; every other byte is the file's.
struct Rewritten {
    raw: crate::view::RawView,
    /// (offset, bytes) replaced, in file order.
    patches: Vec<(u64, Vec<u8>)>,
}

/// Where a qcow2 header keeps `backing_file_size` (the spec's header
/// layout, bytes 16-19).
const BACKING_FILE_SIZE_AT: u64 = 16;

impl Rewritten {
    fn new(raw: crate::view::RawView, r: &BackingRewrite) -> Rewritten {
        let new_len = r.name.len() as u64;
        let mut name = r.name.clone().into_bytes();
        name.resize(new_len.max(r.old_len) as usize, 0);
        Rewritten {
            raw,
            patches: vec![
                (
                    BACKING_FILE_SIZE_AT,
                    (new_len as u32).to_be_bytes().to_vec(),
                ),
                (r.offset, name),
            ],
        }
    }
}

impl View for Rewritten {
    fn size(&self) -> u64 {
        self.raw.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = self.raw.read_at(buf, offset)?;
        let end = offset + n as u64;
        for (at, bytes) in &self.patches {
            let from = offset.max(*at);
            let to = end.min(at + bytes.len() as u64);
            if from < to {
                buf[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
            }
        }
        Ok(n)
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<crate::view::Extent>> {
        // The header cluster is data in any qcow2 file; the rest is the file's.
        self.raw.extents(offset, len)
    }
}
