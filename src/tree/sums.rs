//! The files of a chain folder, and its `SHA256SUMS`: listed from names,
//! hashed as files are read in full, remembered while their sources are
//! unchanged.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::Tree;
use super::entry::{ImageEntry, Shown, Stamp};
use super::handles::Handle;
use super::node::Node;
use crate::chain::{self, Direction, Use};
use crate::error::{Error, Result};
use crate::parallel::map_side_by_side;
use crate::sums::SUMS_NAME;
use crate::sums::{self, HashThread, Sha256Digest};
use crate::view::View;

/// Digests of chain folder files, each with the stamps of the sources it
/// was computed from. One entry per file of a chain folder: bounded by the
/// images and their snapshots, 100 bytes or so each.
pub(super) type Digests = Mutex<HashMap<Node, (Vec<Stamp>, Sha256Digest)>>;

impl Tree {
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

    /// The files of a chain folder other than its checksums, in order:
    /// layers bottom first, the image's backing files, the manifest.
    pub(super) fn chain_files(&self, rel: &Path, dir: Direction) -> Result<Vec<(OsString, Node)>> {
        let e = self.entry(rel)?;
        Ok(self.listing(&e, rel, dir)?.files.clone())
    }

    /// A chain folder's listing, made once per opening and use.
    pub(super) fn listing(
        &self,
        e: &ImageEntry,
        rel: &Path,
        dir: Direction,
    ) -> Result<Arc<Listing>> {
        let use_ = self.use_of(rel);
        if let Some(l) = e.listings.lock().get(&(dir, use_)) {
            return Ok(Arc::clone(l));
        }
        let files = self.list_chain_files(e, rel, dir)?;
        let sums = self.sum_files(rel, dir, &files);
        let by_name = files.iter().chain(&sums).cloned().collect();
        let l = Arc::new(Listing {
            files,
            sums,
            by_name,
        });
        e.listings.lock().insert((dir, use_), Arc::clone(&l));
        Ok(l)
    }

    fn list_chain_files(
        &self,
        e: &ImageEntry,
        rel: &Path,
        dir: Direction,
    ) -> Result<Vec<(OsString, Node)>> {
        let (shown, _) = self.folder(e, rel, dir)?;
        let folder = &shown.folder;
        let mut out = Vec::new();
        for s in &folder.layers {
            let key = e.layer_key(s)?;
            out.push((
                OsString::from(&s.file_name),
                Node::Layer(rel.to_path_buf(), dir, key),
            ));
        }
        for p in &folder.pass {
            out.push((
                OsString::from(&p.file_name),
                Node::Pass(
                    rel.to_path_buf(),
                    dir,
                    p.file_name.clone(),
                    p.path.clone(),
                    p.rewrite.as_ref().map(|r| r.name.clone()),
                ),
            ));
        }
        out.push((
            OsString::from(dir.manifest_name()),
            Node::Manifest(rel.to_path_buf(), dir),
        ));
        Ok(out)
    }

    /// The checksum files of a chain folder: `SHA256SUMS` for `chain/` and
    /// `forward/`; in `incremental/`, a `FILE.sha256` per layer and backing
    /// file (a replica fetches a few files a night and verifies those).
    pub(super) fn sum_files(
        &self,
        rel: &Path,
        dir: Direction,
        files: &[(OsString, Node)],
    ) -> Vec<(OsString, Node)> {
        match dir {
            Direction::Incremental => files
                .iter()
                .filter(|(_, n)| matches!(n, Node::Layer(..) | Node::Pass(..)))
                .map(|(name, _)| {
                    let name = name.to_string_lossy().into_owned();
                    (
                        OsString::from(format!("{name}{}", chain::FILE_SUM_SUFFIX)),
                        Node::FileSum(rel.to_path_buf(), name),
                    )
                })
                .collect(),
            _ => vec![(
                OsString::from(SUMS_NAME),
                Node::Sums(rel.to_path_buf(), dir),
            )],
        }
    }

    /// The file of `incremental/` that `FILE.sha256` is for, and the name a
    /// replica keeps it by.
    fn summed(&self, rel: &Path, file: &str) -> Result<(Node, String)> {
        let e = self.entry(rel)?;
        let (shown, _) = self.folder(&e, rel, Direction::Incremental)?;
        let folder = &shown.folder;
        let node = self
            .listing(&e, rel, Direction::Incremental)?
            .named(OsStr::new(file))?;
        let spec = folder.layers.iter().find(|s| s.file_name == file);
        Ok((node, chain::replica_name(e.image()?, spec, file)))
    }

    /// Size of `FILE.sha256`: from the names alone.
    pub(super) fn file_sum_size(&self, rel: &Path, file: &str) -> Result<u64> {
        let (_, name) = self.summed(rel, file)?;
        Ok(sums::len([name.as_str()]))
    }

    /// The bytes of `FILE.sha256`: the file's digest (hashed now, unless a
    /// read of it in full did), under the name a replica keeps it by.
    pub(super) fn file_sum_bytes(&self, e: &ImageEntry, rel: &Path, file: &str) -> Result<Vec<u8>> {
        let (node, name) = self.summed(rel, file)?;
        let d = self.digest(e, &node)?;
        Ok(sums::text(&[(name, d)]).into_bytes())
    }

    /// Size and mtime of `SHA256SUMS`: the size from the names alone; the
    /// mtime the latest of the dates of what it lists (the states of the
    /// layers, the image file, the backing files). The rsync rule is then
    /// applied to it as to any file of the folder.
    pub(super) fn sums_attr(
        &self,
        e: &ImageEntry,
        rel: &Path,
        dir: Direction,
    ) -> Result<(u64, SystemTime)> {
        let files = self.chain_files(rel, dir)?;
        let size = sums::len(files.iter().map(|(n, _)| n.to_str().unwrap_or("")));
        let mut mtime = e.meta.modified().unwrap_or(UNIX_EPOCH);
        // The layers' dates from their specs directly (the listing named
        // them by key; looking each key up again would be quadratic).
        for spec in &self.folder(e, rel, dir)?.0.folder.layers {
            mtime = mtime.max(e.layer_time(spec)?);
        }
        for (_, node) in &files {
            if let Node::Pass(.., path, _) = node {
                let t = std::fs::metadata(path).and_then(|m| m.modified());
                mtime = mtime.max(t.unwrap_or(UNIX_EPOCH));
            }
        }
        Ok((size, mtime))
    }

    /// The bytes of `SHA256SUMS`, hashing whatever was not hashed yet: the
    /// files are hashed side by side, one per core (a reader that takes
    /// `SHA256SUMS` first, as rsync does, waits for all of them).
    pub(super) fn sums_bytes(&self, e: &ImageEntry, rel: &Path, dir: Direction) -> Result<Vec<u8>> {
        let files = self.chain_files(rel, dir)?;
        let digest = |(_, node): &(OsString, Node)| self.digest(e, node);
        let unknown = files
            .iter()
            .filter(|(_, node)| self.known_digest(e, node).is_none())
            .count();
        let digests = if unknown > 1 {
            map_side_by_side(&files, digest)
        } else {
            files.iter().map(digest).collect()
        };
        let mut lines = Vec::new();
        for ((name, _), d) in files.iter().zip(digests) {
            lines.push((name.to_string_lossy().into_owned(), d?));
        }
        Ok(sums::text(&lines).into_bytes())
    }

    /// The digest of a chain folder file, if it is remembered for its
    /// sources as they are now.
    fn known_digest(&self, e: &ImageEntry, node: &Node) -> Option<Sha256Digest> {
        let stamps = self.source_stamps(node, Some(e))?;
        match self.digests.lock().get(node) {
            Some((known, d)) if *known == stamps => Some(*d),
            _ => None,
        }
    }

    /// The digest of one chain folder file, remembered or computed.
    fn digest(&self, e: &ImageEntry, node: &Node) -> Result<Sha256Digest> {
        if let Some(d) = self.known_digest(e, node) {
            return Ok(d);
        }
        let stamps = self.source_stamps(node, Some(e));
        let (view, _) = self.view(node)?;
        let d = sums::hash_view(&*view)?;
        if let Some(s) = stamps {
            self.digests.lock().insert(node.clone(), (s, d));
        }
        Ok(d)
    }

    /// Hashing for a handle of a file that `SHA256SUMS` lists: what is read
    /// of it is hashed on a thread of its own, and once the whole file was
    /// read, its digest is remembered, unless its sources changed meanwhile.
    pub(super) fn start_hashing(
        &self,
        node: &Node,
        e: Option<&ImageEntry>,
        view: &Arc<dyn View>,
    ) -> Option<HashThread> {
        if !matches!(node, Node::Layer(..) | Node::Pass(..) | Node::Manifest(..)) {
            return None;
        }
        // incremental/'s INDEX has no checksum file.
        if matches!(node, Node::Manifest(_, Direction::Incremental)) {
            return None;
        }
        let sources = self.sources(node, e)?;
        let stamps = sources.stamps()?;
        let known = self
            .digests
            .lock()
            .get(node)
            .is_some_and(|(s, _)| *s == stamps);
        if known {
            return None;
        }
        let digests = Arc::clone(&self.digests);
        let node = node.clone();
        HashThread::start(
            Arc::clone(view),
            Box::new(move |d| {
                if sources.stamps().as_ref() == Some(&stamps) {
                    digests.lock().insert(node, (stamps, d));
                }
            }),
        )
    }

    /// Whether every open of `node` that hashed it read it in full.
    pub(super) fn read_in_full_so_far(&self, node: &Node) -> bool {
        !self.scattered.lock().contains(node)
    }

    /// A handle is closed: if it hashed its file and the digest is still not
    /// known, its reader went about the file some other way than a copy.
    pub(super) fn hashing_ended(&self, h: &Handle) {
        if h.hashing.is_some() && !self.digests.lock().contains_key(&h.node) {
            log::debug!("{:?}: closed before it was read in full", h.node);
            self.scattered.lock().insert(h.node.clone());
        }
    }
}

/// The files a chain folder lists, and by name (a few hundred bytes per
/// file, kept per opening of the image).
pub(super) struct Listing {
    /// Layers, backing files, the manifest.
    pub(super) files: Vec<(OsString, Node)>,
    /// The checksum files.
    pub(super) sums: Vec<(OsString, Node)>,
    /// Every one of them by name.
    pub(super) by_name: HashMap<OsString, Node>,
}

impl Listing {
    /// The node listed under `name`.
    pub(super) fn named(&self, name: &OsStr) -> Result<Node> {
        self.by_name
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                name: name.to_string_lossy().into(),
            })
    }
}

/// A new, empty digest memo.
pub(super) fn digests() -> Arc<Digests> {
    Arc::new(Mutex::new(HashMap::new()))
}
