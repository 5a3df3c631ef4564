//! Read-only access to the files an image is made of.
//!
//! Every source file is opened with `O_RDONLY` and never locked, written or
//! truncated: a crash or SIGKILL of the mount cannot touch a source.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An open, read-only source file with the length it had when opened.
#[derive(Debug)]
pub struct SourceFile {
    path: PathBuf,
    file: File,
    len: u64,
    past_end: PastEnd,
}

/// What a read of a structure that runs past the end of the file gives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PastEnd {
    /// An error naming the structure: what the mount and `info` serve.
    #[default]
    Error,
    /// Zeros, as QEMU's block layer reads past the end of a file: what
    /// `check` reads, so that it goes on past a truncation as
    /// `qemu-img check` does and counts what lies beyond.
    Zeros,
}

/// Open `path` for reading only. The one place a source file is opened.
pub fn open_read_only(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

impl SourceFile {
    /// Open `path` read-only and note its length; structures past its end
    /// are errors.
    pub fn open(path: &Path) -> Result<SourceFile> {
        SourceFile::open_reading(path, PastEnd::Error)
    }

    /// Open `path` read-only, reading past its end as `past_end` says.
    pub fn open_reading(path: &Path, past_end: PastEnd) -> Result<SourceFile> {
        let file = open_read_only(path).map_err(|e| Error::io("open", path, e))?;
        let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
        Ok(SourceFile {
            path: path.to_path_buf(),
            file,
            len: meta.len(),
            past_end,
        })
    }

    /// The path the file was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What a read past the end of the file gives.
    pub fn past_end(&self) -> PastEnd {
        self.past_end
    }

    /// How many bytes from the start can be read: the length, or without
    /// bound when the file reads zeros past its end.
    pub fn readable_len(&self) -> u64 {
        match self.past_end {
            PastEnd::Error => self.len,
            PastEnd::Zeros => u64::MAX,
        }
    }

    /// The file's length when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The open file, for metadata queries.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The one check that a structure named `what` of `len` bytes at
    /// `offset` lies wholly inside the file (or, when the file reads zeros
    /// past its end, that its end can be named).
    pub fn check_range(&self, offset: u64, len: u64, what: &str) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len || self.past_end == PastEnd::Zeros => Ok(()),
            _ => Err(Error::PastEof {
                what: what.to_string(),
                offset,
                len,
                file_len: self.len,
            }),
        }
    }

    /// Fill `buf` from `offset`; a structure named `what` that does not lie
    /// wholly inside the file is an error.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64, what: &str) -> Result<()> {
        let len = buf.len() as u64;
        self.check_range(offset, len, what)?;
        // Only what lies inside the file is read; the rest stays zero.
        let inside = self.len.saturating_sub(offset).min(len) as usize;
        buf[inside..].fill(0);
        let buf = &mut buf[..inside];
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::PastEof {
                    what: what.to_string(),
                    offset,
                    len,
                    file_len: self.len,
                }
            } else {
                Error::io(format!("read {what} at {offset:#x}"), &self.path, e)
            }
        })
    }

    /// Read a structure of `len` bytes at `offset` into a new buffer.
    pub fn read_vec(&self, offset: u64, len: u64, what: &str) -> Result<Vec<u8>> {
        let n = usize::try_from(len).map_err(|_| Error::TooLarge {
            what: "read length",
            value: len,
            limit: usize::MAX as u64,
        })?;
        let mut buf = vec![0u8; n];
        self.read_exact_at(&mut buf, offset, what)?;
        Ok(buf)
    }
}
