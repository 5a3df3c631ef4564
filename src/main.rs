//! The `qcow2fs` command: argument parsing, logging and exit codes. All the
//! work is done by the library.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use log::LevelFilter;
use qcow2fs::chain::{self, Direction};
use qcow2fs::check::{check_json, check_text};
use qcow2fs::cli::{Cli, Command, Output, outdir};
use qcow2fs::error::io_reason;
use qcow2fs::fuse::mount::{self, mount};
use qcow2fs::report::Info;
use qcow2fs::{Image, OpenOptions};

/// Exit status of a failure, and of a usage error (as qemu-img; `check`
/// keeps 2 and 3 for what it finds).
const FAILURE: u8 = 1;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version print to stdout and succeed.
            return if e.use_stderr() {
                ExitCode::from(FAILURE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Err(e) = init_log(&cli) {
        eprintln!("qcow2fs: {e}");
        return ExitCode::from(FAILURE);
    }
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
                ExitCode::from(FAILURE)
            }
        },
    }
}

/// Set up the log: its level from -v/-q (else RUST_LOG, else warnings),
/// and where it goes: `--log-file`, syslog for the serving copy of
/// `--daemon`, standard error otherwise (with syslog priorities when that
/// is the journal).
fn init_log(cli: &Cli) -> Result<(), String> {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"));
    match (cli.quiet, cli.verbose) {
        (true, _) => b.filter_level(LevelFilter::Error),
        (false, 0) => &mut b,
        (false, 1) => b.filter_level(LevelFilter::Info),
        (false, 2) => b.filter_level(LevelFilter::Debug),
        (false, _) => b.filter_level(LevelFilter::Trace),
    };
    let (log_file, daemon) = match &cli.command {
        Command::Mount(a) => (a.log_file.as_deref(), a.daemon),
        _ => (None, false),
    };
    if let Some(path) = log_file {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: log file: {}", path.display(), io_reason(&e)))?;
        b.write_style(env_logger::WriteStyle::Never)
            .target(env_logger::Target::Pipe(Box::new(f)));
    } else if daemon && mount::is_detached() {
        match Syslog::connect() {
            Ok(s) => {
                let pid = std::process::id();
                b.write_style(env_logger::WriteStyle::Never)
                    .format(move |buf, r| {
                        writeln!(
                            buf,
                            "<{}>qcow2fs[{pid}]: {}",
                            24 + severity(r.level()),
                            r.args()
                        )
                    })
                    .target(env_logger::Target::Pipe(Box::new(s)));
            }
            // Standard error, which is /dev/null once the mount serves.
            Err(e) => eprintln!("qcow2fs: {SYSLOG}: {}; no log", io_reason(&e)),
        }
    } else if stderr_is_journal() {
        b.write_style(env_logger::WriteStyle::Never)
            .format(|buf, r| writeln!(buf, "<{}>{}", severity(r.level()), r.args()));
    }
    b.init();
    Ok(())
}

/// The syslog severity of a log level.
fn severity(l: log::Level) -> u8 {
    match l {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// True when standard error is the journal's stream: systemd sets
/// JOURNAL_STREAM to its device and inode.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    let Some(want) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    want.to_string_lossy() == format!("{}:{}", st.st_dev, st.st_ino)
}

/// The local syslog socket.
const SYSLOG: &str = "/dev/log";

/// A log target that sends each line to syslog as one datagram.
struct Syslog(std::os::unix::net::UnixDatagram);

impl Syslog {
    fn connect() -> std::io::Result<Syslog> {
        let s = std::os::unix::net::UnixDatagram::unbound()?;
        s.connect(SYSLOG)?;
        Ok(Syslog(s))
    }
}

impl Write for Syslog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = buf.strip_suffix(b"\n").unwrap_or(buf);
        if self.0.send(line).is_err() {
            // The syslog daemon restarted: connect again, once.
            if let Ok(s) = Syslog::connect() {
                *self = s;
                let _ = self.0.send(line);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The message of an error about the image at `path`, naming it.
fn named(path: &Path, e: &qcow2fs::Error) -> String {
    let text = e.to_string();
    let p = path.display().to_string();
    if text.contains(&p) {
        text
    } else {
        format!("{p}: {text}")
    }
}

fn info(path: &Path, output: Output) -> ExitCode {
    let opts = OpenOptions::new(qcow2fs::cache::DEFAULT_CACHE_BYTES);
    let info = match Image::open(path, &opts).and_then(|img| Info::gather(&img)) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("qcow2fs: {}", named(path, &e));
            return ExitCode::from(FAILURE);
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
fn check(path: &Path, output: Output) -> ExitCode {
    let opts = OpenOptions::for_check(qcow2fs::cache::DEFAULT_CACHE_BYTES);
    let report = match Image::open(path, &opts).and_then(|img| qcow2fs::check::check(&img)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("qcow2fs: {}", named(path, &e));
            return ExitCode::from(FAILURE);
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
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("qcow2fs: writing the report: {}", io_reason(&e));
            Err(ExitCode::from(FAILURE))
        }
        _ => Ok(()),
    }
}

fn export(path: &Path, out: &Path, forward: bool, force: bool, force_share: bool) -> ExitCode {
    let dir = if forward {
        Direction::Forward
    } else {
        Direction::Reverse
    };
    let old = match outdir::prepare(out, force) {
        Ok(old) => old,
        Err(e) => {
            eprintln!("qcow2fs: {e}");
            return ExitCode::from(FAILURE);
        }
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
    let use_ = if !force_share && qcow2fs::image::lock::in_use(path) {
        eprintln!(
            "qcow2fs: {} is in use by another program (a running VM): writing its snapshots only (--force-share writes the live state too)",
            path.display()
        );
        chain::Use::Written
    } else {
        chain::Use::Rest
    };
    // A chain over a backing file that cannot be read is refused before
    // anything is written, by an error naming the image that uses it.
    let r = Image::open(path, &opts).and_then(|img| {
        img.backing_readable()?;
        chain::export(&img, dir, use_, out, force, &mut progress)
    });
    bar.finish_and_clear();
    if let Err(e) = r {
        eprintln!("qcow2fs: {}", named(path, &e));
        return ExitCode::from(FAILURE);
    }
    if let Err(e) = outdir::remove_stale(out, &old) {
        eprintln!("qcow2fs: {e}");
        return ExitCode::from(FAILURE);
    }
    ExitCode::SUCCESS
}
