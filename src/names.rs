//! Snapshot names as file names.
//!
//! The rule (also in the README): a snapshot's name is used as it is when it
//! is a safe, unique file name: not empty, no `/` or NUL, not `.` or `..`,
//! at most [`MAX_NAME_BYTES`] bytes, not a reserved name, and no other
//! snapshot of the image has the same name. Any other name becomes
//! `<stem>.id<ID>`, where the stem is the name with `/` and NUL replaced by
//! `_` and cut to [`MAX_NAME_BYTES`] bytes (`unnamed` when that leaves
//! nothing, or only `.` or `..`), and ID is the snapshot's unique ID. Should
//! that form still collide with another file name, `.<n>` is appended, n
//! being the snapshot's position in the table. A safe, unique name is never
//! changed by the presence of other snapshots.

use crate::qcow2::snapshot::Snapshot;

/// Longest name kept as it is, leaving room for suffixes within the 255
/// bytes a Linux file name may have.
pub const MAX_NAME_BYTES: usize = 200;

/// Names that snapshot files may not take: `active` would collide with
/// `forward/active.qcow2`.
pub const RESERVED: &[&str] = &["active"];

fn is_safe(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && name.len() <= MAX_NAME_BYTES
        && !RESERVED.contains(&name)
}

fn stem(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    while s.len() > MAX_NAME_BYTES {
        s.pop();
    }
    if s.is_empty() || s == "." || s == ".." {
        "unnamed".into()
    } else {
        s
    }
}

/// The file stem of every snapshot, in table order, unique within the image.
pub fn snapshot_stems(snapshots: &[Snapshot]) -> Vec<String> {
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for s in snapshots {
        *counts.entry(s.name.as_str()).or_default() += 1;
    }
    let count = |n: &str| counts.get(n).copied().unwrap_or(0);
    let mut out: Vec<Option<String>> = snapshots
        .iter()
        .map(|s| (is_safe(&s.name) && count(&s.name) == 1).then(|| s.name.clone()))
        .collect();
    let taken: Vec<String> = out.iter().flatten().cloned().collect();
    let mut used: std::collections::HashSet<String> = taken.into_iter().collect();
    for (i, s) in snapshots.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        let mut cand = format!("{}.id{}", stem(&s.name), stem(&s.id));
        if used.contains(&cand) || RESERVED.contains(&cand.as_str()) {
            cand = format!("{cand}.{i}");
        }
        while used.contains(&cand) {
            cand.push('_');
        }
        used.insert(cand.clone());
        out[i] = Some(cand);
    }
    out.into_iter().flatten().collect()
}

/// Longest part of a snapshot's name kept in its identity, so that two
/// identities and a suffix fit in one 255-byte file name.
pub const MAX_IDENT_NAME_BYTES: usize = 64;

/// A snapshot's identity as a file stem: `<name>.<YYYYmmddTHHMMSS>.<nsec>.id<ID>`,
/// the name with anything but ASCII letters, digits and `-_+,=@` (and a
/// leading `-`) replaced by `_` and cut to [`MAX_IDENT_NAME_BYTES`], the
/// creation date in UTC with its
/// nanoseconds, and the snapshot ID made safe likewise. It depends on the
/// snapshot alone, never on other snapshots of the table, so it never
/// changes while the snapshot exists; a snapshot deleted and taken again
/// under the same name gets another date, and so another identity. It holds
/// no space, so that a line of names splits on spaces.
pub fn snapshot_ident(s: &Snapshot) -> String {
    let safe = |t: &str, max: usize| {
        let mut out = String::new();
        for c in t.chars() {
            // ASCII only, so that every tool reads the name as it is
            // written (JSON escapes, locales), never an option (no leading
            // `-`), never hidden and without a dot of its own (the dots
            // part the identity's fields).
            let c = if c.is_ascii_alphanumeric() || "-_+,=@".contains(c) {
                c
            } else {
                '_'
            };
            let c = if out.is_empty() && c == '-' { '_' } else { c };
            if out.len() + c.len_utf8() > max {
                break;
            }
            out.push(c);
        }
        if out.is_empty() {
            "unnamed".into()
        } else {
            out
        }
    };
    let date = jiff::Timestamp::from_second(i64::from(s.date_sec))
        .map(|t| t.strftime("%Y%m%dT%H%M%S").to_string())
        .unwrap_or_else(|_| s.date_sec.to_string());
    format!(
        "{}.{date}.{:09}.id{}",
        safe(&s.name, MAX_IDENT_NAME_BYTES),
        s.date_nsec,
        safe(&s.id, MAX_IDENT_NAME_BYTES)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sn(id: &str, name: &str) -> Snapshot {
        Snapshot {
            index: 0,
            l1_table_offset: 0,
            l1_size: 0,
            id: id.into(),
            name: name.into(),
            date_sec: 0,
            date_nsec: 0,
            vm_clock_nsec: 0,
            vm_state_size: 0,
            disk_size: 0,
            icount: None,
            extra_data_size: 0,
        }
    }

    #[test]
    fn safe_unique_names_are_kept() {
        let s = [sn("1", "aaa"), sn("2", "bbb c"), sn("3", "ünï")];
        assert_eq!(snapshot_stems(&s), ["aaa", "bbb c", "ünï"]);
    }

    #[test]
    fn unusable_and_duplicate_names_get_the_id() {
        let s = [
            sn("1", ""),
            sn("2", "dup"),
            sn("3", "dup"),
            sn("4", "a/b"),
            sn("5", "."),
            sn("6", ".."),
            sn("7", "active"),
            sn("8", &"x".repeat(300)),
            sn("9", "ok"),
        ];
        let got = snapshot_stems(&s);
        assert_eq!(got[0], "unnamed.id1");
        assert_eq!(got[1], "dup.id2");
        assert_eq!(got[2], "dup.id3");
        assert_eq!(got[3], "a_b.id4");
        assert_eq!(got[4], "unnamed.id5");
        assert_eq!(got[5], "unnamed.id6");
        assert_eq!(got[6], "active.id7");
        assert_eq!(got[7], format!("{}.id8", "x".repeat(200)));
        assert_eq!(got[8], "ok");
    }

    #[test]
    fn a_safe_name_equal_to_a_disambiguated_form_keeps_its_name() {
        let s = [sn("1", "dup.id2"), sn("2", "dup"), sn("3", "dup")];
        let got = snapshot_stems(&s);
        assert_eq!(got[0], "dup.id2");
        assert_eq!(got[1], "dup.id2.1");
        assert_eq!(got[2], "dup.id3");
    }

    #[test]
    fn identities_depend_on_the_snapshot_alone() {
        let mut a = sn("3", "night ly/../x");
        a.date_sec = 1_700_000_000;
        a.date_nsec = 42;
        assert_eq!(
            snapshot_ident(&a),
            "night_ly____x.20231114T221320.000000042.id3"
        );
        // The same snapshot among others that share its name: unchanged.
        assert_eq!(snapshot_ident(&a), snapshot_ident(&a.clone()));
        let mut again = a.clone();
        again.date_nsec = 43;
        assert_ne!(snapshot_ident(&a), snapshot_ident(&again));
        assert_eq!(
            snapshot_ident(&sn("1", "..")),
            "__.19700101T000000.000000000.id1"
        );
        assert_eq!(
            snapshot_ident(&sn("1", "")),
            "unnamed.19700101T000000.000000000.id1"
        );
        let long = snapshot_ident(&sn("1", &"é".repeat(100)));
        assert!(
            long.starts_with(&"_".repeat(64)) && long.len() < 120,
            "{long}"
        );
        assert!(snapshot_ident(&sn("1", "-a")).starts_with("_a."));
        assert!(snapshot_ident(&sn("1", "dienstag-ü")).starts_with("dienstag-_."));
    }
}
