//! What the command does for the one who runs it: dangerous mounts are
//! refused, the log goes somewhere, exit codes a script can trust, errors
//! that name their file, export that never mixes two chains, and a mount
//! that ends as soon as it is unmounted.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A small image with two snapshots.
fn small_image(dir: &Path, name: &str) -> PathBuf {
    let img = at(dir, name);
    create(&img, "8M", "");
    qemu_io(&img, "qcow2", &["write -P 0x11 0 1M"]);
    snapshot(&img, "monday");
    qemu_io(&img, "qcow2", &["write -P 0x22 1M 1M"]);
    snapshot(&img, "tuesday");
    qemu_io(&img, "qcow2", &["write -P 0x33 2M 1M"]);
    img
}

/// An image whose L1 table offset is not cluster aligned: it cannot be
/// opened.
fn unreadable_image(dir: &Path, name: &str) -> PathBuf {
    let img = at(dir, name);
    create(&img, "8M", "");
    poke(&img, 40, &u64::MAX.to_be_bytes());
    img
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `qcow2fs mount --daemon ARGS...` is refused: exit 1, one line naming
/// both folders, nothing mounted at either.
fn assert_refused(args: &[&str], image_dir: &Path, mp: &Path, why: &str) {
    let mut all = vec!["mount", "--daemon"];
    all.extend(args);
    let (code, _, err) = qcow2fs(&all);
    let mounted = is_mounted(mp) || is_mounted(image_dir);
    if mounted {
        let _ = Command::new("umount").args(["-l", s(mp)]).status();
        let _ = Command::new("umount").args(["-l", s(image_dir)]).status();
    }
    assert!(!mounted, "{args:?}: mounted");
    assert_eq!(code, 1, "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    let (img, mp) = (
        std::fs::canonicalize(image_dir).unwrap(),
        std::fs::canonicalize(mp).unwrap(),
    );
    assert!(
        err.contains(&format!("IMAGE_DIR {}", img.display()))
            && err.contains(&format!("MOUNTPOINT {}", mp.display())),
        "{args:?}: both paths: {err}"
    );
    assert!(err.contains(why), "{args:?}: {err}");
}

#[test]
fn dangerous_mounts_are_refused_with_both_paths_and_nothing_is_mounted() {
    let (d, src) = scratch_images();
    small_image(&src, "vm.qcow2");
    let mnt = at(d.path(), "mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let inside = at(&src, "sub");
    std::fs::create_dir_all(&inside).unwrap();

    // MOUNTPOINT = IMAGE_DIR: the mount would wait on itself forever.
    assert_refused(&[s(&src), s(&src)], &src, &src, "MOUNTPOINT is IMAGE_DIR");
    // The same folder named two ways.
    let twice = format!("{}/../images/", s(&mnt));
    assert_refused(&[s(&src), &twice], &src, &src, "MOUNTPOINT is IMAGE_DIR");
    // MOUNTPOINT inside IMAGE_DIR.
    assert_refused(
        &[s(&src), s(&inside)],
        &src,
        &inside,
        "MOUNTPOINT lies inside IMAGE_DIR",
    );
    // IMAGE_DIR inside MOUNTPOINT.
    assert_refused(
        &["-o", "nonempty", s(&inside), s(&src)],
        &inside,
        &src,
        "IMAGE_DIR lies inside MOUNTPOINT",
    );
    // Swapped arguments: the images folder as MOUNTPOINT, with or without
    // -o nonempty.
    assert_refused(
        &[s(&mnt), s(&src)],
        &mnt,
        &src,
        "MOUNTPOINT holds disk images",
    );
    assert_refused(
        &["-o", "nonempty", s(&mnt), s(&src)],
        &mnt,
        &src,
        "MOUNTPOINT holds disk images",
    );
    // Images in a folder of MOUNTPOINT count too.
    let pool = at(d.path(), "pool");
    std::fs::create_dir_all(pool.join("vms")).unwrap();
    std::fs::write(pool.join("vms/disk.img"), b"").unwrap();
    assert_refused(
        &["-o", "nonempty", s(&src), s(&pool)],
        &src,
        &pool,
        "MOUNTPOINT holds disk images",
    );
    // A MOUNTPOINT with other files: refused, unless -o nonempty.
    std::fs::write(mnt.join("notes.txt"), b"x").unwrap();
    assert_refused(&[s(&src), s(&mnt)], &src, &mnt, "MOUNTPOINT is not empty");
    let (code, _, err) = qcow2fs(&["mount", "--daemon", "-o", "nonempty", s(&src), s(&mnt)]);
    assert_eq!(code, 0, "{err}");
    assert!(mnt.join("vm.qcow2/active.raw").exists());
    run("umount", &[s(&mnt)]);
    // The images are untouched.
    assert!(src.join("vm.qcow2").exists() && inside.exists());
}

#[test]
fn under_daemon_the_log_file_gets_the_path_and_reason_of_an_unreadable_image() {
    let (d, src) = scratch_images();
    small_image(&src, "vm.qcow2");
    let bad = unreadable_image(&src, "bad.qcow2");
    std::fs::write(src.join("junk.qcow2"), b"not an image").unwrap();
    let mnt = at(d.path(), "mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let log = at(d.path(), "qcow2fs.log");
    let (code, _, err) = qcow2fs(&["mount", "--daemon", "--log-file", s(&log), s(&src), s(&mnt)]);
    assert_eq!(code, 0, "{err}");
    // Standard error of the server is gone; the log is not.
    for _ in 0..3 {
        let _ = std::fs::read(mnt.join("bad.qcow2/info"));
        let _ = std::fs::read(mnt.join("bad.qcow2/active.raw"));
    }
    assert!(std::fs::read(mnt.join("vm.qcow2/active.raw")).is_ok());
    run("umount", &[s(&mnt)]);
    let text = std::fs::read_to_string(&log).unwrap();
    let about_bad: Vec<&str> = text.lines().filter(|l| l.contains(s(&bad))).collect();
    assert_eq!(about_bad.len(), 1, "logged once: {text}");
    assert!(
        about_bad[0].contains("WARN") && about_bad[0].contains("L1 table"),
        "{text}"
    );
    // A file named .qcow2 without the magic is logged when the mount starts.
    assert!(
        text.lines()
            .any(|l| l.contains("junk.qcow2") && l.contains("lacks the qcow2 magic")),
        "{text}"
    );

    // -q: errors only.
    let quiet = at(d.path(), "quiet.log");
    let (code, _, err) = qcow2fs(&[
        "mount",
        "-q",
        "--daemon",
        "--log-file",
        s(&quiet),
        s(&src),
        s(&mnt),
    ]);
    assert_eq!(code, 0, "{err}");
    let _ = std::fs::read(mnt.join("bad.qcow2/info"));
    let pid = server_of(&mnt);
    run("umount", &[s(&mnt)]);
    // Gone before the next mount at the same place, whose server is found
    // by that place.
    wait_until("the exit", || has_exited(pid));
    assert_eq!(std::fs::read_to_string(&quiet).unwrap(), "");

    // -v: what is done, too.
    let verbose = at(d.path(), "verbose.log");
    let (code, _, err) = qcow2fs(&[
        "mount",
        "-v",
        "--daemon",
        "--log-file",
        s(&verbose),
        s(&src),
        s(&mnt),
    ]);
    assert_eq!(code, 0, "{err}");
    let pid = server_of(&mnt);
    run("kill", &["-TERM", &pid.to_string()]);
    wait_until("the unmount", || !is_mounted(&mnt));
    wait_until("the log", || {
        std::fs::read_to_string(&verbose)
            .is_ok_and(|t| t.contains("INFO") && t.contains("unmounting"))
    });
}

/// Receive on a socket bound at /dev/log while `f` runs; None when
/// /dev/log exists already (a syslog daemon runs: leave it alone).
fn with_syslog(f: impl FnOnce()) -> Option<Vec<String>> {
    let path = Path::new("/dev/log");
    if path.exists() {
        return None;
    }
    let sock = std::os::unix::net::UnixDatagram::bind(path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    f();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    std::fs::remove_file(path).unwrap();
    Some(got)
}

#[test]
fn under_daemon_the_log_goes_to_syslog_without_a_log_file() {
    let (d, src) = scratch_images();
    let bad = unreadable_image(&src, "bad.qcow2");
    let mnt = at(d.path(), "mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let got = with_syslog(|| {
        let (code, _, err) = qcow2fs(&["mount", "--daemon", s(&src), s(&mnt)]);
        assert_eq!(code, 0, "{err}");
        let _ = std::fs::read(mnt.join("bad.qcow2/info"));
        run("umount", &[s(&mnt)]);
    });
    let Some(got) = got else {
        eprintln!("/dev/log exists: a syslog daemon runs; not checked");
        return;
    };
    // Severity 4 (warning) of facility daemon (3): <28>.
    assert!(
        got.iter().any(|m| m.starts_with("<28>qcow2fs[")
            && m.contains(s(&bad))
            && m.contains("L1 table")),
        "{got:?}"
    );
}

#[test]
fn usage_errors_exit_1_and_check_keeps_qemu_img_codes() {
    let d = scratch();
    let img = small_image(d.path(), "vm.qcow2");
    for args in [
        vec!["check"],
        vec!["check", "--bogus", s(&img)],
        vec!["check", "--output", "xml", s(&img)],
        vec!["no-such-command"],
        vec![],
        vec!["mount", "--threads", "0", "a", "b"],
        vec!["mount", "--cache-size", "0", "a", "b"],
        vec!["mount", "-v", "-q", "a", "b"],
    ] {
        let (code, out, err) = qcow2fs(&args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(!err.is_empty(), "{args:?}");
    }
    let (_, _, err) = qcow2fs(&["mount", "--threads", "0", "a", "b"]);
    assert!(err.contains("--threads") && err.contains("1 to"), "{err}");
    let (_, _, err) = qcow2fs(&["mount", "--cache-size", "0", "a", "b"]);
    assert!(
        err.contains("--cache-size") && err.contains("more than 0"),
        "{err}"
    );
    for args in [vec!["--help"], vec!["check", "--help"], vec!["--version"]] {
        let (code, out, _) = qcow2fs(&args);
        assert_eq!(code, 0, "{args:?}");
        assert!(!out.is_empty());
    }

    // check exits as qemu-img check does: clean, corrupt, leaking.
    let status = |p: &Path| {
        let theirs = Command::new("qemu-img")
            .args(["check", "-q", s(p)])
            .output()
            .unwrap()
            .status
            .code();
        (qcow2fs(&["check", s(p)]).0, theirs.unwrap_or(-1))
    };
    assert_eq!(status(&img), (0, 0));
    let reftable = peek64(&img, 48);
    let block = peek64(&img, reftable);
    let corrupt = at(d.path(), "corrupt.qcow2");
    std::fs::copy(&img, &corrupt).unwrap();
    // Cluster 0 (the header) with a refcount of 0.
    poke(&corrupt, block, &[0, 0]);
    assert_eq!(status(&corrupt), (2, 2));
    let leaking = at(d.path(), "leaking.qcow2");
    std::fs::copy(&img, &leaking).unwrap();
    // The header's cluster with a refcount of 2, referenced once.
    poke(&leaking, block, &[0, 2]);
    assert_eq!(status(&leaking), (3, 3));
    let (code, _, err) = qcow2fs(&["check", s(&d.path().join("missing.qcow2"))]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn errors_name_the_image_and_carry_no_os_error_numbers() {
    let d = scratch();
    let bad = unreadable_image(d.path(), "bad.qcow2");
    let missing = d.path().join("missing.qcow2");
    for cmd in ["info", "check"] {
        let (code, _, err) = qcow2fs(&[cmd, s(&bad)]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.starts_with(&format!("qcow2fs: {}: ", s(&bad))) && err.contains("L1 table"),
            "{cmd}: {err}"
        );
        let (code, _, err) = qcow2fs(&[cmd, s(&missing)]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(s(&missing)) && err.contains("No such file or directory"),
            "{cmd}: {err}"
        );
        assert!(!err.contains("os error"), "{cmd}: {err}");
    }
    let (code, _, err) = qcow2fs(&["mount", s(&missing), s(d.path())]);
    assert_eq!(code, 1);
    assert!(
        err.contains(s(&missing)) && !err.contains("os error"),
        "{err}"
    );
}

/// The names of the files in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn export_refuses_a_folder_holding_a_chain_and_force_removes_the_stale_layers() {
    let d = scratch();
    let img = small_image(d.path(), "vm.qcow2");
    snapshot(&img, "wednesday");
    let out = d.path().join("backup");
    let (code, _, err) = qcow2fs(&["export", s(&img), s(&out)]);
    assert_eq!(code, 0, "{err}");
    let three = names(&out);
    assert!(
        three.contains(&"vm_snapshot[2].qcow2".to_string()),
        "{three:?}"
    );
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();

    // The image loses a snapshot; a second export into the same folder is
    // refused with a message that says what to do.
    run("qemu-img", &["snapshot", "-d", "monday", s(&img)]);
    let (code, _, err) = qcow2fs(&["export", s(&img), s(&out)]);
    assert_eq!(code, 1);
    assert!(
        err.contains(s(&out)) && err.contains("a chain of vm.qcow2") && err.contains("--force"),
        "{err}"
    );
    assert!(
        !err.contains("entity") && !err.contains("os error"),
        "{err}"
    );
    assert_eq!(names(&out).len(), three.len() + 1, "nothing written");

    // --force: the new chain, the older chain's extra layer gone, the
    // user's file kept.
    let (code, _, err) = qcow2fs(&["export", "--force", s(&img), s(&out)]);
    assert_eq!(code, 0, "{err}");
    let now = names(&out);
    assert!(
        !now.contains(&"vm_snapshot[2].qcow2".to_string()),
        "{now:?}"
    );
    assert_eq!(
        now,
        [
            "SHA256SUMS",
            "chain.json",
            "notes.txt",
            "vm_active.qcow2",
            "vm_snapshot[0].qcow2",
            "vm_snapshot[1].qcow2"
        ]
    );
    let sums = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&out)
        .status()
        .unwrap();
    assert!(sums.success());

    // A folder that holds other files is refused too, naming one.
    let other = d.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("README"), b"x").unwrap();
    let (code, _, err) = qcow2fs(&["export", "--forward", s(&img), s(&other)]);
    assert_eq!(code, 1);
    assert!(err.contains("README") && err.contains("--force"), "{err}");
}

#[test]
fn fsync_succeeds_quietly_and_the_mount_exits_as_soon_as_it_is_unmounted() {
    let (d, src) = scratch_images();
    small_image(&src, "vm.qcow2");
    let mnt = at(d.path(), "mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let log = at(d.path(), "stderr");
    let mut child = Command::new(bin())
        .args(["mount", s(&src), s(&mnt)])
        .env_remove("RUST_LOG")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until("the mount", || is_mounted(&mnt));
    let f = std::fs::File::open(mnt.join("vm.qcow2/active.raw")).unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    drop(f);
    std::fs::File::open(mnt.join("vm.qcow2"))
        .unwrap()
        .sync_all()
        .unwrap();
    let t = Instant::now();
    run("umount", &[s(&mnt)]);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "still running after unmount"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = t.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        took < Duration::from_millis(500),
        "exited {took:?} after umount"
    );
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.is_empty(), "{said}");
}

/// The pid of the server that `--daemon` started for `mp`.
fn server_of(mp: &Path) -> u32 {
    for e in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        if has(&cmdline, mp.as_os_str().as_encoded_bytes()) && has(&environ, b"QCOW2FS_DETACHED=") {
            return pid;
        }
    }
    panic!("no server for {}", mp.display());
}

/// True once `pid` has exited: gone, or a zombie waiting for its new
/// parent (the init process of the host) to collect its status.
fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[test]
fn the_server_of_daemon_exits_as_soon_as_it_is_unmounted_or_signalled() {
    let (d, src) = scratch_images();
    small_image(&src, "vm.qcow2");
    let mnt = at(d.path(), "mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    for how in ["umount", "SIGTERM"] {
        let (code, _, err) = qcow2fs(&["mount", "--daemon", s(&src), s(&mnt)]);
        assert_eq!(code, 0, "{err}");
        let pid = server_of(&mnt);
        std::fs::read(mnt.join("vm.qcow2/active.raw")).unwrap();
        let t = Instant::now();
        if how == "umount" {
            run("umount", &[s(&mnt)]);
        } else {
            run("kill", &["-TERM", &pid.to_string()]);
        }
        while !has_exited(pid) {
            assert!(t.elapsed() < Duration::from_secs(5), "{how}: still running");
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "{how}: exited {took:?} after"
        );
        wait_until("the unmount", || !is_mounted(&mnt));
    }
}

/// The layer of a backup that stands for a snapshot, restored by
/// examples/restore.sh, equals `qemu-img convert -l` of the image.
fn restored_equals_qemu(dir: &Path, backup: &Path, img: &Path, name: &str, id: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/restore.sh");
    let out = dir.join(format!("restored-{name}-{}.qcow2", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let said = run("sh", &[s(&script), s(backup), name, s(&out)]);
    assert!(said.contains("restored"), "{said}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&out).unwrap().permissions());
    assert!(mode & 0o200 != 0, "restored disk not writable: {mode:o}");
    let theirs = oracle_raw(dir, img, Some(id));
    let raw = dir.join("restored.raw");
    qemu_img(&["convert", "-O", "raw", s(&out), s(&raw)]);
    assert!(
        std::fs::read(&raw).unwrap() == theirs,
        "{name} from {}",
        backup.display()
    );
    // Standalone: no backing file.
    let info = qemu_img(&["info", "--output=json", s(&out)]);
    assert!(!info.contains("backing-filename"), "{info}");
    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(&raw).unwrap();
}

#[test]
fn restore_sh_restores_a_named_snapshot_from_copied_chain_and_forward_folders() {
    let d = scratch();
    let demo = d.path().join("demo");
    let make = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/make-demo.sh");
    run("sh", &[s(&make), s(&demo)]);
    let img = demo.join("vm1.qcow2");
    let m = Mount::new(&demo, &d.path().join("mnt"), &[]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/restore.sh");
    for folder in ["chain", "forward"] {
        let copy = d.path().join(format!("backup-{folder}"));
        run(
            "cp",
            &["-r", s(&m.path(&format!("vm1.qcow2/{folder}"))), s(&copy)],
        );
        // The copy keeps the mount's modes.
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&copy).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o555, "{folder}");
        let layer_mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(copy.join("chain.json"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(layer_mode & 0o777, 0o444, "{folder}");
        // From a name to its layer, without reading JSON.
        let list = run("sh", &[s(&script), s(&copy)]);
        let layer = if folder == "chain" {
            "vm1_snapshot[1].qcow2"
        } else {
            "tuesday.qcow2"
        };
        assert!(
            list.lines()
                .any(|l| l.starts_with("tuesday ") && l.contains(" 2 ") && l.ends_with(layer)),
            "{list}"
        );
        for (name, id) in [
            ("monday", "1"),
            ("tuesday", "2"),
            ("wednesday", "3"),
            ("id=2", "2"),
        ] {
            restored_equals_qemu(d.path(), &copy, &img, name, id);
        }
        let (code, _, err) = {
            let o = Command::new("sh")
                .args([s(&script), s(&copy), "no-such", s(&d.path().join("x"))])
                .output()
                .unwrap();
            (
                o.status.code(),
                o.stdout,
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        };
        assert_eq!(code, Some(1));
        assert!(err.contains("no snapshot 'no-such'"), "{err}");
    }
    // A layer of a reverse chain needs every newer layer beside it.
    let partial = d.path().join("partial");
    std::fs::create_dir_all(&partial).unwrap();
    for f in [
        "vm1_snapshot[0].qcow2",
        "vm1_snapshot[1].qcow2",
        "chain.json",
    ] {
        std::fs::copy(m.path(&format!("vm1.qcow2/chain/{f}")), partial.join(f)).unwrap();
    }
    let o = Command::new("sh")
        .args([s(&script), s(&partial), "monday", s(&d.path().join("x"))])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("vm1_snapshot[2].qcow2 is missing") && !d.path().join("x").exists(),
        "{err}"
    );
    // chmod -R u+w makes a copied backup deletable by its owner.
    let copy = d.path().join("backup-chain");
    run("chmod", &["-R", "u+w", s(&copy)]);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&copy).unwrap().permissions());
    assert!(mode & 0o200 != 0);
}

#[test]
fn under_systemd_the_log_lines_carry_journal_priorities() {
    use std::os::unix::fs::MetadataExt;
    let (d, src) = scratch_images();
    let bad = unreadable_image(&src, "bad.qcow2");
    let mnt = at(d.path(), "mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let stream = at(d.path(), "journal");
    let file = std::fs::File::create(&stream).unwrap();
    let meta = file.metadata().unwrap();
    let mut child = Command::new(bin())
        .args(["mount", s(&src), s(&mnt)])
        .env_remove("RUST_LOG")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(file)
        .spawn()
        .unwrap();
    wait_until("the mount", || is_mounted(&mnt));
    let _ = std::fs::read(mnt.join("bad.qcow2/info"));
    run("umount", &[s(&mnt)]);
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&stream).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("<4>") && l.contains(s(&bad)) && l.contains("L1 table")),
        "{text}"
    );
}

#[test]
fn the_readme_first_screen_mounts_backs_up_verifies_and_restores() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme.split("```\n").nth(1).unwrap();
    let commands: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(commands.len() <= 10, "{} lines of commands", commands.len());
    let opening: String = readme.lines().take(25).collect::<Vec<_>>().join("\n");
    assert!(
        opening.contains(block.trim_end()),
        "the commands are not on the first screen"
    );
    for word in ["qcow2fs mount", "cp -r", "sha256sum -c", "restore.sh"] {
        assert!(block.contains(word), "{word}");
    }

    // Run them, with the folders of this test for the host's.
    let d = scratch();
    let images = d.path().join("images");
    let make = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/make-demo.sh");
    run("sh", &[s(&make), s(&images)]);
    std::fs::rename(images.join("vm1.qcow2"), images.join("vm.qcow2")).unwrap();
    let script = block
        .replace("/var/lib/libvirt/images", s(&images))
        .replace("/mnt/vmsnap", s(&d.path().join("mnt")))
        .replace("/backup/vm", s(&d.path().join("backup")))
        .replace("qcow2fs mount", &format!("{} mount", s(&bin())))
        .replace(
            "sh examples/",
            &format!("sh {}/examples/", env!("CARGO_MANIFEST_DIR")),
        );
    let out = Command::new("sh")
        .args(["-e", "-c", &script])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("monday") && said.contains(": OK"), "{said}");
    assert!(!is_mounted(&d.path().join("mnt")));
    let restored = images.join("vm-monday.qcow2");
    let raw = d.path().join("restored.raw");
    qemu_img(&["convert", "-O", "raw", s(&restored), s(&raw)]);
    assert!(
        std::fs::read(&raw).unwrap() == oracle_raw(d.path(), &images.join("vm.qcow2"), Some("1"))
    );
}
