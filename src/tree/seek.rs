//! SEEK_DATA and SEEK_HOLE, from a view's extent map.

use super::Tree;
use crate::error::Result;
use crate::view::{ExtentKind, scan_extents};

impl Tree {
    /// SEEK_DATA (`data`) or SEEK_HOLE from `offset`, per the extent map.
    /// Zero extents count as holes. Returns None (ENXIO) past the end or
    /// when no data follows.
    pub fn seek(&self, fh: u64, offset: u64, data: bool) -> Result<Option<u64>> {
        let h = self.handles.file(fh)?;
        let (view, _) = self.current_view(&h)?;
        let size = view.size();
        let mut found = None;
        scan_extents(&*view, offset, |e| {
            if (e.kind == ExtentKind::Data) == data {
                found = Some(e.start.max(offset));
            }
            found.is_none()
        })?;
        // Past the last extent: a hole at the end of the file, or no data.
        Ok(match found {
            Some(at) => Some(at),
            None if data || offset >= size => None,
            None => Some(size),
        })
    }
}
