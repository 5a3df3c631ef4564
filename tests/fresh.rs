//! Backups that are never silently stale: after a change, rsync at once
//! sees every changed file, SHA256SUMS verifies each replica, and a copy
//! racing a change is one state or an error.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

use qcow2fs::chain::{Direction, export};
use qcow2fs::{Image, OpenOptions};

fn rsync(from: &Path, to: &Path) {
    let from = format!("{}/", from.display());
    run("rsync", &["-a", "--delete", &from, to.to_str().unwrap()]);
}

/// Every file of `replica` equals the file a fresh export of the image's
/// current state writes, and `sha256sum -c` passes in it.
fn assert_replica_current(img: &Path, dir: Direction, replica: &Path, scratch: &Path) {
    let fresh = scratch.join("fresh");
    let _ = std::fs::remove_dir_all(&fresh);
    let image = Image::open(img, &OpenOptions::new(8 << 20)).unwrap();
    export(
        &image,
        dir,
        qcow2fs::chain::Use::Rest,
        &fresh,
        false,
        &mut |_, _| {},
    )
    .unwrap();
    let want = names_in(&fresh);
    assert_eq!(names_in(replica), want, "{dir:?}: file names");
    for n in &want {
        let same = std::fs::read(fresh.join(n)).unwrap() == std::fs::read(replica.join(n)).unwrap();
        assert!(same, "{dir:?}: {n} is not the current file");
    }
    let out = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(replica)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn rsync_right_after_a_change_gets_every_changed_file() {
    let (d, src) = scratch_images();
    let img = src.join("vm.qcow2");
    create(&img, "16M", "");
    qemu_io(&img, "qcow2", &["write -P 1 0 1M"]);
    snapshot(&img, "s0");
    let m = Mount::new(&src, &d.path().join("mnt"), &[]);
    let replicas = [
        (Direction::Forward, "forward", d.path().join("fwd")),
        (Direction::Reverse, "chain", d.path().join("rev")),
    ];
    for (_, folder, replica) in &replicas {
        rsync(&m.path(&format!("vm.qcow2/{folder}")), replica);
    }
    for round in 1..=20u32 {
        // No sleeps: write, snapshot, write, and replicate at once.
        let w1 = format!("write -P {} {}k 64k", round % 250 + 2, round * 64);
        qemu_io(&img, "qcow2", &[&w1]);
        snapshot(&img, &format!("s{round}"));
        let w2 = format!("write -P {} {}k 64k", round % 250 + 3, 4096 + round * 64);
        qemu_io(&img, "qcow2", &[&w2]);
        for (dir, folder, replica) in &replicas {
            rsync(&m.path(&format!("vm.qcow2/{folder}")), replica);
            assert_replica_current(&img, *dir, replica, d.path());
        }
    }
}

#[test]
fn a_copy_racing_writes_is_one_state_or_an_error() {
    let (d, src) = scratch_images();
    let img = src.join("vm.qcow2");
    create(&img, "8M", "");
    qemu_io(&img, "qcow2", &["write -P 1 0 8M"]);
    let m = Mount::new(&src, &d.path().join("mnt"), &[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The writer rewrites the whole disk with one byte value at a time, so
    // a consistent copy holds one value throughout.
    let writer = {
        let (img, stop) = (img.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut k = 2u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                qemu_io(&img, "qcow2", &[&format!("write -P {} 0 8M", k % 250 + 2)]);
                k += 1;
            }
        })
    };
    let (mut ok, mut failed) = (0, 0);
    for i in 0..200 {
        let (from, raw) = if i % 2 == 0 {
            ("vm.qcow2/active.raw", true)
        } else {
            ("vm.qcow2/forward/active.qcow2", false)
        };
        let to = d.path().join(format!("copy{i}"));
        let cp = Command::new("cp")
            .arg(m.path(from))
            .arg(&to)
            .output()
            .unwrap();
        if !cp.status.success() {
            failed += 1;
            continue;
        }
        ok += 1;
        let bytes = if raw {
            std::fs::read(&to).unwrap()
        } else {
            let raw = d.path().join("copy.raw");
            qemu_img(&[
                "convert",
                "-O",
                "raw",
                to.to_str().unwrap(),
                raw.to_str().unwrap(),
            ]);
            std::fs::read(&raw).unwrap()
        };
        assert_eq!(bytes.len(), 8 << 20, "copy {i}: size");
        let first = bytes[0];
        assert!(
            bytes.iter().all(|&b| b == first),
            "copy {i} of {from} mixes two states"
        );
        std::fs::remove_file(&to).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    eprintln!("{ok} copies whole, {failed} failed with an error");
    assert!(ok > 0);
}
