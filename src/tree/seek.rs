//! SEEK_DATA and SEEK_HOLE, from a view's extent map.

use super::Tree;
use crate::error::Result;
use crate::view::ExtentKind;

/// Bytes of a view scanned per step when seeking data or holes, bounding
/// the memory an extent list takes.
pub(super) const SEEK_WINDOW: u64 = 1 << 30;

/// Bytes one SEEK_DATA/SEEK_HOLE scans at most (1 TiB). Past it the rest is
/// reported as data, which lseek allows, so a crafted disk of petabytes
/// cannot make one request spin.
pub(super) const MAX_SEEK_SCAN: u64 = 1 << 40;

impl Tree {
    /// SEEK_DATA (`data`) or SEEK_HOLE from `offset`, per the extent map.
    /// Zero extents count as holes. Returns None (ENXIO) past the end or
    /// when no data follows.
    pub fn seek(&self, fh: u64, offset: u64, data: bool) -> Result<Option<u64>> {
        let h = self.handle(fh)?;
        let (view, _) = self.current_view(&h)?;
        let size = view.size();
        let mut pos = offset;
        while pos < size {
            if pos - offset >= MAX_SEEK_SCAN {
                return Ok(Some(if data { pos } else { size }));
            }
            for e in view.extents(pos, SEEK_WINDOW)? {
                let is_data = e.kind == ExtentKind::Data;
                if is_data == data {
                    return Ok(Some(e.start.max(offset)));
                }
            }
            pos = pos.saturating_add(SEEK_WINDOW);
        }
        // Past the last extent: a hole at the end of the file, or no data.
        Ok(if data || offset >= size {
            None
        } else {
            Some(size)
        })
    }
}
