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
use crate::names::snapshot_stems;
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

/// A file of the image's own backing chain, passed through under `file_name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Passthrough {
    /// Name inside the chain's folder.
    pub file_name: String,
    /// The source file.
    pub path: PathBuf,
}

fn base_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The image's own backing chain, top first, as files to pass through.
pub fn passthrough(image: &Image) -> Vec<Passthrough> {
    let mut out = Vec::new();
    let mut next = image.backing().and_then(|b| b.path.clone());
    while let Some(p) = next.take() {
        if out.len() >= crate::image::MAX_BACKING_CHAIN
            || out.iter().any(|x: &Passthrough| x.path == p)
        {
            break;
        }
        if is_qcow2(&p)
            && let Ok(f) = SourceFile::open(&p)
            && let Ok(h) = Header::read(&f)
            && let Some(name) = h.backing_file
        {
            next = Some(resolve_name(p.parent().unwrap_or(Path::new(".")), &name));
        }
        out.push(Passthrough {
            file_name: base_name(&p),
            path: p,
        });
    }
    out
}

/// The backing reference of a chain's bottom layer: the image's own backing
/// file, by its base name, with its format.
fn bottom_backing(image: &Image) -> Option<BackingRef> {
    let b = image.backing()?;
    let path = b.path.as_ref()?;
    let format = match &b.format {
        Some(f) => f.clone(),
        None if is_qcow2(path) => "qcow2".into(),
        None => "raw".into(),
    };
    Some(BackingRef {
        name: base_name(path),
        format,
    })
}

/// The stem of layer names: the image's file name without its extension.
pub fn stem(image: &Image) -> String {
    let p = image.path();
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into())
}

/// The layers of a chain, bottom (complete) layer first.
pub fn layers(image: &Image, dir: Direction) -> Vec<LayerSpec> {
    let n = image.snapshots().len();
    let bottom = bottom_backing(image);
    let q = |name: String| {
        Some(BackingRef {
            name,
            format: "qcow2".into(),
        })
    };
    match dir {
        Direction::Reverse => {
            let stem = stem(image);
            let name = |i: usize| format!("{stem}_snapshot[{i}].qcow2");
            let active = format!("{stem}_active.qcow2");
            let mut out = vec![LayerSpec {
                file_name: active.clone(),
                x: StateId::Active,
                y: None,
                backing: bottom,
            }];
            for i in (0..n).rev() {
                let (y, b) = if i + 1 == n {
                    (StateId::Active, active.clone())
                } else {
                    (StateId::Snapshot(i + 1), name(i + 1))
                };
                out.push(LayerSpec {
                    file_name: name(i),
                    x: StateId::Snapshot(i),
                    y: Some(y),
                    backing: q(b),
                });
            }
            out
        }
        Direction::Forward => {
            let stems = snapshot_stems(image.snapshots());
            let mut out = Vec::new();
            for i in 0..n {
                let file_name = format!("{}.qcow2", stems[i]);
                let (y, backing) = if i == 0 {
                    (None, bottom.clone())
                } else {
                    (
                        Some(StateId::Snapshot(i - 1)),
                        q(format!("{}.qcow2", stems[i - 1])),
                    )
                };
                out.push(LayerSpec {
                    file_name,
                    x: StateId::Snapshot(i),
                    y,
                    backing,
                });
            }
            let (y, backing) = match n {
                0 => (None, bottom),
                _ => (
                    Some(StateId::Snapshot(n - 1)),
                    q(format!("{}.qcow2", stems[n - 1])),
                ),
            };
            out.push(LayerSpec {
                file_name: "active.qcow2".into(),
                x: StateId::Active,
                y,
                backing,
            });
            out
        }
    }
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
pub fn figures(image: &Arc<Image>, dir: Direction, maps: &StateMaps) -> Result<Vec<LayerFigures>> {
    layers(image, dir)
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
pub fn manifest(image: &Image, specs: &[LayerSpec], figures: &[LayerFigures]) -> serde_json::Value {
    let state = |w: StateId| match w {
        StateId::Active => json!({"state": "active", "guest-size": image.header().size}),
        StateId::Snapshot(i) => {
            let s = &image.snapshots()[i];
            json!({"state": "snapshot", "id": s.id, "name": s.name, "date-sec": s.date_sec,
                   "date-nsec": s.date_nsec, "guest-size": s.disk_size})
        }
    };
    let layers: Vec<_> = specs
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
    let pass: Vec<_> = passthrough(image)
        .into_iter()
        .map(|p| p.file_name)
        .collect();
    json!({"image": base_name(image.path()), "layers": layers, "backing-files": pass})
}

/// Write a chain's files (layers, passed-through backing files,
/// `chain.json` and `SHA256SUMS`) into `out`, all of them on disk when this
/// returns. Existing files are refused unless `force`. `progress` is told
/// (bytes done, bytes in all).
pub fn export(
    image: &Arc<Image>,
    dir: Direction,
    out: &Path,
    force: bool,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<()> {
    use sha2::{Digest, Sha256};
    let specs = layers(image, dir);
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
    let pass = passthrough(image);
    let mut names: Vec<String> = specs.iter().map(|s| s.file_name.clone()).collect();
    names.extend(pass.iter().map(|p| p.file_name.clone()));
    names.push("chain.json".into());
    names.push(SUMS_NAME.into());
    std::fs::create_dir_all(out).map_err(|e| Error::io("create folder", out, e))?;
    if !force {
        refuse_overwrite(out, &names)?;
    }
    let mut views: Vec<(String, Box<dyn View>)> = Vec::new();
    for (s, l) in specs.iter().zip(built) {
        views.push((s.file_name.clone(), Box::new(l)));
    }
    for p in &pass {
        views.push((
            p.file_name.clone(),
            Box::new(crate::view::RawView::open(&p.path)?),
        ));
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
    let m = format!("{:#}\n", manifest(image, &specs, &figures));
    write_synced(&out.join("chain.json"), m.as_bytes())?;
    digests.push((
        "chain.json".to_string(),
        Sha256::digest(m.as_bytes()).into(),
    ));
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
