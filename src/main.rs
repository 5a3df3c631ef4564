//! The `qcow2fs` command: argument parsing, logging and exit codes. All the
//! work is done by the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use qcow2fs::chain::{self, Direction};
use qcow2fs::mount::{MountArgs, mount};
use qcow2fs::report::{Info, check_text};
use qcow2fs::{Image, OpenOptions};

/// Read-only views of qcow2 images: raw disks for every internal snapshot,
/// and snapshots as chains of external qcow2 layers.
#[derive(Parser)]
#[command(name = "qcow2fs", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Output format of info and check, as in `qemu-img --output`.
#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
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
    /// forward/, and chain.json) into OUTDIR, without a mount.
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
        /// The qcow2 image.
        image: PathBuf,
        /// Folder to write into (created if missing).
        outdir: PathBuf,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Info { image, output } => info(&image, output, false),
        Command::Check { image, output } => info(&image, output, true),
        Command::Export {
            forward,
            force,
            image,
            outdir,
            ..
        } => export(&image, &outdir, forward, force),
        Command::Mount(args) => match mount(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("qcow2fs: {e}");
                ExitCode::from(1)
            }
        },
    }
}

fn info(path: &std::path::Path, output: Output, check_only: bool) -> ExitCode {
    let opts = OpenOptions::new(qcow2fs::cache::DEFAULT_CACHE_BYTES);
    let report = Image::open(path, &opts).and_then(|img| Info::gather(&img));
    let info = match report {
        Ok(i) => i,
        Err(e) => {
            eprintln!("qcow2fs: {e}");
            return ExitCode::from(1);
        }
    };
    match (output, check_only) {
        (Output::Json, false) => println!("{:#}", info.to_json()),
        (Output::Json, true) => println!("{:#}", info.to_json()["check"]),
        (Output::Text, false) => print!("{}", info.to_text()),
        (Output::Text, true) => {
            print!("{}", check_text(info.check()));
            println!("verdict: {}", info.check().verdict());
        }
    }
    if check_only {
        ExitCode::from(info.check().exit_code() as u8)
    } else {
        ExitCode::SUCCESS
    }
}

fn export(path: &std::path::Path, out: &std::path::Path, forward: bool, force: bool) -> ExitCode {
    use std::io::{IsTerminal, Write};
    let dir = if forward {
        Direction::Forward
    } else {
        Direction::Reverse
    };
    let opts = OpenOptions::new(qcow2fs::cache::DEFAULT_CACHE_BYTES);
    let tty = std::io::stderr().is_terminal();
    let mut last = 0u64;
    let mut progress = |done: u64, total: u64| {
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        if tty && (pct != last || done == total) {
            last = pct;
            let _ = write!(
                std::io::stderr(),
                "\rexporting: {pct:3}% ({} of {} MiB)",
                done >> 20,
                total >> 20
            );
        }
    };
    let r = Image::open(path, &opts)
        .and_then(|img| chain::export(&img, dir, out, force, &mut progress));
    if tty {
        eprintln!();
    }
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qcow2fs: {e}");
            ExitCode::from(1)
        }
    }
}
