//! The command-line interface, defined once: the binary parses it, and the
//! man page and shell completions in packaging/ are generated from it.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::mount::MountArgs;

/// Read-only views of qcow2 images: raw disks for every internal snapshot,
/// and snapshots as chains of external qcow2 layers.
#[derive(Parser)]
#[command(
    name = "qcow2fs",
    version,
    about,
    long_about = "Read-only views of qcow2 images. `qcow2fs mount` shows a folder of \
                  QEMU/KVM disk images as a tree of ordinary files: every qcow2 image \
                  becomes a folder with a raw disk for its current state and for each \
                  internal snapshot, its saved VM state, an info report, and its \
                  snapshots as chains of external qcow2 layers (chain/ and forward/). \
                  Nothing is ever written to the source images."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of info and check, as in `qemu-img --output`.
#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Text,
    /// JSON.
    Json,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Report an image's header, snapshots, table figures and consistency.
    Info {
        /// The qcow2 image.
        image: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Check an image's consistency; exit 0 clean, 1 check not possible,
    /// 2 corruptions, 3 leaks only (as qemu-img check).
    Check {
        /// The qcow2 image.
        image: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Mount IMAGE_DIR read-only at MOUNTPOINT, every qcow2 image a folder.
    Mount(MountArgs),
    /// Write an image's chain of qcow2 layers (the files of chain/ or
    /// forward/, chain.json and SHA256SUMS) into OUTDIR, without a mount;
    /// every file is on disk when it returns.
    Export {
        /// Reverse chain, as in chain/ (the default).
        #[arg(long, conflicts_with = "forward")]
        reverse: bool,
        /// Forward chain, as in forward/.
        #[arg(long)]
        forward: bool,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        /// Write the live state too when another program (a running VM)
        /// holds the image open for writing; otherwise only its snapshots
        /// are written, which do not change under the reader.
        #[arg(long)]
        force_share: bool,
        /// The qcow2 image.
        image: PathBuf,
        /// Folder to write into (created if missing).
        outdir: PathBuf,
    },
}

/// The man pages, in roff, generated from the definitions above:
/// `qcow2fs.1` and one `qcow2fs-<subcommand>.1` each, as (file name, bytes).
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let cmd = Cli::command();
    let mut pages = Vec::new();
    let mut main = Vec::new();
    let _ = clap_mangen::Man::new(cmd.clone()).render(&mut main);
    pages.push(("qcow2fs.1".to_string(), main));
    for sub in cmd.get_subcommands() {
        let name = format!("qcow2fs-{}", sub.get_name());
        let mut page = Vec::new();
        // clap names commands with &'static str; a page is made once per run.
        let leaked: &'static str = name.clone().leak();
        let _ = clap_mangen::Man::new(sub.clone().name(leaked).bin_name(leaked)).render(&mut page);
        pages.push((format!("{name}.1"), page));
    }
    pages
}

/// Completions for `shell` ("bash", "zsh" or "fish").
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "qcow2fs", &mut out);
    out
}
