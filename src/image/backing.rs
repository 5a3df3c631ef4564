//! Backing files: resolving the name an image records, keeping it inside
//! IMAGE_DIR, and opening it (qcow2 or raw) with loops and depth bounded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Image, OpenOptions, StateId, is_qcow2};
use crate::error::{Error, Result};
use crate::view::{RawView, View};

/// Longest backing chain followed below an image. Deeper chains are an
/// error; the bound keeps a crafted chain from exhausting files or stack.
pub const MAX_BACKING_CHAIN: usize = 64;

/// The backing file of an image, as resolved when the image was opened.
pub struct Backing {
    /// The image whose backing file this is, as it was opened.
    pub of: PathBuf,
    /// The name written in the image.
    pub name: String,
    /// The format it is read as ("qcow2" or "raw").
    pub format: Option<String>,
    /// The resolved path, when resolution got that far.
    pub path: Option<PathBuf>,
    /// The backing image, when it is a qcow2 image that opened: the next
    /// link of the chain.
    pub image: Option<Arc<Image>>,
    /// The view, or why there is none, with its kind. A missing backing
    /// file is an error when its bytes are needed, never zeros.
    pub view: std::result::Result<Arc<dyn View>, Arc<Error>>,
}

impl Backing {
    /// The view, or an error that says why there is none, naming the
    /// backing file and the image that uses it.
    pub fn view(&self) -> Result<&Arc<dyn View>> {
        self.view.as_ref().map_err(|cause| Error::Backing {
            image: self.of.clone(),
            name: self.name.clone(),
            cause: Arc::clone(cause),
        })
    }
}

/// The path a name recorded in an image stands for: absolute as is,
/// relative to the image's folder otherwise.
pub fn resolve_name(dir: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// True when `path` resolves (symlinks followed) to a place inside `root`,
/// which must itself be resolved already; also gives the resolved path.
pub fn inside(path: &Path, root: &Path) -> std::io::Result<(bool, PathBuf)> {
    let canon = std::fs::canonicalize(path)?;
    Ok((canon.starts_with(root), canon))
}

/// Refuse a backing or data file outside the backing root, when one is set.
pub(super) fn check_inside(path: &Path, opts: &OpenOptions) -> Result<()> {
    let Some(root) = &opts.backing_root else {
        return Ok(());
    };
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
    match inside(path, &root) {
        Ok((true, _)) => Ok(()),
        Ok((false, canon)) => Err(Error::Outside { path: canon, root }),
        Err(e) => Err(Error::io("resolve", path, e)),
    }
}

/// A backing file as opened: its view, and its image when it is qcow2.
type Opened = (Arc<dyn View>, Option<Arc<Image>>);

/// Open the backing file `name` of the image at `of` (in folder `dir`),
/// below the images of `chain`. What fails is kept in the result, with its
/// kind: the image opens, and only reads that need the backing file fail.
pub(super) fn open_backing(
    of: &Path,
    name: &str,
    format: Option<&str>,
    opts: &OpenOptions,
    chain: &mut Vec<PathBuf>,
) -> Backing {
    let dir = of.parent().unwrap_or(Path::new("."));
    let path = resolve_name(dir, name);
    let opened = (|| -> Result<Opened> {
        check_inside(&path, opts)?;
        let canon = std::fs::canonicalize(&path).map_err(|e| Error::io("resolve", &path, e))?;
        if chain.contains(&canon) {
            return Err(Error::BackingLoop { path: canon });
        }
        if chain.len() >= MAX_BACKING_CHAIN {
            return Err(Error::ChainTooDeep {
                limit: MAX_BACKING_CHAIN,
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
            Ok((Arc::new(img.state(StateId::Active)?), Some(img)))
        } else {
            Ok((Arc::new(RawView::open(&path)?), None))
        }
    })();
    let (view, image) = match opened {
        Ok((view, image)) => (Ok(view), image),
        Err(e) => (Err(Arc::new(e)), None),
    };
    Backing {
        of: of.to_path_buf(),
        name: name.to_string(),
        format: format.map(str::to_string),
        path: Some(path),
        image,
        view,
    }
}

impl Image {
    /// Ok when every file of the image's backing chain could be opened;
    /// else why the first that could not was not, naming the image that
    /// uses it. Reads of guest bytes that no image of the chain holds fail
    /// with this error.
    pub fn backing_readable(&self) -> Result<()> {
        let mut next = self.backing();
        while let Some(b) = next {
            b.view()?;
            next = b.image.as_ref().and_then(|i| i.backing());
        }
        Ok(())
    }
}
