//! One opening of an image: what the tree keeps of it (states, cluster
//! maps, layers, reports) while the image file is unchanged.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::memo::Memos;
use super::node::{LayerKey, Listing, SnapKey, StateKey};
use crate::chain::{self, Direction, LayerSpec, Use};
use crate::error::{Error, Result};
use crate::image::{Image, State, StateId, inside};
use crate::layer::{ClusterMap, Layer};
use crate::report::{Info, open_error_text};
use crate::view::View;

/// What identifies a version of a source file: if any of it changes, the
/// image is reopened and its caches dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl Stamp {
    pub(super) fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        }
    }
}

/// A file's mtime, or the epoch where the file system keeps none.
pub(super) fn mtime_of(m: &std::fs::Metadata) -> SystemTime {
    m.modified().unwrap_or(UNIX_EPOCH)
}

/// A chain folder as shown, and its layers by key (a few hundred bytes per
/// layer, kept per opening).
pub(super) struct Shown {
    pub(super) folder: chain::Folder,
    pub(super) by_key: HashMap<LayerKey, usize>,
}

/// The bytes of a chain folder's manifest.
pub(super) type Manifest = Arc<Vec<u8>>;

/// One opening of an image, valid while its stamp and its backing files'
/// stamps are: what the image is, and what is kept of it.
pub(super) struct ImageEntry {
    pub(super) stamp: Stamp,
    /// The stamps of its backing files at this opening: a backing file
    /// rebased or written is read through a new opening.
    pub(super) backing_stamps: Vec<Stamp>,
    pub(super) meta: std::fs::Metadata,
    /// The image file, as resolved at this opening.
    pub(super) path: PathBuf,
    pub(super) image: std::result::Result<Arc<Image>, Arc<Error>>,
    /// Its snapshots' names as file names.
    pub(super) stems: Vec<String>,
    /// The files of its backing chain, top first.
    pub(super) backing_files: Vec<chain::BackingFile>,
    /// The mount's memo caches (shared by every image).
    pub(super) memos: Arc<Memos>,
    /// What is worked out of this opening once.
    pub(super) kept: Kept,
    /// Whether a failure to serve it was logged.
    pub(super) logged: AtomicBool,
}

/// What is worked out of an opening once and kept while it is current,
/// outside the memo budget: a few numbers and names per state, layer and
/// chain folder file.
#[derive(Default)]
pub(super) struct Kept {
    /// The `info` report (text, JSON), once gathered, per use of the image
    /// (an image in use plans its chains without the active state).
    info: Mutex<HashMap<Use, Arc<(String, String)>>>,
    /// st_blocks per state, once counted (a number per state).
    pub(super) blocks: Mutex<HashMap<StateId, u64>>,
    /// States that could not be opened, and why (one entry per state).
    failed_states: Mutex<HashMap<StateId, Arc<Error>>>,
    /// Layer sizes, once planned (a number per layer), so that a stat never
    /// waits for a plan that the memo budget let go.
    layer_sizes: Mutex<HashMap<LayerSpec, u64>>,
    manifests: Mutex<HashMap<(Direction, Use), Manifest>>,
    /// What each chain folder shows, once worked out, per use.
    folders: Mutex<HashMap<(Direction, Use), Arc<Shown>>>,
    /// Their listings, per use.
    pub(super) listings: Mutex<HashMap<(Direction, Use), Arc<Listing>>>,
    /// The listing of `snapshots/`, once made.
    pub(super) snap_listing: OnceLock<Arc<Listing>>,
    /// How many of the backing files, from the top, a chain folder shows
    /// (those inside IMAGE_DIR, unless the user allowed more).
    shown_depth: OnceLock<usize>,
}

/// The stamps of backing files (a file that cannot be examined counts as
/// none: it is missing, and its coming back is a change).
pub(super) fn stamps_of(files: &[chain::BackingFile]) -> Vec<Stamp> {
    files
        .iter()
        .filter_map(|b| std::fs::metadata(&b.path).ok().map(|m| Stamp::of(&m)))
        .collect()
}

impl ImageEntry {
    /// True while every backing file is the version this opening read.
    pub(super) fn backing_unchanged(&self) -> bool {
        stamps_of(self.backing_files()) == self.backing_stamps
    }

    /// The files of the image's backing chain, as resolved at this opening.
    pub(super) fn backing_files(&self) -> &[chain::BackingFile] {
        &self.backing_files
    }

    /// What chain folder `dir` holds in `use_`, its backing files cut to
    /// those that resolve inside `root` when given (from the top: a file
    /// below one not shown is not shown either).
    pub(super) fn folder(
        &self,
        dir: Direction,
        use_: Use,
        root: Option<&Path>,
    ) -> Result<Arc<Shown>> {
        if let Some(f) = self.kept.folders.lock().get(&(dir, use_)) {
            return Ok(Arc::clone(f));
        }
        let img = self.image()?;
        let mut f = chain::folder(img, dir, use_, self.backing_files());
        let depth = *self.kept.shown_depth.get_or_init(|| {
            self.backing_files()
                .iter()
                .take_while(|p| {
                    root.is_none_or(|r| inside(&p.path, r).is_ok_and(|(within, _)| within))
                })
                .count()
        });
        f.pass.truncate(depth);
        let mut by_key = HashMap::new();
        for (i, s) in f.layers.iter().enumerate() {
            by_key.insert(self.layer_key(s)?, i);
        }
        let shown = Arc::new(Shown { folder: f, by_key });
        self.kept
            .folders
            .lock()
            .insert((dir, use_), Arc::clone(&shown));
        Ok(shown)
    }

    pub(super) fn image(&self) -> Result<&Arc<Image>> {
        self.image.as_ref().map_err(|cause| Error::Unreadable {
            path: self.path.clone(),
            cause: Arc::clone(cause),
        })
    }

    pub(super) fn snapshot_index(&self, key: &SnapKey) -> Result<usize> {
        let img = self.image()?;
        img.snapshots()
            .iter()
            .position(|s| SnapKey::of(s) == *key)
            .ok_or_else(|| Error::SnapshotGone { id: key.id.clone() })
    }

    pub(super) fn state(&self, which: StateId) -> Result<Arc<State>> {
        let img = self.image()?;
        if let Some(e) = self.kept.failed_states.lock().get(&which) {
            return Err(Error::Again(Arc::clone(e)));
        }
        self.memos
            .states
            .get_or_load((img.id(), which), || img.state(which))
            .map_err(|e| {
                // A state that cannot be opened stays so while the image is
                // unchanged: remember why, rather than read its L1 table again.
                let e = Arc::new(e);
                self.kept.failed_states.lock().insert(which, Arc::clone(&e));
                Error::Again(e)
            })
    }

    pub(super) fn info(&self, path: &Path, use_: Use) -> Arc<(String, String)> {
        if let Some(i) = self.kept.info.lock().get(&use_) {
            return Arc::clone(i);
        }
        let info = Arc::new({
            // One report is gathered at a time, on a thread of its own: a
            // check holds a count per cluster of the file and a list per
            // state while it runs, and the allocator keeps a thread's peak
            // for that thread, so gathering on the serving threads would
            // leave that peak behind on each of them.
            let _one = self.memos.report_gate.lock();
            std::thread::scope(|s| {
                s.spawn(|| self.gather_info(path, use_))
                    .join()
                    .unwrap_or_else(|_| {
                        let msg = "the report could not be gathered";
                        let json = serde_json::json!({"error": msg});
                        (format!("{msg}\n"), format!("{json:#}\n"))
                    })
            })
        });
        self.kept.info.lock().insert(use_, Arc::clone(&info));
        info
    }

    fn gather_info(&self, path: &Path, use_: Use) -> (String, String) {
        let layers = |d: Direction| -> Result<Vec<chain::LayerFigures>> {
            let img = self.image()?;
            chain::folder(img, d, use_, self.backing_files())
                .layers
                .iter()
                .map(|s| Ok(chain::LayerFigures::of(s, &*self.layer(s)?)))
                .collect()
        };
        match self
            .image()
            .and_then(|img| Info::gather_with(img, use_, &layers))
        {
            Ok(i) => (i.to_text(), format!("{:#}\n", i.to_json())),
            Err(e) => {
                let text = match &self.image {
                    Err(open) => open_error_text(path, open),
                    Ok(_) => open_error_text(path, &e),
                };
                let json = serde_json::json!({"filename": path.display().to_string(), "error": e.to_string()});
                (text, format!("{json:#}\n"))
            }
        }
    }

    pub(super) fn state_key(&self, w: StateId) -> Result<StateKey> {
        Ok(match w {
            StateId::Active => StateKey::Active,
            StateId::Snapshot(i) => StateKey::Snap(SnapKey::of(&self.image()?.snapshots()[i])),
        })
    }

    pub(super) fn layer_key(&self, s: &LayerSpec) -> Result<LayerKey> {
        Ok(LayerKey {
            file_name: s.file_name.clone(),
            x: self.state_key(s.x)?,
            y: s.y.map(|y| self.state_key(y)).transpose()?,
            backing: s.backing.clone(),
        })
    }

    /// The current spec of the layer `key` names, if it still exists.
    pub(super) fn spec(
        &self,
        dir: Direction,
        use_: Use,
        root: Option<&Path>,
        key: &LayerKey,
    ) -> Result<LayerSpec> {
        let shown = self.folder(dir, use_, root)?;
        match shown.by_key.get(key) {
            Some(&i) => Ok(shown.folder.layers[i].clone()),
            None => Err(Error::NotFound {
                name: key.file_name.clone(),
            }),
        }
    }

    pub(super) fn layer(&self, spec: &LayerSpec) -> Result<Arc<Layer>> {
        let img = self.image()?;
        let map = |w: StateId| -> Result<Arc<ClusterMap>> {
            self.memos
                .maps
                .get_or_load((img.id(), w), || ClusterMap::of(&*self.state(w)?))
        };
        // Planned once per pair of states: the layers of one state over
        // another in forward/ and incremental/ differ only in the names
        // written into their headers.
        let states = LayerSpec {
            file_name: String::new(),
            backing: None,
            ..spec.clone()
        };
        let plan = self
            .memos
            .layers
            .get_or_load((img.id(), states.clone()), || {
                chain::build_with(img, &states, &map)
            })?;
        let layer = Arc::new(plan.with_backing(spec.backing.as_ref())?);
        self.kept
            .layer_sizes
            .lock()
            .insert(spec.clone(), layer.size());
        Ok(layer)
    }

    /// A layer's size, planning it only if it was never planned.
    pub(super) fn layer_size(&self, spec: &LayerSpec) -> Result<u64> {
        if let Some(&n) = self.kept.layer_sizes.lock().get(spec) {
            return Ok(n);
        }
        Ok(self.layer(spec)?.size())
    }

    /// The bytes of a chain folder's manifest (`chain.json`, `INDEX`), for
    /// the folder as it is shown.
    pub(super) fn manifest(
        &self,
        dir: Direction,
        folder: &chain::Folder,
        use_: Use,
    ) -> Result<Arc<Vec<u8>>> {
        if let Some(m) = self.kept.manifests.lock().get(&(dir, use_)) {
            return Ok(Arc::clone(m));
        }
        let img = self.image()?;
        // INDEX names files only; chain.json gives their figures too.
        let figures = match dir {
            Direction::Incremental => Vec::new(),
            _ => folder
                .layers
                .iter()
                .map(|s| Ok(chain::LayerFigures::of(s, &*self.layer(s)?)))
                .collect::<Result<Vec<_>>>()?,
        };
        let m = Arc::new(chain::manifest_bytes(img, dir, folder, &figures));
        self.kept
            .manifests
            .lock()
            .insert((dir, use_), Arc::clone(&m));
        Ok(m)
    }

    /// A layer's mtime: the later of the dates of the states it is built
    /// from (the image file's mtime stands for the active state, the backing
    /// file's for the image's own backing).
    pub(super) fn layer_time(&self, spec: &LayerSpec) -> Result<SystemTime> {
        let img = self.image()?;
        let x = chain::state_time(img, spec.x);
        let y = match spec.y {
            Some(y) => chain::state_time(img, y),
            None => img
                .backing()
                .and_then(|b| b.path.as_ref())
                .and_then(|p| std::fs::metadata(p).ok())
                .map_or(UNIX_EPOCH, |m| mtime_of(&m)),
        };
        Ok(x.max(y))
    }

    /// Log a failure to serve this image, once.
    pub(super) fn log_once(&self, path: &Path, e: &Error) {
        if !self.logged.swap(true, Ordering::Relaxed) {
            log::warn!("{}: {e}", path.display());
        }
    }
}
