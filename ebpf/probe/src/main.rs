//! Strata's copy-up probe: a kprobe and a kretprobe on overlayfs's `ovl_copy_up_one`.
//!
//! ```c
//! static int ovl_copy_up_one(struct dentry *parent, struct dentry *dentry, int flags);
//! ```
//!
//! The entry program remembers, per thread, when the copy-up started and which (overlay) dentry
//! it is for. The return program measures the latency, reads the dentry's superblock `s_dev`
//! (which overlay mount) and inode `i_mode`/`i_size` (kind, bytes), and adds one copy-up to the
//! per-CPU `COPY_UP_STATS[s_dev]`. Nothing wakes user space: the daemon reads the map when
//! Prometheus scrapes.
//!
//! Cost matters (it is paid on every copy-up): each thread keeps one slot in an LRU map that is
//! rewritten in place, so a copy-up costs two lookups rather than an insert and a delete (each
//! an element allocation and two locks), and each field is fetched by its own small
//! `bpf_probe_read_kernel`. (One read spanning two nearby fields of a struct, into a stack
//! buffer, was tried: counted in guest instructions under QEMU's `-icount`, it cost about
//! 1,000 instructions against about 100 for each 8-byte read, and made the return program 2.6
//! times as long.)
//!
//! Rust eBPF has no CO-RE relocations, so the struct field offsets come from user space: the
//! loader computes them from the running kernel's BTF and overrides `STRATA_OFFSETS` at load.
//! While they are unset (all zero) the programs record nothing.
#![no_std]
#![no_main]

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel};
use aya_ebpf::macros::{kprobe, kretprobe, map};
use aya_ebpf::maps::{LruHashMap, PerCpuHashMap};
use aya_ebpf::programs::{ProbeContext, RetProbeContext};
use strata_ebpf_common::{
    CopyUpKey, CopyUpStats, FieldOffsets, kind, kind_of_mode, latency_bucket,
};

/// Field offsets, overridden by the loader (`EbpfLoader::override_global`). Immutable, so it
/// lands in `.rodata`, which the kernel freezes: the verifier then sees constants.
#[unsafe(no_mangle)]
static STRATA_OFFSETS: FieldOffsets = FieldOffsets {
    dentry_d_inode: 0,
    dentry_d_sb: 0,
    inode_i_mode: 0,
    inode_i_size: 0,
    super_block_s_dev: 0,
};

/// The zero value a new `COPY_UP_STATS` entry starts from. Passed to the map by pointer (it is
/// a map value itself), which keeps 360 bytes off the 512-byte BPF stack.
static ZERO_STATS: CopyUpStats = CopyUpStats::ZERO;

/// A thread's copy-up slot.
#[repr(C)]
#[derive(Clone, Copy)]
struct CopyUpStart {
    /// `bpf_ktime_get_ns()` at entry of the copy-up in flight; 0 when none is.
    started_ns: u64,
    /// The `struct dentry *dentry` argument.
    dentry: u64,
}

/// One slot per thread that copies up, by `pid_tgid`, reused for each of its copy-ups. Only
/// that thread's programs touch it (copy-ups do not nest on a thread). LRU, so slots of threads
/// long gone make room for new ones; a slot is recent while its copy-up is in flight.
#[map]
static COPY_UP_STARTS: LruHashMap<u64, CopyUpStart> = LruHashMap::with_max_entries(10_240, 0);

/// Per-CPU aggregates by overlay superblock `s_dev` and kind.
#[map]
static COPY_UP_STATS: PerCpuHashMap<CopyUpKey, CopyUpStats> =
    PerCpuHashMap::with_max_entries(16_384, 0);

/// `BPF_NOEXIST`: insert only if the key is absent (another program on this CPU cannot race us,
/// but do not clobber an existing entry either).
const BPF_NOEXIST: u64 = 1;

fn offsets() -> FieldOffsets {
    // SAFETY: a plain read of our own static; volatile so that the compiler does not fold the
    // all-zero initializer: the real values are written into the object at load time.
    unsafe { core::ptr::read_volatile(&raw const STRATA_OFFSETS) }
}

#[kprobe]
pub fn ovl_copy_up_one_entry(ctx: ProbeContext) -> u32 {
    if !offsets().is_set() {
        return 0;
    }
    let Some(dentry) = ctx.arg::<u64>(1) else {
        return 0;
    };
    let start = CopyUpStart {
        // SAFETY: a helper call without pointer arguments.
        started_ns: unsafe { bpf_ktime_get_ns() },
        dentry,
    };
    let key = bpf_get_current_pid_tgid();
    match COPY_UP_STARTS.get_ptr_mut(key) {
        // SAFETY: the pointer came from a successful lookup and only this thread uses the slot.
        Some(slot) => unsafe { *slot = start },
        // A thread's first copy-up; a failed insert only loses this one measurement.
        None => {
            let _ = COPY_UP_STARTS.insert(key, start, 0);
        }
    }
    0
}

#[kretprobe]
pub fn ovl_copy_up_one_return(ctx: RetProbeContext) -> u32 {
    let offsets = offsets();
    if !offsets.is_set() {
        return 0;
    }
    let ended_ns = unsafe { bpf_ktime_get_ns() };
    let key = bpf_get_current_pid_tgid();
    let Some(slot) = COPY_UP_STARTS.get_ptr_mut(key) else {
        // Attached while this thread's first copy-up was already running.
        return 0;
    };
    // SAFETY: the pointer came from a successful lookup and only this thread uses the slot.
    let start = unsafe { *slot };
    if start.started_ns == 0 {
        // Attached while this copy-up was already running.
        return 0;
    }
    // SAFETY: as above.
    unsafe { (*slot).started_ns = 0 };
    let ret: i32 = ctx.ret();
    record(&offsets, start, ended_ns, ret);
    0
}

/// Reads a kernel value at `base + offset`; `None` on a null base or a faulting read.
fn read_at<T>(base: u64, offset: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copies into our stack and reports a fault as an error; it
    // never dereferences the pointer in the program itself.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T).ok() }
}

fn record(offsets: &FieldOffsets, start: CopyUpStart, ended_ns: u64, ret: i32) {
    let Some(sb) = read_at::<u64>(start.dentry, offsets.dentry_d_sb) else {
        return;
    };
    let Some(inode) = read_at::<u64>(start.dentry, offsets.dentry_d_inode) else {
        return;
    };
    let Some(s_dev) = read_at::<u32>(sb, offsets.super_block_s_dev) else {
        return;
    };
    let (kind, size) = match read_at::<u16>(inode, offsets.inode_i_mode)
        .zip(read_at::<i64>(inode, offsets.inode_i_size))
    {
        Some((mode, size)) => {
            let kind = kind_of_mode(mode);
            let size = if kind == kind::FILE { size } else { 0 };
            (kind, u64::try_from(size).unwrap_or(0))
        }
        None => (kind::OTHER, 0),
    };
    let key = CopyUpKey {
        s_dev,
        kind: kind as u32,
    };
    let stats = match COPY_UP_STATS.get_ptr_mut(key) {
        Some(stats) => stats,
        None => {
            #[expect(
                clippy::needless_borrows_for_generic_args,
                reason = "by value, the 352-byte zero would be copied onto the BPF stack"
            )]
            let _ = COPY_UP_STATS.insert(key, &ZERO_STATS, BPF_NOEXIST);
            match COPY_UP_STATS.get_ptr_mut(key) {
                Some(stats) => stats,
                None => return,
            }
        }
    };
    // SAFETY: a per-CPU map value of this CPU, valid for the whole program run; nothing else
    // runs on this CPU while we update it (kprobe programs do not nest on one CPU).
    let stats = unsafe { &mut *stats };
    let latency = ended_ns.saturating_sub(start.started_ns);
    stats.count += 1;
    stats.bytes += size;
    if ret < 0 {
        stats.errors += 1;
    }
    stats.latency_sum_ns += latency;
    if let Some(bucket) = stats.latency_log2.get_mut(latency_bucket(latency)) {
        *bucket += 1;
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The kernel refuses programs without a GPL-compatible license from calling
/// `bpf_probe_read_kernel` and attaching kprobes.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
