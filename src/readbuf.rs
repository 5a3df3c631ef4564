//! Buffers that reads are served from. A read's bytes go to the reply and,
//! for a file being hashed, to its hashing thread: both share one buffer
//! instead of each having a copy. Buffers come from a small pool and go
//! back to it once both are done, so a read is not paid for with a fresh,
//! zeroed allocation of its size.

use std::ops::Deref;
use std::sync::Arc;

use parking_lot::Mutex;

/// Spare buffers kept for later reads; more than this are freed.
const SPARE: usize = 16;

/// Spare buffers.
pub struct Pool(Mutex<Vec<Vec<u8>>>);

impl Pool {
    /// An empty pool.
    pub fn new() -> Pool {
        Pool(Mutex::new(Vec::new()))
    }

    /// A buffer of at least `size` bytes, which may hold anything.
    pub fn take(&self, size: usize) -> Vec<u8> {
        let mut buf = self.0.lock().pop().unwrap_or_default();
        if buf.len() < size {
            buf.resize(size, 0);
        }
        buf
    }

    fn give_back(&self, buf: Vec<u8>) {
        let mut spare = self.0.lock();
        if spare.len() < SPARE {
            spare.push(buf);
        }
    }
}

impl Default for Pool {
    fn default() -> Pool {
        Pool::new()
    }
}

/// A buffer that goes back to its pool, if it has one, when dropped.
struct Pooled(Vec<u8>, Option<Arc<Pool>>);

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(pool) = &self.1 {
            pool.give_back(std::mem::take(&mut self.0));
        }
    }
}

/// The bytes a read returned: the first `len` bytes of a pooled buffer,
/// shared (cloning does not copy them).
#[derive(Clone)]
pub struct ReadBytes {
    buf: Arc<Pooled>,
    len: usize,
}

impl ReadBytes {
    /// The first `len` bytes of `buf`, which goes back to `pool` once every
    /// share is dropped.
    pub fn new(buf: Vec<u8>, len: usize, pool: &Arc<Pool>) -> ReadBytes {
        assert!(len <= buf.len());
        ReadBytes {
            buf: Arc::new(Pooled(buf, Some(Arc::clone(pool)))),
            len,
        }
    }

    /// Bytes of memory these take: the whole buffer, however few it holds.
    pub fn held(&self) -> usize {
        self.buf.0.capacity()
    }
}

impl From<Vec<u8>> for ReadBytes {
    fn from(buf: Vec<u8>) -> ReadBytes {
        let len = buf.len();
        ReadBytes {
            buf: Arc::new(Pooled(buf, None)),
            len,
        }
    }
}

impl Deref for ReadBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf.0[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_once_every_share_is_dropped() {
        let pool = Arc::new(Pool::new());
        let buf = pool.take(1000);
        assert!(buf.len() >= 1000);
        let ptr = buf.as_ptr();
        let bytes = ReadBytes::new(buf, 10, &pool);
        let share = bytes.clone();
        assert_eq!(share.len(), 10);
        drop(bytes);
        assert!(pool.0.lock().is_empty());
        drop(share);
        let again = pool.take(500);
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.len() >= 1000);
    }
}
