//! Helpers shared by the integration tests: images are built with qemu-img
//! and qemu-io at test time, and qemu-img's reading of them is the oracle.
#![allow(dead_code)]

pub mod vm;

use std::path::{Path, PathBuf};
use std::process::Command;

use qcow2fs::{Image, OpenOptions, StateId, View};

/// Run a command, panicking with its output when it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// qemu-img with the given arguments.
pub fn qemu_img(args: &[&str]) -> String {
    run("qemu-img", args)
}

/// qemu-io on an image (format given), one -c per command.
pub fn qemu_io(img: &Path, fmt: &str, cmds: &[&str]) {
    let mut args = vec!["-f", fmt];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    let p = img.to_str().unwrap();
    args.push(p);
    let out = run("qemu-io", &args);
    assert!(
        !out.contains("error") && !out.contains("failed"),
        "qemu-io {cmds:?}: {out}"
    );
}

/// Create a qcow2 image with `-o opts`.
pub fn create(path: &Path, size: &str, opts: &str) {
    let p = path.to_str().unwrap();
    if opts.is_empty() {
        qemu_img(&["create", "-q", "-f", "qcow2", p, size]);
    } else {
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", opts, p, size]);
    }
}

/// Create a qcow2 overlay at `path` on `backing` (as named in the overlay)
/// of format `fmt`, with its own size or the backing file's.
pub fn overlay(path: &Path, backing: &str, fmt: &str, size: Option<&str>) {
    let p = path.to_str().unwrap();
    let mut args = vec!["create", "-q", "-f", "qcow2", "-b", backing, "-F", fmt, p];
    args.extend(size);
    qemu_img(&args);
}

/// Take an internal snapshot.
pub fn snapshot(path: &Path, name: &str) {
    qemu_img(&["snapshot", "-c", name, path.to_str().unwrap()]);
}

/// What qemu-img reads for a state: `convert [-l snapshot.id=N] -O raw`.
pub fn oracle_raw(dir: &Path, img: &Path, snapshot_id: Option<&str>) -> Vec<u8> {
    let out = dir.join(format!(
        "oracle-{}-{}.raw",
        img.file_name().unwrap().to_string_lossy(),
        snapshot_id.unwrap_or("active")
    ));
    let o = out.to_str().unwrap();
    let i = img.to_str().unwrap();
    match snapshot_id {
        Some(id) => {
            let l = format!("snapshot.id={id}");
            qemu_img(&["convert", "-U", "-l", &l, "-O", "raw", i, o])
        }
        None => qemu_img(&["convert", "-U", "-O", "raw", i, o]),
    };
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}

/// Every byte of a view, read in pieces of `chunk` bytes.
pub fn read_all(v: &dyn View, chunk: usize) -> Vec<u8> {
    let mut out = vec![0u8; v.size() as usize];
    let mut pos = 0usize;
    while pos < out.len() {
        let end = (pos + chunk).min(out.len());
        let n = v.read_at(&mut out[pos..end], pos as u64).unwrap();
        assert_eq!(n, end - pos);
        pos = end;
    }
    out
}

/// Assert that every state of `img` reads as qemu-img reads it, and that the
/// extent maps agree with the bytes.
pub fn assert_states_match(dir: &Path, img: &Path) {
    let image = Image::open(img, &OpenOptions::new(8 << 20)).unwrap();
    let mut states = vec![(StateId::Active, None)];
    for (i, sn) in image.snapshots().iter().enumerate() {
        states.push((StateId::Snapshot(i), Some(sn.id.clone())));
    }
    for (which, id) in states {
        let state = image.state(which).unwrap();
        let ours = read_all(&state, 1 << 20);
        let theirs = oracle_raw(dir, img, id.as_deref());
        // qemu-img reads a snapshot at the image's current size; a snapshot
        // taken before a resize has its own smaller size, and qemu-img reads
        // zeros past it.
        assert!(
            ours.len() <= theirs.len(),
            "{} {which:?}: size",
            img.display()
        );
        assert!(theirs[ours.len()..].iter().all(|&b| b == 0));
        let theirs = &theirs[..ours.len()];
        if ours != theirs {
            let first = ours.iter().zip(theirs).position(|(a, b)| a != b).unwrap();
            panic!(
                "{} {which:?}: bytes differ first at {first:#x}",
                img.display()
            );
        }
        // Odd-sized reads at odd offsets give the same bytes.
        let mut odd = vec![0u8; 70001];
        let at = (ours.len() as u64 / 3) | 0x1ff;
        let n = state.read_at(&mut odd, at).unwrap();
        assert_eq!(&odd[..n], &ours[at as usize..at as usize + n]);
        assert_extents_agree(&state, &ours);
    }
}

/// Data extents cover every non-zero byte; holes and zero extents read zeros;
/// the extents tile the view.
pub fn assert_extents_agree(v: &dyn View, bytes: &[u8]) {
    let ext = v.extents(0, v.size()).unwrap();
    let mut pos = 0u64;
    for e in &ext {
        assert_eq!(e.start, pos, "extents must tile the view");
        if e.kind != qcow2fs::ExtentKind::Data {
            let s = &bytes[e.start as usize..e.end() as usize];
            assert!(s.iter().all(|&b| b == 0), "{e:?} is not zeros");
        }
        pos = e.end();
    }
    assert_eq!(pos, v.size());
}

/// A fresh scratch folder.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `dir/name` as a PathBuf.
/// A scratch folder with an empty `images` folder in it, for mounting.
pub fn scratch_images() -> (tempfile::TempDir, PathBuf) {
    let d = scratch();
    let src = d.path().join("images");
    std::fs::create_dir_all(&src).unwrap();
    (d, src)
}

pub fn at(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Overwrite bytes of a file at `offset`.
pub fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// Read a big-endian u64 of a file.
pub fn peek64(path: &Path, offset: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, offset).unwrap();
    u64::from_be_bytes(b)
}

/// `qemu-img check --output=json`, whatever its exit status, as JSON; None
/// when qemu-img could not check the image at all.
pub fn qemu_check(img: &Path) -> Option<serde_json::Value> {
    let out = Command::new("qemu-img")
        .args(["check", "-U", "--output=json", img.to_str().unwrap()])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).ok()
}

/// The path of the built qcow2fs binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_qcow2fs"))
}

/// Run qcow2fs with arguments; (exit code, stdout, stderr).
pub fn qcow2fs(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An image over a qcow2 base over a raw base, with 4 snapshots, writes,
/// zero writes, discards, compressed clusters, and a snapshot taken before
/// a resize.
pub fn build_chain_image(dir: &Path, name: &str, opts: &str) -> std::path::PathBuf {
    make_base_and_mid(dir);
    let img = dir.join(name);
    let mut o = String::from(opts);
    if !o.is_empty() {
        o.push(',');
    }
    o.push_str("backing_file=mid.qcow2,backing_fmt=qcow2");
    create(&img, "6M", &o);
    let io = |c: &[&str]| qemu_io(&img, "qcow2", c);
    io(&["write -P 0x11 0 256k", "write -c -P 0x12 4M 128k"]);
    snapshot(&img, "one");
    qemu_img(&["resize", "-q", img.to_str().unwrap(), "10M"]);
    io(&[
        "write -P 0x21 64k 64k",
        "write -z 1M 128k",
        "discard 4M 64k",
        "write -P 0x22 8M 64k",
    ]);
    snapshot(&img, "two");
    io(&["write -P 0x31 2M 64k", "write -P 0x32 12k 4k"]);
    snapshot(&img, "three");
    io(&["write -z 0 64k", "write -c -P 0x33 9M 64k"]);
    snapshot(&img, "four");
    io(&["write -P 0x41 5M 64k", "discard 8M 64k"]);
    img
}

/// A running `qcow2fs mount`, unmounted (by SIGTERM) when dropped.
pub struct Mount {
    pub child: Option<std::process::Child>,
    pub mp: PathBuf,
}

pub fn is_mounted(mp: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = mp.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(want))
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !f() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl Mount {
    pub fn new(dir: &Path, mp: &Path, extra: &[&str]) -> Mount {
        Mount::spawn(dir, mp, extra, Command::new(bin()))
    }

    /// A mount that logs at debug level into the file `log`.
    pub fn logged(dir: &Path, mp: &Path, log: &Path) -> Mount {
        let mut cmd = Command::new(bin());
        cmd.env("RUST_LOG", "qcow2fs=debug")
            .stderr(std::fs::File::create(log).unwrap());
        Mount::spawn(dir, mp, &[], cmd)
    }

    fn spawn(dir: &Path, mp: &Path, extra: &[&str], mut cmd: Command) -> Mount {
        std::fs::create_dir_all(mp).unwrap();
        let mp = std::fs::canonicalize(mp).unwrap();
        let child = cmd
            .arg("mount")
            .args(extra)
            .arg(dir)
            .arg(&mp)
            .spawn()
            .unwrap();
        wait_until("the mount", || is_mounted(&mp));
        Mount {
            child: Some(child),
            mp,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mp.join(rel)
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> i32 {
        let mut child = self.child.take().unwrap();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        wait_until("the unmount", || !is_mounted(&self.mp));
        status.code().unwrap_or(-1)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

/// Check every layer of an exported chain against qemu-img.
pub fn verify_chain(dir: &Path, img: &Path, out: &Path, d: qcow2fs::chain::Direction) {
    let image = qcow2fs::Image::open(img, &qcow2fs::OpenOptions::new(8 << 20)).unwrap();
    let specs = qcow2fs::chain::layers(&image, d);
    for s in &specs {
        let p = out.join(&s.file_name);
        let ps = p.to_str().unwrap();
        let (ok, msg) = check_clean(&p);
        assert!(ok, "{}: qemu-img check: {msg}", s.file_name);
        // The layer's full view equals its state.
        let raw = dir.join("oracle.raw");
        let theirs = oracle_raw(dir, img, state_id(&image, s.x).as_deref());
        let size = match s.x {
            qcow2fs::StateId::Active => image.header().size,
            qcow2fs::StateId::Snapshot(i) => image.snapshots()[i].disk_size,
        };
        std::fs::write(&raw, &theirs[..size as usize]).unwrap();
        // The layer has its state's own guest size.
        let info: serde_json::Value =
            serde_json::from_str(&qemu_img(&["info", "--output=json", ps])).unwrap();
        assert_eq!(info["virtual-size"].as_u64(), Some(size), "{}", s.file_name);
        let cmp = std::process::Command::new("qemu-img")
            .args([
                "compare",
                "-f",
                "qcow2",
                "-F",
                "raw",
                ps,
                raw.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            cmp.status.success(),
            "{}: {}",
            s.file_name,
            String::from_utf8_lossy(&cmp.stdout)
        );
    }
    // The chain opens in order from its top.
    let top = &specs.last().unwrap().file_name;
    let info = qemu_img(&[
        "info",
        "--backing-chain",
        "--output=json",
        out.join(top).to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    let files: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            Path::new(e["filename"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut want: Vec<String> = specs.iter().rev().map(|s| s.file_name.clone()).collect();
    want.extend(["mid.qcow2".to_string(), "base.raw".to_string()]);
    assert_eq!(files, want);
}

/// qemu-img check: no errors, no leaks.
pub fn check_clean(p: &Path) -> (bool, String) {
    let out = std::process::Command::new("qemu-img")
        .args(["check", p.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The snapshot ID of a state (None: active).
pub fn state_id(image: &qcow2fs::Image, w: qcow2fs::StateId) -> Option<String> {
    match w {
        qcow2fs::StateId::Active => None,
        qcow2fs::StateId::Snapshot(i) => Some(image.snapshots()[i].id.clone()),
    }
}

/// `dir/base.raw` (3 MiB of 0x99) and `dir/mid.qcow2`, a 6 MiB qcow2 over it
/// with some writes: a two-level backing chain.
pub fn make_base_and_mid(dir: &Path) {
    std::fs::write(dir.join("base.raw"), vec![0x99u8; 3 << 20]).unwrap();
    let mid = dir.join("mid.qcow2");
    if !mid.exists() {
        overlay(&mid, "base.raw", "raw", Some("6M"));
        qemu_io(&mid, "qcow2", &["write -P 0xa1 1M 512k", "write -z 0 64k"]);
    }
}

/// The sorted names in a folder.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Peak resident memory of a process, from /proc.
pub fn peak_rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}
