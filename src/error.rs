//! The one error type of the library.
//!
//! Every variant names what went wrong and carries the evidence (which
//! structure, at which offset, which value, against which bound), so that a
//! log line leads to one place in the code.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while opening or reading an image.
#[derive(Debug)]
pub enum Error {
    /// An operating-system call on a file failed.
    Io {
        /// What was being done, e.g. "read L2 table".
        what: String,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not a qcow2 image (bad magic).
    NotQcow2 {
        /// The file that was probed.
        path: PathBuf,
    },
    /// An on-disk structure is inconsistent with the specification.
    Corrupt {
        /// Which structure, e.g. "L2 table at 0x50000 (L1[3])".
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A table's size is beyond the limit we accept.
    TooLarge {
        /// Which table or field.
        what: &'static str,
        /// The value found on disk.
        value: u64,
        /// The named limit it exceeds.
        limit: u64,
    },
    /// A structure lies (partly) beyond the end of the file.
    PastEof {
        /// Which structure.
        what: String,
        /// Its offset.
        offset: u64,
        /// Its length.
        len: u64,
        /// The file's length.
        file_len: u64,
    },
    /// The image uses a feature that this tool does not read.
    Unsupported {
        /// The feature, named as the specification names it.
        feature: String,
    },
    /// A backing file could not be used.
    Backing {
        /// The backing file name as written in the image.
        name: String,
        /// Why it could not be used.
        reason: String,
    },
    /// A compressed cluster could not be decompressed.
    Decompress {
        /// The host offset of the compressed data.
        offset: u64,
        /// What the decompressor said.
        detail: String,
    },
    /// The snapshot a view stands for no longer exists in the image.
    SnapshotGone {
        /// The snapshot's unique ID.
        id: String,
    },
    /// No such file in the tree.
    NotFound {
        /// The name looked up.
        name: String,
    },
    /// A folder operation on something that is not a folder.
    NotADirectory,
    /// A file operation on a folder.
    IsADirectory,
    /// The image could not be opened; the cause is kept for every request
    /// that needs it while the file is unchanged.
    Unreadable {
        /// The image file.
        path: PathBuf,
        /// Why it could not be opened.
        cause: std::sync::Arc<Error>,
    },
    /// A file whose bytes depend on an image that changed since the file
    /// was opened: reading on would mix two versions.
    Changed {
        /// The image file.
        path: PathBuf,
    },
    /// A failure met before on the same, unchanged image, given again
    /// rather than redoing the work that failed.
    Again(std::sync::Arc<Error>),
    /// The mount could not start or serve.
    Mount {
        /// What failed, with the file or value involved.
        detail: String,
    },
    /// The image is open for writing by another program (a running VM).
    InUse {
        /// The image file.
        path: PathBuf,
    },
}

impl Error {
    /// Build an [`Error::Corrupt`].
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// Build an [`Error::Io`].
    pub fn io(what: impl Into<String>, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            path: path.into(),
            source,
        }
    }

    /// The errno a filesystem request failing with this error should return.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            Error::NotQcow2 { .. } => libc::EIO,
            Error::Corrupt { .. } => libc::EIO,
            Error::TooLarge { .. } => libc::EIO,
            Error::PastEof { .. } => libc::EIO,
            Error::Unsupported { .. } => libc::EIO,
            Error::Backing { .. } => libc::EIO,
            Error::Decompress { .. } => libc::EIO,
            // Gone under an open file or a known inode: a stale handle.
            Error::SnapshotGone { .. } => libc::ESTALE,
            Error::NotFound { .. } => libc::ENOENT,
            Error::NotADirectory => libc::ENOTDIR,
            Error::IsADirectory => libc::EISDIR,
            Error::Unreadable { .. } => libc::EIO,
            Error::Mount { .. } => libc::EIO,
            Error::Changed { .. } => libc::ESTALE,
            Error::Again(e) => e.errno(),
            Error::InUse { .. } => libc::EBUSY,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { what, path, source } => {
                write!(f, "{}: {what}: {source}", path.display())
            }
            Error::NotQcow2 { path } => write!(f, "{}: not a qcow2 image", path.display()),
            Error::Corrupt { what, detail } => write!(f, "{what}: {detail}"),
            Error::TooLarge { what, value, limit } => {
                write!(f, "{what} is {value}, more than the limit of {limit}")
            }
            Error::PastEof {
                what,
                offset,
                len,
                file_len,
            } => write!(
                f,
                "{what} at {offset:#x} (+{len:#x}) lies past the end of the file ({file_len:#x})"
            ),
            Error::Unsupported { feature } => write!(f, "unsupported qcow2 feature: {feature}"),
            Error::Backing { name, reason } => write!(f, "backing file '{name}': {reason}"),
            Error::Decompress { offset, detail } => {
                write!(f, "compressed cluster at {offset:#x}: {detail}")
            }
            Error::SnapshotGone { id } => write!(f, "snapshot id {id} no longer exists"),
            Error::NotFound { name } => write!(f, "{name}: no such file"),
            Error::NotADirectory => write!(f, "not a folder"),
            Error::IsADirectory => write!(f, "is a folder"),
            Error::Unreadable { path, cause } => {
                write!(f, "{}: cannot be opened: {cause}", path.display())
            }
            Error::Mount { detail } => write!(f, "{detail}"),
            Error::Again(e) => write!(f, "{e}"),
            Error::Changed { path } => write!(
                f,
                "{}: the image changed while the file was open; open it again",
                path.display()
            ),
            Error::InUse { path } => write!(
                f,
                "{}: image is in use by another program (use --force-share to read it anyway)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Unreadable { cause, .. } => Some(cause.as_ref()),
            Error::Again(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}
