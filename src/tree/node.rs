//! What a node of the tree is: named by what it shows (a source path, a
//! snapshot's identity, the states a layer is built from), never by a
//! position in a table, so that a reopened image keeps its nodes.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::chain::Direction;
use crate::error::{Error, Result};
use crate::layer::BackingRef;
use crate::qcow2::snapshot::Snapshot;

/// What a snapshot is, independent of its position in the table: the same
/// key after a reopen means the same snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SnapKey {
    pub(super) id: String,
    pub(super) date_sec: u32,
    pub(super) date_nsec: u32,
    l1_table_offset: u64,
}

impl SnapKey {
    pub(super) fn of(s: &Snapshot) -> SnapKey {
        SnapKey {
            id: s.id.clone(),
            date_sec: s.date_sec,
            date_nsec: s.date_nsec,
            l1_table_offset: s.l1_table_offset,
        }
    }
}

/// A node of the tree. Paths are relative to IMAGE_DIR.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Node {
    /// A mirrored folder ("" is the root).
    Dir(PathBuf),
    /// A file that is not qcow2, shown as is.
    Plain(PathBuf),
    /// A qcow2 image, shown as a folder.
    Image(PathBuf),
    /// `info` (false) or `info.json` (true).
    Info(PathBuf, bool),
    /// `active.raw`.
    Active(PathBuf),
    /// `snapshots/`.
    SnapDir(PathBuf),
    /// `snapshots/<name>.raw`.
    Snap(PathBuf, SnapKey),
    /// `snapshots/<name>.vmstate`.
    VmState(PathBuf, SnapKey),
    /// `chain/`, `forward/` or `incremental/`.
    ChainDir(PathBuf, Direction),
    /// A synthesized layer, named by the states it is built from.
    Layer(PathBuf, Direction, LayerKey),
    /// A file of the image's backing chain, passed through into a chain
    /// folder: its name there, its path, and the backing file name it is
    /// served with when that is rewritten (another name, other bytes: another
    /// node).
    Pass(PathBuf, Direction, String, PathBuf, Option<String>),
    /// `chain.json`, or `INDEX` of `incremental/`.
    Manifest(PathBuf, Direction),
    /// `SHA256SUMS` of `chain/` or `forward/`.
    Sums(PathBuf, Direction),
    /// `FILE.sha256` of `incremental/`, for the file named.
    FileSum(PathBuf, String),
}

/// A state, independent of table positions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum StateKey {
    Active,
    Snap(SnapKey),
}

/// What a layer is built from: its state, its backing state and the backing
/// reference written into it. A layer whose inputs change is a new node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct LayerKey {
    pub(super) file_name: String,
    pub(super) x: StateKey,
    pub(super) y: Option<StateKey>,
    pub(super) backing: Option<BackingRef>,
}

pub(super) fn image_of(node: &Node) -> Option<&Path> {
    match node {
        Node::Image(r)
        | Node::Info(r, _)
        | Node::Active(r)
        | Node::SnapDir(r)
        | Node::Snap(r, _)
        | Node::VmState(r, _)
        | Node::ChainDir(r, _)
        | Node::Layer(r, _, _)
        | Node::Pass(r, ..)
        | Node::Manifest(r, _)
        | Node::Sums(r, _)
        | Node::FileSum(r, _) => Some(r),
        Node::Dir(_) | Node::Plain(_) => None,
    }
}

pub(super) fn is_dir(n: &Node) -> bool {
    matches!(
        n,
        Node::Dir(_) | Node::Image(_) | Node::SnapDir(_) | Node::ChainDir(..)
    )
}

/// Snapshot views and layers built only from snapshots do not change while
/// they exist, whatever happens to the image's active state: their bytes
/// depend only on the snapshots and on the image's backing files (whose
/// stamps [`crate::tree`] checks for them, see `Tree::sources`).
pub(super) fn immutable(node: &Node) -> bool {
    match node {
        Node::Snap(..) | Node::VmState(..) => true,
        Node::Layer(_, _, k) => k.x != StateKey::Active && k.y != Some(StateKey::Active),
        _ => false,
    }
}

/// The parent folder of a file of a chain folder.
pub(super) fn chain_folder_of(node: &Node) -> Option<Node> {
    match node {
        Node::Layer(rel, dir, _)
        | Node::Pass(rel, dir, ..)
        | Node::Manifest(rel, dir)
        | Node::Sums(rel, dir) => Some(Node::ChainDir(rel.clone(), *dir)),
        Node::FileSum(rel, _) => Some(Node::ChainDir(rel.clone(), Direction::Incremental)),
        _ => None,
    }
}

/// The path in the tree of a file of a chain folder, which rsync compares
/// by: the key of the mtime rule.
pub(super) fn shown_path(node: &Node) -> Option<PathBuf> {
    let (rel, dir, name) = match node {
        Node::Layer(rel, dir, key) => (rel, *dir, key.file_name.as_str()),
        Node::Pass(rel, dir, name, ..) => (rel, *dir, name.as_str()),
        Node::Manifest(rel, dir) => (rel, *dir, dir.manifest_name()),
        Node::Sums(rel, dir) => (rel, *dir, crate::chain::sums::SUMS_NAME),
        Node::FileSum(rel, name) => {
            let file = format!("{name}{}", crate::chain::FILE_SUM_SUFFIX);
            return Some(rel.join(Direction::Incremental.folder_name()).join(file));
        }
        _ => return None,
    };
    Some(rel.join(dir.folder_name()).join(name))
}

/// The files a folder lists, and by name (a few hundred bytes per
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
    /// True for what may be trusted for a while: attributes of files whose
    /// bytes cannot change while they exist (snapshot views and layers
    /// built only from snapshots, of an image with no backing file: nothing
    /// else they read from can change), and folders (their listings are
    /// always read afresh). Every other file must be asked for afresh. A
    /// file's name is never trusted: it is looked up afresh each time.
    pub fixed: bool,
    /// Permission bits (never a write bit).
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}
