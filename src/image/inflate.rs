//! Compressed clusters inflated side by side.
//!
//! A read that spans many compressed clusters hands them to a batch; the
//! reading thread and a few pool threads (one per further core) take
//! clusters from it until none is left. The pool threads are started once
//! and wait between reads: waking a waiting thread takes microseconds,
//! where starting a new one can take milliseconds (2 ms on the VM of the
//! benchmark), as long as inflating a whole 1 MiB read.
//!
//! The pool belongs to the [`Inflater`] of the options images are opened
//! with: a mount has one, shared by its images and their backing files,
//! and its threads end when the options and the last image opened with
//! them are gone.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

use super::Image;
use crate::error::{Error, Result};
use crate::qcow2::offsets::HostOffset;

/// Most threads that inflate one read, the reading thread included.
const MAX_THREADS: usize = 8;

/// The threads that inflate the compressed clusters of a read side by
/// side, for the images opened with one [`super::OpenOptions`]. They are
/// started on first use: options that never read two compressed clusters
/// at once start none.
pub struct Inflater {
    pool: OnceLock<Arc<Pool>>,
}

impl Inflater {
    /// An inflater with no thread started yet.
    pub fn new() -> Arc<Inflater> {
        Arc::new(Inflater {
            pool: OnceLock::new(),
        })
    }

    /// The pool, started on first use: one thread per core beyond the
    /// reading thread's.
    fn pool(&self) -> &Arc<Pool> {
        self.pool.get_or_init(|| {
            let cores = crate::parallel::cores();
            let pool = Arc::new(Pool {
                threads: cores.min(MAX_THREADS) - 1,
                queue: Mutex::new(Queue::default()),
                offered: Condvar::new(),
            });
            for i in 0..pool.threads {
                let serving = Arc::clone(&pool);
                let spawned = std::thread::Builder::new()
                    .name(format!("inflate-{i}"))
                    .spawn(move || serving.serve());
                if let Err(e) = spawned {
                    log::warn!("inflate thread {i} not started: {e}");
                }
            }
            pool
        })
    }
}

impl Drop for Inflater {
    /// Let the pool's threads end once the batches offered to them are
    /// done (none is: every image that offers one holds this inflater).
    fn drop(&mut self) {
        if let Some(pool) = self.pool.get() {
            lock(&pool.queue).closed = true;
            pool.offered.notify_all();
        }
    }
}

/// The inflated bytes of each of `clusters` of `image`, in order.
pub(super) fn inflate_all(
    image: &Arc<Image>,
    clusters: Vec<(HostOffset, u64)>,
) -> Result<Vec<Arc<Vec<u8>>>> {
    // One cluster is inflated by the reading thread alone, without
    // starting the pool for it.
    let pool = (clusters.len() >= 2)
        .then(|| image.inflater().pool())
        .filter(|p| p.threads > 0);
    let Some(pool) = pool else {
        return clusters
            .iter()
            .map(|&(host, len)| image.decompressed(host, len))
            .collect();
    };
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
    queue: Mutex<Queue>,
    offered: Condvar,
}

/// The batches offered to the pool, and whether its owner is gone.
#[derive(Default)]
struct Queue {
    batches: VecDeque<Arc<Batch>>,
    closed: bool,
}

impl Pool {
    /// Let every pool thread take part in `batch`.
    fn offer(&self, batch: &Arc<Batch>) {
        let mut queue = lock(&self.queue);
        for _ in 0..self.threads.min(batch.clusters.len() - 1) {
            queue.batches.push_back(Arc::clone(batch));
        }
        drop(queue);
        self.offered.notify_all();
    }

    /// Take batches until the inflater is gone and none is left.
    fn serve(&self) {
        loop {
            let batch = {
                let mut queue = lock(&self.queue);
                loop {
                    match queue.batches.pop_front() {
                        Some(b) => break b,
                        None if queue.closed => return,
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

#[cfg(test)]
mod tests {
    use super::Inflater;
    use std::time::{Duration, Instant};

    /// Threads of this process named as the pool names its threads.
    fn pool_threads() -> usize {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return 0;
        };
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.starts_with("inflate-"))
            .count()
    }

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_pool_starts_on_first_use_and_ends_with_its_inflater() {
        let inflater = Inflater::new();
        assert_eq!(pool_threads(), 0);
        let threads = inflater.pool().threads;
        wait_for("the pool's threads to start", || pool_threads() == threads);
        drop(inflater);
        wait_for("the pool's threads to end", || pool_threads() == 0);
    }
}
