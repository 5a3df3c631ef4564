#!/bin/sh
# Build a demo image folder on the spot with qemu-img and qemu-io:
#   DIR/base.img           a raw base disk
#   DIR/vm1.qcow2          an overlay on it with three snapshots
#   DIR/vm2.qcow2          a standalone image with two snapshots and compressed data
#   DIR/notes.txt          a plain file, shown as is
# usage: make-demo.sh DIR
set -eu
dir=${1:?usage: make-demo.sh DIR}
mkdir -p "$dir"
cd "$dir"
io() { qemu-io -f qcow2 "$@" >/dev/null; }

qemu-img create -q -f raw base.img 64M
qemu-io -f raw -c "write -P 0xb0 0 8M" base.img >/dev/null

qemu-img create -q -f qcow2 -b base.img -F raw vm1.qcow2 64M
io -c "write -P 0x11 0 4M" -c "write -P 0x12 16M 2M" vm1.qcow2
qemu-img snapshot -c monday vm1.qcow2
io -c "write -P 0x21 1M 1M" -c "write -z 16M 1M" vm1.qcow2
qemu-img snapshot -c tuesday vm1.qcow2
io -c "write -P 0x31 32M 4M" -c "discard 0 1M" vm1.qcow2
qemu-img snapshot -c wednesday vm1.qcow2
io -c "write -P 0x41 40M 1M" vm1.qcow2

qemu-img create -q -f qcow2 vm2.qcow2 32M
io -c "write -c -P 0x51 0 2M" -c "write -P 0x52 8M 1M" vm2.qcow2
qemu-img snapshot -c before-upgrade vm2.qcow2
io -c "write -P 0x61 8M 512k" vm2.qcow2
qemu-img snapshot -c after-upgrade vm2.qcow2

echo "Demo images for qcow2fs." > notes.txt
echo "demo folder ready: $dir"
