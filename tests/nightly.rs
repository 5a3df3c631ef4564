//! Nightly replication (`examples/replicate.sh`): a replica of every kept
//! snapshot, kept up to date each night at the cost of what the VM wrote.
//!
//! The scenario: a 2 GiB disk with 512 MiB of incompressible data and 7
//! daily snapshots; each night the VM writes 24 MiB in 256 KiB pieces
//! scattered over the disk, the oldest snapshot is deleted, a new one is
//! taken, and replicate.sh runs into DEST, an ext4 file system of its own.

mod common;
use common::vm::Vm;
use common::*;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const MIB: u64 = 1 << 20;
const PIECE: u64 = 256 << 10;

/// The scenario's sizes.
struct Scenario {
    disk: u64,
    data: u64,
    night: u64,
    days: usize,
}

/// The scenario of issue 22.
const ISSUE: Scenario = Scenario {
    disk: 2 << 30,
    data: 512 * MIB,
    night: 24 * MIB,
    days: 7,
};

/// A deterministic stream of incompressible bytes (xorshift64*).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, len: u64) -> Vec<u8> {
        (0..len / 8)
            .flat_map(|_| self.next().to_le_bytes())
            .collect()
    }

    /// `n` distinct numbers below `below`.
    fn distinct(&mut self, n: usize, below: u64) -> Vec<u64> {
        let mut picked = std::collections::BTreeSet::new();
        while picked.len() < n {
            picked.insert(self.next() % below);
        }
        picked.into_iter().collect()
    }
}

/// A guest write: `len` bytes at `off`, filled from the file `from`.
struct Piece {
    from: PathBuf,
    off: u64,
    len: u64,
}

/// Who writes the image: qemu-io and qemu-img on an image at rest, or a
/// running QEMU through its monitor.
enum Writer {
    Rest(PathBuf),
    Running(Vm),
}

impl Writer {
    fn write(&mut self, pieces: &[Piece]) {
        match self {
            Writer::Rest(img) => {
                let cmds: Vec<String> = pieces
                    .iter()
                    .map(|p| format!("write -s {} {} {}", p.from.display(), p.off, p.len))
                    .collect();
                let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
                for chunk in cmds.chunks(64) {
                    qemu_io(img, "qcow2", chunk);
                }
            }
            Writer::Running(vm) => {
                for p in pieces {
                    vm.write_from(&p.from, p.off, p.len);
                }
            }
        }
    }

    fn snapshot(&mut self, name: &str) {
        match self {
            Writer::Rest(img) => snapshot(img, name),
            Writer::Running(vm) => vm.savevm(name),
        }
    }

    fn delete(&mut self, name: &str) {
        match self {
            Writer::Rest(img) => {
                qemu_img(&["snapshot", "-d", name, img.to_str().unwrap()]);
            }
            Writer::Running(vm) => vm.delvm(name),
        }
    }
}

/// `total` bytes of fresh noise in 256 KiB pieces at distinct places
/// scattered over the disk, each piece from a file of its own in `dir`.
fn scattered(dir: &Path, noise: &mut Noise, tag: &str, total: u64, disk: u64) -> Vec<Piece> {
    let n = (total / PIECE) as usize;
    noise
        .distinct(n, disk / PIECE)
        .into_iter()
        .enumerate()
        .map(|(k, slot)| {
            let from = dir.join(format!("{tag}-{k}"));
            std::fs::write(&from, noise.bytes(PIECE)).unwrap();
            Piece {
                from,
                off: slot * PIECE,
                len: PIECE,
            }
        })
        .collect()
}

/// The image of the scenario, with its data written but no snapshot yet:
/// the data in 8 MiB pieces spread evenly over the disk.
fn build_image(dir: &Path, img: &Path, s: &Scenario, noise: &mut Noise) {
    create(img, &s.disk.to_string(), "");
    let piece = 8 * MIB;
    let n = s.data / piece;
    let mut pieces = Vec::new();
    // Eight sources of noise, used in turn.
    for k in 0..n {
        let from = dir.join(format!("data-{}", k % 8));
        if k < 8 {
            std::fs::write(&from, noise.bytes(piece)).unwrap();
        }
        pieces.push(Piece {
            from,
            off: k * (s.disk / n),
            len: piece,
        });
    }
    Writer::Rest(img.to_path_buf()).write(&pieces);
}

/// DEST: an ext4 file system of its own, on a loop device over a file in
/// the test's folder, so that the bytes written to it can be counted.
struct Ext4 {
    mp: PathBuf,
    dev: String,
}

impl Ext4 {
    fn new(dir: &Path, size: u64) -> Ext4 {
        let file = dir.join("dest.ext4");
        std::fs::File::create(&file).unwrap().set_len(size).unwrap();
        let f = file.to_str().unwrap();
        // Inode tables and journal written now, not by a thread later.
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-N",
                "4096",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                f,
            ],
        );
        let mp = dir.join("dest");
        std::fs::create_dir_all(&mp).unwrap();
        let m = mp.to_str().unwrap();
        run("mount", &["-o", "loop", f, m]);
        let source = run("findmnt", &["-n", "-o", "SOURCE", m]);
        let dev = source.trim().trim_start_matches("/dev/").to_string();
        Ext4 { mp, dev }
    }

    /// Bytes written to the file system's device since it was mounted, once
    /// everything written is on it.
    fn written(&self) -> u64 {
        run("sync", &["-f", self.mp.to_str().unwrap()]);
        let p = format!("/sys/fs/ext4/{}/lifetime_write_kbytes", self.dev);
        let kib: u64 = std::fs::read_to_string(&p).unwrap().trim().parse().unwrap();
        kib << 10
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.mp)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
        }
    }
}

/// Bytes the mount process has read (its `rchar`).
fn rchar(m: &Mount) -> u64 {
    let pid = m.child.as_ref().unwrap().id();
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/replicate.sh")
}

/// `replicate.sh MOUNT DEST`, which must exit 0; its output.
fn replicate(m: &Mount, dest: &Path) -> String {
    let out = Command::new("sh")
        .arg(script())
        .arg(&m.mp)
        .arg(dest)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "replicate.sh: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Start `replicate.sh MOUNT DEST`, wait until `cut()` holds, and kill it
/// then: the whole process group, as a power cut would, or the script
/// alone, leaving the command it ran to end on its own. Panics if the night
/// ended before.
fn cut_night(m: &Mount, dest: &Path, group: bool, what: &str, cut: impl Fn() -> bool) {
    let mut child = Command::new("sh")
        .arg(script())
        .arg(&m.mp)
        .arg(dest)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    while !cut() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the night ended ({status}) before {what}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let kill = nix::sys::signal::Signal::SIGKILL;
    if group {
        nix::sys::signal::killpg(pid, kill).unwrap();
    } else {
        nix::sys::signal::kill(pid, kill).unwrap();
    }
    child.wait().unwrap();
    println!("cut off {what}");
}

/// A snapshot as qemu-img reads the table: its ID and name.
struct Snap {
    id: String,
    name: String,
}

fn snapshots(img: &Path) -> Vec<Snap> {
    let info = qemu_img(&["info", "-U", "--output=json", img.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    v["snapshots"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|s| Snap {
            id: s["id"].as_str().unwrap().to_string(),
            name: s["name"].as_str().unwrap().to_string(),
        })
        .collect()
}

/// The identity of each snapshot of the image, oldest first, as the mount's
/// `incremental/INDEX` names them; the index must list exactly the
/// snapshots that qemu-img reads, in their order.
fn identities(m: &Mount, rel: &str, img: &Path) -> Vec<(Snap, String)> {
    let index = std::fs::read_to_string(m.path(&format!("{rel}/incremental/INDEX"))).unwrap();
    let lines: Vec<Vec<&str>> = index.lines().map(|l| l.splitn(4, ' ').collect()).collect();
    let snaps = snapshots(img);
    assert_eq!(lines.len(), snaps.len(), "{index}");
    snaps
        .into_iter()
        .zip(lines)
        .map(|(s, l)| {
            assert_eq!(l[3], s.name, "{index}");
            assert!(l[0].ends_with(&format!(".id{}", s.id)), "{index}");
            let ident = l[0].to_string();
            (s, ident)
        })
        .collect()
}

/// Allocated bytes of the files of a replica folder (its lock and journal
/// left out).
fn allocated(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.metadata().unwrap().blocks() * 512)
        .sum()
}

/// The replica of one image holds a layer for every snapshot the source
/// holds and nothing else; every layer passes qemu-img check, reads as
/// qemu-img reads the snapshot, and the folder's SHA256SUMS verifies.
fn assert_replica(d: &Path, m: &Mount, rel: &str, img: &Path, replica: &Path) {
    let ids = identities(m, rel, img);
    let mut want: Vec<String> = ids.iter().map(|(_, i)| format!("{i}.qcow2")).collect();
    want.push("SHA256SUMS".to_string());
    want.sort();
    let mut held = names_in(replica);
    held.retain(|n| !n.starts_with('.'));
    assert_eq!(held, want);
    run(
        "sh",
        &[
            "-c",
            "cd \"$1\" && sha256sum -c --quiet --strict SHA256SUMS",
            "-",
            replica.to_str().unwrap(),
        ],
    );
    let sums = std::fs::read_to_string(replica.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), ids.len(), "{sums}");
    let raw = d.join("restored.raw");
    for (s, ident) in &ids {
        let layer = replica.join(format!("{ident}.qcow2"));
        let (ok, msg) = check_clean(&layer);
        assert!(ok, "{ident}: qemu-img check: {msg}");
        let l = format!("snapshot.id={}", s.id);
        let r = raw.to_str().unwrap();
        qemu_img(&[
            "convert",
            "-U",
            "-l",
            &l,
            "-O",
            "raw",
            img.to_str().unwrap(),
            r,
        ]);
        let size = |p: &Path, fmt: &str| {
            let info = qemu_img(&[
                "info",
                "-U",
                "-f",
                fmt,
                "--output=json",
                p.to_str().unwrap(),
            ]);
            let v: serde_json::Value = serde_json::from_str(&info).unwrap();
            v["virtual-size"].as_u64().unwrap()
        };
        assert_eq!(size(&layer, "qcow2"), size(&raw, "raw"), "{ident}");
        let cmp = Command::new("qemu-img")
            .args(["compare", "-q", "-f", "qcow2", "-F", "raw"])
            .arg(&layer)
            .arg(&raw)
            .status()
            .unwrap();
        assert!(
            cmp.success(),
            "{ident} does not restore snapshot {}",
            s.name
        );
        std::fs::remove_file(&raw).unwrap();
    }
}

/// The scenario's nights, measured; the replica is then checked against the
/// source, and against a fresh replica of the same snapshots.
fn nights(running: bool) {
    let s = &ISSUE;
    let (d, src) = scratch_images();
    let dir = d.path();
    let pieces = dir.join("pieces");
    std::fs::create_dir_all(&pieces).unwrap();
    let img = src.join("vm.qcow2");
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    build_image(&pieces, &img, s, &mut noise);
    let mut w = if running {
        Writer::Running(Vm::start(&img))
    } else {
        Writer::Rest(img.clone())
    };
    for day in 1..=s.days {
        w.write(&scattered(
            &pieces,
            &mut noise,
            &format!("day{day}"),
            s.night,
            s.disk,
        ));
        w.snapshot(&format!("day{day}"));
    }
    let fs = Ext4::new(dir, 3 << 30);
    let dest = fs.mp.join("replica");
    let m = Mount::new(&src, &dir.join("mnt"), &[]);
    let (w0, r0) = (fs.written(), rchar(&m));
    print!("{}", replicate(&m, &dest));
    println!(
        "first night: {} MiB written to DEST, {} MiB read by the mount",
        (fs.written() - w0) / MIB,
        (rchar(&m) - r0) / MIB
    );
    for night in 1..=3 {
        let day = s.days + night;
        w.write(&scattered(
            &pieces,
            &mut noise,
            &format!("day{day}"),
            s.night,
            s.disk,
        ));
        w.delete(&format!("day{}", day - s.days));
        w.snapshot(&format!("day{day}"));
        let (w0, r0) = (fs.written(), rchar(&m));
        print!("{}", replicate(&m, &dest));
        let written = fs.written() - w0;
        let read = rchar(&m) - r0;
        let (wmax, rmax) = (s.night * 5 / 2 + 8 * MIB, s.night * 3 / 2 + 8 * MIB);
        println!(
            "night {night}: the VM wrote {:.1} MiB; DEST written {:.1} MiB (at most {:.1}); \
             the mount read {:.1} MiB (at most {:.1})",
            s.night as f64 / MIB as f64,
            written as f64 / MIB as f64,
            wmax as f64 / MIB as f64,
            read as f64 / MIB as f64,
            rmax as f64 / MIB as f64,
        );
        assert!(
            written <= wmax,
            "night {night}: {written} bytes written to DEST"
        );
        assert!(
            read <= rmax,
            "night {night}: {read} bytes read by the mount"
        );
    }
    let replica = dest.join("vm.qcow2");
    assert_replica(dir, &m, "vm.qcow2", &img, &replica);
    let fresh = dir.join("fresh");
    replicate(&m, &fresh);
    let (kept, new) = (allocated(&replica), allocated(&fresh.join("vm.qcow2")));
    println!(
        "DEST {:.1} MiB, a fresh replica {:.1} MiB",
        kept as f64 / MIB as f64,
        new as f64 / MIB as f64
    );
    assert!(kept <= new * 5 / 4 + 8 * MIB);
    if let Writer::Running(vm) = w {
        vm.quit();
    }
}

#[test]
fn nights_at_rest_cost_what_changed() {
    nights(false);
}

#[test]
fn nights_on_a_running_vm_cost_what_changed() {
    nights(true);
}

/// Nights cut off (the whole process group killed, as a power cut would):
/// during the first fetch of the complete layer, during a merge, during
/// the fetch of a delta, and during a rebase. The next night repairs each. Then the
/// script alone killed: its work goes on holding the lock, and a night
/// started at once waits for it.
#[test]
fn a_night_cut_off_is_repaired_by_the_next() {
    let s = Scenario {
        disk: 1 << 30,
        data: 256 * MIB,
        night: 24 * MIB,
        days: 3,
    };
    let (d, src) = scratch_images();
    let dir = d.path();
    let pieces = dir.join("pieces");
    std::fs::create_dir_all(&pieces).unwrap();
    let img = src.join("vm.qcow2");
    let mut noise = Noise(0x2545_f491_4f6c_dd1d);
    build_image(&pieces, &img, &s, &mut noise);
    let mut w = Writer::Rest(img.clone());
    // The second day writes much, so that merging the first out takes long.
    for (day, bytes) in [(1, s.night), (2, 128 * MIB), (3, s.night)] {
        w.write(&scattered(
            &pieces,
            &mut noise,
            &format!("day{day}"),
            bytes,
            s.disk,
        ));
        w.snapshot(&format!("day{day}"));
    }
    let dest = dir.join("dest");
    let replica = dest.join("vm.qcow2");
    let m = Mount::new(&src, &dir.join("mnt"), &[]);
    let part_of = |min: u64| {
        let replica = replica.clone();
        move || {
            std::fs::read_dir(&replica).is_ok_and(|rd| {
                rd.flatten().any(|e| {
                    e.file_name().to_string_lossy().ends_with(".qcow2.part")
                        && e.metadata().is_ok_and(|m| m.len() >= min)
                })
            })
        }
    };
    let mut next_day = 4;
    let mut rotate = |w: &mut Writer| {
        let day = next_day;
        next_day += 1;
        w.write(&scattered(
            &pieces,
            &mut noise,
            &format!("day{day}"),
            s.night,
            s.disk,
        ));
        w.delete(&format!("day{}", day - 3));
        w.snapshot(&format!("day{day}"));
    };

    cut_night(
        &m,
        &dest,
        true,
        "during the fetch of the complete layer",
        part_of(MIB),
    );
    let out = replicate(&m, &dest);
    print!("{out}");
    assert_eq!(out.matches("fetched: ").count(), 3, "{out}");
    assert_replica(dir, &m, "vm.qcow2", &img, &replica);

    // Cut off in its merge: the oldest layer is still there, and the next
    // night finishes the merge from the journal.
    let oldest = identities(&m, "vm.qcow2", &img)[0].1.clone();
    rotate(&mut w);
    let journal = replica.join(".journal");
    // Cut once the journal holds the merge (not as soon as the file is
    // made, before its line is written).
    cut_night(&m, &dest, true, "during the merge", || {
        std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0)
    });
    assert!(
        replica.join(format!("{oldest}.qcow2")).exists(),
        "the merge was done before the cut"
    );
    let out = replicate(&m, &dest);
    print!("{out}");
    assert!(out.contains("finishing a cut-off night"), "{out}");
    assert!(!journal.exists());
    assert_replica(dir, &m, "vm.qcow2", &img, &replica);

    // Cut off in the fetch of a delta: fetched again the next night.
    rotate(&mut w);
    cut_night(&m, &dest, true, "during the fetch of a delta", part_of(0));
    let out = replicate(&m, &dest);
    print!("{out}");
    assert!(out.contains("fetched: "), "{out}");
    assert_replica(dir, &m, "vm.qcow2", &img, &replica);

    // The script alone killed during a fetch: the commands it started hold
    // the lock until the night's work is done, and a night started at once
    // waits for them, then finds nothing left to fetch.
    rotate(&mut w);
    cut_night(
        &m,
        &dest,
        false,
        "(the script alone) during a fetch",
        part_of(0),
    );
    let out = replicate(&m, &dest);
    print!("{out}");
    assert!(!out.contains("fetched: "), "{out}");
    assert_replica(dir, &m, "vm.qcow2", &img, &replica);

    // A middle snapshot deleted at the source, the night cut off in the
    // rebase of its successor: the next night finishes it.
    let middle = identities(&m, "vm.qcow2", &img).swap_remove(1);
    w.delete(&middle.0.name);
    cut_night(&m, &dest, true, "during a rebase", || journal.exists());
    assert!(
        replica.join(format!("{}.qcow2", middle.1)).exists(),
        "the rebase was done before the cut"
    );
    let out = replicate(&m, &dest);
    print!("{out}");
    assert!(out.contains("finishing a cut-off night"), "{out}");
    assert!(out.contains("rebased onto"), "{out}");
    assert_replica(dir, &m, "vm.qcow2", &img, &replica);
}

/// The VM helper: guest writes land in the image, savevm and delvm change
/// its snapshot table while QEMU holds it, and the image is whole after quit.
#[test]
fn vm_helper_writes_and_snapshots() {
    let d = scratch();
    let img = d.path().join("vm.qcow2");
    create(&img, "64M", "");
    let mut vm = Vm::start(&img);
    vm.write(0x41, 1 << 20, 256 << 10);
    vm.savevm("one");
    vm.write(0x42, 1 << 20, 64 << 10);
    vm.savevm("two");
    assert_eq!(vm.snapshot_tags(), ["one", "two"]);
    // QEMU holds the image's write lock: a plain open fails, -U reads.
    let p = img.to_str().unwrap();
    let locked = std::process::Command::new("qemu-img")
        .args(["info", p])
        .output()
        .unwrap();
    assert!(!locked.status.success());
    assert!(qemu_img(&["snapshot", "-U", "-l", p]).contains("one"));
    vm.delvm("one");
    assert_eq!(vm.snapshot_tags(), ["two"]);
    vm.quit();
    let listed = qemu_img(&["snapshot", "-l", p]);
    assert!(
        listed.contains("two") && !listed.contains("one"),
        "{listed}"
    );
    qemu_io(
        &img,
        "qcow2",
        &["read -P 0x42 1M 64k", "read -P 0x41 1088k 192k"],
    );
    let (ok, msg) = check_clean(&img);
    assert!(ok, "{msg}");
}
