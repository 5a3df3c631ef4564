//! The files of a chain folder, and its `SHA256SUMS`: listed from names,
//! hashed as files are read in full, remembered while their sources are
//! unchanged.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Tree;
use super::entry::ImageEntry;
use super::node::{Listing, Node};
use crate::chain::sums::{self, SUMS_NAME, Sha256Digest};
use crate::chain::{self, Direction};
use crate::error::Result;
use crate::parallel::map_side_by_side;
use crate::view::View;

/// How the bytes of a file to hash are read: the tree's resolution of a
/// node into its view, handed down (the view of `SHA256SUMS` is itself
/// made of the digests of the others).
pub(super) type Resolve<'a> = &'a (dyn Fn(&Node) -> Result<Arc<dyn View>> + Sync);

impl Tree {
    /// The files of a chain folder other than its checksums, in order:
    /// layers bottom first, the image's backing files, the manifest.
    pub(super) fn chain_files(&self, rel: &Path, dir: Direction) -> Result<Vec<(OsString, Node)>> {
        let e = self.images.entry(rel)?;
        Ok(self.listing(&e, rel, dir)?.files.clone())
    }

    /// A chain folder's listing, made once per opening and use.
    pub(super) fn listing(
        &self,
        e: &ImageEntry,
        rel: &Path,
        dir: Direction,
    ) -> Result<Arc<Listing>> {
        let use_ = self.images.use_of(rel);
        if let Some(l) = e.kept.listings.lock().get(&(dir, use_)) {
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
        e.kept.listings.lock().insert((dir, use_), Arc::clone(&l));
        Ok(l)
    }

    fn list_chain_files(
        &self,
        e: &ImageEntry,
        rel: &Path,
        dir: Direction,
    ) -> Result<Vec<(OsString, Node)>> {
        let (shown, _) = self.images.folder(e, rel, dir)?;
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
        let e = self.images.entry(rel)?;
        let (shown, _) = self.images.folder(&e, rel, Direction::Incremental)?;
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
    pub(super) fn file_sum_bytes(
        &self,
        e: &ImageEntry,
        rel: &Path,
        file: &str,
        resolve: Resolve,
    ) -> Result<Vec<u8>> {
        let (node, name) = self.summed(rel, file)?;
        let d = self.digest(e, &node, resolve)?;
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
        for spec in &self.images.folder(e, rel, dir)?.0.folder.layers {
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
    pub(super) fn sums_bytes(
        &self,
        e: &ImageEntry,
        rel: &Path,
        dir: Direction,
        resolve: Resolve,
    ) -> Result<Vec<u8>> {
        let files = self.chain_files(rel, dir)?;
        let digest = |(_, node): &(OsString, Node)| self.digest(e, node, resolve);
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
        let stamps = self.images.source_stamps(node, Some(e))?;
        self.hashing.known(node, &stamps)
    }

    /// The digest of one chain folder file, remembered or computed, its
    /// bytes read through `resolve`.
    fn digest(&self, e: &ImageEntry, node: &Node, resolve: Resolve) -> Result<Sha256Digest> {
        if let Some(d) = self.known_digest(e, node) {
            return Ok(d);
        }
        let stamps = self.images.source_stamps(node, Some(e));
        let view = resolve(node)?;
        let d = sums::hash_view(&*view)?;
        if let Some(s) = stamps {
            self.hashing.remember(node, s, d);
        }
        Ok(d)
    }
}
