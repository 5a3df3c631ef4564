#!/bin/sh
# From a fresh clone on a Debian machine, as root: install what qcow2fs
# needs, build it, make a demo image folder, mount it, and back up the
# snapshots of every image as verified chains of qcow2 layers.
# usage: sudo sh examples/quickstart.sh [WORKDIR]   (default /tmp/qcow2fs-demo)
set -eu
cd "$(dirname "$0")/.."
work=${1:-/tmp/qcow2fs-demo}
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q fuse3 qemu-utils rsync python3
cargo build --release
bin=$PWD/target/release/qcow2fs
mkdir -p "$work/mnt"
if grep -q " $work/mnt " /proc/mounts; then umount "$work/mnt"; fi
rm -rf "$work/images"
sh examples/make-demo.sh "$work/images"
"$bin" mount --daemon "$work/images" "$work/mnt"
echo "mounted $work/images at $work/mnt:"
ls -l "$work/mnt" "$work/mnt/vm1.qcow2" "$work/mnt/vm1.qcow2/snapshots" "$work/mnt/vm1.qcow2/chain"
sh examples/backup-chain.sh "$work/mnt" "$work/backup"
echo "unmount with: umount $work/mnt"
