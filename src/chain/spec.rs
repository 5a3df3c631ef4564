//! What a chain is made of, and how its files are named: which chain,
//! whether the image is in use, the specs of its layers and of the
//! backing files it passes through.

use std::path::{Path, PathBuf};

use crate::image::{Image, StateId};
use crate::layer::BackingRef;
use crate::names::snapshot_ident;

/// Which chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `chain/`: newest complete, older layers hold differences.
    Reverse,
    /// `forward/`: oldest complete, newer layers hold differences.
    Forward,
    /// `incremental/`: the snapshots' layers named by snapshot identity,
    /// for a replica built night after night (see [`INDEX_NAME`]).
    Incremental,
}

impl Direction {
    /// The folder an image shows the chain in.
    pub fn folder_name(self) -> &'static str {
        match self {
            Direction::Reverse => "chain",
            Direction::Forward => "forward",
            Direction::Incremental => "incremental",
        }
    }

    /// The file that describes the folder: `chain.json`, or for
    /// `incremental/` its `INDEX`.
    pub fn manifest_name(self) -> &'static str {
        match self {
            Direction::Reverse | Direction::Forward => "chain.json",
            Direction::Incremental => INDEX_NAME,
        }
    }
}

/// The index of `incremental/`: one line per snapshot, oldest first,
/// `IDENT PRED FILE NAME` (see [`index`]).
pub const INDEX_NAME: &str = "INDEX";

/// What a per-file checksum of `incremental/` is called: `FILE.sha256`.
pub const FILE_SUM_SUFFIX: &str = ".sha256";

/// Whether another process holds the image open for writing (a running
/// VM): its chains then hold the snapshots only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Use {
    /// Nobody writes it, or the live state is wanted anyway (`--force-share`).
    Rest,
    /// Another process writes it: the active state is not served.
    Written,
}

/// One layer of a chain.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LayerSpec {
    /// File name inside the chain's folder.
    pub file_name: String,
    /// The state the layer stands for.
    pub x: StateId,
    /// The state its backing file reads as (None: the image's own backing).
    pub y: Option<StateId>,
    /// The backing file written into the layer.
    pub backing: Option<BackingRef>,
}

/// A file of the image's own backing chain, as found below it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackingFile {
    /// The file.
    pub path: PathBuf,
    /// "qcow2" or "raw".
    pub format: String,
    /// For a qcow2 file with a backing file of its own: where its header
    /// keeps that name.
    pub names_backing: Option<BackingName>,
}

/// Where a qcow2 header keeps its backing file's name, and what it says.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackingName {
    /// The name as written.
    pub name: String,
    /// Its offset in the file.
    pub offset: u64,
    /// Bytes from the end of the name to the end of the header cluster that
    /// hold only zeros: room for a longer name.
    pub room: u64,
}

/// A file of the image's own backing chain, passed through into a chain
/// folder under `file_name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Passthrough {
    /// Name inside the chain's folder, unique there.
    pub file_name: String,
    /// The source file.
    pub path: PathBuf,
    /// For a qcow2 file whose own backing name would not resolve inside a
    /// copy of the folder: the name it is served with instead (its header
    /// rewritten, see [`BackingRewrite`]).
    pub rewrite: Option<BackingRewrite>,
}

/// A passed-through qcow2 file served with another backing file name: the
/// name of the next file of the chain in the same folder.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackingRewrite {
    /// Offset of the name in the file.
    pub offset: u64,
    /// Length of the name as written.
    pub old_len: u64,
    /// The name served.
    pub name: String,
}

/// What a chain folder holds: its layers, bottom first, and the backing
/// files passed through, top first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Folder {
    /// The layers.
    pub layers: Vec<LayerSpec>,
    /// The backing files.
    pub pass: Vec<Passthrough>,
}

/// The file name of `p`, or nothing.
pub(super) fn base_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The stem of layer names: the image's file name without its extension.
pub fn stem(image: &Image) -> String {
    let p = image.path();
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into())
}

/// The name a replica keeps a file of `incremental/` by: a layer by its
/// snapshot's identity (`IDENT.qcow2`), anything else by its own name.
pub fn replica_name(image: &Image, spec: Option<&LayerSpec>, file_name: &str) -> String {
    match spec.map(|s| s.x) {
        Some(StateId::Snapshot(i)) => match image.snapshots().get(i) {
            Some(s) => format!("{}.qcow2", snapshot_ident(s)),
            None => file_name.to_string(),
        },
        _ => file_name.to_string(),
    }
}
