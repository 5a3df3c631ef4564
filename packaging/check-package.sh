#!/bin/sh
# Build the Debian package, install it, and mount a demo folder the three
# ways an administrator would: mount -t fuse.qcow2fs (as an fstab entry
# does), the systemd unit (with systemctl when systemd runs, else its
# ExecStart line as written), and the plain command. Run as root.
# Needs cargo-deb (cargo install cargo-deb).
set -eu
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'umount "$work"/m1 "$work"/m2 "$work"/m3 2>/dev/null || true' EXIT
cargo deb
dpkg -i target/debian/qcow2fs_*_amd64.deb
sh examples/make-demo.sh "$work/demo" >/dev/null
mkdir -p "$work/m1" "$work/m2" "$work/m3"

# 1. mount -t, as /etc/fstab would.
mount -t fuse.qcow2fs "$work/demo" "$work/m1" -o ro,allow_other
test -e "$work/m1/vm1.qcow2/snapshots/monday.raw"
grep -q " $work/m1 fuse.qcow2fs ro," /proc/mounts
echo "ok: mount -t fuse.qcow2fs"

# 2. The systemd unit.
printf 'IMAGE_DIR=%s\nMOUNTPOINT=%s\nOPTIONS=allow_other\n' "$work/demo" "$work/m2" > /etc/default/qcow2fs
if [ "$(ps -p 1 -o comm=)" = systemd ]; then
    systemctl daemon-reload
    systemctl start qcow2fs.service
    sleep 1
    test -e "$work/m2/vm2.qcow2/snapshots/before-upgrade.raw"
    systemctl stop qcow2fs.service
    echo "ok: systemctl start qcow2fs.service"
else
    line=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/qcow2fs.service)
    (set -a; . /etc/default/qcow2fs; set +a; eval "exec $line") &
    pid=$!
    for _ in 1 2 3 4 5 6 7 8 9 10; do grep -q " $work/m2 " /proc/mounts && break; sleep 0.5; done
    test -e "$work/m2/vm2.qcow2/snapshots/before-upgrade.raw"
    kill -TERM $pid
    wait $pid
    echo "ok: the unit's ExecStart line, stopped by SIGTERM with status 0"
fi

# 3. The plain command.
qcow2fs mount --daemon "$work/demo" "$work/m3"
cmp "$work/m3/vm2.qcow2/snapshots/after-upgrade.raw" "$work/m1/vm2.qcow2/snapshots/after-upgrade.raw"
echo "ok: qcow2fs mount --daemon"

# The man pages and completions are installed.
man -w qcow2fs-mount >/dev/null
test -f /usr/share/bash-completion/completions/qcow2fs
echo "package checked"
