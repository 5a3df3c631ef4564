//! Freshness: the mtime a file shows (so that rsync's quick check never
//! skips a changed file) and whether the kernel may keep its cached pages.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Tree;
use super::entry::{ImageEntry, Stamp};
use super::node::{Node, SnapKey, immutable};

impl Tree {
    /// The mtime to show for a layer or manifest whose bytes may change:
    /// `t`, unless its sources changed since the mtime last shown and `t`
    /// falls in the same whole second (or earlier); then the next whole
    /// second after the one last shown. rsync's quick check compares whole
    /// seconds, so a change never keeps both size and shown mtime.
    pub(super) fn distinct_mtime(
        &self,
        ino: u64,
        node: &Node,
        e: &ImageEntry,
        t: SystemTime,
    ) -> SystemTime {
        if immutable(node) {
            return t;
        }
        let Some(stamps) = self.source_stamps(node, Some(e)) else {
            return t;
        };
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut shown = self.shown.lock();
        let t = match shown.get(&ino) {
            Some((s, last)) if *s == stamps => return *last,
            Some((_, last)) if secs(t) <= secs(*last) => {
                UNIX_EPOCH + Duration::from_secs(secs(*last) + 1)
            }
            _ => t,
        };
        shown.insert(ino, (stamps, t));
        t
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

    /// The stamps of the files a node's bytes are read from: the image and
    /// its backing files, or the plain file itself. None when one of them
    /// cannot be examined, and for `info`, which also reports whether the
    /// image is in use.
    pub(super) fn source_stamps(
        &self,
        node: &Node,
        entry: Option<&ImageEntry>,
    ) -> Option<Vec<Stamp>> {
        let stamp = |p: &Path| std::fs::metadata(p).ok().map(|m| Stamp::of(&m));
        match (node, entry) {
            (Node::Info(..), _) => None,
            (Node::Plain(rel), _) => Some(vec![stamp(&self.root.join(rel))?]),
            (Node::Pass(.., path), _) => Some(vec![stamp(path)?]),
            (_, Some(e)) => {
                let mut out = vec![e.stamp];
                for p in e.backing_files() {
                    out.push(stamp(p)?);
                }
                Some(out)
            }
            (_, None) => None,
        }
    }

    /// True when the image at `rel` is still the version `e` opened (one
    /// stat; resolution and the IMAGE_DIR check happen on a mismatch).
    pub(super) fn unchanged(&self, e: &ImageEntry, rel: &Path) -> bool {
        std::fs::metadata(self.root.join(rel)).is_ok_and(|m| Stamp::of(&m) == e.stamp)
    }
}

pub(super) fn mtime_of(m: &std::fs::Metadata) -> SystemTime {
    m.modified().unwrap_or(UNIX_EPOCH)
}

pub(super) fn snapshot_time(k: &SnapKey) -> SystemTime {
    crate::qcow2::snapshot::date(k.date_sec, k.date_nsec)
}
