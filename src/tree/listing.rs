//! Folder listings and lookups: IMAGE_DIR mirrored, and the fixed folders
//! of every image.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Tree;
use super::entry::ImageEntry;
use super::handles::DirEntry;
use super::node::{Attr, Kind, Listing, Node, SnapKey, chain_folder_of, immutable, is_dir};
use crate::chain::Direction;
use crate::error::{Error, Result};
use crate::image::is_qcow2;

impl Tree {
    /// The node a source entry is shown as: folders stay folders, qcow2
    /// files (known by their magic) become image folders, other files are
    /// shown as they are; anything else is not shown.
    pub(super) fn mirrored(&self, rel: PathBuf) -> Result<Option<Node>> {
        let (real, meta) = self.images.source(&rel)?;
        Ok(if meta.is_dir() {
            Some(Node::Dir(rel))
        } else if !meta.is_file() {
            None
        } else if is_qcow2(&real) {
            Some(Node::Image(rel))
        } else {
            Some(Node::Plain(rel))
        })
    }

    /// The children of a folder: (name, node).
    pub(super) fn children(&self, node: &Node) -> Result<Vec<(OsString, Node)>> {
        match node {
            Node::Dir(rel) => {
                let (path, _) = self.images.source(rel)?;
                let rd =
                    std::fs::read_dir(&path).map_err(|e| Error::io("read folder", &path, e))?;
                let mut out = Vec::new();
                for de in rd.flatten() {
                    let name = de.file_name();
                    let child = rel.join(&name);
                    // Entries that vanish, dangle or lead outside are not shown.
                    let Ok(Some(n)) = self.mirrored(child) else {
                        continue;
                    };
                    out.push((name, n));
                }
                out.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(out)
            }
            Node::Image(rel) => {
                let e = self.images.entry(rel)?;
                // An image that cannot be opened holds only `info`, saying why.
                let mut out = vec![(OsString::from("info"), Node::Info(rel.clone(), false))];
                if e.image.is_ok() {
                    out.push((OsString::from("info.json"), Node::Info(rel.clone(), true)));
                    out.push((OsString::from("active.raw"), Node::Active(rel.clone())));
                    out.push((OsString::from("snapshots"), Node::SnapDir(rel.clone())));
                    out.push((
                        OsString::from("chain"),
                        Node::ChainDir(rel.clone(), Direction::Reverse),
                    ));
                    out.push((
                        OsString::from("forward"),
                        Node::ChainDir(rel.clone(), Direction::Forward),
                    ));
                    out.push((
                        OsString::from("incremental"),
                        Node::ChainDir(rel.clone(), Direction::Incremental),
                    ));
                }
                Ok(out)
            }
            Node::ChainDir(rel, dir) => {
                let e = self.images.entry(rel)?;
                let l = self.listing(&e, rel, *dir)?;
                Ok(l.files.iter().chain(&l.sums).cloned().collect())
            }
            Node::SnapDir(rel) => {
                let e = self.images.entry(rel)?;
                Ok(self.snap_listing(&e, rel)?.files.clone())
            }
            _ => Err(Error::NotADirectory),
        }
    }

    /// The listing of `snapshots/`, made once per opening of the image.
    fn snap_listing(&self, e: &ImageEntry, rel: &Path) -> Result<Arc<Listing>> {
        if let Some(l) = e.kept.snap_listing.get() {
            return Ok(Arc::clone(l));
        }
        let rel = rel.to_path_buf();
        let img = e.image()?;
        let mut out = Vec::new();
        for (s, stem) in img.snapshots().iter().zip(&e.stems) {
            let key = SnapKey::of(s);
            out.push((
                OsString::from(format!("{stem}.raw")),
                Node::Snap(rel.clone(), key.clone()),
            ));
            if s.vm_state_size > 0 {
                out.push((
                    OsString::from(format!("{stem}.vmstate")),
                    Node::VmState(rel.clone(), key),
                ));
            }
        }
        let by_name = out.iter().cloned().collect();
        let l = Arc::new(Listing {
            files: out,
            sums: Vec::new(),
            by_name,
        });
        Ok(Arc::clone(e.kept.snap_listing.get_or_init(|| l)))
    }

    /// Look `name` up in folder `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        let p = self.inodes.node(parent)?;
        let node = match &p {
            // Mirrored folders: look at the one entry rather than listing.
            Node::Dir(rel) => {
                if name.as_encoded_bytes().contains(&b'/') || name == "." || name == ".." {
                    return Err(Error::NotFound {
                        name: name.to_string_lossy().into(),
                    });
                }
                self.mirrored(rel.join(name))?
                    .ok_or_else(|| Error::NotFound {
                        name: name.to_string_lossy().into(),
                    })?
            }
            // Generated folders: by name, from the listing kept.
            Node::ChainDir(rel, dir) => {
                let e = self.images.entry(rel)?;
                self.listing(&e, rel, *dir)?.named(name)?
            }
            Node::SnapDir(rel) => {
                let e = self.images.entry(rel)?;
                self.snap_listing(&e, rel)?.named(name)?
            }
            _ => self
                .children(&p)?
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, n)| n)
                .ok_or_else(|| Error::NotFound {
                    name: name.to_string_lossy().into(),
                })?,
        };
        let ino = self.inodes.remember(node);
        // As getattr answers (a generated file open keeps its size).
        self.getattr(ino)
    }

    /// Open folder `ino` for listing by process `pid`: its entries are
    /// taken now, so that a listing read in several parts is one state
    /// even when the folder changes meanwhile. Returns the handle.
    pub fn opendir(&self, ino: u64, pid: u32) -> Result<u64> {
        let entries = self.readdir(ino, pid)?;
        Ok(self.handles.add_dir(entries))
    }

    /// The entries an open folder handle took.
    pub fn dir_entries(&self, fh: u64) -> Result<Arc<Vec<DirEntry>>> {
        self.handles.dir(fh)
    }

    /// Forget an open folder handle.
    pub fn releasedir(&self, fh: u64) {
        self.handles.remove_dir(fh);
    }

    /// The entries of folder `ino`: (inode, kind, name), without . and ..
    /// `pid` is the process listing it: a chain folder's listing is
    /// remembered for it (see [`Tree::open`]).
    pub fn readdir(&self, ino: u64, pid: u32) -> Result<Vec<DirEntry>> {
        let node = self.inodes.node(ino)?;
        let children = self.children(&node)?;
        if let Node::ChainDir(rel, _) = &node {
            let generation = self.generation(rel, &children);
            self.freshness.note_listing(pid, ino, generation);
        }
        Ok(children
            .into_iter()
            .map(|(name, n)| {
                let kind = if is_dir(&n) { Kind::Dir } else { Kind::File };
                (self.inodes.number(&n), kind, name)
            })
            .collect())
    }

    /// What a chain folder holds, as one number: its names and nodes, the
    /// versions of the backing files it passes through, and, when one of
    /// its layers stands for or over the active state, the image's version
    /// (a running VM's writes change nothing else in a folder of its
    /// snapshots). Another number means another state.
    pub(super) fn generation(&self, rel: &Path, children: &[(OsString, Node)]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        children.hash(&mut h);
        let e = self.images.entry(rel).ok();
        for (_, n) in children {
            let live = matches!(n, Node::Layer(..)) && !immutable(n);
            if live || matches!(n, Node::Pass(..)) {
                self.images.source_stamps(n, e.as_deref()).hash(&mut h);
            }
        }
        h.finish()
    }

    /// A process that listed the chain folder of `node` opens it: refused
    /// with ESTALE when the folder holds another state than the one it
    /// listed, so that a copy of a whole folder is one state or fails.
    pub(super) fn check_listed(&self, node: &Node, pid: u32) -> Result<()> {
        let Some(folder) = chain_folder_of(node) else {
            return Ok(());
        };
        let dir_ino = self.inodes.number(&folder);
        let Some(listed) = self.freshness.listed_at(pid, dir_ino) else {
            return Ok(());
        };
        let Node::ChainDir(rel, _) = &folder else {
            return Ok(());
        };
        let now = self.children(&folder)?;
        if self.generation(rel, &now) != listed {
            return Err(Error::Changed {
                path: self.images.path(rel),
            });
        }
        Ok(())
    }
}
