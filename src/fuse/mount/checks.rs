//! The checks before mounting: where MOUNTPOINT lies against IMAGE_DIR,
//! what MOUNTPOINT holds, and the `.qcow2` files of IMAGE_DIR that are not
//! qcow2.

use std::path::{Path, PathBuf};

use super::fail;
use crate::error::{Error, Result};

/// The start of every refusal to mount: both paths.
fn refusing(image_dir: &Path, mp: &Path) -> String {
    format!(
        "refusing to mount IMAGE_DIR {} at MOUNTPOINT {}",
        image_dir.display(),
        mp.display()
    )
}

/// Refuse a MOUNTPOINT that is IMAGE_DIR or lies inside it (the mount
/// would list itself, and every request on it would wait on the mount
/// forever), and an IMAGE_DIR inside MOUNTPOINT (the mount would hide the
/// images). Both paths are absolute and resolved.
pub(super) fn check_places(image_dir: &Path, mp: &Path) -> Result<()> {
    let why = if mp == image_dir {
        "MOUNTPOINT is IMAGE_DIR itself: give an empty folder outside IMAGE_DIR as MOUNTPOINT"
    } else if mp.starts_with(image_dir) {
        "MOUNTPOINT lies inside IMAGE_DIR, so the mount would show itself: \
         give an empty folder outside IMAGE_DIR as MOUNTPOINT"
    } else if image_dir.starts_with(mp) {
        "IMAGE_DIR lies inside MOUNTPOINT, so the mount would hide it: \
         give an empty folder outside IMAGE_DIR as MOUNTPOINT"
    } else {
        return Ok(());
    };
    fail(format!("{}: {why}", refusing(image_dir, mp)))
}

/// Refuse a MOUNTPOINT that holds disk images in any case (were the
/// arguments swapped, the VMs would lose their disks), and one that holds
/// other files unless `nonempty`.
pub(super) fn check_contents(image_dir: &Path, mp: &Path, nonempty: bool) -> Result<()> {
    let mut budget = SCAN_ENTRIES;
    if let Some(img) = find_image(mp, 2, &mut budget) {
        return fail(format!(
            "{}: MOUNTPOINT holds disk images ({}), which the mount would hide from \
             the VMs that use them; were the two paths swapped? \
             (usage: qcow2fs mount IMAGE_DIR MOUNTPOINT)",
            refusing(image_dir, mp),
            img.display()
        ));
    }
    let first = std::fs::read_dir(mp)
        .map_err(|e| Error::mount(mp.display().to_string(), e))?
        .filter_map(|e| e.ok())
        .next();
    match first {
        Some(e) if !nonempty => fail(format!(
            "{}: MOUNTPOINT is not empty (it holds {}), and the mount would hide \
             its files: give an empty folder, or add -o nonempty",
            refusing(image_dir, mp),
            e.file_name().to_string_lossy()
        )),
        _ => Ok(()),
    }
}

/// How many folder entries a scan of MOUNTPOINT or IMAGE_DIR looks at, at
/// most: the checks must not take long on a large folder.
const SCAN_ENTRIES: usize = 10_000;

/// Endings of the names of disk image files.
const IMAGE_ENDINGS: &[&str] = &[
    "qcow2", "qcow", "img", "raw", "iso", "vmdk", "vdi", "vhd", "vhdx", "qed",
];

/// True when `p`'s name ends as a disk image's does.
fn image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_ENDINGS.iter().any(|i| e.eq_ignore_ascii_case(i)))
}

/// The first disk image (by its name, or a qcow2 file by its magic) in
/// `dir` or its folders down to `depth` levels, looking at no more than
/// `budget` entries. Symbolic links are judged by their name, not followed.
fn find_image(dir: &Path, depth: usize, budget: &mut usize) -> Option<PathBuf> {
    let mut folders = Vec::new();
    for e in std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()) {
        if *budget == 0 {
            return None;
        }
        *budget -= 1;
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => folders.push(p),
            Ok(t) if t.is_file() && (image_name(&p) || crate::image::is_qcow2(&p)) => {
                return Some(p);
            }
            Ok(t) if t.is_symlink() && image_name(&p) => return Some(p),
            _ => {}
        }
    }
    if depth == 0 {
        return None;
    }
    folders
        .iter()
        .find_map(|f| find_image(f, depth - 1, budget))
}

/// Log every file under IMAGE_DIR named `.qcow2` that does not start with
/// the qcow2 magic: the mount shows it as a plain file, and a backup of it
/// would copy whatever it holds.
pub(super) fn warn_damaged_magic(image_dir: &Path) {
    warn_damaged_magic_in(image_dir, 8, &mut (10 * SCAN_ENTRIES));
}

fn warn_damaged_magic_in(dir: &Path, depth: usize, budget: &mut usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() && depth > 0 => warn_damaged_magic_in(&p, depth - 1, budget),
            Ok(t) if t.is_file() && has_qcow2_name(&p) => {
                if let Some(magic) = first_bytes(&p)
                    && magic != crate::qcow2::header::QCOW2_MAGIC.to_be_bytes()
                {
                    log::warn!(
                        "{}: named .qcow2 but lacks the qcow2 magic (it starts with {}): \
                         shown as a plain file",
                        p.display(),
                        magic.iter().map(|b| format!("{b:02x}")).collect::<String>()
                    );
                }
            }
            _ => {}
        }
    }
}

fn has_qcow2_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("qcow2"))
}

/// The first four bytes of a file, when it can be read and has them.
fn first_bytes(p: &Path) -> Option<[u8; 4]> {
    use std::io::Read;
    let mut b = [0u8; 4];
    std::fs::File::open(p).ok()?.read_exact(&mut b).ok()?;
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_that_would_hide_or_loop_are_refused() {
        let ok = |i: &str, m: &str| check_places(Path::new(i), Path::new(m)).is_ok();
        assert!(!ok("/var/lib/libvirt/images", "/var/lib/libvirt/images"));
        assert!(!ok(
            "/var/lib/libvirt/images",
            "/var/lib/libvirt/images/mnt"
        ));
        assert!(!ok("/var/lib/libvirt/images", "/var/lib"));
        assert!(ok("/var/lib/libvirt/images", "/mnt/vmsnap"));
        // Whole components, not prefixes of names.
        assert!(ok("/srv/img", "/srv/img2"));
        assert!(ok("/srv/img2", "/srv/img"));
    }

    #[test]
    fn image_names_are_known_by_their_ending() {
        for n in ["a.qcow2", "b.IMG", "c.raw", "d.iso", "e.vmdk"] {
            assert!(image_name(Path::new(n)), "{n}");
        }
        for n in ["notes.txt", "qcow2", "img", "chain.json"] {
            assert!(!image_name(Path::new(n)), "{n}");
        }
    }
}
