//! Synthesized qcow2 layers: a state X written as a qcow2 v3 file over a
//! backing file that reads as state Y.
//!
//! Layout, decided here and nowhere else, in file order (every part but the
//! packed compressed data starts on a cluster boundary):
//!
//! ```text
//! header      1 cluster: header, backing format extension, end marker, backing name
//! reftable    refcount table, pointing at the refcount blocks
//! refblocks   16-bit refcounts: 1 for every metadata and data cluster; for a
//!             host cluster holding packed compressed data, one per compressed
//!             cluster that touches it; 0 past the end of the file
//! L1          l1_size entries
//! L2          one table for each L1 entry that maps anything, in L1 order
//! data        what the plan stores, in guest order: data clusters on cluster
//!             boundaries, compressed sector spans on sector boundaries
//! ```
//!
//! What each guest cluster holds is decided by [`plan`] from two
//! [`map::ClusterMap`]s. The plan is a list of runs, so the memory it takes
//! grows with the number of extents, not of clusters; it, the layout and the
//! file size are computed from metadata alone.

pub mod map;
pub mod plan;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::image::State;
use crate::qcow2::cluster::{CompressedGeometry, L2E_WORD_SIZE, L2Entry, encode_l1};
use crate::qcow2::layer_header::LayerHeader;
use crate::qcow2::offsets::HostOffset;
use crate::qcow2::refcount::{
    encode_reftable, refcount_block_byte, refcount_max, refcounts_per_block,
};
use crate::view::{Extent, View, all_data, clip};

pub use map::{ClusterMap, MAX_MAP_RUNS};
use plan::{LayerPlan, Plan, PlanRun, PlanStats, sector_span};

/// Refcount width of generated layers (16 bits, QEMU's default).
const LAYER_REFCOUNT_ORDER: u32 = 4;

/// Where a layer's backing file is, as written into the layer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackingRef {
    /// File name, relative to the layer's folder.
    pub name: String,
    /// "qcow2" or "raw".
    pub format: String,
}

/// A synthesized qcow2 layer, readable as a view.
pub struct Layer {
    x: Arc<State>,
    cluster_bits: u32,
    /// The plan and the L2 index, shared by layers of the same states over
    /// other backing names (see [`Layer::with_backing`]).
    plan: Arc<Vec<PlanRun>>,
    stats: PlanStats,
    /// L1 indices that have an L2 table, in order.
    l2_present: Arc<Vec<u64>>,
    header: Vec<u8>,
    reftable_offset: u64,
    refblocks_offset: u64,
    l1_offset: u64,
    l1_size: u64,
    l2_offset: u64,
    data_offset: u64,
    total_clusters: u64,
    geo: CompressedGeometry,
}

impl Layer {
    /// Plan the layer of state `x` over a backing file that reads as the
    /// state mapped by `ymap` (for a chain's bottom layer, the image's own
    /// backing file: [`ClusterMap::below`]). Reads metadata only.
    pub fn plan(
        x: Arc<State>,
        xmap: &ClusterMap,
        ymap: &ClusterMap,
        backing: Option<BackingRef>,
    ) -> Result<Layer> {
        let h = x.image().header().clone();
        let cb = h.cluster_bits;
        let cs = h.cluster_size();
        let LayerPlan { runs: plan, stats } = plan::plan(xmap, ymap, cb);
        let guest_clusters = x.size().div_ceil(cs);
        let l2_entries = cs / L2E_WORD_SIZE;
        let l1_size = guest_clusters.div_ceil(l2_entries);
        let mut l2_present: Vec<u64> = Vec::new();
        for r in plan.iter().filter(|r| r.plan != Plan::Unallocated) {
            let first = r.start / l2_entries;
            let last = (r.start + r.count - 1) / l2_entries;
            for l1 in first..=last {
                if l2_present.last() != Some(&l1) {
                    l2_present.push(l1);
                }
            }
        }
        let l1_clusters = (l1_size * 8).div_ceil(cs);
        let data_clusters = stats.data_bytes.div_ceil(cs);
        let fixed = 1 + l1_clusters + l2_present.len() as u64 + data_clusters;
        let per_block = refcounts_per_block(cb, LAYER_REFCOUNT_ORDER);
        // Refcount structures cover themselves too: grow until they fit.
        let (mut rb, mut rt) = (1u64, 1u64);
        loop {
            let total = fixed + rb + rt;
            let need_rb = total.div_ceil(per_block);
            let need_rt = (need_rb * 8).div_ceil(cs);
            if need_rb == rb && need_rt == rt {
                break;
            }
            rb = need_rb;
            rt = need_rt;
        }
        let reftable_offset = cs;
        let refblocks_offset = reftable_offset + rt * cs;
        let l1_offset = refblocks_offset + rb * cs;
        let l2_offset = l1_offset + l1_clusters * cs;
        let data_offset = l2_offset + l2_present.len() as u64 * cs;
        let total_clusters = data_offset / cs + data_clusters;
        let mut layer = Layer {
            x,
            cluster_bits: cb,
            plan: Arc::new(plan),
            stats,
            l2_present: Arc::new(l2_present),
            header: Vec::new(),
            reftable_offset,
            refblocks_offset,
            l1_offset,
            l1_size,
            l2_offset,
            data_offset,
            total_clusters,
            geo: CompressedGeometry::new(cb),
        };
        layer.header = layer.header_for(backing.as_ref())?;
        Ok(layer)
    }

    /// The same layer with another backing file name written into it: the
    /// plan is shared, only the header is encoded again (a layer's size
    /// and layout do not depend on the name, which lives in the header
    /// cluster).
    pub fn with_backing(&self, backing: Option<&BackingRef>) -> Result<Layer> {
        let mut layer = Layer {
            x: Arc::clone(&self.x),
            cluster_bits: self.cluster_bits,
            plan: Arc::clone(&self.plan),
            stats: self.stats,
            l2_present: Arc::clone(&self.l2_present),
            header: Vec::new(),
            reftable_offset: self.reftable_offset,
            refblocks_offset: self.refblocks_offset,
            l1_offset: self.l1_offset,
            l1_size: self.l1_size,
            l2_offset: self.l2_offset,
            data_offset: self.data_offset,
            total_clusters: self.total_clusters,
            geo: self.geo,
        };
        layer.header = layer.header_for(backing)?;
        Ok(layer)
    }

    /// The header cluster of this layer over `backing`.
    fn header_for(&self, backing: Option<&BackingRef>) -> Result<Vec<u8>> {
        let cs = 1u64 << self.cluster_bits;
        let rt = (self.refblocks_offset - self.reftable_offset) / cs;
        LayerHeader {
            cluster_bits: self.cluster_bits,
            size: self.x.size(),
            l1_size: u32::try_from(self.l1_size).map_err(|_| Error::TooLarge {
                what: "L1 table of a layer",
                value: self.l1_size,
                limit: u64::from(u32::MAX),
            })?,
            l1_table_offset: self.l1_offset,
            refcount_table_offset: self.reftable_offset,
            refcount_table_clusters: rt as u32,
            refcount_order: LAYER_REFCOUNT_ORDER,
            compression_type: self.x.image().header().compression_type,
            backing: backing.map(|b| (b.name.as_str(), b.format.as_str())),
        }
        .encode()
    }

    /// What the layer stores: data, compressed and zero clusters.
    pub fn stats(&self) -> PlanStats {
        self.stats
    }

    /// The plan run holding guest cluster `c`.
    fn run_of(&self, c: u64) -> Option<&PlanRun> {
        let i = self.plan.partition_point(|r| r.start + r.count <= c);
        self.plan.get(i).filter(|r| r.start <= c)
    }

    /// The first plan run whose stored bytes end past data-area offset `d`.
    fn stored_run(&self, d: u64) -> Option<&PlanRun> {
        let i = self.plan.partition_point(|r| r.stored_end() <= d);
        self.plan.get(i)
    }

    fn l2_entry(&self, c: u64) -> u64 {
        let cs = 1u64 << self.cluster_bits;
        let Some(r) = self.run_of(c) else { return 0 };
        let entry = match r.plan {
            Plan::Unallocated => L2Entry::Unallocated,
            Plan::Zero => L2Entry::Zero { host: None },
            Plan::Data => L2Entry::Data {
                host: HostOffset(self.data_offset + r.at + (c - r.start) * cs),
            },
            // The same sector count, the same offset within the first sector.
            Plan::Compressed { host, len } => L2Entry::Compressed {
                host: HostOffset(self.data_offset + r.at + (host.0 - sector_span(host, len).0.0)),
                len,
            },
        };
        entry.encode(self.geo)
    }

    /// The refcount of file cluster `k`.
    fn refcount(&self, k: u64) -> u64 {
        let cs = 1u64 << self.cluster_bits;
        if k >= self.total_clusters {
            return 0;
        }
        let Some(d) = (k * cs).checked_sub(self.data_offset) else {
            return 1;
        };
        // Every stored run that touches [d, d + cs) holds one reference: a
        // data cluster is touched by its own run alone; a cluster of packed
        // compressed data by every span that lies partly in it.
        let i = self.plan.partition_point(|r| r.stored_end() <= d);
        let n = self.plan[i..]
            .iter()
            .take_while(|r| r.at < d + cs)
            .filter(|r| r.len > 0)
            .count();
        (n as u64).min(refcount_max(LAYER_REFCOUNT_ORDER))
    }

    /// Fill `out` with the bytes of metadata cluster `k` from `within`.
    fn metadata_bytes(&self, k: u64, within: u64, out: &mut [u8]) {
        let cs = 1u64 << self.cluster_bits;
        let pos = k * cs;
        let fill_entries = |out: &mut [u8], first: u64, f: &dyn Fn(u64) -> u64| {
            let mut i = 0usize;
            while i < out.len() {
                let byte = within + i as u64;
                let entry = f(first + byte / 8).to_be_bytes();
                let b = (byte % 8) as usize;
                let n = (8 - b).min(out.len() - i);
                out[i..i + n].copy_from_slice(&entry[b..b + n]);
                i += n;
            }
        };
        if pos < self.reftable_offset {
            let w = within as usize;
            out.copy_from_slice(&self.header[w..w + out.len()]);
        } else if pos < self.refblocks_offset {
            let first = (pos - self.reftable_offset) / 8;
            let nb = (self.l1_offset - self.refblocks_offset) / cs;
            fill_entries(out, first, &|i| {
                encode_reftable((i < nb).then(|| HostOffset(self.refblocks_offset + i * cs)))
            });
        } else if pos < self.l1_offset {
            // Refcount blocks follow one another: byte b of the first block
            // is byte b of the entries of every file cluster in order.
            let first = pos - self.refblocks_offset;
            let refcount = |k: u64| self.refcount(k);
            for (i, b) in out.iter_mut().enumerate() {
                let byte = first + within + i as u64;
                *b = refcount_block_byte(byte, LAYER_REFCOUNT_ORDER, &refcount);
            }
        } else if pos < self.l2_offset {
            let first = (pos - self.l1_offset) / 8;
            fill_entries(out, first, &|i| match self.l2_present.binary_search(&i) {
                Ok(rank) if i < self.l1_size => {
                    encode_l1(Some(HostOffset(self.l2_offset + rank as u64 * cs)))
                }
                _ => 0,
            });
        } else {
            let rank = (pos - self.l2_offset) / cs;
            let l1 = self.l2_present.get(rank as usize).copied().unwrap_or(0);
            let first = l1 * (cs / L2E_WORD_SIZE);
            let guest_clusters = self.x.size().div_ceil(cs);
            fill_entries(out, 0, &|i| {
                if first + i < guest_clusters {
                    self.l2_entry(first + i)
                } else {
                    0
                }
            });
        }
    }

    /// Fill `out` from data-area offset `d`; returns how many bytes were
    /// filled (up to the end of the run or gap that `d` lies in).
    fn data_bytes(&self, d: u64, out: &mut [u8]) -> Result<usize> {
        let cs = 1u64 << self.cluster_bits;
        let Some(r) = self.stored_run(d).copied() else {
            out.fill(0);
            return Ok(out.len());
        };
        if r.at > d {
            // Padding before a data run's cluster boundary.
            let n = ((r.at - d) as usize).min(out.len());
            out[..n].fill(0);
            return Ok(n);
        }
        let n = ((r.stored_end() - d) as usize).min(out.len());
        let out = &mut out[..n];
        match r.plan {
            Plan::Compressed { host, len } => {
                // The sector span, byte for byte; its last sector may lie
                // past the end of the source, which reads zeros as in QEMU,
                // but data that starts past the end is an error, as it is
                // for the raw view.
                let file = self.x.image().file();
                if host.0 >= file.len() {
                    return Err(Error::PastEof {
                        what: "compressed cluster".into(),
                        offset: host.0,
                        len,
                        file_len: file.len(),
                    });
                }
                let src = sector_span(host, len).0.0 + (d - r.at);
                let avail = file.len().saturating_sub(src).min(n as u64) as usize;
                file.read_exact_at(&mut out[..avail], src, "compressed cluster")?;
                out[avail..].fill(0);
            }
            _ => {
                let guest = r.start * cs + (d - r.at);
                let got = self.x.read_at(out, guest)?;
                out[got..].fill(0);
            }
        }
        Ok(n)
    }
}

impl crate::cache::Weigh for Layer {
    fn weight(&self) -> u64 {
        // The plan, the header cluster, the L2 index, and the state it
        // reads from (which it keeps alive).
        let own = self.plan.len() * std::mem::size_of::<PlanRun>()
            + self.header.len()
            + self.l2_present.len() * 8;
        own as u64 + self.x.weight()
    }
}

impl View for Layer {
    fn size(&self) -> u64 {
        self.total_clusters << self.cluster_bits
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = clip(buf.len(), offset, self.size());
        let cs = 1u64 << self.cluster_bits;
        let mut done = 0usize;
        while done < n {
            let pos = offset + done as u64;
            let out = &mut buf[done..n];
            if pos >= self.data_offset {
                // Consecutive data clusters of one run are consecutive in the
                // state too: one call reads them, in large reads of the source.
                done += self.data_bytes(pos - self.data_offset, out)?;
                continue;
            }
            let within = pos % cs;
            let take = ((cs - within) as usize).min(out.len());
            self.metadata_bytes(pos / cs, within, &mut out[..take]);
            done += take;
        }
        Ok(n)
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        Ok(all_data(offset, len, self.size()))
    }
}
