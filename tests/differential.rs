//! Differential test against QEMU: small images made by qemu-img and
//! qemu-io are mutated (header fields, L1, L2, refcount and snapshot
//! tables, truncation, random bytes) with a fixed seed, all mounted at
//! once, and every view QEMU can read is compared with what qemu-img reads.
//! A view may fail with an error where QEMU reads; it may never return
//! other bytes, crash the mount, or hang.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Mutants made and judged in one run (QCOW2FS_MUTANTS to run more by hand).
const MUTANTS: usize = 500;
/// The seed of the run (QCOW2FS_SEED to change it).
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// xorshift64*: a fixed, dependency-free sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn bases(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let plain = dir.join("plain.qcow2");
    create(&plain, "2M", "cluster_size=4k");
    qemu_io(
        &plain,
        "qcow2",
        &["write -P 0x11 0 256k", "write -z 512k 64k"],
    );
    snapshot(&plain, "a");
    qemu_io(&plain, "qcow2", &["write -P 0x22 64k 64k", "discard 0 16k"]);
    snapshot(&plain, "b");
    qemu_io(&plain, "qcow2", &["write -P 0x33 1M 128k"]);
    out.push(plain);
    let comp = dir.join("comp.qcow2");
    create(&comp, "1M", "cluster_size=4k");
    qemu_io(
        &comp,
        "qcow2",
        &["write -c -P 0x44 0 64k", "write -P 0x45 128k 32k"],
    );
    snapshot(&comp, "c");
    qemu_io(&comp, "qcow2", &["write -c -P 0x46 256k 32k"]);
    out.push(comp);
    let ext = dir.join("ext.qcow2");
    create(&ext, "2M", "extended_l2=on,cluster_size=16k");
    qemu_io(
        &ext,
        "qcow2",
        &[
            "write -P 0x55 0 4k",
            "write -P 0x56 20k 2k",
            "write -z 40k 8k",
        ],
    );
    snapshot(&ext, "e");
    qemu_io(&ext, "qcow2", &["write -P 0x57 8k 4k"]);
    out.push(ext);
    out
}

/// Offsets worth hitting: header fields, and the start of each table.
fn targets(img: &Path) -> Vec<u64> {
    let mut t: Vec<u64> = (0..112).step_by(4).collect();
    for field in [40u64, 48, 64] {
        let at = peek64(img, field);
        if at < std::fs::metadata(img).unwrap().len() {
            t.extend([at, at + 8, at + 16, at + 40]);
        }
    }
    // The first L2 table, through the first L1 entry.
    let l1 = peek64(img, 40);
    let l2 = peek64(img, l1) & 0x00ff_ffff_ffff_fe00;
    if l2 != 0 {
        t.extend([l2, l2 + 8, l2 + 16, l2 + 24]);
    }
    t
}

fn mutate(base: &Path, out: &Path, rng: &mut Rng) {
    let mut bytes = std::fs::read(base).unwrap();
    let targets = targets(base);
    for _ in 0..1 + rng.below(3) {
        match rng.below(6) {
            0 => bytes.truncate(rng.below(bytes.len() as u64) as usize),
            1 | 2 => {
                // A field or entry: random bits, a random byte, or a huge value.
                let at = targets[rng.below(targets.len() as u64) as usize] as usize;
                let v = match rng.below(3) {
                    0 => rng.next().to_be_bytes(),
                    1 => (1u64 << rng.below(64)).to_be_bytes(),
                    _ => [0xff; 8],
                };
                let n = 1 + rng.below(8) as usize;
                if at + n <= bytes.len() {
                    bytes[at..at + n].copy_from_slice(&v[..n]);
                }
            }
            _ => {
                let at = rng.below(bytes.len() as u64) as usize;
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
        }
    }
    std::fs::write(out, bytes).unwrap();
}

/// What QEMU reads for a state, or None where it cannot (or not in time).
fn qemu_reads(img: &Path, id: Option<&str>, scratch: &Path) -> Option<Vec<u8>> {
    let raw = scratch.join("q.raw");
    let _ = std::fs::remove_file(&raw);
    let mut c = Command::new("timeout");
    c.args(["10", "qemu-img", "convert", "-U", "-O", "raw"]);
    if let Some(id) = id {
        c.args(["-l", &format!("snapshot.id={id}")]);
    }
    let ok = c.arg(img).arg(&raw).output().unwrap().status.success();
    let len = std::fs::metadata(&raw).map(|m| m.len()).ok()?;
    // Mutated sizes can make outputs of petabytes: judged only when small.
    (ok && len <= 64 << 20).then(|| std::fs::read(&raw).unwrap())
}

/// Our bytes of a view through the mount, with a time limit; None on error.
fn ours(path: &Path) -> Option<Vec<u8>> {
    let out = Command::new("timeout")
        .args(["20", "cat"])
        .arg(path)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(124), "{} hung", path.display());
    out.status.success().then_some(out.stdout)
}

#[test]
fn mutated_images_never_read_other_bytes_than_qemu() {
    let count = std::env::var("QCOW2FS_MUTANTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(MUTANTS);
    let seed = std::env::var("QCOW2FS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let (d, src) = scratch_images();
    let bases = bases(d.path());
    let mut rng = Rng(seed);
    for i in 0..count {
        let base = &bases[i % bases.len()];
        mutate(base, &src.join(format!("m{i:04}.qcow2")), &mut rng);
    }
    let mut m = Mount::new(&src, &d.path().join("mnt"), &["--cache-size", "16M"]);
    // Every file of every mutant is listed and stated, in bounded time.
    let ls = Command::new("timeout")
        .args(["300", "ls", "-lR"])
        .arg(&m.mp)
        .output()
        .unwrap();
    assert_ne!(ls.status.code(), Some(124), "ls -lR hung");
    let (mut compared, mut errors) = (0, 0);
    for i in 0..count {
        let name = format!("m{i:04}.qcow2");
        let img = src.join(&name);
        let folder = m.path(&name);
        if !folder.join("active.raw").exists() {
            continue; // not openable: its folder holds only info
        }
        let mut views = vec![(folder.join("active.raw"), None)];
        if let Ok(image) = qcow2fs::Image::open(&img, &qcow2fs::OpenOptions::new(1 << 20)) {
            let names = qcow2fs::names::snapshot_stems(image.snapshots());
            for (s, stem) in image.snapshots().iter().zip(names) {
                views.push((
                    folder.join(format!("snapshots/{stem}.raw")),
                    Some(s.id.clone()),
                ));
            }
        }
        for (view, id) in views {
            let Some(theirs) = qemu_reads(&img, id.as_deref(), d.path()) else {
                // QEMU cannot read it: a bounded read of ours must answer.
                let head = Command::new("timeout")
                    .args(["20", "head", "-c", "1048576"])
                    .arg(&view)
                    .output()
                    .unwrap();
                assert_ne!(head.status.code(), Some(124), "{} hung", view.display());
                continue;
            };
            match ours(&view) {
                Some(bytes) => {
                    // A snapshot QEMU reads at the image's size, ours at its own.
                    let n = bytes.len().min(theirs.len());
                    assert!(
                        bytes[..n] == theirs[..n] && theirs[n..].iter().all(|&b| b == 0),
                        "{name} {}: bytes differ from qemu-img's",
                        view.display()
                    );
                    if id.is_none() {
                        assert_eq!(bytes.len(), theirs.len(), "{name}: active size");
                    }
                    compared += 1;
                }
                None => errors += 1,
            }
        }
    }
    eprintln!(
        "{count} mutants: {compared} views equal to qemu-img's, {errors} refused with an error"
    );
    assert!(compared > count / 4, "too few views compared: {compared}");
    // The mount survived it all.
    assert!(is_mounted(&m.mp));
    assert_eq!(m.stop(), 0);
}
