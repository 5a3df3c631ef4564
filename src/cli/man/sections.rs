//! The hand-written parts of the man pages: DESCRIPTION with the tree,
//! EXAMPLES, EXIT STATUS, ENVIRONMENT, SIGNALS, FILES and SEE ALSO of every
//! command.

/// What a mount shows, as in the README.
const TREE: &str = "\
MOUNTPOINT/                        mirrors IMAGE_DIR: folders stay folders
  README.txt                       a file that is not qcow2: shown as is
  vm.qcow2/                        a qcow2 file (known by its magic)
    info, info.json                header, snapshots, tables, check, layers
    active.raw                     the disk as the VM sees it now
    snapshots/NAME.raw             one raw disk per internal snapshot
    snapshots/NAME.vmstate         saved VM state, where there is one
    chain/vm_snapshot[0].qcow2     reverse chain: snapshot[0] -> ... -> active;
    chain/vm_active.qcow2            active is complete, older layers
                                     hold what differs
    chain/base.img                   backing files, passed through
    chain/chain.json                 the layers and the states they stand for
    chain/SHA256SUMS                 sha256sum -c sums of every other file
    forward/NAME.qcow2 ...           forward chain: the oldest snapshot
    forward/active.qcow2             complete, each later layer what changed
    forward/chain.json, SHA256SUMS
    incremental/INDEX                snapshots named by identity, for nightly
    incremental/IDENT.qcow2 ...        replication: INDEX, layers, FILE.sha256";

/// One block of a hand-written section of a man page.
pub(super) enum Block {
    /// A paragraph.
    Para(&'static str),
    /// Lines shown as they are: commands, the tree.
    Verbatim(&'static str),
    /// A term, and what it means.
    Item(&'static str, &'static str),
    /// A paragraph made at run time.
    Text(String),
}

pub(super) use Block::{Item, Para, Text, Verbatim};

/// A hand-written section: its title and its blocks.
pub(super) type Section = (&'static str, Vec<Block>);

const RESTORE_EXAMPLE: &str = "\
# examples/restore.sh of the source: which layer stands for which snapshot
# (no JSON to read):
sh examples/restore.sh /backup/vm
# restore snapshot monday as a new, writable qcow2 disk:
sh examples/restore.sh /backup/vm monday /var/lib/libvirt/images/vm-monday.qcow2
# or by hand; quote the name: [1] is a shell pattern
qemu-img convert -O qcow2 '/backup/vm/vm_snapshot[1].qcow2' vm-monday.qcow2";

const LOGGING: &str = "Logging: warnings and errors by default, more with -v, -vv or \
    -vvv, errors only with -q (RUST_LOG, as for env_logger, applies when neither is \
    given). Without --daemon the log goes to standard error (under systemd, to the \
    journal, with syslog priorities). With --daemon it goes to syslog (/dev/log, which \
    journald also reads), as the daemon facility with the tag qcow2fs. --log-file PATH \
    appends it to PATH instead, in either case (the file is opened once: rotate it \
    with copytruncate). An image that cannot be read is \
    logged once, with its path and the reason; a file named .qcow2 that lacks the \
    qcow2 magic is logged when the mount starts.";

const REFUSALS: &str = "Before mounting, the mountpoint is checked, and the mount is \
    refused (exit status 1, nothing mounted, both paths named) when MOUNTPOINT is \
    IMAGE_DIR or lies inside it, when IMAGE_DIR lies inside MOUNTPOINT, when something \
    is mounted at MOUNTPOINT already, when MOUNTPOINT holds files (unless -o nonempty) \
    and, even with -o nonempty, when MOUNTPOINT holds disk images: arguments given in \
    the wrong order would otherwise hide the images from the VMs that use them.";

const SEE_ALSO_TOOLS: &str = "qemu-img(1), mount(8), fstab(5), fusermount3(1), sha256sum(1)";

fn exit_status_common() -> Block {
    Item(
        "1",
        "Failure: the message on standard error names the file and the reason. \
         A usage error (an unknown option, a missing argument, a bad value) also \
         exits 1, as qemu-img does.",
    )
}

fn environment() -> Section {
    (
        "ENVIRONMENT",
        vec![
            Item(
                "RUST_LOG",
                "What to log, as for env_logger: a level (error, warn, info, debug, \
                 trace) or per module (qcow2fs=debug). -v and -q take precedence.",
            ),
            Item(
                "JOURNAL_STREAM",
                "Set by systemd when standard error is the journal: log lines then \
                 carry syslog priorities instead of times.",
            ),
            Item(
                "QCOW2FS_BIN",
                "The qcow2fs binary that the mount helper mount.qcow2fs runs \
                 (default: qcow2fs, found on PATH).",
            ),
            Item(
                "QCOW2FS_DETACHED",
                "Set by --daemon in the copy of qcow2fs mount it starts to serve the \
                 mount; not to be set by hand.",
            ),
        ],
    )
}

fn signals() -> Section {
    (
        "SIGNALS",
        vec![
            Item(
                "SIGINT, SIGTERM",
                "Unmount (lazily, as umount -l: files open at that moment stay \
                 readable until closed) and exit 0. Unmounting with umount or \
                 fusermount3 -u also ends the process at once.",
            ),
            Item(
                "SIGKILL",
                "Leaves a dead mount: its files answer \"Transport endpoint is not \
                 connected\". umount -l MOUNTPOINT clears it; the source images are \
                 untouched.",
            ),
        ],
    )
}

fn files() -> Section {
    (
        "FILES",
        vec![
            Para("What a mount shows:"),
            Verbatim(TREE),
            Para(
                "Files copied out of a mount keep its modes: 0444 files in 0555 folders. \
                 Before deleting an old backup as a user other than root, make it \
                 writable: chmod -R u+w BACKUP. A layer copied out is not a VM disk to \
                 use in place (it is read-only and needs every newer layer beside it): \
                 qemu-img convert it into a new image, which is writable.",
            ),
            Item(
                "/etc/default/qcow2fs",
                "IMAGE_DIR, MOUNTPOINT, OPTIONS (may be empty) and ARGS (more \
                 arguments, such as -v) of qcow2fs.service.",
            ),
            Item(
                "/lib/systemd/system/qcow2fs.service",
                "The unit: Type=notify, ready once the mount serves; stopped with \
                 SIGTERM.",
            ),
            Item(
                "/sbin/mount.fuse.qcow2fs, /sbin/mount.qcow2fs",
                "The helper run by mount -t fuse.qcow2fs and by fstab entries of type \
                 fuse.qcow2fs; it runs qcow2fs mount --daemon.",
            ),
            Item(
                "/etc/fuse.conf",
                "user_allow_other there lets users other than root mount with -o \
                 allow_other.",
            ),
        ],
    )
}

fn see_also(this: &str) -> Section {
    let pages = [
        "qcow2fs(1)",
        "qcow2fs-mount(1)",
        "qcow2fs-info(1)",
        "qcow2fs-check(1)",
        "qcow2fs-export(1)",
    ];
    let ours: Vec<&str> = pages
        .into_iter()
        .filter(|p| p.trim_end_matches("(1)") != this)
        .collect();
    let text = format!("{}, {SEE_ALSO_TOOLS}", ours.join(", "));
    ("SEE ALSO", vec![Text(text)])
}

/// The hand-written parts of the page of `name` ("qcow2fs" or
/// "qcow2fs-<subcommand>"): its DESCRIPTION, and the sections after OPTIONS.
pub(super) fn hand_written(name: &str) -> (Vec<Block>, Vec<Section>) {
    match name {
        "qcow2fs-mount" => (
            vec![
                Para(
                    "Mount IMAGE_DIR read-only at MOUNTPOINT: every qcow2 image under \
                     IMAGE_DIR becomes a folder of raw disks, one for its current state \
                     and one per internal snapshot, and of chains of qcow2 layers, built \
                     on demand, ready for cp and rsync. Other files are shown as they \
                     are. Nothing is ever written to the images: they are opened \
                     read-only, never locked. The mount is always ro, nodev and nosuid.",
                ),
                Verbatim(TREE),
                Para(REFUSALS),
                Para(LOGGING),
            ],
            vec![
                (
                    "MOUNT OPTIONS",
                    vec![
                        Item("allow_other", "Let every user read the mount (implies default_permissions)."),
                        Item("allow_root", "Let root read a mount made by another user."),
                        Item("default_permissions", "Have the kernel check file modes."),
                        Item("fsname=NAME", "The source shown in /proc/mounts (default: IMAGE_DIR)."),
                        Item("subtype=NAME", "The type shown as fuse.NAME (default: qcow2fs)."),
                        Item("nonempty", "Mount over a MOUNTPOINT that holds files (never over one that holds disk images)."),
                        Item("ro, defaults, noatime, nofail, _netdev, x-*, ...", "Generic options of mount(8) and fstab: accepted; rw is refused."),
                    ],
                ),
                (
                    "EXAMPLES",
                    vec![
                        Verbatim("\
# mount, and unmount
mkdir -p /mnt/vmsnap
qcow2fs mount --daemon /var/lib/libvirt/images /mnt/vmsnap
umount /mnt/vmsnap
# as an fstab entry
/var/lib/libvirt/images /mnt/vmsnap fuse.qcow2fs ro,allow_other 0 0
# as a service: IMAGE_DIR, MOUNTPOINT, OPTIONS in /etc/default/qcow2fs
systemctl enable --now qcow2fs.service
# log into a file, with what is done
qcow2fs mount --daemon -v --log-file /var/log/qcow2fs.log IMAGES /mnt/vmsnap
# back up every snapshot of vm.qcow2, and verify the copy
cp -r /mnt/vmsnap/vm.qcow2/chain /backup/vm
(cd /backup/vm && sha256sum -c SHA256SUMS)"),
                        Verbatim(RESTORE_EXAMPLE),
                    ],
                ),
                (
                    "EXIT STATUS",
                    vec![
                        Item(
                            "0",
                            "Without --daemon: the mount was unmounted (umount, \
                             fusermount3 -u, SIGINT or SIGTERM). With --daemon: the \
                             mount serves.",
                        ),
                        exit_status_common(),
                    ],
                ),
                environment(),
                signals(),
                files(),
                see_also(name),
            ],
        ),
        "qcow2fs-info" => (
            vec![Para(
                "Print what qcow2fs knows of IMAGE: the header, the snapshot table, the \
                 L1 and L2 figures of every state, the consistency check, what each \
                 layer of chain/ and forward/ would store, the features used and a \
                 verdict. It is the same report as the info file of a mount.",
            )],
            vec![
                (
                    "EXAMPLES",
                    vec![Verbatim(
                        "qcow2fs info /var/lib/libvirt/images/vm.qcow2\n\
                         qcow2fs info --output json vm.qcow2 | jq .layers",
                    )],
                ),
                (
                    "EXIT STATUS",
                    vec![Item("0", "The report was printed."), exit_status_common()],
                ),
                environment_short(),
                see_also(name),
            ],
        ),
        "qcow2fs-check" => (
            vec![Para(
                "Check IMAGE as qemu-img check does, without repairing it: the \
                 refcounts against every reference, the OFLAG_COPIED flags, and the \
                 tables. The image is read as qemu-img reads it (zeros past the end of \
                 the file), so a truncated image is counted, not refused. The exit \
                 status is qemu-img check's.",
            )],
            vec![
                (
                    "EXAMPLES",
                    vec![Verbatim(
                        "\
for i in /var/lib/libvirt/images/*.qcow2; do
    qcow2fs check -q \"$i\" >/dev/null
    case $? in 0) ;; 2) echo \"$i: corrupt\" ;; 3) echo \"$i: leaks\" ;; *) echo \"$i: not checked\" ;; esac
done",
                    )],
                ),
                (
                    "EXIT STATUS",
                    vec![
                        Item("0", "The image is clean."),
                        Item(
                            "1",
                            "The check was not possible (the image could not be opened; \
                             the message says why), or a usage error.",
                        ),
                        Item("2", "Corruptions were found."),
                        Item("3", "Leaked clusters were found, and no corruption."),
                    ],
                ),
                environment_short(),
                see_also(name),
            ],
        ),
        "qcow2fs-export" => (
            vec![
                Para(
                    "Write the files of an image's chain/ (or, with --forward, forward/) \
                     into OUTDIR without a mount: the same bytes as a copy from a mount, \
                     chain.json and SHA256SUMS included. Every file and the folder are \
                     synced when it returns. An OUTDIR that is not empty is refused \
                     unless --force; with --force the files of the chain it held are \
                     replaced and those the new chain lacks are removed.",
                ),
                Para(
                    "To restore a snapshot, convert the layer that stands for it \
                     (chain.json names its state; examples/restore.sh lists them) with \
                     qemu-img convert: every newer layer of a reverse chain, every older \
                     one of a forward chain, must lie beside it.",
                ),
            ],
            vec![
                (
                    "EXAMPLES",
                    vec![
                        Verbatim(
                            "qcow2fs export /var/lib/libvirt/images/vm.qcow2 /backup/vm\n\
                             (cd /backup/vm && sha256sum -c SHA256SUMS)\n\
                             qcow2fs export --forward --force vm.qcow2 /backup/vm-forward",
                        ),
                        Verbatim(RESTORE_EXAMPLE),
                    ],
                ),
                (
                    "EXIT STATUS",
                    vec![
                        Item("0", "Every file was written and synced."),
                        exit_status_common(),
                    ],
                ),
                environment_short(),
                files(),
                see_also(name),
            ],
        ),
        _ => (
            vec![
                Para(
                    "qcow2fs shows a folder of QEMU/KVM disk images as a tree of ordinary \
                     files: every qcow2 image becomes a folder with a raw disk for its \
                     current state and for each internal snapshot, its saved VM state, an \
                     info report, and its snapshots as chains of external qcow2 layers \
                     (chain/ and forward/), built on demand. Nothing is ever written to \
                     the source images.",
                ),
                Verbatim(TREE),
            ],
            vec![
                (
                    "EXAMPLES",
                    vec![
                        Verbatim(
                            "\
qcow2fs mount --daemon /var/lib/libvirt/images /mnt/vmsnap
cp -r /mnt/vmsnap/vm.qcow2/chain /backup/vm
(cd /backup/vm && sha256sum -c SHA256SUMS)
qcow2fs check /var/lib/libvirt/images/vm.qcow2
qcow2fs export /var/lib/libvirt/images/vm.qcow2 /backup/vm-export
umount /mnt/vmsnap",
                        ),
                        Verbatim(RESTORE_EXAMPLE),
                    ],
                ),
                (
                    "EXIT STATUS",
                    vec![
                        Item("0", "Success."),
                        exit_status_common(),
                        Item("2, 3", "qcow2fs check only: corruptions, or leaks only (see qcow2fs-check(1))."),
                    ],
                ),
                environment(),
                signals(),
                files(),
                see_also(name),
            ],
        ),
    }
}

fn environment_short() -> Section {
    (
        "ENVIRONMENT",
        vec![Item(
            "RUST_LOG",
            "What to log, as for env_logger (warnings by default); -v and -q take \
             precedence.",
        )],
    )
}
