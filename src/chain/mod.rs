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

mod export;
mod manifest;
mod pass;
mod spec;
pub mod sums;

pub use export::export;
pub use manifest::{LayerFigures, figures, index, manifest, manifest_bytes};
pub use pass::pass_view;
pub use spec::*;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cache::ByteLru;
use crate::error::Result;
use crate::image::{Image, StateId, is_qcow2, resolve_name};
use crate::layer::{BackingRef, ClusterMap, Layer};
use crate::names::{snapshot_ident, snapshot_stems};
use crate::qcow2::header::Header;
use crate::source::SourceFile;
use crate::view::View;
use spec::base_name;
use sums::SUMS_NAME;

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
            // In incremental/, a name never stands for other bytes: the
            // complete layer of the oldest snapshot names the backing file
            // it is over, which a rebase of the image changes.
            if dir == Direction::Incremental
                && let (Some(b), Some(stem)) = (&bottom, l.file_name.strip_suffix(".qcow2"))
            {
                l.file_name = format!("{stem}.over.{}.qcow2", b.name);
            }
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
