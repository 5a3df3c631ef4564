//! Check's report as it is printed: text, and JSON with `qemu-img check`'s
//! key names.

use std::fmt::Write;

use serde_json::{Value, json};

use super::CheckReport;

/// The check part of the report, as JSON (what `qcow2fs check
/// --output=json` prints), with `qemu-img check`'s key names.
pub fn check_json(c: &CheckReport) -> Value {
    json!({
        "corruptions": c.corruptions, "leaks": c.leaks, "check-errors": c.check_errors,
        "oflag-copied-mismatches": c.oflag_copied_mismatches,
        "allocated-clusters": c.allocated_clusters, "total-clusters": c.total_clusters,
        "compressed-clusters": c.compressed_clusters,
        "fragmented-clusters": c.fragmented_clusters,
        "image-end-offset": c.image_end_offset,
        "messages": c.messages,
    })
}

/// The check part of the report, as text (what `qcow2fs check` prints).
pub fn check_text(c: &CheckReport) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "\n== check ==");
    for m in &c.messages {
        let _ = writeln!(t, "{m}");
    }
    let _ = writeln!(t, "corruptions: {}", c.corruptions);
    let _ = writeln!(t, "leaks: {}", c.leaks);
    let _ = writeln!(t, "check errors: {}", c.check_errors);
    let _ = writeln!(t, "OFLAG_COPIED mismatches: {}", c.oflag_copied_mismatches);
    let pct = if c.total_clusters > 0 {
        c.allocated_clusters as f64 * 100.0 / c.total_clusters as f64
    } else {
        0.0
    };
    let _ = writeln!(
        t,
        "{}/{} = {:.2}% allocated, {} compressed clusters",
        c.allocated_clusters, c.total_clusters, pct, c.compressed_clusters
    );
    let _ = writeln!(t, "image end offset: {}", c.image_end_offset);
    t
}
