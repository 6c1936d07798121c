#!/bin/sh
# PID 1 of the `cargo xtask bench probe` VM (xtask/src/bench_probe.rs writes it to /init).
#
# Same protocol as init.sh: data between `=== begin NAME ===` / `=== end NAME ===` lines (here
# the `probe-bench` section, printed by the benchmark itself), then exactly one `init: success`
# or `init: failure: <why>` line before powering off. No stratad: the benchmark loads the probe
# itself and makes its own overlay, so no switch_root either.

export PATH=/bin

fail() {
    echo "init: failure: $*"
    poweroff -f
    sleep 5
    exit 1
}

mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc || fail "mounting /proc"
# The probe loader reads the kernel's BTF from sysfs and finds the kprobe PMU there.
mount -t sysfs sysfs /sys || fail "mounting /sys"
mount -t devtmpfs devtmpfs /dev || fail "mounting /dev"
mount -t tmpfs -o mode=1777 tmpfs /tmp || fail "mounting /tmp"
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null

insmod /strata/overlay.ko || fail "insmod overlay.ko"
grep -qw overlay /proc/filesystems || fail "overlay missing from /proc/filesystems after insmod"
echo "init: kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpus"
# Timing figures depend on it: under TCG the kernel may distrust the TSC and read hpet or acpi_pm.
echo "init: clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"

# strata.bench=ARG,ARG,... on the kernel command line: the benchmark's arguments.
args=
for word in $(cat /proc/cmdline); do
    case $word in
        strata.bench=*) args=$(echo "${word#strata.bench=}" | tr , ' ') ;;
    esac
done

echo "init: strata-probe-bench $args"
# shellcheck disable=SC2086 # word splitting of $args is intended
/strata/strata-probe-bench $args || fail "strata-probe-bench exited with $?"
echo "init: success"
poweroff -f
