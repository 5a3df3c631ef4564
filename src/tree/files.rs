//! Open files: a node resolved to the view that serves it, opened, read
//! (each read checked against the image's current version) and released.

use std::sync::Arc;

use parking_lot::Mutex;

use super::Tree;
use super::entry::ImageEntry;
use super::handles::{Caching, Handle};
use super::node::{Node, StateKey, image_of, immutable};
use crate::error::{Error, Result};
use crate::image::{StateId, VmState};
use crate::readbuf::ReadBytes;
use crate::view::{RawView, View};

/// A file node resolved to the view that serves it, and the opening of the
/// image it reads from (None for plain files).
pub(super) type Resolved = (Arc<dyn View>, Option<Arc<ImageEntry>>);

impl Tree {
    /// Resolve a file node into a view (and the image entry it reads from).
    pub(super) fn view(&self, node: &Node) -> Result<Resolved> {
        match node {
            Node::Plain(rel) => {
                let (real, _) = self.images.source(rel)?;
                Ok((Arc::new(RawView::open(&real)?), None))
            }
            Node::Info(rel, json) => {
                let e = self.images.entry(rel)?;
                let info = e.info(rel, self.images.use_of(rel));
                let (t, j) = &*info;
                let bytes = if *json { j.clone() } else { t.clone() }.into_bytes();
                Ok((Arc::new(Bytes(bytes)), Some(e)))
            }
            Node::Active(rel) => {
                let e = self.images.entry(rel)?;
                self.images.refuse_in_use(rel)?;
                Ok((e.state(StateId::Active)?, Some(e)))
            }
            Node::Snap(rel, key) => {
                let e = self.images.entry(rel)?;
                let i = e.snapshot_index(key)?;
                Ok((e.state(StateId::Snapshot(i))?, Some(e)))
            }
            Node::VmState(rel, key) => {
                let e = self.images.entry(rel)?;
                let i = e.snapshot_index(key)?;
                Ok((Arc::new(VmState::open(e.image()?, i)?), Some(e)))
            }
            Node::Layer(rel, dir, key) => {
                let e = self.images.entry(rel)?;
                if key.x == StateKey::Active || key.y == Some(StateKey::Active) {
                    self.images.refuse_in_use(rel)?;
                }
                let spec = e.spec(*dir, self.images.use_of(rel), self.images.confine(), key)?;
                Ok((e.layer(&spec)?, Some(e)))
            }
            Node::Pass(rel, dir, name, path, _) => {
                let e = self.images.entry(rel)?;
                let (shown, _) = self.images.folder(&e, rel, *dir)?;
                let p = shown
                    .folder
                    .pass
                    .iter()
                    .find(|p| p.file_name == *name && p.path == *path)
                    .ok_or_else(|| Error::NotFound { name: name.clone() })?;
                Ok((Arc::from(crate::chain::pass_view(p)?), Some(e)))
            }
            Node::Manifest(rel, dir) => {
                let e = self.images.entry(rel)?;
                let (shown, use_) = self.images.folder(&e, rel, *dir)?;
                let m = e.manifest(*dir, &shown.folder, use_)?;
                Ok((Arc::new(Bytes(m.as_ref().clone())), Some(e)))
            }
            Node::FileSum(rel, file) => {
                let e = self.images.entry(rel)?;
                let bytes = self.file_sum_bytes(&e, rel, file, &|n| Ok(self.view(n)?.0))?;
                Ok((Arc::new(Bytes(bytes)), Some(e)))
            }
            Node::Sums(rel, dir) => {
                let e = self.images.entry(rel)?;
                let bytes = self.sums_bytes(&e, rel, *dir, &|n| Ok(self.view(n)?.0))?;
                Ok((Arc::new(Bytes(bytes)), Some(e)))
            }
            Node::Dir(_) | Node::Image(_) | Node::SnapDir(_) | Node::ChainDir(..) => {
                Err(Error::IsADirectory)
            }
        }
    }

    /// Open file `ino` for process `pid`; returns the handle and how the
    /// kernel is to cache what is read through it. A file of a chain folder
    /// that `pid` listed fails with ESTALE once the folder holds another
    /// state than the one listed (a copy of the folder is one state or
    /// fails).
    pub fn open(&self, ino: u64, pid: u32) -> Result<(u64, Caching)> {
        let node = self.inodes.node(ino)?;
        self.check_listed(&node, pid)?;
        let (view, entry) = self.view(&node).inspect_err(|e| match image_of(&node) {
            Some(rel) => match self.images.opened(rel) {
                Some(entry) => entry.log_once(&self.images.path(rel), e),
                None => log::warn!("{}: {e}", rel.display()),
            },
            None => log::warn!("{node:?}: {e}"),
        })?;
        // A file keeps its pages while every file its bytes come from is the
        // version it was last opened at: for snapshot views and layers built
        // only from snapshots, the image's backing files; for any other
        // file, the image too.
        let stamps = self.images.source_stamps(&node, entry.as_deref());
        let keep = self.freshness.same_as_last_open(ino, stamps);
        let hashing = self
            .hashing
            .start(
                &node,
                || self.images.sources(&node, entry.as_deref()),
                &view,
            )
            .map(Arc::new);
        let caching = if hashing.is_some() && self.hashing.read_in_full_so_far(&node) {
            Caching::Direct
        } else if keep {
            Caching::Keep
        } else {
            Caching::Drop
        };
        let handle = Handle {
            node,
            view,
            entry,
            hashing,
        };
        Ok((self.handles.add_file(handle), caching))
    }

    /// Forget an open handle.
    pub fn release(&self, fh: u64) {
        if let Some(h) = self.handles.remove_file(fh) {
            let h = h.lock();
            self.hashing.ended(&h.node, h.hashing.is_some());
        }
    }

    /// The handle's view, re-resolved if its image changed since it was
    /// opened. A snapshot deleted meanwhile is an error: its clusters may
    /// have been reused.
    pub(super) fn current_view(&self, h: &Mutex<Handle>) -> Result<Resolved> {
        // The lock is held to copy the handle out and to store a new view,
        // never across the stat, reopen and planning in between.
        let (node, view, entry) = {
            let g = h.lock();
            (g.node.clone(), Arc::clone(&g.view), g.entry.clone())
        };
        let (Some(e), Some(rel)) = (&entry, image_of(&node)) else {
            return Ok((view, entry));
        };
        if Arc::ptr_eq(e, &self.images.entry(rel)?) {
            return Ok((view, entry));
        }
        // A snapshot deleted (or taken again under its name) meanwhile is
        // gone under the reader: ESTALE, as for any file that changed.
        let (view, entry) = self.view(&node).map_err(|err| match err {
            Error::SnapshotGone { .. } | Error::NotFound { .. } => Error::Changed {
                path: self.images.path(rel),
            },
            other => other,
        })?;
        let mut g = h.lock();
        g.view = Arc::clone(&view);
        g.entry = entry.clone();
        Ok((view, entry))
    }

    /// Read up to `size` bytes at `offset` from an open file.
    pub fn read(&self, fh: u64, offset: u64, size: usize) -> Result<ReadBytes> {
        let h = self.handles.file(fh)?;
        let (node, view, entry, hashing) = {
            let g = h.lock();
            let view = Arc::clone(&g.view);
            (g.node.clone(), view, g.entry.clone(), g.hashing.clone())
        };
        let pool = self.handles.pool();
        let mut buf = pool.take(size);
        let result = (|| {
            let buf = &mut buf[..size];
            let read = view.read_at(buf, offset);
            // Validate after the read, with one stat: if the image changed
            // since the view was resolved, the bytes may be stale or mix two
            // versions (or the read failed on tables reused meanwhile). A
            // file that never changes while it exists is read again from the
            // current opening (which fails with ESTALE if the snapshot is
            // gone); any other file fails, so that a copy racing a change
            // ends in an error rather than a mix of two states.
            // Generated files (reports, manifests, sums) are made whole at
            // open: their bytes are one state whatever happens after.
            if let (Some(e), Some(rel)) = (&entry, image_of(&node))
                && !generated(&node)
                && !self.images.unchanged(e, rel)
            {
                if !immutable(&node) {
                    return Err(Error::Changed {
                        path: self.images.path(rel),
                    });
                }
                let (view, _) = self.current_view(&h)?;
                return view.read_at(buf, offset);
            }
            read
        })();
        match result {
            Ok(n) => {
                let bytes = ReadBytes::new(buf, n, pool);
                if let Some(t) = hashing {
                    t.feed(offset, &bytes);
                }
                Ok(bytes)
            }
            Err(e) => {
                if let (Some(rel), Some(entry)) = (image_of(&node), entry) {
                    entry.log_once(&self.images.path(rel), &e);
                } else {
                    log::warn!("{node:?}: {e}");
                }
                Err(e)
            }
        }
    }
}

/// Files whose bytes are generated whole when they are opened.
pub(super) fn generated(node: &Node) -> bool {
    matches!(
        node,
        Node::Info(..) | Node::Manifest(..) | Node::Sums(..) | Node::FileSum(..)
    )
}

/// Generated bytes (reports, manifests, sums) as a view.
pub(super) struct Bytes(Vec<u8>);

impl View for Bytes {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = crate::view::clip(buf.len(), offset, self.size());
        if n > 0 {
            buf[..n].copy_from_slice(&self.0[offset as usize..offset as usize + n]);
        }
        Ok(n)
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<crate::view::Extent>> {
        Ok(crate::view::all_data(offset, len, self.size()))
    }
}
