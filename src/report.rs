//! The `info` report, as text and as JSON, in the spirit of qcow2-dump.

use std::fmt::Write;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::chain::{Direction, LayerFigures, StateMaps, Use, figures};
use crate::check::{CheckReport, check, check_json, check_text};
use crate::image::{Image, Mapping, StateId};
use crate::qcow2::header::*;

/// Everything `info` says about an image.
pub struct Info {
    image: Arc<Image>,
    check: CheckReport,
    in_use: bool,
    /// Why the active state cannot be read, when a file of the backing
    /// chain could not be opened and the state reads from it.
    active_unreadable: Option<String>,
    /// Each chain's layers and what they store, or why they cannot be planned.
    chains: Vec<(Direction, std::result::Result<Vec<LayerFigures>, String>)>,
}

/// The folder name of a chain.
fn chain_folder(dir: Direction) -> &'static str {
    dir.folder_name()
}

impl Info {
    /// Gather the report for an opened image (runs the consistency check).
    pub fn gather(image: &Arc<Image>) -> crate::Result<Info> {
        let maps = StateMaps::new(image);
        let use_ = if crate::image::lock::in_use(image.path()) {
            Use::Written
        } else {
            Use::Rest
        };
        Info::gather_with(image, use_, &|d| figures(image, d, use_, &maps))
    }

    /// Gather the report, taking each chain's layer figures from `layers`
    /// (a mount passes the layers it has planned already).
    ///
    /// The check and the planning of the layers read the same tables and
    /// share nothing else: they run side by side.
    pub fn gather_with(
        image: &Arc<Image>,
        use_: Use,
        layers: &(dyn Fn(Direction) -> crate::Result<Vec<LayerFigures>> + Sync),
    ) -> crate::Result<Info> {
        let (check, chains) = std::thread::scope(|s| {
            let planning = s.spawn(|| {
                [Direction::Reverse, Direction::Forward]
                    .into_iter()
                    .map(|d| (d, layers(d).map_err(|e| e.to_string())))
                    .collect()
            });
            let check = check(image);
            let chains = planning
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (check, chains)
        });
        Ok(Info {
            image: Arc::clone(image),
            check: check?,
            in_use: use_ == Use::Written,
            active_unreadable: active_unreadable(image),
            chains,
        })
    }

    /// The verdict: the check's, unless the active state cannot be read.
    pub fn verdict(&self) -> String {
        match &self.active_unreadable {
            Some(why) => format!("active state cannot be read: {why}"),
            None => self.check.verdict().to_string(),
        }
    }

    /// The check part of the report.
    pub fn check(&self) -> &CheckReport {
        &self.check
    }

    /// Names of the features the image uses.
    pub fn features(&self) -> Vec<String> {
        let h = self.image.header();
        let mut f = Vec::new();
        let mut add = |on: bool, name: &str| {
            if on {
                f.push(name.to_string());
            }
        };
        add(h.incompatible_features & INCOMPAT_DIRTY != 0, "dirty");
        add(h.incompatible_features & INCOMPAT_CORRUPT != 0, "corrupt");
        add(
            h.incompatible_features & INCOMPAT_DATA_FILE != 0,
            "external data file",
        );
        add(
            h.compression_type == CompressionType::Zstd,
            "zstd compression",
        );
        add(h.extended_l2(), "extended L2 entries");
        add(
            h.compatible_features & COMPAT_LAZY_REFCOUNTS != 0,
            "lazy refcounts",
        );
        add(
            h.autoclear_features & AUTOCLEAR_BITMAPS != 0 || h.has_bitmaps,
            "bitmaps",
        );
        add(
            h.autoclear_features & AUTOCLEAR_DATA_FILE_RAW != 0,
            "raw external data",
        );
        add(h.backing_file.is_some(), "backing file");
        add(!self.image.snapshots().is_empty(), "internal snapshots");
        add(
            self.check.compressed_clusters > 0
                || self.check.states.iter().any(|s| s.l2_compressed > 0),
            "compressed clusters",
        );
        f
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        let h = self.image.header();
        let c = &self.check;
        let cs = h.cluster_size();
        let snapshots: Vec<Value> = self
            .image
            .snapshots()
            .iter()
            .map(|s| {
                json!({
                    "index": s.index, "id": s.id, "name": s.name,
                    "date-sec": s.date_sec, "date-nsec": s.date_nsec,
                    "vm-clock-nsec": s.vm_clock_nsec, "disk-size": s.disk_size,
                    "vm-state-size": s.vm_state_size, "icount": s.icount,
                    "l1-table-offset": s.l1_table_offset, "l1-size": s.l1_size,
                })
            })
            .collect();
        let states: Vec<Value> = c
            .states
            .iter()
            .map(|s| {
                json!({
                    "state": s.label,
                    "l1": {"size": s.l1_size, "used": s.l1_used, "unused": s.l1_unused,
                           "unaligned": s.l1_unaligned, "invalid": s.l1_invalid},
                    "l2": {"used": s.l2_used, "unused": s.l2_unused, "unaligned": s.l2_unaligned,
                           "invalid": s.l2_invalid, "compressed": s.l2_compressed, "zero": s.l2_zero},
                    "data-clusters": s.data_clusters,
                    "new-clusters": s.new_clusters,
                    "unique-clusters": s.unique_clusters,
                    "unique-bytes": s.unique_clusters * cs,
                })
            })
            .collect();
        json!({
            "filename": self.image.path().display().to_string(),
            "file-length": self.image.file().len(),
            "in-use": self.in_use,
            "chains-hold": if self.in_use { "snapshots" } else { "snapshots and active" },
            "header": {
                "version": h.version, "size": h.size, "cluster-bits": h.cluster_bits,
                "cluster-size": cs, "backing-file": h.backing_file,
                "backing-format": h.backing_format, "data-file": h.data_file,
                "l1-size": h.l1_size, "l1-table-offset": h.l1_table_offset,
                "refcount-table-offset": h.refcount_table_offset,
                "refcount-table-clusters": h.refcount_table_clusters,
                "refcount-bits": h.refcount_bits(), "nb-snapshots": h.nb_snapshots,
                "snapshots-offset": h.snapshots_offset,
                "incompatible-features": h.incompatible_features,
                "compatible-features": h.compatible_features,
                "autoclear-features": h.autoclear_features,
                "header-length": h.header_length,
                "compression-type": match h.compression_type { CompressionType::Zlib => "zlib", CompressionType::Zstd => "zstd" },
                "extended-l2": h.extended_l2(),
            },
            "snapshots": snapshots,
            "states": states,
            "refcount-table": {"entries": c.reftable_entries, "used": c.reftable_used,
                               "entries-per-block": h.refcounts_per_block()},
            "check": check_json(c),
            "summary": {
                "active-clusters": c.active_clusters, "active-bytes": c.active_clusters * cs,
                "inactive-clusters": c.inactive_clusters, "inactive-bytes": c.inactive_clusters * cs,
                "used-clusters": c.used_clusters, "used-bytes": c.used_clusters * cs,
            },
            "features": self.features(),
            "verdict": match self.active_unreadable {
                Some(_) => "active state cannot be read",
                None => c.verdict(),
            },
            "active-state-error": self.active_unreadable,
            "layers": self.chains.iter().map(|(d, f)| {
                let v = match f {
                    Ok(f) => json!(f.iter().map(LayerFigures::to_json).collect::<Vec<_>>()),
                    Err(e) => json!({"error": e}),
                };
                (chain_folder(*d).to_string(), v)
            }).collect::<serde_json::Map<String, Value>>(),
        })
    }

    /// The report as text.
    pub fn to_text(&self) -> String {
        let h = self.image.header();
        let c = &self.check;
        let mut t = String::new();
        let _ = writeln!(t, "image: {}", self.image.path().display());
        let _ = writeln!(t, "file length: {}", self.image.file().len());
        if self.in_use {
            let _ = writeln!(
                t,
                "in use: yes (another program holds a write lock); the chains hold the snapshots only"
            );
        }
        self.header_text(&mut t);
        self.snapshots_text(&mut t);
        self.states_text(&mut t);
        let _ = writeln!(t, "\n== refcount table ==");
        let _ = writeln!(
            t,
            "entries {}, used {}, refcounts per block {}",
            c.reftable_entries,
            c.reftable_used,
            h.refcounts_per_block()
        );
        t.push_str(&check_text(c));
        self.summary_text(&mut t);
        t.push_str(&self.layers_text());
        let _ = writeln!(t, "features: {}", self.features().join(", "));
        let _ = writeln!(t, "verdict: {}", self.verdict());
        t
    }

    /// The header's fields, one per line.
    fn header_text(&self, t: &mut String) {
        let h = self.image.header();
        let cs = h.cluster_size();
        let _ = writeln!(t, "\n== header ==");
        let rows: Vec<(&str, String)> = vec![
            ("version", h.version.to_string()),
            ("size", h.size.to_string()),
            ("cluster_bits", format!("{} ({} bytes)", h.cluster_bits, cs)),
            (
                "backing_file",
                h.backing_file.clone().unwrap_or_else(|| "-".into()),
            ),
            (
                "backing_format",
                h.backing_format.clone().unwrap_or_else(|| "-".into()),
            ),
            (
                "data_file",
                h.data_file.clone().unwrap_or_else(|| "-".into()),
            ),
            ("l1_size", h.l1_size.to_string()),
            ("l1_table_offset", format!("{:#x}", h.l1_table_offset)),
            (
                "refcount_table_offset",
                format!("{:#x}", h.refcount_table_offset),
            ),
            (
                "refcount_table_clusters",
                h.refcount_table_clusters.to_string(),
            ),
            (
                "refcount_order",
                format!("{} ({} bits)", h.refcount_order, h.refcount_bits()),
            ),
            ("nb_snapshots", h.nb_snapshots.to_string()),
            ("snapshots_offset", format!("{:#x}", h.snapshots_offset)),
            (
                "incompatible_features",
                format!("{:#x}", h.incompatible_features),
            ),
            (
                "compatible_features",
                format!("{:#x}", h.compatible_features),
            ),
            ("autoclear_features", format!("{:#x}", h.autoclear_features)),
            ("header_length", h.header_length.to_string()),
            (
                "compression_type",
                format!("{:?}", h.compression_type).to_lowercase(),
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(t, "{k:<24}{v}");
        }
    }

    /// The snapshot table, one snapshot per line.
    fn snapshots_text(&self, t: &mut String) {
        let _ = writeln!(t, "\n== snapshots ==");
        let _ = writeln!(
            t,
            "{:<6}{:<20}{:<21}{:>16}{:>14}{:>14}{:>12}{:>8}",
            "ID", "NAME", "DATE", "VM CLOCK (ns)", "DISK SIZE", "VM STATE", "L1 OFFSET", "L1 SIZE"
        );
        for s in self.image.snapshots() {
            let _ = writeln!(
                t,
                "{:<6}{:<20}{:<21}{:>16}{:>14}{:>14}{:>12}{:>8}",
                s.id,
                s.name,
                format_date(s.date_sec),
                s.vm_clock_nsec,
                s.disk_size,
                s.vm_state_size,
                format!("{:#x}", s.l1_table_offset),
                s.l1_size
            );
        }
    }

    /// The L1 and L2 figures of every state, one state per line.
    fn states_text(&self, t: &mut String) {
        let c = &self.check;
        let _ = writeln!(t, "\n== tables per state ==");
        let _ = writeln!(
            t,
            "{:<10}{:>8}{:>8}{:>10}{:>9}{:>10}{:>10}{:>10}{:>9}{:>11}{:>8}{:>10}{:>8}{:>8}",
            "STATE",
            "L1 USED",
            "UNUSED",
            "UNALIGNED",
            "INVALID",
            "L2 USED",
            "UNUSED",
            "UNALIGNED",
            "INVALID",
            "COMPRESSED",
            "ZERO",
            "CLUSTERS",
            "NEW",
            "UNIQUE"
        );
        for s in &c.states {
            let _ = writeln!(
                t,
                "{:<10}{:>8}{:>8}{:>10}{:>9}{:>10}{:>10}{:>10}{:>9}{:>11}{:>8}{:>10}{:>8}{:>8}",
                s.label,
                s.l1_used,
                s.l1_unused,
                s.l1_unaligned,
                s.l1_invalid,
                s.l2_used,
                s.l2_unused,
                s.l2_unaligned,
                s.l2_invalid,
                s.l2_compressed,
                s.l2_zero,
                s.data_clusters,
                s.new_clusters,
                s.unique_clusters
            );
        }
    }

    /// Clusters by state: active, inactive, used.
    fn summary_text(&self, t: &mut String) {
        let c = &self.check;
        let cs = self.image.header().cluster_size();
        let _ = writeln!(t, "\n== summary ==");
        let _ = writeln!(
            t,
            "active clusters:   {:>10} ({} bytes)",
            c.active_clusters,
            c.active_clusters * cs
        );
        let _ = writeln!(
            t,
            "inactive clusters: {:>10} ({} bytes)",
            c.inactive_clusters,
            c.inactive_clusters * cs
        );
        let _ = writeln!(
            t,
            "used clusters:     {:>10} ({} bytes)",
            c.used_clusters,
            c.used_clusters * cs
        );
    }
}

impl Info {
    /// What each layer of each chain stores: what a backup will cost.
    fn layers_text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "\n== layers ==");
        for (d, f) in &self.chains {
            let folder = chain_folder(*d);
            let f = match f {
                Ok(f) => f,
                Err(e) => {
                    let _ = writeln!(t, "{folder}/: cannot be planned: {e}");
                    continue;
                }
            };
            let total: u64 = f.iter().map(|l| l.size).sum();
            let _ = writeln!(t, "{folder}/ ({total} bytes in layers)");
            let _ = writeln!(
                t,
                "  {:<32}{:>14}{:>10}{:>12}{:>10}",
                "FILE", "SIZE", "DATA", "COMPRESSED", "ZERO"
            );
            for l in f {
                let _ = writeln!(
                    t,
                    "  {:<32}{:>14}{:>10}{:>12}{:>10}",
                    l.file_name,
                    l.size,
                    l.stats.data_clusters,
                    l.stats.compressed_clusters,
                    l.stats.zero_clusters
                );
            }
        }
        t
    }
}

/// Why the active state of `image` cannot be read, if a file of its backing
/// chain did not open and the state has clusters it does not hold itself.
fn active_unreadable(image: &Arc<Image>) -> Option<String> {
    let why = image.backing_readable().err()?;
    let reads_backing = image.state(StateId::Active).and_then(|s| {
        let runs = s.runs(0, image.header().size)?;
        Ok(runs.iter().any(|r| r.mapping == Mapping::Unallocated))
    });
    // A state whose tables cannot be walked is the check's to report.
    reads_backing.unwrap_or(true).then(|| why.to_string())
}

/// A report for an image that could not be opened: what the mount shows in
/// that image's `info`.
pub fn open_error_text(path: &std::path::Path, err: &crate::Error) -> String {
    format!(
        "image: {}\nerror: {err}\nverdict: cannot be read\n",
        path.display()
    )
}

/// UTC date as YYYY-MM-DD HH:MM:SS.
pub fn format_date(secs: u32) -> String {
    jiff::Timestamp::from_second(i64::from(secs))
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| format!("@{secs}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_dates() {
        assert_eq!(super::format_date(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_date(1_700_000_000), "2023-11-14 22:13:20");
    }
}
