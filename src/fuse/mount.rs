//! The `mount` command: options, checks before mounting, daemonizing, and a
//! clean unmount on SIGINT or SIGTERM.

use std::path::{Path, PathBuf};

use clap::Args;
use fuser::{Config, MountOption, SessionACL};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};

use crate::error::{Error, Result};
use crate::fuse::{Fs, MAX_READ, REQUEST_SIZE};
use crate::tree::{Tree, TreeOptions};

mod checks;
use checks::{check_contents, check_places, warn_damaged_magic};

/// Arguments of `qcow2fs mount`.
#[derive(Args, Debug)]
pub struct MountArgs {
    /// Folder of images to show.
    pub image_dir: PathBuf,
    /// Where to mount it: an empty folder outside IMAGE_DIR.
    pub mountpoint: PathBuf,
    /// Mount options, comma-separated: allow_other, allow_root,
    /// default_permissions, nonempty, fsname=NAME, subtype=NAME (ro is
    /// implied; an empty list is allowed).
    #[arg(
        short = 'o',
        long = "options",
        value_name = "OPTIONS",
        value_delimiter = ','
    )]
    pub options: Vec<String>,
    /// Detach once the mount is ready; the log then goes to syslog, or to
    /// --log-file.
    #[arg(long)]
    pub daemon: bool,
    /// Append the log to PATH (instead of standard error, or of syslog
    /// with --daemon).
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Cache budget for L2 tables, refcount blocks and decompressed clusters
    /// (bytes, or with a K, M or G suffix; more than 0).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_cache_size)]
    pub cache_size: u64,
    /// Follow backing files that lie outside IMAGE_DIR.
    #[arg(long)]
    pub allow_outside_backing: bool,
    /// Serve active.raw and the layers built on the active state even of
    /// images a running VM has open for writing (refused with EBUSY
    /// otherwise; snapshot views are always served).
    #[arg(long)]
    pub force_share: bool,
    /// Threads serving requests (1 to 1024).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = parse_threads)]
    pub threads: usize,
}

impl MountArgs {
    /// The mount options, trimmed, without empty ones.
    fn option_list(&self) -> impl Iterator<Item = &str> {
        self.options
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }
}

/// Parse "64M", "1G", "4096".
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("'{s}' is not a size such as 64M"))
}

/// A size as [`parse_size`] reads it, refused when it is 0: a cache of
/// nothing would read every table again at every request.
fn parse_cache_size(s: &str) -> std::result::Result<u64, String> {
    match parse_size(s)? {
        0 => Err("the cache size must be more than 0 (the default is 64M)".into()),
        n => Ok(n),
    }
}

/// Most threads that may serve one mount.
const MAX_THREADS: usize = 1024;

/// A number of serving threads, 1 to [`MAX_THREADS`].
fn parse_threads(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        Ok(_) => Err(format!(
            "'{s}' threads: give 1 to {MAX_THREADS} (the default is 4)"
        )),
        Err(_) => Err(format!("'{s}' is not a number of threads")),
    }
}

/// A mount error that no other error caused.
fn fail<T>(what: String) -> Result<T> {
    Err(Error::Mount { what, source: None })
}

/// The kernel device number ("major:minor") of the mount at `mp`, from
/// /proc/self/mountinfo, without touching the mount itself.
fn mount_device(mp: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = mp.as_os_str().as_encoded_bytes();
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let point = unescape_mountinfo(f.get(4)?);
            (point == want).then(|| f.get(2).map(|s| s.to_string()))?
        })
        .next_back()
}

/// A path field of /proc/self/mountinfo with its octal escapes (`\040` for
/// a space, `\011`, `\012`, `\134`) decoded.
fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).and_then(|d| {
            let s = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(s, 8).ok()
        });
        match (b[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Options of mount(8) and fstab accepted and ignored.
const GENERIC_OPTIONS: &[&str] = &[
    "ro",
    "defaults",
    "nodev",
    "dev",
    "nosuid",
    "suid",
    "noexec",
    "exec",
    "noatime",
    "atime",
    "relatime",
    "strictatime",
    "nodiratime",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "_netdev",
    "nofail",
    "async",
    "sync",
];

fn config(args: &MountArgs) -> Result<Config> {
    let mut c = Config::default();
    c.mount_options = vec![MountOption::RO, MountOption::NoDev, MountOption::NoSuid];
    let mut fsname = None;
    let mut subtype = "qcow2fs".to_string();
    let mut default_permissions = false;
    for o in args.option_list() {
        match o.split_once('=') {
            Some(("fsname", v)) => fsname = Some(v.to_string()),
            Some(("subtype", v)) => subtype = v.to_string(),
            None if o == "allow_other" => {
                c.acl = SessionACL::All;
                // Other users must pass the kernel's permission check.
                default_permissions = true;
            }
            None if o == "allow_root" => c.acl = SessionACL::RootAndOwner,
            None if o == "default_permissions" => default_permissions = true,
            // Checked before mounting (see `check_contents`).
            None if o == "nonempty" => {}
            None if o == "rw" => {
                return fail("qcow2fs mounts are read-only; option 'rw' is refused".into());
            }
            // Generic options that mount(8) and fstab pass along: the mount
            // is always ro, nodev and nosuid; the rest do not apply.
            None if GENERIC_OPTIONS.contains(&o) || o.starts_with("x-") => {}
            Some(("comment", _)) => {}
            _ => return fail(format!("unknown mount option '{o}'")),
        }
    }
    if default_permissions {
        c.mount_options.push(MountOption::DefaultPermissions);
    }
    c.mount_options.push(MountOption::FSName(
        fsname.unwrap_or_else(|| args.image_dir.display().to_string()),
    ));
    c.mount_options.push(MountOption::Subtype(subtype));
    c.n_threads = Some(args.threads);
    c.clone_fd = true;
    Ok(c)
}

/// `path` made absolute (so that it still names the same folder once the
/// serving copy of `--daemon` has left the folder it was started in), or
/// an error naming it as `what`.
fn folder(path: &Path, what: &str) -> Result<std::path::PathBuf> {
    match std::fs::canonicalize(path) {
        Ok(p) if p.is_dir() => Ok(p),
        Ok(_) => fail(format!("{}: {what} is not a folder", path.display())),
        Err(e) => Err(Error::mount(format!("{}: {what}", path.display()), e)),
    }
}

/// Mount and serve until unmounted or signalled.
pub fn mount(args: &MountArgs) -> Result<()> {
    let cfg = config(args)?;
    let image_dir = folder(&args.image_dir, "IMAGE_DIR")?;
    let mp = folder(&args.mountpoint, "MOUNTPOINT")?;
    check_places(&image_dir, &mp)?;
    if mount_device(&mp).is_some() {
        return fail(format!(
            "{}: MOUNTPOINT is busy (something is mounted there; findmnt {} tells what)",
            mp.display(),
            mp.display()
        ));
    }
    check_contents(&image_dir, &mp, args.option_list().any(|o| o == "nonempty"))?;
    let detached = std::env::var_os(DETACHED_ENV).is_some();
    if detached {
        // The serving copy that `--daemon` started: a session of its own,
        // no hold on the folder it was started in (both paths are resolved).
        let _ = nix::unistd::setsid();
        let _ = std::env::set_current_dir("/");
    } else if args.daemon {
        return daemonize(&mp);
    }
    warn_damaged_magic(&image_dir);
    let tree = Tree::new(
        &image_dir,
        &TreeOptions {
            cache_bytes: args.cache_size,
            allow_outside_backing: args.allow_outside_backing,
            force_share: args.force_share,
        },
    )?;
    // Block the signals before any thread starts, so that only the waiter
    // below receives them.
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block()
        .map_err(|e| Error::mount("blocking signals", e))?;
    let (session, unmount) = start_session(Fs::new(tree), &mp, &cfg)?;
    raise_readahead(&mp);
    std::thread::spawn(move || unmount_on_signal(set, unmount));
    // The mount exists; requests wait in the kernel's queue until the
    // session reads them, which it does next. A unit of Type=notify is
    // ready from here, not before.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        log::debug!("sd_notify: {e}");
    }
    if detached {
        // `--daemon` has returned, and no longer reads what this copy says.
        silence_stderr();
    }
    session
        .run()
        .map_err(|e| Error::mount("serving the mount", e))
}

/// How to unmount a session, from another thread.
type Unmount = Box<dyn FnMut() + Send>;

/// Mount `fs` at `mp` and return its session, not yet serving. As root,
/// mount(2) directly, so that the file system type carries the subtype
/// (fuse.qcow2fs); otherwise let fuser go through fusermount.
fn start_session(fs: Fs, mp: &Path, cfg: &Config) -> Result<(fuser::Session<Fs>, Unmount)> {
    let failed = |e: std::io::Error| Error::mount(format!("{}: mount failed", mp.display()), e);
    match kernel_mount(mp, cfg) {
        Ok(fd) => {
            let session = fuser::Session::from_fd(fs, fd, cfg.acl, cfg.clone()).map_err(failed)?;
            let target = mp.to_path_buf();
            Ok((session, Box::new(move || detach(&target))))
        }
        Err(e) if e.raw_os_error() == Some(Errno::EPERM as i32) => {
            let mut session = fuser::Session::new(fs, mp, cfg).map_err(failed)?;
            let mut u = session.unmount_callable();
            let unmount = move || {
                if let Err(e) = u.unmount() {
                    log::warn!("unmount: {e}");
                }
            };
            Ok((session, Box::new(unmount)))
        }
        Err(e) => Err(failed(e)),
    }
}

/// Wait for SIGINT or SIGTERM (blocked in `set` by every thread), then
/// unmount: the session then ends and `mount` returns.
fn unmount_on_signal(set: SigSet, mut unmount: Unmount) {
    match set.wait() {
        Ok(sig) => log::info!("{sig}: unmounting"),
        Err(e) => log::warn!("waiting for signals: {e}; unmounting"),
    }
    unmount();
}

/// Open /dev/fuse and mount it read-only at `mp` with type
/// `fuse.<subtype>` and read requests of [`REQUEST_SIZE`]. Needs
/// CAP_SYS_ADMIN (EPERM otherwise).
fn kernel_mount(mp: &Path, cfg: &Config) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::mount::MsFlags;
    use std::os::fd::{AsRawFd, OwnedFd};
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let fd: OwnedFd = dev.into();
    let mut fsname = "qcow2fs".to_string();
    let mut subtype = "qcow2fs".to_string();
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    let mut data = format!(
        "fd={},rootmode=40000,user_id={uid},group_id={gid},max_read={REQUEST_SIZE}",
        fd.as_raw_fd()
    );
    for o in &cfg.mount_options {
        match o {
            MountOption::FSName(n) => fsname = n.clone(),
            MountOption::Subtype(t) => subtype = t.clone(),
            MountOption::DefaultPermissions => data.push_str(",default_permissions"),
            _ => {}
        }
    }
    if cfg.acl != SessionACL::Owner {
        data.push_str(",allow_other");
    }
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let ty = format!("fuse.{subtype}");
    nix::mount::mount(
        Some(fsname.as_str()),
        mp,
        Some(ty.as_str()),
        flags,
        Some(data.as_str()),
    )?;
    Ok(fd)
}

/// Unmount what `kernel_mount` mounted; the session then ends.
fn detach(mp: &Path) {
    if let Err(e) = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH) {
        log::warn!("unmount {}: {e}", mp.display());
    }
}

/// As root, let the kernel read ahead [`MAX_READ`] at a time: a window of
/// several requests, served side by side.
fn raise_readahead(mp: &Path) {
    let Some(dev) = mount_device(mp) else { return };
    let p = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    if let Err(e) = std::fs::write(&p, format!("{}", MAX_READ / 1024)) {
        log::debug!("{p}: {e}");
    }
}

/// Set in the environment of the copy of `qcow2fs mount` that `--daemon`
/// starts to serve the mount.
const DETACHED_ENV: &str = "QCOW2FS_DETACHED";

/// True in the copy of `qcow2fs mount` that `--daemon` started to serve
/// the mount.
pub fn is_detached() -> bool {
    std::env::var_os(DETACHED_ENV).is_some()
}

/// How long `--daemon` waits for the serving copy to mount.
const DAEMON_START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Detach: start this command again, detached, to serve the mount, and
/// return once the mount exists (or fail with the server's own exit).
fn daemonize(mp: &Path) -> Result<()> {
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().map_err(|e| Error::mount("own executable", e))?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(DETACHED_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::mount("starting the server", e))?;
    // Read what the server says as it says it, so that it never waits on a
    // full pipe; it is shown if the server exits before mounting.
    let said = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut said = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut said);
            said
        })
    });
    let start = std::time::Instant::now();
    loop {
        if mount_device(mp).is_some() {
            return Ok(());
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                // What it said on the way out (its own "qcow2fs: " dropped).
                let said = said.and_then(|t| t.join().ok()).unwrap_or_default();
                let said = said.trim().trim_start_matches("qcow2fs: ");
                return fail(if said.is_empty() {
                    format!("the server exited before mounting ({status})")
                } else {
                    said.to_string()
                });
            }
            Ok(None) => {}
            Err(e) => return Err(Error::mount("waiting for the server", e)),
        }
        if start.elapsed() > DAEMON_START_TIMEOUT {
            return fail(format!(
                "{}: not mounted after {DAEMON_START_TIMEOUT:?}",
                mp.display()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Point standard error at /dev/null: the serving copy of `--daemon` once
/// it is mounted, when `--daemon` has stopped reading it.
fn silence_stderr() {
    match std::fs::OpenOptions::new().write(true).open("/dev/null") {
        Ok(null) => {
            if let Err(e) = nix::unistd::dup2_stderr(&null) {
                log::debug!("stderr to /dev/null: {e}");
            }
        }
        Err(e) => log::debug!("/dev/null: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(super::unescape_mountinfo("/mnt/a\\040b"), b"/mnt/a b");
        assert_eq!(super::unescape_mountinfo("/x\\134y\\011"), b"/x\\y\t");
        assert_eq!(super::unescape_mountinfo("/plain"), b"/plain");
    }
}
