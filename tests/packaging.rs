//! The man pages and shell completions in packaging/ are generated from the
//! command-line definitions; this test keeps them in step with `--help`.
//! Regenerate with `QCOW2FS_REGENERATE=1 cargo test --test packaging`.

mod common;
use common::*;

use std::path::PathBuf;

use clap_complete::Shell;

fn packaging() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packaging")
}

fn expected() -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = qcow2fs::cli::man_pages()
        .into_iter()
        .map(|(n, b)| (packaging().join("man").join(n), b))
        .collect();
    for (shell, name) in [
        (Shell::Bash, "qcow2fs.bash"),
        (Shell::Zsh, "_qcow2fs"),
        (Shell::Fish, "qcow2fs.fish"),
    ] {
        v.push((
            packaging().join("completions").join(name),
            qcow2fs::cli::completions(shell),
        ));
    }
    v
}

#[test]
fn man_pages_and_completions_are_generated_from_the_cli() {
    let regenerate = std::env::var_os("QCOW2FS_REGENERATE").is_some();
    for (path, bytes) in expected() {
        if regenerate {
            std::fs::write(&path, &bytes).unwrap();
        }
        let have = std::fs::read(&path).unwrap_or_default();
        assert!(
            have == bytes,
            "{} is out of date: run QCOW2FS_REGENERATE=1 cargo test --test packaging",
            path.display()
        );
    }
}

#[test]
fn every_option_of_help_is_in_the_man_pages_and_completions() {
    let pages: Vec<String> = qcow2fs::cli::man_pages()
        .into_iter()
        .map(|(_, b)| String::from_utf8(b).unwrap())
        .collect();
    let man = pages.join("\n").replace("\\-", "-");
    let bash = String::from_utf8(qcow2fs::cli::completions(Shell::Bash)).unwrap();
    for sub in ["info", "check", "mount", "export"] {
        let (_, help, _) = qcow2fs(&[sub, "--help"]);
        let options: Vec<&str> = help
            .split_whitespace()
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(|w| w.trim_end_matches([',', '.', ')', ';']))
            .collect();
        assert!(!options.is_empty(), "{sub}: {help}");
        for o in options {
            assert!(man.contains(o), "{sub}: {o} is not in the man pages");
            assert!(
                bash.contains(o),
                "{sub}: {o} is not in the bash completions"
            );
        }
        assert!(man.contains(&format!("qcow2fs-{sub}")));
    }
}

/// Every page, as (file name, text with roff's escapes of '-' undone).
fn pages() -> Vec<(String, String)> {
    qcow2fs::cli::man_pages()
        .into_iter()
        .map(|(n, b)| (n, String::from_utf8(b).unwrap().replace("\\-", "-")))
        .collect()
}

#[test]
fn man_pages_carry_the_hand_written_sections() {
    for (name, text) in pages() {
        let sections: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix(".SH "))
            .map(|t| t.trim_matches('"'))
            .collect();
        let mut want = vec![
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "EXAMPLES",
            "EXIT STATUS",
            "ENVIRONMENT",
            "SEE ALSO",
        ];
        if name == "qcow2fs.1" || name == "qcow2fs-mount.1" {
            want.extend(["SIGNALS", "FILES"]);
        }
        for w in want {
            assert!(
                sections.contains(&w),
                "{name}: no {w} section: {sections:?}"
            );
        }
        // The tree of a mount is described where the mount is.
        if name == "qcow2fs.1" || name == "qcow2fs-mount.1" {
            assert!(
                text.contains("chain/vm_snapshot[0].qcow2"),
                "{name}: no tree"
            );
        }
        // Every option in the synopsis shows the name of its value.
        let synopsis = text
            .split(".SH SYNOPSIS\n")
            .nth(1)
            .and_then(|t| t.lines().next())
            .unwrap();
        assert!(!synopsis.contains("[\\fB-o \\fR]"), "{name}: {synopsis}");
        if name == "qcow2fs-mount.1" {
            for o in [
                "-o\\fR \\fIOPTIONS",
                "--cache-size\\fR \\fISIZE",
                "--log-file\\fR \\fIPATH",
                "--threads\\fR \\fIN",
            ] {
                assert!(synopsis.contains(o), "{o}: {synopsis}");
            }
        }
    }
}

#[test]
fn man_shows_the_mount_page_with_examples_and_exit_status() {
    let page = packaging().join("man/qcow2fs-mount.1");
    let out = std::process::Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output();
    let text = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        // Without man(1), groff renders the page as man would.
        _ => run("groff", &["-man", "-Tutf8", page.to_str().unwrap()]),
    };
    for heading in [
        "EXAMPLES",
        "EXIT STATUS",
        "SIGNALS",
        "ENVIRONMENT",
        "FILES",
        "SEE ALSO",
    ] {
        assert!(
            text.lines().any(|l| l.trim_end() == heading),
            "no {heading}:\n{text}"
        );
    }
    assert!(
        text.contains("qcow2fs mount --daemon /var/lib/libvirt/images /mnt/vmsnap"),
        "{text}"
    );
    assert!(
        text.contains("QCOW2FS_BIN") && text.contains("RUST_LOG"),
        "{text}"
    );
}

/// Pages that the pages may name besides their own: those of the packages
/// qcow2fs runs with (qemu-utils, fuse3, mount, coreutils).
const OTHER_PAGES: &[&str] = &[
    "qemu-img(1)",
    "mount(8)",
    "fstab(5)",
    "fusermount3(1)",
    "sha256sum(1)",
];

/// Every `name(N)` a text names.
fn references(text: &str) -> Vec<String> {
    let plain = text
        .replace("\\fB", "")
        .replace("\\fR", "")
        .replace("\\fI", "");
    let b = plain.as_bytes();
    let mut out = Vec::new();
    for (i, w) in b.windows(3).enumerate() {
        if w[0] == b'(' && w[1].is_ascii_digit() && w[2] == b')' {
            let start = b[..i]
                .iter()
                .rposition(|c| !(c.is_ascii_alphanumeric() || b"-_.".contains(c)))
                .map_or(0, |p| p + 1);
            if start < i {
                out.push(format!("{}({})", &plain[start..i], w[1] as char));
            }
        }
    }
    out
}

#[test]
fn no_page_names_a_page_that_does_not_exist() {
    let pages = pages();
    let ours: Vec<String> = pages.iter().map(|(n, _)| n.replace(".1", "(1)")).collect();
    let mut named = 0;
    for (name, text) in &pages {
        for r in references(text) {
            named += 1;
            assert!(
                ours.contains(&r) || OTHER_PAGES.contains(&r.as_str()),
                "{name} names {r}, which is neither a page of ours nor one of {OTHER_PAGES:?}"
            );
        }
    }
    assert!(named > 20, "references were not found");
    assert!(!pages.iter().any(|(_, t)| t.contains("qcow2fs-help")));
    // The unit's Documentation= and the default file name pages of ours.
    for f in ["qcow2fs.service", "qcow2fs.default"] {
        let text = std::fs::read_to_string(packaging().join(f)).unwrap();
        for r in references(&text) {
            assert!(ours.contains(&r), "{f} names {r}");
        }
    }
    // Where man can look pages up, the others are installed.
    let man_works = std::process::Command::new("man")
        .args(["-w", "man"])
        .output()
        .is_ok_and(|o| o.status.success());
    if man_works {
        for p in OTHER_PAGES {
            let (page, section) = p.trim_end_matches(')').split_once('(').unwrap();
            let found = std::process::Command::new("man")
                .args(["-w", section, page])
                .output()
                .unwrap();
            assert!(found.status.success(), "{p} is not installed here");
        }
    }
}

#[test]
fn the_unit_line_keeps_image_dir_when_options_is_empty() {
    let unit = std::fs::read_to_string(packaging().join("qcow2fs.service")).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .replace("/usr/bin/qcow2fs", bin().to_str().unwrap());
    // As systemd and the shell both expand it: ${OPTIONS} stays one word,
    // $ARGS splits. A folder that does not exist shows that IMAGE_DIR
    // reached its place.
    for (options, args) in [("", ""), ("allow_other", ""), ("", "-v --threads 2")] {
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("exec {line}")])
            .env("OPTIONS", options)
            .env("ARGS", args)
            .env("IMAGE_DIR", "/nonexistent/images")
            .env("MOUNTPOINT", "/nonexistent/mnt")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("/nonexistent/images: IMAGE_DIR: No such file or directory"),
            "OPTIONS={options:?} ARGS={args:?}: {err}"
        );
    }
    let default = std::fs::read_to_string(packaging().join("qcow2fs.default")).unwrap();
    for v in ["IMAGE_DIR=", "MOUNTPOINT=", "OPTIONS=", "ARGS="] {
        assert!(default.lines().any(|l| l.starts_with(v)), "{v}");
    }
}
