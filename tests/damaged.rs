//! Damaged images give errors that name the problem: never a panic, a hang
//! or an allocation beyond the named limits.

mod common;
use common::*;
use std::path::Path;

use qcow2fs::{Image, OpenOptions, StateId, View};

/// Open, read every state and check; return the first error's text.
fn exercise(img: &Path) -> Option<String> {
    let image = match Image::open(img, &OpenOptions::new(4 << 20)) {
        Ok(i) => i,
        Err(e) => return Some(e.to_string()),
    };
    let mut first = None;
    let mut note = |e: qcow2fs::Error| {
        first.get_or_insert(e.to_string());
    };
    let mut states = vec![StateId::Active];
    states.extend((0..image.snapshots().len()).map(StateId::Snapshot));
    for which in states {
        match image.state(which) {
            Ok(s) => {
                let mut buf = vec![0u8; 1 << 20];
                let mut pos = 0;
                while pos < s.size() {
                    if let Err(e) = s.read_at(&mut buf, pos) {
                        note(e);
                        break;
                    }
                    pos += buf.len() as u64;
                }
                if let Err(e) = s.extents(0, s.size()) {
                    note(e);
                }
            }
            Err(e) => note(e),
        }
    }
    if let Err(e) = qcow2fs::check::check(&image) {
        note(e);
    }
    first
}

fn base(dir: &Path) -> std::path::PathBuf {
    let img = at(dir, "base.qcow2");
    create(&img, "8M", "");
    qemu_io(&img, "qcow2", &["write -P 1 0 1M", "write -c -P 2 4M 64k"]);
    snapshot(&img, "s");
    qemu_io(&img, "qcow2", &["write -P 3 0 64k"]);
    img
}

#[test]
fn every_poke_gives_a_named_error() {
    let d = scratch();
    let b = base(d.path());
    let l1 = peek64(&b, 40);
    let l2 = peek64(&b, l1) & 0x00ff_ffff_ffff_fe00;
    let snaps = peek64(&b, 64);
    let len = std::fs::metadata(&b).unwrap().len();
    // Find the compressed cluster's L2 entry.
    let compressed = (0..8192u64)
        .map(|i| l2 + 8 * i)
        .find(|&o| peek64(&b, o) & (1 << 62) != 0)
        .unwrap();
    let ce = peek64(&b, compressed);
    let chost = ce & ((1u64 << 54) - 1);

    type Poke = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Poke, &str)> = vec![
        (
            "truncated",
            Box::new(|p: &Path| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .unwrap()
                    .set_len(70_000)
                    .unwrap()
            }),
            "past the end",
        ),
        (
            "l1-past-eof",
            Box::new(move |p: &Path| poke(p, 40, &((len * 4) & !0xffff).to_be_bytes())),
            "L1 table",
        ),
        (
            "l1-unaligned",
            Box::new(|p: &Path| poke(p, 40, &0x30200u64.to_be_bytes())),
            "not cluster aligned",
        ),
        (
            "l2-past-eof",
            Box::new(move |p: &Path| poke(p, l1, &(1u64 << 40).to_be_bytes())),
            "L2 table",
        ),
        (
            "l2-unaligned",
            Box::new(move |p: &Path| poke(p, l1, &(l2 | 0x200).to_be_bytes())),
            "not cluster aligned",
        ),
        (
            "reftable-past-eof",
            Box::new(move |p: &Path| poke(p, 48, &((len * 4) & !0xffff).to_be_bytes())),
            "refcount table",
        ),
        (
            "reftable-unaligned",
            Box::new(|p: &Path| poke(p, 48, &0x10100u64.to_be_bytes())),
            "refcount table",
        ),
        (
            "reftable-huge",
            Box::new(|p: &Path| poke(p, 56, &u32::MAX.to_be_bytes())),
            "refcount table",
        ),
        (
            "snapshots-past-eof",
            Box::new(move |p: &Path| poke(p, 64, &((len * 4) & !0xffff).to_be_bytes())),
            "snapshot table",
        ),
        (
            "snapshots-unaligned",
            Box::new(move |p: &Path| poke(p, 64, &(snaps + 8).to_be_bytes())),
            "snapshot table",
        ),
        (
            "snapshot-l1-past-eof",
            Box::new(move |p: &Path| poke(p, snaps, &(1u64 << 40).to_be_bytes())),
            "snapshot L1 table",
        ),
        (
            "l1-size-max",
            Box::new(|p: &Path| poke(p, 36, &u32::MAX.to_be_bytes())),
            "L1 table",
        ),
        (
            "nb-snapshots-max",
            Box::new(|p: &Path| poke(p, 60, &u32::MAX.to_be_bytes())),
            "nb_snapshots",
        ),
        (
            "nb-snapshots-65536",
            Box::new(|p: &Path| poke(p, 60, &65536u32.to_be_bytes())),
            "snapshot table",
        ),
        (
            "cluster-bits",
            Box::new(|p: &Path| poke(p, 20, &40u32.to_be_bytes())),
            "cluster_bits",
        ),
        (
            "bad-compressed-data",
            Box::new(move |p: &Path| poke(p, chost, &[0xff; 64])),
            "compressed cluster",
        ),
        (
            "compressed-past-eof",
            Box::new(move |p: &Path| {
                poke(p, compressed, &((1u64 << 62) | (1u64 << 45)).to_be_bytes())
            }),
            "past the end",
        ),
        (
            "unknown-incompatible",
            Box::new(|p: &Path| poke(p, 72, &(1u64 << 40).to_be_bytes())),
            "incompatible feature bit 40",
        ),
        (
            "encryption",
            Box::new(|p: &Path| poke(p, 32, &2u32.to_be_bytes())),
            "encryption",
        ),
        (
            "bad-magic",
            Box::new(|p: &Path| poke(p, 0, b"XXXX")),
            "not a qcow2 image",
        ),
        (
            "version-9",
            Box::new(|p: &Path| poke(p, 4, &9u32.to_be_bytes())),
            "version 9",
        ),
    ];
    for (name, f, expect) in cases {
        let p = at(d.path(), &format!("{name}.qcow2"));
        std::fs::copy(&b, &p).unwrap();
        f(&p);
        let err = exercise(&p).unwrap_or_else(|| panic!("{name}: no error"));
        assert!(
            err.contains(expect),
            "{name}: '{err}' does not mention '{expect}'"
        );
        // The command line reports it too, without a panic.
        let (code, _, stderr) = qcow2fs(&["info", p.to_str().unwrap()]);
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(code == 0 || code == 1, "{name}: exit {code}");
    }
}

#[test]
fn backing_loop_is_an_error() {
    let d = scratch();
    let a = at(d.path(), "a.qcow2");
    let b = at(d.path(), "b.qcow2");
    create(&a, "4M", "");
    overlay(&b, "a.qcow2", "qcow2", None);
    qemu_img(&[
        "rebase",
        "-u",
        "-b",
        "b.qcow2",
        "-F",
        "qcow2",
        a.to_str().unwrap(),
    ]);
    let err = exercise(&b).expect("an error");
    assert!(err.contains("loops"), "{err}");
}

#[test]
fn backing_chain_deeper_than_the_limit_is_an_error() {
    let d = scratch();
    let mut prev = "c0.qcow2".to_string();
    create(&at(d.path(), &prev), "1M", "");
    for i in 1..=qcow2fs::image::MAX_BACKING_CHAIN + 1 {
        let name = format!("c{i}.qcow2");
        overlay(&at(d.path(), &name), &prev, "qcow2", None);
        prev = name;
    }
    let err = exercise(&at(d.path(), &prev)).expect("an error");
    assert!(err.contains("deeper than"), "{err}");
}
