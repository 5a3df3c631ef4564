//! Live images, faults and load: a running VM's image, sources that change
//! or vanish under open files, and many readers at once.

mod common;
use common::*;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn image(dir: &Path, name: &str) -> PathBuf {
    let img = dir.join(name);
    create(&img, "16M", "");
    qemu_io(
        &img,
        "qcow2",
        &["write -P 0x11 0 2M", "write -P 0x12 8M 1M"],
    );
    snapshot(&img, "s1");
    qemu_io(&img, "qcow2", &["write -P 0x21 1M 2M", "write -z 8M 512k"]);
    snapshot(&img, "s2");
    qemu_io(&img, "qcow2", &["write -P 0x31 4M 1M"]);
    snapshot(&img, "s3");
    qemu_io(&img, "qcow2", &["write -P 0x41 0 512k"]);
    img
}

#[test]
fn an_image_in_use_serves_snapshots_and_active_only_with_force_share() {
    // (The chain folders of an image in use, and copies of them while a
    // real QEMU runs, are tests/running_vm.rs.)
    let (d, src) = scratch_images();
    let img = image(&src, "vm.qcow2");
    let m = Mount::new(&src, &d.path().join("mnt"), &[]);
    let mut vm = Command::new("qemu-io")
        .args(["-f", "qcow2", img.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the lock", || qcow2fs::image::lock::in_use(&img));
    let e = std::fs::read(m.path("vm.qcow2/active.raw")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
    // The chain folders hold the snapshots only: no active layer.
    let e = std::fs::read(m.path("vm.qcow2/chain/vm_active.qcow2")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    assert!(
        std::fs::read(m.path("vm.qcow2/snapshots/s1.raw")).unwrap()
            == oracle_raw(d.path(), &img, Some("1"))
    );
    assert!(std::fs::read(m.path("vm.qcow2/chain/vm_snapshot[0].qcow2")).is_ok());
    assert!(
        std::fs::read_to_string(m.path("vm.qcow2/info"))
            .unwrap()
            .contains("in use: yes")
    );
    let m2 = Mount::new(&src, &d.path().join("mnt2"), &["--force-share"]);
    assert_eq!(
        std::fs::read(m2.path("vm.qcow2/active.raw")).unwrap().len(),
        16 << 20
    );
    assert!(m2.path("vm.qcow2/chain/vm_active.qcow2").exists());
    drop(vm.stdin.take());
    vm.wait().unwrap();
}

#[test]
fn a_raw_backing_file_that_looks_like_qcow2_is_read_as_raw() {
    let (d, src) = scratch_images();
    let fake = src.join("disk.raw");
    create(&fake, "4M", "");
    qemu_io(&fake, "qcow2", &["write -P 0x66 0 1M"]);
    let top = src.join("top.qcow2");
    overlay(&top, "disk.raw", "raw", Some("4M"));
    let m = Mount::new(&src, &d.path().join("mnt"), &[]);
    // The overlay reads the file's own bytes (a qcow2 header), as qemu-img does.
    let active = std::fs::read(m.path("top.qcow2/active.raw")).unwrap();
    assert!(active.starts_with(b"QFI\xfb"));
    assert!(active == oracle_raw(d.path(), &top, None));
    // Put in IMAGE_DIR by the user, the same file is shown as an image.
    assert!(m.path("disk.raw/active.raw").exists());
}

/// The flags of every file the mount process holds open inside `dir`.
fn open_flags(pid: u32, dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        if !target.starts_with(dir) {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            e.file_name().to_string_lossy()
        ))
        .unwrap();
        let flags = info.lines().find(|l| l.starts_with("flags:")).unwrap();
        let flags = u32::from_str_radix(flags.split_whitespace().nth(1).unwrap(), 8).unwrap();
        out.push((target, flags));
    }
    out
}

#[test]
fn sources_are_only_opened_read_only_and_faults_stay_local() {
    let (d, src) = scratch_images();
    let a = image(&src, "a.qcow2");
    let b = image(&src, "b.qcow2");
    let c = image(&src, "c.qcow2");
    let good = image(&src, "good.qcow2");
    let m = Mount::new(&src, &d.path().join("mnt"), &[]);
    let open = |p: &str| std::fs::File::open(m.path(p)).unwrap();
    let fa = open("a.qcow2/snapshots/s1.raw");
    let fb = open("b.qcow2/active.raw");
    let fc = open("c.qcow2/chain/c_snapshot[0].qcow2");
    let mut buf = vec![0u8; 65536];
    for f in [&fa, &fb, &fc] {
        f.read_exact_at(&mut buf, 0).unwrap();
    }
    // Every source the mount holds open is open read-only.
    let pid = m.child.as_ref().unwrap().id();
    let fds = open_flags(pid, &std::fs::canonicalize(&src).unwrap());
    assert!(!fds.is_empty());
    for (path, flags) in &fds {
        assert_eq!(
            flags & libc::O_ACCMODE as u32,
            libc::O_RDONLY as u32,
            "{} open with flags {flags:o}",
            path.display()
        );
    }

    // Truncated, deleted, replaced: those files fail, the rest is served.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&a)
        .unwrap()
        .set_len(200_000)
        .unwrap();
    std::fs::remove_file(&b).unwrap();
    std::fs::copy(&good, src.join("c.tmp")).unwrap();
    qemu_img(&["snapshot", "-d", "s1", src.join("c.tmp").to_str().unwrap()]);
    std::fs::rename(src.join("c.tmp"), &c).unwrap();
    for (f, what) in [(&fa, "truncated"), (&fb, "deleted"), (&fc, "replaced")] {
        let e = f.read_exact_at(&mut buf, 1 << 20).unwrap_err();
        let code = e.raw_os_error();
        // ESTALE: a file that depends on a changed image, opened before.
        assert!(
            [libc::EIO, libc::ENOENT, libc::ESTALE]
                .map(Some)
                .contains(&code),
            "{what}: {e}"
        );
    }
    assert!(
        std::fs::read(m.path("good.qcow2/snapshots/s2.raw")).unwrap()
            == oracle_raw(d.path(), &good, Some("2"))
    );
    wait_until("the deleted image to go", || !m.path("b.qcow2").exists());
}

/// The snapshot views' expected bytes, read by qemu-img before the test.
fn oracles(dir: &Path, img: &Path) -> Vec<(String, Vec<u8>)> {
    (1..=3)
        .map(|i| (format!("s{i}"), oracle_raw(dir, img, Some(&i.to_string()))))
        .collect()
}

#[test]
fn readers_of_a_changing_image_get_qemu_img_bytes_or_eio() {
    let (d, src) = scratch_images();
    let img = image(&src, "vm.qcow2");
    let expected = Arc::new(oracles(d.path(), &img));
    let m = Mount::new(&src, &d.path().join("mnt"), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let (good, eio) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut readers = Vec::new();
    for t in 0..4u64 {
        let (stop, good, eio, expected) =
            (stop.clone(), good.clone(), eio.clone(), expected.clone());
        let dir = m.path("vm.qcow2/snapshots");
        readers.push(std::thread::spawn(move || {
            let mut rng = t * 7919 + 1;
            while !stop.load(Ordering::Relaxed) {
                for (name, want) in expected.iter() {
                    let Ok(f) = std::fs::File::open(dir.join(format!("{name}.raw"))) else {
                        continue;
                    };
                    for _ in 0..16 {
                        rng = rng
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let off = (rng >> 33) % (16 << 20);
                        let len = ((rng >> 13) % (256 << 10)) as usize + 1;
                        let mut buf = vec![0u8; len];
                        match f.read_at(&mut buf, off) {
                            Ok(n) => {
                                assert!(
                                    buf[..n] == want[off as usize..off as usize + n],
                                    "{name} at {off:#x}: wrong bytes"
                                );
                                good.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                assert_eq!(e.raw_os_error(), Some(libc::EIO), "{name}: {e}");
                                eio.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
        }));
    }
    // The "VM": writes, and takes and deletes snapshots, s2 among them.
    let t = Instant::now();
    let mut k = 0;
    while t.elapsed() < Duration::from_secs(10) {
        k += 1;
        let off = (k * 1_048_576) % (15 << 20);
        qemu_io(
            &img,
            "qcow2",
            &[&format!("write -P {} {off} 1M", k % 200 + 20)],
        );
        snapshot(&img, &format!("tmp{k}"));
        if k > 1 {
            qemu_img(&[
                "snapshot",
                "-d",
                &format!("tmp{}", k - 1),
                img.to_str().unwrap(),
            ]);
        }
        if k == 5 {
            qemu_img(&["snapshot", "-d", "s2", img.to_str().unwrap()]);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let (g, e) = (good.load(Ordering::Relaxed), eio.load(Ordering::Relaxed));
    eprintln!("{k} rounds of changes; {g} reads with qemu-img's bytes, {e} EIO");
    assert!(g > 100, "too few reads: {g}");
}

#[test]
fn sixty_seconds_of_sixteen_readers() {
    let (d, src) = scratch_images();
    let img = image(&src, "vm.qcow2");
    let mut views: Vec<(String, Vec<u8>)> = oracles(d.path(), &img)
        .into_iter()
        .map(|(n, b)| (format!("vm.qcow2/snapshots/{n}.raw"), b))
        .collect();
    views.push((
        "vm.qcow2/active.raw".into(),
        oracle_raw(d.path(), &img, None),
    ));
    // Layers: their bytes as exported.
    let image = qcow2fs::Image::open(&img, &qcow2fs::OpenOptions::new(1 << 20)).unwrap();
    for spec in qcow2fs::chain::layers(&image, qcow2fs::chain::Direction::Reverse) {
        let l = qcow2fs::chain::build(&image, &spec).unwrap();
        views.push((
            format!("vm.qcow2/chain/{}", spec.file_name),
            read_all(&l, 1 << 20),
        ));
    }
    let views = Arc::new(views);
    let m = Mount::new(&src, &d.path().join("mnt"), &["--cache-size", "8M"]);
    let secs = std::env::var("LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let reads = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..16u64)
        .map(|t| {
            let (views, reads, root) = (views.clone(), reads.clone(), m.mp.clone());
            std::thread::spawn(move || {
                let mut rng = t + 12345;
                let mut next = || {
                    rng = rng
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    rng >> 17
                };
                while Instant::now() < deadline {
                    let (name, want) = &views[(next() % views.len() as u64) as usize];
                    let f = std::fs::File::open(root.join(name)).unwrap();
                    for _ in 0..32 {
                        let off = next() % want.len() as u64;
                        let len = (next() % (1 << 20)) as usize + 1;
                        let mut buf = vec![0u8; len];
                        let n = f
                            .read_at(&mut buf, off)
                            .unwrap_or_else(|e| panic!("{name}: {e}"));
                        assert!(
                            buf[..n] == want[off as usize..off as usize + n],
                            "{name} at {off}"
                        );
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let pid = m.child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    eprintln!(
        "{} verified reads in {secs} s; peak RSS {} MiB",
        reads.load(Ordering::Relaxed),
        hwm / 1024
    );
    assert!(hwm * 1024 < (64 << 20) + (8 << 20), "peak RSS {hwm} KiB");
}
