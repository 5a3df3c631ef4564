//! Nightly replication (`examples/replicate.sh`): a replica of every kept
//! snapshot that a night keeps up to date by what changed.

mod common;
use common::vm::Vm;
use common::*;

/// The VM helper: guest writes land in the image, savevm and delvm change
/// its snapshot table while QEMU holds it, and the image is whole after quit.
#[test]
fn vm_helper_writes_and_snapshots() {
    let d = scratch();
    let img = d.path().join("vm.qcow2");
    create(&img, "64M", "");
    let mut vm = Vm::start(&img);
    vm.write(0x41, 1 << 20, 256 << 10);
    vm.savevm("one");
    vm.write(0x42, 1 << 20, 64 << 10);
    vm.savevm("two");
    assert_eq!(vm.snapshot_tags(), ["one", "two"]);
    // QEMU holds the image's write lock: a plain open fails, -U reads.
    let p = img.to_str().unwrap();
    let locked = std::process::Command::new("qemu-img")
        .args(["info", p])
        .output()
        .unwrap();
    assert!(!locked.status.success());
    assert!(qemu_img(&["snapshot", "-U", "-l", p]).contains("one"));
    vm.delvm("one");
    assert_eq!(vm.snapshot_tags(), ["two"]);
    vm.quit();
    let listed = qemu_img(&["snapshot", "-l", p]);
    assert!(
        listed.contains("two") && !listed.contains("one"),
        "{listed}"
    );
    qemu_io(
        &img,
        "qcow2",
        &["read -P 0x42 1M 64k", "read -P 0x41 1088k 192k"],
    );
    let (ok, msg) = check_clean(&img);
    assert!(ok, "{msg}");
}
