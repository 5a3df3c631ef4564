//! Layers hold only what they must: zeros are metadata, compressed clusters
//! are packed, clusters shared by two states are left out. Sizes are
//! checked against the source, bytes against qemu-img.

mod common;
use common::*;

use std::path::Path;

use qcow2fs::chain::{Direction, export, layers};
use qcow2fs::layer::ClusterMap;
use qcow2fs::{Image, OpenOptions, StateId};

const MIB: u64 = 1 << 20;

fn open(img: &Path) -> std::sync::Arc<Image> {
    Image::open(img, &OpenOptions::new(8 << 20)).unwrap()
}

/// Export a chain and return (layer files with their sizes, total size of
/// every file in the folder).
fn exported(img: &Path, out: &Path, dir: Direction) -> (Vec<(String, u64)>, u64) {
    export(
        &open(img),
        dir,
        qcow2fs::chain::Use::Rest,
        out,
        true,
        &mut |_, _| {},
    )
    .unwrap();
    let sizes = layers(&open(img), dir)
        .into_iter()
        .map(|s| {
            let n = std::fs::metadata(out.join(&s.file_name)).unwrap().len();
            (s.file_name, n)
        })
        .collect();
    let total = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    (sizes, total)
}

/// Every data cluster that a layer stores in its own file, as qemu-img maps
/// it, holds a byte that is not zero.
fn assert_no_zero_data(layer: &Path, cluster: u64) {
    let map = qemu_img(&[
        "map",
        "--output=json",
        "-f",
        "qcow2",
        layer.to_str().unwrap(),
    ]);
    let map: serde_json::Value = serde_json::from_str(&map).unwrap();
    let bytes = std::fs::read(layer).unwrap();
    for e in map.as_array().unwrap() {
        let Some(off) = e["offset"].as_u64() else {
            continue;
        };
        if e["depth"].as_u64() != Some(0) || e["zero"].as_bool() == Some(true) {
            continue;
        }
        let len = e["length"].as_u64().unwrap();
        for c in (off..off + len).step_by(cluster as usize) {
            let cl = &bytes[c as usize..(c + cluster) as usize];
            assert!(
                cl.iter().any(|&b| b != 0),
                "{}: a cluster of zeros stored as data at {c:#x}",
                layer.display()
            );
        }
    }
}

/// The layer's full view equals its state, as qemu-img reads both.
fn assert_layer_is_state(dir: &Path, img: &Path, layer: &Path, snapshot_id: Option<&str>) {
    let raw = dir.join("state.raw");
    let (i, o) = (img.to_str().unwrap(), raw.to_str().unwrap());
    match snapshot_id {
        Some(id) => qemu_img(&[
            "convert",
            "-l",
            &format!("snapshot.id={id}"),
            "-O",
            "raw",
            i,
            o,
        ]),
        None => qemu_img(&["convert", "-O", "raw", i, o]),
    };
    let l = layer.to_str().unwrap();
    qemu_img(&["compare", "-q", "-f", "qcow2", "-F", "raw", l, o]);
    let (ok, msg) = check_clean(layer);
    assert!(ok, "{l}: {msg}");
    std::fs::remove_file(raw).unwrap();
}

#[test]
fn zeros_over_data_are_zero_clusters_not_data() {
    // 8 MiB written, snapshot a, 512 MiB written elsewhere, snapshot b, 4 MiB
    // rewritten: a differs from b only in reading zeros where b has data.
    let d = scratch();
    let img = d.path().join("vm.qcow2");
    create(&img, "4G", "");
    qemu_io(&img, "qcow2", &["write -P 0x11 0 8M"]);
    snapshot(&img, "a");
    qemu_io(&img, "qcow2", &["write -P 0x22 1G 512M"]);
    snapshot(&img, "b");
    qemu_io(&img, "qcow2", &["write -P 0x33 2M 4M"]);
    let out = d.path().join("chain");
    let (sizes, _) = exported(&img, &out, Direction::Reverse);
    let size = |n: &str| sizes.iter().find(|s| s.0 == n).unwrap().1;
    assert!(size("vm_snapshot[0].qcow2") <= 12 * MIB, "{sizes:?}");
    assert_no_zero_data(&out.join("vm_snapshot[1].qcow2"), 65536);
    assert_no_zero_data(&out.join("vm_active.qcow2"), 65536);
    assert_layer_is_state(d.path(), &img, &out.join("vm_active.qcow2"), None);
    assert_layer_is_state(d.path(), &img, &out.join("vm_snapshot[1].qcow2"), Some("2"));
    assert_layer_is_state(d.path(), &img, &out.join("vm_snapshot[0].qcow2"), Some("1"));
    // The report says what each layer stores.
    let image = open(&img);
    let spec = &layers(&image, Direction::Reverse)[2];
    let layer = qcow2fs::chain::build(&image, spec).unwrap();
    let stats = layer.stats();
    assert_eq!(stats.zero_clusters, 512 * MIB / 65536);
    assert_eq!(stats.data_clusters, 0);
}

/// Images of every kind the tests build, each with snapshots.
fn images(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for (name, opts) in [
        ("plain.qcow2", ""),
        ("ext.qcow2", "extended_l2=on"),
        ("zs4k.qcow2", "compression_type=zstd,cluster_size=4k"),
    ] {
        out.push(build_chain_image(dir, name, opts));
    }
    // Whole images compressed by convert -c (zlib and zstd), then written to
    // and snapshotted.
    for (name, ct) in [("zlib.qcow2", "zlib"), ("zstd.qcow2", "zstd")] {
        let src = dir.join(format!("{name}.src"));
        create(&src, "32M", "");
        qemu_io(
            &src,
            "qcow2",
            &[
                "write -P 0x5a 0 12M",
                "write -P 0x00 12M 2M",
                "write -P 0x6b 20M 6M",
            ],
        );
        let img = dir.join(name);
        let o = format!("compression_type={ct}");
        let (s, i) = (src.to_str().unwrap(), img.to_str().unwrap());
        qemu_img(&["convert", "-q", "-c", "-O", "qcow2", "-o", &o, s, i]);
        snapshot(&img, "one");
        qemu_io(
            &img,
            "qcow2",
            &[
                "write -P 0x7c 1M 1M",
                "write -z 4M 1M",
                "write -c -P 0x7d 28M 512k",
            ],
        );
        snapshot(&img, "two");
        qemu_io(&img, "qcow2", &["discard 20M 2M", "write -P 0x7e 8M 64k"]);
        out.push(img);
    }
    // Extended L2 with 4 KiB writes scattered over many clusters.
    let img = dir.join("ext4k.qcow2");
    create(&img, "64M", "extended_l2=on");
    let writes: Vec<String> = (0..64)
        .map(|i| format!("write -P {} {}k 4k", i + 1, i * 196))
        .collect();
    let w: Vec<&str> = writes.iter().map(String::as_str).collect();
    qemu_io(&img, "qcow2", &w);
    snapshot(&img, "one");
    let writes: Vec<String> = (0..64)
        .map(|i| format!("write -P {} {}k 4k", i + 100, i * 196 + 68))
        .collect();
    let w: Vec<&str> = writes.iter().map(String::as_str).collect();
    qemu_io(&img, "qcow2", &w);
    snapshot(&img, "two");
    qemu_io(&img, "qcow2", &["write -z 0 64k", "discard 4M 1M"]);
    out.push(img);
    // Grown between snapshots.
    let img = dir.join("grown.qcow2");
    create(&img, "16M", "");
    qemu_io(&img, "qcow2", &["write -P 0x21 0 8M"]);
    snapshot(&img, "small");
    qemu_img(&["resize", "-q", img.to_str().unwrap(), "48M"]);
    qemu_io(&img, "qcow2", &["write -P 0x22 30M 4M"]);
    snapshot(&img, "big");
    qemu_io(&img, "qcow2", &["write -P 0x23 1M 1M"]);
    out.push(img);
    out
}

#[test]
fn chains_cost_about_what_the_source_holds() {
    let d = scratch();
    for img in images(d.path()) {
        let image = open(&img);
        let mut source = std::fs::metadata(&img).unwrap().len();
        for p in qcow2fs::chain::passthrough(&image) {
            source += std::fs::metadata(&p.path).unwrap().len();
        }
        let name = img.file_name().unwrap().to_string_lossy().into_owned();
        for dir in [Direction::Reverse, Direction::Forward] {
            let out = d.path().join(format!("{name}-{dir:?}"));
            let (sizes, total) = exported(&img, &out, dir);
            let n = sizes.len() as u64;
            let mut bound = source + source * 15 / 100 + n * 2 * MIB;
            if dir == Direction::Forward {
                bound += n * source / 20;
            }
            eprintln!(
                "{name} {dir:?}: {total} bytes for a source of {source} ({:.2}x)",
                total as f64 / source as f64
            );
            assert!(
                total <= bound,
                "{name} {dir:?}: {total} > {bound} (source {source}): {sizes:?}"
            );
            // Every layer is still the state it stands for.
            let image = open(&img);
            for s in layers(&image, dir) {
                let id = match s.x {
                    StateId::Active => None,
                    StateId::Snapshot(i) => Some(image.snapshots()[i].id.clone()),
                };
                assert_layer_is_state(d.path(), &img, &out.join(&s.file_name), id.as_deref());
            }
        }
    }
}

#[test]
fn reads_through_the_backing_file_that_are_zeros_are_zeros() {
    // A backing file with a hole and a zeroed range; an overlay that writes
    // over them, then discards: the older state reads the backing file's
    // zeros, and the layer says so in metadata.
    let d = scratch();
    let base = d.path().join("base.qcow2");
    create(&base, "8M", "");
    qemu_io(&base, "qcow2", &["write -P 0x44 0 1M", "write -z 2M 1M"]);
    let img = d.path().join("top.qcow2");
    overlay(&img, "base.qcow2", "qcow2", Some("12M"));
    snapshot(&img, "empty");
    qemu_io(&img, "qcow2", &["write -P 0x55 0 10M"]);
    let image = open(&img);
    let x = image.state(StateId::Snapshot(0)).unwrap();
    let xmap = ClusterMap::of(&x).unwrap();
    // Data only where the backing file has data; zeros past its end too.
    let own: Vec<_> = xmap
        .runs()
        .iter()
        .map(|r| (r.start, r.count, r.own))
        .collect();
    use qcow2fs::layer::map::Own;
    assert_eq!(own, vec![(0, 16, Own::Backing), (16, 176, Own::Zero)]);
    let out = d.path().join("rev");
    let (sizes, _) = exported(&img, &out, Direction::Reverse);
    let snap = sizes.iter().find(|s| s.0.contains("snapshot")).unwrap().1;
    assert!(snap <= 2 * MIB, "{sizes:?}");
    assert_layer_is_state(
        d.path(),
        &img,
        &out.join("top_snapshot[0].qcow2"),
        Some("1"),
    );
}
