//! One memory budget: what the mount keeps of each image counts against
//! --cache-size, so browsing a folder of large images with many snapshots
//! does not grow the mount.

mod common;
use common::*;

#[test]
fn twenty_images_of_sixty_snapshots_stay_within_the_budget() {
    // 1 TiB with 4 KiB clusters: a 4 MiB L1 table per state; 2 MiB written
    // before each of 60 snapshots. Twenty names for it (hard links): each
    // is a separate image to the mount, opened, checked and planned on its
    // own, at no cost in disk space.
    let (d, src) = scratch_images();
    let first = src.join("vm00.qcow2");
    create(&first, "1T", "cluster_size=4k");
    for i in 0..60u64 {
        let w = format!("write -P {} {}G 2M", i + 1, i * 3);
        qemu_io(&first, "qcow2", &[&w]);
        snapshot(&first, &format!("s{i}"));
    }
    for i in 1..20 {
        std::fs::hard_link(&first, src.join(format!("vm{i:02}.qcow2"))).unwrap();
    }
    let mut m = Mount::new(&src, &d.path().join("mnt"), &["--cache-size", "16M"]);
    run("ls", &["-lR", m.mp.to_str().unwrap()]);
    let mut views = 0;
    for i in 0..20 {
        let snaps = m.path(&format!("vm{i:02}.qcow2/snapshots"));
        for e in std::fs::read_dir(snaps).unwrap() {
            use std::io::Read;
            let mut f = std::fs::File::open(e.unwrap().path()).unwrap();
            let mut buf = [0u8; 4096];
            f.read_exact(&mut buf).unwrap();
            views += 1;
        }
    }
    assert_eq!(views, 20 * 60);
    let peak = peak_rss(m.child.as_ref().unwrap().id());
    eprintln!("peak RSS {} MiB", peak >> 20);
    assert!(peak <= (64 + 16) << 20, "peak RSS {} MiB", peak >> 20);
    m.stop();
}

#[test]
fn six_hundred_snapshots_cost_little_outside_the_budget() {
    // 600 snapshots of one image, taken by a running QEMU (one process,
    // so that the table is not read and rewritten 600 times by qemu-img),
    // listed, summed and listed again under a budget of 1 MiB: what stays
    // is what the mount keeps outside the budget (README, Limits).
    let (d, src) = scratch_images();
    let img = src.join("vm.qcow2");
    create(&img, "1G", "");
    qemu_io(&img, "qcow2", &["write -P 1 0 1M"]);
    let mut vm = common::vm::Vm::start(&img);
    for i in 0..600 {
        if i % 100 == 0 {
            vm.write(i as u8, (i as u64) << 20, 64 << 10);
        }
        vm.savevm(&format!("s{i}"));
    }
    vm.quit();
    let mut m = Mount::new(&src, &d.path().join("mnt"), &["--cache-size", "1M"]);
    let t = std::time::Instant::now();
    run("ls", &["-lR", m.mp.to_str().unwrap()]);
    let listed = t.elapsed();
    let sums = std::fs::read_to_string(m.path("vm.qcow2/chain/SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 602);
    let index = std::fs::read_to_string(m.path("vm.qcow2/incremental/INDEX")).unwrap();
    assert_eq!(index.lines().count(), 600);
    run("ls", &["-lR", m.mp.to_str().unwrap()]);
    let peak = peak_rss(m.child.as_ref().unwrap().id());
    eprintln!(
        "600 snapshots: ls -lR {:.2} s, peak RSS {} MiB",
        listed.as_secs_f64(),
        peak >> 20
    );
    // A guard against growth with snapshots, not a timing.
    assert!(listed.as_secs() < 120, "ls -lR took {listed:?}");
    assert!(peak <= 40 << 20, "peak RSS {} MiB", peak >> 20);
    m.stop();
}
