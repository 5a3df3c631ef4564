//! A running VM: while a real QEMU holds the image open for writing, takes
//! snapshots with `savevm` and deletes them with `delvm`, `cp -r` of
//! `chain/` and `forward/` exits 0 and gives copies that verify and restore
//! every snapshot; a copy racing `savevm`/`delvm` is one state or fails;
//! once QEMU quits, the active layers come back and rsync picks them up.

mod common;
use common::vm::Vm;
use common::*;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What QEMU reads for each snapshot, by ID, at the snapshot's own size.
fn snapshot_oracles(img: &Path, scratch: &Path) -> HashMap<String, PathBuf> {
    let image = qcow2fs::Image::open(img, &qcow2fs::OpenOptions::new(8 << 20)).unwrap();
    let mut out = HashMap::new();
    for s in image.snapshots() {
        let mut b = oracle_raw(scratch, img, Some(&s.id));
        b.resize(s.disk_size as usize, 0);
        let p = scratch.join(format!("snap-{}-{}.raw", s.id, s.date_nsec));
        std::fs::write(&p, b).unwrap();
        out.insert(s.id.clone(), p);
    }
    out
}

fn status(cmd: &str, args: &[&str], dir: Option<&Path>) -> (bool, String) {
    let mut c = Command::new(cmd);
    c.args(args);
    if let Some(d) = dir {
        c.current_dir(d);
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A copied chain folder verifies and every layer restores the snapshot it
/// stands for (`active` layers only where `active` says so).
fn assert_copy_restores(copy: &Path, oracles: &HashMap<String, PathBuf>, active: Option<&Path>) {
    let (ok, out) = status("sha256sum", &["-c", "--quiet", "SHA256SUMS"], Some(copy));
    assert!(ok, "{}: {out}", copy.display());
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(copy.join("chain.json")).unwrap()).unwrap();
    let mut ids = Vec::new();
    for l in m["layers"].as_array().unwrap() {
        let file = copy.join(l["file"].as_str().unwrap());
        let (ok, msg) = check_clean(&file);
        assert!(ok, "{}: {msg}", file.display());
        let want = match l["stands-for"]["id"].as_str() {
            Some(id) => {
                ids.push(id.to_string());
                oracles[id].clone()
            }
            None => active
                .unwrap_or_else(|| panic!("{}: an active layer", file.display()))
                .to_path_buf(),
        };
        let f = file.to_str().unwrap();
        let (ok, msg) = status(
            "qemu-img",
            &[
                "compare",
                "-U",
                "-f",
                "qcow2",
                "-F",
                "raw",
                f,
                want.to_str().unwrap(),
            ],
            None,
        );
        assert!(ok, "{f}: {msg}");
    }
    let mut all: Vec<&String> = oracles.keys().collect();
    all.sort();
    ids.sort();
    assert_eq!(
        ids.iter().collect::<Vec<_>>(),
        all,
        "{}: every snapshot",
        copy.display()
    );
}

fn cp_r(from: &Path, to: &Path) -> (bool, String) {
    let _ = std::fs::remove_dir_all(to);
    status(
        "cp",
        &["-r", from.to_str().unwrap(), to.to_str().unwrap()],
        None,
    )
}

#[test]
fn a_running_vm_is_backed_up_whole_and_verifies() {
    let (d, src) = scratch_images();
    let s = d.path();
    let img = src.join("vm.qcow2");
    create(&img, "64M", "");
    let mut vm = Vm::start(&img);
    vm.write(0x11, 0, 8 << 20);
    vm.savevm("mon");
    vm.write(0x22, 4 << 20, 8 << 20);
    vm.savevm("tue");
    vm.write(0x33, 16 << 20, 1 << 20);
    vm.savevm("wed");
    vm.write(0x44, 20 << 20, 4 << 20);
    let m = Mount::new(&src, &s.join("mnt"), &[]);
    let oracles = snapshot_oracles(&img, s);
    assert_eq!(oracles.len(), 3);

    // The chains hold the snapshots only, and say so.
    let info = std::fs::read_to_string(m.path("vm.qcow2/info")).unwrap();
    assert!(info.contains("in use: yes"), "{info}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(m.path("vm.qcow2/info.json")).unwrap())
            .unwrap();
    assert_eq!(json["chains-hold"], "snapshots");
    let chain = names_in(&m.path("vm.qcow2/chain"));
    assert!(!chain.iter().any(|n| n.contains("active")), "{chain:?}");
    let forward = names_in(&m.path("vm.qcow2/forward"));
    assert!(
        !forward.contains(&"active.qcow2".to_string()),
        "{forward:?}"
    );

    // The VM keeps writing while the folders are copied.
    let backup = s.join("backup");
    std::fs::create_dir_all(&backup).unwrap();
    for folder in ["chain", "forward"] {
        let copy = backup.join(folder);
        let from = m.path(&format!("vm.qcow2/{folder}"));
        let (from2, copy2) = (from.clone(), copy.clone());
        let t = std::thread::spawn(move || cp_r(&from2, &copy2));
        for i in 0..20u64 {
            vm.write(0x70, (32 << 20) + i * (256 << 10), 256 << 10);
        }
        let (ok, out) = t.join().unwrap();
        assert!(ok, "cp -r {folder}/ while the VM runs and writes: {out}");
        assert_copy_restores(&copy, &oracles, None);
    }
    // The example scripts work on the running VM's image.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/backup-chain.sh");
    let (ok, out) = status(
        "sh",
        &[
            script.to_str().unwrap(),
            m.mp.to_str().unwrap(),
            s.join("dated").to_str().unwrap(),
        ],
        None,
    );
    assert!(ok && out.contains("backup verified"), "{out}");

    // export writes the snapshots' chain, and the live state only when asked.
    let out = s.join("export");
    let (code, _, err) = qcow2fs(&["export", img.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("in use"), "{err}");
    assert!(!names_in(&out).iter().any(|n| n.contains("active")));
    assert_copy_restores(&out, &oracles, None);
    let live = s.join("export-live");
    let (code, _, err) = qcow2fs(&[
        "export",
        "--force-share",
        img.to_str().unwrap(),
        live.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(names_in(&live).contains(&"vm_active.qcow2".to_string()));

    // Snapshots taken and deleted while copies run: each copy is one
    // table's files or fails. A replica made with rsync follows.
    let replica = s.join("replica");
    run(
        "rsync",
        &[
            "-a",
            "--delete",
            &format!("{}/", m.path("vm.qcow2/chain").display()),
            replica.to_str().unwrap(),
        ],
    );
    let mut failed = 0;
    let mut whole = 0;
    for round in 0..6 {
        let mut known = snapshot_oracles(&img, s);
        let from = m.path(if round % 2 == 0 {
            "vm.qcow2/chain"
        } else {
            "vm.qcow2/forward"
        });
        let copy = s.join(format!("race{round}"));
        let (from2, copy2) = (from.clone(), copy.clone());
        let t = std::thread::spawn(move || cp_r(&from2, &copy2));
        match round % 3 {
            0 => vm.delvm("mon"),
            1 => {
                vm.write(0x50 + round as u8, 0, 1 << 20);
                vm.savevm("mon");
            }
            _ => {
                vm.write(0x60 + round as u8, 8 << 20, 1 << 20);
                vm.savevm(&format!("r{round}"));
            }
        }
        let (ok, msg) = t.join().unwrap();
        if !ok {
            println!("round {round}: {}", msg.lines().next().unwrap_or(""));
            assert!(
                msg.contains("Stale file handle") || msg.contains("No such file"),
                "a copy racing a change fails with ESTALE or ENOENT: {msg}"
            );
        }
        if ok {
            // One state: the old table or the new one; snapshots that
            // exist in either read as QEMU read them.
            known.extend(snapshot_oracles(&img, s));
            let m: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(copy.join("chain.json")).unwrap())
                    .unwrap();
            let ids: std::collections::HashSet<String> = m["layers"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|l| l["stands-for"]["id"].as_str().map(str::to_string))
                .collect();
            let sub: HashMap<String, PathBuf> = known
                .into_iter()
                .filter(|(id, _)| ids.contains(id))
                .collect();
            assert_copy_restores(&copy, &sub, None);
            whole += 1;
        } else {
            failed += 1;
        }
        // Right after the change, a copy is whole and current.
        let oracles = snapshot_oracles(&img, s);
        let (ok, out) = cp_r(&from, &copy);
        assert!(ok, "{out}");
        assert_copy_restores(&copy, &oracles, None);
        run(
            "rsync",
            &[
                "-a",
                "--delete",
                &format!("{}/", m.path("vm.qcow2/chain").display()),
                replica.to_str().unwrap(),
            ],
        );
        assert_copy_restores(&replica, &oracles, None);
    }
    println!("{whole} copies racing savevm/delvm whole, {failed} failed");

    // The VM quits: the active layers come back, and rsync picks them up.
    vm.quit();
    let oracles = snapshot_oracles(&img, s);
    let active = s.join("active.raw");
    std::fs::write(&active, oracle_raw(s, &img, None)).unwrap();
    run(
        "rsync",
        &[
            "-a",
            "--delete",
            &format!("{}/", m.path("vm.qcow2/chain").display()),
            replica.to_str().unwrap(),
        ],
    );
    assert!(names_in(&replica).contains(&"vm_active.qcow2".to_string()));
    assert_copy_restores(&replica, &oracles, Some(&active));
    let (ok, out) = cp_r(&m.path("vm.qcow2/forward"), &s.join("fwd-after"));
    assert!(ok, "{out}");
    assert_copy_restores(&s.join("fwd-after"), &oracles, Some(&active));
}

#[test]
fn with_force_share_a_copy_racing_writes_is_one_state_or_fails() {
    let (d, src) = scratch_images();
    let s = d.path();
    let img = src.join("vm.qcow2");
    create(&img, "64M", "");
    let mut vm = Vm::start(&img);
    vm.write(0x11, 0, 16 << 20);
    vm.savevm("mon");
    vm.write(0x22, 8 << 20, 16 << 20);
    let m = Mount::new(&src, &s.join("mnt"), &["--force-share"]);
    assert!(names_in(&m.path("vm.qcow2/forward")).contains(&"active.qcow2".to_string()));
    let (mut whole, mut failed) = (0, 0);
    for round in 0..5u64 {
        let from = m.path("vm.qcow2/forward");
        let copy = s.join(format!("copy{round}"));
        let (from2, copy2) = (from.clone(), copy.clone());
        let t = std::thread::spawn(move || cp_r(&from2, &copy2));
        for i in 0..8u64 {
            vm.write(0x30 + round as u8, (40 << 20) + i * (256 << 10), 256 << 10);
        }
        let (ok, msg) = t.join().unwrap();
        if ok {
            // SHA256SUMS is of the same state as the files beside it.
            let (ok, out) = status("sha256sum", &["-c", "--quiet", "SHA256SUMS"], Some(&copy));
            assert!(
                ok,
                "round {round}: a copy that exited 0 does not verify: {out}"
            );
            whole += 1;
        } else {
            assert!(msg.contains("Stale file handle"), "round {round}: {msg}");
            failed += 1;
        }
    }
    println!("{whole} copies of forward/ racing writes whole, {failed} failed with ESTALE");
    vm.quit();
}
