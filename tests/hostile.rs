//! Crafted images cannot make the library or the mount spin, or allocate
//! beyond the cache budget plus a named bound. Each test times itself and
//! watches memory.

mod common;
use common::*;

use std::path::Path;
use std::time::{Duration, Instant};

use qcow2fs::{Image, OpenOptions, StateId, View};

fn append(path: &Path, bytes: &[u8]) -> u64 {
    use std::io::Write;
    let len = std::fs::metadata(path).unwrap().len();
    let at = len.div_ceil(65536) * 65536;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(&vec![0u8; (at - len) as usize]).unwrap();
    f.write_all(bytes).unwrap();
    at
}

/// Run `qcow2fs args` with a time limit; (exit code, stdout, stderr, took).
fn bounded(args: &[&str], limit: Duration) -> (i32, String, String, Duration) {
    let t = Instant::now();
    let (code, out, err) = qcow2fs(args);
    let took = t.elapsed();
    assert!(took < limit, "{args:?} took {took:?}");
    assert!(!err.contains("panicked"), "{err}");
    (code, out, err, took)
}

#[test]
fn l1_table_at_its_limit_with_every_entry_on_one_l2_table() {
    let (d, src) = scratch_images();
    let img = src.join("l1.qcow2");
    create(&img, "1G", "");
    qemu_io(&img, "qcow2", &["write -P 7 0 1M", "write -z 2M 1M"]);
    let l1 = peek64(&img, 40);
    let l2 = peek64(&img, l1) & 0x00ff_ffff_ffff_fe00;
    // 4 Mi entries (32 MiB, QEMU's limit), all pointing at the same table.
    let entries: u64 = 4 << 20;
    let mut table = Vec::with_capacity(32 << 20);
    for _ in 0..entries {
        table.extend_from_slice(&(l2 | (1 << 63)).to_be_bytes());
    }
    let at = append(&img, &table);
    poke(&img, 40, &at.to_be_bytes());
    poke(&img, 36, &(entries as u32).to_be_bytes());
    poke(&img, 24, &(entries * (512 << 20)).to_be_bytes()); // 2 PiB
    let t = Instant::now();
    let image = Image::open(&img, &OpenOptions::new(8 << 20)).unwrap();
    let err = image
        .state(StateId::Active)
        .err()
        .expect("an error")
        .to_string();
    assert!(err.contains("both point to the L2 table"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let (code, out, _, _) = bounded(&["check", img.to_str().unwrap()], Duration::from_secs(20));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("referenced twice"), "{out}");

    // Through the mount: the folder shows, reads fail fast, memory stays
    // within the cache budget plus the named L1 bound.
    let m = Mount::new(&src, &d.path().join("mnt"), &["--cache-size", "16M"]);
    let t = Instant::now();
    let e = std::fs::read(m.path("l1.qcow2/active.raw")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    let _ = std::fs::read_to_string(m.path("l1.qcow2/info")).unwrap();
    // Some files of this image fail to stat (EIO); ls says so and goes on.
    let ls = std::process::Command::new("ls")
        .args(["-lR", m.mp.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&ls.stdout).contains("info"));
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let rss = peak_rss(m.child.as_ref().unwrap().id());
    let bound = (64 << 20) + (16 << 20) + 3 * qcow2fs::qcow2::header::MAX_L1_BYTES;
    assert!(rss < bound, "peak RSS {rss} > {bound}");
}

/// A snapshot table entry for an L1 table at `l1` of `l1_size` entries.
fn entry(l1: u64, l1_size: u32, id: &str, name: &str, disk: u64) -> Vec<u8> {
    let mut e = Vec::new();
    e.extend_from_slice(&l1.to_be_bytes());
    e.extend_from_slice(&l1_size.to_be_bytes());
    e.extend_from_slice(&(id.len() as u16).to_be_bytes());
    e.extend_from_slice(&(name.len() as u16).to_be_bytes());
    e.extend_from_slice(&[0u8; 8 + 8 + 4]); // date, vm clock, vm state size
    e.extend_from_slice(&16u32.to_be_bytes());
    e.extend_from_slice(&0u64.to_be_bytes());
    e.extend_from_slice(&disk.to_be_bytes());
    e.extend_from_slice(id.as_bytes());
    e.extend_from_slice(name.as_bytes());
    e.resize(e.len().div_ceil(8) * 8, 0);
    e
}

#[test]
fn sixty_five_thousand_snapshots() {
    let (d, src) = scratch_images();
    let img = src.join("many.qcow2");
    create(&img, "16M", "cluster_size=4k");
    qemu_io(&img, "qcow2", &["write -P 9 0 64k"]);
    snapshot(&img, "first");
    let sn = peek64(&img, 64);
    let l1 = peek64(&img, sn);
    let l1_size = (peek64(&img, sn + 8) >> 32) as u32;
    let mut table = Vec::new();
    for i in 1..=65535u32 {
        let name = if i % 1000 == 0 {
            "dup".to_string()
        } else {
            format!("s{i}")
        };
        table.extend(entry(l1, l1_size, &i.to_string(), &name, 16 << 20));
    }
    let at = append(&img, &table);
    poke(&img, 64, &at.to_be_bytes());
    poke(&img, 60, &65535u32.to_be_bytes());
    let t = Instant::now();
    let image = Image::open(&img, &OpenOptions::new(8 << 20)).unwrap();
    assert_eq!(image.snapshots().len(), 65535);
    let s = image.state(StateId::Snapshot(65534)).unwrap();
    let mut buf = vec![0u8; 65536];
    s.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == 9));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    bounded(&["info", img.to_str().unwrap()], Duration::from_secs(60));

    let m = Mount::new(&src, &d.path().join("mnt"), &[]);
    let t = Instant::now();
    let n = std::fs::read_dir(m.path("many.qcow2/snapshots"))
        .unwrap()
        .count();
    assert_eq!(n, 65535);
    assert!(m.path("many.qcow2/snapshots/dup.id65000.raw").exists());
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

#[test]
fn snapshot_table_past_64_mib_is_refused() {
    let d = scratch();
    let img = d.path().join("big-table.qcow2");
    create(&img, "16M", "");
    snapshot(&img, "first");
    let sn = peek64(&img, 64);
    let l1 = peek64(&img, sn);
    let l1_size = (peek64(&img, sn + 8) >> 32) as u32;
    // 1100 entries with 64 KiB names: about 72 MiB.
    let name = "n".repeat(65535);
    let mut table = Vec::new();
    for i in 1..=1100u32 {
        table.extend(entry(l1, l1_size, &i.to_string(), &name, 16 << 20));
    }
    let at = append(&img, &table);
    poke(&img, 64, &at.to_be_bytes());
    poke(&img, 60, &1100u32.to_be_bytes());
    let t = Instant::now();
    let err = Image::open(&img, &OpenOptions::new(8 << 20))
        .err()
        .expect("an error")
        .to_string();
    assert!(
        err.contains("snapshot table size") && err.contains("67108864"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    let (code, _, err, _) = bounded(&["check", img.to_str().unwrap()], Duration::from_secs(10));
    assert_eq!(code, 1, "{err}");
}

#[test]
fn compressed_cluster_that_inflates_forever_stops_at_one_cluster() {
    use std::io::Write;
    let d = scratch();
    let img = d.path().join("bomb.qcow2");
    create(&img, "4M", "");
    qemu_io(&img, "qcow2", &["write -c -P 3 0 64k"]);
    let l1 = peek64(&img, 40);
    let l2 = peek64(&img, l1) & 0x00ff_ffff_ffff_fe00;
    // A raw deflate stream of 1 GiB of zeros (about 1 MiB), cut to what a
    // descriptor can address (256 sectors).
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        enc.write_all(&zeros).unwrap();
    }
    let mut stream = enc.finish().unwrap();
    stream.truncate(128 * 1024);
    let at = append(&img, &stream);
    let sectors = (stream.len() as u64).div_ceil(512) - 1;
    poke(
        &img,
        l2,
        &((1u64 << 62) | (sectors.min(255) << 54) | at).to_be_bytes(),
    );
    let t = Instant::now();
    let image = Image::open(&img, &OpenOptions::new(8 << 20)).unwrap();
    let s = image.state(StateId::Active).unwrap();
    let ours = read_all(&s, 1 << 20);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(
        ours == oracle_raw(d.path(), &img, None),
        "not what qemu-img reads"
    );
}

#[test]
fn backing_chain_1000_deep() {
    let (_dir, src) = scratch_images();
    create(&src.join("c0.qcow2"), "1M", "");
    for i in 1..1000 {
        let (b, n) = (format!("c{}.qcow2", i - 1), src.join(format!("c{i}.qcow2")));
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            &b,
            "-F",
            "qcow2",
            n.to_str().unwrap(),
            "1M",
        ]);
    }
    let top = src.join("c999.qcow2");
    let t = Instant::now();
    let image = Image::open(&top, &OpenOptions::new(8 << 20)).unwrap();
    let s = image.state(StateId::Active).unwrap();
    let err = s.read_at(&mut [0u8; 512], 0).unwrap_err().to_string();
    assert!(err.contains("deeper than 64"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// The offset of the data of header extension `kind`.
fn extension(img: &Path, kind: u32) -> u64 {
    let bytes = std::fs::read(img).unwrap();
    let be32 = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    let mut at = be32(100) as usize;
    loop {
        let (ty, len) = (be32(at), be32(at + 4) as usize);
        assert_ne!(ty, 0, "no extension {kind:#x}");
        if ty == kind {
            return at as u64 + 8;
        }
        at += 8 + len.div_ceil(8) * 8;
    }
}

#[test]
fn sixty_five_thousand_bitmaps_over_one_large_table() {
    let d = scratch();
    let img = d.path().join("bitmaps.qcow2");
    create(&img, "64M", "");
    qemu_img(&["bitmap", "--add", img.to_str().unwrap(), "b0"]);
    qemu_io(&img, "qcow2", &["write -P 7 0 1M"]);
    // One bitmap table of 1 Mi entries, each on the same data cluster.
    let data = peek64(&img, peek64(&img, peek64(&img, 40)) & 0x00ff_ffff_ffff_fe00);
    let data = data & 0x00ff_ffff_ffff_fe00;
    let entries: u64 = 1 << 20;
    let table: Vec<u8> = (0..entries).flat_map(|_| data.to_be_bytes()).collect();
    let table_at = append(&img, &table);
    // 65535 bitmaps, every one on that table.
    let count: u32 = 65535;
    let mut dir = Vec::new();
    for _ in 0..count {
        dir.extend_from_slice(&table_at.to_be_bytes());
        dir.extend_from_slice(&(entries as u32).to_be_bytes());
        dir.extend_from_slice(&[
            0, 0, 0, 0, 1, 16, 0, 1, 0, 0, 0, 0, b'b', 0, 0, 0, 0, 0, 0, 0,
        ]);
    }
    let dir_at = append(&img, &dir);
    let ext = extension(&img, 0x2385_2875);
    poke(&img, ext, &count.to_be_bytes());
    poke(&img, ext + 8, &(dir.len() as u64).to_be_bytes());
    poke(&img, ext + 16, &dir_at.to_be_bytes());

    // The walk stops at its bound on visited entries, and says so past a
    // thousand other messages; the check is incomplete (exit status 1).
    let (code, out, _, took) = bounded(&["check", img.to_str().unwrap()], Duration::from_secs(10));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("check stopped"), "{out}");
    eprintln!("check of 65535 bitmaps took {took:?}");
    // Reading the image is not affected.
    let image = Image::open(&img, &OpenOptions::new(8 << 20)).unwrap();
    let state = image.state(StateId::Active).unwrap();
    let mut buf = vec![0u8; 4096];
    state.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == 7));
}
