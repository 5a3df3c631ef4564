//! `SHA256SUMS`: the sha256sum-format list of every other file of a chain
//! folder, so that a replica can be verified with `sha256sum -c`, without
//! the source. Its size follows from the file names alone; its bytes from
//! hashing each file, which is done while the file is read anyway when it
//! can be (a `cp -r` or `rsync` reads every file in full).

use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::view::View;

/// The name of the sums file in every chain folder.
pub const SUMS_NAME: &str = "SHA256SUMS";

/// Bytes read at a time when hashing a file that was not hashed as it was
/// read, or when writing one out.
pub(crate) const HASH_CHUNK: usize = 1 << 20;

/// A SHA-256 digest.
pub type Sha256Digest = [u8; 32];

/// `name` as sha256sum writes it: a backslash or newline in it is escaped,
/// and the line then starts with a backslash.
fn escaped(name: &str) -> (bool, String) {
    let needs = name.contains(['\\', '\n']);
    (needs, name.replace('\\', "\\\\").replace('\n', "\\n"))
}

/// One line of the sums file.
pub fn line(name: &str, digest: &Sha256Digest) -> String {
    let (esc, name) = escaped(name);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}{hex}  {name}\n", if esc { "\\" } else { "" })
}

/// The length of the sums file of these names, without hashing anything.
pub fn len<'a>(names: impl IntoIterator<Item = &'a str>) -> u64 {
    names
        .into_iter()
        .map(|n| {
            let (esc, name) = escaped(n);
            (usize::from(esc) + 64 + 2 + name.len() + 1) as u64
        })
        .sum()
}

/// The whole sums file.
pub fn text(entries: &[(String, Sha256Digest)]) -> String {
    entries.iter().map(|(n, d)| line(n, d)).collect()
}

/// Hash every byte of a view.
pub fn hash_view(view: &dyn View) -> Result<Sha256Digest> {
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; HASH_CHUNK];
    let mut pos = 0u64;
    while pos < view.size() {
        let n = view.read_at(&mut buf, pos)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(sha.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_in_sha256sum_format() {
        let d = [0xabu8; 32];
        let l = line("vm_active.qcow2", &d);
        assert_eq!(l, format!("{}  vm_active.qcow2\n", "ab".repeat(32)));
        assert_eq!(len(["vm_active.qcow2"]), l.len() as u64);
        let odd = line("a\\b\nc", &d);
        assert!(odd.starts_with('\\') && odd.ends_with("  a\\\\b\\nc\n"));
        assert_eq!(len(["a\\b\nc"]), odd.len() as u64);
    }
}
