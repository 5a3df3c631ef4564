//! Compressed clusters inflated side by side.
//!
//! A read that spans many compressed clusters hands them to a batch; the
//! reading thread and a few pool threads (one per further core) take
//! clusters from it until none is left. The pool threads are started once
//! and wait between reads: waking a waiting thread takes microseconds,
//! where starting a new one can take milliseconds (2 ms on the VM of the
//! benchmark), as long as inflating a whole 1 MiB read.
//!
//! Readahead sends several requests at once, each served by a thread of
//! its own: the work is then spread across the requests already. While
//! there are as many reads inflating as cores, a read inflates its own
//! clusters and offers none to the pool, whose threads would only take
//! turns with the readers on the same cores (and make a reader wait for a
//! cluster taken by a pool thread that is not running).

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

use super::Image;
use crate::error::{Error, Result};
use crate::qcow2::offsets::HostOffset;

/// Most threads that inflate one read, the reading thread included.
const MAX_THREADS: usize = 8;

/// Reads inflating clusters at this moment.
static READERS: AtomicUsize = AtomicUsize::new(0);

/// One read counted in [`READERS`] while it lives.
struct Reader;

impl Reader {
    /// Count a read in, and say how many are inflating with it included.
    fn enter() -> (Reader, usize) {
        (Reader, READERS.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        READERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The inflated bytes of each of `clusters` of `image`, in order.
pub(super) fn inflate_all(
    image: &Arc<Image>,
    clusters: Vec<(HostOffset, u64)>,
) -> Result<Vec<Arc<Vec<u8>>>> {
    let pool = Pool::get();
    let (_reader, readers) = Reader::enter();
    // Every core has a read of its own to inflate (pool.threads is one
    // fewer than the cores).
    let cores_busy = readers > pool.threads;
    if clusters.len() < 2 || pool.threads == 0 || cores_busy {
        return clusters
            .iter()
            .map(|&(host, len)| image.decompressed(host, len))
            .collect();
    }
    let batch = Arc::new(Batch {
        image: Arc::clone(image),
        slots: clusters.iter().map(|_| Mutex::new(None)).collect(),
        clusters,
        next: AtomicUsize::new(0),
        finished: Mutex::new(0),
        all_finished: Condvar::new(),
    });
    pool.offer(&batch);
    batch.work();
    batch.wait();
    batch.slots.iter().map(Batch::outcome).collect()
}

/// What became of one cluster.
type Inflated = Result<Arc<Vec<u8>>>;

/// The clusters of one read, and what became of each.
struct Batch {
    image: Arc<Image>,
    clusters: Vec<(HostOffset, u64)>,
    /// Index of the next cluster to take.
    next: AtomicUsize,
    slots: Vec<Mutex<Option<Inflated>>>,
    /// Clusters taken and done with.
    finished: Mutex<usize>,
    all_finished: Condvar,
}

impl Batch {
    /// Take clusters and inflate them until none is left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(&(host, len)) = self.clusters.get(i) else {
                return;
            };
            // A panic while inflating leaves the slot empty (an error for
            // the reader) but still counts the cluster as done.
            if let Ok(result) =
                catch_unwind(AssertUnwindSafe(|| self.image.decompressed(host, len)))
            {
                *lock(&self.slots[i]) = Some(result);
            }
            let mut finished = lock(&self.finished);
            *finished += 1;
            if *finished == self.clusters.len() {
                self.all_finished.notify_all();
            }
        }
    }

    /// Wait until every cluster has been done with.
    fn wait(&self) {
        let mut finished = lock(&self.finished);
        while *finished < self.clusters.len() {
            finished = self
                .all_finished
                .wait(finished)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn outcome(slot: &Mutex<Option<Inflated>>) -> Inflated {
        lock(slot).take().unwrap_or_else(|| {
            Err(Error::corrupt(
                "compressed cluster",
                "inflating it failed unexpectedly",
            ))
        })
    }
}

/// Threads that take clusters from the batches offered to them.
struct Pool {
    threads: usize,
    queue: Mutex<VecDeque<Arc<Batch>>>,
    offered: Condvar,
}

impl Pool {
    /// The process's pool, started on first use: one thread per core
    /// beyond the reading thread's.
    fn get() -> &'static Pool {
        static POOL: OnceLock<&'static Pool> = OnceLock::new();
        POOL.get_or_init(|| {
            let cores = crate::parallel::cores();
            let pool: &'static Pool = Box::leak(Box::new(Pool {
                threads: cores.min(MAX_THREADS) - 1,
                queue: Mutex::new(VecDeque::new()),
                offered: Condvar::new(),
            }));
            for i in 0..pool.threads {
                let spawned = std::thread::Builder::new()
                    .name(format!("inflate-{i}"))
                    .spawn(move || pool.serve());
                if let Err(e) = spawned {
                    log::warn!("inflate thread {i} not started: {e}");
                }
            }
            pool
        })
    }

    /// Let every pool thread take part in `batch`.
    fn offer(&self, batch: &Arc<Batch>) {
        let mut queue = lock(&self.queue);
        for _ in 0..self.threads.min(batch.clusters.len() - 1) {
            queue.push_back(Arc::clone(batch));
        }
        drop(queue);
        self.offered.notify_all();
    }

    fn serve(&self) {
        loop {
            let batch = {
                let mut queue = lock(&self.queue);
                loop {
                    match queue.pop_front() {
                        Some(b) => break b,
                        None => {
                            queue = self
                                .offered
                                .wait(queue)
                                .unwrap_or_else(PoisonError::into_inner)
                        }
                    }
                }
            };
            batch.work();
        }
    }
}

/// A lock that a panic elsewhere does not poison for good: every value
/// kept under these locks is whole between statements.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
