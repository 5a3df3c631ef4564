//! Chains of synthesized layers: every layer passes qemu-img check, the
//! chain opens in order, and each layer reads as its state.

mod common;
use common::*;
use std::path::Path;

use qcow2fs::chain::{Direction, export, layers};
use qcow2fs::{Image, OpenOptions, StateId};

fn state_id(image: &Image, w: StateId) -> Option<String> {
    match w {
        StateId::Active => None,
        StateId::Snapshot(i) => Some(image.snapshots()[i].id.clone()),
    }
}

/// Check every layer of an exported chain against qemu-img.
fn verify(dir: &Path, img: &Path, out: &Path, d: Direction) {
    let image = Image::open(img, &OpenOptions::new(8 << 20)).unwrap();
    let specs = layers(&image, d);
    for s in &specs {
        let p = out.join(&s.file_name);
        let ps = p.to_str().unwrap();
        let (ok, msg) = check_clean(&p);
        assert!(ok, "{}: qemu-img check: {msg}", s.file_name);
        // The layer's full view equals its state.
        let raw = dir.join("oracle.raw");
        let theirs = oracle_raw(dir, img, state_id(&image, s.x).as_deref());
        let size = match s.x {
            StateId::Active => image.header().size,
            StateId::Snapshot(i) => image.snapshots()[i].disk_size,
        };
        std::fs::write(&raw, &theirs[..size as usize]).unwrap();
        let cmp = std::process::Command::new("qemu-img")
            .args([
                "compare",
                "-f",
                "qcow2",
                "-F",
                "raw",
                ps,
                raw.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            cmp.status.success(),
            "{}: {}",
            s.file_name,
            String::from_utf8_lossy(&cmp.stdout)
        );
    }
    // The chain opens in order from its top.
    let top = &specs.last().unwrap().file_name;
    let info = qemu_img(&[
        "info",
        "--backing-chain",
        "--output=json",
        out.join(top).to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    let files: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            Path::new(e["filename"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut want: Vec<String> = specs.iter().rev().map(|s| s.file_name.clone()).collect();
    want.extend(["mid.qcow2".to_string(), "base.raw".to_string()]);
    assert_eq!(files, want);
}

/// qemu-img check: no errors, no leaks.
fn check_clean(p: &Path) -> (bool, String) {
    let out = std::process::Command::new("qemu-img")
        .args(["check", p.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn exported_chains_verify_against_qemu_img() {
    let d = scratch();
    for (name, opts) in [
        ("vm.qcow2", ""),
        ("ext.qcow2", "extended_l2=on"),
        ("z.qcow2", "compression_type=zstd,cluster_size=4k"),
    ] {
        let img = build_chain_image(d.path(), name, opts);
        let image = Image::open(&img, &OpenOptions::new(8 << 20)).unwrap();
        for dir in [Direction::Reverse, Direction::Forward] {
            let out = d.path().join(format!("{name}-{dir:?}"));
            export(&image, dir, &out, false, &mut |_, _| {}).unwrap();
            verify(d.path(), &img, &out, dir);
            // Existing files are not overwritten without force.
            assert!(export(&image, dir, &out, false, &mut |_, _| {}).is_err());
            export(&image, dir, &out, true, &mut |_, _| {}).unwrap();
        }
    }
}

#[test]
fn reverse_layers_are_deltas() {
    let d = scratch();
    let img = build_chain_image(d.path(), "vm.qcow2", "");
    let image = Image::open(&img, &OpenOptions::new(8 << 20)).unwrap();
    let out = d.path().join("rev");
    export(&image, Direction::Reverse, &out, false, &mut |_, _| {}).unwrap();
    let specs = layers(&image, Direction::Reverse);
    let total: u64 = specs
        .iter()
        .map(|s| std::fs::metadata(out.join(&s.file_name)).unwrap().len())
        .sum();
    let src = std::fs::metadata(&img).unwrap().len();
    let bound = src + src / 20 + (specs.len() as u64) * (1 << 20);
    assert!(total <= bound, "layers {total} > {bound} (source {src})");
}
