//! Shared by the fuzz targets: the input becomes an image file.

use std::path::PathBuf;
use std::sync::Arc;

use qcow2fs::{Image, OpenOptions};

/// Write `data` to a per-process file in /dev/shm and open it as an image.
pub fn open(data: &[u8]) -> Option<Arc<Image>> {
    let dir = PathBuf::from("/dev/shm");
    let path = dir.join(format!("qcow2fs-fuzz-{}.qcow2", std::process::id()));
    std::fs::write(&path, data).ok()?;
    let mut opts = OpenOptions::new(4 << 20);
    // Backing files named by the input must not reach the host.
    opts.backing_root = Some(dir.join("qcow2fs-fuzz-empty"));
    Image::open(&path, &opts).ok()
}
