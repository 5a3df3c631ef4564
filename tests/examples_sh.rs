//! The shell examples work as their comments say, on the demo folder.

mod common;
use common::*;

use std::path::{Path, PathBuf};

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn demo_backup_and_replicate() {
    let d = scratch();
    let demo = d.path().join("demo");
    run("sh", &[&example("make-demo.sh"), demo.to_str().unwrap()]);
    let m = Mount::new(&demo, &d.path().join("mnt"), &[]);
    assert!(m.path("vm1.qcow2/snapshots/monday.raw").exists());
    assert!(m.path("vm2.qcow2/snapshots/before-upgrade.raw").exists());

    let backup = d.path().join("backup");
    let out = run(
        "sh",
        &[
            &example("backup-chain.sh"),
            m.mp.to_str().unwrap(),
            backup.to_str().unwrap(),
        ],
    );
    assert!(out.contains("backup verified"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok: ")).count(),
        7,
        "{out}"
    );

    // replicate.sh: the first night fetches every layer and base.img, the
    // next fetches nothing.
    let replica = d.path().join("replica");
    let night = || {
        run(
            "sh",
            &[
                &example("replicate.sh"),
                m.mp.to_str().unwrap(),
                replica.to_str().unwrap(),
            ],
        )
    };
    let fetched = |out: &str| out.lines().filter(|l| l.starts_with("fetched: ")).count();
    let verified = |out: &str| out.lines().filter(|l| l.starts_with("verified: ")).count();
    let first = night();
    assert_eq!((fetched(&first), verified(&first)), (6, 2), "{first}");
    let second = night();
    assert_eq!((fetched(&second), verified(&second)), (0, 2), "{second}");

    // A middle snapshot and a newest one deleted at the source: the replica
    // rebases the one after the middle one and removes the newest, from its
    // own files; every kept snapshot still restores and verifies.
    let vm1 = demo.join("vm1.qcow2");
    let vm2 = demo.join("vm2.qcow2");
    qemu_img(&["snapshot", "-d", "tuesday", vm1.to_str().unwrap()]);
    qemu_img(&["snapshot", "-d", "after-upgrade", vm2.to_str().unwrap()]);
    let third = night();
    assert!(third.contains("rebased onto"), "{third}");
    assert!(third.contains("(removed)"), "{third}");
    assert_eq!((fetched(&third), verified(&third)), (0, 2), "{third}");
    for (img, folder, kept) in [
        (&vm1, "vm1.qcow2", vec!["monday", "wednesday"]),
        (&vm2, "vm2.qcow2", vec!["before-upgrade"]),
    ] {
        let out = replica.join(folder);
        run(
            "sh",
            &[
                "-c",
                "cd \"$1\" && sha256sum -c --quiet SHA256SUMS",
                "-",
                out.to_str().unwrap(),
            ],
        );
        let layers: Vec<String> = names_in(&out)
            .into_iter()
            .filter(|n| n.contains(".id"))
            .collect();
        assert_eq!(layers.len(), kept.len(), "{layers:?}");
        for name in kept {
            let layer = layers
                .iter()
                .find(|l| l.starts_with(&format!("{name}.")))
                .unwrap();
            let raw = d.path().join("restored.raw");
            let l = format!("snapshot.name={name}");
            let r = raw.to_str().unwrap();
            qemu_img(&["convert", "-l", &l, "-O", "raw", img.to_str().unwrap(), r]);
            qemu_img(&[
                "compare",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "raw",
                out.join(layer).to_str().unwrap(),
                r,
            ]);
            let (ok, msg) = check_clean(&out.join(layer));
            assert!(ok, "{layer}: {msg}");
        }
    }

    // The last snapshot of vm2 deleted, and a file of vm1's replica
    // damaged: vm1's night fails with the damaged file named; vm2's replica
    // is left with no layer, and verifies.
    qemu_img(&["snapshot", "-d", "before-upgrade", vm2.to_str().unwrap()]);
    let monday = names_in(&replica.join("vm1.qcow2"))
        .into_iter()
        .find(|n| n.starts_with("monday."))
        .unwrap();
    let damaged = replica.join("vm1.qcow2").join(&monday);
    let len = std::fs::metadata(&damaged).unwrap().len();
    poke(&damaged, len - 1, b"!");
    let out = std::process::Command::new("sh")
        .arg(example("replicate.sh"))
        .arg(&m.mp)
        .arg(&replica)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains(&monday), "{stderr}");
    assert!(!stdout.contains("verified: vm1.qcow2"), "{stdout}");
    assert!(
        stdout.contains("verified: vm2.qcow2 (0 snapshots)"),
        "{stdout}"
    );
    // No layer left: no SHA256SUMS either, and the README's verify
    // command passes on the folder.
    let vm2_replica = replica.join("vm2.qcow2");
    assert!(names_in(&vm2_replica).is_empty());
    run(
        "sh",
        &["-c", README_VERIFY, "-", vm2_replica.to_str().unwrap()],
    );
}

/// The README's command that verifies a replica folder ($1).
const README_VERIFY: &str = "cd \"$1\" && { [ ! -e SHA256SUMS ] || sha256sum -c SHA256SUMS; } && \
     for f in *.qcow2; do [ ! -e \"$f\" ] || qemu-img check -q \"$f\"; done";

/// A night of an example script: its exit status, stdout and stderr.
fn night(script: &str, mnt: &Path, dest: &Path) -> (Option<i32>, String, String) {
    let out = std::process::Command::new("sh")
        .arg(example(script))
        .arg(mnt)
        .arg(dest)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The file of the replica folder `dir` whose name starts with `prefix`.
fn layer_of(dir: &Path, prefix: &str) -> PathBuf {
    let name = names_in(dir)
        .into_iter()
        .find(|n| n.starts_with(prefix) && n.ends_with(".qcow2"))
        .unwrap_or_else(|| panic!("{prefix}* in {}", dir.display()));
    dir.join(name)
}

/// Whether `sha256sum -c SHA256SUMS` passes in `dir`.
fn sums_pass(dir: &Path) -> bool {
    std::process::Command::new("sh")
        .args(["-c", "cd \"$1\" && sha256sum -c --quiet SHA256SUMS", "-"])
        .arg(dir)
        .output()
        .unwrap()
        .status
        .success()
}

/// Snapshot `name` of `img` restored by the replica's layer equals what
/// qemu-img reads for it.
fn assert_restores(d: &Path, img: &Path, layer: &Path, name: &str) {
    let raw = d.join("restored.raw");
    let l = format!("snapshot.name={name}");
    let r = raw.to_str().unwrap();
    qemu_img(&["convert", "-l", &l, "-O", "raw", img.to_str().unwrap(), r]);
    qemu_img(&[
        "compare",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        layer.to_str().unwrap(),
        r,
    ]);
}

/// An image of 16 MiB with snapshots a (4 MiB written), b, c (1 MiB each).
fn three_snapshots(img: &Path) {
    create(img, "16M", "");
    for (name, cmd) in [
        ("a", "write -P 1 0 4M"),
        ("b", "write -P 2 4M 1M"),
        ("c", "write -P 3 8M 1M"),
    ] {
        qemu_io(img, "qcow2", &[cmd]);
        snapshot(img, name);
    }
}

#[test]
fn replicate_never_merges_a_damaged_file() {
    let (d, src) = scratch_images();
    let imgs: Vec<PathBuf> = ["vm1.qcow2", "vm2.qcow2", "vm3.qcow2"]
        .iter()
        .map(|n| src.join(n))
        .collect();
    for img in &imgs {
        three_snapshots(img);
    }
    let m = Mount::new(&src, &d.path().join("mnt"), &[]);
    let dest = d.path().join("replica");
    let (code, out, err) = night("replicate.sh", &m.mp, &dest);
    assert_eq!(code, Some(0), "{out}{err}");

    // vm1: its oldest layer damaged, then the oldest snapshot deleted at the
    // source (a commit would take the damage in); vm2: its middle layer
    // damaged, then that snapshot deleted (a rebase would); vm3: its
    // SHA256SUMS overwritten.
    let damage = |layer: &Path| {
        let len = std::fs::metadata(layer).unwrap().len();
        poke(layer, len - 70000, b"XXXX");
    };
    let a1 = layer_of(&dest.join("vm1.qcow2"), "a.");
    let b2 = layer_of(&dest.join("vm2.qcow2"), "b.");
    damage(&a1);
    damage(&b2);
    qemu_img(&["snapshot", "-d", "a", imgs[0].to_str().unwrap()]);
    qemu_img(&["snapshot", "-d", "b", imgs[1].to_str().unwrap()]);
    let sums3 = dest.join("vm3.qcow2/SHA256SUMS");
    std::fs::write(&sums3, "garbage\n").unwrap();
    let (code, out, err) = night("replicate.sh", &m.mp, &dest);
    assert_eq!(code, Some(1), "{out}{err}");
    for layer in [&a1, &b2] {
        let name = layer.file_name().unwrap().to_str().unwrap();
        assert!(err.contains(&format!("{name}: sha256")), "{err}");
        assert!(layer.exists(), "{name} was merged out");
    }
    assert!(
        err.contains("vm3.qcow2/SHA256SUMS: not a list of digests"),
        "{err}"
    );
    assert!(!out.contains("verified: "), "{out}");
    // Nothing took the damage in under a fresh digest.
    assert!(!sums_pass(&dest.join("vm1.qcow2")));
    assert!(!sums_pass(&dest.join("vm2.qcow2")));
    assert_eq!(std::fs::read_to_string(&sums3).unwrap(), "garbage\n");
    // The next night still fails, for the same files.
    let (code, _, again) = night("replicate.sh", &m.mp, &dest);
    assert_eq!(code, Some(1), "{again}");
    assert!(
        again.contains(a1.file_name().unwrap().to_str().unwrap()),
        "{again}"
    );
}

#[test]
fn replicate_names_with_dashes_and_letters_beyond_ascii() {
    let (d, src) = scratch_images();
    // A backing file whose name is not ASCII, snapshots whose names start
    // with a dash or are not ASCII.
    let base = src.join("bäse.raw");
    qemu_img(&["create", "-q", "-f", "raw", base.to_str().unwrap(), "16M"]);
    qemu_io(&base, "raw", &["write -P 9 0 2M"]);
    let img = src.join("vm.qcow2");
    overlay(&img, "bäse.raw", "raw", None);
    let names = ["-a", "dienstag-ü", "-b", "mittwoch"];
    for (i, name) in names.iter().enumerate() {
        qemu_io(&img, "qcow2", &[&format!("write -P 7 {}M 1M", i + 3)]);
        snapshot(&img, name);
    }
    let m = Mount::new(&src, &d.path().join("mnt"), &[]);
    let dest = d.path().join("replica");
    let (code, out, err) = night("replicate.sh", &m.mp, &dest);
    assert_eq!(code, Some(0), "{out}{err}");
    // The oldest and a middle one deleted at the source.
    for name in ["-a", "dienstag-ü"] {
        qemu_img(&["snapshot", "-d", name, img.to_str().unwrap()]);
    }
    for _ in 0..2 {
        let (code, out, err) = night("replicate.sh", &m.mp, &dest);
        assert_eq!(code, Some(0), "{out}{err}");
        assert!(out.contains("verified: vm.qcow2 (2 snapshots)"), "{out}");
    }
    let folder = dest.join("vm.qcow2");
    assert!(sums_pass(&folder));
    assert!(folder.join("bäse.raw").exists());
    let layers: Vec<String> = names_in(&folder)
        .into_iter()
        .filter(|n| n.contains(".id"))
        .collect();
    assert_eq!(layers.len(), 2, "{layers:?}");
    // The mount names a snapshot "-b" by an identity that starts "_b.".
    assert_restores(d.path(), &img, &layer_of(&folder, "_b."), "-b");
    assert_restores(d.path(), &img, &layer_of(&folder, "mittwoch."), "mittwoch");
}

#[test]
fn replicate_and_backup_refuse_what_is_not_a_live_mount() {
    let (d, src) = scratch_images();
    three_snapshots(&src.join("vm.qcow2"));
    let empty = d.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let nowhere = d.path().join("nowhere");
    let dest = d.path().join("replica");
    let backups = d.path().join("backups");
    let refused = |mnt: &Path, why: &str| {
        for (script, to) in [("replicate.sh", &dest), ("backup-chain.sh", &backups)] {
            let (code, out, err) = night(script, mnt, to);
            assert_eq!(code, Some(1), "{script} {}: {out}{err}", mnt.display());
            assert!(err.contains(why), "{script}: {err}");
            assert!(!out.contains("verified"), "{script}: {out}");
        }
    };
    refused(&nowhere, "No such file or directory");
    refused(&empty, "not a qcow2fs mount");
    refused(&src, "not a qcow2fs mount");
    {
        let no_image = Mount::new(&empty, &d.path().join("mnt-empty"), &[]);
        refused(&no_image.mp, "holds no image");
    }
    // The daemon killed: the mount does not answer.
    let mut m = Mount::new(&src, &d.path().join("mnt"), &[]);
    let (code, out, err) = night("replicate.sh", &m.mp, &dest);
    assert_eq!(code, Some(0), "{out}{err}");
    let mut child = m.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    refused(&m.mp, "not connected");
    run("umount", &["-l", m.mp.to_str().unwrap()]);
}

#[test]
fn replicate_refuses_a_dest_inside_the_mount_or_its_folder() {
    let (d, src) = scratch_images();
    three_snapshots(&src.join("vm.qcow2"));
    let m = Mount::new(&src, &d.path().join("mnt"), &[]);
    for dest in [src.join("replica"), m.mp.join("vm.qcow2/replica")] {
        let (code, out, err) = night("replicate.sh", &m.mp, &dest);
        assert_eq!(code, Some(1), "{out}{err}");
        assert!(err.contains("is inside"), "{err}");
        assert!(!dest.exists());
    }
}

#[test]
fn replicate_follows_a_rebase_onto_another_backing_file() {
    let (d, src) = scratch_images();
    let base = src.join("base.raw");
    qemu_img(&["create", "-q", "-f", "raw", base.to_str().unwrap(), "16M"]);
    qemu_io(&base, "raw", &["write -P 1 0 8M"]);
    let img = src.join("vm.qcow2");
    overlay(&img, "base.raw", "raw", None);
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        qemu_io(&img, "qcow2", &[&format!("write -P 5 {}M 1M", i + 1)]);
        snapshot(&img, name);
    }
    let m = Mount::new(&src, &d.path().join("mnt"), &[]);
    let dest = d.path().join("replica");
    let (code, out, err) = night("replicate.sh", &m.mp, &dest);
    assert_eq!(code, Some(0), "{out}{err}");
    // The image moved onto a copy of its backing file that differs.
    let base2 = src.join("base2.raw");
    std::fs::copy(&base, &base2).unwrap();
    qemu_io(&base2, "raw", &["write -P 4 6M 64k"]);
    qemu_img(&[
        "rebase",
        "-u",
        "-b",
        "base2.raw",
        "-F",
        "raw",
        img.to_str().unwrap(),
    ]);
    let folder = dest.join("vm.qcow2");
    for _ in 0..2 {
        let (code, out, err) = night("replicate.sh", &m.mp, &dest);
        assert_eq!(code, Some(0), "{out}{err}");
        assert!(sums_pass(&folder));
        for name in ["a", "b", "c"] {
            assert_restores(
                d.path(),
                &img,
                &layer_of(&folder, &format!("{name}.")),
                name,
            );
        }
    }
}
