//! A missing backing file: reads that need it fail with ENOENT, through the
//! library and through a real mount; `info` says the active state cannot
//! be read and why; the log and `export` name the backing file once, with
//! the image that uses it.

mod common;
use common::*;

use std::path::{Path, PathBuf};

use qcow2fs::{Image, OpenOptions, StateId, View};

/// `orphan.qcow2` over `gone.img`, which is then deleted; the overlay holds
/// 64 KiB of its own at 0 and nothing beyond.
fn orphan(src: &Path) -> PathBuf {
    let gone = at(src, "gone.img");
    create(&gone, "1M", "");
    let img = at(src, "orphan.qcow2");
    overlay(&img, "gone.img", "qcow2", None);
    qemu_io(&img, "qcow2", &["write -P 0x61 0 64k"]);
    std::fs::remove_file(&gone).unwrap();
    img
}

#[test]
fn reads_that_need_a_missing_backing_file_are_enoent() {
    let (_d, src) = scratch_images();
    let img = orphan(&src);
    let image = Image::open(&img, &OpenOptions::new(8 << 20)).unwrap();
    let state = image.state(StateId::Active).unwrap();
    // What the image holds itself reads; what it does not, fails.
    let mut own = vec![0u8; 65536];
    assert_eq!(state.read_at(&mut own, 0).unwrap(), own.len());
    assert!(own.iter().all(|&b| b == 0x61));
    let err = state.read_at(&mut [0u8; 512], 65536).unwrap_err();
    assert_eq!(err.errno(), libc::ENOENT, "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("backing file 'gone.img' of orphan.qcow2: "),
        "{msg}"
    );
    assert_eq!(msg.matches("gone.img").count(), 2, "{msg}");
    let why = image.backing_readable().unwrap_err();
    assert_eq!(why.errno(), libc::ENOENT, "{why}");
}

#[test]
fn a_mount_answers_enoent_and_logs_the_backing_file_once() {
    let (d, src) = scratch_images();
    orphan(&src);
    let log = at(d.path(), "mount.log");
    let mut m = Mount::logged(&src, &at(d.path(), "mnt"), &log);
    let err = std::fs::read(m.path("orphan.qcow2/active.raw")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    let info = std::fs::read_to_string(m.path("orphan.qcow2/info")).unwrap();
    assert!(
        info.contains("verdict: active state cannot be read: backing file 'gone.img'"),
        "{info}"
    );
    m.stop();
    let logged = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("gone.img"))
        .collect();
    assert_eq!(lines.len(), 1, "{logged}");
    let line = lines[0];
    assert!(
        line.contains("orphan.qcow2: backing file 'gone.img' of orphan.qcow2: "),
        "{line}"
    );
    assert_eq!(line.matches("backing file").count(), 1, "{line}");
}

#[test]
fn info_does_not_call_an_image_over_a_missing_backing_file_clean() {
    let (_d, src) = scratch_images();
    let img = orphan(&src);
    let (code, out, err) = qcow2fs(&["info", img.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let verdict = out.lines().find(|l| l.starts_with("verdict: ")).unwrap();
    assert!(
        verdict.starts_with("verdict: active state cannot be read: backing file 'gone.img'"),
        "{verdict}"
    );
    assert!(verdict.contains("No such file or directory"), "{verdict}");
    assert!(!verdict.contains("clean"), "{verdict}");
    let (_, json, _) = qcow2fs(&["info", "--output", "json", img.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["verdict"], "active state cannot be read");
    let why = v["active-state-error"].as_str().unwrap();
    assert!(why.contains("gone.img"), "{why}");

    // With a backing file that opens, the verdict is the check's.
    create(&at(&src, "gone.img"), "1M", "");
    let (_, out, _) = qcow2fs(&["info", img.to_str().unwrap()]);
    assert!(out.ends_with("verdict: clean\n"), "{out}");
}

#[test]
fn export_names_the_image_that_uses_the_missing_backing_file() {
    let (d, src) = scratch_images();
    let img = orphan(&src);
    let out = at(d.path(), "out");
    let (code, _, err) = qcow2fs(&["export", img.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    // The error names the image, then the backing file that it uses.
    assert!(err.starts_with("qcow2fs: "), "{err}");
    assert!(
        err.contains("orphan.qcow2: backing file 'gone.img' of orphan.qcow2: "),
        "{err}"
    );
    assert_eq!(err.matches("backing file").count(), 1, "{err}");
    assert!(!out.exists(), "export wrote into {}", out.display());
}
