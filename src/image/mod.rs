//! An opened qcow2 image: header, snapshot table, backing file, and the
//! states it holds (each state's L1 table is read when the state is
//! opened, not kept with the image).
//!
//! "Where is snapshot X's cluster c read" is answered in `state.rs`:
//! [`State::runs`] walks the state's L1 table and the cached L2 tables and
//! says what each run of guest bytes is (a [`Mapping`]);
//! [`State::read_mapped`] turns runs into bytes, inflating the compressed
//! clusters of a window side by side (`inflate.rs`), and going to the
//! backing file (`backing.rs`) for what the image does not hold.
//! `refcounts.rs` reads the stored refcounts, for the check.

mod backing;
mod inflate;
pub mod lock;
mod refcounts;
mod state;

pub use crate::qcow2::cluster::Mapping;
pub use backing::{Backing, MAX_BACKING_CHAIN, inside, resolve_name};
use backing::{check_inside, open_backing};
pub use inflate::Inflater;
pub use refcounts::Refcounts;
pub use state::{Run, State, VmState};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cache::Caches;
use crate::error::{Error, Result};
use crate::qcow2::be::be64_table;
use crate::qcow2::cluster::{self, CompressedGeometry, L2Entry};
use crate::qcow2::compress::decompress;
use crate::qcow2::header::{Header, INCOMPAT_DATA_FILE, QCOW2_MAGIC};
use crate::qcow2::l1::L1Table;
use crate::qcow2::offsets::HostOffset;
use crate::qcow2::snapshot::{Snapshot, read_snapshots};
use crate::source::{PastEnd, SourceFile};

static NEXT_IMAGE_ID: AtomicU64 = AtomicU64::new(1);

/// How images (and their backing files) are opened.
#[derive(Clone)]
pub struct OpenOptions {
    /// Caches shared by every image opened with these options.
    pub caches: Arc<Caches>,
    /// When set, backing files must resolve to a path inside this folder.
    pub backing_root: Option<PathBuf>,
    /// What reads past the end of a file give: errors to serve the image,
    /// zeros to check it as `qemu-img check` does.
    pub past_end: PastEnd,
    /// The threads that inflate compressed clusters side by side for every
    /// image opened with these options.
    pub inflater: Arc<Inflater>,
}

impl OpenOptions {
    /// Options with fresh caches of `cache_bytes` and no backing restriction.
    pub fn new(cache_bytes: u64) -> OpenOptions {
        OpenOptions {
            caches: Caches::new(cache_bytes),
            backing_root: None,
            past_end: PastEnd::Error,
            inflater: Inflater::new(),
        }
    }

    /// Options to check an image as `qemu-img check` reads it: structures
    /// past the end of the file read as zeros, snapshot entries are kept as
    /// they are for the check to judge.
    pub fn for_check(cache_bytes: u64) -> OpenOptions {
        OpenOptions {
            past_end: PastEnd::Zeros,
            ..OpenOptions::new(cache_bytes)
        }
    }
}

/// An open qcow2 image: header, snapshot table and backing file.
pub struct Image {
    id: u64,
    file: SourceFile,
    data_file: Option<SourceFile>,
    header: Header,
    snapshots: Vec<Snapshot>,
    snapshot_table_bytes: u64,
    backing: Option<Backing>,
    caches: Arc<Caches>,
    inflater: Arc<Inflater>,
    geo: CompressedGeometry,
    /// Data clusters read so far (a run of uncompressed ones counts once,
    /// a compressed one each time it is inflated): what shows that work
    /// on metadata alone reads no data.
    data_reads: AtomicU64,
}

/// Which state of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateId {
    /// The current state, as the VM sees it.
    Active,
    /// The snapshot at this index of the snapshot table.
    Snapshot(usize),
}

/// True when the file at `path` starts with the qcow2 magic.
pub fn is_qcow2(path: &Path) -> bool {
    let Ok(f) = SourceFile::open(path) else {
        return false;
    };
    let mut magic = [0u8; 4];
    f.read_exact_at(&mut magic, 0, "magic").is_ok() && u32::from_be_bytes(magic) == QCOW2_MAGIC
}

impl Image {
    /// Open the qcow2 image at `path` read-only, with its backing chain.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Arc<Image>> {
        Image::open_in_chain(path, opts, &mut Vec::new())
    }

    fn open_in_chain(
        path: &Path,
        opts: &OpenOptions,
        chain: &mut Vec<PathBuf>,
    ) -> Result<Arc<Image>> {
        let file = SourceFile::open_reading(path, opts.past_end)?;
        let header = Header::read(&file)?;
        let (snapshots, snapshot_table_bytes) = read_snapshots(&file, &header)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let data_file = match (
            &header.data_file,
            header.incompatible_features & INCOMPAT_DATA_FILE != 0,
        ) {
            (Some(name), true) => {
                let p = resolve_name(dir, name);
                check_inside(&p, opts)?;
                Some(SourceFile::open_reading(&p, opts.past_end)?)
            }
            _ => None,
        };
        if data_file.is_some() && !snapshots.is_empty() {
            return Err(Error::corrupt(
                "snapshot table",
                "an image with an external data file cannot have internal snapshots",
            ));
        }
        let backing = match &header.backing_file {
            Some(name) => {
                let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
                chain.push(canon);
                let b = open_backing(path, name, header.backing_format.as_deref(), opts, chain);
                chain.pop();
                Some(b)
            }
            None => None,
        };
        let geo = CompressedGeometry::new(header.cluster_bits);
        Ok(Arc::new(Image {
            id: NEXT_IMAGE_ID.fetch_add(1, Ordering::Relaxed),
            file,
            data_file,
            header,
            snapshots,
            snapshot_table_bytes,
            backing,
            caches: Arc::clone(&opts.caches),
            inflater: Arc::clone(&opts.inflater),
            geo,
            data_reads: AtomicU64::new(0),
        }))
    }

    /// A process-unique number for this opening of the image (cache keys).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The decoded header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The image file.
    pub fn file(&self) -> &SourceFile {
        &self.file
    }

    /// The path the image was opened by.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The internal snapshots, in table order.
    pub fn snapshots(&self) -> &[Snapshot] {
        &self.snapshots
    }

    /// Size in bytes of the snapshot table.
    pub fn snapshot_table_bytes(&self) -> u64 {
        self.snapshot_table_bytes
    }

    /// The backing file, if the image has one.
    pub fn backing(&self) -> Option<&Backing> {
        self.backing.as_ref()
    }

    /// The caches this image uses.
    pub fn caches(&self) -> &Arc<Caches> {
        &self.caches
    }

    /// The threads that inflate this image's compressed clusters.
    fn inflater(&self) -> &Inflater {
        &self.inflater
    }

    /// How many reads of data clusters this opening of the image has made
    /// (reads of its backing file are the backing image's).
    pub fn data_reads(&self) -> u64 {
        self.data_reads.load(Ordering::Relaxed)
    }

    /// Count a read of data clusters.
    fn count_data_read(&self) {
        self.data_reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Read the active L1 table (validated when the header was read). It
    /// is read when a state needs it, not kept with the image, so that an
    /// open image costs memory for its header and snapshot table only.
    pub fn active_l1(&self) -> Result<L1Table> {
        let h = &self.header;
        let what = format!("active L1 table at {:#x}", h.l1_table_offset);
        L1Table::read(&self.file, h.l1_table_offset, u64::from(h.l1_size), &what)
    }

    /// Geometry of compressed descriptors.
    pub fn compressed_geometry(&self) -> CompressedGeometry {
        self.geo
    }

    /// Read the L1 table of snapshot `index` (validated when the table was read).
    pub fn snapshot_l1(&self, index: usize) -> Result<L1Table> {
        let sn = self.snapshot(index)?;
        let what = format!("L1 table of snapshot id {}", sn.id);
        L1Table::read(&self.file, sn.l1_table_offset, u64::from(sn.l1_size), &what)
    }

    fn snapshot(&self, index: usize) -> Result<&Snapshot> {
        self.snapshots
            .get(index)
            .ok_or_else(|| Error::SnapshotGone {
                id: format!("#{index}"),
            })
    }

    /// Open a state of this image as a view.
    pub fn state(self: &Arc<Image>, which: StateId) -> Result<State> {
        let (l1, size) = match which {
            StateId::Active => (Arc::new(self.active_l1()?), self.header.size),
            StateId::Snapshot(i) => (Arc::new(self.snapshot_l1(i)?), self.snapshot(i)?.disk_size),
        };
        check_l1_distinct(&l1, which)?;
        Ok(State {
            image: Arc::clone(self),
            which,
            l1,
            size,
        })
    }

    /// The decoded L2 table at `offset` (entries as raw words; two words per
    /// entry with extended L2), through the cache.
    pub fn l2_table(&self, offset: HostOffset, what: &dyn Fn() -> String) -> Result<Arc<Vec<u64>>> {
        self.caches.l2.get_or_load((self.id, offset.0), || {
            let bytes = self
                .file
                .read_vec(offset.0, self.header.cluster_size(), &what())?;
            Ok(be64_table(&bytes))
        })
    }

    /// Decode entry `index` of an L2 table.
    pub fn l2_entry(
        &self,
        table: &[u64],
        index: u64,
        what: &dyn Fn() -> String,
    ) -> Result<L2Entry> {
        let (entry, bitmap) = cluster::l2_words(table, index, self.header.extended_l2());
        cluster::decode_l2(entry, bitmap, self.header.cluster_bits, self.geo, what)
    }

    fn data_source(&self) -> &SourceFile {
        self.data_file.as_ref().unwrap_or(&self.file)
    }

    /// The decompressed bytes of each compressed cluster of `clusters`, in
    /// order; those not cached are inflated side by side, one thread per
    /// core.
    pub fn decompressed_all(
        self: &Arc<Image>,
        clusters: Vec<(HostOffset, u64)>,
    ) -> Result<Vec<Arc<Vec<u8>>>> {
        inflate::inflate_all(self, clusters)
    }

    /// The decompressed bytes of the compressed cluster at `host`.
    pub fn decompressed(&self, host: HostOffset, len: u64) -> Result<Arc<Vec<u8>>> {
        self.caches.decompressed.get_or_load((self.id, host.0), || {
            self.count_data_read();
            // The last sector of the stream may lie past the end of the file;
            // what is missing reads as zeros, as in QEMU.
            let avail = self.file.len().saturating_sub(host.0).min(len);
            if avail == 0 {
                return Err(Error::PastEof {
                    what: "compressed cluster".into(),
                    offset: host.0,
                    len,
                    file_len: self.file.len(),
                });
            }
            let mut input = self.file.read_vec(host.0, avail, "compressed cluster")?;
            input.resize(len as usize, 0);
            decompress(
                self.header.compression_type,
                &input,
                self.header.cluster_size() as usize,
                host.0,
            )
        })
    }
}

/// One L1 table may not point two entries at the same L2 table. Besides
/// being a corruption, it is what a crafted image uses to make a small file
/// describe an endless disk: with every L2 table met once per state, the
/// work of walking a state is bounded by the file's size.
fn check_l1_distinct(l1: &L1Table, which: StateId) -> Result<()> {
    // Offsets alone (8 bytes an entry), sorted; the entries are found again
    // only for the error message.
    let l2_of = |e: u64| cluster::l1_fields(e).l2;
    let mut seen: Vec<HostOffset> = l1.used().filter_map(|(_, e)| l2_of(e)).collect();
    seen.sort_unstable();
    let Some(dup) = seen.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]) else {
        return Ok(());
    };
    let mut at = l1
        .used()
        .filter(|&(_, e)| l2_of(e) == Some(dup))
        .map(|(i, _)| i);
    let (a, b) = (at.next().unwrap_or(0), at.next().unwrap_or(0));
    Err(Error::corrupt(
        format!("L1 table of {which:?}"),
        format!("entries {a} and {b} both point to the L2 table at {dup}"),
    ))
}
