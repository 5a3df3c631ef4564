#!/bin/sh
# Nightly replication of every image under a qcow2fs mount into a local
# folder DEST, at the cost of what changed since the last night.
#
# DEST/<image path>/ keeps one file per snapshot that the source keeps,
# IDENT.qcow2 (IDENT = name.date.nsec.idID, as in the mount's
# incremental/INDEX): the oldest is complete, each later one holds what
# differs from the one before and names it as its backing file. A night:
#   0. refuses a MOUNT that is not a live qcow2fs mount holding an image,
#      and a DEST inside the mount or inside the folder it shows;
#   1. takes a lock on DEST, held by every command it starts, and finishes
#      the merges that a cut-off night left in its journal;
#   2. fetches, oldest first, each snapshot that DEST lacks (the delta over
#      a snapshot DEST holds) to a temporary name, checks it against the
#      mount's FILE.sha256 and renames it into place;
#   3. merges out each snapshot that DEST holds and the source no longer
#      does, from DEST's files alone, journaled first and safe to repeat:
#      the oldest takes in its successor (qemu-img commit) and is renamed
#      over it; a middle one's successor is rebased onto its predecessor
#      (qemu-img rebase); one that nothing is built on is removed. Every
#      file a merge reads (and the base of a fetch) is first checked against
#      DEST's SHA256SUMS: a damaged file stops the image, it is never merged
#      and never given a fresh digest. A complete oldest layer over another
#      backing file than the mount's (the image was rebased) is fetched
#      again;
#   4. writes DEST/<image path>/SHA256SUMS (none when the folder holds no
#      file) and verifies the replica:
#      sha256sum -c, qemu-img check of every layer, and that the chain runs
#      oldest to newest.
# Restore a snapshot: qemu-img convert -O raw DEST/<image path>/IDENT.qcow2 out.raw
# usage: replicate.sh MOUNT DEST
set -eu
mnt=${1:?usage: replicate.sh MOUNT DEST}
dest=${2:?usage: replicate.sh MOUNT DEST}

fail() {
    printf 'replicate.sh: %s\n' "$*" >&2
    exit 1
}

# 0. A live qcow2fs mount, and a DEST outside it and outside its folder.
err=$(ls -d -- "$mnt" 2>&1 >/dev/null) || fail "$mnt: ${err#*: }"
[ -d "$mnt" ] || fail "$mnt: not a folder"
fstype=$(findmnt -n -o FSTYPE --target "$mnt" 2>/dev/null) || fstype=
[ "$fstype" = fuse.qcow2fs ] || fail "$mnt: not a qcow2fs mount (file system: ${fstype:-none})"
err=$(ls -- "$mnt" 2>&1 >/dev/null) || fail "$mnt: the mount does not answer: ${err#*: }"
realdest=$(realpath -m -- "$dest")
inside() {
    case $1/ in "$2"/*) return 0 ;; esac
    return 1
}
realmnt=$(realpath -- "$mnt")
top=$(findmnt -n -o TARGET --target "$mnt")
source=$(findmnt -n -o SOURCE --target "$mnt")
for d in "$realmnt" "$top"; do
    ! inside "$realdest" "$d" || fail "$dest is inside the mount $d"
done
if [ -d "$source" ] && source=$(realpath -- "$source"); then
    ! inside "$realdest" "$source" || fail "$dest is inside $source, the folder the mount shows"
fi
mkdir -p "$dest"
# One night at a time. The lock is held through an open file that every
# command started here inherits: a command still running after the night
# was cut off holds it until it ends.
exec 9>>"$dest/.lock"
flock 9

# The file of a snapshot in DEST: IDENT.qcow2.
layers='*.[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9].[0-9]*.id*.qcow2'

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The backing file name written in a qcow2 file ("" for none), from its
# header alone.
backing_of() {
    info=$(qemu-img info -U -f qcow2 --output=json -- "$1") || return 1
    printf '%s' "$info" | python3 -c 'import json, sys
print(json.load(sys.stdin).get("backing-filename", ""))'
}

# The digest in the last line of table $2 ("DIGEST  NAME", or
# "DIGEST *NAME") that names file $1.
digest_of() {
    name=$1 awk 'substr($0, 67) == ENVIRON["name"] { d = substr($0, 1, 64) }
        END { print d }' "$2"
}

# Check a file of DEST against its digest: the one fetched this night,
# else SHA256SUMS's. A file merged this night is taken as it is, a file
# checked already is not read again.
verify() {
    if grep -qxF -e "$1" "$tmp/fresh" "$tmp/verified"; then return 0; fi
    want=$(digest_of "$1" "$tmp/known")
    [ -n "$want" ] || fail "$rel/$1: no digest in SHA256SUMS; not merged"
    got=$(sha256sum <"$out/$1")
    got=${got%% *}
    [ "$got" = "$want" ] ||
        fail "$rel/$1: sha256 $got, SHA256SUMS says $want: the file is damaged in DEST; not merged"
    printf '%s\n' "$1" >>"$tmp/verified"
}

# Check a layer of DEST and every file under it, down to the first of the
# image's backing files.
verify_chain() {
    f=$1
    while [ -n "$f" ] && [ -e "$out/$f" ]; do
        verify "$f"
        if grep -qxF -e "$f" "$tmp/backing"; then break; fi
        g=$(backing_of "$out/$f") || fail "$rel: qemu-img info $f failed"
        f=$g
        case $f in */*) break ;; esac
    done
}

# Carry out one merge of the journal, in folder $out. Each is safe to
# repeat: a merge whose deleted snapshot's file is gone is done.
#   commit D C     C's delta is committed into the complete D, D renamed to C
#   rebase D C P   C is rebased from D onto P, D removed
#   remove D       D is removed (nothing is built on it)
apply() {
    case $1 in
        commit | rebase | remove) ;;
        *) fail "$out/.journal: unknown merge: $*" ;;
    esac
    [ -e "$out/$2.qcow2" ] || return 0
    case $1 in
        commit) say "$2.qcow2 (took in $3.qcow2 and took its name)" ;;
        rebase) say "$2.qcow2 ($3.qcow2 rebased onto $4.qcow2)" ;;
        remove) say "$2.qcow2 (removed)" ;;
    esac
    case $1 in
        commit)
            qemu-img commit -q -d -f qcow2 "$out/$3.qcow2"
            # A commit cut off may have left clusters allocated twice over.
            if [ -n "$replay" ]; then qemu-img check -q -r leaks "$out/$2.qcow2"; fi
            sync "$out/$2.qcow2"
            mv -f "$out/$2.qcow2" "$out/$3.qcow2"
            ;;
        rebase)
            b=$(backing_of "$out/$3.qcow2") || fail "$rel: qemu-img info $3.qcow2 failed"
            if [ "$b" != "$4.qcow2" ]; then
                qemu-img rebase -q -f qcow2 -b "$4.qcow2" -F qcow2 "$out/$3.qcow2"
            fi
            if [ -n "$replay" ]; then qemu-img check -q -r leaks "$out/$3.qcow2"; fi
            sync "$out/$3.qcow2"
            rm -f "$out/$2.qcow2"
            ;;
        remove)
            for f in "$out"/$layers; do
                [ -e "$f" ] || continue
                b=$(backing_of "$f") || fail "$rel: qemu-img info ${f##*/} failed"
                [ "$b" != "$2.qcow2" ] || fail "$rel: ${f##*/} is built on $2.qcow2; not removed"
            done
            rm -f "$out/$2.qcow2"
            ;;
    esac
}

say() {
    if [ -n "$replay" ]; then
        echo "merged out (finishing a cut-off night): $rel/$*"
    else
        echo "merged out: $rel/$*"
    fi
}

# Check what a merge reads, journal it, then carry it out.
merge() {
    case $1 in
        commit) verify "$2.qcow2" && verify "$3.qcow2" ;;
        rebase) verify "$3.qcow2" && verify_chain "$2.qcow2" ;;
    esac
    printf '%s\n' "$*" >>"$out/.journal"
    sync "$out/.journal"
    [ "$1" = remove ] || printf '%s\n' "$3.qcow2" >>"$tmp/fresh"
    apply "$@"
}

# The next merge, from the DEST layers and their backing names ($tmp/chain:
# IDENT BACKING) and the identities the source keeps ($tmp/kept): first a
# deleted snapshot that nothing is built on, then a complete one, then any.
next_merge() {
    awk -F '\t' 'FILENAME == ARGV[1] { kept[$1] = 1; next }
        { n++; id[n] = $1; back[$1] = $2; layer[$1 ".qcow2"] = $1 }
        END {
            for (i = 1; i <= n; i++) {
                d = id[i]; if (d in kept) continue
                kids = 0
                for (j = 1; j <= n; j++) if (back[id[j]] == d ".qcow2") { kids++; child[d] = id[j] }
                nkids[d] = kids
                if (kids == 0) { print "remove", d; exit }
            }
            for (pass = 1; pass <= 2; pass++)
                for (i = 1; i <= n; i++) {
                    d = id[i]; if (d in kept) continue
                    if (nkids[d] > 1) { print "branches", d; exit }
                    complete = !(back[d] in layer)
                    if (pass == 1 && complete) { print "commit", d, child[d]; exit }
                    if (pass == 2) { print "rebase", d, child[d], layer[back[d]]; exit }
                }
        }' "$tmp/kept" "$tmp/chain"
}

# Fetch a file of the mount to a temporary name in $out, check it against
# the mount's FILE.sha256 (read after FILE: the mount hashes FILE as it is
# read), and rename it into place as NAME; its digest goes to .fetched.
fetch() {
    part=$out/.$2.part
    cp -p "$1" "$part"
    read -r want wname <"$1.sha256"
    [ "${wname#\*}" = "$2" ] || fail "$1.sha256 names $wname, not $2"
    got=$(sha256sum <"$part")
    got=${got%% *}
    [ "$got" = "$want" ] || fail "$1: sha256 $got, the mount says $want"
    sync "$part"
    mv -f "$part" "$out/$2"
    printf '%s  %s\n' "$want" "$2" >>"$out/.fetched"
    printf '%s  %s\n' "$want" "$2" >>"$tmp/known"
    printf '%s\n' "$2" >>"$tmp/verified"
    echo "fetched: $rel/$2 ($(stat -c %s "$out/$2") bytes)"
}

# Replicate one image: its incremental/ folder $src into $out.
replicate() {
    src=$1
    out=$2
    mkdir -p "$out"
    rm -f "$out"/.*.part
    : >"$tmp/fresh"
    : >"$tmp/verified"
    # The digests DEST holds: SHA256SUMS, then what a cut-off night fetched.
    : >"$tmp/old"
    if [ -e "$out/SHA256SUMS" ]; then
        cp "$out/SHA256SUMS" "$tmp/old"
        if grep -qEv '^[0-9a-f]{64} [ *].+$' "$tmp/old"; then
            fail "$rel/SHA256SUMS: not a list of digests (damaged in DEST); nothing merged"
        fi
    fi
    [ -e "$out/.fetched" ] && cp "$out/.fetched" "$tmp/fetched" || : >"$tmp/fetched"
    cat "$tmp/old" "$tmp/fetched" >"$tmp/known"
    # What a cut-off night merged has no digest yet: taken here.
    [ -e "$out/.journal" ] && awk '$1 != "remove" { print $3 ".qcow2" }' "$out/.journal" >>"$tmp/fresh"
    # 1. Finish what a cut-off night left.
    if [ -e "$out/.journal" ]; then
        replay=1
        while read -r op a b c; do
            apply "$op" "$a" "$b" "$c"
        done <"$out/.journal"
    fi
    replay=

    # One table for the whole night.
    cp "$src/INDEX" "$tmp/index"
    awk '{ print $1 }' "$tmp/index" >"$tmp/kept"
    # The image's backing files, passed through: fetched when their size or
    # date changed.
    : >"$tmp/backing"
    for f in "$src"/*; do
        [ -e "$f" ] || continue
        name=${f##*/}
        case $name in INDEX | *.sha256) continue ;; esac
        if name=$name awk '$3 == ENVIRON["name"] { found = 1 } END { exit !found }' "$tmp/index"; then
            continue
        fi
        printf '%s\n' "$name" >>"$tmp/backing"
        if [ "$(stat -c '%s %Y' "$f")" != "$(stat -c '%s %Y' "$out/$name" 2>/dev/null)" ]; then
            fetch "$f" "$name"
        fi
    done

    # 2. Fetch, oldest first, what DEST lacks.
    while read -r ident pred file name; do
        [ -e "$out/$ident.qcow2" ] && continue
        if [ "$pred" != - ] && [ ! -e "$out/$pred.qcow2" ]; then
            fail "$rel: $ident is a delta over $pred, which the replica lacks"
        fi
        [ "$pred" = - ] || verify "$pred.qcow2"
        fetch "$src/$file" "$ident.qcow2"
    done <"$tmp/index"

    # 3. Merge out what the source no longer keeps.
    while :; do
        : >"$tmp/chain"
        for f in "$out"/$layers; do
            [ -e "$f" ] || continue
            id=${f##*/}
            grep -qxF -e "$id" "$tmp/backing" && continue
            b=$(backing_of "$f") || fail "$rel: qemu-img info $id failed"
            printf '%s\t%s\n' "${id%.qcow2}" "$b" >>"$tmp/chain"
        done
        # shellcheck disable=SC2046 # the merge's words
        set -- $(next_merge)
        [ $# -gt 0 ] || break
        [ "$1" != branches ] || fail "$rel: more than one snapshot is built on $2"
        merge "$@"
    done

    # The complete oldest layer over another backing file than the mount's
    # (the image was rebased onto another file): fetched again.
    if read -r ident pred file name <"$tmp/index" && [ -e "$out/$ident.qcow2" ]; then
        b=$(backing_of "$out/$ident.qcow2") || fail "$rel: qemu-img info $ident.qcow2 failed"
        want=$(backing_of "$src/$file") || fail "$rel: qemu-img info $src/$file failed"
        if [ "$b" != "$want" ]; then
            echo "over another backing file at the source: $rel/$ident.qcow2"
            fetch "$src/$file" "$ident.qcow2"
        fi
    fi

    # 4. SHA256SUMS: the source's digest of each file fetched, a digest taken
    # here of each file merged, the last night's for the others.
    # A file with no digest at all is refused, never given one from DEST.
    [ -e "$out/.fetched" ] && cp "$out/.fetched" "$tmp/fetched" || : >"$tmp/fetched"
    cat "$tmp/old" "$tmp/fetched" >"$tmp/known"
    : >"$tmp/sums"
    { sed 's/$/.qcow2/' "$tmp/kept"; cat "$tmp/backing"; } | while read -r name; do
        if grep -qxF -e "$name" "$tmp/fresh"; then
            got=$(sha256sum <"$out/$name")
            line="${got%% *}  $name"
        else
            want=$(digest_of "$name" "$tmp/known")
            [ -n "$want" ] || fail "$rel/$name: no digest in SHA256SUMS or from the mount"
            line="$want  $name"
        fi
        printf '%s\n' "$line" >>"$tmp/sums"
    done
    if [ -s "$tmp/sums" ]; then
        cp "$tmp/sums" "$out/.SHA256SUMS.part"
        sync "$out/.SHA256SUMS.part"
        mv -f "$out/.SHA256SUMS.part" "$out/SHA256SUMS"
    else
        rm -f "$out/SHA256SUMS"
    fi
    rm -f "$out/.journal" "$out/.fetched"

    # Verify: every digest that was not taken here just now, every layer,
    # and the chain from oldest to newest.
    awk 'FILENAME == ARGV[1] { f[$0] = 1; next } !(substr($0, 67) in f)' "$tmp/fresh" "$tmp/sums" >"$tmp/check"
    if [ -s "$tmp/check" ]; then
        (cd "$out" && sha256sum -c --quiet --strict - >&2) <"$tmp/check" || fail "$rel: sha256sum -c failed"
    fi
    prev=
    while read -r ident pred file name; do
        qemu-img check -q "$out/$ident.qcow2" || fail "$rel: qemu-img check $ident.qcow2 failed"
        back=$(backing_of "$out/$ident.qcow2") || fail "$rel: qemu-img info $ident.qcow2 failed"
        if [ -n "$prev" ]; then
            [ "$back" = "$prev.qcow2" ] || fail "$rel: $ident.qcow2 is over '$back', not $prev.qcow2"
        elif [ -n "$back" ]; then
            grep -qxF -e "$back" "$tmp/backing" || fail "$rel: the oldest, $ident.qcow2, is over '$back'"
        fi
        prev=$ident
    done <"$tmp/index"
    if [ -n "$prev" ]; then
        qemu-img info --backing-chain "$out/$prev.qcow2" >/dev/null ||
            fail "$rel: the chain of $prev.qcow2 does not open"
    fi
    echo "verified: $rel ($(wc -l <"$tmp/kept") snapshots)"
}

# Every image folder under the mount (one with incremental/ in it).
failed=0
find "$mnt" -type d -exec test -d '{}/incremental' ';' -print -prune >"$tmp/found" ||
    fail "$mnt: the mount could not be read through"
sort "$tmp/found" >"$tmp/images"
[ -s "$tmp/images" ] || fail "$mnt: the mount holds no image"
while read -r img; do
    rel=${img#"$mnt"}
    rel=${rel#/}
    set +e
    (
        set -e
        replicate "$img/incremental" "$dest/$rel"
    )
    rc=$?
    set -e
    [ "$rc" -eq 0 ] || failed=1
done <"$tmp/images"
exit "$failed"
