//! The snapshot table (docs/interop/qcow2.txt, "Snapshots").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::qcow2::be::Be;
use crate::qcow2::header::{Header, MAX_L1_BYTES, MAX_SNAPSHOT_TABLE_BYTES, SECTOR_SIZE};
use crate::qcow2::table::validate_table;
use crate::source::{PastEnd, SourceFile};

/// Fixed part of a snapshot table entry, before extra data, id and name.
const SNAPSHOT_ENTRY_FIXED: usize = 40;
/// QEMU caps a snapshot entry's extra data at 1 KiB (QCOW_MAX_SNAPSHOT_EXTRA_DATA).
pub const MAX_SNAPSHOT_EXTRA_DATA: u32 = 1024;
/// Extra data a version 3 entry must have: the VM state size and the disk
/// size, 8 bytes each. An entry with less is incomplete.
pub const V3_EXTRA_DATA: usize = 16;

/// One internal snapshot, as its table entry describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Position in the snapshot table (0-based).
    pub index: usize,
    /// Offset of the snapshot's L1 table.
    pub l1_table_offset: u64,
    /// Number of entries in its L1 table.
    pub l1_size: u32,
    /// Unique ID string.
    pub id: String,
    /// Name (may be empty or duplicated).
    pub name: String,
    /// Seconds since the epoch when it was taken.
    pub date_sec: u32,
    /// Nanosecond part of the date.
    pub date_nsec: u32,
    /// Guest run time in nanoseconds when it was taken.
    pub vm_clock_nsec: u64,
    /// Saved VM state size in bytes (0: none).
    pub vm_state_size: u64,
    /// The snapshot's own virtual disk size.
    pub disk_size: u64,
    /// Instruction count, when recorded (-1 when not).
    pub icount: Option<u64>,
    /// Bytes of extra data in the entry.
    pub extra_data_size: u32,
}

impl Snapshot {
    /// When the snapshot was taken.
    pub fn date(&self) -> SystemTime {
        date(self.date_sec, self.date_nsec)
    }
}

/// A snapshot table date (seconds and nanoseconds since the epoch, UTC) as
/// a time; a nanosecond field out of range is clamped.
pub fn date(sec: u32, nsec: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(u64::from(sec), nsec.min(999_999_999))
}

/// Reads a table of unknown length in growing pieces, never past `limit`
/// bytes, so a small table costs a small read and a huge one stops at the
/// named bound.
struct GrowingRead<'a> {
    file: &'a SourceFile,
    start: u64,
    limit: u64,
    buf: Vec<u8>,
}

impl GrowingRead<'_> {
    fn need(&mut self, end: usize) -> Result<()> {
        if end <= self.buf.len() {
            return Ok(());
        }
        if end as u64 > self.limit {
            return Err(Error::corrupt(
                "snapshot table",
                "entry runs past its limit",
            ));
        }
        let new_len = (end.max(self.buf.len() * 2).max(4096) as u64).min(self.limit);
        let old_len = self.buf.len();
        self.buf.resize(new_len as usize, 0);
        self.file.read_exact_at(
            &mut self.buf[old_len..],
            self.start + old_len as u64,
            "snapshot table",
        )
    }
}

/// Read and validate the snapshot table. Returns the snapshots and the
/// table's size in bytes.
///
/// A file that reads zeros past its end is read for the check: entries are
/// kept as they are, zeros included, and the check judges them as
/// `qemu-img check` does (incomplete entries, unaligned or oversized L1
/// tables); otherwise each of those is an error here.
pub fn read_snapshots(file: &SourceFile, h: &Header) -> Result<(Vec<Snapshot>, u64)> {
    if h.nb_snapshots == 0 {
        return Ok((Vec::new(), 0));
    }
    let mut table = GrowingRead {
        file,
        start: h.snapshots_offset,
        limit: table_room(file, h)?,
        buf: Vec::new(),
    };
    let mut snaps = Vec::with_capacity(h.nb_snapshots as usize);
    let mut off = 0usize;
    for index in 0..h.nb_snapshots as usize {
        let (snap, end) = read_entry(&mut table, h, index, off)?;
        snaps.push(snap);
        off = end.div_ceil(8) * 8;
    }
    Ok((snaps, off as u64))
}

/// The bytes the snapshot table may take: its length is only known after
/// walking it, so it is read up to the named limit, clipped to the file.
fn table_room(file: &SourceFile, h: &Header) -> Result<u64> {
    let room = file
        .readable_len()
        .checked_sub(h.snapshots_offset)
        .ok_or_else(|| Error::PastEof {
            what: "snapshot table".into(),
            offset: h.snapshots_offset,
            len: 0,
            file_len: file.len(),
        })?
        .min(MAX_SNAPSHOT_TABLE_BYTES);
    validate_table(
        file,
        h.cluster_bits,
        "snapshot table",
        h.snapshots_offset,
        room,
        MAX_SNAPSHOT_TABLE_BYTES,
    )?;
    Ok(room)
}

/// Entry `index` of the snapshot table, at byte `off` of it; with the byte
/// where the entry ends (the next one starts at the next multiple of 8).
fn read_entry(
    table: &mut GrowingRead,
    h: &Header,
    index: usize,
    off: usize,
) -> Result<(Snapshot, usize)> {
    let for_check = table.file.past_end() == PastEnd::Zeros;
    let what = format!(
        "snapshot table at {:#x}: entry {index} at byte {off}",
        h.snapshots_offset
    );
    let truncated = |needed: usize| {
        if needed as u64 > MAX_SNAPSHOT_TABLE_BYTES {
            Error::TooLarge {
                what: "snapshot table size",
                value: needed as u64,
                limit: MAX_SNAPSHOT_TABLE_BYTES,
            }
        } else {
            Error::corrupt(what.clone(), "runs past the end of the file")
        }
    };
    // The fixed part tells how long the rest of the entry is.
    let fixed_end = off + SNAPSHOT_ENTRY_FIXED;
    table.need(fixed_end).map_err(|_| truncated(fixed_end))?;
    let fixed = Be::new(&table.buf, "snapshot table").bytes(off, SNAPSHOT_ENTRY_FIXED)?;
    let e = Be::new(fixed, &what);
    let l1_table_offset = e.u64(0)?;
    let l1_size = e.u32(8)?;
    let id_str_size = e.u16(12)? as usize;
    let name_size = e.u16(14)? as usize;
    let date_sec = e.u32(16)?;
    let date_nsec = e.u32(20)?;
    let vm_clock_nsec = e.u64(24)?;
    let vm_state_size32 = e.u32(32)?;
    let extra_data_size = e.u32(36)?;
    if extra_data_size > MAX_SNAPSHOT_EXTRA_DATA {
        return Err(Error::TooLarge {
            what: "snapshot extra_data_size",
            value: u64::from(extra_data_size),
            limit: u64::from(MAX_SNAPSHOT_EXTRA_DATA),
        });
    }
    let extra_len = extra_data_size as usize;
    let extra_off = off + SNAPSHOT_ENTRY_FIXED;
    let end = extra_off + extra_len + id_str_size + name_size;
    table.need(end).map_err(|_| truncated(end))?;
    let be = Be::new(&table.buf, "snapshot table");
    if h.version >= 3 && extra_len < V3_EXTRA_DATA && !for_check {
        return Err(Error::corrupt(
            what.clone(),
            format!("extra_data_size {extra_len} is below the 16 bytes version 3 requires"),
        ));
    }
    let extra = Extra::decode(&Be::new(be.bytes(extra_off, extra_len)?, &what), h)?;
    let id_off = extra_off + extra_len;
    let id = be.bytes(id_off, id_str_size)?;
    let name = be.bytes(id_off + id_str_size, name_size)?;
    if !for_check {
        validate_l1(
            table.file,
            h,
            &what,
            l1_table_offset,
            l1_size,
            extra.disk_size,
        )?;
    }
    let snap = Snapshot {
        index,
        l1_table_offset,
        l1_size,
        id: String::from_utf8_lossy(id).into_owned(),
        name: String::from_utf8_lossy(name).into_owned(),
        date_sec,
        date_nsec,
        vm_clock_nsec,
        vm_state_size: extra.vm_state_size.unwrap_or(u64::from(vm_state_size32)),
        disk_size: extra.disk_size,
        icount: extra.icount,
        extra_data_size,
    };
    Ok((snap, end))
}

/// The fields of an entry's extra data, each present only when the extra
/// data is long enough to hold it.
struct Extra {
    /// The 64-bit VM state size (else the 32-bit field of the fixed part).
    vm_state_size: Option<u64>,
    /// The snapshot's disk size (else the image's).
    disk_size: u64,
    /// The instruction count, unless absent or -1.
    icount: Option<u64>,
}

impl Extra {
    fn decode(extra: &Be<'_>, h: &Header) -> Result<Extra> {
        let len = extra.len();
        Ok(Extra {
            vm_state_size: if len >= 8 { Some(extra.u64(0)?) } else { None },
            disk_size: if len >= 16 {
                extra.u64(8)? & !(SECTOR_SIZE - 1)
            } else {
                h.size
            },
            icount: if len >= 24 {
                Some(extra.u64(16)?).filter(|&c| c != u64::MAX)
            } else {
                None
            },
        })
    }
}

/// A snapshot's L1 table: aligned, within the size limit, inside the file,
/// and large enough to map the snapshot's disk.
fn validate_l1(
    file: &SourceFile,
    h: &Header,
    what: &str,
    l1_table_offset: u64,
    l1_size: u32,
    disk_size: u64,
) -> Result<()> {
    validate_table(
        file,
        h.cluster_bits,
        "snapshot L1 table",
        l1_table_offset,
        u64::from(l1_size) * 8,
        MAX_L1_BYTES,
    )
    .map_err(|err| Error::corrupt(what, err.to_string()))?;
    if disk_size.div_ceil(h.l1_coverage()) > u64::from(l1_size) {
        return Err(Error::corrupt(
            what,
            format!("l1_size {l1_size} cannot map its disk size of {disk_size} bytes"),
        ));
    }
    Ok(())
}
