//! Layer planning: compare a state X with the state Y beneath it, cluster
//! by cluster, and decide what the layer stores and where.
//!
//! Guest cluster c of the layer is
//! - unallocated when X and Y read it alike by their metadata: the same
//!   host cluster (with extended L2, the same bitmaps too), the same
//!   compressed cluster, both zeros, or both the image's backing file;
//! - a zero cluster when X reads zeros and Y does not;
//! - a compressed cluster when X's cluster is compressed: its sector span
//!   is carried over byte for byte, packed at the next free 512-byte
//!   boundary, as QEMU packs them;
//! - a data cluster holding X's bytes otherwise.
//!
//! The plan is a list of runs in guest order; stored runs take consecutive
//! places in the data area, so data offsets grow with guest offsets.

use super::map::{ClusterMap, Own, OwnRun};
use crate::qcow2::offsets::HostOffset;

/// Bytes of a sector: the unit compressed data is counted in.
pub const SECTOR: u64 = 512;

/// What the layer stores for a run of guest clusters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing: the backing file's bytes show through.
    Unallocated,
    /// A zero cluster: an L2 entry with the zero flag, no data.
    Zero,
    /// X's bytes, one host cluster per guest cluster.
    Data,
    /// One compressed cluster of the source, carried over.
    Compressed {
        /// Source host offset of the compressed data.
        host: HostOffset,
        /// Bytes from `host` to the end of its last sector.
        len: u64,
    },
}

impl Plan {
    /// Bytes the run takes in the data area.
    fn stored_len(self, count: u64, cluster_size: u64) -> u64 {
        match self {
            Plan::Unallocated | Plan::Zero => 0,
            Plan::Data => count * cluster_size,
            Plan::Compressed { host, len } => sector_span(host, len).1,
        }
    }
}

/// The whole sectors a compressed descriptor covers: (first byte, length).
pub fn sector_span(host: HostOffset, len: u64) -> (HostOffset, u64) {
    let start = host.0 & !(SECTOR - 1);
    (HostOffset(start), len + (host.0 - start))
}

/// A run of guest clusters with one plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanRun {
    /// First guest cluster.
    pub start: u64,
    /// Number of clusters.
    pub count: u64,
    /// What the layer stores.
    pub plan: Plan,
    /// Offset in the data area of the run's first stored byte (for runs
    /// that store nothing, the data area's fill at that point).
    pub at: u64,
    /// Bytes stored in the data area.
    pub len: u64,
}

impl PlanRun {
    /// One past the run's last stored byte in the data area.
    pub fn stored_end(&self) -> u64 {
        self.at + self.len
    }
}

/// Counts of what a layer stores, for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanStats {
    /// Guest clusters stored as data.
    pub data_clusters: u64,
    /// Guest clusters stored compressed.
    pub compressed_clusters: u64,
    /// Guest clusters stored as zero clusters.
    pub zero_clusters: u64,
    /// Bytes of the data area.
    pub data_bytes: u64,
}

/// The plan of a layer: runs in guest order, and the size of its data area.
pub struct LayerPlan {
    /// The runs, covering every guest cluster of X.
    pub runs: Vec<PlanRun>,
    /// What it stores.
    pub stats: PlanStats,
}

/// What to store for a guest cluster that X maps as `x` and Y as `y`.
fn decide(x: Own, y: Own) -> Plan {
    match (x, y) {
        (Own::Zero, Own::Zero) => Plan::Unallocated,
        (Own::Zero, _) => Plan::Zero,
        // Opaque is never equal to anything, itself included.
        (Own::Opaque, _) => Plan::Data,
        (a, b) if a == b => Plan::Unallocated,
        (Own::Compressed { host, len }, _) => Plan::Compressed { host, len },
        _ => Plan::Data,
    }
}

/// Walks a map's runs forward, answering what cluster c is and up to where
/// that answer holds.
struct Cursor<'a> {
    runs: &'a [OwnRun],
    i: usize,
    cluster_size: u64,
}

impl Cursor<'_> {
    /// Cluster `c` (not before the last one asked) and the end of its run.
    fn at(&mut self, c: u64) -> Option<(Own, u64)> {
        while self.runs.get(self.i).is_some_and(|r| r.end() <= c) {
            self.i += 1;
        }
        let r = self.runs.get(self.i).filter(|r| r.start <= c)?;
        Some((r.own.nth(c - r.start, self.cluster_size), r.end()))
    }
}

/// Compare X's map with Y's (the layer's backing file as it reads) over
/// X's guest clusters. Y's bytes past its own size read as zeros.
pub fn plan(x: &ClusterMap, y: &ClusterMap, cluster_bits: u32) -> LayerPlan {
    let cs = 1u64 << cluster_bits;
    let guest_clusters = x.size().div_ceil(cs);
    // Y's clusters compared as Y maps them. Past Y's end it reads zeros; a
    // last cluster of Y cut by its size reads zeros past the cut where X's
    // cluster may hold data, so it is compared as different.
    let ycl = y.size().div_ceil(cs);
    let y_cut = !y.size().is_multiple_of(cs) && x.size() > y.size();
    let y_own = if y_cut { ycl - 1 } else { ycl };
    let mut xs = Cursor {
        runs: x.runs(),
        i: 0,
        cluster_size: cs,
    };
    let mut ys = Cursor {
        runs: y.runs(),
        i: 0,
        cluster_size: cs,
    };
    let mut runs: Vec<PlanRun> = Vec::new();
    let mut stats = PlanStats::default();
    let mut fill = 0u64;
    let mut c = 0u64;
    while c < guest_clusters {
        let Some((xo, x_end)) = xs.at(c) else { break };
        let (yo, y_end) = if c < y_own {
            ys.at(c)
                .map_or((Own::Zero, y_own), |(o, e)| (o, e.min(y_own)))
        } else if c < ycl {
            (Own::Opaque, ycl)
        } else {
            (Own::Zero, guest_clusters)
        };
        let end = x_end.min(y_end).min(guest_clusters);
        let p = decide(xo, yo);
        let count = end - c;
        match p {
            Plan::Unallocated => {}
            Plan::Zero => stats.zero_clusters += count,
            Plan::Data => stats.data_clusters += count,
            Plan::Compressed { .. } => stats.compressed_clusters += count,
        }
        push(&mut runs, &mut fill, c, count, p, cs);
        c = end;
    }
    stats.data_bytes = fill;
    LayerPlan { runs, stats }
}

/// Append a run, merging it with the last when both store nothing of their
/// own kind or both are data; place what it stores in the data area.
fn push(runs: &mut Vec<PlanRun>, fill: &mut u64, start: u64, count: u64, p: Plan, cs: u64) {
    if let Some(last) = runs.last_mut()
        && last.start + last.count == start
        && last.plan == p
        && !matches!(p, Plan::Compressed { .. })
    {
        last.count += count;
        last.len += p.stored_len(count, cs);
        *fill += p.stored_len(count, cs);
        return;
    }
    // Data starts on a cluster boundary; compressed spans are whole sectors,
    // so they start on a sector boundary without padding.
    if p == Plan::Data {
        *fill = fill.next_multiple_of(cs);
    }
    let len = p.stored_len(count, cs);
    runs.push(PlanRun {
        start,
        count,
        plan: p,
        at: *fill,
        len,
    });
    *fill += len;
}

#[cfg(test)]
mod tests {
    use super::*;

    const CB: u32 = 16;
    const CS: u64 = 1 << CB;

    fn run(start: u64, count: u64, own: Own) -> OwnRun {
        OwnRun { start, count, own }
    }

    fn map(runs: Vec<OwnRun>) -> ClusterMap {
        let n = runs.last().map_or(0, |r| r.end());
        ClusterMap::from_runs(runs, n * CS)
    }

    fn plans(p: &LayerPlan) -> Vec<(u64, u64, Plan)> {
        p.runs.iter().map(|r| (r.start, r.count, r.plan)).collect()
    }

    #[test]
    fn shared_clusters_and_common_zeros_are_left_out() {
        let x = map(vec![
            run(0, 4, Own::Host(HostOffset(0x10000))),
            run(4, 4, Own::Zero),
        ]);
        let y = map(vec![
            run(0, 2, Own::Host(HostOffset(0x10000))),
            run(2, 6, Own::Zero),
        ]);
        let p = plan(&x, &y, CB);
        assert_eq!(
            plans(&p),
            vec![
                (0, 2, Plan::Unallocated),
                (2, 2, Plan::Data),
                (4, 4, Plan::Unallocated)
            ]
        );
        assert_eq!(p.stats.data_bytes, 2 * CS);
    }

    #[test]
    fn zeros_over_data_are_zero_clusters() {
        // X reads zeros (however it came to) where Y has data: metadata only.
        let x = map(vec![run(0, 8, Own::Zero)]);
        let y = map(vec![
            run(0, 4, Own::Host(HostOffset(0x40000))),
            run(4, 4, Own::Backing),
        ]);
        let p = plan(&x, &y, CB);
        assert_eq!(plans(&p), vec![(0, 8, Plan::Zero)]);
        assert_eq!(p.stats.zero_clusters, 8);
        assert_eq!(p.stats.data_bytes, 0);
    }

    #[test]
    fn past_the_end_of_a_smaller_state_reads_zeros() {
        let x = map(vec![
            run(0, 2, Own::Host(HostOffset(0x10000))),
            run(2, 6, Own::Zero),
        ]);
        let y = map(vec![run(0, 2, Own::Host(HostOffset(0x10000)))]);
        let p = plan(&x, &y, CB);
        assert_eq!(plans(&p), vec![(0, 8, Plan::Unallocated)]);
    }

    #[test]
    fn a_cut_last_cluster_of_the_backing_state_is_compared_as_different() {
        let x = map(vec![run(0, 2, Own::Host(HostOffset(0x10000)))]);
        let y = ClusterMap::from_runs(vec![run(0, 2, Own::Host(HostOffset(0x10000)))], CS + 512);
        let p = plan(&x, &y, CB);
        assert_eq!(
            plans(&p),
            vec![(0, 1, Plan::Unallocated), (1, 1, Plan::Data)]
        );
    }

    #[test]
    fn compressed_clusters_are_packed_on_sector_boundaries() {
        let x = map(vec![
            run(
                0,
                1,
                Own::Compressed {
                    host: HostOffset(0x20010),
                    len: 1024 - 0x10,
                },
            ),
            run(
                1,
                1,
                Own::Compressed {
                    host: HostOffset(0x20400),
                    len: 512,
                },
            ),
            run(2, 1, Own::Host(HostOffset(0x90000))),
            run(
                3,
                1,
                Own::Compressed {
                    host: HostOffset(0x30000),
                    len: 1024,
                },
            ),
        ]);
        let y = map(vec![run(0, 4, Own::Zero)]);
        let p = plan(&x, &y, CB);
        let at: Vec<(u64, u64)> = p.runs.iter().map(|r| (r.at, r.len)).collect();
        // Two sectors (the first from 0x10); then one; data on the next
        // cluster boundary; then the last span right after it.
        assert_eq!(at, vec![(0, 1024), (1024, 512), (CS, CS), (2 * CS, 1024)]);
        assert_eq!(p.stats.compressed_clusters, 3);
        assert_eq!(p.stats.data_bytes, 2 * CS + 1024);
        // The same compressed cluster on both sides is shared.
        let p = plan(&x, &x, CB);
        assert_eq!(plans(&p), vec![(0, 4, Plan::Unallocated)]);
    }

    #[test]
    fn subclusters_are_compared_with_their_bitmaps() {
        let sub = |alloc| Own::Subclusters {
            host: Some(HostOffset(0x50000)),
            alloc,
            zero: 0,
        };
        let x = map(vec![run(0, 1, sub(0b11)), run(1, 1, sub(0b11))]);
        let y = map(vec![run(0, 1, sub(0b11)), run(1, 1, sub(0b01))]);
        let p = plan(&x, &y, CB);
        assert_eq!(
            plans(&p),
            vec![(0, 1, Plan::Unallocated), (1, 1, Plan::Data)]
        );
    }

    #[test]
    fn opaque_clusters_are_stored() {
        let x = map(vec![run(0, 1, Own::Opaque)]);
        let p = plan(&x, &x, CB);
        assert_eq!(plans(&p), vec![(0, 1, Plan::Data)]);
        let z = map(vec![run(0, 1, Own::Zero)]);
        assert_eq!(plans(&plan(&z, &x, CB)), vec![(0, 1, Plan::Zero)]);
    }
}
