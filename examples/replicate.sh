#!/bin/sh
# Replicate the forward chains of every image under a qcow2fs mount to a
# target path (a local folder or an rsync destination such as host:path).
# Layers whose bytes did not change keep their size and mtime, so running it
# again transfers nothing. A local replica is then verified with sha256sum -c
# and qemu-img check of every layer.
# usage: replicate.sh MOUNT TARGET
set -eu
mnt=${1:?usage: replicate.sh MOUNT TARGET}
target=${2:?usage: replicate.sh MOUNT TARGET}
find "$mnt" -type d -name forward | sort | while read -r fwd; do
    rel=${fwd#"$mnt"/}
    rel=${rel%/forward}
    case "$target" in
        *:*) ;;
        *) mkdir -p "$target/$rel" ;;
    esac
    rsync -a --delete --itemize-changes "$fwd/" "$target/$rel/"
    case "$target" in
        *:*) ;;
        *)
            (cd "$target/$rel" && sha256sum -c --quiet SHA256SUMS)
            for layer in "$target/$rel"/*.qcow2; do
                qemu-img check -q "$layer"
            done
            ;;
    esac
done
