//! A snapshot's saved VM state reads as QEMU saved it.

mod common;
use common::*;

use std::path::Path;

use qcow2fs::{Image, OpenOptions, View, VmState};

/// Take a snapshot with VM state through QEMU's monitor (`savevm`).
fn savevm(img: &Path, name: &str) {
    let mut vm = common::vm::Vm::start(img);
    vm.savevm(name);
    vm.quit();
}

/// QEMU's own reading of the VM state: apply the snapshot to a copy, then
/// `qemu-io -c "read -b -v 0 LEN"`.
fn reference(dir: &Path, img: &Path, name: &str, len: u64) -> Vec<u8> {
    let copy = dir.join(format!("ref-{name}.qcow2"));
    std::fs::copy(img, &copy).unwrap();
    qemu_img(&["snapshot", "-a", name, copy.to_str().unwrap()]);
    let sectors = len.div_ceil(512) * 512;
    let out = run(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            &format!("read -b -v 0 {sectors}"),
            copy.to_str().unwrap(),
        ],
    );
    let mut bytes = Vec::new();
    for line in out
        .lines()
        .filter(|l| l.len() > 10 && l.as_bytes()[8] == b':')
    {
        for tok in line[10..].split_whitespace().take(16) {
            bytes.push(u8::from_str_radix(tok, 16).unwrap());
        }
    }
    assert_eq!(bytes.len() as u64, sectors, "{out}");
    bytes.truncate(len as usize);
    bytes
}

#[test]
fn vm_state_equals_what_qemu_saved() {
    let (d, src) = scratch_images();
    let img = src.join("vm.qcow2");
    create(&img, "16M", "");
    qemu_io(&img, "qcow2", &["write -P 0x33 0 1M"]);
    savevm(&img, "vm1");
    qemu_io(&img, "qcow2", &["write -P 0x44 512k 1M"]);
    snapshot(&img, "disk-only");
    savevm(&img, "vm2");

    let image = Image::open(&img, &OpenOptions::new(1 << 20)).unwrap();
    let sn = image.snapshots();
    assert!(sn[0].vm_state_size > 0 && sn[2].vm_state_size > 0);
    assert_eq!(sn[1].vm_state_size, 0);
    for (i, name) in [(0, "vm1"), (2, "vm2")] {
        let v = VmState::open(&image, i).unwrap();
        assert_eq!(v.size(), sn[i].vm_state_size);
        let ours = read_all(&v, 4096);
        assert!(ours.starts_with(b"QEVM"));
        assert!(
            ours == reference(d.path(), &img, name, v.size()),
            "{name}: VM state differs"
        );
    }

    // Through the mount: a .vmstate file only where a snapshot saved state.
    let m = Mount::new(&src, &d.path().join("mnt"), &[]);
    let names = names_in(&m.path("vm.qcow2/snapshots"));
    assert_eq!(
        names,
        [
            "disk-only.raw",
            "vm1.raw",
            "vm1.vmstate",
            "vm2.raw",
            "vm2.vmstate"
        ]
    );
    let shown = std::fs::read(m.path("vm.qcow2/snapshots/vm2.vmstate")).unwrap();
    assert!(shown == reference(d.path(), &img, "vm2", sn[2].vm_state_size));
    // The disk views of snapshots with VM state are still the disks.
    assert!(
        std::fs::read(m.path("vm.qcow2/snapshots/vm1.raw")).unwrap()
            == oracle_raw(d.path(), &img, Some(&sn[0].id))
    );
}
