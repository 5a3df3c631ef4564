//! Every state of every image reads byte for byte as qemu-img reads it.

mod common;
use common::*;

/// An image with three snapshots and writes, zero writes, discards and
/// compressed writes between them.
fn build_history(path: &std::path::Path, fmt_opts: &str, size: &str) {
    create(path, size, fmt_opts);
    let io = |cmds: &[&str]| qemu_io(path, "qcow2", cmds);
    io(&[
        "write -P 0x11 0 256k",
        "write -P 0x12 1M 64k",
        "write -P 0x13 3M 4k",
    ]);
    snapshot(path, "one");
    io(&["write -P 0x21 64k 64k", "write -z 1M 32k", "discard 3M 4k"]);
    snapshot(path, "two");
    io(&[
        "write -c -P 0x31 6M 2M",
        "write -P 0x32 5k 3k",
        "write -z -u 0 64k",
    ]);
    snapshot(path, "three");
    io(&["write -P 0x41 4M 128k", "discard 64k 64k"]);
}

#[test]
fn v3_default_image_with_snapshots() {
    let d = scratch();
    let img = at(d.path(), "vm.qcow2");
    build_history(&img, "", "8M");
    assert_states_match(d.path(), &img);
}

#[test]
fn v2_image() {
    let d = scratch();
    let img = at(d.path(), "v2.qcow2");
    build_history(&img, "compat=0.10", "8M");
    assert_states_match(d.path(), &img);
}

#[test]
fn cluster_sizes() {
    let d = scratch();
    for cs in ["512", "4k", "64k", "2M"] {
        let img = at(d.path(), &format!("cs{cs}.qcow2"));
        build_history(&img, &format!("cluster_size={cs}"), "8M");
        assert_states_match(d.path(), &img);
    }
}

#[test]
fn refcount_widths() {
    let d = scratch();
    for bits in ["8", "16", "64"] {
        let img = at(d.path(), &format!("rc{bits}.qcow2"));
        build_history(&img, &format!("refcount_bits={bits}"), "8M");
        assert_states_match(d.path(), &img);
    }
    // With 1-bit refcounts no cluster can be shared, so no snapshots.
    let img = at(d.path(), "rc1.qcow2");
    create(&img, "8M", "refcount_bits=1");
    qemu_io(
        &img,
        "qcow2",
        &[
            "write -P 0x5a 0 200k",
            "write -z 64k 64k",
            "discard 128k 64k",
        ],
    );
    assert_states_match(d.path(), &img);
}

#[test]
fn zlib_and_zstd_compressed_clusters() {
    let d = scratch();
    for ty in ["zlib", "zstd"] {
        let img = at(d.path(), &format!("{ty}.qcow2"));
        build_history(&img, &format!("compression_type={ty}"), "8M");
        qemu_io(&img, "qcow2", &["write -P 0x77 6M 192k"]);
        assert_states_match(d.path(), &img);
        // A whole image converted with -c.
        let conv = at(d.path(), &format!("{ty}-conv.qcow2"));
        let o = format!("compression_type={ty}");
        qemu_img(&[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            &o,
            img.to_str().unwrap(),
            conv.to_str().unwrap(),
        ]);
        assert_states_match(d.path(), &conv);
    }
}

#[test]
fn extended_l2_with_small_writes() {
    let d = scratch();
    let img = at(d.path(), "extl2.qcow2");
    create(&img, "8M", "extended_l2=on,cluster_size=128k");
    qemu_io(
        &img,
        "qcow2",
        &[
            "write -P 0x61 0 4k",
            "write -P 0x62 12k 4k",
            "write -z 4k 4k",
        ],
    );
    snapshot(&img, "a");
    qemu_io(
        &img,
        "qcow2",
        &["write -P 0x63 8k 4k", "discard 0 4k", "write -P 0x64 1M 4k"],
    );
    snapshot(&img, "b");
    qemu_io(&img, "qcow2", &["write -P 0x65 2M 132k", "write -z 1M 4k"]);
    assert_states_match(d.path(), &img);
    // Over a backing file, unallocated subclusters read through.
    let base = at(d.path(), "base.qcow2");
    create(&base, "8M", "");
    qemu_io(&base, "qcow2", &["write -P 0xb0 0 4M"]);
    let top = at(d.path(), "extl2-top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "extended_l2=on",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    qemu_io(
        &top,
        "qcow2",
        &["write -P 0x66 4k 4k", "write -z 16k 4k", "discard 64k 4k"],
    );
    assert_states_match(d.path(), &top);
}

#[test]
fn snapshot_taken_before_resize() {
    let d = scratch();
    let img = at(d.path(), "grow.qcow2");
    create(&img, "4M", "");
    qemu_io(&img, "qcow2", &["write -P 0x71 0 1M"]);
    snapshot(&img, "small");
    qemu_img(&["resize", "-q", img.to_str().unwrap(), "12M"]);
    qemu_io(&img, "qcow2", &["write -P 0x72 10M 1M"]);
    snapshot(&img, "big");
    let image = qcow2fs::Image::open(&img, &qcow2fs::OpenOptions::new(1 << 20)).unwrap();
    assert_eq!(image.snapshots()[0].disk_size, 4 << 20);
    assert_eq!(image.snapshots()[1].disk_size, 12 << 20);
    assert_states_match(d.path(), &img);
}

#[test]
fn backing_chains_two_levels_deep() {
    let d = scratch();
    make_base_and_mid(d.path());
    let top = at(d.path(), "top.qcow2");
    overlay(&top, "mid.qcow2", "qcow2", Some("8M"));
    qemu_io(&top, "qcow2", &["write -P 0xa2 1200k 64k"]);
    snapshot(&top, "s1");
    qemu_io(&top, "qcow2", &["write -P 0xa3 0 32k", "write -z 2M 128k"]);
    assert_states_match(d.path(), &top);
    // A backing file with no format recorded is probed.
    let probed = at(d.path(), "probed.qcow2");
    overlay(&probed, "mid.qcow2", "qcow2", None);
    forget_backing_format(&probed);
    assert_states_match(d.path(), &probed);
}

#[test]
fn missing_backing_file_is_an_error_when_read() {
    let d = scratch();
    let base = at(d.path(), "gone.qcow2");
    create(&base, "4M", "");
    let top = at(d.path(), "orphan.qcow2");
    overlay(&top, "gone.qcow2", "qcow2", None);
    qemu_io(&top, "qcow2", &["write -P 0x10 0 64k"]);
    std::fs::remove_file(&base).unwrap();
    let image = qcow2fs::Image::open(&top, &qcow2fs::OpenOptions::new(1 << 20)).unwrap();
    let state = image.state(qcow2fs::StateId::Active).unwrap();
    use qcow2fs::View;
    let mut buf = vec![0u8; 4096];
    state.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == 0x10));
    let err = state.read_at(&mut buf, 1 << 20).unwrap_err().to_string();
    assert!(err.contains("gone.qcow2"), "{err}");
}

#[test]
fn external_data_file() {
    let d = scratch();
    let img = at(d.path(), "ext.qcow2");
    let opts = format!(
        "data_file={},data_file_raw=on",
        at(d.path(), "ext.data").display()
    );
    create(&img, "4M", &opts);
    qemu_io(
        &img,
        "qcow2",
        &["write -P 0xd1 64k 128k", "write -z 1M 64k"],
    );
    assert_states_match(d.path(), &img);
}

/// Turn the backing format extension into an unknown one, so that the
/// backing file's format must be probed.
fn forget_backing_format(img: &std::path::Path) {
    let mut bytes = std::fs::read(img).unwrap();
    let pos = bytes[..4096]
        .windows(4)
        .position(|w| w == [0xe2, 0x79, 0x2a, 0xca])
        .expect("backing format extension");
    bytes[pos..pos + 4].copy_from_slice(&[0x7a, 0x7a, 0x7a, 0x7a]);
    std::fs::write(img, bytes).unwrap();
}
