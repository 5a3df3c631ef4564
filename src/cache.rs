//! Byte-budgeted LRU caches for L2 tables, refcount blocks and decompressed
//! clusters.
//!
//! A lookup takes the lock only to find or insert an entry; the disk read on
//! a miss happens with no lock held, so two threads may both read the same
//! table on a cold miss, which is harmless and cheaper than serialising reads.

use std::hash::Hash;
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use crate::error::Result;

/// Default total cache budget (64 MiB), shared by all images of a mount.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

/// Something whose memory cost the cache can count.
pub trait Weigh {
    /// Approximate heap bytes held.
    fn weight(&self) -> u64;
}

impl Weigh for Vec<u64> {
    fn weight(&self) -> u64 {
        (self.len() * 8) as u64
    }
}

impl Weigh for Vec<u8> {
    fn weight(&self) -> u64 {
        self.len() as u64
    }
}

struct Inner<K: Hash + Eq, V> {
    lru: LruCache<K, Arc<V>>,
    bytes: u64,
}

/// An LRU map from `K` to shared values, bounded by total weight in bytes.
pub struct ByteLru<K: Hash + Eq, V> {
    inner: Mutex<Inner<K, V>>,
    budget: u64,
}

impl<K: Hash + Eq + Clone, V: Weigh> ByteLru<K, V> {
    /// A cache holding at most `budget` bytes of values.
    pub fn new(budget: u64) -> ByteLru<K, V> {
        ByteLru {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            budget,
        }
    }

    /// The cached value for `key`, or `load()`'s result, inserted.
    /// `load` runs without the lock held.
    pub fn get_or_load(&self, key: K, load: impl FnOnce() -> Result<V>) -> Result<Arc<V>> {
        if let Some(v) = self.inner.lock().lru.get(&key) {
            return Ok(Arc::clone(v));
        }
        let value = Arc::new(load()?);
        let weight = value.weight();
        // A value larger than the whole budget is still kept, alone, so that
        // a table bigger than the budget is not read again for every
        // request: the bound is the budget or the largest single value.
        let mut inner = self.inner.lock();
        if let Some(old) = inner.lru.put(key, Arc::clone(&value)) {
            inner.bytes -= old.weight();
        }
        inner.bytes += weight;
        while inner.bytes > self.budget && inner.lru.len() > 1 {
            match inner.lru.pop_lru() {
                Some((_, old)) => inner.bytes -= old.weight(),
                None => break,
            }
        }
        Ok(value)
    }

    /// Drop every entry for which `pred` is true.
    pub fn retain(&self, pred: impl Fn(&K) -> bool) {
        let mut inner = self.inner.lock();
        let doomed: Vec<K> = inner
            .lru
            .iter()
            .filter(|(k, _)| !pred(k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            if let Some(v) = inner.lru.pop(&k) {
                inner.bytes -= v.weight();
            }
        }
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> u64 {
        self.inner.lock().bytes
    }
}

/// Key of a cached table: which opened image, and the table's host offset.
pub type TableKey = (u64, u64);

/// The caches shared by every image opened with the same [`Caches`].
pub struct Caches {
    /// Decoded L2 tables (two u64 words per entry with extended L2).
    pub l2: ByteLru<TableKey, Vec<u64>>,
    /// Raw refcount blocks.
    pub refblocks: ByteLru<TableKey, Vec<u8>>,
    /// Decompressed clusters, keyed by the compressed data's host offset.
    pub decompressed: ByteLru<TableKey, Vec<u8>>,
}

impl Caches {
    /// Caches sharing a total budget of `bytes`: 3/8 for L2 tables, 1/8 for
    /// refcount blocks, 1/4 for decompressed clusters; the last quarter is
    /// [`memo_budget`] for what a mount remembers of each image.
    pub fn new(bytes: u64) -> Arc<Caches> {
        Arc::new(Caches {
            l2: ByteLru::new(bytes / 8 * 3),
            refblocks: ByteLru::new(bytes / 8),
            decompressed: ByteLru::new(bytes / 4),
        })
    }
}

/// The share of a total budget of `bytes` for open states (with their L1
/// tables), cluster maps and layer plans.
pub fn memo_budget(bytes: u64) -> u64 {
    bytes / 4
}

impl Caches {
    /// Drop everything cached for the opened image `image_id`.
    pub fn forget_image(&self, image_id: u64) {
        self.l2.retain(|k| k.0 != image_id);
        self.refblocks.retain(|k| k.0 != image_id);
        self.decompressed.retain(|k| k.0 != image_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_to_stay_within_budget() {
        let c: ByteLru<u64, Vec<u8>> = ByteLru::new(1000);
        for i in 0..10 {
            c.get_or_load(i, || Ok(vec![0u8; 300])).unwrap();
            assert!(c.bytes() <= 1000);
        }
        // The newest entries survive.
        let mut loaded = false;
        c.get_or_load(9, || {
            loaded = true;
            Ok(vec![])
        })
        .unwrap();
        assert!(!loaded);
    }

    #[test]
    fn an_oversized_value_is_kept_alone() {
        let c: ByteLru<u64, Vec<u8>> = ByteLru::new(100);
        c.get_or_load(1, || Ok(vec![0u8; 30])).unwrap();
        c.get_or_load(2, || Ok(vec![0u8; 300])).unwrap();
        assert_eq!(c.bytes(), 300);
        c.get_or_load(3, || Ok(vec![0u8; 30])).unwrap();
        assert_eq!(c.bytes(), 30);
    }
}
