//! `qcow2fs info` and `qcow2fs check` count what `qemu-img check` counts.

mod common;
use common::*;
use std::path::Path;

fn ours(img: &Path) -> (i32, serde_json::Value) {
    let (code, out, err) = qcow2fs(&["check", "--output", "json", img.to_str().unwrap()]);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, v)
}

fn field(v: &serde_json::Value, k: &str) -> u64 {
    v.get(k).and_then(|x| x.as_u64()).unwrap_or(0)
}

/// Our counts equal qemu-img's, and the exit status follows them.
fn assert_agrees(img: &Path) -> serde_json::Value {
    let q = qemu_check(img).expect("qemu-img check gives JSON");
    let (code, v) = ours(img);
    for k in ["corruptions", "leaks"] {
        assert_eq!(
            field(&v, k),
            field(&q, k),
            "{}: {k}: ours {v:#} qemu {q:#}",
            img.display()
        );
    }
    assert_eq!(
        field(&v, "allocated-clusters"),
        field(&q, "allocated-clusters"),
        "{}",
        img.display()
    );
    assert_eq!(field(&v, "total-clusters"), field(&q, "total-clusters"));
    let want = if field(&q, "corruptions") > 0 {
        2
    } else if field(&q, "leaks") > 0 {
        3
    } else {
        0
    };
    assert_eq!(code, want, "{v:#}");
    v
}

fn history(img: &Path, opts: &str) {
    create(img, "16M", opts);
    qemu_io(img, "qcow2", &["write -P 1 0 1M", "write -c -P 2 8M 256k"]);
    snapshot(img, "a");
    qemu_io(
        img,
        "qcow2",
        &["write -P 3 512k 1M", "write -z 4M 64k", "discard 0 64k"],
    );
    snapshot(img, "b");
    qemu_io(img, "qcow2", &["write -P 4 2M 64k"]);
}

#[test]
fn clean_images_agree_with_qemu_img() {
    let d = scratch();
    for (name, opts) in [
        ("v3.qcow2", ""),
        ("v2.qcow2", "compat=0.10"),
        ("extl2.qcow2", "extended_l2=on"),
        ("small.qcow2", "cluster_size=4k,refcount_bits=64"),
        ("zstd.qcow2", "compression_type=zstd,refcount_bits=8"),
    ] {
        let img = at(d.path(), name);
        history(&img, opts);
        let v = assert_agrees(&img);
        assert_eq!(field(&v, "corruptions"), 0);
        assert!(field(&v, "allocated-clusters") > 0);
    }
}

/// The refcount block's offset and the width of one refcount in bytes.
fn refblock(img: &Path) -> u64 {
    let reftable = peek64(img, 48);
    peek64(img, reftable) & !0x1ff
}

#[test]
fn leaks_and_corruptions_agree_with_qemu_img() {
    let d = scratch();
    let base = at(d.path(), "base.qcow2");
    history(&base, "");
    let copy = |name: &str| {
        let p = at(d.path(), name);
        std::fs::copy(&base, &p).unwrap();
        p
    };
    let l1 = peek64(&base, 40);
    let l2 = peek64(&base, l1) & 0x00ff_ffff_ffff_fe00;
    let rb = refblock(&base);

    // A leak: the header cluster's refcount (16-bit entry 0) raised to 2.
    let leak = copy("leak.qcow2");
    poke(&leak, rb, &[0, 2]);
    // A refcount for a cluster past the end of the file is not counted.
    poke(&leak, rb + 2 * 200, &[0, 1]);
    let v = assert_agrees(&leak);
    assert_eq!(field(&v, "leaks"), 1);

    // A corruption: the first L2 table's refcount dropped to 0.
    let corrupt = copy("refzero.qcow2");
    poke(&corrupt, rb + 2 * (l2 >> 16), &[0, 0]);
    let v = assert_agrees(&corrupt);
    assert!(field(&v, "corruptions") >= 1);

    // QCOW_OFLAG_COPIED cleared on an active data cluster with refcount 1.
    let copied = copy("copied.qcow2");
    let mut found = false;
    for i in 0..8192u64 {
        let e = peek64(&copied, l2 + 8 * i);
        if e & (1 << 63) != 0 && e & (1 << 62) == 0 {
            poke(&copied, l2 + 8 * i, &(e & !(1u64 << 63)).to_be_bytes());
            found = true;
            break;
        }
    }
    assert!(found);
    let (_, v) = ours(&copied);
    assert_eq!(field(&v, "oflag-copied-mismatches"), 1);
    assert_agrees(&copied);

    // An L2 entry pointing to an unaligned cluster.
    let unaligned = copy("unaligned.qcow2");
    let e = peek64(&unaligned, l2 + 8 * 20);
    assert_ne!(e, 0);
    poke(&unaligned, l2 + 8 * 20, &(e | 0x200).to_be_bytes());
    assert_agrees(&unaligned);

    // An L2 entry pointing past the end of the file.
    let past = copy("past.qcow2");
    poke(
        &past,
        l2 + 8 * 21,
        &((1u64 << 63) | (1u64 << 40)).to_be_bytes(),
    );
    assert_agrees(&past);
}

#[test]
fn persistent_bitmaps_are_counted_as_qemu_img_counts() {
    let d = scratch();
    let img = at(d.path(), "bitmaps.qcow2");
    let p = img.to_str().unwrap();
    create(&img, "64M", "");
    qemu_img(&["bitmap", "--add", p, "b0"]);
    qemu_io(&img, "qcow2", &["write -P 1 0 4M", "write -P 2 32M 1M"]);
    qemu_img(&["bitmap", "--add", "-g", "4096", p, "b1"]);
    snapshot(&img, "s");
    qemu_io(&img, "qcow2", &["write -P 3 8M 1M"]);
    let header =
        qcow2fs::qcow2::header::Header::read(&qcow2fs::source::SourceFile::open(&img).unwrap());
    let dir = header
        .unwrap()
        .bitmap_directory
        .expect("a bitmap directory");
    assert_eq!(dir.count, 2);
    // The first bitmap's table holds a data cluster: all are referenced.
    let table = peek64(&img, dir.offset);
    assert_ne!(peek64(&img, table) & 0x00ff_ffff_ffff_fe00, 0);
    let v = assert_agrees(&img);
    assert_eq!(field(&v, "leaks"), 0);

    // Without the autoclear bit the extension is not to be trusted: QEMU
    // ignores it, and the bitmaps' clusters (directory, two tables, data)
    // are leaks.
    let ignored = at(d.path(), "ignored.qcow2");
    std::fs::copy(&img, &ignored).unwrap();
    poke(&ignored, 88, &0u64.to_be_bytes());
    let v = assert_agrees(&ignored);
    assert!(field(&v, "leaks") >= 4, "{v:#}");
}

/// The report goes to a reader that left early: no panic, no message, the
/// usual exit status.
#[test]
fn a_closed_standard_output_is_not_an_error() {
    let d = scratch();
    let img = at(d.path(), "vm.qcow2");
    history(&img, "");
    for cmd in ["info", "check"] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(bin())
            .args([cmd, img.to_str().unwrap()])
            .stdout(writer)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{cmd}");
        assert!(
            out.stderr.is_empty(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn info_reports_every_part() {
    let d = scratch();
    let img = at(d.path(), "vm.qcow2");
    history(&img, "");
    let (code, text, _) = qcow2fs(&["info", img.to_str().unwrap()]);
    assert_eq!(code, 0);
    for part in [
        "== header ==",
        "== snapshots ==",
        "== tables per state ==",
        "== refcount table ==",
        "== check ==",
        "== summary ==",
        "verdict: clean",
        "features: internal snapshots, compressed clusters",
    ] {
        assert!(text.contains(part), "missing {part}:\n{text}");
    }
    let (code, json, _) = qcow2fs(&["info", "--output", "json", img.to_str().unwrap()]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 2);
    assert_eq!(v["snapshots"][1]["name"], "b");
    let states = v["states"].as_array().unwrap();
    assert_eq!(states.len(), 3);
    // Snapshot b rewrote 1 MiB (16 clusters) over a; active wrote one more cluster.
    assert_eq!(states[2]["new-clusters"], 16);
    assert_eq!(states[0]["new-clusters"], 1);
    let q = qemu_check(&img).unwrap();
    assert_eq!(v["check"]["allocated-clusters"], q["allocated-clusters"]);
    assert!(v["summary"]["inactive-clusters"].as_u64().unwrap() > 0);
}

#[test]
fn check_of_an_unreadable_image_exits_1() {
    let d = scratch();
    let img = at(d.path(), "enc.qcow2");
    // qemu-img times PBKDF2 on the thread's CPU clock to choose the LUKS
    // iteration count, and gives up ("Unable to get accurate CPU usage")
    // when a busy VM's clock does not advance: ask it again.
    for attempt in 1.. {
        let out = std::process::Command::new("qemu-img")
            .args([
                "create",
                "-q",
                "-f",
                "qcow2",
                "--object",
                "secret,id=s0,data=pw",
                "-o",
                "encrypt.format=luks,encrypt.key-secret=s0",
                img.to_str().unwrap(),
                "4M",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            break;
        }
        assert!(
            attempt < 5 && err.contains("accurate CPU usage"),
            "qemu-img create (attempt {attempt}): {err}"
        );
    }
    let (code, _, err) = qcow2fs(&["check", img.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("encryption"), "{err}");
}

#[test]
fn an_image_open_for_writing_is_reported_in_use() {
    let d = scratch();
    let img = at(d.path(), "busy.qcow2");
    create(&img, "1M", "");
    assert!(!qcow2fs::image::lock::in_use(&img));
    // qemu-io keeps the image open (and locked) while it waits for commands.
    let mut child = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", img.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !qcow2fs::image::lock::in_use(&img) {
        assert!(t.elapsed().as_secs() < 10, "lock never seen");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (_, text, _) = qcow2fs(&["info", img.to_str().unwrap()]);
    assert!(text.contains("in use: yes"), "{text}");
    drop(child.stdin.take());
    child.wait().unwrap();
    assert!(!qcow2fs::image::lock::in_use(&img));
}

/// An example program built next to this test binary (built now when
/// only this test target was built).
fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir.join("examples").join(name);
    if !path.exists() {
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "--examples"]);
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success());
    }
    path
}

#[test]
fn unique_bytes_per_snapshot_and_the_library_examples() {
    let d = scratch();
    let img = at(d.path(), "u.qcow2");
    create(&img, "8M", "");
    qemu_io(&img, "qcow2", &["write -P 1 0 1M"]);
    snapshot(&img, "s1");
    qemu_io(&img, "qcow2", &["write -P 2 0 512k", "write -P 3 4M 64k"]);
    snapshot(&img, "s2");
    qemu_io(&img, "qcow2", &["write -P 4 0 64k"]);
    let (_, json, _) = qcow2fs(&["info", "--output", "json", img.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    // s1 alone holds the first 512 KiB it wrote (8 clusters); s2 alone the
    // first 64 KiB that active rewrote; active alone its new 64 KiB.
    assert_eq!(v["states"][1]["unique-clusters"], 8);
    assert_eq!(v["states"][2]["unique-clusters"], 1);
    assert_eq!(v["states"][0]["unique-clusters"], 1);
    assert_eq!(v["states"][1]["unique-bytes"], 8 * 65536);

    let out = run(
        example("snapshot_space").to_str().unwrap(),
        &[img.to_str().unwrap()],
    );
    let s1 = out
        .lines()
        .find(|l| l.starts_with("1 "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(s1.split_whitespace().nth(2) == Some("524288"), "{out}");
    let raw = std::process::Command::new(example("read_snapshot"))
        .args([img.to_str().unwrap(), "s1"])
        .output()
        .unwrap();
    assert!(raw.status.success());
    assert!(raw.stdout == oracle_raw(d.path(), &img, Some("1")));
}

/// A file cut short (snapshot table, tables and data past its end) is
/// checked as `qemu-img check` checks it: reads past the end are zeros,
/// incomplete snapshot entries and references past the end are corruptions,
/// the clusters of the snapshots lost are leaks, and the exit status is the
/// same; a cut inside the header is refused by both.
#[test]
fn truncated_images_are_counted_as_qemu_img_counts_them() {
    let d = scratch();
    let cut_img = at(d.path(), "cut.qcow2");
    let (mut leaky, mut incomplete) = (0, 0);
    for (name, opts) in [
        ("v3.qcow2", "cluster_size=65536"),
        ("v2.qcow2", "compat=0.10"),
        ("small.qcow2", "cluster_size=4096"),
        ("ext.qcow2", "extended_l2=on"),
    ] {
        let img = at(d.path(), name);
        let p = img.to_str().unwrap();
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", opts, p, "16M"]);
        qemu_io(&img, "qcow2", &["write -P 1 0 4M"]);
        qemu_img(&["snapshot", "-c", "a", p]);
        qemu_io(&img, "qcow2", &["write -P 2 2M 4M", "write -c -P 5 8M 1M"]);
        qemu_img(&["snapshot", "-c", "b", p]);
        qemu_io(&img, "qcow2", &["write -P 3 6M 2M", "write -z 0 64k"]);
        let len = std::fs::metadata(&img).unwrap().len();
        // Inside the header, past it, through the data and into the tables
        // that were written last.
        let mut cuts = vec![50, 104, 200, 5000, 70_000, len - 100, len - 1];
        cuts.extend((1..16).map(|i| len * i / 16));
        for cut in cuts {
            std::fs::copy(&img, &cut_img).unwrap();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&cut_img)
                .unwrap()
                .set_len(cut)
                .unwrap();
            let out = std::process::Command::new("qemu-img")
                .args(["check", "--output=json", cut_img.to_str().unwrap()])
                .output()
                .unwrap();
            let what = format!("{name} cut at {cut}");
            let Ok(q) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
                assert_eq!(out.status.code(), Some(1), "{what}");
                let (code, _, err) = qcow2fs(&["check", cut_img.to_str().unwrap()]);
                assert_eq!(code, 1, "{what}: qemu-img refused it; we said {err}");
                continue;
            };
            let (code, v) = ours(&cut_img);
            assert_eq!(Some(code), out.status.code(), "{what}: {v:#}");
            for k in [
                "corruptions",
                "leaks",
                "check-errors",
                "image-end-offset",
                "allocated-clusters",
                "total-clusters",
            ] {
                assert_eq!(
                    field(&v, k),
                    field(&q, k),
                    "{what}: {k}: ours {v:#} qemu {q:#}"
                );
            }
            leaky += u32::from(field(&v, "leaks") > 0);
            incomplete += v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m.as_str().unwrap().contains("is incomplete"))
                .count();
        }
    }
    // The cuts reached both effects: snapshots lost, their clusters leaked.
    assert!(leaky > 5 && incomplete > 10, "{leaky} {incomplete}");
}

/// A snapshot entry whose L1 table is unaligned or too large is one
/// corruption, as in `qemu-img check`, and the check goes on; its clusters
/// are leaks.
#[test]
fn a_damaged_snapshot_entry_is_counted_and_the_check_goes_on() {
    let d = scratch();
    let img = at(d.path(), "vm.qcow2");
    let p = img.to_str().unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", p, "16M"]);
    qemu_io(&img, "qcow2", &["write -P 1 0 4M"]);
    qemu_img(&["snapshot", "-c", "a", p]);
    qemu_io(&img, "qcow2", &["write -P 2 0 4M"]);
    let bytes = std::fs::read(&img).unwrap();
    let table = u64::from_be_bytes(bytes[64..72].try_into().unwrap()) as usize;
    let l1 = u64::from_be_bytes(bytes[table..table + 8].try_into().unwrap());
    for (at_byte, value, said) in [
        (0, (l1 + 512).to_be_bytes().to_vec(), "not cluster aligned"),
        (8, 0x50_0000u32.to_be_bytes().to_vec(), "too large"),
    ] {
        let mut poked = bytes.clone();
        poked[table + at_byte..table + at_byte + value.len()].copy_from_slice(&value);
        std::fs::write(&img, &poked).unwrap();
        let v = assert_agrees(&img);
        assert_eq!(field(&v, "corruptions"), 1, "{v:#}");
        assert!(field(&v, "leaks") > 0, "{v:#}");
        assert!(v["messages"][0].as_str().unwrap().contains(said), "{v:#}");
    }
}
