//! What each guest cluster of a state is, as runs: the input that layer
//! planning compares.
//!
//! A state's own mapping says "allocated here", "zero" or "unallocated";
//! for planning, unallocated clusters are resolved further through the
//! backing file's own extent map, so that a cluster that reads zeros is
//! [`Own::Zero`] however it comes to read zeros (a zero entry, nothing
//! beneath it, a hole of the backing file at any depth, past the end of a
//! shorter backing file). The map is computed from metadata alone, once per
//! state, and its memory grows with the number of extents.

use crate::error::{Error, Result};
use crate::image::{Image, Mapping, State};
use crate::qcow2::cluster::SUBCLUSTERS;
use crate::qcow2::offsets::HostOffset;
use crate::view::{ExtentKind, View};

/// Most runs a cluster map may hold (2^22 runs, 96 MiB): a state more
/// fragmented than that is refused rather than planned without bound.
pub const MAX_MAP_RUNS: usize = 1 << 22;

/// What one guest cluster of a state is, at the state's own level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Own {
    /// Reads the image's backing file, which holds data there.
    Backing,
    /// Reads zeros.
    Zero,
    /// One host cluster; for a run, the host offset of its first cluster.
    Host(HostOffset),
    /// A compressed cluster: host offset and length of its descriptor.
    Compressed {
        /// Host offset of the compressed data.
        host: HostOffset,
        /// Bytes from `host` to the end of the descriptor's last sector.
        len: u64,
    },
    /// A cluster with extended L2 entries that is neither wholly allocated
    /// nor wholly one kind: the same host cluster and bitmaps mean the same
    /// bytes.
    Subclusters {
        /// Host cluster offset, if set.
        host: Option<HostOffset>,
        /// Allocated subclusters.
        alloc: u32,
        /// Subclusters that read as zeros.
        zero: u32,
    },
    /// Compared as different from everything (a cluster that cannot be
    /// described more closely).
    Opaque,
}

impl Own {
    /// The kind of cluster `k` of a run that starts with `self`.
    pub fn nth(self, k: u64, cluster_size: u64) -> Own {
        match self {
            Own::Host(h) => Own::Host(HostOffset(h.0 + k * cluster_size)),
            o => o,
        }
    }
}

/// A run of guest clusters of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnRun {
    /// First guest cluster.
    pub start: u64,
    /// Number of clusters.
    pub count: u64,
    /// What they are (for `Host`, the first cluster's host offset).
    pub own: Own,
}

impl OwnRun {
    /// One past the last cluster.
    pub fn end(&self) -> u64 {
        self.start + self.count
    }
}

/// Appends runs, merging one with the last when it continues it.
struct Runs {
    runs: Vec<OwnRun>,
    cluster_size: u64,
}

impl Runs {
    fn new(cluster_size: u64) -> Runs {
        Runs {
            runs: Vec::new(),
            cluster_size,
        }
    }

    fn push(&mut self, start: u64, count: u64, own: Own) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        if let Some(last) = self.runs.last_mut()
            && last.end() == start
        {
            let merge = match (last.own, own) {
                (Own::Host(a), Own::Host(b)) => a.0 + last.count * self.cluster_size == b.0,
                (Own::Backing, Own::Backing) | (Own::Zero, Own::Zero) => true,
                (Own::Opaque, Own::Opaque) => true,
                _ => false,
            };
            if merge {
                last.count += count;
                return Ok(());
            }
        }
        if self.runs.len() >= MAX_MAP_RUNS {
            return Err(Error::TooLarge {
                what: "extents of one state (too fragmented to plan a layer)",
                value: self.runs.len() as u64 + 1,
                limit: MAX_MAP_RUNS as u64,
            });
        }
        self.runs.push(OwnRun { start, count, own });
        Ok(())
    }
}

/// The mapping of one guest cluster that is covered by more than one run:
/// gathered piece by piece, then described as subclusters.
struct Pieces {
    host: Option<HostOffset>,
    alloc: u32,
    zero: u32,
    unallocated: bool,
    opaque: bool,
}

impl Pieces {
    fn new() -> Pieces {
        Pieces {
            host: None,
            alloc: 0,
            zero: 0,
            unallocated: false,
            opaque: false,
        }
    }

    /// Add `[from, to)` (offsets inside the cluster) mapped by `m`.
    fn add(&mut self, from: u64, to: u64, m: Mapping, sc_size: u64) {
        if !from.is_multiple_of(sc_size) {
            self.opaque = true;
            return;
        }
        let first = from / sc_size;
        let last = to.div_ceil(sc_size);
        let bits = (first..last.min(u64::from(SUBCLUSTERS))).fold(0u32, |b, i| b | (1 << i));
        match m {
            Mapping::Data(h) => {
                let base = HostOffset(h.0.wrapping_sub(from));
                if self.host.is_some_and(|b| b != base) {
                    self.opaque = true;
                }
                self.host = Some(base);
                self.alloc |= bits;
            }
            Mapping::Zero => self.zero |= bits,
            Mapping::Unallocated => self.unallocated = true,
            Mapping::Compressed { .. } => self.opaque = true,
        }
    }

    fn own(&self, has_backing: bool) -> Own {
        if self.opaque {
            Own::Opaque
        } else if self.alloc == 0 && !(self.unallocated && has_backing) {
            Own::Zero
        } else {
            // Unallocated subclusters read zeros when nothing is beneath.
            let zero = if has_backing { self.zero } else { !self.alloc };
            Own::Subclusters {
                host: self.host,
                alloc: self.alloc,
                zero,
            }
        }
    }
}

/// A state's clusters as runs, from cluster 0 to the last cluster that its
/// size reaches; computed from metadata once per state and shared by every
/// layer built on that state.
pub struct ClusterMap {
    runs: Vec<OwnRun>,
    size: u64,
}

impl ClusterMap {
    /// Walk `state`'s tables, and resolve its unallocated clusters through
    /// the image's backing file.
    pub fn of(state: &State) -> Result<ClusterMap> {
        let image = state.image();
        let h = image.header();
        let cb = h.cluster_bits;
        let cs = h.cluster_size();
        let sc_size = h.subcluster_size();
        let has_backing = image.backing().is_some();
        let size = state.size();
        let mut out = Runs::new(cs);
        let mut pieces: Option<Pieces> = None;
        let mut pos = 0u64;
        for run in state.runs(0, size)? {
            let end = pos + run.len;
            let mut off = pos;
            while off < end {
                let c = off >> cb;
                let cstart = c << cb;
                let cend = (cstart + cs).min(size);
                if off == cstart && end >= cend {
                    // Whole clusters (the last one possibly cut by the size).
                    let n = if end == size {
                        (end - off).div_ceil(cs)
                    } else {
                        (end - off) >> cb
                    };
                    match run.mapping {
                        Mapping::Unallocated => out.push(c, n, Own::Backing)?,
                        Mapping::Zero => out.push(c, n, Own::Zero)?,
                        Mapping::Data(host) => {
                            out.push(c, n, Own::Host(host.advanced(off - pos)))?
                        }
                        Mapping::Compressed { host, len, .. } => {
                            for k in 0..n {
                                let own = Own::Compressed { host, len };
                                out.push(c + k, 1, own)?;
                            }
                        }
                    }
                    off = (off + (n << cb)).min(end);
                } else {
                    let to = end.min(cend);
                    let p = pieces.get_or_insert_with(Pieces::new);
                    let m = run.mapping.advanced(off - pos);
                    p.add(off - cstart, to - cstart, m, sc_size);
                    if to == cend {
                        out.push(c, 1, p.own(has_backing))?;
                        pieces = None;
                    }
                    off = to;
                }
            }
            pos = end;
        }
        let map = ClusterMap {
            runs: out.runs,
            size,
        };
        map.resolve_backing(image)
    }

    /// The image's own backing file as a state of `size` bytes reads it:
    /// what a layer with no backing state stands on.
    pub fn below(image: &Image, size: u64) -> Result<ClusterMap> {
        let cs = image.header().cluster_size();
        let map = ClusterMap {
            runs: vec![OwnRun {
                start: 0,
                count: size.div_ceil(cs),
                own: Own::Backing,
            }],
            size,
        };
        map.resolve_backing(image)
    }

    /// Split the `Backing` runs into the clusters where the backing file
    /// holds data and those where its own map reads zeros. A backing file
    /// that cannot be opened is left as `Backing`: reading it is an error
    /// later, never zeros.
    fn resolve_backing(self, image: &Image) -> Result<ClusterMap> {
        let cs = image.header().cluster_size();
        let view = match image.backing() {
            None => None,
            Some(b) => match &b.view {
                Ok(v) => Some(v),
                Err(_) => return Ok(self),
            },
        };
        let mut out = Runs::new(cs);
        for r in &self.runs {
            if r.own != Own::Backing {
                out.push(r.start, r.count, r.own)?;
                continue;
            }
            let Some(view) = view else {
                out.push(r.start, r.count, Own::Zero)?;
                continue;
            };
            let from = r.start * cs;
            let to = (r.end() * cs).min(self.size);
            let mut next = r.start;
            for e in view.extents(from, to - from)? {
                if e.kind != ExtentKind::Data || e.len == 0 {
                    continue;
                }
                let first = (e.start / cs).max(next);
                let last = e.end().div_ceil(cs).min(r.end());
                if last <= first {
                    continue;
                }
                out.push(next, first - next, Own::Zero)?;
                out.push(first, last - first, Own::Backing)?;
                next = last;
            }
            out.push(next, r.end() - next, Own::Zero)?;
        }
        Ok(ClusterMap {
            runs: out.runs,
            size: self.size,
        })
    }

    /// The runs, in guest order, covering every cluster the size reaches.
    pub fn runs(&self) -> &[OwnRun] {
        &self.runs
    }

    /// The state's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// A map built from runs directly (for tests of the planner).
    pub fn from_runs(runs: Vec<OwnRun>, size: u64) -> ClusterMap {
        ClusterMap { runs, size }
    }
}

impl crate::cache::Weigh for ClusterMap {
    fn weight(&self) -> u64 {
        (self.runs.len() * std::mem::size_of::<OwnRun>() + std::mem::size_of::<ClusterMap>()) as u64
    }
}
