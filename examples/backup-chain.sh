#!/bin/sh
# Copy the reverse chain of every image under a qcow2fs mount to a dated
# folder, and verify every copy: sha256sum -c of the folder's SHA256SUMS,
# qemu-img check of each layer, and qemu-img compare of each layer with the
# raw view of the state it stands for.
# usage: backup-chain.sh MOUNT BACKUP_ROOT
set -eu
mnt=${1:?usage: backup-chain.sh MOUNT BACKUP_ROOT}
root=${2:?usage: backup-chain.sh MOUNT BACKUP_ROOT}
fail() {
    printf 'backup-chain.sh: %s\n' "$*" >&2
    exit 1
}
# A live qcow2fs mount that holds an image.
err=$(ls -d -- "$mnt" 2>&1 >/dev/null) || fail "$mnt: ${err#*: }"
[ -d "$mnt" ] || fail "$mnt: not a folder"
fstype=$(findmnt -n -o FSTYPE --target "$mnt" 2>/dev/null) || fstype=
[ "$fstype" = fuse.qcow2fs ] || fail "$mnt: not a qcow2fs mount (file system: ${fstype:-none})"
err=$(ls -- "$mnt" 2>&1 >/dev/null) || fail "$mnt: the mount does not answer: ${err#*: }"
chains=$(mktemp)
trap 'rm -f "$chains"' EXIT
find "$mnt" -type d -name chain >"$chains.found" || { rm -f "$chains.found"; fail "$mnt: the mount could not be read through"; }
sort "$chains.found" >"$chains"
rm -f "$chains.found"
[ -s "$chains" ] || fail "$mnt: the mount holds no image"
dest="$root/$(date -u +%Y-%m-%d)"
mkdir -p "$dest"
failed="$dest/.failed"
copied="$dest/.copied"
rm -f "$failed" "$copied"
while read -r chain; do
    img=$(dirname "$chain")
    rel=${img#"$mnt"/}
    out="$dest/$rel"
    mkdir -p "$out"
    cp -r "$chain/." "$out/" || { echo "copy failed: $out" >&2; touch "$failed"; }
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
        touch "$copied"
        echo "ok: $rel/$name"
    done
done <"$chains"
if [ ! -e "$copied" ]; then echo "backup-chain.sh: no layer copied from $mnt" >&2; touch "$failed"; fi
rm -f "$copied"
if [ -e "$failed" ]; then rm -f "$failed"; exit 1; fi
echo "backup verified: $dest"
