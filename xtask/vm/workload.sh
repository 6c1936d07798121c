#!/bin/sh
# The copy-up workload of issue 4 part 8, run by /init once stratad is up. Prints what xtask
# checks between `=== begin NAME ===` / `=== end NAME ===` markers; exits non-zero, after saying
# which step failed, when a step cannot run. PHASES is `storage` (no metrics scrape) or `all`.
#
# The image (built by xtask) has, besides busybox:
#   /srv/c1/one-mib (1 MiB), /srv/c1/ten-kib (10 KiB), /srv/c1/empty (0 B), /srv/c1/mode-only
#   (4 KiB, only chmod'ed), /srv/c2/eight-mib (8 MiB), /srv/c3/read-me (64 KiB).

IMAGE=strata-vm/copyup:latest

step() {
    echo "workload: $*"
    "$@" || {
        status=$?
        echo "workload: step failed with $status: $*"
        exit 1
    }
}

section() {
    name=$1
    shift
    echo "=== begin $name ==="
    "$@"
    status=$?
    echo "=== end $name ==="
    return $status
}

# The console is a terminal, where import draws progress bars; keep them off the transcript.
echo "workload: strata image import /strata/copyup-image.tar"
/strata/strata image import /strata/copyup-image.tar >/tmp/import.log 2>&1 || {
    cat /tmp/import.log
    echo "workload: step failed: strata image import"
    exit 1
}

echo "=== begin containers ==="
for name in c1 c2 c3; do
    id=$(/strata/strata container create --name "$name" "$IMAGE") || {
        echo "=== end containers ==="
        echo "workload: step failed: strata container create --name $name $IMAGE"
        exit 1
    }
    echo "$name $id"
done
echo "=== end containers ==="

# c1: three appends (data copy-ups of 1 MiB, 10 KiB and 0 bytes) and a chmod. Without overlay's
# metacopy=on (Strata does not set it) the chmod still copies the data; either way the copy-up's
# size is the file's i_size before the write.
step /strata/strata container exec c1 -- sh -c '
    echo appended >> /srv/c1/one-mib &&
    echo appended >> /srv/c1/ten-kib &&
    echo appended >> /srv/c1/empty &&
    chmod 600 /srv/c1/mode-only'
# c2: one append to the 8 MiB file.
step /strata/strata container exec c2 -- sh -c 'echo appended >> /srv/c2/eight-mib'
# c3: reads only; the sizes it sees go to the console for xtask to check.
section reads-c3 /strata/strata container exec c3 -- sh -c '
    for f in /srv/c1/one-mib /srv/c1/ten-kib /srv/c1/empty /srv/c1/mode-only /srv/c2/eight-mib /srv/c3/read-me; do
        cat "$f" > /dev/null || exit 1
        echo "$f $(wc -c < "$f")"
    done' || { echo "workload: step failed: reads in c3"; exit 1; }
# What c1 and c2 see after their writes.
section sizes-c1 /strata/strata container exec c1 -- sh -c '
    for f in /srv/c1/one-mib /srv/c1/ten-kib /srv/c1/empty /srv/c1/mode-only; do
        echo "$f $(wc -c < "$f") $(stat -c %a "$f")"
    done' || { echo "workload: step failed: sizes in c1"; exit 1; }

for name in c1 c2 c3; do
    section "diff-$name" /strata/strata container diff "$name" ||
        { echo "workload: step failed: strata container diff $name"; exit 1; }
done
section container-ls /strata/strata --json container ls ||
    { echo "workload: step failed: strata --json container ls"; exit 1; }

# A foreign overlay mount: its copy-ups belong to no container (container_id="unmanaged").
mkdir -p /tmp/foreign/lower/dir /tmp/foreign/upper /tmp/foreign/work /tmp/foreign/merged
dd if=/dev/zero of=/tmp/foreign/lower/dir/file bs=4096 count=1 2>/dev/null
step mount -t overlay overlay \
    -o lowerdir=/tmp/foreign/lower,upperdir=/tmp/foreign/upper,workdir=/tmp/foreign/work \
    /tmp/foreign/merged
step sh -c 'echo appended >> /tmp/foreign/merged/dir/file'
step test -f /tmp/foreign/upper/dir/file
step umount /tmp/foreign/merged

if [ "$PHASES" = all ]; then
    # No retry and no skip: an unreachable /metrics fails the run.
    section metrics wget -qO- http://127.0.0.1:9750/metrics ||
        { echo "workload: step failed: wget http://127.0.0.1:9750/metrics"; exit 1; }
fi
exit 0
