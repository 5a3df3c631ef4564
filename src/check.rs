//! Consistency check, counted as `qemu-img check` counts: every reference to
//! a host cluster is tallied from the L1/L2 tables of every state, the
//! snapshot table, the persistent bitmaps and the refcount structures, then
//! compared with the stored refcounts. The walk also gathers the per-state figures `info` reports.

use std::sync::Arc;

use crate::error::Result;
use crate::image::Image;
use crate::qcow2::be::{Be, be64_table};
use crate::qcow2::cluster::{
    L1E_OFFSET_MASK, L2E_OFFSET_MASK, QCOW_OFLAG_COMPRESSED, QCOW_OFLAG_COPIED, REFT_OFFSET_MASK,
};
use crate::qcow2::header::{AUTOCLEAR_BITMAPS, BitmapDirectory, INCOMPAT_DATA_FILE};
use crate::qcow2::refcount::Refcounts;

/// L1 entry bits that must be zero (1-8 and 56-62).
const L1E_RESERVED_MASK: u64 = 0x7f00_0000_0000_01ff;
/// Standard L2 entry bits that must be zero (1-8 and 56-61).
const L2E_STD_RESERVED_MASK: u64 = 0x3f00_0000_0000_01fe;
/// Refcount table entry bits that must be zero (0-8).
const REFT_RESERVED_MASK: u64 = 0x1ff;
/// Bound on the messages kept; counts go on past it.
const MAX_MESSAGES: usize = 1000;
/// Bound on the L2 entries one check visits (2^30, a few seconds of work):
/// past it the check stops as incomplete rather than spin on a crafted
/// image whose snapshot tables all point at the same huge tables.
pub const MAX_CHECK_L2_ENTRIES: u64 = 1 << 30;
/// The largest bitmap directory QEMU accepts (1 KiB for each of 65535
/// bitmaps); a larger one is reported, not read.
pub const MAX_BITMAP_DIRECTORY_BYTES: u64 = 1024 * 65535;
/// The most entries one bitmap table may have (as QEMU).
const MAX_BITMAP_TABLE_ENTRIES: u64 = 0x800_0000;
/// Bitmap table entry bits that must be zero (1-8 and 56-63).
const BME_RESERVED_MASK: u64 = 0xff00_0000_0000_01fe;
/// Bitmap table entry bits holding the data cluster's offset.
const BME_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bound on the bitmap table entries one check visits (2^24: 512 bitmaps
/// of a 1 PiB disk at the default granularity); past it the check stops as
/// incomplete.
pub const MAX_CHECK_BITMAP_ENTRIES: u64 = 1 << 24;
/// Bitmap table entries read at a time.
const BITMAP_TABLE_CHUNK: u64 = 8192;

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
    pub corruptions: u64,
    pub leaks: u64,
    pub check_errors: u64,
    /// QCOW_OFLAG_COPIED mismatches (counted among the corruptions too).
    pub oflag_copied_mismatches: u64,
    /// Guest clusters allocated in the active state.
    pub allocated_clusters: u64,
    /// Guest clusters of the active state's virtual size.
    pub total_clusters: u64,
    pub compressed_clusters: u64,
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

    /// Keep a message, formatted only while there is room for it.
    fn say(&mut self, msg: std::fmt::Arguments) {
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(msg.to_string());
        }
    }
}

struct Walk<'a> {
    image: &'a Image,
    cluster_bits: u32,
    cluster_size: u64,
    file_len: u64,
    refcount_max: u64,
    /// References counted per host cluster (4 bytes per cluster of the
    /// file: the check's memory bound).
    refs: Vec<u32>,
    /// L2 entries visited so far.
    visited: u64,
    /// Bitmap table entries visited so far.
    bitmap_entries: u64,
    report: CheckReport,
}

impl Walk<'_> {
    /// Count one reference to every cluster touched by `[offset, offset+size)`.
    fn inc(&mut self, offset: u64, size: u64) {
        if size == 0 {
            return;
        }
        let end = offset.saturating_add(size);
        if end.saturating_sub(self.file_len) >= self.cluster_size {
            self.report.corruptions += 1;
            self.report.say(format_args!(
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
                self.report.corruptions += 1;
                self.report.say(format_args!(
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
    fn stop(&mut self, bound: u64, what: &str) {
        self.report.check_errors += 1;
        self.report
            .messages
            .push(format!("check stopped: more than {bound} {what} to visit"));
    }

    /// A corruption, counted and said.
    fn corrupt(&mut self, msg: std::fmt::Arguments) {
        self.report.corruptions += 1;
        self.report.say(msg);
    }

    /// Count the bitmap directory, every bitmap table and every bitmap data
    /// cluster. Tables are read a chunk at a time; their entries share the
    /// walk's bound on visited entries.
    fn bitmaps(&mut self, dir: &BitmapDirectory) {
        self.inc(dir.offset, dir.size);
        if dir.size > MAX_BITMAP_DIRECTORY_BYTES || dir.offset & (self.cluster_size - 1) != 0 {
            return self.corrupt(format_args!(
                "ERROR bitmap directory of {} bytes at {:#x} is invalid",
                dir.size, dir.offset
            ));
        }
        let bytes = match self
            .image
            .file()
            .read_vec(dir.offset, dir.size, "bitmap directory")
        {
            Ok(b) => b,
            Err(e) => return self.corrupt(format_args!("ERROR {e}")),
        };
        let dir_bytes = Be::new(&bytes, "bitmap directory");
        let mut pos = 0usize;
        for i in 0..dir.count {
            // The entry's fixed 24 bytes; the last field read ends them.
            let fields = (|| -> Result<_> {
                Ok((
                    dir_bytes.u64(pos)?,
                    u64::from(dir_bytes.u32(pos + 8)?),
                    usize::from(dir_bytes.u16(pos + 18)?),
                    dir_bytes.u32(pos + 20)? as usize,
                ))
            })();
            let Ok((table_offset, table_size, name_size, extra_size)) = fields else {
                return self.corrupt(format_args!(
                    "ERROR bitmap {i} lies past the bitmap directory"
                ));
            };
            pos += (24 + name_size + extra_size).div_ceil(8) * 8;
            if table_size > MAX_BITMAP_TABLE_ENTRIES || table_offset & (self.cluster_size - 1) != 0
            {
                self.corrupt(format_args!(
                    "ERROR bitmap {i}: table of {table_size} entries at {table_offset:#x} is invalid"
                ));
                continue;
            }
            self.inc(table_offset, table_size * 8);
            self.bitmap_table(i, table_offset, table_size);
        }
    }

    fn bitmap_table(&mut self, bitmap: u32, offset: u64, entries: u64) {
        let mut done = 0;
        while done < entries {
            let n = (entries - done).min(BITMAP_TABLE_CHUNK);
            if self.bitmap_entries > MAX_CHECK_BITMAP_ENTRIES {
                return; // already reported
            }
            self.bitmap_entries += n;
            if self.bitmap_entries > MAX_CHECK_BITMAP_ENTRIES {
                return self.stop(MAX_CHECK_BITMAP_ENTRIES, "bitmap table entries");
            }
            let at = offset + done * 8;
            let table = match self.image.file().read_vec(at, n * 8, "bitmap table") {
                Ok(b) => be64_table(&b),
                Err(e) => return self.corrupt(format_args!("ERROR bitmap {bitmap}: {e}")),
            };
            for e in table {
                let data = e & BME_OFFSET_MASK;
                if e & BME_RESERVED_MASK != 0 || data & (self.cluster_size - 1) != 0 {
                    self.corrupt(format_args!(
                        "ERROR bitmap {bitmap}: invalid table entry {e:#x}"
                    ));
                } else if data != 0 {
                    self.inc(data, self.cluster_size);
                }
            }
            done += n;
        }
    }

    /// Walk one L1 table; `active` gathers allocation figures as qemu-img
    /// does for the active table only. Returns the sorted host data clusters.
    fn l1(
        &mut self,
        fig: &mut StateFigures,
        l1_offset: u64,
        l1_size: u64,
        active: bool,
    ) -> Vec<u64> {
        self.inc(l1_offset, l1_size * 8);
        let mut data = Vec::new();
        if l1_size == 0 {
            return data;
        }
        let l1 = match self
            .image
            .file()
            .read_vec(l1_offset, l1_size * 8, "L1 table")
        {
            Ok(b) => be64_table(&b),
            Err(e) => {
                self.report.check_errors += 1;
                self.report
                    .say(format_args!("ERROR: I/O error in check_refcounts_l1: {e}"));
                return data;
            }
        };
        fig.l1_size = l1_size;
        let mut walked: std::collections::HashSet<u64> = std::collections::HashSet::new();
        for (i, &entry) in l1.iter().enumerate() {
            if entry & L1E_RESERVED_MASK != 0 {
                self.report.corruptions += 1;
                fig.l1_invalid += 1;
                self.report.say(format_args!(
                    "ERROR found L1 entry with reserved bits set: {entry:#x}"
                ));
            }
            let l2_offset = entry & L1E_OFFSET_MASK;
            if l2_offset == 0 {
                fig.l1_unused += 1;
                continue;
            }
            fig.l1_used += 1;
            self.inc(l2_offset, self.cluster_size);
            if l2_offset & (self.cluster_size - 1) != 0 {
                fig.l1_unaligned += 1;
                self.report.corruptions += 1;
                self.report.say(format_args!(
                    "ERROR l2_offset={l2_offset:x}: Table is not cluster aligned; L1 entry corrupted"
                ));
            }
            if !walked.insert(l2_offset) {
                // Counted above; walking it again would only repeat the work.
                fig.l1_invalid += 1;
                self.report.corruptions += 1;
                if self.report.messages.len() < MAX_MESSAGES {
                    self.report.say(format_args!(
                        "ERROR l2_offset={l2_offset:x}: L2 table referenced twice by one L1 table (entry {i})"
                    ));
                }
                continue;
            }
            self.visited += self.image.header().l2_entries();
            if self.visited > MAX_CHECK_L2_ENTRIES {
                if self.visited - self.image.header().l2_entries() <= MAX_CHECK_L2_ENTRIES {
                    self.stop(MAX_CHECK_L2_ENTRIES, "L2 entries");
                }
                continue;
            }
            self.l2(fig, l2_offset, i, active, &mut data);
        }
        data.sort_unstable();
        data.dedup();
        data
    }

    fn l2(
        &mut self,
        fig: &mut StateFigures,
        l2_offset: u64,
        l1_index: usize,
        active: bool,
        data: &mut Vec<u64>,
    ) {
        let h = self.image.header();
        let ext = h.extended_l2();
        let has_data_file = h.incompatible_features & INCOMPAT_DATA_FILE != 0;
        let geo = self.image.compressed_geometry();
        let table = match self
            .image
            .file()
            .read_vec(l2_offset, self.cluster_size, "L2 table")
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
        let stride = if ext { 2 } else { 1 };
        let mut next_contiguous = 0u64;
        for i in 0..h.l2_entries() as usize {
            let entry = table.get(i * stride).copied().unwrap_or(0);
            let bitmap = if ext {
                table.get(i * stride + 1).copied().unwrap_or(0)
            } else {
                0
            };
            if entry & QCOW_OFLAG_COMPRESSED != 0 {
                fig.l2_used += 1;
                fig.l2_compressed += 1;
                if entry & QCOW_OFLAG_COPIED != 0 {
                    self.report.corruptions += 1;
                    fig.l2_invalid += 1;
                    self.report.say(format_args!(
                        "ERROR: coffset={:#x}: copied flag must never be set for compressed clusters",
                        entry & !QCOW_OFLAG_COPIED & !QCOW_OFLAG_COMPRESSED
                    ));
                }
                if has_data_file {
                    self.report.corruptions += 1;
                    self.report.say(format_args!(
                        "ERROR compressed cluster {i} with data file, entry={entry:#x}"
                    ));
                }
                if bitmap != 0 {
                    self.report.corruptions += 1;
                    self.report.say(format_args!(
                        "ERROR compressed cluster {i} with non-zero subcluster allocation bitmap, entry={entry:#x}"
                    ));
                }
                let entry = crate::qcow2::cluster::decode_l2(
                    entry & !QCOW_OFLAG_COPIED,
                    None,
                    self.cluster_bits,
                    geo,
                    &String::new,
                );
                if let Ok(crate::qcow2::cluster::L2Entry::Compressed { host, len }) = entry {
                    self.inc(host.0, len);
                    let first = host.0 >> self.cluster_bits;
                    let last = (host.0 + len - 1) >> self.cluster_bits;
                    data.extend(first..=last);
                }
                if active {
                    self.report.allocated_clusters += 1;
                    self.report.compressed_clusters += 1;
                    self.report.fragmented_clusters += 1;
                }
                continue;
            }
            if entry & L2E_STD_RESERVED_MASK != 0 {
                self.report.corruptions += 1;
                fig.l2_invalid += 1;
                self.report.say(format_args!(
                    "ERROR found l2 entry with reserved bits set: {entry:#x}"
                ));
            }
            let offset = entry & L2E_OFFSET_MASK;
            let zero_flag = !ext && entry & 1 != 0;
            if offset == 0 {
                if zero_flag {
                    fig.l2_used += 1;
                    fig.l2_zero += 1;
                } else {
                    if ext && bitmap & 0xffff_ffff != 0 {
                        self.report.corruptions += 1;
                        fig.l2_invalid += 1;
                        self.report.say(format_args!(
                            "ERROR: Unallocated cluster has non-zero subcluster allocation map"
                        ));
                    }
                    if ext && bitmap != 0 {
                        fig.l2_used += 1;
                        fig.l2_zero += 1;
                    } else {
                        fig.l2_unused += 1;
                    }
                }
                continue;
            }
            fig.l2_used += 1;
            if zero_flag {
                fig.l2_zero += 1;
            }
            if ext && (bitmap >> 32) & bitmap != 0 {
                self.report.corruptions += 1;
                fig.l2_invalid += 1;
                self.report.say(format_args!(
                    "ERROR offset={offset:x}: Allocated cluster has corrupted subcluster allocation bitmap"
                ));
            }
            if offset & (self.cluster_size - 1) != 0 {
                self.report.corruptions += 1;
                fig.l2_unaligned += 1;
                let contains_data = if ext {
                    bitmap & 0xffff_ffff != 0
                } else {
                    !zero_flag
                };
                if !contains_data {
                    self.report.say(format_args!(
                        "ERROR offset={offset:x}: Preallocated cluster is not properly aligned; L2 entry corrupted."
                    ));
                    continue;
                }
                self.report.say(format_args!(
                    "ERROR offset={offset:x}: Data cluster is not properly aligned; L2 entry corrupted."
                ));
            }
            if active {
                self.report.allocated_clusters += 1;
                if next_contiguous != 0 && offset != next_contiguous {
                    self.report.fragmented_clusters += 1;
                }
                next_contiguous = offset + self.cluster_size;
            }
            if !has_data_file {
                self.inc(offset, self.cluster_size);
                data.push(offset >> self.cluster_bits);
            }
        }
    }
}

/// Check `image` as `qemu-img check` does, and gather the figures of `info`.
pub fn check(image: &Arc<Image>) -> Result<CheckReport> {
    let h = image.header();
    let file_len = image.file().len();
    let cluster_size = h.cluster_size();
    let nb_clusters = file_len.div_ceil(cluster_size) as usize;
    let refcount_max = if h.refcount_order >= 6 {
        u64::MAX
    } else {
        (1u64 << h.refcount_bits()) - 1
    };
    let mut w = Walk {
        image,
        cluster_bits: h.cluster_bits,
        cluster_size,
        file_len,
        refcount_max,
        refs: vec![0; nb_clusters],
        visited: 0,
        bitmap_entries: 0,
        report: CheckReport {
            total_clusters: h.size.div_ceil(cluster_size),
            ..CheckReport::default()
        },
    };
    w.inc(0, cluster_size);
    let mut fig = StateFigures {
        label: "active".into(),
        ..StateFigures::default()
    };
    let active = w.l1(&mut fig, h.l1_table_offset, u64::from(h.l1_size), true);
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
        let data = w.l1(&mut fig, sn.l1_table_offset, u64::from(sn.l1_size), false);
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
    drop(lists);
    w.inc(h.snapshots_offset, image.snapshot_table_bytes());
    w.inc(
        h.refcount_table_offset,
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
    w.report.reftable_entries = refcounts.table().len() as u64;
    for (i, &entry) in refcounts.table().iter().enumerate() {
        let offset = entry & REFT_OFFSET_MASK;
        if entry & REFT_RESERVED_MASK != 0 {
            w.report.corruptions += 1;
            w.report.say(format_args!(
                "ERROR refcount table entry {i} has reserved bits set"
            ));
            continue;
        }
        if offset & (cluster_size - 1) != 0 {
            w.report.corruptions += 1;
            w.report.say(format_args!(
                "ERROR refcount block {i} is not cluster aligned; refcount table entry corrupted"
            ));
            continue;
        }
        let cluster = offset >> h.cluster_bits;
        if cluster >= w.refs.len() as u64 {
            w.report.corruptions += 1;
            w.report
                .say(format_args!("ERROR refcount block {i} is outside image"));
            continue;
        }
        if offset != 0 {
            w.report.reftable_used += 1;
            w.inc(offset, cluster_size);
            let counted = u64::from(w.refs[cluster as usize]);
            if counted != 1 {
                w.report.corruptions += 1;
                w.report
                    .say(format_args!("ERROR refcount block {i} refcount={counted}"));
            }
        }
    }

    // Compare the counted references with the stored refcounts.
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
                w.report.corruptions += 1;
                w.report.say(format_args!(
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
    w.report.image_end_offset = (highest + 1) * cluster_size;
    check_oflag_copied(image, &refcounts, &mut w.report);

    snapshot_clusters.sort_unstable();
    snapshot_clusters.dedup();
    w.report.active_clusters = active.len() as u64;
    w.report.inactive_clusters = count_not_in(&snapshot_clusters, &active);
    w.report.states = states;
    Ok(w.report)
}

/// Bit 63 of active L1 and L2 entries must be set exactly when the stored
/// refcount is one.
fn check_oflag_copied(image: &Image, refcounts: &Refcounts, report: &mut CheckReport) {
    let h = image.header();
    if h.incompatible_features & INCOMPAT_DATA_FILE != 0 {
        return;
    }
    let stride = if h.extended_l2() { 2 } else { 1 };
    let mut walked: std::collections::HashSet<u64> = std::collections::HashSet::new();
    for (i, &l1_entry) in image.active_l1().iter().enumerate() {
        let l2_offset = l1_entry & L1E_OFFSET_MASK;
        // A table met twice was reported by the reference walk.
        if l2_offset == 0 || !walked.insert(l2_offset) {
            continue;
        }
        let Ok(rc) = refcounts.get(l2_offset >> h.cluster_bits) else {
            continue;
        };
        if (rc == 1) != (l1_entry & QCOW_OFLAG_COPIED != 0) {
            report.corruptions += 1;
            report.oflag_copied_mismatches += 1;
            report.say(format_args!(
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
                report.corruptions += 1;
                report.oflag_copied_mismatches += 1;
                report.say(format_args!(
                    "ERROR OFLAG_COPIED data cluster: l2_entry={entry:x} refcount={rc}"
                ));
            }
        }
    }
}

/// How many of the sorted, distinct `a` are not in the sorted `b`.
fn count_not_in(a: &[u64], b: &[u64]) -> u64 {
    a.iter().filter(|x| b.binary_search(x).is_err()).count() as u64
}
