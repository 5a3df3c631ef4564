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

    let replica = d.path().join("replica");
    let first = run(
        "sh",
        &[
            &example("replicate.sh"),
            m.mp.to_str().unwrap(),
            replica.to_str().unwrap(),
        ],
    );
    assert!(
        first.lines().filter(|l| l.starts_with(">f")).count() >= 7,
        "{first}"
    );
    let second = run(
        "sh",
        &[
            &example("replicate.sh"),
            m.mp.to_str().unwrap(),
            replica.to_str().unwrap(),
        ],
    );
    assert_eq!(
        second.lines().filter(|l| l.starts_with(">f")).count(),
        0,
        "{second}"
    );
}
