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
            .map(|w| w.trim_end_matches([',', '.']))
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
