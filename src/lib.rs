//! qcow2fs: read-only views of qcow2 images, their internal snapshots, and
//! chains of external qcow2 layers synthesized from them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod chain;
pub mod check;
pub mod cli;
pub mod error;
pub mod fuse;
pub mod image;
pub mod layer;
pub mod names;
pub mod parallel;
pub mod qcow2;
pub mod readbuf;
pub mod report;
pub mod source;
pub mod tree;
pub mod view;

pub use error::{Error, Result};
pub use image::{Image, OpenOptions, State, StateId, VmState};
pub use view::{Extent, ExtentKind, View};
