//! End-to-end tests through a real FUSE mount.

mod common;
use common::*;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn image_with_snapshots(dir: &Path, name: &str) -> PathBuf {
    let img = at(dir, name);
    create(&img, "16M", "");
    qemu_io(
        &img,
        "qcow2",
        &["write -P 0x11 0 1M", "write -c -P 0x12 8M 64k"],
    );
    snapshot(&img, "aaa");
    qemu_io(&img, "qcow2", &["write -P 0x21 512k 1M", "write -z 8M 64k"]);
    snapshot(&img, "bbb");
    qemu_io(&img, "qcow2", &["write -P 0x31 4M 64k", "discard 0 64k"]);
    img
}

#[test]
fn tree_mirrors_the_folder_and_views_equal_qemu_img() {
    let d = scratch();
    let src = at(d.path(), "images");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    let img = image_with_snapshots(&src, "vm.qcow2");
    std::fs::copy(&img, src.join("sub/deeper/copy.img")).unwrap();
    std::fs::write(src.join("README.txt"), b"plain file\n").unwrap();
    let m = Mount::new(&src, &at(d.path(), "mnt"), &[]);

    assert_eq!(
        std::fs::read(m.path("README.txt")).unwrap(),
        b"plain file\n"
    );
    // A qcow2 file is known by its magic, not its name.
    assert!(m.path("sub/deeper/copy.img").is_dir());
    let names = names_in(&m.path("vm.qcow2"));
    assert_eq!(
        names,
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
    let snaps = names_in(&m.path("vm.qcow2/snapshots"));
    assert_eq!(snaps, ["aaa.raw", "bbb.raw"]);

    assert!(
        std::fs::read(m.path("vm.qcow2/active.raw")).unwrap() == oracle_raw(d.path(), &img, None)
    );
    assert!(
        std::fs::read(m.path("vm.qcow2/snapshots/aaa.raw")).unwrap()
            == oracle_raw(d.path(), &img, Some("1"))
    );
    assert!(
        std::fs::read(m.path("vm.qcow2/snapshots/bbb.raw")).unwrap()
            == oracle_raw(d.path(), &img, Some("2"))
    );
    let (_, info, _) = qcow2fs(&["info", img.to_str().unwrap()]);
    let shown = std::fs::read_to_string(m.path("vm.qcow2/info")).unwrap();
    // Same report; only the image path differs in form.
    assert_eq!(
        shown.lines().skip(1).collect::<Vec<_>>(),
        info.lines().skip(1).collect::<Vec<_>>()
    );
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.path("vm.qcow2/info.json")).unwrap()).unwrap();
    assert_eq!(j["verdict"], "clean");
}

#[test]
fn files_behave_like_files() {
    let (d, src) = scratch_images();
    let img = image_with_snapshots(&src, "vm.qcow2");
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&img, Some(1234), Some(5678)).unwrap();
    let m = Mount::new(&src, &at(d.path(), "mnt"), &[]);
    let snap = m.path("vm.qcow2/snapshots/aaa.raw");
    let meta = std::fs::metadata(&snap).unwrap();
    let src_meta = std::fs::metadata(&img).unwrap();
    assert_eq!(meta.len(), 16 << 20);
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    assert_eq!(meta.mode() & 0o777, 0o440);
    // Sparse: 1 MiB + one compressed cluster of data in a 16 MiB disk.
    assert_eq!(meta.blocks() * 512, (1 << 20) + 65536);
    let image = qcow2fs::Image::open(&img, &qcow2fs::OpenOptions::new(1 << 20)).unwrap();
    assert_eq!(meta.mtime(), i64::from(image.snapshots()[0].date_sec));
    let active = std::fs::metadata(m.path("vm.qcow2/active.raw")).unwrap();
    assert_eq!(active.mtime(), src_meta.mtime());

    // SEEK_DATA / SEEK_HOLE follow the extent map.
    let f = std::fs::File::open(&snap).unwrap();
    use std::os::fd::AsRawFd;
    let seek = |off: i64, whence: i32| unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
    assert_eq!(seek(0, libc::SEEK_DATA), 0);
    assert_eq!(seek(0, libc::SEEK_HOLE), 1 << 20);
    assert_eq!(seek(1 << 20, libc::SEEK_DATA), 8 << 20);
    assert_eq!(seek((8 << 20) + 65536, libc::SEEK_DATA), -1);
    assert_eq!(seek((8 << 20) + 65536, libc::SEEK_HOLE), (8 << 20) + 65536);
    // cp --sparse keeps the holes.
    let copy = at(d.path(), "copy.raw");
    run(
        "cp",
        &[
            "--sparse=always",
            snap.to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    assert!(std::fs::metadata(&copy).unwrap().blocks() * 512 <= 2 << 20);

    // Snapshot views stay in the page cache across opens.
    std::fs::read(&snap).unwrap();
    let out = run(
        "fincore",
        &[
            "--bytes",
            "--noheadings",
            "--output",
            "RES",
            snap.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.trim(),
        (16u64 << 20).to_string(),
        "resident bytes after a read"
    );

    // Read-only: every change fails with EROFS.
    let erofs =
        |r: std::io::Result<()>| assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EROFS));
    erofs(std::fs::write(m.path("new"), b"x"));
    erofs(std::fs::create_dir(m.path("dir")));
    erofs(std::fs::remove_file(m.path("vm.qcow2/active.raw")));
    erofs(
        std::fs::OpenOptions::new()
            .write(true)
            .open(&snap)
            .map(|_| ()),
    );
    erofs(std::fs::set_permissions(
        &snap,
        std::fs::Permissions::from_mode(0o777),
    ));

    // No file has extended attributes: asking for one says that the mount
    // has none (the kernel is told once, for the whole mount), and the list
    // is empty.
    for name in ["user.x", "security.selinux"] {
        let out = Command::new("getfattr")
            .args(["-n", name, snap.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Operation not supported"), "{err}");
    }
    assert_eq!(run("getfattr", &["-d", snap.to_str().unwrap()]), "");
    // Copies that keep attributes copy such files without any.
    let kept = at(d.path(), "kept");
    std::fs::create_dir(&kept).unwrap();
    run(
        "cp",
        &["-a", snap.to_str().unwrap(), kept.to_str().unwrap()],
    );
    run(
        "rsync",
        &[
            "-aX",
            snap.to_str().unwrap(),
            kept.join("x.raw").to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read(kept.join("x.raw")).unwrap(),
        std::fs::read(&snap).unwrap()
    );

    // statfs answers.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    let c = std::ffi::CString::new(m.mp.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    assert!(s.f_flag & libc::ST_RDONLY != 0);
    assert!(s.f_blocks > 0);
}

#[test]
fn snapshot_names_follow_the_rule() {
    let (d, src) = scratch_images();
    let img = at(&src, "n.qcow2");
    create(&img, "1M", "");
    for name in ["dup", "dup", "active", "ok"] {
        snapshot(&img, name);
    }
    let m = Mount::new(&src, &at(d.path(), "mnt"), &[]);
    let snaps = names_in(&m.path("n.qcow2/snapshots"));
    assert_eq!(
        snaps,
        ["active.id3.raw", "dup.id1.raw", "dup.id2.raw", "ok.raw"]
    );
}

#[test]
fn changes_to_the_source_show_and_deleted_snapshots_are_stale() {
    let (d, src) = scratch_images();
    let img = image_with_snapshots(&src, "vm.qcow2");
    let m = Mount::new(&src, &at(d.path(), "mnt"), &[]);
    let f = std::fs::File::open(m.path("vm.qcow2/snapshots/aaa.raw")).unwrap();
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == 0x11));

    // A new image and a new snapshot appear.
    create(&at(&src, "new.qcow2"), "1M", "");
    snapshot(&img, "ccc");
    wait_until("the new snapshot", || {
        m.path("vm.qcow2/snapshots/ccc.raw").exists()
    });
    wait_until("the new image", || m.path("new.qcow2/active.raw").exists());

    // The deleted snapshot disappears; its open file reads ESTALE from now
    // on, even after its clusters are reused by new writes.
    qemu_img(&["snapshot", "-d", "aaa", img.to_str().unwrap()]);
    qemu_io(&img, "qcow2", &["write -P 0x77 0 2M"]);
    wait_until("the snapshot to go", || {
        !m.path("vm.qcow2/snapshots/aaa.raw").exists()
    });
    let mut buf = vec![0u8; 4096];
    let err = f.read_exact_at(&mut buf, 1 << 20).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE));
    // The active view shows the new writes.
    let active = std::fs::read(m.path("vm.qcow2/active.raw")).unwrap();
    assert!(active[..2 << 20].iter().all(|&b| b == 0x77));
}

#[test]
fn unreadable_images_show_only_info_and_others_are_served() {
    let (d, src) = scratch_images();
    let good = image_with_snapshots(&src, "good.qcow2");
    let bad = at(&src, "bad.qcow2");
    std::fs::copy(&good, &bad).unwrap();
    poke(&bad, 40, &(1u64 << 40).to_be_bytes());
    // A backing file outside IMAGE_DIR is refused by default.
    let outside = at(d.path(), "outside.raw");
    std::fs::write(&outside, vec![0x5au8; 1 << 20]).unwrap();
    let leak = at(&src, "leak.qcow2");
    overlay(&leak, outside.to_str().unwrap(), "raw", None);

    let m = Mount::new(&src, &at(d.path(), "mnt"), &[]);
    let names: Vec<String> = std::fs::read_dir(m.path("bad.qcow2"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["info"]);
    let info = std::fs::read_to_string(m.path("bad.qcow2/info")).unwrap();
    assert!(info.contains("L1 table"), "{info}");
    assert!(std::fs::read(m.path("good.qcow2/snapshots/aaa.raw")).is_ok());
    let err = std::fs::read(m.path("leak.qcow2/active.raw")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    drop(m);

    let m = Mount::new(&src, &at(d.path(), "mnt2"), &["--allow-outside-backing"]);
    let bytes = std::fs::read(m.path("leak.qcow2/active.raw")).unwrap();
    assert!(bytes.iter().all(|&b| b == 0x5a));
}

#[test]
fn allow_other_checks_permissions_of_the_source() {
    let (d, src) = scratch_images();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let private = image_with_snapshots(&src, "private.qcow2");
    let public = at(&src, "public.qcow2");
    std::fs::copy(&private, &public).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
    let m = Mount::new(&src, &at(d.path(), "mnt"), &["-o", "allow_other"]);
    let as_nobody = |path: &Path| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "cat",
                path.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap()
    };
    let denied = as_nobody(&m.path("private.qcow2/snapshots/aaa.raw"));
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("Permission denied"));
    assert!(
        !as_nobody(&m.path("private.qcow2/active.raw"))
            .status
            .success()
    );
    assert!(
        as_nobody(&m.path("public.qcow2/snapshots/aaa.raw"))
            .status
            .success()
    );
}

#[test]
fn the_command_daemonizes_stops_cleanly_and_refuses_bad_arguments() {
    let (d, src) = scratch_images();
    image_with_snapshots(&src, "vm.qcow2");
    let mp = at(d.path(), "mnt");
    std::fs::create_dir_all(&mp).unwrap();

    // --daemon returns once the mount is ready.
    let (code, _, err) = qcow2fs(&[
        "mount",
        "--daemon",
        src.to_str().unwrap(),
        mp.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(mp.join("vm.qcow2/active.raw").exists());
    // A busy mountpoint is refused with one line.
    let (code, _, err) = qcow2fs(&["mount", src.to_str().unwrap(), mp.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("busy") && err.lines().count() == 1, "{err}");
    run("umount", &[mp.to_str().unwrap()]);

    // Paths relative to the folder it is started in, as a user types them.
    let out = Command::new(bin())
        .current_dir(d.path())
        .args(["mount", "--daemon", "images", "mnt"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(mp.join("vm.qcow2/active.raw").exists());
    run("umount", &[mp.to_str().unwrap()]);

    let (code, _, err) = qcow2fs(&[
        "mount",
        at(d.path(), "nope").to_str().unwrap(),
        mp.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("IMAGE_DIR") && err.lines().count() == 1,
        "{err}"
    );
    let file = at(d.path(), "file");
    std::fs::write(&file, b"").unwrap();
    let (code, _, err) = qcow2fs(&["mount", src.to_str().unwrap(), file.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("not a folder") && err.lines().count() == 1,
        "{err}"
    );

    // SIGINT and SIGTERM unmount and exit 0.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut m = Mount::new(&src, &mp, &[]);
        let mut child = m.child.take().unwrap();
        unsafe { libc::kill(child.id() as i32, sig) };
        assert_eq!(child.wait().unwrap().code(), Some(0));
        assert!(!is_mounted(&m.mp));
    }
}

#[test]
fn large_reads_are_served_side_by_side_and_failures_are_logged_once() {
    let (d, src) = scratch_images();
    image_with_snapshots(&src, "vm.qcow2");
    let orphan = at(&src, "orphan.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "missing.raw",
        "-F",
        "raw",
        "-u",
        orphan.to_str().unwrap(),
        "4M",
    ]);
    let log = at(d.path(), "log");
    let mut m = Mount::logged(&src, &at(d.path(), "mnt"), &log);
    let f = m.path("vm.qcow2/active.raw");
    run(
        "dd",
        &[
            &format!("if={}", f.display()),
            "of=/dev/null",
            "bs=1M",
            "count=4",
            "iflag=direct",
        ],
    );
    for _ in 0..3 {
        assert!(std::fs::read(m.path("orphan.qcow2/active.raw")).is_err());
    }
    assert_eq!(m.stop(), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    // Each 1 MiB direct read arrives as four 256 KiB requests at once,
    // served by more than one thread.
    let sizes: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split(" size ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert!(sizes.contains(&262144), "no 256 KiB request:\n{text}");
    assert!(sizes.iter().all(|&s| s <= 262144), "{sizes:?}");
    let threads: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.split(" thread ").nth(1))
        .collect();
    assert!(threads.len() > 1, "one serving thread only: {threads:?}");
    let failures = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("missing.raw"))
        .count();
    assert_eq!(failures, 1, "{text}");
}

#[test]
fn symlinks_stay_inside_and_mount_options_apply() {
    let d = scratch();
    let src = at(d.path(), "images");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    image_with_snapshots(&src, "vm.qcow2");
    let secret = at(d.path(), "secret.txt");
    std::fs::write(&secret, b"outside").unwrap();
    std::os::unix::fs::symlink("../vm.qcow2", src.join("sub/inside-link.qcow2")).unwrap();
    std::os::unix::fs::symlink(&secret, src.join("outside-link")).unwrap();
    std::os::unix::fs::symlink("/etc", src.join("etc-link")).unwrap();
    let m = Mount::new(
        &src,
        &at(d.path(), "mnt"),
        &[
            "-o",
            "fsname=vmimages,subtype=qcow2test",
            "--cache-size",
            "16M",
            "--threads",
            "2",
        ],
    );
    assert!(m.path("sub/inside-link.qcow2/snapshots/aaa.raw").exists());
    assert!(!m.path("outside-link").exists());
    assert!(!m.path("etc-link").exists());
    assert!(std::fs::read(m.path("etc-link/passwd")).is_err());
    let names: Vec<String> = std::fs::read_dir(&m.mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names.contains(&"outside-link".to_string()) && !names.contains(&"etc-link".to_string()),
        "{names:?}"
    );
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == m.mp.to_str())
        .unwrap();
    assert!(
        line.starts_with("vmimages ") && line.contains(" fuse.qcow2test ro,"),
        "{line}"
    );
    let (code, _, err) = qcow2fs(&[
        "mount",
        "--cache-size",
        "lots",
        src.to_str().unwrap(),
        m.mp.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("not a size"), "{err}");
    let (code, _, err) = qcow2fs(&[
        "mount",
        "-o",
        "frobnicate",
        src.to_str().unwrap(),
        m.mp.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown mount option 'frobnicate'"), "{err}");
}

/// Bytes of `path` in the page cache, as fincore (which opens the file, so
/// the mount decides at that open whether earlier pages stay) reports them.
fn resident(path: &Path) -> u64 {
    let out = run(
        "fincore",
        &["-b", "-n", "-o", "RES", path.to_str().unwrap()],
    );
    out.trim().parse().expect("fincore prints a byte count")
}

#[test]
fn cached_pages_are_kept_only_while_every_source_is_unchanged() {
    let (d, src) = scratch_images();
    let base = at(&src, "base.qcow2");
    create(&base, "8M", "");
    qemu_io(&base, "qcow2", &["write -P 0x01 0 8M"]);
    let img = at(&src, "vm.qcow2");
    overlay(&img, "base.qcow2", "qcow2", None);
    qemu_io(&img, "qcow2", &["write -P 0x02 0 1M"]);
    snapshot(&img, "aaa");
    qemu_io(&img, "qcow2", &["write -P 0x03 1M 1M"]);
    let plain = at(&src, "notes.bin");
    std::fs::write(&plain, vec![0x04u8; 1 << 20]).unwrap();

    let m = Mount::new(&src, &at(d.path(), "mnt"), &[]);
    let files = [
        "vm.qcow2/active.raw",
        "vm.qcow2/chain/vm_active.qcow2",
        "vm.qcow2/chain/base.qcow2",
        "notes.bin",
    ];
    let read_each = || {
        files
            .iter()
            .map(|f| std::fs::read(m.path(f)).unwrap())
            .collect::<Vec<_>>()
    };
    let first = read_each();
    // A chain folder file is read past the page cache while it is hashed
    // (its first read in full); once its digest is known, it is cached.
    for f in &files[1..3] {
        assert_eq!(resident(&m.path(f)), 0, "{f}");
    }
    assert_eq!(read_each(), first);
    // Opened again with nothing changed, every file keeps its pages.
    for f in files {
        assert!(resident(&m.path(f)) > 0, "{f} lost its cached pages");
    }
    assert_eq!(read_each(), first);

    // A write to the image: the views of its active state drop their pages
    // and show the new bytes; the passed-through base and the plain file
    // keep theirs.
    qemu_io(&img, "qcow2", &["write -P 0x05 0 64k"]);
    for (f, kept) in files.iter().zip([false, false, true, true]) {
        assert_eq!(resident(&m.path(f)) > 0, kept, "{f}");
    }
    let active = std::fs::read(m.path(files[0])).unwrap();
    assert_eq!(active, oracle_raw(d.path(), &img, None));
    assert!(active[..64 << 10].iter().all(|&b| b == 0x05));

    // A write to the backing file shows through the overlay's views and in
    // the passed-through copy; a rewrite of the plain file in place shows too.
    read_each();
    qemu_io(&base, "qcow2", &["write -P 0x06 4M 64k"]);
    std::fs::write(&plain, vec![0x07u8; 1 << 20]).unwrap();
    let now = read_each();
    assert_eq!(now[0], oracle_raw(d.path(), &img, None));
    assert!(
        now[0][4 << 20..(4 << 20) + (64 << 10)]
            .iter()
            .all(|&b| b == 0x06)
    );
    assert_eq!(now[2], std::fs::read(&base).unwrap());
    assert!(now[3].iter().all(|&b| b == 0x07));
    // A file that an open read only in part (not a copy) is read through
    // the page cache from then on.
    let layer = m.path("vm.qcow2/chain/vm_snapshot[0].qcow2");
    let mut head = [0u8; 4096];
    std::io::Read::read_exact(&mut std::fs::File::open(&layer).unwrap(), &mut head).unwrap();
    std::fs::read(&layer).unwrap();
    assert!(resident(&layer) > 0);

    let copy = at(d.path(), "vm_active.qcow2");
    std::fs::write(&copy, &now[1]).unwrap();
    std::fs::write(at(d.path(), "base.qcow2"), &now[2]).unwrap();
    qemu_img(&[
        "compare",
        "-q",
        copy.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
}

#[test]
fn a_notify_unit_is_told_ready_once_the_mount_serves() {
    use std::os::unix::net::UnixDatagram;
    let (d, src) = scratch_images();
    create(&src.join("vm.qcow2"), "1M", "");
    let sock = d.path().join("notify");
    let listener = UnixDatagram::bind(&sock).unwrap();
    listener
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mp = d.path().join("mnt");
    std::fs::create_dir_all(&mp).unwrap();
    let mut child = std::process::Command::new(bin())
        .args(["mount", src.to_str().unwrap(), mp.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &sock)
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    // Ready means served: the image folder is there at once.
    assert!(mp.join("vm.qcow2/active.raw").exists());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}
