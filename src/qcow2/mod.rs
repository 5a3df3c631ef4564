//! The qcow2 format (docs/interop/qcow2.txt): every on-disk structure is
//! decoded, and where layers write it encoded, here and nowhere else.

pub mod be;
pub mod bitmap;
pub mod cluster;
pub mod compress;
pub mod extensions;
pub mod header;
pub mod l1;
pub mod layer_header;
pub mod offsets;
pub mod refcount;
pub mod snapshot;
pub mod table;
