//! The command-line interface, defined once: the binary parses it, and the
//! man pages (with the hand-written sections of `cli/man.rs`) and shell
//! completions in packaging/ are generated from it.

use std::path::PathBuf;

use clap::{ArgAction, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::fuse::mount::MountArgs;

mod man;
pub mod outdir;

pub use man::man_pages;

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
    /// Log more: -v adds what is done (info), -vv debugging detail, -vvv
    /// everything (the default is warnings and errors; RUST_LOG applies
    /// when neither -v nor -q is given).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log errors only.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
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
    /// Check an image's consistency; exit 0 clean, 1 check not possible
    /// (or a usage error), 2 corruptions, 3 leaks only (as qemu-img check).
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
        /// Write into an OUTDIR that is not empty: the files of the chain
        /// it holds are replaced, and those the new chain does not have are
        /// removed (other files are left alone).
        #[arg(long)]
        force: bool,
        /// Write the live state too when another program (a running VM)
        /// holds the image open for writing; otherwise only its snapshots
        /// are written, which do not change under the reader.
        #[arg(long)]
        force_share: bool,
        /// The qcow2 image.
        image: PathBuf,
        /// Folder to write into (created if missing; refused when it is
        /// not empty, unless --force).
        outdir: PathBuf,
    },
}

/// Completions for `shell` ("bash", "zsh" or "fish").
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "qcow2fs", &mut out);
    out
}
