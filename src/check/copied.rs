//! QCOW_OFLAG_COPIED: set on an active L1 or L2 entry exactly when the
//! stored refcount of what it points at is one.

use super::CheckReport;
use crate::image::{Image, Refcounts};
use crate::qcow2::be::be64_table;
use crate::qcow2::cluster::{L2Kind, l1_fields, l2_fields, l2_words};
use crate::qcow2::header::INCOMPAT_DATA_FILE;

/// Bit 63 of active L1 and L2 entries must be set exactly when the stored
/// refcount is one.
pub(super) fn check_oflag_copied(image: &Image, refcounts: &Refcounts, report: &mut CheckReport) {
    let h = image.header();
    if h.incompatible_features & INCOMPAT_DATA_FILE != 0 {
        return;
    }
    let mut walked: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let Ok(active_l1) = image.active_l1() else {
        // The walk has already reported an unreadable active L1 table.
        return;
    };
    let geo = image.compressed_geometry();
    for (i, l1_entry) in active_l1.used() {
        let l1 = l1_fields(l1_entry);
        // A table met twice was reported by the reference walk.
        let Some(l2) = l1.l2.filter(|o| walked.insert(o.0)) else {
            continue;
        };
        let Ok(rc) = refcounts.get(l2.0 >> h.cluster_bits) else {
            continue;
        };
        if (rc == 1) != l1.copied {
            report.oflag_copied_mismatches += 1;
            report.corrupt(format_args!(
                "ERROR OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={l1_entry:x} refcount={rc}"
            ));
        }
        let table = match image.file().read_vec(l2.0, h.cluster_size(), "L2 table") {
            Ok(b) => be64_table(&b),
            Err(e) => {
                report.check_errors += 1;
                report.say(format_args!("ERROR: Could not read L2 table: {e}"));
                return;
            }
        };
        for j in 0..h.l2_entries() {
            let (entry, bitmap) = l2_words(&table, j, h.extended_l2());
            let f = l2_fields(entry, bitmap, geo);
            let L2Kind::Standard {
                host: Some(data), ..
            } = f.kind
            else {
                continue;
            };
            let Ok(rc) = refcounts.get(data.0 >> h.cluster_bits) else {
                continue;
            };
            if (rc == 1) != f.copied {
                report.oflag_copied_mismatches += 1;
                report.corrupt(format_args!(
                    "ERROR OFLAG_COPIED data cluster: l2_entry={entry:x} refcount={rc}"
                ));
            }
        }
    }
}
