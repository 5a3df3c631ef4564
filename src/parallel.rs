//! Independent pieces of work done side by side, one thread per core.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `f` of every item, side by side on up to one thread per core (the
/// calling thread among them), items taken in the order given; the results
/// in that order. For few, large pieces of work: each call starts its
/// threads afresh.
pub fn map_side_by_side<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(item) = items.get(i) else {
            break;
        };
        *slots[i].lock() = Some(f(item));
    };
    std::thread::scope(|s| {
        for _ in 1..cores().min(items.len()) {
            s.spawn(work);
        }
        work();
    });
    // Every item was taken once and its result set: a panic in `f` would
    // have left the scope above by unwinding.
    slots
        .into_iter()
        .map(|slot| slot.into_inner().expect("every item has its result"))
        .collect()
}
