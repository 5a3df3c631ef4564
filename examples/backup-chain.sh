#!/bin/sh
# Copy the reverse chain of every image under a qcow2fs mount to a dated
# folder, and verify every copy: sha256sum -c of the folder's SHA256SUMS,
# qemu-img check of each layer, and qemu-img compare of each layer with the
# raw view of the state it stands for.
# usage: backup-chain.sh MOUNT BACKUP_ROOT
set -eu
mnt=${1:?usage: backup-chain.sh MOUNT BACKUP_ROOT}
root=${2:?usage: backup-chain.sh MOUNT BACKUP_ROOT}
dest="$root/$(date -u +%Y-%m-%d)"
mkdir -p "$dest"
failed="$dest/.failed"
rm -f "$failed"
find "$mnt" -type d -name chain | sort | while read -r chain; do
    img=$(dirname "$chain")
    rel=${img#"$mnt"/}
    out="$dest/$rel"
    mkdir -p "$out"
    cp -r "$chain/." "$out/"
    (cd "$out" && sha256sum -c --quiet SHA256SUMS) || { echo "sha256sum failed: $out" >&2; touch "$failed"; }
    for layer in "$out"/*.qcow2; do
        name=$(basename "$layer")
        # Which state the layer stands for, from chain.json.
        state=$(python3 -c 'import json,sys
m=json.load(open(sys.argv[1]))
for l in m["layers"]:
    if l["file"]==sys.argv[2]:
        s=l["stands-for"]; print(s.get("name","") if s["state"]=="snapshot" else "")' "$out/chain.json" "$name")
        case "$name" in *_snapshot*|*_active*) ;; *) continue ;; esac
        if [ -z "$state" ]; then view="$img/active.raw"; else view="$img/snapshots/$state.raw"; fi
        qemu-img check -q "$layer" || { echo "check failed: $layer" >&2; touch "$failed"; }
        if [ -e "$view" ]; then
            qemu-img compare -q -f qcow2 -F raw "$layer" "$view" || { echo "compare failed: $layer" >&2; touch "$failed"; }
        fi
        echo "ok: $rel/$name"
    done
done
if [ -e "$failed" ]; then rm -f "$failed"; exit 1; fi
echo "backup verified: $dest"
