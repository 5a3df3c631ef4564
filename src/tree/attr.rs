//! Attributes: kind, size, st_blocks, permissions and times of every node.

use std::os::unix::fs::MetadataExt;
use std::time::SystemTime;

use super::Tree;
use super::entry::ImageEntry;
use super::entry::mtime_of;
use super::freshness::snapshot_time;
use super::node::{Node, immutable};
use crate::error::{Error, Result};
use crate::image::StateId;
use crate::view::{ExtentKind, View, scan_extents};

/// File or folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A folder.
    Dir,
    /// A regular file.
    File,
}

/// The attributes of a node.
#[derive(Clone, Debug)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// File or folder.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Modification time.
    pub mtime: SystemTime,
    /// True for what may be trusted for a while: files whose attributes and
    /// bytes never change while they exist (snapshot views, layers built
    /// only from snapshots), and folders (their listings are always read
    /// afresh). Every other file must be asked for afresh.
    pub fixed: bool,
    /// Permission bits (never a write bit).
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Tree {
    pub(super) fn attr(&self, ino: u64, node: &Node) -> Result<Attr> {
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
                    fixed: kind == Kind::Dir || immutable(node),
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
                let (_, m) = self.source(rel)?;
                Ok(base(&m, Kind::Dir, 0, 0, mtime_of(&m)))
            }
            Node::Plain(rel) => {
                let (_, m) = self.source(rel)?;
                Ok(base(&m, Kind::File, m.len(), m.blocks(), mtime_of(&m)))
            }
            Node::Image(rel) | Node::SnapDir(rel) => {
                let e = self.entry(rel)?;
                Ok(base(&e.meta, Kind::Dir, 0, 0, mtime_of(&e.meta)))
            }
            Node::Info(rel, json) => {
                let e = self.entry(rel)?;
                let (t, j) = e.info(rel);
                let len = if *json { j.len() } else { t.len() } as u64;
                Ok(dense(&e.meta, len, mtime_of(&e.meta)))
            }
            Node::Active(rel) => {
                let e = self.entry(rel)?;
                let size = e.image()?.header().size;
                let blocks = self.blocks(&e, StateId::Active)?;
                Ok(base(&e.meta, Kind::File, size, blocks, mtime_of(&e.meta)))
            }
            Node::Snap(rel, key) => {
                let e = self.entry(rel)?;
                let i = e.snapshot_index(key)?;
                let size = e.image()?.snapshots()[i].disk_size;
                let blocks = self.blocks(&e, StateId::Snapshot(i))?;
                Ok(base(&e.meta, Kind::File, size, blocks, snapshot_time(key)))
            }
            Node::VmState(rel, key) => {
                let e = self.entry(rel)?;
                let i = e.snapshot_index(key)?;
                let size = e.image()?.snapshots()[i].vm_state_size;
                Ok(dense(&e.meta, size, snapshot_time(key)))
            }
            Node::ChainDir(rel, _) => {
                let e = self.entry(rel)?;
                Ok(base(&e.meta, Kind::Dir, 0, 0, mtime_of(&e.meta)))
            }
            Node::Layer(rel, dir, key) => {
                let e = self.entry(rel)?;
                let spec = e.spec(*dir, key)?;
                let size = e.layer_size(&spec)?;
                let mtime = self.distinct_mtime(node, &e, e.layer_time(&spec)?);
                Ok(dense(&e.meta, size, mtime))
            }
            Node::Pass(rel, _, _, path) => {
                let e = self.entry(rel)?;
                let m = std::fs::metadata(path).map_err(|err| Error::io("stat", path, err))?;
                Ok(base(&e.meta, Kind::File, m.len(), m.blocks(), mtime_of(&m)))
            }
            Node::Sums(rel, dir) => {
                let e = self.entry(rel)?;
                let (size, t) = self.sums_attr(&e, rel, *dir)?;
                let mtime = self.distinct_mtime(node, &e, t);
                Ok(dense(&e.meta, size, mtime))
            }
            Node::Manifest(rel, dir) => {
                let e = self.entry(rel)?;
                let len = e.manifest(*dir)?.len() as u64;
                let mtime = self.distinct_mtime(node, &e, mtime_of(&e.meta));
                Ok(dense(&e.meta, len, mtime))
            }
        }
    }

    /// 512-byte blocks holding data in a state, from its extent map.
    fn blocks(&self, e: &ImageEntry, which: StateId) -> Result<u64> {
        if let Some(&b) = e.blocks.lock().get(&which) {
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
        e.blocks.lock().insert(which, b);
        Ok(b)
    }
}
