//! Export: a chain folder written out without a mount, each file hashed
//! as it is written, then its `SHA256SUMS`.

use super::{
    Direction, LayerFigures, StateMaps, Use, backing_chain, build_with, folder, manifest_bytes,
    pass_view,
};
use crate::layer::Layer;
use parking_lot::Mutex;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use super::sums::{self, HASH_CHUNK, SUMS_NAME, Sha256Digest};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::parallel::map_side_by_side;
use crate::readbuf::{Pool, ReadBytes};
use crate::view::View;

/// Chunks queued for the hashing thread while a file is written out.
const HASH_QUEUE: usize = 4;

/// Write a chain's files (layers, passed-through backing files,
/// `chain.json` and `SHA256SUMS`) into `out`, all of them on disk when this
/// returns. Existing files are refused unless `force`. `progress` is told
/// (bytes done, bytes in all).
pub fn export(
    image: &Arc<Image>,
    dir: Direction,
    use_: Use,
    out: &Path,
    force: bool,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<()> {
    use sha2::{Digest, Sha256};
    let folder = folder(image, dir, use_, &backing_chain(image));
    let specs = &folder.layers;
    let built: Vec<Layer> = {
        let maps = StateMaps::new(image);
        specs
            .iter()
            .map(|s| build_with(image, s, &|w| maps.get(w)))
            .collect::<Result<_>>()?
    };
    let figures: Vec<LayerFigures> = specs
        .iter()
        .zip(&built)
        .map(|(s, l)| LayerFigures::of(s, l))
        .collect();
    let mut names: Vec<String> = specs.iter().map(|s| s.file_name.clone()).collect();
    names.extend(folder.pass.iter().map(|p| p.file_name.clone()));
    names.push(dir.manifest_name().into());
    names.push(SUMS_NAME.into());
    std::fs::create_dir_all(out).map_err(|e| Error::io("create folder", out, e))?;
    if !force {
        refuse_overwrite(out, &names)?;
    }
    let mut views: Vec<(String, Box<dyn View>)> = Vec::new();
    for (s, l) in specs.iter().zip(built) {
        views.push((s.file_name.clone(), Box::new(l)));
    }
    for p in &folder.pass {
        views.push((p.file_name.clone(), pass_view(p)?));
    }
    let total: u64 = views.iter().map(|v| v.1.size()).sum();
    // Files are written side by side, one per core, largest first: each is
    // bound by its own SHA-256 thread, which one core runs at 1.8 GB/s.
    let mut order: Vec<usize> = (0..views.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(views[i].1.size()));
    let done = AtomicU64::new(0);
    let progress = Mutex::new(progress);
    // The export's own buffers, shared by its writers.
    let pool = Arc::new(Pool::new());
    let written = map_side_by_side(&order, |&i| {
        let (name, v) = &views[i];
        write_hashed(&**v, &out.join(name), &pool, &mut |n| {
            let d = done.fetch_add(n, Ordering::Relaxed) + n;
            (progress.lock())(d, total);
        })
    });
    let mut digests: Vec<(String, Sha256Digest)> = Vec::new();
    let mut by_view: Vec<(usize, Result<Sha256Digest>)> = order.into_iter().zip(written).collect();
    by_view.sort_by_key(|(i, _)| *i);
    for (i, digest) in by_view {
        digests.push((views[i].0.clone(), digest?));
    }
    let m = manifest_bytes(image, dir, &folder, &figures);
    write_synced(&out.join(dir.manifest_name()), &m)?;
    digests.push((dir.manifest_name().to_string(), Sha256::digest(&m).into()));
    write_synced(&out.join(SUMS_NAME), sums::text(&digests).as_bytes())?;
    // The folder too, so that the names of the files are on disk.
    std::fs::File::open(out)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync", out, e))
}

/// An error naming the first of `names` that exists in `out`.
fn refuse_overwrite(out: &Path, names: &[String]) -> Result<()> {
    match names.iter().map(|n| out.join(n)).find(|p| p.exists()) {
        Some(path) => Err(Error::io(
            "refusing to overwrite (use --force)",
            path,
            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        )),
        None => Ok(()),
    }
}

/// Write `bytes` to a file at `path`, on disk when this returns.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| Error::io("create", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_data())
        .map_err(|e| Error::io("write", path, e))
}

/// Write every byte of `view` to a new file at `path` and return its
/// digest once the file is on disk. Chunks of zeros are skipped, so holes
/// stay holes; the hashing runs on a second thread, beside the reads and
/// writes. `done` is told the bytes of each chunk as it is written.
fn write_hashed(
    view: &dyn View,
    path: &Path,
    pool: &Arc<Pool>,
    done: &mut dyn FnMut(u64),
) -> Result<Sha256Digest> {
    let mut f = std::fs::File::create(path).map_err(|e| Error::io("create", path, e))?;
    let (to_hash, chunks) = mpsc::sync_channel::<ReadBytes>(HASH_QUEUE);
    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut sha = Sha256::new();
            for chunk in chunks {
                sha.update(&*chunk);
            }
            Sha256Digest::from(sha.finalize())
        });
        let copied = (|| -> Result<()> {
            let (mut pos, mut written_out) = (0u64, 0u64);
            while pos < view.size() {
                let mut buf = pool.take(HASH_CHUNK);
                let n = view.read_at(&mut buf[..HASH_CHUNK], pos)?;
                if n == 0 {
                    break;
                }
                let buf = ReadBytes::new(buf, n, pool);
                if buf.iter().all(|&b| b == 0) {
                    f.seek(SeekFrom::Current(n as i64))
                        .map_err(|e| Error::io("seek", path, e))?;
                } else {
                    f.write_all(&buf).map_err(|e| Error::io("write", path, e))?;
                }
                pos += n as u64;
                if pos - written_out >= WRITE_OUT_EVERY {
                    write_out(&f, written_out, pos);
                    written_out = pos;
                }
                done(n as u64);
                if to_hash.send(buf).is_err() {
                    break;
                }
            }
            write_out(&f, written_out, pos);
            f.set_len(view.size())
                .map_err(|e| Error::io("set length", path, e))?;
            f.sync_data().map_err(|e| Error::io("sync", path, e))
        })();
        drop(to_hash);
        let digest = hasher.join();
        copied?;
        digest.map_err(|_| Error::Io {
            what: "hash".into(),
            path: path.to_path_buf(),
            source: std::io::Error::other("the hashing thread failed"),
        })
    })
}

/// Bytes written between two asks to the kernel to write them out to disk:
/// the disk works while the export goes on (instead of all at the `sync`
/// after it), and an export does not crowd the page cache.
const WRITE_OUT_EVERY: u64 = 16 << 20;

/// Ask the kernel to start writing bytes `from..to` of `f` to disk, and to
/// drop them from the page cache once written (POSIX_FADV_DONTNEED starts
/// the writeback of dirty pages, then drops the clean ones). Only a hint.
fn write_out(f: &std::fs::File, from: u64, to: u64) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    if let Err(e) = posix_fadvise(
        f,
        from as i64,
        (to - from) as i64,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    ) {
        log::debug!("posix_fadvise: {e}");
    }
}
