//! Freshness: the mtime a file shows (so that rsync's quick check never
//! skips a changed file) and whether the kernel may keep its cached pages.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Tree;
use super::entry::{ImageEntry, Stamp};
use super::node::{Node, SnapKey, immutable, shown_path};

impl Tree {
    /// The mtime to show for the file at `path` in the tree: `t`, unless
    /// what the file at that path holds may have changed since its mtime
    /// was last shown (another node under the same name, or the files its
    /// bytes come from changed) and `t` falls in the same whole second or
    /// earlier; then the next whole second after the one last shown.
    /// rsync's quick check compares whole seconds by path, so a change
    /// never keeps both size and shown mtime. Applied to every file.
    pub(super) fn distinct_mtime(
        &self,
        path: PathBuf,
        node: &Node,
        e: Option<&ImageEntry>,
        t: SystemTime,
    ) -> SystemTime {
        let Some(stamps) = self.source_stamps(node, e) else {
            return t;
        };
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

    /// The path key of the mtime rule for a file of a chain folder.
    pub(super) fn chain_mtime(&self, node: &Node, e: &ImageEntry, t: SystemTime) -> SystemTime {
        match shown_path(node) {
            Some(path) => self.distinct_mtime(path, node, Some(e), t),
            None => t,
        }
    }

    /// Record the stamps of a file's sources at this open; true when they
    /// equal those of its previous open.
    pub(super) fn unchanged_since_last_open(
        &self,
        ino: u64,
        node: &Node,
        entry: Option<&ImageEntry>,
    ) -> bool {
        let stamps = self.source_stamps(node, entry);
        let mut cached = self.cached.lock();
        let same = stamps.is_some() && cached.get(&ino) == stamps.as_ref();
        match stamps {
            Some(s) => cached.insert(ino, s),
            None => cached.remove(&ino),
        };
        same
    }

    /// The files a node's bytes are read from: the image and its backing
    /// files, or the plain file itself. A snapshot view or a layer built
    /// only from snapshots does not depend on the image's version (the
    /// snapshots do not change while they exist, and the node is gone with
    /// them), only on the backing files, through which it reads what its
    /// snapshot does not hold. None for `info`, which also reports whether
    /// the image is in use.
    pub(super) fn sources(&self, node: &Node, entry: Option<&ImageEntry>) -> Option<Sources> {
        match (node, entry) {
            (Node::Info(..), _) => None,
            (Node::Plain(rel), _) => Some(Sources {
                opened: None,
                files: vec![self.root.join(rel)],
            }),
            (Node::Pass(.., path, _), _) => Some(Sources {
                opened: None,
                files: vec![path.clone()],
            }),
            (_, Some(e)) => Some(Sources {
                opened: (!immutable(node)).then_some(e.stamp),
                files: e.backing_files().iter().map(|p| p.path.clone()).collect(),
            }),
            (_, None) => None,
        }
    }

    /// The stamps of the files a node's bytes are read from; None when one
    /// of them cannot be examined (see [`Tree::sources`]).
    pub(super) fn source_stamps(
        &self,
        node: &Node,
        entry: Option<&ImageEntry>,
    ) -> Option<Vec<Stamp>> {
        self.sources(node, entry)?.stamps()
    }

    /// True when the image at `rel` is still the version `e` opened (one
    /// stat; resolution and the IMAGE_DIR check happen on a mismatch).
    pub(super) fn unchanged(&self, e: &ImageEntry, rel: &Path) -> bool {
        std::fs::metadata(self.root.join(rel)).is_ok_and(|m| Stamp::of(&m) == e.stamp)
    }
}

/// What a file's bytes come from: the image opening it was resolved
/// from, and the files examined afresh each time.
pub(super) struct Sources {
    opened: Option<Stamp>,
    files: Vec<PathBuf>,
}

impl Sources {
    /// Their stamps now; None when a file cannot be examined.
    pub(super) fn stamps(&self) -> Option<Vec<Stamp>> {
        let mut out: Vec<Stamp> = self.opened.into_iter().collect();
        for p in &self.files {
            out.push(Stamp::of(&std::fs::metadata(p).ok()?));
        }
        Some(out)
    }
}

pub(super) fn snapshot_time(k: &SnapKey) -> SystemTime {
    crate::qcow2::snapshot::date(k.date_sec, k.date_nsec)
}

/// What the file at a path was when its mtime was last shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Shown {
    node: Node,
    /// The stamps of the files its bytes come from.
    stamps: Vec<Stamp>,
}
