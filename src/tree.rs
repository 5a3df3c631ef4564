//! The tree a mount shows: IMAGE_DIR mirrored, every qcow2 image a folder of
//! views. This module knows nothing of FUSE; the adapter in `fuse.rs` turns
//! requests into calls here, and tests drive it directly.
//!
//! Inode numbers: a node is named by what it shows (a source path, plus the
//! identity of a snapshot for snapshot files). The first time a node is met
//! it gets the next free number, and keeps it for the life of the mount;
//! numbers are never reused, so a deleted and re-created snapshot gets a new
//! one. Inode 1 is the root.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::chain::{self, Direction, LayerSpec};
use crate::error::{Error, Result};
use crate::image::{Image, OpenOptions, State, StateId, VmState, is_qcow2};
use crate::layer::{ClusterMap, Layer};
use crate::names::snapshot_stems;
use crate::qcow2::snapshot::Snapshot;
use crate::report::{Info, open_error_text};
use crate::view::{ExtentKind, RawView, View};

/// Inode number of the root folder.
pub const ROOT_INO: u64 = 1;
/// Bytes of a view scanned per step when seeking data or holes, bounding
/// the memory an extent list takes.
const SEEK_WINDOW: u64 = 1 << 30;
/// Bytes one SEEK_DATA/SEEK_HOLE scans at most (1 TiB). Past it the rest is
/// reported as data, which lseek allows, so a crafted disk of petabytes
/// cannot make one request spin.
const MAX_SEEK_SCAN: u64 = 1 << 40;

/// What a snapshot is, independent of its position in the table: the same
/// key after a reopen means the same snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SnapKey {
    id: String,
    date_sec: u32,
    date_nsec: u32,
    l1_table_offset: u64,
}

impl SnapKey {
    fn of(s: &Snapshot) -> SnapKey {
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
enum Node {
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
    /// `chain/` or `forward/`.
    ChainDir(PathBuf, Direction),
    /// A synthesized layer, named by the states it is built from.
    Layer(PathBuf, Direction, LayerKey),
    /// A file of the image's backing chain, passed through into a chain folder.
    Pass(PathBuf, Direction, String, PathBuf),
    /// `chain.json`.
    Manifest(PathBuf, Direction),
}

/// A state, independent of table positions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum StateKey {
    Active,
    Snap(SnapKey),
}

/// What a layer is built from: its state, its backing state and the backing
/// reference written into it. A layer whose inputs change is a new node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct LayerKey {
    file_name: String,
    x: StateKey,
    y: Option<StateKey>,
    backing: Option<crate::layer::BackingRef>,
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
    /// Permission bits (never a write bit).
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// What identifies a version of a source file: if any of it changes, the
/// image is reopened and its caches dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        }
    }
}

/// One opening of an image, valid while its stamp is.
struct ImageEntry {
    stamp: Stamp,
    meta: std::fs::Metadata,
    image: std::result::Result<Arc<Image>, String>,
    stems: Vec<String>,
    info: OnceLock<(String, String)>,
    states: Mutex<HashMap<StateId, Arc<State>>>,
    blocks: Mutex<HashMap<StateId, u64>>,
    layers: Mutex<HashMap<LayerSpec, Arc<Layer>>>,
    maps: Mutex<HashMap<StateId, Arc<ClusterMap>>>,
    manifests: Mutex<HashMap<Direction, Arc<Vec<u8>>>>,
    backing_files: OnceLock<Vec<PathBuf>>,
    logged: AtomicBool,
}

impl ImageEntry {
    /// The files of the image's backing chain, as resolved at this opening.
    fn backing_files(&self) -> &[PathBuf] {
        self.backing_files.get_or_init(|| match &self.image {
            Ok(img) => chain::passthrough(img)
                .into_iter()
                .map(|p| p.path)
                .collect(),
            Err(_) => Vec::new(),
        })
    }

    fn image(&self) -> Result<&Arc<Image>> {
        self.image
            .as_ref()
            .map_err(|e| Error::corrupt("image", e.clone()))
    }

    fn snapshot_index(&self, key: &SnapKey) -> Result<usize> {
        let img = self.image()?;
        img.snapshots()
            .iter()
            .position(|s| SnapKey::of(s) == *key)
            .ok_or_else(|| Error::SnapshotGone { id: key.id.clone() })
    }

    fn state(&self, which: StateId) -> Result<Arc<State>> {
        if let Some(s) = self.states.lock().get(&which) {
            return Ok(Arc::clone(s));
        }
        let s = Arc::new(self.image()?.state(which)?);
        self.states.lock().insert(which, Arc::clone(&s));
        Ok(s)
    }

    fn info(&self, path: &Path) -> &(String, String) {
        self.info.get_or_init(|| match self.image().and_then(Info::gather) {
            Ok(i) => (i.to_text(), format!("{:#}\n", i.to_json())),
            Err(e) => {
                let text = match &self.image {
                    Err(open) => open_error_text(path, &Error::corrupt("open", open.clone())),
                    Ok(_) => open_error_text(path, &e),
                };
                let json = serde_json::json!({"filename": path.display().to_string(), "error": e.to_string()});
                (text, format!("{json:#}\n"))
            }
        })
    }

    fn state_key(&self, w: StateId) -> Result<StateKey> {
        Ok(match w {
            StateId::Active => StateKey::Active,
            StateId::Snapshot(i) => StateKey::Snap(SnapKey::of(&self.image()?.snapshots()[i])),
        })
    }

    fn layer_key(&self, s: &LayerSpec) -> Result<LayerKey> {
        Ok(LayerKey {
            file_name: s.file_name.clone(),
            x: self.state_key(s.x)?,
            y: s.y.map(|y| self.state_key(y)).transpose()?,
            backing: s.backing.clone(),
        })
    }

    /// The current spec of the layer `key` names, if it still exists.
    fn spec(&self, dir: Direction, key: &LayerKey) -> Result<LayerSpec> {
        let img = self.image()?;
        for s in chain::layers(img, dir) {
            if self.layer_key(&s)? == *key {
                return Ok(s);
            }
        }
        Err(Error::NotFound {
            name: key.file_name.clone(),
        })
    }

    fn layer(&self, spec: &LayerSpec) -> Result<Arc<Layer>> {
        if let Some(l) = self.layers.lock().get(spec) {
            return Ok(Arc::clone(l));
        }
        let map = |w: StateId| -> Result<Arc<ClusterMap>> {
            if let Some(m) = self.maps.lock().get(&w) {
                return Ok(Arc::clone(m));
            }
            let m = Arc::new(ClusterMap::of(&*self.state(w)?)?);
            self.maps.lock().insert(w, Arc::clone(&m));
            Ok(m)
        };
        let l = Arc::new(chain::build_with(self.image()?, spec, &map)?);
        self.layers.lock().insert(spec.clone(), Arc::clone(&l));
        Ok(l)
    }

    fn manifest(&self, dir: Direction) -> Result<Arc<Vec<u8>>> {
        if let Some(m) = self.manifests.lock().get(&dir) {
            return Ok(Arc::clone(m));
        }
        let img = self.image()?;
        let specs = chain::layers(img, dir);
        let figures = specs
            .iter()
            .map(|s| Ok(chain::LayerFigures::of(s, &*self.layer(s)?)))
            .collect::<Result<Vec<_>>>()?;
        let m = Arc::new(format!("{:#}\n", chain::manifest(img, &specs, &figures)).into_bytes());
        self.manifests.lock().insert(dir, Arc::clone(&m));
        Ok(m)
    }

    /// A layer's mtime: the later of the dates of the states it is built
    /// from (the image file's mtime stands for the active state, the backing
    /// file's for the image's own backing).
    fn layer_time(&self, spec: &LayerSpec) -> Result<SystemTime> {
        let img = self.image()?;
        let t = |(s, ns): (i64, u32)| UNIX_EPOCH + Duration::new(s.max(0) as u64, ns);
        let x = t(chain::state_time(img, spec.x));
        let y = match spec.y {
            Some(y) => t(chain::state_time(img, y)),
            None => img
                .backing()
                .and_then(|b| b.path.as_ref())
                .and_then(|p| std::fs::metadata(p).ok())
                .map_or(UNIX_EPOCH, |m| mtime_of(&m)),
        };
        Ok(x.max(y))
    }

    /// Log a failure to serve this image, once.
    fn log_once(&self, path: &Path, e: &Error) {
        if !self.logged.swap(true, Ordering::Relaxed) {
            log::warn!("{}: {e}", path.display());
        }
    }
}

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

/// A file node resolved to the view that serves it, and the opening of the
/// image it reads from (None for plain files).
type Resolved = (Arc<dyn View>, Option<Arc<ImageEntry>>);

struct Handle {
    node: Node,
    view: Arc<dyn View>,
    entry: Option<Arc<ImageEntry>>,
}

/// The tree over one IMAGE_DIR.
pub struct Tree {
    root: PathBuf,
    opts: OpenOptions,
    inodes: Mutex<(HashMap<Node, u64>, Vec<Node>)>,
    images: Mutex<HashMap<PathBuf, Arc<ImageEntry>>>,
    handles: Mutex<HashMap<u64, Arc<Mutex<Handle>>>>,
    /// Per file inode, the stamps of its sources at its last open: the
    /// kernel's cached pages of the file hold bytes of that version.
    cached: Mutex<HashMap<u64, Vec<Stamp>>>,
    /// Per inode of a file that can change while it exists, the stamps of
    /// its sources and the mtime last shown for them.
    shown: Mutex<HashMap<u64, (Vec<Stamp>, SystemTime)>>,
    next_fh: AtomicU64,
    force_share: bool,
}

impl Tree {
    /// A tree over `root` (which must be a folder).
    pub fn new(root: &Path, t: &TreeOptions) -> Result<Tree> {
        let root = std::fs::canonicalize(root).map_err(|e| Error::io("open IMAGE_DIR", root, e))?;
        if !root.is_dir() {
            return Err(Error::WrongKind {
                expected: "directory",
            });
        }
        let mut opts = OpenOptions::new(t.cache_bytes);
        if !t.allow_outside_backing {
            opts.backing_root = Some(root.clone());
        }
        let root_node = Node::Dir(PathBuf::new());
        Ok(Tree {
            root,
            opts,
            inodes: Mutex::new((
                HashMap::from([(root_node.clone(), ROOT_INO)]),
                vec![root_node],
            )),
            images: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            cached: Mutex::new(HashMap::new()),
            shown: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            force_share: t.force_share,
        })
    }

    /// The folder the tree mirrors.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn ino(&self, node: Node) -> u64 {
        let mut g = self.inodes.lock();
        if let Some(&i) = g.0.get(&node) {
            return i;
        }
        g.1.push(node.clone());
        let i = g.1.len() as u64;
        g.0.insert(node, i);
        i
    }

    fn node(&self, ino: u64) -> Result<Node> {
        let g = self.inodes.lock();
        ino.checked_sub(1)
            .and_then(|i| g.1.get(i as usize))
            .cloned()
            .ok_or_else(|| Error::NotFound {
                name: format!("inode {ino}"),
            })
    }

    /// The source path of `rel`, refusing anything that resolves outside
    /// IMAGE_DIR (symlinks included).
    fn source(&self, rel: &Path) -> Result<(PathBuf, std::fs::Metadata)> {
        let p = self.root.join(rel);
        let real = std::fs::canonicalize(&p).map_err(|e| Error::io("resolve", &p, e))?;
        if !real.starts_with(&self.root) {
            return Err(Error::NotFound {
                name: rel.display().to_string(),
            });
        }
        let meta = std::fs::metadata(&real).map_err(|e| Error::io("stat", &real, e))?;
        Ok((real, meta))
    }

    /// The node a source entry is shown as: folders stay folders, qcow2
    /// files (known by their magic) become image folders, other files are
    /// shown as they are; anything else is not shown.
    fn mirrored(&self, rel: PathBuf) -> Result<Option<Node>> {
        let (real, meta) = self.source(&rel)?;
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

    /// The current opening of the image at `rel`, reopened if it changed.
    fn entry(&self, rel: &Path) -> Result<Arc<ImageEntry>> {
        let (path, meta) = self.source(rel)?;
        let stamp = Stamp::of(&meta);
        if let Some(e) = self.images.lock().get(rel)
            && e.stamp == stamp
        {
            return Ok(Arc::clone(e));
        }
        let image = Image::open(&path, &self.opts).map_err(|e| e.to_string());
        let stems = image
            .as_ref()
            .map(|i| snapshot_stems(i.snapshots()))
            .unwrap_or_default();
        let entry = Arc::new(ImageEntry {
            stamp,
            meta,
            image,
            stems,
            info: OnceLock::new(),
            states: Mutex::new(HashMap::new()),
            blocks: Mutex::new(HashMap::new()),
            layers: Mutex::new(HashMap::new()),
            maps: Mutex::new(HashMap::new()),
            manifests: Mutex::new(HashMap::new()),
            backing_files: OnceLock::new(),
            logged: AtomicBool::new(false),
        });
        if let Err(e) = &entry.image {
            log::warn!("{}: {e}", path.display());
        }
        let old = self
            .images
            .lock()
            .insert(rel.to_path_buf(), Arc::clone(&entry));
        if let Some(Ok(img)) = old.as_ref().map(|o| &o.image) {
            self.opts.caches.forget_image(img.id());
        }
        Ok(entry)
    }

    /// The children of a folder: (name, node).
    fn children(&self, node: &Node) -> Result<Vec<(OsString, Node)>> {
        match node {
            Node::Dir(rel) => {
                let (path, _) = self.source(rel)?;
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
                let e = self.entry(rel)?;
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
                }
                Ok(out)
            }
            Node::ChainDir(rel, dir) => {
                let e = self.entry(rel)?;
                let img = e.image()?;
                let mut out = Vec::new();
                for s in chain::layers(img, *dir) {
                    let key = e.layer_key(&s)?;
                    out.push((
                        OsString::from(&s.file_name),
                        Node::Layer(rel.clone(), *dir, key),
                    ));
                }
                for p in chain::passthrough(img) {
                    // Only files inside IMAGE_DIR, unless the user allowed more.
                    if self.opts.backing_root.is_some()
                        && !p
                            .path
                            .canonicalize()
                            .is_ok_and(|c| c.starts_with(&self.root))
                    {
                        continue;
                    }
                    out.push((
                        OsString::from(&p.file_name),
                        Node::Pass(rel.clone(), *dir, p.file_name.clone(), p.path),
                    ));
                }
                out.push((
                    OsString::from("chain.json"),
                    Node::Manifest(rel.clone(), *dir),
                ));
                Ok(out)
            }
            Node::SnapDir(rel) => {
                let e = self.entry(rel)?;
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
                Ok(out)
            }
            _ => Err(Error::WrongKind {
                expected: "directory",
            }),
        }
    }

    /// Look `name` up in folder `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        let p = self.node(parent)?;
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
            _ => self
                .children(&p)?
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, n)| n)
                .ok_or_else(|| Error::NotFound {
                    name: name.to_string_lossy().into(),
                })?,
        };
        let ino = self.ino(node.clone());
        self.attr(ino, &node)
    }

    /// The attributes of inode `ino`.
    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let node = self.node(ino)?;
        self.attr(ino, &node)
    }

    /// The entries of folder `ino`: (inode, kind, name), without . and ..
    pub fn readdir(&self, ino: u64) -> Result<Vec<(u64, Kind, OsString)>> {
        let node = self.node(ino)?;
        Ok(self
            .children(&node)?
            .into_iter()
            .map(|(name, n)| {
                let kind = if is_dir(&n) { Kind::Dir } else { Kind::File };
                (self.ino(n), kind, name)
            })
            .collect())
    }

    fn attr(&self, ino: u64, node: &Node) -> Result<Attr> {
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
                    perm,
                    uid: meta.uid(),
                    gid: meta.gid(),
                }
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
                Ok(base(
                    &e.meta,
                    Kind::File,
                    len,
                    len.div_ceil(512),
                    mtime_of(&e.meta),
                ))
            }
            Node::Active(rel) => {
                let e = self.entry(rel)?;
                let s = e.state(StateId::Active)?;
                let blocks = self.blocks(&e, StateId::Active, &*s);
                Ok(base(
                    &e.meta,
                    Kind::File,
                    s.size(),
                    blocks,
                    mtime_of(&e.meta),
                ))
            }
            Node::Snap(rel, key) => {
                let e = self.entry(rel)?;
                let i = e.snapshot_index(key)?;
                let s = e.state(StateId::Snapshot(i))?;
                let blocks = self.blocks(&e, StateId::Snapshot(i), &*s);
                Ok(base(
                    &e.meta,
                    Kind::File,
                    s.size(),
                    blocks,
                    snapshot_time(key),
                ))
            }
            Node::VmState(rel, key) => {
                let e = self.entry(rel)?;
                let i = e.snapshot_index(key)?;
                let size = e.image()?.snapshots()[i].vm_state_size;
                Ok(base(
                    &e.meta,
                    Kind::File,
                    size,
                    size.div_ceil(512),
                    snapshot_time(key),
                ))
            }
            Node::ChainDir(rel, _) => {
                let e = self.entry(rel)?;
                Ok(base(&e.meta, Kind::Dir, 0, 0, mtime_of(&e.meta)))
            }
            Node::Layer(rel, dir, key) => {
                let e = self.entry(rel)?;
                let spec = e.spec(*dir, key)?;
                let size = e.layer(&spec)?.size();
                let mtime = self.distinct_mtime(ino, node, &e, e.layer_time(&spec)?);
                Ok(base(&e.meta, Kind::File, size, size.div_ceil(512), mtime))
            }
            Node::Pass(rel, _, _, path) => {
                let e = self.entry(rel)?;
                let m = std::fs::metadata(path).map_err(|err| Error::io("stat", path, err))?;
                Ok(base(&e.meta, Kind::File, m.len(), m.blocks(), mtime_of(&m)))
            }
            Node::Manifest(rel, dir) => {
                let e = self.entry(rel)?;
                let len = e.manifest(*dir)?.len() as u64;
                let mtime = self.distinct_mtime(ino, node, &e, mtime_of(&e.meta));
                Ok(base(&e.meta, Kind::File, len, len.div_ceil(512), mtime))
            }
        }
    }

    /// The mtime to show for a layer or manifest whose bytes may change:
    /// `t`, unless its sources changed since the mtime last shown and `t`
    /// falls in the same whole second (or earlier); then the next whole
    /// second after the one last shown. rsync's quick check compares whole
    /// seconds, so a change never keeps both size and shown mtime.
    fn distinct_mtime(&self, ino: u64, node: &Node, e: &ImageEntry, t: SystemTime) -> SystemTime {
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

    /// 512-byte blocks holding data in a state, from its extent map.
    fn blocks(&self, e: &ImageEntry, which: StateId, v: &dyn View) -> u64 {
        if let Some(&b) = e.blocks.lock().get(&which) {
            return b;
        }
        let mut data = 0u64;
        let mut pos = 0;
        while pos < v.size() {
            match v.extents(pos, SEEK_WINDOW) {
                Ok(ext) => {
                    data += ext
                        .iter()
                        .filter(|x| x.kind == ExtentKind::Data)
                        .map(|x| x.len)
                        .sum::<u64>()
                }
                Err(_) => return v.size().div_ceil(512),
            }
            pos += SEEK_WINDOW;
        }
        let b = data.div_ceil(512);
        e.blocks.lock().insert(which, b);
        b
    }

    /// Resolve a file node into a view (and the image entry it reads from).
    fn view(&self, node: &Node) -> Result<Resolved> {
        match node {
            Node::Plain(rel) => {
                let (real, _) = self.source(rel)?;
                Ok((Arc::new(RawView::open(&real)?), None))
            }
            Node::Info(rel, json) => {
                let e = self.entry(rel)?;
                let (t, j) = e.info(rel);
                let bytes = if *json { j.clone() } else { t.clone() }.into_bytes();
                Ok((Arc::new(Bytes(bytes)), Some(e)))
            }
            Node::Active(rel) => {
                let e = self.entry(rel)?;
                self.refuse_in_use(rel)?;
                Ok((e.state(StateId::Active)?, Some(e)))
            }
            Node::Snap(rel, key) => {
                let e = self.entry(rel)?;
                let i = e.snapshot_index(key)?;
                Ok((e.state(StateId::Snapshot(i))?, Some(e)))
            }
            Node::VmState(rel, key) => {
                let e = self.entry(rel)?;
                let i = e.snapshot_index(key)?;
                Ok((Arc::new(VmState::open(e.image()?, i)?), Some(e)))
            }
            Node::Layer(rel, dir, key) => {
                let e = self.entry(rel)?;
                if key.x == StateKey::Active || key.y == Some(StateKey::Active) {
                    self.refuse_in_use(rel)?;
                }
                let spec = e.spec(*dir, key)?;
                Ok((e.layer(&spec)?, Some(e)))
            }
            Node::Pass(rel, _, _, path) => {
                let e = self.entry(rel)?;
                Ok((Arc::new(RawView::open(path)?), Some(e)))
            }
            Node::Manifest(rel, dir) => {
                let e = self.entry(rel)?;
                let m = e.manifest(*dir)?;
                Ok((Arc::new(Bytes(m.as_ref().clone())), Some(e)))
            }
            Node::Dir(_) | Node::Image(_) | Node::SnapDir(_) | Node::ChainDir(..) => {
                Err(Error::WrongKind { expected: "file" })
            }
        }
    }

    /// Open file `ino`; returns the handle and whether the kernel may keep
    /// the pages it cached of this file at earlier opens.
    pub fn open(&self, ino: u64) -> Result<(u64, bool)> {
        let node = self.node(ino)?;
        let (view, entry) = self.view(&node).inspect_err(|e| match image_of(&node) {
            Some(rel) => match self.images.lock().get(rel) {
                Some(entry) => entry.log_once(&self.root.join(rel), e),
                None => log::warn!("{}: {e}", rel.display()),
            },
            None => log::warn!("{node:?}: {e}"),
        })?;
        // Snapshot views and layers built only from snapshots never change
        // while they exist; any other file keeps its pages while every file
        // its bytes come from is the version it was last opened at.
        let keep = immutable(&node) || self.unchanged_since_last_open(ino, &node, entry.as_deref());
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .insert(fh, Arc::new(Mutex::new(Handle { node, view, entry })));
        Ok((fh, keep))
    }

    /// Record the stamps of a file's sources at this open; true when they
    /// equal those of its previous open.
    fn unchanged_since_last_open(&self, ino: u64, node: &Node, entry: Option<&ImageEntry>) -> bool {
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
    fn source_stamps(&self, node: &Node, entry: Option<&ImageEntry>) -> Option<Vec<Stamp>> {
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

    /// Forget an open handle.
    pub fn release(&self, fh: u64) {
        self.handles.lock().remove(&fh);
    }

    fn handle(&self, fh: u64) -> Result<Arc<Mutex<Handle>>> {
        self.handles
            .lock()
            .get(&fh)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                name: format!("handle {fh}"),
            })
    }

    /// The handle's view, re-resolved if its image changed since it was
    /// opened. A snapshot deleted meanwhile is an error: its clusters may
    /// have been reused.
    /// Views of the active state of an image a running VM has open for
    /// writing are served only with --force-share; snapshot views always are.
    fn refuse_in_use(&self, rel: &Path) -> Result<()> {
        let path = self.root.join(rel);
        if !self.force_share && crate::lock::in_use(&path) {
            return Err(Error::InUse { path });
        }
        Ok(())
    }

    /// True when the image at `rel` is still the version `e` opened (one
    /// stat; resolution and the IMAGE_DIR check happen on a mismatch).
    fn unchanged(&self, e: &ImageEntry, rel: &Path) -> bool {
        std::fs::metadata(self.root.join(rel)).is_ok_and(|m| Stamp::of(&m) == e.stamp)
    }

    fn current_view(&self, h: &Mutex<Handle>) -> Result<Resolved> {
        let mut g = h.lock();
        if let (Some(e), Some(rel)) = (&g.entry, image_of(&g.node)) {
            let now = self.entry(rel)?;
            if !Arc::ptr_eq(e, &now) {
                let (view, entry) = self.view(&g.node)?;
                g.view = view;
                g.entry = entry;
            }
        }
        Ok((Arc::clone(&g.view), g.entry.clone()))
    }

    /// Read up to `size` bytes at `offset` from an open file.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let h = self.handle(fh)?;
        let node = h.lock().node.clone();
        let result = (|| {
            let (view, entry) = {
                let g = h.lock();
                (Arc::clone(&g.view), g.entry.clone())
            };
            let mut buf = vec![0u8; size as usize];
            let n = view.read_at(&mut buf, offset)?;
            buf.truncate(n);
            // Validate after the read, with one stat: if the image changed
            // since the view was resolved, the bytes may be stale or mix two
            // versions, so read again from the current opening (which fails
            // if the snapshot is gone).
            if let (Some(e), Some(rel)) = (&entry, image_of(&node))
                && !self.unchanged(e, rel)
            {
                let (view, _) = self.current_view(&h)?;
                let mut buf = vec![0u8; size as usize];
                let n = view.read_at(&mut buf, offset)?;
                buf.truncate(n);
                return Ok(buf);
            }
            Ok(buf)
        })();
        if let Err(e) = &result {
            if let (Some(rel), Some(entry)) = (image_of(&node), h.lock().entry.clone()) {
                entry.log_once(&self.root.join(rel), e);
            } else {
                log::warn!("{node:?}: {e}");
            }
        }
        result
    }

    /// SEEK_DATA (`data`) or SEEK_HOLE from `offset`, per the extent map.
    /// Zero extents count as holes. Returns None (ENXIO) past the end or
    /// when no data follows.
    pub fn seek(&self, fh: u64, offset: u64, data: bool) -> Result<Option<u64>> {
        let h = self.handle(fh)?;
        let (view, _) = self.current_view(&h)?;
        let size = view.size();
        let mut pos = offset;
        while pos < size {
            if pos - offset >= MAX_SEEK_SCAN {
                return Ok(Some(if data { pos } else { size }));
            }
            for e in view.extents(pos, SEEK_WINDOW)? {
                let is_data = e.kind == ExtentKind::Data;
                if is_data == data {
                    return Ok(Some(e.start.max(offset)));
                }
            }
            pos = pos.saturating_add(SEEK_WINDOW);
        }
        // Past the last extent: a hole at the end of the file, or no data.
        Ok(if data || offset >= size {
            None
        } else {
            Some(size)
        })
    }

    /// Figures for statfs: (total 512-byte blocks of IMAGE_DIR's file system, files).
    pub fn statfs(&self) -> (u64, u64) {
        match nix::sys::statvfs::statvfs(&self.root) {
            Ok(s) => (
                s.blocks() * s.fragment_size() / 512,
                self.inodes.lock().1.len() as u64,
            ),
            Err(e) => {
                log::debug!("statvfs {}: {e}", self.root.display());
                (0, 0)
            }
        }
    }
}

fn image_of(node: &Node) -> Option<&Path> {
    match node {
        Node::Image(r)
        | Node::Info(r, _)
        | Node::Active(r)
        | Node::SnapDir(r)
        | Node::Snap(r, _)
        | Node::VmState(r, _)
        | Node::ChainDir(r, _)
        | Node::Layer(r, _, _)
        | Node::Pass(r, _, _, _)
        | Node::Manifest(r, _) => Some(r),
        Node::Dir(_) | Node::Plain(_) => None,
    }
}

fn is_dir(n: &Node) -> bool {
    matches!(
        n,
        Node::Dir(_) | Node::Image(_) | Node::SnapDir(_) | Node::ChainDir(..)
    )
}

/// Snapshot views and layers built only from snapshots never change while
/// they exist.
fn immutable(node: &Node) -> bool {
    match node {
        Node::Snap(..) | Node::VmState(..) => true,
        Node::Layer(_, _, k) => k.x != StateKey::Active && k.y != Some(StateKey::Active),
        _ => false,
    }
}

fn mtime_of(m: &std::fs::Metadata) -> SystemTime {
    m.modified().unwrap_or(UNIX_EPOCH)
}

fn snapshot_time(k: &SnapKey) -> SystemTime {
    UNIX_EPOCH + Duration::new(u64::from(k.date_sec), k.date_nsec.min(999_999_999))
}

/// Generated bytes (the info reports) as a view.
struct Bytes(Vec<u8>);

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
