//! Map keys and values shared by the copy-up probe (`strata-ebpf-probe`, in the kernel) and its
//! loader (`strata_daemon::probe`, in user space).
//!
//! Everything here is `#[repr(C)]` plain data: the kernel writes the bytes, user space reads
//! them back, so both sides must agree on the layout to the byte. The `user` feature adds
//! `aya::Pod` impls for the loader; the probe builds without it.
#![no_std]

/// Kinds of copied-up inode, by `i_mode & S_IFMT`; indexes of the per-kind arrays.
pub mod kind {
    /// Regular file.
    pub const FILE: usize = 0;
    /// Directory (parents are copied up on the way to a file).
    pub const DIR: usize = 1;
    /// Symbolic link.
    pub const SYMLINK: usize = 2;
    /// Anything else (device nodes, fifos, sockets), or an inode the probe could not read.
    pub const OTHER: usize = 3;
    /// Number of kinds.
    pub const COUNT: usize = 4;
    /// Label values, in index order, as the metrics contract spells them.
    pub const NAMES: [&str; COUNT] = ["file", "dir", "symlink", "other"];
}

/// Number of log2 latency buckets: bucket `b` holds copy-ups of `2^b ..= 2^(b+1)-1` ns
/// (bucket 0 also holds 0 ns); the last bucket holds everything from `2^39` ns (~9 min) up.
/// Enough for the `strata_copyup_duration_seconds` buckets, 1 us to 10 s (2^33.2 ns).
pub const LATENCY_BUCKETS: usize = 40;

/// Map key: one overlay superblock and one kind of inode, so that latency histograms are per
/// kind (the metric has a `kind` label) while each value stays small.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CopyUpKey {
    /// The overlay superblock's `s_dev`, as the kernel encodes it
    /// (`MKDEV(major, minor)` = `major << 20 | minor`).
    pub s_dev: u32,
    /// A [`kind`] index.
    pub kind: u32,
}

/// Per (`s_dev`, kind), per CPU: what copy-ups cost. 8 * (4 + 40) = 352 bytes: small enough
/// for a per-CPU hash value, and updated in place through the map pointer (never on the
/// 512-byte BPF stack).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyUpStats {
    /// Completed `ovl_copy_up_one` calls (failures included).
    pub count: u64,
    /// Sum of `i_size` of copied-up regular files (0 for other kinds).
    pub bytes: u64,
    /// Calls that returned a negative errno.
    pub errors: u64,
    /// Sum of latencies in nanoseconds (the histogram's `_sum`).
    pub latency_sum_ns: u64,
    /// Latency histogram: `latency_log2[floor(log2(ns))]`, clamped to the last bucket.
    pub latency_log2: [u64; LATENCY_BUCKETS],
}

impl CopyUpStats {
    /// No copy-ups yet.
    pub const ZERO: Self = Self {
        count: 0,
        bytes: 0,
        errors: 0,
        latency_sum_ns: 0,
        latency_log2: [0; LATENCY_BUCKETS],
    };
}

impl Default for CopyUpStats {
    fn default() -> Self {
        Self::ZERO
    }
}

/// Byte offsets of the kernel struct fields the probe reads, computed by the loader from the
/// running kernel's BTF and written into the probe's `STRATA_OFFSETS` global before load.
/// All zero means "not set": the probe then records nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldOffsets {
    /// `struct dentry`, `d_inode` (`struct inode *`).
    pub dentry_d_inode: u32,
    /// `struct dentry`, `d_sb` (`struct super_block *`).
    pub dentry_d_sb: u32,
    /// `struct inode`, `i_mode` (`umode_t`, u16).
    pub inode_i_mode: u32,
    /// `struct inode`, `i_size` (`loff_t`, i64).
    pub inode_i_size: u32,
    /// `struct super_block`, `s_dev` (`dev_t`, u32).
    pub super_block_s_dev: u32,
}

impl FieldOffsets {
    /// Whether the loader filled the offsets in (`d_inode` is never at offset 0 of a dentry).
    pub const fn is_set(&self) -> bool {
        self.dentry_d_inode != 0 && self.dentry_d_sb != 0 && self.inode_i_size != 0
    }
}

/// Name of the probe's offsets global (`static STRATA_OFFSETS: FieldOffsets`).
pub const OFFSETS_GLOBAL: &str = "STRATA_OFFSETS";
/// Name of the per-CPU hash map `CopyUpKey -> CopyUpStats`.
pub const STATS_MAP: &str = "COPY_UP_STATS";
/// Name of the kprobe program (entry of `ovl_copy_up_one`).
pub const ENTRY_PROGRAM: &str = "ovl_copy_up_one_entry";
/// Name of the kretprobe program (return of `ovl_copy_up_one`).
pub const RETURN_PROGRAM: &str = "ovl_copy_up_one_return";
/// The kernel function probed.
pub const PROBED_FUNCTION: &str = "ovl_copy_up_one";

/// Kind index of an inode mode (`i_mode & S_IFMT`).
pub const fn kind_of_mode(mode: u16) -> usize {
    const S_IFMT: u16 = 0o170_000;
    match mode & S_IFMT {
        0o100_000 => kind::FILE,
        0o040_000 => kind::DIR,
        0o120_000 => kind::SYMLINK,
        _ => kind::OTHER,
    }
}

/// Latency bucket of a duration in nanoseconds: `floor(log2(ns))`, 0 for 0, clamped.
///
/// Written as a binary search of shifts rather than `leading_zeros`, so that the probe's
/// bytecode is a handful of compares (the BPF ISA has no count-leading-zeros instruction).
pub const fn latency_bucket(ns: u64) -> usize {
    let mut value = ns;
    let mut bucket = 0;
    if value >= 1 << 32 {
        value >>= 32;
        bucket += 32;
    }
    if value >= 1 << 16 {
        value >>= 16;
        bucket += 16;
    }
    if value >= 1 << 8 {
        value >>= 8;
        bucket += 8;
    }
    if value >= 1 << 4 {
        value >>= 4;
        bucket += 4;
    }
    if value >= 1 << 2 {
        value >>= 2;
        bucket += 2;
    }
    if value >= 1 << 1 {
        bucket += 1;
    }
    if bucket >= LATENCY_BUCKETS {
        LATENCY_BUCKETS - 1
    } else {
        bucket
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all three are `#[repr(C)]` structs of integers with no padding (two u32; u64s;
    // five u32), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::CopyUpKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CopyUpStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FieldOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_bucket_is_floor_log2_clamped() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 0);
        assert_eq!(latency_bucket(2), 1);
        assert_eq!(latency_bucket(1023), 9);
        assert_eq!(latency_bucket(1024), 10);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
        for shift in 0..45_usize {
            let ns = 1u64 << shift;
            let expected = shift.min(LATENCY_BUCKETS - 1);
            assert_eq!(latency_bucket(ns), expected, "2^{shift}");
            assert_eq!(
                latency_bucket(ns | (ns - 1)),
                expected,
                "2^{shift} + (2^{shift} - 1)"
            );
        }
    }

    #[test]
    fn kinds_follow_s_ifmt() {
        assert_eq!(kind_of_mode(0o100_644), kind::FILE);
        assert_eq!(kind_of_mode(0o040_755), kind::DIR);
        assert_eq!(kind_of_mode(0o120_777), kind::SYMLINK);
        assert_eq!(kind_of_mode(0o020_666), kind::OTHER);
    }

    #[test]
    fn stats_value_stays_small_for_the_verifier() {
        assert_eq!(core::mem::size_of::<CopyUpStats>(), 352);
        assert_eq!(core::mem::size_of::<CopyUpKey>(), 8);
        assert_eq!(core::mem::size_of::<FieldOffsets>(), 20);
    }
}
