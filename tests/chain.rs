//! Chains of synthesized layers: every layer passes qemu-img check, the
//! chain opens in order, and each layer reads as its state.

mod common;
use common::*;

use qcow2fs::chain::{Direction, Use, export, layers};
use qcow2fs::{Image, OpenOptions};

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
            export(&image, dir, Use::Rest, &out, false, &mut |_, _| {}).unwrap();
            verify_chain(d.path(), &img, &out, dir);
            // The complete layer carries the compressed clusters over.
            let bottom = &layers(&image, dir)[0].file_name;
            let q = qemu_check(&out.join(bottom)).unwrap();
            assert!(
                q["compressed-clusters"].as_u64().unwrap() > 0,
                "{bottom}: {q}"
            );
            // Existing files are not overwritten without force.
            assert!(export(&image, dir, Use::Rest, &out, false, &mut |_, _| {}).is_err());
            export(&image, dir, Use::Rest, &out, true, &mut |_, _| {}).unwrap();
        }
    }
}

#[test]
fn reverse_layers_are_deltas() {
    let d = scratch();
    let img = build_chain_image(d.path(), "vm.qcow2", "");
    let image = Image::open(&img, &OpenOptions::new(8 << 20)).unwrap();
    let out = d.path().join("rev");
    export(
        &image,
        Direction::Reverse,
        Use::Rest,
        &out,
        false,
        &mut |_, _| {},
    )
    .unwrap();
    let specs = layers(&image, Direction::Reverse);
    let total: u64 = specs
        .iter()
        .map(|s| std::fs::metadata(out.join(&s.file_name)).unwrap().len())
        .sum();
    let src = std::fs::metadata(&img).unwrap().len();
    let bound = src + src / 20 + (specs.len() as u64) * (1 << 20);
    assert!(total <= bound, "layers {total} > {bound} (source {src})");
}
