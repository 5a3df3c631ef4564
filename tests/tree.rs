//! The tree a mount serves, driven without FUSE: lookups, listings, stat,
//! open, read and seek, checked against what qemu-img reads.

mod common;
use common::*;

use std::ffi::OsStr;
use std::path::Path;

use qcow2fs::tree::{Attr, Kind, ROOT_INO, Tree, TreeOptions};

/// A tree over `src`, as `qcow2fs mount` serves it by default.
fn tree_over(src: &Path) -> Tree {
    let opts = TreeOptions {
        cache_bytes: 16 << 20,
        allow_outside_backing: false,
        force_share: false,
    };
    Tree::new(src, &opts).unwrap()
}

/// The sorted names of folder `ino`.
fn names(tree: &Tree, ino: u64) -> Vec<String> {
    let mut out: Vec<String> = tree
        .readdir(ino, 0)
        .unwrap()
        .into_iter()
        .map(|(_, _, n)| n.to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn lookup(tree: &Tree, parent: u64, name: &str) -> Attr {
    tree.lookup(parent, OsStr::new(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every byte of file `a`, through open, read (in pieces of 1 MiB, as the
/// kernel asks) and release.
fn read_file(tree: &Tree, a: &Attr) -> Vec<u8> {
    let (fh, _) = tree.open(a.ino, 0).unwrap();
    let mut out = Vec::new();
    loop {
        let bytes = tree.read(fh, out.len() as u64, 1 << 20).unwrap();
        if bytes.is_empty() {
            break;
        }
        out.extend_from_slice(&bytes);
    }
    tree.release(fh);
    assert_eq!(out.len() as u64, a.size, "read less than stat said");
    out
}

#[test]
fn folders_list_and_views_read_as_qemu_img_reads() {
    let (d, src) = scratch_images();
    let img = build_chain_image(&src, "vm.qcow2", "");
    let tree = tree_over(&src);

    // IMAGE_DIR mirrored: the qcow2 files are folders, the raw file a file.
    assert_eq!(
        names(&tree, ROOT_INO),
        ["base.raw", "mid.qcow2", "vm.qcow2"]
    );
    let base = lookup(&tree, ROOT_INO, "base.raw");
    assert_eq!(base.kind, Kind::File);
    assert!(read_file(&tree, &base) == vec![0x99u8; 3 << 20]);
    let vm = lookup(&tree, ROOT_INO, "vm.qcow2");
    assert_eq!(vm.kind, Kind::Dir);
    assert_eq!(
        names(&tree, vm.ino),
        [
            "active.raw",
            "chain",
            "forward",
            "incremental",
            "info",
            "info.json",
            "snapshots"
        ]
    );
    assert!(tree.lookup(vm.ino, OsStr::new("nothing")).is_err());

    // Every state reads as qemu-img converts it.
    let active = lookup(&tree, vm.ino, "active.raw");
    let theirs = oracle_raw(d.path(), &img, None);
    assert!(read_file(&tree, &active) == theirs, "active.raw differs");
    let snaps = lookup(&tree, vm.ino, "snapshots");
    let want: Vec<&str> = vec!["four.raw", "one.raw", "three.raw", "two.raw"];
    assert_eq!(names(&tree, snaps.ino), want);
    for (id, name) in [("1", "one"), ("2", "two"), ("3", "three"), ("4", "four")] {
        let a = lookup(&tree, snaps.ino, &format!("{name}.raw"));
        // qemu-img reads a snapshot at the image's size now; the view has
        // the snapshot's own size (the image grew after "one").
        let theirs = oracle_raw(d.path(), &img, Some(id));
        assert_eq!(a.size, if name == "one" { 6 << 20 } else { 10 << 20 });
        let ours = read_file(&tree, &a);
        assert!(ours[..] == theirs[..ours.len()], "{name}.raw differs");
    }

    // A folder handle holds the listing taken at opendir.
    let fh = tree.opendir(snaps.ino, 0).unwrap();
    assert_eq!(tree.dir_entries(fh).unwrap().len(), 4);
    tree.releasedir(fh);
    assert!(tree.dir_entries(fh).is_err());

    // SEEK_DATA and SEEK_HOLE: the active state's first cluster was
    // zeroed (a hole), its second written; past the end is no data.
    let (fh, _) = tree.open(active.ino, 0).unwrap();
    assert_eq!(tree.seek(fh, 0, false).unwrap(), Some(0));
    assert_eq!(tree.seek(fh, 0, true).unwrap(), Some(64 << 10));
    assert_eq!(tree.seek(fh, active.size, true).unwrap(), None);
    tree.release(fh);
    assert!(tree.read(fh, 0, 4096).is_err(), "a released handle reads");
}

#[test]
fn a_chain_folder_copied_through_the_tree_is_a_chain_qemu_img_opens() {
    let (d, src) = scratch_images();
    let img = build_chain_image(&src, "vm.qcow2", "");
    let tree = tree_over(&src);
    let vm = lookup(&tree, ROOT_INO, "vm.qcow2");
    let chain = lookup(&tree, vm.ino, "chain");
    let out = d.path().join("copy");
    std::fs::create_dir(&out).unwrap();
    // As cp -r does: a listing, then every file read in full.
    for (_, kind, name) in tree.readdir(chain.ino, 0).unwrap() {
        assert_eq!(kind, Kind::File);
        let a = tree.lookup(chain.ino, &name).unwrap();
        std::fs::write(out.join(&name), read_file(&tree, &a)).unwrap();
    }
    verify_chain(d.path(), &img, &out, qcow2fs::chain::Direction::Reverse);
    let sums = run(
        "sh",
        &[
            "-c",
            &format!("cd '{}' && sha256sum -c SHA256SUMS", out.display()),
        ],
    );
    assert!(sums.contains("chain.json: OK"), "{sums}");
}
