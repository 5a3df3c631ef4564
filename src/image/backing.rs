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
    /// The name written in the image.
    pub name: String,
    /// The format it is read as ("qcow2" or "raw").
    pub format: Option<String>,
    /// The resolved path, when resolution got that far.
    pub path: Option<PathBuf>,
    /// The view, or why there is none. A missing backing file is an error
    /// when its bytes are needed, never zeros.
    pub view: std::result::Result<Arc<dyn View>, String>,
}

impl Backing {
    pub(super) fn view(&self) -> Result<&Arc<dyn View>> {
        self.view.as_ref().map_err(|reason| Error::Backing {
            name: self.name.clone(),
            reason: reason.clone(),
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
pub(super) fn check_inside(path: &Path, opts: &OpenOptions, name: &str) -> Result<()> {
    let Some(root) = &opts.backing_root else {
        return Ok(());
    };
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
    match inside(path, &root) {
        Ok((true, _)) => Ok(()),
        Ok((false, canon)) => Err(Error::Backing {
            name: name.to_string(),
            reason: format!(
                "{} is outside {} (allow it with --allow-outside-backing)",
                canon.display(),
                root.display()
            ),
        }),
        Err(e) => Err(Error::Backing {
            name: name.to_string(),
            reason: format!("{}: {e}", path.display()),
        }),
    }
}

pub(super) fn open_backing(
    dir: &Path,
    name: &str,
    format: Option<&str>,
    opts: &OpenOptions,
    chain: &mut Vec<PathBuf>,
) -> Backing {
    let path = resolve_name(dir, name);
    let view = (|| -> Result<Arc<dyn View>> {
        check_inside(&path, opts, name)?;
        let canon = std::fs::canonicalize(&path).map_err(|e| Error::Backing {
            name: name.to_string(),
            reason: format!("{}: {e}", path.display()),
        })?;
        if chain.contains(&canon) {
            return Err(Error::Backing {
                name: name.to_string(),
                reason: format!("backing chain loops back to {}", canon.display()),
            });
        }
        if chain.len() >= MAX_BACKING_CHAIN {
            return Err(Error::Backing {
                name: name.to_string(),
                reason: format!("backing chain is deeper than {MAX_BACKING_CHAIN} files"),
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
            Ok(Arc::new(img.state(StateId::Active)?))
        } else {
            Ok(Arc::new(RawView::open(&path)?))
        }
    })();
    Backing {
        name: name.to_string(),
        format: format.map(str::to_string),
        path: Some(path),
        view: view.map_err(|e| e.to_string()),
    }
}
