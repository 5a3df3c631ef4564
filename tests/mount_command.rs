//! The `qcow2fs mount` command as a process: `--daemon`, signals, refused
//! arguments, mount options, symlinks kept inside, and systemd's notify.

mod common;
use common::*;

use std::process::Command;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        let mut m = Mount::new(&src, &mp, &[]);
        let mut child = m.child.take().unwrap();
        kill(Pid::from_raw(child.id() as i32), sig).unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(0));
        assert!(!is_mounted(&m.mp));
    }
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
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
}
