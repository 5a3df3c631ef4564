//! Read-only views: a size, a read at an offset, and a map of extents.
//!
//! Every file of the tree is a view. A qcow2 state is a view over its image
//! file and its backing view; a plain file is a view of itself.

use nix::unistd::Whence;
use std::path::Path;

use crate::error::Result;
use crate::source::SourceFile;

/// What a run of bytes of a view holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExtentKind {
    /// Bytes stored somewhere (they may still happen to be zero).
    Data,
    /// Known to read as zeros, explicitly.
    Zero,
    /// Nothing stored: reads as zeros.
    Hole,
}

/// A run of a view's bytes of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// What the bytes are.
    pub kind: ExtentKind,
}

impl Extent {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// A read-only sequence of bytes.
pub trait View: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// Fill `buf` from `offset`. Bytes at or past `size()` are not read; the
    /// count of bytes filled is returned.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize>;

    /// The extents covering `[offset, offset + len)` clipped to the size,
    /// in order, adjacent runs of one kind merged.
    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>>;
}

/// Append an extent to `out`, merging with the last one when it continues it.
pub fn push_extent(out: &mut Vec<Extent>, start: u64, len: u64, kind: ExtentKind) {
    if len == 0 {
        return;
    }
    if let Some(last) = out.last_mut()
        && last.kind == kind
        && last.end() == start
    {
        last.len += len;
        return;
    }
    out.push(Extent { start, len, kind });
}

/// The first window [`scan_extents`] asks a view for (2 MiB): a SEEK_DATA
/// or SEEK_HOLE (one per extent of a `cp` or `rsync`) looks at the
/// clusters up to the next change, not at a gigabyte of them.
const FIRST_WINDOW: u64 = 2 << 20;
/// A window that returned fewer extents than this is doubled for the next
/// step, so that a sparse disk of petabytes takes a few dozen steps.
const FEW_EXTENTS: usize = 1024;
/// A window that returned more extents than this is halved (down to the
/// first window) for the next step, so that one step's list stays small.
const MANY_EXTENTS: usize = 1 << 16;

/// Visit the extents of `view` from `offset` to its end in order, asking for
/// them a window at a time; the window grows over sparse stretches and
/// shrinks over dense ones, so time follows the metadata and memory stays
/// bounded. `visit` returns false to stop.
pub fn scan_extents(
    view: &dyn View,
    offset: u64,
    mut visit: impl FnMut(&Extent) -> bool,
) -> Result<()> {
    let size = view.size();
    let mut pos = offset;
    let mut window = FIRST_WINDOW;
    while pos < size {
        let ext = view.extents(pos, window)?;
        for e in &ext {
            if !visit(e) {
                return Ok(());
            }
        }
        pos = pos.saturating_add(window);
        if ext.len() < FEW_EXTENTS {
            window = window.saturating_mul(2);
        } else if ext.len() > MANY_EXTENTS {
            window = (window / 2).max(FIRST_WINDOW);
        }
    }
    Ok(())
}

/// The extents of a view that is data throughout (generated files).
pub fn all_data(offset: u64, len: u64, size: u64) -> Vec<Extent> {
    let mut out = Vec::new();
    let end = offset.saturating_add(len).min(size);
    push_extent(
        &mut out,
        offset,
        end.saturating_sub(offset),
        ExtentKind::Data,
    );
    out
}

/// A plain file shown byte for byte (also raw backing files).
pub struct RawView {
    file: SourceFile,
}

impl RawView {
    /// Open `path` read-only.
    pub fn open(path: &Path) -> Result<RawView> {
        Ok(RawView {
            file: SourceFile::open(path)?,
        })
    }
}

impl View for RawView {
    fn size(&self) -> u64 {
        self.file.len()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = clip(buf.len(), offset, self.size());
        if n == 0 {
            return Ok(0);
        }
        self.file
            .read_exact_at(&mut buf[..n], offset, "raw file data")?;
        Ok(n)
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let end = offset.saturating_add(len).min(self.size());
        let mut out = Vec::new();
        let fd = self.file.file();
        let mut pos = offset;
        while pos < end {
            // SEEK_DATA/SEEK_HOLE tell where the file system stored data; a
            // file system that does not know reports all data.
            let data = seek(fd, pos, Whence::SeekData).unwrap_or(end).min(end);
            push_extent(&mut out, pos, data - pos, ExtentKind::Hole);
            if data >= end {
                break;
            }
            let hole = seek(fd, data, Whence::SeekHole).unwrap_or(end).min(end);
            push_extent(&mut out, data, hole - data, ExtentKind::Data);
            pos = hole;
        }
        Ok(out)
    }
}

fn seek(fd: &std::fs::File, pos: u64, whence: Whence) -> Option<u64> {
    let pos = i64::try_from(pos).ok()?;
    let r = nix::unistd::lseek(fd, pos, whence).ok()?;
    u64::try_from(r).ok()
}

/// How many of `want` bytes at `offset` lie below `size`.
pub fn clip(want: usize, offset: u64, size: u64) -> usize {
    if offset >= size {
        0
    } else {
        (want as u64).min(size - offset) as usize
    }
}
