//! Detecting an image that another program (a running VM) has open for
//! writing.
//!
//! QEMU takes open file description (OFD) byte-range locks on an image it
//! opens: a shared lock on byte 100 + n for each permission it holds, and on
//! byte 200 + n for each permission it refuses to share. Permission 1 is
//! "write". A writer thus holds a lock on byte 101, which we probe with
//! F_OFD_GETLK without taking any lock ourselves.

use nix::fcntl::{FcntlArg, fcntl};
use std::path::Path;

/// QEMU's lock byte for "this opener writes" (RAW_LOCK_PERM_BASE + write bit).
const QEMU_WRITE_PERM_BYTE: i64 = 100 + 1;

/// True when some process holds QEMU's write-permission lock on `path`.
pub fn in_use(path: &Path) -> bool {
    let Ok(f) = crate::source::open_read_only(path) else {
        return false;
    };
    file_in_use(&f)
}

/// The same for a file already open (read-only, holding no lock): OFD locks
/// belong to open file descriptions, so asking through one of ours sees the
/// writer's lock without opening the file again.
pub fn file_in_use(f: &std::fs::File) -> bool {
    // Ask whether an exclusive lock on the byte would conflict with anyone.
    let mut fl = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: QEMU_WRITE_PERM_BYTE,
        l_len: 1,
        l_pid: 0,
    };
    let probed = fcntl(f, FcntlArg::F_OFD_GETLK(&mut fl));
    probed.is_ok() && fl.l_type != libc::F_UNLCK as i16
}
