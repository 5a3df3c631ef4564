//! The tree a mount shows: IMAGE_DIR mirrored, every qcow2 image a folder of
//! views. This module knows nothing of FUSE; the adapter in `fuse.rs` turns
//! requests into calls here, and tests drive it directly.

mod attr;
mod entry;
mod freshness;
mod handles;
mod inodes;
mod listing;
mod memo;
mod node;
mod seek;
mod stream;
mod sums;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::image::OpenOptions;
pub use attr::{Attr, Kind};
use entry::{ImageEntry, Stamp};
pub use handles::Caching;
use handles::Handle;
use inodes::Inodes;
pub use inodes::ROOT_INO;
use node::Node;

/// One entry of a folder listing: inode, kind, name.
pub type DirEntry = (u64, Kind, std::ffi::OsString);

/// How the tree is served.
#[derive(Clone)]
pub struct TreeOptions {
    /// Cache budget in bytes.
    pub cache_bytes: u64,
    /// Follow backing files outside IMAGE_DIR.
    pub allow_outside_backing: bool,
    /// Serve the active state of images another program has open for
    /// writing (their bytes may change under the reader).
    pub force_share: bool,
}

/// The tree over one IMAGE_DIR.
pub struct Tree {
    root: PathBuf,
    opts: OpenOptions,
    inodes: Inodes,
    /// Memo caches: states, cluster maps, layer plans.
    memos: Arc<memo::Memos>,
    /// Digests of chain folder files, for `SHA256SUMS`.
    digests: Arc<sums::Digests>,
    /// Chain folder files that an open which hashed them did not read from
    /// start to end: read through the page cache from then on.
    scattered: Mutex<std::collections::HashSet<Node>>,
    images: Mutex<HashMap<PathBuf, Arc<ImageEntry>>>,
    handles: Mutex<HashMap<u64, Arc<Mutex<Handle>>>>,
    /// Per file inode, the stamps of its sources at its last open: the
    /// kernel's cached pages of the file hold bytes of that version.
    cached: Mutex<HashMap<u64, Vec<Stamp>>>,
    /// Per path of a chain folder file, what it was and the mtime last
    /// shown for it (a few hundred bytes per file of a chain folder).
    /// Bounded: an entry matters only for a path shown again soon after
    /// a change, and the oldest are let go past [`SHOWN_FILES`].
    shown: Mutex<lru::LruCache<PathBuf, (freshness::Shown, SystemTime)>>,
    /// Per (process, chain folder inode), the folder's generation when the
    /// process listed it (see `Tree::check_listed`); the latest
    /// [`LISTED_FOLDERS`] listings are kept.
    listed: Mutex<lru::LruCache<(u32, u64), u64>>,
    /// Open folder handles and the entries each took at opendir.
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    next_fh: AtomicU64,
    force_share: bool,
}

/// Files whose last shown mtime is remembered for the rsync rule (a few
/// hundred bytes each).
pub const SHOWN_FILES: usize = 16384;

/// Listings of chain folders remembered for the whole-folder rule: enough
/// for every copy under way on a host at once, 32 bytes each.
pub const LISTED_FOLDERS: usize = 4096;

impl Tree {
    /// A tree over `root` (which must be a folder).
    pub fn new(root: &Path, t: &TreeOptions) -> Result<Tree> {
        let root = std::fs::canonicalize(root).map_err(|e| Error::io("open IMAGE_DIR", root, e))?;
        if !root.is_dir() {
            return Err(Error::NotADirectory);
        }
        let mut opts = OpenOptions::new(t.cache_bytes);
        if !t.allow_outside_backing {
            opts.backing_root = Some(root.clone());
        }
        let root_node = Node::Dir(PathBuf::new());
        Ok(Tree {
            root,
            opts,
            inodes: Inodes::new(root_node),
            digests: sums::digests(),
            scattered: Mutex::new(Default::default()),
            memos: Arc::new(memo::Memos::new(crate::cache::memo_budget(t.cache_bytes))),
            images: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            cached: Mutex::new(HashMap::new()),
            shown: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(SHOWN_FILES).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            listed: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(LISTED_FOLDERS).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            force_share: t.force_share,
        })
    }

    /// The kernel dropped `n` references to inode `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if self.inodes.forget(ino, n) {
            // Its pages went with it.
            self.cached.lock().remove(&ino);
        }
    }

    /// Whether the image at `rel` is served as at rest, or as in use by
    /// another writer (a running VM): then its chains hold its snapshots
    /// only. With --force-share, always as at rest.
    pub(super) fn use_of(&self, rel: &Path) -> crate::chain::Use {
        if !self.force_share && crate::image::lock::in_use(&self.root.join(rel)) {
            crate::chain::Use::Written
        } else {
            crate::chain::Use::Rest
        }
    }

    /// The attributes of inode `ino`.
    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let node = self.inodes.node(ino)?;
        self.attr(ino, &node)
    }

    /// Figures for statfs: (total 512-byte blocks of IMAGE_DIR's file system, files).
    pub fn statfs(&self) -> (u64, u64) {
        match nix::sys::statvfs::statvfs(&self.root) {
            Ok(s) => (
                s.blocks() * s.fragment_size() / 512,
                self.inodes.len() as u64,
            ),
            Err(e) => {
                log::debug!("statvfs {}: {e}", self.root.display());
                (0, 0)
            }
        }
    }
}
