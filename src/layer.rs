//! Synthesized qcow2 layers: a state X written as a qcow2 v3 file over a
//! backing file that reads as state Y.
//!
//! Layout, decided here and nowhere else, in file order (every part starts
//! on a cluster boundary; every cluster has refcount 1):
//!
//! ```text
//! header      1 cluster: header, backing format extension, end marker, backing name
//! reftable    refcount table, pointing at the refcount blocks
//! refblocks   16-bit refcounts: 1 for every cluster of the file, 0 after
//! L1          l1_size entries
//! L2          one table for each L1 entry that maps anything, in L1 order
//! data        one cluster per data or carried-over compressed cluster, in guest order
//! ```
//!
//! Guest cluster c of the layer is left unallocated when X and Y map it to
//! the same host cluster, both read it as zeros, or both read it through the
//! image's own backing file; it is a zero cluster when X reads zeros and Y
//! does not; otherwise it holds X's bytes (a compressed source cluster is
//! carried over compressed, byte for byte). The plan is a list of runs, so
//! the memory it takes grows with the number of extents, not of clusters;
//! it and the file size are computed from metadata alone.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::header::{CompressionType, QCOW2_MAGIC};
use crate::image::{Mapping, State};
use crate::view::{Extent, View, all_data, clip};

/// Most runs a cluster map may hold (2^22 runs, 96 MiB): a state more
/// fragmented than that is refused rather than planned without bound.
pub const MAX_MAP_RUNS: usize = 1 << 22;

/// Refcount width of generated layers (16 bits, QEMU's default).
const LAYER_REFCOUNT_ORDER: u32 = 4;
/// Header length of generated layers (v3 with the compression type byte).
const LAYER_HEADER_LENGTH: u32 = 112;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
const ZERO: u64 = 1;

/// What one guest cluster of a state is at the state's own level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Own {
    /// Read through the image's backing file.
    Backing,
    /// Reads zeros.
    Zero,
    /// One host cluster; for a run, the host offset of its first cluster.
    Host(u64),
    /// A compressed cluster.
    Compressed { host: u64, len: u64 },
    /// Anything else (partly allocated subclusters, a cluster cut by the
    /// state's end): compared as different from everything.
    Mixed,
}

#[derive(Clone, Copy, Debug)]
struct OwnRun {
    start: u64,
    count: u64,
    own: Own,
}

/// Append `n` clusters from `start`, merging with the last run when it
/// continues it (host offsets advancing a cluster per cluster).
fn push_own(out: &mut Vec<OwnRun>, start: u64, n: u64, own: Own, cs: u64) -> Result<()> {
    if let Some(last) = out.last_mut()
        && last.start + last.count == start
    {
        let merge = match (last.own, own) {
            (Own::Host(a), Own::Host(b)) => a + last.count * cs == b,
            (Own::Compressed { .. }, _) | (_, Own::Compressed { .. }) => false,
            (a, b) => a == b,
        };
        if merge {
            last.count += n;
            return Ok(());
        }
    }
    if out.len() >= MAX_MAP_RUNS {
        return Err(Error::TooLarge {
            what: "extents of one state (too fragmented to plan a layer)",
            value: out.len() as u64 + 1,
            limit: MAX_MAP_RUNS as u64,
        });
    }
    out.push(OwnRun {
        start,
        count: n,
        own,
    });
    Ok(())
}

/// The per-cluster mapping of a state, as runs of clusters. A cluster not
/// covered by one mapping from its first byte to its last is `Mixed`.
fn own_runs(x: &State, cluster_bits: u32) -> Result<Vec<OwnRun>> {
    let cs = 1u64 << cluster_bits;
    let size = x.size();
    let mut out: Vec<OwnRun> = Vec::new();
    let mut pos = 0u64;
    for run in x.runs(0, size)? {
        let end = pos + run.len;
        let mut off = pos;
        while off < end {
            let c = off >> cluster_bits;
            let cstart = c << cluster_bits;
            let cend = cstart + cs;
            if off == cstart && end >= cend {
                let n = (end - off) >> cluster_bits;
                match run.mapping {
                    Mapping::Unallocated => push_own(&mut out, c, n, Own::Backing, cs)?,
                    Mapping::Zero => push_own(&mut out, c, n, Own::Zero, cs)?,
                    Mapping::Data(h) => push_own(&mut out, c, n, Own::Host(h.0 + (off - pos)), cs)?,
                    Mapping::Compressed { host, len, .. } => {
                        for k in 0..n {
                            push_own(
                                &mut out,
                                c + k,
                                1,
                                Own::Compressed { host: host.0, len },
                                cs,
                            )?;
                        }
                    }
                }
                off += n << cluster_bits;
            } else {
                let covered = out.last().is_some_and(|l| l.start + l.count > c);
                if !covered {
                    push_own(&mut out, c, 1, Own::Mixed, cs)?;
                }
                off = end.min(cend);
            }
        }
        pos = end;
    }
    Ok(out)
}

/// A state's mapping per guest cluster, as runs: what layer planning
/// compares. Computed from metadata once per state and shared by every layer
/// built on that state.
pub struct ClusterMap {
    runs: Vec<OwnRun>,
    size: u64,
}

impl ClusterMap {
    /// Walk `state`'s tables.
    pub fn of(state: &State) -> Result<ClusterMap> {
        let cb = state.image().header().cluster_bits;
        Ok(ClusterMap {
            runs: own_runs(state, cb)?,
            size: state.size(),
        })
    }
}

/// What the layer stores for a run of guest clusters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Unallocated,
    Zero,
    Data,
    Compressed { host: u64, len: u64 },
}

#[derive(Clone, Copy, Debug)]
struct PlanRun {
    start: u64,
    count: u64,
    plan: Plan,
    /// Index (among data clusters) of this run's first data cluster.
    data_index: u64,
}

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
    plan: Vec<PlanRun>,
    /// L1 indices that have an L2 table, in order.
    l2_present: Vec<u64>,
    header: Vec<u8>,
    reftable_offset: u64,
    reftable_clusters: u64,
    refblocks_offset: u64,
    l1_offset: u64,
    l1_size: u64,
    l2_offset: u64,
    data_offset: u64,
    total_clusters: u64,
    csize_shift: u32,
}

impl Layer {
    /// Plan the layer of state `x` over the state mapped by `ymap` (None:
    /// over the image's own backing file, or no backing file). Reads
    /// metadata only.
    pub fn plan(
        x: Arc<State>,
        xmap: &ClusterMap,
        ymap: Option<&ClusterMap>,
        backing: Option<BackingRef>,
    ) -> Result<Layer> {
        let h = x.image().header().clone();
        let cb = h.cluster_bits;
        let cs = h.cluster_size();
        let xr = &xmap.runs;
        let guest_clusters = x.size().div_ceil(cs);
        let yr = match ymap {
            Some(y) => {
                let mut r = y.runs.clone();
                let ycl = y.size.div_ceil(cs);
                if ycl < guest_clusters {
                    r.push(OwnRun {
                        start: ycl,
                        count: guest_clusters - ycl,
                        own: Own::Zero,
                    });
                }
                r
            }
            None => vec![OwnRun {
                start: 0,
                count: guest_clusters,
                own: Own::Backing,
            }],
        };
        // Walk both run lists together.
        let mut plan: Vec<PlanRun> = Vec::new();
        let (mut i, mut j) = (0usize, 0usize);
        let mut c = 0u64;
        let mut data_clusters = 0u64;
        while c < guest_clusters {
            let Some(a) = xr.get(i) else { break };
            let b = yr.get(j).copied().unwrap_or(OwnRun {
                start: c,
                count: guest_clusters - c,
                own: Own::Zero,
            });
            let a_end = a.start + a.count;
            let b_end = b.start + b.count;
            let seg_end = a_end.min(b_end).min(guest_clusters);
            let xo = shift(a.own, c - a.start, cs);
            let yo = shift(b.own, c - b.start, cs);
            let p = match (xo, yo) {
                (Own::Host(p), Own::Host(q)) if p == q => Plan::Unallocated,
                (Own::Compressed { host: p, .. }, Own::Compressed { host: q, .. }) if p == q => {
                    Plan::Unallocated
                }
                (Own::Backing, Own::Backing) | (Own::Zero, Own::Zero) => Plan::Unallocated,
                (Own::Zero, _) => Plan::Zero,
                (Own::Compressed { host, len }, _) if len <= cs => Plan::Compressed { host, len },
                _ => Plan::Data,
            };
            let count = seg_end - c;
            let stores = matches!(p, Plan::Data | Plan::Compressed { .. });
            match plan.last_mut() {
                Some(last)
                    if last.plan == p
                        && p != Plan::Data
                        && !matches!(p, Plan::Compressed { .. }) =>
                {
                    last.count += count
                }
                Some(last) if last.plan == Plan::Data && p == Plan::Data => last.count += count,
                _ => plan.push(PlanRun {
                    start: c,
                    count,
                    plan: p,
                    data_index: data_clusters,
                }),
            }
            if stores {
                data_clusters += count;
            }
            c = seg_end;
            if c >= a_end {
                i += 1;
            }
            if c >= b_end {
                j += 1;
            }
        }
        let l2_entries = cs / 8;
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
        let fixed = 1 + l1_clusters + l2_present.len() as u64 + data_clusters;
        let per_block = (cs * 8) >> LAYER_REFCOUNT_ORDER;
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
            plan,
            l2_present,
            header: Vec::new(),
            reftable_offset,
            reftable_clusters: rt,
            refblocks_offset,
            l1_offset,
            l1_size,
            l2_offset,
            data_offset,
            total_clusters,
            csize_shift: 62 - (cb - 8),
        };
        layer.header = layer.build_header(h.compression_type, backing.as_ref())?;
        Ok(layer)
    }

    fn build_header(&self, ct: CompressionType, backing: Option<&BackingRef>) -> Result<Vec<u8>> {
        let cs = 1usize << self.cluster_bits;
        let mut b = vec![0u8; 112];
        let put32 =
            |b: &mut Vec<u8>, o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_be_bytes());
        let put64 =
            |b: &mut Vec<u8>, o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_be_bytes());
        put32(&mut b, 0, QCOW2_MAGIC);
        put32(&mut b, 4, 3);
        put32(&mut b, 20, self.cluster_bits);
        put64(&mut b, 24, self.x.size());
        put32(&mut b, 36, self.l1_size as u32);
        put64(&mut b, 40, self.l1_offset);
        put64(&mut b, 48, self.reftable_offset);
        put32(&mut b, 56, self.reftable_clusters as u32);
        let zstd = ct == CompressionType::Zstd;
        put64(&mut b, 72, if zstd { 1 << 3 } else { 0 });
        put32(&mut b, 96, LAYER_REFCOUNT_ORDER);
        put32(&mut b, 100, LAYER_HEADER_LENGTH);
        b[104] = u8::from(zstd);
        if let Some(bk) = backing {
            let fmt = bk.format.as_bytes();
            b.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
            b.extend_from_slice(&(fmt.len() as u32).to_be_bytes());
            b.extend_from_slice(fmt);
            b.resize(b.len().div_ceil(8) * 8, 0);
        }
        b.extend_from_slice(&[0u8; 8]);
        if let Some(bk) = backing {
            let name = bk.name.as_bytes();
            let off = b.len();
            put64(&mut b, 8, off as u64);
            put32(&mut b, 16, name.len() as u32);
            b.extend_from_slice(name);
        }
        if b.len() > cs {
            return Err(Error::Unsupported {
                feature: format!("backing file name too long for a {cs}-byte header cluster"),
            });
        }
        b.resize(cs, 0);
        Ok(b)
    }

    /// The plan run holding guest cluster `c`.
    fn run_of(&self, c: u64) -> Option<&PlanRun> {
        let i = self.plan.partition_point(|r| r.start + r.count <= c);
        self.plan.get(i).filter(|r| r.start <= c)
    }

    /// The plan run holding data cluster `d`.
    fn data_run(&self, d: u64) -> Option<&PlanRun> {
        let i = self.plan.partition_point(|r| {
            let stores = matches!(r.plan, Plan::Data | Plan::Compressed { .. });
            r.data_index + if stores { r.count } else { 0 } <= d
        });
        self.plan[i..]
            .iter()
            .find(|r| matches!(r.plan, Plan::Data | Plan::Compressed { .. }))
    }

    fn l2_entry(&self, c: u64) -> u64 {
        let cs = 1u64 << self.cluster_bits;
        match self.run_of(c) {
            None => 0,
            Some(r) => match r.plan {
                Plan::Unallocated => 0,
                Plan::Zero => ZERO,
                Plan::Data => (self.data_offset + (r.data_index + c - r.start) * cs) | COPIED,
                Plan::Compressed { len, .. } => {
                    let host = self.data_offset + r.data_index * cs;
                    let extra = len.div_ceil(512).saturating_sub(1);
                    COMPRESSED | (extra << self.csize_shift) | host
                }
            },
        }
    }

    /// Fill `out` with the bytes of layer cluster `k` from `within`.
    fn cluster_bytes(&self, k: u64, within: u64, out: &mut [u8]) -> Result<()> {
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
                if i < nb {
                    self.refblocks_offset + i * cs
                } else {
                    0
                }
            });
        } else if pos < self.l1_offset {
            // 16-bit refcounts: 1 for every cluster of the file.
            let first = (pos - self.refblocks_offset) / 2;
            let total = self.total_clusters;
            let mut i = 0usize;
            while i < out.len() {
                let byte = within + i as u64;
                let v: u16 = if first + byte / 2 < total { 1 } else { 0 };
                out[i] = v.to_be_bytes()[(byte % 2) as usize];
                i += 1;
            }
        } else if pos < self.l2_offset {
            let first = (pos - self.l1_offset) / 8;
            fill_entries(out, first, &|i| match self.l2_present.binary_search(&i) {
                Ok(rank) if i < self.l1_size => (self.l2_offset + rank as u64 * cs) | COPIED,
                _ => 0,
            });
        } else if pos < self.data_offset {
            let rank = (pos - self.l2_offset) / cs;
            let l1 = self.l2_present.get(rank as usize).copied().unwrap_or(0);
            let first = l1 * (cs / 8);
            let guest_clusters = self.x.size().div_ceil(cs);
            fill_entries(out, 0, &|i| {
                if first + i < guest_clusters {
                    self.l2_entry(first + i)
                } else {
                    0
                }
            });
        } else {
            let d = (pos - self.data_offset) / cs;
            let r = *self
                .data_run(d)
                .ok_or_else(|| Error::corrupt("layer", "data cluster out of plan"))?;
            match r.plan {
                Plan::Compressed { host, len } => {
                    let img = self.x.image();
                    let file = img.file();
                    let avail = file.len().saturating_sub(host).min(len);
                    let mut buf = vec![0u8; cs as usize];
                    file.read_exact_at(&mut buf[..avail as usize], host, "compressed cluster")?;
                    let w = within as usize;
                    out.copy_from_slice(&buf[w..w + out.len()]);
                }
                _ => {
                    let c = r.start + (d - r.data_index);
                    let n = self.x.read_at(out, c * cs + within)?;
                    out[n..].fill(0);
                }
            }
        }
        Ok(())
    }
}

fn shift(o: Own, k: u64, cs: u64) -> Own {
    match o {
        Own::Host(h) => Own::Host(h + k * cs),
        o => o,
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
            let k = pos / cs;
            let within = pos % cs;
            let mut take = ((cs - within) as usize).min(n - done);
            // Consecutive data clusters of one plan run are consecutive in
            // the state too: read them with one call, which merges them
            // into large reads of the source.
            if pos >= self.data_offset
                && let Some(r) = self.data_run((pos - self.data_offset) / cs)
                && r.plan == Plan::Data
            {
                let run_end = self.data_offset + (r.data_index + r.count) * cs;
                take = (run_end - pos).min((n - done) as u64) as usize;
                let d = (pos - self.data_offset) / cs;
                let guest = (r.start + (d - r.data_index)) * cs + within;
                let out = &mut buf[done..done + take];
                let got = self.x.read_at(out, guest)?;
                out[got..].fill(0);
                done += take;
                continue;
            }
            self.cluster_bytes(k, within, &mut buf[done..done + take])?;
            done += take;
        }
        Ok(n)
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        Ok(all_data(offset, len, self.size()))
    }
}
