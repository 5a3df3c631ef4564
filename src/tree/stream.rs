//! The mount's streaming hash: a file of a chain folder hashed from the
//! reads made of it, in whatever order they come, on a thread of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use crate::chain::sums::Sha256Digest;
use crate::readbuf::ReadBytes;
use crate::view::{ExtentKind, View};

/// Most bytes held, for all files together, of reads that arrived out of
/// order (readahead runs several at once; a reader may jump about). A file
/// whose held reads would pass it is no longer hashed as it is read; it is
/// hashed when the sums are read instead.
const MAX_PENDING_BYTES: usize = 16 << 20;

/// Bytes of a file whose extents are looked up at a time when a gap
/// before a read is checked for a hole.
const HOLE_WINDOW: u64 = 64 << 20;

/// Chunks queued for a hashing thread (reads of a mounted file wait to be
/// hashed).
const HASH_QUEUE: usize = 4;

/// Most files hashed on threads of their own at once; a file opened past
/// it is hashed when the sums are read instead.
const MAX_HASH_THREADS: usize = 16;

/// What the streaming hashes of one mount hold at once, against
/// [`MAX_PENDING_BYTES`] and [`MAX_HASH_THREADS`].
#[derive(Default)]
pub struct Budget {
    /// Bytes held by every [`StreamHash`] of the mount.
    pending: AtomicUsize,
    /// Hashing threads running.
    threads: AtomicUsize,
}

/// A [`StreamHash`] on a thread of its own: reads hand over their bytes and
/// are answered at once, while SHA-256 runs beside them on another core.
/// Once every byte is hashed, the thread hands the digest to `done`.
pub struct HashThread {
    feed: mpsc::SyncSender<HashMsg>,
    size: u64,
}

/// What a hashing thread is sent.
enum HashMsg {
    /// The bytes a read returned at an offset.
    Read(u64, ReadBytes),
    /// Answer once everything sent before is hashed.
    Flush(mpsc::Sender<()>),
}

impl HashThread {
    /// Start hashing `view` from the reads made of it (and its holes, which
    /// a copy may skip); None when too many files are being hashed already
    /// or no thread can be started.
    pub fn start(
        view: Arc<dyn View>,
        budget: &Arc<Budget>,
        done: Box<dyn FnOnce(Sha256Digest) + Send>,
    ) -> Option<HashThread> {
        let size = view.size();
        if budget.threads.fetch_add(1, Ordering::Relaxed) >= MAX_HASH_THREADS {
            budget.threads.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let held = Arc::clone(budget);
        let (feed, msgs) = mpsc::sync_channel::<HashMsg>(HASH_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut hash = StreamHash::new(Arc::clone(&held));
                let mut done = Some(done);
                let mut finish = |hash: &StreamHash| {
                    if let Some(d) = hash.digest(size)
                        && let Some(done) = done.take()
                    {
                        done(d);
                    }
                };
                for msg in msgs {
                    match msg {
                        HashMsg::Read(offset, bytes) => {
                            if offset > hash.upto {
                                // Skipped, perhaps, as a hole.
                                hash.fill_holes(&*view, offset);
                            }
                            hash.feed(offset, bytes);
                        }
                        HashMsg::Flush(answer) => {
                            hash.fill_holes(&*view, size);
                            // The asker may have gone: nothing to tell.
                            let _ = answer.send(());
                        }
                    }
                    finish(&hash);
                }
                // Every handle is closed.
                hash.fill_holes(&*view, size);
                finish(&hash);
                drop(hash);
                held.threads.fetch_sub(1, Ordering::Relaxed);
            });
        match spawned {
            Ok(_) => Some(HashThread { feed, size }),
            Err(_) => {
                budget.threads.fetch_sub(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Hand over the bytes a read returned at `offset`. The read that
    /// reaches the end of the file waits until they are hashed, and the
    /// holes the reader skipped with them, so that the digest is known by
    /// the time the reader closes the file (and reads `SHA256SUMS`, perhaps,
    /// before its close reaches the mount).
    pub fn feed(&self, offset: u64, bytes: &ReadBytes) {
        let end = offset + bytes.len() as u64;
        // Sends fail only once the thread is gone: nothing more to take.
        let _ = self.feed.send(HashMsg::Read(offset, bytes.clone()));
        if end >= self.size {
            let (answer, answered) = mpsc::channel();
            if self.feed.send(HashMsg::Flush(answer)).is_ok() {
                let _ = answered.recv();
            }
        }
    }
}

/// Hashes a file from the reads made of it, in whatever order they come.
pub struct StreamHash {
    sha: Sha256,
    /// Bytes hashed so far, from offset 0.
    upto: u64,
    /// Reads past `upto`, held until the gap before them is filled; the
    /// buffers they hold count against [`MAX_PENDING_BYTES`].
    pending: BTreeMap<u64, ReadBytes>,
    given_up: bool,
    budget: Arc<Budget>,
}

impl Drop for StreamHash {
    fn drop(&mut self) {
        self.let_go();
    }
}

impl StreamHash {
    /// A hash of nothing yet, holding reads against `budget`.
    pub fn new(budget: Arc<Budget>) -> StreamHash {
        StreamHash {
            sha: Sha256::new(),
            upto: 0,
            pending: BTreeMap::new(),
            given_up: false,
            budget,
        }
    }

    /// Take the bytes a read returned at `offset`.
    pub fn feed(&mut self, offset: u64, bytes: ReadBytes) {
        if self.given_up || bytes.is_empty() {
            return;
        }
        let end = offset + bytes.len() as u64;
        if end <= self.upto {
            return; // read again: already hashed
        }
        if offset > self.upto {
            let held = bytes.held();
            let pending = &self.budget.pending;
            if pending.fetch_add(held, Ordering::Relaxed) + held > MAX_PENDING_BYTES {
                pending.fetch_sub(held, Ordering::Relaxed);
                self.give_up();
                return;
            }
            self.pending.insert(offset, bytes);
            return;
        }
        self.take(offset, &bytes);
        self.drain();
    }

    /// Take the held reads that the bytes taken so far reach.
    fn drain(&mut self) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > self.upto {
                break;
            }
            let (at, held) = entry.remove_entry();
            self.budget
                .pending
                .fetch_sub(held.held(), Ordering::Relaxed);
            self.take(at, &held);
        }
    }

    /// Stop hashing, and let go of the reads held.
    fn give_up(&mut self) {
        self.given_up = true;
        self.let_go();
    }

    /// Let go of the reads held, and of their count against the budget.
    fn let_go(&mut self) {
        let held: usize = self.pending.values().map(ReadBytes::held).sum();
        self.budget.pending.fetch_sub(held, Ordering::Relaxed);
        self.pending.clear();
    }

    /// Take the holes of `view` before `until` that no read has covered yet
    /// (a copy skips them with SEEK_HOLE), up to the first gap that holds
    /// data.
    pub fn fill_holes(&mut self, view: &dyn View, until: u64) {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let until = until.min(view.size());
        while !self.given_up && self.upto < until {
            let gap_end = self.pending.keys().next().map_or(until, |&k| k.min(until));
            // The extents of a window at a time: a gap is most often short.
            let len = (gap_end - self.upto).min(HOLE_WINDOW);
            let Ok(extents) = view.extents(self.upto, len) else {
                return;
            };
            let Some(hole) = extents
                .first()
                .filter(|e| e.start == self.upto && e.kind != ExtentKind::Data)
            else {
                return;
            };
            let mut left = hole.len.min(len);
            while left > 0 {
                let n = left.min(ZEROS.len() as u64) as usize;
                self.sha.update(&ZEROS[..n]);
                self.upto += n as u64;
                left -= n as u64;
            }
            self.drain();
        }
    }

    fn take(&mut self, offset: u64, bytes: &[u8]) {
        let skip = (self.upto - offset) as usize;
        if let Some(new) = bytes.get(skip..) {
            self.sha.update(new);
            self.upto += new.len() as u64;
        }
    }

    /// The digest, once every byte of a file of `size` bytes was taken.
    pub fn digest(&self, size: u64) -> Option<Sha256Digest> {
        (!self.given_up && self.upto == size).then(|| self.sha.clone().finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;

    /// 300 bytes: data, a hole (bytes 100 to 200), data.
    struct Holed(Vec<u8>);

    impl View for Holed {
        fn size(&self) -> u64 {
            300
        }

        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
            let n = crate::view::clip(buf.len(), offset, 300);
            buf[..n].copy_from_slice(&self.0[offset as usize..offset as usize + n]);
            Ok(n)
        }

        fn extents(&self, offset: u64, len: u64) -> Result<Vec<crate::view::Extent>> {
            let runs = [(0, 100, ExtentKind::Data), (100, 100, ExtentKind::Hole)];
            let runs = runs.into_iter().chain([(200, 100, ExtentKind::Data)]);
            Ok(runs
                .filter(|&(s, l, _)| s + l > offset && s < offset + len)
                .map(|(s, l, kind)| {
                    let start = s.max(offset);
                    let end = (s + l).min(offset + len);
                    crate::view::Extent {
                        start,
                        len: end - start,
                        kind,
                    }
                })
                .collect())
        }
    }

    #[test]
    fn holes_a_copy_skips_are_hashed_as_zeros() {
        let mut data = vec![7u8; 300];
        data[100..200].fill(0);
        let whole: Sha256Digest = Sha256::digest(&data).into();
        let view = Holed(data.clone());
        let mut h = StreamHash::new(Arc::default());
        h.feed(0, ReadBytes::from(data[..100].to_vec()));
        h.fill_holes(&view, 200);
        h.feed(200, ReadBytes::from(data[200..].to_vec()));
        assert_eq!(h.digest(300), Some(whole));
        // A gap that holds data is left for a read to fill.
        let mut h = StreamHash::new(Arc::default());
        h.feed(250, ReadBytes::from(data[250..].to_vec()));
        h.fill_holes(&view, 300);
        assert_eq!(h.upto, 0);
        h.feed(0, ReadBytes::from(data[..250].to_vec()));
        assert_eq!(h.digest(300), Some(whole));
    }

    #[test]
    fn reads_in_any_order_hash_as_the_file() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let whole: Sha256Digest = Sha256::digest(&data).into();
        let mut h = StreamHash::new(Arc::default());
        let part = |r: std::ops::Range<usize>| ReadBytes::from(data[r].to_vec());
        h.feed(4000, part(4000..8000));
        h.feed(0, part(0..3000));
        assert_eq!(h.digest(10_000), None);
        h.feed(2000, part(2000..4500));
        h.feed(8000, part(8000..10_000));
        assert_eq!(h.digest(10_000), Some(whole));
    }
}
