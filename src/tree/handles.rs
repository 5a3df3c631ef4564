//! Open handles: files (each holding the view that serves it) and folders
//! (each holding the entries it took), and the buffers reads are served
//! from.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::entry::ImageEntry;
use super::node::Kind;
use super::node::Node;
use super::stream::HashThread;
use crate::error::{Error, Result};
use crate::readbuf::Pool;
use crate::view::View;

/// One entry of a folder listing: inode, kind, name.
pub type DirEntry = (u64, Kind, OsString);

/// How the kernel is to cache what is read through a handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caching {
    /// Keep the pages cached at earlier opens: the bytes are the same.
    Keep,
    /// Drop them: the file may have changed since.
    Drop,
    /// Bypass the page cache: a file whose digest is not known yet, hashed
    /// as it is read. Such a read is most often a copy that reads every byte
    /// once; read straight into the reader's buffer, each byte is copied
    /// twice instead of three times (into the page cache, then out of it),
    /// and no page of the cache is filled with bytes nobody reads again.
    /// Once its digest is known, or once an open did not read it in full,
    /// the file is cached at its next opens.
    Direct,
}

/// An open file: its node, the view that serves it, the opening of the
/// image it reads from, and its hashing.
pub(super) struct Handle {
    pub(super) node: Node,
    pub(super) view: Arc<dyn View>,
    pub(super) entry: Option<Arc<ImageEntry>>,
    /// The hashing of what is read, for a file that `SHA256SUMS` lists.
    pub(super) hashing: Option<Arc<HashThread>>,
}

/// The open files and folders of a mount, by handle.
pub(super) struct Handles {
    files: Mutex<HashMap<u64, Arc<Mutex<Handle>>>>,
    /// Open folder handles and the entries each took at opendir.
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    next_fh: AtomicU64,
    /// The buffers reads are served from.
    pool: Arc<Pool>,
}

impl Handles {
    /// No handle open.
    pub(super) fn new() -> Handles {
        Handles {
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            pool: Arc::new(Pool::new()),
        }
    }

    fn next(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// Open a file handle; returns its number.
    pub(super) fn add_file(&self, h: Handle) -> u64 {
        let fh = self.next();
        self.files.lock().insert(fh, Arc::new(Mutex::new(h)));
        fh
    }

    /// The open file handle `fh`.
    pub(super) fn file(&self, fh: u64) -> Result<Arc<Mutex<Handle>>> {
        open_handle(&self.files, fh, "handle")
    }

    /// The size of what the newest open handle of `node` serves, if one is
    /// open.
    pub(super) fn open_size(&self, node: &Node) -> Option<u64> {
        let files = self.files.lock();
        let newest = files
            .iter()
            .filter(|(_, h)| h.lock().node == *node)
            .max_by_key(|(fh, _)| **fh)?;
        Some(newest.1.lock().view.size())
    }

    /// Close file handle `fh`; returns it if it was open.
    pub(super) fn remove_file(&self, fh: u64) -> Option<Arc<Mutex<Handle>>> {
        self.files.lock().remove(&fh)
    }

    /// Open a folder handle over the entries taken; returns its number.
    pub(super) fn add_dir(&self, entries: Vec<DirEntry>) -> u64 {
        let fh = self.next();
        self.dirs.lock().insert(fh, Arc::new(entries));
        fh
    }

    /// The entries an open folder handle took.
    pub(super) fn dir(&self, fh: u64) -> Result<Arc<Vec<DirEntry>>> {
        open_handle(&self.dirs, fh, "folder handle")
    }

    /// Close folder handle `fh`.
    pub(super) fn remove_dir(&self, fh: u64) {
        self.dirs.lock().remove(&fh);
    }

    /// The pool reads take their buffers from.
    pub(super) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
}

/// What open handle `fh` of `handles` holds; NotFound, naming it as `what`,
/// when it is not open.
fn open_handle<T: Clone>(handles: &Mutex<HashMap<u64, T>>, fh: u64, what: &str) -> Result<T> {
    handles
        .lock()
        .get(&fh)
        .cloned()
        .ok_or_else(|| Error::NotFound {
            name: format!("{what} {fh}"),
        })
}
