//! QCOW_OFLAG_COPIED: set on an active L1 or L2 entry exactly when the
//! stored refcount of what it points at is one.

use super::CheckReport;
use crate::image::{Image, Refcounts};
use crate::qcow2::be::be64_table;
use crate::qcow2::cluster::{
    L1E_OFFSET_MASK, L2E_OFFSET_MASK, QCOW_OFLAG_COMPRESSED, QCOW_OFLAG_COPIED,
};
use crate::qcow2::header::INCOMPAT_DATA_FILE;

/// Bit 63 of active L1 and L2 entries must be set exactly when the stored
/// refcount is one.
pub(super) fn check_oflag_copied(image: &Image, refcounts: &Refcounts, report: &mut CheckReport) {
    let h = image.header();
    if h.incompatible_features & INCOMPAT_DATA_FILE != 0 {
        return;
    }
    let stride = if h.extended_l2() { 2 } else { 1 };
    let mut walked: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let Ok(active_l1) = image.active_l1() else {
        // The walk has already reported an unreadable active L1 table.
        return;
    };
    for (i, l1_entry) in active_l1.used() {
        let l2_offset = l1_entry & L1E_OFFSET_MASK;
        // A table met twice was reported by the reference walk.
        if l2_offset == 0 || !walked.insert(l2_offset) {
            continue;
        }
        let Ok(rc) = refcounts.get(l2_offset >> h.cluster_bits) else {
            continue;
        };
        if (rc == 1) != (l1_entry & QCOW_OFLAG_COPIED != 0) {
            report.oflag_copied_mismatches += 1;
            report.corrupt(format_args!(
                "ERROR OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={l1_entry:x} refcount={rc}"
            ));
        }
        let table = match image
            .file()
            .read_vec(l2_offset, h.cluster_size(), "L2 table")
        {
            Ok(b) => be64_table(&b),
            Err(e) => {
                report.check_errors += 1;
                report.say(format_args!("ERROR: Could not read L2 table: {e}"));
                return;
            }
        };
        for j in 0..h.l2_entries() as usize {
            let entry = table.get(j * stride).copied().unwrap_or(0);
            let data_offset = entry & L2E_OFFSET_MASK;
            if entry & QCOW_OFLAG_COMPRESSED != 0 || data_offset == 0 {
                continue;
            }
            let Ok(rc) = refcounts.get(data_offset >> h.cluster_bits) else {
                continue;
            };
            if (rc == 1) != (entry & QCOW_OFLAG_COPIED != 0) {
                report.oflag_copied_mismatches += 1;
                report.corrupt(format_args!(
                    "ERROR OFLAG_COPIED data cluster: l2_entry={entry:x} refcount={rc}"
                ));
            }
        }
    }
}
