//! Freshness: what the tree has shown, so that rsync's quick check never
//! skips a changed file (the mtime last shown per path), the kernel keeps
//! cached pages only of an unchanged file (the sources of each file at its
//! last open), and a copy of a whole chain folder is one state (what each
//! process listed).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::entry::Stamp;
use super::node::Node;

/// Files whose last shown mtime is remembered for the rsync rule (a few
/// hundred bytes each).
pub const SHOWN_FILES: usize = 16384;

/// Listings of chain folders remembered for the whole-folder rule: enough
/// for every copy under way on a host at once, 32 bytes each.
pub const LISTED_FOLDERS: usize = 4096;

/// What the tree has shown.
pub(super) struct Freshness {
    /// Per path of a file, what it was and the mtime last shown for it (a
    /// few hundred bytes per file). Bounded: an entry matters only for a
    /// path shown again soon after a change, and the oldest are let go
    /// past [`SHOWN_FILES`].
    shown: Mutex<lru::LruCache<PathBuf, (Shown, SystemTime)>>,
    /// Per file inode, the stamps of its sources at its last open: the
    /// kernel's cached pages of the file hold bytes of that version.
    cached: Mutex<HashMap<u64, Vec<Stamp>>>,
    /// Per (process, chain folder inode), the folder's generation when the
    /// process listed it; the latest [`LISTED_FOLDERS`] listings are kept.
    listed: Mutex<lru::LruCache<(u32, u64), u64>>,
}

impl Freshness {
    /// Nothing shown yet.
    pub(super) fn new() -> Freshness {
        let bound = |n| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        Freshness {
            shown: Mutex::new(lru::LruCache::new(bound(SHOWN_FILES))),
            cached: Mutex::new(HashMap::new()),
            listed: Mutex::new(lru::LruCache::new(bound(LISTED_FOLDERS))),
        }
    }

    /// The mtime to show for the file at `path` in the tree, `node` read
    /// from sources of `stamps`: `t`, unless what the file at that path
    /// holds may have changed since its mtime was last shown (another node
    /// under the same name, or the files its bytes come from changed) and
    /// `t` falls in the same whole second or earlier; then the next whole
    /// second after the one last shown. rsync's quick check compares whole
    /// seconds by path, so a change never keeps both size and shown mtime.
    pub(super) fn mtime(
        &self,
        path: PathBuf,
        node: &Node,
        stamps: Vec<Stamp>,
        t: SystemTime,
    ) -> SystemTime {
        let now = Shown {
            node: node.clone(),
            stamps,
        };
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut shown = self.shown.lock();
        let t = match shown.get(&path) {
            Some((s, last)) if *s == now => return *last,
            Some((_, last)) if secs(t) <= secs(*last) => {
                UNIX_EPOCH + Duration::from_secs(secs(*last) + 1)
            }
            _ => t,
        };
        shown.put(path, (now, t));
        t
    }

    /// Record the stamps of the sources of file `ino` at this open (None:
    /// one could not be examined); true when they equal those of its
    /// previous open.
    pub(super) fn same_as_last_open(&self, ino: u64, stamps: Option<Vec<Stamp>>) -> bool {
        let mut cached = self.cached.lock();
        let same = stamps.is_some() && cached.get(&ino) == stamps.as_ref();
        match stamps {
            Some(s) => cached.insert(ino, s),
            None => cached.remove(&ino),
        };
        same
    }

    /// The kernel let go of inode `ino`, and of its pages with it.
    pub(super) fn forget(&self, ino: u64) {
        self.cached.lock().remove(&ino);
    }

    /// Process `pid` listed chain folder `ino` in `generation`.
    pub(super) fn note_listing(&self, pid: u32, ino: u64, generation: u64) {
        self.listed.lock().put((pid, ino), generation);
    }

    /// The generation in which process `pid` last listed folder `ino`.
    pub(super) fn listed_at(&self, pid: u32, ino: u64) -> Option<u64> {
        self.listed.lock().get(&(pid, ino)).copied()
    }
}

/// What the file at a path was when its mtime was last shown.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Shown {
    node: Node,
    /// The stamps of the files its bytes come from.
    stamps: Vec<Stamp>,
}
