//! The FUSE adapter: a thin layer that turns kernel requests into calls on
//! the [`Tree`] and its answers into replies. No logic lives here.

pub mod mount;

use std::ffi::OsStr;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    WriteFlags,
};

use crate::error::Error;
use crate::tree::{Attr, Caching, Kind, Tree};

/// How long the kernel may trust the attributes of a file whose bytes
/// cannot change while it exists (see [`Attr::fixed`]) and the name and
/// attributes of a folder (whose listing is read afresh at every readdir).
/// Every other file's attributes, and the name of every file, are answered
/// with no time to live: a name can come to stand for another file (a
/// snapshot deleted and taken again, a layer built over another state, an
/// image replaced), and a stat or open after a change must see it at once.
pub const FIXED_TTL: Duration = Duration::from_secs(1);

fn ttl(a: &Attr) -> Duration {
    if a.fixed { FIXED_TTL } else { Duration::ZERO }
}

/// How long the kernel may keep a name's binding to its inode.
fn entry_ttl(a: &Attr) -> Duration {
    if a.kind == Kind::Dir {
        FIXED_TTL
    } else {
        Duration::ZERO
    }
}

/// Largest read the kernel passes on at once: one read(2) of a file opened
/// with O_DIRECT, or one readahead window (1 MiB).
pub const MAX_READ: u32 = 1 << 20;

/// Size of one read request (256 KiB, the `max_read` of a mount made as
/// root; through fusermount, requests are up to [`MAX_READ`]). The kernel cuts
/// a read of up to [`MAX_READ`] into requests of this size and sends them
/// all at once (readahead always does; a direct read does with
/// FUSE_ASYNC_DIO), so that every serving thread copies a share of it
/// instead of one thread copying the whole of it while the others wait.
pub const REQUEST_SIZE: u32 = 256 << 10;

/// The tree, served over FUSE.
pub struct Fs {
    tree: Tree,
}

impl Fs {
    /// Serve `tree`.
    pub fn new(tree: Tree) -> Fs {
        Fs { tree }
    }
}

fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: match a.kind {
            Kind::Dir => FileType::Directory,
            Kind::File => FileType::RegularFile,
        },
        perm: a.perm,
        nlink: if a.kind == Kind::Dir { 2 } else { 1 },
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        // Tools size their buffers by st_blksize: ask for large reads.
        blksize: MAX_READ,
        flags: 0,
    }
}

impl Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // max_write also sets max_pages, which bounds the size of reads.
        let _ = config.set_max_write(MAX_READ);
        // Kernels that do not offer it send a direct read's requests one
        // after the other, as before.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ASYNC_DIO);
        // A file opened for direct reads (Caching::Direct) can still be
        // mapped shared, on kernels that offer it (6.6 on).
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        // The kernel offers its default readahead (128 KiB) and takes no
        // more here; a mount made as root raises its window to MAX_READ
        // through sysfs once this handshake is over (mount.rs), and files
        // opened after that read ahead 1 MiB, in requests of REQUEST_SIZE.
        if let Err(max) = config.set_max_readahead(MAX_READ) {
            let _ = config.set_max_readahead(max);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.tree.lookup(parent.0, name) {
            Ok(a) => reply.entry_with_ttls(&ttl(&a), &entry_ttl(&a), &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.tree.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree.getattr(ino.0) {
            Ok(a) => reply.attr(&ttl(&a), &file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.tree.open(ino.0, req.pid()) {
            Ok((fh, caching)) => {
                let f = match caching {
                    Caching::Keep => FopenFlags::FOPEN_KEEP_CACHE,
                    Caching::Drop => FopenFlags::empty(),
                    Caching::Direct => FopenFlags::FOPEN_DIRECT_IO,
                };
                reply.opened(FileHandle(fh), f)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        log::debug!(
            "read fh {} offset {offset} size {size} thread {:?}",
            fh.0,
            std::thread::current().id()
        );
        match self.tree.read(fh.0, offset, size as usize) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.tree.release(fh.0);
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.tree.opendir(ino.0, req.pid()) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.tree.releasedir(fh.0);
        reply.ok();
    }

    /// No file here is a terminal or a device: "not a typewriter", as a
    /// regular file answers (tools ask TCGETS of files they read).
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    /// Nothing is ever written, so there is nothing to sync: success.
    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    /// As for a file, nothing to sync: success.
    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // The entries taken at opendir: a listing read in parts is one state.
        let entries = match self.tree.dir_entries(fh.0) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        let entries = entries.iter().cloned();
        let dots = [
            (ino.0, Kind::Dir, ".".into()),
            (ino.0, Kind::Dir, "..".into()),
        ];
        for (i, (child, kind, name)) in dots
            .into_iter()
            .chain(entries)
            .enumerate()
            .skip(offset as usize)
        {
            let ft = if kind == Kind::Dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(INodeNo(child), (i + 1) as u64, ft, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (blocks, files) = self.tree.statfs();
        reply.statfs(blocks, 0, 0, files, 0, 512, 255, 512);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let Ok(off) = u64::try_from(offset) else {
            return reply.error(Errno::EINVAL);
        };
        let data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            _ => return reply.error(Errno::EINVAL),
        };
        match self.tree.seek(fh.0, off, data) {
            Ok(Some(p)) => reply.offset(p as i64),
            Ok(None) => reply.error(Errno::ENXIO),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        if mask.contains(fuser::AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        match self.tree.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // No file has extended attributes. ENOSYS tells the kernel once for
        // the whole mount, so that `ls -l`'s look-ups of security and ACL
        // attributes are answered without a round trip (EOPNOTSUPP).
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }
}
