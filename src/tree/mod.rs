//! The tree a mount shows: IMAGE_DIR mirrored, every qcow2 image a folder of
//! views. This module knows nothing of FUSE; the adapter in `fuse/` turns
//! requests into calls here, and tests drive it directly.

mod attr;
mod entry;
mod files;
mod freshness;
mod handles;
mod hashing;
mod images;
mod inodes;
mod listing;
mod memo;
mod node;
mod seek;
mod stream;
mod sums;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use freshness::Freshness;
pub use freshness::{LISTED_FOLDERS, SHOWN_FILES};
use handles::Handles;
pub use handles::{Caching, DirEntry};
use hashing::Hashing;
use images::Images;
pub use images::TreeOptions;
use inodes::Inodes;
pub use inodes::ROOT_INO;
use node::Node;
pub use node::{Attr, Kind};

/// The tree over one IMAGE_DIR, in parts that each own their state and
/// lock: the tree's methods call the parts, and no part calls the tree.
pub struct Tree {
    /// IMAGE_DIR, and the current opening of each image in it.
    images: Images,
    inodes: Inodes,
    /// Open files and folders.
    handles: Handles,
    /// Digests of chain folder files, for `SHA256SUMS`.
    hashing: Hashing,
    /// What was shown: mtimes, the sources of cached pages, listings.
    freshness: Freshness,
}

impl Tree {
    /// A tree over `root` (which must be a folder).
    pub fn new(root: &Path, t: &TreeOptions) -> Result<Tree> {
        let root = std::fs::canonicalize(root).map_err(|e| Error::io("open IMAGE_DIR", root, e))?;
        if !root.is_dir() {
            return Err(Error::NotADirectory);
        }
        Ok(Tree {
            images: Images::new(root, t),
            inodes: Inodes::new(Node::Dir(PathBuf::new())),
            handles: Handles::new(),
            hashing: Hashing::default(),
            freshness: Freshness::new(),
        })
    }

    /// The kernel dropped `n` references to inode `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if self.inodes.forget(ino, n) {
            // Its pages went with it.
            self.freshness.forget(ino);
        }
    }

    /// The attributes of inode `ino`.
    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let node = self.inodes.node(ino)?;
        let mut a = self.attr(ino, &node)?;
        // A generated file (report, manifest, sums) is made whole at its
        // open: while it is open, its size is that of the bytes its newest
        // handle serves, even when the folder has changed since. The
        // kernel reads a file up to the size it was last told (a copy asks
        // with fstat after its open): another size would cut the bytes.
        if files::generated(&node)
            && let Some(size) = self.handles.open_size(&node)
        {
            a.size = size;
            a.blocks = size.div_ceil(512);
        }
        Ok(a)
    }

    /// Figures for statfs: (total 512-byte blocks of IMAGE_DIR's file system, files).
    pub fn statfs(&self) -> (u64, u64) {
        match nix::sys::statvfs::statvfs(self.images.root()) {
            Ok(s) => (
                s.blocks() * s.fragment_size() / 512,
                self.inodes.len() as u64,
            ),
            Err(e) => {
                log::debug!("statvfs {}: {e}", self.images.root().display());
                (0, 0)
            }
        }
    }
}
