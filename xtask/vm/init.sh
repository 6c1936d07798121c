#!/bin/sh
# PID 1 of the `cargo xtask vm-test` VM (xtask/src/vm.rs writes it to /init of the initramfs).
#
# Protocol with xtask: everything on the console; sections between `=== begin NAME ===` and
# `=== end NAME ===` lines carry data for xtask to check, and the last thing init prints is exactly
# one line `init: success` or `init: failure: <why>` before powering off. Checks of figures happen
# in xtask (Rust), not here: this script only runs things and fails on what cannot go on.

export PATH=/bin
STRATA_SOCKET=/run/strata.sock
export STRATA_SOCKET

fail() {
    echo "init: failure: $*"
    poweroff -f
    sleep 5
    exit 1
}

section() {
    # section NAME COMMAND...: prints COMMAND's output between markers; keeps its exit status.
    name=$1
    shift
    echo "=== begin $name ==="
    "$@"
    status=$?
    echo "=== end $name ==="
    return $status
}

if [ "$1" != stage2 ]; then
    # Stage 1. The initramfs root is `rootfs`, the root of the mount tree: pivot_root(2) refuses
    # it (EINVAL, "the current root is on the rootfs"; see pivot_root(2)), and `strata container
    # exec` pivot_roots. So move everything to a tmpfs and switch_root into it, as distribution
    # initramfs scripts do before starting a real init.
    mount -t proc proc /proc || fail "mounting /proc"
    mkdir -p /newroot
    mount -t tmpfs -o mode=755 tmpfs /newroot || fail "mounting the tmpfs root"
    cp -a /bin /lib /lib64 /strata /init /newroot/ || fail "copying the initramfs to the tmpfs root"
    umount /proc
    exec switch_root /newroot /init stage2
    fail "switch_root"
fi

# Stage 2: a tmpfs root that pivot_root accepts.
mkdir -p /proc /sys /dev /run /tmp /var/lib/strata
mount -t proc proc /proc || fail "mounting /proc"
# sysfs shows the kernel's BTF (/sys/kernel/btf/vmlinux), which the probe loader reads.
mount -t sysfs sysfs /sys || fail "mounting /sys"
mount -t devtmpfs devtmpfs /dev || fail "mounting /dev"
mount -t tmpfs -o mode=755 tmpfs /run || fail "mounting /run"
mount -t tmpfs -o mode=1777 tmpfs /tmp || fail "mounting /tmp"
# aya creates kprobes through the perf kprobe PMU (found in sysfs) and may fall back to
# tracefs's kprobe_events; mount tracefs where it looks.
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
ip link set lo up || fail "bringing up lo"

# Debian builds overlayfs as a module; xtask copies the matching (decompressed) overlay.ko.
insmod /strata/overlay.ko || fail "insmod overlay.ko"
grep -qw overlay /proc/filesystems || fail "overlay missing from /proc/filesystems after insmod"

echo "init: kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpus"
[ -e /sys/kernel/btf/vmlinux ] || echo "init: note: no /sys/kernel/btf/vmlinux"

phases=all
for word in $(cat /proc/cmdline); do
    case $word in
        strata.phases=*) phases=${word#strata.phases=} ;;
    esac
done

PROMETHEUS=http://127.0.0.1:9090

# prom_query ENCODED: Prometheus' JSON answer to an instant query (URL-encoded by xtask).
prom_query() {
    wget -qO- "$PROMETHEUS/api/v1/query?query=$1"
}

# prom_wait ENCODED: waits (120 s at most) until the query has a non-empty result.
prom_wait() {
    waited=0
    until prom_query "$1" | grep -q '"result":\[[^]]'; do
        waited=$((waited + 1))
        [ "$waited" -gt 120 ] && { echo "init: no data for $1 within 120 s"; return 1; }
        sleep 1
    done
}

# Before the workload: Prometheus answers and has scraped stratad, so the copy-ups land between
# scrapes and rate() sees them rise.
prometheus_up() {
    waited=0
    until wget -qO- "$PROMETHEUS/-/ready" >/dev/null 2>&1; do
        kill -0 "$prometheus_pid" 2>/dev/null || return 1
        waited=$((waited + 1))
        [ "$waited" -gt 120 ] && { echo "init: Prometheus not ready within 120 s"; return 1; }
        sleep 1
    done
    prom_wait strata_probe_up || return 1
    echo "init: Prometheus is ready and has scraped stratad"
}

# The dashboards phase (xtask/src/vm.rs): after the workload, wait for a few scrapes, then print
# Prometheus' answer to every probe-backed panel query for xtask to check.
dashboards_phase() {
    while read -r ready; do
        prom_wait "$ready" || return 1
    done </strata/prometheus-ready.txt
    echo "init: Prometheus has scraped enough; running the panel queries"
    n=0
    while read -r query; do
        n=$((n + 1))
        echo "=== begin query $n ==="
        # The answer has no final newline; the marker must start a line.
        prom_query "$query" || { echo; echo "=== end query $n ==="; return 1; }
        echo
        echo "=== end query $n ==="
    done </strata/queries.txt
    echo "init: ran $n panel queries"
}

set -- --root /var/lib/strata --socket "$STRATA_SOCKET"
if [ "$phases" = all ]; then
    # A scan a second: the "Costliest containers" panel reads the scanner's per-container gauges
    # (strata_container_rw_bytes, strata_container_copied_up_bytes), which the default 30 s
    # interval would not publish before the dashboards phase.
    set -- "$@" --metrics-addr 127.0.0.1:9750 --scan-interval 1
    # Before the workload: it takes a while to start under TCG, and should scrape throughout.
    /strata/prometheus --config.file=/strata/prometheus.yml \
        --storage.tsdb.path=/tmp/prometheus --web.listen-address=127.0.0.1:9090 \
        >/tmp/prometheus.log 2>&1 &
    prometheus_pid=$!
    echo "init: started Prometheus (pid $prometheus_pid)"
fi
# NO_COLOR: the log is printed on the console for people and xtask, without ANSI colours.
NO_COLOR=1 /strata/stratad "$@" >/tmp/stratad.log 2>&1 &
stratad_pid=$!

waited=0
until [ -S "$STRATA_SOCKET" ]; do
    if ! kill -0 "$stratad_pid" 2>/dev/null; then
        section stratad-log cat /tmp/stratad.log
        fail "stratad exited before creating $STRATA_SOCKET"
    fi
    waited=$((waited + 1))
    if [ "$waited" -gt 600 ]; then
        section stratad-log cat /tmp/stratad.log
        fail "stratad did not create $STRATA_SOCKET within 60 s"
    fi
    sleep 0.1
done
echo "init: stratad is up (pid $stratad_pid)"
if [ "$phases" = all ] && ! prometheus_up; then
    section stratad-log cat /tmp/stratad.log
    section prometheus-log cat /tmp/prometheus.log
    fail "Prometheus did not come up or scrape stratad"
fi

PHASES=$phases sh /strata/workload.sh
workload_status=$?

if [ "$workload_status" -eq 0 ] && [ "$phases" = all ]; then
    if ! dashboards_phase; then
        section stratad-log cat /tmp/stratad.log
        section prometheus-log cat /tmp/prometheus.log
        fail "dashboards phase: Prometheus or a panel query failed (see above)"
    fi
fi

section stratad-log cat /tmp/stratad.log
if [ "$workload_status" -ne 0 ]; then
    [ "$phases" = all ] && section prometheus-log cat /tmp/prometheus.log
    fail "workload.sh exited with $workload_status (see its last step above)"
fi
[ "$phases" = all ] && kill -TERM "$prometheus_pid"
kill -TERM "$stratad_pid"
echo "init: success"
poweroff -f
