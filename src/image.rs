//! An opened qcow2 image and its states.
//!
//! "Where is snapshot X's cluster c read" is answered here: [`State::map`]
//! walks the state's L1 table and the cached L2 tables and says what a run
//! of guest bytes is; [`State::read_at`] turns runs into bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cache::Caches;
use crate::error::{Error, Result};
use crate::qcow2::be::be64_table;
use crate::qcow2::cluster::{self, CompressedGeometry, L2Entry, SUBCLUSTERS, SubclusterKind};
use crate::qcow2::compress::decompress;
use crate::qcow2::header::{Header, INCOMPAT_DATA_FILE, QCOW2_MAGIC};
use crate::qcow2::offsets::{GuestOffset, HostOffset};
use crate::qcow2::snapshot::{Snapshot, read_snapshots};
use crate::source::SourceFile;
use crate::view::{Extent, ExtentKind, RawView, View, clip, push_extent};

/// Longest backing chain followed below an image. Deeper chains are an
/// error; the bound keeps a crafted chain from exhausting files or stack.
pub const MAX_BACKING_CHAIN: usize = 64;

/// Counter of data-cluster reads (uncompressed or compressed), process-wide;
/// tests use it to show that metadata-only work reads no data.
pub static DATA_READS: AtomicU64 = AtomicU64::new(0);

static NEXT_IMAGE_ID: AtomicU64 = AtomicU64::new(1);

/// How images (and their backing files) are opened.
#[derive(Clone)]
pub struct OpenOptions {
    /// Caches shared by every image opened with these options.
    pub caches: Arc<Caches>,
    /// When set, backing files must resolve to a path inside this folder.
    pub backing_root: Option<PathBuf>,
}

impl OpenOptions {
    /// Options with fresh caches of `cache_bytes` and no backing restriction.
    pub fn new(cache_bytes: u64) -> OpenOptions {
        OpenOptions {
            caches: Caches::new(cache_bytes),
            backing_root: None,
        }
    }
}

/// The backing file of an image, as resolved when the image was opened.
pub struct Backing {
    /// The name written in the image.
    pub name: String,
    /// The format it is read as ("qcow2" or "raw").
    pub format: Option<String>,
    /// The resolved path, when resolution got that far.
    pub path: Option<PathBuf>,
    /// The view, or why there is none. A missing backing file is an error
    /// when its bytes are needed, never zeros.
    pub view: std::result::Result<Arc<dyn View>, String>,
}

impl Backing {
    fn view(&self) -> Result<&Arc<dyn View>> {
        self.view.as_ref().map_err(|reason| Error::Backing {
            name: self.name.clone(),
            reason: reason.clone(),
        })
    }
}

/// An open qcow2 image: header, snapshot table, active L1 table and backing.
pub struct Image {
    id: u64,
    file: SourceFile,
    data_file: Option<SourceFile>,
    header: Header,
    snapshots: Vec<Snapshot>,
    snapshot_table_bytes: u64,
    active_l1: Arc<Vec<u64>>,
    backing: Option<Backing>,
    caches: Arc<Caches>,
    geo: CompressedGeometry,
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
        let file = SourceFile::open(path)?;
        let header = Header::read(&file)?;
        let (snapshots, snapshot_table_bytes) = read_snapshots(&file, &header)?;
        let l1_bytes = file.read_vec(
            header.l1_table_offset,
            u64::from(header.l1_size) * 8,
            "active L1 table",
        )?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let data_file = match (
            &header.data_file,
            header.incompatible_features & INCOMPAT_DATA_FILE != 0,
        ) {
            (Some(name), true) => {
                let p = resolve_name(dir, name);
                check_inside(&p, opts, name)?;
                Some(SourceFile::open(&p)?)
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
                let b = open_backing(dir, name, header.backing_format.as_deref(), opts, chain);
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
            active_l1: Arc::new(be64_table(&l1_bytes)),
            header,
            snapshots,
            snapshot_table_bytes,
            backing,
            caches: Arc::clone(&opts.caches),
            geo,
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

    /// The active L1 table entries.
    pub fn active_l1(&self) -> &Arc<Vec<u64>> {
        &self.active_l1
    }

    /// Geometry of compressed descriptors.
    pub fn compressed_geometry(&self) -> CompressedGeometry {
        self.geo
    }

    /// Read the L1 table of snapshot `index` (validated when the table was read).
    pub fn snapshot_l1(&self, index: usize) -> Result<Vec<u64>> {
        let sn = self.snapshot(index)?;
        let bytes = self.file.read_vec(
            sn.l1_table_offset,
            u64::from(sn.l1_size) * 8,
            &format!("L1 table of snapshot id {}", sn.id),
        )?;
        Ok(be64_table(&bytes))
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
            StateId::Active => (Arc::clone(&self.active_l1), self.header.size),
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
        let ext = self.header.extended_l2();
        let words = if ext { 2 } else { 1 };
        let i = (index * words) as usize;
        let entry = table.get(i).copied().unwrap_or(0);
        let bitmap = if ext {
            Some(table.get(i + 1).copied().unwrap_or(0))
        } else {
            None
        };
        cluster::decode_l2(entry, bitmap, self.header.cluster_bits, self.geo, what)
    }

    fn data_source(&self) -> &SourceFile {
        self.data_file.as_ref().unwrap_or(&self.file)
    }

    /// The decompressed bytes of the compressed cluster at `host`.
    pub fn decompressed(&self, host: HostOffset, len: u64) -> Result<Arc<Vec<u8>>> {
        self.caches.decompressed.get_or_load((self.id, host.0), || {
            DATA_READS.fetch_add(1, Ordering::Relaxed);
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
fn check_l1_distinct(l1: &[u64], which: StateId) -> Result<()> {
    let mut seen: Vec<(u64, usize)> = l1
        .iter()
        .enumerate()
        .map(|(i, e)| (e & cluster::L1E_OFFSET_MASK, i))
        .filter(|(o, _)| *o != 0)
        .collect();
    seen.sort_unstable();
    for w in seen.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(Error::corrupt(
                format!("L1 table of {which:?}"),
                format!(
                    "entries {} and {} both point to the L2 table at {:#x}",
                    w[0].1, w[1].1, w[0].0
                ),
            ));
        }
    }
    Ok(())
}

fn resolve_name(dir: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

fn check_inside(path: &Path, opts: &OpenOptions, name: &str) -> Result<()> {
    let Some(root) = &opts.backing_root else {
        return Ok(());
    };
    let canon = std::fs::canonicalize(path).map_err(|e| Error::Backing {
        name: name.to_string(),
        reason: format!("{}: {e}", path.display()),
    })?;
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
    if canon.starts_with(&root) {
        Ok(())
    } else {
        Err(Error::Backing {
            name: name.to_string(),
            reason: format!(
                "{} is outside {} (allow it with --allow-outside-backing)",
                canon.display(),
                root.display()
            ),
        })
    }
}

fn open_backing(
    dir: &Path,
    name: &str,
    format: Option<&str>,
    opts: &OpenOptions,
    chain: &mut Vec<PathBuf>,
) -> Backing {
    let path = resolve_name(dir, name);
    let view = (|| -> Result<Arc<dyn View>> {
        check_inside(&path, opts, name)?;
        let canon = std::fs::canonicalize(&path).map_err(|e| Error::Backing {
            name: name.to_string(),
            reason: format!("{}: {e}", path.display()),
        })?;
        if chain.contains(&canon) {
            return Err(Error::Backing {
                name: name.to_string(),
                reason: format!("backing chain loops back to {}", canon.display()),
            });
        }
        if chain.len() >= MAX_BACKING_CHAIN {
            return Err(Error::Backing {
                name: name.to_string(),
                reason: format!("backing chain is deeper than {MAX_BACKING_CHAIN} files"),
            });
        }
        let as_qcow2 = match format {
            Some("qcow2") => true,
            Some("raw") => false,
            Some(other) => {
                return Err(Error::Unsupported {
                    feature: format!("backing file format {other}"),
                });
            }
            // No format recorded: probe, as QEMU does.
            None => is_qcow2(&path),
        };
        if as_qcow2 {
            let img = Image::open_in_chain(&path, opts, chain)?;
            Ok(Arc::new(img.state(StateId::Active)?))
        } else {
            Ok(Arc::new(RawView::open(&path)?))
        }
    })();
    Backing {
        name: name.to_string(),
        format: format.map(str::to_string),
        path: Some(path),
        view: view.map_err(|e| e.to_string()),
    }
}

/// What a run of guest bytes of a state maps to, at this image's level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// Not allocated in this image: the backing file's bytes, or zeros.
    Unallocated,
    /// Reads as zeros.
    Zero,
    /// Stored at this host offset (of the first byte of the run).
    Data(HostOffset),
    /// Inside a compressed cluster.
    Compressed {
        /// Host offset of the compressed data.
        host: HostOffset,
        /// Bytes of compressed data.
        len: u64,
        /// Offset of the run's first byte inside the decompressed cluster.
        within: u64,
    },
}

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
    image: Arc<Image>,
    which: StateId,
    l1: Arc<Vec<u64>>,
    size: u64,
}

impl State {
    /// The image this state belongs to.
    pub fn image(&self) -> &Arc<Image> {
        &self.image
    }

    /// Which state this is.
    pub fn which(&self) -> StateId {
        self.which
    }

    /// This state's L1 table.
    pub fn l1(&self) -> &[u64] {
        &self.l1
    }

    /// The run of bytes starting at `guest`, at most `max_len` long, that has
    /// one mapping. Runs stop at L2 table boundaries. Offsets past the L1
    /// table are unallocated (they can only be reached for VM state).
    pub fn map(&self, guest: GuestOffset, max_len: u64) -> Result<Run> {
        let h = self.image.header();
        let cb = h.cluster_bits;
        let cs = h.cluster_size();
        let coverage = h.l1_coverage();
        let l1_index = guest.0 / coverage;
        let to_table_end = coverage - guest.0 % coverage;
        let max_len = max_len.min(to_table_end);
        let l1_what = || match self.which {
            StateId::Active => format!(
                "active L1 table at {:#x}: entry {l1_index}",
                h.l1_table_offset
            ),
            StateId::Snapshot(i) => format!("L1 table of snapshot #{i}: entry {l1_index}"),
        };
        let l1_entry = usize::try_from(l1_index)
            .ok()
            .and_then(|i| self.l1.get(i))
            .copied()
            .unwrap_or(0);
        let Some(l2_offset) = cluster::decode_l1(l1_entry, cb, &l1_what)? else {
            return Ok(Run {
                mapping: Mapping::Unallocated,
                len: max_len,
            });
        };
        let l2_what = || format!("L2 table at {l2_offset} (L1[{l1_index}])");
        let table = self.image.l2_table(l2_offset, &l2_what)?;
        let sc_size = if h.extended_l2() {
            cs / u64::from(SUBCLUSTERS)
        } else {
            cs
        };
        let mut pos = guest.0;
        let end = guest.0 + max_len;
        let mut first: Option<Mapping> = None;
        let mut len = 0u64;
        while pos < end {
            let l2_index = (pos / cs) % h.l2_entries();
            let entry_what =
                || format!("L2 table at {l2_offset} (L1[{l1_index}]): entry {l2_index}");
            let entry = self.image.l2_entry(&table, l2_index, &entry_what)?;
            let in_cluster = pos & (cs - 1);
            let sc = (in_cluster / sc_size) as u32;
            let in_sc = in_cluster % sc_size;
            let piece = (sc_size - in_sc).min(end - pos);
            let m = match entry.subcluster(sc, sc_size) {
                SubclusterKind::Unallocated => Mapping::Unallocated,
                SubclusterKind::Zero => Mapping::Zero,
                SubclusterKind::Data(host) => Mapping::Data(HostOffset(host.0 + in_sc)),
                SubclusterKind::Compressed { host, len } => Mapping::Compressed {
                    host,
                    len,
                    within: in_cluster,
                },
            };
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
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let want = (buf.len() - done) as u64;
            let run = self.map(GuestOffset(pos), want)?;
            let n = run.len.min(want) as usize;
            let out = &mut buf[done..done + n];
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
                    DATA_READS.fetch_add(1, Ordering::Relaxed);
                    let src = self.image.data_source();
                    src.read_exact_at(out, host.0, "data cluster")?;
                }
                Mapping::Compressed { host, len, within } => {
                    let cluster = self.image.decompressed(host, len)?;
                    let slice = cluster
                        .get(within as usize..within as usize + n)
                        .ok_or_else(|| Error::corrupt("compressed cluster", "run past its end"))?;
                    out.copy_from_slice(slice);
                }
            }
            done += n;
        }
        Ok(())
    }

    /// The runs of this image's own mapping over `[offset, offset + len)`.
    pub fn runs(&self, offset: u64, len: u64) -> Result<Vec<Run>> {
        let mut out: Vec<Run> = Vec::new();
        let end = offset.saturating_add(len);
        let mut pos = offset;
        while pos < end {
            let run = self.map(GuestOffset(pos), end - pos)?;
            if run.len == 0 {
                break;
            }
            match out.last_mut() {
                Some(last) if continues(last.mapping, last.len, run.mapping) => last.len += run.len,
                _ => out.push(run),
            }
            pos += run.len;
        }
        Ok(out)
    }
}

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
        while pos < end {
            let run = self.map(GuestOffset(pos), end - pos)?;
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
