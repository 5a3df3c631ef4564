//! A chain folder's manifest: `chain.json` (the chain, its layers and
//! their figures) and `INDEX` of `incremental/`.

use super::{Direction, Folder, LayerSpec, StateMaps, Use, backing_chain, build_with, folder};
use std::sync::Arc;

use serde_json::json;

use crate::error::Result;
use crate::image::{Image, StateId};
use crate::layer::Layer;
use crate::layer::plan::PlanStats;
use crate::names::snapshot_ident;
use crate::view::View;

use super::spec::base_name;

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
