#!/bin/sh
# Seed the fuzz corpora with small images made by qemu-img and qemu-io.
set -eu
cd "$(dirname "$0")"
for t in open_read layers check; do mkdir -p "corpus/$t"; done
tmp=$(mktemp -d)
make() { # name, create options, qemu-io commands...
    name=$1; opts=$2; shift 2
    qemu-img create -q -f qcow2 -o "$opts" "$tmp/$name" 4M
    for c in "$@"; do qemu-io -f qcow2 -c "$c" "$tmp/$name" >/dev/null; done
    qemu-img snapshot -c a "$tmp/$name"
    qemu-io -f qcow2 -c "write -P 9 64k 4k" "$tmp/$name" >/dev/null
    qemu-img snapshot -c b "$tmp/$name"
}
make v3.qcow2 cluster_size=4k "write -P 1 0 8k" "write -z 8k 4k" "write -c -P 2 16k 4k"
make v2.qcow2 compat=0.10,cluster_size=4k "write -P 1 0 8k"
make extl2.qcow2 extended_l2=on,cluster_size=16k "write -P 1 0 2k" "write -z 4k 2k"
make zstd.qcow2 compression_type=zstd,cluster_size=4k "write -c -P 3 0 4k"
make rc1.qcow2 refcount_bits=64,cluster_size=512 "write -P 1 0 2k"
# Persistent bitmaps (read only by check): one added before the writes, one after.
qemu-img create -q -f qcow2 -o cluster_size=4k "$tmp/bitmaps.qcow2" 4M
qemu-img bitmap --add "$tmp/bitmaps.qcow2" b0
qemu-io -f qcow2 -c "write -P 1 0 64k" -c "write -P 2 1M 8k" "$tmp/bitmaps.qcow2" >/dev/null
qemu-img bitmap --add -g 512 "$tmp/bitmaps.qcow2" b1
qemu-io -f qcow2 -c "write -P 3 2M 4k" "$tmp/bitmaps.qcow2" >/dev/null
for t in open_read layers check; do cp "$tmp"/*.qcow2 "corpus/$t/"; done
rm -rf "$tmp"
