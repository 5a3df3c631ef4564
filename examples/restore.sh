#!/bin/sh
# Restore one snapshot from a backup: a copy of a chain/ or forward/ folder
# of a qcow2fs mount, or the OUTDIR of qcow2fs export.
#
#   restore.sh BACKUP                     list the states: snapshot name, ID,
#                                         date and the layer that stands for it
#   restore.sh BACKUP SNAPSHOT OUT [FMT]  write that state to OUT, a new image
#                                         (qcow2 unless FMT, e.g. raw)
#
# SNAPSHOT is a snapshot's name, id=N for the snapshot of ID N (when two
# share a name), or "active" for the state the image was in when the backup
# was made (when no snapshot is named so). The layer is found in chain.json;
# the layers it stands on (every newer one of a reverse chain, every older
# one of a forward chain, and the image's backing files) must lie beside it.
# They are checked against SHA256SUMS, then qemu-img convert writes OUT
# with the backing chain resolved: a standalone image, writable by its
# owner, whatever the modes of the backup (0444 files in a 0555 folder when
# copied from a mount). Needs python3 and qemu-img.
set -eu
usage="usage: restore.sh BACKUP [SNAPSHOT OUT [FORMAT]]"
backup=${1:?$usage}
if [ ! -f "$backup/chain.json" ]; then
    echo "restore.sh: $backup/chain.json: not found; BACKUP is a copy of a chain/ or forward/ folder" >&2
    exit 1
fi

# What chain.json says, as plain lines: without SNAPSHOT the list of states;
# with it, the layer first, then every file it needs.
lookup() {
    python3 - "$backup/chain.json" "$@" <<'PY'
import json, sys, time
m = json.load(open(sys.argv[1]))
layers = m.get("layers", [])
if len(sys.argv) < 3:
    print("%-24s %-6s %-20s %s" % ("SNAPSHOT", "ID", "DATE (UTC)", "LAYER"))
    for l in layers:
        s = l.get("stands-for", {})
        if s.get("state") == "snapshot":
            date = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.get("date-sec", 0)))
            print("%-24s %-6s %-20s %s" % (s.get("name", ""), s.get("id", ""), date, l["file"]))
        else:
            print("%-24s %-6s %-20s %s" % ("active", "-", "-", l["file"]))
    sys.exit(0)
want = sys.argv[2]
snaps = [l for l in layers if l.get("stands-for", {}).get("state") == "snapshot"]
if want.startswith("id="):
    found = [l for l in snaps if l["stands-for"].get("id") == want[3:]]
else:
    found = [l for l in snaps if l["stands-for"].get("name") == want]
    if not found and want == "active":
        found = [l for l in layers if l.get("stands-for", {}).get("state") == "active"]
if not found:
    sys.exit("restore.sh: no snapshot %r in %s (restore.sh BACKUP lists them)" % (want, sys.argv[1]))
if len(found) > 1:
    ids = ", ".join("id=" + l["stands-for"]["id"] for l in found)
    sys.exit("restore.sh: %d snapshots are named %r: give one of %s" % (len(found), want, ids))
by_file = {l["file"]: l for l in layers}
layer = found[0]
print(layer["file"])
need, seen = [layer["file"]], set()
l = layer
while l.get("backing") in by_file and l["backing"] not in seen:
    seen.add(l["backing"])
    l = by_file[l["backing"]]
    need.append(l["file"])
if l.get("backing"):
    need.extend(m.get("backing-files", []))
for f in need:
    print(f)
PY
}

if [ $# -lt 3 ]; then
    [ $# -eq 1 ] || { echo "$usage" >&2; exit 1; }
    lookup
    exit 0
fi
snapshot=$2
out=$3
format=${4:-qcow2}
if [ -e "$out" ]; then
    echo "restore.sh: $out exists; give a new file" >&2
    exit 1
fi
files=$(lookup "$snapshot")
layer=$(printf '%s\n' "$files" | sed -n 1p)
needed=$(printf '%s\n' "$files" | sed 1d)
missing=0
while read -r f; do
    if [ ! -f "$backup/$f" ]; then
        echo "restore.sh: $backup/$f is missing: restoring $snapshot from $layer reads it" >&2
        missing=1
    fi
done <<EOF
$needed
EOF
[ $missing -eq 0 ] || exit 1
# Check the files the restore reads against SHA256SUMS, where it is.
if [ -f "$backup/SHA256SUMS" ]; then
    (
        cd "$backup"
        printf '%s\n' "$needed" | while read -r f; do
            grep -F "  $f" SHA256SUMS | awk -v f="$f" 'substr($0, 67) == f'
        done | sha256sum -c --quiet -
    ) || { echo "restore.sh: $backup: the files do not match SHA256SUMS" >&2; exit 1; }
fi
qemu-img convert -f qcow2 -O "$format" "$backup/$layer" "$out"
echo "restored $snapshot ($layer) to $out"
