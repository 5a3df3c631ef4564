//! Attributes: kind, size, st_blocks, permissions and times of every node.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::SystemTime;

use super::Tree;
use super::entry::ImageEntry;
use super::entry::mtime_of;
use super::node::{Attr, Kind, Node, SnapKey, image_of, immutable, shown_path};
use crate::error::{Error, Result};
use crate::image::StateId;
use crate::view::{ExtentKind, View, scan_extents};

impl Tree {
    pub(super) fn attr(&self, ino: u64, node: &Node) -> Result<Attr> {
        let no_backing = || {
            image_of(node)
                .and_then(|rel| self.images.opened(rel))
                .is_some_and(|e| e.image.as_ref().is_ok_and(|i| i.backing().is_none()))
        };
        let base =
            |meta: &std::fs::Metadata, kind: Kind, size: u64, blocks: u64, mtime: SystemTime| {
                let read = (meta.mode() & 0o444) as u16;
                // Folders get x where they get r, so they can be entered.
                let perm = if kind == Kind::Dir {
                    read | (read >> 2)
                } else {
                    read
                };
                Attr {
                    ino,
                    kind,
                    size,
                    blocks,
                    mtime,
                    fixed: kind == Kind::Dir || (immutable(node) && no_backing()),
                    perm,
                    uid: meta.uid(),
                    gid: meta.gid(),
                }
            };
        // A generated file (or VM state) holds data in every block.
        let dense = |meta: &std::fs::Metadata, size: u64, mtime: SystemTime| {
            base(meta, Kind::File, size, size.div_ceil(512), mtime)
        };
        match node {
            Node::Dir(rel) => {
                let (_, m) = self.images.source(rel)?;
                Ok(base(&m, Kind::Dir, 0, 0, mtime_of(&m)))
            }
            Node::Plain(rel) => {
                let (_, m) = self.images.source(rel)?;
                let mtime = self.distinct_mtime(rel.clone(), node, None, mtime_of(&m));
                Ok(base(&m, Kind::File, m.len(), m.blocks(), mtime))
            }
            Node::Image(rel) | Node::SnapDir(rel) => {
                let e = self.images.entry(rel)?;
                Ok(base(&e.meta, Kind::Dir, 0, 0, mtime_of(&e.meta)))
            }
            Node::Info(rel, json) => {
                let e = self.images.entry(rel)?;
                let info = e.info(rel, self.images.use_of(rel));
                let (t, j) = &*info;
                let len = if *json { j.len() } else { t.len() } as u64;
                Ok(dense(&e.meta, len, mtime_of(&e.meta)))
            }
            Node::Active(rel) => {
                let e = self.images.entry(rel)?;
                let size = e.image()?.header().size;
                let blocks = self.blocks(&e, StateId::Active)?;
                let path = rel.join("active.raw");
                let mtime = self.distinct_mtime(path, node, Some(&e), mtime_of(&e.meta));
                Ok(base(&e.meta, Kind::File, size, blocks, mtime))
            }
            Node::Snap(rel, key) => {
                let e = self.images.entry(rel)?;
                let i = e.snapshot_index(key)?;
                let size = e.image()?.snapshots()[i].disk_size;
                let blocks = self.blocks(&e, StateId::Snapshot(i))?;
                let path = rel.join("snapshots").join(format!("{}.raw", e.stems[i]));
                let mtime = self.distinct_mtime(path, node, Some(&e), snapshot_time(key));
                Ok(base(&e.meta, Kind::File, size, blocks, mtime))
            }
            Node::VmState(rel, key) => {
                let e = self.images.entry(rel)?;
                let i = e.snapshot_index(key)?;
                let size = e.image()?.snapshots()[i].vm_state_size;
                let path = rel
                    .join("snapshots")
                    .join(format!("{}.vmstate", e.stems[i]));
                let mtime = self.distinct_mtime(path, node, Some(&e), snapshot_time(key));
                Ok(dense(&e.meta, size, mtime))
            }
            Node::ChainDir(rel, _) => {
                let e = self.images.entry(rel)?;
                Ok(base(&e.meta, Kind::Dir, 0, 0, mtime_of(&e.meta)))
            }
            Node::Layer(rel, dir, key) => {
                let e = self.images.entry(rel)?;
                let spec = e.spec(*dir, self.images.use_of(rel), self.images.confine(), key)?;
                let size = e.layer_size(&spec)?;
                let mtime = self.chain_mtime(node, &e, e.layer_time(&spec)?);
                Ok(dense(&e.meta, size, mtime))
            }
            Node::Pass(rel, _, _, path, _) => {
                let e = self.images.entry(rel)?;
                let m = std::fs::metadata(path).map_err(|err| Error::io("stat", path, err))?;
                let mtime = self.chain_mtime(node, &e, mtime_of(&m));
                Ok(base(&e.meta, Kind::File, m.len(), m.blocks(), mtime))
            }
            Node::Sums(rel, dir) => {
                let e = self.images.entry(rel)?;
                let (size, t) = self.sums_attr(&e, rel, *dir)?;
                let mtime = self.chain_mtime(node, &e, t);
                Ok(dense(&e.meta, size, mtime))
            }
            Node::FileSum(rel, file) => {
                let e = self.images.entry(rel)?;
                let size = self.file_sum_size(rel, file)?;
                let mtime = self.chain_mtime(node, &e, mtime_of(&e.meta));
                Ok(dense(&e.meta, size, mtime))
            }
            Node::Manifest(rel, dir) => {
                let e = self.images.entry(rel)?;
                let (shown, use_) = self.images.folder(&e, rel, *dir)?;
                let len = e.manifest(*dir, &shown.folder, use_)?.len() as u64;
                let mtime = self.chain_mtime(node, &e, mtime_of(&e.meta));
                Ok(dense(&e.meta, len, mtime))
            }
        }
    }

    /// The mtime to show for the file at `path` (see `Freshness::mtime`);
    /// `t` itself when a source of it cannot be examined.
    fn distinct_mtime(
        &self,
        path: PathBuf,
        node: &Node,
        e: Option<&ImageEntry>,
        t: SystemTime,
    ) -> SystemTime {
        match self.images.source_stamps(node, e) {
            Some(stamps) => self.freshness.mtime(path, node, stamps, t),
            None => t,
        }
    }

    /// The path key of the mtime rule for a file of a chain folder.
    fn chain_mtime(&self, node: &Node, e: &ImageEntry, t: SystemTime) -> SystemTime {
        match shown_path(node) {
            Some(path) => self.distinct_mtime(path, node, Some(e), t),
            None => t,
        }
    }

    /// 512-byte blocks holding data in a state, from its extent map.
    fn blocks(&self, e: &ImageEntry, which: StateId) -> Result<u64> {
        if let Some(&b) = e.kept.blocks.lock().get(&which) {
            return Ok(b);
        }
        let v = e.state(which)?;
        let mut data = 0u64;
        let counted = scan_extents(&*v, 0, |x| {
            if x.kind == ExtentKind::Data {
                data += x.len;
            }
            true
        });
        if counted.is_err() {
            return Ok(v.size().div_ceil(512));
        }
        let b = data.div_ceil(512);
        e.kept.blocks.lock().insert(which, b);
        Ok(b)
    }
}

/// A snapshot's date.
fn snapshot_time(k: &SnapKey) -> SystemTime {
    crate::qcow2::snapshot::date(k.date_sec, k.date_nsec)
}
