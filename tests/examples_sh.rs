//! The shell examples work as their comments say, on the demo folder.

mod common;
use common::*;

use std::path::PathBuf;

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
    assert_eq!(names_in(&replica.join("vm2.qcow2")), ["SHA256SUMS"]);
}
