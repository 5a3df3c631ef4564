//! The images of a mount: IMAGE_DIR, how its images are opened, and the
//! current opening of each, with the memo caches they share. Asked for an
//! image, it answers with its current opening, reopened if it changed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use parking_lot::Mutex;

use super::entry::{ImageEntry, Kept, Shown, Stamp, stamps_of};
use super::memo::Memos;
use super::node::{Node, immutable};
use crate::chain::{self, Direction, Use};
use crate::error::{Error, Result};
use crate::image::{Image, OpenOptions, inside};
use crate::names::snapshot_stems;

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

/// IMAGE_DIR and the images in it, as last opened.
pub(super) struct Images {
    root: PathBuf,
    opts: OpenOptions,
    /// Memo caches: states, cluster maps, layer plans.
    memos: Arc<Memos>,
    force_share: bool,
    /// The current opening of each image, by path in IMAGE_DIR.
    open: Mutex<HashMap<PathBuf, Arc<ImageEntry>>>,
}

impl Images {
    /// The images of `root` (a canonical folder), served as `t` says.
    pub(super) fn new(root: PathBuf, t: &TreeOptions) -> Images {
        let mut opts = OpenOptions::new(t.cache_bytes);
        if !t.allow_outside_backing {
            opts.backing_root = Some(root.clone());
        }
        Images {
            root,
            opts,
            memos: Arc::new(Memos::new(crate::cache::memo_budget(t.cache_bytes))),
            force_share: t.force_share,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// IMAGE_DIR.
    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    /// Where `rel` stands in IMAGE_DIR.
    pub(super) fn path(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// The opening of the image at `rel` last made, whether or not it is
    /// still current.
    pub(super) fn opened(&self, rel: &Path) -> Option<Arc<ImageEntry>> {
        self.open.lock().get(rel).cloned()
    }

    /// The current opening of the image at `rel`, reopened if it changed.
    pub(super) fn entry(&self, rel: &Path) -> Result<Arc<ImageEntry>> {
        // One stat when the image is the version already open: the same
        // device, inode, size and times can only be the same file, so the
        // path need not be resolved again.
        let known = self.open.lock().get(rel).cloned();
        if let Some(e) = known
            && std::fs::metadata(self.path(rel)).is_ok_and(|m| Stamp::of(&m) == e.stamp)
            && e.backing_unchanged()
        {
            return Ok(e);
        }
        let (path, meta) = self.source(rel)?;
        let stamp = Stamp::of(&meta);
        if let Some(e) = self.open.lock().get(rel)
            && e.stamp == stamp
            && e.backing_unchanged()
        {
            return Ok(Arc::clone(e));
        }
        let image = Image::open(&path, &self.opts).map_err(Arc::new);
        let stems = image
            .as_ref()
            .map(|i| snapshot_stems(i.snapshots()))
            .unwrap_or_default();
        let backing_files = match &image {
            Ok(img) => chain::backing_chain(img),
            Err(_) => Vec::new(),
        };
        let backing_stamps = stamps_of(&backing_files);
        let entry = Arc::new(ImageEntry {
            stamp,
            backing_stamps,
            meta,
            path: path.clone(),
            image,
            stems,
            backing_files,
            memos: Arc::clone(&self.memos),
            kept: Kept::default(),
            logged: AtomicBool::new(false),
        });
        if let Err(e) = &entry.image {
            log::warn!("{}: {e}", path.display());
        }
        let old = self
            .open
            .lock()
            .insert(rel.to_path_buf(), Arc::clone(&entry));
        if let Some(Ok(img)) = old.as_ref().map(|o| &o.image) {
            self.opts.caches.forget_image(img.id());
            self.memos.forget_image(img.id());
        }
        Ok(entry)
    }

    /// The source path of `rel`, refusing anything that resolves outside
    /// IMAGE_DIR (symlinks included).
    pub(super) fn source(&self, rel: &Path) -> Result<(PathBuf, std::fs::Metadata)> {
        let p = self.path(rel);
        let (within, real) = inside(&p, &self.root).map_err(|e| Error::io("resolve", &p, e))?;
        if !within {
            return Err(Error::NotFound {
                name: rel.display().to_string(),
            });
        }
        let meta = std::fs::metadata(&real).map_err(|e| Error::io("stat", &real, e))?;
        Ok((real, meta))
    }

    /// Whether the image at `rel` is served as at rest, or as in use by
    /// another writer (a running VM): then its chains hold its snapshots
    /// only. With --force-share, always as at rest.
    pub(super) fn use_of(&self, rel: &Path) -> crate::chain::Use {
        if self.force_share {
            return crate::chain::Use::Rest;
        }
        // Through the opening's own descriptor when there is one (callers
        // have just checked that it is current): no open per request.
        let open = self.open.lock().get(rel).cloned();
        let in_use = match open.as_ref().map(|e| &e.image) {
            Some(Ok(img)) => crate::image::lock::file_in_use(img.file().file()),
            _ => crate::image::lock::in_use(&self.path(rel)),
        };
        if in_use {
            crate::chain::Use::Written
        } else {
            crate::chain::Use::Rest
        }
    }

    /// Views of the active state of an image a running VM has open for
    /// writing are served only with --force-share; snapshot views always are.
    pub(super) fn refuse_in_use(&self, rel: &Path) -> Result<()> {
        let path = self.path(rel);
        if !self.force_share && crate::image::lock::in_use(&path) {
            return Err(Error::InUse { path });
        }
        Ok(())
    }

    /// What chain folder `dir` of the image at `rel` shows now: in use by
    /// another writer, only its snapshots (unless --force-share); backing
    /// files only inside IMAGE_DIR, unless the user allowed more.
    pub(super) fn folder(
        &self,
        e: &ImageEntry,
        rel: &Path,
        dir: Direction,
    ) -> Result<(Arc<Shown>, Use)> {
        let use_ = self.use_of(rel);
        Ok((e.folder(dir, use_, self.confine())?, use_))
    }

    /// Where backing files must resolve to be shown: inside IMAGE_DIR,
    /// unless the user allowed more.
    pub(super) fn confine(&self) -> Option<&Path> {
        self.opts
            .backing_root
            .is_some()
            .then_some(self.root.as_path())
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
                files: vec![self.path(rel)],
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
        std::fs::metadata(self.path(rel)).is_ok_and(|m| Stamp::of(&m) == e.stamp)
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
