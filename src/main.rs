//! The `qcow2fs` command: argument parsing, logging and exit codes. All the
//! work is done by the library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use qcow2fs::chain::{self, Direction};
use qcow2fs::cli::{Cli, Command, Output};
use qcow2fs::mount::mount;
use qcow2fs::report::{Info, check_json, check_text};
use qcow2fs::{Image, OpenOptions};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Info { image, output } => info(&image, output),
        Command::Check { image, output } => check(&image, output),
        Command::Export {
            forward,
            force,
            force_share,
            image,
            outdir,
            ..
        } => export(&image, &outdir, forward, force, force_share),
        Command::Mount(args) => match mount(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("qcow2fs: {e}");
                ExitCode::from(1)
            }
        },
    }
}

fn info(path: &std::path::Path, output: Output) -> ExitCode {
    let opts = OpenOptions::new(qcow2fs::cache::DEFAULT_CACHE_BYTES);
    let info = match Image::open(path, &opts).and_then(|img| Info::gather(&img)) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("qcow2fs: {e}");
            return ExitCode::from(1);
        }
    };
    let text = match output {
        Output::Json => format!("{:#}\n", info.to_json()),
        Output::Text => info.to_text(),
    };
    match emit(&text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// Check as `qemu-img check` does: the image is read as it reads it (zeros
/// past the end of the file), so a truncated image is counted, not refused.
fn check(path: &std::path::Path, output: Output) -> ExitCode {
    let opts = OpenOptions::for_check(qcow2fs::cache::DEFAULT_CACHE_BYTES);
    let report = match Image::open(path, &opts).and_then(|img| qcow2fs::check::check(&img)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("qcow2fs: {e}");
            return ExitCode::from(1);
        }
    };
    let text = match output {
        Output::Json => format!("{:#}\n", check_json(&report)),
        Output::Text => format!("{}verdict: {}\n", check_text(&report), report.verdict()),
    };
    match emit(&text) {
        Ok(()) => ExitCode::from(report.exit_code() as u8),
        Err(code) => code,
    }
}

/// Write `text` to standard output. A reader that went away early (`| head`)
/// is not an error; any other failure to write is.
fn emit(text: &str) -> Result<(), ExitCode> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("qcow2fs: writing the report: {e}");
            Err(ExitCode::from(1))
        }
        _ => Ok(()),
    }
}

fn export(
    path: &std::path::Path,
    out: &std::path::Path,
    forward: bool,
    force: bool,
    force_share: bool,
) -> ExitCode {
    let dir = if forward {
        Direction::Forward
    } else {
        Direction::Reverse
    };
    let opts = OpenOptions::new(qcow2fs::cache::DEFAULT_CACHE_BYTES);
    // A bar on a terminal; nothing when stderr is a file or a pipe.
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "exporting {bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    // An image a running VM writes: its snapshots, which do not change
    // under us, unless the live state is asked for.
    let use_ = if !force_share && qcow2fs::lock::in_use(path) {
        eprintln!(
            "qcow2fs: {} is in use by another program (a running VM): writing its snapshots only (--force-share writes the live state too)",
            path.display()
        );
        chain::Use::Written
    } else {
        chain::Use::Rest
    };
    let r = Image::open(path, &opts)
        .and_then(|img| chain::export(&img, dir, use_, out, force, &mut progress));
    bar.finish_and_clear();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qcow2fs: {e}");
            ExitCode::from(1)
        }
    }
}
