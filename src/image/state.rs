//! A state of an image (active or a snapshot) as a view: the cluster
//! mapping of guest bytes, and reads that turn mappings into bytes.

use std::sync::Arc;

use super::{Image, StateId};
use crate::error::{Error, Result};
use crate::qcow2::cluster::{self, Mapping};
use crate::qcow2::l1::L1Table;
use crate::qcow2::offsets::{GuestOffset, HostOffset};
use crate::view::{Extent, ExtentKind, View, clip, push_extent};

/// A run of guest bytes with one mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// What the bytes map to.
    pub mapping: Mapping,
    /// Length in bytes.
    pub len: u64,
}

/// One state (active or a snapshot) of an image, as a read-only view.
pub struct State {
    pub(super) image: Arc<Image>,
    pub(super) which: StateId,
    pub(super) l1: Arc<L1Table>,
    pub(super) size: u64,
}

impl State {
    /// The image this state belongs to.
    pub fn image(&self) -> &Arc<Image> {
        &self.image
    }

    /// The L2 table that maps `guest`, or the run of unused L1 entries
    /// (at most `max_len` bytes) it lies in: a run of unused L1 entries is
    /// one run, however long, so that walking a state costs time in
    /// proportion to the tables that exist, not to the virtual size.
    /// Offsets past the L1 table are unallocated (they can only be reached
    /// for VM state).
    fn table_at(&self, guest: GuestOffset, max_len: u64) -> Result<Table> {
        let h = self.image.header();
        let coverage = h.l1_coverage();
        let l1_index = guest.0 / coverage;
        let l1_what = || match self.which {
            StateId::Active => format!(
                "active L1 table at {:#x}: entry {l1_index}",
                h.l1_table_offset
            ),
            StateId::Snapshot(i) => format!("L1 table of snapshot #{i}: entry {l1_index}"),
        };
        let l1_entry = self.l1.get(l1_index);
        let Some(l2_offset) = cluster::decode_l1(l1_entry, h.cluster_bits, &l1_what)? else {
            // Skip every following unused entry too.
            let next_used = self
                .l1
                .next_used(l1_index)
                .and_then(|(j, _)| j.checked_mul(coverage));
            let len = match next_used {
                Some(end) => max_len.min(end - guest.0),
                None => max_len,
            };
            return Ok(Table::Unused(Run {
                mapping: Mapping::Unallocated,
                len,
            }));
        };
        let l2_what = || format!("L2 table at {l2_offset} (L1[{l1_index}])");
        Ok(Table::L2(L2At {
            entries: self.image.l2_table(l2_offset, &l2_what)?,
            offset: l2_offset,
            l1_index,
            end: (guest.0 - guest.0 % coverage).saturating_add(coverage),
        }))
    }

    /// The run starting at `guest`, at most `max_len` long and inside the
    /// coverage of `t`, that has one mapping.
    fn run_in(&self, t: &L2At, guest: GuestOffset, max_len: u64) -> Result<Run> {
        let h = self.image.header();
        let cs = h.cluster_size();
        let sc_size = h.subcluster_size();
        let mut pos = guest.0;
        let end = guest.0.saturating_add(max_len);
        let mut first: Option<Mapping> = None;
        let mut len = 0u64;
        while pos < end {
            let l2_index = (pos / cs) % h.l2_entries();
            let entry_what = || {
                format!(
                    "L2 table at {} (L1[{}]): entry {l2_index}",
                    t.offset, t.l1_index
                )
            };
            let entry = self.image.l2_entry(&t.entries, l2_index, &entry_what)?;
            let in_cluster = pos & (cs - 1);
            let in_sc = in_cluster % sc_size;
            let piece = (sc_size - in_sc).min(end - pos);
            let m = entry.mapping_at(in_cluster, sc_size);
            match first {
                None => first = Some(m),
                Some(f) if continues(f, len, m) => {}
                Some(_) => break,
            }
            len += piece;
            pos += piece;
        }
        Ok(Run {
            mapping: first.unwrap_or(Mapping::Unallocated),
            len,
        })
    }

    /// Read guest bytes at `offset` into `buf` without clipping to the disk
    /// size; unallocated bytes come from the backing view when `use_backing`
    /// (zeros past its end), else read as zeros.
    pub fn read_mapped(&self, buf: &mut [u8], offset: u64, use_backing: bool) -> Result<()> {
        for (i, window) in buf.chunks_mut(READ_WINDOW).enumerate() {
            self.read_window(window, offset + (i * READ_WINDOW) as u64, use_backing)?;
        }
        Ok(())
    }

    /// [`State::read_mapped`] of at most [`READ_WINDOW`] bytes: the window
    /// is mapped first, so that the compressed clusters it spans are
    /// inflated side by side before its bytes are copied.
    fn read_window(&self, buf: &mut [u8], offset: u64, use_backing: bool) -> Result<()> {
        let runs = self.runs(offset, buf.len() as u64)?;
        let mapped: u64 = runs.iter().map(|r| r.len).sum();
        if mapped < buf.len() as u64 {
            return Err(Error::corrupt(
                format!("state {:?}", self.which),
                format!("no mapping for guest offset {:#x}", offset + mapped),
            ));
        }
        let compressed: Vec<(HostOffset, u64)> = runs
            .iter()
            .filter_map(|r| match r.mapping {
                Mapping::Compressed { host, len, .. } => Some((host, len)),
                _ => None,
            })
            .collect();
        let mut inflated = self.image.decompressed_all(compressed)?.into_iter();
        let mut pos = offset;
        let mut rest = &mut buf[..];
        for run in runs {
            let (out, tail) = rest.split_at_mut(run.len as usize);
            rest = tail;
            match run.mapping {
                Mapping::Zero => out.fill(0),
                Mapping::Unallocated => match (&self.image.backing, use_backing) {
                    (Some(b), true) => {
                        let got = b.view()?.read_at(out, pos)?;
                        out[got..].fill(0);
                    }
                    _ => out.fill(0),
                },
                Mapping::Data(host) => {
                    self.image.count_data_read();
                    let src = self.image.data_source();
                    src.read_exact_at(out, host.0, "data cluster")?;
                }
                Mapping::Compressed { within, .. } => {
                    // One inflated cluster per compressed run, in order.
                    let cluster = inflated.next().ok_or_else(|| {
                        Error::corrupt("compressed cluster", "no inflated cluster for its run")
                    })?;
                    let slice = cluster
                        .get(within as usize..within as usize + out.len())
                        .ok_or_else(|| Error::corrupt("compressed cluster", "run past its end"))?;
                    out.copy_from_slice(slice);
                }
            }
            pos += run.len;
        }
        Ok(())
    }

    /// The runs of this image's own mapping over `[offset, offset + len)`,
    /// each with one mapping: "where is this state's guest byte" is
    /// answered here, for reads, extents and cluster maps alike. Each L2
    /// table is looked up once for all the runs inside it; runs inside an
    /// L2 table stop at its boundary.
    pub fn runs(&self, offset: u64, len: u64) -> Result<Vec<Run>> {
        let mut out: Vec<Run> = Vec::new();
        let end = offset.saturating_add(len);
        let mut pos = offset;
        while pos < end {
            let mut push = |run: Run| match out.last_mut() {
                Some(last) if continues(last.mapping, last.len, run.mapping) => last.len += run.len,
                _ => out.push(run),
            };
            match self.table_at(GuestOffset(pos), end - pos)? {
                Table::Unused(run) if run.len > 0 => {
                    pos += run.len;
                    push(run);
                }
                Table::Unused(_) => break,
                Table::L2(t) => {
                    let stop = end.min(t.end);
                    while pos < stop {
                        let run = self.run_in(&t, GuestOffset(pos), stop - pos)?;
                        if run.len == 0 {
                            return Ok(out);
                        }
                        pos += run.len;
                        push(run);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// What maps a guest offset: an L2 table, or nothing for a run of unused
/// L1 entries.
enum Table {
    Unused(Run),
    L2(L2At),
}

/// An L2 table, where it is, and the end of the guest bytes it maps.
struct L2At {
    entries: Arc<Vec<u64>>,
    offset: HostOffset,
    l1_index: u64,
    end: u64,
}

/// Bytes of a read mapped and inflated at once: two of the largest FUSE
/// requests, so that the clusters inflated side by side stay few whatever
/// the size of a read.
const READ_WINDOW: usize = 2 << 20;

/// True when mapping `next` continues a run that began with `first` and is
/// `len` bytes long so far.
fn continues(first: Mapping, len: u64, next: Mapping) -> bool {
    match (first, next) {
        (Mapping::Unallocated, Mapping::Unallocated) | (Mapping::Zero, Mapping::Zero) => true,
        (Mapping::Data(a), Mapping::Data(b)) => a.0 + len == b.0,
        (
            Mapping::Compressed {
                host: a, within: w, ..
            },
            Mapping::Compressed {
                host: b, within: x, ..
            },
        ) => a == b && w + len == x,
        _ => false,
    }
}

impl crate::cache::Weigh for State {
    fn weight(&self) -> u64 {
        // The L1 table, plus the fixed part.
        self.l1.weight() + std::mem::size_of::<State>() as u64
    }
}

impl View for State {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = clip(buf.len(), offset, self.size);
        self.read_mapped(&mut buf[..n], offset, true)?;
        Ok(n)
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let end = offset.saturating_add(len).min(self.size);
        let mut out = Vec::new();
        let mut pos = offset;
        for run in self.runs(offset, end.saturating_sub(offset))? {
            match run.mapping {
                Mapping::Data(_) | Mapping::Compressed { .. } => {
                    push_extent(&mut out, pos, run.len, ExtentKind::Data)
                }
                Mapping::Zero => push_extent(&mut out, pos, run.len, ExtentKind::Zero),
                Mapping::Unallocated => match &self.image.backing {
                    Some(b) => {
                        let v = b.view()?;
                        for e in v.extents(pos, run.len)? {
                            push_extent(&mut out, e.start, e.len, e.kind);
                        }
                        // Past the end of a shorter backing file: zeros.
                        let covered = v.size().clamp(pos, pos + run.len);
                        push_extent(&mut out, covered, pos + run.len - covered, ExtentKind::Hole);
                    }
                    None => push_extent(&mut out, pos, run.len, ExtentKind::Hole),
                },
            }
            pos += run.len;
        }
        Ok(out)
    }
}

/// The VM state a snapshot saved, as a view of its own.
///
/// QEMU stores it like guest data, starting at the first L1 entry that maps
/// no guest cluster of the snapshot's disk.
pub struct VmState {
    state: State,
    start: u64,
    size: u64,
}

impl VmState {
    /// The saved VM state of snapshot `index`.
    pub fn open(image: &Arc<Image>, index: usize) -> Result<VmState> {
        let state = image.state(StateId::Snapshot(index))?;
        let coverage = image.header().l1_coverage();
        let sn = &image.snapshots()[index];
        let start = sn
            .disk_size
            .div_ceil(coverage)
            .checked_mul(coverage)
            .ok_or_else(|| Error::corrupt("snapshot table", "VM state offset overflows"))?;
        Ok(VmState {
            state,
            start,
            size: sn.vm_state_size,
        })
    }
}

impl View for VmState {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = clip(buf.len(), offset, self.size);
        let guest = self
            .start
            .checked_add(offset)
            .ok_or_else(|| Error::corrupt("VM state", "offset overflows"))?;
        self.state.read_mapped(&mut buf[..n], guest, false)?;
        Ok(n)
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        Ok(crate::view::all_data(offset, len, self.size()))
    }
}
