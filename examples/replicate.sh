#!/bin/sh
# Replicate the forward chains of every image under a qcow2fs mount to a
# target path (a local folder or an rsync destination such as host:path).
# Layers whose bytes did not change keep their size and mtime, so running it
# again transfers nothing.
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
done
