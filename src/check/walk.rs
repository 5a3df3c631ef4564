//! The walk of every table of an image, tallying references per host
//! cluster as `qemu-img check` does.

use super::{CheckReport, MAX_CHECK_L2_ENTRIES, StateFigures};
use crate::image::Image;
use crate::qcow2::be::be64_table;
use crate::qcow2::cluster::{L2Fields, L2Kind, SubclusterBits, l1_fields, l2_fields, l2_words};
use crate::qcow2::header::INCOMPAT_DATA_FILE;
use crate::qcow2::l1::L1Table;
use crate::qcow2::offsets::HostOffset;

pub(super) struct Walk<'a> {
    pub(super) image: &'a Image,
    pub(super) cluster_bits: u32,
    pub(super) cluster_size: u64,
    pub(super) file_len: u64,
    pub(super) refcount_max: u64,
    /// References counted per host cluster (4 bytes per cluster of the
    /// file: the check's memory bound).
    pub(super) refs: Vec<u32>,
    /// L2 entries visited so far.
    pub(super) visited: u64,
    /// Bitmap table entries visited so far.
    pub(super) bitmap_entries: u64,
    pub(super) report: CheckReport,
}

impl<'a> Walk<'a> {
    /// A walk of `image` with nothing counted yet.
    pub(super) fn new(image: &'a Image) -> Walk<'a> {
        let h = image.header();
        let file_len = image.file().len();
        let cluster_size = h.cluster_size();
        Walk {
            image,
            cluster_bits: h.cluster_bits,
            cluster_size,
            file_len,
            refcount_max: h.refcount_max(),
            refs: vec![0; file_len.div_ceil(cluster_size) as usize],
            visited: 0,
            bitmap_entries: 0,
            report: CheckReport {
                total_clusters: h.size.div_ceil(cluster_size),
                ..CheckReport::default()
            },
        }
    }

    /// Count one reference to every cluster touched by `[offset, offset+size)`.
    pub(super) fn inc(&mut self, at: HostOffset, size: u64) {
        if size == 0 {
            return;
        }
        let offset = at.0;
        let end = offset.saturating_add(size);
        if end.saturating_sub(self.file_len) >= self.cluster_size {
            self.report.corrupt(format_args!(
                "ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset {offset:#x} size {size:#x}"
            ));
            return;
        }
        let first = offset >> self.cluster_bits;
        let last = (end - 1) >> self.cluster_bits;
        for k in first..=last {
            let k = k as usize;
            if k >= self.refs.len() {
                self.refs.resize(k + 1, 0);
            }
            if u64::from(self.refs[k]) >= self.refcount_max.min(u64::from(u32::MAX)) {
                self.report.corrupt(format_args!(
                    "ERROR: overflow cluster offset={:#x}",
                    (k as u64) << self.cluster_bits
                ));
                continue;
            }
            self.refs[k] += 1;
        }
    }

    /// The walk reached its bound: an error that is always said, even past
    /// the bound on messages.
    pub(super) fn stop(&mut self, bound: u64, what: &str) {
        self.report.check_errors += 1;
        self.report
            .messages
            .push(format!("check stopped: more than {bound} {what} to visit"));
    }

    /// A corruption, counted and said.
    pub(super) fn corrupt(&mut self, msg: std::fmt::Arguments) {
        self.report.corrupt(msg);
    }

    /// Walk one L1 table; `active` gathers allocation figures as qemu-img
    /// does for the active table only. Returns the sorted host data clusters.
    pub(super) fn l1(
        &mut self,
        fig: &mut StateFigures,
        l1_offset: HostOffset,
        l1_size: u64,
        active: bool,
    ) -> Vec<u64> {
        self.inc(l1_offset, l1_size * 8);
        let mut data = Vec::new();
        if l1_size == 0 {
            return data;
        }
        let l1 = match L1Table::read(self.image.file(), l1_offset.0, l1_size, "L1 table") {
            Ok(t) => t,
            Err(e) => {
                self.report.check_errors += 1;
                self.report
                    .say(format_args!("ERROR: I/O error in check_refcounts_l1: {e}"));
                return data;
            }
        };
        fig.l1_size = l1_size;
        // Entries that are zero are unused; only the others are visited.
        fig.l1_unused += l1_size - l1.used().count() as u64;
        let mut walked: std::collections::HashSet<u64> = std::collections::HashSet::new();
        for (i, entry) in l1.used() {
            let f = l1_fields(entry);
            if f.reserved != 0 {
                fig.l1_invalid += 1;
                self.report.corrupt(format_args!(
                    "ERROR found L1 entry with reserved bits set: {entry:#x}"
                ));
            }
            let Some(l2) = f.l2 else {
                fig.l1_unused += 1;
                continue;
            };
            let l2_offset = l2.0;
            fig.l1_used += 1;
            self.inc(l2, self.cluster_size);
            if !l2.is_cluster_aligned(self.cluster_bits) {
                fig.l1_unaligned += 1;
                self.report.corrupt(format_args!(
                    "ERROR l2_offset={l2_offset:x}: Table is not cluster aligned; L1 entry corrupted"
                ));
            }
            if !walked.insert(l2_offset) {
                // Counted above; walking it again would only repeat the work.
                fig.l1_invalid += 1;
                self.report.corrupt(format_args!(
                    "ERROR l2_offset={l2_offset:x}: L2 table referenced twice by one L1 table (entry {i})"
                ));
                continue;
            }
            self.visited += self.image.header().l2_entries();
            if self.visited > MAX_CHECK_L2_ENTRIES {
                if self.visited - self.image.header().l2_entries() <= MAX_CHECK_L2_ENTRIES {
                    self.stop(MAX_CHECK_L2_ENTRIES, "L2 entries");
                }
                continue;
            }
            self.l2(fig, l2, i as usize, active, &mut data);
        }
        data.sort_unstable();
        data.dedup();
        data
    }

    pub(super) fn l2(
        &mut self,
        fig: &mut StateFigures,
        l2_offset: HostOffset,
        l1_index: usize,
        active: bool,
        data: &mut Vec<u64>,
    ) {
        let h = self.image.header();
        let ext = h.extended_l2();
        let table = match self
            .image
            .file()
            .read_vec(l2_offset.0, self.cluster_size, "L2 table")
        {
            Ok(b) => be64_table(&b),
            Err(e) => {
                self.report.check_errors += 1;
                self.report.say(format_args!(
                    "ERROR: I/O error in check_refcounts_l2 (L1[{l1_index}]): {e}"
                ));
                fig.l1_invalid += 1;
                return;
            }
        };
        let geo = self.image.compressed_geometry();
        let mut next_contiguous = 0u64;
        for i in 0..h.l2_entries() {
            let (entry, bitmap) = l2_words(&table, i, ext);
            let f = l2_fields(entry, bitmap, geo);
            match f.kind {
                L2Kind::Compressed { .. } => self.compressed_entry(fig, i, entry, f, active, data),
                L2Kind::Standard { .. } => {
                    self.standard_entry(fig, entry, f, active, data, &mut next_contiguous)
                }
            }
        }
    }

    /// Count a compressed cluster's entry: the host clusters its bytes touch.
    fn compressed_entry(
        &mut self,
        fig: &mut StateFigures,
        i: u64,
        entry: u64,
        f: L2Fields,
        active: bool,
        data: &mut Vec<u64>,
    ) {
        let L2Kind::Compressed {
            host,
            len,
            descriptor,
        } = f.kind
        else {
            return;
        };
        let has_data_file = self.image.header().incompatible_features & INCOMPAT_DATA_FILE != 0;
        fig.l2_used += 1;
        fig.l2_compressed += 1;
        if f.copied {
            fig.l2_invalid += 1;
            self.report.corrupt(format_args!(
                "ERROR: coffset={descriptor:#x}: copied flag must never be set for compressed clusters"
            ));
        }
        if has_data_file {
            self.report.corrupt(format_args!(
                "ERROR compressed cluster {i} with data file, entry={entry:#x}"
            ));
        }
        if f.bitmap != 0 {
            self.report.corrupt(format_args!(
                "ERROR compressed cluster {i} with non-zero subcluster allocation bitmap, entry={entry:#x}"
            ));
        }
        self.inc(host, len);
        let first = host.0 >> self.cluster_bits;
        let last = (host.0 + len - 1) >> self.cluster_bits;
        data.extend(first..=last);
        if active {
            self.report.allocated_clusters += 1;
            self.report.compressed_clusters += 1;
            self.report.fragmented_clusters += 1;
        }
    }

    /// Count a standard entry: unallocated, zero, or a host cluster (which
    /// `next_contiguous`, the cluster after the last one, tells fragmented).
    fn standard_entry(
        &mut self,
        fig: &mut StateFigures,
        entry: u64,
        f: L2Fields,
        active: bool,
        data: &mut Vec<u64>,
        next_contiguous: &mut u64,
    ) {
        let L2Kind::Standard {
            host,
            zero,
            reserved,
            subclusters,
        } = f.kind
        else {
            return;
        };
        let has_data_file = self.image.header().incompatible_features & INCOMPAT_DATA_FILE != 0;
        if reserved != 0 {
            fig.l2_invalid += 1;
            self.report.corrupt(format_args!(
                "ERROR found l2 entry with reserved bits set: {entry:#x}"
            ));
        }
        let allocates = subclusters.is_some_and(|s| s.alloc != 0);
        let Some(host) = host else {
            if zero {
                fig.l2_used += 1;
                fig.l2_zero += 1;
            } else {
                if allocates {
                    fig.l2_invalid += 1;
                    self.report.corrupt(format_args!(
                        "ERROR: Unallocated cluster has non-zero subcluster allocation map"
                    ));
                }
                if subclusters.is_some_and(SubclusterBits::any) {
                    fig.l2_used += 1;
                    fig.l2_zero += 1;
                } else {
                    fig.l2_unused += 1;
                }
            }
            return;
        };
        let offset = host.0;
        fig.l2_used += 1;
        if zero {
            fig.l2_zero += 1;
        }
        if subclusters.is_some_and(|s| s.alloc & s.zero != 0) {
            fig.l2_invalid += 1;
            self.report.corrupt(format_args!(
                "ERROR offset={offset:x}: Allocated cluster has corrupted subcluster allocation bitmap"
            ));
        }
        if !host.is_cluster_aligned(self.cluster_bits) {
            fig.l2_unaligned += 1;
            let contains_data = match subclusters {
                Some(_) => allocates,
                None => !zero,
            };
            let kind = if contains_data {
                "Data"
            } else {
                "Preallocated"
            };
            self.report.corrupt(format_args!(
                "ERROR offset={offset:x}: {kind} cluster is not properly aligned; L2 entry corrupted."
            ));
            if !contains_data {
                return;
            }
        }
        if active {
            self.report.allocated_clusters += 1;
            if *next_contiguous != 0 && offset != *next_contiguous {
                self.report.fragmented_clusters += 1;
            }
            *next_contiguous = offset + self.cluster_size;
        }
        if !has_data_file {
            self.inc(host, self.cluster_size);
            data.push(offset >> self.cluster_bits);
        }
    }
}
