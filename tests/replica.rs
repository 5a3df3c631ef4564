//! A replica never lies: right after any change to an image or its backing
//! files (a snapshot deleted, taken again under its name, applied; the image
//! replaced; a backing file rebased or written; a write in the same second
//! as the last copy), `rsync -a --delete` of `chain/`, `forward/`,
//! `snapshots/` and `active.raw` gives files equal to what QEMU reads, and
//! names in a chain folder are unique and stay inside a copy of it.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

use qcow2fs::chain::{Direction, Use, export};
use qcow2fs::{Image, OpenOptions, StateId};

fn rsync(from: &Path, to: &Path) {
    let from = if from.is_dir() {
        format!("{}/", from.display())
    } else {
        from.display().to_string()
    };
    run("rsync", &["-a", "--delete", &from, to.to_str().unwrap()]);
}

fn sha256_check(dir: &Path) {
    let out = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// qemu-img compare of a layer with raw bytes.
fn compare(layer: &Path, raw: &[u8], scratch: &Path) {
    let r = scratch.join("compare.raw");
    std::fs::write(&r, raw).unwrap();
    let out = Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", "raw"])
        .arg(layer)
        .arg(&r)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        layer.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Each state of `img` as QEMU reads it, at its own size: (snapshot id or
/// None for the active state, snapshot name, bytes).
fn states(img: &Path, scratch: &Path) -> Vec<(Option<String>, String, Vec<u8>)> {
    let image = Image::open(img, &OpenOptions::new(8 << 20)).unwrap();
    let mut out = vec![(None, String::new(), {
        let mut b = oracle_raw(scratch, img, None);
        b.truncate(image.header().size as usize);
        b
    })];
    for s in image.snapshots() {
        let mut b = oracle_raw(scratch, img, Some(&s.id));
        b.resize(s.disk_size as usize, 0);
        out.push((Some(s.id.clone()), s.name.clone(), b));
    }
    out
}

/// Every layer of a copied chain folder passes `qemu-img check` and equals
/// the state chain.json says it stands for; `sha256sum -c` passes.
fn verify_folder(copy: &Path, want: &[(Option<String>, String, Vec<u8>)], scratch: &Path) {
    sha256_check(copy);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(copy.join("chain.json")).unwrap()).unwrap();
    for l in m["layers"].as_array().unwrap() {
        let file = copy.join(l["file"].as_str().unwrap());
        let (ok, msg) = check_clean(&file);
        assert!(ok, "{}: {msg}", file.display());
        let id = l["stands-for"]["id"].as_str().map(str::to_string);
        let state = want
            .iter()
            .find(|w| w.0 == id)
            .expect("a state of the image");
        compare(&file, &state.2, scratch);
    }
}

/// Replicate every view of `vm.qcow2` from the mount and check each
/// replica against QEMU and against a fresh export.
fn replicate_and_verify(m: &Mount, img: &Path, dst: &Path, scratch: &Path, what: &str) {
    let want = states(img, scratch);
    for folder in ["chain", "forward", "snapshots"] {
        rsync(&m.path(&format!("vm.qcow2/{folder}")), &dst.join(folder));
    }
    rsync(&m.path("vm.qcow2/active.raw"), &dst.join("active.raw"));
    let active = std::fs::read(dst.join("active.raw")).unwrap();
    assert!(
        active == want[0].2,
        "{what}: active.raw differs from QEMU's"
    );
    let image = Image::open(img, &OpenOptions::new(8 << 20)).unwrap();
    let stems = qcow2fs::names::snapshot_stems(image.snapshots());
    let mut names = Vec::new();
    for (s, stem) in image.snapshots().iter().zip(&stems) {
        let got = std::fs::read(dst.join("snapshots").join(format!("{stem}.raw"))).unwrap();
        let w = want
            .iter()
            .find(|w| w.0.as_deref() == Some(s.id.as_str()))
            .unwrap();
        assert!(
            got == w.2,
            "{what}: snapshots/{stem}.raw differs from QEMU's"
        );
        names.push(format!("{stem}.raw"));
    }
    assert_eq!(names_in(&dst.join("snapshots")), {
        names.sort();
        names
    });
    for (dir, folder) in [
        (Direction::Reverse, "chain"),
        (Direction::Forward, "forward"),
    ] {
        let copy = dst.join(folder);
        verify_folder(&copy, &want, scratch);
        // The replica holds exactly what a fresh export writes.
        let fresh = scratch.join("fresh");
        let _ = std::fs::remove_dir_all(&fresh);
        export(&image, dir, Use::Rest, &fresh, false, &mut |_, _| {}).unwrap();
        assert_eq!(names_in(&copy), names_in(&fresh), "{what}: {folder}/ names");
        for n in names_in(&fresh) {
            let same =
                std::fs::read(fresh.join(&n)).unwrap() == std::fs::read(copy.join(&n)).unwrap();
            assert!(same, "{what}: {folder}/{n} is stale");
        }
    }
}

fn write(img: &Path, pattern: u8, at_kib: u64) {
    qemu_io(
        img,
        "qcow2",
        &[&format!("write -P {pattern} {at_kib}k 64k")],
    );
}

#[test]
fn every_change_is_seen_by_the_next_rsync() {
    let (d, src) = scratch_images();
    let s = d.path();
    make_base_and_mid(&src);
    let img = src.join("vm.qcow2");
    overlay(&img, "mid.qcow2", "qcow2", None);
    for (i, name) in ["s1", "s2", "s3", "s4"].iter().enumerate() {
        write(&img, 0x10 + i as u8, 64 * (i as u64 + 1));
        snapshot(&img, name);
    }
    write(&img, 0x20, 1024);
    let m = Mount::new(&src, &s.join("mnt"), &[]);
    let dst = s.join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    replicate_and_verify(&m, &img, &dst, s, "first copy");

    let i = img.to_str().unwrap();
    type Change<'a> = Box<dyn Fn() + 'a>;
    let steps: Vec<(&str, Change)> = vec![
        (
            "delete the oldest",
            Box::new(|| run("qemu-img", &["snapshot", "-d", "s1", i]).truncate(0)),
        ),
        (
            "delete a middle one",
            Box::new(|| run("qemu-img", &["snapshot", "-d", "s3", i]).truncate(0)),
        ),
        (
            "delete and take again under the same name",
            Box::new(|| {
                run("qemu-img", &["snapshot", "-d", "s4", i]);
                write(&img, 0x31, 128);
                snapshot(&img, "s4");
            }),
        ),
        (
            "apply a snapshot",
            Box::new(|| run("qemu-img", &["snapshot", "-a", "s2", i]).truncate(0)),
        ),
        (
            "write in the same second",
            Box::new(|| write(&img, 0x32, 192)),
        ),
        ("write again", Box::new(|| write(&img, 0x33, 192))),
        (
            "replace the image with mv",
            Box::new(|| {
                let new = src.join("new.qcow2");
                overlay(&new, "mid.qcow2", "qcow2", None);
                write(&new, 0x41, 64);
                snapshot(&new, "s2");
                write(&new, 0x42, 64);
                snapshot(&new, "s4");
                std::fs::rename(&new, &img).unwrap();
            }),
        ),
        (
            "rebase a backing file",
            Box::new(|| {
                std::fs::write(src.join("base2.raw"), vec![0x77u8; 3 << 20]).unwrap();
                let mid = src.join("mid.qcow2");
                run(
                    "qemu-img",
                    &[
                        "rebase",
                        "-u",
                        "-b",
                        "base2.raw",
                        "-F",
                        "raw",
                        mid.to_str().unwrap(),
                    ],
                );
            }),
        ),
        (
            "write to a backing file",
            Box::new(|| qemu_io(&src.join("mid.qcow2"), "qcow2", &["write -P 0x55 2M 64k"])),
        ),
    ];
    for (what, change) in &steps {
        change();
        replicate_and_verify(&m, &img, &dst, s, what);
    }
}

#[test]
fn a_gone_snapshot_is_enoent_by_name_and_estale_when_open() {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let (d, src) = scratch_images();
    let img = src.join("vm.qcow2");
    create(&img, "4M", "");
    write(&img, 1, 0);
    snapshot(&img, "a");
    write(&img, 2, 0);
    snapshot(&img, "b");
    let m = Mount::new(&src, &d.path().join("mnt"), &[]);
    let view = m.path("vm.qcow2/snapshots/a.raw");
    let layer = m.path("vm.qcow2/forward/b.qcow2");
    let mut f = std::fs::File::open(&view).unwrap();
    let g = std::fs::File::open(&layer).unwrap();
    let mut first = [0u8; 4096];
    f.read_exact(&mut first).unwrap();
    run("qemu-img", &["snapshot", "-d", "a", img.to_str().unwrap()]);
    // The name is gone at once, and an open file of it is stale.
    assert_eq!(
        std::fs::metadata(&view).unwrap_err().raw_os_error(),
        Some(libc::ENOENT)
    );
    let mut buf = vec![0u8; 1 << 20];
    let err = f.read_at(&mut buf, 2 << 20).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
    // forward/b.qcow2 was a delta over a: its name now stands for another
    // layer, and the open one is stale.
    let err = g.read_at(&mut buf, 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
    // Taken again under the same name: a new file, readable at once.
    write(&img, 3, 0);
    snapshot(&img, "a");
    let mut again = Vec::new();
    std::fs::File::open(&view)
        .unwrap()
        .read_to_end(&mut again)
        .unwrap();
    assert_eq!(again[0], 3);
}

/// The name of a file as `qemu-img info` gives its backing file.
fn backing_of(file: &Path) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&qemu_img(&[
        "info",
        "-U",
        "--output=json",
        file.to_str().unwrap(),
    ]))
    .unwrap();
    v["backing-filename"].as_str().map(str::to_string)
}

/// Names in a chain folder are unique, every backing name resolves inside
/// the folder, and a copy moved elsewhere, with the source renamed away,
/// verifies against what QEMU read before.
fn assert_self_contained(
    folder: &Path,
    want: &[(Option<String>, String, Vec<u8>)],
    scratch: &Path,
) {
    let names = names_in(folder);
    let mut unique = names.clone();
    unique.dedup();
    assert_eq!(names, unique, "{}: names", folder.display());
    let sums = std::fs::read_to_string(folder.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count() + 1, names.len(), "{sums}");
    for n in names.iter().filter(|n| n.ends_with(".qcow2")) {
        if let Some(b) = backing_of(&folder.join(n)) {
            assert!(!b.contains('/'), "{n} names {b}");
            assert!(names.contains(&b), "{n} names {b}, not in the folder");
            assert_ne!(&b, n, "{n} names itself");
        }
    }
    verify_folder(folder, want, scratch);
}

#[test]
fn names_in_a_chain_folder_are_unique_and_copies_stand_alone() {
    let (d, src) = scratch_images();
    let s = d.path();
    // top.qcow2 -> ../d2/base.qcow2 -> ../d1/base.qcow2 -> /abs/path/raw,
    // a snapshot named like a backing file's stem, and a backing file named
    // as the chain's own active layer.
    for sub in ["top", "d1", "d2", "d3"] {
        std::fs::create_dir_all(src.join(sub)).unwrap();
    }
    let raw = src.join("d3/vm_active.qcow2");
    std::fs::write(&raw, vec![0x5au8; 2 << 20]).unwrap();
    let d1 = src.join("d1/base.qcow2");
    overlay(&d1, raw.to_str().unwrap(), "raw", Some("4M"));
    qemu_io(&d1, "qcow2", &["write -P 0xd1 1M 64k"]);
    let d2 = src.join("d2/base.qcow2");
    overlay(&d2, "../d1/base.qcow2", "qcow2", None);
    qemu_io(&d2, "qcow2", &["write -P 0xd2 2M 64k"]);
    let img = src.join("top/vm.qcow2");
    overlay(&img, "../d2/base.qcow2", "qcow2", None);
    write(&img, 0x71, 0);
    snapshot(&img, "base");
    write(&img, 0x72, 64);
    snapshot(&img, "backing2.base");
    write(&img, 0x73, 128);
    let want = states(&img, s);
    let m = Mount::new(&src, &s.join("mnt"), &[]);
    let out = s.join("copies");
    std::fs::create_dir_all(&out).unwrap();
    for folder in ["chain", "forward"] {
        let copy = out.join(folder);
        run(
            "cp",
            &[
                "-r",
                m.path(&format!("top/vm.qcow2/{folder}")).to_str().unwrap(),
                copy.to_str().unwrap(),
            ],
        );
    }
    let image = Image::open(&img, &OpenOptions::new(8 << 20)).unwrap();
    for (dir, name) in [
        (Direction::Reverse, "export-chain"),
        (Direction::Forward, "export-forward"),
    ] {
        export(
            &image,
            dir,
            Use::Rest,
            &out.join(name),
            false,
            &mut |_, _| {},
        )
        .unwrap();
    }
    drop(m);
    std::fs::rename(&src, s.join("gone")).unwrap();
    for folder in ["chain", "forward", "export-chain", "export-forward"] {
        assert_self_contained(&out.join(folder), &want, s);
    }
    // The copies of the mount and the exports are the same files.
    assert_eq!(
        names_in(&out.join("chain")),
        names_in(&out.join("export-chain"))
    );
    // Active layer and the passed-through file would both be vm_active.qcow2.
    let names = names_in(&out.join("chain"));
    assert!(names.contains(&"vm_active.qcow2".to_string()), "{names:?}");
    assert!(
        names.iter().any(|n| n.ends_with(".vm_active.qcow2")),
        "{names:?}"
    );
    let _ = StateId::Active;
}
