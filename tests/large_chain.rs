//! Stat of every layer of a large image is fast and reads no data cluster.
//! In its own test binary: it counts data reads process-wide.

mod common;
use common::*;

use std::ffi::OsStr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use qcow2fs::image::DATA_READS;
use qcow2fs::tree::{ROOT_INO, Tree, TreeOptions};

#[test]
fn stat_of_every_layer_is_metadata_only() {
    let (d, src) = scratch_images();
    let img = src.join("big.qcow2");
    create(&img, "32G", "");
    // 20 snapshots with 4 GiB written in all, in extents of varied sizes
    // spread over the disk.
    for s in 0..20u64 {
        let mut cmds = Vec::new();
        for k in 0..40u64 {
            let at = ((s * 7919 + k * 104_729) % 8000) << 22; // 4 MiB slots over 31.25 GiB
            let len = if k % 3 == 0 { 8 << 20 } else { 4 << 20 };
            cmds.push(format!("write -P {} {at} {len}", (s + k) % 250 + 1));
        }
        let cmds: Vec<&str> = cmds.iter().map(|s| s.as_str()).collect();
        qemu_io(&img, "qcow2", &cmds);
        snapshot(&img, &format!("s{s:02}"));
    }
    let written: u64 = 20 * (14 * (8 << 20) + 26 * (4 << 20));
    assert!(written >= 4 << 30, "{written}");
    run("sync", &[]);
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();

    // Through the tree the mount serves, in this process, counting reads.
    let tree = Tree::new(
        &src,
        &TreeOptions {
            cache_bytes: 64 << 20,
            allow_outside_backing: false,
            force_share: false,
        },
    )
    .unwrap();
    let before = DATA_READS.load(Ordering::Relaxed);
    let t = Instant::now();
    let image = tree.lookup(ROOT_INO, OsStr::new("big.qcow2")).unwrap();
    let mut files = 0;
    for folder in ["chain", "forward"] {
        let dir = tree.lookup(image.ino, OsStr::new(folder)).unwrap();
        for (ino, _, name) in tree.readdir(dir.ino, 0).unwrap() {
            // As the kernel does: a listing, then a lookup of each name.
            let a = tree.lookup(dir.ino, &name).unwrap();
            assert_eq!(a.ino, ino);
            assert!(a.size > 0, "{name:?}");
            files += 1;
        }
    }
    let took = t.elapsed();
    // 21 layers, chain.json and SHA256SUMS in each folder.
    assert_eq!(files, 2 * (21 + 2));
    assert_eq!(
        DATA_READS.load(Ordering::Relaxed),
        before,
        "stat read data clusters"
    );
    eprintln!("stat of {files} layer files through the tree: {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "stat of every layer took {took:?}"
    );

    // And through a real mount, cold.
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    let m = Mount::new(&src, &d.path().join("mnt"), &[]);
    let t = Instant::now();
    for folder in ["chain", "forward"] {
        for e in std::fs::read_dir(m.path(&format!("big.qcow2/{folder}"))).unwrap() {
            e.unwrap().metadata().unwrap();
        }
    }
    let took = t.elapsed();
    eprintln!("stat through the mount, cold: {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "stat through the mount took {took:?}"
    );
}
