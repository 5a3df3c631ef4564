//! Consistency check, counted as `qemu-img check` counts: every reference to
//! a host cluster is tallied from the L1/L2 tables of every state, the
//! snapshot table, the persistent bitmaps and the refcount structures, then
//! compared with the stored refcounts. The walk also gathers the per-state figures `info` reports.

mod bitmaps;
mod copied;
mod output;
mod walk;

use std::sync::Arc;

use crate::error::Result;
use crate::image::{Image, Refcounts};
use crate::qcow2::header::{AUTOCLEAR_BITMAPS, MAX_L1_BYTES};
use crate::qcow2::offsets::HostOffset;
use crate::qcow2::refcount::reftable_fields;
use crate::qcow2::snapshot::V3_EXTRA_DATA;
pub use bitmaps::{MAX_BITMAP_DIRECTORY_BYTES, MAX_CHECK_BITMAP_ENTRIES};
use copied::check_oflag_copied;
pub use output::{check_json, check_text};
use walk::Walk;

/// Bound on the messages kept; counts go on past it.
const MAX_MESSAGES: usize = 1000;
/// Bound on the L2 entries one check visits (2^30, a few seconds of work):
/// past it the check stops as incomplete rather than spin on a crafted
/// image whose snapshot tables all point at the same huge tables.
pub const MAX_CHECK_L2_ENTRIES: u64 = 1 << 30;

/// Figures about one state's tables.
#[derive(Clone, Debug, Default)]
pub struct StateFigures {
    /// "active" or the snapshot's ID.
    pub label: String,
    /// L1 entries.
    pub l1_size: u64,
    /// L1 entries pointing to an L2 table.
    pub l1_used: u64,
    /// L1 entries that are zero.
    pub l1_unused: u64,
    /// L1 entries whose L2 offset is not cluster aligned.
    pub l1_unaligned: u64,
    /// L1 entries with reserved bits set or past the end of the file.
    pub l1_invalid: u64,
    /// L2 entries describing a cluster (data, compressed or zero).
    pub l2_used: u64,
    /// L2 entries that are unallocated.
    pub l2_unused: u64,
    /// L2 entries whose data offset is not cluster aligned.
    pub l2_unaligned: u64,
    /// L2 entries with reserved bits set or bad subcluster bitmaps.
    pub l2_invalid: u64,
    /// Compressed L2 entries.
    pub l2_compressed: u64,
    /// Zero L2 entries (plain or preallocated).
    pub l2_zero: u64,
    /// Distinct host data clusters this state references.
    pub data_clusters: u64,
    /// Of those, clusters the previous state (in table order) does not reference.
    pub new_clusters: u64,
    /// Of those, clusters no other state references: what deleting this
    /// snapshot would free.
    pub unique_clusters: u64,
}

/// The outcome of a check, with the same counts as `qemu-img check`.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Errors that make the image inconsistent.
    pub corruptions: u64,
    /// Clusters with a refcount but no reference.
    pub leaks: u64,
    /// Structures that could not be read while checking.
    pub check_errors: u64,
    /// QCOW_OFLAG_COPIED mismatches (counted among the corruptions too).
    pub oflag_copied_mismatches: u64,
    /// Guest clusters allocated in the active state.
    pub allocated_clusters: u64,
    /// Guest clusters of the active state's virtual size.
    pub total_clusters: u64,
    /// Compressed clusters of the active state.
    pub compressed_clusters: u64,
    /// Clusters of the active state not contiguous with the one before.
    pub fragmented_clusters: u64,
    /// End of the highest cluster in use.
    pub image_end_offset: u64,
    /// Figures per state: active first, then snapshots in table order.
    pub states: Vec<StateFigures>,
    /// Host clusters referenced by the active state's data.
    pub active_clusters: u64,
    /// Host data clusters referenced only by snapshots.
    pub inactive_clusters: u64,
    /// Host clusters with a non-zero stored refcount.
    pub used_clusters: u64,
    /// Refcount table entries.
    pub reftable_entries: u64,
    /// Refcount table entries pointing to a block.
    pub reftable_used: u64,
    /// Messages naming each problem, as qemu-img check prints them.
    pub messages: Vec<String>,
}

impl CheckReport {
    /// The exit status `qemu-img check` would give.
    pub fn exit_code(&self) -> i32 {
        if self.check_errors > 0 {
            1
        } else if self.corruptions > 0 {
            2
        } else if self.leaks > 0 {
            3
        } else {
            0
        }
    }

    /// One-word verdict.
    pub fn verdict(&self) -> &'static str {
        match self.exit_code() {
            0 => "clean",
            1 => "check incomplete",
            2 => "corrupt",
            _ => "leaks only",
        }
    }

    /// A corruption, counted and said.
    fn corrupt(&mut self, msg: std::fmt::Arguments) {
        self.corruptions += 1;
        self.say(msg);
    }

    /// Keep a message, formatted only while there is room for it.
    fn say(&mut self, msg: std::fmt::Arguments) {
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(msg.to_string());
        }
    }
}

/// Check `image` as `qemu-img check` does, and gather the figures of `info`.
pub fn check(image: &Arc<Image>) -> Result<CheckReport> {
    let h = image.header();
    let mut w = Walk::new(image);
    count_incomplete_entries(&mut w);
    w.inc(HostOffset(0), w.cluster_size);
    let walked = walk_states(&mut w);
    w.inc(HostOffset(h.snapshots_offset), image.snapshot_table_bytes());
    w.inc(
        HostOffset(h.refcount_table_offset),
        u64::from(h.refcount_table_clusters) << h.cluster_bits,
    );
    // QEMU ignores the bitmaps extension unless the autoclear bit vouches
    // for it, and then counts its clusters as leaks.
    if let Some(dir) = h.bitmap_directory
        && h.autoclear_features & AUTOCLEAR_BITMAPS != 0
        && dir.count > 0
    {
        w.bitmaps(&dir);
    }
    let refcounts = Refcounts::load(image)?;
    walk_refcount_table(&mut w, &refcounts);
    compare_refcounts(&mut w, &refcounts);
    check_oflag_copied(image, &refcounts, &mut w.report);

    let Walked {
        active,
        mut snapshot_clusters,
        states,
    } = walked;
    snapshot_clusters.sort_unstable();
    snapshot_clusters.dedup();
    w.report.active_clusters = active.len() as u64;
    w.report.inactive_clusters = count_not_in(&snapshot_clusters, &active);
    w.report.states = states;
    Ok(w.report)
}

/// Entries read as the check reads them: a version 3 entry without its 16
/// bytes of extra data (zeros past a truncation, for one) is counted.
fn count_incomplete_entries(w: &mut Walk) {
    if w.image.header().version < 3 {
        return;
    }
    for sn in w.image.snapshots() {
        if (sn.extra_data_size as usize) < V3_EXTRA_DATA {
            w.corrupt(format_args!(
                "ERROR snapshot table entry {} is incomplete",
                sn.index
            ));
        }
    }
}

/// What walking the active state and the snapshots found.
struct Walked {
    /// The active state's data clusters.
    active: Vec<u64>,
    /// Every snapshot's data clusters, repeated where they share.
    snapshot_clusters: Vec<u64>,
    /// Figures per state, the active state first.
    states: Vec<StateFigures>,
}

/// Walk the active state and every snapshot, counting their references,
/// and figure what each holds: its data clusters, those new since the
/// state before it, and those no other state has.
fn walk_states(w: &mut Walk) -> Walked {
    let image = w.image;
    let h = image.header();
    let mut fig = StateFigures {
        label: "active".into(),
        ..StateFigures::default()
    };
    let active = w.l1(
        &mut fig,
        HostOffset(h.l1_table_offset),
        u64::from(h.l1_size),
        true,
    );
    fig.data_clusters = active.len() as u64;
    let mut states = vec![fig];
    let mut snapshot_clusters: Vec<u64> = Vec::new();
    let mut prev: Vec<u64> = Vec::new();
    let mut lists: Vec<Vec<u64>> = Vec::new();
    for sn in image.snapshots() {
        let mut fig = StateFigures {
            label: sn.id.clone(),
            ..StateFigures::default()
        };
        let misaligned = sn.l1_table_offset & (w.cluster_size - 1) != 0;
        if misaligned || u64::from(sn.l1_size) * 8 > MAX_L1_BYTES {
            let (field, value, fault) = if misaligned {
                ("l1_offset", sn.l1_table_offset, "is not cluster aligned")
            } else {
                ("l1_size", u64::from(sn.l1_size), "is too large")
            };
            w.corrupt(format_args!(
                "ERROR snapshot {} ({}) {field}={value:#x}: L1 table {fault}; snapshot table entry corrupted",
                sn.id, sn.name
            ));
            states.push(fig);
            lists.push(Vec::new());
            continue;
        }
        let data = w.l1(
            &mut fig,
            HostOffset(sn.l1_table_offset),
            u64::from(sn.l1_size),
            false,
        );
        fig.data_clusters = data.len() as u64;
        fig.new_clusters = count_not_in(&data, &prev);
        snapshot_clusters.extend_from_slice(&data);
        states.push(fig);
        lists.push(data.clone());
        prev = data;
    }
    // The active state is newer than every snapshot.
    states[0].new_clusters = count_not_in(&active, &prev);
    // A cluster is unique to a state when it appears in one list only.
    let mut all: Vec<u64> = active
        .iter()
        .chain(lists.iter().flatten())
        .copied()
        .collect();
    all.sort_unstable();
    let once = |c: &u64| all.partition_point(|x| x <= c) - all.partition_point(|x| x < c) == 1;
    states[0].unique_clusters = active.iter().filter(|c| once(c)).count() as u64;
    for (fig, list) in states.iter_mut().skip(1).zip(&lists) {
        fig.unique_clusters = list.iter().filter(|c| once(c)).count() as u64;
    }
    Walked {
        active,
        snapshot_clusters,
        states,
    }
}

/// Count the references of the refcount table to its blocks, each of which
/// must be referenced once.
fn walk_refcount_table(w: &mut Walk, refcounts: &Refcounts) {
    w.report.reftable_entries = refcounts.table().len() as u64;
    for (i, &entry) in refcounts.table().iter().enumerate() {
        let fields = reftable_fields(entry);
        if fields.reserved != 0 {
            w.report.corrupt(format_args!(
                "ERROR refcount table entry {i} has reserved bits set"
            ));
            continue;
        }
        let Some(block) = fields.block else {
            continue;
        };
        if !block.is_cluster_aligned(w.cluster_bits) {
            w.report.corrupt(format_args!(
                "ERROR refcount block {i} is not cluster aligned; refcount table entry corrupted"
            ));
            continue;
        }
        let cluster = block.0 >> w.cluster_bits;
        if cluster >= w.refs.len() as u64 {
            w.report
                .corrupt(format_args!("ERROR refcount block {i} is outside image"));
            continue;
        }
        w.report.reftable_used += 1;
        w.inc(block, w.cluster_size);
        let counted = u64::from(w.refs[cluster as usize]);
        if counted != 1 {
            w.report
                .corrupt(format_args!("ERROR refcount block {i} refcount={counted}"));
        }
    }
}

/// Compare the references counted with the refcounts stored: fewer stored
/// is a corruption, more is a leak. Also finds where the image ends.
fn compare_refcounts(w: &mut Walk, refcounts: &Refcounts) {
    let refs = std::mem::take(&mut w.refs);
    let mut highest = 0u64;
    for (i, counted) in refs.iter().map(|&c| u64::from(c)).enumerate() {
        let stored = match refcounts.get(i as u64) {
            Ok(r) => r,
            Err(e) => {
                w.report.check_errors += 1;
                w.report
                    .say(format_args!("Can't get refcount for cluster {i}: {e}"));
                continue;
            }
        };
        if stored > 0 {
            w.report.used_clusters += 1;
        }
        if stored > 0 || counted > 0 {
            highest = i as u64;
        }
        if stored != counted {
            if stored < counted {
                w.report.corrupt(format_args!(
                    "ERROR cluster {i} refcount={stored} reference={counted}"
                ));
            } else {
                w.report.leaks += 1;
                w.report.say(format_args!(
                    "Leaked cluster {i} refcount={stored} reference={counted}"
                ));
            }
        }
    }
    w.report.image_end_offset = (highest + 1) * w.cluster_size;
}

/// How many of the sorted, distinct `a` are not in the sorted `b`.
fn count_not_in(a: &[u64], b: &[u64]) -> u64 {
    a.iter().filter(|x| b.binary_search(x).is_err()).count() as u64
}
