//! The OUTDIR of `qcow2fs export`: a folder that is not empty is refused
//! unless `--force`, so that two chains never mix; with it, the files of
//! the older chain that the new one lacks are removed once the new one is
//! written.

use std::path::Path;

use crate::error::io_reason;

/// The files of the chain that `out` holds already, to remove those the
/// new chain does not have once it is written; or a refusal when `out` is
/// not empty and `force` is not given.
pub fn prepare(out: &Path, force: bool) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = match std::fs::read_dir(out) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: OUTDIR: {}", out.display(), io_reason(&e))),
    };
    if names.is_empty() || force {
        return Ok(chain_files(out));
    }
    names.sort();
    let held = if names.iter().any(|n| n == "chain.json") {
        match chain_image(out) {
            Some(image) => format!("a chain of {image}"),
            None => "a chain".to_string(),
        }
    } else {
        format!("{} files, such as {}", names.len(), names[0])
    };
    Err(format!(
        "{}: OUTDIR is not empty (it holds {held}): export into an empty folder, \
         or add --force to replace the chain there",
        out.display()
    ))
}

/// The chain.json of the chain in `dir`, read.
fn manifest_of(dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("chain.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// The image a chain in `dir` was made from, as its chain.json names it.
fn chain_image(dir: &Path) -> Option<String> {
    manifest_of(dir)?["image"].as_str().map(str::to_string)
}

/// The names of the files of the chain in `dir`: the layers and backing
/// files its chain.json lists, chain.json and SHA256SUMS. Only plain names
/// in `dir` itself.
fn chain_files(dir: &Path) -> Vec<String> {
    let Some(m) = manifest_of(dir) else {
        return Vec::new();
    };
    let layers = m["layers"].as_array().into_iter().flatten();
    let backing = m["backing-files"].as_array().into_iter().flatten();
    let mut names: Vec<String> = layers
        .filter_map(|l| l["file"].as_str())
        .chain(backing.filter_map(|b| b.as_str()))
        .chain(["chain.json", "SHA256SUMS"])
        .filter(|n| !n.is_empty() && *n != "." && *n != ".." && !n.contains('/'))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Remove the files of the older chain (`old`, from [`prepare`]) that the
/// chain now in `out` does not have.
pub fn remove_stale(out: &Path, old: &[String]) -> Result<(), String> {
    let new = chain_files(out);
    for stale in old.iter().filter(|n| !new.contains(n)) {
        let p = out.join(stale);
        match std::fs::remove_file(&p) {
            Ok(()) => log::info!("{}: removed, not in the new chain", p.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(format!(
                    "{}: stale file of the older chain: {}",
                    p.display(),
                    io_reason(&e)
                ));
            }
        }
    }
    Ok(())
}
