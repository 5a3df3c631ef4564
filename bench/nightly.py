#!/usr/bin/env python3
"""What a night of offsite replication costs: examples/replicate.sh (the
incremental/ folder) next to `rsync -a --delete` of today's forward/.

The scenario of issue 22: a 2 GiB disk with 512 MiB of incompressible data
and 7 daily snapshots; each night the VM writes 24 MiB in 256 KiB pieces
scattered over the disk, the oldest snapshot is deleted and a new one is
taken. Then, each night, both replications run, each from a mount of its
own into a destination on an ext4 file system of its own (a loop device
over a file in WORKDIR):

  - bytes written to the destination: ext4's lifetime_write_kbytes, after
    a sync, before and after;
  - bytes read by the mount: its rchar (/proc/PID/io), before and after;
  - wall time;

each also as a ratio to the bytes the VM wrote that night. The first night
(the initial full replica) is reported apart.

Run as root from the repository, after `cargo build --release`:
    python3 bench/nightly.py
Environment: NIGHTS (default 3), WORKDIR, QCOW2FS (the binary). Needs qemu-utils, rsync, fuse3,
e2fsprogs.
"""

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("QCOW2FS", os.path.join(ROOT, "target", "release", "qcow2fs"))
SCRIPT = os.path.join(ROOT, "examples", "replicate.sh")
NIGHTS = int(os.environ.get("NIGHTS", "3"))
MIB = 1 << 20
DISK = 2 << 30
DATA = 512 * MIB
NIGHT = 24 * MIB
PIECE = 256 << 10
DAYS = 7


def sh(*args, **kw):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, **kw).stdout


def is_mounted(mp):
    with open("/proc/self/mountinfo") as f:
        return any(line.split(" ")[4] == mp for line in f)


class Mount:
    """A foreground qcow2fs mount whose reads we can count."""

    def __init__(self, src, mp):
        os.makedirs(mp, exist_ok=True)
        self.mp = mp
        self.proc = subprocess.Popen([BIN, "mount", src, mp])
        t = time.time()
        while not is_mounted(mp):
            if time.time() - t > 30:
                raise RuntimeError(f"{mp} never mounted")
            time.sleep(0.05)

    def rchar(self):
        with open(f"/proc/{self.proc.pid}/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
        raise RuntimeError("no rchar")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Ext4:
    """A destination on a file system of its own, whose writes we can count."""

    def __init__(self, work, name):
        self.file = os.path.join(work, f"{name}.ext4")
        with open(self.file, "wb") as f:
            f.truncate(4 << 30)
        sh("mkfs.ext4", "-q", "-F", "-N", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0", self.file)
        self.mp = os.path.join(work, name)
        os.makedirs(self.mp, exist_ok=True)
        sh("mount", "-o", "loop", self.file, self.mp)
        self.dev = os.path.basename(sh("findmnt", "-n", "-o", "SOURCE", self.mp).strip())

    def written(self):
        sh("sync", "-f", self.mp)
        with open(f"/sys/fs/ext4/{self.dev}/lifetime_write_kbytes") as f:
            return int(f.read()) * 1024

    def stop(self):
        subprocess.run(["umount", self.mp])


def qemu_io(img, cmds):
    for i in range(0, len(cmds), 100):
        args = ["qemu-io", "-f", "qcow2"]
        for c in cmds[i:i + 100]:
            args += ["-c", c]
        sh(*args, img)


def write_noise(img, rng, pieces_dir, offsets, length):
    """Write fresh random bytes at each offset, `length` bytes each."""
    cmds = []
    for k, off in enumerate(offsets):
        p = os.path.join(pieces_dir, f"p{k}")
        with open(p, "wb") as f:
            f.write(rng.randbytes(length))
        cmds.append(f"write -s {p} {off} {length}")
    qemu_io(img, cmds)


def night_writes(img, rng, pieces_dir):
    slots = rng.sample(range(DISK // PIECE), NIGHT // PIECE)
    write_noise(img, rng, pieces_dir, [s * PIECE for s in slots], PIECE)


def build(work):
    rng = random.Random(22)
    src = os.path.join(work, "images")
    pieces = os.path.join(work, "pieces")
    os.makedirs(src)
    os.makedirs(pieces)
    img = os.path.join(src, "vm.qcow2")
    sh("qemu-img", "create", "-q", "-f", "qcow2", img, str(DISK))
    # 512 MiB of noise in 8 MiB pieces spread evenly over the disk, a few
    # pieces at a time (each from a file of its own).
    n = DATA // (8 * MIB)
    step = DISK // n
    for i in range(0, n, 8):
        write_noise(img, rng, pieces, [k * step for k in range(i, min(n, i + 8))], 8 * MIB)
    for day in range(1, DAYS + 1):
        night_writes(img, rng, pieces)
        sh("qemu-img", "snapshot", "-c", f"day{day}", img)
    return rng, src, pieces, img


def measure(mount, fs, cmd):
    w0, r0, t0 = fs.written(), mount.rchar(), time.time()
    sh(*cmd)
    t = time.time() - t0
    return fs.written() - w0, mount.rchar() - r0, t


def main():
    if os.geteuid() != 0:
        sys.exit("run as root (FUSE mounts, loop devices)")
    work = os.environ.get("WORKDIR") or tempfile.mkdtemp(prefix="qcow2fs-nightly-")
    mounts, fss = [], []
    try:
        rng, src, pieces, img = build(work)
        inc_fs, rs_fs = Ext4(work, "dest-incremental"), Ext4(work, "dest-rsync")
        fss += [inc_fs, rs_fs]
        inc_m, rs_m = Mount(src, os.path.join(work, "mnt-incremental")), Mount(src, os.path.join(work, "mnt-rsync"))
        mounts += [inc_m, rs_m]
        inc_dest = os.path.join(inc_fs.mp, "replica")
        rs_dest = os.path.join(rs_fs.mp, "vm.qcow2")
        os.makedirs(rs_dest)

        def nightly():
            inc = measure(inc_m, inc_fs, ["sh", SCRIPT, inc_m.mp, inc_dest])
            rs = measure(rs_m, rs_fs, ["rsync", "-a", "--delete",
                                       os.path.join(rs_m.mp, "vm.qcow2", "forward") + "/", rs_dest + "/"])
            return inc, rs

        first = nightly()
        rows = []
        for night in range(1, NIGHTS + 1):
            day = DAYS + night
            night_writes(img, rng, pieces)
            sh("qemu-img", "snapshot", "-d", f"day{day - DAYS}", img)
            sh("qemu-img", "snapshot", "-c", f"day{day}", img)
            rows.append(nightly())
        # The replica restores every snapshot the source holds.
        info = json.loads(sh("qemu-img", "info", "--output=json", img))
        replica = os.path.join(inc_dest, "vm.qcow2")
        sh("sh", "-c", 'cd "$1" && sha256sum -c --quiet SHA256SUMS', "-", replica)
        with open(os.path.join(inc_m.mp, "vm.qcow2", "incremental", "INDEX")) as f:
            idents = [line.split()[0] for line in f]
        assert len(idents) == len(info["snapshots"])
        raw = os.path.join(work, "restored.raw")
        for s, ident in zip(info["snapshots"], idents):
            sh("qemu-img", "convert", "-l", f"snapshot.id={s['id']}", "-O", "raw", img, raw)
            sh("qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", os.path.join(replica, ident + ".qcow2"), raw)
            os.remove(raw)
        size = sum(os.stat(os.path.join(replica, n)).st_blocks * 512 for n in os.listdir(replica))
    finally:
        for m in mounts:
            m.stop()
        for fs in fss:
            fs.stop()
        if not os.environ.get("WORKDIR"):
            shutil.rmtree(work, ignore_errors=True)

    mib = lambda b: f"{b / MIB:.1f} MiB"
    x = lambda b: f"{b / NIGHT:.2f}x"
    (iw, ir, it), (rw, rr, rt) = first
    print(f"first night (initial replica): replicate.sh wrote {mib(iw)}, read {mib(ir)}, {it:.1f} s; "
          f"rsync -a forward/ wrote {mib(rw)}, read {mib(rr)}, {rt:.1f} s")
    print()
    print("| night | the VM wrote | replicate.sh: written to DEST | read by the mount | time "
          "| rsync -a --delete forward/: written | read by the mount | time |")
    print("|---|---|---|---|---|---|---|---|")
    for night, ((iw, ir, it), (rw, rr, rt)) in enumerate(rows, 1):
        print(f"| {night} | {mib(NIGHT)} | {mib(iw)} ({x(iw)}) | {mib(ir)} ({x(ir)}) | {it:.1f} s "
              f"| {mib(rw)} ({x(rw)}) | {mib(rr)} ({x(rr)}) | {rt:.1f} s |")
    print()
    print(f"replica after {NIGHTS} nights: {mib(size)}, {len(idents)} snapshots, every one restored "
          f"equal to qemu-img convert -l, SHA256SUMS verified")


if __name__ == "__main__":
    main()
