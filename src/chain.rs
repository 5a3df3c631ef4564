//! The chains of layers: which layer stands for which state over which
//! backing, how the files are named, the manifest, and export without a
//! mount.
//!
//! Reverse chain (`chain/`), as `qcow2-snapshot -c -m reverse` names it:
//! `<stem>_active.qcow2` is complete over the image's own backing file;
//! `<stem>_snapshot[n-1].qcow2` is backed by the active layer and
//! `<stem>_snapshot[i].qcow2` by `<stem>_snapshot[i+1].qcow2`.
//!
//! Forward chain (`forward/`): the oldest snapshot is complete over the
//! image's own backing file, each later snapshot is backed by the one before,
//! and `active.qcow2` by the newest snapshot. Older layers never change when
//! snapshots are added.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use serde_json::json;

use crate::cache::ByteLru;
use crate::error::{Error, Result};
use crate::image::{Image, StateId, is_qcow2, resolve_name};
use crate::layer::plan::PlanStats;
use crate::layer::{BackingRef, ClusterMap, Layer};
use crate::names::{snapshot_ident, snapshot_stems};
use crate::parallel::map_side_by_side;
use crate::qcow2::header::Header;
use crate::source::SourceFile;
use crate::sums::{self, SUMS_NAME, Sha256Digest};
use crate::view::View;

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

fn base_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The image's own backing chain, top first, as far as it can be followed
/// (each qcow2 file's header is read to find the next).
pub fn backing_chain(image: &Image) -> Vec<BackingFile> {
    let mut out: Vec<BackingFile> = Vec::new();
    let mut next = image.backing().and_then(|b| {
        let format = b.format.clone();
        b.path.clone().map(|p| (p, format))
    });
    while let Some((p, format)) = next.take() {
        if out.len() >= crate::image::MAX_BACKING_CHAIN || out.iter().any(|x| x.path == p) {
            break;
        }
        let format = format.unwrap_or_else(|| if is_qcow2(&p) { "qcow2" } else { "raw" }.into());
        let mut names_backing = None;
        if format == "qcow2"
            && let Ok(f) = SourceFile::open(&p)
            && let Ok(h) = Header::read(&f)
            && let Some(name) = h.backing_file.clone()
        {
            let end = h.backing_file_offset + u64::from(h.backing_file_size);
            names_backing = Some(BackingName {
                room: zeros_after(&f, end, h.cluster_size()),
                offset: h.backing_file_offset,
                name: name.clone(),
            });
            next = Some((
                resolve_name(p.parent().unwrap_or(Path::new(".")), &name),
                h.backing_format.clone(),
            ));
        }
        out.push(BackingFile {
            path: p,
            format,
            names_backing,
        });
    }
    out
}

/// How many bytes from `from` to the end of the first cluster are zeros
/// (0 when `from` lies past it or the bytes cannot be read).
fn zeros_after(f: &SourceFile, from: u64, cluster_size: u64) -> u64 {
    let Some(len) = cluster_size.checked_sub(from).filter(|&n| n > 0) else {
        return 0;
    };
    let mut buf = vec![0u8; len as usize];
    if f.read_exact_at(&mut buf, from, "header cluster").is_err() {
        return 0;
    }
    buf.iter().take_while(|&&b| b == 0).count() as u64
}

/// The stem of layer names: the image's file name without its extension.
pub fn stem(image: &Image) -> String {
    let p = image.path();
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into())
}

/// The layers of a chain of an image at rest, bottom (complete) layer first.
pub fn layers(image: &Image, dir: Direction) -> Vec<LayerSpec> {
    folder(image, dir, Use::Rest, &backing_chain(image)).layers
}

/// The backing files a chain folder of an image at rest passes through.
pub fn passthrough(image: &Image) -> Vec<Passthrough> {
    folder(image, Direction::Reverse, Use::Rest, &backing_chain(image)).pass
}

/// What the chain folder `dir` of `image` holds, in `use_`, over the
/// backing files `chain` (from [`backing_chain`]).
///
/// Names in a folder are unique by construction: layers are named first
/// (snapshot names are unique among themselves, `active` is reserved), then
/// each backing file keeps its base name unless that is taken (by a layer,
/// the manifest, `SHA256SUMS`, a file's `.sha256`, or a backing file above
/// it), in which case it is `backing<N>.<base name>`, N its depth below the
/// image. Layers name the bottom backing file by its name here, and a
/// passed-through qcow2 file whose own backing name differs from the name of
/// the next file here is served with that name written in instead, so that
/// a copy of the folder reads nothing outside itself.
pub fn folder(image: &Image, dir: Direction, use_: Use, chain: &[BackingFile]) -> Folder {
    let mut layers = unbacked_layers(image, dir, use_);
    let mut used: std::collections::HashSet<String> = layers
        .iter()
        .map(|l| l.file_name.clone())
        .chain([dir.manifest_name().to_string(), SUMS_NAME.to_string()])
        .collect();
    let sum_of = |n: &str| format!("{n}{FILE_SUM_SUFFIX}");
    if dir == Direction::Incremental {
        let sums: Vec<String> = used.iter().map(|n| sum_of(n)).collect();
        used.extend(sums);
    }
    let mut names = Vec::new();
    for (depth, b) in chain.iter().enumerate() {
        let base = base_name(&b.path);
        let mut name = base.clone();
        if used.contains(&name) || used.contains(&sum_of(&name)) {
            name = format!("backing{}.{base}", depth + 1);
        }
        while used.contains(&name) || used.contains(&sum_of(&name)) {
            name.push('_');
        }
        used.insert(name.clone());
        used.insert(sum_of(&name));
        names.push(name);
    }
    let pass = chain
        .iter()
        .zip(&names)
        .enumerate()
        .map(|(k, (b, name))| Passthrough {
            file_name: name.clone(),
            path: b.path.clone(),
            rewrite: match (&b.names_backing, names.get(k + 1)) {
                (Some(own), Some(next)) if own.name != *next => Some(BackingRewrite {
                    offset: own.offset,
                    old_len: own.name.len() as u64,
                    name: next.clone(),
                })
                .filter(|r| r.name.len() as u64 <= r.old_len + own.room),
                _ => None,
            },
        })
        .collect();
    // The bottom layer names the image's own backing file as passed
    // through; one that could not be followed keeps its base name.
    let bottom = image.backing().and_then(|b| {
        let format = match (&b.format, chain.first()) {
            (Some(f), _) => f.clone(),
            (None, Some(first)) => first.format.clone(),
            (None, None) => "raw".into(),
        };
        let name = match names.first() {
            Some(n) => n.clone(),
            None => base_name(b.path.as_ref()?),
        };
        Some(BackingRef { name, format })
    });
    for l in &mut layers {
        if l.y.is_none() {
            l.backing = bottom.clone();
        }
    }
    Folder { layers, pass }
}

/// The layers of a chain, bottom first, the bottom one's backing not set.
fn unbacked_layers(image: &Image, dir: Direction, use_: Use) -> Vec<LayerSpec> {
    let n = image.snapshots().len();
    let q = |name: String| {
        Some(BackingRef {
            name,
            format: "qcow2".into(),
        })
    };
    let spec = |file_name: String, x: StateId, y: Option<StateId>, backing| LayerSpec {
        file_name,
        x,
        y,
        backing,
    };
    let mut out = Vec::new();
    match dir {
        Direction::Reverse => {
            let stem = stem(image);
            let name = |i: usize| format!("{stem}_snapshot[{i}].qcow2");
            let active = format!("{stem}_active.qcow2");
            // At rest the active layer is complete and the newest snapshot
            // a delta over it; in use, the newest snapshot is complete.
            let top = match use_ {
                Use::Rest => {
                    out.push(spec(active.clone(), StateId::Active, None, None));
                    Some((StateId::Active, active))
                }
                Use::Written => None,
            };
            for i in (0..n).rev() {
                let (y, b) = if i + 1 == n {
                    match &top {
                        Some((y, b)) => (Some(*y), q(b.clone())),
                        None => (None, None),
                    }
                } else {
                    (Some(StateId::Snapshot(i + 1)), q(name(i + 1)))
                };
                out.push(spec(name(i), StateId::Snapshot(i), y, b));
            }
        }
        Direction::Forward => {
            let stems = snapshot_stems(image.snapshots());
            let file = |i: usize| format!("{}.qcow2", stems[i]);
            for i in 0..n {
                let (y, b) = match i.checked_sub(1) {
                    None => (None, None),
                    Some(p) => (Some(StateId::Snapshot(p)), q(file(p))),
                };
                out.push(spec(file(i), StateId::Snapshot(i), y, b));
            }
            if use_ == Use::Rest {
                let (y, b) = match n.checked_sub(1) {
                    None => (None, None),
                    Some(p) => (Some(StateId::Snapshot(p)), q(file(p))),
                };
                out.push(spec("active.qcow2".into(), StateId::Active, y, b));
            }
        }
        Direction::Incremental => {
            let ids: Vec<String> = image.snapshots().iter().map(snapshot_ident).collect();
            for i in 0..n {
                let (name, y, b) = match i.checked_sub(1) {
                    None => (format!("{}.qcow2", ids[i]), None, None),
                    Some(p) => (
                        format!("{}.over.{}.qcow2", ids[i], ids[p]),
                        Some(StateId::Snapshot(p)),
                        q(format!("{}.qcow2", ids[p])),
                    ),
                };
                out.push(spec(name, StateId::Snapshot(i), y, b));
            }
        }
    }
    out
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

/// The `INDEX` of `incremental/`: per snapshot, oldest first, its identity,
/// its predecessor's (`-` for the oldest), the file that carries it, and
/// its name (spaces and line breaks shown as `_`).
pub fn index(image: &Image, specs: &[LayerSpec]) -> String {
    let mut out = String::new();
    let ids: Vec<String> = image.snapshots().iter().map(snapshot_ident).collect();
    for s in specs {
        let StateId::Snapshot(i) = s.x else { continue };
        let pred = match s.y {
            Some(StateId::Snapshot(p)) => ids.get(p).map_or("-", String::as_str),
            _ => "-",
        };
        let name: String = image.snapshots()[i]
            .name
            .chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        out.push_str(&format!("{} {pred} {} {name}\n", ids[i], s.file_name));
    }
    out
}

/// Plan one layer (metadata only).
pub fn build(image: &Arc<Image>, spec: &LayerSpec) -> Result<Layer> {
    build_with(image, spec, &|w| {
        Ok(Arc::new(ClusterMap::of(&image.state(w)?)?))
    })
}

/// Plan one layer, taking each state's cluster map from `map` (so that a
/// caller building many layers walks each state's tables once).
pub fn build_with(
    image: &Arc<Image>,
    spec: &LayerSpec,
    map: &dyn Fn(StateId) -> Result<Arc<ClusterMap>>,
) -> Result<Layer> {
    let x = Arc::new(image.state(spec.x)?);
    let xmap = map(spec.x)?;
    let ymap = match spec.y {
        Some(y) => map(y)?,
        None => Arc::new(ClusterMap::below(image, x.size())?),
    };
    Layer::plan(x, &xmap, &ymap, spec.backing.clone())
}

/// The date of a state: a snapshot's own date; the active state's is the
/// image file's mtime.
pub fn state_time(image: &Image, which: StateId) -> SystemTime {
    match which {
        StateId::Snapshot(i) => image.snapshots()[i].date(),
        StateId::Active => image
            .file()
            .file()
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(UNIX_EPOCH),
    }
}

/// What a layer costs to store: its size, and what its clusters hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerFigures {
    /// File name inside the chain's folder.
    pub file_name: String,
    /// File size in bytes.
    pub size: u64,
    /// Guest clusters stored as data, compressed and as zero clusters.
    pub stats: PlanStats,
}

impl LayerFigures {
    /// The figures of a planned layer.
    pub fn of(spec: &LayerSpec, layer: &Layer) -> LayerFigures {
        LayerFigures {
            file_name: spec.file_name.clone(),
            size: layer.size(),
            stats: layer.stats(),
        }
    }

    /// The figures as JSON fields.
    pub fn to_json(&self) -> serde_json::Value {
        json!({"file": self.file_name, "size": self.size,
               "data-clusters": self.stats.data_clusters,
               "compressed-clusters": self.stats.compressed_clusters,
               "zero-clusters": self.stats.zero_clusters})
    }
}

/// Bytes of cluster maps kept while the layers of one image are planned
/// outside a mount: as much as a mount's caches hold by default.
const STATE_MAPS_BYTES: u64 = crate::cache::DEFAULT_CACHE_BYTES;

/// The states' cluster maps for planning many layers of one image. The
/// layers of a chain share their states two by two, so each state is
/// mapped once as long as two maps fit in [`STATE_MAPS_BYTES`]; the maps
/// kept never exceed it (but for one larger map, alone).
pub struct StateMaps<'a> {
    image: &'a Arc<Image>,
    maps: ByteLru<StateId, ClusterMap>,
}

impl<'a> StateMaps<'a> {
    /// No map made yet.
    pub fn new(image: &'a Arc<Image>) -> StateMaps<'a> {
        StateMaps {
            image,
            maps: ByteLru::new(STATE_MAPS_BYTES),
        }
    }

    /// The map of state `w`, made on first use.
    pub fn get(&self, w: StateId) -> Result<Arc<ClusterMap>> {
        self.maps
            .get_or_load(w, || ClusterMap::of(&self.image.state(w)?))
    }
}

/// The figures of every layer of a chain, bottom first, the states' maps
/// taken from `maps`.
pub fn figures(
    image: &Arc<Image>,
    dir: Direction,
    use_: Use,
    maps: &StateMaps,
) -> Result<Vec<LayerFigures>> {
    folder(image, dir, use_, &backing_chain(image))
        .layers
        .iter()
        .map(|s| {
            Ok(LayerFigures::of(
                s,
                &build_with(image, s, &|w| maps.get(w))?,
            ))
        })
        .collect()
}

/// The manifest of a chain (`chain.json`).
pub fn manifest(image: &Image, folder: &Folder, figures: &[LayerFigures]) -> serde_json::Value {
    let state = |w: StateId| match w {
        StateId::Active => json!({"state": "active", "guest-size": image.header().size}),
        StateId::Snapshot(i) => {
            let s = &image.snapshots()[i];
            json!({"state": "snapshot", "id": s.id, "name": s.name, "date-sec": s.date_sec,
                   "date-nsec": s.date_nsec, "guest-size": s.disk_size})
        }
    };
    let layers: Vec<_> = folder
        .layers
        .iter()
        .zip(figures)
        .map(|(s, f)| {
            let mut l = f.to_json();
            l["backing"] = json!(s.backing.as_ref().map(|b| &b.name));
            l["backing-format"] = json!(s.backing.as_ref().map(|b| &b.format));
            l["stands-for"] = state(s.x);
            l
        })
        .collect();
    let pass: Vec<_> = folder.pass.iter().map(|p| p.file_name.clone()).collect();
    json!({"image": base_name(image.path()), "layers": layers, "backing-files": pass})
}

/// The bytes of a manifest file: `chain.json`, or `incremental/`'s `INDEX`.
pub fn manifest_bytes(
    image: &Image,
    dir: Direction,
    folder: &Folder,
    figures: &[LayerFigures],
) -> Vec<u8> {
    match dir {
        Direction::Incremental => index(image, &folder.layers).into_bytes(),
        _ => format!("{:#}\n", manifest(image, folder, figures)).into_bytes(),
    }
}

/// A passed-through file as served: byte for byte, or with its backing
/// file name rewritten.
pub fn pass_view(p: &Passthrough) -> Result<Box<dyn View>> {
    let raw = crate::view::RawView::open(&p.path)?;
    Ok(match &p.rewrite {
        None => Box::new(raw),
        Some(r) => Box::new(Rewritten::new(raw, r)),
    })
}

/// A qcow2 file served with another backing file name: the header's
/// `backing_file_size` and the name's bytes (zeros past a shorter name)
/// are replaced; every other byte is the file's.
struct Rewritten {
    raw: crate::view::RawView,
    /// (offset, bytes) replaced, in file order.
    patches: Vec<(u64, Vec<u8>)>,
}

/// Where a qcow2 header keeps `backing_file_size` (the spec's header
/// layout, bytes 16-19).
const BACKING_FILE_SIZE_AT: u64 = 16;

impl Rewritten {
    fn new(raw: crate::view::RawView, r: &BackingRewrite) -> Rewritten {
        let new_len = r.name.len() as u64;
        let mut name = r.name.clone().into_bytes();
        name.resize(new_len.max(r.old_len) as usize, 0);
        Rewritten {
            raw,
            patches: vec![
                (
                    BACKING_FILE_SIZE_AT,
                    (new_len as u32).to_be_bytes().to_vec(),
                ),
                (r.offset, name),
            ],
        }
    }
}

impl View for Rewritten {
    fn size(&self) -> u64 {
        self.raw.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = self.raw.read_at(buf, offset)?;
        let end = offset + n as u64;
        for (at, bytes) in &self.patches {
            let from = offset.max(*at);
            let to = end.min(at + bytes.len() as u64);
            if from < to {
                buf[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
            }
        }
        Ok(n)
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<crate::view::Extent>> {
        // The header cluster is data in any qcow2 file; the rest is the file's.
        self.raw.extents(offset, len)
    }
}

/// Write a chain's files (layers, passed-through backing files,
/// `chain.json` and `SHA256SUMS`) into `out`, all of them on disk when this
/// returns. Existing files are refused unless `force`. `progress` is told
/// (bytes done, bytes in all).
pub fn export(
    image: &Arc<Image>,
    dir: Direction,
    use_: Use,
    out: &Path,
    force: bool,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<()> {
    use sha2::{Digest, Sha256};
    let folder = folder(image, dir, use_, &backing_chain(image));
    let specs = &folder.layers;
    let built: Vec<Layer> = {
        let maps = StateMaps::new(image);
        specs
            .iter()
            .map(|s| build_with(image, s, &|w| maps.get(w)))
            .collect::<Result<_>>()?
    };
    let figures: Vec<LayerFigures> = specs
        .iter()
        .zip(&built)
        .map(|(s, l)| LayerFigures::of(s, l))
        .collect();
    let mut names: Vec<String> = specs.iter().map(|s| s.file_name.clone()).collect();
    names.extend(folder.pass.iter().map(|p| p.file_name.clone()));
    names.push(dir.manifest_name().into());
    names.push(SUMS_NAME.into());
    std::fs::create_dir_all(out).map_err(|e| Error::io("create folder", out, e))?;
    if !force {
        refuse_overwrite(out, &names)?;
    }
    let mut views: Vec<(String, Box<dyn View>)> = Vec::new();
    for (s, l) in specs.iter().zip(built) {
        views.push((s.file_name.clone(), Box::new(l)));
    }
    for p in &folder.pass {
        views.push((p.file_name.clone(), pass_view(p)?));
    }
    let total: u64 = views.iter().map(|v| v.1.size()).sum();
    // Files are written side by side, one per core, largest first: each is
    // bound by its own SHA-256 thread, which one core runs at 1.8 GB/s.
    let mut order: Vec<usize> = (0..views.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(views[i].1.size()));
    let done = AtomicU64::new(0);
    let progress = Mutex::new(progress);
    let written = map_side_by_side(&order, |&i| {
        let (name, v) = &views[i];
        sums::write_hashed(&**v, &out.join(name), &mut |n| {
            let d = done.fetch_add(n, Ordering::Relaxed) + n;
            (progress.lock())(d, total);
        })
    });
    let mut digests: Vec<(String, Sha256Digest)> = Vec::new();
    let mut by_view: Vec<(usize, Result<Sha256Digest>)> = order.into_iter().zip(written).collect();
    by_view.sort_by_key(|(i, _)| *i);
    for (i, digest) in by_view {
        digests.push((views[i].0.clone(), digest?));
    }
    let m = manifest_bytes(image, dir, &folder, &figures);
    write_synced(&out.join(dir.manifest_name()), &m)?;
    digests.push((dir.manifest_name().to_string(), Sha256::digest(&m).into()));
    write_synced(&out.join(SUMS_NAME), sums::text(&digests).as_bytes())?;
    // The folder too, so that the names of the files are on disk.
    std::fs::File::open(out)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync", out, e))
}

/// An error naming the first of `names` that exists in `out`.
fn refuse_overwrite(out: &Path, names: &[String]) -> Result<()> {
    match names.iter().map(|n| out.join(n)).find(|p| p.exists()) {
        Some(path) => Err(Error::io(
            "refusing to overwrite (use --force)",
            path,
            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        )),
        None => Ok(()),
    }
}

/// Write `bytes` to a file at `path`, on disk when this returns.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| Error::io("create", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_data())
        .map_err(|e| Error::io("write", path, e))
}
