//! Time that follows the metadata, sizes as QEMU reads them, and requests
//! that cannot loop.

mod common;
use common::*;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use qcow2fs::{Image, OpenOptions, StateId, View};

#[test]
fn a_sparse_disk_of_2000_pib_is_stat_listed_and_sought_at_once() {
    let (d, src) = scratch_images();
    let img = src.join("h.qcow2");
    create(&img, "2000P", "cluster_size=2M");
    let mut m = Mount::new(&src, &d.path().join("mnt"), &[]);
    let t = Instant::now();
    let meta = std::fs::metadata(m.path("h.qcow2/active.raw")).unwrap();
    assert_eq!(meta.len(), 2000u64 << 50);
    assert_eq!(std::os::unix::fs::MetadataExt::blocks(&meta), 0);
    run("ls", &["-lR", m.mp.to_str().unwrap()]);
    let f = std::fs::File::open(m.path("h.qcow2/active.raw")).unwrap();
    let data = nix::unistd::lseek(f.as_fd(), 0, nix::unistd::Whence::SeekData);
    assert_eq!(data, Err(nix::errno::Errno::ENXIO));
    let hole = nix::unistd::lseek(f.as_fd(), 0, nix::unistd::Whence::SeekHole).unwrap();
    assert_eq!(hole, 0);
    drop(f);
    // A guard against spinning, not a benchmark: the work is a few scans
    // of a 32 MiB L1 table.
    let took = t.elapsed();
    assert!(took < Duration::from_secs(20), "{took:?}");
    m.stop();
}

#[test]
fn sizes_are_whole_sectors_as_qemu_reads_them() {
    let d = scratch();
    for size in [1u64, 511, 8_388_612] {
        let img = d.path().join(format!("s{size}.qcow2"));
        create(&img, "8M", "");
        qemu_io(&img, "qcow2", &["write -P 0x5c 0 8M"]);
        poke(&img, 24, &size.to_be_bytes());
        let theirs = oracle_raw(d.path(), &img, None);
        let image = Image::open(&img, &OpenOptions::new(8 << 20)).unwrap();
        let state = image.state(StateId::Active).unwrap();
        assert_eq!(state.size(), theirs.len() as u64, "size {size}");
        assert_eq!(read_all(&state, 1 << 20), theirs, "size {size}");
        assert_eq!(image.header().size, size & !511);
    }
}

#[test]
fn a_read_at_the_end_of_the_address_space_ends() {
    let d = scratch();
    let img = d.path().join("vm.qcow2");
    create(&img, "8M", "");
    qemu_io(&img, "qcow2", &["write -P 1 0 64k"]);
    let image = Image::open(&img, &OpenOptions::new(8 << 20)).unwrap();
    let state = image.state(StateId::Active).unwrap();
    // Past the L1 table nothing is allocated: zeros, or an error, but an
    // answer (no overflow, no loop on an empty run).
    let mut buf = [7u8; 100];
    let r = state.read_mapped(&mut buf[..50], u64::MAX - 50, false);
    assert!(r.is_err() || buf[..50].iter().all(|&b| b == 0));
}
