//! chain/ and forward/ through a real mount: cp -r, rsync, and stable bytes.

mod common;
use common::*;

use std::path::Path;

use qcow2fs::chain::Direction;

/// Longer than the attribute TTL the mount gives the kernel.
const ATTR_WAIT: std::time::Duration = std::time::Duration::from_millis(1100);

fn sha256(p: &Path) -> String {
    run("sha256sum", &[p.to_str().unwrap()])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn sums(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), sha256(&e.path()))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn copied_chains_verify_and_match_export_across_mounts() {
    let (d, src) = scratch_images();
    let img = build_chain_image(&src, "vm.qcow2", "");
    let m = Mount::new(&src, &d.path().join("mnt"), &[]);
    let names: Vec<String> = std::fs::read_dir(m.path("vm.qcow2/chain"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.contains(&"vm_snapshot[0].qcow2".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"vm_active.qcow2".to_string()));
    assert!(names.contains(&"mid.qcow2".to_string()) && names.contains(&"base.raw".to_string()));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.path("vm.qcow2/chain/chain.json")).unwrap())
            .unwrap();
    assert_eq!(json["layers"].as_array().unwrap().len(), 5);
    assert_eq!(json["layers"][0]["file"], "vm_active.qcow2");
    assert_eq!(json["layers"][1]["backing"], "vm_active.qcow2");

    for (folder, dir) in [
        ("chain", Direction::Reverse),
        ("forward", Direction::Forward),
    ] {
        let copy = d.path().join(format!("copy-{folder}"));
        run(
            "cp",
            &[
                "-r",
                m.path(&format!("vm.qcow2/{folder}")).to_str().unwrap(),
                copy.to_str().unwrap(),
            ],
        );
        verify_chain(d.path(), &img, &copy, dir);
        // The same bytes as `qcow2fs export`.
        let out = d.path().join(format!("export-{folder}"));
        let flag = if dir == Direction::Forward {
            "--forward"
        } else {
            "--reverse"
        };
        let (code, _, err) =
            qcow2fs(&["export", flag, img.to_str().unwrap(), out.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(sums(&copy), sums(&out), "{folder}: mount and export differ");
        let (code, _, err) =
            qcow2fs(&["export", flag, img.to_str().unwrap(), out.to_str().unwrap()]);
        assert_ne!(code, 0);
        assert!(err.contains("--force"), "{err}");
    }
    let first = sums(&m.path("vm.qcow2/chain"));
    drop(m);
    let m = Mount::new(&src, &d.path().join("mnt2"), &[]);
    assert_eq!(
        first,
        sums(&m.path("vm.qcow2/chain")),
        "bytes differ across mounts"
    );
}

/// Files rsync transferred, from --itemize-changes output.
fn rsync(from: &Path, to: &Path) -> Vec<String> {
    let out = run(
        "rsync",
        &[
            "-a",
            "--itemize-changes",
            &format!("{}/", from.display()),
            to.to_str().unwrap(),
        ],
    );
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with(">f"))
        .map(|l| l.split_once(' ').unwrap().1.to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn rsync_skips_unchanged_layers_and_never_keeps_a_changed_one() {
    let (d, src) = scratch_images();
    let img = build_chain_image(&src, "vm.qcow2", "");
    let m = Mount::new(&src, &d.path().join("mnt"), &[]);
    let fwd = m.path("vm.qcow2/forward");
    let replica = d.path().join("replica");
    assert!(rsync(&fwd, &replica).len() >= 5);
    assert_eq!(
        rsync(&fwd, &replica),
        Vec::<String>::new(),
        "second run transferred files"
    );

    // A new snapshot and a write: only the new layer, active.qcow2 and the
    // manifest change. rsync compares mtimes in whole seconds by default,
    // so the change is made in a later second than the copy.
    std::thread::sleep(ATTR_WAIT);
    snapshot(&img, "five");
    qemu_io(&img, "qcow2", &["write -P 0x55 3M 64k"]);
    // No wait: files that can change are never cached by the kernel.
    assert!(fwd.join("five.qcow2").exists());
    assert_eq!(
        rsync(&fwd, &replica),
        ["SHA256SUMS", "active.qcow2", "chain.json", "five.qcow2"]
    );
    verify_chain(d.path(), &img, &replica, Direction::Forward);

    // Deleting a middle snapshot changes the layer built on it; rsync's
    // quick check (size and mtime) must see it.
    std::thread::sleep(ATTR_WAIT);
    qemu_img(&["snapshot", "-d", "two", img.to_str().unwrap()]);
    wait_until("the snapshot to go", || !fwd.join("two.qcow2").exists());
    std::thread::sleep(ATTR_WAIT);
    run(
        "rsync",
        &[
            "-a",
            "--delete",
            &format!("{}/", fwd.display()),
            replica.to_str().unwrap(),
        ],
    );
    verify_chain(d.path(), &img, &replica, Direction::Forward);
}

#[test]
fn a_change_in_the_same_second_as_a_copy_still_reaches_rsync() {
    let (d, src) = scratch_images();
    let img = build_chain_image(&src, "vm.qcow2", "");
    let m = Mount::new(&src, &d.path().join("mnt"), &[]);
    let chain = m.path("vm.qcow2/chain");
    let replica = d.path().join("replica");
    rsync(&chain, &replica);
    let before = std::fs::metadata(chain.join("vm_active.qcow2")).unwrap();

    // A write into an allocated cluster changes active's bytes but not the
    // file's size; putting the image's mtime back makes it look like a
    // write in the same instant as the copy (only its ctime moves).
    let mtime = std::fs::metadata(&img).unwrap().modified().unwrap();
    qemu_io(&img, "qcow2", &["write -P 0x66 5M 4k"]);
    std::fs::File::options()
        .write(true)
        .open(&img)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::thread::sleep(ATTR_WAIT);
    let after = std::fs::metadata(chain.join("vm_active.qcow2")).unwrap();
    assert_eq!(after.len(), before.len());
    let secs = |m: &std::fs::Metadata| {
        m.modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    assert!(
        secs(&after) > secs(&before),
        "the shown mtime moved on to a later second"
    );
    // Layers built only from snapshots keep theirs.
    let moved = rsync(&chain, &replica);
    assert!(moved.contains(&"vm_active.qcow2".to_string()), "{moved:?}");
    assert!(
        !moved.iter().any(|f| f == "vm_snapshot[0].qcow2"),
        "{moved:?}"
    );
    verify_chain(d.path(), &img, &replica, Direction::Reverse);
    // The shown mtime is stable while the image is.
    std::thread::sleep(ATTR_WAIT);
    assert_eq!(rsync(&chain, &replica), Vec::<String>::new());
}

#[test]
fn export_puts_every_file_on_disk_before_it_returns() {
    let d = scratch();
    let img = build_chain_image(d.path(), "vm.qcow2", "");
    let (out, trace) = (at(d.path(), "out"), at(d.path(), "trace"));
    let ok = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .arg(bin())
        .args(["export", img.to_str().unwrap(), out.to_str().unwrap()])
        .status()
        .expect("strace runs")
        .success();
    assert!(ok);
    let text = std::fs::read_to_string(&trace).unwrap();
    let synced = text.lines().filter(|l| l.ends_with("= 0")).count();
    // Every file, and the folder that names them.
    let files = std::fs::read_dir(&out).unwrap().count();
    assert!(files > 3);
    assert!(synced > files, "{synced} syncs for {files} files:\n{text}");
}

#[test]
fn a_copy_is_hashed_as_it_is_read_holes_and_all() {
    let (d, src) = scratch_images();
    build_chain_image(&src, "vm.qcow2", "");
    let log = at(d.path(), "log");
    let mut m = Mount::logged(&src, &d.path().join("mnt"), &log);
    // The source files have holes (the rest of a cluster past a short L1
    // table), which GNU cp skips with SEEK_HOLE.
    let holed = std::fs::read_dir(&src).unwrap().any(|e| {
        let meta = e.unwrap().metadata().unwrap();
        std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < meta.len()
    });
    assert!(holed, "no source file with a hole to skip");
    let copy = d.path().join("copy");
    run(
        "cp",
        &[
            "-r",
            m.path("vm.qcow2/chain").to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    run(
        "sh",
        &[
            "-c",
            &format!("cd '{}' && sha256sum -c --quiet SHA256SUMS", copy.display()),
        ],
    );
    assert_eq!(m.stop(), 0);
    // Every file the copy read had its digest taken as it was read: none
    // was left to be hashed again when the copy reached SHA256SUMS.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("closed before it was read in full"),
        "{}",
        text.lines()
            .filter(|l| !l.contains("read fh"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
